/**
 * Linux's tools/virtio/ringtest (C, two pthreads on a split ring), built at run time from
 * Debian's linux-source-6.1 into build/ringtest/ (gitignored). Nothing of it is in the repo.
 *
 * One ringtest "op" is one buffer: the guest thread adds a 1-descriptor buffer and publishes
 * avail.idx, the host thread reads avail.idx, the ring entry and the descriptor, writes a used
 * element and publishes used.idx, and the guest takes it back (get_buf). With --sleep the
 * guest checks avail_event after every `--batch` adds and kicks through an eventfd, the host
 * checks used_event after every buffer and calls through an eventfd, and each side sleeps in
 * read(eventfd) after re-enabling (event index). It prints nothing: it runs --run-cycles
 * buffers and exits, so it is timed around the spawn.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SOURCE_TARBALL = '/usr/src/linux-source-6.1.tar.xz';
const MEMBER = 'linux-source-6.1/tools/virtio/ringtest/';
export const RINGTEST_DIR = path.join(REPO, 'build', 'ringtest', MEMBER);
export const PROGRAMS = ['virtio_ring_0_9', 'virtio_ring_poll'] as const;
export type RingtestProgram = (typeof PROGRAMS)[number];

/** Extracts (once) and builds the two programs; returns the directory holding them. */
export function buildRingtest(log: (s: string) => void = () => {}): string {
  if (!PROGRAMS.every((p) => existsSync(path.join(RINGTEST_DIR, p)))) {
    if (!existsSync(path.join(RINGTEST_DIR, 'main.c'))) {
      if (!existsSync(SOURCE_TARBALL)) {
        throw new Error(`${SOURCE_TARBALL} is missing: apt-get install linux-source-6.1`);
      }
      log(`extracting ${MEMBER} from ${SOURCE_TARBALL} (xz: ~15 s, once)`);
      const dest = path.join(REPO, 'build', 'ringtest');
      mkdirSync(dest, { recursive: true });
      // Only the ringtest folder: the two programs include main.h and the system's <linux/virtio_ring.h>.
      execFileSync('tar', ['-xJf', SOURCE_TARBALL, '-C', dest, MEMBER], { stdio: 'inherit' });
    }
    log(`building ${PROGRAMS.join(', ')} (its own Makefile: -O2 -flto)`);
    execFileSync('make', ['-C', RINGTEST_DIR, ...PROGRAMS], { stdio: 'pipe' });
  }
  return RINGTEST_DIR;
}

export interface RingtestRun {
  program: RingtestProgram;
  sleep: boolean;
  cycles: number;
  ringSize?: number;
  batch?: number;
}

export function ringtestArgs(r: RingtestRun): string[] {
  const args = ['--host-affinity', '1', '--guest-affinity', '0', '--ring-size', String(r.ringSize ?? 256)];
  args.push('--run-cycles', String(r.cycles));
  if (r.batch !== undefined) args.push('--batch', String(r.batch));
  if (r.sleep) args.push('--sleep');
  return args;
}

export interface RingtestResult {
  opsPerSec: number;
  /** CPU seconds (user + system) of both threads over 2 × wall time: how much of the 2 CPUs it got. */
  cpuShare: number;
  /** Voluntary context switches of the process: with --sleep, how often a thread slept in read(eventfd). */
  sleeps: number;
}

const TIME = '/usr/bin/time';

/** Runs once under /usr/bin/time (for its CPU time); buffers per second from the wall clock around it. */
export function runRingtest(r: RingtestRun): Promise<RingtestResult> {
  const bin = path.join(RINGTEST_DIR, r.program);
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = existsSync(TIME)
      ? spawn(TIME, ['-f', '@cpu %U %S %w', bin, ...ringtestArgs(r)], { stdio: ['ignore', 'ignore', 'pipe'] })
      : spawn(bin, ringtestArgs(r), { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      const ns = Number(process.hrtime.bigint() - t0);
      if (code !== 0) reject(new Error(`${r.program} exited ${code ?? signal}: ${err}`));
      else {
        const m = /@cpu ([\d.]+) ([\d.]+) (\d+)/.exec(err);
        const cpu = m ? Number(m[1]) + Number(m[2]) : NaN;
        resolve({ opsPerSec: r.cycles / (ns / 1e9), cpuShare: cpu / (2 * (ns / 1e9)), sleeps: m ? Number(m[3]) : NaN });
      }
    });
  });
}
