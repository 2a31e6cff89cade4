/**
 * One error type for every rule of the specification a driver (or a peer) can break.
 * `code` names the rule, `section` the place in virtio 1.2 (or the vhost-user spec) it comes from.
 * A device that meets one of these while processing a queue sets DEVICE_NEEDS_RESET (§2.1.2).
 */
export type VirtioErrorCode =
  // guest memory
  | 'MEM_OUT_OF_RANGE' // an address/length pair not inside one memory region (including one that overflows 64 bits)
  // ring placement and configuration
  | 'QUEUE_SIZE_INVALID' // not a power of two, 0, or > max
  | 'QUEUE_ALIGNMENT' // ring area misaligned (§2.7: desc 16, avail 2, used 4)
  | 'QUEUE_NOT_READY'
  // available ring
  | 'AVAIL_IDX_JUMP' // avail.idx moved by more than the queue size (§2.7.6)
  // descriptor chains (§2.7.5)
  | 'DESC_INDEX_OUT_OF_RANGE' // head or next ≥ queue size
  | 'DESC_LOOP' // chain revisits a descriptor / longer than the table
  | 'DESC_ZERO_LENGTH'
  | 'DESC_READABLE_AFTER_WRITABLE' // §2.7.4.2 / §2.7.5.2: all device-readable descriptors before writable ones
  | 'DESC_CHAIN_TOO_LONG'
  | 'INDIRECT_NOT_NEGOTIATED' // §2.7.5.3.1
  | 'INDIRECT_NESTED' // §2.7.5.3.1: indirect table entry with INDIRECT
  | 'INDIRECT_WITH_NEXT' // §2.7.5.3.1: INDIRECT and NEXT both set
  | 'INDIRECT_BAD_LENGTH' // empty, or not a multiple of 16
  // used ring
  | 'USED_ID_INVALID' // driver side: used id not in flight
  | 'USED_LEN_INVALID'
  // device model rules
  | 'DEVICE_REQUEST_INVALID'
  // feature negotiation and status (§2.1, §3.1)
  | 'FEATURES_INVALID'
  | 'STATUS_INVALID'
  | 'CONFIG_ACCESS_INVALID'
  // packed virtqueues (§2.8)
  | 'PACKED_FLAGS_INVALID' // §2.8.1: next descriptor has AVAIL = driver wrap counter but USED = AVAIL
  | 'PACKED_DESC_NOT_AVAIL' // §2.8.6: a later descriptor of a list is not marked available for its lap
  | 'PACKED_ID_INVALID' // §2.8.21.1: buffer id ≥ queue size
  | 'PACKED_ID_IN_USE' // §2.8.21.1: buffer id of a buffer still in flight
  | 'PACKED_RING_OVERRUN' // §2.8.16: descriptor made available before the device used it (> size in flight)
  | 'INDIRECT_IN_CHAIN' // §2.8.19: INDIRECT descriptor in a list linked by NEXT
  | 'INDIRECT_ENTRY_NEXT' // §2.8.19: NEXT inside a packed indirect table (only WRITE is valid)
  | 'QUEUE_BASE_INVALID'; // vhost-user SET_VRING_BASE: packed ring position ≥ queue size

export class VirtioError extends Error {
  override readonly name = 'VirtioError';
  constructor(
    readonly code: VirtioErrorCode,
    message: string,
    /** Where the violated rule is written, e.g. "virtio 1.2 §2.7.5.3.1". */
    readonly section?: string,
  ) {
    super(section ? `${message} (${code}, ${section})` : `${message} (${code})`);
  }
}

/** Throws a VirtioError: `fail('DESC_LOOP', 'chain revisits descriptor 3', '§2.7.5.2')`. */
export function fail(code: VirtioErrorCode, message: string, section?: string): never {
  throw new VirtioError(code, message, section ? `virtio 1.2 ${section}` : undefined);
}

export const isVirtioError = (e: unknown): e is VirtioError => e instanceof VirtioError;
