// Builds the vhost-user native addon from source with node-gyp, against the
// headers of the Node that runs this script (never downloads headers).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const addonDir = path.join(root, 'src', 'vhost-user', 'native');
if (!existsSync(path.join(addonDir, 'binding.gyp'))) process.exit(0);

// The running Node's prefix holds include/node (e.g. /usr for /usr/bin/node).
const nodedir = path.resolve(path.dirname(process.execPath), '..');
if (!existsSync(path.join(nodedir, 'include', 'node', 'node_api.h'))) {
  console.error(`build-native: no Node headers under ${nodedir}/include/node; install the nodejs headers (Debian: libnode-dev) and retry`);
  process.exit(1);
}
const require = createRequire(import.meta.url);
const gyp = require.resolve('node-gyp/bin/node-gyp.js');
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`, '--loglevel=warn'], {
  cwd: addonDir,
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
