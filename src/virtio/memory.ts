/**
 * Guest memory: the guest-physical address space as a set of regions, each backed by
 * (a window of) an ArrayBuffer or SharedArrayBuffer. Every access is translated and
 * bounds-checked here; callers get zero-copy views that cannot reach past the region.
 *
 * Addresses are JavaScript numbers. A 64-bit guest address is read as two 32-bit halves
 * (see `joinAddress`); anything at or above 2^53 cannot be inside a region and is
 * rejected as out of range, never rounded.
 */
import { endianness } from 'node:os';
import { fail } from './errors.js';

if (endianness() !== 'LE') {
  // Typed-array views below are host-endian; virtio 1.x rings are little-endian (§2.7).
  throw new Error('virtio-ts needs a little-endian host');
}

export interface MemoryRegionInit {
  /** Guest-physical address of the first byte. */
  guestAddr: number;
  /** Length in bytes (> 0). */
  size: number;
  /** Backing store; the region is `buffer[offset, offset + size)`. */
  buffer: ArrayBufferLike;
  offset?: number;
}

export class MemoryRegion {
  readonly guestAddr: number;
  readonly size: number;
  readonly end: number; // exclusive
  /** The region's bytes: index 0 is `guestAddr`. */
  readonly bytes: Uint8Array;
  readonly view: DataView;

  constructor(init: MemoryRegionInit) {
    const offset = init.offset ?? 0;
    if (!Number.isSafeInteger(init.guestAddr) || init.guestAddr < 0) {
      throw new RangeError(`memory region: bad guest address ${init.guestAddr}`);
    }
    if (!Number.isSafeInteger(init.size) || init.size <= 0) {
      throw new RangeError(`memory region: bad size ${init.size}`);
    }
    if (offset < 0 || offset + init.size > init.buffer.byteLength) {
      throw new RangeError(
        `memory region: [${offset}, ${offset + init.size}) is outside its ${init.buffer.byteLength}-byte buffer`,
      );
    }
    this.guestAddr = init.guestAddr;
    this.size = init.size;
    this.end = init.guestAddr + init.size;
    if (!Number.isSafeInteger(this.end)) throw new RangeError('memory region: end beyond 2^53');
    this.bytes = new Uint8Array(init.buffer, offset, init.size);
    this.view = new DataView(init.buffer, offset, init.size);
  }
}

/** 2^32, to join the halves of a 64-bit little-endian address. */
const TWO_32 = 0x1_0000_0000;

/**
 * Joins the two little-endian 32-bit halves of a 64-bit guest address.
 * Returns a number ≥ 2^53 (an impossible address) when the value does not fit
 * exactly, so that translation fails with MEM_OUT_OF_RANGE rather than aliasing.
 */
export function joinAddress(lo: number, hi: number): number {
  if (hi >= 0x20_0000) return Number.MAX_SAFE_INTEGER + 1; // ≥ 2^53
  return hi * TWO_32 + (lo >>> 0);
}

export class GuestMemory {
  private regions: MemoryRegion[] = [];
  private last: MemoryRegion | undefined;

  constructor(regions: Iterable<MemoryRegionInit | MemoryRegion> = []) {
    for (const r of regions) this.addRegion(r);
  }

  /** Adds a region; regions may not overlap in guest-physical space. */
  addRegion(init: MemoryRegionInit | MemoryRegion): MemoryRegion {
    const region = init instanceof MemoryRegion ? init : new MemoryRegion(init);
    for (const r of this.regions) {
      if (region.guestAddr < r.end && r.guestAddr < region.end) {
        throw new RangeError(
          `memory region [0x${region.guestAddr.toString(16)}, 0x${region.end.toString(16)}) overlaps ` +
            `[0x${r.guestAddr.toString(16)}, 0x${r.end.toString(16)})`,
        );
      }
    }
    this.regions.push(region);
    this.regions.sort((a, b) => a.guestAddr - b.guestAddr);
    return region;
  }

  /** Removes the region that starts at `guestAddr` with `size`; returns it, or undefined. */
  removeRegion(guestAddr: number, size: number): MemoryRegion | undefined {
    const i = this.regions.findIndex((r) => r.guestAddr === guestAddr && r.size === size);
    if (i < 0) return undefined;
    const [r] = this.regions.splice(i, 1);
    if (this.last === r) this.last = undefined;
    return r;
  }

  get regionList(): readonly MemoryRegion[] {
    return this.regions;
  }

  /**
   * The region holding all of `[addr, addr + len)`; len may be 0 (then addr must still be inside).
   * Throws VirtioError MEM_OUT_OF_RANGE otherwise: buffers may not straddle regions.
   */
  region(addr: number, len: number): MemoryRegion {
    const last = this.last;
    if (last !== undefined && addr >= last.guestAddr && len <= last.end - addr && addr < last.end) return last;
    for (const r of this.regions) {
      if (addr >= r.guestAddr && addr < r.end && len <= r.end - addr) {
        this.last = r;
        return r;
      }
    }
    return fail(
      'MEM_OUT_OF_RANGE',
      `guest address range [0x${addr.toString(16)}, +${len}) is not inside guest memory`,
      '§2.7.5',
    );
  }

  /** A zero-copy view of `[addr, addr + len)`. */
  slice(addr: number, len: number): Uint8Array {
    const r = this.region(addr, len);
    const off = addr - r.guestAddr;
    return r.bytes.subarray(off, off + len);
  }

  readU8(addr: number): number {
    const r = this.region(addr, 1);
    return r.bytes[addr - r.guestAddr]!;
  }
  readU16(addr: number): number {
    const r = this.region(addr, 2);
    return r.view.getUint16(addr - r.guestAddr, true);
  }
  readU32(addr: number): number {
    const r = this.region(addr, 4);
    return r.view.getUint32(addr - r.guestAddr, true);
  }
  writeU16(addr: number, value: number): void {
    const r = this.region(addr, 2);
    r.view.setUint16(addr - r.guestAddr, value, true);
  }
  writeU32(addr: number, value: number): void {
    const r = this.region(addr, 4);
    r.view.setUint32(addr - r.guestAddr, value, true);
  }
  read(addr: number, into: Uint8Array): void {
    into.set(this.slice(addr, into.length));
  }
  write(addr: number, data: Uint8Array): void {
    this.slice(addr, data.length).set(data);
  }
}
