/**
 * `virtio trace-svg TRACE.json [-o OUT.svg] [--requests N] [--from-start] [--title T]`: a
 * sequence diagram (SVG) of the first N requests of a trace written by `--trace-file`
 * (src/trace/sequence-svg.ts). Without -o the SVG goes to stdout. Exit status 0, 1 for a file
 * that cannot be read or is not such a trace (one line saying why), 2 for a bad command line.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { TraceSvgError, renderSequenceSvg } from '../trace/sequence-svg.js';

export const TRACE_SVG_USAGE = 'virtio trace-svg TRACE.json [-o OUT.svg] [--requests N] [--from-start] [--title TEXT]';

const HELP = `Usage: ${TRACE_SVG_USAGE}

Draws the first N requests (default 1) of a Chrome trace written by \`virtio --trace-file\` or
\`virtio-backend --trace-file\` as a sequence diagram: one lane per track (guest driver, device
per queue, control), one row per event, arrows for the kick and the interrupt, a bar per
request (vring_add → virtqueue_get_buf) and per device pass (virtqueue_pop → virtqueue_fill),
and the virtio 1.2 section each event realises.

  -o, --output FILE   write the SVG to FILE (default: stdout)
  --requests N        how many requests, from the first (default 1)
  --from-start        also draw the events before the first request (initialisation)
  --title TEXT        a title above the diagram
  -h, --help          this text`;

/** Runs the subcommand on `args` (after "trace-svg"); returns the exit status. */
export function runTraceSvg(args: readonly string[], out: (s: string) => void, err: (s: string) => void): number {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        output: { type: 'string', short: 'o' },
        requests: { type: 'string' },
        'from-start': { type: 'boolean' },
        title: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    err(`virtio trace-svg: ${(e as Error).message}\nUsage: ${TRACE_SVG_USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    out(HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    err(`virtio trace-svg: expected one trace file, got ${positionals.length}\nUsage: ${TRACE_SVG_USAGE}`);
    return 2;
  }
  const requests = values.requests === undefined ? 1 : Number(values.requests);
  if (!Number.isInteger(requests) || requests < 1 || requests > 10_000) {
    err(`virtio trace-svg: --requests must be an integer 1..10000, got '${values.requests}'`);
    return 2;
  }
  const file = positionals[0]!;
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code ?? `not JSON (${(e as Error).message})`;
    err(`virtio trace-svg: ${file}: ${why}`);
    return 1;
  }
  let svg: string;
  try {
    svg = renderSequenceSvg(doc, { requests, fromStart: values['from-start'] === true, ...(values.title !== undefined ? { title: values.title } : {}) });
  } catch (e) {
    if (!(e instanceof TraceSvgError)) throw e;
    err(`virtio trace-svg: ${file}: ${e.message}`);
    return 1;
  }
  if (values.output === undefined) {
    out(svg.trimEnd());
    return 0;
  }
  try {
    writeFileSync(values.output, svg);
  } catch (e) {
    err(`virtio trace-svg: ${values.output}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    return 1;
  }
  return 0;
}
