/**
 * One thread of the ring benchmark: the driver (ringtest's "guest") or the device (its "host"),
 * on the product's DriverQueue / DeviceQueue over one SharedArrayBuffer of guest memory.
 *
 * Per buffer, both sides do what ringtest does: the driver adds a 1-descriptor device-readable
 * buffer and publishes avail.idx; the device reads avail.idx, pops the chain (ring entry and
 * descriptor: ours also validates it and makes a view of the buffer), writes a used element and
 * publishes used.idx; the driver takes it back (getUsed: checks the id, frees the descriptor).
 *
 * Modes:
 *   poll   per-buffer publishing, both sides spin (ringtest without --sleep)
 *   sleep  per-buffer publishing, event index: the driver asks needsKick() after each add, the
 *          device asks needsNotification() after each used buffer; each side re-enables and
 *          sleeps in Atomics.wait when it runs dry (ringtest --sleep, eventfds → Atomics.notify)
 *   batch  add(…, publish = false) × B then publish(); the device pops what is pending,
 *          addUsed × N then one publishUsed(); both sides spin
 *
 * Layouts: `split` (§2.7: DriverQueue / DeviceQueue) or `packed` (§2.8: PackedDriverQueue /
 * PackedDeviceQueue), the same loops through the DriverVirtqueue / DeviceVirtqueue interface.
 * One difference: a packed ring cannot count what is pending (pending() is 0 or 1), so the
 * batched device pops until pop() returns null.
 */
import { workerData, parentPort } from 'node:worker_threads';
import { DeviceQueue } from '../src/virtio/device-queue.js';
import { DriverQueue, type Buffer } from '../src/virtio/driver-queue.js';
import type { DescriptorChain } from '../src/virtio/chain.js';
import { GuestMemory } from '../src/virtio/memory.js';
import { ringViewsFromGuest } from '../src/virtio/ring-views.js';
import { packedLayout } from '../src/virtio/split-ring.js';
import { PackedDeviceQueue } from '../src/virtio/packed-device-queue.js';
import { PackedDriverQueue } from '../src/virtio/packed-driver-queue.js';
import { packedRingLayout, packedRingViewsFromGuest } from '../src/virtio/packed-ring.js';
import type { DeviceVirtqueue, DriverVirtqueue } from '../src/virtio/virtqueue.js';
import { pinSelf, threadCpuSeconds } from './pin.js';

export type RingMode = 'poll' | 'sleep' | 'batch';
export type RingLayout = 'split' | 'packed';

export interface RingWorkerData {
  role: 'driver' | 'device';
  mode: RingMode;
  layout: RingLayout;
  count: number;
  ringSize: number;
  batch: number;
  cpu?: number;
  mem: SharedArrayBuffer;
  ctl: SharedArrayBuffer;
}

/** Control words, one per 64-byte line: [READY_DRIVER, READY_DEVICE, START, KICK, CALL]. */
export const CTL = { readyDriver: 0, readyDevice: 16, start: 32, kick: 48, call: 64, words: 80 } as const;
export const GUEST_BASE = 0x1000;
export const MEM_BYTES = 1 << 16;
const HANG_MS = 10_000;

export interface RingWorkerResult {
  role: 'driver' | 'device';
  /** Driver: ns from the start signal to the last used buffer taken back. */
  ns: number;
  /** CPU seconds this thread used during the run. */
  cpu: number;
  kicks: number;
  calls: number;
  waits: number;
  pin: string;
}

/** Times this thread really slept in Atomics.wait (like a voluntary context switch). */
let slept = 0;

/** Like read(eventfd): returns at once if the counter moved past `seen`, else sleeps until it does. */
function waitChange(ctl: Int32Array, i: number, seen: number): number {
  let v: number;
  while ((v = Atomics.load(ctl, i)) === seen) {
    const r = Atomics.wait(ctl, i, seen, HANG_MS);
    if (r === 'timed-out') throw new Error(`hang: word ${i} stayed ${seen}`);
    if (r === 'ok') slept++;
  }
  return v;
}

function main(d: RingWorkerData): RingWorkerResult {
  const pin = pinSelf(d.cpu);
  const ctl = new Int32Array(d.ctl);
  const memory = new GuestMemory([{ guestAddr: GUEST_BASE, size: d.mem.byteLength, buffer: d.mem }]);
  const packed = d.layout === 'packed';
  const layout = packedLayout(GUEST_BASE, d.ringSize);
  const packedRing = packedRingLayout(GUEST_BASE, d.ringSize);
  const bufAddr = GUEST_BASE + Math.ceil(Math.max(layout.bytes, packedRing.bytes) / 64) * 64;
  const n = d.count;
  const B = d.batch;
  let kicks = 0;
  let calls = 0;

  if (d.role === 'driver') {
    const q: DriverVirtqueue<number> = packed
      ? new PackedDriverQueue<number>(memory, packedRingViewsFromGuest(memory, packedRing), { eventIdx: true, indirect: false })
      : new DriverQueue<number>(memory, ringViewsFromGuest(memory, layout), { eventIdx: true, indirect: false });
    const out: Buffer[] = [{ addr: bufAddr, len: 8 }];
    const none: Buffer[] = [];
    // A polling driver wants no used-buffer notifications (ringtest never writes used_event then).
    if (d.mode !== 'sleep') q.disableCallbacks();
    Atomics.store(ctl, CTL.readyDriver, 1);
    Atomics.notify(ctl, CTL.readyDriver);
    waitChange(ctl, CTL.start, 0);
    slept = 0;
    const t0 = process.hrtime.bigint();
    const c0 = threadCpuSeconds();
    let started = 0;
    let completed = 0;
    let seenCall = 0;
    const kick = () => {
      kicks++;
      Atomics.add(ctl, CTL.kick, 1);
      Atomics.notify(ctl, CTL.kick, 1);
    };
    if (d.mode === 'poll') {
      outer: for (;;) {
        let r: boolean;
        do {
          r = started < n && q.add(out, none, 1);
          if (r) started++;
          if (q.getUsed() !== null) {
            if (++completed === n) break outer;
            r = true;
          }
        } while (r);
        while (!q.hasUsed());
      }
    } else if (d.mode === 'sleep') {
      outer: for (;;) {
        q.disableCallbacks();
        let r: boolean;
        do {
          r = started < n && q.add(out, none, 1);
          if (r) {
            started++;
            if (q.needsKick()) kick();
          }
          if (q.getUsed() !== null) {
            if (++completed === n) break outer;
            r = true;
          }
        } while (r);
        if (!q.hasUsed() && q.enableCallbacks()) {
          seenCall = waitChange(ctl, CTL.call, seenCall);
        }
      }
    } else {
      for (;;) {
        let added = 0;
        while (added < B && started < n && q.add(out, none, 1, false)) {
          started++;
          added++;
        }
        if (added !== 0) q.publish();
        let got = 0;
        while (q.getUsedToken() !== undefined) got++; // batched collection: no object per buffer
        completed += got;
        if (completed === n) break;
        if (added === 0 && got === 0) while (!q.hasUsed());
      }
    }
    const ns = Number(process.hrtime.bigint() - t0);
    return { role: 'driver', ns, cpu: threadCpuSeconds() - c0, kicks, calls, waits: slept, pin };
  }

  // device: the driver zeroes the rings in its constructor, so start after it is ready.
  waitChange(ctl, CTL.readyDriver, 0);
  const q: DeviceVirtqueue & { pushUsed(c: DescriptorChain, len: number): void } = packed
    ? new PackedDeviceQueue(memory, packedRingViewsFromGuest(memory, packedRing), { eventIdx: true, indirect: false })
    : new DeviceQueue(memory, ringViewsFromGuest(memory, layout), { eventIdx: true, indirect: false });
  Atomics.store(ctl, CTL.readyDevice, 1);
  Atomics.notify(ctl, CTL.readyDevice);
  waitChange(ctl, CTL.start, 0);
  slept = 0;
  const t0 = process.hrtime.bigint();
  const c0 = threadCpuSeconds();
  let completed = 0;
  let seenKick = 0;
  if (d.mode === 'poll') {
    outer: for (;;) {
      while (q.pending() === 0);
      let c;
      while ((c = q.pop()) !== null) {
        q.pushUsed(c, 0);
        if (++completed === n) break outer;
      }
    }
  } else if (d.mode === 'sleep') {
    outer: for (;;) {
      if (q.pending() === 0 && !q.enableNotifications()) {
        seenKick = waitChange(ctl, CTL.kick, seenKick);
      }
      q.disableNotifications();
      let c;
      while ((c = q.pop()) !== null) {
        q.pushUsed(c, 0);
        if (q.needsNotification()) {
          calls++;
          Atomics.add(ctl, CTL.call, 1);
          Atomics.notify(ctl, CTL.call, 1);
        }
        if (++completed === n) break outer;
      }
    }
  } else {
    if (packed) {
      let c: DescriptorChain | undefined;
      for (;;) {
        while (q.pending() === 0);
        let k = 0;
        let next: DescriptorChain | null;
        while ((next = q.pop(c)) !== null) {
          c = next; // one chain object refilled
          q.addUsed(c.head, 0);
          k++;
        }
        q.publishUsed();
        completed += k;
        if (completed === n) break;
      }
    } else for (;;) {
      let k = q.pending();
      while (k === 0) k = q.pending();
      let c: DescriptorChain | undefined;
      for (let i = 0; i < k; i++) {
        c = q.pop(c)!; // batched processing: one chain object refilled
        q.addUsed(c.head, 0);
      }
      q.publishUsed();
      completed += k;
      if (completed === n) break;
    }
  }
  const ns = Number(process.hrtime.bigint() - t0);
  return { role: 'device', ns, cpu: threadCpuSeconds() - c0, kicks, calls, waits: slept, pin };
}

// Runs only as the worker (ring.ts imports this module for its constants and types).
if (parentPort && (workerData as RingWorkerData | undefined)?.role) {
  parentPort.postMessage(main(workerData as RingWorkerData));
}
