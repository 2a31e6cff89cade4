/**
 * virtio-mmio register layout, version 2 (virtio 1.2 §4.2.2, "MMIO Device Register Layout").
 * Offsets from the device's MMIO base; all registers are 32 bits wide, little-endian.
 */
export const MMIO = {
  MagicValue: 0x000, // 0x74726976 ("virt")
  Version: 0x004, // 2 for non-legacy devices
  DeviceID: 0x008,
  VendorID: 0x00c,
  DeviceFeatures: 0x010,
  DeviceFeaturesSel: 0x014,
  DriverFeatures: 0x020,
  DriverFeaturesSel: 0x024,
  QueueSel: 0x030,
  QueueNumMax: 0x034,
  QueueNum: 0x038,
  QueueReady: 0x044,
  QueueNotify: 0x050,
  InterruptStatus: 0x060,
  InterruptACK: 0x064,
  Status: 0x070,
  QueueDescLow: 0x080,
  QueueDescHigh: 0x084,
  QueueDriverLow: 0x090,
  QueueDriverHigh: 0x094,
  QueueDeviceLow: 0x0a0,
  QueueDeviceHigh: 0x0a4,
  ConfigGeneration: 0x0fc,
  Config: 0x100,
} as const;

const REGISTER_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(MMIO).map(([name, offset]) => [offset, name]));

/** The register at `offset` by its §4.2.2 name (`Config+0x4` inside config space): trace lines decode offsets with it. */
export function mmioRegisterName(offset: number): string | undefined {
  if (offset >= MMIO.Config) return offset === MMIO.Config ? 'Config' : `Config+0x${(offset - MMIO.Config).toString(16)}`;
  return REGISTER_NAMES.get(offset);
}

export const MMIO_MAGIC = 0x74726976;
export const MMIO_VERSION = 2;
/** Vendor ID reported by our devices ("VTTS" little-endian is not a PCI vendor; any value is allowed). */
export const MMIO_VENDOR = 0x53545456;

/** §4.2.2 InterruptStatus bits. */
export const Interrupt = {
  /** Used Buffer Notification. */
  VRING: 1,
  /** Configuration Change Notification. */
  CONFIG: 2,
} as const;
