/**
 * One vhost-user connection, back-end side: a state machine that answers the front-end's
 * requests ([vhost-user "Front-end message types"]) and drives one device model through a
 * DeviceRuntime, exactly as the embedded machine's virtio-mmio host does, so any
 * VirtioDevice runs unchanged over vhost-user.
 *
 * Device status. With VHOST_USER_PROTOCOL_F_STATUS the front-end sets the status
 * (SET_STATUS) and the runtime applies it. Without it (virtio_uml, many QEMU devices) the
 * front-end keeps the status to itself, so this session stands in for it: SET_FEATURES
 * negotiates (ACKNOWLEDGE, DRIVER, features, FEATURES_OK). Either way the first ring that can
 * run sets DRIVER_OK once FEATURES_OK is set (QEMU 7.2 never sends DRIVER_OK). A SET_FEATURES with other features, or after a device error, resets the
 * device first (it means the driver started over).
 *
 * Rings ([vhost-user "Ring states"]): a ring is started by SET_VRING_KICK (with an fd, or
 * with the invalid-fd flag: then it is polled) and stopped by GET_VRING_BASE, which also
 * drops the kick fd. It is enabled by SET_VRING_ENABLE, or for every ring at once by a
 * SET_FEATURES without VHOST_USER_F_PROTOCOL_FEATURES. The ring runs in the runtime while it
 * is started, enabled, fully configured, and the device is DRIVER_OK without NEEDS_RESET.
 * A started but disabled ring is not processed (its buffers wait; nothing is consumed), which
 * is the "no side effects" the spec asks for. Any change of a running ring's configuration,
 * or of the memory table, stops the ring (remembering its next available index) and
 * restarts it from the new configuration.
 *
 * Packed rings (VIRTIO_F_RING_PACKED, virtio 1.2 §2.8; offered with `packedRing`) once the acked features include it:
 * SET_VRING_ADDR's desc/avail/used are the Descriptor Ring and the Driver and Device Event
 * Suppression areas (§2.8.10), and the ring base of SET/GET_VRING_BASE carries both positions
 * with their wrap counters ([vhost-user "Vring descriptor indices for packed virtqueues"]:
 * bits 0-14 last_avail_idx, bit 15 the avail wrap counter, bits 16-30 last used idx, bit 31
 * the used wrap counter; packed-ring.ts packedVringBase). The inflight buffer does not track
 * packed rings (docs/vhost-user.md "Packed rings": what a back-end restart then loses); chains
 * held across a ring restart on a living connection are resubmitted from the lists the
 * stopped queue kept (PackedDeviceQueue keepLists/adopt).
 *
 * Refusals. A request the session cannot honour is refused with a warning naming the request
 * and the rule. How the front-end learns of it depends on `strict` (BackendSessionOptions, or
 * BackendSession.strictByDefault for every session of the process):
 *  - strict (the project's rule): a non-zero ack when REPLY_ACK was negotiated and the request
 *    has NEED_REPLY ([vhost-user "VHOST_USER_PROTOCOL_F_REPLY_ACK"]); GET_CONFIG's specified
 *    error reply (an empty payload, [vhost-user "VHOST_USER_GET_CONFIG"]); otherwise the
 *    connection is closed ([vhost-user "Communication"]: "If back-end detects some error such
 *    as incompatible features, it may also close the connection"), never a silent
 *    continuation nor a reply of the wrong size;
 *  - lenient (`strict: false`, kept for front-ends that need it): an ack whenever NEED_REPLY
 *    is set, an empty payload for requests that always reply, otherwise only the warning.
 * Strict mode also refuses what the lenient mode still lets through for compatibility: fds on
 * a request that takes none, a memfd as kick/call/err fd, and state-changing requests whose
 * protocol feature was not negotiated.
 */
import type { VirtioDevice } from '../device/device.js';
import { DeviceRuntime, type DeviceHost } from '../device/runtime.js';
import { FeatureBit, Status, TRANSPORT_FEATURES, bit, hasFeature, statusNames } from '../virtio/constants.js';
import { fail, isVirtioError } from '../virtio/errors.js';
import { GuestMemory } from '../virtio/memory.js';
import { PackedDeviceQueue } from '../virtio/packed-device-queue.js';
import {
  EVENT_SUPPRESS_SIZE,
  INITIAL_RING_INDEX,
  checkPackedQueueSize,
  checkRingIndex,
  descRingBytes,
  linearIndex,
  packedRingViewsFromBytes,
  packedVringBase,
  parsePackedVringBase,
  type PackedRingViews,
} from '../virtio/packed-ring.js';
import { ringViewsFromBytes, type RingViews } from '../virtio/ring-views.js';
import type { DeviceVirtqueue } from '../virtio/virtqueue.js';
import { availRingBytes, checkQueueSize, descTableBytes, usedRingBytes } from '../virtio/split-ring.js';
import { BackendChannel } from './backend-channel.js';
import { TRACE } from '../trace/events.js';
import { ProtocolError, REQUEST_RULES, alwaysReplies, checkRequest, encodeMessage, type RawMessage } from './codec.js';
import { InflightBuffer, createInflightFd } from './inflight.js';
import { InflightTrackingDevice } from './inflight-tracker.js';
import { MappedMemory, onMemoryFault } from './mapped-memory.js';
import { MessageChannel, closeQuietly } from './message-channel.js';
import { native } from './native/index.js';
import {
  decodeConfig,
  decodeInflight,
  decodeMemTable,
  decodeSingleRegion,
  decodeU64,
  decodeVringAddress,
  decodeVringState,
  encodeConfig,
  encodeInflight,
  encodeU64,
  encodeVringState,
  toSafeNumber,
  VRING_STATE_SIZE,
} from './payloads.js';
import {
  ConfigFlag,
  HeaderFlag,
  ProtocolFeature,
  Request,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VRING_INDEX_MASK,
  VRING_INVALID_FD,
  VRING_F_LOG,
  pbit,
  requestName,
} from './protocol.js';
import { Vring, describeFd, notificationFdProblem, type VringAddresses } from './vring.js';

/** The protocol features this back-end implements ([vhost-user "Protocol features"]). */
export const OFFERED_PROTOCOL_FEATURES =
  pbit(ProtocolFeature.MQ) |
  pbit(ProtocolFeature.REPLY_ACK) |
  pbit(ProtocolFeature.CONFIG) |
  pbit(ProtocolFeature.BACKEND_REQ) |
  pbit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  pbit(ProtocolFeature.RESET_DEVICE) |
  pbit(ProtocolFeature.STATUS) |
  pbit(ProtocolFeature.INFLIGHT_SHMFD);

/**
 * Requests a front-end may send before SET_OWNER: queries, and what QEMU's
 * vhost_user_backend_init sends before vhost_dev_init's SET_OWNER (protocol features, the
 * back-end channel). Everything that configures memory, rings or the device needs an owner
 * ([vhost-user "VHOST_USER_SET_OWNER"]: "marks the sender as the front-end that owns the session").
 */
const BEFORE_OWNER: ReadonlySet<number> = new Set([
  Request.GET_FEATURES,
  Request.GET_PROTOCOL_FEATURES,
  Request.SET_PROTOCOL_FEATURES,
  Request.SET_OWNER,
  Request.GET_QUEUE_NUM,
  Request.GET_MAX_MEM_SLOTS,
  Request.SET_BACKEND_REQ_FD,
  Request.GET_CONFIG,
  Request.GET_STATUS,
]);

/**
 * Strict mode: requests that change state and that [vhost-user "Front-end message types"]
 * defines only once a protocol feature is negotiated ("Only valid if ...", "should be sent
 * only when ..."). Queries (GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, GET_CONFIG, GET_STATUS) are
 * answered either way: they change nothing.
 */
const NEEDS_PROTOCOL_FEATURE: ReadonlyMap<number, number> = new Map([
  [Request.SET_STATUS, ProtocolFeature.STATUS],
  [Request.RESET_DEVICE, ProtocolFeature.RESET_DEVICE],
  [Request.ADD_MEM_REG, ProtocolFeature.CONFIGURE_MEM_SLOTS],
  [Request.REM_MEM_REG, ProtocolFeature.CONFIGURE_MEM_SLOTS],
  [Request.SET_CONFIG, ProtocolFeature.CONFIG],
  [Request.GET_INFLIGHT_FD, ProtocolFeature.INFLIGHT_SHMFD],
  [Request.SET_INFLIGHT_FD, ProtocolFeature.INFLIGHT_SHMFD],
  [Request.SET_BACKEND_REQ_FD, ProtocolFeature.BACKEND_REQ],
]);

const protocolFeatureNames = new Map<number, string>(Object.entries(ProtocolFeature).map(([k, v]) => [v, k]));

/** Header flags ([vhost-user "Header"]): bits 0-1 version, 2 REPLY, 3 NEED_REPLY; the others are reserved. */
const KNOWN_HEADER_FLAGS = HeaderFlag.VERSION_MASK | HeaderFlag.REPLY | HeaderFlag.NEED_REPLY;

const EV_SEND = TRACE.vhost_user_send;
const EV_IRQFD = TRACE.virtio_notify_irqfd;

/** How long GET_VRING_BASE waits for the device model's requests on the ring (drainFirst). */
export const DRAIN_TIMEOUT_MS = 10_000;

/** GET_MAX_MEM_SLOTS default. */
export const DEFAULT_MAX_MEM_SLOTS = 32;

export interface BackendSessionOptions {
  /** The device model this connection serves (a fresh one per connection). */
  device: VirtioDevice;
  /** Lines from the device model (DeviceHost.log). */
  log(line: string): void;
  /** Diagnostics: refused requests, device errors. */
  warn(line: string): void;
  /** Largest ring size accepted by SET_VRING_NUM (power of two, ≤ 32768). */
  maxQueueSize: number;
  /**
   * Offer VIRTIO_F_RING_PACKED (virtio 1.2 §2.8). Default false: Linux 6.1's virtio_uml takes
   * every feature offered, so it would switch to packed rings, and it sends SET_VRING_BASE 0
   * (a packed base with both wrap counters 0, not a fresh ring's 0x80008000); and the inflight
   * buffer does not track packed rings. QEMU offers packed rings only with `packed=on`.
   */
  packedRing?: boolean;
  maxMemSlots?: number;
  /** DeviceRuntimeOptions.publishBatch (default DEFAULT_PUBLISH_BATCH). */
  publishBatch?: number;
  /** Every request received, one line each (for debugging front-ends). */
  trace?(line: string): void;
  /** Called once when the connection has ended and every resource is released. */
  onClose?(reason: string | null): void;
  /**
   * Refuse memory regions whose fd is not a memfd sealed against shrinking (F_SEAL_SHRINK),
   * so the front-end cannot take pages away under the back-end. Default false: UML's guest
   * memory is a plain file, and QEMU's memfd is sealed only with its default `seal=on`.
   */
  requireSealedMemory?: boolean;
  /** How long GET_VRING_BASE waits for the device model's requests on the ring (default DRAIN_TIMEOUT_MS). */
  drainTimeoutMs?: number;
  /**
   * The refusal rule (see the module comment): true closes the connection when a refusal
   * cannot be acknowledged. Default: BackendSession.strictByDefault.
   */
  strict?: boolean;
}

/** The result of a request that always has a reply: payload and fds to send (ours to close). */
interface Reply {
  payload: Uint8Array;
  fds?: number[];
}

/** The fds that came with a request; the ones not taken are closed after handling. */
class Fds {
  private readonly taken = new Set<number>();
  private done = false;
  constructor(readonly list: readonly number[]) {}
  take(i: number): number {
    const fd = this.list[i]!;
    this.taken.add(fd);
    return fd;
  }
  closeRest(): void {
    if (this.done) return;
    this.done = true;
    for (const fd of this.list) if (!this.taken.has(fd)) closeQuietly(fd);
  }
}

export class BackendSession {
  /**
   * `strict` for sessions that do not set it (serveDevice's, the daemons'): true, the
   * project's rule (docs/reliability.md "vhost-user control plane: the refusal rule").
   */
  static strictByDefault = true;

  readonly memory = new GuestMemory();
  /** BackendSessionOptions.strict, resolved when the session was made. */
  readonly strict: boolean;
  readonly mapped: MappedMemory;
  readonly device: InflightTrackingDevice;
  readonly runtime: DeviceRuntime;
  readonly vrings: Vring[];
  readonly offeredFeatures: bigint;
  private readonly channel: MessageChannel;
  /** Acknowledged protocol features (SET_PROTOCOL_FEATURES). */
  protocolFeatures = 0n;
  /** The last SET_FEATURES value (with bit 30), or null. */
  ackedFeatures: bigint | null = null;
  private owned = false;
  private backend: BackendChannel | null = null;
  private inflight: InflightBuffer | null = null;
  private closed = false;
  private readonly unwatchFaults: () => void;
  /** The GET_VRING_BASE being answered after its drain (handled without draining again). */
  private drainedRequest: RawMessage | null = null;
  /**
   * Packed rings: the queue that ran until the ring last stopped, so the next one can take over
   * its buffers in flight and their kept lists (PackedDeviceQueue adopt); null once the ring is
   * not the same any more (see forgetRing).
   */
  private readonly retired: (DeviceVirtqueue | null)[];
  /** Whether SET_VRING_BASE was received for the ring since its last reset (a packed ring starts at 0x80008000 otherwise). */
  private readonly baseGiven: boolean[];

  constructor(
    fd: number,
    private readonly options: BackendSessionOptions,
  ) {
    this.strict = options.strict ?? BackendSession.strictByDefault;
    this.device = new InflightTrackingDevice(options.device);
    // A region leaves the lookup at once but is unmapped only when the model's I/O started
    // before has settled (its buffers point into the mapping).
    this.mapped = new MappedMemory(this.memory, options.maxMemSlots ?? DEFAULT_MAX_MEM_SLOTS, (unmap) => {
      if (this.runtime.owedCount === 0) unmap();
      else void this.runtime.settled().then(unmap);
    }, options.requireSealedMemory === true);
    this.unwatchFaults = onMemoryFault(() => this.checkMemoryFaults());
    const host: DeviceHost = {
      interrupt: (q) => this.signalCall(q),
      configInterrupt: () => this.configInterrupt(),
      log: (line) => options.log(line),
      warn: (line) => options.warn(line),
      onDeviceError: (q) => this.signalDeviceError(q),
    };
    // The split ring (§2.7), and the packed ring (§2.8, VIRTIO_F_RING_PACKED) when asked for.
    const offeredFeatures = options.device.features | TRANSPORT_FEATURES | (options.packedRing ? bit(FeatureBit.RING_PACKED) : 0n);
    this.runtime = new DeviceRuntime(this.device, this.memory, host, {
      offeredFeatures,
      ...(options.publishBatch === undefined ? {} : { publishBatch: options.publishBatch }),
    });
    this.offeredFeatures = this.runtime.offeredFeatures | bit(VHOST_USER_F_PROTOCOL_FEATURES);
    this.vrings = options.device.queueMaxSizes.map(
      (_, i) => new Vring(i, (index) => this.kick(index), (line) => options.warn(line)),
    );
    this.retired = this.vrings.map(() => null);
    this.baseGiven = this.vrings.map(() => false);
    this.channel = new MessageChannel(fd, {
      onMessage: (m) => this.onMessage(m),
      onClose: (reason) => this.dispose(reason),
    });
  }

  start(): this {
    this.channel.start();
    return this;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Ends the connection and releases everything. */
  close(reason: string | null = 'closed by the back-end'): void {
    this.channel.close(reason);
  }

  private has(feature: number): boolean {
    return (this.protocolFeatures & pbit(feature)) !== 0n;
  }

  private get statusNegotiated(): boolean {
    return this.has(ProtocolFeature.STATUS);
  }

  /** The acked features include VIRTIO_F_RING_PACKED: rings are packed (§2.8). */
  private get packed(): boolean {
    return this.ackedFeatures !== null && hasFeature(this.ackedFeatures, FeatureBit.RING_PACKED);
  }

  /**
   * Chains held from ring `index` (every ring if undefined) are not to be resubmitted: the
   * ring is not the same any more (new size, addresses or base; a reset).
   */
  private forgetRing(index?: number): void {
    this.device.forget(index);
    for (let i = 0; i < this.retired.length; i++) if (index === undefined || i === index) this.retired[i] = null;
  }

  // ---------------------------------------------------------------- messages

  private onMessage(m: RawMessage): void {
    if (m.request === Request.GET_VRING_BASE && m !== this.drainedRequest && this.drainFirst(m)) return;
    this.drainedRequest = null;
    const name = requestName(m.request);
    const fds = new Fds(m.fds);
    const needReply = (m.flags & HeaderFlag.NEED_REPLY) !== 0;
    const replies = alwaysReplies(m.request);
    // Whether a refusal can be acknowledged: REPLY_ACK as negotiated before this request.
    const ackable = needReply && (this.has(ProtocolFeature.REPLY_ACK) || !this.strict);
    this.options.trace?.(describeRequest(m));
    let reply: Reply | void = undefined;
    let error: string | null = null;
    try {
      this.checkFlags(m);
      const { extraFds } = checkRequest(m);
      if (extraFds.length > 0) {
        if (this.strict && REQUEST_RULES.get(m.request)?.fds.kind === 'none') {
          throw new ProtocolError(`${extraFds.length} file descriptor(s) on a request that takes none`);
        }
        this.options.warn(`vhost-user: ${name} carried ${extraFds.length} file descriptor(s) it does not take: closed`);
      }
      reply = this.handle(m, fds);
    } catch (e) {
      error = e instanceof ProtocolError || isVirtioError(e) ? e.message : `internal error: ${(e as Error)?.stack ?? e}`;
      this.options.warn(`vhost-user: ${name} refused: ${error}`);
      if (e instanceof ProtocolError && e.fatal) {
        fds.closeRest();
        this.close(error);
        return;
      }
    } finally {
      fds.closeRest();
    }
    if (this.closed) return;
    if (error !== null && this.strict && (replies ? m.request !== Request.GET_CONFIG : !ackable)) {
      // No way to tell the front-end but ending the connection: a reply of the wrong size
      // would be a malformed message, and silence would be taken for success.
      this.close(`${name} refused: ${error}`);
      return;
    }
    const flags = HeaderFlag.VERSION | HeaderFlag.REPLY;
    if (replies) {
      // A reply is due either way; an empty payload is the error signal (GET_CONFIG's is
      // specified, the others make the front-end's size check fail instead of hanging it).
      const payload = error === null && reply ? reply.payload : new Uint8Array(0);
      const out = error === null && reply ? (reply.fds ?? []) : [];
      if (EV_SEND.enabled) EV_SEND.emit(m.request, flags, payload.length, out.length);
      this.channel.send(encodeMessage(m.request, flags, payload), out, true);
    } else if (needReply) {
      // [vhost-user "VHOST_USER_PROTOCOL_F_REPLY_ACK"]: zero for success, non-zero for failure.
      if (EV_SEND.enabled) EV_SEND.emit(m.request, flags, 8, 0);
      this.channel.send(encodeMessage(m.request, flags, encodeU64(error === null ? 0 : 1)));
    }
  }

  /** A request has version 1 (checked by the channel), no REPLY flag, no reserved bit ([vhost-user "Header"]). */
  private checkFlags(m: RawMessage): void {
    if (m.flags & HeaderFlag.REPLY) throw new ProtocolError(`flags 0x${m.flags.toString(16)}: a request with the REPLY flag`);
    const reserved = m.flags & ~KNOWN_HEADER_FLAGS;
    if (reserved) throw new ProtocolError(`flags 0x${(m.flags >>> 0).toString(16)}: reserved bits 0x${(reserved >>> 0).toString(16)} set`);
    const feature = NEEDS_PROTOCOL_FEATURE.get(m.request);
    if (this.strict && feature !== undefined && !this.has(feature)) {
      throw new ProtocolError(`VHOST_USER_PROTOCOL_F_${protocolFeatureNames.get(feature)} was not negotiated`);
    }
  }

  private handle(m: RawMessage, fds: Fds): Reply | void {
    const p = m.payload;
    if (!this.owned && !BEFORE_OWNER.has(m.request)) throw new ProtocolError('sent before SET_OWNER');
    switch (m.request) {
      case Request.GET_FEATURES:
        return { payload: encodeU64(this.offeredFeatures) };
      case Request.SET_FEATURES:
        return this.setFeatures(decodeU64(p));
      case Request.GET_PROTOCOL_FEATURES:
        return { payload: encodeU64(OFFERED_PROTOCOL_FEATURES) };
      case Request.SET_PROTOCOL_FEATURES:
        return this.setProtocolFeatures(decodeU64(p));
      case Request.SET_OWNER:
        if (this.owned) this.options.warn('vhost-user: SET_OWNER again on the same connection');
        this.owned = true;
        return;
      case Request.RESET_OWNER:
        // Deprecated: "either ignore this message, or use it to disable all rings".
        for (const v of this.vrings) v.enabled = false;
        this.syncAll();
        return;
      case Request.SET_MEM_TABLE:
        return this.setMemTable(m, fds);
      case Request.GET_MAX_MEM_SLOTS:
        return { payload: encodeU64(this.mapped.maxSlots) };
      case Request.ADD_MEM_REG:
        this.mapped.add(decodeSingleRegion(p), fds.take(0));
        this.syncAll();
        return;
      case Request.REM_MEM_REG: {
        this.stopAll();
        const removed = this.mapped.remove(decodeSingleRegion(p));
        this.syncAll();
        if (!removed) throw new ProtocolError('no such memory region');
        return;
      }
      case Request.SET_VRING_NUM:
        return this.setVringNum(decodeVringState(p).index, decodeVringState(p).num);
      case Request.SET_VRING_ADDR:
        return this.setVringAddr(p);
      case Request.SET_VRING_BASE:
        return this.setVringBase(decodeVringState(p).index, decodeVringState(p).num);
      case Request.GET_VRING_BASE:
        return this.getVringBase(decodeVringState(p).index);
      case Request.SET_VRING_KICK:
      case Request.SET_VRING_CALL:
      case Request.SET_VRING_ERR:
        return this.setVringFd(m.request, decodeU64(p), fds);
      case Request.SET_VRING_ENABLE: {
        const { index, num } = decodeVringState(p);
        const v = this.vring(index);
        if (num > 1) throw new ProtocolError(`vring ${index}: enable value ${num} is not 0 or 1`);
        v.enabled = num === 1;
        this.sync(index);
        return;
      }
      case Request.GET_QUEUE_NUM:
        return { payload: encodeU64(this.vrings.length) };
      case Request.GET_CONFIG:
        return this.getConfig(p);
      case Request.SET_CONFIG:
        return this.setConfig(p);
      case Request.SET_BACKEND_REQ_FD: {
        // [vhost-user "VHOST_USER_SET_BACKEND_REQ_FD"]: "the socket file descriptor for
        // back-end initiated requests"; anything else would swallow the messages we send.
        const problem = backendSocketProblem(fds.list[0]!);
        if (problem) throw new ProtocolError(`the fd is ${problem}, not a connected Unix stream socket`);
        this.backend?.close();
        this.backend = new BackendChannel(fds.take(0), (line) => this.options.warn(line));
        return;
      }
      case Request.RESET_DEVICE:
        this.resetDevice();
        return;
      case Request.SET_STATUS:
        return this.setStatus(decodeU64(p));
      case Request.GET_STATUS:
        return { payload: encodeU64(this.runtime.status) };
      case Request.GET_INFLIGHT_FD:
        return this.getInflightFd(p);
      case Request.SET_INFLIGHT_FD:
        return this.setInflightFd(p, fds);
    }
    throw new ProtocolError('not supported');
  }

  // ---------------------------------------------------------------- features and status

  private setFeatures(features: bigint): void {
    const unknown = features & ~this.offeredFeatures;
    if (unknown) throw new ProtocolError(`features 0x${unknown.toString(16)} were not offered`);
    const virtio = features & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
    // The device runtime is non-legacy only (virtio 1.2 §6.1: a device that does not offer
    // legacy support refuses a driver without VIRTIO_F_VERSION_1). Refused here rather than
    // left to FEATURES_OK, so that a front-end without PROTOCOL_F_STATUS learns it too.
    if (!hasFeature(virtio, FeatureBit.VERSION_1)) {
      throw new ProtocolError(`features 0x${features.toString(16)} lack VIRTIO_F_VERSION_1: legacy drivers are not supported (virtio 1.2 §6.1)`);
    }
    if (this.statusNegotiated) {
      const s = this.runtime.status;
      if (s & Status.FEATURES_OK) {
        if (this.runtime.driverFeatures !== virtio || (this.ackedFeatures !== null && this.ackedFeatures !== features)) {
          throw new ProtocolError(`features changed after FEATURES_OK (status ${statusNames(s)})`);
        }
      } else {
        this.runtime.writeDriverFeatures(virtio);
      }
    } else {
      // Without PROTOCOL_F_STATUS a SET_FEATURES with other features means the driver started
      // over (the device is reset below). Not while a ring runs as far as the front-end knows
      // (started and enabled: neither GET_VRING_BASE nor SET_VRING_ENABLE 0 came): the features
      // of a live device are fixed (virtio 1.2 §3.1.1, §2.2), a front-end stops its rings first.
      const live = this.vrings.filter((v) => v.started && v.enabled).map((v) => v.index);
      const rt = this.runtime;
      const running = (rt.status & Status.DRIVER_OK) !== 0 && (rt.status & (Status.NEEDS_RESET | Status.FAILED)) === 0;
      if (running && live.length > 0 && this.ackedFeatures !== null && features !== this.ackedFeatures) {
        throw new ProtocolError(
          `features 0x${features.toString(16)} differ from 0x${this.ackedFeatures.toString(16)} while vring ${live.join(', ')} is started and enabled: stop the rings (GET_VRING_BASE) first`,
        );
      }
      this.negotiateForFrontend(virtio);
    }
    this.ackedFeatures = features;
    // [vhost-user "Ring states"]: without VHOST_USER_F_PROTOCOL_FEATURES every ring is enabled at once.
    if (!hasFeature(features, VHOST_USER_F_PROTOCOL_FEATURES)) for (const v of this.vrings) v.enabled = true;
    this.syncAll();
  }

  /** The status steps a front-end without PROTOCOL_F_STATUS does not send (§3.1.1 steps 1-6). */
  private negotiateForFrontend(virtio: bigint): void {
    const rt = this.runtime;
    if (rt.status & Status.FEATURES_OK && rt.driverFeatures === virtio && !(rt.status & (Status.NEEDS_RESET | Status.FAILED))) return;
    if (rt.status !== 0) {
      this.stopAll();
      rt.reset();
      this.forgetInFlight();
    }
    rt.writeStatus(Status.ACKNOWLEDGE);
    rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER);
    rt.writeDriverFeatures(virtio);
    rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    if (!(rt.status & Status.FEATURES_OK)) throw new ProtocolError(`the device refused features 0x${virtio.toString(16)}`);
  }

  private setProtocolFeatures(features: bigint): void {
    const unknown = features & ~OFFERED_PROTOCOL_FEATURES;
    const accepted = features & OFFERED_PROTOCOL_FEATURES;
    // Protocol features decide how requests are answered (REPLY_ACK) and who keeps the
    // status (STATUS): they are set once, before the device is set up (QEMU and virtio_uml
    // send them right after GET_PROTOCOL_FEATURES). The same value again is harmless.
    if (accepted !== this.protocolFeatures && this.configured()) {
      throw new ProtocolError(
        `protocol features changed from 0x${this.protocolFeatures.toString(16)} to 0x${accepted.toString(16)} after SET_FEATURES, a device status or a started ring`,
      );
    }
    this.protocolFeatures = accepted;
    if (unknown) throw new ProtocolError(`protocol features 0x${unknown.toString(16)} were not offered (ignored)`);
  }

  /** Whether the device has been set up beyond protocol negotiation. */
  private configured(): boolean {
    return this.ackedFeatures !== null || this.runtime.status !== 0 || this.vrings.some((v) => v.started);
  }

  private setStatus(value: bigint): void {
    if (value > 0xffn) throw new ProtocolError(`status 0x${value.toString(16)} does not fit in a byte`);
    // Status 0 is a device reset (§2.1, §3.1.1): the runtime forgets features and queues; the
    // rings keep their vhost-user state (GET_VRING_BASE still reports where they stood) and run
    // again after the next DRIVER_OK.
    if (Number(value) === 0) {
      this.stopAll();
      this.forgetInFlight();
    }
    this.runtime.writeStatus(Number(value));
    this.syncAll();
  }

  private resetDevice(): void {
    // [vhost-user "VHOST_USER_RESET_DEVICE"]: disable all rings, back to the initial device state.
    this.stopAll();
    for (const v of this.vrings) v.reset();
    this.baseGiven.fill(false);
    this.inflight?.unmap();
    this.inflight = null;
    this.ackedFeatures = null;
    this.runtime.reset();
    this.forgetRing();
  }

  /**
   * After a device reset nothing is in flight: the driver took its buffers back (§2.1, §3.1.1).
   * Forget the chains the model still holds and clear the inflight buffer, which a front-end
   * may hand back unchanged: resubmitting its old heads into the new rings would be garbage.
   */
  private forgetInFlight(): void {
    this.forgetRing();
    this.inflight?.clearAll();
  }

  /** The device changed its config space: BACKEND_CONFIG_CHANGE_MSG if negotiated. */
  private configInterrupt(): void {
    if (!this.has(ProtocolFeature.CONFIG) || !this.has(ProtocolFeature.BACKEND_REQ) || !this.backend) return;
    this.backend.configChanged();
  }

  /** DeviceHost.onDeviceError: signal the vring's error fd (every ring's if the error is not a queue's). */
  private signalDeviceError(queue: number | undefined): void {
    const rings = queue === undefined ? this.vrings : this.vrings.slice(queue, queue + 1);
    for (const v of rings) v.signalErr();
  }

  // ---------------------------------------------------------------- memory

  private setMemTable(m: RawMessage, fds: Fds): void {
    const regions = decodeMemTable(m.payload);
    this.stopAll();
    this.mapped.clear();
    try {
      regions.forEach((r, i) => this.mapped.add(r, fds.take(i)));
    } catch (e) {
      this.mapped.clear();
      throw e;
    } finally {
      this.syncAll();
    }
  }

  // ---------------------------------------------------------------- vrings

  private vring(index: number): Vring {
    const v = this.vrings[index];
    if (!v) throw new ProtocolError(`vring index ${index} out of range (the device has ${this.vrings.length} queues)`);
    return v;
  }

  private setVringNum(index: number, num: number): void {
    const v = this.vring(index);
    // The device's own maximum for this queue bounds it too (virtio 1.2 §4.2.2: QueueNumMax).
    const max = Math.min(this.options.maxQueueSize, this.device.queueMaxSizes[index]!);
    const packed = this.packed;
    if (packed) {
      // §2.8.10.1: a packed ring's size need not be a power of two.
      if (!(Number.isInteger(num) && num > 0 && num <= max)) throw new ProtocolError(`vring ${index}: packed ring size ${num} is not in 1..${max}`);
    } else if (!(num > 0 && (num & (num - 1)) === 0 && num <= max)) {
      throw new ProtocolError(`vring ${index}: size ${num} is not a power of two in 1..${max}`);
    }
    const inflight = this.inflight;
    // Packed rings are not tracked in the inflight buffer (see getInflightFd): its size does not bound them.
    if (!packed && inflight !== null && index < inflight.numQueues && num > inflight.queueSize) {
      throw new ProtocolError(`vring ${index}: size ${num} is larger than the ${inflight.queueSize} descriptors per queue of the inflight buffer (SET_INFLIGHT_FD)`);
    }
    // Addresses given before the size were checked for no size: the parts must hold this one.
    if (v.addresses !== null && this.mapped.count > 0) this.checkRingLayout(index, num, v.addresses);
    this.stopRing(index);
    if (packed && this.baseGiven[index] && v.size !== num) {
      // A packed ring of another size is a new ring: a base kept from the old one that does
      // not fit it is dropped (the ring starts fresh, §2.8.1, unless SET_VRING_BASE follows).
      const problem = packedBaseProblem(v.base, num);
      if (problem) {
        this.options.warn(`vring ${index}: the packed ring base 0x${v.base.toString(16)} does not fit size ${num} (${problem}): the ring starts fresh`);
        this.baseGiven[index] = false;
      }
    }
    if (v.size !== num) this.forgetRing(index);
    v.size = num;
    this.sync(index);
  }

  private setVringAddr(p: Uint8Array): void {
    const a = decodeVringAddress(p);
    const v = this.vring(a.index);
    const desc = toSafeNumber(a.desc);
    const used = toSafeNumber(a.used);
    const avail = toSafeNumber(a.avail);
    if (desc === null || used === null || avail === null) throw new ProtocolError(`vring ${a.index}: ring address beyond 2^53`);
    // [vhost-user "A vring address description"]: bit 0 (VHOST_VRING_F_LOG) asks for used-ring
    // dirty logging, which needs VHOST_F_LOG_ALL (not offered); no other bit is defined.
    if (a.flags !== 0) {
      throw new ProtocolError(`vring ${a.index}: flags 0x${(a.flags >>> 0).toString(16)}${a.flags & VRING_F_LOG ? ' (VHOST_VRING_F_LOG: dirty logging is not supported)' : ''} are not supported`);
    }
    // §2.7.1 alignment (user addresses keep it: regions are page-aligned mappings); packed:
    // §2.8.10.1, 16 for the descriptor ring, 4 for each event suppression structure.
    if (this.packed ? desc % 16 || avail % 4 || used % 4 : desc % 16 || avail % 2 || used % 4) {
      const names = this.packed ? ['descriptor ring', 'driver area', 'device area'] : ['desc', 'avail', 'used'];
      throw new ProtocolError(
        `vring ${a.index}: misaligned ${this.packed ? 'packed ' : ''}ring (${names[0]} 0x${desc.toString(16)}, ${names[1]} 0x${avail.toString(16)}, ${names[2]} 0x${used.toString(16)})`,
      );
    }
    // [vhost-user "Memory access"]: ring addresses are user addresses of the memory table's
    // regions, so they cannot be translated (nor checked) before there is one.
    if (this.mapped.count === 0) {
      throw new ProtocolError(`vring ${a.index}: ring addresses before any memory table (SET_MEM_TABLE or ADD_MEM_REG)`);
    }
    const addresses = { desc, avail, used, flags: a.flags };
    if (v.size > 0) this.checkRingLayout(a.index, v.size, addresses);
    this.stopRing(a.index);
    const old = v.addresses;
    if (old && (old.desc !== desc || old.avail !== avail || old.used !== used)) this.forgetRing(a.index);
    v.addresses = addresses;
    this.sync(a.index);
  }

  /**
   * The three parts of a ring of `size` at `a`, each with its full size (§2.7: the avail ring
   * with used_event, the used ring with avail_event), must each lie inside one region; the used
   * ring, which the device writes, must not overlap the two parts the driver writes.
   */
  private checkRingLayout(index: number, size: number, a: VringAddresses): void {
    try {
      this.ringViews(size, a);
    } catch (e) {
      throw new ProtocolError(`vring ${index}: ${(e as Error).message}`);
    }
    if (this.packed) {
      // §2.8.10: the device writes the descriptor ring (used descriptors) and the Device Event
      // Suppression area, the driver the ring and the Driver area: no two parts may overlap.
      const parts = [
        ['descriptor ring', a.desc, descRingBytes(size)],
        ['driver event suppression area', a.avail, EVENT_SUPPRESS_SIZE],
        ['device event suppression area', a.used, EVENT_SUPPRESS_SIZE],
      ] as const;
      for (let i = 0; i < parts.length; i++) {
        for (let j = i + 1; j < parts.length; j++) {
          const [n1, s1, l1] = parts[i]!;
          const [n2, s2, l2] = parts[j]!;
          if (s1 < s2 + l2 && s2 < s1 + l1) {
            throw new ProtocolError(`vring ${index}: the ${n1} [0x${s1.toString(16)}, +${l1}) overlaps the ${n2} [0x${s2.toString(16)}, +${l2}) (§2.8.10)`);
          }
        }
      }
      return;
    }
    const usedEnd = a.used + usedRingBytes(size);
    for (const [what, start, len] of [
      ['descriptor table', a.desc, descTableBytes(size)],
      ['available ring', a.avail, availRingBytes(size)],
    ] as const) {
      if (a.used < start + len && start < usedEnd) {
        throw new ProtocolError(
          `vring ${index}: the used ring [0x${a.used.toString(16)}, +${usedRingBytes(size)}) overlaps the ${what} [0x${start.toString(16)}, +${len}) (§2.7: the device writes the used ring)`,
        );
      }
    }
  }

  private setVringBase(index: number, num: number): void {
    const v = this.vring(index);
    if (this.packed) {
      // [vhost-user "Vring descriptor indices for packed virtqueues"]: both positions with their
      // wrap counters; checked against the size when it is known (else when the ring starts).
      const problem = v.size > 0 ? packedBaseProblem(num, v.size) : null;
      if (problem) throw new ProtocolError(`vring ${index}: packed ring base 0x${num.toString(16)}: ${problem}`);
    } else if (num > 0xffff) {
      // [vhost-user "A vring descriptor index for split virtqueues"]: bits 16-31 are reserved.
      throw new ProtocolError(`vring ${index}: base 0x${num.toString(16)} does not fit in 16 bits (a split ring; VIRTIO_F_RING_PACKED was not acked)`);
    }
    this.stopRing(index);
    // A base other than where the ring stood: the front-end set up a new ring, so chains
    // still held from the old one are not resubmitted.
    if (v.base !== num) this.forgetRing(index);
    v.base = num;
    this.baseGiven[index] = true;
    this.sync(index);
  }

  /**
   * Stopping a ring drains it ([vhost-user "VHOST_USER_GET_VRING_BASE"]): requests the device
   * model is still working on complete (their used elements published, the front-end notified)
   * before the reply, so no I/O still running writes into buffers that are the guest's again,
   * and nothing is left for the inflight region to resubmit. While the model holds chains from
   * the ring, the ring takes no new ones (kicks dropped, polling off) and the channel delivers
   * no further request; the reply follows once they are answered, or after the drain timeout
   * (BackendSessionOptions.drainTimeoutMs, default DRAIN_TIMEOUT_MS) with a warning: then, as
   * before, they are dropped (the inflight region keeps them). Returns false when there is
   * nothing to wait for (the request is handled at once).
   */
  private drainFirst(m: RawMessage): boolean {
    if (m.payload.length !== VRING_STATE_SIZE || !this.owned) return false;
    const { index } = decodeVringState(m.payload);
    const v = this.vrings[index];
    if (!v || v.queue === null || this.runtime.activeQueue(index) !== v.queue) return false;
    const held = this.runtime.queueStatus(index).held;
    if (held === 0) return false;
    const timeoutMs = this.options.drainTimeoutMs ?? DRAIN_TIMEOUT_MS;
    v.setPolling(false);
    v.dropKick();
    this.channel.pause();
    let finished = false;
    const finish = (late: boolean): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (this.closed) return;
      if (late) {
        this.options.warn(
          `vhost-user: GET_VRING_BASE for vring ${index}: ${this.runtime.queueStatus(index).held} request(s) still in the device after ${timeoutMs} ms; stopping the ring without them (their answers are dropped; the inflight region keeps them)`,
        );
      }
      this.drainedRequest = m;
      this.onMessage(m);
      this.channel.resume();
    };
    const timer = setTimeout(() => finish(true), timeoutMs);
    void this.runtime.drained(index).then(() => finish(false));
    return true;
  }

  private getVringBase(index: number): Reply {
    const v = this.vring(index);
    this.stopRing(index);
    v.started = false;
    v.dropKick();
    this.device.track(index, null);
    // A packed ring that never ran is where SET_VRING_BASE (or a fresh ring, §2.8.1) put it.
    const num = this.packed && !this.baseGiven[index] ? packedVringBase(INITIAL_RING_INDEX, INITIAL_RING_INDEX) : v.base;
    return { payload: encodeVringState({ index, num }) };
  }

  private setVringFd(request: number, value: bigint, fds: Fds): void {
    const index = Number(value & BigInt(VRING_INDEX_MASK));
    const invalid = (value & BigInt(VRING_INVALID_FD)) !== 0n;
    if (value & ~BigInt(VRING_INDEX_MASK | VRING_INVALID_FD)) {
      throw new ProtocolError(`reserved bits set in 0x${value.toString(16)}`);
    }
    const v = this.vring(index);
    if (!invalid) {
      const problem = notificationFdProblem(fds.list[0]!, this.strict);
      if (problem) throw new ProtocolError(`vring ${index}: the fd is ${problem}, not an eventfd (or a pipe)`);
    }
    const fd = invalid ? null : fds.take(0);
    switch (request) {
      case Request.SET_VRING_KICK:
        this.stopRing(index);
        v.setKick(fd);
        v.started = true;
        this.sync(index);
        return;
      case Request.SET_VRING_CALL:
        v.setCall(fd);
        return;
      case Request.SET_VRING_ERR:
        v.setErr(fd);
        return;
    }
  }

  /** A used buffer notification: the ring's call eventfd (QEMU's irqfd path). */
  private signalCall(index: number): void {
    const v = this.vrings[index];
    if (!v) return;
    if (EV_IRQFD.enabled && v.hasCall) EV_IRQFD.emit(this.runtime.vdev, index);
    v.signalCall();
  }

  /** A kick (or a poll tick) for ring `index`. */
  private kick(index: number): void {
    if (this.closed) return;
    const v = this.vrings[index]!;
    try {
      if (v.queue !== null && this.runtime.activeQueue(index) === v.queue) this.runtime.notify(index);
    } catch (e) {
      // The runtime turns device errors into NEEDS_RESET itself; anything else is our bug.
      this.close(`internal error on a kick of vring ${index}: ${(e as Error)?.stack ?? e}`);
    }
  }

  /**
   * Translates the ring's user addresses into views of the mapped memory (§2.7 sizes; packed:
   * §2.8.10.1, the Descriptor Ring and the two Event Suppression areas).
   */
  private ringViews(size: number, a: VringAddresses): RingViews | PackedRingViews {
    const section = this.packed ? '§2.8.10' : '§2.7';
    const part = (uva: number, len: number, what: string): Uint8Array =>
      this.mapped.userSlice(uva, len) ??
      fail('MEM_OUT_OF_RANGE', `${what} at user address 0x${uva.toString(16)} (+${len}) is not inside one memory region`, section);
    if (this.packed) {
      checkPackedQueueSize(size);
      return packedRingViewsFromBytes(size, {
        desc: part(a.desc, descRingBytes(size), 'descriptor ring'),
        driver: part(a.avail, EVENT_SUPPRESS_SIZE, 'driver event suppression area'),
        device: part(a.used, EVENT_SUPPRESS_SIZE, 'device event suppression area'),
      });
    }
    checkQueueSize(size);
    return ringViewsFromBytes(size, {
      desc: part(a.desc, descTableBytes(size), 'descriptor table'),
      avail: part(a.avail, availRingBytes(size), 'available ring'),
      used: part(a.used, usedRingBytes(size), 'used ring'),
    });
  }

  private runnable(v: Vring): boolean {
    return v.started && v.enabled && v.size > 0 && v.addresses !== null && this.mapped.count > 0;
  }

  private syncAll(): void {
    for (let i = 0; i < this.vrings.length; i++) this.sync(i);
  }

  /** Makes the runtime's view of ring `index` match the vhost-user state: start, stop, or leave it. */
  private sync(index: number): void {
    if (this.closed) return;
    const v = this.vrings[index]!;
    const runnable = this.runnable(v);
    // A ring the front-end started and enabled is live ([vhost-user "Ring states"]), even when
    // PROTOCOL_F_STATUS was negotiated and DRIVER_OK never comes: QEMU 7.2 sends SET_STATUS for
    // FEATURES_OK only (its DRIVER_OK message arrived in QEMU 8.0).
    if (runnable) this.implicitDriverOk();
    const shouldRun = runnable && this.runtime.driverOk;
    const running = v.queue !== null && this.runtime.activeQueue(index) === v.queue;
    if (shouldRun && !running) this.startRing(index);
    else if (!shouldRun && v.queue !== null) this.stopRing(index);
    v.setPolling(v.polling && v.queue !== null && this.runtime.activeQueue(index) === v.queue);
  }

  /** Once FEATURES_OK is set, the first runnable ring stands for the driver's DRIVER_OK. */
  private implicitDriverOk(): void {
    const s = this.runtime.status;
    if (s & Status.FEATURES_OK && !(s & (Status.DRIVER_OK | Status.NEEDS_RESET | Status.FAILED))) {
      this.runtime.writeStatus(s | Status.DRIVER_OK);
    }
  }

  private startRing(index: number): void {
    const v = this.vrings[index]!;
    if (v.queue !== null) this.stopRing(index); // the runtime dropped it (reset, device error): keep its index
    let rings: RingViews | PackedRingViews;
    try {
      rings = this.ringViews(v.size, v.addresses!);
    } catch (e) {
      this.runtime.deviceError(e, index);
      return;
    }
    if (!('avail' in rings)) {
      this.startPackedRing(index, rings);
      return;
    }
    let base = v.base;
    let resubmit: number[] = [];
    let region = this.inflight?.queue(index) ?? null;
    if (region !== null && region.capacity < v.size) {
      // SET_INFLIGHT_FD described smaller queues: tracking this ring would write past its region.
      this.options.warn(`vring ${index}: the inflight buffer holds ${region.capacity} descriptors per queue, the ring has ${v.size}: not tracked`);
      region = null;
    }
    if (region !== null) {
      const usedIdx = Atomics.load(rings.used16, 1);
      const usedHead = (slot: number): number => rings.used32[1 + 2 * slot]!;
      if (region.version === 1 && region.descNum === v.size) {
        resubmit = region.recover(usedIdx, usedHead);
        base = (usedIdx + resubmit.length) & 0xffff;
        if (base !== v.base) {
          this.options.warn(`vring ${index}: next available index ${base} from the inflight buffer (front-end said ${v.base})`);
        }
      } else {
        if (region.version !== 0) {
          this.options.warn(`vring ${index}: inflight region (version ${region.version}, ${region.descNum} descriptors) does not match a ring of ${v.size}: reinitialised`);
        }
        region.initialise(v.size, usedIdx);
      }
      this.device.track(index, { region, usedIdx: () => Atomics.load(rings.used16, 1), usedHead });
      this.device.takePending(index); // the region knows them (and those before the restart of the back-end)
    } else {
      // Chains the model still held when the ring stopped: the runtime dropped their
      // completions, so they are handed to the device again, oldest first.
      resubmit = this.device.takePending(index);
    }
    v.queue = this.runtime.startQueue(index, rings, { nextAvail: base });
    this.resubmitAndLook(index, resubmit, region !== null);
  }

  /** Hands `resubmit` to the model again, then looks at the ring (buffers may have come while it was stopped). */
  private resubmitAndLook(index: number, resubmit: number[], tracked: boolean): void {
    const v = this.vrings[index]!;
    if (v.queue === null) return;
    if (resubmit.length > 0) {
      this.options.warn(`vring ${index}: resubmitting ${resubmit.length} request(s) in flight before the ring ${tracked ? 'or the back-end ' : ''}restarted`);
      this.runtime.resubmit(index, resubmit);
    }
    // Buffers may have been made available while the ring was stopped or disabled.
    if (this.runtime.activeQueue(index) === v.queue) this.runtime.notify(index);
  }

  /**
   * A packed ring (§2.8) from its vhost-user base (both positions and wrap counters). The
   * inflight buffer does not track packed rings (see getInflightFd); chains the model still held
   * when the ring stopped on this connection are walked again from the lists the old queue kept
   * (keepLists, taken over with adopt: a packed ring's used descriptors overwrite the lists of
   * buffers still in flight, §2.8.9, so guest memory no longer has them).
   */
  private startPackedRing(index: number, rings: PackedRingViews): void {
    const v = this.vrings[index]!;
    const { nextAvail, nextUsed } = this.baseGiven[index] ? parsePackedVringBase(v.base) : { nextAvail: INITIAL_RING_INDEX, nextUsed: INITIAL_RING_INDEX };
    const resubmit = this.device.takePending(index);
    try {
      v.queue = this.runtime.startQueue(index, rings, { nextAvail, nextUsed, keepLists: true, adopt: this.retired[index] ?? null });
    } catch (e) {
      // A base that does not fit the ring (given before the size, so not checked then).
      this.runtime.deviceError(e, index);
      return;
    }
    this.retired[index] = null;
    this.resubmitAndLook(index, resubmit, false);
  }

  /** Takes ring `index` out of the runtime, remembering where it stood. */
  private stopRing(index: number): void {
    const v = this.vrings[index]!;
    v.setPolling(false);
    if (v.queue === null) return;
    if (v.queue instanceof PackedDeviceQueue) {
      v.base = v.queue.vringBase;
      this.baseGiven[index] = true;
      this.retired[index] = v.queue;
    } else {
      v.base = v.queue.nextAvail;
    }
    if (this.runtime.activeQueue(index) === v.queue) this.runtime.stopQueue(index);
    v.queue = null;
    this.device.stopped(index);
    this.device.track(index, null);
  }

  private stopAll(): void {
    for (let i = 0; i < this.vrings.length; i++) this.stopRing(i);
  }

  // ---------------------------------------------------------------- config space

  private configRange(offset: number, size: number): void {
    const total = this.options.device.configSize;
    if (offset > total || size > total - offset) {
      throw new ProtocolError(`config access [${offset}, +${size}) is outside the ${total}-byte config space`);
    }
  }

  private getConfig(p: Uint8Array): Reply {
    const c = decodeConfig(p);
    this.configRange(c.offset, c.size);
    return { payload: encodeConfig({ offset: c.offset, flags: c.flags, data: this.runtime.readConfig(c.offset, c.size) }) };
  }

  private setConfig(p: Uint8Array): void {
    const c = decodeConfig(p);
    if (c.flags !== ConfigFlag.WRITABLE && c.flags !== ConfigFlag.MIGRATION) {
      throw new ProtocolError(`config flags ${c.flags} are neither 0 (writable fields) nor 1 (migration)`);
    }
    this.configRange(c.offset, c.size);
    this.runtime.writeConfig(c.offset, c.data.slice());
  }

  // ---------------------------------------------------------------- inflight buffer

  private getInflightFd(p: Uint8Array): Reply {
    const d = decodeInflight(p);
    if (d.numQueues === 0 || d.numQueues > this.vrings.length) {
      throw new ProtocolError(`inflight buffer for ${d.numQueues} queues; the device has ${this.vrings.length}`);
    }
    if (!(d.queueSize > 0 && (d.queueSize & (d.queueSize - 1)) === 0 && d.queueSize <= this.options.maxQueueSize)) {
      throw new ProtocolError(`inflight queue size ${d.queueSize} is not a power of two in 1..${this.options.maxQueueSize}`);
    }
    if (this.packed) {
      // [vhost-user "Inflight I/O tracking"] defines a packed layout too; this back-end does not
      // track packed rings in it (docs/vhost-user.md "Packed rings": a back-end restart loses
      // the requests in flight). The buffer is still given, zeroed (version 0 everywhere): QEMU
      // 7.2's vhost-user-blk does not start a device without one.
      this.options.warn(`vhost-user: GET_INFLIGHT_FD with VIRTIO_F_RING_PACKED: packed rings are not tracked in the inflight buffer (a back-end restart loses their requests in flight)`);
    }
    const { fd, size } = createInflightFd(d.numQueues, d.queueSize);
    return {
      payload: encodeInflight({ mmapSize: BigInt(size), mmapOffset: 0n, numQueues: d.numQueues, queueSize: d.queueSize }),
      fds: [fd],
    };
  }

  private setInflightFd(p: Uint8Array, fds: Fds): void {
    const d = decodeInflight(p);
    const mmapSize = toSafeNumber(d.mmapSize);
    const mmapOffset = toSafeNumber(d.mmapOffset);
    // The same bounds as GET_INFLIGHT_FD: a buffer for queues the device does not have, or of
    // a size no ring can have, describes nothing this back-end could track.
    if (d.numQueues === 0 || d.numQueues > this.vrings.length) {
      throw new ProtocolError(`inflight buffer for ${d.numQueues} queues; the device has ${this.vrings.length}`);
    }
    if (!(d.queueSize > 0 && (d.queueSize & (d.queueSize - 1)) === 0 && d.queueSize <= this.options.maxQueueSize)) {
      throw new ProtocolError(`inflight queue size ${d.queueSize} is not a power of two in 1..${this.options.maxQueueSize}`);
    }
    const larger = this.vrings.filter((v) => v.index < d.numQueues && v.size > d.queueSize);
    if (larger.length > 0) {
      throw new ProtocolError(`inflight queue size ${d.queueSize} is smaller than vring ${larger[0]!.index} (${larger[0]!.size} descriptors): it could not be tracked`);
    }
    if (mmapSize === null || mmapOffset === null) throw new ProtocolError('inflight buffer size or offset beyond 2^53');
    const fd = fds.take(0);
    let buffer: InflightBuffer;
    try {
      buffer = InflightBuffer.map(fd, { mmapSize, mmapOffset, numQueues: d.numQueues, queueSize: d.queueSize });
    } catch (e) {
      throw new ProtocolError((e as Error).message);
    }
    this.stopAll();
    this.inflight?.unmap();
    this.inflight = buffer;
    this.syncAll();
  }

  // ---------------------------------------------------------------- teardown

  /**
   * The SIGBUS guard replaced pages of front-end memory (the front-end shrank a region's fd
   * after SET_MEM_TABLE): what the device read or wrote there since is not the guest's
   * memory, so the connection ends, as for any request the back-end cannot honour.
   */
  private checkMemoryFaults(): void {
    if (this.closed) return;
    const lost = this.mapped.faulted();
    if (lost.length === 0) return;
    const where = lost.map(({ region, pages }) => `${pages} page(s) of region gpa 0x${region.guestAddr.toString(16)} (size 0x${region.size.toString(16)})`).join(', ');
    this.options.warn(`front-end memory shrank under the back-end: ${where} gone (its fd was truncated after SET_MEM_TABLE; SIGBUS caught, zero pages mapped in their place); closing the connection`);
    this.close('front-end memory shrank under the back-end');
  }

  private dispose(reason: string | null): void {
    if (this.closed) return;
    this.stopAll();
    this.closed = true;
    this.unwatchFaults();
    for (const v of this.vrings) v.close();
    this.backend?.close();
    this.backend = null;
    this.mapped.clear();
    this.inflight?.unmap();
    this.inflight = null;
    this.options.onClose?.(reason);
  }
}

/** `SET_VRING_NUM flags=0x9 size=8 fds=0 payload=00000000 00010000` for trace lines. */
export function describeRequest(m: RawMessage): string {
  const hex = Array.from(m.payload.subarray(0, 48), (b) => b.toString(16).padStart(2, '0')).join('');
  const words = hex.replace(/(.{8})/g, '$1 ').trim();
  return `${requestName(m.request)} flags=0x${m.flags.toString(16)} size=${m.size} fds=${m.fds.length}${m.size ? ` payload=${words}${m.size > 48 ? ' ...' : ''}` : ''}`;
}

/**
 * Why `num` is not a packed ring base for a ring of `size` ([vhost-user "Vring descriptor
 * indices for packed virtqueues"]), or null: each position must lie in the ring, and the
 * device cannot have taken more descriptors than the ring holds (§2.8: next available at most
 * `size` ring descriptors ahead of next used, counted across the wrap).
 */
export function packedBaseProblem(num: number, size: number): string | null {
  const { nextAvail, nextUsed } = parsePackedVringBase(num);
  let a: { pos: number; wrap: number };
  let u: { pos: number; wrap: number };
  try {
    a = checkRingIndex(nextAvail, size, 'last avail index');
    u = checkRingIndex(nextUsed, size, 'last used index');
  } catch (e) {
    return (e as Error).message;
  }
  const m = 2 * size;
  const inFlight = (linearIndex(a.pos, a.wrap, size) - linearIndex(u.pos, u.wrap, size) + m) % m;
  if (inFlight > size) return `${inFlight} descriptors between last used (position ${u.pos}, wrap ${u.wrap}) and last avail (position ${a.pos}, wrap ${a.wrap}), more than the ring's ${size}`;
  return null;
}

/** Why `fd` cannot be the back-end request channel, or null for a connected AF_UNIX stream socket. */
function backendSocketProblem(fd: number): string | null {
  const kind = native.fdKind(fd);
  if (kind !== 'socket') return describeFd(fd);
  const info = native.socketInfo(fd);
  if (info.family !== 'unix' || info.type !== 'stream') return `a ${info.family} ${info.type} socket`;
  if (info.listening) return 'a listening socket';
  return null;
}
