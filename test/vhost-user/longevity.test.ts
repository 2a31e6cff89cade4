/**
 * A back-end that lives for months: the `virtio-test-backend` daemon (a child process, as it is
 * run) serves 1,000 front-ends that connect, do the whole handshake, get one request answered
 * and leave, interleaved with 1,000 front-ends that vanish after a random prefix of the same
 * handshake — between messages, in the middle of a header or a payload, with fds attached to a
 * message cut short or queued unread, with replies (GET_INFLIGHT_FD's fd among them) still on
 * their way. The daemon's open fds (/proc/PID/fd), its memfd mappings (/proc/PID/maps), its RSS
 * (/proc/PID/status) and its JS heap are sampled once warmed up and at the end, each time right
 * after a full GC (longevity-gc-hook.ts): the fds and mappings must be exactly back, RSS and heap
 * within the tolerances below.
 *
 * The daemon runs with `--max-semi-space-size=1`: V8 otherwise grows its young generation to
 * 2 × 16 MiB over the first ~750 cycles (measured: heapTotal 15 → 40 MiB, RSS 61 → 88 MiB, then
 * flat up to 3,000 cycles, the heap in use staying at 5.3 MiB after GC), which is V8 sizing
 * itself, not the daemon keeping anything, and would hide a leak of that size.
 *
 *   LONGEVITY_SEED=1234   replays the random cut points (the seed is printed)
 *   LONGEVITY_CYCLES=N    cycles of each kind (default 1000)
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { OFFERED_PROTOCOL_FEATURES } from '../../src/vhost-user/backend-session.js';
import { encodeMessage } from '../../src/vhost-user/codec.js';
import { closeQuietly } from '../../src/vhost-user/message-channel.js';
import { native } from '../../src/vhost-user/native/index.js';
import { encodeInflight, encodeMemTable, encodeU64, encodeVringAddress, encodeVringState } from '../../src/vhost-user/payloads.js';
import { HeaderFlag, Request, VHOST_USER_F_PROTOCOL_FEATURES } from '../../src/vhost-user/protocol.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { VIRTIO_TEST_F_CAN_PRINT } from '../../src/devices/virtio-test/protocol.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { inflightBufferSize } from '../../src/vhost-user/inflight.js';
import { onLines } from '../helpers/lines.js';
import { cliPath } from '../helpers/paths.js';
import { tempDir, waitFor } from './helpers.js';

const CYCLES = Number(process.env.LONGEVITY_CYCLES ?? 1000);
const SEED = Number(process.env.LONGEVITY_SEED ?? Math.floor(Math.random() * 0x7fff_ffff));
const WARMUP = Math.min(250, Math.floor(CYCLES / 4));
/**
 * Allowed growth between the warmed-up sample (after 250 cycles, 500 connections) and the end
 * (1,500 connections later). Measured after a full GC with pinned semi-spaces: RSS +1 to +4 MiB
 * (old-space pages and malloc arenas settling), JS heap in use ±0.2 MiB. A session alone — no
 * memory mapped yet — retains 5 KiB of heap and 7.5 KiB of RSS (500 idle sessions measured); a
 * served one also has pages of its mapped RAM and inflight buffer touched. A leak of a session
 * per connection of either kind is therefore ≥ 750 × 7.5 KiB ≈ 5.5 MiB of RSS and ≥ 3.7 MiB of
 * heap, of both kinds ≥ 11 MiB: the heap bound (1 MiB) catches any leak of JS objects above
 * ~0.7 KiB per connection, the RSS bound (8 MiB) native leaks above ~5.5 KiB per connection.
 */
const RSS_TOLERANCE_KIB = 8 * 1024;
const HEAP_TOLERANCE_KIB = 1024;
const SIZE = 16;
/** Small guest RAM: rings in region 0, buffers in region 1 (64 KiB each). */
const REGIONS = [
  { guestAddr: 0, size: 0x10000 },
  { guestAddr: 0x10_0000, size: 0x10000 },
];
const FEATURES = bit(FeatureBit.VERSION_1) | bit(FeatureBit.RING_EVENT_IDX) | bit(FeatureBit.RING_INDIRECT_DESC) | bit(VIRTIO_TEST_F_CAN_PRINT) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
const V = HeaderFlag.VERSION;
const NR = HeaderFlag.VERSION | HeaderFlag.NEED_REPLY;

interface Sample {
  fds: number;
  rssKiB: number;
  heapUsedKiB: number;
  memfdMappings: number;
}

interface Daemon {
  proc: ChildProcess;
  stdout: string[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnDaemon(args: string[]): Daemon {
  const hook = fileURLToPath(new URL('./longevity-gc-hook.js', import.meta.url));
  const proc = spawn(process.execPath, ['--expose-gc', '--max-semi-space-size=1', '--import', hook, cliPath('virtio-test-backend'), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  onLines(proc.stdout!, (l) => stdout.push(l));
  onLines(proc.stderr!, (l) => stderr.push(l));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return { proc, stdout, stderr, exited };
}

/** A full GC in the daemon (SIGUSR2, see longevity-gc-hook.ts), then its fds, mappings and memory. */
async function sample(d: Daemon): Promise<Sample> {
  const pid = d.proc.pid!;
  const before = d.stderr.length;
  d.proc.kill('SIGUSR2');
  let line: string | undefined;
  await waitFor(() => (line = d.stderr.slice(before).find((l) => l.startsWith('longevity-gc '))) !== undefined, 'the GC line of the daemon');
  const [, , heapUsed] = line!.split(' ').map(Number);
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return {
    fds: readdirSync(`/proc/${pid}/fd`).length,
    rssKiB: Number(rss?.[1] ?? NaN),
    heapUsedKiB: Math.round(heapUsed! / 1024),
    memfdMappings: readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('/memfd:')).length,
  };
}

/** A small deterministic generator (LCG), for replayable cut points. */
function random(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return Math.floor((s / 0x1_0000_0000) * n);
  };
}

interface Message {
  bytes: Uint8Array;
  fds: number[];
}

/** The whole handshake of a QEMU-like front-end, with real fds (ours to close afterwards). */
function handshake(): { messages: Message[]; owned: number[] } {
  const owned: number[] = [];
  const fd = (n: number): number => (owned.push(n), n);
  const [channelMine, channelTheirs] = native.socketPair();
  owned.push(channelMine, channelTheirs);
  const ram = REGIONS.map((r) => fd(native.memfdCreate('vhost-user-longevity', r.size)));
  const ua = (gpa: number): bigint => 0x5555_0000_0000n + BigInt(gpa);
  const m = (request: number, flags: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): Message => ({
    bytes: encodeMessage(request, flags, payload),
    fds,
  });
  const messages = [
    m(Request.SET_OWNER, V),
    m(Request.GET_FEATURES, V),
    m(Request.GET_PROTOCOL_FEATURES, V),
    m(Request.SET_PROTOCOL_FEATURES, V, encodeU64(OFFERED_PROTOCOL_FEATURES)),
    m(Request.SET_BACKEND_REQ_FD, NR, undefined, [channelTheirs]),
    m(Request.SET_STATUS, NR, encodeU64(Status.ACKNOWLEDGE | Status.DRIVER)),
    m(Request.SET_FEATURES, NR, encodeU64(FEATURES)),
    m(Request.SET_STATUS, NR, encodeU64(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK)),
    m(
      Request.SET_MEM_TABLE,
      NR,
      encodeMemTable(REGIONS.map((r) => ({ guestAddr: BigInt(r.guestAddr), size: BigInt(r.size), userAddr: ua(r.guestAddr), mmapOffset: 0n }))),
      ram,
    ),
    m(Request.GET_INFLIGHT_FD, V, encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: SIZE })),
    m(Request.SET_INFLIGHT_FD, NR, encodeInflight({ mmapSize: BigInt(inflightBufferSize(1, SIZE)), mmapOffset: 0n, numQueues: 1, queueSize: SIZE }), [
      fd(native.memfdCreate('vhost-user-longevity', inflightBufferSize(1, SIZE))),
    ]),
    m(Request.SET_VRING_NUM, NR, encodeVringState({ index: 0, num: SIZE })),
    m(Request.SET_VRING_BASE, NR, encodeVringState({ index: 0, num: 0 })),
    m(Request.SET_VRING_ADDR, NR, encodeVringAddress({ index: 0, flags: 0, desc: ua(0), avail: ua(0x1000), used: ua(0x2000), log: 0n })),
    m(Request.SET_VRING_CALL, NR, encodeU64(0), [fd(native.eventfd(0, true))]),
    m(Request.SET_VRING_ERR, NR, encodeU64(0), [fd(native.eventfd(0, true))]),
    m(Request.SET_VRING_KICK, NR, encodeU64(0), [fd(native.eventfd(0, true))]),
    m(Request.SET_VRING_ENABLE, NR, encodeVringState({ index: 0, num: 1 })),
    m(Request.SET_STATUS, NR, encodeU64(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK)),
  ];
  return { messages, owned };
}

/**
 * Connects, sends the first `cut` bytes of the handshake (a message cut short keeps its fds:
 * they travel with its first byte) without reading any reply, and vanishes.
 */
function vanish(socketPath: string, pick: (n: number) => number): { cut: number; total: number } {
  const { messages, owned } = handshake();
  const total = messages.reduce((n, x) => n + x.bytes.length, 0);
  const cut = pick(total);
  const sock = native.socketConnect(socketPath);
  try {
    let at = 0;
    for (const x of messages) {
      if (at >= cut) break;
      const n = Math.min(x.bytes.length, cut - at);
      native.sendMsg(sock, x.bytes.subarray(0, n), x.fds);
      at += n;
    }
  } finally {
    native.close(sock);
    owned.forEach(closeQuietly);
  }
  return { cut, total };
}

describe('vhost-user back-end daemon: a long life', { timeout: 240_000 }, () => {
  it(`${CYCLES} served connections and ${CYCLES} front-ends vanishing mid-handshake: fds and mappings back exactly, RSS flat`, async (t) => {
    const tmp = tempDir();
    const socketPath = path.join(tmp.dir, 'longevity.sock');
    const be = spawnDaemon(['--socket', socketPath, '--quiet', '--queue-size', String(SIZE)]);
    const pick = random(SEED);
    t.diagnostic(`seed ${SEED} (replay with LONGEVITY_SEED=${SEED})`);
    try {
      await waitFor(() => be.stdout.some((l) => /listening on/.test(l)) || be.proc.exitCode !== null, 'the daemon to listen');
      assert.equal(be.proc.exitCode, null, `the daemon exited: ${be.stderr.join('\n')}`);
      let seen = 0;
      let disconnects = 0;
      const disconnected = (): number => {
        for (; seen < be.stdout.length; seen++) if (/front-end \d+ disconnected/.test(be.stdout[seen]!)) disconnects++;
        return disconnects;
      };
      let connections = 0;
      /** Waits until the daemon has let go of every connection so far (it serves one at a time). */
      const idle = () => waitFor(() => disconnected() >= connections, `the daemon to let go of connection ${connections}`);

      const samples: { at: number; s: Sample }[] = [];
      const cuts = new Set<number>();
      const start = Date.now();
      for (let i = 0; i < CYCLES; i++) {
        if (i === WARMUP || (i > WARMUP && i % 250 === 0)) samples.push({ at: i, s: await sample(be) });
        // A whole front-end: handshake, one request, gone.
        const c = await VirtioTestClient.connect({ socketPath, queueSize: SIZE, regions: REGIONS, inflight: i % 2 === 0 });
        connections++;
        try {
          assert.deepEqual(await c.request(i & 0xff), answer(requestFor(i & 0xff)));
        } finally {
          c.close();
        }
        await idle();
        // One that vanishes after a random prefix of its handshake.
        const v = vanish(socketPath, pick);
        cuts.add(v.cut);
        connections++;
        await idle();
      }
      samples.push({ at: CYCLES, s: await sample(be) });
      const seconds = (Date.now() - start) / 1000;
      t.diagnostic(`${2 * CYCLES} connections in ${seconds.toFixed(1)} s; ${cuts.size} distinct cut points`);
      for (const { at, s } of samples) {
        t.diagnostic(`after ${at} cycles: ${s.fds} fds, ${s.memfdMappings} memfd mappings, RSS ${(s.rssKiB / 1024).toFixed(1)} MiB, heap in use ${(s.heapUsedKiB / 1024).toFixed(2)} MiB`);
      }

      const warm = samples[0]!.s;
      const end = samples[samples.length - 1]!.s;
      assert.equal(end.fds, warm.fds, 'open fds back to the warmed-up count');
      assert.equal(warm.memfdMappings, 0, 'no guest memory mapped while idle');
      assert.equal(end.memfdMappings, 0, 'no guest memory mapped while idle (end)');
      assert.ok(end.rssKiB - warm.rssKiB <= RSS_TOLERANCE_KIB, `RSS grew by ${end.rssKiB - warm.rssKiB} KiB (tolerance ${RSS_TOLERANCE_KIB} KiB)`);
      assert.ok(end.heapUsedKiB - warm.heapUsedKiB <= HEAP_TOLERANCE_KIB, `heap in use grew by ${end.heapUsedKiB - warm.heapUsedKiB} KiB (tolerance ${HEAP_TOLERANCE_KIB} KiB)`);
      // Still serving, and nothing the daemon said is a crash or an internal error.
      assert.equal(be.proc.exitCode, null, 'the daemon is running');
      assert.deepEqual(be.stderr.filter((l) => /internal error|device model failed|Uncaught|TypeError|RangeError/.test(l)), []);
      const c = await VirtioTestClient.connect({ socketPath, queueSize: SIZE, regions: REGIONS });
      assert.deepEqual(await c.request(42), answer(requestFor(42)));
      c.close();
    } finally {
      be.proc.kill('SIGTERM');
      const exit = await be.exited;
      tmp.remove();
      assert.deepEqual(exit, { code: 0, signal: null }, 'SIGTERM ends it cleanly');
    }
  });
});
