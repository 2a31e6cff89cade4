/**
 * The embedded machine with `ring: 'packed'` (virtio 1.2 §2.8, VIRTIO_F_RING_PACKED): the
 * guest's virtio core accepts the packed ring the runtime offers, every device runs over it with
 * the same output as over the split ring, and the device's state shows the packed layout.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { runMachine, type MachineOptions } from '../../src/machine/machine.js';
import { FeatureBit } from '../../src/virtio/constants.js';

const PACKED = 1n << BigInt(FeatureBit.RING_PACKED);

async function run(opts: Omit<MachineOptions, 'sink'>) {
  const out: string[] = [];
  const err: string[] = [];
  const r = await runMachine({ timeoutMs: 120_000, stats: true, ...opts, sink: (t, s) => (s === 'stderr' ? err : out).push(t) });
  return { ...r, out, err };
}

const program = (lines: string[]) => lines.map((l) => l.replace(/^\[\s*\d+\.\d{6}\] /, ''));

test('virtio-test over a packed ring: the same lines as over the split one, RING_PACKED negotiated', async () => {
  const split = await run({ argv: ['virtio', '-c', '300', '7'] });
  const packed = await run({ argv: ['virtio', '-c', '300', '7'], ring: 'packed' });
  assert.equal(packed.exitCode, 0, packed.err.join('\n'));
  assert.deepEqual(program(packed.out), program(split.out));
  assert.equal(packed.out.at(-1), 'virtio: 300 requests, 300 responses verified');
  assert.equal(BigInt(packed.stats!.driverFeatures) & PACKED, PACKED, 'the driver accepted VIRTIO_F_RING_PACKED');
  assert.equal(BigInt(split.stats!.driverFeatures) & PACKED, 0n, 'a split run does not negotiate it');
  assert.equal(packed.stats!.totals.requests, 300);
  assert.equal(packed.stats!.errors, 0);
});

test('a packed ring of 2 with a slow device: the ring wraps many times, nothing is lost', async () => {
  const r = await run({ argv: ['virtio', '-c', '500', '3'], ring: 'packed', queueSize: 2, deviceDelayMs: 0 });
  assert.equal(r.exitCode, 0, r.err.join('\n'));
  assert.equal(r.out.at(-1), 'virtio: 500 requests, 500 responses verified');
  assert.equal(r.stats!.queues[0]!.size, 2);
});

test('100,000 requests over a packed ring of 8: every one answered once', async () => {
  const r = await run({ argv: ['virtio', '-c', '100000', '0'], ring: 'packed', queueSize: 8, quiet: true });
  assert.equal(r.exitCode, 0, r.err.join('\n'));
  assert.equal(r.stats!.totals.requests, 100_000);
  assert.equal(r.stats!.errors, 0);
});

test('rng and blk over packed rings (blk: 2 queues, a real image file)', async () => {
  const rng = await run({ device: 'rng', argv: ['hwrng-read', '64'], ring: 'packed' });
  assert.equal(rng.exitCode, 0, rng.err.join('\n'));
  assert.equal(BigInt(rng.stats!.driverFeatures) & PACKED, PACKED);
  const dir = mkdtempSync(path.join(tmpdir(), 'vt-packed-'));
  try {
    const image = path.join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(4 << 20, 0x5a));
    const blk = await run({ device: 'blk', deviceOptions: { image, 'num-queues': 2 }, argv: ['blkcheck', '256'], ring: 'packed' });
    assert.equal(blk.exitCode, 0, [...blk.out, ...blk.err].join('\n'));
    assert.equal(BigInt(blk.stats!.driverFeatures) & PACKED, PACKED);
    assert.ok(blk.out.some((l) => l === 'blkcheck: original contents restored and verified'), blk.out.join('\n'));
    assert.equal(blk.stats!.errors, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
