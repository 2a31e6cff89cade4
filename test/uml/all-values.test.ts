// Every request value 0..255 through the real driver in one boot: the C program `virtio N`
// verifies the response it reads back (and exits non-zero on a mismatch), the driver prints
// the seed's response lines for each, and the backend logs the seed's five lines for each.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { requestLogLines, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { runUml } from '../../src/machine/uml.js';
import { assertNoKernelTrouble, assertNoUmlLeft, driverLinesFor, needGuest, startBackend, stripTimestamp } from '../helpers/uml.js';

after(() => assertNoUmlLeft());

test('virtio N for all 256 values of N in one boot: every response right, 256 x 5 backend lines', { timeout: 180_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const be = startBackend();
  try {
    const loop = 'n=0; while [ $n -lt 256 ]; do virtio $n || { echo "virtio $n failed: $?"; exit 1; }; n=$((n + 1)); done; echo "all 256 verified"';
    const r = await runUml({ guest: g, socket: be.socket, command: ['sh', '-c', loop], timeoutMs: 150_000 });
    const show = `lines (last 40):\n${r.lines.slice(-40).join('\n')}\nboot:\n${r.bootLines.slice(-20).join('\n')}`;
    assert.equal(r.timedOut, false, show);
    assert.equal(r.exitCode, 0, show);
    assert.equal(r.lines[r.lines.length - 1], 'all 256 verified', show);

    // Backend: exactly the seed's five lines per request, in order.
    const want: string[] = [];
    for (let n = 0; n < 256; n++) want.push(...requestLogLines(requestFor(n)));
    assert.equal(be.lines.length, 256 * 5);
    assert.deepEqual(be.lines, want);

    // Guest console: the driver's three response lines per value, in order, each after a callback line.
    const text = r.lines.slice(0, -1).map(stripTimestamp);
    const responses = text.filter((l) => l.startsWith('virtio response '));
    const wantResponses: string[] = [];
    for (let n = 0; n < 256; n++) wantResponses.push(...driverLinesFor(n));
    assert.deepEqual(responses, wantResponses);
    const acks = text.filter((l) => l === 'virtio test_request_done get ack').length;
    assert.ok(acks >= 256, `${acks} callbacks for 256 responses`);
    const other = text.filter((l) => !l.startsWith('virtio response ') && l !== 'virtio test_request_done get ack');
    assert.deepEqual(other, [], 'nothing else on the console');
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
    assert.deepEqual(be.warnings, []);
  } finally {
    await be.close();
  }
});
