// Boots the User-Mode Linux guest (guest/linux/build.sh) without any
// vhost-user backend: the virtio_uml device fails to probe, the guest must
// still boot, run the command and report its exit status.
// Needs the guest built; skipped (loudly) when it is not, except in CI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { defaultRepoRoot, findUmlGuest, runUml, shellQuote, type UmlGuest } from '../../src/machine/uml.js';

const guest = findUmlGuest();
const inCI = process.env.CI === 'true';

function needGuest(t: { skip: (msg: string) => void }): UmlGuest | null {
  if (guest) return guest;
  if (inCI) assert.fail('UML guest not built (run guest/linux/build.sh); CI=true requires it');
  const msg = 'SKIPPED: UML guest not built (run guest/linux/build.sh)';
  console.log(`\n*** ${msg} ***\n`);
  t.skip(msg);
  return null;
}

function missingSocket(): { socket: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'vt-uml-test-'));
  const socket = path.join(dir, 'no-backend.sock');
  assert.equal(existsSync(socket), false);
  return { socket, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

test('shellQuote keeps words intact', () => {
  assert.equal(shellQuote(['echo', 'a b', "it's", '$HOME']), `echo 'a b' 'it'\\''s' '$HOME'`);
});

test('UML guest boots without a backend, runs a command and returns its status', async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const { socket, cleanup } = missingSocket();
  try {
    const started = Date.now();
    const r = await runUml({
      guest: g,
      socket,
      command: ['sh', '-c', 'echo "hello  from the guest"; cat /proc/version; test ! -e /dev/virtio_misc && echo no-misc-device; exit 7'],
      timeoutMs: 60_000,
    });
    const ms = Date.now() - started;
    t.diagnostic(`boot+run+poweroff took ${ms} ms`);
    assert.equal(r.timedOut, false, `timed out; boot lines:\n${r.bootLines.join('\n')}`);
    assert.equal(r.exitCode, 7, `lines:\n${r.lines.join('\n')}\nboot:\n${r.bootLines.join('\n')}`);
    assert.ok(r.lines.includes('hello  from the guest'), r.lines.join('\n'));
    assert.ok(r.lines.some((l) => /^Linux version 6\.1\./.test(l)), r.lines.join('\n'));
    assert.ok(r.lines.includes('no-misc-device'), r.lines.join('\n'));
    assert.ok(!r.lines.some((l) => l.includes('VT_READY') || l.includes('VT_EXIT')), 'markers must be removed');
    // UML itself exits with the command's status (init writes it to /proc/exitcode).
    assert.equal(r.signal, null);
  } finally {
    cleanup();
  }
});

test('exit status 0 and driver messages after VT_READY', async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const { socket, cleanup } = missingSocket();
  try {
    const seen: string[] = [];
    const r = await runUml({
      guest: g,
      socket,
      command: ['sh', '-c', 'dmesg | grep -q "virtio-uml: probe of virtio-uml.0 failed with error -2" && echo probe-failed; virtio 10; echo "virtio rc=$?"; test -d /sys/bus/virtio/drivers/virtio_test && echo driver-registered'],
      onLine: (l) => seen.push(l),
    });
    assert.equal(r.exitCode, 0, `lines:\n${r.lines.join('\n')}`);
    assert.ok(seen.includes('VT_READY'), 'onLine sees the markers');
    // No device: the user program reports the failed open and exits 1.
    assert.ok(r.lines.includes('ERROR:virtio_misc open failed!'), r.lines.join('\n'));
    assert.ok(r.lines.includes('virtio rc=1'), r.lines.join('\n'));
    assert.ok(r.lines.includes('driver-registered'), r.lines.join('\n'));
    // The missing socket makes virtio_uml's probe fail (ENOENT); boot goes on.
    assert.ok(r.lines.includes('probe-failed'), r.lines.join('\n'));
  } finally {
    cleanup();
  }
});

test('a command that hangs is killed at the timeout, leaving no process behind', async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const { socket, cleanup } = missingSocket();
  try {
    const r = await runUml({ guest: g, socket, command: ['sleep', '1000'], timeoutMs: 3000 });
    assert.equal(r.timedOut, true);
    assert.equal(r.exitCode, null);
    assert.equal(r.signal, 'SIGKILL');
    // Every UML process of ours carries umid=vt-<our pid>-<n> in its argv.
    const left = spawnSync('pgrep', ['-f', `umid=vt-${process.pid}-`], { encoding: 'utf8' });
    assert.equal(left.stdout.trim(), '', `UML processes left behind: ${left.stdout}`);
  } finally {
    cleanup();
  }
});

// The driver against guest/linux/tools/fake-backend.py (a minimal Python
// vhost-user virtio-test backend): a sanity check of the guest side that does
// not depend on the TypeScript backend.
function startFakeBackend(args: string[] = []): Promise<{ socket: string; stop: () => Promise<string> }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vt-uml-fb-'));
  const socket = path.join(dir, 'fb.sock');
  const script = path.join(defaultRepoRoot(), 'guest', 'linux', 'tools', 'fake-backend.py');
  const child = spawn('python3', [script, socket, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const stop = async (): Promise<string> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'close');
    }
    rmSync(dir, { recursive: true, force: true });
    return stderr;
  };
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 10_000;
    const poll = (): void => {
      if (existsSync(socket)) return resolve({ socket, stop });
      if (child.exitCode !== null || Date.now() > deadline) {
        void stop().then((e) => reject(new Error(`fake backend did not start: ${e}`)));
        return;
      }
      setTimeout(poll, 20);
    };
    poll();
  });
}

const hasPython = spawnSync('python3', ['--version']).status === 0;

test('driver against the Python fake backend: the seed run result, then stress', { skip: !hasPython && 'python3 not installed' }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const fb = await startFakeBackend();
  try {
    const r = await runUml({ guest: g, socket: fb.socket, command: ['sh', '-c', 'virtio 10 && virtio-stress -q -w 300 4 500'], timeoutMs: 60_000 });
    assert.equal(r.exitCode, 0, `lines:\n${r.lines.join('\n')}\nboot:\n${r.bootLines.join('\n')}`);
    const ts = String.raw`^\[\s*\d+\.\d{6}\] `;
    const want = ['virtio test_request_done get ack', 'virtio response ret is 111', 'virtio response arg1 is 112', 'virtio response arg2 is 113'];
    assert.deepEqual(
      r.lines.slice(0, 4).map((l) => l.replace(new RegExp(ts), '')),
      want,
      r.lines.join('\n'),
    );
    assert.ok(r.lines.slice(0, 4).every((l) => new RegExp(ts).test(l)), 'printk lines carry timestamps');
    assert.ok(r.lines.includes('stress: P=4 K=500 ok=2000 bad=0 lost=0'), r.lines.join('\n'));
  } finally {
    await fb.stop();
  }
});

test('driver when the backend dies: users get errors, the guest does not hang', { skip: !hasPython && 'python3 not installed' }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const fb = await startFakeBackend(['--die-after', '100']);
  try {
    const r = await runUml({
      guest: g,
      socket: fb.socket,
      command: ['sh', '-c', 'virtio-stress -q -w 50 2 1000; echo "stress rc=$?"; test -e /dev/virtio_misc || echo device-gone; dmesg | grep -c -e "BUG" -e "Oops" -e "cut here" || true'],
      timeoutMs: 60_000,
    });
    assert.equal(r.timedOut, false);
    assert.equal(r.exitCode, 0, r.lines.join('\n'));
    assert.ok(r.lines.includes('stress rc=1'), r.lines.join('\n'));
    assert.ok(r.lines.includes('device-gone'), r.lines.join('\n'));
    assert.ok(r.lines.some((l) => /virtio-stress\[\d\]: (write|read) .*(No such device|Input\/output error)/.test(l)), r.lines.join('\n'));
    assert.equal(r.lines[r.lines.length - 1], '0', 'no BUG/Oops/WARNING in dmesg');
  } finally {
    await fb.stop();
  }
});
