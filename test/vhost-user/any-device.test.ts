/**
 * The back-end serves any VirtioDevice, not just virtio-test: a two-queue echo device (the
 * model in docs/vhost-user.md), driven by the low-level front-end API with our DriverQueue.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DeviceContext, VirtioDevice } from '../../src/device/device.js';
import { FrontendMemory } from '../../src/vhost-user/frontend-memory.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { native } from '../../src/vhost-user/native/index.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, ProtocolFeature, pbit } from '../../src/vhost-user/protocol.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';
import { startServer, waitFor } from './helpers.js';

class EchoDevice implements VirtioDevice {
  readonly deviceId = 0x1234;
  readonly features = 0n;
  readonly configSize = 0;
  readonly queueMaxSizes = [256, 256];
  readConfig(): void {}
  writeConfig(): void {}
  handleChain(queue: number, chain: DescriptorChain, _ctx: DeviceContext): number {
    const data = new Uint8Array(Math.min(chain.readableLength, chain.writableLength));
    chain.read(data);
    if (queue === 1) data.reverse();
    return chain.write(data);
  }
  reset(): void {}
}

describe('vhost-user back-end with another device model', () => {
  it('serves a two-queue echo device through the low-level front-end API', async () => {
    const srv = startServer({ createDevice: () => new EchoDevice() });
    const ram = new FrontendMemory([{ guestAddr: 0x10000, size: 1 << 20 }]);
    const fe = VhostUserFrontend.connect(srv.socketPath);
    const fds: number[] = [];
    try {
      await fe.setOwner();
      const offered = await fe.getFeatures();
      assert.equal(offered, bit(FeatureBit.VERSION_1) | bit(FeatureBit.RING_EVENT_IDX) | bit(FeatureBit.RING_INDIRECT_DESC) | bit(VHOST_USER_F_PROTOCOL_FEATURES));
      await fe.setProtocolFeatures((await fe.getProtocolFeatures()) & (pbit(ProtocolFeature.REPLY_ACK) | pbit(ProtocolFeature.STATUS) | pbit(ProtocolFeature.MQ)));
      fe.replyAck = true;
      assert.equal(await fe.getQueueNum(), 2);
      await fe.setFeatures(bit(FeatureBit.VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES));
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
      await fe.setMemTable(ram.descriptions(), ram.fds);
      const queues: DriverQueue<number>[] = [];
      const calls: number[] = [];
      for (const q of [0, 1]) {
        const at = ram.alloc(packedLayout(0, 64).bytes, 4096);
        const ring = packedLayout(at, 64);
        queues.push(new DriverQueue<number>(ram.memory, ringViewsFromGuest(ram.memory, ring), { eventIdx: false, indirect: false }));
        await fe.setVringNum(q, 64);
        await fe.setVringBase(q, 0);
        await fe.setVringAddr(q, { desc: ram.userAddr(ring.desc), avail: ram.userAddr(ring.avail), used: ram.userAddr(ring.used) });
        const call = native.eventfd(0, true);
        const kick = native.eventfd(0, true);
        fds.push(call, kick);
        calls.push(call);
        await fe.setVringCall(q, call);
        await fe.setVringKick(q, kick);
        await fe.setVringEnable(q, true);
      }
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
      const text = new TextEncoder().encode('hello vhost-user');
      const results: string[] = [];
      for (const q of [0, 1]) {
        const out = ram.alloc(64);
        const inn = ram.alloc(64);
        ram.memory.write(out, text);
        assert.ok(queues[q]!.add([{ addr: out, len: text.length }], [{ addr: inn, len: 64 }], q));
        if (queues[q]!.needsKick()) native.eventfdWrite(fds[2 * q + 1]!, 1);
        await waitFor(() => queues[q]!.hasUsed(), `queue ${q} used buffer`);
        const u = queues[q]!.getUsed()!;
        assert.equal(u.token, q);
        assert.equal(u.len, text.length);
        assert.ok((native.eventfdRead(calls[q]!) ?? 0) >= 1, `call fd of queue ${q} was written`);
        results.push(new TextDecoder().decode(ram.memory.slice(inn, u.len)));
      }
      assert.deepEqual(results, ['hello vhost-user', 'resu-tsohv olleh']);
      assert.equal(await fe.getVringBase(1), 1);
      assert.equal(await fe.getStatus(), Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    } finally {
      fe.close();
      for (const fd of fds) native.close(fd);
      await srv.server.idle();
      ram.close();
      await srv.close();
    }
  });
});
