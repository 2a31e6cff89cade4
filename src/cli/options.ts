/** Option parsing shared by the CLIs: one style of error (message, hint, exit 2, no stack trace). */
import { MAX_QUEUE_SIZE } from '../virtio/constants.js';
import { isPowerOfTwo } from '../virtio/split-ring.js';

export interface OptionParser {
  /** Prints `<name>: <message>` and a hint to stderr, exits 2. */
  optionError(message: string): never;
  /** A decimal integer option, or `fallback` when absent; anything else is an option error naming `rule`. */
  intOption(name: string, text: string | undefined, fallback: number, check: (n: number) => boolean, rule: string): number;
}

export function optionParser(program: string): OptionParser {
  const optionError = (message: string): never => {
    process.stderr.write(`${program}: ${message}\nTry '${program} --help'.\n`);
    process.exit(2);
  };
  return {
    optionError,
    intOption(name, text, fallback, check, rule) {
      if (text === undefined) return fallback;
      const n = /^\d+$/.test(text) ? Number(text) : NaN;
      if (!check(n)) optionError(`--${name} must be ${rule}, got '${text}'`);
      return n;
    },
  };
}

/** §5: device IDs are 16-bit on every transport; 0 is reserved. */
export const isDeviceId = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= 0xffff;
export const DEVICE_ID_RULE = 'an integer from 1 to 65535';
/** §2.7: a power of two, at most 32768. */
export const isQueueSize = (n: number): boolean => isPowerOfTwo(n) && n <= MAX_QUEUE_SIZE;
export const QUEUE_SIZE_RULE = `a power of two from 1 to ${MAX_QUEUE_SIZE}`;
