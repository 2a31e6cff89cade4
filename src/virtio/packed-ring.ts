/**
 * The packed virtqueue's layout in guest memory (virtio 1.2 §2.8, negotiated by
 * VIRTIO_F_RING_PACKED), the wrap-counter arithmetic both halves share, and typed-array views
 * made once per queue.
 *
 *   part (area)                                  alignment  size        §2.8.10.1
 *   Descriptor Ring          (Descriptor Area)   16         16 * size   struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; }  §2.8.13
 *   Driver Event Suppression (Driver Area)        4          4          struct pvirtq_event_suppress { le16 desc; le16 flags; }          §2.8.14
 *   Device Event Suppression (Device Area)        4          4          (same structure)
 *
 * `desc` of an event suppression structure is desc_event_off (bits 0-14, a ring position) and
 * desc_event_wrap (bit 15); `flags` holds desc_event_flags (bits 0-1: ENABLE 0, DISABLE 1, DESC 2).
 * The Queue Size is 1..32768 and need not be a power of two (§2.8, §2.8.10.1).
 *
 * Ring positions and wrap counters. Each side keeps a position 0..size-1 and a one-bit wrap
 * counter that starts at 1 and toggles when the position passes the end of the ring (§2.8.1).
 * A descriptor is available when AVAIL = the driver's wrap counter and USED = its inverse; used
 * when AVAIL = USED = the device's wrap counter (§2.8.1). Where two positions have to be compared
 * (event suppression windows) a position is mapped onto a "linear" index modulo 2 * size:
 * `pos` while the wrap counter is 1, `size + pos` while it is 0. Consecutive descriptors then
 * have consecutive linear indices (mod 2 * size) across the wrap.
 *
 * Saved state ("index with wrap bit 15"): a position and its wrap counter travel as one 16-bit
 * value `pos | wrap << 15`, the form of desc_event_off/desc_event_wrap (§2.8.14) and of
 * vhost-user's GET/SET_VRING_BASE for packed rings, whose 32-bit `num` carries two of them
 * (QEMU docs/interop/vhost-user.rst, "Vring descriptor indices for packed virtqueues"):
 * bits 0-14 the next available descriptor the back-end will process, bit 15 the Driver
 * (Available) Ring Wrap Counter, bits 16-30 where the back-end will place the next used
 * descriptor, bit 31 the Device (Used) Ring Wrap Counter. `packedVringBase` and
 * `parsePackedVringBase` convert; the index is the ring position (0..size-1).
 *
 * Memory ordering with SharedArrayBuffer (both halves may run on different threads or, over
 * shared memory, in different processes):
 * - Every publication point is one Atomics access on the 32-bit word holding a descriptor's
 *   `id` (bytes 12-13) and `flags` (bytes 14-15). Atomics operations are sequentially
 *   consistent: an Atomics.store is a release (plain writes before it are visible to whoever
 *   reads the stored value with Atomics.load) and an Atomics.load is an acquire.
 * - Driver (§2.8.21.1, §2.8.21.1.1, §2.8.6, §2.8.17): addr/len/id of every descriptor of a list
 *   and the flags of all but the first are written with plain stores; the first descriptor's
 *   flags word is written LAST with Atomics.store, so the device never observes a partial list.
 *   Batched adds defer the first flags word of the whole batch until publish().
 * - Device (§2.8.15): Atomics.load of the flags word at its next position (acquire) before it
 *   reads anything else of that list. Each field is read once (no re-reads a racing driver
 *   could change between check and use).
 * - Device writing used descriptors (§2.8.9, §2.8.22): len with a plain store, then id+flags
 *   with one Atomics.store; a batch (addUsed × N) stores the flags word of its first used
 *   descriptor last, in publishUsed(). The driver Atomics.loads the flags word before reading
 *   len (§2.8.22: read barrier after observing USED).
 * - Notification decisions (§2.8.21.2, §2.8.21.3.1 "suitable memory barrier before reading the
 *   Event Suppression structure"): the publishing Atomics.store and the following Atomics.load
 *   of the other side's event suppression word are both SC, so they cannot be reordered
 *   (store→load, the full barrier the spec asks for). Enabling notifications stores the event
 *   word and then re-reads the ring with Atomics.load, the re-check of §2.8.22's note.
 * - An event suppression structure is read and written as ONE 32-bit Atomics word (desc in
 *   the low half, flags in the high half), so offset, wrap and flags are always seen together.
 */
import { MAX_PACKED_QUEUE_SIZE, PackedDescFlags, RingEventFlags } from './constants.js';
import { fail } from './errors.js';
import type { GuestMemory } from './memory.js';

export const PACKED_DESC_SIZE = 16;
export const PACKED_DESC_ALIGN = 16;
export const EVENT_SUPPRESS_SIZE = 4;
export const EVENT_SUPPRESS_ALIGN = 4;

export const descRingBytes = (size: number): number => PACKED_DESC_SIZE * size;

/** Where the three parts of one packed virtqueue sit in guest memory (§2.8). */
export interface PackedRingAddresses {
  /** Queue Size: 1..32768. */
  size: number;
  /** Descriptor Area: the descriptor ring. */
  desc: number;
  /** Driver Area: the Driver Event Suppression structure (written by the driver). */
  driver: number;
  /** Device Area: the Device Event Suppression structure (written by the device). */
  device: number;
}

/** §2.8: up to 2^15 entries; §2.8.10.1: not necessarily a power of 2 (unless the transport says so). */
export function checkPackedQueueSize(size: number, opts: { max?: number; powerOfTwo?: boolean } = {}): void {
  const max = opts.max ?? MAX_PACKED_QUEUE_SIZE;
  const pow2 = !opts.powerOfTwo || (size & (size - 1)) === 0;
  if (!Number.isInteger(size) || size < 1 || size > max || !pow2) {
    fail('QUEUE_SIZE_INVALID', `packed queue size ${size} is not ${opts.powerOfTwo ? 'a power of two ' : ''}in 1..${max}`, '§2.8.10.1');
  }
}

/** §2.8.11: the first byte of each part is a multiple of its alignment (§2.8.10.1 table). */
export function checkPackedAlignment(a: PackedRingAddresses): void {
  if (a.desc % PACKED_DESC_ALIGN !== 0 || a.driver % EVENT_SUPPRESS_ALIGN !== 0 || a.device % EVENT_SUPPRESS_ALIGN !== 0) {
    fail(
      'QUEUE_ALIGNMENT',
      `packed ring parts misaligned: desc 0x${a.desc.toString(16)} (16), driver 0x${a.driver.toString(16)} (4), ` +
        `device 0x${a.device.toString(16)} (4)`,
      '§2.8.11',
    );
  }
}

/** A compact placement from `base` (16-aligned): descriptor ring, driver area, device area. */
export function packedRingLayout(base: number, size: number): PackedRingAddresses & { bytes: number } {
  const driver = base + descRingBytes(size);
  const device = driver + EVENT_SUPPRESS_SIZE;
  return { size, desc: base, driver, device, bytes: descRingBytes(size) + 2 * EVENT_SUPPRESS_SIZE };
}

// ------------------------------------------------------------------------------------------
// descriptor words

/**
 * A descriptor is 4 u32 words: [0] addr lo, [1] addr hi, [2] len, [3] id | flags << 16.
 * These are the bits of word 3 (little-endian: id in bytes 12-13, flags in bytes 14-15).
 */
export const W3_AVAIL_SHIFT = 16 + 7;
export const W3_USED_SHIFT = 16 + 15;

/** The AVAIL/USED bits with which the driver marks a descriptor available in lap `wrap` (§2.8.1, §2.8.21.1). */
export const availBits = (wrap: number): number => (wrap ? PackedDescFlags.AVAIL : PackedDescFlags.USED);
/** The AVAIL/USED bits with which the device marks a descriptor used in lap `wrap` (§2.8.1). */
export const usedBits = (wrap: number): number => (wrap ? PackedDescFlags.AVAIL | PackedDescFlags.USED : 0);

// ------------------------------------------------------------------------------------------
// positions, wrap counters, saved state

/** `pos | wrap << 15`: the 16-bit "index with wrap bit 15" form (§2.8.14; vhost-user packed base). */
export const encodeRingIndex = (pos: number, wrap: number): number => (pos | (wrap ? 0x8000 : 0)) & 0xffff;
/** The inverse of encodeRingIndex. */
export const decodeRingIndex = (v: number): { pos: number; wrap: number } => ({ pos: v & 0x7fff, wrap: (v >>> 15) & 1 });
/** A fresh queue: position 0, wrap counter 1 (§2.8.1). */
export const INITIAL_RING_INDEX = 0x8000;

/**
 * vhost-user GET/SET_VRING_BASE `num` for a packed ring: avail state in bits 0-15, used state in
 * bits 16-31, each `pos | wrap << 15` (QEMU docs/interop/vhost-user.rst, "Vring descriptor
 * indices for packed virtqueues").
 */
export const packedVringBase = (nextAvail: number, nextUsed: number): number => ((nextAvail & 0xffff) | ((nextUsed & 0xffff) << 16)) >>> 0;
export const parsePackedVringBase = (num: number): { nextAvail: number; nextUsed: number } => ({
  nextAvail: num & 0xffff,
  nextUsed: (num >>> 16) & 0xffff,
});

/** Checks a saved `pos | wrap << 15` against the queue size; returns it decoded. */
export function checkRingIndex(v: number, size: number, what: string): { pos: number; wrap: number } {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff || (v & 0x7fff) >= size) {
    fail('QUEUE_BASE_INVALID', `${what} ${v} (position ${v & 0x7fff}) is not a position in a ${size}-entry packed ring`, '§2.8');
  }
  return decodeRingIndex(v);
}

/** The linear index (mod 2 * size) of position `pos` in lap `wrap` (see the file comment). */
export const linearIndex = (pos: number, wrap: number, size: number): number => (wrap ? pos : pos + size);

/**
 * §2.8.10 DESC mode: whether the descriptor named by `offWrap` (desc_event_off | wrap << 15) was
 * among the `count` descriptors made available/used from linear index `oldLin` up to `newLin`.
 * `count` ≥ 2 * size covers every position (the mod-2·size window alone could not say so).
 * An offset outside the ring names no descriptor and never triggers.
 */
export function eventInWindow(offWrap: number, oldLin: number, newLin: number, count: number, size: number): boolean {
  const off = offWrap & 0x7fff;
  if (off >= size) return false;
  if (count >= 2 * size) return true;
  const m = 2 * size;
  const event = linearIndex(off, (offWrap >>> 15) & 1, size);
  return (event - oldLin + m) % m < (newLin - oldLin + m) % m;
}

/** One event suppression structure as its 32-bit word (desc low, flags high). */
export const eventWord = (desc: number, flags: number): number => ((desc & 0xffff) | ((flags & 0xffff) << 16)) >>> 0;
export const eventWordFlags = (word: number): number => (word >>> 16) & 3;
export const eventWordDesc = (word: number): number => word & 0xffff;

/**
 * Whether the side that reads event suppression word `word` should notify, having published
 * `count` descriptors from linear index `oldLin` to `newLin` since its last decision (§2.8.10).
 * DISABLE: no. DESC (valid only with VIRTIO_F_RING_EVENT_IDX): the window test. ENABLE, the
 * reserved value 3, or DESC without EVENT_IDX: yes (a spare notification is harmless, a missing
 * one is not).
 */
export function eventWants(word: number, eventIdx: boolean, oldLin: number, newLin: number, count: number, size: number): boolean {
  const flags = eventWordFlags(word);
  if (flags === RingEventFlags.DISABLE) return false;
  if (flags === RingEventFlags.DESC && eventIdx) return eventInWindow(eventWordDesc(word), oldLin, newLin, count, size);
  return true;
}

// ------------------------------------------------------------------------------------------
// views

export interface PackedRingViews {
  size: number;
  /** Descriptor ring as 4 u32 words per descriptor: addr lo, addr hi, len, id | flags << 16. */
  desc: Uint32Array;
  /** Driver Event Suppression (Driver Area) as one word: desc | flags << 16. Written by the driver. */
  driverEvent: Uint32Array;
  /** Device Event Suppression (Device Area) as one word. Written by the device. */
  deviceEvent: Uint32Array;
}

/** Resolves a packed ring whose parts are given as guest-physical addresses. */
export function packedRingViewsFromGuest(memory: GuestMemory, a: PackedRingAddresses): PackedRingViews {
  checkPackedQueueSize(a.size);
  checkPackedAlignment(a);
  return packedRingViewsFromBytes(a.size, {
    desc: partBytes(memory, a.desc, descRingBytes(a.size), 'descriptor ring'),
    driver: partBytes(memory, a.driver, EVENT_SUPPRESS_SIZE, 'driver event suppression structure'),
    device: partBytes(memory, a.device, EVENT_SUPPRESS_SIZE, 'device event suppression structure'),
  });
}

function partBytes(memory: GuestMemory, addr: number, len: number, what: string): Uint8Array {
  try {
    return memory.slice(addr, len);
  } catch {
    return fail('MEM_OUT_OF_RANGE', `${what} at 0x${addr.toString(16)} (+${len}) is not inside guest memory`, '§2.8');
  }
}

/** Builds the views from byte windows of each part (each already bounds-checked). */
export function packedRingViewsFromBytes(
  size: number,
  parts: { desc: Uint8Array; driver: Uint8Array; device: Uint8Array },
): PackedRingViews {
  checkPackedQueueSize(size);
  if (parts.desc.byteOffset % 4 || parts.driver.byteOffset % 4 || parts.device.byteOffset % 4) {
    fail('QUEUE_ALIGNMENT', 'packed ring parts are not aligned in their backing memory', '§2.8.11');
  }
  if (parts.desc.length < descRingBytes(size) || parts.driver.length < 4 || parts.device.length < 4) {
    fail('MEM_OUT_OF_RANGE', 'packed ring parts are shorter than the ring', '§2.8.10.1');
  }
  const u32 = (b: Uint8Array, n: number) => new Uint32Array(b.buffer, b.byteOffset, n);
  return { size, desc: u32(parts.desc, 4 * size), driverEvent: u32(parts.driver, 1), deviceEvent: u32(parts.device, 1) };
}
