/**
 * virtio-test as a registered device: the seed's device (ID 45, one queue), its guest driver
 * and the seed's user program `virtio N` for the embedded machine, and the same program (in C,
 * against the C driver of guest/linux/) for User-Mode Linux.
 */
import type { DeviceDefinition } from '../definition.js';
import { VirtioTestDevice } from './device.js';
import { DEFAULT_QUEUE_SIZE, VIRTIO_ID_TEST } from './protocol.js';

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
  embedded: {
    async loadDriver() {
      const { VirtioTestDriver } = await import('../../drivers/virtio-test/driver.js');
      return (deviceIds) => new VirtioTestDriver({ deviceIds });
    },
    async loadProgram(name) {
      if (name === 'virtio') return (await import('../../drivers/virtio-test/program.js')).virtioProgram;
      if (name === 'stress') return (await import('../../drivers/virtio-test/stress-program.js')).stressProgram;
      return undefined;
    },
    programArgv: (values, positionals) => {
      const count = Number(values.count ?? 1);
      return ['virtio', ...(values.json ? ['-j'] : []), ...(count > 1 ? ['-c', String(count)] : []), ...positionals];
    },
  },
  linux: {
    // The C program of guest/linux/user against the C driver: once, or K times with N, N+1, ... mod 256.
    guestCommand(values, positionals) {
      const count = Number(values.count ?? 1);
      const n = Number(positionals[0]);
      if (count <= 1) return ['virtio', String(n)];
      const loop =
        `i=0; while [ $i -lt ${count} ]; do virtio $(( (${n} + i) % 256 )) || exit $?; i=$((i + 1)); done; ` +
        `echo "virtio: ${count} requests, ${count} responses verified"`;
      return ['sh', '-c', loop];
    },
    qemuDevice: () => null,
    qemuMissing: "QEMU 7.2 has no vhost-user device for ID 45 (the generic vhost-user-test-device arrived in QEMU 10.2)",
  },
};
