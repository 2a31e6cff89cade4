/**
 * The guest user program `virtio`, the seed's virtio.c: writes one byte N to /dev/virtio_misc.
 * Fixed: N must be an integer 0..255 (the seed's atoi turns 300 into 44 and "x" into 0), and
 * the response is read back and checked, so a program (not only the kernel log) sees it.
 *
 *   virtio N            the seed's behaviour
 *   virtio -c K N       K requests with values N, N+1, ... (mod 256), all verified
 *   virtio -j [-c K] N  the same, with the summary reported to the host (sys.report) instead of printed
 */
import { Errno } from '../kernel.js';
import { RESPONSE_SIZE, answer, decodeResponse, requestFor } from '../../devices/virtio-test/protocol.js';
import type { Syscalls } from '../kernel.js';

export const USAGE_LINES = [
  'ERROR:please enter two parameters!',
  'eg: ./virtio number',
  'but the number between 0 and 255!',
];
/** Requests in flight at most (twice a default ring: the ring stays full while answers are read). */
export const WINDOW = 256;
export const RANGE_ERROR = 'ERROR:the number must be an integer between 0 and 255!';

/** Parses N the way the fixed program does: decimal digits only, 0..255. */
export function parseByte(text: string): number | null {
  if (!/^\s*\+?\d{1,10}\s*$/.test(text)) return null;
  const n = Number(text);
  return n >= 0 && n <= 255 ? n : null;
}

export async function virtioProgram(sys: Syscalls, argv: readonly string[]): Promise<number> {
  let args = argv.slice(1);
  let count = 1;
  // -j: report the summary to the host (virtio --json) instead of printing it.
  const report = args[0] === '-j';
  if (report) args = args.slice(1);
  if (args[0] === '-c' && args.length >= 2) {
    count = Number(args[1]);
    if (!Number.isSafeInteger(count) || count < 1) {
      sys.print('ERROR:the count must be a positive integer!');
      return 255;
    }
    args = args.slice(2);
  }
  if (args.length !== 1) {
    sys.print(USAGE_LINES.join('\n'));
    return 255;
  }
  const n = parseByte(args[0]!);
  if (n === null) {
    sys.print(RANGE_ERROR);
    return 255;
  }

  let fd: number;
  try {
    fd = sys.open('/dev/virtio_misc');
  } catch {
    sys.print('ERROR:virtio_misc open failed!');
    return 255;
  }
  // Requests go out in a window: at most WINDOW unanswered, so nothing per request piles up
  // however large the count (a response is read back before the next write past the window).
  const expected = new Map<number, number>(); // ret value → outstanding count (at most 256 keys)
  let written = 0;
  let bad = 0;
  for (let answered = 0; answered < count; answered++) {
    try {
      for (; written < count && written - answered < WINDOW; written++) {
        const value = (n + written) & 0xff;
        await sys.write(fd, Uint8Array.of(value));
        const ret = answer(requestFor(value)).ret;
        expected.set(ret, (expected.get(ret) ?? 0) + 1);
      }
    } catch (e) {
      sys.print(`ERROR:write failed!${e instanceof Errno ? ` (${e.message})` : ''}`);
      sys.close(fd);
      return 255;
    }
    try {
      const resp = decodeResponse(await sys.read(fd, RESPONSE_SIZE));
      const left = expected.get(resp.ret) ?? 0;
      const value = (resp.ret - 101) & 0xff;
      const want = answer(requestFor(value));
      if (left === 0 || resp.arg1 !== want.arg1 || resp.arg2 !== want.arg2) bad++;
      else expected.set(resp.ret, left - 1);
    } catch (e) {
      sys.print(`ERROR:read failed!${e instanceof Errno ? ` (${e.message})` : ''}`);
      sys.close(fd);
      return 255;
    }
    sys.progress?.(answered + 1, count);
  }
  sys.close(fd);
  if (report && sys.report) sys.report({ requests: count, responses: count, verified: count - bad, mismatched: bad });
  else if (bad) sys.print(`ERROR:${bad} of ${count} responses did not match their requests!`);
  else if (count > 1) sys.print(`virtio: ${count} requests, ${count} responses verified`);
  return bad ? 1 : 0;
}
