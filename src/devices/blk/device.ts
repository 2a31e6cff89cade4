/**
 * virtio-blk, the block device (virtio 1.2 §5.2): device ID 2, `num_queues` request queues
 * (§5.2.2), the configuration space of §5.2.4, and the requests of §5.2.6 over a BlockStorage
 * (storage.ts). Pure logic: the model opens nothing; the host hands it a store.
 *
 * Features offered (§5.2.3): SEG_MAX, BLK_SIZE, TOPOLOGY, FLUSH, MQ, DISCARD, WRITE_ZEROES, and
 * RO for a read-only store. Not offered: SIZE_MAX (no segment size limit), GEOMETRY (legacy
 * CHS), CONFIG_WCE (the cache mode is fixed: writeback, FLUSH makes writes stable), LIFETIME,
 * SECURE_ERASE, ZONED.
 *
 * A request (§5.2.6) is `le32 type, le32 reserved, le64 sector` (the first 16 device-readable
 * bytes, wherever the descriptors split them), then the data, then the status byte: the LAST
 * device-writable byte. Data is device-readable for OUT, DISCARD and WRITE_ZEROES (after the
 * header) and device-writable for IN and GET_ID (before the status byte).
 *
 * Decisions:
 *  - A chain with fewer than 16 device-readable bytes, or without a device-writable byte for the
 *    status, cannot be answered at all (there is no status to set): a device error
 *    (DEVICE_REQUEST_INVALID → DEVICE_NEEDS_RESET, §2.1.2). Everything else gets a status.
 *  - VIRTIO_BLK_S_IOERR (§5.2.6): a data length that is not a multiple of 512 (IN/OUT) or of 16
 *    (DISCARD/WRITE_ZEROES segments, at least one), more segments than max_*_seg or a segment
 *    longer than max_*_sectors, any sector range that does not fit the capacity, a write,
 *    discard or write-zeroes on a read-only device (§5.2.6.2: "MUST NOT write any data"), and
 *    any failure of the store.
 *  - Ranges are checked exactly, without overflow: the 64-bit sector is read as two 32-bit
 *    halves; a sector ≥ 2^53 is out of range at once (a capacity is at most 2^53 - 1 bytes), a
 *    smaller one is exact in a double, and `sector ≤ capacity && count ≤ capacity - sector` has
 *    no sum that could wrap or round. Sector 2^64 - 1, sector + length past 2^64, one sector
 *    past the end: all IOERR; a request ending exactly at the capacity: OK.
 *  - VIRTIO_BLK_S_UNSUPP: unknown request types (including GET_LIFETIME, SECURE_ERASE, zone
 *    requests, the legacy SCSI and FLUSH_OUT types), DISCARD or WRITE_ZEROES when the driver did
 *    not negotiate the feature, and (§5.2.6.2) a segment with an unknown flag, or a DISCARD
 *    segment with `unmap` set.
 *  - GET_ID writes the serial, NUL-padded, into min(20, data length) bytes (§5.2.6: 20 bytes,
 *    no NUL when it is 20 long).
 *  - FLUSH → store.flush(). When the driver did not negotiate VIRTIO_BLK_F_FLUSH, every write,
 *    discard and write-zeroes is flushed before it completes (§5.2.6.2, "a write becomes
 *    stable…" case 1: the device then has to behave as writethrough).
 *  - Used length (§2.7.8, §5.2.6): the whole device-writable part, status byte included. The
 *    device writes every byte of it before the used element goes out: the data of an IN, the ID
 *    of a GET_ID, and zeroes wherever nothing else was written (an IN that failed, writable bytes
 *    the request type does not use), so the length never covers bytes the device did not write
 *    (§2.7.8.1) and the driver never gets stale bytes as if they were data.
 *  - Many requests in flight: handleChain answers at once (a number) when no I/O is needed, and
 *    otherwise returns a promise. Everything it needs from the chain is read before the first
 *    await (header, discard segments, the data views); the store transfers straight between the
 *    chain's views and the disk (no copy), and its promise settles only after the transfer, so
 *    when handleChain's promise settles the model holds nothing of the chain (the contract of
 *    src/device/device.ts). Queues are independent: the runtime serves each, the model keeps no
 *    per-queue state, and requests complete in whatever order the store finishes them.
 *  - Reset (§2.1): requests still at the store are answered by nobody (the runtime has revoked
 *    their chains, and the model drops answers from before the reset). A transfer the store
 *    already started runs to its end and may still write the buffers: QEMU drains such I/O
 *    before its reset completes, but DeviceContext/reset() are synchronous and cannot wait. The
 *    file store's transfers are preadv/pwritev, so it is the kernel, not JavaScript, that touches
 *    guest memory: memory the host unmapped meanwhile gives EFAULT, not a crash.
 */
import type { DeviceContext, VirtioDevice } from '../../device/device.js';
import type { DescriptorChain } from '../../virtio/chain.js';
import { bit, hasFeature } from '../../virtio/constants.js';
import { fail } from '../../virtio/errors.js';
import { SECTOR_SIZE, type BlockStorage } from './storage.js';

/** §5.2.1. */
export const VIRTIO_ID_BLOCK = 2;

/** §5.2.3 feature bits. */
export const BlkFeature = {
  SIZE_MAX: 1,
  SEG_MAX: 2,
  GEOMETRY: 4,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
  TOPOLOGY: 10,
  CONFIG_WCE: 11,
  MQ: 12,
  DISCARD: 13,
  WRITE_ZEROES: 14,
  LIFETIME: 15,
  SECURE_ERASE: 16,
} as const;

/** §5.2.6 request types. */
export const BlkType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
  GET_LIFETIME: 10,
  DISCARD: 11,
  WRITE_ZEROES: 13,
  SECURE_ERASE: 14,
} as const;

/** §5.2.6 status values. */
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

/** §5.2.6: le32 type, le32 reserved, le64 sector. */
export const HEADER_SIZE = 16;
export const HEADER_TYPE = 0;
export const HEADER_RESERVED = 4;
export const HEADER_SECTOR = 8;
/** §5.2.6: the device ID string of GET_ID. */
export const ID_BYTES = 20;
/** §5.2.6 struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags. */
export const SEGMENT_SIZE = 16;
export const SEGMENT_SECTOR = 0;
export const SEGMENT_NUM_SECTORS = 8;
export const SEGMENT_FLAGS = 12;
/** flags.unmap (bit 0); bits 1..31 are reserved. */
export const SEGMENT_FLAG_UNMAP = 1;

/** §5.2.4 struct virtio_blk_config: byte offsets. */
export const BlkConfig = {
  CAPACITY: 0, // le64
  SIZE_MAX: 8, // le32
  SEG_MAX: 12, // le32
  CYLINDERS: 16, // le16
  HEADS: 18, // u8
  SECTORS: 19, // u8
  BLK_SIZE: 20, // le32
  PHYSICAL_BLOCK_EXP: 24, // u8
  ALIGNMENT_OFFSET: 25, // u8
  MIN_IO_SIZE: 26, // le16
  OPT_IO_SIZE: 28, // le32
  WRITEBACK: 32, // u8
  UNUSED0: 33, // u8
  NUM_QUEUES: 34, // le16
  MAX_DISCARD_SECTORS: 36, // le32
  MAX_DISCARD_SEG: 40, // le32
  DISCARD_SECTOR_ALIGNMENT: 44, // le32
  MAX_WRITE_ZEROES_SECTORS: 48, // le32
  MAX_WRITE_ZEROES_SEG: 52, // le32
  WRITE_ZEROES_MAY_UNMAP: 56, // u8
  UNUSED1: 57, // u8[3]
  MAX_SECURE_ERASE_SECTORS: 60, // le32
  MAX_SECURE_ERASE_SEG: 64, // le32
  SECURE_ERASE_SECTOR_ALIGNMENT: 68, // le32
} as const;
/**
 * The whole 1.2 layout (through secure_erase_sector_alignment; the zoned fields came later):
 * a frontend that reads the full structure (vhost-user GET_CONFIG) gets every byte, those of
 * features not offered as 0.
 */
export const CONFIG_SIZE = 72;

/** virtio_uml (Linux 6.1) always sets up 256-entry rings. */
export const DEFAULT_QUEUE_SIZE = 256;
/** Defaults for the discard / write-zeroes limits (config space, §5.2.4). */
export const DEFAULT_MAX_DISCARD_SECTORS = 65536; // 32 MiB per segment
export const DEFAULT_MAX_DISCARD_SEG = 32;
/** The physical block size the topology reports at least (a host page: smaller writes cost a read-modify-write there). */
export const PHYSICAL_BLOCK_SIZE = 4096;

export interface BlkDeviceOptions {
  storage: BlockStorage;
  /** Request queues, 1..65535 (num_queues, §5.2.4). Default 1. */
  numQueues?: number;
  /** Maximum size of each queue, a power of two ≤ 32768. Default 256. */
  queueSize?: number;
  /** The GET_ID string: at most 20 bytes (ASCII). Default empty (20 NULs). */
  serial?: string | Uint8Array;
  /** Read-only even if the store is writable. A read-only store is always read-only. */
  readOnly?: boolean;
  maxDiscardSectors?: number;
  maxDiscardSeg?: number;
  maxWriteZeroesSectors?: number;
  maxWriteZeroesSeg?: number;
}

/** I/O error lines logged per reset at most (a failing disk must not flood the log). */
const MAX_ERROR_LINES = 20;

/** A view of `length` bytes from `start` of the concatenation of `segments` (no copy). */
export function sliceSegments(segments: readonly Uint8Array[], start: number, length: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const s of segments) {
    if (length === 0) break;
    if (start >= s.length) {
      start -= s.length;
      continue;
    }
    const n = Math.min(s.length - start, length);
    // A whole segment is passed as it is: a request of many segments (a guest's pages) makes
    // no new view per segment.
    out.push(start === 0 && n === s.length ? s : s.subarray(start, start + n));
    length -= n;
    start = 0;
  }
  return out;
}

/** Zeroes written over writable bytes the device does not otherwise fill. */
const ZEROES = new Uint8Array(64 * 1024);

/** A segment of a DISCARD / WRITE_ZEROES request, checked: a byte range of the disk. */
interface Extent {
  offset: number;
  length: number;
  unmap: boolean;
}

/** §5.2.3 feature names, by bit. */
const BLK_FEATURE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(BlkFeature).map(([name, b]) => [b, `VIRTIO_BLK_F_${name}`]));

export class BlkDevice implements VirtioDevice {
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly features: bigint;
  readonly featureNames = BLK_FEATURE_NAMES;
  readonly configSize = CONFIG_SIZE;
  readonly queueMaxSizes: readonly number[];
  readonly storage: BlockStorage;
  readonly readOnly: boolean;
  /** Capacity in 512-byte sectors (§5.2.4 capacity). */
  readonly capacitySectors: number;
  private readonly config = new Uint8Array(CONFIG_SIZE);
  private readonly serial = new Uint8Array(ID_BYTES);
  private readonly maxDiscardSectors: number;
  private readonly maxDiscardSeg: number;
  private readonly maxWriteZeroesSectors: number;
  private readonly maxWriteZeroesSeg: number;
  /** Bumped by reset(): answers of requests taken before it are dropped. */
  private epoch = 0;
  private errorLines = 0;
  private inFlightCount = 0;
  /** Requests answered since the last reset, by status. */
  readonly answered = { ok: 0, ioerr: 0, unsupp: 0 };

  constructor(options: BlkDeviceOptions) {
    const storage = options.storage;
    this.storage = storage;
    const numQueues = options.numQueues ?? 1;
    const queueSize = options.queueSize ?? DEFAULT_QUEUE_SIZE;
    if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 0xffff) throw new RangeError(`blk: num_queues ${numQueues} is not 1..65535`);
    if (!Number.isInteger(queueSize) || queueSize < 1 || queueSize > 32768 || (queueSize & (queueSize - 1)) !== 0) {
      throw new RangeError(`blk: queue size ${queueSize} is not a power of two from 1 to 32768`);
    }
    if (!Number.isSafeInteger(storage.size) || storage.size < 0) throw new RangeError(`blk: storage size ${storage.size} is not a byte count below 2^53`);
    const blockSize = storage.blockSize ?? SECTOR_SIZE;
    if (blockSize < SECTOR_SIZE || blockSize > 0x10000 || (blockSize & (blockSize - 1)) !== 0) throw new RangeError(`blk: block size ${blockSize} is not a power of two from 512 to 65536`);
    const serial = typeof options.serial === 'string' ? new TextEncoder().encode(options.serial) : (options.serial ?? new Uint8Array(0));
    if (serial.length > ID_BYTES) throw new RangeError(`blk: serial is ${serial.length} bytes; GET_ID has ${ID_BYTES} (§5.2.6)`);
    this.serial.set(serial);
    this.readOnly = storage.readOnly || (options.readOnly ?? false);
    this.capacitySectors = Math.floor(storage.size / SECTOR_SIZE);
    this.queueMaxSizes = Array.from({ length: numQueues }, () => queueSize);
    const limit = (v: number | undefined, dflt: number, what: string) => {
      const n = v ?? dflt;
      if (!Number.isInteger(n) || n < 1 || n > 0xffff_ffff) throw new RangeError(`blk: ${what} ${n} is not 1..2^32-1`);
      return n;
    };
    this.maxDiscardSectors = limit(options.maxDiscardSectors, DEFAULT_MAX_DISCARD_SECTORS, 'max_discard_sectors');
    this.maxDiscardSeg = limit(options.maxDiscardSeg, DEFAULT_MAX_DISCARD_SEG, 'max_discard_seg');
    this.maxWriteZeroesSectors = limit(options.maxWriteZeroesSectors, DEFAULT_MAX_DISCARD_SECTORS, 'max_write_zeroes_sectors');
    this.maxWriteZeroesSeg = limit(options.maxWriteZeroesSeg, DEFAULT_MAX_DISCARD_SEG, 'max_write_zeroes_seg');

    let features = 0n;
    for (const f of [BlkFeature.SEG_MAX, BlkFeature.BLK_SIZE, BlkFeature.TOPOLOGY, BlkFeature.FLUSH, BlkFeature.MQ, BlkFeature.DISCARD, BlkFeature.WRITE_ZEROES]) {
      features |= bit(f);
    }
    if (this.readOnly) features |= bit(BlkFeature.RO);
    this.features = features;

    // §5.2.4, little-endian; unused0/unused1 and the fields of features not offered stay 0.
    const v = new DataView(this.config.buffer);
    v.setBigUint64(BlkConfig.CAPACITY, BigInt(this.capacitySectors), true);
    // A request is the header, the data and the status: 2 descriptors besides the data (as QEMU's seg-max-adjust).
    v.setUint32(BlkConfig.SEG_MAX, Math.max(1, queueSize - 2), true);
    v.setUint32(BlkConfig.BLK_SIZE, blockSize, true);
    const physical = Math.max(blockSize, PHYSICAL_BLOCK_SIZE);
    v.setUint8(BlkConfig.PHYSICAL_BLOCK_EXP, Math.log2(physical / blockSize));
    v.setUint8(BlkConfig.ALIGNMENT_OFFSET, 0);
    v.setUint16(BlkConfig.MIN_IO_SIZE, physical / blockSize, true);
    v.setUint32(BlkConfig.OPT_IO_SIZE, 0, true);
    v.setUint8(BlkConfig.WRITEBACK, 1); // a writeback cache: FLUSH makes writes stable (§5.2.5)
    v.setUint16(BlkConfig.NUM_QUEUES, numQueues, true);
    v.setUint32(BlkConfig.MAX_DISCARD_SECTORS, this.maxDiscardSectors, true);
    v.setUint32(BlkConfig.MAX_DISCARD_SEG, this.maxDiscardSeg, true);
    v.setUint32(BlkConfig.DISCARD_SECTOR_ALIGNMENT, blockSize / SECTOR_SIZE, true);
    v.setUint32(BlkConfig.MAX_WRITE_ZEROES_SECTORS, this.maxWriteZeroesSectors, true);
    v.setUint32(BlkConfig.MAX_WRITE_ZEROES_SEG, this.maxWriteZeroesSeg, true);
    v.setUint8(BlkConfig.WRITE_ZEROES_MAY_UNMAP, storage.canUnmap ? 1 : 0);
  }

  /** Requests handed to the store and not answered yet. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  readConfig(offset: number, into: Uint8Array): void {
    into.set(this.config.subarray(offset, offset + into.length));
  }

  /** Nothing in the config space is driver-writable without CONFIG_WCE (not offered): writes are ignored. */
  writeConfig(): void {}

  handleChain(queue: number, chain: DescriptorChain, ctx: DeviceContext): number | Promise<number> {
    if (chain.readableLength < HEADER_SIZE) {
      fail(
        'DEVICE_REQUEST_INVALID',
        `virtio-blk request (chain ${chain.head}, queue ${queue}) has ${chain.readableLength} device-readable bytes; the header needs ${HEADER_SIZE}`,
        '§5.2.6',
      );
    }
    if (chain.writableLength < 1) {
      fail('DEVICE_REQUEST_INVALID', `virtio-blk request (chain ${chain.head}, queue ${queue}) has no device-writable byte for the status`, '§5.2.6');
    }
    const type = chain.readUint32(HEADER_TYPE);
    const sectorLo = chain.readUint32(HEADER_SECTOR);
    const sectorHi = chain.readUint32(HEADER_SECTOR + 4);
    /** Device-readable data bytes (after the header) and device-writable ones (before the status). */
    const dataOut = chain.readableLength - HEADER_SIZE;
    const dataIn = chain.writableLength - 1;

    switch (type) {
      case BlkType.IN: {
        if (dataIn % SECTOR_SIZE !== 0) return this.answer(chain, BlkStatus.IOERR, 0);
        const offset = this.byteRange(sectorHi, sectorLo, dataIn / SECTOR_SIZE);
        if (offset === null) return this.answer(chain, BlkStatus.IOERR, 0);
        if (dataIn === 0) return this.answer(chain, BlkStatus.OK, 0);
        const what = () => `read of ${dataIn} bytes at sector ${offset / SECTOR_SIZE}`;
        const storage = this.storage;
        if (storage.readSpans) {
          const spans = chain.spans(true, 0, dataIn);
          return this.run(chain, ctx, dataIn, false, what, () => storage.readSpans!(offset, spans));
        }
        const views = sliceSegments(chain.writable, 0, dataIn);
        return this.run(chain, ctx, dataIn, false, what, () => storage.read(offset, views));
      }
      case BlkType.OUT: {
        // §5.2.6.2: IOERR for a write to a read-only device, and no data written.
        if (this.readOnly || dataOut % SECTOR_SIZE !== 0) return this.answer(chain, BlkStatus.IOERR, 0);
        const offset = this.byteRange(sectorHi, sectorLo, dataOut / SECTOR_SIZE);
        if (offset === null) return this.answer(chain, BlkStatus.IOERR, 0);
        if (dataOut === 0) return this.answer(chain, BlkStatus.OK, 0);
        const what = () => `write of ${dataOut} bytes at sector ${offset / SECTOR_SIZE}`;
        const storage = this.storage;
        if (storage.writeSpans) {
          const spans = chain.spans(false, HEADER_SIZE, dataOut);
          return this.run(chain, ctx, 0, true, what, () => storage.writeSpans!(offset, spans));
        }
        const views = sliceSegments(chain.readable, HEADER_SIZE, dataOut);
        return this.run(chain, ctx, 0, true, what, () => storage.write(offset, views));
      }
      case BlkType.FLUSH:
        return this.run(chain, ctx, 0, false, () => 'flush', () => this.storage.flush());
      case BlkType.GET_ID: {
        const n = Math.min(ID_BYTES, dataIn);
        chain.write(this.serial.subarray(0, n), 0);
        return this.answer(chain, BlkStatus.OK, n);
      }
      case BlkType.DISCARD:
      case BlkType.WRITE_ZEROES:
        return this.discardOrZeroes(type, chain, ctx, dataOut);
      default:
        return this.answer(chain, BlkStatus.UNSUPP, 0);
    }
  }

  /** DISCARD and WRITE_ZEROES: every segment is read and checked before any is done. */
  private discardOrZeroes(type: number, chain: DescriptorChain, ctx: DeviceContext, dataOut: number): number | Promise<number> {
    const discard = type === BlkType.DISCARD;
    if (!hasFeature(ctx.driverFeatures, discard ? BlkFeature.DISCARD : BlkFeature.WRITE_ZEROES)) {
      return this.answer(chain, BlkStatus.UNSUPP, 0);
    }
    if (this.readOnly) return this.answer(chain, BlkStatus.IOERR, 0);
    const maxSeg = discard ? this.maxDiscardSeg : this.maxWriteZeroesSeg;
    const maxSectors = discard ? this.maxDiscardSectors : this.maxWriteZeroesSectors;
    if (dataOut === 0 || dataOut % SEGMENT_SIZE !== 0 || dataOut / SEGMENT_SIZE > maxSeg) return this.answer(chain, BlkStatus.IOERR, 0);
    const count = dataOut / SEGMENT_SIZE;
    // §5.2.6.2: UNSUPP for an unknown flag, and for unmap on a discard; checked on all segments first.
    for (let i = 0; i < count; i++) {
      const flags = chain.readUint32(HEADER_SIZE + i * SEGMENT_SIZE + SEGMENT_FLAGS);
      if ((flags & ~SEGMENT_FLAG_UNMAP) !== 0 || (discard && flags & SEGMENT_FLAG_UNMAP)) return this.answer(chain, BlkStatus.UNSUPP, 0);
    }
    const extents: Extent[] = [];
    for (let i = 0; i < count; i++) {
      const at = HEADER_SIZE + i * SEGMENT_SIZE;
      const sectors = chain.readUint32(at + SEGMENT_NUM_SECTORS);
      const offset = sectors > maxSectors ? null : this.byteRange(chain.readUint32(at + SEGMENT_SECTOR + 4), chain.readUint32(at + SEGMENT_SECTOR), sectors);
      if (offset === null) return this.answer(chain, BlkStatus.IOERR, 0);
      if (sectors > 0) extents.push({ offset, length: sectors * SECTOR_SIZE, unmap: (chain.readUint32(at + SEGMENT_FLAGS) & SEGMENT_FLAG_UNMAP) !== 0 });
    }
    const what = () => `${discard ? 'discard' : 'write-zeroes'} of ${count} segment${count === 1 ? '' : 's'}`;
    return this.run(chain, ctx, 0, true, what, async () => {
      for (const e of extents) {
        if (discard) await this.storage.discard(e.offset, e.length);
        else await this.storage.writeZeroes(e.offset, e.length, e.unmap);
      }
    });
  }

  /**
   * The byte offset of `sectors` sectors from the 64-bit sector hi:lo, or null when the range
   * does not fit the capacity. Exact: no sum is formed that could exceed 2^53.
   */
  private byteRange(hi: number, lo: number, sectors: number): number | null {
    if (hi >= 0x20_0000) return null; // sector ≥ 2^53 > any capacity in sectors (≤ 2^44)
    const sector = hi * 0x1_0000_0000 + lo;
    const cap = this.capacitySectors;
    if (sector > cap || sectors > cap - sector) return null;
    return sector * SECTOR_SIZE;
  }

  /**
   * Runs one store operation for `chain` and answers it: OK with `written` data bytes when it
   * succeeds (after a flush if `writes` and the driver did not negotiate FLUSH), IOERR when it
   * fails (logged).
   */
  private async run(
    chain: DescriptorChain,
    ctx: DeviceContext,
    written: number,
    writes: boolean,
    /** What the request was, for the log line of a failure (made only then). */
    what: () => string,
    op: () => Promise<void>,
  ): Promise<number> {
    const epoch = this.epoch;
    const writethrough = writes && !hasFeature(ctx.driverFeatures, BlkFeature.FLUSH);
    this.inFlightCount++;
    let status: number = BlkStatus.OK;
    try {
      await op();
      if (writethrough) await this.storage.flush();
    } catch (e) {
      status = BlkStatus.IOERR;
      written = 0;
      if (this.errorLines < MAX_ERROR_LINES) {
        this.errorLines++;
        ctx.log(`virtio-blk: ${what()} failed: ${(e as Error)?.message ?? String(e)}${this.errorLines === MAX_ERROR_LINES ? ' (further I/O errors are not logged)' : ''}`);
      }
    } finally {
      this.inFlightCount--;
    }
    // Reset meanwhile: the chain is the driver's again (the runtime revoked it); no answer.
    if (epoch !== this.epoch) return 0;
    return this.answer(chain, status, written);
  }

  /**
   * Writes zeroes over the writable bytes from `written` up to the status byte, then the status
   * (the last writable byte); returns the used length: the whole writable part (§2.7.8).
   */
  private answer(chain: DescriptorChain, status: number, written: number): number {
    const statusAt = chain.writableLength - 1;
    for (let at = written; at < statusAt; at += ZEROES.length) {
      chain.write(ZEROES.subarray(0, Math.min(ZEROES.length, statusAt - at)), at);
    }
    chain.writeUint8(statusAt, status);
    if (status === BlkStatus.OK) this.answered.ok++;
    else if (status === BlkStatus.IOERR) this.answered.ioerr++;
    else this.answered.unsupp++;
    return chain.writableLength;
  }

  reset(): void {
    this.epoch++;
    this.errorLines = 0;
    this.answered.ok = this.answered.ioerr = this.answered.unsupp = 0;
  }
}
