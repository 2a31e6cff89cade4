import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, promises as fsp, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, test } from 'node:test';
import { blkDefinition } from '../../src/devices/blk/definition.js';
import { BlkDevice, BlkStatus, BlkType } from '../../src/devices/blk/device.js';
import { FileStorage, FileStorageError, RING_BATCH_BYTES, type AioEngine } from '../../src/devices/blk/file-storage.js';
import { IoRing } from '../../src/devices/blk/io-ring.js';
import { SegmentSpans } from '../../src/virtio/segment-spans.js';
import { nativeAvailable } from '../../src/vhost-user/native/index.js';
import { DeviceHarness } from '../../src/testing/device-harness.js';
import { repoRoot } from '../helpers/paths.js';

const SECTOR = 512;
const TMPFS_MAGIC = 0x01021994;

/** A directory on a real disk (not tmpfs): the OS temp dir if it is one, else build/ in the repository. */
function diskDir(): string {
  const isTmpfs = (d: string) => statfsSync(d).type === TMPFS_MAGIC;
  let base = os.tmpdir();
  if (isTmpfs(base)) {
    base = path.join(repoRoot, 'build');
    mkdirSync(base, { recursive: true });
  }
  return mkdtempSync(path.join(base, 'virtio-blk-test-'));
}

const dir = diskDir();
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function image(bytes: number | Uint8Array): string {
  const file = path.join(dir, `disk-${n++}.img`);
  writeFileSync(file, typeof bytes === 'number' ? new Uint8Array(bytes) : bytes);
  return file;
}

const filled = (len: number, seed: number) => Uint8Array.from({ length: len }, (_, i) => (i * 29 + seed) & 0xff);
const locks = nativeAvailable() ? {} : { skip: 'the native addon is not built' };

/** Both I/O engines; io_uring is skipped loudly where the kernel refuses it (never under CI). */
const ENGINES = ['threads', 'io_uring'] as const;
const ringProbe = IoRing.open(8);
const noRing = typeof ringProbe === 'string' ? ringProbe : null;
if (typeof ringProbe !== 'string') void ringProbe.close();
function engine(aio: AioEngine): { skip?: string } {
  if (aio !== 'io_uring' || noRing === null) return {};
  if (process.env.CI === 'true') throw new Error(`io_uring is needed under CI: ${noRing}`);
  console.error(`SKIPPED (aio=io_uring): ${noRing}`);
  return { skip: noRing };
}

for (const aio of ENGINES) {
  test(`data lands in the file at the right offset; a vector with odd segment sizes is one stream (aio=${aio})`, engine(aio), async () => {
    const file = image(16 * SECTOR);
    const s = await FileStorage.open(file, { aio });
    try {
      const data = filled(3 * SECTOR, 1);
      // segments of 7, 500, 1029 bytes: not sector-shaped
      const parts = [data.subarray(0, 7), data.subarray(7, 507), data.subarray(507)];
      await s.write(2 * SECTOR, parts);
      const onDisk = readFileSync(file);
      assert.deepEqual(new Uint8Array(onDisk.subarray(2 * SECTOR, 5 * SECTOR)), data);
      assert.ok(onDisk.subarray(0, 2 * SECTOR).every((b) => b === 0) && onDisk.subarray(5 * SECTOR).every((b) => b === 0));
      const back = [new Uint8Array(1000), new Uint8Array(536)];
      await s.read(2 * SECTOR, back);
      assert.deepEqual(new Uint8Array([...back[0]!, ...back[1]!]), data);
      // into a SharedArrayBuffer, as guest RAM is
      const shared = new Uint8Array(new SharedArrayBuffer(2048), 100, SECTOR);
      await s.read(2 * SECTOR, [shared]);
      assert.deepEqual(shared, data.subarray(0, SECTOR));
      // flush is fdatasync: count the calls of FileHandle.prototype.datasync (threads) or the ring's
      assert.equal(s.aio, aio);
      const probe = await fsp.open(file, 'r');
      const proto = (aio === 'threads' ? Object.getPrototypeOf(probe) : IoRing.prototype) as { datasync(): Promise<void> };
      await probe.close();
      const original = proto.datasync;
      let syncs = 0;
      proto.datasync = function (this: unknown, ...args: unknown[]) {
        syncs++;
        return (original as (...a: unknown[]) => Promise<void>).apply(this, args);
      };
      try {
        await s.flush();
      } finally {
        proto.datasync = original;
      }
      assert.equal(syncs, 1, 'flush called fdatasync once');
      assert.equal(s.size, 16 * SECTOR);
      assert.equal(s.readOnly, false);
    } finally {
      await s.close();
    }
  });
}

for (const aio of ENGINES) {
  test(`discard and write-zeroes write zeroes (no hole punching without native fallocate); nothing else changes (aio=${aio})`, engine(aio), async () => {
    const file = image(filled(40 * SECTOR, 3));
    const s = await FileStorage.open(file, { aio });
    try {
      await s.writeZeroes(SECTOR, 3 * SECTOR, true);
      await s.discard(20 * SECTOR, 20 * SECTOR);
      const onDisk = readFileSync(file);
      const want = Buffer.from(filled(40 * SECTOR, 3));
      want.fill(0, SECTOR, 4 * SECTOR);
      want.fill(0, 20 * SECTOR, 40 * SECTOR);
      assert.ok(onDisk.equals(want));
      assert.equal(s.canUnmap, false);
    } finally {
      await s.close();
    }
  });
}

/** `n` spans of `each` bytes over `memory`, every other slot of it (not contiguous), in two bases. */
function scattered(memory: Uint8Array, n: number, each: number): SegmentSpans {
  const half = memory.length / 2;
  const bases = [memory.subarray(0, half), memory.subarray(half)];
  const s = new SegmentSpans(2);
  for (let i = 0; i < n; i++) s.add(bases[i % 2]!, Math.floor(i / 2) * 2 * each, each);
  return s;
}

for (const aio of ENGINES) {
  for (const direct of [false, true]) {
    test(`spans: writeSpans/readSpans move the same bytes as write/read, scattered over two regions (aio=${aio}${direct ? ', --direct' : ''})`, engine(aio), async () => {
      const file = image(2048 * SECTOR);
      const s = await FileStorage.open(file, { aio, direct, directAlignment: direct ? SECTOR : undefined });
      try {
        // 64 segments of 4 KiB (a guest's pages), and 1100 segments of 512 bytes (more than one
        // preadv may take: the store splits it)
        for (const [n, each] of [[64, 4096], [1100, SECTOR]] as const) {
          const guest = filled(4 * n * each, n);
          const from = scattered(guest, n, each);
          await s.writeSpans(8 * SECTOR, from);
          const expected = new Uint8Array(from.views().flatMap((v) => [...v]));
          assert.deepEqual(new Uint8Array(readFileSync(file).subarray(8 * SECTOR, 8 * SECTOR + n * each)), expected);
          const back = new Uint8Array(4 * n * each);
          const into = scattered(back, n, each);
          await s.readSpans(8 * SECTOR, into);
          assert.deepEqual(new Uint8Array(into.views().flatMap((v) => [...v])), expected);
          for (const v of into.views()) v.fill(0);
          assert.ok(back.every((b) => b === 0), 'no byte outside the spans was written');
        }
      } finally {
        await s.close();
      }
    });
  }
}

test('spans: a read-only store refuses writeSpans; a closed one refuses both; a read past the end of a shrunk file fails', engine('io_uring'), async () => {
  const file = image(64 * SECTOR);
  const ro = await FileStorage.open(file, { readOnly: true, aio: 'io_uring' });
  const guest = filled(4 * SECTOR, 9);
  await assert.rejects(ro.writeSpans(0, scattered(guest, 2, SECTOR)), /read-only/);
  await ro.close();
  await assert.rejects(ro.readSpans(0, scattered(guest, 2, SECTOR)), /closed/);
  const s = await FileStorage.open(file, { aio: 'io_uring' });
  try {
    await fsp.truncate(file, 62 * SECTOR); // the file shrinks under the store (its size is still 64 sectors)
    await assert.rejects(s.readSpans(60 * SECTOR, scattered(new Uint8Array(16 * SECTOR), 8, SECTOR)), /end of file/);
  } finally {
    await s.close();
  }
});

test('io ring spans: a span outside its base, a bad base index or a table too short is refused (RangeError), nothing queued; the ring goes on', engine('io_uring'), async () => {
  const file = image(16 * SECTOR);
  const fd = (await fsp.open(file, 'r+')).fd;
  const ring = IoRing.open(8);
  assert.ok(typeof ring !== 'string');
  try {
    const memory = new Uint8Array(4 * SECTOR);
    const bad = (mutate: (s: SegmentSpans) => void) => {
      const base = memory.subarray(0, 2 * SECTOR);
      const s = new SegmentSpans(2);
      s.add(base, 0, SECTOR);
      s.add(base, SECTOR, SECTOR);
      mutate(s);
      return s;
    };
    const cases: [string, (s: SegmentSpans) => void][] = [
      ['one byte past its base', (s) => (s.table[5] = SECTOR + 1)],
      ['an offset past its base', (s) => (s.table[4] = 2 * SECTOR + 1)],
      ['a negative offset', (s) => (s.table[4] = -1)],
      ['a fractional length', (s) => (s.table[5] = 1.5)],
      ['a base index past the bases', (s) => (s.table[3] = 1)],
      ['a NaN base index', (s) => (s.table[3] = NaN)],
      ['a count past the table', (s) => (s.count = 3)],
      ['a huge length', (s) => (s.table[5] = 2 ** 53)],
    ];
    for (const [what, mutate] of cases) {
      await assert.rejects(ring.read(fd, 0, bad(mutate)), RangeError, what);
      await assert.rejects(ring.write(fd, 0, bad(mutate)), RangeError, what);
    }
    assert.equal(ring.pending, 0);
    const good = bad(() => {});
    assert.equal(await ring.write(fd, 0, good), 2 * SECTOR);
    assert.equal(await ring.read(fd, 0, good), 2 * SECTOR);
  } finally {
    await ring.close();
  }
});

test('io ring: four times its entries in flight at once, reads completed inline and writes by workers, on disk and on tmpfs: each settles once with its bytes; then nothing is pending', { ...engine('io_uring'), timeout: 20_000 }, async () => {
  const where = [dir, ...(existsSync('/dev/shm') ? ['/dev/shm'] : [])];
  for (const d of where) {
    const file = path.join(d, `ring-many-${process.pid}-${n++}.img`);
    const blocks = 256;
    const content = filled(blocks * SECTOR, 7);
    writeFileSync(file, content);
    const handle = await fsp.open(file, 'r+');
    const ring = IoRing.open(16);
    assert.ok(typeof ring !== 'string');
    try {
      const reads = Array.from({ length: 32 }, () => new Uint8Array(SECTOR));
      const written = Array.from({ length: 32 }, (_, i) => filled(SECTOR, 100 + i));
      // 64 requests on a 16-entry ring: 48 wait their turn; reads of blocks 0-31, writes of 128-159
      let settled = 0;
      const count = <T>(p: Promise<T>) => p.then((v) => (settled++, v));
      const results = await Promise.all([
        ...reads.map((b, i) => count(ring.read(handle.fd, i * SECTOR, [b]))),
        ...written.map((b, i) => count(ring.write(handle.fd, (128 + i) * SECTOR, [b]))),
      ]);
      assert.equal(settled, 64);
      assert.ok(results.every((r) => r === SECTOR), `every transfer whole (${d})`);
      reads.forEach((b, i) => assert.deepEqual(b, content.subarray(i * SECTOR, (i + 1) * SECTOR)));
      const after = readFileSync(file);
      written.forEach((b, i) => assert.deepEqual(new Uint8Array(after.subarray((128 + i) * SECTOR, (129 + i) * SECTOR)), b));
      assert.equal(ring.pending, 0);
      // one more after the burst: the ring is still served (no completion was left without its wake-up)
      const again = new Uint8Array(SECTOR);
      assert.equal(await ring.read(handle.fd, 200 * SECTOR, [again]), SECTOR);
      assert.deepEqual(again, content.subarray(200 * SECTOR, 201 * SECTOR));
    } finally {
      await ring.close();
      await handle.close();
      rmSync(file, { force: true });
    }
  }
});

test('capacity: the size rounded down to 512, the remainder reported and never touched', async () => {
  const file = image(filled(4 * SECTOR + 100, 5));
  const warnings: string[] = [];
  const s = await FileStorage.open(file, { warn: (l) => warnings.push(l) });
  try {
    assert.equal(s.size, 4 * SECTOR);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /size, 2148 bytes, is not a multiple of 512; the last 100 bytes are not part of the disk/);
    await s.writeZeroes(0, 4 * SECTOR, false);
    const onDisk = readFileSync(file);
    assert.equal(onDisk.length, 4 * SECTOR + 100, 'the file did not grow');
    assert.deepEqual(new Uint8Array(onDisk.subarray(4 * SECTOR)), filled(4 * SECTOR + 100, 5).subarray(4 * SECTOR));
  } finally {
    await s.close();
  }
  const exact: string[] = [];
  await (await FileStorage.open(image(8 * SECTOR), { warn: (l) => exact.push(l) })).close();
  assert.deepEqual(exact, [], 'no warning for a multiple of 512');
});

test('lock: a second writer, or a reader while a writer is there, is refused with a clear error; readers share', locks, async () => {
  const file = image(8 * SECTOR);
  const first = await FileStorage.open(file);
  const locked = (e: unknown) => e instanceof FileStorageError && e.code === 'LOCKED' && /is locked/.test(e.message) && e.message.includes(file);
  try {
    await assert.rejects(FileStorage.open(file), locked);
    await assert.rejects(FileStorage.open(file, { readOnly: true }), locked);
  } finally {
    await first.close();
  }
  // released on close
  const again = await FileStorage.open(file);
  await again.close();
  // readers share; a writer is refused while they are there
  const r1 = await FileStorage.open(file, { readOnly: true });
  const r2 = await FileStorage.open(file, { readOnly: true });
  try {
    await assert.rejects(FileStorage.open(file), locked);
  } finally {
    await r1.close();
    await r2.close();
  }
  await (await FileStorage.open(file)).close();
});

test('lock across processes: an image another process serves cannot be opened for writing', locks, async () => {
  const file = image(8 * SECTOR);
  const module = pathToFileURL(path.join(repoRoot, 'dist', 'src', 'devices', 'blk', 'file-storage.js')).href;
  // the child opens the image, says so, and holds it until its stdin closes
  const child = spawn(
    process.execPath,
    ['--input-type=module', '-e', `const { FileStorage } = await import(${JSON.stringify(module)}); const s = await FileStorage.open(${JSON.stringify(file)}); process.stdout.write('open\\n'); process.stdin.resume(); process.stdin.on('end', async () => { await s.close(); process.exit(0); });`],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`the child exited (${code}) before opening the image`)));
    });
    await assert.rejects(FileStorage.open(file), (e: unknown) => e instanceof FileStorageError && e.code === 'LOCKED' && /open for writing/.test(e.message));
    await assert.rejects(FileStorage.open(file, { readOnly: true }), (e: unknown) => e instanceof FileStorageError && e.code === 'LOCKED');
  } finally {
    child.stdin!.end();
    await new Promise((resolve) => child.once('exit', resolve));
  }
  await (await FileStorage.open(file)).close(); // free again once the child is gone
});

test('the definition: --image required, a missing file and a directory are clear errors, a locked image is refused', locks, async () => {
  const env = { log: () => {}, warn: () => {} };
  await assert.rejects(Promise.resolve().then(() => blkDefinition.open({}, env)), /--image FILE is required/);
  await assert.rejects(Promise.resolve().then(() => blkDefinition.open({ image: path.join(dir, 'nope.img') }, env)), /nope\.img: no such file/);
  await assert.rejects(Promise.resolve().then(() => blkDefinition.open({ image: dir }, env)), /is a directory, not a regular file or a block device/);
  await assert.rejects(Promise.resolve().then(() => blkDefinition.open({ image: '/dev/null' }, env)), /is a character device/);
  const file = image(8 * SECTOR);
  const factory = await blkDefinition.open({ image: file, 'num-queues': 2, 'queue-size': 64, serial: 'S1' }, env);
  try {
    const device = factory.createDevice();
    assert.equal(device.deviceId, 2);
    assert.deepEqual(device.queueMaxSizes, [64, 64]);
    await assert.rejects(Promise.resolve().then(() => blkDefinition.open({ image: file }, env)), /is locked/);
  } finally {
    await factory.close?.();
  }
  const ro = await blkDefinition.open({ image: file, 'read-only': true }, env);
  assert.ok((ro.createDevice() as BlkDevice).readOnly);
  await ro.close?.();
});

test('a file the process may not write: a clear error suggesting --read-only', async () => {
  const file = image(8 * SECTOR);
  chmodSync(file, 0o444);
  if (process.getuid?.() !== 0) {
    await assert.rejects(FileStorage.open(file), (e: unknown) => e instanceof FileStorageError && /cannot open it for writing \(permission denied\); --read-only/.test(e.message));
    await (await FileStorage.open(file, { readOnly: true })).close();
    return;
  }
  // Root may write any file: the same check as an unprivileged user (nobody), in a child.
  chmodSync(path.dirname(file), 0o755);
  const storage = pathToFileURL(path.join(repoRoot, 'dist', 'src', 'devices', 'blk', 'file-storage.js')).href;
  const script =
    `const { FileStorage } = await import(${JSON.stringify(storage)});\n` +
    `try { await FileStorage.open(${JSON.stringify(file)}); console.log('opened'); } catch (e) { console.log(e.message); }\n` +
    `await (await FileStorage.open(${JSON.stringify(file)}, { readOnly: true })).close(); console.log('read-only ok');`;
  const child = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise((r) => child.on('close', r));
  assert.equal(code, 0, err);
  assert.match(out, /cannot open it for writing \(permission denied\); --read-only/);
  assert.match(out, /read-only ok/);
});

test('read-only store: writes are refused by the store itself', async () => {
  const s = await FileStorage.open(image(8 * SECTOR), { readOnly: true });
  try {
    assert.equal(s.readOnly, true);
    await assert.rejects(s.write(0, [new Uint8Array(SECTOR)]), /read-only/);
    await assert.rejects(s.writeZeroes(0, SECTOR, false), /read-only/);
  } finally {
    await s.close();
  }
});

for (const aio of ENGINES) {
  test(`--direct on a real disk: O_DIRECT through aligned bounce buffers, guest buffers at any address (aio=${aio})`, engine(aio), async () => {
    const file = image(filled(64 * SECTOR, 7));
    const s = await FileStorage.open(file, { direct: true, aio });
    try {
      assert.ok(s.directAlignment >= SECTOR, `alignment ${s.directAlignment}`);
      assert.match(s.description, /O_DIRECT/);
      // unaligned views into a SharedArrayBuffer, total 2 sectors, a write larger than a bounce chunk too
      const ram = new Uint8Array(new SharedArrayBuffer(1 << 20));
      const data = filled(2 * SECTOR, 11);
      ram.set(data.subarray(0, 333), 3);
      ram.set(data.subarray(333), 5001);
      await s.write(5 * SECTOR, [ram.subarray(3, 336), ram.subarray(5001, 5001 + 2 * SECTOR - 333)]);
      const big = filled(600 * 1024, 13).subarray(0, 40 * SECTOR);
      await s.write(20 * SECTOR, [big]);
      await s.flush();
      const want = Buffer.from(filled(64 * SECTOR, 7));
      want.set(data, 5 * SECTOR);
      want.set(big, 20 * SECTOR);
      assert.ok(readFileSync(file).equals(want), 'file contents');
      const back = new Uint8Array(new SharedArrayBuffer(4 * SECTOR), 1, 2 * SECTOR);
      await s.read(5 * SECTOR, [back]);
      assert.deepEqual(new Uint8Array(back), data);
      await s.writeZeroes(SECTOR, SECTOR, false);
      assert.ok(readFileSync(file).subarray(SECTOR, 2 * SECTOR).every((b) => b === 0));
    } finally {
      await s.close();
    }
  });
}

for (const aio of ENGINES) {
  test(`--direct with a 4096-byte alignment: 512-byte requests are read-modify-writes that keep the neighbours (aio=${aio})`, engine(aio), async () => {
    const file = image(filled(32 * SECTOR, 17));
    const s = await FileStorage.open(file, { direct: true, directAlignment: 4096, aio });
    try {
      assert.equal(s.blockSize, 4096);
      const a = filled(SECTOR, 100);
      const b = filled(3 * SECTOR, 200);
      // concurrent writes inside the same 4 KiB block: serialized, neither lost
      await Promise.all([s.write(SECTOR, [a]), s.write(4 * SECTOR, [b]), s.writeZeroes(9 * SECTOR, SECTOR, false)]);
      const want = Buffer.from(filled(32 * SECTOR, 17));
      want.set(a, SECTOR);
      want.set(b, 4 * SECTOR);
      want.fill(0, 9 * SECTOR, 10 * SECTOR);
      assert.ok(readFileSync(file).equals(want));
      const back = new Uint8Array(SECTOR);
      await s.read(5 * SECTOR, [back]);
      assert.deepEqual(back, b.subarray(SECTOR, 2 * SECTOR));
    } finally {
      await s.close();
    }
  });
}

test('--direct on tmpfs: works, or is refused with a clear O_DIRECT error', { skip: existsSync('/dev/shm') ? false : 'no /dev/shm' }, async (t) => {
  if (statfsSync('/dev/shm').type !== TMPFS_MAGIC) return t.skip('/dev/shm is not tmpfs');
  const shm = mkdtempSync('/dev/shm/virtio-blk-test-');
  try {
    const file = path.join(shm, 'disk.img');
    writeFileSync(file, filled(8 * SECTOR, 1));
    let s: FileStorage | undefined;
    try {
      s = await FileStorage.open(file, { direct: true });
    } catch (e) {
      assert.ok(e instanceof FileStorageError && e.code === 'NO_DIRECT' && /does not support O_DIRECT|O_DIRECT reads .* fail/.test(e.message), String(e));
      t.diagnostic(`tmpfs refused O_DIRECT: ${(e as Error).message}`);
      return;
    }
    try {
      t.diagnostic('this kernel\'s tmpfs supports O_DIRECT');
      await s.write(SECTOR, [filled(SECTOR, 9)]);
      assert.deepEqual(new Uint8Array(readFileSync(file).subarray(SECTOR, 2 * SECTOR)), filled(SECTOR, 9));
    } finally {
      await s.close();
    }
  } finally {
    rmSync(shm, { recursive: true, force: true });
  }
});

for (const aio of ENGINES) {
  test(`the model over a file: requests through the runtime reach the file (aio=${aio})`, engine(aio), async () => {
    const file = image(filled(32 * SECTOR, 21));
    const storage = await FileStorage.open(file, { aio });
    try {
      const h = new DeviceHarness(new BlkDevice({ storage, numQueues: 2 }));
      const hdr = (type: number, sector: number) => {
        const b = new Uint8Array(16);
        new DataView(b.buffer).setUint32(0, type, true);
        new DataView(b.buffer).setBigUint64(8, BigInt(sector), true);
        return b;
      };
      const data = filled(4 * SECTOR, 99);
      const w = await h.request(1, [hdr(BlkType.OUT, 8), data.subarray(0, 1000), data.subarray(1000)], [1]);
      assert.equal(w.written[0], BlkStatus.OK);
      const f = await h.request(0, [hdr(BlkType.FLUSH, 0)], [1]);
      assert.equal(f.written[0], BlkStatus.OK);
      assert.deepEqual(new Uint8Array(readFileSync(file).subarray(8 * SECTOR, 12 * SECTOR)), data);
      const r = await h.request(0, [hdr(BlkType.IN, 8)], [700, 4 * SECTOR - 700 + 1]);
      assert.deepEqual(r.written.subarray(0, 4 * SECTOR), data);
      assert.equal(r.written[4 * SECTOR], BlkStatus.OK);
      const past = await h.request(0, [hdr(BlkType.IN, 31)], [2 * SECTOR + 1]);
      assert.equal(past.written[2 * SECTOR], BlkStatus.IOERR);
    } finally {
      await storage.close();
    }
  });
}

/** A 4 MiB image in `where` (a directory). */
function imageIn(where: string): string {
  const file = path.join(where, `auto-${n++}.img`);
  writeFileSync(file, new Uint8Array(4 * 1024 * 1024));
  return file;
}

/** tmpfs, when this machine has one whose files refuse RWF_NOWAIT (Linux 6.18's does), else why not. */
function tmpfsDir(): string | { skip: string } {
  if (!existsSync('/dev/shm') || statfsSync('/dev/shm').type !== TMPFS_MAGIC) return { skip: 'no tmpfs at /dev/shm' };
  return mkdtempSync(path.join('/dev/shm', 'virtio-blk-test-'));
}

/**
 * Which engine each transfer of `s` takes, for: a 64 KiB write, a 1 MiB write alone in its
 * turn, two writes of 512.5 KiB in one turn, and the same three reads.
 */
async function routes(s: FileStorage): Promise<string[]> {
  const probe = await fsp.open(s.path, 'r');
  const handleProto = Object.getPrototypeOf(probe) as { readv(...a: unknown[]): Promise<unknown>; writev(...a: unknown[]): Promise<unknown> };
  await probe.close();
  const ringProto = IoRing.prototype as unknown as { read(...a: unknown[]): Promise<number>; write(...a: unknown[]): Promise<number> };
  const calls: string[] = [];
  const spy = <T extends object>(o: T, name: keyof T & string, label: string) => {
    const original = o[name] as (...a: unknown[]) => unknown;
    (o as Record<string, unknown>)[name] = function (this: unknown, ...args: unknown[]) {
      calls.push(label);
      return original.apply(this, args);
    };
    return () => ((o as Record<string, unknown>)[name] = original);
  };
  const restore = [spy(handleProto, 'readv', 'pool read'), spy(handleProto, 'writev', 'pool write'), spy(ringProto, 'read', 'ring read'), spy(ringProto, 'write', 'ring write')];
  try {
    const small = filled(64 * 1024, 3);
    const large = filled(RING_BATCH_BYTES, 4);
    const half = filled(RING_BATCH_BYTES / 2 + SECTOR, 5);
    await s.write(0, [small]);
    await s.write(RING_BATCH_BYTES, [large.subarray(0, 1000), large.subarray(1000)]);
    await Promise.all([s.write(2 * RING_BATCH_BYTES, [half]), s.write(3 * RING_BATCH_BYTES, [half])]);
    const back = [small, large, half, half].map((b) => new Uint8Array(b.length));
    await s.read(0, [back[0]!]);
    await s.read(RING_BATCH_BYTES, [back[1]!]);
    await Promise.all([s.read(2 * RING_BATCH_BYTES, [back[2]!]), s.read(3 * RING_BATCH_BYTES, [back[3]!])]);
    assert.deepEqual(back, [small, large, half, half]);
    return calls;
  } finally {
    restore.forEach((r) => r());
  }
}

test('aio=auto (the default) on a disk file system, whose files take RWF_NOWAIT: io_uring for every transfer, any size', engine('io_uring'), async () => {
  const s = await FileStorage.open(imageIn(dir));
  try {
    assert.equal(s.aio, 'auto');
    const ring = IoRing.open(8);
    assert.ok(typeof ring !== 'string');
    assert.equal(ring.readsInline(s.fd), true, 'a file on a disk file system takes RWF_NOWAIT reads');
    await ring.close();
    assert.deepEqual(await routes(s), ['ring write', 'ring write', 'ring write', 'ring write', 'ring read', 'ring read', 'ring read', 'ring read']);
  } finally {
    await s.close();
  }
});

const shm = tmpfsDir();
test(
  'aio=auto on tmpfs, whose files refuse RWF_NOWAIT: io_uring up to 64 KiB, and for larger transfers while one turn\'s batch stays within 1 MiB; the pool beyond',
  typeof shm === 'string' ? engine('io_uring') : shm,
  async (t) => {
    const where = shm as string;
    t.after(() => rmSync(where, { recursive: true, force: true }));
    const s = await FileStorage.open(imageIn(where));
    try {
      const ring = IoRing.open(8);
      assert.ok(typeof ring !== 'string');
      const inline = ring.readsInline(s.fd);
      await ring.close();
      if (inline) {
        console.error('SKIPPED (aio=auto on tmpfs): this kernel\'s tmpfs takes RWF_NOWAIT, so auto uses io_uring for everything there');
        return t.skip('tmpfs takes RWF_NOWAIT here');
      }
      assert.equal(s.aio, 'auto');
      // 64 KiB: the ring; 1 MiB alone in its turn: the ring; two in one turn: the second would take
      // the batch past RING_BATCH_BYTES, so the pool copies it.
      assert.deepEqual(await routes(s), ['ring write', 'ring write', 'ring write', 'pool write', 'ring read', 'ring read', 'ring read', 'pool read']);
    } finally {
      await s.close();
    }
  },
);

