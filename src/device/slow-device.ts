/**
 * Wraps a device model so every answer comes `delayMs` later (for tests of a slow device with
 * a full ring). The chain is handled when it is taken; only the used buffer is delayed.
 */
import type { DeviceContext, VirtioDevice } from './device.js';
import type { DescriptorChain } from '../virtio/chain.js';

export class SlowDevice implements VirtioDevice {
  constructor(
    private readonly inner: VirtioDevice,
    private readonly delayMs: number,
  ) {}
  get deviceId() {
    return this.inner.deviceId;
  }
  get features() {
    return this.inner.features;
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
  async handleChain(queue: number, chain: DescriptorChain, ctx: DeviceContext): Promise<number> {
    const len = await this.inner.handleChain(queue, chain, ctx);
    await new Promise((r) => setTimeout(r, this.delayMs));
    return len;
  }
  reset(): void {
    this.inner.reset();
  }
}
