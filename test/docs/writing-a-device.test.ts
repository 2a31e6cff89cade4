/**
 * docs/writing-a-device.md cannot rot: its TypeScript blocks, in order, are one module that is
 * type-checked against the package's public types (imported as 'virtio-ts', the way a user
 * imports it) and then run. The guide also stays within its 100 lines.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';
import { repoRoot } from '../helpers/paths.js';

const guide = readFileSync(path.join(repoRoot, 'docs', 'writing-a-device.md'), 'utf8');
const blocks = [...guide.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);

test('the guide is at most 100 lines and has code for model, test, definition, vhost-user and machine', () => {
  assert.ok(guide.split('\n').length <= 101, `${guide.split('\n').length} lines`);
  assert.equal(blocks.length, 5);
});

test("the guide's code type-checks against the public API and runs", { timeout: 120_000 }, () => {
  // Inside the package, so that 'virtio-ts' resolves to this package by its exports.
  const dir = path.join(repoRoot, 'build', 'docs-check');
  mkdirSync(dir, { recursive: true });
  const source = blocks.join('\n');
  const file = path.join(dir, 'writing-a-device.ts');
  writeFileSync(file, source);
  const program = ts.createProgram([file], {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: ['node'],
  });
  const problems = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
  assert.deepEqual(problems, []);
  const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
  const runnable = path.join(dir, 'writing-a-device.mjs');
  writeFileSync(runnable, js);
  const r = spawnSync(process.execPath, [runnable], { encoding: 'utf8', timeout: 100_000 });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
});
