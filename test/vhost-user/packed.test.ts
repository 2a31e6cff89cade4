/**
 * The packed virtqueue (virtio 1.2 §2.8, VIRTIO_F_RING_PACKED) over vhost-user: the low-level
 * TypeScript front-end negotiates it, drives the ring with our PackedDriverQueue, and checks the
 * packed ring base of GET/SET_VRING_BASE ([vhost-user "Vring descriptor indices for packed
 * virtqueues"]: bits 0-14 last avail, bit 15 its wrap counter, bits 16-30 last used, bit 31 its
 * wrap counter) across a stop and a restart, with a request held by the device across them.
 */
import assert from 'node:assert/strict';
import { readSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { DeviceContext, VirtioDevice } from '../../src/device/device.js';
import { FrontendMemory } from '../../src/vhost-user/frontend-memory.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { native } from '../../src/vhost-user/native/index.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, ProtocolFeature, pbit } from '../../src/vhost-user/protocol.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { PackedDriverQueue } from '../../src/virtio/packed-driver-queue.js';
import { packedRingLayout, packedRingViewsFromGuest } from '../../src/virtio/packed-ring.js';
import { settle, startServer, waitFor, type TestServer } from './helpers.js';

const SIZE = 5; // §2.8.10.1: a packed ring's size need not be a power of two
const DRAIN_MS = 50;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Echoes its request; a request "HOLD" is held (a promise) the first time it is seen, answered when resubmitted. */
class HoldingEcho implements VirtioDevice {
  readonly deviceId = 0x1234;
  readonly features = 0n;
  readonly configSize = 0;
  readonly queueMaxSizes = [8];
  seen = 0;
  holds: ((len: number) => void)[] = [];
  readConfig(): void {}
  writeConfig(): void {}
  handleChain(_queue: number, chain: DescriptorChain, _ctx: DeviceContext): number | Promise<number> {
    this.seen++;
    const data = new Uint8Array(Math.min(chain.readableLength, chain.writableLength));
    chain.read(data);
    const len = chain.write(data);
    if (dec.decode(data) === 'HOLD' && this.holds.length === 0) return new Promise((resolve) => this.holds.push(resolve));
    return len;
  }
  reset(): void {}
}

interface Rig {
  srv: TestServer;
  /** The connection (replaced when a test reconnects). */
  fe: VhostUserFrontend;
  ram: FrontendMemory;
  device: HoldingEcho;
  queue: PackedDriverQueue<string>;
  ring: { desc: number; driver: number; device: number };
  fds: number[];
  kick: number;
  /** With `inflight`: the buffer GET_INFLIGHT_FD gave (and SET_INFLIGHT_FD handed back). */
  inflight: { fd: number; size: number } | null;
  close(): Promise<void>;
}

/** Negotiates the packed ring; with `inflight`, gets and sets the inflight buffer right after SET_FEATURES, as QEMU 7.2's vhost-user-blk does. */
async function rig(options: { inflight?: boolean } = {}): Promise<Rig> {
  const device = new HoldingEcho();
  // GET_VRING_BASE waits this long for a held request before stopping the ring without it.
  const srv = startServer({ createDevice: () => device, packedRing: true, drainTimeoutMs: DRAIN_MS });
  const ram = new FrontendMemory([{ guestAddr: 0x10000, size: 1 << 20 }]);
  const fds: number[] = [];
  const fe = await negotiate(srv, options);
  let inflight: Rig['inflight'] = null;
  if (options.inflight) {
    const got = await fe.getInflightFd(1, 8);
    fds.push(got.fd);
    await fe.setInflightFd(got.description, got.fd);
    inflight = { fd: got.fd, size: Number(got.description.mmapSize) };
  }
  await fe.setMemTable(ram.descriptions(), ram.fds);
  const layout = packedRingLayout(ram.alloc(packedRingLayout(0, SIZE).bytes, 4096), SIZE);
  const queue = new PackedDriverQueue<string>(ram.memory, packedRingViewsFromGuest(ram.memory, layout), { eventIdx: false, indirect: false });
  const call = native.eventfd(0, true);
  fds.push(call);
  await fe.setVringCall(0, call);
  const r: Rig = {
    srv,
    fe,
    ram,
    device,
    queue,
    ring: { desc: layout.desc, driver: layout.driver, device: layout.device },
    fds,
    kick: -1,
    inflight,
    async close() {
      r.fe.close();
      for (const fd of fds) native.close(fd);
      await srv.server.idle();
      ram.close();
      await srv.close();
    },
  };
  return r;
}

/** A new connection up to FEATURES_OK with VIRTIO_F_RING_PACKED acked (QEMU's order: features, then memory and rings). */
async function negotiate(srv: TestServer, options: { inflight?: boolean } = {}): Promise<VhostUserFrontend> {
  const fe = VhostUserFrontend.connect(srv.socketPath);
  await fe.setOwner();
  assert.ok((await fe.getFeatures()) & bit(FeatureBit.RING_PACKED), 'VIRTIO_F_RING_PACKED offered');
  const wanted = pbit(ProtocolFeature.REPLY_ACK) | pbit(ProtocolFeature.STATUS) | (options.inflight ? pbit(ProtocolFeature.INFLIGHT_SHMFD) : 0n);
  await fe.setProtocolFeatures((await fe.getProtocolFeatures()) & wanted);
  fe.replyAck = true;
  await fe.setFeatures(bit(FeatureBit.VERSION_1) | bit(FeatureBit.RING_PACKED) | bit(VHOST_USER_F_PROTOCOL_FEATURES));
  await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  return fe;
}

/** SET_VRING_NUM, BASE, ADDR (the three packed areas), KICK, ENABLE: what QEMU's vhost_virtqueue_start sends. */
async function startRing(r: Rig, base: number): Promise<void> {
  await r.fe.setVringNum(0, SIZE);
  await r.fe.setVringBase(0, base);
  await r.fe.setVringAddr(0, { desc: r.ram.userAddr(r.ring.desc), avail: r.ram.userAddr(r.ring.driver), used: r.ram.userAddr(r.ring.device) });
  r.kick = native.eventfd(0, true);
  r.fds.push(r.kick);
  await r.fe.setVringKick(0, r.kick);
  await r.fe.setVringEnable(0, true);
}

/** Adds one request (out: text, in: 16 bytes) and kicks. */
function add(r: Rig, text: string): number {
  const out = r.ram.alloc(16);
  const inn = r.ram.alloc(16);
  r.ram.memory.write(out, enc.encode(text));
  assert.ok(r.queue.add([{ addr: out, len: text.length }], [{ addr: inn, len: 16 }], text));
  native.eventfdWrite(r.kick, 1);
  return inn;
}

async function roundTrip(r: Rig, text: string): Promise<void> {
  const inn = add(r, text);
  await waitFor(() => r.queue.hasUsed(), `the answer to ${text}`);
  const u = r.queue.getUsed()!;
  assert.equal(u.token, text);
  assert.equal(dec.decode(r.ram.memory.slice(inn, u.len)), text);
}

describe('vhost-user: the packed virtqueue (VIRTIO_F_RING_PACKED)', () => {
  it('serves a packed ring of 5; GET_VRING_BASE returns both positions with their wrap counters; a restart from it resubmits the held request once', async () => {
    const r = await rig();
    try {
      await startRing(r, 0x8000_8000); // both positions 0, both wrap counters 1 (§2.8.1; QEMU's fresh ring)
      await r.fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
      // 4 requests of 2 descriptors: 8 = one lap of 5 and 3; both sides at position 3, wrap counters 0.
      for (const t of ['one', 'two', 'three', 'four']) await roundTrip(r, t);
      // The device holds the fifth: avail moves to 3 + 2 = 5, i.e. position 0 in lap 1; used stays at 3, wrap 0.
      add(r, 'HOLD');
      await waitFor(() => r.device.holds.length === 1, 'the device to hold HOLD');
      const stopped = await r.fe.getVringBase(0);
      assert.match(r.srv.warnings.at(-1) ?? '', new RegExp(`GET_VRING_BASE for vring 0: 1 request\\(s\\) still in the device after ${DRAIN_MS} ms`));
      assert.equal(stopped.toString(16), (0x0003_8000).toString(16), 'last avail 0 wrap 1 (bits 0-15), last used 3 wrap 0 (bits 16-31)');
      assert.equal(stopped & 0xffff, r.queue.nextAvail, 'the driver made available exactly what the device took');
      assert.equal(stopped >>> 16, r.queue.nextUsed);
      // Restart from that base (what QEMU does on vhost_dev_start after a stop): the held request
      // is walked again from the list the old queue kept (its ring slots may be reused) and answered.
      await startRing(r, stopped);
      await waitFor(() => r.queue.hasUsed(), 'the resubmitted HOLD');
      const u = r.queue.getUsed()!;
      assert.equal(u.token, 'HOLD');
      assert.equal(u.len, 4);
      assert.equal(r.device.seen, 6, 'HOLD was handed to the device twice (held, then resubmitted)');
      assert.ok(r.srv.warnings.some((w) => /vring 0: resubmitting 1 request\(s\)/.test(w)), r.srv.warnings.join('\n'));
      // Used: 3 + 2 = 5 → position 0, wrap 1. Three more: 6 descriptors → position 1, wrap 0 on both sides.
      for (const t of ['five', 'six', 'seven']) await roundTrip(r, t);
      // The first, stale completion of HOLD is dropped: nothing more appears in the ring.
      r.device.holds[0]!(4);
      await settle();
      assert.equal(r.queue.hasUsed(), false, 'the old completion of HOLD was not written');
      const again = await r.fe.getVringBase(0);
      assert.equal(again.toString(16), (0x0001_0001).toString(16));
      assert.equal(again & 0xffff, r.queue.nextAvail);
      assert.equal(again >>> 16, r.queue.nextUsed);
      assert.equal(await r.fe.getStatus(), Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK, 'no device error');
    } finally {
      await r.close();
    }
  });

  it('refuses packed ring bases outside the ring or with more than the ring in flight, and split-sized checks do not apply', async () => {
    const r = await rig();
    try {
      await r.fe.setVringNum(0, SIZE);
      const refused = async (num: number, why: RegExp): Promise<void> => {
        await assert.rejects(r.fe.setVringBase(0, num), /back-end reports failure/, `base 0x${num.toString(16)}`);
        assert.match(r.srv.warnings.at(-1) ?? '', why);
      };
      await refused(0x8000_8005, /last avail index 32773 \(position 5\) is not a position in a 5-entry packed ring/);
      await refused(0x0007_8000, /last used index 7 \(position 7\)/);
      // used position 1 wrap 1 is "ahead" of avail position 0 wrap 1: 9 descriptors in flight in a ring of 5.
      await refused(0x8001_8000, /9 descriptors between last used \(position 1, wrap 1\) and last avail \(position 0, wrap 1\), more than the ring's 5/);
      // Accepted: a fresh ring, and avail 3 descriptors ahead of used across the wrap (avail position 2 wrap 0, used position 4 wrap 1).
      await r.fe.setVringBase(0, 0x8000_8000);
      await r.fe.setVringBase(0, 0x8004_0002);
      assert.equal(await r.fe.getVringBase(0), 0x8004_0002);
      // Sizes: 5 and 7 are packed sizes; 9 exceeds the device's maximum of 8.
      await r.fe.setVringNum(0, 7);
      await assert.rejects(r.fe.setVringNum(0, 9), /back-end reports failure/);
      assert.match(r.srv.warnings.at(-1) ?? '', /packed ring size 9 is not in 1\.\.8/);
      // The Driver and Device Event Suppression areas must not overlap (§2.8.10).
      const a = r.ram.userAddr(r.ring.desc);
      await assert.rejects(r.fe.setVringAddr(0, { desc: a, avail: a + 7 * 16, used: a + 7 * 16 }), /back-end reports failure/);
      assert.match(r.srv.warnings.at(-1) ?? '', /driver event suppression area .* overlaps the device event suppression area/);
      await assert.rejects(r.fe.setVringAddr(0, { desc: a, avail: a + 7 * 16 + 2, used: a + 7 * 16 + 4 }), /back-end reports failure/);
      assert.match(r.srv.warnings.at(-1) ?? '', /misaligned packed ring/);
    } finally {
      await r.close();
    }
  });

  it('a stopped packed ring resized (SET_VRING_NUM): a kept base that fits the new size stays, one that does not is dropped with a warning (the ring starts fresh)', async () => {
    const r = await rig();
    try {
      await startRing(r, 0x8000_8000);
      await r.fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
      for (const t of ['one', 'two', 'three', 'four']) await roundTrip(r, t);
      const stopped = await r.fe.getVringBase(0);
      assert.equal(stopped.toString(16), (0x0003_0003).toString(16), 'both sides at position 3, wrap counters 0');
      // (Smaller sizes only: the ring's areas were laid out for 5 entries.)
      await r.fe.setVringNum(0, 4);
      assert.equal((await r.fe.getVringBase(0)).toString(16), stopped.toString(16), 'position 3 is in a ring of 4: kept');
      assert.ok(!r.srv.warnings.some((w) => /does not fit/.test(w)), r.srv.warnings.join('\n'));
      await r.fe.setVringNum(0, 3);
      assert.match(r.srv.warnings.at(-1) ?? '', /^vring 0: the packed ring base 0x30003 does not fit size 3 \(last avail index 3 \(position 3\) is not a position in a 3-entry packed ring.*\): the ring starts fresh$/);
      assert.equal((await r.fe.getVringBase(0)).toString(16), (0x8000_8000).toString(16), 'a fresh ring (§2.8.1): positions 0, wrap counters 1');
    } finally {
      await r.close();
    }
  });

  it('GET_INFLIGHT_FD with packed rings: the buffer is given (QEMU 7.2 needs one) but tracks nothing, and a warning says so', async () => {
    const r = await rig({ inflight: true });
    try {
      assert.ok(r.srv.warnings.some((w) => /GET_INFLIGHT_FD with VIRTIO_F_RING_PACKED: packed rings are not tracked/.test(w)), r.srv.warnings.join('\n'));
      await startRing(r, 0x8000_8000);
      await r.fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
      await roundTrip(r, 'one');
      add(r, 'HOLD');
      await waitFor(() => r.device.holds.length === 1, 'the device to hold HOLD');
      // A split ring's region would now be initialised (version 1) with HOLD's head marked in
      // flight; for the packed ring the buffer is still all zeroes (docs/vhost-user.md "Packed rings").
      const bytes = Buffer.alloc(r.inflight!.size);
      assert.equal(readSync(r.inflight!.fd, bytes, 0, bytes.length, 0), bytes.length);
      assert.ok(bytes.every((b) => b === 0), 'nothing recorded in the inflight buffer');
      r.device.holds[0]!(4);
      await waitFor(() => r.queue.hasUsed(), 'HOLD answered');
      assert.equal(r.queue.getUsed()!.token, 'HOLD');
    } finally {
      await r.close();
    }
  });

  // What a back-end restart loses with packed rings (docs/vhost-user.md "Packed rings"): the
  // connection ends without GET_VRING_BASE (the back-end died) and the front-end comes back with
  // the last base it knew, here the fresh ring's: QEMU 7.2's virtio_queue_packed_restore_last_avail_idx
  // does nothing, and the inflight buffer does not track packed rings. Ring of 5, 2 descriptors a request.
  for (const { before, outcome } of [
    // Used descriptors at positions 0 and 2 of lap 1: position 0 is AVAIL = USED = 1, a used descriptor.
    { before: ['one', 'two'], outcome: 'a device error (NEEDS_RESET)' },
    // The third list took positions 4 and 0 (lap 2): position 0 is AVAIL = 0, USED = 1, not available in lap 1.
    { before: ['one', 'two', 'three'], outcome: 'nothing: the ring looks empty' },
  ] as const) {
    it(`a new back-end given a stale packed base after ${before.length} requests finds ${outcome}; the next request is not served`, async () => {
      const r = await rig();
      try {
        await startRing(r, 0x8000_8000);
        await r.fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
        for (const t of before) await roundTrip(r, t);
        const seen = r.device.seen;
        r.fe.close();
        await r.srv.server.idle();
        r.fe = await negotiate(r.srv);
        await r.fe.setMemTable(r.ram.descriptions(), r.ram.fds);
        await startRing(r, 0x8000_8000);
        await r.fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
        add(r, 'next');
        await settle(10);
        const errors = r.srv.warnings.filter((w) => /device error on queue 0/.test(w));
        if (before.length === 2) {
          assert.equal(errors.length, 1, r.srv.warnings.join('\n'));
          assert.match(errors[0]!, /descriptor 0 has AVAIL = USED = 1/);
          assert.ok((await r.fe.getStatus()) & Status.NEEDS_RESET, 'NEEDS_RESET');
        } else {
          assert.deepEqual(errors, []);
          assert.equal(await r.fe.getStatus(), Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
        }
        assert.equal(r.device.seen, seen, 'nothing was handed to the device');
        assert.equal(r.queue.hasUsed(), false, 'the request made after the restart is not answered');
      } finally {
        await r.close();
      }
    });
  }
});
