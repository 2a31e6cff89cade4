/**
 * DeviceRuntime.stats() as the text of `virtio --stats` (status-text.ts, in the manner of QEMU's
 * HMP `info virtio-status` / `info virtio-queue-status`) and as the JSON of the vhost-user control
 * socket (status-json.ts, QMP's x-query-virtio-status / -queue-status / -queue-element member
 * names). Users and scripts read these: the exact output of a known state is checked, a served
 * queue (with its event-suppression fields) and a stopped one (no ring state).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { countersJson, deviceStatusJson, elementJson, queueStatusJson, statsJson } from '../../src/device/status-json.js';
import { featureList, formatDeviceStats } from '../../src/device/status-text.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { PackedDriverQueue } from '../../src/virtio/packed-driver-queue.js';
import { packedRingLayout, packedRingViewsFromGuest } from '../../src/virtio/packed-ring.js';
import { RAM, answeringWith, bringUp, harness } from '../helpers/runtime.js';

const FEATURES = bit(FeatureBit.VERSION_1) | bit(0) | bit(FeatureBit.RING_EVENT_IDX);

/** One request served with EVENT_IDX, a second one made available and not yet kicked. */
function served() {
  const h = harness(new VirtioTestDevice({ print: false }));
  const d = bringUp(h, FEATURES);
  d.add([{ addr: RAM + 0x8000, len: 48 }], [{ addr: RAM + 0x8100, len: 12 }], 1);
  h.runtime.notify(0);
  d.add([{ addr: RAM + 0x9000, len: 48 }], [{ addr: RAM + 0x9100, len: 12 }], 2);
  return { h, d };
}

test('featureList: transport bits by name, device bits by the device\'s names or by number, (none) for 0', () => {
  assert.equal(featureList('0x0000000530000001'), 'bit 0, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTIO_F_RING_PACKED');
  assert.equal(featureList('0x8000000000000000'), 'bit 63');
  assert.equal(featureList('0x0000000000000000'), '(none)');
  // The device's own bits by the names its model gives (VirtioDevice.featureNames).
  assert.equal(featureList('0x0000000100000204', { 2: 'VIRTIO_BLK_F_SEG_MAX', 9: 'VIRTIO_BLK_F_FLUSH' }), 'VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_FLUSH, VIRTIO_F_VERSION_1');
  assert.equal(featureList('0x0000000000000008', { 2: 'VIRTIO_BLK_F_SEG_MAX' }), 'bit 3', 'a bit the device does not name');
});

test('virtio --stats text of a served queue', () => {
  const { h } = served();
  const s = h.runtime.stats();
  assert.equal(
    formatDeviceStats(s, 'virtio-test'),
    `virtio-test:
  device_id:              45
  vdev:                   ${s.vdev}
  num_vqs:                1
  broken:                 false
  status:                 0xf (ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK)
  config_generation:      0
  config_notifications:   0
  errors:                 0
  device_features:        0x0000000530000001 VIRTIO_TEST_F_CAN_PRINT, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTIO_F_RING_PACKED
  guest_features:         0x0000000120000001 VIRTIO_TEST_F_CAN_PRINT, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1
  requests:               1
  bytes:                  48 read, 12 written
  notifications:          1 sent, 0 suppressed
  kicks:                  1
virtio-test virtqueue 0:
  queue_index:            0
  ready:                  true
  active:                 true
  inuse:                  0
  held_by_device:         0
  last_avail_idx:         1
  shadow_avail_idx:       1
  avail_idx:              2
  used_idx:               1
  published_used_idx:     1
  signalled_used:         1
  signalled_used_valid:   true
  event_idx:              true
  avail_flags:            0x0
  used_flags:             0x0
  used_event:             0
  avail_event:            1
  kicks_enabled:          true
  VRing:
    num:          8
    num_default:  256
    desc:         0x0000000000100000
    avail:        0x0000000000100080
    used:         0x0000000000100098
  Counters:
    requests:       1
    bytes_read:     48
    bytes_written:  12
    kicks:          1
    flushes:        1
    notifications:  1 sent, 0 suppressed
    errors:         0`,
  );
  assert.ok(formatDeviceStats(s).startsWith('device:\n'), 'the default name');
});

test('virtio --stats text: suppression flags by name, a stopped queue without ring state, features before FEATURES_OK', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const d = bringUp(h, bit(FeatureBit.VERSION_1) | bit(0));
  d.disableCallbacks(); // VIRTQ_AVAIL_F_NO_INTERRUPT
  h.runtime.activeQueue(0)!.disableNotifications(); // VIRTQ_USED_F_NO_NOTIFY
  let text = formatDeviceStats(h.runtime.stats());
  assert.match(text, /\n {2}avail_flags: {12}0x1 \(NO_INTERRUPT\)\n {2}used_flags: {13}0x1 \(NO_NOTIFY\)\n {2}used_event: {13}-\n {2}avail_event: {12}-\n {2}kicks_enabled: {10}false\n/);
  h.runtime.deviceError(new Error('x'), 0);
  text = formatDeviceStats(h.runtime.stats());
  assert.match(text, /\n {2}broken: {17}true\n {2}status: {17}0x4f \(ACKNOWLEDGE\|DRIVER\|DRIVER_OK\|FEATURES_OK\|NEEDS_RESET\)\n/);
  assert.match(text, /\n {2}active: {17}false\n {2}inuse: {18}0\n {2}held_by_device: {9}0\n {2}last_avail_idx: {9}-\n {2}shadow_avail_idx: {7}-\n {2}avail_idx: {14}-\n {2}used_idx: {15}-\n {2}published_used_idx: {5}-\n {2}signalled_used: {9}-\n {2}signalled_used_valid: {3}-\n {2}VRing:\n/);
  assert.match(text, /\n {2}errors: {17}1\n/);
  assert.match(text, /\n {4}errors: {9}1$/);
  h.runtime.writeStatus(0);
  h.runtime.writeDriverFeatures(bit(FeatureBit.VERSION_1));
  assert.match(formatDeviceStats(h.runtime.stats()), /\n {2}driver_features: {8}0x0000000100000000 VIRTIO_F_VERSION_1\n/);
  h.runtime.writeDriverFeatures(0n);
  assert.match(formatDeviceStats(h.runtime.stats()), /\n {2}driver_features: {8}0x0000000000000000 \(none\)\n/);
});

test('control-socket JSON of a served queue: x-query-virtio-status, -queue-status, stats, -queue-element', () => {
  const { h } = served();
  const s = h.runtime.stats();
  assert.deepEqual(deviceStatusJson('vt', s), {
    name: 'vt', 'device-id': 45, status: 15, 'status-names': 'ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK', broken: false,
    'host-features': '0x0000000530000001',
    'host-features-names': 'VIRTIO_TEST_F_CAN_PRINT, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTIO_F_RING_PACKED',
    'guest-features': '0x0000000120000001', 'guest-features-names': 'VIRTIO_TEST_F_CAN_PRINT, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1',
    'features-ok': true, 'config-generation': 0, 'num-vqs': 1,
  });
  const counters = { requests: 1, 'bytes-read': 48, 'bytes-written': 12, kicks: 1, flushes: 1, 'notifications-sent': 1, 'notifications-suppressed': 0, errors: 0 };
  assert.deepEqual(queueStatusJson('vt', h.runtime.queueStatus(0), false), {
    name: 'vt', 'queue-index': 0, layout: 'split', ready: true, active: true, inuse: 0, 'held-by-device': 0,
    'vring-num': 8, 'vring-num-default': 256, 'vring-desc': 0x100000, 'vring-avail': 0x100080, 'vring-used': 0x100098,
    'last-avail-idx': 1, 'shadow-avail-idx': 1, 'avail-idx': 2, 'used-idx': 1, 'published-used-idx': 1,
    'signalled-used': 1, 'signalled-used-valid': true, 'event-idx': true, indirect: false, 'avail-flags': 0, 'used-flags': 0,
    'used-event': 0, 'avail-event': 1, 'kicks-enabled': true, counters,
  });
  const packedAt = queueStatusJson('vt', h.runtime.queueStatus(0), true, { desc: 1, avail: 2, used: 3 });
  assert.deepEqual([packedAt['layout'], packedAt['vring-desc'], packedAt['vring-avail'], packedAt['vring-used']], ['packed', 1, 2, 3], 'a host\'s own ring addresses');
  assert.deepEqual(statsJson(s), { ...counters, 'config-notifications': 0, 'device-errors': 0, queues: [{ 'queue-index': 0, ...counters }] });
  assert.deepEqual(countersJson(s.totals), counters);
  assert.deepEqual(elementJson('vt', 0, h.runtime.activeQueue(0)!.element(2)!, false), {
    name: 'vt', 'queue-index': 0, index: 2, 'avail-index': null, readable: 48, writable: 12, 'descriptor-count': 2,
    descs: [
      { index: 2, addr: RAM + 0x9000, len: 48, flags: ['next'], next: 3 },
      { index: 3, addr: RAM + 0x9100, len: 12, flags: ['write'] },
    ],
  });
});

test('control-socket JSON of a stopped queue: ring members null, the device broken', () => {
  const { h } = served();
  h.runtime.deviceError(new Error('x'), 0);
  const q = queueStatusJson('vt', h.runtime.queueStatus(0), false);
  for (const k of ['last-avail-idx', 'shadow-avail-idx', 'avail-idx', 'used-idx', 'published-used-idx', 'signalled-used', 'event-idx', 'indirect', 'avail-flags', 'used-flags', 'used-event', 'avail-event', 'kicks-enabled']) {
    assert.equal(q[k], null, k);
  }
  assert.equal(q['signalled-used-valid'], false);
  assert.equal(q['inuse'], 0);
  assert.equal(q['active'], false);
  const d = deviceStatusJson('vt', h.runtime.stats());
  assert.equal(d['broken'], true);
  assert.equal(statsJson(h.runtime.stats())['device-errors'], 1);
});

test('featureList names the 64 bits of a mask and nothing above them', () => {
  assert.equal(featureList('0x10000000000000000'), '(none)', 'bit 64 is not a feature bit');
  assert.equal(featureList('0x18000000000000001'), 'bit 0, bit 63');
  assert.equal(featureList('0xffffffffffffffff').split(', ').length, 64);
});

test('control-socket JSON of a packed queue element: each descriptor\'s buffer id, and an indirect descriptor\'s table entries (x-query-virtio-queue-element)', () => {
  const h = harness(answeringWith(() => new Promise<number>(() => {}))); // holds every chain
  const rt = h.runtime;
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER);
  rt.writeDriverFeatures(bit(FeatureBit.VERSION_1) | bit(FeatureBit.RING_PACKED) | bit(FeatureBit.RING_INDIRECT_DESC));
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  const ring = packedRingLayout(RAM, 8);
  Object.assign(rt.queues[0]!, { size: 8, desc: ring.desc, avail: ring.driver, used: ring.device, ready: true });
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  let table: number | null = null; // the indirect table the driver may use, once offered
  const driver = new PackedDriverQueue<number>(h.memory, packedRingViewsFromGuest(h.memory, ring), { eventIdx: false, indirect: true, allocIndirect: () => table });
  // Buffer id 0: a direct list of two descriptors at ring positions 0 and 1.
  assert.ok(driver.add([{ addr: RAM + 0x8000, len: 48 }], [{ addr: RAM + 0x8100, len: 12 }], 0));
  assert.deepEqual(elementJson('vt', 0, rt.activeQueue(0)!.element()!, true), {
    name: 'vt', 'queue-index': 0, index: 0, 'avail-index': 0x8000, readable: 48, writable: 12, 'descriptor-count': 2,
    descs: [
      { index: 0, addr: RAM + 0x8000, len: 48, flags: ['next', 'avail'], id: 0 },
      { index: 1, addr: RAM + 0x8100, len: 12, flags: ['write', 'avail'], id: 0 },
    ],
  });
  rt.notify(0); // taken (and held by the model)
  // Buffer id 1: one indirect descriptor at ring position 2, its table of two entries.
  table = RAM + 0x20000;
  assert.ok(driver.add([{ addr: RAM + 0x9000, len: 48 }], [{ addr: RAM + 0x9100, len: 12 }], 1));
  assert.deepEqual(elementJson('vt', 0, rt.activeQueue(0)!.element()!, true), {
    name: 'vt', 'queue-index': 0, index: 1, 'avail-index': 0x8002, readable: 48, writable: 12, 'descriptor-count': 3,
    descs: [
      {
        index: 2, addr: RAM + 0x20000, len: 32, flags: ['indirect', 'avail'], id: 1,
        table: [
          { index: 0, addr: RAM + 0x9000, len: 48, flags: [], id: 0 },
          { index: 1, addr: RAM + 0x9100, len: 12, flags: ['write'], id: 0 },
        ],
      },
    ],
  });
});
