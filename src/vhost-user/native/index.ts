/**
 * Typed wrapper around the vhost-user native addon (vhost_user_native.c).
 *
 * The addon is built by `npm run build` (scripts/build-native.mjs, node-gyp)
 * into `<repo>/src/vhost-user/native/build/Release/vhost_user_native.node`.
 * It is loaded lazily, on the first use of `native`, so importing this module
 * never fails; using it without a built addon throws a clear error.
 *
 * Errors: a failed system call throws an `Error` whose message names the call
 * and the reason ("recvmsg: Bad file descriptor") with `code` = errno name
 * ('EBADF'), `errno` and `syscall` set (see {@link NativeError}). Bad
 * arguments throw TypeError / RangeError with `code` 'ERR_INVALID_ARG_TYPE' /
 * 'ERR_OUT_OF_RANGE'. All fds created here are close-on-exec.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Error thrown by the addon for a failed system call. */
export interface NativeError extends Error {
  /** errno name such as 'EBADF' or 'EAGAIN', or an 'ERR_*' code for argument errors. */
  code: string;
  /** Positive errno value (system call errors only). */
  errno?: number;
  /** Name of the failed call, e.g. 'sendmsg' (system call errors only). */
  syscall?: string;
}

/** Result of {@link Native.recvMsg}. */
export interface RecvResult {
  /** Bytes received into the buffer; 0 means the peer closed the connection. */
  bytes: number;
  /** Received fds (close-on-exec), at most `maxFds`; the caller owns them. */
  fds: number[];
  /**
   * True if the message carried more fds than `maxFds` (the extra ones were
   * closed immediately) or the kernel dropped some (MSG_CTRUNC).
   */
  truncatedFds: boolean;
}

/** Result of {@link Native.socketInfo}. */
export interface SocketInfo {
  family: 'unix' | 'inet' | 'inet6' | 'other';
  type: 'stream' | 'dgram' | 'seqpacket' | 'other';
  /** SO_ACCEPTCONN: listen() was called on it. */
  listening: boolean;
  /** The bound name of an AF_UNIX socket ('@name' for an abstract one), or null (unnamed, or not AF_UNIX). */
  path: string | null;
}

/** Readiness reported to a {@link Native.watch} callback. */
export interface WatchEvents {
  /** The fd is readable (for an eventfd: its counter is nonzero). */
  readable: boolean;
  /** The peer hung up (EPOLLRDHUP), for sockets. */
  disconnect: boolean;
}

/** Callback of {@link Native.watch}. After a call with an error, the watch is stopped. */
export type WatchCallback = (err: NativeError | null, events: WatchEvents) => void;

/**
 * Callback of {@link Native.watchEventfd}: `count` is the counter value read (and reset)
 * before the call, always ≥ 1 when `err` is null. After a call with an error, the watch is stopped.
 */
export type EventfdWatchCallback = (err: NativeError | null, count: number) => void;

/** A running fd watch (a uv_poll handle on the creating thread's loop). */
export interface Watch {
  /** The watched fd. */
  readonly fd: number;
  /** False once stopped (by stop(), an error, or env teardown). */
  readonly active: boolean;
  /**
   * Stops watching and releases the handle and callback. Idempotent, and safe
   * to call from inside the watch's own callback. Call it before closing the fd.
   */
  stop(): void;
  /** Lets the watch keep the event loop (process / worker) alive (default). */
  ref(): this;
  /** Stops the watch from keeping the event loop alive on its own. */
  unref(): this;
}

/** The native functions. fd arguments are non-negative integers. */
export interface Native {
  /**
   * Creates a listening AF_UNIX stream socket (non-blocking, close-on-exec)
   * bound to `path`. Throws ENAMETOOLONG if `path` does not fit in sun_path
   * (107 bytes on Linux), EADDRINUSE if it exists (unlinking is up to the caller).
   */
  socketListen(path: string, backlog: number): number;
  /** Accepts a connection (non-blocking, close-on-exec fd), or null if none is pending. */
  socketAccept(fd: number): number | null;
  /** Connects to a listening AF_UNIX stream socket; the returned fd is blocking. */
  socketConnect(path: string): number;
  /** A connected pair of blocking AF_UNIX stream sockets. */
  socketPair(): [number, number];
  /**
   * An AF_UNIX datagram socket (non-blocking, close-on-exec) bound to `path`;
   * a path starting with '@' is a Linux abstract name (no file). Read it with
   * {@link recvMsg} (null: nothing queued). EADDRINUSE if the name is taken.
   */
  datagramBind(path: string): number;
  /**
   * Sends `buf` as one datagram to the AF_UNIX datagram socket at `path` ('@' for an abstract
   * name) from a fresh socket, closed again: the service manager notification protocol
   * (NOTIFY_SOCKET). Non-blocking: a receiver whose queue is full gives EAGAIN. Returns the bytes sent.
   */
  datagramSend(path: string, buf: Uint8Array): number;
  /** What kind of socket `fd` is (to check an inherited fd); throws ENOTSOCK if it is not one. */
  socketInfo(fd: number): SocketInfo;
  /** The gid of a group name (getgrnam_r: every NSS source), or null if there is no such group. */
  groupId(name: string): number | null;
  /** Sets (or clears) O_NONBLOCK; note it is shared by all copies of the fd. */
  setNonblocking(fd: number, on: boolean): void;
  /** Whether O_NONBLOCK is set on the fd. */
  isNonblocking(fd: number): boolean;
  /**
   * One recvmsg() into `buf` (must not be empty), collecting SCM_RIGHTS fds.
   * Returns null if nothing is available on a non-blocking socket (EAGAIN).
   * `maxFds` is 0..253; fds beyond it are closed, never leaked.
   */
  recvMsg(fd: number, buf: Uint8Array, maxFds: number): RecvResult | null;
  /**
   * One sendmsg(MSG_NOSIGNAL) of `buf` with up to 8 fds as SCM_RIGHTS.
   * Returns the bytes sent (may be short on a non-blocking socket; the fds go
   * with the first byte). EAGAIN is thrown with code 'EAGAIN'.
   */
  sendMsg(fd: number, buf: Uint8Array, fds: readonly number[]): number;
  /**
   * Reads until `buf` is full or end of file; returns the count (short only
   * at EOF). For blocking fds: on an error, data read so far is lost.
   */
  readFull(fd: number, buf: Uint8Array): number;
  /** Writes all of `buf` (for blocking fds; sockets use MSG_NOSIGNAL). Returns buf.length. */
  write(fd: number, buf: Uint8Array): number;
  /**
   * Maps `size` bytes (> 0) of `fd` at `offset` (a multiple of {@link pageSize})
   * MAP_SHARED read/write, as a zero-copy ArrayBuffer. The mapping is removed
   * by {@link munmap} or, failing that, when the ArrayBuffer is collected.
   */
  mmap(fd: number, size: number, offset: number): ArrayBuffer;
  /**
   * Unmaps an ArrayBuffer returned by {@link mmap} now and detaches it
   * (byteLength becomes 0, as do all views). Throws (code
   * 'ERR_INVALID_ARG_VALUE') for a detached or foreign ArrayBuffer.
   */
  munmap(ab: ArrayBuffer): void;
  /** memfd_create(MFD_CLOEXEC) + ftruncate(size). `name` is at most 249 bytes. */
  memfdCreate(name: string, size: number): number;
  /** fstat() st_size. */
  /** How many pages of an mmap()ed ArrayBuffer the SIGBUS guard replaced with zero pages (the front-end shrank the fd under it). */
  mappingFaults(ab: ArrayBuffer): number;
  /** The process's SIGBUS-guard eventfd (written once per repaired fault; do not close), or null if the guard is not installed. */
  memoryFaultFd(): number | null;
  /** A memfd's seals (F_GET_SEALS: F_SEAL_SEAL 1, SHRINK 2, GROW 4, WRITE 8), or -1 if the fd cannot carry seals. */
  fdSeals(fd: number): number;
  /** F_ADD_SEALS. */
  addSeals(fd: number, seals: number): void;
  fdSize(fd: number): number;
  /** What the fd refers to. */
  fdKind(fd: number): 'eventfd' | 'socket' | 'memfd' | 'file' | 'other';
  /** close(); throws EBADF for a closed fd. */
  close(fd: number): void;
  /** The process id. */
  getpid(): number;
  /** eventfd(initval, EFD_CLOEXEC [| EFD_NONBLOCK]); initval is 0..2^32-1. */
  eventfd(initval: number, nonblocking: boolean): number;
  /**
   * Reads and resets the counter (clamped to 2^53-1). Returns null if the
   * counter is 0 and the fd is non-blocking; blocks otherwise.
   */
  eventfdRead(fd: number): number | null;
  /**
   * Adds `value` (1..2^53-1, default 1) to the counter. On a non-blocking fd
   * an overflow throws with code 'EAGAIN'.
   */
  eventfdWrite(fd: number, value?: number): void;
  /**
   * Calls `callback` whenever `fd` is readable or hung up, on this thread's
   * event loop (works in worker_threads). A throwing callback is reported as
   * an uncaught exception. Caveats: libuv sets O_NONBLOCK on the fd, which is
   * shared with every other copy of it (e.g. the frontend's); one watch per fd
   * per thread (else EEXIST); stop() before closing the fd. Watches are closed
   * automatically when the thread's environment is torn down.
   */
  watch(fd: number, callback: WatchCallback): Watch;
  /**
   * {@link watch} for an eventfd, with the read done in the addon: on each readiness the
   * counter is read and reset, then `callback(null, count)` runs; a wakeup that finds the
   * counter at 0 calls nothing. One crossing into JS per notification and no second call
   * into the addon (the vhost-user kick path). A read that fails (the fd is not an
   * eventfd, e.g. a pipe at EOF) is reported as the error and ends the watch.
   */
  watchEventfd(fd: number, callback: EventfdWatchCallback): Watch;
  /**
   * An open file description lock (fcntl F_OFD_SETLK, never waits) on bytes
   * [start, start + length) of `fd` (length 0: to the end of the file):
   * 'read' shared, 'write' exclusive (fd open for writing), or 'unlock'.
   * Returns false when another open file description holds a conflicting lock
   * (EAGAIN/EACCES), true when done. 'test' takes nothing (F_OFD_GETLK, any
   * open mode) and returns true when no other open file description holds any
   * lock on the range. Other failures throw. The locks belong to the open file
   * description (two opens conflict even in one process) and go when it is closed.
   */
  lockFile(fd: number, start: number, length: number, kind: 'read' | 'write' | 'unlock' | 'test'): boolean;
  /** The system page size. */
  readonly pageSize: number;
  /**
   * Whether this Node allows external ArrayBuffers (false under the V8
   * sandbox, where {@link mmap} throws 'ERR_NATIVE_NO_EXTERNAL_BUFFERS').
   */
  readonly externalArrayBuffers: boolean;
}

function findRepoRoot(start: string): string {
  for (let dir = start; ; ) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`vhost-user native: no package.json above ${start}`);
    dir = parent;
  }
}

const here = path.dirname(fileURLToPath(import.meta.url));

/** Absolute path of the built addon. */
export const addonPath = path.join(
  findRepoRoot(here),
  'src',
  'vhost-user',
  'native',
  'build',
  'Release',
  'vhost_user_native.node',
);

let loaded: Native | undefined;

/** Loads the addon (once) and returns it; throws a clear error if it is not built. */
export function loadNative(): Native {
  if (loaded !== undefined) return loaded;
  if (!existsSync(addonPath)) {
    throw new Error(`native addon missing at ${addonPath}; run \`npm run build\``);
  }
  const require = createRequire(import.meta.url);
  try {
    loaded = require(addonPath) as Native;
  } catch (cause) {
    throw new Error(`failed to load native addon ${addonPath}: ${(cause as Error).message}; run \`npm run build\``, {
      cause,
    });
  }
  return loaded;
}

/** Whether the addon is built and loads. */
export function nativeAvailable(): boolean {
  try {
    loadNative();
    return true;
  } catch {
    return false;
  }
}

const functionNames = [
  'socketListen',
  'socketAccept',
  'socketConnect',
  'socketPair',
  'datagramBind',
  'datagramSend',
  'socketInfo',
  'groupId',
  'setNonblocking',
  'isNonblocking',
  'recvMsg',
  'sendMsg',
  'readFull',
  'write',
  'mmap',
  'munmap',
  'memfdCreate',
  'mappingFaults',
  'memoryFaultFd',
  'fdSeals',
  'addSeals',
  'fdSize',
  'fdKind',
  'close',
  'getpid',
  'eventfd',
  'eventfdRead',
  'eventfdWrite',
  'watch',
  'watchEventfd',
  'lockFile',
] as const satisfies readonly (keyof Native)[];

function makeLazy(): Native {
  const obj: Record<string, unknown> = {};
  for (const name of functionNames) {
    // Loads on first call, then forwards. (Methods taken off the object keep
    // working; they just forward to the loaded addon.)
    obj[name] = (...args: unknown[]) => (loadNative()[name] as (...a: unknown[]) => unknown)(...args);
  }
  Object.defineProperty(obj, 'pageSize', { enumerable: true, get: () => loadNative().pageSize });
  Object.defineProperty(obj, 'externalArrayBuffers', {
    enumerable: true,
    get: () => loadNative().externalArrayBuffers,
  });
  return Object.freeze(obj) as unknown as Native;
}

/**
 * The native functions, loaded on first use. Throws
 * "native addon missing at <path>; run `npm run build`" if it was not built.
 */
export const native: Native = makeLazy();
