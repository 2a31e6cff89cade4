/**
 * virtio-ts/testing: run a device model in a test, with no threads or file descriptors.
 *
 *   import { DeviceHarness } from 'virtio-ts/testing';
 */
export { DeviceHarness, type Completion, type DeviceHarnessOptions } from './device-harness.js';
export { SlowDevice, type SlowDeviceOptions, type SlowDeviceStats } from '../device/slow-device.js';
export { VirtioTestClient, type Pending, type VirtioTestClientOptions } from './virtio-test-client.js';
