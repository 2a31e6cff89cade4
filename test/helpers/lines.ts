/** Line-by-line reading of a child process's output, for the helpers that spawn back-ends. */

/** Calls `onLine` for each complete line of `stream` (UTF-8, without the newline) as it arrives. */
export function onLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    rest += chunk;
    const parts = rest.split('\n');
    rest = parts.pop()!;
    for (const line of parts) onLine(line);
  });
}
