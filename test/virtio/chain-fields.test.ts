/**
 * DescriptorChain's field accessors: little-endian fields across the readable and the
 * writable byte streams, inside one segment (fast path) and split over two (slow path),
 * and every way of reaching past a buffer refused.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescriptorChain } from '../../src/virtio/chain.js';
import { MemoryRegion } from '../../src/virtio/memory.js';

const region = new MemoryRegion({ guestAddr: 0x1000, size: 0x1000, buffer: new ArrayBuffer(0x1000) });

/** A chain of readable segments then writable ones, each [offset, length] in `region`, 0x100 apart. */
function chain(readable: number[], writable: number[]): DescriptorChain {
  const c = new DescriptorChain(0);
  let at = 0x10;
  for (const len of readable) (c.addSegment(region, at, len, false), (at += 0x100));
  for (const len of writable) (c.addSegment(region, at, len, true), (at += 0x100));
  return c;
}

test('fields inside one segment and split across segments read the same little-endian values', () => {
  const bytes = Uint8Array.from({ length: 16 }, (_, i) => 0xf0 + i);
  for (const split of [[16], [1, 15], [2, 14], [3, 13], [5, 11], [1, 1, 1, 13]]) {
    const c = chain(split, []);
    let from = 0;
    let at = 0x10;
    for (const len of split) {
      region.bytes.set(bytes.subarray(from, from + len), at);
      from += len;
      at += 0x100;
    }
    const view = new DataView(bytes.buffer);
    for (let o = 0; o + 4 <= 16; o++) {
      assert.equal(c.readUint32(o), view.getUint32(o, true), `u32 at ${o}, split ${split}`);
      assert.equal(c.readUint16(o), view.getUint16(o, true), `u16 at ${o}, split ${split}`);
      assert.equal(c.readUint8(o), bytes[o]);
    }
  }
});

test('writes land in the writable stream only, split or not, and nothing beyond it', () => {
  for (const split of [[12], [2, 10], [4, 4, 4], [11, 1]]) {
    region.bytes.fill(0xee);
    const c = chain([48], split);
    c.writeUint32(0, 0x04030201);
    c.writeUint16(4, 0x0605);
    c.writeUint8(6, 0x07);
    c.writeUint32(7, 0x0b0a0908);
    c.writeUint8(11, 0x0c);
    const got: number[] = [];
    let at = 0x110;
    for (const len of split) {
      got.push(...region.bytes.subarray(at, at + len));
      assert.equal(region.bytes[at + len], 0xee, `byte after segment at ${at} untouched (split ${split})`);
      at += 0x100;
    }
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], `split ${split}`);
    assert.equal(region.bytes[0x10], 0xee, 'the readable segment is not written');
  }
});

test('reads and writes past the end, or at a negative or fractional offset, throw RangeError and touch nothing', () => {
  region.bytes.fill(0xee);
  const c = chain([8], [4, 4]);
  assert.throws(() => c.readUint32(5), RangeError);
  assert.throws(() => c.readUint8(8), RangeError);
  assert.throws(() => c.readUint16(-1), RangeError);
  assert.throws(() => c.readUint32(0.5), RangeError);
  assert.throws(() => c.writeUint32(5, 1), RangeError);
  assert.throws(() => c.writeUint16(-2, 1), RangeError);
  assert.throws(() => c.writeUint8(Number.NaN, 1), RangeError);
  assert.throws(() => c.read(new Uint8Array(4), -4), RangeError);
  assert.throws(() => c.write(new Uint8Array(4), -4), RangeError);
  assert.equal(c.write(new Uint8Array(16).fill(1)), 8, 'write() stops at the end of the writable segments');
  assert.ok(region.bytes.subarray(0, 0x110).every((b) => b === 0xee), 'nothing written before the writable segments');
  assert.equal(region.bytes[0x110 + 4], 0xee);
  assert.equal(region.bytes[0x210 + 4], 0xee);
});

test('a revoked chain reads zeros and drops writes', () => {
  region.bytes.fill(0xee);
  const c = chain([8], [4]);
  c.revoke();
  assert.equal(c.readUint32(0), 0);
  c.writeUint32(0, 0x12345678);
  assert.equal(c.write(Uint8Array.of(1, 2)), 0);
  assert.equal(c.read(new Uint8Array(4)), 0);
  assert.ok(region.bytes.every((b) => b === 0xee));
});

test('a reused chain (refill) forgets its old segments', () => {
  const c = chain([8, 8, 8], [4]);
  c.refill(3);
  c.addSegment(region, 0x800, 4, true);
  assert.equal(c.readableLength, 0);
  assert.equal(c.writableLength, 4);
  assert.throws(() => c.readUint8(0), RangeError);
  c.writeUint32(0, 0xdeadbeef);
  assert.equal(region.view.getUint32(0x800, true), 0xdeadbeef);
  assert.deepEqual(c.readable, []);
  assert.equal(c.writable.length, 1);
});
