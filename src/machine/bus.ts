/**
 * The wire between the guest thread and the device thread of the embedded machine: one
 * SharedArrayBuffer of 32-bit words, used the way a hypervisor uses its exits and eventfds.
 *
 *  - MMIO access: the guest posts (op, offset, value) and blocks until the device thread has
 *    served it, like a vCPU trapping on an MMIO access.
 *  - QueueNotify: the guest sets the queue's bit and wakes the device thread without waiting
 *    (the ioeventfd path: a kick is fire-and-forget).
 *  - Interrupt: the device sets InterruptStatus bits and bumps an interrupt counter the guest
 *    waits on asynchronously (the irqfd path).
 *
 * Nothing else crosses: no JS objects, no callbacks. Guest memory is a separate SharedArrayBuffer.
 */

const enum Word {
  /** Bumped for every MMIO request or notification: the device thread waits on it. */
  Doorbell = 0,
  /** 0 idle, 1 request posted, 2 reply ready. */
  MmioState,
  MmioOp,
  MmioOffset,
  MmioValue,
  /** Access width in bytes: 4, or 1/2 for config space (§4.2.2.2). */
  MmioWidth,
  MmioReply,
  /** Bit per queue (up to 32) with a pending QueueNotify. */
  NotifyBits,
  /** InterruptStatus (§4.2.2): VRING and CONFIG bits, set by the device, cleared by InterruptACK. */
  InterruptStatus,
  /** Bumped whenever the device raises an interrupt: the guest waits on it. */
  InterruptCount,
  /** Set to 1 to stop both sides. */
  Shutdown,
  /** A guest program's progress (done, total), for the host's progress line. */
  ProgressDone,
  ProgressTotal,
  Count,
}

const MMIO_IDLE = 0;
const MMIO_POSTED = 1;
const MMIO_REPLIED = 2;
export const MMIO_READ = 0;
export const MMIO_WRITE = 1;

export function createBus(): SharedArrayBuffer {
  return new SharedArrayBuffer(Word.Count * 4);
}

class BusWords {
  protected readonly w: Int32Array;
  constructor(sab: SharedArrayBuffer) {
    this.w = new Int32Array(sab);
  }
  get shutdown(): boolean {
    return Atomics.load(this.w, Word.Shutdown) !== 0;
  }
  setProgress(done: number, total: number): void {
    Atomics.store(this.w, Word.ProgressTotal, total);
    Atomics.store(this.w, Word.ProgressDone, done);
  }
}

/** The guest thread's end: MMIO accesses (blocking), notifications, waiting for interrupts. */
export class GuestBus extends BusWords {
  /** A register read of `width` bytes (4, or 1 and 2 for config space: §4.2.2.2). */
  mmioRead(offset: number, width: 1 | 2 | 4 = 4): number {
    return this.access(MMIO_READ, offset, 0, width);
  }

  mmioWrite(offset: number, value: number, width: 1 | 2 | 4 = 4): void {
    this.access(MMIO_WRITE, offset, value, width);
  }

  /** QueueNotify without waiting for the device (ioeventfd semantics). */
  notify(queue: number): void {
    if (!(queue >= 0 && queue < 32)) throw new RangeError(`the embedded bus carries notifications for queues 0..31, not ${queue}`);
    Atomics.or(this.w, Word.NotifyBits, 1 << queue);
    this.ring();
  }

  /** Interrupt counter to pass to `waitInterrupt` (read before looking at the device). */
  interruptCount(): number {
    return Atomics.load(this.w, Word.InterruptCount);
  }

  /** Resolves when the interrupt counter moves from `seen` (or at shutdown). */
  async waitInterrupt(seen: number): Promise<void> {
    const r = Atomics.waitAsync(this.w, Word.InterruptCount, seen);
    if (r.async) await r.value;
  }

  private access(op: number, offset: number, value: number, width: number): number {
    if (this.shutdown) throw new Error('machine is shutting down');
    const w = this.w;
    Atomics.store(w, Word.MmioOp, op);
    Atomics.store(w, Word.MmioWidth, width);
    Atomics.store(w, Word.MmioOffset, offset);
    Atomics.store(w, Word.MmioValue, value | 0);
    Atomics.store(w, Word.MmioState, MMIO_POSTED);
    this.ring();
    while (Atomics.load(w, Word.MmioState) !== MMIO_REPLIED) {
      if (this.shutdown) throw new Error('machine is shutting down');
      Atomics.wait(w, Word.MmioState, MMIO_POSTED, 1000);
    }
    const reply = Atomics.load(w, Word.MmioReply) >>> 0;
    Atomics.store(w, Word.MmioState, MMIO_IDLE);
    return reply;
  }

  private ring(): void {
    Atomics.add(this.w, Word.Doorbell, 1);
    Atomics.notify(this.w, Word.Doorbell);
  }
}

export interface MmioHandler {
  /** A read of `width` bytes (1, 2 or 4) at `offset`; the value in the low bytes. */
  read(offset: number, width: number): number;
  write(offset: number, value: number, width: number): void;
  notify(queue: number): void;
}

/** The device thread's end: serves MMIO requests and notifications, raises interrupts. */
export class DeviceBus extends BusWords {
  /** Serves everything pending, then waits (without blocking the event loop) for more. Runs until shutdown. */
  async serve(handler: MmioHandler): Promise<void> {
    const w = this.w;
    const alive = keepAlive();
    try {
      while (!this.shutdown) {
        const seen = Atomics.load(w, Word.Doorbell);
        this.serveOnce(handler);
        const r = Atomics.waitAsync(w, Word.Doorbell, seen);
        if (r.async) await r.value;
      }
    } finally {
      clearInterval(alive);
    }
  }

  /**
   * Serves what is pending, in the guest's program order: the guest thread blocks on each MMIO
   * access, so any notification bits already set were set before the access now posted.
   * Notifications go first, then the access (a reset right after a kick sees the kick served).
   */
  serveOnce(handler: MmioHandler): void {
    const w = this.w;
    let bits = Atomics.exchange(w, Word.NotifyBits, 0);
    while (bits) {
      const q = 31 - Math.clz32(bits);
      bits &= ~(1 << q);
      handler.notify(q);
    }
    if (Atomics.load(w, Word.MmioState) === MMIO_POSTED) {
      const op = Atomics.load(w, Word.MmioOp);
      const offset = Atomics.load(w, Word.MmioOffset);
      const width = Atomics.load(w, Word.MmioWidth);
      let reply = 0;
      if (op === MMIO_READ) reply = handler.read(offset, width);
      else handler.write(offset, Atomics.load(w, Word.MmioValue) >>> 0, width);
      Atomics.store(w, Word.MmioReply, reply | 0);
      Atomics.store(w, Word.MmioState, MMIO_REPLIED);
      Atomics.notify(w, Word.MmioState);
    }
  }

  interruptStatus(): number {
    return Atomics.load(this.w, Word.InterruptStatus);
  }

  /** Sets InterruptStatus bits and wakes the guest's interrupt wait. */
  raise(bits: number): void {
    Atomics.or(this.w, Word.InterruptStatus, bits);
    Atomics.add(this.w, Word.InterruptCount, 1);
    Atomics.notify(this.w, Word.InterruptCount);
  }

  ack(bits: number): void {
    Atomics.and(this.w, Word.InterruptStatus, ~bits);
  }
}

/**
 * A pending Atomics.waitAsync does not keep a thread's event loop alive; this timer does,
 * until cleared, so a thread waiting for the other side does not exit under it.
 */
export function keepAlive(): NodeJS.Timeout {
  return setInterval(() => {}, 1 << 30);
}

/** The machine's end: stops both threads. */
/** A guest program's progress as last reported (the host's progress line). */
export function busProgress(sab: SharedArrayBuffer): { done: number; total: number } {
  const w = new Int32Array(sab);
  return { done: Atomics.load(w, Word.ProgressDone), total: Atomics.load(w, Word.ProgressTotal) };
}

export function shutdownBus(sab: SharedArrayBuffer): void {
  const w = new Int32Array(sab);
  Atomics.store(w, Word.Shutdown, 1);
  for (const word of [Word.Doorbell, Word.MmioState, Word.InterruptCount]) {
    Atomics.add(w, word, word === Word.MmioState ? 0 : 1);
    Atomics.notify(w, word);
  }
}
