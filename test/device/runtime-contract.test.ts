/**
 * DeviceRuntime's side of the contracts a transport and a device model rely on, beyond the
 * request path of runtime.test.ts: initial and reset queue configuration (§2.4, §4.2.2),
 * the status rules' diagnostics (§2.1.1, §3.1.1), FAILED, config-space bounds (§2.5: the model
 * never sees an access outside its config space), the DeviceContext a model is given, the
 * counters of stats() (x-query-virtio-status), resubmission (vhost-user inflight) and
 * startQueue's layout check (§2.7 / §2.8). Written from the mutants StrykerJS found alive
 * (docs/reliability.md "Mutation testing").
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DeviceContext, VirtioDevice } from '../../src/device/device.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { isVirtioError } from '../../src/virtio/errors.js';
import { PackedDeviceQueue } from '../../src/virtio/packed-device-queue.js';
import { PackedDriverQueue } from '../../src/virtio/packed-driver-queue.js';
import { packedRingLayout, packedRingViewsFromGuest } from '../../src/virtio/packed-ring.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';
import * as DQ from '../../src/virtio/driver-queue.js';
import { RAM, answeringWith, bringUp, harness } from '../helpers/runtime.js';
import { Recorder, withTracing } from '../helpers/trace-recorder.js';
import { NO_QUEUE } from '../../src/trace/events.js';

const V1 = bit(FeatureBit.VERSION_1);
const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;
const READY = ACK_DRIVER | Status.FEATURES_OK;

/** A model with a 16-byte config space that records every config access it is given. */
class RecordingModel implements VirtioDevice {
  readonly deviceId = 0x7777;
  readonly features = bit(3);
  readonly configSize = 16;
  readonly queueMaxSizes = [8, 4];
  readonly config = new Uint8Array(16).map((_, i) => 0xa0 + i);
  readonly reads: [number, number][] = [];
  readonly writes: [number, number[]][] = [];
  resets = 0;
  context: DeviceContext | undefined;
  readConfig(offset: number, into: Uint8Array): void {
    this.reads.push([offset, into.length]);
    // Fills all it is given: a range past the end would show as bytes that are not 0.
    for (let i = 0; i < into.length; i++) into[i] = this.config[offset + i] ?? 0xee;
  }
  writeConfig(offset: number, data: Uint8Array, ctx: DeviceContext): void {
    this.writes.push([offset, [...data]]);
    this.context = ctx;
  }
  handleChain(_queue: number, chain: DescriptorChain, ctx: DeviceContext): number {
    this.context = ctx;
    return chain.write(new Uint8Array(chain.writableLength).fill(0x55));
  }
  reset(): void {
    this.resets++;
  }
}

function request(driver: ReturnType<typeof bringUp>, slot: number, token = slot): void {
  assert.ok(driver.add([{ addr: RAM + 0x8000 + 0x100 * slot, len: 48 }], [{ addr: RAM + 0x8080 + 0x100 * slot, len: 12 }], token));
}

test('queue configuration starts at QueueNumMax, addresses 0, not ready, and a reset puts it back (§4.2.2, §2.4)', () => {
  const model = new RecordingModel();
  const h = harness(model);
  const fresh = [
    { maxSize: 8, size: 8, desc: 0, avail: 0, used: 0, ready: false },
    { maxSize: 4, size: 4, desc: 0, avail: 0, used: 0, ready: false },
  ];
  assert.deepEqual(h.runtime.queues, fresh);
  Object.assign(h.runtime.queues[1]!, { size: 2, desc: 0x1000, avail: 0x2000, used: 0x3000, ready: true });
  h.runtime.writeStatus(Status.ACKNOWLEDGE);
  h.runtime.writeStatus(0);
  assert.deepEqual(h.runtime.queues, fresh, 'reset forgets the queue configuration');
  assert.equal(model.resets, 1, 'the model is reset too');
  assert.equal(h.runtime.queueStatus(1).ready, false);
});

test('only queues the driver made ready are started at DRIVER_OK (§4.2.3.2 QueueReady)', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  bringUp(h); // queue 0 ready
  assert.notEqual(h.runtime.activeQueue(0), null);
  const h2 = harness(new RecordingModel());
  h2.runtime.writeStatus(ACK_DRIVER);
  h2.runtime.writeDriverFeatures(V1);
  h2.runtime.writeStatus(READY);
  h2.runtime.writeStatus(READY | Status.DRIVER_OK);
  assert.equal(h2.runtime.activeQueue(0), null, 'queue 0 was never made ready');
  assert.equal(h2.runtime.activeQueue(1), null);
  assert.equal(h2.runtime.queueStatus(0).active, false);
  assert.ok(h2.runtime.driverOk);
});

test('status diagnostics: clearing a bit and DRIVER_OK without FEATURES_OK are refused with a warning that names the rule', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeStatus(Status.ACKNOWLEDGE);
  assert.equal(h.runtime.status, ACK_DRIVER);
  assert.match(h.warnings.join('\n'), /status write ACKNOWLEDGE clears bits of ACKNOWLEDGE\|DRIVER: ignored \(§2\.1\.1\)/);
  h.runtime.writeStatus(ACK_DRIVER | Status.DRIVER_OK);
  assert.equal(h.runtime.status, ACK_DRIVER);
  assert.match(h.warnings.at(-1)!, /DRIVER_OK without FEATURES_OK: ignored \(§3\.1\.1\)/);
  h.runtime.writeDriverFeatures(V1);
  h.runtime.writeStatus(READY);
  h.runtime.writeDriverFeatures(V1 | bit(0));
  assert.match(h.warnings.at(-1)!, /driver features written after FEATURES_OK: ignored \(§3\.1\.1\)/);
  h.runtime.writeStatus(ACK_DRIVER | Status.FEATURES_OK | Status.DRIVER_OK | 0x100);
  assert.equal(h.runtime.status, READY | Status.DRIVER_OK, 'only the low 8 bits are the status');
});

test('FEATURES_OK refusals leave a DRIVER_OK of the same write clear, and say why (§3.1.1 step 6)', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1 | bit(40));
  h.runtime.writeStatus(READY | Status.DRIVER_OK);
  assert.equal(h.runtime.status, ACK_DRIVER);
  assert.match(h.warnings.at(-1)!, /driver accepted features it was not offered \(0x10000000000\): FEATURES_OK refused \(§2\.2\.1\)/);
  h.runtime.writeDriverFeatures(bit(0));
  h.runtime.writeStatus(READY);
  assert.match(h.warnings.at(-1)!, /did not accept VIRTIO_F_VERSION_1 .*FEATURES_OK refused \(§6\.1\)/);
});

test('a status write that adds nothing after DRIVER_OK does not restart the queues (no request served twice)', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const driver = bringUp(h);
  request(driver, 0, 1);
  h.runtime.notify(0);
  assert.deepEqual(driver.getUsed(), { token: 1, len: 12 });
  const q = h.runtime.activeQueue(0);
  h.runtime.writeStatus(h.runtime.status); // Linux's virtio_add_status rewrites what it read
  assert.equal(h.runtime.activeQueue(0), q, 'the same queue, not a new one from index 0');
  h.runtime.notify(0);
  assert.equal(driver.getUsed(), null, 'the first request was not served again');
  assert.equal(h.runtime.stats().totals.requests, 1);
});

test('FAILED stops the queues and keeps the other bits (§2.1: the driver gave up)', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const driver = bringUp(h);
  const before = h.runtime.status;
  h.runtime.writeStatus(before | Status.FAILED);
  assert.equal(h.runtime.status, before | Status.FAILED);
  assert.equal(h.runtime.activeQueue(0), null);
  request(driver, 0);
  h.runtime.notify(0);
  assert.equal(driver.getUsed(), null, 'nothing is served after FAILED');
  assert.deepEqual(h.interrupts, []);
});

test('config space bounds: the model is only ever given bytes inside its config space (§2.5)', () => {
  const model = new RecordingModel();
  const h = harness(model);
  assert.deepEqual([...h.runtime.readConfig(12, 4)], [0xac, 0xad, 0xae, 0xaf], 'the last field');
  assert.deepEqual([...h.runtime.readConfig(12, 8)], [0xac, 0xad, 0xae, 0xaf, 0, 0, 0, 0], 'past the end reads as 0');
  assert.deepEqual([...h.runtime.readConfig(16, 4)], [0, 0, 0, 0], 'at the end: all 0');
  assert.deepEqual([...h.runtime.readConfig(-4, 4)], [0, 0, 0, 0], 'before the start: all 0');
  for (const [offset, length] of model.reads) assert.ok(offset >= 0 && offset + length <= 16, `model read ${offset}+${length}`);
  assert.deepEqual(model.reads, [[12, 4], [12, 4]]);

  h.runtime.writeConfig(12, Uint8Array.of(1, 2, 3, 4));
  assert.deepEqual(model.writes, [[12, [1, 2, 3, 4]]], 'a write that ends at the end is the model\'s');
  for (const [offset, len] of [[13, 4], [-1, 2], [16, 1]] as const) {
    h.runtime.writeConfig(offset, new Uint8Array(len));
    assert.match(h.warnings.at(-1)!, new RegExp(`config write at ${offset} \\(\\+${len}\\) is outside the 16-byte config space: ignored`));
  }
  assert.equal(model.writes.length, 1, 'no out-of-range write reached the model');
});

test('the DeviceContext a model gets: guest memory, the negotiated features, log and configChanged through the host', () => {
  const model = new RecordingModel();
  const h = harness(model);
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1 | bit(3));
  h.runtime.writeStatus(READY);
  const ring = packedLayout(RAM, 8);
  Object.assign(h.runtime.queues[0]!, { size: 8, desc: ring.desc, avail: ring.avail, used: ring.used, ready: true });
  h.runtime.writeStatus(READY | Status.DRIVER_OK);
  h.runtime.writeConfig(0, Uint8Array.of(9));
  const ctx = model.context!;
  assert.equal(ctx.memory, h.memory);
  assert.equal(ctx.driverFeatures, V1 | bit(3));
  ctx.log('hello from the model');
  assert.deepEqual(h.logs, ['hello from the model']);
  const gen = h.runtime.configGeneration;
  ctx.configChanged();
  assert.equal(h.runtime.configGeneration, gen + 1);
  assert.equal(h.configInterrupts, 1, 'the running driver is told (§2.5.1)');
  h.runtime.writeStatus(0);
  assert.equal(ctx.driverFeatures, 0n, 'the context reads the features live: 0 after a reset');
  ctx.configChanged();
  assert.equal(h.configInterrupts, 1, 'no config interrupt without DRIVER_OK');
  assert.equal(h.runtime.configGeneration, gen + 2, 'but the generation still changes');
});

test('stats(): per-queue counters and their totals, features and status as x-query-virtio-status shows them', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const driver = bringUp(h, V1 | bit(0));
  const ring = h.runtime.queueStatus(0);
  assert.equal(ring.active, true);
  assert.equal(ring.ready, true);
  for (let i = 0; i < 3; i++) request(driver, i);
  h.runtime.notify(0); // one pass: published at the first answer and at its end (runtime.test.ts)
  h.runtime.notify(0); // nothing new: a kick all the same
  h.runtime.notify(7); // a queue the device does not have: ignored
  driver.disableCallbacks(); // VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7)
  request(driver, 3);
  h.runtime.notify(0);
  let s = h.runtime.stats();
  assert.equal(s.deviceId, 45);
  assert.equal(s.status, READY | Status.DRIVER_OK);
  assert.equal(s.statusNames, 'ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK');
  assert.equal(s.featuresOk, true);
  assert.equal(s.driverFeatures, '0x0000000100000001');
  assert.equal(s.deviceFeatures, `0x${h.runtime.offeredFeatures.toString(16).padStart(16, '0')}`);
  const c = s.queues[0]!.counters;
  assert.deepEqual({ ...c }, { requests: 4, bytesRead: 4 * 48, bytesWritten: 4 * 12, kicks: 3, flushes: 3, notifications: 2, suppressed: 1, errors: 0 });
  assert.deepEqual({ ...s.totals }, { ...c }, 'one queue: the totals are its counters');
  assert.equal(s.errors, 0);
  assert.equal(s.configNotifications, 0);
  assert.equal(s.queues[0]!.ring!.usedIdx, 4);
  assert.equal(s.queues[0]!.held, 0);
  // A device error counts on its queue and in all, and tells the driver once.
  while (driver.getUsed() !== null);
  assert.ok(driver.add([{ addr: RAM + 0x9000, len: 8 }], [{ addr: RAM + 0x9100, len: 12 }], 9));
  h.runtime.notify(0);
  s = h.runtime.stats();
  assert.equal(s.errors, 1);
  assert.equal(s.queues[0]!.counters.errors, 1);
  assert.equal(s.totals.errors, 1);
  assert.equal(s.configNotifications, 1);
  assert.equal(s.queues[0]!.active, false);
  assert.equal(s.queues[0]!.ring, null, 'a stopped queue has no ring state');
  assert.match(s.statusNames, /NEEDS_RESET/);
  // Counters outlive a reset.
  h.runtime.writeStatus(0);
  assert.equal(h.runtime.stats().totals.requests, 4);
  assert.throws(() => h.runtime.queueStatus(1), /no queue 1 \(the device has 1\)/);
});

test('totals add the queues up', () => {
  const model = new RecordingModel();
  const h = harness(model);
  h.runtime.counters[0]!.requests = 2;
  h.runtime.counters[1]!.requests = 5;
  h.runtime.counters[1]!.kicks = 1;
  const s = h.runtime.stats();
  assert.equal(s.totals.requests, 7);
  assert.equal(s.totals.kicks, 1);
  assert.equal(s.queues.length, 2);
});

test('a held chain shows in queueStatus while the model answers later', async () => {
  let finish!: (n: number) => void;
  const h = harness(answeringWith(() => new Promise<number>((r) => (finish = r))));
  const driver = bringUp(h);
  request(driver, 0, 1);
  h.runtime.notify(0);
  assert.equal(h.runtime.queueStatus(0).held, 1);
  finish(12);
  await h.runtime.settled();
  await new Promise((r) => setImmediate(r));
  assert.equal(h.runtime.queueStatus(0).held, 0);
  assert.deepEqual(driver.getUsed(), { token: 1, len: 12 });
  assert.deepEqual({ ...h.runtime.stats().totals }, { requests: 1, bytesRead: 48, bytesWritten: 12, kicks: 1, flushes: 1, notifications: 1, suppressed: 0, errors: 0 });
});

test('resubmit() serves chains taken before (vhost-user inflight), in order, once the device is live', () => {
  const seen: number[] = [];
  const h = harness(answeringWith((chain) => (seen.push(chain.head), 0)));
  h.runtime.resubmit(0, [0]); // before DRIVER_OK: nothing
  const driver = bringUp(h);
  request(driver, 0, 1); // heads 0 and 2 (two descriptors each)
  request(driver, 1, 2);
  // Not notified: the device has not popped them; resubmission hands them over by head.
  h.runtime.resubmit(0, [2, 0]);
  assert.deepEqual(seen, [2, 0]);
  assert.deepEqual(h.interrupts, [0], 'one publication for the batch');
  assert.deepEqual([driver.getUsed(), driver.getUsed()], [{ token: 2, len: 0 }, { token: 1, len: 0 }]);
  h.runtime.resubmit(0, []);
  assert.deepEqual(h.interrupts, [0], 'nothing resubmitted, nothing published');
  h.runtime.resubmit(0, [9]); // not a descriptor of an 8-entry ring
  assert.ok(h.runtime.status & Status.NEEDS_RESET, 'a bad head is a device error');
  assert.equal(h.runtime.activeQueue(0), null);
  h.runtime.resubmit(0, [0]);
  assert.deepEqual(seen, [2, 0], 'a stopped queue resubmits nothing');
});

test('resubmit() stops at a chain whose answer broke the device', () => {
  const seen: number[] = [];
  const h = harness(answeringWith((chain) => (seen.push(chain.head), 99)));
  const driver = bringUp(h);
  request(driver, 0, 1);
  request(driver, 1, 2);
  h.runtime.resubmit(0, [0, 2]);
  assert.deepEqual(seen, [0], 'the second chain is not given to a broken device');
  assert.ok(h.runtime.status & Status.NEEDS_RESET);
  assert.match(h.warnings.join('\n'), /used length 99 for a chain with 12 writable bytes/);
});

test('startQueue: the views must match the negotiated layout (FEATURES_INVALID), and a base sets where the ring resumes', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1 | bit(0));
  h.runtime.writeStatus(READY);
  const split = ringViewsFromGuest(h.memory, packedLayout(RAM, 8));
  const packed = packedRingViewsFromGuest(h.memory, packedRingLayout(RAM, 8));
  assert.throws(() => h.runtime.startQueue(0, packed), (e: unknown) => isVirtioError(e) && e.code === 'FEATURES_INVALID' && e.section === 'virtio 1.2 §2.7' && /did not negotiate VIRTIO_F_RING_PACKED/.test(e.message));
  const q = h.runtime.startQueue(0, split, { nextAvail: 5, nextUsed: 3 });
  assert.equal(q.nextAvail, 5);
  assert.equal(q.nextUsed, 3);
  assert.deepEqual(h.runtime.stopQueue(0), { nextAvail: 5, nextUsed: 3 });
  assert.equal(h.runtime.stopQueue(0), null, 'already stopped');
  const q0 = h.runtime.startQueue(0, split);
  assert.equal(q0.nextAvail, 0);

  const hp = harness(new VirtioTestDevice({ print: false }));
  hp.runtime.writeStatus(ACK_DRIVER);
  hp.runtime.writeDriverFeatures(V1 | bit(0) | bit(FeatureBit.RING_PACKED));
  hp.runtime.writeStatus(READY);
  assert.throws(() => hp.runtime.startQueue(0, split), (e: unknown) => isVirtioError(e) && e.code === 'FEATURES_INVALID' && e.section === 'virtio 1.2 §2.8' && /negotiated VIRTIO_F_RING_PACKED/.test(e.message));
  const pq = hp.runtime.startQueue(0, packed, { nextAvail: 3 | (1 << 15), nextUsed: 3 | (1 << 15) });
  assert.equal(pq.nextAvail, 3 | (1 << 15));
  assert.equal(pq.nextUsed, 3 | (1 << 15));
});

test('a publishBatch that is not a count is refused with its value', () => {
  for (const publishBatch of [-1, 1.5, Number.NaN]) {
    assert.throws(() => harness(new VirtioTestDevice(), { publishBatch }), { name: 'RangeError', message: `publishBatch ${publishBatch} is not a count ≥ 0` });
  }
});

test('each runtime has its own instance number (the vdev of trace events)', () => {
  const a = harness(new VirtioTestDevice()).runtime.vdev;
  const b = harness(new VirtioTestDevice()).runtime.vdev;
  assert.equal(b, a + 1);
  assert.ok(a >= 1);
});

test('a queue started by the host before DRIVER_OK consumes nothing until DRIVER_OK (§2.1.2), and queueStatus shows it ready, not active', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1 | bit(0));
  h.runtime.writeStatus(READY);
  const ring = packedLayout(RAM, 8);
  // vhost-user starts rings itself (SET_VRING_KICK): QueueReady is never written.
  h.runtime.startQueue(0, ringViewsFromGuest(h.memory, ring));
  const { DriverQueue } = DQ;
  const driver = new DriverQueue<number>(h.memory, ringViewsFromGuest(h.memory, ring), { eventIdx: false, indirect: false });
  request(driver, 0, 1);
  h.runtime.notify(0);
  assert.equal(driver.getUsed(), null, 'nothing consumed before DRIVER_OK');
  const st = h.runtime.queueStatus(0);
  assert.equal(st.ready, true, 'a started queue is ready');
  assert.equal(st.active, false, 'but not served');
  assert.equal(st.ring!.lastAvailIdx, 0);
  assert.equal(h.runtime.stopQueue(5), null, 'a queue the device does not have: nothing to stop');
});

test('buffers made available before DRIVER_OK are served at DRIVER_OK without another kick', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1 | bit(0));
  h.runtime.writeStatus(READY);
  const ring = packedLayout(RAM, 8);
  Object.assign(h.runtime.queues[0]!, { size: 8, desc: ring.desc, avail: ring.avail, used: ring.used, ready: true });
  const driver = new DQ.DriverQueue<number>(h.memory, ringViewsFromGuest(h.memory, ring), { eventIdx: false, indirect: false });
  request(driver, 0, 1);
  h.runtime.notify(0); // before DRIVER_OK: ignored
  h.runtime.writeStatus(READY | Status.DRIVER_OK);
  assert.deepEqual(driver.getUsed(), { token: 1, len: 12 });
  assert.deepEqual(h.interrupts, [0]);
});

test('deviceError(): counted each time, but the host and the driver are told once (§2.1.2); the message says which queue and what failed', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  bringUp(h);
  h.runtime.deviceError('a string, not an Error');
  assert.match(h.warnings.at(-1)!, /^device error: device model failed: a string, not an Error; device needs reset$/);
  h.runtime.deviceError(new Error('second'), 0);
  assert.match(h.warnings.at(-1)!, /^device error on queue 0: device model failed: Error: second\n/);
  const s = h.runtime.stats();
  assert.equal(s.errors, 2);
  assert.equal(s.queues[0]!.counters.errors, 1, 'only the error named for queue 0 counts on it');
  assert.deepEqual(h.deviceErrors, ['a string, not an Error'], 'onDeviceError once');
  assert.equal(h.configInterrupts, 1, 'one configuration change notification');
  // Without DRIVER_OK there is no driver to tell.
  const h2 = harness(new VirtioTestDevice({ print: false }));
  h2.runtime.deviceError(new Error('early'), 0);
  assert.ok(h2.runtime.status & Status.NEEDS_RESET);
  assert.equal(h2.configInterrupts, 0);
  assert.equal(h2.deviceErrors.length, 1);
  // A host without onDeviceError is fine.
  const h3 = harness(new VirtioTestDevice({ print: false }));
  (h3.runtime as unknown as { host: { onDeviceError?: unknown } }).host.onDeviceError = undefined;
  h3.runtime.deviceError(new Error('no hook'));
  assert.ok(h3.runtime.status & Status.NEEDS_RESET);
});

test('an answer that arrives after a reset and a new handshake does not reach the new ring', async () => {
  const answers: ((n: number) => void)[] = [];
  const h = harness(answeringWith(() => new Promise<number>((r) => answers.push(r))));
  let driver = bringUp(h);
  request(driver, 0, 1);
  h.runtime.notify(0);
  h.runtime.writeStatus(0);
  driver = bringUp(h); // the same ring addresses, a new session
  answers[0]!(12);
  await h.runtime.settled();
  await new Promise((r) => setImmediate(r));
  assert.equal(driver.getUsed(), null, 'no used element in the new session');
  assert.deepEqual(h.interrupts, []);
  assert.equal(h.runtime.status & Status.NEEDS_RESET, 0);
  assert.equal(h.runtime.stats().totals.requests, 0);
});

test('a model whose promise rejects with no reason (undefined) is a device error like any other, not a crash of the runtime', async () => {
  const h = harness(answeringWith(() => Promise.reject(undefined)));
  const driver = bringUp(h);
  request(driver, 0, 1);
  h.runtime.notify(0);
  await h.runtime.settled();
  await new Promise((r) => setImmediate(r));
  assert.ok(h.runtime.status & Status.NEEDS_RESET);
  assert.match(h.warnings.at(-1)!, /^device error on queue 0: device model failed: undefined; device needs reset$/);
  assert.deepEqual(h.deviceErrors, [undefined]);
});

test('a device that needs a reset is not live: a later config change bumps the generation but sends no more notifications', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  bringUp(h);
  h.runtime.deviceError(new Error('broken'), 0);
  assert.equal(h.configInterrupts, 1, 'the NEEDS_RESET notification (§2.1.2)');
  assert.equal(h.runtime.driverOk, false);
  const gen = h.runtime.configGeneration;
  h.runtime.configChanged();
  assert.equal(h.runtime.configGeneration, gen + 1);
  assert.equal(h.configInterrupts, 1);
});

test('trace: virtio_notify_config carries the generation, virtio_needs_reset the queue (or none) and the error text', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const r = new Recorder();
  withTracing(['virtio_notify_config', 'virtio_needs_reset'], r, () => {
    bringUp(h);
    h.runtime.configChanged();
    h.runtime.deviceError(new Error('first'), 0);
    h.runtime.deviceError('second');
    h.runtime.deviceError(undefined);
  });
  const vdev = h.runtime.vdev;
  assert.deepEqual(r.events.map((e) => [e.name, e.fields]), [
    ['virtio_notify_config', { vdev, generation: 1 }],
    ['virtio_needs_reset', { vdev, vq: 0, error: 'first' }],
    ['virtio_notify_config', { vdev, generation: 1 }],
    ['virtio_needs_reset', { vdev, vq: NO_QUEUE, error: 'second' }],
    ['virtio_needs_reset', { vdev, vq: NO_QUEUE, error: 'undefined' }],
  ]);
});

test('resubmit() does nothing on a queue that is not served: not started while live, or started before DRIVER_OK', () => {
  const seen: number[] = [];
  const h = harness(answeringWith((chain) => (seen.push(chain.head), 0)));
  bringUp(h);
  h.runtime.stopQueue(0);
  h.runtime.resubmit(0, [0]);
  assert.equal(h.runtime.status & Status.NEEDS_RESET, 0, 'no device error for a queue that is not running');
  const h2 = harness(answeringWith((chain) => (seen.push(chain.head), 0)));
  h2.runtime.writeStatus(ACK_DRIVER);
  h2.runtime.writeDriverFeatures(V1 | bit(0));
  h2.runtime.writeStatus(READY);
  h2.runtime.startQueue(0, ringViewsFromGuest(h2.memory, packedLayout(RAM, 8)));
  h2.runtime.resubmit(0, [0]);
  assert.deepEqual(seen, [], 'nothing handed to the model before DRIVER_OK (§2.1.2)');
});

test('a packed queue larger than QueueNumMax is a device error at DRIVER_OK (QUEUE_SIZE_INVALID, §2.8.10.1), not a ring beyond the device\'s limit', () => {
  const h = harness(new VirtioTestDevice({ print: false })); // QueueNumMax 256
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1 | bit(0) | bit(FeatureBit.RING_PACKED));
  h.runtime.writeStatus(READY);
  const ring = packedRingLayout(RAM, 512);
  Object.assign(h.runtime.queues[0]!, { size: 512, desc: ring.desc, avail: ring.driver, used: ring.device, ready: true });
  h.runtime.writeStatus(READY | Status.DRIVER_OK);
  assert.ok(h.runtime.status & Status.NEEDS_RESET);
  assert.equal(h.runtime.activeQueue(0), null);
  assert.match(h.warnings.at(-1)!, /QUEUE_SIZE_INVALID/);
});

test('a model whose activate hook throws is a device error at DRIVER_OK: NEEDS_RESET, nothing served, the host and the driver told (§2.1.2)', () => {
  const failure = new Error('backing file gone');
  const seen: number[] = [];
  const model = Object.assign(answeringWith((chain) => (seen.push(chain.head), 0)), {
    activate() {
      throw failure;
    },
  });
  const h = harness(model);
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1 | bit(0));
  h.runtime.writeStatus(READY);
  const ring = packedLayout(RAM, 8);
  Object.assign(h.runtime.queues[0]!, { size: 8, desc: ring.desc, avail: ring.avail, used: ring.used, ready: true });
  const driver = new DQ.DriverQueue<number>(h.memory, ringViewsFromGuest(h.memory, ring), { eventIdx: false, indirect: false });
  request(driver, 0, 1); // waiting at DRIVER_OK
  h.runtime.writeStatus(READY | Status.DRIVER_OK);
  assert.ok(h.runtime.status & Status.NEEDS_RESET);
  assert.equal(h.runtime.activeQueue(0), null, 'the queues started for it are stopped');
  assert.deepEqual(seen, [], 'no chain handed to a model that failed to activate');
  assert.equal(driver.getUsed(), null);
  assert.deepEqual(h.deviceErrors, [failure]);
  assert.match(h.warnings.at(-1)!, /^device error: device model failed: Error: backing file gone\n/);
  assert.equal(h.configInterrupts, 1, 'the live driver is told');
  h.runtime.notify(0);
  assert.deepEqual(seen, [], 'nor later');
});

test('a failure at the end of a pass (the re-check of the ring, or the notification) is a device error on that queue; the answers already given reach the driver; the first failure is the one reported', () => {
  const availIdxAt = (h: ReturnType<typeof harness>) => new DataView(h.bytes.buffer, packedLayout(RAM, 8).avail - RAM + 2, 2);

  // The re-check after enabling notifications finds avail.idx 100 ahead (the driver wrote it while
  // the pass ended: here, when told of the used buffer): AVAIL_IDX_JUMP (§2.7.6).
  const a = harness(new VirtioTestDevice({ print: false }), { publishBatch: 0 });
  const da = bringUp(a);
  request(da, 0, 1);
  a.onInterrupt = () => availIdxAt(a).setUint16(0, 101, true);
  a.runtime.notify(0);
  assert.deepEqual(da.getUsed(), { token: 1, len: 12 }, 'the answer was published first');
  assert.equal(a.deviceErrors.length, 1);
  assert.ok(isVirtioError(a.deviceErrors[0]) && a.deviceErrors[0].code === 'AVAIL_IDX_JUMP');
  assert.ok(a.runtime.status & Status.NEEDS_RESET);
  assert.equal(a.runtime.activeQueue(0), null);
  assert.equal(a.runtime.stats().queues[0]!.counters.errors, 1);
  assert.match(a.warnings.at(-1)!, /^device error on queue 0: avail\.idx 101 is 100 entries ahead of 1/);

  // The host's notification fails: notify() does not throw, the device needs a reset.
  const gone = new Error('interrupt eventfd gone');
  const b = harness(new VirtioTestDevice({ print: false }), { publishBatch: 0 });
  const db = bringUp(b);
  request(db, 0, 1);
  b.onInterrupt = () => {
    throw gone;
  };
  b.runtime.notify(0);
  assert.deepEqual(b.deviceErrors, [gone]);
  assert.ok(b.runtime.status & Status.NEEDS_RESET);
  assert.deepEqual(db.getUsed(), { token: 1, len: 12 });

  // A chain broke a rule, then the end-of-pass publication (of the answer before it) failed too:
  // the chain's error is the one reported.
  let n = 0;
  const c = harness(answeringWith(() => (n++ === 0 ? 12 : 99)), { publishBatch: 0 });
  const dc = bringUp(c);
  request(dc, 0, 1);
  request(dc, 1, 2);
  c.onInterrupt = () => {
    throw gone;
  };
  c.runtime.notify(0);
  assert.equal(c.deviceErrors.length, 1);
  assert.match(String(c.deviceErrors[0]), /used length 99 for a chain with 12 writable bytes/);
  assert.deepEqual(dc.getUsed(), { token: 1, len: 12 }, 'the first answer still reached the driver');
  assert.equal(dc.getUsed(), null);
});

test('a packed queue restarted with keepLists and adopt (vhost-user): the chains the model held are resubmitted from the kept lists and answered once', () => {
  const seen: number[] = [];
  let hold = true;
  const h = harness(answeringWith((chain) => (seen.push(chain.readUint8(0)), hold ? new Promise<number>(() => {}) : chain.writableLength)));
  const rt = h.runtime;
  rt.writeStatus(ACK_DRIVER);
  rt.writeDriverFeatures(V1 | bit(0) | bit(FeatureBit.RING_PACKED));
  rt.writeStatus(READY);
  rt.writeStatus(READY | Status.DRIVER_OK); // no queue made ready: the host starts its rings itself
  const ring = packedRingLayout(RAM, 8);
  const views = () => packedRingViewsFromGuest(h.memory, ring);
  const driver = new PackedDriverQueue<number>(h.memory, views(), { eventIdx: false, indirect: false });
  const first = rt.startQueue(0, views(), { keepLists: true });
  for (const slot of [0, 1]) {
    h.memory.write(RAM + 0x8000 + 0x100 * slot, Uint8Array.of(0xa0 + slot));
    assert.ok(driver.add([{ addr: RAM + 0x8000 + 0x100 * slot, len: 48 }], [{ addr: RAM + 0x8080 + 0x100 * slot, len: 12 }], slot));
  }
  rt.notify(0);
  assert.deepEqual(seen, [0xa0, 0xa1], 'both taken, both held');
  const base = rt.stopQueue(0)!; // GET_VRING_BASE: the held chains are revoked
  // The ring's descriptors of those lists are no longer theirs (used descriptors are written over
  // lists in flight, §2.8.22): only the kept copy describes them now.
  for (let pos = 0; pos < 4; pos++) h.memory.write(ring.desc + 16 * pos, new Uint8Array(8));
  hold = false;
  const second = rt.startQueue(0, views(), { ...base, keepLists: true, adopt: first }) as PackedDeviceQueue;
  assert.deepEqual(second.idsInFlight(), [0, 1], 'the ids in flight are taken over');
  rt.resubmit(0, second.idsInFlight());
  assert.deepEqual(h.deviceErrors, []);
  assert.deepEqual(seen, [0xa0, 0xa1, 0xa0, 0xa1], 'the same chains again, in order');
  assert.deepEqual([driver.getUsed(), driver.getUsed(), driver.getUsed()], [{ token: 0, len: 12 }, { token: 1, len: 12 }, null]);
});

/** A model whose answers wait for the test: `finish(i, len)` answers the i-th chain it was given. */
function heldAnswers(): { device: VirtioDevice; finish(i: number, len?: number): void; count(): number } {
  const finishers: ((len: number) => void)[] = [];
  return {
    device: answeringWith(() => new Promise<number>((r) => finishers.push(r))),
    finish: (i, len = 0) => finishers[i]!(len),
    count: () => finishers.length,
  };
}
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('drained(queue): at once when the model holds nothing from it; otherwise once its last held chain is answered and published, not before', async () => {
  const m = heldAnswers();
  const h = harness(m.device);
  const driver = bringUp(h);
  let early = false;
  void h.runtime.drained(0).then(() => (early = true));
  // A queue the device does not have holds nothing either.
  let other = false;
  void h.runtime.drained(3).then(() => (other = true));
  await turn();
  assert.equal(early, true, 'nothing held: resolved');
  assert.equal(other, true);
  request(driver, 0, 1);
  request(driver, 1, 2);
  h.runtime.notify(0);
  assert.equal(m.count(), 2);
  const usedAtDrain: (number | null)[] = [];
  let drained = 0;
  const waits = [h.runtime.drained(0), h.runtime.drained(0)].map((p) => p.then(() => (drained++, usedAtDrain.push(h.interrupts.length))));
  m.finish(1, 12);
  await turn();
  assert.equal(drained, 0, 'one chain still held');
  m.finish(0, 12);
  await Promise.all(waits);
  assert.equal(drained, 2, 'every waiter woken');
  assert.deepEqual(usedAtDrain, [2, 2], 'after both used elements were published, each notified');
  assert.deepEqual([driver.getUsed(), driver.getUsed()], [{ token: 2, len: 12 }, { token: 1, len: 12 }]);
  // The waiters were let go: a new hold makes a new wait.
  request(driver, 0, 3);
  h.runtime.notify(0);
  let third = false;
  void h.runtime.drained(0).then(() => (third = true));
  await turn();
  assert.equal(third, false);
  m.finish(2, 12);
  await turn();
  await turn();
  assert.equal(third, true);
});

test('drained(queue): a chain revoked by a reset ends the wait (its late answer is dropped)', async () => {
  const m = heldAnswers();
  const h = harness(m.device);
  const driver = bringUp(h);
  request(driver, 0, 1);
  h.runtime.notify(0);
  let done = false;
  void h.runtime.drained(0).then(() => (done = true));
  await turn();
  assert.equal(done, false);
  h.runtime.writeStatus(0);
  await turn();
  assert.equal(done, true, 'the reset revoked the held chain');
  assert.equal(h.runtime.queueStatus(0).held, 0);
  m.finish(0, 12);
  await h.runtime.settled();
  assert.equal(driver.getUsed(), null, 'the late answer was dropped');
});

test('settled(): at once with nothing owed; otherwise after every answer owed at the call, those of a reset queue included', async () => {
  const m = heldAnswers();
  const h = harness(m.device);
  let first = false;
  void h.runtime.settled().then(() => (first = true));
  await turn();
  assert.equal(first, true, 'nothing owed');
  const driver = bringUp(h);
  request(driver, 0, 1);
  request(driver, 1, 2);
  h.runtime.notify(0);
  h.runtime.writeStatus(0); // the queue stops; the model still owes both answers
  assert.equal(h.runtime.owedCount, 2);
  let settled = false;
  const wait = h.runtime.settled().then(() => (settled = true));
  m.finish(0);
  await turn();
  assert.equal(settled, false, 'one answer still owed');
  m.finish(1);
  await wait;
  assert.equal(settled, true);
  assert.equal(h.runtime.owedCount, 0);
});

test('no queue is active before the driver sets one up: activeQueue is null (not undefined)', () => {
  const h = harness(new RecordingModel());
  assert.strictEqual(h.runtime.activeQueue(0), null);
  assert.strictEqual(h.runtime.activeQueue(1), null);
});

/** A model that resets the device from inside handleChain on the `at`-th chain (0-based), then answers it. */
function resettingOn(at: number, h: () => ReturnType<typeof harness>, seen: number[]): VirtioDevice {
  return answeringWith((chain) => {
    seen.push(chain.head);
    if (seen.length === at + 1) h().runtime.writeStatus(0);
    return 0;
  });
}

test('a reset from inside handleChain ends the pass: the chain answered after it is not published, the next chain is not popped', () => {
  const seen: number[] = [];
  // eslint-disable-next-line prefer-const
  let h!: ReturnType<typeof harness>;
  h = harness(resettingOn(1, () => h, seen));
  const driver = bringUp(h);
  request(driver, 0, 1);
  request(driver, 1, 2);
  request(driver, 2, 3);
  h.runtime.notify(0);
  assert.deepEqual(seen, [0, 2], 'the third chain was not handed over');
  assert.deepEqual(driver.getUsed(), { token: 1, len: 0 }, 'the first answer went out before the reset');
  assert.equal(driver.getUsed(), null, 'the answer given after the reset is not published');
  assert.deepEqual(h.interrupts, [0]);
  assert.equal(h.runtime.status, 0);
});

test('a reset from inside handleChain during resubmit(): the rest is not handed over, nothing is published', () => {
  const seen: number[] = [];
  // eslint-disable-next-line prefer-const
  let h!: ReturnType<typeof harness>;
  h = harness(resettingOn(0, () => h, seen));
  const driver = bringUp(h);
  request(driver, 0, 1);
  request(driver, 1, 2);
  h.runtime.resubmit(0, [0, 2]);
  assert.deepEqual(seen, [0], 'the second chain was not handed to a reset device');
  assert.equal(driver.getUsed(), null);
  assert.deepEqual(h.interrupts, []);
});

test('a host whose interrupt callback resets the device at once (re-entrant, in one thread): the pass stops, no chain of the reset queue reaches the model', () => {
  const seen: number[] = [];
  const h = harness(answeringWith((chain) => (seen.push(chain.head), 0)));
  const driver = bringUp(h);
  for (let i = 0; i < 3; i++) request(driver, i, i + 1);
  h.onInterrupt = () => {
    if (h.runtime.status !== 0) h.runtime.writeStatus(0);
  };
  h.runtime.notify(0);
  assert.deepEqual(seen, [0], 'only the chain answered before the reset');
  assert.deepEqual(driver.getUsed(), { token: 1, len: 0 });
  assert.equal(driver.getUsed(), null);
  assert.equal(h.runtime.status, 0);
});
