import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { cliPath, normaliseTimestamps, repoRoot } from '../helpers/paths.js';

const run = (...args: string[]) =>
  spawnSync(process.execPath, [cliPath('virtio'), ...args], { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 << 20 });

test('`virtio 10` prints the seed\'s run result, line for line (timestamps aside)', () => {
  const r = run('10');
  assert.equal(r.status, 0, r.stderr);
  const golden = readFileSync(path.join(repoRoot, 'test', 'golden', 'seed-run-result.txt'), 'utf8');
  assert.equal(normaliseTimestamps(r.stdout), normaliseTimestamps(golden));
  // timestamps are kernel-style and move forward
  const times = [...r.stdout.matchAll(/^\[\s*(\d+\.\d{6})\]/gm)].map((m) => Number(m[1]));
  assert.equal(times.length, 4);
  assert.ok(times.every((t, i) => i === 0 || t >= times[i - 1]!));
  assert.match(r.stderr, /virtio 1\.4 assigns 45 to virtio-spi/);
});

test('no argument or two arguments: the seed program\'s three lines and a non-zero exit', () => {
  for (const args of [[], ['1', '2']]) {
    const r = run(...args);
    assert.notEqual(r.status, 0);
    assert.equal(r.stdout, 'ERROR:please enter two parameters!\neg: ./virtio number\nbut the number between 0 and 255!\n');
  }
});

test('values that are not integers in 0..255 are refused (the seed turns 300 into 44)', () => {
  for (const bad of ['300', '256', '-1', 'x', '1.5', '0x10', '']) {
    const r = run(bad);
    assert.notEqual(r.status, 0, bad);
    assert.equal(r.stdout, 'ERROR:the number must be an integer between 0 and 255!\n', bad);
  }
  for (const good of ['0', '255', '007']) assert.equal(run(good).status, 0, good);
});

test('--ring packed runs the seed program over a packed ring with the same output', () => {
  const r = run('--ring', 'packed', '10');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /virtio response ret is 111/);
});

test('--device rng --json: the whole output is one JSON object with the bytes read', () => {
  const r = run('--device', 'rng', '--count', '4', '--json');
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as { device: string; bytes: number; hex: string };
  assert.equal(summary.device, 'rng');
  assert.equal(summary.bytes, 4);
  assert.match(summary.hex, /^[0-9a-f]{8}$/);
});

test('--version prints the package version', () => {
  const r = run('--version');
  assert.equal(r.status, 0, r.stderr);
  const { version } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.equal(r.stdout, `virtio ${version}\n`);
});

test('bad options get a clear message and exit 2', () => {
  for (const [args, msg] of [
    [['--queue-size', '100', '1'], /--queue-size must be a power of two/],
    [['--queue-size', '65536', '1'], /--queue-size must be an integer from 1 to 32768/],
    [['--count', '0', '1'], /--count must be/],
    [['--device-id', 'abc', '1'], /--device-id must be/],
    [['--machine', 'vm', '1'], /--machine must be/],
    [['--ring', 'ring', '1'], /--ring must be one of split, packed/],
    [['--ring', 'packed', '--machine', 'uml', '1'], /--ring packed needs --machine embedded/],
    [['--device', 'nope', '1'], /--device must be one of/],
    [['--nope', '1'], /Unknown option/],
  ] as const) {
    const r = run(...args);
    assert.equal(r.status, 2, args.join(' '));
    assert.match(r.stderr, msg);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('--help documents every option', () => {
  const r = run('--help');
  assert.equal(r.status, 0);
  for (const opt of ['--count', '--device-id', '--queue-size', '--machine', '--verbose', 'virtio-spi']) assert.ok(r.stdout.includes(opt), opt);
});

test('--count 10000 completes with 10000 correct responses and nothing lost', () => {
  const r = run('--count', '10000', '250');
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  const lines = r.stdout.split('\n');
  const count = (re: RegExp) => lines.filter((l) => re.test(l)).length;
  assert.equal(count(/^QEMU_BACK_END: >>> get type \[ \d+ \]/), 10000);
  assert.equal(count(/virtio response ret is \d+$/), 10000);
  assert.match(r.stdout, /virtio: 10000 requests, 10000 responses verified\n$/);
  // every value cycles 250, 251, ..., 255, 0, 1, ... and each ret = N + 101
  const rets = lines.flatMap((l) => /virtio response ret is (\d+)$/.exec(l)?.[1] ?? []).map(Number);
  const hist = new Map<number, number>();
  for (const v of rets) hist.set(v, (hist.get(v) ?? 0) + 1);
  assert.equal(hist.size, 256);
  for (let n = 0; n < 256; n++) {
    const expected = Math.floor(10000 / 256) + (((n - 250 + 256) % 256) < 10000 % 256 ? 1 : 0);
    assert.equal(hist.get(n + 101), expected, `N=${n}`);
  }
});

test('--device-id changes the ID on both sides; --queue-size changes the device limit', () => {
  const r = run('--device-id', '46', '--queue-size', '4', '--count', '20', '3');
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /virtio-spi/);
  assert.match(r.stdout, /20 requests, 20 responses verified/);
});
