/**
 * What a host and a driver see of a virtqueue, whichever layout was negotiated: the split ring
 * (§2.7: device-queue.ts, driver-queue.ts) or the packed ring (§2.8, VIRTIO_F_RING_PACKED:
 * packed-device-queue.ts, packed-driver-queue.ts). Both halves of both layouts implement these
 * with the same names, the same DescriptorChain and the same typed errors, so DeviceRuntime,
 * the device models and the guest drivers never ask which one they have.
 *
 * Indices differ in meaning only: for a split ring `nextAvail`/`nextUsed` are the free-running
 * 16-bit ring indices; for a packed ring each is a position with its wrap counter in bit 15
 * (packed-ring.ts: "index with wrap bit 15"), the form vhost-user's GET/SET_VRING_BASE carries.
 */
import type { DescriptorChain } from './chain.js';
import type { DeviceQueueStatus } from './device-queue.js';
import type { QueueElement } from './queue-element.js';
import type { Buffer, UsedBuffer } from './driver-queue.js';

/** The device half (DeviceQueue, PackedDeviceQueue). */
export interface DeviceVirtqueue {
  readonly size: number;
  /** The queue's index in its device (trace events, status). */
  readonly index: number;
  /** split: free-running avail index; packed: position | wrap counter << 15. */
  readonly nextAvail: number;
  /** split: free-running used index; packed: position | wrap counter << 15. */
  readonly nextUsed: number;
  /** Chains waiting (split: how many; packed: 1 if at least one, else 0). Throws VirtioError on a bad avail index. */
  pending(): number;
  /** Takes the next available chain, or null; throws VirtioError on a bad one (the queue does not move). */
  pop(reuse?: DescriptorChain): DescriptorChain | null;
  /**
   * The chain `head` names again, without touching the available side: vhost-user resubmission
   * of chains taken before a ring restart. split: `head` is a descriptor index; packed: a
   * buffer id still in flight (see PackedDeviceQueue.chainAt).
   */
  chainAt(head: number): DescriptorChain;
  /** Adds a used element / descriptor for `head` (chain.head) without publishing it. */
  addUsed(head: number, len: number): void;
  /** Makes every used entry added so far visible to the driver (one release store). */
  publishUsed(): void;
  /** Whether the driver wants a used buffer notification for what was published since the last call. */
  needsNotification(): boolean;
  disableNotifications(): void;
  /** Re-enables kicks and re-checks the ring: true when work arrived meanwhile. */
  enableNotifications(): boolean;
  /** The queue's state for status queries (packed: fields carry the packed equivalents, see PackedDeviceQueue.status). */
  status(): DeviceQueueStatus;
  /**
   * The chain at `at` (split: a descriptor index; packed: a ring position), by default the next
   * available one (null when none is), decoded for status queries without being taken; walked
   * with pop()'s validation first (VirtioError on a bad chain).
   */
  element(at?: number): QueueElement | null;
  /** For trace events: the driver's used-notification word and flags. */
  usedEventWord(): number;
  availFlagsWord(): number;
}

/** The driver half (DriverQueue, PackedDriverQueue), as the guest drivers use it. */
export interface DriverVirtqueue<T = unknown> {
  readonly size: number;
  readonly index: number;
  readonly isBroken: boolean;
  readonly numFree: number;
  readonly inFlight: number;
  lastUsedLen: number;
  add(out: readonly Buffer[], inn: readonly Buffer[], token: T, publish?: boolean): boolean;
  publish(): void;
  needsKick(): boolean;
  hasUsed(): boolean;
  /** Used entries published and not collected (packed: 1 when at least one, else 0). */
  pendingUsed(): number;
  getUsed(): UsedBuffer<T> | null;
  getUsedToken(): T | undefined;
  disableCallbacks(): void;
  enableCallbacks(): boolean;
  detachUnused(): T[];
}
