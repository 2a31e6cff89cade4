// The User-Mode Linux launcher (src/machine/uml.ts) and the C driver's behaviour against our
// TypeScript vhost-user backend (serveDevice in this process), including misbehaving device
// models: one that does not offer CAN_PRINT (probe must fail cleanly) and one that reports a
// short used length (the driver must mark the device broken). The end-to-end scenarios
// (the CLI, all 256 values, load, ring size limits, a killed backend) are in test/uml/.
// Needs the guest built (guest/linux/build.sh); skipped loudly when it is not, except in CI.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { runUml, shellQuote } from '../../src/machine/uml.js';
import { requestLogLines, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import type { DeviceContext } from '../../src/device/device.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import {
  CountingTestDevice,
  assertNoKernelTrouble,
  assertNoUmlLeft,
  assertSameHistogram,
  driverLinesFor,
  needGuest,
  scratchDir,
  startBackend,
  stressHistogram,
  stripTimestamp,
} from '../helpers/uml.js';

after(() => assertNoUmlLeft());

function missingSocket(): { socket: string; cleanup: () => void } {
  const tmp = scratchDir();
  const socket = path.join(tmp.dir, 'no-backend.sock');
  assert.equal(existsSync(socket), false);
  return { socket, cleanup: tmp.remove };
}

const show = (r: { lines: string[]; bootLines: string[] }): string => `lines:\n${r.lines.join('\n')}\nboot:\n${r.bootLines.join('\n')}`;

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
    assert.equal(r.exitCode, 7, show(r));
    assert.ok(r.lines.includes('hello  from the guest'), r.lines.join('\n'));
    assert.ok(r.lines.some((l) => /^Linux version 6\.1\./.test(l)), r.lines.join('\n'));
    assert.ok(r.lines.includes('no-misc-device'), r.lines.join('\n'));
    assert.ok(!r.lines.some((l) => l.includes('VT_READY') || l.includes('VT_EXIT')), 'markers must be removed');
    // UML itself exits with the command's status (init writes it to /proc/exitcode).
    assert.equal(r.signal, null);
    assert.equal(r.processExitCode, 7);
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
    assert.equal(r.exitCode, 0, show(r));
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
    assertNoUmlLeft();
  } finally {
    cleanup();
  }
});

// ---- the C driver against the TypeScript backend (serveDevice in this process) ----

test('driver against the TypeScript backend: the seed run result, then 4 x 500 verified requests', async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const be = startBackend({ createDevice: () => new CountingTestDevice() });
  try {
    const r = await runUml({ guest: g, socket: be.socket, command: ['sh', '-c', 'virtio 10 && virtio-stress -q -w 300 4 500'], timeoutMs: 60_000 });
    assert.equal(r.exitCode, 0, show(r));
    const ts = /^\[\s*\d+\.\d{6}\] /;
    assert.deepEqual(r.lines.slice(0, 4).map(stripTimestamp), ['virtio test_request_done get ack', ...driverLinesFor(10)], r.lines.join('\n'));
    assert.ok(r.lines.slice(0, 4).every((l) => ts.test(l)), 'printk lines carry timestamps');
    assert.ok(r.lines.includes('stress: P=4 K=500 ok=2000 bad=0 lost=0'), r.lines.join('\n'));
    // The backend printed the seed's five lines for the first request and served each request once.
    assert.deepEqual(be.lines.slice(0, 5), requestLogLines(requestFor(10)));
    assert.equal(be.lines.length, 5 * 2001);
    const want = stressHistogram(4, 500);
    want[10]!++;
    assert.equal(be.devices.length, 1);
    assertSameHistogram(be.devices[0]!.byType, want, 'requests served');
    assert.equal(be.devices[0]!.other, 0);
    assert.deepEqual(be.warnings, []);
    assert.deepEqual(be.events, ['front-end 1 connected', 'front-end 1 disconnected']);
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
  } finally {
    await be.close();
  }
});

/** virtio-test without its feature bit 0 (VIRTIO_TEST_F_CAN_PRINT): the driver must refuse it. */
class NoCanPrintDevice extends VirtioTestDevice {
  override readonly features = 0n;
}

test('a device without CAN_PRINT: probe fails cleanly, no /dev/virtio_misc, the guest goes on', async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const be = startBackend({ createDevice: () => new NoCanPrintDevice() });
  try {
    const r = await runUml({
      guest: g,
      socket: be.socket,
      command: [
        'sh',
        '-c',
        'dmesg | grep -F "virtio_test virtio0: device does not offer VIRTIO_TEST_F_CAN_PRINT; not binding"; ' +
          'test -e /dev/virtio_misc || echo no-misc-device; ' +
          'test -e /sys/bus/virtio/devices/virtio0 && echo device-on-bus; ' +
          'test -e /sys/bus/virtio/devices/virtio0/driver || echo no-driver-bound; ' +
          'echo "status=$(cat /sys/bus/virtio/devices/virtio0/status)"; ' +
          'virtio 10; echo "virtio rc=$?"; echo "tainted=$(cat /proc/sys/kernel/tainted)"',
      ],
      timeoutMs: 60_000,
    });
    assert.equal(r.timedOut, false);
    assert.equal(r.exitCode, 0, show(r));
    const text = r.lines.map(stripTimestamp);
    assert.ok(text.includes('virtio_test virtio0: device does not offer VIRTIO_TEST_F_CAN_PRINT; not binding'), show(r));
    for (const want of ['no-misc-device', 'device-on-bus', 'no-driver-bound', 'ERROR:virtio_misc open failed!', 'virtio rc=1', 'tainted=0']) {
      assert.ok(text.includes(want), `${want}\n${show(r)}`);
    }
    // The virtio core set FAILED (0x80) after the driver's validate() refused the device.
    const status = Number(/^status=(0x[0-9a-f]+)$/m.exec(text.join('\n'))?.[1]);
    assert.equal(status & 0x80, 0x80, `status ${status}`);
    assert.equal(status & 0x04, 0, 'never DRIVER_OK');
    assert.equal(be.lines.length, 0, 'no request reached the device');
    assert.deepEqual(be.warnings, []);
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
  } finally {
    await be.close();
  }
});

/** virtio-test that answers correctly but reports a used length of 8 (the response is 12 bytes). */
class ShortUsedLengthDevice extends VirtioTestDevice {
  override handleChain(queue: number, chain: DescriptorChain, ctx: DeviceContext): number {
    super.handleChain(queue, chain, ctx);
    return 8;
  }
}

test('a device reporting a used length of 8: the driver marks it broken, users get EIO, no oops', async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const be = startBackend({ createDevice: () => new ShortUsedLengthDevice() });
  try {
    const r = await runUml({
      guest: g,
      socket: be.socket,
      command: [
        'sh',
        '-c',
        'virtio 10; echo "first rc=$?"; virtio 11; echo "second rc=$?"; virtio-stress -w 4 2 10; echo "stress rc=$?"; ' +
          'test -e /dev/virtio_misc && echo misc-still-there; echo "tainted=$(cat /proc/sys/kernel/tainted)"',
      ],
      timeoutMs: 60_000,
    });
    assert.equal(r.timedOut, false);
    assert.equal(r.exitCode, 0, show(r));
    const text = r.lines.map(stripTimestamp);
    const at = (s: string): number => {
      const i = text.indexOf(s);
      assert.ok(i >= 0, `${s}\n${show(r)}`);
      return i;
    };
    // The first request reaches the device; its completion breaks the device, so its read fails.
    at('virtio_test virtio0: device wrote 8 response bytes, expected 12; device marked broken');
    assert.ok(at('virtio: read returned -1: Input/output error') < at('first rc=1'), show(r));
    assert.ok(!text.some((l) => l.startsWith('virtio response ret is')), 'the short response is not printed');
    // Afterwards every writer gets EIO at once.
    assert.ok(at('virtio: write returned -1: Input/output error') < at('second rc=1'), show(r));
    at('virtio-stress[0]: write #0 returned -1: Input/output error');
    at('virtio-stress[1]: write #0 returned -1: Input/output error');
    at('stress: P=2 K=10 ok=0 bad=0 lost=20');
    at('stress rc=1');
    // Broken, not removed: the backend is still connected.
    at('misc-still-there');
    at('tainted=0');
    assert.deepEqual(be.lines, requestLogLines(requestFor(10)), 'exactly one request reached the device');
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
  } finally {
    await be.close();
  }
});

test('the backend closes the connection mid-load: users get ENODEV/EIO, the device goes away, the guest finishes', async (t) => {
  const g = needGuest(t);
  if (!g) return;
  let closing = false;
  const be = startBackend({ createDevice: () => new CountingTestDevice({ print: false }) });
  // Close the connection (the whole server) once 100 requests were served; outside handleChain.
  const poll = setInterval(() => {
    if (!closing && (be.devices[0]?.total ?? 0) >= 100) {
      closing = true;
      void be.server.close();
    }
  }, 1);
  try {
    const r = await runUml({
      guest: g,
      socket: be.socket,
      command: [
        'sh',
        '-c',
        'virtio-stress -q -w 50 -t 20 2 100000; echo "stress rc=$?"; ' +
          'i=0; while [ -e /dev/virtio_misc ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done; ' +
          'test -e /dev/virtio_misc || echo device-gone; echo "tainted=$(cat /proc/sys/kernel/tainted)"',
      ],
      timeoutMs: 60_000,
    });
    assert.ok(closing, 'the backend closed');
    assert.equal(r.timedOut, false);
    assert.equal(r.exitCode, 0, show(r));
    for (const want of ['stress rc=1', 'device-gone', 'tainted=0']) assert.ok(r.lines.includes(want), `${want}\n${show(r)}`);
    assert.ok(r.lines.some((l) => /^virtio-stress\[\d\]: (write #\d+ returned|read returned) -1: (No such device|Input\/output error)$/.test(l)), show(r));
    const m = /^stress: P=2 K=100000 ok=(\d+) bad=(\d+) lost=(\d+)$/m.exec(r.lines.join('\n'));
    assert.ok(m, show(r));
    assert.equal(Number(m[2]), 0, 'no wrong response');
    assert.ok(Number(m[1]) >= 1 && Number(m[1]) <= be.devices[0]!.total, `ok=${m[1]} served=${be.devices[0]!.total}`);
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
  } finally {
    clearInterval(poll);
    await be.close();
  }
});
