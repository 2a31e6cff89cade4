/**
 * The ring fuzz targets: each is a fast-check arbitrary of JSON inputs and a check that throws
 * on a violated property. Shared by test/fuzz/ring-fuzz.test.ts (short runs in `npm test`,
 * corpus replay) and scripts/fuzz.mjs (long runs, writes counterexamples to test/corpus/).
 */
import fc from 'fast-check';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE, answer, decodeRequest, encodeResponse } from '../../src/devices/virtio-test/protocol.js';
import { DeviceRuntime } from '../../src/device/runtime.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';
import { FeatureBit, Status, bit } from '../../src/virtio/constants.js';
import type { DeviceContext } from '../../src/device/device.js';
import { DeviceQueue } from '../../src/virtio/device-queue.js';
import { DriverQueue, type Buffer } from '../../src/virtio/driver-queue.js';
import { VirtioError } from '../../src/virtio/errors.js';
import { GuestMemory } from '../../src/virtio/memory.js';
import { ringViewsFromGuest } from '../../src/virtio/ring-views.js';
import { packedLayout } from '../../src/virtio/split-ring.js';
import { RefDevice, type RefSegment } from './reference.js';
import { buildRing, guestAddrOf, ringInputArb, type BuiltRing, type RingInput } from './ring-input.js';
import { packedTargets } from './packed-targets.js';

export interface FuzzTarget<T = unknown> {
  name: string;
  description: string;
  arbitrary: fc.Arbitrary<T>;
  /** Throws (an Error saying which property broke) when the input violates a property. */
  check(input: T): void;
}

/** A single pop() may take at most this long (a walk is bounded by 32768 descriptors). */
export const POP_TIME_LIMIT_MS = 250;

/** A clock for one pop(): wall time and this process's CPU time. */
export function popClock(): { wall: number; cpu: NodeJS.CpuUsage } {
  return { wall: performance.now(), cpu: process.cpuUsage() };
}

/**
 * Whether the pop() timed since `start` broke POP_TIME_LIMIT_MS: by wall clock AND by CPU time.
 * A walk that does not end burns CPU; a machine too busy to run us (a loaded CI box, a nice'd
 * fuzz run) only stretches the wall clock, and is no finding.
 */
export function popTooSlow(start: { wall: number; cpu: NodeJS.CpuUsage }): string | null {
  const wall = performance.now() - start.wall;
  if (wall <= POP_TIME_LIMIT_MS) return null;
  const c = process.cpuUsage(start.cpu);
  const cpu = (c.user + c.system) / 1000;
  return cpu > POP_TIME_LIMIT_MS ? `pop() took ${wall.toFixed(1)} ms (${cpu.toFixed(1)} ms of CPU)` : null;
}

class PropertyError extends Error {
  override readonly name = 'PropertyError';
}
function ensure(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new PropertyError(typeof message === 'string' ? message : message());
}

/** The chain's segments as guest ranges; checks each is a view into one region of the backing buffer. */
function chainSegments(b: BuiltRing, chain: DescriptorChain): RefSegment[] {
  const out: RefSegment[] = [];
  for (const [list, write] of [
    [chain.readable, false],
    [chain.writable, true],
  ] as const) {
    for (const seg of list) {
      ensure(seg.buffer === b.backing, 'a segment is not a view of guest memory');
      const start = guestAddrOf(b, seg.byteOffset);
      const last = guestAddrOf(b, seg.byteOffset + seg.length - 1);
      ensure(start !== null && last !== null && last - start === seg.length - 1, () => `segment at buffer offset ${seg.byteOffset} (+${seg.length}) is not inside one region`);
      out.push({ addr: start, len: seg.length, write });
    }
  }
  return out;
}

const describe = (x: unknown) => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));

// ------------------------------------------------------------------------------------------
// 1. DeviceQueue.pop() over random ring states

export const devicePop: FuzzTarget<RingInput> = {
  name: 'device-pop',
  description: 'DeviceQueue.pop() returns exactly the chain the descriptors describe or a VirtioError, fast, without writing memory',
  arbitrary: ringInputArb(),
  check(input) {
    const b = buildRing(input);
    const before = b.bytes.slice();
    const q = new DeviceQueue(b.memory, b.views, { eventIdx: input.eventIdx, indirect: input.indirect, nextAvail: input.nextAvail });
    const ref = new RefDevice(b, before);
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
        ensure(want.kind === 'error', () => `pop() threw ${err instanceof VirtioError ? err.code : err} but the reference says ${describe(want)}`);
        ensure(err.code === want.code, () => `pop() threw ${(err as VirtioError).code}, the reference ${want.code}`);
        break;
      }
      if (got === null) {
        ensure(want.kind === 'none', () => `pop() returned null but the reference says ${describe(want)}`);
        break;
      }
      ensure(want.kind === 'chain', () => `pop() returned chain ${got!.head} but the reference says ${describe(want)}`);
      ensure(got.head === want.head, `head ${got.head} ≠ reference ${want.head}`);
      const segs = chainSegments(b, got);
      ensure(describe(segs) === describe(want.segs), () => `segments ${describe(segs)} ≠ reference ${describe(want.segs)}`);
      const sum = (l: Uint8Array[]) => l.reduce((a, s) => a + s.length, 0);
      ensure(got.readableLength === sum(got.readable) && got.writableLength === sum(got.writable), 'chain lengths do not add up');
      ensure(got.readableLength + got.writableLength <= 2 ** 32, 'chain longer than 2^32 bytes');
      ensure(q.nextAvail === ref.nextAvail, 'nextAvail out of step');
    }
    ensure(Buffer.compare(b.bytes, before) === 0, 'pop() wrote guest memory');
  },
};

// ------------------------------------------------------------------------------------------
// 2. DeviceRuntime + virtio-test over random rings: answered right or NEEDS_RESET; canary

interface Served {
  head: number;
  /** Byte ranges [start, end) of the backing buffer the device may write. */
  writable: [number, number][];
}

export const deviceRuntime: FuzzTarget<RingInput> = {
  name: 'device-runtime',
  description: 'DeviceRuntime + virtio-test: every request answered correctly or NEEDS_RESET; only writable bytes and the used ring change',
  arbitrary: ringInputArb({ wellFormed: 12, maxMutations: 2 }).map((i) => ({ ...i, nextAvail: 0 })),
  check(input) {
    // The runtime starts a queue at avail index 0; inputs generated for another start are shifted.
    if (input.nextAvail !== 0) input = { ...input, nextAvail: 0 };
    const b = buildRing(input);
    const before = b.bytes.slice();
    const served: Served[] = [];
    const problems: string[] = [];
    class RecordingDevice extends VirtioTestDevice {
      override handleChain(queue: number, chain: DescriptorChain, ctx: DeviceContext): number {
        const ranges = chain.writable.map((s) => [s.byteOffset, s.byteOffset + s.length] as [number, number]);
        served.push({ head: chain.head, writable: ranges });
        const req = new Uint8Array(REQUEST_SIZE);
        chain.read(req);
        const n = super.handleChain(queue, chain, ctx);
        const overlapping = ranges.some(([s, e], i) => ranges.some(([s2, e2], j) => i !== j && s < e2 && s2 < e));
        if (!overlapping) {
          const got = new Uint8Array(RESPONSE_SIZE);
          let off = 0;
          for (const s of chain.writable) {
            const take = Math.min(s.length, RESPONSE_SIZE - off);
            got.set(s.subarray(0, take), off);
            off += take;
            if (off === RESPONSE_SIZE) break;
          }
          const want = encodeResponse(answer(decodeRequest(req)));
          if (Buffer.compare(got, want) !== 0) problems.push(`chain ${chain.head}: response ${[...got]} ≠ ${[...want]}`);
        }
        return n;
      }
    }
    const warnings: string[] = [];
    let configInterrupts = 0;
    const rt = new DeviceRuntime(new RecordingDevice({ print: false, queueSize: 256 }), b.memory, {
      interrupt: () => {},
      configInterrupt: () => configInterrupts++,
      log: () => {},
      warn: (l) => warnings.push(l),
    });
    let features = bit(FeatureBit.VERSION_1) | bit(0);
    if (input.eventIdx) features |= bit(FeatureBit.RING_EVENT_IDX);
    if (input.indirect) features |= bit(FeatureBit.RING_INDIRECT_DESC);
    const S = Status;
    rt.writeStatus(S.ACKNOWLEDGE | S.DRIVER);
    rt.writeDriverFeatures(features);
    rt.writeStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    const L = b.layout;
    Object.assign(rt.queues[0]!, { size: input.size, desc: L.desc, avail: L.avail, used: L.used, ready: true });
    const usedStart = b.memory.readU16(L.used + 2);
    rt.writeStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
    rt.notify(0);
    ensure(problems.length === 0, () => problems.join('; '));

    // canary: only the used ring and the writable segments of chains handed to the device changed
    const allowed = new Uint8Array(b.bytes.length);
    const usedOff = b.offsets[0]! + (L.used - input.regions[0]!.addr);
    allowed.fill(1, usedOff, usedOff + 6 + 8 * input.size);
    for (const s of served) for (const [a, e] of s.writable) allowed.fill(1, a, e);
    for (let i = 0; i < b.bytes.length; i++) {
      if (b.bytes[i] !== before[i] && !allowed[i]) {
        ensure(false, `byte ${i} of the backing buffer (guest ${guestAddrOf(b, i)?.toString(16) ?? 'guard'}) changed outside writable segments and the used ring`);
      }
    }
    if (rt.status & S.NEEDS_RESET) {
      ensure(warnings.some((w) => /device error/.test(w)), 'NEEDS_RESET without a logged rule');
      ensure(configInterrupts === 1, `config interrupts: ${configInterrupts}`);
      ensure(rt.activeQueue(0) === null, 'queue still active after a device error');
      return;
    }
    const q = rt.activeQueue(0);
    ensure(q !== null, 'queue not active without NEEDS_RESET');
    ensure(q.pending() === 0, 'buffers left unserved without NEEDS_RESET');
    const touchesUsed = served.some((s) => s.writable.some(([a, e]) => a < usedOff + 6 + 8 * input.size && usedOff < e));
    if (!touchesUsed) {
      ensure(b.memory.readU16(L.used + 2) === ((usedStart + served.length) & 0xffff), 'used.idx did not advance by the chains served');
      served.forEach((s, k) => {
        const slot = L.used + 4 + 8 * ((usedStart + k) % input.size);
        ensure(b.memory.readU32(slot) === s.head && b.memory.readU32(slot + 4) === RESPONSE_SIZE, `used element ${k} is not (${s.head}, 12)`);
      });
    }
  },
};

// ------------------------------------------------------------------------------------------
// 3. Model-based: random driver and device operations against a reference model

export type ModelOp =
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

export interface ModelInput {
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  ops: ModelOp[];
}

const opArb: fc.Arbitrary<ModelOp> = fc.oneof(
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

/** event ∈ [old, new) on the 16-bit circle (§2.7.7.2 / §2.7.10.2, written as a range test). */
const inWindow = (event: number, oldIdx: number, newIdx: number) => ((event - oldIdx) & 0xffff) < ((newIdx - oldIdx) & 0xffff);

interface ModelBuffer {
  token: number;
  out: Buffer[];
  inn: Buffer[];
  descs: number;
  inLen: number;
}

export const splitModel: FuzzTarget<ModelInput> = {
  name: 'split-model',
  description: 'driver + device halves under random operations agree with a reference model (no loss, no duplicates, order, notification rules)',
  arbitrary: fc.record({
    size: fc.integer({ min: 0, max: 8 }).map((l) => 1 << l),
    eventIdx: fc.boolean(),
    indirect: fc.boolean(),
    ops: fc.array(opArb, { maxLength: 120, size: 'max' }),
  }),
  check(input) {
    const { size, eventIdx, indirect } = input;
    const ring = packedLayout(0x1000, size);
    const tableBlock = 16 * 8;
    const tablesAt = Math.ceil((ring.desc + ring.bytes) / 16) * 16;
    const dataAt = tablesAt + tableBlock * size;
    const memBytes = dataAt + 0x10000;
    const memory = new GuestMemory([{ guestAddr: 0, size: memBytes, buffer: new ArrayBuffer(memBytes) }]);
    const freeTables: number[] = Array.from({ length: size }, (_, i) => tablesAt + tableBlock * i);
    const driver = new DriverQueue<number>(memory, ringViewsFromGuest(memory, ring), {
      eventIdx,
      indirect,
      allocIndirect: (n) => (n <= tableBlock ? (freeTables.pop() ?? null) : null),
      freeIndirect: (a) => freeTables.push(a),
    });
    const device = new DeviceQueue(memory, ringViewsFromGuest(memory, ring), { eventIdx, indirect });

    // the model
    let nextToken = 1;
    let free = size;
    const availOrder: ModelBuffer[] = []; // everything added, in order
    let published = 0; // how many of availOrder are published
    let devicePopped = 0;
    const inFlight = new Map<number, ModelBuffer>();
    let poppedUnused: { head: number; buf: ModelBuffer }[] = [];
    const usedUnpublished: { token: number; len: number }[] = [];
    const usedPublished: { token: number; len: number }[] = [];
    const returned = new Set<number>();
    let addedOk = 0;
    let kickedAvail = 0;
    let availEvent = 0;
    let noNotify = false;
    let usedEvent = 0;
    let noInterrupt = false;
    let lastUsed = 0;
    let callbacksEnabled = true;
    let signalled = 0;
    let signalledValid = false;
    let nextUsed = 0;
    let deviceAsleepAt = -1; // published count when the device went to sleep, or -1
    let driverAsleep = false;
    const where = (i: number, op: ModelOp) => `op ${i} ${describe(op)}`;

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
      free += b.descs;
      lastUsed = (lastUsed + 1) & 0xffff;
      if (eventIdx && callbacksEnabled) usedEvent = lastUsed;
      driverAsleep = false;
      return true;
    };

    const devPublish = (ctx: string) => {
      device.publishUsed();
      const decision = device.needsNotification();
      const moved = usedUnpublished.splice(0);
      usedPublished.push(...moved);
      const newIdx = nextUsed;
      let want: boolean;
      if (eventIdx) want = !signalledValid || inWindow(usedEvent, signalled, newIdx);
      else want = !noInterrupt;
      signalled = newIdx;
      signalledValid = true;
      ensure(decision === want, `${ctx}: needsNotification() = ${decision}, the rules say ${want} (used_event ${usedEvent}, old ${signalled}, new ${newIdx})`);
      if (driverAsleep && moved.length) ensure(decision, `${ctx}: lost interrupt: the driver waits and new used buffers do not notify`);
      if (decision) driverAsleep = false;
    };

    const kick = (ctx: string) => {
      driver.publish();
      published = availOrder.length;
      const r = driver.needsKick();
      const newIdx = availOrder.length & 0xffff;
      let want: boolean;
      if (newIdx === kickedAvail) want = false;
      else if (eventIdx) want = inWindow(availEvent, kickedAvail, newIdx);
      else want = !noNotify;
      ensure(r === want, `${ctx}: needsKick() = ${r}, the rules say ${want} (avail_event ${availEvent}, old ${kickedAvail}, new ${newIdx})`);
      kickedAvail = newIdx;
      if (deviceAsleepAt >= 0 && published > deviceAsleepAt) ensure(r, `${ctx}: lost kick: the device sleeps and new buffers do not notify`);
      if (r) deviceAsleepAt = -1;
    };

    const pop = (ctx: string): boolean => {
      const chain = device.pop();
      if (devicePopped === published) {
        ensure(chain === null, `${ctx}: pop() returned a chain nobody published`);
        return false;
      }
      ensure(chain !== null, `${ctx}: pop() returned null with ${published - devicePopped} published`);
      const buf = availOrder[devicePopped++]!;
      const addr = (s: Uint8Array) => s.byteOffset; // region at guest 0, buffer offset 0
      const got = [...chain.readable.map((s) => ({ addr: addr(s), len: s.length })), ...chain.writable.map((s) => ({ addr: addr(s), len: s.length }))];
      ensure(describe(got) === describe([...buf.out, ...buf.inn]) && chain.readable.length === buf.out.length, `${ctx}: popped chain ${describe(got)} is not what token ${buf.token} added`);
      poppedUnused.push({ head: chain.head, buf });
      deviceAsleepAt = -1;
      return true;
    };

    input.ops.forEach((op, i) => {
      const ctx = where(i, op);
      switch (op.op) {
        case 'add': {
          const total = op.out + op.in;
          if (total === 0) return;
          const mk = (n: number, base: number) => Array.from({ length: n }, (_, k) => ({ addr: dataAt + ((base + 64 * k) % 0xf000), len: 1 + ((base + k) % 64) }));
          const token = nextToken++;
          const out = mk(op.out, token * 7);
          const inn = mk(op.in, token * 13 + 3);
          // the table allocator never fails here (≤ 8 entries, one table per descriptor at most)
          const canIndirect = indirect && total > 1;
          const descs = canIndirect && free >= 1 ? 1 : total;
          let r: boolean | 'throw';
          try {
            r = driver.add(out, inn, token, op.publish);
          } catch (e) {
            ensure(e instanceof RangeError, `${ctx}: add threw ${e}`);
            r = 'throw';
          }
          if (!canIndirect && total > size) {
            ensure(r === 'throw', `${ctx}: a ${total}-element buffer can never fit a ${size}-entry queue without indirect descriptors, but add() returned ${r} (a caller waiting for space would wait forever)`);
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
          if (op.publish) published = availOrder.length;
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
          if (eventIdx) usedEvent = (lastUsed - 1) & 0xffff;
          else noInterrupt = true;
          driverAsleep = false;
          break;
        case 'enableCb': {
          const r = driver.enableCallbacks();
          callbacksEnabled = true;
          if (eventIdx) usedEvent = lastUsed;
          else noInterrupt = false;
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
            const { head, buf } = poppedUnused[j]!;
            poppedUnused = poppedUnused.filter((_, x) => x !== j);
            const len = (op.lens[k] ?? 0) % (buf.inLen + 1);
            device.addUsed(head, len);
            nextUsed = (nextUsed + 1) & 0xffff;
            usedUnpublished.push({ token: buf.token, len });
          }
          break;
        case 'devPublish':
          devPublish(ctx);
          break;
        case 'devDisable':
          device.disableNotifications();
          if (!eventIdx) noNotify = true;
          deviceAsleepAt = -1; // a device suppresses kicks only while it is running
          break;
        case 'devEnable': {
          const r = device.enableNotifications();
          if (eventIdx) availEvent = devicePopped & 0xffff;
          else noNotify = false;
          const want = published > devicePopped;
          ensure(r === want, `${ctx}: enableNotifications() = ${r}, expected ${want}`);
          deviceAsleepAt = r ? -1 : published;
          break;
        }
      }
      ensure(driver.numFree === free, `${ctx}: numFree ${driver.numFree} ≠ model ${free}`);
      ensure(driver.inFlight === inFlight.size, `${ctx}: inFlight ${driver.inFlight} ≠ model ${inFlight.size}`);
    });

    // drain: everything added comes back exactly once
    driver.publish();
    published = availOrder.length;
    while (pop('drain'));
    for (const { head, buf } of poppedUnused.splice(0)) {
      device.addUsed(head, buf.inLen);
      nextUsed = (nextUsed + 1) & 0xffff;
      usedUnpublished.push({ token: buf.token, len: buf.inLen });
    }
    devPublish('drain');
    while (getUsedOnce('drain'));
    ensure(returned.size === addedOk, `lost buffers: ${addedOk - returned.size} of ${addedOk} never came back`);
    ensure(driver.numFree === size && driver.inFlight === 0, 'descriptors leaked after the drain');
  },
};

// ------------------------------------------------------------------------------------------
// 4. The driver against a hostile device: random used ring contents

export interface HostileInput {
  size: number;
  eventIdx: boolean;
  adds: { out: number; in: number }[];
  /** Chains the device completes correctly first. */
  legit: number;
  /** Forged used elements, written from the current used.idx on. */
  forged: { id: { kind: 'head' | 'random' | 'small'; value: number }; len: number }[];
  /** How far the forged used.idx moves (≤ size mostly, sometimes anything). */
  idxDelta: number;
  calls: number;
}

export const driverUsed: FuzzTarget<HostileInput> = {
  name: 'driver-used',
  description: 'DriverQueue.getUsed() under random used ring contents: only tokens in flight, never twice, len within the buffer, or VirtioError + broken',
  arbitrary: fc.integer({ min: 0, max: 8 }).chain((l) => {
    const size = 1 << l;
    return fc.record({
      size: fc.constant(size),
      eventIdx: fc.boolean(),
      adds: fc.array(fc.record({ out: fc.nat(2), in: fc.integer({ min: 1, max: 2 }) }), { maxLength: size }),
      legit: fc.nat(size),
      forged: fc.array(
        fc.record({
          id: fc.record({ kind: fc.constantFrom('head' as const, 'head' as const, 'random' as const, 'small' as const), value: fc.nat({ max: 0xffff_ffff }) }),
          len: fc.oneof(fc.nat(80), fc.nat({ max: 0xffff_ffff })),
        }),
        { maxLength: size + 2 },
      ),
      idxDelta: fc.oneof(fc.nat(size + 2), fc.nat({ max: 0xffff })),
      calls: fc.integer({ min: 1, max: size + 4 }),
    });
  }),
  check(input) {
    const { size, eventIdx } = input;
    const ring = packedLayout(0x1000, size);
    const dataAt = Math.ceil((ring.desc + ring.bytes) / 16) * 16;
    const memBytes = dataAt + 0x4000;
    const memory = new GuestMemory([{ guestAddr: 0, size: memBytes, buffer: new ArrayBuffer(memBytes) }]);
    const driver = new DriverQueue<number>(memory, ringViewsFromGuest(memory, ring), { eventIdx, indirect: false });
    const device = new DeviceQueue(memory, ringViewsFromGuest(memory, ring), { eventIdx, indirect: false });
    const inLen = new Map<number, number>();
    const heads: number[] = [];
    let token = 1;
    for (const a of input.adds) {
      const out = Array.from({ length: a.out }, (_, k) => ({ addr: dataAt + 16 * k, len: 16 }));
      const inn = Array.from({ length: a.in }, (_, k) => ({ addr: dataAt + 0x100 + 16 * k, len: 12 + k }));
      if (out.length + inn.length > size || !driver.add(out, inn, token)) break;
      inLen.set(token, inn.reduce((x, b) => x + b.len, 0));
      token++;
    }
    const added = new Set(inLen.keys());
    // the device takes everything and completes `legit` of them correctly
    const popped: { head: number; writable: number }[] = [];
    for (let c; (c = device.pop()) !== null; ) popped.push({ head: c.head, writable: c.writableLength });
    for (const p of popped.slice(0, input.legit)) device.addUsed(p.head, p.writable);
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
    // now the device turns hostile
    const used16 = memory.readU16(ring.used + 2);
    input.forged.forEach((f, k) => {
      const slot = ring.used + 4 + 8 * ((used16 + k) % size);
      const id = f.id.kind === 'head' && popped.length ? popped[f.id.value % popped.length]!.head : f.id.kind === 'small' ? f.id.value % size : f.id.value;
      memory.writeU32(slot, id >>> 0);
      memory.writeU32(slot + 4, f.len >>> 0);
    });
    memory.writeU16(ring.used + 2, (used16 + input.idxDelta) & 0xffff);
    for (let k = 0; k < input.calls && take(); k++);
    const detached = driver.isBroken ? driver.detachUnused() : [];
    if (driver.isBroken) {
      for (const t of detached) ensure(!returned.has(t), `token ${t} both returned and detached`);
      ensure(returned.size + detached.length === added.size, `lost tokens: ${added.size - returned.size - detached.length}`);
      ensure(driver.numFree === size, 'descriptors leaked after detachUnused');
    }
  },
};

// The packed virtqueue's targets (test/fuzz/packed-targets.ts) run with these.
export const targets: FuzzTarget<any>[] = [devicePop, deviceRuntime, splitModel, driverUsed, ...packedTargets];
