/**
 * An independent reference of the device's chain walk, written from virtio 1.2 §2.7.5–§2.7.6
 * (not from device-queue.ts): it reads a snapshot of the backing bytes with its own address
 * arithmetic (BigInt, so no rounding), and says for each pop either "a chain of these
 * segments", "nothing available" or "this rule is broken".
 */
import type { BuiltRing } from './ring-input.js';

export interface RefSegment {
  addr: number;
  len: number;
  write: boolean;
}

export type RefPop = { kind: 'chain'; head: number; segs: RefSegment[] } | { kind: 'none' } | { kind: 'error'; code: string };

const NEXT = 1;
const WRITE = 2;
const INDIRECT = 4;

class Broken extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

export class RefDevice {
  private readonly view: DataView;
  nextAvail: number;

  constructor(
    private readonly b: BuiltRing,
    snapshot: Uint8Array,
  ) {
    this.view = new DataView(snapshot.buffer, snapshot.byteOffset, snapshot.byteLength);
    this.nextAvail = b.input.nextAvail;
  }

  /** Byte offset in the snapshot of [addr, addr+len) if it is inside one region; else null. */
  translate(addr: bigint, len: bigint): number | null {
    const { regions } = this.b.input;
    for (let i = 0; i < regions.length; i++) {
      const start = BigInt(regions[i]!.addr);
      const end = start + BigInt(regions[i]!.size);
      if (addr >= start && addr < end && addr + len <= end) return this.b.offsets[i]! + Number(addr - start);
    }
    return null;
  }

  private u16(guest: number): number {
    return this.view.getUint16(this.translate(BigInt(guest), 2n)!, true);
  }

  pop(): RefPop {
    const size = this.b.input.size;
    const availIdx = this.u16(this.b.layout.avail + 2);
    const pending = (availIdx - this.nextAvail + 0x10000) % 0x10000;
    if (pending > size) return { kind: 'error', code: 'AVAIL_IDX_JUMP' };
    if (pending === 0) return { kind: 'none' };
    const head = this.u16(this.b.layout.avail + 4 + 2 * (this.nextAvail % size));
    try {
      const segs = this.walk(head);
      this.nextAvail = (this.nextAvail + 1) % 0x10000;
      return { kind: 'chain', head, segs };
    } catch (e) {
      if (e instanceof Broken) return { kind: 'error', code: e.code };
      throw e;
    }
  }

  private readDesc(at: number): { addr: bigint; len: number; flags: number; next: number } {
    const v = this.view;
    return {
      addr: (BigInt(v.getUint32(at + 4, true)) << 32n) | BigInt(v.getUint32(at, true)),
      len: v.getUint32(at + 8, true),
      flags: v.getUint16(at + 12, true),
      next: v.getUint16(at + 14, true),
    };
  }

  private walk(head: number): RefSegment[] {
    const size = this.b.input.size;
    if (head >= size) throw new Broken('DESC_INDEX_OUT_OF_RANGE');
    const table = this.translate(BigInt(this.b.layout.desc), BigInt(16 * size))!;
    const segs: RefSegment[] = [];
    const st = { total: 0, sawWrite: false };
    let i = head;
    // §2.7.5.3.1: no chain longer than the queue size; so a walk of more than `size` is a loop.
    for (let count = 1; ; count++) {
      if (count > size) throw new Broken('DESC_LOOP');
      const d = this.readDesc(table + 16 * i);
      if (d.flags & INDIRECT) {
        if (!this.b.input.indirect) throw new Broken('INDIRECT_NOT_NEGOTIATED');
        if (d.flags & NEXT) throw new Broken('INDIRECT_WITH_NEXT');
        if (d.len === 0 || d.len % 16 !== 0 || d.len / 16 > 32768) throw new Broken('INDIRECT_BAD_LENGTH');
        const at = this.translate(d.addr, BigInt(d.len));
        if (at === null) throw new Broken('MEM_OUT_OF_RANGE');
        const n = d.len / 16;
        let j = 0;
        for (let walked = 1; ; walked++) {
          if (walked > n) throw new Broken('DESC_LOOP');
          const e = this.readDesc(at + 16 * j);
          if (e.flags & INDIRECT) throw new Broken('INDIRECT_NESTED');
          this.segment(segs, st, e);
          if (!(e.flags & NEXT)) return segs;
          j = e.next;
          if (j >= n) throw new Broken('DESC_INDEX_OUT_OF_RANGE');
        }
      }
      this.segment(segs, st, d);
      if (!(d.flags & NEXT)) return segs;
      i = d.next;
      if (i >= size) throw new Broken('DESC_INDEX_OUT_OF_RANGE');
    }
  }

  private segment(segs: RefSegment[], st: { total: number; sawWrite: boolean }, d: { addr: bigint; len: number; flags: number }): void {
    if (d.len === 0) throw new Broken('DESC_ZERO_LENGTH');
    if (this.translate(d.addr, BigInt(d.len)) === null) throw new Broken('MEM_OUT_OF_RANGE');
    const write = (d.flags & WRITE) !== 0;
    if (!write && st.sawWrite) throw new Broken('DESC_READABLE_AFTER_WRITABLE'); // §2.7.4.2
    st.sawWrite ||= write;
    st.total += d.len;
    if (st.total > 2 ** 32) throw new Broken('DESC_CHAIN_TOO_LONG'); // §2.7.5.2
    segs.push({ addr: Number(d.addr), len: d.len, write });
  }
}
