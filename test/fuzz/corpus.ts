/** The regression corpus: one JSON file per counterexample under test/corpus/<target>/. */
import { mkdirSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../helpers/paths.js';

export const corpusRoot = path.join(repoRoot, 'test', 'corpus');

export interface CorpusEntry {
  target: string;
  /** Why it is here: the failure it reproduced, the seed that found it. */
  note: string;
  input: unknown;
}

export function readCorpus(target: string): { file: string; entry: CorpusEntry }[] {
  const dir = path.join(corpusRoot, target);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ file: path.join(dir, f), entry: JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as CorpusEntry }));
}

export function writeCorpus(target: string, name: string, entry: CorpusEntry): string {
  const dir = path.join(corpusRoot, target);
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(entry, null, 1)}\n`);
  return file;
}
