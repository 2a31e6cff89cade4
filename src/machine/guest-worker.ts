/**
 * The guest thread of the embedded machine (the seed's Linux guest): boots a tiny kernel,
 * probes the virtio-mmio device, binds the virtio-test driver (which registers
 * /dev/virtio_misc), runs the user program and reports its exit status.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { VirtioTestDriver } from '../drivers/virtio-test/driver.js';
import { VirtioDriverDevice } from '../drivers/virtio-bus.js';
import { GuestMemory } from '../virtio/memory.js';
import { GuestBus } from './bus.js';
import { EmbeddedKernel } from './guest-kernel.js';
import type { MachineMessage, MachineWorkerData } from './layout.js';
import { MmioDriverTransport } from './mmio-driver-transport.js';
import { stressProgram, type MachineControl } from './programs/stress.js';
import { virtioProgram } from './programs/virtio.js';

const data = workerData as MachineWorkerData;
const post = (m: MachineMessage) => parentPort!.postMessage(m);
const bus = new GuestBus(data.bus);

async function boot(): Promise<number> {
  const memory = new GuestMemory([{ guestAddr: data.ramBase, size: data.ram.byteLength, buffer: data.ram }]);
  const kernel = new EmbeddedKernel(
    memory,
    { base: data.ramBase, size: data.ram.byteLength },
    data.bootMs,
    { write: (text, stream = 'stdout') => post({ kind: 'console', seq: bus.nextConsoleSeq(), stream, text }) },
    data.verbose,
  );
  const transport = new MmioDriverTransport(bus);
  kernel.printk(`virtio-mmio: device ${transport.deviceId} found`, 'debug');
  const driver = new VirtioTestDriver({ deviceIds: [data.driverDeviceId] });
  let control: MachineControl | undefined;
  if (driver.deviceIds.includes(transport.deviceId)) {
    const dev = new VirtioDriverDevice(transport, kernel);
    // unbind + bind, as through sysfs: reset with buffers in flight, then re-negotiation
    control = {
      async rebind() {
        driver.remove(dev);
        dev.deleteQueues();
        await dev.bind(driver);
      },
    };
    kernel.printk(`>>>>>> virttest_probe function is called <<<<<<`, 'debug');
    try {
      await dev.bind(driver);
      kernel.printk('misc register has succeeded', 'debug');
    } catch (e) {
      kernel.printk(`virtio_test: probe failed: ${(e as Error).message}`);
    }
  }
  // the program is picked by argv[0], as a shell would
  if (data.argv[0] === 'stress') return stressProgram(kernel, data.argv, control);
  return virtioProgram(kernel, data.argv);
}

boot().then(
  (code) => post({ kind: 'exit', code }),
  (e: unknown) => post({ kind: 'fatal', message: `guest thread: ${(e as Error).stack ?? e}` }),
);
