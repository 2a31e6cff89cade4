import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DeviceContext, VirtioDevice } from '../../src/device/device.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE, answer, decodeResponse, encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { DeviceHarness } from '../../src/testing/index.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { Status } from '../../src/virtio/constants.js';
import { fail } from '../../src/virtio/errors.js';

function encoded(n: number): Uint8Array {
  const bytes = new Uint8Array(REQUEST_SIZE);
  encodeRequest(requestFor(n), bytes);
  return bytes;
}

test('virtio-test through the harness: the answer, the log, the negotiated features', async () => {
  const h = new DeviceHarness(new VirtioTestDevice());
  assert.ok(h.status & Status.DRIVER_OK);
  const { len, written } = await h.request(0, [encoded(10)], [RESPONSE_SIZE]);
  assert.equal(len, RESPONSE_SIZE);
  assert.deepEqual(decodeResponse(written), answer(requestFor(10)));
  assert.equal(h.logs.length, 5);
  assert.equal(h.features & 1n, 1n, 'VIRTIO_TEST_F_CAN_PRINT accepted');
});

test('more requests than the ring holds: each waits for room, every one answered once', async () => {
  const h = new DeviceHarness(new VirtioTestDevice({ print: false }), { queueSize: 4, indirect: true });
  const all = await Promise.all(Array.from({ length: 100 }, (_, n) => h.request(0, [encoded(n & 0xff).subarray(0, 20), encoded(n & 0xff).subarray(20)], [5, 7])));
  all.forEach((c, n) => assert.deepEqual(decodeResponse(c.written), answer(requestFor(n & 0xff))));
});

test('a device error rejects the request and leaves DEVICE_NEEDS_RESET visible', async () => {
  const broken: VirtioDevice = {
    deviceId: 99,
    features: 0n,
    configSize: 0,
    queueMaxSizes: [8],
    readConfig() {},
    writeConfig() {},
    handleChain(_q: number, _c: DescriptorChain, _ctx: DeviceContext): number {
      fail('DEVICE_REQUEST_INVALID', 'this device refuses everything', '§2.1.2');
    },
    reset() {},
  };
  const h = new DeviceHarness(broken);
  await assert.rejects(h.request(0, [new Uint8Array(4)], [4]), /NEEDS_RESET/);
  assert.ok(h.needsReset);
  assert.equal(h.deviceErrors.length, 1);
  await assert.rejects(h.request(0, [], [4]), /NEEDS_RESET/);
});

test('a queue the device does not have is a RangeError', async () => {
  const h = new DeviceHarness(new VirtioTestDevice());
  await assert.rejects(h.request(1, [], [4]), RangeError);
});
