import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { decodeResponse } from '../../src/devices/virtio-test/protocol.js';
import { Errno } from '../../src/drivers/kernel.js';
import { VirtioTestDriver } from '../../src/drivers/virtio-test/driver.js';
import { ProbeError, VirtioDriverDevice } from '../../src/drivers/virtio-bus.js';
import { Status } from '../../src/virtio/constants.js';
import { DirectTransport, guestKernel } from '../helpers/direct-transport.js';
import { bindTestDriver, forgeUsed, heldRequest } from '../helpers/virtio-test-driver.js';

const setup = bindTestDriver;

const freeBytes = (k: { dmaFreeBytes: number }) => k.dmaFreeBytes;

test('probe fails with a clear message when the device lacks CAN_PRINT, and marks it FAILED', async () => {
  const g = guestKernel();
  const device = new VirtioTestDevice({ print: false });
  Object.defineProperty(device, 'features', { value: 0n });
  const transport = new DirectTransport(device, g.memory);
  const dev = new VirtioDriverDevice(transport, g.kernel);
  const before = freeBytes(g.kernel);
  await assert.rejects(dev.bind(new VirtioTestDriver()), (e: unknown) => e instanceof ProbeError && /VIRTIO_TEST_F_CAN_PRINT/.test(e.message));
  assert.ok(transport.getStatus() & Status.FAILED);
  assert.throws(() => g.kernel.open('/dev/virtio_misc'), (e: unknown) => e instanceof Errno && e.code === 'ENOENT');
  assert.equal(freeBytes(g.kernel), before, 'no guest memory leaked by the failed probe');
});

test('write of one byte returns 1 and read() returns the response; other lengths are EINVAL', async () => {
  const s = await setup();
  const fd = s.kernel.open('/dev/virtio_misc');
  assert.equal(await s.kernel.write(fd, Uint8Array.of(10)), 1);
  assert.deepEqual(decodeResponse(await s.kernel.read(fd, 12)), { ret: 111, arg1: 112, arg2: 113 });
  await assert.rejects(s.kernel.write(fd, new Uint8Array(0)), (e: unknown) => e instanceof Errno && e.code === 'EINVAL');
  await assert.rejects(s.kernel.write(fd, Uint8Array.of(1, 2)), (e: unknown) => e instanceof Errno && e.code === 'EINVAL');
  await assert.rejects(s.kernel.read(fd, 11), (e: unknown) => e instanceof Errno && e.code === 'EINVAL');
  await assert.rejects(s.kernel.read(fd, 12), (e: unknown) => e instanceof Errno && e.code === 'EAGAIN');
  assert.deepEqual(
    s.lines.filter((l) => /virtio (test_request_done|response)/.test(l)).map((l) => l.replace(/^\[[^\]]+\] /, '')),
    ['virtio test_request_done get ack', 'virtio response ret is 111', 'virtio response arg1 is 112', 'virtio response arg2 is 113'],
  );
});

test('concurrent writers each get their own response (the seed shares one buffer)', async () => {
  const s = await setup({ queueSize: 64 });
  const fds = Array.from({ length: 8 }, () => s.kernel.open('/dev/virtio_misc'));
  await Promise.all(
    fds.map(async (fd, i) => {
      for (let k = 0; k < 20; k++) {
        const n = (i * 20 + k) & 0xff;
        await s.kernel.write(fd, Uint8Array.of(n));
        assert.deepEqual(decodeResponse(await s.kernel.read(fd, 12)), { ret: n + 101, arg1: n + 102, arg2: n + 103 });
      }
    }),
  );
});

test('a full ring makes the writer wait instead of dropping the request', async () => {
  const s = await setup({ queueSize: 1 }); // one request (one indirect descriptor) fills it
  const fd = s.kernel.open('/dev/virtio_misc');
  s.transport.paused = true;
  assert.equal(await s.kernel.write(fd, Uint8Array.of(1)), 1);
  let second = false;
  const w = s.kernel.write(fd, Uint8Array.of(2)).then((n) => {
    second = true;
    return n;
  });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(second, false, 'the second write waits for ring space');
  s.transport.release();
  assert.equal(await w, 1);
  s.transport.release();
  const rets = [decodeResponse(await s.kernel.read(fd, 12)).ret, decodeResponse(await s.kernel.read(fd, 12)).ret];
  assert.deepEqual(rets.sort(), [102, 103]);
});

test('a second device gets /dev/virtio_misc1', async () => {
  const s = await setup();
  const device2 = new VirtioTestDevice({ print: false });
  const dev2 = new VirtioDriverDevice(new DirectTransport(device2, s.memory), s.kernel);
  await dev2.bind(s.driver);
  assert.equal(s.driver.miscName(dev2), 'virtio_misc1');
  const fd = s.kernel.open('/dev/virtio_misc1');
  await s.kernel.write(fd, Uint8Array.of(5));
  assert.equal(decodeResponse(await s.kernel.read(fd, 12)).ret, 106);
  assert.equal(device2.served, 1);
  assert.equal(s.device.served, 0);
});

test('a device that returns a used id not in flight marks the device broken: EIO, no crash', async () => {
  const s = await setup();
  const { fd, pending } = await heldRequest(s);
  forgeUsed(s, { id: 7, len: 12 }); // id 7 was never made available
  await assert.rejects(pending, (e: unknown) => e instanceof Errno && e.code === 'EIO');
  await assert.rejects(s.kernel.write(fd, Uint8Array.of(2)), (e: unknown) => e instanceof Errno && e.code === 'EIO');
  assert.ok(s.lines.some((l) => /device is broken/.test(l)));
});

test('a used length shorter than the response marks the device broken', async () => {
  const s = await setup();
  const { pending } = await heldRequest(s);
  forgeUsed(s, { len: 4 }); // the real head, 4 of the 12 bytes
  await assert.rejects(pending, (e: unknown) => e instanceof Errno && e.code === 'EIO');
});

test('DEVICE_NEEDS_RESET from the device fails waiting readers with EIO', async () => {
  const s = await setup();
  const fd = s.kernel.open('/dev/virtio_misc');
  s.transport.paused = true;
  await s.kernel.write(fd, Uint8Array.of(1));
  const pending = s.kernel.read(fd, 12);
  s.transport.runtime.deviceError(new Error('simulated device failure'));
  await assert.rejects(pending, (e: unknown) => e instanceof Errno && e.code === 'EIO');
});
