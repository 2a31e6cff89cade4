/**
 * serveDevice (backend-server.ts) in process: its option checks (exact errors), serving on a
 * given listening fd (checkListeningSocket on what is not one), the socket file's mode and
 * group, replacing a stale socket file and refusing a live one or a non-socket, the connection
 * count, idle() and close(), a device model that cannot be made, and the options passed to each
 * session. Also BackendChannel (backend-channel.ts), the BACKEND_REQ sender, on its own.
 */
import assert from 'node:assert/strict';
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { BackendChannel } from '../../src/vhost-user/backend-channel.js';
import { checkListeningSocket, listenReplacingStale, serveDevice, type ServeDeviceOptions } from '../../src/vhost-user/backend-server.js';
import { DEFAULT_MAX_MEM_SLOTS, OFFERED_PROTOCOL_FEATURES } from '../../src/vhost-user/backend-session.js';
import { encodeMessage } from '../../src/vhost-user/codec.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { native } from '../../src/vhost-user/native/index.js';
import { BackendRequest, HeaderFlag } from '../../src/vhost-user/protocol.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { FeatureBit, MAX_QUEUE_SIZE, bit } from '../../src/virtio/constants.js';
import { leakedFds, openFds, socketModeInWorker, tempDir, waitFor } from './helpers.js';

const quiet = { warn: () => {}, createDevice: () => new VirtioTestDevice() };

/** Runs `fn` with a fresh temp dir, removed afterwards. */
async function inTemp(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const tmp = tempDir();
  try {
    await fn(tmp.dir);
  } finally {
    tmp.remove();
  }
}

async function expectServes(socketPath: string): Promise<void> {
  const c = await VirtioTestClient.connect({ socketPath });
  try {
    assert.deepEqual(await c.request(10), answer(requestFor(10)));
  } finally {
    c.close();
  }
}

describe('serveDevice: option checks', () => {
  it('maxQueueSize must be a power of two in 1..32768', async () => {
    assert.equal(MAX_QUEUE_SIZE, 32768);
    await inTemp(async (dir) => {
      const socketPath = path.join(dir, 's.sock');
      // (1.5 and 2.5 pass the bit test, 1.5 & 0.5 === 0: integers only.)
      for (const m of [0, -1, -2, 3, 6, 1.5, 2.5, 65536, 2 ** 31, NaN]) {
        assert.throws(() => serveDevice({ ...quiet, socketPath, maxQueueSize: m }), {
          name: 'RangeError',
          message: `maxQueueSize ${m} is not a power of two in 1..32768`,
        });
        assert.equal(existsSync(socketPath), false, 'checked before the socket is made');
      }
      for (const m of [1, 2, 256, 32768]) {
        const s = serveDevice({ ...quiet, socketPath, maxQueueSize: m });
        await s.close();
      }
    });
  });

  it('maxQueueSize is the largest ring a front-end may set', async () => {
    await inTemp(async (dir) => {
      const socketPath = path.join(dir, 's.sock');
      const warnings: string[] = [];
      const s = serveDevice({ ...quiet, socketPath, maxQueueSize: 32, warn: (l) => warnings.push(l) });
      try {
        const c = await VirtioTestClient.connect({ socketPath, queueSize: 32 });
        assert.deepEqual(await c.request(10), answer(requestFor(10)));
        c.close();
        await s.idle();
        await assert.rejects(VirtioTestClient.connect({ socketPath, queueSize: 64 }), /SET_VRING_NUM: back-end reports failure/);
        await s.idle();
        assert.deepEqual(warnings, ['vhost-user: SET_VRING_NUM refused: vring 0: size 64 is not a power of two in 1..32']);
      } finally {
        await s.close();
      }
    });
  });

  it('listenFd excludes socketPath, socketMode and socketGroup; one of listenFd and socketPath is required', () => {
    const excl = { name: 'TypeError', message: 'listenFd excludes socketPath, socketMode and socketGroup' };
    assert.throws(() => serveDevice({ ...quiet, listenFd: 1000, socketPath: '/nonexistent/x.sock' }), excl);
    assert.throws(() => serveDevice({ ...quiet, listenFd: 1000, socketMode: 0o600 }), excl);
    assert.throws(() => serveDevice({ ...quiet, listenFd: 1000, socketGroup: 0 }), excl);
    assert.throws(() => serveDevice({ ...quiet }), { name: 'TypeError', message: 'socketPath or listenFd is required' });
    assert.throws(() => serveDevice({ ...quiet, socketMode: 0o600 }), { name: 'TypeError', message: 'socketPath or listenFd is required' });
  });

  it('socketMode must be permission bits, socketGroup a gid (checked before the socket is made)', async () => {
    await inTemp((dir) => {
      const socketPath = path.join(dir, 's.sock');
      for (const mode of [-1, 0o10000, 1.5, NaN]) {
        assert.throws(() => serveDevice({ ...quiet, socketPath, socketMode: mode }), {
          name: 'RangeError',
          message: `socketMode ${mode} is not a set of permission bits (0..0o7777)`,
        });
      }
      for (const gid of [-1, 2 ** 32, 0.5, NaN]) {
        assert.throws(() => serveDevice({ ...quiet, socketPath, socketGroup: gid }), { name: 'RangeError', message: `socketGroup ${gid} is not a gid` });
      }
      assert.equal(existsSync(socketPath), false);
    });
  });
});

describe('serveDevice: the socket file', () => {
  it('socketMode and socketGroup are applied; the umask is restored; the file is removed on close', async () => {
    await inTemp(async (dir) => {
      const umask = process.umask();
      assert.notEqual(umask, 0o177);
      const gid = (process.getgid?.() ?? 0) === 0 ? 4242 : process.getgid!();
      const cases: { socketMode?: number; socketGroup?: number; mode: number; gid: number }[] = [
        { socketMode: 0o660, socketGroup: gid, mode: 0o660, gid },
        { socketMode: 0o7777, mode: 0o7777, gid: process.getgid!() },
        { socketMode: 0, mode: 0, gid: process.getgid!() },
        { socketGroup: gid, mode: 0o777 & ~umask, gid },
        { socketGroup: 0xffffffff, mode: 0o777 & ~umask, gid: process.getgid!() }, // (gid_t)-1: no change
        { mode: 0o777 & ~umask, gid: process.getgid!() },
        { socketGroup: 0, socketMode: 0o660, mode: 0o660, gid: 0 }, // gid 0 is a gid (root's group)
      ];
      for (const [i, c] of cases.entries()) {
        const socketPath = path.join(dir, `m${i}.sock`);
        const opts: ServeDeviceOptions = { ...quiet, socketPath };
        if (c.socketMode !== undefined) opts.socketMode = c.socketMode;
        if (c.socketGroup !== undefined) opts.socketGroup = c.socketGroup;
        const s = serveDevice(opts);
        try {
          assert.equal(process.umask(), umask, 'umask restored');
          const st = statSync(socketPath);
          assert.ok(st.isSocket());
          assert.equal(st.mode & 0o7777, c.mode, `case ${i} mode`);
          assert.equal(st.gid, c.gid, `case ${i} gid`);
          assert.equal(st.uid, process.getuid!(), `case ${i}: the owner is left alone (chown uid -1)`);
          assert.equal(s.socketPath, socketPath);
        } finally {
          await s.close();
        }
        assert.equal(existsSync(socketPath), false, 'removed on close');
      }
    });
  });

  it('in a worker thread (no umask there) socketMode still applies', async () => {
    await inTemp(async (dir) => {
      const socketPath = path.join(dir, 'w.sock');
      const server = new URL('../../src/vhost-user/backend-server.js', import.meta.url).href;
      const device = new URL('../../src/devices/virtio-test/device.js', import.meta.url).href;
      const start = `async (m, socketPath) => {
        const d = await import(${JSON.stringify(device)});
        return m.serveDevice({ socketPath, socketMode: 0o640, createDevice: () => new d.VirtioTestDevice() });
      }`;
      const result = await socketModeInWorker(server, start, socketPath);
      assert.deepEqual(result, { mode: 0o640 });
    });
  });

  it('a stale socket file is replaced; a live one, a regular file or a directory is refused; other errors are thrown as they are', async () => {
    await inTemp(async (dir) => {
      const socketPath = path.join(dir, 's.sock');
      const stale = native.socketListen(socketPath, 1);
      native.close(stale);
      const fds = openFds();
      const s = serveDevice({ ...quiet, socketPath });
      try {
        await expectServes(socketPath);
        await s.idle();
        assert.throws(() => serveDevice({ ...quiet, socketPath }), { code: 'EADDRINUSE', message: `${socketPath}: another back-end is listening there` });
        assert.throws(() => listenReplacingStale(socketPath, 1), { code: 'EADDRINUSE', message: `${socketPath}: another back-end is listening there` });
      } finally {
        await s.close();
      }
      assert.deepEqual(leakedFds(fds), [], 'the probe is closed');

      const file = path.join(dir, 'file');
      writeFileSync(file, 'data');
      assert.throws(() => serveDevice({ ...quiet, socketPath: file }), { code: 'EEXIST', message: `${file} exists and is not a socket` });
      assert.equal(readFileSync(file, 'utf8'), 'data', 'left alone');
      const sub = path.join(dir, 'sub');
      mkdirSync(sub);
      assert.throws(() => listenReplacingStale(sub, 1), { code: 'EEXIST', message: `${sub} exists and is not a socket` });
      assert.throws(() => listenReplacingStale(path.join(dir, 'missing', 's.sock'), 1), { code: 'ENOENT' });
      assert.throws(() => listenReplacingStale(path.join(dir, 'x'.repeat(120)), 1), { code: 'ENAMETOOLONG' });

      // A stale one found by listenReplacingStale itself: a listening fd on a fresh path.
      const p2 = path.join(dir, 'p2.sock');
      native.close(native.socketListen(p2, 1));
      const fd = listenReplacingStale(p2, 1);
      try {
        assert.equal(checkListeningSocket(fd), p2);
      } finally {
        native.close(fd);
      }
    });
  });

  it('close() leaves a socket file that is no longer its own, and is idempotent', async () => {
    await inTemp(async (dir) => {
      const socketPath = path.join(dir, 's.sock');
      const s = serveDevice({ ...quiet, socketPath });
      unlinkSync(socketPath);
      writeFileSync(socketPath, 'someone else');
      await s.close();
      await s.close();
      assert.equal(readFileSync(socketPath, 'utf8'), 'someone else');
      unlinkSync(socketPath);
      const s2 = serveDevice({ ...quiet, socketPath });
      unlinkSync(socketPath);
      await s2.close(); // already gone: no error
      assert.equal(existsSync(socketPath), false);
    });
  });
});

describe('serveDevice: listenFd and checkListeningSocket', () => {
  it('serves on a given listening socket: made non-blocking, closed by close(), its file left', async () => {
    await inTemp(async (dir) => {
      const socketPath = path.join(dir, 'given.sock');
      const fd = native.socketListen(socketPath, 4);
      native.setNonblocking(fd, false);
      const s = serveDevice({ ...quiet, listenFd: fd });
      try {
        assert.equal(s.socketPath, socketPath);
        assert.equal(native.isNonblocking(fd), true);
        await expectServes(socketPath);
        await s.idle();
        assert.equal(s.connections, 1);
      } finally {
        await s.close();
      }
      assert.throws(() => native.fdKind(fd), { code: 'EBADF' }, 'the fd is closed');
      assert.equal(lstatSync(socketPath).isSocket(), true, 'the file belongs to whoever made it');
    });
  });

  it('refuses what is not a listening Unix stream socket, saying what it is', async () => {
    await inTemp(async (dir) => {
      const file = path.join(dir, 'f');
      writeFileSync(file, '');
      const ffd = openSync(file, 'r');
      try {
        assert.throws(() => checkListeningSocket(ffd), { code: 'ENOTSOCK', message: `fd ${ffd} is not a socket` });
        assert.throws(() => serveDevice({ ...quiet, listenFd: ffd }), { code: 'ENOTSOCK', message: `fd ${ffd} is not a socket` });
      } finally {
        closeSync(ffd);
      }
      assert.throws(() => checkListeningSocket(ffd), { code: 'EBADF', message: `fd ${ffd} is not open` });
      const [a, b] = native.socketPair();
      try {
        assert.throws(() => checkListeningSocket(a), { code: 'EINVAL', message: `fd ${a} is a non-listening unix stream socket, not a listening Unix stream socket` });
        assert.throws(() => serveDevice({ ...quiet, listenFd: a }), { code: 'EINVAL' });
      } finally {
        native.close(a);
        native.close(b);
      }
      const dg = native.datagramBind(path.join(dir, 'dg.sock'));
      try {
        assert.throws(() => checkListeningSocket(dg), { code: 'EINVAL', message: `fd ${dg} is a non-listening unix dgram socket, not a listening Unix stream socket` });
      } finally {
        native.close(dg);
      }
      // An abstract name reads back as '@name' (the addon's socketInfo; serveDevice reports it as socketPath).
      const abstract = native.datagramBind(`@vt-vu-test-${process.pid}`);
      try {
        assert.deepEqual(native.socketInfo(abstract), { family: 'unix', type: 'dgram', listening: false, path: `@vt-vu-test-${process.pid}` });
      } finally {
        native.close(abstract);
      }
      assert.equal(existsSync(`@vt-vu-test-${process.pid}`), false, 'no file was made');
      const tcp = net.createServer();
      await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
      try {
        const tfd = (tcp as unknown as { _handle: { fd: number } })._handle.fd;
        assert.throws(() => checkListeningSocket(tfd), { code: 'EINVAL', message: `fd ${tfd} is a listening inet stream socket, not a listening Unix stream socket` });
      } finally {
        tcp.close();
      }
      // An argument the addon refuses is thrown as it is.
      assert.throws(() => checkListeningSocket(-1), (e: Error & { code?: string }) => e.code !== 'ENOTSOCK' && e.code !== 'EBADF' && !/is not/.test(e.message));
    });
  });
});

describe('serveDevice: connections, idle(), close()', () => {
  it('counts front-ends, idle() waits for the current one, close() ends it and removes the socket', async () => {
    await inTemp(async (dir) => {
      const socketPath = path.join(dir, 's.sock');
      const events: string[] = [];
      const s = serveDevice({ ...quiet, socketPath, info: (l) => events.push(l) });
      try {
        assert.equal(s.connections, 0);
        assert.equal(s.session, null);
        await s.idle(); // nobody: at once
        await expectServes(socketPath);
        await s.idle();
        assert.equal(s.session, null);
        const c = await VirtioTestClient.connect({ socketPath });
        assert.equal(s.connections, 2);
        assert.notEqual(s.session, null);
        let idle = false;
        const waiters = [s.idle().then(() => (idle = true)), s.idle()];
        await new Promise((r) => setTimeout(r, 20));
        assert.equal(idle, false, 'idle() waits while a front-end is connected');
        await s.close();
        await Promise.all(waiters);
        assert.equal(s.session, null);
        await waitFor(() => c.frontend.isClosed, 'the front-end to see the end');
        c.close();
        assert.deepEqual(events, [
          'front-end 1 connected',
          events[1],
          'front-end 2 connected',
          'front-end 2 disconnected (back-end shutting down)',
        ]);
        assert.match(events[1]!, /^front-end 1 disconnected/);
        assert.equal(existsSync(socketPath), false);
        await assert.rejects(VirtioTestClient.connect({ socketPath }));
      } finally {
        await s.close();
      }
    });
  });

  it('a front-end that leaves: "front-end N disconnected", no reason; close() twice closes nothing of anyone else', async () => {
    await inTemp(async (dir) => {
      const socketPath = path.join(dir, 's.sock');
      const events: string[] = [];
      const s = serveDevice({ ...quiet, socketPath, info: (l) => events.push(l) });
      let other = -1;
      try {
        const c = await VirtioTestClient.connect({ socketPath });
        c.close();
        await s.idle();
        assert.deepEqual(events, ['front-end 1 connected', 'front-end 1 disconnected']);
        await s.close();
        // The listening fd's number is free now: the next fd made here most likely gets it.
        other = native.eventfd(0, true);
        await s.close();
        assert.equal(native.fdKind(other), 'eventfd', 'a second close() left the fd that reused the number alone');
      } finally {
        if (other >= 0) native.close(other);
        await s.close();
      }
    });
  });

  it('a device model that cannot be made: warned, the front-end dropped, the next one served', async () => {
    await inTemp(async (dir) => {
      const socketPath = path.join(dir, 's.sock');
      const warnings: string[] = [];
      const events: string[] = [];
      let n = 0;
      const s = serveDevice({
        socketPath,
        createDevice: () => {
          if (++n === 1) throw new Error('no device today');
          return new VirtioTestDevice();
        },
        warn: (l) => warnings.push(l),
        info: (l) => events.push(l),
      });
      try {
        const fe = VhostUserFrontend.connect(socketPath);
        await assert.rejects(fe.getFeatures());
        await waitFor(() => fe.isClosed, 'the refused front-end to be closed');
        fe.close();
        assert.deepEqual(warnings, ['vhost-user: cannot serve front-end 1: no device today']);
        assert.equal(s.session, null);
        await s.idle();
        await expectServes(socketPath);
        await s.idle();
        assert.equal(s.connections, 2);
        assert.deepEqual(events.slice(0, 2), ['front-end 1 connected', 'front-end 2 connected']);
      } finally {
        await s.close();
      }
    });
  });

  it('warnings go to console.warn by default', async (t) => {
    const warned = t.mock.method(console, 'warn', () => {});
    await inTemp(async (dir) => {
      const socketPath = path.join(dir, 's.sock');
      const s = serveDevice({
        socketPath,
        createDevice: () => {
          throw new Error('nope');
        },
      });
      try {
        const fe = VhostUserFrontend.connect(socketPath);
        await waitFor(() => warned.mock.callCount() > 0, 'a warning');
        fe.close();
        assert.deepEqual(warned.mock.calls[0]!.arguments, ['vhost-user: cannot serve front-end 1: nope']);
      } finally {
        await s.close();
      }
    });
  });

  it('session options: packedRing offered, maxMemSlots answered, trace lines, log lines, requireSealedMemory', async () => {
    await inTemp(async (dir) => {
      const features = async (opts: Partial<ServeDeviceOptions>): Promise<{ features: bigint; slots: number }> => {
        const socketPath = path.join(dir, `o${Math.random().toString(36).slice(2)}.sock`);
        const s = serveDevice({ ...quiet, socketPath, ...opts });
        const fe = VhostUserFrontend.connect(socketPath);
        try {
          const f = await fe.getFeatures();
          await fe.setProtocolFeatures(OFFERED_PROTOCOL_FEATURES);
          return { features: f, slots: await fe.getMaxMemSlots() };
        } finally {
          fe.close();
          await s.idle();
          await s.close();
        }
      };
      const plain = await features({});
      assert.equal(plain.features & bit(FeatureBit.RING_PACKED), 0n);
      assert.equal(plain.slots, DEFAULT_MAX_MEM_SLOTS);
      const packed = await features({ packedRing: true, maxMemSlots: 3 });
      assert.equal(packed.features & bit(FeatureBit.RING_PACKED), bit(FeatureBit.RING_PACKED));
      assert.equal(packed.slots, 3);
      assert.equal((await features({ packedRing: false })).features & bit(FeatureBit.RING_PACKED), 0n);

      const socketPath = path.join(dir, 't.sock');
      const trace: string[] = [];
      const log: string[] = [];
      const s = serveDevice({ ...quiet, socketPath, trace: (l) => trace.push(l), log: (l) => log.push(l) });
      try {
        await expectServes(socketPath);
        await s.idle();
      } finally {
        await s.close();
      }
      assert.ok(trace.some((l) => l.startsWith('SET_OWNER')), trace.join('\n'));
      assert.ok(log.some((l) => /get type \[ 10 \]/.test(l)), log.join('\n'));

      const sealedPath = path.join(dir, 'sealed.sock');
      const warnings: string[] = [];
      const s2 = serveDevice({ ...quiet, socketPath: sealedPath, requireSealedMemory: true, warn: (l) => warnings.push(l) });
      try {
        await assert.rejects(VirtioTestClient.connect({ socketPath: sealedPath }));
        await s2.idle();
        assert.match(warnings.join('\n'), /seal/i);
      } finally {
        await s2.close();
      }
    });
  });
});

describe('BackendChannel (BACKEND_REQ)', () => {
  const message = encodeMessage(BackendRequest.CONFIG_CHANGE_MSG, HeaderFlag.VERSION);

  it('sends CONFIG_CHANGE_MSG on a socket (non-blocking), and nothing once closed', () => {
    const [mine, theirs] = native.socketPair();
    const warnings: string[] = [];
    const ch = new BackendChannel(mine, (l) => warnings.push(l));
    try {
      assert.equal(native.isNonblocking(mine), true);
      assert.equal(ch.configChanged(), true);
      assert.equal(ch.configChanged(), true);
      const buf = new Uint8Array(64);
      native.setNonblocking(theirs, true);
      const got = native.recvMsg(theirs, buf, 0)!;
      assert.deepEqual(buf.subarray(0, got.bytes), new Uint8Array([...message, ...message]));
      ch.close();
      assert.throws(() => native.fdKind(mine), { code: 'EBADF' }, 'closed');
      assert.equal(ch.configChanged(), false);
      assert.deepEqual(warnings, [], 'a closed channel sends nothing and says nothing');
      // close() twice does not close an fd that now has the same number.
      const other = native.eventfd(0, true);
      try {
        ch.close();
        assert.equal(native.fdKind(other), 'eventfd');
      } finally {
        native.close(other);
      }
    } finally {
      native.close(theirs);
    }
  });

  it('writes to an fd that is not a socket (a file)', async () => {
    await inTemp((dir) => {
      const file = path.join(dir, 'channel');
      const fd = openSync(file, 'w');
      const warnings: string[] = [];
      const ch = new BackendChannel(fd, (l) => warnings.push(l));
      assert.equal(ch.configChanged(), true);
      ch.close();
      assert.deepEqual(new Uint8Array(readFileSync(file)), message);
      assert.deepEqual(warnings, []);
    });
  });

  it('a peer that is gone: warned, then closed (no further warnings)', () => {
    const [mine, theirs] = native.socketPair();
    native.close(theirs);
    const warnings: string[] = [];
    const ch = new BackendChannel(mine, (l) => warnings.push(l));
    assert.equal(ch.configChanged(), false);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^backend channel: CONFIG_CHANGE_MSG not sent: sendmsg: Broken pipe$/);
    assert.throws(() => native.fdKind(mine), { code: 'EBADF' }, 'closed after a real error');
    assert.equal(ch.configChanged(), false);
    assert.equal(warnings.length, 1);
  });

  it('a full channel (EAGAIN): warned, kept open, sends again once read', () => {
    const [mine, theirs] = native.socketPair();
    const warnings: string[] = [];
    const ch = new BackendChannel(mine, (l) => warnings.push(l));
    try {
      const chunk = new Uint8Array(65536);
      let sent = 0;
      for (;;) {
        try {
          const n = native.sendMsg(mine, chunk, []);
          sent += n;
          if (n < chunk.length) break;
        } catch (e) {
          assert.equal((e as { code?: string }).code, 'EAGAIN');
          break;
        }
      }
      // Fill the last bytes one at a time until even 1 byte does not fit.
      for (;;) {
        try {
          if (native.sendMsg(mine, new Uint8Array(1), []) === 0) break;
          sent++;
        } catch {
          break;
        }
      }
      assert.equal(ch.configChanged(), false);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /^backend channel: CONFIG_CHANGE_MSG not sent: sendmsg: Resource temporarily unavailable$/);
      assert.equal(native.fdKind(mine), 'socket', 'still open after EAGAIN');
      // Drain the peer, then it goes through.
      native.setNonblocking(theirs, true);
      const buf = new Uint8Array(1 << 20);
      let read = 0;
      while (read < sent) {
        const r = native.recvMsg(theirs, buf, 0);
        if (r === null) break;
        read += r.bytes;
      }
      assert.equal(read, sent);
      assert.equal(ch.configChanged(), true);
      const r = native.recvMsg(theirs, buf, 0)!;
      assert.deepEqual(buf.subarray(0, r.bytes), message);
    } finally {
      ch.close();
      native.close(theirs);
    }
  });
});

