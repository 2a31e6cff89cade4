/**
 * Registers the node:test cases for a set of fuzz targets: first every stored counterexample
 * under test/corpus/<target>/ is replayed, then each target runs for its share of `budgetMs`
 * with a random seed (or FUZZ_SEED), printing seed and exec/s; a failure prints seed, path,
 * the counterexample and the command that stores it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { readCorpus } from './corpus.js';
import type { FuzzTarget } from './targets.js';

export function registerFuzzTests(targets: readonly FuzzTarget<any>[], budgetMs: number): void {
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
      const started = performance.now();
      const details = fc.check(
        fc.property(target.arbitrary, (input) => {
          target.check(input);
        }),
        { seed, numRuns: 1_000_000_000, interruptAfterTimeLimit: limit, markInterruptAsFailure: false },
      );
      const secs = (performance.now() - started) / 1000;
      t.diagnostic(`${details.numRuns} executions (${Math.round(details.numRuns / secs)} exec/s)`);
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
}
