/**
 * One side of a cross-thread ping-pong (bench/notify.ts). The pinger (side 0) sends ping i and
 * waits for pong i until its deadline; the ponger (side 1) answers each ping. Methods:
 *   spin        Atomics.load loop on a shared word (no sleeping: the cache-line round trip)
 *   wait        Atomics.wait / Atomics.notify (the thread blocks in a futex)
 *   waitAsync   Atomics.waitAsync / Atomics.notify (the thread returns to its event loop)
 *   port        MessagePort.postMessage / 'message' (structured clone through the event loop)
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { pinSelf } from './pin.js';

export type NotifyMethod = 'spin' | 'wait' | 'waitAsync' | 'port';

export interface NotifyWorkerData {
  kind: 'notify';
  method: NotifyMethod;
  side: 0 | 1;
  cpu?: number;
  ms: number;
  /** [0]: the ping-pong word (pinger writes odd values, ponger even); [16]: start. */
  ctl: SharedArrayBuffer;
  port?: MessagePort;
}

export interface NotifyWorkerResult {
  roundTrips: number;
  ns: number;
  pin: string;
}

const W = 0;
const START = 16;
const STOP = -1;
const HANG_MS = 10_000;

async function main(d: NotifyWorkerData): Promise<NotifyWorkerResult> {
  const pin = pinSelf(d.cpu);
  const ctl = new Int32Array(d.ctl);
  Atomics.add(ctl, START, 1);
  Atomics.notify(ctl, START);
  while (Atomics.load(ctl, START) < 2) Atomics.wait(ctl, START, Atomics.load(ctl, START), 100);
  const t0 = process.hrtime.bigint();
  const deadline = t0 + BigInt(d.ms) * 1_000_000n;
  let n = 0;
  const pinger = d.side === 0;
  // Checking the clock every 64 round trips keeps hrtime out of the measured path.
  const more = () => (n & 63) !== 0 || process.hrtime.bigint() < deadline;

  if (d.method === 'port') {
    const port = d.port!;
    await new Promise<void>((resolve) => {
      if (pinger) {
        port.on('message', (v: number) => {
          if (v === STOP) return;
          n++;
          if (more()) port.postMessage(n);
          else {
            port.postMessage(STOP);
            resolve();
          }
        });
        port.postMessage(0);
      } else {
        port.on('message', (v: number) => {
          if (v === STOP) return resolve();
          n++;
          port.postMessage(v);
        });
      }
    });
    port.close();
  } else if (pinger) {
    // Round trip i: write 2i+1 (ping), wait for 2i+2 (pong). STOP ends the ponger.
    for (;;) {
      const stop = !more();
      const ping = stop ? STOP : 2 * n + 1;
      Atomics.store(ctl, W, ping);
      if (d.method !== 'spin') Atomics.notify(ctl, W, 1);
      if (stop) break;
      const pong = ping + 1;
      if (d.method === 'spin') while (Atomics.load(ctl, W) !== pong);
      else if (d.method === 'wait') {
        while (Atomics.load(ctl, W) !== pong) {
          if (Atomics.wait(ctl, W, ping, HANG_MS) === 'timed-out') throw new Error('notify: hang');
        }
      } else {
        while (Atomics.load(ctl, W) !== pong) {
          const r = Atomics.waitAsync(ctl, W, ping, HANG_MS);
          if (r.async && (await r.value) === 'timed-out') throw new Error('notify: hang');
        }
      }
      n++;
    }
  } else {
    let seen = 0;
    for (;;) {
      let v: number;
      if (d.method === 'spin') while ((v = Atomics.load(ctl, W)) === seen);
      else if (d.method === 'wait') {
        while ((v = Atomics.load(ctl, W)) === seen) {
          if (Atomics.wait(ctl, W, seen, HANG_MS) === 'timed-out') throw new Error('notify: hang');
        }
      } else {
        while ((v = Atomics.load(ctl, W)) === seen) {
          const r = Atomics.waitAsync(ctl, W, seen, HANG_MS);
          if (r.async && (await r.value) === 'timed-out') throw new Error('notify: hang');
        }
      }
      if (v === STOP) break;
      seen = v + 1;
      Atomics.store(ctl, W, seen);
      if (d.method !== 'spin') Atomics.notify(ctl, W, 1);
      n++;
    }
  }
  return { roundTrips: n, ns: Number(process.hrtime.bigint() - t0), pin };
}

if (parentPort && (workerData as NotifyWorkerData | undefined)?.kind === 'notify') {
  const port = parentPort;
  // A pending Atomics.waitAsync does not keep a worker's event loop alive: this timer does.
  const keepAlive = setInterval(() => {}, 1 << 30);
  main(workerData as NotifyWorkerData).then((r) => {
    clearInterval(keepAlive);
    port.postMessage(r);
  });
}
