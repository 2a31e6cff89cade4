/**
 * Descriptor-chain violations served over vhost-user (the same DeviceQueue code as every
 * host): for each ring rule a malformed chain is made available in the TypeScript front-end's
 * memfd RAM after a valid one, and the back-end must
 *   - answer the valid chain and then stop the queue (a later kick serves nothing),
 *   - set NEEDS_RESET (GET_STATUS shows it), signal the vring's error eventfd and send
 *     BACKEND_CONFIG_CHANGE_MSG, and log the rule with its spec section,
 *   - write nothing but the valid chain's writable bytes and the used ring (memory canary
 *     over both RAM regions),
 * and a reset with re-negotiation serves again.
 *
 * Then the fds a ring signals through (SET_VRING_KICK / CALL / ERR): each kind of fd is sent
 * over a real connection and is taken or refused with its own words (vring.ts
 * notificationFdProblem, describeFd); the Vring's state flags; an error fd that cannot be
 * written when a device error comes.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE, answer, decodeResponse, encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { encodeMessage } from '../../src/vhost-user/codec.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { native } from '../../src/vhost-user/native/index.js';
import { decodeU64, encodeU64 } from '../../src/vhost-user/payloads.js';
import { HeaderFlag, ProtocolFeature, Request, VRING_INVALID_FD, pbit, requestName } from '../../src/vhost-user/protocol.js';
import { Vring, describeFd, notificationFdProblem } from '../../src/vhost-user/vring.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { DescFlags, Status } from '../../src/virtio/constants.js';
import { availRingBytes, usedRingBytes } from '../../src/virtio/split-ring.js';
import { leakedFds, openFds, settle, startServer, tempDir, waitFor, type TestServer } from './helpers.js';

const SIZE = 16;
const { NEXT, WRITE, INDIRECT } = DescFlags;
/** Region 1 of the client's RAM starts at this GPA (4 MiB); our buffers are 2 MiB into it. */
const R1 = 0x4000_0000;
const BUF = R1 + 0x20_0000;

interface Ring {
  desc: number;
  avail: number;
  used: number;
}

/** Writes descriptors and the avail ring straight into the front-end's RAM. */
class RawDriver {
  readonly ring: Ring;
  /** Byte ranges [gpa, gpa + len) the device may write (writable parts of valid chains). */
  readonly writable: [number, number][] = [];
  private availIdx: number;
  private next = BUF;
  constructor(private readonly c: VirtioTestClient) {
    this.ring = (c as unknown as { ring: Ring }).ring;
    this.availIdx = c.availIdx();
  }
  private view(gpa: number, len: number): DataView {
    const b = this.c.ram.memory.slice(gpa, len);
    return new DataView(b.buffer, b.byteOffset, len);
  }
  buf(len: number): number {
    const a = this.next;
    this.next += Math.ceil(len / 64) * 64 + 64;
    return a;
  }
  desc(i: number, addr: number, len: number, flags: number, next = 0, table = this.ring.desc): void {
    const v = this.view(table + 16 * i, 16);
    v.setBigUint64(0, BigInt(addr), true);
    v.setUint32(8, len, true);
    v.setUint16(12, flags, true);
    v.setUint16(14, next, true);
  }
  /** A valid virtio-test request at descriptors i, i+1; returns i. */
  valid(i: number, n: number): { head: number; response: number } {
    const req = this.buf(REQUEST_SIZE);
    const resp = this.buf(RESPONSE_SIZE);
    encodeRequest(requestFor(n), this.c.ram.memory.slice(req, REQUEST_SIZE));
    this.desc(i, req, REQUEST_SIZE, NEXT, i + 1);
    this.desc(i + 1, resp, RESPONSE_SIZE, WRITE);
    this.writable.push([resp, resp + RESPONSE_SIZE]);
    return { head: i, response: resp };
  }
  push(head: number): void {
    this.view(this.ring.avail + 4 + 2 * (this.availIdx % SIZE), 2).setUint16(0, head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.publish(this.availIdx);
  }
  publish(idx: number): void {
    this.view(this.ring.avail + 2, 2).setUint16(0, idx, true);
  }
  get idx(): number {
    return this.availIdx;
  }
  kick(): void {
    native.eventfdWrite(this.c.kickEventFd!, 1);
  }
}

/** A copy of every RAM region's bytes. */
const snapshot = (c: VirtioTestClient): Uint8Array[] => c.ram.regions.map((r) => new Uint8Array(r.mapping).slice());

/** Offsets (per region) that changed and are not inside `allowed` GPA ranges. */
function unexpectedWrites(c: VirtioTestClient, before: Uint8Array[], allowed: [number, number][]): string[] {
  const out: string[] = [];
  c.ram.regions.forEach((r, i) => {
    const now = new Uint8Array(r.mapping);
    const lead = now.length - r.size;
    for (let k = 0; k < now.length; k++) {
      if (now[k] === before[i]![k]) continue;
      const gpa = r.guestAddr + k - lead;
      if (!allowed.some(([a, b]) => gpa >= a && gpa < b)) out.push(`0x${gpa.toString(16)}: ${before[i]![k]} → ${now[k]}`);
      if (out.length > 8) return;
    }
  });
  return out;
}

interface Case {
  name: string;
  code: string;
  /** The section the log line must cite (null: a device-model rule without one). */
  section: string | null;
  indirect?: boolean;
  /** Makes the malformed chain available after the valid one (descriptors 0 and 1 are the valid chain). */
  build(d: RawDriver): void;
  /** The valid chain is not served (the error comes before any chain is taken). */
  noValid?: boolean;
}

const cases: Case[] = [
  { name: 'head ≥ queue size', code: 'DESC_INDEX_OUT_OF_RANGE', section: '§2.7.6', build: (d) => d.push(SIZE) },
  {
    name: 'next ≥ queue size',
    code: 'DESC_INDEX_OUT_OF_RANGE',
    section: '§2.7.5',
    build: (d) => {
      d.desc(2, d.buf(48), 48, NEXT, 99);
      d.push(2);
    },
  },
  {
    name: 'a loop through two descriptors',
    code: 'DESC_LOOP',
    section: '§2.7.5.3.1',
    build: (d) => {
      const b = d.buf(64);
      d.desc(2, b, 48, NEXT, 3);
      d.desc(3, b, 16, NEXT, 2);
      d.push(2);
    },
  },
  {
    name: 'a buffer outside guest memory (between the regions)',
    code: 'MEM_OUT_OF_RANGE',
    section: '§2.7.5',
    build: (d) => {
      d.desc(2, 0x2000_0000, 48, NEXT, 3);
      d.desc(3, d.buf(12), 12, WRITE);
      d.push(2);
    },
  },
  {
    name: 'a writable buffer straddling the end of a region',
    code: 'MEM_OUT_OF_RANGE',
    section: '§2.7.5',
    build: (d) => {
      d.desc(2, d.buf(48), 48, NEXT, 3);
      d.desc(3, 0x10_0000 - 8, 12, WRITE);
      d.push(2);
    },
  },
  {
    name: 'a zero-length descriptor',
    code: 'DESC_ZERO_LENGTH',
    section: '§2.7.5',
    build: (d) => {
      d.desc(2, d.buf(48), 0, 0);
      d.push(2);
    },
  },
  {
    name: 'readable after writable',
    code: 'DESC_READABLE_AFTER_WRITABLE',
    section: '§2.7.4.2',
    build: (d) => {
      d.desc(2, d.buf(12), 12, WRITE | NEXT, 3);
      d.desc(3, d.buf(48), 48, 0);
      d.push(2);
    },
  },
  {
    name: 'INDIRECT with NEXT',
    code: 'INDIRECT_WITH_NEXT',
    section: '§2.7.5.3.1',
    build: (d) => {
      d.desc(2, d.buf(32), 32, INDIRECT | NEXT, 3);
      d.push(2);
    },
  },
  {
    name: 'an indirect table whose length is not a multiple of 16',
    code: 'INDIRECT_BAD_LENGTH',
    section: '§2.7.5.3',
    build: (d) => {
      d.desc(2, d.buf(32), 17, INDIRECT);
      d.push(2);
    },
  },
  {
    name: 'a nested indirect table',
    code: 'INDIRECT_NESTED',
    section: '§2.7.5.3.1',
    build: (d) => {
      const table = d.buf(32);
      d.desc(0, d.buf(16), 16, INDIRECT, 0, table);
      d.desc(2, table, 16, INDIRECT);
      d.push(2);
    },
  },
  {
    name: 'a next past the end of an indirect table',
    code: 'DESC_INDEX_OUT_OF_RANGE',
    section: '§2.7.5.3',
    build: (d) => {
      const table = d.buf(32);
      d.desc(0, d.buf(48), 48, NEXT, 5, table);
      d.desc(1, d.buf(12), 12, WRITE, 0, table);
      d.desc(2, table, 32, INDIRECT);
      d.push(2);
    },
  },
  {
    name: 'INDIRECT without the feature',
    code: 'INDIRECT_NOT_NEGOTIATED',
    section: '§2.7.5.3.1',
    indirect: false,
    build: (d) => {
      d.desc(2, d.buf(32), 32, INDIRECT);
      d.push(2);
    },
  },
  {
    name: 'avail.idx moved by more than the queue size',
    code: 'AVAIL_IDX_JUMP',
    section: '§2.7.6',
    noValid: true,
    build: (d) => d.publish((d.idx + SIZE + 1) & 0xffff),
  },
  {
    name: 'a request too short for the device (a device-model rule)',
    code: 'DEVICE_REQUEST_INVALID',
    section: null,
    build: (d) => {
      d.desc(2, d.buf(48), 10, NEXT, 3);
      d.desc(3, d.buf(12), 12, WRITE);
      d.push(2);
    },
  },
];

describe('vhost-user: descriptor-chain violations → NEEDS_RESET, err fd, nothing written outside writable buffers', () => {
  let srv: TestServer;
  before(() => {
    srv = startServer();
  });
  after(async () => {
    await srv.close();
  });

  for (const k of cases) {
    it(`${k.name}: ${k.code}`, async () => {
      const c = await VirtioTestClient.connect({ socketPath: srv.socketPath, queueSize: SIZE, indirect: k.indirect ?? true });
      try {
        assert.deepEqual(await c.request(1), answer(requestFor(1)));
        const device = srv.devices[srv.devices.length - 1] as VirtioTestDevice;
        // From here the test is the driver: the client must not touch its rings (no used-buffer handling).
        const internals = c as unknown as { callWatch: { stop(): void } | null };
        internals.callWatch?.stop();
        internals.callWatch = null;
        const d = new RawDriver(c);
        // Canary: every byte of RAM outside the rings gets a pattern.
        c.ram.regions.forEach((r, i) => {
          const bytes = new Uint8Array(r.mapping);
          bytes.fill(i === 0 ? 0x5a : 0xa5, i === 0 ? 0x1000 : 0);
        });
        const valid = k.noValid ? null : d.valid(0, 7);
        if (valid) d.push(valid.head);
        k.build(d);
        const usedBefore = c.usedIdx();
        const servedBefore = device.served;
        const ram = snapshot(c);
        const warningsBefore = srv.warnings.length;
        d.kick();
        await waitFor(() => c.errSignals > 0, 'the error eventfd');
        const status = await c.status();
        assert.ok(status & Status.NEEDS_RESET, `GET_STATUS ${status} has NEEDS_RESET`);
        await waitFor(() => c.frontend.configChanges > 0, 'BACKEND_CONFIG_CHANGE_MSG');
        const warnings = srv.warnings.slice(warningsBefore);
        const rule = new RegExp(`device error on queue 0: .*\\(${k.code}${k.section ? `, virtio 1\\.2 ${k.section.replace(/\./g, '\\.')}` : ''}\\); device needs reset`);
        assert.ok(warnings.some((w) => rule.test(w)), `a log line naming the rule ${rule}:\n${warnings.join('\n')}`);
        // The valid chain before the malformed one was answered.
        if (valid) {
          assert.deepEqual(decodeResponse(c.ram.memory.slice(valid.response, RESPONSE_SIZE)), answer(requestFor(7)));
          assert.equal(device.served, servedBefore + 1);
          // Its used element is published before the device error stops the queue.
          assert.equal(c.usedIdx(), (usedBefore + 1) & 0xffff);
        } else {
          assert.equal(c.usedIdx(), usedBefore);
        }
        // Nothing written outside the valid chain's writable bytes and the used ring.
        const allowed: [number, number][] = [...d.writable, [d.ring.used, d.ring.used + usedRingBytes(SIZE)]];
        assert.deepEqual(unexpectedWrites(c, ram, allowed), []);
        assert.ok(d.ring.avail + availRingBytes(SIZE) <= d.ring.used || d.ring.avail >= d.ring.used + usedRingBytes(SIZE));
        // The queue is stopped: another valid request and a kick change nothing.
        const usedAfter = c.usedIdx();
        const more = d.valid(8, 9);
        d.push(more.head);
        d.kick();
        await settle();
        assert.equal(c.usedIdx(), usedAfter, 'a stopped queue serves nothing');
        assert.equal(device.served, servedBefore + (valid ? 1 : 0));
        // Reset and re-negotiation recover.
        await c.reset();
        assert.equal(await c.status(), Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
        assert.deepEqual(await c.request(42), answer(requestFor(42)));
      } finally {
        c.close();
        await srv.server.idle();
      }
    });
  }
});

/** open(2)'s O_PATH on Linux (not in fs.constants): an fd for the inode itself, which fstat can read. */
const O_PATH = 0o10000000;

/** An fd opened for one case, what describeFd and a strict notificationFdProblem must say about it, and how to let go of it. */
interface OpenedFd {
  fd: number;
  described: string;
  /** null: taken. */
  problem: string | null;
  close(): void;
}

const own = (fd: number, described: string, problem: string | null): OpenedFd => ({ fd, described, problem, close: () => closeSync(fd) });

/** A block device node in /dev (not a symlink to one), or null. */
function devBlockDevice(): string | null {
  for (const name of readdirSync('/dev').sort()) {
    try {
      if (lstatSync(`/dev/${name}`).isBlockDevice()) return `/dev/${name}`;
    } catch {
      // gone meanwhile
    }
  }
  return null;
}
const DEV_BLOCK = devBlockDevice();
const IS_ROOT = process.getuid?.() === 0;

/**
 * An open directory whose absolute path is longer than PATH_MAX (4096), so that readlink of
 * /proc/self/fd/N fails (ENAMETOOLONG) while fstat works: made under 4096 and then lengthened
 * by renaming its first component. close() renames it back and deletes it.
 */
function deepDirectory(dir: string): OpenedFd {
  const root = path.join(dir, 'deep');
  const short = path.join(root, 'a');
  let p = short;
  while (p.length < 4000) p = path.join(p, 'd'.repeat(Math.min(200, 4000 - p.length)));
  mkdirSync(p, { recursive: true });
  const fd = openSync(p, 'r');
  const long = path.join(root, 'a'.repeat(250));
  renameSync(short, long);
  const close = (): void => {
    closeSync(fd);
    renameSync(long, short);
    rmSync(root, { recursive: true, force: true });
  };
  try {
    assert.throws(() => readlinkSync(`/proc/self/fd/${fd}`), { code: 'ENAMETOOLONG' }, 'the kernel cannot name the directory');
  } catch (e) {
    close();
    throw e;
  }
  return { fd, described: 'a directory (?)', problem: 'a directory (?)', close };
}

/** Every kind of fd the classification tells apart (vring.ts notificationFdProblem, describeFd). */
const fdKinds: { name: string; lenientTakes?: boolean; skip?: string; open(dir: string): OpenedFd }[] = [
  { name: 'an eventfd', open: () => own(native.eventfd(0, false), 'an eventfd', null) },
  {
    name: 'a connected socket',
    open: () => {
      const [fd, peer] = native.socketPair();
      return { fd, described: 'a socket', problem: null, close: () => [fd, peer].forEach((f) => native.close(f)) };
    },
  },
  { name: 'a listening socket', open: (dir) => own(native.socketListen(path.join(dir, 'listening.sock'), 1), 'a socket', 'a listening socket') },
  {
    // fstat says socket, but no socket call works on an O_PATH fd.
    name: 'an O_PATH fd of a bound socket',
    open: (dir) => {
      const bound = native.socketListen(path.join(dir, 'bound.sock'), 1);
      const fd = openSync(path.join(dir, 'bound.sock'), O_PATH);
      const problem = 'a socket that cannot be inspected (getsockopt(SO_DOMAIN): Bad file descriptor)';
      return { fd, described: 'a socket', problem, close: () => [fd, bound].forEach((f) => native.close(f)) };
    },
  },
  {
    name: 'a pipe (FIFO)',
    open: (dir) => {
      execFileSync('mkfifo', [path.join(dir, 'fifo')]);
      return own(openSync(path.join(dir, 'fifo'), 'r+'), 'a pipe', null);
    },
  },
  {
    name: 'a memfd',
    lenientTakes: true,
    open: () => {
      const fd = native.memfdCreate('vhost-user-fd-kind', 4096);
      const described = `a memfd (${readlinkSync(`/proc/self/fd/${fd}`)})`;
      return own(fd, described, described);
    },
  },
  {
    name: 'a regular file',
    open: (dir) => {
      const file = path.join(dir, 'file');
      writeFileSync(file, 'x');
      return own(openSync(file, 'r'), `a regular file (${file})`, `a regular file (${file})`);
    },
  },
  { name: 'a directory', open: (dir) => own(openSync(dir, 'r'), `a directory (${dir})`, `a directory (${dir})`) },
  { name: 'a directory whose path is too long for /proc/self/fd to name', open: deepDirectory },
  { name: 'a character device', open: () => own(openSync('/dev/null', 'r'), 'a character device (/dev/null)', 'a character device (/dev/null)') },
  {
    name: 'a block device',
    ...(DEV_BLOCK === null && !IS_ROOT ? { skip: 'no block device node in /dev, and not root to make one (mknod)' } : {}),
    open: (dir) => {
      let node = DEV_BLOCK;
      if (node === null) {
        node = path.join(dir, 'loop');
        execFileSync('mknod', [node, 'b', '7', '0']);
      }
      // O_PATH: the device itself is not opened (no driver, no permission needed); fstat sees a block device.
      return own(openSync(node, O_PATH), `a block device (${node})`, `a block device (${node})`);
    },
  },
  {
    name: 'another kind of anonymous fd (libuv\'s epoll fd; the back-end gets a copy)',
    open: () => {
      const epoll = [...openFds()].find(([, t]) => t === 'anon_inode:[eventpoll]');
      assert.ok(epoll, 'this process has an epoll fd');
      return { fd: epoll[0], described: 'anon_inode:[eventpoll]', problem: 'anon_inode:[eventpoll]', close: () => {} };
    },
  },
];

describe('vhost-user: what a kick, call or err fd may be (an eventfd, a pipe, a socket; nothing else)', () => {
  let srv: TestServer;
  let tmp: ReturnType<typeof tempDir>;
  let fdsBefore: Map<number, string>;
  /** A raw front-end with REPLY_ACK (refusals come back as non-zero acks) that has sent SET_OWNER. */
  let fe: VhostUserFrontend;
  const NR = HeaderFlag.VERSION | HeaderFlag.NEED_REPLY;
  const ack = async (request: number, payload: Uint8Array, sent: number[] = []): Promise<bigint> => {
    const reply = fe.nextReply(request);
    fe.sendRaw(encodeMessage(request, NR, payload), sent);
    const m = await reply;
    assert.equal(m.size, 8);
    return decodeU64(m.payload);
  };
  const vring = () => srv.server.session!.vrings[0]!;
  const holds: Record<number, () => boolean> = {
    [Request.SET_VRING_KICK]: () => vring().hasKickFd,
    [Request.SET_VRING_CALL]: () => vring().hasCallFd,
    [Request.SET_VRING_ERR]: () => vring().hasErrFd,
  };

  before(async () => {
    srv = startServer();
    // One whole session first, so that lazily created process-wide fds exist before counting.
    const c = await VirtioTestClient.connect({ socketPath: srv.socketPath });
    await c.request(1);
    c.close();
    await srv.server.idle();
    tmp = tempDir();
    fdsBefore = openFds();
    fe = VhostUserFrontend.connect(srv.socketPath);
    assert.equal(await ack(Request.SET_PROTOCOL_FEATURES, encodeU64(pbit(ProtocolFeature.REPLY_ACK))), 0n);
    assert.equal(await ack(Request.SET_OWNER, new Uint8Array(0)), 0n);
    assert.equal(srv.server.session!.strict, true);
  });
  after(async () => {
    try {
      fe?.close();
      await srv.server.idle();
      await settle();
      // Every fd sent to the back-end, taken or refused, was closed there.
      assert.deepEqual(leakedFds(fdsBefore), []);
    } finally {
      tmp?.remove();
      await srv.close();
    }
  });

  it('a ring starts stopped and disabled, with no fds', () => {
    const v = vring();
    assert.deepEqual([v.started, v.enabled, v.polling, v.hasKickFd, v.hasCallFd, v.hasErrFd], [false, false, false, false, false, false]);
  });

  for (const kind of fdKinds) {
    it(`${kind.name}: described, and taken or refused as SET_VRING_KICK / CALL / ERR with its words`, { skip: kind.skip ?? false }, async () => {
      const o = kind.open(tmp.dir);
      try {
        assert.equal(describeFd(o.fd), o.described, 'describeFd');
        assert.equal(notificationFdProblem(o.fd, true), o.problem, 'notificationFdProblem, strict');
        // The lenient mode takes a memfd too (a kick memfd is then polled).
        assert.equal(notificationFdProblem(o.fd, false), kind.lenientTakes ? null : o.problem, 'notificationFdProblem, lenient');
        for (const request of [Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR]) {
          const name = requestName(request);
          const from = srv.warnings.length;
          const result = await ack(request, encodeU64(0), [o.fd]);
          const warnings = srv.warnings.slice(from);
          if (o.problem === null) {
            assert.deepEqual([result, warnings], [0n, []], `${name}: taken`);
            assert.equal(holds[request]!(), true, `${name}: the ring holds the fd`);
          } else {
            assert.notEqual(result, 0n, `${name}: refused`);
            assert.deepEqual(warnings, [`vhost-user: ${name} refused: vring 0: the fd is ${o.problem}, not an eventfd (or a pipe)`]);
            assert.equal(holds[request]!(), false, `${name}: the ring holds no fd`);
          }
          // No fd (the invalid-fd flag): taken, and the ring holds none.
          assert.equal(await ack(request, encodeU64(VRING_INVALID_FD)), 0n, `${name} without an fd`);
          assert.equal(holds[request]!(), false, `${name} without an fd: the ring holds none`);
        }
      } finally {
        o.close();
      }
    });
  }

  it('after SET_VRING_KICK without an fd the ring is started and polled (nothing watched), and without SET_VRING_ENABLE still disabled', () => {
    const v = vring();
    assert.deepEqual([v.started, v.enabled, v.polling, v.hasKickFd], [true, false, true, false]);
    assert.ok(!srv.warnings.some((w) => /cannot watch kick fd/.test(w)), 'no fd: nothing to watch, nothing to warn about');
  });

  it('an fd that is not open: "not usable", with the reason', () => {
    const fd = native.eventfd(0, false);
    native.close(fd);
    assert.equal(describeFd(fd), 'not usable (fstat: Bad file descriptor)');
    assert.equal(notificationFdProblem(fd, true), 'not usable (fstat: Bad file descriptor)');
    assert.equal(notificationFdProblem(fd, false), 'not usable (fstat: Bad file descriptor)');
  });

});

describe('vhost-user: an err fd that cannot be written', () => {
  let srv: TestServer;
  before(() => {
    srv = startServer();
  });
  after(async () => {
    await srv.close();
  });

  it('its peer hung up: the device error is reported, NEEDS_RESET is set, and a reset recovers', async () => {
    const c = await VirtioTestClient.connect({ socketPath: srv.socketPath, queueSize: SIZE });
    try {
      assert.deepEqual(await c.request(1), answer(requestFor(1)));
      const [err, peer] = native.socketPair();
      native.close(peer);
      await c.frontend.setVringErr(0, err);
      native.close(err);
      const internals = c as unknown as { callWatch: { stop(): void } | null };
      internals.callWatch?.stop();
      internals.callWatch = null;
      const d = new RawDriver(c);
      const from = srv.warnings.length;
      d.push(SIZE); // a head past the ring: a device error
      d.kick();
      await waitFor(() => srv.warnings.slice(from).some((w) => /writing the error fd failed/.test(w)), 'the failed error-fd write');
      assert.ok((await c.status()) & Status.NEEDS_RESET);
      assert.deepEqual(
        srv.warnings.slice(from).filter((w) => /error fd/.test(w)),
        ['vring 0: writing the error fd failed: write(eventfd): Broken pipe'],
      );
      assert.equal(c.errSignals, 0, 'the replaced error eventfd is not signalled');
      await c.reset();
      assert.deepEqual(await c.request(2), answer(requestFor(2)));
    } finally {
      c.close();
      await srv.server.idle();
    }
  });
});

describe('Vring: its state flags and fds', () => {
  const make = (index = 3) => {
    const kicks: number[] = [];
    const warnings: string[] = [];
    const v = new Vring(index, (i) => kicks.push(i), (l) => warnings.push(l));
    return { v, kicks, warnings };
  };
  const flags = (v: Vring) => ({ started: v.started, enabled: v.enabled, polling: v.polling, kick: v.hasKickFd, call: v.hasCallFd, err: v.hasErrFd });

  it('a new ring: stopped, disabled, not polled, no fds; signalErr says no fd was set', () => {
    const { v, warnings } = make();
    assert.deepEqual(flags(v), { started: false, enabled: false, polling: false, kick: false, call: false, err: false });
    assert.equal(v.hasCall, false);
    assert.equal(v.signalErr(), false);
    v.signalCall(); // nothing to write
    assert.deepEqual(warnings, []);
  });

  it('no kick fd (the invalid-fd flag): nothing to watch, polled while started', () => {
    const { v, warnings } = make();
    v.setKick(null);
    assert.deepEqual(warnings, [], 'no fd: nothing is watched, nothing to warn about');
    assert.equal(v.hasKickFd, false);
    assert.equal(v.polling, false, 'a stopped ring is not polled');
    v.started = true;
    assert.equal(v.polling, true);
    v.started = false;
    assert.equal(v.polling, false);
    v.close();
  });

  it('a watched kick eventfd: not polled (started or not); each kick reaches onKick; dropKick lets go of it', async () => {
    const { v, kicks, warnings } = make(3);
    const fd = native.eventfd(0, false);
    v.setKick(fd);
    try {
      assert.equal(v.hasKickFd, true);
      assert.equal(v.polling, false);
      v.started = true;
      assert.equal(v.polling, false, 'a started ring with a watched kick fd is not polled');
      native.eventfdWrite(fd, 1);
      await waitFor(() => kicks.length === 1, 'the kick');
      assert.deepEqual(kicks, [3]);
      v.dropKick();
      assert.equal(v.hasKickFd, false);
      assert.equal(v.polling, true, 'started without a kick fd: polled');
      assert.throws(() => native.fdKind(fd), { code: 'EBADF' }, 'dropKick closed the fd');
      assert.deepEqual(warnings, []);
    } finally {
      v.close();
    }
  });

  it('a kick fd that cannot be watched (a memfd): held, and the started ring is polled', () => {
    const { v, warnings } = make(1);
    v.setKick(native.memfdCreate('vhost-user-vring-kick', 4096));
    assert.equal(v.hasKickFd, true);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^vring 1: cannot watch kick fd \d+: .*; the ring is polled$/);
    assert.equal(v.polling, false);
    v.started = true;
    assert.equal(v.polling, true);
    v.close();
    assert.equal(v.hasKickFd, false);
  });

  it('call and err fds: held until replaced, written with eventfd semantics; an err fd whose write fails is reported', () => {
    const { v, warnings } = make(2);
    const call = native.eventfd(0, true);
    const err = native.eventfd(0, true);
    v.setCall(native.eventfd(0, false)); // replaced (and closed) below
    v.setCall(call);
    v.setErr(err);
    assert.deepEqual([v.hasCallFd, v.hasCall, v.hasErrFd], [true, true, true]);
    v.signalCall();
    v.signalCall();
    assert.equal(v.signalErr(), true);
    assert.equal(native.eventfdRead(call), 2);
    assert.equal(native.eventfdRead(err), 1);
    assert.deepEqual(warnings, []);
    // An err fd whose peer hung up: the write fails, said once per signal; the fd still counts as set.
    const [hung, peer] = native.socketPair();
    native.close(peer);
    v.setErr(hung);
    assert.throws(() => native.fdKind(err), { code: 'EBADF' }, 'the replaced err fd was closed');
    assert.equal(v.signalErr(), true);
    assert.deepEqual(warnings, ['vring 2: writing the error fd failed: write(eventfd): Broken pipe']);
    v.setCall(null);
    v.setErr(null);
    assert.deepEqual([v.hasCallFd, v.hasCall, v.hasErrFd], [false, false, false]);
    assert.equal(v.signalErr(), false);
    assert.throws(() => native.fdKind(call), { code: 'EBADF' }, 'setCall(null) closed the call fd');
  });

  it('reset: configuration forgotten, every fd closed', () => {
    const { v } = make();
    v.size = 16;
    v.base = 5;
    v.started = true;
    v.enabled = true;
    v.addresses = { desc: 1, avail: 2, used: 3, flags: 0 };
    const [kick, call, err] = [native.eventfd(0, false), native.eventfd(0, false), native.eventfd(0, false)];
    v.setKick(kick);
    v.setCall(call);
    v.setErr(err);
    v.reset();
    assert.deepEqual(flags(v), { started: false, enabled: false, polling: false, kick: false, call: false, err: false });
    assert.deepEqual([v.size, v.base, v.addresses, v.queue], [0, 0, null, null]);
    for (const fd of [kick, call, err]) assert.throws(() => native.fdKind(fd), { code: 'EBADF' }, `fd ${fd} closed`);
  });
});
