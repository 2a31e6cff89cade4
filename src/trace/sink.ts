/**
 * Where emitted events go. A thread has one emit target (events.ts `target.sink`):
 *
 *  - in a worker of the embedded machine, a RingWriter (ring.ts): fixed-size binary records in
 *    a SharedArrayBuffer the main thread drains (no postMessage per event);
 *  - in the thread that writes the output (the vhost-user daemon), a DirectTarget that hands
 *    each event straight to a TraceConsumer.
 *
 * A TraceConsumer (format.ts: text lines; chrome.ts: Chrome trace-event JSON) sees every event
 * the same way whichever path it took: the event, its time in ms since the trace's epoch, the
 * thread it happened on, its numeric fields in `values[at …]` and its text field.
 *
 * The clock: performance.timeOrigin + performance.now(), which is comparable across the
 * threads of a process, taken relative to an epoch (the machine's start) so that it keeps full
 * precision as a double.
 */
import { EVENTS, MAX_FIELDS, target, type AnyTraceEvent, type EmitTarget } from './events.js';

/** The threads events come from (a Chrome trace's thread names, a text line's thread column). */
export const THREADS = ['main', 'guest', 'device'] as const;
export type TraceThread = (typeof THREADS)[number];
export const threadId = (t: TraceThread): number => THREADS.indexOf(t);

export interface TraceConsumer {
  /** One event; `values[at … at + ev.numericCount)` are its numeric fields (valid during the call only). */
  record(ev: AnyTraceEvent, ts: number, thread: number, values: ArrayLike<number>, at: number, text: string | undefined): void;
  /** Called after a batch of records: a consumer that buffers output may write it out (and wait). */
  flush?(): void | Promise<void>;
  /** The end of the trace: write what is left, close files. */
  close(): void | Promise<void>;
}

/** A clock in ms since `epochMs` (wall-clock ms, e.g. the machine's boot time), valid in any thread. */
export function traceClock(epochMs: number): () => number {
  const base = performance.timeOrigin - epochMs;
  return () => base + performance.now();
}

/** Wall-clock milliseconds, comparable across threads: the epoch to give traceClock. */
export const wallClockMs = (): number => performance.timeOrigin + performance.now();

/** Numeric argument as a double (undefined or a non-number: NaN, shown as such). */
const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);

/** The emit target of the thread that also consumes: events go straight to `consumer`. */
export class DirectTarget implements EmitTarget {
  private readonly values = new Float64Array(MAX_FIELDS);
  private readonly clock: () => number;
  constructor(
    private readonly consumer: TraceConsumer,
    epochMs: number,
    private readonly thread: number = threadId('main'),
  ) {
    this.clock = traceClock(epochMs);
  }

  emit(ev: AnyTraceEvent, a: unknown, b: unknown, c: unknown, d: unknown, e: unknown, f: unknown): void {
    const v = this.values;
    v[0] = num(a);
    v[1] = num(b);
    v[2] = num(c);
    v[3] = num(d);
    v[4] = num(e);
    v[5] = num(f);
    const text = ev.hasText ? String(argAt(ev.numericCount, a, b, c, d, e, f) ?? '') : undefined;
    this.consumer.record(ev, this.clock(), this.thread, v, 0, text);
  }
}

/** The argument at position i (0-based) of an emit call. */
export function argAt(i: number, a: unknown, b: unknown, c: unknown, d: unknown, e: unknown, f: unknown): unknown {
  switch (i) {
    case 0:
      return a;
    case 1:
      return b;
    case 2:
      return c;
    case 3:
      return d;
    case 4:
      return e;
    case 5:
      return f;
    default:
      return undefined;
  }
}

/** Makes `t` this thread's emit target (returns the previous one). */
export function setEmitTarget(t: EmitTarget): EmitTarget {
  const old = target.sink;
  target.sink = t;
  return old;
}

/** Events off and the target dropped: what a thread is in before tracing starts. */
export function resetTracing(): void {
  for (const e of EVENTS) e.enabled = false;
  target.sink = { emit() {} };
}
