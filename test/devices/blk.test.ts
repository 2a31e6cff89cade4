import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DeviceContext } from '../../src/device/device.js';
import {
  BlkConfig,
  BlkDevice,
  BlkFeature,
  BlkStatus,
  BlkType,
  CONFIG_SIZE,
  type BlkDeviceOptions,
  sliceSegments,
} from '../../src/devices/blk/device.js';
import { MemoryStorage } from '../../src/devices/blk/memory-storage.js';
import type { BlockStorage } from '../../src/devices/blk/storage.js';
import { DeviceHarness } from '../../src/testing/device-harness.js';
import { DescriptorChain } from '../../src/virtio/chain.js';
import { FeatureBit, bit, hasFeature } from '../../src/virtio/constants.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { GuestMemory } from '../../src/virtio/memory.js';

const SECTOR = 512;
const CAPACITY = 64; // sectors

function header(type: number, sector: bigint, reserved = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint32(0, type, true);
  v.setUint32(4, reserved, true);
  v.setBigUint64(8, sector, true);
  return b;
}

function segment(sector: bigint, sectors: number, flags = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, sector, true);
  v.setUint32(8, sectors, true);
  v.setUint32(12, flags, true);
  return b;
}

const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** Splits `bytes` at the given offsets (descriptor boundaries). */
const splitAt = (bytes: Uint8Array, ...cuts: number[]) => {
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...cuts, bytes.length]) {
    out.push(bytes.subarray(prev, c));
    prev = c;
  }
  return out.filter((b) => b.length > 0);
};

const filled = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

function setup(options: Partial<BlkDeviceOptions> = {}, harness: ConstructorParameters<typeof DeviceHarness>[1] = {}) {
  const storage = (options.storage as MemoryStorage | undefined) ?? new MemoryStorage(CAPACITY * SECTOR);
  const device = new BlkDevice({ ...options, storage });
  const h = new DeviceHarness(device, harness);
  return { storage, device, h };
}

/** The status byte: the last byte the device wrote (the used length covers the whole writable part). */
const statusOf = (c: { len: number; written: Uint8Array }) => c.written[c.len - 1];

test('config space: every field at its §5.2.4 offset, little-endian; unused bytes 0', () => {
  const { h } = setup({ numQueues: 3, queueSize: 128, maxDiscardSectors: 1000, maxDiscardSeg: 7, maxWriteZeroesSectors: 2000, maxWriteZeroesSeg: 9 });
  const c = h.readConfig(0, CONFIG_SIZE);
  const v = new DataView(c.buffer);
  assert.equal(CONFIG_SIZE, 72);
  assert.equal(v.getBigUint64(0, true), BigInt(CAPACITY));
  assert.equal(v.getUint32(8, true), 0, 'size_max: SIZE_MAX not offered');
  assert.equal(v.getUint32(12, true), 126, 'seg_max = queue size - 2');
  assert.equal(v.getUint32(16, true), 0, 'geometry not offered');
  assert.equal(v.getUint32(20, true), 512, 'blk_size');
  assert.equal(c[24], 3, 'physical_block_exp: 4096-byte physical blocks');
  assert.equal(c[25], 0, 'alignment_offset');
  assert.equal(v.getUint16(26, true), 8, 'min_io_size in logical blocks');
  assert.equal(v.getUint32(28, true), 0, 'opt_io_size');
  assert.equal(c[32], 1, 'writeback');
  assert.equal(c[33], 0, 'unused0');
  assert.equal(v.getUint16(34, true), 3, 'num_queues');
  assert.equal(v.getUint32(36, true), 1000);
  assert.equal(v.getUint32(40, true), 7);
  assert.equal(v.getUint32(44, true), 1, 'discard_sector_alignment in sectors');
  assert.equal(v.getUint32(48, true), 2000);
  assert.equal(v.getUint32(52, true), 9);
  assert.equal(c[56], 0, 'write_zeroes_may_unmap: the memory store never deallocates');
  assert.deepEqual([...c.subarray(57, 72)], new Array(15).fill(0), 'unused1 and secure erase fields');
  assert.equal(BlkConfig.NUM_QUEUES, 34);
  // a big capacity lands in both halves of the le64
  const big = new BlkDevice({ storage: { ...new MemoryStorage(0), size: 2 ** 40 + 3 * 512, readOnly: true } as unknown as BlockStorage });
  const b = new Uint8Array(8);
  big.readConfig(0, b);
  assert.equal(new DataView(b.buffer).getBigUint64(0, true), BigInt(2 ** 40 / 512 + 3));
});

test('features: SEG_MAX BLK_SIZE TOPOLOGY FLUSH MQ DISCARD WRITE_ZEROES, RO only when read-only; queues per num-queues', () => {
  const rw = new BlkDevice({ storage: new MemoryStorage(4096), numQueues: 4 });
  for (const f of [BlkFeature.SEG_MAX, BlkFeature.BLK_SIZE, BlkFeature.TOPOLOGY, BlkFeature.FLUSH, BlkFeature.MQ, BlkFeature.DISCARD, BlkFeature.WRITE_ZEROES]) {
    assert.ok(hasFeature(rw.features, f), `feature ${f}`);
  }
  for (const f of [BlkFeature.RO, BlkFeature.SIZE_MAX, BlkFeature.GEOMETRY, BlkFeature.CONFIG_WCE, BlkFeature.SECURE_ERASE]) assert.ok(!hasFeature(rw.features, f), `no feature ${f}`);
  assert.deepEqual(rw.queueMaxSizes, [256, 256, 256, 256]);
  assert.equal(rw.deviceId, 2);
  assert.ok(hasFeature(new BlkDevice({ storage: new MemoryStorage(4096), readOnly: true }).features, BlkFeature.RO));
  assert.ok(hasFeature(new BlkDevice({ storage: new MemoryStorage(4096, { readOnly: true }) }).features, BlkFeature.RO));
  assert.throws(() => new BlkDevice({ storage: new MemoryStorage(4096), serial: 'x'.repeat(21) }), RangeError);
  assert.throws(() => new BlkDevice({ storage: new MemoryStorage(4096), queueSize: 100 }), RangeError);
});

test('IN: data split at odd places lands in order; status is the last writable byte; used length = data + status', async () => {
  const { storage, h } = setup();
  storage.bytes.set(filled(3 * SECTOR, 5), 5 * SECTOR);
  // header split 5 + 11; data + status over descriptors of 3, 1000, 534 bytes (status = the last byte of the last)
  const c = await h.request(0, splitAt(header(BlkType.IN, 5n), 5), [3, 1000, 534]);
  assert.equal(c.len, 1537);
  assert.equal(statusOf(c), BlkStatus.OK);
  assert.deepEqual(c.written.subarray(0, 1536), filled(3 * SECTOR, 5));
  assert.equal(storage.counts.read, 1);
});

test('OUT: data split across descriptors (one shared with the header) reaches the store; used length 1', async () => {
  const { storage, h } = setup();
  const data = filled(2 * SECTOR, 9);
  const out = concat(header(BlkType.OUT, 10n), data);
  const c = await h.request(0, splitAt(out, 16 + 100, 16 + 101, 16 + 777), [1]);
  assert.equal(c.len, 1);
  assert.equal(statusOf(c), BlkStatus.OK);
  assert.deepEqual(storage.bytes.subarray(10 * SECTOR, 12 * SECTOR), data);
  assert.ok(storage.bytes.subarray(0, 10 * SECTOR).every((b) => b === 0), 'nothing written before the range');
  assert.ok(storage.bytes.subarray(12 * SECTOR).every((b) => b === 0), 'nothing written after the range');
});

test('writable bytes the request does not use are zeroed, the status still last (used length covers written bytes only)', async () => {
  const { h } = setup();
  // a FLUSH with 7 extra writable bytes in front of the status
  const c = await h.request(0, [header(BlkType.FLUSH, 0n)], [4, 4]);
  assert.equal(c.len, 8);
  assert.deepEqual([...c.written], [0, 0, 0, 0, 0, 0, 0, BlkStatus.OK]);
});

test('FLUSH reaches the store; a write without negotiated FLUSH is flushed before it completes (writethrough)', async () => {
  const { storage, h } = setup();
  assert.equal(statusOf(await h.request(0, [header(BlkType.FLUSH, 0n)], [1])), BlkStatus.OK);
  assert.equal(storage.counts.flush, 1);
  await h.request(0, [concat(header(BlkType.OUT, 0n), new Uint8Array(SECTOR))], [1]);
  assert.equal(storage.counts.flush, 1, 'FLUSH negotiated: a write is not flushed by itself');

  const wt = setup({}, { features: bit(BlkFeature.DISCARD) | bit(BlkFeature.WRITE_ZEROES) });
  await wt.h.request(0, [concat(header(BlkType.OUT, 0n), new Uint8Array(SECTOR))], [1]);
  assert.equal(wt.storage.counts.flush, 1, 'no FLUSH negotiated: the write was flushed (§5.2.6.2 case 1)');
});

test('GET_ID: the serial NUL-padded to 20 bytes; a 20-byte serial has no NUL', async () => {
  const short = setup({ serial: 'disk-1' });
  const c = await short.h.request(0, [header(BlkType.GET_ID, 0n)], [20, 1]);
  assert.equal(c.len, 21);
  assert.equal(statusOf(c), BlkStatus.OK);
  assert.deepEqual(c.written.subarray(0, 20), concat(new TextEncoder().encode('disk-1'), new Uint8Array(14)));
  const full = setup({ serial: 'ABCDEFGHIJKLMNOPQRST' });
  const d = await full.h.request(0, [header(BlkType.GET_ID, 0n)], [7, 14]); // data and status split
  assert.equal(new TextDecoder().decode(d.written.subarray(0, 20)), 'ABCDEFGHIJKLMNOPQRST');
  assert.equal(statusOf(d), BlkStatus.OK);
});

test('DISCARD and WRITE_ZEROES: several segments; unmap allowed on write-zeroes only; unknown flags UNSUPP', async () => {
  const { storage, h } = setup();
  storage.bytes.fill(0xaa);
  const wz = await h.request(0, [header(BlkType.WRITE_ZEROES, 0n), segment(2n, 3, 1), segment(20n, 1)], [1]);
  assert.equal(statusOf(wz), BlkStatus.OK);
  assert.ok(storage.bytes.subarray(2 * SECTOR, 5 * SECTOR).every((b) => b === 0));
  assert.ok(storage.bytes.subarray(20 * SECTOR, 21 * SECTOR).every((b) => b === 0));
  assert.equal(storage.bytes[5 * SECTOR], 0xaa, 'the byte after the first segment is untouched');
  assert.equal(storage.bytes[2 * SECTOR - 1], 0xaa);
  assert.equal(storage.counts.writeZeroes, 2);

  const dc = await h.request(0, [header(BlkType.DISCARD, 0n), segment(30n, 2)], [1]);
  assert.equal(statusOf(dc), BlkStatus.OK);
  assert.equal(storage.counts.discard, 1);

  const before = storage.bytes.slice();
  // §5.2.6.2: unmap on a discard, and any reserved flag bit, are UNSUPP, and nothing is done
  assert.equal(statusOf(await h.request(0, [header(BlkType.DISCARD, 0n), segment(40n, 1), segment(41n, 1, 1)], [1])), BlkStatus.UNSUPP);
  assert.equal(statusOf(await h.request(0, [header(BlkType.WRITE_ZEROES, 0n), segment(40n, 1, 2)], [1])), BlkStatus.UNSUPP);
  assert.equal(statusOf(await h.request(0, [header(BlkType.WRITE_ZEROES, 0n), segment(40n, 1, 0x8000_0000)], [1])), BlkStatus.UNSUPP);
  // malformed data: not a multiple of 16, empty, too many segments, a segment too long, out of range
  assert.equal(statusOf(await h.request(0, [header(BlkType.DISCARD, 0n), segment(40n, 1).subarray(0, 15)], [1])), BlkStatus.IOERR);
  assert.equal(statusOf(await h.request(0, [header(BlkType.DISCARD, 0n)], [1])), BlkStatus.IOERR);
  assert.equal(statusOf(await h.request(0, [header(BlkType.DISCARD, 0n), segment(63n, 1), segment(64n, 1)], [1])), BlkStatus.IOERR);
  assert.deepEqual(storage.bytes, before, 'refused requests changed nothing (all segments are checked first)');
  assert.equal(storage.counts.discard, 1);
});

test('DISCARD / WRITE_ZEROES limits: more than max_*_seg segments or more than max_*_sectors in one is IOERR', async () => {
  const { storage, h } = setup({ maxDiscardSeg: 2, maxDiscardSectors: 4, maxWriteZeroesSeg: 1, maxWriteZeroesSectors: 8 });
  const st = async (type: number, ...segs: Uint8Array[]) => statusOf(await h.request(0, [header(type, 0n), ...segs], [1]));
  assert.equal(await st(BlkType.DISCARD, segment(0n, 4), segment(8n, 4)), BlkStatus.OK);
  assert.equal(await st(BlkType.DISCARD, segment(0n, 1), segment(8n, 1), segment(9n, 1)), BlkStatus.IOERR);
  assert.equal(await st(BlkType.DISCARD, segment(0n, 5)), BlkStatus.IOERR);
  assert.equal(await st(BlkType.WRITE_ZEROES, segment(0n, 8)), BlkStatus.OK);
  assert.equal(await st(BlkType.WRITE_ZEROES, segment(0n, 1), segment(1n, 1)), BlkStatus.IOERR);
  assert.equal(await st(BlkType.WRITE_ZEROES, segment(0n, 9)), BlkStatus.IOERR);
  assert.equal(storage.counts.discard, 2);
  assert.equal(storage.counts.writeZeroes, 1);
});

test('DISCARD / WRITE_ZEROES without the feature negotiated: UNSUPP', async () => {
  const { storage, h } = setup({}, { features: bit(BlkFeature.FLUSH) });
  assert.equal(statusOf(await h.request(0, [header(BlkType.DISCARD, 0n), segment(0n, 1)], [1])), BlkStatus.UNSUPP);
  assert.equal(statusOf(await h.request(0, [header(BlkType.WRITE_ZEROES, 0n), segment(0n, 1)], [1])), BlkStatus.UNSUPP);
  assert.equal(storage.counts.discard + storage.counts.writeZeroes, 0);
});

test('read-only: OUT, DISCARD and WRITE_ZEROES are IOERR and write nothing; IN and FLUSH work', async () => {
  const storage = new MemoryStorage(CAPACITY * SECTOR);
  storage.bytes.fill(0x5a);
  const { h } = setup({ storage, readOnly: true });
  assert.ok(hasFeature(h.features, BlkFeature.RO));
  assert.equal(statusOf(await h.request(0, [concat(header(BlkType.OUT, 0n), new Uint8Array(SECTOR))], [1])), BlkStatus.IOERR);
  assert.equal(statusOf(await h.request(0, [header(BlkType.DISCARD, 0n), segment(0n, 1)], [1])), BlkStatus.IOERR);
  assert.equal(statusOf(await h.request(0, [header(BlkType.WRITE_ZEROES, 0n), segment(0n, 1)], [1])), BlkStatus.IOERR);
  assert.ok(storage.bytes.every((b) => b === 0x5a), 'no byte written');
  assert.equal(storage.counts.write + storage.counts.discard + storage.counts.writeZeroes, 0);
  const rd = await h.request(0, [header(BlkType.IN, 0n)], [SECTOR + 1]);
  assert.equal(statusOf(rd), BlkStatus.OK);
  assert.ok(rd.written.subarray(0, SECTOR).every((b) => b === 0x5a));
  assert.equal(statusOf(await h.request(0, [header(BlkType.FLUSH, 0n)], [1])), BlkStatus.OK);
});

/** A memory store that records every range the model asks for (before checking it). */
class RecordingStorage extends MemoryStorage {
  readonly calls: string[] = [];
  override read(offset: number, into: readonly Uint8Array[]) {
    this.calls.push(`read ${offset}+${into.reduce((a, b) => a + b.length, 0)}`);
    return super.read(offset, into);
  }
  override write(offset: number, from: readonly Uint8Array[]) {
    this.calls.push(`write ${offset}+${from.reduce((a, b) => a + b.length, 0)}`);
    return super.write(offset, from);
  }
  override writeZeroes(offset: number, length: number, unmap: boolean) {
    this.calls.push(`zeroes ${offset}+${length}`);
    return super.writeZeroes(offset, length, unmap);
  }
}

test('capacity: exactly at the end OK, one past IOERR, sector 2^64-1, sector + length past 2^64, sector ≥ 2^53: IOERR, store never asked', async () => {
  const storage = new RecordingStorage(CAPACITY * SECTOR);
  const { h } = setup({ storage });
  const read = async (sector: bigint, sectors: number) => statusOf(await h.request(0, [header(BlkType.IN, sector)], [sectors * SECTOR + 1]));
  const write = async (sector: bigint, sectors: number) => statusOf(await h.request(0, [concat(header(BlkType.OUT, sector), new Uint8Array(sectors * SECTOR).fill(1))], [1]));
  const cap = BigInt(CAPACITY);
  assert.equal(await read(cap - 1n, 1), BlkStatus.OK, 'the last sector');
  assert.equal(await read(0n, CAPACITY), BlkStatus.OK, 'the whole disk');
  assert.deepEqual(storage.calls.splice(0), [`read ${(CAPACITY - 1) * SECTOR}+512`, `read 0+${CAPACITY * SECTOR}`]);
  assert.equal(await read(cap - 1n, 2), BlkStatus.IOERR, 'one sector past the end');
  assert.equal(await read(cap, 1), BlkStatus.IOERR, 'starting at the end');
  assert.equal(await read(cap, 0), BlkStatus.OK, 'nothing, at the end');
  assert.equal(await read(cap + 1n, 0), BlkStatus.IOERR, 'nothing, past the end');
  assert.equal(await read(2n ** 64n - 1n, 1), BlkStatus.IOERR, 'sector 2^64 - 1');
  assert.equal(await read(2n ** 64n - 1n, 2), BlkStatus.IOERR, 'sector + length wraps 2^64');
  assert.equal(await read(2n ** 53n - 1n, 2), BlkStatus.IOERR, 'sector + length past 2^53');
  assert.equal(await read(2n ** 53n, 1), BlkStatus.IOERR);
  assert.equal(await read(2n ** 32n, 1), BlkStatus.IOERR, 'a sector only the high half sets');
  assert.equal(await write(2n ** 64n - 1n, 2), BlkStatus.IOERR);
  assert.equal(await write(cap - 1n, 2), BlkStatus.IOERR);
  assert.ok(storage.bytes.every((b) => b === 0), 'no write happened');
  assert.deepEqual(storage.calls.splice(0), [], 'no refused range reached the store');
  assert.equal(await write(cap - 1n, 1), BlkStatus.OK, 'the last sector is writable');
  assert.equal(storage.bytes[CAPACITY * SECTOR - 1], 1);
  // discard / write-zeroes segments: the same exact range check
  const wz = async (sector: bigint, sectors: number) => statusOf(await h.request(0, [header(BlkType.WRITE_ZEROES, 0n), segment(sector, sectors)], [1]));
  assert.equal(await wz(2n ** 64n - 1n, 2), BlkStatus.IOERR);
  assert.equal(await wz(cap - 1n, 2), BlkStatus.IOERR);
  assert.equal(await wz(cap - 1n, 1), BlkStatus.OK);
  assert.deepEqual(storage.calls.splice(1), [`zeroes ${(CAPACITY - 1) * SECTOR}+512`], 'only the valid write-zeroes reached the store');
  // data not a multiple of 512
  assert.equal(statusOf(await h.request(0, [header(BlkType.IN, 0n)], [511 + 1])), BlkStatus.IOERR);
  assert.equal(statusOf(await h.request(0, [concat(header(BlkType.OUT, 0n), new Uint8Array(100))], [1])), BlkStatus.IOERR);
});

test('unknown and unsupported request types: UNSUPP', async () => {
  const { storage, h } = setup();
  for (const type of [2, 3, 5, 10, 14, 15, 16, 0x8000_0000, 0x8000_0001, 0xffff_ffff]) {
    const c = await h.request(0, [concat(header(type, 0n), new Uint8Array(SECTOR))], [8, 1]);
    assert.equal(statusOf(c), BlkStatus.UNSUPP, `type ${type}`);
    assert.equal(c.len, 9);
    assert.ok(c.written.subarray(0, 8).every((b) => b === 0), 'unused writable bytes zeroed');
  }
  assert.equal(storage.counts.write + storage.counts.read, 0);
  assert.equal(h.needsReset, false);
});

test('a chain too short for the header, or with no writable byte for the status, is a device error (NEEDS_RESET)', async () => {
  for (const [out, inn] of [
    [[header(BlkType.IN, 0n).subarray(0, 15)], [SECTOR + 1]],
    [[header(BlkType.IN, 0n).subarray(0, 8), header(BlkType.IN, 0n).subarray(8, 15)], [1]],
    [[concat(header(BlkType.OUT, 0n), new Uint8Array(SECTOR))], []],
  ] as const) {
    const { h } = setup();
    await assert.rejects(h.request(0, [...out], [...inn]));
    assert.ok(h.needsReset, 'DEVICE_NEEDS_RESET');
    const e = h.deviceErrors[0];
    assert.ok(e instanceof VirtioError && e.code === 'DEVICE_REQUEST_INVALID' && /§5\.2\.6/.test(e.message), String(e));
  }
});

/** A store whose operations wait until the test releases them. */
class GatedStorage implements BlockStorage {
  readonly pending: { offset: number; release(): void }[] = [];
  constructor(readonly inner: MemoryStorage) {}
  get size() {
    return this.inner.size;
  }
  get readOnly() {
    return this.inner.readOnly;
  }
  private gate<T>(offset: number, op: () => Promise<T>): Promise<T> {
    return new Promise<void>((resolve) => this.pending.push({ offset, release: resolve })).then(op);
  }
  read(offset: number, into: readonly Uint8Array[]) {
    return this.gate(offset, () => this.inner.read(offset, into));
  }
  write(offset: number, from: readonly Uint8Array[]) {
    // the bytes are taken when the write is issued (as pwritev would), the completion waits
    const done = this.inner.write(offset, from);
    return this.gate(offset, () => done);
  }
  flush() {
    return this.gate(-1, () => this.inner.flush());
  }
  discard(offset: number, length: number) {
    return this.gate(offset, () => this.inner.discard(offset, length));
  }
  writeZeroes(offset: number, length: number, unmap: boolean) {
    return this.gate(offset, () => this.inner.writeZeroes(offset, length, unmap));
  }
}

const tick = () => new Promise((r) => setImmediate(r));

test('many requests in flight over several queues, completed out of order by a slow store: each gets its own data', async () => {
  const inner = new MemoryStorage(CAPACITY * SECTOR);
  for (let s = 0; s < CAPACITY; s++) inner.bytes.fill(s, s * SECTOR, (s + 1) * SECTOR);
  const storage = new GatedStorage(inner);
  const device = new BlkDevice({ storage, numQueues: 4 });
  const h = new DeviceHarness(device, { queueSize: 32 });
  const order: number[] = [];
  const N = 40; // more than one queue holds
  const requests = Array.from({ length: N }, (_, i) =>
    h.request(i % 4, [header(BlkType.IN, BigInt(i))], [SECTOR + 1]).then((c) => {
      order.push(i);
      return c;
    }),
  );
  for (let k = 0; k < 5 && storage.pending.length < N; k++) await tick();
  assert.equal(storage.pending.length, N, 'every request reached the store before any completed');
  assert.equal(device.inFlight, N);
  // release in reverse order
  for (const p of [...storage.pending].reverse()) {
    p.release();
    await tick();
  }
  const done = await Promise.all(requests);
  done.forEach((c, i) => {
    assert.equal(statusOf(c), BlkStatus.OK);
    assert.ok(c.written.subarray(0, SECTOR).every((b) => b === i), `request ${i} got sector ${i}'s bytes`);
  });
  assert.deepEqual(order, Array.from({ length: N }, (_, i) => N - 1 - i), 'completed in the store\'s order, not the submission order');
  assert.equal(device.inFlight, 0);
  assert.ok(h.interrupts.every((n) => n > 0), 'every queue was served');
});

test('a failing store: IOERR (logged), an IN\'s data area is zeroed, not stale', async () => {
  const failing: BlockStorage = {
    size: CAPACITY * SECTOR,
    readOnly: false,
    read: async (_o, into) => {
      into[0]!.fill(0xee); // part of the data arrived before the failure
      throw new Error('EIO: simulated medium error');
    },
    write: async () => {
      throw new Error('ENOSPC: simulated');
    },
    flush: async () => {},
    discard: async () => {},
    writeZeroes: async () => {},
  };
  const device = new BlkDevice({ storage: failing });
  const memory = new GuestMemory([{ guestAddr: 0, size: 8192, buffer: new ArrayBuffer(8192) }]);
  const region = memory.regionList[0]!;
  region.bytes.fill(0x77);
  region.bytes.set(header(BlkType.IN, 1n), 0);
  const chain = new DescriptorChain(0);
  chain.addSegment(region, 0, 16, false);
  chain.addSegment(region, 100, 300, true);
  chain.addSegment(region, 1000, 213, true); // 512 data bytes + status
  const logs: string[] = [];
  const ctx: DeviceContext = { memory, driverFeatures: bit(FeatureBit.VERSION_1) | bit(BlkFeature.FLUSH), log: (l) => logs.push(l), configChanged: () => {} };
  const len = await device.handleChain(0, chain, ctx);
  assert.equal(len, 513);
  assert.ok(region.bytes.subarray(100, 400).every((b) => b === 0) && region.bytes.subarray(1000, 1212).every((b) => b === 0), 'data area zeroed');
  assert.equal(region.bytes[1212], BlkStatus.IOERR, 'status in the last writable byte');
  assert.equal(region.bytes[1213], 0x77, 'nothing written after it');
  assert.equal(region.bytes[99], 0x77);
  assert.equal(region.bytes[400], 0x77);
  assert.ok(logs.some((l) => /read of 512 bytes at sector 1 failed: EIO: simulated medium error/.test(l)), logs.join('\n'));
});

test('reset while requests are at the store: their late answers write nothing', async () => {
  const inner = new MemoryStorage(CAPACITY * SECTOR);
  inner.bytes.fill(0x42);
  const storage = new GatedStorage(inner);
  const device = new BlkDevice({ storage });
  const memory = new GuestMemory([{ guestAddr: 0, size: 4096, buffer: new ArrayBuffer(4096) }]);
  const region = memory.regionList[0]!;
  region.bytes.set(header(BlkType.FLUSH, 0n), 0);
  const chain = new DescriptorChain(0);
  chain.addSegment(region, 0, 16, false);
  chain.addSegment(region, 2000, 1, true);
  region.bytes[2000] = 0xcc;
  const ctx: DeviceContext = { memory, driverFeatures: bit(FeatureBit.VERSION_1) | bit(BlkFeature.FLUSH), log: () => {}, configChanged: () => {} };
  const answer = device.handleChain(0, chain, ctx) as Promise<number>;
  assert.ok(answer instanceof Promise);
  await tick();
  device.reset();
  chain.revoke(); // what the runtime does on reset
  storage.pending[0]!.release();
  assert.equal(await answer, 0);
  assert.equal(region.bytes[2000], 0xcc, 'no status written after the reset');
  assert.equal(device.inFlight, 0);
});

test('a direct chain: the model leaves every non-writable and out-of-chain byte alone', async () => {
  const storage = new MemoryStorage(CAPACITY * SECTOR);
  storage.bytes.set(filled(SECTOR * 2, 3), 0);
  const device = new BlkDevice({ storage });
  const memory = new GuestMemory([{ guestAddr: 0x1000, size: 8192, buffer: new ArrayBuffer(8192) }]);
  const region = memory.regionList[0]!;
  region.bytes.fill(0x99);
  region.bytes.set(header(BlkType.IN, 0n), 10);
  const chain = new DescriptorChain(3);
  chain.addSegment(region, 10, 16, false);
  chain.addSegment(region, 4000, 1, true); // data split 1 + 1023, status in its own descriptor
  chain.addSegment(region, 5000, 1023, true);
  chain.addSegment(region, 7000, 1, true);
  const ctx: DeviceContext = { memory, driverFeatures: bit(FeatureBit.VERSION_1) | bit(BlkFeature.FLUSH), log: () => {}, configChanged: () => {} };
  const before = region.bytes.slice();
  assert.equal(await device.handleChain(0, chain, ctx), 1025);
  const data = concat(region.bytes.subarray(4000, 4001), region.bytes.subarray(5000, 6023));
  assert.deepEqual(data, filled(SECTOR * 2, 3));
  assert.equal(region.bytes[7000], BlkStatus.OK);
  for (let i = 0; i < region.bytes.length; i++) {
    const inside = i === 4000 || (i >= 5000 && i < 6023) || i === 7000;
    if (!inside) assert.equal(region.bytes[i], before[i], `byte ${i} changed`);
  }
});

test('sliceSegments: whole segments are passed as they are, cut ones as views of the same memory', () => {
  const memory = new Uint8Array(64).map((_, i) => i);
  const segs = [memory.subarray(0, 16), memory.subarray(16, 48), memory.subarray(48, 64)];
  // header-like start inside the first segment, end inside the last
  const cut = sliceSegments(segs, 10, 44);
  assert.deepEqual(cut.map((v) => [v.byteOffset, v.length]), [[10, 6], [16, 32], [48, 6]]);
  assert.equal(cut[1], segs[1], 'a whole segment: the same view, no new one');
  cut[2]![0] = 200;
  assert.equal(memory[48], 200, 'a cut segment is a view, not a copy');
  // whole segments only; length 0; a start past the end
  const all = sliceSegments(segs, 0, 64);
  assert.ok(all.every((v, i) => v === segs[i]));
  assert.deepEqual(sliceSegments(segs, 5, 0), []);
  assert.deepEqual(sliceSegments(segs, 64, 10), []);
  // a slice that starts exactly at a segment boundary and ends at one
  assert.deepEqual(sliceSegments(segs, 16, 32), [segs[1]]);
});

