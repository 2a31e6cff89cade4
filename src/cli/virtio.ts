#!/usr/bin/env node
/**
 * `virtio N`: boots a machine, runs the guest user program `virtio N` in it, and prints what
 * the seed's run shows: the device's request lines and the driver's response lines.
 * `virtio --device NAME`: the same for any registered device, with its demo program.
 *
 * Machines: `embedded` (default; guest and device threads in this process), `uml` (a real
 * Linux kernel as User-Mode Linux) and `qemu` (QEMU 7.2 with Debian's Linux); on the last two
 * the device is served over vhost-user and Linux's own driver (or ours, for virtio-test) drives it.
 */
import { parseArgs } from 'node:util';
import type { DeviceDefinition, OptionValues } from '../devices/definition.js';
import { DEFAULT_DEVICE, DEVICES, deviceNames, findDevice } from '../devices/registry.js';
import { VIRTIO_ID_TEST } from '../devices/virtio-test/protocol.js';
import { RANGE_ERROR, USAGE_LINES, parseByte } from '../drivers/virtio-test/program.js';
import { runMachine } from '../machine/machine.js';
import {
  DeviceOptionError,
  allDeviceOptionsConfig,
  deviceOptionsConfig,
  formatDeviceOptions,
  helpLines,
  misplacedDeviceOption,
  optionNamesIn,
  parseDeviceOptions,
} from './device-options.js';
import { optionParser, type OptionParser } from './options.js';
import { TRACE_OPTIONS, TraceSelectionError, describeEvents, normalizeTraceArgs, openTraceOutput, traceHelpRows, traceRequest, type TraceRequest } from './trace-options.js';
import { packageVersion } from './package-version.js';
import { formatDeviceStats } from '../device/status-text.js';
import { TRACE_SVG_USAGE, runTraceSvg } from './trace-svg.js';

const MACHINES = ['embedded', 'uml', 'qemu'] as const;
const RINGS = ['split', 'packed'] as const;
type Ring = (typeof RINGS)[number];
type Machine = (typeof MACHINES)[number];
const MAX_COUNT = 10_000_000;

const COMMAND_OPTIONS = {
  device: { type: 'string' },
  count: { type: 'string' },
  machine: { type: 'string' },
  ring: { type: 'string' },
  verbose: { type: 'boolean' },
  quiet: { type: 'boolean' },
  json: { type: 'boolean' },
  stats: { type: 'boolean' },
  ...TRACE_OPTIONS,
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const;

/** What a bare --trace traces on the embedded machine: everything. */
const BARE_TRACE = '*';

function help(): string {
  const devices = DEVICES.map((d) => `  ${d.name} (ID ${d.deviceId}): ${d.summary}\n${formatDeviceOptions(d)}`).join('\n');
  return `Usage: virtio [options] N
       virtio --device NAME [options]
       ${TRACE_SVG_USAGE}

Runs a device's demo program in a guest. Without --device, the seed's scenario: the guest program
\`virtio N\` writes the byte N (0..255) to /dev/virtio_misc; the guest's virtio-test driver sends
the request {N, N+1, N+2, N+3, "hello back end!"} to the virtio-test device, which logs it and
answers {arg1+100, arg2+100, arg3+100}.

Options:
  --device NAME       the device to attach (default virtio-test); see Devices below
  --count K           how much the demo does, 1..${MAX_COUNT}: virtio-test sends K requests with
                      values N, N+1, ... (mod 256), all verified (default 1); rng reads K bytes
                      (default 64)
  --machine M         embedded (default): guest and device threads in this process, no VM, no root
                      uml: a real Linux 6.1 guest (User-Mode Linux), the device over vhost-user
                      qemu: QEMU 7.2 with Debian's Linux 6.1, the device over vhost-user
  --ring L            the virtqueue layout: split (default; virtio 1.2 §2.7) or packed (§2.8,
                      VIRTIO_F_RING_PACKED), which the device offers and the guest's driver
                      accepts: embedded machine, or qemu (QEMU's packed=on); not uml (virtio_uml
                      sends a split ring's base for packed rings)
  --verbose           also print the guest's boot messages
  --quiet             print no kernel or device lines, only the program's own output
  --json              print a summary as one JSON object (implies --quiet; embedded machine)
  --stats             at the end, print the device's state (status, features, per queue its
                      indices, addresses, event suppression, counters), as QEMU's
                      x-query-virtio-status / x-query-virtio-queue-status (embedded machine)
${helpLines(traceHelpRows(BARE_TRACE), 2, 20).join('\n')}
  -V, --version       print the version and exit
  -h, --help          this text

Devices and their options:
${devices}

virtio-test's --device-id: note that virtio 1.4 assigns ID 45 to virtio-spi; the seed predates that.
--queue-size: a power of two ≤ 32768 (default 256, the ring virtio_uml always asks for).

Exit status: the guest program's (0 on success; 255 as the seed's \`return -1\`), 2 for bad options.`;
}

function usageError(lines: string[]): never {
  for (const l of lines) process.stdout.write(`${l}\n`);
  process.exit(2);
}

const options: OptionParser = optionParser('virtio');

/** The device named by --device (looked for before the full parse, which depends on it). */
function selectedDevice(args: readonly string[]): DeviceDefinition {
  const known = { ...allDeviceOptionsConfig(DEVICES, Object.keys(COMMAND_OPTIONS)), ...COMMAND_OPTIONS };
  let name = DEFAULT_DEVICE;
  try {
    const { values } = parseArgs({ args: [...args], options: known, strict: false, allowPositionals: true });
    if (typeof values.device === 'string') name = values.device;
  } catch {
    /* the strict parse below reports it */
  }
  const def = findDevice(name);
  if (!def) options.optionError(`--device must be one of ${deviceNames()}, got '${name}'`);
  const misplaced = misplacedDeviceOption(optionNamesIn(args, known), def);
  if (misplaced) options.optionError(misplaced);
  return def;
}

async function main(): Promise<void> {
  if (process.argv[2] === 'trace-svg') {
    // A sequence diagram of a --trace-file trace (trace-svg.ts): no machine.
    process.exitCode = runTraceSvg(process.argv.slice(3), (s) => void process.stdout.write(`${s}\n`), (s) => void process.stderr.write(`${s}\n`));
    return;
  }
  const args = normalizeTraceArgs(process.argv.slice(2), BARE_TRACE);
  // A negative number is a value out of range, not an option.
  if (args.some((a) => /^-\d/.test(a))) usageError([RANGE_ERROR]);
  const def = selectedDevice(args);
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: { ...deviceOptionsConfig(def, Object.keys(COMMAND_OPTIONS)), ...COMMAND_OPTIONS } });
  } catch (e) {
    options.optionError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${help()}\n`);
    return;
  }
  if (values.version) {
    process.stdout.write(`virtio ${packageVersion()}\n`);
    return;
  }
  if (values.trace?.includes('help')) {
    process.stdout.write(`${describeEvents()}\n`);
    return;
  }
  const isSeed = def.name === 'virtio-test';
  if (isSeed) {
    // The seed program's own checks, with its words.
    if (positionals.length !== 1) usageError(USAGE_LINES);
    if (parseByte(positionals[0]!) === null) usageError([RANGE_ERROR]);
  } else if (positionals.length > 0) {
    options.optionError(`device ${def.name} takes no arguments, got '${positionals.join(' ')}'`);
  }
  const count =
    values.count === undefined
      ? undefined
      : options.intOption('count', values.count, 1, (k) => Number.isSafeInteger(k) && k >= 1 && k <= MAX_COUNT, `an integer from 1 to ${MAX_COUNT}`);
  const machine = (values.machine ?? 'embedded') as Machine;
  if (!MACHINES.includes(machine)) options.optionError(`--machine must be one of ${MACHINES.join(', ')}, got '${values.machine}'`);
  const ring = (values.ring ?? 'split') as Ring;
  if (!RINGS.includes(ring)) options.optionError(`--ring must be one of ${RINGS.join(', ')}, got '${values.ring}'`);
  if (ring === 'packed' && machine === 'uml') {
    // Linux 6.1's virtio_uml would take VIRTIO_F_RING_PACKED, but it sends SET_VRING_BASE 0 for
    // every ring: for a packed ring that is both wrap counters 0, not a fresh ring's 1
    // (docs/vhost-user.md "Packed rings"). QEMU's packed=on and the embedded machine work.
    options.optionError("--ring packed needs --machine embedded or qemu: UML's virtio_uml gets a packed ring's base wrong (SET_VRING_BASE 0)");
  }
  let deviceValues: OptionValues;
  try {
    deviceValues = parseDeviceOptions(def, values);
  } catch (e) {
    if (e instanceof DeviceOptionError) options.optionError(e.message);
    throw e;
  }
  const json = values.json ?? false;
  if (json && machine !== 'embedded') options.optionError('--json reports runs of the embedded machine only');
  let trace: TraceRequest;
  try {
    trace = traceRequest(values, BARE_TRACE);
  } catch (e) {
    if (e instanceof TraceSelectionError) options.optionError(e.message);
    throw e;
  }
  const stats = values.stats ?? false;
  if (machine !== 'embedded' && (trace.events.length > 0 || stats)) {
    options.optionError(`${stats ? '--stats' : '--trace'} applies to the embedded machine; with --machine ${machine}, run virtio-backend --trace`);
  }
  if (isSeed && deviceValues['device-id'] === VIRTIO_ID_TEST) {
    process.stderr.write('virtio: note: device ID 45 is the seed\'s virtio-test; virtio 1.4 assigns 45 to virtio-spi (see --device-id)\n');
  }
  const demo = { ...deviceValues, ...(count !== undefined ? { count } : {}), json };

  if (machine !== 'embedded') {
    const { runOnLinux } = await import('./linux-run.js');
    process.exitCode = await runOnLinux({ machine, definition: def, values: demo, positionals, verbose: values.verbose ?? false, ring });
    return;
  }
  const guestSide = def.embedded;
  if (!guestSide) options.optionError(`device ${def.name} has no driver for the embedded machine; try --machine uml`);
  const started = performance.now();
  const progress = (count ?? 1) > 1 && process.stderr.isTTY && !json ? progressLine() : undefined;
  let output;
  try {
    output = trace.events.length > 0 ? openTraceOutput(trace, { deviceName: `device: ${def.name}`, otherData: { device: def.name } }) : undefined;
  } catch (e) {
    options.optionError(`--trace-file ${trace.file}: ${(e as Error).message}`);
  }
  let result;
  try {
    result = await runMachine({
      device: def.name,
      deviceOptions: deviceValues,
      argv: guestSide.programArgv(demo, positionals),
      ring,
      verbose: values.verbose ?? false,
      quiet: json || (values.quiet ?? false),
      ...(progress ? { onProgress: progress.update } : {}),
      ...(output ? { trace: { events: trace.events, consumer: output.consumer } } : {}),
      stats,
    });
  } finally {
    await output?.close();
  }
  const { exitCode, report } = result;
  progress?.end();
  if (json) {
    printJson({ machine, device: def.name, ...report, exitCode, seconds: (performance.now() - started) / 1000, ...(result.stats ? { stats: result.stats } : {}) });
  } else if (stats) {
    process.stdout.write(result.stats ? `${formatDeviceStats(result.stats, def.name)}\n` : 'virtio: --stats: the device thread did not answer\n');
  }
  process.exitCode = exitCode;
}

/** One summary object on stdout; the process's peak memory included (what a long run's user watches). */
function printJson(fields: Record<string, unknown>): void {
  const maxRssMiB = Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;
  process.stdout.write(`${JSON.stringify({ ...fields, seconds: Number((fields.seconds as number).toFixed(3)), maxRssMiB })}\n`);
}

/** A progress line on a terminal's stderr, rewritten in place. */
function progressLine(): { update(done: number, total: number): void; end(): void } {
  let shown = false;
  return {
    update(done, total) {
      shown = true;
      process.stderr.write(`\rvirtio: ${done}/${total} (${Math.floor((done * 100) / total)}%)\x1b[K`);
    },
    end() {
      if (shown) process.stderr.write('\r\x1b[K');
    },
  };
}

main().catch((e: unknown) => {
  process.stderr.write(`virtio: ${(e as Error).message}\n`);
  process.exit(1);
});
