// The C driver against bad input from guest user space: wrong write lengths are EINVAL (the seed
// returned 0, so `echo 7 > /dev/virtio_misc` looped forever), short reads are EINVAL, a read with
// nothing outstanding does not hang, and the C program refuses values outside 0..255.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { runUml } from '../../src/machine/uml.js';
import { assertNoKernelTrouble, assertNoUmlLeft, needGuest, startBackend } from '../helpers/uml.js';

after(() => assertNoUmlLeft());

test('C driver and program: bad lengths are EINVAL, nothing hangs, bad values are refused', { timeout: 120_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const be = startBackend();
  try {
    const script = [
      // 2 bytes ("7\n"): EINVAL, and the shell's redirection fails instead of looping.
      'echo 7 > /dev/virtio_misc; echo "two-bytes rc=$?"',
      // exactly one byte: accepted (its response is left unread; the file is closed)
      "printf '\\007' > /dev/virtio_misc; echo \"one-byte rc=$?\"",
      // a read of 4 bytes (< 12): EINVAL
      'dd if=/dev/virtio_misc of=/dev/null bs=4 count=1 2>/dev/null; echo "short-read rc=$?"',
      // a read with nothing outstanding returns at once
      'dd if=/dev/virtio_misc of=/dev/null bs=12 count=1 2>/dev/null; echo "idle-read rc=$?"',
      // the user program's own checks
      'virtio 300; echo "virtio-300 rc=$?"',
      'virtio x; echo "virtio-x rc=$?"',
      'virtio; echo "virtio-none rc=$?"',
      'virtio 255; echo "virtio-255 rc=$?"',
    ].join('; ');
    const r = await runUml({ guest: g, socket: be.socket, command: ['sh', '-c', script], timeoutMs: 60_000 });
    const show = `lines:\n${r.lines.join('\n')}`;
    assert.equal(r.timedOut, false, show);
    assert.equal(r.exitCode, 0, show);
    const rc = (name: string) => Number(/rc=(\d+)/.exec(r.lines.find((l) => l.startsWith(`${name} rc=`)) ?? '')?.[1]);
    assert.notEqual(rc('two-bytes'), 0, show);
    assert.equal(rc('one-byte'), 0, show);
    assert.notEqual(rc('short-read'), 0, show);
    assert.equal(rc('idle-read'), 0, show);
    assert.notEqual(rc('virtio-300'), 0, show);
    assert.notEqual(rc('virtio-x'), 0, show);
    assert.notEqual(rc('virtio-none'), 0, show);
    assert.equal(rc('virtio-255'), 0, show);
    assert.ok(r.lines.includes('ERROR:the number must be an integer between 0 and 255!'), show);
    assert.ok(r.lines.includes('ERROR:please enter two parameters!'), show);
    assert.ok(r.lines.some((l) => /Invalid argument/.test(l)), `the shell reports EINVAL:\n${show}`);
    // the device saw exactly the two valid requests: 7 and 255
    assert.deepEqual(
      be.lines.filter((l) => l.includes('get type')),
      ['QEMU_BACK_END: >>> get type [ 7 ] form the front end <<<', 'QEMU_BACK_END: >>> get type [ 255 ] form the front end <<<'],
    );
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
  } finally {
    await be.close();
  }
});
