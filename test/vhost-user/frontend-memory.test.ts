/**
 * FrontendMemory, the guest RAM of the TypeScript front-end (memfd regions, the user addresses
 * SET_VRING_ADDR speaks in, a bump allocator): the address translation at region edges, the
 * allocator's bounds, a region mapped at an offset into its fd.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FrontendMemory, USER_ADDRESS_BASE, describe as describeRegion } from '../../src/vhost-user/frontend-memory.js';
import { native } from '../../src/vhost-user/native/index.js';

describe('FrontendMemory', () => {
  it('user addresses: USER_ADDRESS_BASE + gpa by default, or the given base; each region to its last byte, nothing outside', () => {
    const ram = new FrontendMemory([
      { guestAddr: 0x10000, size: 0x2000 },
      { guestAddr: 0x40000, size: 0x1000, userAddr: 0x7f00_0000_0000 },
    ]);
    try {
      assert.equal(ram.userAddr(0x10000), USER_ADDRESS_BASE + 0x10000);
      assert.equal(ram.userAddr(0x11fff), USER_ADDRESS_BASE + 0x11fff);
      assert.equal(ram.userAddr(0x40000), 0x7f00_0000_0000);
      assert.equal(ram.userAddr(0x40fff), 0x7f00_0000_0fff);
      for (const gpa of [0xffff, 0x12000, 0x3ffff, 0x41000]) {
        assert.throws(() => ram.userAddr(gpa), { name: 'RangeError', message: `gpa 0x${gpa.toString(16)} is not in guest RAM` });
      }
      assert.deepEqual(ram.descriptions()[1], { guestAddr: 0x40000n, size: 0x1000n, userAddr: 0x7f00_0000_0000n, mmapOffset: 0n });
    } finally {
      ram.close();
    }
  });

  it('alloc: aligned, up to the last byte of the region, then "full"; an unknown region is refused', () => {
    const ram = new FrontendMemory([{ guestAddr: 0x10000, size: 0x100 }]);
    try {
      assert.equal(ram.alloc(1), 0x10000);
      assert.equal(ram.alloc(16), 0x10010, 'aligned to 16');
      assert.equal(ram.alloc(0x100 - 0x20), 0x10020, 'exactly the rest');
      assert.throws(() => ram.alloc(1), { name: 'RangeError', message: 'RAM region 0 is full (1 bytes wanted)' });
      assert.throws(() => ram.alloc(1, 16, 1), { name: 'RangeError', message: 'no RAM region 1' });
    } finally {
      ram.close();
    }
  });

  it('a region at an offset into its fd: the guest bytes are the fd\'s bytes at that offset', () => {
    const page = native.pageSize;
    const ram = new FrontendMemory([{ guestAddr: 0x20000, size: 0x1000, mmapOffset: page + 0x100 }]);
    try {
      ram.memory.write(0x20000, Uint8Array.of(0xab, 0xcd));
      const r = ram.regions[0]!;
      assert.equal(native.fdSize(r.fd), page + 0x100 + 0x1000);
      const whole = new Uint8Array(native.mmap(r.fd, page * 2 + 0x1000, 0));
      try {
        assert.deepEqual([...whole.subarray(page + 0x100, page + 0x102)], [0xab, 0xcd]);
        assert.equal(whole[page + 0xff], 0, 'nothing before the offset');
      } finally {
        native.munmap(whole.buffer as ArrayBuffer);
      }
      assert.deepEqual(describeRegion(r).mmapOffset, BigInt(page + 0x100));
    } finally {
      ram.close();
    }
  });
});
