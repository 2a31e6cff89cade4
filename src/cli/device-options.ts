/**
 * Device options on a command line, from a device definition's `options` (DeviceOption): the
 * `util.parseArgs` configuration, validation of the raw values into `OptionValues` (defaults
 * applied), help text, and the check that names an option given to the wrong device. Used by
 * the `virtio-backend` daemon and by `virtio --device NAME`; nothing here exits or prints: errors
 * are thrown as DeviceOptionError, and the command reports them its own way.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { DeviceDefinition, DeviceOption, OptionValue, OptionValues } from '../devices/definition.js';
import { DEVICES } from '../devices/registry.js';

/** A refused command line: `message` is meant for the user as is (no stack trace). */
export class DeviceOptionError extends Error {
  override readonly name = 'DeviceOptionError';
}

type OptionsConfig = NonNullable<ParseArgsConfig['options']>;

/**
 * The `parseArgs` options for a definition's options: integers and strings take a value,
 * booleans do not. `reserved` are the command's own flags; a device option with one of those
 * names is a definition error (thrown as a plain Error, not a DeviceOptionError).
 */
export function deviceOptionsConfig(def: DeviceDefinition, reserved: Iterable<string> = []): OptionsConfig {
  const taken = new Set(reserved);
  const config: OptionsConfig = {};
  for (const o of def.options) {
    if (taken.has(o.flag)) throw new Error(`device ${def.name}: option --${o.flag} clashes with an option of the command`);
    if (config[o.flag]) throw new Error(`device ${def.name}: option --${o.flag} is defined twice`);
    config[o.flag] = { type: o.type === 'boolean' ? 'boolean' : 'string' };
  }
  return config;
}

/** The raw value of one option as `parseArgs` gives it. */
type RawValue = string | boolean | (string | boolean)[] | undefined;

/**
 * Validates the values `parseArgs` found for `def`'s options (other keys of `raw` are ignored)
 * and applies defaults: an absent option holds its default (or undefined). Integers are decimal
 * digits only, within min..max, and pass `check`; strings pass `check`. Throws DeviceOptionError
 * for the first refused value, e.g. "--queue-size must be a power of two from 1 to 32768, got '100'".
 */
export function parseDeviceOptions(def: DeviceDefinition, raw: Readonly<Record<string, RawValue>>): OptionValues {
  const values: Record<string, OptionValue | undefined> = {};
  for (const o of def.options) {
    let given = Object.hasOwn(raw, o.flag) ? raw[o.flag] : undefined;
    if (Array.isArray(given)) given = given[given.length - 1];
    if (given === undefined && o.required) throw new DeviceOptionError(`--${o.flag} ${valueName(o)} is required (${def.name}: ${o.help.split(/[;.]/)[0]})`);
    values[o.flag] = given === undefined ? o.default : validate(o, given);
  }
  return Object.freeze(values);
}

function validate(o: DeviceOption, given: string | boolean): OptionValue {
  if (o.type === 'boolean') {
    if (typeof given !== 'boolean') throw new DeviceOptionError(`--${o.flag} takes no value, got '${given}'`);
    return refuseIfChecked(o, given, String(given));
  }
  if (typeof given !== 'string') throw new DeviceOptionError(`--${o.flag} needs a value (--${o.flag} ${valueName(o)})`);
  if (o.type === 'string') return refuseIfChecked(o, given, given);
  const n = /^\d+$/.test(given) ? Number(given) : NaN;
  const inRange = Number.isSafeInteger(n) && (o.min === undefined || n >= o.min) && (o.max === undefined || n <= o.max);
  if (!inRange) throw new DeviceOptionError(`--${o.flag} must be ${integerRule(o)}, got '${given}'`);
  return refuseIfChecked(o, n, given);
}

/** Runs the option's own check. A reason phrased as a rule ("a power of two") reads "must be …". */
function refuseIfChecked<T extends OptionValue>(o: DeviceOption, value: T, text: string): T {
  const reason = o.check?.(value) ?? null;
  if (reason === null) return value;
  if (/^(a|an) /.test(reason)) {
    const range = o.type === 'integer' ? rangeText(o) : '';
    throw new DeviceOptionError(`--${o.flag} must be ${reason}${range}, got '${text}'`);
  }
  throw new DeviceOptionError(`--${o.flag} '${text}': ${reason}`);
}

function rangeText(o: DeviceOption): string {
  if (o.min !== undefined && o.max !== undefined) return ` from ${o.min} to ${o.max}`;
  if (o.min !== undefined) return ` ≥ ${o.min}`;
  if (o.max !== undefined) return ` from 0 to ${o.max}`;
  return '';
}

function integerRule(o: DeviceOption): string {
  return `an integer${rangeText(o)}`;
}

function valueName(o: DeviceOption): string {
  return o.valueName ?? (o.type === 'integer' ? 'N' : 'VALUE');
}

/** `--queue-size Q` (no value for a boolean). */
export function optionSynopsis(o: DeviceOption): string {
  return o.type === 'boolean' ? `--${o.flag}` : `--${o.flag} ${valueName(o)}`;
}

/** A DeviceOption's help with its default and range: "the largest ring … (default 256; 1..32768)". */
export function optionHelp(o: DeviceOption): string {
  const notes: string[] = [];
  if (o.default !== undefined && o.default !== false) notes.push(`default ${String(o.default)}`);
  if (o.type === 'integer' && (o.min !== undefined || o.max !== undefined)) notes.push(`${o.min ?? 0}..${o.max ?? '∞'}`);
  return notes.length ? `${o.help} (${notes.join('; ')})` : o.help;
}

/** Two-column help lines: `left` padded to `column`, `right` wrapped to `width` with a hanging indent. */
export function helpLines(rows: readonly (readonly [string, string])[], indent: number, column: number, width = 100): string[] {
  const lines: string[] = [];
  const pad = ' '.repeat(indent + column);
  for (const [left, right] of rows) {
    const head = ' '.repeat(indent) + left;
    const words = right.split(/\s+/).filter(Boolean);
    let line = head.length < indent + column - 1 ? head.padEnd(indent + column) : null;
    if (line === null) {
      lines.push(head);
      line = pad;
    }
    let empty = true;
    for (const w of words) {
      if (!empty && line.length + 1 + w.length > width) {
        lines.push(line);
        line = pad + w;
      } else {
        line += (empty ? '' : ' ') + w;
      }
      empty = false;
    }
    lines.push(line.trimEnd());
  }
  return lines;
}

/**
 * A device's options for --help, one per entry, e.g.
 * `    --queue-size Q        the largest ring a driver may set … (default 256; 1..32768)`.
 * "(no options)" when it has none.
 */
export function formatDeviceOptions(def: DeviceDefinition, options: { indent?: number; column?: number; width?: number } = {}): string {
  const indent = options.indent ?? 4;
  if (def.options.length === 0) return `${' '.repeat(indent)}(no options)`;
  return helpLines(
    def.options.map((o) => [optionSynopsis(o), optionHelp(o)] as const),
    indent,
    options.column ?? 22,
    options.width,
  ).join('\n');
}

/** The devices that define option `flag`. */
export function devicesWithOption(flag: string, devices: readonly DeviceDefinition[] = DEVICES): DeviceDefinition[] {
  return devices.filter((d) => d.options.some((o) => o.flag === flag));
}

/**
 * The option names (without dashes) on a command line, whatever they are: a lenient pass of
 * parseArgs with `known` telling which options take a value (so their values are not read as
 * options). Short options are reported under their long name when `known` has it.
 */
export function optionNamesIn(args: readonly string[], known: OptionsConfig): string[] {
  const { tokens } = parseArgs({ args: [...args], options: known, strict: false, allowPositionals: true, tokens: true });
  return tokens.filter((t) => t.kind === 'option').map((t) => (t as { name: string }).name);
}

/** A lenient `parseArgs` config that knows every registered device option (for {@link optionNamesIn}). */
export function allDeviceOptionsConfig(devices: readonly DeviceDefinition[] = DEVICES, reserved: Iterable<string> = []): OptionsConfig {
  const taken = new Set(reserved);
  const config: OptionsConfig = {};
  for (const d of devices) {
    for (const o of d.options) {
      if (taken.has(o.flag)) continue;
      // Where two devices disagree, taking a value is the safer reading.
      if (o.type !== 'boolean' || !config[o.flag]) config[o.flag] = { type: o.type === 'boolean' ? 'boolean' : 'string' };
    }
  }
  return config;
}

/**
 * The error for device options given where they do not belong, or null: an option of another
 * device than `selected` ("--source is an option of device rng, not of virtio-test"), or a device
 * option with no device selected ("--queue-size is an option of device virtio-test: give
 * --device virtio-test first"). `given` are the option names on the command line; names that
 * are no device's option are left to the strict parse (its "Unknown option" message).
 */
export function misplacedDeviceOption(
  given: Iterable<string>,
  selected: DeviceDefinition | undefined,
  devices: readonly DeviceDefinition[] = DEVICES,
  deviceFlag = '--device',
): string | null {
  for (const flag of given) {
    if (selected?.options.some((o) => o.flag === flag)) continue;
    const owners = devicesWithOption(flag, devices).filter((d) => d !== selected);
    if (owners.length === 0) continue;
    const names = owners.map((d) => d.name);
    const of = names.length === 1 ? `device ${names[0]}` : `devices ${names.join(', ')}`;
    if (selected === undefined) {
      return `--${flag} is an option of ${of}: give ${deviceFlag} ${names.length === 1 ? names[0] : 'NAME'} to use it`;
    }
    return `--${flag} is an option of ${of}, not of ${selected.name}`;
  }
  return null;
}
