/**
 * Every malformed chain a driver can build is a VirtioError naming the rule, never an escaped
 * exception of another kind, a hang, or a write outside the chain's writable buffers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescFlags } from '../../src/virtio/constants.js';
import { DeviceQueue } from '../../src/virtio/device-queue.js';
import { VirtioError, type VirtioErrorCode } from '../../src/virtio/errors.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';
import { BASE, MEM_BYTES, makeAvailable, makeRing, writeDesc, type Ring } from '../helpers/ring.js';

const { NEXT, WRITE, INDIRECT } = DescFlags;
const BUF = BASE + 0x8000;

interface Case {
  name: string;
  code: VirtioErrorCode;
  indirect?: boolean;
  size?: number;
  build(r: Ring): void;
}

const cases: Case[] = [
  { name: 'head ≥ queue size', code: 'DESC_INDEX_OUT_OF_RANGE', build: (r) => makeAvailable(r, 8) },
  {
    name: 'next ≥ queue size',
    code: 'DESC_INDEX_OUT_OF_RANGE',
    build: (r) => {
      writeDesc(r, 0, BUF, 16, NEXT, 9);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'a loop through two descriptors',
    code: 'DESC_LOOP',
    build: (r) => {
      writeDesc(r, 0, BUF, 16, NEXT, 1);
      writeDesc(r, 1, BUF, 16, NEXT, 0);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'a descriptor pointing at itself',
    code: 'DESC_LOOP',
    build: (r) => {
      writeDesc(r, 3, BUF, 16, NEXT, 3);
      makeAvailable(r, 3);
    },
  },
  {
    name: 'address outside guest memory',
    code: 'MEM_OUT_OF_RANGE',
    build: (r) => {
      writeDesc(r, 0, BASE + MEM_BYTES, 16, 0);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'address + length past the end of memory',
    code: 'MEM_OUT_OF_RANGE',
    build: (r) => {
      writeDesc(r, 0, BASE + MEM_BYTES - 8, 16, WRITE);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'address overflowing 64 bits',
    code: 'MEM_OUT_OF_RANGE',
    build: (r) => {
      const v = r.memory.slice(r.ring.desc, 16);
      const d = new DataView(v.buffer, v.byteOffset, 16);
      d.setUint32(0, 0xfffffff0, true);
      d.setUint32(4, 0xffffffff, true);
      d.setUint32(8, 0x100, true);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'zero-length buffer',
    code: 'DESC_ZERO_LENGTH',
    build: (r) => {
      writeDesc(r, 0, BUF, 0, 0);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'readable after writable',
    code: 'DESC_READABLE_AFTER_WRITABLE',
    build: (r) => {
      writeDesc(r, 0, BUF, 16, WRITE | NEXT, 1);
      writeDesc(r, 1, BUF + 16, 16, 0);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'INDIRECT without the feature',
    code: 'INDIRECT_NOT_NEGOTIATED',
    indirect: false,
    build: (r) => {
      writeDesc(r, 0, BUF, 16, INDIRECT);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'INDIRECT with NEXT',
    code: 'INDIRECT_WITH_NEXT',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 16, INDIRECT | NEXT, 1);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'empty indirect table',
    code: 'INDIRECT_BAD_LENGTH',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 0, INDIRECT);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'indirect table not a multiple of 16',
    code: 'INDIRECT_BAD_LENGTH',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 24, INDIRECT);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'nested indirect table',
    code: 'INDIRECT_NESTED',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 32, INDIRECT);
      writeDesc(r, 0, BUF + 0x100, 16, INDIRECT, 0, BUF);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'loop inside an indirect table',
    code: 'DESC_LOOP',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 32, INDIRECT);
      writeDesc(r, 0, BUF + 0x100, 16, NEXT, 1, BUF);
      writeDesc(r, 1, BUF + 0x200, 16, NEXT, 0, BUF);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'indirect next past the table',
    code: 'DESC_INDEX_OUT_OF_RANGE',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 32, INDIRECT);
      writeDesc(r, 0, BUF + 0x100, 16, NEXT, 2, BUF);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'indirect table outside memory',
    code: 'MEM_OUT_OF_RANGE',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BASE + MEM_BYTES - 16, 32, INDIRECT);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'indirect table longer than 32768 entries',
    code: 'INDIRECT_BAD_LENGTH',
    indirect: true,
    build: (r) => {
      writeDesc(r, 0, BUF, 16 * 32769, INDIRECT);
      makeAvailable(r, 0);
    },
  },
  {
    name: 'avail.idx moved by more than the queue size',
    code: 'AVAIL_IDX_JUMP',
    build: (r) => r.memory.writeU16(r.ring.avail + 2, 9),
  },
  {
    name: 'avail.idx moved backwards',
    code: 'AVAIL_IDX_JUMP',
    build: (r) => r.memory.writeU16(r.ring.avail + 2, 0xffff),
  },
];

for (const c of cases) {
  test(`device refuses: ${c.name}`, () => {
    const r = makeRing(c.size ?? 8, { indirect: c.indirect ?? false });
    c.build(r);
    const before = r.bytes.slice();
    let err: unknown;
    try {
      r.device.pop();
    } catch (e) {
      err = e;
    }
    const expected = c.code;
    assert.ok(err instanceof VirtioError, `expected a VirtioError, got ${err}`);
    assert.equal(err.code, expected, err.message);
    assert.match(err.message, /virtio 1\.2 §/, 'the error names the spec section');
    assert.deepEqual(r.bytes, before, 'validation wrote nothing to guest memory');
  });
}

test('a chain longer than 2^32 bytes in total is refused (§2.7.5.2)', () => {
  // Five 1 GiB regions share one lazily-allocated backing buffer (never touched), so five
  // descriptors of 1 GiB each are all inside guest memory but add up to 5 GiB.
  const GiB = 1 << 30;
  const big = new SharedArrayBuffer(GiB);
  const ringBuf = new SharedArrayBuffer(0x10000);
  const memory = new GuestMemory([{ guestAddr: 0, size: ringBuf.byteLength, buffer: ringBuf }]);
  for (let i = 1; i <= 5; i++) memory.addRegion({ guestAddr: i * 2 * GiB, size: GiB, buffer: big });
  const ring = packedLayout(0, 8);
  const device = new DeviceQueue(memory, ringViewsFromGuest(memory, ring), { eventIdx: false, indirect: false });
  const r = { memory, ring } as unknown as Ring;
  for (let i = 0; i < 5; i++) writeDesc(r, i, (i + 1) * 2 * GiB, GiB, i < 4 ? NEXT : 0, i + 1);
  makeAvailable(r, 0);
  assert.throws(() => device.pop(), (e: unknown) => e instanceof VirtioError && e.code === 'DESC_CHAIN_TOO_LONG');
});

test('an indirect table with more entries than the queue size is accepted, as Linux builds them', () => {
  const r = makeRing(1, { indirect: true });
  writeDesc(r, 0, BUF, 16 * 3, INDIRECT);
  for (let i = 0; i < 3; i++) writeDesc(r, i, BUF + 0x400 + 16 * i, 16, (i < 2 ? NEXT : 0) | (i === 2 ? WRITE : 0), i + 1, BUF);
  makeAvailable(r, 0);
  const chain = r.device.pop()!;
  assert.deepEqual([chain.readable.length, chain.writable.length], [2, 1]);
});

test('a valid chain after the memory canary: only the writable bytes change', () => {
  const r = makeRing(8);
  r.bytes.fill(0xa5, r.ring.bytes);
  const out = BUF;
  const inn = BUF + 64;
  r.driver.add([{ addr: out, len: 16 }], [{ addr: inn, len: 12 }], 1);
  const before = r.bytes.slice();
  const chain = r.device.pop()!;
  // try to write more than the writable part: write() stops at the chain's end
  assert.equal(chain.write(new Uint8Array(100).fill(7)), 12);
  r.device.pushUsed(chain, 12);
  const changed: number[] = [];
  for (let i = 0; i < r.bytes.length; i++) if (r.bytes[i] !== before[i]) changed.push(BASE + i);
  const usedStart = r.ring.used;
  const usedEnd = r.ring.used + 6 + 8 * 8;
  const outside = changed.filter((a) => !(a >= inn && a < inn + 12) && !(a >= usedStart && a < usedEnd));
  assert.deepEqual(outside, []);
  assert.ok(changed.some((a) => a >= inn && a < inn + 12));
});
