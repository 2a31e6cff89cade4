/**
 * One descriptor chain as the driver wrote it, decoded for a status query (QEMU's
 * x-query-virtio-queue-element, VirtioQueueElement): the head, and every descriptor with its
 * address, length and flags, the entries of an indirect table under the descriptor that points
 * at it. The device halves make it (DeviceQueue.element, PackedDeviceQueue.element) after
 * walking the chain with the same validation as pop(), and without taking it: the available
 * side does not move.
 */
import { DescFlags, PackedDescFlags } from './constants.js';

export interface ElementDescriptor {
  /** split: descriptor table index; packed: ring position; in an indirect table: entry number. */
  index: number;
  addr: number;
  len: number;
  /** The descriptor's flags word (split §2.7.5; packed §2.8.13, with AVAIL/USED). */
  flags: number;
  /** split: the `next` field when NEXT is set; packed: the buffer id (§2.8.13). */
  next?: number;
  id?: number;
  /** The entries of the indirect table this descriptor points at (§2.7.5.3, §2.8.7). */
  table?: ElementDescriptor[];
}

export interface QueueElement {
  /** split: the head descriptor index (the used element's id); packed: the buffer id. */
  head: number;
  /** The available ring entry it was read from (split: free-running index) or ring position (packed), when the next available one was asked for. */
  availIndex: number | null;
  /** Device-readable and device-writable bytes, and descriptors walked (indirect entries included). */
  readable: number;
  writable: number;
  descriptorCount: number;
  descriptors: ElementDescriptor[];
}

/** Flag names of a descriptor's flags word: NEXT, WRITE, INDIRECT (§2.7.5), AVAIL, USED (§2.8.1). */
export function descriptorFlagNames(flags: number, packed: boolean): string[] {
  const names: string[] = [];
  if (flags & DescFlags.NEXT) names.push('next');
  if (flags & DescFlags.WRITE) names.push('write');
  if (flags & DescFlags.INDIRECT) names.push('indirect');
  if (packed && flags & PackedDescFlags.AVAIL) names.push('avail');
  if (packed && flags & PackedDescFlags.USED) names.push('used');
  return names;
}
