/**
 * virtio-ts: the public API. Everything a device author needs is here; the subpaths give
 * one part each:
 *
 *   virtio-ts             the spec (rings, memory, constants, errors), the device contract and runtime,
 *                         and `trace` (trace events, their selection and output)
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
export { SegmentSpans } from './virtio/segment-spans.js';
export { DeviceQueue, type DeviceQueueOptions } from './virtio/device-queue.js';
export { DriverQueue, type Buffer as DriverBuffer, type DriverQueueOptions, type UsedBuffer } from './virtio/driver-queue.js';
export { ringViewsFromGuest, ringViewsFromBytes, type RingViews } from './virtio/ring-views.js';
export * from './virtio/split-ring.js';
export { PackedDeviceQueue, type PackedDeviceQueueOptions } from './virtio/packed-device-queue.js';
export { PackedDriverQueue, type PackedDriverQueueOptions } from './virtio/packed-driver-queue.js';
export {
  INITIAL_RING_INDEX,
  checkPackedQueueSize,
  packedRingLayout,
  packedRingViewsFromBytes,
  packedRingViewsFromGuest,
  packedVringBase,
  parsePackedVringBase,
  type PackedRingAddresses,
  type PackedRingViews,
} from './virtio/packed-ring.js';
export type { DeviceVirtqueue, DriverVirtqueue } from './virtio/virtqueue.js';
export type { VirtioDevice, DeviceContext } from './device/device.js';
export {
  DEFAULT_PUBLISH_BATCH,
  DeviceRuntime,
  QueueCounters,
  type DeviceHost,
  type DeviceRuntimeOptions,
  type DeviceStats,
  type QueueBase,
  type QueueConfig,
  type QueueStatus,
} from './device/runtime.js';
export { formatDeviceStats, formatQueueStatus } from './device/status-text.js';
export type { DeviceQueueStatus } from './virtio/device-queue.js';
export { countersJson, deviceStatusJson, elementJson, queueStatusJson, statsJson, type Json, type RingAddresses } from './device/status-json.js';
export { descriptorFlagNames, type ElementDescriptor, type QueueElement } from './virtio/queue-element.js';
/** Trace events (QEMU's names), their selection, text and Chrome JSON output: `trace.TRACE.virtqueue_pop`, … */
export * as trace from './trace/index.js';
export * from './devices/index.js';
export * from './drivers/index.js';
export * from './machine/index.js';
export * from './testing/index.js';
export * from './vhost-user/index.js';
