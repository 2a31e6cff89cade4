/**
 * The virtio-test driver against a misbehaving device (cases not in test/drivers/): a used.idx
 * that jumps past the queue size, a used len beyond the buffer, a device that answers after the
 * file was closed, and one that never answers while the file is closed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeResponse } from '../../src/devices/virtio-test/protocol.js';
import { Errno } from '../../src/drivers/kernel.js';
import { bindTestDriver, forgeUsed, heldRequest } from '../helpers/virtio-test-driver.js';

const setup = (queueSize = 8) => bindTestDriver({ queueSize });
const tick = () => new Promise((r) => setTimeout(r, 5));
const isErrno = (code: string) => (e: unknown) => e instanceof Errno && e.code === code;

test('used.idx jumping by more than the queue size: the device is broken, readers and writers get EIO', async () => {
  const s = await setup();
  const { fd, pending } = await heldRequest(s);
  forgeUsed(s, { usedIdx: 9 }); // queue size 8
  await assert.rejects(pending, isErrno('EIO'));
  await assert.rejects(s.kernel.write(fd, Uint8Array.of(2)), isErrno('EIO'));
  assert.ok(s.lines.some((l) => /USED_ID_INVALID.*device is broken/.test(l)), s.lines.join('\n'));
});

test('a used len larger than the response buffer: the device is broken (USED_LEN_INVALID), EIO', async () => {
  const s = await setup();
  const { pending } = await heldRequest(s);
  forgeUsed(s, { len: 4096 });
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
