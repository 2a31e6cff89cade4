/**
 * Buffers in guest memory given as spans of its regions — (region bytes, byte offset, length)
 * — rather than one Uint8Array view per buffer. A chain of 64 guest pages is 64 descriptors;
 * an I/O engine that takes addresses (the addon's io_uring ring, which checks every span
 * against its region) needs no object per page, only this table. `views()` makes the
 * Uint8Array views for the engines and stores that want them.
 */
export class SegmentSpans {
  /** The regions' byte arrays the spans lie in, each once (usually one). */
  readonly bases: Uint8Array[] = [];
  /** Per span, three numbers: index into `bases`, byte offset in it, length. */
  table: Float64Array;
  /** Spans in `table`. */
  count = 0;
  /** Their total length in bytes. */
  bytes = 0;

  constructor(capacity = 4) {
    this.table = new Float64Array(3 * Math.max(1, capacity));
  }

  /** Appends `length` bytes at `offset` of `base` (the caller has bounds-checked them). */
  add(base: Uint8Array, offset: number, length: number): void {
    const bases = this.bases;
    let b = bases.length - 1;
    if (b < 0 || bases[b] !== base) {
      b = bases.indexOf(base);
      if (b < 0) b = bases.push(base) - 1;
    }
    let t = this.table;
    const at = 3 * this.count;
    if (at + 3 > t.length) {
      t = new Float64Array(2 * t.length);
      t.set(this.table);
      this.table = t;
    }
    t[at] = b;
    t[at + 1] = offset;
    t[at + 2] = length;
    this.count++;
    this.bytes += length;
  }

  /** One view per span, in order. */
  views(): Uint8Array[] {
    const out: Uint8Array[] = [];
    const t = this.table;
    for (let i = 0; i < this.count; i++) {
      const base = this.bases[t[3 * i]!]!;
      const offset = t[3 * i + 1]!;
      out.push(base.subarray(offset, offset + t[3 * i + 2]!));
    }
    return out;
  }
}
