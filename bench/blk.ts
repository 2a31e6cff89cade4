/**
 * Section "blk": virtio-blk served by our TypeScript back-end (`virtio-backend --device blk`, a
 * Node process) against qemu-storage-daemon (Debian's qemu-utils: QEMU's block layer behind a
 * vhost-user-blk export on libvhost-user, C), on the same image file, in two parts.
 *
 * 1. Back-end bound. Our C load generator (bench/ref/vhost-user-blk-load.c, a vhost-user
 *    front-end + virtio-blk driver: indirect descriptors, event idx, FLUSH negotiated so both
 *    back-ends run a writeback cache) keeps DEPTH requests in flight on each of 1 or 2 queues:
 *    4 KiB random reads and 4 KiB random writes at depth 1, 32 and 128 per queue, 1 MiB
 *    sequential reads at depth 1 and 8 (one queue, one data descriptor each), and 256 KiB
 *    sequential reads in 64 segments of 4 KiB at depth 4 (1 MiB in flight, as a guest's
 *    O_DIRECT buffer of 4 KiB pages arrives). Windows: 600 ms at depth 1, else 400 ms, after
 *    100 ms of warm-up on each connection. Both back-ends run side by side for the
 *    whole part, pinned to cpu 1 (every thread: the main loop and the I/O thread pool), the load
 *    generator on cpu 0; every configuration is measured on the two back to back, in an order
 *    that alternates configuration by configuration and round by round, with the same random
 *    offsets (same seed) for both. Per back-end and window: requests/s (bytes/s for the
 *    sequential reads), CPU
 *    per request (its process CPU clock: all threads, exited ones included) and sleeps per
 *    request (voluntary context switches of its threads). Figures are medians of per-round
 *    paired ratios TS/qemu-storage-daemon. Targets: requests/s (bytes/s) ≥ 0.9×, and for the
 *    4 KiB configurations CPU per request ≤ 1.5× (the ratio column shows qsd/TS for CPU, so its
 *    target reads ≥ 0.667×).
 *    Each back-end first serves three throwaway connections (a daemon's steady state: V8's
 *    JIT, qemu-storage-daemon's thread pool).
 * 2. End to end. The QEMU 7.2 guest (src/machine/qemu.ts, TCG unless /dev/kvm is writable, 2
 *    vCPUs, vhost-user-blk-pci with 2 queues) runs busybox dd with O_DIRECT against /dev/vda:
 *    5000 reads of 4 KiB, 3000 writes of 4 KiB, 3 × 256 MiB in reads of 1 MiB, and 2 × 2500
 *    reads of 4 KiB by two dd at once (one per vCPU, so both queues). No target: the ratios
 *    are printed. Each is timed inside the guest (CLOCK_MONOTONIC from /proc/timer_list's
 *    "now at", ns; busybox date has no %N); one boot per back-end and round, alternated. The
 *    back-end is unpinned here (QEMU's two TCG vCPU threads need both CPUs); its CPU between
 *    the guest's begin and end lines is read from /proc (schedstat).
 *
 * The image: 256 MiB of pseudo-random bytes in build/bench (VIRTIO_BENCH_BLK_DIR to choose; see
 * imageDir() for why not tmpfs), synced and read once so every page is in the page cache. Cache mode, both back-ends: buffered I/O through the host page cache
 * (TS without --direct; qemu-storage-daemon `cache.direct=off`, its default, as
 * test/helpers/qemu.ts starts it; aio=threads, the default). qemu-storage-daemon also gets
 * `locking=off`: both daemons have the image open at once, and our back-end takes QEMU's image
 * locks, so qsd's own locking would refuse the second opener (locks are taken at open only).
 *
 *   node dist/bench/blk.js [--rounds 5] [--quick] [--syscalls]
 *
 * Rounds: `rounds` (5 in run.ts, ~1.7 min) for part 1, min(rounds, 3) for part 2 (~1.5 min under
 * TCG). --quick: one round of each, 200 ms windows, smaller guest runs (~50 s).
 *
 * --syscalls (alone, not part of run.ts): system calls per request of each back-end, for
 * docs/performance-blk.md: `strace -c -f -p PID` (per-call breakdown; ptrace slows the
 * back-end, which changes batching at depth > 1) and `perf stat -e raw_syscalls:sys_enter`
 * (the total, undisturbed), over one connection each.
 */
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { accessSync, closeSync, constants, existsSync, fdatasyncSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { findQemuGuest, runQemu, type QemuGuest } from '../src/machine/qemu.js';
import { runIfMain, median, type Row, type SectionOptions } from './report.js';
import { buildRef, cpuSecondsBetween, distRoot, loadavg, pinned, procCpu, repoRoot, type CpuReading } from './vhost-user/proc.js';

const run$ = promisify(execFile);
const BACKEND_CPU = 1;
const LOAD_CPU = 0;
const IMAGE_BYTES = 256 << 20;
const QUEUES = 2;
/** Rounds of the end-to-end part (at most). */
const E2E_ROUNDS = 3;
/** CPU per request TS/qsd ≤ 1.5×: the table's ratio is qsd/TS, so ≥ 1/1.5 (rounded for the table: 1.4993×). */
const CPU_TARGET = 0.667;

/** ts: ours with its default aio=auto (io_uring for small transfers), tst: ours with aio=threads (libuv's pool), qsd: qemu-storage-daemon. */
type Kind = 'ts' | 'tst' | 'qsd';
const LABEL: Record<Kind, string> = { ts: 'TS', tst: 'TS (aio=threads)', qsd: 'qemu-storage-daemon' };
/** Part 1 measures all three; part 2 (a guest boot per back-end) ours with its default and qsd. */
const KINDS: Kind[] = ['ts', 'tst', 'qsd'];
const E2E_KINDS: Kind[] = ['ts', 'qsd'];

/** OP r: random reads, w: random writes, m: 50/50, s: sequential reads; depth per queue. */
interface Config {
  op: 'r' | 'w' | 'm' | 's';
  queues: number;
  depth: number;
  bs: number;
  /** Data descriptors per request (default 1). */
  segs?: number;
}
const cfgArg = (c: Config) => `${c.op}:${c.queues}:${c.depth}:${c.bs}${c.segs ? `:${c.segs}` : ''}`;
const OP_NAME = { r: 'random read', w: 'random write', m: 'random 50/50', s: 'sequential read' } as const;
const sizeName = (bs: number) => (bs >= 1 << 20 ? `${bs >> 20} MiB` : `${bs >> 10} KiB`);
const cfgName = (c: Config) =>
  `${sizeName(c.bs)} ${OP_NAME[c.op]}${c.segs ? ` in ${c.segs} segments of ${sizeName(c.bs / c.segs)}` : ''}, ${c.queues} queue${c.queues > 1 ? 's' : ''} × depth ${c.depth}`;
/** Sequential configurations are reported in bytes/s. */
const byBytes = (c: Config) => c.op === 's';

const MAIN_CONFIGS: Config[] = [
  ...(['r', 'w'] as const).flatMap((op) => [1, 2].flatMap((queues) => [1, 32, 128].map((depth): Config => ({ op, queues, depth, bs: 4096 })))),
  { op: 's', queues: 1, depth: 1, bs: 1 << 20 },
  { op: 's', queues: 1, depth: 8, bs: 1 << 20 },
  // 1 MiB in flight as a guest's O_DIRECT buffer arrives: 4 KiB pages, split into requests
  // within seg_max (qemu-storage-daemon's is 126, ours 254).
  { op: 's', queues: 1, depth: 4, bs: 256 << 10, segs: 64 },
];
/** Throwaway connections after start-up (150 ms each). */
const WARM_UP_CONFIGS: Config[] = [
  { op: 'm', queues: 2, depth: 128, bs: 4096 },
  { op: 's', queues: 1, depth: 8, bs: 1 << 20 },
  { op: 'm', queues: 1, depth: 1, bs: 4096 },
];

/** One JSON line of the load generator. */
interface LoadResult {
  op: string;
  queues: number;
  depth: number;
  bs: number;
  requests: number;
  bytes: number;
  seconds: number;
  backendCpu: number;
  backendVcsw: number;
  threadsStart: number;
  threadsEnd: number;
  threadsGone: number;
  frontendCpu: number;
  total: number;
  bad: number;
}
interface Sample {
  rps: number;
  bps: number;
  cpuUs: number;
  sleeps: number;
  busy: number;
  threads: number;
  /** Threads that exited within the window (their sleeps are not counted). */
  gone: number;
}

// ------------------------------------------------------------------ the image and the back-ends

/**
 * Where the images are made: VIRTIO_BENCH_BLK_DIR, else build/bench — an ordinary file system
 * (ext4 here), where disk images live. Not /dev/shm by default: tmpfs refuses RWF_NOWAIT
 * (EOPNOTSUPP on Linux 6.18), so io_uring hands every tmpfs read to its io-wq worker threads
 * instead of completing it inline, a path no image on a disk file system takes
 * (docs/performance-blk.md, "The image's file system"). VIRTIO_BENCH_BLK_DIR=/dev/shm measures it.
 */
function imageDir(): string {
  const dir = process.env.VIRTIO_BENCH_BLK_DIR ?? path.join(repoRoot, 'build', 'bench');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * 256 MiB images of pseudo-random bytes (no holes), the same bytes written the same way to each
 * of `names` (so their page-cache layouts match), synced, then read once: every page is in the
 * page cache, clean, before any back-end starts.
 */
function makeImages(names: string[]): string[] {
  const dir = imageDir();
  const files = names.map((n) => path.join(dir, `vt-bench-blk-${process.pid}${n}.img`));
  const fds = files.map((f) => openSync(f, 'w+'));
  try {
    const chunk = Buffer.alloc(1 << 20);
    for (let off = 0; off < IMAGE_BYTES; off += chunk.length) {
      randomFillSync(chunk, 0, 4096);
      for (let i = 4096; i < chunk.length; i += 4096) chunk.copy(chunk, i, 0, 4096);
      chunk.writeUInt32LE(off >>> 12, 0);
      for (const fd of fds) writeSync(fd, chunk, 0, chunk.length, off);
    }
    for (const fd of fds) {
      fdatasyncSync(fd);
      for (let off = 0; off < IMAGE_BYTES; off += chunk.length) readSync(fd, chunk, 0, chunk.length, off);
    }
  } finally {
    fds.forEach((fd) => closeSync(fd));
  }
  return files;
}

interface Blk {
  kind: Kind;
  pid: number;
  socket: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

const qsdBinary = () => process.env.VT_QSD ?? 'qemu-storage-daemon';
const optValue = (s: string) => s.replace(/,/g, ',,');

function blkArgv(kind: Kind, image: string, socket: string): string[] {
  if (kind === 'ts' || kind === 'tst') {
    // ts: the default engine (aio=auto: io_uring up to 64 KiB, the pool above); tst: the pool alone.
    const aio = kind === 'ts' ? [] : ['--aio', 'threads'];
    return [process.execPath, path.join(distRoot, 'src', 'cli', 'virtio-backend.js'), '--device', 'blk', '--socket-path', socket, '--image', image, '--num-queues', String(QUEUES), ...aio, '--quiet'];
  }
  return [
    qsdBinary(),
    '--blockdev',
    `driver=file,node-name=f,filename=${optValue(image)},cache.direct=off,locking=off`,
    '--export',
    `type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=${optValue(socket)},writable=on,num-queues=${QUEUES}`,
  ];
}

/** Whether something accepts connections on `socket`. */
function accepts(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.createConnection(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/**
 * Starts a back-end (pinned to `cpu` when given) and resolves once it accepts connections:
 * TS after its "listening on" line, qemu-storage-daemon once a connection succeeds. The probe
 * connection of qsd is a front-end that leaves at once; both daemons serve the next one.
 */
async function startBlk(kind: Kind, image: string, dir: string, cpu?: number): Promise<Blk> {
  const socket = path.join(dir, `${kind}.sock`);
  rmSync(socket, { force: true });
  const argv = pinned(cpu, blkArgv(kind, image, socket));
  const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: string) => {
    if (out.length < 8000) out += d;
  };
  proc.stdout!.setEncoding('utf8').on('data', keep);
  proc.stderr!.setEncoding('utf8').on('data', keep);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let gone = false;
  void exited.then(() => (gone = true));
  const stop = async () => {
    if (!gone) {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (gone) throw new Error(`${LABEL[kind]} exited before listening: ${out}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${LABEL[kind]} did not start listening within 15 s: ${out}`);
    }
    if (kind !== 'qsd' ? /listening on /.test(out) : existsSync(socket) && (await accepts(socket))) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return { kind, pid: proc.pid!, socket, proc, stop };
}

async function runLoad(loadBin: string, be: Blk, configs: Config[], ms: number, warm: number, seed: number, cpu: number | undefined = LOAD_CPU): Promise<LoadResult[]> {
  const argv = pinned(cpu, [loadBin, '--socket', be.socket, '--backend-pid', String(be.pid), '--size', String(IMAGE_BYTES), '--configs', configs.map(cfgArg).join(','), '--ms', String(ms), '--warm', String(warm), '--seed', String(seed)]);
  const { stdout } = await run$(argv[0]!, argv.slice(1), { maxBuffer: 1 << 20, timeout: 120_000 });
  return stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as LoadResult);
}

// ------------------------------------------------------------------ end to end (QEMU guest)

interface E2eTest {
  name: string;
  what: string;
  /** Requests (dd blocks) and bytes the test moves. */
  requests: number;
  bytes: number;
  /** Shell lines (functions of the guest script). */
  cmd: string;
}

function e2eTests(quick: boolean): E2eTest[] {
  const n4 = quick ? 1500 : 5000;
  const w4 = quick ? 1000 : 3000;
  const passes = quick ? 1 : 3; // 1 MiB reads of the whole 256 MiB disk
  const par = quick ? 750 : 2500; // per dd, two at once
  const mib = IMAGE_BYTES >> 20;
  return [
    { name: 'r4k', what: `dd bs=4k count=${n4} iflag=direct (reads)`, requests: n4, bytes: n4 * 4096, cmd: `dd if=/dev/vda of=/dev/null bs=4k count=${n4} iflag=direct` },
    { name: 'w4k', what: `dd bs=4k count=${w4} oflag=direct (writes)`, requests: w4, bytes: w4 * 4096, cmd: `dd if=/dev/zero of=/dev/vda bs=4k count=${w4} oflag=direct` },
    { name: 'r1m', what: `dd bs=1M count=${mib} iflag=direct (reads) × ${passes}`, requests: passes * mib, bytes: passes * IMAGE_BYTES, cmd: `for i in $(seq ${passes});do dd if=/dev/vda of=/dev/null bs=1M count=${mib} iflag=direct||exit 1;done` },
    {
      name: 'r4k2',
      what: `2 × dd bs=4k count=${par} iflag=direct at once (one per vCPU)`,
      requests: 2 * par,
      bytes: 2 * par * 4096,
      cmd: `taskset 1 dd if=/dev/vda of=/dev/null bs=4k count=${par} iflag=direct & taskset 2 dd if=/dev/vda of=/dev/null bs=4k count=${par} skip=${par} iflag=direct & wait`,
    },
  ];
}

/** The guest's script: the queue limits, then each test between E2E_BEGIN and E2E_END <ns>. */
function e2eScript(tests: E2eTest[]): string {
  return [
    'T(){ grep -m1 "^now at" /proc/timer_list|cut -d" " -f3;}',
    'q=/sys/block/vda/queue;echo "E2E_LIMITS $(cat $q/max_sectors_kb) $(cat $q/max_segments) $(cat $q/max_segment_size) $(ls /sys/block/vda/mq|wc -l)"',
    ...tests.map((t) => `echo E2E_BEGIN ${t.name};a=$(T);(${t.cmd}) 2>/dev/null||{ echo E2E_FAIL ${t.name};exit 1;};b=$(T);echo "E2E_END ${t.name} $((b-a))"`),
  ].join('\n');
}

interface E2eSample {
  seconds: number;
  cpuUs: number;
}

async function e2eBoot(guest: QemuGuest, be: Blk, tests: E2eTest[]): Promise<{ samples: Map<string, E2eSample>; limits: string }> {
  const cpuAt = new Map<string, CpuReading>();
  const cpuUs = new Map<string, number>();
  const r = await runQemu({
    guest,
    command: ['sh', '-c', e2eScript(tests)],
    vhostUser: [{ socket: be.socket, device: `vhost-user-blk-pci,num-queues=${QUEUES}` }],
    cpus: 2,
    timeoutMs: 180_000,
    onLine: (l) => {
      const m = /^E2E_(BEGIN|END) (\S+)/.exec(l);
      if (!m) return;
      const t = tests.find((x) => x.name === m[2]);
      if (!t) return;
      if (m[1] === 'BEGIN') cpuAt.set(t.name, procCpu(be.pid));
      else cpuUs.set(t.name, (cpuSecondsBetween(cpuAt.get(t.name)!, procCpu(be.pid)) / t.requests) * 1e6);
    },
  });
  const samples = new Map<string, E2eSample>();
  for (const line of r.lines) {
    const m = /^E2E_END (\S+) (\d+)/.exec(line);
    if (m) samples.set(m[1]!, { seconds: Number(m[2]) / 1e9, cpuUs: cpuUs.get(m[1]!) ?? NaN });
  }
  if (r.exitCode !== 0 || samples.size !== tests.length) {
    throw new Error(`blk e2e with ${LABEL[be.kind]} failed (exit ${r.exitCode}):\n${r.lines.join('\n')}\n${r.bootLines.slice(-15).join('\n')}`);
  }
  const limits = r.lines.find((l) => l.startsWith('E2E_LIMITS '))?.slice(11) ?? '?';
  return { samples, limits };
}

// ------------------------------------------------------------------ the section

const fmtRatio = (xs: number[]) => `${median(xs).toFixed(2)}×${xs.length > 1 ? ` (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})` : ''}`;
const k = (x: number) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${(x / 1e3).toFixed(x >= 1e5 ? 0 : 1)} k`);
const gbs = (x: number) => `${(x / 1e9).toFixed(2)} GB/s`;
const us = (x: number) => x.toFixed(x >= 100 ? 0 : x >= 10 ? 1 : 2);
const pct = (x: number) => `${Math.round(x * 100)}%`;

export async function run(opts: SectionOptions): Promise<Row[]> {
  const section = 'blk';
  const rows: Row[] = [];
  if (spawnSync(qsdBinary(), ['--version']).status !== 0) {
    opts.log('blk: SKIPPED: qemu-storage-daemon not found (apt-get install -y qemu-utils)');
    return [{ section, name: 'SKIPPED: qemu-storage-daemon not found (apt-get install -y qemu-utils)', unit: '', samples: [] }];
  }
  // --quick: one round of each part, shorter windows and guest runs (a smoke test).
  const rounds = opts.quick ? 1 : opts.rounds;
  const msFor = (c: Config) => (opts.quick ? 200 : c.depth === 1 && !byBytes(c) ? 600 : 400);
  const warm = opts.quick ? 80 : 100;
  const loadBin = buildRef('vhost-user-blk-load', opts.log);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vubench-blk-'));
  // Our two engines run at once and each locks its image (qsd runs with locking=off): two images.
  const [image, imageThreads] = makeImages(['', '-threads']) as [string, string];
  const dropImage = () => {
    rmSync(image, { force: true });
    rmSync(imageThreads, { force: true });
  };
  process.once('exit', dropImage);
  const samples = new Map<string, Sample[]>();
  const key = (kind: Kind, c: Config) => `${kind}/${cfgArg(c)}`;
  const get = (kind: Kind, c: Config) => samples.get(key(kind, c)) ?? [];
  const t0 = Date.now();
  opts.log(`blk: TS and qemu-storage-daemon on cpu ${BACKEND_CPU}, C load on cpu ${LOAD_CPU}; image ${image} (${IMAGE_BYTES >> 20} MiB, page cache); ${rounds} rounds (end to end: ${Math.min(rounds, E2E_ROUNDS)}); load average ${loadavg()}`);
  const e2eRows: Row[] = [];
  try {
    // Part 1: back-end bound.
    const bes: Blk[] = [];
    try {
      for (const kind of KINDS) bes.push(await startBlk(kind, kind === 'tst' ? imageThreads : image, dir, BACKEND_CPU));
      for (const be of bes) await runLoad(loadBin, be, WARM_UP_CONFIGS, 150, 50, 1);
      for (let round = 1; round <= rounds; round++) {
        for (const [i, c] of MAIN_CONFIGS.entries()) {
          const order = (round + i) % 2 ? bes : [...bes].reverse();
          const seed = round * 1000 + i + 7;
          for (const be of order) {
            const [r] = await runLoad(loadBin, be, [c], msFor(c), warm, seed);
            const s: Sample = {
              rps: r!.requests / r!.seconds,
              bps: r!.bytes / r!.seconds,
              cpuUs: (r!.backendCpu / r!.requests) * 1e6,
              sleeps: r!.backendVcsw < 0 ? NaN : r!.backendVcsw / r!.requests,
              busy: r!.backendCpu / r!.seconds,
              threads: r!.threadsEnd,
              gone: r!.threadsGone,
            };
            const kk = key(be.kind, c);
            (samples.get(kk) ?? samples.set(kk, []).get(kk)!).push(s);
          }
        }
        const line = (kind: Kind) => MAIN_CONFIGS.map((c) => `${c.op}${c.queues}/${c.depth}${byBytes(c) ? `/${sizeName(c.bs).replace(' ', '')}${c.segs ? `/${c.segs}` : ''}` : ''} ${byBytes(c) ? gbs(get(kind, c).at(-1)!.bps) : k(get(kind, c).at(-1)!.rps)}`).join(' ');
        opts.log(`blk: round ${round}/${rounds}: TS ${line('ts')}`);
        opts.log(`blk: round ${round}/${rounds}: TS threads ${line('tst')}`);
        opts.log(`blk: round ${round}/${rounds}: qsd ${line('qsd')}; ${((Date.now() - t0) / 1000).toFixed(0)} s so far`);
      }
    } finally {
      await Promise.all(bes.map((be) => be.stop()));
    }

    // Part 2: end to end.
    const guest = findQemuGuest(repoRoot);
    const haveQemu = spawnSync(process.env.VT_QEMU ?? 'qemu-system-x86_64', ['--version']).status === 0;
    if (!guest || !haveQemu) {
      const why = !guest ? 'QEMU guest not built (bash guest/qemu/build.sh)' : 'qemu-system-x86_64 not found';
      opts.log(`blk: end to end SKIPPED: ${why}`);
      e2eRows.push({ section, name: `end to end SKIPPED: ${why}`, unit: '', samples: [] });
    } else {
      const tests = e2eTests(opts.quick);
      const e2eRounds = Math.min(rounds, E2E_ROUNDS);
      const e2e = new Map<string, E2eSample[]>();
      const limits = new Map<Kind, string>();
      let accel = 'tcg';
      try {
        accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
        accel = 'kvm';
      } catch {}
      if (process.env.VT_QEMU_ACCEL) accel = process.env.VT_QEMU_ACCEL;
      for (let round = 1; round <= e2eRounds; round++) {
        const order = round % 2 ? E2E_KINDS : [...E2E_KINDS].reverse();
        const parts: string[] = [];
        for (const kind of order) {
          const be = await startBlk(kind, image, dir);
          try {
            await runLoad(loadBin, be, WARM_UP_CONFIGS, 150, 50, 1, undefined);
            const { samples: got, limits: lim } = await e2eBoot(guest, be, tests);
            limits.set(kind, lim);
            for (const [name, s] of got) {
              const kk = `${kind}/${name}`;
              (e2e.get(kk) ?? e2e.set(kk, []).get(kk)!).push(s);
            }
            parts.push(`${LABEL[kind]} ${tests.map((t) => `${t.name} ${got.get(t.name)!.seconds.toFixed(2)} s`).join(' ')}`);
          } finally {
            await be.stop();
          }
        }
        opts.log(`blk: e2e round ${round}/${e2eRounds} (${accel}): ${parts.join(' | ')}; ${((Date.now() - t0) / 1000).toFixed(0)} s so far`);
      }
      for (const t of tests) {
        const ts = e2e.get(`ts/${t.name}`)!;
        const q = e2e.get(`qsd/${t.name}`)!;
        const inBytes = t.bytes / t.requests >= 1 << 20;
        const rate = (s: E2eSample) => (inBytes ? t.bytes : t.requests) / s.seconds;
        e2eRows.push({
          section,
          name: `end to end (QEMU ${accel}, 2 vCPUs, guest-timed): ${t.what}, TS`,
          unit: inBytes ? 'bytes/s' : 'requests/s',
          samples: ts.map(rate),
          ref: { name: 'qemu-storage-daemon', samples: q.map(rate) },
          paired: ts.map((s, i) => rate(s) / rate(q[i]!)),
          note:
            `guest seconds TS ${median(ts.map((s) => s.seconds)).toFixed(2)}, qsd ${median(q.map((s) => s.seconds)).toFixed(2)}; ` +
            `backend CPU µs per dd block TS ${us(median(ts.map((s) => s.cpuUs)))}, qsd ${us(median(q.map((s) => s.cpuUs)))} (TS/qsd ${fmtRatio(ts.map((s, i) => s.cpuUs / q[i]!.cpuUs))})` +
            (t === tests[0] ? `; guest queue limits (max_sectors_kb max_segments max_segment_size hw queues): TS ${limits.get('ts')}, qsd ${limits.get('qsd')}` : ''),
        });
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    dropImage();
  }
  opts.log(`blk: ${((Date.now() - t0) / 1000).toFixed(0)} s; load average ${loadavg()}`);

  for (const c of MAIN_CONFIGS) {
    const ts = get('ts', c);
    const q = get('qsd', c);
    const big = byBytes(c);
    const rate = (s: Sample) => (big ? s.bps : s.rps);
    const each = (f: (s: Sample) => number, fmt: (x: number) => string) => `TS ${fmt(median(ts.map(f)))}, qsd ${fmt(median(q.map(f)))}`;
    rows.push({
      section,
      name: `TS ${big ? 'bytes/s' : 'requests/s'} (${cfgName(c)})`,
      unit: big ? 'bytes/s' : 'requests/s',
      samples: ts.map(rate),
      ref: { name: 'qemu-storage-daemon', samples: q.map(rate) },
      paired: ts.map((s, i) => rate(s) / rate(q[i]!)),
      target: 0.9,
      note: `${big ? `bytes/s ${each((s) => s.bps, gbs)}; ` : ''}requests/s ${each((s) => s.rps, k)}; CPU busy ${each((s) => s.busy, pct)}; threads ${each((s) => s.threads, String)}`,
    });
    rows.push({
      section,
      name: `TS CPU per request (${cfgName(c)})`,
      unit: 'µs',
      samples: ts.map((s) => s.cpuUs),
      lowerIsBetter: true,
      ref: { name: 'qemu-storage-daemon', samples: q.map((s) => s.cpuUs) },
      paired: ts.map((s, i) => q[i]!.cpuUs / s.cpuUs),
      target: big ? undefined : CPU_TARGET,
      note:
        `TS/qsd = ${fmtRatio(ts.map((s, i) => s.cpuUs / q[i]!.cpuUs))} paired${big ? '' : ' (target ≤ 1.5×)'}; µs/request ${each((s) => s.cpuUs, us)}; sleeps/request ${each((s) => s.sleeps, (x) => x.toFixed(2))}` +
        (ts.concat(q).some((s) => s.gone > 0) ? ` (threads exited in windows: TS ${ts.reduce((a, s) => a + s.gone, 0)}, qsd ${q.reduce((a, s) => a + s.gone, 0)}; their sleeps are missing)` : ''),
    });
    // The engines against each other: what io_uring saves over libuv's thread pool.
    const th = get('tst', c);
    if (th.length === ts.length && th.length > 0) {
      rows.push({
        section,
        name: `TS aio=auto vs aio=threads, CPU per request (${cfgName(c)})`,
        unit: 'µs',
        samples: ts.map((s) => s.cpuUs),
        lowerIsBetter: true,
        ref: { name: 'TS aio=threads', samples: th.map((s) => s.cpuUs) },
        paired: ts.map((s, i) => th[i]!.cpuUs / s.cpuUs),
        note: `${big ? 'bytes/s' : 'requests/s'} auto/threads ${fmtRatio(ts.map((s, i) => rate(s) / rate(th[i]!)))} paired; threads vs qsd: requests/s ${fmtRatio(th.map((s, i) => s.rps / q[i]!.rps))}, CPU ${fmtRatio(th.map((s, i) => s.cpuUs / q[i]!.cpuUs))}; sleeps/request auto ${median(ts.map((s) => s.sleeps)).toFixed(2)}, threads ${median(th.map((s) => s.sleeps)).toFixed(2)}`,
      });
    }
  }
  rows.push(...e2eRows);
  return rows;
}

// ------------------------------------------------------------------ --syscalls (docs only)

/** strace -c's table: calls per syscall name, and the total. */
function parseStrace(text: string): { total: number; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  let total = 0;
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    // % time, seconds, usecs/call, calls, [errors], syscall
    if (f.length >= 5 && /^\d+\.\d+$/.test(f[0]!) && /^\d+$/.test(f[3]!)) {
      const name = f.at(-1)!;
      if (name === 'total') total = Number(f[3]);
      else calls.set(name, Number(f[3]));
    }
  }
  return { total, calls };
}

/** Per thread of `pid`: its name, on-CPU ns (schedstat), user and system ticks (stat). */
function threadTimes(pid: number): Map<string, { comm: string; ns: number; user: number; sys: number }> {
  const out = new Map<string, { comm: string; ns: number; user: number; sys: number }>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ', 1)[0]);
      out.set(tid, { comm, ns, user: Number(f[11]), sys: Number(f[12]) });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** "main 12.3 µs (user 40%), libuv-worker ×4 8.1 µs …" per request between two readings. */
function threadSplit(a: ReturnType<typeof threadTimes>, b: ReturnType<typeof threadTimes>, requests: number, mainTid: number): string {
  const groups = new Map<string, { n: number; ns: number; user: number; sys: number }>();
  for (const [tid, t] of b) {
    const t0 = a.get(tid) ?? { ns: 0, user: 0, sys: 0 };
    const name = Number(tid) === mainTid ? 'main thread' : t.comm.replace(/[0-9]+$/, '').trim();
    const g = groups.get(name) ?? { n: 0, ns: 0, user: 0, sys: 0 };
    g.n++;
    g.ns += t.ns - t0.ns;
    g.user += t.user - t0.user;
    g.sys += t.sys - t0.sys;
    groups.set(name, g);
  }
  return [...groups.entries()]
    .filter(([, g]) => g.ns / requests >= 0.05e3)
    .sort((x, y) => y[1].ns - x[1].ns)
    .map(([name, g]) => `${name}${g.n > 1 ? ` ×${g.n}` : ''} ${(g.ns / requests / 1e3).toFixed(1)} µs (user ${g.user + g.sys ? Math.round((g.user / (g.user + g.sys)) * 100) : '?'}%)`)
    .join(', ');
}

async function syscalls(log: (s: string) => void): Promise<void> {
  const loadBin = buildRef('vhost-user-blk-load', log);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vubench-blk-'));
  const [image] = makeImages(['']) as [string];
  const configs: Config[] = [
    { op: 'r', queues: 1, depth: 1, bs: 4096 },
    { op: 'w', queues: 1, depth: 1, bs: 4096 },
    { op: 'r', queues: 1, depth: 32, bs: 4096 },
    { op: 'w', queues: 1, depth: 32, bs: 4096 },
    { op: 's', queues: 1, depth: 1, bs: 1 << 20 },
    { op: 's', queues: 1, depth: 4, bs: 256 << 10, segs: 64 },
  ];
  const haveStrace = spawnSync('strace', ['-V']).status === 0;
  const havePerf = spawnSync('perf', ['--version']).status === 0;
  console.log(`${head()}\n`);
  try {
    for (const kind of KINDS) {
      const be = await startBlk(kind, image, dir, BACKEND_CPU);
      try {
        await runLoad(loadBin, be, WARM_UP_CONFIGS, 150, 50, 1);
        for (const c of configs) {
          // Undisturbed total: perf counts the sys_enter tracepoint over the connection.
          let perfLine = 'perf: n/a';
          if (havePerf) {
            const out = path.join(dir, 'perf.txt');
            const perf = spawn('perf', ['stat', '-x', ',', '-e', 'raw_syscalls:sys_enter', '-p', String(be.pid), '-o', out], { stdio: 'ignore' });
            await new Promise((r) => setTimeout(r, 500));
            const before = threadTimes(be.pid);
            const [r] = await runLoad(loadBin, be, [c], 1500, 100, 3);
            const after = threadTimes(be.pid);
            perf.kill('SIGINT');
            await new Promise((res) => perf.once('exit', res));
            const n = Number(/^(\d+),/m.exec(readFileSync(out, 'utf8'))?.[1] ?? NaN);
            perfLine =
              `perf: ${(n / r!.total).toFixed(2)} system calls/request (${r!.total} requests, ${k(r!.requests / r!.seconds)}/s); ` +
              `CPU per request by thread (whole connection): ${threadSplit(before, after, r!.total, be.pid)}`;
          }
          let straceLine = 'strace: n/a';
          if (haveStrace) {
            const out = path.join(dir, 'strace.txt');
            const st = spawn('strace', ['-c', '-f', '-q', '-o', out, '-p', String(be.pid)], { stdio: 'ignore' });
            await new Promise((r) => setTimeout(r, 1000));
            const [r] = await runLoad(loadBin, be, [c], 1500, 100, 3);
            st.kill('SIGINT');
            await new Promise((res) => st.once('exit', res));
            const { total, calls } = parseStrace(readFileSync(out, 'utf8'));
            const top = [...calls.entries()].sort((a, b) => b[1] - a[1]).filter(([, n]) => n / r!.total >= 0.05);
            straceLine = `strace -c -f: ${(total / r!.total).toFixed(2)} system calls/request (${r!.total} requests, ${k(r!.requests / r!.seconds)}/s under ptrace): ${top.map(([name, n]) => `${name} ${(n / r!.total).toFixed(2)}`).join(', ')}`;
          }
          console.log(`${LABEL[kind]}, ${cfgName(c)}:\n  ${perfLine}\n  ${straceLine}`);
        }
      } finally {
        await be.stop();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(image, { force: true });
  }
}

function head(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() + `; load average ${loadavg()}`;
  } catch {
    return `load average ${loadavg()}`;
  }
}

export const section = { name: 'blk', run };

if (process.argv.includes('--syscalls') && process.argv[1] && path.resolve(process.argv[1]) === path.join(distRoot, 'bench', 'blk.js')) {
  await syscalls((l) => console.error(l));
} else {
  await runIfMain(import.meta.url, section, 5);
}
