import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from dist/test/helpers/). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const cliPath = (name: string): string => path.join(repoRoot, 'dist', 'src', 'cli', `${name}.js`);

/** Replaces kernel timestamps `[    7.627890]` with `[TIME]`. */
export const normaliseTimestamps = (text: string): string => text.replace(/^\[\s*\d+\.\d{6}\]/gm, '[TIME]');
