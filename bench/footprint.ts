/**
 * Section "footprint": start-up time and memory of the back-end daemon, TypeScript
 * (`virtio-test-backend` CLI on Node) and the C reference, alternated round by round.
 *
 *  - spawn → "listening" line on stdout, and spawn → "ready" on --ready-fd 3 (unpinned: an
 *    ordinary start);
 *  - VmRSS when idle (listening, no front-end, 300 ms after start-up), VmHWM (peak) then;
 *  - VmHWM and VmRSS after 1 s of load (the C load generator, 128 requests in flight,
 *    event idx on, reconnecting once) — the peak a busy daemon reaches.
 *
 *   node dist/bench/footprint.js [--rounds 5] [--quick]
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { runIfMain, median, type Row, type SectionOptions } from './report.js';
import { backendArgv, buildRef, procMemory, type BackendKind } from './vhost-user/proc.js';

const run$ = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Footprint {
  listeningMs: number;
  readyMs: number;
  idleRssMiB: number;
  idleHwmMiB: number;
  loadRssMiB: number;
  loadHwmMiB: number;
}

async function measureOnce(kind: BackendKind, cBin: string, loadBin: string, dir: string, loadMs: number): Promise<Footprint> {
  const socket = path.join(dir, `${kind}-fp.sock`);
  const argv = backendArgv(kind, socket, cBin, ['--ready-fd', '3']);
  const t0 = performance.now();
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit', 'pipe'] });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  try {
    const listening = new Promise<number>((resolve, reject) => {
      let out = '';
      proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (/listening on /.test(out)) resolve(performance.now() - t0);
      });
      proc.once('exit', () => reject(new Error(`${kind} backend exited before listening`)));
    });
    const ready = new Promise<number>((resolve, reject) => {
      const s = proc.stdio[3] as NodeJS.ReadableStream;
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        if (d.includes('ready')) resolve(performance.now() - t0);
      });
      proc.once('exit', () => reject(new Error(`${kind} backend exited before ready`)));
    });
    const [listeningMs, readyMs] = await Promise.all([listening, ready]);
    await sleep(300);
    const idle = procMemory(proc.pid!);
    // Two connections (a reconnect), half the load each.
    for (let i = 0; i < 2; i++) {
      await run$(loadBin, ['--socket', socket, '--backend-pid', String(proc.pid), '--configs', '128:1:1', '--ms', String(loadMs / 2), '--warm', '50']);
    }
    const loaded = procMemory(proc.pid!);
    return { listeningMs, readyMs, idleRssMiB: idle.rssMiB, idleHwmMiB: idle.hwmMiB, loadRssMiB: loaded.rssMiB, loadHwmMiB: loaded.hwmMiB };
  } finally {
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(t);
  }
}

export async function run(opts: SectionOptions): Promise<Row[]> {
  const cBin = buildRef('vhost-user-ref-backend', opts.log);
  const loadBin = buildRef('vhost-user-ref-load', opts.log);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vubench-fp-'));
  const got: Record<'ts' | 'c', Footprint[]> = { ts: [], c: [] };
  try {
    for (let round = 1; round <= opts.rounds; round++) {
      const order: ('ts' | 'c')[] = round % 2 ? ['ts', 'c'] : ['c', 'ts'];
      for (const kind of order) got[kind].push(await measureOnce(kind, cBin, loadBin, dir, opts.quick ? 300 : 1000));
      const f = (k: 'ts' | 'c') => {
        const x = got[k].at(-1)!;
        return `${k}: listening ${x.listeningMs.toFixed(0)} ms, idle ${x.idleRssMiB.toFixed(1)} MiB, loaded HWM ${x.loadHwmMiB.toFixed(1)} MiB`;
      };
      opts.log(`footprint: round ${round}/${opts.rounds}: ${f('ts')}; ${f('c')}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const m = (k: 'ts' | 'c', f: keyof Footprint) => median(got[k].map((x) => x[f]));
  const row = (name: string, f: keyof Footprint, unit: string, limit: number, what: string): Row => ({
    section: 'footprint',
    name,
    unit,
    samples: got.ts.map((x) => x[f]),
    lowerIsBetter: true,
    ref: { name: 'C backend', samples: got.c.map((x) => x[f]) },
    note: `target < ${limit} ${unit}: ${m('ts', f) < limit ? 'met' : 'MISSED'} (${what})`,
  });
  return [
    row('TS backend: spawn → "listening" line', 'listeningMs', 'ms', 300, `C ${m('c', 'listeningMs').toFixed(1)} ms`),
    row('TS backend: spawn → --ready-fd', 'readyMs', 'ms', 300, `C ${m('c', 'readyMs').toFixed(1)} ms`),
    row('TS backend: VmRSS idle (listening)', 'idleRssMiB', 'MiB', 60, `idle VmHWM ${m('ts', 'idleHwmMiB').toFixed(1)} MiB; C ${m('c', 'idleRssMiB').toFixed(2)} MiB`),
    row('TS backend: VmHWM after load (depth 128, 2 connections)', 'loadHwmMiB', 'MiB', 60, `VmRSS then ${m('ts', 'loadRssMiB').toFixed(1)} MiB; C VmHWM ${m('c', 'loadHwmMiB').toFixed(2)} MiB`),
  ];
}

export const section = { name: 'footprint', run };

await runIfMain(import.meta.url, section, 5);
