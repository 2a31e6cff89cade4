/**
 * Trace events across threads without a message per event: each producing thread (the embedded
 * machine's guest and device workers) appends fixed-layout binary records to its own ring in a
 * SharedArrayBuffer; one consumer (the main thread) drains all rings, merges them by time into a
 * TraceConsumer, and frees room. A sibling of src/machine/console.ts, but lock-free (one producer
 * per ring) and without a wake-up per record: the producer wakes the consumer only when its ring
 * is half full or full, the consumer otherwise polls every few milliseconds.
 *
 * Bounded memory, nothing dropped: a producer that finds its ring full waits for the consumer
 * (the consumer waits for its output, a file or a pipe), as the console's writers do. After the
 * consumer has stopped for good, producers drop events instead of waiting.
 *
 * Record (8-byte aligned, never split at the ring's end):
 *   u32 size · u16 event id (0xffff: padding to the ring's end) · u16 text bytes ·
 *   f64 time (ms since the epoch) · f64 × the event's numeric fields · text (UTF-8), padded to 8.
 */
import { EVENTS, enableEvents, type AnyTraceEvent, type EmitTarget } from './events.js';
import { argAt, setEmitTarget, traceClock, type TraceConsumer } from './sink.js';

const enum H {
  /** Bytes ever written (free-running, mod 2^32): the producer's. */
  Write = 0,
  /** Bytes ever consumed: the consumer's. */
  Read,
  /** Bumped by the producer when the ring passes half full or is full: the consumer waits on it. */
  Doorbell,
  /** 1 while the producer waits for room. */
  Waiting,
  /** 1 once the consumer has stopped: producers stop waiting (and drop). */
  Closed,
  /** Events dropped after Closed. */
  Dropped,
  Words,
}

const HEADER_BYTES = 64;
const PAD_ID = 0xffff;
const MAX_TEXT = 4096;
export const DEFAULT_TRACE_RING_BYTES = 4 << 20;
/** A producer waiting for room re-checks Closed this often (ms). */
const WAIT_SLICE_MS = 20;
/** The consumer's poll period while the rings are quiet (ms). */
const POLL_MS = 5;
/**
 * The consumer merges the rings by time: a record is passed on only when every other ring has a
 * later one, or when it is older than this (ms): a producer's clock read and its append are
 * microseconds apart.
 */
const MERGE_GRACE_MS = 2;
/** Records passed on between two frees of ring room (and consumer flushes). */
const BATCH = 4096;

const align8 = (n: number): number => (n + 7) & ~7;

/** A ring of `bytes` (a power of two ≥ 4096) for one producing thread. */
export function createTraceRing(bytes = DEFAULT_TRACE_RING_BYTES): SharedArrayBuffer {
  if (!(Number.isInteger(bytes) && bytes >= 4096 && (bytes & (bytes - 1)) === 0)) throw new RangeError(`trace ring size ${bytes} is not a power of two ≥ 4096`);
  return new SharedArrayBuffer(HEADER_BYTES + bytes);
}

class RingMemory {
  protected readonly h: Int32Array;
  protected readonly bytes: Uint8Array;
  protected readonly view: DataView;
  protected readonly f64: Float64Array;
  protected readonly capacity: number;
  protected readonly mask: number;
  constructor(sab: SharedArrayBuffer) {
    this.h = new Int32Array(sab, 0, H.Words);
    this.bytes = new Uint8Array(sab, HEADER_BYTES);
    this.view = new DataView(sab, HEADER_BYTES);
    this.f64 = new Float64Array(sab, HEADER_BYTES);
    this.capacity = this.bytes.length;
    this.mask = this.capacity - 1;
  }
}

/** A producing thread's end: this thread's emit target while it traces. */
export class RingWriter extends RingMemory implements EmitTarget {
  private written: number;
  private readCache: number;
  private readonly clock: () => number;
  private readonly encoder = new TextEncoder();
  private readonly scratch = new Uint8Array(MAX_TEXT * 3);

  constructor(sab: SharedArrayBuffer, epochMs: number) {
    super(sab);
    this.written = Atomics.load(this.h, H.Write);
    this.readCache = Atomics.load(this.h, H.Read);
    this.clock = traceClock(epochMs);
  }

  emit(ev: AnyTraceEvent, a: unknown, b: unknown, c: unknown, d: unknown, e: unknown, f: unknown): void {
    const n = ev.numericCount;
    let textLen = 0;
    if (ev.hasText) {
      const t = String(argAt(n, a, b, c, d, e, f) ?? '');
      textLen = this.encoder.encodeInto(t.length > MAX_TEXT ? t.slice(0, MAX_TEXT) : t, this.scratch).written;
    }
    const size = 16 + 8 * n + align8(textLen);
    let pos = this.written & this.mask;
    const tail = this.capacity - pos;
    const need = tail < size ? tail + size : size;
    if (!this.room(need)) {
      Atomics.add(this.h, H.Dropped, 1);
      return;
    }
    const ts = this.clock();
    const v = this.view;
    if (tail < size) {
      v.setUint32(pos, tail, true);
      v.setUint16(pos + 4, PAD_ID, true);
      this.written = (this.written + tail) | 0;
      pos = 0;
    }
    v.setUint32(pos, size, true);
    v.setUint16(pos + 4, ev.id, true);
    v.setUint16(pos + 6, textLen, true);
    const at = (pos + 8) >> 3;
    const f64 = this.f64;
    f64[at] = ts;
    if (n > 0) f64[at + 1] = a as number;
    if (n > 1) f64[at + 2] = b as number;
    if (n > 2) f64[at + 3] = c as number;
    if (n > 3) f64[at + 4] = d as number;
    if (n > 4) f64[at + 5] = e as number;
    if (n > 5) f64[at + 6] = f as number;
    if (textLen) this.bytes.set(this.scratch.subarray(0, textLen), pos + 16 + 8 * n);
    const before = (this.written - this.readCache) >>> 0;
    this.written = (this.written + size) | 0;
    Atomics.store(this.h, H.Write, this.written); // release: the record is visible with it
    const half = this.capacity >>> 1;
    if (before < half && before + need >= half) this.ring();
  }

  /** Waits until `need` bytes are free; false if the consumer has stopped. */
  private room(need: number): boolean {
    const h = this.h;
    if (((this.written - this.readCache) >>> 0) + need <= this.capacity) return true;
    for (;;) {
      this.readCache = Atomics.load(h, H.Read);
      if (((this.written - this.readCache) >>> 0) + need <= this.capacity) return true;
      if (Atomics.load(h, H.Closed) !== 0) return false;
      Atomics.store(h, H.Waiting, 1);
      this.ring();
      Atomics.wait(h, H.Read, this.readCache, WAIT_SLICE_MS);
    }
  }

  private ring(): void {
    Atomics.add(this.h, H.Doorbell, 1);
    Atomics.notify(this.h, H.Doorbell);
  }
}

/** Tracing in a producing thread: `events` on, their records into the ring `sab`. */
export function startRingTracing(sab: SharedArrayBuffer, epochMs: number, events: readonly string[]): RingWriter {
  enableEvents(events);
  const w = new RingWriter(sab, epochMs);
  setEmitTarget(w);
  return w;
}

/** One ring as the consumer reads it. */
class RingCursor extends RingMemory {
  read: number;
  /** Write position as last loaded (acquire). */
  end: number;
  private readonly decoder = new TextDecoder();
  private textCopy = new Uint8Array(MAX_TEXT * 3);

  constructor(
    sab: SharedArrayBuffer,
    readonly thread: number,
  ) {
    super(sab);
    this.read = Atomics.load(this.h, H.Read);
    this.end = this.read;
  }

  refresh(): void {
    this.end = Atomics.load(this.h, H.Write);
  }

  /** Skips padding; the time of the next record, or NaN when none (as of the last refresh). */
  peekTime(): number {
    for (;;) {
      if (this.read === this.end) return NaN;
      const pos = this.read & this.mask;
      const size = this.view.getUint32(pos, true);
      if (this.view.getUint16(pos + 4, true) !== PAD_ID) return this.f64[(pos + 8) >> 3]!;
      this.read = (this.read + size) | 0;
    }
  }

  /** Passes the next record (peekTime() was a number) to the consumer. */
  take(consumer: TraceConsumer): void {
    const pos = this.read & this.mask;
    const v = this.view;
    const size = v.getUint32(pos, true);
    const ev: AnyTraceEvent | undefined = EVENTS[v.getUint16(pos + 4, true)];
    const textLen = v.getUint16(pos + 6, true);
    const at = (pos + 8) >> 3;
    if (ev) {
      let text: string | undefined;
      if (ev.hasText) {
        const from = pos + 16 + 8 * ev.numericCount;
        this.textCopy.set(this.bytes.subarray(from, from + textLen));
        text = this.decoder.decode(this.textCopy.subarray(0, textLen));
      }
      consumer.record(ev, this.f64[at]!, this.thread, this.f64, at + 1, text);
    }
    this.read = (this.read + size) | 0;
  }

  /** Frees what was taken, and wakes a producer waiting for room. */
  release(): void {
    Atomics.store(this.h, H.Read, this.read);
    if (Atomics.load(this.h, H.Waiting) !== 0) {
      Atomics.store(this.h, H.Waiting, 0);
      Atomics.notify(this.h, H.Read);
    }
  }

  doorbell(): number {
    return Atomics.load(this.h, H.Doorbell);
  }

  waitDoorbell(seen: number, ms: number): Promise<unknown> | null {
    const r = Atomics.waitAsync(this.h, H.Doorbell, seen, ms);
    return r.async ? r.value : null;
  }

  close(): number {
    Atomics.store(this.h, H.Closed, 1);
    Atomics.notify(this.h, H.Read);
    return Atomics.load(this.h, H.Dropped);
  }
}

/**
 * The consumer: drains rings into a TraceConsumer, merged by time, until `stop()` has been
 * called and the rings are empty.
 */
export class TraceRingReader {
  private readonly cursors: RingCursor[];
  private stopping = false;
  private wake: (() => void) | null = null;
  /** Events producers dropped (only after the reader stopped). */
  dropped = 0;

  constructor(
    rings: readonly { sab: SharedArrayBuffer; thread: number }[],
    /** The clock of the records (ms since their epoch): records older than now - grace are safe to pass on. */
    private readonly clock: () => number,
  ) {
    this.cursors = rings.map((r) => new RingCursor(r.sab, r.thread));
  }

  async drain(consumer: TraceConsumer): Promise<void> {
    for (;;) {
      const seen = this.cursors.map((c) => c.doorbell());
      const stopping = this.stopping;
      const moved = this.pass(consumer, stopping);
      if (moved) {
        const p = consumer.flush?.();
        if (p) await p;
        continue;
      }
      if (stopping) break;
      await this.sleep(seen);
    }
    for (const c of this.cursors) this.dropped += c.close();
  }

  /** After the producers are done: drain what is left, then return from drain(). */
  stop(): void {
    this.stopping = true;
    this.wake?.();
  }

  /** Passes on up to BATCH records in time order; returns how many. */
  private pass(consumer: TraceConsumer, all: boolean): number {
    const cs = this.cursors;
    for (const c of cs) c.refresh();
    const limit = all ? Infinity : this.clock() - MERGE_GRACE_MS;
    let n = 0;
    while (n < BATCH) {
      let best: RingCursor | null = null;
      let bestTs = Infinity;
      let someEmpty = false;
      for (const c of cs) {
        const t = c.peekTime();
        if (Number.isNaN(t)) someEmpty = true;
        else if (t < bestTs) {
          bestTs = t;
          best = c;
        }
      }
      if (best === null) break;
      // Another ring may still get an earlier record: wait unless this one is old enough.
      if (someEmpty && bestTs > limit) break;
      best.take(consumer);
      n++;
    }
    for (const c of cs) c.release();
    return n;
  }

  private async sleep(seen: number[]): Promise<void> {
    const waits: Promise<unknown>[] = [new Promise<void>((resolve) => (this.wake = resolve))];
    for (let i = 0; i < this.cursors.length; i++) {
      const p = this.cursors[i]!.waitDoorbell(seen[i]!, POLL_MS);
      if (p === null) return; // that doorbell already moved
      waits.push(p);
    }
    let timer: NodeJS.Timeout | undefined;
    waits.push(new Promise<void>((resolve) => (timer = setTimeout(resolve, POLL_MS))));
    await Promise.race(waits);
    clearTimeout(timer);
    this.wake = null;
  }
}
