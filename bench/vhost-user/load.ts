/**
 * The TypeScript load generator of the vhost-user section, run as its own process (so its CPU
 * time is its own and it can be pinned): the project's front-end (VirtioTestClient) keeping
 * `depth` requests in flight (closed loop: each completion submits the next request), one
 * fresh connection per configuration.
 *
 *   node dist/bench/vhost-user/load.js --socket S --backend-pid P --configs JSON [--ms 500] [--warm 150] [--throwaway N]
 *
 * Prints one JSON line per configuration (LoadResult). The backend's CPU time over the measured
 * window comes from proc.ts (procCpu / cpuSecondsBetween: per-thread schedstat, in ns), its
 * sleeps from procVoluntaryCsw (voluntary context switches summed over its threads). The C
 * load generator (bench/ref/vhost-user-ref-load.c) prints the same fields.
 */
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { requestFor, type TestRequest } from '../../src/devices/virtio-test/protocol.js';
import { cpuSecondsBetween, procCpu, procVoluntaryCsw } from './proc.js';

export interface LoadConfig {
  depth: number;
  eventIdx: boolean;
  indirect?: boolean;
  /** C load generator only: spin on used.idx instead of sleeping on the call eventfd. */
  poll?: boolean;
}

export interface LoadResult extends LoadConfig {
  requests: number;
  seconds: number;
  /** CPU seconds of the backend process over the window. */
  backendCpu: number;
  /** Voluntary context switches of the backend (all threads) over the window; -1: unreadable. */
  backendVcsw: number;
  /** C load generator, --idle: the window had no requests in flight. */
  idle?: boolean;
  /** CPU seconds of this (front-end) process over the window. */
  frontendCpu: number;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One configuration: connect, warm up, measure, stop, close. */
export async function measure(socketPath: string, backendPid: number, cfg: LoadConfig, ms: number, warmMs: number): Promise<LoadResult> {
  const client = await VirtioTestClient.connect({
    socketPath,
    queueSize: 256,
    eventIdx: cfg.eventIdx,
    indirect: cfg.indirect ?? true,
    // What virtio_uml negotiates (no SET_STATUS, no inflight); the same for both back-ends.
    status: false,
    errFd: false,
  });
  // Requests made once (requestFor allocates a TextEncoder per call; not the front-end's cost).
  const reqs: TestRequest[] = Array.from({ length: 256 }, (_, n) => requestFor(n));
  let count = 0;
  let stop = false;
  let bad = 0;
  const worker = async (w: number): Promise<void> => {
    let i = w;
    while (!stop) {
      const req = reqs[i++ & 255]!;
      const r = await client.request(req);
      if (r.ret !== ((req.arg1 + 100) >>> 0)) bad++;
      count++;
    }
  };
  const workers = Array.from({ length: cfg.depth }, (_, w) => worker(w));
  await sleep(warmMs);
  const c0 = count;
  const v0 = procVoluntaryCsw(backendPid);
  const b0 = procCpu(backendPid);
  const f0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(ms);
  const c1 = count;
  const b1 = procCpu(backendPid);
  const v1 = procVoluntaryCsw(backendPid);
  const f1 = process.cpuUsage(f0);
  const t1 = performance.now();
  stop = true;
  await Promise.all(workers);
  client.close();
  if (bad) throw new Error(`${bad} wrong responses`);
  return {
    ...cfg,
    requests: c1 - c0,
    seconds: (t1 - t0) / 1e3,
    backendCpu: cpuSecondsBetween(b0, b1),
    backendVcsw: v1 - v0,
    frontendCpu: (f1.user + f1.system) / 1e6,
  };
}

if (process.argv[1]?.endsWith('/load.js')) {
  const socket = arg('--socket')!;
  const pid = Number(arg('--backend-pid'));
  const configs = JSON.parse(arg('--configs')!) as LoadConfig[];
  const ms = Number(arg('--ms') ?? 500);
  const warm = Number(arg('--warm') ?? 150);
  // --throwaway N: the first N configurations only warm this process up (50 + 100 ms, not printed).
  const throwaway = Number(arg('--throwaway') ?? 0);
  for (const [i, c] of configs.entries()) {
    if (i < throwaway) {
      await measure(socket, pid, c, 100, 50);
      continue;
    }
    const r = await measure(socket, pid, c, ms, warm);
    process.stdout.write(`${JSON.stringify(r)}\n`);
  }
  process.exit(0);
}
