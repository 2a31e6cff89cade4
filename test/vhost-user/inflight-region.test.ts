/**
 * One queue's region of the inflight buffer ([vhost-user "Inflight I/O tracking"]) against a
 * used ring written the way the runtime writes it: answers published in any order, in batches,
 * across the 16-bit wrap of used.idx. After every step the heads the region still holds must be
 * exactly the ones taken and not yet published: one more and a restarted back-end serves a
 * request twice, one fewer and it loses one.
 */
import assert from 'node:assert/strict';
import { openSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { InflightBuffer, InflightQueue, inflightBufferSize, inflightQueueRegionSize } from '../../src/vhost-user/inflight.js';
import { native } from '../../src/vhost-user/native/index.js';
import { tempDir } from './helpers.js';

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

test('a region too small for the ring refuses to be initialised for it', () => {
  const region = new InflightQueue(new Uint8Array(inflightQueueRegionSize(8)));
  assert.equal(region.capacity, 11, '(64 - 16) / 16 entries fit');
  assert.throws(() => region.initialise(12, 0), { name: 'RangeError', message: 'inflight region holds 11 descriptors, not 12' });
  assert.equal(region.version, 0, 'left uninitialised');
  region.initialise(11, 7);
  assert.deepEqual([region.version, region.descNum, region.usedIdx], [1, 11, 7]);
});

describe('InflightBuffer.map: a description that does not fit refuses, and the fd is consumed either way', () => {
  const PAGE = native.pageSize;
  const isOpen = (fd: number): boolean => {
    try {
      native.fdKind(fd);
      return true;
    } catch {
      return false;
    }
  };
  const refuses = (fdSize: number, d: { mmapSize: number; mmapOffset: number; numQueues: number; queueSize: number }, message: string) => {
    const fd = native.memfdCreate('vhost-user-inflight-test', fdSize);
    assert.throws(() => InflightBuffer.map(fd, d), { message });
    assert.equal(isOpen(fd), false);
  };

  test('no queues, or queues of 0 descriptors', () => {
    refuses(PAGE, { mmapSize: PAGE, mmapOffset: 0, numQueues: 0, queueSize: 8 }, 'empty inflight buffer (0 queues of 8)');
    refuses(PAGE, { mmapSize: PAGE, mmapOffset: 0, numQueues: 2, queueSize: 0 }, 'empty inflight buffer (2 queues of 0)');
  });

  test('smaller than the layout needs', () => {
    const need = inflightBufferSize(2, 64);
    refuses(PAGE * 4, { mmapSize: need - 1, mmapOffset: 0, numQueues: 2, queueSize: 64 }, `inflight buffer of ${need - 1} bytes, ${need} needed for 2 queues of 64`);
  });

  test('past the end of its file (by its offset, or by its size)', () => {
    refuses(PAGE, { mmapSize: PAGE, mmapOffset: 1, numQueues: 1, queueSize: 8 }, 'inflight buffer is past the end of its file');
    refuses(PAGE, { mmapSize: PAGE + 1, mmapOffset: 0, numQueues: 1, queueSize: 8 }, 'inflight buffer is past the end of its file');
  });

  test('a buffer that fits: a region per queue (none past the last), at the offset; unmap twice is harmless', () => {
    const size = inflightBufferSize(2, 8);
    const fd = native.memfdCreate('vhost-user-inflight-test', PAGE + 100 + size);
    const bytes = new Uint8Array(native.mmap(fd, 2 * PAGE, 0));
    const buffer = InflightBuffer.map(fd, { mmapSize: size, mmapOffset: PAGE + 100, numQueues: 2, queueSize: 8 });
    assert.equal(isOpen(fd), false);
    const q1 = buffer.queue(1)!;
    assert.ok(q1);
    assert.equal(buffer.queue(2), null);
    assert.equal(buffer.queue(5), null);
    q1.initialise(8, 3);
    // Queue 1's header is one region in from the offset, in the shared file.
    const at = PAGE + 100 + inflightQueueRegionSize(8);
    assert.deepEqual([bytes[at + 8], bytes[at + 10], bytes[at + 14]], [1, 8, 3]);
    buffer.clearAll();
    assert.equal(bytes[at + 8], 0);
    buffer.unmap();
    assert.doesNotThrow(() => buffer.unmap());
    native.munmap(bytes.buffer as ArrayBuffer);
  });

  test('a regular file is memory too (a front-end may keep the buffer in one), not only a memfd', () => {
    const tmp = tempDir();
    try {
      const file = path.join(tmp.dir, 'inflight');
      writeFileSync(file, new Uint8Array(inflightBufferSize(1, 8)));
      const fd = openSync(file, 'r+');
      const buffer = InflightBuffer.map(fd, { mmapSize: inflightBufferSize(1, 8), mmapOffset: 0, numQueues: 1, queueSize: 8 });
      assert.equal(isOpen(fd), false);
      buffer.queue(0)!.initialise(8, 0);
      assert.equal(buffer.queue(0)!.version, 1);
      buffer.unmap();
    } finally {
      tmp.remove();
    }
  });
});

describe('InflightQueue: the region\'s own bounds and order (from the vhost-user mutation run)', () => {
  const HEADER = 16;
  const STATE = 16;

  test('initialise clears the header and the states of the ring\'s size, nothing past them', () => {
    const bytes = new Uint8Array(inflightQueueRegionSize(16)).fill(0xff);
    const q = new InflightQueue(bytes);
    q.initialise(8, 5);
    assert.deepEqual([q.version, q.descNum, q.usedIdx], [1, 8, 5]);
    assert.deepEqual([...bytes.subarray(0, 8)], [0, 0, 0, 0, 0, 0, 0, 0], 'features');
    assert.deepEqual([...bytes.subarray(12, 14)], [0, 0], 'last_batch_head');
    assert.ok(bytes.subarray(HEADER, HEADER + STATE * 8).every((b) => b === 0), 'the 8 states');
    assert.ok(bytes.subarray(HEADER + STATE * 8).every((b) => b === 0xff), 'nothing past them');
  });

  test('recover gives heads in the order taken (not by head), and later takes come after them', () => {
    const q = new InflightQueue(new Uint8Array(inflightQueueRegionSize(8)));
    q.initialise(8, 0);
    for (const h of [5, 2, 7, 0]) q.begin(h);
    assert.deepEqual(q.recover(0, () => 0), [5, 2, 7, 0]);
    q.begin(3);
    assert.deepEqual(q.recover(0, () => 0), [5, 2, 7, 0, 3], 'the counter goes on after the largest recovered');
  });

  test('heads with equal counters (a region this back-end did not write) come in head order', () => {
    const bytes = new Uint8Array(inflightQueueRegionSize(8));
    const q = new InflightQueue(bytes);
    q.initialise(8, 0);
    for (const h of [6, 1, 4]) q.begin(h);
    const view = new DataView(bytes.buffer);
    for (const h of [6, 1, 4]) view.setBigUint64(HEADER + STATE * h + 8, 9n, true);
    assert.deepEqual(q.recover(0, () => 0), [1, 4, 6]);
  });

  test('counters are le64 (§ "Inflight I/O tracking": u64 counter): the order holds past 255 takes', () => {
    const q = new InflightQueue(new Uint8Array(inflightQueueRegionSize(512)));
    q.initialise(512, 0);
    const order = Array.from({ length: 300 }, (_, i) => 299 - i);
    for (const h of order) q.begin(h);
    assert.deepEqual(q.recover(0, () => 0), order);
  });

  test('settle: only the elements published since the last settle count; heads at or past desc_num are never touched', () => {
    const q = new InflightQueue(new Uint8Array(inflightQueueRegionSize(8))); // room for 8
    q.initialise(4, 3);
    // The 4-entry used ring: used.idx 3 is slot 3 (head 1), 4 is slot 0 (head 2); slots 1, 2 hold a stale id (3, in flight again).
    const used = [2, 3, 3, 1];
    q.begin(1);
    q.begin(2);
    q.begin(3);
    q.begin(4); // a head the 4-entry ring cannot have (written here by hand)
    q.begin(6);
    // used.idx 3 → 5: heads 1 and 2
    q.settle(5, (slot) => used[slot]!);
    assert.deepEqual([1, 2, 3].map((h) => q.isInflight(h)), [false, false, true]);
    assert.equal(q.isInflight(4), true, 'head 4 (= desc_num) untouched');
    assert.equal(q.isInflight(6), true);
    assert.equal(q.usedIdx, 5);
    // Published: head 4 and head 6 (both past desc_num): nothing of them is cleared.
    used[1] = 4;
    used[2] = 6;
    q.settle(7, (slot) => used[slot]!);
    assert.deepEqual([q.isInflight(4), q.isInflight(6)], [true, true]);
    // recover walks desc_num entries only: heads 4 and 6 are not resubmitted.
    assert.deepEqual(q.recover(7, (slot) => used[slot]!), [3]);
  });
});
