/**
 * The commands of the back-end's control socket (control-server.ts), modelled on QEMU's QMP
 * (docs/interop/qmp-spec: `{"execute": NAME, "arguments": {...}, "id": ANY}` answered by
 * `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}`, the id echoed) and its virtio
 * queries (qapi/virtio.json):
 *
 *   query-status                          x-query-virtio-status: status, features, queues, front-end
 *   query-queue-status {queue}            x-query-virtio-queue-status: indices, suppression, counters
 *   query-queue-element {queue, index?}   x-query-virtio-queue-element: one chain, not taken
 *   query-stats                           the counters, device totals and per queue
 *
 * Error classes are QMP's where it has one (GenericError, CommandNotFound, DeviceNotActive), and
 * VirtioError (with the rule's `code` and `section`) for a chain that breaks a rule. Nothing a
 * client sends can throw out of answer(): every failure becomes an error answer.
 */
import { isVirtioError } from '../virtio/errors.js';
import type { DeviceStats } from '../device/runtime.js';
import { deviceStatusJson, elementJson, queueStatusJson, statsJson, type Json } from '../device/status-json.js';
import type { BackendSession } from './backend-session.js';

/** What the commands read: the device's name and the current connection. */
export interface ControlTarget {
  /** The device's registry name (the `name` member of the answers). */
  readonly name: string;
  readonly deviceId: number;
  readonly session: BackendSession | null;
  /** Front-ends accepted so far. */
  readonly connections: number;
}

export type ControlAnswer = { return: Json; id?: Json } | { error: { class: string; desc: string; [key: string]: Json }; id?: Json };

export const CONTROL_COMMANDS = ['query-status', 'query-queue-status', 'query-queue-element', 'query-stats', 'query-commands'] as const;

class CommandError extends Error {
  constructor(
    readonly errorClass: string,
    message: string,
    readonly extra: { [key: string]: Json } = {},
  ) {
    super(message);
  }
}

/** Answers one request line (without its newline). */
export function answerLine(line: string, target: ControlTarget): ControlAnswer {
  let request: unknown;
  try {
    request = JSON.parse(line);
  } catch (e) {
    return { error: { class: 'GenericError', desc: `JSON parse error: ${(e as Error).message}` } };
  }
  return answer(request, target);
}

/** Answers one parsed request. */
export function answer(request: unknown, target: ControlTarget): ControlAnswer {
  const id = request !== null && typeof request === 'object' && 'id' in request ? ((request as { id: Json }).id ?? null) : undefined;
  const withId = <T extends object>(a: T): T & { id?: Json } => (id === undefined ? a : { ...a, id });
  try {
    return withId({ return: run(request, target) });
  } catch (e) {
    if (e instanceof CommandError) return withId({ error: { class: e.errorClass, desc: e.message, ...e.extra } });
    if (isVirtioError(e)) return withId({ error: { class: 'VirtioError', desc: e.message, code: e.code, section: e.section ?? null } });
    return withId({ error: { class: 'GenericError', desc: e instanceof Error ? e.message : String(e) } });
  }
}

function run(request: unknown, target: ControlTarget): Json {
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    throw new CommandError('GenericError', 'a request is a JSON object: {"execute": "query-status"}');
  }
  const r = request as { execute?: unknown; arguments?: unknown };
  if (typeof r.execute !== 'string') throw new CommandError('GenericError', 'the request has no "execute" member naming a command');
  const args = r.arguments ?? {};
  if (args === null || typeof args !== 'object' || Array.isArray(args)) throw new CommandError('GenericError', '"arguments" must be an object');
  const a = args as Record<string, unknown>;
  switch (r.execute) {
    case 'query-commands':
      onlyArguments(a, []);
      return CONTROL_COMMANDS.map((name) => ({ name }));
    case 'query-status':
      onlyArguments(a, []);
      return status(target);
    case 'query-stats': {
      onlyArguments(a, []);
      const s = live(target).runtime.stats();
      return { name: target.name, connections: target.connections, ...statsJson(s) };
    }
    case 'query-queue-status': {
      onlyArguments(a, ['queue']);
      const session = live(target);
      const q = queueArgument(a, session.runtime.stats());
      const v = session.vrings[q];
      return queueStatusJson(target.name, session.runtime.queueStatus(q), session.runtime.packed, v?.addresses ?? null);
    }
    case 'query-queue-element': {
      onlyArguments(a, ['queue', 'index']);
      const session = live(target);
      const q = queueArgument(a, session.runtime.stats());
      let index: number | undefined;
      if (a['index'] !== undefined) {
        const i = a['index'];
        if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i > 0xffff) {
          throw new CommandError('GenericError', `"index" must be a descriptor index (0..65535), got ${JSON.stringify(i)}`);
        }
        index = i;
      }
      const vq = session.runtime.activeQueue(q);
      if (vq === null) throw new CommandError('DeviceNotActive', `queue ${q} is not running (no started ring, or the device needs a reset)`);
      const e = vq.element(index);
      if (e === null) throw new CommandError('GenericError', `queue ${q} has no available buffer (last-avail-idx ${vq.nextAvail})`);
      return elementJson(target.name, q, e, session.runtime.packed);
    }
    default:
      throw new CommandError('CommandNotFound', `The command ${r.execute} has not been found (known: ${CONTROL_COMMANDS.join(', ')})`);
  }
}

function status(target: ControlTarget): Json {
  const session = target.session;
  if (session === null || session.isClosed) {
    return { name: target.name, 'device-id': target.deviceId, connected: false, connections: target.connections };
  }
  const s = session.runtime.stats();
  return {
    ...deviceStatusJson(target.name, s),
    connected: true,
    connections: target.connections,
    'vhost-user-features': `0x${(session.ackedFeatures ?? 0n).toString(16).padStart(16, '0')}`,
    'protocol-features': `0x${session.protocolFeatures.toString(16).padStart(16, '0')}`,
    queues: s.queues.map((q) => {
      const v = session.vrings[q.index];
      return { 'queue-index': q.index, 'vring-num': q.size, started: v?.started ?? false, enabled: v?.enabled ?? false, active: q.active };
    }),
  };
}

function live(target: ControlTarget): BackendSession {
  const session = target.session;
  if (session === null || session.isClosed) throw new CommandError('DeviceNotActive', 'no front-end is connected');
  return session;
}

function queueArgument(a: Record<string, unknown>, s: DeviceStats): number {
  const q = a['queue'];
  if (q === undefined) throw new CommandError('GenericError', 'parameter "queue" is missing');
  if (typeof q !== 'number' || !Number.isInteger(q) || q < 0 || q >= s.queues.length) {
    throw new CommandError('GenericError', `Invalid parameter "queue": ${JSON.stringify(q)} is not a queue of this device (it has ${s.queues.length}: 0..${s.queues.length - 1})`);
  }
  return q;
}

function onlyArguments(a: Record<string, unknown>, known: readonly string[]): void {
  for (const k of Object.keys(a)) {
    if (!known.includes(k)) throw new CommandError('GenericError', `Parameter "${k}" is unexpected`);
  }
}
