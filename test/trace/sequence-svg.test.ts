/** The trace's picture: `virtio trace-svg` (src/trace/sequence-svg.ts), a sequence diagram of a --trace-file trace. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { registerTraceDecoders } from '../../src/cli/trace-options.js';
import { CONTROL_TID, ChromeTraceConsumer, DEVICE_PID, DRIVER_PID } from '../../src/trace/chrome.js';
import { EVENTS, TRACE } from '../../src/trace/events.js';
import { TraceSvgError, renderSequenceSvg } from '../../src/trace/sequence-svg.js';
import { cliPath, repoRoot } from '../helpers/paths.js';
import { withTracing } from '../helpers/trace-recorder.js';

const dir = mkdtempSync(path.join(tmpdir(), 'virtio-trace-svg-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A strict XML well-formedness check (what an SVG viewer's parser insists on): one root, tags
 * nested and closed, attributes quoted and unique, only the predefined and numeric entities,
 * no stray `<` or `&`. Returns the problem, or undefined.
 */
function xmlProblem(text: string): string | undefined {
  const stack: string[] = [];
  let roots = 0;
  let i = text.startsWith('<?xml') ? text.indexOf('?>') + 2 : 0;
  const entities = /^&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/;
  const checkText = (s: string, at: number): string | undefined => {
    for (let k = s.indexOf('&'); k >= 0; k = s.indexOf('&', k + 1)) if (!entities.test(s.slice(k))) return `bad entity at ${at + k}`;
    return undefined;
  };
  while (i < text.length) {
    const lt = text.indexOf('<', i);
    const chunk = lt < 0 ? text.slice(i) : text.slice(i, lt);
    const bad = checkText(chunk, i);
    if (bad) return bad;
    if (stack.length === 0 && chunk.trim() !== '') return `text outside the root at ${i}`;
    if (lt < 0) break;
    const gt = text.indexOf('>', lt);
    if (gt < 0) return `unclosed tag at ${lt}`;
    const tag = text.slice(lt + 1, gt);
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim();
      if (stack.pop() !== name) return `</${name}> at ${lt} closes nothing open`;
    } else {
      const selfClosing = tag.endsWith('/');
      const body = selfClosing ? tag.slice(0, -1) : tag;
      const m = /^([A-Za-z_][\w.:-]*)((?:\s+[\w.:-]+="[^"<]*")*)\s*$/.exec(body);
      if (!m) return `malformed tag <${tag.slice(0, 60)}> at ${lt}`;
      const names = [...m[2]!.matchAll(/([\w.:-]+)="([^"]*)"/g)].map((a) => {
        const bad = checkText(a[2]!, lt);
        if (bad) throw new Error(bad);
        return a[1]!;
      });
      if (new Set(names).size !== names.length) return `duplicate attribute in <${m[1]}> at ${lt}`;
      if (stack.length === 0 && ++roots > 1) return `a second root element at ${lt}`;
      if (!selfClosing) stack.push(m[1]!);
    }
    i = gt + 1;
  }
  if (stack.length) return `unclosed <${stack.at(-1)}>`;
  return roots === 1 ? undefined : 'no root element';
}

interface SvgEvent {
  name: string;
  pid: number;
  tid: number;
  row: number;
}
const attr = (tag: string, name: string): string | undefined => new RegExp(`\\s${name}="([^"]*)"`).exec(tag)?.[1];
const events = (svg: string): SvgEvent[] =>
  [...svg.matchAll(/<g class="event"[^>]*>/g)].map(([tag]) => ({ name: attr(tag, 'data-name')!, pid: Number(attr(tag, 'data-pid')), tid: Number(attr(tag, 'data-tid')), row: Number(attr(tag, 'data-row')) }));
const arrows = (svg: string) => [...svg.matchAll(/<line class="arrow"[^>]*>/g)].map(([tag]) => `${attr(tag, 'data-kind')}: ${attr(tag, 'data-from')} → ${attr(tag, 'data-to')}`);
const lanes = (svg: string) => [...svg.matchAll(/<g class="lane"[^>]*>/g)].map(([tag]) => `${attr(tag, 'data-pid')}:${attr(tag, 'data-tid')}`);
const spans = (svg: string) => [...svg.matchAll(/<rect class="span"[^>]*>/g)].map(([tag]) => `${attr(tag, 'data-name')} vq=${attr(tag, 'data-vq')} head=${attr(tag, 'data-head')}`);

/** One request of virtio-test as the embedded machine traces it (the order of `virtio 10 --trace`), written by the real Chrome writer. */
async function knownTrace(extra?: () => void): Promise<unknown> {
  registerTraceDecoders();
  const chunks: string[] = [];
  const c = new ChromeTraceConsumer((t) => void chunks.push(t), { deviceName: 'device: virtio-test' });
  withTracing(EVENTS.map((e) => e.name), c, () => {
    TRACE.virtio_set_status.emit(1, 15);
    TRACE.vring_add.emit(0, 0, 1, 1, 1, 1);
    TRACE.virtqueue_kick.emit(0, 1, 0);
    TRACE.virtio_queue_notify.emit(1, 0);
    TRACE.virtqueue_pop.emit(0, 0, 1, 1);
    TRACE.virtqueue_fill.emit(0, 0, 12, 0);
    TRACE.virtqueue_flush.emit(0, 1, 1);
    TRACE.virtio_notify.emit(1, 0, 1);
    TRACE.virtio_mmio_setting_irq.emit(1, 1);
    TRACE.virtio_mmio_read.emit(0x60, 4, 1);
    TRACE.virtio_mmio_write_offset.emit(0x64, 1, 4);
    TRACE.virtio_mmio_setting_irq.emit(0, 0);
    TRACE.vring_interrupt.emit(0, 1);
    TRACE.virtqueue_get_buf.emit(0, 0, 12, 1);
    extra?.();
  });
  await c.close();
  return JSON.parse(chunks.join(''));
}

/** The title of the walkthrough's picture (docs/walkthrough.md). */
const WALKTHROUGH_TITLE = 'npx virtio 10 --trace-file t.json — one request, guest and device threads';

const CHAIN = ['vring_add', 'virtqueue_kick', 'virtio_queue_notify', 'virtqueue_pop', 'virtqueue_fill', 'virtqueue_flush', 'virtio_notify', 'virtio_mmio_setting_irq', 'virtio_mmio_read', 'virtio_mmio_write_offset', 'virtio_mmio_setting_irq', 'vring_interrupt', 'virtqueue_get_buf'];

describe('virtio trace-svg: the sequence diagram of a trace', () => {
  it('a known request: valid SVG, three lanes, kick and interrupt arrows, the spans, every event in causal order', async () => {
    const svg = renderSequenceSvg(await knownTrace(), { title: 'one request' });
    assert.equal(xmlProblem(svg), undefined);
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="\d+" height="\d+" viewBox="0 0 \d+ \d+"/);
    assert.deepEqual(lanes(svg), [`${DRIVER_PID}:1`, `${DEVICE_PID}:1`, `${DEVICE_PID}:${CONTROL_TID}`]);
    assert.match(svg, />guest: virtio driver</);
    assert.match(svg, />device: virtio-test</);
    assert.match(svg, />control</);
    // The request from its start (the status write before it is not drawn), one row per event, in order.
    const ev = events(svg);
    assert.deepEqual(ev.map((e) => e.name), CHAIN);
    assert.deepEqual(ev.map((e) => e.row), CHAIN.map((_, i) => i));
    const lane = (name: string) => ev.find((e) => e.name === name)!;
    assert.deepEqual([lane('vring_add').pid, lane('vring_add').tid], [DRIVER_PID, 1]);
    assert.deepEqual([lane('virtqueue_pop').pid, lane('virtqueue_pop').tid], [DEVICE_PID, 1]);
    assert.deepEqual([lane('virtio_mmio_read').pid, lane('virtio_mmio_read').tid], [DEVICE_PID, CONTROL_TID]);
    assert.deepEqual(arrows(svg), [
      'kick: virtqueue_kick → virtio_queue_notify',
      'irq: virtio_notify → vring_interrupt',
      'mmio: guest → virtio_mmio_read',
      'mmio: guest → virtio_mmio_write_offset',
    ]);
    assert.deepEqual(spans(svg), ['request vq=0 head=0', 'in device vq=0 head=0']);
    // Labels in the spec's and the registers' words.
    assert.match(svg, />mmio read InterruptStatus = 0x1</);
    assert.match(svg, />mmio write InterruptACK ← 0x1</);
    assert.match(svg, />§2\.7\.8: writes used\.ring\[idx\] = \{id, len\}</);
    assert.match(svg, />§2\.7\.13\.1–3: writes desc table, avail\.ring\[i\], avail\.idx</);
  });

  it('--from-start draws the initialisation too; N requests stop after the Nth get_buf', async () => {
    const doc = await knownTrace(() => {
      TRACE.vring_add.emit(0, 1, 1, 1, 2, 1);
      TRACE.virtqueue_kick_suppressed.emit(0, 2, 1, 0);
      TRACE.virtqueue_pop.emit(0, 1, 1, 1);
      TRACE.virtqueue_fill.emit(0, 1, 12, 1);
      TRACE.virtqueue_flush.emit(0, 1, 2);
      TRACE.virtio_notify_suppressed.emit(1, 0, 2, 1, 0);
      TRACE.virtqueue_get_buf.emit(0, 1, 12, 2);
      TRACE.vring_add.emit(0, 0, 1, 1, 3, 1); // a third request, never taken back
    });
    const all = events(renderSequenceSvg(doc, { fromStart: true }));
    assert.equal(all[0]!.name, 'virtio_set_status');
    const two = renderSequenceSvg(doc, { requests: 2 });
    assert.equal(xmlProblem(two), undefined);
    const names = events(two).map((e) => e.name);
    assert.equal(names.at(-1), 'virtqueue_get_buf');
    assert.equal(names.filter((n) => n === 'vring_add').length, 2);
    assert.deepEqual(spans(two), ['request vq=0 head=0', 'in device vq=0 head=0', 'request vq=0 head=1', 'in device vq=0 head=1']);
    // Asking for more requests than there are draws what there is, the last one to the end.
    assert.deepEqual(spans(renderSequenceSvg(doc, { requests: 9 })).filter((s) => s.startsWith('request')).length, 3);
  });

  it('a device-only trace (the daemon writes no driver side): requests from virtqueue_pop', async () => {
    const chunks: string[] = [];
    const c = new ChromeTraceConsumer((t) => void chunks.push(t));
    withTracing(EVENTS.map((e) => e.name), c, () => {
      TRACE.virtio_queue_notify.emit(1, 0);
      TRACE.virtqueue_pop.emit(0, 5, 1, 1);
      TRACE.virtqueue_fill.emit(0, 5, 12, 0);
      TRACE.virtqueue_flush.emit(0, 1, 1);
      TRACE.virtio_notify.emit(1, 0, 1);
    });
    await c.close();
    const svg = renderSequenceSvg(JSON.parse(chunks.join('')));
    assert.equal(xmlProblem(svg), undefined);
    assert.deepEqual(events(svg).map((e) => e.name), ['virtqueue_pop', 'virtqueue_fill', 'virtqueue_flush', 'virtio_notify']);
    assert.deepEqual(spans(svg), ['in device vq=0 head=5']);
  });

  it("docs/walkthrough-trace.svg is what trace-svg draws from docs/walkthrough-trace.json (the walkthrough's picture stays the renderer's)", () => {
    const doc = JSON.parse(readFileSync(path.join(repoRoot, 'docs', 'walkthrough-trace.json'), 'utf8')) as unknown;
    const svg = renderSequenceSvg(doc, { title: WALKTHROUGH_TITLE });
    assert.equal(readFileSync(path.join(repoRoot, 'docs', 'walkthrough-trace.svg'), 'utf8'), svg, `regenerate: npx virtio trace-svg docs/walkthrough-trace.json -o docs/walkthrough-trace.svg --title '${WALKTHROUGH_TITLE}'`);
    assert.deepEqual(events(svg).map((e) => e.name), CHAIN);
  });

  it('the XML check itself finds what a viewer would refuse', () => {
    assert.equal(xmlProblem('<svg><g a="1"/></svg>'), undefined);
    assert.match(xmlProblem('<svg><g></svg>')!, /closes nothing open/);
    assert.match(xmlProblem('<svg><text>a & b</text></svg>')!, /bad entity/);
    assert.match(xmlProblem('<svg a=1></svg>')!, /malformed tag/);
    assert.match(xmlProblem('<svg a="1" a="2"></svg>')!, /duplicate attribute/);
    assert.match(xmlProblem('<svg></svg><svg></svg>')!, /second root/);
    assert.match(xmlProblem('<svg>')!, /unclosed <svg>/);
  });

  it('broken input: a TraceSvgError saying what is wrong', () => {
    const refuses = (doc: unknown, msg: RegExp) => assert.throws(() => renderSequenceSvg(doc), (e: unknown) => e instanceof TraceSvgError && msg.test(e.message));
    refuses(null, /not a Chrome trace: expected an object with a traceEvents array/);
    refuses({ events: [] }, /not a Chrome trace/);
    refuses({ traceEvents: [42] }, /traceEvents\[0\] is not an object/);
    refuses({ traceEvents: [{ name: 'vring_add', ph: 'i', pid: 1, tid: 1, args: {} }] }, /traceEvents\[0\] \(vring_add\): ts is not a number/);
    refuses({ traceEvents: [{ name: 'vring_add', ph: 'i', ts: 1, pid: '1', tid: 1 }] }, /pid and tid must be integers/);
    refuses({ traceEvents: [{ name: 'x', ph: 'i', ts: 1, pid: 1, tid: 1 }] }, /no request in the trace: no vring_add .* and no virtqueue_pop/);
    assert.throws(() => renderSequenceSvg({ traceEvents: [] }, { requests: 0 }), /requests must be a positive integer/);
  });

  it('virtio trace-svg on a real run: `virtio 10 --trace-file`, then the diagram; clear errors and exit status', () => {
    const trace = path.join(dir, 't.json');
    const r = spawnSync(process.execPath, [cliPath('virtio'), '10', '--trace', '*', '--trace-file', trace], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const out = path.join(dir, 'out.svg');
    const svg = spawnSync(process.execPath, [cliPath('virtio'), 'trace-svg', trace, '-o', out, '--title', 'virtio 10'], { encoding: 'utf8' });
    assert.equal(svg.status, 0, svg.stderr);
    assert.equal(svg.stdout, '');
    const text = readFileSync(out, 'utf8');
    assert.equal(xmlProblem(text), undefined);
    const names = events(text).map((e) => e.name);
    // The chain of one request, each step after the one before (other events may sit between).
    let at = -1;
    for (const name of ['vring_add', 'virtqueue_kick', 'virtio_queue_notify', 'virtqueue_pop', 'virtqueue_fill', 'virtqueue_flush', 'virtio_notify', 'vring_interrupt', 'virtqueue_get_buf']) {
      const next = names.indexOf(name, at + 1);
      assert.ok(next > at, `${name} after ${names[at]}: ${names.join(' ')}`);
      at = next;
    }
    assert.ok(arrows(text).includes('kick: virtqueue_kick → virtio_queue_notify'));
    assert.ok(arrows(text).includes('irq: virtio_notify → vring_interrupt'));
    // To stdout without -o.
    const stdout = spawnSync(process.execPath, [cliPath('virtio'), 'trace-svg', trace, '--title', 'virtio 10'], { encoding: 'utf8' });
    assert.equal(stdout.status, 0);
    assert.equal(stdout.stdout, text);

    const bad = path.join(dir, 'bad.json');
    for (const [content, msg] of [
      ['{"traceEvents": [', /bad\.json: not JSON/],
      ['{"traceEvents": [{"name":"x","ph":"i","ts":1,"pid":1,"tid":1}]}', /bad\.json: no request in the trace/],
      ['[1]', /bad\.json: traceEvents\[0\] is not an object/],
    ] as const) {
      writeFileSync(bad, content);
      const b = spawnSync(process.execPath, [cliPath('virtio'), 'trace-svg', bad], { encoding: 'utf8' });
      assert.equal(b.status, 1, content);
      assert.match(b.stderr, msg);
      assert.doesNotMatch(b.stderr, /\n\s+at /, 'no stack trace');
    }
    const missing = spawnSync(process.execPath, [cliPath('virtio'), 'trace-svg', path.join(dir, 'none.json')], { encoding: 'utf8' });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /none\.json: ENOENT/);
    const usage = spawnSync(process.execPath, [cliPath('virtio'), 'trace-svg', trace, '--requests', 'x'], { encoding: 'utf8' });
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /--requests must be an integer/);
  });
});
