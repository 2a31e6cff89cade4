/**
 * The vhost-user fuzz targets, in the shape of test/fuzz/targets.ts (a fast-check arbitrary of
 * plain-JSON inputs and a synchronous check that throws on a violated property). Shared by
 * test/vhost-user/fuzz.test.ts (corpus replay and short runs in `npm test`) and
 * scripts/fuzz.mjs (long runs; counterexamples go to test/corpus/<target>/).
 *
 * - `vhost-user-codec`: the message parser (header check, request validation, payload decoders).
 * - `vhost-user-session`: the back-end's state machine, driven synchronously: a BackendSession
 *   on one end of a socket pair gets a random sequence of (mostly well-formed, then mutated)
 *   requests with real fds (eventfds, memfds whose content is random guest memory, sockets),
 *   plus kicks, and the replies are read back from the other end after every request. The
 *   session is strict (the default) or lenient (`strict: false`), as the input says; a stored
 *   input without `strict` is checked in both modes.
 */
import fc from 'fast-check';
import { readFileSync, readdirSync } from 'node:fs';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { BackendSession, OFFERED_PROTOCOL_FEATURES } from '../../src/vhost-user/backend-session.js';
import { ProtocolError, REQUEST_RULES, checkHeader, checkRequest, decodeHeader, encodeMessage, type RawMessage } from '../../src/vhost-user/codec.js';
import { native } from '../../src/vhost-user/native/index.js';
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
  encodeMemTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddress,
  encodeVringState,
} from '../../src/vhost-user/payloads.js';
import { HEADER_SIZE, HeaderFlag, MAX_PAYLOAD_SIZE, ProtocolFeature, Request, VHOST_USER_F_PROTOCOL_FEATURES, VRING_INVALID_FD, pbit, requestName } from '../../src/vhost-user/protocol.js';
import { FeatureBit, bit } from '../../src/virtio/constants.js';
import type { FuzzTarget } from '../fuzz/targets.js';

class PropertyError extends Error {
  override readonly name = 'PropertyError';
}
function ensure(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new PropertyError(typeof message === 'string' ? message : message());
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));

// ------------------------------------------------------------------------------------------
// Payload generators (JSON: hex strings), biased to what the requests define

const u64Arb = fc.oneof(
  fc.constantFrom(0n, 1n, 0x100n, 0x1ffn, 0x200n, 0xffn, 0xffff_ffff_ffff_ffffn, 1n << 32n, 1n << 53n),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
);
const smallU64 = fc.oneof(fc.constantFrom(0n, 1n, 16n, 256n, 0x1000n, 0x10000n), fc.bigInt({ min: 0n, max: 0x20000n }));
const userBase = 0x7000_0000n;
const regionArb = fc.record({
  guestAddr: fc.oneof(fc.constantFrom(0n, 0x10000n, 0x4000_0000n), smallU64, u64Arb),
  size: fc.oneof(fc.constantFrom(0x10000n, 0x8000n, 0x1000n, 0n, 0x20000n), u64Arb),
  userAddr: fc.oneof(fc.constantFrom(userBase, userBase + 0x10000n, userBase + 0x8000n), u64Arb),
  mmapOffset: fc.oneof(fc.constantFrom(0n, 0x1000n, 0x800n, 0x10000n), u64Arb),
});
const index = fc.oneof(fc.constantFrom(0, 0, 0, 1, 255), fc.integer({ min: 0, max: 0xffff_ffff }));

/** A payload for `request`: well-formed by construction most of the time. */
function payloadFor(request: number): fc.Arbitrary<Uint8Array> {
  switch (request) {
    case Request.SET_FEATURES:
    case Request.SET_PROTOCOL_FEATURES:
    case Request.SET_STATUS:
      return u64Arb.map((x) => encodeU64(x));
    case Request.SET_VRING_KICK:
    case Request.SET_VRING_CALL:
    case Request.SET_VRING_ERR:
      return fc.oneof(fc.constantFrom(0n, BigInt(VRING_INVALID_FD), 1n, 0x200n), u64Arb).map((x) => encodeU64(x));
    case Request.SET_VRING_NUM:
    case Request.SET_VRING_BASE:
    case Request.GET_VRING_BASE:
    case Request.SET_VRING_ENABLE:
      return fc
        .record({ index, num: fc.oneof(fc.constantFrom(0, 1, 2, 3, 16, 64, 128, 256, 32768, 65536), fc.integer({ min: 0, max: 0xffff_ffff })) })
        .map((s) => encodeVringState(s));
    case Request.SET_VRING_ADDR: {
      const part = fc.oneof(fc.constantFrom(0n, 0x1000n, 0x2000n, 0x3000n, 0xfff0n, 0x10000n), smallU64);
      return fc
        .record({ index, flags: fc.constantFrom(0, 1), desc: part, avail: part, used: part, log: fc.constantFrom(0n, 0xffff_ffff_ffff_ffffn), off: fc.constantFrom(userBase, 0n) })
        .map((a) => encodeVringAddress({ index: a.index, flags: a.flags, desc: a.off + a.desc, avail: a.off + a.avail, used: a.off + a.used, log: a.log }));
    }
    case Request.SET_MEM_TABLE:
      return fc.array(regionArb, { minLength: 0, maxLength: 9 }).map((r) => encodeMemTable(r));
    case Request.ADD_MEM_REG:
    case Request.REM_MEM_REG:
      return regionArb.map((r) => encodeSingleRegion(r));
    case Request.GET_CONFIG:
    case Request.SET_CONFIG:
      return fc
        .record({ offset: fc.oneof(fc.constantFrom(0, 4, 8, 12), fc.nat()), flags: fc.constantFrom(0, 1, 2), size: fc.oneof(fc.constantFrom(0, 4, 8, 12, 257), fc.nat({ max: 300 })) })
        .map((c) => encodeConfig({ offset: c.offset, flags: c.flags, data: new Uint8Array(c.size) }));
    case Request.GET_INFLIGHT_FD:
    case Request.SET_INFLIGHT_FD:
      return fc
        .record({
          mmapSize: fc.oneof(fc.constantFrom(0n, 0x1000n, 0x840n, 0x10000n, 1n << 60n), smallU64),
          mmapOffset: fc.oneof(fc.constantFrom(0n, 0x1000n), smallU64),
          numQueues: fc.constantFrom(0, 1, 2),
          queueSize: fc.constantFrom(0, 16, 64, 128, 100),
        })
        .map((d) => encodeInflight(d));
    default:
      return fc.constant(new Uint8Array(0));
  }
}

const knownRequests = [...REQUEST_RULES.keys()];
const requestArb = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...knownRequests) },
  { weight: 1, arbitrary: fc.oneof(fc.integer({ min: 0, max: 50 }), fc.constantFrom(0xffff_ffff)) },
);
const mutation = fc.oneof(
  { weight: 6, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('resize' as const), size: fc.nat({ max: 320 }) }) },
);
function mutate(p: Uint8Array, m: { kind: 'flip'; at: number; value: number } | { kind: 'resize'; size: number } | null): Uint8Array {
  if (m === null) return p;
  if (m.kind === 'flip') {
    if (p.length === 0) return p;
    const out = p.slice();
    out[m.at % p.length] = m.value;
    return out;
  }
  const out = new Uint8Array(m.size);
  out.set(p.subarray(0, m.size));
  return out;
}

/** One message as JSON: request, flags, payload (hex) and the kinds of fds attached. */
export interface FuzzMessage {
  request: number;
  flags: number;
  payload: string;
  fds: FdKind[];
}
type FdKind = 'eventfd' | 'memfd' | 'memfd-small' | 'socket';

const flagsArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(HeaderFlag.VERSION | HeaderFlag.NEED_REPLY, HeaderFlag.VERSION) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }) },
);
const fdsArb = (request: number): fc.Arbitrary<FdKind[]> => {
  const likely: FdKind[] =
    request === Request.SET_MEM_TABLE ? ['memfd', 'memfd'] : request === Request.ADD_MEM_REG || request === Request.SET_INFLIGHT_FD ? ['memfd'] : request === Request.SET_BACKEND_REQ_FD ? ['socket'] : [Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR].includes(request as 12) ? ['eventfd'] : [];
  return fc.oneof(
    { weight: 4, arbitrary: fc.constant(likely) },
    { weight: 1, arbitrary: fc.array(fc.constantFrom<FdKind>('eventfd', 'memfd', 'memfd-small', 'socket'), { maxLength: 4 }) },
  );
};
export const messageArb: fc.Arbitrary<FuzzMessage> = requestArb.chain((request) =>
  fc.record({ payload: payloadFor(request), mutation, flags: flagsArb, fds: fdsArb(request) }).map((m) => ({
    request,
    flags: m.flags,
    payload: hex(mutate(m.payload, m.mutation)),
    fds: m.fds,
  })),
);

// ------------------------------------------------------------------------------------------
// 1. The codec

export interface CodecInput {
  request: number;
  flags: number;
  /** The header's size field (usually the payload length). */
  size: number;
  payload: string;
  fds: number;
  truncatedFds: boolean;
}

export const vhostUserCodec: FuzzTarget<CodecInput> = {
  name: 'vhost-user-codec',
  description: 'header check and request validation throw only ProtocolError; an accepted request decodes; fds are partitioned',
  arbitrary: messageArb.chain((m) =>
    fc.record({
      size: fc.oneof({ weight: 8, arbitrary: fc.constant(unhex(m.payload).length) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }) }),
      fds: fc.nat({ max: 10 }),
      truncatedFds: fc.boolean(),
    }).map((x) => ({ request: m.request, flags: m.flags, size: x.size, payload: m.payload, fds: x.fds, truncatedFds: x.truncatedFds && x.fds === 8 })),
  ),
  check(input) {
    const payload = unhex(input.payload);
    const bytes = encodeMessage(input.request, input.flags, payload);
    const h = decodeHeader(bytes);
    ensure(h.request === input.request >>> 0 && h.flags === input.flags >>> 0 && h.size === payload.length, 'header does not round-trip');
    const header = { ...h, size: input.size >>> 0 };
    try {
      checkHeader(header);
    } catch (e) {
      ensure(e instanceof ProtocolError, () => `checkHeader threw ${(e as Error)?.stack ?? e}`);
      const fatal = (header.flags & HeaderFlag.VERSION_MASK) !== HeaderFlag.VERSION || header.size > MAX_PAYLOAD_SIZE;
      ensure(e.fatal === fatal, `checkHeader: fatal=${e.fatal} for flags 0x${header.flags.toString(16)} size ${header.size}`);
      if (fatal) return;
    }
    ensure(header.size <= MAX_PAYLOAD_SIZE || false, 'a size over the maximum passed checkHeader');
    const fds = Array.from({ length: input.fds }, (_, i) => 1000 + i);
    const m: RawMessage = { ...h, payload, fds, truncatedFds: input.truncatedFds };
    let result: { fds: number[]; extraFds: number[] };
    try {
      result = checkRequest(m);
    } catch (e) {
      ensure(e instanceof ProtocolError && !e.fatal, () => `checkRequest threw ${(e as Error)?.stack ?? e}`);
      return;
    }
    const rule = REQUEST_RULES.get(input.request);
    ensure(rule !== undefined, `request ${input.request} is not supported but was accepted`);
    ensure(!input.truncatedFds, 'a message with dropped fds was accepted');
    ensure(JSON.stringify([...result.fds, ...result.extraFds].sort()) === JSON.stringify(fds.slice().sort()), 'fds are not partitioned into used and extra');
    if (rule.fds.kind === 'none') ensure(result.fds.length === 0, 'a request that takes no fd kept one');
    if (rule.payload.kind === 'exact') ensure(payload.length === rule.payload.size, 'payload size not checked');
    // An accepted payload decodes without throwing.
    switch (input.request) {
      case Request.SET_MEM_TABLE: {
        const regions = decodeMemTable(payload);
        ensure(regions.length >= 1 && regions.length <= 8 && regions.length === result.fds.length, 'mem table count / fds');
        break;
      }
      case Request.ADD_MEM_REG:
      case Request.REM_MEM_REG:
        decodeSingleRegion(payload);
        break;
      case Request.SET_VRING_ADDR:
        decodeVringAddress(payload);
        break;
      case Request.GET_CONFIG:
      case Request.SET_CONFIG: {
        const c = decodeConfig(payload);
        ensure(c.size <= 256 && c.data.length === c.size, 'config size');
        break;
      }
      case Request.GET_INFLIGHT_FD:
      case Request.SET_INFLIGHT_FD:
        decodeInflight(payload);
        break;
      default:
        if (payload.length === 8 && rule.payload.kind === 'exact') {
          decodeU64(payload);
          decodeVringState(payload);
        }
    }
  },
};

// ------------------------------------------------------------------------------------------
// 2. The session state machine

/** A message, or a kick of vring `kick` (what a readable kick eventfd causes; only existing vrings are watched). */
export type SessionOp = FuzzMessage | { kick: number };
export interface SessionInput {
  /** Seed of the bytes every memfd is filled with (0: zeros). */
  memSeed: number;
  /**
   * Well-formed virtio-test requests laid out in every memfd at the opening's ring addresses
   * (descriptor table at 0, avail ring at 0x1000, buffers from 0x4000): how many (0: none).
   */
  ring: number;
  /** Bytes then overwritten: [offset in the memfd, value]. */
  flips: [number, number][];
  ops: SessionOp[];
  /** BackendSessionOptions.strict; absent (stored inputs from before): checked both ways. */
  strict?: boolean;
  /**
   * BackendSessionOptions.packedRing, and the opening acks VIRTIO_F_RING_PACKED: the ring is a
   * packed one (§2.8), `ring` lays packed lists. Absent (stored inputs from before): false.
   */
  packed?: boolean;
}

/** Requests this back-end answers before SET_OWNER (see backend-session.ts). */
const BEFORE_OWNER = new Set<number>([
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
/** [vhost-user "Front-end message types"]: requests with a reply payload. */
const ALWAYS_REPLIES = new Set<number>([
  Request.GET_FEATURES,
  Request.GET_PROTOCOL_FEATURES,
  Request.GET_VRING_BASE,
  Request.GET_QUEUE_NUM,
  Request.GET_CONFIG,
  Request.GET_INFLIGHT_FD,
  Request.GET_MAX_MEM_SLOTS,
  Request.GET_STATUS,
]);

/**
 * A plausible front-end's opening, so that random requests reach a configured state; `packed`:
 * it acks VIRTIO_F_RING_PACKED (the ring addresses are then the descriptor ring and the two
 * event suppression areas, §2.8.10; no SET_VRING_BASE, so the ring starts fresh).
 */
const opening = (packed: boolean): fc.Arbitrary<SessionOp[]> => fc.oneof({ weight: 6, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }).map((owner) => {
  const nr = HeaderFlag.VERSION | HeaderFlag.NEED_REPLY;
  const m = (request: number, payload: Uint8Array, fds: FdKind[] = []): FuzzMessage => ({ request, flags: nr, payload: hex(payload), fds });
  const features =
    bit(FeatureBit.VERSION_1) | bit(FeatureBit.RING_EVENT_IDX) | bit(FeatureBit.RING_INDIRECT_DESC) | bit(0) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | (packed ? bit(FeatureBit.RING_PACKED) : 0n);
  const ops: SessionOp[] = [
    m(Request.SET_PROTOCOL_FEATURES, encodeU64(OFFERED_PROTOCOL_FEATURES)),
    m(Request.SET_FEATURES, encodeU64(features)),
    m(Request.SET_MEM_TABLE, encodeMemTable([{ guestAddr: 0n, size: 0x10000n, userAddr: userBase, mmapOffset: 0n }]), ['memfd']),
    m(Request.SET_VRING_NUM, encodeVringState({ index: 0, num: 16 })),
    m(Request.SET_VRING_ADDR, encodeVringAddress({ index: 0, flags: 0, desc: userBase, avail: userBase + 0x1000n, used: userBase + 0x2000n, log: 0n })),
    m(Request.SET_VRING_KICK, encodeU64(0), ['eventfd']),
    m(Request.SET_VRING_ENABLE, encodeVringState({ index: 0, num: 1 })),
    m(Request.SET_STATUS, encodeU64(0xf)),
  ];
  return owner ? [m(Request.SET_OWNER, new Uint8Array(0)), ...ops] : ops;
});

const MEMFD_SIZE = 0x10000;
const MAX_SLOTS = 4;

function fill(fd: number, size: number, seed: number, input: SessionInput): void {
  if (seed === 0 && input.ring === 0 && input.flips.length === 0) return;
  const b = new Uint8Array(size);
  if (seed !== 0) randomFill(b, seed);
  if (input.ring > 0) (input.packed ? layPackedRing : layRing)(b, input.ring);
  for (const [at, value] of input.flips) b[at % 0x5000] = value;
  native.write(fd, b);
}

/** `n` valid requests: descriptors 2i (48 readable bytes) and 2i+1 (12 writable), avail.idx = n. */
function layRing(b: Uint8Array, n: number): void {
  const v = new DataView(b.buffer);
  for (let i = 0; i < n; i++) {
    const buf = 0x4000 + 64 * i;
    v.setBigUint64(32 * i, BigInt(buf), true);
    v.setUint32(32 * i + 8, 48, true);
    v.setUint16(32 * i + 12, 1, true); // NEXT
    v.setUint16(32 * i + 14, 2 * i + 1, true);
    v.setBigUint64(32 * i + 16, BigInt(buf + 48), true);
    v.setUint32(32 * i + 24, 12, true);
    v.setUint16(32 * i + 28, 2, true); // WRITE
    v.setUint16(0x1000 + 4 + 2 * i, 2 * i, true);
    encodeRequest(requestFor(i), b.subarray(buf, buf + 48));
  }
  v.setUint16(0x1000 + 2, n, true);
}

/**
 * `n` valid requests in a fresh packed ring at 0 (§2.8.21.1): list i is descriptors 2i (48
 * readable bytes, NEXT) and 2i+1 (12 writable), buffer id i, marked available for wrap counter 1
 * (AVAIL = 1, USED = 0, §2.8.1).
 */
function layPackedRing(b: Uint8Array, n: number): void {
  const v = new DataView(b.buffer);
  const AVAIL = 1 << 7;
  for (let i = 0; i < n; i++) {
    const buf = 0x4000 + 64 * i;
    for (const [k, addr, len, flags] of [
      [2 * i, buf, 48, 1 | AVAIL], // NEXT
      [2 * i + 1, buf + 48, 12, 2 | AVAIL], // WRITE
    ] as const) {
      v.setBigUint64(16 * k, BigInt(addr), true);
      v.setUint32(16 * k + 8, len, true);
      v.setUint16(16 * k + 12, i, true);
      v.setUint16(16 * k + 14, flags, true);
    }
    encodeRequest(requestFor(i), b.subarray(buf, buf + 48));
  }
}

function randomFill(b: Uint8Array, seed: number): void {
  const size = b.length;
  let s = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    // Mostly small numbers (plausible descriptors, indices and lengths), some anything.
    const v = s >>> 28 < 12 ? (s >>> 8) & 0x1fff : s;
    b[i] = v & 0xff;
    b[i + 1] = (v >>> 8) & 0xff;
    b[i + 2] = (v >>> 16) & 0xff;
    b[i + 3] = v >>> 24;
  }
}

function makeFd(kind: FdKind, seed: number, input: SessionInput, toClose: number[]): number {
  switch (kind) {
    case 'eventfd':
      return native.eventfd(0, true);
    case 'memfd': {
      const fd = native.memfdCreate('vhost-user-fuzz', MEMFD_SIZE);
      fill(fd, MEMFD_SIZE, seed, input);
      return fd;
    }
    case 'memfd-small':
      return native.memfdCreate('vhost-user-fuzz', 0x1000);
    case 'socket': {
      const [a, b] = native.socketPair();
      toClose.push(b);
      return a;
    }
  }
}

// The addon, once loaded, keeps one process-wide fd (the SIGBUS guard's eventfd): load it
// before any fd table is taken, so a first load inside a run is not counted as a leak.
const fdNumbers = (): string[] => (native.pageSize, readdirSync('/proc/self/fd').sort());
const fuzzMappings = (): number => readFileSync('/proc/self/maps', 'utf8').split('vhost-user-fuzz').length - 1;
const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

/** Reads every complete reply waiting on `fd` (non-blocking). */
function readReplies(fd: number): RawMessage[] {
  const chunks: number[] = [];
  const fds: number[] = [];
  const buf = new Uint8Array(8192);
  for (;;) {
    const r = native.recvMsg(fd, buf, 8);
    if (r === null || r.bytes === 0) break;
    for (let i = 0; i < r.bytes; i++) chunks.push(buf[i]!);
    fds.push(...r.fds);
  }
  const bytes = Uint8Array.from(chunks);
  const out: RawMessage[] = [];
  let at = 0;
  while (at + HEADER_SIZE <= bytes.length) {
    const h = decodeHeader(bytes.subarray(at));
    ensure(at + HEADER_SIZE + h.size <= bytes.length, 'a reply was cut short');
    out.push({ ...h, payload: bytes.slice(at + HEADER_SIZE, at + HEADER_SIZE + h.size), fds: [], truncatedFds: false });
    at += HEADER_SIZE + h.size;
  }
  ensure(at === bytes.length, 'trailing bytes after the replies');
  if (out.length > 0) out[out.length - 1]!.fds = fds;
  else fds.forEach((f) => native.close(f));
  return out;
}

export const vhostUserSession: FuzzTarget<SessionInput> = {
  name: 'vhost-user-session',
  description:
    'BackendSession (strict or lenient) under random requests (real fds, random guest memory) and kicks: no exception, no internal error, replies exactly where due, a strict refusal is a non-zero ack or a close, configuration refused before SET_OWNER, regions disjoint; after close no fd, mapping or timer left',
  arbitrary: fc.oneof({ weight: 2, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }).chain((packed) => fc.record({
    packed: fc.constant(packed),
    strict: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    memSeed: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 0x7fff_ffff }) }),
    ring: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 8 })),
    flips: fc.oneof(
      { weight: 2, arbitrary: fc.constant([] as [number, number][]) },
      { weight: 2, arbitrary: fc.array(fc.tuple(fc.oneof(fc.nat({ max: 0x100 }), fc.integer({ min: 0x1000, max: 0x1014 }), fc.nat({ max: 0x5000 })), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }) },
    ),
    ops: fc
      .tuple(
        fc.oneof({ weight: 3, arbitrary: opening(packed) }, { weight: 1, arbitrary: fc.constant([] as SessionOp[]) }),
        fc.array(fc.oneof({ weight: 6, arbitrary: messageArb as fc.Arbitrary<SessionOp> }, { weight: 1, arbitrary: fc.record({ kick: fc.constant(0) }) }), { maxLength: 30 }),
      )
      .map(([a, b]) => [...a, ...b]),
  })),
  check(input) {
    for (const strict of input.strict === undefined ? [true, false] : [input.strict]) checkSession(input, strict);
  },
};

/**
 * One run of `input` against a session. Strict ([vhost-user "Communication"], the module comment
 * of backend-session.ts): a refusal is a non-zero ack only where REPLY_ACK was negotiated before
 * the request and it has NEED_REPLY, GET_CONFIG's empty reply, or else the connection closed
 * with nothing sent (the rest of the input is then not sent). Lenient: the session never closes.
 */
function checkSession(input: SessionInput, strict: boolean): void {
  {
    const fdsBefore = fdNumbers();
    const mappingsBefore = fuzzMappings();
    const timersBefore = timers();
    const [mine, theirs] = native.socketPair();
    native.setNonblocking(mine, true);
    native.setNonblocking(theirs, true);
    const warnings: string[] = [];
    let closedReason: string | null | undefined;
    const session = new BackendSession(theirs, {
      device: new VirtioTestDevice({ print: false, queueSize: 128 }),
      log: () => {},
      warn: (l) => warnings.push(l),
      maxQueueSize: 256,
      maxMemSlots: MAX_SLOTS,
      onClose: (r) => (closedReason = r),
      strict,
      ...(input.packed ? { packedRing: true } : {}),
    });
    const onMessage = (session as unknown as { onMessage(m: RawMessage): void }).onMessage.bind(session);
    const kick = (session as unknown as { kick(i: number): void }).kick.bind(session);
    const extra: number[] = [];
    let owned = false;
    try {
      for (const [k, op] of input.ops.entries()) {
        const where = () => `op ${k} ${JSON.stringify(op)}`;
        if ('kick' in op) {
          kick(op.kick);
        } else {
          const payload = unhex(op.payload);
          const fds = op.fds.map((kind) => makeFd(kind, input.memSeed === 0 ? 0 : input.memSeed + k, input, extra));
          const ackNegotiated = (session.protocolFeatures & pbit(ProtocolFeature.REPLY_ACK)) !== 0n;
          onMessage({ request: op.request >>> 0, flags: op.flags >>> 0, size: payload.length, payload, fds, truncatedFds: false });
          const replies = readReplies(mine);
          const needReply = (op.flags & HeaderFlag.NEED_REPLY) !== 0;
          const always = ALWAYS_REPLIES.has(op.request);
          if (closedReason !== undefined) {
            ensure(strict, () => `a lenient session closed (${closedReason}) at ${where()}`);
            ensure(replies.length === 0, () => `${replies.length} replies before the close at ${where()}`);
            ensure(
              typeof closedReason === 'string' && closedReason.startsWith(`${requestName(op.request >>> 0)} refused: `),
              () => `closed for another reason (${closedReason}) at ${where()}`,
            );
            ensure(!(always ? op.request === Request.GET_CONFIG : needReply && ackNegotiated), () => `closed although the refusal could be answered at ${where()}`);
            break;
          }
          const due = always || needReply;
          ensure(replies.length === (due ? 1 : 0), () => `${replies.length} replies at ${where()}`);
          const r = replies[0];
          if (r) {
            ensure(r.request === op.request && r.flags === (HeaderFlag.VERSION | HeaderFlag.REPLY), () => `reply header ${JSON.stringify(r)} at ${where()}`);
            const ok = always ? r.size > 0 : (ensure(r.size === 8, `ack of ${r.size} bytes at ${where()}`), decodeU64(r.payload) === 0n);
            if (strict && !ok) {
              ensure(always ? op.request === Request.GET_CONFIG : ackNegotiated, () => `a refusal answered where it should close the connection at ${where()}`);
            }
            ensure(r.fds.length === (ok && op.request === Request.GET_INFLIGHT_FD ? 1 : 0), () => `${r.fds.length} fds in the reply at ${where()}`);
            r.fds.forEach((f) => native.close(f));
            if (!owned && !BEFORE_OWNER.has(op.request)) ensure(!ok, () => `accepted before SET_OWNER: ${where()}`);
            if (ok && op.request === Request.GET_QUEUE_NUM) ensure(decodeU64(r.payload) === 1n, 'GET_QUEUE_NUM');
            if (ok && op.request === Request.GET_MAX_MEM_SLOTS) ensure(decodeU64(r.payload) === BigInt(MAX_SLOTS), 'GET_MAX_MEM_SLOTS');
          }
          if (op.request === Request.SET_OWNER && payload.length === 0) owned = true;
        }
        const bad = warnings.find((w) => /internal error|device model failed/.test(w));
        ensure(bad === undefined, () => `${bad} at ${where()}`);
        // The memory table: at most the slots, regions disjoint by guest and by user address.
        const regions = session.mapped.list;
        ensure(regions.length <= MAX_SLOTS, 'more regions than slots');
        for (let i = 0; i < regions.length; i++) {
          for (let j = i + 1; j < regions.length; j++) {
            const a = regions[i]!;
            const b = regions[j]!;
            ensure(a.guestAddr + a.size <= b.guestAddr || b.guestAddr + b.size <= a.guestAddr, 'regions overlap (guest addresses)');
            ensure(a.userAddr + a.size <= b.userAddr || b.userAddr + b.size <= a.userAddr, 'regions overlap (user addresses)');
          }
        }
        for (const v of session.vrings) {
          // A packed ring's size need not be a power of two (§2.8.10.1); a split ring's must (§2.7).
          const packedRing = session.ackedFeatures !== null && (session.ackedFeatures & bit(FeatureBit.RING_PACKED)) !== 0n;
          const sizeOk = v.size > 0 && v.size <= 256 && (packedRing || (v.size & (v.size - 1)) === 0);
          if (v.queue !== null) ensure(sizeOk && v.addresses !== null, 'a running ring without a valid configuration');
        }
      }
    } finally {
      session.close();
      native.close(mine);
      extra.forEach((f) => native.close(f));
    }
    ensure(session.isClosed, 'the session did not close');
    const fdsAfter = fdNumbers();
    ensure(JSON.stringify(fdsAfter) === JSON.stringify(fdsBefore), () => `fds leaked: ${fdsAfter.filter((f) => !fdsBefore.includes(f)).join(', ')}`);
    ensure(fuzzMappings() === mappingsBefore, 'a guest memory mapping was left');
    ensure(timers() === timersBefore, 'a poll or retry timer was left');
  }
}

export const vhostUserTargets: FuzzTarget[] = [vhostUserCodec as FuzzTarget, vhostUserSession as FuzzTarget];
