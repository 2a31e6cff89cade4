/**
 * The vhost-user back-end (in this process) against the TypeScript front-end: every request,
 * features on and off, memory layouts, config space, status, device errors, reset and
 * re-negotiation, ring stop/start, polling, and many requests.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DeviceContext } from '../../src/device/device.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { OFFERED_PROTOCOL_FEATURES } from '../../src/vhost-user/backend-session.js';
import { VhostUserError } from '../../src/vhost-user/frontend.js';
import { native } from '../../src/vhost-user/native/index.js';
import { encodeVringState } from '../../src/vhost-user/payloads.js';
import { ProtocolFeature, Request, VHOST_USER_F_PROTOCOL_FEATURES, pbit } from '../../src/vhost-user/protocol.js';
import { VirtioTestClient, type VirtioTestClientOptions } from '../../src/testing/virtio-test-client.js';
import { FeatureBit, Status, bit, hasFeature } from '../../src/virtio/constants.js';
import { leakedFds, memfdMappings, openFds, settle, startServer, waitFor, type TestServer } from './helpers.js';

const DRIVER_READY = Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;

async function withClient<T>(srv: TestServer, options: Partial<VirtioTestClientOptions>, fn: (c: VirtioTestClient) => Promise<T>): Promise<T> {
  const c = await VirtioTestClient.connect({ socketPath: srv.socketPath, ...options });
  try {
    return await fn(c);
  } finally {
    c.close();
    await srv.server.idle();
  }
}

function expectAnswers(ns: number[], got: { ret: number; arg1: number; arg2: number }[]): void {
  assert.equal(got.length, ns.length);
  ns.forEach((n, i) => assert.deepEqual(got[i], answer(requestFor(n)), `answer ${i} (request ${n})`));
}

describe('vhost-user back-end with the TypeScript front-end', () => {
  let srv: TestServer;
  before(() => {
    srv = startServer();
  });
  after(async () => {
    await srv.close();
  });

  it('answers the seed request and logs the seed lines (two regions, all features)', async () => {
    await withClient(srv, {}, async (c) => {
      assert.deepEqual(await c.request(10), { ret: 111, arg1: 112, arg2: 113 });
      assert.equal(await c.status(), DRIVER_READY);
      const rt = srv.server.session!.runtime;
      assert.ok(hasFeature(rt.driverFeatures, FeatureBit.RING_EVENT_IDX));
      assert.ok(hasFeature(rt.driverFeatures, FeatureBit.RING_INDIRECT_DESC));
      assert.equal(srv.server.session!.mapped.count, 2);
    });
    assert.deepEqual(srv.lines.slice(-5), [
      'QEMU_BACK_END: >>> get type [ 10 ] form the front end <<<',
      'QEMU_BACK_END: >>> get arg1 [ 11 ] form the front end <<<',
      'QEMU_BACK_END: >>> get arg2 [ 12 ] form the front end <<<',
      'QEMU_BACK_END: >>> get arg3 [ 13 ] form the front end <<<',
      'QEMU_BACK_END: >>> get arg3 [ hello back end! ] form the front end <<<',
    ]);
  });

  it('offers the documented virtio and protocol features, one queue, 32 memory slots', async () => {
    await withClient(srv, {}, async (c) => {
      const f = await c.frontend.getFeatures();
      const want =
        bit(0) |
        bit(FeatureBit.VERSION_1) |
        bit(FeatureBit.RING_INDIRECT_DESC) |
        bit(FeatureBit.RING_EVENT_IDX) |
        bit(VHOST_USER_F_PROTOCOL_FEATURES);
      // VIRTIO_F_RING_PACKED only with packedRing (packed.test.ts): virtio_uml would take it.
      assert.equal(f & bit(FeatureBit.RING_PACKED), 0n);
      assert.equal(f, want);
      const p = await c.frontend.getProtocolFeatures();
      assert.equal(p, OFFERED_PROTOCOL_FEATURES);
      for (const bitNo of [0, 3, 5, 9, 12, 13, 15, 16]) assert.ok(p & pbit(bitNo), `protocol feature ${bitNo}`);
      assert.equal(p & pbit(ProtocolFeature.INBAND_NOTIFICATIONS), 0n);
      assert.equal(await c.frontend.getQueueNum(), 1);
      assert.equal(await c.frontend.getMaxMemSlots(), 32);
    });
  });

  for (const eventIdx of [false, true]) {
    for (const indirect of [false, true]) {
      for (const replyAck of [false, true]) {
        it(`serves 300 requests with EVENT_IDX ${eventIdx ? 'on' : 'off'}, INDIRECT ${indirect ? 'on' : 'off'}, REPLY_ACK ${replyAck ? 'on' : 'off'}`, async () => {
          await withClient(srv, { eventIdx, indirect, replyAck, queueSize: 64 }, async (c) => {
            const rt = srv.server.session!.runtime;
            assert.equal(hasFeature(rt.driverFeatures, FeatureBit.RING_EVENT_IDX), eventIdx);
            assert.equal(hasFeature(rt.driverFeatures, FeatureBit.RING_INDIRECT_DESC), indirect);
            assert.equal(srv.server.session!.protocolFeatures & pbit(ProtocolFeature.REPLY_ACK) ? true : false, replyAck);
            const ns = Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
            expectAnswers(ns, await c.requestMany(ns));
            expectAnswers([1, 2], [await c.request(1), await c.request(2)]);
          });
        });
      }
    }
  }

  it('behaves for a front-end like virtio_uml: no SET_STATUS, one region; the back-end keeps the status', async () => {
    await withClient(srv, { status: false, regions: [{ guestAddr: 0x1000_0000, size: 2 << 20, mmapOffset: 0x1000_0000 }] }, async (c) => {
      assert.deepEqual(await c.request(200), answer(requestFor(200)));
      assert.equal(srv.server.session!.runtime.status, DRIVER_READY);
      assert.equal(srv.server.session!.mapped.count, 1);
    });
  });

  it('works without VHOST_USER_F_PROTOCOL_FEATURES: SET_FEATURES enables the rings', async () => {
    await withClient(srv, { protocolFeatures: false }, async (c) => {
      assert.equal(srv.server.session!.protocolFeatures, 0n);
      assert.equal(srv.server.session!.vrings[0]!.enabled, true);
      expectAnswers([3, 4, 5], await c.requestMany([3, 4, 5]));
    });
  });

  it('takes memory with ADD_MEM_REG and gives it back with REM_MEM_REG', async () => {
    await withClient(srv, { memSlots: true }, async (c) => {
      const session = srv.server.session!;
      assert.equal(session.mapped.count, 2);
      assert.deepEqual(await c.request(9), answer(requestFor(9)));
      const second = c.ram.descriptions()[1]!;
      await assert.rejects(c.frontend.remMemReg({ ...second, size: second.size + 4096n }), /back-end reports failure/);
      await c.frontend.remMemReg(second);
      assert.equal(session.mapped.count, 1);
      assert.equal(session.memory.regionList.length, 1);
      await c.frontend.addMemReg(second, c.ram.fds[1]!);
      assert.equal(session.mapped.count, 2);
      assert.deepEqual(await c.request(19), answer(requestFor(19)));
    });
  });

  it('refuses bad ring configuration with an error ack and names the problem', async () => {
    await withClient(srv, {}, async (c) => {
      const fe = c.frontend;
      await assert.rejects(fe.setVringNum(0, 100), /back-end reports failure/);
      await assert.rejects(fe.setVringNum(0, 65536), /back-end reports failure/);
      await assert.rejects(fe.setVringNum(1, 64), /back-end reports failure/);
      await assert.rejects(fe.setVringAddr(0, { desc: 0x5555_0000_0008, avail: 0x5555_0000_1000, used: 0x5555_0000_2000 }), /failure/);
      await assert.rejects(fe.setVringAddr(0, { desc: 0x1234_0000, avail: 0x1234_1000, used: 0x1234_2000 }), /failure/);
      await assert.rejects(fe.setVringBase(0, 0x10000), /failure/);
      await assert.rejects(fe.post(Request.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 2 })), /failure/);
      await assert.rejects(fe.getConfig(8, 8), /GET_CONFIG: reply of 0 bytes/);
      assert.ok(srv.warnings.some((w) => /SET_VRING_NUM refused: vring 0: size 100 is not a power of two/.test(w)));
      assert.ok(srv.warnings.some((w) => /vring index 1 out of range/.test(w)));
      assert.ok(srv.warnings.some((w) => /misaligned ring/.test(w)));
      assert.ok(srv.warnings.some((w) => /not inside one memory region/.test(w)));
      assert.ok(srv.warnings.some((w) => /outside the 12-byte config space/.test(w)));
      // The valid configuration is still in place.
      assert.deepEqual(await c.request(77), answer(requestFor(77)));
    });
  });

  it('reads and writes the config space and forwards config change notifications', async () => {
    let changes = 0;
    await withClient(srv, { onConfigChange: () => changes++ }, async (c) => {
      assert.deepEqual(await c.readConfig(), { numPages: 0, actual: 0, event: 0 });
      await c.frontend.setConfig(4, new Uint8Array([7, 0, 0, 0, 9, 0, 0, 0]));
      assert.deepEqual(await c.readConfig(), { numPages: 0, actual: 7, event: 9 });
      // num_pages is the device's: a driver write is ignored by the model.
      await c.frontend.setConfig(0, new Uint8Array([1, 1, 1, 1]));
      assert.equal((await c.readConfig()).numPages, 0);
      await assert.rejects(c.frontend.setConfig(0, new Uint8Array(4), 2), /failure/);
      const session = srv.server.session!;
      const device = srv.devices[srv.devices.length - 1] as VirtioTestDevice;
      const ctx = { configChanged: () => session.runtime.configChanged() } as DeviceContext;
      device.setNumPages(4242, ctx);
      await waitFor(() => changes === 1, 'BACKEND_CONFIG_CHANGE_MSG');
      assert.equal(c.frontend.configChanges, 1);
      assert.equal((await c.readConfig()).numPages, 4242);
    });
  });

  it('a malformed chain: NEEDS_RESET in GET_STATUS, the err fd fires; reset and re-negotiation recover', async () => {
    await withClient(srv, {}, async (c) => {
      const bad = c.submitRaw([10], [12]).catch((e: Error) => e);
      await waitFor(() => c.errSignals > 0, 'the error eventfd');
      const status = await c.status();
      assert.ok(status & Status.NEEDS_RESET, `status ${status} has NEEDS_RESET`);
      assert.ok(srv.warnings.some((w) => /device error on queue 0: .*DEVICE_REQUEST_INVALID/.test(w)));
      await waitFor(() => c.frontend.configChanges > 0, 'the config change notification of the device error');
      await c.reset();
      assert.ok((await bad) instanceof VhostUserError, 'the malformed request was failed by the reset');
      assert.equal(await c.status(), DRIVER_READY);
      assert.deepEqual(await c.request(33), answer(requestFor(33)));
    });
  });

  it('resets and re-negotiates other features on the same connection (SET_STATUS 0)', async () => {
    await withClient(srv, { eventIdx: false, indirect: false }, async (c) => {
      assert.deepEqual(await c.request(1), answer(requestFor(1)));
      const connections = srv.server.connections;
      const session = srv.server.session;
      await c.reset({ eventIdx: true, indirect: true });
      const rt = srv.server.session!.runtime;
      assert.ok(hasFeature(rt.driverFeatures, FeatureBit.RING_EVENT_IDX));
      expectAnswers([5, 6, 7], await c.requestMany([5, 6, 7]));
      assert.equal(srv.server.connections, connections, 'no new connection');
      assert.equal(srv.server.session, session, 'the same session');
    });
  });

  it('resets with RESET_DEVICE when the front-end does not use SET_STATUS', async () => {
    await withClient(srv, { status: false }, async (c) => {
      const device = srv.devices[srv.devices.length - 1] as VirtioTestDevice;
      assert.deepEqual(await c.request(1), answer(requestFor(1)));
      assert.equal(device.served, 1);
      await c.reset({ eventIdx: false });
      assert.equal(device.served, 0, 'the device model was reset');
      assert.ok(!hasFeature(srv.server.session!.runtime.driverFeatures, FeatureBit.RING_EVENT_IDX));
      assert.deepEqual(await c.request(2), answer(requestFor(2)));
    });
  });

  it('GET_VRING_BASE stops the ring; nothing is processed until it is started again', async () => {
    await withClient(srv, {}, async (c) => {
      const device = srv.devices[srv.devices.length - 1] as VirtioTestDevice;
      expectAnswers([1, 2, 3], await c.requestMany([1, 2, 3]));
      assert.equal(await c.frontend.getVringBase(0), 3);
      let done = false;
      const p = c.request(4).then((r) => ((done = true), r));
      await settle();
      assert.equal(device.served, 3);
      assert.equal(done, false);
      await c.restartRing(3);
      assert.deepEqual(await p, answer(requestFor(4)));
      assert.equal(device.served, 4);
    });
  });

  it('a disabled ring is not processed; enabling it serves what waited', async () => {
    await withClient(srv, {}, async (c) => {
      const device = srv.devices[srv.devices.length - 1] as VirtioTestDevice;
      await c.frontend.setVringEnable(0, false);
      const p = c.requestMany([8, 9]);
      await settle();
      assert.equal(device.served, 0);
      await c.frontend.setVringEnable(0, true);
      expectAnswers([8, 9], await p);
    });
  });

  it('polls when the front-end passes no kick fd and no call fd', async () => {
    await withClient(srv, { kickFd: false, callFd: false, errFd: false }, async (c) => {
      assert.equal(c.kickEventFd, null);
      expectAnswers([100, 101, 102], await c.requestMany([100, 101, 102]));
      assert.deepEqual(await c.request(103), answer(requestFor(103)));
    });
  });

  it('SET_OWNER, RESET_OWNER, SET_VRING_CALL/ERR replacement keep the session usable', async () => {
    await withClient(srv, {}, async (c) => {
      await c.frontend.setOwner();
      assert.ok(srv.warnings.some((w) => /SET_OWNER again/.test(w)));
      await c.frontend.resetOwner();
      assert.equal(srv.server.session!.vrings[0]!.enabled, false);
      await c.frontend.setVringEnable(0, true);
      const call = native.eventfd(0, true);
      await c.frontend.setVringCall(0, call);
      await c.frontend.setVringErr(0, null);
      native.close(call);
      await c.restartRing(c.usedIdx());
      assert.deepEqual(await c.request(50), answer(requestFor(50)));
    });
  });

  it('answers 10,000 requests, each once and correctly', async () => {
    const quiet = startServer({ createDevice: () => new VirtioTestDevice({ print: false, queueSize: 256 }) });
    try {
      await withClient(quiet, { queueSize: 256 }, async (c) => {
        const ns = Array.from({ length: 10_000 }, (_, i) => i);
        const requests = ns.map((n) => ({ ...requestFor(n & 0xff), type: n, arg1: n * 3, arg2: n * 3 + 1, arg3: n * 3 + 2 }));
        const got = await c.requestMany(requests);
        got.forEach((r, i) => assert.deepEqual(r, answer(requests[i]!), `request ${i}`));
        const device = quiet.devices[0] as VirtioTestDevice;
        assert.equal(device.served, 10_000);
        assert.equal(c.usedIdx(), 10_000 & 0xffff);
      });
    } finally {
      await quiet.close();
    }
  });

  it('leaks no fd and no mapping over whole sessions (inflight, back-end channel, two regions)', async () => {
    const s = startServer();
    try {
      // One warm-up session so lazily created process-wide fds exist before counting.
      await withClient(s, {}, async (c) => void (await c.request(1)));
      const before = openFds();
      const mappingsBefore = memfdMappings();
      assert.deepEqual(mappingsBefore, []);
      let mappingsDuring = 0;
      for (let i = 0; i < 3; i++) {
        await withClient(s, { inflight: true, memSlots: i === 1, kickFd: i !== 2 }, async (c) => {
          expectAnswers([i, i + 1], await c.requestMany([i, i + 1]));
          await c.reset();
          assert.deepEqual(await c.request(i + 2), answer(requestFor(i + 2)));
          mappingsDuring = memfdMappings().length;
        });
      }
      await settle();
      assert.deepEqual(leakedFds(before), []);
      // Both sides map both RAM regions and the inflight buffer while connected; none is left after.
      assert.ok(mappingsDuring >= 5, `${mappingsDuring} memfd mappings while connected`);
      assert.deepEqual(memfdMappings(), []);
    } finally {
      await s.close();
    }
  });
});
