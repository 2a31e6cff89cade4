/** The guest and the device on separate threads, over shared RAM and the virtio-mmio bus. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runMachine } from '../../src/machine/machine.js';

async function run(argv: string[], opts: { queueSize?: number; deviceDelayMs?: number; driverDeviceId?: number } = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const { exitCode } = await runMachine({ argv, ...opts, sink: (t, s) => (s === 'stderr' ? err : out).push(t), timeoutMs: 60_000 });
  return { exitCode, out, err };
}

test('all 256 values of N go through the machine and come back right', async () => {
  const r = await run(['virtio', '-c', '256', '0']);
  assert.equal(r.exitCode, 0, r.err.join('\n'));
  for (let n = 0; n < 256; n++) {
    assert.ok(r.out.includes(`QEMU_BACK_END: >>> get type [ ${n} ] form the front end <<<`), `request ${n}`);
    assert.ok(r.out.some((l) => l.endsWith(`virtio response ret is ${n + 101}`)), `response ${n}`);
  }
  assert.equal(r.out.at(-1), 'virtio: 256 requests, 256 responses verified');
});

test('lines from the two threads come out in the order they happened', async () => {
  const r = await run(['virtio', '77']);
  assert.equal(r.exitCode, 0);
  assert.equal(r.out.length, 9);
  assert.ok(r.out.slice(0, 5).every((l) => l.startsWith('QEMU_BACK_END')));
  assert.ok(r.out.slice(5).every((l) => /^\[\s*\d+\.\d{6}\] virtio /.test(l)));
});

test('a slow device with a full ring: writers wait, nothing is dropped', async () => {
  const r = await run(['virtio', '-c', '40', '9'], { queueSize: 2, deviceDelayMs: 3 });
  assert.equal(r.exitCode, 0, r.err.join('\n'));
  assert.equal(r.out.filter((l) => l.startsWith('QEMU_BACK_END: >>> get type')).length, 40);
  assert.equal(r.out.at(-1), 'virtio: 40 requests, 40 responses verified');
});

test('queue size 32768 works end to end', async () => {
  const r = await run(['virtio', '-c', '300', '1'], { queueSize: 32768 });
  assert.equal(r.exitCode, 0, r.err.join('\n'));
});

test('queue size 1 works (one request at a time, in one indirect descriptor)', async () => {
  const r = await run(['virtio', '-c', '20', '5'], { queueSize: 1 });
  assert.equal(r.exitCode, 0, r.err.join('\n'));
});

test('with no driver bound, the program fails to open /dev/virtio_misc as the seed reports it', async () => {
  const r = await run(['virtio', '5'], { driverDeviceId: 46 });
  assert.equal(r.exitCode, 255);
  assert.deepEqual(r.out, ['ERROR:virtio_misc open failed!']);
});
