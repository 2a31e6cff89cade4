/**
 * The virtio-rng guest driver for the embedded machine (virtio 1.2 §5.4), in the manner of
 * Linux's virtio-rng behind the hwrng core: binds device ID 4, sets up the one request queue
 * and registers the misc device `hwrng` (/dev/hwrng).
 *
 *  - read(count) makes one device-writable buffer of min(count, {@link MAX_READ}) bytes
 *    available (§5.4.6.1: only device-writable buffers), kicks, and resolves with the bytes the
 *    device wrote: the used length says how many (§5.4.6.1: the driver MUST examine it), which
 *    may be fewer than asked. MAX_READ is one page: a reader asking for more gets a page and
 *    reads again, as from Linux's /dev/hwrng. Unlike Linux 6.1's driver (one 64-byte buffer kept
 *    pending and handed out piecemeal) nothing is fetched ahead: each read gets its own buffer,
 *    so concurrent readers never share bytes and the device's bytes reach readers in order.
 *  - A full ring makes the reader wait for space; read(0) returns no bytes without a request.
 *  - A used length of 0 (§5.4.6.2: the device MUST place one or more bytes), one larger than
 *    the buffer (§2.7.8.1, checked by the queue), a used id not in flight, or DEVICE_NEEDS_RESET
 *    (§2.1.2) marks the device broken: the device is reset, every buffer taken back, and waiting
 *    and later readers get EIO.
 */
import { Status } from '../../virtio/constants.js';
import type { DriverVirtqueue } from '../../virtio/virtqueue.js';
import type { OptionValues } from '../../devices/definition.js';
import { Errno, type FileOperations, type GuestKernel } from '../kernel.js';
import type { VirtioDriver, VirtioDriverDevice } from '../virtio-bus.js';

export const MISC_NAME = 'hwrng';
/** §5.4.1. */
export const VIRTIO_ID_RNG = 4;
/** Largest buffer one read makes available: a page. */
export const MAX_READ = 4096;

/** One read in flight: its DMA buffer and its reader. */
interface Request {
  addr: number;
  len: number;
  resolve(bytes: Uint8Array): void;
  reject(error: Error): void;
}

class RngInstance {
  private broken: string | null = null;
  private brokenCode: 'EIO' | 'ENODEV' = 'EIO';
  /** Readers waiting for ring space (Linux's wait queue). */
  private spaceWaiters: (() => void)[] = [];
  readonly miscName: string;

  constructor(
    private readonly dev: VirtioDriverDevice,
    private readonly kernel: GuestKernel,
    private readonly vq: DriverVirtqueue<Request>,
  ) {
    this.miscName = kernel.registerMisc(MISC_NAME, this.fileOperations());
  }

  /** The used buffer notification. */
  requestDone(): void {
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
    this.wakeReaders();
  }

  configChanged(): void {
    if (this.dev.status & Status.NEEDS_RESET) this.markBroken('device reports DEVICE_NEEDS_RESET');
  }

  remove(): void {
    this.markBroken('device removed', 'ENODEV');
    this.kernel.deregisterMisc(this.miscName);
  }

  private complete(req: Request, len: number): void {
    if (len === 0) {
      this.kernel.dmaFree(req.addr);
      req.reject(new Errno('EIO', 'device returned no bytes'));
      throw new Error('used length 0: the device must place one or more random bytes (virtio 1.2 §5.4.6.2)');
    }
    // len ≤ req.len: DriverQueue.getUsed refuses a longer one (§2.7.8.1) before we get here.
    const bytes = this.kernel.memory.slice(req.addr, len).slice();
    this.kernel.dmaFree(req.addr);
    req.resolve(bytes);
  }

  private markBroken(why: string, code: 'EIO' | 'ENODEV' = 'EIO'): void {
    if (this.broken !== null) return;
    this.broken = why;
    this.brokenCode = code;
    this.kernel.printk(`virtio_rng: ${why}; device is broken`);
    // Reset first so the device stops using our buffers, then take every buffer back (§2.1.2).
    this.dev.reset();
    for (const req of this.vq.detachUnused()) {
      this.kernel.dmaFree(req.addr);
      req.reject(new Errno(code, why));
    }
    this.wakeReaders();
  }

  private wakeReaders(): void {
    const w = this.spaceWaiters;
    this.spaceWaiters = [];
    for (const f of w) f();
  }

  private fileOperations(): FileOperations {
    return { read: (_file, count) => this.read(count) };
  }

  private async read(count: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(count) || count < 0) throw new Errno('EINVAL', `read of ${count} bytes`);
    if (this.broken !== null) throw new Errno(this.brokenCode, this.broken);
    if (count === 0) return new Uint8Array(0);
    const len = Math.min(count, MAX_READ);
    const addr = this.kernel.dmaAlloc(len, 16);
    if (addr === null) throw new Errno('ENOMEM', `no guest memory for a ${len}-byte buffer`);
    // Zeroed: whatever the device does, a reader never sees an earlier reader's bytes.
    this.kernel.memory.slice(addr, len).fill(0);
    return new Promise<Uint8Array>((resolve, reject) => {
      const req: Request = { addr, len, resolve, reject };
      const submit = (): void => {
        if (this.broken !== null) {
          this.kernel.dmaFree(addr);
          reject(new Errno(this.brokenCode, this.broken));
          return;
        }
        if (!this.vq.add([], [{ addr, len }], req)) {
          this.spaceWaiters.push(submit); // ring full: try again when the device returns buffers
          return;
        }
        this.dev.kick(this.vq, 0);
      };
      submit();
    });
  }
}

export interface RngDriverOptions {
  /** Device IDs to bind (default [4]). */
  deviceIds?: readonly number[];
  /** Queue size to use (default: the device's maximum). */
  queueSize?: number;
}

export class RngDriver implements VirtioDriver {
  readonly name = 'virtio_rng';
  readonly deviceIds: readonly number[];
  /** §5.4.3: no feature bits. */
  readonly features: readonly number[] = [];
  private readonly instances = new Map<VirtioDriverDevice, RngInstance>();

  constructor(private readonly options: RngDriverOptions = {}) {
    this.deviceIds = options.deviceIds ?? [VIRTIO_ID_RNG];
  }

  probe(dev: VirtioDriverDevice, kernel: GuestKernel): void {
    let instance: RngInstance | undefined;
    const vq = dev.findQueue<Request>(0, () => instance?.requestDone(), { size: this.options.queueSize });
    dev.ready();
    instance = new RngInstance(dev, kernel, vq);
    this.instances.set(dev, instance);
  }

  configChanged(dev: VirtioDriverDevice): void {
    this.instances.get(dev)?.configChanged();
  }

  remove(dev: VirtioDriverDevice): void {
    this.instances.get(dev)?.remove();
    this.instances.delete(dev);
  }

  /** The /dev name of the instance bound to `dev` (hwrng, hwrng1, ...). */
  miscName(dev: VirtioDriverDevice): string | undefined {
    return this.instances.get(dev)?.miscName;
  }
}

/** EmbeddedGuestSide.loadDriver's factory: the driver bound to `deviceIds`. */
export function createDriver(deviceIds: readonly number[], _values: OptionValues = {}): RngDriver {
  return new RngDriver({ deviceIds });
}
