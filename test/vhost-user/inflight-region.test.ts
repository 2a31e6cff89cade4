/**
 * One queue's region of the inflight buffer ([vhost-user "Inflight I/O tracking"]) against a
 * used ring written the way the runtime writes it: answers published in any order, in batches,
 * across the 16-bit wrap of used.idx. After every step the heads the region still holds must be
 * exactly the ones taken and not yet published: one more and a restarted back-end serves a
 * request twice, one fewer and it loses one.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InflightQueue, inflightQueueRegionSize } from '../../src/vhost-user/inflight.js';

/** A region for a ring of `size` and a used ring to publish into. */
function setup(size: number, startUsed = 0) {
  const region = new InflightQueue(new Uint8Array(inflightQueueRegionSize(size)));
  const used = new Uint32Array(size); // used.ring[slot].id
  let usedIdx = startUsed & 0xffff;
  region.initialise(size, usedIdx);
  const taken = new Set<number>();
  const usedHead = (slot: number) => used[slot]!;
  return {
    region,
    /** The tracker's step before a head is taken, then the take. */
    take(head: number) {
      region.settle(usedIdx, usedHead);
      region.begin(head);
      taken.add(head);
    },
    /** The runtime publishing `heads` with one used.idx update. */
    publish(...heads: number[]) {
      for (const h of heads) {
        used[usedIdx % size] = h;
        usedIdx = (usedIdx + 1) & 0xffff;
        taken.delete(h);
      }
    },
    /** A restarted back-end's view: the heads it would resubmit. */
    recover: () => region.recover(usedIdx, usedHead),
    expected: () => [...taken],
  };
}

test('answers published in another order than they completed: exactly the unpublished heads stay in flight', () => {
  const r = setup(8);
  for (const h of [0, 1, 2, 3]) r.take(h);
  r.publish(2); // the third answer comes first
  r.take(4);
  r.publish(0, 3); // a batch of two, out of order
  r.take(5);
  assert.deepEqual(r.recover(), [1, 4, 5]);
  assert.deepEqual(r.recover().sort(), r.expected().sort());
});

test('a crash right after a publication, before any further take, is settled on recovery', () => {
  const r = setup(4);
  for (const h of [3, 1, 0]) r.take(h);
  r.publish(1, 3, 0);
  assert.deepEqual(r.recover(), []);
});

test('recovery returns the heads in the order they were taken', () => {
  const r = setup(8);
  for (const h of [7, 2, 5, 0]) r.take(h);
  r.publish(5);
  assert.deepEqual(r.recover(), [7, 2, 0]);
});

test('random takes and out-of-order batched publications across the 16-bit wrap of used.idx', () => {
  for (const size of [1, 2, 8, 256]) {
    const r = setup(size, 65536 - 3 * size);
    let seed = 12345 + size;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const free = Array.from({ length: size }, (_, i) => i);
    const inFlight: number[] = [];
    for (let step = 0; step < 20_000; step++) {
      if (free.length > 0 && (inFlight.length === 0 || rand(2) === 0)) {
        const h = free.splice(rand(free.length), 1)[0]!;
        r.take(h);
        inFlight.push(h);
      } else {
        const batch: number[] = [];
        for (let k = 1 + rand(inFlight.length); k > 0; k--) batch.push(inFlight.splice(rand(inFlight.length), 1)[0]!);
        r.publish(...batch);
        free.push(...batch);
      }
      if (step % 97 === 0) {
        assert.deepEqual(r.recover().sort((a, b) => a - b), [...inFlight].sort((a, b) => a - b), `size ${size}, step ${step}`);
      }
    }
  }
});
