/**
 * The driver half of the packed virtqueue (virtio 1.2 §2.8) on its own terms: what add() writes
 * into the ring for each buffer shape (direct, indirect, its fallbacks, 64-bit addresses), when
 * batched lists become visible, its argument errors, the used descriptors it refuses, the Driver
 * Event Suppression word it keeps (§2.8.10) and its kick decision over a whole lap.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescFlags, RingEventFlags } from '../../src/virtio/constants.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { PackedDeviceQueue } from '../../src/virtio/packed-device-queue.js';
import { PackedDriverQueue, type PackedDriverQueueOptions } from '../../src/virtio/packed-driver-queue.js';
import { encodeRingIndex, eventWord, packedRingLayout, packedRingViewsFromGuest } from '../../src/virtio/packed-ring.js';
import { AV, PBASE, US, makePackedRing, readPackedDesc, writePackedDesc, type PackedRing } from '../fuzz/packed-harness.js';

const { NEXT, WRITE, INDIRECT } = DescFlags;

/** A driver with its own options on the ring of `r` (made with noDriver). */
function driverOn(r: PackedRing, options: Partial<PackedDriverQueueOptions> = {}): PackedDriverQueue<number> {
  return new PackedDriverQueue<number>(r.memory, packedRingViewsFromGuest(r.memory, r.ring), { eventIdx: false, indirect: false, ...options });
}

/** Device: take one available list and return it used with `len`. */
function completeOne(r: PackedRing, len = 0): void {
  const c = r.device.pop();
  assert.ok(c, 'a list is available');
  r.device.pushUsed(c, len);
}

test('the queue index is the one given, 0 by default', () => {
  const r = makePackedRing(4, { noDriver: true });
  assert.equal(driverOn(r).index, 0);
  assert.equal(driverOn(r, { index: 3 }).index, 3);
});

test('add() refuses bad arguments with exact errors and leaves the queue as it was', () => {
  const r = makePackedRing(2);
  const a = r.alloc(64);
  const state = () => [r.driver.numFree, r.driver.inFlight, r.driver.nextAvail];
  assert.throws(() => r.driver.add([{ addr: a, len: 1 }], [], undefined as unknown as number), { name: 'TypeError', message: 'token must not be undefined' });
  assert.throws(() => r.driver.add([], [], 1), { name: 'RangeError', message: 'a buffer needs at least one element' });
  // checked before "no room": a list that can never fit must not make the caller wait forever
  assert.throws(() => r.driver.add([{ addr: a, len: 1 }, { addr: a, len: 1 }], [{ addr: a, len: 1 }], 1), {
    name: 'RangeError',
    message: 'list of 3 is longer than the queue size 2',
  });
  assert.deepEqual(state(), [2, 0, 0x8000]);
  assert.ok(r.driver.add([{ addr: a, len: 1 }], [], 1), 'the queue still works');
  assert.equal(readPackedDesc(r, 0).id, 0, 'buffer id 0 is the first handed out');
});

test('indirect descriptors (§2.8.7): only for lists of several elements, only with room, else a direct list', () => {
  // a one-element buffer gains nothing from a table: it goes as one direct descriptor
  const r = makePackedRing(2, { indirect: true });
  const a = r.alloc(64);
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 1));
  assert.deepEqual(readPackedDesc(r, 0), { addr: a, len: 4, id: 0, flags: AV(1) });
  assert.equal(r.liveTables.size, 0, 'no table allocated');
  // a full ring: false, and no table allocated for a buffer that cannot go in
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [{ addr: a + 8, len: 4 }], 2));
  assert.equal(readPackedDesc(r, 1).flags, AV(1) | INDIRECT);
  assert.equal(r.driver.numFree, 0);
  assert.equal(r.driver.add([{ addr: a, len: 4 }], [{ addr: a + 8, len: 4 }], 3), false);
  assert.equal(r.liveTables.size, 1);
  assert.deepEqual([r.driver.inFlight, r.driver.nextAvail], [2, encodeRingIndex(0, 0)]);

  // an allocator out of memory (null): the buffer goes as a direct list
  const s = makePackedRing(4, { indirect: true, noDriver: true });
  let asked = 0;
  const driver = driverOn(s, { indirect: true, allocIndirect: () => (asked++, null) });
  const b = s.alloc(64);
  assert.ok(driver.add([{ addr: b, len: 4 }], [{ addr: b + 8, len: 8 }], 7));
  assert.equal(asked, 1);
  assert.deepEqual(readPackedDesc(s, 0), { addr: b, len: 4, id: 0, flags: AV(1) | NEXT });
  assert.deepEqual(readPackedDesc(s, 1), { addr: b + 8, len: 8, id: 0, flags: AV(1) | WRITE });
  const c = s.device.pop()!;
  assert.deepEqual([c.readableLength, c.writableLength, c.descriptorCount], [4, 8, 2]);
});

test('an indirect table at guest address 0 is handed back to freeIndirect like any other', () => {
  const buffer = new SharedArrayBuffer(0x4000);
  const memory = new GuestMemory([{ guestAddr: 0, size: buffer.byteLength, buffer }]);
  const ring = packedRingLayout(0x1000, 4);
  const freed: number[] = [];
  const driver = new PackedDriverQueue<number>(memory, packedRingViewsFromGuest(memory, ring), {
    eventIdx: false,
    indirect: true,
    allocIndirect: () => 0,
    freeIndirect: (t) => freed.push(t),
  });
  const device = new PackedDeviceQueue(memory, packedRingViewsFromGuest(memory, ring), { eventIdx: false, indirect: true });
  assert.ok(driver.add([{ addr: 0x2000, len: 4 }], [{ addr: 0x2008, len: 4 }], 5));
  const c = device.pop()!;
  assert.deepEqual([c.readableLength, c.writableLength], [4, 4]);
  device.pushUsed(c, 4);
  assert.deepEqual(driver.getUsed(), { token: 5, len: 4 });
  assert.deepEqual(freed, [0]);
});

/** Ring and tables at PBASE, buffers in a region above 4 GiB whose address has both halves non-zero. */
const HIGH = 0x3_8765_4000;
function highRing(indirect: boolean): { r: PackedRing; driver: PackedDriverQueue<number>; high: Uint8Array } {
  const low = new SharedArrayBuffer(0x10000);
  const highBuf = new SharedArrayBuffer(0x1000);
  const memory = new GuestMemory([
    { guestAddr: PBASE, size: low.byteLength, buffer: low },
    { guestAddr: HIGH, size: highBuf.byteLength, buffer: highBuf },
  ]);
  const ring = packedRingLayout(PBASE, 4);
  const r = { memory, ring: { ...ring, bytes: 0 } } as unknown as PackedRing;
  let table = HIGH + 0x800;
  const driver = new PackedDriverQueue<number>(memory, packedRingViewsFromGuest(memory, ring), {
    eventIdx: false,
    indirect,
    allocIndirect: (n) => ((table += n), table - n),
  });
  r.device = new PackedDeviceQueue(memory, packedRingViewsFromGuest(memory, ring), { eventIdx: false, indirect });
  return { r, driver, high: new Uint8Array(highBuf) };
}

test('addresses above 4 GiB (§2.8.13: 64-bit addr): ring descriptors and indirect table entries carry both halves', () => {
  {
    const { r, driver, high } = highRing(false);
    high.set([1, 2, 3, 4], 0x10);
    assert.ok(driver.add([{ addr: HIGH + 0x10, len: 4 }], [{ addr: HIGH + 0x20, len: 4 }], 1));
    assert.deepEqual([r.memory.readU32(PBASE), r.memory.readU32(PBASE + 4)], [0x8765_4010, 3], 'addr low word, high word');
    assert.equal(readPackedDesc(r, 1).addr, HIGH + 0x20);
    const c = r.device.pop()!;
    assert.equal(c.readUint32(0), 0x04030201);
    c.writeUint32(0, 0xcafef00d);
    assert.deepEqual([...high.subarray(0x20, 0x24)], [0x0d, 0xf0, 0xfe, 0xca]);
  }
  {
    const { r, driver, high } = highRing(true);
    high.set([5, 6, 7, 8], 0x10);
    assert.ok(driver.add([{ addr: HIGH + 0x10, len: 4 }], [{ addr: HIGH + 0x20, len: 4 }], 1));
    const d = readPackedDesc(r, 0);
    assert.deepEqual(d, { addr: HIGH + 0x800, len: 32, id: 0, flags: AV(1) | INDIRECT }, 'the table itself above 4 GiB');
    const entry = (k: number) => [0, 4, 8, 12, 14].map((o, i) => (i < 3 ? r.memory.readU32(d.addr + 16 * k + o) : r.memory.readU16(d.addr + 16 * k + o)));
    assert.deepEqual(entry(0), [0x8765_4010, 3, 4, 0, 0], 'addr lo, addr hi, len, id (reserved), flags');
    assert.deepEqual(entry(1), [0x8765_4020, 3, 4, 0, WRITE]);
    const c = r.device.pop()!;
    assert.equal(c.readUint32(0), 0x08070605);
  }
});

test('batched publishing: a publishing add exposes the earlier unpublished lists too; publish() with nothing pending does nothing', () => {
  const r = makePackedRing(8);
  const a = r.alloc(64);
  r.driver.publish(); // nothing added yet
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 1, false));
  assert.ok(r.driver.add([{ addr: a + 4, len: 4 }], [], 2, false));
  assert.equal(r.device.pop(), null, 'nothing visible before a publishing add');
  assert.ok(r.driver.add([{ addr: a + 8, len: 4 }], [], 3));
  assert.deepEqual([0, 1, 2].map((i) => readPackedDesc(r, i).flags), [AV(1), AV(1), AV(1)]);
  const before = [...r.bytes.subarray(r.ring.desc - PBASE, r.ring.desc - PBASE + r.ring.bytes)];
  r.driver.publish();
  r.driver.publish();
  assert.deepEqual([...r.bytes.subarray(r.ring.desc - PBASE, r.ring.desc - PBASE + r.ring.bytes)], before, 'the ring is unchanged');
  assert.deepEqual([r.device.pop()!.head, r.device.pop()!.head, r.device.pop()!.head], [0, 1, 2]);
  assert.equal(r.device.pop(), null);
});

test('pendingUsed(): 1 while a used descriptor waits, 0 when collected or when the queue is broken', () => {
  const r = makePackedRing(4);
  const a = r.alloc(64);
  assert.equal(r.driver.pendingUsed(), 0);
  r.driver.add([{ addr: a, len: 4 }], [], 1);
  r.driver.add([{ addr: a, len: 4 }], [], 2);
  assert.equal(r.driver.pendingUsed(), 0, 'available is not used');
  completeOne(r);
  completeOne(r);
  assert.equal(r.driver.pendingUsed(), 1, 'a packed ring cannot count without walking');
  r.driver.getUsed();
  assert.equal(r.driver.pendingUsed(), 1);
  r.driver.getUsed();
  assert.equal(r.driver.pendingUsed(), 0);
});

test('used descriptors the driver refuses (§2.8.22, §2.8.4): exact messages, and the queue is broken', () => {
  const check = (id: number, len: number, flags: number, code: string, message: string, section: string) => {
    const r = makePackedRing(4);
    const a = r.alloc(64);
    assert.ok(r.driver.add([{ addr: a, len: 4 }], [{ addr: a + 8, len: 8 }], 1));
    writePackedDesc(r, 0, 0, len, id, flags | US(1));
    assert.throws(() => r.driver.getUsed(), (e: unknown) => {
      assert.ok(e instanceof VirtioError);
      assert.equal(e.code, code);
      assert.equal(e.section, `virtio 1.2 ${section}`);
      assert.equal(e.message, `${message} (${code}, virtio 1.2 ${section})`);
      return true;
    });
    assert.equal(r.driver.isBroken, true);
    assert.equal(r.driver.pendingUsed(), 0, 'a broken queue shows nothing more');
    assert.equal(r.driver.getUsed(), null);
  };
  check(2, 0, 0, 'USED_ID_INVALID', 'device returned buffer id 2, which is not a buffer in flight', '§2.8.22');
  check(4, 0, 0, 'USED_ID_INVALID', 'device returned buffer id 4, which is not a buffer in flight', '§2.8.22');
  check(0, 9, WRITE, 'USED_LEN_INVALID', 'device returned len 9 for id 0, which has 8 device-writable bytes', '§2.8.4');
});

test('Driver Event Suppression (§2.8.10) with EVENT_IDX: DESC at the next used position while callbacks are on, DISABLE kept while off', () => {
  const r = makePackedRing(4, { eventIdx: true });
  const a = r.alloc(64);
  const driverEvent = () => r.memory.readU32(r.ring.driver);
  const cycle = (t: number) => {
    assert.ok(r.driver.add([{ addr: a, len: 4 }], [], t));
    completeOne(r);
    assert.equal(r.driver.getUsed()?.token, t);
  };
  assert.equal(driverEvent(), 0, 'a new ring: ENABLE');
  cycle(1);
  assert.equal(driverEvent(), eventWord(encodeRingIndex(1, 1), RingEventFlags.DESC), 'callbacks are on from the start');
  r.driver.disableCallbacks();
  cycle(2);
  assert.equal(driverEvent(), eventWord(0, RingEventFlags.DISABLE), 'collecting does not re-arm disabled callbacks');
  assert.equal(r.driver.enableCallbacks(), true);
  assert.equal(driverEvent(), eventWord(encodeRingIndex(2, 1), RingEventFlags.DESC));
  cycle(3);
  assert.equal(driverEvent(), eventWord(encodeRingIndex(3, 1), RingEventFlags.DESC), 'on again: follows the used position');
  // detachUnused starts over with callbacks on (§2.8.13: a new ring)
  r.driver.disableCallbacks();
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 4));
  assert.deepEqual(r.driver.detachUnused(), [4]);
  assert.equal(driverEvent(), 0);
  const device = new PackedDeviceQueue(r.memory, packedRingViewsFromGuest(r.memory, r.ring), { eventIdx: true, indirect: false });
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 5));
  device.pushUsed(device.pop()!, 0);
  assert.equal(r.driver.getUsed()?.token, 5);
  assert.equal(driverEvent(), eventWord(encodeRingIndex(1, 1), RingEventFlags.DESC));
});

test('Driver Event Suppression without EVENT_IDX: collecting buffers leaves ENABLE or DISABLE as the driver set it (DESC is not valid, §2.8.10)', () => {
  const r = makePackedRing(4);
  const a = r.alloc(64);
  const driverEvent = () => r.memory.readU32(r.ring.driver);
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 1));
  completeOne(r);
  assert.equal(r.driver.getUsed()?.token, 1);
  assert.equal(driverEvent(), eventWord(0, RingEventFlags.ENABLE));
  r.driver.disableCallbacks();
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 2));
  completeOne(r);
  assert.equal(r.driver.getUsed()?.token, 2);
  assert.equal(driverEvent(), eventWord(0, RingEventFlags.DISABLE));
});

test('kick decision with EVENT_IDX: 2 × size descriptors since the last decision pass every position, so the driver kicks', () => {
  const r = makePackedRing(2, { eventIdx: true });
  const a = r.alloc(64);
  // the device asks for position 0 of lap wrap 1, where the driver stands now and again after 2 laps
  r.memory.writeU32(r.ring.device, eventWord(encodeRingIndex(0, 1), RingEventFlags.DESC));
  assert.equal(r.driver.needsKick(), false, 'nothing added');
  for (let t = 0; t < 4; t++) {
    assert.ok(r.driver.add([{ addr: a, len: 4 }], [], t));
    completeOne(r);
    assert.equal(r.driver.getUsed()?.token, t);
  }
  assert.equal(r.driver.nextAvail, encodeRingIndex(0, 1), 'back where it started, two laps on');
  assert.equal(r.driver.needsKick(), true);
  // one lap at a time: the window decides again
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 4));
  completeOne(r);
  r.driver.getUsed();
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 5));
  assert.equal(r.driver.needsKick(), true, 'positions 0, 1 of lap wrap 1 include the event');
  completeOne(r);
  r.driver.getUsed();
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 6));
  completeOne(r);
  r.driver.getUsed();
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 7));
  assert.equal(r.driver.needsKick(), false, 'positions 0, 1 of lap wrap 0 do not');
});
