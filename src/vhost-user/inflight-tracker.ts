/**
 * Inflight tracking without touching the device model: a VirtioDevice that wraps the real
 * one and records, in the shared inflight buffer ([vhost-user "Inflight I/O tracking"]),
 * each chain the runtime hands to the model (taken from the available ring) and each one
 * the model completes (about to be returned in the used ring).
 *
 * The runtime publishes used elements after handleChain returns (batched per pass), so the
 * "used_idx moved, clear the last batch" step is done lazily by `settle` before every
 * record; a crash in between is exactly the reconnection case the spec's recovery covers.
 */
import type { DeviceContext, VirtioDevice } from '../device/device.js';
import type { DescriptorChain } from '../virtio/chain.js';
import type { InflightQueue } from './inflight.js';

export interface TrackedQueue {
  region: InflightQueue;
  /** The used ring's idx as published in guest memory. */
  usedIdx(): number;
}

export class InflightTrackingDevice implements VirtioDevice {
  private readonly tracked: (TrackedQueue | null)[];

  constructor(readonly inner: VirtioDevice) {
    this.tracked = inner.queueMaxSizes.map(() => null);
  }

  get deviceId(): number {
    return this.inner.deviceId;
  }
  get features(): bigint {
    return this.inner.features;
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
    const t = this.tracked[queue] ?? null;
    if (t === null) return this.inner.handleChain(queue, chain, ctx);
    t.region.settle(t.usedIdx());
    t.region.begin(chain.head);
    const result = this.inner.handleChain(queue, chain, ctx);
    if (typeof result === 'number') {
      t.region.settle(t.usedIdx());
      t.region.link(chain.head);
      return result;
    }
    return result.then((len) => {
      if (this.tracked[queue] === t) {
        t.region.settle(t.usedIdx());
        t.region.link(chain.head);
      }
      return len;
    });
  }

  activate(ctx: DeviceContext): void {
    this.inner.activate?.(ctx);
  }

  reset(): void {
    this.inner.reset();
  }
}
