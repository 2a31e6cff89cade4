/**
 * The guest thread of the embedded machine (the seed's Linux guest): boots a tiny kernel,
 * probes the virtio-mmio device, binds the device's guest driver (found in the registry by
 * the device's name), runs the user program named by argv[0] and reports its exit status.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { MachineControl } from '../devices/definition.js';
import { findDevice } from '../devices/registry.js';
import { VirtioDriverDevice } from '../drivers/virtio-bus.js';
import { GuestMemory } from '../virtio/memory.js';
import { GuestBus } from './bus.js';
import { ConsoleWriter } from './console.js';
import { EmbeddedKernel } from './guest-kernel.js';
import type { MachineMessage, MachineWorkerData } from './layout.js';
import { MmioDriverTransport } from './mmio-driver-transport.js';
import { startRingTracing } from '../trace/ring.js';

const data = workerData as MachineWorkerData;
if (data.trace) startRingTracing(data.trace.guestRing, data.bootMs, data.trace.events);
const post = (m: MachineMessage) => parentPort!.postMessage(m);
const bus = new GuestBus(data.bus);

async function boot(): Promise<number> {
  const memory = new GuestMemory([{ guestAddr: data.ramBase, size: data.ram.byteLength, buffer: data.ram }]);
  const kernel = new EmbeddedKernel(
    memory,
    { base: data.ramBase, size: data.ram.byteLength },
    data.bootMs,
    new ConsoleWriter(data.console),
    {
      verbose: data.verbose,
      quiet: data.quiet,
      progress: (done, total) => bus.setProgress(done, total),
      report: (fields) => post({ kind: 'report', fields }),
    },
  );
  const guestSide = findDevice(data.device)?.embedded;
  if (!guestSide) throw new Error(`device '${data.device}' has no guest driver for the embedded machine`);
  const transport = new MmioDriverTransport(bus);
  kernel.printk(`virtio-mmio: device ${transport.deviceId} found`, 'debug');
  const driver = (await guestSide.loadDriver())([data.driverDeviceId], data.deviceOptions);
  let control: MachineControl | undefined;
  if (driver.deviceIds.includes(transport.deviceId)) {
    const dev = new VirtioDriverDevice(transport, kernel, { ring: data.ring });
    // unbind + bind, as through sysfs: reset with buffers in flight, then re-negotiation
    control = {
      async rebind() {
        driver.remove?.(dev);
        dev.deleteQueues();
        await dev.bind(driver);
      },
    };
    try {
      await dev.bind(driver);
      kernel.printk(`${driver.name}: bound to device ${transport.deviceId}`, 'debug');
    } catch (e) {
      kernel.printk(`${driver.name}: probe failed: ${(e as Error).message}`);
    }
  }
  // the program is picked by argv[0], as a shell would
  const program = await guestSide.loadProgram(data.argv[0] ?? '');
  if (!program) {
    kernel.print(`sh: ${data.argv[0]}: not found`);
    return 127;
  }
  return program(kernel, data.argv, control);
}

boot().then(
  (code) => post({ kind: 'exit', code }),
  (e: unknown) => post({ kind: 'fatal', message: `guest thread: ${(e as Error).stack ?? e}` }),
);
