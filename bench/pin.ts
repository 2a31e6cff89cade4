/**
 * Pins the calling thread to one CPU. Node has no API for a thread's affinity, but a worker
 * can learn its own kernel thread id from /proc/thread-self and `taskset -p` accepts a thread
 * id, so each worker pins itself exactly as ringtest's threads do with pthread_setaffinity_np.
 * Returns a note saying what happened (never throws: an unpinned run is still a run).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';

export function threadId(): number {
  // "<pid>/task/<tid>", resolved by the calling thread.
  return Number(readlinkSync('/proc/thread-self').split('/').pop());
}

export function pinSelf(cpu: number | undefined): string {
  if (cpu === undefined) return 'unpinned';
  const tid = threadId();
  try {
    execFileSync('taskset', ['-p', '-c', String(cpu), String(tid)], { stdio: 'pipe' });
    return `tid ${tid} on cpu ${cpu}`;
  } catch (e) {
    return `tid ${tid} unpinned (${(e as Error).message.split('\n')[0]})`;
  }
}

/** CPU time (user + system) of the calling thread so far, in seconds (10 ms resolution). */
export function threadCpuSeconds(): number {
  const stat = readFileSync('/proc/thread-self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of proc(5) are utime and stime; f[0] is field 3.
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}
/** USER_HZ: 100 on every Linux architecture Node supports. */
const CLOCK_TICKS = 100;
