/**
 * Section "trace-cost": what the trace events cost, off and on (issue 14: "with tracing
 * disabled, no difference beyond noise, ≤ 2 %, measured side by side in one run; the cost
 * when on reported").
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
 * in three variants:
 *
 *  - "no trace code": the baseline, the same compiled modules with every emit site removed
 *    (a copy of dist/src in a temporary directory, the `if (….enabled) …;` statements of the
 *    three files deleted; the bench refuses to run if it cannot find and remove all of them),
 *    measured by the copy of this file's functions that imports them;
 *  - "off": every event disabled, as in production (the ratio to the baseline is the off-cost);
 *  - "on": every event enabled, emitting to a target that only counts them: the cost of the
 *    checks taken, the calls and the argument reads, without any output.
 *
 * The baseline and "off" run side by side in one worker per round, trial by trial in
 * alternating order (each trial a fresh ring, its own warm-up, best of 3), so that a shared
 * machine's load, which swings by 2× over seconds, hits both alike: the off-cost is the median
 * of the per-pair ratios. "on" runs in a worker of its own (enabling events would change the
 * code "off" runs), beside them in each round.
 *
 * And the check alone (a loop with the `if (x.enabled)` test against the same loop without
 * it, ns per test), and end to end, the embedded machine (`virtio --json --count K 10` as a
 * child process): untraced, `--trace '*'` text lines to /dev/null, `--trace '*' --trace-file`
 * (Chrome JSON to a temporary file): requests per second, what tracing everything costs a run.
 *
 *   node dist/bench/trace-cost.js [--rounds N] [--quick]       (or npm run bench -- --only trace-cost)
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath, pathToFileURL } from 'node:url';
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

type Variant = 'baseline' | 'off' | 'on';
const VARIANT_NAMES: Record<Variant, string> = { baseline: 'no trace code', off: 'tracing off', on: 'every event on, output discarded' };

/** The compiled modules whose emit sites the baseline removes (the ones on the measured paths). */
const STRIPPED = ['virtio/device-queue.js', 'virtio/driver-queue.js', 'device/runtime.js'];
/** An emit site as tsc writes it: `if (….enabled)` on one line, its one statement on the next. */
const EMIT_SITE = /^[ \t]*if \([^\n]*\.enabled[^\n]*\)\n[ \t]*[^\n]*;\n/gm;

/**
 * The baseline: dist/src and this file (with what it imports from bench/) copied to a
 * temporary directory, every emit site of STRIPPED deleted. Returns the copy of this file,
 * which the baseline's workers run.
 */
function makeBaseline(): { file: string; sites: number; remove(): void } {
  const bench = path.dirname(fileURLToPath(import.meta.url));
  const dist = path.dirname(bench);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'virtio-notrace-'));
  try {
    cpSync(path.join(dist, 'src'), path.join(tmp, 'src'), { recursive: true, filter: (p) => !/\.(js\.map|d\.ts)$/.test(p) });
    mkdirSync(path.join(tmp, 'bench'));
    for (const f of ['trace-cost.js', 'report.js', 'pin.js']) copyFileSync(path.join(bench, f), path.join(tmp, 'bench', f));
    writeFileSync(path.join(tmp, 'package.json'), '{"type":"module"}\n');
    let sites = 0;
    for (const rel of STRIPPED) {
      const file = path.join(tmp, 'src', rel);
      const text = readFileSync(file, 'utf8');
      const want = text.split('\n').filter((l) => /\.enabled\b/.test(l)).length;
      let removed = 0;
      const stripped = text.replace(EMIT_SITE, () => {
        removed++;
        return '';
      });
      if (removed === 0 || removed !== want || /\.enabled\b/.test(stripped)) {
        throw new Error(`trace-cost: the baseline removed ${removed} of the ${want} emit sites of ${rel} (has tsc's output changed?)`);
      }
      writeFileSync(file, stripped);
      sites += removed;
    }
    return { file: path.join(tmp, 'bench', 'trace-cost.js'), sites, remove: () => rmSync(tmp, { recursive: true, force: true }) };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** ns per buffer of the ring's hot path, best of `trials`. */
export function ringPath(buffers: number, trials: number): number {
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
export function devicePath(requests: number, trials: number): number {
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

/** One round's side-by-side trials: ns per buffer (ring) and per request (device), per trial. */
interface PairResult {
  ring: { baseline: number[]; off: number[] };
  device: { baseline: number[]; off: number[] };
}

interface OnResult {
  ring: number;
  device: number;
  /** Events emitted: proof that the events fired. */
  emitted: number;
}

function inWorker<T>(data: Record<string, unknown>): Promise<T> {
  return new Promise((resolve, reject) => {
    const w = new Worker(fileURLToPath(import.meta.url), { workerData: { ...data, entry: fileURLToPath(import.meta.url) } });
    w.once('message', resolve);
    w.once('error', reject);
  });
}

/** The worker of a round: baseline and off, trial by trial, the order alternating. */
async function pairTrials(baselineFile: string, buffers: number, pairs: number): Promise<PairResult> {
  const base = (await import(pathToFileURL(baselineFile).href)) as { ringPath: typeof ringPath; devicePath: typeof devicePath };
  const r: PairResult = { ring: { baseline: [], off: [] }, device: { baseline: [], off: [] } };
  for (let i = 0; i < pairs; i++) {
    const order = i % 2 ? (['off', 'baseline'] as const) : (['baseline', 'off'] as const);
    for (const v of order) r.ring[v].push((v === 'baseline' ? base.ringPath : ringPath)(buffers, 3));
    for (const v of order) r.device[v].push((v === 'baseline' ? base.devicePath : devicePath)(buffers / 2, 3));
  }
  return r;
}

type RunVariant = 'untraced' | 'text' | 'chrome';
const RUN_VARIANTS: readonly RunVariant[] = ['untraced', 'text', 'chrome'];
const RUN_NAMES: Record<RunVariant, string> = {
  untraced: 'untraced',
  text: "--trace '*', text to /dev/null",
  chrome: "--trace '*' --trace-file (Chrome JSON)",
};

/** Requests per second of `virtio --json --count K 10` on the embedded machine, traced or not. */
function machineRun(variant: RunVariant, count: number, dir: string): number {
  const cli = path.join(path.dirname(path.dirname(fileURLToPath(import.meta.url))), 'src', 'cli', 'virtio.js');
  const trace = variant === 'untraced' ? [] : variant === 'text' ? ['--trace', '*'] : ['--trace', '*', '--trace-file', path.join(dir, 't.json')];
  const out = execFileSync(process.execPath, [cli, '--json', '--count', String(count), ...trace, '10'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 1 << 20 });
  const summary = JSON.parse(out) as { verified: number; seconds: number };
  if (summary.verified !== count) throw new Error(`trace-cost: ${variant} run verified ${summary.verified} of ${count}`);
  return count / summary.seconds;
}

export async function run(opts: SectionOptions): Promise<Row[]> {
  const buffers = opts.quick ? 200_000 : 500_000;
  const pairs = opts.quick ? 2 : 4;
  const baseline = makeBaseline();
  const pairResults: PairResult[] = [];
  const on: OnResult[] = [];
  try {
    for (let r = 0; r < opts.rounds; r++) {
      const runOn = () => inWorker<OnResult>({ kind: 'trace-cost-on', buffers }).then((x) => void on.push(x));
      const runPairs = () => inWorker<PairResult>({ kind: 'trace-cost-pair', baseline: baseline.file, buffers, pairs }).then((x) => void pairResults.push(x));
      if (r % 2) {
        await runOn();
        await runPairs();
      } else {
        await runPairs();
        await runOn();
      }
      const p = pairResults.at(-1)!;
      const m = (xs: number[]) => median(xs).toFixed(1);
      opts.log(`trace-cost round ${r + 1}: ring ${m(p.ring.baseline)} ns no trace code, ${m(p.ring.off)} off, ${on.at(-1)!.ring.toFixed(1)} on; device ${m(p.device.baseline)} / ${m(p.device.off)} / ${on.at(-1)!.device.toFixed(1)} ns`);
    }
  } finally {
    baseline.remove();
  }
  if (on.some((x) => x.emitted === 0)) throw new Error('trace-cost: the "on" variant emitted no event');
  const check = await new Promise<{ with: number; without: number }>((resolve, reject) => {
    const w = new Worker(fileURLToPath(import.meta.url), { workerData: { kind: 'trace-check', entry: fileURLToPath(import.meta.url), iterations: opts.quick ? 20_000_000 : 100_000_000 } });
    w.once('message', resolve);
    w.once('error', reject);
  });

  // End to end: the embedded machine, untraced and traced, alternated in rounds.
  const count = opts.quick ? 5_000 : 20_000;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'virtio-trace-cost-'));
  const machine: Record<RunVariant, number[]> = { untraced: [], text: [], chrome: [] };
  try {
    for (let r = 0; r < opts.rounds; r++) {
      const order = RUN_VARIANTS.map((_, i) => RUN_VARIANTS[(i + r) % RUN_VARIANTS.length]!);
      for (const v of order) machine[v].push(machineRun(v, count, dir));
      opts.log(`trace-cost machine round ${r + 1}: ${RUN_VARIANTS.map((v) => `${v} ${machine[v].at(-1)!.toFixed(0)} req/s`).join(', ')}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const rows: Row[] = [];
  /** A speed ratio (reference time / time) as the time it adds: '+3.1 %', '-0.4 %'. */
  const pct = (speed: number) => `${speed <= 1 ? '+' : '-'}${(Math.abs(1 / speed - 1) * 100).toFixed(1)} %`;
  for (const [key, label, unit] of [
    ['ring', 'ring hot path (add, kick decision, pop, addUsed, publish, notify decision, getUsed)', 'ns/buffer'],
    ['device', 'device path (runtime + virtio-test)', 'ns/request'],
  ] as const) {
    // Per round, the median of its trials; per pair, the baseline's time over off's (≥ 1: off as fast or faster).
    const perRound = (v: 'baseline' | 'off') => pairResults.map((p) => median(p[key][v]));
    const offPaired = pairResults.flatMap((p) => p[key].off.map((t, i) => p[key].baseline[i]! / t));
    const onSamples = on.map((x) => x[key]);
    const note = `${opts.rounds} rounds; per round ${pairs} trials of each side by side in one worker, each the best of 3`;
    rows.push({ section: 'trace-cost', name: `${label}, ${VARIANT_NAMES.baseline}`, unit, samples: perRound('baseline'), lowerIsBetter: true, note: `${baseline.sites} emit sites removed; ${note}` });
    rows.push({
      section: 'trace-cost',
      name: `${label}, ${VARIANT_NAMES.off}`,
      unit,
      samples: perRound('off'),
      lowerIsBetter: true,
      ref: { name: VARIANT_NAMES.baseline, samples: perRound('baseline') },
      paired: offPaired,
      target: 0.98,
      note: `${pct(median(offPaired))} time vs no trace code, median of ${offPaired.length} pairs (issue 14: ≤ 2 %); ${note}`,
    });
    const onPaired = onSamples.map((s, i) => perRound('off')[i]! / s);
    rows.push({
      section: 'trace-cost',
      name: `${label}, ${VARIANT_NAMES.on}`,
      unit,
      samples: onSamples,
      lowerIsBetter: true,
      ref: { name: VARIANT_NAMES.off, samples: perRound('off') },
      paired: onPaired,
      note: `${pct(median(onPaired))} time vs off, output discarded; a worker of its own per round, best of 3`,
    });
  }
  rows.push({
    section: 'trace-cost',
    name: 'one emit-site test, event off (loop with the test minus loop without)',
    unit: 'ns/test',
    samples: [check.with - check.without],
    lowerIsBetter: true,
    note: `${check.with.toFixed(3)} vs ${check.without.toFixed(3)} ns per iteration`,
  });
  for (const v of RUN_VARIANTS) {
    rows.push({
      section: 'trace-cost',
      name: `embedded machine, virtio --count ${count}: ${RUN_NAMES[v]}`,
      unit: 'req/s',
      samples: machine[v],
      ...(v === 'untraced' ? {} : { ref: { name: RUN_NAMES.untraced, samples: machine.untraced }, paired: machine[v].map((s, i) => s / machine.untraced[i]!) }),
      note: `a child process per run, ${opts.rounds} rounds`,
    });
  }
  opts.log(
    `trace-cost: ${rows.filter((r) => r.paired).map((r) => `${r.name.replace(/ \(.*\)/, '')}: ${pct(median(r.paired!))}`).join('; ')}; ` +
      `one test ${(check.with - check.without).toFixed(3)} ns`,
  );
  return rows;
}

export const section = { name: 'trace-cost', run };

const job = (isMainThread ? undefined : workerData) as
  | { kind?: string; entry?: string; baseline?: string; buffers?: number; pairs?: number; iterations?: number }
  | undefined;
// Only the worker's own entry file runs the job (the baseline's copy of this file is imported
// by the same worker for its functions, and must not start one).
const mine = job?.entry === fileURLToPath(import.meta.url);
if (mine && job?.kind === 'trace-cost-pair') {
  pinSelf(0);
  parentPort!.postMessage(await pairTrials(job.baseline!, job.buffers!, job.pairs!));
} else if (mine && job?.kind === 'trace-cost-on') {
  pinSelf(0);
  let emitted = 0;
  enableEvents(EVENTS.map((e) => e.name));
  setEmitTarget({
    emit() {
      emitted++;
    },
  });
  const buffers = job.buffers!;
  parentPort!.postMessage({ ring: ringPath(buffers, 3), device: devicePath(buffers / 2, 3), emitted } satisfies OnResult);
} else if (mine && job?.kind === 'trace-check') {
  pinSelf(0);
  parentPort!.postMessage(checkAlone(job.iterations!, 5));
} else if (isMainThread) {
  await runIfMain(import.meta.url, section, 5);
}
