/**
 * virtio-rng as a registered device (virtio 1.2 §5.4, device ID 4): the model of device.ts over
 * the OS CSPRNG or a file (`--source FILE`), with an optional rate limit (`--max-bytes` per
 * `--period-ms`, as vhost-device-rng), the embedded guest's driver (/dev/hwrng) and program
 * `hwrng-read N`, and the same demo in a real Linux guest with Linux's own virtio-rng driver.
 *
 * Both demos print the N bytes as lowercase hex, 16 bytes per line, separated by single spaces
 * (`od -An -tx1 -v` with its leading space removed; formatHex in src/drivers/rng/program.ts).
 */
import type { DeviceDefinition, OptionValues } from '../definition.js';
import { DEFAULT_QUEUE_SIZE, RngDevice, VIRTIO_ID_RNG, type RateLimit } from './device.js';
import { cryptoSource, openFileSource } from './sources.js';

/** Bytes the demo reads without --count. */
export const DEFAULT_COUNT = 64;
/** The embedded program's name (argv[0]). */
export const PROGRAM_NAME = 'hwrng-read';
const DEFAULT_PERIOD_MS = 1000;

/** The demo's byte count from `values.count` (a number from the CLI, or a string). */
export function demoCount(values: OptionValues): number {
  const raw = values.count;
  const n = raw === undefined || raw === '' ? DEFAULT_COUNT : Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`rng: the byte count must be an integer ≥ 1, got '${String(raw)}'`);
  return n;
}

export const rngDefinition: DeviceDefinition = {
  name: 'rng',
  deviceId: VIRTIO_ID_RNG,
  summary: 'the entropy device (virtio-rng): fills the guest\'s buffers from the OS CSPRNG or a file',
  options: [
    {
      flag: 'source',
      type: 'string',
      valueName: 'FILE',
      help: 'serve the bytes of FILE in order (a hardware RNG such as /dev/hwrng, or a fixed file); default the OS CSPRNG',
    },
    {
      flag: 'period-ms',
      type: 'integer',
      valueName: 'MS',
      default: DEFAULT_PERIOD_MS,
      min: 1,
      max: 3_600_000,
      help: 'the rate limit period: at most --max-bytes bytes per MS milliseconds',
    },
    {
      flag: 'max-bytes',
      type: 'integer',
      valueName: 'N',
      min: 1,
      max: 0xffff_ffff,
      help: 'bytes served per --period-ms at most; a request beyond it is answered in the next period (default no limit)',
    },
    {
      flag: 'queue-size',
      type: 'integer',
      valueName: 'Q',
      default: DEFAULT_QUEUE_SIZE,
      min: 1,
      max: 32768,
      check: (v) => ((Number(v) & (Number(v) - 1)) === 0 ? null : 'a power of two'),
      help: 'the largest ring a driver may set, a power of two (virtio_uml always uses 256)',
    },
  ],
  open(values) {
    const queueSize = Number(values['queue-size'] ?? DEFAULT_QUEUE_SIZE);
    const rateLimit: RateLimit | undefined =
      values['max-bytes'] === undefined
        ? undefined
        : { maxBytes: Number(values['max-bytes']), periodMs: Number(values['period-ms'] ?? DEFAULT_PERIOD_MS) };
    const path = values.source;
    if (path !== undefined && typeof path !== 'string') throw new Error(`rng: --source needs a file name, got '${String(path)}'`);
    const file = path === undefined ? undefined : openFileSource(path);
    const limitText = rateLimit ? `, ≤ ${rateLimit.maxBytes} bytes per ${rateLimit.periodMs} ms` : '';
    return {
      description: `source ${file ? file.path : cryptoSource.description}${limitText}, queue ≤ ${queueSize}`,
      createDevice: () => new RngDevice({ source: file ? file.reader() : cryptoSource, queueSize, ...(rateLimit ? { rateLimit } : {}) }),
      close: () => file?.close(),
    };
  },
  embedded: {
    async loadDriver() {
      const { createDriver } = await import('../../drivers/rng/driver.js');
      return createDriver;
    },
    async loadProgram(name) {
      if (name === PROGRAM_NAME) return (await import('../../drivers/rng/program.js')).hwrngReadProgram;
      return undefined;
    },
    programArgv: (values) => [PROGRAM_NAME, ...(values.json ? ['-j'] : []), String(demoCount(values))],
  },
  linux: {
    // Linux's virtio-rng driver behind /dev/hwrng; head -c loops until N bytes (or EOF), od
    // prints 16 bytes per line as " xx", sed drops the leading space: formatHex's output.
    // Linux (6.1) itself also reads the device: up to 32 bytes when it registers (to seed its
    // pool) and from its hwrng kernel thread, which runs whatever rng_core.default_quality says
    // because virtio-rng declares quality 1000. Writing 0 to rng_quality (Linux ≥ 5.18) stops
    // that thread before the command reads, so from then on this command is the device's only
    // reader: its bytes are one contiguous run of the device's stream (of a --source FILE, not
    // from the file's first byte: the kernel took some first).
    guestCommand(values) {
      const n = demoCount(values);
      const script =
        `q=/sys/class/misc/hw_random/rng_quality; [ -w $q ] && echo 0 > $q; ` +
        `head -c ${n} /dev/hwrng > /tmp/hwrng.bin || { echo 'ERROR: reading /dev/hwrng failed'; exit 1; }; ` +
        `od -An -tx1 -v /tmp/hwrng.bin | sed 's/^ //'`;
      return ['sh', '-c', script];
    },
    qemuDevice: () => 'vhost-user-rng-pci',
    // Keeps the hwrng thread from starting for drivers that take the default quality (not
    // virtio-rng's 1000: rng_quality above is what stops it).
    kernelArgs: ['rng_core.default_quality=0'],
  },
};
