/**
 * virtio-blk driven by Linux's own driver (drivers/block/virtio_blk.c) on both real guests:
 * User-Mode Linux (virtio_uml.device=SOCK:2) and QEMU 7.2 (vhost-user-blk-pci,num-queues=2,
 * two vCPUs so that both request queues are used), served by the `virtio-backend --device blk`
 * daemon as its own process, and once by the `virtio --machine M --device blk` CLI.
 *
 * The image (64 MiB) has an MBR with three partitions: vda1 an empty ext4 with a journal that
 * the host made (mkfs.ext4), vda2 for a file system the guest makes itself (busybox mke2fs),
 * vda3 filled with 0xa5 for raw writes. In the guest: dd with O_DIRECT writes known patterns at
 * several offsets of vda3 (one sector, odd and unaligned runs, 64 KiB and 1 MiB requests, the
 * disk's last 4 KiB and last sector), reads each back and compares; then it writes files on
 * vda1 and on vda2, syncs and unmounts. After the guest has powered off, the host checks the
 * image: every byte written at the offsets and nothing else in vda3, the partition table
 * unchanged, `e2fsck -fn` clean on both file systems, every file's contents (`debugfs -R cat`).
 * And with --read-only: the disk is read-only in the guest, writes fail, the image is unchanged.
 * On QEMU with `packed=on`, the same guest script and host checks over packed virtqueues (virtio
 * 1.2 §2.8), which the guest shows in its negotiated features (bit 34, VIRTIO_F_RING_PACKED).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it, test } from 'node:test';
import { BlkStatus } from '../../src/devices/blk/device.js';
import { runQemu } from '../../src/machine/qemu.js';
import { runUml, type UmlGuest } from '../../src/machine/uml.js';
import { BlkClient } from '../../src/testing/blk-client.js';
import type { QemuGuest } from '../../src/machine/qemu.js';
import { GUEST_PATTERN_FUNCTION, assertFsckClean, assertNoBlkDaemonLeft, debugfsCat, haveE2fsprogs, hostPattern, spawnBlkDaemon } from '../helpers/blk.js';
import { cliPath } from '../helpers/paths.js';
import { assertNoQemuLeft, inCI, needQemuGuest } from '../helpers/qemu.js';
import { assertNoKernelTrouble, assertNoUmlLeft, needGuest, programLines, scratchDir } from '../helpers/uml.js';

const SECTOR = 512;
const MiB = 1024 * 1024;
const IMAGE_BYTES = 64 * MiB;
const SECTORS = IMAGE_BYTES / SECTOR;
/** Partitions, in sectors: [start, count). */
const P1 = { start: 2048, count: (24 * MiB) / SECTOR }; // host-made ext4 (journal)
const P2 = { start: P1.start + P1.count, count: (16 * MiB) / SECTOR }; // guest-made (busybox mke2fs)
const P3 = { start: P2.start + P2.count, count: SECTORS - (P2.start + P2.count) }; // raw writes
const FILLER = 0xa5;

/** Raw writes in vda3: absolute sector, dd block size, count. Each sector * 512 is a multiple of bs. */
const WRITES: readonly { sector: number; bs: number; count: number }[] = [
  { sector: P3.start, bs: 4096, count: 1 }, // the partition's first 4 KiB
  { sector: 84001, bs: 512, count: 1 }, // one odd sector
  { sector: 90003, bs: 512, count: 7 }, // an odd, unaligned run
  { sector: 782 * 128, bs: 65536, count: 16 }, // 1 MiB in 64 KiB requests
  { sector: 59 * 2048, bs: MiB, count: 1 }, // one 1 MiB write (split by seg_max / max_sectors)
  { sector: SECTORS - 16, bs: 4096, count: 1 }, // 4 KiB near the end
  { sector: SECTORS - 1, bs: 512, count: 1 }, // the last sector
];

/** Bytes of /big.bin, which the guest writes on vda1. */
const BIG_BYTES = 600_000 + 1234;

let tmp: { dir: string; remove(): void };
let e2fs = true;

before(() => {
  tmp = scratchDir('vt-blk-linux-');
  e2fs = haveE2fsprogs();
});
after(() => {
  tmp.remove();
  assertNoUmlLeft();
  assertNoQemuLeft();
  assertNoBlkDaemonLeft();
});

function needE2fs(t: { skip: (m: string) => void }): boolean {
  if (e2fs) return true;
  const why = 'e2fsprogs (mkfs.ext4, e2fsck, debugfs) not found (apt-get install -y e2fsprogs)';
  if (inCI) assert.fail(`${why}; CI=true requires it`);
  console.log(`\n*** SKIPPED: ${why} ***\n`);
  t.skip(`SKIPPED: ${why}`);
  return false;
}

/** An MBR (sector 0) with Linux partitions p1..p3. */
function mbr(parts: { start: number; count: number }[]): Buffer {
  const b = Buffer.alloc(SECTOR);
  b.writeUInt32LE(0x76746b62, 440); // disk signature
  parts.forEach((p, i) => {
    const at = 446 + 16 * i;
    b[at] = 0;
    b.set([0xfe, 0xff, 0xff], at + 1); // CHS: use LBA
    b[at + 4] = 0x83;
    b.set([0xfe, 0xff, 0xff], at + 5);
    b.writeUInt32LE(p.start, at + 8);
    b.writeUInt32LE(p.count, at + 12);
  });
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

/** The test image: MBR, an empty host-made ext4 in p1 (label "host"), zeroes in p2, FILLER in p3. */
function makeImage(file: string): Buffer {
  const img = Buffer.alloc(IMAGE_BYTES);
  mbr([P1, P2, P3]).copy(img, 0);
  const part = `${file}.p1`;
  writeFileSync(part, Buffer.alloc(0));
  const r = spawnSync('mkfs.ext4', ['-q', '-F', '-L', 'host', '-E', 'nodiscard', part, `${(P1.count * SECTOR) / 1024}k`], { encoding: 'utf8' });
  assert.equal(r.status, 0, `mkfs.ext4: ${r.stderr}`);
  const fs1 = readFileSync(part);
  assert.ok(fs1.length <= P1.count * SECTOR);
  fs1.copy(img, P1.start * SECTOR);
  img.fill(FILLER, P3.start * SECTOR);
  writeFileSync(file, img);
  return img;
}

/** Copies partition `p` of `image` into its own file (for e2fsck and debugfs). */
function extract(image: Buffer, p: { start: number; count: number }, file: string): string {
  writeFileSync(file, image.subarray(p.start * SECTOR, (p.start + p.count) * SECTOR));
  return file;
}

/**
 * The guest's script (busybox sh). `cpus` > 1: writes alternate between CPUs (taskset), so
 * blk-mq sends them down different request queues, and the per-queue counts are printed.
 */
function guestScript(cpus: number): string {
  const writes = WRITES.map((w) => `${w.sector}:${w.bs}:${w.count}`).join(' ');
  // Compact: QEMU passes it base64 on the kernel command line (2048 bytes in all).
  return [
    'd=/dev/vda;e(){ echo "ERROR: $*";dmesg|tail -5;umount /m1 /m2 2>/dev/null;exit 1;}',
    'echo "serial=$(cat /sys/block/vda/serial)"',
    GUEST_PATTERN_FUNCTION,
    `c=1;for w in ${writes};do s=\${w%%:*};x=\${w#*:};b=\${x%%:*};n=\${x#*:}`,
    `T=;[ ${cpus} -gt 1 ]&&T="taskset $c"&&c=$((3-c))`,
    'p o$s $((b*n)) >/tmp/p;k=$((s*512/b))',
    '$T dd if=/tmp/p of=$d bs=$b seek=$k count=$n oflag=direct conv=notrunc 2>/dev/null||e "write at $s"',
    '$T dd if=$d of=/tmp/r bs=$b skip=$k count=$n iflag=direct 2>/dev/null||e "read at $s";cmp -s /tmp/p /tmp/r||e "data at $s";echo "raw $s ok"',
    'done',
    'mkdir -p /m1 /m2;mount -t ext4 ${d}1 /m1||e mount1',
    'echo "written by the guest on ext4">/m1/hello.txt;p big '+BIG_BYTES+' >/m1/big.bin;mkdir /m1/dir;for i in 1 2 3 4 5;do echo "file $i">/m1/dir/f$i;done',
    'sync;umount /m1||e umount1;echo fs1 ok',
    'mke2fs -F -L guest ${d}2 >/dev/null||e mke2fs;mount -t ext4 ${d}2 /m2||e mount2',
    'p g2 300000 >/m2/g2.bin;echo "written by the guest on ext2">/m2/hello.txt;sync;umount /m2||e umount2;echo fs2 ok',
    // used-buffer notifications per request queue (virtio-pci gives each queue its MSI-X vector)
    `[ ${cpus} -gt 1 ]&&grep -E "virtio[0-9]+-req" /proc/interrupts|awk '{s=0;for(i=2;i<=NF-3;i++)s+=$i;print "irq",$NF,s}'`,
    'dmesg|grep -iE "I/O error|blk_update|critical medium|EXT4-fs error|Buffer I/O"&&e "I/O errors in dmesg";echo "queues=$(ls /sys/block/vda/mq|tr "\\n" " ")"',
  ].join('\n');
}

/** The host's checks of the image after the guest wrote it. */
function checkImage(before: Buffer, imageFile: string, label: string): void {
  const img = readFileSync(imageFile);
  assert.equal(img.length, IMAGE_BYTES);
  // The MBR and the gap before p1: unchanged.
  assert.ok(img.subarray(0, P1.start * SECTOR).equals(before.subarray(0, P1.start * SECTOR)), `${label}: sectors 0..${P1.start - 1} changed`);
  // vda3: every byte written at the offsets, the filler everywhere else.
  const want = Buffer.alloc(P3.count * SECTOR, FILLER);
  for (const w of WRITES) hostPattern(`o${w.sector}`, w.bs * w.count).copy(want, (w.sector - P3.start) * SECTOR);
  const got = img.subarray(P3.start * SECTOR);
  if (!got.equals(want)) {
    const at = got.findIndex((b, i) => b !== want[i]);
    assert.fail(`${label}: vda3 differs first at byte ${at} (sector ${P3.start + Math.floor(at / SECTOR)}): got ${got.subarray(at, at + 24).toString('latin1')}, want ${want.subarray(at, at + 24).toString('latin1')}`);
  }
  // vda1 (host-made ext4, journal) and vda2 (guest-made): clean, with the guest's files.
  const f1 = extract(img, P1, path.join(tmp.dir, `${label}-p1.img`));
  assertFsckClean(f1);
  assert.equal(debugfsCat(f1, '/hello.txt').toString(), 'written by the guest on ext4\n');
  assert.ok(debugfsCat(f1, '/big.bin').equals(hostPattern('big', BIG_BYTES)), `${label}: /big.bin on vda1`);
  for (let i = 1; i <= 5; i++) assert.equal(debugfsCat(f1, `/dir/f${i}`).toString(), `file ${i}\n`);
  const f2 = extract(img, P2, path.join(tmp.dir, `${label}-p2.img`));
  assertFsckClean(f2);
  assert.equal(debugfsCat(f2, '/hello.txt').toString(), 'written by the guest on ext2\n');
  assert.ok(debugfsCat(f2, '/g2.bin').equals(hostPattern('g2', 300000)), `${label}: /g2.bin on vda2`);
  const label2 = spawnSync('dumpe2fs', ['-h', f2], { encoding: 'utf8' }).stdout;
  assert.match(label2, /Filesystem volume name:\s+guest/);
}

test('--read-only, below Linux: a write sent anyway gets VIRTIO_BLK_S_IOERR from the daemon, reads and FLUSH work, the image is unchanged', { timeout: 30_000 }, async () => {
  // Linux never sends a write to a disk with VIRTIO_BLK_F_RO (EPERM above the driver, see the
  // guest tests); the TypeScript driver does, to show the device refuses it itself (§5.2.6.2).
  const image = path.join(tmp.dir, 'ro-direct.img');
  const socket = path.join(tmp.dir, 'ro-direct.sock');
  const bytes = randomBytes(MiB);
  writeFileSync(image, bytes);
  const daemon = await spawnBlkDaemon(socket, image, ['--read-only']);
  let client: BlkClient | null = null;
  try {
    client = await BlkClient.connect({ socketPath: socket });
    assert.equal(client.readOnly, true, 'VIRTIO_BLK_F_RO offered');
    const w = await client.write(8, Buffer.alloc(4096, 0x11));
    assert.deepEqual(w, { status: BlkStatus.IOERR, len: 1 });
    const rd = await client.read(8, 4096);
    assert.equal(rd.status, BlkStatus.OK);
    assert.ok(Buffer.from(rd.data).equals(bytes.subarray(8 * SECTOR, 8 * SECTOR + 4096)));
    assert.equal((await client.flush()).status, BlkStatus.OK);
  } finally {
    client?.close();
    assert.deepEqual(await daemon.kill('SIGTERM'), { code: 0, signal: null });
  }
  assert.ok(readFileSync(image).equals(bytes), 'the image is unchanged');
  assert.deepEqual(daemon.stderr, []);
});

type Result = { exitCode: number | null; lines: string[]; bootLines: string[]; timedOut: boolean };
const show = (r: Result): string => `exit=${r.exitCode} timedOut=${r.timedOut}\nlines:\n${r.lines.join('\n')}\nboot:\n${r.bootLines.slice(-30).join('\n')}`;
/** Console lines without kernel messages (`[    1.234] ...`), which interleave. */
const userLines = (r: Result): string[] => programLines(r.lines);

for (const machine of ['uml', 'qemu'] as const) {
  describe(`virtio-blk on ${machine === 'uml' ? 'User-Mode Linux' : 'QEMU 7.2'} with Linux's own virtio_blk`, () => {
    const cpus = machine === 'qemu' ? 2 : 1;
    const need = (t: { skip: (m: string) => void }): { uml: UmlGuest | null; qemu: QemuGuest | null } | null => {
      const g = machine === 'uml' ? { uml: needGuest(t), qemu: null } : { uml: null, qemu: needQemuGuest(t) };
      if (!g.uml && !g.qemu) return null;
      return needE2fs(t) ? g : null;
    };
    const boot = (g: { uml: UmlGuest | null; qemu: QemuGuest | null }, socket: string, script: string): Promise<Result> =>
      g.uml
        ? runUml({ guest: g.uml, socket, deviceId: 2, memMiB: 128, command: ['sh', '-c', script], timeoutMs: 120_000 })
        : runQemu({ guest: g.qemu!, cpus, vhostUser: [{ socket, device: 'vhost-user-blk-pci,num-queues=2' }], command: ['sh', '-c', script], timeoutMs: 150_000 });

    it('the virtio-backend daemon (2 queues): O_DIRECT writes at offsets read back, files on a host-made ext4 and a guest-made ext2; the host checks every byte, e2fsck, debugfs', { timeout: 200_000 }, async (t) => {
      const g = need(t);
      if (!g) return;
      const image = path.join(tmp.dir, `${machine}.img`);
      const socket = path.join(tmp.dir, `${machine}.sock`);
      const before = makeImage(image);
      const daemon = await spawnBlkDaemon(socket, image, ['--num-queues', '2', '--serial', `vt-${machine}`]);
      let r: Result;
      const started = Date.now();
      try {
        r = await boot(g, socket, guestScript(cpus));
      } finally {
        assert.deepEqual(await daemon.kill('SIGTERM'), { code: 0, signal: null });
      }
      t.diagnostic(`guest run took ${Date.now() - started} ms`);
      assert.equal(r.timedOut, false, show(r));
      assert.equal(r.exitCode, 0, show(r));
      const text = userLines(r);
      assert.equal(text[0], `serial=vt-${machine}`, show(r)); // GET_ID
      for (const w of WRITES) assert.ok(text.includes(`raw ${w.sector} ok`), show(r));
      assert.ok(text.includes('fs1 ok') && text.includes('fs2 ok'), show(r));
      if (cpus > 1) {
        // Both request queues were set up and carried requests.
        assert.ok(text.includes('queues=0 1 '), show(r));
        for (const q of [0, 1]) {
          const m = new RegExp(`^irq virtio\\d+-req\\.${q} (\\d+)$`).exec(text.find((l) => new RegExp(`^irq virtio\\d+-req\\.${q} `).test(l)) ?? '');
          assert.ok(m && Number(m[1]) > 0, `queue ${q} completed requests (its interrupt fired)\n${show(r)}`);
          t.diagnostic(`request queue ${q}: ${m[1]} interrupts`);
        }
      } else {
        assert.ok(text.includes('queues=0 '), show(r));
      }
      assertNoKernelTrouble([...r.lines, ...r.bootLines]);
      assert.ok(daemon.stdout.some((l) => /front-end 1 connected/.test(l)), daemon.stdout.join('\n'));
      assert.deepEqual(daemon.stderr, [], 'no diagnostics from the daemon');
      checkImage(before, image, machine);
    });

    it('--read-only: /sys/block/vda/ro is 1, reads work, writes fail, the image is unchanged', { timeout: 200_000 }, async (t) => {
      const g = need(t);
      if (!g) return;
      const image = path.join(tmp.dir, `${machine}-ro.img`);
      const socket = path.join(tmp.dir, `${machine}-ro.sock`);
      const bytes = randomBytes(8 * MiB);
      writeFileSync(image, bytes);
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      const daemon = await spawnBlkDaemon(socket, image, ['--read-only', '--num-queues', '2']);
      let r: Result;
      try {
        r = await boot(
          g,
          socket,
          [
            'd=/dev/vda;echo "ro=$(cat /sys/block/vda/ro) size=$(cat /sys/block/vda/size)"',
            'echo "sha=$(dd if=$d bs=64k iflag=direct 2>/dev/null|sha256sum|cut -d" " -f1)"',
            'head -c 4096 /dev/zero >/tmp/z',
            'for f in oflag=direct conv=fsync;do dd if=/tmp/z of=$d bs=4096 count=1 seek=3 $f 2>/tmp/err&&echo "write $f succeeded"||echo "write $f failed: $(grep -o "[A-Z][a-z -]*$" /tmp/err|tail -1)";done',
            'blockdev --setrw $d 2>/dev/null;dd if=/tmp/z of=$d bs=4096 count=1 oflag=direct 2>/dev/null&&echo "write after setrw succeeded"||echo "write after setrw failed"',
            'mkdir /m;mount -t ext4 $d /m 2>/dev/null&&echo mounted||echo "no mount"',
            'sync;dmesg|grep -ciE "I/O error"|sed "s/^/io errors in dmesg: /"',
          ].join('\n'),
        );
      } finally {
        assert.deepEqual(await daemon.kill('SIGTERM'), { code: 0, signal: null });
      }
      assert.equal(r.exitCode, 0, show(r));
      const text = userLines(r);
      t.diagnostic(text.join(' | '));
      assert.equal(text[0], `ro=1 size=${(8 * MiB) / SECTOR}`, show(r));
      assert.equal(text[1], `sha=${sha(bytes)}`, show(r));
      // Linux refuses writes to a disk whose device offers VIRTIO_BLK_F_RO (set_disk_ro): EPERM.
      for (const f of ['oflag=direct', 'conv=fsync']) assert.match(text.find((l) => l.startsWith(`write ${f}`)) ?? '', /failed: (Operation not permitted|Read-only file system|I\/O error)/, show(r));
      assert.ok(text.includes('write after setrw failed'), show(r));
      assert.ok(text.includes('no mount'), show(r));
      assertNoKernelTrouble([...r.lines, ...r.bootLines]);
      assert.ok(readFileSync(image).equals(bytes), 'the image is unchanged');
      assert.deepEqual(daemon.stderr, []);
    });

    it(`\`virtio --machine ${machine} --device blk --image F --num-queues 2\`: the demo passes, the image is unchanged`, { timeout: 200_000 }, async (t) => {
      const g = need(t);
      if (!g) return;
      const image = path.join(tmp.dir, `${machine}-cli.img`);
      const bytes = randomBytes(4 * MiB);
      writeFileSync(image, bytes);
      const r = spawnSync(process.execPath, [cliPath('virtio'), '--machine', machine, '--device', 'blk', '--image', image, '--num-queues', '2'], {
        encoding: 'utf8',
        timeout: 190_000,
      });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      const lines = r.stdout.split('\n').filter((l) => l.startsWith('blk: '));
      assert.deepEqual(
        lines,
        [
          `blk: /dev/vda: ${(4 * MiB) / SECTOR} sectors (${4 * MiB} bytes), read-only 0`,
          'blk: wrote 65536 bytes with O_DIRECT, read them back and verified them',
          'blk: flush ok (fsync)',
          'blk: discard ok',
          'blk: original contents restored',
        ],
        r.stdout,
      );
      assert.equal(r.stderr, '');
      assert.ok(readFileSync(image).equals(bytes), 'the image is unchanged (the demo restores what it wrote)');
    });
  });
}


describe('virtio-blk on QEMU 7.2 over packed virtqueues (packed=on)', () => {
  it('the virtio-backend daemon (2 queues, packed): the guest negotiated VIRTIO_F_RING_PACKED; the same writes, file systems and host checks as over split rings', { timeout: 200_000 }, async (t) => {
    const qemu = needQemuGuest(t);
    if (!qemu || !needE2fs(t)) return;
    const image = path.join(tmp.dir, 'qemu-packed.img');
    const socket = path.join(tmp.dir, 'qemu-packed.sock');
    const before = makeImage(image);
    // --packed: the daemon offers VIRTIO_F_RING_PACKED (off by default, see docs/vhost-user.md).
    const daemon = await spawnBlkDaemon(socket, image, ['--packed', '--num-queues', '2', '--serial', 'vt-packed']);
    let r: Result;
    try {
      r = await runQemu({
        guest: qemu,
        cpus: 2,
        vhostUser: [{ socket, device: 'vhost-user-blk-pci,num-queues=2', packed: true }],
        // The disk's virtio device is /sys/block/vda/device; its `features` has one 0/1 per bit,
        // bit 0 first (drivers/virtio/virtio.c features_show): character 35 is bit 34. (The
        // script is near the kernel command line's limit: one short line.)
        command: ['sh', '-c', `echo "packed=$(cut -c35 /sys/block/vda/device/features)"\n${guestScript(2)}`],
        timeoutMs: 150_000,
      });
    } finally {
      assert.deepEqual(await daemon.kill('SIGTERM'), { code: 0, signal: null });
    }
    assert.equal(r.timedOut, false, show(r));
    assert.equal(r.exitCode, 0, show(r));
    const text = userLines(r);
    t.diagnostic(`guest sysfs: ${text[0]}`);
    assert.equal(text[0], 'packed=1', `VIRTIO_F_RING_PACKED (bit 34) negotiated\n${show(r)}`);
    assert.equal(text[1], 'serial=vt-packed', show(r));
    for (const w of WRITES) assert.ok(text.includes(`raw ${w.sector} ok`), show(r));
    assert.ok(text.includes('fs1 ok') && text.includes('fs2 ok'), show(r));
    assert.ok(text.includes('queues=0 1 '), show(r));
    for (const q of [0, 1]) {
      const m = new RegExp(`^irq virtio\\d+-req\\.${q} (\\d+)$`).exec(text.find((l) => new RegExp(`^irq virtio\\d+-req\\.${q} `).test(l)) ?? '');
      assert.ok(m && Number(m[1]) > 0, `queue ${q} completed requests (its interrupt fired)\n${show(r)}`);
    }
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
    // The daemon warns once per GET_INFLIGHT_FD that packed rings are not tracked in the inflight buffer (docs/vhost-user.md).
    assert.deepEqual(
      daemon.stderr.filter((l) => !/packed rings are not tracked in the inflight buffer/.test(l)),
      [],
      'no other diagnostics from the daemon',
    );
    checkImage(before, image, 'qemu-packed');
  });
});
