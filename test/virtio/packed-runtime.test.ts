/**
 * DeviceRuntime with VIRTIO_F_RING_PACKED negotiated: queues are served by the packed device
 * half over the transport's three areas (desc / driver / device, §2.8.10), with the same
 * results, suppression and device-error path as the split ring; without it, the split half.
 * Also PackedDeviceQueue's resubmission support (keepLists, adopt, chainAt).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { RngDevice } from '../../src/devices/rng/device.js';
import { DeviceQueue } from '../../src/virtio/device-queue.js';
import { FeatureBit, PackedDescFlags, RingEventFlags, Status, bit } from '../../src/virtio/constants.js';
import { PackedDeviceQueue } from '../../src/virtio/packed-device-queue.js';
import { PackedDriverQueue } from '../../src/virtio/packed-driver-queue.js';
import { encodeRingIndex, packedRingLayout, packedRingViewsFromGuest } from '../../src/virtio/packed-ring.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { RAM, harness, type Harness } from '../helpers/runtime.js';

const V1 = bit(FeatureBit.VERSION_1);
const PACKED = bit(FeatureBit.RING_PACKED);
const EVENT_IDX = bit(FeatureBit.RING_EVENT_IDX);
const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;
const BUFFERS = RAM + 0x10000;
const SEVENS = { read: (b: Uint8Array) => (b.fill(7), b.length) };

/** §3.1.1 with `features`, queue 0 as a packed ring of `size` at the start of RAM; returns the driver half. */
function bringUpPacked(h: Harness, features: bigint, size = 8): PackedDriverQueue<number> {
  const rt = h.runtime;
  rt.writeStatus(Status.ACKNOWLEDGE);
  rt.writeStatus(ACK_DRIVER);
  rt.writeDriverFeatures(features);
  rt.writeStatus(ACK_DRIVER | Status.FEATURES_OK);
  assert.ok(rt.status & Status.FEATURES_OK, 'FEATURES_OK accepted');
  const ring = packedRingLayout(RAM, size);
  // QueueDesc / QueueDriver / QueueDevice (§4.2.3.2) as the runtime keeps them.
  Object.assign(rt.queues[0]!, { size, desc: ring.desc, avail: ring.driver, used: ring.device, ready: true });
  const driver = new PackedDriverQueue<number>(h.memory, packedRingViewsFromGuest(h.memory, ring), {
    eventIdx: (features & EVENT_IDX) !== 0n,
    indirect: false,
  });
  rt.writeStatus(ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  return driver;
}

/** A virtio-test request for byte `n` at buffer slot `slot` (48 readable + 12 writable bytes). */
function addRequest(h: Harness, q: PackedDriverQueue<number>, n: number, slot: number): void {
  const addr = BUFFERS + 64 * slot;
  const req = new Uint32Array(12); // {u32 x4, char[32]} (src/devices/virtio-test/protocol.ts)
  req.set([n, n + 1, n + 2, n + 3]);
  h.memory.write(addr, new Uint8Array(req.buffer));
  assert.ok(q.add([{ addr, len: 48 }], [{ addr: addr + 48, len: 12 }], slot));
}

test('RING_PACKED is offered, and a driver that accepts it is served by the packed half', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  assert.ok(h.runtime.offeredFeatures & PACKED);
  const q = bringUpPacked(h, V1 | PACKED | bit(0));
  assert.ok(h.runtime.activeQueue(0) instanceof PackedDeviceQueue);
  addRequest(h, q, 10, 0);
  assert.ok(q.needsKick(), 'the device asks for kicks (ENABLE)');
  h.runtime.notify(0);
  const used = q.getUsed();
  assert.deepEqual(used, { token: 0, len: 12 });
  const resp = h.memory.slice(BUFFERS + 48, 12);
  assert.deepEqual([...new Uint32Array(resp.buffer.slice(resp.byteOffset, resp.byteOffset + 12))], [111, 112, 113]);
  assert.deepEqual(h.interrupts, [0]);
  assert.equal(h.deviceErrors.length, 0);
});

test('without RING_PACKED the same runtime serves a split ring', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1);
  h.runtime.writeStatus(ACK_DRIVER | Status.FEATURES_OK);
  Object.assign(h.runtime.queues[0]!, { size: 8, desc: RAM, avail: RAM + 128, used: RAM + 256, ready: true });
  h.runtime.writeStatus(ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  assert.ok(h.runtime.activeQueue(0) instanceof DeviceQueue);
});

test('many requests over several laps of a 5-entry packed ring (not a power of two), with EVENT_IDX', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const q = bringUpPacked(h, V1 | PACKED | EVENT_IDX | bit(0), 5);
  let done = 0;
  for (let round = 0; round < 40; round++) {
    const n = 1 + (round % 2); // 2 descriptors each: at most 4 of the 5 in flight
    for (let i = 0; i < n; i++) addRequest(h, q, round, i);
    if (q.needsKick()) h.runtime.notify(0);
    let u;
    while ((u = q.getUsed()) !== null) {
      assert.equal(u.len, 12);
      done++;
    }
    assert.equal(q.inFlight, 0, `round ${round}: everything answered`);
  }
  assert.equal(done, 60);
  const st = h.runtime.queueStatus(0);
  assert.equal(st.counters.requests, 60);
  assert.ok(st.ring && st.ring.inuse === 0 && st.ring.eventIdx);
  assert.equal(h.deviceErrors.length, 0);
});

test('interrupt suppression: DISABLE in the driver event structure means no interrupt', () => {
  const h = harness(new RngDevice({ source: SEVENS, queueSize: 8 }));
  const q = bringUpPacked(h, V1 | PACKED);
  q.disableCallbacks();
  assert.ok(q.add([], [{ addr: BUFFERS, len: 16 }], 1));
  h.runtime.notify(0);
  assert.deepEqual(h.interrupts, [], 'suppressed');
  assert.equal(h.runtime.queueStatus(0).counters.suppressed, 1);
  assert.deepEqual(q.getUsed(), { token: 1, len: 16 });
  assert.equal(q.enableCallbacks(), true);
  assert.ok(q.add([], [{ addr: BUFFERS, len: 16 }], 2));
  h.runtime.notify(0);
  assert.deepEqual(h.interrupts, [0]);
});

test('a bad packed list is a device error: NEEDS_RESET, the queue stops, the driver is told', () => {
  const h = harness(new RngDevice({ source: SEVENS, queueSize: 8 }));
  bringUpPacked(h, V1 | PACKED);
  const ring = packedRingLayout(RAM, 8);
  // Descriptor 0: available for wrap 1 but with buffer id 9 ≥ queue size 8.
  const d = new DataView(h.memory.slice(ring.desc, 16).buffer, h.memory.slice(ring.desc, 16).byteOffset, 16);
  d.setUint32(0, BUFFERS, true);
  d.setUint32(8, 16, true);
  d.setUint16(12, 9, true);
  d.setUint16(14, PackedDescFlags.AVAIL | 2 /* WRITE */, true);
  h.runtime.notify(0);
  assert.ok(h.runtime.status & Status.NEEDS_RESET);
  assert.equal(h.runtime.activeQueue(0), null);
  assert.equal(h.configInterrupts, 1);
  assert.match(h.warnings.join('\n'), /buffer id 9 ≥ queue size 8/);
});

test('a packed queue size need not be a power of two, but must be ≤ QueueNumMax', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const q = bringUpPacked(h, V1 | PACKED, 3);
  addRequest(h, q, 1, 0);
  h.runtime.notify(0);
  assert.deepEqual(q.getUsed(), { token: 0, len: 12 });
});

test('startQueue refuses views of the other layout (FEATURES_INVALID)', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  bringUpPacked(h, V1 | PACKED);
  assert.throws(
    () => h.runtime.startQueue(0, { size: 8, desc: new Uint32Array(32), avail: new Uint16Array(11), used16: new Uint16Array(35), used32: new Uint32Array(17) }),
    (e: unknown) => e instanceof VirtioError && e.code === 'FEATURES_INVALID',
  );
});

test('status of a packed queue: positions with wrap bit 15, event flags', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const q = bringUpPacked(h, V1 | PACKED | EVENT_IDX | bit(0), 4);
  for (let i = 0; i < 7; i++) { // 14 descriptors: 3 laps of 4 and 2 more
    addRequest(h, q, i, 0);
    h.runtime.notify(0);
    assert.ok(q.getUsed());
  }
  const s = h.runtime.queueStatus(0).ring!;
  assert.equal(s.lastAvailIdx, encodeRingIndex(2, 0), 'position 2 of the second lap (wrap counter 0)');
  assert.equal(s.usedIdx, encodeRingIndex(2, 0));
  assert.equal(s.inuse, 0);
  assert.equal(s.availEvent, encodeRingIndex(2, 0), 'the device asks for the event at its next position (DESC)');
  assert.equal(s.usedFlags, RingEventFlags.DESC);
});

// ------------------------------------------------------------------------------------------
// PackedDeviceQueue: chainAt / keepLists / adopt (vhost-user resubmission after a ring restart)

function packedPair(size: number, keepLists: boolean) {
  const h = harness(new VirtioTestDevice({ print: false }));
  const ring = packedRingLayout(RAM, size);
  const views = packedRingViewsFromGuest(h.memory, ring);
  const driver = new PackedDriverQueue<number>(h.memory, views, { eventIdx: false, indirect: false });
  const device = new PackedDeviceQueue(h.memory, views, { eventIdx: false, indirect: false, keepLists });
  return { h, views, driver, device };
}

test('chainAt walks the kept copy of a list whose descriptors the device has since overwritten', () => {
  const { h, views, driver, device } = packedPair(4, true);
  h.memory.write(BUFFERS, new Uint8Array([1, 2, 3, 4]));
  assert.ok(driver.add([{ addr: BUFFERS, len: 4 }], [{ addr: BUFFERS + 16, len: 8 }], 100)); // positions 0-1
  assert.ok(driver.add([{ addr: BUFFERS + 32, len: 4 }], [], 200)); // position 2
  const a = device.pop()!;
  const b = device.pop()!;
  // b completes first: its used descriptor goes to position 0, over a's first descriptor.
  device.addUsed(b.head, 0);
  device.publishUsed();
  assert.equal(driver.getUsed()?.token, 200);
  const again = device.chainAt(a.head);
  assert.equal(again.readableLength, 4);
  assert.equal(again.writableLength, 8);
  assert.equal(again.readUint8(0), 1);
  assert.deepEqual(device.idsInFlight(), [a.head]);
  // Restart at the same place: the new half adopts the id in flight and can still complete it.
  const base = { nextAvail: device.nextAvail, nextUsed: device.nextUsed };
  const next = new PackedDeviceQueue(h.memory, views, { eventIdx: false, indirect: false, keepLists: true, ...base, adopt: device });
  assert.deepEqual(next.idsInFlight(), [a.head]);
  const c = next.chainAt(a.head);
  assert.equal(c.writableLength, 8);
  next.addUsed(c.head, 8);
  next.publishUsed();
  assert.deepEqual(driver.getUsed(), { token: 100, len: 8 });
  assert.equal(driver.inFlight, 0);
});

test('chainAt refuses ids not in flight, and lists that were not kept', () => {
  const { driver, device } = packedPair(4, false);
  assert.throws(() => device.chainAt(0), (e: unknown) => e instanceof VirtioError && e.code === 'PACKED_ID_INVALID');
  assert.ok(driver.add([{ addr: BUFFERS, len: 4 }], [], 1));
  const c = device.pop()!;
  assert.throws(() => device.chainAt(c.head), /not kept/);
});

test('adopt is ignored when the bases do not match the ids in flight', () => {
  const { h, views, driver, device } = packedPair(4, true);
  assert.ok(driver.add([{ addr: BUFFERS, len: 4 }], [], 1));
  device.pop();
  // A base with nothing in flight (the front-end set up a new ring): nothing is taken over.
  const next = new PackedDeviceQueue(h.memory, views, { eventIdx: false, indirect: false, keepLists: true, nextAvail: device.nextAvail, nextUsed: device.nextAvail, adopt: device });
  assert.deepEqual(next.idsInFlight(), []);
});

test('idsInFlight lists the lists in flight oldest first, also after out-of-order completions', () => {
  const { driver, device } = packedPair(4, true);
  const take = (token: number) => {
    assert.ok(driver.add([{ addr: BUFFERS + 16 * token, len: 4 }], [], token));
    return device.pop()!.head;
  };
  const a = take(1); // position 0
  const b = take(2); // position 1
  const c = take(3); // position 2
  assert.deepEqual(device.idsInFlight(), [a, b, c]);
  device.addUsed(c, 0); // c completes first: its used descriptor goes to position 0
  device.addUsed(a, 0); // then a, at position 1
  device.publishUsed();
  assert.deepEqual([driver.getUsed()?.token, driver.getUsed()?.token], [3, 1]);
  const d = take(4); // position 3
  assert.deepEqual(device.idsInFlight(), [b, d], 'b (position 1) was taken before d (position 3)');
  const e = take(5); // position 0 of the next lap
  assert.deepEqual(device.idsInFlight(), [b, d, e]);
  device.addUsed(d, 0);
  device.publishUsed();
  assert.deepEqual(device.idsInFlight(), [b, e]);
});

test('chainAt walks a kept indirect list again (§2.8.7), and status shows used descriptors not yet published', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const ring = packedRingLayout(RAM, 4);
  const views = packedRingViewsFromGuest(h.memory, ring);
  let table = BUFFERS + 0x1000;
  const driver = new PackedDriverQueue<number>(h.memory, views, { eventIdx: false, indirect: true, allocIndirect: (n) => (table += 0x100, table - 0x100) });
  const device = new PackedDeviceQueue(h.memory, views, { eventIdx: false, indirect: true, keepLists: true });
  h.memory.write(BUFFERS, Uint8Array.of(1, 2, 3, 4, 5, 6));
  assert.ok(driver.add([{ addr: BUFFERS, len: 2 }, { addr: BUFFERS + 2, len: 4 }], [{ addr: BUFFERS + 64, len: 8 }], 9));
  const first = device.pop()!;
  assert.equal(first.descriptorCount, 4, 'the ring descriptor and its three table entries');
  const again = device.chainAt(first.head);
  assert.equal(again.descriptorCount, 4);
  assert.deepEqual([again.readable.length, again.readableLength, again.writable.length, again.writableLength], [2, 6, 1, 8]);
  assert.equal(again.readUint32(2), 0x06050403, 'the readable bytes, read across the two table entries');
  const before = device.status();
  assert.equal(before.publishedUsedIdx, before.usedIdx, 'nothing pending: the used position is published');
  device.addUsed(again.head, 8);
  const pending = device.status();
  assert.equal(pending.publishedUsedIdx, -1, 'a used descriptor written but not yet published');
  assert.equal(pending.usedIdx, encodeRingIndex(1, 1));
  device.publishUsed();
  assert.equal(device.status().publishedUsedIdx, encodeRingIndex(1, 1));
  assert.deepEqual(driver.getUsed(), { token: 9, len: 8 });
});
