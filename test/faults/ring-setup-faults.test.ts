/**
 * Rules of the ring and the runtime that the other suites leave implicit: ring placement at
 * DRIVER_OK (size, alignment, memory), FAILED stopping the queues, and the device half's own
 * guards against a device model bug (used id / used len).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { Status } from '../../src/virtio/constants.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { harness, bringUp, RAM, RAM_BYTES } from '../helpers/runtime.js';
import { makeRing } from '../helpers/ring.js';

const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;
const V1_CAN_PRINT = (1n << 32n) | 1n;

function upTo(h: ReturnType<typeof harness>, queue: { size: number; desc: number; avail: number; used: number }) {
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1_CAN_PRINT);
  h.runtime.writeStatus(ACK_DRIVER | Status.FEATURES_OK);
  Object.assign(h.runtime.queues[0]!, { ...queue, ready: true });
  h.runtime.writeStatus(ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
}

const cases: { name: string; code: string; queue: { size: number; desc: number; avail: number; used: number } }[] = [
  { name: 'queue size not a power of two', code: 'QUEUE_SIZE_INVALID', queue: { size: 3, desc: RAM, avail: RAM + 0x1000, used: RAM + 0x2000 } },
  { name: 'descriptor table not 16-aligned', code: 'QUEUE_ALIGNMENT', queue: { size: 8, desc: RAM + 8, avail: RAM + 0x1000, used: RAM + 0x2000 } },
  { name: 'used ring not 4-aligned', code: 'QUEUE_ALIGNMENT', queue: { size: 8, desc: RAM, avail: RAM + 0x1000, used: RAM + 0x2002 } },
  { name: 'used ring outside guest memory', code: 'MEM_OUT_OF_RANGE', queue: { size: 8, desc: RAM, avail: RAM + 0x1000, used: RAM + RAM_BYTES - 8 } },
];
for (const c of cases) {
  test(`DRIVER_OK with a bad ring (${c.name}) is a device error: NEEDS_RESET, queue not started`, () => {
    const h = harness(new VirtioTestDevice({ print: false }));
    upTo(h, c.queue);
    assert.ok(h.runtime.status & Status.NEEDS_RESET);
    assert.equal(h.runtime.activeQueue(0), null);
    assert.ok(h.deviceErrors.some((e) => e instanceof VirtioError && e.code === c.code), h.warnings.join('\n'));
  });
}

test('FAILED stops the queues: nothing is served afterwards', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const driver = bringUp(h);
  h.runtime.writeStatus(h.runtime.status | Status.FAILED);
  assert.ok(h.runtime.status & Status.FAILED);
  assert.equal(h.runtime.activeQueue(0), null);
  driver.add([{ addr: RAM + 0x8000, len: 48 }], [{ addr: RAM + 0x8100, len: 12 }], 1);
  h.runtime.notify(0);
  assert.equal(driver.getUsed(), null);
});

test('the device half refuses a used id that is no descriptor and a used len beyond the chain (device model bugs)', () => {
  const r = makeRing(8);
  assert.throws(() => r.device.addUsed(8, 0), RangeError);
  assert.throws(() => r.device.addUsed(-1, 0), RangeError);
  r.driver.add([{ addr: 0x18000, len: 48 }], [{ addr: 0x18100, len: 12 }], 1);
  const chain = r.device.pop()!;
  assert.throws(() => r.device.pushUsed(chain, 13), RangeError);
  r.device.pushUsed(chain, 12);
  assert.deepEqual(r.driver.getUsed(), { token: 1, len: 12 });
});
