// virtio 1.2 §2.2.2: "The device SHOULD accept any valid subset of features the driver accepts,
// otherwise it MUST fail to set the FEATURES_OK device status bit when the driver writes it."
// §3.1.1: DRIVER_OK comes after FEATURES_OK was accepted; a device that refused FEATURES_OK is
// not live, so a DRIVER_OK in the same status write must not stick either.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { Status, bit } from '../../src/virtio/constants.js';
import { harness } from '../helpers/runtime.js';

test('FEATURES_OK refused in the same write as DRIVER_OK leaves DRIVER_OK clear (§2.2.2, §3.1.1)', () => {
  const h = harness(new VirtioTestDevice());
  const rt = h.runtime;
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER);
  rt.writeDriverFeatures(bit(0)); // no VERSION_1: refused
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  assert.equal(rt.status & Status.FEATURES_OK, 0);
  assert.equal(rt.status & Status.DRIVER_OK, 0, `status ${rt.status} reports DRIVER_OK for a device that never went live`);
  assert.equal(rt.driverOk, false);
  rt.configChanged();
  assert.equal(h.configInterrupts, 0, 'no configuration change notification for a device that is not live');
});
