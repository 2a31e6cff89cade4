/**
 * Registers the node:test cases for a set of fuzz targets (synchronous or asynchronous):
 *
 *  1. corpus replay: every stored input under test/corpus/<target>/ (each target has at least
 *     one; a target without is a failure, so a new target comes with its first entry);
 *  2. a fixed-seed run of at least `minRuns` executions (FUZZ_MIN_RUNS, default 1000), the same
 *     inputs every time: what CI runs, whatever the machine's speed;
 *  3. a time-boxed run for the target's share of `budgetMs`, with a fresh random seed — or, under
 *     CI=true, a seed fixed by the commit-independent constant below, so a CI run is
 *     reproducible (FUZZ_SEED overrides both).
 * Each prints its seed and executions; a failure prints seed, path, the counterexample and the
 * command that stores it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { readCorpus } from './corpus.js';

/** A fuzz target: `check` throws (or rejects) with an Error saying which property broke. */
export interface AnyFuzzTarget<T = any> {
  name: string;
  description: string;
  arbitrary: fc.Arbitrary<T>;
  check(input: T): void | Promise<void>;
  /** True when check returns a promise (run with fc.asyncProperty). */
  async?: boolean;
}

/** The fixed seed of the deterministic runs (any constant works; this one is the project's). */
export const FIXED_SEED = 0x7e57_2026;
const CI = process.env.CI === 'true';
const minRuns = Number(process.env.FUZZ_MIN_RUNS ?? 1000);

function property<T>(target: AnyFuzzTarget<T>): fc.IProperty<[T]> | fc.IAsyncProperty<[T]> {
  return target.async
    ? fc.asyncProperty(target.arbitrary, async (input) => {
        await target.check(input);
      })
    : fc.property(target.arbitrary, (input) => {
        void target.check(input);
      });
}

async function run<T>(target: AnyFuzzTarget<T>, params: fc.Parameters<[T]>): Promise<fc.RunDetails<[T]>> {
  const p = property(target);
  return target.async ? fc.check(p as fc.IAsyncProperty<[T]>, params) : fc.check(p as fc.IProperty<[T]>, params);
}

function report<T>(target: AnyFuzzTarget<T>, seed: number, details: fc.RunDetails<[T]>): void {
  if (!details.failed) return;
  const input = JSON.stringify(details.counterexample?.[0]);
  assert.fail(
    `${target.name} failed with seed ${seed} (path ${details.counterexamplePath}): ${(details.errorInstance as Error)?.message}\n` +
      `counterexample: ${input === undefined ? '(none)' : input.length > 4000 ? `${input.slice(0, 4000)}…` : input}\n` +
      `store it with: node scripts/fuzz.mjs --target ${target.name} --seed ${seed} --seconds 5`,
  );
}

export function registerFuzzTests(targets: readonly AnyFuzzTarget[], budgetMs: number): void {
  const givenSeed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

  for (const target of targets) {
    test(`corpus replay: ${target.name}`, async () => {
      const entries = readCorpus(target.name);
      assert.ok(entries.length > 0, `test/corpus/${target.name}/ has no entry: every target keeps at least one`);
      for (const { file, entry } of entries) {
        await assert.doesNotReject(async () => target.check(entry.input), `regression input ${file} (${entry.note})`);
      }
    });
  }

  for (const target of targets) {
    test(`fuzz ${target.name}, ${minRuns} runs, fixed seed: ${target.description}`, async (t) => {
      const seed = givenSeed ?? FIXED_SEED;
      const started = performance.now();
      const details = await run(target, { seed, numRuns: minRuns });
      t.diagnostic(`seed ${seed}: ${details.numRuns} executions in ${Math.round(performance.now() - started)} ms`);
      report(target, seed, details);
      assert.equal(details.numRuns, minRuns, 'every run executed');
    });
  }

  for (const target of targets) {
    test(`fuzz ${target.name}, time-boxed: ${target.description}`, async (t) => {
      const seed = givenSeed ?? (CI ? FIXED_SEED + 1 : (Math.random() * 2 ** 31) | 0);
      const limit = Math.floor(budgetMs / targets.length);
      t.diagnostic(`seed ${seed}, ${limit} ms (replay with FUZZ_SEED=${seed})`);
      const started = performance.now();
      const details = await run(target, { seed, numRuns: 1_000_000_000, interruptAfterTimeLimit: limit, markInterruptAsFailure: false });
      const secs = (performance.now() - started) / 1000;
      t.diagnostic(`${details.numRuns} executions (${Math.round(details.numRuns / secs)} exec/s)`);
      report(target, seed, details);
      assert.ok(details.numRuns > 0, 'no executions within the budget');
    });
  }
}
