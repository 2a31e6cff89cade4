/**
 * A device definition: everything a host needs to run a device it has never heard of. Each
 * device folder (src/devices/<name>/definition.ts) exports one, and src/devices/registry.ts
 * lists them; the hosts (the embedded machine, the vhost-user daemon, real Linux guests) look
 * a device up by name and never import a device themselves.
 *
 *  - name, device ID, a one-line summary;
 *  - options (flag, type, default, help): the daemon and `virtio --device NAME` parse them;
 *  - open(): turns parsed options into a factory of models (one model per connection or boot),
 *    opening what the model needs (a file, an entropy source); the model itself stays pure;
 *  - embedded: the guest driver and demo program for the embedded machine, loaded lazily by
 *    the guest thread only;
 *  - linux: how a real Linux guest (UML, QEMU) exercises the device with Linux's own driver.
 */
import type { VirtioDevice } from '../device/device.js';
import type { Syscalls } from '../drivers/kernel.js';
import type { VirtioDriver } from '../drivers/virtio-bus.js';

export type OptionValue = string | number | boolean;
/** Parsed option values by flag name (absent options hold their default, or undefined). */
export type OptionValues = Readonly<Record<string, OptionValue | undefined>>;

export interface DeviceOption {
  /** The flag without dashes: `source` for `--source`. */
  readonly flag: string;
  /** `integer` options take decimal digits only and are checked against min/max. */
  readonly type: 'string' | 'integer' | 'boolean';
  /** Shown in help after the flag: FILE, N, MS. */
  readonly valueName?: string;
  readonly default?: OptionValue;
  /** The option must be given (a command line without it is refused, exit 2). */
  readonly required?: boolean;
  readonly help: string;
  readonly min?: number;
  readonly max?: number;
  /** A further check of a given value: a reason it is refused, or null. */
  readonly check?: (value: OptionValue) => string | null;
}

/** What open() returns: a model per connection (vhost-user) or per boot (embedded machine). */
export interface DeviceFactory {
  createDevice(): VirtioDevice;
  /** A few words for the daemon's "listening" line, e.g. "source /dev/urandom". */
  readonly description?: string;
  /** Releases what open() took (files, locks). */
  close?(): Promise<void> | void;
}

/** Where a device's model lines and diagnostics go while it is opened. */
export interface DeviceEnvironment {
  log(line: string): void;
  warn(line: string): void;
  /** The host drops model lines (a device may then skip formatting them). */
  readonly quiet?: boolean;
}

/** What the embedded machine offers a program beyond system calls (the guest's sysfs, in effect). */
export interface MachineControl {
  /** Unbinds the driver (the device is reset, buffers in flight are taken back) and binds it again. */
  rebind(): Promise<void>;
}

/** A user program of the embedded guest: gets system calls and argv, returns its exit status. */
export type GuestProgram = (sys: Syscalls, argv: readonly string[], control?: MachineControl) => Promise<number>;

export interface EmbeddedGuestSide {
  /** The guest driver bound to `deviceIds` (the device's ID, or the one `--device-id` chose). */
  loadDriver(): Promise<(deviceIds: readonly number[], values: OptionValues) => VirtioDriver>;
  /** The guest program called `name` (argv[0]; the demo's is programArgv()[0]), or undefined. */
  loadProgram(name: string): Promise<GuestProgram | undefined>;
  /** The demo program's argv from the command's options and positional arguments. */
  programArgv(values: OptionValues, positionals: readonly string[]): string[];
}

export interface LinuxGuestSide {
  /** The demo in a real Linux guest: a shell command whose stdout is the result. */
  guestCommand(values: OptionValues, positionals: readonly string[]): string[];
  /** QEMU 7.2's vhost-user device for this ID with these options (`-device` argument), or null when that QEMU has none. */
  qemuDevice(values: OptionValues): string | null;
  /** Why QEMU 7.2 cannot attach it, when qemuDevice is null. */
  readonly qemuMissing?: string;
  /** Extra kernel command-line words the demo needs (e.g. rng_core.default_quality=0). */
  readonly kernelArgs?: readonly string[];
}

export interface DeviceDefinition {
  /** The --device name: lower case, digits and dashes. */
  readonly name: string;
  /** §5 Device Types. */
  readonly deviceId: number;
  readonly summary: string;
  readonly options: readonly DeviceOption[];
  open(values: OptionValues, env: DeviceEnvironment): DeviceFactory | Promise<DeviceFactory>;
  readonly embedded?: EmbeddedGuestSide;
  readonly linux?: LinuxGuestSide;
}
