// `virtio --machine uml 10`: the seed's scenario on a real Linux 6.1 guest (UML) against the
// in-process vhost-user backend prints the seed's run result (test/golden/seed-run-result.txt),
// timestamps aside, and leaves no UML process, socket or temp file behind.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { cliPath, normaliseTimestamps, repoRoot } from '../helpers/paths.js';
import { assertEmptyDir, assertNoKernelTrouble, assertNoUmlLeft, needGuest, scratchDir, umlProcessesOf } from '../helpers/uml.js';

async function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ pid: number; code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [cliPath('virtio'), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { pid: child.pid!, code, stdout, stderr };
}

test('`virtio --machine uml 10` prints the seed\'s run result (timestamps aside)', { timeout: 180_000 }, async (t) => {
  if (!needGuest(t)) return;
  // A private TMPDIR: the CLI's socket directory must be gone afterwards.
  const tmp = scratchDir('vt-uml-cli-');
  try {
    const r = await runCli(['--machine', 'uml', '10'], { ...process.env, TMPDIR: tmp.dir });
    assert.equal(r.code, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    const golden = readFileSync(path.join(repoRoot, 'test', 'golden', 'seed-run-result.txt'), 'utf8');
    assert.equal(normaliseTimestamps(r.stdout), normaliseTimestamps(golden));
    // The guest's printk timestamps are real kernel timestamps, in order.
    const times = [...r.stdout.matchAll(/^\[\s*(\d+\.\d{6})\]/gm)].map((m) => Number(m[1]));
    assert.equal(times.length, 4);
    assert.ok(times.every((x, i) => x > 0 && (i === 0 || x >= times[i - 1]!)), r.stdout);
    // stderr: only the device-ID note (no refused request, no stack trace).
    assert.match(r.stderr, /virtio 1\.4 assigns 45 to virtio-spi/);
    assert.doesNotMatch(r.stderr, /backend:|Error|\n\s+at /, r.stderr);
    assertNoKernelTrouble(r.stdout.split('\n'));
    assertNoUmlLeft(r.pid);
    assertEmptyDir(tmp.dir, 'virtio --machine uml');
  } finally {
    tmp.remove();
  }
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`\`virtio --machine uml\` ended by ${signal} mid-run takes its UML guest with it (exit ${signal === 'SIGTERM' ? 143 : 130}, no UML left)`, { timeout: 180_000 }, async (t) => {
    if (!needGuest(t)) return;
    const tmp = scratchDir('vt-uml-sig-');
    try {
      // A run long enough to be interrupted: the guest is up once its program prints.
      const child = spawn(process.execPath, [cliPath('virtio'), '--machine', 'uml', '--count', '1000000', '10'], {
        env: { ...process.env, TMPDIR: tmp.dir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.resume();
      const closed = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
      const deadline = Date.now() + 120_000;
      while (!/get ack/.test(stdout) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
      assert.match(stdout, /get ack/, 'the guest program is running');
      assert.notEqual(umlProcessesOf(child.pid!), '', 'its UML guest runs (in a process group of its own)');
      child.kill(signal);
      const [code] = await closed;
      assert.equal(code, signal === 'SIGTERM' ? 143 : 130);
      // The group is killed with SIGKILL on the way out; give the kernel a moment to reap it.
      for (let i = 0; i < 50 && umlProcessesOf(child.pid!) !== ''; i++) await new Promise((r) => setTimeout(r, 100));
      assertNoUmlLeft(child.pid!);
    } finally {
      tmp.remove();
    }
  });
}
