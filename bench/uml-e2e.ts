/**
 * Section "uml": requests/s end to end through the real Linux 6.1 guest (User-Mode Linux),
 * our C driver and virtio_uml, against the TypeScript back-end (`virtio-test-backend` CLI)
 * and the C reference back-end (bench/ref/vhost-user-ref-backend.c), alternated round by
 * round. The guest runs `virtio-stress -q P K` (P processes, K requests each, 32 in flight per
 * process); the time is from the guest's VT_READY to its result line (as test/uml/stress.test.ts
 * measures: boot and power-off excluded).
 *
 * Pinning: the back-end runs on cpu 1; UML (its kernel process and the guest's processes,
 * which are host processes too) is started from a thread pinned to cpu 0, so it inherits cpu 0.
 *
 *   node dist/bench/uml-e2e.js [--rounds 3] [--quick]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findUmlGuest, runUml, type UmlGuest } from '../src/machine/uml.js';
import { runIfMain, median, type Row, type SectionOptions } from './report.js';
import { buildRef, cpuSecondsBetween, loadavg, procCpu, procMemory, startBackend, type BackendKind, type CpuReading } from './vhost-user/proc.js';

const BACKEND_CPU = 1;
const UML_CPU = 0;

/** Pins the calling thread (the main thread: children spawned now inherit it). Best effort. */
function pinMainThread(cpus: string): void {
  try {
    execFileSync('taskset', ['-p', '-c', cpus, String(process.pid)], { stdio: 'pipe' });
  } catch {
    /* unpinned */
  }
}

export interface StressRun {
  requestsPerSec: number;
  seconds: number;
  /** Back-end CPU µs per request, from VT_READY to the result line. */
  backendCpuUsPerRequest: number;
  backendHwmMiB: number;
}

/** One UML boot running `virtio-stress -q p k` against the back-end on `socket`. */
export async function stressOnce(guest: UmlGuest, socket: string, backendPid: number, p: number, k: number): Promise<StressRun> {
  let ready = 0;
  let done = 0;
  let cpu0: CpuReading = { ns: 0, ticks: 0 };
  let cpu1: CpuReading = { ns: 0, ticks: 0 };
  pinMainThread(String(UML_CPU));
  let pending;
  try {
    pending = runUml({
      guest,
      socket,
      command: ['virtio-stress', '-q', String(p), String(k)],
      timeoutMs: 120_000,
      onLine: (l) => {
        if (l === 'VT_READY') {
          ready = performance.now();
          cpu0 = procCpu(backendPid);
        } else if (l.startsWith('stress: ')) {
          done = performance.now();
          cpu1 = procCpu(backendPid);
        }
      },
    });
  } finally {
    pinMainThread(`0-${os.cpus().length - 1}`);
  }
  const r = await pending;
  const want = `stress: P=${p} K=${k} ok=${p * k} bad=0 lost=0`;
  if (r.exitCode !== 0 || !r.lines.includes(want) || !ready || !done) {
    throw new Error(`virtio-stress ${p} ${k} failed (exit ${r.exitCode}):\n${r.lines.join('\n')}\n${r.bootLines.slice(-15).join('\n')}`);
  }
  const seconds = (done - ready) / 1e3;
  return {
    requestsPerSec: (p * k) / seconds,
    seconds,
    backendCpuUsPerRequest: (cpuSecondsBetween(cpu0, cpu1) / (p * k)) * 1e6,
    backendHwmMiB: procMemory(backendPid).hwmMiB,
  };
}

export async function run(opts: SectionOptions): Promise<Row[]> {
  const guest = findUmlGuest();
  if (!guest) {
    opts.log('uml: SKIPPED: UML guest not built (bash guest/linux/build.sh)');
    return [];
  }
  const backendBin = buildRef('vhost-user-ref-backend', opts.log);
  // K per process, sized for ~1-2 s of requests per boot on this machine.
  const loads = opts.quick
    ? [
        { p: 1, k: 2_000 },
        { p: 8, k: 500 },
      ]
    : [
        { p: 1, k: 15_000 },
        { p: 8, k: 2_500 },
      ];
  const samples = new Map<string, StressRun[]>();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vubench-uml-'));
  opts.log(`uml: back-end on cpu ${BACKEND_CPU}, UML on cpu ${UML_CPU}; load average ${loadavg()}`);
  try {
    for (let round = 1; round <= opts.rounds; round++) {
      const order: BackendKind[] = round % 2 ? ['ts', 'c'] : ['c', 'ts'];
      const parts: string[] = [];
      for (const kind of order) {
        const be = await startBackend(kind, backendBin, { cpu: BACKEND_CPU, dir });
        try {
          for (const { p, k } of loads) {
            const s = await stressOnce(guest, be.socket, be.pid, p, k);
            const key = `${kind}/${p}`;
            (samples.get(key) ?? samples.set(key, []).get(key)!).push(s);
            parts.push(`${kind} -q ${p} ${k}: ${Math.round(s.requestsPerSec)}/s`);
          }
        } finally {
          await be.stop();
        }
      }
      opts.log(`uml: round ${round}/${opts.rounds}: ${parts.join(', ')}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return loads.map(({ p, k }) => {
    const ts = samples.get(`ts/${p}`)!;
    const c = samples.get(`c/${p}`)!;
    const us = (xs: StressRun[]) => median(xs.map((s) => s.backendCpuUsPerRequest)).toFixed(1);
    return {
      section: 'uml',
      name: `virtio-stress -q ${p} ${k} (UML guest), TS backend`,
      unit: 'requests/s',
      samples: ts.map((s) => s.requestsPerSec),
      ref: { name: 'C backend', samples: c.map((s) => s.requestsPerSec) },
      paired: ts.map((s, i) => s.requestsPerSec / c[i]!.requestsPerSec),
      target: 0.95,
      note: `backend CPU per request: TS ${us(ts)} µs, C ${us(c)} µs; TS VmHWM ${median(ts.map((s) => s.backendHwmMiB)).toFixed(1)} MiB`,
    } satisfies Row;
  });
}

export const section = { name: 'uml', run };

await runIfMain(import.meta.url, section, 3);
