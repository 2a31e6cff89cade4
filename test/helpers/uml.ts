/**
 * Shared pieces of the real-Linux (User-Mode Linux) tests, test/uml/ and test/machine/uml-boot:
 * finding the guest (skipping loudly without it, failing in CI), the virtio-test backend in this
 * process or as the `virtio-test-backend` CLI child, a virtio-test model that counts what it
 * serves, and leak checks (UML processes, backend children, socket files).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DeviceContext, VirtioDevice } from '../../src/device/device.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { findUmlGuest, umlGuestStaleness, type UmlGuest } from '../../src/machine/uml.js';
import { serveDevice, type BackendServer } from '../../src/vhost-user/backend-server.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { onLines } from './lines.js';
import { cliPath } from './paths.js';

export const umlGuest: UmlGuest | null = findUmlGuest();
export const inCI = process.env.CI === 'true';

/** umlGuestStaleness(), asked once per process (it runs `guest/linux/build.sh --print-hash`). */
let staleness: string | null | undefined;

/**
 * The UML guest, or null after skipping the test with a loud `SKIPPED:` line. Under CI=true a
 * missing guest is a failure: CI builds it (.ci/run), so its absence is a broken pipeline. A
 * guest built from other sources than guest/linux holds now (build/uml/current is not named by
 * the hash of the current inputs) is refused the same way: a test must not pass or fail on an
 * old driver.
 */
export function needGuest(t: { skip: (msg: string) => void }): UmlGuest | null {
  if (!umlGuest) {
    if (inCI) assert.fail('UML guest not built (run guest/linux/build.sh); CI=true requires it');
    return skipLoudly(t, 'UML guest not built (run guest/linux/build.sh)');
  }
  if (staleness === undefined) staleness = umlGuestStaleness();
  if (staleness !== null) {
    if (inCI) assert.fail(`${staleness}; CI=true requires a current guest`);
    return skipLoudly(t, staleness);
  }
  return umlGuest;
}

function skipLoudly(t: { skip: (msg: string) => void }, why: string): null {
  const msg = `SKIPPED: ${why}`;
  console.log(`\n*** ${msg} ***\n`);
  t.skip(msg);
  return null;
}

/** A private scratch directory (socket files, TMPDIR of a child); `remove()` deletes it. */
export function scratchDir(prefix = 'vt-uml-test-'): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A directory on tmpfs when it has room (UML's memory file is faster there), else the OS temp dir. */
export function fastScratchDir(prefix = 'vt-uml-test-'): { dir: string; remove(): void } {
  try {
    const fs = statfsSync('/dev/shm');
    if (fs.bavail * fs.bsize > 512 * 1024 * 1024) {
      const dir = mkdtempSync(path.join('/dev/shm', prefix));
      return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
    }
  } catch {
    /* no /dev/shm */
  }
  return scratchDir(prefix);
}

/** UML processes started by process `pid` (runUml names them umid=vt-<pid>-<n>); '' if none. */
export function umlProcessesOf(pid: number = process.pid): string {
  const r = spawnSync('pgrep', ['-af', `umid=vt-${pid}-`], { encoding: 'utf8' });
  return r.stdout.trim();
}

export function assertNoUmlLeft(pid: number = process.pid): void {
  assert.equal(umlProcessesOf(pid), '', `UML processes left behind by ${pid}`);
}

/** Kernel trouble on the console: an oops, BUG, WARN, panic or a lockup report. */
export const KERNEL_TROUBLE = /\b(Oops|BUG:|WARNING:|Kernel panic|Call Trace|cut here|general protection|soft lockup|hung_task|INFO: task)\b/;

export function assertNoKernelTrouble(lines: string[]): void {
  const bad = lines.filter((l) => KERNEL_TROUBLE.test(l));
  assert.deepEqual(bad, [], `kernel trouble on the console:\n${bad.join('\n')}`);
}

/** `[    0.310000] text` -> `text`. */
export const stripTimestamp = (line: string): string => line.replace(/^\[\s*\d+\.\d{6}\] /, '');

/** A kernel message on the console (printk lines carry a `[ seconds.micros]` stamp). */
export const isKernelLine = (line: string): boolean => /^\[\s*\d+\.\d+\] /.test(line);

/**
 * The program's own output: console lines minus kernel messages, which interleave at any point
 * (e.g. "tsc: Refined TSC clocksource calibration" a few seconds into a slow TCG boot).
 */
export const programLines = (lines: readonly string[]): string[] => lines.filter((l) => !isKernelLine(l));

/** What the C driver prints for the response to byte n (the seed's wording). */
export function driverLinesFor(n: number): string[] {
  return [`virtio response ret is ${n + 101}`, `virtio response arg1 is ${n + 102}`, `virtio response arg2 is ${n + 103}`];
}

/** The request bytes virtio-stress sends: worker i, request s -> (i*37 + s*11) & 0xff. */
export function stressHistogram(p: number, k: number): Uint32Array {
  const h = new Uint32Array(256);
  for (let i = 0; i < p; i++) for (let s = 0; s < k; s++) h[(i * 37 + s * 11) & 0xff]!++;
  return h;
}

/**
 * virtio-test that also counts the requests it serves by their `type` (the byte the guest
 * wrote); `other` counts types above 255 (none should come from our driver).
 */
export class CountingTestDevice extends VirtioTestDevice {
  readonly byType = new Uint32Array(256);
  other = 0;
  total = 0;
  private readonly typeBytes = new Uint8Array(4);

  override handleChain(queue: number, chain: DescriptorChain, ctx: DeviceContext): number {
    const used = super.handleChain(queue, chain, ctx);
    chain.read(this.typeBytes);
    const type = new DataView(this.typeBytes.buffer).getUint32(0, true);
    if (type < 256) this.byType[type]!++;
    else this.other++;
    this.total++;
    return used;
  }
}

/** Compares two 256-entry histograms and names the first few differences. */
export function assertSameHistogram(got: Uint32Array, want: Uint32Array, what: string): void {
  const diff: string[] = [];
  for (let n = 0; n < 256; n++) if (got[n] !== want[n]) diff.push(`type ${n}: ${got[n]} served, ${want[n]} sent`);
  assert.deepEqual(diff.slice(0, 10), [], `${what}: ${diff.length} request values served a wrong number of times`);
}

export interface InProcessBackend<D extends VirtioDevice> {
  server: BackendServer;
  socket: string;
  /** Device model lines (virtio-test's QEMU_BACK_END lines), unless `keepLines: false`. */
  lines: string[];
  /** Count of device model lines (kept even with keepLines: false). */
  lineCount: number;
  warnings: string[];
  events: string[];
  /** One model per front-end connection. */
  devices: D[];
  /** Closes the server and checks that the socket file is gone; removes the scratch dir. */
  close(): Promise<void>;
}

/** `serveDevice` on a fresh socket, in this process (on this event loop). */
export function startBackend<D extends VirtioDevice = VirtioTestDevice>(
  options: { createDevice?: () => D; maxQueueSize?: number; keepLines?: boolean } = {},
): InProcessBackend<D> {
  const tmp = scratchDir('vt-uml-sock-');
  const socket = path.join(tmp.dir, 'vt.sock');
  const create = options.createDevice ?? ((() => new VirtioTestDevice()) as unknown as () => D);
  const keep = options.keepLines ?? true;
  const be: InProcessBackend<D> = {
    server: undefined as unknown as BackendServer,
    socket,
    lines: [],
    lineCount: 0,
    warnings: [],
    events: [],
    devices: [],
    async close() {
      await be.server.close();
      const left = existsSync(socket);
      tmp.remove();
      assert.equal(left, false, `socket file ${socket} left after close()`);
    },
  };
  be.server = serveDevice({
    socketPath: socket,
    createDevice: () => {
      const d = create();
      be.devices.push(d);
      return d;
    },
    log: (l) => {
      be.lineCount++;
      if (keep) be.lines.push(l);
    },
    warn: (l) => be.warnings.push(l),
    info: (l) => be.events.push(l),
    maxQueueSize: options.maxQueueSize ?? 256,
  });
  return be;
}

/** The `virtio-test-backend` CLI as a child process, its output collected line by line. */
export interface CliBackend {
  proc: ChildProcess;
  socket: string;
  stdout: string[];
  stderr: string[];
  /** Requests served so far (`get type` lines on stdout; not with --quiet). */
  served: number;
  /** Called with every stdout line as it arrives. */
  onLine?: (line: string) => void;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first stdout/stderr line matching `re`; rejects if the process exits first or after `ms`. */
  waitForLine(re: RegExp, ms?: number): Promise<string>;
  /** SIGKILL if still running, and wait for the exit. */
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly running: boolean;
}

const children = new Set<ChildProcess>();

/** Backend children of this process still running (should be none after each test). */
export function liveBackendChildren(): number {
  return [...children].filter((c) => c.exitCode === null && c.signalCode === null).length;
}

/** For `after()` of files that spawn back-end CLIs: no UML and no back-end child left running. */
export function assertNothingLeftRunning(): void {
  assertNoUmlLeft();
  assert.equal(liveBackendChildren(), 0, 'backend children left running');
}

/** Starts `virtio-test-backend --socket <socket> ...args` and waits for its `listening` line. */
export async function spawnBackendCli(socket: string, args: string[] = []): Promise<CliBackend> {
  const proc = spawn(process.execPath, [cliPath('virtio-test-backend'), '--socket', socket, ...args], {
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
  const be: CliBackend = {
    proc,
    socket,
    stdout: [],
    stderr: [],
    served: 0,
    exited,
    get running() {
      return proc.exitCode === null && proc.signalCode === null;
    },
    waitForLine(re, ms = 15_000) {
      const found = [...be.stdout, ...be.stderr].find((l) => re.test(l));
      if (found !== undefined) return Promise.resolve(found);
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`backend: no line matching ${re} in ${ms} ms:\n${[...be.stdout, ...be.stderr].join('\n')}`)), ms);
        const w = {
          re,
          resolve: (l: string) => {
            clearTimeout(timer);
            resolve(l);
          },
        };
        waiters.push(w);
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(new Error(`backend exited (${signal ?? code}) before printing ${re}:\n${[...be.stdout, ...be.stderr].join('\n')}`));
        });
      });
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (be.running) proc.kill(signal);
      return exited;
    },
  };
  const collect = (stream: NodeJS.ReadableStream, into: string[], isStdout: boolean): void =>
    onLines(stream, (l) => {
      if (isStdout && l.startsWith('QEMU_BACK_END: >>> get type [')) be.served++;
      // Keep everything but the bulk of request lines (a stress run prints millions).
      if (!l.startsWith('QEMU_BACK_END') || into.length < 1000) into.push(l);
      if (isStdout) be.onLine?.(l);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.re.test(l)) {
          waiters[i]!.resolve(l);
          waiters.splice(i, 1);
        }
      }
    });
  collect(proc.stdout!, be.stdout, true);
  collect(proc.stderr!, be.stderr, false);
  await be.waitForLine(/^virtio-test-backend: listening on /);
  return be;
}

/** Fails if any file is left in `dir` (sockets, UML memory files, temp dirs). */
export function assertEmptyDir(dir: string, what: string): void {
  const left = existsSync(dir) ? readdirSync(dir) : [];
  assert.deepEqual(left, [], `${what}: files left in ${dir}`);
}
