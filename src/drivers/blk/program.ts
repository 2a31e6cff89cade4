/**
 * The embedded guest's program `blkcheck [-j] [SECTORS]`: exercises /dev/vda through the
 * virtio-blk driver (src/drivers/blk/driver.ts) and prints a short report.
 *
 *  1. BLKGETSIZE64 / BLKSSZGET / BLKROGET / BLKGETSERIAL: size, block size, read-only, serial.
 *  2. Saves the sectors it will use: the first SECTORS sectors (default 128, cut to the disk)
 *     and the last block of the disk.
 *  3. Writes a pattern made from a fresh random seed there (one pwrite each: the driver sends
 *     the requests all at once over its queues), checks that a write past the end is refused
 *     (ENOSPC), fsync (FLUSH), reads everything back and compares.
 *  4. BLKDISCARD over the first range, then BLKZEROOUT over its first blocks, read back as zeroes.
 *  5. Writes the saved sectors back, fsync, reads them back and compares: the disk's contents are
 *     what they were (unless the run is interrupted).
 *
 * A read-only disk: reads the range and checks that a write is refused (EPERM).
 * Exit status 0 only when every check passed; 1 when one failed; 255 for a bad argument or a
 * missing device. With -j the summary goes to the host (sys.report) instead of being printed.
 */
import { Errno, type Syscalls } from '../kernel.js';
import { BLKDISCARD, BLKGETSERIAL, BLKGETSIZE64, BLKROGET, BLKSSZGET, BLKZEROOUT } from './driver.js';

export const DEVICE_PATH = '/dev/vda';
export const DEFAULT_SECTORS = 128;
const SECTOR = 512;
/** Blocks BLKZEROOUT zeroes and checks at most. */
const ZERO_BLOCKS = 8;
/** The ioctl argument buffer: big enough for the 20-byte serial. */
const ID_ARG = 24;

/** The pattern byte at byte `i` of the disk for `seed`: differs per byte, per sector and per run. */
export function patternByte(seed: number, i: number): number {
  const sector = Math.floor(i / SECTOR);
  return (seed + i * 7 + sector * 131 + (i >>> 8) * 13) & 0xff;
}

function pattern(seed: number, start: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let k = 0; k < length; k++) out[k] = patternByte(seed, start + k);
  return out;
}

const detail = (e: unknown) => (e instanceof Errno ? e.message : (e as Error)?.message ?? String(e));

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

class CheckFailed extends Error {}

export async function blkcheckProgram(sys: Syscalls, argv: readonly string[]): Promise<number> {
  let args = argv.slice(1);
  const json = args[0] === '-j';
  if (json) args = args.slice(1);
  if (args.length > 1 || (args.length === 1 && !/^\d{1,6}$/.test(args[0]!)) || Number(args[0] ?? DEFAULT_SECTORS) < 1) {
    sys.print('ERROR: usage: blkcheck [-j] [SECTORS] (sectors to test, 1..999999; default 128)');
    return 255;
  }
  const { pread, pwrite, fsync, ioctl } = sys;
  if (!pread || !pwrite || !fsync || !ioctl) {
    sys.print('ERROR: blkcheck: this kernel has no pread/pwrite/fsync/ioctl');
    return 255;
  }
  let fd: number;
  try {
    fd = sys.open(DEVICE_PATH);
  } catch (e) {
    sys.print(`ERROR: blkcheck: cannot open ${DEVICE_PATH}: ${detail(e)}`);
    return 255;
  }
  const call = {
    pread: (count: number, position: number) => pread.call(sys, fd, count, position),
    pwrite: (data: Uint8Array, position: number) => pwrite.call(sys, fd, data, position),
    fsync: () => fsync.call(sys, fd),
    ioctl: (request: number, arg: Uint8Array) => ioctl.call(sys, fd, request, arg),
  };
  const fields: Record<string, number | string> = {};
  const lines: string[] = [];
  const say = (line: string) => {
    if (json) lines.push(line);
    else sys.print(`blkcheck: ${line}`);
  };
  let failed: string | null = null;
  try {
    const arg = new Uint8Array(ID_ARG);
    await call.ioctl(BLKGETSIZE64, arg);
    const size = Number(new DataView(arg.buffer).getBigUint64(0, true));
    await call.ioctl(BLKSSZGET, arg);
    const block = new DataView(arg.buffer).getUint32(0, true);
    await call.ioctl(BLKROGET, arg);
    const readOnly = new DataView(arg.buffer).getUint32(0, true) !== 0;
    let serial = '';
    try {
      await call.ioctl(BLKGETSERIAL, arg);
      serial = new TextDecoder().decode(arg.subarray(0, arg.indexOf(0) < 0 ? 20 : arg.indexOf(0)));
    } catch (e) {
      if (!(e instanceof Errno && e.code === 'EOPNOTSUPP')) throw e;
    }
    Object.assign(fields, { sectors: size / SECTOR, bytes: size, blockSize: block, readOnly: readOnly ? 1 : 0, serial });
    say(`${DEVICE_PATH}: ${size / SECTOR} sectors (${size} bytes), ${block}-byte blocks${readOnly ? ', read-only' : ''}${serial ? `, serial '${serial}'` : ''}`);

    const wanted = Number(args[0] ?? DEFAULT_SECTORS) * SECTOR;
    const firstLen = Math.floor(Math.min(wanted, size) / block) * block;
    if (firstLen === 0) throw new CheckFailed(`${DEVICE_PATH} is smaller than one ${block}-byte block`);
    const ranges = [{ at: 0, length: firstLen }];
    if (size - block >= firstLen) ranges.push({ at: size - block, length: block }); // the last block: the capacity's edge
    const saved = await Promise.all(ranges.map((r) => call.pread(r.length, r.at)));
    saved.forEach((bytes, k) => {
      if (bytes.length !== ranges[k]!.length) throw new CheckFailed(`pread of ${ranges[k]!.length} bytes at ${ranges[k]!.at} returned ${bytes.length}`);
    });
    const total = ranges.reduce((a, r) => a + r.length, 0);
    const where = ranges.map((r) => (r.length === SECTOR ? `sector ${r.at / SECTOR}` : `sectors ${r.at / SECTOR}-${(r.at + r.length) / SECTOR - 1}`)).join(' and ');

    if (readOnly) {
      try {
        await call.pwrite(saved[0]!.subarray(0, block), 0);
        throw new CheckFailed('a write to the read-only disk succeeded');
      } catch (e) {
        if (!(e instanceof Errno && e.code === 'EPERM')) throw e;
      }
      fields.verified = 0;
      say(`read ${total} bytes (${where}); a write was refused (EPERM): read-only`);
    } else {
      // 1. pattern, flush, read back
      const seed = crypto.getRandomValues(new Uint32Array(1))[0]!;
      const patterns = ranges.map((r) => pattern(seed, r.at, r.length));
      await Promise.all(ranges.map((r, k) => call.pwrite(patterns[k]!, r.at)));
      try {
        await call.pwrite(new Uint8Array(block), size);
        throw new CheckFailed('a write past the end of the disk succeeded');
      } catch (e) {
        if (!(e instanceof Errno && e.code === 'ENOSPC')) throw e;
      }
      await call.fsync();
      const back = await Promise.all(ranges.map((r) => call.pread(r.length, r.at)));
      back.forEach((bytes, k) => {
        const at = firstDifference(bytes, patterns[k]!);
        if (at >= 0) throw new CheckFailed(`byte ${ranges[k]!.at + at} read back differs from the byte written`);
      });
      fields.verified = total;
      say(`wrote ${total} bytes (${where}), read them back and verified them; a write past the end was refused`);
      say('flush ok');

      // 2. discard, write-zeroes
      const range = new Uint8Array(16);
      const rv = new DataView(range.buffer);
      rv.setBigUint64(0, 0n, true);
      rv.setBigUint64(8, BigInt(firstLen), true);
      try {
        await call.ioctl(BLKDISCARD, range);
        fields.discarded = firstLen;
        say(`discard ok (${firstLen} bytes)`);
      } catch (e) {
        if (!(e instanceof Errno && e.code === 'EOPNOTSUPP')) throw e;
        fields.discarded = 0;
        say('discard not supported by the device');
      }
      const zeroLen = Math.min(firstLen, ZERO_BLOCKS * block);
      await call.pwrite(patterns[0]!.subarray(0, zeroLen), 0); // non-zero first, so zeroes prove something
      rv.setBigUint64(8, BigInt(zeroLen), true);
      await call.ioctl(BLKZEROOUT, range);
      const zeroes = await call.pread(zeroLen, 0);
      if (zeroes.some((b) => b !== 0)) throw new CheckFailed('bytes read back after write-zeroes are not all zero');
      fields.zeroed = zeroLen;
      say(`write-zeroes ok (${zeroLen} bytes read back as zeroes)`);

      // 3. restore
      await Promise.all(ranges.map((r, k) => call.pwrite(saved[k]!, r.at)));
      await call.fsync();
      const restored = await Promise.all(ranges.map((r) => call.pread(r.length, r.at)));
      restored.forEach((bytes, k) => {
        if (firstDifference(bytes, saved[k]!) >= 0) throw new CheckFailed(`the restored bytes at ${ranges[k]!.at} differ from the saved ones`);
      });
      say('original contents restored and verified');
    }
  } catch (e) {
    failed = e instanceof CheckFailed ? e.message : `${detail(e)}`;
  } finally {
    sys.close(fd);
  }
  if (failed !== null) {
    if (json && sys.report) sys.report({ ...fields, error: failed });
    else for (const l of lines) sys.print(`blkcheck: ${l}`);
    sys.print(`ERROR: blkcheck: ${failed}`);
    return 1;
  }
  if (json && sys.report) sys.report(fields);
  else for (const l of lines) sys.print(`blkcheck: ${l}`);
  return 0;
}
