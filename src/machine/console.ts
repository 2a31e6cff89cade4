/**
 * The machine's console: lines from the guest (printk, user programs) and from the device
 * (its log) reach the host's stdout in the order they happened, although they come from two
 * threads, and in bounded memory however many there are.
 *
 * Both threads append records to one ring of bytes in a SharedArrayBuffer, under a lock, so
 * the order in the ring is the order the lines happened. The host thread drains the ring into
 * its sink and waits for the sink (a pipe that is full) before it frees more room: a producer
 * that finds the ring full waits, as a serial console with flow control makes its writer wait.
 * Nothing is dropped and nothing piles up: memory is the ring plus one drained batch.
 *
 * Record: one little-endian u32 header `(byteLength << 1) | stderrBit`, then the UTF-8 text,
 * padded to 4 bytes. Records may wrap around the end of the ring.
 */
export type Stream = 'stdout' | 'stderr';

const enum Header {
  /** 0 free, 1 held by a producer. */
  Lock = 0,
  /** Bytes of records not yet drained. */
  Used,
  /** Producers' next byte offset in the data area. */
  WritePos,
  /** Bumped after every append: the consumer waits on it. */
  Appended,
  /** 1 once the consumer has stopped for good: producers stop waiting for room. */
  Closed,
  Words,
}

const HEADER_BYTES = Header.Words * 4;
export const DEFAULT_CONSOLE_BYTES = 1 << 20;
/** How long a producer sleeps per check while the ring is full or locked (it rechecks `Closed`). */
const WAIT_SLICE_MS = 50;

/** Creates the shared memory of a console of `bytes` bytes of records (a multiple of 4, ≥ 64). */
export function createConsole(bytes = DEFAULT_CONSOLE_BYTES): SharedArrayBuffer {
  if (!(Number.isInteger(bytes) && bytes >= 64 && bytes % 4 === 0)) throw new RangeError(`console size ${bytes} is not a multiple of 4 ≥ 64`);
  return new SharedArrayBuffer(HEADER_BYTES + bytes);
}

const align4 = (n: number): number => (n + 3) & ~3;

class ConsoleMemory {
  protected readonly h: Int32Array;
  protected readonly data: Uint8Array;
  protected readonly dataView: DataView;
  protected readonly capacity: number;
  constructor(sab: SharedArrayBuffer) {
    this.h = new Int32Array(sab, 0, Header.Words);
    this.data = new Uint8Array(sab, HEADER_BYTES);
    this.dataView = new DataView(sab, HEADER_BYTES);
    this.capacity = this.data.length;
  }
}

/** A thread's end for writing lines (guest and device threads; any number of them). */
export class ConsoleWriter extends ConsoleMemory {
  private scratch = new Uint8Array(256);
  private readonly encoder = new TextEncoder();

  /** Appends one line; waits while the ring is full. Returns false if the console is closed (the line is dropped). */
  write(text: string, stream: Stream = 'stdout'): boolean {
    let len = this.encode(text);
    // A line longer than the whole ring is cut to fit (never split across appends).
    const room = this.capacity - 4;
    if (align4(len) > room) len = room;
    const need = 4 + align4(len);
    const h = this.h;
    for (;;) {
      if (Atomics.load(h, Header.Closed) !== 0) return false;
      if (Atomics.compareExchange(h, Header.Lock, 0, 1) !== 0) {
        Atomics.wait(h, Header.Lock, 1, WAIT_SLICE_MS);
        continue;
      }
      const used = Atomics.load(h, Header.Used);
      if (this.capacity - used >= need) break;
      this.unlock();
      Atomics.wait(h, Header.Used, used, WAIT_SLICE_MS); // until the consumer frees room
    }
    const pos = Atomics.load(h, Header.WritePos);
    this.dataView.setUint32(pos, (len << 1) | (stream === 'stderr' ? 1 : 0), true);
    this.copyIn((pos + 4) % this.capacity, len);
    Atomics.store(h, Header.WritePos, (pos + need) % this.capacity);
    Atomics.add(h, Header.Used, need);
    this.unlock();
    Atomics.add(h, Header.Appended, 1);
    Atomics.notify(h, Header.Appended);
    return true;
  }

  private unlock(): void {
    Atomics.store(this.h, Header.Lock, 0);
    Atomics.notify(this.h, Header.Lock, 1);
  }

  private encode(text: string): number {
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    if (this.scratch.length < text.length * 3) this.scratch = new Uint8Array(text.length * 3);
    return this.encoder.encodeInto(text, this.scratch).written;
  }

  private copyIn(at: number, len: number): void {
    const first = Math.min(len, this.capacity - at);
    this.data.set(this.scratch.subarray(0, first), at);
    if (first < len) this.data.set(this.scratch.subarray(first, len), 0);
  }
}

/**
 * The host's end: one consumer. `sink` gets batches of whole lines of one stream, each line
 * ending in '\n'; when it returns a promise, no room is freed until it settles.
 */
export class ConsoleReader extends ConsoleMemory {
  private readPos = 0;
  private readonly decoder = new TextDecoder();
  private copy: Uint8Array;
  private stopping = false;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.copy = new Uint8Array(this.capacity);
  }

  /** Drains until `stop()` has been called and the ring is empty. */
  async drain(sink: (text: string, stream: Stream) => void | Promise<void>): Promise<void> {
    const h = this.h;
    for (;;) {
      const seen = Atomics.load(h, Header.Appended);
      const used = Atomics.load(h, Header.Used);
      if (used === 0) {
        if (this.stopping) break;
        const r = Atomics.waitAsync(h, Header.Appended, seen);
        if (r.async) await r.value;
        continue;
      }
      for (const [stream, text] of this.take(used)) {
        const pending = sink(text, stream);
        if (pending) await pending;
      }
    }
    Atomics.store(h, Header.Closed, 1);
    Atomics.notify(h, Header.Used);
    Atomics.notify(h, Header.Lock);
  }

  /** After the producers are done: drain what is left, then return from drain(). */
  stop(): void {
    this.stopping = true;
    Atomics.add(this.h, Header.Appended, 1);
    Atomics.notify(this.h, Header.Appended);
  }

  /** Copies `used` bytes of records out, frees their room, and groups them into per-stream text runs. */
  private take(used: number): [Stream, string][] {
    const first = Math.min(used, this.capacity - this.readPos);
    this.copy.set(this.data.subarray(this.readPos, this.readPos + first), 0);
    if (first < used) this.copy.set(this.data.subarray(0, used - first), first);
    this.readPos = (this.readPos + used) % this.capacity;
    Atomics.sub(this.h, Header.Used, used);
    Atomics.notify(this.h, Header.Used);

    const view = new DataView(this.copy.buffer, 0, used);
    const runs: [Stream, string][] = [];
    let current: Stream | null = null;
    let parts: string[] = [];
    for (let at = 0; at < used; ) {
      const header = view.getUint32(at, true);
      const len = header >>> 1;
      const stream: Stream = header & 1 ? 'stderr' : 'stdout';
      if (stream !== current) {
        if (current !== null) runs.push([current, parts.join('')]);
        current = stream;
        parts = [];
      }
      parts.push(this.decoder.decode(this.copy.subarray(at + 4, at + 4 + len)), '\n');
      at += 4 + align4(len);
    }
    if (current !== null) runs.push([current, parts.join('')]);
    return runs;
  }
}

/** Kernel-style timestamp `[    7.627890]` for `ms` milliseconds since boot. */
export function kernelTimestamp(ms: number): string {
  const us = Math.max(0, Math.round(ms * 1000));
  const sec = Math.floor(us / 1_000_000);
  const frac = us % 1_000_000;
  return `[${String(sec).padStart(5, ' ')}.${String(frac).padStart(6, '0')}]`;
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across threads. */
export const nowMs = (): number => performance.timeOrigin + performance.now();
