// Faults under load through a real Linux guest (UML) and its C driver: 8 `virtio-stress` writers
// (64 requests outstanding each: 512 wanted on virtio_uml's ring of 256, so writers sleep on a
// full ring; 0.5 % of their writes and reads preceded by a 0–2 ms sleep) against a back-end made
// slow at random (SlowDevice: 1 % of answers 0–2 ms late, out of order; stalls of 20–100 ms that
// hold every answer due), run as a child daemon (slow-backend-child.ts) and SIGKILLed mid-run: at
// the first stall after a random point between 20 % and 70 % of the requests (so it dies holding
// answers, the ring full), or 3 s after that point if no stall comes. virtio_uml does not
// reconnect: the device is gone in that guest. Every request is accounted for (virtio-stress -a):
//
//  - per writer: sent = ok + failed, sent + unsent = K; bad = 0 (no wrong answer); silent = 0 (no
//    request both unanswered and without an error); a writer that lost requests got EIO or ENODEV
//    (or could not open the removed device: ENOENT/ENODEV, nothing sent);
//  - against the back-end's own record (one byte per request, written before its answer can
//    reach the guest): for every request value, answered-ok ≤ served ≤ sent, so no answer the
//    guest accepted was invented and no request was served twice;
//  - the guest finishes, its device is removed, the kernel is not tainted.
//
// Then a new slow back-end on the stale socket serves a newly booted guest's full run: every
// request answered right, and served exactly once (the record's histogram equals what was sent).
//
//   VT_LONG=1           8 x 100,000 per run (CI, ~8 min); default 8 x 10,000
//   SLOW_UML_COUNT=K    requests per writer;  SLOW_SEED=N  replay a seed (printed)
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { seededRandom, type SlowDeviceOptions } from '../../src/device/slow-device.js';
import { runUml } from '../../src/machine/uml.js';
import { onLines } from '../helpers/lines.js';
import { assertNoKernelTrouble, assertNoUmlLeft, assertSameHistogram, needGuest, scratchDir, stressHistogram, stripTimestamp } from '../helpers/uml.js';

const LONG = process.env.VT_LONG === '1';
const P = 8;
const K = Number(process.env.SLOW_UML_COUNT ?? (LONG ? 100_000 : 10_000));
const SEED = Number(process.env.SLOW_SEED ?? Math.floor(Math.random() * 1e9));
const WINDOW = 64;
const SLOWNESS: SlowDeviceOptions = { randomRate: 0.01, randomMaxMs: 2, stallRate: 1 / 5000, stallMs: [20, 100] };
const GUEST_PAUSE = '5:2000'; // ‰ of writes and reads, longest sleep in µs
// a run's time: UML serves ~2,000–3,000 requests/s here; generous for a loaded machine
const RUN_MS = 60_000 + (P * K) / 0.5;

const children = new Set<ChildProcess>();
after(() => {
  assertNoUmlLeft();
  assert.equal([...children].filter((c) => c.exitCode === null && c.signalCode === null).length, 0, 'back-end children left running');
});

interface SlowBackend {
  proc: ChildProcess;
  lines: string[];
  stderr: string[];
  /** Called with each stdout line (after it is stored). */
  onLine?: (line: string) => void;
  /** The last `slow:` report (SlowDevice's counts). */
  slow: { requests: number; randomDelays: number; stalls: number; stalled: number; maxHeld: number } | null;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Requests served so far (bytes in the record file). */
  served(): number;
  /** Requests served, by value. */
  histogram(): Uint32Array;
}

async function spawnSlowBackend(socket: string, record: string, slowness: SlowDeviceOptions): Promise<SlowBackend> {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'slow-backend-child.js');
  const proc = spawn(process.execPath, [script, socket, record, JSON.stringify(slowness)], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  let listening: () => void = () => {};
  const ready = new Promise<void>((resolve, reject) => {
    listening = resolve;
    void exited.then((e) => reject(new Error(`slow back-end exited (${e.signal ?? e.code}) before listening:\n${be.stderr.join('\n')}`)));
  });
  const be: SlowBackend = {
    proc,
    lines: [],
    stderr: [],
    slow: null,
    exited,
    served: () => (existsSync(record) ? statSync(record).size : 0),
    histogram: () => {
      const h = new Uint32Array(256);
      for (const b of readFileSync(record)) h[b]!++;
      return h;
    },
  };
  onLines(proc.stdout!, (l) => {
    if (l === 'listening') listening();
    if (l.startsWith('slow: ')) be.slow = JSON.parse(l.slice(6)) as SlowBackend['slow'];
    else be.lines.push(l);
    be.onLine?.(l);
  });
  onLines(proc.stderr!, (l) => be.stderr.push(l));
  await ready;
  return be;
}

interface WriterAccount {
  sent: number;
  ok: number;
  bad: number;
  failed: number;
  silent: number;
  unsent: number;
  errno: string;
  unanswered: Map<number, number>;
}

const ACCOUNT = /^virtio-stress\[(\d+)\]: sent=(\d+) ok=(\d+) bad=(\d+) failed=(\d+) silent=(\d+) unsent=(\d+) errno=(\w+) unanswered=([\d:,]*)$/;

/** virtio-stress -a's per-writer lines, the total line and the summary line. */
function accounts(text: string[], k: number) {
  const writers: WriterAccount[] = [];
  for (const l of text) {
    const m = ACCOUNT.exec(l);
    if (!m) continue;
    const [sent, ok, bad, failed, silent, unsent] = m.slice(2, 8).map(Number) as number[];
    const unanswered = new Map<number, number>();
    for (const pair of m[9] ? m[9].split(',') : []) {
      const [v, c] = pair.split(':').map(Number) as [number, number];
      unanswered.set(v, c);
    }
    writers[Number(m[1])] = { sent: sent!, ok: ok!, bad: bad!, failed: failed!, silent: silent!, unsent: unsent!, errno: m[8]!, unanswered };
  }
  const total = /^stress: sent=(\d+) ok=(\d+) bad=(\d+) failed=(\d+) silent=(\d+) unsent=(\d+)$/.exec(text.find((l) => l.startsWith('stress: sent=')) ?? '');
  const summary = new RegExp(`^stress: P=${P} K=${k} ok=(\\d+) bad=(\\d+) lost=(\\d+)$`).exec(text.find((l) => l.startsWith('stress: P=')) ?? '');
  return { writers, total: total?.slice(1).map(Number), summary: summary?.slice(1).map(Number) };
}

/** The values writer i sent as its first `sent` requests (virtio-stress: (i*37 + s*11) & 0xff). */
function sentValues(i: number, sent: number, into: Uint32Array): void {
  for (let s = 0; s < sent; s++) into[(i * 37 + s * 11) & 0xff]!++;
}

const stressCommand = (seed: number, k: number) => `virtio-stress -q -a -t 20 -w ${WINDOW} -s ${seed} -z ${GUEST_PAUSE} ${P} ${k}`;

test(
  `slow back-end SIGKILLed under ${P} x ${K} slow writers: every request answered right or failed with EIO/ENODEV, none missing, none twice (seed ${SEED}); a restarted slow back-end serves a new guest's ${P} x ${K}`,
  { timeout: 2 * RUN_MS + 120_000 },
  async (t) => {
    const g = needGuest(t);
    if (!g) return;
    const tmp = scratchDir('vt-uml-slowkill-');
    const socket = path.join(tmp.dir, 'vt.sock');
    const random = seededRandom(SEED);
    let be: SlowBackend | null = null;
    let watch: NodeJS.Timeout | undefined;
    try {
      // --- run 1: killed at the first stall after a random point between 20 % and 70 % of the requests
      const record1 = path.join(tmp.dir, 'served-1');
      be = await spawnSlowBackend(socket, record1, { ...SLOWNESS, seed: SEED });
      const victim = be;
      const killAt = Math.floor(P * K * (0.2 + 0.5 * random()));
      let killedAt = -1;
      let killedHow = '';
      let armedAt = 0;
      const kill = (how: string) => {
        if (killedAt >= 0) return;
        victim.proc.kill('SIGKILL');
        killedAt = victim.served();
        killedHow = how;
        clearInterval(watch);
      };
      watch = setInterval(() => {
        if (!armedAt && victim.served() >= killAt) armedAt = performance.now();
        if (armedAt && performance.now() - armedAt > 3000) kill('3 s after the aim, no stall meanwhile');
      }, 10);
      victim.onLine = (l) => {
        if (armedAt && l.startsWith('stall ')) kill(`during a ${l.slice(6)} stall`);
      };
      let ready = 0;
      let done = 0;
      const r = await runUml({
        guest: g,
        socket,
        command: [
          'sh',
          '-c',
          `${stressCommand(SEED, K)}; echo "stress rc=$?"; ` +
            'i=0; while [ -e /dev/virtio_misc ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done; ' +
            'test -e /dev/virtio_misc || echo device-gone; ' +
            'test -e /sys/bus/virtio/devices/virtio0 || echo virtio0-removed; ' +
            'echo "tainted=$(cat /proc/sys/kernel/tainted)"; ' +
            'echo "kernel trouble lines: $(dmesg | grep -c -e Oops -e "BUG:" -e "WARNING:" -e "cut here" -e "Call Trace")"',
        ],
        timeoutMs: RUN_MS,
        onLine: (l) => {
          if (l === 'VT_READY') ready = performance.now();
          else if (l.includes('stress: P=')) done = performance.now();
        },
      });
      clearInterval(watch);
      const show = `lines:\n${r.lines.join('\n')}\nboot:\n${r.bootLines.slice(-30).join('\n')}\nbackend stderr:\n${victim.stderr.join('\n')}`;
      assert.deepEqual(await victim.exited, { code: null, signal: 'SIGKILL' }, show);
      assert.ok(killedAt >= killAt, `killed after ${killedAt} requests served (aimed at ${killAt})`);
      assert.equal(r.timedOut, false, show);
      assert.equal(r.exitCode, 0, show);
      const text = r.lines.map(stripTimestamp);
      for (const want of ['stress rc=1', 'device-gone', 'virtio0-removed', 'tainted=0', 'kernel trouble lines: 0']) assert.ok(text.includes(want), `${want}\n${show}`);
      assertNoKernelTrouble([...r.lines, ...r.bootLines]);

      const a = accounts(text, K);
      assert.equal(a.writers.filter(Boolean).length, P, show);
      const sentHist = new Uint32Array(256);
      const unansweredHist = new Uint32Array(256);
      const sum = { sent: 0, ok: 0, failed: 0, unsent: 0 };
      for (const [i, w] of a.writers.entries()) {
        const where = `writer ${i}: ${JSON.stringify({ ...w, unanswered: [...w.unanswered] })}`;
        assert.equal(w.bad, 0, `a wrong answer: ${where}`);
        assert.equal(w.silent, 0, `requests neither answered nor failed: ${where}`);
        assert.equal(w.sent, w.ok + w.failed, where);
        assert.equal(w.sent + w.unsent, K, where);
        if (w.failed + w.unsent > 0) {
          // stopped by the device's removal: EIO (broken) or ENODEV (removed), or the device was already gone at open
          assert.ok(['EIO', 'ENODEV'].includes(w.errno) || (w.sent === 0 && w.errno === 'ENOENT'), where);
        } else assert.equal(w.errno, '0', where);
        assert.equal([...w.unanswered.values()].reduce((x, y) => x + y, 0), w.failed, where);
        sentValues(i, w.sent, sentHist);
        for (const [v, c] of w.unanswered) unansweredHist[v]! += c;
        sum.sent += w.sent;
        sum.ok += w.ok;
        sum.failed += w.failed;
        sum.unsent += w.unsent;
      }
      assert.deepEqual(a.total, [sum.sent, sum.ok, 0, sum.failed, 0, sum.unsent], show);
      assert.deepEqual(a.summary, [sum.ok, 0, sum.failed + sum.unsent], show);
      assert.ok(sum.failed + sum.unsent > 0 && sum.ok > 0, show);

      // against what the killed back-end served: every answer the guest accepted was served, nothing served twice
      const served = victim.histogram();
      const servedTotal = served.reduce((x, y) => x + y, 0);
      const bad: string[] = [];
      for (let v = 0; v < 256; v++) {
        const ok = sentHist[v]! - unansweredHist[v]!;
        if (!(ok <= served[v]! && served[v]! <= sentHist[v]!)) bad.push(`value ${v}: answered ${ok}, served ${served[v]}, sent ${sentHist[v]}`);
      }
      assert.deepEqual(bad.slice(0, 10), [], `${bad.length} request values out of bounds`);
      assert.ok(servedTotal >= killedAt && servedTotal - sum.ok <= sum.failed, `served ${servedTotal}, answered ${sum.ok}, failed ${sum.failed}`);
      assert.ok(victim.slow && victim.slow.randomDelays > 0, `the killed back-end was slow: ${JSON.stringify(victim.slow)}`);
      const seconds1 = (done - ready) / 1000;
      t.diagnostic(
        `run 1: killed ${killedHow}, ${killedAt} served (aimed at ${killAt}); guest: sent ${sum.sent}, ok ${sum.ok}, failed ${sum.failed} ` +
          `(${servedTotal - sum.ok} of them served, answer lost with the back-end), unsent ${sum.unsent}, ` +
          `errnos ${a.writers.map((w) => w.errno).join(',')}; ${seconds1.toFixed(1)} s; back-end ${JSON.stringify(victim.slow)}`,
      );

      // --- run 2: a new slow back-end on the stale socket serves a newly booted guest to completion
      assert.ok(lstatSync(socket).isSocket(), 'stale socket file left by the killed back-end');
      const record2 = path.join(tmp.dir, 'served-2');
      be = await spawnSlowBackend(socket, record2, { ...SLOWNESS, seed: SEED + 1000 });
      ready = done = 0;
      const r2 = await runUml({
        guest: g,
        socket,
        command: ['sh', '-c', stressCommand(SEED + 1, K)],
        timeoutMs: RUN_MS,
        onLine: (l) => {
          if (l === 'VT_READY') ready = performance.now();
          else if (l.includes('stress: P=')) done = performance.now();
        },
      });
      const show2 = `lines:\n${r2.lines.join('\n')}\nboot:\n${r2.bootLines.slice(-30).join('\n')}\nbackend stderr:\n${be.stderr.join('\n')}`;
      assert.equal(r2.timedOut, false, show2);
      assert.equal(r2.exitCode, 0, show2);
      const a2 = accounts(r2.lines.map(stripTimestamp), K);
      assert.deepEqual(a2.summary, [P * K, 0, 0], show2);
      assert.deepEqual(a2.total, [P * K, P * K, 0, 0, 0, 0], show2);
      for (const w of a2.writers) assert.deepEqual([w.sent, w.ok, w.failed, w.unsent, w.errno], [K, K, 0, 0, '0'], show2);
      assertSameHistogram(be.histogram(), stressHistogram(P, K), 'request values served by the restarted back-end');
      assertNoKernelTrouble(r2.bootLines);
      assert.deepEqual(be.stderr, []);
      be.proc.kill('SIGTERM');
      assert.deepEqual(await be.exited, { code: 0, signal: null });
      assert.ok(be.slow && be.slow.requests === P * K && be.slow.randomDelays > 0 && be.slow.stalls > 0, JSON.stringify(be.slow));
      assert.equal(existsSync(socket), false, 'no socket file left');
      const seconds2 = (done - ready) / 1000;
      t.diagnostic(`run 2: ${P * K} requests in ${seconds2.toFixed(1)} s = ${Math.round((P * K) / seconds2)} requests/s; back-end ${JSON.stringify(be.slow)}`);
    } finally {
      clearInterval(watch);
      if (be && be.proc.exitCode === null && be.proc.signalCode === null) {
        be.proc.kill('SIGKILL');
        await be.exited;
      }
      tmp.remove();
    }
  },
);
