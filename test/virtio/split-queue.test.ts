import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescFlags } from '../../src/virtio/constants.js';
import { makeRing, type Ring } from '../helpers/ring.js';

const slots = new WeakMap<Ring, number[]>();

/** Adds a 4-byte readable + 8-byte writable buffer carrying `token` (buffer memory reused per token mod 64). */
function addPair(r: Ring, token: number, publish = true): boolean {
  let pool = slots.get(r);
  if (!pool) slots.set(r, (pool = Array.from({ length: 64 }, () => r.alloc(16))));
  const out = pool[token % 64]!;
  const inn = out + 4;
  r.memory.writeU32(out, token);
  return r.driver.add([{ addr: out, len: 4 }], [{ addr: inn, len: 8 }], token, publish);
}

/** Device: serve everything pending, echoing the readable u32 (+1) into the writable part. */
function serve(r: Ring): number {
  let n = 0;
  let chain;
  while ((chain = r.device.pop()) !== null) {
    const req = new Uint8Array(4);
    chain.read(req);
    const v = new DataView(req.buffer).getUint32(0, true);
    const resp = new Uint8Array(8);
    new DataView(resp.buffer).setUint32(0, v + 1, true);
    chain.write(resp);
    r.device.addUsed(chain.head, 8);
    n++;
  }
  r.device.publishUsed();
  return n;
}

/** Driver: collect every used buffer's token. */
function drain(r: Ring): number[] {
  const tokens: number[] = [];
  let u;
  while ((u = r.driver.getUsed()) !== null) tokens.push(u.token);
  return tokens;
}

test('a buffer goes round: add, pop, push used, get used', () => {
  const r = makeRing(8);
  assert.ok(addPair(r, 41));
  const chain = r.device.pop();
  assert.ok(chain);
  assert.equal(chain.readable.length, 1);
  assert.equal(chain.writable.length, 1);
  assert.equal(chain.readableLength, 4);
  assert.equal(chain.writableLength, 8);
  assert.equal(r.device.pop(), null);
  chain.write(Uint8Array.of(9, 9));
  r.device.pushUsed(chain, 2);
  const used = r.driver.getUsed();
  assert.deepEqual(used, { token: 41, len: 2 });
  assert.equal(r.driver.getUsed(), null);
  assert.equal(r.driver.numFree, 8);
});

test('indices wrap at 65536 and nothing is lost or duplicated across the wrap', () => {
  const r = makeRing(4);
  const seen: number[] = [];
  // 70,000 buffers through a 4-entry ring: avail.idx and used.idx both wrap past 65535.
  for (let t = 0; t < 70_000; t++) {
    assert.ok(addPair(r, t));
    if (r.driver.numFree < 2) {
      serve(r);
      let u;
      while ((u = r.driver.getUsed()) !== null) seen.push(u.token);
    }
  }
  serve(r);
  let u;
  while ((u = r.driver.getUsed()) !== null) seen.push(u.token);
  assert.equal(seen.length, 70_000);
  for (let i = 0; i < seen.length; i++) assert.equal(seen[i], i);
  assert.equal(r.device.nextAvail, 70_000 & 0xffff);
  assert.equal(r.memory.readU16(r.ring.used + 2), 70_000 & 0xffff);
});

test('a full ring refuses more buffers until one is used', () => {
  const r = makeRing(4);
  assert.ok(addPair(r, 1));
  assert.ok(addPair(r, 2)); // 2 descriptors each: the 4-entry table is now full
  assert.equal(r.driver.numFree, 0);
  assert.equal(addPair(r, 3), false);
  serve(r);
  assert.equal(r.driver.getUsed()?.token, 1);
  assert.ok(addPair(r, 3));
});

test('indirect descriptors: one ring slot per buffer, segments as written', () => {
  const r = makeRing(4, { indirect: true });
  for (let t = 0; t < 4; t++) assert.ok(addPair(r, t)); // 4 buffers × 2 elements in a 4-entry table
  assert.equal(r.driver.numFree, 0);
  const head = r.memory.readU16(r.ring.avail + 4);
  const flags = r.memory.readU16(r.ring.desc + 16 * head + 12);
  assert.equal(flags, DescFlags.INDIRECT);
  assert.equal(r.memory.readU32(r.ring.desc + 16 * head + 8), 32);
  const chain = r.device.pop()!;
  assert.equal(chain.readableLength, 4);
  assert.equal(chain.writableLength, 8);
  assert.equal(chain.descriptorCount, 3); // the INDIRECT descriptor and two table entries
});

test('a chain mixing direct descriptors and a final indirect table is accepted (§2.7.5.3.2)', () => {
  const r = makeRing(8, { indirect: true });
  const table = r.alloc(32);
  const a = r.alloc(4);
  const b = r.alloc(4);
  const c = r.alloc(8);
  const d = new DataView(r.memory.slice(table, 32).buffer, r.memory.slice(table, 32).byteOffset, 32);
  d.setUint32(0, b, true);
  d.setUint32(8, 4, true);
  d.setUint16(12, DescFlags.NEXT, true);
  d.setUint16(14, 1, true);
  d.setUint32(16, c, true);
  d.setUint32(24, 8, true);
  d.setUint16(28, DescFlags.WRITE, true);
  const desc = (i: number, addr: number, len: number, flags: number, next: number) => {
    r.memory.writeU32(r.ring.desc + 16 * i, addr);
    r.memory.writeU32(r.ring.desc + 16 * i + 8, len);
    r.memory.writeU16(r.ring.desc + 16 * i + 12, flags);
    r.memory.writeU16(r.ring.desc + 16 * i + 14, next);
  };
  desc(5, a, 4, DescFlags.NEXT, 6);
  desc(6, table, 32, DescFlags.INDIRECT, 0);
  r.memory.writeU16(r.ring.avail + 4, 5);
  r.memory.writeU16(r.ring.avail + 2, 1);
  const chain = r.device.pop()!;
  assert.equal(chain.head, 5);
  assert.deepEqual([chain.readable.length, chain.writable.length, chain.readableLength, chain.writableLength], [2, 1, 8, 8]);
});

test('kick suppression: VIRTQ_USED_F_NO_NOTIFY without event idx', () => {
  const r = makeRing(8);
  addPair(r, 1);
  assert.equal(r.driver.needsKick(), true);
  r.device.disableNotifications();
  addPair(r, 2);
  assert.equal(r.driver.needsKick(), false);
  assert.equal(r.device.enableNotifications(), true, 'buffers are pending after re-enable');
  serve(r);
  assert.equal(r.device.enableNotifications(), false);
  addPair(r, 3);
  assert.equal(r.driver.needsKick(), true);
  assert.equal(r.driver.needsKick(), false, 'nothing new since the last decision');
});

test('kick suppression with event idx: the driver kicks only when avail.idx passes avail_event', () => {
  const r = makeRing(8, { eventIdx: true });
  addPair(r, 1);
  assert.equal(r.driver.needsKick(), true, 'avail_event starts at 0: the first buffer kicks');
  r.device.disableNotifications();
  serve(r);
  drain(r);
  addPair(r, 2);
  addPair(r, 3);
  assert.equal(r.driver.needsKick(), false, 'device is busy (avail_event left at 0)');
  serve(r);
  drain(r);
  assert.equal(r.device.enableNotifications(), false); // avail_event = 3
  addPair(r, 4);
  assert.equal(r.driver.needsKick(), true, 'avail.idx moved 3 → 4 across avail_event 3');
  // Several added before one decision: a kick if the window [old, new) contains avail_event.
  r.device.enableNotifications(); // avail_event = 3 still (nextAvail 3)
  serve(r);
  drain(r);
  r.device.enableNotifications(); // avail_event = 4
  addPair(r, 5, false);
  addPair(r, 6, false);
  r.driver.publish();
  assert.equal(r.driver.needsKick(), true);
});

test('interrupt suppression: VIRTQ_AVAIL_F_NO_INTERRUPT without event idx', () => {
  const r = makeRing(8);
  addPair(r, 1);
  serve(r);
  assert.equal(r.device.needsNotification(), true);
  r.driver.disableCallbacks();
  assert.equal(r.driver.getUsed()?.token, 1);
  addPair(r, 2);
  serve(r);
  assert.equal(r.device.needsNotification(), false);
  assert.equal(r.driver.enableCallbacks(), false, 'a used buffer is waiting: the driver must not sleep');
  assert.equal(r.driver.getUsed()?.token, 2);
  assert.equal(r.driver.enableCallbacks(), true);
});

test('interrupt suppression with event idx: used_event set by the driver', () => {
  const r = makeRing(8, { eventIdx: true });
  addPair(r, 1);
  serve(r);
  assert.equal(r.device.needsNotification(), true, 'first decision always notifies');
  assert.equal(r.driver.getUsed()?.token, 1); // used_event = 1
  addPair(r, 2);
  serve(r);
  assert.equal(r.device.needsNotification(), true, 'used.idx 1 → 2 crosses used_event 1');
  r.driver.disableCallbacks();
  assert.equal(r.driver.getUsed()?.token, 2);
  addPair(r, 3);
  serve(r);
  assert.equal(r.device.needsNotification(), false, 'callbacks disabled');
  assert.equal(r.driver.enableCallbacks(), false);
  assert.equal(r.driver.getUsed()?.token, 3);
  assert.equal(r.driver.enableCallbacks(), true);
  addPair(r, 4);
  serve(r);
  assert.equal(r.device.needsNotification(), true);
});

test('the enable-callback race: a completion between the last get and enable is not lost', () => {
  for (const eventIdx of [false, true]) {
    const r = makeRing(8, { eventIdx });
    addPair(r, 1);
    r.driver.disableCallbacks();
    // the device completes while the driver still has callbacks off
    serve(r);
    // Without event idx, NO_INTERRUPT holds the notification back. With it, the first decision
    // after the ring starts notifies whatever used_event says (the device cannot know what was
    // signalled before: vhost's signalled_used_valid); used_event would have held it back.
    assert.equal(r.device.needsNotification(), eventIdx, `eventIdx ${eventIdx}: the first decision`);
    // driver loop: process, then enable; enable must report the pending completion
    assert.equal(r.driver.enableCallbacks(), false);
    assert.equal(r.driver.getUsed()?.token, 1);
    assert.equal(r.driver.enableCallbacks(), true);
  }
});

test('a used id that is not in flight breaks the driver queue instead of corrupting it', () => {
  const r = makeRing(8);
  addPair(r, 1);
  r.memory.writeU32(r.ring.used + 4, 5); // id 5 was never made available
  r.memory.writeU32(r.ring.used + 8, 8);
  r.memory.writeU16(r.ring.used + 2, 1);
  assert.throws(() => r.driver.getUsed(), /USED_ID_INVALID/);
  assert.equal(r.driver.isBroken, true);
  assert.equal(r.driver.getUsed(), null);
  // The used entry is still there, but a broken queue offers nothing more: a driver's
  // collect-then-enableCallbacks loop ends instead of spinning (Linux's virtqueue_poll).
  assert.equal(r.driver.hasUsed(), false);
  assert.equal(r.driver.enableCallbacks(), true);
  // Nor does it take new buffers: add() refuses without touching the ring.
  assert.equal(addPair(r, 2), false);
  assert.equal(r.memory.readU16(r.ring.avail + 2), 1, 'avail.idx did not move');
});

test('the driver half counts what is in flight and what the device has returned', () => {
  const r = makeRing(8);
  assert.equal(r.driver.inFlight, 0);
  // Direct chains of 1, 2 and 3 descriptors: 6 of the 8 descriptors taken.
  const a = r.alloc(64);
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [], 1));
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [{ addr: a + 8, len: 4 }], 2));
  assert.ok(r.driver.add([{ addr: a, len: 4 }, { addr: a + 4, len: 4 }], [{ addr: a + 8, len: 4 }], 3));
  assert.equal(r.driver.inFlight, 3);
  assert.equal(r.driver.numFree, 2);
  assert.equal(r.driver.add([{ addr: a, len: 1 }, { addr: a, len: 1 }], [{ addr: a, len: 1 }], 4), false, 'three descriptors do not fit in two');
  const seen: number[][] = [];
  let chain;
  while ((chain = r.device.pop()) !== null) {
    seen.push([chain.readable.length, chain.writable.length]);
    r.device.addUsed(chain.head, chain.writableLength);
  }
  assert.deepEqual(seen, [[1, 0], [1, 1], [2, 1]], 'each chain arrives as it was made, descriptor by descriptor');
  assert.equal(r.driver.pendingUsed(), 0, 'nothing published yet');
  r.device.publishUsed();
  assert.equal(r.driver.pendingUsed(), 3);
  assert.equal(r.driver.getUsed()?.token, 1);
  assert.equal(r.driver.pendingUsed(), 2);
  assert.equal(r.driver.inFlight, 2);
  assert.deepEqual([r.driver.getUsed(), r.driver.getUsed()], [{ token: 2, len: 4 }, { token: 3, len: 4 }]);
  assert.equal(r.driver.numFree, 8, 'every descriptor back on the free list');
  assert.equal(r.driver.inFlight, 0);
});

test('add refuses an undefined token and an empty buffer', () => {
  const r = makeRing(8);
  const a = r.alloc(16);
  assert.throws(() => r.driver.add([{ addr: a, len: 4 }], [], undefined as unknown as number), {
    name: 'TypeError',
    message: 'token must not be undefined',
  });
  assert.throws(() => r.driver.add([], [], 1), { name: 'RangeError', message: 'a buffer needs at least one element' });
  assert.equal(r.driver.numFree, 8);
});

test('detachUnused returns every buffer in flight and frees the descriptors', () => {
  const r = makeRing(8, { indirect: true });
  addPair(r, 1);
  addPair(r, 2);
  r.driver.add([{ addr: r.alloc(4), len: 4 }], [], 3);
  assert.deepEqual(r.driver.detachUnused().sort(), [1, 2, 3]);
  assert.equal(r.driver.numFree, 8);
  assert.equal(r.driver.inFlight, 0);
});

test('batched API: pop(reuse) refills one chain object; getUsedToken() returns tokens with lastUsedLen', () => {
  const r = makeRing(8);
  for (let t = 1; t <= 3; t++) addPair(r, t);
  let chain = r.device.pop()!;
  const first = chain;
  const heads: number[] = [];
  for (;;) {
    heads.push(chain.head);
    assert.equal(chain.readableLength, 4);
    assert.equal(chain.writableLength, 8);
    assert.equal(chain.readable.length, 1, 'views are rebuilt for the refilled chain');
    const req = new Uint8Array(4);
    chain.read(req);
    r.device.addUsed(chain.head, 5);
    const next = r.device.pop(chain);
    if (next === null) break;
    assert.equal(next, first, 'the same object is reused');
    chain = next;
  }
  r.device.publishUsed();
  assert.equal(new Set(heads).size, 3);
  const tokens: number[] = [];
  let t: number | undefined;
  while ((t = r.driver.getUsedToken()) !== undefined) {
    tokens.push(t);
    assert.equal(r.driver.lastUsedLen, 5);
  }
  assert.deepEqual(tokens, [1, 2, 3]);
  assert.equal(r.driver.getUsed(), null);
});

test('65536 buffers added between two kick decisions still kick (the 16-bit window wrapped)', () => {
  for (const eventIdx of [false, true]) {
    const r = makeRing(4, { eventIdx });
    assert.ok(addPair(r, 0));
    assert.equal(r.driver.needsKick(), true);
    serve(r);
    drain(r);
    for (let t = 1; t <= 0x10000; t++) {
      assert.ok(addPair(r, t));
      serve(r);
      drain(r);
    }
    // avail.idx is back where it was at the last decision, but 65536 buffers went by
    r.device.enableNotifications();
    assert.equal(r.driver.needsKick(), true, `eventIdx=${eventIdx}`);
  }
});
