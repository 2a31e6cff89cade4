// Builds the vhost-user native addon from source with node-gyp, against the
// headers of the Node that runs this script (never downloads headers).
//
//   node scripts/build-native.mjs             build (skipped when the addon is newer than its sources)
//   node scripts/build-native.mjs --optional  the package's install step: a machine without a C
//                                             compiler or Node's headers gets a warning, not a failed
//                                             install (the embedded machine needs no addon)
//   node scripts/build-native.mjs --force     rebuild even when up to date
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const optional = process.argv.includes('--optional');
const force = process.argv.includes('--force');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const addonDir = path.join(root, 'src', 'vhost-user', 'native');
const addon = path.join(addonDir, 'build', 'Release', 'vhost_user_native.node');
const sources = ['binding.gyp', 'vhost_user_native.c', 'io_ring.c', 'io_ring.h'].map((f) => path.join(addonDir, f));
if (!existsSync(sources[0])) process.exit(0);

function giveUp(reason) {
  if (!optional) {
    console.error(`build-native: ${reason}`);
    process.exit(1);
  }
  console.warn(
    `virtio-ts: the native addon was not built: ${reason}\n` +
      'virtio-ts: the embedded machine (npx virtio) works without it; the vhost-user backend and\n' +
      'virtio-ts: --machine uml/qemu need it: install a C compiler (Debian: build-essential) and run `npm rebuild virtio-ts`.',
  );
  process.exit(0);
}

const mtime = (f) => (existsSync(f) ? statSync(f).mtimeMs : 0);
if (!force && mtime(addon) > Math.max(...sources.map(mtime))) process.exit(0);

// The running Node's prefix holds include/node (e.g. /usr for /usr/bin/node).
const nodedir = path.resolve(path.dirname(process.execPath), '..');
if (!existsSync(path.join(nodedir, 'include', 'node', 'node_api.h'))) {
  giveUp(`no Node headers under ${nodedir}/include/node; install them (Debian: libnode-dev) and retry`);
}

// node-gyp: the project's own (a dev dependency), or the one npm runs install scripts with.
function findGyp() {
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    const fromNpm = process.env.npm_config_node_gyp;
    return fromNpm && existsSync(fromNpm) ? fromNpm : null;
  }
}
const gyp = findGyp();
if (!gyp) giveUp('node-gyp not found (run this from npm, or `npm install node-gyp`)');
const cc = spawnSync(process.env.CC ?? 'cc', ['--version'], { stdio: 'ignore' });
if (cc.error || cc.status !== 0) giveUp('no C compiler (cc) on this machine');

const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`, '--loglevel=warn'], {
  cwd: addonDir,
  stdio: 'inherit',
});
if (r.status !== 0) giveUp(`node-gyp failed (exit ${r.status})`);
