// Boots the User-Mode Linux guest (guest/linux/build.sh) without any
// vhost-user backend: the virtio_uml device fails to probe, the guest must
// still boot, run the command and report its exit status.
// Needs the guest built; skipped (loudly) when it is not, except in CI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { findUmlGuest, runUml, shellQuote, type UmlGuest } from '../../src/machine/uml.js';

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
