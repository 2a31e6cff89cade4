/**
 * A descriptor chain as the device sees it after validation: the head index, and the
 * buffer split into device-readable and device-writable segments (zero-copy views into
 * guest memory, already bounds-checked). §2.7.4, §2.7.5.
 */
export class DescriptorChain {
  /** Total bytes of all readable segments. */
  readableLength = 0;
  /** Total bytes of all writable segments. */
  writableLength = 0;
  /** Number of descriptors walked (including an indirect table's entries). */
  descriptorCount = 0;
  /**
   * Validated segments, made into views only when first used (most chains are read and
   * written through read()/write(), and a view per descriptor costs more than the walk):
   * the first inline, the rest as [bytes, offset, length] triples.
   */
  private seg0: Uint8Array | undefined;
  private off0 = 0;
  private len0 = 0;
  private more: (Uint8Array | number)[] | undefined;
  private readableCount = 0;
  private writableCount = 0;
  private views: [Uint8Array[], Uint8Array[]] | undefined;

  constructor(
    /** Descriptor table index of the chain's head: the used element's `id`. */
    public head: number,
  ) {}

  /** @internal (DeviceQueue.pop(reuse)) empties this chain for a new walk from `head`. */
  refill(head: number): this {
    this.head = head;
    this.readableLength = 0;
    this.writableLength = 0;
    this.descriptorCount = 0;
    this.seg0 = undefined;
    this.more = undefined;
    this.readableCount = 0;
    this.writableCount = 0;
    this.views = undefined;
    return this;
  }

  /** @internal (DeviceQueue) a segment already bounds-checked inside `region`. */
  addSegment(region: Uint8Array, offset: number, len: number, writable: boolean): void {
    if (this.seg0 === undefined) {
      this.seg0 = region;
      this.off0 = offset;
      this.len0 = len;
    } else (this.more ??= []).push(region, offset, len);
    if (writable) this.writableCount++;
    else this.readableCount++;
  }

  /** The device-readable segments, in order: zero-copy views into guest memory. */
  get readable(): Uint8Array[] {
    return (this.views ??= this.makeViews())[0];
  }

  /** The device-writable segments, in order. */
  get writable(): Uint8Array[] {
    return (this.views ??= this.makeViews())[1];
  }

  get hasWritable(): boolean {
    return this.writableCount !== 0;
  }

  private makeViews(): [Uint8Array[], Uint8Array[]] {
    const r: Uint8Array[] = [];
    const w: Uint8Array[] = [];
    if (this.seg0 !== undefined) {
      (this.readableCount > 0 ? r : w).push(this.seg0.subarray(this.off0, this.off0 + this.len0));
      const s = this.more ?? [];
      for (let i = 0; i < s.length; i += 3) {
        const bytes = s[i] as Uint8Array;
        const off = s[i + 1] as number;
        (i / 3 + 1 < this.readableCount ? r : w).push(bytes.subarray(off, off + (s[i + 2] as number)));
      }
    }
    return [r, w];
  }

  /**
   * Takes the buffers away from the device: after a reset or a ring stop they belong to the
   * driver again, so a device model that answers late must not touch them. Later reads and
   * writes through this chain do nothing (a model that kept its own references to the
   * segment views is outside this guard; models should use read()/write()).
   */
  revoke(): void {
    this.seg0 = undefined;
    this.more = undefined;
    this.views = [[], []];
  }

  /**
   * Copies readable bytes from `offset` (within the concatenated readable segments) into `into`.
   * Returns the count copied (less than into.length when the chain is shorter).
   */
  read(into: Uint8Array, offset = 0): number {
    return this.copy(0, this.readableCount, into, offset, false);
  }

  /**
   * Writes `data` into the writable segments starting at `offset`; never past the chain's
   * writable buffers. Returns the count written.
   */
  write(data: Uint8Array, offset = 0): number {
    return this.copy(this.readableCount, this.readableCount + this.writableCount, data, offset, true);
  }

  /**
   * Copies between `buf` and segments [first, end) straight from the stored (region, offset,
   * length) triples: no view objects on the hot path. Short runs are copied bytewise, which
   * is cheaper than making a subarray for them.
   */
  private copy(first: number, end: number, buf: Uint8Array, offset: number, toGuest: boolean): number {
    let done = 0;
    for (let i = first; i < end && done < buf.length; i++) {
      if (this.seg0 === undefined) break; // revoked
      let bytes: Uint8Array;
      let off: number;
      let len: number;
      if (i === 0) {
        bytes = this.seg0;
        off = this.off0;
        len = this.len0;
      } else {
        const m = this.more!;
        const k = 3 * (i - 1);
        bytes = m[k] as Uint8Array;
        off = m[k + 1] as number;
        len = m[k + 2] as number;
      }
      if (offset >= len) {
        offset -= len;
        continue;
      }
      const n = Math.min(len - offset, buf.length - done);
      const at = off + offset;
      if (n <= 64) {
        if (toGuest) for (let b = 0; b < n; b++) bytes[at + b] = buf[done + b]!;
        else for (let b = 0; b < n; b++) buf[done + b] = bytes[at + b]!;
      } else if (toGuest) {
        bytes.set(buf.subarray(done, done + n), at);
      } else {
        buf.set(bytes.subarray(at, at + n), done);
      }
      done += n;
      offset = 0;
    }
    return done;
  }
}
