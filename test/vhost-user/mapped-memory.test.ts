/**
 * MappedMemory on its own (real memfds, real mmap): the region list, the refusals of
 * descriptions whose numbers do not fit a double (each of address, size, offset, and each end),
 * a region the GuestMemory refuses after it was mapped (the mapping is undone), and a release
 * that runs an unmap twice. The fd of every add is closed, whether it succeeds or not.
 *
 * Memory the front-end shrinks is shrunk here in this process too: the addon's SIGBUS guard
 * (installed when it loads) maps a zero page over each lost page touched, so a read of one is a
 * fault that faulted() and onMemoryFault report (test/vhost-user/memory-shrink.test.ts has the
 * guard itself, and the daemon, in child processes).
 */
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ProtocolError } from '../../src/vhost-user/codec.js';
import { F_SEAL_SHRINK, MappedMemory, onMemoryFault } from '../../src/vhost-user/mapped-memory.js';
import { native } from '../../src/vhost-user/native/index.js';
import type { MemoryRegionDescription } from '../../src/vhost-user/payloads.js';
import { memfdMappings, settle, waitFor } from './helpers.js';

const PAGE = native.pageSize;
const TWO_53 = 2n ** 53n;

const memfd = (size: number): number => native.memfdCreate('vhost-user-mapped-memory-test', size);
const desc = (guestAddr: bigint, size: bigint, userAddr: bigint, mmapOffset = 0n): MemoryRegionDescription => ({ guestAddr, size, userAddr, mmapOffset });

function isOpen(fd: number): boolean {
  try {
    native.fdKind(fd);
    return true;
  } catch {
    return false;
  }
}

/** add() must refuse with exactly `message`, and close the fd anyway. */
function refused(mm: MappedMemory, d: MemoryRegionDescription, message: string): void {
  const fd = memfd(PAGE);
  assert.throws(
    () => mm.add(d, fd),
    (e: unknown) => e instanceof ProtocolError && !e.fatal && e.message === message,
  );
  assert.equal(isOpen(fd), false, 'the fd is consumed');
  assert.equal(mm.count, 0);
}

describe('MappedMemory', () => {
  it('list: the mapped regions in the order added, with their numbers; remove and clear take them out', () => {
    const mm = new MappedMemory(new GuestMemory(), 4);
    assert.equal(mm.list.length, 0);
    const a = mm.add(desc(0x10000n, BigInt(PAGE), 0x7f0000000000n), memfd(PAGE));
    const b = mm.add(desc(0n, BigInt(2 * PAGE), 0x7f1000000000n, BigInt(PAGE)), memfd(3 * PAGE));
    assert.deepEqual(
      mm.list.map((r) => [r.guestAddr, r.size, r.userAddr, r.mmapOffset]),
      [
        [0x10000, PAGE, 0x7f0000000000, 0],
        [0, 2 * PAGE, 0x7f1000000000, PAGE],
      ],
    );
    assert.equal(mm.list[0], a);
    assert.equal(mm.list[1], b);
    assert.equal(mm.remove(desc(0x10000n, BigInt(PAGE), 0x7f0000000000n)), true);
    assert.deepEqual(mm.list, [b]);
    mm.clear();
    assert.deepEqual(mm.list, []);
    assert.deepEqual(memfdMappings(), []);
  });

  it('an address, size or offset beyond 2^53 is refused before anything is mapped', () => {
    const mm = new MappedMemory(new GuestMemory(), 4);
    const size = BigInt(PAGE);
    const why = (d: MemoryRegionDescription) => `region gpa 0x${d.guestAddr.toString(16)} size 0x${d.size.toString(16)}: address, size or offset beyond 2^53`;
    for (const d of [desc(TWO_53, size, 0n), desc(0n, TWO_53, 0n), desc(0n, size, TWO_53), desc(0n, size, 0n, TWO_53)]) {
      refused(mm, d, why(d));
    }
    assert.deepEqual(memfdMappings(), []);
  });

  it('a region whose end (guest, user or offset) passes 2^53 is refused', () => {
    const mm = new MappedMemory(new GuestMemory(), 4);
    const size = BigInt(2 * PAGE);
    const near = TWO_53 - BigInt(PAGE); // safe, but near + size is not
    const why = (d: MemoryRegionDescription) => `region gpa 0x${d.guestAddr.toString(16)} size 0x${d.size.toString(16)}: region end beyond 2^53`;
    for (const d of [desc(near, size, 0n), desc(0n, size, near), desc(0n, size, 0n, near)]) {
      refused(mm, d, why(d));
    }
    // Ending exactly at the last safe integer is not refused for its end (it fails later, on the file size).
    refused(mm, desc(0n, size, 0n, TWO_53 - 1n - size), `region gpa 0x0 size 0x${size.toString(16)}: [0x${(TWO_53 - 1n - size).toString(16)}, +0x${size.toString(16)}) is past the end of its ${PAGE}-byte file`);
    assert.deepEqual(memfdMappings(), []);
  });

  it('a region the GuestMemory refuses after mmap (it overlaps memory added there by someone else): refused, the mapping undone', () => {
    const memory = new GuestMemory([{ guestAddr: 0, size: PAGE, buffer: new ArrayBuffer(PAGE) }]);
    const mm = new MappedMemory(memory, 4);
    const fd = memfd(PAGE);
    assert.throws(
      () => mm.add(desc(0n, BigInt(PAGE), 0x1000n), fd),
      (e: unknown) =>
        e instanceof ProtocolError &&
        e.message === `region gpa 0x0 size 0x${PAGE.toString(16)}: memory region [0x0, 0x${PAGE.toString(16)}) overlaps [0x0, 0x${PAGE.toString(16)})`,
    );
    assert.equal(isOpen(fd), false);
    assert.equal(mm.count, 0);
    assert.deepEqual(memfdMappings(), [], 'the mapping was unmapped at once');
  });

  it('a release that runs the unmap twice: the second is ignored (the mapping is already detached)', () => {
    const unmaps: (() => void)[] = [];
    const mm = new MappedMemory(new GuestMemory(), 4, (unmap) => unmaps.push(unmap));
    const r = mm.add(desc(0n, BigInt(PAGE), 0n), memfd(PAGE));
    assert.equal(mm.remove(desc(0n, BigInt(PAGE), 0n)), true);
    assert.equal(mm.count, 0);
    assert.equal(unmaps.length, 1);
    assert.equal(memfdMappings().length, 1, 'mapped until the release runs the unmap');
    assert.equal(r.mapping.byteLength, PAGE);
    unmaps[0]!();
    assert.equal(r.mapping.byteLength, 0, 'detached');
    assert.deepEqual(memfdMappings(), []);
    assert.doesNotThrow(() => unmaps[0]!());
  });
});

describe('MappedMemory: sealed memory, neighbours, offsets, lookups (from the vhost-user mutation run)', () => {
  it('requireSealed: only a memfd sealed against shrinking; an unsealed memfd, one sealed otherwise, and a file are refused, each said', () => {
    const mm = new MappedMemory(new GuestMemory(), 4, undefined, true);
    const d = desc(0n, BigInt(PAGE), 0x7f0000000000n);
    const what = `region gpa 0x0 size 0x${PAGE.toString(16)}`;
    const tail = 'and sealed memory is required (--require-sealed-memory)';
    refused(mm, d, `${what}: the fd is a memfd not sealed against shrinking (F_SEAL_SHRINK), ${tail}`);
    const grow = memfd(PAGE);
    native.addSeals(grow, 0x0004); // F_SEAL_GROW only
    assert.throws(() => mm.add(d, grow), { message: `${what}: the fd is a memfd not sealed against shrinking (F_SEAL_SHRINK), ${tail}` });
    const file = openSync('/proc/self/exe', 'r');
    assert.throws(() => mm.add(d, file), { message: `${what}: the fd is a file, not a sealed memfd, ${tail}` });
    const sealed = memfd(PAGE);
    native.addSeals(sealed, F_SEAL_SHRINK);
    mm.add(d, sealed);
    assert.equal(mm.count, 1);
    mm.clear();
  });

  it('regions that touch (guest or user addresses end to end) are not overlaps', () => {
    const mm = new MappedMemory(new GuestMemory(), 4);
    mm.add(desc(0n, BigInt(PAGE), 0x7f0000000000n), memfd(PAGE));
    mm.add(desc(BigInt(PAGE), BigInt(PAGE), 0x7f0000000000n + BigInt(PAGE)), memfd(PAGE));
    mm.add(desc(BigInt(3 * PAGE), BigInt(PAGE), 0x7f0000000000n - BigInt(PAGE)), memfd(PAGE));
    mm.add(desc(BigInt(2 * PAGE), BigInt(PAGE), 0x7f0000000000n + BigInt(10 * PAGE)), memfd(PAGE)); // just below the third
    assert.equal(mm.count, 4);
    mm.clear();
  });

  it('an offset that is not page-aligned: the region starts at that byte of the fd', () => {
    const fd = memfd(3 * PAGE);
    const view = new Uint8Array(native.mmap(fd, 3 * PAGE, 0));
    view[PAGE + 0x100] = 0x5a;
    view[2 * PAGE + 0x100 - 1] = 0xa5;
    native.munmap(view.buffer as ArrayBuffer);
    const memory = new GuestMemory();
    const mm = new MappedMemory(memory, 4);
    mm.add(desc(0x10000n, BigInt(PAGE), 0x7f0000000000n, BigInt(PAGE + 0x100)), fd);
    assert.equal(memory.readU8(0x10000), 0x5a);
    assert.equal(memory.readU8(0x10000 + PAGE - 1), 0xa5);
    mm.clear();
  });

  it('remove needs guest address, user address and size to match; userSlice stays inside one region', () => {
    const mm = new MappedMemory(new GuestMemory(), 4);
    const ua = 0x7f0000000000;
    mm.add(desc(0x10000n, BigInt(PAGE), BigInt(ua)), memfd(PAGE));
    assert.equal(mm.remove(desc(0x20000n, BigInt(PAGE), BigInt(ua))), false, 'another guest address');
    assert.equal(mm.remove(desc(0x10000n, BigInt(PAGE), BigInt(ua + PAGE))), false, 'another user address');
    assert.equal(mm.remove(desc(0x10000n, BigInt(2 * PAGE), BigInt(ua))), false, 'another size');
    assert.equal(mm.count, 1);
    assert.equal(mm.userSlice(ua, PAGE)?.length, PAGE);
    assert.equal(mm.userSlice(ua + PAGE - 1, 1)?.length, 1);
    assert.equal(mm.userSlice(ua + PAGE, 0), null, 'the end is not inside');
    assert.equal(mm.userSlice(ua + PAGE - 1, 2), null, 'past the end');
    assert.equal(mm.userSlice(ua - 1, 1), null);
    assert.equal(mm.remove(desc(0x10000n, BigInt(PAGE), BigInt(ua), 0x1000n)), true, 'the offset is ignored');
  });
});

describe('MappedMemory: pages the front-end takes away (the SIGBUS guard, in this process)', () => {
  it('faulted(): the regions whose lost pages were touched, with the page count; the others are not listed', () => {
    const memory = new GuestMemory();
    const mm = new MappedMemory(memory, 4);
    assert.deepEqual(mm.faulted(), []);
    const fd = memfd(3 * PAGE);
    const frontEnds = openSync(`/proc/self/fd/${fd}`, 'r+'); // the front-end's copy: add() closes ours
    const shrunk = mm.add(desc(0n, BigInt(3 * PAGE), 0x7f0000000000n), fd);
    mm.add(desc(0x100000n, BigInt(PAGE), 0x7f1000000000n), memfd(PAGE));
    memory.write(2 * PAGE, Uint8Array.of(7));
    ftruncateSync(frontEnds, PAGE);
    closeSync(frontEnds);
    assert.deepEqual(mm.faulted(), [], 'lost, not touched yet');
    assert.deepEqual([memory.readU8(0), memory.readU8(PAGE), memory.readU8(2 * PAGE)], [0, 0, 0], 'the lost pages read as zeros');
    assert.deepEqual(mm.faulted(), [{ region: shrunk, pages: 2 }]);
    mm.clear();
  });

  describe('onMemoryFault', () => {
    // Eight pages whose file is cut to nothing: each read of another page is one fault.
    let fd = -1;
    let lost = new Uint8Array(0);
    let next = 0;
    const fault = (): void => assert.equal(lost[PAGE * next++], 0);
    before(() => {
      fd = memfd(8 * PAGE);
      lost = new Uint8Array(native.mmap(fd, 8 * PAGE, 0));
      ftruncateSync(fd, 0);
    });
    after(() => {
      native.munmap(lost.buffer as ArrayBuffer);
      native.close(fd);
    });

    it('every listener is called after a fault, one unsubscribed no more; the others still are', async () => {
      const calls = { a: 0, b: 0 };
      const offA = onMemoryFault(() => calls.a++);
      const offB = onMemoryFault(() => calls.b++); // the watch already runs: not a second one
      try {
        fault();
        await waitFor(() => calls.a === 1 && calls.b === 1, 'both listeners', 2000);
        offA();
        fault();
        await waitFor(() => calls.b === 2, 'the listener left', 2000);
        assert.equal(calls.a, 1);
      } finally {
        offA();
        offB();
      }
    });

    it('with no listener left the watch stops (a fault stays counted on the eventfd); the next listener starts it again; unsubscribing twice is harmless', async () => {
      let calls = 0;
      const off = onMemoryFault(() => calls++);
      off();
      off();
      fault();
      await settle();
      assert.equal(native.eventfdRead(native.memoryFaultFd()!), 1, 'nobody read the eventfd');
      const offAgain = onMemoryFault(() => calls++);
      try {
        fault();
        await waitFor(() => calls === 1, 'the new listener', 2000);
      } finally {
        offAgain();
      }
    });
  });
});
