/**
 * Choosing events QEMU's way (docs/devel/tracing.rst, "-trace"): patterns with `*` and `?`,
 * several per option (comma-separated) or the option repeated, a leading `-` to exclude,
 * and `events=FILE`: one pattern per line, `#` comments, blank lines ignored.
 *
 * Patterns apply in order to an initially empty set: `virtio_*,-virtio_mmio_*` is every
 * virtio_ event but the MMIO ones. When only exclusions are given, they apply to every event.
 * A pattern that matches no event is an error naming the closest event names (QEMU only warns;
 * a typo that silently traces nothing is the worse outcome).
 */
import { EVENTS } from './events.js';

export class TraceSelectionError extends Error {
  override readonly name = 'TraceSelectionError';
}

/** A glob (`*` any run, `?` one character) as an anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

/** Levenshtein distance (small strings). */
function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** Up to `n` event names close to `pattern` (by edit distance of the pattern without wildcards, or sharing a prefix). */
export function closeMatches(pattern: string, names: readonly string[] = EVENTS.map((e) => e.name), n = 3): string[] {
  const bare = pattern.replace(/[*?]/g, '');
  const scored = names.map((name) => {
    let d = distance(bare, name);
    // A pattern that is a piece of a name ("kick", "mmio_rd") is close to it.
    if (bare.length >= 3 && name.includes(bare)) d = Math.min(d, 1);
    return { name, d };
  });
  const limit = Math.max(2, Math.floor(bare.length / 4));
  return scored
    .filter((s) => s.d <= limit)
    .sort((a, b) => a.d - b.d || a.name.localeCompare(b.name))
    .slice(0, n)
    .map((s) => s.name);
}

/** The patterns of an events file: one per line, `#` starts a comment. */
export function parseEventsFile(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l !== '');
}

export interface SelectOptions {
  /** Reads an events=FILE (default: fs.readFileSync as UTF-8, supplied by the caller). */
  readFile(path: string): string;
}

/**
 * The events selected by `values` (each a --trace argument: comma-separated patterns or
 * `events=FILE`), in catalog order. Throws TraceSelectionError for a pattern matching nothing,
 * an empty pattern, or an unreadable file.
 */
export function selectEvents(values: readonly string[], options: SelectOptions): string[] {
  const patterns: { text: string; origin: string }[] = [];
  for (const value of values) {
    if (value.startsWith('events=')) {
      const file = value.slice('events='.length);
      if (file === '') throw new TraceSelectionError('--trace events=FILE needs a file name');
      let text: string;
      try {
        text = options.readFile(file);
      } catch (e) {
        throw new TraceSelectionError(`--trace events=${file}: ${(e as Error).message}`);
      }
      for (const line of parseEventsFile(text)) patterns.push({ text: line, origin: ` (in ${file})` });
      continue;
    }
    for (const p of value.split(',')) {
      const t = p.trim();
      if (t === '') throw new TraceSelectionError(`--trace '${value}': empty pattern`);
      patterns.push({ text: t, origin: '' });
    }
  }
  const names = EVENTS.map((e) => e.name);
  const on = new Set<string>(patterns.some((p) => !p.text.startsWith('-')) ? [] : names);
  for (const { text, origin } of patterns) {
    const exclude = text.startsWith('-');
    const glob = exclude ? text.slice(1) : text;
    if (glob === '') throw new TraceSelectionError(`--trace '-': exclusion without a pattern${origin}`);
    const re = globToRegExp(glob);
    const matched = names.filter((n) => re.test(n));
    if (matched.length === 0) {
      const close = closeMatches(glob, names);
      throw new TraceSelectionError(
        `no trace event matches '${glob}'${origin}${close.length ? ` (did you mean ${close.join(', ')}?)` : ''}; --trace help lists them`,
      );
    }
    for (const n of matched) {
      if (exclude) on.delete(n);
      else on.add(n);
    }
  }
  return names.filter((n) => on.has(n));
}

/** `--trace help`: the catalog, one event per line with its fields and description. */
export function describeEvents(): string {
  const lines: string[] = [];
  for (const e of EVENTS) {
    lines.push(`${e.name}(${e.fields.map((f) => f.name).join(', ')})  [${e.side}; ${e.origin === 'qemu' ? "QEMU's name" : e.origin === 'linux' ? "Linux virtio_ring" : 'ours'}]`);
    lines.push(`    ${e.doc}`);
  }
  return lines.join('\n');
}
