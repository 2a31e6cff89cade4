// virtio 1.2 §4.2.2.2: "The driver MUST only use 32 bit wide and aligned reads and writes to
// access the control registers described in table 4.1. For the device-specific configuration
// space, the driver MUST use 8 bit wide accesses for 8 bit wide fields, 16 bit wide and aligned
// accesses for 16 bit wide fields and 32 bit wide and aligned accesses for 32 and 64 bit wide
// fields."
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { VirtioDevice } from '../../src/device/device.js';
import { DeviceBus, GuestBus, createBus } from '../../src/machine/bus.js';
import { MmioDevice } from '../../src/machine/mmio-device.js';
import { MmioDriverTransport } from '../../src/machine/mmio-driver-transport.js';
import { MMIO } from '../../src/machine/mmio-registers.js';
import { GuestMemory } from '../../src/virtio/memory.js';

function configDevice(): VirtioDevice & { config: Uint8Array } {
  const config = Uint8Array.of(0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa);
  return {
    config,
    deviceId: 99,
    features: 0n,
    configSize: config.length,
    queueMaxSizes: [8],
    readConfig: (offset, into) => into.set(config.subarray(offset, offset + into.length)),
    writeConfig: (offset, data) => config.set(data, offset),
    handleChain: () => 0,
    reset() {},
  };
}

function mmio(device = configDevice()) {
  const buffer = new SharedArrayBuffer(1 << 16);
  const memory = new GuestMemory([{ guestAddr: 0x10000, size: buffer.byteLength, buffer }]);
  const warnings: string[] = [];
  const dev = new MmioDevice(device, memory, new DeviceBus(createBus()), { log() {}, warn: (l) => warnings.push(l) });
  return { dev, device, warnings };
}

test('config space: 8-, 16- and 32-bit aligned reads and writes see the bytes at their offsets', () => {
  const { dev, device, warnings } = mmio();
  assert.equal(dev.read(MMIO.Config + 1, 1), 0x22);
  assert.equal(dev.read(MMIO.Config + 2, 2), 0x4433);
  assert.equal(dev.read(MMIO.Config + 4, 4), 0x88776655);
  assert.equal(dev.read(MMIO.Config + 9, 1), 0xaa);
  dev.write(MMIO.Config + 3, 0xfe, 1);
  dev.write(MMIO.Config + 8, 0xbeef, 2);
  assert.deepEqual([...device.config], [0x11, 0x22, 0x33, 0xfe, 0x55, 0x66, 0x77, 0x88, 0xef, 0xbe]);
  assert.deepEqual(warnings, []);
});

test('unaligned config accesses and narrow control-register accesses are refused: read 0, write dropped, logged', () => {
  const { dev, device, warnings } = mmio();
  assert.equal(dev.read(MMIO.Config + 1, 2), 0);
  assert.equal(dev.read(MMIO.Config + 2, 4), 0);
  dev.write(MMIO.Config + 1, 0xffff, 2);
  assert.equal(device.config[1], 0x22);
  assert.equal(dev.read(MMIO.DeviceID, 2), 0);
  assert.equal(dev.read(MMIO.DeviceID, 4), 99);
  dev.write(MMIO.Status, 1, 1);
  assert.equal(dev.read(MMIO.Status, 4), 0, 'a byte write to Status is not a status write');
  assert.equal(warnings.length, 5);
  assert.match(warnings[0]!, /§4\.2\.2\.2/);
});

test("the driver transport reads fields with their own width, as Linux's virtio_mmio does", () => {
  const { dev } = mmio();
  const widths: number[] = [];
  // The guest's accesses block until another thread serves them: in one thread, the bus is
  // replaced by one that records each access's width and serves it at once.
  const recording = Object.assign(Object.create(new GuestBus(createBus())) as GuestBus, {
    mmioRead(offset: number, width: 1 | 2 | 4 = 4) {
      widths.push(width);
      return dev.read(offset, width);
    },
  });
  const t = new MmioDriverTransport(recording);
  widths.length = 0;
  assert.deepEqual([...t.readConfig(1, 1)], [0x22]);
  assert.deepEqual([...t.readConfig(2, 2)], [0x33, 0x44]);
  assert.deepEqual([...t.readConfig(0, 8)], [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
  assert.deepEqual([...t.readConfig(5, 3)], [0x66, 0x77, 0x88]);
  assert.deepEqual(widths, [1, 2, 4, 4, 1, 1, 1]);
});
