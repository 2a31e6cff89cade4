/**
 * element(): one chain decoded for a status query (x-query-virtio-queue-element) without being
 * taken, on both layouts: the descriptors as the driver wrote them, the same validation as
 * pop(), and nothing moved (pop() afterwards takes the same chain).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescFlags } from '../../src/virtio/constants.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { descriptorFlagNames } from '../../src/virtio/queue-element.js';
import { makeAvailable, makeRing, writeDesc } from '../helpers/ring.js';
import { AV, makePackedRing, writePackedDesc } from '../fuzz/packed-harness.js';

const { NEXT, WRITE } = DescFlags;

test('split: the next available chain, decoded and left in place; by descriptor index; null when none', () => {
  const r = makeRing(8);
  assert.equal(r.device.element(), null);
  const a = r.alloc(64);
  assert.ok(r.driver.add([{ addr: a, len: 16 }, { addr: a + 16, len: 8 }], [{ addr: a + 32, len: 24 }], 1));
  const e = r.device.element()!;
  assert.equal(e.availIndex, 0);
  assert.equal(e.readable, 24);
  assert.equal(e.writable, 24);
  assert.equal(e.descriptorCount, 3);
  assert.deepEqual(
    e.descriptors.map((d) => [d.addr, d.len, descriptorFlagNames(d.flags, false)]),
    [
      [a, 16, ['next']],
      [a + 16, 8, ['next']],
      [a + 32, 24, ['write']],
    ],
  );
  assert.equal(e.descriptors[0]!.index, e.head);
  assert.equal(e.descriptors[1]!.index, e.descriptors[0]!.next);
  assert.deepEqual(r.device.element(e.head)!.descriptors, e.descriptors);
  assert.equal(r.device.element(e.head)!.availIndex, null);
  assert.equal(r.device.status().lastAvailIdx, 0, 'not taken');
  const c = r.device.pop()!;
  assert.equal(c.head, e.head, 'pop takes the chain element() showed');
  assert.equal(r.device.element(), null);
});

test('split: an indirect chain shows its table entries', () => {
  const r = makeRing(8, { indirect: true });
  const a = r.alloc(64);
  assert.ok(r.driver.add([{ addr: a, len: 16 }], [{ addr: a + 16, len: 8 }, { addr: a + 32, len: 8 }], 1));
  const e = r.device.element()!;
  assert.equal(e.descriptors.length, 1);
  const d = e.descriptors[0]!;
  assert.deepEqual(descriptorFlagNames(d.flags, false), ['indirect']);
  assert.equal(d.len, 3 * 16);
  assert.deepEqual(
    d.table!.map((t) => [t.index, t.addr, t.len, descriptorFlagNames(t.flags, false)]),
    [
      [0, a, 16, ['next']],
      [1, a + 16, 8, ['next', 'write']],
      [2, a + 32, 8, ['write']],
    ],
  );
  assert.equal(e.descriptorCount, 4);
});

test('split: a chain that breaks a rule throws the VirtioError pop() would, and nothing moves', () => {
  const r = makeRing(8);
  const a = r.alloc(64);
  writeDesc(r, 2, a, 16, NEXT, 3);
  writeDesc(r, 3, a + 16, 0, WRITE); // §2.7.5: a zero-length descriptor
  makeAvailable(r, 2);
  assert.throws(() => r.device.element(), (e: unknown) => e instanceof VirtioError && e.code === 'DESC_ZERO_LENGTH');
  assert.throws(() => r.device.element(9), (e: unknown) => e instanceof VirtioError && e.code === 'DESC_INDEX_OUT_OF_RANGE');
  assert.equal(r.device.nextAvail, 0);
  assert.throws(() => r.device.pop(), (e: unknown) => e instanceof VirtioError && e.code === 'DESC_ZERO_LENGTH');
});

test('packed: the next available list, decoded and left in place; other positions refused', () => {
  const r = makePackedRing(5);
  assert.equal(r.device.element(), null);
  const a = r.alloc(64);
  assert.ok(r.driver.add([{ addr: a, len: 4 }], [{ addr: a + 16, len: 8 }], 7));
  const e = r.device.element()!;
  assert.equal(e.availIndex, 0x8000, 'position 0, wrap counter 1');
  assert.equal(e.readable, 4);
  assert.equal(e.writable, 8);
  assert.deepEqual(
    e.descriptors.map((d) => [d.index, d.addr, d.len, descriptorFlagNames(d.flags, true)]),
    [
      [0, a, 4, ['next', 'avail']],
      [1, a + 16, 8, ['write', 'avail']],
    ],
  );
  assert.equal(e.descriptors[1]!.id, e.head, 'the buffer id is in the last descriptor (§2.8.6)');
  assert.throws(() => r.device.element(1), RangeError);
  assert.equal(r.device.status().inuse, 0, 'not taken');
  assert.deepEqual(r.device.element(0), e);
  const c = r.device.pop()!;
  assert.equal(c.head, e.head);
  assert.equal(r.device.status().inuse, 2);
  assert.equal(r.device.element(), null);
  r.device.addUsed(c.head, 0);
  r.device.publishUsed();
  assert.equal(r.driver.getUsed()?.token, 7);
});

test('packed: a list that breaks a rule throws, and the ring does not move', () => {
  const r = makePackedRing(4, { noDriver: true });
  const a = r.alloc(64);
  writePackedDesc(r, 0, a, 8, 0, NEXT | AV(1));
  writePackedDesc(r, 1, a + 8, 0, 0, WRITE | AV(1)); // zero length
  assert.throws(() => r.device.element(), (e: unknown) => e instanceof VirtioError && e.code === 'DESC_ZERO_LENGTH');
  assert.equal(r.device.nextAvail, 0x8000);
  assert.equal(r.device.status().inuse, 0);
  writePackedDesc(r, 1, a + 8, 8, 9, WRITE | AV(1)); // id 9 ≥ size 4
  assert.throws(() => r.device.element(), (e: unknown) => e instanceof VirtioError && e.code === 'PACKED_ID_INVALID');
  writePackedDesc(r, 1, a + 8, 8, 3, WRITE | AV(1));
  assert.equal(r.device.element()!.head, 3);
  assert.equal(r.device.element()!.head, 3, 'the id is not left in flight by a query');
});

test('packed: an indirect list shows its table of struct pvirtq_desc (§2.8.7)', () => {
  const r = makePackedRing(4, { indirect: true });
  const a = r.alloc(64);
  assert.ok(r.driver.add([{ addr: a, len: 4 }, { addr: a + 4, len: 2 }], [{ addr: a + 16, len: 8 }], 3));
  const e = r.device.element()!;
  assert.equal(e.descriptorCount, 4);
  assert.deepEqual([e.readable, e.writable], [6, 8]);
  assert.equal(e.descriptors.length, 1);
  const d = e.descriptors[0]!;
  assert.deepEqual(descriptorFlagNames(d.flags, true), ['indirect', 'avail']);
  assert.equal(d.len, 48);
  assert.deepEqual(
    d.table!.map((t) => [t.index, t.addr, t.len, descriptorFlagNames(t.flags, true), t.id]),
    [
      [0, a, 4, [], 0],
      [1, a + 4, 2, [], 0],
      [2, a + 16, 8, ['write'], 0],
    ],
  );
});
