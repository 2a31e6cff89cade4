// virtio 1.2 §2.1.2: "The device SHOULD set DEVICE_NEEDS_RESET when it enters an error state
// that a reset is needed. If DRIVER_OK is set, after it sets DEVICE_NEEDS_RESET, the device
// MUST send a device configuration change notification to the driver."
// A device that already needs a reset (an error before DRIVER_OK, e.g. a bad QueueNum) must not
// start serving its queues when DRIVER_OK is then set, and must tell the now-live driver.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE, encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';
import { RAM, harness } from '../helpers/runtime.js';

test('DRIVER_OK on a device in DEVICE_NEEDS_RESET serves no queue and sends a config change notification (§2.1.2)', () => {
  const h = harness(new VirtioTestDevice());
  const rt = h.runtime;
  const ok = Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK;
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER);
  rt.writeDriverFeatures(bit(FeatureBit.VERSION_1) | bit(0));
  rt.writeStatus(ok);
  const size = 8;
  const ring = packedLayout(RAM, size);
  Object.assign(rt.queues[0]!, { size, desc: ring.desc, avail: ring.avail, used: ring.used, ready: true });
  const vq = new DriverQueue<number>(h.memory, ringViewsFromGuest(h.memory, ring), { eventIdx: false, indirect: false });
  const buf = RAM + 0x8000;
  encodeRequest(requestFor(1), h.memory.slice(buf, REQUEST_SIZE));
  assert.ok(vq.add([{ addr: buf, len: REQUEST_SIZE }], [{ addr: buf + REQUEST_SIZE, len: RESPONSE_SIZE }], 1));

  rt.deviceError(new Error('error before DRIVER_OK')); // e.g. MmioDevice on an invalid QueueNum
  assert.ok(rt.status & Status.NEEDS_RESET);
  assert.equal(h.configInterrupts, 0);

  rt.writeStatus(ok | Status.DRIVER_OK);
  assert.ok(rt.status & Status.NEEDS_RESET);
  assert.equal(h.memory.readU16(ring.used + 2), 0, 'a device that needs a reset consumed a buffer');
  assert.equal(rt.activeQueue(0), null);
  assert.equal(h.configInterrupts, 1, 'the live driver is told the device needs a reset');
});
