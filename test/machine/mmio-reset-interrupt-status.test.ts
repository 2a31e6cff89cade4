// virtio 1.2 §4.2.2.1: "Upon reset, the device MUST clear all bits in InterruptStatus and
// ready bits in the QueueReady register for all queues in the device."
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { DeviceBus, createBus } from '../../src/machine/bus.js';
import { MmioDevice } from '../../src/machine/mmio-device.js';
import { Interrupt, MMIO } from '../../src/machine/mmio-registers.js';
import { Status } from '../../src/virtio/constants.js';
import { GuestMemory } from '../../src/virtio/memory.js';

test('a Status write of 0 clears InterruptStatus (§4.2.2.1)', () => {
  const buffer = new SharedArrayBuffer(1 << 16);
  const memory = new GuestMemory([{ guestAddr: 0x10000, size: buffer.byteLength, buffer }]);
  const bus = new DeviceBus(createBus());
  const dev = new MmioDevice(new VirtioTestDevice(), memory, bus, { log() {}, warn() {} });
  bus.raise(Interrupt.VRING | Interrupt.CONFIG); // pending, not yet acknowledged by the driver
  assert.equal(dev.read(MMIO.InterruptStatus), Interrupt.VRING | Interrupt.CONFIG);
  dev.write(MMIO.Status, Status.ACKNOWLEDGE);
  dev.write(MMIO.Status, 0);
  assert.equal(dev.read(MMIO.Status), 0);
  assert.equal(dev.read(MMIO.InterruptStatus), 0);
});
