import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { rngDefinition } from '../../src/devices/rng/definition.js';
import { MAX_REQUEST_BYTES, RngDevice, VIRTIO_ID_RNG, type EntropySource, type RngClock } from '../../src/devices/rng/device.js';
import { cryptoSource, openFileSource } from '../../src/devices/rng/sources.js';
import { findDevice } from '../../src/devices/registry.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { RAM, bringUp, harness, type Harness } from '../helpers/runtime.js';

const BUF = RAM + 0x10000;
const V1 = bit(FeatureBit.VERSION_1);
const tick = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const dir = mkdtempSync(path.join(os.tmpdir(), 'rng-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A file of `n` distinct-looking bytes (b[i] = (i * 7 + 3) & 0xff). */
function patternFile(name: string, n: number): { file: string; bytes: Uint8Array } {
  const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  return { file, bytes };
}

/** Bytes 0, 1, 2, ... (mod 256) in order, counting reads; `short` caps each read. */
function countingSource(short = Infinity): EntropySource & { next: number; reads: number } {
  return {
    description: 'counter',
    next: 0,
    reads: 0,
    read(into) {
      this.reads++;
      const n = Math.min(into.length, short);
      for (let i = 0; i < n; i++) into[i] = this.next++ & 0xff;
      return n;
    },
  };
}

/** A clock the test moves by hand; timers fire in advance(). */
class FakeClock implements RngClock {
  t = 0;
  private id = 0;
  readonly timers = new Map<number, { at: number; cb: () => void }>();
  cleared = 0;
  now() {
    return this.t;
  }
  setTimer(cb: () => void, ms: number) {
    this.timers.set(++this.id, { at: this.t + ms, cb });
    return this.id;
  }
  clearTimer(h: unknown) {
    if (this.timers.delete(h as number)) this.cleared++;
  }
  advance(ms: number) {
    this.t += ms;
    for (const [id, timer] of [...this.timers]) {
      if (timer.at <= this.t) {
        this.timers.delete(id);
        timer.cb();
      }
    }
  }
}

function setup(device: RngDevice, size = 8): { h: Harness; driver: ReturnType<typeof bringUp> } {
  const h = harness(device);
  const driver = bringUp(h, V1, size);
  return { h, driver };
}

test('rng is registered: ID 4, one queue, no features, no config space', () => {
  const def = findDevice('rng');
  assert.equal(def, rngDefinition);
  const d = new RngDevice({ source: cryptoSource });
  assert.equal(d.deviceId, VIRTIO_ID_RNG);
  assert.equal(d.deviceId, 4);
  assert.equal(d.features, 0n);
  assert.equal(d.configSize, 0);
  assert.deepEqual(d.queueMaxSizes, [256]);
});

test('fills the writable bytes split across descriptors with the source bytes, in order', () => {
  const src = countingSource();
  const { h, driver } = setup(new RngDevice({ source: src }));
  h.bytes.fill(0xee, BUF - RAM, BUF - RAM + 0x400);
  const segs = [
    { addr: BUF, len: 7 },
    { addr: BUF + 0x100, len: 5 },
    { addr: BUF + 0x200, len: 20 },
  ];
  assert.ok(driver.add([], segs, 1));
  h.runtime.notify(0);
  assert.deepEqual(driver.getUsed(), { token: 1, len: 32 });
  let k = 0;
  for (const s of segs) {
    assert.deepEqual([...h.memory.slice(s.addr, s.len)], Array.from({ length: s.len }, () => k++));
    assert.equal(h.memory.slice(s.addr + s.len, 1)[0], 0xee, 'nothing written past a segment');
  }
  // The next chain continues where the source stands.
  assert.ok(driver.add([], [{ addr: BUF, len: 4 }], 2));
  h.runtime.notify(0);
  assert.deepEqual(driver.getUsed(), { token: 2, len: 4 });
  assert.deepEqual([...h.memory.slice(BUF, 4)], [32, 33, 34, 35]);
});

test('a source that gives fewer bytes than asked: the used length says how many (§5.4.6.2 MAY use less)', () => {
  const { h, driver } = setup(new RngDevice({ source: countingSource(3) }));
  h.bytes.fill(0xee, BUF - RAM, BUF - RAM + 64);
  driver.add([], [{ addr: BUF, len: 16 }], 1);
  h.runtime.notify(0);
  assert.deepEqual(driver.getUsed(), { token: 1, len: 3 });
  assert.deepEqual([...h.memory.slice(BUF, 4)], [0, 1, 2, 0xee]);
});

test(`a buffer larger than ${MAX_REQUEST_BYTES} bytes gets ${MAX_REQUEST_BYTES}`, () => {
  const { h, driver } = setup(new RngDevice({ source: countingSource() }));
  driver.add([], [{ addr: BUF, len: MAX_REQUEST_BYTES + 1000 }], 1);
  h.runtime.notify(0);
  assert.deepEqual(driver.getUsed(), { token: 1, len: MAX_REQUEST_BYTES });
});

for (const [name, readable, writable] of [
  ['no writable bytes (a driver-readable buffer)', 16, 0],
  ['a device-readable part before the writable one', 4, 16],
] as const) {
  test(`§5.4.6.1: a chain with ${name} is a device error (NEEDS_RESET), nothing written`, () => {
    const src = countingSource();
    const { h, driver } = setup(new RngDevice({ source: src }));
    h.bytes.fill(0x5a, BUF - RAM, BUF - RAM + 0x200);
    driver.add([{ addr: BUF, len: readable }], writable ? [{ addr: BUF + 0x100, len: writable }] : [], 1);
    h.runtime.notify(0);
    assert.ok(h.runtime.status & Status.NEEDS_RESET);
    assert.equal(driver.getUsed(), null, 'no used element for a refused chain');
    assert.equal(src.reads, 0, 'no source bytes spent');
    assert.ok(h.bytes.subarray(BUF - RAM, BUF - RAM + 0x200).every((b) => b === 0x5a), 'nothing written');
    assert.ok(h.warnings.some((w) => /DEVICE_REQUEST_INVALID/.test(w) && /§5\.4\.6\.1/.test(w)), h.warnings.join('\n'));
  });
}

test('rate limit: at most max-bytes per period, the rest answered in order when the next period starts', () => {
  const clock = new FakeClock();
  const src = countingSource();
  const device = new RngDevice({ source: src, rateLimit: { maxBytes: 10, periodMs: 100 }, clock });
  const { h, driver } = setup(device);
  for (let i = 0; i < 4; i++) assert.ok(driver.add([], [{ addr: BUF + 0x100 * i, len: 8 }], i));
  h.runtime.notify(0);
  // 8 + 2 bytes in the first period, then the budget is spent: requests 2 and 3 wait.
  assert.deepEqual(driver.getUsed(), { token: 0, len: 8 });
  assert.deepEqual(driver.getUsed(), { token: 1, len: 2 });
  assert.equal(driver.getUsed(), null);
  assert.equal(src.next, 10);
  assert.equal(device.pending, 2);
  assert.equal(clock.timers.size, 1, 'one timer, no polling');
  clock.advance(99);
  assert.equal(src.next, 10, 'nothing before the period ends');
  clock.advance(1);
  return tick().then(() => {
    assert.deepEqual(driver.getUsed(), { token: 2, len: 8 });
    assert.deepEqual(driver.getUsed(), { token: 3, len: 2 });
    assert.equal(driver.getUsed(), null);
    assert.deepEqual([...h.memory.slice(BUF + 0x300, 2)], [18, 19], 'bytes continue in order');
    assert.equal(src.next, 20);
    assert.equal(device.pending, 0);
    assert.equal(clock.timers.size, 0);
  });
});

test('rate limit: bytes a short source read did not produce stay in the period\'s budget', () => {
  const clock = new FakeClock();
  const src = countingSource(3);
  const device = new RngDevice({ source: src, rateLimit: { maxBytes: 8, periodMs: 100 }, clock });
  const { h, driver } = setup(device);
  for (let i = 0; i < 4; i++) driver.add([], [{ addr: BUF + 0x100 * i, len: 8 }], i);
  h.runtime.notify(0);
  // 3 + 3 + 2 = 8 bytes served in the period (asked 8, 5, 2); the fourth request waits.
  assert.deepEqual(driver.getUsed(), { token: 0, len: 3 });
  assert.deepEqual(driver.getUsed(), { token: 1, len: 3 });
  assert.deepEqual(driver.getUsed(), { token: 2, len: 2 });
  assert.equal(driver.getUsed(), null);
  assert.equal(device.pending, 1);
});

test('rate limit with real timers: bytes per period bounded, the waiting request answered later', async () => {
  const src = countingSource();
  const periodMs = 40;
  const { h, driver } = setup(new RngDevice({ source: src, rateLimit: { maxBytes: 16, periodMs } }));
  const started = performance.now();
  const done: number[] = [];
  h.onInterrupt = () => {
    let u;
    while ((u = driver.getUsed()) !== null) done.push(performance.now() - started);
  };
  for (let i = 0; i < 3; i++) driver.add([], [{ addr: BUF + 0x100 * i, len: 16 }], i);
  h.runtime.notify(0);
  assert.equal(src.next, 16, 'one period of bytes at once');
  await sleep(periodMs / 2);
  assert.equal(src.next, 16, 'still bounded halfway through the period');
  while (done.length < 3 && performance.now() - started < 2000) await sleep(5);
  assert.equal(done.length, 3);
  assert.equal(src.next, 48);
  assert.ok(done[1]! >= periodMs - 2, `second answer after one period (${done[1]} ms)`);
  assert.ok(done[2]! >= 2 * periodMs - 4, `third after two periods (${done[2]} ms)`);
});

test('reset drops waiting requests and the period timer; the budget is not refilled by it', async () => {
  const clock = new FakeClock();
  const src = countingSource();
  const device = new RngDevice({ source: src, rateLimit: { maxBytes: 8, periodMs: 50 }, clock });
  const { h, driver } = setup(device);
  driver.add([], [{ addr: BUF, len: 8 }], 0);
  driver.add([], [{ addr: BUF + 0x100, len: 8 }], 1);
  h.runtime.notify(0);
  assert.deepEqual(driver.getUsed(), { token: 0, len: 8 });
  assert.equal(device.pending, 1);
  h.bytes.fill(0x77, BUF + 0x100 - RAM, BUF + 0x108 - RAM);
  clock.t = 10;
  h.runtime.writeStatus(0);
  assert.equal(device.pending, 0, 'waiting request dropped');
  assert.equal(clock.cleared, 1, 'timer cancelled');
  assert.equal(clock.timers.size, 0);
  await tick();
  assert.equal(src.next, 8, 'nothing read for the dropped request');
  assert.ok(h.bytes.subarray(BUF + 0x100 - RAM, BUF + 0x108 - RAM).every((b) => b === 0x77), 'its buffer untouched');

  // The driver comes back within the same period: the budget spent before the reset still counts.
  clock.t = 20;
  const driver2 = bringUp(h, V1, 8);
  driver2.add([], [{ addr: BUF + 0x200, len: 8 }], 2);
  h.runtime.notify(0);
  assert.equal(driver2.getUsed(), null, 'a reset does not refill the budget');
  assert.equal(device.pending, 1);
  clock.advance(30); // t = 50: the period that started at 0 ends
  await tick();
  assert.deepEqual(driver2.getUsed(), { token: 2, len: 8 });
  assert.deepEqual([...h.memory.slice(BUF + 0x200, 2)], [8, 9]);
});

test('reset during an asynchronous source read: the late read is ignored and cannot touch the next request\'s bytes', async () => {
  const reads: { into: Uint8Array; finish(fill: number): void }[] = [];
  const source: EntropySource = {
    read: (into) =>
      new Promise<number>((resolve) => {
        reads.push({ into, finish: (fill) => (into.fill(fill), resolve(into.length)) });
      }),
  };
  const device = new RngDevice({ source });
  const { h, driver } = setup(device);
  driver.add([], [{ addr: BUF, len: 8 }], 0);
  h.runtime.notify(0);
  assert.equal(reads.length, 1);
  assert.equal(device.pending, 1);
  h.runtime.writeStatus(0);
  assert.equal(device.pending, 0);
  const driver2 = bringUp(h, V1, 8);
  h.bytes.fill(0, BUF - RAM, BUF - RAM + 0x200);
  driver2.add([], [{ addr: BUF + 0x100, len: 8 }], 1);
  h.runtime.notify(0);
  assert.equal(reads.length, 2, 'the new request does not wait for the dropped read');
  reads[1]!.finish(0xbb);
  reads[0]!.finish(0xaa); // the dropped read completes last, into its own buffer
  await tick();
  assert.deepEqual(driver2.getUsed(), { token: 1, len: 8 });
  assert.equal(driver2.getUsed(), null, 'nothing for the dropped request');
  assert.deepEqual([...h.memory.slice(BUF + 0x100, 8)], new Array(8).fill(0xbb));
  assert.ok(h.memory.slice(BUF, 8).every((b) => b === 0), 'the dropped request\'s buffer untouched');
});

test('reset with real timers: the pending timer never fires into the dropped request', async () => {
  const src = countingSource();
  const device = new RngDevice({ source: src, rateLimit: { maxBytes: 4, periodMs: 20 } });
  const { h, driver } = setup(device);
  driver.add([], [{ addr: BUF, len: 4 }], 0);
  driver.add([], [{ addr: BUF + 0x100, len: 4 }], 1);
  h.runtime.notify(0);
  assert.equal(device.pending, 1);
  h.runtime.writeStatus(0);
  await sleep(60);
  assert.equal(src.reads, 1);
  assert.equal(h.interrupts.length, 1);
});

test('file source: bytes in file order; at its end the rest, then a device error naming the exhausted source', () => {
  const { file, bytes } = patternFile('p100.bin', 100);
  const fs = openFileSource(file);
  try {
    assert.equal(fs.regular, true);
    const { h, driver } = setup(new RngDevice({ source: fs.reader() }));
    driver.add([], [{ addr: BUF, len: 64 }], 0);
    driver.add([], [{ addr: BUF + 0x100, len: 64 }], 1);
    h.runtime.notify(0);
    assert.deepEqual(driver.getUsed(), { token: 0, len: 64 });
    assert.deepEqual(driver.getUsed(), { token: 1, len: 36 });
    assert.deepEqual(h.memory.slice(BUF, 64), bytes.subarray(0, 64));
    assert.deepEqual(h.memory.slice(BUF + 0x100, 36), bytes.subarray(64, 100));
    assert.equal(h.runtime.status & Status.NEEDS_RESET, 0);
    h.bytes.fill(0x5a, BUF + 0x200 - RAM, BUF + 0x240 - RAM);
    driver.add([], [{ addr: BUF + 0x200, len: 64 }], 2);
    h.runtime.notify(0);
    assert.ok(h.runtime.status & Status.NEEDS_RESET, 'EOF is a device error');
    assert.equal(driver.getUsed(), null, 'no used element with 0 bytes');
    assert.ok(h.bytes.subarray(BUF + 0x200 - RAM, BUF + 0x240 - RAM).every((b) => b === 0x5a), 'no garbage written');
    assert.ok(h.warnings.some((w) => w.includes(file) && /exhausted after 100 bytes/.test(w)), h.warnings.join('\n'));
    // Each model (connection, boot) starts at the file's first byte.
    const again = new Uint8Array(10);
    assert.equal(fs.reader().read(again), 10);
    assert.deepEqual(again, bytes.subarray(0, 10));
  } finally {
    fs.close();
  }
});

test('file source errors at open time: missing, empty, a directory', () => {
  const empty = path.join(dir, 'empty.bin');
  writeFileSync(empty, new Uint8Array(0));
  const sub = path.join(dir, 'sub');
  mkdirSync(sub);
  assert.throws(() => openFileSource(path.join(dir, 'nope.bin')), /rng: cannot open --source .*nope\.bin: no such file/);
  assert.throws(() => openFileSource(empty), /rng: --source .*empty\.bin is empty/);
  assert.throws(() => openFileSource(sub), /is a directory/);
  assert.throws(() => rngDefinition.open({ source: empty, 'queue-size': 256, 'period-ms': 1000 }, { log() {}, warn() {} }), /is empty/);
});

test('a character device (/dev/urandom) is read asynchronously and answered through a promise', async () => {
  const fs = openFileSource('/dev/urandom');
  try {
    assert.equal(fs.regular, false);
    const device = new RngDevice({ source: fs.reader() });
    const { h, driver } = setup(device);
    h.bytes.fill(0, BUF - RAM, BUF - RAM + 256);
    driver.add([], [{ addr: BUF, len: 256 }], 0);
    driver.add([], [{ addr: BUF + 0x200, len: 16 }], 1);
    h.runtime.notify(0);
    assert.equal(driver.getUsed(), null, 'not answered synchronously');
    for (let i = 0; i < 200 && h.interrupts.length < 2; i++) await sleep(2);
    const a = driver.getUsed();
    const b = driver.getUsed();
    assert.deepEqual([a?.token, b?.token], [0, 1], 'answered in order');
    assert.equal(a!.len, 256);
    assert.ok(h.memory.slice(BUF, 256).some((x) => x !== 0));
  } finally {
    fs.close();
  }
});

test('source errors are device errors with a clear message: a throw, a rejection, an impossible count', async () => {
  const cases: [string, EntropySource, RegExp][] = [
    ['throws', { description: 'bad', read: () => { throw new Error('EIO: hardware fault'); } }, /reading the entropy source \(bad\) failed: EIO: hardware fault/],
    ['rejects', { description: 'bad', read: () => Promise.reject(new Error('gone')) }, /reading the entropy source \(bad\) failed: gone/],
    ['too many', { read: (into) => into.length + 1 }, /returned 17 for a read of 16 bytes/],
    ['negative', { read: () => -1 }, /returned -1/],
  ];
  for (const [name, source, message] of cases) {
    const { h, driver } = setup(new RngDevice({ source }));
    driver.add([], [{ addr: BUF, len: 16 }], 0);
    h.runtime.notify(0);
    await tick();
    await tick();
    assert.ok(h.runtime.status & Status.NEEDS_RESET, name);
    assert.equal(driver.getUsed(), null, name);
    assert.ok(h.warnings.some((w) => message.test(w)), `${name}: ${h.warnings.join('\n')}`);
    assert.ok(!h.warnings.some((w) => /\n\s+at /.test(w)), `${name}: no stack trace`);
  }
});

test('cryptoSource fills the whole buffer', () => {
  const a = new Uint8Array(64);
  assert.equal(cryptoSource.read(a), 64);
  assert.ok(a.some((x) => x !== 0));
});

test('definition: options, demo argv and guest command from --count (string or number)', async () => {
  const { file, bytes } = patternFile('def.bin', 32);
  const factory = await rngDefinition.open({ source: file, 'queue-size': 64, 'period-ms': 500, 'max-bytes': 100 }, { log() {}, warn() {} });
  try {
    assert.match(factory.description ?? '', /def\.bin.*≤ 100 bytes per 500 ms.*queue ≤ 64/);
    const d = factory.createDevice();
    assert.equal(d.deviceId, 4);
    assert.deepEqual(d.queueMaxSizes, [64]);
    const { h, driver } = setup(d as RngDevice);
    driver.add([], [{ addr: BUF, len: 8 }], 0);
    h.runtime.notify(0);
    assert.deepEqual(driver.getUsed(), { token: 0, len: 8 });
    assert.deepEqual(h.memory.slice(BUF, 8), bytes.subarray(0, 8));
  } finally {
    await factory.close?.();
  }
  const e = rngDefinition.embedded!;
  assert.deepEqual(e.programArgv({}, []), ['hwrng-read', '64']);
  assert.deepEqual(e.programArgv({ count: 100 }, []), ['hwrng-read', '100']);
  assert.deepEqual(e.programArgv({ count: '7' }, []), ['hwrng-read', '7']);
  assert.ok(await e.loadProgram('hwrng-read'));
  assert.equal(await e.loadProgram('virtio'), undefined);
  const make = await e.loadDriver();
  assert.deepEqual(make([4], {}).deviceIds, [4]);
  const linux = rngDefinition.linux!;
  assert.equal(linux.qemuDevice({}), 'vhost-user-rng-pci');
  assert.deepEqual(linux.kernelArgs, ['rng_core.default_quality=0']);
  const cmd = linux.guestCommand({ count: '100' }, []);
  assert.equal(cmd[0], 'sh');
  assert.match(cmd[2]!, /head -c 100 \/dev\/hwrng/);
  assert.match(linux.guestCommand({}, []).join(' '), /head -c 64 /);
});

