/**
 * The `virtio-backend` daemon: help, version and capabilities; refused command lines; serving
 * over --socket-path (socket file mode and group), over an inherited --fd, under systemd socket
 * activation (LISTEN_FDS) and with readiness notification (NOTIFY_SOCKET); and the generic
 * device option parsing of src/cli/device-options.ts on a made-up registry.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { DeviceDefinition } from '../../src/devices/definition.js';
import { DEVICES } from '../../src/devices/registry.js';
import { answer, requestFor, requestLogLines } from '../../src/devices/virtio-test/protocol.js';
import {
  DeviceOptionError,
  deviceOptionsConfig,
  formatDeviceOptions,
  misplacedDeviceOption,
  optionNamesIn,
  parseDeviceOptions,
} from '../../src/cli/device-options.js';
import { native } from '../../src/vhost-user/native/index.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { onLines } from '../helpers/lines.js';
import { cliPath, repoRoot } from '../helpers/paths.js';
import { tempDir, waitFor } from '../vhost-user/helpers.js';

const cli = cliPath('virtio-backend');

function run(args: string[], env?: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 15_000, ...(env ? { env } : {}) });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Daemon {
  proc: ChildProcess;
  stdout: string[];
  stderr: string[];
  waitForLine(re: RegExp): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if still running (for finally blocks). */
  kill(): void;
}

/** Starts `command args` with stdout/stderr collected by line; `extra` becomes fds 3, 4, ... */
function start(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; extra?: (number | 'pipe' | 'ignore')[] } = {}): Daemon {
  const stdio = ['ignore', 'pipe', 'pipe', ...(options.extra ?? [])] as StdioOptions;
  const proc = spawn(command, args, { stdio, ...(options.env ? { env: options.env } : {}) });
  const stdout: string[] = [];
  const stderr: string[] = [];
  onLines(proc.stdout!, (l) => stdout.push(l));
  onLines(proc.stderr!, (l) => stderr.push(l));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    proc,
    stdout,
    stderr,
    exited,
    async waitForLine(re) {
      let found: string | undefined;
      await waitFor(() => (found = [...stdout, ...stderr].find((l) => re.test(l))) !== undefined || proc.exitCode !== null, String(re), 15_000);
      if (found === undefined) throw new Error(`exited (${proc.exitCode}) before printing ${re}:\n${[...stdout, ...stderr].join('\n')}`);
      return found;
    },
    kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    },
  };
}

/** One request through the TypeScript front-end: the virtio-test answer comes back. */
async function roundTrip(socketPath: string, n = 10): Promise<void> {
  const c = await VirtioTestClient.connect({ socketPath });
  try {
    assert.deepEqual(await c.request(n), answer(requestFor(n)));
  } finally {
    c.close();
  }
}

/** The datagrams waiting on a non-blocking datagram socket, as text. */
function receiveAll(fd: number): string[] {
  const got: string[] = [];
  const buf = Buffer.alloc(4096);
  for (let r = native.recvMsg(fd, buf, 0); r !== null; r = native.recvMsg(fd, buf, 0)) got.push(buf.subarray(0, r.bytes).toString());
  return got;
}

describe('virtio-backend: help, version, capabilities', () => {
  it('--help lists every registered device with its options, and the daemon options', () => {
    const r = run(['--help']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^Usage: virtio-backend --device NAME --socket-path PATH/);
    for (const flag of ['--device NAME', '--socket-path PATH', '--fd N', '--socket-mode MODE', '--socket-group GROUP', '--print-capabilities', '--ready-fd N', '--version', '--quiet', '--trace', '--publish-batch N']) {
      assert.ok(r.stdout.includes(flag), `help shows ${flag}`);
    }
    assert.ok(DEVICES.length >= 1);
    for (const d of DEVICES) {
      assert.ok(r.stdout.includes(`  ${d.name} (ID ${d.deviceId})`), `help lists ${d.name}`);
      for (const o of d.options) assert.match(r.stdout, new RegExp(`\\n    --${o.flag}\\b`), `help lists --${o.flag} under ${d.name}`);
    }
    // virtio-test's options with their defaults and ranges, from its definition.
    assert.match(r.stdout, /--queue-size Q\s+the largest ring[^]*?\(default 256; 1\.\.32768\)/);
    assert.match(r.stdout, /NOTIFY_SOCKET/);
    assert.match(r.stdout, /LISTEN_FDS/);
  });

  it('--device NAME --help shows that device; virtio-test-backend --help keeps its usage', () => {
    const r = run(['--device', 'virtio-test', '--help']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^Usage: virtio-backend --device virtio-test --socket-path PATH/);
    for (const d of DEVICES.filter((x) => x.name !== 'virtio-test')) assert.ok(!r.stdout.includes(`  ${d.name} (ID `), `not ${d.name}`);
    const c = spawnSync(process.execPath, [cliPath('virtio-test-backend'), '--help'], { encoding: 'utf8' });
    assert.equal(c.status, 0);
    assert.match(c.stdout, /^Usage: virtio-test-backend --socket PATH \[options\]/);
    assert.match(c.stdout, /--queue-size Q/);
    assert.doesNotMatch(c.stdout, /--device NAME/);
  });

  it('--version prints the package version', () => {
    const version = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
    for (const flag of ['--version', '-V']) {
      const r = run([flag]);
      assert.equal(r.status, 0);
      assert.equal(r.stdout, `virtio-backend ${version}\n`);
    }
  });

  it('--print-capabilities prints the JSON of the conventions and ignores other options', () => {
    // Device ID → @VHostUserBackendType (QEMU docs/interop/vhost-user.json); others: the registry name.
    const known: Record<number, string> = { 2: 'block', 4: 'rng', 1: 'net', 26: 'fs' };
    for (const d of DEVICES) {
      const r = run(['--device', d.name, '--print-capabilities']);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), { type: known[d.deviceId] ?? d.name });
    }
    // "Other options and arguments should be ignored": even bad ones, and no socket is needed.
    const r = run(['--print-capabilities', '--device', 'virtio-test', '--queue-size', 'bogus', '--fd', 'x']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { type: 'virtio-test' });
    const c = spawnSync(process.execPath, [cliPath('virtio-test-backend'), '--print-capabilities'], { encoding: 'utf8' });
    assert.deepEqual(JSON.parse(c.stdout), { type: 'virtio-test' });
    // Which type depends on the device: without one it is a usage error.
    const n = run(['--print-capabilities']);
    assert.equal(n.status, 2);
    assert.match(n.stderr, /--print-capabilities needs --device NAME/);
  });
});

describe('virtio-backend: refused command lines (exit 2, a message, no stack trace)', () => {
  const s = '/tmp/vb-never-created.sock';
  const cases: [string[], RegExp][] = [
    [[], /--device NAME is required \(one of: virtio-test/],
    [['--device', 'nope', '-s', s], /unknown device 'nope' \(registered: virtio-test/],
    [['--device', 'virtio-test'], /--socket-path PATH is required/],
    [['--device', 'virtio-test', '--socket-path', ''], /--socket-path PATH is required/],
    [['--device', 'virtio-test', '-s', s, '--queue-size', '100'], /--queue-size must be a power of two from 1 to 32768, got '100'/],
    [['--device', 'virtio-test', '-s', s, '--queue-size', '65536'], /--queue-size must be an integer from 1 to 32768, got '65536'/],
    [['--device', 'virtio-test', '-s', s, '--device-id', '0x2d'], /--device-id must be an integer from 1 to 65535, got '0x2d'/],
    [['--device', 'virtio-test', '-s', s, '--device-id'], /--device-id <value>' argument missing/],
    [['-s', s, '--device-id', '46'], /--device-id is an option of device virtio-test: give --device virtio-test/],
    [['-s', s, '--queue-size', '256'], /--queue-size is an option of devices virtio-test, rng.*: give --device NAME/],
    [['--device', 'virtio-test', '-s', s, '--source', '/dev/urandom'], /--source is an option of device rng, not of virtio-test/],
    [['--device', 'virtio-test', '--socket-path', `/tmp/${'x'.repeat(120)}.sock`], /--socket-path path is too long for a Unix socket \(130 bytes, at most 107\)/],
    [['--device', 'virtio-test', '-s', s, '--fd', '5'], /--socket-path and --fd both give the socket: use one/],
    [['--device', 'virtio-test', '-s', s, '--socket', s], /--socket and --socket-path are the same option/],
    [['--device', 'virtio-test', '--fd', '2'], /--fd must be a file descriptor number ≥ 3, got '2'/],
    [['--device', 'virtio-test', '-s', s, '--socket-mode', '0860'], /--socket-mode must be an octal mode from 000 to 777 \(e\.g\. 0660\), got '0860'/],
    [['--device', 'virtio-test', '-s', s, '--socket-mode', '1777'], /--socket-mode must be an octal mode/],
    [['--device', 'virtio-test', '-s', s, '--socket-group', 'no-such-group-vb'], /--socket-group: no group 'no-such-group-vb'/],
    [['--device', 'virtio-test', '--fd', '5', '--socket-mode', '0660'], /--socket-mode applies to a socket created with --socket-path/],
    [['--device', 'virtio-test', '--device', 'virtio-test', '-s', s], /--device is given more than once/],
    [['--device', 'virtio-test', '-s', s, '--publish-batch', '-1'], /--publish-batch/],
    [['--device', 'virtio-test', '-s', s, '--bogus'], /Unknown option '--bogus'/],
    [['--device', 'blk', '-s', s], /^virtio-backend: --image FILE is required \(blk: /],
    [['--device', 'virtio-test', '-s', s, 'extra'], /Unexpected argument 'extra'/],
  ];
  for (const [args, message] of cases) {
    it(args.join(' ') || '(no arguments)', () => {
      const r = run(args);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /^virtio-backend: /);
      assert.match(r.stderr, /\nTry 'virtio-backend --help'\.\n$/);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.equal(r.stdout, '');
      assert.equal(existsSync(s), false);
    });
  }

  it('an option of another registered device is named as such', () => {
    const vt = DEVICES.find((d) => d.name === 'virtio-test')!;
    const other = DEVICES.flatMap((d) => d.options.filter((o) => !vt.options.some((x) => x.flag === o.flag)).map((o) => ({ d, o })))[0];
    assert.ok(other, 'a device with an option virtio-test lacks is registered');
    const value = other.o.type === 'boolean' ? [] : ['1'];
    const r = run(['--device', 'virtio-test', '-s', s, `--${other.o.flag}`, ...value]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, new RegExp(`--${other.o.flag} is an option of device ${other.d.name}, not of virtio-test`));
  });

  it('virtio-test-backend keeps its own spelling of the messages', () => {
    const c = spawnSync(process.execPath, [cliPath('virtio-test-backend'), '--device', 'rng', '--socket', s], { encoding: 'utf8' });
    assert.equal(c.status, 2);
    assert.match(c.stderr, /^virtio-test-backend: Unknown option '--device'/);
    const m = spawnSync(process.execPath, [cliPath('virtio-test-backend')], { encoding: 'utf8' });
    assert.equal(m.status, 2);
    assert.match(m.stderr, /^virtio-test-backend: --socket PATH is required\nTry 'virtio-test-backend --help'\.\n$/);
  });
});

describe('virtio-backend: serving', () => {
  it('serves over --socket-path: owner-only socket, the seed lines, SIGTERM removes the socket', async () => {
    const tmp = tempDir();
    const socketPath = path.join(tmp.dir, 'vb.sock');
    const be = start(process.execPath, [cli, '--device', 'virtio-test', '--socket-path', socketPath]);
    try {
      assert.equal(await be.waitForLine(/listening/), `virtio-backend: listening on ${socketPath} (device 45, queue ≤ 256)`);
      const st = statSync(socketPath);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o7777, 0o600, `mode ${(st.mode & 0o7777).toString(8)}`);
      await roundTrip(socketPath, 10);
      await be.waitForLine(/front-end 1 disconnected/);
      assert.deepEqual(be.stdout.filter((l) => l.startsWith('QEMU_BACK_END')), requestLogLines(requestFor(10)));
      assert.ok(be.stdout.includes('virtio-backend: front-end 1 connected'));
      be.proc.kill('SIGTERM');
      assert.deepEqual(await be.exited, { code: 0, signal: null });
      assert.ok(be.stdout.includes('virtio-backend: SIGTERM: shutting down'));
      assert.equal(existsSync(socketPath), false, 'the socket file is removed');
      assert.deepEqual(be.stderr, []);
    } finally {
      be.kill();
      tmp.remove();
    }
  });

  it('--socket-mode 0660 and --socket-group (gid, then name) set the socket file; -s=, device options apply', async () => {
    const tmp = tempDir();
    const gid = process.getgid!();
    let groupName: string | null = null;
    try {
      groupName = execFileSync('id', ['-gn'], { encoding: 'utf8' }).trim() || null;
    } catch {
      // no id(1): the gid form is still checked
    }
    const runs: [string, string[]][] = [['a.sock', ['--socket-group', String(gid)]]];
    if (groupName !== null) runs.push(['b.sock', ['--socket-group', groupName]]);
    for (const [name, groupArgs] of runs) {
      const socketPath = path.join(tmp.dir, name);
      const be = start(process.execPath, [cli, '--device', 'virtio-test', `--socket-path=${socketPath}`, '--socket-mode', '0660', ...groupArgs, '--queue-size', '128', '--quiet']);
      try {
        assert.equal(await be.waitForLine(/listening/), `virtio-backend: listening on ${socketPath} (device 45, queue ≤ 128)`);
        const st = statSync(socketPath);
        assert.equal(st.mode & 0o7777, 0o660, `mode ${(st.mode & 0o7777).toString(8)}`);
        assert.equal(st.gid, gid);
        // --queue-size 128 is enforced: our front-end with 128-entry rings is served.
        const c = await VirtioTestClient.connect({ socketPath, queueSize: 128 });
        try {
          assert.deepEqual(await c.request(3), answer(requestFor(3)));
        } finally {
          c.close();
        }
        await be.waitForLine(/front-end 1 disconnected/);
        assert.equal(be.stdout.filter((l) => l.startsWith('QEMU_BACK_END')).length, 0, '--quiet');
        be.proc.kill('SIGINT');
        assert.deepEqual(await be.exited, { code: 0, signal: null });
        assert.equal(existsSync(socketPath), false);
      } finally {
        be.kill();
      }
    }
    tmp.remove();
  });

  it('--fd N serves on a listening socket made by the parent, and leaves its file alone', async () => {
    const tmp = tempDir();
    const socketPath = path.join(tmp.dir, 'fd.sock');
    const listenFd = native.socketListen(socketPath, 4);
    const be = start(process.execPath, [cli, '--device', 'virtio-test', '--fd', '3'], { extra: [listenFd] });
    try {
      assert.equal(await be.waitForLine(/listening/), `virtio-backend: listening on fd 3, ${socketPath} (device 45, queue ≤ 256)`);
      await roundTrip(socketPath, 20);
      await roundTrip(socketPath, 21); // and the next front-end
      await be.waitForLine(/front-end 2 disconnected/);
      be.proc.kill('SIGTERM');
      assert.deepEqual(await be.exited, { code: 0, signal: null });
      assert.equal(existsSync(socketPath), true, 'a socket given by --fd is not removed');
    } finally {
      be.kill();
      native.close(listenFd);
      tmp.remove();
    }
  });

  it('--fd N that is not a listening Unix stream socket is refused clearly (exit 1)', async () => {
    const [a, b] = native.socketPair();
    const file = openSync('/dev/null', 'r');
    try {
      for (const [fd, message] of [
        [a, /^virtio-backend: --fd 3: fd 3 is a non-listening unix stream socket, not a listening Unix stream socket$/],
        [file, /^virtio-backend: --fd 3: fd 3 is not a socket$/],
      ] as const) {
        const be = start(process.execPath, [cli, '--device', 'virtio-test', '--fd', '3'], { extra: [fd] });
        assert.deepEqual(await be.exited, { code: 1, signal: null });
        assert.match(be.stderr.join('\n'), message);
      }
    } finally {
      native.close(a);
      native.close(b);
      closeSync(file);
    }
  });

  it('socket activation: LISTEN_PID = its pid and LISTEN_FDS=1 serve on fd 3, which is not removed', async () => {
    const tmp = tempDir();
    const socketPath = path.join(tmp.dir, 'act.sock');
    const listenFd = native.socketListen(socketPath, 4);
    // `exec` keeps the shell's pid, so $$ is the daemon's pid, as systemd sets it.
    const be = start('sh', ['-c', 'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=vb; export LISTEN_PID LISTEN_FDS LISTEN_FDNAMES; exec "$0" "$@"', process.execPath, cli, '--device', 'virtio-test'], {
      extra: [listenFd],
    });
    try {
      assert.equal(await be.waitForLine(/listening/), `virtio-backend: listening on fd 3, ${socketPath} (device 45, queue ≤ 256)`);
      await roundTrip(socketPath, 30);
      be.proc.kill('SIGTERM');
      assert.deepEqual(await be.exited, { code: 0, signal: null });
      assert.equal(existsSync(socketPath), true, 'an activated socket is not removed');
    } finally {
      be.kill();
      native.close(listenFd);
      tmp.remove();
    }
  });

  it('socket activation for another pid is ignored; with a wrong fd 3 or beside --socket-path it is refused', async () => {
    // LISTEN_PID of another process: not ours, so no socket at all.
    const other = run(['--device', 'virtio-test'], { ...process.env, LISTEN_PID: '1', LISTEN_FDS: '1' });
    assert.equal(other.status, 2);
    assert.match(other.stderr, /--socket-path PATH is required/);
    const file = openSync('/dev/null', 'r');
    try {
      const sh = (script: string, args: string[]): Daemon => start('sh', ['-c', `LISTEN_PID=$$; export LISTEN_PID LISTEN_FDS; ${script}`, process.execPath, cli, ...args], {
        env: { ...process.env, LISTEN_FDS: '1' },
        extra: [file],
      });
      let be = sh('exec "$0" "$@"', ['--device', 'virtio-test']);
      assert.deepEqual(await be.exited, { code: 1, signal: null });
      assert.match(be.stderr.join('\n'), /^virtio-backend: socket activation \(LISTEN_FDS=1\): fd 3 is not a socket$/);
      be = sh('exec "$0" "$@"', ['--device', 'virtio-test', '-s', '/tmp/vb-never.sock']);
      assert.deepEqual(await be.exited, { code: 2, signal: null });
      assert.match(be.stderr.join('\n'), /--socket-path and socket activation \(LISTEN_FDS\) both give the socket: use one/);
      be = sh('LISTEN_FDS=2 exec "$0" "$@"', ['--device', 'virtio-test']);
      assert.deepEqual(await be.exited, { code: 1, signal: null });
      assert.match(be.stderr.join('\n'), /socket activation: LISTEN_FDS=2, but one listening socket is served/);
    } finally {
      closeSync(file);
    }
  });

  for (const abstract of [false, true]) {
    it(`NOTIFY_SOCKET (${abstract ? '@abstract name' : 'path'}): READY=1 once listening, STOPPING=1 on SIGTERM`, async () => {
      const tmp = tempDir();
      const socketPath = path.join(tmp.dir, 'n.sock');
      const notifyAddress = abstract ? `@virtio-backend-test-${process.pid}-${Date.now()}` : path.join(tmp.dir, 'notify');
      const notifyFd = native.datagramBind(notifyAddress);
      const be = start(process.execPath, [cli, '--device', 'virtio-test', '-s', socketPath, '--quiet'], { env: { ...process.env, NOTIFY_SOCKET: notifyAddress } });
      try {
        const got: string[] = [];
        await waitFor(() => (got.push(...receiveAll(notifyFd)), got.length > 0) || be.proc.exitCode !== null, 'a notification');
        assert.equal(got.length, 1, got.join('|'));
        assert.match(got[0]!, /^READY=1\n/);
        assert.match(got[0]!, new RegExp(`\\nSTATUS=virtio-test: listening on ${socketPath.replace(/[.]/g, '\\.')} \\(device 45, queue ≤ 256\\)\\n$`));
        // Ready means ready: a front-end is served right away.
        await roundTrip(socketPath, 40);
        be.proc.kill('SIGTERM');
        assert.deepEqual(await be.exited, { code: 0, signal: null });
        assert.deepEqual(receiveAll(notifyFd), ['STOPPING=1\n']);
        assert.deepEqual(be.stderr, []);
      } finally {
        be.kill();
        native.close(notifyFd);
        tmp.remove();
      }
    });
  }

  it('an unusable NOTIFY_SOCKET is a warning, not a failure', async () => {
    const tmp = tempDir();
    const socketPath = path.join(tmp.dir, 'w.sock');
    const be = start(process.execPath, [cli, '--device', 'virtio-test', '-s', socketPath], { env: { ...process.env, NOTIFY_SOCKET: path.join(tmp.dir, 'nobody') } });
    try {
      await be.waitForLine(/listening/);
      assert.match(await be.waitForLine(/NOTIFY_SOCKET/), /^virtio-backend: NOTIFY_SOCKET=.*nobody: sendto\(.*\): No such file or directory$/);
      await roundTrip(socketPath, 50);
    } finally {
      be.proc.kill('SIGTERM');
      await be.exited;
      tmp.remove();
    }
  });
});

describe('device-options: generic parsing from a definition', () => {
  const fake = (name: string, options: DeviceDefinition['options']): DeviceDefinition => ({
    name,
    deviceId: 4,
    summary: `${name} for tests`,
    options,
    open: () => {
      throw new Error('not opened here');
    },
  });
  const rng = fake('rng', [
    { flag: 'source', type: 'string', valueName: 'FILE', default: '/dev/urandom', help: 'entropy source', check: (v) => (String(v).startsWith('/') ? null : 'not an absolute path') },
    { flag: 'period', type: 'integer', valueName: 'MS', min: 1, max: 60000, help: 'rate period' },
    { flag: 'verbose', type: 'boolean', help: 'say more' },
  ]);
  const blk = fake('blk', [
    { flag: 'file', type: 'string', help: 'image' },
    { flag: 'queue-size', type: 'integer', default: 128, min: 1, max: 1024, help: 'ring', check: (v) => ((Number(v) & (Number(v) - 1)) === 0 ? null : 'a power of two') },
  ]);
  const devices = [rng, blk];

  it('parseArgs config, defaults applied, values validated', () => {
    assert.deepEqual(deviceOptionsConfig(rng), { source: { type: 'string' }, period: { type: 'string' }, verbose: { type: 'boolean' } });
    assert.throws(() => deviceOptionsConfig(rng, ['verbose']), /clashes with an option of the command/);
    assert.deepEqual(parseDeviceOptions(rng, {}), { source: '/dev/urandom', period: undefined, verbose: undefined });
    assert.deepEqual(parseDeviceOptions(rng, { source: '/dev/hwrng', period: '1000', verbose: true, other: 'x' }), { source: '/dev/hwrng', period: 1000, verbose: true });
    const refused: [DeviceDefinition, Record<string, string>, RegExp][] = [
      [rng, { period: '0' }, /^--period must be an integer from 1 to 60000, got '0'$/],
      [rng, { period: '1e3' }, /^--period must be an integer from 1 to 60000, got '1e3'$/],
      [rng, { source: 'relative' }, /^--source 'relative': not an absolute path$/],
      [blk, { 'queue-size': '100' }, /^--queue-size must be a power of two from 1 to 1024, got '100'$/],
    ];
    for (const [def, raw, message] of refused) {
      assert.throws(() => parseDeviceOptions(def, raw), (e: unknown) => e instanceof DeviceOptionError && message.test(e.message));
    }
  });

  it('names an option of another device, or one given without --device', () => {
    assert.equal(misplacedDeviceOption(['source', 'verbose'], rng, devices), null);
    assert.equal(misplacedDeviceOption(['file'], rng, devices), '--file is an option of device blk, not of rng');
    assert.equal(misplacedDeviceOption(['socket-path', 'source'], undefined, devices), '--source is an option of device rng: give --device rng to use it');
    assert.equal(misplacedDeviceOption(['bogus'], rng, devices), null, 'unknown options are left to the strict parse');
    // The names on a command line, values not taken for options.
    assert.deepEqual(optionNamesIn(['--device', 'rng', '--source', '--file', '-s', 'p'], { device: { type: 'string' }, source: { type: 'string' }, 'socket-path': { type: 'string', short: 's' } }), [
      'device',
      'source',
      'socket-path',
    ]);
  });

  it('formats a device\'s options for --help', () => {
    const text = formatDeviceOptions(rng, { indent: 2, column: 20 });
    assert.deepEqual(text.split('\n'), [
      `${'  --source FILE'.padEnd(22)}entropy source (default /dev/urandom)`,
      `${'  --period MS'.padEnd(22)}rate period (1..60000)`,
      `${'  --verbose'.padEnd(22)}say more`,
    ]);
    assert.equal(formatDeviceOptions(fake('none', [])), '    (no options)');
  });
});
