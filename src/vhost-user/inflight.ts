/**
 * The inflight I/O tracking buffer for split virtqueues ([vhost-user "Inflight I/O tracking"]),
 * shared with the front-end (GET_INFLIGHT_FD / SET_INFLIGHT_FD) so that a restarted back-end
 * can resubmit the requests its predecessor took but never completed.
 *
 * The buffer is one region per queue; each region is (little-endian, as the host):
 *
 *   QueueRegionSplit   offset  field
 *                      0       u64 features        (0)
 *                      8       u16 version         (1; 0 = not initialised yet)
 *                      10      u16 desc_num        (= queue size)
 *                      12      u16 last_batch_head (0: settle reads the used ring instead, see there)
 *                      14      u16 used_idx        (used.idx at the last settle)
 *                      16      DescStateSplit desc[desc_num]
 *   DescStateSplit     0       u8  inflight
 *                      1       u8  padding[5]
 *                      6       u16 next            (batch list link; unused, 0)
 *                      8       u64 counter         (order in which heads were taken)
 *
 * Only the back-end interprets the buffer (the front-end keeps it and hands it back), so the
 * region stride is this back-end's choice: the struct size rounded up to 64 bytes.
 */
import { native } from './native/index.js';
import { closeQuietly } from './message-channel.js';

export const INFLIGHT_VERSION = 1;
const HEADER = 16;
const DESC_STATE = 16;
const REGION_ALIGN = 64;

/** Bytes of one queue's region for a queue of `queueSize` descriptors. */
export const inflightQueueRegionSize = (queueSize: number): number =>
  Math.ceil((HEADER + DESC_STATE * queueSize) / REGION_ALIGN) * REGION_ALIGN;

/** Bytes of the whole buffer. */
export const inflightBufferSize = (numQueues: number, queueSize: number): number =>
  numQueues * inflightQueueRegionSize(queueSize);

/**
 * GET_INFLIGHT_FD: a zeroed shared-memory fd holding the buffer (version 0 everywhere: each
 * queue's region is initialised when its ring first starts). The caller sends and closes it.
 */
export function createInflightFd(numQueues: number, queueSize: number): { fd: number; size: number } {
  const size = inflightBufferSize(numQueues, queueSize);
  const fd = native.memfdCreate('vhost-user-inflight', size); // memfd pages start zeroed
  return { fd, size };
}

/** One queue's region, over a view of the shared buffer. */
export class InflightQueue {
  private readonly view: DataView;
  /** The next counter value to give a head taken from the available ring. */
  private counter = 1n;
  /**
   * How many DescStateSplit entries fit in this region. `desc_num` lives in memory the
   * front-end can write at any time, so every walk is bounded by this instead.
   */
  readonly capacity: number;

  constructor(bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.capacity = Math.max(0, Math.floor((bytes.byteLength - HEADER) / DESC_STATE));
  }

  get version(): number {
    return this.view.getUint16(8, true);
  }
  get descNum(): number {
    return this.view.getUint16(10, true);
  }
  get usedIdx(): number {
    return this.view.getUint16(14, true);
  }

  isInflight(head: number): boolean {
    return this.view.getUint8(HEADER + DESC_STATE * head) !== 0;
  }

  /** A fresh region for a ring of `size` whose used.idx is `usedIdx`: nothing in flight. */
  initialise(size: number, usedIdx: number): void {
    if (size > this.capacity) throw new RangeError(`inflight region holds ${this.capacity} descriptors, not ${size}`);
    new Uint8Array(this.view.buffer, this.view.byteOffset, HEADER + DESC_STATE * size).fill(0);
    this.view.setBigUint64(0, 0n, true);
    this.view.setUint16(10, size, true);
    this.view.setUint16(12, 0, true);
    this.view.setUint16(14, usedIdx & 0xffff, true);
    this.view.setUint16(8, INFLIGHT_VERSION, true);
    this.counter = 1n;
  }

  /** "When receiving available buffers from the driver": head `head` was taken. */
  begin(head: number): void {
    const at = HEADER + DESC_STATE * head;
    this.view.setBigUint64(at + 8, this.counter++, true);
    this.view.setUint8(at, 1);
  }

  /**
   * "When supplying used buffers to the driver", the bookkeeping: the used elements published
   * since the last settle, from the region's `used_idx` up to the ring's used.idx
   * (`ringUsedIdx`), name heads that are no longer in flight. This is also the reconnection
   * rule ([vhost-user "Inflight I/O tracking"], "When reconnecting" step 1).
   *
   * The spec's method links each completed head into a "last batch" list just before the
   * used.idx update that publishes it. That holds only when completion and publication happen
   * in the same order; here a model's answers arrive as promises and are published by the
   * runtime (batched) in whatever order they settle, so a list built at completion time can
   * name a head not yet published (lost if the back-end dies) and miss one that was
   * (resubmitted twice). The used ring itself says exactly which heads were published: they
   * are read from it (`usedHead(slot)` = used.ring[slot].id). At most one ring's worth can
   * have been published between two settles (a settle comes before every head is taken, and
   * no more than the ring's size are in flight), so the elements are all still in the ring.
   * `last_batch_head` is left 0: only this back-end reads the region.
   */
  settle(ringUsedIdx: number, usedHead: (slot: number) => number): void {
    const from = this.usedIdx;
    const to = ringUsedIdx & 0xffff;
    if (from === to) return;
    const size = this.descNum;
    const n = Math.min(size, this.capacity);
    if (size > 0) {
      const count = Math.min((to - from) & 0xffff, size);
      for (let i = (to - count) & 0xffff; i !== to; i = (i + 1) & 0xffff) {
        const head = usedHead(i % size);
        if (head < n) this.view.setUint8(HEADER + DESC_STATE * head, 0);
      }
    }
    this.view.setUint16(14, to, true);
  }

  /**
   * "When reconnecting": settles the last batch, then returns the heads still in flight in
   * the order they were taken (by counter). Later heads get larger counters.
   */
  recover(ringUsedIdx: number, usedHead: (slot: number) => number): number[] {
    this.settle(ringUsedIdx, usedHead);
    const found: { head: number; counter: bigint }[] = [];
    for (let head = 0; head < Math.min(this.descNum, this.capacity); head++) {
      const at = HEADER + DESC_STATE * head;
      if (this.view.getUint8(at) !== 0) found.push({ head, counter: this.view.getBigUint64(at + 8, true) });
    }
    found.sort((a, b) => (a.counter < b.counter ? -1 : a.counter > b.counter ? 1 : 0));
    const max = found.length ? found[found.length - 1]!.counter : 0n;
    this.counter = max + 1n;
    return found.map((f) => f.head);
  }
}

/** The mapped inflight buffer of SET_INFLIGHT_FD. */
export class InflightBuffer {
  private readonly regionSize: number;

  private constructor(
    private readonly mapping: ArrayBuffer,
    private readonly lead: number,
    readonly numQueues: number,
    readonly queueSize: number,
  ) {
    this.regionSize = inflightQueueRegionSize(queueSize);
  }

  /**
   * Maps [mmapOffset, mmapOffset + mmapSize) of `fd` (always consumed). Throws Error with
   * a reason when the description does not fit the fd or the layout.
   */
  static map(fd: number, d: { mmapSize: number; mmapOffset: number; numQueues: number; queueSize: number }): InflightBuffer {
    try {
      if (d.numQueues === 0 || d.queueSize === 0) throw new Error(`empty inflight buffer (${d.numQueues} queues of ${d.queueSize})`);
      const need = inflightBufferSize(d.numQueues, d.queueSize);
      if (d.mmapSize < need) throw new Error(`inflight buffer of ${d.mmapSize} bytes, ${need} needed for ${d.numQueues} queues of ${d.queueSize}`);
      const kind = native.fdKind(fd);
      if (kind !== 'memfd' && kind !== 'file') throw new Error(`inflight fd is a ${kind}, not memory`);
      if (d.mmapOffset + d.mmapSize > native.fdSize(fd)) throw new Error('inflight buffer is past the end of its file');
      const lead = d.mmapOffset % native.pageSize;
      const mapping = native.mmap(fd, lead + d.mmapSize, d.mmapOffset - lead);
      return new InflightBuffer(mapping, lead, d.numQueues, d.queueSize);
    } finally {
      closeQuietly(fd);
    }
  }

  /** Queue `index`'s region, or null if the buffer has none for it. */
  queue(index: number): InflightQueue | null {
    if (index >= this.numQueues) return null;
    return new InflightQueue(new Uint8Array(this.mapping, this.lead + index * this.regionSize, this.regionSize));
  }

  /** Marks every queue's region uninitialised (nothing in flight): after a device reset. */
  clearAll(): void {
    for (let i = 0; i < this.numQueues; i++) {
      new DataView(this.mapping, this.lead + i * this.regionSize, 16).setUint16(8, 0, true);
    }
  }

  unmap(): void {
    try {
      native.munmap(this.mapping);
    } catch {
      // already detached
    }
  }
}
