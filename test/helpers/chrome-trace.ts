/**
 * A strict check of Chrome trace-event JSON, for the fields our writer emits (the Trace Event
 * Format document's rules, as Perfetto's JSON importer and chrome://tracing read them):
 *
 *  - the file is the JSON Object Format: { traceEvents: [...], displayTimeUnit?, otherData? };
 *  - every event has a string `name`, a known `ph`, integer `pid` and `tid`; `ts` (µs, a finite
 *    number ≥ 0) on all but metadata ("M"); `args` an object where present;
 *  - "i"/"I": scope `s` in g/p/t; "X": `dur` ≥ 0; "b"/"e"/"n": `cat` and `id` (string or number);
 *    "C": numeric args; "M": name process_name/thread_name/…_sort_index with args;
 *  - "B"/"E": per thread, every B has its E, well nested (an E closes the latest open B);
 *    async "b"/"e": per (cat, id), begin and end alternate (no end without a begin, nothing left
 *    open), and an end is not before its begin;
 *  - timestamps never go back on a track: per (pid, tid) for thread events and per counter.
 *
 * Returns the list of problems (empty when the trace is valid), at most `limit`.
 */
export interface TraceEventJson {
  name: string;
  ph: string;
  ts?: number;
  pid: number;
  tid: number;
  cat?: string;
  id?: string | number;
  s?: string;
  dur?: number;
  args?: Record<string, unknown>;
}

const PHASES = new Set(['B', 'E', 'X', 'i', 'I', 'C', 'b', 'e', 'n', 'M', 's', 't', 'f']);
const METADATA = new Set(['process_name', 'thread_name', 'process_sort_index', 'thread_sort_index', 'process_labels']);

export function checkChromeTrace(doc: unknown, limit = 20): string[] {
  const problems: string[] = [];
  const bad = (i: number, msg: string) => {
    if (problems.length < limit) problems.push(`event ${i}: ${msg}`);
  };
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return ['not a JSON object (Object Format)'];
  const events = (doc as { traceEvents?: unknown }).traceEvents;
  if (!Array.isArray(events)) return ['traceEvents is not an array'];
  const unit = (doc as { displayTimeUnit?: unknown }).displayTimeUnit;
  if (unit !== undefined && unit !== 'ms' && unit !== 'ns') problems.push(`displayTimeUnit '${String(unit)}' is not ms or ns`);

  const lastTs = new Map<string, number>();
  const openB = new Map<string, string[]>();
  const openAsync = new Map<string, number>();
  events.forEach((raw, i) => {
    if (typeof raw !== 'object' || raw === null) return bad(i, 'not an object');
    const e = raw as Partial<TraceEventJson>;
    if (typeof e.name !== 'string' || e.name === '') bad(i, 'name missing');
    if (typeof e.ph !== 'string' || !PHASES.has(e.ph)) return bad(i, `ph '${String(e.ph)}' unknown`);
    if (!Number.isInteger(e.pid)) bad(i, 'pid is not an integer');
    if (!Number.isInteger(e.tid)) bad(i, 'tid is not an integer');
    if (e.args !== undefined && (typeof e.args !== 'object' || e.args === null || Array.isArray(e.args))) bad(i, 'args is not an object');
    if (e.ph === 'M') {
      if (!METADATA.has(e.name!)) bad(i, `metadata '${e.name}' unknown`);
      if (!e.args || !('name' in e.args || 'sort_index' in e.args || 'labels' in e.args)) bad(i, 'metadata without its value');
      return;
    }
    if (typeof e.ts !== 'number' || !Number.isFinite(e.ts) || e.ts < 0) return bad(i, `ts ${String(e.ts)} is not a time`);
    const ts = e.ts;
    const thread = `${e.pid}:${e.tid}`;
    const monotonic = (track: string) => {
      const last = lastTs.get(track);
      if (last !== undefined && ts < last) bad(i, `ts ${ts} goes back on track ${track} (last ${last})`);
      lastTs.set(track, ts);
    };
    switch (e.ph) {
      case 'i':
      case 'I':
        if (e.s !== undefined && !['g', 'p', 't'].includes(e.s)) bad(i, `instant scope '${e.s}'`);
        monotonic(thread);
        break;
      case 'X':
        if (typeof e.dur !== 'number' || !(e.dur >= 0)) bad(i, 'X without dur ≥ 0');
        monotonic(thread);
        break;
      case 'B':
        monotonic(thread);
        openB.set(thread, [...(openB.get(thread) ?? []), e.name!]);
        break;
      case 'E': {
        monotonic(thread);
        const stack = openB.get(thread) ?? [];
        if (stack.length === 0) bad(i, `E '${e.name}' without a B on ${thread}`);
        stack.pop();
        openB.set(thread, stack);
        break;
      }
      case 'C':
        if (!e.args || Object.values(e.args).some((v) => typeof v !== 'number')) bad(i, 'counter args must be numbers');
        monotonic(`C:${e.pid}:${e.name}`);
        break;
      case 'b':
      case 'e':
      case 'n': {
        if (typeof e.cat !== 'string' || e.cat === '') bad(i, `${e.ph} without cat`);
        if (typeof e.id !== 'string' && typeof e.id !== 'number') bad(i, `${e.ph} without id`);
        const key = `${e.cat}:${e.id}`;
        if (e.ph === 'b') {
          if (openAsync.has(key)) bad(i, `b ${key} while it is open`);
          openAsync.set(key, ts);
        } else if (e.ph === 'e') {
          const begun = openAsync.get(key);
          if (begun === undefined) bad(i, `e ${key} without its b`);
          else if (ts < begun) bad(i, `e ${key} at ${ts} before its b at ${begun}`);
          openAsync.delete(key);
        }
        break;
      }
    }
  });
  for (const [thread, stack] of openB) if (stack.length) problems.push(`B without E on ${thread}: ${stack.join(', ')}`);
  if (openAsync.size) problems.push(`${openAsync.size} async span(s) left open, e.g. ${[...openAsync.keys()][0]}`);
  return problems.slice(0, limit);
}
