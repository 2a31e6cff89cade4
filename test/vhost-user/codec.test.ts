import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ProtocolError, checkHeader, checkRequest, decodeHeader, encodeMessage, type RawMessage } from '../../src/vhost-user/codec.js';
import {
  decodeInflight,
  decodeMemTable,
  decodeVringAddress,
  encodeConfig,
  encodeInflight,
  encodeMemTable,
  encodeU64,
  encodeVringAddress,
  encodeVringState,
} from '../../src/vhost-user/payloads.js';
import { BackendRequest, HEADER_SIZE, HeaderFlag, MAX_PAYLOAD_SIZE, Request, VRING_INVALID_FD, backendRequestName, requestName } from '../../src/vhost-user/protocol.js';

function msg(request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], flags: number = HeaderFlag.VERSION): RawMessage {
  return { request, flags, size: payload.length, payload, fds, truncatedFds: false };
}

const region = { guestAddr: 0x1000n, size: 0x2000n, userAddr: 0x7000_0000n, mmapOffset: 0n };

function expectError(fn: () => unknown, pattern: RegExp, fatal = false): void {
  assert.throws(fn, (e: unknown) => e instanceof ProtocolError && pattern.test(e.message) && e.fatal === fatal);
}

describe('vhost-user header', () => {
  it('encodes request, flags and size little-endian in 12 bytes', () => {
    const m = encodeMessage(Request.SET_VRING_NUM, HeaderFlag.VERSION | HeaderFlag.NEED_REPLY, encodeVringState({ index: 0, num: 256 }));
    assert.equal(m.length, HEADER_SIZE + 8);
    assert.deepEqual([...m.subarray(0, 12)], [8, 0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0]);
    assert.deepEqual(decodeHeader(m), { request: 8, flags: 9, size: 8 });
  });

  it('refuses a wrong version and an oversized payload as fatal (the stream cannot be trusted)', () => {
    expectError(() => checkHeader({ request: 1, flags: 0, size: 0 }), /version 0/, true);
    expectError(() => checkHeader({ request: 1, flags: 2, size: 0 }), /version 2/, true);
    expectError(() => checkHeader({ request: 1, flags: 1, size: MAX_PAYLOAD_SIZE + 1 }), /exceeds the maximum/, true);
    assert.doesNotThrow(() => checkHeader({ request: 1, flags: 1, size: MAX_PAYLOAD_SIZE }));
  });

  it('refuses the REPLY flag on a request, but not on a reply', () => {
    expectError(() => checkHeader({ request: 1, flags: 5, size: 0 }), /REPLY flag/);
    assert.doesNotThrow(() => checkHeader({ request: 1, flags: 5, size: 0 }, true));
  });
});

describe('vhost-user request validation', () => {
  it('checks the payload size against the request', () => {
    assert.doesNotThrow(() => checkRequest(msg(Request.GET_FEATURES)));
    expectError(() => checkRequest(msg(Request.GET_FEATURES, new Uint8Array(8))), /payload size 8, expected 0/);
    expectError(() => checkRequest(msg(Request.SET_FEATURES, new Uint8Array(4))), /payload size 4, expected 8/);
    expectError(() => checkRequest(msg(Request.SET_VRING_ADDR, new Uint8Array(32))), /expected 40/);
    expectError(() => checkRequest(msg(Request.GET_INFLIGHT_FD, new Uint8Array(16))), /expected 20..24/);
  });

  it('refuses requests it does not implement', () => {
    expectError(() => checkRequest(msg(999)), /request 999 is not supported/);
    expectError(() => checkRequest(msg(Request.SET_LOG_BASE, new Uint8Array(16), [7])), /SET_LOG_BASE is not supported/);
  });

  it('SET_MEM_TABLE: 1..8 regions, room for them, one fd per region (virtio_uml sends room for 2)', () => {
    const one = encodeMemTable([region]);
    assert.doesNotThrow(() => checkRequest(msg(Request.SET_MEM_TABLE, one, [10])));
    const roomForTwo = new Uint8Array(8 + 64);
    roomForTwo.set(one);
    assert.doesNotThrow(() => checkRequest(msg(Request.SET_MEM_TABLE, roomForTwo, [10])));
    expectError(() => checkRequest(msg(Request.SET_MEM_TABLE, one, [])), /too few file descriptors: 0, expected 1 \(one per region\)$/);
    assert.deepEqual(checkRequest(msg(Request.SET_MEM_TABLE, one, [10])), { fds: [10], extraFds: [] });
    expectError(() => checkRequest(msg(Request.SET_MEM_TABLE, one, [10, 11])), /too many file descriptors: 2, expected 1/);
    const lying = encodeMemTable([region]);
    new DataView(lying.buffer).setUint32(0, 3, true);
    expectError(() => checkRequest(msg(Request.SET_MEM_TABLE, lying, [1, 2, 3])), /3 regions in a payload with room for 1$/);
    expectError(() => checkRequest(msg(Request.SET_MEM_TABLE, encodeMemTable([]), [])), /0 regions/);
    expectError(() => checkRequest(msg(Request.SET_MEM_TABLE, new Uint8Array(8 + 33), [1])), /not 8 \+ 32 \* n/);
    // Shorter than the header (it holds the count): refused before the count is read.
    expectError(() => checkRequest(msg(Request.SET_MEM_TABLE, new Uint8Array(4), [1])), /payload size 4 is not 8 \+ 32 \* n/);
    // Exactly the limit of 8 regions (VHOST_MEMORY_BASELINE_NREGIONS) is accepted; 9 are not.
    const fds = (n: number): number[] => Array.from({ length: n }, (_, i) => 10 + i);
    assert.doesNotThrow(() => checkRequest(msg(Request.SET_MEM_TABLE, encodeMemTable(Array(8).fill(region)), fds(8))));
    expectError(() => checkRequest(msg(Request.SET_MEM_TABLE, encodeMemTable(Array(9).fill(region)), fds(9))), /9 regions, expected 1\.\.8/);
    const nine = encodeMemTable(Array.from({ length: 9 }, () => region));
    expectError(() => checkRequest(msg(Request.SET_MEM_TABLE, nine, [])), /9 regions, expected 1..8/);
  });

  it('vring fds: one fd, or none with the invalid-fd flag', () => {
    assert.doesNotThrow(() => checkRequest(msg(Request.SET_VRING_KICK, encodeU64(0), [5])));
    assert.doesNotThrow(() => checkRequest(msg(Request.SET_VRING_CALL, encodeU64(VRING_INVALID_FD), [])));
    expectError(() => checkRequest(msg(Request.SET_VRING_KICK, encodeU64(0), [])), /: too few file descriptors: 0, expected 1$/);
    assert.deepEqual(checkRequest(msg(Request.SET_VRING_KICK, encodeU64(0), [5])), { fds: [5], extraFds: [] });
    expectError(() => checkRequest(msg(Request.SET_VRING_ERR, encodeU64(VRING_INVALID_FD), [5])), /too many.*invalid-fd flag/);
  });

  it('hands back fds on a request that takes none, for closing', () => {
    const r = checkRequest(msg(Request.GET_FEATURES, new Uint8Array(0), [5, 6]));
    assert.deepEqual(r, { fds: [], extraFds: [5, 6] });
    const rem = checkRequest(msg(Request.REM_MEM_REG, new Uint8Array(40), [7]));
    assert.deepEqual(rem, { fds: [], extraFds: [7] });
    expectError(() => checkRequest(msg(Request.REM_MEM_REG, new Uint8Array(40), [7, 8])), /at most 1/);
  });

  it('inflight descriptions: 20..24 bytes (the padded struct QEMU sends, or a packed one); SET_INFLIGHT_FD takes exactly one fd', () => {
    for (const r of [Request.GET_INFLIGHT_FD, Request.SET_INFLIGHT_FD]) {
      const fds = r === Request.SET_INFLIGHT_FD ? [9] : [];
      for (const size of [20, 24]) assert.doesNotThrow(() => checkRequest(msg(r, new Uint8Array(size), fds)), `size ${size}`);
      for (const size of [19, 25, 0]) expectError(() => checkRequest(msg(r, new Uint8Array(size), fds)), new RegExp(`payload size ${size}, expected 20\\.\\.24$`));
    }
    assert.deepEqual(checkRequest(msg(Request.SET_INFLIGHT_FD, new Uint8Array(24), [9])), { fds: [9], extraFds: [] });
    expectError(() => checkRequest(msg(Request.SET_INFLIGHT_FD, new Uint8Array(24), [])), /too few file descriptors: 0, expected 1$/);
  });

  it('a refusal is a ProtocolError by name, non-fatal unless the stream is lost', () => {
    try {
      checkRequest(msg(Request.SET_VRING_KICK, encodeU64(0), []));
      assert.fail('accepted');
    } catch (e) {
      assert.ok(e instanceof ProtocolError);
      assert.equal(e.name, 'ProtocolError');
      assert.equal(e.fatal, false);
    }
  });

  it('refuses a message whose extra fds were dropped by the receiver', () => {
    const m = msg(Request.SET_VRING_KICK, encodeU64(0), [5]);
    m.truncatedFds = true;
    expectError(() => checkRequest(m), /too many file descriptors/);
  });

  it('config payloads: 12 + size bytes, size ≤ 256', () => {
    assert.doesNotThrow(() => checkRequest(msg(Request.GET_CONFIG, encodeConfig({ offset: 0, data: new Uint8Array(12) }))));
    const bad = encodeConfig({ offset: 0, data: new Uint8Array(12) });
    new DataView(bad.buffer).setUint32(4, 13, true);
    expectError(() => checkRequest(msg(Request.GET_CONFIG, bad)), /does not match 12 \+ config size 13/);
    expectError(() => checkRequest(msg(Request.SET_CONFIG, encodeConfig({ offset: 0, data: new Uint8Array(300) }))), /exceeds 256/);
    // The bounds themselves: an empty config (the header alone) and exactly 256 bytes are well formed.
    assert.doesNotThrow(() => checkRequest(msg(Request.GET_CONFIG, encodeConfig({ offset: 0, data: new Uint8Array(0) }))));
    assert.doesNotThrow(() => checkRequest(msg(Request.SET_CONFIG, encodeConfig({ offset: 0, data: new Uint8Array(256) }))));
    expectError(() => checkRequest(msg(Request.SET_CONFIG, encodeConfig({ offset: 0, data: new Uint8Array(257) }))), /config size 257 exceeds 256/);
    expectError(() => checkRequest(msg(Request.GET_CONFIG, new Uint8Array(11))), /payload size 11 is smaller than the config header/);
    expectError(() => checkRequest(msg(Request.SET_CONFIG, new Uint8Array(4))), /smaller than the config header/);
  });

  it('round-trips vring addresses, memory tables and inflight descriptions', () => {
    const a = { index: 1, flags: 1, desc: 0x1000n, used: 0x3000n, avail: 0x2000n, log: 0xffff_ffff_ffff_ffffn };
    assert.deepEqual(decodeVringAddress(encodeVringAddress(a)), a);
    assert.deepEqual(decodeMemTable(encodeMemTable([region, { ...region, guestAddr: 0x9000n }])), [region, { ...region, guestAddr: 0x9000n }]);
    const d = { mmapSize: 4096n, mmapOffset: 0n, numQueues: 1, queueSize: 128 };
    assert.equal(encodeInflight(d).length, 24);
    assert.deepEqual(decodeInflight(encodeInflight(d)), d);
  });
});

describe('vhost-user request names (for log lines)', () => {
  it('a known id by its name, an unknown one by its number, for both directions', () => {
    assert.equal(requestName(Request.SET_VRING_KICK), 'SET_VRING_KICK');
    assert.equal(requestName(999), 'request 999');
    assert.equal(backendRequestName(BackendRequest.CONFIG_CHANGE_MSG), 'CONFIG_CHANGE_MSG');
    assert.equal(backendRequestName(99), 'backend request 99');
  });
});
