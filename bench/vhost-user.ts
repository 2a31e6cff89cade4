/**
 * Section "vhost-user": the TypeScript back-end (`virtio-test-backend` CLI, a Node process)
 * against a minimal C back-end for the same device (bench/ref/vhost-user-ref-backend.c),
 * both as child processes pinned to cpu 1, driven by a load generator pinned to cpu 0 that
 * keeps 1, 16 or 128 requests in flight, EVENT_IDX on and off. Each round starts both afresh,
 * side by side, and measures each configuration on the two back-ends back to back, in an order
 * that alternates (configuration by configuration, round by round).
 *
 * Two load generators:
 *  - the C front-end bench/ref/vhost-user-ref-load.c (main figures: it needs ~0.2 µs of CPU
 *    per request, so it never limits the back-end it drives);
 *  - the project's TypeScript front-end (VirtioTestClient, bench/vhost-user/load.ts), with
 *    its own CPU time reported: it shows whether it would have been the bottleneck.
 *
 * Back-end CPU time (all threads, from /proc/<pid>/task/<tid>/schedstat) over the measured
 * window.
 *
 * Each back-end serves three throwaway connections (WARM_UP_CONFIGS) after it starts, before
 * anything is measured: the figures are those of a running daemon. A fresh Node process
 * reaches its steady state only at its third connection: V8 generalizes field types when the
 * second session's objects arrive and deoptimizes the hot path, then recompiles it on its
 * background threads, whose CPU time (~4 µs per request at depth 1, `--trace-deopt`, per-thread
 * schedstat) would otherwise be counted in the first two configurations. The C back-end gets
 * the same treatment.
 *
 * Both back-ends publish the used ring after the first answer of a pass, then every 32
 * answers (their default, --publish-batch 32). One more pair per round runs both with
 * --publish-batch 0 (one publication per pass, the first session's rule) at depth 128, to
 * show what that choice is worth.
 *
 * The TS load generator is a Node process too: each of its runs first makes two throwaway
 * connections with the measured configuration (50 + 100 ms each), for the same reason.
 *
 *   node dist/bench/vhost-user.js [--rounds 7] [--quick]
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { runIfMain, median, type Row, type SectionOptions } from './report.js';
import { buildRef, distRoot, loadavg, pinned, startBackend, type BackendKind } from './vhost-user/proc.js';
import type { LoadResult } from './vhost-user/load.js';

const run$ = promisify(execFile);
const BACKEND_CPU = 1;
const LOAD_CPU = 0;
export const DEPTHS = [1, 16, 128] as const;
const EVENT_IDX = [true, false] as const;
/** One configuration of the load: requests in flight and VIRTIO_F_EVENT_IDX. */
type Config = { depth: number; eventIdx: boolean };
const PER_PASS_CONFIGS: Config[] = [{ depth: 128, eventIdx: true }];
/** One connection per entry, 50 ms + 150 ms each, results dropped (see the header). */
const WARM_UP_CONFIGS: Config[] = [
  { depth: 128, eventIdx: true },
  { depth: 16, eventIdx: false },
  { depth: 1, eventIdx: true },
];

/** 'pp': the C load against back-ends started with --publish-batch 0 (one publication per pass). */
type Load = 'c' | 'ts' | 'pp';
interface Sample {
  rps: number;
  /** Back-end CPU µs per request. */
  cpuUs: number;
  /** Share of one CPU the load generator used over the window. */
  frontendShare: number;
  backendShare: number;
}
const key = (load: Load, backend: BackendKind, depth: number, eventIdx: boolean) => `${load}/${backend}/${depth}/${eventIdx ? 'on' : 'off'}`;

/**
 * Runs a load generator on `configs`, one connection each: the C one, or the TS one, which
 * first makes two throwaway connections with the first configuration (see the header).
 */
async function runLoad(generator: 'c' | 'ts', loadBin: string, socket: string, pid: number, configs: Config[], ms: number, warm: number): Promise<LoadResult[]> {
  const argv =
    generator === 'c'
      ? [loadBin, '--socket', socket, '--backend-pid', String(pid), '--configs', configs.map((c) => `${c.depth}:${c.eventIdx ? 1 : 0}:1`).join(','), '--ms', String(ms), '--warm', String(warm)]
      : [process.execPath, path.join(distRoot, 'bench', 'vhost-user', 'load.js'), '--socket', socket, '--backend-pid', String(pid), '--configs', JSON.stringify([configs[0]!, configs[0]!, ...configs]), '--ms', String(ms), '--warm', String(warm), '--throwaway', '2'];
  const cmd = pinned(LOAD_CPU, argv);
  const { stdout } = await run$(cmd[0]!, cmd.slice(1), { maxBuffer: 1 << 20, timeout: 120_000 });
  return stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as LoadResult);
}

export async function run(opts: SectionOptions): Promise<Row[]> {
  // Depth 1 completes ~20 k requests/s, each at the mercy of two cross-CPU wake-ups whose
  // latency has a long tail here: its windows are three times longer so that a pair's ratio
  // rests on ~30 k requests, like the other depths' on 150 k and more.
  const msFor = (depth: number) => (opts.quick ? 200 : depth === 1 ? 1500 : 500);
  const warm = opts.quick ? 80 : 150;
  const backendBin = buildRef('vhost-user-ref-backend', opts.log);
  const loadBin = buildRef('vhost-user-ref-load', opts.log);
  const samples = new Map<string, Sample[]>();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vubench-vu-'));
  const cConfigs = DEPTHS.flatMap((depth) => EVENT_IDX.map((eventIdx) => ({ depth, eventIdx })));
  const tsConfigs = DEPTHS.map((depth) => ({ depth, eventIdx: true }));
  opts.log(`vhost-user: back-ends on cpu ${BACKEND_CPU}, load generators on cpu ${LOAD_CPU}; load average ${loadavg()}`);
  const record = (load: Load, kind: BackendKind, results: LoadResult[]) => {
    for (const r of results) {
      const k = key(load, kind, r.depth, r.eventIdx);
      const s: Sample = {
        rps: r.requests / r.seconds,
        cpuUs: (r.backendCpu / r.requests) * 1e6,
        frontendShare: r.frontendCpu / r.seconds,
        backendShare: r.backendCpu / r.seconds,
      };
      (samples.get(k) ?? samples.set(k, []).get(k)!).push(s);
    }
  };
  try {
    for (let round = 1; round <= opts.rounds; round++) {
      // Both back-ends run side by side (the idle one sleeps in epoll) and every configuration
      // is measured on one right after the other, in an order that alternates from one
      // configuration to the next and between rounds: a pair is < 1 s apart, well inside the
      // minutes over which this machine's cross-core latency drifts.
      const orderFor = (i: number): BackendKind[] => ((round + i) % 2 ? ['ts', 'c'] : ['c', 'ts']);
      const measurePairs = async (extra: string[], runs: [Load, Config][]) => {
        const started = await Promise.allSettled((['ts', 'c'] as const).map((kind) => startBackend(kind, backendBin, { cpu: BACKEND_CPU, dir, extra })));
        const both = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
        try {
          const failed = started.find((r) => r.status === 'rejected');
          if (failed) throw (failed as PromiseRejectedResult).reason;
          for (const be of both) await runLoad('c', loadBin, be.socket, be.pid, WARM_UP_CONFIGS, 150, 50);
          for (const [i, [load, config]] of runs.entries()) {
            for (const kind of orderFor(i)) {
              const be = both.find((b) => b.kind === kind)!;
              record(load, kind, await runLoad(load === 'ts' ? 'ts' : 'c', loadBin, be.socket, be.pid, [config], msFor(config.depth), warm));
            }
          }
        } finally {
          await Promise.all(both.map((be) => be.stop()));
        }
      };
      await measurePairs([], [...cConfigs.map((c): [Load, Config] => ['c', c]), ...tsConfigs.map((c): [Load, Config] => ['ts', c])]);
      await measurePairs(['--publish-batch', '0'], PER_PASS_CONFIGS.map((c): [Load, Config] => ['pp', c]));
      const line = (load: Load, kind: BackendKind) =>
        cConfigs
          .filter((c) => load === 'c' || c.eventIdx)
          .map((c) => {
            const s = samples.get(key(load, kind, c.depth, c.eventIdx))!.at(-1)!;
            return `d${c.depth}${c.eventIdx ? '' : '/noeidx'} ${(s.rps / 1e3).toFixed(0)}k`;
          })
          .join(' ');
      const pp = (kind: BackendKind) => `${(samples.get(key('pp', kind, 128, true))!.at(-1)!.rps / 1e3).toFixed(0)}k`;
      opts.log(`vhost-user: round ${round}/${opts.rounds}: C load → TS ${line('c', 'ts')} | C ${line('c', 'c')}; TS load → TS ${line('ts', 'ts')} | C ${line('ts', 'c')}; per pass d128 TS ${pp('ts')} | C ${pp('c')}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const pct = (xs: number[]) => `${Math.round(median(xs) * 100)}%`;
  const rows: Row[] = [];
  for (const depth of DEPTHS) {
    for (const eventIdx of EVENT_IDX) {
      const ts = samples.get(key('c', 'ts', depth, eventIdx))!;
      const c = samples.get(key('c', 'c', depth, eventIdx))!;
      const label = `depth ${depth}, event idx ${eventIdx ? 'on' : 'off'}`;
      rows.push({
        section: 'vhost-user',
        name: `TS backend requests/s (C load, ${label})`,
        unit: 'requests/s',
        samples: ts.map((s) => s.rps),
        ref: { name: 'C backend', samples: c.map((s) => s.rps) },
        // The two back-ends ran one after the other in each round: pair them (report.ts).
        paired: ts.map((s, i) => s.rps / c[i]!.rps),
        target: 0.9,
        note: `CPU busy: TS backend ${pct(ts.map((s) => s.backendShare))}, C backend ${pct(c.map((s) => s.backendShare))}, C load ${pct(ts.map((s) => s.frontendShare))}`,
      });
      rows.push({
        section: 'vhost-user',
        name: `TS backend CPU per request (C load, ${label})`,
        unit: 'µs',
        samples: ts.map((s) => s.cpuUs),
        lowerIsBetter: true,
        ref: { name: 'C backend', samples: c.map((s) => s.cpuUs) },
        paired: ts.map((s, i) => c[i]!.cpuUs / s.cpuUs),
        target: 0.67,
        // The ratio column is C/TS (higher is better, like every ratio in the table); the note
        // gives the same paired median as TS/C, the form of the target, and the ratio of medians.
        note: (() => {
          const tsOverC = ts.map((s, i) => s.cpuUs / c[i]!.cpuUs);
          const range = tsOverC.length > 1 ? ` (${Math.min(...tsOverC).toFixed(2)}–${Math.max(...tsOverC).toFixed(2)})` : '';
          const ofMedians = median(ts.map((s) => s.cpuUs)) / median(c.map((s) => s.cpuUs));
          return `TS/C = ${median(tsOverC).toFixed(2)}×${range} paired, ${ofMedians.toFixed(2)}× of medians (target ≤ 1.5×)`;
        })(),
      });
    }
  }
  {
    const ts = samples.get(key('pp', 'ts', 128, true))!;
    const c = samples.get(key('pp', 'c', 128, true))!;
    rows.push({
      section: 'vhost-user',
      name: 'TS backend requests/s (C load, depth 128, event idx on), both publishing once per pass',
      unit: 'requests/s',
      samples: ts.map((s) => s.rps),
      ref: { name: 'C backend', samples: c.map((s) => s.rps) },
      paired: ts.map((s, i) => s.rps / c[i]!.rps),
      note: `--publish-batch 0 on both (one publication per pass, the first session's rule); CPU per request TS ${median(ts.map((s) => s.cpuUs)).toFixed(2)} µs, C ${median(c.map((s) => s.cpuUs)).toFixed(2)} µs`,
    });
  }
  for (const depth of DEPTHS) {
    const ts = samples.get(key('ts', 'ts', depth, true))!;
    const c = samples.get(key('ts', 'c', depth, true))!;
    const cc = samples.get(key('c', 'c', depth, true))!;
    rows.push({
      section: 'vhost-user',
      name: `TS frontend → C backend (depth ${depth}, event idx on)`,
      unit: 'requests/s',
      samples: c.map((s) => s.rps),
      ref: { name: 'C load → C backend', samples: cc.map((s) => s.rps) },
      note: `TS frontend CPU busy ${pct(c.map((s) => s.frontendShare))} (C load: ${pct(cc.map((s) => s.frontendShare))}); TS frontend → TS backend ${Math.round(median(ts.map((s) => s.rps)) / 1e3)}k/s, frontend busy ${pct(ts.map((s) => s.frontendShare))}`,
    });
  }
  return rows;
}

export const section = { name: 'vhost-user', run };

await runIfMain(import.meta.url, section, 7);
