/**
 * The emit sites: the ring halves and the runtime emit QEMU's events with the right fields when
 * on, and nothing when off; the text line format.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { emitVhostUserRecv, registerTraceDecoders } from '../../src/cli/trace-options.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE, encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { EVENTS, TRACE } from '../../src/trace/events.js';
import { TextTraceConsumer, formatLine } from '../../src/trace/format.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { DeviceQueue } from '../../src/virtio/device-queue.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';
import { RAM, bringUp, harness } from '../helpers/runtime.js';
import { Recorder, withTracing } from '../helpers/trace-recorder.js';

const ALL = EVENTS.map((e) => e.name);

/** One buffer through both halves of queue 2, in one thread. */
function roundTrip(eventIdx: boolean): void {
  const buf = new SharedArrayBuffer(1 << 16);
  const memory = new GuestMemory([{ guestAddr: 0x1000, size: buf.byteLength, buffer: buf }]);
  const layout = packedLayout(0x1000, 16);
  const drv = new DriverQueue<number>(memory, ringViewsFromGuest(memory, layout), { eventIdx, indirect: false, index: 2 });
  const dev = new DeviceQueue(memory, ringViewsFromGuest(memory, layout), { eventIdx, indirect: false, index: 2 });
  assert.ok(drv.add([{ addr: 0x8000, len: 8 }, { addr: 0x8100, len: 4 }], [{ addr: 0x9000, len: 16 }], 7));
  assert.equal(drv.needsKick(), true);
  const chain = dev.pop()!;
  dev.addUsed(chain.head, 10);
  dev.publishUsed();
  assert.equal(drv.getUsedToken(), 7);
  // a second buffer with kicks suppressed by the device
  dev.disableNotifications();
  assert.ok(drv.add([{ addr: 0x8000, len: 8 }], [], 8));
  assert.equal(drv.needsKick(), false);
}

describe('trace emit sites', () => {
  it('off: the ring halves emit nothing', () => {
    const r = new Recorder();
    withTracing([], r, () => roundTrip(true));
    assert.deepEqual(r.events, []);
  });

  it('on: each half emits its events, QEMU field names, with the values of the operation', () => {
    const r = new Recorder();
    withTracing(ALL, r, () => roundTrip(true));
    assert.deepEqual(r.names(), ['vring_add', 'virtqueue_kick', 'virtqueue_pop', 'virtqueue_fill', 'virtqueue_flush', 'virtqueue_get_buf', 'vring_add', 'virtqueue_kick_suppressed']);
    const [add, kick, pop, fill, flush, get, , suppressed] = r.events.map((e) => e.fields);
    assert.deepEqual(add, { vq: 2, head: 0, out_num: 2, in_num: 1, avail_idx: 1, indirect: 0 });
    assert.deepEqual(kick, { vq: 2, avail_idx: 1, avail_event: 0 });
    assert.deepEqual(pop, { vq: 2, elem: 0, in_num: 1, out_num: 2 });
    assert.deepEqual(fill, { vq: 2, elem: 0, len: 10, idx: 0 });
    assert.deepEqual(flush, { vq: 2, count: 1, used_idx: 1 });
    assert.deepEqual(get, { vq: 2, head: 0, len: 10, used_idx: 1 });
    assert.equal(suppressed!.vq, 2);
    assert.equal(suppressed!.avail_idx, 2);
    // timestamps never go back
    assert.ok(r.events.every((e, i) => i === 0 || e.ts >= r.events[i - 1]!.ts));
  });

  it('only the selected events are emitted', () => {
    const r = new Recorder();
    withTracing(['virtqueue_pop', 'virtqueue_get_buf'], r, () => roundTrip(false));
    assert.deepEqual(r.names(), ['virtqueue_pop', 'virtqueue_get_buf']);
  });

  it('the runtime: set_status, queue_notify, notify (sent and suppressed), needs_reset', () => {
    const h = harness(new VirtioTestDevice({ queueSize: 8, print: false }));
    const r = new Recorder();
    withTracing(['virtio_set_status', 'virtio_queue_notify', 'virtio_notify', 'virtio_notify_suppressed', 'virtio_needs_reset', 'virtqueue_flush'], r, () => {
      const drv = bringUp(h, bit(FeatureBit.VERSION_1) | bit(0));
      const base = RAM + 0x10000;
      h.memory.write(base, encodeRequest(requestFor(10)));
      drv.add([{ addr: base, len: REQUEST_SIZE }], [{ addr: base + REQUEST_SIZE, len: RESPONSE_SIZE }], 1);
      h.runtime.notify(0);
      drv.disableCallbacks(); // NO_INTERRUPT: the next notification is suppressed
      assert.equal(drv.getUsedToken(), 1);
      drv.add([{ addr: base, len: REQUEST_SIZE }], [{ addr: base + REQUEST_SIZE, len: RESPONSE_SIZE }], 2);
      h.runtime.notify(0);
      drv.add([{ addr: base, len: 1 }], [], 3); // too short a request: a device error
      h.runtime.notify(0);
    });
    const vdev = h.runtime.vdev;
    const statuses = r.events.filter((e) => e.name === 'virtio_set_status').map((e) => e.fields.val);
    assert.deepEqual(statuses, [Status.ACKNOWLEDGE, Status.ACKNOWLEDGE | Status.DRIVER, 11, 15]);
    const rest = r.events.filter((e) => e.name !== 'virtio_set_status');
    assert.deepEqual(rest.map((e) => e.name), [
      'virtio_queue_notify', 'virtqueue_flush', 'virtio_notify',
      'virtio_queue_notify', 'virtqueue_flush', 'virtio_notify_suppressed',
      'virtio_queue_notify', 'virtio_needs_reset',
    ]);
    assert.deepEqual(rest[0]!.fields, { vdev, n: 0 });
    assert.deepEqual(rest[2]!.fields, { vdev, vq: 0, used_idx: 1 });
    assert.deepEqual(rest[5]!.fields, { vdev, vq: 0, used_idx: 2, used_event: 0x10000, avail_flags: 1 });
    assert.equal(rest[7]!.fields.vq, 0);
    assert.match(String(rest[7]!.fields.error), /\S/);
  });
});

describe('trace text lines', () => {
  it("QEMU's -trace line style: time (s, µs), thread, name, field=value", () => {
    const lines: string[] = [];
    const out = new TextTraceConsumer((t) => void lines.push(t), { immediate: true });
    withTracing(['virtqueue_pop'], out, () => TRACE.virtqueue_pop.emit(3, 5, 1, 2));
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /^\d+\.\d{6} main virtqueue_pop vq=3 elem=5 in_num=1 out_num=2\n$/);
  });

  it('decoded fields: register names, status names, vhost-user requests; text quoted when needed', () => {
    registerTraceDecoders();
    const line = (name: string, values: number[], text?: string) => formatLine(EVENTS.find((e) => e.name === name)!, 1234.5, 2, values, 0, text);
    assert.equal(line('virtio_mmio_read', [0x70, 4, 0xf]), '1.234500 device virtio_mmio_read offset=0x70 reg=Status size=4 value=0xf');
    assert.equal(line('virtio_mmio_write_offset', [0x104, 1, 1]), '1.234500 device virtio_mmio_write_offset offset=0x104 reg=Config+0x4 value=0x1 size=1');
    assert.equal(line('virtio_set_status', [1, 15]), '1.234500 device virtio_set_status vdev=1 val=15 status=ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK');
    assert.equal(line('virtio_needs_reset', [1, 0xffff], 'bad chain (X)'), '1.234500 device virtio_needs_reset vdev=1 vq=65535 error="bad chain (X)"');
    assert.equal(line('vhost_user_recv', [8, 9, 8, 0], 'ab'), '1.234500 device vhost_user_recv req=8 request=SET_VRING_NUM flags=0x9 size=8 fds=0 payload=ab');

    const r = new Recorder();
    withTracing(['vhost_user_recv'], r, () => emitVhostUserRecv('SET_VRING_NUM flags=0x9 size=8 fds=0 payload=00000000 00010000'));
    assert.deepEqual(r.events[0]!.fields, { req: 8, flags: 9, size: 8, fds: 0, payload: '00000000 00010000' });
  });
});
