/**
 * Inflight I/O tracking across a back-end crash ([vhost-user "Inflight I/O tracking"]): a
 * back-end holding requests out of order is killed with SIGKILL; the front-end reconnects to
 * a new back-end (the CLI) with the same inflight buffer, and the new back-end resubmits
 * exactly the requests that were in flight, in the order they were taken.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { answer, requestFor, type TestResponse } from '../../src/devices/test/protocol.js';
import { VirtioTestClient } from '../../src/vhost-user/virtio-test-client.js';
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
});
