/**
 * Child process groups that must not outlive this process: the UML and QEMU guests (each in a
 * session of its own, so a timeout kill takes every helper process they started) and the guest
 * builds (make and its compilers). A group is killed when the process exits, including when it
 * exits on SIGINT, SIGTERM or SIGHUP once a command line has called `exitOnSignals()`: a
 * detached group does not get the terminal's Ctrl-C, and a signal's default action ends Node
 * without its 'exit' handlers.
 */
import { spawn } from 'node:child_process';

const live = new Set<number>();
let exitHookInstalled = false;

/** SIGKILL to every process of group `pgid` (nothing if it is gone). */
export function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** Kills group `pgid` when this process exits, unless untracked first. */
export function trackGroup(pgid: number): void {
  live.add(pgid);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const g of live) killGroup(g);
    });
  }
}

export function untrackGroup(pgid: number): void {
  live.delete(pgid);
}

let signalsInstalled = false;

/**
 * For command lines: SIGINT, SIGTERM and SIGHUP end the process with status 128 + the signal's
 * number, through process.exit, so the tracked groups are killed on the way out.
 */
export function exitOnSignals(): void {
  if (signalsInstalled) return;
  signalsInstalled = true;
  const numbers = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
  for (const [name, n] of Object.entries(numbers)) process.once(name as NodeJS.Signals, () => process.exit(128 + n));
}

/**
 * Runs `bash script` in a process group of its own, tracked (killed if this process exits),
 * collecting its output (the last `keepBytes`). Resolves with the exit status or signal.
 */
export function runScript(
  script: string,
  cwd: string,
  keepBytes: number,
): Promise<{ status: number | null; signal: NodeJS.Signals | null; output: string; error?: Error }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [script], { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    const keep = (d: Buffer): void => {
      output += d.toString('utf8');
      if (output.length > keepBytes * 2) output = output.slice(-keepBytes);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const pgid = child.pid;
    if (pgid !== undefined) trackGroup(pgid);
    const done = (r: { status: number | null; signal: NodeJS.Signals | null; error?: Error }): void => {
      if (pgid !== undefined) untrackGroup(pgid);
      resolve({ ...r, output: output.slice(-keepBytes) });
    };
    child.once('error', (error) => done({ status: null, signal: null, error }));
    child.once('close', (status, signal) => done({ status, signal }));
  });
}
