/**
 * The device registry: one line per device. Every host (the embedded machine, the
 * `virtio-backend` daemon, the real-Linux runners) finds devices here by name, so adding a
 * device touches only its own folders and this list.
 */
import { blkDefinition } from './blk/definition.js';
import type { DeviceDefinition } from './definition.js';
import { rngDefinition } from './rng/definition.js';
import { virtioTestDefinition } from './virtio-test/definition.js';

export const DEVICES: readonly DeviceDefinition[] = [
  virtioTestDefinition,
  rngDefinition,
  blkDefinition,
];

/** The device a host runs when none is named: the seed's. */
export const DEFAULT_DEVICE = 'virtio-test';

/** The definition registered under `name`, or undefined. */
export function findDevice(name: string): DeviceDefinition | undefined {
  return DEVICES.find((d) => d.name === name);
}

/** The registered names, for messages: "virtio-test, rng, blk". */
export const deviceNames = (): string => DEVICES.map((d) => d.name).join(', ');
