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
  readonly readable: Uint8Array[] = [];
  readonly writable: Uint8Array[] = [];
  /** Number of descriptors walked (including an indirect table's entries). */
  descriptorCount = 0;

  constructor(
    /** Descriptor table index of the chain's head: the used element's `id`. */
    readonly head: number,
  ) {}

  /**
   * Takes the buffers away from the device: after a reset or a ring stop they belong to the
   * driver again, so a device model that answers late must not touch them. Later reads and
   * writes through this chain do nothing (a model that kept its own references to the
   * segment views is outside this guard; models should use read()/write()).
   */
  revoke(): void {
    this.readable.length = 0;
    this.writable.length = 0;
  }

  /**
   * Copies readable bytes from `offset` (within the concatenated readable segments) into `into`.
   * Returns the count copied (less than into.length when the chain is shorter).
   */
  read(into: Uint8Array, offset = 0): number {
    return gather(this.readable, into, offset);
  }

  /**
   * Writes `data` into the writable segments starting at `offset`; never past the chain's
   * writable buffers. Returns the count written.
   */
  write(data: Uint8Array, offset = 0): number {
    return scatter(this.writable, data, offset);
  }
}

function gather(segments: readonly Uint8Array[], into: Uint8Array, offset: number): number {
  let done = 0;
  for (const seg of segments) {
    if (done === into.length) break;
    if (offset >= seg.length) {
      offset -= seg.length;
      continue;
    }
    const n = Math.min(seg.length - offset, into.length - done);
    into.set(seg.subarray(offset, offset + n), done);
    done += n;
    offset = 0;
  }
  return done;
}

function scatter(segments: readonly Uint8Array[], data: Uint8Array, offset: number): number {
  let done = 0;
  for (const seg of segments) {
    if (done === data.length) break;
    if (offset >= seg.length) {
      offset -= seg.length;
      continue;
    }
    const n = Math.min(seg.length - offset, data.length - done);
    seg.set(data.subarray(done, done + n), offset);
    done += n;
    offset = 0;
  }
  return done;
}
