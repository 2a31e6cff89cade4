/**
 * Guest RAM for the TypeScript vhost-user front-end: one memfd per region, mapped here and
 * shared with the back-end through SET_MEM_TABLE / ADD_MEM_REG ([vhost-user "Memory access"]).
 *
 * Each region has a guest-physical address (what descriptors carry), a "user address"
 * (what ring addresses in SET_VRING_ADDR carry: for QEMU the address of its own mapping;
 * here a made-up address, deliberately different from the GPA so that a back-end mixing
 * the two is caught), and an mmap offset into its memfd.
 */
import { GuestMemory } from '../virtio/memory.js';
import { native } from './native/index.js';
import { closeQuietly } from './message-channel.js';
import type { MemoryRegionDescription } from './payloads.js';

export interface RamRegionSpec {
  guestAddr: number;
  size: number;
  /** Default: 0x5555_0000_0000 + guestAddr. */
  userAddr?: number;
  /** Where the region starts in its memfd (default 0); the memfd is offset + size long. */
  mmapOffset?: number;
  /** Seals to add to the memfd (F_ADD_SEALS; e.g. F_SEAL_SHRINK 2 | F_SEAL_GROW 4, as QEMU's memfd backend does). Default none. */
  seals?: number;
}

export interface RamRegion {
  readonly guestAddr: number;
  readonly size: number;
  readonly userAddr: number;
  readonly mmapOffset: number;
  readonly fd: number;
  readonly mapping: ArrayBuffer;
  /** Bump allocator position (bytes from the region start). */
  next: number;
}

export const USER_ADDRESS_BASE = 0x5555_0000_0000;

export class FrontendMemory {
  readonly memory = new GuestMemory();
  readonly regions: RamRegion[] = [];

  constructor(specs: readonly RamRegionSpec[]) {
    try {
      for (const s of specs) this.addRegion(s);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private addRegion(s: RamRegionSpec): void {
    const mmapOffset = s.mmapOffset ?? 0;
    const fd = native.memfdCreate(`vhost-user-guest-ram-${this.regions.length}`, mmapOffset + s.size);
    let mapping: ArrayBuffer;
    const lead = mmapOffset % native.pageSize;
    try {
      if (s.seals) native.addSeals(fd, s.seals);
      mapping = native.mmap(fd, lead + s.size, mmapOffset - lead);
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
    this.memory.addRegion({ guestAddr: s.guestAddr, size: s.size, buffer: mapping, offset: lead });
    this.regions.push({
      guestAddr: s.guestAddr,
      size: s.size,
      userAddr: s.userAddr ?? USER_ADDRESS_BASE + s.guestAddr,
      mmapOffset,
      fd,
      mapping,
      next: 0,
    });
  }

  /** The region descriptions for SET_MEM_TABLE (fds in the same order: `fds`). */
  descriptions(): MemoryRegionDescription[] {
    return this.regions.map((r) => describe(r));
  }

  get fds(): number[] {
    return this.regions.map((r) => r.fd);
  }

  /** The front-end user address of guest-physical `gpa` (for SET_VRING_ADDR). */
  userAddr(gpa: number): number {
    for (const r of this.regions) if (gpa >= r.guestAddr && gpa < r.guestAddr + r.size) return r.userAddr + (gpa - r.guestAddr);
    throw new RangeError(`gpa 0x${gpa.toString(16)} is not in guest RAM`);
  }

  /** Allocates `bytes` aligned to `align` in region `region`; returns the GPA. Never freed (until close). */
  alloc(bytes: number, align = 16, region = 0): number {
    const r = this.regions[region];
    if (!r) throw new RangeError(`no RAM region ${region}`);
    const start = Math.ceil(r.next / align) * align;
    if (start + bytes > r.size) throw new RangeError(`RAM region ${region} is full (${bytes} bytes wanted)`);
    r.next = start + bytes;
    return r.guestAddr + start;
  }

  /** Unmaps and closes everything. */
  close(): void {
    for (const r of this.regions.splice(0)) {
      this.memory.removeRegion(r.guestAddr, r.size);
      try {
        native.munmap(r.mapping);
      } catch {
        // detached already
      }
      closeQuietly(r.fd);
    }
  }
}

export function describe(r: RamRegion): MemoryRegionDescription {
  return {
    guestAddr: BigInt(r.guestAddr),
    size: BigInt(r.size),
    userAddr: BigInt(r.userAddr),
    mmapOffset: BigInt(r.mmapOffset),
  };
}
