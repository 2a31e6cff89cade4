/**
 * Inflight I/O tracking across a back-end crash ([vhost-user "Inflight I/O tracking"]): a
 * back-end holding requests out of order is killed with SIGKILL; the front-end reconnects to
 * a new back-end (the CLI) with the same inflight buffer, and the new back-end resubmits
 * exactly the requests that were in flight, in the order they were taken.
 *
 * Then, in this process, the InflightTrackingDevice that does the bookkeeping in the back-end:
 * which heads the model still holds (resubmitted oldest first when a ring restarts), and the
 * record of each head taken into the inflight region.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { DeviceContext, VirtioDevice } from '../../src/device/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE, answer, decodeResponse, encodeRequest, requestFor, type TestRequest, type TestResponse } from '../../src/devices/virtio-test/protocol.js';
import { native } from '../../src/vhost-user/native/index.js';
import { DescFlags } from '../../src/virtio/constants.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { InflightQueue, inflightQueueRegionSize } from '../../src/vhost-user/inflight.js';
import { InflightTrackingDevice } from '../../src/vhost-user/inflight-tracker.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { cliPath, repoRoot } from '../helpers/paths.js';
import { spawnNode, startRingAt, startServer, tempDir, waitFor } from './helpers.js';

const holdingBackend = path.join(repoRoot, 'dist', 'test', 'vhost-user', 'fixtures', 'holding-backend.js');

describe('vhost-user inflight resubmission after SIGKILL', () => {
  for (const statusFeature of [true, false]) {
    it(`resubmits the held requests to the restarted back-end (${statusFeature ? 'SET_STATUS' : 'no SET_STATUS, like virtio_uml'})`, async () => {
      const tmp = tempDir();
      const socketPath = path.join(tmp.dir, 'vt.sock');
      const first = spawnNode(holdingBackend, [socketPath]);
      let second: ReturnType<typeof spawnNode> | null = null;
      let client: VirtioTestClient | null = null;
      try {
        await first.waitForLine(/listening on/);
        client = await VirtioTestClient.connect({ socketPath, inflight: true, status: statusFeature, queueSize: 64 });
        const ns = Array.from({ length: 10 }, (_, i) => i);
        const answers: (TestResponse | undefined)[] = [];
        const all = Promise.all(ns.map((n) => client!.request(n).then((r) => (answers[n] = r))));
        await waitFor(() => first.stdout.filter((l) => l.startsWith('held ')).length === 5, 'five held requests');
        await waitFor(() => answers.filter(Boolean).length === 5, 'the five even requests');
        assert.deepEqual(
          answers.map((a, i) => (a ? i : -1)).filter((i) => i >= 0),
          [0, 2, 4, 6, 8],
        );
        first.proc.kill('SIGKILL');
        assert.equal((await first.exited).signal, 'SIGKILL');

        // The stale socket file is replaced by the new back-end.
        second = spawnNode(cliPath('virtio-test-backend'), ['--socket', socketPath]);
        await second.waitForLine(/listening on/);
        await client.reconnect();
        await all;
        ns.forEach((n) => assert.deepEqual(answers[n], answer(requestFor(n)), `answer to ${n}`));
        await second.waitForLine(/resubmitting 5 request\(s\)/);
        // Exactly the held requests were run again, once each, in the order they were taken.
        const types = second.stdout.filter((l) => /get type/.test(l)).map((l) => Number(/\[ (\d+) \]/.exec(l)![1]));
        assert.deepEqual(types, [1, 3, 5, 7, 9]);
        // The new back-end goes on serving.
        assert.deepEqual(await client.request(42), answer(requestFor(42)));
        assert.equal(client.outstanding, 0);
      } finally {
        client?.close();
        first.proc.kill('SIGKILL');
        if (second) {
          second.proc.kill('SIGTERM');
          const e = await second.exited;
          assert.equal(e.code, 0, 'the CLI exits cleanly on SIGTERM');
        }
        tmp.remove();
      }
    });
  }

  it('under load: 3000 requests in flight, the CLI back-end SIGKILLed at random points 3 times and restarted: every request answered exactly once', async (t) => {
    const seed = process.env.INFLIGHT_SEED === undefined ? (Math.random() * 2 ** 31) | 0 : Number(process.env.INFLIGHT_SEED);
    t.diagnostic(`seed ${seed} (replay with INFLIGHT_SEED=${seed})`);
    let state = seed >>> 0 || 1;
    const random = (): number => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    const N = 3000;
    const KILLS = 3;
    const tmp = tempDir();
    const socketPath = path.join(tmp.dir, 'vt.sock');
    const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;
    const backends: ReturnType<typeof spawnNode>[] = [];
    const start = async (): Promise<ReturnType<typeof spawnNode>> => {
      const b = spawnNode(cliPath('virtio-test-backend'), ['--socket', socketPath, '--quiet']);
      backends.push(b);
      await b.waitForLine(/listening on/);
      return b;
    };
    let client: VirtioTestClient | null = null;
    try {
      let backend = await start();
      client = await VirtioTestClient.connect({ socketPath, inflight: true, queueSize: 128 });
      // Every request is distinct: its answer says which one it was (and its response bytes are
      // zeroed when it is submitted, so a correct answer was computed for it). Device-side
      // request lines cannot be counted here: a child's stdout writes still queued when it is
      // SIGKILLed are lost.
      const requests: TestRequest[] = Array.from({ length: N }, (_, i) => ({ ...requestFor(i & 0xff), type: 1000 + i, arg1: 3 * i, arg2: 3 * i + 1, arg3: 3 * i + 2 }));
      const answers: (TestResponse | undefined)[] = new Array(N);
      let resolved = 0;
      const all = Promise.all(
        requests.map((r, i) =>
          client!.request(r).then((a) => {
            assert.equal(answers[i], undefined, `request ${i} answered twice`);
            answers[i] = a;
            resolved++;
          }),
        ),
      );
      const kills: string[] = [];
      for (let k = 0; k < KILLS; k++) {
        // Kill points stay in the first half of the run (each at most N/8 after the last), so every
        // kill lands while requests are still in flight even if the back-end races ahead.
        const at = Math.min(N - 1, resolved + 1 + Math.floor(random() * (N / (2 * (KILLS + 1)))));
        await waitFor(() => resolved >= at, `back-end ${k + 1} to answer up to ${at} requests`, 30_000);
        if (resolved === N) break;
        backend.proc.kill('SIGKILL');
        assert.equal((await backend.exited).signal, 'SIGKILL');
        kills.push(`at ${resolved} answered (${client.queue.inFlight} in the ring)`);
        backend = await start();
        await client.reconnect();
      }
      t.diagnostic(`kills: ${kills.join('; ')}`);
      assert.equal(kills.length, KILLS, 'every kill happened under load');
      await all;
      // Every request answered once, with its own answer; the driver saw no used id it did not have in flight.
      requests.forEach((r, i) => assert.deepEqual(answers[i], answer(r), `answer to request ${i}`));
      assert.equal(resolved, N);
      assert.equal(client.outstanding, 0);
      assert.equal(client.usedIdx(), N & 0xffff, 'exactly N used elements over all back-ends');
      const resubmitted = backends
        .flatMap((b) => b.stderr)
        .map((l) => /resubmitting (\d+) request/.exec(l))
        .reduce((a, m) => a + (m ? Number(m[1]) : 0), 0);
      t.diagnostic(`${resubmitted} request(s) resubmitted by the restarted back-ends`);
      // The last back-end keeps serving, and leaks no fd once the front-end is gone.
      const last = backends[backends.length - 1]!;
      assert.deepEqual(await client.request(5), answer(requestFor(5)));
      const pid = last.proc.pid!;
      client.close();
      client = null;
      await last.waitForLine(/front-end 1 disconnected/);
      const idle = fdCount(pid);
      const fresh = await VirtioTestClient.connect({ socketPath });
      assert.deepEqual(await fresh.request(6), answer(requestFor(6)));
      assert.ok(fdCount(pid) > idle, 'the connection holds fds while open');
      fresh.close();
      await last.waitForLine(/front-end 2 disconnected/);
      assert.equal(fdCount(pid), idle, `back-end fds in /proc/${pid}/fd after two connections`);
    } finally {
      client?.close();
      for (const b of backends) b.proc.kill('SIGKILL');
      tmp.remove();
    }
  });
});

/**
 * A model that answers heads 15 and 100 at once (0 bytes), holds every other chain until the
 * test settles it (in any order), and records every call made to it.
 */
class HoldingModel implements VirtioDevice {
  readonly deviceId = 0x1234;
  readonly features = (1n << 40n) | 0b101n;
  readonly featureNames = { 0: 'A', 2: 'C' };
  readonly configSize = 12;
  readonly queueMaxSizes = [16, 8];
  readonly calls: string[] = [];
  /** The chains held, in the order they were handed over: head and how to settle it. */
  readonly held: { queue: number; head: number; settle(ok: boolean): void }[] = [];

  readConfig(offset: number, into: Uint8Array): void {
    this.calls.push(`readConfig ${offset} ${into.length}`);
  }
  writeConfig(offset: number, data: Uint8Array): void {
    this.calls.push(`writeConfig ${offset} ${data.length}`);
  }
  handleChain(queue: number, chain: DescriptorChain): number | Promise<number> {
    this.calls.push(`handleChain ${queue} ${chain.head}`);
    if (chain.head === 15 || chain.head === 100) return 0;
    return new Promise<number>((resolve, reject) => {
      this.held.push({ queue, head: chain.head, settle: (ok) => (ok ? resolve(0) : reject(new Error('failed'))) });
    });
  }
  activate(): void {
    this.calls.push('activate');
  }
  reset(): void {
    this.calls.push('reset');
  }
}

describe('the inflight buffer and a ring made smaller', () => {
  it('a region initialised for 16 descriptors, the ring restarted with 8: the region is reinitialised (warned), and the ring serves', async () => {
    const srv = startServer();
    try {
      const c = await VirtioTestClient.connect({ socketPath: srv.socketPath, queueSize: 16, inflight: true });
      try {
        assert.deepEqual(await c.request(1), answer(requestFor(1)));
        const base = await c.frontend.getVringBase(0);
        assert.equal(base, 1);
        const ring = (c as unknown as { ring: { desc: number; avail: number; used: number } }).ring;
        const ram = c.ram;
        // A ring of 8 where the ring of 16 was (its parts are smaller; they still do not overlap).
        const kick = await startRingAt(c, 8, base, ring);
        try {
          assert.match(srv.warnings.at(-1) ?? '', /^vring 0: inflight region \(version 1, 16 descriptors\) does not match a ring of 8: reinitialised$/);
          // The region now describes the ring of 8: used_idx 1 (the request answered), nothing in flight.
          const rt = srv.server.session!.runtime;
          assert.ok(rt.activeQueue(0), 'the ring runs');
          const views = ringViewsFromGuest(ram.memory, { size: 8, ...ring });
          // Request 2 by hand (head 0: out, then in), at avail slot 1 (§2.7.5, §2.7.6).
          const out = ram.alloc(REQUEST_SIZE);
          const inn = ram.alloc(RESPONSE_SIZE);
          ram.memory.write(out, encodeRequest(requestFor(2)));
          views.desc.set([out, 0, REQUEST_SIZE, DescFlags.NEXT | (1 << 16)], 0);
          views.desc.set([inn, 0, RESPONSE_SIZE, DescFlags.WRITE], 4);
          views.avail[2 + 1] = 0;
          Atomics.store(views.avail, 1, 2);
          native.eventfdWrite(kick, 1);
          await waitFor(() => Atomics.load(views.used16, 1) === 2, 'request 2 on the ring of 8');
          assert.deepEqual(decodeResponse(ram.memory.slice(inn, RESPONSE_SIZE)), answer(requestFor(2)));
          assert.deepEqual(srv.warnings.filter((w) => /device error/.test(w)), []);
        } finally {
          native.close(kick);
        }
      } finally {
        c.close();
      }
    } finally {
      await srv.close();
    }
  });
});

const ctx = {} as DeviceContext;
const chain = (head: number): DescriptorChain => ({ head }) as DescriptorChain;
/** Lets the settled promises' callbacks (the tracker's `done`) run. */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('InflightTrackingDevice (the back-end\'s record of the chains the model holds)', () => {
  it('is the model to the runtime: identity, features, config space and lifecycle pass through', () => {
    const model = new HoldingModel();
    const d = new InflightTrackingDevice(model);
    assert.equal(d.inner, model);
    assert.equal(d.deviceId, 0x1234);
    assert.equal(d.features, (1n << 40n) | 0b101n);
    assert.deepEqual(d.featureNames, { 0: 'A', 2: 'C' });
    assert.equal(d.configSize, 12);
    assert.deepEqual(d.queueMaxSizes, [16, 8]);
    d.readConfig(4, new Uint8Array(2));
    d.writeConfig(8, new Uint8Array(4), ctx);
    d.activate(ctx);
    d.reset();
    assert.equal(d.handleChain(1, chain(100), ctx), 0, 'a synchronous answer is returned as it is');
    assert.deepEqual(model.calls, ['readConfig 4 2', 'writeConfig 8 4', 'activate', 'reset', 'handleChain 1 100']);
    assert.deepEqual([d.takePending(0), d.takePending(1)], [[], []], 'a synchronous answer is never pending');
  });

  it('takePending: the heads still held, oldest taken first, after out-of-order completions and a stop', async () => {
    const model = new HoldingModel();
    const d = new InflightTrackingDevice(model);
    for (const head of [9, 2, 7, 4, 11]) void d.handleChain(0, chain(head), ctx);
    void d.handleChain(1, chain(5), ctx); // another queue: its own list
    const settle = (head: number, ok = true): void => model.held.find((h) => h.queue === 0 && h.head === head)!.settle(ok);
    // Completions out of order (one of them an error): the runtime publishes them, they are not pending.
    settle(2);
    settle(4, false);
    await flush();
    // The ring stops: completions from now on are dropped by the runtime, so those chains stay pending.
    d.stopped(0);
    settle(11);
    await flush();
    assert.deepEqual(d.takePending(0), [9, 7, 11]);
    assert.deepEqual(d.takePending(0), [], 'taken once');
    assert.deepEqual(d.takePending(1), [5]);
  });

  it('a head taken again while the model still holds it: listed once, by its latest take; the older completion does not clear it', async () => {
    const model = new HoldingModel();
    const d = new InflightTrackingDevice(model);
    for (const head of [3, 8, 6]) void d.handleChain(0, chain(head), ctx);
    // Head 3 again (a driver that made it available again before it was answered): the newer
    // take is the one that counts, and it is the newest of all.
    void d.handleChain(0, chain(3), ctx);
    assert.deepEqual(
      model.held.map((h) => h.head),
      [3, 8, 6, 3],
    );
    // The first take of 3 completes in the same epoch: that is not the take still held.
    model.held[0]!.settle(true);
    await flush();
    assert.deepEqual(d.takePending(0), [8, 6, 3]);
  });

  it('forget: the queue\'s pending chains are dropped (every queue\'s without an index), and a late completion touches nothing', async () => {
    const model = new HoldingModel();
    const d = new InflightTrackingDevice(model);
    void d.handleChain(0, chain(1), ctx);
    void d.handleChain(1, chain(2), ctx);
    d.forget(0);
    void d.handleChain(0, chain(4), ctx);
    model.held[0]!.settle(true); // head 1, taken before the forget
    await flush();
    assert.deepEqual(d.takePending(0), [4]);
    assert.deepEqual(d.takePending(1), [2], 'another queue is not forgotten');
    void d.handleChain(0, chain(5), ctx);
    void d.handleChain(1, chain(6), ctx);
    d.forget();
    assert.deepEqual([d.takePending(0), d.takePending(1)], [[], []]);
  });

  it('records each head taken into the tracked inflight region, settling what the used ring published first; nothing once untracked', () => {
    const SIZE = 16;
    const model = new HoldingModel();
    const d = new InflightTrackingDevice(model);
    const region = new InflightQueue(new Uint8Array(inflightQueueRegionSize(SIZE)));
    region.initialise(SIZE, 0);
    const used = new Uint32Array(SIZE);
    let usedIdx = 0;
    const usedHead = (slot: number): number => used[slot]!;
    d.track(0, { region, usedIdx: () => usedIdx, usedHead });
    void d.handleChain(0, chain(3), ctx);
    assert.equal(d.handleChain(0, chain(15), ctx), 0); // answered at once: recorded too (the used ring clears it)
    assert.deepEqual(region.recover(usedIdx, usedHead), [3, 15]);
    // The runtime publishes 15; the next take settles it.
    used[usedIdx++ % SIZE] = 15;
    void d.handleChain(0, chain(9), ctx);
    assert.deepEqual([region.isInflight(3), region.isInflight(15), region.isInflight(9)], [true, false, true]);
    // Untracked (and another queue, never tracked): nothing recorded.
    d.track(0, null);
    void d.handleChain(0, chain(12), ctx);
    void d.handleChain(1, chain(13), ctx);
    assert.equal(region.isInflight(12), false);
    assert.deepEqual(region.recover(usedIdx, usedHead), [3, 9]);
  });
});
