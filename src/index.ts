/**
 * virtio-ts: the public API. Everything a device author needs is here; the subpaths give
 * one part each:
 *
 *   virtio-ts             the spec (rings, memory, constants, errors), the device contract and runtime
 *   virtio-ts/devices     the registry and the registered devices' definitions and models
 *   virtio-ts/drivers     the guest side: the virtio bus, the guest kernel's interface, drivers
 *   virtio-ts/machine     the embedded machine and the real-Linux guests
 *   virtio-ts/vhost-user  the backend (serveDevice), the frontend, the protocol
 *   virtio-ts/testing     DeviceHarness: a model against the driver half in one thread
 *
 *   import { serveDevice, runMachine, DeviceHarness } from 'virtio-ts';
 */
export * from './virtio/constants.js';
export { VirtioError, isVirtioError, fail, type VirtioErrorCode } from './virtio/errors.js';
export { GuestMemory, MemoryRegion, type MemoryRegionInit } from './virtio/memory.js';
export { DescriptorChain } from './virtio/chain.js';
export { DeviceQueue, type DeviceQueueOptions } from './virtio/device-queue.js';
export { DriverQueue, type DriverQueueOptions, type UsedBuffer } from './virtio/driver-queue.js';
export { ringViewsFromGuest, ringViewsFromBytes, type RingViews } from './virtio/ring-views.js';
export * from './virtio/split-ring.js';
export type { VirtioDevice, DeviceContext } from './device/device.js';
export { DEFAULT_PUBLISH_BATCH, DeviceRuntime, type DeviceHost, type DeviceRuntimeOptions, type QueueConfig } from './device/runtime.js';
export * from './devices/index.js';
export * from './drivers/index.js';
export * from './machine/index.js';
export * from './testing/index.js';
export * from './vhost-user/index.js';
