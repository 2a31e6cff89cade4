/**
 * Inflight I/O tracking across a back-end crash ([vhost-user "Inflight I/O tracking"]): a
 * back-end holding requests out of order is killed with SIGKILL; the front-end reconnects to
 * a new back-end (the CLI) with the same inflight buffer, and the new back-end resubmits
 * exactly the requests that were in flight, in the order they were taken.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { answer, requestFor, type TestRequest, type TestResponse } from '../../src/devices/virtio-test/protocol.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { cliPath, repoRoot } from '../helpers/paths.js';
import { spawnNode, tempDir, waitFor } from './helpers.js';

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
