// `npm run mutate`: StrykerJS over src/virtio + src/device (scope "core") and src/vhost-user
// (scope "vhost-user"), each against its own fast unit tests (stryker.config.mjs). Reports:
// reports/mutation/<scope>.{html,json}; incremental state: reports/mutation/<scope>-incremental.json
// (a second run only tests mutants whose code or tests changed).
//
//   npm run mutate                          # both scopes, one after the other
//   npm run mutate -- core                  # one scope
//   npm run mutate -- core --mutate src/device/runtime.ts   # extra arguments go to `stryker run`
import { spawnSync } from 'node:child_process';

const all = ['core', 'vhost-user'];
const args = process.argv.slice(2);
const scopes = [];
while (args.length && all.includes(args[0])) scopes.push(args.shift());
let failed = false;
for (const scope of scopes.length ? scopes : all) {
  console.log(`\n=== mutation testing, scope ${scope} (${new Date().toISOString()}) ===`);
  const r = spawnSync('npx', ['stryker', 'run', ...args], {
    stdio: 'inherit',
    env: { ...process.env, MUTATE_SCOPE: scope },
  });
  if (r.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
