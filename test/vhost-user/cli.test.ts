/**
 * The virtio-test-backend CLI: arguments, the listening line, the device's request lines,
 * connection events, stale and live sockets, and a clean stop on SIGINT/SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { native } from '../../src/vhost-user/native/index.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { cliPath } from '../helpers/paths.js';
import { spawnNode, tempDir, waitFor } from './helpers.js';

const cli = cliPath('virtio-test-backend');

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 15_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('virtio-test-backend CLI', () => {
  it('prints help', () => {
    const r = run(['--help']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^Usage: virtio-test-backend --socket PATH/);
    assert.match(r.stdout, /--ready-fd N/);
  });

  for (const [args, message] of [
    [[], /--socket PATH is required/],
    [['--socket', '/tmp/x.sock', '--queue-size', '100'], /--queue-size must be a power of two from 1 to 32768, got '100'/],
    [['--socket', '/tmp/x.sock', '--device-id', 'abc'], /--device-id must be an integer from 1 to 65535, got 'abc'/],
    [['--socket', '/tmp/x.sock', '--publish-batch', '1.5'], /--publish-batch must be a count in 0..32768, got '1.5'/],
    [['--socket', '/tmp/x.sock', '--publish-batch', '40000'], /--publish-batch must be a count in 0..32768, got '40000'/],
    [['--socket', '/tmp/x.sock', '--bogus'], /Unknown option '--bogus'/],
    [['--socket', `/tmp/${'x'.repeat(120)}.sock`], /too long for a Unix socket/],
  ] as const) {
    it(`refuses bad arguments: ${args.join(' ') || '(none)'}`, () => {
      const r = run([...args]);
      assert.equal(r.status, 2);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    });
  }

  it('fails clearly when it cannot listen', () => {
    const tmp = tempDir();
    try {
      const file = path.join(tmp.dir, 'not-a-socket');
      writeFileSync(file, 'keep me');
      const r = run(['--socket', file]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /cannot listen on .*not-a-socket: .*exists and is not a socket/);
      assert.ok(existsSync(file), 'a regular file is never removed');
      const r2 = run(['--socket', path.join(tmp.dir, 'no', 'such', 'dir.sock')]);
      assert.equal(r2.status, 1);
      assert.match(r2.stderr, /cannot listen on/);
      assert.doesNotMatch(r2.stderr, /\n\s+at /);
    } finally {
      tmp.remove();
    }
  });

  it('serves, prints the seed lines and connection events, refuses a live socket, stops on SIGTERM', async () => {
    const tmp = tempDir();
    const socketPath = path.join(tmp.dir, 'vt.sock');
    const be = spawnNode(cli, ['--socket', socketPath]);
    try {
      assert.equal(await be.waitForLine(/listening/), `virtio-test-backend: listening on ${socketPath} (device 45, queue ≤ 256)`);
      // A second back-end on the same live socket refuses to start and leaves it alone.
      const r = run(['--socket', socketPath]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /another back-end is listening there/);
      const c = await VirtioTestClient.connect({ socketPath });
      assert.deepEqual(await c.request(10), answer(requestFor(10)));
      c.close();
      await be.waitForLine(/front-end 2 disconnected/); // front-end 1 was the probe of the second back-end
      assert.deepEqual(
        be.stdout.filter((l) => l.startsWith('QEMU_BACK_END')),
        [
          'QEMU_BACK_END: >>> get type [ 10 ] form the front end <<<',
          'QEMU_BACK_END: >>> get arg1 [ 11 ] form the front end <<<',
          'QEMU_BACK_END: >>> get arg2 [ 12 ] form the front end <<<',
          'QEMU_BACK_END: >>> get arg3 [ 13 ] form the front end <<<',
          'QEMU_BACK_END: >>> get arg3 [ hello back end! ] form the front end <<<',
        ],
      );
      assert.ok(be.stdout.includes('virtio-test-backend: front-end 2 connected'));
      be.proc.kill('SIGTERM');
      assert.deepEqual(await be.exited, { code: 0, signal: null });
      assert.equal(existsSync(socketPath), false, 'the socket file is removed');
    } finally {
      be.proc.kill('SIGKILL');
      tmp.remove();
    }
  });

  it('--quiet drops the request lines; --ready-fd signals readiness; SIGINT stops it', async () => {
    const tmp = tempDir();
    const socketPath = path.join(tmp.dir, 'vt.sock');
    // A stale socket file (nobody listening) is replaced.
    const stale = native.socketListen(socketPath, 1);
    native.close(stale);
    assert.ok(existsSync(socketPath));
    const { spawn } = await import('node:child_process');
    const proc = spawn(process.execPath, [cli, '--socket', socketPath, '--quiet', '--ready-fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    let out = '';
    let ready = '';
    proc.stdout!.on('data', (d) => (out += d));
    proc.stdio[3]!.on('data', (d) => (ready += d));
    try {
      await waitFor(() => ready === 'ready\n', 'ready on fd 3');
      const c = await VirtioTestClient.connect({ socketPath });
      assert.deepEqual(await c.requestMany([1, 2, 3]), [1, 2, 3].map((n) => answer(requestFor(n))));
      c.close();
      await waitFor(() => /front-end 1 disconnected/.test(out), 'the disconnect line');
      assert.doesNotMatch(out, /QEMU_BACK_END/);
      proc.kill('SIGINT');
      const code = await new Promise((resolve) => proc.on('exit', (c) => resolve(c)));
      assert.equal(code, 0);
      assert.equal(existsSync(socketPath), false);
    } finally {
      proc.kill('SIGKILL');
      tmp.remove();
    }
  });
});
