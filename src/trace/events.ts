/**
 * The trace event catalog: every event the virtio code can emit, with QEMU's name and field
 * names wherever QEMU has the event (hw/virtio/trace-events), the spec's words elsewhere, and
 * for the driver side what the event corresponds to in Linux's drivers/virtio/virtio_ring.c.
 *
 * An event is a static object with an `enabled` flag tested at the emit site:
 *
 *   if (TRACE.virtqueue_pop.enabled) TRACE.virtqueue_pop.emit(vq, head, inNum, outNum);
 *
 * Off, that is one property load and a branch: no call, no allocation, no closure. On, `emit`
 * hands the numbers (and at most one trailing string) to the thread's sink (sink.ts) without
 * allocating. Fields are typed: `emit` takes exactly one argument per field, numbers for
 * numeric fields and a string for a `str` field.
 *
 * Pointer fields of QEMU's events (`void *vq`, `void *elem`, `void *vdev`) are numbers here:
 * `vq` the queue index, `elem` the chain's head descriptor index (the used element's id, unique
 * among the buffers in flight on a queue), `vdev` the device runtime's instance number (1, 2, …
 * in a process: one per vhost-user connection).
 *
 * This module is below every other layer (src/virtio and src/device import it) and imports nothing.
 */

/** Which half of the queue an event belongs to (the track it goes on in a Chrome trace). */
export type TraceSide = 'driver' | 'device';

/** How a field is shown: decimal, hex, or text (only the last field may be text). */
export type FieldKind = 'u' | 'x' | 'str';

export interface FieldSpec {
  readonly name: string;
  readonly kind: FieldKind;
  /**
   * A decoder (registered with `setDecoder` by the layer that knows the names, e.g. the MMIO
   * register names) whose result is shown as an extra field named `as` after this one.
   */
  readonly decode?: { readonly decoder: string; readonly as: string };
}

/** The argument type of one field: string for a `str` field, else number. */
export type ArgOf<S extends FieldSpec> = S['kind'] extends infer K ? (K extends 'str' ? string : number) : never;
/** The arguments of an event's `emit`: one per field, in order. */
export type TraceArgs<F extends readonly FieldSpec[]> = { [K in keyof F]: F[K] extends FieldSpec ? ArgOf<F[K]> : never };

/** Where an emitted event goes: the thread's sink (sink.ts). Positional, so nothing is allocated. */
export interface EmitTarget {
  emit(ev: AnyTraceEvent, a: unknown, b: unknown, c: unknown, d: unknown, e: unknown, f: unknown): void;
}

/** The current thread's sink; replaced by sink.ts when tracing starts. */
export const target: { sink: EmitTarget } = { sink: { emit() {} } };

/** Most fields an event may have (the last may be text): emit takes them positionally. */
export const MAX_FIELDS = 6;

let nextId = 0;

export class TraceEvent<F extends readonly FieldSpec[] = readonly FieldSpec[]> {
  /** Tested at the emit site; set by `enableEvents`. */
  enabled = false;
  /** Index in EVENTS: the same in every thread (the catalog is one static module). */
  readonly id: number;
  /** Numeric fields (all but a trailing `str` field). */
  readonly numericCount: number;
  readonly hasText: boolean;
  /** Index of the field naming the queue (a per-queue track in a Chrome trace), or -1. */
  readonly queueField: number;

  constructor(
    readonly name: string,
    readonly side: TraceSide,
    readonly fields: F,
    /** What it records, and what it corresponds to in QEMU or Linux. */
    readonly doc: string,
    /** Where the name comes from: QEMU's trace-events, Linux's virtio_ring.c function, or ours (the spec's words). */
    readonly origin: 'qemu' | 'linux' | 'spec',
  ) {
    this.id = nextId++;
    const last = fields[fields.length - 1];
    this.hasText = last?.kind === 'str';
    this.numericCount = fields.length - (this.hasText ? 1 : 0);
    if (fields.length > MAX_FIELDS) throw new Error(`trace event ${name}: more than ${MAX_FIELDS} fields`);
    if (fields.slice(0, this.numericCount).some((f) => f.kind === 'str')) throw new Error(`trace event ${name}: only the last field may be text`);
    this.queueField = fields.findIndex((f) => f.name === 'vq' || (name === 'virtio_queue_notify' && f.name === 'n'));
  }

  /** Records the event (call only when `enabled`; the test at the call site is what makes "off" free). */
  declare emit: (...args: TraceArgs<F>) => void;
}

// One shared function for every event: the call site stays monomorphic.
TraceEvent.prototype.emit = function emit(this: AnyTraceEvent, a?: unknown, b?: unknown, c?: unknown, d?: unknown, e?: unknown, f?: unknown): void {
  target.sink.emit(this, a, b, c, d, e, f);
} as never;

export type AnyTraceEvent = TraceEvent<readonly FieldSpec[]>;

const u = <N extends string>(name: N) => ({ name, kind: 'u' }) as const;
const x = <N extends string>(name: N) => ({ name, kind: 'x' }) as const;
const str = <N extends string>(name: N) => ({ name, kind: 'str' }) as const;
const decoded = <N extends string, K extends 'u' | 'x'>(name: N, kind: K, decoder: string, as: string) =>
  ({ name, kind, decode: { decoder, as } }) as const;

const ev = <const F extends readonly FieldSpec[]>(name: string, side: TraceSide, origin: 'qemu' | 'linux' | 'spec', fields: F, doc: string) =>
  new TraceEvent<F>(name, side, fields, doc, origin);

/** Decoder names (see setDecoder in format.ts): who registers them is the layer that knows the names. */
export const DECODERS = {
  /** §4.2.2 virtio-mmio register name of an offset (the embedded machine). */
  mmioRegister: 'mmio_register',
  /** §2.1 device status bits, e.g. ACKNOWLEDGE|DRIVER. */
  status: 'virtio_status',
  /** vhost-user request name of a request code. */
  vhostUserRequest: 'vhost_user_request',
} as const;

/**
 * The catalog. Device side: QEMU's hw/virtio/virtio.c and virtio-mmio.c events, emitted by the
 * code every host shares (src/virtio/device-queue.ts, src/device/runtime.ts) and by the embedded
 * machine's virtio-mmio register file. Driver side: Linux's virtio_ring has no tracepoints; the
 * names follow its functions (src/virtio/driver-queue.ts, src/drivers/virtio-bus.ts).
 */
export const TRACE = {
  // ---- device side, QEMU's names and fields (hw/virtio/trace-events, "# virtio.c")
  virtqueue_pop: ev('virtqueue_pop', 'device', 'qemu', [u('vq'), u('elem'), u('in_num'), u('out_num')],
    'The device took a chain from the available ring (DeviceQueue.pop): elem is its head, in_num/out_num its device-writable/-readable descriptors. QEMU: virtqueue_pop().'),
  virtqueue_fill: ev('virtqueue_fill', 'device', 'qemu', [u('vq'), u('elem'), u('len'), u('idx')],
    'A used element was written (DeviceQueue.addUsed), not yet visible: len bytes written; idx is the free-running used index it went to (QEMU: the offset in the batch). QEMU: virtqueue_fill().'),
  virtqueue_flush: ev('virtqueue_flush', 'device', 'qemu', [u('vq'), u('count'), u('used_idx')],
    'used.idx was published (DeviceQueue.publishUsed): count elements made visible, used_idx the new index. QEMU: virtqueue_flush() (count; used_idx is ours).'),
  virtio_queue_notify: ev('virtio_queue_notify', 'device', 'qemu', [u('vdev'), u('n')],
    'An available buffer notification (a kick) for queue n reached the device (DeviceRuntime.notify). QEMU: virtio_queue_notify().'),
  virtio_notify: ev('virtio_notify', 'device', 'qemu', [u('vdev'), u('vq'), u('used_idx')],
    'A used buffer notification is sent (the suppression check said yes, DeviceRuntime.publish). QEMU: virtio_notify().'),
  virtio_notify_suppressed: ev('virtio_notify_suppressed', 'device', 'spec', [u('vdev'), u('vq'), u('used_idx'), u('used_event'), u('avail_flags')],
    'No used buffer notification: used_event (with EVENT_IDX) or avail.flags NO_INTERRUPT said the driver does not want one (§2.7.7.2). QEMU is silent here (virtio_should_notify() false).'),
  virtio_notify_irqfd: ev('virtio_notify_irqfd', 'device', 'qemu', [u('vdev'), u('vq')],
    'A used buffer notification through an irqfd: on vhost-user, the write to the ring\'s call eventfd that follows virtio_notify (none without a call fd). QEMU: virtio_notify_irqfd().'),
  virtio_notify_config: ev('virtio_notify_config', 'device', 'spec', [u('vdev'), u('generation')],
    'A configuration change notification is sent (§2.5.1, or DEVICE_NEEDS_RESET §2.1.2). QEMU: virtio_notify_config() (no trace event there).'),
  virtio_set_status: ev('virtio_set_status', 'device', 'qemu', [u('vdev'), decoded('val', 'u', DECODERS.status, 'status')],
    'The driver wrote the device status (§2.1; 0 is a reset). QEMU: virtio_set_status().'),
  virtio_needs_reset: ev('virtio_needs_reset', 'device', 'spec', [u('vdev'), u('vq'), str('error')],
    'A device error: DEVICE_NEEDS_RESET set, queues stopped (§2.1.2); vq is 65535 when no queue is involved; error names the rule.'),

  // ---- the embedded machine's virtio-mmio register file (hw/virtio/trace-events, "# virtio-mmio.c")
  virtio_mmio_read: ev('virtio_mmio_read', 'device', 'qemu', [decoded('offset', 'x', DECODERS.mmioRegister, 'reg'), u('size'), x('value')],
    'A register read (§4.2.2), decoded by register name; size and value are ours. QEMU: virtio_mmio_read (offset).'),
  virtio_mmio_write_offset: ev('virtio_mmio_write_offset', 'device', 'qemu', [decoded('offset', 'x', DECODERS.mmioRegister, 'reg'), x('value'), u('size')],
    'A register write (§4.2.2), decoded by register name. QEMU: virtio_mmio_write_offset (offset, value; printed "virtio_mmio_write").'),
  virtio_mmio_setting_irq: ev('virtio_mmio_setting_irq', 'device', 'qemu', [u('level'), x('isr')],
    'The interrupt line: 1 when the device raises InterruptStatus bits (isr), 0 when the driver\'s InterruptACK clears the last. QEMU: virtio_mmio_setting_irq (level).'),

  // ---- driver side: Linux's virtio_ring.c functions (it has no tracepoints)
  vring_add: ev('vring_add', 'driver', 'linux', [u('vq'), u('head'), u('out_num'), u('in_num'), u('avail_idx'), u('indirect')],
    'The driver made a buffer available (DriverQueue.add): head descriptor, out_num readable and in_num writable elements, avail_idx after it, indirect 1 for one indirect descriptor. Linux: virtqueue_add_split() (virtqueue_add_sgs and friends).'),
  virtqueue_kick: ev('virtqueue_kick', 'driver', 'linux', [u('vq'), u('avail_idx'), u('avail_event')],
    'The driver decided the device wants a notification and sends it (DriverQueue.needsKick true, then the transport\'s notify). avail_event is 65536 without EVENT_IDX. Linux: virtqueue_kick() = virtqueue_kick_prepare() true + virtqueue_notify().'),
  virtqueue_kick_suppressed: ev('virtqueue_kick_suppressed', 'driver', 'linux', [u('vq'), u('avail_idx'), u('avail_event'), u('used_flags')],
    'No notification: avail_event (EVENT_IDX) or used.flags NO_NOTIFY said the device does not want one (§2.7.10). Linux: virtqueue_kick_prepare() false.'),
  vring_interrupt: ev('vring_interrupt', 'driver', 'linux', [u('vq'), u('pending')],
    'A used buffer notification reached the queue\'s callback (VirtioDriverDevice\'s interrupt handler); pending: used elements not yet taken. Linux: vring_interrupt().'),
  virtqueue_get_buf: ev('virtqueue_get_buf', 'driver', 'linux', [u('vq'), u('head'), u('len'), u('used_idx')],
    'The driver took a used buffer back (DriverQueue.getUsed/getUsedToken), validated: head, len bytes written by the device, used_idx the next entry it expects. Linux: virtqueue_get_buf_ctx_split().'),

  // ---- vhost-user: the daemon's control plane (virtio-backend --trace: vhost_user_*)
  vhost_user_recv: ev('vhost_user_recv', 'device', 'spec', [decoded('req', 'u', DECODERS.vhostUserRequest, 'request'), x('flags'), u('size'), u('fds'), str('payload')],
    'The back-end received a vhost-user request: code (decoded by name), header flags, payload size, file descriptors, the first 48 payload bytes in hex. QEMU\'s front-end counterpart: vhost_user_read (req, flags).'),
  vhost_user_send: ev('vhost_user_send', 'device', 'spec', [decoded('req', 'u', DECODERS.vhostUserRequest, 'request'), x('flags'), u('size'), u('fds')],
    'The back-end sent a vhost-user reply: code (decoded by name), header flags, payload size, file descriptors. QEMU\'s front-end counterpart: vhost_user_write (req, flags).'),
} as const;

export type TraceEventName = keyof typeof TRACE;

/** Every event, indexed by id. */
export const EVENTS: readonly AnyTraceEvent[] = (() => {
  const list = Object.values(TRACE) as AnyTraceEvent[];
  list.forEach((e, i) => {
    if (e.id !== i) throw new Error('trace catalog: ids out of order');
  });
  return list;
})();

const BY_NAME: ReadonlyMap<string, AnyTraceEvent> = new Map(EVENTS.map((e) => [e.name, e]));

export function findEvent(name: string): AnyTraceEvent | undefined {
  return BY_NAME.get(name);
}

/** Enables exactly the named events (others off). Unknown names throw. */
export function enableEvents(names: Iterable<string>): void {
  const on = new Set<AnyTraceEvent>();
  for (const n of names) {
    const e = BY_NAME.get(n);
    if (!e) throw new Error(`no trace event '${n}'`);
    on.add(e);
  }
  for (const e of EVENTS) e.enabled = on.has(e);
}

/** The names of the events now enabled. */
export function enabledEvents(): string[] {
  return EVENTS.filter((e) => e.enabled).map((e) => e.name);
}

/** A queue field value meaning "no queue" (virtio_needs_reset outside a queue). */
export const NO_QUEUE = 0xffff;
