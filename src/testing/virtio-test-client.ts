/**
 * A virtio-test driver that talks to a vhost-user back-end through the TypeScript front-end:
 * guest RAM in memfds, one split virtqueue driven by our DriverQueue, kick and call
 * eventfds, and the whole setup sequence a front-end performs (the order QEMU and
 * virtio_uml use): SET_OWNER, features, protocol features, back-end channel, memory,
 * inflight buffer, then per ring NUM, BASE, ADDR, CALL, ERR, KICK, ENABLE, and DRIVER_OK.
 *
 * `request(n)` sends the seed's request for byte n and resolves with the device's answer;
 * `requestMany` submits a batch with a single kick. Completions come from the call eventfd
 * watched on the event loop (or from polling the used ring when no call fd is used).
 *
 * `reconnect` is what a front-end does after its back-end died: a new connection is set
 * up over the same guest RAM and rings, the inflight buffer is handed back, and requests
 * that were in flight complete when the new back-end resubmits them.
 */
import { FeatureBit, Status, bit } from '../virtio/constants.js';
import { DriverQueue } from '../virtio/driver-queue.js';
import { ringViewsFromGuest } from '../virtio/ring-views.js';
import { packedLayout } from '../virtio/split-ring.js';
import {
  REQUEST_SIZE,
  RESPONSE_SIZE,
  VIRTIO_TEST_F_CAN_PRINT,
  decodeResponse,
  encodeRequest,
  requestFor,
  type TestRequest,
  type TestResponse,
} from '../devices/virtio-test/protocol.js';
import { native, type Watch } from '../vhost-user/native/index.js';
import { VhostUserFrontend, VhostUserError } from '../vhost-user/frontend.js';
import { FrontendMemory, type RamRegionSpec } from '../vhost-user/frontend-memory.js';
import { closeQuietly } from '../vhost-user/message-channel.js';
import type { InflightDescription } from '../vhost-user/payloads.js';
import { ProtocolFeature, VHOST_USER_F_PROTOCOL_FEATURES, pbit } from '../vhost-user/protocol.js';

export interface VirtioTestClientOptions {
  socketPath: string;
  /** Ring size (power of two). Default 128. */
  queueSize?: number;
  /** Guest RAM layout. Default: two regions (rings in the first, buffers in the second). */
  regions?: readonly RamRegionSpec[];
  /** Negotiate VIRTIO_F_RING_EVENT_IDX (default true). */
  eventIdx?: boolean;
  /** Negotiate VIRTIO_F_INDIRECT_DESC and use indirect tables (default true). */
  indirect?: boolean;
  /** Negotiate VHOST_USER_F_PROTOCOL_FEATURES at all (default true). */
  protocolFeatures?: boolean;
  /** REPLY_ACK: every request without a reply is acknowledged (default true). */
  replyAck?: boolean;
  /** PROTOCOL_F_STATUS: send SET_STATUS like QEMU (default true); false behaves like virtio_uml. */
  status?: boolean;
  /** Set up the back-end channel for config change notifications (default true). */
  backendChannel?: boolean;
  /** Use GET/SET_INFLIGHT_FD (default false). */
  inflight?: boolean;
  /** Send memory with ADD_MEM_REG (CONFIGURE_MEM_SLOTS) instead of SET_MEM_TABLE (default false). */
  memSlots?: boolean;
  /** Kick with an eventfd (default) or not at all (the back-end polls). */
  kickFd?: boolean;
  /** Completions through a call eventfd (default) or by polling the used ring. */
  callFd?: boolean;
  /** Pass an error eventfd (default true). */
  errFd?: boolean;
  /** Called for each BACKEND_CONFIG_CHANGE_MSG. */
  onConfigChange?: () => void;
}

/** A request in flight on the client: its token and what resolves it. */
export interface Pending {
  slot: number;
  resolve(r: TestResponse): void;
  reject(e: Error): void;
}

interface Submission {
  out: { addr: number; len: number }[];
  inn: { addr: number; len: number }[];
  pending: Pending;
}

/** One request slot: 48-byte request then 12-byte response, 64 bytes apart. */
const SLOT_BYTES = 64;
const DEFAULT_REGIONS: readonly RamRegionSpec[] = [
  { guestAddr: 0, size: 1 << 20 },
  { guestAddr: 0x4000_0000, size: 4 << 20, mmapOffset: 0x3000 },
];

export class VirtioTestClient {
  frontend: VhostUserFrontend;
  readonly ram: FrontendMemory;
  readonly queueSize: number;
  /** Negotiated virtio features (without bit 30). */
  features = 0n;
  protocolFeatures = 0n;
  queue!: DriverQueue<Pending>;
  /** Error eventfd signals seen. */
  errSignals = 0;
  private readonly options: Required<Omit<VirtioTestClientOptions, 'regions' | 'onConfigChange'>> & VirtioTestClientOptions;
  private kickFd: number | null = null;
  private callFd: number | null = null;
  private errFd: number | null = null;
  private callWatch: Watch | null = null;
  private errWatch: Watch | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private readonly slots: number[] = [];
  private readonly freeSlots: number[] = [];
  private readonly indirectTables: number[] = [];
  private readonly backlog: Submission[] = [];
  private ring = { desc: 0, avail: 0, used: 0 };
  private inflightFd: number | null = null;
  private inflightDescription: InflightDescription | null = null;
  private closed = false;

  private constructor(options: VirtioTestClientOptions) {
    this.options = {
      queueSize: 128,
      eventIdx: true,
      indirect: true,
      protocolFeatures: true,
      replyAck: true,
      status: true,
      backendChannel: true,
      inflight: false,
      memSlots: false,
      kickFd: true,
      callFd: true,
      errFd: true,
      ...options,
    };
    this.queueSize = this.options.queueSize;
    this.ram = new FrontendMemory(options.regions ?? DEFAULT_REGIONS);
    this.frontend = this.connectFrontend();
    const bufferRegion = this.ram.regions.length > 1 ? 1 : 0;
    const layout = packedLayout(0, this.queueSize);
    const base = this.ram.alloc(layout.bytes, 4096, 0);
    const ring = packedLayout(base, this.queueSize);
    this.ring = { desc: ring.desc, avail: ring.avail, used: ring.used };
    for (let i = 0; i < this.queueSize; i++) {
      const slot = this.ram.alloc(SLOT_BYTES, 64, bufferRegion);
      this.slots.push(slot);
      this.freeSlots.push(i);
      this.indirectTables.push(this.ram.alloc(32, 16, bufferRegion));
    }
  }

  /** Connects and performs the whole setup. */
  static async connect(options: VirtioTestClientOptions): Promise<VirtioTestClient> {
    const c = new VirtioTestClient(options);
    try {
      await c.setup(true);
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  private connectFrontend(): VhostUserFrontend {
    return VhostUserFrontend.connect(this.options.socketPath, { onConfigChange: () => this.options.onConfigChange?.() });
  }

  /** The eventfd/ring setup; `fresh` builds a new driver queue (zeroed rings). */
  private async setup(fresh: boolean, newConnection = true): Promise<void> {
    const o = this.options;
    const fe = this.frontend;
    if (newConnection) await fe.setOwner();
    const offered = await fe.getFeatures();
    let want = bit(VIRTIO_TEST_F_CAN_PRINT) | bit(FeatureBit.VERSION_1);
    if (o.eventIdx) want |= bit(FeatureBit.RING_EVENT_IDX);
    if (o.indirect) want |= bit(FeatureBit.RING_INDIRECT_DESC);
    const usesProtocol = o.protocolFeatures && (offered & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n;
    if (usesProtocol) {
      const offeredProtocol = await fe.getProtocolFeatures();
      let p = pbit(ProtocolFeature.MQ) | pbit(ProtocolFeature.CONFIG);
      if (o.replyAck) p |= pbit(ProtocolFeature.REPLY_ACK);
      if (o.status) p |= pbit(ProtocolFeature.STATUS);
      if (o.backendChannel) p |= pbit(ProtocolFeature.BACKEND_REQ);
      if (o.inflight) p |= pbit(ProtocolFeature.INFLIGHT_SHMFD);
      if (o.memSlots) p |= pbit(ProtocolFeature.CONFIGURE_MEM_SLOTS);
      p |= pbit(ProtocolFeature.RESET_DEVICE);
      this.protocolFeatures = p & offeredProtocol;
      await fe.setProtocolFeatures(this.protocolFeatures);
      fe.replyAck = this.has(ProtocolFeature.REPLY_ACK);
      if (this.has(ProtocolFeature.BACKEND_REQ)) await fe.setBackendReqFd();
      want |= bit(VHOST_USER_F_PROTOCOL_FEATURES);
    }
    this.features = want & offered & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
    if ((want & offered) !== want) {
      throw new VhostUserError(`back-end lacks features 0x${(want & ~offered).toString(16)}`);
    }
    if (this.has(ProtocolFeature.STATUS)) {
      await fe.setStatus(Status.ACKNOWLEDGE);
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
    }
    await fe.setFeatures(want);
    if (this.has(ProtocolFeature.STATUS)) {
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
      const s = await fe.getStatus();
      if (!(s & Status.FEATURES_OK)) throw new VhostUserError(`FEATURES_OK refused (status ${s})`);
    }
    if (this.has(ProtocolFeature.CONFIGURE_MEM_SLOTS) && !newConnection) {
      // The back-end keeps its memory table across a device reset; ADD_MEM_REG only adds.
    } else if (this.has(ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
      const slots = await fe.getMaxMemSlots();
      if (slots < this.ram.regions.length) throw new VhostUserError(`back-end has ${slots} memory slots`);
      const d = this.ram.descriptions();
      for (let i = 0; i < d.length; i++) await fe.addMemReg(d[i]!, this.ram.fds[i]!);
    } else {
      await fe.setMemTable(this.ram.descriptions(), this.ram.fds);
    }
    if (this.has(ProtocolFeature.INFLIGHT_SHMFD)) {
      if (this.inflightFd === null) {
        const got = await fe.getInflightFd(1, this.queueSize);
        this.inflightFd = got.fd;
        this.inflightDescription = got.description;
      }
      await fe.setInflightFd(this.inflightDescription!, this.inflightFd);
    }
    if (fresh) this.makeQueue();
    await this.setupRing(fresh);
    if (this.has(ProtocolFeature.STATUS)) {
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    }
    await this.barrier();
  }

  /** Without REPLY_ACK nothing says the back-end has processed our requests: a request with a reply does (virtio_uml uses GET_FEATURES the same way). */
  async barrier(): Promise<void> {
    if (!this.frontend.replyAck) await this.frontend.getFeatures();
  }

  private has(feature: number): boolean {
    return (this.protocolFeatures & pbit(feature)) !== 0n;
  }

  private makeQueue(): void {
    const tables = [...this.indirectTables];
    const freeTables = tables.slice();
    this.queue = new DriverQueue<Pending>(
      this.ram.memory,
      ringViewsFromGuest(this.ram.memory, { size: this.queueSize, ...this.ring }),
      {
        eventIdx: (this.features & bit(FeatureBit.RING_EVENT_IDX)) !== 0n,
        indirect: (this.features & bit(FeatureBit.RING_INDIRECT_DESC)) !== 0n,
        allocIndirect: (bytes) => (bytes <= 32 ? (freeTables.pop() ?? null) : null),
        freeIndirect: (addr) => void freeTables.push(addr),
      },
    );
  }

  private async setupRing(fresh: boolean, base?: number): Promise<void> {
    const fe = this.frontend;
    const o = this.options;
    this.dropNotifiers();
    await fe.setVringNum(0, this.queueSize);
    // After a back-end restart the front-end cannot ask where the ring stood; like QEMU it
    // starts from the used index (a back-end with an inflight buffer knows better).
    await fe.setVringBase(0, base ?? (fresh ? 0 : this.usedIdx()));
    await fe.setVringAddr(0, {
      desc: this.ram.userAddr(this.ring.desc),
      avail: this.ram.userAddr(this.ring.avail),
      used: this.ram.userAddr(this.ring.used),
    });
    if (o.callFd) {
      this.callFd = native.eventfd(0, true);
      const fd = this.callFd;
      this.callWatch = native.watch(fd, (err) => {
        if (err) return;
        native.eventfdRead(fd);
        this.drainUsed();
      });
      await fe.setVringCall(0, fd);
    } else {
      await fe.setVringCall(0, null);
      this.pollTimer = setInterval(() => this.drainUsed(), 1);
    }
    if (o.errFd) {
      this.errFd = native.eventfd(0, true);
      const fd = this.errFd;
      this.errWatch = native.watch(fd, (err) => {
        if (err) return;
        const n = native.eventfdRead(fd);
        if (n) this.errSignals += n;
      });
      await fe.setVringErr(0, fd);
    }
    if (o.kickFd) {
      this.kickFd = native.eventfd(0, true);
      await fe.setVringKick(0, this.kickFd);
    } else {
      await fe.setVringKick(0, null);
    }
    if (this.options.protocolFeatures) await fe.setVringEnable(0, true);
  }

  /**
   * Sets the ring up again on the same connection (after GET_VRING_BASE stopped it): NUM,
   * BASE = `base` (default: the used index), ADDR, new CALL/ERR/KICK fds, ENABLE.
   */
  async restartRing(base?: number): Promise<void> {
    await this.setupRing(false, base);
    await this.barrier();
    this.drainUsed();
  }

  /** The kick eventfd (null when the back-end polls). */
  get kickEventFd(): number | null {
    return this.kickFd;
  }

  /** used.idx as the device published it. */
  usedIdx(): number {
    const v = ringViewsFromGuest(this.ram.memory, { size: this.queueSize, ...this.ring });
    return Atomics.load(v.used16, 1);
  }

  /** avail.idx as this driver published it. */
  availIdx(): number {
    const v = ringViewsFromGuest(this.ram.memory, { size: this.queueSize, ...this.ring });
    return Atomics.load(v.avail, 1);
  }

  // ------------------------------------------------------------------ requests

  /** Sends the seed's request for byte `n` (or any request) and resolves with the answer. */
  request(n: number | TestRequest): Promise<TestResponse> {
    return new Promise((resolve, reject) => {
      this.enqueue(typeof n === 'number' ? requestFor(n) : n, { slot: -1, resolve, reject });
      this.submit();
    });
  }

  /** Submits all requests with as few kicks as the ring allows (batched publishing). */
  requestMany(ns: readonly (number | TestRequest)[]): Promise<TestResponse[]> {
    const all = ns.map(
      (n) =>
        new Promise<TestResponse>((resolve, reject) =>
          this.enqueue(typeof n === 'number' ? requestFor(n) : n, { slot: -1, resolve, reject }),
        ),
    );
    this.submit();
    return Promise.all(all);
  }

  /**
   * Makes a raw chain available (readable lengths `out`, writable lengths `inn`, carved
   * from one slot): for tests that send what the device must refuse.
   */
  submitRaw(outLens: readonly number[], inLens: readonly number[]): Promise<TestResponse> {
    return new Promise((resolve, reject) => {
      const pending: Pending = { slot: -1, resolve, reject };
      const sub: Submission = { out: [], inn: [], pending };
      this.backlog.push(sub);
      (sub as Submission & { raw?: [readonly number[], readonly number[]] }).raw = [outLens, inLens];
      this.submit();
    });
  }

  private enqueue(req: TestRequest, pending: Pending): void {
    const sub: Submission = { out: [], inn: [], pending };
    (sub as Submission & { req?: TestRequest }).req = req;
    this.backlog.push(sub);
  }

  /** Adds as many backlogged submissions as there are slots and descriptors; one publish, one kick decision. */
  private submit(): void {
    if (this.closed) return;
    let added = 0;
    while (this.backlog.length > 0 && this.freeSlots.length > 0) {
      const sub = this.backlog[0]! as Submission & { req?: TestRequest; raw?: [readonly number[], readonly number[]] };
      const slotIndex = this.freeSlots[this.freeSlots.length - 1]!;
      const addr = this.slots[slotIndex]!;
      if (sub.req) {
        encodeRequest(sub.req, this.ram.memory.slice(addr, REQUEST_SIZE));
        this.ram.memory.slice(addr + REQUEST_SIZE, RESPONSE_SIZE).fill(0);
        sub.out = [{ addr, len: REQUEST_SIZE }];
        sub.inn = [{ addr: addr + REQUEST_SIZE, len: RESPONSE_SIZE }];
      } else if (sub.raw) {
        let at = addr;
        sub.out = sub.raw[0].map((len) => ({ addr: (at += len) - len, len }));
        sub.inn = sub.raw[1].map((len) => ({ addr: (at += len) - len, len }));
      }
      sub.pending.slot = slotIndex;
      if (!this.queue.add(sub.out, sub.inn, sub.pending, false)) break;
      this.freeSlots.pop();
      this.backlog.shift();
      added++;
    }
    if (added === 0) return;
    this.queue.publish();
    if (this.queue.needsKick() && this.kickFd !== null) native.eventfdWrite(this.kickFd, 1);
  }

  /** Takes every used buffer, re-enabling callbacks with the re-check (§2.7.14). */
  private drainUsed(): void {
    if (this.closed) return;
    try {
      do {
        this.queue.disableCallbacks();
        let u;
        while ((u = this.queue.getUsed()) !== null) {
          const p = u.token;
          const addr = this.slots[p.slot]!;
          this.freeSlots.push(p.slot);
          if (u.len < RESPONSE_SIZE) p.reject(new VhostUserError(`used length ${u.len}, expected ${RESPONSE_SIZE}`));
          else p.resolve(decodeResponse(this.ram.memory.slice(addr + REQUEST_SIZE, RESPONSE_SIZE)));
        }
      } while (!this.queue.enableCallbacks());
    } catch (e) {
      for (const p of this.queue.detachUnused()) p.reject(e as Error);
    }
    this.submit();
  }

  // ------------------------------------------------------------------ config, status

  /** The 12-byte config space: num_pages, actual, event. */
  async readConfig(): Promise<{ numPages: number; actual: number; event: number }> {
    const b = await this.frontend.getConfig(0, 12);
    const v = new DataView(b.buffer, b.byteOffset, 12);
    return { numPages: v.getUint32(0, true), actual: v.getUint32(4, true), event: v.getUint32(8, true) };
  }

  status(): Promise<number> {
    return this.frontend.getStatus();
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * Device reset and a new negotiation on the same connection (possibly with other
   * options): rings stopped with GET_VRING_BASE, status 0 (or RESET_DEVICE), requests in
   * flight are failed, then the whole setup again with fresh rings.
   */
  async reset(options: Partial<VirtioTestClientOptions> = {}): Promise<void> {
    const fe = this.frontend;
    await fe.getVringBase(0);
    // GET_VRING_BASE drained the ring: answers the back-end published before its reply are ours.
    this.drainUsed();
    if (this.has(ProtocolFeature.STATUS)) await fe.setStatus(0);
    else if (this.has(ProtocolFeature.RESET_DEVICE)) await fe.resetDevice();
    for (const p of this.queue.detachUnused()) p.reject(new VhostUserError('device reset'));
    for (const sub of this.backlog.splice(0)) sub.pending.reject(new VhostUserError('device reset'));
    this.freeSlots.length = 0;
    for (let i = 0; i < this.queueSize; i++) this.freeSlots.push(i);
    Object.assign(this.options, options);
    this.dropInflight();
    await this.setup(true, false);
  }

  /**
   * After the back-end went away: connects again (same socket path unless given) and sets
   * everything up over the same RAM and rings. With the inflight buffer, requests that were
   * in flight are completed by the new back-end.
   */
  async reconnect(socketPath = this.options.socketPath): Promise<void> {
    this.frontend.close();
    this.options.socketPath = socketPath;
    this.frontend = this.connectFrontend();
    await this.setup(false);
    this.drainUsed();
  }

  /** Requests waiting for a free slot or in the ring. */
  get outstanding(): number {
    return this.backlog.length + this.queue.inFlight;
  }

  private dropNotifiers(): void {
    this.callWatch?.stop();
    this.callWatch = null;
    this.errWatch?.stop();
    this.errWatch = null;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
    closeQuietly(this.kickFd);
    closeQuietly(this.callFd);
    closeQuietly(this.errFd);
    this.kickFd = this.callFd = this.errFd = null;
  }

  private dropInflight(): void {
    closeQuietly(this.inflightFd);
    this.inflightFd = null;
    this.inflightDescription = null;
  }

  /** Closes the connection and frees RAM and fds; requests still pending are rejected. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dropNotifiers();
    this.frontend.close();
    if (this.queue) for (const p of this.queue.detachUnused()) p.reject(new VhostUserError('closed'));
    for (const sub of this.backlog.splice(0)) sub.pending.reject(new VhostUserError('closed'));
    this.dropInflight();
    this.ram.close();
  }
}
