import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import {
  REQUEST_SIZE,
  RESPONSE_SIZE,
  answer,
  arg4Text,
  decodeResponse,
  encodeRequest,
  requestFor,
  requestLogLines,
} from '../../src/devices/virtio-test/protocol.js';
import { Status } from '../../src/virtio/constants.js';
import { RAM, bringUp, harness } from '../helpers/runtime.js';

const REQ = RAM + 0x10000;
const RESP = RAM + 0x20000;

test('answers every N in 0..255 with {arg1+100, arg2+100, arg3+100} and logs the seed lines', () => {
  const h = harness(new VirtioTestDevice());
  const driver = bringUp(h, undefined, 128);
  for (let n = 0; n < 256; n++) {
    encodeRequest(requestFor(n), h.memory.slice(REQ, REQUEST_SIZE));
    assert.ok(driver.add([{ addr: REQ, len: REQUEST_SIZE }], [{ addr: RESP, len: RESPONSE_SIZE }], n));
    h.runtime.notify(0);
    const used = driver.getUsed();
    assert.deepEqual(used, { token: n, len: 12 });
    assert.deepEqual(decodeResponse(h.memory.slice(RESP, 12)), { ret: n + 101, arg1: n + 102, arg2: n + 103 });
  }
  assert.equal(h.logs.length, 256 * 5);
  assert.deepEqual(h.logs.slice(50, 55), [
    'QEMU_BACK_END: >>> get type [ 10 ] form the front end <<<',
    'QEMU_BACK_END: >>> get arg1 [ 11 ] form the front end <<<',
    'QEMU_BACK_END: >>> get arg2 [ 12 ] form the front end <<<',
    'QEMU_BACK_END: >>> get arg3 [ 13 ] form the front end <<<',
    'QEMU_BACK_END: >>> get arg3 [ hello back end! ] form the front end <<<',
  ]);
  assert.equal(h.interrupts.length, 256);
});

test('a request split over several readable descriptors and a response over two writable ones', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const driver = bringUp(h);
  const req = encodeRequest(requestFor(200));
  h.memory.write(REQ, req.subarray(0, 5));
  h.memory.write(REQ + 0x100, req.subarray(5, 40));
  h.memory.write(REQ + 0x200, req.subarray(40));
  driver.add(
    [
      { addr: REQ, len: 5 },
      { addr: REQ + 0x100, len: 35 },
      { addr: REQ + 0x200, len: 8 },
    ],
    [
      { addr: RESP, len: 7 },
      { addr: RESP + 0x100, len: 5 },
    ],
    1,
  );
  h.runtime.notify(0);
  const bytes = new Uint8Array(12);
  bytes.set(h.memory.slice(RESP, 7), 0);
  bytes.set(h.memory.slice(RESP + 0x100, 5), 7);
  assert.deepEqual(decodeResponse(bytes), { ret: 301, arg1: 302, arg2: 303 });
});

test('arithmetic wraps at 2^32', () => {
  assert.deepEqual(answer({ type: 0, arg1: 0xffffffff, arg2: 0xffffffa0, arg3: 5, arg4: new Uint8Array() }), {
    ret: 99,
    arg1: 4,
    arg2: 105,
  });
});

for (const [name, readable, writable] of [
  ['request shorter than 48 bytes', 47, 12],
  ['response shorter than 12 bytes', 48, 11],
  ['no writable part', 48, 0],
] as const) {
  test(`a malformed chain is a device error: ${name}`, () => {
    const h = harness(new VirtioTestDevice({ print: false }));
    const driver = bringUp(h);
    driver.add([{ addr: REQ, len: readable }], writable ? [{ addr: RESP, len: writable }] : [], 1);
    h.bytes.fill(0x5a, RESP - RAM, RESP - RAM + 64);
    h.runtime.notify(0);
    assert.ok(h.runtime.status & Status.NEEDS_RESET);
    assert.equal(driver.getUsed(), null, 'no used element for a refused chain');
    assert.ok(h.bytes.subarray(RESP - RAM, RESP - RAM + 64).every((b) => b === 0x5a), 'nothing written');
  });
}

test('arg4 is printed bounded to 32 bytes, with control bytes escaped', () => {
  const evil = new Uint8Array(32).fill(0x41);
  evil[3] = 0x1b; // ESC
  evil[4] = 0x5c; // backslash
  assert.equal(arg4Text(evil), `AAA\\x1b\\x5c${'A'.repeat(27)}`);
  const line = requestLogLines({ ...requestFor(1), arg4: evil })[4]!;
  assert.ok(!line.includes('\x1b'));
});

test('reset clears config and the served count', () => {
  const dev = new VirtioTestDevice({ print: false });
  const h = harness(dev);
  bringUp(h);
  h.runtime.writeConfig(4, Uint8Array.of(9, 9, 9, 9));
  h.runtime.writeStatus(0);
  assert.deepEqual([...h.runtime.readConfig(0, 12)], new Array(12).fill(0));
  assert.equal(dev.served, 0);
});

test('the answer written field by field agrees with answer(), also with the request and response split across descriptors', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const driver = bringUp(h, undefined, 128);
  const cases = [0, 1, 10, 255, 0xffffff9b, 0xffffffff, 0x7fffffff];
  // Splits at field boundaries and inside fields (a u32 over two descriptors takes the slow path).
  const splits = [[48], [4, 44], [6, 42], [1, 1, 1, 45], [13, 35]];
  const respSplits = [[12], [2, 10], [5, 7], [4, 4, 4], [11, 1]];
  for (const [k, a] of cases.entries()) {
    const req = { type: 1, arg1: a, arg2: (a * 7) >>> 0, arg3: (a ^ 0xdeadbeef) >>> 0, arg4: new Uint8Array() };
    const bytes = encodeRequest(req);
    const out = splitAt(REQ, splits[k % splits.length]!);
    const inn = splitAt(RESP, respSplits[k % respSplits.length]!);
    let from = 0;
    for (const b of out) {
      h.memory.write(b.addr, bytes.subarray(from, from + b.len));
      from += b.len;
    }
    h.memory.write(RESP, new Uint8Array(0x400).fill(0xee));
    assert.ok(driver.add(out, inn, k));
    h.runtime.notify(0);
    assert.deepEqual(driver.getUsed(), { token: k, len: RESPONSE_SIZE });
    const resp = new Uint8Array(RESPONSE_SIZE);
    let at = 0;
    for (const b of inn) {
      resp.set(h.memory.slice(b.addr, b.len), at);
      at += b.len;
    }
    assert.deepEqual(decodeResponse(resp), answer(req), `case ${a} split ${splits[k % splits.length]} / ${respSplits[k % respSplits.length]}`);
    // Nothing written past any response segment.
    for (const b of inn) assert.equal(h.memory.slice(b.addr + b.len, 1)[0], 0xee);
  }
});

test('a response buffer that overlaps the request still gets the answer to the request as sent', () => {
  const h = harness(new VirtioTestDevice({ print: false }));
  const driver = bringUp(h, undefined, 128);
  const req = requestFor(20);
  encodeRequest(req, h.memory.slice(REQ, REQUEST_SIZE));
  // The response starts on arg2: writing ret first would change what arg1 of the answer is made from.
  assert.ok(driver.add([{ addr: REQ, len: REQUEST_SIZE }], [{ addr: REQ + 8, len: RESPONSE_SIZE }], 1));
  h.runtime.notify(0);
  assert.deepEqual(driver.getUsed(), { token: 1, len: RESPONSE_SIZE });
  assert.deepEqual(decodeResponse(h.memory.slice(REQ + 8, RESPONSE_SIZE)), answer(req));
});

/** Segments of the given lengths, 0x100 apart (so they are not contiguous in guest memory). */
function splitAt(base: number, lengths: number[]): { addr: number; len: number }[] {
  return lengths.map((len, i) => ({ addr: base + 0x100 * i, len }));
}
