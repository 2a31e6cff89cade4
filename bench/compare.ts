/**
 * A/B of the ring between two builds of this repository (e.g. HEAD and a scratch copy with a
 * proposed change to src/virtio): alternates `runOurs` from each tree, pinned like `ring.ts`,
 * and prints the medians and the median of per-round ratios B/A. Used to measure proposed
 * queue changes without touching src/ (see docs/performance.md).
 *
 *   node dist/bench/compare.js <distA> <distB> [poll|sleep|batch] [buffers] [rounds]
 *   e.g. node dist/bench/compare.js dist /tmp/patched/dist batch 6000000 6
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { median } from './report.js';
import type { RingMode } from './ring-worker.js';

type RingModule = typeof import('./ring.js');
const [distA, distB, mode = 'poll', count = '2000000', rounds = '6'] = process.argv.slice(2);
if (!distA || !distB) {
  console.error('usage: node dist/bench/compare.js <distA> <distB> [poll|sleep|batch] [buffers] [rounds]');
  process.exit(2);
}
const load = (dist: string) => import(pathToFileURL(path.resolve(dist, 'bench', 'ring.js')).href) as Promise<RingModule>;
const [A, B] = await Promise.all([load(distA), load(distB)]);
const a: number[] = [];
const b: number[] = [];
const ratios: number[] = [];
for (let i = 0; i < Number(rounds); i++) {
  // Alternate which goes first, so a drift within a round does not favour one side.
  const order = i % 2 ? ([[A, a], [B, b]] as const) : ([[B, b], [A, a]] as const);
  for (const [m, out] of order) {
    const r = await m.runOurs(mode as RingMode, Number(count));
    out.push(r.opsPerSec);
    console.error(`${m === A ? 'A' : 'B'} ${(r.opsPerSec / 1e6).toFixed(2)} M/s (cpu ${Math.round(100 * r.cpuShare)}%)`);
  }
  ratios.push(b[i]! / a[i]!);
}
const m = (xs: number[]) => (median(xs) / 1e6).toFixed(2);
console.log(
  `${mode}: A ${m(a)} M/s (${(Math.min(...a) / 1e6).toFixed(2)}–${(Math.max(...a) / 1e6).toFixed(2)}), ` +
    `B ${m(b)} M/s (${(Math.min(...b) / 1e6).toFixed(2)}–${(Math.max(...b) / 1e6).toFixed(2)}), ` +
    `B/A median of rounds ${median(ratios).toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`,
);
