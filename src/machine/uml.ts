// Launcher for the User-Mode Linux guest built by guest/linux/build.sh.
//
// A UML kernel is an ordinary host executable. Its virtio_uml front end
// connects to a vhost-user socket (`virtio_uml.device=<socket>:<id>`) and the
// guest's /init (guest/linux/initramfs/init) runs one command, passed base64
// encoded as `vt_cmd=` on the kernel command line, between two console
// markers:
//
//   VT_READY        right before the command starts (boot noise ends here)
//   VT_EXIT=<n>     after it ends, with its exit status
//
// and then powers off, so the UML process exits (with the same status).
import { spawn, spawnSync } from 'node:child_process';
import { killGroup, runScript, trackGroup, untrackGroup } from './process-groups.js';
import { existsSync, mkdtempSync, realpathSync, rmSync, statfsSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface UmlGuest {
  kernel: string;
  initramfs: string;
}

export interface UmlRunOptions {
  guest: UmlGuest;
  /** vhost-user socket the guest connects to (it need not exist: the device is then absent). */
  socket: string;
  /** virtio device ID announced for the socket (virtio_uml.device=SOCKET:ID). */
  deviceId?: number;
  /** argv of the command to run in the guest (through `sh -c`, quoted safely). */
  command: string[];
  /** guest RAM in MiB (default 64). */
  memMiB?: number;
  /** kill UML after this long (default 60000 ms). */
  timeoutMs?: number;
  /** more kernel command-line words, e.g. another `virtio_uml.device=...`. */
  extraArgs?: string[];
  /** called with every console (stdout) line as it arrives, markers included. */
  onLine?: (line: string) => void;
}

export interface UmlRunResult {
  /** exit status of the command inside the guest; null if it never reported one. */
  exitCode: number | null;
  /** console lines between VT_READY and VT_EXIT (markers removed). */
  lines: string[];
  /** everything else: boot messages before VT_READY, shutdown messages, UML's stderr. */
  bootLines: string[];
  timedOut: boolean;
  /** signal that ended the UML process, if any (SIGKILL after a timeout). */
  signal: NodeJS.Signals | null;
  /**
   * UML's own exit status. /init hands the command's status to UML (via /proc/exitcode), so this
   * equals exitCode after a clean run, and still carries it when the console died (a virtio_uml
   * probe failure can take the console's interrupt with it, so no VT_EXIT line arrives).
   */
  processExitCode: number | null;
}

const READY = 'VT_READY';
const EXIT_RE = /VT_EXIT=(\d+)\s*$/;

/** The repository root: the nearest ancestor of this file holding guest/linux/build.sh. */
export function defaultRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'guest', 'linux', 'build.sh'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  // dist/src/machine/uml.js -> three levels up
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

function umlBuildDir(repoRoot: string): string {
  const base = process.env.VT_BUILD_DIR ? path.resolve(repoRoot, process.env.VT_BUILD_DIR) : path.join(repoRoot, 'build');
  return path.join(base, 'uml');
}

/** The guest last built by guest/linux/build.sh (build/uml/current), or null if there is none. */
export function findUmlGuest(repoRoot: string = defaultRepoRoot()): UmlGuest | null {
  const current = path.join(umlBuildDir(repoRoot), 'current');
  const kernel = path.join(current, 'linux');
  const initramfs = path.join(current, 'initramfs.cpio');
  if (!existsSync(kernel) || !existsSync(initramfs)) return null;
  return { kernel: realpathSync(kernel), initramfs: realpathSync(initramfs) };
}

/**
 * The hash of guest/linux's build inputs (sources, config, package and compiler versions): the
 * name build/uml/<hash> that guest/linux/build.sh gives a build of them. Computed by the script
 * itself (`build.sh --print-hash`), so the file list and the hashing live in one place.
 * Throws with the script's output when it cannot (e.g. a build prerequisite is missing).
 */
export function umlGuestInputsHash(repoRoot: string = defaultRepoRoot()): string {
  const script = path.join(repoRoot, 'guest', 'linux', 'build.sh');
  const r = spawnSync('bash', [script, '--print-hash'], { cwd: repoRoot, encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run ${script}: ${r.error.message}`);
  const hash = (r.stdout ?? '').trim();
  if (r.status !== 0 || !/^[0-9a-f]{16}$/.test(hash)) {
    throw new Error(`${script} --print-hash failed (${r.signal ?? `exit ${r.status}`}): ${`${r.stdout ?? ''}${r.stderr ?? ''}`.trim()}`);
  }
  return hash;
}

/**
 * Why build/uml/current is not a build of the current guest/linux sources, or null when it is
 * (its target is named by the hash of the current inputs, umlGuestInputsHash).
 */
export function umlGuestStaleness(repoRoot: string = defaultRepoRoot()): string | null {
  const current = path.join(umlBuildDir(repoRoot), 'current');
  let built: string;
  try {
    built = path.basename(realpathSync(current));
  } catch {
    return `no UML guest at ${current}: run guest/linux/build.sh`;
  }
  let hash: string;
  try {
    hash = umlGuestInputsHash(repoRoot);
  } catch (e) {
    return `cannot tell whether the UML guest is current: ${(e as Error).message}`;
  }
  if (built === hash) return null;
  return `guest is stale: run guest/linux/build.sh (build/uml/current is ${built}, built from other sources than guest/linux now, whose inputs hash to ${hash})`;
}

/** Runs guest/linux/build.sh (a no-op when up to date; minutes on a cold cache). Throws with its output on failure. */
export async function buildUmlGuest(repoRoot: string = defaultRepoRoot()): Promise<UmlGuest> {
  const script = path.join(repoRoot, 'guest', 'linux', 'build.sh');
  // In a process group of its own, killed with this process (process-groups.ts): a build
  // must not run on after the command that started it was interrupted.
  const r = await runScript(script, repoRoot, 64 * 1024);
  if (r.error) throw new Error(`cannot run ${script}: ${r.error.message}`);
  if (r.status !== 0) {
    const out = r.output.split('\n').slice(-200).join('\n');
    throw new Error(`${script} failed (${r.signal ?? `exit ${r.status}`}):\n${out}`);
  }
  const guest = findUmlGuest(repoRoot);
  if (!guest) throw new Error(`${script} succeeded but build/uml/current has no linux + initramfs.cpio`);
  return guest;
}

/** POSIX-shell single quoting: the guest runs the command with `sh -c`. */
export function shellQuote(argv: string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}


let runCounter = 0;

/**
 * A directory for UML's memory file and uml_dir: tmpfs when it has room (UML
 * warns otherwise, and it is faster), else the OS temp dir. Docker's default
 * /dev/shm is only 64 MiB, hence the free-space check.
 */
function runDir(memMiB: number): string {
  const need = (memMiB + 32) * 1024 * 1024;
  const candidates = [process.env.VT_UML_TMPDIR, '/dev/shm', os.tmpdir()].filter((d): d is string => !!d);
  for (const base of candidates) {
    try {
      if (!statSync(base).isDirectory()) continue;
      const fs = statfsSync(base);
      const forced = base === process.env.VT_UML_TMPDIR || base === candidates[candidates.length - 1];
      if (!forced && fs.bavail * fs.bsize < need) continue;
      return mkdtempSync(path.join(base, 'vt-uml-'));
    } catch {
      /* try the next one */
    }
  }
  return mkdtempSync(path.join(os.tmpdir(), 'vt-uml-'));
}

/** Boots the guest, runs `command` in it and resolves when UML has exited. */
export function runUml(opts: UmlRunOptions): Promise<UmlRunResult> {
  const socket = path.resolve(opts.socket);
  // virtio_uml splits "<socket>:<id>" at the first ':' and the command line at spaces.
  if (/[\s:]/.test(socket)) throw new Error(`runUml: socket path must not contain ':' or whitespace: ${socket}`);
  if (Buffer.byteLength(socket) > 107) throw new Error(`runUml: socket path longer than sun_path allows: ${socket}`);
  if (opts.command.length === 0) throw new Error('runUml: empty command');
  const deviceId = opts.deviceId ?? 45;
  const mem = opts.memMiB ?? 64;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const encoded = Buffer.from(shellQuote(opts.command), 'utf8').toString('base64');
  if (encoded.length > 3000) throw new Error('runUml: command too long for the kernel command line (4096 bytes)');

  const dir = runDir(mem);
  const umid = `vt-${process.pid}-${++runCounter}`;
  const args = [
    `mem=${mem}M`,
    `initrd=${opts.guest.initramfs}`,
    `virtio_uml.device=${socket}:${deviceId}`,
    // console 0 writes to our stdout and reads nothing: the host terminal is never touched
    'con=null',
    'con0=null,fd:1',
    'console=tty0',
    'quiet',
    // any root= stops UML from appending its default root=98:0; /init in the initramfs wins anyway
    'root=none',
    `umid=${umid}`,
    `uml_dir=${dir}`,
    ...(opts.extraArgs ?? []),
    `vt_cmd=${encoded}`,
  ];

  return new Promise<UmlRunResult>((resolve, reject) => {
    const child = spawn(opts.guest.kernel, args, {
      cwd: dir,
      env: { ...process.env, TMPDIR: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // own process group (session): UML's helper processes die with it
    });
    const pgid = child.pid;
    const lines: string[] = [];
    const bootLines: string[] = [];
    let phase: 'boot' | 'run' | 'done' = 'boot';
    let exitCode: number | null = null;
    let timedOut = false;
    let settled = false;

    const cleanup = (): void => {
      if (pgid !== undefined) {
        killGroup(pgid);
        untrackGroup(pgid);
      }
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    };

    if (pgid !== undefined) trackGroup(pgid);
    const timer = setTimeout(() => {
      timedOut = true;
      if (pgid !== undefined) killGroup(pgid);
    }, timeoutMs);

    const onStdoutLine = (raw: string): void => {
      const line = raw.replace(/\r/g, '');
      opts.onLine?.(line);
      if (phase === 'boot') {
        const i = line.indexOf(READY);
        if (i >= 0 && line.slice(i + READY.length).trim() === '') {
          const before = line.slice(0, i);
          if (before.trim() !== '') bootLines.push(before);
          phase = 'run';
          return;
        }
        bootLines.push(line);
        return;
      }
      if (phase === 'run') {
        const m = EXIT_RE.exec(line);
        if (m) {
          exitCode = Number(m[1]);
          const before = line.slice(0, m.index);
          if (before.trim() !== '') lines.push(before);
          phase = 'done';
          return;
        }
        lines.push(line);
        return;
      }
      bootLines.push(line);
    };

    const splitter = (sink: (line: string) => void) => {
      let buf = '';
      return {
        data(chunk: Buffer): void {
          buf += chunk.toString('utf8');
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            sink(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
          }
        },
        end(): void {
          if (buf !== '') sink(buf);
          buf = '';
        },
      };
    };
    const out = splitter(onStdoutLine);
    const err = splitter((l) => bootLines.push(l.replace(/\r/g, '')));
    child.stdout.on('data', out.data);
    child.stderr.on('data', err.data);
    // When the main UML process exits, take any helper still holding the pipes with it.
    child.on('exit', () => {
      if (pgid !== undefined) killGroup(pgid);
    });
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      cleanup();
      reject(new Error(`runUml: cannot start ${opts.guest.kernel}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      out.end();
      err.end();
      cleanup();
      resolve({ exitCode, lines, bootLines, timedOut, signal, processExitCode: code });
    });
  });
}
