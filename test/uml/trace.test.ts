// The daemon's --trace while it serves a real Linux guest (User-Mode Linux running the seed's
// `virtio 10` through our C driver and virtio_uml): the vhost-user messages decoded by name and
// the ring events of the one request, in causal order, on stderr; and --trace-file: a Chrome
// JSON file that passes the schema check and draws (virtio trace-svg, a device-only trace).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { runUml } from '../../src/machine/uml.js';
import { renderSequenceSvg } from '../../src/trace/sequence-svg.js';
import { checkChromeTrace, type TraceEventJson } from '../helpers/chrome-trace.js';
import { assertNoKernelTrouble, assertNothingLeftRunning, driverLinesFor, needGuest, scratchDir, spawnBackendCli, stripTimestamp, type CliBackend } from '../helpers/uml.js';

after(assertNothingLeftRunning);

const TRACED = 'vhost_user_recv,virtqueue_*,virtio_queue_notify,virtio_notify*,virtio_set_status';
const LINE = /^\d+\.\d{6} main [a-z_]+( [a-z_]+=\S+)*$/;

/** Serves one `virtio 10` in a UML guest with `virtio-test-backend ...args`; returns the daemon's stderr after SIGTERM. */
async function serveOne(socket: string, args: string[], g: NonNullable<ReturnType<typeof needGuest>>): Promise<string[]> {
  let be: CliBackend | null = null;
  try {
    be = await spawnBackendCli(socket, args);
    const r = await runUml({ guest: g, socket, command: ['virtio', '10'], timeoutMs: 60_000 });
    const show = `guest:\n${r.lines.join('\n')}\nboot:\n${r.bootLines.slice(-20).join('\n')}\ndaemon:\n${be.stderr.slice(-40).join('\n')}`;
    assert.equal(r.exitCode, 0, show);
    const guest = r.lines.map(stripTimestamp);
    for (const want of driverLinesFor(10)) assert.ok(guest.includes(want), `${want}\n${show}`);
    assertNoKernelTrouble([...r.lines, ...r.bootLines]);
    await be.waitForLine(/disconnected/, 15_000);
    be.proc.kill('SIGTERM');
    assert.deepEqual(await be.exited, { code: 0, signal: null }, be.stderr.join('\n'));
    return be.stderr;
  } finally {
    await be?.kill();
  }
}

test('virtio-test-backend --trace serving a UML guest: vhost-user messages by name, then the request\'s ring events in order, on stderr', { timeout: 180_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const tmp = scratchDir('vt-uml-trace-');
  try {
    const stderr = await serveOne(path.join(tmp.dir, 'vt.sock'), ['--trace', TRACED], g);
    const lines = stderr.filter((l) => /^\d+\.\d{6} /.test(l));
    for (const l of lines) assert.match(l.replace(/payload="[^"]*"/, 'payload=x'), LINE);
    const names = lines.map((l) => l.split(' ')[2]!);
    t.diagnostic(`${lines.length} trace lines: ${[...new Set(names)].join(', ')}`);
    // The front-end's setup, decoded by name (virtio_uml's order: features, memory, rings).
    const requests = lines.filter((l) => / vhost_user_recv /.test(l)).map((l) => / request=([A-Z_]+)/.exec(l)?.[1]);
    for (const want of ['GET_FEATURES', 'SET_FEATURES', 'SET_MEM_TABLE', 'SET_VRING_NUM', 'SET_VRING_ADDR', 'SET_VRING_KICK', 'SET_VRING_CALL']) {
      assert.ok(requests.includes(want), `${want} among ${requests.join(' ')}`);
    }
    // The one request: popped once, filled with the 12-byte answer, published, notified.
    assert.equal(names.filter((n) => n === 'virtqueue_pop').length, 1, lines.join('\n'));
    const at = (re: RegExp, from = 0) => lines.findIndex((l, i) => i >= from && re.test(l));
    const kick = at(/ request=SET_VRING_KICK /);
    const pop = at(/ main virtqueue_pop vq=0 elem=\d+ in_num=1 out_num=1$/);
    const fill = at(/ main virtqueue_fill vq=0 elem=\d+ len=12 idx=\d+$/, pop);
    const flush = at(/ main virtqueue_flush vq=0 count=1 used_idx=\d+$/, fill);
    const notify = at(/ main virtio_notify vdev=\d+ vq=0 used_idx=\d+$/, flush);
    assert.ok(kick >= 0 && kick < pop && pop < fill && fill < flush && flush < notify, `order kick ${kick} pop ${pop} fill ${fill} flush ${flush} notify ${notify}:\n${lines.join('\n')}`);
    const times = lines.map((l) => Number(l.split(' ')[0]));
    assert.ok(times.every((x, i) => i === 0 || x >= times[i - 1]!), 'one clock, in order');
  } finally {
    tmp.remove();
  }
});

test('virtio-test-backend --trace-file serving a UML guest: valid Chrome JSON with the request\'s span, drawn by trace-svg', { timeout: 180_000 }, async (t) => {
  const g = needGuest(t);
  if (!g) return;
  const tmp = scratchDir('vt-uml-trace-file-');
  try {
    const file = path.join(tmp.dir, 'daemon.json');
    const stderr = await serveOne(path.join(tmp.dir, 'vt.sock'), ['--trace', TRACED, '--trace-file', file], g);
    assert.deepEqual(stderr.filter((l) => /^\d+\.\d{6} /.test(l)), [], 'no text lines with a file');
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEventJson[] };
    assert.deepEqual(checkChromeTrace(doc), []);
    assert.equal(doc.traceEvents.filter((e) => e.ph === 'b' && e.cat === 'device').length, 1, 'one "in device" span');
    assert.ok(doc.traceEvents.some((e) => e.name === 'vhost_user_recv' && e.args?.['request'] === 'SET_VRING_ADDR'));
    const svg = renderSequenceSvg(doc);
    const drawn = [...svg.matchAll(/<g class="event" data-name="([a-z_]+)"/g)].map((m) => m[1]);
    assert.deepEqual(drawn.slice(0, 3), ['virtqueue_pop', 'virtqueue_fill', 'virtqueue_flush']);
  } finally {
    tmp.remove();
  }
});
