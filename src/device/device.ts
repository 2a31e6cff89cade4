/**
 * The device contract: what a device model states and does. A model is pure logic over the
 * virtio core: it never opens files, sockets or threads, and it does not know which host
 * (embedded machine or vhost-user backend) runs it. Everything host-specific reaches it
 * through a DeviceContext.
 */
import type { DescriptorChain } from '../virtio/chain.js';
import type { GuestMemory } from '../virtio/memory.js';

export interface DeviceContext {
  /** The guest's memory (descriptor buffers are already views into it). */
  readonly memory: GuestMemory;
  /** Features the driver accepted (§2.2): a subset of what the device offered. */
  readonly driverFeatures: bigint;
  /** A log line, through the host's sink (stdout, a file, a test's array...). */
  log(line: string): void;
  /** Tells the driver the configuration space changed (§2.5, §4.2.2: config change interrupt). */
  configChanged(): void;
}

export interface VirtioDevice {
  /** §5 Device Types: the device ID the transport reports. */
  readonly deviceId: number;
  /**
   * Device-specific feature bits offered (§2.2); the host adds the transport and ring
   * features it implements (VERSION_1, INDIRECT_DESC, EVENT_IDX).
   */
  readonly features: bigint;
  /**
   * Names of the device-specific feature bits, as the spec spells them (`VIRTIO_BLK_F_FLUSH`),
   * for `virtio --stats` and the daemon's query-status. Bits without a name print as numbers.
   */
  readonly featureNames?: Readonly<Record<number, string>>;
  /** Size in bytes of the device configuration space (§2.5). */
  readonly configSize: number;
  /** Maximum size of each virtqueue, one entry per queue. */
  readonly queueMaxSizes: readonly number[];

  /** Reads `into.length` bytes of config space from `offset` (bounds already checked). */
  readConfig(offset: number, into: Uint8Array): void;
  /** Driver write to config space (bounds already checked). Fields the driver may not write are ignored. */
  writeConfig(offset: number, data: Uint8Array, ctx: DeviceContext): void;

  /**
   * Handles one descriptor chain taken from queue `queue`. Returns the number of bytes written
   * into the chain's writable part (the used length, §2.7.8), or a promise of it for a device
   * that answers later. Throwing a VirtioError (e.g. DEVICE_REQUEST_INVALID for a malformed
   * request) is a device error: the host sets DEVICE_NEEDS_RESET (§2.1.2).
   * The chain is the model's until this returns (or until the returned promise settles): the
   * host may reuse the object afterwards, so a model keeps no reference to it. Until then the
   * model may hold its segment views across awaits (a preadv into them): a reset or ring stop
   * revokes the chain (its accessors do nothing any more), and a reset is complete, and guest
   * memory released, only once every such promise has settled (DeviceRuntime.settled(): the
   * embedded transport reads Status back as 0 only then, §2.4.1; the vhost-user host unmaps
   * only then). So the promise must settle only after the model's last access to the views.
   */
  handleChain(queue: number, chain: DescriptorChain, ctx: DeviceContext): number | Promise<number>;

  /** The driver set DRIVER_OK with these features (optional hook). */
  activate?(ctx: DeviceContext): void;
  /** Device reset (§2.1, §3.1.1 step 1): back to the initial state. */
  reset(): void;
}
