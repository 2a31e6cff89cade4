/**
 * `virtio --machine uml`: the same scenario with a real Linux 6.1 kernel as the guest. The
 * virtio-test device runs in this process behind the vhost-user backend; User-Mode Linux
 * attaches it with `virtio_uml.device=<socket>:<id>`, and the guest runs our C user program
 * against our C driver. Device lines (stdout of this process) and the guest's console lines
 * are printed as they come.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VirtioTestDevice } from '../devices/virtio-test/device.js';
import { buildUmlGuest, findUmlGuest, runUml } from '../machine/uml.js';
import { serveDevice } from '../vhost-user/backend-server.js';

export interface UmlScenario {
  /** The embedded program's argv: ['virtio', N] or ['virtio', '-c', K, N]. */
  argv: string[];
  deviceId: number;
  /** The largest ring the backend accepts (virtio_uml always asks for 256). */
  queueSize: number;
  verbose: boolean;
}

/** The guest command for the scenario: the C program once, or K times with N, N+1, ... mod 256. */
export function guestCommand(argv: string[]): string[] {
  if (argv[1] !== '-c') return argv;
  const [, , k, n] = argv;
  const loop =
    `i=0; while [ $i -lt ${Number(k)} ]; do virtio $(( (${Number(n)} + i) % 256 )) || exit $?; i=$((i + 1)); done; ` +
    `echo "virtio: ${Number(k)} requests, ${Number(k)} responses verified"`;
  return ['sh', '-c', loop];
}

export async function runOnUml(s: UmlScenario): Promise<number> {
  let guest = findUmlGuest();
  if (!guest) {
    process.stderr.write('virtio: building the UML guest kernel (first run only; a few minutes)...\n');
    guest = buildUmlGuest();
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'virtio-uml-'));
  const socket = path.join(dir, 'vt.sock');
  const server = serveDevice({
    socketPath: socket,
    createDevice: () => new VirtioTestDevice({ deviceId: s.deviceId }),
    log: (line) => process.stdout.write(`${line}\n`),
    warn: (line) => process.stderr.write(`virtio-test backend: ${line}\n`),
    info: s.verbose ? (line) => process.stderr.write(`virtio-test backend: ${line}\n`) : undefined,
    maxQueueSize: s.queueSize,
  });
  let printing = false;
  try {
    const r = await runUml({
      guest,
      socket,
      deviceId: s.deviceId,
      command: guestCommand(s.argv),
      timeoutMs: 300_000,
      onLine: (line) => {
        if (line === 'VT_READY') printing = true;
        else if (/^VT_EXIT=\d+$/.test(line)) printing = false;
        else if (printing) process.stdout.write(`${line}\n`);
        else if (s.verbose) process.stderr.write(`${line}\n`);
      },
    });
    if (r.timedOut) process.stderr.write('virtio: the UML guest timed out and was killed\n');
    if (r.exitCode === null) {
      process.stderr.write(`virtio: the UML guest ended without reporting an exit status${r.signal ? ` (${r.signal})` : ''}\n`);
      for (const l of r.bootLines.slice(-20)) process.stderr.write(`  ${l}\n`);
      return 1;
    }
    return r.exitCode;
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
