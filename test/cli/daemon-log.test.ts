/**
 * The daemon's log (src/cli/daemon-log.ts): levels, the JSON format, timestamps; and the daemon
 * itself with --log-format json, --log-level and VIRTIO_BACKEND_LOG, serving the seed request
 * with the device's lines intact.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { createDaemonLog, type DaemonLogOptions } from '../../src/cli/daemon-log.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { cliPath } from '../helpers/paths.js';
import { spawnNode, tempDir } from '../vhost-user/helpers.js';

const T = new Date('2026-12-05T09:00:00.123Z');

function capture(o: Omit<DaemonLogOptions, 'program' | 'stdout' | 'stderr' | 'now'>) {
  const out: string[] = [];
  const err: string[] = [];
  const log = createDaemonLog({ program: 'vb', ...o, stdout: (t) => out.push(t), stderr: (t) => err.push(t), now: () => T });
  log.device('QEMU_BACK_END: >>> get type [ 10 ] form the front end <<<');
  log.info('listening on /s');
  log.warn('vring 0: refused');
  log.error('cannot listen');
  return { out, err };
}

describe('daemon log', () => {
  it('text, default level: device lines verbatim, the daemon\'s prefixed, streams as before', () => {
    assert.deepEqual(capture({}), {
      out: ['QEMU_BACK_END: >>> get type [ 10 ] form the front end <<<\n', 'vb: listening on /s\n'],
      err: ['vb: vring 0: refused\n', 'vb: cannot listen\n'],
    });
  });

  it('levels drop what is below them; errors are always written', () => {
    assert.deepEqual(capture({ level: 'warn' }), { out: [], err: ['vb: vring 0: refused\n', 'vb: cannot listen\n'] });
    assert.deepEqual(capture({ level: 'error' }), { out: [], err: ['vb: cannot listen\n'] });
  });

  it('timestamps on the daemon\'s own lines only (the seed lines keep their wording)', () => {
    const { out, err } = capture({ timestamps: true });
    assert.equal(out[0], 'QEMU_BACK_END: >>> get type [ 10 ] form the front end <<<\n');
    assert.equal(out[1], '2026-12-05T09:00:00.123Z vb: listening on /s\n');
    assert.equal(err[0], '2026-12-05T09:00:00.123Z vb: vring 0: refused\n');
  });

  it('json: one object per line with time, level, source and message', () => {
    const { out, err } = capture({ format: 'json' });
    const parsed = [...out, ...err].map((l) => {
      assert.ok(l.endsWith('\n') && !l.slice(0, -1).includes('\n'));
      return JSON.parse(l) as Record<string, string>;
    });
    assert.deepEqual(parsed, [
      { time: T.toISOString(), level: 'info', source: 'device', message: 'QEMU_BACK_END: >>> get type [ 10 ] form the front end <<<' },
      { time: T.toISOString(), level: 'info', source: 'vb', message: 'listening on /s' },
      { time: T.toISOString(), level: 'warn', source: 'vb', message: 'vring 0: refused' },
      { time: T.toISOString(), level: 'error', source: 'vb', message: 'cannot listen' },
    ]);
  });

  it('the daemon with --log-format json serves the seed request: every line parses, the device lines are the seed\'s', async () => {
    const tmp = tempDir();
    const socketPath = path.join(tmp.dir, 'log.sock');
    const be = spawnNode(cliPath('virtio-backend'), ['--device', 'virtio-test', '-s', socketPath, '--log-format', 'json']);
    try {
      await be.waitForLine(/listening on/);
      const client = await VirtioTestClient.connect({ socketPath });
      assert.equal((await client.request(10)).ret, 111);
      client.close();
      await be.waitForLine(/front-end 1 disconnected/);
      be.proc.kill('SIGTERM');
      assert.deepEqual(await be.exited, { code: 0, signal: null });
      const lines = be.stdout.map((l) => JSON.parse(l) as { level: string; source: string; message: string });
      const device = lines.filter((l) => l.source === 'device').map((l) => l.message);
      assert.equal(device[0], 'QEMU_BACK_END: >>> get type [ 10 ] form the front end <<<');
      assert.equal(device.length, 5, device.join('\n'));
      assert.ok(lines.some((l) => l.source === 'virtio-backend' && /^listening on /.test(l.message)));
      assert.ok(lines.some((l) => l.message === 'SIGTERM: shutting down'));
      assert.deepEqual(be.stderr, []);
    } finally {
      be.proc.kill('SIGKILL');
      tmp.remove();
    }
  });

  it('VIRTIO_BACKEND_LOG=warn silences the info lines; --log-level wins over it; a bad level is a command-line error', async () => {
    const tmp = tempDir();
    const socketPath = path.join(tmp.dir, 'lvl.sock');
    const run = (env: Record<string, string>, args: string[]) =>
      spawnSync(process.execPath, [cliPath('virtio-backend'), ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 10_000 });
    try {
      const bad = run({ VIRTIO_BACKEND_LOG: 'loud' }, ['--device', 'rng', '-s', socketPath]);
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /--log-level \(from VIRTIO_BACKEND_LOG\) must be one of error, warn, info, got 'loud'/);
      assert.equal(run({}, ['--device', 'rng', '-s', socketPath, '--log-format', 'xml']).status, 2);
      for (const [env, args, infoShown] of [
        [{ VIRTIO_BACKEND_LOG: 'warn' }, [], false],
        [{ VIRTIO_BACKEND_LOG: 'warn' }, ['--log-level', 'info'], true],
      ] as const) {
        // --ready-fd 3: the daemon says when it listens even when its info lines are silenced.
        const proc = spawn(process.execPath, [cliPath('virtio-backend'), '--device', 'rng', '-s', socketPath, '--ready-fd', '3', ...args], {
          env: { ...process.env, ...env },
          stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        proc.stdout!.on('data', (d) => (stdout += d));
        await new Promise<void>((resolve) => proc.stdio[3]!.once('data', () => resolve()));
        proc.kill('SIGTERM');
        const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
        assert.equal(code, 0);
        assert.equal(/listening on/.test(stdout), infoShown, `${JSON.stringify(env)} ${args.join(' ')}: ${stdout}`);
      }
    } finally {
      tmp.remove();
    }
  });
});
