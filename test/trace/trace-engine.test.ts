/**
 * A second, independent parser for our Chrome traces: the trace engine of Chrome DevTools'
 * performance panel (@paulirish/trace_engine, a devDependency), in Node. It reads a trace
 * `virtio --trace-file` wrote, beside our own schema check (test/helpers/chrome-trace.ts).
 *
 * What its data model shows of a trace that is not a web page's: the process and thread names
 * (Meta handler), and, with its own begin/end pairing (Helpers.Trace), our async spans. Its
 * handlers take only 'I' instants and 'B'/'E'/'X' slices into their thread trees, and
 * counters only from Chrome's own events: our 'i' instants and 'C' counters (what Perfetto
 * shows) are not in its model, which the last assertions record.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import * as TraceEngine from '@paulirish/trace_engine';
import { CONTROL_TID, DEVICE_PID, DRIVER_PID } from '../../src/trace/chrome.js';
import { cliPath } from '../helpers/paths.js';
import { checkChromeTrace, type TraceEventJson } from '../helpers/chrome-trace.js';

const dir = mkdtempSync(path.join(tmpdir(), 'virtio-trace-engine-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The engine wants the browser's DOMRect (its README: "polyfill window.DOMRect" in Node). */
function polyfillDOMRect(): void {
  const g = globalThis as { DOMRect?: unknown };
  if (g.DOMRect) return;
  g.DOMRect = class DOMRect {
    constructor(
      public x = 0,
      public y = 0,
      public width = 0,
      public height = 0,
    ) {}
    get top() {
      return this.y;
    }
    get left() {
      return this.x;
    }
    get right() {
      return this.x + this.width;
    }
    get bottom() {
      return this.y + this.height;
    }
  };
}

const REQUESTS = 5;

describe('our Chrome trace in the DevTools trace engine', () => {
  it('`virtio --count 5 --trace-file`: the engine parses it, names our processes and threads, pairs our request spans', async () => {
    const file = path.join(dir, 't.json');
    const r = spawnSync(process.execPath, [cliPath('virtio'), '--quiet', '--count', String(REQUESTS), '--trace', '*', '--trace-file', file, '10'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: TraceEventJson[] };
    assert.deepEqual(checkChromeTrace(doc), [], 'our own schema check');

    polyfillDOMRect();
    const processor = TraceEngine.Processor.TraceProcessor.createWithAllHandlers();
    // The engine takes its events as its own type; ours are plain trace-event objects.
    await processor.parse(doc.traceEvents as never, { isFreshRecording: false, isCPUProfile: false });
    const data = processor.data;
    assert.ok(data, 'parsed without error');
    const meta = data.Meta;
    assert.equal(meta.traceIsGeneric, true, 'not a web page: a generic trace');
    // Processes and threads, as the metadata events name them.
    const names = new Map([...meta.processNames].map(([pid, e]) => [pid, e.args.name]));
    assert.equal(names.get(DRIVER_PID as never), 'guest: virtio driver');
    assert.equal(names.get(DEVICE_PID as never), 'device: virtio-test');
    const threads = (pid: number) =>
      [...(meta.threadsInProcess.get(pid as never) ?? new Map())].map(([tid, e]) => `${tid} ${(e as { args: { name: string } }).args.name}`).sort();
    assert.deepEqual(threads(DRIVER_PID), ['1 vq 0']);
    assert.deepEqual(threads(DEVICE_PID), [`1 vq 0`, `${CONTROL_TID} control`].sort());

    // Our async spans, paired by the engine's own matching (cat, id, name), in time order.
    const asyncEvents = doc.traceEvents.filter((e) => e.ph === 'b' || e.ph === 'e').sort((a, b) => a.ts! - b.ts!);
    const spans = TraceEngine.Helpers.Trace.createMatchedSortedSyntheticEvents(asyncEvents as never) as unknown as { name: string; cat: string; pid: number; ts: number; dur: number }[];
    const count = (name: string, pid: number) => spans.filter((s) => s.name === name && s.pid === pid).length;
    assert.equal(count('request', DRIVER_PID), REQUESTS, 'a request span per request (vring_add → virtqueue_get_buf)');
    assert.equal(count('in device', DEVICE_PID), REQUESTS, 'an in-device span per request (virtqueue_pop → virtqueue_fill)');
    assert.ok(spans.every((s) => s.dur >= 0));
    // Each device pass lies within a request (ids repeat across requests: pair by time).
    for (const d of spans.filter((s) => s.name === 'in device')) {
      assert.ok(
        spans.some((q) => q.name === 'request' && q.ts <= d.ts && q.ts + q.dur >= d.ts + d.dur),
        `in device at ${d.ts} within a request`,
      );
    }

    // What its model leaves out: our lowercase 'i' instants (it takes 'I') and our counters.
    const instants = doc.traceEvents.filter((e) => e.ph === 'i').length;
    assert.ok(instants > 10 * REQUESTS);
    assert.equal(data.Renderer.processes.size, 0, 'no thread tree built from our instants');
    assert.equal(Number.isFinite(meta.traceBounds.min), false, "no trace bounds: it bounds traces by 'B'/'E'/'X'/'I' events only");
  });
});
