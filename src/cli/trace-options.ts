/**
 * `--trace` and `--trace-file` for both commands (`virtio` on the embedded machine, the
 * `virtio-backend` daemon): parsing QEMU-style patterns into event names, the decoders that give
 * trace lines their names (MMIO registers, status bits, vhost-user requests), and the output:
 * text lines on stderr, or a Chrome trace-event JSON file written as a stream.
 *
 *   --trace 'virtqueue_*'            globs, comma-separated or the option repeated
 *   --trace 'virtio_*,-virtio_mmio_*' a leading '-' excludes
 *   --trace events=FILE              one pattern per line, # comments
 *   --trace                          alone: the command's default selection
 *   --trace help                     lists the events
 *   --trace-file out.json            Chrome JSON instead of text lines
 */
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { Request, requestName } from '../vhost-user/protocol.js';
import { mmioRegisterName } from '../machine/mmio-registers.js';
import { statusNames } from '../virtio/constants.js';
import { ChromeTraceConsumer, type ChromeTraceOptions } from '../trace/chrome.js';
import { DECODERS, TRACE } from '../trace/events.js';
import { TextTraceConsumer, setDecoder } from '../trace/format.js';
import { TraceSelectionError, describeEvents, selectEvents } from '../trace/select.js';
import type { TraceConsumer } from '../trace/sink.js';

/** The parseArgs configuration of the two options. */
export const TRACE_OPTIONS = {
  trace: { type: 'string', multiple: true },
  'trace-file': { type: 'string' },
} as const;

/** Help rows for the two options (left column, description). */
export function traceHelpRows(bare: string): [string, string][] {
  return [
    [
      '--trace [PATTERN]',
      `trace events, QEMU's -trace style: globs ('virtqueue_*'), comma-separated or repeated, '-' to exclude, events=FILE (one pattern per line, # comments); alone: '${bare}'; 'help' lists the events. Lines go to stderr: time (s), thread, name, field=value …`,
    ],
    ['--trace-file FILE', 'write the trace as Chrome trace-event JSON (Perfetto, chrome://tracing) to FILE instead of text lines; without --trace, traces what --trace alone does'],
  ];
}

/** A word of a --trace value: a pattern (letters, digits, _, * and ?), maybe excluded with '-'. */
const PATTERN = /^-?[A-Za-z_*?][A-Za-z0-9_*?]*$/;

/** Whether `arg` (the word after a bare --trace) is the option's value rather than the next option or argument. */
export function isTraceValue(arg: string): boolean {
  if (arg === 'help' || arg.startsWith('events=')) return true;
  if (/^-[A-Za-z]$/.test(arg)) return false; // a short option (-h, -s)
  return arg.split(',').every((p) => PATTERN.test(p.trim()) || p.trim().startsWith('events='));
}

/**
 * The command line with every `--trace` given its value inline: `--trace PATTERN` becomes
 * `--trace=PATTERN` (so a pattern starting with '-' is not taken for an option), and a bare
 * `--trace` (followed by nothing, an option, or an argument that is no pattern, such as
 * `virtio --trace 10`) becomes `--trace=BARE`.
 */
export function normalizeTraceArgs(args: readonly string[], bare: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      out.push(...args.slice(i));
      break;
    }
    if (a !== '--trace') {
      out.push(a);
      continue;
    }
    const next = args[i + 1];
    if (next !== undefined && isTraceValue(next)) {
      out.push(`--trace=${next}`);
      i++;
    } else {
      out.push(`--trace=${bare}`);
    }
  }
  return out;
}

export interface TraceRequest {
  /** Event names selected (empty: tracing off). */
  events: string[];
  /** --trace-file, if given. */
  file?: string;
  /** `--trace help` was asked for: print describeEvents() and exit. */
  help: boolean;
}

/** The selection from parsed values; throws TraceSelectionError for patterns that match nothing. */
export function traceRequest(values: { trace?: unknown; 'trace-file'?: unknown }, bare: string): TraceRequest {
  const raw = values.trace;
  const given = raw === undefined ? [] : Array.isArray(raw) ? raw.map(String) : [String(raw)];
  const file = typeof values['trace-file'] === 'string' ? values['trace-file'] : undefined;
  if (file === '') throw new TraceSelectionError('--trace-file needs a file name');
  if (given.includes('help')) return { events: [], help: true };
  const patterns = given.length === 0 && file !== undefined ? [bare] : given;
  const events = patterns.length === 0 ? [] : selectEvents(patterns, { readFile: (p) => readFileSync(p, 'utf8') });
  return { events, help: false, ...(file !== undefined ? { file } : {}) };
}

export { TraceSelectionError, describeEvents };

/** Names for decoded fields, in the thread that writes the output. */
export function registerTraceDecoders(): void {
  setDecoder(DECODERS.mmioRegister, mmioRegisterName);
  setDecoder(DECODERS.status, statusNames);
  setDecoder(DECODERS.vhostUserRequest, (code) => requestName(code));
}

/** Writes to stderr, waiting for a full pipe (the ring's producers wait meanwhile). */
function writeStderr(text: string): void | Promise<void> {
  if (process.stderr.write(text)) return;
  return new Promise((resolve) => {
    const done = () => {
      process.stderr.off('drain', done).off('error', done).off('close', done);
      resolve();
    };
    process.stderr.on('drain', done).on('error', done).on('close', done);
  });
}

export interface TraceOutput {
  consumer: TraceConsumer;
  /** Ends the trace (closes a JSON file). */
  close(): Promise<void>;
}

/**
 * The consumer for a request: a Chrome JSON file (written with synchronous writes of 256 KiB
 * chunks: memory stays bounded) or text lines on stderr. `immediate`: events are emitted on this
 * thread (the daemon), so text lines are written at once rather than per batch.
 */
export function openTraceOutput(req: TraceRequest, options: ChromeTraceOptions & { immediate?: boolean } = {}): TraceOutput {
  registerTraceDecoders();
  if (req.file === undefined) {
    const consumer = new TextTraceConsumer(writeStderr, { immediate: options.immediate ?? false });
    return { consumer, close: async () => consumer.close() ?? undefined };
  }
  const fd = openSync(req.file, 'w');
  const write = (text: string): void => {
    const buf = Buffer.from(text);
    for (let at = 0; at < buf.length; ) at += writeSync(fd, buf, at);
  };
  const consumer = new ChromeTraceConsumer(write, { ...options, otherData: { events: req.events.join(','), ...options.otherData } });
  let closed = false;
  return {
    consumer,
    async close() {
      if (closed) return;
      closed = true;
      await consumer.close();
      closeSync(fd);
    },
  };
}

const RECV = /^(\S+) flags=0x([0-9a-f]+) size=(\d+) fds=(\d+)(?: payload=(.*))?$/;
const REQUEST_CODES: ReadonlyMap<string, number> = new Map(Object.entries(Request));

/**
 * The backend session's trace line for a request received (`SET_VRING_NUM flags=0x9 size=8
 * fds=0 payload=…`) as a vhost_user_recv event with decoded fields.
 */
export function emitVhostUserRecv(line: string): void {
  if (!TRACE.vhost_user_recv.enabled) return;
  const m = RECV.exec(line);
  if (!m) {
    TRACE.vhost_user_recv.emit(NaN, NaN, NaN, NaN, line);
    return;
  }
  const name = m[1]!;
  const code = REQUEST_CODES.get(name) ?? (/^request (\d+)$/.exec(name) ? Number(name.slice(8)) : NaN);
  TRACE.vhost_user_recv.emit(code, parseInt(m[2]!, 16), Number(m[3]), Number(m[4]), m[5] ?? '');
}
