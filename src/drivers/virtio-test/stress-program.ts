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
 *   -w W                          each writer keeps up to W requests outstanding (default 1);
 *                                 answers may then come in any order: each must answer one of
 *                                 the writer's outstanding requests
 * A slow guest (random choices from a PRNG seeded by --seed S, default 1):
 *   --pause RATE:MS               each writer pauses before a write or a read with probability
 *                                 RATE (0..1), for a random 0..MS ms
 *   --irq-delay RATE:MS           the driver defers the processing of a fraction RATE of its
 *                                 interrupts by a random 0..MS ms (virtioTestParams)
 *
 * Prints one summary line:
 *   stress: P writers x K requests: N verified, 0 lost, 0 duplicated, 0 mismatched in T ms (R req/s)
 * and with a slow guest or -w a second one:
 *   stress: slow guest: N pauses, N of N interrupts deferred (N coalesced), ring full N times, longest wait W ms
 * Exit status 0 only when every request got exactly its own response.
 */
import { Errno } from '../kernel.js';
import { RESPONSE_SIZE, answer, decodeResponse, requestFor } from '../../devices/virtio-test/protocol.js';
import type { Syscalls } from '../kernel.js';
import { virtioTestCounters, virtioTestParams } from './driver.js';

import type { MachineControl } from '../../devices/definition.js';

const USAGE = 'usage: stress [-p writers] [-c requests-per-writer] [-w window] [--reset] [--seed S] [--pause RATE:MS] [--irq-delay RATE:MS]';
const DEVICE = '/dev/virtio_misc';

interface Tally {
  verified: number;
  lost: number;
  duplicated: number;
  mismatched: number;
  errors: string[];
  pauses: number;
  /** The longest a write (for ring space) or a read (for its answer) waited, ms. */
  longestWaitMs: number;
}

/** What each writer does. */
interface WriterPlan {
  count: number;
  window: number;
  pause: { rate: number; maxMs: number } | null;
  seed: number;
}

/** The answer to each byte value. */
const ANSWERS = Array.from({ length: 256 }, (_, v) => answer(requestFor(v)));

/** mulberry32, uniform in [0, 1). */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** "RATE:MS" -> { rate, maxMs }, or null if malformed. */
function parseRate(text: string): { rate: number; maxMs: number } | null {
  const m = /^(\d*\.?\d+):(\d*\.?\d+)$/.exec(text);
  if (!m) return null;
  const rate = Number(m[1]);
  const maxMs = Number(m[2]);
  return rate <= 1 && maxMs <= 10_000 ? { rate, maxMs } : null;
}

export async function stressProgram(sys: Syscalls, argv: readonly string[], control?: MachineControl): Promise<number> {
  let writers = 8;
  let count = 1000;
  let window = 1;
  let seed = 1;
  let reset = false;
  let pause: { rate: number; maxMs: number } | null = null;
  let irqDelay: { rate: number; maxMs: number } | null = null;
  const args = argv.slice(1);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--reset') reset = true;
    else if ((a === '-p' || a === '-c' || a === '-w' || a === '--seed') && i + 1 < args.length) {
      const n = Number(args[++i]);
      if (!Number.isSafeInteger(n) || n < (a === '--seed' ? 0 : 1)) {
        sys.print(`ERROR:${a} needs a ${a === '--seed' ? 'non-negative' : 'positive'} integer`);
        return 255;
      }
      if (a === '-p') writers = n;
      else if (a === '-c') count = n;
      else if (a === '-w') window = n;
      else seed = n;
    } else if ((a === '--pause' || a === '--irq-delay') && i + 1 < args.length) {
      const r = parseRate(args[++i]!);
      if (!r) {
        sys.print(`ERROR:${a} needs RATE:MS (a probability 0..1 and at most 10000 ms)`);
        return 255;
      }
      if (a === '--pause') pause = r;
      else irqDelay = r;
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

  const tally: Tally = { verified: 0, lost: 0, duplicated: 0, mismatched: 0, errors: [], pauses: 0, longestWaitMs: 0 };
  const before = { ...virtioTestCounters };
  const savedIrqDelay = virtioTestParams.interruptDelay;
  if (irqDelay) virtioTestParams.interruptDelay = { ...irqDelay, seed };
  const t0 = performance.now();
  try {
    await Promise.all(Array.from({ length: writers }, (_, w) => writer(sys, w, { count, window, pause, seed: seed * 4099 + w }, tally)));
  } finally {
    virtioTestParams.interruptDelay = savedIrqDelay;
  }
  const ms = performance.now() - t0;
  const total = writers * count;
  tally.lost = total - tally.verified - tally.mismatched;
  for (const e of tally.errors.slice(0, 5)) sys.print(`ERROR:${e}`);
  sys.print(
    `stress: ${writers} writers x ${count} requests: ${tally.verified} verified, ${tally.lost} lost, ` +
      `${tally.duplicated} duplicated, ${tally.mismatched} mismatched in ${Math.round(ms)} ms ` +
      `(${Math.round(total / (ms / 1000))} req/s)`,
  );
  if (pause || irqDelay || window > 1) {
    const c = virtioTestCounters;
    sys.print(
      `stress: slow guest: ${tally.pauses} pauses, ${c.deferred - before.deferred} of ${c.interrupts - before.interrupts} interrupts deferred ` +
        `(${c.coalesced - before.coalesced} coalesced), ring full ${c.ringFullWaits - before.ringFullWaits} times, ` +
        `longest wait ${Math.round(tally.longestWaitMs)} ms`,
    );
  }
  return tally.lost || tally.duplicated || tally.mismatched || tally.errors.length ? 1 : 0;
}

async function writer(sys: Syscalls, w: number, plan: WriterPlan, tally: Tally): Promise<void> {
  const { count, window } = plan;
  const random = plan.pause ? seededRandom(plan.seed) : null;
  const maybePause = async (): Promise<void> => {
    if (!random || random() >= plan.pause!.rate) return;
    tally.pauses++;
    const ms = random() * plan.pause!.maxMs;
    await new Promise((r) => (ms >= 1 ? setTimeout(r, ms) : setImmediate(r)));
  };
  let fd: number;
  try {
    fd = sys.open(DEVICE);
  } catch (e) {
    tally.errors.push(`writer ${w}: open failed (${(e as Error).message})`);
    return;
  }
  try {
    // requests written and not yet answered, by value; an answer must match one of them
    const outstanding = new Uint32Array(256);
    let sent = 0;
    let answered = 0;
    while (answered < count) {
      while (sent < count && sent - answered < window) {
        if (random) await maybePause();
        const value = (w * 37 + sent) & 0xff;
        const t0 = performance.now();
        await sys.write(fd, Uint8Array.of(value)); // waits while the ring is full
        const waited = performance.now() - t0;
        if (waited > tally.longestWaitMs) tally.longestWaitMs = waited;
        outstanding[value]!++;
        sent++;
      }
      if (random) await maybePause();
      const t0 = performance.now();
      const got = decodeResponse(await sys.read(fd, RESPONSE_SIZE));
      const waited = performance.now() - t0;
      if (waited > tally.longestWaitMs) tally.longestWaitMs = waited;
      answered++;
      const n = (got.ret - ANSWERS[0]!.ret) >>> 0;
      const want = n < 256 ? ANSWERS[n]! : null;
      if (want && got.ret === want.ret && got.arg1 === want.arg1 && got.arg2 === want.arg2 && outstanding[n]! > 0) {
        outstanding[n]!--;
        tally.verified++;
      } else tally.mismatched++;
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
