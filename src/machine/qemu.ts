// Launcher for the QEMU guest built by guest/qemu/build.sh: Debian's x86_64
// kernel (6.1) and a busybox initramfs with the virtio-pci, virtio-blk and
// virtio-rng modules, booted by QEMU 7.2 (TCG, or KVM when /dev/kvm is
// writable). vhost-user devices attach as virtio-pci functions
// (`-device vhost-user-blk-pci,chardev=...`); guest RAM is a shared memfd so a
// vhost-user back end can map it.
//
// The guest's /init (guest/qemu/init) speaks the UML guest's console protocol
// (src/machine/uml.ts): the command arrives base64 encoded as `vt_cmd=` on the
// kernel command line and runs between two markers on the serial console,
//
//   VT_READY        right before the command starts (boot noise ends here)
//   VT_EXIT=<n>     after it ends, with its exit status
//
// and then the guest powers off; QEMU runs with -no-reboot, so it exits (a
// kernel panic reboots at once, panic=-1, and so ends QEMU too).
import { spawn, spawnSync } from 'node:child_process';
import { killGroup, runScript, trackGroup, untrackGroup } from './process-groups.js';
import { accessSync, constants, existsSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { defaultRepoRoot, shellQuote } from './uml.js';

export interface QemuGuest {
  /** what QEMU boots: the uncompressed vmlinux (PVH entry) when the build extracted it, else the bzImage. */
  kernel: string;
  initramfs: string;
}

export interface QemuVhostUserDevice {
  /** vhost-user socket of the back end (QEMU connects to it as a client). */
  socket: string;
  /** the -device value without `chardev=`, e.g. 'vhost-user-rng-pci' or 'vhost-user-blk-pci,num-queues=2'. */
  device: string;
  /**
   * Offer the guest the packed virtqueue (virtio 1.2 §2.8): the device gets `packed=on`, so
   * QEMU offers VIRTIO_F_RING_PACKED when the back end does, and Linux's virtio_ring then
   * creates packed rings. Default: the device's own setting (off in QEMU 7.2: split rings).
   */
  packed?: boolean;
  /** reconnect to the back end after this many seconds when the connection drops (chardev `reconnect=`). */
  reconnectSeconds?: number;
}

export interface QemuRunOptions {
  guest: QemuGuest;
  /** argv of the command to run in the guest (through `sh -c`, quoted safely). */
  command: string[];
  /** vhost-user devices, in order (each its own chardev and virtio-pci function). */
  vhostUser?: QemuVhostUserDevice[];
  /** guest RAM in MiB (default 256); always a shared memfd, as vhost-user needs. */
  memMiB?: number;
  /** vCPUs (default 1: TCG boots fastest with one). */
  cpus?: number;
  /** more kernel command-line words, e.g. 'vt_modules=ext4'. */
  kernelArgs?: string[];
  /** kill QEMU after this long (default 120000 ms). */
  timeoutMs?: number;
  /** called with every console (stdout) line as it arrives, markers included. */
  onLine?: (line: string) => void;
  /** 'kvm' when /dev/kvm is writable, else 'tcg' (default; VT_QEMU_ACCEL overrides). */
  accel?: 'kvm' | 'tcg';
  /** the QEMU binary (default: VT_QEMU or qemu-system-x86_64 on PATH). */
  qemuBinary?: string;
  /** more QEMU arguments, appended as they are. */
  extraQemuArgs?: string[];
}

export interface QemuRunResult {
  /** exit status of the command inside the guest; null if it never reported one. */
  exitCode: number | null;
  /** console lines between VT_READY and VT_EXIT (markers removed). */
  lines: string[];
  /** everything else: boot messages before VT_READY, shutdown messages, QEMU's stderr. */
  bootLines: string[];
  timedOut: boolean;
  /** signal that ended QEMU, if any (SIGKILL after a timeout). */
  signal: NodeJS.Signals | null;
  /**
   * QEMU's own exit status: 0 after the guest powered off (or panicked: it then reboots and
   * -no-reboot ends QEMU), 1 when QEMU refused to start (e.g. a vhost-user socket nobody
   * listens on; its message is in bootLines). Not the command's status: see exitCode.
   */
  processExitCode: number | null;
}

const READY = 'VT_READY';
const EXIT_RE = /VT_EXIT=(\d+)\s*$/;

function qemuBuildDir(repoRoot: string): string {
  const base = process.env.VT_BUILD_DIR ? path.resolve(repoRoot, process.env.VT_BUILD_DIR) : path.join(repoRoot, 'build');
  return path.join(base, 'qemu');
}

/** The guest last built by guest/qemu/build.sh (build/qemu/current), or null if there is none. */
export function findQemuGuest(repoRoot: string = defaultRepoRoot()): QemuGuest | null {
  const current = path.join(qemuBuildDir(repoRoot), 'current');
  const initramfs = path.join(current, 'initramfs.cpio');
  const kernel = [path.join(current, 'vmlinux'), path.join(current, 'vmlinuz')].find((k) => existsSync(k));
  if (!kernel || !existsSync(initramfs)) return null;
  return { kernel: realpathSync(kernel), initramfs: realpathSync(initramfs) };
}

/** Runs guest/qemu/build.sh (a no-op when up to date; seconds otherwise). Throws with its output on failure. */
export async function buildQemuGuest(repoRoot: string = defaultRepoRoot()): Promise<QemuGuest> {
  const script = path.join(repoRoot, 'guest', 'qemu', 'build.sh');
  // In a process group of its own, killed with this process (process-groups.ts): a build
  // must not run on after the command that started it was interrupted.
  const r = await runScript(script, repoRoot, 64 * 1024);
  if (r.error) throw new Error(`cannot run ${script}: ${r.error.message}`);
  if (r.status !== 0) {
    const out = r.output.split('\n').slice(-100).join('\n');
    throw new Error(`${script} failed (${r.signal ?? `exit ${r.status}`}):\n${out}`);
  }
  const guest = findQemuGuest(repoRoot);
  if (!guest) throw new Error(`${script} succeeded but build/qemu/current has no kernel + initramfs.cpio`);
  return guest;
}

/** The QEMU process tag: every QEMU started by process `pid` carries `-name vt-<pid>-<n>`. */
export const qemuNamePrefix = (pid: number = process.pid): string => `vt-${pid}-`;

/** QEMU option syntax: a ',' inside a value is written ',,'. */
const optValue = (s: string): string => s.replace(/,/g, ',,');

function defaultAccel(): 'kvm' | 'tcg' {
  const env = process.env.VT_QEMU_ACCEL;
  if (env === 'kvm' || env === 'tcg') return env;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return 'kvm';
  } catch {
    return 'tcg';
  }
}


let runCounter = 0;

/** The QEMU argv runQemu uses (exported for tests and for printing a by-hand command line). */
export function qemuArgs(opts: QemuRunOptions, name: string): string[] {
  if (opts.command.length === 0) throw new Error('runQemu: empty command');
  const mem = opts.memMiB ?? 256;
  if (!Number.isInteger(mem) || mem < 64) throw new Error(`runQemu: memMiB must be an integer >= 64, not ${mem}`);
  const cpus = opts.cpus ?? 1;
  const encoded = Buffer.from(shellQuote(opts.command), 'utf8').toString('base64');
  const cmdline = [
    'console=ttyS0',
    // warnings and worse during boot (panics always); init raises it to 7 at VT_READY
    'quiet',
    // a panic reboots at once, and -no-reboot turns that into QEMU exiting
    'panic=-1',
    // nothing to protect in a throwaway test guest; boots faster under TCG
    'mitigations=off',
    ...(opts.kernelArgs ?? []),
    `vt_cmd=${encoded}`,
  ].join(' ');
  // x86's COMMAND_LINE_SIZE is 2048 bytes, the terminating NUL included.
  if (Buffer.byteLength(cmdline) > 2000) throw new Error('runQemu: command too long for the kernel command line (2048 bytes)');
  const accel = opts.accel ?? defaultAccel();
  const args = [
    '-name', name,
    '-nodefaults', '-no-user-config',
    '-display', 'none',
    '-serial', 'stdio',
    '-monitor', 'none',
    '-no-reboot',
    '-accel', accel,
    '-cpu', accel === 'kvm' ? 'host' : 'max',
    '-smp', String(cpus),
    '-m', `${mem}M`,
    '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-machine', 'pc,memory-backend=mem',
    '-kernel', opts.guest.kernel,
    '-initrd', opts.guest.initramfs,
    '-append', cmdline,
  ];
  (opts.vhostUser ?? []).forEach((d, i) => {
    const socket = path.resolve(d.socket);
    if (Buffer.byteLength(socket) > 107) throw new Error(`runQemu: socket path longer than sun_path allows: ${socket}`);
    if (/(^|,)chardev=/.test(d.device)) throw new Error(`runQemu: give the device without chardev= (${d.device})`);
    if (d.packed !== undefined && /(^|,)packed=/.test(d.device)) throw new Error(`runQemu: packed is given twice (${d.device})`);
    const id = `vhu${i}`;
    let chardev = `socket,id=${id},path=${optValue(socket)}`;
    if (d.reconnectSeconds !== undefined) {
      if (!Number.isInteger(d.reconnectSeconds) || d.reconnectSeconds < 1) throw new Error(`runQemu: reconnectSeconds must be a positive integer`);
      chardev += `,reconnect=${d.reconnectSeconds}`;
    }
    const packed = d.packed === undefined ? '' : `,packed=${d.packed ? 'on' : 'off'}`;
    args.push('-chardev', chardev, '-device', `${d.device}${packed},chardev=${id}`);
  });
  args.push(...(opts.extraQemuArgs ?? []));
  return args;
}

/** Boots the guest, runs `command` in it and resolves when QEMU has exited. */
export function runQemu(opts: QemuRunOptions): Promise<QemuRunResult> {
  const name = `${qemuNamePrefix()}${++runCounter}`;
  const args = qemuArgs(opts, name);
  const binary = opts.qemuBinary ?? process.env.VT_QEMU ?? 'qemu-system-x86_64';
  const timeoutMs = opts.timeoutMs ?? 120_000;

  return new Promise<QemuRunResult>((resolve, reject) => {
    const child = spawn(binary, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // own process group: a timeout kill takes everything QEMU started
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
    child.on('exit', () => {
      if (pgid !== undefined) killGroup(pgid);
    });
    child.on('error', (e) => {
      if (settled) return;
      settled = true;
      cleanup();
      reject(new Error(`runQemu: cannot start ${binary}: ${e.message}`));
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
