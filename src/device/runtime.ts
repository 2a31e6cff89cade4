/**
 * The part of a virtio device every host shares: the device status machine (§2.1, §3.1.1),
 * feature negotiation (§2.2), config space access with a generation counter (§2.5), queue
 * configuration, and turning queue notifications into calls of the device model. A host
 * (virtio-mmio on the embedded machine, or a vhost-user backend) owns one DeviceRuntime per
 * device and forwards the driver's actions to it.
 *
 * Any error raised while serving a queue (a VirtioError from the ring walk, a malformed
 * request, or a bug in the device model) is a device error: the runtime sets
 * DEVICE_NEEDS_RESET, stops all queues, logs the rule that was broken, and sends a
 * configuration change notification if the driver is running (§2.1.2).
 *
 * Ring layouts. The runtime offers VIRTIO_F_RING_PACKED beside the split ring's features; the
 * queues of a driver that negotiated it are served by the packed device half (§2.8,
 * PackedDeviceQueue), the others by the split one (§2.7, DeviceQueue), both through
 * DeviceVirtqueue (src/virtio/virtqueue.ts). The three addresses a transport gives per queue
 * (QueueDesc / QueueDriver / QueueDevice, kept here as desc / avail / used) are, for a packed
 * ring, the Descriptor Ring and the Driver and Device Event Suppression structures (§2.8.10).
 * The choice is made when a queue starts, so the split path is the same code as before.
 */
import { FeatureBit, Status, TRANSPORT_FEATURES, bit, hasFeature, statusNames } from '../virtio/constants.js';
import type { DescriptorChain } from '../virtio/chain.js';
import { DeviceQueue, type DeviceQueueStatus } from '../virtio/device-queue.js';
import { PackedDeviceQueue } from '../virtio/packed-device-queue.js';
import { checkPackedQueueSize, packedRingViewsFromGuest, type PackedRingViews } from '../virtio/packed-ring.js';
import type { DeviceVirtqueue } from '../virtio/virtqueue.js';
import { fail, isVirtioError } from '../virtio/errors.js';
import { NO_QUEUE, TRACE } from '../trace/events.js';

// Trace events emitted here (src/trace/events.ts), bound once.
const EV_SET_STATUS = TRACE.virtio_set_status;
const EV_QUEUE_NOTIFY = TRACE.virtio_queue_notify;
const EV_NOTIFY = TRACE.virtio_notify;
const EV_NOTIFY_SUPPRESSED = TRACE.virtio_notify_suppressed;
const EV_NOTIFY_CONFIG = TRACE.virtio_notify_config;
const EV_NEEDS_RESET = TRACE.virtio_needs_reset;
import type { GuestMemory } from '../virtio/memory.js';
import { ringViewsFromGuest, type RingViews } from '../virtio/ring-views.js';
import type { DeviceContext, VirtioDevice } from './device.js';

/** What the runtime needs from the host it runs in. */
export interface DeviceHost {
  /** Send a used buffer notification for queue `queue` (the runtime already applied suppression). */
  interrupt(queue: number): void;
  /** Send a configuration change notification. */
  configInterrupt(): void;
  /** A log line from the device model (e.g. the virtio-test request dump). */
  log(line: string): void;
  /** A diagnostic from the runtime: a refused status change, a device error. */
  warn(line: string): void;
  /** Called after the runtime set NEEDS_RESET (vhost-user also signals its error eventfd). */
  onDeviceError?(queue: number | undefined, error: unknown): void;
}

/** What the driver configured for one queue (§4.2.2 QueueNum/QueueDesc/QueueDriver/QueueDevice/QueueReady). */
export interface QueueConfig {
  readonly maxSize: number;
  size: number;
  desc: number;
  avail: number;
  used: number;
  ready: boolean;
}

/**
 * Default chains answered between two publications of used.idx within one pass, after the
 * first answer of the pass, which is published at once.
 *
 * Publishing part of a long pass lets the driver take its answers and make new buffers
 * available while the device goes on (the two sides then work at the same time instead of in
 * turn); each publication costs an index store and a notification decision (§2.7.7.2), so not
 * every chain. The first answer goes out alone because a driver that waits for it has a
 * wake-up ahead (tens of µs across CPUs): notified at the first answer rather than the 32nd,
 * it wakes while the device answers the rest, and finds them published when it looks.
 */
export const DEFAULT_PUBLISH_BATCH = 32;

/** The ring and transport features this runtime implements: the split ring's, and the packed ring (§2.8). */
export const RUNTIME_TRANSPORT_FEATURES = TRANSPORT_FEATURES | bit(FeatureBit.RING_PACKED);

/** Where a started queue resumes (vhost-user SET_VRING_BASE), and for a packed ring what it takes over. */
export interface QueueBase {
  /** split: free-running avail index; packed: position | wrap counter << 15. */
  nextAvail?: number;
  nextUsed?: number;
  /** Packed: keep a copy of each list taken, so chains can be resubmitted (PackedDeviceQueue keepLists). */
  keepLists?: boolean;
  /** Packed: the queue this one replaces at the same place (PackedDeviceQueue adopt). */
  adopt?: DeviceVirtqueue | null;
}

export interface DeviceRuntimeOptions {
  /** Features offered; default the model's own plus the transport features this runtime implements (RUNTIME_TRANSPORT_FEATURES). */
  offeredFeatures?: bigint;
  /**
   * Publish used.idx (and decide about a notification) after the first chain answered in a
   * pass, then after every this many more, and at the pass's end; 0 publishes once per pass.
   * Default {@link DEFAULT_PUBLISH_BATCH}.
   */
  publishBatch?: number;
}

/**
 * Per-queue counters, kept for the runtime's lifetime (not cleared by a reset). Incremented with
 * plain field additions on the paths that already do the work: per chain (requests, bytes), per
 * publication (notifications sent or suppressed), per kick.
 */
export class QueueCounters {
  /** Chains answered (used elements added). */
  requests = 0;
  /** Bytes of the chains' device-readable parts (what the driver sent). */
  bytesRead = 0;
  /** Bytes the device wrote (the used lengths). */
  bytesWritten = 0;
  /** Available buffer notifications received (kicks). */
  kicks = 0;
  /** Publications of used.idx. */
  flushes = 0;
  /** Used buffer notifications sent, and suppressed by the driver (§2.7.7.2). */
  notifications = 0;
  suppressed = 0;
  /** Device errors on this queue (each set DEVICE_NEEDS_RESET). */
  errors = 0;
}

/** One queue as x-query-virtio-queue-status shows it: configuration, ring state, counters. */
export interface QueueStatus {
  index: number;
  /** QueueNumMax (QEMU vring_num_default) and the size the driver set (vring_num). */
  maxSize: number;
  size: number;
  ready: boolean;
  /** Live: started and served (DRIVER_OK, no NEEDS_RESET). */
  active: boolean;
  /** Guest addresses the driver configured (virtio-mmio; 0 where the host maps rings itself, as vhost-user does). */
  desc: number;
  avail: number;
  used: number;
  /** The ring's indices and suppression state while the queue is started, else null. */
  ring: DeviceQueueStatus | null;
  /** Chains the model is still answering asynchronously. */
  held: number;
  counters: QueueCounters;
}

/** The device as x-query-virtio-status shows it, plus the runtime's counters. */
export interface DeviceStats {
  /** This runtime's instance number (the `vdev` of trace events). */
  vdev: number;
  deviceId: number;
  status: number;
  statusNames: string;
  /** Features as hex strings (64-bit masks). */
  deviceFeatures: string;
  driverFeatures: string;
  /** The device model's names of its own feature bits (VirtioDevice.featureNames). */
  featureNames: Record<number, string>;
  /** FEATURES_OK accepted: driverFeatures is the negotiated set. */
  featuresOk: boolean;
  configGeneration: number;
  configNotifications: number;
  /** Device errors in all (each set DEVICE_NEEDS_RESET). */
  errors: number;
  queues: QueueStatus[];
  /** Sums over the queues. */
  totals: QueueCounters;
}

let runtimes = 0;

export class DeviceRuntime {
  /** Instance number in this thread (the `vdev` field of trace events). */
  readonly vdev = ++runtimes;
  /** Per-queue counters (see stats()). */
  readonly counters: QueueCounters[];
  private errors = 0;
  private configNotifications = 0;
  /** §2.1 device status. */
  status = 0;
  /** Offered features: the model's own plus the transport/ring features this runtime implements. */
  readonly offeredFeatures: bigint;
  /** What the driver wrote (§2.2); the negotiated set once FEATURES_OK is accepted. */
  driverFeatures = 0n;
  /** §2.5.1 / §4.2.2 ConfigGeneration: bumped on every device-side config change. */
  configGeneration = 0;
  readonly queues: QueueConfig[];
  private active: (DeviceVirtqueue | null)[];
  /** Chains a device model is still answering (asynchronously), per queue: revoked when the queue stops. */
  private held: Set<DescriptorChain>[];
  /**
   * Every answer a model still owes, whether or not its queue still runs: revoking a chain
   * stops the model's accessors, not I/O it already started into guest memory (a preadv on
   * libuv's pool). A host releases guest memory only after these settle (see settled()).
   */
  private readonly owed = new Set<Promise<void>>();
  /** Waiting on drained(index), per queue. */
  private readonly drainers: ((() => void)[] | undefined)[] = [];
  /** Per queue, a chain object the model is done with, refilled by the next pop (no allocation per kick). */
  private spare: (DescriptorChain | undefined)[];
  private readonly context: DeviceContext;
  private readonly publishBatch: number;
  /** Answers before a pass's first publication: 1, or never (publishBatch 0) until its end. */
  private readonly publishFirst: number;

  constructor(
    readonly device: VirtioDevice,
    readonly memory: GuestMemory,
    private readonly host: DeviceHost,
    options: DeviceRuntimeOptions = {},
  ) {
    this.offeredFeatures = options.offeredFeatures ?? device.features | RUNTIME_TRANSPORT_FEATURES;
    const batch = options.publishBatch ?? DEFAULT_PUBLISH_BATCH;
    if (!Number.isSafeInteger(batch) || batch < 0) throw new RangeError(`publishBatch ${batch} is not a count ≥ 0`);
    this.publishBatch = batch === 0 ? Number.MAX_SAFE_INTEGER : batch;
    this.publishFirst = batch === 0 ? Number.MAX_SAFE_INTEGER : 1;
    this.queues = device.queueMaxSizes.map((maxSize) => ({ maxSize, size: maxSize, desc: 0, avail: 0, used: 0, ready: false }));
    this.active = this.queues.map(() => null);
    this.held = this.queues.map(() => new Set());
    this.spare = this.queues.map(() => undefined);
    this.counters = this.queues.map(() => new QueueCounters());
    const runtime = this;
    this.context = {
      memory,
      get driverFeatures() {
        return runtime.driverFeatures;
      },
      log: (line) => host.log(line),
      configChanged: () => runtime.configChanged(),
    };
  }

  get driverOk(): boolean {
    return (this.status & Status.DRIVER_OK) !== 0 && (this.status & Status.NEEDS_RESET) === 0;
  }

  /** §2.1 / §3.1.1: a status write from the driver. 0 resets the device. */
  writeStatus(value: number): void {
    value &= 0xff;
    if (EV_SET_STATUS.enabled) EV_SET_STATUS.emit(this.vdev, value);
    if (value === 0) {
      this.reset();
      return;
    }
    const old = this.status;
    // §2.1.1: the driver MUST NOT clear a device status bit (NEEDS_RESET is the device's own).
    const driverBits = old & ~Status.NEEDS_RESET;
    if ((value & driverBits) !== driverBits) {
      this.host.warn(`status write ${statusNames(value)} clears bits of ${statusNames(old)}: ignored (§2.1.1)`);
      return;
    }
    const added = value & ~old & ~Status.NEEDS_RESET;
    if (added & Status.FAILED) {
      this.status = old | Status.FAILED;
      this.stopQueues();
      return;
    }
    if (added & Status.FEATURES_OK && !this.acceptFeatures()) {
      // §3.1.1 step 6: leaving FEATURES_OK clear tells the driver its subset is not supported.
      // A DRIVER_OK in the same write does not stick either: the device is not live.
      this.status = (old | added) & ~(Status.FEATURES_OK | Status.DRIVER_OK);
      return;
    }
    if (added & Status.DRIVER_OK && !((old | added) & Status.FEATURES_OK)) {
      this.host.warn('DRIVER_OK without FEATURES_OK: ignored (§3.1.1)');
      return;
    }
    this.status = old | added;
    if (added & Status.DRIVER_OK) {
      // §2.1.2: a device that already needs a reset serves nothing; the now-live driver is told.
      if (old & Status.NEEDS_RESET) this.configInterrupt();
      else this.activate();
    }
  }

  /** §2.2: driver feature write; only meaningful before FEATURES_OK (§3.1.1 step 5). */
  writeDriverFeatures(features: bigint): void {
    if (this.status & Status.FEATURES_OK) {
      this.host.warn('driver features written after FEATURES_OK: ignored (§3.1.1)');
      return;
    }
    this.driverFeatures = features;
  }

  /**
   * §2.2.1: the device accepts any subset of what it offered; this implementation is
   * non-legacy only, so VERSION_1 must be accepted (§6.1).
   */
  private acceptFeatures(): boolean {
    const unknown = this.driverFeatures & ~this.offeredFeatures;
    if (unknown) {
      this.host.warn(`driver accepted features it was not offered (0x${unknown.toString(16)}): FEATURES_OK refused (§2.2.1)`);
      return false;
    }
    if (!hasFeature(this.driverFeatures, FeatureBit.VERSION_1)) {
      this.host.warn('driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported): FEATURES_OK refused (§6.1)');
      return false;
    }
    return true;
  }

  /** §2.1 / §3.1.1 step 1: reset. Queues stop, features and configuration are forgotten. */
  reset(): void {
    this.stopQueues();
    this.status = 0;
    this.driverFeatures = 0n;
    for (const q of this.queues) Object.assign(q, { size: q.maxSize, desc: 0, avail: 0, used: 0, ready: false });
    this.device.reset();
  }

  /** Reads config space; out-of-range bytes read as 0 (the transport validates access). */
  readConfig(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    const size = this.device.configSize;
    if (offset >= 0 && offset < size) {
      const n = Math.min(length, size - offset);
      this.device.readConfig(offset, out.subarray(0, n));
    }
    return out;
  }

  writeConfig(offset: number, data: Uint8Array): void {
    const size = this.device.configSize;
    if (offset < 0 || offset + data.length > size) {
      this.host.warn(`config write at ${offset} (+${data.length}) is outside the ${size}-byte config space: ignored`);
      return;
    }
    this.device.writeConfig(offset, data, this.context);
  }

  /** The device model changed its config space (§2.5.1: generation changes, driver is told). */
  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    if (this.driverOk) this.configInterrupt();
  }

  private configInterrupt(): void {
    this.configNotifications++;
    if (EV_NOTIFY_CONFIG.enabled) EV_NOTIFY_CONFIG.emit(this.vdev, this.configGeneration);
    this.host.configInterrupt();
  }

  /** An available buffer notification for queue `index` (§2.7.13.4). */
  notify(index: number): void {
    if (EV_QUEUE_NOTIFY.enabled) EV_QUEUE_NOTIFY.emit(this.vdev, index);
    const c = this.counters[index];
    if (c) c.kicks++;
    const q = this.active[index];
    if (!q || !this.driverOk) return; // §2.1.2: nothing is consumed before DRIVER_OK
    this.process(index, q);
  }

  /** VIRTIO_F_RING_PACKED was negotiated: queues are packed rings (§2.8). */
  get packed(): boolean {
    return hasFeature(this.driverFeatures, FeatureBit.RING_PACKED);
  }

  /**
   * Activates queue `index` over ring views (vhost-user: when the frontend starts the ring):
   * split views (RingViews) or packed ones (PackedRingViews), which must match the negotiated
   * layout (a VirtioError FEATURES_INVALID otherwise).
   */
  startQueue(index: number, rings: RingViews | PackedRingViews, base: QueueBase = {}): DeviceVirtqueue {
    const eventIdx = hasFeature(this.driverFeatures, FeatureBit.RING_EVENT_IDX);
    const indirect = hasFeature(this.driverFeatures, FeatureBit.RING_INDIRECT_DESC);
    const common = {
      eventIdx,
      indirect,
      index,
      ...(base.nextAvail !== undefined ? { nextAvail: base.nextAvail } : {}),
      ...(base.nextUsed !== undefined ? { nextUsed: base.nextUsed } : {}),
    };
    let q: DeviceVirtqueue;
    if ('avail' in rings) {
      if (this.packed) fail('FEATURES_INVALID', `queue ${index}: split ring views for a driver that negotiated VIRTIO_F_RING_PACKED`, '§2.8');
      q = new DeviceQueue(this.memory, rings, common);
    } else {
      if (!this.packed) fail('FEATURES_INVALID', `queue ${index}: packed ring views for a driver that did not negotiate VIRTIO_F_RING_PACKED`, '§2.7');
      q = new PackedDeviceQueue(this.memory, rings, {
        ...common,
        ...(base.keepLists ? { keepLists: true } : {}),
        ...(base.adopt instanceof PackedDeviceQueue ? { adopt: base.adopt } : {}),
      });
    }
    this.active[index] = q;
    return q;
  }

  /** Stops queue `index`; returns where it stood (vhost-user GET_VRING_BASE). */
  stopQueue(index: number): { nextAvail: number; nextUsed: number } | null {
    const q = this.active[index];
    this.active[index] = null;
    this.revokeHeld(index);
    return q ? { nextAvail: q.nextAvail, nextUsed: q.nextUsed } : null;
  }

  activeQueue(index: number): DeviceVirtqueue | null {
    return this.active[index] ?? null;
  }

  /** §2.1.2: a device error. NEEDS_RESET, queues stop, the driver is told. */
  deviceError(error: unknown, queue?: number): void {
    const already = (this.status & Status.NEEDS_RESET) !== 0;
    this.errors++;
    const c = queue === undefined ? undefined : this.counters[queue];
    if (c) c.errors++;
    if (EV_NEEDS_RESET.enabled) EV_NEEDS_RESET.emit(this.vdev, queue ?? NO_QUEUE, String((error as Error)?.message ?? error));
    this.status |= Status.NEEDS_RESET;
    this.stopQueues();
    const what = isVirtioError(error) ? error.message : `device model failed: ${(error as Error)?.stack ?? error}`;
    this.host.warn(`device error${queue === undefined ? '' : ` on queue ${queue}`}: ${what}; device needs reset`);
    if (!already) {
      this.host.onDeviceError?.(queue, error);
      if (this.status & Status.DRIVER_OK) this.configInterrupt();
    }
  }

  private activate(): void {
    try {
      this.queues.forEach((cfg, i) => {
        if (!cfg.ready) return;
        // Split indices: avail from 0, used from what is in memory (0 for a driver that zeroed
        // its ring, §2.7.10.1), as vhost does; packed: position 0, wrap counters 1 (§2.8.1).
        // Hosts that know better pass a base to startQueue.
        if (this.packed) {
          // The size was checked when written, but against the layout negotiated then.
          checkPackedQueueSize(cfg.size, { max: cfg.maxSize });
          this.startQueue(i, packedRingViewsFromGuest(this.memory, { size: cfg.size, desc: cfg.desc, driver: cfg.avail, device: cfg.used }));
        } else {
          this.startQueue(i, ringViewsFromGuest(this.memory, { size: cfg.size, desc: cfg.desc, avail: cfg.avail, used: cfg.used }));
        }
      });
      this.device.activate?.(this.context);
    } catch (e) {
      this.deviceError(e);
      return;
    }
    // Buffers may already be waiting (the driver may add before DRIVER_OK and kick later,
    // but a kick could also have been sent before the queue went live).
    this.active.forEach((q, i) => q && this.process(i, q));
  }

  private stopQueues(): void {
    this.active.fill(null);
    this.held.forEach((_, i) => this.revokeHeld(i));
  }

  /**
   * Serves queue `index` until it is empty with notifications re-enabled (§2.7.10): kicks are
   * suppressed while we work, and the re-check after enabling catches buffers that raced in.
   * Used elements are published after the pass's first answer, then every `publishBatch`
   * answers, and at the end of the pass, each publication with its own notification decision
   * (§2.7.7.2); see DEFAULT_PUBLISH_BATCH.
   */
  private process(index: number, q: DeviceVirtqueue): void {
    for (;;) {
      let completed = 0; // answered and not yet published
      let due = this.publishFirst; // the first answer goes out at once
      let failure: unknown;
      let more = false;
      try {
        q.disableNotifications();
        // A chain answered synchronously is done with (handleChain's contract), so its object
        // is refilled for the next one; a chain the model answers later is never reused.
        // The queue can stop inside the pass: a host whose interrupt callback (run from publish)
        // resets the device or stops the ring at once. Its chains are then the driver's again.
        let chain: DescriptorChain | null;
        while (this.active[index] === q && (chain = q.pop(this.spare[index])) !== null) {
          this.spare[index] = undefined;
          if (this.serveChain(index, q, chain)) {
            this.spare[index] = chain;
            if (++completed === due) {
              this.publish(index, q);
              completed = 0;
              due = this.publishBatch;
            }
          }
        }
      } catch (e) {
        failure = e;
      }
      try {
        // Answers already written in this pass reach the driver even if a later chain broke a rule.
        if (completed && this.active[index] === q) this.publish(index, q);
        if (failure === undefined) more = this.active[index] === q && q.enableNotifications();
      } catch (e) {
        failure ??= e;
      }
      if (failure !== undefined) {
        this.deviceError(failure, index);
        return;
      }
      if (!more) return;
    }
  }


  /**
   * Hands the chains at descriptor indices `heads` to the device again, in order, as if just
   * popped (they were taken from the available ring before: vhost-user inflight resubmission
   * after a back-end restart). Does nothing unless the queue is active and DRIVER_OK is set.
   */
  resubmit(index: number, heads: readonly number[]): void {
    const q = this.active[index];
    if (!q || !this.driverOk) return;
    try {
      let completed = 0;
      for (const head of heads) {
        if (this.active[index] !== q) return;
        if (this.serveChain(index, q, q.chainAt(head))) completed++;
      }
      if (completed) this.publish(index, q);
    } catch (e) {
      this.deviceError(e, index);
    }
  }

  /** Gives one chain to the device; true if it completed at once (used element added, not published). */
  private serveChain(index: number, q: DeviceVirtqueue, chain: DescriptorChain): boolean {
    const result = this.device.handleChain(index, chain, this.context);
    if (typeof result === 'number') {
      this.checkUsedLength(chain, result);
      q.addUsed(chain.head, result);
      const c = this.counters[index]!;
      c.requests++;
      c.bytesRead += chain.readableLength;
      c.bytesWritten += result;
      return true;
    }
    this.completeLater(index, q, chain, result);
    return false;
  }

  /** The driver owns the buffers of chains still held by the model again (reset, ring stop). */
  private revokeHeld(index: number): void {
    const held = this.held[index];
    if (!held) return;
    for (const chain of held) chain.revoke();
    held.clear();
    this.wakeDrainers(index);
  }

  /**
   * Resolves once the model holds no chain from queue `index` any more: each was answered
   * (its used element published and the notification decided) or revoked by a stop or a
   * reset. Never rejects. vhost-user's GET_VRING_BASE waits on it (a drain) before it answers.
   */
  drained(index: number): Promise<void> {
    if ((this.held[index]?.size ?? 0) === 0) return Promise.resolve();
    return new Promise((resolve) => (this.drainers[index] ??= []).push(resolve));
  }

  private wakeDrainers(index: number): void {
    const waiting = this.drainers[index];
    if (!waiting || this.held[index]!.size !== 0) return;
    this.drainers[index] = undefined;
    for (const w of waiting) w();
  }

  /**
   * Resolves once every answer the model owed at the time of the call has settled, including
   * those of queues stopped or reset since. Never rejects. Hosts wait on it before unmapping
   * guest memory, since a model's asynchronous I/O may still be reading or writing it.
   */
  settled(): Promise<void> {
    if (this.owed.size === 0) return Promise.resolve();
    return Promise.all(this.owed).then(() => undefined);
  }

  /** How many answers the model still owes (all queues, stopped ones included). */
  get owedCount(): number {
    return this.owed.size;
  }

  private completeLater(index: number, q: DeviceVirtqueue, chain: DescriptorChain, result: Promise<number>): void {
    const held = this.held[index]!;
    held.add(chain);
    const owed = result.then(
      () => {},
      () => {},
    );
    this.owed.add(owed);
    void owed.then(() => {
      held.delete(chain);
      this.owed.delete(owed);
      this.wakeDrainers(index);
    });
    result.then(
      (len) => {
        if (this.active[index] !== q) return; // reset or stopped meanwhile: the driver detached it
        try {
          this.checkUsedLength(chain, len);
          q.addUsed(chain.head, len);
          const c = this.counters[index]!;
          c.requests++;
          c.bytesRead += chain.readableLength;
          c.bytesWritten += len;
          this.publish(index, q);
        } catch (e) {
          this.deviceError(e, index);
        }
      },
      (e: unknown) => {
        if (this.active[index] === q) this.deviceError(e, index);
      },
    );
  }

  private publish(index: number, q: DeviceVirtqueue): void {
    q.publishUsed();
    const c = this.counters[index]!;
    c.flushes++;
    if (q.needsNotification()) {
      c.notifications++;
      if (EV_NOTIFY.enabled) this.traceNotify(index, q, true);
      this.host.interrupt(index);
    } else {
      c.suppressed++;
      if (EV_NOTIFY_SUPPRESSED.enabled) this.traceNotify(index, q, false);
    }
  }

  private traceNotify(index: number, q: DeviceVirtqueue, sent: boolean): void {
    if (sent) EV_NOTIFY.emit(this.vdev, index, q.nextUsed);
    else EV_NOTIFY_SUPPRESSED.emit(this.vdev, index, q.nextUsed, q.usedEventWord(), q.availFlagsWord());
  }

  /** Queue `index` as x-query-virtio-queue-status shows it. */
  queueStatus(index: number): QueueStatus {
    const cfg = this.queues[index];
    if (!cfg) throw new RangeError(`no queue ${index} (the device has ${this.queues.length})`);
    const q = this.active[index] ?? null;
    return {
      index,
      maxSize: cfg.maxSize,
      size: q ? q.size : cfg.size,
      // A transport's QueueReady (virtio-mmio), or a queue a host started itself (vhost-user
      // starts rings with SET_VRING_KICK / ENABLE, which never write QueueReady).
      ready: cfg.ready || q !== null,
      active: q !== null && this.driverOk,
      desc: cfg.desc,
      avail: cfg.avail,
      used: cfg.used,
      ring: q ? q.status() : null,
      held: this.held[index]?.size ?? 0,
      counters: Object.assign(new QueueCounters(), this.counters[index]),
    };
  }

  /** The device as x-query-virtio-status shows it, with every queue and the counters. */
  stats(): DeviceStats {
    const queues = this.queues.map((_, i) => this.queueStatus(i));
    const totals = new QueueCounters();
    for (const q of queues) {
      for (const k of Object.keys(totals) as (keyof QueueCounters)[]) totals[k] += q.counters[k];
    }
    const hex = (f: bigint) => `0x${f.toString(16).padStart(16, '0')}`;
    return {
      vdev: this.vdev,
      deviceId: this.device.deviceId,
      status: this.status,
      statusNames: statusNames(this.status),
      deviceFeatures: hex(this.offeredFeatures),
      driverFeatures: hex(this.driverFeatures),
      featureNames: { ...this.device.featureNames },
      featuresOk: (this.status & Status.FEATURES_OK) !== 0,
      configGeneration: this.configGeneration,
      configNotifications: this.configNotifications,
      errors: this.errors,
      queues,
      totals,
    };
  }

  private checkUsedLength(chain: DescriptorChain, len: number): void {
    if (!Number.isInteger(len) || len < 0 || len > chain.writableLength) {
      throw new RangeError(`device model returned used length ${len} for a chain with ${chain.writableLength} writable bytes`);
    }
  }
}

