/** The embedded machine's guest-physical memory map and the data each thread starts with. */

/** Guest RAM starts at 1 GiB (any address works; a non-zero base catches address/offset mix-ups). */
export const RAM_BASE = 0x4000_0000;
export const DEFAULT_RAM_BYTES = 4 * 1024 * 1024;

/** What both worker threads are given at start: shared memory and static configuration only. */
export interface MachineWorkerData {
  ram: SharedArrayBuffer;
  bus: SharedArrayBuffer;
  ramBase: number;
  /** Wall-clock ms of the machine's start: printk time zero. */
  bootMs: number;
  deviceId: number;
  /** The device ID in the guest driver's id_table (normally the same as deviceId). */
  driverDeviceId: number;
  queueSize: number;
  verbose: boolean;
  /** Guest side: the user program's argv. */
  argv: string[];
  /** Device side: milliseconds each response is delayed (a slow device), 0 for none. */
  deviceDelayMs: number;
}

/** Messages a worker posts to the machine (console lines and the program's exit). */
export type MachineMessage =
  | { kind: 'console'; seq: number; stream: 'stdout' | 'stderr'; text: string }
  | { kind: 'exit'; code: number }
  | { kind: 'fatal'; message: string };
