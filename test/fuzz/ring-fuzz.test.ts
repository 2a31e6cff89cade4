/**
 * Property-based fuzzing of both halves of the split ring (see docs/reliability.md):
 * first every stored counterexample under test/corpus/<target>/ is replayed, then each target
 * runs for a time budget with a random seed (printed; a failure prints seed and path).
 *
 *   FUZZ_SEED=1234 npm test -- fuzz      fixed seed
 *   FUZZ_BUDGET_MS=60000 npm test -- fuzz   total budget over all targets (default 48 s)
 * Long runs: node scripts/fuzz.mjs --seconds N [--target name]
 */
import { registerFuzzTests } from './register.js';
import { targets } from './targets.js';

registerFuzzTests(targets, Number(process.env.FUZZ_BUDGET_MS ?? 48_000));
