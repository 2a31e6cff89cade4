/**
 * virtio-backend --control-socket (issue #14, "Live state"): the real daemon serves a front-end
 * (the TypeScript one) while JSON-line queries read its state; the numbers must be what the
 * front-end did. Also the error answers, the 64 KiB line limit, several clients, clients that
 * vanish, and `virtio-backend query` (text, --json, a missing or silent socket).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { statSync, existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REQUEST_SIZE, RESPONSE_SIZE, answer, decodeResponse, encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { FrontendMemory } from '../../src/vhost-user/frontend-memory.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { native } from '../../src/vhost-user/native/index.js';
import { ProtocolFeature, VHOST_USER_F_PROTOCOL_FEATURES, pbit } from '../../src/vhost-user/protocol.js';
import { FeatureBit, bit } from '../../src/virtio/constants.js';
import { PackedDriverQueue } from '../../src/virtio/packed-driver-queue.js';
import { packedRingLayout, packedRingViewsFromGuest } from '../../src/virtio/packed-ring.js';
import { BlkClient } from '../../src/testing/blk-client.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { Status } from '../../src/virtio/constants.js';
import { cliPath } from '../helpers/paths.js';
import { spawnNode, tempDir, waitFor, type ChildBackend } from './helpers.js';

const cli = cliPath('virtio-backend');
const run = promisify(execFile);

/** A JSON-lines connection to the control socket: send a line, await the next answer. */
class ControlClient {
  private buffer = '';
  private readonly answers: unknown[] = [];
  private waiters: ((v: unknown) => void)[] = [];
  closed = false;
  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        const v: unknown = JSON.parse(line);
        const w = this.waiters.shift();
        if (w) w(v);
        else this.answers.push(v);
      }
    });
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => {});
  }
  static connect(p: string): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path: p }, () => resolve(new ControlClient(s)));
      s.once('error', reject);
    });
  }
  next(): Promise<any> {
    const ready = this.answers.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no answer within 5 s')), 5000);
      this.waiters.push((v) => {
        clearTimeout(t);
        resolve(v);
      });
    });
  }
  sendLine(line: string): void {
    this.socket.write(`${line}\n`);
  }
  ask(request: unknown): Promise<any> {
    this.sendLine(JSON.stringify(request));
    return this.next();
  }
  close(): void {
    this.socket.destroy();
  }
}

async function startDaemon(dir: string, device: string[] = ['--device', 'virtio-test']): Promise<{ be: ChildBackend; sock: string; ctl: string }> {
  const sock = path.join(dir, 'vu.sock');
  const ctl = path.join(dir, 'ctl.sock');
  const be = spawnNode(cli, [...device, '--socket-path', sock, '--control-socket', ctl, '--quiet']);
  await be.waitForLine(/listening on/);
  return { be, sock, ctl };
}

async function stop(be: ChildBackend): Promise<void> {
  if (be.proc.exitCode === null) be.proc.kill('SIGTERM');
  const { code } = await be.exited;
  assert.equal(code, 0, be.stderr.join('\n'));
}

describe('virtio-backend --control-socket', () => {
  it('reports status, queue indices, counters and one available chain of a live virtio-test front-end', async () => {
    const tmp = tempDir();
    const { be, sock, ctl } = await startDaemon(tmp.dir);
    let client: VirtioTestClient | undefined;
    try {
      assert.equal(statSync(ctl).mode & 0o777, 0o600, 'owner-only control socket');
      const c = await ControlClient.connect(ctl);

      // No front-end yet: status says so, the queue queries refuse by class.
      const idle = await c.ask({ execute: 'query-status', id: 'a' });
      assert.deepEqual(idle, { return: { name: 'virtio-test', 'device-id': 45, connected: false, connections: 0 }, id: 'a' });
      const noFe = await c.ask({ execute: 'query-queue-status', arguments: { queue: 0 } });
      assert.equal(noFe.error.class, 'DeviceNotActive');
      assert.equal((await c.ask({ execute: 'query-stats' })).error.class, 'DeviceNotActive');

      client = await VirtioTestClient.connect({ socketPath: sock, indirect: false, queueSize: 64 });
      const sent = [1, 2, 3, 4, 5, 6, 7];
      for (const n of sent.slice(0, 3)) assert.deepEqual(await client.request(n), answer(requestFor(n)));
      assert.deepEqual(await client.requestMany(sent.slice(3)), sent.slice(3).map((n) => answer(requestFor(n))));

      const st = (await c.ask({ execute: 'query-status' })).return;
      assert.equal(st.connected, true);
      assert.equal(st.connections, 1);
      assert.equal(st['num-vqs'], 1);
      assert.equal(st['features-ok'], true);
      assert.equal(st['guest-features'], `0x${client.features.toString(16).padStart(16, '0')}`, 'the features the client negotiated');
      assert.equal(st.status & (Status.DRIVER_OK | Status.FEATURES_OK | Status.NEEDS_RESET), Status.DRIVER_OK | Status.FEATURES_OK);
      assert.match(st['status-names'], /DRIVER_OK/);
      assert.match(st['guest-features-names'], /VIRTIO_F_VERSION_1/);
      assert.doesNotMatch(st['guest-features-names'], /INDIRECT/);
      assert.match(st['host-features-names'], /VIRTIO_F_RING_INDIRECT_DESC/);
      assert.equal(st['config-generation'], 0);
      assert.deepEqual(st.queues, [{ 'queue-index': 0, 'vring-num': 64, started: true, enabled: true, active: true }]);

      const q = (await c.ask({ execute: 'query-queue-status', arguments: { queue: 0 } })).return;
      assert.equal(q['vring-num'], 64);
      assert.equal(q.layout, 'split');
      assert.equal(q.ready, true, 'a ring the front-end started is ready');
      assert.equal(q.active, true);
      assert.equal(q['last-avail-idx'], client.availIdx());
      assert.equal(q['used-idx'], client.usedIdx());
      assert.equal(q['published-used-idx'], client.usedIdx());
      assert.equal(q['last-avail-idx'], sent.length);
      assert.equal(q.inuse, 0);
      assert.equal(q['event-idx'], true);
      assert.equal(q['kicks-enabled'], true, 'idle with kicks re-enabled (§2.7.10)');
      assert.equal(q['avail-event'], sent.length, 'avail_event asks for the next kick');
      assert.ok(q['vring-desc'] > 0 && q['vring-desc'] % 16 === 0, 'the front-end user address of the descriptor table');
      assert.equal(q.counters.requests, sent.length, 'one request counted per request sent');
      assert.equal(q.counters['bytes-read'], 48 * sent.length);
      assert.equal(q.counters['bytes-written'], 12 * sent.length);
      assert.equal(q.counters.errors, 0);
      assert.ok(q.counters.kicks >= 1 && q.counters.kicks <= sent.length);
      assert.equal(q.counters['notifications-sent'] + q.counters['notifications-suppressed'], q.counters.flushes);

      const stats = (await c.ask({ execute: 'query-stats' })).return;
      assert.equal(stats.requests, sent.length);
      assert.deepEqual(stats.queues[0], { 'queue-index': 0, ...q.counters });

      // A chain made available and not kicked: decoded without being taken.
      const A = 0x4030_0000;
      const before = client.availIdx();
      assert.ok(client.queue.add([{ addr: A, len: 48 }], [{ addr: A + 48, len: 12 }, { addr: A + 100, len: 20 }], { slot: -1, resolve() {}, reject() {} }));
      const el = await c.ask({ execute: 'query-queue-element', arguments: { queue: 0 } });
      assert.ok(el.return, JSON.stringify(el));
      const e = el.return;
      assert.equal(e['avail-index'], before);
      assert.equal(e.readable, 48);
      assert.equal(e.writable, 32);
      assert.equal(e['descriptor-count'], 3);
      assert.deepEqual(
        e.descs.map((d: any) => [d.addr, d.len, d.flags]),
        [
          [A, 48, ['next']],
          [A + 48, 12, ['next', 'write']],
          [A + 100, 20, ['write']],
        ],
      );
      assert.equal(e.descs[0].index, e.index, 'the head');
      assert.equal(e.descs[0].next, e.descs[1].index);
      // By descriptor index, the same chain.
      const byIndex = (await c.ask({ execute: 'query-queue-element', arguments: { queue: 0, index: e.index } })).return;
      assert.deepEqual(byIndex.descs, e.descs);
      assert.equal(byIndex['avail-index'], null);
      // Not consumed: the device still has it ahead.
      const q2 = (await c.ask({ execute: 'query-queue-status', arguments: { queue: 0 } })).return;
      assert.equal(q2['last-avail-idx'], before);
      assert.equal(q2['avail-idx'], before + 1);
      assert.equal(q2.counters.requests, sent.length);
      assert.equal(q2.inuse, 0);

      // A descriptor that breaks a rule: a VirtioError answer, and the device is unharmed.
      const bad = await c.ask({ execute: 'query-queue-element', arguments: { queue: 0, index: 60 } });
      assert.equal(bad.error?.class, 'VirtioError', JSON.stringify(bad));
      assert.equal(bad.error.code, 'DESC_ZERO_LENGTH');
      assert.match(bad.error.desc, /length 0/);
      const after = (await c.ask({ execute: 'query-status' })).return;
      assert.equal(after.status & Status.NEEDS_RESET, 0, 'a query never breaks the device');
      assert.equal(after['num-vqs'], 1);

      // Errors, QMP's way.
      assert.equal((await c.ask({ execute: 'query-queue-status', arguments: { queue: 1 } })).error.class, 'GenericError');
      assert.match((await c.ask({ execute: 'query-queue-status', arguments: { queue: 1 } })).error.desc, /queue.*1/);
      assert.equal((await c.ask({ execute: 'query-queue-status', arguments: { queue: -1 } })).error.class, 'GenericError');
      assert.match((await c.ask({ execute: 'query-queue-status' })).error.desc, /"queue" is missing/);
      assert.match((await c.ask({ execute: 'query-queue-element', arguments: { queue: 0, index: 'x' } })).error.desc, /"index"/);
      assert.match((await c.ask({ execute: 'query-status', arguments: { bogus: 1 } })).error.desc, /"bogus" is unexpected/);
      assert.deepEqual(await c.ask({ execute: 'quit', id: 9 }), {
        error: { class: 'CommandNotFound', desc: 'The command quit has not been found (known: query-status, query-queue-status, query-queue-element, query-stats, query-commands)' },
        id: 9,
      });
      c.sendLine('{"execute": ');
      assert.match((await c.next()).error.desc, /^JSON parse error/);
      assert.equal((await c.ask([1, 2])).error.class, 'GenericError');
      assert.match((await c.ask({ arguments: {} })).error.desc, /"execute"/);
      c.close();

      // The front-end leaves: status says so.
      client.close();
      client = undefined;
      await be.waitForLine(/front-end 1 disconnected/);
      const c2 = await ControlClient.connect(ctl);
      assert.deepEqual((await c2.ask({ execute: 'query-status' })).return, { name: 'virtio-test', 'device-id': 45, connected: false, connections: 1 });
      c2.close();
    } finally {
      client?.close();
      await stop(be);
      tmp.remove();
    }
    assert.equal(existsSync(ctl), false, 'the control socket is removed on exit');
  });

  it('a packed ring (--packed): indices with their wrap counters, a list decoded and left available', async () => {
    const tmp = tempDir();
    const { be, sock, ctl } = await startDaemon(tmp.dir, ['--device', 'virtio-test', '--packed']);
    const ram = new FrontendMemory([{ guestAddr: 0x10000, size: 1 << 20 }]);
    const fe = VhostUserFrontend.connect(sock);
    const fds: number[] = [];
    try {
      const SIZE = 8;
      await fe.setOwner();
      await fe.setProtocolFeatures((await fe.getProtocolFeatures()) & (pbit(ProtocolFeature.REPLY_ACK) | pbit(ProtocolFeature.STATUS)));
      fe.replyAck = true;
      const features = bit(FeatureBit.VERSION_1) | bit(FeatureBit.RING_PACKED);
      await fe.setFeatures(features | bit(VHOST_USER_F_PROTOCOL_FEATURES));
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
      await fe.setMemTable(ram.descriptions(), ram.fds);
      const layout = packedRingLayout(ram.alloc(packedRingLayout(0, SIZE).bytes, 4096), SIZE);
      const queue = new PackedDriverQueue<number>(ram.memory, packedRingViewsFromGuest(ram.memory, layout), { eventIdx: false, indirect: false });
      const call = native.eventfd(0, true);
      const kick = native.eventfd(0, true);
      fds.push(call, kick);
      await fe.setVringCall(0, call);
      await fe.setVringNum(0, SIZE);
      await fe.setVringBase(0, 0x8000_8000); // both positions 0, wrap counters 1 (§2.8.1)
      await fe.setVringAddr(0, { desc: ram.userAddr(layout.desc), avail: ram.userAddr(layout.driver), used: ram.userAddr(layout.device) });
      await fe.setVringKick(0, kick);
      await fe.setVringEnable(0, true);
      await fe.setStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
      const buffers: number[] = [];
      const add = (n: number): number => {
        const at = ram.alloc(64);
        encodeRequest(requestFor(n), ram.memory.slice(at, REQUEST_SIZE));
        assert.ok(queue.add([{ addr: at, len: REQUEST_SIZE }], [{ addr: at + REQUEST_SIZE, len: RESPONSE_SIZE }], n));
        buffers.push(at);
        return at;
      };
      const first = add(1);
      native.eventfdWrite(kick, 1);
      await waitFor(() => queue.hasUsed(), 'the answer to request 1');
      assert.equal(queue.getUsed()!.token, 1);
      assert.deepEqual(decodeResponse(ram.memory.slice(first + REQUEST_SIZE, RESPONSE_SIZE)), answer(requestFor(1)));

      const c = await ControlClient.connect(ctl);
      const st = (await c.ask({ execute: 'query-status' })).return;
      assert.equal(st['guest-features'], `0x${features.toString(16).padStart(16, '0')}`);
      assert.match(st['guest-features-names'], /VIRTIO_F_RING_PACKED/);
      const q = (await c.ask({ execute: 'query-queue-status', arguments: { queue: 0 } })).return;
      assert.equal(q.layout, 'packed');
      assert.equal(q['last-avail-idx'], 0x8000 | 2, 'position 2, wrap counter 1: one list of two descriptors taken');
      assert.equal(q['used-idx'], 0x8000 | 2);
      assert.equal(q['last-avail-idx'], queue.nextAvail);
      assert.equal(q['vring-desc'], ram.userAddr(layout.desc));
      assert.equal(q['vring-avail'], ram.userAddr(layout.driver), 'the Driver Event Suppression area (§2.8.10)');
      assert.equal(q.counters.requests, 1);

      const second = add(2); // available, not kicked
      const e = (await c.ask({ execute: 'query-queue-element', arguments: { queue: 0 } })).return;
      assert.equal(e['avail-index'], 0x8000 | 2);
      assert.deepEqual(
        e.descs.map((d: any) => [d.index, d.addr, d.len, d.flags]),
        [
          [2, second, REQUEST_SIZE, ['next', 'avail']],
          [3, second + REQUEST_SIZE, RESPONSE_SIZE, ['write', 'avail']],
        ],
      );
      assert.equal(e.descs[1].id, e.index, 'the buffer id, from the last descriptor (§2.8.6)');
      const other = await c.ask({ execute: 'query-queue-element', arguments: { queue: 0, index: 5 } });
      assert.equal(other.error.class, 'GenericError');
      assert.match(other.error.desc, /next available position \(2\)/);
      const q2 = (await c.ask({ execute: 'query-queue-status', arguments: { queue: 0 } })).return;
      assert.equal(q2['last-avail-idx'], 0x8000 | 2, 'not taken');
      assert.equal(q2.inuse, 0);
      // The device takes it when kicked, as if nobody had looked.
      native.eventfdWrite(kick, 1);
      await waitFor(() => queue.hasUsed(), 'the answer to request 2');
      assert.equal(queue.getUsed()!.token, 2);
      assert.deepEqual(decodeResponse(ram.memory.slice(second + REQUEST_SIZE, RESPONSE_SIZE)), answer(requestFor(2)));
      const q3 = (await c.ask({ execute: 'query-queue-status', arguments: { queue: 0 } })).return;
      assert.equal(q3['last-avail-idx'], 0x8000 | 4);
      assert.equal(q3.counters.requests, 2);
      assert.equal(q3.counters.errors, 0);
      c.close();
    } finally {
      fe.close();
      for (const fd of fds) native.close(fd);
      await stop(be);
      ram.close();
      tmp.remove();
    }
  });

  it('closes a connection whose line exceeds 64 KiB, serves several clients at once, survives clients that vanish', async () => {
    const tmp = tempDir();
    const { be, sock, ctl } = await startDaemon(tmp.dir);
    try {
      // Several at once, answers in order per client.
      const clients = await Promise.all([0, 1, 2, 3].map(() => ControlClient.connect(ctl)));
      for (const [i, c] of clients.entries()) {
        c.sendLine(JSON.stringify({ execute: 'query-status', id: i }));
        c.sendLine(JSON.stringify({ execute: 'query-commands', id: i + 100 }));
      }
      for (const [i, c] of clients.entries()) {
        assert.equal((await c.next()).id, i);
        assert.equal((await c.next()).id, i + 100);
      }
      // A request split across writes is one line.
      const split = clients[0]!;
      split.socket.write('{"execute":"query-');
      await new Promise((r) => setTimeout(r, 50));
      split.socket.write('status","id":"split"}\n');
      assert.equal((await split.next()).id, 'split');

      // Vanishing clients: mid-line, and with answers unread.
      const gone1 = await ControlClient.connect(ctl);
      gone1.socket.write('{"execute":"query-st');
      gone1.socket.destroy();
      const gone2 = await ControlClient.connect(ctl);
      for (let i = 0; i < 200; i++) gone2.sendLine('{"execute":"query-status"}');
      gone2.socket.destroy();

      // 64 KiB: exactly the limit is a line; one byte more closes the connection with an error.
      const ok = await ControlClient.connect(ctl);
      const padded = JSON.stringify({ execute: 'query-status', id: 'x'.repeat(64 * 1024 - 40) });
      const exact = padded.slice(0, -2) + ' '.repeat(64 * 1024 - padded.length) + padded.slice(-2);
      assert.equal(Buffer.byteLength(exact), 64 * 1024);
      ok.sendLine(exact);
      assert.equal((await ok.next()).return.connected, false);
      const long = await ControlClient.connect(ctl);
      long.socket.write('x'.repeat(64 * 1024 + 1)); // no newline: never a line
      const refusal = await long.next();
      assert.equal(refusal.error.class, 'GenericError');
      assert.match(refusal.error.desc, /longer than 65536 bytes/);
      await waitFor(() => long.closed, 'the control connection to close');

      // The daemon is unharmed: other clients and the vhost-user side still work.
      const fe = await VirtioTestClient.connect({ socketPath: sock });
      try {
        assert.deepEqual(await fe.request(10), answer(requestFor(10)));
        const q = (await clients[1]!.ask({ execute: 'query-queue-status', arguments: { queue: 0 } })).return;
        assert.equal(q.counters.requests, 1);
      } finally {
        fe.close();
      }
      for (const c of [...clients, ok]) c.close();
    } finally {
      await stop(be);
      tmp.remove();
    }
  });

  it('works for every registered device: rng idle, blk with a front-end (counters follow its requests)', async () => {
    const tmp = tempDir();
    const rngDir = path.join(tmp.dir, 'rng');
    const blkDir = path.join(tmp.dir, 'blk');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(rngDir);
    mkdirSync(blkDir);
    const image = path.join(blkDir, 'disk.img');
    writeFileSync(image, Buffer.alloc(1 << 20));
    const rng = await startDaemon(rngDir, ['--device', 'rng']);
    const blk = await startDaemon(blkDir, ['--device', 'blk', '--image', image]);
    let client: BlkClient | undefined;
    try {
      const r = await ControlClient.connect(rng.ctl);
      assert.deepEqual((await r.ask({ execute: 'query-status' })).return, { name: 'rng', 'device-id': 4, connected: false, connections: 0 });
      r.close();

      client = await BlkClient.connect({ socketPath: blk.sock });
      const c = await ControlClient.connect(blk.ctl);
      const base = (await c.ask({ execute: 'query-stats' })).return;
      const data = new Uint8Array(4096).fill(0xa5);
      await client.write(8, data);
      const got = await client.read(8, 4096);
      assert.deepEqual(got.data, data);
      const s = (await c.ask({ execute: 'query-stats' })).return;
      assert.equal(s.name, 'blk');
      assert.equal(s.requests - base.requests, 2, 'a write and a read');
      assert.ok(s['bytes-read'] - base['bytes-read'] >= 4096 + 16, 'the write request carried 4096 bytes');
      assert.ok(s['bytes-written'] - base['bytes-written'] >= 4096 + 1, 'the read answer carried 4096 bytes');
      const st = (await c.ask({ execute: 'query-status' })).return;
      assert.equal(st['device-id'], 2);
      assert.equal(st.connected, true);
      c.close();
    } finally {
      client?.close();
      await stop(rng.be);
      await stop(blk.be);
      tmp.remove();
    }
  });
});

describe('virtio-backend query', () => {
  it('prints text, or the JSON line with --json; exit 1 for an error answer', async () => {
    const tmp = tempDir();
    const { be, sock, ctl } = await startDaemon(tmp.dir);
    const fe = await VirtioTestClient.connect({ socketPath: sock });
    try {
      await fe.requestMany([1, 2, 3]);
      const text = (await run(process.execPath, [cli, 'query', ctl])).stdout;
      assert.match(text, /^name: +virtio-test$/m);
      assert.match(text, /^connected: +true$/m);
      assert.match(text, new RegExp(`^guest-features: +0x${fe.features.toString(16).padStart(16, '0')}$`, 'm'));
      const queue = (await run(process.execPath, [cli, 'query', ctl, 'queue', '0'])).stdout;
      assert.match(queue, /^last-avail-idx: +3$/m);
      assert.match(queue, /^ {2}requests: +3$/m);
      assert.match(queue, /^vring-desc: +0x[0-9a-f]{16}$/m);
      const stats = JSON.parse((await run(process.execPath, [cli, 'query', ctl, 'stats', '--json'])).stdout);
      assert.equal(stats.return.requests, 3);
      const none = await run(process.execPath, [cli, 'query', ctl, 'element', '0']).then(
        () => assert.fail('exit 0 for an error answer'),
        (e: { code: number; stderr: string }) => e,
      );
      assert.equal(none.code, 1);
      assert.match(none.stderr, /GenericError: queue 0 has no available buffer/);
      const usage = await run(process.execPath, [cli, 'query', ctl, 'queue']).catch((e: { code: number; stderr: string }) => e);
      assert.equal((usage as { code: number }).code, 2);
      assert.match((usage as { stderr: string }).stderr, /'queue' takes 1 argument/);
      const help = (await run(process.execPath, [cli, '--help'])).stdout;
      assert.match(help, /--control-socket PATH/);
      assert.match(help, /query PATH \[status \| queue N \| element N \[I\] \| stats\] \[--json\]/);
    } finally {
      fe.close();
      await stop(be);
      tmp.remove();
    }
  });

  it('says clearly when the socket is missing or the daemon does not answer within 2 s', async () => {
    const tmp = tempDir();
    const missing = path.join(tmp.dir, 'nothing.sock');
    const silent = path.join(tmp.dir, 'silent.sock');
    const server = net.createServer(() => {}); // accepts, never answers
    await new Promise<void>((r) => server.listen(silent, r));
    try {
      const a = await run(process.execPath, [cli, 'query', missing]).catch((e: { code: number; stderr: string }) => e);
      assert.equal((a as { code: number }).code, 1);
      assert.match((a as { stderr: string }).stderr, /nothing\.sock: no such control socket/);
      const t0 = Date.now();
      const b = await run(process.execPath, [cli, 'query', silent, 'stats']).catch((e: { code: number; stderr: string }) => e);
      assert.equal((b as { code: number }).code, 1);
      assert.match((b as { stderr: string }).stderr, /did not answer within 2 s/);
      assert.ok(Date.now() - t0 >= 2000);
    } finally {
      server.close(); // (its callback waits for connections the query closed already: not awaited)
      tmp.remove();
    }
  });
});
