/**
 * Section "ring-cost": what one buffer costs each half of the product's queue, on one thread
 * (no cross-core traffic, so it is far steadier on a shared VM than the two-thread figures and
 * shows where the time goes). Batched as in ring.ts: driver add × 64 + publish, device
 * pop + addUsed × 64 + publishUsed, driver getUsed until empty; ns per buffer, best of 8.
 * And the device path a vhost-user back-end runs per request: DeviceRuntime.notify over
 * VirtioTestDevice (pop, answer in place, used element, publication), 128 virtio-test requests
 * made available at once as indirect chains, ns per request.
 *
 *   node dist/bench/ring-cost.js
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { DeviceRuntime } from '../src/device/runtime.js';
import { VirtioTestDevice } from '../src/devices/virtio-test/device.js';
import { REQUEST_SIZE, RESPONSE_SIZE } from '../src/devices/virtio-test/protocol.js';
import { FeatureBit, Status, bit } from '../src/virtio/constants.js';
import { DeviceQueue } from '../src/virtio/device-queue.js';
import { DriverQueue, type Buffer } from '../src/virtio/driver-queue.js';
import type { DescriptorChain } from '../src/virtio/chain.js';
import { GuestMemory } from '../src/virtio/memory.js';
import { ringViewsFromGuest } from '../src/virtio/ring-views.js';
import { packedLayout } from '../src/virtio/split-ring.js';
import { runIfMain, type Row, type SectionOptions } from './report.js';
import { pinSelf } from './pin.js';

const PARTS = ['driver add', 'device pop + addUsed', 'driver getUsed'] as const;

function measure(buffers: number, trials: number): { best: number[]; all: number[][] } {
  const mem = new SharedArrayBuffer(1 << 16);
  const memory = new GuestMemory([{ guestAddr: 0x1000, size: mem.byteLength, buffer: mem }]);
  const layout = packedLayout(0x1000, 256);
  const drv = new DriverQueue<number>(memory, ringViewsFromGuest(memory, layout), { eventIdx: true, indirect: false });
  const dev = new DeviceQueue(memory, ringViewsFromGuest(memory, layout), { eventIdx: true, indirect: false });
  drv.disableCallbacks();
  const out: Buffer[] = [{ addr: 0x8000, len: 8 }];
  const none: Buffer[] = [];
  const t = [0, 0, 0];
  const now = process.hrtime.bigint;
  let chain: DescriptorChain | undefined;
  const run = (n: number) => {
    for (let i = 0; i < n; i += 64) {
      const a = now();
      for (let k = 0; k < 64; k++) drv.add(out, none, 1, false);
      drv.publish();
      const b = now();
      for (let k = 0; k < 64; k++) {
        chain = dev.pop(chain)!;
        dev.addUsed(chain.head, 0);
      }
      dev.publishUsed();
      const c = now();
      while (drv.getUsedToken() !== undefined);
      const d = now();
      t[0] += Number(b - a);
      t[1] += Number(c - b);
      t[2] += Number(d - c);
    }
  };
  run(buffers / 5); // warm-up: optimized code before timing
  const all: number[][] = [[], [], []];
  for (let r = 0; r < trials; r++) {
    t.fill(0);
    run(buffers);
    t.forEach((x, k) => all[k]!.push(x / buffers));
  }
  return { best: all.map((xs) => Math.min(...xs)), all };
}

/**
 * ns per request of DeviceRuntime.notify over VirtioTestDevice (quiet), the vhost-user back-end's
 * per-request work without the system calls. Guest memory is a plain ArrayBuffer, as the back-end's
 * mmap'd regions are (not shared).
 */
function measureDevicePath(requests: number, trials: number): number[] {
  const SIZE = 256;
  const DEPTH = 128;
  const buf = new ArrayBuffer(1 << 20);
  const memory = new GuestMemory([{ guestAddr: 0x10000, size: buf.byteLength, buffer: buf }]);
  const layout = packedLayout(0x10000, SIZE);
  const rt = new DeviceRuntime(new VirtioTestDevice({ queueSize: SIZE, print: false }), memory, {
    interrupt() {},
    configInterrupt() {},
    log() {},
    warn(line) {
      throw new Error(line);
    },
  });
  rt.writeDriverFeatures(bit(FeatureBit.VERSION_1) | bit(FeatureBit.RING_EVENT_IDX) | bit(FeatureBit.RING_INDIRECT_DESC) | 1n);
  Object.assign(rt.queues[0]!, { size: SIZE, desc: layout.desc, avail: layout.avail, used: layout.used, ready: true });
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  rt.writeStatus(Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
  const drv = new DriverQueue<number>(memory, ringViewsFromGuest(memory, layout), { eventIdx: true, indirect: true });
  drv.disableCallbacks();
  const outs: Buffer[][] = [];
  const ins: Buffer[][] = [];
  for (let i = 0; i < DEPTH; i++) {
    outs.push([{ addr: 0x40000 + 64 * i, len: REQUEST_SIZE }]);
    ins.push([{ addr: 0x60000 + 16 * i, len: RESPONSE_SIZE }]);
  }
  let t = 0;
  const round = () => {
    for (let i = 0; i < DEPTH; i++) drv.add(outs[i]!, ins[i]!, i, false);
    drv.publish();
    const a = process.hrtime.bigint();
    rt.notify(0);
    t += Number(process.hrtime.bigint() - a);
    let n = 0;
    while (drv.getUsedToken() !== undefined) n++;
    if (n !== DEPTH) throw new Error(`device path: ${n} of ${DEPTH} requests answered`);
  };
  const rounds = Math.ceil(requests / DEPTH);
  for (let i = 0; i < rounds / 5; i++) round(); // warm-up
  const all: number[] = [];
  for (let r = 0; r < trials; r++) {
    t = 0;
    for (let i = 0; i < rounds; i++) round();
    all.push(t / (rounds * DEPTH));
  }
  return all;
}

export async function run(opts: SectionOptions): Promise<Row[]> {
  const buffers = opts.quick ? 200_000 : 1_000_000;
  const file = fileURLToPath(import.meta.url);
  // In a worker pinned to CPU 0, like the driver thread of ring.ts.
  const { all, device } = await new Promise<{ all: number[][]; device: number[] }>((resolve, reject) => {
    const w = new Worker(file, { workerData: { kind: 'ring-cost', buffers, trials: 8 } });
    w.once('message', resolve);
    w.once('error', reject);
  });
  opts.log(`ring-cost: ${PARTS.map((p, k) => `${p} ${Math.min(...all[k]!).toFixed(1)} ns`).join(', ')}; device path ${Math.min(...device).toFixed(1)} ns`);
  const rows: Row[] = PARTS.map((name, k) => ({
    section: 'ring-cost',
    name: `ours, one thread: ${name}`,
    unit: 'ns/buffer',
    samples: all[k]!,
    lowerIsBetter: true,
    note: `best ${Math.min(...all[k]!).toFixed(1)} ns; batched 64, 1 descriptor; 8 × ${buffers / 1e6} M buffers`,
  }));
  rows.push({
    section: 'ring-cost',
    name: 'ours, one thread: device path (runtime + virtio-test) per request',
    unit: 'ns/request',
    samples: device,
    lowerIsBetter: true,
    note: `best ${Math.min(...device).toFixed(1)} ns; 128 indirect requests per notify; 8 × ${buffers / 2e6} M requests`,
  });
  return rows;
}

export const section = { name: 'ring-cost', run };

if (!isMainThread && (workerData as { kind?: string } | undefined)?.kind === 'ring-cost') {
  const d = workerData as { buffers: number; trials: number };
  pinSelf(0);
  parentPort!.postMessage({ all: measure(d.buffers, d.trials).all, device: measureDevicePath(d.buffers / 2, d.trials) });
} else if (isMainThread) {
  await runIfMain(import.meta.url, section, 1);
}
