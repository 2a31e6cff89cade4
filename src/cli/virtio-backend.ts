#!/usr/bin/env node
/**
 * `virtio-backend --device NAME --socket-path PATH [device options]`: serves any registered
 * device (src/devices/registry.ts) over vhost-user to a front-end — QEMU, User-Mode Linux's
 * virtio_uml, cloud-hypervisor, or the TypeScript front-end. One front-end at a time; it keeps
 * serving after one leaves. It follows the vhost-user "Backend program conventions" (QEMU
 * docs/interop/vhost-user.rst): --socket-path / --fd, --print-capabilities, no daemonizing,
 * a quick clean exit on SIGTERM, a non-zero exit when it cannot start.
 *
 * stdout: one line when listening, one per connection and disconnection, and the device's lines
 * (virtio-test's `QEMU_BACK_END: >>> ...`) unless --quiet. stderr: diagnostics.
 * Exit status: 0 after SIGINT/SIGTERM, 2 for a bad command line, 1 when it cannot start.
 *
 * Readiness: --ready-fd N gets "ready\n"; with NOTIFY_SOCKET set (systemd Type=notify), READY=1
 * and STATUS= go to that datagram socket. Socket activation: with LISTEN_PID = our pid and
 * LISTEN_FDS = 1 (systemd .socket units), fd 3 is the listening socket.
 *
 * Live state: --control-socket PATH also listens on a Unix socket (0600, removed on exit) that
 * answers JSON-line queries modelled on QEMU's x-query-virtio-* (src/vhost-user/control-server.ts);
 * `virtio-backend query PATH [status|queue N|element N [I]|stats] [--json]` asks it (control-query.ts).
 *
 * `virtio-test-backend` is this command with `--device virtio-test` fixed (runBackend).
 */
import { closeSync, existsSync, readFileSync, realpathSync, writeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { DeviceDefinition, DeviceEnvironment, DeviceFactory, OptionValues } from '../devices/definition.js';
import { DEVICES, deviceNames, findDevice } from '../devices/registry.js';
import { DEFAULT_PUBLISH_BATCH } from '../device/runtime.js';
import { serveDevice, type BackendServer } from '../vhost-user/backend-server.js';
import { serveControl, type ControlServer } from '../vhost-user/control-server.js';
import { QUERY_USAGE, runQuery } from './control-query.js';
import { native } from '../vhost-user/native/index.js';
import { MAX_QUEUE_SIZE } from '../virtio/constants.js';
import {
  DeviceOptionError,
  allDeviceOptionsConfig,
  deviceOptionsConfig,
  formatDeviceOptions,
  helpLines,
  misplacedDeviceOption,
  optionNamesIn,
  parseDeviceOptions,
} from './device-options.js';
import { LOG_FORMATS, LOG_LEVELS, LOG_LEVEL_ENV, createDaemonLog, isLogLevel, type DaemonLog, type LogFormat } from './daemon-log.js';
import { optionParser, type OptionParser } from './options.js';
import { packageVersion } from './package-version.js';
import {
  TRACE_OPTIONS,
  TraceSelectionError,
  describeEvents,
  emitVhostUserRecv,
  normalizeTraceArgs,
  openTraceOutput,
  traceHelpRows,
  traceRequest,
  type TraceOutput,
  type TraceRequest,
} from './trace-options.js';
import { DirectTarget, setEmitTarget, threadId, wallClockMs } from '../trace/sink.js';
import { TRACE, enableEvents } from '../trace/events.js';

/** How the command presents itself. */
export interface BackendCommand {
  /** The program name in messages, help and output lines. */
  readonly program: string;
  /**
   * A command for one device (virtio-test-backend): argv starts with `--device NAME`, which the
   * user may not give again; help shows that device only and spells the socket option `--socket`.
   */
  readonly fixedDevice?: boolean;
}

const DAEMON_OPTIONS = {
  device: { type: 'string' },
  'socket-path': { type: 'string', short: 's' },
  socket: { type: 'string' },
  fd: { type: 'string' },
  'socket-mode': { type: 'string' },
  'socket-group': { type: 'string' },
  'control-socket': { type: 'string' },
  'print-capabilities': { type: 'boolean' },
  'publish-batch': { type: 'string' },
  packed: { type: 'boolean' },
  'require-sealed-memory': { type: 'boolean' },
  quiet: { type: 'boolean' },
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
  'log-timestamps': { type: 'boolean' },
  ...TRACE_OPTIONS,
  'ready-fd': { type: 'string' },
  version: { type: 'boolean', short: 'V' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies NonNullable<ParseArgsConfig['options']>;

/**
 * What a bare --trace traces: every vhost-user request received (what --trace printed before it
 * took patterns; the ring events are selected by name, e.g. --trace 'virtqueue_*,virtio_notify*').
 */
const BARE_TRACE = 'vhost_user_*';

/** sun_path holds 108 bytes with the terminating NUL (Linux). */
const MAX_SOCKET_PATH = 107;
const DEFAULT_SOCKET_MODE = 0o600;

/**
 * --print-capabilities prints `{"type": T}` ([vhost-user "Backend program conventions"]: the JSON
 * of @VHostUserBackendCapabilities in QEMU's docs/interop/vhost-user.json), where T is the
 * @VHostUserBackendType of the device's virtio ID: the names below are that enum's, and the IDs
 * are virtio 1.x §5 Device Types. "input" and "gpu" are the union's branches with a mandatory
 * `features` list; we support none of their optional flags, so it is empty.
 *
 * A device whose type the schema does not name (virtio-test, ID 45) gets its registry name as
 * the type. The schema has no escape for other types, and we prefer a name outside the enum to
 * borrowing one of its names: a management layer that validates against the schema then refuses
 * this back-end instead of taking it for a device it is not (a "9p" or "vsock" back-end, say).
 */
const BACKEND_TYPES: ReadonlyMap<number, string> = new Map([
  [1, 'net'],
  [2, 'block'],
  [3, 'console'],
  [4, 'rng'],
  [5, 'balloon'],
  [7, 'rpmsg'],
  [8, 'scsi'],
  [9, '9p'],
  [11, 'rproc-serial'],
  [12, 'caif'],
  [16, 'gpu'],
  [18, 'input'],
  [19, 'vsock'],
  [20, 'crypto'],
  [26, 'fs'],
]);

/** The --print-capabilities object for a device. */
export function capabilities(def: DeviceDefinition): { type: string; features?: string[] } {
  const type = BACKEND_TYPES.get(def.deviceId) ?? def.name;
  return type === 'gpu' || type === 'input' ? { type, features: [] } : { type };
}


function help(cmd: BackendCommand, device: DeviceDefinition | undefined): string {
  const p = cmd.program;
  const sock = cmd.fixedDevice ? '--socket' : '--socket-path';
  const dev = cmd.fixedDevice ? '' : device ? `--device ${device.name} ` : '--device NAME ';
  const lines: string[] = [];
  if (cmd.fixedDevice && device) {
    lines.push(
      `Usage: ${p} --socket PATH [options]`,
      '',
      ...wrap(`Serves the ${device.name} device (${device.summary}) over vhost-user on the Unix socket PATH: virtio-backend --device ${device.name}, under its former name.`),
    );
  } else {
    lines.push(
      `Usage: ${p} ${dev}--socket-path PATH [options]${device ? '' : ' [device options]'}`,
      `       ${p} ${dev}--fd N [options]`,
      `       ${p} ${dev}--print-capabilities`,
      `       ${p} ${QUERY_USAGE}`,
      '',
      'Serves a virtio device over vhost-user to a front-end (QEMU, User-Mode Linux virtio_uml,',
      'cloud-hypervisor), one front-end at a time, following the vhost-user "Backend program',
      'conventions". With systemd it can be socket-activated and reports readiness (see below).',
    );
  }
  const rows: [string, string][] = [];
  if (!cmd.fixedDevice) rows.push(['--device NAME', `the device to serve: ${deviceNames()}`]);
  rows.push(
    cmd.fixedDevice
      ? ['--socket PATH', 'the socket to listen on (a stale socket file is replaced if nothing listens); --socket-path PATH and -s PATH are the same']
      : ['-s, --socket-path PATH', 'the Unix socket to listen on (a stale socket file is replaced if nothing listens; a live one is refused); --socket PATH is the same'],
    ['--fd N', `serve on the listening Unix socket inherited as fd N (≥ 3) instead of creating one; excludes ${sock}`],
    ['--socket-mode MODE', `permission bits of the socket file, in octal (default ${DEFAULT_SOCKET_MODE.toString(8).padStart(4, '0')}: only its owner may connect); e.g. 0660 with --socket-group`],
    ['--socket-group GROUP', 'the group (name or gid) of the socket file'],
    ['--control-socket PATH', `also listen on the Unix socket PATH (mode 0600, removed on exit) for JSON-line queries of the live state (device status, features, queue indices, one chain, counters; like QEMU's x-query-virtio-*): ${cmd.fixedDevice ? 'virtio-backend' : p} query PATH [status|queue N|element N [I]|stats] [--json] asks it`],
    ['--print-capabilities', `print the back-end's capabilities as JSON ({"type": ...}) and exit${cmd.fixedDevice ? '' : '; needs --device'}`],
    ['--publish-batch N', `publish the used ring after the first answer of a pass, then every N answers (default ${DEFAULT_PUBLISH_BATCH}; 0: once per pass). Smaller lets the driver recycle buffers sooner.`],
    ['--packed', 'also offer the packed virtqueue (VIRTIO_F_RING_PACKED, virtio 1.2 §2.8), for QEMU devices with packed=on. Not for UML: virtio_uml takes it and gets its ring base wrong. Packed rings are not tracked in the inflight buffer: a restart of this daemon loses their requests in flight (docs/vhost-user.md).'],
    ['--require-sealed-memory', "accept guest memory only as memfds sealed against shrinking (F_SEAL_SHRINK; QEMU's memory-backend-memfd seals by default, UML's memory file cannot be sealed). Without it, a front-end that shrinks its memory under the daemon has the connection closed (SIGBUS caught)"],
    ['--quiet', "do not print the device's lines"],
    ['--log-level L', `error, warn or info (default; also the ${LOG_LEVEL_ENV} environment variable): lines below L are not written. info: the device's lines and the daemon's notes (stdout), warn: diagnostics (stderr), error: why it stops`],
    ['--log-format F', 'text (default: the device\'s lines verbatim, the daemon\'s prefixed with its name) or json (one {"time","level","source","message"} object per line)'],
    ['--log-timestamps', "prefix the daemon's own lines with an ISO 8601 UTC time (the device's lines keep their exact wording)"],
    ...traceHelpRows(BARE_TRACE),
    ['--ready-fd N', 'write "ready\\n" to file descriptor N once listening, then close it'],
    ['-V, --version', 'print the version and exit'],
    ['-h, --help', cmd.fixedDevice || device ? 'this text' : `this text; with --device NAME, that device's only`],
  );
  lines.push('', 'Options:', ...helpLines(rows, 2, 24));
  const shown = device ? [device] : DEVICES;
  if (cmd.fixedDevice && device) {
    lines.push('', `Options of the ${device.name} device:`, formatDeviceOptions(device, { indent: 2, column: 24 }));
  } else {
    lines.push('', device ? 'Device:' : 'Devices (--device NAME) and their options:');
    for (const d of shown) {
      lines.push(...helpLines([[`${d.name} (ID ${d.deviceId})`, d.summary]], 2, 24), formatDeviceOptions(d, { indent: 4, column: 22 }));
    }
  }
  lines.push(
    '',
    'Readiness: once listening it prints a line, writes --ready-fd, and, when NOTIFY_SOCKET is set',
    '(systemd Type=notify), sends READY=1 and STATUS= to that socket (a path or @abstract name).',
    'Socket activation: with LISTEN_PID set to its pid and LISTEN_FDS=1 (a systemd .socket unit),',
    `it serves on fd 3, which must be a listening Unix stream socket; then no ${sock} or --fd.`,
    `query PATH [status | queue N | element N [I] | stats] [--json]: asks a daemon started with`,
    '--control-socket PATH and prints the answer as text (--json: the JSON line); exit status 1',
    'for an error answer, a missing socket or no answer within 2 s.',
    `Stops cleanly on SIGINT or SIGTERM; the socket file is removed if it created it (not with --fd`,
    'or socket activation). Exit status: 2 for a bad command line, 1 when it cannot start.',
  );
  return lines.join('\n');
}

/** A paragraph wrapped to `width` columns. */
function wrap(text: string, width = 96): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

/** Where the listening socket comes from. */
type SocketSource =
  | { kind: 'path'; path: string; mode: number; gid: number | undefined }
  | { kind: 'fd'; fd: number; origin: string };

/** Socket activation (sd_listen_fds conventions): the fd, null when none is for us, or an error. */
function activatedSocket(): { fd: number } | { error: string } | null {
  const pid = process.env['LISTEN_PID'];
  const count = process.env['LISTEN_FDS'];
  if (pid === undefined || count === undefined) return null;
  // For another process (a parent that did not clear them): not ours, as sd_listen_fds says.
  if (!/^\d+$/.test(pid) || Number(pid) !== process.pid) return null;
  delete process.env['LISTEN_PID'];
  delete process.env['LISTEN_FDS'];
  delete process.env['LISTEN_FDNAMES'];
  if (!/^\d+$/.test(count)) return { error: `socket activation: LISTEN_FDS='${count}' is not a count` };
  const n = Number(count);
  if (n === 0) return null;
  if (n !== 1) return { error: `socket activation: LISTEN_FDS=${n}, but one listening socket is served (fd 3)` };
  return { fd: 3 };
}

/** Sends a service manager notification (sd_notify) if NOTIFY_SOCKET is set; failures are warnings. */
function notifyServiceManager(state: string, warn: (line: string) => void): void {
  const address = process.env['NOTIFY_SOCKET'];
  if (address === undefined || address === '') return;
  if (!address.startsWith('/') && !address.startsWith('@')) {
    warn(`NOTIFY_SOCKET=${address}: only a socket path or an @abstract name is supported; not notified`);
    return;
  }
  try {
    native.datagramSend(address, Buffer.from(state));
  } catch (e) {
    warn(`NOTIFY_SOCKET=${address}: ${(e as Error).message}`);
  }
}

/** The strict parse: the daemon's options and `def`'s; anything else is a command-line error. */
function strictParse(
  argv: readonly string[],
  def: DeviceDefinition,
  reserved: readonly string[],
  optionError: (message: string) => never,
  fatal: (message: string) => never,
): Record<string, string | boolean | undefined> {
  let deviceConfig;
  try {
    deviceConfig = deviceOptionsConfig(def, reserved);
  } catch (e) {
    return fatal((e as Error).message);
  }
  try {
    const parsed = parseArgs({ args: [...argv], options: { ...DAEMON_OPTIONS, ...deviceConfig }, strict: true, allowPositionals: false });
    return parsed.values as Record<string, string | boolean | undefined>;
  } catch (e) {
    return optionError((e as Error).message);
  }
}

/** --socket-group NAME: its gid (NSS lookup), or a command-line error naming it. */
function lookUpGroup(name: string, optionError: (message: string) => never, fatal: (message: string) => never): number {
  let gid: number | null;
  try {
    gid = name === '' ? null : native.groupId(name);
  } catch (e) {
    return fatal(`--socket-group ${name}: ${(e as Error).message}`);
  }
  return gid ?? optionError(`--socket-group: no group '${name}'`);
}

/** The largest power of two ≤ n (at most 32768): what SET_VRING_NUM may ask for. */
function ringLimit(sizes: readonly number[]): number {
  const most = Math.min(sizes.length ? Math.max(...sizes) : MAX_QUEUE_SIZE, MAX_QUEUE_SIZE);
  let limit = 1;
  while (limit * 2 <= most) limit *= 2;
  return limit;
}

/**
 * The daemon: parses `argv` (without node and the script), opens the device, listens, serves
 * until SIGINT/SIGTERM. Exits the process itself on errors (2: command line, 1: cannot start).
 */
export async function runBackend(givenArgv: readonly string[], cmd: BackendCommand): Promise<void> {
  const { program } = cmd;
  if (givenArgv[0] === 'query' && !cmd.fixedDevice) {
    const status = await runQuery(givenArgv.slice(1), program, (s) => void process.stdout.write(`${s}\n`), (s) => void process.stderr.write(`${s}\n`));
    process.exitCode = status;
    return;
  }
  const argv = normalizeTraceArgs(givenArgv, BARE_TRACE);
  const options: OptionParser = optionParser(program);
  const intOption = options.intOption;
  function optionError(message: string): never {
    return options.optionError(message);
  }
  // The log (daemon-log.ts); its level and format are known once the options are parsed.
  let log: DaemonLog = createDaemonLog({ program });
  function fatal(message: string): never {
    log.error(message);
    process.exit(1);
  }
  /** The command's own output (help, version, capabilities): not log lines. */
  const out = (line: string): void => void process.stdout.write(`${line}\n`);
  const warn = (line: string): void => log.warn(line);
  const reserved = Object.keys(DAEMON_OPTIONS);

  // A lenient first pass: which device, which options were given (for messages about options
  // of another device), and the options that ignore everything else.
  const lenient = { ...allDeviceOptionsConfig(DEVICES, reserved), ...DAEMON_OPTIONS };
  const loose = parseArgs({ args: [...argv], options: lenient, strict: false, allowPositionals: true, tokens: true });
  const given = optionNamesIn(argv, lenient);
  if (given.filter((n) => n === 'device').length > 1) {
    optionError(cmd.fixedDevice ? "Unknown option '--device'" : '--device is given more than once');
  }
  const rawDevice = loose.values['device'];
  if (rawDevice !== undefined && typeof rawDevice !== 'string') optionError(`--device needs a NAME (one of: ${deviceNames()})`);
  const deviceArg = rawDevice as string | undefined;
  const found = deviceArg === undefined ? undefined : findDevice(deviceArg);
  if (deviceArg !== undefined && found === undefined) optionError(`unknown device '${deviceArg}' (registered: ${deviceNames()})`);

  if (loose.values['help'] === true) {
    out(help(cmd, found));
    return;
  }
  const looseTrace = loose.values['trace'];
  if (Array.isArray(looseTrace) && looseTrace.includes('help')) {
    out(describeEvents());
    return;
  }
  if (loose.values['version'] === true) {
    out(`${program} ${packageVersion()}`);
    return;
  }
  if (loose.values['print-capabilities'] === true) {
    // "Other options and arguments should be ignored" ([vhost-user "Backend program conventions"]);
    // the device is the exception: this command serves several types.
    if (found === undefined) optionError(`--print-capabilities needs --device NAME: the type depends on the device (${deviceNames()})`);
    out(JSON.stringify(capabilities(found), null, 2));
    return;
  }
  if (found === undefined) {
    optionError(misplacedDeviceOption(given, undefined) ?? `--device NAME is required (one of: ${deviceNames()})`);
  }
  const def: DeviceDefinition = found;
  const misplaced = misplacedDeviceOption(given, def);
  if (misplaced !== null) optionError(misplaced);

  const v = strictParse(argv, def, reserved, optionError, fatal);
  let values: OptionValues;
  try {
    values = parseDeviceOptions(def, v);
  } catch (e) {
    if (e instanceof DeviceOptionError) optionError(e.message);
    throw e;
  }

  // The socket: --socket-path (alias --socket), --fd, or socket activation; exactly one.
  const sockFlag = cmd.fixedDevice ? 'socket' : 'socket-path';
  if (v['socket-path'] !== undefined && v['socket'] !== undefined) optionError('--socket and --socket-path are the same option: give it once');
  const pathFlag = v['socket-path'] !== undefined ? 'socket-path' : 'socket';
  const socketPath = (v['socket-path'] ?? v['socket']) as string | undefined;
  const fdArg = v['fd'] as string | undefined;
  const activation = activatedSocket();
  const sources = [socketPath !== undefined && `--${pathFlag}`, fdArg !== undefined && '--fd', activation !== null && 'socket activation (LISTEN_FDS)'].filter(
    (s): s is string => typeof s === 'string',
  );
  if (sources.length > 1) optionError(`${sources.join(' and ')} both give the socket: use one`);
  if (activation !== null && 'error' in activation) fatal(activation.error);
  const modeArg = v['socket-mode'] as string | undefined;
  const groupArg = v['socket-group'] as string | undefined;
  let source: SocketSource;
  if (fdArg !== undefined || activation !== null) {
    if (modeArg !== undefined || groupArg !== undefined) {
      optionError(`--socket-${modeArg !== undefined ? 'mode' : 'group'} applies to a socket created with --${sockFlag}, not to an inherited one`);
    }
    source =
      fdArg !== undefined
        ? { kind: 'fd', fd: intOption('fd', fdArg, -1, (n) => Number.isSafeInteger(n) && n >= 3 && n <= 0x7fffffff, 'a file descriptor number ≥ 3'), origin: `--fd ${fdArg}` }
        : { kind: 'fd', fd: (activation as { fd: number }).fd, origin: 'socket activation (LISTEN_FDS=1)' };
  } else {
    if (socketPath === undefined || socketPath === '') {
      optionError(cmd.fixedDevice ? '--socket PATH is required' : '--socket-path PATH is required (or --fd N, or socket activation)');
    }
    const bytes = Buffer.byteLength(socketPath);
    if (bytes > MAX_SOCKET_PATH) optionError(`--${pathFlag} path is too long for a Unix socket (${bytes} bytes, at most ${MAX_SOCKET_PATH})`);
    let mode = DEFAULT_SOCKET_MODE;
    if (modeArg !== undefined) {
      if (!/^[0-7]{1,4}$/.test(modeArg) || Number.parseInt(modeArg, 8) > 0o777) {
        optionError(`--socket-mode must be an octal mode from 000 to 777 (e.g. 0660), got '${modeArg}'`);
      }
      mode = Number.parseInt(modeArg, 8);
    }
    let gid: number | undefined;
    if (groupArg !== undefined) {
      if (/^\d+$/.test(groupArg)) {
        gid = Number(groupArg);
        if (!(gid <= 0xfffffffe)) optionError(`--socket-group must be a group name or a gid, got '${groupArg}'`);
      } else {
        gid = lookUpGroup(groupArg, optionError, fatal);
      }
    }
    source = { kind: 'path', path: socketPath, mode, gid };
  }
  const controlPath = v['control-socket'] as string | undefined;
  if (controlPath !== undefined) {
    if (controlPath === '') optionError('--control-socket needs a PATH');
    const bytes = Buffer.byteLength(controlPath);
    if (bytes > MAX_SOCKET_PATH) optionError(`--control-socket path is too long for a Unix socket (${bytes} bytes, at most ${MAX_SOCKET_PATH})`);
    if (source.kind === 'path' && path.resolve(controlPath) === path.resolve(source.path)) optionError('--control-socket must differ from the vhost-user socket');
  }
  const readyFd = intOption('ready-fd', v['ready-fd'] as string | undefined, -1, (n) => Number.isInteger(n) && n >= 3, 'a file descriptor number ≥ 3');
  const publishBatch = intOption(
    'publish-batch',
    v['publish-batch'] as string | undefined,
    DEFAULT_PUBLISH_BATCH,
    (n) => Number.isSafeInteger(n) && n >= 0 && n <= MAX_QUEUE_SIZE,
    `a count in 0..${MAX_QUEUE_SIZE}`,
  );
  const quiet = v['quiet'] === true;
  const levelArg = (v['log-level'] as string | undefined) ?? process.env[LOG_LEVEL_ENV];
  if (levelArg !== undefined && !isLogLevel(levelArg)) {
    optionError(`--log-level${v['log-level'] === undefined ? ` (from ${LOG_LEVEL_ENV})` : ''} must be one of ${LOG_LEVELS.join(', ')}, got '${levelArg}'`);
  }
  const formatArg = (v['log-format'] as string | undefined) ?? 'text';
  if (!(LOG_FORMATS as readonly string[]).includes(formatArg)) optionError(`--log-format must be one of ${LOG_FORMATS.join(', ')}, got '${formatArg}'`);
  log = createDaemonLog({
    program,
    ...(levelArg === undefined ? {} : { level: levelArg }),
    format: formatArg as LogFormat,
    timestamps: v['log-timestamps'] === true,
  });
  const device = (line: string): void => log.device(line);
  let trace: TraceRequest;
  try {
    trace = traceRequest(v, BARE_TRACE);
  } catch (e) {
    if (e instanceof TraceSelectionError) optionError(e.message);
    throw e;
  }
  let traceOutput: TraceOutput | undefined;
  if (trace.events.length > 0) {
    // The device runs on this thread: events go straight to the output.
    try {
      traceOutput = openTraceOutput(trace, { immediate: true, deviceName: `${program}: ${def.name}`, otherData: { device: def.name } });
    } catch (e) {
      fatal(`--trace-file ${trace.file}: ${(e as Error).message}`);
    }
    enableEvents(trace.events);
    setEmitTarget(new DirectTarget(traceOutput.consumer, wallClockMs(), threadId('main')));
  }

  // Open the device, then listen.
  const env: DeviceEnvironment = { log: device, warn, quiet };
  let factory: DeviceFactory;
  try {
    factory = await def.open(values, env);
  } catch (e) {
    fatal(`${def.name}: ${(e as Error).message}`);
  }
  const closeFactory = async (): Promise<void> => {
    try {
      await factory.close?.();
    } catch (e) {
      warn(`${def.name}: closing: ${(e as Error).message}`);
    }
  };
  // vhost-user cannot tell the front-end a ring limit; the model's largest ring is enforced on
  // SET_VRING_NUM (virtio-test's --queue-size), so a front-end asking for more is refused by name.
  let maxQueueSize: number;
  try {
    maxQueueSize = ringLimit(factory.createDevice().queueMaxSizes);
  } catch (e) {
    await closeFactory();
    fatal(`${def.name}: ${(e as Error).message}`);
  }

  let server: BackendServer;
  try {
    server = serveDevice({
      ...(source.kind === 'path'
        ? { socketPath: source.path, socketMode: source.mode, ...(source.gid === undefined ? {} : { socketGroup: source.gid }) }
        : { listenFd: source.fd }),
      createDevice: () => factory.createDevice(),
      log: device,
      warn,
      info: (line) => log.info(line),
      maxQueueSize,
      publishBatch,
      ...(v['packed'] === true ? { packedRing: true } : {}),
      ...(v['require-sealed-memory'] === true ? { requireSealedMemory: true } : {}),
      ...(TRACE.vhost_user_recv.enabled ? { trace: emitVhostUserRecv } : {}),
    });
  } catch (e) {
    await closeFactory();
    const err = e as Error & { code?: string };
    if (err.code === 'ERR_NATIVE_NO_EXTERNAL_BUFFERS' || /native addon/.test(err.message)) fatal(err.message);
    fatal(source.kind === 'path' ? `cannot listen on ${source.path}: ${err.message}` : `${source.origin}: ${err.message}`);
  }
  let control: ControlServer | undefined;
  if (controlPath !== undefined) {
    const live = server;
    try {
      control = serveControl({
        socketPath: controlPath,
        target: {
          name: def.name,
          deviceId: def.deviceId,
          get session() {
            return live.session;
          },
          get connections() {
            return live.connections;
          },
        },
        warn,
      });
    } catch (e) {
      await server.close();
      await closeFactory();
      fatal(`cannot listen on the control socket ${controlPath}: ${(e as Error).message}`);
    }
  }
  // Handlers first, readiness after: a supervisor that stops the daemon as soon as it is
  // ready must find SIGTERM handled (a signal before the handler ends the process at once).
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: shutting down`);
    notifyServiceManager('STOPPING=1\n', warn);
    void Promise.all([server.close(), control?.close()])
      .then(closeFactory)
      .then(() => traceOutput?.close())
      .then(
        () => process.exit(0),
        (e: unknown) => fatal(`shutting down: ${(e as Error).message}`),
      );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  const where = source.kind === 'path' ? source.path : `fd ${source.fd}${server.socketPath ? `, ${server.socketPath}` : ''}`;
  const description = factory.description ?? `device ${def.deviceId}`;
  log.info(`listening on ${where} (${description})`);
  if (control) log.info(`control socket on ${control.socketPath}`);
  if (readyFd >= 0) {
    try {
      writeSync(readyFd, 'ready\n');
      closeSync(readyFd);
    } catch (e) {
      warn(`--ready-fd ${readyFd}: ${(e as Error).message}`);
    }
  }
  notifyServiceManager(`READY=1\nSTATUS=${def.name}: listening on ${where} (${description})\n`, warn);
}

/** Runs runBackend as a command: an unexpected error is one line on stderr and exit 1, never a stack trace. */
export function runBackendCommand(argv: readonly string[], cmd: BackendCommand): void {
  runBackend(argv, cmd).catch((e: unknown) => {
    process.stderr.write(`${cmd.program}: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}

function isMainModule(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMainModule()) runBackendCommand(process.argv.slice(2), { program: 'virtio-backend' });
