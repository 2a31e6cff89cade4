/**
 * The machine's console: lines from the guest (printk, user programs) and from the device
 * (its log) reach the host's stdout in the order they happened, although they come from two
 * threads. Each line takes a sequence number from a counter shared by both threads at the
 * moment it is produced; the host prints lines in sequence order.
 */
export type Stream = 'stdout' | 'stderr';

export interface ConsoleLine {
  seq: number;
  stream: Stream;
  text: string;
}

/** Host side: re-establishes sequence order. */
export class OrderedConsole {
  private next = 0;
  private readonly held = new Map<number, ConsoleLine>();

  constructor(private readonly sink: (text: string, stream: Stream) => void) {}

  push(line: ConsoleLine): void {
    this.held.set(line.seq, line);
    let l: ConsoleLine | undefined;
    while ((l = this.held.get(this.next)) !== undefined) {
      this.held.delete(this.next++);
      this.sink(l.text, l.stream);
    }
  }

  /** Prints whatever is still held (a thread died between taking a number and posting). */
  flush(): void {
    for (const seq of [...this.held.keys()].sort((a, b) => a - b)) {
      const l = this.held.get(seq)!;
      this.sink(l.text, l.stream);
    }
    this.held.clear();
  }
}

/** Kernel-style timestamp `[    7.627890]` for `ms` milliseconds since boot. */
export function kernelTimestamp(ms: number): string {
  const us = Math.max(0, Math.round(ms * 1000));
  const sec = Math.floor(us / 1_000_000);
  const frac = us % 1_000_000;
  return `[${String(sec).padStart(5, ' ')}.${String(frac).padStart(6, '0')}]`;
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across threads. */
export const nowMs = (): number => performance.timeOrigin + performance.now();
