import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { rngDefinition } from '../../src/devices/rng/definition.js';
import { RngDevice, type EntropySource, type RateLimit } from '../../src/devices/rng/device.js';
import { cryptoSource, openFileSource, type FileSource } from '../../src/devices/rng/sources.js';
import { Errno } from '../../src/drivers/kernel.js';
import { MAX_READ, RngDriver, createDriver } from '../../src/drivers/rng/driver.js';
import { formatHex, hwrngReadProgram } from '../../src/drivers/rng/program.js';
import { VirtioDriverDevice } from '../../src/drivers/virtio-bus.js';
import { Status } from '../../src/virtio/constants.js';
import { DirectTransport, guestKernel } from '../helpers/direct-transport.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'rng-driver-'));
const opened: FileSource[] = [];
after(() => {
  for (const f of opened) f.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A file of `n` pseudo-random bytes (fixed seed), so every line differs. */
function sourceFile(name: string, n: number): { file: string; bytes: Uint8Array } {
  const bytes = new Uint8Array(n);
  let x = 0x12345678;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  return { file, bytes };
}

function fileReader(file: string): EntropySource {
  const f = openFileSource(file);
  opened.push(f);
  return f.reader();
}

async function bind(source: EntropySource, opts: { queueSize?: number; rateLimit?: RateLimit } = {}) {
  const g = guestKernel();
  const device = new RngDevice({ source, queueSize: opts.queueSize ?? 8, ...(opts.rateLimit ? { rateLimit: opts.rateLimit } : {}) });
  const transport = new DirectTransport(device, g.memory);
  const driver = createDriver([4], {});
  const dev = new VirtioDriverDevice(transport, g.kernel);
  await dev.bind(driver);
  /** Guest memory free once the ring is set up: every read buffer is freed back to this. */
  const freeAfterBind = g.kernel.dmaFreeBytes;
  return { ...g, device, transport, driver, dev, freeAfterBind };
}

/** Lines the program printed (kernel lines carry a "[    0.000123] " timestamp). */
const programLines = (lines: string[]) => lines.filter((l) => !/^\[\s*\d+\.\d+\] /.test(l));

test('hwrng-read N prints exactly the source file\'s first N bytes, as the Linux guest command does', async () => {
  const { file, bytes } = sourceFile('src300.bin', 300);
  const s = await bind(fileReader(file));
  assert.equal(s.driver.miscName(s.dev), 'hwrng');
  const n = 100;
  const code = await hwrngReadProgram(s.kernel, ['hwrng-read', String(n)]);
  assert.equal(code, 0);
  const printed = programLines(s.lines).join('\n');
  assert.equal(printed, formatHex(bytes.subarray(0, n)));
  assert.equal(programLines(s.lines).length, Math.ceil(n / 16), '16 bytes per line');
  assert.match(printed.split('\n')[0]!, /^([0-9a-f]{2} ){15}[0-9a-f]{2}$/);
  // The real guest's command on this host (busybox-compatible tools), /dev/hwrng → the file.
  const script = rngDefinition.linux!.guestCommand({ count: n }, [])[2]!
    .replaceAll('/dev/hwrng', file)
    .replaceAll('/tmp/hwrng.bin', path.join(dir, 'out.bin'));
  const fromOd = execFileSync('sh', ['-c', script], { encoding: 'utf8' }).replace(/\n$/, '');
  assert.equal(printed, fromOd, 'same text as head | od | sed');
  assert.equal(s.kernel.dmaFreeBytes, s.freeAfterBind, 'every read buffer freed');
});

test(`a read of more than ${MAX_READ} bytes: the program reads again until N, bytes in order`, async () => {
  const { file, bytes } = sourceFile('src10k.bin', 10_000);
  const s = await bind(fileReader(file));
  const fd = s.kernel.open('/dev/hwrng');
  const first = await s.kernel.read(fd, 9000);
  assert.equal(first.length, MAX_READ, 'one page per read');
  assert.deepEqual(first, bytes.subarray(0, MAX_READ));
  s.kernel.close(fd);
  s.lines.length = 0;
  assert.equal(await hwrngReadProgram(s.kernel, ['hwrng-read', '5000']), 0);
  assert.equal(programLines(s.lines).join('\n'), formatHex(bytes.subarray(MAX_READ, MAX_READ + 5000)));
});

test('concurrent readers each get their own buffer: disjoint slices of the source', async () => {
  const { file, bytes } = sourceFile('src400.bin', 400);
  const s = await bind(fileReader(file), { queueSize: 4 });
  const fds = Array.from({ length: 8 }, () => s.kernel.open('/dev/hwrng'));
  const got = await Promise.all(fds.map((fd) => s.kernel.read(fd, 50)));
  const starts = got.map((chunk) => {
    assert.equal(chunk.length, 50);
    const at = [0, 50, 100, 150, 200, 250, 300, 350].find((k) => Buffer.compare(Buffer.from(chunk), Buffer.from(bytes.subarray(k, k + 50))) === 0);
    assert.notEqual(at, undefined, 'each chunk is one slice of the file');
    return at;
  });
  assert.equal(new Set(starts).size, 8, 'no two readers got the same bytes');
});

test('read(0) returns no bytes; bad counts are EINVAL', async () => {
  const s = await bind(cryptoSource);
  const fd = s.kernel.open('/dev/hwrng');
  assert.equal((await s.kernel.read(fd, 0)).length, 0);
  await assert.rejects(s.kernel.read(fd, -1), (e: unknown) => e instanceof Errno && e.code === 'EINVAL');
  assert.equal((await s.kernel.read(fd, 33)).length, 33);
});

test('a rate-limited device: the program still gets every byte, later', async () => {
  const { file, bytes } = sourceFile('src64.bin', 64);
  const s = await bind(fileReader(file), { rateLimit: { maxBytes: 16, periodMs: 15 } });
  const started = performance.now();
  assert.equal(await hwrngReadProgram(s.kernel, ['hwrng-read', '48']), 0);
  assert.ok(performance.now() - started >= 2 * 15 - 3, 'three periods for 48 bytes at 16 per period');
  assert.equal(programLines(s.lines).join('\n'), formatHex(bytes.subarray(0, 48)));
});

test('a used length larger than the buffer marks the device broken: EIO now and later', async () => {
  const s = await bind(cryptoSource);
  const fd = s.kernel.open('/dev/hwrng');
  s.transport.paused = true;
  const pending = s.kernel.read(fd, 16);
  await new Promise((r) => setImmediate(r));
  forgeUsed(s, 17);
  await assert.rejects(pending, (e: unknown) => e instanceof Errno && e.code === 'EIO');
  await assert.rejects(s.kernel.read(fd, 16), (e: unknown) => e instanceof Errno && e.code === 'EIO');
  assert.ok(s.lines.some((l) => /virtio_rng: .*USED_LEN_INVALID.*device is broken/.test(l)), s.lines.join('\n'));
  assert.equal(s.transport.getStatus(), 0, 'the driver reset the device');
  assert.equal(s.kernel.dmaFreeBytes, s.freeAfterBind, 'the buffer was taken back and freed');
});

test('a used length of 0 (§5.4.6.2: one or more bytes) marks the device broken', async () => {
  const s = await bind(cryptoSource);
  const fd = s.kernel.open('/dev/hwrng');
  s.transport.paused = true;
  const pending = s.kernel.read(fd, 16);
  await new Promise((r) => setImmediate(r));
  forgeUsed(s, 0);
  await assert.rejects(pending, (e: unknown) => e instanceof Errno && e.code === 'EIO');
  assert.ok(s.lines.some((l) => /§5\.4\.6\.2.*device is broken/.test(l)));
});

test('the source running out: the program prints what it got, then ERROR, exit 255 (no hang)', async () => {
  const { file, bytes } = sourceFile('src40.bin', 40);
  const s = await bind(fileReader(file));
  const code = await hwrngReadProgram(s.kernel, ['hwrng-read', '64']);
  assert.equal(code, 255);
  const out = programLines(s.lines);
  assert.deepEqual(out.slice(0, -1), formatHex(bytes).split('\n'), 'the 40 real bytes, nothing more');
  assert.match(out.at(-1)!, /^ERROR: reading \/dev\/hwrng failed \(EIO: device reports DEVICE_NEEDS_RESET\)$/);
  assert.ok(s.transport.warnings.some((w) => /exhausted after 40 bytes/.test(w)));
  assert.equal(s.transport.getStatus(), 0, 'the driver reset the broken device');
});

test('no /dev/hwrng, or a bad argument: one ERROR line, exit 255', async () => {
  const g = guestKernel();
  assert.equal(await hwrngReadProgram(g.kernel, ['hwrng-read', '8']), 255);
  assert.match(programLines(g.lines).join('\n'), /^ERROR: cannot open \/dev\/hwrng \(ENOENT/);
  for (const bad of [['x'], ['0'], ['1', '2'], ['-5']]) {
    const h = guestKernel();
    assert.equal(await hwrngReadProgram(h.kernel, ['hwrng-read', ...bad]), 255, bad.join(' '));
    assert.match(programLines(h.lines).join('\n'), /^ERROR: usage: hwrng-read/);
  }
});

test('driver: binds ID 4 by default or the IDs given; a second device gets /dev/hwrng1', async () => {
  assert.deepEqual(new RngDriver().deviceIds, [4]);
  assert.deepEqual(createDriver([45, 4], {}).deviceIds, [45, 4]);
  const s = await bind(cryptoSource);
  const dev2 = new VirtioDriverDevice(new DirectTransport(new RngDevice({ source: cryptoSource }), s.memory), s.kernel);
  await dev2.bind(s.driver);
  assert.equal(s.driver.miscName(dev2), 'hwrng1');
  assert.equal((await s.kernel.read(s.kernel.open('/dev/hwrng1'), 8)).length, 8);
});

/** Writes used element 0 for the head the driver made available first, with `len`, and interrupts. */
function forgeUsed(s: Awaited<ReturnType<typeof bind>>, len: number): void {
  const q = s.transport.runtime.queues[0]!;
  s.memory.writeU32(q.used + 4, s.memory.readU16(q.avail + 4));
  s.memory.writeU32(q.used + 8, len);
  s.memory.writeU16(q.used + 2, 1);
  s.transport.interruptNow();
}
