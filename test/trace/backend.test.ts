/** `virtio-backend --trace`: the vhost-user requests (the former --trace), the ring events, a JSON file. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { cliPath } from '../helpers/paths.js';
import { checkChromeTrace, type TraceEventJson } from '../helpers/chrome-trace.js';
import { spawnNode, tempDir } from '../vhost-user/helpers.js';

/** Serves `requests` virtio-test requests with the given trace options; returns stderr's lines after SIGTERM. */
async function traced(program: string, args: string[], requests: number[], dir: string): Promise<string[]> {
  const socketPath = path.join(dir, 'be.sock');
  const sock = program === 'virtio-test-backend' ? ['--socket', socketPath] : ['--device', 'virtio-test', '--socket-path', socketPath];
  const be = spawnNode(cliPath(program), [...sock, '--quiet', ...args]);
  try {
    await be.waitForLine(/listening/);
    const c = await VirtioTestClient.connect({ socketPath });
    assert.deepEqual(await c.requestMany(requests), requests.map((n) => answer(requestFor(n))));
    c.close();
    await be.waitForLine(/front-end 1 disconnected/);
    be.proc.kill('SIGTERM');
    assert.deepEqual(await be.exited, { code: 0, signal: null });
    return be.stderr;
  } finally {
    be.proc.kill('SIGKILL');
  }
}

const LINE = /^\d+\.\d{6} main [a-z_]+( [a-z_]+=\S+)*$/;

describe('virtio-backend --trace', () => {
  it('alone: every vhost-user request received, decoded (what --trace printed before)', async () => {
    const tmp = tempDir();
    try {
      const lines = await traced('virtio-test-backend', ['--trace'], [10], tmp.dir);
      assert.ok(lines.length > 10);
      for (const l of lines) assert.match(l.replace(/payload="[^"]*"/, 'payload=x'), LINE);
      assert.match(lines[0]!, /^\d+\.\d{6} main vhost_user_recv req=\d+ request=[A-Z_]+ flags=0x\d+ size=\d+ fds=\d+ payload=/);
      assert.ok(lines.some((l) => / request=SET_MEM_TABLE flags=0x\w+ size=\d+ fds=\d+ payload="[0-9a-f ]+( \.\.\.)?"$/.test(l)));
      assert.ok(lines.some((l) => / request=SET_VRING_KICK /.test(l)));
      // Replies too: GET_FEATURES answered with 8 bytes, flags VERSION|REPLY (0x5).
      const features = lines.findIndex((l) => / vhost_user_recv req=1 request=GET_FEATURES /.test(l));
      assert.match(lines[features + 1] ?? '', /^\d+\.\d{6} main vhost_user_send req=1 request=GET_FEATURES flags=0x5 size=8 fds=0$/);
      assert.ok(!lines.some((l) => / virtqueue_pop /.test(l)), 'only vhost_user_*');
    } finally {
      tmp.remove();
    }
  });

  it("patterns: the device runtime's ring events, from the same code as the embedded machine", async () => {
    const tmp = tempDir();
    try {
      const lines = await traced('virtio-backend', ['--trace', 'virtqueue_*,virtio_notify*'], [1, 2, 3], tmp.dir);
      const names = lines.map((l) => l.split(' ')[2]);
      assert.equal(names.filter((n) => n === 'virtqueue_pop').length, 3);
      assert.equal(names.filter((n) => n === 'virtqueue_fill').length, 3);
      assert.ok(names.includes('virtqueue_flush'));
      assert.ok(names.includes('virtio_notify'));
      // Each notification sent goes out through the call eventfd (QEMU's irqfd path), right after.
      const sent = names.flatMap((n, i) => (n === 'virtio_notify' ? [names[i + 1]] : []));
      assert.ok(sent.length > 0 && sent.every((n) => n === 'virtio_notify_irqfd'), names.join());
      assert.ok(names.every((n) => /^(virtqueue_|virtio_notify)/.test(n!)), names.join());
    } finally {
      tmp.remove();
    }
  });

  it('--trace-file: a Chrome JSON file, closed on SIGTERM', async () => {
    const tmp = tempDir();
    try {
      const file = path.join(tmp.dir, 'be.json');
      const lines = await traced('virtio-backend', ['--trace', '*', '--trace-file', file], [1, 2, 3, 4], tmp.dir);
      assert.deepEqual(lines.filter((l) => /^\d+\.\d{6} /.test(l)), [], 'no text lines');
      const doc = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEventJson[] };
      assert.deepEqual(checkChromeTrace(doc), []);
      assert.equal(doc.traceEvents.filter((e) => e.ph === 'b' && e.cat === 'device').length, 4, 'a span per request');
      assert.ok(doc.traceEvents.some((e) => e.name === 'vhost_user_recv' && e.args?.['request'] === 'SET_VRING_ADDR'));
    } finally {
      tmp.remove();
    }
  });

  it('a pattern that matches nothing: exit 2 with close names', () => {
    const r = spawnSync(process.execPath, [cliPath('virtio-backend'), '--device', 'virtio-test', '--socket-path', '/tmp/none.sock', '--trace', 'vhost_user_rcv'], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /no trace event matches 'vhost_user_rcv' \(did you mean vhost_user_recv/);
  });
});
