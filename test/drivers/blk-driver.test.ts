import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlkDevice, BlkType, type BlkDeviceOptions } from '../../src/devices/blk/device.js';
import { MemoryStorage } from '../../src/devices/blk/memory-storage.js';
import type { BlockStorage } from '../../src/devices/blk/storage.js';
import { BLKDISCARD, BLKGETSERIAL, BLKGETSIZE64, BlkDriver, BLKZEROOUT } from '../../src/drivers/blk/driver.js';
import { blkcheckProgram } from '../../src/drivers/blk/program.js';
import { Errno } from '../../src/drivers/kernel.js';
import { VirtioDriverDevice } from '../../src/drivers/virtio-bus.js';
import { DirectTransport, guestKernel } from '../helpers/direct-transport.js';

const SECTOR = 512;

async function setup(options: Partial<BlkDeviceOptions> & { sectors?: number; maxQueues?: number } = {}) {
  const g = guestKernel(4 << 20);
  const storage = (options.storage as MemoryStorage | undefined) ?? new MemoryStorage((options.sectors ?? 2048) * SECTOR);
  const device = new BlkDevice({ ...options, storage });
  const transport = new DirectTransport(device, g.memory);
  const dev = new VirtioDriverDevice(transport, g.kernel);
  const driver = new BlkDriver({ maxQueues: options.maxQueues });
  await dev.bind(driver);
  return { ...g, storage, device, transport, dev, driver };
}

/** Runs the demo program; its printed lines (without the kernel's). */
async function runProgram(s: Awaited<ReturnType<typeof setup>>, argv: string[]) {
  const from = s.lines.length;
  const code = await blkcheckProgram(s.kernel, argv);
  return { code, out: s.lines.slice(from).filter((l) => !/^\[/.test(l)) };
}

test('probe: /dev/vda with the device\'s queues; a printk line with the size', async () => {
  const s = await setup({ numQueues: 3, sectors: 100 });
  assert.deepEqual(s.driver.disk(s.dev), {
    name: 'vda',
    info: {
      capacitySectors: 100,
      blockSize: 512,
      readOnly: false,
      flush: true,
      numQueues: 3,
      discard: { maxSectors: 65536, maxSeg: 32, alignment: 1 },
      writeZeroes: { maxSectors: 65536, maxSeg: 32 },
    },
  });
  assert.ok(s.lines.some((l) => /virtio_blk: \[vda\] 100 512-byte logical blocks \(51200 bytes\), 3 request queues/.test(l)), s.lines.join('\n'));
});

test('blkcheck verifies a read-write disk over 4 queues and leaves its contents as they were', async () => {
  const s = await setup({ numQueues: 4, serial: 'vt-disk-7' });
  for (let i = 0; i < s.storage.bytes.length; i++) s.storage.bytes[i] = (i * 7 + 3) & 0xff;
  const original = s.storage.bytes.slice();
  const { code, out } = await runProgram(s, ['blkcheck', '300']);
  assert.equal(code, 0, out.join('\n'));
  assert.deepEqual(out, [
    "blkcheck: /dev/vda: 2048 sectors (1048576 bytes), 512-byte blocks, serial 'vt-disk-7'",
    'blkcheck: wrote 154112 bytes (sectors 0-299 and sector 2047), read them back and verified them; a write past the end was refused',
    'blkcheck: flush ok',
    'blkcheck: discard ok (153600 bytes)',
    'blkcheck: write-zeroes ok (4096 bytes read back as zeroes)',
    'blkcheck: original contents restored and verified',
  ]);
  assert.deepEqual(s.storage.bytes, original, 'the disk is as it was');
  assert.ok(s.storage.counts.flush >= 2 && s.storage.counts.discard >= 1 && s.storage.counts.writeZeroes >= 1);
  assert.ok(s.transport.runtime.activeQueue(3) !== null);
});

test('blkcheck fails (exit 1) when the disk does not keep what was written', async () => {
  const inner = new MemoryStorage(512 * SECTOR);
  // a disk that drops every write to sector 5
  const lossy: BlockStorage = {
    size: inner.size,
    readOnly: false,
    read: (o, v) => inner.read(o, v),
    write: (o, v) => {
      let at = o;
      const kept = v.map((b) => {
        const copy = b.slice();
        for (let k = 0; k < copy.length; k++) if (Math.floor((at + k) / SECTOR) === 5) copy[k] = inner.bytes[at + k]!;
        at += b.length;
        return copy;
      });
      return inner.write(o, kept);
    },
    flush: () => inner.flush(),
    discard: (o, l) => inner.discard(o, l),
    writeZeroes: (o, l, u) => inner.writeZeroes(o, l, u),
  };
  const s = await setup({ storage: lossy as unknown as MemoryStorage });
  const { code, out } = await runProgram(s, ['blkcheck', '16']);
  assert.equal(code, 1);
  assert.ok(out.some((l) => /^ERROR: blkcheck: byte 25\d\d read back differs/.test(l)), out.join('\n'));
});

test('blkcheck on a read-only disk: reads, and checks that a write is refused', async () => {
  const storage = new MemoryStorage(64 * SECTOR, { readOnly: true });
  storage.bytes.fill(0x11);
  const s = await setup({ storage });
  const { code, out } = await runProgram(s, ['blkcheck']);
  assert.equal(code, 0, out.join('\n'));
  assert.deepEqual(out, [
    'blkcheck: /dev/vda: 64 sectors (32768 bytes), 512-byte blocks, read-only',
    'blkcheck: read 32768 bytes (sectors 0-63); a write was refused (EPERM): read-only',
  ]);
  assert.ok(storage.bytes.every((b) => b === 0x11));
});

test('pread/pwrite: alignment EINVAL, reads cut at the end, writes past the end ENOSPC; requests split and in flight together', async () => {
  const s = await setup({ numQueues: 2, sectors: 1024 });
  const fd = s.kernel.open('/dev/vda');
  const size = 1024 * SECTOR;
  await assert.rejects(s.kernel.pread(fd, 100, 0), (e: unknown) => e instanceof Errno && e.code === 'EINVAL');
  await assert.rejects(s.kernel.pwrite(fd, new Uint8Array(SECTOR), 7), (e: unknown) => e instanceof Errno && e.code === 'EINVAL');
  assert.equal((await s.kernel.pread(fd, 4 * SECTOR, size - SECTOR)).length, SECTOR, 'cut at the end');
  assert.equal((await s.kernel.pread(fd, SECTOR, size)).length, 0, 'at the end: no bytes');
  await assert.rejects(s.kernel.pwrite(fd, new Uint8Array(SECTOR), size), (e: unknown) => e instanceof Errno && e.code === 'ENOSPC');
  assert.equal(await s.kernel.pwrite(fd, new Uint8Array(2 * SECTOR).fill(9), size - SECTOR), SECTOR, 'cut at the end');
  // 300 KiB: 5 requests of ≤ 64 KiB, all in flight at once
  const data = Uint8Array.from({ length: 600 * SECTOR }, (_, i) => (i * 13) & 0xff);
  s.transport.paused = true;
  const w = s.kernel.pwrite(fd, data, 10 * SECTOR);
  await new Promise((r) => setImmediate(r));
  s.transport.release();
  assert.equal(await w, data.length);
  assert.deepEqual(s.storage.bytes.subarray(10 * SECTOR, 610 * SECTOR), data);
  assert.deepEqual(await s.kernel.pread(fd, data.length, 10 * SECTOR), data);
  // sequential read/write at the file position
  const fd2 = s.kernel.open('/dev/vda');
  assert.equal(await s.kernel.write(fd2, new Uint8Array(SECTOR).fill(1)), SECTOR);
  assert.equal(await s.kernel.write(fd2, new Uint8Array(SECTOR).fill(2)), SECTOR);
  assert.deepEqual([...(await s.kernel.pread(fd2, 2 * SECTOR, 0))].filter((_, i) => i % SECTOR === 0), [1, 2]);
});

test('ioctls: size, serial, discard and zero-out (range checks), unknown → ENOTTY', async () => {
  const s = await setup({ sectors: 256, serial: 'ABCDEFGHIJKLMNOPQRST', maxDiscardSectors: 8, maxDiscardSeg: 2 });
  const fd = s.kernel.open('/dev/vda');
  const arg = new Uint8Array(24);
  await s.kernel.ioctl(fd, BLKGETSIZE64, arg);
  assert.equal(new DataView(arg.buffer).getBigUint64(0, true), 256n * 512n);
  await s.kernel.ioctl(fd, BLKGETSERIAL, arg);
  assert.equal(new TextDecoder().decode(arg.subarray(0, 20)), 'ABCDEFGHIJKLMNOPQRST');
  s.storage.bytes.fill(0xff);
  const range = (start: number, length: number) => {
    const r = new Uint8Array(16);
    new DataView(r.buffer).setBigUint64(0, BigInt(start), true);
    new DataView(r.buffer).setBigUint64(8, BigInt(length), true);
    return r;
  };
  // 40 sectors with segments of ≤ 8 sectors, ≤ 2 per request: 3 requests
  await s.kernel.ioctl(fd, BLKDISCARD, range(8 * SECTOR, 40 * SECTOR));
  assert.equal(s.storage.counts.discard, 5);
  assert.ok(s.storage.bytes.subarray(8 * SECTOR, 48 * SECTOR).every((b) => b === 0));
  assert.equal(s.storage.bytes[48 * SECTOR], 0xff);
  await s.kernel.ioctl(fd, BLKZEROOUT, range(100 * SECTOR, SECTOR));
  assert.ok(s.storage.bytes.subarray(100 * SECTOR, 101 * SECTOR).every((b) => b === 0));
  await assert.rejects(s.kernel.ioctl(fd, BLKDISCARD, range(255 * SECTOR, 2 * SECTOR)), (e: unknown) => e instanceof Errno && e.code === 'EINVAL');
  await assert.rejects(s.kernel.ioctl(fd, BLKDISCARD, range(1, SECTOR)), (e: unknown) => e instanceof Errno && e.code === 'EINVAL');
  await assert.rejects(s.kernel.ioctl(fd, 0x1234, arg), (e: unknown) => e instanceof Errno && e.code === 'ENOTTY');
});

test('a device error (NEEDS_RESET) fails requests in flight with EIO', async () => {
  const s = await setup();
  const fd = s.kernel.open('/dev/vda');
  s.transport.paused = true;
  const pending = s.kernel.pread(fd, SECTOR, 0);
  await new Promise((r) => setImmediate(r));
  s.transport.runtime.deviceError(new Error('simulated device failure'));
  await assert.rejects(pending, (e: unknown) => e instanceof Errno && e.code === 'EIO');
  await assert.rejects(s.kernel.pread(fd, SECTOR, 0), (e: unknown) => e instanceof Errno && e.code === 'EIO');
  assert.ok(s.lines.some((l) => /virtio_blk: device reports DEVICE_NEEDS_RESET; device is broken/.test(l)));
});

test('a request the device answers UNSUPP reaches the program as EOPNOTSUPP', async () => {
  const s = await setup();
  // the device refuses GET_ID: answer UNSUPP by changing the request type on the way
  const inner = s.device.handleChain.bind(s.device);
  s.device.handleChain = (q, chain, ctx) => (chain.readUint32(0) === BlkType.GET_ID ? (chain.writeUint8(chain.writableLength - 1, 2), chain.writableLength) : inner(q, chain, ctx));
  const fd = s.kernel.open('/dev/vda');
  await assert.rejects(s.kernel.ioctl(fd, BLKGETSERIAL, new Uint8Array(20)), (e: unknown) => e instanceof Errno && e.code === 'EOPNOTSUPP');
});
