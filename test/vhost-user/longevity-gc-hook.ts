/**
 * Preloaded into the daemon by longevity.test.ts (`node --expose-gc --import <this file>`): on
 * SIGUSR2 it runs a full garbage collection and prints one line on stderr,
 * `longevity-gc <rss> <heapUsed> <heapTotal> <external>` (bytes), so that the test samples what
 * the daemon retains rather than garbage V8 has not collected yet. The daemon's code is untouched.
 */
process.on('SIGUSR2', () => {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  process.stderr.write(`longevity-gc ${m.rss} ${m.heapUsed} ${m.heapTotal} ${m.external}\n`);
});
