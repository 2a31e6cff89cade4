/**
 * The trace rings of the embedded machine: two producing threads, one consumer, merged by time,
 * nothing lost, bounded memory (a ring much smaller than the trace), text fields intact.
 */
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { describe, it } from 'node:test';
import { TRACE, enableEvents } from '../../src/trace/events.js';
import { RingWriter, TraceRingReader, createTraceRing } from '../../src/trace/ring.js';
import { resetTracing, setEmitTarget, threadId, traceClock, wallClockMs } from '../../src/trace/sink.js';
import { Recorder } from '../helpers/trace-recorder.js';

const producer = new URL('../helpers/trace-producer.js', import.meta.url);

function run(sab: SharedArrayBuffer, epochMs: number, count: number, id: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = new Worker(producer, { workerData: { sab, epochMs, count, id } });
    w.once('error', reject);
    w.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`producer exited ${code}`))));
  });
}

describe('trace rings', () => {
  it('two threads through 4 KiB rings: every event arrives, in order per thread and by time overall', { timeout: 60_000 }, async () => {
    const epochMs = wallClockMs();
    const rings = [createTraceRing(4096), createTraceRing(4096)];
    const reader = new TraceRingReader(
      [
        { sab: rings[0]!, thread: threadId('guest') },
        { sab: rings[1]!, thread: threadId('device') },
      ],
      traceClock(epochMs),
    );
    const rec = new Recorder();
    const draining = reader.drain(rec);
    const COUNT = 20_000;
    await Promise.all([run(rings[0]!, epochMs, COUNT, 0), run(rings[1]!, epochMs, COUNT, 1)]);
    reader.stop();
    await draining;
    assert.equal(reader.dropped, 0);
    for (const id of [0, 1]) {
      const pops = rec.events.filter((e) => e.name === 'virtqueue_pop' && e.fields.vq === id);
      assert.equal(pops.length, COUNT, `producer ${id}: all events`);
      assert.ok(pops.every((e, i) => e.fields.elem === i && e.fields.in_num === 1 && e.fields.out_num === 2), `producer ${id}: in order, fields intact`);
      assert.ok(pops.every((e) => e.thread === threadId(id === 0 ? 'guest' : 'device')), 'thread of the ring');
      const texts = rec.events.filter((e) => e.name === 'virtio_needs_reset' && e.fields.vdev === id);
      assert.equal(texts.length, COUNT / 100);
      assert.ok(texts.every((e) => e.fields.error === `message ${e.fields.vq}: ünïcødé ✓`), 'text fields survive the ring');
    }
    const backwards = rec.events.findIndex((e, i) => i > 0 && e.ts < rec.events[i - 1]!.ts);
    assert.equal(backwards, -1, 'merged by time');
  });

  it('after the consumer has stopped, a producer finding its ring full drops instead of waiting', async () => {
    const sab = createTraceRing(4096);
    const reader = new TraceRingReader([{ sab, thread: threadId('main') }], traceClock(wallClockMs()));
    const draining = reader.drain(new Recorder());
    reader.stop();
    await draining;
    enableEvents(['virtqueue_pop']);
    setEmitTarget(new RingWriter(sab, wallClockMs()));
    try {
      const t0 = performance.now();
      for (let i = 0; i < 1000; i++) TRACE.virtqueue_pop.emit(0, i, 0, 0); // 1000 × 48 bytes > 4096
      assert.ok(performance.now() - t0 < 1000, 'no waiting for a consumer that is gone');
    } finally {
      resetTracing();
    }
    assert.equal(new Int32Array(sab, 0, 8)[5]! > 0, true, 'the dropped events are counted');
  });
});
