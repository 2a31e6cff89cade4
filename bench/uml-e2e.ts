/**
 * Section "uml": requests/s end to end through the real Linux 6.1 guest (User-Mode Linux),
 * our C driver and virtio_uml, against three back-ends: the TypeScript one
 * (`virtio-test-backend` CLI), the libvhost-user anchor (../shared/anchors/libvhost-user-virtio-test,
 * built into build/bench/lvu-backend; the column is skipped loudly when it is absent) and our
 * C reference (bench/ref/vhost-user-ref-backend.c), in an order that rotates round by round.
 * The guest runs `virtio-stress -q P K` (P processes, K requests each, 32 in flight per
 * process); the time is from the guest's VT_READY to its result line (as test/uml/stress.test.ts
 * measures: boot and power-off excluded). Per back-end: requests/s (paired ratios TS/libvhost-user
 * and TS/our C), CPU per request and sleeps (voluntary context switches, all threads) per request
 * over the same span.
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
import { BACKEND_LABEL, buildLvu, buildRef, cpuSecondsBetween, loadavg, procCpu, procMemory, procVoluntaryCsw, startBackend, type BackendKind, type CpuReading } from './vhost-user/proc.js';

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
  /** Back-end voluntary context switches (all threads) per request, same span. */
  backendSleepsPerRequest: number;
  backendHwmMiB: number;
}

/** One UML boot running `virtio-stress -q p k` against the back-end on `socket`. */
export async function stressOnce(guest: UmlGuest, socket: string, backendPid: number, p: number, k: number): Promise<StressRun> {
  let ready = 0;
  let done = 0;
  let cpu0: CpuReading = { ns: 0, ticks: 0 };
  let cpu1: CpuReading = { ns: 0, ticks: 0 };
  let vcsw0 = 0;
  let vcsw1 = 0;
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
          vcsw0 = procVoluntaryCsw(backendPid);
          cpu0 = procCpu(backendPid);
        } else if (l.startsWith('stress: ')) {
          done = performance.now();
          cpu1 = procCpu(backendPid);
          vcsw1 = procVoluntaryCsw(backendPid);
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
    backendSleepsPerRequest: (vcsw1 - vcsw0) / (p * k),
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
  const lvuBin = buildLvu(opts.log);
  const kinds: BackendKind[] = lvuBin ? ['ts', 'lvu', 'c'] : ['ts', 'c'];
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
  opts.log(`uml: back-ends ${kinds.map((x) => BACKEND_LABEL[x]).join(', ')} on cpu ${BACKEND_CPU}, UML on cpu ${UML_CPU}; load average ${loadavg()}`);
  try {
    for (let round = 1; round <= opts.rounds; round++) {
      const shift = round % kinds.length;
      const order: BackendKind[] = [...kinds.slice(shift), ...kinds.slice(0, shift)];
      const parts: string[] = [];
      for (const kind of order) {
        const be = await startBackend(kind, kind === 'lvu' ? lvuBin! : backendBin, { cpu: BACKEND_CPU, dir });
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
  const rows: Row[] = [];
  if (!lvuBin) {
    rows.push({
      section: 'uml',
      name: 'libvhost-user column SKIPPED: the anchor (../shared/anchors/libvhost-user-virtio-test) is missing or did not build; ratios below are against our C only',
      unit: '',
      samples: [],
    });
  }
  for (const { p, k } of loads) {
    const ts = samples.get(`ts/${p}`)!;
    const each = (f: (s: StressRun) => number, digits: number) => kinds.map((x) => `${BACKEND_LABEL[x]} ${median(samples.get(`${x}/${p}`)!.map(f)).toFixed(digits)}`).join(', ');
    for (const other of kinds.filter((x) => x !== 'ts')) {
      const o = samples.get(`${other}/${p}`)!;
      const first = rows.length === 0 || !rows.at(-1)!.name.startsWith(`virtio-stress -q ${p} `);
      rows.push({
        section: 'uml',
        name: `virtio-stress -q ${p} ${k} (UML guest), TS backend`,
        unit: 'requests/s',
        samples: ts.map((s) => s.requestsPerSec),
        ref: { name: `${BACKEND_LABEL[other]} backend`, samples: o.map((s) => s.requestsPerSec) },
        paired: ts.map((s, i) => s.requestsPerSec / o[i]!.requestsPerSec),
        target: other === 'c' ? 0.95 : undefined,
        note: first
          ? `backend CPU µs/request: ${each((s) => s.backendCpuUsPerRequest, 1)}; sleeps/request: ${each((s) => s.backendSleepsPerRequest, 2)}; TS VmHWM ${median(ts.map((s) => s.backendHwmMiB)).toFixed(1)} MiB`
          : `TS/${BACKEND_LABEL[other]} CPU per request ${median(ts.map((s, i) => s.backendCpuUsPerRequest / o[i]!.backendCpuUsPerRequest)).toFixed(2)}× paired`,
      });
      if (first) rows.at(-1)!.note += `; TS/${BACKEND_LABEL[other]} CPU per request ${median(ts.map((s, i) => s.backendCpuUsPerRequest / o[i]!.backendCpuUsPerRequest)).toFixed(2)}× paired`;
    }
  }
  return rows;
}

export const section = { name: 'uml', run };

await runIfMain(import.meta.url, section, 3);
