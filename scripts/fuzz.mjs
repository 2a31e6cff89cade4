// Long fuzz runs of the ring targets (test/fuzz/targets.ts) and the vhost-user targets
// (test/vhost-user/fuzz-targets.ts), compiled to dist/.
//
//   node scripts/fuzz.mjs [--seconds N] [--target name] [--seed S]
//
// Runs each target (or only `name`) for N seconds (default 60) with fresh random seeds, prints
// executions and executions/second per target, and writes every (shrunk) counterexample to
// test/corpus/<target>/<seed>.json, which `npm test` replays first. Exit status 1 if any failed.
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
  console.log('usage: node scripts/fuzz.mjs [--seconds N] [--target name] [--seed S]');
  process.exit(0);
}
const seconds = Number(opt('seconds', '60'));
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
const targets = [...ringTargets, ...vhostUserTargets];

const chosen = only ? targets.filter((t) => t.name === only) : targets;
if (chosen.length === 0) {
  console.error(`fuzz: no target ${only}; targets: ${targets.map((t) => t.name).join(', ')}`);
  process.exit(2);
}

let anyFailed = false;
const rows = [];
for (const target of chosen) {
  const end = Date.now() + seconds * 1000;
  const started = performance.now();
  let execs = 0;
  let failures = 0;
  let seed = firstSeed === undefined ? (Math.random() * 2 ** 31) | 0 : Number(firstSeed);
  while (Date.now() < end) {
    const left = end - Date.now();
    const details = fc.check(
      fc.property(target.arbitrary, (input) => {
        target.check(input);
      }),
      { seed, numRuns: 1_000_000_000, interruptAfterTimeLimit: left, markInterruptAsFailure: false },
    );
    execs += details.numRuns + (details.numShrinks ?? 0);
    if (details.failed) {
      failures++;
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
  const secs = (performance.now() - started) / 1000;
  rows.push({ target: target.name, execs, secs, failures });
  console.log(`${target.name}: ${execs} executions in ${secs.toFixed(1)} s = ${Math.round(execs / secs)} exec/s, ${failures} failure(s)`);
}
const total = rows.reduce((a, r) => a + r.execs, 0);
const secs = rows.reduce((a, r) => a + r.secs, 0);
console.log(`total: ${total} executions in ${secs.toFixed(1)} s (${Math.round(total / secs)} exec/s)${anyFailed ? '; FAILURES, see test/corpus/' : ''}`);
process.exit(anyFailed ? 1 : 0);
