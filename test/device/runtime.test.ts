import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { packedLayout } from '../../src/virtio/split-ring.js';
import { RAM, answeringWith, bringUp, harness } from '../helpers/runtime.js';

const V1 = bit(FeatureBit.VERSION_1);
const ACK_DRIVER = Status.ACKNOWLEDGE | Status.DRIVER;

test('offers the device features plus VERSION_1, INDIRECT_DESC, EVENT_IDX and RING_PACKED', () => {
  const h = harness(new VirtioTestDevice());
  assert.equal(h.runtime.offeredFeatures, bit(0) | V1 | bit(FeatureBit.RING_INDIRECT_DESC) | bit(FeatureBit.RING_EVENT_IDX) | bit(FeatureBit.RING_PACKED));
});

test('FEATURES_OK is refused for a feature that was not offered (§2.2.1)', () => {
  const h = harness(new VirtioTestDevice());
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1 | bit(5));
  h.runtime.writeStatus(ACK_DRIVER | Status.FEATURES_OK);
  assert.equal(h.runtime.status & Status.FEATURES_OK, 0);
  assert.match(h.warnings.join('\n'), /not offered/);
});

test('FEATURES_OK is refused without VERSION_1 (legacy drivers are not supported)', () => {
  const h = harness(new VirtioTestDevice());
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(bit(0));
  h.runtime.writeStatus(ACK_DRIVER | Status.FEATURES_OK);
  assert.equal(h.runtime.status & Status.FEATURES_OK, 0);
});

test('a subset of the offered features is accepted, and features are frozen after FEATURES_OK', () => {
  const h = harness(new VirtioTestDevice());
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1);
  h.runtime.writeStatus(ACK_DRIVER | Status.FEATURES_OK);
  assert.ok(h.runtime.status & Status.FEATURES_OK);
  h.runtime.writeDriverFeatures(V1 | bit(0));
  assert.equal(h.runtime.driverFeatures, V1);
});

test('status rules: no clearing bits, no DRIVER_OK before FEATURES_OK, 0 resets', () => {
  const h = harness(new VirtioTestDevice());
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeStatus(Status.ACKNOWLEDGE);
  assert.equal(h.runtime.status, ACK_DRIVER, 'clearing DRIVER is ignored (§2.1.1)');
  h.runtime.writeStatus(ACK_DRIVER | Status.DRIVER_OK);
  assert.equal(h.runtime.status & Status.DRIVER_OK, 0);
  h.runtime.writeStatus(0);
  assert.equal(h.runtime.status, 0);
  assert.equal(h.runtime.driverFeatures, 0n);
});

test('nothing is consumed before DRIVER_OK (§2.1.2)', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const driver = bringUp(h);
  h.runtime.reset();
  // set up again but stop before DRIVER_OK
  h.runtime.writeStatus(ACK_DRIVER);
  h.runtime.writeDriverFeatures(V1 | bit(0));
  h.runtime.writeStatus(ACK_DRIVER | Status.FEATURES_OK);
  driver.add([{ addr: RAM + 0x8000, len: 48 }], [{ addr: RAM + 0x8100, len: 12 }], 1);
  h.runtime.notify(0);
  assert.equal(h.memory.readU16(RAM + 0x8100), 0, 'no response was written');
  assert.equal(h.interrupts.length, 0);
  assert.equal(driver.getUsed(), null);
});

test('a device error sets NEEDS_RESET, stops the queue and sends a config interrupt', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const driver = bringUp(h);
  // a request with only 8 readable bytes: virtio-test needs 48
  driver.add([{ addr: RAM + 0x8000, len: 8 }], [{ addr: RAM + 0x8100, len: 12 }], 1);
  h.runtime.notify(0);
  assert.ok(h.runtime.status & Status.NEEDS_RESET);
  assert.equal(h.configInterrupts, 1);
  assert.equal(h.deviceErrors.length, 1);
  assert.match(h.warnings.join('\n'), /DEVICE_REQUEST_INVALID/);
  assert.equal(h.runtime.activeQueue(0), null);
  // further notifications do nothing; reset brings it back
  driver.add([{ addr: RAM + 0x9000, len: 48 }], [{ addr: RAM + 0x9100, len: 12 }], 2);
  h.runtime.notify(0);
  assert.equal(h.interrupts.length, 0);
  h.runtime.writeStatus(0);
  assert.equal(h.runtime.status, 0);
  bringUp(h);
  assert.ok(h.runtime.driverOk);
});

test('config space: reads, generation bump and notification on a device-side change', () => {
  const dev = new VirtioTestDevice({ print: false });
  const h = harness(dev);
  bringUp(h);
  assert.deepEqual([...h.runtime.readConfig(0, 12)], new Array(12).fill(0));
  const gen = h.runtime.configGeneration;
  dev.setNumPages(7, { memory: h.memory, driverFeatures: 0n, log: () => {}, configChanged: () => h.runtime.configChanged() });
  assert.equal(h.runtime.configGeneration, gen + 1);
  assert.equal(h.configInterrupts, 1);
  assert.deepEqual([...h.runtime.readConfig(0, 4)], [7, 0, 0, 0]);
  // driver writes actual (offset 4) and cannot write num_pages (offset 0)
  h.runtime.writeConfig(0, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
  assert.deepEqual([...h.runtime.readConfig(0, 8)], [7, 0, 0, 0, 5, 6, 7, 8]);
  // out of range: ignored with a warning, reads past the end are zero
  h.runtime.writeConfig(10, Uint8Array.of(1, 2, 3, 4));
  assert.match(h.warnings.join('\n'), /outside the 12-byte config space/);
  assert.deepEqual([...h.runtime.readConfig(8, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
});

test('a device model that returns a bad used length is a device error, not a crash', () => {
  const dev = new VirtioTestDevice({ print: false });
  const bad = Object.assign(Object.create(Object.getPrototypeOf(dev)), dev, { handleChain: () => 1000 });
  const h = harness(bad);
  const driver = bringUp(h);
  driver.add([{ addr: RAM + 0x8000, len: 48 }], [{ addr: RAM + 0x8100, len: 12 }], 1);
  h.runtime.notify(0);
  assert.ok(h.runtime.status & Status.NEEDS_RESET);
  assert.match(h.warnings.join('\n'), /used length 1000/);
});

test('a rule broken mid-pass: chains answered earlier in the pass are still published', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const driver = bringUp(h);
  driver.add([{ addr: RAM + 0x8000, len: 48 }], [{ addr: RAM + 0x8100, len: 12 }], 1, false);
  driver.add([{ addr: RAM + 0x9000, len: 8 }], [{ addr: RAM + 0x9100, len: 12 }], 2, false); // too short
  driver.publish();
  h.runtime.notify(0);
  assert.ok(h.runtime.status & Status.NEEDS_RESET);
  assert.deepEqual(driver.getUsed(), { token: 1, len: 12 });
  assert.equal(driver.getUsed(), null);
});

test('a long pass publishes the used ring at its first answer, then every publishBatch answers, each publication with its own notification decision', () => {
  const size = 32; // room for 16 two-descriptor chains
  const usedIdxAddr = packedLayout(RAM, size).used + 2;
  for (const [publishBatch, expected] of [
    [4, [1, 5, 9, 10]],
    [5, [1, 6, 10]],
    [1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]],
    [0, [10]],
    [32, [1, 10]],
  ] as const) {
    const h = harness(new VirtioTestDevice({ print: false }), { publishBatch });
    const seen: number[] = [];
    h.onInterrupt = () => seen.push(h.memory.readU16(usedIdxAddr));
    const driver = bringUp(h, undefined, size);
    for (let i = 0; i < 10; i++) {
      assert.ok(driver.add([{ addr: RAM + 0x8000 + 0x100 * i, len: 48 }], [{ addr: RAM + 0x8080 + 0x100 * i, len: 12 }], i, false));
    }
    driver.publish();
    h.runtime.notify(0);
    assert.deepEqual(seen, expected, `publishBatch ${publishBatch}: used.idx at each notification`);
    for (let i = 0; i < 10; i++) assert.deepEqual(driver.getUsed(), { token: i, len: 12 });
  }
  assert.throws(() => harness(new VirtioTestDevice(), { publishBatch: -1 }), RangeError);
  assert.throws(() => harness(new VirtioTestDevice(), { publishBatch: 1.5 }), RangeError);
});

test('with event idx each publication asks used_event (§2.7.7.2), and a re-check pass publishes its first answer at once again', () => {
  const size = 32;
  const usedIdxAddr = packedLayout(RAM, size).used + 2;
  const request = (driver: ReturnType<typeof bringUp>, i: number) =>
    assert.ok(driver.add([{ addr: RAM + 0x8000 + 0x100 * i, len: 48 }], [{ addr: RAM + 0x8080 + 0x100 * i, len: 12 }], i, false));
  for (const drain of [false, true]) {
    const h = harness(new VirtioTestDevice({ print: false }), { publishBatch: 4 });
    const driver = bringUp(h, V1 | bit(0) | bit(FeatureBit.RING_EVENT_IDX), size);
    const seen: number[] = [];
    const tokens: number[] = [];
    let added = false;
    h.onInterrupt = () => {
      const usedIdx = h.memory.readU16(usedIdxAddr);
      seen.push(usedIdx);
      if (!drain) return;
      // A driver that takes what it is told about keeps used_event just behind it (re-armed).
      for (let t = driver.getUsed(); t !== null; t = driver.getUsed()) tokens.push(t.token);
      if (usedIdx === 10 && !added) {
        // Buffers made available during the end-of-pass notification: the device finds them
        // when it re-enables kicks and re-checks, and serves them in a new pass.
        added = true;
        for (let i = 10; i < 13; i++) request(driver, i);
        driver.publish();
      }
    };
    for (let i = 0; i < 10; i++) request(driver, i);
    driver.publish();
    h.runtime.notify(0);
    if (drain) {
      assert.deepEqual(seen, [1, 5, 9, 10, 11, 13], 'a re-armed driver is told at every publication that passes used_event');
      assert.deepEqual(tokens, Array.from({ length: 13 }, (_, i) => i));
    } else {
      // used_event stays at 0: only the first publication passes it.
      assert.deepEqual(seen, [1], 'a driver that does not re-arm is told once');
      for (let i = 0; i < 10; i++) assert.deepEqual(driver.getUsed(), { token: i, len: 12 });
    }
  }
});

test('a device answering after a reset cannot write into the buffers the driver got back', async () => {
  const dev = new VirtioTestDevice({ print: false });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const late = Object.assign(Object.create(Object.getPrototypeOf(dev)), dev, {
    handleChain: async (_q: number, chain: import('../../src/virtio/chain.js').DescriptorChain) => {
      await gate;
      return chain.write(new Uint8Array(12).fill(0xee));
    },
  });
  const h = harness(late);
  const driver = bringUp(h);
  driver.add([{ addr: RAM + 0x8000, len: 48 }], [{ addr: RAM + 0x8100, len: 12 }], 1);
  h.runtime.notify(0);
  h.runtime.writeStatus(0); // reset while the device holds the chain
  release();
  await new Promise((r) => setImmediate(r));
  assert.ok(h.memory.slice(RAM + 0x8100, 12).every((b) => b === 0), 'the late answer was not written');
});

// The used length a device model answers (DeviceRuntime.checkUsedLength): §2.7.8 "len: the total
// bytes written into the buffer", so an integer from 0 to the chain's device-writable bytes. Each
// chain here has 48 readable and 12 writable bytes; the boundary values are the ones a wrong check
// (> instead of >=, readable + writable instead of writable, no integer test, no sign test) lets through.
const READABLE = 48;
const WRITABLE = 12;
const BAD_LENGTHS = [WRITABLE + 1, -1, 0.5, WRITABLE - 0.5, READABLE + WRITABLE, Number.NaN];

for (const timing of ['at once', 'later (a promise)'] as const) {
  const answer = (len: number) => (timing === 'at once' ? () => len : async () => len);
  const flush = () => new Promise((r) => setImmediate(r));

  test(`a used length of exactly the writable bytes, and 0, are accepted (${timing})`, async () => {
    for (const len of [WRITABLE, 0]) {
      const h = harness(answeringWith(answer(len)));
      const driver = bringUp(h);
      driver.add([{ addr: RAM + 0x8000, len: READABLE }], [{ addr: RAM + 0x8100, len: WRITABLE }], 1);
      h.runtime.notify(0);
      await flush();
      assert.deepEqual(driver.getUsed(), { token: 1, len }, `len ${len}`);
      assert.equal(h.runtime.status & Status.NEEDS_RESET, 0, `len ${len}: no device error`);
      assert.deepEqual(h.deviceErrors, []);
      assert.deepEqual(h.interrupts, [0]);
    }
  });

  for (const len of BAD_LENGTHS) {
    test(`a used length of ${len} for ${READABLE} readable + ${WRITABLE} writable bytes is a device error (${timing})`, async () => {
      const h = harness(answeringWith(answer(len)));
      const driver = bringUp(h);
      driver.add([{ addr: RAM + 0x8000, len: READABLE }], [{ addr: RAM + 0x8100, len: WRITABLE }], 1);
      h.runtime.notify(0);
      await flush();
      assert.ok(h.runtime.status & Status.NEEDS_RESET, 'NEEDS_RESET');
      assert.equal(h.deviceErrors.length, 1);
      assert.equal(h.configInterrupts, 1, 'the driver is told by a configuration change notification (§2.1.2)');
      assert.match(h.warnings.join('\n'), new RegExp(`device error on queue 0: .*used length ${len} for a chain with ${WRITABLE} writable bytes`));
      assert.equal(driver.getUsed(), null, 'no used element');
      assert.deepEqual(h.interrupts, [], 'no used buffer notification');
      assert.equal(h.runtime.activeQueue(0), null, 'the queue stopped');
    });
  }
}

test('a device model whose promise rejects is a device error: NEEDS_RESET, no used element, the queue stops', async () => {
  let reject!: (e: Error) => void;
  const h = harness(answeringWith(() => new Promise<number>((_, r) => (reject = r))));
  const driver = bringUp(h);
  driver.add([{ addr: RAM + 0x8000, len: READABLE }], [{ addr: RAM + 0x8100, len: WRITABLE }], 1);
  h.runtime.notify(0);
  assert.equal(h.runtime.owedCount, 1);
  assert.equal(h.runtime.status & Status.NEEDS_RESET, 0, 'nothing wrong while the answer is owed');
  reject(new Error('backing store gone'));
  await h.runtime.settled();
  await new Promise((r) => setImmediate(r));
  assert.ok(h.runtime.status & Status.NEEDS_RESET, 'NEEDS_RESET');
  assert.equal(h.deviceErrors.length, 1);
  assert.equal((h.deviceErrors[0] as Error).message, 'backing store gone');
  assert.equal(h.configInterrupts, 1);
  assert.match(h.warnings.join('\n'), /device error on queue 0: device model failed: Error: backing store gone/);
  assert.equal(driver.getUsed(), null, 'no used element');
  assert.deepEqual(h.interrupts, []);
  assert.equal(h.runtime.activeQueue(0), null, 'the queue stopped');
  assert.equal(h.runtime.owedCount, 0, 'nothing owed any more');
  // Further buffers are not served; a reset and a new handshake serve again.
  driver.add([{ addr: RAM + 0x9000, len: READABLE }], [{ addr: RAM + 0x9100, len: WRITABLE }], 2);
  h.runtime.notify(0);
  assert.equal(h.runtime.owedCount, 0, 'the stopped queue gave the model nothing');
  h.runtime.writeStatus(0);
  assert.equal(h.runtime.status, 0);
});

test('a promise that rejects after a reset is not a device error of the new session', async () => {
  const rejects: ((e: Error) => void)[] = [];
  const h = harness(answeringWith(() => new Promise<number>((_, r) => rejects.push(r))));
  const driver = bringUp(h);
  driver.add([{ addr: RAM + 0x8000, len: READABLE }], [{ addr: RAM + 0x8100, len: WRITABLE }], 1);
  h.runtime.notify(0);
  h.runtime.writeStatus(0);
  bringUp(h);
  rejects[0]!(new Error('late failure'));
  await h.runtime.settled();
  await new Promise((r) => setImmediate(r));
  assert.equal(h.runtime.status & Status.NEEDS_RESET, 0);
  assert.deepEqual(h.deviceErrors, []);
});
