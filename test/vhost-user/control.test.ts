/**
 * The back-end's control socket in process (issue #14, "Live state"): control-commands.ts's
 * answer()/answerLine() on fake and live targets, every command and every error answer with its
 * exact fields, and control-server.ts's serveControl on this event loop (JSON lines, the 64 KiB
 * line limit, several clients, clients that vanish or stop reading, the socket file's mode, its
 * removal, a stale socket replaced, a live one refused). The daemon's own wiring is
 * control-socket.test.ts (child processes); this file is what the mutation scope sees.
 */
import assert from 'node:assert/strict';
import { existsSync, lstatSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { answer as testAnswer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import type { BackendSession } from '../../src/vhost-user/backend-session.js';
import { CONTROL_COMMANDS, answer, answerLine, type ControlTarget } from '../../src/vhost-user/control-commands.js';
import { MAX_CONTROL_LINE, serveControl } from '../../src/vhost-user/control-server.js';
import { VhostUserFrontend } from '../../src/vhost-user/frontend.js';
import { native } from '../../src/vhost-user/native/index.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { Status } from '../../src/virtio/constants.js';
import { leakedFds, openFds, socketModeInWorker, startServer, tempDir, waitFor, type TestServer } from './helpers.js';

const KNOWN = 'query-status, query-queue-status, query-queue-element, query-stats, query-commands';
const idleTarget: ControlTarget = { name: 'virtio-test', deviceId: 45, session: null, connections: 0 };
const generic = (desc: string): { error: { class: string; desc: string } } => ({ error: { class: 'GenericError', desc } });
const notActive = { error: { class: 'DeviceNotActive', desc: 'no front-end is connected' } };

/** A JSON-lines connection to the control socket: send a line, await the next answer. */
class ControlClient {
  private buffer = '';
  readonly answers: any[] = [];
  private waiters: ((v: unknown) => void)[] = [];
  closed = false;
  ended = false;
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
    socket.on('end', () => (this.ended = true));
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => {});
  }
  static connect(p: string, options: { allowHalfOpen?: boolean } = {}): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path: p, allowHalfOpen: options.allowHalfOpen ?? false }, () => resolve(new ControlClient(s)));
      s.once('error', reject);
    });
  }
  next(): Promise<any> {
    if (this.answers.length > 0) return Promise.resolve(this.answers.shift());
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no answer within 2 s')), 2000);
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

/** The target the daemon builds (src/cli/virtio-backend.ts): the server's live session and count. */
function targetOf(srv: TestServer): ControlTarget {
  return {
    name: 'virtio-test',
    deviceId: 45,
    get session() {
      return srv.server.session;
    },
    get connections() {
      return srv.server.connections;
    },
  };
}

const hex16 = (v: bigint): string => `0x${v.toString(16).padStart(16, '0')}`;

describe('control commands: answer() and answerLine()', () => {
  it('query-commands names every command, in order', () => {
    assert.deepEqual(CONTROL_COMMANDS, ['query-status', 'query-queue-status', 'query-queue-element', 'query-stats', 'query-commands']);
    assert.deepEqual(answer({ execute: 'query-commands' }, idleTarget), { return: CONTROL_COMMANDS.map((name) => ({ name })) });
    assert.deepEqual(answerLine('{"execute":"query-commands","arguments":{}}', idleTarget), { return: CONTROL_COMMANDS.map((name) => ({ name })) });
  });

  it('query-status without a front-end (none yet, or a closed session): name, device id, connected false, connections', () => {
    assert.deepEqual(answer({ execute: 'query-status' }, idleTarget), { return: { name: 'virtio-test', 'device-id': 45, connected: false, connections: 0 } });
    const closed = { name: 'rng', deviceId: 4, session: { isClosed: true } as BackendSession, connections: 3 };
    assert.deepEqual(answer({ execute: 'query-status', id: 1 }, closed), { return: { name: 'rng', 'device-id': 4, connected: false, connections: 3 }, id: 1 });
    for (const execute of ['query-stats', 'query-queue-status', 'query-queue-element']) {
      const args = execute === 'query-stats' ? {} : { queue: 0 };
      assert.deepEqual(answer({ execute, arguments: args }, idleTarget), notActive, `${execute}, no session`);
      assert.deepEqual(answer({ execute, arguments: args }, closed), notActive, `${execute}, closed session`);
    }
  });

  it('a line that is not JSON: the parser message, no id', () => {
    for (const line of ['{"execute": ', '', 'query-status', '{"id": 1,}']) {
      let message = '';
      try {
        JSON.parse(line);
      } catch (e) {
        message = (e as Error).message;
      }
      assert.deepEqual(answerLine(line, idleTarget), generic(`JSON parse error: ${message}`), line);
    }
  });

  it('a request that is not an object, or has no command name', () => {
    const notObject = generic('a request is a JSON object: {"execute": "query-status"}');
    for (const r of [null, 5, 'query-status', true, [1, 2], [], ['query-status']]) {
      const a = answer(r, idleTarget);
      assert.deepEqual(a, notObject, JSON.stringify(r));
      assert.equal('id' in a, false);
    }
    assert.deepEqual(answerLine('[{"execute":"query-status","id":1}]', idleTarget), notObject);
    const noExecute = generic('the request has no "execute" member naming a command');
    assert.deepEqual(answer({}, idleTarget), noExecute);
    assert.deepEqual(answer({ arguments: {} }, idleTarget), noExecute);
    assert.deepEqual(answer({ execute: 5, id: 'x' }, idleTarget), { ...noExecute, id: 'x' });
    assert.deepEqual(answer({ execute: null }, idleTarget), noExecute);
    assert.deepEqual(answer({ execute: ['query-status'] }, idleTarget), noExecute);
  });

  it('"arguments" must be an object (absent or null-ish defaults to none)', () => {
    const bad = generic('"arguments" must be an object');
    for (const args of [[], [0], 5, 'queue', true, 0, '']) {
      assert.deepEqual(answer({ execute: 'query-status', arguments: args }, idleTarget), bad, JSON.stringify(args));
    }
    const ok = { return: { name: 'virtio-test', 'device-id': 45, connected: false, connections: 0 } };
    assert.deepEqual(answer({ execute: 'query-status', arguments: null }, idleTarget), ok, 'null is no arguments (??)');
    assert.deepEqual(answer({ execute: 'query-status', arguments: {} }, idleTarget), ok);
    assert.deepEqual(answer({ execute: 'query-status' }, idleTarget), ok);
  });

  it('the id is echoed as given, whatever its type; undefined is null; none, no member', () => {
    for (const id of [0, 1, 'a', '', false, true, null, { x: [1] }, [1, 'b']]) {
      assert.deepEqual(answer({ execute: 'query-commands', id }, idleTarget), { return: CONTROL_COMMANDS.map((name) => ({ name })), id }, JSON.stringify(id));
      assert.deepEqual(answer({ execute: 'nope', id }, idleTarget).id, id);
    }
    assert.deepEqual(answer({ execute: 'query-status', id: undefined }, idleTarget), {
      return: { name: 'virtio-test', 'device-id': 45, connected: false, connections: 0 },
      id: null,
    });
    assert.equal('id' in answer({ execute: 'query-status' }, idleTarget), false);
    assert.equal('id' in answer({ execute: 'nope' }, idleTarget), false);
    assert.deepEqual(answerLine('{"id":7}', idleTarget), { ...generic('the request has no "execute" member naming a command'), id: 7 });
  });

  it('an unknown command: CommandNotFound naming it and the known ones', () => {
    assert.deepEqual(answer({ execute: 'quit', id: 9 }, idleTarget), {
      error: { class: 'CommandNotFound', desc: `The command quit has not been found (known: ${KNOWN})` },
      id: 9,
    });
    assert.deepEqual(answer({ execute: '' }, idleTarget), { error: { class: 'CommandNotFound', desc: `The command  has not been found (known: ${KNOWN})` } });
    assert.deepEqual((answer({ execute: 'QUERY-STATUS' }, idleTarget) as any).error, { class: 'CommandNotFound', desc: `The command QUERY-STATUS has not been found (known: ${KNOWN})` });
  });

  it('arguments a command does not take: "Parameter ... is unexpected", before the front-end is looked at', () => {
    const cases: [string, Record<string, unknown>, string][] = [
      ['query-commands', { x: 1 }, 'x'],
      ['query-status', { queue: 0 }, 'queue'],
      ['query-status', { bogus: 1, other: 2 }, 'bogus'],
      ['query-stats', { queue: 0 }, 'queue'],
      ['query-queue-status', { queue: 0, index: 0 }, 'index'],
      ['query-queue-element', { queue: 0, index: 0, all: true }, 'all'],
    ];
    for (const [execute, args, bad] of cases) {
      assert.deepEqual(answer({ execute, arguments: args }, idleTarget), generic(`Parameter "${bad}" is unexpected`), execute);
    }
  });

  it('a target that throws: an Error is a GenericError with its message, anything else its string, a VirtioError its code and section', () => {
    const throwing = (x: unknown): ControlTarget => ({
      name: 'x',
      deviceId: 1,
      connections: 0,
      get session(): BackendSession | null {
        throw x;
      },
    });
    assert.deepEqual(answer({ execute: 'query-stats', id: 2 }, throwing(new RangeError('boom'))), { ...generic('boom'), id: 2 });
    assert.deepEqual(answer({ execute: 'query-status' }, throwing('plain string')), generic('plain string'));
    assert.deepEqual(answer({ execute: 'query-status' }, throwing(42)), generic('42'));
    assert.deepEqual(answer({ execute: 'query-status', id: 'v' }, throwing(new VirtioError('DESC_LOOP', 'a loop', 'virtio 1.2 §2.7.5.2'))), {
      error: { class: 'VirtioError', desc: 'a loop (DESC_LOOP, virtio 1.2 §2.7.5.2)', code: 'DESC_LOOP', section: 'virtio 1.2 §2.7.5.2' },
      id: 'v',
    });
    assert.deepEqual(answer({ execute: 'query-status' }, throwing(new VirtioError('DESC_ZERO_LENGTH', 'empty'))), {
      error: { class: 'VirtioError', desc: 'empty (DESC_ZERO_LENGTH)', code: 'DESC_ZERO_LENGTH', section: null },
    });
  });
});

describe('control commands on a live in-process back-end', () => {
  let srv: TestServer;
  let target: ControlTarget;
  before(() => {
    srv = startServer();
    target = targetOf(srv);
  });
  after(async () => {
    await srv.close();
  });

  it('a front-end that only set its owner: connected, no queue running', async () => {
    const fe = VhostUserFrontend.connect(srv.socketPath);
    try {
      await fe.setOwner();
      await fe.getFeatures(); // a round trip: the back-end has the session
      const st = answer({ execute: 'query-status' }, target);
      assert.ok('return' in st);
      const r = st.return as any;
      assert.equal(r.connected, true);
      assert.equal(r.connections, 1);
      assert.equal(r['vhost-user-features'], hex16(0n), 'nothing acked yet');
      assert.equal(r['protocol-features'], hex16(0n));
      assert.deepEqual(r.queues, [{ 'queue-index': 0, 'vring-num': 256, started: false, enabled: false, active: false }]);
      assert.deepEqual(answer({ execute: 'query-queue-element', arguments: { queue: 0 } }, target), {
        error: { class: 'DeviceNotActive', desc: 'queue 0 is not running (no started ring, or the device needs a reset)' },
      });
      const q = answer({ execute: 'query-queue-status', arguments: { queue: 0 } }, target) as any;
      assert.equal(q.return.ready, false);
      assert.equal(q.return['vring-desc'], 0, 'no addresses set');
      assert.equal(q.return['last-avail-idx'], null, 'no ring');
    } finally {
      fe.close();
      await srv.server.idle();
    }
  });

  it('status, queue status, stats and elements follow what a virtio-test front-end did', async () => {
    const client = await VirtioTestClient.connect({ socketPath: srv.socketPath, indirect: false, queueSize: 64 });
    try {
      const sent = [1, 2, 3, 4, 5];
      for (const n of sent) assert.deepEqual(await client.request(n), testAnswer(requestFor(n)));
      const session = srv.server.session!;

      const st = (answer({ execute: 'query-status', id: 's' }, target) as any);
      assert.equal(st.id, 's');
      const r = st.return;
      assert.equal(r.name, 'virtio-test');
      assert.equal(r['device-id'], 45);
      assert.equal(r.connected, true);
      assert.equal(r.connections, 2);
      assert.equal(r['num-vqs'], 1);
      assert.equal(r['guest-features'], hex16(client.features));
      assert.equal(r['vhost-user-features'], hex16(session.ackedFeatures!));
      assert.match(r['vhost-user-features'], /^0x[0-9a-f]{16}$/);
      assert.equal(BigInt(r['vhost-user-features']) & (1n << 30n), 1n << 30n, 'VHOST_USER_F_PROTOCOL_FEATURES acked');
      assert.equal(r['protocol-features'], hex16(session.protocolFeatures));
      assert.notEqual(session.protocolFeatures, 0n);
      assert.equal(r.status & (Status.DRIVER_OK | Status.FEATURES_OK), Status.DRIVER_OK | Status.FEATURES_OK);
      assert.deepEqual(r.queues, [{ 'queue-index': 0, 'vring-num': 64, started: true, enabled: true, active: true }]);

      const q = (answer({ execute: 'query-queue-status', arguments: { queue: 0 } }, target) as any).return;
      assert.equal(q.name, 'virtio-test');
      assert.equal(q['queue-index'], 0);
      assert.equal(q.layout, 'split');
      assert.equal(q['last-avail-idx'], sent.length);
      assert.equal(q.counters.requests, sent.length);
      assert.equal(q['vring-desc'], session.vrings[0]!.addresses!.desc);
      assert.notEqual(q['vring-desc'], null);

      const stats = (answer({ execute: 'query-stats' }, target) as any).return;
      assert.equal(stats.name, 'virtio-test');
      assert.equal(stats.connections, 2);
      assert.equal(stats.requests, sent.length);
      assert.deepEqual(stats.queues[0], { 'queue-index': 0, ...q.counters });

      // Nothing available: a GenericError naming the position.
      assert.deepEqual(answer({ execute: 'query-queue-element', arguments: { queue: 0 } }, target), generic(`queue 0 has no available buffer (last-avail-idx ${sent.length})`));

      // One chain made available, not kicked: decoded, not taken.
      const A = 0x4030_0000;
      assert.ok(client.queue.add([{ addr: A, len: 48 }], [{ addr: A + 48, len: 12 }], { slot: -1, resolve() {}, reject() {} }));
      const e = (answer({ execute: 'query-queue-element', arguments: { queue: 0 }, id: 3 }, target) as any);
      assert.equal(e.id, 3);
      assert.equal(e.return.name, 'virtio-test');
      assert.equal(e.return['queue-index'], 0);
      assert.equal(e.return['avail-index'], sent.length);
      assert.equal(e.return.readable, 48);
      assert.equal(e.return.writable, 12);
      assert.deepEqual(e.return.descs.map((d: any) => [d.addr, d.len, d.flags]), [
        [A, 48, ['next']],
        [A + 48, 12, ['write']],
      ]);
      const head = e.return.index;
      // By index, at both ends of the range.
      const byIndex = (answer({ execute: 'query-queue-element', arguments: { queue: 0, index: head } }, target) as any).return;
      assert.deepEqual(byIndex.descs, e.return.descs);
      assert.equal(byIndex['avail-index'], null);
      assert.equal(head, 0, 'the first free descriptor');
      assert.deepEqual(answer({ execute: 'query-queue-element', arguments: { queue: 0, index: 0 } }, target), { return: { ...e.return, 'avail-index': null } });
      // 65535 is an index (the ring says it is out of range), 65536 is not.
      assert.deepEqual(answer({ execute: 'query-queue-element', arguments: { queue: 0, index: 0xffff } }, target), {
        error: {
          class: 'VirtioError',
          desc: 'available head 65535 ≥ queue size 64 (DESC_INDEX_OUT_OF_RANGE, virtio 1.2 §2.7.6)',
          code: 'DESC_INDEX_OUT_OF_RANGE',
          section: 'virtio 1.2 §2.7.6',
        },
      });
      // A descriptor that breaks a rule (never written: length 0).
      assert.deepEqual(answer({ execute: 'query-queue-element', arguments: { queue: 0, index: 60 } }, target), {
        error: {
          class: 'VirtioError',
          desc: 'descriptor with length 0 at 0x0 (DESC_ZERO_LENGTH, virtio 1.2 §2.7.5)',
          code: 'DESC_ZERO_LENGTH',
          section: 'virtio 1.2 §2.7.5',
        },
      });
      // Bad indices and queues.
      for (const index of [-1, 0x10000, 1.5, '0', null, true]) {
        assert.deepEqual(
          answer({ execute: 'query-queue-element', arguments: { queue: 0, index } }, target),
          generic(`"index" must be a descriptor index (0..65535), got ${JSON.stringify(index)}`),
          String(index),
        );
      }
      for (const execute of ['query-queue-status', 'query-queue-element']) {
        assert.deepEqual(answer({ execute, arguments: {} }, target), generic('parameter "queue" is missing'));
        for (const queue of [1, -1, 0.5, '0', null, 2 ** 32]) {
          assert.deepEqual(
            answer({ execute, arguments: { queue } }, target),
            generic(`Invalid parameter "queue": ${JSON.stringify(queue)} is not a queue of this device (it has 1: 0..0)`),
            `${execute} ${queue}`,
          );
        }
      }
      // The device is unharmed and still has the chain ahead.
      const q2 = (answer({ execute: 'query-queue-status', arguments: { queue: 0 } }, target) as any).return;
      assert.equal(q2['last-avail-idx'], sent.length);
      assert.equal(q2['avail-idx'], sent.length + 1);
      assert.equal(q2.inuse, 0);
      assert.equal((answer({ execute: 'query-status' }, target) as any).return.status & Status.NEEDS_RESET, 0);
    } finally {
      client.close();
      await srv.server.idle();
    }
    assert.deepEqual(answer({ execute: 'query-status' }, target), { return: { name: 'virtio-test', 'device-id': 45, connected: false, connections: 2 } });
  });
});

describe('control socket: serveControl in process', () => {
  it('owner-only socket (0600, created so: the umask is restored), JSON lines in order, removed on close', async () => {
    const tmp = tempDir();
    const ctlPath = path.join(tmp.dir, 'ctl.sock');
    const umask = process.umask();
    assert.notEqual(umask, 0o177);
    const ctl = serveControl({ socketPath: ctlPath, target: idleTarget });
    try {
      assert.equal(process.umask(), umask, 'umask restored');
      const st = statSync(ctlPath);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o7777, 0o600);
      assert.equal(ctl.socketPath, ctlPath);
      assert.equal(ctl.clients, 0);

      const c = await ControlClient.connect(ctlPath);
      await waitFor(() => ctl.clients === 1, 'the client to be counted');
      // Several requests in one write, blank lines skipped, answers in order.
      c.socket.write('{"execute":"query-status","id":1}\n\n   \n\t\n{"execute":"nope","id":2}\n{bad\n{"execute":"query-commands","id":3}\n');
      assert.deepEqual(await c.next(), { return: { name: 'virtio-test', 'device-id': 45, connected: false, connections: 0 }, id: 1 });
      assert.deepEqual(await c.next(), { error: { class: 'CommandNotFound', desc: `The command nope has not been found (known: ${KNOWN})` }, id: 2 });
      assert.equal((await c.next()).error.class, 'GenericError');
      assert.equal((await c.next()).id, 3);
      // A request split across writes (and a multi-byte character split across them) is one line.
      const line = Buffer.from('{"execute":"query-status","id":"é-split"}\n');
      const cut = line.indexOf(0xc3) + 1;
      c.socket.write(line.subarray(0, cut));
      await new Promise((r) => setTimeout(r, 20));
      c.socket.write(line.subarray(cut, cut + 3));
      await new Promise((r) => setTimeout(r, 20));
      c.socket.write(line.subarray(cut + 3));
      assert.equal((await c.next()).id, 'é-split');
      // Two lines in one chunk, the second completed by the next chunk.
      c.socket.write('{"execute":"query-commands","id":4}\n{"execute":"query-com');
      await new Promise((r) => setTimeout(r, 20));
      c.socket.write('mands","id":5}\n');
      assert.equal((await c.next()).id, 4);
      assert.equal((await c.next()).id, 5);
      assert.equal(c.answers.length, 0);

      await ctl.close();
      await waitFor(() => c.closed, 'the client to be closed by close()');
      assert.equal(existsSync(ctlPath), false, 'socket file removed');
      assert.equal(ctl.clients, 0);
      await ctl.close(); // idempotent
    } finally {
      await ctl.close();
      tmp.remove();
    }
  });

  it('the 64 KiB line limit: exactly 64 KiB is a line, one byte more (in one chunk or several) an error and the end', async () => {
    const tmp = tempDir();
    const ctlPath = path.join(tmp.dir, 'ctl.sock');
    const ctl = serveControl({ socketPath: ctlPath, target: idleTarget });
    const tooLong = generic('request line longer than 65536 bytes: connection closed');
    try {
      assert.equal(MAX_CONTROL_LINE, 65536);
      const padded = JSON.stringify({ execute: 'query-status', id: 'x'.repeat(MAX_CONTROL_LINE - 40) });
      const exact = padded.slice(0, -2) + ' '.repeat(MAX_CONTROL_LINE - padded.length) + padded.slice(-2);
      assert.equal(Buffer.byteLength(exact), MAX_CONTROL_LINE);
      const ok = await ControlClient.connect(ctlPath);
      ok.sendLine(exact); // one chunk, or several: both within the limit
      assert.equal((await ok.next()).return.connected, false);
      // Exactly the limit, in two writes (pending + rest).
      ok.socket.write(exact.slice(0, 30000));
      await new Promise((r) => setTimeout(r, 20));
      ok.socket.write(`${exact.slice(30000)}\n`);
      assert.ok((await ok.next()).id === JSON.parse(exact).id, 'the whole line, in two parts');
      // Exactly the limit held pending (no newline yet), then the newline alone.
      ok.socket.write(exact);
      await new Promise((r) => setTimeout(r, 20));
      ok.socket.write('\n');
      assert.equal((await ok.next()).return.connected, false);
      assert.equal(ok.closed, false);

      // One byte more without a newline: never a line.
      const a = await ControlClient.connect(ctlPath);
      a.socket.write('x'.repeat(MAX_CONTROL_LINE + 1));
      assert.deepEqual(await a.next(), tooLong);
      await waitFor(() => a.closed, 'the connection to close');
      // One byte more with its newline, in one write.
      const b = await ControlClient.connect(ctlPath);
      b.sendLine(`${exact} `);
      assert.deepEqual(await b.next(), tooLong);
      await waitFor(() => b.closed, 'the connection to close');
      // Pending part + a completed part one byte too long; the request after it is not answered.
      const c = await ControlClient.connect(ctlPath);
      c.socket.write(exact.slice(0, 40000));
      await new Promise((r) => setTimeout(r, 20));
      c.socket.write(`${exact.slice(40000)} \n{"execute":"query-status"}\n`);
      assert.deepEqual(await c.next(), tooLong);
      await waitFor(() => c.closed, 'the connection to close');
      assert.equal(c.answers.length, 0, 'nothing answered after the refusal');
      // Pending part + a rest (no newline) one byte too long.
      const d = await ControlClient.connect(ctlPath);
      d.socket.write(exact.slice(0, 40000));
      await new Promise((r) => setTimeout(r, 20));
      d.socket.write(`${exact.slice(40000)} `);
      assert.deepEqual(await d.next(), tooLong);
      await waitFor(() => d.closed, 'the connection to close');

      // The server is unharmed.
      assert.deepEqual((await ok.ask({ execute: 'query-commands', id: 0 })).id, 0);
      ok.close();
      await waitFor(() => ctl.clients === 0, 'every client gone');
    } finally {
      await ctl.close();
      tmp.remove();
    }
  });

  it('a client that keeps its side open after the refusal is dropped after 1 s', async () => {
    const tmp = tempDir();
    const ctlPath = path.join(tmp.dir, 'ctl.sock');
    const ctl = serveControl({ socketPath: ctlPath, target: idleTarget });
    try {
      const c = await ControlClient.connect(ctlPath, { allowHalfOpen: true });
      c.socket.write('y'.repeat(MAX_CONTROL_LINE + 1));
      assert.equal((await c.next()).error.class, 'GenericError');
      await waitFor(() => c.ended, 'the server to end its side');
      c.socket.write('more bytes, never read\n');
      const t0 = Date.now();
      assert.equal(ctl.clients, 1, 'half open: the server waits');
      await waitFor(() => ctl.clients === 0, 'the server to drop the client', 3000);
      const waited = Date.now() - t0;
      assert.ok(waited >= 800 && waited < 2000, `dropped after ${waited} ms`);
      c.close();
    } finally {
      await ctl.close();
      tmp.remove();
    }
  });

  it('several clients at once; clients that vanish mid-line or with answers unread; one that reads late gets every answer', async () => {
    const tmp = tempDir();
    const ctlPath = path.join(tmp.dir, 'ctl.sock');
    const warnings: string[] = [];
    const ctl = serveControl({ socketPath: ctlPath, target: idleTarget, warn: (l) => warnings.push(l) });
    const fds = openFds();
    try {
      const clients = await Promise.all([0, 1, 2].map(() => ControlClient.connect(ctlPath)));
      await waitFor(() => ctl.clients === 3, 'three clients');
      for (const [i, c] of clients.entries()) {
        c.sendLine(JSON.stringify({ execute: 'query-status', id: i }));
        c.sendLine(JSON.stringify({ execute: 'query-commands', id: i + 100 }));
      }
      for (const [i, c] of clients.entries()) {
        assert.equal((await c.next()).id, i);
        assert.equal((await c.next()).id, i + 100);
      }
      const gone1 = await ControlClient.connect(ctlPath);
      gone1.socket.write('{"execute":"query-st');
      gone1.close();
      const gone2 = await ControlClient.connect(ctlPath);
      for (let i = 0; i < 200; i++) gone2.sendLine('{"execute":"query-status"}');
      gone2.close();
      await waitFor(() => ctl.clients === 3, 'the vanished clients to be dropped');
      clients[2]!.close();
      await waitFor(() => ctl.clients === 2, 'a closed client to be dropped');

      // A client that does not read while its answers pile up (over 1 MiB): paused, then resumed.
      const slow = await ControlClient.connect(ctlPath);
      slow.socket.pause();
      const N = 8000;
      const batch = '{"execute":"query-commands"}\n'.repeat(N);
      slow.socket.write(batch);
      await new Promise((r) => setTimeout(r, 100));
      slow.socket.resume();
      await waitFor(() => slow.answers.length === N, `${N} answers (got ${slow.answers.length})`, 5000);
      assert.deepEqual(slow.answers[N - 1], { return: CONTROL_COMMANDS.map((name) => ({ name })) });
      slow.close();
      for (const c of clients) c.close();
      await waitFor(() => ctl.clients === 0, 'every client gone');
      assert.deepEqual(warnings, []);
    } finally {
      await ctl.close();
      tmp.remove();
    }
    assert.deepEqual(leakedFds(fds), []);
  });

  it('a stale socket file is replaced; a live one is refused (EADDRINUSE); close() leaves a file that is no longer its own', async () => {
    const tmp = tempDir();
    const ctlPath = path.join(tmp.dir, 'ctl.sock');
    try {
      // Stale: a socket file nobody listens on.
      const stale = native.socketListen(ctlPath, 1);
      native.close(stale);
      const ctl = serveControl({ socketPath: ctlPath, target: idleTarget });
      const c = await ControlClient.connect(ctlPath);
      assert.deepEqual((await c.ask({ execute: 'query-commands', id: 1 })).id, 1);
      c.close();
      // Live: refused, and the live socket is left alone.
      const ino = lstatSync(ctlPath).ino;
      assert.throws(() => serveControl({ socketPath: ctlPath, target: idleTarget }), {
        code: 'EADDRINUSE',
        message: `${ctlPath}: another back-end is listening there`,
      });
      assert.equal(lstatSync(ctlPath).ino, ino);
      // Replaced under us: close() removes only its own file.
      unlinkSync(ctlPath);
      writeFileSync(ctlPath, 'not ours');
      await ctl.close();
      assert.equal(existsSync(ctlPath), true, 'a file that is not ours is left');
      unlinkSync(ctlPath);
      // Not a socket: refused.
      writeFileSync(ctlPath, 'a regular file');
      assert.throws(() => serveControl({ socketPath: ctlPath, target: idleTarget }), { code: 'EEXIST', message: `${ctlPath} exists and is not a socket` });
    } finally {
      tmp.remove();
    }
  });

  it('in a worker thread (no umask there): still an owner-only socket', async () => {
    const tmp = tempDir();
    const ctlPath = path.join(tmp.dir, 'ctl.sock');
    try {
      const url = new URL('../../src/vhost-user/control-server.js', import.meta.url).href;
      const start = `async (m, socketPath) => m.serveControl({ socketPath, target: { name: 'w', deviceId: 1, session: null, connections: 0 } })`;
      const result = await socketModeInWorker(url, start, ctlPath);
      assert.deepEqual(result, { mode: 0o600 });
      assert.equal(existsSync(ctlPath), false);
    } finally {
      tmp.remove();
    }
  });
});
