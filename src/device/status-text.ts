/**
 * DeviceRuntime.stats() as text, in the manner of QEMU's HMP `info virtio-status` and
 * `info virtio-queue-status` (x-query-virtio-status, x-query-virtio-queue-status): the device's
 * status and features, then per queue its configuration, indices, event suppression state and
 * counters.
 */
import { FeatureBit, Status } from '../virtio/constants.js';
import type { DeviceStats, QueueStatus } from './runtime.js';

const FEATURE_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(FeatureBit).map(([n, b]) => [b, `VIRTIO_F_${n}`]));

/**
 * Names of the bits of a 64-bit feature mask (hex string): transport bits by name, the device's
 * own by the names it gives (`device`), others as numbers.
 */
export function featureList(hex: string, device: Readonly<Record<number, string>> = {}): string {
  const f = BigInt(hex);
  const names: string[] = [];
  for (let b = 0; b < 64; b++) if (f & (1n << BigInt(b))) names.push(FEATURE_NAMES.get(b) ?? device[b] ?? `bit ${b}`);
  return names.length ? names.join(', ') : '(none)';
}

const hex64 = (n: number): string => `0x${n.toString(16).padStart(16, '0')}`;

function row(label: string, value: string | number | boolean, width = 24): string {
  return `  ${`${label}:`.padEnd(width)}${String(value)}`;
}

export function formatQueueStatus(name: string, q: QueueStatus): string[] {
  const lines = [`${name} virtqueue ${q.index}:`];
  const r = q.ring;
  lines.push(
    row('queue_index', q.index),
    row('ready', q.ready),
    row('active', q.active),
    row('inuse', r ? r.inuse : 0),
    row('held_by_device', q.held),
    row('last_avail_idx', r ? r.lastAvailIdx : '-'),
    row('shadow_avail_idx', r ? r.shadowAvailIdx : '-'),
    row('avail_idx', r ? r.availIdx : '-'),
    row('used_idx', r ? r.usedIdx : '-'),
    row('published_used_idx', r ? r.publishedUsedIdx : '-'),
    row('signalled_used', r ? r.signalledUsed : '-'),
    row('signalled_used_valid', r ? r.signalledUsedValid : '-'),
  );
  if (r) {
    lines.push(
      row('event_idx', r.eventIdx),
      row('avail_flags', `0x${r.availFlags.toString(16)}${r.availFlags & 1 ? ' (NO_INTERRUPT)' : ''}`),
      row('used_flags', `0x${r.usedFlags.toString(16)}${r.usedFlags & 1 ? ' (NO_NOTIFY)' : ''}`),
      row('used_event', r.usedEvent ?? '-'),
      row('avail_event', r.availEvent ?? '-'),
      row('kicks_enabled', r.kicksEnabled),
    );
  }
  lines.push(
    '  VRing:',
    `    ${'num:'.padEnd(14)}${q.size}`,
    `    ${'num_default:'.padEnd(14)}${q.maxSize}`,
    `    ${'desc:'.padEnd(14)}${hex64(q.desc)}`,
    `    ${'avail:'.padEnd(14)}${hex64(q.avail)}`,
    `    ${'used:'.padEnd(14)}${hex64(q.used)}`,
    '  Counters:',
  );
  const c = q.counters;
  lines.push(
    `    ${'requests:'.padEnd(16)}${c.requests}`,
    `    ${'bytes_read:'.padEnd(16)}${c.bytesRead}`,
    `    ${'bytes_written:'.padEnd(16)}${c.bytesWritten}`,
    `    ${'kicks:'.padEnd(16)}${c.kicks}`,
    `    ${'flushes:'.padEnd(16)}${c.flushes}`,
    `    ${'notifications:'.padEnd(16)}${c.notifications} sent, ${c.suppressed} suppressed`,
    `    ${'errors:'.padEnd(16)}${c.errors}`,
  );
  return lines;
}

/** The whole device: status, features, every queue, totals. */
export function formatDeviceStats(s: DeviceStats, name = 'device'): string {
  const lines = [`${name}:`];
  lines.push(
    row('device_id', s.deviceId),
    row('vdev', s.vdev),
    row('num_vqs', s.queues.length),
    row('broken', (s.status & Status.NEEDS_RESET) !== 0),
    row('status', `0x${s.status.toString(16)} (${s.statusNames})`),
    row('config_generation', s.configGeneration),
    row('config_notifications', s.configNotifications),
    row('errors', s.errors),
    row('device_features', `${s.deviceFeatures} ${featureList(s.deviceFeatures, s.featureNames)}`),
    row(s.featuresOk ? 'guest_features' : 'driver_features', `${s.driverFeatures} ${featureList(s.driverFeatures, s.featureNames)}`),
    row('requests', s.totals.requests),
    row('bytes', `${s.totals.bytesRead} read, ${s.totals.bytesWritten} written`),
    row('notifications', `${s.totals.notifications} sent, ${s.totals.suppressed} suppressed`),
    row('kicks', s.totals.kicks),
  );
  for (const q of s.queues) lines.push(...formatQueueStatus(name, q));
  return lines.join('\n');
}
