/**
 * Inflight tracking without touching the device model: a VirtioDevice that wraps the real
 * one and records, in the shared inflight buffer ([vhost-user "Inflight I/O tracking"]),
 * each chain the runtime hands to the model (taken from the available ring) and each one
 * the model completes (about to be returned in the used ring).
 *
 * The runtime publishes used elements after handleChain returns (batched per pass, and for
 * asynchronous answers in the order their promises settle), so the "used_idx moved, clear
 * what it published" step is done lazily by `settle` before every record, from the used ring
 * itself; a crash in between is exactly the reconnection case the spec's recovery covers.
 *
 * It also remembers, in this process and with or without an inflight buffer, the chains the
 * model holds (handleChain returned a promise that has not settled). When the session stops
 * a ring (disable, new memory table, new kick fd, GET_VRING_BASE) the runtime drops later
 * completions of chains taken from the old DeviceQueue; `takePending` gives the session those
 * heads to resubmit when the ring starts again, so a request is never lost by a restart.
 */
import type { DeviceContext, VirtioDevice } from '../device/device.js';
import type { DescriptorChain } from '../virtio/chain.js';
import type { InflightQueue } from './inflight.js';

export interface TrackedQueue {
  region: InflightQueue;
  /** The used ring's idx as published in guest memory. */
  usedIdx(): number;
  /** used.ring[slot].id: the head a published used element names. */
  usedHead(slot: number): number;
}

/** A chain handed to the model and not completed yet. */
interface Pending {
  readonly order: number;
  /** The queue's epoch when it was taken: a completion from an older epoch is dropped by the runtime. */
  readonly epoch: number;
}

export class InflightTrackingDevice implements VirtioDevice {
  private readonly tracked: (TrackedQueue | null)[];
  private readonly pending: Map<number, Pending>[];
  private readonly epochs: number[];
  private order = 0;

  constructor(readonly inner: VirtioDevice) {
    this.tracked = inner.queueMaxSizes.map(() => null);
    this.pending = inner.queueMaxSizes.map(() => new Map());
    this.epochs = inner.queueMaxSizes.map(() => 0);
  }

  /**
   * The session took queue `index` out of the runtime: completions of chains taken so far
   * will be dropped by the runtime, so those chains stay pending for `takePending`.
   */
  stopped(index: number): void {
    this.epochs[index]!++;
  }

  /** The chains of queue `index` taken but never completed in the epoch they were taken, oldest first; forgets them. */
  takePending(index: number): number[] {
    const map = this.pending[index]!;
    const heads = [...map.entries()].sort((a, b) => a[1].order - b[1].order).map(([head]) => head);
    map.clear();
    return heads;
  }

  /** Forgets the pending chains of queue `index` (every queue if undefined): a reset, or a ring that is not the same any more. */
  forget(index?: number): void {
    for (let i = 0; i < this.pending.length; i++) {
      if (index !== undefined && i !== index) continue;
      this.pending[i]!.clear();
      this.epochs[i]!++;
    }
  }

  get deviceId(): number {
    return this.inner.deviceId;
  }
  get features(): bigint {
    return this.inner.features;
  }
  get featureNames(): Readonly<Record<number, string>> | undefined {
    return this.inner.featureNames;
  }
  get configSize(): number {
    return this.inner.configSize;
  }
  get queueMaxSizes(): readonly number[] {
    return this.inner.queueMaxSizes;
  }

  /** Starts recording queue `index` into `t` (null stops). */
  track(index: number, t: TrackedQueue | null): void {
    this.tracked[index] = t;
  }

  readConfig(offset: number, into: Uint8Array): void {
    this.inner.readConfig(offset, into);
  }

  writeConfig(offset: number, data: Uint8Array, ctx: DeviceContext): void {
    this.inner.writeConfig(offset, data, ctx);
  }

  handleChain(queue: number, chain: DescriptorChain, ctx: DeviceContext): number | Promise<number> {
    const result = this.handleTracked(queue, chain, ctx);
    if (typeof result === 'number') return result;
    const map = this.pending[queue]!;
    const entry: Pending = { order: this.order++, epoch: this.epochs[queue]! };
    map.set(chain.head, entry);
    const done = (): void => {
      // Completed in the epoch it was taken in: the runtime publishes it (or reports the
      // error). From an older epoch the runtime drops it: keep it for resubmission.
      if (this.epochs[queue] === entry.epoch && map.get(chain.head) === entry) map.delete(chain.head);
    };
    result.then(done, done);
    return result;
  }

  private handleTracked(queue: number, chain: DescriptorChain, ctx: DeviceContext): number | Promise<number> {
    const t = this.tracked[queue] ?? null;
    if (t !== null) {
      // Settle what was published since the last head was taken, then record this one. Its
      // completion needs no record: the next settle (or a restarted back-end's recover) finds
      // it in the used ring once the runtime has published it (InflightQueue.settle).
      t.region.settle(t.usedIdx(), t.usedHead);
      t.region.begin(chain.head);
    }
    return this.inner.handleChain(queue, chain, ctx);
  }

  activate(ctx: DeviceContext): void {
    this.inner.activate?.(ctx);
  }

  reset(): void {
    this.inner.reset();
  }
}
