/**
 * Property-based fuzzing of both halves of the split ring (see docs/reliability.md):
 * first every stored counterexample under test/corpus/<target>/ is replayed, then each target
 * runs for a time budget with a random seed (printed; a failure prints seed and path).
 *
 *   FUZZ_SEED=1234 npm test -- fuzz      fixed seed
 *   FUZZ_BUDGET_MS=60000 npm test -- fuzz   total budget over all targets (default 48 s)
 * Long runs: node scripts/fuzz.mjs --seconds N [--target name]
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { readCorpus } from './corpus.js';
import { targets } from './targets.js';

const budgetMs = Number(process.env.FUZZ_BUDGET_MS ?? 48_000);
const fixedSeed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

for (const target of targets) {
  test(`corpus replay: ${target.name}`, () => {
    for (const { file, entry } of readCorpus(target.name)) {
      assert.doesNotThrow(() => target.check(entry.input), `regression input ${file} (${entry.note})`);
    }
  });
}

for (const target of targets) {
  test(`fuzz ${target.name}: ${target.description}`, (t) => {
    const seed = fixedSeed ?? (Math.random() * 2 ** 31) | 0;
    const limit = Math.floor(budgetMs / targets.length);
    t.diagnostic(`seed ${seed}, ${limit} ms (replay with FUZZ_SEED=${seed})`);
    const details = fc.check(
      fc.property(target.arbitrary, (input) => {
        target.check(input);
      }),
      { seed, numRuns: 1_000_000_000, interruptAfterTimeLimit: limit, markInterruptAsFailure: false },
    );
    t.diagnostic(`${details.numRuns} executions`);
    if (details.failed) {
      const input = JSON.stringify(details.counterexample?.[0]);
      assert.fail(
        `${target.name} failed with seed ${seed} (path ${details.counterexamplePath}): ${(details.errorInstance as Error)?.message}\n` +
          `counterexample: ${input.length > 4000 ? `${input.slice(0, 4000)}…` : input}\n` +
          `store it with: node scripts/fuzz.mjs --target ${target.name} --seed ${seed} --seconds 5`,
      );
    }
    assert.ok(details.numRuns > 0, 'no executions within the budget');
  });
}
