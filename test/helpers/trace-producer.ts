/** A worker that emits `count` trace events into a trace ring (test/trace/ring.test.ts). */
import { workerData } from 'node:worker_threads';
import { TRACE } from '../../src/trace/events.js';
import { startRingTracing } from '../../src/trace/ring.js';

const { sab, epochMs, count, id } = workerData as { sab: SharedArrayBuffer; epochMs: number; count: number; id: number };
startRingTracing(sab, epochMs, ['virtqueue_pop', 'virtio_needs_reset']);
for (let i = 0; i < count; i++) {
  if (TRACE.virtqueue_pop.enabled) TRACE.virtqueue_pop.emit(id, i, 1, 2);
  if (i % 100 === 0 && TRACE.virtio_needs_reset.enabled) TRACE.virtio_needs_reset.emit(id, i, `message ${i}: ünïcødé ✓`);
}
