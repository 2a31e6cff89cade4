/**
 * Fuzzing of the vhost-user message parser and the back-end's state machine (see
 * docs/reliability.md). First every stored counterexample under test/corpus/<target>/ is
 * replayed, then the targets of fuzz-targets.ts run for a time budget with a random seed
 * (printed; a failure prints seed, path and counterexample), then a short asynchronous
 * property over a real socket and server: whatever a front-end sends — any request code,
 * flags, payload and fds — the back-end neither crashes nor leaks an fd or a mapping, and the
 * next front-end is served.
 *
 *   FUZZ_SEED=1234 npm test -- vhost-user/fuzz          fixed seed
 *   VU_FUZZ_BUDGET_MS=30000 npm test -- vhost-user/fuzz  budget over both targets (default 16 s)
 * Long runs: node scripts/fuzz.mjs --seconds N --target vhost-user-session
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { registerFuzzTests } from '../fuzz/register.js';
import { vhostUserTargets } from './fuzz-targets.js';
import { encodeMessage } from '../../src/vhost-user/codec.js';
import { MessageChannel } from '../../src/vhost-user/message-channel.js';
import { native } from '../../src/vhost-user/native/index.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { expectServesNext, leakedFds, memfdMappings, openFds, settle, startServer } from './helpers.js';

registerFuzzTests(vhostUserTargets, Number(process.env.VU_FUZZ_BUDGET_MS ?? 16_000));

interface FuzzMessage {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: ('eventfd' | 'memfd')[];
}

/** Payload sizes the requests define, so that many messages get past the size check. */
const usualSizes = [0, 8, 20, 24, 40, 72, 12, 16];

const message: fc.Arbitrary<FuzzMessage> = fc.record({
  request: fc.oneof(fc.integer({ min: 1, max: 45 }), fc.constantFrom(0, 999, 0xffff_ffff)),
  flags: fc.oneof(fc.constantFrom(1, 9, 5, 13), fc.integer({ min: 0, max: 0xff })),
  payload: fc.oneof(
    fc.constantFrom(...usualSizes).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
    fc.uint8Array({ maxLength: 80 }),
    // a memory table / vring address made mostly of small numbers (more likely to be accepted)
    fc.array(fc.integer({ min: 0, max: 0x4000 }), { minLength: 2, maxLength: 18 }).map((words) => {
      const b = new Uint8Array(words.length * 4);
      const v = new DataView(b.buffer);
      words.forEach((w, i) => v.setUint32(i * 4, i === 0 && w > 8 ? 1 : w, true));
      return b;
    }),
  ),
  fds: fc.array(fc.constantFrom<'eventfd' | 'memfd'>('eventfd', 'memfd'), { maxLength: 3 }),
});

describe('vhost-user back-end under random messages', () => {
  it('never crashes, leaks nothing, and serves the next front-end', async () => {
    const srv = startServer();
    try {
      // Warm up lazily created process-wide fds.
      const warm = await VirtioTestClient.connect({ socketPath: srv.socketPath });
      await warm.request(1);
      warm.close();
      await srv.server.idle();
      const before = openFds();
      await fc.assert(
        fc.asyncProperty(fc.array(message, { minLength: 1, maxLength: 25 }), async (messages) => {
          const fd = native.socketConnect(srv.socketPath);
          const received: number[] = [];
          const ch = new MessageChannel(
            fd,
            { onMessage: (m) => m.fds.forEach((f) => (received.push(f), native.close(f))), onClose: () => {} },
            { receivesReplies: true },
          ).start();
          for (const m of messages) {
            const fds = m.fds.map((k) => (k === 'eventfd' ? native.eventfd(0, true) : native.memfdCreate('vhost-user-fuzz', 0x4000)));
            ch.send(encodeMessage(m.request, m.flags, m.payload), fds, true);
          }
          await settle(3);
          ch.close();
          await srv.server.idle();
        }),
        { numRuns: 150, seed: 0x5eed },
      );
      await settle();
      assert.deepEqual(leakedFds(before), []);
      assert.deepEqual(memfdMappings(), []);
      await expectServesNext(srv);
    } finally {
      await srv.close();
    }
  });
});
