/**
 * virtio-rng, the entropy device (virtio 1.2 §5.4): device ID 4, one queue (requestq, index 0),
 * no feature bits (§5.4.3), no configuration space (§5.4.4). The driver makes device-writable
 * buffers available; the device fills them with bytes from an entropy source and returns the
 * count written as the used length (§5.4.6).
 *
 * Pure logic: the bytes come from an EntropySource the host hands in (src/devices/rng/sources.ts
 * has the OS CSPRNG and a file); the model itself opens nothing. Decisions:
 *
 *  - A chain with any device-readable descriptor (which includes every chain without writable
 *    bytes: a descriptor of 0 bytes is refused by the ring walk, §2.7.5) breaks §5.4.6.1 ("The
 *    driver MUST NOT place driver-readable buffers into the queue") and cannot be answered as
 *    §5.4.6.2 asks (one or more random bytes): it is a device error (DEVICE_REQUEST_INVALID →
 *    DEVICE_NEEDS_RESET), not a used length of 0.
 *  - Each chain gets min(writable bytes, {@link MAX_REQUEST_BYTES}, rate budget) bytes: §5.4.6.2
 *    lets the device use less than the whole buffer, and a bound keeps a huge guest buffer from
 *    costing host memory.
 *  - The source may return fewer bytes than asked (answered as they are, ≥ 1). A source that
 *    returns 0 is exhausted (a file at its end): the request is a device error with a message
 *    saying so (the driver sees DEVICE_NEEDS_RESET), never a used length of 0 (which §5.4.6.2
 *    forbids and which Linux's driver would retry forever) and never unfilled bytes. A source
 *    that throws, or returns a count it cannot have written, is a device error too.
 *  - Rate limit (as vhost-device-rng's --max-bytes/--period): at most `maxBytes` bytes per
 *    period of `periodMs`. A period starts at the first byte served after the previous one
 *    ended. A request that finds the budget spent waits, without polling, on one timer for the
 *    next period, and requests are answered in the order they came. The budget is host state:
 *    a device reset drops waiting requests and the timer but does not refill it (a guest cannot
 *    reset its way past the limit).
 *  - Requests are answered one at a time (an asynchronous source or the rate limit queue
 *    them); a request that can be answered at once is answered synchronously.
 *  - The model keeps a chain only while its request waits or its source read is pending; it
 *    drops it before the promise settles (the contract in src/device/device.ts).
 */
import type { DeviceContext, VirtioDevice } from '../../device/device.js';
import type { DescriptorChain } from '../../virtio/chain.js';
import { VirtioError, fail } from '../../virtio/errors.js';

/** §5.4.1. */
export const VIRTIO_ID_RNG = 4;
/** §5.4.2: requestq. */
export const REQUEST_QUEUE = 0;
/** virtio_uml (Linux 6.1) always sets up 256-entry rings. */
export const DEFAULT_QUEUE_SIZE = 256;
/** Most bytes put into one chain (§5.4.6.2: the device MAY use less than the whole buffer). */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** Where random bytes come from. */
export interface EntropySource {
  /**
   * Fills the start of `into` and returns the count of bytes produced (1..into.length), or 0
   * when the source is exhausted. May answer later (a hardware RNG, an asynchronous read).
   * Throws (or rejects) on a read error.
   */
  read(into: Uint8Array): number | Promise<number>;
  /** A few words for messages: "OS CSPRNG", "/dev/hwrng". */
  readonly description?: string;
}

/** The time and timers the rate limit uses (tests may pass their own). */
export interface RngClock {
  /** Milliseconds, monotonic. */
  now(): number;
  setTimer(callback: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

const systemClock: RngClock = {
  now: () => performance.now(),
  setTimer: (cb, ms) => setTimeout(cb, ms),
  clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface RateLimit {
  /** Most bytes per period (≥ 1). */
  maxBytes: number;
  /** Period length in milliseconds (≥ 1). */
  periodMs: number;
}

export interface RngDeviceOptions {
  source: EntropySource;
  /** Maximum size of the request queue; default 256. */
  queueSize?: number;
  /** No limit when absent. */
  rateLimit?: RateLimit;
  clock?: RngClock;
}

/** A request waiting for its turn (behind others, for the budget, or for an asynchronous read). */
interface Waiting {
  chain: DescriptorChain;
  want: number;
  resolve(len: number): void;
  reject(error: unknown): void;
}

/** A source read still running: the bytes asked for land in `scratch`. */
interface PendingRead {
  read: Promise<number>;
  asked: number;
  scratch: Uint8Array;
}

/** serveNow()'s answer when the period's budget is spent. */
const WAIT = -1;

export class RngDevice implements VirtioDevice {
  readonly deviceId = VIRTIO_ID_RNG;
  readonly features = 0n;
  readonly configSize = 0;
  readonly queueMaxSizes: readonly number[];
  /** Bytes handed to the driver since this model was made (not reset: host-side statistics). */
  bytesServed = 0;

  private readonly source: EntropySource;
  private readonly limit: RateLimit | undefined;
  private readonly clock: RngClock;
  private scratch = new Uint8Array(MAX_REQUEST_BYTES);
  private readonly waiting: Waiting[] = [];
  /** A source read is pending (the head of `waiting` is being served). */
  private reading = false;
  /** The timer that ends the current period, while a request waits for it. */
  private timer: unknown = undefined;
  private periodStart = 0;
  private periodBytes = 0;
  private periodOpen = false;
  /** Bumped by reset: an asynchronous read that started before it is forgotten. */
  private generation = 0;

  constructor(options: RngDeviceOptions) {
    this.source = options.source;
    this.queueMaxSizes = [options.queueSize ?? DEFAULT_QUEUE_SIZE];
    const limit = options.rateLimit;
    if (limit) {
      if (!Number.isSafeInteger(limit.maxBytes) || limit.maxBytes < 1) throw new RangeError(`rate limit maxBytes ${limit.maxBytes} is not a count ≥ 1`);
      if (!Number.isSafeInteger(limit.periodMs) || limit.periodMs < 1) throw new RangeError(`rate limit periodMs ${limit.periodMs} is not a count ≥ 1`);
      this.limit = { maxBytes: limit.maxBytes, periodMs: limit.periodMs };
    }
    this.clock = options.clock ?? systemClock;
  }

  /** §5.4.4: no configuration space (configSize 0; the runtime never calls these). */
  readConfig(_offset: number, into: Uint8Array): void {
    into.fill(0);
  }
  writeConfig(): void {}

  /** Requests waiting (for their turn, the budget or the source). */
  get pending(): number {
    return this.waiting.length;
  }

  handleChain(_queue: number, chain: DescriptorChain, _ctx: DeviceContext): number | Promise<number> {
    if (chain.readableLength !== 0 || chain.writableLength === 0) {
      fail(
        'DEVICE_REQUEST_INVALID',
        `virtio-rng chain ${chain.head} has ${chain.readableLength} device-readable / ${chain.writableLength} device-writable bytes; ` +
          'the driver must make only device-writable buffers available',
        '§5.4.6.1',
      );
    }
    const want = Math.min(chain.writableLength, MAX_REQUEST_BYTES);
    if (this.waiting.length === 0) {
      // Nobody ahead: answered now when the budget and the source allow (no promise made).
      const r = this.serveNow(chain, want);
      if (typeof r === 'number') {
        if (r !== WAIT) return r;
      } else {
        return new Promise<number>((resolve, reject) => {
          this.waiting.push({ chain, want, resolve, reject });
          this.awaitRead(r);
        });
      }
    }
    return new Promise<number>((resolve, reject) => {
      this.waiting.push({ chain, want, resolve, reject });
      this.pump();
    });
  }

  /**
   * Device reset (§2.1): requests still waiting are dropped (the runtime has taken their
   * buffers back already) and the period's timer is cancelled. Their promises settle with 0,
   * which the runtime ignores for a queue that stopped. The rate budget is host state: kept.
   */
  reset(): void {
    this.generation++;
    if (this.timer !== undefined) {
      this.clock.clearTimer(this.timer);
      this.timer = undefined;
    }
    if (this.reading) {
      // The source may still write into the old scratch buffer: later reads use a fresh one.
      this.scratch = new Uint8Array(MAX_REQUEST_BYTES);
      this.reading = false;
    }
    for (const w of this.waiting.splice(0)) w.resolve(0);
  }

  /** Serves waiting requests in order until one must wait (budget, asynchronous read) or none is left. */
  private pump(): void {
    while (!this.reading && this.timer === undefined && this.waiting.length !== 0) {
      const w = this.waiting[0]!;
      let r: number | PendingRead;
      try {
        r = this.serveNow(w.chain, w.want);
      } catch (e) {
        this.failAll(e);
        return;
      }
      if (r === WAIT) return; // the timer calls pump() again
      if (typeof r !== 'number') {
        this.awaitRead(r);
        return;
      }
      this.waiting.shift();
      w.resolve(r);
    }
  }

  /**
   * The head of `waiting` is answered when the source's read completes. The callback finds the
   * request as the head again (nothing else is served while a read is pending) rather than
   * holding it: after a reset the read may never complete, and the chain must not stay
   * referenced by it.
   */
  private awaitRead(r: PendingRead): void {
    this.reading = true;
    const generation = this.generation;
    r.read.then(
      (got) => {
        if (generation !== this.generation) return; // reset meanwhile: already settled
        this.reading = false;
        const w = this.waiting[0]!;
        let len: number;
        try {
          len = this.deliver(w.chain, r.scratch, got, r.asked);
        } catch (e) {
          this.failAll(e);
          return;
        }
        this.waiting.shift();
        w.resolve(len);
        this.pump();
      },
      (e: unknown) => {
        if (generation !== this.generation) return;
        this.reading = false;
        this.failAll(this.sourceError(e));
      },
    );
  }

  /**
   * A device error ends every waiting request: the runtime sets NEEDS_RESET on the first
   * rejection and ignores the rest, and the model lets go of their chains at once.
   */
  private failAll(error: unknown): void {
    for (const w of this.waiting.splice(0)) w.reject(error);
  }

  /**
   * Fills `chain` now if the budget allows: the used length, WAIT (the timer is set), or the
   * source's pending read when it answers later (then `deliver` finishes). The bytes asked
   * for are charged to the period when asked; what the source did not produce is refunded.
   */
  private serveNow(chain: DescriptorChain, want: number): number | PendingRead {
    const budget = this.budget();
    if (budget === 0) {
      this.waitForPeriod();
      return WAIT;
    }
    const asked = Math.min(want, budget);
    const scratch = this.scratch;
    let got: number | Promise<number>;
    try {
      got = this.source.read(scratch.subarray(0, asked));
    } catch (e) {
      throw this.sourceError(e);
    }
    this.periodBytes += asked;
    if (typeof got !== 'number') return { read: Promise.resolve(got), asked, scratch };
    return this.deliver(chain, scratch, got, asked);
  }

  /** Checks the source's count, refunds what it did not produce, writes the bytes into the chain. */
  private deliver(chain: DescriptorChain, scratch: Uint8Array, got: number, asked: number): number {
    if (!Number.isSafeInteger(got) || got < 0 || got > asked) {
      fail('DEVICE_REQUEST_INVALID', `virtio-rng: the entropy source returned ${got} for a read of ${asked} bytes`);
    }
    this.periodBytes -= asked - got;
    if (got === 0) {
      fail(
        'DEVICE_REQUEST_INVALID',
        `virtio-rng: the entropy source (${this.source.description ?? 'source'}) is exhausted after ${this.bytesServed} bytes; ` +
          'a used length of 0 is not allowed, so the device stops and needs a reset',
        '§5.4.6.2',
      );
    }
    const len = chain.write(scratch.subarray(0, got));
    this.bytesServed += got;
    return len;
  }

  /** Bytes left in the current period (opening a new one if the last has ended); Infinity without a limit. */
  private budget(): number {
    const limit = this.limit;
    if (!limit) return Number.POSITIVE_INFINITY;
    const now = this.clock.now();
    if (!this.periodOpen || now - this.periodStart >= limit.periodMs) {
      this.periodOpen = true;
      this.periodStart = now;
      this.periodBytes = 0;
    }
    return Math.max(0, limit.maxBytes - this.periodBytes);
  }

  private waitForPeriod(): void {
    if (this.timer !== undefined) return;
    const ms = Math.max(1, Math.ceil(this.periodStart + this.limit!.periodMs - this.clock.now()));
    this.timer = this.clock.setTimer(() => {
      this.timer = undefined;
      this.pump();
    }, ms);
  }

  private sourceError(e: unknown): VirtioError {
    if (e instanceof VirtioError) return e;
    return new VirtioError(
      'DEVICE_REQUEST_INVALID',
      `virtio-rng: reading the entropy source (${this.source.description ?? 'source'}) failed: ${(e as Error)?.message ?? String(e)}`,
    );
  }
}
