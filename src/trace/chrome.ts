/**
 * Chrome trace-event JSON (the "JSON Object Format" that Perfetto's UI and chrome://tracing
 * load as is), written as a stream: memory is one output chunk plus the requests in flight,
 * however long the trace.
 *
 * Layout:
 *  - one process per side: pid 1 the driver (guest), pid 2 the device; named by metadata
 *    events ("M" process_name / thread_name);
 *  - one thread track per queue and side ("vq 0", "vq 1", …) and a "control" track for events
 *    that name no queue (status, MMIO, vhost-user): each event an instant ("i", scope thread)
 *    with its fields as args (decoded names included);
 *  - a span per request: driver side an async span "request" (cat "driver") from vring_add to
 *    virtqueue_get_buf, device side "in device" (cat "device") from virtqueue_pop to
 *    virtqueue_fill; ids are the queue and head, unique while in flight. A reset (status 0) or
 *    a device error ends the spans still open (args.aborted), and so does the end of the trace;
 *  - counters ("C") of queue occupancy: driver "vqN in flight" (added, not yet taken back) at
 *    each kick decision and interrupt, and when the last buffer is taken back; device "vqN in device" (popped, not yet published) at
 *    each pop and each flush (a sawtooth whose teeth are the publication batches).
 */
import { TRACE, type AnyTraceEvent } from './events.js';
import { decode } from './format.js';
import { THREADS, type TraceConsumer } from './sink.js';

export const DRIVER_PID = 1;
export const DEVICE_PID = 2;
/** The track of events that name no queue. */
export const CONTROL_TID = 100000;

export interface ChromeTraceOptions {
  /** Process names (default "guest: virtio driver" and "device"). */
  driverName?: string;
  deviceName?: string;
  /** Extra fields for the file's `otherData` object. */
  otherData?: Record<string, string | number | boolean>;
}

const CHUNK = 256 * 1024;

interface Open {
  ts: number;
  tid: number;
}

/** ts in µs with ns digits. */
const us = (ms: number): string => (Math.round(ms * 1e6) / 1e3).toString();

export class ChromeTraceConsumer implements TraceConsumer {
  private parts: string[] = [];
  private bytes = 0;
  private first = true;
  private readonly named = new Set<number>();
  /** Open spans by side: key queue * 65536 + head. */
  private readonly open: [Map<number, Open>, Map<number, Open>] = [new Map(), new Map()];
  /** Per side and queue: buffers in flight (driver) / in the device. */
  private readonly occupancy: [Map<number, number>, Map<number, number>] = [new Map(), new Map()];
  private lastTs = 0;
  private closed = false;

  constructor(
    private readonly out: (text: string) => void | Promise<void>,
    private readonly options: ChromeTraceOptions = {},
  ) {
    this.parts.push('{"traceEvents":[\n');
  }

  record(ev: AnyTraceEvent, ts: number, thread: number, values: ArrayLike<number>, at: number, text: string | undefined): void {
    if (ts > this.lastTs) this.lastTs = ts;
    const side = ev.side === 'driver' ? 0 : 1;
    const pid = side === 0 ? DRIVER_PID : DEVICE_PID;
    const q = ev.queueField >= 0 ? values[at + ev.queueField]! : -1;
    const tid = q >= 0 && q < 0xffff ? q + 1 : CONTROL_TID;
    this.name(pid, tid);
    this.push(`{"name":"${ev.name}","cat":"${ev.side}","ph":"i","s":"t","ts":${us(ts)},"pid":${pid},"tid":${tid},"args":${this.args(ev, thread, values, at, text)}}`);
    switch (ev) {
      case TRACE.vring_add as AnyTraceEvent:
        this.begin(0, q, values[at + 1]!, ts, tid, 'request');
        this.count(0, q, +1);
        break;
      case TRACE.virtqueue_get_buf as AnyTraceEvent:
        this.end(0, q, values[at + 1]!, ts, `{"len":${values[at + 2]}}`);
        this.count(0, q, -1);
        // The last buffer taken back: the queue is empty, which no later kick may say.
        if ((this.occupancy[0].get(q) ?? 0) === 0) this.counter(0, q, ts);
        break;
      case TRACE.virtqueue_pop as AnyTraceEvent:
        this.begin(1, q, values[at + 1]!, ts, tid, 'in device');
        this.count(1, q, +1);
        this.counter(1, q, ts);
        break;
      case TRACE.virtqueue_fill as AnyTraceEvent:
        this.end(1, q, values[at + 1]!, ts, `{"len":${values[at + 2]}}`);
        break;
      case TRACE.virtqueue_flush as AnyTraceEvent:
        this.count(1, q, -values[at + 1]!);
        this.counter(1, q, ts);
        break;
      case TRACE.virtqueue_kick as AnyTraceEvent:
      case TRACE.virtqueue_kick_suppressed as AnyTraceEvent:
      case TRACE.vring_interrupt as AnyTraceEvent:
        this.counter(0, q, ts);
        break;
      case TRACE.virtio_set_status as AnyTraceEvent:
        if (values[at + 1] === 0) {
          this.abortAll(0, ts);
          this.abortAll(1, ts);
        }
        break;
      case TRACE.virtio_needs_reset as AnyTraceEvent:
        this.abortAll(1, ts);
        break;
    }
    if (this.bytes >= CHUNK) void this.write();
  }

  flush(): void | Promise<void> {
    return this.write();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.abortAll(0, this.lastTs);
    this.abortAll(1, this.lastTs);
    const other = { tool: 'virtio-ts', clock: 'ms since the trace epoch, as µs', ...this.options.otherData };
    this.parts.push(`\n],"displayTimeUnit":"ns","otherData":${JSON.stringify(other)}}\n`);
    this.first = true;
    await this.write();
  }

  private push(json: string): void {
    if (this.first) this.first = false;
    else this.parts.push(',\n');
    this.parts.push(json);
    this.bytes += json.length + 2;
  }

  private write(): void | Promise<void> {
    if (this.parts.length === 0) return;
    const text = this.parts.join('');
    this.parts = [];
    this.bytes = 0;
    return this.out(text);
  }

  private args(ev: AnyTraceEvent, thread: number, values: ArrayLike<number>, at: number, text: string | undefined): string {
    let s = `{"thread":"${THREADS[thread] ?? thread}"`;
    const fields = ev.fields;
    for (let i = 0; i < ev.numericCount; i++) {
      const f = fields[i]!;
      const v = values[at + i]!;
      s += `,"${f.name}":${Number.isFinite(v) ? v : null}`;
      if (f.decode) {
        const d = decode(f, v);
        if (d !== undefined) s += `,"${f.decode.as}":${JSON.stringify(d)}`;
      }
    }
    if (ev.hasText) s += `,"${fields[ev.numericCount]!.name}":${JSON.stringify(text ?? '')}`;
    return `${s}}`;
  }

  /** process_name / thread_name metadata the first time a track is used. */
  private name(pid: number, tid: number): void {
    const key = pid * 0x100000 + tid;
    if (this.named.has(key)) return;
    if (!this.named.has(pid * 0x100000)) {
      this.named.add(pid * 0x100000);
      const pname = pid === DRIVER_PID ? (this.options.driverName ?? 'guest: virtio driver') : (this.options.deviceName ?? 'device');
      this.push(`{"name":"process_name","ph":"M","pid":${pid},"tid":0,"args":{"name":${JSON.stringify(pname)}}}`);
      this.push(`{"name":"process_sort_index","ph":"M","pid":${pid},"tid":0,"args":{"sort_index":${pid}}}`);
    }
    this.named.add(key);
    const tname = tid === CONTROL_TID ? 'control' : `vq ${tid - 1}`;
    this.push(`{"name":"thread_name","ph":"M","pid":${pid},"tid":${tid},"args":{"name":"${tname}"}}`);
    this.push(`{"name":"thread_sort_index","ph":"M","pid":${pid},"tid":${tid},"args":{"sort_index":${tid}}}`);
  }

  private spanId(q: number, head: number): string {
    return `0x${(q * 0x10000 + head).toString(16)}`;
  }

  private begin(side: 0 | 1, q: number, head: number, ts: number, tid: number, name: string): void {
    const key = q * 0x10000 + head;
    const map = this.open[side];
    if (map.has(key)) this.endKey(side, key, ts, '{"aborted":true}');
    map.set(key, { ts, tid });
    const cat = side === 0 ? 'driver' : 'device';
    this.push(`{"name":"${name}","cat":"${cat}","ph":"b","id":"${this.spanId(q, head)}","ts":${us(ts)},"pid":${side === 0 ? DRIVER_PID : DEVICE_PID},"tid":${tid},"args":{"vq":${q},"head":${head}}}`);
  }

  private end(side: 0 | 1, q: number, head: number, ts: number, args: string): void {
    this.endKey(side, q * 0x10000 + head, ts, args);
  }

  private endKey(side: 0 | 1, key: number, ts: number, args: string): void {
    const map = this.open[side];
    const o = map.get(key);
    if (!o) return; // begun before the trace started, or not traced
    map.delete(key);
    const q = Math.floor(key / 0x10000);
    const cat = side === 0 ? 'driver' : 'device';
    const name = side === 0 ? 'request' : 'in device';
    this.push(`{"name":"${name}","cat":"${cat}","ph":"e","id":"${this.spanId(q, key % 0x10000)}","ts":${us(Math.max(ts, o.ts))},"pid":${side === 0 ? DRIVER_PID : DEVICE_PID},"tid":${o.tid},"args":${args}}`);
  }

  private abortAll(side: 0 | 1, ts: number): void {
    for (const key of [...this.open[side].keys()]) this.endKey(side, key, ts, '{"aborted":true}');
    this.occupancy[side].clear();
  }

  private count(side: 0 | 1, q: number, delta: number): void {
    const m = this.occupancy[side];
    m.set(q, Math.max(0, (m.get(q) ?? 0) + delta));
  }

  private counter(side: 0 | 1, q: number, ts: number): void {
    if (!(q >= 0 && q < 0xffff)) return;
    const n = this.occupancy[side].get(q) ?? 0;
    const label = side === 0 ? 'in flight' : 'in device';
    this.push(`{"name":"vq${q} ${label}","ph":"C","ts":${us(ts)},"pid":${side === 0 ? DRIVER_PID : DEVICE_PID},"tid":${q + 1},"args":{"${label}":${n}}}`);
  }
}
