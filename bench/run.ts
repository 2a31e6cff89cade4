/**
 * `npm run bench`: runs every section and prints one table (Markdown, on stdout; progress on
 * stderr). A section is a module with `run(opts): Promise<Row[]>` (bench/report.ts); to add
 * one, import it and append it to SECTIONS.
 *
 *   node dist/bench/run.js [--quick] [--rounds N] [--only ring,ring-cost,trace-cost,notify,vhost-user,uml,footprint,blk]
 */
import os from 'node:os';
import { formatTable, runHeader, type Row, type Section } from './report.js';
import { section as ring } from './ring.js';
import { section as ringCost } from './ring-cost.js';
import { section as traceCost } from './trace-cost.js';
import { section as notify } from './notify.js';
import { section as vhostUser } from './vhost-user.js';
import { section as umlE2e } from './uml-e2e.js';
import { section as footprint } from './footprint.js';
import { section as blk } from './blk.js';

const SECTIONS: { section: Section; rounds: number }[] = [
  { section: ring, rounds: 9 },
  { section: ringCost, rounds: 1 },
  { section: traceCost, rounds: 7 },
  { section: notify, rounds: 3 },
  { section: vhostUser, rounds: 7 },
  { section: umlE2e, rounds: 3 },
  { section: footprint, rounds: 5 },
  { section: blk, rounds: 5 },
];

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const quick = process.argv.includes('--quick');
const only = arg('--only')?.split(',');
const log = (s: string) => console.error(s);
const load = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');

// The commit and the load average at the start head the table too (a busy machine explains
// noisy figures).
const head = runHeader();
log(head);
const t0 = Date.now();
const rows: Row[] = [];
const tables: string[] = [];
for (const { section, rounds } of SECTIONS) {
  if (only && !only.includes(section.name)) continue;
  const r = await section.run({ rounds: Number(arg('--rounds') ?? (quick ? 1 : rounds)), quick, log, table: (md) => tables.push(md) });
  rows.push(...r);
}
const tail = `load average at the end ${load()}; ${((Date.now() - t0) / 1000).toFixed(0)} s`;
log(tail);
console.log(`${head}; ${tail}\n`);
console.log(formatTable(rows));
for (const t of tables) console.log(`\n${t}`);
