/**
 * `virtio-backend query PATH [status | queue N | element N [I] | stats] [--json]`: asks a
 * running daemon over its control socket (--control-socket PATH, src/vhost-user/control-server.ts)
 * and prints the answer as readable text, or with --json as the raw JSON line.
 *
 * Exit status: 0 with an answer, 1 for an error answer or when the daemon cannot be reached
 * (no socket, nothing listening, no answer within 2 s), 2 for a bad command line.
 */
import net from 'node:net';
import { existsSync } from 'node:fs';

/** How long the daemon has to answer. */
export const QUERY_TIMEOUT_MS = 2000;

export const QUERY_USAGE = 'query PATH [status | queue N | element N [I] | stats] [--json]';

type Request = { execute: string; arguments?: Record<string, number> };

/** The request for the words after PATH, or a message saying what is wrong. */
export function queryRequest(words: readonly string[]): Request | string {
  const [what = 'status', ...rest] = words;
  const num = (s: string | undefined, name: string): number | string =>
    s !== undefined && /^\d+$/.test(s) && Number(s) <= 0xffff ? Number(s) : `${name} must be a number (0..65535), got '${s ?? ''}'`;
  const arity = (min: number, max: number): string | null =>
    rest.length < min || rest.length > max ? `'${what}' takes ${min === max ? min : `${min} or ${max}`} argument${max === 1 ? '' : 's'}` : null;
  switch (what) {
    case 'status':
    case 'stats': {
      const bad = arity(0, 0);
      return bad ?? { execute: what === 'status' ? 'query-status' : 'query-stats' };
    }
    case 'queue': {
      const bad = arity(1, 1);
      if (bad) return bad;
      const q = num(rest[0], 'the queue');
      return typeof q === 'string' ? q : { execute: 'query-queue-status', arguments: { queue: q } };
    }
    case 'element': {
      const bad = arity(1, 2);
      if (bad) return bad;
      const q = num(rest[0], 'the queue');
      if (typeof q === 'string') return q;
      if (rest[1] === undefined) return { execute: 'query-queue-element', arguments: { queue: q } };
      const i = num(rest[1], 'the index');
      return typeof i === 'string' ? i : { execute: 'query-queue-element', arguments: { queue: q, index: i } };
    }
    default:
      return `unknown query '${what}' (status, queue N, element N [I], stats)`;
  }
}

/** Sends one request line and resolves with the answer line; rejects with a clear message. */
export function sendQuery(socketPath: string, request: object, timeoutMs = QUERY_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    if (!existsSync(socketPath)) {
      reject(new Error(`${socketPath}: no such control socket (is the daemon running with --control-socket ${socketPath}?)`));
      return;
    }
    const socket = net.createConnection({ path: socketPath });
    let buffer = '';
    let done = false;
    const finish = (err: Error | null, line?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(line!);
    };
    const timer = setTimeout(() => finish(new Error(`${socketPath}: the daemon did not answer within ${timeoutMs / 1000} s`)), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl >= 0) finish(null, buffer.slice(0, nl));
    });
    socket.on('error', (e: Error & { code?: string }) => {
      const why = e.code === 'ECONNREFUSED' ? 'nothing listens there (a stale socket?)' : e.code === 'ENOTSOCK' ? 'not a socket' : e.message;
      finish(new Error(`${socketPath}: ${why}`));
    });
    socket.on('close', () => finish(new Error(`${socketPath}: the daemon closed the connection without answering`)));
  });
}

const hex = (n: number): string => `0x${n.toString(16).padStart(16, '0')}`;
/** Members that are guest (or front-end user) addresses: printed in hex. */
const ADDRESS_KEYS = new Set(['vring-desc', 'vring-avail', 'vring-used', 'addr']);

/** An answer's `return` as indented `key: value` lines (QEMU HMP's `info virtio-*` manner). */
export function formatAnswer(value: unknown, indent = 0): string[] {
  const pad = ' '.repeat(indent);
  const lines: string[] = [];
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      if (item !== null && typeof item === 'object') {
        lines.push(`${pad}[${i}]`, ...formatAnswer(item, indent + 2));
      } else lines.push(`${pad}- ${String(item)}`);
    });
    return lines;
  }
  if (value === null || typeof value !== 'object') return [`${pad}${String(value)}`];
  const entries = Object.entries(value as Record<string, unknown>);
  const width = Math.max(0, ...entries.map(([k]) => k.length)) + 2;
  for (const [k, v] of entries) {
    if (Array.isArray(v) && v.every((x) => x === null || typeof x !== 'object')) {
      lines.push(`${pad}${`${k}:`.padEnd(width)}${v.length ? v.join(', ') : '(none)'}`);
    } else if (v !== null && typeof v === 'object') {
      lines.push(`${pad}${k}:`, ...formatAnswer(v, indent + 2));
    } else if (typeof v === 'number' && ADDRESS_KEYS.has(k)) {
      lines.push(`${pad}${`${k}:`.padEnd(width)}${hex(v)}`);
    } else {
      lines.push(`${pad}${`${k}:`.padEnd(width)}${v === null ? '-' : String(v)}`);
    }
  }
  return lines;
}

/**
 * Runs the subcommand (argv after `query`); returns the exit status. `out` gets the answer,
 * `err` the error lines.
 */
export async function runQuery(argv: readonly string[], program: string, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const json = argv.includes('--json');
  const words = argv.filter((a) => a !== '--json');
  if (words.includes('--help') || words.includes('-h')) {
    out(`Usage: ${program} ${QUERY_USAGE}`);
    return 0;
  }
  const bad = words.find((w) => w.startsWith('-'));
  if (bad !== undefined) {
    err(`${program} query: unknown option '${bad}' (usage: ${program} ${QUERY_USAGE})`);
    return 2;
  }
  const [socketPath, ...rest] = words;
  if (socketPath === undefined || socketPath === '') {
    err(`${program} query: the control socket PATH is required (usage: ${program} ${QUERY_USAGE})`);
    return 2;
  }
  const request = queryRequest(rest);
  if (typeof request === 'string') {
    err(`${program} query: ${request}`);
    return 2;
  }
  let line: string;
  try {
    line = await sendQuery(socketPath, request);
  } catch (e) {
    err(`${program} query: ${(e as Error).message}`);
    return 1;
  }
  let parsed: { return?: unknown; error?: { class?: string; desc?: string } };
  try {
    parsed = JSON.parse(line) as typeof parsed;
  } catch {
    err(`${program} query: the daemon's answer is not JSON: ${line.slice(0, 200)}`);
    return 1;
  }
  if (json) out(line);
  if (parsed.error !== undefined) {
    if (!json) err(`${program} query: ${parsed.error.class ?? 'Error'}: ${parsed.error.desc ?? ''}`);
    return 1;
  }
  if (!json) out(formatAnswer(parsed.return).join('\n'));
  return 0;
}
