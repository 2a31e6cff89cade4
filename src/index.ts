/**
 * virtio-ts: the public API.
 *
 *   import { serveDevice, VirtioTestDevice, runMachine } from 'virtio-ts';
 */
export * from './virtio/constants.js';
export { VirtioError, isVirtioError, type VirtioErrorCode } from './virtio/errors.js';
export { GuestMemory, MemoryRegion, type MemoryRegionInit } from './virtio/memory.js';
export { DescriptorChain } from './virtio/chain.js';
export { DeviceQueue, type DeviceQueueOptions } from './virtio/device-queue.js';
export { DriverQueue, type DriverQueueOptions, type UsedBuffer } from './virtio/driver-queue.js';
export { ringViewsFromGuest, ringViewsFromBytes, type RingViews } from './virtio/ring-views.js';
export * from './virtio/split-ring.js';
export type { VirtioDevice, DeviceContext } from './device/device.js';
export { DEFAULT_PUBLISH_BATCH, DeviceRuntime, type DeviceHost, type DeviceRuntimeOptions, type QueueConfig } from './device/runtime.js';
export { VirtioTestDevice, type VirtioTestOptions } from './devices/virtio-test/device.js';
export * as virtioTest from './devices/virtio-test/protocol.js';
export { runMachine, type MachineOptions, type MachineResult } from './machine/machine.js';
export * from './vhost-user/index.js';
