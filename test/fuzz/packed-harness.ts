/**
 * A packed ring in a fresh guest memory with both halves attached (single-thread tests and the
 * packed fuzz targets), and raw writers for building rings by hand.
 */
import { PackedDescFlags } from '../../src/virtio/constants.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { PackedDeviceQueue } from '../../src/virtio/packed-device-queue.js';
import { PackedDriverQueue } from '../../src/virtio/packed-driver-queue.js';
import { packedRingLayout, packedRingViewsFromGuest, type PackedRingAddresses } from '../../src/virtio/packed-ring.js';

export const PBASE = 0x10000;
export const PMEM_BYTES = 1 << 20;

export interface PackedRing {
  memory: GuestMemory;
  bytes: Uint8Array;
  ring: PackedRingAddresses & { bytes: number };
  device: PackedDeviceQueue;
  driver: PackedDriverQueue<number>;
  /** A bump allocator over the memory after the ring (buffers, indirect tables). */
  alloc(bytes: number, align?: number): number;
  /** Tables handed to the driver and not freed yet. */
  liveTables: Set<number>;
}

export interface PackedRingOptions {
  eventIdx?: boolean;
  indirect?: boolean;
  /** Whether the driver uses indirect tables (default: `indirect`). */
  driverIndirect?: boolean;
  memBytes?: number;
  maxIndirectEntries?: number;
  /** Attach no driver (hostile tests write the ring by hand). */
  noDriver?: boolean;
}

export function makePackedRing(size: number, opts: PackedRingOptions = {}): PackedRing {
  const buffer = new SharedArrayBuffer(opts.memBytes ?? PMEM_BYTES);
  const memory = new GuestMemory([{ guestAddr: PBASE, size: buffer.byteLength, buffer }]);
  const ring = packedRingLayout(PBASE, size);
  let next = PBASE + ring.bytes;
  const alloc = (bytes: number, align = 16): number => {
    next = Math.ceil(next / align) * align;
    const a = next;
    next += bytes;
    if (next > PBASE + buffer.byteLength) throw new Error('test memory exhausted');
    return a;
  };
  const eventIdx = opts.eventIdx ?? false;
  const indirect = opts.indirect ?? false;
  const liveTables = new Set<number>();
  const driver = opts.noDriver
    ? (undefined as unknown as PackedDriverQueue<number>)
    : new PackedDriverQueue<number>(memory, packedRingViewsFromGuest(memory, ring), {
        eventIdx,
        indirect: opts.driverIndirect ?? indirect,
        ...(opts.maxIndirectEntries === undefined ? {} : { maxIndirectEntries: opts.maxIndirectEntries }),
        allocIndirect: (n) => {
          const a = alloc(n, 16);
          liveTables.add(a);
          return a;
        },
        freeIndirect: (a) => {
          if (!liveTables.delete(a)) throw new Error(`indirect table 0x${a.toString(16)} freed twice or never allocated`);
        },
      });
  const device = new PackedDeviceQueue(memory, packedRingViewsFromGuest(memory, ring), {
    eventIdx,
    indirect,
    ...(opts.maxIndirectEntries === undefined ? {} : { maxIndirectEntries: opts.maxIndirectEntries }),
  });
  return { memory, bytes: new Uint8Array(buffer), ring, device, driver, alloc, liveTables };
}

/** The AVAIL/USED bits of an available descriptor in the driver's lap `wrap` (§2.8.1). */
export const AV = (wrap = 1): number => (wrap ? PackedDescFlags.AVAIL : PackedDescFlags.USED);
/** The AVAIL/USED bits of a used descriptor in the device's lap `wrap`. */
export const US = (wrap = 1): number => (wrap ? PackedDescFlags.AVAIL | PackedDescFlags.USED : 0);

/** Writes descriptor `i` of the ring (or of an indirect table at `table`) field by field. */
export function writePackedDesc(r: { memory: GuestMemory; ring: { desc: number } }, i: number, addr: number, len: number, id: number, flags: number, table = r.ring.desc): void {
  const v = r.memory.slice(table + 16 * i, 16);
  const d = new DataView(v.buffer, v.byteOffset, 16);
  d.setUint32(0, addr % 0x1_0000_0000, true);
  d.setUint32(4, Math.floor(addr / 0x1_0000_0000), true);
  d.setUint32(8, len, true);
  d.setUint16(12, id, true);
  d.setUint16(14, flags, true);
}

/** Reads descriptor `i` of the ring. */
export function readPackedDesc(r: { memory: GuestMemory; ring: { desc: number } }, i: number): { addr: number; len: number; id: number; flags: number } {
  const at = r.ring.desc + 16 * i;
  return {
    addr: r.memory.readU32(at) + r.memory.readU32(at + 4) * 0x1_0000_0000,
    len: r.memory.readU32(at + 8),
    id: r.memory.readU16(at + 12),
    flags: r.memory.readU16(at + 14),
  };
}
