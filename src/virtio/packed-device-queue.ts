/**
 * The device side of a packed virtqueue (virtio 1.2 §2.8): takes available descriptor lists,
 * writes used descriptors, and decides about notifications in both directions. The packed twin
 * of device-queue.ts: same method names, same DescriptorChain, same typed errors where the rule
 * is the same, so device models cannot tell which ring they are served from.
 *
 * It implements DeviceVirtqueue (virtqueue.ts), which DeviceRuntime uses for both layouts; the
 * runtime picks this half when VIRTIO_F_RING_PACKED was negotiated, over the transport's three
 * area addresses (desc = Descriptor Ring, driver = Driver Event Suppression, device = Device
 * Event Suppression; §2.8.10, §4.2.3.2 QueueDesc/QueueDriver/QueueDevice). vhost-user
 * GET_VRING_BASE answers `vringBase` (both positions with their wrap counters, packed-ring.ts);
 * SET_VRING_BASE passes `parsePackedVringBase(num)` as nextAvail/nextUsed.
 *
 * Resubmission (vhost-user: chains a model still held when its ring was stopped are handed to
 * it again when the ring starts). A split ring's chain can be walked again from its head: the
 * driver does not touch the descriptor table until the chain is used. A packed ring's cannot:
 * used descriptors are written in completion order from the used position, over descriptors of
 * lists still in flight (§2.8.9, §2.8.22). With `keepLists` the queue therefore keeps a copy of
 * the descriptors of each list it took (4 words per descriptor, at the list's own ring
 * positions; an indirect table stays in guest memory, the driver keeps it until the buffer is
 * used, §2.8.7), and `chainAt(id)` walks that copy; `adopt` carries the copy and the ids in
 * flight over to the queue that replaces this one when the ring restarts.
 *
 * Everything the driver wrote is untrusted: each list is validated while it is walked; a
 * violation throws a VirtioError naming the rule and leaves the queue's state as it was. Walks
 * are bounded by the queue size (direct lists) and the table length (indirect tables).
 * Memory ordering: see packed-ring.ts.
 */
import { DescFlags, MAX_PACKED_QUEUE_SIZE, RingEventFlags } from './constants.js';
import { DescriptorChain } from './chain.js';
import type { ElementDescriptor, QueueElement } from './queue-element.js';
import { fail } from './errors.js';
import { joinAddress, type GuestMemory } from './memory.js';
import type { DeviceQueueStatus } from './device-queue.js';
import {
  INITIAL_RING_INDEX,
  W3_AVAIL_SHIFT,
  W3_USED_SHIFT,
  checkRingIndex,
  encodeRingIndex,
  eventWants,
  eventWord,
  eventWordDesc,
  eventWordFlags,
  linearIndex,
  packedVringBase,
  usedBits,
  type PackedRingViews,
} from './packed-ring.js';

export interface PackedDeviceQueueOptions {
  /** VIRTIO_F_RING_EVENT_IDX negotiated: RING_EVENT_FLAGS_DESC is valid (§2.8.10). */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated (§2.8.7). */
  indirect: boolean;
  /**
   * Where to start, each `position | wrap counter << 15` (default 0x8000: position 0, wrap 1,
   * §2.8.1), as vhost-user SET_VRING_BASE carries them for packed rings. Buffers between the two
   * (in flight across a restart) are counted against the ring but cannot be completed here.
   */
  nextAvail?: number;
  nextUsed?: number;
  /**
   * Most entries an indirect table may have. Default: the queue size (§2.8.5: "If not limited,
   * the maximum number of descriptors in a list is the virt queue size"; §2.8.17). Up to 32768
   * for drivers that build longer tables for tiny queues (see device-queue.ts walkIndirect).
   */
  maxIndirectEntries?: number;
  /** The queue's index in its device (status, trace events; default 0). */
  index?: number;
  /** Keep a copy of each list taken, for chainAt() (see the file comment). */
  keepLists?: boolean;
  /**
   * The queue this one replaces after a ring restart at the same place (vhost-user stop/start
   * with buffers in flight): its ids in flight, their lists (with `keepLists`) and their
   * positions are taken over, so their used descriptors can still be written and their chains
   * resubmitted. Ignored when its size differs.
   */
  adopt?: PackedDeviceQueue;
}

const U32_LIMIT = 0x1_0000_0000;
const { NEXT, WRITE, INDIRECT } = DescFlags;

export class PackedDeviceQueue {
  readonly size: number;
  /** The queue's index in its device. */
  readonly index: number;
  private availPos: number;
  private availWrap: number;
  private usedPos: number;
  private usedWrap: number;
  /** Ring descriptors taken by pop() and not yet covered by used descriptors (≤ size). */
  private inFlight: number;
  /** Per buffer id: ring descriptors its list occupied (0: not in flight). §2.8.6: the skip count. */
  private readonly idSlots: Uint16Array;
  /** Per buffer id in flight: the ring position of its list's first descriptor. */
  private readonly idPos: Uint16Array;
  /** With keepLists: the descriptor words of every list taken, at their ring positions. */
  private readonly lists: Uint32Array | null;
  /** Word index and value of the first used descriptor's id|flags of an unpublished batch, or -1. */
  private pendingAt = -1;
  private pendingWord = 0;
  /** Used linear index at the last notification decision, descriptors used since, validity. */
  private signalledLin = 0;
  private usedSinceSignal = 0;
  private signalledValid = false;
  private readonly eventIdx: boolean;
  private readonly indirect: boolean;
  private readonly maxIndirect: number;
  private readonly desc: Uint32Array;
  private readonly driverEvent: Uint32Array;
  private readonly deviceEvent: Uint32Array;

  constructor(
    private readonly memory: GuestMemory,
    rings: PackedRingViews,
    options: PackedDeviceQueueOptions,
  ) {
    const size = (this.size = rings.size);
    this.index = options.index ?? 0;
    this.desc = rings.desc;
    this.driverEvent = rings.driverEvent;
    this.deviceEvent = rings.deviceEvent;
    this.eventIdx = options.eventIdx;
    this.indirect = options.indirect;
    this.maxIndirect = Math.min(MAX_PACKED_QUEUE_SIZE, Math.max(1, options.maxIndirectEntries ?? size));
    const a = checkRingIndex(options.nextAvail ?? INITIAL_RING_INDEX, size, 'next available index');
    const u = checkRingIndex(options.nextUsed ?? INITIAL_RING_INDEX, size, 'next used index');
    this.availPos = a.pos;
    this.availWrap = a.wrap;
    this.usedPos = u.pos;
    this.usedWrap = u.wrap;
    const m = 2 * size;
    this.inFlight = (linearIndex(a.pos, a.wrap, size) - linearIndex(u.pos, u.wrap, size) + m) % m;
    if (this.inFlight > size) {
      fail('QUEUE_BASE_INVALID', `next available ${options.nextAvail} is ${this.inFlight} descriptors ahead of next used ${options.nextUsed}, more than the queue size ${size}`, '§2.8');
    }
    this.idSlots = new Uint16Array(size);
    this.idPos = new Uint16Array(size);
    this.lists = options.keepLists ? new Uint32Array(4 * size) : null;
    this.signalledLin = linearIndex(u.pos, u.wrap, size);
    const old = options.adopt;
    if (old && old.size === size) {
      // Only lists that fit the in-flight window given by the bases are taken over.
      let slots = 0;
      for (let id = 0; id < size; id++) slots += old.idSlots[id]!;
      if (slots === this.inFlight) {
        this.idSlots.set(old.idSlots);
        this.idPos.set(old.idPos);
        if (this.lists && old.lists) this.lists.set(old.lists);
      }
    }
  }

  /**
   * Buffer ids taken and not yet used, oldest list first. Every list in flight was taken within
   * the last `size` ring positions before the next available one, so its distance from there
   * orders them by age. (Not from the used position: after out-of-order completions, §2.8.6,
   * used descriptors have been written over positions whose lists are still older.)
   */
  idsInFlight(): number[] {
    const ids: number[] = [];
    for (let id = 0; id < this.size; id++) if (this.idSlots[id] !== 0) ids.push(id);
    const from = this.availPos;
    const dist = (id: number) => (this.idPos[id]! - from + this.size) % this.size;
    return ids.sort((a, b) => dist(a) - dist(b));
  }

  /** The next descriptor to read, as `position | wrap counter << 15` (vhost-user last_avail_idx). */
  get nextAvail(): number {
    return encodeRingIndex(this.availPos, this.availWrap);
  }

  /** Where the next used descriptor goes, as `position | wrap counter << 15` (vhost-user last_used_idx). */
  get nextUsed(): number {
    return encodeRingIndex(this.usedPos, this.usedWrap);
  }

  /** vhost-user GET_VRING_BASE `num` for this packed ring: nextAvail | nextUsed << 16. */
  get vringBase(): number {
    return packedVringBase(this.nextAvail, this.nextUsed);
  }

  /** Ring descriptors taken and not yet returned. */
  get descriptorsInFlight(): number {
    return this.inFlight;
  }

  /** Whether the descriptor at our next position is available (acquire load of its flags). */
  hasAvailable(): boolean {
    const w3 = Atomics.load(this.desc, 4 * this.availPos + 3);
    return ((w3 >>> W3_AVAIL_SHIFT) & 1) === this.availWrap;
  }

  /** 1 when at least one list is available, else 0: a packed ring cannot count without walking. */
  pending(): number {
    return this.hasAvailable() ? 1 : 0;
  }

  /**
   * Takes the next available list, or null when there is none (§2.8.15: a descriptor is used
   * only once its AVAIL bit is seen to match our wrap counter). Throws VirtioError on a bad list,
   * without moving. `reuse`: a chain the caller is completely done with (see DeviceQueue.pop).
   */
  pop(reuse?: DescriptorChain): DescriptorChain | null {
    const desc = this.desc;
    const size = this.size;
    let pos = this.availPos;
    let wrap = this.availWrap;
    let w3 = Atomics.load(desc, 4 * pos + 3); // acquire: the list behind it is visible
    if (((w3 >>> W3_AVAIL_SHIFT) & 1) !== wrap) return null;
    if (w3 >>> W3_USED_SHIFT === wrap) {
      fail('PACKED_FLAGS_INVALID', `descriptor ${pos} has AVAIL = USED = ${wrap}: neither available nor a used descriptor of this lap`, '§2.8.1');
    }
    const chain = reuse ? reuse.refill(0) : new DescriptorChain(0);
    let slots = 0;
    for (;;) {
      if (++slots > size) {
        fail('DESC_CHAIN_TOO_LONG', `descriptor list at ${this.availPos} is longer than the queue size ${size}`, '§2.8.17');
      }
      if (this.inFlight + slots > size) {
        fail(
          'PACKED_RING_OVERRUN',
          `descriptor ${pos} was made available again while ${this.inFlight} descriptors are in flight in a ${size}-entry ring`,
          '§2.8.16',
        );
      }
      const w = 4 * pos;
      if (slots > 1) {
        w3 = desc[w + 3]!;
        if (((w3 >>> W3_AVAIL_SHIFT) & 1) !== wrap || w3 >>> W3_USED_SHIFT === wrap) {
          fail(
            'PACKED_DESC_NOT_AVAIL',
            `descriptor ${pos} (number ${slots} of the list at ${this.availPos}) is not marked available for wrap counter ${wrap}`,
            '§2.8.6',
          );
        }
      }
      const flags = w3 >>> 16;
      chain.descriptorCount++;
      if (flags & INDIRECT) {
        if (slots > 1) fail('INDIRECT_IN_CHAIN', `descriptor ${pos} has INDIRECT inside a list linked by NEXT`, '§2.8.19');
        this.walkIndirect(chain, joinAddress(desc[w]!, desc[w + 1]!), desc[w + 2]!, flags);
      } else {
        this.addSegment(chain, joinAddress(desc[w]!, desc[w + 1]!), desc[w + 2]!, flags);
      }
      if (++pos === size) {
        pos = 0;
        wrap ^= 1;
      }
      if (!(flags & NEXT) || flags & INDIRECT) break;
    }
    // §2.8.6: the buffer id is in the last descriptor of the list.
    const id = w3 & 0xffff;
    if (id >= size) fail('PACKED_ID_INVALID', `buffer id ${id} ≥ queue size ${size}`, '§2.8.21.1');
    if (this.idSlots[id] !== 0) fail('PACKED_ID_IN_USE', `buffer id ${id} is already in flight`, '§2.8.21.1');
    this.idSlots[id] = slots;
    this.idPos[id] = this.availPos;
    if (this.lists) this.keepList(this.availPos, slots);
    this.inFlight += slots;
    this.availPos = pos;
    this.availWrap = wrap;
    chain.head = id;
    return chain;
  }

  /**
   * The next available list (null when none is), decoded for a status query
   * (x-query-virtio-queue-element) without taking it. It is walked by pop() itself, so with the
   * same validation (a VirtioError names the broken rule, and pop() moves nothing then); a list
   * that passes is put back at once: its id leaves the in-flight set and the available position
   * returns (a kept copy, with keepLists, sits at positions not in flight and is rewritten when
   * the list is really taken). `position`, if given, must be that next position: only there is
   * a packed list known to start (§2.8.6).
   */
  element(position?: number): QueueElement | null {
    const pos0 = this.availPos;
    if (position !== undefined && position !== pos0) {
      throw new RangeError(`a packed ring is decoded from its next available position (${pos0}), not ${position}`);
    }
    const wrap0 = this.availWrap;
    const inFlight0 = this.inFlight;
    const chain = this.pop();
    if (chain === null) return null;
    const slots = this.inFlight - inFlight0;
    this.idSlots[chain.head] = 0;
    this.inFlight = inFlight0;
    this.availPos = pos0;
    this.availWrap = wrap0;
    const descriptors: ElementDescriptor[] = [];
    const desc = this.desc;
    for (let n = 0, pos = pos0; n < slots; n++) {
      const w = 4 * pos;
      const flags = desc[w + 3]! >>> 16;
      const d: ElementDescriptor = { index: pos, addr: joinAddress(desc[w]!, desc[w + 1]!), len: desc[w + 2]!, flags, id: desc[w + 3]! & 0xffff };
      if (flags & INDIRECT) d.table = this.indirectEntries(d.addr, d.len);
      descriptors.push(d);
      if (++pos === this.size) pos = 0;
    }
    return {
      head: chain.head,
      availIndex: encodeRingIndex(pos0, wrap0),
      readable: chain.readableLength,
      writable: chain.writableLength,
      descriptorCount: chain.descriptorCount,
      descriptors,
    };
  }

  /** A packed indirect table's entries (struct pvirtq_desc, §2.8.7), for element(). */
  private indirectEntries(addr: number, len: number): ElementDescriptor[] {
    const region = this.memory.region(addr, len);
    const base = addr - region.guestAddr;
    const out: ElementDescriptor[] = [];
    for (let k = 0; k < Math.floor(len / 16); k++) {
      const o = base + 16 * k;
      out.push({
        index: k,
        addr: joinAddress(region.view.getUint32(o, true), region.view.getUint32(o + 4, true)),
        len: region.view.getUint32(o + 8, true),
        flags: region.view.getUint16(o + 14, true),
        id: region.view.getUint16(o + 12, true),
      });
    }
    return out;
  }

  /**
   * Writes a used descriptor for buffer `id` (§2.8.22) at our used position without publishing
   * it, then skips over the descriptors its list occupied (§2.8.6, §2.8.9). Completion order is
   * free (used descriptors carry the id). Several can be added, then published with one
   * publishUsed(): the first one's flags are written last.
   */
  addUsed(id: number, len: number): void {
    if (!(id >= 0 && id < this.size) || this.idSlots[id] === 0) throw new RangeError(`used id ${id} is not a buffer in flight`);
    const slots = this.idSlots[id]!;
    const w = 4 * this.usedPos;
    const l = len >>> 0;
    this.desc[w + 2] = l;
    // §2.8.3/§2.8.4: WRITE in a used descriptor says the device wrote data (then len counts it).
    const word = (id | ((usedBits(this.usedWrap) | (l !== 0 ? WRITE : 0)) << 16)) >>> 0;
    if (this.pendingAt < 0) {
      this.pendingAt = w + 3;
      this.pendingWord = word;
    } else {
      this.desc[w + 3] = word; // published by the batch's first flags store (release)
    }
    this.usedPos += slots;
    if (this.usedPos >= this.size) {
      this.usedPos -= this.size;
      this.usedWrap ^= 1;
    }
    this.idSlots[id] = 0;
    this.inFlight -= slots;
    this.usedSinceSignal += slots;
  }

  /** Makes every used descriptor added so far visible: the batch's first flags word, Atomics.store (release). */
  publishUsed(): void {
    if (this.pendingAt >= 0) {
      Atomics.store(this.desc, this.pendingAt, this.pendingWord);
      this.pendingAt = -1;
    }
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
   * The chain of buffer `id` (still in flight) again, from the copy kept when it was taken
   * (`keepLists`): for vhost-user resubmission after a ring restart. Its segments are validated
   * again against guest memory as it is now. Throws VirtioError when the id is not in flight or
   * no copy was kept.
   */
  chainAt(id: number): DescriptorChain {
    const lists = this.lists;
    const slots = id >= 0 && id < this.size ? this.idSlots[id]! : 0;
    if (slots === 0) fail('PACKED_ID_INVALID', `buffer id ${id} is not in flight`, '§2.8.21.1');
    if (lists === null) fail('PACKED_ID_INVALID', `buffer id ${id} is in flight but its list was not kept (keepLists): it cannot be walked again`, '§2.8.22');
    const chain = new DescriptorChain(id);
    let pos = this.idPos[id]!;
    for (let k = 0; k < slots; k++) {
      const w = 4 * pos;
      const flags = lists[w + 3]! >>> 16;
      chain.descriptorCount++;
      if (flags & INDIRECT) this.walkIndirect(chain, joinAddress(lists[w]!, lists[w + 1]!), lists[w + 2]!, flags);
      else this.addSegment(chain, joinAddress(lists[w]!, lists[w + 1]!), lists[w + 2]!, flags);
      if (++pos === this.size) pos = 0;
    }
    return chain;
  }

  /** Copies the `slots` descriptors of a list just taken from ring position `pos` (keepLists). */
  private keepList(pos: number, slots: number): void {
    const lists = this.lists!;
    const desc = this.desc;
    for (let k = 0; k < slots; k++) {
      const w = 4 * pos;
      lists[w] = desc[w]!;
      lists[w + 1] = desc[w + 1]!;
      lists[w + 2] = desc[w + 2]!;
      lists[w + 3] = desc[w + 3]!;
      if (++pos === this.size) pos = 0;
    }
  }

  /** The Driver Event Suppression word (desc | flags << 16): trace events' used_event. */
  usedEventWord(): number {
    return Atomics.load(this.driverEvent, 0);
  }

  /** The driver's event flags (ENABLE 0, DISABLE 1, DESC 2): trace events' avail flags. */
  availFlagsWord(): number {
    return eventWordFlags(Atomics.load(this.driverEvent, 0));
  }

  /**
   * The queue's state in the split ring's terms (DeviceQueueStatus), with the packed
   * equivalents: indices are `position | wrap << 15` (lastAvailIdx = shadowAvailIdx = availIdx =
   * the next position to read: a packed ring has no avail index in memory), usedIdx =
   * publishedUsedIdx = the next used position, inuse = ring descriptors in flight; availFlags /
   * usedFlags are the driver's / device's event flags (ENABLE 0, DISABLE 1, DESC 2), usedEvent /
   * availEvent their desc_event_off|wrap when in DESC mode (else null).
   */
  status(): DeviceQueueStatus {
    const drv = Atomics.load(this.driverEvent, 0);
    const dev = Atomics.load(this.deviceEvent, 0);
    const drvFlags = eventWordFlags(drv);
    const devFlags = eventWordFlags(dev);
    const used = this.nextUsed;
    return {
      size: this.size,
      lastAvailIdx: this.nextAvail,
      shadowAvailIdx: this.nextAvail,
      availIdx: this.nextAvail,
      usedIdx: used,
      publishedUsedIdx: this.pendingAt >= 0 ? -1 : used,
      signalledUsed: encodeRingIndex(this.signalledLin % this.size, this.signalledLin < this.size ? 1 : 0),
      signalledUsedValid: this.signalledValid,
      inuse: this.inFlight,
      eventIdx: this.eventIdx,
      indirect: this.indirect,
      availFlags: drvFlags,
      usedFlags: devFlags,
      usedEvent: drvFlags === RingEventFlags.DESC ? eventWordDesc(drv) : null,
      availEvent: devFlags === RingEventFlags.DESC ? eventWordDesc(dev) : null,
      kicksEnabled: devFlags !== RingEventFlags.DISABLE,
    };
  }

  /**
   * Whether the driver wants a used buffer notification for what was published since the last
   * call (§2.8.10, from the Driver Event Suppression structure). Call after publishUsed().
   */
  needsNotification(): boolean {
    const newLin = linearIndex(this.usedPos, this.usedWrap, this.size);
    const oldLin = this.signalledLin;
    const count = this.usedSinceSignal;
    const valid = this.signalledValid;
    this.signalledLin = newLin;
    this.usedSinceSignal = 0;
    this.signalledValid = true;
    // The flags store in publishUsed() and this load are both SC: not reordered (§2.8.10).
    const word = Atomics.load(this.driverEvent, 0);
    // The first decision after a start notifies in DESC mode: the driver may wait for an event
    // passed before we started (as the split half does with used_event).
    if (!valid && this.eventIdx && eventWordFlags(word) === RingEventFlags.DESC) return true;
    return eventWants(word, this.eventIdx, oldLin, newLin, count, this.size);
  }

  /** Asks the driver not to send available buffer notifications (Device Event Suppression, §2.8.10). */
  disableNotifications(): void {
    Atomics.store(this.deviceEvent, 0, eventWord(0, RingEventFlags.DISABLE));
  }

  /**
   * Asks for available buffer notifications again (with EVENT_IDX: for the descriptor at our next
   * position), then re-checks the ring (the store and the load are SC, so not reordered) so a
   * list made available meanwhile is not missed. True if work is pending: keep processing.
   */
  enableNotifications(): boolean {
    const word = this.eventIdx ? eventWord(this.nextAvail, RingEventFlags.DESC) : eventWord(0, RingEventFlags.ENABLE);
    Atomics.store(this.deviceEvent, 0, word);
    return this.hasAvailable();
  }

  /**
   * §2.8.7: the list is one INDIRECT descriptor pointing at a table of struct pvirtq_desc
   * (16 bytes: addr, len, id, flags), walked in order: the table length is the entry count.
   * §2.8.19: only WRITE is valid in table entries; NEXT (a driver writing split-format entries
   * would put a `next` index there) and INDIRECT are refused, other reserved bits ignored (§2.8.7).
   */
  private walkIndirect(chain: DescriptorChain, addr: number, len: number, flags: number): void {
    if (!this.indirect) fail('INDIRECT_NOT_NEGOTIATED', 'INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC', '§2.8.19');
    if (flags & NEXT) fail('INDIRECT_WITH_NEXT', 'descriptor has both INDIRECT and NEXT', '§2.8.19');
    if (len === 0 || len % 16 !== 0) {
      fail('INDIRECT_BAD_LENGTH', `indirect table length ${len} is not a non-zero multiple of 16`, '§2.8.7');
    }
    const count = len / 16;
    if (count > this.maxIndirect) {
      fail('INDIRECT_BAD_LENGTH', `indirect table of ${count} entries is longer than the limit ${this.maxIndirect}`, '§2.8.17');
    }
    const region = this.memory.region(addr, len); // MEM_OUT_OF_RANGE
    const view = region.view;
    const base = addr - region.guestAddr;
    for (let k = 0; k < count; k++) {
      chain.descriptorCount++;
      const o = base + 16 * k;
      const f = view.getUint16(o + 14, true);
      if (f & INDIRECT) fail('INDIRECT_NESTED', `indirect table entry ${k} has INDIRECT`, '§2.8.19');
      if (f & NEXT) fail('INDIRECT_ENTRY_NEXT', `indirect table entry ${k} has NEXT (only WRITE is valid there)`, '§2.8.19');
      this.addSegment(chain, joinAddress(view.getUint32(o, true), view.getUint32(o + 4, true)), view.getUint32(o + 8, true), f);
    }
  }

  private addSegment(chain: DescriptorChain, addr: number, len: number, flags: number): void {
    // A descriptor describes a buffer element; one of 0 bytes describes none (refused, as the split half does).
    if (len === 0) fail('DESC_ZERO_LENGTH', `descriptor with length 0 at 0x${addr.toString(16)}`, '§2.8.4');
    const r = this.memory.region(addr, len); // bounds check (MEM_OUT_OF_RANGE), no view made
    const writable = (flags & WRITE) !== 0;
    if (!writable && chain.hasWritable) {
      fail('DESC_READABLE_AFTER_WRITABLE', 'device-readable descriptor after a device-writable one', '§2.8.17');
    }
    chain.addSegment(r, addr - r.guestAddr, len, writable);
    if (chain.readableLength + chain.writableLength > U32_LIMIT) {
      fail('DESC_CHAIN_TOO_LONG', 'list is longer than 2^32 bytes in total', '§2.8.17');
    }
  }
}
