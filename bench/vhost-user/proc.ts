/**
 * Process-level measurements from /proc and process helpers shared by the vhost-user,
 * UML end-to-end and footprint sections: CPU time, voluntary context switches and memory of
 * a pid, building the C reference (bench/ref/) with cc into build/bench/, building the
 * libvhost-user anchor (../shared/anchors/libvhost-user-virtio-test, with its own build.sh,
 * into build/bench/lvu-backend), spawning a back-end (TypeScript CLI, C reference or the
 * libvhost-user anchor) pinned with taskset and waiting for its "listening" line.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** USER_HZ (100 on every Linux architecture Node supports). */
const CLOCK_TICKS = 100;

/**
 * A reading of process `pid`'s CPU time, for {@link cpuSecondsBetween}: `ns`, the sum of each
 * live thread's time on a CPU from /proc/<pid>/task/<tid>/schedstat (0 where sched_info is
 * off), and `ticks`, utime + stime from /proc/<pid>/stat in seconds (10 ms steps, but it keeps
 * the time of threads that have exited).
 */
export interface CpuReading {
  ns: number;
  ticks: number;
}

export function procCpu(pid: number): CpuReading {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ', 1)[0]) || 0;
    } catch {
      // the thread exited meanwhile
    }
  }
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // proc(5) fields 14 and 15; f[0] is field 3.
  return { ns, ticks: (Number(f[11]) + Number(f[12])) / CLOCK_TICKS };
}

/**
 * CPU seconds between two readings, from one source for both: the nanosecond sums, unless a
 * thread's time went missing between them (a thread that exited takes its schedstat with it,
 * so the sum then falls behind the ticks by more than their resolution), else the ticks.
 * A 500 ms window of a half-busy back-end is ~25 ticks, a ±4 % step per reading.
 */
export function cpuSecondsBetween(a: CpuReading, b: CpuReading): number {
  const byTicks = b.ticks - a.ticks;
  if (a.ns > 0 && b.ns > 0) {
    const byNs = (b.ns - a.ns) / 1e9;
    if (byNs >= byTicks - 2 / CLOCK_TICKS) return byNs;
  }
  return byTicks;
}

/**
 * Voluntary context switches of process `pid` so far (its sleeps: each time a thread blocked
 * in epoll_wait, read, futex...): `voluntary_ctxt_switches` of every live thread's
 * /proc/<pid>/task/<tid>/status, summed (/proc/<pid>/status alone counts only the main
 * thread). A thread that exits takes its count with it, as with schedstat.
 */
export function procVoluntaryCsw(pid: number): number {
  let n = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const m = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
      n += Number(m?.[1] ?? 0);
    } catch {
      // the thread exited meanwhile
    }
  }
  return n;
}

/** VmHWM and VmRSS of `pid` in MiB. */
export function procMemory(pid: number): { hwmMiB: number; rssMiB: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { hwmMiB: kb('VmHWM') / 1024, rssMiB: kb('VmRSS') / 1024 };
}

/** The repository root (dist/bench/vhost-user/proc.js → three levels up). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const distRoot = path.join(repoRoot, 'dist');

/** Compiles bench/ref/<name>.c into build/bench/<name> unless the binary is newer. Returns its path. */
export function buildRef(name: string, log: (s: string) => void): string {
  const src = path.join(repoRoot, 'bench', 'ref', `${name}.c`);
  const outDir = path.join(repoRoot, 'build', 'bench');
  const out = path.join(outDir, name);
  mkdirSync(outDir, { recursive: true });
  if (existsSync(out) && statSync(out).mtimeMs > statSync(src).mtimeMs) return out;
  log(`building ${path.relative(repoRoot, out)} (cc -O2)`);
  execFileSync('cc', ['-O2', '-Wall', '-o', out, src], { stdio: 'inherit' });
  return out;
}

/**
 * The libvhost-user anchor: a virtio-test back-end on QEMU's libvhost-user, kept outside the
 * project (GPL-2.0-or-later; never copied in) in ../shared/anchors/libvhost-user-virtio-test,
 * or where VIRTIO_BENCH_LVU_ANCHOR points.
 */
export const lvuAnchorDir = process.env.VIRTIO_BENCH_LVU_ANCHOR ?? path.resolve(repoRoot, '..', 'shared', 'anchors', 'libvhost-user-virtio-test');

/**
 * Builds the libvhost-user anchor with its own build.sh (offline: gcc only) into
 * build/bench/lvu-backend unless that binary is newer than its sources. Returns its path, or
 * null — after a loud note on the log — when the anchor is absent or does not build: the
 * sections then run without the libvhost-user column.
 */
export function buildLvu(log: (s: string) => void): string | null {
  const dir = lvuAnchorDir;
  const script = path.join(dir, 'build.sh');
  const loud = (why: string) => {
    log('!'.repeat(100));
    log(`!!! libvhost-user column SKIPPED: ${why}`);
    log('!!! (the anchor is ../shared/anchors/libvhost-user-virtio-test beside the project, or VIRTIO_BENCH_LVU_ANCHOR)');
    log('!'.repeat(100));
    return null;
  };
  if (!existsSync(script)) return loud(`${script} not found`);
  const out = path.join(repoRoot, 'build', 'bench', 'lvu-backend');
  const sources = [script, path.join(dir, 'lvu-backend.c'), path.join(dir, 'libvhost-user', 'libvhost-user.c'), path.join(dir, 'libvhost-user', 'libvhost-user.h')];
  try {
    const newest = Math.max(...sources.map((f) => statSync(f).mtimeMs));
    if (existsSync(out) && statSync(out).mtimeMs > newest) return out;
    mkdirSync(path.dirname(out), { recursive: true });
    log(`building ${path.relative(repoRoot, out)} (${path.relative(repoRoot, script)}, libvhost-user from the anchor)`);
    // stdout too goes to the log: the bench's stdout is the table.
    const said = execFileSync('sh', [script, path.join(dir, 'libvhost-user'), out], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
    if (said.trim()) log(said.trim());
    return out;
  } catch (e) {
    return loud(`build failed: ${(e as Error).message.split('\n')[0]}`);
  }
}

/** 'ts': our TypeScript CLI; 'c': our C reference (bench/ref); 'lvu': the libvhost-user anchor. */
export type BackendKind = 'ts' | 'c' | 'lvu';

/** How the report names each back-end. */
export const BACKEND_LABEL: Record<BackendKind, string> = { ts: 'TS', c: 'our C', lvu: 'libvhost-user' };

export interface Backend {
  kind: BackendKind;
  proc: ChildProcess;
  pid: number;
  socket: string;
  /** ms from spawn() to the "listening" line on stdout. */
  listeningMs: number;
  /** Stops it (SIGTERM, then SIGKILL) and removes its scratch directory. */
  stop(): Promise<void>;
}

/** `taskset -c cpu` prefix (empty when cpu is undefined or taskset is missing). */
export function pinned(cpu: number | undefined, argv: string[]): string[] {
  if (cpu === undefined || !hasTaskset()) return argv;
  return ['taskset', '-c', String(cpu), ...argv];
}
let tasksetOk: boolean | undefined;
function hasTaskset(): boolean {
  if (tasksetOk === undefined) {
    try {
      execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'pipe' });
      tasksetOk = true;
    } catch {
      tasksetOk = false;
    }
  }
  return tasksetOk;
}

/**
 * The command line of a back-end listening on `socket`; `binary` is the C reference's
 * (kind 'c') or the libvhost-user anchor's (kind 'lvu'; `lvu-backend [-q] SOCKET`, no other
 * options), unused for 'ts'.
 */
export function backendArgv(kind: BackendKind, socket: string, binary: string, extra: string[] = []): string[] {
  if (kind === 'ts') return [process.execPath, path.join(distRoot, 'src', 'cli', 'virtio-test-backend.js'), '--socket', socket, '--quiet', ...extra];
  if (kind === 'lvu') return [binary, '-q', ...extra, socket];
  return [binary, '--socket', socket, ...extra];
}

/**
 * Spawns a back-end on a fresh socket and waits for its listening line (stdout; stderr for
 * lvu-backend, which logs there).
 */
export async function startBackend(kind: BackendKind, binary: string, opts: { cpu?: number; dir?: string; extra?: string[] } = {}): Promise<Backend> {
  const dir = opts.dir ?? mkdtempSync(path.join(os.tmpdir(), 'vubench-'));
  const socket = path.join(dir, `${kind}.sock`);
  const argv = pinned(opts.cpu, backendArgv(kind, socket, binary, opts.extra));
  const t0 = performance.now();
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let heard: (() => void) | undefined;
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    if (err.length < 4000) {
      err += d;
      if (kind === 'lvu' && /listening on /.test(err)) heard?.();
    }
  });
  const listeningMs = await new Promise<number>((resolve, reject) => {
    let out = '';
    heard = () => {
      heard = undefined;
      proc.stdout!.off('data', onData);
      resolve(performance.now() - t0);
    };
    const onData = (d: string) => {
      out += d;
      if (/listening on /.test(out)) heard?.();
    };
    proc.stdout!.setEncoding('utf8').on('data', onData);
    proc.once('exit', (code, sig) => reject(new Error(`${kind} backend exited (${sig ?? code}) before listening: ${err}`)));
  });
  proc.stdout!.resume();
  const exited = new Promise<void>((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once('exit', () => r())));
  return {
    kind,
    proc,
    pid: proc.pid!,
    socket,
    listeningMs,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 2000);
        await exited;
        clearTimeout(t);
      }
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `uptime`'s load averages, for the report. */
export const loadavg = (): string => os.loadavg().map((x) => x.toFixed(2)).join(' ');
