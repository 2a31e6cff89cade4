/**
 * A hostile front-end, request by request (complements malformed.test.ts): cut-off headers,
 * memory tables (0 regions, too many, overlapping, empty, past the end of the fd, mmap
 * failure, out of slots), vring indices out of range with fds attached, ring sizes, ring
 * addresses not inside one region, kick/call fds that are not eventfds, requests before
 * SET_OWNER and before SET_FEATURES. The back-end is strict (BackendSession.strictByDefault):
 * with REPLY_ACK negotiated (as these front-ends do) a refusal is a non-zero ack; a request
 * that always replies (GET_VRING_BASE, GET_INFLIGHT_FD) is refused by closing the connection,
 * never by a reply of the wrong size. Every fd sent is closed (counted in /proc/self/fd), no
 * mapping is left, and the back-end goes on serving. control-plane.test.ts covers the
 * refusals without REPLY_ACK (the connection is closed).
 */
import assert from 'node:assert/strict';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { BackendSession, describeRequest } from '../../src/vhost-user/backend-session.js';
import { encodeMessage } from '../../src/vhost-user/codec.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { native } from '../../src/vhost-user/native/index.js';
import {
  decodeU64,
  encodeInflight,
  encodeMemTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddress,
  encodeVringState,
  type MemoryRegionDescription,
} from '../../src/vhost-user/payloads.js';
import { HeaderFlag, ProtocolFeature, Request, VHOST_USER_F_PROTOCOL_FEATURES, VRING_INVALID_FD, pbit } from '../../src/vhost-user/protocol.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { expectRefusedByClosing, expectServesNext, leakCheckedServer, openFds, settle, tempDir, waitFor } from './helpers.js';

const NR = HeaderFlag.VERSION | HeaderFlag.NEED_REPLY;
const V = HeaderFlag.VERSION;
/** What the raw front-ends here negotiate: refusals as non-zero acks, ADD/REM_MEM_REG. */
const PROTOCOL = pbit(ProtocolFeature.REPLY_ACK) | pbit(ProtocolFeature.CONFIGURE_MEM_SLOTS);

/** Sends a raw request with NEED_REPLY and returns the ack value (0 = success). */
async function ack(fe: VhostUserFrontend, request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): Promise<bigint> {
  const reply = fe.nextReply(request);
  fe.sendRaw(encodeMessage(request, NR, payload), fds);
  const m = await reply;
  assert.equal(m.size, 8, `ack of ${request}`);
  return decodeU64(m.payload);
}

const memfd = (size: number): number => native.memfdCreate('vhost-user-hostile', size);
const region = (guestAddr: number, size: number, userAddr: number, mmapOffset = 0): MemoryRegionDescription => ({
  guestAddr: BigInt(guestAddr),
  size: BigInt(size),
  userAddr: BigInt(userAddr),
  mmapOffset: BigInt(mmapOffset),
});

describe('vhost-user back-end: a hostile front-end', () => {
  // Rings up to the spec's largest (the device's own maximum bounds SET_VRING_NUM too). Across
  // every test of the block: no fd sent to the back-end stays open, no mapping is left.
  const fx = leakCheckedServer({ maxMemSlots: 2, createDevice: () => new VirtioTestDevice({ queueSize: 32768 }) });

  /** A raw connection that has negotiated PROTOCOL (REPLY_ACK among them) and sent SET_OWNER. */
  async function owned(): Promise<VhostUserFrontend> {
    const fe = VhostUserFrontend.connect(fx.srv.socketPath);
    assert.equal(await ack(fe, Request.SET_PROTOCOL_FEATURES, encodeU64(PROTOCOL)), 0n);
    assert.equal(await ack(fe, Request.SET_OWNER), 0n);
    return fe;
  }
  async function done(fe: VhostUserFrontend): Promise<void> {
    fe.close();
    await fx.srv.server.idle();
  }
  const warned = (re: RegExp): void => assert.ok(fx.srv.warnings.some((w) => re.test(w)), `a warning matching ${re}:\n${fx.srv.warnings.slice(-8).join('\n')}`);

  it('a header cut short (7 of 12 bytes, with an fd) and then a close: cleaned up, next front-end served', async () => {
    const fe = VhostUserFrontend.connect(fx.srv.socketPath);
    const efd = native.eventfd(0, false);
    fe.sendRaw(encodeMessage(Request.SET_VRING_CALL, V, encodeU64(0)).subarray(0, 7), [efd]);
    native.close(efd);
    await settle();
    fe.close();
    await waitFor(() => fx.srv.events.some((e) => /in the middle of a message/.test(e)), 'the disconnect');
    await expectServesNext(fx.srv);
  });

  it('requests before SET_OWNER: queries are answered, configuration is refused and its fds closed', async () => {
    const fe = VhostUserFrontend.connect(fx.srv.socketPath);
    try {
      // What QEMU sends before SET_OWNER works.
      assert.ok(await fe.getFeatures());
      assert.ok(await fe.getProtocolFeatures());
      assert.equal(await ack(fe, Request.SET_PROTOCOL_FEATURES, encodeU64(PROTOCOL)), 0n);
      assert.equal(await fe.getQueueNum(), 1);
      // Configuration does not.
      const features = bit(FeatureBit.VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
      assert.notEqual(await ack(fe, Request.SET_FEATURES, encodeU64(features)), 0n);
      const ram = memfd(0x10000);
      assert.notEqual(await ack(fe, Request.SET_MEM_TABLE, encodeMemTable([region(0, 0x10000, 0x10000)]), [ram]), 0n);
      native.close(ram);
      const kick = native.eventfd(0, false);
      assert.notEqual(await ack(fe, Request.SET_VRING_KICK, encodeU64(0), [kick]), 0n);
      native.close(kick);
      assert.notEqual(await ack(fe, Request.SET_VRING_NUM, encodeVringState({ index: 0, num: 16 })), 0n);
      warned(/SET_FEATURES refused: sent before SET_OWNER/);
      warned(/SET_VRING_KICK refused: sent before SET_OWNER/);
      const session = fx.srv.server.session!;
      assert.equal(session.mapped.count, 0);
      assert.equal(session.vrings[0]!.size, 0);
      assert.equal(session.vrings[0]!.hasKickFd, false);
      // After SET_OWNER the same requests are accepted.
      assert.equal(await ack(fe, Request.SET_OWNER), 0n);
      assert.equal(await ack(fe, Request.SET_FEATURES, encodeU64(features)), 0n);
      assert.equal(await ack(fe, Request.SET_VRING_NUM, encodeVringState({ index: 0, num: 16 })), 0n);
    } finally {
      await done(fe);
    }
    // Requests that always reply cannot carry a refusal in an ack: the connection is closed.
    const early = VhostUserFrontend.connect(fx.srv.socketPath);
    try {
      assert.equal(await ack(early, Request.SET_PROTOCOL_FEATURES, encodeU64(PROTOCOL | pbit(ProtocolFeature.INFLIGHT_SHMFD))), 0n);
      await expectRefusedByClosing(fx.srv, early, Request.GET_VRING_BASE, encodeVringState({ index: 0, num: 0 }), /sent before SET_OWNER/);
    } finally {
      await done(early);
    }
    const inflight = VhostUserFrontend.connect(fx.srv.socketPath);
    try {
      assert.equal(await ack(inflight, Request.SET_PROTOCOL_FEATURES, encodeU64(PROTOCOL | pbit(ProtocolFeature.INFLIGHT_SHMFD))), 0n);
      const description = encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 16 });
      await expectRefusedByClosing(fx.srv, inflight, Request.GET_INFLIGHT_FD, description, /sent before SET_OWNER/);
    } finally {
      await done(inflight);
    }
  });

  it('requests before SET_FEATURES: a configured, kicked ring is not touched until features are negotiated', async () => {
    const c = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: 16 });
    try {
      const device = fx.srv.devices[fx.srv.devices.length - 1] as VirtioTestDevice;
      assert.deepEqual(await c.request(1), answer(requestFor(1)));
      const fe = c.frontend;
      // Device reset: the features are forgotten; the ring keeps its vhost-user configuration.
      await fe.setStatus(0);
      const waiting = c.request(2);
      await settle();
      assert.equal(device.served, 0, 'nothing consumed without features');
      // FEATURES_OK and DRIVER_OK without SET_FEATURES: refused (no VERSION_1 was accepted).
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER);
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
      assert.equal(await fe.getStatus(), Status.ACKNOWLEDGE | Status.DRIVER, 'FEATURES_OK stays clear');
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.DRIVER_OK);
      await settle();
      assert.equal(device.served, 0, 'still nothing consumed');
      warned(/did not accept VIRTIO_F_VERSION_1/);
      // A proper negotiation serves what waited.
      await fe.setFeatures(c.features | bit(VHOST_USER_F_PROTOCOL_FEATURES));
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
      assert.deepEqual(await waiting, answer(requestFor(2)));
      assert.equal(device.served, 1);
    } finally {
      c.close();
      await fx.srv.server.idle();
    }
  });

  it('memory tables: 0 regions, 9 regions, overlapping, empty, past the fd, not mappable: refused, fds closed, nothing mapped', async () => {
    const tmp = tempDir();
    const fe = await owned();
    try {
      const table = (regions: MemoryRegionDescription[], fds: number[]) => ack(fe, Request.SET_MEM_TABLE, encodeMemTable(regions), fds);
      const session = fx.srv.server.session!;
      // 0 regions.
      assert.notEqual(await table([], []), 0n);
      warned(/SET_MEM_TABLE: 0 regions, expected 1..8/);
      // 9 regions (8 fds: the most a message carries).
      const eight = Array.from({ length: 8 }, () => memfd(0x1000));
      const nine = Array.from({ length: 9 }, (_, i) => region(i * 0x1000, 0x1000, 0x10_0000 + i * 0x1000));
      assert.notEqual(await table(nine, eight), 0n);
      warned(/9 regions, expected 1..8/);
      eight.forEach((fd) => native.close(fd));
      // Overlapping guest addresses, overlapping user addresses.
      for (const [second, why] of [
        [region(0x8000, 0x10000, 0x100_0000), /overlaps the region at gpa 0x0/],
        [region(0x10000, 0x10000, 0x8000), /user addresses overlap the region at 0x0/],
      ] as const) {
        const a = memfd(0x10000);
        const b = memfd(0x10000);
        assert.notEqual(await table([region(0, 0x10000, 0), second], [a, b]), 0n);
        warned(why);
        native.close(a);
        native.close(b);
        assert.equal(session.mapped.count, 0, 'a refused table leaves nothing mapped');
      }
      // An empty region; a region past the end of its memfd (offset or size).
      for (const [r, why] of [
        [region(0, 0, 0), /empty region/],
        [region(0, 0x1000, 0, 0x2000), /past the end of its 8192-byte file/],
        [region(0, 0x4000, 0), /past the end of its 8192-byte file/],
      ] as const) {
        const fd = memfd(0x2000);
        assert.notEqual(await table([r], [fd]), 0n);
        warned(why);
        native.close(fd);
      }
      // mmap fails: a read-only file (mmap PROT_WRITE → EACCES) and a character device.
      const file = path.join(tmp.dir, 'ro');
      writeFileSync(file, new Uint8Array(0x4000));
      for (const opened of [openSync(file, 'r'), openSync('/dev/null', 'r')]) {
        assert.notEqual(await table([region(0, 0x1000, 0)], [opened]), 0n);
        closeSync(opened);
      }
      assert.equal(fx.srv.warnings.filter((w) => /SET_MEM_TABLE refused: region .*mmap failed/.test(w)).length >= 2, true, fx.srv.warnings.slice(-4).join('\n'));
      const fileFds = [...openFds()].filter(([fd, t]) => (t === file || t === '/dev/null') && fx.fdsBefore.get(fd) !== t);
      assert.deepEqual(fileFds, [], 'the back-end closed the file fds too');
      assert.equal(session.mapped.count, 0);
      // A valid table is still accepted; ADD_MEM_REG past the 2 slots of this server, and overlapping, is refused.
      const ok = memfd(0x10000);
      assert.equal(await table([region(0, 0x10000, 0x7000_0000)], [ok]), 0n);
      native.close(ok);
      const add = async (r: MemoryRegionDescription): Promise<bigint> => {
        const fd = memfd(0x10000);
        try {
          return await ack(fe, Request.ADD_MEM_REG, encodeSingleRegion(r), [fd]);
        } finally {
          native.close(fd);
        }
      };
      assert.notEqual(await add(region(0x8000, 0x10000, 0x8000_0000)), 0n);
      warned(/ADD_MEM_REG refused: .*overlaps/);
      assert.equal(await add(region(0x10_0000, 0x10000, 0x8000_0000)), 0n);
      assert.notEqual(await add(region(0x20_0000, 0x10000, 0x9000_0000)), 0n);
      warned(/all 2 memory slots are in use/);
      assert.equal(session.mapped.count, 2);
      // REM_MEM_REG of a region that does not exist.
      assert.notEqual(await ack(fe, Request.REM_MEM_REG, encodeSingleRegion(region(0x30_0000, 0x1000, 0))), 0n);
      warned(/no such memory region/);
    } finally {
      await done(fe);
      tmp.remove();
    }
  });

  it('vring index out of range on every vring request (fds attached are closed); reserved bits in a vring fd request', async () => {
    const fe = await owned();
    try {
      for (const index of [1, 255]) {
        const state = encodeVringState({ index, num: 16 });
        assert.notEqual(await ack(fe, Request.SET_VRING_NUM, state), 0n);
        assert.notEqual(await ack(fe, Request.SET_VRING_BASE, state), 0n);
        assert.notEqual(await ack(fe, Request.SET_VRING_ENABLE, encodeVringState({ index, num: 1 })), 0n);
        const addr = encodeVringAddress({ index, flags: 0, desc: 0x1000n, used: 0x3000n, avail: 0x2000n, log: 0n });
        assert.notEqual(await ack(fe, Request.SET_VRING_ADDR, addr), 0n);
        for (const request of [Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR]) {
          const efd = native.eventfd(0, false);
          assert.notEqual(await ack(fe, request, encodeU64(index), [efd]), 0n);
          native.close(efd);
          assert.notEqual(await ack(fe, request, encodeU64(index | VRING_INVALID_FD)), 0n);
        }
      }
      warned(/vring index 255 out of range \(the device has 1 queues\)/);
      const efd = native.eventfd(0, false);
      assert.notEqual(await ack(fe, Request.SET_VRING_KICK, encodeU64(0x200), [efd]), 0n);
      native.close(efd);
      warned(/reserved bits set in 0x200/);
      assert.equal(fx.srv.server.session!.vrings[0]!.hasKickFd, false);
    } finally {
      await done(fe);
    }
    // GET_VRING_BASE always replies: an index out of range closes the connection.
    for (const index of [1, 255]) {
      const again = await owned();
      try {
        await expectRefusedByClosing(fx.srv, again, Request.GET_VRING_BASE, encodeVringState({ index, num: 0 }), new RegExp(`vring index ${index} out of range`));
      } finally {
        await done(again);
      }
    }
  });

  it('ring sizes: 0, not a power of two, > 32768 refused; 32768 accepted', async () => {
    const fe = await owned();
    try {
      for (const num of [0, 3, 100, 65536, 0x8000_0000, 0xffff_ffff]) {
        assert.notEqual(await ack(fe, Request.SET_VRING_NUM, encodeVringState({ index: 0, num })), 0n, `size ${num}`);
      }
      assert.equal(await ack(fe, Request.SET_VRING_NUM, encodeVringState({ index: 0, num: 32768 })), 0n);
      assert.equal(fx.srv.server.session!.vrings[0]!.size, 32768);
      warned(/size 65536 is not a power of two in 1..32768/);
    } finally {
      await done(fe);
    }
  });

  it('ring addresses not inside one region (outside, straddling its end, beyond 2^53) are refused', async () => {
    const fe = await owned();
    try {
      const ram = memfd(0x10000);
      assert.equal(await ack(fe, Request.SET_MEM_TABLE, encodeMemTable([region(0, 0x10000, 0x7000_0000)]), [ram]), 0n);
      native.close(ram);
      assert.equal(await ack(fe, Request.SET_VRING_NUM, encodeVringState({ index: 0, num: 256 })), 0n);
      const u = 0x7000_0000n;
      const addr = (desc: bigint, avail: bigint, used: bigint) => encodeVringAddress({ index: 0, flags: 0, desc, avail, used, log: 0n });
      // The used ring (6 + 8 * 256 bytes) starts inside, ends past the region.
      assert.notEqual(await ack(fe, Request.SET_VRING_ADDR, addr(u, u + 0x1000n, u + 0xfe00n)), 0n);
      warned(/used ring at user address 0x7000fe00 \(\+2054\) is not inside one memory region/);
      // A guest-physical address where a user address belongs.
      assert.notEqual(await ack(fe, Request.SET_VRING_ADDR, addr(0n, 0x1000n, 0x2000n)), 0n);
      assert.notEqual(await ack(fe, Request.SET_VRING_ADDR, addr(1n << 60n, u + 0x1000n, u + 0x2000n)), 0n);
      warned(/ring address beyond 2\^53/);
      assert.equal(fx.srv.server.session!.vrings[0]!.addresses, null);
      assert.equal(await ack(fe, Request.SET_VRING_ADDR, addr(u, u + 0x1000n, u + 0x2000n)), 0n);
    } finally {
      await done(fe);
    }
  });

  it('a memory table that no longer holds the running ring: device error (NEEDS_RESET, err fd), then recovery', async () => {
    const c = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: 16 });
    try {
      assert.deepEqual(await c.request(3), answer(requestFor(3)));
      // Only the second region: the rings (in the first) are no longer inside guest memory.
      await c.frontend.setMemTable([c.ram.descriptions()[1]!], [c.ram.fds[1]!]);
      await waitFor(() => c.errSignals > 0, 'the error eventfd');
      assert.ok((await c.status()) & Status.NEEDS_RESET);
      warned(/device error on queue 0: descriptor table at user address .* is not inside one memory region \(MEM_OUT_OF_RANGE, virtio 1.2 §2.7\)/);
      await c.frontend.setMemTable(c.ram.descriptions(), c.ram.fds);
      await c.reset();
      assert.deepEqual(await c.request(4), answer(requestFor(4)));
    } finally {
      c.close();
      await fx.srv.server.idle();
    }
  });

  it('kick and call fds that are not eventfds: a memfd kick is refused, a hung-up kick socket is polled, a hung-up call socket is reported once; requests are served', async () => {
    const c = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: 16, callFd: false });
    try {
      const session = fx.srv.server.session!;
      assert.equal(session.strict, true);
      // A memfd is memory, not a notification fd: refused with a non-zero ack, the ring keeps its kick.
      const kick = memfd(4096);
      await assert.rejects(c.frontend.setVringKick(0, kick), /SET_VRING_KICK: back-end reports failure \(1\)/);
      native.close(kick);
      warned(/SET_VRING_KICK refused: .*the fd is a memfd/);
      assert.equal(session.vrings[0]!.hasKickFd, true, 'the previous kick fd is kept');
      // A socket is taken (it reads like a pipe end); one whose peer hung up cannot be watched: polled.
      const [k, kPeer] = native.socketPair();
      native.close(kPeer);
      await c.frontend.setVringKick(0, k);
      native.close(k);
      await waitFor(() => fx.srv.warnings.some((w) => /is not a usable eventfd .*the ring is polled from now on/.test(w)), 'the fallback to polling');
      const [a, b] = native.socketPair();
      native.close(b);
      await c.frontend.setVringCall(0, a);
      native.close(a);
      const ns = Array.from({ length: 20 }, (_, i) => 100 + i);
      assert.deepEqual(await c.requestMany(ns), ns.map((n) => answer(requestFor(n))));
      assert.equal(fx.srv.warnings.filter((w) => /vring 0: writing the call fd failed/.test(w)).length, 1, 'reported once');
    } finally {
      c.close();
      await fx.srv.server.idle();
    }
  });

  it('a lenient session (strict: false) still takes a memfd kick and polls the ring', async () => {
    BackendSession.strictByDefault = false;
    let c: VirtioTestClient;
    try {
      c = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: 16 });
    } finally {
      BackendSession.strictByDefault = true;
    }
    try {
      assert.equal(fx.srv.server.session!.strict, false);
      const from = fx.srv.warnings.length;
      const kick = memfd(4096);
      await c.frontend.setVringKick(0, kick);
      native.close(kick);
      assert.ok(fx.srv.warnings.slice(from).some((w) => /vring 0: cannot watch kick fd .* the ring is polled/.test(w)), fx.srv.warnings.slice(from).join('\n'));
      const ns = Array.from({ length: 10 }, (_, i) => 200 + i);
      assert.deepEqual(await c.requestMany(ns), ns.map((n) => answer(requestFor(n))));
    } finally {
      c.close();
      await fx.srv.server.idle();
    }
  });
});

describe('vhost-user back-end: a hostile front-end, the session’s last refusals', () => {
  const ALL = PROTOCOL | pbit(ProtocolFeature.STATUS) | pbit(ProtocolFeature.INFLIGHT_SHMFD) | pbit(ProtocolFeature.BACKEND_REQ);
  const fx = leakCheckedServer({ maxQueueSize: 256 });
  async function owned(): Promise<VhostUserFrontend> {
    const fe = VhostUserFrontend.connect(fx.srv.socketPath);
    assert.equal(await ack(fe, Request.SET_PROTOCOL_FEATURES, encodeU64(ALL)), 0n);
    assert.equal(await ack(fe, Request.SET_OWNER), 0n);
    return fe;
  }
  const warnedSince = (from: number, re: RegExp): void =>
    assert.ok(fx.srv.warnings.slice(from).some((w) => re.test(w)), `a warning matching ${re}:\n${fx.srv.warnings.slice(from).join('\n')}`);

  it('SET_STATUS with a value over a byte: non-zero ack, the status unchanged; the session reports itself open, then closed', async () => {
    const fe = await owned();
    const session = fx.srv.server.session!;
    try {
      assert.equal(session.isClosed, false);
      assert.equal(await ack(fe, Request.SET_STATUS, encodeU64(Status.ACKNOWLEDGE)), 0n);
      const from = fx.srv.warnings.length;
      assert.notEqual(await ack(fe, Request.SET_STATUS, encodeU64(0x100n | BigInt(Status.DRIVER))), 0n);
      warnedSince(from, /^vhost-user: SET_STATUS refused: status 0x102 does not fit in a byte$/);
      assert.equal(await fe.getStatus(), Status.ACKNOWLEDGE);
      assert.equal(await ack(fe, Request.SET_STATUS, encodeU64(0xffn)), 0n, '0xff still fits');
    } finally {
      fe.close();
      await fx.srv.server.idle();
    }
    assert.equal(session.isClosed, true);
  });

  it('GET_INFLIGHT_FD for queues of a size no ring can have (0, 3, over the maximum): the connection is closed, no buffer made', async () => {
    for (const queueSize of [0, 3, 512]) {
      const fe = await owned();
      try {
        await expectRefusedByClosing(
          fx.srv,
          fe,
          Request.GET_INFLIGHT_FD,
          encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize }),
          new RegExp(`inflight queue size ${queueSize} is not a power of two in 1\\.\\.256`),
        );
      } finally {
        fe.close();
      }
    }
    const fe = await owned();
    try {
      const r = await fe.call(Request.GET_INFLIGHT_FD, encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 256 }));
      assert.equal(r.fds.length, 1, 'the largest size is taken');
      r.fds.forEach((fd) => native.close(fd));
    } finally {
      fe.close();
      await fx.srv.server.idle();
    }
  });

  it('SET_INFLIGHT_FD whose size or offset is beyond 2^53, or smaller than its queues need: non-zero ack, fd closed, nothing mapped', async () => {
    const fe = await owned();
    try {
      for (const [mmapSize, mmapOffset, why] of [
        [2n ** 53n, 0n, /inflight buffer size or offset beyond 2\^53/],
        [4096n, 2n ** 60n, /inflight buffer size or offset beyond 2\^53/],
        [100n, 0n, /inflight buffer of 100 bytes, 1088 needed for 1 queues of 64/],
      ] as const) {
        const fd = memfd(8192);
        const from = fx.srv.warnings.length;
        assert.notEqual(await ack(fe, Request.SET_INFLIGHT_FD, encodeInflight({ mmapSize, mmapOffset, numQueues: 1, queueSize: 64 }), [fd]), 0n);
        native.close(fd);
        warnedSince(from, new RegExp(`^vhost-user: SET_INFLIGHT_FD refused: ${why.source}$`));
      }
    } finally {
      fe.close();
      await fx.srv.server.idle();
    }
  });

  it('SET_BACKEND_REQ_FD with a Unix datagram socket: refused (it would swallow what the back-end sends), fd closed', async () => {
    const fe = await owned();
    const dgram = native.datagramBind(`@vt-hostile-${process.pid}`);
    try {
      const from = fx.srv.warnings.length;
      assert.notEqual(await ack(fe, Request.SET_BACKEND_REQ_FD, new Uint8Array(0), [dgram]), 0n);
      warnedSince(from, /^vhost-user: SET_BACKEND_REQ_FD refused: the fd is a unix dgram socket, not a connected Unix stream socket$/);
    } finally {
      native.close(dgram);
      fe.close();
      await fx.srv.server.idle();
    }
  });

  it('a lenient session serves a request that takes no fd but carried one: a warning, the fd closed', async () => {
    BackendSession.strictByDefault = false;
    const fe = VhostUserFrontend.connect(fx.srv.socketPath);
    try {
      await waitFor(() => fx.srv.server.session !== null && !fx.srv.server.session.isClosed, 'the session');
      assert.equal(fx.srv.server.session!.strict, false);
      const efd = native.eventfd(0, false);
      const from = fx.srv.warnings.length;
      const r = await fe.call(Request.GET_QUEUE_NUM, new Uint8Array(0), [efd]);
      native.close(efd);
      assert.equal(decodeU64(r.payload), 1n);
      assert.deepEqual(fx.srv.warnings.slice(from), ['vhost-user: GET_QUEUE_NUM carried 1 file descriptor(s) it does not take: closed']);
    } finally {
      BackendSession.strictByDefault = true;
      fe.close();
      await fx.srv.server.idle();
    }
  });

  it('describeRequest: name, flags, size, fd count and the first 48 payload bytes in 32-bit words', () => {
    const m = (request: number, payload: Uint8Array, fds: number[] = []) => ({ request, flags: NR, size: payload.length, payload, fds, truncatedFds: false });
    assert.equal(describeRequest(m(Request.SET_OWNER, new Uint8Array(0))), 'SET_OWNER flags=0x9 size=0 fds=0');
    assert.equal(describeRequest(m(Request.SET_VRING_NUM, encodeVringState({ index: 1, num: 256 }), [7])), 'SET_VRING_NUM flags=0x9 size=8 fds=1 payload=01000000 00010000');
    const long = Uint8Array.from({ length: 49 }, (_, i) => i);
    const words = Array.from({ length: 12 }, (_, w) => [0, 1, 2, 3].map((b) => (4 * w + b).toString(16).padStart(2, '0')).join('')).join(' ');
    assert.equal(describeRequest(m(999, long)), `request 999 flags=0x9 size=49 fds=0 payload=${words} ...`);
    assert.equal(describeRequest(m(999, long.subarray(0, 48))), `request 999 flags=0x9 size=48 fds=0 payload=${words}`);
  });
});
