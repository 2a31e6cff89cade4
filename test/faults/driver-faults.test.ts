/**
 * The virtio-test driver against a misbehaving device (cases not in test/drivers/): a used.idx
 * that jumps past the queue size, a used len beyond the buffer, a device that answers after the
 * file was closed, and one that never answers while the file is closed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/test/device.js';
import { decodeResponse } from '../../src/devices/test/protocol.js';
import { Errno } from '../../src/drivers/kernel.js';
import { VirtioTestDriver } from '../../src/drivers/test/driver.js';
import { VirtioDriverDevice } from '../../src/drivers/virtio-bus.js';
import { DirectTransport, guestKernel } from '../helpers/direct-transport.js';

async function setup(queueSize = 8) {
  const g = guestKernel();
  const device = new VirtioTestDevice({ print: false, queueSize });
  const transport = new DirectTransport(device, g.memory);
  const driver = new VirtioTestDriver();
  const dev = new VirtioDriverDevice(transport, g.kernel);
  const freeBefore = g.kernel.dmaFreeBytes;
  await dev.bind(driver);
  return { ...g, transport, driver, dev, device, freeBefore };
}
const tick = () => new Promise((r) => setTimeout(r, 5));
const isErrno = (code: string) => (e: unknown) => e instanceof Errno && e.code === code;

test('used.idx jumping by more than the queue size: the device is broken, readers and writers get EIO', async () => {
  const s = await setup();
  const fd = s.kernel.open('/dev/virtio_misc');
  s.transport.paused = true;
  await s.kernel.write(fd, Uint8Array.of(1));
  const pending = s.kernel.read(fd, 12);
  const q = s.transport.runtime.queues[0]!;
  s.memory.writeU16(q.used + 2, 9); // queue size 8
  s.transport.interruptNow();
  await assert.rejects(pending, isErrno('EIO'));
  await assert.rejects(s.kernel.write(fd, Uint8Array.of(2)), isErrno('EIO'));
  assert.ok(s.lines.some((l) => /USED_ID_INVALID.*device is broken/.test(l)), s.lines.join('\n'));
});

test('a used len larger than the response buffer: the device is broken (USED_LEN_INVALID), EIO', async () => {
  const s = await setup();
  const fd = s.kernel.open('/dev/virtio_misc');
  s.transport.paused = true;
  await s.kernel.write(fd, Uint8Array.of(1));
  const pending = s.kernel.read(fd, 12);
  const q = s.transport.runtime.queues[0]!;
  s.memory.writeU32(q.used + 4, s.memory.readU16(q.avail + 4));
  s.memory.writeU32(q.used + 8, 4096);
  s.memory.writeU16(q.used + 2, 1);
  s.transport.interruptNow();
  await assert.rejects(pending, isErrno('EIO'));
  assert.ok(s.lines.some((l) => /USED_LEN_INVALID/.test(l)), s.lines.join('\n'));
});

test('a device that answers after the file was closed: the answer is dropped, memory freed, other files unaffected', async () => {
  const s = await setup();
  const a = s.kernel.open('/dev/virtio_misc');
  s.transport.paused = true;
  await s.kernel.write(a, Uint8Array.of(3));
  s.kernel.close(a);
  const b = s.kernel.open('/dev/virtio_misc');
  s.transport.release();
  await tick();
  await assert.rejects(s.kernel.read(b, 12), isErrno('EAGAIN'), 'the closed file\'s answer does not reach another file');
  await s.kernel.write(b, Uint8Array.of(4));
  assert.equal(decodeResponse(await s.kernel.read(b, 12)).ret, 105);
  s.kernel.close(b);
  s.driver.remove(s.dev);
  s.dev.deleteQueues();
  assert.equal(s.kernel.dmaFreeBytes, s.freeBefore, 'every DMA buffer came back');
});

test('a device that never answers while the file is closed: nothing hangs, the buffers come back at unbind', async () => {
  const s = await setup(4);
  const a = s.kernel.open('/dev/virtio_misc');
  s.transport.paused = true; // the device never runs again
  for (let i = 0; i < 4; i++) await s.kernel.write(a, Uint8Array.of(i)); // fills the ring (indirect: 1 descriptor each)
  const stuck = s.kernel.write(a, Uint8Array.of(9)); // waits for ring space
  s.kernel.close(a);
  let settled = false;
  void stuck.then(
    () => (settled = true),
    () => (settled = true),
  );
  await tick();
  assert.equal(settled, false, 'the writer waits for ring space (the device is slow, not wrong)');
  // unbinding (or a device reset) takes the buffers back and wakes the waiting writer with an error
  s.driver.remove(s.dev);
  await assert.rejects(stuck, (e: unknown) => e instanceof Errno && (e.code === 'EIO' || e.code === 'ENODEV'));
  s.dev.deleteQueues();
  assert.equal(s.kernel.dmaFreeBytes, s.freeBefore, 'no DMA memory leaked');
  // a late answer after the reset cannot reach the driver: the runtime stopped the queue
  s.transport.release();
  await tick();
  assert.equal(s.device.served, 0);
});

test('an interrupt with nothing used (spurious) changes nothing', async () => {
  const s = await setup();
  const fd = s.kernel.open('/dev/virtio_misc');
  s.transport.interruptNow();
  s.transport.interruptNow();
  await s.kernel.write(fd, Uint8Array.of(7));
  assert.equal(decodeResponse(await s.kernel.read(fd, 12)).ret, 108);
});
