/**
 * One vring as the vhost-user back-end tracks it: what the front-end configured
 * (SET_VRING_NUM / ADDR / BASE), its notification fds (SET_VRING_KICK / CALL / ERR), and
 * its two independent states ([vhost-user "Ring states"]): started/stopped and
 * enabled/disabled. The session decides when the ring runs; this class owns the fds.
 *
 * Kick: the kick eventfd is watched on the event loop; the addon reads it (which resets the
 * counter) and reports each kick. With the invalid-fd flag the front-end will not kick:
 * the ring is polled on a timer instead ([vhost-user "VHOST_USER_SET_VRING_KICK"]).
 * Call / err: written with eventfd semantics (8-byte add). With the invalid-fd flag there
 * is no fd: the front-end polls ([vhost-user "VHOST_USER_SET_VRING_CALL"]).
 */
import { fstatSync, readlinkSync } from 'node:fs';
import type { DeviceVirtqueue } from '../virtio/virtqueue.js';
import { loadNative, native, type Watch } from './native/index.js';
import { closeQuietly } from './message-channel.js';

/** What `fd` is, for log lines: "an eventfd", "a directory (/tmp)", "a pipe", "anon_inode:[timerfd]". */
export function describeFd(fd: number): string {
  let target = '?';
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    // not open, or no /proc
  }
  let kind: string;
  try {
    kind = native.fdKind(fd);
  } catch (e) {
    return `not usable (${(e as Error).message})`;
  }
  switch (kind) {
    case 'eventfd':
      return 'an eventfd';
    case 'socket':
      return 'a socket';
    case 'memfd':
      return `a memfd (${target})`;
    case 'file':
      return `a regular file (${target})`;
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) return `a directory (${target})`;
    if (st.isFIFO()) return 'a pipe';
    if (st.isCharacterDevice()) return `a character device (${target})`;
    if (st.isBlockDevice()) return `a block device (${target})`;
  } catch {
    // fall through to the link's name
  }
  return target;
}

/**
 * Why `fd` cannot be a kick, call or error fd, or null if it can. [vhost-user "Support for
 * platforms other than Linux"]: these are eventfds, or pipes where eventfd is missing; either
 * way something that is read or written 8 bytes at a time. Sockets are taken too (they behave
 * like a pipe end; a hung-up one is handled: kick → polling, call → reported once). A memfd is
 * taken by the lenient mode only (a kick memfd is then polled). Everything else — a regular
 * file (a call would append to it forever), a directory, a device, a listening socket, another
 * kind of anonymous fd — is refused.
 */
export function notificationFdProblem(fd: number, strict: boolean): string | null {
  let kind: string;
  try {
    kind = native.fdKind(fd);
  } catch (e) {
    return `not usable (${(e as Error).message})`;
  }
  if (kind === 'eventfd') return null;
  if (kind === 'socket') {
    try {
      return native.socketInfo(fd).listening ? 'a listening socket' : null;
    } catch (e) {
      return `a socket that cannot be inspected (${(e as Error).message})`;
    }
  }
  if (kind === 'memfd') return strict ? describeFd(fd) : null;
  if (kind === 'other') {
    try {
      if (fstatSync(fd).isFIFO()) return null;
    } catch {
      // described below
    }
  }
  return describeFd(fd);
}

/** How often a ring without a kick fd (polling mode) is looked at. */
export const POLL_INTERVAL_MS = 1;

export interface VringAddresses {
  /** Front-end user addresses of the three parts. */
  desc: number;
  avail: number;
  used: number;
  flags: number;
}

export class Vring {
  /** SET_VRING_NUM; 0 until set. */
  size = 0;
  addresses: VringAddresses | null = null;
  /** Next available ring index to process (SET_VRING_BASE; updated when the ring stops). */
  base = 0;
  /** [vhost-user "Ring states"]. */
  started = false;
  enabled = false;
  /** The device queue while the ring runs in the runtime (kept after a runtime-side stop, for GET_VRING_BASE). */
  queue: DeviceVirtqueue | null = null;

  private kickFd: number | null = null;
  private kickWatch: Watch | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private callFd: number | null = null;
  private errFd: number | null = null;
  private callFailed = false;

  constructor(
    readonly index: number,
    private readonly onKick: (index: number) => void,
    private readonly warn: (line: string) => void,
  ) {}

  get hasKickFd(): boolean {
    return this.kickFd !== null;
  }
  /** Started without a usable kick fd: the ring is looked at on a timer. */
  get polling(): boolean {
    return this.started && (this.kickFd === null || this.kickWatch === null);
  }
  get hasCallFd(): boolean {
    return this.callFd !== null;
  }
  get hasErrFd(): boolean {
    return this.errFd !== null;
  }

  /** SET_VRING_KICK: a new kick fd (or null: poll). Replaces and closes the old one. */
  setKick(fd: number | null): void {
    this.dropKick();
    this.kickFd = fd;
    if (fd === null) return;
    try {
      // The addon reads the eventfd (resetting it) before calling back: one crossing per kick.
      this.kickWatch = native.watchEventfd(fd, (err) => {
        if (err) {
          // Not an eventfd, or its writer is gone (a pipe at EOF stays readable forever), or
          // the poll failed: the watch has ended; poll the ring instead of spinning on the fd.
          this.warn(`vring ${this.index}: kick fd ${fd} is not a usable eventfd (${err.message}); the ring is polled from now on`);
          this.kickWatch = null;
          this.setPolling(this.started);
        }
        this.onKick(this.index);
      });
    } catch (e) {
      this.warn(`vring ${this.index}: cannot watch kick fd ${fd}: ${(e as Error).message}; the ring is polled`);
    }
  }

  /** Polls the ring while it runs without a kick fd. */
  setPolling(on: boolean): void {
    if (on && this.kickWatch === null && this.pollTimer === null) {
      this.pollTimer = setInterval(() => this.onKick(this.index), POLL_INTERVAL_MS);
    } else if (!on && this.pollTimer !== null) {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    }
  }

  /** SET_VRING_CALL: replaces and closes the old call fd (null: the front-end polls). */
  setCall(fd: number | null): void {
    closeQuietly(this.callFd);
    this.callFd = fd;
    this.callFailed = false;
  }

  /** SET_VRING_ERR: replaces and closes the old error fd. */
  setErr(fd: number | null): void {
    closeQuietly(this.errFd);
    this.errFd = fd;
  }

  /** A used buffer notification to the front-end. */
  /** A call fd is set (notifications go somewhere). */
  get hasCall(): boolean {
    return this.callFd !== null;
  }

  signalCall(): void {
    if (this.callFd === null) return;
    try {
      loadNative().eventfdWrite(this.callFd, 1);
    } catch (e) {
      if (!this.callFailed) this.warn(`vring ${this.index}: writing the call fd failed: ${(e as Error).message}`);
      this.callFailed = true;
    }
  }

  /** Signals the error fd ([vhost-user "VHOST_USER_SET_VRING_ERR"]). Returns whether one was set. */
  signalErr(): boolean {
    if (this.errFd === null) return false;
    try {
      native.eventfdWrite(this.errFd, 1);
    } catch (e) {
      this.warn(`vring ${this.index}: writing the error fd failed: ${(e as Error).message}`);
    }
    return true;
  }

  /** Stops watching and closes the kick fd (the ring then needs a new SET_VRING_KICK to start). */
  dropKick(): void {
    this.setPolling(false);
    this.kickWatch?.stop();
    this.kickWatch = null;
    closeQuietly(this.kickFd);
    this.kickFd = null;
  }

  /** Forgets the configuration (RESET_DEVICE) and closes every fd. */
  reset(): void {
    this.close();
    this.size = 0;
    this.addresses = null;
    this.base = 0;
    this.started = false;
    this.enabled = false;
    this.queue = null;
  }

  /** Closes every fd this ring holds. */
  close(): void {
    this.dropKick();
    this.setCall(null);
    this.setErr(null);
  }
}
