/**
 * Malformed front-end messages: each gets a non-zero REPLY_ACK where one can carry the
 * refusal (REPLY_ACK negotiated, NEED_REPLY set), and otherwise — a request that always
 * replies, a request without NEED_REPLY, or a stream that cannot be trusted — the connection is
 * closed (the back-end is strict, BackendSession.strictByDefault); the back-end never crashes,
 * closes every fd it was sent, and serves the next front-end.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { encodeHeader, encodeMessage } from '../../src/vhost-user/codec.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { native } from '../../src/vhost-user/native/index.js';
import { decodeU64, encodeMemTable, encodeU64, encodeVringState } from '../../src/vhost-user/payloads.js';
import { HeaderFlag, ProtocolFeature, Request, pbit } from '../../src/vhost-user/protocol.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { expectRefusedByClosing, leakedFds, openFds, expectServesNext, settle, startServer, waitFor, type TestServer } from './helpers.js';

const V = HeaderFlag.VERSION;
const NR = HeaderFlag.VERSION | HeaderFlag.NEED_REPLY;

async function ack(fe: VhostUserFrontend, request: number, bytes: Uint8Array, fds: number[] = []): Promise<bigint> {
  const reply = fe.nextReply(request);
  fe.sendRaw(bytes, fds);
  const m = await reply;
  assert.equal(m.flags, HeaderFlag.VERSION | HeaderFlag.REPLY);
  assert.equal(m.size, 8);
  return decodeU64(m.payload);
}

/** A raw front-end that has negotiated REPLY_ACK (so that refusals come as non-zero acks). */
async function withReplyAck(socketPath: string): Promise<VhostUserFrontend> {
  const fe = VhostUserFrontend.connect(socketPath);
  assert.equal(await ack(fe, Request.SET_PROTOCOL_FEATURES, encodeMessage(Request.SET_PROTOCOL_FEATURES, NR, encodeU64(pbit(ProtocolFeature.REPLY_ACK)))), 0n);
  return fe;
}

describe('vhost-user back-end: malformed messages', () => {
  let srv: TestServer;
  before(() => {
    srv = startServer();
  });
  after(async () => {
    await srv.close();
  });


  it('an unknown request gets an error ack and the connection goes on', async () => {
    const fe = await withReplyAck(srv.socketPath);
    try {
      assert.notEqual(await ack(fe, 999, encodeMessage(999, NR, new Uint8Array(16))), 0n);
      assert.ok(await fe.getFeatures());
      assert.ok(srv.warnings.some((w) => /request 999 refused: request 999 is not supported/.test(w)));
      // An unsupported known request (logging) likewise, with its fd closed.
      const efd = native.eventfd(0, false);
      assert.notEqual(await ack(fe, Request.SET_LOG_FD, encodeMessage(Request.SET_LOG_FD, NR), [efd]), 0n);
      native.close(efd);
      assert.ok(await fe.getFeatures());
    } finally {
      fe.close();
    }
    // Without REPLY_ACK negotiated no ack can carry the refusal: the connection is closed.
    const plain = VhostUserFrontend.connect(srv.socketPath);
    try {
      await expectRefusedByClosing(srv, plain, 999, new Uint8Array(16), /request 999 is not supported/, { flags: NR });
    } finally {
      plain.close();
    }
  });

  it('a wrong payload size gets an error ack; without NEED_REPLY, or on a request that always replies, the connection is closed', async () => {
    const fe = await withReplyAck(srv.socketPath);
    try {
      assert.notEqual(await ack(fe, Request.SET_VRING_NUM, encodeMessage(Request.SET_VRING_NUM, NR, new Uint8Array(4))), 0n);
      assert.ok(await fe.getFeatures(), 'the connection goes on');
      assert.ok(srv.warnings.some((w) => /SET_VRING_NUM refused: SET_VRING_NUM: payload size 4, expected 8/.test(w)));
      // No NEED_REPLY: silence would be taken for success.
      await expectRefusedByClosing(srv, fe, Request.SET_FEATURES, new Uint8Array(3), /SET_FEATURES: payload size 3, expected 8/);
    } finally {
      fe.close();
    }
    // A request that always replies: a reply of the wrong size would be a malformed message.
    const owner = await withReplyAck(srv.socketPath);
    try {
      assert.equal(await ack(owner, Request.SET_OWNER, encodeMessage(Request.SET_OWNER, NR)), 0n);
      await expectRefusedByClosing(srv, owner, Request.GET_VRING_BASE, encodeVringState({ index: 5, num: 0 }), /vring index 5 out of range/);
    } finally {
      owner.close();
    }
  });

  it('too many or too few fds get an error ack, and every fd sent is closed by the back-end', async () => {
    const before = openFds();
    const fe = await withReplyAck(srv.socketPath);
    try {
      const a = native.eventfd(0, false);
      const b = native.eventfd(0, false);
      assert.notEqual(await ack(fe, Request.SET_VRING_KICK, encodeMessage(Request.SET_VRING_KICK, NR, encodeU64(0)), [a, b]), 0n);
      assert.notEqual(await ack(fe, Request.SET_VRING_CALL, encodeMessage(Request.SET_VRING_CALL, NR, encodeU64(0)), []), 0n);
      // Nine fds on SET_MEM_TABLE: more than a message may carry.
      const nine = Array.from({ length: 9 }, () => native.memfdCreate('x', 4096));
      const table = encodeMemTable(Array.from({ length: 8 }, (_, i) => ({ guestAddr: BigInt(i * 4096), size: 4096n, userAddr: BigInt(i * 4096), mmapOffset: 0n })));
      const bytes = encodeMessage(Request.SET_MEM_TABLE, NR, table);
      const reply = fe.nextReply(Request.SET_MEM_TABLE);
      native.sendMsg(fe['channel'].fd, bytes.subarray(0, 12), nine.slice(0, 8)); // sendMsg carries at most 8
      native.sendMsg(fe['channel'].fd, bytes.subarray(12), [nine[8]!]);
      const r = await reply;
      assert.notEqual(decodeU64(r.payload), 0n);
      assert.ok(srv.warnings.some((w) => /too many file descriptors: 2, expected 1/.test(w)));
      assert.ok(srv.warnings.some((w) => /too few file descriptors: 0, expected 1/.test(w)));
      // Fds on a request that takes none: refused (strict), the fd closed; GET_FEATURES always
      // replies, so the refusal is the connection closed.
      const c = native.eventfd(0, false);
      await expectRefusedByClosing(srv, fe, Request.GET_FEATURES, new Uint8Array(0), /1 file descriptor\(s\) on a request that takes none/, { fds: [c] });
      for (const fd of [a, b, c, ...nine]) native.close(fd);
    } finally {
      fe.close();
    }
    await srv.server.idle();
    await settle();
    assert.deepEqual(leakedFds(before), []);
  });

  it('a wrong protocol version closes the connection; the next front-end is served', async () => {
    let closed: string | null | undefined;
    const fe = VhostUserFrontend.connect(srv.socketPath, { onClose: (r) => (closed = r) });
    fe.sendRaw(encodeHeader({ request: Request.GET_FEATURES, flags: 0x2, size: 0 }));
    await waitFor(() => fe.isClosed, 'the back-end to close the connection');
    assert.equal(closed, null, 'the back-end closed: an orderly end of stream for the front-end');
    assert.ok(srv.events.some((e) => /disconnected \(GET_FEATURES: version 2 in flags 0x2, expected 1\)/.test(e)));
    fe.close();
    await expectServesNext(srv);
  });

  it('an absurd payload size closes the connection; the next front-end is served', async () => {
    const fe = VhostUserFrontend.connect(srv.socketPath);
    fe.sendRaw(encodeHeader({ request: Request.SET_MEM_TABLE, flags: V, size: 0x7fff_ffff }));
    await waitFor(() => fe.isClosed, 'the back-end to close the connection');
    assert.ok(srv.events.some((e) => /payload size 2147483647 exceeds the maximum/.test(e)));
    fe.close();
    await expectServesNext(srv);
  });

  it('a front-end that leaves in the middle of a message is cleaned up; the next one is served', async () => {
    const before = openFds();
    const fe = VhostUserFrontend.connect(srv.socketPath);
    const efd = native.eventfd(0, false);
    const m = encodeMessage(Request.SET_VRING_KICK, V, encodeU64(0));
    fe.sendRaw(m.subarray(0, 14), [efd]);
    await settle();
    fe.close();
    native.close(efd);
    await waitFor(() => srv.events.some((e) => /in the middle of a message/.test(e)), 'the disconnect');
    await srv.server.idle();
    assert.deepEqual(leakedFds(before), []);
    await expectServesNext(srv);
  });

  it('a kick fd that is not an eventfd (a hung-up socket) is replaced by polling, without spinning', async () => {
    const c = await VirtioTestClient.connect({ socketPath: srv.socketPath });
    try {
      const [a, b] = native.socketPair();
      native.close(b);
      await c.frontend.setVringKick(0, a);
      native.close(a);
      await waitFor(() => srv.warnings.some((w) => /is not a usable eventfd .*the ring is polled from now on/.test(w)), 'the fallback warning');
      assert.deepEqual(await c.requestMany([5, 6]), [5, 6].map((n) => answer(requestFor(n))));
    } finally {
      c.close();
      await srv.server.idle();
    }
  });

  it('memory that is not memory, or past the end of its file, is refused without a crash', async () => {
    const fe = await withReplyAck(srv.socketPath);
    try {
      assert.equal(await ack(fe, Request.SET_OWNER, encodeMessage(Request.SET_OWNER, NR)), 0n);
      const region = { guestAddr: 0n, size: 0x10000n, userAddr: 0x1000n, mmapOffset: 0n };
      const small = native.memfdCreate('small', 4096);
      assert.notEqual(await ack(fe, Request.SET_MEM_TABLE, encodeMessage(Request.SET_MEM_TABLE, NR, encodeMemTable([region])), [small]), 0n);
      const efd = native.eventfd(0, false);
      assert.notEqual(await ack(fe, Request.SET_MEM_TABLE, encodeMessage(Request.SET_MEM_TABLE, NR, encodeMemTable([region])), [efd]), 0n);
      native.close(small);
      native.close(efd);
      assert.ok(srv.warnings.some((w) => /past the end of its 4096-byte file/.test(w)));
      assert.ok(srv.warnings.some((w) => /the fd is a eventfd, not memory/.test(w)));
      assert.equal(srv.server.session!.mapped.count, 0);
    } finally {
      fe.close();
    }
  });
});
