/**
 * A descriptor chain as the device sees it after validation: the head index, and the
 * buffer split into device-readable and device-writable segments, already bounds-checked
 * against guest memory. §2.7.4, §2.7.5.
 *
 * The device reads the readable part and writes the writable part as two byte streams
 * (offsets run across segment boundaries, as a descriptor split is invisible to the device,
 * §2.7.4): bytes with read()/write(), little-endian fields (§1.4: virtio 1.x structures are
 * little-endian) with readUint8/16/32 and writeUint8/16/32. None of these allocates: a field
 * inside one segment is one DataView access on the guest region, the rare field split across
 * two segments takes a byte-wise path.
 */
import type { MemoryRegion } from './memory.js';
import { SegmentSpans } from './segment-spans.js';

export class DescriptorChain {
  /** Total bytes of all readable segments. */
  readableLength = 0;
  /** Total bytes of all writable segments. */
  writableLength = 0;
  /** Number of descriptors walked (including an indirect table's entries). */
  descriptorCount = 0;
  /**
   * Segments in order (readable ones first, §2.7.4.2), each as the guest region, the offset
   * inside it and the length: the first inline (a one-descriptor chain allocates nothing but
   * this object), the others in parallel arrays made on first need and kept across refill(), so
   * a chain object the queue reuses allocates nothing. Views are made only if
   * `readable`/`writable` are asked for.
   */
  private region0: MemoryRegion | undefined;
  private offset0 = 0;
  private length0 = 0;
  private rest: { regions: MemoryRegion[]; offsets: number[]; lengths: number[] } | undefined;
  private readableCount = 0;
  private writableCount = 0;
  private revoked = false;
  /** In-region byte offset found by the last locate(). */
  private at = 0;
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
    this.readableCount = 0;
    this.writableCount = 0;
    this.revoked = false;
    this.views = undefined;
    return this;
  }

  /** @internal (DeviceQueue) a segment already bounds-checked inside `region`. */
  addSegment(region: MemoryRegion, offset: number, len: number, writable: boolean): void {
    const i = this.readableCount + this.writableCount;
    if (i === 0) {
      this.region0 = region;
      this.offset0 = offset;
      this.length0 = len;
    } else {
      const rest = (this.rest ??= { regions: [], offsets: [], lengths: [] });
      rest.regions[i - 1] = region;
      rest.offsets[i - 1] = offset;
      rest.lengths[i - 1] = len;
    }
    if (writable) {
      this.writableCount++;
      this.writableLength += len;
    } else {
      this.readableCount++;
      this.readableLength += len;
    }
  }

  /** Segment `i`'s region, offset in it, and length. */
  private regionAt(i: number): MemoryRegion {
    return i === 0 ? this.region0! : this.rest!.regions[i - 1]!;
  }
  private offsetAt(i: number): number {
    return i === 0 ? this.offset0 : this.rest!.offsets[i - 1]!;
  }
  private lengthAt(i: number): number {
    return i === 0 ? this.length0 : this.rest!.lengths[i - 1]!;
  }

  /** The device-readable segments, in order: zero-copy views into guest memory. */
  get readable(): Uint8Array[] {
    return (this.views ??= this.makeViews())[0];
  }

  /** The device-writable segments, in order. */
  get writable(): Uint8Array[] {
    return (this.views ??= this.makeViews())[1];
  }

  /**
   * The `length` bytes from stream offset `start` of the readable (or writable) part as spans
   * of the guest regions: no view per segment (see SegmentSpans). Shorter when the part is
   * (and empty after revoke()).
   */
  spans(writable: boolean, start: number, length: number): SegmentSpans {
    const first = writable ? this.readableCount : 0;
    const end = first + (writable ? this.writableCount : this.readableCount);
    const out = new SegmentSpans(end - first);
    for (let i = first; i < end && length > 0; i++) {
      const len = this.lengthAt(i);
      if (start >= len) {
        start -= len;
        continue;
      }
      const n = Math.min(len - start, length);
      out.add(this.regionAt(i).bytes, this.offsetAt(i) + start, n);
      length -= n;
      start = 0;
    }
    return out;
  }

  /** Device-readable descriptors (QEMU's out_num). */
  get readableSegments(): number {
    return this.readableCount;
  }

  /** Device-writable descriptors (QEMU's in_num). */
  get writableSegments(): number {
    return this.writableCount;
  }

  get hasWritable(): boolean {
    return this.writableCount !== 0;
  }

  private makeViews(): [Uint8Array[], Uint8Array[]] {
    const r: Uint8Array[] = [];
    const w: Uint8Array[] = [];
    const n = this.readableCount + this.writableCount;
    for (let i = 0; i < n; i++) {
      const off = this.offsetAt(i);
      (i < this.readableCount ? r : w).push(this.regionAt(i).bytes.subarray(off, off + this.lengthAt(i)));
    }
    return [r, w];
  }

  /**
   * Takes the buffers away from the device: after a reset or a ring stop they belong to the
   * driver again, so a device model that answers late must not touch them. Later reads copy
   * nothing (fields read as 0) and later writes are dropped (a model that kept its own
   * references to the segment views is outside this guard; models should use the accessors).
   */
  revoke(): void {
    this.revoked = true;
    this.readableCount = 0;
    this.writableCount = 0;
    this.views = [[], []];
  }

  /**
   * Copies readable bytes from `offset` (within the concatenated readable segments) into `into`.
   * Returns the count copied (less than into.length when the chain is shorter).
   */
  read(into: Uint8Array, offset = 0): number {
    checkOffset(offset);
    return this.copy(0, this.readableCount, into, offset, false);
  }

  /**
   * Writes `data` into the writable segments starting at `offset`; never past the chain's
   * writable buffers. Returns the count written.
   */
  write(data: Uint8Array, offset = 0): number {
    checkOffset(offset);
    return this.copy(this.readableCount, this.readableCount + this.writableCount, data, offset, true);
  }

  /**
   * The little-endian u8/u16/u32 at `offset` of the readable bytes. RangeError past the end.
   * A field inside the first segment (the usual request header) is one DataView access.
   */
  readUint8(offset: number): number {
    if (this.readableCount !== 0 && offset >>> 0 === offset && offset < this.length0) {
      return this.region0!.bytes[this.offset0 + offset]!;
    }
    const s = this.locate(0, this.readableCount, offset, 1);
    return s >= 0 ? this.regionAt(s).bytes[this.at]! : this.readSlow(offset, 1);
  }
  readUint16(offset: number): number {
    if (this.readableCount !== 0 && offset >>> 0 === offset && offset + 2 <= this.length0) {
      return this.region0!.view.getUint16(this.offset0 + offset, true);
    }
    const s = this.locate(0, this.readableCount, offset, 2);
    return s >= 0 ? this.regionAt(s).view.getUint16(this.at, true) : this.readSlow(offset, 2);
  }
  readUint32(offset: number): number {
    if (this.readableCount !== 0 && offset >>> 0 === offset && offset + 4 <= this.length0) {
      return this.region0!.view.getUint32(this.offset0 + offset, true);
    }
    const s = this.locate(0, this.readableCount, offset, 4);
    return s >= 0 ? this.regionAt(s).view.getUint32(this.at, true) : this.readSlow(offset, 4);
  }

  /** Stores `value` little-endian at `offset` of the writable bytes. RangeError past the end. */
  writeUint8(offset: number, value: number): void {
    const s = this.locate(this.readableCount, this.readableCount + this.writableCount, offset, 1);
    if (s >= 0) this.regionAt(s).bytes[this.at] = value;
    else this.writeSlow(offset, 1, value);
  }
  writeUint16(offset: number, value: number): void {
    const s = this.locate(this.readableCount, this.readableCount + this.writableCount, offset, 2);
    if (s >= 0) this.regionAt(s).view.setUint16(this.at, value, true);
    else this.writeSlow(offset, 2, value);
  }
  writeUint32(offset: number, value: number): void {
    const s = this.locate(this.readableCount, this.readableCount + this.writableCount, offset, 4);
    if (s >= 0) this.regionAt(s).view.setUint32(this.at, value, true);
    else this.writeSlow(offset, 4, value);
  }

  /**
   * The segment in [first, end) holding all `size` bytes at stream offset `offset` (its
   * in-region position left in `this.at`), or -1 if they run past the end or straddle a
   * segment boundary (the slow paths handle both). The first segment looked at is usually
   * the one: one comparison, no loop.
   */
  private locate(first: number, end: number, offset: number, size: number): number {
    if (offset >>> 0 !== offset) return -1; // negative, fractional or huge: the slow path says so
    for (let i = first; i < end; i++) {
      const len = this.lengthAt(i);
      if (offset < len) {
        if (size > len - offset) return -1;
        this.at = this.offsetAt(i) + offset;
        return i;
      }
      offset -= len;
    }
    return -1;
  }

  /** A field split across segments (read byte by byte), or a RangeError. */
  private readSlow(offset: number, size: number): number {
    checkOffset(offset);
    if (this.revoked) return 0;
    const b = SCRATCH;
    if (this.read(b.subarray(0, size), offset) !== size) {
      throw new RangeError(`read of ${size} bytes at ${offset} is past the chain's ${this.readableLength} readable bytes`);
    }
    let value = 0;
    for (let k = size - 1; k >= 0; k--) value = value * 256 + b[k]!;
    return value;
  }

  private writeSlow(offset: number, size: number, value: number): void {
    checkOffset(offset);
    if (this.revoked) return;
    if (offset + size > this.writableLength) {
      throw new RangeError(`write of ${size} bytes at ${offset} is past the chain's ${this.writableLength} writable bytes`);
    }
    const b = SCRATCH;
    for (let k = 0; k < size; k++) b[k] = value >>> (8 * k);
    this.write(b.subarray(0, size), offset);
  }

  /**
   * Copies between `buf` and segments [first, end) straight from the stored segments: no view
   * objects on the hot path. Short runs are copied bytewise, which is cheaper than making a
   * subarray for them.
   */
  private copy(first: number, end: number, buf: Uint8Array, offset: number, toGuest: boolean): number {
    let done = 0;
    for (let i = first; i < end && done < buf.length; i++) {
      const len = this.lengthAt(i);
      if (offset >= len) {
        offset -= len;
        continue;
      }
      const bytes = this.regionAt(i).bytes;
      const n = Math.min(len - offset, buf.length - done);
      const at = this.offsetAt(i) + offset;
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

/** A field split across segments goes through here (one thread per isolate: never shared). */
const SCRATCH = new Uint8Array(4);

/** Stream offsets are byte counts: a negative or fractional one would address outside the buffer. */
function checkOffset(offset: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`chain offset ${offset} is not a byte offset`);
}
