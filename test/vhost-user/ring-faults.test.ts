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
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE, answer, decodeResponse, encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { native } from '../../src/vhost-user/native/index.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { DescFlags, Status } from '../../src/virtio/constants.js';
import { availRingBytes, usedRingBytes } from '../../src/virtio/split-ring.js';
import { settle, startServer, waitFor, type TestServer } from './helpers.js';

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
