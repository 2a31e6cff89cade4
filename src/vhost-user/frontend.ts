/**
 * A vhost-user front-end in TypeScript: the control-path client of the protocol, for tests
 * and tools. One method per front-end request ([vhost-user "Front-end message types"]),
 * each resolving when the back-end has answered (requests that have no reply resolve at
 * once, or after the REPLY_ACK when that is on).
 *
 * The socket is non-blocking and read on the event loop, so a back-end in the same process
 * (same event loop) works as well as one in another process. Requests are answered in
 * order; replies are matched to requests in FIFO order and must carry the request's code
 * and the REPLY flag.
 *
 * The back-end request channel (SET_BACKEND_REQ_FD) is a socket pair: one end goes to the
 * back-end, this side reads BACKEND_CONFIG_CHANGE_MSG from the other and reports it.
 */
import { native, type Watch } from './native/index.js';
import { encodeMessage, type RawMessage } from './codec.js';
import { MessageChannel, closeQuietly } from './message-channel.js';
import {
  CONFIG_HEADER_SIZE,
  INFLIGHT_DESCRIPTION_SIZE,
  U64_SIZE,
  VRING_STATE_SIZE,
  decodeConfig,
  decodeInflight,
  decodeU64,
  decodeVringState,
  encodeConfig,
  encodeInflight,
  encodeMemTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddress,
  encodeVringState,
  type InflightDescription,
  type MemoryRegionDescription,
} from './payloads.js';
import { BackendRequest, HeaderFlag, Request, VRING_INVALID_FD, backendRequestName, requestName } from './protocol.js';

export class VhostUserError extends Error {
  override readonly name = 'VhostUserError';
}

interface Waiter {
  request: number;
  resolve(m: RawMessage): void;
  reject(e: Error): void;
}

export interface FrontendEvents {
  /** BACKEND_CONFIG_CHANGE_MSG arrived on the back-end channel. */
  onConfigChange?(): void;
  /** The connection ended (null: orderly). */
  onClose?(reason: string | null): void;
}

export class VhostUserFrontend {
  private readonly channel: MessageChannel;
  private readonly waiters: Waiter[] = [];
  private closedReason: string | null | undefined = undefined;
  /** Ask for REPLY_ACK on every request without a reply (only once REPLY_ACK is negotiated). */
  replyAck = false;
  private backendFd: number | null = null;
  private backendChannel: MessageChannel | null = null;
  /** BACKEND_CONFIG_CHANGE_MSG messages received. */
  configChanges = 0;
  /** Other back-end requests received (answered with failure if they asked for a reply). */
  readonly unexpectedBackendRequests: string[] = [];

  private constructor(
    fd: number,
    private readonly events: FrontendEvents,
  ) {
    this.channel = new MessageChannel(
      fd,
      {
        onMessage: (m) => this.onReply(m),
        onClose: (reason) => this.onClosed(reason),
      },
      { receivesReplies: true },
    );
    this.channel.start();
  }

  /** Connects to a back-end listening on `socketPath`. */
  static connect(socketPath: string, events: FrontendEvents = {}): VhostUserFrontend {
    return new VhostUserFrontend(native.socketConnect(socketPath), events);
  }

  get isClosed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Why the connection ended, once it has. */
  get closeReason(): string | null | undefined {
    return this.closedReason;
  }

  close(): void {
    this.backendChannel?.close();
    this.backendChannel = null;
    this.channel.close();
  }

  // ------------------------------------------------------------------ raw messages

  /** Sends any message as is (tests use this to send malformed ones). */
  sendRaw(bytes: Uint8Array, fds: readonly number[] = []): void {
    this.channel.send(bytes, fds);
  }

  /** Waits for the next reply to `request` (FIFO). */
  nextReply(request: number): Promise<RawMessage> {
    if (this.closedReason !== undefined) return Promise.reject(this.closedError(request));
    return new Promise((resolve, reject) => this.waiters.push({ request, resolve, reject }));
  }

  /** Sends a request that has a reply and returns the reply. */
  async call(request: number, payload?: Uint8Array, fds: readonly number[] = []): Promise<RawMessage> {
    const reply = this.nextReply(request);
    this.channel.send(encodeMessage(request, HeaderFlag.VERSION, payload), fds);
    return reply;
  }

  /** Sends a request without a reply; with `replyAck` on, waits for the ack and throws on failure. */
  async post(request: number, payload?: Uint8Array, fds: readonly number[] = []): Promise<void> {
    if (!this.replyAck) {
      if (this.closedReason !== undefined) throw this.closedError(request);
      this.channel.send(encodeMessage(request, HeaderFlag.VERSION, payload), fds);
      return;
    }
    const reply = this.nextReply(request);
    this.channel.send(encodeMessage(request, HeaderFlag.VERSION | HeaderFlag.NEED_REPLY, payload), fds);
    const m = await reply;
    if (m.size !== U64_SIZE) throw new VhostUserError(`${requestName(request)}: ack of ${m.size} bytes`);
    const status = decodeU64(m.payload);
    if (status !== 0n) throw new VhostUserError(`${requestName(request)}: back-end reports failure (${status})`);
  }

  private async callU64(request: number, payload?: Uint8Array): Promise<bigint> {
    const m = await this.call(request, payload);
    if (m.size !== U64_SIZE) throw new VhostUserError(`${requestName(request)}: reply of ${m.size} bytes, expected 8`);
    return decodeU64(m.payload);
  }

  private onReply(m: RawMessage): void {
    for (const fd of m.fds) if (m.request !== Request.GET_INFLIGHT_FD) closeQuietly(fd);
    const w = this.waiters.shift();
    if (!w) {
      this.channel.close(`unexpected message ${requestName(m.request)} from the back-end`);
      return;
    }
    if (!(m.flags & HeaderFlag.REPLY) || m.request !== w.request) {
      w.reject(new VhostUserError(`expected a reply to ${requestName(w.request)}, got ${requestName(m.request)} flags 0x${m.flags.toString(16)}`));
      this.channel.close('reply out of order');
      return;
    }
    w.resolve(m);
  }

  private onClosed(reason: string | null): void {
    this.closedReason = reason;
    for (const w of this.waiters.splice(0)) w.reject(this.closedError(w.request));
    this.backendChannel?.close();
    this.backendChannel = null;
    this.events.onClose?.(reason);
  }

  private closedError(request: number): VhostUserError {
    return new VhostUserError(`${requestName(request)}: connection closed${this.closedReason ? ` (${this.closedReason})` : ''}`);
  }

  // ------------------------------------------------------------------ features

  getFeatures(): Promise<bigint> {
    return this.callU64(Request.GET_FEATURES);
  }
  setFeatures(features: bigint): Promise<void> {
    return this.post(Request.SET_FEATURES, encodeU64(features));
  }
  getProtocolFeatures(): Promise<bigint> {
    return this.callU64(Request.GET_PROTOCOL_FEATURES);
  }
  setProtocolFeatures(features: bigint): Promise<void> {
    return this.post(Request.SET_PROTOCOL_FEATURES, encodeU64(features));
  }
  setOwner(): Promise<void> {
    return this.post(Request.SET_OWNER);
  }
  resetOwner(): Promise<void> {
    return this.post(Request.RESET_OWNER);
  }
  async getQueueNum(): Promise<number> {
    return Number(await this.callU64(Request.GET_QUEUE_NUM));
  }

  // ------------------------------------------------------------------ memory

  setMemTable(regions: readonly MemoryRegionDescription[], fds: readonly number[]): Promise<void> {
    return this.post(Request.SET_MEM_TABLE, encodeMemTable(regions), fds);
  }
  async getMaxMemSlots(): Promise<number> {
    return Number(await this.callU64(Request.GET_MAX_MEM_SLOTS));
  }
  addMemReg(region: MemoryRegionDescription, fd: number): Promise<void> {
    return this.post(Request.ADD_MEM_REG, encodeSingleRegion(region), [fd]);
  }
  remMemReg(region: MemoryRegionDescription): Promise<void> {
    return this.post(Request.REM_MEM_REG, encodeSingleRegion(region));
  }

  // ------------------------------------------------------------------ vrings

  setVringNum(index: number, num: number): Promise<void> {
    return this.post(Request.SET_VRING_NUM, encodeVringState({ index, num }));
  }
  setVringAddr(index: number, a: { desc: number; avail: number; used: number; flags?: number }): Promise<void> {
    return this.post(
      Request.SET_VRING_ADDR,
      encodeVringAddress({ index, flags: a.flags ?? 0, desc: BigInt(a.desc), used: BigInt(a.used), avail: BigInt(a.avail), log: 0n }),
    );
  }
  setVringBase(index: number, num: number): Promise<void> {
    return this.post(Request.SET_VRING_BASE, encodeVringState({ index, num }));
  }
  async getVringBase(index: number): Promise<number> {
    const m = await this.call(Request.GET_VRING_BASE, encodeVringState({ index, num: 0 }));
    if (m.size !== VRING_STATE_SIZE) throw new VhostUserError(`GET_VRING_BASE: reply of ${m.size} bytes`);
    return decodeVringState(m.payload).num;
  }
  /** SET_VRING_KICK; `fd` null sends the invalid-fd flag (the back-end polls). */
  setVringKick(index: number, fd: number | null): Promise<void> {
    return this.setVringFd(Request.SET_VRING_KICK, index, fd);
  }
  /** SET_VRING_CALL; `fd` null: no call fd (this side polls). */
  setVringCall(index: number, fd: number | null): Promise<void> {
    return this.setVringFd(Request.SET_VRING_CALL, index, fd);
  }
  setVringErr(index: number, fd: number | null): Promise<void> {
    return this.setVringFd(Request.SET_VRING_ERR, index, fd);
  }
  private setVringFd(request: number, index: number, fd: number | null): Promise<void> {
    const value = BigInt(index) | (fd === null ? BigInt(VRING_INVALID_FD) : 0n);
    return this.post(request, encodeU64(value), fd === null ? [] : [fd]);
  }
  setVringEnable(index: number, enable: boolean): Promise<void> {
    return this.post(Request.SET_VRING_ENABLE, encodeVringState({ index, num: enable ? 1 : 0 }));
  }

  // ------------------------------------------------------------------ config space

  /** GET_CONFIG; throws if the back-end answers with an error (empty payload) or a wrong size. */
  async getConfig(offset: number, size: number): Promise<Uint8Array> {
    const m = await this.call(Request.GET_CONFIG, encodeConfig({ offset, data: new Uint8Array(size) }));
    if (m.size !== CONFIG_HEADER_SIZE + size) throw new VhostUserError(`GET_CONFIG: reply of ${m.size} bytes, expected ${CONFIG_HEADER_SIZE + size}`);
    const c = decodeConfig(m.payload);
    if (c.offset !== offset || c.size !== size) throw new VhostUserError(`GET_CONFIG: reply for [${c.offset}, +${c.size})`);
    return c.data.slice();
  }
  setConfig(offset: number, data: Uint8Array, flags = 0): Promise<void> {
    return this.post(Request.SET_CONFIG, encodeConfig({ offset, flags, data }));
  }

  // ------------------------------------------------------------------ device state

  resetDevice(): Promise<void> {
    return this.post(Request.RESET_DEVICE);
  }
  setStatus(status: number): Promise<void> {
    return this.post(Request.SET_STATUS, encodeU64(status));
  }
  async getStatus(): Promise<number> {
    return Number(await this.callU64(Request.GET_STATUS));
  }

  /** SET_BACKEND_REQ_FD with one end of a new socket pair; this side reads the other. */
  async setBackendReqFd(): Promise<void> {
    const [mine, theirs] = native.socketPair();
    this.backendChannel?.close();
    this.backendFd = mine;
    this.backendChannel = new MessageChannel(mine, {
      onMessage: (m) => this.onBackendRequest(m),
      onClose: () => {
        this.backendFd = null;
      },
    }).start();
    try {
      await this.post(Request.SET_BACKEND_REQ_FD, undefined, [theirs]);
    } finally {
      closeQuietly(theirs);
    }
  }

  private onBackendRequest(m: RawMessage): void {
    for (const fd of m.fds) closeQuietly(fd);
    let ok = false;
    if (m.request === BackendRequest.CONFIG_CHANGE_MSG) {
      this.configChanges++;
      ok = true;
      this.events.onConfigChange?.();
    }
    if (m.flags & HeaderFlag.NEED_REPLY && this.backendFd !== null) {
      this.backendChannel?.send(encodeMessage(m.request, HeaderFlag.VERSION | HeaderFlag.REPLY, encodeU64(ok ? 0 : 1)));
    }
    if (!ok) this.unexpectedBackendRequests.push(backendRequestName(m.request));
  }

  // ------------------------------------------------------------------ inflight buffer

  /** GET_INFLIGHT_FD: the back-end's buffer for `numQueues` queues of `queueSize` (the fd is ours to keep). */
  async getInflightFd(numQueues: number, queueSize: number): Promise<{ fd: number; description: InflightDescription }> {
    const m = await this.call(Request.GET_INFLIGHT_FD, encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues, queueSize }));
    if (m.size !== INFLIGHT_DESCRIPTION_SIZE || m.fds.length !== 1) {
      for (const fd of m.fds) closeQuietly(fd);
      throw new VhostUserError(`GET_INFLIGHT_FD: reply of ${m.size} bytes with ${m.fds.length} fds`);
    }
    return { fd: m.fds[0]!, description: decodeInflight(m.payload) };
  }

  /** SET_INFLIGHT_FD (our copy of the fd stays open: we keep it for the next back-end). */
  setInflightFd(description: InflightDescription, fd: number): Promise<void> {
    return this.post(Request.SET_INFLIGHT_FD, encodeInflight(description), [fd]);
  }
}
