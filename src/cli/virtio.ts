#!/usr/bin/env node
/**
 * `virtio N`: boots a machine, runs the guest user program `virtio N` in it, and prints what
 * the seed's run shows: the device's request lines and the driver's response lines.
 *
 * Machines: `embedded` (default; guest and device threads in this process) and `uml`
 * (a real Linux kernel as User-Mode Linux, with the device served over vhost-user).
 */
import { parseArgs } from 'node:util';
import { DEFAULT_QUEUE_SIZE, VIRTIO_ID_TEST } from '../devices/virtio-test/protocol.js';
import { runMachine } from '../machine/machine.js';
import { RANGE_ERROR, USAGE_LINES, parseByte } from '../drivers/virtio-test/program.js';
import { MAX_QUEUE_SIZE } from '../virtio/constants.js';
import { DEVICE_ID_RULE, QUEUE_SIZE_RULE, isDeviceId, isQueueSize, optionParser, type OptionParser } from './options.js';

/** virtio_uml (Linux 6.1) always sets up 256-entry rings. */
const UML_QUEUE_SIZE = 256;

const HELP = `Usage: virtio [options] N

Runs the guest program \`virtio N\`: it writes the byte N (0..255) to /dev/virtio_misc; the
guest's virtio-test driver sends the request {N, N+1, N+2, N+3, "hello back end!"} to the
virtio-test device, which logs it and answers {arg1+100, arg2+100, arg3+100}.

Options:
  --count K           send K requests with values N, N+1, ... (mod 256), all verified (default 1)
  --device-id ID      virtio device ID of the device and the driver's id_table (default 45;
                      note: virtio 1.4 assigns ID 45 to virtio-spi, the seed predates that)
  --queue-size Q      the device's maximum queue size, a power of two ≤ 32768 (default 128;
                      256 with --machine uml, since virtio_uml always asks for 256-entry rings)
  --machine M         embedded (default): guest and device threads in this process, no VM, no root
                      uml: a real Linux 6.1 guest (User-Mode Linux) and this device over vhost-user
  --verbose           also print the guest's boot messages
  --quiet             print no kernel or device lines, only the program's summary
  --json              print the summary as one JSON object (implies --quiet)
  -h, --help          this text

Exit status: the guest program's (0 on success; 255 as the seed's \`return -1\`), 2 for bad options.`;

function usageError(lines: string[]): never {
  for (const l of lines) process.stdout.write(`${l}\n`);
  process.exit(2);
}

const options: OptionParser = optionParser('virtio');

/** One summary object on stdout; the process's peak memory included (what a long run's user watches). */
function printJson(fields: Record<string, unknown>): void {
  const maxRssMiB = Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;
  process.stdout.write(`${JSON.stringify({ ...fields, seconds: Number((fields.seconds as number).toFixed(3)), maxRssMiB })}\n`);
}

/** A progress line on a terminal's stderr, rewritten in place. */
function progressLine(unit: string): { update(done: number, total: number): void; end(): void } {
  let shown = false;
  return {
    update(done, total) {
      shown = true;
      process.stderr.write(`\rvirtio: ${done}/${total} ${unit} (${Math.floor((done * 100) / total)}%)\x1b[K`);
    },
    end() {
      if (shown) process.stderr.write('\r\x1b[K');
    },
  };
}

async function main(): Promise<void> {
  // A negative number is a value out of range, not an option.
  if (process.argv.slice(2).some((a) => /^-\d/.test(a))) usageError([RANGE_ERROR]);
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        count: { type: 'string' },
        'device-id': { type: 'string' },
        'queue-size': { type: 'string' },
        machine: { type: 'string' },
        verbose: { type: 'boolean' },
        quiet: { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    options.optionError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  // The seed program's own checks, with its words.
  if (positionals.length !== 1) usageError(USAGE_LINES);
  const n = parseByte(positionals[0]!);
  if (n === null) usageError([RANGE_ERROR]);

  const count = options.intOption('count', values.count, 1, (k) => Number.isSafeInteger(k) && k >= 1 && k <= 10_000_000, 'an integer from 1 to 10000000');
  const deviceId = options.intOption('device-id', values['device-id'], VIRTIO_ID_TEST, isDeviceId, DEVICE_ID_RULE);
  const machine = values.machine ?? 'embedded';
  if (machine !== 'embedded' && machine !== 'uml') options.optionError(`--machine must be 'embedded' or 'uml', got '${machine}'`);
  const queueSize = options.intOption(
    'queue-size',
    values['queue-size'],
    machine === 'uml' ? UML_QUEUE_SIZE : DEFAULT_QUEUE_SIZE,
    isQueueSize,
    QUEUE_SIZE_RULE,
  );
  if (deviceId === VIRTIO_ID_TEST) {
    process.stderr.write('virtio: note: device ID 45 is the seed\'s virtio-test; virtio 1.4 assigns 45 to virtio-spi (see --device-id)\n');
  }
  const argv = count > 1 ? ['virtio', '-c', String(count), String(n)] : ['virtio', String(n)];

  if (machine === 'uml') {
    const { runOnUml } = await import('./uml-run.js');
    process.exitCode = await runOnUml({ argv, deviceId, queueSize, verbose: values.verbose ?? false });
    return;
  }
  const json = values.json ?? false;
  const started = performance.now();
  const progress = count > 1 && process.stderr.isTTY ? progressLine('requests') : undefined;
  const { exitCode, report } = await runMachine({
    argv: json ? ['virtio', '-j', ...argv.slice(1)] : argv,
    deviceId,
    queueSize,
    verbose: values.verbose ?? false,
    quiet: json || (values.quiet ?? false),
    ...(progress ? { onProgress: progress.update } : {}),
  });
  progress?.end();
  if (json) printJson({ machine, device: 'virtio-test', ...report, exitCode, seconds: (performance.now() - started) / 1000 });
  process.exitCode = exitCode;
}

main().catch((e: unknown) => {
  process.stderr.write(`virtio: ${(e as Error).message}\n`);
  process.exit(1);
});
