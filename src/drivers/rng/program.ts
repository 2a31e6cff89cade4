/**
 * The embedded guest's program `hwrng-read N`: reads N bytes from /dev/hwrng (as many reads as
 * it takes: a read may return fewer bytes than asked) and prints them as lowercase hex, 16 bytes
 * per line, separated by single spaces: what the real-Linux demo prints with
 * `od -An -tx1 -v | sed 's/^ //'` (src/devices/rng/definition.ts). Exit status 0; a bad
 * argument or a failed read prints one `ERROR:` line and exits 255. With -j (`virtio --json`)
 * nothing is printed: the summary goes to the host (sys.report) — bytes read, and their hex when
 * there are at most {@link JSON_HEX_MAX} — so the command's output is one JSON object.
 */
import { Errno, type Syscalls } from '../kernel.js';

export const DEVICE_PATH = '/dev/hwrng';
/** Without N (as the definition's default --count). */
export const DEFAULT_COUNT = 64;
/** Bytes asked for per read (the driver gives at most a page per read). */
const READ_SIZE = 4096;
/** With -j, the bytes themselves are reported up to this many (a summary stays small). */
export const JSON_HEX_MAX = 4096;

/** od -An -tx1 -v without its leading space: "3a 4f …", 16 bytes per line, no trailing newline. */
export function formatHex(bytes: Uint8Array): string {
  const lines: string[] = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const row: string[] = [];
    for (const b of bytes.subarray(i, i + 16)) row.push(b.toString(16).padStart(2, '0'));
    lines.push(row.join(' '));
  }
  return lines.join('\n');
}

export async function hwrngReadProgram(sys: Syscalls, argv: readonly string[]): Promise<number> {
  const json = argv[1] === '-j' && sys.report !== undefined;
  const args = argv.slice(argv[1] === '-j' ? 2 : 1);
  if (args.length > 1 || (args.length === 1 && !/^\d{1,15}$/.test(args[0]!)) || Number(args[0] ?? DEFAULT_COUNT) < 1) {
    sys.print('ERROR: usage: hwrng-read [N] (N bytes to read, an integer ≥ 1; default 64)');
    return 255;
  }
  const count = Number(args[0] ?? DEFAULT_COUNT);
  let fd: number;
  try {
    fd = sys.open(DEVICE_PATH);
  } catch (e) {
    sys.print(`ERROR: cannot open ${DEVICE_PATH}${detail(e)}`);
    return 255;
  }
  const data = new Uint8Array(count);
  let got = 0;
  // Printed a chunk of whole lines at a time, so a large N needs no large string.
  let printed = 0;
  const flush = (all: boolean): void => {
    if (json) return;
    const end = all ? got : got - (got % 16);
    if (end > printed) sys.print(formatHex(data.subarray(printed, end)));
    printed = end;
  };
  try {
    while (got < count) {
      const chunk = await sys.read(fd, Math.min(READ_SIZE, count - got));
      if (chunk.length === 0) throw new Error(`${DEVICE_PATH} returned no bytes after ${got} of ${count}`);
      if (chunk.length > count - got) throw new Error(`${DEVICE_PATH} returned ${chunk.length} bytes for a read of ${count - got}`);
      data.set(chunk, got);
      got += chunk.length;
      if (got - printed >= 64 * 1024) flush(false);
      sys.progress?.(got, count);
    }
  } catch (e) {
    flush(true); // every byte received is real: printed before the error
    sys.close(fd);
    if (json) sys.report!({ bytes: got, error: `reading ${DEVICE_PATH} failed${detail(e)}` });
    else sys.print(`ERROR: reading ${DEVICE_PATH} failed${detail(e)}`);
    return 255;
  }
  sys.close(fd);
  flush(true);
  if (json) sys.report!({ bytes: got, ...(got <= JSON_HEX_MAX ? { hex: Buffer.from(data).toString('hex') } : {}) });
  return 0;
}

function detail(e: unknown): string {
  if (e instanceof Errno || e instanceof Error) return ` (${e.message})`;
  return '';
}
