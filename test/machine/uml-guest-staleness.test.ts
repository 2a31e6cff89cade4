/**
 * A UML guest built from older sources than guest/linux is refused (test/helpers/uml.ts
 * needGuest): build/uml/current must be named by the hash of the current inputs, which
 * guest/linux/build.sh --print-hash computes (the same code that names a build).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { defaultRepoRoot, umlGuestInputsHash, umlGuestStaleness } from '../../src/machine/uml.js';

const root = defaultRepoRoot();
let dir: string;
let saved: string | undefined;
before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'vt-uml-stale-'));
  saved = process.env.VT_BUILD_DIR;
  process.env.VT_BUILD_DIR = dir;
});
after(() => {
  if (saved === undefined) delete process.env.VT_BUILD_DIR;
  else process.env.VT_BUILD_DIR = saved;
  rmSync(dir, { recursive: true, force: true });
});

test('the inputs hash is build.sh\'s: 16 hex digits, stable, and it does not build anything', () => {
  const hash = umlGuestInputsHash(root);
  assert.match(hash, /^[0-9a-f]{16}$/);
  assert.equal(umlGuestInputsHash(root), hash);
});

test('build/uml/current named by the current hash is current; any other build is stale; none is missing', () => {
  const uml = path.join(dir, 'uml');
  assert.match(umlGuestStaleness(root) ?? '', /no UML guest at .*current: run guest\/linux\/build\.sh/);
  const hash = umlGuestInputsHash(root);
  mkdirSync(path.join(uml, hash), { recursive: true });
  mkdirSync(path.join(uml, '0123456789abcdef'), { recursive: true });
  symlinkSync(hash, path.join(uml, 'current'));
  assert.equal(umlGuestStaleness(root), null);
  rmSync(path.join(uml, 'current'));
  symlinkSync('0123456789abcdef', path.join(uml, 'current'));
  assert.match(umlGuestStaleness(root) ?? '', new RegExp(`^guest is stale: run guest/linux/build\\.sh \\(build/uml/current is 0123456789abcdef, .* hash to ${hash}\\)$`));
});
