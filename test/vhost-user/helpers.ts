/**
 * Shared pieces of the vhost-user tests: temporary socket paths, an in-process back-end with
 * captured output, fd counting (/proc/self/fd), and waiting for a condition on the event loop.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import os from 'node:os';
import { once } from 'node:events';
import path from 'node:path';
import { after, before } from 'node:test';
import { Worker } from 'node:worker_threads';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import type { VirtioDevice } from '../../src/device/device.js';
import { serveDevice, type BackendServer } from '../../src/vhost-user/backend-server.js';
import { encodeMessage } from '../../src/vhost-user/codec.js';
import type { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { native } from '../../src/vhost-user/native/index.js';
import { HeaderFlag, requestName } from '../../src/vhost-user/protocol.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { onLines } from '../helpers/lines.js';

export interface TestServer {
  server: BackendServer;
  socketPath: string;
  /** Device model lines. */
  lines: string[];
  /** Diagnostics. */
  warnings: string[];
  /** Connection events. */
  events: string[];
  /** The devices created, one per connection. */
  devices: VirtioDevice[];
  close(): Promise<void>;
}

/** The server is idle, then serves a new front-end: request 10 gets its answer. */
export async function expectServesNext(srv: TestServer): Promise<void> {
  await srv.server.idle();
  const c = await VirtioTestClient.connect({ socketPath: srv.socketPath });
  try {
    assert.deepEqual(await c.request(10), answer(requestFor(10)));
  } finally {
    c.close();
    await srv.server.idle();
  }
}

/**
 * Sends a request that a strict back-end must refuse by closing the connection ([vhost-user
 * "Communication"]; BackendSession's module comment): one that always replies, or one whose
 * refusal no REPLY_ACK can carry. Checks that nothing was sent back, that the back-end ended
 * the stream, and that its disconnect names the request and `why`.
 */
export async function expectRefusedByClosing(
  srv: TestServer,
  fe: VhostUserFrontend,
  request: number,
  payload: Uint8Array,
  why: RegExp,
  options: { fds?: number[]; flags?: number } = {},
): Promise<void> {
  const events = srv.events.length;
  // A waiter, so that any message from the back-end would show up as an answer here.
  const outcome = fe.nextReply(request).then(
    () => 'an answer',
    () => 'closed',
  );
  fe.sendRaw(encodeMessage(request, options.flags ?? HeaderFlag.VERSION, payload), options.fds ?? []);
  await waitFor(() => fe.isClosed, `the back-end to close the connection after ${requestName(request)}`);
  assert.equal(await outcome, 'closed', 'nothing was sent back');
  assert.equal(fe.closeReason, null, 'the back-end closed it (end of stream)');
  await srv.server.idle();
  const line = srv.events.slice(events).find((e) => /disconnected \(/.test(e)) ?? '';
  assert.match(line, new RegExp(`disconnected \\(${requestName(request)} refused: .*${why.source}`));
}

export function tempDir(): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vt-vu-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A back-end serving `createDevice` (default: virtio-test) on a fresh socket, on this event loop. */
export function startServer(
  options: { createDevice?: () => VirtioDevice; maxQueueSize?: number; maxMemSlots?: number; packedRing?: boolean; drainTimeoutMs?: number } = {},
): TestServer {
  const tmp = tempDir();
  const socketPath = path.join(tmp.dir, 'backend.sock');
  const lines: string[] = [];
  const warnings: string[] = [];
  const events: string[] = [];
  const devices: VirtioDevice[] = [];
  const create = options.createDevice ?? (() => new VirtioTestDevice());
  const server = serveDevice({
    socketPath,
    createDevice: () => {
      const d = create();
      devices.push(d);
      return d;
    },
    log: (l) => lines.push(l),
    warn: (l) => warnings.push(l),
    info: (l) => events.push(l),
    ...(options.maxQueueSize ? { maxQueueSize: options.maxQueueSize } : {}),
    ...(options.maxMemSlots ? { maxMemSlots: options.maxMemSlots } : {}),
    ...(options.packedRing ? { packedRing: true } : {}),
    ...(options.drainTimeoutMs === undefined ? {} : { drainTimeoutMs: options.drainTimeoutMs }),
  });
  return {
    server,
    socketPath,
    lines,
    warnings,
    events,
    devices,
    async close() {
      await server.close();
      tmp.remove();
    },
  };
}

/** The open fds of this process, with what they point to (for leak checks). */
export function openFds(): Map<number, string> {
  void native.pageSize; // loads the addon first: its one process-wide fd (the SIGBUS guard's eventfd) is no leak
  const out = new Map<number, string>();
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      out.set(Number(name), readlinkSync(`/proc/self/fd/${name}`));
    } catch {
      // the fd of the readdir itself, gone already
    }
  }
  return out;
}

/** Fds open now that were not in `before` (memfds, eventfds, sockets we leaked). */
export function leakedFds(before: Map<number, string>): string[] {
  const leaked: string[] = [];
  for (const [fd, target] of openFds()) {
    if (before.get(fd) !== target && /memfd|eventfd|socket|anon_inode/.test(target)) leaked.push(`${fd} -> ${target}`);
  }
  return leaked;
}

/**
 * Starts ring 0 of `c`'s connection by hand at `ring` (guest addresses in `c.ram`): SET_VRING_NUM
 * `size`, SET_VRING_BASE `base`, SET_VRING_ADDR, then SET_VRING_KICK with a new eventfd, which is
 * returned (the caller closes it).
 */
export async function startRingAt(c: VirtioTestClient, size: number, base: number, ring: { desc: number; avail: number; used: number }): Promise<number> {
  await c.frontend.setVringNum(0, size);
  await c.frontend.setVringBase(0, base);
  await c.frontend.setVringAddr(0, { desc: c.ram.userAddr(ring.desc), avail: c.ram.userAddr(ring.avail), used: c.ram.userAddr(ring.used) });
  const kick = native.eventfd(0, true);
  try {
    await c.frontend.setVringKick(0, kick);
  } catch (e) {
    native.close(kick);
    throw e;
  }
  return kick;
}

/** Waits (on the event loop) until `cond()` holds; fails after `ms` with `what`. */
export async function waitFor(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Lets the event loop run pending I/O callbacks a few times. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
  await new Promise((r) => setTimeout(r, 5));
}

/** A back-end running as a child process, with its output collected line by line. */
export interface ChildBackend {
  proc: ChildProcess;
  stdout: string[];
  stderr: string[];
  /** Resolves when a stdout (or stderr) line matches. */
  waitForLine(re: RegExp, what?: string, ms?: number): Promise<string>;
  /** Resolves with the exit code / signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnNode(script: string, args: string[]): ChildBackend {
  const proc = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  onLines(proc.stdout!, (l) => stdout.push(l));
  onLines(proc.stderr!, (l) => stderr.push(l));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    proc,
    stdout,
    stderr,
    exited,
    async waitForLine(re, what = String(re), ms = 15_000) {
      let found: string | undefined;
      await waitFor(() => (found = [...stdout, ...stderr].find((l) => re.test(l))) !== undefined || proc.exitCode !== null, what, ms);
      if (found === undefined) throw new Error(`process exited (${proc.exitCode}) before printing ${what}: ${[...stdout, ...stderr].join('\n')}`);
      return found;
    },
  };
}

/** Mappings of memfds in this process (/proc/self/maps), to check that every region was unmapped. */
export function memfdMappings(): string[] {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => /memfd:vhost-user/.test(l));
}

/** What leakCheckedServer() hands its describe block (filled in by its before hook). */
export interface LeakCheckedServer {
  srv: TestServer;
  /** The process's fds after the warm-up session, before the block's first test. */
  fdsBefore: Map<number, string>;
}

/**
 * A back-end for one describe block that checks, after all its tests, that nothing leaked: no
 * fd sent to the back-end is still open and no guest-memory mapping is left. Call it in the
 * describe body (it registers the block's before and after hooks). The server first serves one
 * whole session (a virtio-test request, `warmUp` called while it is connected), so that
 * process-wide fds made lazily exist before counting.
 */
export function leakCheckedServer(
  options: Parameters<typeof startServer>[0] = {},
  warmUp: { queueSize?: number; whileConnected?: (srv: TestServer) => void } = {},
): LeakCheckedServer {
  const fixture = {} as LeakCheckedServer;
  before(async () => {
    fixture.srv = startServer(options);
    const c = await VirtioTestClient.connect({ socketPath: fixture.srv.socketPath, ...(warmUp.queueSize ? { queueSize: warmUp.queueSize } : {}) });
    await c.request(1);
    warmUp.whileConnected?.(fixture.srv);
    c.close();
    await fixture.srv.server.idle();
    fixture.fdsBefore = openFds();
  });
  after(async () => {
    try {
      await settle();
      assert.deepEqual(leakedFds(fixture.fdsBefore), [], 'every fd sent to the back-end was closed');
      assert.deepEqual(memfdMappings(), [], 'no guest-memory mapping is left');
    } finally {
      await fixture.srv.close(); // a failed check must not leave the server holding the loop open
    }
  });
  return fixture;
}

/**
 * The mode of a socket file made by a listener started in a worker thread, where
 * process.umask() cannot be called: `start` is the source of an async function
 * `(module, socketPath) => listener` (the listener has close()), `moduleUrl` the module it gets.
 * Resolves with { mode } or { error } as the worker saw it.
 */
export async function socketModeInWorker(moduleUrl: string, start: string, socketPath: string): Promise<{ mode?: number; error?: string }> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { statSync } = require('node:fs');
    import(workerData.url).then(async (m) => {
      try {
        const s = await (${start})(m, workerData.path);
        const mode = statSync(workerData.path).mode & 0o7777;
        await s.close();
        parentPort.postMessage({ mode });
      } catch (e) {
        parentPort.postMessage({ error: e.message });
      }
    });`;
  const w = new Worker(code, { eval: true, workerData: { url: moduleUrl, path: socketPath } });
  const [result] = (await once(w, 'message')) as [{ mode?: number; error?: string }];
  await once(w, 'exit');
  return result;
}
