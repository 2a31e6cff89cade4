/**
 * "Nothing acknowledged is lost": the `virtio-backend --device blk` daemon, its own process,
 * killed with SIGKILL again and again under a write/read/flush load from a TypeScript
 * virtio-blk driver over the vhost-user front-end (src/testing/blk-client.ts), and restarted on
 * the same socket and image each time. The driver reconnects as QEMU does (same guest RAM and
 * rings, the inflight buffer handed back), so the new daemon resubmits what was in flight.
 *
 * After every kill the image file is read directly: each 4 KiB block must hold the latest
 * version whose write was acknowledged (used element with status OK), or the version still in
 * flight. At the end every request must have completed (none lost across the restarts) and
 * every block must hold exactly its latest acknowledged version.
 *
 * Scope: the daemon writes through the host page cache (or with --direct, O_DIRECT), and a
 * killed process leaves the page cache to the kernel, so this shows that the *process* never
 * acknowledges a write (or a FLUSH) before the data was handed to the kernel. It is not a
 * power-loss test: whether fdatasync reaches stable media is the kernel's and the disk's part.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { BlkClient, BlkLoad, BLOCK_BYTES } from '../../src/testing/blk-client.js';
import { assertNoBlkDaemonLeft, spawnBlkDaemon, type BlkDaemon } from '../helpers/blk.js';
import { scratchDir } from '../helpers/uml.js';

after(assertNoBlkDaemonLeft);

const IMAGE_BYTES = 16 * 1024 * 1024;
const BLOCKS = IMAGE_BYTES / BLOCK_BYTES;
const ROUNDS = Number(process.env.VT_BLK_KILL_ROUNDS ?? 20);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resubmission lines of the daemons' stderr: total requests resubmitted. */
function resubmitted(lines: string[]): number {
  let n = 0;
  for (const l of lines) {
    const m = /resubmitting (\d+) request/.exec(l);
    if (m) n += Number(m[1]);
  }
  return n;
}

/** Daemon diagnostics other than the expected reconnection notes. */
function unexpected(lines: string[]): string[] {
  return lines.filter((l) => !/resubmitting \d+ request|next available index \d+ from the inflight buffer/.test(l));
}

test(`blk daemon SIGKILLed ${ROUNDS} times under load: every acknowledged write is in the image, nothing in flight is lost`, { timeout: 180_000 }, async (t) => {
  const seed = Number(process.env.VT_BLK_KILL_SEED ?? Date.now() % 1_000_000);
  t.diagnostic(`seed ${seed} (VT_BLK_KILL_SEED=${seed} repeats the load and the kill times)`);
  const tmp = scratchDir('vt-blk-kill-');
  const image = path.join(tmp.dir, 'disk.img');
  const socket = path.join(tmp.dir, 'blk.sock');
  writeFileSync(image, Buffer.alloc(IMAGE_BYTES));
  const random = (() => {
    let a = seed ^ 0x5bd1e995;
    return () => {
      a = (Math.imul(a, 1103515245) + 12345) >>> 0;
      return a / 2 ** 32;
    };
  })();
  let daemon: BlkDaemon | null = null;
  let client: BlkClient | null = null;
  const allStderr: string[] = [];
  try {
    // Odd rounds run the daemon with --direct (O_DIRECT through bounce buffers), even ones buffered.
    const args = (round: number) => ['--num-queues', '2', '--quiet', ...(round % 2 ? ['--direct'] : [])];
    daemon = await spawnBlkDaemon(socket, image, args(0));
    client = await BlkClient.connect({ socketPath: socket, numQueues: 2, queueSize: 128, slotsPerQueue: 16 });
    assert.equal(client.numQueues, 2);
    const load = new BlkLoad(client, { blocks: BLOCKS, depth: 16, seed });
    let inFlightAtKills = 0;
    let landed = 0;
    for (let round = 0; round < ROUNDS; round++) {
      load.start();
      await sleep(50 + Math.floor(random() * 450));
      const inFlight = load.outstanding;
      daemon.proc.kill('SIGKILL');
      load.pause();
      assert.deepEqual(await daemon.exited, { code: null, signal: 'SIGKILL' });
      allStderr.push(...daemon.stderr);
      inFlightAtKills += inFlight;
      // The image as the killed daemon left it, read directly.
      const v = load.verify(readFileSync(image));
      assert.deepEqual(v.bad, [], `round ${round}: ${v.badCount} blocks lost an acknowledged write (seed ${seed})`);
      landed += v.inFlightLanded;
      assert.deepEqual(load.problems, [], `round ${round} (seed ${seed})`);
      daemon = await spawnBlkDaemon(socket, image, args(round + 1));
      await client.reconnect();
    }
    // The last daemon stays: everything in flight completes, then the image is exact.
    load.pause();
    const drained = await Promise.race([load.idle().then(() => true), sleep(15_000).then(() => false)]);
    assert.ok(drained, `${load.outstanding} requests never completed after the restarts (lost in flight; seed ${seed})`);
    const v = load.verify(readFileSync(image));
    assert.deepEqual(v.bad, [], `final image: ${v.badCount} bad blocks (seed ${seed})`);
    assert.equal(v.inFlightLanded, 0);
    assert.deepEqual(load.problems, []);
    assert.equal(load.stats.notOk, 0);
    assert.equal(load.stats.writesAcked, load.stats.writesIssued, 'every write acknowledged in the end');
    assert.equal(client.errSignals, 0, 'no device error signalled');
    allStderr.push(...daemon.stderr);
    const resub = resubmitted(allStderr);
    t.diagnostic(
      `${ROUNDS} kills; ${load.stats.writesAcked} writes, ${load.stats.readsOk} reads, ${load.stats.flushesAcked} flushes acknowledged; ` +
        `${inFlightAtKills} requests in flight at the kills, ${landed} in-flight block versions had landed, ${resub} requests resubmitted by restarted daemons`,
    );
    assert.ok(resub > 0, 'restarted daemons resubmitted requests from the inflight buffer');
    assert.deepEqual(unexpected(allStderr), [], 'daemon diagnostics');
    client.close();
    client = null;
    assert.deepEqual(await daemon.kill('SIGTERM'), { code: 0, signal: null });
  } finally {
    client?.close();
    await daemon?.kill();
    tmp.remove();
  }
});

test('an acknowledged FLUSH: the daemon killed at the very moment the FLUSH is acknowledged, every write acknowledged before it is in the image', { timeout: 60_000 }, async (t) => {
  const tmp = scratchDir('vt-blk-flush-');
  const image = path.join(tmp.dir, 'disk.img');
  const socket = path.join(tmp.dir, 'blk.sock');
  let daemon: BlkDaemon | null = null;
  let client: BlkClient | null = null;
  try {
    for (const direct of [false, true]) {
      writeFileSync(image, Buffer.alloc(IMAGE_BYTES));
      daemon = await spawnBlkDaemon(socket, image, ['--quiet', ...(direct ? ['--direct'] : [])]);
      client = await BlkClient.connect({ socketPath: socket, numQueues: 1 });
      const load = new BlkLoad(client, { blocks: BLOCKS, depth: 16, seed: direct ? 2 : 1, readFraction: 0, flushFraction: 0 });
      load.start();
      await sleep(150);
      // The FLUSH goes out with writes in flight; the daemon dies in the same tick as its ack.
      const victim = daemon;
      let covered = -1;
      load.onFlushAck = (n) => {
        covered = n;
        victim.proc.kill('SIGKILL');
        load.pause();
      };
      const acked = await load.flushNow();
      assert.ok(acked, 'the FLUSH was acknowledged');
      assert.deepEqual(await victim.exited, { code: null, signal: 'SIGKILL' });
      const v = load.verify(readFileSync(image));
      assert.deepEqual(v.bad, [], `${direct ? '--direct' : 'buffered'}: ${v.badCount} blocks lost an acknowledged write`);
      assert.ok(covered > 0, 'writes were acknowledged before the FLUSH was sent');
      t.diagnostic(`${direct ? '--direct' : 'buffered'}: ${covered} writes acknowledged before the FLUSH, ${load.stats.writesAcked} in all, ${load.outstanding} in flight at the kill`);
      assert.deepEqual(victim.stderr, []);
      client.close();
      client = null;
    }
  } finally {
    client?.close();
    await daemon?.kill();
    tmp.remove();
  }
});
