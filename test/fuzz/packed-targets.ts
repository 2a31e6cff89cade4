/**
 * Fuzz targets of the packed virtqueue (virtio 1.2 §2.8), registered with the split ones
 * (test/fuzz/targets.ts appends them), so `npm test` runs them briefly and `npm run fuzz` longer:
 *
 * - packed-device-pop: PackedDeviceQueue.pop() over random ring states returns exactly what an
 *   independent reference walk (packed-reference.ts) says, or the same VirtioError, fast,
 *   without writing guest memory.
 * - packed-model: the packed driver half against the packed device half under random operations
 *   (add / publish / kick / pop / out-of-order use / publish used / get used / callbacks and
 *   notifications on and off), checked against a small reference model: every buffer comes back
 *   exactly once, with its length and the bytes the device wrote; the device sees exactly the
 *   bytes the driver wrote; free counts, notification decisions (computed by the model from the
 *   positions each side passed) and no lost kick or interrupt.
 * - packed-driver-used: the driver half against a hostile device writing random used
 *   descriptors: only tokens in flight, never twice, len within the buffer, or VirtioError and
 *   a broken queue.
 */
import fc from 'fast-check';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { RingEventFlags } from '../../src/virtio/constants.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { PackedDeviceQueue } from '../../src/virtio/packed-device-queue.js';
import { PackedDriverQueue, type Buffer } from '../../src/virtio/packed-driver-queue.js';
import { packedRingLayout, packedRingViewsFromGuest } from '../../src/virtio/packed-ring.js';
import { popClock, popTooSlow, type FuzzTarget } from './targets.js';
import { RefPackedDevice, buildPackedRing, packedRingInputArb, type PackedRingInput, type RefSegment } from './packed-reference.js';


class PropertyError extends Error {
  override readonly name = 'PropertyError';
}
function ensure(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new PropertyError(typeof message === 'string' ? message : message());
}
const describe = (x: unknown) => JSON.stringify(x);

// ------------------------------------------------------------------------------------------
// 1. pop() against the reference walk

export const packedDevicePop: FuzzTarget<PackedRingInput> = {
  name: 'packed-device-pop',
  description: 'PackedDeviceQueue.pop() returns exactly the list the reference walk finds, or the same VirtioError, fast, without writing memory',
  arbitrary: packedRingInputArb(),
  check(input) {
    const b = buildPackedRing(input);
    const before = b.bytes.slice();
    let q: PackedDeviceQueue;
    try {
      q = new PackedDeviceQueue(b.memory, b.views, {
        eventIdx: input.eventIdx,
        indirect: input.indirect,
        nextAvail: input.nextAvail,
        nextUsed: input.nextUsed,
        maxIndirectEntries: input.maxIndirectEntries,
      });
    } catch (e) {
      ensure(false, `a valid start state was refused: ${e}`);
    }
    const ref = new RefPackedDevice(b, before);
    ensure(q.descriptorsInFlight === ref.inFlight, `in flight at start ${q.descriptorsInFlight} ≠ reference ${ref.inFlight}`);
    for (let k = 0; k < input.size + 2; k++) {
      let got: DescriptorChain | null = null;
      let err: unknown;
      const t0 = popClock();
      try {
        got = q.pop();
      } catch (e) {
        err = e;
      }
      const slow = popTooSlow(t0);
      ensure(slow === null, () => slow!);
      const want = ref.pop();
      if (err !== undefined) {
        ensure(err instanceof VirtioError, () => `pop() threw a non-VirtioError: ${(err as Error)?.stack ?? err}`);
        ensure(want.kind === 'error', () => `pop() threw ${(err as VirtioError).code} but the reference says ${describe(want)}`);
        ensure(err.code === want.code, () => `pop() threw ${(err as VirtioError).code}, the reference ${want.code}`);
        ensure(q.nextAvail === ref.encoded, 'a refused list moved the device');
        break;
      }
      if (got === null) {
        ensure(want.kind === 'none', () => `pop() returned null but the reference says ${describe(want)}`);
        break;
      }
      ensure(want.kind === 'chain', () => `pop() returned buffer ${got!.head} but the reference says ${describe(want)}`);
      ensure(got.head === want.id, `id ${got.head} ≠ reference ${want.id}`);
      const segs: RefSegment[] = [];
      for (const [list, write] of [
        [got.readable, false],
        [got.writable, true],
      ] as const) {
        for (const s of list) {
          ensure(s.buffer === b.backing, 'a segment is not a view of guest memory');
          const region = b.offsets.findIndex((o, i) => s.byteOffset >= o && s.byteOffset + s.length <= o + input.regions[i]!.size);
          ensure(region >= 0, `segment at buffer offset ${s.byteOffset} (+${s.length}) is not inside one region`);
          segs.push({ addr: input.regions[region]!.addr + (s.byteOffset - b.offsets[region]!), len: s.length, write });
        }
      }
      ensure(describe(segs) === describe(want.segs), () => `segments ${describe(segs)} ≠ reference ${describe(want.segs)}`);
      ensure(q.nextAvail === ref.encoded, `nextAvail 0x${q.nextAvail.toString(16)} ≠ reference 0x${ref.encoded.toString(16)}`);
      ensure(q.descriptorsInFlight === ref.inFlight, 'descriptors in flight out of step');
    }
    ensure(Buffer.compare(b.bytes, before) === 0, 'pop() wrote guest memory');
  },
};

// ------------------------------------------------------------------------------------------
// 2. driver + device against a model

export type PackedOp =
  | { op: 'add'; out: number; in: number; publish: boolean }
  | { op: 'publish' }
  | { op: 'kick' }
  | { op: 'disableCb' }
  | { op: 'enableCb' }
  | { op: 'getUsed'; max: number }
  | { op: 'pop'; n: number }
  | { op: 'use'; picks: number[]; lens: number[] }
  | { op: 'devPublish' }
  | { op: 'devDisable' }
  | { op: 'devEnable' };

export interface PackedModelInput {
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  ops: PackedOp[];
}

const opArb: fc.Arbitrary<PackedOp> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('add' as const), out: fc.nat(4), in: fc.nat(4), publish: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ op: 'publish' as const }) },
  { weight: 3, arbitrary: fc.constant({ op: 'kick' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'disableCb' as const }) },
  { weight: 2, arbitrary: fc.constant({ op: 'enableCb' as const }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('getUsed' as const), max: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('pop' as const), n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('use' as const), picks: fc.array(fc.nat(), { maxLength: 6 }), lens: fc.array(fc.nat(), { maxLength: 6 }) }) },
  { weight: 3, arbitrary: fc.constant({ op: 'devPublish' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'devDisable' as const }) },
  { weight: 2, arbitrary: fc.constant({ op: 'devEnable' as const }) },
);

/** A ring position with its wrap counter, stepped one descriptor at a time (the model's own arithmetic). */
class Cursor {
  pos = 0;
  wrap = 1;
  constructor(private readonly size: number) {}
  /** Steps over `n` descriptors; returns the (pos, wrap) of each, in order. */
  step(n: number): [number, number][] {
    const passed: [number, number][] = [];
    for (let i = 0; i < n; i++) {
      passed.push([this.pos, this.wrap]);
      if (++this.pos === this.size) {
        this.pos = 0;
        this.wrap ^= 1;
      }
    }
    return passed;
  }
  get encoded(): number {
    return this.pos | (this.wrap << 15);
  }
}

/** An event suppression structure as the model knows it. */
interface ModelEvent {
  flags: number;
  pos: number;
  wrap: number;
}

/** §2.8.10: should the side that published the descriptors `passed` (since its last decision) notify? */
function modelWants(ev: ModelEvent, eventIdx: boolean, passed: [number, number][]): boolean {
  if (ev.flags === RingEventFlags.DISABLE) return false;
  if (ev.flags === RingEventFlags.DESC && eventIdx) return passed.some(([p, w]) => p === ev.pos && w === ev.wrap);
  return true;
}

interface ModelBuffer {
  token: number;
  out: Buffer[];
  inn: Buffer[];
  descs: number;
  inLen: number;
}

/** Byte k of token t's request stream, and of the device's answer. */
const reqByte = (t: number, k: number) => (t * 29 + k * 13 + 5) & 0xff;
const ansByte = (t: number, k: number) => (t * 7 + k * 31 + 11) & 0xff;

export const packedModel: FuzzTarget<PackedModelInput> = {
  name: 'packed-model',
  description: 'packed driver + device halves under random operations: every buffer back once with the right bytes, in the model’s order, notification rules kept',
  arbitrary: fc.record({
    size: fc.oneof(fc.integer({ min: 1, max: 9 }), fc.constantFrom(16, 32, 100)),
    eventIdx: fc.boolean(),
    indirect: fc.boolean(),
    ops: fc.array(opArb, { maxLength: 120, size: 'max' }),
  }),
  check(input) {
    const { size, eventIdx, indirect } = input;
    const ring = packedRingLayout(0x1000, size);
    const tableBlock = 16 * 8;
    const tablesAt = Math.ceil((ring.desc + ring.bytes) / 16) * 16;
    const dataAt = tablesAt + tableBlock * size;
    const BLOCK = 8 * 64; // per token: up to 8 parts of ≤ 64 bytes
    const memBytes = dataAt + BLOCK * (input.ops.length + 2);
    const memory = new GuestMemory([{ guestAddr: 0, size: memBytes, buffer: new SharedArrayBuffer(memBytes) }]);
    const freeTables: number[] = Array.from({ length: size }, (_, i) => tablesAt + tableBlock * i);
    const driver = new PackedDriverQueue<number>(memory, packedRingViewsFromGuest(memory, ring), {
      eventIdx,
      indirect,
      allocIndirect: (n) => (n <= tableBlock ? (freeTables.pop() ?? null) : null),
      freeIndirect: (a) => freeTables.push(a),
    });
    const device = new PackedDeviceQueue(memory, packedRingViewsFromGuest(memory, ring), { eventIdx, indirect });

    // the model
    let nextToken = 1;
    let free = size;
    const availOrder: ModelBuffer[] = [];
    let published = 0;
    let devicePopped = 0;
    const inFlight = new Map<number, ModelBuffer>();
    let poppedUnused: { chain: DescriptorChain; buf: ModelBuffer }[] = [];
    const usedUnpublished: { token: number; len: number }[] = [];
    const usedPublished: { token: number; len: number }[] = [];
    const returned = new Set<number>();
    let addedOk = 0;
    const drvAvail = new Cursor(size); // driver's next available position
    const devAvail = new Cursor(size); // device's next position to read
    const devUsed = new Cursor(size); // device's next used position
    const drvUsed = new Cursor(size); // driver's next used position
    let addedSinceKick: [number, number][] = [];
    let buffersSinceKick = 0;
    let usedSinceSignal: [number, number][] = [];
    let signalledValid = false;
    const deviceEvent: ModelEvent = { flags: RingEventFlags.ENABLE, pos: 0, wrap: 0 };
    const driverEvent: ModelEvent = { flags: RingEventFlags.ENABLE, pos: 0, wrap: 0 };
    let callbacksEnabled = true;
    let deviceAsleepAt = -1;
    let driverAsleep = false;
    const where = (i: number, op: PackedOp) => `op ${i} ${describe(op)}`;

    const getUsedOnce = (ctx: string): boolean => {
      const r = driver.getUsed();
      const want = usedPublished.shift();
      if (want === undefined) {
        ensure(r === null, `${ctx}: getUsed returned token ${r?.token} with nothing published`);
        return false;
      }
      ensure(r !== null, `${ctx}: getUsed returned null, expected token ${want.token}`);
      ensure(r.token === want.token && r.len === want.len, `${ctx}: getUsed returned ${describe(r)}, expected ${describe(want)} (order of use)`);
      ensure(!returned.has(r.token), `${ctx}: token ${r.token} returned twice`);
      returned.add(r.token);
      const b = inFlight.get(r.token)!;
      inFlight.delete(r.token);
      // the bytes the device wrote: the first `len` bytes of the writable stream
      let k = 0;
      for (const part of b.inn) {
        for (let j = 0; j < part.len && k < r.len; j++, k++) {
          const got = memory.readU8(part.addr + j);
          ensure(got === ansByte(r.token, k), `${ctx}: byte ${k} of token ${r.token}'s answer is ${got}, the device wrote ${ansByte(r.token, k)}`);
        }
      }
      free += b.descs;
      drvUsed.step(b.descs);
      if (eventIdx && callbacksEnabled) Object.assign(driverEvent, { flags: RingEventFlags.DESC, pos: drvUsed.pos, wrap: drvUsed.wrap });
      driverAsleep = false;
      return true;
    };

    const devPublish = (ctx: string) => {
      device.publishUsed();
      const decision = device.needsNotification();
      const moved = usedUnpublished.splice(0);
      usedPublished.push(...moved);
      const want = (!signalledValid && eventIdx && driverEvent.flags === RingEventFlags.DESC) || modelWants(driverEvent, eventIdx, usedSinceSignal);
      ensure(decision === want, `${ctx}: needsNotification() = ${decision}, the rules say ${want} (driver event ${describe(driverEvent)}, used ${describe(usedSinceSignal)})`);
      usedSinceSignal = [];
      signalledValid = true;
      if (driverAsleep && moved.length) ensure(decision, `${ctx}: lost interrupt: the driver waits and new used buffers do not notify`);
      if (decision) driverAsleep = false;
    };

    const kick = (ctx: string) => {
      driver.publish();
      published = availOrder.length;
      const r = driver.needsKick();
      const want = buffersSinceKick > 0 && modelWants(deviceEvent, eventIdx, addedSinceKick);
      ensure(r === want, `${ctx}: needsKick() = ${r}, the rules say ${want} (device event ${describe(deviceEvent)}, added ${describe(addedSinceKick)})`);
      addedSinceKick = [];
      buffersSinceKick = 0;
      if (deviceAsleepAt >= 0 && published > deviceAsleepAt) ensure(r, `${ctx}: lost kick: the device sleeps and new buffers do not notify`);
      if (r) deviceAsleepAt = -1;
    };

    const pop = (ctx: string): boolean => {
      let chain: DescriptorChain | null;
      try {
        chain = device.pop();
      } catch (e) {
        ensure(false, `${ctx}: pop() threw on what our own driver wrote: ${e}`);
      }
      if (devicePopped === published) {
        ensure(chain === null, `${ctx}: pop() returned a list nobody published`);
        return false;
      }
      ensure(chain !== null, `${ctx}: pop() returned null with ${published - devicePopped} published`);
      const buf = availOrder[devicePopped++]!;
      devAvail.step(buf.descs);
      const got = [...chain.readable, ...chain.writable].map((s) => ({ addr: s.byteOffset, len: s.length }));
      ensure(
        describe(got) === describe([...buf.out, ...buf.inn]) && chain.readable.length === buf.out.length,
        `${ctx}: popped list ${describe(got)} is not what token ${buf.token} added`,
      );
      const bytes = new Uint8Array(chain.readableLength);
      chain.read(bytes);
      for (let k = 0; k < bytes.length; k++) ensure(bytes[k] === reqByte(buf.token, k), `${ctx}: request byte ${k} of token ${buf.token} differs`);
      ensure(device.nextAvail === devAvail.encoded, `${ctx}: device nextAvail 0x${device.nextAvail.toString(16)} ≠ model 0x${devAvail.encoded.toString(16)}`);
      poppedUnused.push({ chain, buf });
      deviceAsleepAt = -1;
      return true;
    };

    const use = (chain: DescriptorChain, buf: ModelBuffer, len: number) => {
      ensure(chain.write(new Uint8Array(len).map((_, k) => ansByte(buf.token, k))) === len, 'the answer did not fit the writable part');
      device.addUsed(chain.head, len);
      usedSinceSignal.push(...devUsed.step(buf.descs));
      usedUnpublished.push({ token: buf.token, len });
    };

    input.ops.forEach((op, i) => {
      const ctx = where(i, op);
      switch (op.op) {
        case 'add': {
          const total = op.out + op.in;
          if (total === 0) return;
          const token = nextToken++;
          const block = dataAt + BLOCK * token;
          const parts = Array.from({ length: total }, (_, k) => ({ addr: block + 64 * k, len: 1 + ((token * 7 + k * 5) % 64) }));
          const out = parts.slice(0, op.out);
          const inn = parts.slice(op.out);
          let off = 0;
          for (const p of out) for (let j = 0; j < p.len; j++) memory.slice(p.addr + j, 1)[0] = reqByte(token, off++);
          for (const p of inn) memory.slice(p.addr, p.len).fill(0);
          const canIndirect = indirect && total > 1 && total <= size; // tables never run out here
          const descs = canIndirect && free >= 1 ? 1 : total;
          let r: boolean | 'throw';
          try {
            r = driver.add(out, inn, token, op.publish);
          } catch (e) {
            ensure(e instanceof RangeError, `${ctx}: add threw ${e}`);
            r = 'throw';
          }
          if (!canIndirect && total > size) {
            ensure(r === 'throw', `${ctx}: a ${total}-element buffer can never fit a ${size}-entry ring, but add() returned ${r}`);
            return;
          }
          const want = descs <= free;
          ensure(r === want, `${ctx}: add() = ${r}, the model says ${want} (free ${free}, needs ${descs})`);
          if (!want) return;
          const buf: ModelBuffer = { token, out, inn, descs, inLen: inn.reduce((a, b) => a + b.len, 0) };
          free -= descs;
          addedOk++;
          availOrder.push(buf);
          inFlight.set(token, buf);
          addedSinceKick.push(...drvAvail.step(descs));
          buffersSinceKick++;
          if (op.publish) published = availOrder.length;
          ensure(driver.nextAvail === drvAvail.encoded, `${ctx}: driver nextAvail out of step`);
          break;
        }
        case 'publish':
          driver.publish();
          published = availOrder.length;
          break;
        case 'kick':
          kick(ctx);
          break;
        case 'disableCb':
          driver.disableCallbacks();
          callbacksEnabled = false;
          Object.assign(driverEvent, { flags: RingEventFlags.DISABLE, pos: 0, wrap: 0 });
          driverAsleep = false;
          break;
        case 'enableCb': {
          const r = driver.enableCallbacks();
          callbacksEnabled = true;
          if (eventIdx) Object.assign(driverEvent, { flags: RingEventFlags.DESC, pos: drvUsed.pos, wrap: drvUsed.wrap });
          else Object.assign(driverEvent, { flags: RingEventFlags.ENABLE, pos: 0, wrap: 0 });
          const want = usedPublished.length === 0;
          ensure(r === want, `${ctx}: enableCallbacks() = ${r}, expected ${want}`);
          driverAsleep = r;
          break;
        }
        case 'getUsed':
          for (let k = 0; k < op.max && getUsedOnce(ctx); k++);
          break;
        case 'pop':
          for (let k = 0; k < op.n && pop(ctx); k++);
          break;
        case 'use':
          for (let k = 0; k < op.picks.length && poppedUnused.length; k++) {
            const j = op.picks[k]! % poppedUnused.length;
            const { chain, buf } = poppedUnused[j]!;
            poppedUnused = poppedUnused.filter((_, x) => x !== j);
            use(chain, buf, (op.lens[k] ?? 0) % (buf.inLen + 1));
          }
          ensure(device.nextUsed === devUsed.encoded, `${ctx}: device nextUsed out of step`);
          break;
        case 'devPublish':
          devPublish(ctx);
          break;
        case 'devDisable':
          device.disableNotifications();
          Object.assign(deviceEvent, { flags: RingEventFlags.DISABLE, pos: 0, wrap: 0 });
          deviceAsleepAt = -1; // a device suppresses kicks only while it is running
          break;
        case 'devEnable': {
          const r = device.enableNotifications();
          if (eventIdx) Object.assign(deviceEvent, { flags: RingEventFlags.DESC, pos: devAvail.pos, wrap: devAvail.wrap });
          else Object.assign(deviceEvent, { flags: RingEventFlags.ENABLE, pos: 0, wrap: 0 });
          const want = published > devicePopped;
          ensure(r === want, `${ctx}: enableNotifications() = ${r}, expected ${want}`);
          deviceAsleepAt = r ? -1 : published;
          break;
        }
      }
      ensure(driver.numFree === free, `${ctx}: numFree ${driver.numFree} ≠ model ${free}`);
      ensure(driver.inFlight === inFlight.size, `${ctx}: inFlight ${driver.inFlight} ≠ model ${inFlight.size}`);
      ensure(freeTables.length + [...inFlight.values()].filter((b) => b.descs === 1 && b.out.length + b.inn.length > 1).length === size, `${ctx}: indirect tables leaked`);
    });

    // drain: everything added comes back exactly once
    driver.publish();
    published = availOrder.length;
    while (pop('drain'));
    for (const { chain, buf } of poppedUnused.splice(0)) use(chain, buf, buf.inLen);
    devPublish('drain');
    while (getUsedOnce('drain'));
    ensure(returned.size === addedOk, `lost buffers: ${addedOk - returned.size} of ${addedOk} never came back`);
    ensure(driver.numFree === size && driver.inFlight === 0, 'descriptors leaked after the drain');
    ensure(device.descriptorsInFlight === 0 && device.nextUsed === device.nextAvail, 'the device still holds descriptors after the drain');
  },
};

// ------------------------------------------------------------------------------------------
// 3. the driver against a hostile device

export interface PackedHostileInput {
  size: number;
  eventIdx: boolean;
  adds: { out: number; in: number }[];
  /** Buffers the device completes correctly first (in a random order given by `order`). */
  legit: number;
  order: number[];
  /** Forged used descriptors, written from the driver's next used position on. */
  forged: { id: { kind: 'inflight' | 'random' | 'small'; value: number }; len: number; mark: 'used' | 'usedOtherLap' | 'avail' | 'random'; write: boolean; raw: number }[];
  calls: number;
}

export const packedDriverUsed: FuzzTarget<PackedHostileInput> = {
  name: 'packed-driver-used',
  description: 'PackedDriverQueue.getUsed() under forged used descriptors: only tokens in flight, never twice, len within the buffer, or VirtioError + broken',
  arbitrary: fc.oneof(fc.integer({ min: 1, max: 9 }), fc.constantFrom(16, 64)).chain((size) =>
    fc.record({
      size: fc.constant(size),
      eventIdx: fc.boolean(),
      adds: fc.array(fc.record({ out: fc.nat(2), in: fc.integer({ min: 1, max: 2 }) }), { maxLength: size }),
      legit: fc.nat(size),
      order: fc.array(fc.nat(), { maxLength: size }),
      forged: fc.array(
        fc.record({
          id: fc.record({ kind: fc.constantFrom('inflight' as const, 'inflight' as const, 'random' as const, 'small' as const), value: fc.nat({ max: 0xffff }) }),
          len: fc.oneof(fc.nat(80), fc.nat({ max: 0xffff_ffff })),
          mark: fc.constantFrom('used' as const, 'used' as const, 'usedOtherLap' as const, 'avail' as const, 'random' as const),
          write: fc.boolean(),
          raw: fc.nat({ max: 0xffff }),
        }),
        { maxLength: size + 2 },
      ),
      calls: fc.integer({ min: 1, max: size + 4 }),
    }),
  ),
  check(input) {
    const { size, eventIdx } = input;
    const ring = packedRingLayout(0x1000, size);
    const dataAt = Math.ceil((ring.desc + ring.bytes) / 16) * 16;
    const memBytes = dataAt + 0x4000;
    const memory = new GuestMemory([{ guestAddr: 0, size: memBytes, buffer: new ArrayBuffer(memBytes) }]);
    const driver = new PackedDriverQueue<number>(memory, packedRingViewsFromGuest(memory, ring), { eventIdx, indirect: false });
    const device = new PackedDeviceQueue(memory, packedRingViewsFromGuest(memory, ring), { eventIdx, indirect: false });
    const inLen = new Map<number, number>();
    let token = 1;
    for (const a of input.adds) {
      const out = Array.from({ length: a.out }, (_, k) => ({ addr: dataAt + 16 * k, len: 16 }));
      const inn = Array.from({ length: a.in }, (_, k) => ({ addr: dataAt + 0x100 + 16 * k, len: 12 + k }));
      if (out.length + inn.length > size || !driver.add(out, inn, token)) break;
      inLen.set(token, inn.reduce((x, b) => x + b.len, 0));
      token++;
    }
    const added = new Set(inLen.keys());
    const popped: DescriptorChain[] = [];
    for (let c; (c = device.pop()) !== null; ) popped.push(c);
    const pending = popped.slice();
    for (let k = 0; k < Math.min(input.legit, popped.length); k++) {
      const [c] = pending.splice((input.order[k] ?? 0) % pending.length, 1);
      device.addUsed(c!.head, c!.writableLength);
    }
    device.publishUsed();
    const returned = new Set<number>();
    const take = (): boolean => {
      let r;
      try {
        r = driver.getUsed();
      } catch (e) {
        ensure(e instanceof VirtioError, `getUsed threw a non-VirtioError: ${e}`);
        ensure(driver.isBroken, 'getUsed threw but the queue is not marked broken');
        ensure(driver.getUsed() === null, 'a broken queue still returns buffers');
        ensure(driver.add([{ addr: dataAt, len: 1 }], [], 999_999) === false, 'a broken queue still accepts buffers');
        return false;
      }
      if (r === null) return false;
      ensure(added.has(r.token), `token ${r.token} was never added`);
      ensure(!returned.has(r.token), `token ${r.token} returned twice`);
      ensure(r.len <= inLen.get(r.token)!, `len ${r.len} exceeds the ${inLen.get(r.token)} device-writable bytes of token ${r.token}`);
      returned.add(r.token);
      return true;
    };
    while (take());
    ensure(returned.size === Math.min(input.legit, popped.length), 'legitimate completions were not all returned');
    // now the device turns hostile: forged descriptors from the driver's next used position on
    let pos = driver.nextUsed & 0x7fff;
    let wrap = driver.nextUsed >>> 15;
    for (const f of input.forged) {
      const id =
        f.id.kind === 'inflight' && pending.length ? pending[f.id.value % pending.length]!.head : f.id.kind === 'small' ? f.id.value % size : f.id.value;
      const marks = { used: wrap ? 0x8080 : 0, usedOtherLap: wrap ? 0 : 0x8080, avail: wrap ? 0x0080 : 0x8000, random: f.raw & 0x8080 };
      const flags = marks[f.mark] | (f.write ? 2 : 0) | (f.mark === 'random' ? f.raw & 0x7f7f : 0);
      const at = ring.desc + 16 * pos;
      memory.writeU32(at + 8, f.len >>> 0);
      memory.writeU16(at + 12, id & 0xffff);
      memory.writeU16(at + 14, flags);
      if (++pos === size) {
        pos = 0;
        wrap ^= 1;
      }
    }
    for (let k = 0; k < input.calls && take(); k++);
    if (driver.isBroken) {
      const detached = driver.detachUnused();
      for (const t of detached) ensure(!returned.has(t), `token ${t} both returned and detached`);
      ensure(returned.size + detached.length === added.size, `lost tokens: ${added.size - returned.size - detached.length}`);
      ensure(driver.numFree === size, 'descriptors leaked after detachUnused');
    } else {
      ensure(driver.inFlight === added.size - returned.size, `inFlight ${driver.inFlight} ≠ ${added.size - returned.size}`);
    }
  },
};

export const packedTargets: FuzzTarget<any>[] = [packedDevicePop, packedModel, packedDriverUsed];
