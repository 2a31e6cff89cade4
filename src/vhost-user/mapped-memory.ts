/**
 * The back-end's view of the front-end's memory ([vhost-user "Memory access"]): each region
 * of SET_MEM_TABLE / ADD_MEM_REG is mmap'ed from its fd and added to a GuestMemory by
 * guest-physical address (descriptor addresses are GPAs), and remembered by front-end user
 * address (ring addresses in SET_VRING_ADDR are user addresses).
 *
 * [vhost-user "Memory region description"]: `mmap offset` is where the region starts in the
 * fd. mmap needs a page-aligned offset, so [alignDown(offset), offset + size) is mapped and
 * the region begins `offset % page` bytes into the mapping.
 *
 * The fd is closed as soon as it is mapped (the mapping keeps the memory alive); every
 * mapping leaves the lookup on removal, on replacement, and when the connection ends, and is
 * unmapped when `release` says so: the session waits until the device model's asynchronous
 * I/O into it has finished, so a preadv still running on libuv's pool never writes into an
 * address range the process has since mapped for something else.
 *
 * A front-end can take pages away after the fact: ftruncate() its fd smaller and every access
 * to the lost pages raises SIGBUS, which by default kills the back-end. Two defences
 * (docs/vhost-user.md "Memory the front-end shrinks"):
 *  - `requireSealed`: accept only memfds sealed against shrinking (F_SEAL_SHRINK, as QEMU's
 *    memory-backend-memfd seals by default); anything else is refused at SET_MEM_TABLE.
 *  - Always: the addon's SIGBUS guard maps a zero page over a lost page and reports it on an
 *    eventfd (`onMemoryFault`); `faulted()` says which regions lost pages, and the session
 *    closes the connection (the front-end broke the memory contract).
 */
import { fstatSync } from 'node:fs';
import type { GuestMemory, MemoryRegion } from '../virtio/memory.js';
import { native, type Watch } from './native/index.js';
import { ProtocolError } from './codec.js';
import { closeQuietly } from './message-channel.js';
import { toSafeNumber, type MemoryRegionDescription } from './payloads.js';
import { describeFd } from './vring.js';

export interface MappedRegion {
  readonly guestAddr: number;
  readonly size: number;
  readonly userAddr: number;
  readonly mmapOffset: number;
  /** The whole mapping (from the page-aligned offset). */
  readonly mapping: ArrayBuffer;
  readonly region: MemoryRegion;
}

/** F_SEAL_SHRINK (linux/fcntl.h): the file cannot be made smaller. */
export const F_SEAL_SHRINK = 0x0002;

const faultListeners = new Set<() => void>();
let faultWatch: Watch | null = null;

/**
 * Calls `listener` (on the event loop) after the addon's SIGBUS guard has replaced lost pages
 * of a mapping with zero pages; returns the unsubscribe function. The watch is unref'd: it
 * never keeps the process alive by itself.
 */
export function onMemoryFault(listener: () => void): () => void {
  faultListeners.add(listener);
  if (faultWatch === null) {
    const fd = native.memoryFaultFd();
    if (fd !== null) {
      faultWatch = native
        .watchEventfd(fd, () => {
          for (const l of [...faultListeners]) l();
        })
        .unref();
    }
  }
  return () => {
    faultListeners.delete(listener);
    if (faultListeners.size === 0 && faultWatch !== null) {
      faultWatch.stop();
      faultWatch = null;
    }
  };
}

export class MappedMemory {
  private readonly regions: MappedRegion[] = [];

  constructor(
    /** The memory the device runtime uses; regions are added to and removed from it. */
    readonly memory: GuestMemory,
    /** GET_MAX_MEM_SLOTS. */
    readonly maxSlots: number,
    /** Called with the munmap of a region gone from the lookup; runs it when nothing uses it any more (default: at once). */
    private readonly release: (unmap: () => void) => void = (unmap) => unmap(),
    /** Accept only memfds sealed against shrinking (F_SEAL_SHRINK). */
    readonly requireSealed = false,
  ) {}

  /** The regions whose pages the SIGBUS guard replaced (the front-end shrank their fd), with the page count. */
  faulted(): { region: MappedRegion; pages: number }[] {
    const out: { region: MappedRegion; pages: number }[] = [];
    for (const r of this.regions) {
      const pages = native.mappingFaults(r.mapping);
      if (pages > 0) out.push({ region: r, pages });
    }
    return out;
  }

  get count(): number {
    return this.regions.length;
  }

  get list(): readonly MappedRegion[] {
    return this.regions;
  }

  /**
   * Maps one region from `fd` (always consumed: closed whether or not this succeeds).
   * Throws ProtocolError for a region we cannot accept.
   */
  add(desc: MemoryRegionDescription, fd: number): MappedRegion {
    try {
      return this.map(desc, fd);
    } finally {
      closeQuietly(fd);
    }
  }

  private map(desc: MemoryRegionDescription, fd: number): MappedRegion {
    const guestAddr = toSafeNumber(desc.guestAddr);
    const size = toSafeNumber(desc.size);
    const userAddr = toSafeNumber(desc.userAddr);
    const mmapOffset = toSafeNumber(desc.mmapOffset);
    const what = `region gpa 0x${desc.guestAddr.toString(16)} size 0x${desc.size.toString(16)}`;
    if (guestAddr === null || size === null || userAddr === null || mmapOffset === null) {
      throw new ProtocolError(`${what}: address, size or offset beyond 2^53`);
    }
    if (size === 0) throw new ProtocolError(`${what}: empty region`);
    if (!Number.isSafeInteger(guestAddr + size) || !Number.isSafeInteger(userAddr + size) || !Number.isSafeInteger(mmapOffset + size)) {
      throw new ProtocolError(`${what}: region end beyond 2^53`);
    }
    if (this.regions.length >= this.maxSlots) {
      throw new ProtocolError(`${what}: all ${this.maxSlots} memory slots are in use`);
    }
    for (const r of this.regions) {
      if (guestAddr < r.guestAddr + r.size && r.guestAddr < guestAddr + size) {
        throw new ProtocolError(`${what}: overlaps the region at gpa 0x${r.guestAddr.toString(16)}`);
      }
      if (userAddr < r.userAddr + r.size && r.userAddr < userAddr + size) {
        throw new ProtocolError(`${what}: user addresses overlap the region at 0x${r.userAddr.toString(16)}`);
      }
    }
    // Touching a page past the end of a file raises SIGBUS and kills the process: refuse
    // a region that is not inside its file (for the kinds whose size we can know).
    const kind = native.fdKind(fd);
    if (this.requireSealed) {
      const seals = kind === 'memfd' ? native.fdSeals(fd) : -1;
      if (seals < 0 || (seals & F_SEAL_SHRINK) === 0) {
        throw new ProtocolError(
          `${what}: the fd is ${kind === 'memfd' ? 'a memfd not sealed against shrinking (F_SEAL_SHRINK)' : `a ${kind}, not a sealed memfd`}, and sealed memory is required (--require-sealed-memory)`,
        );
      }
    }
    if (kind === 'memfd' || kind === 'file') {
      const fileSize = native.fdSize(fd);
      if (mmapOffset + size > fileSize) {
        throw new ProtocolError(`${what}: [0x${mmapOffset.toString(16)}, +0x${size.toString(16)}) is past the end of its ${fileSize}-byte file`);
      }
    } else if (kind !== 'other') {
      throw new ProtocolError(`${what}: the fd is a ${kind}, not memory`);
    } else {
      // mmap would fail on a directory or a pipe anyway (said plainly here); a block device
      // would map, but its size is not in fstat, so a region past its end could not be
      // refused and would SIGBUS the process when touched. Character devices are left to
      // mmap (most refuse it; /dev/zero-like ones give plain memory).
      const st = fstatSync(fd);
      if (st.isDirectory() || st.isFIFO() || st.isBlockDevice()) {
        throw new ProtocolError(`${what}: the fd is ${describeFd(fd)}, not memory`);
      }
    }
    const page = native.pageSize;
    const alignedOffset = mmapOffset - (mmapOffset % page);
    const lead = mmapOffset - alignedOffset;
    let mapping: ArrayBuffer;
    try {
      mapping = native.mmap(fd, lead + size, alignedOffset);
    } catch (e) {
      throw new ProtocolError(`${what}: mmap failed: ${(e as Error).message}`);
    }
    let region: MemoryRegion;
    try {
      region = this.memory.addRegion({ guestAddr, size, buffer: mapping, offset: lead });
    } catch (e) {
      native.munmap(mapping);
      throw new ProtocolError(`${what}: ${(e as Error).message}`);
    }
    const mapped: MappedRegion = { guestAddr, size, userAddr, mmapOffset, mapping, region };
    this.regions.push(mapped);
    return mapped;
  }

  /**
   * Removes the region identified by guest address, user address and size, the mmap offset
   * being ignored ([vhost-user "VHOST_USER_REM_MEM_REG"]). Returns false if there is no such region.
   */
  remove(desc: MemoryRegionDescription): boolean {
    const i = this.regions.findIndex(
      (r) => BigInt(r.guestAddr) === desc.guestAddr && BigInt(r.userAddr) === desc.userAddr && BigInt(r.size) === desc.size,
    );
    if (i < 0) return false;
    const [r] = this.regions.splice(i, 1);
    this.unmap(r!);
    return true;
  }

  /** Unmaps every region. */
  clear(): void {
    for (const r of this.regions.splice(0)) this.unmap(r);
  }

  /**
   * A view of `len` bytes at front-end user address `uva`, or null if they are not inside
   * one region ([vhost-user "Memory access"]: "User addresses map to the vhost memory
   * region containing that user address").
   */
  userSlice(uva: number, len: number): Uint8Array | null {
    for (const r of this.regions) {
      if (uva >= r.userAddr && uva < r.userAddr + r.size && len <= r.userAddr + r.size - uva) {
        const off = uva - r.userAddr;
        return r.region.bytes.subarray(off, off + len);
      }
    }
    return null;
  }

  private unmap(r: MappedRegion): void {
    this.memory.removeRegion(r.guestAddr, r.size);
    this.release(() => {
      try {
        native.munmap(r.mapping);
      } catch {
        // already detached
      }
    });
  }
}
