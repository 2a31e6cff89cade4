// Runs every compiled test file (dist/test/**/*.test.js) with node:test.
// Extra arguments are passed through as file filters: `npm test -- ring` runs files whose path contains "ring".
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const dir = path.resolve('dist', 'test');
const files = [];
(function walk(d) {
  for (const name of readdirSync(d).sort()) {
    const p = path.join(d, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
})(dir);
const filters = process.argv.slice(2);
const chosen = filters.length ? files.filter((f) => filters.some((x) => f.includes(x))) : files;
if (chosen.length === 0) {
  console.error('run-tests: no test files matched');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...chosen], { stdio: 'inherit' });
process.exit(r.status ?? 1);
