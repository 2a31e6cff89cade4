/**
 * virtio-ts/devices: the device registry and the definitions a device folder exports.
 *
 *   import { DEVICES, findDevice, type DeviceDefinition } from 'virtio-ts/devices';
 */
export * from './definition.js';
export { DEFAULT_DEVICE, DEVICES, deviceNames, findDevice } from './registry.js';
export { VirtioTestDevice, type VirtioTestOptions } from './virtio-test/device.js';
export * as virtioTest from './virtio-test/protocol.js';
