/**
 * QEMU 7.2's vhost-user-blk reconnecting to a restarted back-end in the middle of the guest's
 * writes. QEMU runs with `-chardev socket,...,reconnect=1`; the guest (Linux 6.1's virtio_blk,
 * two vCPUs, two request queues) streams deterministic data with `dd oflag=direct` (four dd at
 * once, two per CPU, each rewriting its region from two alternating sources for 10 s and
 * reading every pass back with O_DIRECT). The host kills the `virtio-backend --device blk` daemon with SIGKILL
 * while the streams run and starts a new one on the same socket and image; QEMU reconnects,
 * hands the new daemon the inflight buffer it got from the first one (GET/SET_INFLIGHT_FD,
 * VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) and sets each ring's base to its used index; the new
 * daemon resubmits the requests its predecessor had taken and not completed. The first kill
 * comes at a random moment, the next ones are aimed at requests in flight (see the killer),
 * until a restarted daemon has resubmitted something.
 *
 * The guest's writes must all finish with no error (dd's status, no I/O error in dmesg), every
 * pass must read back as written, the sources' checksums the guest printed must be the host's,
 * and the host checks every byte of the image. The daemons run with --direct (O_DIRECT), so each write spends longer in
 * the daemon and a kill is more likely to find requests in flight.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { runQemu } from '../../src/machine/qemu.js';
import { assertNoBlkDaemonLeft, spawnBlkDaemon, type BlkDaemon } from '../helpers/blk.js';
import { assertNoQemuLeft, needQemuGuest } from '../helpers/qemu.js';
import { assertNoKernelTrouble, programLines, scratchDir } from '../helpers/uml.js';

after(() => {
  assertNoQemuLeft();
  assertNoBlkDaemonLeft();
});

const MiB = 1024 * 1024;
const IMAGE_BYTES = 16 * MiB;
const STREAMS = 4;
/** Each stream's region of the disk, and the size of its two sources. */
const STREAM_BYTES = 1 * MiB;
/** dd block size of stream i: 1 MiB writes for 0 and 1 (more than one request each: seg_max 254), 64 KiB for 2 and 3. */
const blockSize = (i: number) => (i < 2 ? MiB : 64 * 1024);
/** Seconds each stream keeps writing (guest clock). */
const STREAM_SECONDS = 10;
/** Aimed kills at most (see below). */
const AIMED_KILLS = 4;
/** The restarted daemons' reconnection notes. */
const resubmissions = (daemons: BlkDaemon[]): string[] =>
  daemons.slice(1).flatMap((d) => d.stderr.filter((l) => /resubmitting \d+ request|next available index/.test(l)));
const FILLER = 0xa5;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const LINES = Math.ceil(STREAM_BYTES / 9) + 1;

/**
 * Source k (0, 1) of stream i: the numbers 10000000, 10000001, … one a line (9 bytes), cut at
 * STREAM_BYTES, with every digit d replaced by (d + 1 + 2i + k) mod 10 (what the guest's `tr`
 * does): eight different sources, each with no two lines alike.
 */
function streamBytes(i: number, k: number): Buffer {
  const parts: string[] = [];
  for (let n = 0; n <= LINES; n++) parts.push(`${10_000_000 + n}\n`);
  const b = Buffer.from(parts.join(''), 'latin1').subarray(0, STREAM_BYTES);
  const r = 1 + 2 * i + k;
  for (let n = 0; n < b.length; n++) if (b[n]! >= 0x30 && b[n]! <= 0x39) b[n] = 0x30 + ((b[n]! - 0x30 + r) % 10);
  return b;
}

/**
 * Each stream writes its region over and over for STREAM_SECONDS, alternating between its two
 * sources, and reads every pass back (O_DIRECT) and compares it: a write lost in a restart
 * would leave the other source's bytes and be caught at once. The last pass's source is what
 * the host finds in the image.
 */
const guestScript = [
  `d=/dev/vda;S=${STREAM_BYTES};seq 10000000 ${10_000_000 + LINES}|head -c $S >/tmp/b`,
  'for i in 0 1 2 3;do for k in 0 1;do r=$((1+2*i+k));tr 0-9 $(echo 01234567890123456789|cut -c$((r+1))-$((r+10))) </tmp/b >/tmp/s$i$k;echo "src $i $k $(sha256sum </tmp/s$i$k|cut -d" " -f1)";done;done',
  'w(){ i=$1;b=$2;n=$((S/b));o=$((i*S/b));e=$(($(date +%s)+' + STREAM_SECONDS + '));k=0;p=0',
  ' while :;do taskset $((1+i%2)) dd if=/tmp/s$i$k of=$d bs=$b seek=$o count=$n oflag=direct 2>/tmp/e$i||{ echo "stream $i: write failed: $(tail -1 /tmp/e$i)";return 1;}',
  '  dd if=$d bs=$b skip=$o count=$n iflag=direct 2>/dev/null|cmp -s - /tmp/s$i$k||{ echo "stream $i pass $p: read back differs";return 1;}',
  '  p=$((p+1));[ $(date +%s) -ge $e ]&&break;k=$((1-k));done;echo "stream $i passes=$p last=$k";}',
  'echo STREAMS-START',
  `for i in 0 1 2 3;do w $i $([ $i -lt 2 ]&&echo ${MiB}||echo ${64 * 1024}) & done;wait`,
  'echo STREAMS-DONE',
  'echo "ioerrors=$(dmesg|grep -ciE "I/O error|blk_update_request|critical")"',
].join('\n');

test('QEMU 7.2 vhost-user-blk (reconnect=1): the blk daemon SIGKILLed mid-stream (at random, then aimed at requests in flight); QEMU reconnects, a new daemon resubmits, the guest writes finish without error and the data checks out', { timeout: 240_000 }, async (t) => {
  const g = needQemuGuest(t);
  if (!g) return;
  const tmp = scratchDir('vt-blk-reconnect-');
  const image = path.join(tmp.dir, 'disk.img');
  const socket = path.join(tmp.dir, 'blk.sock');
  writeFileSync(image, Buffer.alloc(IMAGE_BYTES, FILLER));
  const args = ['--num-queues', '2', '--direct', '--trace'];
  const daemons: BlkDaemon[] = [];
  const start = async (): Promise<BlkDaemon> => {
    const d = await spawnBlkDaemon(socket, image, args);
    daemons.push(d);
    return d;
  };
  const events: string[] = [];
  const t0 = Date.now();
  const note = (what: string) => events.push(`${Date.now() - t0} ms: ${what}`);
  try {
    await start();
    let streaming = false;
    let streamsDone = false;
    let killsMidStream = 0;
    let killer: Promise<void> = Promise.resolve();
    let qemuExited = (): void => {};
    const exited = new Promise<void>((resolve) => (qemuExited = resolve));
    const r = await runQemu({
      guest: g,
      cpus: 2,
      vhostUser: [{ socket, device: 'vhost-user-blk-pci,num-queues=2', reconnectSeconds: 1 }],
      command: ['sh', '-c', guestScript],
      timeoutMs: 200_000,
      onLine: (line) => {
        if (line === 'STREAMS-START') {
          streaming = true;
          note('streams start');
          killer = (async () => {
            // The first kill at a random moment. The next ones are aimed at requests in flight:
            // the daemon is stopped (SIGSTOP) while the guest queues requests, continued, and
            // killed 0.2-2 ms later, while it works on what it found in the rings; repeated
            // (up to AIMED_KILLS) until a restarted daemon had something to resubmit.
            for (let k = 0; k <= AIMED_KILLS && !streamsDone; k++) {
              const aimed = k > 0;
              if (k >= 2 && resubmissions(daemons).length > 0) break; // at least two kills, one of them aimed
              await sleep(300 + Math.floor(Math.random() * 500));
              if (streamsDone) break;
              const victim = daemons[daemons.length - 1]!;
              if (aimed) {
                victim.proc.kill('SIGSTOP');
                await sleep(150);
                victim.proc.kill('SIGCONT');
                // A spin, not a timer: 0.2-2 ms, finer than setTimeout can wait.
                const until = process.hrtime.bigint() + BigInt(200_000 + Math.floor(Math.random() * 1_800_000));
                while (process.hrtime.bigint() < until);
              }
              victim.proc.kill('SIGKILL');
              await victim.exited;
              if (!streamsDone) killsMidStream++;
              note(`daemon ${daemons.length} killed${aimed ? ' (stopped, continued, killed)' : ''}${streamsDone ? ' after the streams' : ''}`);
              const next = await start();
              // (QEMU may have ended meanwhile if the streams just finished: then nobody connects.)
              await Promise.race([next.waitForLine(/front-end \d+ connected/, 30_000), exited]);
              await sleep(200); // the rings start (and resubmit) right after the connection's setup
              note(`daemon ${daemons.length} serves the reconnected QEMU`);
            }
          })();
        } else if (line === 'STREAMS-DONE') {
          streamsDone = true;
          note('streams done');
        }
      },
    });
    qemuExited();
    await killer;
    const show = `events:\n${events.join('\n')}\nlines:\n${r.lines.join('\n')}\nboot/QEMU:\n${r.bootLines.slice(-25).join('\n')}\ndaemons' stderr:\n${daemons
      .map((d, i) => `#${i + 1}: ${d.stderr.filter((l) => !/vhost_user_(recv|send)/.test(l) || /INFLIGHT|VRING_BASE/.test(l)).join('\n')}`)
      .join('\n')}`;
    t.diagnostic(events.join('; '));
    assert.ok(streaming, show);
    assert.equal(r.timedOut, false, show);
    assert.equal(r.exitCode, 0, show);
    assert.ok(killsMidStream >= 2, `kills while the streams ran: ${killsMidStream}\n${show}`);
    const text = programLines(r.lines);
    // Every stream kept writing through the restarts, each pass read back intact; no I/O error.
    const img = readFileSync(image);
    const passes: number[] = [];
    for (let i = 0; i < STREAMS; i++) {
      for (const k of [0, 1]) {
        const sha = createHash('sha256').update(streamBytes(i, k)).digest('hex');
        assert.ok(text.includes(`src ${i} ${k} ${sha}`), `the guest's source ${i}/${k} is the host's pattern\n${show}`);
      }
      const m = new RegExp(`^stream ${i} passes=(\\d+) last=([01])$`).exec(text.find((l) => l.startsWith(`stream ${i} passes=`)) ?? '');
      assert.ok(m, `stream ${i} finished\n${show}`);
      passes.push(Number(m[1]));
      // The image holds the last pass's source, byte for byte.
      const want = streamBytes(i, Number(m[2]));
      const got = img.subarray(i * STREAM_BYTES, (i + 1) * STREAM_BYTES);
      if (!got.equals(want)) {
        const at = got.findIndex((b, n) => b !== want[n]);
        assert.fail(`image: stream ${i} differs at byte ${at} (block ${Math.floor(at / 4096)})\n${show}`);
      }
    }
    assert.ok(text.includes('ioerrors=0'), show);
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
    assert.ok(img.subarray(STREAMS * STREAM_BYTES).every((b) => b === FILLER), 'the rest of the image is untouched');
    t.diagnostic(`passes per stream (bs ${[0, 1, 2, 3].map(blockSize).join(', ')}): ${passes.join(', ')}`);
    // QEMU negotiated INFLIGHT_SHMFD and handed every restarted daemon the inflight buffer.
    for (const [i, d] of daemons.entries()) {
      assert.ok(d.stderr.some((l) => /SET_INFLIGHT_FD/.test(l)), `daemon ${i + 1} got SET_INFLIGHT_FD\n${show}`);
    }
    const resubmitted = resubmissions(daemons);
    t.diagnostic(`${daemons.length} daemons, ${killsMidStream} killed mid-stream; restarted daemons: ${resubmitted.join(' | ') || 'nothing was in flight at the kills'}`);
    // QEMU 7.2 kept the inflight buffer across the reconnection and a restarted daemon resubmitted from it.
    assert.ok(resubmitted.some((l) => /resubmitting [1-9]\d* request/.test(l)), `a restarted daemon resubmitted requests in flight\n${show}`);
    // Only the reconnection notes and the trace on the daemons' stderr.
    const other = daemons.flatMap((d) => d.stderr.filter((l) => !/vhost_user_(recv|send)|resubmitting \d+ request|next available index \d+ from the inflight buffer/.test(l)));
    assert.deepEqual(other, [], 'daemon diagnostics');
  } finally {
    for (const d of daemons) await d.kill();
    tmp.remove();
  }
});
