// The QEMU 7.2 launcher (src/machine/qemu.ts) and its guest (guest/qemu/: Debian's kernel and
// a busybox initramfs with the virtio-pci modules): the console protocol, timeouts, and real
// vhost-user-pci devices served by Debian's qemu-storage-daemon (vhost-user-blk), raw and ext4.
// Needs the guest built (guest/qemu/build.sh) and QEMU; skipped loudly when they are missing,
// except in CI.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { qemuArgs, runQemu, type QemuRunResult } from '../../src/machine/qemu.js';
import { assertNoKernelTrouble, programLines } from '../helpers/uml.js';
import { assertNothingQemuLeft, needQemuGuest, needStorageDaemon, qemuProcessesOf, startStorageDaemon } from '../helpers/qemu.js';

after(() => assertNothingQemuLeft());

const show = (r: QemuRunResult): string =>
  `exit=${r.exitCode} process=${r.processExitCode} signal=${r.signal} timedOut=${r.timedOut}\nlines:\n${r.lines.join('\n')}\nboot:\n${r.bootLines.join('\n')}`;

function scratch(): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vt-qemu-test-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

test('qemuArgs: shared memfd RAM, no defaults, one chardev + device per vhost-user socket', () => {
  const args = qemuArgs(
    {
      guest: { kernel: '/k', initramfs: '/i' },
      command: ['echo', 'a b'],
      memMiB: 128,
      accel: 'tcg',
      vhostUser: [
        { socket: '/tmp/a,b.sock', device: 'vhost-user-rng-pci' },
        { socket: '/tmp/blk.sock', device: 'vhost-user-blk-pci,num-queues=2', reconnectSeconds: 1 },
      ],
    },
    'vt-1-1',
  );
  const after = (flag: string): string[] => args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
  assert.deepEqual(after('-name'), ['vt-1-1']);
  assert.deepEqual(after('-object'), ['memory-backend-memfd,id=mem,size=128M,share=on']);
  assert.deepEqual(after('-machine'), ['pc,memory-backend=mem']);
  assert.deepEqual(after('-chardev'), ['socket,id=vhu0,path=/tmp/a,,b.sock', 'socket,id=vhu1,path=/tmp/blk.sock,reconnect=1']);
  assert.deepEqual(after('-device'), ['vhost-user-rng-pci,chardev=vhu0', 'vhost-user-blk-pci,num-queues=2,chardev=vhu1']);
  for (const f of ['-nodefaults', '-no-reboot']) assert.ok(args.includes(f), f);
  assert.deepEqual(after('-serial'), ['stdio']);
  const append = after('-append')[0]!;
  assert.match(append, /(^| )console=ttyS0( |$)/);
  const cmd = /(?:^| )vt_cmd=(\S+)$/.exec(append)?.[1];
  assert.equal(Buffer.from(cmd!, 'base64').toString(), `echo 'a b'`);
  assert.throws(() => qemuArgs({ guest: { kernel: '/k', initramfs: '/i' }, command: [] }, 'x'), /empty command/);
});

test('QEMU guest boots, runs a command and returns its status', async (t) => {
  const g = needQemuGuest(t);
  if (!g) return;
  const seen: string[] = [];
  let running = '';
  const started = Date.now();
  const r = await runQemu({
    guest: g,
    command: ['sh', '-c', 'echo hello; echo "two  words"; cat /proc/version; test -e /sys/bus/pci/drivers/virtio-pci && echo virtio-pci-loaded; exit 3'],
    onLine: (l) => {
      seen.push(l);
      if (l === 'VT_READY') running = qemuProcessesOf();
    },
    timeoutMs: 120_000,
  });
  t.diagnostic(`boot+run+poweroff took ${Date.now() - started} ms`);
  assert.equal(r.timedOut, false, show(r));
  assert.equal(r.exitCode, 3, show(r));
  const out = programLines(r.lines);
  assert.deepEqual(out.slice(0, 2), ['hello', 'two  words'], show(r));
  assert.match(out[2] ?? '', /^Linux version 6\.1\./, show(r));
  assert.equal(out[3], 'virtio-pci-loaded', show(r));
  assert.equal(out.length, 4, show(r));
  assert.ok(seen.includes('VT_READY') && seen.includes('VT_EXIT=3'), 'onLine sees the markers');
  // The leak check finds a running QEMU by its -name tag (so its all-clear means something).
  assert.match(running, new RegExp(`qemu-system-x86_64 .*-name vt-${process.pid}-\\d+ `), running);
  // A clean poweroff: QEMU exits by itself with status 0.
  assert.equal(r.signal, null);
  assert.equal(r.processExitCode, 0, show(r));
  assertNoKernelTrouble([...r.lines, ...r.bootLines]);
});

test('a command that hangs is killed at the timeout, leaving no QEMU behind', async (t) => {
  const g = needQemuGuest(t);
  if (!g) return;
  const r = await runQemu({ guest: g, command: ['sleep', '1000'], timeoutMs: 8000 });
  assert.equal(r.timedOut, true);
  assert.equal(r.exitCode, null);
  assert.equal(r.signal, 'SIGKILL');
  assertNothingQemuLeft();
});

test('a vhost-user socket nobody listens on: QEMU refuses to start and says why', async (t) => {
  const g = needQemuGuest(t);
  if (!g) return;
  const tmp = scratch();
  try {
    const socket = path.join(tmp.dir, 'nobody.sock');
    const r = await runQemu({ guest: g, command: ['true'], vhostUser: [{ socket, device: 'vhost-user-blk-pci' }], timeoutMs: 30_000 });
    assert.equal(r.timedOut, false);
    assert.equal(r.exitCode, null);
    assert.equal(r.processExitCode, 1, show(r));
    assert.ok(r.bootLines.some((l) => l.includes(socket)), show(r));
  } finally {
    tmp.remove();
  }
});

const SECTOR = 512;
const IMAGE_BYTES = 16 * 1024 * 1024;
const FILL = 0x5a;

/** Sector 0 of the test image: byte i is (7i + 3) mod 256, so no two od lines are alike. */
function sector0(): Buffer {
  const b = Buffer.alloc(SECTOR);
  for (let i = 0; i < SECTOR; i++) b[i] = (i * 7 + 3) & 0xff;
  return b;
}

/** What `od -An -v -tx1 | head` prints for the first 160 bytes of `b` (16 a line). */
function odLines(b: Buffer, count = 10): string[] {
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push([...b.subarray(i * 16, i * 16 + 16)].map((x) => ` ${x.toString(16).padStart(2, '0')}`).join(''));
  return out;
}

test('vhost-user-blk-pci (qemu-storage-daemon, 2 queues, 2 vCPUs): the guest reads the size and sector 0, writes with O_DIRECT', async (t) => {
  const g = needQemuGuest(t);
  if (!g || !needStorageDaemon(t)) return;
  const tmp = scratch();
  const image = path.join(tmp.dir, 'disk.img');
  const socket = path.join(tmp.dir, 'blk.sock');
  const img = Buffer.alloc(IMAGE_BYTES, FILL);
  sector0().copy(img, 0);
  writeFileSync(image, img);
  const qsd = await startStorageDaemon([{ image, socket, numQueues: 2 }]);
  const message = 'virtio-ts: written by the QEMU guest';
  try {
    const r = await runQemu({
      guest: g,
      vhostUser: [{ socket, device: 'vhost-user-blk-pci,num-queues=2' }],
      // virtio_blk uses min(num-queues, CPUs) queues: two vCPUs, so both queues are set up
      cpus: 2,
      command: [
        'sh',
        '-c',
        'echo "size=$(cat /sys/block/vda/size)"; echo "queues=$(ls /sys/block/vda/mq | tr "\\n" " ")"; ' +
          // read from CPU 0 (queue 0), write from CPU 1 (queue 1)
          'taskset 1 dd if=/dev/vda bs=512 count=1 2>/dev/null | od -An -v -tx1 | head; ' +
          `printf '%s' '${message}' | taskset 2 dd of=/dev/vda bs=512 seek=100 count=1 conv=sync oflag=direct 2>/dev/null && echo write-ok`,
      ],
      timeoutMs: 120_000,
    });
    assert.equal(r.timedOut, false, show(r));
    assert.equal(r.exitCode, 0, show(r));
    const out = programLines(r.lines);
    assert.equal(out[0], `size=${IMAGE_BYTES / SECTOR}`, show(r));
    assert.equal(out[1], 'queues=0 1 ', show(r));
    assert.deepEqual(out.slice(2, 12), odLines(sector0()), show(r));
    assert.equal(out[12], 'write-ok', show(r));
    assert.equal(out.length, 13, show(r));
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
  } finally {
    await qsd.stop();
  }
  try {
    // The image after the daemon is gone: the sector written, its neighbours and sector 0 untouched.
    const after = readFileSync(image);
    const want = Buffer.alloc(SECTOR);
    want.write(message, 'latin1');
    assert.ok(after.subarray(100 * SECTOR, 101 * SECTOR).equals(want), `sector 100: ${after.subarray(100 * SECTOR, 100 * SECTOR + 48).toString('latin1')}`);
    assert.ok(after.subarray(0, SECTOR).equals(sector0()), 'sector 0 unchanged');
    for (const s of [99, 101]) assert.ok(after.subarray(s * SECTOR, (s + 1) * SECTOR).every((x) => x === FILL), `sector ${s} unchanged`);
    assert.equal(after.length, IMAGE_BYTES);
  } finally {
    tmp.remove();
  }
});

test('ext4 on a vhost-user-blk-pci disk: the guest mounts it (modules load on demand), reads and writes a file', async (t) => {
  const g = needQemuGuest(t);
  if (!g || !needStorageDaemon(t)) return;
  const mkfs = spawnSync('mkfs.ext4', ['-V'], { encoding: 'utf8' });
  if (mkfs.error) {
    console.log('\n*** SKIPPED: mkfs.ext4 not found (apt-get install -y e2fsprogs) ***\n');
    t.skip('SKIPPED: mkfs.ext4 not found');
    return;
  }
  const tmp = scratch();
  const image = path.join(tmp.dir, 'ext4.img');
  const socket = path.join(tmp.dir, 'ext4.sock');
  const content = path.join(tmp.dir, 'content');
  mkdirSync(content);
  writeFileSync(path.join(content, 'hello.txt'), 'made on the host\n');
  writeFileSync(image, Buffer.alloc(0));
  const mk = spawnSync('mkfs.ext4', ['-q', '-F', '-d', content, image, '8M'], { encoding: 'utf8' });
  assert.equal(mk.status, 0, `mkfs.ext4: ${mk.stderr}`);
  const qsd = await startStorageDaemon([{ image, socket }]);
  try {
    const r = await runQemu({
      guest: g,
      vhostUser: [{ socket, device: 'vhost-user-blk-pci' }],
      command: [
        'sh',
        '-c',
        'mount -t ext4 /dev/vda /mnt && cat /mnt/hello.txt && echo "made in the guest" > /mnt/guest.txt && umount /mnt && echo umounted; ' +
          'lsmod | cut -d" " -f1 | grep -E "^(ext4|jbd2|mbcache|crc16|crc32c_generic)$" | sort | tr "\\n" " "; echo',
      ],
      timeoutMs: 120_000,
    });
    assert.equal(r.timedOut, false, show(r));
    assert.equal(r.exitCode, 0, show(r));
    const text = programLines(r.lines); // kernel messages (EXT4-fs ...) interleave
    assert.deepEqual(text, ['made on the host', 'umounted', 'crc16 crc32c_generic ext4 jbd2 mbcache '], show(r));
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
  } finally {
    await qsd.stop();
  }
  try {
    const r = spawnSync('debugfs', ['-R', 'cat /guest.txt', image], { encoding: 'utf8' });
    if (r.error) t.diagnostic('debugfs not found: the host-side check of guest.txt is skipped');
    else assert.equal(r.stdout, 'made in the guest\n', r.stderr);
  } finally {
    tmp.remove();
  }
});
