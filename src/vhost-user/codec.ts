/**
 * The vhost-user message codec: header encoding, and strict validation of a received
 * front-end request against what [vhost-user "Front-end message types"] defines for it:
 * the payload size, and the number of file descriptors in the ancillary data
 * ([vhost-user "Communication"] lists the requests that carry fds).
 *
 * A violation is a ProtocolError. `fatal` ones mean the byte stream itself can no longer
 * be trusted (bad version, absurd size): the connection must be closed. The others leave
 * framing intact: the request is refused (an error reply where one is due) and the
 * connection goes on.
 */
import {
  HEADER_SIZE,
  HeaderFlag,
  MAX_CONFIG_SIZE,
  MAX_PAYLOAD_SIZE,
  Request,
  VRING_INVALID_FD,
  requestName,
} from './protocol.js';
import {
  CONFIG_HEADER_SIZE,
  INFLIGHT_DESCRIPTION_SIZE,
  MAX_MEM_TABLE_REGIONS,
  MEM_TABLE_HEADER_SIZE,
  MEMORY_REGION_SIZE,
  SINGLE_MEMORY_REGION_SIZE,
  U64_SIZE,
  VRING_ADDRESS_SIZE,
  VRING_STATE_SIZE,
  decodeConfig,
  decodeU64,
  memTableCount,
} from './payloads.js';

export interface Header {
  request: number;
  flags: number;
  size: number;
}

/** A message as read from a socket: header, payload bytes, and the fds that came with it. */
export interface RawMessage extends Header {
  payload: Uint8Array;
  fds: number[];
  /** The sender attached more fds than we accept per message (the extra ones were closed). */
  truncatedFds: boolean;
}

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    message: string,
    /** The stream cannot be trusted any more: close the connection. */
    readonly fatal = false,
  ) {
    super(message);
  }
}

export function encodeHeader(h: Header): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const v = new DataView(out.buffer);
  v.setUint32(0, h.request >>> 0, true);
  v.setUint32(4, h.flags >>> 0, true);
  v.setUint32(8, h.size >>> 0, true);
  return out;
}

export function decodeHeader(b: Uint8Array): Header {
  const v = new DataView(b.buffer, b.byteOffset, HEADER_SIZE);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
}

/** Header + payload in one buffer (one sendmsg, so fds travel with the header's first byte). */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  out.set(encodeHeader({ request, flags, size: payload.length }));
  out.set(payload, HEADER_SIZE);
  return out;
}

/**
 * Checks a header ([vhost-user "Header"]) as soon as its 12 bytes are in, before the
 * payload is read. `expectReply` is for the receiving side of replies (front-end).
 */
export function checkHeader(h: Header, expectReply = false): void {
  if ((h.flags & HeaderFlag.VERSION_MASK) !== HeaderFlag.VERSION) {
    throw new ProtocolError(`${requestName(h.request)}: version ${h.flags & HeaderFlag.VERSION_MASK} in flags 0x${h.flags.toString(16)}, expected 1`, true);
  }
  if (h.size > MAX_PAYLOAD_SIZE) {
    throw new ProtocolError(`${requestName(h.request)}: payload size ${h.size} exceeds the maximum ${MAX_PAYLOAD_SIZE}`, true);
  }
  if (!expectReply && h.flags & HeaderFlag.REPLY) {
    throw new ProtocolError(`${requestName(h.request)}: a request has the REPLY flag set`);
  }
}

/** How many fds a request takes. */
type FdRule =
  | { kind: 'none' }
  | { kind: 'one' }
  /** SET_VRING_KICK/CALL/ERR: one fd, or none when the u64 has the invalid-fd flag (bit 8). */
  | { kind: 'vring' }
  /** SET_MEM_TABLE: one per region. */
  | { kind: 'per-region' }
  /** REM_MEM_REG: SHOULD be none; MAY be one, which MUST be closed unused. */
  | { kind: 'ignored-one' };

type SizeRule =
  | { kind: 'exact'; size: number }
  | { kind: 'range'; min: number; max: number }
  | { kind: 'mem-table' }
  | { kind: 'config' };

export interface RequestRule {
  payload: SizeRule;
  fds: FdRule;
  /** The request always has a reply ([vhost-user "Communication"]). */
  replies: boolean;
}

const none: FdRule = { kind: 'none' };
const exact = (size: number): SizeRule => ({ kind: 'exact', size });

/**
 * What this back-end understands. Requests not listed are answered as unsupported
 * (an error where a reply is due) without being interpreted.
 */
export const REQUEST_RULES: ReadonlyMap<number, RequestRule> = new Map<number, RequestRule>([
  [Request.GET_FEATURES, { payload: exact(0), fds: none, replies: true }],
  [Request.SET_FEATURES, { payload: exact(U64_SIZE), fds: none, replies: false }],
  [Request.GET_PROTOCOL_FEATURES, { payload: exact(0), fds: none, replies: true }],
  [Request.SET_PROTOCOL_FEATURES, { payload: exact(U64_SIZE), fds: none, replies: false }],
  [Request.SET_OWNER, { payload: exact(0), fds: none, replies: false }],
  [Request.RESET_OWNER, { payload: exact(0), fds: none, replies: false }],
  [Request.SET_MEM_TABLE, { payload: { kind: 'mem-table' }, fds: { kind: 'per-region' }, replies: false }],
  [Request.GET_MAX_MEM_SLOTS, { payload: exact(0), fds: none, replies: true }],
  [Request.ADD_MEM_REG, { payload: exact(SINGLE_MEMORY_REGION_SIZE), fds: { kind: 'one' }, replies: false }],
  [Request.REM_MEM_REG, { payload: exact(SINGLE_MEMORY_REGION_SIZE), fds: { kind: 'ignored-one' }, replies: false }],
  [Request.SET_VRING_NUM, { payload: exact(VRING_STATE_SIZE), fds: none, replies: false }],
  [Request.SET_VRING_ADDR, { payload: exact(VRING_ADDRESS_SIZE), fds: none, replies: false }],
  [Request.SET_VRING_BASE, { payload: exact(VRING_STATE_SIZE), fds: none, replies: false }],
  [Request.GET_VRING_BASE, { payload: exact(VRING_STATE_SIZE), fds: none, replies: true }],
  [Request.SET_VRING_KICK, { payload: exact(U64_SIZE), fds: { kind: 'vring' }, replies: false }],
  [Request.SET_VRING_CALL, { payload: exact(U64_SIZE), fds: { kind: 'vring' }, replies: false }],
  [Request.SET_VRING_ERR, { payload: exact(U64_SIZE), fds: { kind: 'vring' }, replies: false }],
  [Request.SET_VRING_ENABLE, { payload: exact(VRING_STATE_SIZE), fds: none, replies: false }],
  [Request.GET_QUEUE_NUM, { payload: exact(0), fds: none, replies: true }],
  [Request.GET_CONFIG, { payload: { kind: 'config' }, fds: none, replies: true }],
  [Request.SET_CONFIG, { payload: { kind: 'config' }, fds: none, replies: false }],
  [Request.SET_BACKEND_REQ_FD, { payload: exact(0), fds: { kind: 'one' }, replies: false }],
  [Request.RESET_DEVICE, { payload: exact(0), fds: none, replies: false }],
  [Request.SET_STATUS, { payload: exact(U64_SIZE), fds: none, replies: false }],
  [Request.GET_STATUS, { payload: exact(0), fds: none, replies: true }],
  // QEMU's struct is 24 bytes (u64, u64, u16, u16, padding); a packed 20 is accepted too.
  [Request.GET_INFLIGHT_FD, { payload: { kind: 'range', min: 20, max: INFLIGHT_DESCRIPTION_SIZE }, fds: none, replies: true }],
  [Request.SET_INFLIGHT_FD, { payload: { kind: 'range', min: 20, max: INFLIGHT_DESCRIPTION_SIZE }, fds: { kind: 'one' }, replies: false }],
]);

/** Whether a reply must be sent for this request regardless of NEED_REPLY. */
export function alwaysReplies(request: number): boolean {
  return REQUEST_RULES.get(request)?.replies ?? false;
}

/**
 * Validates a complete request's payload size and fd count. Returns the fds the request
 * uses (in order) and the ones that must be closed unused; throws ProtocolError otherwise.
 * The caller closes every received fd when this throws.
 */
export function checkRequest(m: RawMessage): { fds: number[]; extraFds: number[] } {
  const name = requestName(m.request);
  const rule = REQUEST_RULES.get(m.request);
  if (!rule) throw new ProtocolError(`${name} is not supported`);
  checkSize(name, rule.payload, m.payload);
  if (m.truncatedFds) throw new ProtocolError(`${name}: too many file descriptors (some were dropped)`);
  const n = m.fds.length;
  switch (rule.fds.kind) {
    case 'none':
      return { fds: [], extraFds: m.fds };
    case 'ignored-one':
      if (n > 1) throw new ProtocolError(`${name}: ${n} file descriptors, at most 1 allowed`);
      return { fds: [], extraFds: m.fds };
    case 'one':
      expectFds(name, n, 1);
      return { fds: m.fds, extraFds: [] };
    case 'vring': {
      const invalid = (decodeU64(m.payload) & BigInt(VRING_INVALID_FD)) !== 0n;
      expectFds(name, n, invalid ? 0 : 1, invalid ? ' (invalid-fd flag set)' : '');
      return { fds: m.fds, extraFds: [] };
    }
    case 'per-region':
      expectFds(name, n, memTableCount(m.payload), ' (one per region)');
      return { fds: m.fds, extraFds: [] };
  }
}

function expectFds(name: string, got: number, want: number, why = ''): void {
  if (got > want) throw new ProtocolError(`${name}: too many file descriptors: ${got}, expected ${want}${why}`);
  if (got < want) throw new ProtocolError(`${name}: too few file descriptors: ${got}, expected ${want}${why}`);
}

function checkSize(name: string, rule: SizeRule, payload: Uint8Array): void {
  const size = payload.length;
  switch (rule.kind) {
    case 'exact':
      if (size !== rule.size) throw new ProtocolError(`${name}: payload size ${size}, expected ${rule.size}`);
      return;
    case 'range':
      if (size < rule.min || size > rule.max) {
        throw new ProtocolError(`${name}: payload size ${size}, expected ${rule.min}..${rule.max}`);
      }
      return;
    case 'mem-table': {
      // [vhost-user "Multiple Memory regions description"]: count, padding, regions. Front-ends
      // send either exactly `count` regions (QEMU) or a fixed array (virtio_uml sends room for 2).
      if (size < MEM_TABLE_HEADER_SIZE || (size - MEM_TABLE_HEADER_SIZE) % MEMORY_REGION_SIZE !== 0) {
        throw new ProtocolError(`${name}: payload size ${size} is not 8 + 32 * n`);
      }
      const count = memTableCount(payload);
      const room = (size - MEM_TABLE_HEADER_SIZE) / MEMORY_REGION_SIZE;
      if (count === 0 || count > MAX_MEM_TABLE_REGIONS) {
        throw new ProtocolError(`${name}: ${count} regions, expected 1..${MAX_MEM_TABLE_REGIONS}`);
      }
      if (count > room) throw new ProtocolError(`${name}: ${count} regions in a payload with room for ${room}`);
      return;
    }
    case 'config': {
      if (size < CONFIG_HEADER_SIZE) throw new ProtocolError(`${name}: payload size ${size} is smaller than the config header`);
      const c = decodeConfig(payload);
      if (c.size > MAX_CONFIG_SIZE) throw new ProtocolError(`${name}: config size ${c.size} exceeds ${MAX_CONFIG_SIZE}`);
      if (size !== CONFIG_HEADER_SIZE + c.size) {
        throw new ProtocolError(`${name}: payload size ${size} does not match 12 + config size ${c.size}`);
      }
      return;
    }
  }
}
