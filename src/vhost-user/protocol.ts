/**
 * Constants of the vhost-user protocol (QEMU docs/interop/vhost-user.rst, "Message
 * Specification", "Protocol features", "Front-end message types", "Back-end message types").
 * Section names of that document are cited as [vhost-user "Section"].
 *
 * All numbers on the wire are in the machine's native byte order; this project only
 * runs on little-endian hosts (see virtio/memory.ts), so codecs use little-endian views.
 */

/** The message header ([vhost-user "Header"]): request u32, flags u32, size u32. */
export const HEADER_SIZE = 12;

/** [vhost-user "Header"] flags. */
export const HeaderFlag = {
  /** Lower 2 bits: the protocol version, currently 1. */
  VERSION_MASK: 0x3,
  VERSION: 0x1,
  /** Bit 2: set on every reply. */
  REPLY: 0x4,
  /** Bit 3: the sender wants a reply (REPLY_ACK, [vhost-user "VHOST_USER_PROTOCOL_F_REPLY_ACK"]). */
  NEED_REPLY: 0x8,
} as const;

/**
 * Largest payload this implementation accepts. The biggest message it understands is
 * GET/SET_CONFIG with a 256-byte config space (12 + 256) and SET_MEM_TABLE with 8 regions
 * (8 + 8 * 32); anything above 4 KiB is not a message we could act on, and reading it
 * would let a peer make us buffer arbitrary amounts: the connection is closed instead.
 */
export const MAX_PAYLOAD_SIZE = 4096;

/** Largest config space access (QEMU's VHOST_USER_MAX_CONFIG_SIZE). */
export const MAX_CONFIG_SIZE = 256;

/** The virtio feature bit that announces protocol features ([vhost-user "Communication"]). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

/** Protocol feature bit numbers ([vhost-user "Protocol features"]). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/** Request ids sent by the front-end ([vhost-user "Front-end message types"]). */
export const Request = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;
export type RequestCode = (typeof Request)[keyof typeof Request];

/** Request ids sent by the back-end on its channel ([vhost-user "Back-end message types"]). */
export const BackendRequest = {
  IOTLB_MSG: 1,
  CONFIG_CHANGE_MSG: 2,
  VRING_HOST_NOTIFIER_MSG: 3,
  VRING_CALL: 4,
  VRING_ERR: 5,
  SHARED_OBJECT_ADD: 6,
  SHARED_OBJECT_REMOVE: 7,
  SHARED_OBJECT_LOOKUP: 8,
} as const;

const requestNames = new Map<number, string>(Object.entries(Request).map(([k, v]) => [v, k]));
const backendRequestNames = new Map<number, string>(Object.entries(BackendRequest).map(([k, v]) => [v, k]));

/** `SET_VRING_KICK` for 12, `request 99` for an unknown id: for log lines. */
export function requestName(code: number): string {
  return requestNames.get(code) ?? `request ${code}`;
}

export function backendRequestName(code: number): string {
  return backendRequestNames.get(code) ?? `backend request ${code}`;
}

/**
 * [vhost-user "VHOST_USER_SET_VRING_KICK"] (and CALL, ERR): the u64 payload carries the
 * vring index in bits 0-7 and the invalid-fd flag in bit 8 ("no fd: poll instead").
 */
export const VRING_INDEX_MASK = 0xff;
export const VRING_INVALID_FD = 0x100;

/** [vhost-user "A vring address description"] flags: bit 0 asks for used-ring logging. */
export const VRING_F_LOG = 0x1;

/** [vhost-user "Virtio device config space"] flags. */
export const ConfigFlag = {
  WRITABLE: 0,
  MIGRATION: 1,
} as const;

/** A feature set with bit n (bigint mask, as in virtio/constants.ts). */
export const pbit = (n: number): bigint => 1n << BigInt(n);
