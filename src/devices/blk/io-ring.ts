/**
 * Positional file I/O through io_uring (the native addon's io_ring.c): QEMU's `aio=io_uring`
 * for the file store. Requests queued while JavaScript runs (one device pass, one kick) are
 * handed to the kernel in one io_uring_enter at the end of the tick; completions are reaped in
 * one call when the ring's eventfd fires. Reads and writes that hit the page cache complete
 * in the kernel without any thread hand-off (the libuv pool path makes two per request).
 *
 * At most `entries` requests are with the kernel (so the completion queue, twice that, can
 * never overflow); more wait here in order. A completion's result is bytes transferred or a
 * negated errno (rejected as an Error with `code`, like Node's fs errors). Buffers must stay
 * valid until their promise settles: the caller keeps them (the vhost-user session keeps guest
 * memory mapped until the device has settled every request).
 */
import { constants as osc } from 'node:os';
import { loadNative, type Native, type Watch } from '../../vhost-user/native/index.js';
import { SegmentSpans } from '../../virtio/segment-spans.js';
import { vectorLength } from './storage.js';

type Ring = object;

/** The addon functions of io_ring.c (absent from an addon built before them). */
interface IoRingNative {
  ioRingCreate(entries: number): Ring;
  ioRingEventfd(ring: Ring): number;
  ioRingEntries(ring: Ring): number;
  ioRingQueue(ring: Ring, op: number, fd: number, position: number, buffers: readonly Uint8Array[], tag: number): boolean;
  /** Absent from an addon built before it: then spans are queued as views. */
  ioRingQueueSpans?(ring: Ring, op: number, fd: number, position: number, bases: readonly Uint8Array[], table: Float64Array, count: number, tag: number): boolean;
  ioRingSubmit(ring: Ring): number;
  ioRingReap(ring: Ring, out: Int32Array, clearEventfd?: boolean): number;
  ioRingClose(ring: Ring): void;
  /** Absent from an addon built before it. */
  fileReadsInline?(fd: number): boolean;
}

const OP_READ = 0;
const OP_WRITE = 1;
const OP_DATASYNC = 2;

const ERRNO_NAMES = new Map<number, string>(Object.entries(osc.errno).map(([name, n]) => [n, name]));

function errnoError(errno: number, what: string): NodeJS.ErrnoException {
  const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
  const e: NodeJS.ErrnoException = new Error(`${what}: ${code} (errno ${errno})`);
  e.code = code;
  e.errno = -errno;
  return e;
}

/** A transfer's buffers: one view each, or spans of a few regions (SegmentSpans). */
type Buffers = readonly Uint8Array[] | SegmentSpans;

interface Waiting {
  op: number;
  fd: number;
  position: number;
  buffers: Buffers;
  resolve: (n: number) => void;
  reject: (e: Error) => void;
}

export class IoRing {
  /** Per tag: the request's callbacks and buffers (kept referenced until the completion). */
  private readonly resolvers: (((n: number) => void) | undefined)[];
  private readonly rejecters: (((e: Error) => void) | undefined)[];
  private readonly buffers: (Buffers | undefined)[];
  private readonly ops: Uint8Array;
  private readonly freeTags: number[];
  private readonly waiting: Waiting[] = [];
  private readonly out: Int32Array;
  private readonly watch: Watch;
  private queued = 0;
  /** Bytes of the reads and writes asked for since the last submission. */
  private batched = 0;
  private submitScheduled = false;
  /** In reap(): a submit made from there leaves its inline completions to the eventfd's wake-up. */
  private reaping = false;
  private inKernel = 0;
  private closed = false;
  private readonly submitNow = (): void => this.submit();

  private constructor(
    private readonly addon: IoRingNative,
    private readonly ring: Ring,
    native: Native,
  ) {
    const entries = addon.ioRingEntries(ring);
    this.resolvers = new Array(entries);
    this.rejecters = new Array(entries);
    this.buffers = new Array(entries);
    this.ops = new Uint8Array(entries);
    this.freeTags = Array.from({ length: entries }, (_, i) => entries - 1 - i);
    this.out = new Int32Array(2 * entries);
    this.watch = native.watchEventfd(addon.ioRingEventfd(ring), (err) => {
      if (err) this.fail(err);
      else this.reap();
    });
    this.watch.unref(); // idle: keeps nothing alive; ref'd while requests are with the kernel
  }

  /** A ring of `entries` requests, or why io_uring cannot be used here (no addon, old kernel, io_uring disabled). */
  static open(entries = 256): IoRing | string {
    let native: Native;
    try {
      native = loadNative();
    } catch (e) {
      return (e as Error).message;
    }
    const addon = native as unknown as Partial<IoRingNative>;
    if (typeof addon.ioRingCreate !== 'function') return 'the native addon predates io_uring support (rebuild it: node scripts/build-native.mjs --force)';
    let ring: Ring;
    try {
      ring = addon.ioRingCreate(entries);
    } catch (e) {
      return `io_uring is not available: ${(e as Error).message}`;
    }
    return new IoRing(addon as IoRingNative, ring, native);
  }

  /**
   * Reads into `buffers` (in order) from `position`; resolves with the bytes read (short at the
   * end of the file). Spans (at most 1024) go to the kernel without a view per buffer; the
   * addon checks each lies inside its base.
   */
  read(fd: number, position: number, buffers: Buffers): Promise<number> {
    return this.request(OP_READ, fd, position, buffers);
  }

  /** Writes `buffers` (in order) at `position`; resolves with the bytes written. */
  write(fd: number, position: number, buffers: Buffers): Promise<number> {
    return this.request(OP_WRITE, fd, position, buffers);
  }

  /** fdatasync(fd). */
  datasync(fd: number): Promise<void> {
    return this.request(OP_DATASYNC, fd, 0, []).then(() => undefined);
  }

  /**
   * Bytes of the reads and writes asked for since the last submission: what the next
   * io_uring_enter copies inline on this thread when the pages are cached.
   */
  get batchBytes(): number {
    return this.batched;
  }

  /**
   * Whether reads of `fd` can complete inline in io_uring_enter (the file takes RWF_NOWAIT):
   * false for a file system that refuses it (tmpfs), whose every read io_uring hands to its
   * io-wq worker threads, and when the addon cannot tell.
   */
  readsInline(fd: number): boolean {
    return this.addon.fileReadsInline?.(fd) ?? false;
  }

  /** Requests not yet completed (with the kernel or waiting for room). */
  get pending(): number {
    return this.inKernel + this.waiting.length;
  }

  /** Closes the ring once the requests still pending have completed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.pending > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    this.watch.stop();
    this.addon.ioRingClose(this.ring);
  }

  private request(op: number, fd: number, position: number, buffers: Buffers): Promise<number> {
    if (this.closed) return Promise.reject(new Error('the io ring is closed'));
    if (op !== OP_DATASYNC) this.batched += buffers instanceof SegmentSpans ? buffers.bytes : vectorLength(buffers);
    return new Promise<number>((resolve, reject) => {
      if (this.freeTags.length === 0 || this.waiting.length > 0) this.waiting.push({ op, fd, position, buffers, resolve, reject });
      else this.enqueue(op, fd, position, buffers, resolve, reject);
    });
  }

  private enqueue(op: number, fd: number, position: number, buffers: Buffers, resolve: (n: number) => void, reject: (e: Error) => void): void {
    const tag = this.freeTags.pop()!;
    let ok: boolean;
    try {
      ok = this.queue(op, fd, position, buffers, tag);
      if (!ok) {
        // The SQ (or its iovec arena) is full of requests not yet submitted: submit, retry once.
        this.submit();
        ok = this.queue(op, fd, position, buffers, tag);
      }
    } catch (e) {
      this.freeTags.push(tag);
      reject(e as Error);
      return;
    }
    if (!ok) {
      this.freeTags.push(tag);
      reject(new Error('io ring: no room for the request even after a submit'));
      return;
    }
    this.resolvers[tag] = resolve;
    this.rejecters[tag] = reject;
    this.buffers[tag] = buffers;
    this.ops[tag] = op;
    if (this.inKernel++ === 0) this.watch.ref();
    this.queued++;
    if (!this.submitScheduled) {
      this.submitScheduled = true;
      queueMicrotask(this.submitNow);
    }
  }

  /** One SQE for the request (false: no room until a submit). */
  private queue(op: number, fd: number, position: number, buffers: Buffers, tag: number): boolean {
    if (!(buffers instanceof SegmentSpans)) return this.addon.ioRingQueue(this.ring, op, fd, position, buffers, tag);
    if (this.addon.ioRingQueueSpans && buffers.count > 0) {
      return this.addon.ioRingQueueSpans(this.ring, op, fd, position, buffers.bases, buffers.table, buffers.count, tag);
    }
    return this.addon.ioRingQueue(this.ring, op, fd, position, buffers.views(), tag);
  }

  private submit(): void {
    this.submitScheduled = false;
    this.batched = 0;
    if (this.queued === 0) return;
    try {
      this.queued -= this.addon.ioRingSubmit(this.ring);
    } catch (e) {
      this.fail(e as Error);
      return;
    }
    // What the kernel could not take yet (its CQ is busy) goes with the next reap. What it
    // completed inside io_uring_enter (reads of cached pages on a file that takes RWF_NOWAIT)
    // is reaped now, in this turn: no second wake-up of the loop for it.
    if (!this.reaping && this.inKernel > 0) this.reap(true);
  }

  /**
   * Settles the completions in the CQ. `afterSubmit`: called right after a submit, it resets the
   * completion eventfd first (the addon reads it before the CQ, so a completion posted later
   * still wakes the loop).
   */
  private reap(afterSubmit = false): void {
    this.reaping = true;
    try {
      this.reapAll(afterSubmit);
    } finally {
      this.reaping = false;
    }
    if (this.queued > 0 && !this.submitScheduled) this.submit();
    if (this.inKernel === 0) this.watch.unref();
  }

  private reapAll(clearEventfd: boolean): void {
    let n: number;
    do {
      n = this.addon.ioRingReap(this.ring, this.out, clearEventfd);
      clearEventfd = false;
      for (let i = 0; i < n; i++) {
        const tag = this.out[2 * i]!;
        const res = this.out[2 * i + 1]!;
        const resolve = this.resolvers[tag];
        const reject = this.rejecters[tag];
        const op = this.ops[tag]!;
        this.resolvers[tag] = undefined;
        this.rejecters[tag] = undefined;
        this.buffers[tag] = undefined;
        this.freeTags.push(tag);
        this.inKernel--;
        if (!resolve || !reject) continue; // cannot happen: every tag in the kernel has both
        if (res >= 0) resolve(res);
        else reject(errnoError(-res, op === OP_READ ? 'read' : op === OP_WRITE ? 'write' : 'fdatasync'));
      }
    } while (n === this.out.length / 2);
    while (this.waiting.length > 0 && this.freeTags.length > 0) {
      const w = this.waiting.shift()!;
      this.enqueue(w.op, w.fd, w.position, w.buffers, w.resolve, w.reject);
    }
  }

  /** The ring itself failed (cannot happen short of a kernel bug): every request fails. */
  private fail(e: Error): void {
    for (let tag = 0; tag < this.resolvers.length; tag++) {
      const reject = this.rejecters[tag];
      if (!reject) continue;
      this.resolvers[tag] = undefined;
      this.rejecters[tag] = undefined;
      this.buffers[tag] = undefined;
      reject(e);
    }
    for (const w of this.waiting.splice(0)) w.reject(e);
  }
}
