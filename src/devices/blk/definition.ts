/**
 * virtio-blk as a registered device (virtio 1.2 §5.2, device ID 2): the model of device.ts over
 * an image file or block device (file-storage.ts: positional I/O through io_uring or libuv's
 * thread pool, optional O_DIRECT, QEMU-compatible image locks), the embedded guest's driver (/dev/vda) and demo
 * program `blkcheck`, and the same demo in a real Linux guest with Linux's virtio_blk driver.
 *
 * Both demos save the sectors they use, write a random pattern, read it back and compare, flush,
 * discard, and put the saved sectors back: the image's contents are unchanged afterwards
 * (unless the run is interrupted).
 */
import type { DeviceDefinition, OptionValues } from '../definition.js';
import { BlkDevice, DEFAULT_QUEUE_SIZE, ID_BYTES, VIRTIO_ID_BLOCK } from './device.js';
import { FileStorage, type AioEngine } from './file-storage.js';

/** The embedded demo program's name (argv[0]). */
export const PROGRAM_NAME = 'blkcheck';
/** Sectors the demo uses without --count. */
export const DEFAULT_DEMO_SECTORS = 128;
export const MAX_QUEUES = 16;

/** The demo's sector count from `values.count` (a number from the CLI, or a string). */
export function demoSectors(values: OptionValues): number {
  const raw = values.count;
  const n = raw === undefined || raw === '' ? DEFAULT_DEMO_SECTORS : Number(raw);
  if (!Number.isSafeInteger(n) || n < 1 || n > 65536) throw new Error(`blk: the demo's sector count must be an integer from 1 to 65536, got '${String(raw)}'`);
  return n;
}

/** The serial option's rule: ≤ 20 bytes of printable ASCII (§5.2.6: an ASCII string of up to 20 bytes). */
function checkSerial(value: unknown): string | null {
  const s = String(value);
  if (!/^[\x20-\x7e]*$/.test(s)) return 'printable ASCII only';
  if (s.length > ID_BYTES) return `at most ${ID_BYTES} characters (GET_ID's field)`;
  return null;
}

export const blkDefinition: DeviceDefinition = {
  name: 'blk',
  deviceId: VIRTIO_ID_BLOCK,
  summary: 'the block device (virtio-blk): serves a raw disk image or a block device',
  options: [
    {
      flag: 'image',
      type: 'string',
      valueName: 'FILE',
      required: true,
      help: 'the raw disk image (or block device) to serve; required. It is locked while served, as QEMU does',
    },
    { flag: 'read-only', type: 'boolean', help: 'serve the image read-only (VIRTIO_BLK_F_RO: writes fail)' },
    {
      flag: 'num-queues',
      type: 'integer',
      valueName: 'N',
      default: 1,
      min: 1,
      max: MAX_QUEUES,
      help: 'request queues (VIRTIO_BLK_F_MQ), served concurrently',
    },
    {
      flag: 'serial',
      type: 'string',
      valueName: 'TEXT',
      check: checkSerial,
      help: 'the disk serial the guest reads with VIRTIO_BLK_T_GET_ID (≤ 20 ASCII characters; default empty)',
    },
    { flag: 'direct', type: 'boolean', help: 'O_DIRECT: bypass the host page cache (the file system must support it)' },
    {
      flag: 'aio',
      type: 'string',
      valueName: 'ENGINE',
      check: (v) => (v === 'threads' || v === 'io_uring' || v === 'auto' ? null : "'auto', 'io_uring' or 'threads'"),
      help: "the I/O engine, as QEMU's aio=: io_uring, threads (libuv's thread pool), or auto (default): io_uring for transfers up to 64 KiB and the pool for larger ones, the pool alone where io_uring is not available",
    },
    {
      flag: 'queue-size',
      type: 'integer',
      valueName: 'Q',
      default: DEFAULT_QUEUE_SIZE,
      min: 4,
      max: 32768,
      check: (v) => ((Number(v) & (Number(v) - 1)) === 0 ? null : 'a power of two'),
      help: 'the largest ring a driver may set, a power of two (virtio_uml always uses 256); seg_max is Q - 2',
    },
  ],
  async open(values, env) {
    const image = values.image;
    if (image === undefined || image === '') throw new Error('blk: --image FILE is required (the raw disk image to serve)');
    if (typeof image !== 'string') throw new Error(`blk: --image needs a file name, got '${String(image)}'`);
    const numQueues = Number(values['num-queues'] ?? 1);
    const queueSize = Number(values['queue-size'] ?? DEFAULT_QUEUE_SIZE);
    const serial = values.serial === undefined ? '' : String(values.serial);
    const reason = checkSerial(serial);
    if (reason) throw new Error(`blk: --serial '${serial}': ${reason}`);
    const storage = await FileStorage.open(image, {
      readOnly: values['read-only'] === true,
      direct: values.direct === true,
      ...(values.aio === undefined ? {} : { aio: values.aio as AioEngine }),
      warn: (line) => env.warn(line),
    });
    return {
      description: `image ${storage.description}, ${numQueues} queue${numQueues === 1 ? '' : 's'} ≤ ${queueSize}`,
      createDevice: () => new BlkDevice({ storage, numQueues, queueSize, serial }),
      close: () => storage.close(),
    };
  },
  embedded: {
    async loadDriver() {
      const { createDriver } = await import('../../drivers/blk/driver.js');
      return createDriver;
    },
    async loadProgram(name) {
      if (name === PROGRAM_NAME) return (await import('../../drivers/blk/program.js')).blkcheckProgram;
      return undefined;
    },
    programArgv: (values) => [PROGRAM_NAME, ...(values.json ? ['-j'] : []), String(demoSectors(values))],
  },
  linux: {
    // Linux's virtio_blk behind /dev/vda, busybox tools only: save N sectors, write a pattern of
    // this run with O_DIRECT (and fsync: a FLUSH), read it back with O_DIRECT, compare, discard
    // if blkdiscard is there, restore the saved sectors.
    guestCommand(values) {
      const n = demoSectors(values);
      // Compact: QEMU passes it on the kernel command line (base64, at most 2048 bytes in all).
      const script = [
        'd=/dev/vda;[ -b $d ]||{ echo "blk: no $d";exit 1;}',
        `s=$(cat /sys/block/vda/size);ro=$(cat /sys/block/vda/ro);n=${n};[ $s -lt $n ]&&n=$s;[ $n -ge 1 ]||{ echo "blk: $d is empty";exit 1;}`,
        'b=$((n*512));echo "blk: $d: $s sectors ($((s*512)) bytes), read-only $ro"',
        'f(){ echo "ERROR: blk: $*";exit 1;}',
        'r(){ dd if=$d of=$1 bs=512 count=$n iflag=direct 2>/dev/null;}',
        'w(){ dd if=$1 of=$d bs=512 count=$n oflag=direct conv=fsync 2>/dev/null;}',
        'r /tmp/o||f "reading $d failed"',
        'if [ $ro = 1 ];then dd if=/tmp/o of=$d bs=512 count=1 oflag=direct 2>/dev/null&&f "a write to the read-only disk succeeded";' +
          'echo "blk: read $b bytes; the write was refused (read-only)";exit 0;fi',
        // a pattern of this run (the time in ns), so bytes an earlier run left cannot pass for it
        'yes "virtio-blk $(date +%s%N) $$"|head -c $b >/tmp/p',
        'w /tmp/p||f "writing $d failed";r /tmp/b||f "reading $d back failed"',
        'cmp -s /tmp/p /tmp/b||f "the bytes read back differ from the bytes written"',
        'echo "blk: wrote $b bytes with O_DIRECT, read them back and verified them";echo "blk: flush ok (fsync)"',
        'if command -v blkdiscard >/dev/null;then blkdiscard -o 0 -l $b $d&&echo "blk: discard ok"||f "discard failed";else echo "blk: discard skipped (no blkdiscard)";fi',
        'w /tmp/o||f "restoring $d failed";r /tmp/b;cmp -s /tmp/o /tmp/b||f "the restored sectors differ";echo "blk: original contents restored"',
      ].join('\n');
      return ['sh', '-c', script];
    },
    // As many queues as the back end serves (QEMU refuses more than GET_QUEUE_NUM reports).
    qemuDevice: (values) => `vhost-user-blk-pci,num-queues=${Number(values['num-queues'] ?? 1)}`,
  },
};
