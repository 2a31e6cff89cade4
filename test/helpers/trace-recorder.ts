/** A TraceConsumer that keeps every event (tests), and tracing on this thread into it. */
import { enableEvents, type AnyTraceEvent } from '../../src/trace/events.js';
import { DirectTarget, resetTracing, setEmitTarget, threadId, wallClockMs, type TraceConsumer } from '../../src/trace/sink.js';

export interface Recorded {
  name: string;
  ts: number;
  thread: number;
  fields: Record<string, number | string>;
}

export class Recorder implements TraceConsumer {
  readonly events: Recorded[] = [];
  closed = false;
  record(ev: AnyTraceEvent, ts: number, thread: number, values: ArrayLike<number>, at: number, text: string | undefined): void {
    const fields: Record<string, number | string> = {};
    for (let i = 0; i < ev.numericCount; i++) fields[ev.fields[i]!.name] = values[at + i]!;
    if (ev.hasText) fields[ev.fields[ev.numericCount]!.name] = text ?? '';
    this.events.push({ name: ev.name, ts, thread, fields });
  }
  close(): void {
    this.closed = true;
  }
  names(): string[] {
    return this.events.map((e) => e.name);
  }
}

/** Runs `f` with `events` on and emitted into `consumer` (this thread as 'main'); tracing is off again after. */
export function withTracing<T>(events: readonly string[], consumer: TraceConsumer, f: () => T): T {
  enableEvents(events);
  setEmitTarget(new DirectTarget(consumer, wallClockMs(), threadId('main')));
  try {
    return f();
  } finally {
    resetTracing();
  }
}

/** withTracing for an async `f`: tracing stays on until its promise settles. */
export async function withTracingAsync<T>(events: readonly string[], consumer: TraceConsumer, f: () => Promise<T>): Promise<T> {
  enableEvents(events);
  setEmitTarget(new DirectTarget(consumer, wallClockMs(), threadId('main')));
  try {
    return await f();
  } finally {
    resetTracing();
  }
}
