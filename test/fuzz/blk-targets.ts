/**
 * Fuzz target for the virtio-blk request parser (src/devices/blk/device.ts): hostile headers,
 * sector ranges (near 2^64, past the capacity, wrapping), discard / write-zeroes segments
 * (flags, counts, lengths) and chain shapes (the header split anywhere or cut short, no
 * writable byte, data and status spread over descriptors). Properties:
 *
 *  - handleChain throws nothing but a VirtioError, and only for a chain with fewer than 16
 *    readable bytes or no writable byte; otherwise its answer (a number or a promise that
 *    resolves) is the whole writable length, with the status the reference (written from §5.2.6
 *    with BigInt arithmetic, independently of the model's) expects in the last writable byte;
 *  - no byte outside the chain's writable segments changes (canary over the whole memory);
 *  - the store is only asked for sector-aligned ranges inside the image, with views inside the
 *    chain's segments of the right direction; the image changes exactly as the request says
 *    (nothing for a refused one) and an IN returns the image's bytes.
 *
 * Inputs are JSON (no bigint) so counterexamples can be stored under test/corpus/blk-request/.
 */
import fc from 'fast-check';
import type { DeviceContext } from '../../src/device/device.js';
import { BlkDevice, BlkFeature, BlkStatus, BlkType, DEFAULT_MAX_DISCARD_SECTORS, DEFAULT_MAX_DISCARD_SEG } from '../../src/devices/blk/device.js';
import { MemoryStorage } from '../../src/devices/blk/memory-storage.js';
import type { BlockStorage } from '../../src/devices/blk/storage.js';
import { DescriptorChain } from '../../src/virtio/chain.js';
import { FeatureBit, bit } from '../../src/virtio/constants.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { GuestMemory } from '../../src/virtio/memory.js';

export interface AsyncFuzzTarget<T> {
  name: string;
  description: string;
  arbitrary: fc.Arbitrary<T>;
  /** Rejects (an Error saying which property broke) when the input violates a property. */
  check(input: T): Promise<void>;
}

/** A sector: relative to the capacity (capacity + rel, at least 0), or absolute as two 32-bit halves. */
export type SectorSpec = { rel: number } | { hi: number; lo: number };

export interface BlkFuzzInput {
  capacity: number;
  readOnly: boolean;
  /** bit 0 FLUSH, bit 1 DISCARD, bit 2 WRITE_ZEROES negotiated. */
  features: number;
  type: number;
  reserved: number;
  sector: SectorSpec;
  dataSectors: number;
  /** Extra data bytes (a length that is not a multiple of 512 or 16). */
  dataExtra: number;
  segments: { sector: SectorSpec; num: number; flags: number }[];
  /** Cut the readable stream to this many bytes (-1: no cut). */
  truncate: number;
  /** Where the readable stream is split into descriptors. */
  readCuts: number[];
  /** Writable descriptors: lengths, or null for data-shaped (data bytes + status, split at writeCuts). */
  writable: number[] | null;
  writeCuts: number[];
  /** Gap bytes between descriptors. */
  gap: number;
}

const SECTOR = 512;
const SERIAL = 'fuzz-serial-0123';
const MEMORY = 16 * 1024;
const CANARY = 0xa5;

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const sectorArb: fc.Arbitrary<SectorSpec> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ rel: fc.integer({ min: -3, max: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ rel: fc.integer({ min: -64, max: -4 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      hi: fc.oneof(fc.constant(0), fc.constant(0xffff_ffff), fc.constant(0x1f_ffff), fc.constant(0x20_0000), fc.constant(1), u32),
      lo: fc.oneof(fc.constant(0), fc.constant(0xffff_ffff), fc.constant(0xffff_fffe), fc.integer({ min: 0, max: 80 }), u32),
    }),
  },
);
const typeArb = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(BlkType.IN, BlkType.OUT, BlkType.FLUSH, BlkType.GET_ID, BlkType.DISCARD, BlkType.WRITE_ZEROES) },
  { weight: 1, arbitrary: fc.constantFrom(2, 3, 5, 10, 14, 15, 16, 0x8000_0000, 0x8000_0001) },
  { weight: 1, arbitrary: u32 },
);
const numArb = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 4 }) },
  { weight: 1, arbitrary: fc.constantFrom(DEFAULT_MAX_DISCARD_SECTORS, DEFAULT_MAX_DISCARD_SECTORS + 1, 0xffff_ffff) },
);
const flagsArb = fc.oneof(
  { weight: 8, arbitrary: fc.constant(0) },
  { weight: 2, arbitrary: fc.constant(1) },
  { weight: 1, arbitrary: fc.constantFrom(2, 3, 0x8000_0000) },
  { weight: 1, arbitrary: u32 },
);
/** Segment sectors: mostly inside a small disk, sometimes anywhere. */
const segmentSectorArb: fc.Arbitrary<SectorSpec> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ rel: fc.integer({ min: -16, max: -1 }) }) },
  { weight: 1, arbitrary: sectorArb },
);

export const blkInputArb: fc.Arbitrary<BlkFuzzInput> = fc.record({
  capacity: fc.oneof({ weight: 1, arbitrary: fc.integer({ min: 0, max: 3 }) }, { weight: 4, arbitrary: fc.integer({ min: 4, max: 48 }) }),
  readOnly: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  features: fc.oneof({ weight: 3, arbitrary: fc.constant(7) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }) }),
  type: typeArb,
  reserved: fc.oneof(fc.constant(0), u32),
  sector: sectorArb,
  dataSectors: fc.integer({ min: 0, max: 4 }),
  dataExtra: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 600 }) }),
  segments: fc.oneof(
    { weight: 5, arbitrary: fc.array(fc.record({ sector: segmentSectorArb, num: numArb, flags: flagsArb }), { minLength: 1, maxLength: 4 }) },
    { weight: 1, arbitrary: fc.array(fc.record({ sector: segmentSectorArb, num: numArb, flags: flagsArb }), { maxLength: 4 }) },
    { weight: 1, arbitrary: fc.array(fc.record({ sector: segmentSectorArb, num: fc.integer({ min: 0, max: 1 }), flags: fc.constant(0) }), { minLength: 30, maxLength: 34 }) },
  ),
  truncate: fc.oneof({ weight: 8, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 40 }) }),
  readCuts: fc.array(fc.integer({ min: 1, max: 3000 }), { maxLength: 4 }),
  writable: fc.oneof(
    { weight: 3, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.array(fc.integer({ min: 1, max: 1100 }), { maxLength: 4 }) },
  ),
  writeCuts: fc.array(fc.integer({ min: 1, max: 2100 }), { maxLength: 4 }),
  gap: fc.integer({ min: 0, max: 9 }),
});

class PropertyError extends Error {
  override readonly name = 'PropertyError';
}
function ensure(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new PropertyError(typeof message === 'string' ? message : message());
}

const resolveSector = (s: SectorSpec, capacity: number): { hi: number; lo: number } => {
  if ('rel' in s) {
    const v = Math.max(0, capacity + s.rel);
    return { hi: Math.floor(v / 2 ** 32), lo: v % 2 ** 32 };
  }
  return { hi: s.hi >>> 0, lo: s.lo >>> 0 };
};
const big = (s: { hi: number; lo: number }) => (BigInt(s.hi) << 32n) | BigInt(s.lo);

function split(total: number, cuts: number[]): number[] {
  const points = [...new Set(cuts.filter((c) => c > 0 && c < total))].sort((a, b) => a - b);
  const out: number[] = [];
  let prev = 0;
  for (const p of [...points, total]) {
    if (p > prev) out.push(p - prev);
    prev = p;
  }
  return out;
}

/** What §5.2.6 says the answer is (the reference; BigInt ranges). */
function reference(input: BlkFuzzInput, readable: Uint8Array, writableLength: number): { error: true } | { error: false; status: number } {
  if (readable.length < 16 || writableLength < 1) return { error: true };
  const v = new DataView(readable.buffer, readable.byteOffset, readable.byteLength);
  const type = v.getUint32(0, true);
  const sector = v.getBigUint64(8, true);
  const cap = BigInt(input.capacity);
  const dataOut = readable.length - 16;
  const dataIn = writableLength - 1;
  const fits = (s: bigint, n: bigint) => s + n <= cap;
  const { IOERR, OK, UNSUPP } = BlkStatus;
  switch (type) {
    case BlkType.IN:
      return { error: false, status: dataIn % SECTOR !== 0 || !fits(sector, BigInt(dataIn / SECTOR)) ? IOERR : OK };
    case BlkType.OUT:
      return { error: false, status: input.readOnly || dataOut % SECTOR !== 0 || !fits(sector, BigInt(dataOut / SECTOR)) ? IOERR : OK };
    case BlkType.FLUSH:
    case BlkType.GET_ID:
      return { error: false, status: OK };
    case BlkType.DISCARD:
    case BlkType.WRITE_ZEROES: {
      const discard = type === BlkType.DISCARD;
      if (!(input.features & (discard ? 2 : 4))) return { error: false, status: UNSUPP };
      if (input.readOnly || dataOut === 0 || dataOut % 16 !== 0 || dataOut / 16 > DEFAULT_MAX_DISCARD_SEG) return { error: false, status: IOERR };
      const segs = Array.from({ length: dataOut / 16 }, (_, i) => ({
        sector: v.getBigUint64(16 + 16 * i, true),
        num: v.getUint32(24 + 16 * i, true),
        flags: v.getUint32(28 + 16 * i, true),
      }));
      if (segs.some((s) => (s.flags & ~1) !== 0 || (discard && (s.flags & 1) !== 0))) return { error: false, status: UNSUPP };
      if (segs.some((s) => s.num > DEFAULT_MAX_DISCARD_SECTORS || !fits(s.sector, BigInt(s.num)))) return { error: false, status: IOERR };
      return { error: false, status: OK };
    }
    default:
      return { error: false, status: UNSUPP };
  }
}

export const blkRequest: AsyncFuzzTarget<BlkFuzzInput> = {
  name: 'blk-request',
  description: 'virtio-blk request parser: only VirtioErrors, §5.2.6 statuses, no write outside the chain or the image',
  arbitrary: blkInputArb,
  async check(input) {
    const cap = input.capacity;
    // the readable stream: header, then segments (discard / write-zeroes) or data
    const header = new Uint8Array(16);
    const hv = new DataView(header.buffer);
    const sec = resolveSector(input.sector, cap);
    hv.setUint32(0, input.type >>> 0, true);
    hv.setUint32(4, input.reserved >>> 0, true);
    hv.setUint32(8, sec.lo, true);
    hv.setUint32(12, sec.hi, true);
    let payload: Uint8Array;
    if (input.type === BlkType.DISCARD || input.type === BlkType.WRITE_ZEROES) {
      payload = new Uint8Array(input.segments.length * 16 + (input.dataExtra % 3 === 1 ? input.dataExtra % 16 : 0));
      const pv = new DataView(payload.buffer);
      input.segments.forEach((s, i) => {
        const r = resolveSector(s.sector, cap);
        pv.setUint32(16 * i, r.lo, true);
        pv.setUint32(16 * i + 4, r.hi, true);
        pv.setUint32(16 * i + 8, s.num >>> 0, true);
        pv.setUint32(16 * i + 12, s.flags >>> 0, true);
      });
    } else {
      const len = input.type === BlkType.OUT ? input.dataSectors * SECTOR + input.dataExtra : input.dataExtra % 7 === 1 ? input.dataExtra : 0;
      payload = Uint8Array.from({ length: len }, (_, i) => (i * 7 + 1) & 0xff);
    }
    let readable = new Uint8Array(16 + payload.length);
    readable.set(header);
    readable.set(payload, 16);
    if (input.truncate >= 0 && input.truncate < readable.length) readable = readable.subarray(0, input.truncate);
    const dataIn = input.type === BlkType.GET_ID ? 20 : input.dataSectors * SECTOR + input.dataExtra;
    const writableLens = input.writable ?? (input.type === BlkType.IN || input.type === BlkType.GET_ID ? split(dataIn + 1, input.writeCuts) : [1]);

    // memory: canary everywhere, descriptors one after another with gaps
    const buffer = new ArrayBuffer(MEMORY);
    const memory = new GuestMemory([{ guestAddr: 0x10000, size: MEMORY, buffer }]);
    const region = memory.regionList[0]!;
    const bytes = region.bytes;
    bytes.fill(CANARY);
    const chain = new DescriptorChain(0);
    let at = 3;
    const readSegs: [number, number][] = [];
    const writeSegs: [number, number][] = [];
    let off = 0;
    for (const len of split(readable.length, input.readCuts)) {
      bytes.set(readable.subarray(off, off + len), at);
      chain.addSegment(region, at, len, false);
      readSegs.push([at, at + len]);
      off += len;
      at += len + input.gap;
    }
    for (const len of writableLens) {
      if (at + len > MEMORY) break;
      chain.addSegment(region, at, len, true);
      writeSegs.push([at, at + len]);
      at += len + input.gap;
    }
    const before = bytes.slice();

    // the image, and a store that checks every request made of it
    const image = new MemoryStorage(cap * SECTOR, { readOnly: input.readOnly });
    for (let i = 0; i < image.bytes.length; i++) image.bytes[i] = (i * 13 + 5) & 0xff;
    const imageBefore = image.bytes.slice();
    const problems: string[] = [];
    const inside = (segs: [number, number][], view: Uint8Array) =>
      view.buffer === buffer && segs.some(([s, e]) => view.byteOffset >= s && view.byteOffset + view.length <= e);
    const checkRange = (what: string, offset: number, length: number) => {
      if (offset % SECTOR !== 0 || length % SECTOR !== 0 || offset < 0 || length < 0 || offset + length > image.size) {
        problems.push(`${what} of ${length} bytes at ${offset}: outside the ${image.size}-byte image or not sector-aligned`);
      }
    };
    const store: BlockStorage = {
      size: image.size,
      readOnly: image.readOnly,
      read(offset, into) {
        checkRange('read', offset, into.reduce((a, b) => a + b.length, 0));
        if (!into.every((v) => inside(writeSegs, v))) problems.push('read into a view outside the writable segments');
        return image.read(offset, into);
      },
      write(offset, from) {
        checkRange('write', offset, from.reduce((a, b) => a + b.length, 0));
        if (!from.every((v) => inside(readSegs, v))) problems.push('write from a view outside the readable segments');
        return image.write(offset, from);
      },
      flush: () => image.flush(),
      discard(offset, length) {
        checkRange('discard', offset, length);
        return image.discard(offset, length);
      },
      writeZeroes(offset, length, unmap) {
        checkRange('write-zeroes', offset, length);
        return image.writeZeroes(offset, length, unmap);
      },
    };
    const device = new BlkDevice({ storage: store, serial: SERIAL });
    let features = bit(FeatureBit.VERSION_1);
    if (input.features & 1) features |= bit(BlkFeature.FLUSH);
    if (input.features & 2) features |= bit(BlkFeature.DISCARD);
    if (input.features & 4) features |= bit(BlkFeature.WRITE_ZEROES);
    const ctx: DeviceContext = { memory, driverFeatures: features, log: () => {}, configChanged: () => {} };

    const want = reference(input, readable, chain.writableLength);
    let len: number;
    try {
      len = await device.handleChain(0, chain, ctx);
    } catch (e) {
      ensure(e instanceof VirtioError, () => `handleChain threw a non-VirtioError: ${(e as Error)?.stack ?? e}`);
      ensure(want.error, () => `handleChain threw ${e.message} for a chain the reference answers with status ${(want as { status: number }).status}`);
      ensure(Buffer.compare(bytes, before) === 0, 'a refused chain changed memory');
      ensure(Buffer.compare(image.bytes, imageBefore) === 0, 'a refused chain changed the image');
      return;
    }
    ensure(!want.error, 'a chain with < 16 readable bytes or no writable byte was answered instead of refused');
    ensure(problems.length === 0, () => problems.join('; '));
    ensure(len === chain.writableLength, `used length ${len} ≠ the ${chain.writableLength} writable bytes`);
    ensure(device.inFlight === 0, 'a request is still in flight after its answer');

    // canary: only writable bytes changed
    const writable = new Uint8Array(MEMORY);
    for (const [s, e] of writeSegs) writable.fill(1, s, e);
    for (let i = 0; i < MEMORY; i++) {
      if (!writable[i]) ensure(bytes[i] === before[i], () => `byte ${i} outside the writable segments changed`);
    }
    // the writable stream as the device left it
    const stream = new Uint8Array(chain.writableLength);
    let w = 0;
    for (const [s, e] of writeSegs) {
      stream.set(bytes.subarray(s, e), w);
      w += e - s;
    }
    const status = stream[stream.length - 1]!;
    ensure(status === want.status, () => `status ${status}, the reference says ${want.status} (type ${input.type >>> 0})`);

    // the image, and what the data area holds
    const type = input.type >>> 0;
    const expected = imageBefore.slice();
    const sector = Number(big(sec));
    if (status === BlkStatus.OK && type === BlkType.OUT) expected.set(readable.subarray(16), sector * SECTOR);
    if (status === BlkStatus.OK && (type === BlkType.DISCARD || type === BlkType.WRITE_ZEROES)) {
      const v = new DataView(readable.buffer, readable.byteOffset + 16);
      for (let i = 0; i < (readable.length - 16) / 16; i++) {
        const s = Number(v.getBigUint64(16 * i, true));
        expected.fill(0, s * SECTOR, (s + v.getUint32(16 * i + 8, true)) * SECTOR);
      }
    }
    ensure(Buffer.compare(image.bytes, expected) === 0, 'the image changed other than the request says');
    const data = stream.subarray(0, stream.length - 1);
    if (status === BlkStatus.OK && type === BlkType.IN) {
      ensure(Buffer.compare(data, imageBefore.subarray(sector * SECTOR, sector * SECTOR + data.length)) === 0, 'an IN returned other bytes than the image holds');
    } else if (status === BlkStatus.OK && type === BlkType.GET_ID) {
      const id = new Uint8Array(20);
      id.set(new TextEncoder().encode(SERIAL));
      const n = Math.min(20, data.length);
      ensure(Buffer.compare(data.subarray(0, n), id.subarray(0, n)) === 0, 'GET_ID wrote another ID');
      ensure(data.subarray(n).every((b) => b === 0), 'GET_ID left writable bytes after the ID unwritten');
    } else {
      ensure(data.every((b) => b === 0), 'writable bytes the device did not fill with data are not zeroed');
    }
  },
};

export const blkTargets: AsyncFuzzTarget<any>[] = [blkRequest];
