/**
 * What the virtio-blk model (device.ts) stores its sectors in. The model is pure: every byte of
 * I/O goes through this interface, which a host implements over a file (file-storage.ts), over
 * memory (memory-storage.ts, for tests and embedders), or over anything else.
 *
 * Contract:
 *  - Offsets and lengths are bytes; the model only passes ranges it has checked against `size`
 *    (multiples of 512, inside [0, size)), so an implementation need not check them again
 *    (it may, and reject).
 *  - read/write take vectors: the model passes the views of the descriptor chain's data
 *    segments as they are (no copy), or, to a store with readSpans/writeSpans, the same
 *    segments as spans of the guest's memory regions. `into`/`from` are consumed in order, as one byte stream.
 *    The promise settles only after the last byte has been transferred: the model answers the
 *    request (and gives the chain back to the driver) when it settles, so an implementation
 *    must not touch the views afterwards.
 *  - Failures reject (any Error): the model answers the request with VIRTIO_BLK_S_IOERR
 *    (virtio 1.2 §5.2.6) and logs the reason; they are not device errors.
 *  - Requests may be in flight concurrently (several queues, many requests per queue); the
 *    store serves them in any order, as a disk would (§5.2.6: "serviced (probably out of order)").
 */

import type { SegmentSpans } from '../../virtio/segment-spans.js';

/** §5.2.6: sectors are always 512 bytes in the protocol, whatever blk_size says. */
export const SECTOR_SIZE = 512;

export interface BlockStorage {
  /** Capacity in bytes, a multiple of 512 (the model rounds down anyway). At most 2^53 - 1. */
  readonly size: number;
  /** Writes, discards and write-zeroes are refused (VIRTIO_BLK_F_RO, §5.2.3). */
  readonly readOnly: boolean;
  /**
   * The store's natural block size in bytes (a power of two ≥ 512), reported as blk_size
   * (VIRTIO_BLK_F_BLK_SIZE, §5.2.5): e.g. the O_DIRECT alignment of a file. Default 512.
   */
  readonly blockSize?: number;
  /** Whether writeZeroes(…, unmap = true) may deallocate (the write_zeroes_may_unmap field, §5.2.6.2). */
  readonly canUnmap?: boolean;
  /** A few words for messages: "disk.img (1 GiB)". */
  readonly description?: string;

  /** Fills the buffers of `into`, in order, with the bytes from `offset` on. */
  read(offset: number, into: readonly Uint8Array[]): Promise<void>;
  /** Stores the bytes of `from`, in order, at `offset` on. */
  write(offset: number, from: readonly Uint8Array[]): Promise<void>;
  /**
   * Optional: read() with the buffers given as spans of guest memory regions instead of one
   * view each (no object per segment: a chain of 64 pages makes none). The model uses it when
   * present; `spans.views()` gives the views where a store needs them.
   */
  readSpans?(offset: number, into: SegmentSpans): Promise<void>;
  /** Optional: write() from spans (see readSpans). */
  writeSpans?(offset: number, from: SegmentSpans): Promise<void>;
  /** Makes every completed write stable (VIRTIO_BLK_T_FLUSH, §5.2.6.2). */
  flush(): Promise<void>;
  /** The range's contents become unspecified; the store MAY deallocate it (VIRTIO_BLK_T_DISCARD). */
  discard(offset: number, length: number): Promise<void>;
  /** The range reads as zeroes afterwards; with `unmap` the store MAY deallocate it (VIRTIO_BLK_T_WRITE_ZEROES). */
  writeZeroes(offset: number, length: number, unmap: boolean): Promise<void>;
  /** Releases the store (files, locks). */
  close?(): Promise<void>;
}

/** The total length of a vector of buffers. */
export function vectorLength(vector: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of vector) n += b.length;
  return n;
}
