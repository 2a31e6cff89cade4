// Concurrent guest processes through the real driver (`virtio-stress -q P K`): every response
// read back exactly once and right (the guest's count), and every request served exactly once
// (the backend's count of request values, compared with what virtio-stress sends).
//
// The issue-4 load is 8 writers x 10,000 requests; its duration and requests/s are reported as
// test diagnostics (from the guest's VT_READY to its result line: boot and power-off excluded).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { runUml } from '../../src/machine/uml.js';
import {
  CountingTestDevice,
  assertNoKernelTrouble,
  assertNoUmlLeft,
  assertSameHistogram,
  needGuest,
  startBackend,
  stressHistogram,
} from '../helpers/uml.js';

after(() => assertNoUmlLeft());

async function stress(t: { skip: (m: string) => void; diagnostic: (m: string) => void }, p: number, k: number, window?: number): Promise<void> {
  const g = needGuest(t);
  if (!g) return;
  // print: false keeps the backend's five lines per request out of this process's memory.
  const be = startBackend({ createDevice: () => new CountingTestDevice({ print: false }), keepLines: false });
  try {
    let ready = 0;
    let done = 0;
    const cmd = ['virtio-stress', '-q', ...(window ? ['-w', String(window)] : []), String(p), String(k)];
    const r = await runUml({
      guest: g,
      socket: be.socket,
      command: cmd,
      timeoutMs: 300_000,
      onLine: (l) => {
        if (l === 'VT_READY') ready = performance.now();
        else if (l.startsWith('stress: ')) done = performance.now();
      },
    });
    const show = `lines:\n${r.lines.join('\n')}\nboot:\n${r.bootLines.slice(-20).join('\n')}`;
    assert.equal(r.timedOut, false, show);
    assert.deepEqual(r.lines, [`stress: P=${p} K=${k} ok=${p * k} bad=0 lost=0`], show);
    assert.equal(r.exitCode, 0, show);
    const seconds = (done - ready) / 1000;
    t.diagnostic(`${cmd.join(' ')}: ${p * k} requests in ${seconds.toFixed(2)} s = ${Math.round((p * k) / seconds)} requests/s (UML guest, in-process TypeScript backend)`);

    assert.equal(be.devices.length, 1);
    const dev = be.devices[0]!;
    assert.equal(dev.total, p * k, 'requests served');
    assert.equal(dev.other, 0);
    assertSameHistogram(dev.byType, stressHistogram(p, k), 'request values served');
    assert.deepEqual(be.warnings, []);
    assert.deepEqual(be.events, ['front-end 1 connected', 'front-end 1 disconnected']);
    assertNoKernelTrouble(r.bootLines);
  } finally {
    await be.close();
  }
}

test('8 guest processes x 1000 writes: ok=8000 bad=0 lost=0, each request served once', { timeout: 120_000 }, async (t) => {
  await stress(t, 8, 1000);
});

test('a window larger than the ring (8 x 1000, 300 outstanding each): writers sleep on a full ring, nothing lost', { timeout: 120_000 }, async (t) => {
  await stress(t, 8, 1000, 300);
});

test('issue-4 load: 8 guest writers x 10,000 requests: zero lost, zero duplicated, every response right', { timeout: 360_000 }, async (t) => {
  await stress(t, 8, 10_000);
});
