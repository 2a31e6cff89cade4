/**
 * Section "trace-cost": what the trace events cost the ring's hot path, off and on.
 *
 * The emit sites are `if (TRACE.x.enabled) TRACE.x.emit(…)` in DeviceQueue, DriverQueue and
 * DeviceRuntime, always compiled in. Measured on one thread, as ring-cost.ts does:
 *
 *  - ring hot path, ns per buffer: driver add × 64 + publish + kick decision, device
 *    pop + addUsed × 64 + publishUsed + notification decision, driver getUsedToken until empty
 *    (the events vring_add, virtqueue_kick*, virtqueue_pop, virtqueue_fill, virtqueue_flush,
 *    virtqueue_get_buf sit on it);
 *  - device path, ns per request: DeviceRuntime.notify over VirtioTestDevice, 128 indirect
 *    requests per notify (plus virtio_queue_notify, virtio_notify*, and the runtime's counters);
 *
 * each variant in a fresh worker per round (so "off" is code that never saw tracing on), the
 * variants alternated in rounds: "off" (every event disabled, as in production), "on" (every
 * event enabled, emitting to a no-op target: the cost of the checks taken, the calls and the
 * argument reads, without any output). And the check alone: a loop with the
 * `if (x.enabled)` test against the same loop without it, ns per test.
 *
 *   node dist/bench/trace-cost.js [--rounds N] [--quick]
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { DeviceRuntime } from '../src/device/runtime.js';
import { VirtioTestDevice } from '../src/devices/virtio-test/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE } from '../src/devices/virtio-test/protocol.js';
import { EVENTS, TRACE, enableEvents } from '../src/trace/events.js';
import { setEmitTarget } from '../src/trace/sink.js';
import { FeatureBit, Status, bit } from '../src/virtio/constants.js';
import { DeviceQueue } from '../src/virtio/device-queue.js';
import { DriverQueue, type Buffer } from '../src/virtio/driver-queue.js';
import type { DescriptorChain } from '../src/virtio/chain.js';
import { GuestMemory } from '../src/virtio/memory.js';
import { ringViewsFromGuest } from '../src/virtio/ring-views.js';
import { packedLayout } from '../src/virtio/split-ring.js';
import { median, runIfMain, type Row, type SectionOptions } from './report.js';
import { pinSelf } from './pin.js';

type Variant = 'off' | 'on';
const VARIANTS: readonly Variant[] = ['off', 'on'];
const VARIANT_NAMES: Record<Variant, string> = { off: 'tracing off', on: 'every event on, no-op sink' };

/** ns per buffer of the ring's hot path, best of `trials`. */
function ringPath(buffers: number, trials: number): number {
  const mem = new SharedArrayBuffer(1 << 16);
  const memory = new GuestMemory([{ guestAddr: 0x1000, size: mem.byteLength, buffer: mem }]);
  const layout = packedLayout(0x1000, 256);
  const drv = new DriverQueue<number>(memory, ringViewsFromGuest(memory, layout), { eventIdx: true, indirect: false });
  const dev = new DeviceQueue(memory, ringViewsFromGuest(memory, layout), { eventIdx: true, indirect: false });
  const out: Buffer[] = [{ addr: 0x8000, len: 8 }];
  const none: Buffer[] = [];
  let chain: DescriptorChain | undefined;
  let sink = 0;
  const run = (n: number): number => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i += 64) {
      for (let k = 0; k < 64; k++) drv.add(out, none, 1, false);
      drv.publish();
      if (drv.needsKick()) sink++;
      for (let k = 0; k < 64; k++) {
        chain = dev.pop(chain)!;
        dev.addUsed(chain.head, 0);
      }
      dev.publishUsed();
      if (dev.needsNotification()) sink++;
      while (drv.getUsedToken() !== undefined);
    }
    return Number(process.hrtime.bigint() - t0) / n;
  };
  run(buffers / 5);
  let best = Infinity;
  for (let t = 0; t < trials; t++) best = Math.min(best, run(buffers));
  if (sink < 0) throw new Error('unreachable');
  return best;
}

/** ns per request of DeviceRuntime.notify over VirtioTestDevice (as ring-cost.ts), best of `trials`. */
function devicePath(requests: number, trials: number): number {
  const SIZE = 256;
  const DEPTH = 128;
  const buf = new ArrayBuffer(1 << 20);
  const memory = new GuestMemory([{ guestAddr: 0x10000, size: buf.byteLength, buffer: buf }]);
  const layout = packedLayout(0x10000, SIZE);
  const rt = new DeviceRuntime(new VirtioTestDevice({ queueSize: SIZE, print: false }), memory, {
    interrupt() {},
    configInterrupt() {},
    log() {},
    warn(line) {
      throw new Error(line);
    },
  });
  rt.writeDriverFeatures(bit(FeatureBit.VERSION_1) | bit(FeatureBit.RING_EVENT_IDX) | bit(FeatureBit.RING_INDIRECT_DESC) | 1n);
  Object.assign(rt.queues[0]!, { size: SIZE, desc: layout.desc, avail: layout.avail, used: layout.used, ready: true });
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  const drv = new DriverQueue<number>(memory, ringViewsFromGuest(memory, layout), { eventIdx: true, indirect: true });
  drv.disableCallbacks();
  const outs: Buffer[][] = [];
  const ins: Buffer[][] = [];
  for (let i = 0; i < DEPTH; i++) {
    outs.push([{ addr: 0x40000 + 64 * i, len: REQUEST_SIZE }]);
    ins.push([{ addr: 0x60000 + 16 * i, len: RESPONSE_SIZE }]);
  }
  const rounds = Math.ceil(requests / DEPTH);
  const run = (n: number): number => {
    let t = 0;
    for (let r = 0; r < n; r++) {
      for (let i = 0; i < DEPTH; i++) drv.add(outs[i]!, ins[i]!, i, false);
      drv.publish();
      const a = process.hrtime.bigint();
      rt.notify(0);
      t += Number(process.hrtime.bigint() - a);
      let got = 0;
      while (drv.getUsedToken() !== undefined) got++;
      if (got !== DEPTH) throw new Error(`device path: ${got} of ${DEPTH} requests answered`);
    }
    return t / (n * DEPTH);
  };
  run(Math.ceil(rounds / 5));
  let best = Infinity;
  for (let t = 0; t < trials; t++) best = Math.min(best, run(rounds));
  return best;
}

/** ns per iteration of a loop with the emit-site test (event off) minus the same loop without it. */
function checkAlone(iterations: number, trials: number): { with: number; without: number } {
  const arr = new Int32Array(1024);
  const withCheck = (n: number): number => {
    let acc = 0;
    for (let i = 0; i < n; i++) {
      if (TRACE.virtqueue_pop.enabled) TRACE.virtqueue_pop.emit(0, i, 0, 0);
      arr[i & 1023] = i;
      acc += arr[(i * 7) & 1023]!;
    }
    return acc;
  };
  const withoutCheck = (n: number): number => {
    let acc = 0;
    for (let i = 0; i < n; i++) {
      arr[i & 1023] = i;
      acc += arr[(i * 7) & 1023]!;
    }
    return acc;
  };
  const time = (f: (n: number) => number): number => {
    const t0 = process.hrtime.bigint();
    if (f(iterations) === 0.5) throw new Error('unreachable');
    return Number(process.hrtime.bigint() - t0) / iterations;
  };
  time(withCheck);
  time(withoutCheck);
  const a: number[] = [];
  const b: number[] = [];
  for (let t = 0; t < trials; t++) {
    a.push(time(withCheck));
    b.push(time(withoutCheck));
  }
  return { with: median(a), without: median(b) };
}

interface WorkerResult {
  ring: number;
  device: number;
}

function inWorker(variant: Variant, buffers: number): Promise<WorkerResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(fileURLToPath(import.meta.url), { workerData: { kind: 'trace-cost', variant, buffers } });
    w.once('message', resolve);
    w.once('error', reject);
  });
}

export async function run(opts: SectionOptions): Promise<Row[]> {
  const buffers = opts.quick ? 200_000 : 1_000_000;
  const results: Record<Variant, WorkerResult[]> = { off: [], on: [] };
  for (let r = 0; r < opts.rounds; r++) {
    // Alternate the order too, so neither variant always runs first in a round.
    for (const v of r % 2 ? [...VARIANTS].reverse() : VARIANTS) results[v].push(await inWorker(v, buffers));
    opts.log(`trace-cost round ${r + 1}: ${VARIANTS.map((v) => `${v} ring ${results[v].at(-1)!.ring.toFixed(1)} ns, device ${results[v].at(-1)!.device.toFixed(1)} ns`).join('; ')}`);
  }
  const check = await new Promise<{ with: number; without: number }>((resolve, reject) => {
    const w = new Worker(fileURLToPath(import.meta.url), { workerData: { kind: 'trace-check', iterations: opts.quick ? 20_000_000 : 100_000_000 } });
    w.once('message', resolve);
    w.once('error', reject);
  });
  const rows: Row[] = [];
  for (const [key, label, unit] of [
    ['ring', 'ring hot path (add, kick decision, pop, addUsed, publish, notify decision, getUsed)', 'ns/buffer'],
    ['device', 'device path (runtime + virtio-test)', 'ns/request'],
  ] as const) {
    const off = results.off.map((x) => x[key]);
    for (const v of VARIANTS) {
      const samples = results[v].map((x) => x[key]);
      rows.push({
        section: 'trace-cost',
        name: `${label}, ${VARIANT_NAMES[v]}`,
        unit,
        samples,
        lowerIsBetter: true,
        ...(v === 'off' ? {} : { ref: { name: VARIANT_NAMES.off, samples: off }, paired: samples.map((s, i) => s / off[i]!) }),
        note: `median ${median(samples).toFixed(1)}; best of 3 per round, ${opts.rounds} rounds, a fresh worker each`,
      });
    }
  }
  rows.push({
    section: 'trace-cost',
    name: 'one emit-site test, event off (loop with the test minus loop without)',
    unit: 'ns/test',
    samples: [check.with - check.without],
    lowerIsBetter: true,
    note: `${check.with.toFixed(3)} vs ${check.without.toFixed(3)} ns per iteration`,
  });
  const med = (v: Variant, k: keyof WorkerResult) => median(results[v].map((x) => x[k]));
  opts.log(
    `trace-cost: ring ${med('off', 'ring').toFixed(1)} ns off, ${med('on', 'ring').toFixed(1)} ns on (×${(med('on', 'ring') / med('off', 'ring')).toFixed(2)}); ` +
      `device path ${med('off', 'device').toFixed(1)} ns off, ${med('on', 'device').toFixed(1)} ns on (×${(med('on', 'device') / med('off', 'device')).toFixed(2)}); ` +
      `one test ${(check.with - check.without).toFixed(3)} ns`,
  );
  return rows;
}

export const section = { name: 'trace-cost', run };

const job = (isMainThread ? undefined : workerData) as { kind?: string; variant?: Variant; buffers?: number; iterations?: number } | undefined;
if (job?.kind === 'trace-cost') {
  pinSelf(0);
  if (job.variant === 'on') {
    enableEvents(EVENTS.map((e) => e.name));
    setEmitTarget({ emit() {} });
  }
  const buffers = job.buffers!;
  parentPort!.postMessage({ ring: ringPath(buffers, 3), device: devicePath(buffers / 2, 3) } satisfies WorkerResult);
} else if (job?.kind === 'trace-check') {
  pinSelf(0);
  parentPort!.postMessage(checkAlone(job.iterations!, 5));
} else if (isMainThread) {
  await runIfMain(import.meta.url, section, 5);
}
