/**
 * Wraps a device model so its answers come late (for tests of a slow device with a full ring).
 * The chain is handled when it is taken; only the used buffer is delayed.
 *
 *  - `delayMs`: every answer that many ms late (`new SlowDevice(model, 40)`);
 *  - random delays: with probability `randomRate` an answer is delayed by a random 0..`randomMaxMs` ms
 *    (so answers also come back out of order);
 *  - stalls: with probability `stallRate` per request the device stalls for `stallMs` ms (a random
 *    length between `stallMs[0]` and `stallMs[1]` when a range is given): every answer due in that
 *    time is held until the stall ends, so the driver's ring fills up;
 *  - `seed`: the random choices come from a seeded PRNG (same seed, same choices for the same requests).
 *
 * Requests neither delayed nor stalled are answered synchronously, as by the model itself.
 */
import type { DeviceContext, VirtioDevice } from './device.js';
import type { DescriptorChain } from '../virtio/chain.js';

export interface SlowDeviceOptions {
  /** Every answer this many ms late (0: none). */
  delayMs?: number;
  /** Probability (0..1) that an answer is delayed by a random 0..randomMaxMs ms. */
  randomRate?: number;
  /** The longest random delay, ms (default 2). */
  randomMaxMs?: number;
  /** Probability (0..1), per request, that the device stalls. */
  stallRate?: number;
  /** How long a stall lasts, ms: a number, or [min, max] for a random length (default 20). */
  stallMs?: number | readonly [number, number];
  /** Seed of the PRNG (default 1). */
  seed?: number;
  /** Called when a stall begins, with its length (in-process use only: a function cannot go to a worker). */
  onStall?: (ms: number) => void;
}

/** What a SlowDevice did so far. */
export interface SlowDeviceStats {
  /** Requests handled. */
  requests: number;
  /** Answers given a random delay. */
  randomDelays: number;
  /** Stalls begun. */
  stalls: number;
  /** Answers held by a stall. */
  stalled: number;
  /** Answers not yet given (delayed or stalled) right now, and the most at any time. */
  held: number;
  maxHeld: number;
}

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class SlowDevice implements VirtioDevice {
  private readonly options: Required<Omit<SlowDeviceOptions, 'stallMs' | 'onStall'>> & { stallMs: readonly [number, number] };
  private readonly onStall: ((ms: number) => void) | undefined;
  private readonly random: () => number;
  private stallUntil = 0;
  private stallEnd: Promise<void> | null = null;
  private readonly counts: SlowDeviceStats = { requests: 0, randomDelays: 0, stalls: 0, stalled: 0, held: 0, maxHeld: 0 };

  constructor(
    private readonly inner: VirtioDevice,
    delay: number | SlowDeviceOptions,
  ) {
    const o = typeof delay === 'number' ? { delayMs: delay } : delay;
    const stall = o.stallMs ?? 20;
    this.options = {
      delayMs: o.delayMs ?? 0,
      randomRate: o.randomRate ?? 0,
      randomMaxMs: o.randomMaxMs ?? 2,
      stallRate: o.stallRate ?? 0,
      stallMs: typeof stall === 'number' ? [stall, stall] : [stall[0], stall[1]],
      seed: o.seed ?? 1,
    };
    for (const [name, v] of Object.entries({ ...this.options, stallMin: this.options.stallMs[0], stallMax: this.options.stallMs[1] })) {
      if (typeof v === 'number' && !(Number.isFinite(v) && v >= 0)) throw new RangeError(`SlowDevice: ${name} must be a number ≥ 0, got ${v}`);
    }
    if (this.options.randomRate > 1 || this.options.stallRate > 1) throw new RangeError('SlowDevice: rates are probabilities (0..1)');
    this.random = seededRandom(this.options.seed);
    this.onStall = o.onStall;
  }
  get deviceId() {
    return this.inner.deviceId;
  }
  get features() {
    return this.inner.features;
  }
  get featureNames() {
    return this.inner.featureNames;
  }
  get configSize() {
    return this.inner.configSize;
  }
  get queueMaxSizes() {
    return this.inner.queueMaxSizes;
  }
  readConfig(offset: number, into: Uint8Array): void {
    this.inner.readConfig(offset, into);
  }
  writeConfig(offset: number, data: Uint8Array, ctx: DeviceContext): void {
    this.inner.writeConfig(offset, data, ctx);
  }
  /** What the device did so far (a copy). */
  stats(): SlowDeviceStats {
    return { ...this.counts };
  }
  handleChain(queue: number, chain: DescriptorChain, ctx: DeviceContext): number | Promise<number> {
    const o = this.options;
    this.counts.requests++;
    const result = this.inner.handleChain(queue, chain, ctx);
    let delay = o.delayMs;
    if (o.randomRate > 0 && this.random() < o.randomRate) {
      delay += this.random() * o.randomMaxMs;
      this.counts.randomDelays++;
    }
    if (o.stallRate > 0 && this.random() < o.stallRate && performance.now() >= this.stallUntil) {
      const [min, max] = o.stallMs;
      this.startStall(min + this.random() * (max - min));
    }
    const stall = performance.now() < this.stallUntil ? this.stallEnd : null;
    if (stall) this.counts.stalled++;
    if (delay === 0 && stall === null) return result;
    return this.later(result, delay, stall);
  }
  /** DRIVER_OK reaches the wrapped model (its optional hook), as it would without the wrapper. */
  activate(ctx: DeviceContext): void {
    this.inner.activate?.(ctx);
  }
  reset(): void {
    this.stallUntil = 0;
    this.inner.reset();
  }

  private startStall(ms: number): void {
    this.counts.stalls++;
    this.stallUntil = performance.now() + ms;
    this.stallEnd = new Promise((r) => setTimeout(r, ms));
    this.onStall?.(ms);
  }

  private async later(result: number | Promise<number>, delayMs: number, stall: Promise<void> | null): Promise<number> {
    const c = this.counts;
    c.held++;
    if (c.held > c.maxHeld) c.maxHeld = c.held;
    try {
      const len = await result;
      // a delay under 1 ms still goes behind what is queued (setImmediate), as a real slow path would
      await new Promise((r) => (delayMs >= 1 ? setTimeout(r, delayMs) : setImmediate(r)));
      if (stall) await stall;
      return len;
    } finally {
      c.held--;
    }
  }
}
