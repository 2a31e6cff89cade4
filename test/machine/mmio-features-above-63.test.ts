// virtio 1.2 §2.2.1: the device fails FEATURES_OK for features it did not offer; none above bit 63 are.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { DeviceBus, createBus } from '../../src/machine/bus.js';
import { MmioDevice } from '../../src/machine/mmio-device.js';
import { MMIO } from '../../src/machine/mmio-registers.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { GuestMemory } from '../../src/virtio/memory.js';

test('a driver feature written above bit 63 (DriverFeaturesSel 2) makes FEATURES_OK fail', () => {
  const buffer = new SharedArrayBuffer(1 << 16);
  const dev = new MmioDevice(new VirtioTestDevice(), new GuestMemory([{ guestAddr: 0x10000, size: buffer.byteLength, buffer }]), new DeviceBus(createBus()), { log() {}, warn() {} });
  const features = bit(FeatureBit.VERSION_1) | bit(0);
  const negotiate = (extra: number) => {
    dev.write(MMIO.Status, 0);
    dev.write(MMIO.Status, Status.ACKNOWLEDGE | Status.DRIVER);
    dev.write(MMIO.DriverFeaturesSel, 1);
    dev.write(MMIO.DriverFeatures, Number(features >> 32n));
    dev.write(MMIO.DriverFeaturesSel, 0);
    dev.write(MMIO.DriverFeatures, Number(features & 0xffff_ffffn));
    dev.write(MMIO.DriverFeaturesSel, 2);
    dev.write(MMIO.DriverFeatures, extra);
    dev.write(MMIO.Status, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    return dev.read(MMIO.Status) & Status.FEATURES_OK;
  };
  assert.equal(negotiate(1), 0, 'bit 64 accepted by the driver: refused');
  assert.equal(negotiate(0), Status.FEATURES_OK, 'nothing above bit 63: accepted');
});
