/**
 * The driver side of a packed virtqueue (virtio 1.2 §2.8.21, §2.8.22): makes buffers available,
 * decides whether to notify the device, and collects used buffers. The packed twin of
 * driver-queue.ts, with the same API (add/publish/needsKick/hasUsed/getUsed/getUsedToken/
 * disableCallbacks/enableCallbacks/detachUnused/numFree/inFlight/isBroken/lastUsedLen).
 *
 * Bookkeeping (free buffer ids, tokens, how many ring descriptors each buffer occupies, writable
 * lengths) is private; nothing is read back from the shared ring but the used descriptor's id,
 * len and flags, and those are checked: an id that is not a buffer in flight is USED_ID_INVALID,
 * a length above the buffer's device-writable bytes USED_LEN_INVALID; either marks the queue
 * broken. Memory ordering: see packed-ring.ts.
 */
import { DescFlags, RingEventFlags } from './constants.js';
import { fail } from './errors.js';
import type { GuestMemory } from './memory.js';
import {
  W3_AVAIL_SHIFT,
  W3_USED_SHIFT,
  availBits,
  encodeRingIndex,
  eventWants,
  eventWord,
  linearIndex,
  type PackedRingViews,
} from './packed-ring.js';
import type { Buffer, UsedBuffer } from './driver-queue.js';

export type { Buffer, UsedBuffer } from './driver-queue.js';

export interface PackedDriverQueueOptions {
  /** VIRTIO_F_RING_EVENT_IDX negotiated: RING_EVENT_FLAGS_DESC may be used (§2.8.10). */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated (§2.8.7). */
  indirect: boolean;
  /**
   * Allocates guest memory for an indirect table of `bytes` (16-byte aligned), or returns null.
   * Without it, indirect descriptors are not used even when negotiated.
   */
  allocIndirect?: (bytes: number) => number | null;
  freeIndirect?: (addr: number) => void;
  /**
   * Most entries of an indirect table: default the queue size (§2.8.5: "If not limited, the
   * maximum number of descriptors in a list is the virt queue size"); raise it only when the
   * device allows longer lists. Longer buffers go as direct lists (≤ size) or are refused.
   */
  maxIndirectEntries?: number;
  /** The queue's index in its device (default 0). */
  index?: number;
}

const TWO_32 = 0x1_0000_0000;
const { NEXT, WRITE, INDIRECT } = DescFlags;

export class PackedDriverQueue<T = unknown> {
  readonly size: number;
  /** The queue's index in its device. */
  readonly index: number;
  private readonly desc: Uint32Array;
  private readonly driverEvent: Uint32Array;
  private readonly deviceEvent: Uint32Array;
  /** Next descriptor to make available, and the Driver Ring Wrap Counter (§2.8.1). */
  private availPos = 0;
  private availWrap = 1;
  /** Where the next used descriptor is expected, and its wrap counter (§2.8.22). */
  private usedPos = 0;
  private usedWrap = 1;
  /** Free ring descriptors. */
  private free: number;
  /** Free buffer ids (a stack); ids are 0..size-1 (at most `size` buffers are in flight). */
  private readonly freeIds: Uint16Array;
  private freeIdCount: number;
  /** Per buffer id: token, ring descriptors occupied, indirect table (or -1), device-writable bytes. */
  private readonly tokens: (T | undefined)[];
  private readonly slots: Uint16Array;
  private readonly indirectAddr: Float64Array;
  private readonly writableLen: Float64Array;
  private inFlightCount = 0;
  /** Word index and value of the first unpublished list's head id|flags, or -1 (§2.8.21.1). */
  private pendingAt = -1;
  private pendingWord = 0;
  /** Avail linear index at the last kick decision; buffers and descriptors added since. */
  private kickedLin = 0;
  private addedSinceKick = 0;
  private slotsSinceKick = 0;
  private callbacksEnabled = true;
  private readonly allocIndirect: ((bytes: number) => number | null) | undefined;
  private readonly maxIndirect: number;
  /** The used length of the buffer getUsedToken() returned last. */
  lastUsedLen = 0;
  private broken = false;

  constructor(
    private readonly memory: GuestMemory,
    rings: PackedRingViews,
    private readonly options: PackedDriverQueueOptions,
  ) {
    this.size = rings.size;
    this.index = options.index ?? 0;
    this.desc = rings.desc;
    this.driverEvent = rings.driverEvent;
    this.deviceEvent = rings.deviceEvent;
    this.free = this.size;
    this.freeIds = new Uint16Array(this.size);
    this.freeIdCount = this.size;
    for (let i = 0; i < this.size; i++) this.freeIds[i] = this.size - 1 - i; // id 0 first
    this.tokens = new Array(this.size).fill(undefined);
    this.slots = new Uint16Array(this.size);
    this.indirectAddr = new Float64Array(this.size).fill(-1);
    this.writableLen = new Float64Array(this.size);
    this.allocIndirect = options.indirect ? options.allocIndirect : undefined;
    this.maxIndirect = options.maxIndirectEntries ?? this.size;
    this.resetRing();
  }

  get isBroken(): boolean {
    return this.broken;
  }

  /** Free ring descriptors. */
  get numFree(): number {
    return this.free;
  }

  /** Buffers made available and not yet returned. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  /** Our next available position as `pos | wrap << 15` (what the device's nextAvail reaches when it has caught up). */
  get nextAvail(): number {
    return encodeRingIndex(this.availPos, this.availWrap);
  }

  /** Where we expect the next used descriptor, as `pos | wrap << 15`. */
  get nextUsed(): number {
    return encodeRingIndex(this.usedPos, this.usedWrap);
  }

  /**
   * Makes a buffer available: `out` device-readable, then `inn` device-writable (§2.8.17), as a
   * list of descriptors or, when negotiated and worthwhile, one indirect descriptor (§2.8.7).
   * Returns false when the ring has no room. With `publish` false, the list is not exposed until
   * `publish()` (batched publishing).
   */
  add(out: readonly Buffer[], inn: readonly Buffer[], token: T, publish = true): boolean {
    if (this.broken) return false;
    if (token === undefined) throw new TypeError('token must not be undefined');
    const total = out.length + inn.length;
    if (total === 0) throw new RangeError('a buffer needs at least one element');
    const alloc = this.allocIndirect;
    const canIndirect = total > 1 && total <= this.maxIndirect && alloc !== undefined;
    if (canIndirect && this.free >= 1) {
      const table = alloc(16 * total);
      if (table !== null) {
        const id = this.takeId();
        this.writeIndirect(table, out, inn);
        const wrap = this.availWrap;
        const at = this.writeDesc(table, 16 * total);
        this.indirectAddr[id] = table;
        this.track(id, 1, token, inn);
        this.expose(at, (id | ((INDIRECT | availBits(wrap)) << 16)) >>> 0, 1, publish);
        return true;
      }
    }
    // Checked before "no room": such a list can never fit, so returning false would make a caller wait forever.
    if (total > this.size && !canIndirect) throw new RangeError(`list of ${total} is longer than the queue size ${this.size}`);
    if (this.free < total) return false;
    const id = this.takeId();
    let headAt = -1;
    let headWord = 0;
    for (let k = 0; k < total; k++) {
      const b = k < out.length ? out[k]! : inn[k - out.length]!;
      const flags = (k < out.length ? 0 : WRITE) | (k + 1 < total ? NEXT : 0);
      const wrap = this.availWrap;
      const at = this.writeDesc(b.addr, b.len);
      const word = (id | ((flags | availBits(wrap)) << 16)) >>> 0;
      // §2.8.21.1: the first descriptor's flags are written last, after the rest of the list.
      if (k === 0) {
        headAt = at;
        headWord = word;
      } else {
        this.desc[at] = word;
      }
    }
    this.indirectAddr[id] = -1;
    this.track(id, total, token, inn);
    this.expose(headAt, headWord, total, publish);
    return true;
  }

  /** Makes every list added so far visible: the first unpublished head's flags, Atomics.store (release). */
  publish(): void {
    if (this.pendingAt >= 0) {
      Atomics.store(this.desc, this.pendingAt, this.pendingWord);
      this.pendingAt = -1;
    }
  }

  /**
   * Whether the device wants an available buffer notification for what was added since the
   * last call (§2.8.10, §2.8.21.2, from the Device Event Suppression structure). Call after
   * publish(); the flags store and this load are SC, so not reordered (§2.8.21.3.1).
   */
  needsKick(): boolean {
    const newLin = linearIndex(this.availPos, this.availWrap, this.size);
    const oldLin = this.kickedLin;
    const added = this.addedSinceKick;
    const count = this.slotsSinceKick;
    this.kickedLin = newLin;
    this.addedSinceKick = 0;
    this.slotsSinceKick = 0;
    if (added === 0) return false;
    return eventWants(Atomics.load(this.deviceEvent, 0), this.options.eventIdx, oldLin, newLin, count, this.size);
  }

  /** True when the device has written a used descriptor we have not collected (acquire load). */
  hasUsed(): boolean {
    if (this.broken) return false; // as the split half: a broken queue gives nothing more
    const w3 = Atomics.load(this.desc, 4 * this.usedPos + 3);
    const wrap = this.usedWrap;
    return ((w3 >>> W3_AVAIL_SHIFT) & 1) === wrap && w3 >>> W3_USED_SHIFT === wrap;
  }

  /** 1 when a used descriptor waits to be collected, else 0 (a packed ring cannot count without walking). */
  pendingUsed(): number {
    return this.hasUsed() ? 1 : 0;
  }

  /**
   * Takes the next used buffer (§2.8.22), or null. A used descriptor whose id is not a buffer in
   * flight, or whose len exceeds the buffer's device-writable bytes, is a device error: the
   * queue is marked broken and a VirtioError is thrown.
   */
  getUsed(): UsedBuffer<T> | null {
    const token = this.getUsedToken();
    return token === undefined ? null : { token, len: this.lastUsedLen };
  }

  /** getUsed() without a result object: the token or undefined; the length is in `lastUsedLen`. */
  getUsedToken(): T | undefined {
    if (this.broken) return undefined;
    const w = 4 * this.usedPos;
    const w3 = Atomics.load(this.desc, w + 3); // acquire: len is read after it
    const wrap = this.usedWrap;
    // §2.8.1: used means AVAIL = USED = the device's wrap counter; anything else is not (yet) used.
    if (((w3 >>> W3_AVAIL_SHIFT) & 1) !== wrap || w3 >>> W3_USED_SHIFT !== wrap) return undefined;
    const id = w3 & 0xffff;
    const token = id < this.size ? this.tokens[id] : undefined;
    if (token === undefined) {
      this.broken = true;
      fail('USED_ID_INVALID', `device returned buffer id ${id}, which is not a buffer in flight`, '§2.8.22');
    }
    // §2.8.4: len is reserved (and ignored) in a used descriptor without WRITE.
    const len = (w3 >>> 16) & WRITE ? this.desc[w + 2]! : 0;
    if (len > this.writableLen[id]!) {
      this.broken = true;
      fail('USED_LEN_INVALID', `device returned len ${len} for id ${id}, which has ${this.writableLen[id]} device-writable bytes`, '§2.8.4');
    }
    // §2.8.6: skip the descriptors the buffer's list occupied.
    this.usedPos += this.slots[id]!;
    if (this.usedPos >= this.size) {
      this.usedPos -= this.size;
      this.usedWrap ^= 1;
    }
    this.release(id);
    // §2.8.10: with EVENT_IDX, ask for the event at the next used descriptor while callbacks are on.
    if (this.options.eventIdx && this.callbacksEnabled) {
      Atomics.store(this.driverEvent, 0, eventWord(this.nextUsed, RingEventFlags.DESC));
    }
    this.lastUsedLen = len;
    return token;
  }

  /** Asks the device not to send used buffer notifications (Driver Event Suppression DISABLE); advisory. */
  disableCallbacks(): void {
    this.callbacksEnabled = false;
    Atomics.store(this.driverEvent, 0, eventWord(0, RingEventFlags.DISABLE));
  }

  /**
   * Asks for used buffer notifications again (with EVENT_IDX: for the next used descriptor), then
   * re-checks (§2.8.22's note: SC store, then the flags load). False when used buffers arrived
   * meanwhile (process them and try again); true when it is safe to wait for a notification.
   */
  enableCallbacks(): boolean {
    this.callbacksEnabled = true;
    const word = this.options.eventIdx ? eventWord(this.nextUsed, RingEventFlags.DESC) : eventWord(0, RingEventFlags.ENABLE);
    Atomics.store(this.driverEvent, 0, word);
    return !this.hasUsed();
  }

  /**
   * Takes back every buffer still in flight (after a device reset, when the device will not return
   * them) and returns their tokens. The ring starts over as a new one (position 0, wrap counters 1,
   * zeroed descriptors and event structures, §2.8.1, §2.8.13), as the reset device will.
   */
  detachUnused(): T[] {
    const out: T[] = [];
    for (let id = 0; id < this.size; id++) {
      const t = this.tokens[id];
      if (t !== undefined) {
        this.release(id);
        out.push(t);
      }
    }
    this.resetRing();
    return out;
  }

  private resetRing(): void {
    // §2.8.13: "The descriptor ring is zero-initialized." Event structures: ENABLE (0).
    this.desc.fill(0);
    this.driverEvent[0] = 0;
    this.deviceEvent[0] = 0;
    this.availPos = this.usedPos = 0;
    this.availWrap = this.usedWrap = 1;
    this.free = this.size;
    this.pendingAt = -1;
    this.kickedLin = 0;
    this.addedSinceKick = 0;
    this.slotsSinceKick = 0;
    this.callbacksEnabled = true;
  }

  private takeId(): number {
    return this.freeIds[--this.freeIdCount]!;
  }

  private track(id: number, slots: number, token: T, inn: readonly Buffer[]): void {
    this.slots[id] = slots;
    this.free -= slots;
    this.tokens[id] = token;
    this.writableLen[id] = sumLen(inn);
    this.inFlightCount++;
  }

  private release(id: number): void {
    this.free += this.slots[id]!;
    this.slots[id] = 0;
    const table = this.indirectAddr[id]!;
    if (table >= 0) {
      this.indirectAddr[id] = -1;
      this.options.freeIndirect?.(table);
    }
    this.tokens[id] = undefined;
    this.freeIds[this.freeIdCount++] = id;
    this.inFlightCount--;
  }

  /**
   * Writes addr/len of the descriptor at our available position (plain stores, published by the
   * head's flags later), advances the position, and returns the index of its id|flags word, which
   * the caller stores.
   */
  private writeDesc(addr: number, len: number): number {
    const w = 4 * this.availPos;
    const lo = addr >>> 0; // ToUint32 is exact for integers below 2^53
    this.desc[w] = lo;
    this.desc[w + 1] = (addr - lo) / TWO_32;
    this.desc[w + 2] = len;
    if (++this.availPos === this.size) {
      this.availPos = 0;
      this.availWrap ^= 1; // §2.8.1: toggled after making the last descriptor of the ring available
    }
    return w + 3;
  }

  /** Exposes a list whose head id|flags word is `word` at `at`, now or at the next publish(). */
  private expose(at: number, word: number, slots: number, publish: boolean): void {
    if (this.pendingAt < 0) {
      if (publish) Atomics.store(this.desc, at, word);
      else {
        this.pendingAt = at;
        this.pendingWord = word;
      }
    } else {
      // An earlier list is unpublished: this head is published by that head's flags store.
      this.desc[at] = word;
      if (publish) this.publish();
    }
    this.addedSinceKick++;
    this.slotsSinceKick += slots;
  }

  /** §2.8.7: a table of struct pvirtq_desc; only WRITE is set in entries (§2.8.19), ids are reserved. */
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
      v.setUint16(o + 12, 0, true);
      v.setUint16(o + 14, k < out.length ? 0 : WRITE, true);
    }
  }
}

function sumLen(list: readonly Buffer[]): number {
  let n = 0;
  for (let i = 0; i < list.length; i++) n += list[i]!.len;
  return n;
}
