/**
 * The embedded machine: a guest thread and a device thread over one SharedArrayBuffer of
 * guest RAM, connected only by the virtio-mmio bus (bus.ts). One call runs a user program in
 * the guest and returns its exit status; console lines reach `sink` in the order they happened.
 */
import { Worker } from 'node:worker_threads';
import { DEFAULT_QUEUE_SIZE, VIRTIO_ID_TEST } from '../devices/virtio-test/protocol.js';
import { createBus, shutdownBus } from './bus.js';
import { OrderedConsole, nowMs, type Stream } from './console.js';
import { DEFAULT_RAM_BYTES, RAM_BASE, type MachineMessage, type MachineWorkerData } from './layout.js';

export interface MachineOptions {
  /** The guest user program's argv, e.g. ['virtio', '10']. */
  argv: string[];
  deviceId?: number;
  /** The ID the guest driver binds to; default `deviceId` (a mismatch leaves the device unbound). */
  driverDeviceId?: number;
  queueSize?: number;
  ramBytes?: number;
  /** Show boot messages (KERN_DEBUG printk). */
  verbose?: boolean;
  /** Delay every device response by this many ms. */
  deviceDelayMs?: number;
  /** Where console lines go; default process.stdout / process.stderr. */
  sink?: (text: string, stream: Stream) => void;
  /** Give up after this long (default: no limit). */
  timeoutMs?: number;
}

export interface MachineResult {
  exitCode: number;
}

const defaultSink = (text: string, stream: Stream) => (stream === 'stderr' ? process.stderr : process.stdout).write(`${text}\n`);

export async function runMachine(options: MachineOptions): Promise<MachineResult> {
  const ramBytes = options.ramBytes ?? DEFAULT_RAM_BYTES;
  const data: MachineWorkerData = {
    ram: new SharedArrayBuffer(ramBytes),
    bus: createBus(),
    ramBase: RAM_BASE,
    bootMs: nowMs(),
    deviceId: options.deviceId ?? VIRTIO_ID_TEST,
    driverDeviceId: options.driverDeviceId ?? options.deviceId ?? VIRTIO_ID_TEST,
    queueSize: options.queueSize ?? DEFAULT_QUEUE_SIZE,
    verbose: options.verbose ?? false,
    argv: options.argv,
    deviceDelayMs: options.deviceDelayMs ?? 0,
  };
  const console = new OrderedConsole(options.sink ?? defaultSink);
  const workers = [
    new Worker(new URL('./device-worker.js', import.meta.url), { workerData: data }),
    new Worker(new URL('./guest-worker.js', import.meta.url), { workerData: data }),
  ];
  try {
    const exitCode = await new Promise<number>((resolve, reject) => {
      const timer =
        options.timeoutMs === undefined
          ? undefined
          : setTimeout(() => reject(new Error(`machine: no exit after ${options.timeoutMs} ms`)), options.timeoutMs);
      const done = (f: () => void) => {
        if (timer) clearTimeout(timer);
        f();
      };
      for (const w of workers) {
        w.on('message', (m: MachineMessage) => {
          if (m.kind === 'console') console.push(m);
          else if (m.kind === 'exit') done(() => resolve(m.code));
          else done(() => reject(new Error(m.message)));
        });
        w.on('error', (e) => done(() => reject(e)));
        w.on('exit', (code) => done(() => reject(new Error(`machine: a thread exited early (code ${code})`))));
      }
    });
    return { exitCode };
  } finally {
    shutdownBus(data.bus);
    for (const w of workers) w.removeAllListeners('exit').removeAllListeners('message');
    // Let both threads post their last lines, then stop them.
    await Promise.all(workers.map((w) => stopWorker(w, (m: MachineMessage) => m.kind === 'console' && console.push(m))));
    console.flush();
  }
}

async function stopWorker(w: Worker, onMessage: (m: MachineMessage) => void): Promise<void> {
  w.on('message', onMessage);
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => void w.terminate().then(() => resolve()), 200);
    w.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}
