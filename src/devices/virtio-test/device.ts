/**
 * virtio-test, the seed's device: one queue of request/response chains. For each chain it
 * reads the 48-byte request, logs it (seed wording), and writes the 12-byte answer.
 * Pure logic: logging goes to the context's sink.
 */
import type { DeviceContext, VirtioDevice } from '../../device/device.js';
import type { DescriptorChain } from '../../virtio/chain.js';
import { bit } from '../../virtio/constants.js';
import { fail } from '../../virtio/errors.js';
import {
  ANSWER_OFFSET,
  CONFIG_ACTUAL,
  CONFIG_SIZE,
  DEFAULT_QUEUE_SIZE,
  REQUEST_ARG1,
  REQUEST_ARG2,
  REQUEST_ARG3,
  REQUEST_SIZE,
  RESPONSE_ARG1,
  RESPONSE_ARG2,
  RESPONSE_RET,
  RESPONSE_SIZE,
  VIRTIO_ID_TEST,
  VIRTIO_TEST_F_CAN_PRINT,
  decodeRequest,
  requestLogLines,
} from './protocol.js';

export interface VirtioTestOptions {
  /** Default 45. */
  deviceId?: number;
  /** Maximum size of the queue; default 256. */
  queueSize?: number;
  /** Log the five request lines per request (default true). */
  print?: boolean;
}

export class VirtioTestDevice implements VirtioDevice {
  readonly deviceId: number;
  readonly features = bit(VIRTIO_TEST_F_CAN_PRINT);
  readonly featureNames = { [VIRTIO_TEST_F_CAN_PRINT]: 'VIRTIO_TEST_F_CAN_PRINT' };
  readonly configSize = CONFIG_SIZE;
  readonly queueMaxSizes: readonly number[];
  private readonly config = new Uint8Array(CONFIG_SIZE);
  private readonly print: boolean;
  private readonly request = new Uint8Array(REQUEST_SIZE);
  /** Requests answered since the last reset. */
  served = 0;

  constructor(options: VirtioTestOptions = {}) {
    this.deviceId = options.deviceId ?? VIRTIO_ID_TEST;
    this.queueMaxSizes = [options.queueSize ?? DEFAULT_QUEUE_SIZE];
    this.print = options.print ?? true;
  }

  readConfig(offset: number, into: Uint8Array): void {
    into.set(this.config.subarray(offset, offset + into.length));
  }

  /** The driver may write `actual` and `event` (the seed's set_config); num_pages is the device's. */
  writeConfig(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      if (offset + i >= CONFIG_ACTUAL) this.config[offset + i] = data[i]!;
    }
  }

  /** Device-side config change (num_pages): the runtime bumps the generation and notifies. */
  setNumPages(value: number, ctx: DeviceContext): void {
    new DataView(this.config.buffer).setUint32(0, value >>> 0, true);
    ctx.configChanged();
  }

  handleChain(_queue: number, chain: DescriptorChain, ctx: DeviceContext): number {
    if (chain.readableLength < REQUEST_SIZE || chain.writableLength < RESPONSE_SIZE) this.refuse(chain);
    if (this.print) this.logRequest(chain, ctx);
    // The answer (protocol.ts answer()) field by field, straight between the guest's buffers.
    // Every field is read before any is written: a driver whose response buffer overlaps its
    // request still gets the answer to the request it sent.
    const ret = (chain.readUint32(REQUEST_ARG1) + ANSWER_OFFSET) >>> 0;
    const arg1 = (chain.readUint32(REQUEST_ARG2) + ANSWER_OFFSET) >>> 0;
    const arg2 = (chain.readUint32(REQUEST_ARG3) + ANSWER_OFFSET) >>> 0;
    chain.writeUint32(RESPONSE_RET, ret);
    chain.writeUint32(RESPONSE_ARG1, arg1);
    chain.writeUint32(RESPONSE_ARG2, arg2);
    this.served++;
    return RESPONSE_SIZE;
  }

  private logRequest(chain: DescriptorChain, ctx: DeviceContext): void {
    chain.read(this.request);
    for (const line of requestLogLines(decodeRequest(this.request))) ctx.log(line);
  }

  private refuse(chain: DescriptorChain): never {
    return fail(
      'DEVICE_REQUEST_INVALID',
      `virtio-test chain ${chain.head} has ${chain.readableLength} readable / ${chain.writableLength} writable bytes; ` +
        `needs ≥ ${REQUEST_SIZE} / ≥ ${RESPONSE_SIZE}`,
    );
  }

  reset(): void {
    this.config.fill(0);
    this.served = 0;
  }
}
