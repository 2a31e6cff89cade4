/**
 * DeviceRuntime state as JSON objects shaped like QEMU's QMP answers (qapi/virtio.json):
 * `x-query-virtio-status` (VirtioStatus), `x-query-virtio-queue-status` (VirtQueueStatus) and
 * `x-query-virtio-queue-element` (VirtioQueueElement), with QMP's member names where QEMU has the
 * member, and this project's counters beside them. The vhost-user control socket
 * (src/vhost-user/control-commands.ts) answers with these; `virtio-backend query` prints them.
 *
 * Numbers stay numbers (guest addresses are below 2^53, see memory.ts joinAddress); 64-bit
 * feature masks are hex strings, as DeviceStats carries them.
 */
import { Status } from '../virtio/constants.js';
import { descriptorFlagNames, type ElementDescriptor, type QueueElement } from '../virtio/queue-element.js';
import type { DeviceStats, QueueCounters, QueueStatus } from './runtime.js';
import { featureList } from './status-text.js';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The counters of one queue or of the device (QueueCounters), by QMP-style names. */
export function countersJson(c: QueueCounters): { [key: string]: Json } {
  return {
    requests: c.requests,
    'bytes-read': c.bytesRead,
    'bytes-written': c.bytesWritten,
    kicks: c.kicks,
    flushes: c.flushes,
    'notifications-sent': c.notifications,
    'notifications-suppressed': c.suppressed,
    errors: c.errors,
  };
}

/** Where the rings are, when the host knows it better than QueueStatus (vhost-user: front-end user addresses). */
export interface RingAddresses {
  desc: number;
  avail: number;
  used: number;
}

/**
 * One queue as x-query-virtio-queue-status shows it (§2.7 for a split ring; a packed ring's
 * indices carry the wrap counter in bit 15 and its "avail"/"used" areas are the Driver and
 * Device Event Suppression structures, §2.8.10).
 */
export function queueStatusJson(name: string, q: QueueStatus, packed: boolean, addresses?: RingAddresses | null): { [key: string]: Json } {
  const r = q.ring;
  const at = addresses ?? { desc: q.desc, avail: q.avail, used: q.used };
  return {
    name,
    'queue-index': q.index,
    layout: packed ? 'packed' : 'split',
    ready: q.ready,
    active: q.active,
    inuse: r ? r.inuse : 0,
    'held-by-device': q.held,
    'vring-num': q.size,
    'vring-num-default': q.maxSize,
    'vring-desc': at.desc,
    'vring-avail': at.avail,
    'vring-used': at.used,
    'last-avail-idx': r ? r.lastAvailIdx : null,
    'shadow-avail-idx': r ? r.shadowAvailIdx : null,
    'avail-idx': r ? r.availIdx : null,
    'used-idx': r ? r.usedIdx : null,
    'published-used-idx': r ? r.publishedUsedIdx : null,
    'signalled-used': r ? r.signalledUsed : null,
    'signalled-used-valid': r ? r.signalledUsedValid : false,
    // Event suppression (§2.7.7, §2.7.10; packed §2.8.10): both sides' flags and event words.
    'event-idx': r ? r.eventIdx : null,
    indirect: r ? r.indirect : null,
    'avail-flags': r ? r.availFlags : null,
    'used-flags': r ? r.usedFlags : null,
    'used-event': r ? r.usedEvent : null,
    'avail-event': r ? r.availEvent : null,
    'kicks-enabled': r ? r.kicksEnabled : null,
    counters: countersJson(q.counters),
  };
}

/** The device as x-query-virtio-status shows it: status (numeric and by name), features, queues. */
export function deviceStatusJson(name: string, s: DeviceStats): { [key: string]: Json } {
  return {
    name,
    'device-id': s.deviceId,
    status: s.status,
    'status-names': s.statusNames,
    broken: (s.status & Status.NEEDS_RESET) !== 0,
    'host-features': s.deviceFeatures,
    'host-features-names': featureList(s.deviceFeatures, s.featureNames),
    // QMP's guest-features are the negotiated set; until FEATURES_OK they are what the driver wrote.
    'guest-features': s.driverFeatures,
    'guest-features-names': featureList(s.driverFeatures, s.featureNames),
    'features-ok': s.featuresOk,
    'config-generation': s.configGeneration,
    'num-vqs': s.queues.length,
  };
}

/** The counters: the device's totals and per queue. */
export function statsJson(s: DeviceStats): { [key: string]: Json } {
  return {
    ...countersJson(s.totals),
    'config-notifications': s.configNotifications,
    'device-errors': s.errors,
    queues: s.queues.map((q) => ({ 'queue-index': q.index, ...countersJson(q.counters) })),
  };
}

function descriptorJson(d: ElementDescriptor, packed: boolean): { [key: string]: Json } {
  const out: { [key: string]: Json } = { index: d.index, addr: d.addr, len: d.len, flags: descriptorFlagNames(d.flags, packed) };
  if (d.next !== undefined) out['next'] = d.next;
  if (d.id !== undefined) out['id'] = d.id;
  if (d.table) out['table'] = d.table.map((e) => descriptorJson(e, packed));
  return out;
}

/** One chain as x-query-virtio-queue-element shows it: its head and descriptors (flags by name). */
export function elementJson(name: string, queue: number, e: QueueElement, packed: boolean): { [key: string]: Json } {
  return {
    name,
    'queue-index': queue,
    index: e.head,
    'avail-index': e.availIndex,
    readable: e.readable,
    writable: e.writable,
    'descriptor-count': e.descriptorCount,
    descs: e.descriptors.map((d) => descriptorJson(d, packed)),
  };
}
