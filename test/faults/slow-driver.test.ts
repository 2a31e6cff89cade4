/**
 * A slow guest: the virtio-test driver deferring the processing of its interrupts
 * (interruptDelay / virtioTestParams.interruptDelay, what the load tests use). Answers still
 * arrive exactly once; an unbind while a deferred processing is pending fails the waiters with
 * ENODEV, and the deferred processing then touches nothing (the ring is gone).
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { decodeResponse } from '../../src/devices/virtio-test/protocol.js';
import { Errno } from '../../src/drivers/kernel.js';
import { virtioTestCounters, virtioTestParams } from '../../src/drivers/virtio-test/driver.js';
import { bindTestDriver } from '../helpers/virtio-test-driver.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
afterEach(() => {
  virtioTestParams.interruptDelay = null;
});

test('every interrupt deferred by up to 15 ms: 8 writers × 50 requests on a ring of 4, every answer right and once', async () => {
  const s = await bindTestDriver({ queueSize: 4 });
  virtioTestParams.interruptDelay = { rate: 1, maxMs: 15, seed: 3 };
  const before = { ...virtioTestCounters };
  const fds = Array.from({ length: 8 }, () => s.kernel.open('/dev/virtio_misc'));
  await Promise.all(
    fds.map(async (fd, i) => {
      for (let k = 0; k < 50; k++) {
        const n = (i * 50 + k) & 0xff;
        await s.kernel.write(fd, Uint8Array.of(n));
        assert.deepEqual(decodeResponse(await s.kernel.read(fd, 12)), { ret: n + 101, arg1: n + 102, arg2: n + 103 });
      }
      await assert.rejects(s.kernel.read(fd, 12), (e: unknown) => e instanceof Errno && e.code === 'EAGAIN', 'nothing more to read');
    }),
  );
  assert.ok(virtioTestCounters.deferred - before.deferred > 0);
  assert.equal(virtioTestCounters.deferred - before.deferred + (virtioTestCounters.coalesced - before.coalesced), virtioTestCounters.interrupts - before.interrupts);
  assert.ok(virtioTestCounters.ringFullWaits - before.ringFullWaits > 0, 'writers waited on the full ring');
  for (const fd of fds) s.kernel.close(fd);
  s.driver.remove(s.dev);
  s.dev.deleteQueues();
  assert.equal(s.kernel.dmaFreeBytes, s.freeBefore, 'every DMA buffer came back');
});

test('the device unbound while a deferred interrupt processing is pending: waiters get ENODEV, the late processing does nothing', async () => {
  const s = await bindTestDriver({ queueSize: 8 });
  virtioTestParams.interruptDelay = { rate: 1, maxMs: 40, seed: 11 };
  const before = { ...virtioTestCounters };
  const fd = s.kernel.open('/dev/virtio_misc');
  for (let i = 0; i < 3; i++) await s.kernel.write(fd, Uint8Array.of(i));
  const reads = [0, 1, 2].map(() => s.kernel.read(fd, 12).then(() => 'answered', (e: unknown) => (e instanceof Errno ? e.code : String(e))));
  // the device answers, the interrupt comes and its processing is deferred
  while (virtioTestCounters.deferred === before.deferred) await new Promise((r) => setImmediate(r));
  s.driver.remove(s.dev);
  s.dev.deleteQueues();
  assert.deepEqual(await Promise.all(reads), ['ENODEV', 'ENODEV', 'ENODEV']);
  await sleep(60); // the deferred processing runs now: it must not touch the deleted ring or throw
  assert.equal(s.kernel.dmaFreeBytes, s.freeBefore, 'every DMA buffer came back');
  s.kernel.close(fd);
});
