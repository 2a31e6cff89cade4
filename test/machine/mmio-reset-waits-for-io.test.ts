// virtio 1.2 §2.4.1: "A device MUST NOT send notifications or interact with the queues after
// indicating completion of the reset by reinitializing device status to 0, until the driver
// re-initializes the device." §2.4.2: "The driver SHOULD consider a driver-initiated reset
// complete when it reads device status as 0."
//
// A device model answering asynchronously may hold views of the chain's buffers across an await
// (virtio-blk hands them to a preadv on libuv's pool). If a reset read back as complete while
// that I/O still ran, the I/O would write into buffers the driver has taken back and reused.
// So the embedded transport completes a reset only when the model's owed answers have settled,
// and the guest's virtio-bus waits for it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DeviceContext, VirtioDevice } from '../../src/device/device.js';
import { VirtioDriverDevice, type VirtioTransport } from '../../src/drivers/virtio-bus.js';
import { DeviceBus, createBus } from '../../src/machine/bus.js';
import { MmioDevice } from '../../src/machine/mmio-device.js';
import { MMIO } from '../../src/machine/mmio-registers.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';

const RAM = 0x10000;
const LIVE = Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;

/** A model that keeps the writable view of each chain and answers when the test says so. */
class HoldingDevice implements VirtioDevice {
  readonly deviceId = 0x7ff0;
  readonly features = 0n;
  readonly configSize = 0;
  readonly queueMaxSizes = [8];
  readonly pending: { view: Uint8Array; finish(): void }[] = [];
  readConfig(): void {}
  writeConfig(): void {}
  reset(): void {}
  handleChain(_q: number, chain: DescriptorChain, _ctx: DeviceContext): Promise<number> {
    const view = chain.writable[0]!; // held across the await, as a preadv's iovec would be
    return new Promise((resolve) => this.pending.push({ view, finish: () => resolve(view.length) }));
  }
}

function liveDevice() {
  const buffer = new SharedArrayBuffer(1 << 16);
  const memory = new GuestMemory([{ guestAddr: RAM, size: buffer.byteLength, buffer }]);
  const warnings: string[] = [];
  const model = new HoldingDevice();
  const dev = new MmioDevice(model, memory, new DeviceBus(createBus()), { log() {}, warn: (l) => warnings.push(l) });
  const features = bit(FeatureBit.VERSION_1);
  dev.write(MMIO.Status, Status.ACKNOWLEDGE | Status.DRIVER);
  dev.write(MMIO.DriverFeaturesSel, 1);
  dev.write(MMIO.DriverFeatures, Number(features >> 32n));
  dev.write(MMIO.Status, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  const ring = packedLayout(RAM, 8);
  const vq = new DriverQueue<number>(memory, ringViewsFromGuest(memory, ring), { eventIdx: false, indirect: false });
  dev.write(MMIO.QueueSel, 0);
  dev.write(MMIO.QueueNum, 8);
  dev.write(MMIO.QueueDescLow, ring.desc);
  dev.write(MMIO.QueueDriverLow, ring.avail);
  dev.write(MMIO.QueueDeviceLow, ring.used);
  dev.write(MMIO.QueueReady, 1);
  dev.write(MMIO.Status, LIVE);
  const buf = RAM + 0x4000;
  assert.ok(vq.add([{ addr: buf, len: 16 }], [{ addr: buf + 16, len: 16 }], 1));
  dev.notify(0);
  assert.equal(model.pending.length, 1, 'the model holds the request');
  return { dev, model, memory, warnings, ring, buf };
}

const tick = () => new Promise((r) => setImmediate(r));

test('a reset reads back as complete (Status 0) only after the I/O the model owed has settled (§2.4.1)', async () => {
  const { dev, model, memory, warnings, ring, buf } = liveDevice();
  dev.write(MMIO.Status, 0);
  assert.equal(dev.read(MMIO.Status), LIVE, 'reset in progress: Status is not 0 yet');
  dev.write(MMIO.Status, Status.ACKNOWLEDGE);
  assert.match(warnings.at(-1) ?? '', /status 1 written before the reset completed .*§2\.4\.2.*ignored/);
  assert.equal(dev.read(MMIO.Status), LIVE);

  // The model's I/O lands in the buffer it holds, then its answer settles.
  model.pending[0]!.view.fill(0xab);
  model.pending[0]!.finish();
  await tick();
  assert.equal(dev.read(MMIO.Status), 0, 'reset complete once nothing is owed');
  assert.equal(memory.readU16(ring.used + 2), 0, 'the answer after the reset never reached the used ring');
  assert.equal(memory.readU8(buf + 16), 0xab, 'the write happened before the reset was complete, not after');

  // A new initialization is served normally.
  dev.write(MMIO.Status, Status.ACKNOWLEDGE);
  assert.equal(dev.read(MMIO.Status), Status.ACKNOWLEDGE);
});

test('a reset with nothing owed completes at once', () => {
  const { dev, model } = liveDevice();
  model.pending[0]!.finish();
  return tick().then(() => {
    dev.write(MMIO.Status, 0);
    assert.equal(dev.read(MMIO.Status), 0);
  });
});

test("VirtioDriverDevice.reset() (virtio-bus) waits until the device reads Status back as 0, sleeping between reads", () => {
  let reads = 0;
  let status = LIVE;
  const transport = {
    deviceId: 1,
    getStatus: () => {
      reads++;
      if (reads === 4) status = 0; // the device completes its reset after a few polls
      return status;
    },
    setStatus: (s: number) => {
      if (s !== 0) status = s;
    },
    onInterrupt: () => {},
  } as unknown as VirtioTransport;
  const lines: string[] = [];
  const bus = new VirtioDriverDevice(transport, { printk: (l: string) => lines.push(l) } as never);
  const t0 = performance.now();
  bus.reset();
  assert.equal(reads, 4, 'polled until 0');
  assert.ok(performance.now() - t0 >= 2, 'slept between polls instead of spinning');
  assert.deepEqual(lines, []);
});
