/**
 * The device side of a split virtqueue (virtio 1.2 §2.7): takes available descriptor
 * chains, returns used buffers, and decides about notifications in both directions.
 *
 * Everything the driver wrote is untrusted. Each chain is validated while it is walked
 * (§2.7.5, §2.7.5.3): a violation throws a VirtioError naming the rule; the host turns it
 * into DEVICE_NEEDS_RESET (§2.1.2). Walking is bounded by the queue size, so a looping
 * chain costs at most `size` steps, and segments are views that cannot reach past the
 * guest buffer they describe.
 */
import { AVAIL_F_NO_INTERRUPT, DescFlags, MAX_QUEUE_SIZE, USED_F_NO_NOTIFY } from './constants.js';
import { DescriptorChain } from './chain.js';
import type { ElementDescriptor, QueueElement } from './queue-element.js';
import { fail } from './errors.js';
import { joinAddress, type GuestMemory } from './memory.js';
import { availEventIndex, usedEventIndex, type RingViews } from './ring-views.js';
import { needsEvent } from './split-ring.js';
import { TRACE } from '../trace/events.js';

// The trace events emitted here, bound once; the emit calls live in small methods of their own
// (traceX below) so that the hot methods stay small enough for V8 to inline.
const EV_POP = TRACE.virtqueue_pop;
const EV_FILL = TRACE.virtqueue_fill;
const EV_FLUSH = TRACE.virtqueue_flush;

export interface DeviceQueueOptions {
  /** VIRTIO_F_RING_EVENT_IDX negotiated (§2.7.7, §2.7.10). */
  eventIdx: boolean;
  /** VIRTIO_F_RING_INDIRECT_DESC negotiated (§2.7.5.3). */
  indirect: boolean;
  /** Where to start: the next available index to read and the used index (vhost-user SET_VRING_BASE). */
  nextAvail?: number;
  nextUsed?: number;
  /** The queue's index in its device: the `vq` of its trace events (default 0). */
  index?: number;
}

const U32_LIMIT = 0x1_0000_0000;

/**
 * A device queue's state, as QEMU's x-query-virtio-queue-status reports it (last_avail_idx,
 * shadow_avail_idx, used_idx, signalled_used, …) plus both sides' event suppression words.
 */
export interface DeviceQueueStatus {
  size: number;
  /** Next available entry the device reads (QEMU last_avail_idx). */
  lastAvailIdx: number;
  /** avail.idx as the device last read it (QEMU shadow_avail_idx). */
  shadowAvailIdx: number;
  /** avail.idx in memory now. */
  availIdx: number;
  /** Next used entry the device writes (QEMU used_idx). */
  usedIdx: number;
  /** used.idx in memory now (published). */
  publishedUsedIdx: number;
  /** used.idx at the last notification decision (QEMU signalled_used, signalled_used_valid). */
  signalledUsed: number;
  signalledUsedValid: boolean;
  /** Chains popped and not yet returned (QEMU inuse). */
  inuse: number;
  eventIdx: boolean;
  indirect: boolean;
  /** avail.flags (VIRTQ_AVAIL_F_NO_INTERRUPT) and used.flags (VIRTQ_USED_F_NO_NOTIFY). */
  availFlags: number;
  usedFlags: number;
  /** With EVENT_IDX: used_event (driver's, in the avail ring) and avail_event (device's, in the used ring). */
  usedEvent: number | null;
  availEvent: number | null;
  /** Whether the device now asks for available buffer notifications (kicks). */
  kicksEnabled: boolean;
}

export class DeviceQueue {
  readonly size: number;
  /** The queue's index in its device (trace events, status). */
  readonly index: number;
  /** Free-running index of the next available ring entry to read (last_avail_idx). */
  nextAvail: number;
  /** Free-running index of the next used ring entry to write (our shadow of used.idx). */
  nextUsed: number;
  /** used.idx at the last notification decision (for event idx, §2.7.7). */
  private signalledUsed: number;
  /** Whether `signalledUsed` is meaningful (false until the first decision after a start). */
  private signalledValid = false;
  /** avail.idx as last read. */
  private availShadow: number;
  private readonly eventIdx: boolean;
  private readonly indirect: boolean;
  private readonly desc: Uint32Array;
  private readonly avail: Uint16Array;
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;

  constructor(
    private readonly memory: GuestMemory,
    rings: RingViews,
    options: DeviceQueueOptions,
  ) {
    this.size = rings.size;
    this.index = options.index ?? 0;
    this.desc = rings.desc;
    this.avail = rings.avail;
    this.used16 = rings.used16;
    this.used32 = rings.used32;
    this.eventIdx = options.eventIdx;
    this.indirect = options.indirect;
    this.nextAvail = (options.nextAvail ?? 0) & 0xffff;
    this.nextUsed = (options.nextUsed ?? Atomics.load(this.used16, 1)) & 0xffff;
    this.signalledUsed = this.nextUsed;
    this.availShadow = this.nextAvail;
  }

  /** The driver's used_event (65536 without EVENT_IDX) and avail.flags: for trace events. */
  usedEventWord(): number {
    return this.eventIdx ? Atomics.load(this.avail, usedEventIndex(this.size)) : 0x10000;
  }
  availFlagsWord(): number {
    return Atomics.load(this.avail, 0);
  }

  /** The queue's state for status queries (not a hot path: reads the ring's words). */
  status(): DeviceQueueStatus {
    const availEvent = this.eventIdx ? Atomics.load(this.used16, availEventIndex(this.size)) : null;
    const usedFlags = Atomics.load(this.used16, 0);
    return {
      size: this.size,
      lastAvailIdx: this.nextAvail,
      shadowAvailIdx: this.availShadow,
      availIdx: this.availIdx(),
      usedIdx: this.nextUsed,
      publishedUsedIdx: Atomics.load(this.used16, 1),
      signalledUsed: this.signalledUsed,
      signalledUsedValid: this.signalledValid,
      inuse: (this.nextAvail - this.nextUsed) & 0xffff,
      eventIdx: this.eventIdx,
      indirect: this.indirect,
      availFlags: Atomics.load(this.avail, 0),
      usedFlags,
      usedEvent: this.eventIdx ? Atomics.load(this.avail, usedEventIndex(this.size)) : null,
      availEvent,
      kicksEnabled: this.eventIdx ? availEvent === this.nextAvail : (usedFlags & USED_F_NO_NOTIFY) === 0,
    };
  }

  /** The driver's avail.idx (acquire: ring entries written before it are visible after this load). */
  availIdx(): number {
    return Atomics.load(this.avail, 1);
  }

  /**
   * How many chains the driver has made available and we have not taken yet.
   * §2.7.6: the driver never moves avail.idx back and never has more than `size`
   * buffers outstanding, so a distance above `size` is a driver error.
   */
  pending(): number {
    // Like vhost: re-read avail.idx (a line the driver keeps writing) only when the entries
    // seen at the last read are used up; the acquire of that read covers all of them.
    let n = (this.availShadow - this.nextAvail) & 0xffff;
    if (n !== 0 && n <= this.size) return n; // (> size only if nextAvail was assigned from outside)
    this.availShadow = this.availIdx();
    n = (this.availShadow - this.nextAvail) & 0xffff;
    if (n > this.size) {
      fail(
        'AVAIL_IDX_JUMP',
        `avail.idx ${this.availIdx()} is ${n} entries ahead of ${this.nextAvail}, more than the queue size ${this.size}`,
        '§2.7.6',
      );
    }
    return n;
  }

  /**
   * Takes the next available chain, or null when there is none. Throws VirtioError on a bad chain.
   * `reuse`: a chain the caller is completely done with (its used element added, no references
   * kept), refilled instead of allocating a new one — for devices that serve chains one at a
   * time in a loop (batched processing).
   */
  pop(reuse?: DescriptorChain): DescriptorChain | null {
    if (this.pending() === 0) return null;
    const head = this.avail[2 + (this.nextAvail & (this.size - 1))]!;
    const chain = this.walk(head, reuse);
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    if (EV_POP.enabled) this.tracePop(head, chain);
    return chain;
  }

  /**
   * Walks and validates the chain at descriptor `head` without touching the available ring:
   * for a device that must take up again chains it took before (vhost-user inflight
   * resubmission after a back-end restart). Throws VirtioError on a bad chain.
   */
  chainAt(head: number): DescriptorChain {
    return this.walk(head);
  }

  /**
   * The chain at descriptor `head`, or by default the next available one (null when none is),
   * decoded for a status query (x-query-virtio-queue-element) without taking it: the chain is
   * first walked with pop()'s validation (a VirtioError names a broken rule), then its
   * descriptors are read as written. Nothing moves but the avail.idx cache pending() keeps.
   */
  element(head?: number): QueueElement | null {
    let availIndex: number | null = null;
    if (head === undefined) {
      if (this.pending() === 0) return null; // §2.7.6 checked there
      availIndex = this.nextAvail;
      head = this.avail[2 + (this.nextAvail & (this.size - 1))]!;
    } else if (!(Number.isInteger(head) && head >= 0)) {
      throw new RangeError(`descriptor index ${head} is not an index`);
    }
    const chain = this.walk(head);
    // Validated; the read below is bounded the same way should the driver rewrite it meanwhile.
    const descriptors: ElementDescriptor[] = [];
    const desc = this.desc;
    let i = head;
    for (let n = 0; n < this.size && i < this.size; n++) {
      const w = 4 * i;
      const flags = desc[w + 3]! & 0xffff;
      const d: ElementDescriptor = { index: i, addr: joinAddress(desc[w]!, desc[w + 1]!), len: desc[w + 2]!, flags };
      if (flags & DescFlags.NEXT) d.next = desc[w + 3]! >>> 16;
      descriptors.push(d);
      if (flags & DescFlags.INDIRECT) {
        d.table = this.indirectEntries(d.addr, d.len);
        break;
      }
      if (!(flags & DescFlags.NEXT)) break;
      i = d.next!;
    }
    return {
      head,
      availIndex,
      readable: chain.readableLength,
      writable: chain.writableLength,
      descriptorCount: chain.descriptorCount,
      descriptors,
    };
  }

  /** An indirect table's entries in table order (§2.7.5.3), for element(). */
  private indirectEntries(addr: number, len: number): ElementDescriptor[] {
    const region = this.memory.region(addr, len);
    const base = addr - region.guestAddr;
    const out: ElementDescriptor[] = [];
    for (let k = 0; k < Math.floor(len / 16); k++) {
      const o = base + 16 * k;
      const flags = region.view.getUint16(o + 12, true);
      const d: ElementDescriptor = {
        index: k,
        addr: joinAddress(region.view.getUint32(o, true), region.view.getUint32(o + 4, true)),
        len: region.view.getUint32(o + 8, true),
        flags,
      };
      if (flags & DescFlags.NEXT) d.next = region.view.getUint16(o + 14, true);
      out.push(d);
    }
    return out;
  }

  /**
   * Puts a used element (§2.7.8) without publishing it: several can be added and then made
   * visible with one `publishUsed()` (batched publishing).
   */
  addUsed(head: number, len: number): void {
    if (!(head >= 0 && head < this.size)) throw new RangeError(`used id ${head} is not a descriptor index`);
    const slot = 1 + 2 * (this.nextUsed & (this.size - 1));
    this.used32[slot] = head;
    this.used32[slot + 1] = len >>> 0;
    if (EV_FILL.enabled) this.traceFill(head, len);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
  }

  /** §2.7.8.2: len and the buffer are written before used.idx moves (Atomics.store is a release). */
  publishUsed(): void {
    if (EV_FLUSH.enabled) this.traceFlush();
    Atomics.store(this.used16, 1, this.nextUsed);
  }

  /** Returns a chain to the driver: `len` is the number of bytes written into its writable part. */
  pushUsed(chain: DescriptorChain, len: number): void {
    if (len > chain.writableLength) {
      throw new RangeError(`used len ${len} exceeds the chain's ${chain.writableLength} writable bytes`);
    }
    this.addUsed(chain.head, len);
    this.publishUsed();
  }

  /**
   * Whether the driver wants a used buffer notification for what was published since the
   * last call (§2.7.7.2). Call after publishUsed(); the decision consumes the published range.
   */
  needsNotification(): boolean {
    const newUsed = this.nextUsed;
    const oldUsed = this.signalledUsed;
    const valid = this.signalledValid;
    this.signalledUsed = newUsed;
    this.signalledValid = true;
    if (this.eventIdx) {
      // Atomics.store of used.idx was a full barrier; now read used_event.
      const event = Atomics.load(this.avail, usedEventIndex(this.size));
      if (!valid) return true;
      return needsEvent(event, newUsed, oldUsed);
    }
    return (Atomics.load(this.avail, 0) & AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** Asks the driver not to send available buffer notifications (§2.7.10). */
  disableNotifications(): void {
    if (!this.eventIdx) Atomics.store(this.used16, 0, USED_F_NO_NOTIFY);
    // With event idx, leaving avail_event behind nextAvail already suppresses kicks.
  }

  /**
   * Asks for available buffer notifications again, then re-checks the ring (full barrier in
   * between) so a buffer made available meanwhile is not missed. Returns true if work is pending:
   * the caller then keeps processing instead of sleeping.
   */
  enableNotifications(): boolean {
    if (this.eventIdx) Atomics.store(this.used16, availEventIndex(this.size), this.nextAvail);
    else Atomics.store(this.used16, 0, 0);
    return this.pending() !== 0;
  }

  private tracePop(head: number, chain: DescriptorChain): void {
    EV_POP.emit(this.index, head, chain.writableSegments, chain.readableSegments);
  }

  private traceFill(head: number, len: number): void {
    EV_FILL.emit(this.index, head, len >>> 0, this.nextUsed);
  }

  /** Before used.idx moves: count is what this publication makes visible. */
  private traceFlush(): void {
    EV_FLUSH.emit(this.index, (this.nextUsed - this.used16[1]!) & 0xffff, this.nextUsed);
  }

  /** Walks and validates one chain starting at descriptor `head`. */
  private walk(head: number, reuse?: DescriptorChain): DescriptorChain {
    const size = this.size;
    if (head >= size) {
      fail('DESC_INDEX_OUT_OF_RANGE', `available head ${head} ≥ queue size ${size}`, '§2.7.6');
    }
    const chain = reuse ? reuse.refill(head) : new DescriptorChain(head);
    const desc = this.desc;
    let i = head;
    for (;;) {
      if (++chain.descriptorCount > size) {
        fail('DESC_LOOP', `chain from head ${head} is longer than the queue size ${size} (a loop)`, '§2.7.5.3.1');
      }
      const w = 4 * i;
      const flags = desc[w + 3]! & 0xffff;
      if (flags & DescFlags.INDIRECT) {
        this.walkIndirect(chain, joinAddress(desc[w]!, desc[w + 1]!), desc[w + 2]!, flags);
        return chain;
      }
      this.addSegment(chain, joinAddress(desc[w]!, desc[w + 1]!), desc[w + 2]!, flags);
      if (!(flags & DescFlags.NEXT)) return chain;
      i = desc[w + 3]! >>> 16;
      if (i >= size) {
        fail('DESC_INDEX_OUT_OF_RANGE', `descriptor next ${i} ≥ queue size ${size}`, '§2.7.5');
      }
    }
  }

  /**
   * §2.7.5.3: an indirect table. §2.7.5.3.1 says no chain may be longer than the Queue Size;
   * Linux nevertheless builds indirect tables with as many entries as the buffer has elements
   * (a 2-element request on a 1-entry queue), and QEMU and vhost accept them. So, as they do,
   * the table is bounded by its own length (at most 32768 entries), which also bounds the walk.
   */
  private walkIndirect(chain: DescriptorChain, addr: number, len: number, flags: number): void {
    if (!this.indirect) {
      fail('INDIRECT_NOT_NEGOTIATED', 'INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC', '§2.7.5.3.1');
    }
    if (flags & DescFlags.NEXT) {
      fail('INDIRECT_WITH_NEXT', 'descriptor has both INDIRECT and NEXT', '§2.7.5.3.1');
    }
    if (len === 0 || len % 16 !== 0) {
      fail('INDIRECT_BAD_LENGTH', `indirect table length ${len} is not a non-zero multiple of 16`, '§2.7.5.3');
    }
    const count = len / 16;
    if (count > MAX_QUEUE_SIZE) {
      fail('INDIRECT_BAD_LENGTH', `indirect table of ${count} entries is longer than 32768`, '§2.7.5.3');
    }
    // Read the table through its region's DataView: no view objects per chain.
    const region = this.memory.region(addr, len);
    const view = region.view;
    const base = addr - region.guestAddr;
    let i = 0;
    for (let walked = 1; ; walked++) {
      chain.descriptorCount++;
      if (walked > count) {
        fail('DESC_LOOP', `indirect chain at 0x${addr.toString(16)} revisits a descriptor (a loop)`, '§2.7.5.3.1');
      }
      const o = base + 16 * i;
      const f = view.getUint16(o + 12, true);
      if (f & DescFlags.INDIRECT) {
        fail('INDIRECT_NESTED', 'descriptor inside an indirect table has INDIRECT', '§2.7.5.3.1');
      }
      const a = joinAddress(view.getUint32(o, true), view.getUint32(o + 4, true));
      this.addSegment(chain, a, view.getUint32(o + 8, true), f);
      if (!(f & DescFlags.NEXT)) return;
      i = view.getUint16(o + 14, true);
      if (i >= count) {
        fail('DESC_INDEX_OUT_OF_RANGE', `indirect next ${i} ≥ table length ${count}`, '§2.7.5.3');
      }
    }
  }

  private addSegment(chain: DescriptorChain, addr: number, len: number, flags: number): void {
    // §2.7.5: a descriptor describes a buffer; one of 0 bytes describes none (refused, as QEMU does).
    if (len === 0) fail('DESC_ZERO_LENGTH', `descriptor with length 0 at 0x${addr.toString(16)}`, '§2.7.5');
    const r = this.memory.region(addr, len); // bounds check (MEM_OUT_OF_RANGE), no view made
    const writable = (flags & DescFlags.WRITE) !== 0;
    if (!writable && chain.hasWritable) {
      fail('DESC_READABLE_AFTER_WRITABLE', 'device-readable descriptor after a device-writable one', '§2.7.4.2');
    }
    chain.addSegment(r, addr - r.guestAddr, len, writable);
    if (chain.readableLength + chain.writableLength > U32_LIMIT) {
      fail('DESC_CHAIN_TOO_LONG', 'chain is longer than 2^32 bytes in total', '§2.7.5.2');
    }
  }
}
