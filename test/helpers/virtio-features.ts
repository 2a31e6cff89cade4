/**
 * What a Linux guest negotiated with its virtio devices, read from sysfs: each
 * /sys/bus/virtio/devices/virtioN has `device` (the virtio device ID, e.g. 0x0004) and
 * `features`, the driver's negotiated features as one '0'/'1' character per bit, bit 0 first
 * (drivers/virtio/virtio.c features_show). Bit 34 is VIRTIO_F_RING_PACKED (virtio 1.2 §6):
 * the guest tests of `packed=on` check it there, inside the guest.
 */

/** Guest shell (busybox sh): one line `vdev <device id> <char 35 of features>` per virtio device. */
export const PACKED_FEATURE_SCRIPT =
  'for v in /sys/bus/virtio/devices/virtio*;do echo "vdev $(cat $v/device) $(cut -c35 $v/features)";done';

/** The bit-34 character the guest printed for device ID `deviceId`, or null if it printed none (or several). */
export function packedFeatureOf(lines: readonly string[], deviceId: number): string | null {
  const re = /^vdev 0x([0-9a-f]{4}) ([01])$/;
  const found = lines.map((l) => re.exec(l.trim())).filter((m): m is RegExpExecArray => m !== null && parseInt(m[1]!, 16) === deviceId);
  return found.length === 1 ? found[0]![2]! : null;
}
