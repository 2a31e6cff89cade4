/**
 * A VirtioTransport wired straight to a DeviceRuntime in the same thread, for driver tests
 * that need to misbehave on purpose (the cross-thread machine is tested separately).
 * Notifications and interrupts are delivered on the next macrotask, as a real device would.
 */
import type { VirtioDevice } from '../../src/device/device.js';
import { DeviceRuntime } from '../../src/device/runtime.js';
import type { VirtioTransport } from '../../src/drivers/virtio-bus.js';
import { EmbeddedKernel } from '../../src/machine/guest-kernel.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import type { SplitRingAddresses } from '../../src/virtio/split-ring.js';

export class DirectTransport implements VirtioTransport {
  readonly runtime: DeviceRuntime;
  readonly logs: string[] = [];
  readonly warnings: string[] = [];
  private handlers: { vring(): void; config(): void } | undefined;
  /** Set to hold back notifications (the device "doesn't run") until release(). */
  paused = false;
  private held: number[] = [];

  constructor(
    device: VirtioDevice,
    memory: GuestMemory,
  ) {
    this.runtime = new DeviceRuntime(device, memory, {
      interrupt: () => setImmediate(() => this.handlers?.vring()),
      configInterrupt: () => setImmediate(() => this.handlers?.config()),
      log: (l) => this.logs.push(l),
      warn: (l) => this.warnings.push(l),
    });
  }
  get deviceId() {
    return this.runtime.device.deviceId;
  }
  getStatus() {
    return this.runtime.status;
  }
  setStatus(s: number) {
    this.runtime.writeStatus(s);
  }
  getDeviceFeatures() {
    return this.runtime.offeredFeatures;
  }
  setDriverFeatures(f: bigint) {
    this.runtime.writeDriverFeatures(f);
  }
  readConfig(offset: number, length: number) {
    return this.runtime.readConfig(offset, length);
  }
  configGeneration() {
    return this.runtime.configGeneration;
  }
  queueMaxSize(i: number) {
    return this.runtime.queues[i]?.maxSize ?? 0;
  }
  setupQueue(i: number, r: SplitRingAddresses) {
    Object.assign(this.runtime.queues[i]!, { size: r.size, desc: r.desc, avail: r.avail, used: r.used, ready: true });
  }
  notify(i: number) {
    if (this.paused) this.held.push(i);
    else setImmediate(() => this.runtime.notify(i));
  }
  release() {
    this.paused = false;
    for (const i of this.held.splice(0)) this.notify(i);
  }
  onInterrupt(h: { vring(): void; config(): void }) {
    this.handlers = h;
  }
  /** Raise an interrupt by hand (a device sending a spurious or malicious one). */
  interruptNow() {
    this.handlers?.vring();
  }
}

export const GUEST_RAM = 0x4000_0000;

export function guestKernel(ramBytes = 1 << 20): { kernel: EmbeddedKernel; memory: GuestMemory; lines: string[] } {
  const buffer = new SharedArrayBuffer(ramBytes);
  const memory = new GuestMemory([{ guestAddr: GUEST_RAM, size: ramBytes, buffer }]);
  const lines: string[] = [];
  const kernel = new EmbeddedKernel(memory, { base: GUEST_RAM, size: ramBytes }, Date.now(), { write: (t) => lines.push(t) }, { verbose: true });
  return { kernel, memory, lines };
}
