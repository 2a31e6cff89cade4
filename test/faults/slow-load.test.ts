/**
 * Faults under load on the embedded machine: the device AND the guest slow at random.
 *
 *  - device (SlowDevice, seeded): random delays of 0–2 ms on ~1 % of answers (so answers also
 *    come back out of order), and stalls of 10–50 ms (every answer due meanwhile held, so the
 *    ring fills with chains the device holds);
 *  - guest: the driver defers the processing of 5 % of its interrupts by 0–2 ms, and each stress
 *    writer pauses 0–2 ms before 0.5 % of its writes and reads.
 *
 * Every request must be answered exactly once and correctly: the stress program's summary (every
 * answer matched against the writer's outstanding requests, nothing left to read at the end) and
 * the device's count of requests served.
 *
 *   SLOW_SEED=N            replay a seed (printed as a diagnostic)
 *   SLOW_COUNT=K           requests per writer of the big test (default 100,000: 8 × 100,000)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SlowDeviceOptions } from '../../src/device/slow-device.js';
import { runMachine } from '../../src/machine/machine.js';

const SEED = Number(process.env.SLOW_SEED ?? Math.floor(Math.random() * 1e9));
const COUNT = Number(process.env.SLOW_COUNT ?? 100_000);

const DEVICE_SLOWNESS: SlowDeviceOptions = { randomRate: 0.01, randomMaxMs: 2, stallRate: 1 / 20_000, stallMs: [10, 50] };
const GUEST_SLOWNESS = ['--irq-delay', '0.05:2', '--pause', '0.005:2'];

async function run(argv: string[], opts: { queueSize?: number; deviceDelayMs?: number; deviceSlowness?: SlowDeviceOptions; quiet?: boolean }) {
  const kept: string[] = [];
  const err: string[] = [];
  let requests = 0;
  const t0 = performance.now();
  const { exitCode, stats } = await runMachine({
    argv,
    ...opts,
    stats: true,
    timeoutMs: 170_000,
    sink: (t, s) => {
      if (s === 'stderr') err.push(t);
      if (t.startsWith('QEMU_BACK_END: >>> get type [')) requests++;
      else if (!t.startsWith('QEMU_BACK_END') && !/\] virtio (response|test_request_done)/.test(t)) kept.push(t);
    },
  });
  return { exitCode, stats, kept, err, requests, ms: performance.now() - t0 };
}

const summary = (w: number, k: number) =>
  new RegExp(`^stress: ${w} writers x ${k} requests: ${w * k} verified, 0 lost, 0 duplicated, 0 mismatched in \\d+ ms \\(\\d+ req/s\\)$`);
const SLOW_LINE = /^stress: slow guest: (\d+) pauses, (\d+) of (\d+) interrupts deferred \((\d+) coalesced\), ring full (\d+) times, longest wait (\d+) ms$/;

function slowGuestLine(kept: string[]) {
  const m = kept.map((l) => SLOW_LINE.exec(l)).find((x) => x);
  assert.ok(m, `no slow-guest line:\n${kept.join('\n')}`);
  const [pauses, deferred, interrupts, , ringFull, longestWait] = m.slice(1).map(Number) as number[];
  return { line: m[0], pauses: pauses!, deferred: deferred!, interrupts: interrupts!, ringFull: ringFull!, longestWait: longestWait! };
}

test(`8 writers × ${COUNT} requests, device and guest slow at random (seed ${SEED}): every request answered once and right`, { timeout: 180_000 }, async (t) => {
  const P = 8;
  // 4 outstanding per writer on a ring of 16: 32 wanted, so writers wait for ring space; a stall holds the full ring
  const r = await run(['stress', '-p', String(P), '-c', String(COUNT), '-w', '4', '--seed', String(SEED), ...GUEST_SLOWNESS], {
    queueSize: 16,
    quiet: true,
    deviceSlowness: { ...DEVICE_SLOWNESS, seed: SEED },
  });
  const show = [...r.kept, ...r.err].join('\n');
  assert.equal(r.exitCode, 0, show);
  const line = r.kept.find((l) => l.startsWith(`stress: ${P} writers`));
  assert.ok(line && summary(P, COUNT).test(line), `summary line: ${line}\n${show}`);
  const slow = slowGuestLine(r.kept);
  // the faults really happened: writers paused, interrupts deferred, the ring was full, a stall was felt
  assert.ok(slow.pauses > 0 && slow.deferred > 0 && slow.ringFull > 0, slow.line);
  assert.ok(slow.longestWait >= 10, `a device stall (≥ 10 ms) shows as a wait: ${slow.line}`);
  // the device served each request exactly once, holds none at the end, and saw no error
  const q = r.stats?.queues[0];
  assert.ok(q, 'device stats');
  assert.equal(q.counters.requests, P * COUNT);
  assert.equal(q.counters.errors, 0);
  assert.equal(q.held, 0);
  assert.deepEqual(r.err, []);
  t.diagnostic(`${line}; ${slow.line}; device: ${q.counters.notifications} interrupts, ${q.counters.kicks} kicks (machine run ${Math.round(r.ms)} ms including boot)`);
});

test(`one request per writer (the default stress form), 8 writers on a ring of 4, device and guest slow (seed ${SEED})`, { timeout: 120_000 }, async (t) => {
  const K = 10_000;
  const r = await run(['stress', '-p', '8', '-c', String(K), '--seed', String(SEED + 1), ...GUEST_SLOWNESS], {
    queueSize: 4,
    deviceSlowness: { ...DEVICE_SLOWNESS, seed: SEED + 1 },
  });
  const show = [...r.kept, ...r.err].join('\n');
  assert.equal(r.exitCode, 0, show);
  const line = r.kept.find((l) => l.startsWith('stress: 8 writers'));
  assert.ok(line && summary(8, K).test(line), `summary line: ${line}\n${show}`);
  const slow = slowGuestLine(r.kept);
  assert.ok(slow.pauses > 0 && slow.deferred > 0 && slow.ringFull > 0, slow.line);
  // not quiet: the device's own log shows each request served exactly once
  assert.equal(r.requests, 8 * K);
  assert.equal(r.stats?.queues[0]?.counters.requests, 8 * K);
  assert.deepEqual(r.err, []);
  t.diagnostic(`${line}; ${slow.line} (machine run ${Math.round(r.ms)} ms)`);
});

test(`a guest reset with requests in flight while interrupts are deferred and the device is slow (3 rounds, seed ${SEED})`, { timeout: 60_000 }, async () => {
  for (let round = 0; round < 3; round++) {
    const seed = SEED + 10 + round;
    // every interrupt deferred 0–3 ms: a deferred processing is often pending when the driver is unbound
    const r = await run(['stress', '-p', '4', '-c', '100', '-w', '3', '--reset', '--seed', String(seed), '--irq-delay', '1:3', '--pause', '0.2:2'], {
      queueSize: 8,
      deviceDelayMs: 40, // the 4 requests are surely in flight at the reset
      deviceSlowness: { randomRate: 0.5, randomMaxMs: 5, stallRate: 0.01, stallMs: [5, 20], seed },
    });
    const show = [...r.kept, ...r.err].join('\n');
    assert.equal(r.exitCode, 0, show);
    assert.ok(
      r.kept.includes('stress: reset with 4 requests in flight: 0 answered before the reset, 4 failed with ENODEV/EIO, 4 of 4 old files refuse writes'),
      show,
    );
    assert.ok(r.kept.some((l) => summary(4, 100).test(l)), show);
    // 4 before the reset + 400 after: a late answer to an old request would be a mismatch or an extra request
    assert.equal(r.requests, 4 + 400);
    assert.deepEqual(r.err, []);
  }
});

test('stress refuses bad slowness arguments with a message', async () => {
  for (const argv of [['stress', '--pause', '2:1'], ['stress', '--irq-delay', 'x'], ['stress', '-w', '0'], ['stress', '--seed', '-1']]) {
    const r = await run(argv, {});
    assert.equal(r.exitCode, 255);
    assert.ok(r.kept.length === 1 && /^ERROR:/.test(r.kept[0]!), r.kept.join('\n'));
  }
});
