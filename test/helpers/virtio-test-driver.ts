/**
 * The virtio-test driver bound to a VirtioTestDevice over a DirectTransport, and the moves the
 * driver-fault tests make: a request held while the device is paused, and a used element the
 * device never produced (forged in the used ring, then an interrupt).
 */
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { VirtioTestDriver } from '../../src/drivers/virtio-test/driver.js';
import { VirtioDriverDevice } from '../../src/drivers/virtio-bus.js';
import { DirectTransport, guestKernel } from './direct-transport.js';

export async function bindTestDriver(opts: { queueSize?: number; device?: VirtioTestDevice } = {}) {
  const g = guestKernel();
  const device = opts.device ?? new VirtioTestDevice({ print: false, queueSize: opts.queueSize ?? 8 });
  const transport = new DirectTransport(device, g.memory);
  const driver = new VirtioTestDriver();
  const dev = new VirtioDriverDevice(transport, g.kernel);
  const freeBefore = g.kernel.dmaFreeBytes;
  await dev.bind(driver);
  return { ...g, transport, driver, dev, device, freeBefore };
}

export type Bound = Awaited<ReturnType<typeof bindTestDriver>>;

/** Pauses the device, writes byte 1 to a new file and starts reading its answer (which waits). */
export async function heldRequest(s: Bound): Promise<{ fd: number; pending: Promise<Uint8Array> }> {
  const fd = s.kernel.open('/dev/virtio_misc');
  s.transport.paused = true;
  await s.kernel.write(fd, Uint8Array.of(1));
  return { fd, pending: s.kernel.read(fd, 12) };
}

/**
 * Writes used element 0 as the device would (`id` defaults to the head the driver made
 * available first), sets used.idx to `usedIdx` (default 1) and raises an interrupt.
 */
export function forgeUsed(s: Bound, used: { id?: number; len?: number; usedIdx?: number }): void {
  const q = s.transport.runtime.queues[0]!;
  if (used.len !== undefined) {
    s.memory.writeU32(q.used + 4, used.id ?? s.memory.readU16(q.avail + 4));
    s.memory.writeU32(q.used + 8, used.len);
  }
  s.memory.writeU16(q.used + 2, used.usedIdx ?? 1);
  s.transport.interruptNow();
}
