/**
 * The architecture as rules a change can break: each layer imports only from the layers below
 * it (docs/architecture.md), and the hosts name no device (a device is its own folders plus one
 * registry line).
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { repoRoot } from './helpers/paths.js';

const src = path.join(repoRoot, 'src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) return name === 'build' ? [] : files(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

/** The part of src/ a path is in: its top folder, or the native addon (the OS layer). */
function partOf(p: string): string {
  const rel = path.relative(src, p).split(path.sep);
  return rel[0] === 'vhost-user' && rel[1] === 'native' ? 'native' : rel[0]!;
}

/** The parts of src/ a file imports from (static and dynamic imports). */
function importedParts(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)].map((m) => m[1]!);
  return specs.map((s) => partOf(path.resolve(path.dirname(file), s)));
}

// Layer of each part of src/; a part may import from its own layer and below. The device
// models and the guest drivers sit side by side (a driver uses its device's wire format; a
// definition names its driver, loaded lazily by the guest thread); the embedded machine hosts
// both a device and a guest. Tracing (src/trace) is below everything: the rings and the runtime
// emit its events.
const LAYER: Record<string, number> = {
  native: 0,
  trace: 0,
  virtio: 1,
  device: 2,
  devices: 3,
  drivers: 3,
  machine: 4,
  'vhost-user': 4,
  testing: 5,
  cli: 5,
};

test('each layer imports only from its own layer and the layers below', () => {
  const wrong: string[] = [];
  for (const file of files(src)) {
    const layer = LAYER[partOf(file)];
    if (layer === undefined) continue; // src/index.ts: the public API re-exports everything
    for (const to of importedParts(file)) {
      const toLayer = LAYER[to];
      if (toLayer === undefined || toLayer <= layer) continue;
      wrong.push(`${path.relative(repoRoot, file)} imports ${to}`);
    }
  }
  assert.deepEqual(wrong, []);
});

test('the hosts (src/machine, src/vhost-user) name no device', () => {
  const named: string[] = [];
  for (const host of ['machine', 'vhost-user']) {
    for (const file of files(path.join(src, host))) {
      const text = readFileSync(file, 'utf8');
      const m = /virtio-test|VirtioTest|virtio_test|VIRTIO_ID_TEST|devices\/(?!definition|registry)[a-z-]+\//.exec(text);
      if (m) named.push(`${path.relative(repoRoot, file)}: ${m[0]}`);
    }
  }
  assert.deepEqual(named, []);
});
