// virtio 1.2 §4.2.2.1: "The device MUST NOT access virtual queue contents when QueueReady is
// zero (0x0)." §4.2.2.2: "To stop using the queue the driver MUST write zero (0x0) to this
// QueueReady and MUST read the value back to ensure synchronization."
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE, encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { DeviceBus, createBus } from '../../src/machine/bus.js';
import { MmioDevice } from '../../src/machine/mmio-device.js';
import { MMIO } from '../../src/machine/mmio-registers.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';

const RAM = 0x10000;

test('after QueueReady is written 0 the device no longer touches that queue (§4.2.2.1)', () => {
  const buffer = new SharedArrayBuffer(1 << 16);
  const memory = new GuestMemory([{ guestAddr: RAM, size: buffer.byteLength, buffer }]);
  const bus = new DeviceBus(createBus());
  const dev = new MmioDevice(new VirtioTestDevice(), memory, bus, { log() {}, warn() {} });
  const features = bit(FeatureBit.VERSION_1) | bit(0);
  dev.write(MMIO.Status, 0);
  dev.write(MMIO.Status, Status.ACKNOWLEDGE);
  dev.write(MMIO.Status, Status.ACKNOWLEDGE | Status.DRIVER);
  dev.write(MMIO.DriverFeaturesSel, 1);
  dev.write(MMIO.DriverFeatures, Number(features >> 32n));
  dev.write(MMIO.DriverFeaturesSel, 0);
  dev.write(MMIO.DriverFeatures, Number(features & 0xffff_ffffn));
  dev.write(MMIO.Status, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  const size = 8;
  const ring = packedLayout(RAM, size);
  const vq = new DriverQueue<number>(memory, ringViewsFromGuest(memory, ring), { eventIdx: false, indirect: false });
  dev.write(MMIO.QueueSel, 0);
  dev.write(MMIO.QueueNum, size);
  dev.write(MMIO.QueueDescLow, ring.desc);
  dev.write(MMIO.QueueDriverLow, ring.avail);
  dev.write(MMIO.QueueDeviceLow, ring.used);
  dev.write(MMIO.QueueReady, 1);
  dev.write(MMIO.Status, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);

  const buf = RAM + 0x4000;
  const addRequest = (token: number): void => {
    encodeRequest(requestFor(1), memory.slice(buf, REQUEST_SIZE));
    assert.ok(vq.add([{ addr: buf, len: REQUEST_SIZE }], [{ addr: buf + REQUEST_SIZE, len: RESPONSE_SIZE }], token));
    dev.notify(0);
  };
  addRequest(1);
  assert.equal(vq.getUsed()?.token, 1, 'the live queue is served');

  // The driver stops using the queue (as Linux's vm_del_vq does) and reads the bit back.
  dev.write(MMIO.QueueReady, 0);
  assert.equal(dev.read(MMIO.QueueReady), 0);
  const usedBefore = memory.readU16(ring.used + 2);
  addRequest(2);
  assert.equal(memory.readU16(ring.used + 2), usedBefore, 'a queue with QueueReady 0 must not be accessed');
  assert.equal(vq.getUsed(), null);
});
