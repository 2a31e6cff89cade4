/**
 * A virtio-blk driver over the TypeScript vhost-user front-end, for tests and load generation:
 * guest RAM in memfds, one split virtqueue per request queue driven by our DriverQueue, kick
 * and call eventfds, and the setup sequence QEMU's vhost-user-blk performs (SET_OWNER,
 * features, protocol features, memory table, inflight buffer, per ring NUM, BASE, ADDR, CALL,
 * ERR, KICK, ENABLE, DRIVER_OK). Modelled on virtio-test-client.ts.
 *
 * Requests (virtio 1.2 §5.2.6) are laid out as Linux's virtio_blk lays them out: a 16-byte
 * header descriptor, the data split into page-sized descriptors, and a one-byte status
 * descriptor (device-writable, last). A request resolves when its used element arrives, with
 * the status byte the device wrote: an OK status is the device's acknowledgement.
 *
 * `reconnect` is what QEMU does after its back-end died (chardev reconnect): a new connection
 * over the same guest RAM and rings, the same inflight buffer handed back (SET_INFLIGHT_FD), and
 * each ring's base set from its used index; the new back-end resubmits what was in flight, so
 * requests pending across the restart complete then.
 *
 * {@link BlkLoad} is a write/read/flush load with a ledger of acknowledged writes whose 4 KiB
 * blocks are self-describing ({@link fillBlock}), so an image can be checked afterwards
 * against exactly what the device acknowledged.
 */
import { BlkConfig, BlkFeature, BlkStatus, BlkType, HEADER_SIZE, ID_BYTES } from '../devices/blk/device.js';
import { FeatureBit, Status, bit } from '../virtio/constants.js';
import { DriverQueue, type Buffer as SgBuffer } from '../virtio/driver-queue.js';
import { ringViewsFromGuest } from '../virtio/ring-views.js';
import { packedLayout } from '../virtio/split-ring.js';
import { native, type Watch } from '../vhost-user/native/index.js';
import { VhostUserFrontend, VhostUserError } from '../vhost-user/frontend.js';
import { FrontendMemory } from '../vhost-user/frontend-memory.js';
import { closeQuietly } from '../vhost-user/message-channel.js';
import type { InflightDescription } from '../vhost-user/payloads.js';
import { ProtocolFeature, VHOST_USER_F_PROTOCOL_FEATURES, pbit } from '../vhost-user/protocol.js';

export const SECTOR_BYTES = 512;
/** The block of the load's patterns (a host page: Linux's virtio_blk data segments). */
export const BLOCK_BYTES = 4096;
/** What the client reads of the config space: struct virtio_blk_config through write_zeroes_may_unmap. */
const CONFIG_READ = 60;

export interface BlkClientOptions {
  socketPath: string;
  /** Request queues to use (capped by the device's num_queues; MQ is negotiated when > 1). Default 1. */
  numQueues?: number;
  /** Ring size (power of two). Default 128. */
  queueSize?: number;
  /** Requests in flight per queue at most (each has its own buffers). Default 32. */
  slotsPerQueue?: number;
  /** Largest data part of one request, a multiple of 512. Default 64 KiB. */
  maxDataBytes?: number;
  /** Data descriptors are at most this long (Linux: a page). Default 4096. */
  segmentBytes?: number;
  /** GET/SET_INFLIGHT_FD (default true). */
  inflight?: boolean;
  /** Negotiate VIRTIO_BLK_F_FLUSH (default true; without it the device is writethrough, §5.2.6.2). */
  flush?: boolean;
  eventIdx?: boolean;
  indirect?: boolean;
  /** Called when the connection ends (the back-end died or closed it). */
  onDisconnect?: (reason: string | null) => void;
}

export interface BlkResult {
  /** The status byte the device wrote (BlkStatus), or -1 if the used length did not cover it. */
  status: number;
  /** The used length (§2.7.8). */
  len: number;
}

interface Slot {
  queue: number;
  index: number;
  /** GPAs: header (16 bytes), status (1 byte), data (maxDataBytes), indirect table. */
  header: number;
  status: number;
  data: number;
  table: number;
}

interface Request {
  type: number;
  sector: number;
  /** Data to write (OUT) or bytes to read (IN/GET_ID). */
  out?: Uint8Array;
  inBytes: number;
  resolve(r: BlkResult & { data?: Uint8Array }): void;
  reject(e: Error): void;
  slot?: Slot;
}

const DEFAULTS = {
  numQueues: 1,
  queueSize: 128,
  slotsPerQueue: 32,
  maxDataBytes: 64 * 1024,
  segmentBytes: 4096,
  inflight: true,
  flush: true,
  eventIdx: true,
  indirect: true,
};

export class BlkClient {
  frontend: VhostUserFrontend;
  readonly ram: FrontendMemory;
  /** Negotiated virtio features (without bit 30). */
  features = 0n;
  protocolFeatures = 0n;
  /** From the config space (§5.2.4). */
  capacitySectors = 0;
  blkSize = SECTOR_BYTES;
  deviceQueues = 1;
  readOnly = false;
  /** Queues in use. */
  numQueues = 1;
  /** Error eventfd signals seen. */
  errSignals = 0;
  /** Connections made (1 after connect, +1 per reconnect). */
  connections = 0;
  readonly queues: DriverQueue<Request>[] = [];
  private readonly o: typeof DEFAULTS & BlkClientOptions;
  private readonly rings: { desc: number; avail: number; used: number }[] = [];
  private readonly slots: Slot[][] = [];
  private readonly freeSlots: Slot[][] = [];
  private readonly backlog: Request[][] = [];
  private kickFds: (number | null)[] = [];
  private callFds: (number | null)[] = [];
  private errFds: (number | null)[] = [];
  private watches: Watch[] = [];
  private inflightFd: number | null = null;
  private inflightDescription: InflightDescription | null = null;
  private nextQueue = 0;
  private closed = false;

  private constructor(options: BlkClientOptions) {
    this.o = { ...DEFAULTS, ...options };
    const o = this.o;
    if (o.maxDataBytes % SECTOR_BYTES !== 0 || o.maxDataBytes <= 0) throw new RangeError(`maxDataBytes ${o.maxDataBytes} is not a positive multiple of 512`);
    const maxQueues = o.numQueues;
    const perSlot = o.maxDataBytes;
    const descs = 2 + Math.ceil(o.maxDataBytes / o.segmentBytes);
    // Region 0: rings, headers, status bytes, indirect tables. Region 1: data buffers.
    const ringBytes = packedLayout(0, o.queueSize).bytes;
    const smallBytes = maxQueues * (ringBytes + 4096 + o.slotsPerQueue * (64 + descs * 16 + 16)) + 65536;
    const dataBytes = maxQueues * o.slotsPerQueue * perSlot + 65536;
    const round = (n: number) => Math.ceil(n / (1 << 20)) * (1 << 20);
    this.ram = new FrontendMemory([
      { guestAddr: 0, size: round(smallBytes) },
      { guestAddr: 0x1_0000_0000, size: round(dataBytes), mmapOffset: 0x2000 },
    ]);
    for (let q = 0; q < maxQueues; q++) {
      const base = this.ram.alloc(ringBytes, 4096, 0);
      const r = packedLayout(base, o.queueSize);
      this.rings.push({ desc: r.desc, avail: r.avail, used: r.used });
      const slots: Slot[] = [];
      for (let i = 0; i < o.slotsPerQueue; i++) {
        slots.push({
          queue: q,
          index: i,
          header: this.ram.alloc(HEADER_SIZE, 16, 0),
          status: this.ram.alloc(1, 1, 0),
          table: this.ram.alloc(descs * 16, 16, 0),
          data: this.ram.alloc(perSlot, 4096, 1),
        });
      }
      this.slots.push(slots);
      this.freeSlots.push([...slots].reverse());
      this.backlog.push([]);
    }
    this.frontend = this.connectFrontend();
  }

  /** Connects and performs the whole setup. */
  static async connect(options: BlkClientOptions): Promise<BlkClient> {
    const c = new BlkClient(options);
    try {
      await c.setup(true);
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  private connectFrontend(): VhostUserFrontend {
    this.connections++;
    const fe = VhostUserFrontend.connect(this.o.socketPath, {
      onClose: (reason) => {
        if (fe === this.frontend) this.o.onDisconnect?.(reason);
      },
    });
    return fe;
  }

  get connected(): boolean {
    return !this.frontend.isClosed;
  }

  private has(feature: number): boolean {
    return (this.protocolFeatures & pbit(feature)) !== 0n;
  }

  private async setup(fresh: boolean): Promise<void> {
    const o = this.o;
    const fe = this.frontend;
    await fe.setOwner();
    const offered = await fe.getFeatures();
    if ((offered & bit(VHOST_USER_F_PROTOCOL_FEATURES)) === 0n) throw new VhostUserError('back-end lacks VHOST_USER_F_PROTOCOL_FEATURES');
    const offeredProtocol = await fe.getProtocolFeatures();
    let p = pbit(ProtocolFeature.MQ) | pbit(ProtocolFeature.CONFIG) | pbit(ProtocolFeature.REPLY_ACK) | pbit(ProtocolFeature.STATUS);
    if (o.inflight) p |= pbit(ProtocolFeature.INFLIGHT_SHMFD);
    this.protocolFeatures = p & offeredProtocol;
    if (o.inflight && !this.has(ProtocolFeature.INFLIGHT_SHMFD)) throw new VhostUserError('back-end lacks VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD');
    await fe.setProtocolFeatures(this.protocolFeatures);
    fe.replyAck = this.has(ProtocolFeature.REPLY_ACK);
    const deviceQueues = this.has(ProtocolFeature.MQ) ? await fe.getQueueNum() : 1;

    // The config space: capacity, blk_size, num_queues (§5.2.4).
    const cfg = await fe.getConfig(0, CONFIG_READ);
    const v = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
    this.capacitySectors = Number(v.getBigUint64(BlkConfig.CAPACITY, true));
    let want = bit(FeatureBit.VERSION_1) | bit(BlkFeature.SEG_MAX) | bit(BlkFeature.BLK_SIZE);
    if (o.eventIdx) want |= bit(FeatureBit.RING_EVENT_IDX);
    if (o.indirect) want |= bit(FeatureBit.RING_INDIRECT_DESC);
    if (o.flush) want |= bit(BlkFeature.FLUSH);
    if (o.numQueues > 1) want |= bit(BlkFeature.MQ);
    want &= offered;
    if ((want & bit(FeatureBit.VERSION_1)) === 0n) throw new VhostUserError('back-end lacks VIRTIO_F_VERSION_1');
    this.readOnly = (offered & bit(BlkFeature.RO)) !== 0n;
    if (this.readOnly) want |= bit(BlkFeature.RO);
    if (want & bit(BlkFeature.BLK_SIZE)) this.blkSize = v.getUint32(BlkConfig.BLK_SIZE, true);
    this.deviceQueues = want & bit(BlkFeature.MQ) ? v.getUint16(BlkConfig.NUM_QUEUES, true) : 1;
    const n = Math.min(o.numQueues, this.deviceQueues, deviceQueues);
    if (!fresh && n !== this.numQueues) throw new VhostUserError(`the new back-end has ${n} queues, the rings are set up for ${this.numQueues}`);
    this.numQueues = n;
    this.features = want;

    await fe.setStatus(Status.ACKNOWLEDGE);
    await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
    await fe.setFeatures(want | bit(VHOST_USER_F_PROTOCOL_FEATURES));
    await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    const s = await fe.getStatus();
    if (!(s & Status.FEATURES_OK)) throw new VhostUserError(`FEATURES_OK refused (status ${s})`);
    await fe.setMemTable(this.ram.descriptions(), this.ram.fds);
    if (this.has(ProtocolFeature.INFLIGHT_SHMFD)) {
      if (this.inflightFd === null) {
        const got = await fe.getInflightFd(this.numQueues, o.queueSize);
        this.inflightFd = got.fd;
        this.inflightDescription = got.description;
      }
      await fe.setInflightFd(this.inflightDescription!, this.inflightFd);
    }
    if (fresh) this.makeQueues();
    this.dropNotifiers();
    for (let q = 0; q < this.numQueues; q++) await this.setupRing(q, fresh);
    await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  }

  private makeQueues(): void {
    this.queues.length = 0;
    for (let q = 0; q < this.numQueues; q++) {
      this.queues.push(
        new DriverQueue<Request>(this.ram.memory, ringViewsFromGuest(this.ram.memory, { size: this.o.queueSize, ...this.rings[q]! }), {
          eventIdx: (this.features & bit(FeatureBit.RING_EVENT_IDX)) !== 0n,
          indirect: (this.features & bit(FeatureBit.RING_INDIRECT_DESC)) !== 0n,
          // One table per slot: the request being added is the last token taken from its slot.
          allocIndirect: () => this.pendingTable,
          index: q,
        }),
      );
    }
  }

  /** The indirect table of the slot being added (allocIndirect is called synchronously by add). */
  private pendingTable: number | null = null;

  private async setupRing(q: number, fresh: boolean): Promise<void> {
    const fe = this.frontend;
    await fe.setVringNum(q, this.o.queueSize);
    // Like QEMU after a back-end died: the used index (a back-end with the inflight buffer knows better).
    await fe.setVringBase(q, fresh ? 0 : this.usedIdx(q));
    const r = this.rings[q]!;
    await fe.setVringAddr(q, { desc: this.ram.userAddr(r.desc), avail: this.ram.userAddr(r.avail), used: this.ram.userAddr(r.used) });
    const call = native.eventfd(0, true);
    this.callFds[q] = call;
    this.watches.push(
      native.watch(call, (err) => {
        if (err) return;
        native.eventfdRead(call);
        this.drainUsed(q);
      }),
    );
    await fe.setVringCall(q, call);
    const errFd = native.eventfd(0, true);
    this.errFds[q] = errFd;
    this.watches.push(
      native.watch(errFd, (err) => {
        if (err) return;
        const n = native.eventfdRead(errFd);
        if (n) this.errSignals += n;
      }),
    );
    await fe.setVringErr(q, errFd);
    const kick = native.eventfd(0, true);
    this.kickFds[q] = kick;
    await fe.setVringKick(q, kick);
    await fe.setVringEnable(q, true);
  }

  /** used.idx of queue `q` as the device published it. */
  usedIdx(q = 0): number {
    const v = ringViewsFromGuest(this.ram.memory, { size: this.o.queueSize, ...this.rings[q]! });
    return Atomics.load(v.used16, 1);
  }

  /** avail.idx of queue `q` as this driver published it. */
  availIdx(q = 0): number {
    const v = ringViewsFromGuest(this.ram.memory, { size: this.o.queueSize, ...this.rings[q]! });
    return Atomics.load(v.avail, 1);
  }

  // ------------------------------------------------------------------ requests

  /** VIRTIO_BLK_T_OUT of `data` (a multiple of 512 bytes, ≤ maxDataBytes) at `sector`. */
  write(sector: number, data: Uint8Array, queue?: number): Promise<BlkResult> {
    if (data.length % SECTOR_BYTES !== 0 || data.length > this.o.maxDataBytes) throw new RangeError(`write of ${data.length} bytes`);
    return this.request({ type: BlkType.OUT, sector, out: data, inBytes: 0 }, queue);
  }

  /** VIRTIO_BLK_T_IN of `bytes` at `sector`; `data` holds what the device wrote (when OK). */
  read(sector: number, bytes: number, queue?: number): Promise<BlkResult & { data: Uint8Array }> {
    if (bytes % SECTOR_BYTES !== 0 || bytes > this.o.maxDataBytes) throw new RangeError(`read of ${bytes} bytes`);
    return this.request({ type: BlkType.IN, sector, inBytes: bytes }, queue) as Promise<BlkResult & { data: Uint8Array }>;
  }

  /** VIRTIO_BLK_T_FLUSH. */
  flush(queue?: number): Promise<BlkResult> {
    return this.request({ type: BlkType.FLUSH, sector: 0, inBytes: 0 }, queue);
  }

  /** VIRTIO_BLK_T_GET_ID: the serial, NULs removed. */
  async getId(): Promise<string> {
    const r = (await this.request({ type: BlkType.GET_ID, sector: 0, inBytes: ID_BYTES })) as BlkResult & { data: Uint8Array };
    if (r.status !== BlkStatus.OK) throw new VhostUserError(`GET_ID: status ${r.status}`);
    return Buffer.from(r.data).toString('latin1').replace(/\0+$/, '');
  }

  private request(partial: Omit<Request, 'resolve' | 'reject'>, queue?: number): Promise<BlkResult & { data?: Uint8Array }> {
    if (this.closed) return Promise.reject(new VhostUserError('closed'));
    const q = queue ?? this.nextQueue++ % this.numQueues;
    if (q < 0 || q >= this.numQueues) throw new RangeError(`queue ${q}`);
    return new Promise((resolve, reject) => {
      this.backlog[q]!.push({ ...partial, resolve, reject });
      this.submit(q);
    });
  }

  /** Places backlogged requests of queue `q` while slots and descriptors last; one publish, one kick decision. */
  private submit(q: number): void {
    if (this.closed) return;
    const vq = this.queues[q]!;
    const backlog = this.backlog[q]!;
    const free = this.freeSlots[q]!;
    const seg = this.o.segmentBytes;
    let added = 0;
    while (backlog.length > 0 && free.length > 0) {
      const r = backlog[0]!;
      const slot = free[free.length - 1]!;
      const mem = this.ram.memory;
      const h = new DataView(new ArrayBuffer(HEADER_SIZE));
      h.setUint32(0, r.type, true);
      h.setUint32(4, 0, true);
      h.setBigUint64(8, BigInt(r.sector), true);
      mem.write(slot.header, new Uint8Array(h.buffer));
      mem.slice(slot.status, 1)[0] = 0xff; // not a status: a used length short of it shows
      const out: SgBuffer[] = [{ addr: slot.header, len: HEADER_SIZE }];
      const inn: SgBuffer[] = [];
      const dataLen = r.out ? r.out.length : r.inBytes;
      if (r.out) mem.write(slot.data, r.out);
      for (let at = 0; at < dataLen; at += seg) (r.out ? out : inn).push({ addr: slot.data + at, len: Math.min(seg, dataLen - at) });
      inn.push({ addr: slot.status, len: 1 });
      r.slot = slot;
      this.pendingTable = slot.table;
      const ok = vq.add(out, inn, r, false);
      this.pendingTable = null;
      if (!ok) break;
      free.pop();
      backlog.shift();
      added++;
    }
    if (added === 0) return;
    vq.publish();
    const kick = this.kickFds[q];
    if (vq.needsKick() && kick !== null && kick !== undefined) native.eventfdWrite(kick, 1);
  }

  /** Takes every used buffer of queue `q`, re-enabling callbacks with the re-check (§2.7.14). */
  private drainUsed(q: number): void {
    if (this.closed) return;
    const vq = this.queues[q]!;
    try {
      do {
        vq.disableCallbacks();
        let u;
        while ((u = vq.getUsed()) !== null) {
          const r = u.token;
          const slot = r.slot!;
          const writable = r.inBytes + 1;
          const status = u.len >= writable ? this.ram.memory.slice(slot.status, 1)[0]! : -1;
          const data = r.inBytes > 0 ? this.ram.memory.slice(slot.data, r.inBytes).slice() : undefined;
          this.freeSlots[q]!.push(slot);
          r.resolve(data ? { status, len: u.len, data } : { status, len: u.len });
        }
      } while (!vq.enableCallbacks());
    } catch (e) {
      for (const r of vq.detachUnused()) r.reject(e as Error);
    }
    this.submit(q);
  }

  /** Requests waiting for a slot or in the rings. */
  get outstanding(): number {
    let n = 0;
    for (let q = 0; q < this.numQueues; q++) n += this.backlog[q]!.length + this.o.slotsPerQueue - this.freeSlots[q]!.length;
    return n;
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * After the back-end went away: connects again (to `socketPath`, default the same) and sets
   * everything up over the same RAM, rings and inflight buffer. Requests in flight complete
   * when the new back-end resubmits them.
   */
  async reconnect(socketPath = this.o.socketPath): Promise<void> {
    const old = this.frontend;
    this.o.socketPath = socketPath;
    this.frontend = this.connectFrontend();
    old.close();
    await this.setup(false);
    for (let q = 0; q < this.numQueues; q++) this.drainUsed(q);
  }

  private dropNotifiers(): void {
    for (const w of this.watches.splice(0)) w.stop();
    for (const fd of [...this.kickFds, ...this.callFds, ...this.errFds]) closeQuietly(fd ?? null);
    this.kickFds = [];
    this.callFds = [];
    this.errFds = [];
  }

  /** Closes the connection and frees RAM and fds; requests still pending are rejected. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dropNotifiers();
    this.frontend.close();
    for (const vq of this.queues) for (const r of vq.detachUnused()) r.reject(new VhostUserError('closed'));
    for (const b of this.backlog) for (const r of b.splice(0)) r.reject(new VhostUserError('closed'));
    closeQuietly(this.inflightFd);
    this.inflightFd = null;
    this.ram.close();
  }
}

// ==================================================================== self-describing blocks

const MAGIC = 0x4b425456; // 'VTBK'

/**
 * Fills `into` (BLOCK_BYTES) with version `seq` of block `block`: magic, the block number, its
 * first sector, `seq`, then a xorshift stream seeded by (block, seq), so a block torn,
 * misplaced or from another version is told apart from the right one. Version 0 is all zeroes
 * (a fresh image).
 */
export function fillBlock(into: Uint8Array, block: number, seq: number): void {
  if (into.length !== BLOCK_BYTES) throw new RangeError('a block is 4096 bytes');
  if (seq === 0) {
    into.fill(0);
    return;
  }
  const w = new Uint32Array(into.buffer, into.byteOffset, BLOCK_BYTES / 4);
  w[0] = MAGIC;
  w[1] = block;
  w[2] = block * (BLOCK_BYTES / SECTOR_BYTES);
  w[3] = seq;
  let x = (Math.imul(block + 1, 0x9e3779b1) ^ Math.imul(seq, 0x85ebca6b) ^ 0x27d4eb2f) >>> 0 || 1;
  for (let i = 4; i < w.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w[i] = x >>> 0;
  }
}

const scratch = new Uint8Array(BLOCK_BYTES);

/**
 * Which version of block `block` `bytes` holds: its seq (0 for all zeroes), or -1 when it is
 * no version at all (torn, another block's, garbage).
 */
export function blockVersion(bytes: Uint8Array, block: number): number {
  const w = new Uint32Array(bytes.buffer, bytes.byteOffset, 4);
  if (w[0] !== MAGIC) return bytes.every((b) => b === 0) ? 0 : -1;
  if (w[1] !== block || w[2] !== block * (BLOCK_BYTES / SECTOR_BYTES)) return -1;
  const seq = w[3]!;
  if (seq === 0) return -1;
  fillBlock(scratch, block, seq);
  return Buffer.compare(Buffer.from(bytes.buffer, bytes.byteOffset, BLOCK_BYTES), Buffer.from(scratch.buffer)) === 0 ? seq : -1;
}

/** A small seeded PRNG (mulberry32), so a failing run can be repeated from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ==================================================================== the load and its ledger

export interface BlkLoadOptions {
  /** Blocks (4 KiB) of the disk the load uses, from block 0. */
  blocks: number;
  /** Requests kept in flight. Default 16. */
  depth?: number;
  /** Most blocks one write or read covers. Default 4. */
  maxBlocksPerRequest?: number;
  /** Fractions of reads and flushes among requests (the rest are writes). Defaults 0.15, 0.03. */
  readFraction?: number;
  flushFraction?: number;
  seed: number;
}

export interface BlkLoadStats {
  writesIssued: number;
  writesAcked: number;
  readsOk: number;
  flushesAcked: number;
  /** Requests answered with a status other than OK. */
  notOk: number;
}

/**
 * Keeps `depth` requests in flight over a BlkClient: writes of 1..maxBlocksPerRequest blocks
 * at random places, each block a new version ({@link fillBlock}); reads that check what they
 * get against the ledger; flushes. No request touches a block another request in flight
 * touches (as a file system never has two writes of one block in flight), so each block has
 * at most one unacknowledged version at any time.
 *
 * The ledger: for every block, the latest version whose write was acknowledged (used element,
 * status OK) and the version in flight, if any. `verify(image)` checks that every block of an
 * image holds its acknowledged version or the one in flight (which may or may not have landed).
 */
export class BlkLoad {
  readonly stats: BlkLoadStats = { writesIssued: 0, writesAcked: 0, readsOk: 0, flushesAcked: 0, notOk: 0 };
  /** Problems seen by reads and completions (a wrong status, a read of a version the ledger rules out). */
  readonly problems: string[] = [];
  /** Per block: the latest acknowledged version. */
  readonly acked: Uint32Array;
  /** Per block: the version in flight (0: none). */
  readonly pending: Uint32Array;
  private readonly busy: Uint8Array;
  private readonly depth: number;
  private readonly maxBlocks: number;
  private readonly readFraction: number;
  private readonly flushFraction: number;
  private readonly random: () => number;
  private seq = 0;
  private inFlight = 0;
  private running = false;
  private idleWaiters: (() => void)[] = [];
  /** Called (synchronously, in the tick its used element is taken) with each FLUSH acknowledged: how many writes had been acknowledged when it was sent. */
  onFlushAck?: (coveredWrites: number) => void;

  constructor(
    private readonly client: BlkClient,
    readonly options: BlkLoadOptions,
  ) {
    this.acked = new Uint32Array(options.blocks);
    this.pending = new Uint32Array(options.blocks);
    this.busy = new Uint8Array(options.blocks);
    this.depth = options.depth ?? 16;
    this.maxBlocks = options.maxBlocksPerRequest ?? 4;
    this.readFraction = options.readFraction ?? 0.15;
    this.flushFraction = options.flushFraction ?? 0.03;
    this.random = prng(options.seed);
    const capBlocks = Math.floor(client.capacitySectors / (BLOCK_BYTES / SECTOR_BYTES));
    if (options.blocks > capBlocks) throw new RangeError(`${options.blocks} blocks; the disk has ${capBlocks}`);
  }

  /** Requests in flight. */
  get outstanding(): number {
    return this.inFlight;
  }

  /** Starts (or resumes) issuing requests. */
  start(): void {
    this.running = true;
    this.fill();
  }

  /** Stops issuing new requests (those in flight go on). */
  pause(): void {
    this.running = false;
  }

  /** Resolves when nothing is in flight. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private fill(): void {
    while (this.running && this.inFlight < this.depth) if (!this.issue()) break;
  }

  /** A run of `n` free blocks, or -1 after a few tries. */
  private freeRun(n: number): number {
    for (let tries = 0; tries < 32; tries++) {
      const start = Math.floor(this.random() * (this.options.blocks - n + 1));
      let ok = true;
      for (let b = start; b < start + n; b++) if (this.busy[b]) ok = false;
      if (ok) return start;
    }
    return -1;
  }

  private issue(): boolean {
    const x = this.random();
    if (x < this.flushFraction) {
      this.flushNow();
      return true;
    }
    const n = 1 + Math.floor(this.random() * this.maxBlocks);
    const start = this.freeRun(n);
    if (start < 0) return false;
    if (x < this.flushFraction + this.readFraction) this.readBlocks(start, n);
    else this.writeBlocks(start, n);
    return true;
  }

  private begin(): void {
    this.inFlight++;
  }

  private end(): void {
    this.inFlight--;
    if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    this.fill();
  }

  /** Writes a new version of blocks [start, start + n). */
  writeBlocks(start: number, n: number): Promise<void> {
    const data = new Uint8Array(n * BLOCK_BYTES);
    const seqs: number[] = [];
    for (let i = 0; i < n; i++) {
      const b = start + i;
      const seq = ++this.seq;
      seqs.push(seq);
      fillBlock(data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES), b, seq);
      this.busy[b] = 1;
      this.pending[b] = seq;
    }
    this.stats.writesIssued++;
    this.begin();
    return this.client.write(start * (BLOCK_BYTES / SECTOR_BYTES), data).then(
      (r) => {
        for (let i = 0; i < n; i++) {
          const b = start + i;
          this.busy[b] = 0;
          this.pending[b] = 0;
          // Only an OK status is an acknowledgement.
          if (r.status === BlkStatus.OK) this.acked[b] = seqs[i]!;
        }
        if (r.status === BlkStatus.OK) this.stats.writesAcked++;
        else this.notOk(`write of blocks ${start}+${n}: status ${r.status} (len ${r.len})`);
        this.end();
      },
      (e: Error) => {
        this.problems.push(`write of blocks ${start}+${n} failed: ${e.message}`);
        this.end();
      },
    );
  }

  private readBlocks(start: number, n: number): void {
    for (let b = start; b < start + n; b++) this.busy[b] = 1;
    this.begin();
    this.client.read(start * (BLOCK_BYTES / SECTOR_BYTES), n * BLOCK_BYTES).then(
      (r) => {
        for (let b = start; b < start + n; b++) this.busy[b] = 0;
        if (r.status !== BlkStatus.OK) this.notOk(`read of blocks ${start}+${n}: status ${r.status}`);
        else {
          this.stats.readsOk++;
          for (let i = 0; i < n; i++) {
            const b = start + i;
            const got = blockVersion(r.data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES), b);
            if (got !== this.acked[b]) this.problems.push(`read of block ${b}: version ${got}, the latest acknowledged is ${this.acked[b]}`);
          }
        }
        this.end();
      },
      (e: Error) => {
        this.problems.push(`read of blocks ${start}+${n} failed: ${e.message}`);
        this.end();
      },
    );
  }

  /** Sends a FLUSH now; resolves with whether it was acknowledged. */
  flushNow(): Promise<boolean> {
    const covered = this.stats.writesAcked;
    this.begin();
    return this.client.flush().then(
      (r) => {
        const ok = r.status === BlkStatus.OK;
        if (ok) {
          this.stats.flushesAcked++;
          this.onFlushAck?.(covered);
        } else this.notOk(`flush: status ${r.status}`);
        this.end();
        return ok;
      },
      (e: Error) => {
        this.problems.push(`flush failed: ${e.message}`);
        this.end();
        return false;
      },
    );
  }

  private notOk(what: string): void {
    this.stats.notOk++;
    if (this.problems.length < 50) this.problems.push(what);
  }

  /**
   * Checks an image (its first `blocks` blocks) against the ledger: every block holds its
   * latest acknowledged version, or the version in flight. Returns the blocks that do not
   * (at most `limit` described), and how many blocks held the in-flight version.
   */
  verify(image: Uint8Array, limit = 20): { bad: string[]; badCount: number; inFlightLanded: number } {
    const bad: string[] = [];
    let badCount = 0;
    let inFlightLanded = 0;
    for (let b = 0; b < this.options.blocks; b++) {
      const got = blockVersion(image.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES), b);
      const want = this.acked[b]!;
      const maybe = this.pending[b]!;
      if (got === want) continue;
      if (maybe !== 0 && got === maybe) {
        inFlightLanded++;
        continue;
      }
      badCount++;
      if (bad.length < limit) bad.push(`block ${b}: version ${got}, acknowledged ${want}${maybe ? `, in flight ${maybe}` : ''}`);
    }
    return { bad, badCount, inFlightLanded };
  }
}
