/** The embedded machine's guest-physical memory map and the data each thread starts with. */
import type { DeviceStats } from '../device/runtime.js';
import type { SlowDeviceOptions } from '../device/slow-device.js';
import type { OptionValues } from '../devices/definition.js';

/** Guest RAM starts at 1 GiB (any address works; a non-zero base catches address/offset mix-ups). */
export const RAM_BASE = 0x4000_0000;
export const DEFAULT_RAM_BYTES = 4 * 1024 * 1024;

/** What both worker threads are given at start: shared memory and static configuration only. */
export interface MachineWorkerData {
  ram: SharedArrayBuffer;
  bus: SharedArrayBuffer;
  /** The console ring both threads write lines to (console.ts). */
  console: SharedArrayBuffer;
  ramBase: number;
  /** Wall-clock ms of the machine's start: printk time zero. */
  bootMs: number;
  /** The registered device's name (src/devices/registry.ts) and its parsed options. */
  device: string;
  deviceOptions: OptionValues;
  /** The device ID in the guest driver's id_table (normally the device's own). */
  driverDeviceId: number;
  verbose: boolean;
  /** No kernel lines and no device lines: programs' own output only. */
  quiet: boolean;
  /** Guest side: the user program's argv. */
  argv: string[];
  /** Guest side: the ring layout the guest's virtio core accepts (split, or packed when offered). */
  ring: 'split' | 'packed';
  /** Device side: milliseconds each response is delayed (a slow device), 0 for none. */
  deviceDelayMs: number;
  /** Device side: random delays and stalls (SlowDevice), if any. */
  deviceSlowness?: SlowDeviceOptions;
  /** Tracing: the events on, and each thread's ring (src/trace/ring.ts); times are ms since bootMs. */
  trace?: { events: string[]; guestRing: SharedArrayBuffer; deviceRing: SharedArrayBuffer };
}

/** Messages a worker posts to the machine (console lines go through the console ring instead). */
export type MachineMessage =
  | { kind: 'exit'; code: number }
  | { kind: 'stats'; stats: DeviceStats }
  | { kind: 'report'; fields: Record<string, number | string> }
  | { kind: 'fatal'; message: string };

/** Messages the machine posts to the device thread. */
export type DeviceThreadRequest = { kind: 'stats' };
