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
    // Bytes that are not the field's around every segment: a read that runs past its segment shows.
    region.bytes.fill(0x5a);
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
  assert.equal(c.readUint16(0), 0);
  assert.equal(c.readUint8(0), 0);
  assert.equal(c.readUint32(8), 0, 'past the old end too: a late device model sees no error');
  c.writeUint32(0, 0x12345678);
  c.writeUint32(4, 0x12345678);
  c.writeUint16(6, 0x1234);
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

/** The chain's bytes as one stream: what a device must see whatever the descriptor layout (§2.6.4 Message Framing). */
function stream(c: DescriptorChain, writable: boolean): number[] {
  return (writable ? c.writable : c.readable).flatMap((v) => [...v]);
}

test('read() and write() see the segments as one stream, from any offset, short and long runs alike (§2.6.4)', () => {
  const bytes = Uint8Array.from({ length: 200 }, (_, i) => (i * 7 + 3) & 0xff);
  for (const split of [[200], [1, 199], [64, 64, 72], [65, 135], [3, 100, 97]]) {
    region.bytes.fill(0x5a);
    const c = chain(split, []);
    let at = 0x10;
    let from = 0;
    for (const len of split) {
      region.bytes.set(bytes.subarray(from, from + len), at);
      from += len;
      at += 0x100;
    }
    assert.deepEqual(stream(c, false), [...bytes], `readable views, split ${split}`);
    assert.deepEqual(c.readable.map((v) => v.length), split);
    for (const [offset, length] of [[0, 200], [0, 10], [1, 150], [64, 70], [130, 70], [199, 5], [200, 4], [250, 4]] as const) {
      const into = new Uint8Array(length).fill(0xcc);
      const n = c.read(into, offset);
      const want = [...bytes.subarray(offset, offset + length)];
      assert.equal(n, want.length, `read ${length} at ${offset}, split ${split}: count`);
      assert.deepEqual([...into.subarray(0, n)], want, `read ${length} at ${offset}, split ${split}`);
      assert.ok(into.subarray(n).every((b) => b === 0xcc), 'nothing copied past the count');
    }
  }
  for (const split of [[150], [10, 140], [70, 80], [1, 1, 148]]) {
    region.bytes.fill(0x5a);
    const c = chain([8], split);
    const data = Uint8Array.from({ length: 150 }, (_, i) => (i * 13 + 1) & 0xff);
    const original = [...data];
    assert.equal(c.write(data.subarray(0, 100), 20), 100, `write 100 at 20, split ${split}`);
    assert.equal(c.write(data.subarray(0, 20)), 20);
    assert.equal(c.write(data, 140), 10, 'a write is cut at the end of the writable bytes');
    assert.deepEqual([...data], original, 'write() only reads its source');
    const want = [...original.slice(0, 20), ...original.slice(0, 100), ...new Array(20).fill(0x5a), ...original.slice(0, 10)];
    assert.deepEqual(stream(c, true), want, `split ${split}`);
    assert.deepEqual(c.writable.map((v) => v.length), split);
    assert.ok(region.bytes.subarray(0x10, 0x18).every((b) => b === 0x5a), 'the readable segment is not written');
  }
});

test('a field that ends exactly at the end of the stream, split over segments, is inside it', () => {
  region.bytes.fill(0);
  const c = chain([2, 2], [1, 3]);
  region.bytes.set([0x11, 0x22], 0x10);
  region.bytes.set([0x33, 0x44], 0x110);
  assert.equal(c.readUint32(0), 0x44332211);
  assert.equal(c.readUint16(2), 0x4433);
  assert.equal(c.readUint16(1), 0x3322);
  c.writeUint32(0, 0x0d0c0b0a);
  assert.deepEqual(stream(c, true), [0x0a, 0x0b, 0x0c, 0x0d]);
  c.writeUint16(2, 0xbeef);
  assert.deepEqual(stream(c, true), [0x0a, 0x0b, 0xef, 0xbe]);
  assert.throws(() => c.readUint32(1), { name: 'RangeError', message: "read of 4 bytes at 1 is past the chain's 4 readable bytes" });
  assert.throws(() => c.writeUint16(3, 1), { name: 'RangeError', message: "write of 2 bytes at 3 is past the chain's 4 writable bytes" });
  assert.throws(() => c.read(new Uint8Array(1), 1.5), { name: 'RangeError', message: 'chain offset 1.5 is not a byte offset' });
});

test('readUint8 at a negative or fractional offset, and any read of a chain without readable bytes, is a RangeError', () => {
  region.bytes.fill(0xee);
  const c = chain([8], [4]);
  assert.throws(() => c.readUint8(-1), { name: 'RangeError', message: 'chain offset -1 is not a byte offset' });
  assert.throws(() => c.readUint8(0.5), { name: 'RangeError', message: 'chain offset 0.5 is not a byte offset' });
  // only writable segments: the readable stream is empty, the writable bytes are not read instead
  const w = chain([], [8]);
  for (const [read, size] of [[(o: number) => w.readUint8(o), 1], [(o: number) => w.readUint16(o), 2], [(o: number) => w.readUint32(o), 4]] as const) {
    assert.throws(() => read(0), { name: 'RangeError', message: `read of ${size} bytes at 0 is past the chain's 0 readable bytes` });
  }
});

test('a revoked chain has no views left', () => {
  const c = chain([8], [4]);
  c.revoke();
  assert.deepEqual(c.readable, []);
  assert.deepEqual(c.writable, []);
  assert.equal(c.hasWritable, false);
});
