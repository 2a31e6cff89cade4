/**
 * virtio-ts/drivers: the guest side — what a driver for the embedded machine is written
 * against (the virtio bus and transport, the guest kernel's services) and the drivers.
 *
 *   import { type VirtioDriver, VirtioDriverDevice, Errno } from 'virtio-ts/drivers';
 */
export { VirtioDriverDevice, ProbeError, type VirtioDriver, type VirtioTransport, type QueueOptions, type VirtioBusOptions, type RingLayout, RING_LAYOUTS } from './virtio-bus.js';
export { Errno, type FileOperations, type GuestKernel, type OpenFile, type Syscalls } from './kernel.js';
export { VirtioTestDriver, type InterruptDelay, type VirtioTestDriverOptions } from './virtio-test/driver.js';
