/**
 * The payload types of vhost-user messages ([vhost-user "Payload"]), their sizes, and
 * their encoding. Pure data: no validation of meaning here (codec.ts checks sizes against
 * the request, the session checks values against its state).
 *
 * 64-bit addresses and sizes are decoded as bigint and turned into numbers only where
 * they must be used (see `toSafeNumber`), so a value above 2^53 is refused rather than
 * rounded.
 */

/** [vhost-user "A vring state description"] (also the split-ring "vring descriptor index"). */
export interface VringState {
  index: number;
  num: number;
}
export const VRING_STATE_SIZE = 8;

/** [vhost-user "A vring address description"]: ring addresses are front-end user addresses. */
export interface VringAddress {
  index: number;
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}
export const VRING_ADDRESS_SIZE = 40;

/** [vhost-user "Memory region description"]. */
export interface MemoryRegionDescription {
  guestAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
}
export const MEMORY_REGION_SIZE = 32;
/** [vhost-user "Multiple Memory regions description"]: at most 8 regions (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEM_TABLE_REGIONS = 8;
export const MEM_TABLE_HEADER_SIZE = 8;
/** [vhost-user "Single memory region description"]: 8 bytes of padding, then a region. */
export const SINGLE_MEMORY_REGION_SIZE = 8 + MEMORY_REGION_SIZE;

/** [vhost-user "Virtio device config space"]: offset, size, flags, then `size` bytes. */
export interface ConfigSpace {
  offset: number;
  size: number;
  flags: number;
  data: Uint8Array;
}
export const CONFIG_HEADER_SIZE = 12;

/** [vhost-user "Inflight description"]. */
export interface InflightDescription {
  mmapSize: bigint;
  mmapOffset: bigint;
  numQueues: number;
  queueSize: number;
}
/** u64 + u64 + u16 + u16, padded to 8 like QEMU's struct (QEMU sends and expects 24). */
export const INFLIGHT_DESCRIPTION_SIZE = 24;

export const U64_SIZE = 8;

const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

export function encodeU64(value: bigint | number): Uint8Array {
  const out = new Uint8Array(U64_SIZE);
  view(out).setBigUint64(0, BigInt(value), true);
  return out;
}

export function decodeU64(b: Uint8Array): bigint {
  return view(b).getBigUint64(0, true);
}

export function encodeVringState(s: VringState): Uint8Array {
  const out = new Uint8Array(VRING_STATE_SIZE);
  const v = view(out);
  v.setUint32(0, s.index >>> 0, true);
  v.setUint32(4, s.num >>> 0, true);
  return out;
}

export function decodeVringState(b: Uint8Array): VringState {
  const v = view(b);
  return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
}

export function encodeVringAddress(a: VringAddress): Uint8Array {
  const out = new Uint8Array(VRING_ADDRESS_SIZE);
  const v = view(out);
  v.setUint32(0, a.index >>> 0, true);
  v.setUint32(4, a.flags >>> 0, true);
  v.setBigUint64(8, a.desc, true);
  v.setBigUint64(16, a.used, true);
  v.setBigUint64(24, a.avail, true);
  v.setBigUint64(32, a.log, true);
  return out;
}

export function decodeVringAddress(b: Uint8Array): VringAddress {
  const v = view(b);
  return {
    index: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    desc: v.getBigUint64(8, true),
    used: v.getBigUint64(16, true),
    avail: v.getBigUint64(24, true),
    log: v.getBigUint64(32, true),
  };
}

function writeRegion(v: DataView, at: number, r: MemoryRegionDescription): void {
  v.setBigUint64(at, r.guestAddr, true);
  v.setBigUint64(at + 8, r.size, true);
  v.setBigUint64(at + 16, r.userAddr, true);
  v.setBigUint64(at + 24, r.mmapOffset, true);
}

function readRegion(v: DataView, at: number): MemoryRegionDescription {
  return {
    guestAddr: v.getBigUint64(at, true),
    size: v.getBigUint64(at + 8, true),
    userAddr: v.getBigUint64(at + 16, true),
    mmapOffset: v.getBigUint64(at + 24, true),
  };
}

/** SET_MEM_TABLE payload: num regions, padding, then exactly `regions.length` regions. */
export function encodeMemTable(regions: readonly MemoryRegionDescription[]): Uint8Array {
  const out = new Uint8Array(MEM_TABLE_HEADER_SIZE + MEMORY_REGION_SIZE * regions.length);
  const v = view(out);
  v.setUint32(0, regions.length, true);
  regions.forEach((r, i) => writeRegion(v, MEM_TABLE_HEADER_SIZE + i * MEMORY_REGION_SIZE, r));
  return out;
}

/** The region count field of a SET_MEM_TABLE payload (payload must be ≥ 8 bytes). */
export function memTableCount(b: Uint8Array): number {
  return view(b).getUint32(0, true);
}

export function decodeMemTable(b: Uint8Array): MemoryRegionDescription[] {
  const v = view(b);
  const n = v.getUint32(0, true);
  const out: MemoryRegionDescription[] = [];
  for (let i = 0; i < n; i++) out.push(readRegion(v, MEM_TABLE_HEADER_SIZE + i * MEMORY_REGION_SIZE));
  return out;
}

export function encodeSingleRegion(r: MemoryRegionDescription): Uint8Array {
  const out = new Uint8Array(SINGLE_MEMORY_REGION_SIZE);
  writeRegion(view(out), 8, r);
  return out;
}

export function decodeSingleRegion(b: Uint8Array): MemoryRegionDescription {
  return readRegion(view(b), 8);
}

export function encodeConfig(c: { offset: number; flags?: number; data: Uint8Array }): Uint8Array {
  const out = new Uint8Array(CONFIG_HEADER_SIZE + c.data.length);
  const v = view(out);
  v.setUint32(0, c.offset >>> 0, true);
  v.setUint32(4, c.data.length, true);
  v.setUint32(8, (c.flags ?? 0) >>> 0, true);
  out.set(c.data, CONFIG_HEADER_SIZE);
  return out;
}

/** Decodes the config header; `data` is whatever follows it (the codec checks it is `size` bytes). */
export function decodeConfig(b: Uint8Array): ConfigSpace {
  const v = view(b);
  return {
    offset: v.getUint32(0, true),
    size: v.getUint32(4, true),
    flags: v.getUint32(8, true),
    data: b.subarray(CONFIG_HEADER_SIZE),
  };
}

export function encodeInflight(d: InflightDescription): Uint8Array {
  const out = new Uint8Array(INFLIGHT_DESCRIPTION_SIZE);
  const v = view(out);
  v.setBigUint64(0, d.mmapSize, true);
  v.setBigUint64(8, d.mmapOffset, true);
  v.setUint16(16, d.numQueues, true);
  v.setUint16(18, d.queueSize, true);
  return out;
}

export function decodeInflight(b: Uint8Array): InflightDescription {
  const v = view(b);
  return {
    mmapSize: v.getBigUint64(0, true),
    mmapOffset: v.getBigUint64(8, true),
    numQueues: v.getUint16(16, true),
    queueSize: v.getUint16(18, true),
  };
}

/** A bigint as a number, or null if it is not exactly representable (≥ 2^53). */
export function toSafeNumber(x: bigint): number | null {
  return x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : null;
}
