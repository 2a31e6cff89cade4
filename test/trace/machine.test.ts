/**
 * Tracing the embedded machine end to end (`virtio … --trace`, `--trace-file`), and `--stats`.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { DEVICE_PID, DRIVER_PID } from '../../src/trace/chrome.js';
import { cliPath, normaliseTimestamps, repoRoot } from '../helpers/paths.js';
import { checkChromeTrace, type TraceEventJson } from '../helpers/chrome-trace.js';

const dir = mkdtempSync(path.join(tmpdir(), 'virtio-trace-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const run = (...args: string[]) =>
  spawnSync(process.execPath, [cliPath('virtio'), ...args], { encoding: 'utf8', timeout: 300_000, maxBuffer: 256 << 20 });

const LINE = /^\d+\.\d{6} (guest|device|main) [a-z_]+( [a-z_]+=\S+)*$/;

describe('virtio --trace (embedded machine)', () => {
  it("text lines on stderr, only the selected events; stdout is the seed's run as without tracing", () => {
    const r = run('10', '--trace', 'virtqueue_*', '--trace=vring_add');
    assert.equal(r.status, 0, r.stderr);
    const golden = readFileSync(path.join(repoRoot, 'test', 'golden', 'seed-run-result.txt'), 'utf8');
    assert.equal(normaliseTimestamps(r.stdout), normaliseTimestamps(golden));
    const lines = r.stderr.split('\n').filter((l) => /^\d/.test(l));
    for (const l of lines) assert.match(l, LINE);
    const names = lines.map((l) => l.split(' ')[2]);
    assert.deepEqual(names, ['vring_add', 'virtqueue_kick', 'virtqueue_pop', 'virtqueue_fill', 'virtqueue_flush', 'virtqueue_get_buf']);
    assert.match(lines[0]!, / guest vring_add vq=0 head=0 out_num=1 in_num=1 avail_idx=1 indirect=1$/);
    assert.match(lines[2]!, / device virtqueue_pop vq=0 elem=0 in_num=1 out_num=1$/);
    const times = lines.map((l) => Number(l.split(' ')[0]));
    assert.ok(times.every((t, i) => i === 0 || t >= times[i - 1]!), 'merged by time');
  });

  it('a bare --trace traces every event, MMIO accesses decoded by register name', () => {
    const r = run('--trace', '10');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^\d+\.\d{6} device virtio_mmio_read offset=0x0 reg=MagicValue size=4 value=0x74726976$/m);
    assert.match(r.stderr, /^\d+\.\d{6} device virtio_mmio_write_offset offset=0x50 reg=QueueNotify|device virtio_queue_notify vdev=\d+ n=0$/m);
    assert.match(r.stderr, /device virtio_set_status vdev=\d+ val=15 status=ACKNOWLEDGE\|DRIVER\|DRIVER_OK\|FEATURES_OK$/m);
    assert.match(r.stderr, /guest vring_interrupt vq=0 pending=1$/m);
  });

  it('events=FILE, and refused selections (exit 2, close names, no stack trace)', () => {
    const file = path.join(dir, 'events');
    writeFileSync(file, '# device side only\nvirtqueue_*\n-virtqueue_kick*\n');
    const r = run('10', '--trace', `events=${file}`);
    assert.equal(r.status, 0, r.stderr);
    const names = new Set(r.stderr.split('\n').filter((l) => /^\d/.test(l)).map((l) => l.split(' ')[2]));
    assert.deepEqual([...names].sort(), ['virtqueue_fill', 'virtqueue_flush', 'virtqueue_get_buf', 'virtqueue_pop']);
    for (const [args, msg] of [
      [['--trace', 'virtqueue_pops', '10'], /no trace event matches 'virtqueue_pops' \(did you mean virtqueue_pop\?\)/],
      [['--trace', `events=${path.join(dir, 'none')}`, '10'], /--trace events=.*none: ENOENT/],
      [['--trace', 'virtio_*', '--machine', 'uml', '10'], /--trace applies to the embedded machine/],
    ] as const) {
      const b = run(...args);
      assert.equal(b.status, 2, args.join(' '));
      assert.match(b.stderr, msg);
      assert.doesNotMatch(b.stderr, /\n\s+at /);
    }
    const help = run('--trace', 'help');
    assert.equal(help.status, 0);
    assert.match(help.stdout, /^virtqueue_pop\(vq, elem, in_num, out_num\)/m);
  });

  it('--trace-file: valid Chrome JSON, both threads on one clock, one request in causal order', () => {
    const file = path.join(dir, 'one.json');
    const r = run('10', '--trace', '*', '--trace-file', file);
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /^\d+\.\d{6} /m, 'no text lines with a file');
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEventJson[] };
    assert.deepEqual(checkChromeTrace(doc), []);
    const ev = doc.traceEvents.filter((e) => e.ph === 'i');
    assert.ok(ev.some((e) => e.pid === DRIVER_PID) && ev.some((e) => e.pid === DEVICE_PID), 'both sides');
    // The request's path, each step at or after the one before (one clock for both threads).
    const chain = ['vring_add', 'virtqueue_kick', 'virtio_queue_notify', 'virtqueue_pop', 'virtqueue_fill', 'virtqueue_flush', 'virtio_notify', 'vring_interrupt', 'virtqueue_get_buf'];
    const sorted = [...ev].sort((a, b) => a.ts! - b.ts!);
    let at = sorted.findIndex((e) => e.name === 'vring_add');
    assert.ok(at >= 0);
    let last = sorted[at]!;
    for (const name of chain.slice(1)) {
      const next = sorted.findIndex((e, i) => i > at && e.name === name);
      assert.ok(next > at, `${name} after ${last.name}`);
      assert.ok(sorted[next]!.ts! >= last.ts!);
      at = next;
      last = sorted[next]!;
    }
    assert.equal(last.args?.['thread'], 'guest');
    // one request span per side, begun and ended
    assert.equal(doc.traceEvents.filter((e) => e.ph === 'b' && e.cat === 'driver').length, 1);
    assert.equal(doc.traceEvents.filter((e) => e.ph === 'e' && e.cat === 'device').length, 1);
  });

  it('100,000 traced requests: bounded memory, every request in the file', { timeout: 300_000 }, async () => {
    const file = path.join(dir, 'many.json');
    const r = run('--json', '--count', '100000', '--trace', '*', '--trace-file', file, '10');
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as { verified: number; maxRssMiB: number };
    assert.equal(summary.verified, 100_000);
    // Rings of 2 × 4 MiB and output chunks of 256 KiB; the file is about 150 MB.
    assert.ok(summary.maxRssMiB < 320, `peak RSS ${summary.maxRssMiB} MiB`);
    let gets = 0;
    let lastLine = '';
    for await (const line of createInterface({ input: createReadStream(file) })) {
      if (line.startsWith('{"name":"virtqueue_get_buf"')) gets++;
      lastLine = line;
    }
    assert.equal(gets, 100_000);
    assert.match(lastLine, /^\],"displayTimeUnit":"ns","otherData":\{.*\}\}$/, 'the file is closed');
    rmSync(file);
  });
});

describe('virtio --stats', () => {
  it("prints the device's state and counters at the end of the run", () => {
    const r = run('--stats', '--quiet', '--count', '100', '10');
    assert.equal(r.status, 0, r.stderr);
    const value = (label: string) => new RegExp(`^\\s+${label}:\\s+(.*)$`, 'm').exec(r.stdout)?.[1];
    assert.equal(value('status'), '0xf (ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK)');
    assert.equal(value('requests'), '100');
    assert.equal(value('bytes'), '4800 read, 1200 written');
    assert.equal(value('last_avail_idx'), '100');
    assert.equal(value('used_idx'), '100');
    assert.equal(value('inuse'), '0');
    assert.equal(value('num'), '256');
    assert.match(value('desc') ?? '', /^0x0000000040000000$/);
    assert.match(value('guest_features') ?? '', /VIRTIO_F_RING_EVENT_IDX/);
    assert.match(r.stdout, /^virtio-test virtqueue 0:$/m);
  });

  it('--json --stats: the same as an object; notifications sent + suppressed = publications', () => {
    const r = run('--json', '--stats', '--count', '1000', '10');
    assert.equal(r.status, 0, r.stderr);
    const s = (JSON.parse(r.stdout) as { stats: { status: number; totals: Record<string, number>; queues: { ring: Record<string, number> }[] } }).stats;
    assert.equal(s.status, 0xf);
    assert.equal(s.totals['requests'], 1000);
    assert.equal(s.totals['errors'], 0);
    assert.ok(s.totals['kicks']! >= 1 && s.totals['kicks']! <= 1000);
    assert.equal(s.totals['notifications']! + s.totals['suppressed']!, s.totals['flushes']);
    assert.ok(s.totals['notifications']! >= 1);
    assert.equal(s.queues[0]!.ring['usedIdx'], 1000);
    assert.equal(s.queues[0]!.ring['availIdx'], 1000);
  });
});
