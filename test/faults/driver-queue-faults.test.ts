/**
 * The driver half of the split ring against a device that lies (virtio 1.2 §2.7.8) and against
 * requests that can never fit. Each case was either found by the ring fuzzer
 * (test/corpus/) or is a rule of driver-queue.ts the other tests did not pin down.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioError } from '../../src/virtio/errors.js';
import { makeRing } from '../helpers/ring.js';

const BUF = 0x10000 + 0x8000;

test('add() of a chain longer than the queue without indirect descriptors throws instead of returning false forever', () => {
  // found by the split-model fuzz target: add() returned false ("ring full"), so a writer
  // waiting for ring space would wait forever: this buffer can never fit.
  const r = makeRing(1);
  assert.throws(() => r.driver.add([{ addr: BUF, len: 48 }], [{ addr: BUF + 64, len: 12 }], 1), RangeError);
  assert.equal(r.driver.numFree, 1, 'nothing taken');
  // with room for it, the same shape works
  const r2 = makeRing(2);
  assert.equal(r2.driver.add([{ addr: BUF, len: 48 }], [{ addr: BUF + 64, len: 12 }], 1), true);
});

test('getUsed(): a used len beyond the buffer\'s device-writable bytes is USED_LEN_INVALID and breaks the queue', () => {
  // found by the driver-used fuzz target (§2.7.8.1: len counts bytes written into the writable part)
  const r = makeRing(8);
  r.driver.add([{ addr: BUF, len: 48 }], [{ addr: BUF + 64, len: 12 }], 7);
  const chain = r.device.pop()!;
  r.device.addUsed(chain.head, 13);
  r.device.publishUsed();
  assert.throws(() => r.driver.getUsed(), (e: unknown) => e instanceof VirtioError && e.code === 'USED_LEN_INVALID');
  assert.equal(r.driver.isBroken, true);
  assert.equal(r.driver.getUsed(), null);
  assert.deepEqual(r.driver.detachUnused(), [7], 'the buffer is still recoverable by detaching it');
});

test('getUsed(): used len equal to the writable bytes (split over several descriptors, or indirect) is fine', () => {
  for (const indirect of [false, true]) {
    const r = makeRing(8, { indirect });
    r.driver.add([{ addr: BUF, len: 48 }], [{ addr: BUF + 64, len: 4 }, { addr: BUF + 128, len: 8 }], 3);
    const chain = r.device.pop()!;
    r.device.pushUsed(chain, 12);
    assert.deepEqual(r.driver.getUsed(), { token: 3, len: 12 });
  }
});

test('getUsed(): used.idx jumping by more than the queue size is USED_ID_INVALID and breaks the queue', () => {
  const r = makeRing(4, { indirect: true }); // one descriptor per buffer: four in flight
  for (let t = 1; t <= 4; t++) r.driver.add([{ addr: BUF, len: 16 }], [{ addr: BUF + 64, len: 12 }], t);
  for (let c; (c = r.device.pop()); ) r.device.addUsed(c.head, 12);
  r.memory.writeU16(r.ring.used + 2, 5); // 4 used elements exist, the device claims 5
  assert.throws(() => r.driver.getUsed(), (e: unknown) => e instanceof VirtioError && e.code === 'USED_ID_INVALID');
  assert.equal(r.driver.isBroken, true);
  assert.equal(r.driver.add([{ addr: BUF, len: 1 }], [], 9), false, 'a broken queue takes no more buffers');
  assert.deepEqual(r.driver.detachUnused().sort(), [1, 2, 3, 4]);
  assert.equal(r.driver.numFree, 4);
});

test('getUsed(): the same id returned twice is caught the second time', () => {
  const r = makeRing(4);
  r.driver.add([{ addr: BUF, len: 16 }], [{ addr: BUF + 64, len: 12 }], 1);
  r.driver.add([{ addr: BUF, len: 16 }], [{ addr: BUF + 64, len: 12 }], 2);
  const c = r.device.pop()!;
  r.device.addUsed(c.head, 12);
  r.device.addUsed(c.head, 12);
  r.device.publishUsed();
  assert.deepEqual(r.driver.getUsed(), { token: 1, len: 12 });
  assert.throws(() => r.driver.getUsed(), (e: unknown) => e instanceof VirtioError && e.code === 'USED_ID_INVALID');
  assert.deepEqual(r.driver.detachUnused(), [2]);
});

test('getUsed(): an id that is a descriptor inside a chain (not its head) is refused', () => {
  const r = makeRing(8);
  r.driver.add([{ addr: BUF, len: 16 }], [{ addr: BUF + 64, len: 12 }], 1); // descriptors 0 → 1
  const c = r.device.pop()!;
  assert.equal(c.head, 0);
  r.device.addUsed(1, 12);
  r.device.publishUsed();
  assert.throws(() => r.driver.getUsed(), (e: unknown) => e instanceof VirtioError && e.code === 'USED_ID_INVALID');
});
