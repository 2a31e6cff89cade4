/** A DeviceRuntime with a recording host, and a driver queue on the same memory, in one thread. */
import type { VirtioDevice } from '../../src/device/device.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { DeviceRuntime, type DeviceHost, type DeviceRuntimeOptions } from '../../src/device/runtime.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';

export const RAM = 0x100000;
export const RAM_BYTES = 1 << 20;

export interface Harness {
  memory: GuestMemory;
  bytes: Uint8Array;
  runtime: DeviceRuntime;
  interrupts: number[];
  configInterrupts: number;
  logs: string[];
  warnings: string[];
  deviceErrors: unknown[];
  /** Called on each used buffer notification, after it is recorded (to look at the ring then). */
  onInterrupt?: (queue: number) => void;
}

export function harness(device: VirtioDevice, options: DeviceRuntimeOptions = {}): Harness {
  const buffer = new SharedArrayBuffer(RAM_BYTES);
  const memory = new GuestMemory([{ guestAddr: RAM, size: RAM_BYTES, buffer }]);
  const h = { memory, bytes: new Uint8Array(buffer), interrupts: [], configInterrupts: 0, logs: [], warnings: [], deviceErrors: [] } as unknown as Harness;
  const host: DeviceHost = {
    interrupt: (q) => {
      h.interrupts.push(q);
      h.onInterrupt?.(q);
    },
    configInterrupt: () => h.configInterrupts++,
    log: (l) => h.logs.push(l),
    warn: (l) => h.warnings.push(l),
    onDeviceError: (_q, e) => h.deviceErrors.push(e),
  };
  h.runtime = new DeviceRuntime(device, memory, host, options);
  return h;
}

/** Runs the §3.1.1 handshake with `features` and sets up queue 0 at the start of RAM. Returns the driver half. */
export function bringUp(
  h: Harness,
  features: bigint = bit(FeatureBit.VERSION_1) | bit(0),
  size = 8,
): DriverQueue<number> {
  const rt = h.runtime;
  rt.writeStatus(Status.ACKNOWLEDGE);
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER);
  rt.writeDriverFeatures(features);
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  if (!(rt.status & Status.FEATURES_OK)) throw new Error('FEATURES_OK refused');
  const ring = packedLayout(RAM, size);
  Object.assign(rt.queues[0]!, { size, desc: ring.desc, avail: ring.avail, used: ring.used, ready: true });
  const driver = new DriverQueue<number>(h.memory, ringViewsFromGuest(h.memory, ring), {
    eventIdx: (features & bit(FeatureBit.RING_EVENT_IDX)) !== 0n,
    indirect: false,
  });
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  return driver;
}

/**
 * A virtio-test device model whose answer to every chain is `answer(chain)` instead of its own
 * (a number: at once; a promise: later), for driving the runtime's checks on a model's answers.
 */
export function answeringWith(answer: (chain: DescriptorChain) => number | Promise<number>): VirtioDevice {
  const dev = new VirtioTestDevice({ print: false });
  return Object.assign(Object.create(Object.getPrototypeOf(dev) as object) as VirtioDevice, dev, {
    handleChain: (_queue: number, chain: DescriptorChain) => answer(chain),
  });
}
