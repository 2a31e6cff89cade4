/**
 * Hostile packed rings (virtio 1.2 §2.8): every malformed list a driver can write is a VirtioError
 * naming the rule, never another exception, a hang, a write to guest memory or a move of the
 * device's position; every forged used descriptor a device can write is detected by the driver
 * (USED_ID_INVALID / USED_LEN_INVALID, queue broken) or not seen at all.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescFlags, PackedDescFlags } from '../../src/virtio/constants.js';
import { VirtioError, type VirtioErrorCode } from '../../src/virtio/errors.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { PackedDeviceQueue } from '../../src/virtio/packed-device-queue.js';
import { packedRingLayout, packedRingViewsFromGuest } from '../../src/virtio/packed-ring.js';
import { AV, PBASE, PMEM_BYTES, US, makePackedRing, writePackedDesc, type PackedRing } from '../fuzz/packed-harness.js';

const { NEXT, WRITE, INDIRECT } = DescFlags;
const { AVAIL, USED } = PackedDescFlags;
const BUF = PBASE + 0x8000;
const TABLE = PBASE + 0x4000;

interface Case {
  name: string;
  code: VirtioErrorCode;
  indirect?: boolean;
  size?: number;
  maxIndirectEntries?: number;
  /** The exact message (rule, place and values; the code and section are appended). */
  message?: string;
  section?: string;
  /** Builds the ring; may pop (and keep) legitimate lists first. */
  build(r: PackedRing): void;
}

/** Writes available descriptor `i` for lap `wrap` (default 1, the first lap). */
const avail = (r: PackedRing, i: number, addr: number, len: number, id: number, flags: number, wrap = 1) =>
  writePackedDesc(r, i, addr, len, id, flags | AV(wrap));
/** Writes entry `i` of an indirect table at TABLE. */
const entry = (r: PackedRing, i: number, addr: number, len: number, flags: number) => writePackedDesc(r, i, addr, len, 0, flags, TABLE);

const cases: Case[] = [
  {
    name: 'AVAIL and USED both equal to the wrap counter at the next position',
    message: 'descriptor 0 has AVAIL = USED = 1: neither available nor a used descriptor of this lap',
    section: '§2.8.1',
    code: 'PACKED_FLAGS_INVALID',
    build: (r) => writePackedDesc(r, 0, BUF, 16, 0, AVAIL | USED),
  },
  {
    name: 'a later descriptor of the list still carries the previous lap (wrap counter not toggled)',
    message: 'descriptor 0 (number 2 of the list at 3) is not marked available for wrap counter 0',
    section: '§2.8.6',
    code: 'PACKED_DESC_NOT_AVAIL',
    size: 4,
    build: (r) => {
      // take positions 0..2 legitimately, then a list at 3 that wraps: its second descriptor at
      // position 0 must carry wrap 0, the driver "forgot" to toggle
      for (let i = 0; i < 3; i++) avail(r, i, BUF, 16, i, 0);
      for (let i = 0; i < 3; i++) r.device.addUsed(r.device.pop()!.head, 0);
      r.device.publishUsed();
      writePackedDesc(r, 0, BUF, 16, 0, WRITE | AV(1));
      avail(r, 3, BUF, 16, 0, NEXT);
    },
  },
  {
    name: 'a later descriptor of the list is not available (zero flags)',
    message: 'descriptor 1 (number 2 of the list at 0) is not marked available for wrap counter 1',
    section: '§2.8.6',
    code: 'PACKED_DESC_NOT_AVAIL',
    build: (r) => {
      avail(r, 0, BUF, 16, 0, NEXT);
      writePackedDesc(r, 1, BUF, 16, 0, 0);
    },
  },
  {
    name: 'a later descriptor of the list has AVAIL = USED',
    message: 'descriptor 1 (number 2 of the list at 0) is not marked available for wrap counter 1',
    section: '§2.8.6',
    code: 'PACKED_DESC_NOT_AVAIL',
    build: (r) => {
      avail(r, 0, BUF, 16, 0, NEXT);
      writePackedDesc(r, 1, BUF, 16, 0, US(1));
    },
  },
  { name: 'buffer id ≥ queue size', message: 'buffer id 8 ≥ queue size 8', section: '§2.8.21.1', code: 'PACKED_ID_INVALID', build: (r) => avail(r, 0, BUF, 16, 8, 0) },
  { name: 'buffer id 0xffff', message: 'buffer id 65535 ≥ queue size 8', section: '§2.8.21.1', code: 'PACKED_ID_INVALID', build: (r) => avail(r, 0, BUF, 16, 0xffff, 0) },
  {
    name: 'buffer id of a buffer still in flight',
    message: 'buffer id 3 is already in flight',
    section: '§2.8.21.1',
    code: 'PACKED_ID_IN_USE',
    build: (r) => {
      avail(r, 0, BUF, 16, 3, 0);
      r.device.pop();
      avail(r, 1, BUF, 16, 3, 0);
    },
  },
  {
    name: 'a list as long as the ring (NEXT on every descriptor)',
    message: 'descriptor list at 0 is longer than the queue size 8',
    section: '§2.8.17',
    code: 'DESC_CHAIN_TOO_LONG',
    build: (r) => {
      for (let i = 0; i < 8; i++) avail(r, i, BUF, 16, 0, NEXT);
    },
  },
  {
    name: 'a 1-entry ring whose only descriptor has NEXT',
    message: 'descriptor list at 0 is longer than the queue size 1',
    section: '§2.8.17',
    code: 'DESC_CHAIN_TOO_LONG',
    size: 1,
    build: (r) => avail(r, 0, BUF, 16, 0, NEXT),
  },
  {
    name: 'a descriptor made available again before the device used it',
    message: 'descriptor 0 was made available again while 2 descriptors are in flight in a 2-entry ring',
    section: '§2.8.16',
    code: 'PACKED_RING_OVERRUN',
    size: 2,
    build: (r) => {
      avail(r, 0, BUF, 16, 0, 0);
      avail(r, 1, BUF, 16, 1, 0);
      r.device.pop();
      r.device.pop();
      avail(r, 0, BUF, 16, 1, 0, 0); // lap 2 over a descriptor still in flight
    },
  },
  {
    name: 'a list that runs into descriptors still in flight',
    message: 'descriptor 1 was made available again while 1 descriptors are in flight in a 4-entry ring',
    section: '§2.8.16',
    code: 'PACKED_RING_OVERRUN',
    size: 4,
    build: (r) => {
      avail(r, 0, BUF, 16, 0, 0);
      avail(r, 1, BUF, 16, 1, 0);
      r.device.pop();
      r.device.addUsed(r.device.pop()!.head, 0); // buffer 1 used (at position 0); buffer 0 (position 0's list) in flight
      r.device.publishUsed();
      avail(r, 2, BUF, 16, 2, NEXT);
      avail(r, 3, BUF, 16, 2, NEXT);
      avail(r, 0, BUF, 16, 2, NEXT, 0);
      avail(r, 1, BUF, 16, 2, 0, 0); // position 1 of lap 2: one more than the ring has free
    },
  },
  { name: 'zero-length buffer', message: 'descriptor with length 0 at 0x18000', section: '§2.8.4', code: 'DESC_ZERO_LENGTH', build: (r) => avail(r, 0, BUF, 0, 0, 0) },
  { name: 'address outside guest memory', code: 'MEM_OUT_OF_RANGE', build: (r) => avail(r, 0, PBASE + PMEM_BYTES, 16, 0, 0) },
  { name: 'address + length past the end of memory', code: 'MEM_OUT_OF_RANGE', build: (r) => avail(r, 0, PBASE + PMEM_BYTES - 8, 16, 0, WRITE) },
  { name: 'address below guest memory', code: 'MEM_OUT_OF_RANGE', build: (r) => avail(r, 0, 0x100, 16, 0, 0) },
  {
    name: 'address overflowing 64 bits',
    code: 'MEM_OUT_OF_RANGE',
    build: (r) => {
      avail(r, 0, 0, 0x100, 0, 0);
      r.memory.writeU32(r.ring.desc, 0xfffffff0);
      r.memory.writeU32(r.ring.desc + 4, 0xffffffff);
    },
  },
  {
    name: 'readable after writable',
    message: 'device-readable descriptor after a device-writable one',
    section: '§2.8.17',
    code: 'DESC_READABLE_AFTER_WRITABLE',
    build: (r) => {
      avail(r, 0, BUF, 16, 0, WRITE | NEXT);
      avail(r, 1, BUF + 16, 16, 0, 0);
    },
  },
  { name: 'INDIRECT without the feature', message: 'INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC', section: '§2.8.19', code: 'INDIRECT_NOT_NEGOTIATED', indirect: false, build: (r) => avail(r, 0, TABLE, 16, 0, INDIRECT) },
  { name: 'INDIRECT with NEXT', message: 'descriptor has both INDIRECT and NEXT', section: '§2.8.19', code: 'INDIRECT_WITH_NEXT', indirect: true, build: (r) => avail(r, 0, TABLE, 16, 0, INDIRECT | NEXT) },
  {
    name: 'INDIRECT inside a list linked by NEXT',
    message: 'descriptor 1 has INDIRECT inside a list linked by NEXT',
    section: '§2.8.19',
    code: 'INDIRECT_IN_CHAIN',
    indirect: true,
    build: (r) => {
      entry(r, 0, BUF, 16, 0);
      avail(r, 0, BUF, 16, 0, NEXT);
      avail(r, 1, TABLE, 16, 0, INDIRECT);
    },
  },
  { name: 'empty indirect table', message: 'indirect table length 0 is not a non-zero multiple of 16', section: '§2.8.7', code: 'INDIRECT_BAD_LENGTH', indirect: true, build: (r) => avail(r, 0, TABLE, 0, 0, INDIRECT) },
  { name: 'indirect table not a multiple of 16', message: 'indirect table length 24 is not a non-zero multiple of 16', section: '§2.8.7', code: 'INDIRECT_BAD_LENGTH', indirect: true, build: (r) => avail(r, 0, TABLE, 24, 0, INDIRECT) },
  {
    name: 'indirect table with more entries than the queue size',
    message: 'indirect table of 9 entries is longer than the limit 8',
    section: '§2.8.17',
    code: 'INDIRECT_BAD_LENGTH',
    indirect: true,
    build: (r) => {
      for (let i = 0; i < 9; i++) entry(r, i, BUF + 16 * i, 16, 0);
      avail(r, 0, TABLE, 16 * 9, 0, INDIRECT);
    },
  },
  {
    name: 'indirect table longer than the device’s limit',
    message: 'indirect table of 3 entries is longer than the limit 2',
    section: '§2.8.17',
    code: 'INDIRECT_BAD_LENGTH',
    indirect: true,
    maxIndirectEntries: 2,
    build: (r) => {
      for (let i = 0; i < 3; i++) entry(r, i, BUF + 16 * i, 16, 0);
      avail(r, 0, TABLE, 48, 0, INDIRECT);
    },
  },
  { name: 'indirect table of 2^32 - 16 bytes', message: 'indirect table of 268435455 entries is longer than the limit 8', section: '§2.8.17', code: 'INDIRECT_BAD_LENGTH', indirect: true, build: (r) => avail(r, 0, TABLE, 0xfffffff0, 0, INDIRECT) },
  { name: 'indirect table outside memory', code: 'MEM_OUT_OF_RANGE', indirect: true, build: (r) => avail(r, 0, PBASE + PMEM_BYTES - 16, 32, 0, INDIRECT) },
  {
    name: 'nested indirect table',
    message: 'indirect table entry 0 has INDIRECT',
    section: '§2.8.19',
    code: 'INDIRECT_NESTED',
    indirect: true,
    build: (r) => {
      entry(r, 0, TABLE, 16, INDIRECT);
      avail(r, 0, TABLE, 16, 0, INDIRECT);
    },
  },
  {
    name: 'NEXT inside an indirect table (a split-format table: next index where packed has flags)',
    message: 'indirect table entry 0 has NEXT (only WRITE is valid there)',
    section: '§2.8.19',
    code: 'INDIRECT_ENTRY_NEXT',
    indirect: true,
    build: (r) => {
      entry(r, 0, BUF, 16, NEXT);
      entry(r, 1, BUF + 16, 16, WRITE);
      avail(r, 0, TABLE, 32, 0, INDIRECT);
    },
  },
  {
    name: 'zero-length entry in an indirect table',
    message: 'descriptor with length 0 at 0x18010',
    section: '§2.8.4',
    code: 'DESC_ZERO_LENGTH',
    indirect: true,
    build: (r) => {
      entry(r, 0, BUF, 16, 0);
      entry(r, 1, BUF + 16, 0, WRITE);
      avail(r, 0, TABLE, 32, 0, INDIRECT);
    },
  },
  {
    name: 'readable after writable inside an indirect table',
    message: 'device-readable descriptor after a device-writable one',
    section: '§2.8.17',
    code: 'DESC_READABLE_AFTER_WRITABLE',
    indirect: true,
    build: (r) => {
      entry(r, 0, BUF, 16, WRITE);
      entry(r, 1, BUF + 16, 16, 0);
      avail(r, 0, TABLE, 32, 0, INDIRECT);
    },
  },
  {
    name: 'an entry of an indirect table outside memory',
    code: 'MEM_OUT_OF_RANGE',
    indirect: true,
    build: (r) => {
      entry(r, 0, PBASE + PMEM_BYTES, 1, 0);
      avail(r, 0, TABLE, 16, 0, INDIRECT);
    },
  },
];

for (const c of cases) {
  test(`device refuses: ${c.name}`, () => {
    const r = makePackedRing(c.size ?? 8, {
      indirect: c.indirect ?? false,
      noDriver: true,
      ...(c.maxIndirectEntries ? { maxIndirectEntries: c.maxIndirectEntries } : {}),
    });
    c.build(r);
    const before = r.bytes.slice();
    const state = [r.device.nextAvail, r.device.nextUsed, r.device.descriptorsInFlight];
    for (let attempt = 0; attempt < 2; attempt++) {
      let err: unknown;
      const t0 = performance.now();
      try {
        r.device.pop();
      } catch (e) {
        err = e;
      }
      assert.ok(performance.now() - t0 < 250, 'pop() is fast');
      assert.ok(err instanceof VirtioError, `expected a VirtioError, got ${err}`);
      assert.equal(err.code, c.code, err.message);
      if (c.message !== undefined) assert.equal(err.message, `${c.message} (${c.code}, virtio 1.2 ${c.section})`);
      assert.match(err.message, /virtio 1\.2 §2\.[78]/, 'the error names the spec section');
      assert.deepEqual([r.device.nextAvail, r.device.nextUsed, r.device.descriptorsInFlight], state, 'the device did not move');
    }
    assert.deepEqual(r.bytes, before, 'validation wrote nothing to guest memory');
  });
}

test('a list longer than 2^32 bytes in total is refused', () => {
  // Five 1 GiB regions share one lazily-allocated backing buffer (never touched).
  const GiB = 1 << 30;
  const big = new SharedArrayBuffer(GiB);
  const ringBuf = new SharedArrayBuffer(0x10000);
  const memory = new GuestMemory([{ guestAddr: 0, size: ringBuf.byteLength, buffer: ringBuf }]);
  for (let i = 1; i <= 5; i++) memory.addRegion({ guestAddr: i * 2 * GiB, size: GiB, buffer: big });
  const ring = packedRingLayout(0, 8);
  const device = new PackedDeviceQueue(memory, packedRingViewsFromGuest(memory, ring), { eventIdx: false, indirect: false });
  for (let i = 0; i < 5; i++) writePackedDesc({ memory, ring }, i, (i + 1) * 2 * GiB, GiB, 0, (i < 4 ? NEXT : 0) | AV(1));
  assert.throws(() => device.pop(), (e: unknown) => e instanceof VirtioError && e.code === 'DESC_CHAIN_TOO_LONG');
});

test('wrap counter lies at the head: the device sees nothing available (no error, no hang)', () => {
  const r = makePackedRing(4, { noDriver: true });
  writePackedDesc(r, 0, BUF, 16, 0, AV(0)); // lap-2 marking in lap 1
  assert.equal(r.device.hasAvailable(), false);
  assert.equal(r.device.pop(), null);
  // a used descriptor of the previous lap is not available either
  writePackedDesc(r, 0, BUF, 16, 0, US(0));
  assert.equal(r.device.pop(), null);
  // lap 2 after a full lap: a driver that forgot to toggle its wrap counter is simply not seen
  for (let i = 0; i < 4; i++) writePackedDesc(r, i, BUF, 16, i, AV(1));
  for (let i = 0; i < 4; i++) r.device.addUsed(r.device.pop()!.head, 0);
  r.device.publishUsed();
  writePackedDesc(r, 0, BUF, 16, 0, AV(1));
  assert.equal(r.device.pop(), null);
  writePackedDesc(r, 0, BUF, 16, 0, AV(0));
  assert.equal(r.device.pop()!.head, 0, 'the right marking for lap 2 is taken');
});

test('reserved flag bits in indirect entries are ignored (§2.8.7), the INDIRECT descriptor’s WRITE too', () => {
  const r = makePackedRing(4, { indirect: true, noDriver: true });
  writePackedDesc(r, 0, BUF, 16, 0x1234, AVAIL | USED | 0x0100, TABLE); // AVAIL/USED/unknown bits, an id: reserved
  writePackedDesc(r, 1, BUF + 16, 16, 0, WRITE | 0x4000, TABLE);
  writePackedDesc(r, 0, TABLE, 32, 2, INDIRECT | WRITE | AV(1));
  const c = r.device.pop()!;
  assert.equal(c.head, 2);
  assert.deepEqual([c.readableLength, c.writableLength], [16, 16]);
});

test('the device completes only buffers it has in flight (a device-model bug is a RangeError)', () => {
  const r = makePackedRing(4, { noDriver: true });
  writePackedDesc(r, 0, BUF, 16, 1, AV(1));
  const c = r.device.pop()!;
  assert.throws(() => r.device.addUsed(0, 0), RangeError);
  assert.throws(() => r.device.addUsed(9, 0), RangeError);
  r.device.addUsed(c.head, 0);
  assert.throws(() => r.device.addUsed(c.head, 0), RangeError, 'twice');
  assert.throws(() => r.device.pushUsed(c, 17), RangeError);
});

// ------------------------------------------------------------------------------------------
// the driver against a hostile device

/** A ring with `n` one-element buffers (tokens 100.., ids 0..n-1, 8 writable bytes each) taken by the device. */
function driverWithInflight(size: number, n: number): PackedRing {
  const r = makePackedRing(size);
  for (let t = 0; t < n; t++) assert.ok(r.driver.add([], [{ addr: BUF + 16 * t, len: 8 }], 100 + t));
  for (let t = 0; t < n; t++) r.device.pop();
  return r;
}

function expectBroken(r: PackedRing, code: VirtioErrorCode): void {
  assert.throws(() => r.driver.getUsed(), (e: unknown) => e instanceof VirtioError && e.code === code);
  assert.ok(r.driver.isBroken);
  assert.equal(r.driver.getUsed(), null, 'a broken queue returns nothing more');
  assert.equal(r.driver.hasUsed(), false, 'nor reports anything to collect');
  assert.equal(r.driver.enableCallbacks(), true, 'so a collect-then-enable loop ends');
  assert.equal(r.driver.add([{ addr: BUF, len: 1 }], [], 1), false, 'a broken queue accepts nothing');
  const back = r.driver.detachUnused();
  assert.equal(r.driver.numFree, r.driver.size, 'descriptors back after detachUnused');
  assert.ok(back.every((t) => t >= 100));
}

test('driver: used id ≥ queue size', () => {
  const r = driverWithInflight(4, 2);
  writePackedDesc(r, 0, 0, 0, 7, US(1));
  expectBroken(r, 'USED_ID_INVALID');
});

test('driver: used id not in flight', () => {
  const r = driverWithInflight(4, 2);
  writePackedDesc(r, 0, 0, 0, 3, US(1));
  expectBroken(r, 'USED_ID_INVALID');
});

test('driver: the same id returned twice', () => {
  const r = driverWithInflight(4, 2);
  writePackedDesc(r, 0, 0, 4, 0, US(1) | WRITE);
  writePackedDesc(r, 1, 0, 4, 0, US(1) | WRITE);
  assert.deepEqual(r.driver.getUsed(), { token: 100, len: 4 });
  expectBroken(r, 'USED_ID_INVALID');
});

test('driver: used len above the buffer’s writable bytes', () => {
  const r = driverWithInflight(4, 2);
  writePackedDesc(r, 0, 0, 9, 1, US(1) | WRITE);
  expectBroken(r, 'USED_LEN_INVALID');
});

test('driver: used descriptors with AVAIL ≠ USED, or of the wrong lap, are not seen', () => {
  const r = driverWithInflight(4, 2);
  for (const flags of [USED, AVAIL, 0, US(0)]) {
    writePackedDesc(r, 0, 0, 4, 0, flags | WRITE);
    assert.equal(r.driver.hasUsed(), false, `flags 0x${flags.toString(16)}`);
    assert.equal(r.driver.getUsed(), null);
  }
  assert.equal(r.driver.isBroken, false);
  writePackedDesc(r, 0, 0, 4, 0, US(1) | WRITE);
  assert.deepEqual(r.driver.getUsed(), { token: 100, len: 4 });
});

test('driver: a used descriptor when nothing is in flight', () => {
  const r = makePackedRing(4);
  writePackedDesc(r, 0, 0, 0, 0, US(1));
  expectBroken(r, 'USED_ID_INVALID');
});
