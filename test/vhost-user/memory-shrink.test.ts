/**
 * A front-end that shrinks its guest memory under the back-end (docs/vhost-user.md "Memory the
 * front-end shrinks"): ftruncate() of a region's memfd after SET_MEM_TABLE makes every access
 * to the lost pages raise SIGBUS. The back-end must not die of it: the addon's guard maps zero
 * pages in their place and the session closes that connection; with --require-sealed-memory
 * only memfds sealed against shrinking are accepted at all.
 *
 * The back-ends here are child processes (virtio-backend), so a guard that does not work shows
 * up as a daemon killed by SIGBUS, not as a dead test runner.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { ftruncateSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { answer, requestFor } from '../../src/devices/virtio-test/protocol.js';
import { VirtioTestClient } from '../../src/testing/virtio-test-client.js';
import { F_SEAL_SHRINK } from '../../src/vhost-user/mapped-memory.js';
import { cliPath, repoRoot } from '../helpers/paths.js';
import { spawnNode, tempDir, waitFor } from './helpers.js';

const cli = cliPath('virtio-backend');
const F_SEAL_GROW = 0x0004;
const REGIONS_SEALED = [
  { guestAddr: 0, size: 1 << 20, seals: F_SEAL_SHRINK | F_SEAL_GROW },
  { guestAddr: 0x4000_0000, size: 4 << 20, mmapOffset: 0x3000, seals: F_SEAL_SHRINK | F_SEAL_GROW },
];

function startDaemon(extra: string[] = []) {
  const tmp = tempDir();
  const socketPath = path.join(tmp.dir, 'vt.sock');
  const be = spawnNode(cli, ['--device', 'virtio-test', '--socket-path', socketPath, '--quiet', ...extra]);
  return { tmp, socketPath, be };
}

async function stop(d: ReturnType<typeof startDaemon>): Promise<void> {
  d.be.proc.kill('SIGTERM');
  const exit = await d.be.exited;
  d.tmp.remove();
  assert.deepEqual(exit, { code: 0, signal: null }, `the daemon ends cleanly; stderr:\n${d.be.stderr.join('\n')}`);
}

describe('front-end memory shrunk after SET_MEM_TABLE', () => {
  it('the addon guard: reads of lost pages see zeros, writes land nowhere, the faults are counted', () => {
    // In a child: if the guard failed, it is the child that dies of SIGBUS.
    const script = `
      import { native } from ${JSON.stringify(path.join(repoRoot, 'dist/src/vhost-user/native/index.js'))};
      import { ftruncateSync } from 'node:fs';
      const fd = native.memfdCreate('shrink', 1 << 20);
      const ab = native.mmap(fd, 1 << 20, 0);
      const u8 = new Uint8Array(ab);
      u8[5000] = 7; u8[900000] = 8;
      const before = [native.mappingFaults(ab), u8[5000], u8[900000]];
      ftruncateSync(fd, 4096); // the first page stays
      const efd = native.memoryFaultFd();
      const after = [u8[100], u8[5000], u8[900000]];
      u8[900001] = 9; // the replaced page is private: the write stays here, not in the file
      console.log(JSON.stringify({ before, after, written: u8[900001], faults: native.mappingFaults(ab), signalled: native.eventfdRead(efd) }));
      native.munmap(ab);
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
    assert.equal(r.signal, null, `the child died of ${r.signal}: ${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { before: number[]; after: number[]; written: number; faults: number; signalled: number };
    assert.deepEqual(out.before, [0, 7, 8]);
    assert.deepEqual(out.after, [0, 0, 0], 'the page still in the file reads as before (0), the lost ones as zeros');
    assert.equal(out.written, 9);
    assert.equal(out.faults, 2, 'two lost pages touched: two faults');
    assert.equal(out.signalled, 2, 'the eventfd was written once per fault');
  });

  it('the guard leaves other SIGBUS alone: one sent by kill still ends the process', () => {
    const script = `
      import { native } from ${JSON.stringify(path.join(repoRoot, 'dist/src/vhost-user/native/index.js'))};
      native.memoryFaultFd(); // installs the guard
      process.kill(process.pid, 'SIGBUS');
      setTimeout(() => console.log('survived'), 200);
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
    assert.equal(r.signal, 'SIGBUS');
    assert.equal(r.stdout, '');
  });

  it('the daemon survives a shrunk region: that connection is closed with the reason, the next front-end is served', async () => {
    const d = startDaemon();
    try {
      await d.be.waitForLine(/listening/);
      const c = await VirtioTestClient.connect({ socketPath: d.socketPath });
      assert.deepEqual(await c.request(1), answer(requestFor(1)));
      // Region 1 holds the request buffers; ring and descriptors stay in region 0.
      ftruncateSync(c.ram.regions[1]!.fd, 0);
      void c.request(2).catch(() => undefined);
      const line = await d.be.waitForLine(/front-end memory shrank under the back-end: /, 'the daemon to report the shrunk memory');
      assert.match(line, /page\(s\) of region gpa 0x40000000 \(size 0x400000\) gone .*SIGBUS caught.*closing the connection/);
      await waitFor(() => c.frontend.isClosed, 'the daemon to close the connection');
      c.close();
      assert.equal(d.be.proc.exitCode, null, 'the daemon is still running');
      const c2 = await VirtioTestClient.connect({ socketPath: d.socketPath });
      assert.deepEqual(await c2.request(10), answer(requestFor(10)));
      c2.close();
    } finally {
      await stop(d);
    }
  });

  it('--require-sealed-memory refuses an unsealed memfd and serves a sealed one', async () => {
    const d = startDaemon(['--require-sealed-memory']);
    try {
      await d.be.waitForLine(/listening/);
      await assert.rejects(VirtioTestClient.connect({ socketPath: d.socketPath }), /SET_MEM_TABLE/);
      const refused = await d.be.waitForLine(/not sealed/, 'the refusal');
      assert.match(refused, /a memfd not sealed against shrinking \(F_SEAL_SHRINK\), and sealed memory is required \(--require-sealed-memory\)/);
      const c = await VirtioTestClient.connect({ socketPath: d.socketPath, regions: REGIONS_SEALED });
      assert.deepEqual(await c.request(3), answer(requestFor(3)));
      // Sealed: the front-end itself cannot shrink it any more.
      assert.throws(() => ftruncateSync(c.ram.regions[1]!.fd, 0), /EPERM/);
      c.close();
    } finally {
      await stop(d);
    }
  });
});
