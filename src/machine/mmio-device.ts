/**
 * The device side of the virtio-mmio transport (virtio 1.2 §4.2.2): register reads and writes
 * mapped onto a DeviceRuntime. Only the register semantics live here; status rules, features
 * and queues are the runtime's, shared with the vhost-user host.
 */
import { DeviceRuntime, type DeviceHost } from '../device/runtime.js';
import type { VirtioDevice } from '../device/device.js';
import { Status } from '../virtio/constants.js';
import type { GuestMemory } from '../virtio/memory.js';
import { checkQueueSize } from '../virtio/split-ring.js';
import { checkPackedQueueSize } from '../virtio/packed-ring.js';
import { TRACE as T } from '../trace/events.js';
import type { DeviceBus, MmioHandler } from './bus.js';
import { Interrupt, MMIO, MMIO_MAGIC, MMIO_VENDOR, MMIO_VERSION } from './mmio-registers.js';

const TWO_32 = 0x1_0000_0000;

export class MmioDevice implements MmioHandler {
  readonly runtime: DeviceRuntime;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private queueSel = 0;
  /**
   * A reset is in progress: the model still owes answers whose I/O may read or write the
   * chains' buffers (a blk preadv on libuv's pool into views it holds across an await). §2.4.1:
   * the device indicates that a reset is complete by reinitializing the status to 0, and after
   * that must not touch the queues; so until those answers settle, a read of Status returns the
   * status from before the reset (`resetFrom`) and the driver waits (§2.4.2, Linux's
   * virtio_pci does, virtio-bus.reset() does). The runtime itself is already reset: nothing
   * the model answers now reaches a used ring.
   */
  private resetFrom: number | null = null;

  constructor(
    device: VirtioDevice,
    memory: GuestMemory,
    private readonly bus: DeviceBus,
    private readonly out: { log(line: string): void; warn(line: string): void },
  ) {
    const raise = (bits: number): void => {
      bus.raise(bits);
      if (T.virtio_mmio_setting_irq.enabled) T.virtio_mmio_setting_irq.emit(1, bus.interruptStatus());
    };
    const host: DeviceHost = {
      interrupt: () => raise(Interrupt.VRING),
      configInterrupt: () => raise(Interrupt.CONFIG),
      log: (line) => out.log(line),
      warn: (line) => out.warn(line),
    };
    this.runtime = new DeviceRuntime(device, memory, host);
  }

  /**
   * §4.2.2.2: control registers take 32-bit aligned accesses only; config space takes 8-bit
   * accesses for 8-bit fields, 16-bit aligned for 16-bit fields, 32-bit aligned for 32- and
   * 64-bit fields. Any other access is the driver's error: logged, a read returns 0, a write
   * is dropped (what QEMU's virtio-mmio does with a wrong-sized access).
   */
  private widthOk(offset: number, width: number, op: string): boolean {
    const ok = offset >= MMIO.Config ? (width === 1 || width === 2 || width === 4) && offset % width === 0 : width === 4 && offset % 4 === 0;
    if (!ok) this.out.warn(`mmio: ${width * 8}-bit ${op} at 0x${offset.toString(16)} ${offset >= MMIO.Config ? 'is not a 8/16/32-bit aligned config access' : 'of a control register (32-bit aligned only)'} (§4.2.2.2): ${op === 'read' ? 'returns 0' : 'ignored'}`);
    return ok;
  }

  read(offset: number, width = 4): number {
    const value = this.readRegister(offset, width);
    if (T.virtio_mmio_read.enabled) T.virtio_mmio_read.emit(offset, width, value >>> 0);
    return value;
  }

  write(offset: number, value: number, width = 4): void {
    if (T.virtio_mmio_write_offset.enabled) T.virtio_mmio_write_offset.emit(offset, value >>> 0, width);
    this.writeRegister(offset, value, width);
  }

  /** A driver-initiated reset (Status written 0); complete once the model's owed answers settle. */
  private reset(): void {
    const before = this.runtime.status;
    this.runtime.writeStatus(0);
    // §4.2.2.1: "Upon reset, the device MUST clear all bits in InterruptStatus".
    this.bus.ack(0xffff_ffff);
    if (this.runtime.owedCount === 0 || before === 0) return;
    this.resetFrom = before;
    void this.runtime.settled().then(() => {
      this.resetFrom = null;
    });
  }

  private readRegister(offset: number, width: number): number {
    const rt = this.runtime;
    if (!this.widthOk(offset, width, 'read')) return 0;
    if (offset >= MMIO.Config) {
      const bytes = rt.readConfig(offset - MMIO.Config, width);
      const view = new DataView(bytes.buffer, bytes.byteOffset, width);
      return width === 1 ? view.getUint8(0) : width === 2 ? view.getUint16(0, true) : view.getUint32(0, true);
    }
    const q = rt.queues[this.queueSel];
    switch (offset) {
      case MMIO.MagicValue:
        return MMIO_MAGIC;
      case MMIO.Version:
        return MMIO_VERSION;
      case MMIO.DeviceID:
        return rt.device.deviceId;
      case MMIO.VendorID:
        return MMIO_VENDOR;
      case MMIO.DeviceFeatures:
        return this.deviceFeaturesSel > 1 ? 0 : Number((rt.offeredFeatures >> BigInt(32 * this.deviceFeaturesSel)) & 0xffff_ffffn);
      case MMIO.QueueNumMax:
        return q ? q.maxSize : 0; // §4.2.2.1: 0 for a queue that is not available
      case MMIO.QueueReady:
        return q?.ready ? 1 : 0;
      case MMIO.InterruptStatus:
        return this.bus.interruptStatus();
      case MMIO.Status:
        return this.resetFrom ?? rt.status;
      case MMIO.ConfigGeneration:
        return rt.configGeneration;
      default:
        this.out.warn(`mmio: read of write-only or unknown register 0x${offset.toString(16)} returns 0`);
        return 0;
    }
  }

  private writeRegister(offset: number, value: number, width: number): void {
    const rt = this.runtime;
    if (!this.widthOk(offset, width, 'write')) return;
    if (offset >= MMIO.Config) {
      const bytes = new Uint8Array(4);
      new DataView(bytes.buffer).setUint32(0, value, true);
      rt.writeConfig(offset - MMIO.Config, bytes.subarray(0, width));
      return;
    }
    const q = rt.queues[this.queueSel];
    switch (offset) {
      case MMIO.DeviceFeaturesSel:
        this.deviceFeaturesSel = value;
        return;
      case MMIO.DriverFeaturesSel:
        this.driverFeaturesSel = value;
        return;
      case MMIO.DriverFeatures: {
        if (this.driverFeaturesSel > 1) {
          // No feature above bit 63 is offered; accepting one must make FEATURES_OK fail (§2.2.1).
          if (value !== 0) rt.writeDriverFeatures(rt.driverFeatures | (1n << 64n));
          return;
        }
        const shift = BigInt(32 * this.driverFeaturesSel);
        const keep = rt.driverFeatures & ~(0xffff_ffffn << shift);
        rt.writeDriverFeatures(keep | (BigInt(value >>> 0) << shift));
        return;
      }
      case MMIO.QueueSel:
        this.queueSel = value;
        return;
      case MMIO.QueueNotify:
        this.notify(value);
        return;
      case MMIO.InterruptACK:
        this.bus.ack(value);
        if (T.virtio_mmio_setting_irq.enabled && this.bus.interruptStatus() === 0) T.virtio_mmio_setting_irq.emit(0, 0);
        return;
      case MMIO.Status:
        if (this.resetFrom !== null) {
          if ((value & 0xff) !== 0) this.out.warn(`mmio: status ${value & 0xff} written before the reset completed (Status still reads non-zero; §2.4.2): ignored`);
          return;
        }
        if ((value & 0xff) === 0) this.reset();
        else rt.writeStatus(value);
        return;
    }
    if (!q) {
      this.out.warn(`mmio: write to queue register 0x${offset.toString(16)} for missing queue ${this.queueSel}`);
      return;
    }
    // §4.2.2.3: queue registers are written only while the queue is not ready.
    if (q.ready && offset !== MMIO.QueueReady) {
      this.out.warn(`mmio: queue ${this.queueSel} register 0x${offset.toString(16)} written while ready: ignored`);
      return;
    }
    const half = QUEUE_ADDRESS_HALVES.get(offset);
    if (half) {
      const [field, high] = half;
      q[field] = high ? setHigh(q[field], value) : setLow(q[field], value);
      return;
    }
    switch (offset) {
      case MMIO.QueueNum:
        try {
          // §2.7: a split ring's size is a power of two; §2.8.10.1: a packed ring's need not be.
          if (rt.packed) checkPackedQueueSize(value, { max: q.maxSize });
          else checkQueueSize(value, q.maxSize);
          q.size = value;
        } catch (e) {
          rt.deviceError(e, this.queueSel);
        }
        return;
      case MMIO.QueueReady:
        q.ready = value === 1;
        // §4.2.2.1: "The device MUST NOT access virtual queue contents when QueueReady is zero".
        if (!q.ready) rt.stopQueue(this.queueSel);
        return;
      default:
        this.out.warn(`mmio: write to read-only or unknown register 0x${offset.toString(16)}: ignored`);
    }
  }

  notify(queue: number): void {
    if (queue >= this.runtime.queues.length) {
      this.out.warn(`mmio: notification for missing queue ${queue}: ignored`);
      return;
    }
    if (this.runtime.status & Status.DRIVER_OK) this.runtime.notify(queue);
  }
}

/** §4.2.2: the 64-bit queue area addresses, written as low and high 32-bit halves. */
const QUEUE_ADDRESS_HALVES: ReadonlyMap<number, readonly ['desc' | 'avail' | 'used', boolean]> = new Map([
  [MMIO.QueueDescLow, ['desc', false]],
  [MMIO.QueueDescHigh, ['desc', true]],
  [MMIO.QueueDriverLow, ['avail', false]],
  [MMIO.QueueDriverHigh, ['avail', true]],
  [MMIO.QueueDeviceLow, ['used', false]],
  [MMIO.QueueDeviceHigh, ['used', true]],
] as const);

const setLow = (addr: number, lo: number): number => Math.floor(addr / TWO_32) * TWO_32 + (lo >>> 0);
const setHigh = (addr: number, hi: number): number => (hi >>> 0) * TWO_32 + (addr % TWO_32);
