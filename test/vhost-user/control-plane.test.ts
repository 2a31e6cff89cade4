/**
 * The strict vhost-user control plane (BackendSession.strict, docs/reliability.md "vhost-user
 * control plane"): a request the back-end cannot honour is refused with a warning, and the
 * front-end learns it — a non-zero REPLY_ACK when REPLY_ACK is negotiated and the request has
 * NEED_REPLY, otherwise the connection is closed (no silent continuation, no reply of the
 * wrong size). Every refusal is tried both ways on a fresh connection, then a well-behaved
 * front-end must still be served. Plus: memory tables that drop a running ring, the data
 * plane's chain-length rules over vhost-user, and a second front-end while one is served.
 *
 * Strict is the default (BackendSession.strictByDefault; checked in `before`).
 * hostile.test.ts and malformed.test.ts assert the same verdicts for their cases.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE, VIRTIO_TEST_F_CAN_PRINT, answer, decodeResponse, encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { BackendSession, OFFERED_PROTOCOL_FEATURES } from '../../src/vhost-user/backend-session.js';
import { encodeMessage } from '../../src/vhost-user/codec.js';
import { FrontendMemory } from '../../src/vhost-user/frontend-memory.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { closeQuietly } from '../../src/vhost-user/message-channel.js';
import { native } from '../../src/vhost-user/native/index.js';
import {
  decodeU64,
  encodeConfig,
  encodeInflight,
  encodeMemTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddress,
  encodeVringState,
  type MemoryRegionDescription,
} from '../../src/vhost-user/payloads.js';
import { HeaderFlag, ProtocolFeature, Request, VHOST_USER_F_PROTOCOL_FEATURES, VRING_F_LOG, VRING_INVALID_FD, pbit, requestName } from '../../src/vhost-user/protocol.js';
import { VirtioTestClient, type VirtioTestClientOptions } from '../../src/testing/virtio-test-client.js';
import { DescFlags, FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { inflightBufferSize } from '../../src/vhost-user/inflight.js';
import { expectServesNext, leakCheckedServer, settle, tempDir, waitFor, type TestServer } from './helpers.js';

const V = HeaderFlag.VERSION;
const NR = HeaderFlag.VERSION | HeaderFlag.NEED_REPLY;
const FEATURES = bit(FeatureBit.VERSION_1) | bit(FeatureBit.RING_EVENT_IDX) | bit(FeatureBit.RING_INDIRECT_DESC) | bit(VIRTIO_TEST_F_CAN_PRINT) | bit(VHOST_USER_F_PROTOCOL_FEATURES);
const REPLY_ACK = pbit(ProtocolFeature.REPLY_ACK);
/** One 64 KiB region at guest address 0 (user address 0x5555_0000_0000) for raw connections. */
const RAM = [{ guestAddr: 0, size: 0x10000 }];
const SIZE = 16;

/** A connection in some state: a raw front-end (with its RAM) or a whole virtio-test client. */
class Conn {
  constructor(
    readonly fe: VhostUserFrontend,
    readonly ram: FrontendMemory | null = null,
    readonly client: VirtioTestClient | null = null,
  ) {}
  /** User address of guest-physical `gpa` in this connection's RAM. */
  ua(gpa: number): bigint {
    return BigInt((this.client?.ram ?? this.ram!).userAddr(gpa));
  }
  close(): void {
    if (this.client) this.client.close();
    else this.fe.close();
    this.ram?.close();
  }
}

type Level = 'fresh' | 'owned' | 'features' | 'memory' | 'sized' | 'client';

interface Case {
  name: string;
  at: Level | ((srv: TestServer) => Promise<Conn>);
  request: number;
  /** Extra header flags (besides VERSION, and NEED_REPLY for the ack variant). */
  flags?: number;
  payload(c: Conn): Uint8Array;
  /** Fds to send (made per attempt; the test closes its copies). */
  fds?(c: Conn): number[];
  warning: RegExp;
  /** After a refused ack: nothing changed. */
  check?(c: Conn, s: BackendSession): void;
}

describe('vhost-user control plane, strict: a refusal is a non-zero REPLY_ACK or a closed connection', { timeout: 120_000 }, () => {
  const tmp = tempDir();
  const file = (name: string, bytes = 0x1000): string => {
    const p = path.join(tmp.dir, name);
    writeFileSync(p, new Uint8Array(bytes));
    return p;
  };
  const dir = path.join(tmp.dir, 'a-directory');
  const fifo = path.join(tmp.dir, 'a-fifo');

  before(() => {
    mkdirSync(dir);
    execFileSync('mkfifo', [fifo]);
  });
  // Across the whole block: every fd sent to the back-end was closed, no mapping is left.
  const fx = leakCheckedServer(
    { maxMemSlots: 4 },
    { queueSize: SIZE, whileConnected: (srv) => assert.equal(srv.server.session!.strict, true, "serveDevice's sessions are strict by default") },
  );
  before(() => assert.equal(fx.srv.server.connections, 1));
  after(() => tmp.remove());

  const session = (): BackendSession => fx.srv.server.session!;
  const warnedSince = (from: number, re: RegExp): void => {
    const w = fx.srv.warnings.slice(from);
    assert.ok(w.some((l) => re.test(l)), `a warning matching ${re}:\n${w.slice(-6).join('\n')}`);
  };

  /** A raw front-end: protocol features, then (unless fresh) SET_OWNER, features, memory, ring size. */
  async function open(level: Level, protocol = OFFERED_PROTOCOL_FEATURES): Promise<Conn> {
    if (level === 'client') {
      const client = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: SIZE });
      assert.deepEqual(await client.request(2), answer(requestFor(2)));
      return new Conn(client.frontend, null, client);
    }
    const fe = VhostUserFrontend.connect(fx.srv.socketPath);
    const c = new Conn(fe, level === 'memory' || level === 'sized' ? new FrontendMemory(RAM) : null);
    try {
      await fe.setProtocolFeatures(protocol);
      fe.replyAck = (protocol & REPLY_ACK) !== 0n;
      if (level === 'fresh') return c;
      await fe.setOwner();
      if (level === 'owned') return c;
      await fe.setFeatures(FEATURES);
      if (level === 'features') return c;
      await fe.setMemTable(c.ram!.descriptions(), c.ram!.fds);
      if (level === 'memory') return c;
      await fe.setVringNum(0, SIZE);
      return c;
    } catch (e) {
      c.close();
      throw e;
    }
  }
  const connFor = (k: Case): Promise<Conn> => (typeof k.at === 'function' ? k.at(fx.srv) : open(k.at));

  /** NEED_REPLY with REPLY_ACK negotiated: a non-zero ack, the state unchanged, the connection goes on. */
  async function refusedWithAck(k: Case): Promise<void> {
    const c = await connFor(k);
    try {
      const from = fx.srv.warnings.length;
      const fds = k.fds?.(c) ?? [];
      const reply = c.fe.nextReply(k.request);
      c.fe.sendRaw(encodeMessage(k.request, NR | (k.flags ?? 0), k.payload(c)), fds);
      const m = await reply;
      fds.forEach(closeQuietly);
      assert.equal(m.size, 8, 'an ack');
      assert.notEqual(decodeU64(m.payload), 0n, 'a non-zero ack');
      warnedSince(from, new RegExp(`${requestName(k.request)} refused: .*${k.warning.source}`));
      k.check?.(c, session());
      assert.ok(await c.fe.getFeatures(), 'the connection goes on');
      assert.equal(c.fe.isClosed, false);
    } finally {
      c.close();
      await fx.srv.server.idle();
    }
  }

  /** The same request when no ack can carry the refusal: the back-end closes, sending nothing. */
  async function refusedByClosing(k: Case, flags: number): Promise<void> {
    const c = await connFor(k);
    try {
      const events = fx.srv.events.length;
      const fds = k.fds?.(c) ?? [];
      // A waiter, so that any message from the back-end would show up as an answer here.
      const outcome = c.fe.nextReply(k.request).then(
        () => 'an answer',
        () => 'closed',
      );
      c.fe.sendRaw(encodeMessage(k.request, flags | (k.flags ?? 0), k.payload(c)), fds);
      await waitFor(() => c.fe.isClosed, `the back-end to close the connection after ${k.name}`);
      fds.forEach(closeQuietly);
      assert.equal(await outcome, 'closed', 'nothing was sent back');
      assert.equal(c.fe.closeReason, null, 'the back-end closed it (end of stream)');
      await fx.srv.server.idle();
      const line = fx.srv.events.slice(events).find((e) => /disconnected \(/.test(e)) ?? '';
      assert.match(line, new RegExp(`disconnected \\(${requestName(k.request)} refused: .*${k.warning.source}`));
    } finally {
      c.close();
      await fx.srv.server.idle();
    }
  }

  const efd = (): number[] => [native.eventfd(0, true)];
  const memfd = (size: number): number => native.memfdCreate('vhost-user-control-plane', size);
  const state = (index: number, num: number): Uint8Array => encodeVringState({ index, num });
  const region = (guestAddr: number, size: number, userAddr: bigint, mmapOffset = 0): MemoryRegionDescription => ({
    guestAddr: BigInt(guestAddr),
    size: BigInt(size),
    userAddr,
    mmapOffset: BigInt(mmapOffset),
  });
  const addr = (c: Conn, desc: number, avail: number, used: number, flags = 0): Uint8Array =>
    encodeVringAddress({ index: 0, flags, desc: c.ua(desc), avail: c.ua(avail), used: c.ua(used), log: 0n });
  const inflight = (numQueues: number, queueSize: number): Uint8Array =>
    encodeInflight({ mmapSize: BigInt(inflightBufferSize(Math.max(numQueues, 1), Math.max(queueSize, 1))), mmapOffset: 0n, numQueues, queueSize });
  const inflightFd = (numQueues: number, queueSize: number) => (): number[] => [memfd(inflightBufferSize(Math.max(numQueues, 1), Math.max(queueSize, 1)))];
  const sizeIs = (n: number) => (_c: Conn, s: BackendSession) => assert.equal(s.vrings[0]!.size, n, 'ring size unchanged');
  const noAddresses = (_c: Conn, s: BackendSession) => assert.equal(s.vrings[0]!.addresses, null, 'no ring addresses taken');
  const noKick = (_c: Conn, s: BackendSession) => assert.equal(s.vrings[0]!.hasKickFd, false, 'no kick fd taken');
  const opened = (p: string, flags = 'r') => (): number[] => [openSync(p, flags)];
  const listening = (): number[] => {
    const p = path.join(tmp.dir, `l${Math.random().toString(36).slice(2)}.sock`);
    return [native.socketListen(p, 1)];
  };
  /** A 16-entry ring near the end of the 64 KiB region: desc 0xf800 (256 B), avail 0xfa00 (38 B), used 0xfc00 (134 B). */
  const END_RING = { desc: 0xf800, avail: 0xfa00, used: 0xfc00 };
  const sizedWithRingAtEnd = async (): Promise<Conn> => {
    const c = await open('sized');
    await c.fe.setVringAddr(0, { desc: Number(c.ua(END_RING.desc)), avail: Number(c.ua(END_RING.avail)), used: Number(c.ua(END_RING.used)) });
    return c;
  };
  const withInflight = async (): Promise<Conn> => {
    const c = await open('memory');
    const fd = memfd(inflightBufferSize(1, SIZE));
    await c.fe.setInflightFd({ mmapSize: BigInt(inflightBufferSize(1, SIZE)), mmapOffset: 0n, numQueues: 1, queueSize: SIZE }, fd);
    native.close(fd);
    return c;
  };
  const rawWith = (level: Level, protocol: bigint) => () => open(level, protocol);
  const client = (options: Partial<VirtioTestClientOptions>) => async (): Promise<Conn> => {
    const cl = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: SIZE, ...options });
    assert.deepEqual(await cl.request(3), answer(requestFor(3)));
    return new Conn(cl.frontend, null, cl);
  };

  const cases: Case[] = [
    // --- a queue index out of range (the device has one queue), in every message that names one
    { name: 'SET_VRING_NUM index 1', at: 'owned', request: Request.SET_VRING_NUM, payload: () => state(1, SIZE), warning: /vring index 1 out of range \(the device has 1 queues\)/ },
    { name: 'SET_VRING_NUM index 2^32-1', at: 'owned', request: Request.SET_VRING_NUM, payload: () => state(0xffff_ffff, SIZE), warning: /vring index 4294967295 out of range/ },
    { name: 'SET_VRING_BASE index 1', at: 'owned', request: Request.SET_VRING_BASE, payload: () => state(1, 0), warning: /vring index 1 out of range/ },
    { name: 'SET_VRING_ADDR index 1', at: 'sized', request: Request.SET_VRING_ADDR, payload: (c) => encodeVringAddress({ index: 1, flags: 0, desc: c.ua(0), avail: c.ua(0x1000), used: c.ua(0x2000), log: 0n }), warning: /vring index 1 out of range/ },
    { name: 'SET_VRING_ENABLE index 255', at: 'owned', request: Request.SET_VRING_ENABLE, payload: () => state(255, 1), warning: /vring index 255 out of range/ },
    { name: 'SET_VRING_KICK index 1 (with an eventfd)', at: 'owned', request: Request.SET_VRING_KICK, payload: () => encodeU64(1), fds: efd, warning: /vring index 1 out of range/, check: noKick },
    { name: 'SET_VRING_CALL index 255 (with an eventfd)', at: 'owned', request: Request.SET_VRING_CALL, payload: () => encodeU64(255), fds: efd, warning: /vring index 255 out of range/ },
    { name: 'SET_VRING_ERR index 1 with the no-fd bit 8', at: 'owned', request: Request.SET_VRING_ERR, payload: () => encodeU64(1 | VRING_INVALID_FD), warning: /vring index 1 out of range/ },
    { name: 'SET_VRING_KICK with reserved bit 9', at: 'owned', request: Request.SET_VRING_KICK, payload: () => encodeU64(0x200), fds: efd, warning: /reserved bits set in 0x200/, check: noKick },
    { name: 'SET_VRING_CALL with reserved bit 32', at: 'owned', request: Request.SET_VRING_CALL, payload: () => encodeU64(1n << 32n), fds: efd, warning: /reserved bits set in 0x100000000/ },
    { name: 'SET_VRING_KICK with the no-fd bit and an fd', at: 'owned', request: Request.SET_VRING_KICK, payload: () => encodeU64(VRING_INVALID_FD), fds: efd, warning: /too many file descriptors: 1, expected 0 \(invalid-fd flag set\)/, check: noKick },
    { name: 'SET_INFLIGHT_FD for 2 queues', at: 'memory', request: Request.SET_INFLIGHT_FD, payload: () => inflight(2, SIZE), fds: inflightFd(2, SIZE), warning: /inflight buffer for 2 queues; the device has 1/ },
    { name: 'SET_INFLIGHT_FD for 0 queues', at: 'memory', request: Request.SET_INFLIGHT_FD, payload: () => inflight(0, SIZE), fds: inflightFd(1, SIZE), warning: /inflight buffer for 0 queues/ },
    { name: 'SET_INFLIGHT_FD with queues of 100', at: 'memory', request: Request.SET_INFLIGHT_FD, payload: () => inflight(1, 100), fds: inflightFd(1, 100), warning: /inflight queue size 100 is not a power of two/ },
    { name: 'SET_INFLIGHT_FD smaller than the configured ring', at: 'sized', request: Request.SET_INFLIGHT_FD, payload: () => inflight(1, 8), fds: inflightFd(1, 8), warning: /inflight queue size 8 is smaller than vring 0 \(16 descriptors\)/ },
    { name: 'SET_VRING_NUM larger than the inflight buffer', at: withInflight, request: Request.SET_VRING_NUM, payload: () => state(0, 32), warning: /size 32 is larger than the 16 descriptors per queue of the inflight buffer/, check: sizeIs(0) },

    // --- ring addresses: before any memory table, or not inside it with their full sizes
    { name: 'SET_VRING_ADDR before any memory table', at: 'features', request: Request.SET_VRING_ADDR, payload: () => encodeVringAddress({ index: 0, flags: 0, desc: 0x5555_0000_0000n, avail: 0x5555_0000_1000n, used: 0x5555_0000_2000n, log: 0n }), warning: /ring addresses before any memory table/, check: noAddresses },
    { name: 'a descriptor table 16 bytes past the region', at: 'sized', request: Request.SET_VRING_ADDR, payload: (c) => addr(c, 0x10000 - 16 * SIZE + 16, 0x1000, 0x2000), warning: /descriptor table at user address 0x55550000ff10 \(\+256\) is not inside one memory region/, check: noAddresses },
    { name: 'an available ring whose used_event is past the region', at: 'sized', request: Request.SET_VRING_ADDR, payload: (c) => addr(c, 0, 0x10000 - (6 + 2 * SIZE) + 2, 0x2000), warning: /available ring at user address 0x55550000ffdc \(\+38\) is not inside/, check: noAddresses },
    { name: 'a used ring whose avail_event is past the region', at: 'sized', request: Request.SET_VRING_ADDR, payload: (c) => addr(c, 0, 0x1000, 0x10000 - (6 + 8 * SIZE) + 2), warning: /used ring at user address 0x55550000ff7c \(\+134\) is not inside/, check: noAddresses },
    { name: 'a used ring overlapping the descriptor table', at: 'sized', request: Request.SET_VRING_ADDR, payload: (c) => addr(c, 0, 0x1000, 0x40), warning: /the used ring .* overlaps the descriptor table/, check: noAddresses },
    { name: 'a used ring overlapping the available ring', at: 'sized', request: Request.SET_VRING_ADDR, payload: (c) => addr(c, 0, 0x1000, 0x1004), warning: /the used ring .* overlaps the available ring/, check: noAddresses },
    { name: 'VHOST_VRING_F_LOG in the ring flags', at: 'sized', request: Request.SET_VRING_ADDR, payload: (c) => addr(c, 0, 0x1000, 0x2000, VRING_F_LOG), warning: /flags 0x1 \(VHOST_VRING_F_LOG: dirty logging is not supported\)/, check: noAddresses },
    { name: 'a ring size that no longer fits the addresses given', at: sizedWithRingAtEnd, request: Request.SET_VRING_NUM, payload: () => state(0, 128), warning: /vring 0: used ring at user address 0x55550000fc00 \(\+1030\) is not inside/, check: sizeIs(SIZE) },

    // --- memory: fds that are not memory, smaller than size + offset, wrong count
    { name: 'SET_MEM_TABLE with a directory', at: 'owned', request: Request.SET_MEM_TABLE, payload: () => encodeMemTable([region(0, 0x1000, 0x7000_0000n)]), fds: opened(dir), warning: /the fd is a directory \(.*a-directory\), not memory/ },
    { name: 'SET_MEM_TABLE with a pipe', at: 'owned', request: Request.SET_MEM_TABLE, payload: () => encodeMemTable([region(0, 0x1000, 0x7000_0000n)]), fds: opened(fifo, 'r+'), warning: /the fd is a pipe, not memory/ },
    { name: 'SET_MEM_TABLE with a file smaller than offset + size', at: 'owned', request: Request.SET_MEM_TABLE, payload: () => encodeMemTable([region(0, 0x2000, 0x7000_0000n, 0x1000)]), fds: () => [openSync(file('small-ram', 0x2000), 'r+')], warning: /\[0x1000, \+0x2000\) is past the end of its 8192-byte file/ },
    { name: 'SET_MEM_TABLE with 2 regions and 1 fd', at: 'owned', request: Request.SET_MEM_TABLE, payload: () => encodeMemTable([region(0, 0x1000, 0x7000_0000n), region(0x1000, 0x1000, 0x7000_1000n)]), fds: () => [memfd(0x1000)], warning: /too few file descriptors: 1, expected 2 \(one per region\)/ },
    { name: 'ADD_MEM_REG without an fd', at: 'owned', request: Request.ADD_MEM_REG, payload: () => encodeSingleRegion(region(0, 0x1000, 0x7000_0000n)), warning: /too few file descriptors: 0, expected 1/ },
    { name: 'ADD_MEM_REG with a memfd smaller than the region', at: 'owned', request: Request.ADD_MEM_REG, payload: () => encodeSingleRegion(region(0, 0x4000, 0x7000_0000n)), fds: () => [memfd(0x1000)], warning: /past the end of its 4096-byte file/ },

    // --- kick/call/err fds that are not eventfds (or pipes)
    { name: 'a regular file as kick fd', at: 'owned', request: Request.SET_VRING_KICK, payload: () => encodeU64(0), fds: () => [openSync(file('kick'), 'r+')], warning: /the fd is a regular file \(.*kick\), not an eventfd/, check: noKick },
    { name: 'a directory as call fd', at: 'owned', request: Request.SET_VRING_CALL, payload: () => encodeU64(0), fds: opened(dir), warning: /the fd is a directory/ },
    { name: '/dev/null as err fd', at: 'owned', request: Request.SET_VRING_ERR, payload: () => encodeU64(0), fds: opened('/dev/null', 'r+'), warning: /the fd is a character device \(\/dev\/null\)/ },
    { name: 'a memfd as kick fd', at: 'owned', request: Request.SET_VRING_KICK, payload: () => encodeU64(0), fds: () => [memfd(0x1000)], warning: /the fd is a memfd/, check: noKick },
    { name: 'a listening socket as call fd', at: 'owned', request: Request.SET_VRING_CALL, payload: () => encodeU64(0), fds: listening, warning: /the fd is a listening socket/ },
    { name: 'an eventfd as back-end channel', at: 'owned', request: Request.SET_BACKEND_REQ_FD, payload: () => new Uint8Array(0), fds: efd, warning: /the fd is an eventfd, not a connected Unix stream socket/ },
    { name: 'a listening socket as back-end channel', at: 'owned', request: Request.SET_BACKEND_REQ_FD, payload: () => new Uint8Array(0), fds: listening, warning: /the fd is a listening socket, not a connected Unix stream socket/ },
    { name: 'an eventfd as inflight buffer', at: 'memory', request: Request.SET_INFLIGHT_FD, payload: () => inflight(1, SIZE), fds: efd, warning: /inflight fd is a eventfd, not memory/ },

    // --- feature sets the device cannot work with
    { name: 'SET_FEATURES with a bit not offered', at: 'owned', request: Request.SET_FEATURES, payload: () => encodeU64(FEATURES | (1n << 40n)), warning: /features 0x10000000000 were not offered/ },
    { name: 'SET_FEATURES without VERSION_1 (PROTOCOL_F_STATUS)', at: 'owned', request: Request.SET_FEATURES, payload: () => encodeU64(FEATURES & ~bit(FeatureBit.VERSION_1)), warning: /lack VIRTIO_F_VERSION_1: legacy drivers are not supported \(virtio 1\.2 §6\.1\)/ },
    { name: 'SET_FEATURES without VERSION_1 (no PROTOCOL_F_STATUS)', at: rawWith('owned', REPLY_ACK), request: Request.SET_FEATURES, payload: () => encodeU64(FEATURES & ~bit(FeatureBit.VERSION_1)), warning: /lack VIRTIO_F_VERSION_1/ },
    { name: 'SET_PROTOCOL_FEATURES with a bit not offered', at: rawWith('fresh', REPLY_ACK), request: Request.SET_PROTOCOL_FEATURES, payload: () => encodeU64(REPLY_ACK | pbit(ProtocolFeature.LOG_SHMFD)), warning: /protocol features 0x2 were not offered/ },
    { name: 'SET_PROTOCOL_FEATURES changed after SET_FEATURES', at: 'memory', request: Request.SET_PROTOCOL_FEATURES, payload: () => encodeU64(REPLY_ACK), warning: /protocol features changed from 0x1b229 to 0x8 after SET_FEATURES/ },
    { name: 'features changed after FEATURES_OK, rings running', at: 'client', request: Request.SET_FEATURES, payload: () => encodeU64(FEATURES & ~bit(FeatureBit.RING_EVENT_IDX)), warning: /features changed after FEATURES_OK \(status .*DRIVER_OK.*\)/ },
    { name: 'features changed while a ring runs (no PROTOCOL_F_STATUS)', at: client({ status: false }), request: Request.SET_FEATURES, payload: () => encodeU64(FEATURES & ~bit(FeatureBit.RING_EVENT_IDX)), warning: /differ from 0x.* while vring 0 is started and enabled: stop the rings \(GET_VRING_BASE\) first/ },

    // --- requests whose protocol feature was not negotiated (only REPLY_ACK is)
    { name: 'ADD_MEM_REG without CONFIGURE_MEM_SLOTS', at: rawWith('owned', REPLY_ACK), request: Request.ADD_MEM_REG, payload: () => encodeSingleRegion(region(0, 0x1000, 0x7000_0000n)), fds: () => [memfd(0x1000)], warning: /VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS was not negotiated/ },
    { name: 'SET_STATUS without STATUS', at: rawWith('owned', REPLY_ACK), request: Request.SET_STATUS, payload: () => encodeU64(Status.ACKNOWLEDGE), warning: /VHOST_USER_PROTOCOL_F_STATUS was not negotiated/ },
    { name: 'RESET_DEVICE without RESET_DEVICE', at: rawWith('owned', REPLY_ACK), request: Request.RESET_DEVICE, payload: () => new Uint8Array(0), warning: /VHOST_USER_PROTOCOL_F_RESET_DEVICE was not negotiated/ },
    { name: 'SET_CONFIG without CONFIG', at: rawWith('owned', REPLY_ACK), request: Request.SET_CONFIG, payload: () => encodeConfig({ offset: 0, data: new Uint8Array(4) }), warning: /VHOST_USER_PROTOCOL_F_CONFIG was not negotiated/ },
    { name: 'SET_INFLIGHT_FD without INFLIGHT_SHMFD', at: rawWith('owned', REPLY_ACK), request: Request.SET_INFLIGHT_FD, payload: () => inflight(1, SIZE), fds: inflightFd(1, SIZE), warning: /VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD was not negotiated/ },

    // --- headers and requests this back-end does not serve
    { name: 'a request with the REPLY flag', at: 'owned', request: Request.SET_VRING_NUM, flags: HeaderFlag.REPLY, payload: () => state(0, SIZE), warning: /a request with the REPLY flag/, check: sizeIs(0) },
    { name: 'a request with a reserved flag bit', at: 'owned', request: Request.SET_VRING_NUM, flags: 0x10, payload: () => state(0, SIZE), warning: /reserved bits 0x10 set/, check: sizeIs(0) },
    { name: 'SET_LOG_BASE (not supported)', at: 'owned', request: Request.SET_LOG_BASE, payload: () => encodeU64(0), warning: /is not supported/ },
    { name: 'fds on SET_OWNER, which takes none', at: 'owned', request: Request.SET_OWNER, payload: () => new Uint8Array(0), fds: efd, warning: /1 file descriptor\(s\) on a request that takes none/ },
  ];

  for (const k of cases) {
    it(`${k.name}: non-zero REPLY_ACK, nothing changed; then a front-end is served`, async () => {
      await refusedWithAck(k);
      await expectServesNext(fx.srv);
    });
    it(`${k.name}, without NEED_REPLY: the connection is closed; then a front-end is served`, async () => {
      await refusedByClosing(k, V);
      await expectServesNext(fx.srv);
    });
  }

  // Requests that always reply: an error cannot be an ack, and an empty or short reply would be
  // a malformed message ([vhost-user "Communication"]): the connection is closed, whatever the flags.
  const replying: Case[] = [
    { name: 'GET_VRING_BASE index 1', at: 'owned', request: Request.GET_VRING_BASE, payload: () => state(1, 0), warning: /vring index 1 out of range/ },
    { name: 'GET_VRING_BASE index 256 of a running device', at: 'client', request: Request.GET_VRING_BASE, payload: () => state(256, 0), warning: /vring index 256 out of range/ },
    { name: 'GET_INFLIGHT_FD for 2 queues', at: 'memory', request: Request.GET_INFLIGHT_FD, payload: () => inflight(2, SIZE), warning: /inflight buffer for 2 queues; the device has 1/ },
    { name: 'GET_VRING_BASE before SET_OWNER', at: 'fresh', request: Request.GET_VRING_BASE, payload: () => state(0, 0), warning: /sent before SET_OWNER/ },
    { name: 'GET_FEATURES with an fd', at: 'owned', request: Request.GET_FEATURES, payload: () => new Uint8Array(0), fds: efd, warning: /on a request that takes none/ },
  ];
  for (const k of replying) {
    for (const [label, flags] of [['', V], [' with NEED_REPLY', NR]] as const) {
      it(`${k.name}${label}: no malformed reply, the connection is closed; then a front-end is served`, async () => {
        await refusedByClosing(k, flags);
        await expectServesNext(fx.srv);
      });
    }
  }

  it('NEED_REPLY without REPLY_ACK negotiated: a refusal closes the connection, a success is still acknowledged', async () => {
    const c = await open('owned', 0n);
    try {
      assert.equal(c.fe.replyAck, false);
      const ok = c.fe.nextReply(Request.SET_VRING_NUM);
      c.fe.sendRaw(encodeMessage(Request.SET_VRING_NUM, NR, state(0, SIZE)));
      assert.equal(decodeU64((await ok).payload), 0n);
    } finally {
      c.close();
      await fx.srv.server.idle();
    }
    await refusedByClosing({ name: 'SET_VRING_NUM index 1', at: rawWith('owned', 0n), request: Request.SET_VRING_NUM, payload: () => state(1, SIZE), warning: /vring index 1 out of range/ }, NR);
    await expectServesNext(fx.srv);
  });

  it('GET_CONFIG out of range: the specified error reply (an empty payload), and the connection goes on', async () => {
    const c = await open('owned');
    try {
      const reply = c.fe.nextReply(Request.GET_CONFIG);
      c.fe.sendRaw(encodeMessage(Request.GET_CONFIG, V, encodeConfig({ offset: 8, data: new Uint8Array(8) })));
      assert.equal((await reply).size, 0);
      assert.ok(await c.fe.getFeatures());
    } finally {
      c.close();
      await fx.srv.server.idle();
    }
  });

  it('the refusals are not over-broad: features may change once the rings are stopped, the same protocol features may be sent again, a pipe is a kick fd', async () => {
    const c = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: SIZE, status: false });
    const kick = openSync(fifo, 'r+');
    try {
      const fe = c.frontend;
      await fe.setProtocolFeatures(c.protocolFeatures);
      assert.deepEqual(await c.request(4), answer(requestFor(4)));
      // [vhost-user "Support for platforms other than Linux"]: a pipe may carry the kicks.
      await fe.setVringKick(0, kick);
      const device = fx.srv.devices[fx.srv.devices.length - 1] as VirtioTestDevice;
      const served = device.served;
      const internals = c as unknown as { kickFd: number | null };
      const eventfd = internals.kickFd;
      internals.kickFd = null; // the client must not kick its old eventfd: only the pipe wakes the back-end
      const pending = c.request(5);
      await settle();
      assert.equal(device.served, served, 'not served before a kick');
      const eight = new Uint8Array(8);
      eight[0] = 1;
      native.write(kick, eight);
      assert.deepEqual(await pending, answer(requestFor(5)));
      internals.kickFd = eventfd;
      // Stopped (GET_VRING_BASE): other features are a new negotiation, not a change under a live ring.
      await fe.getVringBase(0);
      await fe.setFeatures(FEATURES & ~bit(FeatureBit.RING_EVENT_IDX));
    } finally {
      closeSync(kick);
      c.close();
      await fx.srv.server.idle();
    }
    await expectServesNext(fx.srv);
  });

  // ------------------------------------------------------------ memory tables under running rings

  it('REM_MEM_REG of the region a running ring uses: honoured, the ring stops by a device error (NEEDS_RESET, err fd); recovery', async () => {
    const c = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: SIZE, memSlots: true });
    try {
      const device = fx.srv.devices[fx.srv.devices.length - 1] as VirtioTestDevice;
      assert.deepEqual(await c.request(6), answer(requestFor(6)));
      const from = fx.srv.warnings.length;
      const rings = c.ram.descriptions()[0]!;
      await c.frontend.remMemReg(rings); // acknowledged: the table change itself is valid
      await waitFor(() => c.errSignals > 0, 'the error eventfd');
      assert.ok((await c.status()) & Status.NEEDS_RESET);
      warnedSince(from, /device error on queue 0: descriptor table at user address .* is not inside one memory region \(MEM_OUT_OF_RANGE, virtio 1\.2 §2\.7\)/);
      const served = device.served;
      const waiting = c.request(7).then(
        () => 'answered',
        () => 'failed',
      );
      await settle();
      assert.equal(device.served, served, 'the stopped ring serves nothing');
      await c.frontend.addMemReg(rings, c.ram.fds[0]!);
      await c.reset();
      assert.equal(await waiting, 'failed', 'the reset fails what was pending');
      assert.deepEqual(await c.request(8), answer(requestFor(8)));
    } finally {
      c.close();
      await fx.srv.server.idle();
    }
    await expectServesNext(fx.srv);
  });

  it('a memory table without the region of a started but disabled ring: nothing until SET_VRING_ENABLE 1, which ends in the device error', async () => {
    const c = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: SIZE });
    try {
      assert.deepEqual(await c.request(9), answer(requestFor(9)));
      const fe = c.frontend;
      await fe.setVringEnable(0, false);
      await fe.setMemTable([c.ram.descriptions()[1]!], [c.ram.fds[1]!]);
      await settle();
      assert.equal(c.errSignals, 0, 'a disabled ring is not processed: no error yet');
      assert.equal((await c.status()) & Status.NEEDS_RESET, 0);
      await fe.setVringEnable(0, true);
      await waitFor(() => c.errSignals > 0, 'the error eventfd');
      assert.ok((await c.status()) & Status.NEEDS_RESET);
    } finally {
      c.close();
      await fx.srv.server.idle();
    }
    await expectServesNext(fx.srv);
  });

  // ------------------------------------------------------------ data plane: chain lengths

  /** A client whose ring the test drives by hand (its call watch stopped). */
  async function rawRing(): Promise<{ c: VirtioTestClient; device: VirtioTestDevice; ring: { desc: number; avail: number; used: number }; push(head: number): void; desc(table: number, i: number, a: number, len: number, flags: number, next?: number): void; buf(len: number): number }> {
    const c = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: SIZE });
    assert.deepEqual(await c.request(1), answer(requestFor(1)));
    const device = fx.srv.devices[fx.srv.devices.length - 1] as VirtioTestDevice;
    const internals = c as unknown as { callWatch: { stop(): void } | null; ring: { desc: number; avail: number; used: number } };
    internals.callWatch?.stop();
    internals.callWatch = null;
    const ring = internals.ring;
    let availIdx = c.availIdx();
    let next = 0x4000_0000 + 0x20_0000;
    const view = (gpa: number, len: number): DataView => {
      const b = c.ram.memory.slice(gpa, len);
      return new DataView(b.buffer, b.byteOffset, len);
    };
    return {
      c,
      device,
      ring,
      buf(len) {
        const a = next;
        next += Math.ceil(len / 64) * 64 + 64;
        return a;
      },
      desc(table, i, a, len, flags, n = 0) {
        const v = view(table + 16 * i, 16);
        v.setBigUint64(0, BigInt(a), true);
        v.setUint32(8, len, true);
        v.setUint16(12, flags, true);
        v.setUint16(14, n, true);
      },
      push(head) {
        view(ring.avail + 4 + 2 * (availIdx % SIZE), 2).setUint16(0, head, true);
        availIdx = (availIdx + 1) & 0xffff;
        view(ring.avail + 2, 2).setUint16(0, availIdx, true);
        native.eventfdWrite(c.kickEventFd!, 1);
      },
    };
  }

  async function expectDeviceError(c: VirtioTestClient, device: VirtioTestDevice, code: string, from: number): Promise<void> {
    const served = device.served;
    const used = c.usedIdx();
    await waitFor(() => c.errSignals > 0, 'the error eventfd');
    assert.ok((await c.status()) & Status.NEEDS_RESET, 'NEEDS_RESET');
    warnedSince(from, new RegExp(`device error on queue 0: .*\\(${code}, virtio 1\\.2 §2\\.7\\.5\\.3(\\.1)?\\); device needs reset`));
    assert.equal(device.served, served, 'not served');
    assert.equal(c.usedIdx(), used, 'no used element');
    await c.reset();
    assert.deepEqual(await c.request(2), answer(requestFor(2)));
  }

  it(`a chain longer than the queue size (${SIZE + 1} descriptors: all ${SIZE}, then back to the head) is a device error (DESC_LOOP), not served`, async () => {
    const r = await rawRing();
    try {
      const from = fx.srv.warnings.length;
      for (let i = 0; i < SIZE; i++) r.desc(r.ring.desc, i, r.buf(8), 8, DescFlags.NEXT, (i + 1) % SIZE);
      r.push(0);
      await expectDeviceError(r.c, r.device, 'DESC_LOOP', from);
    } finally {
      r.c.close();
      await fx.srv.server.idle();
    }
    await expectServesNext(fx.srv);
  });

  it('an indirect table of more than 32768 entries is a device error (INDIRECT_BAD_LENGTH), not served', async () => {
    const r = await rawRing();
    try {
      const from = fx.srv.warnings.length;
      r.desc(r.ring.desc, 0, r.buf(64), 16 * 32769, DescFlags.INDIRECT);
      r.push(0);
      await expectDeviceError(r.c, r.device, 'INDIRECT_BAD_LENGTH', from);
    } finally {
      r.c.close();
      await fx.srv.server.idle();
    }
    await expectServesNext(fx.srv);
  });

  it(`an indirect table of ${SIZE + 1} entries on a ${SIZE}-entry ring is served (the documented exception: Linux builds such tables)`, async () => {
    const r = await rawRing();
    try {
      const table = r.buf(16 * (SIZE + 1));
      const req = r.buf(REQUEST_SIZE);
      const resp = r.buf(RESPONSE_SIZE);
      encodeRequest(requestFor(11), r.c.ram.memory.slice(req, REQUEST_SIZE));
      // 16 readable pieces of 3 bytes (the 48-byte request), then the 12-byte response.
      for (let i = 0; i < SIZE; i++) r.desc(table, i, req + 3 * i, 3, DescFlags.NEXT, i + 1);
      r.desc(table, SIZE, resp, RESPONSE_SIZE, DescFlags.WRITE);
      r.desc(r.ring.desc, 0, table, 16 * (SIZE + 1), DescFlags.INDIRECT);
      const used = r.c.usedIdx();
      r.push(0);
      await waitFor(() => r.c.usedIdx() !== used, 'the used element');
      assert.deepEqual(decodeResponse(r.c.ram.memory.slice(resp, RESPONSE_SIZE)), answer(requestFor(11)));
      assert.equal(r.c.errSignals, 0);
    } finally {
      r.c.close();
      await fx.srv.server.idle();
    }
  });

  // ------------------------------------------------------------ a second front-end

  it('a second front-end while one is served waits (not accepted, not answered, not dropped) and is served when the first leaves', async () => {
    const first = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: SIZE });
    const connections = fx.srv.server.connections;
    let second: VirtioTestClient | null = null;
    const connecting = VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: SIZE }).then((c) => (second = c));
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(second, null, 'the second front-end is not answered while the first is served');
      assert.equal(fx.srv.server.connections, connections, 'nor accepted');
      assert.deepEqual(await first.request(12), answer(requestFor(12)), 'the first is served meanwhile');
      first.close();
      const c = await Promise.race([connecting, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the second front-end was not served within 5 s of the first leaving')), 5000))]);
      assert.equal(fx.srv.server.connections, connections + 1);
      assert.deepEqual(await c.request(13), answer(requestFor(13)));
    } finally {
      first.close();
      (second as VirtioTestClient | null)?.close();
      await connecting.catch(() => {});
      await fx.srv.server.idle();
    }
  });

  it('three waiting front-ends are served one after the other, in order; one that gave up while waiting is cleaned up and skipped', async () => {
    const first = await VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: SIZE });
    const base = fx.srv.server.connections;
    // The one that gives up: half a message with an fd, then gone, all while waiting in the backlog.
    const quitter = native.socketConnect(fx.srv.socketPath);
    const kick = native.eventfd(0, false);
    native.sendMsg(quitter, encodeMessage(Request.SET_VRING_KICK, V, encodeU64(0)).subarray(0, 14), [kick]);
    native.close(kick);
    native.close(quitter);
    const order: number[] = [];
    const waiting = [1, 2, 3].map((i) =>
      VirtioTestClient.connect({ socketPath: fx.srv.socketPath, queueSize: SIZE }).then(async (c) => {
        order.push(i);
        const r = await c.request(20 + i);
        c.close();
        return r;
      }),
    );
    try {
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(order, []);
      first.close();
      const answers = await Promise.all(waiting);
      assert.deepEqual(answers, [1, 2, 3].map((i) => answer(requestFor(20 + i))));
      assert.deepEqual(order, [1, 2, 3], 'served in the order they connected');
      await fx.srv.server.idle();
      assert.equal(fx.srv.server.connections, base + 4, 'the quitter was accepted too, and let go');
      assert.ok(fx.srv.events.some((e) => new RegExp(`front-end ${base + 1} disconnected \\(peer closed the connection in the middle of a message\\)`).test(e)), fx.srv.events.slice(-8).join('\n'));
    } finally {
      first.close();
      await Promise.allSettled(waiting);
      await fx.srv.server.idle();
    }
  });
});
