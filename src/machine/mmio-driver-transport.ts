/**
 * The guest side of virtio-mmio (virtio 1.2 §4.2.3 driver requirements): a VirtioTransport
 * whose every register access is an MMIO access over the machine's bus.
 */
import type { VirtioTransport } from '../drivers/virtio-bus.js';
import type { SplitRingAddresses } from '../virtio/split-ring.js';
import { keepAlive, type GuestBus } from './bus.js';
import { Interrupt, MMIO, MMIO_MAGIC, MMIO_VERSION } from './mmio-registers.js';

const TWO_32 = 0x1_0000_0000;

export class MmioDriverTransport implements VirtioTransport {
  readonly deviceId: number;

  constructor(private readonly bus: GuestBus) {
    // §4.2.3.1.1: check magic and version before anything else.
    const magic = bus.mmioRead(MMIO.MagicValue);
    const version = bus.mmioRead(MMIO.Version);
    if (magic !== MMIO_MAGIC) throw new Error(`virtio-mmio: bad magic 0x${magic.toString(16)}`);
    if (version !== MMIO_VERSION) throw new Error(`virtio-mmio: version ${version} is not supported (need 2)`);
    this.deviceId = bus.mmioRead(MMIO.DeviceID);
  }

  getStatus(): number {
    return this.bus.mmioRead(MMIO.Status);
  }
  setStatus(status: number): void {
    this.bus.mmioWrite(MMIO.Status, status);
  }

  getDeviceFeatures(): bigint {
    this.bus.mmioWrite(MMIO.DeviceFeaturesSel, 1);
    const hi = BigInt(this.bus.mmioRead(MMIO.DeviceFeatures));
    this.bus.mmioWrite(MMIO.DeviceFeaturesSel, 0);
    const lo = BigInt(this.bus.mmioRead(MMIO.DeviceFeatures));
    return (hi << 32n) | lo;
  }

  setDriverFeatures(features: bigint): void {
    this.bus.mmioWrite(MMIO.DriverFeaturesSel, 1);
    this.bus.mmioWrite(MMIO.DriverFeatures, Number((features >> 32n) & 0xffff_ffffn));
    this.bus.mmioWrite(MMIO.DriverFeaturesSel, 0);
    this.bus.mmioWrite(MMIO.DriverFeatures, Number(features & 0xffff_ffffn));
  }

  /**
   * Config space as Linux's virtio_mmio reads it (§4.2.2.2): a 1-, 2- or 4-byte field with one
   * access of its width, an 8-byte field with two 32-bit accesses, anything else (or an
   * unaligned field) byte by byte.
   */
  readConfig(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    const view = new DataView(out.buffer);
    const at = MMIO.Config + offset;
    if (length === 1) view.setUint8(0, this.bus.mmioRead(at, 1));
    else if (length === 2 && offset % 2 === 0) view.setUint16(0, this.bus.mmioRead(at, 2), true);
    else if (length === 4 && offset % 4 === 0) view.setUint32(0, this.bus.mmioRead(at, 4), true);
    else if (length === 8 && offset % 4 === 0) {
      view.setUint32(0, this.bus.mmioRead(at, 4), true);
      view.setUint32(4, this.bus.mmioRead(at + 4, 4), true);
    } else for (let i = 0; i < length; i++) out[i] = this.bus.mmioRead(at + i, 1);
    return out;
  }

  configGeneration(): number {
    return this.bus.mmioRead(MMIO.ConfigGeneration);
  }

  queueMaxSize(index: number): number {
    this.bus.mmioWrite(MMIO.QueueSel, index);
    return this.bus.mmioRead(MMIO.QueueNumMax);
  }

  /** §4.2.3.2 Virtqueue Configuration. */
  setupQueue(index: number, ring: SplitRingAddresses): void {
    const b = this.bus;
    b.mmioWrite(MMIO.QueueSel, index);
    if (b.mmioRead(MMIO.QueueReady) !== 0) throw new Error(`virtio-mmio: queue ${index} already in use`);
    b.mmioWrite(MMIO.QueueNum, ring.size);
    b.mmioWrite(MMIO.QueueDescLow, ring.desc % TWO_32);
    b.mmioWrite(MMIO.QueueDescHigh, Math.floor(ring.desc / TWO_32));
    b.mmioWrite(MMIO.QueueDriverLow, ring.avail % TWO_32);
    b.mmioWrite(MMIO.QueueDriverHigh, Math.floor(ring.avail / TWO_32));
    b.mmioWrite(MMIO.QueueDeviceLow, ring.used % TWO_32);
    b.mmioWrite(MMIO.QueueDeviceHigh, Math.floor(ring.used / TWO_32));
    b.mmioWrite(MMIO.QueueReady, 1);
  }

  notify(index: number): void {
    this.bus.notify(index);
  }

  /**
   * Runs the interrupt handler on the guest's event loop: read InterruptStatus, acknowledge it,
   * dispatch (§4.2.3.4). Ends when the machine shuts down.
   */
  onInterrupt(handlers: { vring(): void; config(): void }): void {
    const bus = this.bus;
    const alive = keepAlive();
    void (async () => {
      while (!bus.shutdown) {
        const seen = bus.interruptCount();
        let isr: number;
        try {
          isr = bus.mmioRead(MMIO.InterruptStatus);
          if (isr) bus.mmioWrite(MMIO.InterruptACK, isr);
        } catch {
          return; // shutting down
        }
        if (isr & Interrupt.CONFIG) handlers.config();
        if (isr & Interrupt.VRING) handlers.vring();
        await bus.waitInterrupt(seen);
      }
    })().finally(() => clearInterval(alive));
  }
}
