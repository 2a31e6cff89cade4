/**
 * The device thread of the embedded machine (the seed's QEMU): the virtio-test device model
 * behind a virtio-mmio register file, served from the bus until the machine shuts down.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { VirtioTestDevice } from '../devices/virtio-test/device.js';
import { GuestMemory } from '../virtio/memory.js';
import { DeviceBus } from './bus.js';
import type { MachineMessage, MachineWorkerData } from './layout.js';
import { MmioDevice } from './mmio-device.js';
import { SlowDevice } from '../device/slow-device.js';

const data = workerData as MachineWorkerData;
const post = (m: MachineMessage) => parentPort!.postMessage(m);
const bus = new DeviceBus(data.bus);
const out = (stream: 'stdout' | 'stderr') => (text: string) =>
  post({ kind: 'console', seq: bus.nextConsoleSeq(), stream, text });

const memory = new GuestMemory([{ guestAddr: data.ramBase, size: data.ram.byteLength, buffer: data.ram }]);
const model = new VirtioTestDevice({ deviceId: data.deviceId, queueSize: data.queueSize });
const device = data.deviceDelayMs > 0 ? new SlowDevice(model, data.deviceDelayMs) : model;
const mmio = new MmioDevice(device, memory, bus, {
  log: out('stdout'),
  warn: (line) => out('stderr')(`virtio-test device: ${line}`),
});

bus.serve(mmio).catch((e: unknown) => post({ kind: 'fatal', message: `device thread: ${(e as Error).stack ?? e}` }));
