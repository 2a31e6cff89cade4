// Tests for the vhost-user native addon (src/vhost-user/native).
// Build first: `npx tsc -p tsconfig.json && node scripts/build-native.mjs`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { addonPath, native, type NativeError, type WatchEvents } from '../../src/vhost-user/native/index.js';

const indexUrl = new URL('../../src/vhost-user/native/index.js', import.meta.url).href;

const openFds = (): number => readdirSync('/proc/self/fd').length;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

native.getpid(); // load the addon before taking the baseline
const initialFds = openFds();

function withTmpDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(path.join(tmpdir(), 'vu-native-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs an ES module snippet in a child node (with `native` imported). */
function runChild(body: string, opts: { timeout?: number; flags?: string[] } = {}) {
  const script = `import { native } from ${JSON.stringify(indexUrl)};\n${body}`;
  return spawnSync(process.execPath, [...(opts.flags ?? []), '--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: opts.timeout ?? 20_000,
  });
}

test('addon path is under the repo and the addon loads', () => {
  assert.ok(addonPath.endsWith(path.join('src', 'vhost-user', 'native', 'build', 'Release', 'vhost_user_native.node')));
  assert.equal(native.getpid(), process.pid);
  assert.ok(native.pageSize >= 4096 && (native.pageSize & (native.pageSize - 1)) === 0, 'page size is a power of two');
  assert.equal(native.externalArrayBuffers, true, 'this Node must allow external ArrayBuffers for zero-copy mmap');
});

test('fd passing: eventfd, memfd and socket arrive as new fds for the same objects', () => {
  const [a, b] = native.socketPair();
  const efd = native.eventfd(0, true);
  const mfd = native.memfdCreate('pass-test', 8192);
  const [p, q] = native.socketPair();

  assert.equal(native.sendMsg(a, Buffer.from('hello'), [efd, mfd, p]), 5);
  const buf = new Uint8Array(16);
  const r = native.recvMsg(b, buf, 8);
  assert.ok(r);
  assert.equal(r.bytes, 5);
  assert.equal(Buffer.from(buf.subarray(0, r.bytes)).toString(), 'hello');
  assert.equal(r.truncatedFds, false);
  assert.equal(r.fds.length, 3);
  const [efd2, mfd2, p2] = r.fds as [number, number, number];
  for (const f of r.fds) assert.ok(![a, b, efd, mfd, p, q].includes(f), 'received fds are new fd numbers');
  assert.deepEqual(r.fds.map((f) => native.fdKind(f)), ['eventfd', 'memfd', 'socket']);

  // eventfd: write through one copy, read through the other.
  native.eventfdWrite(efd, 7);
  assert.equal(native.eventfdRead(efd2), 7);
  assert.equal(native.eventfdRead(efd), null);
  // Both copies share one open file description, hence one O_NONBLOCK flag.
  native.setNonblocking(efd2, false);
  assert.equal(native.isNonblocking(efd), false);
  native.setNonblocking(efd2, true);
  assert.equal(native.isNonblocking(efd), true);

  // memfd: write through a mapping of one fd, read through a mapping of the other.
  assert.equal(native.fdSize(mfd2), 8192);
  const m1 = native.mmap(mfd, 8192, 0);
  const m2 = native.mmap(mfd2, 4096, 4096);
  new Uint8Array(m1).set([1, 2, 3], 4096);
  assert.deepEqual([...new Uint8Array(m2, 0, 3)], [1, 2, 3]);
  new Uint8Array(m2)[100] = 0xaa;
  assert.equal(new Uint8Array(m1)[4096 + 100], 0xaa);
  native.munmap(m1);
  native.munmap(m2);

  // socket: the received copy is the same connection end.
  native.write(q, Buffer.from('ping'));
  const got = new Uint8Array(4);
  assert.equal(native.readFull(p2, got), 4);
  assert.equal(Buffer.from(got).toString(), 'ping');

  for (const f of [a, b, efd, mfd, p, q, efd2, mfd2, p2]) native.close(f);
});

test('recvMsg closes fds beyond maxFds and reports truncatedFds (no leak)', () => {
  const [a, b] = native.socketPair();
  const sent = Array.from({ length: 5 }, () => native.eventfd(0, true));
  const base = openFds();
  const buf = new Uint8Array(8);

  native.sendMsg(a, new Uint8Array([1]), sent);
  const r = native.recvMsg(b, buf, 2);
  assert.ok(r);
  assert.equal(r.bytes, 1);
  assert.equal(r.fds.length, 2);
  assert.equal(r.truncatedFds, true);
  assert.equal(openFds(), base + 2, 'only the 2 kept fds are open');
  for (const f of r.fds) native.close(f);
  assert.equal(openFds(), base);

  native.sendMsg(a, new Uint8Array([2]), sent);
  const r0 = native.recvMsg(b, buf, 0);
  assert.deepEqual(r0, { bytes: 1, fds: [], truncatedFds: true });
  assert.equal(openFds(), base);

  // Messages without fds are not "truncated".
  native.sendMsg(a, new Uint8Array([3]), []);
  assert.deepEqual(native.recvMsg(b, buf, 0), { bytes: 1, fds: [], truncatedFds: false });

  for (const f of [a, b, ...sent]) native.close(f);
});

test('mmap: two mappings are coherent; munmap detaches; bad arguments are rejected', () => {
  const ps = native.pageSize;
  const fd = native.memfdCreate('mmap-test', 4 * ps);
  const whole = native.mmap(fd, 4 * ps, 0);
  const tail = native.mmap(fd, 2 * ps, 2 * ps);
  assert.equal(whole.byteLength, 4 * ps);
  assert.equal(tail.byteLength, 2 * ps);
  const wv = new Uint8Array(whole);
  const tv = new Uint8Array(tail);
  wv[2 * ps + 5] = 42;
  assert.equal(tv[5], 42);
  tv[ps] = 7;
  assert.equal(wv[3 * ps], 7);
  // Also coherent with the file itself (fresh mapping sees earlier writes).
  const again = native.mmap(fd, ps, 2 * ps);
  assert.equal(new Uint8Array(again)[5], 42);
  native.munmap(again);

  native.munmap(tail);
  assert.equal(tail.byteLength, 0, 'ArrayBuffer is detached');
  assert.equal(tv.length, 0, 'views of it are emptied');
  assert.equal(tv[5], undefined);
  assert.throws(() => native.munmap(tail), { code: 'ERR_INVALID_ARG_VALUE', message: /detached/ });
  assert.throws(() => native.munmap(new ArrayBuffer(16)), { code: 'ERR_INVALID_ARG_VALUE', message: /not created by mmap/ });
  assert.throws(() => native.munmap(new Uint8Array(4) as unknown as ArrayBuffer), { name: 'TypeError' });
  assert.equal(wv[2 * ps + 5], 42, 'the other mapping is unaffected');

  assert.throws(() => native.mmap(fd, ps, 100), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /page size/ });
  assert.throws(() => native.mmap(fd, 0, 0), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.mmap(fd, -1, 0), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.mmap(fd, 1.5, 0), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.mmap(fd, '4096' as unknown as number, 0), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  const efd = native.eventfd(0, false);
  assert.throws(() => native.mmap(efd, ps, 0), { code: 'ENODEV', syscall: 'mmap' });
  native.close(efd);

  native.munmap(whole);
  assert.equal(wv.length, 0);
  native.close(fd);
  assert.throws(() => native.mmap(fd, ps, 0), { code: 'EBADF', syscall: 'mmap', message: /^mmap: Bad file descriptor/ });
});

test('mappings dropped without munmap are unmapped when collected', () => {
  const r = runChild(
    `
    import { readFileSync } from 'node:fs';
    const count = () => readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/memfd:gc-probe')).length;
    const fd = native.memfdCreate('gc-probe', 1 << 20);
    for (let i = 0; i < 20; i++) new Uint8Array(native.mmap(fd, 1 << 20, 0))[0] = i;
    native.close(fd);
    const before = count();
    for (let i = 0; i < 20 && count() > 0; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); }
    console.log(JSON.stringify({ before, after: count() }));
  `,
    { flags: ['--expose-gc'] },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { before: 20, after: 0 });
});

test('eventfd read/write semantics', () => {
  const efd = native.eventfd(0, true);
  assert.equal(native.eventfdRead(efd), null, 'empty non-blocking eventfd reads as null (EAGAIN)');
  native.eventfdWrite(efd);
  native.eventfdWrite(efd, 3);
  native.eventfdWrite(efd, 4);
  assert.equal(native.eventfdRead(efd), 8, 'writes accumulate');
  assert.equal(native.eventfdRead(efd), null, 'read resets the counter');

  // Overflow of the 64-bit counter: EAGAIN on a non-blocking eventfd.
  let err: unknown;
  let writes = 0;
  try {
    for (; writes < 5000; writes++) native.eventfdWrite(efd, Number.MAX_SAFE_INTEGER);
  } catch (e) {
    err = e;
  }
  assert.ok(writes > 1000 && writes < 5000, `overflowed after ${writes} writes`);
  assert.ok(err instanceof Error);
  assert.equal((err as NodeJS.ErrnoException).code, 'EAGAIN');
  assert.equal(native.eventfdRead(efd), Number.MAX_SAFE_INTEGER, 'large counters are clamped to 2^53-1');

  assert.throws(() => native.eventfdWrite(efd, 0), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.eventfdWrite(efd, 2 ** 53), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.eventfd(-1, true), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.eventfd(0, 1 as unknown as boolean), { code: 'ERR_INVALID_ARG_TYPE' });
  native.close(efd);

  const blocking = native.eventfd(5, false);
  assert.equal(native.isNonblocking(blocking), false);
  assert.equal(native.eventfdRead(blocking), 5, 'initial value');
  native.close(blocking);
});

test('watch fires on eventfd writes; stop() stops it', async () => {
  const efd = native.eventfd(0, false);
  const seen: number[] = [];
  let wake: () => void = () => {};
  const w = native.watch(efd, (err, ev) => {
    assert.equal(err, null);
    assert.deepEqual(ev, { readable: true, disconnect: false });
    const v = native.eventfdRead(efd);
    if (v !== null) seen.push(v);
    wake();
  });
  assert.equal(w.fd, efd);
  assert.equal(w.active, true);
  // Documented caveat: libuv makes the fd (its open file description) non-blocking.
  assert.equal(native.isNonblocking(efd), true);

  await sleep(30);
  assert.deepEqual(seen, [], 'no callback before a write');
  const fired = new Promise<void>((resolve) => (wake = resolve));
  native.eventfdWrite(efd, 3);
  await fired;
  assert.deepEqual(seen, [3]);

  w.stop();
  assert.equal(w.active, false);
  w.stop(); // idempotent
  assert.equal(w.unref(), w, 'ref/unref after stop are harmless no-ops');
  native.eventfdWrite(efd, 1);
  await sleep(50);
  assert.deepEqual(seen, [3], 'no callback after stop');
  assert.equal(native.eventfdRead(efd), 1);
  native.close(efd);
});

test('watch: stop() inside its own callback is safe', async () => {
  const efd = native.eventfd(0, true);
  let calls = 0;
  const w = native.watch(efd, () => {
    calls++;
    w.stop();
    w.stop();
    w.ref();
    // The counter is not read, so a still-running level-triggered watch
    // would call again and again.
  });
  native.eventfdWrite(efd);
  await sleep(60);
  assert.equal(calls, 1);
  assert.equal(w.active, false);
  native.close(efd);
});

test('watchEventfd reads the counter before calling back; an fd that is not an eventfd ends the watch with an error', async () => {
  const efd = native.eventfd(0, false);
  const seen: number[] = [];
  let wake: () => void = () => {};
  const w = native.watchEventfd(efd, (err, count) => {
    assert.equal(err, null);
    seen.push(count);
    wake();
  });
  for (const n of [3, 1, 7]) {
    const fired = new Promise<void>((resolve) => (wake = resolve));
    native.eventfdWrite(efd, n);
    await fired;
  }
  assert.deepEqual(seen, [3, 1, 7], 'each callback gets the count, and the counter was reset');
  assert.equal(native.eventfdRead(efd), null, 'nothing left to read');
  await sleep(30);
  assert.equal(seen.length, 3, 'a drained counter does not call again (level-triggered poll, no spin)');
  w.stop();
  native.close(efd);

  // A hung-up socket is readable forever but reads 0 bytes: reported once, then the watch is over.
  const [a, b] = native.socketPair();
  native.close(b);
  const errors: NativeError[] = [];
  const bad = native.watchEventfd(a, (err) => {
    if (err) errors.push(err);
  });
  await sleep(60);
  assert.equal(errors.length, 1);
  assert.match(errors[0]!.message, /not a usable eventfd/);
  assert.equal(bad.active, false);
  native.close(a);
});

test('watch reports disconnect; one watch per fd; Watch objects come only from watch()', async () => {
  const [a, b] = native.socketPair();
  const w1 = native.watch(b, () => {});
  assert.throws(() => native.watch(b, () => {}), { code: 'EEXIST', message: /uv_poll_init/ });
  w1.stop();
  const ev = await new Promise<WatchEvents>((resolve) => {
    const w = native.watch(b, (err, e) => {
      assert.equal(err, null);
      w.stop();
      resolve(e);
    });
    native.close(a);
  });
  assert.equal(ev.disconnect, true);
  assert.deepEqual(native.recvMsg(b, new Uint8Array(4), 0), { bytes: 0, fds: [], truncatedFds: false });
  native.close(b);

  assert.throws(() => native.watch(0, 'nope' as unknown as () => void), { code: 'ERR_INVALID_ARG_TYPE' });
  const Ctor = Object.getPrototypeOf(w1).constructor as new () => { stop(): void };
  assert.throws(() => new Ctor().stop(), { code: 'ERR_INVALID_THIS' });
});

test('watch: unref lets the process exit; a ref-ed watch keeps it alive', () => {
  const unrefd = runChild(`
    const efd = native.eventfd(0, true);
    native.watch(efd, () => {}).unref();
    console.log('watching');
  `);
  assert.equal(unrefd.status, 0, unrefd.stderr);
  assert.equal(unrefd.stdout.trim(), 'watching');

  const refd = runChild(
    `
    const efd = native.eventfd(0, true);
    native.watch(efd, () => {});
    console.log('watching');
  `,
    { timeout: 1500 },
  );
  assert.equal(refd.stdout.trim(), 'watching');
  assert.equal(refd.signal, 'SIGTERM', 'still running at the timeout');

  const reRefd = runChild(`
    const efd = native.eventfd(0, true);
    const w = native.watch(efd, () => {}).unref().ref();
    setTimeout(() => { w.unref(); console.log('unref-ed'); }, 50);
  `);
  assert.equal(reRefd.status, 0, reRefd.stderr);
  assert.equal(reRefd.stdout.trim(), 'unref-ed');
});

test('watch: an exception thrown by the callback is an uncaught exception', () => {
  const crash = runChild(`
    const efd = native.eventfd(1, true);
    native.watch(efd, () => { throw new Error('boom from watch callback'); });
  `);
  assert.equal(crash.signal, null, 'no abort');
  assert.equal(crash.status, 1);
  assert.match(crash.stderr, /Error: boom from watch callback/);

  const handled = runChild(`
    const efd = native.eventfd(1, true);
    const w = native.watch(efd, () => { throw new Error('boom'); });
    process.on('uncaughtException', (e) => { console.log('caught ' + e.message); w.stop(); });
  `);
  assert.equal(handled.status, 0, handled.stderr);
  assert.equal(handled.stdout.trim(), 'caught boom');
});

const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
import(workerData.url).then(({ native }) => {
  if (workerData.mapName) {
    // Leave a mapping behind: env teardown must unmap it.
    const fd = native.memfdCreate(workerData.mapName, 65536);
    new Uint8Array(native.mmap(fd, 65536, 0))[0] = 1;
    native.close(fd);
  }
  const w = native.watch(workerData.fd, (err, ev) => {
    parentPort.postMessage({ err: err && err.message, readable: ev.readable, value: native.eventfdRead(workerData.fd) });
    if (workerData.stop) w.stop();
  });
  parentPort.postMessage('ready');
});
`;

async function runWorker(fd: number, opts: { stop: boolean; mapName?: string }) {
  const worker = new Worker(workerSource, { eval: true, workerData: { url: indexUrl, fd, ...opts } });
  const exited = new Promise<number>((resolve, reject) => {
    worker.once('exit', resolve);
    worker.once('error', reject);
  });
  const messages: unknown[] = [];
  const nextMessage = () => new Promise<unknown>((resolve) => worker.once('message', resolve));
  assert.equal(await nextMessage(), 'ready');
  native.eventfdWrite(fd, 5);
  messages.push(await nextMessage());
  return { worker, exited, messages };
}

test('watch works inside worker_threads; teardown closes watches and mappings', async () => {
  const efd = native.eventfd(0, true);

  // The worker stops its watch in the callback, so it exits on its own.
  const a = await runWorker(efd, { stop: true });
  assert.deepEqual(a.messages, [{ err: null, readable: true, value: 5 }]);
  assert.equal(await a.exited, 0);

  // The worker keeps its watch (and a mapping); terminate() tears it down.
  const mapName = `worker-map-${process.pid}`;
  const b = await runWorker(efd, { stop: false, mapName });
  assert.deepEqual(b.messages, [{ err: null, readable: true, value: 5 }]);
  assert.ok(readFileSync('/proc/self/maps', 'utf8').includes(mapName));
  await b.worker.terminate();
  assert.equal(await b.exited, 1);
  assert.ok(!readFileSync('/proc/self/maps', 'utf8').includes(mapName), 'worker teardown unmapped its mapping');

  // The fd is still usable (and watchable) on the main thread afterwards.
  const fired = new Promise<number | null>((resolve) => {
    const w = native.watch(efd, () => {
      w.stop();
      resolve(native.eventfdRead(efd));
    });
  });
  native.eventfdWrite(efd, 2);
  assert.equal(await fired, 2);
  native.close(efd);
});

test('socketListen/socketConnect/socketAccept round trip with fds; EOF is bytes 0', () => {
  withTmpDir((dir) => {
    const sockPath = path.join(dir, 'vhost.sock');
    const lfd = native.socketListen(sockPath, 4);
    assert.equal(native.fdKind(lfd), 'socket');
    assert.equal(native.isNonblocking(lfd), true);
    assert.equal(native.socketAccept(lfd), null, 'no pending connection');
    assert.throws(() => native.socketListen(sockPath, 4), { code: 'EADDRINUSE', syscall: 'bind' });

    const client = native.socketConnect(sockPath);
    assert.equal(native.isNonblocking(client), false, 'client fd is blocking');
    const server = native.socketAccept(lfd);
    assert.ok(server !== null);
    assert.equal(native.isNonblocking(server), true, 'accepted fd is non-blocking');
    assert.equal(native.recvMsg(server, new Uint8Array(8), 8), null, 'EAGAIN is null');

    const efd = native.eventfd(0, true);
    const msg = Buffer.from('0123456789ab');
    assert.equal(native.sendMsg(client, msg, [efd]), 12);
    const buf = new Uint8Array(64);
    const r = native.recvMsg(server, buf, 8);
    assert.ok(r);
    assert.equal(r.bytes, 12);
    assert.deepEqual(Buffer.from(buf.subarray(0, 12)), msg);
    assert.equal(r.fds.length, 1);
    native.eventfdWrite(r.fds[0]!, 9);
    assert.equal(native.eventfdRead(efd), 9);

    // Reply on the server side, blocking read on the client side.
    native.sendMsg(server, Buffer.from('reply!'), []);
    const reply = new Uint8Array(6);
    assert.equal(native.readFull(client, reply), 6);
    assert.equal(Buffer.from(reply).toString(), 'reply!');

    // readFull returns a short count at EOF; recvMsg returns bytes 0.
    native.write(server, Buffer.from('ab'));
    native.close(server);
    assert.equal(native.readFull(client, new Uint8Array(10)), 2);
    native.close(client);

    const c2 = native.socketConnect(sockPath);
    const s2 = native.socketAccept(lfd)!;
    native.close(c2);
    assert.deepEqual(native.recvMsg(s2, buf, 8), { bytes: 0, fds: [], truncatedFds: false });
    native.close(s2);

    for (const f of [lfd, efd, r.fds[0]!]) native.close(f);
  });
});

test('socket errors: over-long path, missing socket, fd limits, EPIPE, EAGAIN', () => {
  const long = '/tmp/' + 'x'.repeat(120);
  assert.throws(() => native.socketListen(long, 1), { code: 'ENAMETOOLONG', message: /sun_path/ });
  assert.throws(() => native.socketConnect(long), { code: 'ENAMETOOLONG' });
  assert.throws(() => native.socketConnect('/nonexistent/vhost.sock'), {
    code: 'ENOENT',
    syscall: 'connect',
    message: 'connect(/nonexistent/vhost.sock): No such file or directory',
  });
  assert.throws(() => native.socketListen('', 1), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.socketListen('a\0b', 1), { code: 'ERR_INVALID_ARG_VALUE' });

  const [a, b] = native.socketPair();
  const nine = Array.from({ length: 9 }, () => a);
  assert.throws(() => native.sendMsg(a, new Uint8Array(1), nine), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.sendMsg(a, new Uint8Array(0), [a]), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.sendMsg(a, new Uint8Array(1), [-1]), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.sendMsg(a, [1, 2] as unknown as Uint8Array, []), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => native.recvMsg(b, new Uint8Array(0), 1), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.recvMsg(b, new Uint8Array(1), 254), { code: 'ERR_OUT_OF_RANGE' });

  // Fill a non-blocking socket: EAGAIN is an error with code 'EAGAIN'.
  native.setNonblocking(a, true);
  const chunk = new Uint8Array(65536);
  assert.throws(() => {
    for (let i = 0; i < 10_000; i++) native.sendMsg(a, chunk, []);
  }, { code: 'EAGAIN', syscall: 'sendmsg' });

  // Peer gone: EPIPE, not a SIGPIPE that kills the process.
  native.close(b);
  assert.throws(() => native.sendMsg(a, chunk, []), { code: 'EPIPE' });
  native.setNonblocking(a, false);
  assert.throws(() => native.write(a, chunk), { code: 'EPIPE', syscall: 'send' });
  native.close(a);
});

test('errors carry code, errno and syscall; argument checks', () => {
  const efd = native.eventfd(0, true);
  native.close(efd);
  assert.throws(() => native.close(efd), (e: NodeJS.ErrnoException) => {
    assert.ok(e instanceof Error);
    assert.equal(e.code, 'EBADF');
    assert.equal(e.errno, 9);
    assert.equal(e.syscall, 'close');
    assert.equal(e.message, 'close: Bad file descriptor');
    return true;
  });
  assert.throws(() => native.fdKind(efd), { code: 'EBADF' });
  assert.throws(() => native.fdSize(efd), { code: 'EBADF', syscall: 'fstat' });
  assert.throws(() => native.eventfdRead(efd), { code: 'EBADF' });
  assert.throws(() => native.recvMsg(efd, new Uint8Array(1), 0), { code: 'EBADF', syscall: 'recvmsg' });
  assert.throws(() => native.watch(efd, () => {}), { code: 'EBADF' });
  assert.throws(() => native.close('3' as unknown as number), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => native.close(-1), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => native.close(Number.NaN), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => (native.close as () => void)(), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => native.memfdCreate('x'.repeat(250), 1), { code: 'ERR_OUT_OF_RANGE' });

  // fdKind for plain files and other things.
  withTmpDir((dir) => {
    const file = path.join(dir, 'f');
    writeFileSync(file, 'abc');
    const ffd = openSync(file, 'r');
    assert.equal(native.fdKind(ffd), 'file');
    assert.equal(native.fdSize(ffd), 3);
    closeSync(ffd);
  });
  const devnull = openSync('/dev/null', 'r');
  assert.equal(native.fdKind(devnull), 'other');
  closeSync(devnull);
});

test('a missing addon gives a clear error at first use, not at import', () => {
  withTmpDir((dir) => {
    const dest = path.join(dir, 'dist', 'src', 'vhost-user', 'native');
    mkdirSync(dest, { recursive: true });
    copyFileSync(fileURLToPath(indexUrl), path.join(dest, 'index.js'));
    writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
    const url = JSON.stringify(new URL(`file://${path.join(dest, 'index.js')}`).href);
    const r = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `const m = await import(${url}); console.log(m.nativeAvailable()); m.native.getpid();`],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 1);
    assert.equal(r.stdout.trim(), 'false');
    const expected = path.join(dir, 'src', 'vhost-user', 'native', 'build', 'Release', 'vhost_user_native.node');
    assert.ok(r.stderr.includes(`native addon missing at ${expected}; run \`npm run build\``), r.stderr);
  });
});

test('no fd leaked by this file', async () => {
  await sleep(20);
  assert.equal(openFds(), initialFds);
});
