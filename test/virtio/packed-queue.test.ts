/**
 * The packed virtqueue (virtio 1.2 §2.8), both halves, from the spec's rules and examples:
 * layout, wrap counters over several laps, lists, indirect tables, out-of-order completion,
 * batched publishing, event suppression in each mode, and the saved base.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescFlags, PackedDescFlags, RingEventFlags } from '../../src/virtio/constants.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { PackedDeviceQueue } from '../../src/virtio/packed-device-queue.js';
import {
  checkPackedAlignment,
  checkPackedQueueSize,
  decodeRingIndex,
  encodeRingIndex,
  eventInWindow,
  eventWord,
  linearIndex,
  packedRingLayout,
  packedRingViewsFromGuest,
  packedVringBase,
  parsePackedVringBase,
} from '../../src/virtio/packed-ring.js';
import { AV, makePackedRing, readPackedDesc, writePackedDesc, type PackedRing } from '../fuzz/packed-harness.js';

const { NEXT, WRITE, INDIRECT } = DescFlags;
const { AVAIL, USED } = PackedDescFlags;

const pools = new WeakMap<PackedRing, number[]>();

/** Adds a 4-byte readable + 8-byte writable buffer carrying `token` (buffer memory reused per token mod 64). */
function addPair(r: PackedRing, token: number, publish = true): boolean {
  let pool = pools.get(r);
  if (!pool) pools.set(r, (pool = Array.from({ length: 64 }, () => r.alloc(16))));
  const out = pool[token % 64]!;
  r.memory.writeU32(out, token);
  return r.driver.add([{ addr: out, len: 4 }], [{ addr: out + 4, len: 8 }], token, publish);
}

/** Device: serve everything available, answering the readable u32 + 1; returns the tokens seen. */
function serve(r: PackedRing): number[] {
  const seen: number[] = [];
  let chain;
  while ((chain = r.device.pop()) !== null) {
    const v = chain.readUint32(0);
    seen.push(v);
    chain.writeUint32(0, v + 1);
    r.device.addUsed(chain.head, 4);
  }
  r.device.publishUsed();
  return seen;
}

/** Device: take everything available and return it with used len 0. */
function serveAny(r: PackedRing): number {
  let n = 0;
  let c;
  while ((c = r.device.pop()) !== null) {
    r.device.addUsed(c.head, 0);
    n++;
  }
  r.device.publishUsed();
  return n;
}

/** Driver: collect every used buffer, checking nothing. */
function drainAny(r: PackedRing): number[] {
  const tokens: number[] = [];
  let u;
  while ((u = r.driver.getUsed()) !== null) tokens.push(u.token);
  return tokens;
}

/** Driver: every used buffer's token, checking the answer in its writable part. */
function drain(r: PackedRing): number[] {
  const tokens: number[] = [];
  let u;
  while ((u = r.driver.getUsed()) !== null) {
    assert.equal(u.len, 4);
    const out = pools.get(r)![u.token % 64]!;
    assert.equal(r.memory.readU32(out + 4), u.token + 1, `answer for token ${u.token}`);
    tokens.push(u.token);
  }
  return tokens;
}

test('layout: sizes, alignment table of §2.8.10.1, queue sizes', () => {
  const l = packedRingLayout(0x1000, 3);
  assert.deepEqual(l, { size: 3, desc: 0x1000, driver: 0x1030, device: 0x1034, bytes: 56 });
  for (const s of [1, 2, 3, 255, 256, 1000, 32768]) assert.doesNotThrow(() => checkPackedQueueSize(s));
  for (const s of [0, -1, 1.5, 32769, 65536]) {
    assert.throws(() => checkPackedQueueSize(s), (e: unknown) => e instanceof VirtioError && e.code === 'QUEUE_SIZE_INVALID');
  }
  assert.throws(() => checkPackedQueueSize(3, { powerOfTwo: true }), /QUEUE_SIZE_INVALID/);
  assert.throws(() => checkPackedAlignment({ size: 4, desc: 0x1008, driver: 0x2000, device: 0x2004 }), /QUEUE_ALIGNMENT/);
  assert.throws(() => checkPackedAlignment({ size: 4, desc: 0x1000, driver: 0x2002, device: 0x2004 }), /QUEUE_ALIGNMENT/);
  assert.throws(() => checkPackedAlignment({ size: 4, desc: 0x1000, driver: 0x2000, device: 0x2006 }), /QUEUE_ALIGNMENT/);
  const memory = new GuestMemory([{ guestAddr: 0, size: 0x100, buffer: new SharedArrayBuffer(0x100) }]);
  assert.throws(() => packedRingViewsFromGuest(memory, packedRingLayout(0, 16)), /MEM_OUT_OF_RANGE/);
});

test('index with wrap bit 15, linear indices and the vhost-user base', () => {
  assert.equal(encodeRingIndex(5, 1), 0x8005);
  assert.equal(encodeRingIndex(0x7fff, 0), 0x7fff);
  assert.deepEqual(decodeRingIndex(0x8005), { pos: 5, wrap: 1 });
  assert.equal(packedVringBase(0x8003, 0x0001), 0x0001_8003);
  assert.deepEqual(parsePackedVringBase(0x8001_0003), { nextAvail: 0x0003, nextUsed: 0x8001 });
  assert.equal(packedVringBase(0xffff, 0xffff), 0xffff_ffff);
  assert.equal(linearIndex(3, 1, 4), 3);
  assert.equal(linearIndex(0, 0, 4), 4);
  // window [lin 3, lin 5) of a 4-ring = positions 3 (wrap 1), 0 (wrap 0)
  assert.equal(eventInWindow(encodeRingIndex(3, 1), 3, 5, 2, 4), true);
  assert.equal(eventInWindow(encodeRingIndex(0, 0), 3, 5, 2, 4), true);
  assert.equal(eventInWindow(encodeRingIndex(0, 1), 3, 5, 2, 4), false, 'same position, other lap');
  assert.equal(eventInWindow(encodeRingIndex(1, 0), 3, 5, 2, 4), false);
  assert.equal(eventInWindow(encodeRingIndex(9, 1), 3, 5, 2, 4), false, 'an offset outside the ring never fires');
  assert.equal(eventInWindow(encodeRingIndex(2, 0), 3, 3, 8, 4), true, '2 * size descriptors cover every position');
});

test('one buffer goes round; the ring shows AVAIL/USED exactly as §2.8.1 says', () => {
  const r = makePackedRing(4);
  assert.equal(r.device.pop(), null, 'a zero-initialized ring has nothing available');
  assert.ok(addPair(r, 41));
  const d0 = readPackedDesc(r, 0);
  const d1 = readPackedDesc(r, 1);
  assert.equal(d0.flags, AVAIL | NEXT, 'first: AVAIL = wrap counter 1, USED = its inverse');
  assert.equal(d1.flags, AVAIL | WRITE);
  assert.equal(d1.id, d0.id, 'buffer id in the last descriptor (and the first)');
  const chain = r.device.pop()!;
  assert.equal(chain.head, d1.id);
  assert.deepEqual([chain.readableLength, chain.writableLength, chain.descriptorCount], [4, 8, 2]);
  assert.equal(r.device.pop(), null);
  assert.equal(r.device.nextAvail, encodeRingIndex(2, 1));
  chain.writeUint16(0, 0xbeef);
  r.device.pushUsed(chain, 2);
  const used = readPackedDesc(r, 0);
  assert.equal(used.flags, AVAIL | USED | WRITE, 'used: AVAIL = USED = device wrap counter; WRITE: data written');
  assert.equal(used.id, d1.id);
  assert.equal(used.len, 2);
  assert.equal(r.device.nextUsed, encodeRingIndex(2, 1), 'the device skipped the list’s 2 descriptors');
  assert.deepEqual(r.driver.getUsed(), { token: 41, len: 2 });
  assert.equal(r.driver.getUsed(), null);
  assert.equal(r.driver.numFree, 4);
  assert.equal(r.driver.inFlight, 0);
});

test('a used descriptor without WRITE reports len 0 (§2.8.4: len reserved)', () => {
  const r = makePackedRing(4);
  addPair(r, 7);
  const chain = r.device.pop()!;
  r.device.pushUsed(chain, 0);
  assert.equal(readPackedDesc(r, 0).flags & WRITE, 0);
  r.memory.writeU32(r.ring.desc + 8, 12345); // garbage in a reserved field
  assert.deepEqual(r.driver.getUsed(), { token: 7, len: 0 });
});

for (const size of [1, 2, 3, 5, 256, 32768]) {
  test(`wrap-around: ${size}-entry ring, several laps, nothing lost or duplicated`, () => {
    const r = makePackedRing(size, { memBytes: size * 20 + (1 << 16) });
    const laps = size >= 256 ? 3 : 9;
    const total = laps * size + Math.ceil(size / 2);
    const batch = Math.max(1, Math.floor(size / 3));
    const data = r.alloc(4 * batch);
    const seen: number[] = [];
    let token = 0;
    for (let rounds = 0; token < total; rounds++) {
      assert.ok(rounds <= total, 'no progress');
      // one-descriptor buffers, so positions advance one per buffer; published as a batch
      for (let n = 0; n < batch && token < total; n++, token++) {
        r.memory.writeU32(data + 4 * n, token);
        assert.ok(r.driver.add([{ addr: data + 4 * n, len: 4 }], [], token, false), `add ${token}`);
      }
      r.driver.publish();
      let c;
      while ((c = r.device.pop()) !== null) {
        seen.push(c.readUint32(0));
        r.device.addUsed(c.head, 0);
      }
      r.device.publishUsed();
      let u;
      while ((u = r.driver.getUsed()) !== null) assert.equal(u.token, seen[u.token]);
    }
    assert.equal(seen.length, total);
    for (let i = 0; i < total; i++) assert.equal(seen[i], i);
    const pos = total % size;
    const wrap = Math.floor(total / size) % 2 === 0 ? 1 : 0;
    assert.equal(r.device.nextAvail, encodeRingIndex(pos, wrap));
    assert.equal(r.device.nextUsed, encodeRingIndex(pos, wrap));
    assert.equal(r.driver.nextAvail, encodeRingIndex(pos, wrap));
    assert.equal(r.driver.nextUsed, encodeRingIndex(pos, wrap));
    assert.equal(r.driver.numFree, size);
  });
}

const dataBase = new WeakMap<PackedRing, number>();
/** A 4-byte slot per token (mod 4096) after the ring. */
function PBASE_DATA(r: PackedRing, token: number): number {
  let b = dataBase.get(r);
  if (b === undefined) dataBase.set(r, (b = r.alloc(4 * 4096)));
  return b + 4 * (token % 4096);
}

test('a list crossing the end of the ring: the wrapped descriptors carry the toggled wrap counter', () => {
  const r = makePackedRing(4);
  for (let t = 0; t < 3; t++) {
    assert.ok(r.driver.add([{ addr: PBASE_DATA(r, t), len: 4 }], [], t));
  }
  assert.equal(serveAny(r), 3);
  assert.deepEqual(drainAny(r), [0, 1, 2]);
  // positions 3, 0, 1: a 3-descriptor list from position 3 wraps after its first descriptor
  const a = r.alloc(64);
  assert.ok(r.driver.add([{ addr: a, len: 8 }], [{ addr: a + 8, len: 8 }, { addr: a + 16, len: 8 }], 99));
  assert.equal(readPackedDesc(r, 3).flags, AVAIL | NEXT, 'lap 1: AVAIL set');
  assert.equal(readPackedDesc(r, 0).flags, USED | WRITE | NEXT, 'lap 2: AVAIL clear, USED set (inverse)');
  assert.equal(readPackedDesc(r, 1).flags, USED | WRITE);
  const chain = r.device.pop()!;
  assert.deepEqual([chain.readable.length, chain.writable.length], [1, 2]);
  assert.equal(r.device.nextAvail, encodeRingIndex(2, 0));
  r.device.pushUsed(chain, 16);
  assert.equal(readPackedDesc(r, 3).flags, AVAIL | USED | WRITE, 'used in lap 1');
  assert.equal(r.device.nextUsed, encodeRingIndex(2, 0));
  assert.deepEqual(r.driver.getUsed(), { token: 99, len: 16 });
  assert.equal(r.driver.nextUsed, encodeRingIndex(2, 0));
});

test('the first descriptor of a list is made available last; batched adds expose nothing until publish()', () => {
  const r = makePackedRing(8);
  const a = r.alloc(64);
  assert.ok(r.driver.add([{ addr: a, len: 4 }, { addr: a + 4, len: 4 }], [{ addr: a + 8, len: 4 }], 1, false));
  assert.equal(readPackedDesc(r, 0).flags, 0, 'head not yet available');
  assert.equal(readPackedDesc(r, 1).flags, AVAIL | NEXT, 'the rest of the list is written');
  assert.equal(readPackedDesc(r, 2).flags, AVAIL | WRITE);
  assert.ok(r.driver.add([{ addr: a + 16, len: 4 }], [], 2, false));
  assert.equal(readPackedDesc(r, 3).flags, AVAIL, 'a later head is published by the first one');
  assert.equal(r.device.hasAvailable(), false);
  assert.equal(r.device.pop(), null);
  r.driver.publish();
  assert.equal(readPackedDesc(r, 0).flags, AVAIL | NEXT);
  assert.equal(r.device.pop()!.readableLength, 8);
  assert.equal(r.device.pop()!.readableLength, 4);
  assert.equal(r.device.pop(), null);
});

test('indirect: one ring descriptor per buffer, a table of struct pvirtq_desc with only WRITE set', () => {
  const r = makePackedRing(3, { indirect: true });
  const a = r.alloc(256);
  for (let t = 0; t < 3; t++) {
    assert.ok(r.driver.add([{ addr: a + 64 * t, len: 4 }, { addr: a + 64 * t + 4, len: 4 }], [{ addr: a + 64 * t + 8, len: 8 }], t));
  }
  assert.equal(r.driver.numFree, 0, '3 buffers of 3 elements in a 3-entry ring');
  const d = readPackedDesc(r, 0);
  assert.equal(d.flags, AVAIL | INDIRECT);
  assert.equal(d.len, 48);
  const entryFlags = [0, 1, 2].map((k) => r.memory.readU16(d.addr + 16 * k + 14));
  assert.deepEqual(entryFlags, [0, 0, WRITE], 'no NEXT in a packed indirect table (§2.8.19)');
  const c0 = r.device.pop()!;
  assert.deepEqual([c0.readable.length, c0.writable.length, c0.readableLength, c0.writableLength, c0.descriptorCount], [2, 1, 8, 8, 4]);
  const c1 = r.device.pop()!;
  const c2 = r.device.pop()!;
  r.device.addUsed(c1.head, 8);
  r.device.addUsed(c0.head, 3);
  r.device.addUsed(c2.head, 0);
  r.device.publishUsed();
  assert.deepEqual([r.driver.getUsed(), r.driver.getUsed(), r.driver.getUsed()], [
    { token: 1, len: 8 },
    { token: 0, len: 3 },
    { token: 2, len: 0 },
  ]);
  assert.equal(r.liveTables.size, 0, 'every table handed back to the allocator');
  // a buffer of more elements than the queue size goes direct if it fits, else is refused
  assert.throws(() => r.driver.add([{ addr: a, len: 1 }, { addr: a, len: 1 }], [{ addr: a, len: 1 }, { addr: a, len: 1 }], 9), RangeError);
});

test('an indirect table longer than the queue size is refused unless the device allows more', () => {
  const build = (maxIndirectEntries?: number) => {
    const r = makePackedRing(1, { indirect: true, ...(maxIndirectEntries ? { maxIndirectEntries } : {}), noDriver: true });
    const a = r.alloc(64);
    const table = r.alloc(32);
    writePackedDesc(r, 0, a, 4, 0, 0, table);
    writePackedDesc(r, 1, a + 8, 4, 0, WRITE, table);
    writePackedDesc(r, 0, table, 32, 0, INDIRECT | AV(1));
    return r;
  };
  assert.throws(() => build().device.pop(), (e: unknown) => e instanceof VirtioError && e.code === 'INDIRECT_BAD_LENGTH');
  assert.equal(build(2).device.pop()!.writableLength, 4);
});

test('out-of-order completion: used descriptors carry the id, both sides skip by the list length (§2.8.6)', () => {
  const r = makePackedRing(8);
  const a = r.alloc(256);
  const shapes = [1, 3, 2]; // descriptors per buffer: positions 0 | 1,2,3 | 4,5
  shapes.forEach((n, t) => {
    const outs = Array.from({ length: n }, (_, k) => ({ addr: a + 64 * t + 8 * k, len: 8 }));
    assert.ok(r.driver.add(outs.slice(0, n - 1), outs.slice(n - 1), t));
  });
  assert.equal(r.driver.numFree, 2);
  const chains = [r.device.pop()!, r.device.pop()!, r.device.pop()!];
  // complete 2, 0, 1
  r.device.pushUsed(chains[2]!, 5);
  assert.equal(readPackedDesc(r, 0).id, chains[2]!.head, 'first used descriptor written at position 0');
  assert.equal(r.device.nextUsed, encodeRingIndex(2, 1), 'skipped by buffer 2’s two descriptors');
  assert.deepEqual(r.driver.getUsed(), { token: 2, len: 5 });
  assert.equal(r.driver.numFree, 4);
  r.device.pushUsed(chains[0]!, 1);
  assert.equal(readPackedDesc(r, 2).id, chains[0]!.head);
  r.device.pushUsed(chains[1]!, 8);
  assert.equal(readPackedDesc(r, 3).id, chains[1]!.head);
  assert.deepEqual(r.driver.getUsed(), { token: 0, len: 1 });
  assert.deepEqual(r.driver.getUsed(), { token: 1, len: 8 });
  assert.equal(r.driver.getUsed(), null);
  assert.equal(r.driver.numFree, 8);
  assert.equal(r.device.nextUsed, encodeRingIndex(6, 1));
  // the ring keeps going over the wrap with mixed list lengths
  for (let t = 10; t < 40; t++) {
    const n = 1 + (t % 3);
    const outs = Array.from({ length: n }, (_, k) => ({ addr: a + 8 * k, len: 8 }));
    for (let tries = 0; !r.driver.add(outs, [], t); tries++) {
      assert.ok(tries < 100, 'no room ever comes back');
      const got = r.device.pop();
      assert.ok(got !== null || r.driver.inFlight > 0);
      if (got) r.device.pushUsed(got, 0);
      r.driver.getUsed();
    }
  }
  serveAny(r);
  drainAny(r);
  assert.equal(r.driver.numFree, 8);
  assert.equal(r.driver.inFlight, 0);
});

test('batched publishing of used descriptors: nothing visible until publishUsed()', () => {
  const r = makePackedRing(8);
  for (let t = 0; t < 3; t++) addPair(r, t);
  const cs = [r.device.pop()!, r.device.pop()!, r.device.pop()!];
  r.device.addUsed(cs[1]!.head, 1);
  r.device.addUsed(cs[0]!.head, 2);
  r.device.addUsed(cs[2]!.head, 3);
  assert.equal(r.driver.hasUsed(), false, 'the batch’s first flags word is written last');
  assert.equal(r.driver.getUsed(), null);
  r.device.publishUsed();
  assert.deepEqual([r.driver.getUsed(), r.driver.getUsed(), r.driver.getUsed()], [
    { token: 1, len: 1 },
    { token: 0, len: 2 },
    { token: 2, len: 3 },
  ]);
});

test('kick suppression without EVENT_IDX: ENABLE and DISABLE, with the re-check on enable', () => {
  const r = makePackedRing(8);
  addPair(r, 1);
  assert.equal(r.driver.needsKick(), true);
  assert.equal(r.driver.needsKick(), false, 'nothing new since the last decision');
  r.device.disableNotifications();
  addPair(r, 2);
  assert.equal(r.driver.needsKick(), false);
  assert.equal(r.device.enableNotifications(), true, 'buffers are pending after re-enable');
  serve(r);
  assert.equal(r.device.enableNotifications(), false);
  addPair(r, 3);
  assert.equal(r.driver.needsKick(), true);
  // DESC without EVENT_IDX negotiated is not valid (§2.8.10): treated as ENABLE
  r.memory.writeU32(r.ring.device, eventWord(encodeRingIndex(7, 0), RingEventFlags.DESC));
  addPair(r, 4);
  assert.equal(r.driver.needsKick(), true);
});

test('kick suppression with EVENT_IDX: DESC at the device’s next position, across the wrap', () => {
  const r = makePackedRing(4, { eventIdx: true });
  const add1 = (t: number) => assert.ok(r.driver.add([{ addr: PBASE_DATA(r, t), len: 4 }], [], t));
  const deviceEvent = () => r.memory.readU32(r.ring.device);
  r.device.disableNotifications();
  assert.equal(deviceEvent(), eventWord(0, RingEventFlags.DISABLE));
  assert.equal(r.device.enableNotifications(), false);
  assert.equal(deviceEvent(), eventWord(encodeRingIndex(0, 1), RingEventFlags.DESC));
  add1(0);
  assert.equal(r.driver.needsKick(), true, 'descriptor 0 (wrap 1) made available');
  add1(1);
  assert.equal(r.driver.needsKick(), false, 'the device has not caught up: its event was passed');
  add1(2);
  assert.equal(r.driver.needsKick(), false);
  serveAny(r);
  drainAny(r);
  assert.equal(r.device.enableNotifications(), false);
  assert.equal(deviceEvent(), eventWord(encodeRingIndex(3, 1), RingEventFlags.DESC));
  // the device asks for position 1 of the NEXT lap (wrap 0): positions 3 (w1), 0 (w0) do not hit it
  r.memory.writeU32(r.ring.device, eventWord(encodeRingIndex(1, 0), RingEventFlags.DESC));
  add1(3);
  assert.equal(r.driver.needsKick(), false, 'position 3, wrap 1');
  add1(4);
  assert.equal(r.driver.needsKick(), false, 'position 0, wrap 0');
  add1(5);
  assert.equal(r.driver.needsKick(), true, 'position 1, wrap 0: the event');
  serveAny(r);
  drainAny(r);
  // same position, other lap: the event (1, wrap 1) lies a lap ahead and does not fire yet
  r.memory.writeU32(r.ring.device, eventWord(encodeRingIndex(1, 1), RingEventFlags.DESC));
  add1(6);
  add1(7);
  assert.equal(r.driver.needsKick(), false, 'positions 2, 3 of lap wrap 0');
  serveAny(r);
  drainAny(r);
  add1(8);
  add1(9);
  assert.equal(r.driver.needsKick(), true, 'positions 0, 1 of lap wrap 1');
});

test('interrupt suppression: ENABLE, DISABLE, DESC with wrap, reserved value, and the driver’s re-check', () => {
  for (const eventIdx of [false, true]) {
    const r = makePackedRing(4, { eventIdx });
    addPair(r, 1);
    const c = r.device.pop()!;
    r.device.pushUsed(c, 4);
    assert.equal(r.device.needsNotification(), true, `first decision (eventIdx ${eventIdx})`);
    r.driver.disableCallbacks();
    assert.equal(r.memory.readU32(r.ring.driver), eventWord(0, RingEventFlags.DISABLE));
    addPair(r, 2);
    r.device.pushUsed(r.device.pop()!, 4);
    assert.equal(r.device.needsNotification(), false, 'DISABLE');
    assert.equal(r.driver.enableCallbacks(), false, 'used buffers arrived while disabled: process them first');
    assert.deepEqual(drainAny(r), [1, 2]);
    assert.equal(r.driver.enableCallbacks(), true);
    assert.equal(
      r.memory.readU32(r.ring.driver),
      eventIdx ? eventWord(r.driver.nextUsed, RingEventFlags.DESC) : eventWord(0, RingEventFlags.ENABLE),
    );
    addPair(r, 3);
    r.device.pushUsed(r.device.pop()!, 4);
    assert.equal(r.device.needsNotification(), true);
    assert.equal(r.device.needsNotification(), eventIdx ? false : true, 'nothing new: DESC window empty; ENABLE always');
    r.memory.writeU32(r.ring.driver, eventWord(0, 3)); // reserved value
    assert.equal(r.device.needsNotification(), true, 'reserved flags value: notify');
  }
  // DESC with wrap: the driver asks for the used descriptor at position 1 of lap wrap 0
  const r = makePackedRing(4, { eventIdx: true });
  const event = eventWord(encodeRingIndex(1, 0), RingEventFlags.DESC);
  const one = (t: number) => {
    assert.ok(r.driver.add([{ addr: PBASE_DATA(r, t), len: 4 }], [], t));
    r.device.pushUsed(r.device.pop()!, 0);
    const wants = r.device.needsNotification();
    assert.equal(r.driver.getUsed()?.token, t);
    r.memory.writeU32(r.ring.driver, event); // getUsed moved the driver's own event along
    return wants;
  };
  assert.equal(one(0), true, 'the first decision');
  // used descriptors at linear 1, 2, 3 (wrap 1), then 4 = (0, wrap 0), 5 = (1, wrap 0): the event, 6
  assert.deepEqual([one(1), one(2), one(3), one(4), one(5), one(6)], [false, false, false, false, true, false]);
  assert.equal(r.device.nextUsed, encodeRingIndex(3, 0));
});

test('used-buffer event across a skipped position: a list that jumps over the event still fires', () => {
  const r = makePackedRing(4, { eventIdx: true });
  r.device.needsNotification(); // the first decision
  const a = r.alloc(64);
  assert.ok(r.driver.add([{ addr: a, len: 4 }, { addr: a + 4, len: 4 }, { addr: a + 8, len: 4 }], [], 1));
  r.memory.writeU32(r.ring.driver, eventWord(encodeRingIndex(1, 1), RingEventFlags.DESC));
  r.device.pushUsed(r.device.pop()!, 0);
  assert.equal(r.device.needsNotification(), true, 'position 1 lies inside the used range [0, 3)');
});

test('save/restore of the base: a new device half continues mid-lap from GET_VRING_BASE', () => {
  const r = makePackedRing(4);
  for (let t = 0; t < 5; t++) {
    assert.ok(r.driver.add([{ addr: PBASE_DATA(r, t), len: 4 }], [], t), `add ${t}`);
    assert.equal(serveAny(r), 1);
    assert.deepEqual(drainAny(r), [t]);
  }
  // 5 one-descriptor buffers: position 1, wrap counter 0 on both sides
  assert.equal(r.device.vringBase, packedVringBase(encodeRingIndex(1, 0), encodeRingIndex(1, 0)));
  assert.equal(r.device.vringBase, 0x0001_0001);
  const base = parsePackedVringBase(r.device.vringBase);
  const again = new PackedDeviceQueue(r.memory, packedRingViewsFromGuest(r.memory, r.ring), { eventIdx: false, indirect: false, ...base });
  for (let t = 5; t < 20; t++) {
    r.memory.writeU32(PBASE_DATA(r, t), t);
    assert.ok(r.driver.add([{ addr: PBASE_DATA(r, t), len: 4 }], [], t));
    const c = again.pop()!;
    assert.equal(c.readUint32(0), t);
    again.pushUsed(c, 0);
    assert.equal(r.driver.getUsed()?.token, t);
  }
  // the fresh default is position 0 / wrap 1 on both: it would wait on the wrong lap forever
  const fresh = new PackedDeviceQueue(r.memory, packedRingViewsFromGuest(r.memory, r.ring), { eventIdx: false, indirect: false });
  r.driver.add([{ addr: PBASE_DATA(r, 20), len: 4 }], [], 20);
  assert.equal(fresh.nextAvail, 0x8000);
  assert.equal(fresh.pop(), null, 'the descriptor at position 0 belongs to another lap');
  // bases that name no position, or more in flight than the ring holds
  const views = packedRingViewsFromGuest(r.memory, r.ring);
  for (const b of [{ nextAvail: 4 }, { nextUsed: 0x8004 }, { nextAvail: 0x8000, nextUsed: 0x8001 }]) {
    assert.throws(() => new PackedDeviceQueue(r.memory, views, { eventIdx: false, indirect: false, ...b }), (e: unknown) => e instanceof VirtioError && e.code === 'QUEUE_BASE_INVALID');
  }
});

test('a base with buffers in flight: the restored half counts them against the ring', () => {
  const r = makePackedRing(4);
  for (let t = 0; t < 3; t++) r.driver.add([{ addr: PBASE_DATA(r, t), len: 4 }], [], t);
  for (let t = 0; t < 3; t++) r.device.pop();
  const again = new PackedDeviceQueue(r.memory, packedRingViewsFromGuest(r.memory, r.ring), {
    eventIdx: false,
    indirect: false,
    nextAvail: r.device.nextAvail,
    nextUsed: r.device.nextUsed,
  });
  assert.equal(again.descriptorsInFlight, 3);
  assert.equal(again.vringBase, r.device.vringBase);
});

test('detachUnused: every token in flight back once, the ring starts over', () => {
  const r = makePackedRing(4, { indirect: true });
  for (let t = 0; t < 4; t++) assert.ok(addPair(r, t));
  r.device.pop();
  const tokens = r.driver.detachUnused().sort();
  assert.deepEqual(tokens, [0, 1, 2, 3]);
  assert.equal(r.driver.numFree, 4);
  assert.equal(r.driver.inFlight, 0);
  assert.equal(r.liveTables.size, 0);
  assert.equal(r.driver.nextAvail, 0x8000);
  // a reset device half starts from position 0, wrap 1 as well
  const device = new PackedDeviceQueue(r.memory, packedRingViewsFromGuest(r.memory, r.ring), { eventIdx: false, indirect: true });
  assert.equal(device.pop(), null, 'the ring was zeroed');
  assert.ok(addPair(r, 9));
  const c = device.pop()!;
  assert.equal(c.readUint32(0), 9);
  device.pushUsed(c, 0);
  assert.equal(r.driver.getUsed()?.token, 9);
});

test('the driver refuses what can never fit and reports a full ring', () => {
  const r = makePackedRing(2);
  const a = r.alloc(64);
  assert.throws(() => r.driver.add([{ addr: a, len: 1 }, { addr: a, len: 1 }, { addr: a, len: 1 }], [], 1), RangeError);
  assert.ok(r.driver.add([{ addr: a, len: 1 }, { addr: a, len: 1 }], [], 1));
  assert.equal(r.driver.add([{ addr: a, len: 1 }], [], 2), false);
  assert.throws(() => r.driver.add([], [], 3), RangeError);
  assert.throws(() => r.driver.add([{ addr: a, len: 1 }], [], undefined as unknown as number), TypeError);
});

test('end to end: 10,000 buffers of random shapes, random completion order, bytes checked both ways', () => {
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  /** The byte at offset k of token t's readable stream (the first 4 bytes are t itself), or of its answer. */
  const req = (t: number, k: number) => (t * 31 + k * 7) & 0xff;
  const ans = (t: number, k: number) => (t * 17 + k * 3 + 1) & 0xff;
  for (const [size, indirect] of [[7, false], [16, true], [1, true]] as const) {
    const r = makePackedRing(size, { indirect, ...(size === 1 ? { maxIndirectEntries: 5 } : {}) });
    const base = r.alloc(size * 1024);
    const held: { head: number; len: number }[] = [];
    const inflight = new Map<number, { slot: number; ins: { addr: number; len: number }[]; hasReq: boolean }>();
    const usedSlots = new Set<number>();
    let next = 0;
    let back = 0;
    for (let rounds = 0; back < 10_000; rounds++) {
      assert.ok(rounds < 200_000, `no progress: ${back} buffers back`);
      const free = Array.from({ length: size }, (_, i) => i).filter((i) => !usedSlots.has(i));
      if (next < 10_000 && free.length && rnd(3) !== 0) {
        const slotIdx = free[rnd(free.length)]!;
        const slot = base + 1024 * slotIdx;
        const n = 1 + rnd(Math.min(indirect ? 5 : size, 4));
        const nOut = rnd(n + 1);
        const parts = Array.from({ length: n }, (_, k) => ({ addr: slot + 128 * k, len: (k === 0 ? 4 : 1) + rnd(60) }));
        let off = 0;
        for (const p of parts.slice(0, nOut)) for (let k = 0; k < p.len; k++, off++) r.memory.slice(p.addr + k, 1)[0] = req(next, off);
        if (nOut) r.memory.writeU32(parts[0]!.addr, next);
        if (r.driver.add(parts.slice(0, nOut), parts.slice(nOut), next)) {
          inflight.set(next, { slot: slotIdx, ins: parts.slice(nOut), hasReq: nOut > 0 });
          usedSlots.add(slotIdx);
          next++;
        }
      }
      let c;
      while ((c = r.device.pop()) !== null) {
        let token = -1;
        if (c.readableLength) {
          token = c.readUint32(0);
          const bytes = new Uint8Array(c.readableLength);
          c.read(bytes);
          for (let k = 4; k < bytes.length; k++) assert.equal(bytes[k], req(token, k), `request byte ${k} of token ${token}`);
        }
        const out = new Uint8Array(c.writableLength).map((_, k) => (token < 0 ? 0xee : ans(token, k)));
        assert.equal(c.write(out), c.writableLength);
        held.push({ head: c.head, len: c.writableLength });
      }
      while (held.length && (rnd(2) === 0 || next === 10_000)) {
        const [h] = held.splice(rnd(held.length), 1);
        r.device.addUsed(h!.head, h!.len);
      }
      r.device.publishUsed();
      let u;
      while ((u = r.driver.getUsed()) !== null) {
        const f = inflight.get(u.token);
        assert.ok(f, `token ${u.token} is in flight (and returned once)`);
        inflight.delete(u.token);
        usedSlots.delete(f.slot);
        assert.equal(u.len, f.ins.reduce((a, p) => a + p.len, 0), `len for token ${u.token}`);
        let k = 0;
        for (const p of f.ins) for (let j = 0; j < p.len; j++, k++) assert.equal(r.memory.readU8(p.addr + j), f.hasReq ? ans(u.token, k) : 0xee);
        back++;
      }
    }
    assert.equal(inflight.size, 0);
    assert.equal(r.driver.numFree, size);
  }
});

test('the first interrupt decision after a (re)start notifies in DESC mode even if the event lies outside the range', () => {
  const r = makePackedRing(4, { eventIdx: true });
  assert.ok(r.driver.add([{ addr: PBASE_DATA(r, 0), len: 4 }], [], 0));
  r.memory.writeU32(r.ring.driver, eventWord(encodeRingIndex(3, 0), RingEventFlags.DESC));
  r.device.pushUsed(r.device.pop()!, 0);
  assert.equal(r.device.needsNotification(), true, 'first decision: the driver may wait for an event passed before the start');
  assert.ok(r.driver.add([{ addr: PBASE_DATA(r, 1), len: 4 }], [], 1));
  r.device.pushUsed(r.device.pop()!, 0);
  assert.equal(r.device.needsNotification(), false, 'later decisions follow the window');
});
