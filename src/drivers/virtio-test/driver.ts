/**
 * The virtio-test guest driver: the seed's Linux driver, with its bugs fixed.
 *
 *  - probe requires VIRTIO_TEST_F_CAN_PRINT and fails with a clear message without it
 *    (the seed asks for zero queues and then dereferences vqs[0]);
 *  - each write owns its request/response buffers (the seed shares one, so concurrent
 *    writes overwrite each other);
 *  - a full ring makes the writer wait for space instead of dropping the request;
 *  - write returns the byte count (the seed returns 0, so `echo 7 > /dev/virtio_misc` loops);
 *    any length other than 1 is EINVAL;
 *  - every write gets exactly one response, which the writing file can read() back;
 *  - a device that returns a used id not in flight or a short length, or that sets
 *    DEVICE_NEEDS_RESET, marks the device broken: waiting writers and readers get EIO.
 *
 * Fault injection (tests of a slow guest): `interruptDelay` defers the used-buffer processing of
 * a random fraction of interrupts by a random short time, as a guest busy elsewhere would. It is
 * a driver option, or a "module parameter" a program may set at run time (`virtioTestParams`,
 * like /sys/module/virtio_test/parameters/); `virtioTestCounters` counts what happened.
 */
import { Status } from '../../virtio/constants.js';
import type { DriverVirtqueue } from '../../virtio/virtqueue.js';
import {
  REQUEST_SIZE,
  RESPONSE_SIZE,
  VIRTIO_ID_TEST,
  VIRTIO_TEST_F_CAN_PRINT,
  decodeResponse,
  encodeRequest,
  requestFor,
  responseLogLines,
} from '../../devices/virtio-test/protocol.js';
import { Errno, type FileOperations, type GuestKernel, type OpenFile } from '../kernel.js';
import { ProbeError, type VirtioDriver, type VirtioDriverDevice } from '../virtio-bus.js';

export const MISC_NAME = 'virtio_misc';

/** Defer the used-buffer processing of a fraction `rate` (0..1) of interrupts by a random 0..maxMs ms. */
export interface InterruptDelay {
  rate: number;
  maxMs: number;
  /** Seed of the PRNG choosing which interrupts and how long (default 1). */
  seed?: number;
}

/** Run-time parameters of every instance (a driver option given at construction wins). */
export const virtioTestParams: { interruptDelay: InterruptDelay | null } = { interruptDelay: null };

/** What the instances did, summed (for tests and the stress program's report). */
export const virtioTestCounters = {
  /** Used-buffer interrupts taken. */
  interrupts: 0,
  /** Interrupts whose processing was deferred (interruptDelay). */
  deferred: 0,
  /** Interrupts that found a deferred processing already pending (taken by it). */
  coalesced: 0,
  /** Times a writer found the ring full and waited for space. */
  ringFullWaits: 0,
};

/** mulberry32, uniform in [0, 1). */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One request in flight: its DMA buffer (request then response) and who is waiting for it. */
interface Request {
  addr: number;
  file: FileState;
}

/** Per-open-file state: responses completed for this file's writes, and readers waiting. */
class FileState {
  readonly responses: Uint8Array[] = [];
  readonly readers: { resolve(b: Uint8Array): void; reject(e: Error): void }[] = [];
  inFlight = 0;
  closed = false;
}

/** A promise-based wait queue (Linux's wait_queue_head_t for our single-threaded guest). */
class WaitQueue {
  private waiters: (() => void)[] = [];
  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  wakeAll(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

class VirtioTestInstance {
  private readonly ringSpace = new WaitQueue();
  private broken: string | null = null;
  readonly miscName: string;
  /** A deferred processing of used buffers is pending (interruptDelay). */
  private deferred = false;
  private random: { seed: number; next: () => number } | null = null;

  constructor(
    private readonly dev: VirtioDriverDevice,
    private readonly kernel: GuestKernel,
    private readonly vq: DriverVirtqueue<Request>,
    private readonly interruptDelay?: InterruptDelay,
  ) {
    this.miscName = kernel.registerMisc(MISC_NAME, this.fileOperations());
  }

  /** Called from the device's interrupt (used buffer notification). */
  requestDone(): void {
    this.kernel.printk('virtio test_request_done get ack');
    virtioTestCounters.interrupts++;
    if (this.deferred) {
      virtioTestCounters.coalesced++; // the pending processing takes these buffers too
      return;
    }
    const delayMs = this.pickDelay();
    if (delayMs === null) {
      this.processUsed();
      return;
    }
    virtioTestCounters.deferred++;
    this.deferred = true;
    const run = () => {
      this.deferred = false;
      // removed or broken meanwhile: the buffers were taken back (and the ring may be gone)
      if (this.broken === null) this.processUsed();
    };
    if (delayMs >= 1) setTimeout(run, delayMs);
    else setImmediate(run);
  }

  /** The delay for this interrupt's processing, or null to process it now. */
  private pickDelay(): number | null {
    const d = this.interruptDelay ?? virtioTestParams.interruptDelay;
    if (!d || !(d.rate > 0)) return null;
    const seed = d.seed ?? 1;
    if (this.random?.seed !== seed) this.random = { seed, next: seededRandom(seed) };
    if (this.random.next() >= d.rate) return null;
    return this.random.next() * d.maxMs;
  }

  /** Takes every used buffer, with callbacks disabled, and re-enables them with the re-check (§2.7.14). */
  private processUsed(): void {
    try {
      do {
        this.vq.disableCallbacks();
        let used;
        while ((used = this.vq.getUsed()) !== null) this.complete(used.token, used.len);
        if (this.vq.isBroken) break;
      } while (!this.vq.enableCallbacks());
    } catch (e) {
      this.markBroken(`device returned a bad used buffer: ${(e as Error).message}`);
    }
    this.ringSpace.wakeAll();
  }

  configChanged(): void {
    if (this.dev.status & Status.NEEDS_RESET) this.markBroken('device reports DEVICE_NEEDS_RESET');
  }

  remove(): void {
    this.markBroken('device removed', 'ENODEV');
    this.kernel.deregisterMisc(this.miscName);
  }

  private complete(req: Request, len: number): void {
    const { file } = req;
    file.inFlight--;
    if (len < RESPONSE_SIZE) {
      this.kernel.dmaFree(req.addr);
      throw new Error(`used length ${len} < ${RESPONSE_SIZE}`);
    }
    const bytes = this.kernel.memory.slice(req.addr + REQUEST_SIZE, RESPONSE_SIZE).slice();
    this.kernel.dmaFree(req.addr);
    for (const line of responseLogLines(decodeResponse(bytes))) this.kernel.printk(line);
    if (file.closed) return;
    const reader = file.readers.shift();
    if (reader) reader.resolve(bytes);
    else file.responses.push(bytes);
  }

  private markBroken(why: string, code: 'EIO' | 'ENODEV' = 'EIO'): void {
    if (this.broken === null) {
      this.broken = why;
      this.kernel.printk(`virtio_test: ${why}; device is broken`);
      // Reset so the device stops using our buffers, then take every buffer back (§2.1.2 / §3.3.1).
      this.dev.reset();
      for (const req of this.vq.detachUnused()) {
        req.file.inFlight--;
        this.kernel.dmaFree(req.addr);
      }
    }
    this.ringSpace.wakeAll();
    for (const f of this.files) {
      for (const r of f.readers.splice(0)) r.reject(new Errno(code, this.broken));
    }
  }

  private readonly files = new Set<FileState>();

  private fileOperations(): FileOperations {
    return {
      open: (file) => {
        const state = new FileState();
        this.files.add(state);
        file.private = state;
      },
      release: (file) => {
        const state = file.private as FileState;
        state.closed = true;
        this.files.delete(state);
      },
      write: (file, data) => this.write(file.private as FileState, data),
      read: (file, count) => this.read(file.private as FileState, count),
    };
  }

  private async write(file: FileState, data: Uint8Array): Promise<number> {
    if (data.length !== 1) throw new Errno('EINVAL', `write takes exactly 1 byte, got ${data.length}`);
    const addr = this.kernel.dmaAlloc(REQUEST_SIZE + RESPONSE_SIZE, 16);
    if (addr === null) throw new Errno('ENOMEM');
    encodeRequest(requestFor(data[0]!), this.kernel.memory.slice(addr, REQUEST_SIZE));
    this.kernel.memory.slice(addr + REQUEST_SIZE, RESPONSE_SIZE).fill(0);
    const req: Request = { addr, file };
    for (;;) {
      if (this.broken !== null) {
        this.kernel.dmaFree(addr);
        throw new Errno('EIO', this.broken);
      }
      if (this.vq.add([{ addr, len: REQUEST_SIZE }], [{ addr: addr + REQUEST_SIZE, len: RESPONSE_SIZE }], req)) break;
      virtioTestCounters.ringFullWaits++;
      await this.ringSpace.wait(); // ring full: wait for the device to return buffers
    }
    file.inFlight++;
    this.dev.kick(this.vq, 0);
    return 1;
  }

  private read(file: FileState, count: number): Promise<Uint8Array> {
    if (count < RESPONSE_SIZE) return Promise.reject(new Errno('EINVAL', `read needs ≥ ${RESPONSE_SIZE} bytes`));
    const ready = file.responses.shift();
    if (ready) return Promise.resolve(ready);
    if (this.broken !== null) return Promise.reject(new Errno('EIO', this.broken));
    if (file.inFlight === 0) return Promise.reject(new Errno('EAGAIN', 'no request in flight for this file'));
    return new Promise<Uint8Array>((resolve, reject) => file.readers.push({ resolve, reject }));
  }
}

export interface VirtioTestDriverOptions {
  /** Device IDs to bind (default [45]). */
  deviceIds?: readonly number[];
  /** Queue size to use (default: the device's maximum). */
  queueSize?: number;
  /** A slow guest: defer the processing of some interrupts (default: virtioTestParams.interruptDelay). */
  interruptDelay?: InterruptDelay;
}

export class VirtioTestDriver implements VirtioDriver {
  readonly name = 'virtio_test';
  readonly deviceIds: readonly number[];
  readonly features = [VIRTIO_TEST_F_CAN_PRINT];
  private readonly instances = new Map<VirtioDriverDevice, VirtioTestInstance>();

  constructor(private readonly options: VirtioTestDriverOptions = {}) {
    this.deviceIds = options.deviceIds ?? [VIRTIO_ID_TEST];
  }

  probe(dev: VirtioDriverDevice, kernel: GuestKernel): void {
    if (!dev.hasFeature(VIRTIO_TEST_F_CAN_PRINT)) {
      throw new ProbeError('virtio_test: device does not offer VIRTIO_TEST_F_CAN_PRINT; not binding');
    }
    let instance: VirtioTestInstance | undefined;
    const vq = dev.findQueue<Request>(0, () => instance?.requestDone(), { size: this.options.queueSize });
    dev.ready();
    instance = new VirtioTestInstance(dev, kernel, vq, this.options.interruptDelay);
    this.instances.set(dev, instance);
  }

  configChanged(dev: VirtioDriverDevice): void {
    this.instances.get(dev)?.configChanged();
  }

  remove(dev: VirtioDriverDevice): void {
    this.instances.get(dev)?.remove();
    this.instances.delete(dev);
  }

  /** The /dev name of the instance bound to `dev` (virtio_misc, virtio_misc1, ...). */
  miscName(dev: VirtioDriverDevice): string | undefined {
    return this.instances.get(dev)?.miscName;
  }
}
