// The packed ring's shared helpers (virtio 1.2 §2.8): queue sizes under a transport that wants
// powers of two, saved positions "with wrap bit 15" (§2.8.14, vhost-user packed bases), the
// DESC-mode event window (§2.8.10), and views over parts that sit anywhere in their buffer.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { virtioError } from '../helpers/virtio-error.js';
import {
  checkPackedQueueSize,
  checkRingIndex,
  encodeRingIndex,
  eventInWindow,
  packedRingViewsFromBytes,
} from '../../src/virtio/packed-ring.js';

test('a transport that wants powers of two gets them, and any size up to its maximum otherwise (§2.8.10.1)', () => {
  for (const ok of [1, 2, 4, 256, 32768]) {
    assert.doesNotThrow(() => checkPackedQueueSize(ok, { powerOfTwo: true }), String(ok));
  }
  assert.throws(
    () => checkPackedQueueSize(6, { powerOfTwo: true, max: 8 }),
    virtioError('QUEUE_SIZE_INVALID', 'packed queue size 6 is not a power of two in 1..8 (QUEUE_SIZE_INVALID, virtio 1.2 §2.8.10.1)'),
  );
  assert.throws(() => checkPackedQueueSize(16, { powerOfTwo: true, max: 8 }), /packed queue size 16 is not a power of two in 1\.\.8/);
  assert.doesNotThrow(() => checkPackedQueueSize(6, { powerOfTwo: false, max: 8 }));
});

test('a saved position is pos | wrap << 15 with pos inside the ring (§2.8.14, vhost-user SET_VRING_BASE)', () => {
  assert.deepEqual(checkRingIndex(0, 4, 'next used index'), { pos: 0, wrap: 0 });
  assert.deepEqual(checkRingIndex(0x8003, 4, 'next used index'), { pos: 3, wrap: 1 });
  assert.deepEqual(checkRingIndex(0xffff, 32768, 'next used index'), { pos: 0x7fff, wrap: 1 }, 'the largest 16-bit value');
  const refused: [number, number, string][] = [
    [0x8004, 4, 'next used index 32772 (position 4) is not a position in a 4-entry packed ring'],
    // Each of these has bits 0-14 inside the ring: only the range checks refuse them.
    [0x10000, 4, 'next used index 65536 (position 0) is not a position in a 4-entry packed ring'],
    [-0x8000, 4, 'next used index -32768 (position 0) is not a position in a 4-entry packed ring'],
    [0.5, 4, 'next used index 0.5 (position 0) is not a position in a 4-entry packed ring'],
  ];
  for (const [v, size, message] of refused) {
    assert.throws(() => checkRingIndex(v, size, 'next used index'), virtioError('QUEUE_BASE_INVALID', `${message} (QUEUE_BASE_INVALID, virtio 1.2 §2.8)`));
  }
});

test('DESC mode: an event offset equal to the queue size names no descriptor and never fires (§2.8.10)', () => {
  // In a 4-entry ring, offset 4 with wrap 1 would alias linear index 4 (position 0 of lap 0),
  // which lies in the window [3, 5): it must still not fire.
  assert.equal(eventInWindow(encodeRingIndex(4, 1), 3, 5, 2, 4), false);
  assert.equal(eventInWindow(encodeRingIndex(0, 0), 3, 5, 2, 4), true, 'the real position 0 of lap 0 does');
  assert.equal(eventInWindow(encodeRingIndex(4, 1), 0, 0, 8, 4), false, 'not even when every position was passed');
});

test('packed ring views over parts at any 4-byte-aligned offset of their buffer (§2.8.11)', () => {
  const buffer = new SharedArrayBuffer(0x100);
  const v = packedRingViewsFromBytes(2, {
    desc: new Uint8Array(buffer, 0x40, 32),
    driver: new Uint8Array(buffer, 0x60, 4),
    device: new Uint8Array(buffer, 0x64, 4),
  });
  assert.deepEqual([v.desc.byteOffset, v.desc.length, v.driverEvent.byteOffset, v.deviceEvent.byteOffset], [0x40, 8, 0x60, 0x64]);
  v.desc[7] = 0x1234_5678;
  assert.equal(new DataView(buffer).getUint32(0x40 + 28, true), 0x1234_5678, 'descriptor 1 word 3 lands in its part');
});
