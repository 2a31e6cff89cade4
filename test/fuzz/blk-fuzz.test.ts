/**
 * Property-based fuzzing of the virtio-blk request parser (test/fuzz/blk-targets.ts), through
 * the same registration as the ring targets (test/fuzz/register.ts): corpus replay, a fixed-seed
 * run of FUZZ_MIN_RUNS executions, then a time box. The model answers through promises, so the
 * target is asynchronous.
 *
 *   FUZZ_SEED=1234 npm test -- blk-fuzz             fixed seed
 *   BLK_FUZZ_BUDGET_MS=60000 npm test -- blk-fuzz   time box (default 6 s)
 */
import { blkTargets } from './blk-targets.js';
import { registerFuzzTests } from './register.js';

registerFuzzTests(
  blkTargets.map((t) => ({ ...t, async: true })),
  Number(process.env.BLK_FUZZ_BUDGET_MS ?? 6_000),
);
