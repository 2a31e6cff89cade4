/**
 * Device lifecycle over vhost-user with requests in flight: a guest reset (SET_STATUS 0, or
 * RESET_DEVICE for a front-end without PROTOCOL_F_STATUS) while the device model holds
 * requests, ring disable/re-enable and restarts with held requests, and re-negotiation.
 * The device here answers at once but completes (returns the used element) only when the
 * test releases it, like a device doing real asynchronous I/O. A reset's GET_VRING_BASE drains
 * the ring (test/vhost-user/get-vring-base-drain.test.ts); these tests are about a device that
 * does not answer in time, so the drain gives up after DRAIN_MS and the held requests are
 * dropped, as the session does after its (10 s) drain timeout.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DeviceContext, VirtioDevice } from '../../src/device/device.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { answer, requestFor, type TestResponse } from '../../src/devices/virtio-test/protocol.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { FeatureBit, Status, bit, hasFeature } from '../../src/virtio/constants.js';
import { VHOST_USER_F_PROTOCOL_FEATURES } from '../../src/vhost-user/protocol.js';
import { VhostUserError } from '../../src/vhost-user/frontend.js';
import { VirtioTestClient, type VirtioTestClientOptions } from '../../src/testing/virtio-test-client.js';
import { native } from '../../src/vhost-user/native/index.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';
import { leakedFds, memfdMappings, openFds, settle, startRingAt, startServer, waitFor, type TestServer } from './helpers.js';

/** virtio-test whose completions wait for `release()` while `holding` is on. */
const DRAIN_MS = 50;

class DeferredDevice implements VirtioDevice {
  readonly inner = new VirtioTestDevice({ print: false });
  readonly deviceId = this.inner.deviceId;
  readonly features = this.inner.features;
  readonly configSize = this.inner.configSize;
  readonly queueMaxSizes = this.inner.queueMaxSizes;
  holding = false;
  /** Every chain handed to the device, by request type (a resubmitted chain counts again). */
  readonly handled: number[] = [];
  private held: (() => void)[] = [];
  readConfig(offset: number, into: Uint8Array): void {
    this.inner.readConfig(offset, into);
  }
  writeConfig(offset: number, data: Uint8Array, ctx: DeviceContext): void {
    void ctx;
    this.inner.writeConfig(offset, data);
  }
  reset(): void {
    this.inner.reset();
  }
  get heldCount(): number {
    return this.held.length;
  }
  handleChain(queue: number, chain: DescriptorChain, ctx: DeviceContext): number | Promise<number> {
    const head = new Uint8Array(4);
    chain.read(head);
    this.handled.push(new DataView(head.buffer).getUint32(0, true));
    const len = this.inner.handleChain(queue, chain, ctx); // the answer is written now...
    if (!this.holding) return len;
    return new Promise<number>((resolve) => this.held.push(() => resolve(len))); // ...and completed later
  }
  /** Completes every held chain. */
  release(): void {
    for (const r of this.held.splice(0)) r();
  }
}

const DRIVER_READY = Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;

describe('vhost-user lifecycle with requests in flight', { timeout: 30_000 }, () => {
  let srv: TestServer;
  let device: () => DeferredDevice;
  before(() => {
    srv = startServer({ createDevice: () => new DeferredDevice(), drainTimeoutMs: DRAIN_MS });
    device = () => srv.devices[srv.devices.length - 1] as DeferredDevice;
  });
  after(async () => {
    await srv.close();
  });

  async function withClient(options: Partial<VirtioTestClientOptions>, fn: (c: VirtioTestClient) => Promise<void>): Promise<void> {
    const c = await VirtioTestClient.connect({ socketPath: srv.socketPath, queueSize: 16, ...options });
    try {
      await fn(c);
    } finally {
      c.close();
      await srv.server.idle();
    }
  }

  /** Settles each promise into its value or its error. */
  const outcome = <T>(p: Promise<T>): Promise<T | Error> => p.catch((e: Error) => e);

  for (const status of [true, false]) {
    it(`a guest reset (${status ? 'SET_STATUS 0' : 'RESET_DEVICE, no PROTOCOL_F_STATUS'}) with held requests: they fail, late completions are dropped, re-negotiation serves (3 rounds)`, async () => {
      await withClient({ status }, async (c) => {
        for (let round = 0; round < 3; round++) {
          const d = device();
          d.holding = true;
          const base = round * 20;
          const held = [1, 2, 3, 4, 5].map((k) => outcome(c.request(base + k)));
          await waitFor(() => d.heldCount === 5, 'five held requests');
          // Re-negotiate other features each round.
          await c.reset({ eventIdx: round % 2 === 0, indirect: round !== 1 });
          for (const r of await Promise.all(held)) assert.ok(r instanceof VhostUserError && /device reset/.test(r.message), `in-flight request failed by the reset: ${r}`);
          assert.equal(c.usedIdx(), 0, 'fresh rings after the reset');
          // The device completes the old requests now: the runtime must drop them.
          d.holding = false;
          d.release();
          await settle();
          assert.equal(c.usedIdx(), 0, 'no used element from before the reset reaches the new ring');
          const ns = [10, 11, 12].map((k) => base + k);
          const got = await c.requestMany(ns);
          ns.forEach((n, i) => assert.deepEqual(got[i], answer(requestFor(n))));
          assert.equal(c.usedIdx(), 3, 'exactly the new requests were used');
          const rt = srv.server.session!.runtime;
          assert.equal(hasFeature(rt.driverFeatures, FeatureBit.RING_EVENT_IDX), round % 2 === 0);
          if (status) assert.equal(await c.status(), DRIVER_READY);
        }
      });
    });
  }

  it('a ring disabled and re-enabled while the device holds requests: every request is answered exactly once', async () => {
    await withClient({}, async (c) => {
      const d = device();
      d.holding = true;
      const answers: TestResponse[] = [];
      const all = c.requestMany([1, 2, 3, 4]).then((r) => answers.push(...r));
      await waitFor(() => d.heldCount === 4, 'four held requests');
      await c.frontend.setVringEnable(0, false);
      // The device finishes while the ring is disabled: nothing may be published now...
      d.holding = false;
      d.release();
      await settle();
      assert.equal(c.usedIdx(), 0, 'a disabled ring is not touched');
      // ...and nothing may be lost when it is enabled again.
      await c.frontend.setVringEnable(0, true);
      await all;
      assert.deepEqual(answers, [1, 2, 3, 4].map((n) => answer(requestFor(n))));
      assert.equal(c.usedIdx(), 4, 'each request used once');
      assert.deepEqual(await c.requestMany([5, 6]), [5, 6].map((n) => answer(requestFor(n))));
      assert.equal(c.usedIdx(), 6);
    });
  });

  it('a ring restarted (new kick fd, memory table sent again) while the device holds requests: nothing lost, nothing duplicated', async () => {
    await withClient({}, async (c) => {
      const d = device();
      d.holding = true;
      const all = c.requestMany([7, 8, 9]);
      await waitFor(() => d.heldCount === 3, 'three held requests');
      // Memory table again (QEMU does this on memory hot-plug): every ring stops and restarts.
      await c.frontend.setMemTable(c.ram.descriptions(), c.ram.fds);
      d.holding = false;
      d.release(); // completions of chains taken before the restart
      const ringBefore = c.usedIdx();
      await c.restartRing(c.availIdx()); // same base as where the ring stood: new kick/call fds
      assert.deepEqual(await all, [7, 8, 9].map((n) => answer(requestFor(n))));
      await settle();
      assert.equal(c.usedIdx(), 3, `each request used once (used.idx ${ringBefore} before the restart)`);
      assert.deepEqual(await c.request(10), answer(requestFor(10)));
    });
  });

  it('SET_FEATURES again with the same features, no PROTOCOL_F_STATUS: the running device is not reset, held requests are answered', async () => {
    await withClient({ status: false }, async (c) => {
      const d = device();
      d.holding = true;
      const held = c.requestMany([1, 2]);
      await waitFor(() => d.heldCount === 2, 'two held requests');
      const rt = srv.server.session!.runtime;
      const before = rt.status;
      const queue = rt.activeQueue(0);
      assert.ok(queue);
      // Without PROTOCOL_F_STATUS other features mean the driver started over (a reset); the
      // same ones again do not ([vhost-user "Ring states"]; virtio 1.2 §3.1.1).
      await c.frontend.setFeatures(c.features | bit(VHOST_USER_F_PROTOCOL_FEATURES));
      assert.equal(rt.status, before, 'status unchanged');
      assert.equal(rt.activeQueue(0), queue, 'the ring kept running');
      d.holding = false;
      d.release();
      assert.deepEqual(await held, [1, 2].map((n) => answer(requestFor(n))), 'the held requests completed on the same rings');
      assert.deepEqual(await c.requestMany([3]), [answer(requestFor(3))]);
      assert.equal(c.usedIdx(), 3);
    });
  });

  it('SET_VRING_ADDR moving a stopped ring while the device holds requests: they belong to the old ring, neither resubmitted nor published on the new one', async () => {
    await withClient({}, async (c) => {
      const warningsBefore = srv.warnings.length;
      const d = device();
      d.holding = true;
      const held = [1, 2].map((k) => outcome(c.request(k)));
      await waitFor(() => d.heldCount === 2, 'two held requests');
      // GET_VRING_BASE gives up on them after DRAIN_MS: the session keeps them for a restart of this ring.
      const base = await c.frontend.getVringBase(0);
      assert.equal(base, 2);
      const ram = c.ram;
      const moved = packedLayout(ram.alloc(packedLayout(0, 16).bytes, 4096), 16);
      const kick = await startRingAt(c, 16, base, moved);
      try {
        await c.frontend.setVringEnable(0, true);
        d.holding = false;
        d.release();
        await settle();
        const handled = d.handled.length;
        assert.equal(handled, 2, 'nothing handed to the device again');
        const newRing = ringViewsFromGuest(ram.memory, moved);
        assert.equal(Atomics.load(newRing.used16, 1), 0, 'no completion of the old ring reached the new one');
        const warnings = srv.warnings.slice(warningsBefore);
        assert.ok(warnings.some((w) => /GET_VRING_BASE for vring 0: 2 request\(s\) still in the device/.test(w)), warnings.join('\n'));
        assert.ok(!warnings.some((w) => /resubmitting/.test(w)), warnings.join('\n'));
        assert.equal(srv.server.session!.runtime.queueStatus(0).held, 0);
      } finally {
        c.close();
        native.close(kick);
      }
      for (const r of await Promise.all(held)) assert.ok(r instanceof VhostUserError);
    });
  });

  it('a front-end that reuses its inflight fd across a reset gets no stale resubmission', async () => {
    await withClient({ inflight: true }, async (c) => {
      const warningsBefore = srv.warnings.length;
      const d = device();
      d.holding = true;
      const held = [1, 2, 3].map((k) => outcome(c.request(k)));
      await waitFor(() => d.heldCount === 3, 'three held requests');
      // Keep the inflight buffer across the reset (QEMU's vhost-user-blk frees it; nothing obliges a front-end to).
      const keep = c as unknown as { dropInflight(): void };
      const original = keep.dropInflight;
      keep.dropInflight = () => {};
      try {
        await c.reset();
      } finally {
        keep.dropInflight = original;
      }
      for (const r of await Promise.all(held)) assert.ok(r instanceof VhostUserError);
      d.holding = false;
      d.release();
      const handledBefore = d.handled.length;
      assert.deepEqual(await c.requestMany([20, 21]), [20, 21].map((n) => answer(requestFor(n))));
      assert.deepEqual(d.handled.slice(handledBefore), [20, 21], 'only the new requests were handed to the device');
      assert.equal(c.usedIdx(), 2);
      const warnings = srv.warnings.slice(warningsBefore);
      assert.ok(!warnings.some((w) => /resubmitting|device error/.test(w)), warnings.join('\n'));
    });
  });

  it('a front-end that disconnects while the device holds requests: released completions do not crash, nothing leaks', async () => {
    // warm-up so that lazily created process-wide fds exist
    await withClient({}, async (c) => void (await c.request(1)));
    const fdsBefore = openFds();
    const c = await VirtioTestClient.connect({ socketPath: srv.socketPath, queueSize: 16 });
    const d = device();
    d.holding = true;
    const held = [1, 2, 3].map((k) => outcome(c.request(k)));
    await waitFor(() => d.heldCount === 3, 'three held requests');
    c.close();
    await srv.server.idle();
    for (const r of await Promise.all(held)) assert.ok(r instanceof VhostUserError);
    // The session is gone, but the model's I/O may still write into guest memory (a preadv on
    // libuv's pool): the mappings stay until the model has answered.
    assert.notDeepEqual(memfdMappings(), [], 'guest memory unmapped while the device still owed answers');
    d.release();
    await settle();
    assert.deepEqual(leakedFds(fdsBefore), []);
    assert.deepEqual(memfdMappings(), []);
    await withClient({}, async (c2) => assert.deepEqual(await c2.request(4), answer(requestFor(4))));
  });
});
