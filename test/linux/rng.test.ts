/**
 * virtio-rng driven by Linux's own driver (drivers/char/hw_random/virtio-rng.c) on both real
 * guests: User-Mode Linux (virtio_uml) and QEMU 7.2 (vhost-user-rng-pci) with Debian's Linux 6.1.
 * The device serves a fixed --source file, so the guest's bytes must be one contiguous run of it
 * (the kernel takes some bytes first to seed its pool; the guest command stops its hwrng thread).
 * Both ways of serving: the `virtio --machine` CLI (backend in its process) and the
 * `virtio-backend` daemon as its own process. And on QEMU with `packed=on`: the packed virtqueue
 * (virtio 1.2 §2.8), which the guest shows in its negotiated features (bit 34, VIRTIO_F_RING_PACKED).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { findDevice } from '../../src/devices/registry.js';
import { runQemu } from '../../src/machine/qemu.js';
import { runUml } from '../../src/machine/uml.js';
import { onLines } from '../helpers/lines.js';
import { cliPath } from '../helpers/paths.js';
import { assertNoQemuLeft, needQemuGuest } from '../helpers/qemu.js';
import { PACKED_FEATURE_SCRIPT, packedFeatureOf } from '../helpers/virtio-features.js';
import { assertNoUmlLeft, needGuest, scratchDir } from '../helpers/uml.js';

const rng = findDevice('rng')!;
let tmp: { dir: string; remove(): void };
let source: string;
let sourceBytes: Buffer;

before(() => {
  tmp = scratchDir('vt-rng-');
  source = path.join(tmp.dir, 'entropy.bin');
  sourceBytes = randomBytes(1 << 16);
  writeFileSync(source, sourceBytes);
});
after(() => {
  tmp.remove();
  assertNoUmlLeft();
  assertNoQemuLeft();
});

/** The hex lines a demo printed → bytes; asserts the format (16 per line, lowercase). */
function bytesOf(lines: string[]): Buffer {
  const hex = lines.filter((l) => /^[0-9a-f]{2}( [0-9a-f]{2})*$/.test(l));
  assert.ok(hex.slice(0, -1).every((l) => l.split(' ').length === 16), 'sixteen bytes a line');
  return Buffer.from(hex.join(' ').split(' ').map((x) => parseInt(x, 16)));
}

function assertRunOfSource(got: Buffer, n: number): void {
  assert.equal(got.length, n);
  const at = sourceBytes.indexOf(got);
  assert.ok(at >= 0, 'the guest read a contiguous run of the --source file');
  assert.ok(at + n <= 4096, `the run starts near the file's start (at ${at}): the kernel took only a little`);
}

for (const machine of ['uml', 'qemu'] as const) {
  describe(`virtio-rng on ${machine === 'uml' ? 'User-Mode Linux' : 'QEMU 7.2'} with Linux's own driver`, () => {
    const need = (t: { skip: (m: string) => void }) =>
      machine === 'uml' ? { uml: needGuest(t), qemu: null } : { uml: null, qemu: needQemuGuest(t) };

    it('`virtio --machine ' + machine + ' --device rng --source F`: the guest reads a run of F', { timeout: 180_000 }, (t) => {
      const guest = need(t);
      if (!guest.uml && !guest.qemu) return;
      const r = spawnSync(process.execPath, [cliPath('virtio'), '--machine', machine, '--device', 'rng', '--source', source, '--count', '1000'], {
        encoding: 'utf8',
        timeout: 170_000,
      });
      assert.equal(r.status, 0, r.stderr);
      assertRunOfSource(bytesOf(r.stdout.split('\n')), 1000);
    });

    it('the `virtio-backend` daemon, a separate process, serves the guest', { timeout: 180_000 }, async (t) => {
      const guest = need(t);
      if (!guest.uml && !guest.qemu) return;
      const socket = path.join(tmp.dir, `${machine}.sock`);
      const daemon = await startRngDaemon(socket);
      try {
        const command = rng.linux!.guestCommand({ count: 512 }, []);
        const kernelArgs = [...(rng.linux!.kernelArgs ?? [])];
        const r = guest.uml
          ? await runUml({ guest: guest.uml, socket, deviceId: rng.deviceId, command, extraArgs: kernelArgs, timeoutMs: 120_000 })
          : await runQemu({ guest: guest.qemu!, vhostUser: [{ socket, device: rng.linux!.qemuDevice({})! }], command, kernelArgs, timeoutMs: 120_000 });
        assert.equal(r.exitCode, 0, r.bootLines.slice(-20).join('\n'));
        assertRunOfSource(bytesOf(r.lines), 512);
        assert.ok(daemon.out.some((l) => /front-end 1 connected/.test(l)), daemon.out.join('\n'));
        assert.equal(daemon.stderr, '', 'no diagnostics from the daemon');
      } finally {
        await daemon.stop();
      }
    });
  });
}

describe('virtio-rng on QEMU 7.2 over a packed virtqueue (packed=on)', () => {
  it('the `virtio-backend` daemon (with --require-sealed-memory) serves Linux over a packed ring: the guest negotiated VIRTIO_F_RING_PACKED and reads a run of the source', { timeout: 180_000 }, async (t) => {
    const guest = needQemuGuest(t);
    if (!guest) return;
    const socket = path.join(tmp.dir, 'qemu-packed.sock');
    // --packed: the daemon offers VIRTIO_F_RING_PACKED (off by default, see docs/vhost-user.md).
    // --require-sealed-memory: QEMU's memory-backend-memfd seals its memfd (seal=on by default),
    // so the strict memory policy serves it.
    const daemon = await startRngDaemon(socket, ['--packed', '--require-sealed-memory']);
    try {
      const [sh, c, script] = rng.linux!.guestCommand({ count: 512 }, []);
      const command = [sh!, c!, `${PACKED_FEATURE_SCRIPT}\n${script}`];
      const kernelArgs = [...(rng.linux!.kernelArgs ?? [])];
      const r = await runQemu({ guest, vhostUser: [{ socket, device: rng.linux!.qemuDevice({})!, packed: true }], command, kernelArgs, timeoutMs: 120_000 });
      assert.equal(r.exitCode, 0, r.bootLines.slice(-20).join('\n'));
      // virtio-rng is device ID 4 (§5.4): its features string has a 1 at bit 34.
      t.diagnostic(`guest sysfs: ${r.lines.filter((l) => l.trim().startsWith('vdev ')).join(' | ')}`);
      assert.equal(packedFeatureOf(r.lines, 4), '1', `VIRTIO_F_RING_PACKED negotiated:\n${r.lines.join('\n')}`);
      assertRunOfSource(bytesOf(r.lines), 512);
      assert.ok(daemon.out.some((l) => /front-end 1 connected/.test(l)), daemon.out.join('\n'));
      assert.equal(daemon.stderr, '', 'no diagnostics from the daemon');
    } finally {
      await daemon.stop();
    }
  });
});

/** `virtio-backend --device rng` serving the entropy file on `socket`, up and listening. */
async function startRngDaemon(socket: string, extra: string[] = []) {
  const proc = spawn(process.execPath, [cliPath('virtio-backend'), '--device', 'rng', ...extra, '--socket-path', socket, '--source', source], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: string[] = [];
  const daemon = { proc, out, stderr: '' };
  proc.stderr.on('data', (d) => (daemon.stderr += d));
  await new Promise<void>((resolve, reject) => {
    onLines(proc.stdout, (l) => {
      out.push(l);
      if (/listening on/.test(l)) resolve();
    });
    proc.on('exit', (c) => reject(new Error(`virtio-backend exited ${c}: ${daemon.stderr}`)));
  });
  return {
    proc,
    out,
    get stderr() {
      return daemon.stderr;
    },
    async stop() {
      proc.kill('SIGTERM');
      if (proc.exitCode === null && proc.signalCode === null) await new Promise((r) => proc.once('exit', r));
    },
  };
}
