import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GuestMemory, joinAddress } from '../../src/virtio/memory.js';
import { VirtioError } from '../../src/virtio/errors.js';

const mem = () => {
  const a = new ArrayBuffer(0x1000);
  const b = new SharedArrayBuffer(0x2000);
  return new GuestMemory([
    { guestAddr: 0x1000, size: 0x1000, buffer: a },
    { guestAddr: 0x4000, size: 0x1000, buffer: b, offset: 0x1000 },
  ]);
};

test('translates inside regions and returns zero-copy views', () => {
  const m = mem();
  const v = m.slice(0x4010, 4);
  v.set([1, 2, 3, 4]);
  assert.equal(m.readU32(0x4010), 0x04030201);
  m.writeU16(0x1ffe, 0xbeef);
  assert.equal(m.readU16(0x1ffe), 0xbeef);
});

test('rejects ranges outside memory, straddling regions, or past the end', () => {
  const m = mem();
  for (const [addr, len] of [
    [0, 1],
    [0xfff, 2],
    [0x1fff, 2],
    [0x2000, 1],
    [0x1000, 0x1001],
    [0x4fff, 2],
    [0x5000, 0],
    [Number.MAX_SAFE_INTEGER, 1],
  ] as const) {
    assert.throws(() => m.slice(addr, len), (e: unknown) => e instanceof VirtioError && e.code === 'MEM_OUT_OF_RANGE', `${addr}+${len}`);
  }
});

test('refuses overlapping regions and finds regions after removal', () => {
  const m = mem();
  assert.throws(() => m.addRegion({ guestAddr: 0x1800, size: 0x1000, buffer: new ArrayBuffer(0x1000) }), /overlaps/);
  assert.ok(m.removeRegion(0x4000, 0x1000));
  assert.throws(() => m.slice(0x4000, 1), VirtioError);
  assert.equal(m.removeRegion(0x4000, 0x1000), undefined);
});

test('joinAddress keeps 53-bit addresses exact and pushes larger ones out of range', () => {
  assert.equal(joinAddress(0x89abcdef, 0x1234), 0x1234_89abcdef);
  assert.equal(joinAddress(0xffffffff, 0x1fffff), Number.MAX_SAFE_INTEGER);
  assert.ok(joinAddress(0, 0x200000) > Number.MAX_SAFE_INTEGER);
  // Exactly 2^53 for every address at or above it (2^53 + 3 is not a double: it would round to 2^53 + 4).
  assert.equal(joinAddress(3, 0x200000), 2 ** 53);
  assert.equal(joinAddress(0xffffffff, 0xffffffff), 2 ** 53);
  assert.ok(joinAddress(0xfffffff0, 0xffffffff) > Number.MAX_SAFE_INTEGER);
});

test('read copies out of guest memory and write copies in, both bounds-checked', () => {
  const m = mem();
  m.write(0x4ffc, Uint8Array.of(9, 8, 7, 6));
  const out = new Uint8Array(4);
  m.read(0x4ffc, out);
  assert.deepEqual([...out], [9, 8, 7, 6]);
  out[0] = 1;
  assert.equal(m.readU8(0x4ffc), 9, 'read() copies: the caller\'s buffer is not a view of guest memory');
  assert.throws(() => m.read(0x4ffd, new Uint8Array(4)), VirtioError, 'a read past the region');
  assert.throws(() => m.write(0x1ffd, new Uint8Array(4)), VirtioError, 'a write past the region');
  assert.equal(m.readU32(0x1ffc), 0, 'nothing of the refused write landed');
});

test('a region is refused when its end would pass 2^53, or its window leaves its buffer', () => {
  const buffer = new ArrayBuffer(0x100);
  assert.throws(
    () => new GuestMemory([{ guestAddr: Number.MAX_SAFE_INTEGER - 0x10, size: 0x100, buffer }]),
    { name: 'RangeError', message: 'memory region: end beyond 2^53' },
  );
  assert.throws(() => new GuestMemory([{ guestAddr: 0, size: 0x80, buffer, offset: 0x81 }]), {
    message: 'memory region: [129, 257) is outside its 256-byte buffer',
  });
  assert.throws(() => new GuestMemory([{ guestAddr: -1, size: 1, buffer }]), { message: 'memory region: bad guest address -1' });
  assert.throws(() => new GuestMemory([{ guestAddr: 0, size: 0, buffer }]), { message: 'memory region: bad size 0' });
  // The highest region that fits: its last byte is 2^53 - 2 (end exclusive, 2^53 - 1).
  const top = new GuestMemory([{ guestAddr: Number.MAX_SAFE_INTEGER - 0x100, size: 0x100, buffer }]);
  top.writeU32(Number.MAX_SAFE_INTEGER - 4, 0xdeadbeef);
  assert.equal(top.readU32(Number.MAX_SAFE_INTEGER - 4), 0xdeadbeef);
});

test('a region window may not start before its buffer either', () => {
  const buffer = new ArrayBuffer(0x100);
  assert.throws(() => new GuestMemory([{ guestAddr: 0, size: 0x10, buffer, offset: -1 }]), {
    name: 'RangeError',
    message: 'memory region: [-1, 15) is outside its 256-byte buffer',
  });
});

test('regions: empty by default, listed by guest address whatever the order added, adjacent ones allowed', () => {
  const m = new GuestMemory();
  assert.equal(m.regionList.length, 0);
  assert.throws(() => m.slice(0, 0), (e: unknown) => e instanceof VirtioError && e.code === 'MEM_OUT_OF_RANGE');
  const region = (guestAddr: number) => ({ guestAddr, size: 0x1000, buffer: new ArrayBuffer(0x1000) });
  m.addRegion(region(0x3000));
  m.addRegion(region(0x1000)); // below an existing region
  m.addRegion(region(0x2000)); // touching both: [0x2000, 0x3000) ends where one starts and starts where the other ends
  assert.deepEqual(m.regionList.map((r) => [r.guestAddr, r.end]), [
    [0x1000, 0x2000],
    [0x2000, 0x3000],
    [0x3000, 0x4000],
  ]);
  // A range may not straddle two regions, even adjacent ones (one buffer = one region).
  assert.throws(() => m.slice(0x1ffe, 4), VirtioError);
  assert.equal(m.slice(0x2ffc, 4).length, 4);
});

test('an overlapping region is refused with both ranges named, whichever side it overlaps', () => {
  const m = new GuestMemory([
    { guestAddr: 0x2000, size: 0x1000, buffer: new ArrayBuffer(0x1000) },
    { guestAddr: 0x8000, size: 0x1000, buffer: new ArrayBuffer(0x1000) },
  ]);
  const buffer = new ArrayBuffer(0x1000);
  assert.throws(() => m.addRegion({ guestAddr: 0x2800, size: 0x1000, buffer }), {
    name: 'RangeError',
    message: 'memory region [0x2800, 0x3800) overlaps [0x2000, 0x3000)',
  });
  assert.throws(() => m.addRegion({ guestAddr: 0x1800, size: 0x1000, buffer }), {
    message: 'memory region [0x1800, 0x2800) overlaps [0x2000, 0x3000)',
  });
  assert.throws(() => m.addRegion({ guestAddr: 0x2400, size: 0x100, buffer }), {
    message: 'memory region [0x2400, 0x2500) overlaps [0x2000, 0x3000)',
  });
  assert.equal(m.regionList.length, 2, 'nothing added');
});

test('removeRegion takes only the region with that exact start and size, and translation forgets it', () => {
  const buffers = [new ArrayBuffer(0x1000), new ArrayBuffer(0x1000)];
  const m = new GuestMemory([
    { guestAddr: 0x1000, size: 0x1000, buffer: buffers[0]! },
    { guestAddr: 0x2000, size: 0x1000, buffer: buffers[1]! },
  ]);
  const first = m.regionList[0]!;
  m.writeU32(0x1000, 0x11223344); // the last translated region is remembered for the next access
  assert.equal(m.removeRegion(0x1000, 0x800), undefined, 'same start, other size');
  assert.equal(m.removeRegion(0x1800, 0x800), undefined, 'inside, not a region');
  assert.equal(m.readU32(0x1000), 0x11223344, 'still mapped');
  assert.equal(m.removeRegion(0x1000, 0x1000), first, 'the first region in the list can be removed');
  assert.throws(
    () => m.readU32(0x1000),
    (e: unknown) => e instanceof VirtioError && e.code === 'MEM_OUT_OF_RANGE',
    'the removed region is not used again, though it was the last one translated',
  );
  assert.deepEqual(m.regionList.map((r) => r.guestAddr), [0x2000]);
  assert.equal(new Uint32Array(buffers[0]!)[0], 0x11223344, 'its buffer is left as it was');
});

test('translation: the exact error, and a zero-length range at a region end is outside (§2.7.5)', () => {
  const m = new GuestMemory([{ guestAddr: 0x1000, size: 0x1000, buffer: new ArrayBuffer(0x1000) }]);
  assert.throws(() => m.slice(0x2000, 1), {
    name: 'VirtioError',
    message: 'guest address range [0x2000, +1) is not inside guest memory (MEM_OUT_OF_RANGE, virtio 1.2 §2.7.5)',
  });
  // The same after an access has made the region the one remembered for the next translation.
  assert.equal(m.slice(0x1000, 0x1000).length, 0x1000);
  assert.equal(m.slice(0x1fff, 0).length, 0, 'empty, at the last byte');
  assert.throws(() => m.slice(0x2000, 0), {
    name: 'VirtioError',
    message: 'guest address range [0x2000, +0) is not inside guest memory (MEM_OUT_OF_RANGE, virtio 1.2 §2.7.5)',
  });
  assert.throws(() => m.slice(0xfff, 0), /\[0xfff, \+0\)/, 'nor one just below its start');
});
