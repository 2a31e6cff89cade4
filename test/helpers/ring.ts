/** A split ring in a fresh guest memory with both halves attached, for single-thread tests. */
import { DeviceQueue } from '../../src/virtio/device-queue.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout, type SplitRingAddresses } from '../../src/virtio/split-ring.js';

export const BASE = 0x10000;
export const MEM_BYTES = 1 << 20;

export interface Ring {
  memory: GuestMemory;
  bytes: Uint8Array;
  ring: SplitRingAddresses & { bytes: number };
  device: DeviceQueue;
  driver: DriverQueue<number>;
  /** A bump allocator over the memory after the ring (for buffers and indirect tables). */
  alloc(bytes: number, align?: number): number;
}

export function makeRing(
  size: number,
  opts: { eventIdx?: boolean; indirect?: boolean; driverIndirect?: boolean; memBytes?: number } = {},
): Ring {
  const buffer = new SharedArrayBuffer(opts.memBytes ?? MEM_BYTES);
  const memory = new GuestMemory([{ guestAddr: BASE, size: buffer.byteLength, buffer }]);
  const ring = packedLayout(BASE, size);
  let next = BASE + ring.bytes;
  const alloc = (bytes: number, align = 16): number => {
    next = Math.ceil(next / align) * align;
    const a = next;
    next += bytes;
    if (next > BASE + buffer.byteLength) throw new Error('test memory exhausted');
    return a;
  };
  const eventIdx = opts.eventIdx ?? false;
  const indirect = opts.indirect ?? false;
  const driver = new DriverQueue<number>(memory, ringViewsFromGuest(memory, ring), {
    eventIdx,
    indirect: opts.driverIndirect ?? indirect,
    allocIndirect: (n) => alloc(n, 16),
  });
  const device = new DeviceQueue(memory, ringViewsFromGuest(memory, ring), { eventIdx, indirect });
  return { memory, bytes: new Uint8Array(buffer), ring, device, driver, alloc };
}

/** Writes descriptor i of the table directly (to build malformed chains by hand). */
export function writeDesc(r: Ring, i: number, addr: number, len: number, flags: number, next = 0, table = r.ring.desc): void {
  const v = r.memory.slice(table + 16 * i, 16);
  const d = new DataView(v.buffer, v.byteOffset, 16);
  d.setUint32(0, addr % 0x1_0000_0000, true);
  d.setUint32(4, Math.floor(addr / 0x1_0000_0000), true);
  d.setUint32(8, len, true);
  d.setUint16(12, flags, true);
  d.setUint16(14, next, true);
}

/** Puts `head` into the available ring at the current avail.idx and publishes it. */
export function makeAvailable(r: Ring, head: number): void {
  const idx = r.memory.readU16(r.ring.avail + 2);
  r.memory.writeU16(r.ring.avail + 4 + 2 * (idx % r.ring.size), head);
  r.memory.writeU16(r.ring.avail + 2, (idx + 1) & 0xffff);
}
