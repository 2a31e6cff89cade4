/**
 * `virtio --count K` at scale: every response exactly once, output streamed with backpressure,
 * memory flat as the count grows. (1,000,000 used to lose 64 responses and never exit: console
 * lines piled up in worker message queues and the last ones died with the threads.)
 * The documented maximum, 10,000,000, runs with VT_LONG=1 (about 3 minutes here).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { cliPath } from '../helpers/paths.js';

const long = process.env.VT_LONG === '1';

interface Summary {
  requests: number;
  responses: number;
  verified: number;
  mismatched: number;
  exitCode: number;
  seconds: number;
  maxRssMiB: number;
}

function jsonRun(count: number): Summary {
  const r = spawnSync(process.execPath, [cliPath('virtio'), '--json', '--count', String(count), '10'], { encoding: 'utf8', timeout: 900_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Summary;
}

test('1,000,000 requests through a pipe a slow reader drains: every response once, then exit', { timeout: 300_000 }, async () => {
  const N = 1_000_000;
  const child = spawn(process.execPath, [cliPath('virtio'), '--count', String(N), '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const counts = { requests: 0, responses: 0, acks: 0, other: 0 };
  const seenRet = new Array<number>(256).fill(0);
  let last = '';
  let partial = '';
  let chunks = 0;
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith('QEMU_BACK_END: >>> get type')) counts.requests++;
      else if (line.includes('virtio response ret is ')) {
        counts.responses++;
        seenRet[Number(line.slice(line.lastIndexOf(' ') + 1)) & 0xff]!++;
      } else if (line.includes('test_request_done get ack')) counts.acks++;
      else if (!line.startsWith('QEMU_BACK_END') && !/virtio response arg[12] is/.test(line)) counts.other++;
      if (line !== '') last = line;
    }
    // now and then the reader stalls: the pipe fills and the machine must wait, not buffer
    if (++chunks % 200 === 0) {
      child.stdout.pause();
      setTimeout(() => child.stdout.resume(), 20);
    }
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, stderr);
  assert.equal(counts.requests, N);
  assert.equal(counts.responses, N);
  // values 0..255 in turn, so every residue of ret (value + 101) comes equally often
  assert.ok(seenRet.every((c) => c === N / 256 || c === Math.floor(N / 256) || c === Math.ceil(N / 256)), 'responses spread over every value');
  assert.ok(counts.acks >= 1 && counts.acks <= N);
  assert.equal(counts.other, 1, 'only the summary line besides request/response lines');
  assert.equal(last, `virtio: ${N} requests, ${N} responses verified`);
});

test('memory stays flat as the count grows (--json reports the peak RSS)', { timeout: 300_000 }, () => {
  const small = jsonRun(100_000);
  const large = jsonRun(1_000_000);
  for (const [s, n] of [[small, 100_000], [large, 1_000_000]] as const) {
    assert.equal(s.requests, n);
    assert.equal(s.verified, n);
    assert.equal(s.mismatched, 0);
    assert.equal(s.exitCode, 0);
  }
  // 10x the requests: at most 30 % (+16 MiB of allocator slack) more memory
  assert.ok(large.maxRssMiB < small.maxRssMiB * 1.3 + 16, `RSS ${small.maxRssMiB} MiB at 100k, ${large.maxRssMiB} MiB at 1M`);
  assert.ok(large.maxRssMiB < 256, `RSS ${large.maxRssMiB} MiB`);
});

test('the documented maximum, 10,000,000 requests (VT_LONG=1)', { skip: long ? false : 'set VT_LONG=1 (about 3 minutes)', timeout: 1_800_000 }, () => {
  const s = jsonRun(10_000_000);
  assert.equal(s.verified, 10_000_000);
  assert.ok(s.maxRssMiB < 256, `RSS ${s.maxRssMiB} MiB`);
  console.log(`10,000,000 requests: ${s.seconds} s, peak RSS ${s.maxRssMiB} MiB`);
});
