// Where the parts of a ring sit in guest memory and the views made over them, for both ring
// formats (virtio 1.2 §2.7 split, §2.8 packed): sizes, alignment, bounds, and the exact error
// each misplacement gets. The queues' own tests place rings correctly; these place them wrong.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { virtioError } from '../helpers/virtio-error.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import {
  availRingBytes,
  checkAlignment,
  checkQueueSize,
  descTableBytes,
  isPowerOfTwo,
  needsEvent,
  packedLayout,
  usedRingBytes,
} from '../../src/virtio/split-ring.js';
import { availEventIndex, ringViewsFromBytes, ringViewsFromGuest, usedEventIndex } from '../../src/virtio/ring-views.js';
import {
  checkPackedAlignment,
  checkPackedQueueSize,
  packedRingLayout,
  packedRingViewsFromBytes,
  packedRingViewsFromGuest,
} from '../../src/virtio/packed-ring.js';
import { descriptorFlagNames } from '../../src/virtio/queue-element.js';

test('split ring part sizes and the compact layout (§2.7 table)', () => {
  assert.equal(descTableBytes(256), 4096);
  assert.equal(availRingBytes(256), 6 + 512);
  assert.equal(usedRingBytes(256), 6 + 2048);
  // 8 entries from 0x1000: desc 128 bytes, avail 22 bytes ending at 0x1096, used at the next 4-byte boundary.
  assert.deepEqual(packedLayout(0x1000, 8), { size: 8, desc: 0x1000, avail: 0x1080, used: 0x1098, bytes: 0x98 + 6 + 64 });
  // A size whose avail ring already ends on a 4-byte boundary: no padding.
  assert.deepEqual(packedLayout(0, 1), { size: 1, desc: 0, avail: 16, used: 24, bytes: 24 + 14 });
});

test('queue sizes: powers of two up to the maximum (§2.7)', () => {
  for (const ok of [1, 2, 256, 32768]) assert.doesNotThrow(() => checkQueueSize(ok), String(ok));
  for (const bad of [0, 3, 257, 65536, -2, 0.5, NaN]) {
    assert.throws(() => checkQueueSize(bad), virtioError('QUEUE_SIZE_INVALID', `queue size ${bad} is not a power of two in 1..32768 (QUEUE_SIZE_INVALID, virtio 1.2 §2.7)`));
  }
  assert.throws(() => checkQueueSize(512, 256), /in 1\.\.256/);
  assert.equal(isPowerOfTwo(1), true);
  assert.equal(isPowerOfTwo(0), false);
  assert.equal(isPowerOfTwo(2.5), false);
});

test('split ring alignment: desc 16, avail 2, used 4, each checked on its own (§2.7.1)', () => {
  const good = { size: 8, desc: 0x1000, avail: 0x1082, used: 0x1104 };
  assert.doesNotThrow(() => checkAlignment(good));
  const message =
    'ring parts misaligned: desc 0x1008 (16), avail 0x1082 (2), used 0x1104 (4) (QUEUE_ALIGNMENT, virtio 1.2 §2.7.1)';
  assert.throws(() => checkAlignment({ ...good, desc: 0x1008 }), virtioError('QUEUE_ALIGNMENT', message));
  assert.throws(() => checkAlignment({ ...good, avail: 0x1081 }), /avail 0x1081 \(2\)/);
  assert.throws(() => checkAlignment({ ...good, used: 0x1102 }), /used 0x1102 \(4\)/);
});

test('needsEvent: notify exactly when the event index lies in [old, new) (§2.7.7, §2.7.10)', () => {
  assert.equal(needsEvent(5, 6, 5), true, 'the entry just published');
  assert.equal(needsEvent(4, 6, 5), false, 'already past at the last decision');
  assert.equal(needsEvent(6, 6, 5), false, 'not yet reached');
  assert.equal(needsEvent(0xffff, 1, 0xfffe), true, 'across the 16-bit wrap');
  assert.equal(needsEvent(0, 0, 0), false, 'nothing published');
});

test('split ring views: bounds and alignment in guest memory and in their backing bytes (§2.7)', () => {
  const memory = new GuestMemory([{ guestAddr: 0x10000, size: 0x1000, buffer: new ArrayBuffer(0x1000) }]);
  const a = packedLayout(0x10000, 8);
  const v = ringViewsFromGuest(memory, a);
  assert.equal(v.desc.length, 32);
  assert.equal(v.avail.length, 3 + 8);
  assert.equal(v.used16.length, 3 + 32);
  assert.equal(v.used32.length, 1 + 16);
  assert.equal(usedEventIndex(8), 10);
  assert.equal(availEventIndex(8), 34);
  // The views are over guest memory, at the ring's addresses.
  v.avail[1] = 7;
  assert.equal(memory.readU16(a.avail + 2), 7);
  v.used32[1] = 0xabcd;
  assert.equal(memory.readU32(a.used + 4), 0xabcd);
  memory.writeU16(a.used + 4 + 8 * 8, 0x55);
  assert.equal(v.used16[availEventIndex(8)], 0x55);
  memory.writeU16(a.avail + 4 + 2 * 8, 0x66);
  assert.equal(v.avail[usedEventIndex(8)], 0x66);

  // Each part outside guest memory is named.
  assert.throws(
    () => ringViewsFromGuest(memory, { ...a, used: 0x10ff8 }),
    virtioError('MEM_OUT_OF_RANGE', 'used ring at 0x10ff8 (+70) is not inside guest memory (MEM_OUT_OF_RANGE, virtio 1.2 §2.7)'),
  );
  assert.throws(() => ringViewsFromGuest(memory, { ...a, desc: 0x20000 }), /descriptor table at 0x20000 \(\+128\)/);
  assert.throws(() => ringViewsFromGuest(memory, { ...a, avail: 0xfffe }), /available ring at 0xfffe \(\+22\)/);
  assert.throws(() => ringViewsFromGuest(memory, { ...a, size: 6 }), virtioError('QUEUE_SIZE_INVALID', 'queue size 6 is not a power of two in 1..32768 (QUEUE_SIZE_INVALID, virtio 1.2 §2.7)'));
  assert.throws(() => ringViewsFromGuest(memory, { ...a, used: a.used + 2 }), /QUEUE_ALIGNMENT/);

  // From bytes (vhost-user maps the parts itself): each part's offset in its buffer is checked.
  const buffer = new ArrayBuffer(0x1000);
  const part = (offset: number, len: number) => new Uint8Array(buffer, offset, len);
  const ok = { desc: part(0, 128), avail: part(128, 22), used: part(152, 70) };
  assert.equal(ringViewsFromBytes(8, ok).used32.byteOffset, 152);
  const misaligned = virtioError('QUEUE_ALIGNMENT', 'ring parts are not aligned in their backing memory (QUEUE_ALIGNMENT, virtio 1.2 §2.7.1)');
  assert.throws(() => ringViewsFromBytes(8, { ...ok, desc: part(2, 128) }), misaligned);
  assert.throws(() => ringViewsFromBytes(8, { ...ok, avail: part(129, 22) }), misaligned);
  assert.throws(() => ringViewsFromBytes(8, { ...ok, used: part(154, 70) }), misaligned);
  assert.doesNotThrow(() => ringViewsFromBytes(8, { ...ok, avail: part(130, 22) }), 'avail needs only 2-byte alignment');
});

test('packed ring: sizes, alignment and views (§2.8.10.1, §2.8.11)', () => {
  for (const ok of [1, 3, 255, 32768]) assert.doesNotThrow(() => checkPackedQueueSize(ok), String(ok));
  assert.throws(
    () => checkPackedQueueSize(0),
    virtioError('QUEUE_SIZE_INVALID', 'packed queue size 0 is not in 1..32768 (QUEUE_SIZE_INVALID, virtio 1.2 §2.8.10.1)'),
  );
  assert.throws(() => checkPackedQueueSize(32769), /not in 1\.\.32768/);
  assert.throws(() => checkPackedQueueSize(3, { powerOfTwo: true }), /packed queue size 3 is not a power of two in 1\.\.32768/);
  assert.throws(() => checkPackedQueueSize(512, { max: 256 }), /in 1\.\.256/);

  const layout = packedRingLayout(0x2000, 3);
  assert.deepEqual(layout, { size: 3, desc: 0x2000, driver: 0x2030, device: 0x2034, bytes: 56 });
  assert.doesNotThrow(() => checkPackedAlignment(layout));
  assert.throws(
    () => checkPackedAlignment({ ...layout, desc: 0x2004 }),
    virtioError(
      'QUEUE_ALIGNMENT',
      'packed ring parts misaligned: desc 0x2004 (16), driver 0x2030 (4), device 0x2034 (4) (QUEUE_ALIGNMENT, virtio 1.2 §2.8.11)',
    ),
  );
  assert.throws(() => checkPackedAlignment({ ...layout, driver: 0x2032 }), /driver 0x2032 \(4\)/);
  assert.throws(() => checkPackedAlignment({ ...layout, device: 0x2036 }), /device 0x2036 \(4\)/);

  const memory = new GuestMemory([{ guestAddr: 0x2000, size: 0x100, buffer: new ArrayBuffer(0x100) }]);
  const v = packedRingViewsFromGuest(memory, layout);
  assert.equal(v.desc.length, 12);
  v.driverEvent[0] = 0x00018002;
  assert.equal(memory.readU32(0x2030), 0x00018002);
  memory.writeU32(0x2034, 0x2);
  assert.equal(v.deviceEvent[0], 2);
  assert.throws(
    () => packedRingViewsFromGuest(memory, { ...layout, device: 0x2100 }),
    virtioError(
      'MEM_OUT_OF_RANGE',
      'device event suppression structure at 0x2100 (+4) is not inside guest memory (MEM_OUT_OF_RANGE, virtio 1.2 §2.8)',
    ),
  );
  assert.throws(() => packedRingViewsFromGuest(memory, { ...layout, desc: 0x20f0 }), /descriptor ring at 0x20f0 \(\+48\)/);
  assert.throws(() => packedRingViewsFromGuest(memory, { ...layout, driver: 0x2100 }), /driver event suppression structure at 0x2100/);

  const buffer = new ArrayBuffer(0x100);
  const part = (offset: number, len: number) => new Uint8Array(buffer, offset, len);
  const ok = { desc: part(0, 48), driver: part(48, 4), device: part(52, 4) };
  assert.equal(packedRingViewsFromBytes(3, ok).deviceEvent.byteOffset, 52);
  const misaligned = virtioError(
    'QUEUE_ALIGNMENT',
    'packed ring parts are not aligned in their backing memory (QUEUE_ALIGNMENT, virtio 1.2 §2.8.11)',
  );
  assert.throws(() => packedRingViewsFromBytes(3, { ...ok, desc: part(2, 48) }), misaligned);
  assert.throws(() => packedRingViewsFromBytes(3, { ...ok, driver: part(50, 4) }), misaligned);
  assert.throws(() => packedRingViewsFromBytes(3, { ...ok, device: part(54, 4) }), misaligned);
  const short = virtioError('MEM_OUT_OF_RANGE', 'packed ring parts are shorter than the ring (MEM_OUT_OF_RANGE, virtio 1.2 §2.8.10.1)');
  assert.throws(() => packedRingViewsFromBytes(3, { ...ok, desc: part(0, 47) }), short);
  assert.throws(() => packedRingViewsFromBytes(3, { ...ok, driver: part(48, 3) }), short);
  assert.throws(() => packedRingViewsFromBytes(3, { ...ok, device: part(52, 3) }), short);
  assert.throws(() => packedRingViewsFromBytes(0, ok), /QUEUE_SIZE_INVALID/);
});

test('descriptor flag names: split has NEXT, WRITE, INDIRECT; packed adds AVAIL and USED (§2.7.5, §2.8.1)', () => {
  assert.deepEqual(descriptorFlagNames(0, false), []);
  assert.deepEqual(descriptorFlagNames(0x7, false), ['next', 'write', 'indirect']);
  assert.deepEqual(descriptorFlagNames(0x8087, false), ['next', 'write', 'indirect'], 'AVAIL/USED mean nothing in a split descriptor');
  assert.deepEqual(descriptorFlagNames(0x8080, true), ['avail', 'used']);
  assert.deepEqual(descriptorFlagNames(0x8000, true), ['used']);
  assert.deepEqual(descriptorFlagNames(0x0082, true), ['write', 'avail']);
});

test('split ring views over a region that is a window into its buffer: parts at their buffer offsets (§2.7.1)', () => {
  // Like a vhost-user memory table entry whose mmap offset is not 0: region byte 0 is buffer byte 0x40.
  const buffer = new SharedArrayBuffer(0x1000);
  const memory = new GuestMemory([{ guestAddr: 0x40000, size: 0xfc0, buffer, offset: 0x40 }]);
  const a = packedLayout(0x40100, 4);
  const v = ringViewsFromGuest(memory, a);
  assert.deepEqual([v.desc.byteOffset, v.avail.byteOffset, v.used16.byteOffset, v.used32.byteOffset], [0x140, 0x180, 0x190, 0x190]);
  v.desc[0] = 0xcafe;
  assert.equal(new Uint32Array(buffer)[0x140 / 4], 0xcafe);
  assert.equal(memory.readU32(a.desc), 0xcafe);

  // From bytes: a descriptor table at a 4-aligned, non-zero offset of its buffer is aligned.
  const part = (offset: number, len: number) => new Uint8Array(buffer, offset, len);
  assert.equal(ringViewsFromBytes(4, { desc: part(0x204, 64), avail: part(0x244, 14), used: part(0x254, 38) }).desc.byteOffset, 0x204);
});
