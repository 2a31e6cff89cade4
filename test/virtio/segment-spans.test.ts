/**
 * A chain's data as spans of its guest regions (DescriptorChain.spans, SegmentSpans): the same
 * bytes as the segment views, without a view per segment.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DescriptorChain } from '../../src/virtio/chain.js';
import { MemoryRegion } from '../../src/virtio/memory.js';
import { SegmentSpans } from '../../src/virtio/segment-spans.js';

const backing = new ArrayBuffer(0x3000);
// Two regions over one buffer, the second at an offset in it: spans are relative to region.bytes.
const low = new MemoryRegion({ guestAddr: 0x1000, size: 0x1000, buffer: backing });
const high = new MemoryRegion({ guestAddr: 0x10000, size: 0x1000, buffer: backing, offset: 0x2000 });

/** Spans as [base, offset, length] triples, the base named. */
function triples(s: SegmentSpans): [string, number, number][] {
  const out: [string, number, number][] = [];
  for (let i = 0; i < s.count; i++) {
    const base = s.bases[s.table[3 * i]!]!;
    out.push([base === low.bytes ? 'low' : base === high.bytes ? 'high' : '?', s.table[3 * i + 1]!, s.table[3 * i + 2]!]);
  }
  return out;
}

function chain(): DescriptorChain {
  const c = new DescriptorChain(0);
  c.addSegment(low, 0x10, 16, false); // header-like
  c.addSegment(high, 0x100, 0x200, false);
  c.addSegment(low, 0x400, 0x100, true);
  c.addSegment(high, 0x800, 0x100, true);
  c.addSegment(low, 0x900, 1, true); // status-like
  return c;
}

test('spans of the readable part from an offset: cut where the offset falls, whole segments after; bases once each', () => {
  const s = chain().spans(false, 16, 0x200);
  assert.deepEqual(triples(s), [['high', 0x100, 0x200]]);
  assert.equal(s.bytes, 0x200);
  const all = chain().spans(false, 4, 0x20c);
  assert.deepEqual(triples(all), [['low', 0x14, 12], ['high', 0x100, 0x200]]);
  assert.equal(all.bases.length, 2);
});

test('spans of the writable part stop at the length asked (the status byte left out); a longer ask stops at the end', () => {
  const c = chain();
  assert.deepEqual(triples(c.spans(true, 0, 0x180)), [['low', 0x400, 0x100], ['high', 0x800, 0x80]]);
  assert.deepEqual(triples(c.spans(true, 0x100, 0x1000)), [['high', 0x800, 0x100], ['low', 0x900, 1]]);
  assert.equal(c.spans(true, 0x201, 4).count, 0, 'past the end: nothing');
  assert.equal(c.spans(true, 0, 0).count, 0);
});

test('views() are the same bytes as the chain\'s segment views, and writes through them reach guest memory', () => {
  const c = chain();
  const views = c.spans(true, 0, 0x200).views();
  assert.deepEqual(
    views.map((v) => [v.buffer, v.byteOffset, v.length]),
    c.writable.slice(0, 2).map((v) => [v.buffer, v.byteOffset, v.length]),
  );
  views[1]![0] = 0xab;
  assert.equal(new Uint8Array(backing)[0x2000 + 0x800], 0xab);
});

test('a revoked chain has no spans', () => {
  const c = chain();
  c.revoke();
  assert.equal(c.spans(false, 0, 100).count, 0);
  assert.equal(c.spans(true, 0, 100).count, 0);
});

test('SegmentSpans grows its table past its first capacity and keeps every span', () => {
  const s = new SegmentSpans(1);
  for (let i = 0; i < 100; i++) s.add(i % 3 === 0 ? high.bytes : low.bytes, i * 8, 8);
  assert.equal(s.count, 100);
  assert.equal(s.bytes, 800);
  assert.equal(s.bases.length, 2);
  assert.ok(s.table.length >= 300);
  const v = s.views();
  assert.equal(v.length, 100);
  assert.ok(v.every((x, i) => x.byteOffset === (i % 3 === 0 ? 0x2000 : 0) + i * 8 && x.length === 8));
});
