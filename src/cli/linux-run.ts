/**
 * `virtio --machine uml|qemu`: a device's demo in a real Linux guest. The device runs in this
 * process behind the vhost-user backend; the guest attaches it (User-Mode Linux with
 * `virtio_uml.device=<socket>:<id>`, QEMU 7.2 with the device's `vhost-user-*-pci`) and runs
 * the definition's guest command with Linux's own driver (ours, for virtio-test). Device lines
 * (stdout of this process) and the guest's console lines are printed as they come.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DeviceDefinition, OptionValues } from '../devices/definition.js';
import { serveDevice } from '../vhost-user/backend-server.js';
import { buildUmlGuest, findUmlGuest, runUml, type UmlRunResult } from '../machine/uml.js';
import { exitOnSignals } from '../machine/process-groups.js';

export interface LinuxScenario {
  machine: 'uml' | 'qemu';
  definition: DeviceDefinition;
  /** The device's options and the demo's (count, ...). */
  values: OptionValues;
  positionals: readonly string[];
  verbose: boolean;
  /** The ring layout: 'packed' starts QEMU's device with packed=on (VIRTIO_F_RING_PACKED). Default split. */
  ring?: 'split' | 'packed';
}

const MARKER_EXIT = /^VT_EXIT=\d+$/;

export async function runOnLinux(s: LinuxScenario): Promise<number> {
  const { definition: def, machine } = s;
  const linux = def.linux;
  if (!linux) return refuse(`device ${def.name} has no demo for a real Linux guest`);
  const qemuDevice = linux.qemuDevice(s.values);
  if (machine === 'qemu' && !qemuDevice) return refuse(`device ${def.name} cannot run on QEMU 7.2: ${linux.qemuMissing ?? 'no vhost-user device for it'}`);

  const factory = await def.open(s.values, { log: (l) => process.stdout.write(`${l}\n`), warn: (l) => process.stderr.write(`${def.name} backend: ${l}\n`) });
  const deviceId = factory.createDevice().deviceId;
  const dir = mkdtempSync(path.join(os.tmpdir(), `virtio-${machine}-`));
  const socket = path.join(dir, 'vt.sock');
  const server = serveDevice({
    socketPath: socket,
    createDevice: () => factory.createDevice(),
    log: (line) => process.stdout.write(`${line}\n`),
    warn: (line) => process.stderr.write(`${def.name} backend: ${line}\n`),
    info: s.verbose ? (line) => process.stderr.write(`${def.name} backend: ${line}\n`) : undefined,
    // VIRTIO_F_RING_PACKED only when asked for: QEMU then gets packed=on (below); UML never
    // (virtio_uml would take it, see BackendSessionOptions.packedRing).
    ...(s.ring === 'packed' ? { packedRing: true } : {}),
  });
  let printing = false;
  const onLine = (line: string): void => {
    if (line === 'VT_READY') printing = true;
    else if (MARKER_EXIT.test(line)) printing = false;
    else if (printing) process.stdout.write(`${line}\n`);
    else if (s.verbose) process.stderr.write(`${line}\n`);
  };
  // Ctrl-C (or SIGTERM) ends the guest and any guest build with us: they run in process
  // groups of their own, which the terminal's signal does not reach (process-groups.ts).
  exitOnSignals();
  const command = linux.guestCommand(s.values, s.positionals);
  const kernelArgs = [...(linux.kernelArgs ?? [])];
  try {
    let r: UmlRunResult;
    if (machine === 'uml') {
      let guest = findUmlGuest();
      if (!guest) {
        process.stderr.write('virtio: building the UML guest kernel (first run only; a few minutes)...\n');
        guest = await buildUmlGuest();
      }
      r = await runUml({ guest, socket, deviceId, command, extraArgs: kernelArgs, timeoutMs: 300_000, onLine });
    } else {
      const { buildQemuGuest, findQemuGuest, runQemu } = await import('../machine/qemu.js');
      let guest = findQemuGuest();
      if (!guest) {
        process.stderr.write('virtio: building the QEMU guest image (first run only)...\n');
        guest = await buildQemuGuest();
      }
      r = await runQemu({ guest, vhostUser: [{ socket, device: qemuDevice!, ...(s.ring === 'packed' ? { packed: true } : {}) }], command, kernelArgs, timeoutMs: 300_000, onLine });
    }
    if (r.timedOut) process.stderr.write(`virtio: the ${machine} guest timed out and was killed\n`);
    if (r.exitCode === null) {
      process.stderr.write(`virtio: the ${machine} guest ended without reporting an exit status${r.signal ? ` (${r.signal})` : ''}\n`);
      for (const l of r.bootLines.slice(-20)) process.stderr.write(`  ${l}\n`);
      return 1;
    }
    return r.exitCode;
  } finally {
    await server.close();
    await factory.close?.();
    rmSync(dir, { recursive: true, force: true });
  }
}

function refuse(message: string): number {
  process.stderr.write(`virtio: ${message}\n`);
  return 2;
}
