import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { ConsoleReader, ConsoleWriter, createConsole, type Stream } from '../../src/machine/console.js';

const producer = new URL('../helpers/console-producer.js', import.meta.url);

function produce(sab: SharedArrayBuffer, name: string, count: number, stream: Stream): Promise<void> {
  const w = new Worker(producer, { workerData: { sab, name, count, stream } });
  return new Promise((resolve, reject) => {
    w.on('error', reject);
    w.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`producer exited ${code}`))));
  });
}

test('two threads through a 256-byte ring and a slow sink: every line once, each thread in its order', async () => {
  const sab = createConsole(256);
  const reader = new ConsoleReader(sab);
  const seen = new Map<string, number>([['guest', 0], ['device', 0]]);
  let batches = 0;
  let stderrLines = 0;
  const draining = reader.drain(async (text, stream) => {
    assert.ok(text.endsWith('\n'));
    for (const line of text.slice(0, -1).split('\n')) {
      const [name, i] = line.split(' ');
      assert.equal(Number(i), seen.get(name!), `${name} lines out of order or lost`);
      seen.set(name!, Number(i) + 1);
      if (stream === 'stderr') {
        assert.equal(name, 'device');
        stderrLines++;
      }
    }
    // every few batches the sink is slow: the producers must wait, not drop or pile up
    if (++batches % 50 === 0) await new Promise((r) => setTimeout(r, 2));
  });
  const N = 20_000;
  await Promise.all([produce(sab, 'guest', N, 'stdout'), produce(sab, 'device', N, 'stderr')]);
  reader.stop();
  await draining;
  assert.equal(seen.get('guest'), N);
  assert.equal(seen.get('device'), N);
  assert.equal(stderrLines, N);
});

test('a line longer than the ring is cut to fit; lines wrap around the ring end intact', async () => {
  const sab = createConsole(64);
  const reader = new ConsoleReader(sab);
  const got: string[] = [];
  const draining = reader.drain((text) => void got.push(...text.slice(0, -1).split('\n')));
  const writer = new ConsoleWriter(sab);
  const long = 'x'.repeat(500);
  for (let i = 0; i < 40; i++) {
    assert.equal(writer.write(`line ${i} ünïcode`), true);
    // let the reader drain, so writes land at every offset of the ring
    await new Promise((r) => setImmediate(r));
  }
  writer.write(long);
  await new Promise((r) => setImmediate(r));
  reader.stop();
  await draining;
  assert.deepEqual(got.slice(0, 40), Array.from({ length: 40 }, (_, i) => `line ${i} ünïcode`));
  assert.equal(got[40], 'x'.repeat(60));
});

test('after the reader has stopped, a writer does not wait forever: the line is refused', async () => {
  const sab = createConsole(64);
  const reader = new ConsoleReader(sab);
  const draining = reader.drain(() => {});
  reader.stop();
  await draining;
  const writer = new ConsoleWriter(sab);
  assert.equal(writer.write('late'), false);
});
