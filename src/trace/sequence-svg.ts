/**
 * A sequence diagram of a Chrome trace written by `--trace-file` (chrome.ts's layout), as SVG:
 * the picture of docs/walkthrough.md, drawn from the trace itself (`virtio trace-svg`).
 *
 *  - lanes (columns): one per track of the trace, driver side first ("guest: virtio driver ·
 *    vq 0"), then the device's queues and its "control" track (status, MMIO, interrupt line);
 *  - rows: one per event (instants, in trace order), the time since the first shown event on
 *    the left; the diagram is ordinal, not to scale (a device answer takes 1000× a ring write);
 *  - arrows: the kick (virtqueue_kick → the device's virtio_queue_notify of that queue), the
 *    interrupt (virtio_notify → the driver's vring_interrupt) and the guest's register accesses
 *    (driver lane → control lane, virtio_mmio_read / _write_offset);
 *  - spans: each request's "request" span from vring_add to virtqueue_get_buf on the driver
 *    lane, its "in device" span from virtqueue_pop to virtqueue_fill on the device lane;
 *  - a last column: the spec section an event realises and the ring memory it reads or writes.
 *
 * The first N requests are drawn (from the first vring_add; a device-only trace, as the
 * daemon writes, from the first virtqueue_pop), with everything that happened meanwhile on
 * every track. Input that is not such a trace is refused with a TraceSvgError saying what is
 * wrong; nothing here depends on the rest of the project but chrome.ts's constants.
 */
import { CONTROL_TID, DEVICE_PID, DRIVER_PID } from './chrome.js';

export class TraceSvgError extends Error {
  override name = 'TraceSvgError';
}

export interface SequenceSvgOptions {
  /** Requests to draw, from the first (default 1). */
  requests?: number;
  /** Also draw what came before the first request (the device's initialisation). */
  fromStart?: boolean;
  /** A title above the lanes. */
  title?: string;
  /** Most rows (events) drawn; more is refused (default 400). */
  maxRows?: number;
}

/** One instant of the trace, as the diagram uses it. */
export interface TraceInstant {
  name: string;
  ts: number;
  pid: number;
  tid: number;
  args: Record<string, unknown>;
}

export interface ParsedTrace {
  instants: TraceInstant[];
  processNames: Map<number, string>;
  threadNames: Map<string, string>;
}

const laneKey = (pid: number, tid: number): string => `${pid}:${tid}`;

/**
 * Reads a Chrome trace (Object Format `{traceEvents: [...]}` or the bare array) into its
 * instants, sorted by time (stable: ties keep the file's order), and its track names.
 */
export function parseChromeTrace(doc: unknown): ParsedTrace {
  const events = Array.isArray(doc) ? doc : typeof doc === 'object' && doc !== null ? (doc as { traceEvents?: unknown }).traceEvents : undefined;
  if (!Array.isArray(events)) throw new TraceSvgError('not a Chrome trace: expected an object with a traceEvents array (what --trace-file writes)');
  const instants: TraceInstant[] = [];
  const processNames = new Map<number, string>();
  const threadNames = new Map<string, string>();
  events.forEach((raw, i) => {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new TraceSvgError(`traceEvents[${i}] is not an object`);
    const e = raw as Record<string, unknown>;
    if (typeof e['name'] !== 'string') throw new TraceSvgError(`traceEvents[${i}]: name is not a string`);
    if (typeof e['ph'] !== 'string') throw new TraceSvgError(`traceEvents[${i}] (${e['name']}): ph is not a string`);
    const pid = e['pid'];
    const tid = e['tid'];
    if (!Number.isInteger(pid) || !Number.isInteger(tid)) throw new TraceSvgError(`traceEvents[${i}] (${e['name']}): pid and tid must be integers`);
    const args = e['args'] === undefined ? {} : e['args'];
    if (typeof args !== 'object' || args === null || Array.isArray(args)) throw new TraceSvgError(`traceEvents[${i}] (${e['name']}): args is not an object`);
    const a = args as Record<string, unknown>;
    if (e['ph'] === 'M') {
      if (e['name'] === 'process_name' && typeof a['name'] === 'string') processNames.set(pid as number, a['name']);
      if (e['name'] === 'thread_name' && typeof a['name'] === 'string') threadNames.set(laneKey(pid as number, tid as number), a['name']);
      return;
    }
    const ts = e['ts'];
    if (typeof ts !== 'number' || !Number.isFinite(ts)) throw new TraceSvgError(`traceEvents[${i}] (${e['name']}): ts is not a number`);
    if (e['ph'] === 'i' || e['ph'] === 'I') instants.push({ name: e['name'], ts, pid: pid as number, tid: tid as number, args: a });
  });
  // Array.prototype.sort is stable: events of one time keep the order they were written in.
  instants.sort((x, y) => x.ts - y.ts);
  return { instants, processNames, threadNames };
}

/** One request of the diagram: rows (indices into the shown instants) of its ends. */
interface Request {
  vq: number;
  head: number;
  start: number;
  end: number;
  /** The device's part: virtqueue_pop → virtqueue_fill (driver-side requests only). */
  device?: { start: number; end: number };
}

const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);

/** Finds the first `n` requests in `ev` (indices into ev). */
function findRequests(ev: readonly TraceInstant[], n: number): { requests: Request[]; driverSide: boolean } {
  const driverSide = ev.some((e) => e.name === 'vring_add');
  const [open, close, headArg] = driverSide ? ['vring_add', 'virtqueue_get_buf', 'head'] : ['virtqueue_pop', 'virtqueue_fill', 'elem'];
  if (!driverSide && !ev.some((e) => e.name === open)) {
    throw new TraceSvgError("no request in the trace: no vring_add (driver side) and no virtqueue_pop (device side) event; record it with --trace '*' (or at least 'vring_add,virtqueue_*')");
  }
  const requests: Request[] = [];
  for (let i = 0; i < ev.length && requests.length < n; i++) {
    const e = ev[i]!;
    if (e.name !== open) continue;
    const vq = num(e.args['vq']);
    const head = num(e.args[headArg]);
    const same = (x: TraceInstant, name: string, arg: string) => x.name === name && num(x.args['vq']) === vq && num(x.args[arg]) === head;
    let end = ev.findIndex((x, j) => j > i && same(x, close, headArg));
    if (end < 0) end = ev.length - 1; // never taken back within the trace: drawn to the end
    const r: Request = { vq, head, start: i, end };
    if (driverSide) {
      const pop = ev.findIndex((x, j) => j > i && j < end && same(x, 'virtqueue_pop', 'elem'));
      const fill = pop < 0 ? -1 : ev.findIndex((x, j) => j > pop && j <= end && same(x, 'virtqueue_fill', 'elem'));
      if (pop >= 0 && fill >= 0) r.device = { start: pop, end: fill };
    } else {
      // A device-side request ends with the used index published and the notification decided.
      const flush = ev.findIndex((x, j) => j > end && x.name === 'virtqueue_flush' && num(x.args['vq']) === vq);
      if (flush >= 0) {
        end = flush;
        const next = ev[flush + 1];
        if (next && next.name.startsWith('virtio_notify') && num(next.args['vq']) === vq) end = flush + 1;
        r.end = end;
      }
    }
    requests.push(r);
  }
  return { requests, driverSide };
}

/** What an event realises in virtio 1.2, and the ring memory it touches. */
const SPEC: Record<string, string> = {
  vring_add: '§2.7.13.1–3: writes desc table, avail.ring[i], avail.idx',
  virtqueue_kick: '§2.7.13.4, §4.2.3.3: QueueNotify (reads avail_event)',
  virtqueue_kick_suppressed: '§2.7.10: no kick (avail_event / NO_NOTIFY)',
  virtio_queue_notify: '§4.2.3.3: available buffer notification',
  virtqueue_pop: '§2.7.6, §2.7.5: reads avail.ring[i], desc chain',
  virtqueue_fill: '§2.7.8: writes used.ring[idx] = {id, len}',
  virtqueue_flush: '§2.7.8: writes used.idx',
  virtio_notify: '§2.7.7.2: used buffer notification (reads used_event)',
  virtio_notify_suppressed: '§2.7.7.2: no interrupt (used_event / NO_INTERRUPT)',
  virtio_mmio_setting_irq: '§4.2.3.4: interrupt line, InterruptStatus',
  virtio_mmio_read: '§4.2.2: register read',
  virtio_mmio_write_offset: '§4.2.2: register write',
  virtio_set_status: '§2.1, §3.1.1: device status',
  vring_interrupt: '§2.7.14: used buffer notification received',
  virtqueue_get_buf: '§2.7.14: reads used.ring[i], frees the chain',
  virtio_needs_reset: '§2.1.2: DEVICE_NEEDS_RESET',
  virtio_notify_config: '§2.5.1: configuration change notification',
  vhost_user_recv: 'vhost-user: front-end message',
};

const HEX_FIELDS = new Set(['offset', 'value', 'isr', 'flags']);
const HIDDEN_FIELDS = new Set(['thread', 'vdev', 'payload']);

const argText = (k: string, v: unknown): string => (typeof v === 'number' && HEX_FIELDS.has(k) ? `0x${v.toString(16)}` : String(v));

/**
 * The label of an event: its name and its fields, register accesses and status in their words
 * (`vq` left out when the event sits on its queue's lane, which says it).
 */
export function eventLabel(e: TraceInstant): string {
  const a = e.args;
  switch (e.name) {
    case 'virtio_mmio_read':
      return `mmio read ${String(a['reg'] ?? argText('offset', a['offset']))} = ${argText('value', a['value'])}`;
    case 'virtio_mmio_write_offset':
      return `mmio write ${String(a['reg'] ?? argText('offset', a['offset']))} ← ${argText('value', a['value'])}`;
    case 'virtio_set_status':
      return `virtio_set_status ${String(a['status'] ?? a['val'])}`;
    case 'vhost_user_recv':
      return `vhost_user_recv ${String(a['request'] ?? a['req'])}`;
  }
  const decodedOf = new Set(['reg', 'status', 'request']);
  const fields = Object.entries(a)
    .filter(([k]) => !HIDDEN_FIELDS.has(k) && !decodedOf.has(k) && !(k === 'vq' && e.tid !== CONTROL_TID))
    .map(([k, v]) => `${k}=${argText(k, v)}`);
  return [e.name, ...fields].join(' ');
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Layout, px. */
const ROW = 24;
const TIME_W = 92;
const LANE_W = 330;
const NOTE_W = 380;
const DOT = 4;
const LABEL_CHARS = 47;
const NOTE_CHARS = 58;

const clip = (s: string, n: number): string => (s.length <= n ? s : `${s.slice(0, n - 1)}…`);

/**
 * The SVG of the first `requests` requests of a Chrome trace (parsed JSON). Throws a
 * TraceSvgError for input that is not a trace of ours or has no request.
 */
export function renderSequenceSvg(doc: unknown, options: SequenceSvgOptions = {}): string {
  const n = options.requests ?? 1;
  if (!Number.isInteger(n) || n < 1) throw new TraceSvgError(`requests must be a positive integer, got ${n}`);
  const maxRows = options.maxRows ?? 400;
  const trace = parseChromeTrace(doc);
  const all = trace.instants;
  const { requests, driverSide } = findRequests(all, n);
  const first = options.fromStart ? 0 : requests[0]!.start;
  const last = Math.max(...requests.map((r) => r.end));
  const shown = all.slice(first, last + 1);
  if (shown.length > maxRows) {
    throw new TraceSvgError(`${shown.length} events for ${requests.length} request(s), more than ${maxRows} rows: ask for fewer requests`);
  }
  const row = (i: number): number => i - first;

  // Lanes: driver tracks, then device tracks (queues by index, control last), each as used.
  const keys = new Map<string, { pid: number; tid: number }>();
  for (const e of shown) keys.set(laneKey(e.pid, e.tid), { pid: e.pid, tid: e.tid });
  const sideOrder = (pid: number) => (pid === DRIVER_PID ? 0 : pid === DEVICE_PID ? 1 : 2);
  const lanes = [...keys.values()].sort((x, y) => sideOrder(x.pid) - sideOrder(y.pid) || x.pid - y.pid || x.tid - y.tid);
  const laneIndex = new Map(lanes.map((l, i) => [laneKey(l.pid, l.tid), i]));
  const laneOf = (e: TraceInstant): number => laneIndex.get(laneKey(e.pid, e.tid))!;
  const procName = (pid: number) => trace.processNames.get(pid) ?? (pid === DRIVER_PID ? 'driver' : pid === DEVICE_PID ? 'device' : `process ${pid}`);
  const threadName = (pid: number, tid: number) => trace.threadNames.get(laneKey(pid, tid)) ?? (tid === CONTROL_TID ? 'control' : `thread ${tid}`);

  const titleH = options.title ? 30 : 8;
  const headH = 52;
  const top = titleH + headH;
  const laneX = (i: number): number => TIME_W + i * LANE_W + 44;
  const rowY = (r: number): number => top + 18 + r * ROW;
  const noteX = TIME_W + lanes.length * LANE_W + 10;
  const width = noteX + NOTE_W;
  const height = rowY(shown.length - 1) + 40;
  const t0 = shown[0]!.ts;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="11">`,
    '<defs>',
    '<marker id="arrow-kick" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#1f6fd1"/></marker>',
    '<marker id="arrow-irq" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#c2410c"/></marker>',
    '<marker id="arrow-mmio" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker>',
    '</defs>',
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
  );
  if (options.title) out.push(`<text x="10" y="20" font-size="14" font-weight="bold">${esc(options.title)}</text>`);

  // Header, lifelines, alternating row bands.
  out.push(`<g class="header"><text x="10" y="${titleH + 20}" fill="#555">time (µs)</text><text x="${noteX}" y="${titleH + 20}" fill="#555">virtio 1.2 section: ring memory</text></g>`);
  for (let r = 0; r < shown.length; r += 2) out.push(`<rect x="0" y="${rowY(r) - ROW / 2}" width="${width}" height="${ROW}" fill="#f6f7f9"/>`);
  lanes.forEach((l, i) => {
    const x = laneX(i);
    const color = l.pid === DRIVER_PID ? '#1f6fd1' : '#15803d';
    out.push(
      `<g class="lane" data-pid="${l.pid}" data-tid="${l.tid}">`,
      `<text x="${x - 8}" y="${titleH + 20}" font-weight="bold" fill="${color}">${esc(clip(procName(l.pid), LABEL_CHARS))}</text>`,
      `<text x="${x - 8}" y="${titleH + 36}" fill="${color}">${esc(threadName(l.pid, l.tid))}</text>`,
      `<line x1="${x}" y1="${top}" x2="${x}" y2="${height - 16}" stroke="${color}" stroke-opacity="0.45" stroke-dasharray="4 3"/>`,
      '</g>',
    );
  });

  // Spans: bars along the lifelines; spans that overlap in time (requests in flight together)
  // side by side, to the left of the lifeline.
  const slots = new Map<string, number[]>(); // per lane and kind: the row each slot is busy until
  for (const r of requests) {
    const span = (from: number, to: number, name: string, color: string) => {
      const e = all[from]!;
      const x = laneX(laneOf(e));
      const busy = slots.get(`${name}:${laneOf(e)}`) ?? [];
      let k = busy.findIndex((until) => until < from);
      if (k < 0) k = busy.length;
      busy[k] = to;
      slots.set(`${name}:${laneOf(e)}`, busy);
      const y1 = rowY(row(from));
      const y2 = rowY(row(to));
      out.push(`<rect class="span" data-name="${name}" data-vq="${r.vq}" data-head="${r.head}" x="${x - 4 - (k % 4) * 10}" y="${y1}" width="8" height="${Math.max(1, y2 - y1)}" rx="3" fill="${color}" fill-opacity="0.18" stroke="${color}" stroke-opacity="0.6"><title>${esc(`${name} vq=${r.vq} head=${r.head}: ${(all[to]!.ts - all[from]!.ts).toFixed(3)} µs`)}</title></rect>`);
    };
    if (driverSide) {
      span(r.start, r.end, 'request', '#1f6fd1');
      if (r.device) span(r.device.start, r.device.end, 'in device', '#15803d');
    } else {
      span(r.start, r.end, 'in device', '#15803d');
    }
  }

  // Arrows: kick and interrupt to the matching event on the other side; the guest's register accesses.
  const arrow = (from: number, to: number, kind: 'kick' | 'irq' | 'mmio', label: string) => {
    const a = shown[from]!;
    const b = shown[to]!;
    const x1 = laneX(laneOf(a));
    const x2 = laneX(laneOf(b));
    const y1 = rowY(from);
    const y2 = rowY(to);
    const dir = Math.sign(x2 - x1) || 1;
    const color = kind === 'kick' ? '#1f6fd1' : kind === 'irq' ? '#c2410c' : '#888';
    const w = kind === 'mmio' ? 1 : 1.8;
    out.push(`<line class="arrow" data-kind="${kind}" data-from="${esc(a.name)}" data-to="${esc(b.name)}" x1="${x1 + dir * (DOT + 1)}" y1="${y1}" x2="${x2 - dir * (DOT + 2)}" y2="${y2}" stroke="${color}" stroke-width="${w}" marker-end="url(#arrow-${kind})"/>`);
    // The label just before the target, above its row: that row's text is on the target lane.
    if (label) out.push(`<text x="${x2 - dir * 16}" y="${y2 - 7}" text-anchor="${dir > 0 ? 'end' : 'start'}" fill="${color}" font-weight="bold" paint-order="stroke" stroke="#fff" stroke-width="3">${esc(label)}</text>`);
  };
  const driverLane = lanes.findIndex((l) => l.pid === DRIVER_PID);
  shown.forEach((e, i) => {
    const vq = num(e.args['vq']);
    if (e.name === 'virtqueue_kick') {
      const j = shown.findIndex((x, k) => k > i && x.name === 'virtio_queue_notify' && num(x.args['n']) === vq);
      if (j > 0) arrow(i, j, 'kick', 'kick');
    } else if (e.name === 'virtio_notify') {
      const j = shown.findIndex((x, k) => k > i && x.name === 'vring_interrupt' && num(x.args['vq']) === vq);
      if (j > 0) arrow(i, j, 'irq', 'interrupt');
    }
  });
  if (driverLane >= 0) {
    // A register access is the guest's: drawn from the (first) driver lane, on its own row.
    shown.forEach((e, i) => {
      if (e.name !== 'virtio_mmio_read' && e.name !== 'virtio_mmio_write_offset') return;
      const x1 = laneX(driverLane);
      const x2 = laneX(laneOf(e));
      const y = rowY(i);
      out.push(`<line class="arrow" data-kind="mmio" data-from="guest" data-to="${e.name}" x1="${x1 + DOT + 1}" y1="${y}" x2="${x2 - DOT - 2}" y2="${y}" stroke="#888" stroke-width="1" stroke-dasharray="2 2" marker-end="url(#arrow-mmio)"/>`);
    });
  }

  // Events: a dot on the lane, the label beside it, time on the left, the spec and memory note on the right.
  shown.forEach((e, i) => {
    const x = laneX(laneOf(e));
    const y = rowY(i);
    const color = e.pid === DRIVER_PID ? '#1f6fd1' : '#15803d';
    const label = eventLabel(e);
    out.push(
      `<g class="event" data-name="${esc(e.name)}" data-pid="${e.pid}" data-tid="${e.tid}" data-row="${i}">`,
      `<title>${esc(`${e.name} ${JSON.stringify(e.args)}`)}</title>`,
      `<text x="${TIME_W - 10}" y="${y + 4}" text-anchor="end" fill="#666">${(e.ts - t0).toFixed(1)}</text>`,
      `<circle cx="${x}" cy="${y}" r="${DOT}" fill="${color}"/>`,
      `<text x="${x + 10}" y="${y + 4}" paint-order="stroke" stroke="#fff" stroke-width="3">${esc(clip(label, LABEL_CHARS))}</text>`,
      SPEC[e.name] ? `<text x="${noteX}" y="${y + 4}" fill="#444">${esc(clip(SPEC[e.name]!, NOTE_CHARS))}</text>` : '',
      '</g>',
    );
  });

  const what = driverSide ? 'request: vring_add → virtqueue_get_buf; in device: virtqueue_pop → virtqueue_fill' : 'in device: virtqueue_pop → virtqueue_fill, flush and notification';
  out.push(`<text x="10" y="${height - 6}" fill="#666" font-size="10">${esc(`${requests.length} request(s), ${shown.length} events, not to scale (one row per event). Bars: ${what}.`)}</text>`);
  out.push('</svg>');
  return `${out.filter((s) => s !== '').join('\n')}\n`;
}
