/**
 * The default BlockStorage of virtio-blk: a raw image file or a block device. All the I/O of the
 * device lives here (the model, device.ts, is pure).
 *
 *  - I/O: positional, never blocking the event loop, in one of two engines (QEMU's `aio=`):
 *    `io_uring` (io-ring.ts: requests of one tick go to the kernel in one io_uring_enter,
 *    completions are reaped in batches, page-cache hits complete without a thread hand-off),
 *    or `threads`: `FileHandle.readv/writev(buffers, position)`, preadv/pwritev on libuv's
 *    thread pool (UV_THREADPOOL_SIZE threads, 4 by default). The default, `auto`, where the
 *    kernel and the addon allow io_uring, uses it for every transfer of a file whose reads it
 *    can complete inline (the file takes RWF_NOWAIT: ext4, xfs, block devices); for a file
 *    that refuses RWF_NOWAIT (tmpfs), whose every io_uring read goes to io_uring's worker
 *    threads, it uses io_uring up to {@link RING_MAX_BYTES} and while a turn's batch stays
 *    within {@link RING_BATCH_BYTES}, the pool beyond. Measured (docs/performance-blk.md):
 *    io_uring takes 4 KiB requests at 2.5-4.5x less CPU than the pool at depth 32-128 and
 *    1 MiB reads of a page-cached ext4 file at less CPU than the pool or qemu-storage-daemon
 *    at depth 1 and 8; on tmpfs the pool was faster for 1 MiB reads at depth 8. Either way
 *    the model's buffers (the chain's segments as spans of guest memory for io_uring, views
 *    for the pool) go to the kernel as they are: no copy. Short transfers are continued; a read
 *    that meets the end of the file inside the capacity (the file shrank under us) is an error.
 *  - `direct` (O_DIRECT): the kernel then needs buffer addresses, file offsets and lengths
 *    aligned to the file system's direct-I/O alignment, which guest buffers are not. Every
 *    transfer goes through bounce buffers: a pool of {@link BOUNCE_COUNT} chunks of
 *    {@link BOUNCE_CHUNK} bytes carved from one WebAssembly.Memory, whose backing store V8 takes
 *    from the page allocator (page-aligned; JavaScript has no other way to get an aligned
 *    buffer). A transfer is split into chunk-sized windows, each waits for a free chunk, and
 *    bytes are copied between the chunk and the guest's buffers. The alignment is probed at open
 *    (reads of 512, 1024, 2048, 4096 bytes at offset 0 until one is not EINVAL) and reported as
 *    blk_size. If it is above 512, a 512-aligned guest request that does not cover whole blocks
 *    is a read-modify-write of the blocks it touches; those writes are serialized (one write
 *    at a time) so two of them cannot lose each other's bytes, and the capacity is rounded down
 *    to the alignment. A file system without O_DIRECT refuses the open (EINVAL): reported as such.
 *  - FLUSH: fdatasync (FileHandle.datasync).
 *  - Discard and write-zeroes: Node has no fallocate(2), so FALLOC_FL_PUNCH_HOLE needs native
 *    code; the project's addon is not extended for it. Both write zeroes (a discard's contents
 *    are unspecified afterwards, §5.2.6, so zeroes are allowed; they leak nothing). Nothing is
 *    deallocated: write_zeroes_may_unmap is 0 (§5.2.6.2). Cost: a discard writes its whole range
 *    (e.g. mkfs discards the whole disk; `mkfs.ext4 -E nodiscard` avoids that).
 *  - Capacity: the file size rounded down to 512 bytes (a remainder is reported through `warn`
 *    and never touched); a block device's size comes from /sys/dev/block/MAJ:MIN/size (Node
 *    cannot issue the BLKGETSIZE64 ioctl).
 *  - Locking, as QEMU does it (its file-posix locking, compatible bytes): open file description
 *    (OFD) locks on single bytes, through the native addon's lockFile (fcntl F_OFD_SETLK to
 *    hold, F_OFD_GETLK to test). Byte 100 + p is held (shared) by an opener that uses permission
 *    p, byte 200 + p by one that does not let others have p; p = 0 consistent read, 1 write. A
 *    writer holds 100, 101, 201 shared, then tests that no one else holds 101 (nobody writes) or
 *    201 (nobody refuses writers); a reader holds 100 and 201 and tests 101. Holding before
 *    testing means two openers racing see each other. So a second writer, a reader while a
 *    writer is there, or a writer while a reader is there, is refused with a clear error;
 *    readers share. The locks go with the file description: closing the handle (close()) or the
 *    process's end releases them. A file system without OFD locks (ENOLCK, EOPNOTSUPP), or a
 *    machine where the optional addon is not built, gets a warning and no lock.
 */
import { constants as fsc, promises as fsp, readFileSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { loadNative, type Native } from '../../vhost-user/native/index.js';
import type { SegmentSpans } from '../../virtio/segment-spans.js';
import { IoRing } from './io-ring.js';
import { SECTOR_SIZE, vectorLength, type BlockStorage } from './storage.js';

/** The one WebAssembly API used here (page-aligned memory); @types/node does not declare it. */
declare const WebAssembly: { Memory: new (descriptor: { initial: number }) => { readonly buffer: ArrayBuffer } };

/** Bytes of one O_DIRECT bounce buffer (a multiple of every alignment probed). */
export const BOUNCE_CHUNK = 256 * 1024;
/** Bounce buffers in the pool: O_DIRECT transfers running at once. */
export const BOUNCE_COUNT = 8;
/** Largest vector handed to one preadv/pwritev (Linux's IOV_MAX). */
const IOV_MAX = 1024;
/** Zero bytes written per pwritev of a buffered write-zeroes. */
const ZERO_CHUNK = 64 * 1024;
const ZERO_VECTOR = 16;

/** QEMU's lock byte bases and the permission bits used here (file-posix). */
export const LOCK_PERM_BASE = 100;
export const LOCK_SHARED_BASE = 200;
const PERM_CONSISTENT_READ = 0;
const PERM_WRITE = 1;

/** A refused open: `message` is for the user as is. */
export class FileStorageError extends Error {
  override readonly name = 'FileStorageError';
  constructor(
    message: string,
    /** Why: 'ENOENT', 'EACCES', 'LOCKED', 'NOT_BLOCK', 'NO_DIRECT', 'TOO_LARGE', ... */
    readonly code: string,
  ) {
    super(message);
  }
}

export interface FileStorageOptions {
  /** Open read-only (O_RDONLY); the device offers VIRTIO_BLK_F_RO. */
  readOnly?: boolean;
  /** O_DIRECT (bypass the host page cache), through aligned bounce buffers. */
  direct?: boolean;
  /** Take the image locks (default true). */
  lock?: boolean;
  /** Where warnings go (a size not a multiple of 512, no locking on this file system). */
  warn?: (line: string) => void;
  /** Tests: use this O_DIRECT alignment (a power of two 512..{@link BOUNCE_CHUNK}) instead of probing. */
  directAlignment?: number;
  /**
   * The I/O engine, as QEMU's `aio=`: 'io_uring' for everything (refused with a clear error
   * where it cannot run), 'threads' (libuv's pool) for everything, or by default 'auto':
   * io_uring for everything on a file that takes RWF_NOWAIT reads; on one that does not
   * (tmpfs), io_uring up to RING_MAX_BYTES and within RING_BATCH_BYTES per turn, the pool for
   * the rest; the pool alone where io_uring is not available.
   */
  aio?: AioEngine;
}

/** How the file store does its I/O (see the module comment). */
export type AioEngine = 'threads' | 'io_uring' | 'auto';

/**
 * Under aio=auto, for a file whose reads io_uring cannot complete inline (one that refuses
 * RWF_NOWAIT, such as tmpfs: io_uring hands each read to its worker threads), transfers up to
 * this size go through io_uring; on a file that takes RWF_NOWAIT (ext4, xfs, block devices)
 * every transfer does. Measured in docs/performance-blk.md, "Large transfers".
 */
export const RING_MAX_BYTES = 64 * 1024;
/**
 * Under aio=auto, on a file of the first kind, a larger transfer goes through io_uring too
 * while the batch of the current event-loop turn stays within this many bytes; beyond it,
 * through the thread pool, whose threads copy while the loop goes on answering.
 */
export const RING_BATCH_BYTES = 1024 * 1024;

/** Requests one io_uring holds at once (more wait in order). */
const RING_ENTRIES = 256;

type LockKind = 'read' | 'write' | 'unlock' | 'test';
type LockFileFn = (fd: number, start: number, length: number, kind: LockKind) => boolean;

/** The addon's lockFile, or why there is none (the addon is optional: see scripts/build-native.mjs). */
function lockFileFunction(): LockFileFn | string {
  let addon: Native;
  try {
    addon = loadNative();
  } catch (e) {
    return (e as Error).message;
  }
  if (typeof addon.lockFile !== 'function') return 'the native addon predates lockFile (rebuild it: node scripts/build-native.mjs --force)';
  return addon.lockFile.bind(addon);
}

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** A queue of waiters for a bounded pool. */
class Pool<T> {
  private readonly waiters: ((item: T) => void)[] = [];
  constructor(private readonly free: T[]) {}
  acquire(): Promise<T> {
    const item = this.free.pop();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  release(item: T): void {
    const next = this.waiters.shift();
    if (next) next(item);
    else this.free.push(item);
  }
}

/** One-at-a-time: the read-modify-write writes of a direct store with alignment > 512. */
class Mutex {
  private tail: Promise<void> = Promise.resolve();
  run<R>(f: () => Promise<R>): Promise<R> {
    const result = this.tail.then(f);
    this.tail = result.then(
      () => {},
      () => {},
    );
    return result;
  }
}

/** Copies `dst.length` bytes from the vector's stream offset `at` into `dst`. */
function gather(vector: readonly Uint8Array[], at: number, dst: Uint8Array): void {
  let done = 0;
  for (const b of vector) {
    if (done === dst.length) return;
    if (at >= b.length) {
      at -= b.length;
      continue;
    }
    const n = Math.min(b.length - at, dst.length - done);
    dst.set(b.subarray(at, at + n), done);
    done += n;
    at = 0;
  }
}

/** Copies `src` into the vector from its stream offset `at`. */
function scatter(vector: readonly Uint8Array[], at: number, src: Uint8Array): void {
  let done = 0;
  for (const b of vector) {
    if (done === src.length) return;
    if (at >= b.length) {
      at -= b.length;
      continue;
    }
    const n = Math.min(b.length - at, src.length - done);
    b.set(src.subarray(done, done + n), at);
    done += n;
    at = 0;
  }
}

/** The vector with its first `n` bytes dropped (views, no copy). */
function advance(vector: Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  while (i < vector.length && n >= vector[i]!.length) n -= vector[i++]!.length;
  const rest = vector.slice(i);
  if (n > 0 && rest.length) rest[0] = rest[0]!.subarray(n);
  return rest;
}

/** A block device's size in bytes from sysfs (its st_size is 0). */
function blockDeviceSize(rdev: number, path: string): number {
  // Linux's dev_t encoding (glibc gnu_dev_major/minor).
  const major = ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
  const minor = (rdev & 0xff) | ((rdev >>> 12) & ~0xff);
  const file = `/sys/dev/block/${major}:${minor}/size`;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new FileStorageError(`image ${path}: a block device whose size cannot be read from ${file} (${errnoCode(e) ?? e})`, 'NO_SIZE');
  }
  const sectors = Number(text.trim());
  if (!Number.isSafeInteger(sectors * SECTOR_SIZE)) throw new FileStorageError(`image ${path}: block device size '${text.trim()}' sectors is not usable`, 'NO_SIZE');
  return sectors * SECTOR_SIZE;
}

function humanSize(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1 && v % 1024 === 0) {
    v /= 1024;
    u++;
  }
  return `${v} ${units[u]}`;
}

export class FileStorage implements BlockStorage {
  readonly canUnmap = false;
  private closed = false;
  private readonly bounce: Pool<Uint8Array> | undefined;
  private readonly zeroChunk: Uint8Array;
  private readonly rmw = new Mutex();

  private constructor(
    private readonly handle: FileHandle,
    /** The io_uring engine, or undefined for libuv's thread pool. */
    private readonly ring: IoRing | undefined,
    /** The engine asked for. */
    private readonly engine: AioEngine,
    /** Transfers up to this many bytes go through `ring`; larger ones by the batch rule (viaRing). */
    private readonly ringMax: number,
    readonly path: string,
    readonly size: number,
    readonly readOnly: boolean,
    /** O_DIRECT alignment, or 0 for buffered I/O. */
    readonly directAlignment: number,
    bounce: Uint8Array[] | undefined,
    zeroChunk: Uint8Array,
  ) {
    this.bounce = bounce && new Pool(bounce);
    this.zeroChunk = zeroChunk;
  }

  get blockSize(): number {
    return Math.max(SECTOR_SIZE, this.directAlignment);
  }

  get description(): string {
    return `${this.path} (${humanSize(this.size)}${this.readOnly ? ', read-only' : ''}${this.directAlignment ? ', O_DIRECT' : ''}, aio=${this.aio})`;
  }

  /** The I/O engine in use ('auto': io_uring, with the pool for large transfers of files io_uring cannot read inline). */
  get aio(): AioEngine {
    return this.ring ? this.engine : 'threads';
  }

  /** The open file's descriptor (tests, diagnostics). */
  get fd(): number {
    return this.handle.fd;
  }

  /** Opens and locks `path`. Throws FileStorageError with a message meant for the user. */
  static async open(path: string, options: FileStorageOptions = {}): Promise<FileStorage> {
    const readOnly = options.readOnly ?? false;
    const direct = options.direct ?? false;
    const warn = options.warn ?? (() => {});
    let st;
    try {
      st = await fsp.stat(path);
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOENT') throw new FileStorageError(`image ${path}: no such file`, 'ENOENT');
      throw new FileStorageError(`image ${path}: ${(e as Error).message}`, code ?? 'EIO');
    }
    if (!st.isFile() && !st.isBlockDevice()) {
      const what = st.isDirectory() ? 'a directory' : st.isCharacterDevice() ? 'a character device' : st.isFIFO() ? 'a FIFO' : st.isSocket() ? 'a socket' : 'not a file';
      throw new FileStorageError(`image ${path} is ${what}, not a regular file or a block device`, 'NOT_BLOCK');
    }
    let flags = readOnly ? fsc.O_RDONLY : fsc.O_RDWR;
    if (direct) {
      if (fsc.O_DIRECT === undefined) throw new FileStorageError('--direct: this platform has no O_DIRECT', 'NO_DIRECT');
      flags |= fsc.O_DIRECT;
    }
    let handle: FileHandle;
    try {
      handle = await fsp.open(path, flags);
    } catch (e) {
      const code = errnoCode(e);
      if (direct && code === 'EINVAL') {
        throw new FileStorageError(`--direct: the file system holding ${path} does not support O_DIRECT (e.g. tmpfs on older kernels); run without --direct`, 'NO_DIRECT');
      }
      if (!readOnly && (code === 'EACCES' || code === 'EPERM' || code === 'EROFS')) {
        const why = code === 'EROFS' ? 'a read-only file system' : 'permission denied';
        throw new FileStorageError(`image ${path}: cannot open it for writing (${why}); --read-only serves it read-only`, code);
      }
      if (code === 'ENOENT') throw new FileStorageError(`image ${path}: no such file`, code);
      throw new FileStorageError(`image ${path}: ${(e as Error).message}`, code ?? 'EIO');
    }
    try {
      const fst = await handle.stat();
      let bytes = fst.isBlockDevice() ? blockDeviceSize(fst.rdev, path) : fst.size;
      if (!Number.isSafeInteger(bytes)) throw new FileStorageError(`image ${path}: ${bytes} bytes is beyond 2^53`, 'TOO_LARGE');
      if (options.lock ?? true) lockImage(handle.fd, path, readOnly, warn);

      let alignment = 0;
      let bounce: Uint8Array[] | undefined;
      // One WebAssembly.Memory: BOUNCE_COUNT chunks then a zero chunk, all page-aligned (64 KiB pages).
      const chunks = direct ? BOUNCE_COUNT + 1 : 0;
      const memory = chunks ? new Uint8Array(new WebAssembly.Memory({ initial: (chunks * BOUNCE_CHUNK) / 65536 }).buffer) : undefined;
      let zeroChunk = new Uint8Array(ZERO_CHUNK);
      if (memory) {
        bounce = Array.from({ length: BOUNCE_COUNT }, (_, i) => memory.subarray(i * BOUNCE_CHUNK, (i + 1) * BOUNCE_CHUNK));
        zeroChunk = memory.subarray(BOUNCE_COUNT * BOUNCE_CHUNK);
        alignment = options.directAlignment ?? (await probeAlignment(handle, bounce[0]!, path));
        if (alignment < SECTOR_SIZE || alignment > BOUNCE_CHUNK || (alignment & (alignment - 1)) !== 0) {
          throw new FileStorageError(`--direct: alignment ${alignment} is not a power of two from 512 to ${BOUNCE_CHUNK}`, 'NO_DIRECT');
        }
      }
      const unit = Math.max(SECTOR_SIZE, alignment);
      if (bytes % unit !== 0) {
        const rest = bytes % unit;
        warn(
          `image ${path}: its size, ${bytes} bytes, is not a multiple of ${unit}${alignment > SECTOR_SIZE ? ' (the O_DIRECT alignment)' : ''}; ` +
            `the last ${rest} bytes are not part of the disk`,
        );
        bytes -= rest;
      }
      let ring: IoRing | undefined;
      if (options.aio !== 'threads') {
        const r = IoRing.open(RING_ENTRIES);
        if (typeof r === 'string') {
          if (options.aio === 'io_uring') throw new FileStorageError(`--aio io_uring: ${r}; --aio threads uses libuv's thread pool`, 'NO_IO_URING');
        } else {
          ring = r;
        }
      }
      const engine = options.aio ?? 'auto';
      const ringMax = engine === 'io_uring' || ring?.readsInline(handle.fd) ? Infinity : RING_MAX_BYTES;
      return new FileStorage(handle, ring, engine, ringMax, path, bytes, readOnly, alignment, bounce, zeroChunk);
    } catch (e) {
      await handle.close().catch(() => {});
      throw e;
    }
  }

  read(offset: number, into: readonly Uint8Array[]): Promise<void> {
    if (this.closed) return this.closedError();
    if (this.bounce) return this.directRead(offset, vectorLength(into), into);
    return this.preadv(offset, into);
  }

  write(offset: number, from: readonly Uint8Array[]): Promise<void> {
    if (this.closed) return this.closedError();
    if (this.readOnly) return Promise.reject(new Error(`image ${this.path} is open read-only`));
    if (this.bounce) return this.directWrite(offset, vectorLength(from), from);
    return this.pwritev(offset, from);
  }

  /** read() of spans: straight to io_uring when it takes the transfer (no view per segment), else as views. */
  readSpans(offset: number, into: SegmentSpans): Promise<void> {
    if (this.closed) return this.closedError();
    if (this.bounce || into.count > IOV_MAX || into.bytes === 0 || !this.viaRing(into.bytes)) return this.read(offset, into.views());
    return this.ring!.read(this.handle.fd, offset, into).then((n) => (n === into.bytes ? undefined : this.loop(false, offset, into.views(), n)));
  }

  /** write() of spans (see readSpans). */
  writeSpans(offset: number, from: SegmentSpans): Promise<void> {
    if (this.closed) return this.closedError();
    if (this.readOnly || this.bounce || from.count > IOV_MAX || from.bytes === 0 || !this.viaRing(from.bytes)) return this.write(offset, from.views());
    return this.ring!.write(this.handle.fd, offset, from).then((n) => (n === from.bytes ? undefined : this.loop(true, offset, from.views(), n)));
  }

  async flush(): Promise<void> {
    this.checkOpen();
    if (this.ring) await this.ring.datasync(this.handle.fd); // either engine: fdatasync covers every completed write
    else await this.handle.datasync();
  }

  /** No PUNCH_HOLE without native code: zeroes (see the module comment). */
  async discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length, false);
  }

  async writeZeroes(offset: number, length: number, _unmap: boolean): Promise<void> {
    this.checkOpen();
    this.checkWritable();
    if (this.bounce) return this.directWrite(offset, length, null);
    return this.zeroesBuffered(offset, length);
  }

  /** Closes the file (which releases its locks). Operations still running finish first. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.ring?.close();
    await this.handle.close();
  }

  private closedError(): Promise<never> {
    return Promise.reject(new Error(`image ${this.path} is closed`));
  }

  private checkOpen(): void {
    if (this.closed) throw new Error(`image ${this.path} is closed`);
  }

  private checkWritable(): void {
    if (this.readOnly) throw new Error(`image ${this.path} is open read-only`);
  }

  // ------------------------------------------------------------------ buffered I/O

  /** One preadv/pwritev of at most IOV_MAX buffers, by the engine in use: bytes transferred. */
  /** Whether a transfer of `bytes` goes through io_uring (see RING_MAX_BYTES, RING_BATCH_BYTES). */
  private viaRing(bytes: number): boolean {
    return this.ring !== undefined && (bytes <= this.ringMax || this.ring.batchBytes + bytes <= RING_BATCH_BYTES);
  }

  private transfer(write: boolean, position: number, vector: readonly Uint8Array[], bytes: number): Promise<number> {
    if (this.viaRing(bytes)) return write ? this.ring!.write(this.handle.fd, position, vector) : this.ring!.read(this.handle.fd, position, vector);
    return write
      ? this.handle.writev(vector as Uint8Array[], position).then((r) => r.bytesWritten)
      : this.handle.readv(vector as Uint8Array[], position).then((r) => r.bytesRead);
  }

  /**
   * The whole vector: the common case is one transfer that does it all (no async frame, no
   * copy of the vector); a short transfer, or more than IOV_MAX buffers, continues in a loop.
   */
  private whole(write: boolean, position: number, vector: readonly Uint8Array[]): Promise<void> {
    if (vector.length > IOV_MAX) return this.loop(write, position, vector, 0);
    const want = vectorLength(vector);
    if (want === 0) return Promise.resolve();
    return this.transfer(write, position, vector, want).then((n) => (n === want ? undefined : this.loop(write, position, vector, n)));
  }

  private async loop(write: boolean, position: number, whole: readonly Uint8Array[], done: number): Promise<void> {
    let vector = advance([...whole], done);
    position += done;
    while (vector.length) {
      const part = vector.slice(0, IOV_MAX);
      const n = await this.transfer(write, position, part, vectorLength(part));
      if (n === 0) {
        throw new Error(write ? `write at byte ${position} of ${this.path} made no progress` : `read at byte ${position} of ${this.path}: unexpected end of file (was it truncated?)`);
      }
      position += n;
      vector = advance(vector, n);
    }
  }

  private preadv(position: number, vector: readonly Uint8Array[]): Promise<void> {
    return this.whole(false, position, vector);
  }

  private pwritev(position: number, vector: readonly Uint8Array[]): Promise<void> {
    return this.whole(true, position, vector);
  }

  private async zeroesBuffered(offset: number, length: number): Promise<void> {
    const end = offset + length;
    for (let at = offset; at < end; ) {
      const n = Math.min(end - at, ZERO_CHUNK * ZERO_VECTOR);
      const vector: Uint8Array[] = [];
      for (let k = 0; k < n; k += ZERO_CHUNK) vector.push(this.zeroChunk.subarray(0, Math.min(ZERO_CHUNK, n - k)));
      await this.pwritev(at, vector);
      at += n;
    }
  }

  // ------------------------------------------------------------------ O_DIRECT through bounce buffers

  /** The aligned windows (≤ one bounce chunk each) covering [offset, offset + length). */
  private windows(offset: number, length: number): { start: number; end: number }[] {
    const a = this.directAlignment;
    const start = Math.floor(offset / a) * a;
    const end = Math.ceil((offset + length) / a) * a;
    const out: { start: number; end: number }[] = [];
    for (let w = start; w < end; w += BOUNCE_CHUNK) out.push({ start: w, end: Math.min(end, w + BOUNCE_CHUNK) });
    return out;
  }

  private async directRead(offset: number, length: number, into: readonly Uint8Array[]): Promise<void> {
    await Promise.all(
      this.windows(offset, length).map(async ({ start, end }) => {
        const chunk = await this.bounce!.acquire();
        try {
          const bytes = chunk.subarray(0, end - start);
          await this.preadFull(bytes, start);
          const from = Math.max(start, offset);
          const to = Math.min(end, offset + length);
          scatter(into, from - offset, bytes.subarray(from - start, to - start));
        } finally {
          this.bounce!.release(chunk);
        }
      }),
    );
  }

  /** A write from `from`, or of zeroes when `from` is null. */
  private directWrite(offset: number, length: number, from: readonly Uint8Array[] | null): Promise<void> {
    const a = this.directAlignment;
    const aligned = offset % a === 0 && length % a === 0;
    const go = () =>
      Promise.all(
        this.windows(offset, length).map(async ({ start, end }) => {
          if (from === null && offset <= start && end <= offset + length) {
            // a whole window of zeroes: straight from the (aligned) zero chunk
            await this.pwriteFull(this.zeroChunk.subarray(0, end - start), start);
            return;
          }
          const chunk = await this.bounce!.acquire();
          try {
            const bytes = chunk.subarray(0, end - start);
            const from0 = Math.max(start, offset);
            const to = Math.min(end, offset + length);
            if (from0 > start || to < end) await this.preadFull(bytes, start); // read-modify-write
            if (from === null) bytes.fill(0, from0 - start, to - start);
            else gather(from, from0 - offset, bytes.subarray(from0 - start, to - start));
            await this.pwriteFull(bytes, start);
          } finally {
            this.bounce!.release(chunk);
          }
        }),
      ).then(() => {});
    // Aligned writes never read-modify-write; the others are serialized among themselves and
    // with the aligned ones, so no block is read, patched and written back over a newer write.
    return a > SECTOR_SIZE || !aligned ? this.rmw.run(go) : go();
  }

  private async preadFull(bytes: Uint8Array, position: number): Promise<void> {
    await this.preadv(position, [bytes]);
  }

  private async pwriteFull(bytes: Uint8Array, position: number): Promise<void> {
    await this.pwritev(position, [bytes]);
  }
}

/** The smallest O_DIRECT size/offset alignment that reads at offset 0 accept. */
async function probeAlignment(handle: FileHandle, buffer: Uint8Array, path: string): Promise<number> {
  let last: unknown;
  for (let a = SECTOR_SIZE; a <= 4096; a *= 2) {
    try {
      await handle.read(buffer, 0, a, 0);
      return a;
    } catch (e) {
      last = e;
      if (errnoCode(e) !== 'EINVAL') break;
    }
  }
  throw new FileStorageError(`--direct: O_DIRECT reads of ${path} fail (${(last as Error)?.message ?? last}); run without --direct`, 'NO_DIRECT');
}

/**
 * Takes QEMU-compatible image locks on `fd` (see the module comment): the shared locks first,
 * then the test for other holders (F_OFD_GETLK), so two openers racing each see the other.
 * Throws FileStorageError 'LOCKED' when another opener conflicts.
 */
function lockImage(fd: number, path: string, readOnly: boolean, warn: (line: string) => void): void {
  const lockFile = lockFileFunction();
  if (typeof lockFile === 'string') {
    warn(`image ${path} is not locked (another process could open it for writing too): ${lockFile}`);
    return;
  }
  const read = LOCK_PERM_BASE + PERM_CONSISTENT_READ;
  const write = LOCK_PERM_BASE + PERM_WRITE;
  const noWriters = LOCK_SHARED_BASE + PERM_WRITE;
  const held = readOnly ? [read, noWriters] : [read, write, noWriters];
  const release = () => {
    for (const b of held) {
      try {
        lockFile(fd, b, 1, 'unlock');
      } catch {
        /* released when the fd closes anyway */
      }
    }
  };
  try {
    // Shared locks never conflict with shared ones: these succeed unless someone holds a byte
    // exclusively (not done by this scheme, but by other tools' own locking).
    for (const b of held) if (!lockFile(fd, b, 1, 'read')) throw new FileStorageError(`image ${path} is locked by another process (byte ${b})`, 'LOCKED');
    // A writer needs nobody else writing (101) and nobody refusing writers (201); a reader needs nobody writing.
    if (!lockFile(fd, write, 1, 'test')) {
      throw new FileStorageError(`image ${path} is locked: another process has it open for writing (another virtio-blk backend, or QEMU); is another process using the image?`, 'LOCKED');
    }
    if (!readOnly && !lockFile(fd, noWriters, 1, 'test')) {
      throw new FileStorageError(`image ${path} is locked: another process has it open and does not share writing (a read-only virtio-blk backend, or QEMU); is another process using the image?`, 'LOCKED');
    }
  } catch (e) {
    release();
    if (e instanceof FileStorageError) throw e;
    const code = errnoCode(e);
    if (code === 'ENOLCK' || code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'EINVAL') {
      warn(`image ${path}: the file system does not support OFD locks (${code}); the image is not locked`);
      return;
    }
    throw new FileStorageError(`image ${path}: locking failed: ${(e as Error).message}`, code ?? 'EIO');
  }
}

/** Opens `path` as a BlockStorage (FileStorage.open). */
export function openFileStorage(path: string, options: FileStorageOptions = {}): Promise<FileStorage> {
  return FileStorage.open(path, options);
}
