/** Choosing trace events QEMU's way: globs, lists, exclusions, events=FILE, and the errors. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { isTraceValue, normalizeTraceArgs, traceRequest } from '../../src/cli/trace-options.js';
import { EVENTS, TRACE, enableEvents, enabledEvents } from '../../src/trace/events.js';
import { TraceSelectionError, closeMatches, globToRegExp, parseEventsFile, selectEvents } from '../../src/trace/select.js';

const noFile = { readFile: (): string => assert.fail('no file expected') };
const select = (...values: string[]) => selectEvents(values, noFile);

describe('trace patterns', () => {
  it('globs: * any run, ? one character, anchored', () => {
    assert.deepEqual(select('virtqueue_*'), ['virtqueue_pop', 'virtqueue_fill', 'virtqueue_flush', 'virtqueue_kick', 'virtqueue_kick_suppressed', 'virtqueue_get_buf']);
    assert.deepEqual(select('virtqueue_p?p'), ['virtqueue_pop']);
    assert.deepEqual(select('*_irq*'), ['virtio_notify_irqfd', 'virtio_mmio_setting_irq']);
    assert.equal(globToRegExp('a.b').test('aXb'), false, 'a dot is a dot');
    assert.deepEqual(select('*'), EVENTS.map((e) => e.name));
  });

  it('comma-separated and repeated options add up; the result is in catalog order, without duplicates', () => {
    assert.deepEqual(select('virtio_notify,virtqueue_pop'), ['virtqueue_pop', 'virtio_notify']);
    assert.deepEqual(select('virtio_notify', 'virtqueue_pop', 'virtqueue_pop'), ['virtqueue_pop', 'virtio_notify']);
  });

  it("a leading '-' excludes, in order; only exclusions start from every event", () => {
    const all = EVENTS.map((e) => e.name);
    assert.deepEqual(select('virtio_mmio_*,-virtio_mmio_read'), ['virtio_mmio_write_offset', 'virtio_mmio_setting_irq']);
    assert.deepEqual(select('-virtio_mmio_*'), all.filter((n) => !n.startsWith('virtio_mmio_')));
    // a later positive pattern puts an excluded event back
    assert.deepEqual(select('virtio_mmio_*', '-virtio_mmio_read', 'virtio_mmio_read'), ['virtio_mmio_read', 'virtio_mmio_write_offset', 'virtio_mmio_setting_irq']);
  });

  it('events=FILE: one pattern per line, # comments and blank lines ignored', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'trace-'));
    try {
      const file = path.join(dir, 'events');
      writeFileSync(file, '# the ring, device side\nvirtqueue_pop\n\n  virtqueue_f*   # fill and flush\n-virtqueue_flush\n');
      assert.deepEqual(parseEventsFile('a\n#b\n c # d\n\n'), ['a', 'c']);
      const r = traceRequest({ trace: [`events=${file}`] }, '*');
      assert.deepEqual(r.events, ['virtqueue_pop', 'virtqueue_fill']);
      assert.throws(() => traceRequest({ trace: [`events=${path.join(dir, 'missing')}`] }, '*'), /events=.*missing: ENOENT/);
      writeFileSync(file, 'virtqueue_pop\nvirtqueue_pops\n');
      assert.throws(() => traceRequest({ trace: [`events=${file}`] }, '*'), /no trace event matches 'virtqueue_pops' \(in .*events\) \(did you mean virtqueue_pop\?\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a pattern that matches nothing is an error naming the close event names', () => {
    const err = (p: string) => {
      try {
        select(p);
      } catch (e) {
        assert.ok(e instanceof TraceSelectionError);
        return e.message;
      }
      return assert.fail(`'${p}' was accepted`);
    };
    assert.match(err('virtqueue_pops'), /no trace event matches 'virtqueue_pops' \(did you mean virtqueue_pop\?\)/);
    assert.match(err('virtio_mmio_write'), /did you mean virtio_mmio_write_offset/);
    assert.match(err('kick'), /did you mean virtqueue_kick, virtqueue_kick_suppressed\?/);
    assert.match(err('-nothing_like_this*'), /no trace event matches 'nothing_like_this\*'; --trace help lists them/);
    assert.doesNotMatch(err('zzzzzzzz'), /did you mean/);
    assert.throws(() => select('virtqueue_pop,,virtio_notify'), /empty pattern/);
    assert.deepEqual(closeMatches('vring_ad'), ['vring_add']);
  });

  it('enableEvents sets exactly the flags tested at the emit sites', () => {
    try {
      enableEvents(['virtqueue_pop', 'vring_add']);
      assert.equal(TRACE.virtqueue_pop.enabled, true);
      assert.equal(TRACE.vring_add.enabled, true);
      assert.equal(TRACE.virtqueue_fill.enabled, false);
      assert.deepEqual(enabledEvents(), ['virtqueue_pop', 'vring_add']);
      assert.throws(() => enableEvents(['nope']), /no trace event 'nope'/);
    } finally {
      enableEvents([]);
    }
    assert.deepEqual(enabledEvents(), []);
  });
});

describe('--trace on a command line', () => {
  it('a bare --trace takes the default; a following pattern is its value, even one starting with -', () => {
    assert.deepEqual(normalizeTraceArgs(['--trace'], 'vhost_user_*'), ['--trace=vhost_user_*']);
    assert.deepEqual(normalizeTraceArgs(['--trace', '--quiet'], '*'), ['--trace=*', '--quiet']);
    assert.deepEqual(normalizeTraceArgs(['--trace', '10'], '*'), ['--trace=*', '10'], 'virtio --trace 10: 10 is the program argument');
    assert.deepEqual(normalizeTraceArgs(['--trace', '-s', 'x.sock'], '*'), ['--trace=*', '-s', 'x.sock'], 'a short option');
    assert.deepEqual(normalizeTraceArgs(['--trace', '-virtio_mmio_*', '10'], '*'), ['--trace=-virtio_mmio_*', '10']);
    assert.deepEqual(normalizeTraceArgs(['--trace', 'virtqueue_*,-virtqueue_kick*'], '*'), ['--trace=virtqueue_*,-virtqueue_kick*']);
    assert.deepEqual(normalizeTraceArgs(['--trace', 'events=/tmp/f'], '*'), ['--trace=events=/tmp/f']);
    assert.deepEqual(normalizeTraceArgs(['--trace=x', '--', '--trace'], '*'), ['--trace=x', '--', '--trace'], 'nothing after --');
    assert.equal(isTraceValue('help'), true);
    assert.equal(isTraceValue('/tmp/x.sock'), false);
  });

  it('--trace-file alone traces the default; --trace help asks for the list', () => {
    assert.deepEqual(traceRequest({ 'trace-file': 'x.json' }, 'virtqueue_pop'), { events: ['virtqueue_pop'], help: false, file: 'x.json' });
    assert.deepEqual(traceRequest({}, '*'), { events: [], help: false });
    assert.equal(traceRequest({ trace: ['help'] }, '*').help, true);
    assert.throws(() => traceRequest({ 'trace-file': '' }, '*'), /--trace-file needs a file name/);
  });
});
