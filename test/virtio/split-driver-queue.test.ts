/**
 * The driver half of a split virtqueue (DriverQueue, virtio 1.2 §2.7.13, §2.7.14) beyond the
 * round trips of split-queue.test.ts: the exact descriptors and indirect tables it writes, the
 * indirect tables' allocation and release, its private free list under out-of-order completion,
 * the chain-length limit, every used element it refuses, and the suppression words it writes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescFlags } from '../../src/virtio/constants.js';
import { DeviceQueue } from '../../src/virtio/device-queue.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';
import { BASE, makeRing, type Ring } from '../helpers/ring.js';
import { Recorder, withTracing } from '../helpers/trace-recorder.js';

const { NEXT, WRITE, INDIRECT } = DescFlags;

interface DriverRing {
  memory: GuestMemory;
  ring: ReturnType<typeof packedLayout>;
  driver: DriverQueue<number>;
  device: DeviceQueue;
  /** Indirect tables handed out and given back, in order. */
  allocated: number[];
  freed: number[];
  alloc(bytes: number): number;
}

/** A split ring whose driver records its indirect-table allocations (`indirect`: allocator given). */
function driverRing(size: number, opts: { indirect?: boolean; eventIdx?: boolean } = {}): DriverRing {
  const buffer = new SharedArrayBuffer(1 << 16);
  const memory = new GuestMemory([{ guestAddr: BASE, size: buffer.byteLength, buffer }]);
  const ring = packedLayout(BASE, size);
  let next = BASE + 0x1000;
  const alloc = (bytes: number): number => {
    const a = next;
    next += Math.ceil(bytes / 16) * 16;
    return a;
  };
  const allocated: number[] = [];
  const freed: number[] = [];
  const eventIdx = opts.eventIdx ?? false;
  const indirect = opts.indirect ?? false;
  const driver = new DriverQueue<number>(memory, ringViewsFromGuest(memory, ring), {
    eventIdx,
    indirect,
    allocIndirect: (n) => {
      const a = alloc(n);
      allocated.push(a);
      return a;
    },
    freeIndirect: (a) => freed.push(a),
  });
  const device = new DeviceQueue(memory, ringViewsFromGuest(memory, ring), { eventIdx, indirect });
  return { memory, ring, driver, device, allocated, freed, alloc };
}

/** Descriptor i of a table as [addr, len, flags, next] (§2.7.5: le64 addr, le32 len, le16 flags, le16 next). */
function descAt(memory: GuestMemory, table: number, i: number): number[] {
  const o = table + 16 * i;
  return [memory.readU32(o) + memory.readU32(o + 4) * 2 ** 32, memory.readU32(o + 8), memory.readU16(o + 12), memory.readU16(o + 14)];
}

/** The VirtioError `f` throws. */
function virtioError(f: () => unknown): VirtioError {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof VirtioError, `expected a VirtioError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected a VirtioError, nothing was thrown');
}

// ---- what the driver writes into the ring

test('a direct chain: readable then writable descriptors linked by NEXT, the last with next 0 (§2.7.4.2, §2.7.5)', () => {
  const q = driverRing(8);
  const [a, b, c] = [q.alloc(16), q.alloc(16), 0x1_2345_6780];
  assert.ok(q.driver.add([{ addr: a, len: 4 }, { addr: b, len: 8 }], [{ addr: c, len: 16 }], 1));
  assert.deepEqual(
    [0, 1, 2].map((i) => descAt(q.memory, q.ring.desc, i)),
    [
      [a, 4, NEXT, 1],
      [b, 8, NEXT, 2],
      [c, 16, WRITE, 0],
    ],
  );
  assert.deepEqual([q.memory.readU16(q.ring.avail + 2), q.memory.readU16(q.ring.avail + 4)], [1, 0], 'avail.idx 1, ring[0] = head 0');
});

test('an indirect buffer: one INDIRECT descriptor, its table written like a chain (§2.7.5.3)', () => {
  const q = driverRing(8, { indirect: true });
  const [a, b, c] = [q.alloc(16), q.alloc(16), q.alloc(16)];
  assert.ok(q.driver.add([{ addr: a, len: 4 }], [{ addr: b, len: 8 }, { addr: c, len: 4 }], 1));
  assert.equal(q.allocated.length, 1);
  const table = q.allocated[0]!;
  assert.deepEqual(descAt(q.memory, q.ring.desc, 0), [table, 48, INDIRECT, 0]);
  assert.deepEqual(
    [0, 1, 2].map((i) => descAt(q.memory, table, i)),
    [
      [a, 4, NEXT, 1],
      [b, 8, WRITE | NEXT, 2],
      [c, 4, WRITE, 0],
    ],
  );
  assert.equal(q.driver.numFree, 7);
});

test('a one-element buffer stays a direct descriptor even with an indirect allocator', () => {
  const q = driverRing(8, { indirect: true });
  const a = q.alloc(16);
  assert.ok(q.driver.add([], [{ addr: a, len: 8 }], 1));
  assert.deepEqual(q.allocated, [], 'no table for one element');
  assert.deepEqual(descAt(q.memory, q.ring.desc, 0), [a, 8, WRITE, 0]);
});

// ---- indirect tables are given back exactly once, when their buffer comes back

test('freeIndirect gets each table back when its buffer is used or detached, never for a direct chain', () => {
  const q = driverRing(8, { indirect: true });
  const a = q.alloc(32);
  q.driver.add([{ addr: a, len: 4 }], [{ addr: a + 16, len: 8 }], 1); // indirect
  q.driver.add([{ addr: a, len: 4 }], [], 2); // direct
  q.driver.add([{ addr: a, len: 4 }], [{ addr: a + 16, len: 8 }], 3); // indirect
  const [t1, t3] = q.allocated;
  for (let k = 0; k < 2; k++) {
    const c = q.device.pop()!;
    q.device.pushUsed(c, 0);
  }
  assert.equal(q.driver.getUsed()?.token, 1);
  assert.deepEqual(q.freed, [t1]);
  assert.equal(q.driver.getUsed()?.token, 2);
  assert.deepEqual(q.freed, [t1], 'a direct chain has no table');
  assert.deepEqual(q.driver.detachUnused(), [3]);
  assert.deepEqual(q.freed, [t1, t3]);
  assert.equal(q.driver.numFree, 8);
});

// ---- the private free list (the driver never trusts the shared table, §2.7.13)

test('a chain of several descriptors returned first is relinked in front of the rest of the free list', () => {
  const q = driverRing(8);
  const buf = q.alloc(64);
  const el = (len: number) => ({ addr: buf, len });
  q.driver.add([el(1), el(2), el(3)], [], 1); // descriptors 0, 1, 2
  q.driver.add([el(4)], [el(5)], 2); // descriptors 3, 4; free: 5, 6, 7
  q.device.pushUsed(q.device.pop()!, 0);
  assert.equal(q.driver.getUsed()?.token, 1);
  // Free: 0, 1, 2 then 5, 6, 7 (not 3, 4: the second buffer is still in flight).
  assert.ok(q.driver.add([el(11), el(12), el(13), el(14), el(15), el(16)], [], 3));
  assert.deepEqual(
    [3, 4].map((i) => descAt(q.memory, q.ring.desc, i)),
    [
      [buf, 4, NEXT, 4],
      [buf, 5, WRITE, 0],
    ],
    'the second chain is intact',
  );
  const second = q.device.pop()!;
  assert.deepEqual([second.readableLength, second.writableLength], [4, 5]);
  const third = q.device.pop()!;
  assert.deepEqual([third.readableLength, third.descriptorCount], [81, 6]);
});

// ---- the chain-length limit (§2.7.5.3.1: no chain longer than the queue size)

test('a direct chain may use every descriptor; a longer one is refused unless it can go indirect', () => {
  const q = driverRing(4);
  const a = q.alloc(16);
  const els = (n: number) => Array.from({ length: n }, () => ({ addr: a, len: 4 }));
  assert.ok(q.driver.add(els(4), [], 1), 'exactly the queue size');
  assert.equal(q.driver.numFree, 0);
  assert.throws(() => q.driver.add(els(5), [], 2), { name: 'RangeError', message: 'chain of 5 is longer than the queue size 4' });
  const qi = driverRing(4, { indirect: true });
  assert.ok(qi.driver.add(els(5), [], 1), 'one indirect descriptor for five elements');
  assert.equal(qi.device.pop()!.readableLength, 20);
});

// ---- used elements the driver refuses (§2.7.8): the queue is broken, the rule thrown

/** A ring of 4 after `n` one-descriptor round trips (lastUsed = n), with `inFlight` buffers of 8 writable bytes added. */
function afterRoundTrips(n: number, inFlight: number): Ring {
  const r = makeRing(4);
  const a = r.alloc(16);
  for (let t = 0; t < n; t++) {
    r.driver.add([], [{ addr: a, len: 8 }], 100 + t);
    r.device.pushUsed(r.device.pop()!, 8);
    r.driver.getUsed();
  }
  for (let t = 0; t < inFlight; t++) r.driver.add([], [{ addr: a, len: 8 }], t + 1);
  return r;
}

/** Writes used element `slot` and moves used.idx to `idx`, as a device would. */
function deviceWritesUsed(r: Ring, slot: number, id: number, len: number, idx: number): void {
  r.memory.writeU32(r.ring.used + 4 + 8 * (slot % r.ring.size), id);
  r.memory.writeU32(r.ring.used + 8 + 8 * (slot % r.ring.size), len);
  r.memory.writeU16(r.ring.used + 2, idx);
}

test('a full ring returned in one publication is collected whole (used.idx exactly the queue size ahead)', () => {
  const r = afterRoundTrips(2, 4);
  for (let k = 0; k < 4; k++) r.device.addUsed(r.device.pop()!.head, 8);
  r.device.publishUsed();
  const tokens: number[] = [];
  let u;
  while ((u = r.driver.getUsed()) !== null) tokens.push(u.token);
  assert.deepEqual(tokens, [1, 2, 3, 4]);
});

test('used.idx running more than the queue size ahead is USED_ID_INVALID (§2.7.8)', () => {
  const r = afterRoundTrips(2, 1);
  deviceWritesUsed(r, 2, 0, 0, 2 + 5);
  assert.equal(virtioError(() => r.driver.getUsed()).message, 'used.idx 7 ran 5 ahead (USED_ID_INVALID, virtio 1.2 §2.7.8)');
  assert.equal(r.driver.isBroken, true);
});

test('a used id that is not a buffer in flight is USED_ID_INVALID, whether below or above the queue size', () => {
  for (const id of [3, 4, 0xffffffff]) {
    const r = afterRoundTrips(2, 1); // head 0 is in flight (each round trip gave 0 back to the front of the free list)
    deviceWritesUsed(r, 2, id, 0, 3);
    assert.equal(
      virtioError(() => r.driver.getUsed()).message,
      `device returned id ${id}, which is not a buffer in flight (USED_ID_INVALID, virtio 1.2 §2.7.8)`,
    );
    assert.equal(r.driver.isBroken, true);
  }
});

test('a used len above the buffer\'s writable bytes is USED_LEN_INVALID (§2.7.8.1); the buffer stays in flight', () => {
  const r = afterRoundTrips(2, 1);
  const head = r.device.pop()!.head;
  deviceWritesUsed(r, 2, head, 9, 3);
  assert.equal(
    virtioError(() => r.driver.getUsed()).message,
    `device returned len 9 for id ${head}, which has 8 device-writable bytes (USED_LEN_INVALID, virtio 1.2 §2.7.8.1)`,
  );
  assert.equal(r.driver.isBroken, true);
  assert.equal(r.driver.inFlight, 1);
  assert.equal(r.driver.getUsed(), null);
});

// ---- used buffer notification suppression (§2.7.7): the words the driver writes

const usedEvent = (r: Ring) => r.memory.readU16(r.ring.avail + 4 + 2 * r.ring.size);
const availFlags = (r: Ring) => r.memory.readU16(r.ring.avail);

test('with event idx, callbacks are switched through used_event only; avail.flags stays 0 (§2.7.7.1)', () => {
  const r = makeRing(8, { eventIdx: true });
  r.driver.disableCallbacks();
  assert.equal(usedEvent(r), 0xffff, 'one behind used index 0: 65535 entries away');
  r.driver.enableCallbacks();
  const a = r.alloc(16);
  r.driver.add([{ addr: a, len: 4 }], [], 1);
  r.device.pushUsed(r.device.pop()!, 0);
  assert.equal(r.device.needsNotification(), true, 'the first decision');
  assert.equal(r.driver.getUsed()?.token, 1);
  assert.equal(usedEvent(r), 1, 'callbacks on: used_event is the next used index');
  r.driver.disableCallbacks();
  assert.deepEqual([usedEvent(r), availFlags(r)], [0, 0]);
  r.driver.add([{ addr: a, len: 4 }], [], 2);
  r.device.pushUsed(r.device.pop()!, 0);
  assert.equal(r.device.needsNotification(), false, 'used.idx 1 → 2 does not pass used_event 0');
  assert.equal(r.driver.enableCallbacks(), false, 'a used buffer is waiting');
  assert.deepEqual([usedEvent(r), availFlags(r)], [1, 0]);
  assert.equal(r.driver.getUsed()?.token, 2);
  assert.equal(usedEvent(r), 2, 'callbacks on again: used_event follows what is taken');
});

test('without event idx, callbacks are switched through avail.flags only; used_event is never written', () => {
  const r = makeRing(8);
  const a = r.alloc(16);
  r.driver.add([{ addr: a, len: 4 }], [], 1);
  r.device.pushUsed(r.device.pop()!, 0);
  assert.equal(r.driver.getUsed()?.token, 1);
  r.driver.disableCallbacks();
  assert.deepEqual([availFlags(r), usedEvent(r)], [1, 0]);
  assert.equal(r.driver.enableCallbacks(), true);
  assert.deepEqual([availFlags(r), usedEvent(r)], [0, 0]);
  r.driver.add([{ addr: a, len: 4 }], [], 2);
  r.device.pushUsed(r.device.pop()!, 0);
  assert.equal(r.device.needsNotification(), true);
});

// ---- trace: vring_add (Linux's virtqueue_add_split), only when enabled

test('vring_add records direct and indirect adds, and nothing is recorded for events left off', () => {
  const q = driverRing(8, { indirect: true });
  const a = q.alloc(32);
  const rec = new Recorder();
  withTracing(['vring_add'], rec, () => {
    q.driver.add([{ addr: a, len: 4 }], [{ addr: a + 16, len: 8 }], 1);
    q.driver.add([{ addr: a, len: 4 }], [], 2);
  });
  assert.deepEqual(
    rec.events.map((e) => [e.name, e.fields]),
    [
      ['vring_add', { vq: 0, head: 0, out_num: 1, in_num: 1, avail_idx: 1, indirect: 1 }],
      ['vring_add', { vq: 0, head: 1, out_num: 1, in_num: 0, avail_idx: 2, indirect: 0 }],
    ],
  );
  const off = new Recorder();
  withTracing(['virtqueue_kick'], off, () => {
    q.driver.add([{ addr: a, len: 4 }], [{ addr: a + 16, len: 8 }], 3);
    q.driver.add([{ addr: a, len: 4 }], [], 4);
  });
  assert.deepEqual(off.names(), []);
});

// ---- addresses, allocation edge cases, deferred publication

test('buffer addresses above 4 GiB whose low half is ≥ 2^31: direct descriptors and indirect entries carry both halves (§2.7.5 le64 addr)', () => {
  const HIGH = 0x1_8000_1000; // high half 1, low half 0x8000_1000
  const low = new SharedArrayBuffer(1 << 16);
  const high = new SharedArrayBuffer(1 << 12);
  const memory = new GuestMemory([
    { guestAddr: BASE, size: low.byteLength, buffer: low },
    { guestAddr: HIGH, size: high.byteLength, buffer: high },
  ]);
  const ring = packedLayout(BASE, 8);
  let tables = BASE + 0x1000;
  const driver = new DriverQueue<number>(memory, ringViewsFromGuest(memory, ring), {
    eventIdx: false,
    indirect: true,
    allocIndirect: (n) => ((tables += 0x100), tables - 0x100 + 0 * n),
  });
  const device = new DeviceQueue(memory, ringViewsFromGuest(memory, ring), { eventIdx: false, indirect: true });
  memory.write(HIGH, Uint8Array.of(1, 2, 3, 4));
  memory.write(HIGH + 0x10, Uint8Array.of(5, 6, 7, 8));
  // One element: a direct descriptor.
  assert.ok(driver.add([{ addr: HIGH, len: 4 }], [], 1));
  assert.deepEqual(descAt(memory, ring.desc, 0), [HIGH, 4, 0, 0]);
  // Two elements: an indirect table.
  assert.ok(driver.add([{ addr: HIGH, len: 4 }, { addr: HIGH + 0x10, len: 4 }], [{ addr: HIGH + 0x20, len: 8 }], 2));
  assert.deepEqual(descAt(memory, BASE + 0x1000, 0), [HIGH, 4, NEXT, 1]);
  assert.deepEqual(descAt(memory, BASE + 0x1000, 1), [HIGH + 0x10, 4, NEXT, 2]);
  assert.deepEqual(descAt(memory, BASE + 0x1000, 2), [HIGH + 0x20, 8, WRITE, 0]);
  // The device half finds the same bytes.
  const a = device.pop()!;
  assert.deepEqual([...a.readable[0]!], [1, 2, 3, 4]);
  const b = device.pop()!;
  assert.deepEqual(b.readable.map((s) => [...s]), [[1, 2, 3, 4], [5, 6, 7, 8]]);
  assert.equal(b.writableLength, 8);
});

test('an allocator with no room for a table (null): the buffer goes direct', () => {
  const r = driverRing(8, { indirect: true });
  const driver = new DriverQueue<number>(r.memory, ringViewsFromGuest(r.memory, r.ring), { eventIdx: false, indirect: true, allocIndirect: () => null, freeIndirect: (a) => r.freed.push(a) });
  assert.ok(driver.add([{ addr: BASE + 0x2000, len: 4 }, { addr: BASE + 0x2010, len: 4 }], [{ addr: BASE + 0x2020, len: 4 }], 1));
  assert.deepEqual(descAt(r.memory, r.ring.desc, 0), [BASE + 0x2000, 4, NEXT, 1]);
  assert.deepEqual(descAt(r.memory, r.ring.desc, 2), [BASE + 0x2020, 4, WRITE, 0]);
  const chain = r.device.pop()!;
  r.device.addUsed(chain.head, 4);
  r.device.publishUsed();
  assert.equal(driver.getUsedToken(), 1);
  assert.deepEqual(r.freed, [], 'nothing to give back');
});

test('an indirect table at guest address 0 is given back; its head reused for a direct buffer gives back nothing more', () => {
  const buffer = new SharedArrayBuffer(1 << 16);
  const memory = new GuestMemory([{ guestAddr: 0, size: buffer.byteLength, buffer }]);
  const ring = packedLayout(0x1000, 4);
  const freed: number[] = [];
  const driver = new DriverQueue<number>(memory, ringViewsFromGuest(memory, ring), { eventIdx: false, indirect: true, allocIndirect: () => 0, freeIndirect: (a) => freed.push(a) });
  const device = new DeviceQueue(memory, ringViewsFromGuest(memory, ring), { eventIdx: false, indirect: true });
  const roundTrip = (out: { addr: number; len: number }[], token: number): void => {
    assert.ok(driver.add(out, [], token));
    const c = device.pop()!;
    device.addUsed(c.head, 0);
    device.publishUsed();
    assert.equal(driver.getUsedToken(), token);
  };
  roundTrip([{ addr: 0x8000, len: 4 }, { addr: 0x8010, len: 4 }], 1);
  assert.deepEqual(freed, [0], 'the table at 0 came back');
  roundTrip([{ addr: 0x8000, len: 4 }], 2);
  assert.deepEqual(freed, [0], 'a direct buffer on the same head frees no table');
});

test('add(…, publish = false) writes the ring but not avail.idx until publish()', () => {
  const r = driverRing(8);
  assert.ok(r.driver.add([{ addr: BASE + 0x2000, len: 4 }], [], 1, false));
  assert.ok(r.driver.add([{ addr: BASE + 0x2010, len: 4 }], [], 2, false));
  const views = ringViewsFromGuest(r.memory, r.ring);
  assert.equal(Atomics.load(views.avail, 1), 0, 'not yet published');
  assert.equal(r.device.pop(), null);
  r.driver.publish();
  assert.equal(Atomics.load(views.avail, 1), 2);
  assert.notEqual(r.device.pop(), null);
});
