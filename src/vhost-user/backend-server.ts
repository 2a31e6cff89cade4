/**
 * A vhost-user back-end server: listens on a Unix socket and serves one front-end at a
 * time with a fresh device model, then the next one ([vhost-user "Introduction"]: the
 * back-end is the server here, the front-end connects).
 *
 *   const server = serveDevice({ socketPath: '/tmp/dev.sock', createDevice: () => new MyDevice() });
 *   ...
 *   await server.close();
 *
 * While a front-end is connected the listening socket is not watched, so a second
 * front-end waits in the backlog until the first leaves (this is also what makes a quick
 * reconnect safe: the new connection is taken only after the old one is cleaned up).
 */
import { chmodSync, chownSync, lstatSync, unlinkSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';
import type { VirtioDevice } from '../device/device.js';
import { MAX_QUEUE_SIZE } from '../virtio/constants.js';
import { native, type Watch } from './native/index.js';
import { BackendSession, DEFAULT_MAX_MEM_SLOTS } from './backend-session.js';
import { closeQuietly } from './message-channel.js';

export interface ServeDeviceOptions {
  /** Where to listen. A stale socket file (nothing listening) is replaced. Required unless `listenFd` is given. */
  socketPath?: string;
  /**
   * Serve on this already-listening AF_UNIX stream socket instead of creating one (a socket
   * passed by a parent with --fd, or by systemd socket activation). The server takes it over:
   * it is made non-blocking and close() closes it, but never removes a socket file it is bound to.
   * Exclusive with `socketPath`, `socketMode`, `socketGroup`.
   */
  listenFd?: number;
  /**
   * Permission bits of the socket file created for `socketPath` (e.g. 0o600). The socket is
   * created owner-only (umask 0177; on the main thread, where umask can be set) and then given
   * these bits, after `socketGroup`. Default: as the process umask makes it.
   */
  socketMode?: number;
  /** Group (gid) of the socket file created for `socketPath`. Default: the process's group. */
  socketGroup?: number;
  /** Makes the device model for one connection. */
  createDevice: () => VirtioDevice;
  /** The device model's log lines (DeviceContext.log). Default: dropped. */
  log?: (line: string) => void;
  /** Diagnostics (refused requests, device errors). Default: console.warn. */
  warn?: (line: string) => void;
  /** Connection events. Default: dropped. */
  info?: (line: string) => void;
  /** Largest ring size a front-end may set (power of two). Default 32768 (virtio 1.2 §2.7). */
  maxQueueSize?: number;
  /** Offer VIRTIO_F_RING_PACKED (BackendSessionOptions.packedRing). Default false. */
  packedRing?: boolean;
  /** Refuse memory that is not a memfd sealed against shrinking (BackendSessionOptions.requireSealedMemory). Default false. */
  requireSealedMemory?: boolean;
  /** GET_VRING_BASE's drain timeout (BackendSessionOptions.drainTimeoutMs). */
  drainTimeoutMs?: number;
  maxMemSlots?: number;
  /** Used-ring publication batch within a pass (DeviceRuntimeOptions.publishBatch). Default 32. */
  publishBatch?: number;
  /** Each request received (debugging). Default: none. */
  trace?: (line: string) => void;
  /** Listen backlog. Default 4. */
  backlog?: number;
}

export interface BackendServer {
  /** The socket's path: `socketPath`, or the name a `listenFd` is bound to ('' if unnamed; '@name' when abstract). */
  readonly socketPath: string;
  /** The current connection, if a front-end is connected. */
  readonly session: BackendSession | null;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Resolves when the current front-end (if any) has disconnected and been cleaned up. */
  idle(): Promise<void>;
  /** Stops listening, ends the current connection, removes the socket file. */
  close(): Promise<void>;
}

export function serveDevice(options: ServeDeviceOptions): BackendServer {
  const warn = options.warn ?? ((line: string) => console.warn(line));
  const info = options.info ?? (() => {});
  const log = options.log ?? (() => {});
  const maxQueueSize = options.maxQueueSize ?? MAX_QUEUE_SIZE;
  if (!(Number.isInteger(maxQueueSize) && maxQueueSize > 0 && (maxQueueSize & (maxQueueSize - 1)) === 0 && maxQueueSize <= MAX_QUEUE_SIZE)) {
    throw new RangeError(`maxQueueSize ${maxQueueSize} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
  }
  let listenFd: number;
  let socketPath: string;
  /** The inode of the socket file we created (removed on close), or null for a given fd. */
  let ino: number | null = null;
  if (options.listenFd !== undefined) {
    if (options.socketPath !== undefined || options.socketMode !== undefined || options.socketGroup !== undefined) {
      throw new TypeError('listenFd excludes socketPath, socketMode and socketGroup');
    }
    listenFd = options.listenFd;
    socketPath = checkListeningSocket(listenFd);
    native.setNonblocking(listenFd, true);
  } else {
    if (options.socketPath === undefined) throw new TypeError('socketPath or listenFd is required');
    socketPath = options.socketPath;
    listenFd = createSocket(socketPath, options.backlog ?? 4, options.socketMode, options.socketGroup);
    ino = lstatSync(socketPath).ino;
  }

  let session: BackendSession | null = null;
  let connections = 0;
  let closed = false;
  let watch: Watch | null = null;
  let idleWaiters: (() => void)[] = [];

  const watchListener = (): void => {
    if (closed || watch) return;
    watch = native.watch(listenFd, (err) => {
      if (err) {
        warn(`vhost-user: listening socket failed: ${err.message}`);
        return;
      }
      acceptOne();
    });
  };

  const acceptOne = (): void => {
    let fd: number | null;
    try {
      fd = native.socketAccept(listenFd);
    } catch (e) {
      warn(`vhost-user: accept failed: ${(e as Error).message}`);
      return;
    }
    if (fd === null) return;
    watch?.stop();
    watch = null;
    connections++;
    const n = connections;
    info(`front-end ${n} connected`);
    try {
      startSession(fd, n);
    } catch (e) {
      warn(`vhost-user: cannot serve front-end ${n}: ${(e as Error).message}`);
      session = null;
      closeQuietly(fd);
      watchListener();
    }
  };

  const startSession = (fd: number, n: number): void => {
    const device: VirtioDevice = options.createDevice();
    session = new BackendSession(fd, {
      device,
      log,
      warn,
      maxQueueSize,
      maxMemSlots: options.maxMemSlots ?? DEFAULT_MAX_MEM_SLOTS,
      ...(options.packedRing ? { packedRing: true } : {}),
      ...(options.requireSealedMemory ? { requireSealedMemory: true } : {}),
      ...(options.drainTimeoutMs === undefined ? {} : { drainTimeoutMs: options.drainTimeoutMs }),
      ...(options.publishBatch === undefined ? {} : { publishBatch: options.publishBatch }),
      ...(options.trace ? { trace: options.trace } : {}),
      onClose: (reason) => {
        info(`front-end ${n} disconnected${reason ? ` (${reason})` : ''}`);
        session = null;
        const waiters = idleWaiters;
        idleWaiters = [];
        waiters.forEach((w) => w());
        watchListener();
      },
    });
    session.start();
  };

  watchListener();

  return {
    socketPath,
    get session() {
      return session;
    },
    get connections() {
      return connections;
    },
    idle() {
      return session === null ? Promise.resolve() : new Promise<void>((resolve) => idleWaiters.push(resolve));
    },
    async close() {
      if (closed) return;
      closed = true;
      watch?.stop();
      watch = null;
      session?.close('back-end shutting down');
      closeQuietly(listenFd);
      if (ino === null) return; // a given fd: its socket file (if any) belongs to whoever made it
      try {
        if (lstatSync(socketPath).ino === ino) unlinkSync(socketPath);
      } catch {
        // already gone
      }
    },
  };
}

/**
 * Checks that `fd` is a listening AF_UNIX stream socket (what a vhost-user back-end accepts
 * front-ends on) and returns the name it is bound to ('' if unnamed). Throws an Error with
 * code 'ENOTSOCK' or 'EINVAL' and a message saying what the fd is instead.
 */
export function checkListeningSocket(fd: number): string {
  let info;
  try {
    info = native.socketInfo(fd);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOTSOCK') throw Object.assign(new Error(`fd ${fd} is not a socket`), { code });
    if (code === 'EBADF') throw Object.assign(new Error(`fd ${fd} is not open`), { code });
    throw e;
  }
  const what = `${info.listening ? 'a listening' : 'a non-listening'} ${info.family} ${info.type} socket`;
  if (info.family !== 'unix' || info.type !== 'stream' || !info.listening) {
    throw Object.assign(new Error(`fd ${fd} is ${what}, not a listening Unix stream socket`), { code: 'EINVAL' });
  }
  return info.path ?? '';
}

/**
 * Creates the listening socket at `path` (replacing a stale one). With `mode`, the socket file
 * is created owner-only (umask 0177 around bind, on the main thread: workers cannot set the
 * umask), given `gid`, then `mode`: nobody else can connect before it has its final group and
 * bits. A socket whose group or mode cannot be set is removed again and the error thrown.
 */
function createSocket(path: string, backlog: number, mode: number | undefined, gid: number | undefined): number {
  if (mode !== undefined && !(Number.isInteger(mode) && mode >= 0 && mode <= 0o7777)) {
    throw new RangeError(`socketMode ${mode} is not a set of permission bits (0..0o7777)`);
  }
  if (gid !== undefined && !(Number.isInteger(gid) && gid >= 0 && gid <= 0xffffffff)) {
    throw new RangeError(`socketGroup ${gid} is not a gid`);
  }
  const restrict = mode !== undefined && isMainThread;
  const saved = restrict ? process.umask(0o177) : 0;
  let fd: number;
  try {
    fd = listenReplacingStale(path, backlog);
  } finally {
    if (restrict) process.umask(saved);
  }
  try {
    if (gid !== undefined) chownSync(path, -1, gid);
    if (mode !== undefined) chmodSync(path, mode);
  } catch (e) {
    closeQuietly(fd);
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
    throw e;
  }
  return fd;
}

/**
 * Listens on `path`. If the path exists: a socket nobody listens on (ECONNREFUSED) is stale
 * and replaced; a live socket, or anything that is not a socket, is an error.
 */
export function listenReplacingStale(path: string, backlog: number): number {
  try {
    return native.socketListen(path, backlog);
  } catch (e) {
    if ((e as { code?: string }).code !== 'EADDRINUSE') throw e;
  }
  let isSocket = false;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    // vanished meanwhile: just retry
  }
  if (isSocket) {
    let probe: number | null = null;
    try {
      probe = native.socketConnect(path);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ECONNREFUSED') throw e;
    }
    if (probe !== null) {
      closeQuietly(probe);
      throw Object.assign(new Error(`${path}: another back-end is listening there`), { code: 'EADDRINUSE' });
    }
    unlinkSync(path);
  } else {
    try {
      lstatSync(path);
      throw Object.assign(new Error(`${path} exists and is not a socket`), { code: 'EEXIST' });
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOENT') throw e;
    }
  }
  return native.socketListen(path, backlog);
}
