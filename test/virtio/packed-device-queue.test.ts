/**
 * PackedDeviceQueue (the device half of a packed virtqueue, virtio 1.2 §2.8) on rings written by
 * hand: construction from saved bases, adoption of a stopped queue, the order of the ids in
 * flight, element() decoding, the kept lists of chainAt, completion arguments, status and event
 * suppression bookkeeping, and 64-bit / 2^32-byte limits of §2.8.13 and §2.8.17.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescFlags, RingEventFlags } from '../../src/virtio/constants.js';
import { virtioError } from '../helpers/virtio-error.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { PackedDeviceQueue, type PackedDeviceQueueOptions } from '../../src/virtio/packed-device-queue.js';
import { encodeRingIndex, eventWord, packedRingLayout, packedRingViewsFromGuest } from '../../src/virtio/packed-ring.js';
import { AV, PBASE, makePackedRing, readPackedDesc, writePackedDesc, type PackedRing } from '../fuzz/packed-harness.js';

const { NEXT, WRITE, INDIRECT } = DescFlags;
const BUF = PBASE + 0x8000;
const TABLE = PBASE + 0x4000;

const rangeError = (message: string) => (e: unknown) => {
  assert.ok(e instanceof RangeError, `a RangeError, got ${String(e)}`);
  assert.equal(e.message, message);
  return true;
};

/** Another device half over the same ring (a restart), with `options`. */
const device = (r: PackedRing, options: Partial<PackedDeviceQueueOptions> = {}) =>
  new PackedDeviceQueue(r.memory, packedRingViewsFromGuest(r.memory, r.ring), { eventIdx: false, indirect: false, ...options });

/** Driver side by hand: a one-descriptor list at ring position `pos` (lap `wrap`) with buffer `id`. */
const one = (r: PackedRing, pos: number, id: number, wrap = 1, flags = WRITE) => writePackedDesc(r, pos, BUF + 64 * pos, 8, id, flags | AV(wrap));

// ------------------------------------------------------------------------------------------
// construction

test('the queue index defaults to 0 and is kept as given', () => {
  const r = makePackedRing(4, { noDriver: true });
  assert.equal(r.device.index, 0);
  assert.equal(device(r, { index: 3 }).index, 3);
});

test('saved bases (§2.8.14 form): each is checked and named; a full ring in flight is the most there can be', () => {
  const r = makePackedRing(4, { noDriver: true });
  assert.throws(
    () => device(r, { nextAvail: 0x8004 }),
    virtioError('QUEUE_BASE_INVALID', 'next available index 32772 (position 4) is not a position in a 4-entry packed ring (QUEUE_BASE_INVALID, virtio 1.2 §2.8)'),
  );
  assert.throws(
    () => device(r, { nextUsed: 5 }),
    virtioError('QUEUE_BASE_INVALID', 'next used index 5 (position 5) is not a position in a 4-entry packed ring (QUEUE_BASE_INVALID, virtio 1.2 §2.8)'),
  );
  // next available at position 0 of lap 0, next used at position 0 of lap 1: all 4 descriptors in flight.
  const full = device(r, { nextAvail: encodeRingIndex(0, 0), nextUsed: encodeRingIndex(0, 1) });
  assert.equal(full.descriptorsInFlight, 4);
  assert.throws(
    () => device(r, { nextAvail: encodeRingIndex(1, 0), nextUsed: encodeRingIndex(0, 1) }),
    virtioError(
      'QUEUE_BASE_INVALID',
      'next available 1 is 5 descriptors ahead of next used 32768, more than the queue size 4 (QUEUE_BASE_INVALID, virtio 1.2 §2.8)',
    ),
  );
});

// ------------------------------------------------------------------------------------------
// adopt: a restarted ring takes over what the stopped queue had in flight

test('adopt takes over ids in flight only from a queue of the same size', () => {
  const large = makePackedRing(8, { noDriver: true });
  one(large, 0, 1);
  large.device.pop();
  const r = makePackedRing(4, { noDriver: true });
  // Bases with one descriptor in flight, as the 8-entry queue had: the sizes differ, nothing is taken.
  const next = device(r, { nextAvail: encodeRingIndex(1, 1), adopt: large.device });
  assert.equal(next.descriptorsInFlight, 1);
  assert.deepEqual(next.idsInFlight(), []);
  assert.throws(() => next.addUsed(1, 0), rangeError('used id 1 is not a buffer in flight'));
});

test('adopt between queues of which only one keeps lists: ids are taken over, lists only where both kept them', () => {
  const r = makePackedRing(4, { noDriver: true });
  one(r, 0, 2);
  const kept = device(r, { keepLists: true });
  const plain = device(r);
  assert.equal(kept.pop()!.head, 2);
  assert.equal(plain.pop()!.head, 2);
  const base = { nextAvail: encodeRingIndex(1, 1), nextUsed: encodeRingIndex(0, 1) };
  const fromKept = device(r, { ...base, adopt: kept });
  assert.deepEqual(fromKept.idsInFlight(), [2]);
  assert.throws(() => fromKept.chainAt(2), /buffer id 2 is in flight but its list was not kept/);
  const fromPlain = device(r, { ...base, keepLists: true, adopt: plain });
  assert.deepEqual(fromPlain.idsInFlight(), [2]);
  fromPlain.addUsed(2, 8);
  fromPlain.publishUsed();
  assert.deepEqual(readPackedDesc(r, 0), { addr: BUF, len: 8, id: 2, flags: WRITE | AV(1) | 0x8000 }, 'used in lap 1 (§2.8.1)');
});

// ------------------------------------------------------------------------------------------
// idsInFlight

test('idsInFlight orders by age, not by id, across a full ring and the wrap (§2.8.6)', () => {
  const r = makePackedRing(4, { noDriver: true });
  const ids = [2, 0, 3, 1]; // positions 0..3
  ids.forEach((id, pos) => one(r, pos, id));
  for (const id of ids) assert.equal(r.device.pop()!.head, id);
  // A full ring: the next available position is the oldest list's own.
  assert.deepEqual(r.device.idsInFlight(), [2, 0, 3, 1]);
  r.device.addUsed(2, 0);
  r.device.addUsed(0, 0);
  r.device.publishUsed();
  one(r, 0, 2, 0); // lap 0 (wrap counter toggled): position 0 again, id 2 again
  assert.equal(r.device.pop()!.head, 2);
  assert.deepEqual(r.device.idsInFlight(), [3, 1, 2], 'positions 2 and 3 of lap 1 before position 0 of lap 0');
});

// ------------------------------------------------------------------------------------------
// pending / element()

test('pending(): 1 while a list is available at the next position, else 0 (a packed ring has no count)', () => {
  const r = makePackedRing(4, { noDriver: true });
  assert.equal(r.device.pending(), 0);
  one(r, 0, 0);
  one(r, 1, 1);
  assert.equal(r.device.pending(), 1);
  r.device.pop();
  assert.equal(r.device.pending(), 1);
  r.device.pop();
  assert.equal(r.device.pending(), 0);
});

test('element() decodes exactly the next list, with its descriptors’ ids, while other lists are in flight', () => {
  const r = makePackedRing(4, { noDriver: true });
  one(r, 0, 3);
  assert.equal(r.device.pop()!.head, 3);
  writePackedDesc(r, 1, BUF, 4, 7, NEXT | AV(1)); // a driver may leave any id in the first descriptor
  writePackedDesc(r, 2, BUF + 16, 8, 1, WRITE | AV(1));
  const e = r.device.element()!;
  assert.deepEqual(e, {
    head: 1,
    availIndex: encodeRingIndex(1, 1),
    readable: 4,
    writable: 8,
    descriptorCount: 2,
    descriptors: [
      { index: 1, addr: BUF, len: 4, flags: NEXT | AV(1), id: 7 },
      { index: 2, addr: BUF + 16, len: 8, flags: WRITE | AV(1), id: 1 },
    ],
  });
  assert.equal(r.device.descriptorsInFlight, 1, 'the query took nothing');
  assert.throws(() => r.device.element(2), rangeError('a packed ring is decoded from its next available position (1), not 2'));
});

/** A packed ring at PBASE plus 4 KiB of guest memory above 4 GiB (at HIGH). */
const HIGH = 0x2_0000_1000;
function ringWithHighMemory(size: number, options: Partial<PackedDeviceQueueOptions> = {}) {
  const low = new SharedArrayBuffer(0x10000);
  const high = new SharedArrayBuffer(0x1000);
  const memory = new GuestMemory([
    { guestAddr: PBASE, size: low.byteLength, buffer: low },
    { guestAddr: HIGH, size: high.byteLength, buffer: high },
  ]);
  const ring = packedRingLayout(PBASE, size);
  const queue = new PackedDeviceQueue(memory, packedRingViewsFromGuest(memory, ring), { eventIdx: false, indirect: true, ...options });
  return { memory, ring, device: queue, high: new Uint8Array(high) };
}

test('indirect table entries carry 64-bit addresses (§2.8.13): a buffer above 4 GiB, walked and shown by element()', () => {
  const r = ringWithHighMemory(4);
  const table = PBASE + 0x4000;
  writePackedDesc(r, 0, PBASE + 0x8000, 4, 0x1234, 0x0100, table); // reserved id and flag bits (§2.8.7): shown, ignored
  writePackedDesc(r, 1, HIGH + 0x10, 0x22, 0x2345, WRITE | 0x8000, table);
  writePackedDesc(r, 0, table, 32, 2, INDIRECT | AV(1));
  const e = r.device.element()!;
  assert.equal(e.descriptors.length, 1);
  assert.deepEqual(e.descriptors[0], {
    index: 0,
    addr: table,
    len: 32,
    flags: INDIRECT | AV(1),
    id: 2,
    table: [
      { index: 0, addr: PBASE + 0x8000, len: 4, flags: 0x0100, id: 0x1234 },
      { index: 1, addr: HIGH + 0x10, len: 0x22, flags: WRITE | 0x8000, id: 0x2345 },
    ],
  });
  const chain = r.device.pop()!;
  assert.deepEqual([chain.head, chain.readableLength, chain.writableLength, chain.descriptorCount], [2, 4, 0x22, 3]);
  chain.writeUint32(0, 0xdeadbeef);
  assert.deepEqual([...r.high.subarray(0x10, 0x14)], [0xef, 0xbe, 0xad, 0xde], 'written above 4 GiB');
});

// ------------------------------------------------------------------------------------------
// completing buffers: argument errors are RangeErrors (device-model bugs), the queue unchanged

test('addUsed / pushUsed refuse ids outside the ring or not in flight, and a len above the writable bytes', () => {
  const r = makePackedRing(4, { noDriver: true });
  one(r, 0, 3);
  const c = r.device.pop()!;
  for (const id of [-1, 4, 2]) assert.throws(() => r.device.addUsed(id, 0), rangeError(`used id ${id} is not a buffer in flight`));
  assert.throws(() => r.device.pushUsed(c, 9), rangeError('used len 9 exceeds the chain\'s 8 writable bytes'));
  assert.deepEqual([r.device.nextUsed, r.device.descriptorsInFlight, r.device.idsInFlight()], [0x8000, 1, [3]], 'nothing moved');
  r.device.pushUsed(c, 8);
  assert.deepEqual(readPackedDesc(r, 0), { addr: BUF, len: 8, id: 3, flags: WRITE | AV(1) | 0x8000 });
});

// ------------------------------------------------------------------------------------------
// chainAt / keepLists

test('chainAt refuses ids outside the ring and ids not in flight, also when lists are kept', () => {
  const r = makePackedRing(4, { noDriver: true });
  const q = device(r, { keepLists: true });
  for (const id of [-1, 4, 0]) {
    assert.throws(() => q.chainAt(id), virtioError('PACKED_ID_INVALID', `buffer id ${id} is not in flight (PACKED_ID_INVALID, virtio 1.2 §2.8.21.1)`));
  }
  one(r, 0, 0);
  device(r).pop();
  const plain = device(r);
  assert.equal(plain.pop()!.head, 0);
  assert.throws(
    () => plain.chainAt(0),
    virtioError(
      'PACKED_ID_INVALID',
      'buffer id 0 is in flight but its list was not kept (keepLists): it cannot be walked again (PACKED_ID_INVALID, virtio 1.2 §2.8.22)',
    ),
  );
});

test('the kept copy of a list survives the used descriptors written over it and the lists taken after it', () => {
  const r = makePackedRing(4, { noDriver: true });
  const q = device(r, { keepLists: true });
  writePackedDesc(r, 0, BUF, 4, 0, NEXT | AV(1)); // A: positions 0-1, id 0
  writePackedDesc(r, 1, BUF + 16, 8, 0, WRITE | AV(1));
  one(r, 2, 1); // B: position 2, id 1
  const a = q.pop()!;
  assert.equal(q.pop()!.head, 1);
  q.pushUsed(q.chainAt(1), 8); // B's used descriptor goes to position 0, over A's first descriptor
  one(r, 3, 1); // C: position 3, the list right before A's positions
  assert.equal(q.pop()!.head, 1);
  const again = q.chainAt(a.head);
  assert.deepEqual(
    [again.head, again.descriptorCount, again.readableLength, again.writableLength],
    [0, 2, 4, 8],
    'A as it was taken, not the used descriptor now at its position',
  );
});

// ------------------------------------------------------------------------------------------
// status and notification bookkeeping

test('status: the used position of the last notification decision, with its wrap counter', () => {
  const r = makePackedRing(4, { noDriver: true });
  assert.deepEqual([r.device.status().signalledUsed, r.device.status().signalledUsedValid], [0x8000, false]);
  const complete = (n: number, lap: number) => {
    for (let k = 0; k < n; k++) {
      const pos = (r.device.nextAvail & 0x7fff);
      one(r, pos, 0, lap);
      r.device.pushUsed(r.device.pop()!, 0);
    }
  };
  complete(4, 1);
  r.device.needsNotification();
  assert.deepEqual([r.device.status().signalledUsed, r.device.status().signalledUsedValid], [encodeRingIndex(0, 0), true], 'position 0 of lap 0');
  complete(1, 0);
  assert.equal(r.device.status().signalledUsed, encodeRingIndex(0, 0), 'not moved without a decision');
  r.device.needsNotification();
  assert.equal(r.device.status().signalledUsed, encodeRingIndex(1, 0));
  complete(3, 0);
  r.device.needsNotification();
  assert.equal(r.device.status().signalledUsed, encodeRingIndex(0, 1), 'back in lap 1');
});

test('status: event flags and DESC offsets of both event suppression structures (§2.8.10, §2.8.14)', () => {
  const r = makePackedRing(4, { noDriver: true, eventIdx: true });
  const s0 = r.device.status();
  assert.deepEqual([s0.availFlags, s0.usedFlags, s0.usedEvent, s0.availEvent, s0.kicksEnabled], [0, 0, null, null, true]);
  r.memory.writeU32(r.ring.driver, eventWord(encodeRingIndex(2, 0), RingEventFlags.DESC));
  r.device.disableNotifications();
  const s1 = r.device.status();
  assert.deepEqual([s1.availFlags, s1.usedFlags, s1.usedEvent, s1.availEvent, s1.kicksEnabled], [2, 1, encodeRingIndex(2, 0), null, false]);
  assert.equal(r.device.usedEventWord(), eventWord(encodeRingIndex(2, 0), RingEventFlags.DESC));
  assert.equal(r.device.availFlagsWord(), RingEventFlags.DESC);
  one(r, 0, 0);
  r.device.pop();
  assert.equal(r.device.enableNotifications(), false);
  const s2 = r.device.status();
  assert.deepEqual([s2.usedFlags, s2.availEvent, s2.kicksEnabled], [2, encodeRingIndex(1, 1), true], 'DESC at the next position');
  r.memory.writeU32(r.ring.driver, eventWord(0, RingEventFlags.DISABLE));
  assert.deepEqual([r.device.status().availFlags, r.device.status().usedEvent, r.device.availFlagsWord()], [1, null, 1]);
});

test('DESC mode: two full laps used since the last decision pass every position, the event’s too (§2.8.10)', () => {
  const r = makePackedRing(2, { noDriver: true, eventIdx: true });
  r.memory.writeU32(r.ring.driver, eventWord(encodeRingIndex(1, 0), RingEventFlags.DESC));
  assert.equal(r.device.needsNotification(), true, 'the first decision after a start');
  let lap = 1;
  for (let k = 0; k < 4; k++) {
    one(r, k % 2, 0, lap);
    r.device.pushUsed(r.device.pop()!, 0);
    if (k % 2 === 1) lap ^= 1;
  }
  // Back at the same linear index: the window [old, new) alone is empty, the count says 4 = 2 * size.
  assert.equal(r.device.needsNotification(), true);
  assert.equal(r.device.needsNotification(), false, 'nothing used since');
});

// ------------------------------------------------------------------------------------------
// the 2^32-byte limit of a list (§2.8.17)

test('a list of exactly 2^32 bytes is accepted, one byte more is refused, readable and writable counted together', () => {
  const GiB = 1 << 30;
  const big = new SharedArrayBuffer(GiB); // four 1 GiB regions share it; never touched
  const ringBuf = new SharedArrayBuffer(0x10000);
  const memory = new GuestMemory([{ guestAddr: 0, size: ringBuf.byteLength, buffer: ringBuf }]);
  for (let i = 1; i <= 4; i++) memory.addRegion({ guestAddr: i * 2 * GiB, size: GiB, buffer: big });
  memory.addRegion({ guestAddr: 0x100000, size: 16, buffer: new SharedArrayBuffer(16) });
  const ring = packedRingLayout(0, 8);
  const make = () => new PackedDeviceQueue(memory, packedRingViewsFromGuest(memory, ring), { eventIdx: false, indirect: false });
  const r = { memory, ring };
  // 2 GiB readable + 2 GiB writable = 2^32 bytes
  for (let i = 0; i < 4; i++) writePackedDesc(r, i, (i + 1) * 2 * GiB, GiB, 0, NEXT | (i >= 2 ? WRITE : 0) | AV(1));
  writePackedDesc(r, 3, 4 * 2 * GiB, GiB, 0, WRITE | AV(1));
  const c = make().pop()!;
  assert.deepEqual([c.readableLength, c.writableLength], [2 * GiB, 2 * GiB]);
  // one more writable byte
  writePackedDesc(r, 3, 4 * 2 * GiB, GiB, 0, NEXT | WRITE | AV(1));
  writePackedDesc(r, 4, 0x100000, 1, 0, WRITE | AV(1));
  assert.throws(
    () => make().pop(),
    virtioError('DESC_CHAIN_TOO_LONG', 'list is longer than 2^32 bytes in total (DESC_CHAIN_TOO_LONG, virtio 1.2 §2.8.17)'),
  );
});

test('the first decision after a start notifies in DESC mode only: DISABLE still means no interrupt (§2.8.10)', () => {
  const r = makePackedRing(4, { noDriver: true, eventIdx: true });
  r.memory.writeU32(r.ring.driver, eventWord(0, RingEventFlags.DISABLE));
  one(r, 0, 0);
  r.device.pushUsed(r.device.pop()!, 0);
  assert.equal(r.device.needsNotification(), false);
  r.memory.writeU32(r.ring.driver, eventWord(0, RingEventFlags.ENABLE));
  one(r, 1, 0);
  r.device.pushUsed(r.device.pop()!, 0);
  assert.equal(r.device.needsNotification(), true);
});
