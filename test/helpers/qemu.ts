/**
 * Shared pieces of the QEMU guest tests (test/machine/qemu-boot and any test that serves a
 * vhost-user device to QEMU): finding the guest (skipping loudly without it, failing in CI),
 * qemu-storage-daemon as a real vhost-user-blk back end, and leak checks for the QEMU processes
 * this test process started.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { findQemuGuest, qemuNamePrefix, type QemuGuest } from '../../src/machine/qemu.js';
import { onLines } from './lines.js';

export const qemuGuest: QemuGuest | null = findQemuGuest();
export const inCI = process.env.CI === 'true';

/** Whether a qemu-system-x86_64 can be started (VT_QEMU overrides the binary). */
export function haveQemu(binary: string = process.env.VT_QEMU ?? 'qemu-system-x86_64'): boolean {
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  return r.status === 0;
}

/**
 * The QEMU guest, or null after skipping the test with a loud `SKIPPED:` line. Under CI=true a
 * missing guest (or QEMU) is a failure: CI builds it (.ci/run), so its absence is a broken pipeline.
 */
export function needQemuGuest(t: { skip: (msg: string) => void }): QemuGuest | null {
  let why: string | null = null;
  if (!qemuGuest) why = 'QEMU guest not built (run guest/qemu/build.sh)';
  else if (!haveQemu()) why = 'qemu-system-x86_64 not found (apt-get install -y qemu-system-x86)';
  if (!why) return qemuGuest;
  if (inCI) assert.fail(`${why}; CI=true requires it`);
  const msg = `SKIPPED: ${why}`;
  console.log(`\n*** ${msg} ***\n`);
  t.skip(msg);
  return null;
}

/** QEMU processes started by process `pid` (runQemu names them `-name vt-<pid>-<n>`); '' if none. */
export function qemuProcessesOf(pid: number = process.pid): string {
  const r = spawnSync('pgrep', ['-af', '--', `qemu-system.* -name ${qemuNamePrefix(pid)}[0-9]`], { encoding: 'utf8' });
  return r.stdout.trim();
}

export function assertNoQemuLeft(pid: number = process.pid): void {
  assert.equal(qemuProcessesOf(pid), '', `QEMU processes left behind by ${pid}`);
}

// ---- qemu-storage-daemon: a real vhost-user-blk back end (Debian's qemu-utils) ----

export interface BlkExport {
  /** image file (raw), served as is. */
  image: string;
  /** vhost-user socket the daemon listens on. */
  socket: string;
  /** virtqueues the export offers (default 1). */
  numQueues?: number;
  /** default true. */
  writable?: boolean;
}

export interface StorageDaemon {
  proc: ChildProcess;
  /** stdout and stderr lines of the daemon. */
  output: string[];
  /** SIGTERM, then SIGKILL after 5 s; resolves when it has exited. */
  stop(): Promise<void>;
}

const daemons = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of daemons) p.kill('SIGKILL');
});

/** Whether qemu-storage-daemon can be started (VT_QSD overrides the binary). */
export function haveStorageDaemon(): boolean {
  return spawnSync(process.env.VT_QSD ?? 'qemu-storage-daemon', ['--version'], { encoding: 'utf8' }).status === 0;
}

/** Like needQemuGuest, for a test that also needs qemu-storage-daemon. */
export function needStorageDaemon(t: { skip: (msg: string) => void }): boolean {
  if (haveStorageDaemon()) return true;
  const why = 'qemu-storage-daemon not found (apt-get install -y qemu-utils)';
  if (inCI) assert.fail(`${why}; CI=true requires it`);
  console.log(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(`SKIPPED: ${why}`);
  return false;
}

/** Starts qemu-storage-daemon with one vhost-user-blk export per entry; resolves once every socket exists. */
export async function startStorageDaemon(exports: BlkExport[], timeoutMs = 15_000): Promise<StorageDaemon> {
  const opt = (s: string): string => s.replace(/,/g, ',,');
  const args: string[] = [];
  exports.forEach((e, i) => {
    args.push('--blockdev', `driver=file,node-name=file${i},filename=${opt(e.image)}`);
    args.push(
      '--export',
      `type=vhost-user-blk,id=exp${i},node-name=file${i},addr.type=unix,addr.path=${opt(e.socket)},` +
        `writable=${e.writable === false ? 'off' : 'on'},num-queues=${e.numQueues ?? 1}`,
    );
  });
  const proc = spawn(process.env.VT_QSD ?? 'qemu-storage-daemon', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  daemons.add(proc);
  const output: string[] = [];
  onLines(proc.stdout!, (l) => output.push(l));
  onLines(proc.stderr!, (l) => output.push(l));
  const exited = new Promise<void>((resolve) => {
    proc.on('close', () => {
      daemons.delete(proc);
      resolve();
    });
    proc.on('error', (e) => {
      output.push(`spawn error: ${e.message}`);
      daemons.delete(proc);
      resolve();
    });
  });
  let gone = false;
  void exited.then(() => (gone = true));
  const stop = async (): Promise<void> => {
    if (!gone) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
  };
  const deadline = Date.now() + timeoutMs;
  while (!exports.every((e) => existsSync(e.socket))) {
    if (gone || Date.now() > deadline) {
      await stop();
      throw new Error(`qemu-storage-daemon did not come up (${gone ? 'it exited' : 'timeout'}):\n${output.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { proc, output, stop };
}

/** qemu-storage-daemon children of this process still running (0 after every test cleaned up). */
export function liveStorageDaemons(): number {
  return daemons.size;
}

/** No QEMU and no qemu-storage-daemon left behind by this process. */
export function assertNothingQemuLeft(): void {
  assertNoQemuLeft();
  assert.equal(liveStorageDaemons(), 0, 'qemu-storage-daemon children left running');
}
