/**
 * Shared pieces of the virtio-blk real-guest and kill tests (test/linux/blk*.test.ts): the
 * `virtio-backend --device blk` daemon as a child process, self-describing guest patterns the
 * host can recompute, and the host-side checks of an image (e2fsck, debugfs).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { onLines } from './lines.js';
import { cliPath } from './paths.js';

export interface BlkDaemon {
  proc: ChildProcess;
  stdout: string[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly running: boolean;
  /** Resolves with the first stdout/stderr line matching `re` (rejects after `ms` or if the daemon exits first). */
  waitForLine(re: RegExp, ms?: number): Promise<string>;
  /** Sends `signal` (default SIGKILL) if it still runs, and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** blk daemons started by this process that still run (0 after every test cleaned up). */
export function liveBlkDaemons(): number {
  return [...children].filter((c) => c.exitCode === null && c.signalCode === null).length;
}

export function assertNoBlkDaemonLeft(): void {
  assert.equal(liveBlkDaemons(), 0, 'virtio-backend --device blk children left running');
}

/**
 * Starts `virtio-backend --device blk --image IMAGE --socket-path SOCKET ...args` and waits for
 * its `listening` line.
 */
export async function spawnBlkDaemon(socket: string, image: string, args: string[] = []): Promise<BlkDaemon> {
  const proc = spawn(process.execPath, [cliPath('virtio-backend'), '--device', 'blk', '--image', image, '--socket-path', socket, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => {
      children.delete(proc);
      resolve({ code, signal });
    }),
  );
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  const d: BlkDaemon = {
    proc,
    stdout: [],
    stderr: [],
    exited,
    get running() {
      return proc.exitCode === null && proc.signalCode === null;
    },
    waitForLine(re, ms = 15_000) {
      const found = [...d.stdout, ...d.stderr].find((l) => re.test(l));
      if (found !== undefined) return Promise.resolve(found);
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`blk daemon: no line matching ${re} in ${ms} ms:\n${[...d.stdout, ...d.stderr].join('\n')}`)), ms);
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(new Error(`blk daemon exited (${signal ?? code}) before printing ${re}:\n${[...d.stdout, ...d.stderr].join('\n')}`));
        });
      });
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (d.running) proc.kill(signal);
      return exited;
    },
  };
  const collect = (stream: NodeJS.ReadableStream, into: string[]): void =>
    onLines(stream, (l) => {
      if (into.length < 2000) into.push(l);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.re.test(l)) {
          waiters[i]!.resolve(l);
          waiters.splice(i, 1);
        }
      }
    });
  collect(proc.stdout!, d.stdout);
  collect(proc.stderr!, d.stderr);
  await d.waitForLine(/^virtio-backend: listening on /);
  return d;
}

// ---------------------------------------------------------------- guest patterns

/** First line number of a pattern (every number has 8 digits). */
const PATTERN_BASE = 10_000_000;

/**
 * The bytes of the guest's pattern `tag` for `bytes` bytes: the lines `vt-blk <tag> <n>\n` for
 * n = 10000000, 10000001, …, cut at `bytes`. The guest makes the same with
 * {@link GUEST_PATTERN_FUNCTION}.
 */
export function hostPattern(tag: string, bytes: number): Buffer {
  const parts: string[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const line = `vt-blk ${tag} ${PATTERN_BASE + i}\n`;
    parts.push(line);
    n += line.length;
  }
  return Buffer.from(parts.join(''), 'latin1').subarray(0, bytes);
}

/**
 * A busybox shell function `p TAG BYTES` writing {@link hostPattern}(TAG, BYTES) to stdout.
 * seq and sed, not awk: busybox awk's printf costs ~80 µs a line under User-Mode Linux.
 * (Each line is at least 18 bytes, so BYTES/18 + 1 lines are enough.)
 */
export const GUEST_PATTERN_FUNCTION = `p(){ seq ${PATTERN_BASE} $((${PATTERN_BASE}+$2/18+1))|sed "s/^/vt-blk $1 /"|head -c $2;}`;

// ---------------------------------------------------------------- host checks of an image

/** Whether e2fsprogs' e2fsck and debugfs are on PATH. */
export function haveE2fsprogs(): boolean {
  return ['e2fsck', 'debugfs', 'mkfs.ext4'].every((c) => spawnSync(c, ['-V'], { encoding: 'utf8' }).error === undefined);
}

/** `e2fsck -fn IMAGE`: asserts a clean file system (exit 0). */
export function assertFsckClean(image: string): string {
  const r = spawnSync('e2fsck', ['-fn', image], { encoding: 'utf8' });
  assert.equal(r.status, 0, `e2fsck -fn ${image} (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** A file's contents read from the image with `debugfs -R 'cat PATH'`. */
export function debugfsCat(image: string, file: string): Buffer {
  const r = spawnSync('debugfs', ['-R', `cat ${file}`, image], { maxBuffer: 256 * 1024 * 1024 });
  assert.equal(r.status, 0, `debugfs cat ${file}: ${r.stderr}`);
  return r.stdout;
}
