/**
 * The vhost-user session's own emit sites, in process (test/trace/backend.test.ts runs the
 * daemon): vhost_user_send for every reply and every REPLY_ACK, with the header flags, payload
 * size and fds sent; virtio_notify_irqfd when a ring's call eventfd is written, and not for a
 * ring without one.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { INFLIGHT_DESCRIPTION_SIZE, U64_SIZE } from '../../src/vhost-user/payloads.js';
import { HeaderFlag, Request } from '../../src/vhost-user/protocol.js';
import { VirtioTestClient, type VirtioTestClientOptions } from '../../src/testing/virtio-test-client.js';
import { Recorder, withTracingAsync, type Recorded } from '../helpers/trace-recorder.js';
import { startServer } from '../vhost-user/helpers.js';

const REPLY = HeaderFlag.VERSION | HeaderFlag.REPLY;

/** Serves requests 1..n to a client made with `options`, tracing `events`; returns what was recorded and the runtime's vdev. */
async function traced(options: Partial<VirtioTestClientOptions>, n: number): Promise<{ events: Recorded[]; vdev: number }> {
  const srv = startServer();
  const rec = new Recorder();
  let vdev = -1;
  try {
    await withTracingAsync(['vhost_user_send', 'virtio_notify_irqfd'], rec, async () => {
      const c = await VirtioTestClient.connect({ socketPath: srv.socketPath, ...options });
      try {
        vdev = srv.server.session!.runtime.vdev;
        for (let k = 1; k <= n; k++) assert.deepEqual(await c.request(k), answer(requestFor(k)));
      } finally {
        c.close();
      }
      await srv.server.idle();
    });
  } finally {
    await srv.close();
  }
  return { events: rec.events, vdev };
}

const sent = (events: Recorded[], request: number): Recorded['fields'][] => events.filter((e) => e.name === 'vhost_user_send' && e.fields['req'] === request).map((e) => e.fields);

describe('trace: the vhost-user session (in process)', () => {
  it('vhost_user_send: replies with their size and fds, REPLY_ACKs as 8-byte replies; virtio_notify_irqfd per call written', async () => {
    const { events, vdev } = await traced({ inflight: true }, 3);
    assert.deepEqual(sent(events, Request.GET_FEATURES), [{ req: Request.GET_FEATURES, flags: REPLY, size: U64_SIZE, fds: 0 }]);
    assert.deepEqual(sent(events, Request.GET_INFLIGHT_FD), [{ req: Request.GET_INFLIGHT_FD, flags: REPLY, size: INFLIGHT_DESCRIPTION_SIZE, fds: 1 }]);
    // REPLY_ACK negotiated: requests without a reply of their own are acknowledged (8 bytes, no fds).
    assert.deepEqual(sent(events, Request.SET_MEM_TABLE), [{ req: Request.SET_MEM_TABLE, flags: REPLY, size: U64_SIZE, fds: 0 }]);
    assert.deepEqual(sent(events, Request.SET_VRING_KICK), [{ req: Request.SET_VRING_KICK, flags: REPLY, size: U64_SIZE, fds: 0 }]);
    const irqfd = events.filter((e) => e.name === 'virtio_notify_irqfd').map((e) => e.fields);
    assert.ok(irqfd.length >= 1 && irqfd.length <= 3, `one per used buffer notification, at most one per request (${irqfd.length})`);
    for (const f of irqfd) assert.deepEqual(f, { vdev, vq: 0 });
  });

  it('without REPLY_ACK nothing is acknowledged; without a call fd no virtio_notify_irqfd', async () => {
    const { events } = await traced({ replyAck: false, callFd: false }, 2);
    assert.deepEqual(sent(events, Request.SET_MEM_TABLE), []);
    assert.deepEqual(sent(events, Request.SET_VRING_KICK), []);
    // Replies still go out (the client also uses GET_FEATURES as a barrier when nothing is acked).
    const features = sent(events, Request.GET_FEATURES);
    assert.ok(features.length >= 1);
    for (const f of features) assert.deepEqual(f, { req: Request.GET_FEATURES, flags: REPLY, size: U64_SIZE, fds: 0 });
    assert.deepEqual(events.filter((e) => e.name === 'virtio_notify_irqfd'), []);
  });
});
