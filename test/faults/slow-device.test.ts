/**
 * SlowDevice, the random slowness the load tests put on a device: seeded random delays (answers
 * out of order), stalls that hold every answer due meanwhile (the ring fills with held chains),
 * and a synchronous fast path for requests neither delayed nor stalled. Through the real
 * DeviceRuntime (DeviceHarness): every answer right, exactly once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DeviceContext, VirtioDevice } from '../../src/device/device.js';
import { SlowDevice } from '../../src/device/slow-device.js';
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
