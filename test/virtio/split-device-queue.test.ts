/**
 * The device half of a split virtqueue (DeviceQueue, virtio 1.2 §2.7) beyond the round trips of
 * split-queue.test.ts: the exact error of every rule a driver can break, the edges of the limits
 * (a table of exactly 32768 entries, a chain of exactly 2^32 bytes), addresses above 4 GiB in
 * indirect tables, how avail.idx is cached, the used-side argument checks, the status words,
 * element() at any ring position and under a rewriting driver, and the flush trace.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescFlags } from '../../src/virtio/constants.js';
import { DeviceQueue } from '../../src/virtio/device-queue.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';
import { BASE, makeAvailable, makeRing, writeDesc, type Ring } from '../helpers/ring.js';
import { Recorder, withTracing } from '../helpers/trace-recorder.js';

const { NEXT, WRITE, INDIRECT } = DescFlags;
const BUF = BASE + 0x8000; // 0x18000
const GiB = 1 << 30;

/** The VirtioError `f` throws (fails the test if it throws anything else or nothing). */
function virtioError(f: () => unknown): VirtioError {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof VirtioError, `expected a VirtioError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected a VirtioError, nothing was thrown');
}

// ---- every broken rule: its code, its exact message and the section it names

interface Refusal {
  name: string;
  indirect?: boolean;
  build(r: Ring): void;
  message: string;
}

const refusals: Refusal[] = [
  {
    name: 'avail.idx more than the queue size ahead (§2.7.6)',
    build: (r) => r.memory.writeU16(r.ring.avail + 2, 9),
    message: 'avail.idx 9 is 9 entries ahead of 0, more than the queue size 8 (AVAIL_IDX_JUMP, virtio 1.2 §2.7.6)',
  },
  {
    name: 'an available head equal to the queue size',
    build: (r) => makeAvailable(r, 8),
    message: 'available head 8 ≥ queue size 8 (DESC_INDEX_OUT_OF_RANGE, virtio 1.2 §2.7.6)',
  },
  {
    name: 'a next equal to the queue size (the first index past the table, §2.7.5)',
    build: (r) => {
      writeDesc(r, 0, BUF, 16, NEXT, 8);
      makeAvailable(r, 0);
    },
    message: 'descriptor next 8 ≥ queue size 8 (DESC_INDEX_OUT_OF_RANGE, virtio 1.2 §2.7.5)',
  },
  {
    name: 'a loop in the descriptor table',
    build: (r) => {
      writeDesc(r, 0, BUF, 16, NEXT, 1);
      writeDesc(r, 1, BUF, 16, NEXT, 0);
      makeAvailable(r, 0);
    },
    message: 'chain from head 0 is longer than the queue size 8 (a loop) (DESC_LOOP, virtio 1.2 §2.7.5.3.1)',
  },
  {
    name: 'a zero-length descriptor',
    build: (r) => {
      writeDesc(r, 0, BUF, 0, 0);
      makeAvailable(r, 0);
    },
    message: 'descriptor with length 0 at 0x18000 (DESC_ZERO_LENGTH, virtio 1.2 §2.7.5)',
  },
  {
    name: 'a readable descriptor after a writable one (§2.7.4.2)',
    build: (r) => {
      writeDesc(r, 0, BUF, 16, WRITE | NEXT, 1);
      writeDesc(r, 1, BUF + 16, 16, 0);
      makeAvailable(r, 0);
    },
    message: 'device-readable descriptor after a device-writable one (DESC_READABLE_AFTER_WRITABLE, virtio 1.2 §2.7.4.2)',
  },
  {
    name: 'INDIRECT without VIRTIO_F_INDIRECT_DESC',
    build: (r) => {
      writeDesc(r, 0, BUF, 16, INDIRECT);
      makeAvailable(r, 0);
    },
    message: 'INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC (INDIRECT_NOT_NEGOTIATED, virtio 1.2 §2.7.5.3.1)',
  },
  {
    name: 'INDIRECT together with NEXT',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 16, INDIRECT | NEXT, 1);
      makeAvailable(r, 0);
    },
    message: 'descriptor has both INDIRECT and NEXT (INDIRECT_WITH_NEXT, virtio 1.2 §2.7.5.3.1)',
  },
  {
    name: 'an indirect table length that is not a multiple of 16',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 24, INDIRECT);
      makeAvailable(r, 0);
    },
    message: 'indirect table length 24 is not a non-zero multiple of 16 (INDIRECT_BAD_LENGTH, virtio 1.2 §2.7.5.3)',
  },
  {
    name: 'an indirect table of 32769 entries',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 16 * 32769, INDIRECT);
      makeAvailable(r, 0);
    },
    message: 'indirect table of 32769 entries is longer than 32768 (INDIRECT_BAD_LENGTH, virtio 1.2 §2.7.5.3)',
  },
  {
    name: 'a loop inside an indirect table',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 32, INDIRECT);
      writeDesc(r, 0, BUF + 0x100, 16, NEXT, 1, BUF);
      writeDesc(r, 1, BUF + 0x200, 16, NEXT, 0, BUF);
      makeAvailable(r, 0);
    },
    message: 'indirect chain at 0x18000 revisits a descriptor (a loop) (DESC_LOOP, virtio 1.2 §2.7.5.3.1)',
  },
  {
    name: 'INDIRECT inside an indirect table',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 32, INDIRECT);
      writeDesc(r, 0, BUF + 0x100, 16, INDIRECT, 0, BUF);
      makeAvailable(r, 0);
    },
    message: 'descriptor inside an indirect table has INDIRECT (INDIRECT_NESTED, virtio 1.2 §2.7.5.3.1)',
  },
  {
    name: 'an indirect next past the table',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 32, INDIRECT);
      writeDesc(r, 0, BUF + 0x100, 16, NEXT, 2, BUF);
      makeAvailable(r, 0);
    },
    message: 'indirect next 2 ≥ table length 2 (DESC_INDEX_OUT_OF_RANGE, virtio 1.2 §2.7.5.3)',
  },
];

for (const c of refusals) {
  test(`the device's error names the broken rule exactly: ${c.name}`, () => {
    const r = makeRing(8, { indirect: c.indirect ?? false });
    c.build(r);
    assert.equal(virtioError(() => r.device.pop()).message, c.message);
    assert.equal(r.device.nextAvail, 0, 'the refused chain is not taken');
  });
}

// ---- the limits are inclusive where the spec says "longer than"

test('an indirect table of exactly 32768 entries is accepted (§2.7.5.3: at most 32768)', () => {
  const r = makeRing(8, { indirect: true });
  const table = r.alloc(16 * 32768);
  const buf = r.alloc(16);
  writeDesc(r, 0, table, 16 * 32768, INDIRECT);
  writeDesc(r, 0, buf, 16, 0, 0, table); // the walk ends at the first entry
  makeAvailable(r, 0);
  const chain = r.device.pop()!;
  assert.deepEqual([chain.readableLength, chain.writableLength, chain.descriptorCount], [16, 0, 2]);
});

/** A ring in 64 KiB at 0 and five 1 GiB regions at 2, 4, … 10 GiB sharing one untouched buffer. */
function hugeRing(): { device: DeviceQueue; r: Ring } {
  const big = new SharedArrayBuffer(GiB);
  const ringBuf = new SharedArrayBuffer(0x10000);
  const memory = new GuestMemory([{ guestAddr: 0, size: ringBuf.byteLength, buffer: ringBuf }]);
  for (let i = 1; i <= 5; i++) memory.addRegion({ guestAddr: i * 2 * GiB, size: GiB, buffer: big });
  const ring = packedLayout(0, 8);
  const device = new DeviceQueue(memory, ringViewsFromGuest(memory, ring), { eventIdx: false, indirect: false });
  return { device, r: { memory, ring } as unknown as Ring };
}

test('a chain of exactly 2^32 bytes is accepted, one byte more is refused (§2.7.5.2: not longer than 2^32)', () => {
  const { device, r } = hugeRing();
  // Four 1 GiB descriptors: 2^32 bytes in total.
  for (let i = 0; i < 4; i++) writeDesc(r, i, (i + 1) * 2 * GiB, GiB, i < 3 ? NEXT : 0, i + 1);
  makeAvailable(r, 0);
  const chain = device.pop()!;
  assert.equal(chain.readableLength, 2 ** 32);
  // A fifth descriptor of one byte: 2^32 + 1.
  writeDesc(r, 3, 8 * GiB, GiB, NEXT, 4);
  writeDesc(r, 4, 10 * GiB, 1, 0);
  makeAvailable(r, 0);
  assert.equal(
    virtioError(() => device.pop()).message,
    'chain is longer than 2^32 bytes in total (DESC_CHAIN_TOO_LONG, virtio 1.2 §2.7.5.2)',
  );
});

test('readable and writable bytes count together toward the 2^32 limit: 2 GiB + 1 read and 2 GiB written is refused', () => {
  const { device, r } = hugeRing();
  writeDesc(r, 0, 2 * GiB, GiB, NEXT, 1);
  writeDesc(r, 1, 4 * GiB, GiB, NEXT, 2);
  writeDesc(r, 2, 6 * GiB, 1, NEXT, 3);
  writeDesc(r, 3, 8 * GiB, GiB, NEXT | WRITE, 4);
  writeDesc(r, 4, 10 * GiB, GiB, WRITE);
  makeAvailable(r, 0);
  assert.equal(virtioError(() => device.pop()).code, 'DESC_CHAIN_TOO_LONG');
});

// ---- indirect table entries are 64-bit little-endian addresses (§2.7.5: le64 addr)

test('an indirect table entry pointing above 4 GiB is walked and shown with its full address', () => {
  const low = new SharedArrayBuffer(0x10000);
  const high = new SharedArrayBuffer(0x1000);
  const HIGH = 0x2_0000_0000;
  const memory = new GuestMemory([
    { guestAddr: 0, size: low.byteLength, buffer: low },
    { guestAddr: HIGH, size: high.byteLength, buffer: high },
  ]);
  const ring = packedLayout(0, 8);
  const device = new DeviceQueue(memory, ringViewsFromGuest(memory, ring), { eventIdx: false, indirect: true });
  const r = { memory, ring } as unknown as Ring;
  const table = 0x8000;
  writeDesc(r, 0, table, 32, INDIRECT);
  writeDesc(r, 0, 0x9000, 4, NEXT, 1, table);
  writeDesc(r, 1, HIGH + 0x10, 8, WRITE, 0, table);
  makeAvailable(r, 0);
  assert.deepEqual(
    device.element()!.descriptors[0]!.table,
    [
      { index: 0, addr: 0x9000, len: 4, flags: NEXT, next: 1 },
      { index: 1, addr: HIGH + 0x10, len: 8, flags: WRITE },
    ],
    'every field as written; `next` only where NEXT is set',
  );
  const chain = device.pop()!;
  assert.equal(chain.write(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)), 8);
  assert.deepEqual([...new Uint8Array(high, 0x10, 8)], [1, 2, 3, 4, 5, 6, 7, 8], 'written at 8 GiB + 0x10');
});

// ---- avail.idx is read again only when needed (QEMU/vhost shadow_avail_idx)

test('the device reads avail.idx again only once the entries it saw last are taken', () => {
  const r = makeRing(8);
  const a = r.alloc(16);
  r.driver.add([{ addr: a, len: 4 }], [], 1);
  r.driver.add([{ addr: a, len: 4 }], [], 2);
  assert.equal(r.device.pending(), 2);
  r.driver.add([{ addr: a, len: 4 }], [], 3);
  assert.equal(r.device.pending(), 2, 'two seen at the last read are still there: no re-read');
  assert.deepEqual([r.device.status().shadowAvailIdx, r.device.status().availIdx], [2, 3]);
  r.device.pop();
  r.device.pop();
  assert.equal(r.device.pending(), 1, 'both taken: avail.idx read again');
  assert.equal(r.device.status().shadowAvailIdx, 3);
});

test('a nextAvail set from outside past the last read avail.idx makes pending() read it again', () => {
  const r = makeRing(8);
  const a = r.alloc(16);
  for (let t = 1; t <= 2; t++) r.driver.add([{ addr: a, len: 4 }], [], t);
  assert.equal(r.device.pending(), 2); // avail.idx 2 seen
  for (let t = 3; t <= 5; t++) r.driver.add([{ addr: a, len: 4 }], [], t);
  r.device.nextAvail = 4; // e.g. a resume point from a back-end's saved state
  assert.equal(r.device.pending(), 1, 'avail.idx 5 read again, not 2 − 4 = 65534');
  assert.equal(r.device.pop()!.head, 4);
});

// ---- the used side: what the device may return

test('addUsed refuses an id that is not a descriptor index; nothing is written', () => {
  const r = makeRing(8);
  const before = r.bytes.slice();
  for (const id of [-1, 8]) {
    assert.throws(() => r.device.addUsed(id, 0), { name: 'RangeError', message: `used id ${id} is not a descriptor index` });
  }
  r.device.publishUsed();
  assert.deepEqual(r.bytes, before);
  r.device.addUsed(7, 0); // the last index is one
  assert.equal(r.device.nextUsed, 1);
});

test('pushUsed refuses a len above the chain\'s writable bytes (§2.7.8.1) and publishes nothing', () => {
  const r = makeRing(8);
  const a = r.alloc(32);
  r.driver.add([{ addr: a, len: 4 }], [{ addr: a + 16, len: 8 }, { addr: a + 24, len: 4 }], 1);
  const chain = r.device.pop()!;
  assert.throws(() => r.device.pushUsed(chain, 13), {
    name: 'RangeError',
    message: "used len 13 exceeds the chain's 12 writable bytes",
  });
  assert.equal(r.memory.readU16(r.ring.used + 2), 0, 'used.idx did not move');
  r.device.pushUsed(chain, 12);
  assert.deepEqual(r.driver.getUsed(), { token: 1, len: 12 });
});

// ---- status(): whether the device asks for kicks (§2.7.10)

test('status().kicksEnabled follows used.flags without event idx and avail_event with it', () => {
  const plain = makeRing(8);
  assert.equal(plain.device.status().kicksEnabled, true, 'used.flags 0');
  plain.device.disableNotifications();
  assert.deepEqual([plain.device.status().usedFlags, plain.device.status().kicksEnabled], [1, false]);
  plain.device.enableNotifications();
  assert.equal(plain.device.status().kicksEnabled, true);

  const ev = makeRing(8, { eventIdx: true });
  assert.equal(ev.device.status().kicksEnabled, true, 'avail_event 0 = next available 0');
  ev.driver.add([{ addr: ev.alloc(4), len: 4 }], [], 1);
  ev.device.pop();
  assert.deepEqual([ev.device.status().availEvent, ev.device.status().kicksEnabled], [0, false], 'avail_event left behind');
  ev.device.enableNotifications();
  assert.deepEqual([ev.device.status().availEvent, ev.device.status().kicksEnabled], [1, true]);
  assert.equal(ev.device.status().usedFlags, 0, 'flags untouched with event idx');
});

// ---- element(): at any ring position, and bounded under a driver that rewrites the table

test('element() shows the entry at the next available position, also after the index wrapped the ring', () => {
  const r = makeRing(4);
  const a = r.alloc(16);
  for (let t = 1; t <= 5; t++) {
    r.driver.add([{ addr: a, len: 4 }], [], t);
    const c = r.device.pop()!;
    r.device.pushUsed(c, 0);
    r.driver.getUsed();
  }
  assert.ok(r.driver.add([{ addr: a, len: 4 }, { addr: a + 4, len: 4 }], [], 6));
  const head = r.memory.readU16(r.ring.avail + 4 + 2 * (5 % 4));
  const e = r.device.element()!;
  assert.deepEqual([e.availIndex, e.head, e.readable, e.descriptorCount], [5, head, 8, 2]);
  assert.equal(r.device.pop()!.head, head);
});

test('element(head) refuses what is not a descriptor index with a RangeError', () => {
  const r = makeRing(8);
  for (const head of [-1, 1.5]) {
    assert.throws(() => r.device.element(head), { name: 'RangeError', message: `descriptor index ${head} is not an index` });
  }
});

/**
 * Rewrites descriptor `i` right after the device validated (walked) it: what a driver on
 * another thread could do between element()'s validation and its decoding.
 */
function rewriteAfterWalk(r: Ring, at: number, rewrite: () => void): void {
  const region = r.memory.region.bind(r.memory);
  let armed = true;
  r.memory.region = (addr: number, len: number) => {
    const reg = region(addr, len);
    if (armed && addr === at) {
      armed = false;
      rewrite();
    }
    return reg;
  };
}

test('element() decodes at most queue-size descriptors when the driver turns a valid chain into a loop', () => {
  const r = makeRing(4);
  const a = r.alloc(32);
  writeDesc(r, 0, a, 16, NEXT, 1);
  writeDesc(r, 1, a + 16, 16, WRITE);
  makeAvailable(r, 0);
  rewriteAfterWalk(r, a + 16, () => writeDesc(r, 1, a + 16, 16, WRITE | NEXT, 0));
  const e = r.device.element()!;
  assert.deepEqual([e.readable, e.writable, e.descriptorCount], [16, 16, 2], 'the validated chain');
  assert.deepEqual(e.descriptors.map((d) => d.index), [0, 1, 0, 1], 'as now written, cut at the queue size');
});

test('element() stops at a next rewritten past the table', () => {
  const r = makeRing(4);
  const a = r.alloc(32);
  writeDesc(r, 0, a, 16, NEXT, 1);
  writeDesc(r, 1, a + 16, 16, WRITE);
  makeAvailable(r, 0);
  rewriteAfterWalk(r, a + 16, () => writeDesc(r, 1, a + 16, 16, WRITE | NEXT, 4));
  const e = r.device.element()!;
  assert.deepEqual(
    e.descriptors.map((d) => [d.index, d.next]),
    [
      [0, 1],
      [1, 4],
    ],
  );
});

// ---- trace: virtqueue_flush counts what each publication makes visible (QEMU's count)

test('virtqueue_flush reports the elements each publishUsed() makes visible', () => {
  const r = makeRing(8);
  const a = r.alloc(16);
  for (let t = 1; t <= 5; t++) r.driver.add([{ addr: a, len: 4 }], [], t);
  const rec = new Recorder();
  withTracing(['virtqueue_flush'], rec, () => {
    for (let k = 0; k < 3; k++) r.device.addUsed(r.device.pop()!.head, 0);
    r.device.publishUsed();
    for (let k = 0; k < 2; k++) r.device.addUsed(r.device.pop()!.head, 0);
    r.device.publishUsed();
  });
  assert.deepEqual(
    rec.events.map((e) => e.fields),
    [
      { vq: 0, count: 3, used_idx: 3 },
      { vq: 0, count: 2, used_idx: 5 },
    ],
  );
});
