// Long fuzz runs of the ring targets (test/fuzz/targets.ts), the vhost-user targets
// (test/vhost-user/fuzz-targets.ts) and the virtio-blk request target (test/fuzz/blk-targets.ts),
// compiled to dist/.
//
//   node scripts/fuzz.mjs [--executions N] [--seconds S] [--target name] [--seed S]
//
// Runs the targets (or only `name`) in rounds, S seconds each per round (default 60), with fresh
// random seeds, until all of them together have made N executions (default 10,000,000; 0: one
// round). Prints executions and executions/second per target and the total, and writes every
// (shrunk) counterexample to test/corpus/<target>/<seed>.json, which `npm test` replays first.
// Exit status 1 if any failed. A target that failed is not run again in later rounds.
// Needs a build first (`npx tsc -p tsconfig.json`); `npm run fuzz` does both.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = args[i + 1];
  if (v === undefined || v.startsWith('--')) {
    console.error(`fuzz: --${name} needs a value`);
    process.exit(2);
  }
  return v;
};
if (args.includes('--help') || args.includes('-h')) {
  console.log('usage: node scripts/fuzz.mjs [--executions N] [--seconds S] [--target name] [--seed S]');
  process.exit(0);
}
const seconds = Number(opt('seconds', '60'));
const wanted = Number(opt('executions', '10000000'));
const only = opt('target', undefined);
const firstSeed = opt('seed', undefined);
if (!(seconds > 0)) {
  console.error('fuzz: --seconds must be a positive number');
  process.exit(2);
}

const dist = path.resolve('dist', 'test', 'fuzz');
if (!existsSync(path.join(dist, 'targets.js'))) {
  console.error('fuzz: dist/test/fuzz/targets.js is missing; build first: npx tsc -p tsconfig.json');
  process.exit(2);
}
const { default: fc } = await import('fast-check');
const { targets: ringTargets } = await import(pathToFileURL(path.join(dist, 'targets.js')).href);
const { vhostUserTargets } = await import(pathToFileURL(path.resolve('dist', 'test', 'vhost-user', 'fuzz-targets.js')).href);
const { writeCorpus } = await import(pathToFileURL(path.join(dist, 'corpus.js')).href);
const { blkTargets } = await import(pathToFileURL(path.join(dist, 'blk-targets.js')).href);
const targets = [...ringTargets, ...vhostUserTargets, ...blkTargets.map((t) => ({ ...t, async: true }))];

const chosen = only ? targets.filter((t) => t.name === only) : targets;
if (chosen.length === 0) {
  console.error(`fuzz: no target ${only}; targets: ${targets.map((t) => t.name).join(', ')}`);
  process.exit(2);
}

let anyFailed = false;
const rows = new Map(chosen.map((t) => [t.name, { target: t.name, execs: 0, secs: 0, failures: 0 }]));
const totalExecs = () => [...rows.values()].reduce((a, r) => a + r.execs, 0);
let seed = firstSeed === undefined ? (Math.random() * 2 ** 31) | 0 : Number(firstSeed);
for (let round = 1; ; round++) {
  const live = chosen.filter((t) => rows.get(t.name).failures === 0);
  if (live.length === 0) break;
  for (const target of live) {
    const row = rows.get(target.name);
    const end = Date.now() + seconds * 1000;
    const started = performance.now();
    while (Date.now() < end) {
      const left = end - Date.now();
      const params = { seed, numRuns: 1_000_000_000, interruptAfterTimeLimit: left, markInterruptAsFailure: false };
      const details = target.async
        ? await fc.check(fc.asyncProperty(target.arbitrary, async (input) => { await target.check(input); }), params)
        : fc.check(fc.property(target.arbitrary, (input) => { target.check(input); }), params);
      row.execs += details.numRuns + (details.numShrinks ?? 0);
      if (details.failed) {
        row.failures++;
        anyFailed = true;
        const message = String(details.errorInstance?.message ?? details.error ?? 'failed').split('\n')[0];
        const file = writeCorpus(target.name, `${seed}`, {
          target: target.name,
          note: `found by scripts/fuzz.mjs, seed ${seed}, path ${details.counterexamplePath}: ${message}`,
          input: details.counterexample[0],
        });
        console.log(`${target.name}: FAILED (seed ${seed}): ${message}\n  counterexample written to ${path.relative(process.cwd(), file)}`);
        break; // one counterexample per target and run: the same bug would be found again and again
      }
      seed = (seed + 1) | 0;
    }
    row.secs += (performance.now() - started) / 1000;
    console.log(`round ${round} ${target.name}: ${row.execs} executions in ${row.secs.toFixed(1)} s = ${Math.round(row.execs / row.secs)} exec/s, ${row.failures} failure(s)`);
  }
  console.log(`after round ${round}: ${totalExecs()} executions in all (goal ${wanted})`);
  if (totalExecs() >= wanted) break;
}
const secs = [...rows.values()].reduce((a, r) => a + r.secs, 0);
for (const r of rows.values()) console.log(`${r.target}: ${r.execs} executions, ${Math.round(r.execs / r.secs)} exec/s, ${r.failures} failure(s)`);
console.log(`total: ${totalExecs()} executions in ${secs.toFixed(1)} s (${Math.round(totalExecs() / secs)} exec/s)${anyFailed ? '; FAILURES, see test/corpus/' : ''}`);
process.exit(anyFailed ? 1 : 0);
