// The `virtio-test-backend` CLI killed with SIGKILL while the guest runs virtio-stress:
// virtio_uml notices the EOF, breaks and removes the device; our driver wakes every writer and
// reader with ENODEV (or EIO once broken), virtio-stress reports the errors and finishes, the
// guest's command ends with VT_EXIT and the kernel is not tainted (no oops, BUG or WARN).
// Then a backend restarted on the same socket path (the killed one left its socket file
// behind) serves a newly booted guest correctly.
import assert from 'node:assert/strict';
import { existsSync, lstatSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { requestFor, requestLogLines } from '../../src/devices/virtio-test/protocol.js';
import { runUml } from '../../src/machine/uml.js';
import {
  assertNoKernelTrouble,
  assertNothingLeftRunning,
  driverLinesFor,
  needGuest,
  scratchDir,
  spawnBackendCli,
  stripTimestamp,
  type CliBackend,
} from '../helpers/uml.js';

after(assertNothingLeftRunning);

const P = 8;
const K = 100_000; // far more than gets served before the kill
const KILL_AFTER = 1000; // requests served

test('backend SIGKILLed under virtio-stress: the guest reports the device gone, no oops; a restarted backend serves a new guest', { timeout: 180_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const tmp = scratchDir('vt-uml-kill-');
  const socket = path.join(tmp.dir, 'vt.sock');
  let be: CliBackend | null = null;
  try {
    be = await spawnBackendCli(socket);
    const victim = be;
    let killedAt = -1;
    victim.onLine = () => {
      if (killedAt < 0 && victim.served >= KILL_AFTER) {
        killedAt = victim.served;
        victim.proc.kill('SIGKILL');
      }
    };
    const r = await runUml({
      guest: g,
      socket,
      command: [
        'sh',
        '-c',
        `virtio-stress -q -t 20 ${P} ${K}; echo "stress rc=$?"; ` +
          // removal runs in a work item: give it a moment if a worker saw EIO first
          'i=0; while [ -e /dev/virtio_misc ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done; ' +
          'test -e /dev/virtio_misc || echo device-gone; ' +
          'test -e /sys/bus/virtio/devices/virtio0 || echo virtio0-removed; ' +
          'virtio 10; echo "virtio rc=$?"; ' +
          'echo "tainted=$(cat /proc/sys/kernel/tainted)"; ' +
          'echo "kernel trouble lines: $(dmesg | grep -c -e Oops -e "BUG:" -e "WARNING:" -e "cut here" -e "Call Trace")"',
      ],
      timeoutMs: 120_000,
    });
    const show = `lines:\n${r.lines.join('\n')}\nboot:\n${r.bootLines.slice(-30).join('\n')}`;
    assert.deepEqual(await victim.exited, { code: null, signal: 'SIGKILL' });
    assert.ok(killedAt >= KILL_AFTER, `killed after ${killedAt} requests`);
    t.diagnostic(`backend killed after ${killedAt} requests served`);

    // The guest finished its command and reported it.
    assert.equal(r.timedOut, false, show);
    assert.equal(r.exitCode, 0, show);
    assert.equal(r.processExitCode, 0, show);
    const text = r.lines.map(stripTimestamp);
    for (const want of ['stress rc=1', 'device-gone', 'virtio0-removed', 'ERROR:virtio_misc open failed!', 'virtio rc=1', 'tainted=0', 'kernel trouble lines: 0']) {
      assert.ok(text.includes(want), `${want}\n${show}`);
    }
    // Every worker stopped on an error from the driver: ENODEV (removed) or EIO (broken).
    const workerErrors = text.filter((l) => /^virtio-stress\[\d\]: /.test(l));
    assert.equal(workerErrors.length, P, show);
    // (A worker the scheduler started only after the device was removed fails its open instead.)
    for (const l of workerErrors) {
      assert.match(
        l,
        /^virtio-stress\[\d\]: ((write #\d+ returned|read returned) -1: (No such device|Input\/output error)|open \/dev\/virtio_misc: (No such file or directory|No such device))$/,
        show,
      );
    }
    // Nothing wrong was ever read back; what was answered before the kill was right.
    const m = /^stress: P=8 K=100000 ok=(\d+) bad=(\d+) lost=(\d+)$/m.exec(text.join('\n'));
    assert.ok(m, show);
    const [ok, bad, lost] = [Number(m[1]), Number(m[2]), Number(m[3])];
    assert.equal(bad, 0, show);
    assert.equal(ok + lost, P * K);
    assert.ok(ok > 0, `ok=${ok}: requests were answered before the kill`);
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);

    // SIGKILL left the socket file; a new backend replaces it (nobody listens there).
    assert.ok(lstatSync(socket).isSocket(), 'stale socket file left by the killed backend');
    be = await spawnBackendCli(socket);
    const r2 = await runUml({ guest: g, socket, command: ['sh', '-c', 'virtio 10 && virtio-stress -q 4 250'], timeoutMs: 60_000 });
    assert.equal(r2.exitCode, 0, `lines:\n${r2.lines.join('\n')}\nboot:\n${r2.bootLines.join('\n')}`);
    assert.deepEqual(r2.lines.map(stripTimestamp), ['virtio test_request_done get ack', ...driverLinesFor(10), 'stress: P=4 K=250 ok=1000 bad=0 lost=0']);
    await be.waitForLine(/front-end 1 disconnected/);
    assert.deepEqual(be.stdout.filter((l) => l.startsWith('QEMU_BACK_END')).slice(0, 5), requestLogLines(requestFor(10)));
    assert.equal(be.served, 1001);
    assert.deepEqual(be.stderr, []);
    assert.deepEqual(await be.kill('SIGTERM'), { code: 0, signal: null });
    assert.equal(existsSync(socket), false, 'no socket file left');
  } finally {
    await be?.kill();
    tmp.remove();
  }
});
