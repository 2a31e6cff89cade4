/**
 * virtio-test as a registered device: the seed's device (ID 45, one queue), its guest driver
 * and the seed's user program `virtio N` for the embedded machine, and the same program (in C,
 * against the C driver of guest/linux/) for User-Mode Linux.
 */
import type { DeviceDefinition } from '../definition.js';
import { VirtioTestDevice } from './device.js';
import { VIRTIO_ID_TEST } from './protocol.js';

/** virtio_uml (Linux 6.1) always sets up 256-entry rings, and vhost-user cannot advertise a smaller maximum. */
const DEFAULT_QUEUE_SIZE = 256;

export const virtioTestDefinition: DeviceDefinition = {
  name: 'virtio-test',
  deviceId: VIRTIO_ID_TEST,
  summary: "the seed tutorial's device: logs each request, answers {arg1+100, arg2+100, arg3+100}",
  options: [
    {
      flag: 'device-id',
      type: 'integer',
      valueName: 'ID',
      default: VIRTIO_ID_TEST,
      min: 1,
      max: 0xffff,
      help: 'the device ID to report (virtio 1.4 assigns 45 to virtio-spi; the seed predates that)',
    },
    {
      flag: 'queue-size',
      type: 'integer',
      valueName: 'Q',
      default: DEFAULT_QUEUE_SIZE,
      min: 1,
      max: 32768,
      check: (v) => ((Number(v) & (Number(v) - 1)) === 0 ? null : 'a power of two'),
      help: 'the largest ring a driver may set, a power of two (virtio_uml always uses 256)',
    },
  ],
  open(values, env) {
    const deviceId = Number(values['device-id'] ?? VIRTIO_ID_TEST);
    const queueSize = Number(values['queue-size'] ?? DEFAULT_QUEUE_SIZE);
    return {
      description: `device ${deviceId}, queue ≤ ${queueSize}`,
      createDevice: () => new VirtioTestDevice({ deviceId, queueSize, print: !env.quiet }),
    };
  },
};
