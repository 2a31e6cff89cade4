/**
 * Section "ring": the product's split queue (DriverQueue on one thread, DeviceQueue on another,
 * one SharedArrayBuffer of guest memory) and its packed queue (PackedDriverQueue /
 * PackedDeviceQueue, the same loops) beside Linux's tools/virtio/ringtest, alternated round by
 * round: each packed run follows the split run of its mode, both right after their ringtest run. See bench/ring-worker.ts for what one buffer costs on each side and
 * bench/ringtest.ts for the C reference.
 *
 *   node dist/bench/ring.js [--rounds 5] [--quick] [--only poll|sleep|batch] [--batch 64] [--count N]
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { formatTable, median, type Row, type SectionOptions } from './report.js';
import { buildRingtest, runRingtest, type RingtestRun } from './ringtest.js';
import { CTL, MEM_BYTES, type RingLayout, type RingMode, type RingWorkerData, type RingWorkerResult } from './ring-worker.js';

export const RING_SIZE = 256;
/** Buffers per batch in batched mode (the device publishes whatever it found pending at once). */
export const DEFAULT_BATCH = 64;
const DRIVER_CPU = 0; // ringtest --guest-affinity 0
const DEVICE_CPU = 1; // ringtest --host-affinity 1

export interface OursResult {
  opsPerSec: number;
  /** CPU seconds of both threads over 2 × wall time (1.0: both spun the whole run undisturbed). */
  cpuShare: number;
  driver: RingWorkerResult;
  device: RingWorkerResult;
}

/** One run of ours: two fresh workers, pinned, started together; timed on the driver thread. */
export async function runOurs(mode: RingMode, count: number, batch = DEFAULT_BATCH, layout: RingLayout = 'split'): Promise<OursResult> {
  const mem = new SharedArrayBuffer(MEM_BYTES);
  const ctl = new SharedArrayBuffer(CTL.words * 4);
  const ctlView = new Int32Array(ctl);
  const url = new URL('./ring-worker.js', import.meta.url);
  const common = { mode, layout, count, ringSize: RING_SIZE, batch, mem, ctl };
  const spawn = (data: RingWorkerData) =>
    new Promise<RingWorkerResult>((resolve, reject) => {
      const w = new Worker(fileURLToPath(url), { workerData: data });
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`ring worker exited (${code}) without a result`)));
    });
  const driver = spawn({ ...common, role: 'driver', cpu: DRIVER_CPU });
  const device = spawn({ ...common, role: 'device', cpu: DEVICE_CPU });
  // Wait (without blocking this thread's event loop) until both are ready, then start both.
  while (Atomics.load(ctlView, CTL.readyDevice) === 0) {
    await Atomics.waitAsync(ctlView, CTL.readyDevice, 0, 50).value;
  }
  Atomics.store(ctlView, CTL.start, 1);
  Atomics.notify(ctlView, CTL.start);
  const [d, v] = await Promise.all([driver, device]);
  return { opsPerSec: count / (d.ns / 1e9), cpuShare: (d.cpu + v.cpu) / (2 * (d.ns / 1e9)), driver: d, device: v };
}

interface Config {
  /** Buffers per run (ours / ringtest), sized for ~0.3–0.7 s each on this machine when it is idle. */
  ours: Record<RingMode, number>;
  ringtest: { poll: number; sleep: number };
}
const FULL: Config = {
  ours: { poll: 2_000_000, sleep: 1_500_000, batch: 6_000_000 },
  ringtest: { poll: 5_000_000, sleep: 3_000_000 },
};
const QUICK: Config = {
  ours: { poll: 300_000, sleep: 200_000, batch: 1_000_000 },
  ringtest: { poll: 800_000, sleep: 400_000 },
};

export async function run(opts: SectionOptions & { only?: RingMode[]; batch?: number; count?: number }): Promise<Row[]> {
  const cfg = opts.quick ? QUICK : FULL;
  const batch = opts.batch ?? DEFAULT_BATCH;
  const modes = opts.only ?? (['poll', 'sleep', 'batch'] as RingMode[]);
  buildRingtest(opts.log);
  const rt = (program: RingtestRun['program'], sleep: boolean): RingtestRun => ({
    program,
    sleep,
    cycles: sleep ? cfg.ringtest.sleep : cfg.ringtest.poll,
  });
  const refs = {
    rt09poll: { name: 'ringtest virtio_ring_0_9', run: rt('virtio_ring_0_9', false), samples: [] as number[], cpu: [] as number[], sleeps: [] as number[] },
    rtPollPoll: { name: 'ringtest virtio_ring_poll', run: rt('virtio_ring_poll', false), samples: [] as number[], cpu: [] as number[], sleeps: [] as number[] },
    rt09sleep: { name: 'ringtest virtio_ring_0_9 --sleep', run: rt('virtio_ring_0_9', true), samples: [] as number[], cpu: [] as number[], sleeps: [] as number[] },
    rtPollSleep: { name: 'ringtest virtio_ring_poll --sleep', run: rt('virtio_ring_poll', true), samples: [] as number[], cpu: [] as number[], sleeps: [] as number[] },
  };
  type Ours = { samples: number[]; cpu: number[]; kicks: number[]; calls: number[]; waits: number[]; pin: string };
  const fresh = (): Ours => ({ samples: [], cpu: [], kicks: [], calls: [], waits: [], pin: '' });
  const ours: Record<RingMode, Ours> = { poll: fresh(), sleep: fresh(), batch: fresh() };
  const packed: Record<RingMode, Ours> = { poll: fresh(), sleep: fresh(), batch: fresh() };
  const oursOnce = async (mode: RingMode, layout: RingLayout = 'split') => {
    const count = opts.count ?? cfg.ours[mode];
    const r = await runOurs(mode, count, batch, layout);
    const o = (layout === 'packed' ? packed : ours)[mode];
    o.samples.push(r.opsPerSec);
    o.cpu.push(r.cpuShare);
    o.kicks.push((1000 * r.driver.kicks) / count);
    o.calls.push((1000 * r.device.calls) / count);
    o.waits.push((1000 * (r.driver.waits + r.device.waits)) / count);
    o.pin = `${r.driver.pin}; ${r.device.pin}`;
    opts.log(`  ours ${layout} ${mode}: ${(r.opsPerSec / 1e6).toFixed(2)} M/s (cpu ${pct(r.cpuShare)})`);
  };
  const refOnce = async (ref: (typeof refs)[keyof typeof refs]) => {
    const v = await runRingtest(ref.run);
    ref.samples.push(v.opsPerSec);
    ref.cpu.push(v.cpuShare);
    ref.sleeps.push((1000 * v.sleeps) / ref.run.cycles);
    opts.log(`  ${ref.name}: ${(v.opsPerSec / 1e6).toFixed(2)} M/s (cpu ${pct(v.cpuShare)})`);
  };
  // Warm-up (not recorded): page cache, CPU frequency, the Node compile cache.
  await runRingtest({ ...refs.rt09poll.run, cycles: cfg.ringtest.poll / 10 });
  await runOurs('poll', cfg.ours.poll / 10);
  for (let round = 1; round <= opts.rounds; round++) {
    opts.log(`ring: round ${round}/${opts.rounds}`);
    // Each of ours runs right after the ringtest run it is compared with (paired ratios).
    if (modes.includes('poll') || modes.includes('batch')) await refOnce(refs.rt09poll);
    if (modes.includes('poll')) await oursOnce('poll');
    if (modes.includes('poll')) await oursOnce('poll', 'packed');
    if (modes.includes('batch')) await oursOnce('batch');
    if (modes.includes('batch')) await oursOnce('batch', 'packed');
    if (modes.includes('poll')) await refOnce(refs.rtPollPoll);
    if (modes.includes('sleep')) await refOnce(refs.rt09sleep);
    if (modes.includes('sleep')) await oursOnce('sleep');
    if (modes.includes('sleep')) await oursOnce('sleep', 'packed');
    if (modes.includes('sleep')) await refOnce(refs.rtPollSleep);
  }
  const rows: Row[] = [];
  const unpinned = Object.values(ours).find((o) => o.pin.includes('unpinned'));
  if (unpinned) opts.log(`ring: WARNING threads not pinned: ${unpinned.pin}`);
  const vs = (a: number[], b: number[]) => `${(median(a) / median(b)).toFixed(2)}×`;
  const per1k = (xs: number[]) => median(xs).toFixed(1);
  const pairs = (a: number[], b: number[]) => a.map((x, i) => x / b[i]!);
  const refRow = (r: (typeof refs)[keyof typeof refs], note: string): Row => ({
    section: 'ring',
    name: `${r.name} (C)`,
    unit: 'buffers/s',
    samples: r.samples,
    note:
      `${r.run.cycles / 1e6} M buffers, ring 256, --host-affinity 1 --guest-affinity 0${note}; cpu ${pct(median(r.cpu))}` +
      (r.run.sleep ? `; per 1k buffers: ${per1k(r.sleeps)} sleeps` : ''),
  });
  if (refs.rt09poll.samples.length) rows.push(refRow(refs.rt09poll, ''));
  if (refs.rtPollPoll.samples.length) rows.push(refRow(refs.rtPollPoll, ''));
  if (modes.includes('poll')) {
    rows.push({
      section: 'ring',
      name: 'ours: per-buffer publishing, polling',
      unit: 'buffers/s',
      samples: ours.poll.samples,
      ref: { name: refs.rt09poll.name, samples: refs.rt09poll.samples },
      paired: pairs(ours.poll.samples, refs.rt09poll.samples),
      target: 1.0,
      note: `vs virtio_ring_poll ${vs(ours.poll.samples, refs.rtPollPoll.samples)}; cpu ${pct(median(ours.poll.cpu))}`,
    });
  }
  if (refs.rt09sleep.samples.length) rows.push(refRow(refs.rt09sleep, ', --sleep'));
  if (refs.rtPollSleep.samples.length) rows.push(refRow(refs.rtPollSleep, ', --sleep'));
  if (modes.includes('sleep')) {
    const o = ours.sleep;
    rows.push({
      section: 'ring',
      name: 'ours: per-buffer, event idx + Atomics.wait/notify',
      unit: 'buffers/s',
      samples: o.samples,
      ref: { name: refs.rt09sleep.name, samples: refs.rt09sleep.samples },
      paired: pairs(o.samples, refs.rt09sleep.samples),
      target: 1.0,
      note:
        `per 1k buffers: ${per1k(o.kicks)} kicks, ${per1k(o.calls)} calls, ${per1k(o.waits)} sleeps; ` +
        `vs virtio_ring_poll --sleep ${vs(o.samples, refs.rtPollSleep.samples)}; cpu ${pct(median(o.cpu))}`,
    });
  }
  if (modes.includes('batch')) {
    rows.push({
      section: 'ring',
      name: `ours: batched publishing (${batch}/publish), polling`,
      unit: 'buffers/s',
      samples: ours.batch.samples,
      ref: { name: refs.rt09poll.name, samples: refs.rt09poll.samples },
      paired: pairs(ours.batch.samples, refs.rt09poll.samples),
      target: 2.5,
      note:
        `vs ours per-buffer ${ours.poll.samples.length ? vs(ours.batch.samples, ours.poll.samples) : 'n/a'}; ` +
        `cpu ${pct(median(ours.batch.cpu))}`,
    });
  }
  // The packed ring, per mode: against the same ringtest run as the split row, and against split.
  const packedRow = (mode: RingMode, name: string, ref: (typeof refs)[keyof typeof refs], extra: string): Row => ({
    section: 'ring',
    name: `ours, packed ring: ${name}`,
    unit: 'buffers/s',
    samples: packed[mode].samples,
    ref: { name: ref.name, samples: ref.samples },
    paired: pairs(packed[mode].samples, ref.samples),
    note: `packed/split ${median(pairs(packed[mode].samples, ours[mode].samples)).toFixed(2)}× paired${extra}; cpu ${pct(median(packed[mode].cpu))}`,
  });
  if (modes.includes('poll')) rows.push(packedRow('poll', 'per-buffer publishing, polling', refs.rt09poll, ''));
  if (modes.includes('sleep')) {
    const o = packed.sleep;
    rows.push(packedRow('sleep', 'per-buffer, event idx + Atomics.wait/notify', refs.rt09sleep, `; per 1k buffers: ${per1k(o.kicks)} kicks, ${per1k(o.calls)} calls, ${per1k(o.waits)} sleeps`));
  }
  if (modes.includes('batch')) rows.push(packedRow('batch', `batched publishing (${batch}/publish), polling`, refs.rt09poll, ''));
  return rows;
}

export const section = { name: 'ring', run };

const pct = (x: number) => `${Math.round(100 * x)}%`;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rows = await run({
    rounds: Number(arg('--rounds') ?? 5),
    quick: process.argv.includes('--quick'),
    log: (s) => console.error(s),
    only: arg('--only')?.split(',') as RingMode[] | undefined,
    batch: arg('--batch') ? Number(arg('--batch')) : undefined,
    count: arg('--count') ? Number(arg('--count')) : undefined,
  });
  console.log(formatTable(rows));
}
