#!/usr/bin/env node
/**
 * `virtio-test-backend --socket PATH`: serves the virtio-test device over vhost-user to a
 * real front-end (User-Mode Linux's virtio_uml, QEMU's vhost-user-device) or to the
 * TypeScript front-end. One front-end at a time; it keeps serving after one leaves.
 *
 * stdout: one line when listening, one per connection and disconnection, and the device's
 * request lines (the seed's `QEMU_BACK_END: >>> ...` lines) unless --quiet.
 * stderr: diagnostics (refused requests, device errors).
 */
import { closeSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { VirtioTestDevice } from '../devices/virtio-test/device.js';
import { DEFAULT_PUBLISH_BATCH } from '../device/runtime.js';
import { VIRTIO_ID_TEST } from '../devices/virtio-test/protocol.js';
import { serveDevice, type BackendServer } from '../vhost-user/backend-server.js';
import { MAX_QUEUE_SIZE } from '../virtio/constants.js';
import { DEVICE_ID_RULE, QUEUE_SIZE_RULE, isDeviceId, isQueueSize, optionParser, type OptionParser } from './options.js';

const NAME = 'virtio-test-backend';
/** virtio_uml always asks for 256-entry rings (MAX_SUPPORTED_QUEUE_SIZE in linux 6.1), and vhost-user cannot advertise a smaller maximum. */
const DEFAULT_QUEUE_SIZE = 256;

const HELP = `Usage: ${NAME} --socket PATH [options]

Serves the virtio-test device (the seed's device: it logs each request and answers
{arg1+100, arg2+100, arg3+100}) over vhost-user on the Unix socket PATH.

Options:
  --socket PATH       the socket to listen on (a stale socket file is replaced if nothing listens)
  --device-id ID      the device ID the device reports (default ${VIRTIO_ID_TEST}; the front-end chooses the
                      driver by its own configuration, e.g. virtio_uml.device=PATH:ID)
  --queue-size Q      the largest ring a front-end may set, a power of two ≤ ${MAX_QUEUE_SIZE} (default
                      ${DEFAULT_QUEUE_SIZE}: virtio_uml always uses 256-entry rings)
  --publish-batch N   publish the used ring after the first answer of a pass, then every N
                      answers (default ${DEFAULT_PUBLISH_BATCH}; 0: once per pass). Smaller lets the
                      driver recycle buffers sooner.
  --quiet             do not print the device's request lines
  --trace             print every vhost-user request received (to stderr)
  --ready-fd N        write "ready\\n" to file descriptor N once listening, then close it
  -h, --help          this text

Stops cleanly on SIGINT or SIGTERM (the socket file is removed).`;

function fatal(message: string): never {
  process.stderr.write(`${NAME}: ${message}\n`);
  process.exit(1);
}

const options: OptionParser = optionParser(NAME);

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function main(): void {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        socket: { type: 'string' },
        'device-id': { type: 'string' },
        'queue-size': { type: 'string' },
        'publish-batch': { type: 'string' },
        quiet: { type: 'boolean' },
        trace: { type: 'boolean' },
        'ready-fd': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    options.optionError((e as Error).message);
  }
  const { values } = parsed;
  if (values.help) {
    out(HELP);
    return;
  }
  const socketPath = values.socket;
  if (socketPath === undefined || socketPath === '') options.optionError('--socket PATH is required');
  if (Buffer.byteLength(socketPath) > 107) options.optionError(`--socket path is too long for a Unix socket (${Buffer.byteLength(socketPath)} bytes, at most 107)`);
  const deviceId = options.intOption('device-id', values['device-id'], VIRTIO_ID_TEST, isDeviceId, DEVICE_ID_RULE);
  const queueSize = options.intOption('queue-size', values['queue-size'], DEFAULT_QUEUE_SIZE, isQueueSize, QUEUE_SIZE_RULE);
  const readyFd = options.intOption('ready-fd', values['ready-fd'], -1, (n) => Number.isInteger(n) && n >= 3, 'a file descriptor number ≥ 3');
  const publishBatch = options.intOption('publish-batch', values['publish-batch'], DEFAULT_PUBLISH_BATCH, (n) => Number.isSafeInteger(n) && n >= 0 && n <= MAX_QUEUE_SIZE, `a count in 0..${MAX_QUEUE_SIZE}`);
  const quiet = values.quiet ?? false;

  let server: BackendServer;
  try {
    server = serveDevice({
      socketPath,
      createDevice: () => new VirtioTestDevice({ deviceId, queueSize, print: !quiet }),
      log: out,
      warn: (line) => process.stderr.write(`${NAME}: ${line}\n`),
      info: (line) => out(`${NAME}: ${line}`),
      maxQueueSize: queueSize,
      publishBatch,
      ...(values.trace ? { trace: (line: string) => process.stderr.write(`${NAME}: trace: ${line}\n`) } : {}),
    });
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === 'ERR_NATIVE_NO_EXTERNAL_BUFFERS' || /native addon/.test(err.message)) fatal(err.message);
    fatal(`cannot listen on ${socketPath}: ${err.message}`);
  }
  out(`${NAME}: listening on ${socketPath} (device ${deviceId}, queue ≤ ${queueSize})`);
  if (readyFd >= 0) {
    try {
      writeSync(readyFd, 'ready\n');
      closeSync(readyFd);
    } catch (e) {
      process.stderr.write(`${NAME}: --ready-fd ${readyFd}: ${(e as Error).message}\n`);
    }
  }

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    out(`${NAME}: ${signal}: shutting down`);
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main();
