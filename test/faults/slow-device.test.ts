/**
 * SlowDevice, the random slowness the load tests put on a device: seeded random delays (answers
 * out of order), stalls that hold every answer due meanwhile (the ring fills with held chains),
 * and a synchronous fast path for requests neither delayed nor stalled. Through the real
 * DeviceRuntime (DeviceHarness): every answer right, exactly once.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { DeviceContext, VirtioDevice } from '../../src/device/device.js';
import { SlowDevice, seededRandom, type SlowDeviceOptions } from '../../src/device/slow-device.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { RESPONSE_SIZE, answer, decodeResponse, encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { DeviceHarness } from '../../src/testing/device-harness.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';

/** A model answering 12 at once, for driving SlowDevice without a ring. */
const instant: VirtioDevice = {
  deviceId: 45,
  features: 0n,
  configSize: 0,
  queueMaxSizes: [8],
  handleChain: () => 12,
  readConfig() {},
  writeConfig() {},
  reset() {},
};
/** Seed 42's pinned choices (see the test that checks them). */
const DELAYED_42 = '.d.dd.d..d...d.ddd..d.ddd..dd...';
const STALLS_42 = '....SS..S..S..S.SSS..S.....S..SS';
const call = (d: SlowDevice) => d.handleChain(0, null as unknown as DescriptorChain, null as unknown as DeviceContext);

test('the same seed makes the same choices; answers not delayed stay synchronous', () => {
  const pattern = (seed: number) => {
    const d = new SlowDevice(instant, { seed, randomRate: 0.1, randomMaxMs: 2 });
    const out = Array.from({ length: 2000 }, () => (typeof call(d) === 'number' ? 's' : 'd')).join('');
    return { out, stats: d.stats() };
  };
  const a = pattern(42);
  assert.equal(a.out, pattern(42).out);
  assert.notEqual(a.out, pattern(43).out);
  assert.equal(a.stats.randomDelays, [...a.out].filter((c) => c === 'd').length);
  assert.ok(a.stats.randomDelays > 120 && a.stats.randomDelays < 280, `about 10 % delayed: ${a.stats.randomDelays}`);
  // no slowness configured: every answer synchronous, as the model's own
  const plain = new SlowDevice(instant, {});
  assert.equal(call(plain), 12);
});

test('a stall holds every answer due until it ends', async () => {
  const stalls: number[] = [];
  const d = new SlowDevice(instant, { seed: 1, stallRate: 1, stallMs: 60, onStall: (ms) => stalls.push(ms) });
  const t0 = performance.now();
  const answers = Array.from({ length: 20 }, () => call(d));
  assert.ok(answers.every((a) => a instanceof Promise));
  assert.equal(d.stats().stalls, 1, 'one stall at a time');
  assert.deepEqual(stalls, [60]);
  assert.equal(d.stats().held, 20);
  assert.deepEqual(await Promise.all(answers), Array(20).fill(12));
  assert.ok(performance.now() - t0 >= 55, 'held until the stall ended');
  assert.deepEqual({ ...d.stats(), stalls: 0 }, { requests: 20, randomDelays: 0, stalls: 0, stalled: 20, held: 0, maxHeld: 20 });
});

test('bad options are refused', () => {
  for (const o of [{ randomRate: 2 }, { stallRate: -1 }, { delayMs: Number.NaN }, { stallMs: [5, -1] as [number, number] }]) {
    assert.throws(() => new SlowDevice(instant, o), RangeError);
  }
});

test('through the runtime: 3000 requests, random delays and stalls, ring of 16: every answer right, once, some out of order', async () => {
  const device = new SlowDevice(new VirtioTestDevice({ print: false }), { seed: 7, randomRate: 0.2, randomMaxMs: 3, stallRate: 0.005, stallMs: [5, 15] });
  const h = new DeviceHarness(device, { queueSize: 16, indirect: true }); // one descriptor per request: 16 in flight
  const order: number[] = [];
  const pending = Array.from({ length: 3000 }, async (_, i) => {
    const c = await h.request(0, [encodeRequest(requestFor(i & 0xff))], [RESPONSE_SIZE]);
    order.push(i);
    assert.equal(c.len, RESPONSE_SIZE);
    assert.deepEqual(decodeResponse(c.written), answer(requestFor(i & 0xff)));
  });
  await Promise.all(pending);
  assert.equal(new Set(order).size, 3000);
  assert.ok(order.some((v, i) => i > 0 && v < order[i - 1]!), 'some answers came back out of order');
  const s = device.stats();
  assert.equal(s.requests, 3000);
  assert.ok(s.stalls > 0 && s.randomDelays > 0 && s.maxHeld === 16, JSON.stringify(s));
  assert.equal(s.held, 0);
  assert.deepEqual(h.deviceErrors, []);
  assert.equal(h.runtime.stats().queues[0]!.counters.requests, 3000);
});

// ---------------------------------------------------------------------------------------------
// Exact behaviour, on a controlled clock: the PRNG's sequence, the options and their defaults,
// the delay and stall arithmetic and the counters. Written from the mutants StrykerJS found alive
// (docs/reliability.md "Survivors: src/device").

/**
 * A fake clock for one test: performance.now() and setTimeout are replaced (restored when the
 * test ends); advance() moves the time, running the timers due in order and letting the answers
 * they release settle. setImmediate stays real (what settle() waits on).
 */
class FakeClock {
  now = 1000;
  private timers: { at: number; seq: number; fn: () => void }[] = [];
  private seq = 0;
  constructor(t: TestContext) {
    t.mock.method(performance, 'now', () => this.now);
    const fake = (fn: () => void, ms = 0) => {
      this.timers.push({ at: this.now + ms, seq: this.seq++, fn });
      return 0;
    };
    t.mock.method(globalThis, 'setTimeout', fake as unknown as typeof setTimeout);
  }
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    await settle();
    for (;;) {
      // (1e-9: the end may be a sum of fractions of a ms, a hair short of a timer's due time)
      const due = this.timers.filter((x) => x.at <= end + 1e-9).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.timers.splice(this.timers.indexOf(due), 1);
      this.now = due.at;
      due.fn();
      await settle();
    }
    this.now = end;
  }
}

/** Lets promise chains and setImmediate callbacks queued so far run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 4; i++) await new Promise((r) => setImmediate(r));
}

/** An answer and when (on the fake clock) it came: `at` is undefined while it is held. */
function track(clock: FakeClock, answer: number | Promise<number>): { sync: boolean; at?: number; value?: number } {
  const out: { sync: boolean; at?: number; value?: number } = { sync: typeof answer === 'number' };
  if (typeof answer === 'number') Object.assign(out, { at: clock.now, value: answer });
  else void answer.then((value) => Object.assign(out, { at: clock.now, value }));
  return out;
}

test('seededRandom is mulberry32: the exact sequence of a seed, uniform in [0, 1)', () => {
  const draws = (seed: number, n: number) => {
    const r = seededRandom(seed);
    return Array.from({ length: n }, () => r() * 2 ** 32); // each draw is k / 2^32
  };
  assert.deepEqual(draws(1, 4), [2693262067, 11749833, 2265367787, 4213581821]);
  // seed 42: the draws the stall tests below rely on (0.60, 0.45, 0.85, ...)
  assert.deepEqual(draws(42, 3).map((k) => k / 2 ** 32), [0.6011037519201636, 0.44829055899754167, 0.8524657934904099]);
  const many = draws(9, 4000).map((k) => k / 2 ** 32);
  assert.ok(many.every((x) => x >= 0 && x < 1));
  const mean = many.reduce((a, b) => a + b) / many.length;
  assert.ok(Math.abs(mean - 0.5) < 0.02, `mean ${mean}`);
});

test('bad options are refused with the option\'s name and value; rates 0 and 1 and zero lengths are accepted', () => {
  const refused = (o: number | SlowDeviceOptions, message: string) => assert.throws(() => new SlowDevice(instant, o), { name: 'RangeError', message });
  refused({ delayMs: Number.NaN }, 'SlowDevice: delayMs must be a number ≥ 0, got NaN');
  refused(-5, 'SlowDevice: delayMs must be a number ≥ 0, got -5'); // the number form is delayMs
  refused({ randomMaxMs: -1 }, 'SlowDevice: randomMaxMs must be a number ≥ 0, got -1');
  refused({ stallRate: -0.5 }, 'SlowDevice: stallRate must be a number ≥ 0, got -0.5');
  refused({ seed: Number.POSITIVE_INFINITY }, 'SlowDevice: seed must be a number ≥ 0, got Infinity');
  refused({ stallMs: -3 }, 'SlowDevice: stallMin must be a number ≥ 0, got -3');
  refused({ stallMs: [5, -1] }, 'SlowDevice: stallMax must be a number ≥ 0, got -1');
  refused({ randomRate: 1.5 }, 'SlowDevice: rates are probabilities (0..1)');
  refused({ stallRate: 1.01 }, 'SlowDevice: rates are probabilities (0..1)');
  new SlowDevice(instant, { randomRate: 1, stallRate: 1 });
  new SlowDevice(instant, { delayMs: 0, randomRate: 0, randomMaxMs: 0, stallRate: 0, stallMs: 0, seed: 0 });
  new SlowDevice(instant, 0);
});

test('a SlowDevice presents the model it wraps: ids, features, config space, queue sizes, activate, reset', () => {
  const calls: unknown[] = [];
  const ctx = { log() {} } as unknown as DeviceContext;
  const model: VirtioDevice = {
    deviceId: 4,
    features: 1n << 9n,
    featureNames: { 9: 'VIRTIO_X_F_NINE' },
    configSize: 6,
    queueMaxSizes: [16, 4],
    handleChain: () => 0,
    readConfig: (offset, into) => (into.fill(offset + 0x40), calls.push(['read', offset, into.length])),
    writeConfig: (offset, data, c) => calls.push(['write', offset, [...data], c]),
    activate: (c) => calls.push(['activate', c]),
    reset: () => calls.push(['reset']),
  };
  const d = new SlowDevice(model, { delayMs: 3 });
  assert.deepEqual([d.deviceId, d.features, d.featureNames, d.configSize, d.queueMaxSizes], [4, 1n << 9n, { 9: 'VIRTIO_X_F_NINE' }, 6, [16, 4]]);
  const into = new Uint8Array(2);
  d.readConfig(2, into);
  assert.deepEqual([...into], [0x42, 0x42]);
  d.writeConfig(1, Uint8Array.of(7, 8), ctx);
  d.activate(ctx);
  d.reset();
  assert.deepEqual(calls, [['read', 2, 2], ['write', 1, [7, 8], ctx], ['activate', ctx], ['reset']]);
  // a model without the optional hook: activating the wrapper is harmless
  const { activate: _unused, ...plain } = model;
  new SlowDevice(plain as VirtioDevice, 0).activate(ctx);
});

test('the number form delays every answer by that many ms (fake clock); 1 ms is a timer, under 1 ms takes no clock time but is not synchronous', async (t) => {
  const clock = new FakeClock(t);
  const five = new SlowDevice(instant, 5);
  const a = track(clock, call(five));
  assert.equal(a.sync, false);
  await clock.advance(4.9);
  assert.equal(a.at, undefined, 'not before 5 ms');
  await clock.advance(0.1);
  assert.deepEqual(a, { sync: false, at: 1005, value: 12 });

  const one = new SlowDevice(instant, { delayMs: 1 });
  const b = track(clock, call(one));
  await clock.advance(0.9);
  assert.equal(b.at, undefined, 'not before 1 ms');
  await clock.advance(0.1);
  assert.equal(b.at, 1006);

  const half = new SlowDevice(instant, { delayMs: 0.5 });
  const c = track(clock, call(half));
  assert.equal(c.sync, false);
  await Promise.resolve();
  assert.equal(c.at, undefined, 'not in the same turn');
  await settle();
  assert.deepEqual(c, { sync: false, at: 1006, value: 12 }, 'answered without the clock moving');
});

test('random delays: rate 1 delays every answer by a random 0..randomMaxMs, spread over the range and out of order (fake clock)', async (t) => {
  const clock = new FakeClock(t);
  const spread = async (o: SlowDeviceOptions, upTo: number) => {
    const start = clock.now;
    const d = new SlowDevice(instant, { seed: 5, randomRate: 1, ...o });
    const answers = Array.from({ length: 50 }, () => track(clock, call(d)));
    await clock.advance(upTo);
    assert.ok(answers.every((a) => !a.sync && a.value === 12 && a.at !== undefined), 'all answered in time');
    const times = answers.map((a) => a.at! - start);
    assert.equal(d.stats().randomDelays, 50);
    return times;
  };
  const wide = await spread({ randomMaxMs: 100 }, 100);
  assert.ok(Math.max(...wide) > 90 && wide.filter((x) => x > 50).length > 15, `delays over 0..100 ms: ${wide}`);
  assert.ok(wide.some((v, i) => i > 0 && v < wide[i - 1]!), 'out of order');
  // randomMaxMs defaults to 2
  const narrow = await spread({}, 2);
  assert.ok(Math.max(...narrow) > 1.8 && narrow.filter((x) => x >= 1).length > 15, `delays over 0..2 ms: ${narrow}`);
});

test('the choices of seed 42 are pinned: which answers are delayed, and (on a fake clock) which requests stall', async (t) => {
  const clock = new FakeClock(t);
  const d = new SlowDevice(instant, { seed: 42, randomRate: 0.5 });
  const delayed = Array.from({ length: 32 }, () => (typeof call(d) === 'number' ? '.' : 'd')).join('');
  assert.equal(delayed, DELAYED_42);
  assert.equal(d.stats().randomDelays, [...DELAYED_42].filter((c) => c === 'd').length);
  await clock.advance(2);
  assert.equal(d.stats().held, 0, 'all answered within randomMaxMs (default 2)');

  const s = new SlowDevice(instant, { seed: 42, stallRate: 0.3, stallMs: 10 });
  let stalls = '';
  for (let i = 0; i < 32; i++) {
    const before = s.stats().stalls;
    call(s);
    stalls += s.stats().stalls > before ? 'S' : '.';
    await clock.advance(10); // past the stall, if one began
  }
  assert.equal(stalls, STALLS_42);
  const n = [...STALLS_42].filter((c) => c === 'S').length;
  assert.deepEqual(s.stats(), { requests: 32, randomDelays: 0, stalls: n, stalled: n, held: 0, maxHeld: 1 });
});

test('a rate is the chance of a draw below it: a draw equal to the rate does not fire', () => {
  const first = seededRandom(1)(); // the first draw of seed 1
  const d = new SlowDevice(instant, { seed: 1, randomRate: first });
  assert.equal(call(d), 12, 'not delayed');
  const s = new SlowDevice(instant, { seed: 1, stallRate: first });
  assert.equal(call(s), 12, 'no stall');
  assert.deepEqual([d.stats().randomDelays, s.stats().stalls], [0, 0]);
});

test('a stall holds the answers due until its end, not a moment longer; its length is drawn from stallMs (fake clock)', async (t) => {
  const clock = new FakeClock(t);
  const lengths: number[] = [];
  const d = new SlowDevice(instant, { seed: 42, stallRate: 1, stallMs: [10, 30], onStall: (ms) => lengths.push(ms) });
  const a = track(clock, call(d)); // begins a stall (seed 42's second draw, 0.448..., gives its length)
  assert.equal(lengths.length, 1);
  const len = lengths[0]!;
  assert.equal(len, 10 + 20 * 0.44829055899754167);
  await clock.advance(5);
  const b = track(clock, call(d)); // within the stall: held by it, no new stall
  assert.equal(lengths.length, 1);
  await clock.advance(len - 5 - 0.01);
  assert.deepEqual([a.at, b.at], [undefined, undefined], 'held until the stall ends');
  await clock.advance(0.01);
  assert.deepEqual([a.at, b.at], [1000 + len, 1000 + len]);
  // At the very end of a stall the next may begin (stallRate 1 here): the window is [start, end).
  const c = track(clock, call(d));
  assert.equal(lengths.length, 2);
  assert.ok(lengths.every((ms) => ms >= 10 && ms <= 30));
  assert.equal(c.at, undefined);
  assert.deepEqual({ ...d.stats(), held: 0 }, { requests: 3, randomDelays: 0, stalls: 2, stalled: 3, held: 0, maxHeld: 2 });
});

test('after a stall ends (or a reset ends it), an answer neither delayed nor stalled is synchronous again and not counted as stalled (fake clock)', async (t) => {
  const clock = new FakeClock(t);
  // seed 42 with stallRate 0.7: the first request stalls (0.60), the second does not (0.85).
  const d = new SlowDevice(instant, { seed: 42, stallRate: 0.7, stallMs: 20 });
  const a = track(clock, call(d));
  await clock.advance(20); // to the stall's end exactly
  assert.equal(a.at, 1020);
  assert.equal(call(d), 12, 'the stall is over at its end');
  assert.deepEqual(d.stats(), { requests: 2, randomDelays: 0, stalls: 1, stalled: 1, held: 0, maxHeld: 1 });

  let resets = 0;
  const r = new SlowDevice({ ...instant, reset: () => resets++ }, { seed: 42, stallRate: 0.7, stallMs: 20 });
  const held = call(r);
  assert.ok(held instanceof Promise);
  r.reset();
  assert.equal(resets, 1, 'the model is reset');
  assert.equal(call(r), 12, 'a reset ends the stall');
  assert.equal(r.stats().stalled, 1);
  await clock.advance(20);
});

test('held counts the answers not yet given, maxHeld the most at once (fake clock)', async (t) => {
  const clock = new FakeClock(t);
  const d = new SlowDevice(instant, 5);
  for (let i = 0; i < 3; i++) call(d);
  await settle();
  assert.deepEqual([d.stats().held, d.stats().maxHeld], [3, 3]);
  await clock.advance(5);
  assert.deepEqual([d.stats().held, d.stats().maxHeld], [0, 3]);
  call(d);
  assert.deepEqual([d.stats().held, d.stats().maxHeld], [1, 3], 'the most at once stays');
  await clock.advance(5);
  assert.equal(d.stats().held, 0);
});
