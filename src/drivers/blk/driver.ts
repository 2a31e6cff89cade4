/**
 * The virtio-blk guest driver for the embedded machine (virtio 1.2 §5.2), in the manner of
 * Linux's virtio_blk: binds device ID 2, reads the configuration space (§5.2.4, with the
 * generation check of §2.5.1), sets up num_queues request queues (VIRTIO_BLK_F_MQ) and exposes
 * the disk as /dev/vda (vdb, … for further disks; the embedded kernel has misc devices only).
 *
 * What a program can do with /dev/vda:
 *  - pread(count, position) / pwrite(data, position), and read / write at the file position.
 *    The embedded kernel has no page cache, so like O_DIRECT on Linux, positions and lengths
 *    must be multiples of the logical block size (blk_size when VIRTIO_BLK_F_BLK_SIZE was
 *    negotiated, else 512): EINVAL otherwise. Reads at or past the end return no bytes and are
 *    cut at the end; writes past the end are ENOSPC and cut at the end. Writes to a read-only
 *    disk (VIRTIO_BLK_F_RO) are EPERM, as Linux's.
 *  - fsync → VIRTIO_BLK_T_FLUSH (when VIRTIO_BLK_F_FLUSH was negotiated; else writes are
 *    already stable when they complete, §5.2.6.2).
 *  - ioctl: BLKGETSIZE64, BLKSSZGET, BLKROGET, BLKDISCARD, BLKZEROOUT (Linux's numbers and
 *    argument layouts) and {@link BLKGETSERIAL} (GET_ID; Linux shows it in /sys/block/vda/serial,
 *    which the embedded kernel does not have). Anything else: ENOTTY.
 *
 * Requests: one DMA buffer each, laid out header (16 bytes, device-readable), data, status byte
 * (device-writable, last); a transfer is split into requests of at most {@link MAX_REQUEST_BYTES}
 * spread round-robin over the queues, all in flight at once; discard and write-zeroes ranges
 * are split by max_*_sectors and packed max_*_seg segments to a request (§5.2.6). A full ring, or
 * guest memory used up by requests in flight, makes the caller wait for completions. Status
 * IOERR → EIO, UNSUPP → EOPNOTSUPP, anything else the device writes there → EIO.
 *
 * A used id not in flight (checked by the queue), or DEVICE_NEEDS_RESET (§2.1.2), marks the
 * device broken: it is reset, every buffer is taken back, and waiting and later calls get EIO.
 */
import type { OptionValues } from '../../devices/definition.js';
import {
  BlkConfig,
  BlkFeature,
  BlkStatus,
  BlkType,
  HEADER_SIZE,
  ID_BYTES,
  SEGMENT_SIZE,
  VIRTIO_ID_BLOCK,
} from '../../devices/blk/device.js';
import { Status } from '../../virtio/constants.js';
import type { DriverVirtqueue } from '../../virtio/virtqueue.js';
import { Errno, type FileOperations, type GuestKernel, type OpenFile } from '../kernel.js';
import type { VirtioDriver, VirtioDriverDevice } from '../virtio-bus.js';

const SECTOR = 512;
/** Largest data part of one request. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Most queues the driver sets up (Linux: one per CPU; the embedded guest has one thread). */
export const MAX_QUEUES = 16;

/** Linux's block ioctls (include/uapi/linux/fs.h). */
export const BLKROGET = 0x125e;
export const BLKSSZGET = 0x1268;
export const BLKDISCARD = 0x1277;
export const BLKZEROOUT = 0x127f;
/** _IOR(0x12, 114, size_t) on 64-bit Linux. */
export const BLKGETSIZE64 = 0x80081272;
/** This driver's own: the 20-byte GET_ID string into `arg` (Linux: /sys/block/vda/serial). */
export const BLKGETSERIAL = 0x80147601;

/** The configuration the driver works with (§5.2.4, what was negotiated). */
export interface BlkDiskInfo {
  capacitySectors: number;
  blockSize: number;
  readOnly: boolean;
  flush: boolean;
  numQueues: number;
  discard: { maxSectors: number; maxSeg: number; alignment: number } | null;
  writeZeroes: { maxSectors: number; maxSeg: number } | null;
}

/** One request in flight. */
interface Request {
  addr: number;
  /** Offset of the status byte in the buffer. */
  statusAt: number;
  resolve(status: number): void;
  reject(e: Error): void;
}

/** Per-open-file state: the file position of read/write. */
interface FileState {
  position: number;
}

const u32 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);

class BlkDisk {
  readonly name: string;
  private broken: string | null = null;
  private brokenCode: 'EIO' | 'ENODEV' = 'EIO';
  private waiters: (() => void)[] = [];
  private inFlight = 0;
  private nextQueue = 0;

  constructor(
    private readonly dev: VirtioDriverDevice,
    private readonly kernel: GuestKernel,
    private readonly vqs: DriverVirtqueue<Request>[],
    readonly info: BlkDiskInfo,
    name: string,
    private readonly driverName: string,
  ) {
    this.name = kernel.registerMisc(name, this.fileOperations());
  }

  get sizeBytes(): number {
    return this.info.capacitySectors * SECTOR;
  }

  /** A used buffer notification: every queue is looked at (virtio-mmio has one interrupt). */
  requestDone(index: number): void {
    const vq = this.vqs[index];
    if (!vq) return;
    try {
      do {
        vq.disableCallbacks();
        let used;
        while ((used = vq.getUsed()) !== null) this.complete(used.token);
        if (vq.isBroken) break;
      } while (!vq.enableCallbacks());
    } catch (e) {
      this.markBroken(`device returned a bad used buffer: ${(e as Error).message}`);
    }
    this.wake();
  }

  configChanged(): void {
    if (this.dev.status & Status.NEEDS_RESET) this.markBroken('device reports DEVICE_NEEDS_RESET');
  }

  remove(): void {
    this.markBroken('device removed', 'ENODEV');
    this.kernel.deregisterMisc(this.name);
  }

  private complete(req: Request): void {
    this.inFlight--;
    req.resolve(this.kernel.memory.readU8(req.addr + req.statusAt));
  }

  private markBroken(why: string, code: 'EIO' | 'ENODEV' = 'EIO'): void {
    if (this.broken !== null) return;
    this.broken = why;
    this.brokenCode = code;
    this.kernel.printk(`${this.driverName}: ${why}; device is broken`);
    // Reset first so the device stops using our buffers, then take every buffer back (§2.1.2).
    this.dev.reset();
    for (const vq of this.vqs) {
      for (const req of vq.detachUnused()) {
        this.inFlight--;
        req.reject(new Errno(code, why));
      }
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private checkBroken(): void {
    if (this.broken !== null) throw new Errno(this.brokenCode, this.broken);
  }

  /**
   * One request: header, `out` (device-readable data), `inLen` device-writable data bytes, the
   * status byte. Resolves with the bytes the device wrote into the data part.
   */
  private async request(type: number, sector: number, out: Uint8Array | null, inLen: number): Promise<Uint8Array> {
    const outLen = out?.length ?? 0;
    const total = HEADER_SIZE + outLen + inLen + 1;
    const addr = await this.alloc(total);
    const mem = this.kernel.memory;
    const header = mem.slice(addr, HEADER_SIZE);
    const hv = new DataView(header.buffer, header.byteOffset, HEADER_SIZE);
    hv.setUint32(0, type, true);
    hv.setUint32(4, 0, true);
    hv.setUint32(8, sector % 0x1_0000_0000, true);
    hv.setUint32(12, Math.floor(sector / 0x1_0000_0000), true);
    if (out) mem.slice(addr + HEADER_SIZE, outLen).set(out);
    const inAt = HEADER_SIZE + outLen;
    const statusAt = inAt + inLen;
    mem.slice(addr + inAt, inLen + 1).fill(0);
    mem.slice(addr + statusAt, 1)[0] = 0xff; // not a status: a device that never writes it is caught
    const outBufs = [{ addr, len: HEADER_SIZE }, ...(outLen ? [{ addr: addr + HEADER_SIZE, len: outLen }] : [])];
    const inBufs = [...(inLen ? [{ addr: addr + inAt, len: inLen }] : []), { addr: addr + statusAt, len: 1 }];
    let status: number;
    try {
      status = await new Promise<number>((resolve, reject) => {
        const req: Request = { addr, statusAt, resolve, reject };
        const submit = (): void => {
          if (this.broken !== null) return reject(new Errno(this.brokenCode, this.broken));
          // Round robin over the queues; a full one is skipped, all full: wait for a completion.
          for (let k = 0; k < this.vqs.length; k++) {
            const index = (this.nextQueue + k) % this.vqs.length;
            const vq = this.vqs[index]!;
            if (vq.add(outBufs, inBufs, req)) {
              this.nextQueue = (index + 1) % this.vqs.length;
              this.inFlight++;
              this.dev.kick(vq, index);
              return;
            }
          }
          this.waiters.push(submit);
        };
        submit();
      });
      if (status !== BlkStatus.OK) {
        if (status === BlkStatus.UNSUPP) throw new Errno('EOPNOTSUPP', `the device does not support request type ${type}`);
        throw new Errno('EIO', `request type ${type} at sector ${sector}: ${status === BlkStatus.IOERR ? 'I/O error' : `status ${status}`}`);
      }
      return inLen ? mem.slice(addr + inAt, inLen).slice() : new Uint8Array(0);
    } finally {
      this.kernel.dmaFree(addr);
      this.wake(); // memory came back
    }
  }

  /** DMA memory for a request; waits while requests in flight hold it all. */
  private async alloc(bytes: number): Promise<number> {
    for (;;) {
      this.checkBroken();
      const addr = this.kernel.dmaAlloc(bytes, 16);
      if (addr !== null) return addr;
      if (this.inFlight === 0) throw new Errno('ENOMEM', `no guest memory for a ${bytes}-byte request`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  private checkAligned(position: number, length: number, what: string): void {
    const b = this.info.blockSize;
    if (!Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 || length < 0) {
      throw new Errno('EINVAL', `${what}: position ${position}, length ${length}`);
    }
    if (position % b !== 0 || length % b !== 0) {
      throw new Errno('EINVAL', `${what}: position ${position} and length ${length} must be multiples of the ${b}-byte block size`);
    }
  }

  async pread(count: number, position: number): Promise<Uint8Array> {
    this.checkBroken();
    this.checkAligned(position, count, 'pread');
    const n = Math.max(0, Math.min(count, this.sizeBytes - position));
    const out = new Uint8Array(n);
    const pieces: Promise<void>[] = [];
    for (let at = 0; at < n; at += MAX_REQUEST_BYTES) {
      const len = Math.min(MAX_REQUEST_BYTES, n - at);
      pieces.push(this.request(BlkType.IN, (position + at) / SECTOR, null, len).then((bytes) => out.set(bytes, at)));
    }
    await Promise.all(pieces);
    return out;
  }

  async pwrite(data: Uint8Array, position: number): Promise<number> {
    this.checkBroken();
    if (this.info.readOnly) throw new Errno('EPERM', `${this.name} is read-only`);
    this.checkAligned(position, data.length, 'pwrite');
    if (data.length === 0) return 0;
    if (position >= this.sizeBytes) throw new Errno('ENOSPC', `pwrite at ${position}: the disk ends at ${this.sizeBytes}`);
    const n = Math.min(data.length, this.sizeBytes - position);
    const pieces: Promise<unknown>[] = [];
    for (let at = 0; at < n; at += MAX_REQUEST_BYTES) {
      const len = Math.min(MAX_REQUEST_BYTES, n - at);
      pieces.push(this.request(BlkType.OUT, (position + at) / SECTOR, data.subarray(at, at + len), 0));
    }
    await Promise.all(pieces);
    return n;
  }

  async fsync(): Promise<void> {
    this.checkBroken();
    if (this.info.flush) await this.request(BlkType.FLUSH, 0, null, 0);
  }

  /** BLKDISCARD / BLKZEROOUT over [start, start + length). */
  private async discardOrZeroes(zeroes: boolean, start: number, length: number): Promise<void> {
    this.checkBroken();
    if (this.info.readOnly) throw new Errno('EPERM', `${this.name} is read-only`);
    this.checkAligned(start, length, zeroes ? 'BLKZEROOUT' : 'BLKDISCARD');
    if (start + length > this.sizeBytes) throw new Errno('EINVAL', `range [${start}, +${length}) is past the disk's ${this.sizeBytes} bytes`);
    const limits = zeroes ? this.info.writeZeroes : this.info.discard;
    if (!limits) {
      if (!zeroes) throw new Errno('EOPNOTSUPP', `${this.name} does not support discard`);
      // No WRITE_ZEROES: write zero blocks, as Linux's blkdev_issue_zeroout falls back to.
      for (let at = 0; at < length; at += MAX_REQUEST_BYTES) {
        const len = Math.min(MAX_REQUEST_BYTES, length - at);
        await this.pwrite(new Uint8Array(len), start + at);
      }
      return;
    }
    // Segments of at most maxSectors, maxSeg per request (§5.2.6).
    const segments: { sector: number; sectors: number }[] = [];
    for (let s = start / SECTOR, end = (start + length) / SECTOR; s < end; ) {
      const n = Math.min(end - s, limits.maxSectors);
      segments.push({ sector: s, sectors: n });
      s += n;
    }
    const pieces: Promise<unknown>[] = [];
    for (let i = 0; i < segments.length; i += limits.maxSeg) {
      const batch = segments.slice(i, i + limits.maxSeg);
      const data = new Uint8Array(batch.length * SEGMENT_SIZE);
      const v = new DataView(data.buffer);
      batch.forEach((seg, k) => {
        v.setUint32(k * SEGMENT_SIZE, seg.sector % 0x1_0000_0000, true);
        v.setUint32(k * SEGMENT_SIZE + 4, Math.floor(seg.sector / 0x1_0000_0000), true);
        v.setUint32(k * SEGMENT_SIZE + 8, seg.sectors, true);
        v.setUint32(k * SEGMENT_SIZE + 12, 0, true); // no unmap: §5.2.6.1 (must be 0 for discard)
      });
      pieces.push(this.request(zeroes ? BlkType.WRITE_ZEROES : BlkType.DISCARD, 0, data, 0));
    }
    await Promise.all(pieces);
  }

  async ioctl(request: number, arg: Uint8Array): Promise<number> {
    this.checkBroken();
    const v = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
    const need = (n: number) => {
      if (arg.length < n) throw new Errno('EFAULT', `ioctl 0x${request.toString(16)} needs a ${n}-byte argument`);
    };
    switch (request) {
      case BLKGETSIZE64:
        need(8);
        v.setBigUint64(0, BigInt(this.sizeBytes), true);
        return 0;
      case BLKSSZGET:
        need(4);
        v.setUint32(0, this.info.blockSize, true);
        return 0;
      case BLKROGET:
        need(4);
        v.setUint32(0, this.info.readOnly ? 1 : 0, true);
        return 0;
      case BLKDISCARD:
      case BLKZEROOUT: {
        need(16);
        const start = Number(v.getBigUint64(0, true));
        const length = Number(v.getBigUint64(8, true));
        await this.discardOrZeroes(request === BLKZEROOUT, start, length);
        return 0;
      }
      case BLKGETSERIAL: {
        need(ID_BYTES);
        arg.set(await this.request(BlkType.GET_ID, 0, null, ID_BYTES));
        return 0;
      }
      default:
        throw new Errno('ENOTTY', `${this.name} has no ioctl 0x${request.toString(16)}`);
    }
  }

  private fileOperations(): FileOperations {
    const state = (file: OpenFile) => file.private as FileState;
    return {
      open: (file) => {
        file.private = { position: 0 } satisfies FileState;
      },
      pread: (_file, count, position) => this.pread(count, position),
      pwrite: (_file, data, position) => this.pwrite(data, position),
      read: async (file, count) => {
        const s = state(file);
        const bytes = await this.pread(count, s.position);
        s.position += bytes.length;
        return bytes;
      },
      write: async (file, data) => {
        const s = state(file);
        const n = await this.pwrite(data, s.position);
        s.position += n;
        return n;
      },
      fsync: () => this.fsync(),
      ioctl: (_file, request, arg) => this.ioctl(request, arg),
    };
  }
}

export interface BlkDriverOptions {
  /** Device IDs to bind (default [2]). */
  deviceIds?: readonly number[];
  /** Queue size to use (default: the device's maximum). */
  queueSize?: number;
  /** Queues to use at most (default {@link MAX_QUEUES}; the device's num_queues bounds it too). */
  maxQueues?: number;
}

/** §5.2.4 fields as the driver reads them (only those of negotiated features). */
function readInfo(dev: VirtioDriverDevice): BlkDiskInfo {
  const cfg = dev.readConfigStable(0, BlkConfig.UNUSED1);
  const v = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
  const capacity = v.getBigUint64(BlkConfig.CAPACITY, true);
  // Sizes beyond 2^53 bytes are not addressable here: cut (as a 32-bit kernel would refuse).
  const capacitySectors = Number(capacity > BigInt(2 ** 44 - 1) ? BigInt(2 ** 44 - 1) : capacity);
  let blockSize = SECTOR;
  if (dev.hasFeature(BlkFeature.BLK_SIZE)) {
    const b = v.getUint32(BlkConfig.BLK_SIZE, true);
    if (b >= SECTOR && b <= 65536 && (b & (b - 1)) === 0) blockSize = b;
  }
  const numQueues = dev.hasFeature(BlkFeature.MQ) ? Math.max(1, v.getUint16(BlkConfig.NUM_QUEUES, true)) : 1;
  const discard = dev.hasFeature(BlkFeature.DISCARD)
    ? {
        maxSectors: Math.max(1, u32(cfg, BlkConfig.MAX_DISCARD_SECTORS) || 0xffff_ffff),
        maxSeg: Math.min(256, Math.max(1, u32(cfg, BlkConfig.MAX_DISCARD_SEG))),
        alignment: u32(cfg, BlkConfig.DISCARD_SECTOR_ALIGNMENT),
      }
    : null;
  const writeZeroes = dev.hasFeature(BlkFeature.WRITE_ZEROES)
    ? {
        maxSectors: Math.max(1, u32(cfg, BlkConfig.MAX_WRITE_ZEROES_SECTORS) || 0xffff_ffff),
        maxSeg: Math.min(256, Math.max(1, u32(cfg, BlkConfig.MAX_WRITE_ZEROES_SEG))),
      }
    : null;
  return {
    capacitySectors,
    blockSize,
    readOnly: dev.hasFeature(BlkFeature.RO),
    flush: dev.hasFeature(BlkFeature.FLUSH),
    numQueues,
    discard,
    writeZeroes,
  };
}

export class BlkDriver implements VirtioDriver {
  readonly name = 'virtio_blk';
  readonly deviceIds: readonly number[];
  readonly features = [
    BlkFeature.SEG_MAX,
    BlkFeature.RO,
    BlkFeature.BLK_SIZE,
    BlkFeature.FLUSH,
    BlkFeature.TOPOLOGY,
    BlkFeature.MQ,
    BlkFeature.DISCARD,
    BlkFeature.WRITE_ZEROES,
  ];
  private readonly disks = new Map<VirtioDriverDevice, BlkDisk>();
  private probed = 0;

  constructor(private readonly options: BlkDriverOptions = {}) {
    this.deviceIds = options.deviceIds ?? [VIRTIO_ID_BLOCK];
  }

  probe(dev: VirtioDriverDevice, kernel: GuestKernel): void {
    const info = readInfo(dev);
    const count = Math.min(info.numQueues, this.options.maxQueues ?? MAX_QUEUES);
    let disk: BlkDisk | undefined;
    const vqs = Array.from({ length: count }, (_, i) => dev.findQueue<Request>(i, () => disk?.requestDone(i), { size: this.options.queueSize }));
    dev.ready();
    const name = `vd${String.fromCharCode(0x61 + (this.probed++ % 26))}`;
    disk = new BlkDisk(dev, kernel, vqs, { ...info, numQueues: count }, name, this.name);
    this.disks.set(dev, disk);
    const bytes = info.capacitySectors * SECTOR;
    kernel.printk(
      `${this.name}: [${disk.name}] ${bytes / info.blockSize} ${info.blockSize}-byte logical blocks (${bytes} bytes), ` +
        `${count} request queue${count === 1 ? '' : 's'}${info.readOnly ? ', read-only' : ''}`,
    );
  }

  configChanged(dev: VirtioDriverDevice): void {
    this.disks.get(dev)?.configChanged();
  }

  remove(dev: VirtioDriverDevice): void {
    this.disks.get(dev)?.remove();
    this.disks.delete(dev);
  }

  /** The /dev name and configuration of the disk bound to `dev`. */
  disk(dev: VirtioDriverDevice): { name: string; info: BlkDiskInfo } | undefined {
    const d = this.disks.get(dev);
    return d && { name: d.name, info: d.info };
  }
}

/** EmbeddedGuestSide.loadDriver's factory: the driver bound to `deviceIds`. */
export function createDriver(deviceIds: readonly number[], _values: OptionValues = {}): BlkDriver {
  return new BlkDriver({ deviceIds });
}
