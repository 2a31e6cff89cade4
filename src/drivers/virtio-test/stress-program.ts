/**
 * The guest user program `stress`: P concurrent writers on /dev/virtio_misc, each with its own
 * open file, each doing K write-then-read rounds; every response is matched against its
 * request, and at the end each file must have nothing more to read (no duplicates).
 *
 *   stress [-p P] [-c K]          P writers (default 8) × K requests (default 1000)
 *   stress -p P -c K --reset      first P requests in flight, then a device reset and
 *                                 re-negotiation (driver unbind + bind, as through sysfs); the
 *                                 in-flight requests must fail (ENODEV/EIO), never hang or
 *                                 answer late; then the P × K run on the new queue.
 *
 * Prints one summary line:
 *   stress: P writers x K requests: N verified, 0 lost, 0 duplicated, 0 mismatched in T ms (R req/s)
 * Exit status 0 only when every request got exactly its own response.
 */
import { Errno } from '../kernel.js';
import { RESPONSE_SIZE, answer, decodeResponse, requestFor } from '../../devices/virtio-test/protocol.js';
import type { Syscalls } from '../kernel.js';

import type { MachineControl } from '../../devices/definition.js';

const USAGE = 'usage: stress [-p writers] [-c requests-per-writer] [--reset]';
const DEVICE = '/dev/virtio_misc';

interface Tally {
  verified: number;
  lost: number;
  duplicated: number;
  mismatched: number;
  errors: string[];
}

export async function stressProgram(sys: Syscalls, argv: readonly string[], control?: MachineControl): Promise<number> {
  let writers = 8;
  let count = 1000;
  let reset = false;
  const args = argv.slice(1);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--reset') reset = true;
    else if ((a === '-p' || a === '-c') && i + 1 < args.length) {
      const n = Number(args[++i]);
      if (!Number.isSafeInteger(n) || n < 1) {
        sys.print(`ERROR:${a} needs a positive integer`);
        return 255;
      }
      if (a === '-p') writers = n;
      else count = n;
    } else {
      sys.print(USAGE);
      return 255;
    }
  }

  if (reset) {
    if (!control) {
      sys.print('ERROR:--reset needs machine control');
      return 255;
    }
    const r = await inFlightReset(sys, writers, control);
    if (r !== 0) return r;
  }

  const tally: Tally = { verified: 0, lost: 0, duplicated: 0, mismatched: 0, errors: [] };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: writers }, (_, w) => writer(sys, w, count, tally)));
  const ms = performance.now() - t0;
  const total = writers * count;
  tally.lost = total - tally.verified - tally.mismatched;
  for (const e of tally.errors.slice(0, 5)) sys.print(`ERROR:${e}`);
  sys.print(
    `stress: ${writers} writers x ${count} requests: ${tally.verified} verified, ${tally.lost} lost, ` +
      `${tally.duplicated} duplicated, ${tally.mismatched} mismatched in ${Math.round(ms)} ms ` +
      `(${Math.round(total / (ms / 1000))} req/s)`,
  );
  return tally.lost || tally.duplicated || tally.mismatched || tally.errors.length ? 1 : 0;
}

async function writer(sys: Syscalls, w: number, count: number, tally: Tally): Promise<void> {
  let fd: number;
  try {
    fd = sys.open(DEVICE);
  } catch (e) {
    tally.errors.push(`writer ${w}: open failed (${(e as Error).message})`);
    return;
  }
  try {
    for (let i = 0; i < count; i++) {
      const value = (w * 37 + i) & 0xff;
      await sys.write(fd, Uint8Array.of(value));
      const got = decodeResponse(await sys.read(fd, RESPONSE_SIZE));
      const want = answer(requestFor(value));
      if (got.ret === want.ret && got.arg1 === want.arg1 && got.arg2 === want.arg2) tally.verified++;
      else tally.mismatched++;
    }
    // every response was read: anything more would be a duplicate
    for (;;) {
      try {
        await sys.read(fd, RESPONSE_SIZE);
        tally.duplicated++;
      } catch (e) {
        if (!(e instanceof Errno && e.code === 'EAGAIN')) tally.errors.push(`writer ${w}: final read: ${(e as Error).message}`);
        break;
      }
    }
  } catch (e) {
    tally.errors.push(`writer ${w}: ${(e as Error).message}`);
  } finally {
    sys.close(fd);
  }
}

/**
 * Puts one request per writer in flight, resets the device under them, and checks that each
 * waiting read fails with ENODEV or EIO (the driver took the buffers back) instead of hanging
 * or answering after the reset.
 */
async function inFlightReset(sys: Syscalls, writers: number, control: MachineControl): Promise<number> {
  const fds = Array.from({ length: writers }, () => sys.open(DEVICE));
  for (const [w, fd] of fds.entries()) await sys.write(fd, Uint8Array.of(w & 0xff));
  const reads = fds.map((fd) =>
    sys.read(fd, RESPONSE_SIZE).then(
      () => 'answered' as const,
      (e: unknown) => (e instanceof Errno ? e.code : `threw ${(e as Error).message}`),
    ),
  );
  await control.rebind();
  const outcomes = await Promise.all(reads);
  let answered = 0;
  let failed = 0;
  for (const o of outcomes) {
    if (o === 'answered') answered++;
    else if (o === 'ENODEV' || o === 'EIO') failed++;
    else sys.print(`ERROR:in-flight read ended with ${o}`);
  }
  // the old files stay dead: a write on them fails instead of reaching the new queue
  let deadWrites = 0;
  for (const fd of fds) {
    await sys.write(fd, Uint8Array.of(1)).then(
      () => {},
      () => deadWrites++,
    );
    sys.close(fd);
  }
  sys.print(
    `stress: reset with ${writers} requests in flight: ${answered} answered before the reset, ${failed} failed with ENODEV/EIO, ` +
      `${deadWrites} of ${writers} old files refuse writes`,
  );
  return answered + failed === writers && deadWrites === writers ? 0 : 1;
}
