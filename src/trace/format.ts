/**
 * Text output, QEMU's `-trace` line style: one line per event,
 *
 *   0.062936 guest vring_add vq=0 head=0 out_num=1 in_num=1 avail_idx=1 indirect=1
 *   0.062991 device virtio_mmio_write_offset offset=0x50 reg=QueueNotify value=0x0 size=4
 *
 * time in seconds since the trace's epoch (µs), the thread (guest / device / main), the event's
 * name and its fields as name=value. A decoded field (a register, a status, a vhost-user
 * request) is followed by its decoded name as one more field.
 */
import type { AnyTraceEvent, FieldSpec } from './events.js';
import { THREADS, type TraceConsumer } from './sink.js';

/** Names a field value (undefined: no name for it). */
export type Decoder = (value: number) => string | undefined;
const decoders = new Map<string, Decoder>();

/** Registers the names of a decoded field kind (in the thread that formats). */
export function setDecoder(name: string, decode: Decoder): void {
  decoders.set(name, decode);
}

export function decode(field: FieldSpec, value: number): string | undefined {
  return field.decode ? decoders.get(field.decode.decoder)?.(value) : undefined;
}

export function formatNumber(kind: FieldSpec['kind'], v: number): string {
  if (!Number.isFinite(v)) return '?';
  return kind === 'x' ? `0x${v.toString(16)}` : String(v);
}

/** A text field: as is when it is one word, else quoted (JSON string syntax). */
export function formatText(s: string): string {
  return s !== '' && !/[\s"\\=]/.test(s) ? s : JSON.stringify(s);
}

/** `name=value ...` of one event. */
export function formatFields(ev: AnyTraceEvent, values: ArrayLike<number>, at: number, text: string | undefined): string {
  const parts: string[] = [];
  const fields = ev.fields;
  for (let i = 0; i < ev.numericCount; i++) {
    const f = fields[i]!;
    const v = values[at + i]!;
    parts.push(`${f.name}=${formatNumber(f.kind, v)}`);
    if (f.decode) {
      const d = decode(f, v);
      if (d !== undefined) parts.push(`${f.decode.as}=${d}`);
    }
  }
  if (ev.hasText) parts.push(`${fields[ev.numericCount]!.name}=${formatText(text ?? '')}`);
  return parts.join(' ');
}

/** One text line (without the newline). */
export function formatLine(ev: AnyTraceEvent, ts: number, thread: number, values: ArrayLike<number>, at: number, text: string | undefined): string {
  const fields = formatFields(ev, values, at, text);
  return `${(ts / 1000).toFixed(6)} ${THREADS[thread] ?? `thread${thread}`} ${ev.name}${fields ? ` ${fields}` : ''}`;
}

const CHUNK = 64 * 1024;

/**
 * Text lines to `out` (stderr, a file, a test's array). Lines are gathered into chunks of about
 * 64 KiB written at flush (the ring reader flushes after each batch); `immediate` writes every
 * line at once (events emitted on the consuming thread itself: nobody calls flush).
 */
export class TextTraceConsumer implements TraceConsumer {
  private lines: string[] = [];
  private bytes = 0;

  constructor(
    private readonly out: (text: string) => void | Promise<void>,
    private readonly options: { immediate?: boolean } = {},
  ) {}

  record(ev: AnyTraceEvent, ts: number, thread: number, values: ArrayLike<number>, at: number, text: string | undefined): void {
    const line = formatLine(ev, ts, thread, values, at, text);
    if (this.options.immediate) {
      void this.out(`${line}\n`);
      return;
    }
    this.lines.push(line);
    this.bytes += line.length + 1;
    if (this.bytes >= CHUNK) void this.write();
  }

  flush(): void | Promise<void> {
    return this.write();
  }

  close(): void | Promise<void> {
    return this.write();
  }

  private write(): void | Promise<void> {
    if (this.lines.length === 0) return;
    const text = `${this.lines.join('\n')}\n`;
    this.lines = [];
    this.bytes = 0;
    return this.out(text);
  }
}
