/**
 * Section "notify": how fast one thread can wake another and get an answer, with each
 * mechanism the embedded machine could use for kicks and interrupts (ping-pong between two
 * pinned worker threads, round trips per second; one-way latency is half a round trip).
 *
 *   node dist/bench/notify.js [--rounds 3] [--quick]
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { runIfMain, median, type Row, type SectionOptions } from './report.js';
import type { NotifyMethod, NotifyWorkerData, NotifyWorkerResult } from './notify-worker.js';

const METHODS: { method: NotifyMethod; name: string }[] = [
  { method: 'spin', name: 'spin on a shared word (no sleep)' },
  { method: 'wait', name: 'Atomics.wait / notify' },
  { method: 'waitAsync', name: 'Atomics.waitAsync / notify' },
  { method: 'port', name: 'MessagePort.postMessage' },
];

export async function pingPong(method: NotifyMethod, ms: number): Promise<number> {
  const ctl = new SharedArrayBuffer(32 * 4);
  const file = fileURLToPath(new URL('./notify-worker.js', import.meta.url));
  const ch = method === 'port' ? new MessageChannel() : undefined;
  const start = (side: 0 | 1) =>
    new Promise<NotifyWorkerResult>((resolve, reject) => {
      const port = side === 0 ? ch?.port1 : ch?.port2;
      const data: NotifyWorkerData = { kind: 'notify', method, side, cpu: side, ms, ctl, ...(port ? { port } : {}) };
      const w = new Worker(file, { workerData: data, transferList: port ? [port] : [] });
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`notify worker exited (${code}) without a result`)));
    });
  const [a] = await Promise.all([start(0), start(1)]);
  return a.roundTrips / (a.ns / 1e9);
}

export async function run(opts: SectionOptions): Promise<Row[]> {
  const ms = opts.quick ? 100 : 400;
  const samples = new Map<NotifyMethod, number[]>(METHODS.map((m) => [m.method, []]));
  for (let round = 1; round <= opts.rounds; round++) {
    opts.log(`notify: round ${round}/${opts.rounds}`);
    for (const { method } of METHODS) {
      const v = await pingPong(method, ms);
      samples.get(method)!.push(v);
      opts.log(`  ${method}: ${(v / 1e3).toFixed(1)} k round trips/s`);
    }
  }
  const ref = { name: 'Atomics.wait / notify', samples: samples.get('wait')! };
  return METHODS.map(({ method, name }) => {
    const s = samples.get(method)!;
    const row: Row = {
      section: 'notify',
      name,
      unit: 'round trips/s',
      samples: s,
      note: `one way ≈ ${(1e6 / median(s) / 2).toFixed(2)} µs; threads on cpu 0 and 1`,
    };
    if (method !== 'wait') row.ref = ref;
    return row;
  });
}

export const section = { name: 'notify', run };

await runIfMain(import.meta.url, section, 3);
