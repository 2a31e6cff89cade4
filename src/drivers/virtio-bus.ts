/**
 * The guest's virtio bus: the transport operations a driver uses (Linux's virtio_config_ops),
 * the generic device initialization of §3.1.1, and virtqueue setup on top of the core's
 * DriverQueue. Transport-independent: the embedded machine supplies a virtio-mmio transport.
 *
 * Ring layout: split (§2.7, DriverQueue) unless the bus was made with `ring: 'packed'`, which
 * adds VIRTIO_F_RING_PACKED to the ring features the guest accepts (as Linux's virtio core
 * does, vring_transport_features); when the device offers it too, every queue is a packed ring
 * (§2.8, PackedDriverQueue) whose three areas go to QueueDesc / QueueDriver / QueueDevice
 * (§4.2.3.2). Drivers see DriverVirtqueue either way.
 */
import { FeatureBit, Status, bit, hasFeature } from '../virtio/constants.js';
import { DriverQueue } from '../virtio/driver-queue.js';
import { PackedDriverQueue } from '../virtio/packed-driver-queue.js';
import { packedRingLayout, packedRingViewsFromGuest } from '../virtio/packed-ring.js';
import type { DriverVirtqueue } from '../virtio/virtqueue.js';
import { ringViewsFromGuest } from '../virtio/ring-views.js';
import { packedLayout, type SplitRingAddresses } from '../virtio/split-ring.js';
import type { GuestKernel } from './kernel.js';
import { TRACE as T } from '../trace/events.js';

/** How long reset() waits for the device to read Status back as 0. */
export const RESET_TIMEOUT_MS = 10_000;

/** The transport as a driver sees it (virtio-mmio §4.2.2 here; PCI would fit the same shape). */
export interface VirtioTransport {
  readonly deviceId: number;
  getStatus(): number;
  setStatus(status: number): void;
  getDeviceFeatures(): bigint;
  setDriverFeatures(features: bigint): void;
  /** Reads config space bytes (caller handles the generation check, see readConfigStable). */
  readConfig(offset: number, length: number): Uint8Array;
  configGeneration(): number;
  queueMaxSize(index: number): number;
  /**
   * Tells the device where queue `index` lives and marks it ready: `desc`, `avail`, `used` go to
   * QueueDesc / QueueDriver / QueueDevice (§4.2.3.2): for a packed ring the Descriptor Ring and
   * the Driver and Device Event Suppression structures (§2.8.10).
   */
  setupQueue(index: number, ring: SplitRingAddresses): void;
  /** Available buffer notification (§2.7.13.4). */
  notify(index: number): void;
  /** Installs the interrupt handler: `vring` for used buffers, `config` for configuration changes. */
  onInterrupt(handlers: { vring(): void; config(): void }): void;
}

export interface VirtioDriver {
  readonly name: string;
  /** Device IDs this driver binds to (id_table). */
  readonly deviceIds: readonly number[];
  /** Device-specific feature bits the driver understands (feature_table). */
  readonly features: readonly number[];
  probe(dev: VirtioDriverDevice, kernel: GuestKernel): Promise<void> | void;
  /** A configuration change notification (includes DEVICE_NEEDS_RESET, §2.1.2). */
  configChanged?(dev: VirtioDriverDevice): void;
  remove?(dev: VirtioDriverDevice): void;
}

export class ProbeError extends Error {
  override readonly name = 'ProbeError';
}

/** Ring features the guest's virtio core supports (Linux's vring_transport_features). */
const RING_FEATURES = [FeatureBit.RING_INDIRECT_DESC, FeatureBit.RING_EVENT_IDX, FeatureBit.VERSION_1];

/** The ring layouts the guest can be told to use (`virtio --ring`). */
export const RING_LAYOUTS = ['split', 'packed'] as const;
export type RingLayout = (typeof RING_LAYOUTS)[number];

export interface VirtioBusOptions {
  /** 'packed': also accept VIRTIO_F_RING_PACKED (§2.8); default 'split' (§2.7 only). */
  ring?: RingLayout;
}

export interface QueueOptions {
  /** Queue size to use; default the device's maximum. */
  size?: number;
}

/** A device bound (or being bound) to a driver: negotiated features and queues. */
export class VirtioDriverDevice {
  features = 0n;
  private readonly queues: { queue: DriverVirtqueue<unknown>; callback: () => void; ringAddr: number }[] = [];
  private driver: VirtioDriver | undefined;
  private readonly ringFeatures: readonly number[];

  constructor(
    readonly transport: VirtioTransport,
    readonly kernel: GuestKernel,
    options: VirtioBusOptions = {},
  ) {
    this.ringFeatures = options.ring === 'packed' ? [...RING_FEATURES, FeatureBit.RING_PACKED] : RING_FEATURES;
    transport.onInterrupt({
      vring: () => {
        // Linux's vring_interrupt() per queue; queues may be set up sparsely.
        for (const q of this.queues) {
          if (!q) continue;
          if (T.vring_interrupt.enabled) T.vring_interrupt.emit(q.queue.index, q.queue.pendingUsed());
          q.callback();
        }
      },
      config: () => this.driver?.configChanged?.(this),
    });
  }

  hasFeature(n: number): boolean {
    return hasFeature(this.features, n);
  }

  get status(): number {
    return this.transport.getStatus();
  }

  /**
   * §3.1.1 Device Initialization, steps 1–6, then the driver's probe (step 7: queues), then
   * DRIVER_OK (step 8) once probe calls `ready()`. On failure the device is marked FAILED.
   */
  async bind(driver: VirtioDriver): Promise<void> {
    const t = this.transport;
    t.setStatus(0);
    t.setStatus(Status.ACKNOWLEDGE);
    t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
    const offered = t.getDeviceFeatures();
    let wanted = 0n;
    for (const f of [...driver.features, ...this.ringFeatures]) wanted |= bit(f);
    this.features = offered & wanted;
    if (!this.hasFeature(FeatureBit.VERSION_1)) {
      t.setStatus(t.getStatus() | Status.FAILED);
      throw new ProbeError(`${driver.name}: device does not offer VIRTIO_F_VERSION_1 (legacy devices are not supported)`);
    }
    t.setDriverFeatures(this.features);
    t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    if (!(t.getStatus() & Status.FEATURES_OK)) {
      t.setStatus(t.getStatus() | Status.FAILED);
      throw new ProbeError(`${driver.name}: device refused features 0x${this.features.toString(16)} (FEATURES_OK not set)`);
    }
    this.driver = driver;
    try {
      await driver.probe(this, this.kernel);
    } catch (e) {
      this.driver = undefined;
      this.reset();
      this.deleteQueues();
      t.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FAILED);
      throw e;
    }
  }

  /** Sets up queue `index` in guest memory; `callback` runs on used buffer notifications. */
  findQueue<T>(index: number, callback: () => void, options: QueueOptions = {}): DriverVirtqueue<T> {
    const max = this.transport.queueMaxSize(index);
    if (max === 0) throw new ProbeError(`queue ${index} is not available on this device`);
    const size = Math.min(options.size ?? max, max);
    const k = this.kernel;
    // Split (§2.7): descriptor table, available and used rings; packed (§2.8.10.1): descriptor
    // ring and the driver and device event suppression structures. Both in one allocation.
    const packed = this.hasFeature(FeatureBit.RING_PACKED);
    const bytes = (packed ? packedRingLayout(0, size) : packedLayout(0, size)).bytes;
    const base = k.dmaAlloc(bytes, 4096);
    if (base === null) throw new ProbeError(`no guest memory for queue ${index} (${bytes} bytes)`);
    const queueOptions = {
      eventIdx: this.hasFeature(FeatureBit.RING_EVENT_IDX),
      indirect: this.hasFeature(FeatureBit.RING_INDIRECT_DESC),
      allocIndirect: (n: number) => k.dmaAlloc(n, 16),
      freeIndirect: (a: number) => k.dmaFree(a),
      index,
    };
    let queue: DriverVirtqueue<T>;
    if (packed) {
      const ring = packedRingLayout(base, size);
      queue = new PackedDriverQueue<T>(k.memory, packedRingViewsFromGuest(k.memory, ring), queueOptions);
      this.transport.setupQueue(index, { size, desc: ring.desc, avail: ring.driver, used: ring.device });
    } else {
      const ring = packedLayout(base, size);
      queue = new DriverQueue<T>(k.memory, ringViewsFromGuest(k.memory, ring), queueOptions);
      this.transport.setupQueue(index, ring);
    }
    this.queues[index] = { queue, callback, ringAddr: base };
    return queue;
  }

  /** §3.1.1 step 8: DRIVER_OK. */
  ready(): void {
    this.transport.setStatus(this.transport.getStatus() | Status.DRIVER_OK);
  }

  /** Kicks queue `index` if the device wants a notification (§2.7.13.4). */
  kick(queue: DriverVirtqueue<unknown>, index: number): void {
    if (queue.needsKick()) this.transport.notify(index);
  }

  /**
   * Resets the device (§2.1, §2.4) and waits until the device says the reset is complete by
   * reading Status back as 0 (§2.4.2; a device with I/O still in flight into our buffers
   * completes it first): afterwards it touches no queue, so buffers can be detached and
   * reused. Polled every millisecond, as Linux's virtio_pci does; a device that never
   * completes within RESET_TIMEOUT_MS is reported and the reset taken as done.
   */
  reset(): void {
    const t = this.transport;
    t.setStatus(0);
    if (t.getStatus() === 0) return;
    const deadline = Date.now() + RESET_TIMEOUT_MS;
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    while (t.getStatus() !== 0) {
      if (Date.now() > deadline) {
        this.kernel.printk(`virtio: device ${t.deviceId} did not complete its reset within ${RESET_TIMEOUT_MS} ms (status still non-zero)`);
        return;
      }
      Atomics.wait(sleeper, 0, 0, 1);
    }
  }

  /** Frees the rings (after reset() and after the driver detached its buffers). */
  deleteQueues(): void {
    for (const q of this.queues) if (q) this.kernel.dmaFree(q.ringAddr);
    this.queues.length = 0;
  }

  /** §2.5.1: reads config until the generation is the same before and after. */
  readConfigStable(offset: number, length: number): Uint8Array {
    for (;;) {
      const before = this.transport.configGeneration();
      const bytes = this.transport.readConfig(offset, length);
      if (this.transport.configGeneration() === before) return bytes;
    }
  }
}
