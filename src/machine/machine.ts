/**
 * The embedded machine: a guest thread and a device thread over one SharedArrayBuffer of
 * guest RAM, connected only by the virtio-mmio bus (bus.ts). One call runs a user program in
 * the guest and returns its exit status; console lines reach `sink` in the order they happened.
 */
import { Worker } from 'node:worker_threads';
import type { OptionValues } from '../devices/definition.js';
import { DEFAULT_DEVICE, deviceNames, findDevice } from '../devices/registry.js';
import { busProgress, createBus, shutdownBus } from './bus.js';
import { ConsoleReader, createConsole, nowMs, type Stream } from './console.js';
import { DEFAULT_RAM_BYTES, RAM_BASE, type DeviceThreadRequest, type MachineMessage, type MachineWorkerData } from './layout.js';
import type { DeviceStats } from '../device/runtime.js';
import type { SlowDeviceOptions } from '../device/slow-device.js';
import { TraceRingReader, createTraceRing } from '../trace/ring.js';
import { threadId, traceClock, type TraceConsumer } from '../trace/sink.js';

export interface MachineOptions {
  /** The registered device to attach (src/devices/registry.ts); default the registry's DEFAULT_DEVICE. */
  device?: string;
  /** The device's options by flag name; absent ones take the definition's defaults. */
  deviceOptions?: OptionValues;
  /** The guest user program's argv, e.g. ['virtio', '10']: argv[0] names one of the device's programs. */
  argv: string[];
  /** Shorthand for deviceOptions['device-id'] (devices that have that option). */
  deviceId?: number;
  /** The ID the guest driver binds to; default the device's (a mismatch leaves the device unbound). */
  driverDeviceId?: number;
  /** Shorthand for deviceOptions['queue-size'] (devices that have that option). */
  queueSize?: number;
  ramBytes?: number;
  /**
   * The ring layout the guest's virtio core accepts: 'split' (default, §2.7) or 'packed'
   * (§2.8: VIRTIO_F_RING_PACKED, which the device always offers).
   */
  ring?: 'split' | 'packed';
  /** Show boot messages (KERN_DEBUG printk). */
  verbose?: boolean;
  /** No kernel or device lines: the program's own output only. */
  quiet?: boolean;
  /** Called about every `progressMs` (default 250) while a program reports progress. */
  onProgress?: (done: number, total: number) => void;
  progressMs?: number;
  /** Delay every device response by this many ms. */
  deviceDelayMs?: number;
  /** Make the device slow at random: seeded random delays and stalls (src/device/slow-device.ts). */
  deviceSlowness?: SlowDeviceOptions;
  /** Where console lines go, one call per line; default process.stdout / process.stderr (with backpressure). */
  sink?: (text: string, stream: Stream) => void;
  /** Give up after this long (default: no limit). */
  timeoutMs?: number;
  /**
   * Trace events (names from src/trace/events.ts) of both threads into `consumer`, merged by
   * time, through one shared ring per thread (bounded memory, nothing posted per event). Times
   * are ms since the machine's start. The caller closes the consumer after the run.
   */
  trace?: { events: readonly string[]; consumer: TraceConsumer; ringBytes?: number };
  /** Ask the device thread for its state (DeviceRuntime.stats) when the program has exited. */
  stats?: boolean;
}

export interface MachineResult {
  exitCode: number;
  /** The device's state at the end of the run (with `stats`). */
  stats?: DeviceStats;
  /** What the program handed the host with Syscalls.report, if anything. */
  report?: Record<string, number | string>;
}

/** The device's options: its definition's defaults, then `given`, then the shorthands. */
function deviceOptionsFor(options: MachineOptions): { device: string; values: OptionValues; deviceId: number } {
  const device = options.device ?? DEFAULT_DEVICE;
  const definition = findDevice(device);
  if (!definition) throw new Error(`no device '${device}' (registered: ${deviceNames()})`);
  const values: Record<string, OptionValues[string]> = {};
  for (const o of definition.options) values[o.flag] = o.default;
  Object.assign(values, options.deviceOptions);
  for (const [flag, value] of [['device-id', options.deviceId], ['queue-size', options.queueSize]] as const) {
    if (value === undefined) continue;
    if (!definition.options.some((o) => o.flag === flag)) throw new Error(`device '${device}' has no --${flag} option`);
    values[flag] = value;
  }
  const deviceId = typeof values['device-id'] === 'number' ? values['device-id'] : definition.deviceId;
  return { device, values, deviceId };
}

/** Writes a run of lines; when the stream's buffer is full, waits for it to drain (so the console's producers wait too). */
function writeToProcess(text: string, stream: Stream): Promise<void> | void {
  const out = stream === 'stderr' ? process.stderr : process.stdout;
  if (out.write(text)) return;
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done).off('error', done).off('close', done);
      resolve();
    };
    out.on('drain', done).on('error', done).on('close', done);
  });
}

/** A per-line sink over the reader's runs of lines. */
function perLine(sink: (text: string, stream: Stream) => void) {
  return (text: string, stream: Stream): void => {
    const lines = text.split('\n');
    lines.pop(); // every run ends in a newline
    for (const line of lines) sink(line, stream);
  };
}

export async function runMachine(options: MachineOptions): Promise<MachineResult> {
  const ramBytes = options.ramBytes ?? DEFAULT_RAM_BYTES;
  const { device, values, deviceId } = deviceOptionsFor(options);
  const data: MachineWorkerData = {
    ram: new SharedArrayBuffer(ramBytes),
    bus: createBus(),
    console: createConsole(),
    ramBase: RAM_BASE,
    bootMs: nowMs(),
    device,
    deviceOptions: values,
    driverDeviceId: options.driverDeviceId ?? deviceId,
    verbose: options.verbose ?? false,
    quiet: options.quiet ?? false,
    argv: options.argv,
    ring: options.ring ?? 'split',
    deviceDelayMs: options.deviceDelayMs ?? 0,
    ...(options.deviceSlowness ? { deviceSlowness: options.deviceSlowness } : {}),
  };
  let tracing: { reader: TraceRingReader; done: Promise<void> } | undefined;
  if (options.trace && options.trace.events.length > 0) {
    const rings = { guestRing: createTraceRing(options.trace.ringBytes), deviceRing: createTraceRing(options.trace.ringBytes) };
    data.trace = { events: [...options.trace.events], ...rings };
    const reader = new TraceRingReader(
      [
        { sab: rings.guestRing, thread: threadId('guest') },
        { sab: rings.deviceRing, thread: threadId('device') },
      ],
      traceClock(data.bootMs),
    );
    tracing = { reader, done: reader.drain(options.trace.consumer) };
  }
  const console = new ConsoleReader(data.console);
  const draining = console.drain(options.sink ? perLine(options.sink) : writeToProcess);
  const workers = [
    new Worker(new URL('./device-worker.js', import.meta.url), { workerData: data }),
    new Worker(new URL('./guest-worker.js', import.meta.url), { workerData: data }),
  ];
  let report: Record<string, number | string> | undefined;
  let statsArrived: ((s: DeviceStats) => void) | undefined;
  const progress =
    options.onProgress &&
    setInterval(() => {
      const { done, total } = busProgress(data.bus);
      if (total > 0) options.onProgress!(done, total);
    }, options.progressMs ?? 250);
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
          if (m.kind === 'exit') done(() => resolve(m.code));
          else if (m.kind === 'report') report = m.fields;
          else if (m.kind === 'stats') statsArrived?.(m.stats);
          else done(() => reject(new Error(m.message)));
        });
        w.on('error', (e) => done(() => reject(e)));
        w.on('exit', (code) => done(() => reject(new Error(`machine: a thread exited early (code ${code})`))));
      }
    });
    const stats = options.stats ? await deviceStats(workers[0]!, (f) => (statsArrived = f)) : undefined;
    return { exitCode, ...(report ? { report } : {}), ...(stats ? { stats } : {}) };
  } finally {
    if (progress) clearInterval(progress);
    shutdownBus(data.bus);
    for (const w of workers) w.removeAllListeners('exit').removeAllListeners('message');
    // Both threads stop (the console keeps draining, so neither waits on a full ring), then the rest is printed.
    await Promise.all(workers.map(stopWorker));
    console.stop();
    tracing?.reader.stop();
    await draining;
    await tracing?.done;
  }
}

/** The device thread's DeviceRuntime.stats(), asked for once (undefined if it does not answer within 2 s). */
async function deviceStats(device: Worker, onStats: (f: (s: DeviceStats) => void) => void): Promise<DeviceStats | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), 2000);
    onStats((s) => {
      clearTimeout(timer);
      resolve(s);
    });
    device.postMessage({ kind: 'stats' } satisfies DeviceThreadRequest);
  });
}

async function stopWorker(w: Worker): Promise<void> {
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => void w.terminate().then(() => resolve()), 200);
    w.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}
