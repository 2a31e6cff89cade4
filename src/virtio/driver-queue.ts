/**
 * The driver side of a split virtqueue (virtio 1.2 §2.7.13, §2.7.14): makes buffers
 * available, decides whether to notify the device, and collects used buffers.
 *
 * The driver keeps its own bookkeeping (free descriptor list, tokens, chain lengths) in
 * private memory, never reading it back from the shared ring, so a misbehaving device can
 * only produce a used element that is detected as invalid (USED_ID_INVALID), not corrupt
 * the driver.
 */
import { AVAIL_F_NO_INTERRUPT, DescFlags, USED_F_NO_NOTIFY } from './constants.js';
import { fail } from './errors.js';
import type { GuestMemory } from './memory.js';
import { availEventIndex, usedEventIndex, type RingViews } from './ring-views.js';
import { needsEvent } from './split-ring.js';
import { TRACE } from '../trace/events.js';

// The trace events emitted here, bound once: an emit site is then one load of `enabled`.
const EV_ADD = TRACE.vring_add;
const EV_KICK = TRACE.virtqueue_kick;
const EV_KICK_SUPPRESSED = TRACE.virtqueue_kick_suppressed;
const EV_GET_BUF = TRACE.virtqueue_get_buf;

/** A guest-physical buffer: what a scatter-gather list entry names. */
export interface Buffer {
  addr: number;
  len: number;
}

export interface DriverQueueOptions {
  eventIdx: boolean;
  indirect: boolean;
  /**
   * Allocates guest memory for an indirect table of `bytes` (16-byte aligned), or returns null.
   * Without it, indirect descriptors are not used even when negotiated.
   */
  allocIndirect?: (bytes: number) => number | null;
  freeIndirect?: (addr: number) => void;
  /** The queue's index in its device: the `vq` of its trace events (default 0). */
  index?: number;
}

export interface UsedBuffer<T> {
  token: T;
  /** Bytes the device wrote into the writable part (§2.7.8). */
  len: number;
}

const TWO_32 = 0x1_0000_0000;

export class DriverQueue<T = unknown> {
  readonly size: number;
  /** The queue's index in its device (trace events). */
  readonly index: number;
  private readonly mask: number;
  private readonly desc: Uint32Array;
  private readonly avail: Uint16Array;
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;
  /** Private free list: next free descriptor after i. */
  private readonly freeNext: Uint16Array;
  private freeHead = 0;
  private free: number;
  /** Per head: the token, descriptors used, indirect table address (or -1). */
  private readonly tokens: (T | undefined)[];
  private readonly chainDescs: Uint16Array;
  private readonly indirectAddr: Float64Array;
  /** Per head: total bytes of the device-writable part (a used len may not exceed it, §2.7.8.1). */
  private readonly writableLen: Float64Array;
  /** Our shadow of avail.idx, and its value at the last kick decision. */
  private availIdx = 0;
  private kickedAvail = 0;
  /** Buffers added since the last needsKick() decision. */
  private addedSinceKick = 0;
  private lastUsed = 0;
  /** used.idx as last read. */
  private usedShadow = 0;
  private callbacksEnabled = true;
  /** Indirect tables' allocator when INDIRECT_DESC was negotiated and one was given (§2.7.5.3). */
  private readonly allocIndirect: ((bytes: number) => number | null) | undefined;
  /** The used length of the buffer getUsedToken() returned last (§2.7.8). */
  lastUsedLen = 0;
  private broken = false;

  constructor(
    private readonly memory: GuestMemory,
    rings: RingViews,
    private readonly options: DriverQueueOptions,
  ) {
    this.size = rings.size;
    this.index = options.index ?? 0;
    this.mask = rings.size - 1;
    this.desc = rings.desc;
    this.avail = rings.avail;
    this.used16 = rings.used16;
    this.used32 = rings.used32;
    this.freeNext = new Uint16Array(this.size);
    this.tokens = new Array(this.size).fill(undefined);
    this.chainDescs = new Uint16Array(this.size);
    this.indirectAddr = new Float64Array(this.size).fill(-1);
    this.writableLen = new Float64Array(this.size);
    this.free = this.size;
    this.allocIndirect = options.indirect ? options.allocIndirect : undefined;
    for (let i = 0; i < this.size; i++) this.freeNext[i] = (i + 1) & this.mask;
    // §2.7.10.1: the driver initializes used.flags to 0; we own and zero the avail ring too.
    this.desc.fill(0);
    this.avail.fill(0);
    this.used16.fill(0);
  }

  get isBroken(): boolean {
    return this.broken;
  }

  /** Free descriptors left in the table. */
  get numFree(): number {
    return this.free;
  }

  /** Buffers made available and not yet returned. */
  get inFlight(): number {
    let n = 0;
    for (const t of this.tokens) if (t !== undefined) n++;
    return n;
  }

  /**
   * Makes a buffer available: `out` device-readable, then `inn` device-writable (§2.7.4.2),
   * as a chain or, when negotiated and worthwhile, one indirect descriptor (§2.7.5.3).
   * Returns false when the ring has no room (the caller waits for used buffers).
   * With `publish` false, avail.idx is not moved until `publish()` (batched publishing).
   */
  add(out: readonly Buffer[], inn: readonly Buffer[], token: T, publish = true): boolean {
    if (this.broken) return false;
    if (token === undefined) throw new TypeError('token must not be undefined');
    const total = out.length + inn.length;
    if (total === 0) throw new RangeError('a buffer needs at least one element');
    let head: number;
    const alloc = this.allocIndirect;
    const canIndirect = total > 1 && alloc !== undefined;
    if (canIndirect && this.free >= 1) {
      const table = alloc(16 * total);
      if (table !== null) {
        head = this.takeDescriptors(1);
        this.writeIndirect(table, out, inn);
        this.setDesc(head, table, 16 * total, DescFlags.INDIRECT, 0);
        this.indirectAddr[head] = table;
        this.chainDescs[head] = 1;
        this.writableLen[head] = sumLen(inn);
        this.tokens[head] = token;
        // Traced before it is published: the device may take it at once.
        if (EV_ADD.enabled) this.traceAdd(head, out.length, inn.length, 1);
        this.placeInRing(head, publish);
        return true;
      }
    }
    // Checked before "no room": such a chain can never fit, so returning false would make a caller wait forever.
    if (total > this.size && !canIndirect) throw new RangeError(`chain of ${total} is longer than the queue size ${this.size}`);
    if (this.free < total) return false;
    head = this.freeHead;
    let i = head;
    let last = head;
    for (let k = 0; k < total; k++) {
      const b = k < out.length ? out[k]! : inn[k - out.length]!;
      const flags = (k < out.length ? 0 : DescFlags.WRITE) | (k + 1 < total ? DescFlags.NEXT : 0);
      const next = this.freeNext[i]!;
      this.setDesc(i, b.addr, b.len, flags, k + 1 < total ? next : 0);
      last = i;
      i = next;
    }
    this.freeHead = this.freeNext[last]!;
    this.free -= total;
    this.chainDescs[head] = total;
    this.indirectAddr[head] = -1;
    this.writableLen[head] = sumLen(inn);
    this.tokens[head] = token;
    if (EV_ADD.enabled) this.traceAdd(head, out.length, inn.length, 0);
    this.placeInRing(head, publish);
    return true;
  }

  /** Makes every buffer added so far visible to the device (§2.7.13.3: barrier, then idx). */
  publish(): void {
    Atomics.store(this.avail, 1, this.availIdx);
  }

  /**
   * Whether the device wants an available buffer notification for what was published since
   * the last call (§2.7.10, §2.7.13.4). Atomics.store of avail.idx was a full barrier.
   */
  needsKick(): boolean {
    const newIdx = this.availIdx;
    const oldIdx = this.kickedAvail;
    const added = this.addedSinceKick;
    this.kickedAvail = newIdx;
    this.addedSinceKick = 0;
    if (added === 0) return false;
    let kick: boolean;
    // 65536 or more added since the last decision: the 16-bit window says nothing, so kick.
    if (added >= 0x10000) kick = true;
    else if (this.options.eventIdx) kick = needsEvent(Atomics.load(this.used16, availEventIndex(this.size)), newIdx, oldIdx);
    else kick = (Atomics.load(this.used16, 0) & USED_F_NO_NOTIFY) === 0;
    if (kick ? EV_KICK.enabled : EV_KICK_SUPPRESSED.enabled) this.traceKick(kick, newIdx);
    return kick;
  }

  // Emit calls live in small methods of their own: the hot method's bytecode stays small enough
  // for V8 to inline it into its callers, so an event that is off costs its `enabled` test only.
  private traceGetBuf(id: number, len: number): void {
    EV_GET_BUF.emit(this.index, id, len, this.lastUsed);
  }

  private traceAdd(head: number, out: number, inn: number, indirect: number): void {
    EV_ADD.emit(this.index, head, out, inn, (this.availIdx + 1) & 0xffff, indirect);
  }

  private traceKick(kick: boolean, idx: number): void {
    if (kick) EV_KICK.emit(this.index, idx, this.availEventWord());
    else EV_KICK_SUPPRESSED.emit(this.index, idx, this.availEventWord(), Atomics.load(this.used16, 0));
  }

  /** The device's avail_event (65536 without EVENT_IDX): for trace events. */
  private availEventWord(): number {
    return this.options.eventIdx ? Atomics.load(this.used16, availEventIndex(this.size)) : 0x10000;
  }

  /** Used elements the device has published and we have not taken (reads used.idx). */
  pendingUsed(): number {
    return (Atomics.load(this.used16, 1) - this.lastUsed) & 0xffff;
  }

  /** True when the device has returned buffers we have not collected. */
  hasUsed(): boolean {
    // A broken queue has nothing more to give (Linux's virtqueue_poll): otherwise the usual
    // collect-then-enableCallbacks loop would spin on used entries getUsed() no longer takes.
    if (this.broken) return false;
    return Atomics.load(this.used16, 1) !== this.lastUsed;
  }

  /**
   * Takes the next used buffer (§2.7.14), or null. A used element naming a descriptor that is
   * not the head of a buffer in flight is a device error: the queue is marked broken and a
   * VirtioError USED_ID_INVALID is thrown.
   */
  getUsed(): UsedBuffer<T> | null {
    const token = this.getUsedToken();
    return token === undefined ? null : { token, len: this.lastUsedLen };
  }

  /**
   * getUsed() without a result object, for collecting many buffers in a loop: returns the
   * token, or undefined when there is none; the buffer's used length is then in `lastUsedLen`.
   * Same checks, same errors.
   */
  getUsedToken(): T | undefined {
    if (this.broken) return undefined;
    // Re-read used.idx (a line the device keeps writing) only when the elements seen at the
    // last read are all taken; that read's acquire covers them.
    let usedIdx = this.usedShadow;
    if (usedIdx === this.lastUsed) {
      usedIdx = this.usedShadow = Atomics.load(this.used16, 1);
      if (usedIdx === this.lastUsed) return undefined;
    }
    if (((usedIdx - this.lastUsed) & 0xffff) > this.size) this.badUsed(0, usedIdx, 0);
    const slot = 1 + 2 * (this.lastUsed & this.mask);
    const id = this.used32[slot]!;
    const len = this.used32[slot + 1]!;
    const token = id < this.size ? this.tokens[id] : undefined;
    if (token === undefined) this.badUsed(1, id, len);
    if (len > this.writableLen[id]!) this.badUsed(2, id, len);
    this.release(id);
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    if (EV_GET_BUF.enabled) this.traceGetBuf(id, len);
    // §2.7.7: keep used_event at the next entry we expect while callbacks are on.
    if (this.options.eventIdx && this.callbacksEnabled) {
      Atomics.store(this.avail, usedEventIndex(this.size), this.lastUsed);
    }
    this.lastUsedLen = len;
    return token;
  }

  /**
   * A used element the device should not have written: the queue is broken and the rule is
   * thrown (out of getUsedToken, whose small body V8 then inlines into its callers' loops).
   */
  private badUsed(kind: 0 | 1 | 2, a: number, len: number): never {
    this.broken = true;
    if (kind === 0) fail('USED_ID_INVALID', `used.idx ${a} ran ${(a - this.lastUsed) & 0xffff} ahead`, '§2.7.8');
    if (kind === 1) fail('USED_ID_INVALID', `device returned id ${a}, which is not a buffer in flight`, '§2.7.8');
    fail('USED_LEN_INVALID', `device returned len ${len} for id ${a}, which has ${this.writableLen[a]} device-writable bytes`, '§2.7.8.1');
  }

  /** Asks the device not to send used buffer notifications (§2.7.7); advisory only. */
  disableCallbacks(): void {
    this.callbacksEnabled = false;
    if (this.options.eventIdx) {
      // flags must stay 0 with event idx; an event one behind lastUsed is 65535 entries away.
      Atomics.store(this.avail, usedEventIndex(this.size), (this.lastUsed - 1) & 0xffff);
    } else {
      Atomics.store(this.avail, 0, AVAIL_F_NO_INTERRUPT);
    }
  }

  /**
   * Asks for used buffer notifications again. Returns false when used buffers arrived in the
   * meantime (the caller must process them and try again), true when it is safe to wait for
   * the next notification. This is §2.7.14's re-check that avoids a lost completion.
   */
  enableCallbacks(): boolean {
    this.callbacksEnabled = true;
    if (this.options.eventIdx) Atomics.store(this.avail, usedEventIndex(this.size), this.lastUsed);
    else Atomics.store(this.avail, 0, 0);
    return !this.hasUsed();
  }

  /**
   * Takes back every buffer still in flight (after a device reset, when the device will not
   * return them) and returns their tokens.
   */
  detachUnused(): T[] {
    const out: T[] = [];
    for (let head = 0; head < this.size; head++) {
      const t = this.tokens[head];
      if (t !== undefined) {
        this.release(head);
        out.push(t);
      }
    }
    return out;
  }

  private takeDescriptors(n: number): number {
    const head = this.freeHead;
    let last = head;
    for (let k = 1; k < n; k++) last = this.freeNext[last]!;
    this.freeHead = this.freeNext[last]!;
    this.free -= n;
    return head;
  }

  private release(head: number): void {
    const n = this.chainDescs[head]!;
    // Re-link the chain's descriptors from our private record, not from shared memory.
    let i = head;
    for (let k = 1; k < n; k++) i = this.nextOf(i);
    this.freeNext[i] = this.freeHead;
    this.freeHead = head;
    this.free += n;
    const table = this.indirectAddr[head]!;
    if (table >= 0) {
      this.indirectAddr[head] = -1;
      this.options.freeIndirect?.(table);
    }
    this.tokens[head] = undefined;
  }

  /** The successor of i inside a chain we built: kept privately in freeNext while in flight. */
  private nextOf(i: number): number {
    return this.freeNext[i]!;
  }

  private setDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    const w = 4 * i;
    const lo = addr >>> 0; // ToUint32 is exact for integers below 2^53: no floating-point modulo
    this.desc[w] = lo;
    this.desc[w + 1] = (addr - lo) / TWO_32;
    this.desc[w + 2] = len;
    this.desc[w + 3] = flags | (next << 16);
  }

  private writeIndirect(table: number, out: readonly Buffer[], inn: readonly Buffer[]): void {
    const total = out.length + inn.length;
    const bytes = this.memory.slice(table, 16 * total);
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    for (let k = 0; k < total; k++) {
      const b = k < out.length ? out[k]! : inn[k - out.length]!;
      const o = 16 * k;
      v.setUint32(o, b.addr % TWO_32, true);
      v.setUint32(o + 4, Math.floor(b.addr / TWO_32), true);
      v.setUint32(o + 8, b.len, true);
      v.setUint16(o + 12, (k < out.length ? 0 : DescFlags.WRITE) | (k + 1 < total ? DescFlags.NEXT : 0), true);
      v.setUint16(o + 14, k + 1 < total ? k + 1 : 0, true);
    }
  }

  private placeInRing(head: number, publish: boolean): void {
    this.avail[2 + (this.availIdx & this.mask)] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.addedSinceKick++;
    if (publish) this.publish();
  }
}

function sumLen(list: readonly Buffer[]): number {
  let n = 0;
  for (let i = 0; i < list.length; i++) n += list[i]!.len;
  return n;
}
