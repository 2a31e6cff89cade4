/**
 * Property-based fuzzing of the virtio-blk request parser (test/fuzz/blk-targets.ts), registered
 * as test/fuzz/register.ts registers the ring targets: first every stored counterexample under
 * test/corpus/blk-request/ is replayed, then the target runs for a time budget with a random
 * seed (printed; a failure prints seed, path and the counterexample). The model answers through
 * promises, so the property is asynchronous (fc.asyncProperty), which register.ts's synchronous
 * runner cannot take; this file is its asynchronous twin.
 *
 *   FUZZ_SEED=1234 npm test -- blk-fuzz          fixed seed
 *   BLK_FUZZ_BUDGET_MS=60000 npm test -- blk-fuzz   budget (default 6 s)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { readCorpus } from './corpus.js';
import { blkTargets } from './blk-targets.js';

const budgetMs = Number(process.env.BLK_FUZZ_BUDGET_MS ?? 6_000);
const fixedSeed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

for (const target of blkTargets) {
  test(`corpus replay: ${target.name}`, async () => {
    for (const { file, entry } of readCorpus(target.name)) {
      await assert.doesNotReject(target.check(entry.input), `regression input ${file} (${entry.note})`);
    }
  });

  test(`fuzz ${target.name}: ${target.description}`, async (t) => {
    const seed = fixedSeed ?? (Math.random() * 2 ** 31) | 0;
    const limit = Math.floor(budgetMs / blkTargets.length);
    t.diagnostic(`seed ${seed}, ${limit} ms (replay with FUZZ_SEED=${seed})`);
    const started = performance.now();
    const details = await fc.check(
      fc.asyncProperty(target.arbitrary, (input) => target.check(input)),
      { seed, numRuns: 1_000_000_000, interruptAfterTimeLimit: limit, markInterruptAsFailure: false },
    );
    const secs = (performance.now() - started) / 1000;
    t.diagnostic(`${details.numRuns} executions (${Math.round(details.numRuns / secs)} exec/s)`);
    if (details.failed) {
      const input = JSON.stringify(details.counterexample?.[0]);
      assert.fail(
        `${target.name} failed with seed ${seed} (path ${details.counterexamplePath}): ${(details.errorInstance as Error)?.message}\n` +
          `counterexample: ${input.length > 4000 ? `${input.slice(0, 4000)}…` : input}\n` +
          `store it as test/corpus/${target.name}/<name>.json: { "target": "${target.name}", "note": "...", "input": <counterexample> }`,
      );
    }
    assert.ok(details.numRuns > 0, 'no executions within the budget');
  });
}
