/**
 * What every benchmark section returns, and the one table `bench/run.ts` prints.
 *
 * A section is a module exporting `run(opts): Promise<Row[]>`; run.ts calls the sections it
 * knows in order and prints all rows together. A new section is a module and one line in
 * run.ts's list; `runIfMain` lets the module also run alone.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

export interface Row {
  /** Section name: 'ring', 'notify', ... */
  section: string;
  /** What was measured, e.g. 'ours: per-buffer (polling)'. */
  name: string;
  unit: string;
  /** One value per round (higher is better unless `lowerIsBetter`). */
  samples: number[];
  lowerIsBetter?: boolean;
  /** The reference this row is compared with: its name and its samples (medians are compared). */
  ref?: { name: string; samples: number[] };
  /**
   * Per-round ratios against the reference run next to it in the same round. When present, the
   * ratio is their median: on a shared VM the cross-core latency drifts by 2–4× over minutes,
   * and pairing neighbours cancels most of that drift.
   */
  paired?: number[];
  /** The ratio this row should reach against `ref` (e.g. 1.0, 2.5). */
  target?: number;
  note?: string;
}

export interface SectionOptions {
  /** Rounds to alternate (each round runs every configuration once). */
  rounds: number;
  /** Shorter runs (for a smoke test). */
  quick: boolean;
  log: (line: string) => void;
  /** Extra Markdown (e.g. a summary table of targets) printed on stdout after the main table. */
  table?: (markdown: string) => void;
}

export interface Section {
  name: string;
  run(opts: SectionOptions): Promise<Row[]>;
}

/**
 * Runs `section` alone and prints its table when `moduleUrl` is the script node was started
 * with (`node dist/bench/<section>.js [--rounds N] [--quick]`); does nothing when imported.
 */
export async function runIfMain(moduleUrl: string, section: Section, rounds: number): Promise<void> {
  if (!process.argv[1] || fileURLToPath(moduleUrl) !== process.argv[1]) return;
  const head = runHeader();
  console.error(head);
  const i = process.argv.indexOf('--rounds');
  const tables: string[] = [];
  const quick = process.argv.includes('--quick');
  const rows = await section.run({
    // --quick: one round unless --rounds says otherwise (as in run.ts)
    rounds: i >= 0 ? Number(process.argv[i + 1]) : quick ? 1 : rounds,
    quick,
    log: (line) => console.error(line),
    table: (md) => tables.push(md),
  });
  console.log(`${head}\n`);
  console.log(formatTable(rows));
  for (const t of tables) console.log(`\n${t}`);
}

/**
 * One line for the top of a report: the commit (short hash, "+ uncommitted changes" when the
 * work tree differs from it), the machine, and its load averages now (call it at the start).
 */
export function runHeader(): string {
  const git = (args: string[]) => execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  let commit = '?';
  try {
    commit = git(['rev-parse', '--short', 'HEAD']);
    if (git(['status', '--porcelain', '--untracked-files=no'])) commit += ' + uncommitted changes';
  } catch {}
  const cpu = os.cpus();
  const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  return `commit ${commit}; machine ${cpu.length} × ${cpu[0]?.model ?? '?'}, Node ${process.version}, Linux ${os.release()}; load average at start ${load}`;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export const ratio = (row: Row): number | undefined => {
  if (!row.ref) return undefined;
  if (row.paired && row.paired.length) return median(row.paired);
  const a = median(row.samples);
  const b = median(row.ref.samples);
  return row.lowerIsBetter ? b / a : a / b;
};

/** 12345678 → '12.35 M'. */
export function si(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1e9) return `${(x / 1e9).toFixed(2)} G`;
  if (a >= 1e6) return `${(x / 1e6).toFixed(2)} M`;
  if (a >= 1e3) return `${(x / 1e3).toFixed(1)} k`;
  return x.toFixed(a >= 100 ? 0 : 2);
}

/** The table as Markdown (so it pastes into docs/performance.md as is). */
export function formatTable(rows: readonly Row[]): string {
  const head = ['section', 'measure', 'median', 'min–max', 'unit', 'vs', 'ratio', 'target', 'note'];
  const body = rows.map((r) => {
    const q = ratio(r);
    const met = q === undefined || r.target === undefined ? '' : q >= r.target ? ' ✓' : ' ✗';
    const none = r.samples.length === 0;
    return [
      r.section,
      r.name,
      none ? '—' : si(median(r.samples)),
      none ? '—' : `${si(Math.min(...r.samples))} – ${si(Math.max(...r.samples))}`,
      r.unit,
      r.ref ? r.ref.name : '',
      q === undefined
        ? ''
        : `${q.toFixed(2)}×` +
          (r.paired && r.paired.length > 1
            ? ` (${Math.min(...r.paired).toFixed(2)}–${Math.max(...r.paired).toFixed(2)})`
            : ''),
      r.target === undefined ? '' : `≥ ${r.target}×${met}`,
      r.note ?? '',
    ];
  });
  const lines = [head, head.map(() => '---'), ...body].map((c) => `| ${c.join(' | ')} |`);
  return lines.join('\n');
}
