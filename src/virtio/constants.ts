/**
 * Constants of the virtio 1.x specification (virtio-v1.2-cs01 unless noted).
 * Section numbers are given next to each group so a reader can check them.
 */

/** §2.1 Device Status Field. */
export const Status = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** Renders a status byte as `ACKNOWLEDGE|DRIVER|...` for logs and errors. */
export function statusNames(status: number): string {
  if (status === 0) return 'RESET';
  const names = Object.entries(Status)
    .filter(([, bit]) => (status & bit) !== 0)
    .map(([name]) => name);
  const known = Object.values(Status).reduce((a, b) => a | b, 0);
  if (status & ~known) names.push(`0x${(status & ~known).toString(16)}`);
  return names.join('|');
}

/**
 * §6 Reserved Feature Bits (transport and ring features). Bits are numbers;
 * feature sets are bigint masks (up to 64 bits, §2.2).
 */
export const FeatureBit = {
  /** §6: the driver may use indirect descriptors (§2.7.5.3). */
  RING_INDIRECT_DESC: 28,
  /** §6: used_event / avail_event fields (§2.7.7, §2.7.10). */
  RING_EVENT_IDX: 29,
  /** §6: compliance with this (non-legacy) version of the specification. */
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  IN_ORDER: 35,
  ORDER_PLATFORM: 36,
  SR_IOV: 37,
  NOTIFICATION_DATA: 38,
  NOTIF_CONFIG_DATA: 39,
  RING_RESET: 40,
} as const;

/** A feature set with one bit. */
export const bit = (n: number): bigint => 1n << BigInt(n);

/** True if `features` contains feature bit `n`. */
export const hasFeature = (features: bigint, n: number): boolean => (features & bit(n)) !== 0n;

/** The ring/transport features this implementation understands (the device offers them on top of its own). */
export const TRANSPORT_FEATURES =
  bit(FeatureBit.RING_INDIRECT_DESC) | bit(FeatureBit.RING_EVENT_IDX) | bit(FeatureBit.VERSION_1);

/** §2.7.5 The Virtqueue Descriptor Table: flags. */
export const DescFlags = {
  /** Buffer continues via the `next` field. */
  NEXT: 1,
  /** Buffer is device write-only (otherwise device read-only). */
  WRITE: 2,
  /** Buffer contains a list of buffer descriptors (§2.7.5.3). */
  INDIRECT: 4,
} as const;

/** §2.7.6 The Virtqueue Available Ring: flags. */
export const AVAIL_F_NO_INTERRUPT = 1;
/** §2.7.8 The Virtqueue Used Ring: flags. */
export const USED_F_NO_NOTIFY = 1;

/** §2.7 Split Virtqueues: "Queue Size value is always a power of 2. The maximum Queue Size value is 32768." */
export const MAX_QUEUE_SIZE = 32768;

/** §5 Device Types: the IDs this project names. */
export const DeviceId = {
  /** virtio-test, the seed's device (ID 45; virtio 1.4 assigns 45 to virtio-spi, see the CLI warning). */
  TEST: 45,
} as const;

/** §2.5 Device Configuration Space uses little-endian for all fields in non-legacy devices. */
export const LITTLE_ENDIAN = true;

/**
 * §2.8.1 Driver and Device Ring Wrap Counters (packed virtqueues, VIRTIO_F_RING_PACKED):
 * the flag bits that mark a packed-ring descriptor available (AVAIL = driver's wrap counter,
 * USED = its inverse) or used (AVAIL = USED = device's wrap counter).
 */
export const PackedDescFlags = {
  AVAIL: 1 << 7,
  USED: 1 << 15,
} as const;

/** §2.8.10 Driver and Device Event Suppression: Descriptor Ring Change Event Flags (2 bits; 3 is reserved). */
export const RingEventFlags = {
  ENABLE: 0,
  DISABLE: 1,
  /** Only valid with VIRTIO_F_RING_EVENT_IDX: events for the descriptor at desc_event_off / desc_event_wrap. */
  DESC: 2,
} as const;

/** §2.8: "Packed virtqueues support up to 2^15 entries each" (any size, not only powers of two, §2.8.10.1). */
export const MAX_PACKED_QUEUE_SIZE = 32768;
