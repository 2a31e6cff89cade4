/**
 * Faults and load on the embedded machine (guest and device on two threads over shared RAM):
 * many writers, a reset with requests in flight, a slow device with a full ring.
 *
 *   STRESS_WRITERS=8 STRESS_COUNT=10000 (defaults) size the load test.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runMachine } from '../../src/machine/machine.js';

const WRITERS = Number(process.env.STRESS_WRITERS ?? 8);
const COUNT = Number(process.env.STRESS_COUNT ?? 10_000);

async function run(argv: string[], opts: { queueSize?: number; deviceDelayMs?: number } = {}) {
  const kept: string[] = [];
  const err: string[] = [];
  const requestTypes = new Map<number, number>();
  let requests = 0;
  const t0 = performance.now();
  const { exitCode } = await runMachine({
    argv,
    ...opts,
    timeoutMs: 120_000,
    sink: (t, s) => {
      if (s === 'stderr') err.push(t);
      const m = /^QEMU_BACK_END: >>> get type \[ (\d+) \]/.exec(t);
      if (m) {
        requests++;
        requestTypes.set(Number(m[1]), (requestTypes.get(Number(m[1])) ?? 0) + 1);
      } else if (!t.startsWith('QEMU_BACK_END') && !/\] virtio (response|test_request_done)/.test(t)) kept.push(t);
    },
  });
  return { exitCode, kept, err, requests, requestTypes, ms: performance.now() - t0 };
}

const summary = (w: number, k: number) =>
  new RegExp(`^stress: ${w} writers x ${k} requests: ${w * k} verified, 0 lost, 0 duplicated, 0 mismatched in \\d+ ms \\((\\d+) req/s\\)$`);

test(`${WRITERS} guest writers × ${COUNT} requests: none lost, none duplicated, every response matches`, async (t) => {
  const r = await run(['stress', '-p', String(WRITERS), '-c', String(COUNT)]);
  assert.equal(r.exitCode, 0, [...r.kept, ...r.err].join('\n'));
  const line = r.kept.find((l) => l.startsWith('stress:'));
  const m = line && summary(WRITERS, COUNT).exec(line);
  assert.ok(m, `summary line: ${line}`);
  // the device saw each request exactly once: WRITERS × COUNT chains, none served twice
  assert.equal(r.requests, WRITERS * COUNT);
  const expected = new Map<number, number>();
  for (let w = 0; w < WRITERS; w++) for (let i = 0; i < COUNT; i++) expected.set((w * 37 + i) & 0xff, (expected.get((w * 37 + i) & 0xff) ?? 0) + 1);
  assert.deepEqual([...r.requestTypes].sort((a, b) => a[0] - b[0]), [...expected].sort((a, b) => a[0] - b[0]));
  assert.deepEqual(r.err, []);
  t.diagnostic(`${line} (machine run ${Math.round(r.ms)} ms including boot)`);
});

test('a guest reset with requests in flight: they fail with ENODEV/EIO, then re-negotiation and normal service', async () => {
  // the slow device holds every answer 40 ms, so the 4 requests are surely in flight at the reset
  const r = await run(['stress', '-p', '4', '-c', '50', '--reset'], { deviceDelayMs: 40, queueSize: 8 });
  assert.equal(r.exitCode, 0, [...r.kept, ...r.err].join('\n'));
  assert.ok(r.kept.includes('stress: reset with 4 requests in flight: 0 answered before the reset, 4 failed with ENODEV/EIO, 4 of 4 old files refuse writes'), r.kept.join('\n'));
  assert.ok(r.kept.some((l) => summary(4, 50).test(l)), r.kept.join('\n'));
  assert.ok(r.kept.some((l) => /virtio_test: device removed; device is broken/.test(l)));
  // 4 requests before the reset + 200 after; a late answer to an old request would show as a mismatch
  assert.equal(r.requests, 4 + 200);
  assert.deepEqual(r.err, []);
});

test('a reset and re-enabled queue work again and again (5 rounds, queue size 1)', async () => {
  for (let round = 0; round < 5; round++) {
    const r = await run(['stress', '-p', '3', '-c', '5', '--reset'], { deviceDelayMs: 20, queueSize: 1 });
    // queue size 1: the writes go one at a time, so some may be answered before the reset
    assert.equal(r.exitCode, 0, [...r.kept, ...r.err].join('\n'));
    assert.ok(r.kept.some((l) => summary(3, 5).test(l)), r.kept.join('\n'));
  }
});

test('a slow device with the ring full and 8 writers: writers wait, nothing is dropped', async () => {
  const r = await run(['stress', '-p', '8', '-c', '25'], { queueSize: 2, deviceDelayMs: 2 });
  assert.equal(r.exitCode, 0, [...r.kept, ...r.err].join('\n'));
  assert.ok(r.kept.some((l) => summary(8, 25).test(l)), r.kept.join('\n'));
  assert.equal(r.requests, 200);
});

test('8 writers on a queue of size 1: one request at a time, all served', async () => {
  const r = await run(['stress', '-p', '8', '-c', '50'], { queueSize: 1 });
  assert.equal(r.exitCode, 0, [...r.kept, ...r.err].join('\n'));
  assert.ok(r.kept.some((l) => summary(8, 50).test(l)), r.kept.join('\n'));
});

test('stress refuses bad arguments with a message, not a stack trace', async () => {
  for (const argv of [['stress', '-p', '0'], ['stress', '-c', 'x'], ['stress', '--what']]) {
    const r = await run(argv);
    assert.equal(r.exitCode, 255);
    assert.ok(r.kept.length === 1 && /^(ERROR:|usage: stress)/.test(r.kept[0]!), r.kept.join('\n'));
  }
});
