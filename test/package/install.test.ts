/**
 * The package as a user gets it: `npm pack` ships what runs (no tests, benchmarks or build
 * leftovers), and the tarball installed into an empty folder works — the embedded machine even
 * where no C compiler exists (the addon is skipped with a warning), the daemon where one does
 * (the addon is built at install, from source, with no download).
 */
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { normaliseTimestamps, repoRoot } from '../helpers/paths.js';

let tmp: string;
let tarball: string;
let files: string[];

function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 240_000, env: { ...process.env, ...env } });
}

/** An empty project with the tarball installed (offline: the package has no dependencies). */
function install(name: string, env: NodeJS.ProcessEnv = {}): { dir: string; out: string } {
  const dir = path.join(tmp, name);
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, private: true }));
  // --foreground-scripts: npm shows an install script's output only with it.
  const r = sh('npm', ['install', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', tarball], dir, env);
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  return { dir, out: r.stdout + r.stderr };
}

describe('the npm package, installed from its tarball', () => {
  before(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'vt-pack-'));
    // dist/ is built by `npm test` (npm run build) already: pack it as is.
    const r = sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], repoRoot);
    assert.equal(r.status, 0, r.stderr);
    const [info] = JSON.parse(r.stdout) as { filename: string; files: { path: string }[] }[];
    tarball = path.join(tmp, info!.filename);
    files = info!.files.map((f) => f.path);
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('ships the built code, sources, guest builds, docs and LICENSE; no tests, benchmarks or build output', () => {
    for (const f of ['LICENSE', 'README.md', 'package.json', 'dist/src/cli/virtio.js', 'dist/src/cli/virtio-backend.js', 'dist/src/index.d.ts', 'scripts/build-native.mjs', 'src/vhost-user/native/vhost_user_native.c', 'guest/linux/build.sh', 'guest/qemu/build.sh', 'docs/writing-a-device.md']) {
      assert.ok(files.includes(f), `${f} is in the package`);
    }
    const stray = files.filter((f) => /^(test|bench|dist\/test|dist\/bench|build)\/|\/native\/build\/|\.node$/.test(f));
    assert.deepEqual(stray, []);
    const license = readFileSync(path.join(repoRoot, 'LICENSE'), 'utf8');
    assert.match(license, /MIT License/);
  });

  it('without a C compiler: installs with a warning, and `npx virtio 10` prints the seed run', () => {
    const { dir, out } = install('no-cc', { CC: '/bin/false' });
    assert.match(out, /native addon was not built: no C compiler/);
    assert.deepEqual(readdirSync(path.join(dir, 'node_modules', 'virtio-ts', 'src', 'vhost-user', 'native')).sort(), ['binding.gyp', 'index.ts', 'io_ring.c', 'io_ring.h', 'vhost_user_native.c']);
    const r = sh('npx', ['virtio', '10'], dir);
    assert.equal(r.status, 0, r.stderr);
    const golden = readFileSync(path.join(repoRoot, 'test', 'golden', 'seed-run-result.txt'), 'utf8');
    assert.equal(normaliseTimestamps(r.stdout), normaliseTimestamps(golden));
    // The daemon says what is missing instead of a stack trace.
    const d = sh('npx', ['virtio-backend', '--device', 'rng', '--socket-path', path.join(tmp, 'x.sock')], dir);
    assert.equal(d.status, 1);
    assert.match(d.stderr, /native addon/);
    assert.doesNotMatch(d.stderr, /\n\s+at /);
  });

  it('with a C compiler: the addon is built at install and the daemon serves', () => {
    const { dir } = install('with-cc');
    const caps = sh('npx', ['virtio-backend', '--device', 'rng', '--print-capabilities'], dir);
    assert.equal(caps.status, 0, caps.stderr);
    assert.deepEqual(JSON.parse(caps.stdout), { type: 'rng' });
    // The public API by subpath, as a user's module imports it.
    writeFileSync(
      path.join(dir, 'use.mjs'),
      "import { DeviceHarness } from 'virtio-ts/testing';\nimport { findDevice } from 'virtio-ts/devices';\n" +
        "const f = await findDevice('rng').open({}, { log() {}, warn() {} });\n" +
        "const { len } = await new DeviceHarness(f.createDevice()).request(0, [], [32]);\nconsole.log(len);\n",
    );
    const use = sh(process.execPath, ['use.mjs'], dir);
    assert.equal(use.status, 0, use.stderr);
    assert.equal(use.stdout.trim(), '32');
  });
});
