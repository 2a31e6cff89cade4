/**
 * Random packed-ring states for the packed fuzz targets, and an independent reference of the
 * device's walk written from virtio 1.2 §2.8 (not from packed-device-queue.ts): it reads a
 * snapshot of the backing bytes with its own address arithmetic (BigInt, so no rounding) and
 * says for each pop either "a list of these segments with this buffer id", "nothing available"
 * or "this rule is broken".
 *
 * An input (`PackedRingInput`) is plain JSON so counterexamples can be stored under test/corpus/:
 * guest memory (1–2 regions in one backing buffer with guard bytes), a descriptor ring that holds
 * well-formed lists from the device's start position (correct wrap marking, unique ids) among
 * random descriptors, indirect tables, the device's start state, and random mutations on top.
 */
import fc from 'fast-check';
import { GuestMemory } from '../../src/virtio/memory.js';
import { packedRingLayout, packedRingViewsFromGuest, type PackedRingAddresses, type PackedRingViews } from '../../src/virtio/packed-ring.js';

export interface RawPackedDesc {
  lo: number;
  hi: number;
  len: number;
  id: number;
  flags: number;
}

export interface PackedRingInput {
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  maxIndirectEntries: number;
  regions: { addr: number; size: number }[];
  ringOffset: number;
  fillSeed: number;
  desc: RawPackedDesc[];
  tables: { region: number; offset: number; entries: RawPackedDesc[] }[];
  /** The device's start: `pos | wrap << 15` each (vhost-user SET_VRING_BASE form). */
  nextAvail: number;
  nextUsed: number;
}

export const GUARD = 64;
const TWO_32 = 0x1_0000_0000;
const NEXT = 1;
const WRITE = 2;
const INDIRECT = 4;
const F_AVAIL = 1 << 7;
const F_USED = 1 << 15;

export interface BuiltPackedRing {
  input: PackedRingInput;
  backing: ArrayBuffer;
  bytes: Uint8Array;
  memory: GuestMemory;
  offsets: number[];
  layout: PackedRingAddresses & { bytes: number };
  views: PackedRingViews;
}

function fill(bytes: Uint8Array, seed: number): void {
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i + 4 <= bytes.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
    bytes[i + 1] = (x >>> 8) & 0xff;
    bytes[i + 2] = (x >>> 16) & 0xff;
    bytes[i + 3] = x >>> 24;
  }
}

function writeRaw(view: DataView, at: number, d: RawPackedDesc): void {
  view.setUint32(at, d.lo >>> 0, true);
  view.setUint32(at + 4, d.hi >>> 0, true);
  view.setUint32(at + 8, d.len >>> 0, true);
  view.setUint16(at + 12, d.id & 0xffff, true);
  view.setUint16(at + 14, d.flags & 0xffff, true);
}

export function buildPackedRing(input: PackedRingInput): BuiltPackedRing {
  const offsets: number[] = [];
  let at = GUARD;
  for (const r of input.regions) {
    offsets.push(at);
    at += r.size + GUARD;
  }
  const backing = new ArrayBuffer(at);
  const bytes = new Uint8Array(backing);
  fill(bytes, input.fillSeed);
  const memory = new GuestMemory(input.regions.map((r, i) => ({ guestAddr: r.addr, size: r.size, buffer: backing, offset: offsets[i]! })));
  const layout = packedRingLayout(input.regions[0]!.addr + input.ringOffset, input.size);
  const view = new DataView(backing);
  const ringAt = offsets[0]! + input.ringOffset;
  for (const t of input.tables) {
    t.entries.forEach((d, i) => {
      if (t.offset + 16 * i + 16 <= input.regions[t.region]!.size) writeRaw(view, offsets[t.region]! + t.offset + 16 * i, d);
    });
  }
  input.desc.forEach((d, i) => writeRaw(view, ringAt + 16 * i, d)); // the ring wins over a table overlapping it
  return { input, backing, bytes, memory, offsets, layout, views: packedRingViewsFromGuest(memory, layout) };
}

// ------------------------------------------------------------------------------------------
// the reference

export interface RefSegment {
  addr: number;
  len: number;
  write: boolean;
}

export type RefPackedPop = { kind: 'chain'; id: number; segs: RefSegment[] } | { kind: 'none' } | { kind: 'error'; code: string };

class Broken extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/** The device's walk over a snapshot, per §2.8.1, §2.8.6, §2.8.7, §2.8.15–§2.8.19, §2.8.21.1. */
export class RefPackedDevice {
  private readonly view: DataView;
  pos: number;
  wrap: number;
  /** Ring descriptors taken and not yet used (the start state counts the gap avail - used). */
  inFlight: number;
  readonly ids = new Set<number>();

  constructor(
    private readonly b: BuiltPackedRing,
    snapshot: Uint8Array,
  ) {
    this.view = new DataView(snapshot.buffer, snapshot.byteOffset, snapshot.byteLength);
    const size = b.input.size;
    this.pos = b.input.nextAvail & 0x7fff;
    this.wrap = b.input.nextAvail >>> 15;
    // count the descriptors from the used position to the available one, one by one
    let p = b.input.nextUsed & 0x7fff;
    let w = b.input.nextUsed >>> 15;
    let n = 0;
    while ((p !== this.pos || w !== this.wrap) && n <= size) {
      n++;
      if (++p === size) {
        p = 0;
        w ^= 1;
      }
    }
    this.inFlight = n;
  }

  get encoded(): number {
    return this.pos | (this.wrap << 15);
  }

  translate(addr: bigint, len: bigint): number | null {
    const { regions } = this.b.input;
    for (let i = 0; i < regions.length; i++) {
      const start = BigInt(regions[i]!.addr);
      const end = start + BigInt(regions[i]!.size);
      if (addr >= start && addr < end && addr + len <= end) return this.b.offsets[i]! + Number(addr - start);
    }
    return null;
  }

  private read(at: number): { addr: bigint; len: number; id: number; flags: number } {
    const v = this.view;
    return {
      addr: (BigInt(v.getUint32(at + 4, true)) << 32n) | BigInt(v.getUint32(at, true)),
      len: v.getUint32(at + 8, true),
      id: v.getUint16(at + 12, true),
      flags: v.getUint16(at + 14, true),
    };
  }

  pop(): RefPackedPop {
    const { size } = this.b.input;
    const ring = this.translate(BigInt(this.b.layout.desc), BigInt(16 * size))!;
    const bit = (f: number, m: number) => ((f & m) !== 0 ? 1 : 0);
    const head = this.read(ring + 16 * this.pos);
    if (bit(head.flags, F_AVAIL) !== this.wrap) return { kind: 'none' };
    try {
      if (bit(head.flags, F_USED) === this.wrap) throw new Broken('PACKED_FLAGS_INVALID');
      const segs: RefSegment[] = [];
      const st = { total: 0, sawWrite: false };
      let p = this.pos;
      let w = this.wrap;
      let id = -1;
      for (let n = 1; ; n++) {
        if (n > size) throw new Broken('DESC_CHAIN_TOO_LONG');
        if (this.inFlight + n > size) throw new Broken('PACKED_RING_OVERRUN');
        const d = this.read(ring + 16 * p);
        if (n > 1 && !(bit(d.flags, F_AVAIL) === w && bit(d.flags, F_USED) !== w)) throw new Broken('PACKED_DESC_NOT_AVAIL');
        if (++p === size) {
          p = 0;
          w ^= 1;
        }
        if (d.flags & INDIRECT) {
          if (n > 1) throw new Broken('INDIRECT_IN_CHAIN');
          if (!this.b.input.indirect) throw new Broken('INDIRECT_NOT_NEGOTIATED');
          if (d.flags & NEXT) throw new Broken('INDIRECT_WITH_NEXT');
          if (d.len === 0 || d.len % 16 !== 0 || d.len / 16 > this.b.input.maxIndirectEntries) throw new Broken('INDIRECT_BAD_LENGTH');
          const at = this.translate(d.addr, BigInt(d.len));
          if (at === null) throw new Broken('MEM_OUT_OF_RANGE');
          for (let k = 0; k < d.len / 16; k++) {
            const e = this.read(at + 16 * k);
            if (e.flags & INDIRECT) throw new Broken('INDIRECT_NESTED');
            if (e.flags & NEXT) throw new Broken('INDIRECT_ENTRY_NEXT');
            this.segment(segs, st, e);
          }
          id = d.id;
          this.finish(id, n, p, w);
          return { kind: 'chain', id, segs };
        }
        this.segment(segs, st, d);
        if (!(d.flags & NEXT)) {
          id = d.id;
          this.finish(id, n, p, w);
          return { kind: 'chain', id, segs };
        }
      }
    } catch (e) {
      if (e instanceof Broken) return { kind: 'error', code: e.code };
      throw e;
    }
  }

  private finish(id: number, n: number, p: number, w: number): void {
    if (id >= this.b.input.size) throw new Broken('PACKED_ID_INVALID');
    if (this.ids.has(id)) throw new Broken('PACKED_ID_IN_USE');
    this.ids.add(id);
    this.inFlight += n;
    this.pos = p;
    this.wrap = w;
  }

  private segment(segs: RefSegment[], st: { total: number; sawWrite: boolean }, d: { addr: bigint; len: number; flags: number }): void {
    if (d.len === 0) throw new Broken('DESC_ZERO_LENGTH');
    if (this.translate(d.addr, BigInt(d.len)) === null) throw new Broken('MEM_OUT_OF_RANGE');
    const write = (d.flags & WRITE) !== 0;
    if (!write && st.sawWrite) throw new Broken('DESC_READABLE_AFTER_WRITABLE');
    st.sawWrite ||= write;
    st.total += d.len;
    if (st.total > 2 ** 32) throw new Broken('DESC_CHAIN_TOO_LONG');
    segs.push({ addr: Number(d.addr), len: d.len, write });
  }
}

// ------------------------------------------------------------------------------------------
// arbitraries

const REGION0_BASES = [0x1000, 0x10_0000, 0xffff_c000, 0x1f_ffff_ffe0_0000];

interface Layout {
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  maxIndirectEntries: number;
  regions: { addr: number; size: number }[];
  ringOffset: number;
}

const layoutArb: fc.Arbitrary<Layout> = fc
  .record({
    size: fc.oneof({ weight: 5, arbitrary: fc.integer({ min: 1, max: 9 }) }, { weight: 1, arbitrary: fc.constantFrom(16, 31, 64, 256) }),
    eventIdx: fc.boolean(),
    indirect: fc.boolean(),
    maxIndirectExtra: fc.oneof(fc.constant(0), fc.nat(4)),
    base0: fc.constantFrom(...REGION0_BASES),
    extra0: fc.integer({ min: 256, max: 8 * 1024 }),
    ringSlot: fc.nat(16),
    second: fc.constantFrom('none', 'adjacent', 'above4G', 'gap'),
    size1: fc.integer({ min: 1, max: 4 * 1024 }),
  })
  .map(({ size, eventIdx, indirect, maxIndirectExtra, base0, extra0, ringSlot, second, size1 }) => {
    const ringOffset = 16 * ringSlot;
    const size0 = ringOffset + packedRingLayout(0, size).bytes + extra0;
    const regions = [{ addr: base0, size: size0 }];
    const end0 = base0 + size0;
    if (second === 'adjacent') regions.push({ addr: end0, size: size1 });
    else if (second === 'gap') regions.push({ addr: end0 + 4096, size: size1 });
    else if (second === 'above4G') regions.push({ addr: end0 < TWO_32 ? TWO_32 + 0x1000 : end0 + 0x10_0000, size: size1 });
    return { size, eventIdx, indirect, maxIndirectEntries: size + maxIndirectExtra, regions, ringOffset };
  });

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
    { weight: 1, arbitrary: fc.record({ lo: fc.nat({ max: 0xffff_ffff }), hi: fc.oneof(fc.constant(0), fc.nat({ max: 0x20_0000 }), fc.nat({ max: 0xffff_ffff })) }) },
  );
}

const lenArb = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 1, max: 96 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, 16, 32, 48, 4096, 0x8000_0000, 0xffff_fff0, 0xffff_ffff) },
);

/** Random flags: the low three bits, a marking (available/used of either lap, or none), sometimes anything. */
const flagsArb = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.nat(7), fc.constantFrom(0, F_AVAIL, F_USED, F_AVAIL | F_USED)).map(([low, mark]) => low | mark) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffff }) },
);

function idArb(size: number): fc.Arbitrary<number> {
  return fc.oneof({ weight: 6, arbitrary: fc.nat(size - 1) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) });
}

function randomDescArb(l: Layout): fc.Arbitrary<RawPackedDesc> {
  return fc.record({ a: addrArb(l), len: lenArb, id: idArb(l.size), flags: flagsArb }).map(({ a, len, id, flags }) => ({ lo: a.lo, hi: a.hi, len, id, flags }));
}

const shapeArb = fc.record({
  readable: fc.array(fc.integer({ min: 1, max: 48 }), { maxLength: 3 }),
  writable: fc.array(fc.integer({ min: 1, max: 24 }), { maxLength: 3 }),
  viaIndirect: fc.boolean(),
});

const mutationArb = fc.record({
  where: fc.constantFrom('desc' as const, 'desc' as const, 'table' as const),
  index: fc.nat(),
  field: fc.constantFrom('lo' as const, 'hi' as const, 'len' as const, 'id' as const, 'flags' as const, 'flags' as const),
  value: fc.oneof(fc.nat(15).map((b) => -(1 << b)), fc.nat({ max: 0xffff }), fc.nat({ max: 0xffff_ffff })),
});

/** Random packed-ring states: well-formed lists from the start position among random descriptors. */
export function packedRingInputArb(opts: { maxMutations?: number } = {}): fc.Arbitrary<PackedRingInput> {
  return layoutArb.chain((l) =>
    fc
      .record({
        shapes: fc.array(shapeArb, { maxLength: Math.min(l.size, 8) }),
        randomDescs: fc.array(randomDescArb(l), { minLength: l.size, maxLength: l.size }),
        tableEntries: fc.array(randomDescArb(l), { maxLength: 6 }),
        tableRegion: fc.nat(l.regions.length - 1),
        tableOffset: fc.nat(),
        fillSeed: fc.nat({ max: 0xffff_ffff }),
        startPos: fc.nat(l.size - 1),
        startWrap: fc.constantFrom(0, 1),
        inFlight: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat(l.size) }),
        idPerm: fc.array(fc.nat(), { minLength: l.size, maxLength: l.size }),
        mutations: fc.array(mutationArb, { maxLength: opts.maxMutations ?? 3 }),
      })
      .map((g) => {
        const size = l.size;
        const desc = g.randomDescs.slice();
        const tables: PackedRingInput['tables'] = [];
        const r0 = l.regions[0]!;
        let dataAt = Math.ceil((l.ringOffset + packedRingLayout(0, size).bytes) / 16) * 16;
        const take = (n: number): number | null => {
          if (dataAt + n > r0.size) return null;
          const a = r0.addr + dataAt;
          dataAt = Math.ceil((dataAt + n) / 16) * 16;
          return a;
        };
        const split = (a: number) => ({ lo: a % TWO_32, hi: Math.floor(a / TWO_32) });
        // ids: a permutation of 0..size-1 from idPerm
        const ids = Array.from({ length: size }, (_, i) => i);
        for (let i = size - 1; i > 0; i--) {
          const j = g.idPerm[i]! % (i + 1);
          [ids[i], ids[j]] = [ids[j]!, ids[i]!];
        }
        let p = g.startPos;
        let w = g.startWrap;
        let room = size - g.inFlight;
        let nextId = 0;
        for (const s of g.shapes) {
          const parts = [...s.readable.map((len) => ({ len, write: false })), ...s.writable.map((len) => ({ len, write: true }))];
          if (parts.length === 0) continue;
          const addrs = parts.map((x) => take(x.len));
          if (addrs.some((a) => a === null)) break;
          const id = ids[nextId++ % size]!;
          const mark = w ? F_AVAIL : F_USED;
          if (s.viaIndirect && l.indirect && parts.length <= l.maxIndirectEntries) {
            if (room < 1) break;
            const table = take(16 * parts.length);
            if (table === null) break;
            tables.push({ region: 0, offset: table - r0.addr, entries: parts.map((x, k) => ({ ...split(addrs[k]!), len: x.len, id: 0, flags: x.write ? WRITE : 0 })) });
            desc[p] = { ...split(table), len: 16 * parts.length, id, flags: INDIRECT | mark };
            room -= 1;
            if (++p === size) {
              p = 0;
              w ^= 1;
            }
          } else {
            if (parts.length > room) break;
            parts.forEach((x, k) => {
              const m = w ? F_AVAIL : F_USED;
              desc[p] = { ...split(addrs[k]!), len: x.len, id, flags: (x.write ? WRITE : 0) | (k + 1 < parts.length ? NEXT : 0) | m };
              if (++p === size) {
                p = 0;
                w ^= 1;
              }
            });
            room -= parts.length;
          }
        }
        const startLin = g.startPos + (g.startWrap ? 0 : size);
        const usedLin = (startLin - g.inFlight + 2 * size) % (2 * size);
        const input: PackedRingInput = {
          ...l,
          fillSeed: g.fillSeed,
          desc,
          tables,
          nextAvail: g.startPos | (g.startWrap << 15),
          nextUsed: (usedLin % size) | ((usedLin < size ? 1 : 0) << 15),
        };
        if (g.tableEntries.length) {
          const reg = l.regions[g.tableRegion]!;
          input.tables.push({ region: g.tableRegion, offset: (g.tableOffset % reg.size) & ~15, entries: g.tableEntries });
        }
        for (const m of g.mutations) {
          const list = m.where === 'desc' ? input.desc : input.tables.flatMap((t) => t.entries);
          if (list.length === 0) continue;
          const d = list[m.index % list.length]!;
          if (m.value < 0) d[m.field] = (d[m.field] ^ -m.value) >>> 0; // flip one bit
          else d[m.field] = m.field === 'flags' || m.field === 'id' ? m.value & 0xffff : m.value >>> 0;
          if (m.field === 'flags' || m.field === 'id') d[m.field] &= 0xffff;
        }
        return input;
      }),
  );
}
