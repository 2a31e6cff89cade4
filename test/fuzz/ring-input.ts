/**
 * Random split-ring states for the fuzz targets: guest memory (1–2 regions inside one
 * backing buffer with guard bytes around them), a descriptor table, indirect tables and an
 * available ring, as a plain JSON value (a `RingInput`) so any counterexample can be stored
 * under test/corpus/ and replayed. `buildRing` turns an input into real memory.
 *
 * The generator mixes three kinds of content so both the happy path and every rule are hit:
 * well-formed request chains (readable ≥ 48 then writable ≥ 12 bytes, what virtio-test
 * wants), structurally random chains (random flags/next/len, addresses near region edges,
 * inside the ring itself, or anywhere in 64 bits), and a few random mutations on top.
 */
import fc from 'fast-check';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest, type RingViews } from '../../src/virtio/ring-views.js';
import { packedLayout, type SplitRingAddresses } from '../../src/virtio/split-ring.js';

/** One descriptor as raw fields: addr lo/hi (u32), len (u32), flags (u16), next (u16). */
export interface RawDesc {
  lo: number;
  hi: number;
  len: number;
  flags: number;
  next: number;
}

export interface RingInput {
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  /** Guest-physical placement of the regions; region 0 holds the ring at `ringOffset`. */
  regions: { addr: number; size: number }[];
  ringOffset: number;
  /** Seed of the pseudo-random bytes every region starts with. */
  fillSeed: number;
  /** Descriptor table (length `size`). */
  desc: RawDesc[];
  /** Indirect tables written into guest memory: region index, byte offset (16-aligned), entries. */
  tables: { region: number; offset: number; entries: RawDesc[] }[];
  availFlags: number;
  availIdx: number;
  /** Ring entries (length `size`). */
  availRing: number[];
  usedEvent: number;
  /** used.idx as found in memory (the device starts from it). */
  usedIdx: number;
  /** The device's last_avail_idx when it starts. */
  nextAvail: number;
}

export const GUARD = 64;
const TWO_32 = 0x1_0000_0000;

/** Where each region sits inside the one backing buffer. */
export function regionOffsets(input: RingInput): number[] {
  const offs: number[] = [];
  let at = GUARD;
  for (const r of input.regions) {
    offs.push(at);
    at += r.size + GUARD;
  }
  return offs;
}

export interface BuiltRing {
  input: RingInput;
  backing: ArrayBuffer;
  bytes: Uint8Array;
  memory: GuestMemory;
  /** Byte offset of each region in `bytes`. */
  offsets: number[];
  layout: SplitRingAddresses & { bytes: number };
  views: RingViews;
}

/** xorshift32 fill: cheap deterministic "random guest memory". */
function fill(bytes: Uint8Array, seed: number): void {
  let x = seed >>> 0 || 0x9e3779b9;
  const n = bytes.length & ~3;
  const w = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w.setUint32(i, x >>> 0, true);
  }
  for (let i = n; i < bytes.length; i++) bytes[i] = i * 31;
}

export function writeRaw(view: DataView, at: number, d: RawDesc): void {
  view.setUint32(at, d.lo >>> 0, true);
  view.setUint32(at + 4, d.hi >>> 0, true);
  view.setUint32(at + 8, d.len >>> 0, true);
  view.setUint16(at + 12, d.flags & 0xffff, true);
  view.setUint16(at + 14, d.next & 0xffff, true);
}

export function buildRing(input: RingInput): BuiltRing {
  const offsets = regionOffsets(input);
  const total = offsets.at(-1)! + input.regions.at(-1)!.size + GUARD;
  const backing = new ArrayBuffer(total);
  const bytes = new Uint8Array(backing);
  fill(bytes, input.fillSeed);
  const memory = new GuestMemory(input.regions.map((r, i) => ({ guestAddr: r.addr, size: r.size, buffer: backing, offset: offsets[i]! })));
  const layout = packedLayout(input.regions[0]!.addr + input.ringOffset, input.size);
  const view = new DataView(backing);
  const at = (guest: number) => offsets[0]! + (guest - input.regions[0]!.addr);
  input.desc.forEach((d, i) => writeRaw(view, at(layout.desc) + 16 * i, d));
  for (const t of input.tables) {
    const base = offsets[t.region]! + t.offset;
    t.entries.forEach((d, i) => {
      if (t.offset + 16 * i + 16 <= input.regions[t.region]!.size) writeRaw(view, base + 16 * i, d);
    });
  }
  const a = at(layout.avail);
  view.setUint16(a, input.availFlags, true);
  view.setUint16(a + 2, input.availIdx, true);
  input.availRing.forEach((h, i) => view.setUint16(a + 4 + 2 * i, h, true));
  view.setUint16(a + 4 + 2 * input.size, input.usedEvent, true);
  view.setUint16(at(layout.used) + 2, input.usedIdx, true);
  const views = ringViewsFromGuest(memory, layout);
  return { input, backing, bytes, memory, offsets, layout, views };
}

/** Guest address of a byte of `bytes` (a view's byteOffset), or null when it is in no region. */
export function guestAddrOf(b: BuiltRing, byteOffset: number): number | null {
  for (let i = 0; i < b.offsets.length; i++) {
    const o = b.offsets[i]!;
    if (byteOffset >= o && byteOffset < o + b.input.regions[i]!.size) return b.input.regions[i]!.addr + (byteOffset - o);
  }
  return null;
}

// ---------------------------------------------------------------- arbitraries

const REGION0_BASES = [0, 0x1000, 0x10_0000, 0x4000_0000, 0xffff_c000, 0x1f_ffff_ffe0_0000];

interface Layout {
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  regions: { addr: number; size: number }[];
  ringOffset: number;
}

const layoutArb: fc.Arbitrary<Layout> = fc
  .record({
    sizeLog: fc.integer({ min: 0, max: 8 }),
    eventIdx: fc.boolean(),
    indirect: fc.boolean(),
    base0: fc.constantFrom(...REGION0_BASES),
    extra0: fc.integer({ min: 0, max: 12 * 1024 }),
    ringSlot: fc.integer({ min: 0, max: 64 }),
    second: fc.constantFrom('none', 'adjacent', 'above4G', 'gap'),
    size1: fc.integer({ min: 1, max: 8 * 1024 }),
  })
  .map(({ sizeLog, eventIdx, indirect, base0, extra0, ringSlot, second, size1 }) => {
    const size = 1 << sizeLog;
    const ringBytes = packedLayout(0, size).bytes;
    const ringOffset = Math.min(ringSlot * 16, Math.floor(extra0 / 16) * 16);
    const size0 = ringOffset + ringBytes + extra0;
    const regions = [{ addr: base0, size: size0 }];
    const end0 = base0 + size0;
    if (second === 'adjacent') regions.push({ addr: end0, size: size1 });
    else if (second === 'gap') regions.push({ addr: end0 + 4096, size: size1 });
    else if (second === 'above4G') regions.push({ addr: end0 < TWO_32 ? TWO_32 + 0x1000 : end0 + 0x10_0000, size: size1 });
    return { size, eventIdx, indirect, regions, ringOffset };
  });

/** An address: mostly inside a region (often near an edge), sometimes in the ring, sometimes anywhere. */
function addrArb(l: Layout): fc.Arbitrary<{ lo: number; hi: number }> {
  const split = (a: number) => ({ lo: a % TWO_32, hi: Math.floor(a / TWO_32) });
  const region = fc.integer({ min: 0, max: l.regions.length - 1 });
  return fc.oneof(
    { weight: 5, arbitrary: fc.tuple(region, fc.nat()).map(([r, o]) => split(l.regions[r]!.addr + (o % l.regions[r]!.size))) },
    {
      weight: 2,
      arbitrary: fc.tuple(region, fc.integer({ min: -8, max: 8 })).map(([r, d]) => {
        const reg = l.regions[r]!;
        return split(Math.max(0, (d < 0 ? reg.addr + reg.size : reg.addr) + d));
      }),
    },
    { weight: 1, arbitrary: fc.nat(packedLayout(0, l.size).bytes).map((o) => split(l.regions[0]!.addr + l.ringOffset + o)) },
    { weight: 1, arbitrary: fc.record({ lo: fc.nat({ max: 0xffff_ffff }), hi: fc.oneof(fc.constant(0), fc.nat({ max: 0x20_0000 }), fc.nat({ max: 0xffff_ffff })) }) },
  );
}

const lenArb = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 1, max: 96 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, 12, 16, 48, 4096, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffff_ffff }) },
);

const flagsArb = fc.oneof(
  { weight: 6, arbitrary: fc.nat({ max: 7 }) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffff }) },
);

function nextArb(max: number): fc.Arbitrary<number> {
  return fc.oneof({ weight: 6, arbitrary: fc.nat({ max: Math.max(0, max - 1) }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) });
}

function randomDescArb(l: Layout, nextMax: number): fc.Arbitrary<RawDesc> {
  return fc.record({ a: addrArb(l), len: lenArb, flags: flagsArb, next: nextArb(nextMax) }).map(({ a, len, flags, next }) => ({ lo: a.lo, hi: a.hi, len, flags, next }));
}

/** A well-formed request: readable parts summing ≥ 48, writable ≥ 12 (each split 1–3 ways). */
const requestShapeArb = fc.record({
  readable: fc.array(fc.integer({ min: 1, max: 48 }), { minLength: 1, maxLength: 3 }),
  writable: fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 2 }),
  extraR: fc.nat(16),
  extraW: fc.nat(8),
  viaIndirect: fc.boolean(),
});

interface Shape {
  readable: number[];
  writable: number[];
  extraR: number;
  extraW: number;
  viaIndirect: boolean;
}

/** Scales part lengths so readable sums to ≥ 48 and writable to ≥ 12. */
function normalise(parts: number[], need: number, extra: number): number[] {
  const sum = parts.reduce((a, b) => a + b, 0);
  const out = parts.slice();
  if (sum < need) out[out.length - 1]! += need - sum;
  out[out.length - 1]! += extra;
  return out;
}

interface Mutation {
  where: 'desc' | 'table' | 'availRing';
  index: number;
  field: 'lo' | 'hi' | 'len' | 'flags' | 'next';
  value: number;
}

const mutationArb = fc.record({
  where: fc.constantFrom('desc' as const, 'table' as const, 'availRing' as const),
  index: fc.nat(),
  field: fc.constantFrom('lo' as const, 'hi' as const, 'len' as const, 'flags' as const, 'next' as const),
  value: fc.oneof(fc.nat({ max: 0xffff }), fc.nat({ max: 0xffff_ffff })),
});

/**
 * Lays chains into the table: well-formed requests get consecutive free descriptors (or an
 * indirect table when negotiated and chosen) and data buffers laid out one after the other in the
 * space after the ring; random chains fill the remaining descriptors.
 */
function compile(
  l: Layout,
  shapes: Shape[],
  randomDescs: RawDesc[],
  fillSeed: number,
  header: { availFlags: number; usedEvent: number; usedIdx: number; nextAvail: number; idxMode: number; idxRandom: number; ringRandom: number[] },
  mutations: Mutation[],
): RingInput {
  const size = l.size;
  const desc: RawDesc[] = randomDescs.slice(0, size);
  while (desc.length < size) desc.push({ lo: 0, hi: 0, len: 0, flags: 0, next: 0 });
  const tables: RingInput['tables'] = [];
  const heads: number[] = [];
  const r0 = l.regions[0]!;
  const ringEnd = l.ringOffset + packedLayout(0, size).bytes;
  let dataAt = Math.ceil(ringEnd / 16) * 16; // offset in region 0
  const take = (n: number): number | null => {
    const at = dataAt;
    if (at + n > r0.size) return null;
    dataAt = Math.ceil((at + n) / 16) * 16;
    return r0.addr + at;
  };
  const split = (a: number) => ({ lo: a % TWO_32, hi: Math.floor(a / TWO_32) });
  let nextFree = 0;
  for (const s of shapes) {
    const parts = [
      ...normalise(s.readable, 48, s.extraR).map((len) => ({ len, write: false })),
      ...normalise(s.writable, 12, s.extraW).map((len) => ({ len, write: true })),
    ];
    const addrs = parts.map((p) => take(p.len));
    if (addrs.some((a) => a === null)) break;
    const raws: RawDesc[] = parts.map((p, k) => ({
      ...split(addrs[k]!),
      len: p.len,
      flags: (p.write ? 2 : 0) | (k + 1 < parts.length ? 1 : 0),
      next: 0,
    }));
    if (s.viaIndirect && l.indirect) {
      if (nextFree >= size) break;
      const table = take(16 * raws.length);
      if (table === null) break;
      raws.forEach((d, k) => (d.next = k + 1 < raws.length ? k + 1 : 0));
      tables.push({ region: 0, offset: table - r0.addr, entries: raws });
      heads.push(nextFree);
      desc[nextFree++] = { ...split(table), len: 16 * raws.length, flags: 4, next: 0 };
    } else {
      if (nextFree + raws.length > size) break;
      heads.push(nextFree);
      raws.forEach((d, k) => {
        d.next = k + 1 < raws.length ? nextFree + 1 : 0;
        desc[nextFree++] = d;
      });
    }
  }
  const availRing = header.ringRandom.slice(0, size).map((h) => h & 0xffff);
  while (availRing.length < size) availRing.push(0);
  const nextAvail = header.nextAvail & 0xffff;
  heads.forEach((h, k) => (availRing[(nextAvail + k) % size] = h));
  // avail.idx: exactly the compiled chains, or fewer/more (within the size), or anything
  let availIdx: number;
  if (header.idxMode === 0) availIdx = (nextAvail + heads.length) & 0xffff;
  else if (header.idxMode === 1) availIdx = (nextAvail + (header.idxRandom % (size + 1))) & 0xffff;
  else availIdx = header.idxRandom & 0xffff;
  const input: RingInput = {
    ...l,
    fillSeed,
    desc,
    tables,
    availFlags: header.availFlags,
    availIdx,
    availRing,
    usedEvent: header.usedEvent,
    usedIdx: header.usedIdx,
    nextAvail,
  };
  for (const m of mutations) {
    if (m.where === 'availRing') input.availRing[m.index % size] = m.value & 0xffff;
    else {
      const list = m.where === 'desc' ? input.desc : input.tables.flatMap((t) => t.entries);
      if (list.length === 0) continue;
      const d = list[m.index % list.length]!;
      d[m.field] = m.field === 'flags' || m.field === 'next' ? m.value & 0xffff : m.value >>> 0;
    }
  }
  return input;
}

/**
 * Random ring states. `requestBias` (0..1) is how much of the content is well-formed requests
 * (the runtime target wants many; the pop target wants more garbage).
 */
export function ringInputArb(opts: { maxMutations?: number; wellFormed?: number } = {}): fc.Arbitrary<RingInput> {
  const maxMutations = opts.maxMutations ?? 3;
  const wellFormed = opts.wellFormed ?? 6;
  return layoutArb.chain((l) =>
    fc
      .record({
        shapes: fc.array(requestShapeArb, { maxLength: Math.min(l.size, wellFormed) }),
        randomDescs: fc.array(randomDescArb(l, l.size), { minLength: l.size, maxLength: l.size }),
        tableEntries: fc.array(randomDescArb(l, 8), { maxLength: 8 }),
        tableRegion: fc.nat(l.regions.length - 1),
        tableOffset: fc.nat(),
        fillSeed: fc.nat({ max: 0xffff_ffff }),
        header: fc.record({
          availFlags: fc.oneof(fc.constantFrom(0, 1), fc.nat({ max: 0xffff })),
          usedEvent: fc.nat({ max: 0xffff }),
          usedIdx: fc.oneof(fc.constant(0), fc.nat({ max: 0xffff })),
          nextAvail: fc.oneof(fc.constant(0), fc.constant(0xfffe), fc.nat({ max: 0xffff })),
          idxMode: fc.constantFrom(0, 0, 0, 1, 2),
          idxRandom: fc.nat({ max: 0xffff }),
          ringRandom: fc.array(fc.oneof(fc.nat(Math.max(0, l.size - 1)), fc.nat({ max: 0xffff })), { minLength: l.size, maxLength: l.size }),
        }),
        mutations: fc.array(mutationArb, { maxLength: maxMutations }),
      })
      .map(({ shapes, randomDescs, tableEntries, tableRegion, tableOffset, fillSeed, header, mutations }) => {
        const input = compile(l, shapes, randomDescs, fillSeed, header, mutations);
        // one random indirect table somewhere in memory, which random INDIRECT descriptors may hit
        if (tableEntries.length) {
          const reg = l.regions[tableRegion]!;
          input.tables.push({ region: tableRegion, offset: (tableOffset % reg.size) & ~15, entries: tableEntries });
        }
        return input;
      }),
  );
}
