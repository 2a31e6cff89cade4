/**
 * The split virtqueue's layout in guest memory (virtio 1.2 §2.7):
 *
 *   part              alignment  size
 *   Descriptor Table  16         16 * size          struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }
 *   Available Ring     2         6 + 2 * size       { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }
 *   Used Ring          4         6 + 8 * size       { le16 flags; le16 idx; { le32 id; le32 len; } ring[size]; le16 avail_event; }
 *
 * Indices (avail.idx, used.idx) are free-running 16-bit counters (§2.7.13.3); slots are `idx % size`.
 */
import { MAX_QUEUE_SIZE } from './constants.js';
import { fail } from './errors.js';

export const DESC_SIZE = 16;
export const DESC_ALIGN = 16;
export const AVAIL_ALIGN = 2;
export const USED_ALIGN = 4;

export const descTableBytes = (size: number): number => DESC_SIZE * size;
export const availRingBytes = (size: number): number => 6 + 2 * size;
export const usedRingBytes = (size: number): number => 6 + 8 * size;

/** Where the three parts of one split virtqueue sit in guest memory. */
export interface SplitRingAddresses {
  /** Queue Size: a power of two, 1..32768. */
  size: number;
  /** Descriptor Area (descriptor table). */
  desc: number;
  /** Driver Area (available ring). */
  avail: number;
  /** Device Area (used ring). */
  used: number;
}

export const isPowerOfTwo = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

/** §2.7: "Queue Size value is always a power of 2. The maximum Queue Size value is 32768." */
export function checkQueueSize(size: number, max = MAX_QUEUE_SIZE): void {
  if (!isPowerOfTwo(size) || size > max) {
    fail('QUEUE_SIZE_INVALID', `queue size ${size} is not a power of two in 1..${max}`, '§2.7');
  }
}

/** §2.7.1: each part's first byte is a multiple of its alignment. */
export function checkAlignment(a: SplitRingAddresses): void {
  const misaligned = (addr: number, align: number): boolean => addr % align !== 0;
  if (misaligned(a.desc, DESC_ALIGN) || misaligned(a.avail, AVAIL_ALIGN) || misaligned(a.used, USED_ALIGN)) {
    fail(
      'QUEUE_ALIGNMENT',
      `ring parts misaligned: desc 0x${a.desc.toString(16)} (16), avail 0x${a.avail.toString(16)} (2), ` +
        `used 0x${a.used.toString(16)} (4)`,
      '§2.7.1',
    );
  }
}

/**
 * A compact placement of all three parts from `base` (itself 16-aligned), used by drivers
 * that allocate one block for a queue: desc, then avail, then used at the next 4-byte boundary.
 */
export function packedLayout(base: number, size: number): SplitRingAddresses & { bytes: number } {
  const desc = base;
  const avail = desc + descTableBytes(size);
  const used = align(avail + availRingBytes(size), USED_ALIGN);
  return { size, desc, avail, used, bytes: used + usedRingBytes(size) - base };
}

export const align = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * §2.7.7 / §2.7.10: the notification test for event indices. `event` is the other side's
 * used_event/avail_event, `newIdx` our index after publishing, `oldIdx` our index at the
 * previous notification decision. True when `event` lies in [oldIdx, newIdx).
 */
export function needsEvent(event: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}
