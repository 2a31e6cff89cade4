/**
 * The daemon's log: levels, timestamps and a JSON format, in the manner of rust-vmm's daemons
 * (env_logger: a level from the command line or the environment) and of QEMU's `-msg
 * timestamp=on`.
 *
 * Four kinds of line, each with its level and stream:
 *   device  the device model's own lines (virtio-test's seed lines `QEMU_BACK_END: >>> …`): info,
 *           stdout, verbatim — never prefixed, so their wording stays exactly the seed's
 *   info    the daemon's own notes (listening, front-end connected, shutting down): info, stdout,
 *           `PROGRAM: …`
 *   warn    diagnostics (a refused request, a device error): warn, stderr, `PROGRAM: …`
 *   error   why the daemon stops (cannot listen, a bad image): error, stderr, `PROGRAM: …`
 *
 * `--log-level error|warn|info` (default info; the environment variable {@link LOG_LEVEL_ENV} when
 * the option is absent) drops the lines below the level; errors are always written.
 * `--log-timestamps` prefixes the daemon's own lines (not the device's) with an ISO 8601 UTC
 * time. `--log-format json` writes every line as one JSON object, `{"time", "level", "source",
 * "message"}` (source: the program, or "device"), to the same streams.
 */

export const LOG_LEVELS = ['error', 'warn', 'info'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
/** The environment variable that sets the level when --log-level is not given. */
export const LOG_LEVEL_ENV = 'VIRTIO_BACKEND_LOG';

export interface DaemonLogOptions {
  program: string;
  level?: LogLevel;
  format?: LogFormat;
  timestamps?: boolean;
  /** Where lines go (default process.stdout / process.stderr). */
  stdout?: (text: string) => void;
  stderr?: (text: string) => void;
  /** The clock (tests). */
  now?: () => Date;
}

export interface DaemonLog {
  device(line: string): void;
  info(line: string): void;
  warn(line: string): void;
  error(line: string): void;
}

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2 };

export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

export function createDaemonLog(o: DaemonLogOptions): DaemonLog {
  const level = RANK[o.level ?? 'info'];
  const json = o.format === 'json';
  const stdout = o.stdout ?? ((t: string) => void process.stdout.write(t));
  const stderr = o.stderr ?? ((t: string) => void process.stderr.write(t));
  const now = o.now ?? (() => new Date());
  const emit = (lvl: LogLevel, device: boolean, line: string): void => {
    if (RANK[lvl] > level) return;
    const to = lvl === 'info' ? stdout : stderr;
    if (json) {
      to(`${JSON.stringify({ time: now().toISOString(), level: lvl, source: device ? 'device' : o.program, message: line })}\n`);
    } else if (device) {
      to(`${line}\n`);
    } else {
      to(`${o.timestamps ? `${now().toISOString()} ` : ''}${o.program}: ${line}\n`);
    }
  };
  return {
    device: (line) => emit('info', true, line),
    info: (line) => emit('info', false, line),
    warn: (line) => emit('warn', false, line),
    error: (line) => emit('error', false, line),
  };
}
