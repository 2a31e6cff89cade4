/**
 * The device thread of the embedded machine (the seed's QEMU): the registered device named in
 * the worker data, opened with its options, behind a virtio-mmio register file, served from
 * the bus until the machine shuts down.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SlowDevice } from '../device/slow-device.js';
import { findDevice } from '../devices/registry.js';
import { GuestMemory } from '../virtio/memory.js';
import { DeviceBus } from './bus.js';
import { ConsoleWriter } from './console.js';
import type { DeviceThreadRequest, MachineMessage, MachineWorkerData } from './layout.js';
import { MmioDevice } from './mmio-device.js';
import { startRingTracing } from '../trace/ring.js';

const data = workerData as MachineWorkerData;
const post = (m: MachineMessage) => parentPort!.postMessage(m);
if (data.trace) startRingTracing(data.trace.deviceRing, data.bootMs, data.trace.events);
let served: MmioDevice | undefined;
// The machine asks for the device's state at the end of a run (virtio --stats): one message, not per event.
parentPort!.on('message', (m: DeviceThreadRequest) => {
  if (m.kind === 'stats' && served) post({ kind: 'stats', stats: served.runtime.stats() });
});
parentPort!.unref();
const bus = new DeviceBus(data.bus);
const console = new ConsoleWriter(data.console);
const out = (stream: 'stdout' | 'stderr') => (text: string) => void console.write(text, stream);
const warn = (line: string) => out('stderr')(`${data.device} device: ${line}`);

async function start(): Promise<void> {
  const definition = findDevice(data.device);
  if (!definition) throw new Error(`no device '${data.device}' is registered`);
  let factory;
  try {
    factory = await definition.open(data.deviceOptions, { log: out('stdout'), warn, quiet: data.quiet });
  } catch (e) {
    // A device that cannot open (a missing file, a lock held elsewhere) is the user's error, not a crash.
    post({ kind: 'fatal', message: (e as Error).message });
    return;
  }
  const memory = new GuestMemory([{ guestAddr: data.ramBase, size: data.ram.byteLength, buffer: data.ram }]);
  const model = factory.createDevice();
  const device =
    data.deviceDelayMs > 0 || data.deviceSlowness
      ? new SlowDevice(model, { ...data.deviceSlowness, delayMs: data.deviceDelayMs + (data.deviceSlowness?.delayMs ?? 0) })
      : model;
  const mmio = new MmioDevice(device, memory, bus, { log: data.quiet ? () => {} : out('stdout'), warn });
  served = mmio;
  try {
    await bus.serve(mmio);
  } finally {
    await factory.close?.();
  }
}

start().catch((e: unknown) => post({ kind: 'fatal', message: `device thread: ${(e as Error).stack ?? e}` }));
