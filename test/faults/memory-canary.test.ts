/**
 * Memory canaries through the real device runtime and the virtio-test device: guest memory is
 * filled with a pattern, requests (valid and malformed) are served, and the only bytes that may
 * change are the writable response bytes of chains that were served and the used ring.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { DeviceRuntime } from '../../src/device/runtime.js';
import { answer, decodeResponse, encodeRequest, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { DescFlags, FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import { DriverQueue } from '../../src/virtio/driver-queue.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';

const R0 = 0x100000;
const R0_BYTES = 0x10000;
const R1 = R0 + R0_BYTES; // adjacent second region: a buffer may not straddle the two
const R1_BYTES = 0x4000;
const SIZE = 16;
const { NEXT, WRITE, INDIRECT } = DescFlags;

function machine(opts: { indirect?: boolean } = {}) {
  const backing = new SharedArrayBuffer(64 + R0_BYTES + 64 + R1_BYTES + 64);
  const bytes = new Uint8Array(backing);
  bytes.fill(0xa5);
  const memory = new GuestMemory([
    { guestAddr: R0, size: R0_BYTES, buffer: backing, offset: 64 },
    { guestAddr: R1, size: R1_BYTES, buffer: backing, offset: 64 + R0_BYTES + 64 },
  ]);
  const toOffset = (a: number) => (a < R1 ? 64 + (a - R0) : 64 + R0_BYTES + 64 + (a - R1));
  const warnings: string[] = [];
  const rt = new DeviceRuntime(new VirtioTestDevice({ print: false, queueSize: SIZE }), memory, {
    interrupt: () => {},
    configInterrupt: () => {},
    log: () => {},
    warn: (l) => warnings.push(l),
  });
  const ring = packedLayout(R0, SIZE);
  let next = R0 + 0x1000;
  const alloc = (n: number) => {
    const a = next;
    next += Math.ceil(n / 16) * 16;
    return a;
  };
  const features = bit(FeatureBit.VERSION_1) | bit(0) | (opts.indirect ? bit(FeatureBit.RING_INDIRECT_DESC) : 0n);
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER);
  rt.writeDriverFeatures(features);
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  Object.assign(rt.queues[0]!, { size: SIZE, desc: ring.desc, avail: ring.avail, used: ring.used, ready: true });
  const driver = new DriverQueue<number>(memory, ringViewsFromGuest(memory, ring), { eventIdx: false, indirect: !!opts.indirect, allocIndirect: (n) => alloc(n) });
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  /** Writes a descriptor by hand (for malformed chains). */
  const desc = (i: number, addr: number, len: number, flags: number, nxt = 0) => {
    memory.writeU32(ring.desc + 16 * i, addr);
    memory.writeU32(ring.desc + 16 * i + 4, 0);
    memory.writeU32(ring.desc + 16 * i + 8, len);
    memory.writeU16(ring.desc + 16 * i + 12, flags);
    memory.writeU16(ring.desc + 16 * i + 14, nxt);
  };
  const makeAvailable = (head: number) => {
    const idx = memory.readU16(ring.avail + 2);
    memory.writeU16(ring.avail + 4 + 2 * (idx % SIZE), head);
    memory.writeU16(ring.avail + 2, (idx + 1) & 0xffff);
  };
  const request = (n: number) => {
    const a = alloc(48);
    encodeRequest(requestFor(n), memory.slice(a, 48));
    return a;
  };
  /** Runs notify() and returns the guest addresses of every changed byte outside `allowed` ranges. */
  const serve = (allowed: [number, number][]) => {
    const before = bytes.slice();
    rt.notify(0);
    const ok = [...allowed, [ring.used, ring.used + 6 + 8 * SIZE] as [number, number]].map(([a, e]) => [toOffset(a), toOffset(a) + (e - a)]);
    const bad: string[] = [];
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] !== before[i] && !ok.some(([a, e]) => i >= a! && i < e!)) bad.push(`offset ${i}`);
    }
    return bad;
  };
  return { rt, memory, ring, driver, alloc, desc, makeAvailable, request, serve, warnings, bytes };
}

test('canary: valid requests (6 direct, 12 indirect, response split in two) change only their response bytes and the used ring', () => {
  for (const indirect of [false, true]) {
    const m = machine({ indirect });
    const allowed: [number, number][] = [];
    const responses: { n: number; parts: { addr: number; len: number }[] }[] = [];
    for (let n = 0; n < (indirect ? 12 : 6); n++) {
      const req = m.request(n * 20);
      const parts = n % 3 === 0 ? [{ addr: m.alloc(5), len: 5 }, { addr: m.alloc(7), len: 7 }] : [{ addr: m.alloc(12), len: 12 }];
      assert.ok(m.driver.add([{ addr: req, len: 48 }], parts, n));
      for (const p of parts) allowed.push([p.addr, p.addr + p.len]);
      responses.push({ n: n * 20, parts });
    }
    assert.deepEqual(m.serve(allowed), []);
    assert.equal(m.rt.status & Status.NEEDS_RESET, 0);
    for (const r of responses) {
      const got = new Uint8Array(12);
      let o = 0;
      for (const p of r.parts) {
        got.set(m.memory.slice(p.addr, p.len), o);
        o += p.len;
      }
      assert.deepEqual(decodeResponse(got), answer(requestFor(r.n)));
    }
  }
});

const malformed: { name: string; code: string; build(m: ReturnType<typeof machine>, resp: number): void }[] = [
  {
    name: 'readable after writable',
    code: 'DESC_READABLE_AFTER_WRITABLE',
    build: (m, resp) => {
      m.desc(4, resp, 12, WRITE | NEXT, 5);
      m.desc(5, m.request(1), 48, 0);
      m.makeAvailable(4);
    },
  },
  {
    name: 'response buffer too short (8 bytes)',
    code: 'DEVICE_REQUEST_INVALID',
    build: (m, resp) => {
      m.desc(4, m.request(1), 48, NEXT, 5);
      m.desc(5, resp, 8, WRITE);
      m.makeAvailable(4);
    },
  },
  {
    name: 'response buffer past the end of guest memory',
    code: 'MEM_OUT_OF_RANGE',
    build: (m) => {
      m.desc(4, m.request(1), 48, NEXT, 5);
      m.desc(5, R1 + R1_BYTES - 4, 12, WRITE);
      m.makeAvailable(4);
    },
  },
  {
    name: 'response buffer straddling two adjacent regions',
    code: 'MEM_OUT_OF_RANGE',
    build: (m) => {
      m.desc(4, m.request(1), 48, NEXT, 5);
      m.desc(5, R1 - 6, 12, WRITE);
      m.makeAvailable(4);
    },
  },
  {
    name: 'a loop after a valid request descriptor',
    code: 'DESC_LOOP',
    build: (m, resp) => {
      m.desc(4, m.request(1), 48, NEXT, 5);
      m.desc(5, resp, 12, WRITE | NEXT, 5);
      m.makeAvailable(4);
    },
  },
  {
    name: 'INDIRECT without the feature',
    code: 'INDIRECT_NOT_NEGOTIATED',
    build: (m) => {
      m.desc(4, m.alloc(32), 32, INDIRECT);
      m.makeAvailable(4);
    },
  },
];

for (const c of malformed) {
  test(`canary: a valid request then a malformed chain (${c.name}): NEEDS_RESET, only the valid response and the used ring changed`, () => {
    const m = machine();
    const resp1 = m.alloc(12);
    m.driver.add([{ addr: m.request(50), len: 48 }], [{ addr: resp1, len: 12 }], 1); // descriptors 0, 1
    const resp2 = m.alloc(12);
    c.build(m, resp2);
    const bad = m.serve([[resp1, resp1 + 12]]);
    assert.deepEqual(bad, [], 'bytes changed outside the served response and the used ring');
    assert.ok(m.rt.status & Status.NEEDS_RESET);
    assert.match(m.warnings.join('\n'), new RegExp(c.code));
    assert.deepEqual(decodeResponse(m.memory.slice(resp1, 12)), answer(requestFor(50)), 'the valid request before it was answered');
    assert.ok(m.memory.slice(resp2, 12).every((b) => b === 0xa5), 'nothing written for the malformed chain');
  });
}
