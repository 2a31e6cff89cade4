/**
 * GET_VRING_BASE drains the ring ([vhost-user "VHOST_USER_GET_VRING_BASE"]; BackendSession
 * drainFirst): the requests the device model is still working on are answered (used ring,
 * call) before the reply, so no I/O still running can write into buffers that are the guest's
 * again once the ring is stopped; the base in the reply counts them; requests sent after the
 * GET_VRING_BASE wait for its reply.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SlowDevice } from '../../src/device/slow-device.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { expectServesNext, settle, startServer, waitFor } from './helpers.js';

const DELAY_MS = 150;

describe('GET_VRING_BASE drains the ring', () => {
  it('requests the model holds are answered before the reply, and the base counts them', async () => {
    const srv = startServer({ createDevice: () => new SlowDevice(new VirtioTestDevice(), DELAY_MS) });
    try {
      const c = await VirtioTestClient.connect({ socketPath: srv.socketPath });
      const answered: number[] = [];
      const pending = [1, 2, 3].map((n) => c.request(n).then((r) => (answered.push(n), r)));
      await waitFor(() => srv.server.session?.runtime.queueStatus(0).held === 3, 'the model to hold the three requests');
      const t0 = performance.now();
      const base = await c.frontend.getVringBase(0);
      const waited = performance.now() - t0;
      assert.equal(base, 3, 'the ring stopped after the three requests, all answered');
      assert.ok(waited >= DELAY_MS / 3, `the reply waited for the model (${waited.toFixed(0)} ms)`);
      assert.equal(srv.server.session?.runtime.queueStatus(0).held, 0);
      assert.deepEqual(await Promise.all(pending), [1, 2, 3].map((n) => answer(requestFor(n))), 'every answer reached the used ring');
      assert.deepEqual(answered.sort(), [1, 2, 3]);
      // The connection goes on: the next request (GET_FEATURES) is handled after the reply.
      assert.equal(typeof (await c.frontend.getFeatures()), 'bigint');
      assert.deepEqual(srv.warnings, []);
      c.close();
    } finally {
      await srv.close();
    }
  });

  it('with nothing held the reply is immediate', async () => {
    const srv = startServer();
    try {
      const c = await VirtioTestClient.connect({ socketPath: srv.socketPath });
      assert.deepEqual(await c.request(7), answer(requestFor(7)));
      assert.equal(await c.frontend.getVringBase(0), 1);
      c.close();
    } finally {
      await srv.close();
    }
  });

  it('a front-end that leaves during the drain: the channel is paused, so the drain runs to its timeout (warned), then the session ends; the next front-end is served', async () => {
    const srv = startServer({ createDevice: () => new SlowDevice(new VirtioTestDevice(), DELAY_MS), drainTimeoutMs: DELAY_MS / 3 });
    try {
      const c = await VirtioTestClient.connect({ socketPath: srv.socketPath });
      const pending = [1, 2].map((n) => c.request(n).then(() => 'answered', () => 'failed'));
      await waitFor(() => srv.server.session?.runtime.queueStatus(0).held === 2, 'the model to hold the two requests');
      const reply = c.frontend.getVringBase(0).then(() => 'a reply', () => 'no reply');
      c.close();
      assert.equal(await reply, 'no reply');
      assert.deepEqual(await Promise.all(pending), ['failed', 'failed']);
      await srv.server.idle();
      assert.deepEqual(srv.warnings.filter((w) => /GET_VRING_BASE/.test(w)), [
        `vhost-user: GET_VRING_BASE for vring 0: 2 request(s) still in the device after ${DELAY_MS / 3} ms; stopping the ring without them (their answers are dropped; the inflight region keeps them)`,
      ]);
      await expectServesNext(srv);
    } finally {
      await srv.close();
    }
  });

  it('the back-end shutting down during the drain: the session ends at once; neither the drain timeout nor the model ending it later acts on the closed session', async () => {
    const srv = startServer({ createDevice: () => new SlowDevice(new VirtioTestDevice(), DELAY_MS), drainTimeoutMs: DELAY_MS / 3 });
    const c = await VirtioTestClient.connect({ socketPath: srv.socketPath });
    try {
      const pending = [1, 2].map((n) => c.request(n).then(() => 'answered', () => 'failed'));
      await waitFor(() => srv.server.session?.runtime.queueStatus(0).held === 2, 'the model to hold the two requests');
      const reply = c.frontend.getVringBase(0).then(() => 'a reply', () => 'no reply');
      await settle();
      const closing = srv.server.idle();
      await srv.close();
      await closing;
      assert.equal(await reply, 'no reply');
      // Past the drain timeout and the model's delay.
      await new Promise((r) => setTimeout(r, DELAY_MS * 1.5));
      assert.deepEqual(srv.warnings, []);
      assert.match(srv.events.join('\n'), /disconnected \(back-end shutting down\)/);
      // The client keeps its requests for a back-end that comes back (VirtioTestClient.reconnect); closing fails them.
      c.close();
      assert.deepEqual(await Promise.all(pending), ['failed', 'failed']);
    } finally {
      c.close();
    }
  });
});
