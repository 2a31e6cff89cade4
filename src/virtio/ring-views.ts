/**
 * Typed-array views over the three parts of a split ring, made once when a queue is
 * configured so the hot paths index arrays instead of translating addresses.
 * Index fields are read and written with Atomics, so both sides may run on different
 * threads (or processes, over shared memory).
 */
import { fail } from './errors.js';
import type { GuestMemory } from './memory.js';
import {
  availRingBytes,
  checkAlignment,
  checkQueueSize,
  descTableBytes,
  usedRingBytes,
  type SplitRingAddresses,
} from './split-ring.js';

export interface RingViews {
  size: number;
  /** Descriptor table as 4 words per descriptor: addr lo, addr hi, len, flags | next << 16. */
  desc: Uint32Array;
  /** Available ring as u16: [flags, idx, ring[0..size), used_event]. */
  avail: Uint16Array;
  /** Used ring header and trailer as u16: [flags, idx, ..., avail_event at 2 + 4 * size]. */
  used16: Uint16Array;
  /** Used ring elements as u32: element i is [1 + 2i] = id, [2 + 2i] = len. */
  used32: Uint32Array;
}

/** Index of avail.used_event in `avail`, and of used.avail_event in `used16`. */
export const usedEventIndex = (size: number): number => 2 + size;
export const availEventIndex = (size: number): number => 2 + 4 * size;

/** Resolves a ring whose parts are given as guest-physical addresses (§2.7). */
export function ringViewsFromGuest(memory: GuestMemory, a: SplitRingAddresses): RingViews {
  checkQueueSize(a.size);
  checkAlignment(a);
  return ringViewsFromBytes(a.size, {
    desc: partBytes(memory, a.desc, descTableBytes(a.size), 'descriptor table'),
    avail: partBytes(memory, a.avail, availRingBytes(a.size), 'available ring'),
    used: partBytes(memory, a.used, usedRingBytes(a.size), 'used ring'),
  });
}

function partBytes(memory: GuestMemory, addr: number, len: number, what: string): Uint8Array {
  try {
    return memory.slice(addr, len);
  } catch {
    return fail('MEM_OUT_OF_RANGE', `${what} at 0x${addr.toString(16)} (+${len}) is not inside guest memory`, '§2.7');
  }
}

/** Builds the views from byte windows of each part (each already bounds-checked and aligned). */
export function ringViewsFromBytes(
  size: number,
  parts: { desc: Uint8Array; avail: Uint8Array; used: Uint8Array },
): RingViews {
  const u16 = (b: Uint8Array, n: number) => new Uint16Array(b.buffer, b.byteOffset, n);
  const u32 = (b: Uint8Array, n: number) => new Uint32Array(b.buffer, b.byteOffset, n);
  if (parts.desc.byteOffset % 4 || parts.avail.byteOffset % 2 || parts.used.byteOffset % 4) {
    fail('QUEUE_ALIGNMENT', 'ring parts are not aligned in their backing memory', '§2.7.1');
  }
  return {
    size,
    desc: u32(parts.desc, 4 * size),
    avail: u16(parts.avail, 3 + size),
    used16: u16(parts.used, 3 + 4 * size),
    used32: u32(parts.used, 1 + 2 * size),
  };
}
