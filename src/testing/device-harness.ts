/**
 * A device model against the TypeScript driver half in one thread: no workers, no sockets, no
 * file descriptors. What rust-vmm's MockSplitQueue is to its device authors: a test builds
 * requests as byte buffers, the harness lays them out as descriptor chains in guest memory,
 * notifies the device, and hands back what the device wrote.
 *
 *   const h = new DeviceHarness(new RngDevice(source));
 *   const { len, written } = await h.request(0, [], [64]);   // one device-writable buffer of 64 bytes
 *
 * The device goes through the real §3.1.1 initialization (feature negotiation, queue setup,
 * DRIVER_OK) and the real DeviceRuntime (used-ring publication, notification suppression,
 * NEEDS_RESET on a device error), so a test sees what a driver would.
 */
import type { VirtioDevice } from '../device/device.js';
import { DeviceRuntime, type DeviceRuntimeOptions } from '../device/runtime.js';
import { DmaAllocator } from '../machine/dma-allocator.js';
import { FeatureBit, Status, bit } from '../virtio/constants.js';
import { DriverQueue } from '../virtio/driver-queue.js';
import { GuestMemory } from '../virtio/memory.js';
import { ringViewsFromGuest } from '../virtio/ring-views.js';
import { packedLayout } from '../virtio/split-ring.js';

export interface DeviceHarnessOptions {
  /** Size of every queue (default: each queue's maximum, capped at 256). */
  queueSize?: number;
  /** Device feature bits the driver accepts (default: every device-specific bit offered). */
  features?: bigint;
  /** Negotiate VIRTIO_F_RING_EVENT_IDX (default true). */
  eventIdx?: boolean;
  /** Negotiate VIRTIO_F_INDIRECT_DESC and put multi-buffer requests in indirect tables (default false). */
  indirect?: boolean;
  /** Guest RAM (default 4 MiB). */
  ramBytes?: number;
  runtime?: DeviceRuntimeOptions;
}

/** A used buffer: its used length (§2.7.8) and the bytes the device wrote (the first `len` bytes of the writable buffers). */
export interface Completion {
  len: number;
  written: Uint8Array;
}

interface Pending {
  resolve(c: Completion): void;
  reject(e: Error): void;
  out: number[];
  inn: { addr: number; len: number }[];
}

const RAM_BASE = 0x1000_0000;

export class DeviceHarness {
  readonly memory: GuestMemory;
  readonly runtime: DeviceRuntime;
  /** The model's log lines and the runtime's diagnostics. */
  readonly logs: string[] = [];
  readonly warnings: string[] = [];
  readonly deviceErrors: unknown[] = [];
  /** Used buffer notifications per queue. */
  readonly interrupts: number[];
  private readonly queues: DriverQueue<Pending>[] = [];
  private readonly dma: DmaAllocator;
  private readonly waitingForRoom: (() => void)[][];

  constructor(
    readonly device: VirtioDevice,
    options: DeviceHarnessOptions = {},
  ) {
    const ramBytes = options.ramBytes ?? 4 << 20;
    const buffer = new SharedArrayBuffer(ramBytes);
    this.memory = new GuestMemory([{ guestAddr: RAM_BASE, size: ramBytes, buffer }]);
    this.dma = new DmaAllocator(RAM_BASE, ramBytes);
    this.interrupts = device.queueMaxSizes.map(() => 0);
    this.waitingForRoom = device.queueMaxSizes.map(() => []);
    this.runtime = new DeviceRuntime(
      device,
      this.memory,
      {
        interrupt: (q) => {
          this.interrupts[q]!++;
          this.collect(q);
        },
        configInterrupt: () => {
          if (this.needsReset) this.failAll('the device set DEVICE_NEEDS_RESET');
        },
        log: (l) => this.logs.push(l),
        warn: (l) => this.warnings.push(l),
        onDeviceError: (_q, e) => this.deviceErrors.push(e),
      },
      options.runtime,
    );
    this.initialize(options);
  }

  /** The device status register (§2.1). */
  get status(): number {
    return this.runtime.status;
  }

  get needsReset(): boolean {
    return (this.runtime.status & Status.NEEDS_RESET) !== 0;
  }

  /** The features both sides agreed on. */
  get features(): bigint {
    return this.runtime.driverFeatures;
  }

  readConfig(offset: number, length: number): Uint8Array {
    return this.runtime.readConfig(offset, length);
  }

  /**
   * One request on queue `queue`: the device-readable buffers `out` followed by device-writable
   * buffers of `inLengths` bytes. Resolves when the device has used the chain; rejects if the
   * device breaks (DEVICE_NEEDS_RESET) first.
   */
  async request(queue: number, out: readonly Uint8Array[], inLengths: readonly number[]): Promise<Completion> {
    const q = this.queues[queue];
    if (!q) throw new RangeError(`queue ${queue} does not exist (the device has ${this.queues.length})`);
    if (this.needsReset) throw new Error('the device set DEVICE_NEEDS_RESET');
    const outBufs = out.map((bytes) => {
      const addr = this.allocate(bytes.length);
      this.memory.slice(addr, bytes.length).set(bytes);
      return { addr, len: bytes.length };
    });
    const inBufs = inLengths.map((len) => {
      const addr = this.allocate(len);
      this.memory.slice(addr, len).fill(0);
      return { addr, len };
    });
    const done = new Promise<Completion>((resolve, reject) => {
      const pending: Pending = { resolve, reject, out: outBufs.map((b) => b.addr), inn: inBufs };
      const tryAdd = (): void => {
        if (this.needsReset) return reject(new Error('the device set DEVICE_NEEDS_RESET'));
        if (q.add(outBufs, inBufs, pending)) {
          if (q.needsKick()) this.runtime.notify(queue);
        } else {
          this.waitingForRoom[queue]!.push(tryAdd); // ring full: wait for a used buffer
        }
      };
      tryAdd();
    });
    return done;
  }

  private initialize(options: DeviceHarnessOptions): void {
    const rt = this.runtime;
    const offered = rt.offeredFeatures;
    const deviceBits = offered & ((1n << 24n) - 1n);
    let features = (options.features ?? deviceBits) | bit(FeatureBit.VERSION_1);
    if (options.eventIdx ?? true) features |= bit(FeatureBit.RING_EVENT_IDX);
    if (options.indirect) features |= bit(FeatureBit.RING_INDIRECT_DESC);
    features &= offered;
    rt.writeStatus(Status.ACKNOWLEDGE);
    rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER);
    rt.writeDriverFeatures(features);
    rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    if (!(rt.status & Status.FEATURES_OK)) throw new Error(`the device refused features 0x${features.toString(16)}`);
    const eventIdx = (features & bit(FeatureBit.RING_EVENT_IDX)) !== 0n;
    const indirect = (features & bit(FeatureBit.RING_INDIRECT_DESC)) !== 0n;
    rt.queues.forEach((config, i) => {
      const size = options.queueSize ?? Math.min(config.maxSize, 256);
      if (size > config.maxSize) throw new RangeError(`queue ${i}: size ${size} > the device's maximum ${config.maxSize}`);
      const ring = packedLayout(this.allocate(packedLayout(0, size).bytes, 4096), size);
      Object.assign(config, { size, desc: ring.desc, avail: ring.avail, used: ring.used, ready: true });
      this.queues.push(
        new DriverQueue<Pending>(this.memory, ringViewsFromGuest(this.memory, ring), {
          eventIdx,
          indirect,
          allocIndirect: (n) => this.dma.alloc(n, 16),
          freeIndirect: (a) => this.dma.free(a),
        }),
      );
    });
    rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  }

  private allocate(bytes: number, align = 16): number {
    const addr = this.dma.alloc(Math.max(bytes, 1), align);
    if (addr === null) throw new RangeError(`guest RAM exhausted (${bytes} bytes wanted): give the harness more ramBytes`);
    return addr;
  }

  /** The driver's interrupt handler: take every used buffer, with the re-check of §2.7.14. */
  private collect(queue: number): void {
    const q = this.queues[queue];
    if (!q) return;
    try {
      do {
        q.disableCallbacks();
        let used;
        while ((used = q.getUsed()) !== null) this.complete(used.token, used.len);
      } while (!q.enableCallbacks());
    } catch (e) {
      this.failAll(`the device returned a bad used buffer: ${(e as Error).message}`);
      return;
    }
    for (const retry of this.waitingForRoom[queue]!.splice(0)) retry();
  }

  private complete(p: Pending, len: number): void {
    const written = new Uint8Array(len);
    let at = 0;
    for (const b of p.inn) {
      if (at >= len) break;
      const n = Math.min(b.len, len - at);
      written.set(this.memory.slice(b.addr, n), at);
      at += n;
    }
    for (const a of p.out) this.dma.free(a);
    for (const b of p.inn) this.dma.free(b.addr);
    p.resolve({ len, written });
  }

  private failAll(why: string): void {
    for (const q of this.queues) for (const p of q.detachUnused()) p.reject(new Error(why));
    for (const waiting of this.waitingForRoom) for (const retry of waiting.splice(0)) retry();
  }
}
