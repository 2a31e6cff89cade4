/**
 * Entropy sources for the virtio-rng model (the I/O the model itself never does).
 *
 *  - {@link cryptoSource}: the OS CSPRNG through `crypto.randomFillSync` (never exhausted).
 *  - {@link openFileSource}: `--source FILE`, bytes served in file order. A regular file (a fixed
 *    file for tests) is read with positional synchronous reads, from offset 0 for every model
 *    the factory makes (each connection or boot starts at the file's first byte); anything else
 *    (a character device such as /dev/hwrng, a FIFO) is read with asynchronous reads from the
 *    shared descriptor, so a hardware RNG that has no data yet never blocks the event loop.
 *
 * At open time, a file that cannot be opened, a directory, or an empty regular file is an
 * Error with a clear message. While serving, the end of the file is a clean stop: the read that
 * reaches it returns the bytes that were left (the chain's used length says how many), the next
 * one returns 0, and the model turns that into a device error saying the source is exhausted
 * (DEVICE_NEEDS_RESET; see device.ts). Bytes are never invented and a read never waits forever
 * on a regular file.
 */
import { randomFillSync } from 'node:crypto';
import { closeSync, fstatSync, openSync, read as readAsync, readSync } from 'node:fs';
import type { EntropySource } from './device.js';

/** The OS CSPRNG (getrandom(2) on Linux). */
export const cryptoSource: EntropySource = {
  description: 'OS CSPRNG',
  read(into: Uint8Array): number {
    randomFillSync(into);
    return into.length;
  },
};

/** An opened `--source FILE`: makes one reader per device model; close() releases the file. */
export interface FileSource {
  readonly path: string;
  /** A regular file (positional reads from offset 0 per reader) rather than a device or FIFO. */
  readonly regular: boolean;
  /** A reader for one model: for a regular file, from its first byte. */
  reader(): EntropySource;
  close(): void;
}

/**
 * Opens `path` for reading. Throws an Error naming the file and the reason when it cannot be
 * opened, is a directory, or is an empty regular file.
 */
export function openFileSource(path: string): FileSource {
  if (path === '') throw new Error('rng: --source needs a file name');
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new Error(`rng: cannot open --source ${path}: ${reason(e)}`);
  }
  let regular: boolean;
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new Error(`rng: --source ${path} is a directory, not a file of random bytes`);
    regular = st.isFile();
    if (regular && st.size === 0) throw new Error(`rng: --source ${path} is empty: it has no bytes to serve`);
  } catch (e) {
    closeSync(fd);
    throw e instanceof Error && e.message.startsWith('rng: ') ? e : new Error(`rng: cannot use --source ${path}: ${reason(e)}`);
  }
  let closed = false;
  const checkOpen = (): void => {
    if (closed) throw new Error(`rng: --source ${path} is closed`);
  };
  return {
    path,
    regular,
    reader(): EntropySource {
      if (regular) {
        let position = 0;
        let ended = false;
        return {
          description: path,
          read(into: Uint8Array): number {
            checkOpen();
            if (ended || into.length === 0) return 0;
            const n = readSync(fd, into, 0, into.length, position);
            if (n === 0) ended = true; // stays at its end, even if the file grows later
            position += n;
            return n;
          },
        };
      }
      return {
        description: path,
        read(into: Uint8Array): Promise<number> {
          checkOpen();
          return new Promise<number>((resolve, reject) => {
            readAsync(fd, into, 0, into.length, null, (err, n) => (err ? reject(new Error(`${path}: ${reason(err)}`)) : resolve(n)));
          });
        },
      };
    },
    close(): void {
      if (closed) return;
      closed = true;
      closeSync(fd);
    },
  };
}

function reason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOENT') return 'no such file';
  if (err?.code === 'EACCES' || err?.code === 'EPERM') return 'permission denied';
  if (err?.code === 'EISDIR') return 'is a directory';
  return err?.message ?? String(e);
}
