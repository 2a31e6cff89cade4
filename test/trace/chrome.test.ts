/** The Chrome trace-event JSON writer, and the checker the other trace tests rely on. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChromeTraceConsumer, CONTROL_TID, DEVICE_PID, DRIVER_PID } from '../../src/trace/chrome.js';
import { EVENTS, TRACE } from '../../src/trace/events.js';
import { registerTraceDecoders } from '../../src/cli/trace-options.js';
import { checkChromeTrace, type TraceEventJson } from '../helpers/chrome-trace.js';
import { withTracing } from '../helpers/trace-recorder.js';

const ALL = EVENTS.map((e) => e.name);

/** Emits `f`'s events into a ChromeTraceConsumer; returns the parsed file and the chunks written. */
async function chrome(f: () => void): Promise<{ doc: { traceEvents: TraceEventJson[]; otherData: Record<string, unknown> }; chunks: string[] }> {
  const chunks: string[] = [];
  const c = new ChromeTraceConsumer((t) => void chunks.push(t), { otherData: { test: 1 } });
  withTracing(ALL, c, f);
  await c.close();
  return { doc: JSON.parse(chunks.join('')), chunks };
}

describe('Chrome trace JSON', () => {
  it('instants on per-queue tracks, named processes and threads, request spans, occupancy counters', async () => {
    registerTraceDecoders();
    const { doc } = await chrome(() => {
      TRACE.virtio_set_status.emit(1, 15);
      TRACE.vring_add.emit(1, 3, 1, 1, 1, 0);
      TRACE.vring_add.emit(1, 4, 1, 1, 2, 0);
      TRACE.virtqueue_kick.emit(1, 2, 0);
      TRACE.virtqueue_pop.emit(1, 3, 1, 1);
      TRACE.virtqueue_fill.emit(1, 3, 12, 0);
      TRACE.virtqueue_flush.emit(1, 1, 1);
      TRACE.virtqueue_get_buf.emit(1, 3, 12, 1);
    });
    assert.deepEqual(checkChromeTrace(doc), []);
    const ev = doc.traceEvents;
    const meta = (name: string, pid: number, tid?: number) => ev.find((e) => e.ph === 'M' && e.name === name && e.pid === pid && (tid === undefined || e.tid === tid))?.args?.['name'];
    assert.equal(meta('process_name', DRIVER_PID), 'guest: virtio driver');
    assert.equal(meta('process_name', DEVICE_PID), 'device');
    assert.equal(meta('thread_name', DRIVER_PID, 2), 'vq 1');
    assert.equal(meta('thread_name', DEVICE_PID, CONTROL_TID), 'control');
    const status = ev.find((e) => e.name === 'virtio_set_status')!;
    assert.deepEqual([status.ph, status.pid, status.tid, status.args?.['status']], ['i', DEVICE_PID, CONTROL_TID, 'ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK']);
    const pop = ev.find((e) => e.name === 'virtqueue_pop')!;
    assert.deepEqual([pop.pid, pop.tid, pop.args?.['elem']], [DEVICE_PID, 2, 3]);
    const spans = ev.filter((e) => e.ph === 'b' || e.ph === 'e').map((e) => `${e.cat} ${e.name} ${e.ph} ${e.id}`);
    assert.deepEqual(spans, [
      'driver request b 0x10003',
      'driver request b 0x10004',
      'device in device b 0x10003',
      'device in device e 0x10003',
      'driver request e 0x10003',
      'driver request e 0x10004', // still open at the end of the trace: ended, marked aborted
    ]);
    assert.equal(ev.filter((e) => e.ph === 'e').at(-1)!.args?.['aborted'], true);
    const counters = ev.filter((e) => e.ph === 'C').map((e) => `${e.name}=${Object.values(e.args!)[0]}`);
    assert.deepEqual(counters, ['vq1 in flight=2', 'vq1 in device=1', 'vq1 in device=0']);
    assert.equal(doc.otherData['test'], 1);
  });

  it('a reset (status 0) ends the spans still open on both sides', async () => {
    const { doc } = await chrome(() => {
      TRACE.vring_add.emit(0, 1, 1, 1, 1, 0);
      TRACE.virtqueue_pop.emit(0, 1, 1, 1);
      TRACE.virtio_set_status.emit(1, 0);
      TRACE.vring_add.emit(0, 1, 1, 1, 1, 0); // the same head again after the reset
      TRACE.virtqueue_get_buf.emit(0, 1, 0, 1);
    });
    assert.deepEqual(checkChromeTrace(doc), []);
    const ends = doc.traceEvents.filter((e) => e.ph === 'e');
    assert.deepEqual(ends.map((e) => [e.cat, e.args?.['aborted'] ?? false]), [['driver', true], ['device', true], ['driver', false]]);
  });

  it('written as a stream: chunks of bounded size, however many events', async () => {
    const { doc, chunks } = await chrome(() => {
      for (let i = 0; i < 50_000; i++) {
        TRACE.vring_add.emit(0, i % 256, 1, 1, i & 0xffff, 0);
        TRACE.virtqueue_get_buf.emit(0, i % 256, 12, (i + 1) & 0xffff);
      }
    });
    assert.ok(chunks.length > 10, `${chunks.length} chunks`);
    assert.ok(Math.max(...chunks.map((c) => c.length)) < 400_000, 'no chunk holds the whole trace');
    assert.deepEqual(checkChromeTrace(doc), []);
    assert.equal(doc.traceEvents.filter((e) => e.ph === 'b').length, 50_000);
  });
});

describe('the trace checker finds what is wrong', () => {
  const base = (): TraceEventJson[] => [
    { name: 'thread_name', ph: 'M', pid: 1, tid: 1, args: { name: 'x' } },
    { name: 'a', ph: 'i', s: 't', ts: 1, pid: 1, tid: 1 },
    { name: 'r', ph: 'b', cat: 'c', id: '0x1', ts: 2, pid: 1, tid: 1 },
    { name: 'r', ph: 'e', cat: 'c', id: '0x1', ts: 3, pid: 1, tid: 1 },
    { name: 'B', ph: 'B', ts: 4, pid: 1, tid: 1 },
    { name: 'B', ph: 'E', ts: 5, pid: 1, tid: 1 },
  ];
  const check = (events: unknown[]) => checkChromeTrace({ traceEvents: events });
  it('a valid trace has no problems', () => assert.deepEqual(check(base()), []));
  it('a span left open, an end without a begin, a B without its E', () => {
    assert.match(check(base().filter((e) => e.ph !== 'e')).join(), /async span\(s\) left open/);
    assert.match(check(base().filter((e) => e.ph !== 'b')).join(), /e c:0x1 without its b/);
    assert.match(check(base().filter((e) => e.ph !== 'E')).join(), /B without E/);
  });
  it('time going back on a track, missing or bad fields', () => {
    const back = base();
    back[5]!.ts = 0.5;
    assert.match(check(back).join(), /goes back/);
    assert.match(check([{ name: 'a', ph: 'i', pid: 1, tid: 1 }]).join(), /ts undefined is not a time/);
    assert.match(check([{ name: 'a', ph: 'Q', ts: 1, pid: 1, tid: 1 }]).join(), /ph 'Q' unknown/);
    assert.match(check([{ name: 'a', ph: 'b', ts: 1, pid: 1, tid: 1, id: 1 }]).join(), /b without cat/);
    assert.match(check([{ name: 'a', ph: 'C', ts: 1, pid: 1, tid: 1, args: { v: 'x' } }]).join(), /counter args must be numbers/);
    assert.deepEqual(checkChromeTrace([]), ['not a JSON object (Object Format)']);
  });
});
