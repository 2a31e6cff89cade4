/**
 * The back-end's control socket (`virtio-backend --control-socket PATH`): a Unix stream socket,
 * owner-only (0600) like the vhost-user socket and removed on close, speaking JSON lines: one
 * request object per line in, one answer object per line out, in order (control-commands.ts).
 *
 * It runs on the daemon's event loop beside the vhost-user session, so an answer is a snapshot
 * taken between two device passes. Any number of clients at once; each is bounded: a request
 * line longer than MAX_CONTROL_LINE bytes gets an error answer and the connection is closed
 * (nothing longer is buffered), and a client that does not read its answers stops being read
 * once MAX_PENDING_OUTPUT bytes wait for it. A client that vanishes costs only its socket.
 */
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { isMainThread } from 'node:worker_threads';
import { listenReplacingStale } from './backend-server.js';
import { answerLine, type ControlTarget } from './control-commands.js';
import { closeQuietly } from './message-channel.js';

/** The longest request line accepted, newline excluded. */
export const MAX_CONTROL_LINE = 64 * 1024;
/** Answers waiting to be read by one client before its requests stop being read. */
const MAX_PENDING_OUTPUT = 1 << 20;

export interface ControlServerOptions {
  socketPath: string;
  target: ControlTarget;
  /** Diagnostics (a client's socket error). Default: dropped. */
  warn?: (line: string) => void;
}

export interface ControlServer {
  readonly socketPath: string;
  /** Clients connected now. */
  readonly clients: number;
  /** Stops listening, closes every client, removes the socket file. */
  close(): Promise<void>;
}

export function serveControl(options: ControlServerOptions): ControlServer {
  const { socketPath, target } = options;
  const warn = options.warn ?? (() => {});
  // Created owner-only (umask around bind, on the main thread) and then set to 0600, as the
  // vhost-user socket is: the answers show guest addresses and the device's state.
  const saved = isMainThread ? process.umask(0o177) : 0;
  let fd: number;
  try {
    fd = listenReplacingStale(socketPath, 16);
  } finally {
    if (isMainThread) process.umask(saved);
  }
  let ino: number;
  try {
    chmodSync(socketPath, 0o600);
    ino = lstatSync(socketPath).ino;
  } catch (e) {
    closeQuietly(fd);
    removeSocket(socketPath, null);
    throw e;
  }
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: false }, (socket) => serveClient(socket));
  server.on('error', (e) => warn(`control socket ${socketPath}: ${e.message}`));
  server.listen({ fd });

  function serveClient(socket: net.Socket): void {
    sockets.add(socket);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy()); // EPIPE, ECONNRESET: the client is gone
    socket.on('drain', () => socket.resume());
    const send = (obj: unknown): void => {
      if (socket.destroyed) return;
      socket.write(`${JSON.stringify(obj)}\n`);
      if (socket.writableLength > MAX_PENDING_OUTPUT) socket.pause(); // resumed on 'drain'
    };
    socket.on('data', (chunk: Buffer) => {
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf(0x0a, start);
        if (nl < 0) break;
        const part = chunk.subarray(start, nl);
        start = nl + 1;
        if (pendingBytes + part.length > MAX_CONTROL_LINE) return tooLong(socket, send);
        const line = pendingBytes === 0 ? part.toString('utf8') : Buffer.concat([...pending, part]).toString('utf8');
        pending = [];
        pendingBytes = 0;
        if (line.trim() === '') continue;
        send(answerLine(line, target));
        if (socket.destroyed) return;
      }
      const rest = chunk.subarray(start);
      if (rest.length === 0) return;
      if (pendingBytes + rest.length > MAX_CONTROL_LINE) return tooLong(socket, send);
      pending.push(Buffer.from(rest)); // a copy: the chunk's memory is not kept
      pendingBytes += rest.length;
    });
  }

  function tooLong(socket: net.Socket, send: (obj: unknown) => void): void {
    send({ error: { class: 'GenericError', desc: `request line longer than ${MAX_CONTROL_LINE} bytes: connection closed` } });
    socket.removeAllListeners('data');
    socket.end();
    // A client that keeps sending instead of reading is not waited for.
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  let closed = false;
  return {
    socketPath,
    get clients() {
      return sockets.size;
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      removeSocket(socketPath, ino);
    },
  };
}

/** Removes the socket file if it is still the one we made (same inode), or unconditionally with null. */
function removeSocket(path: string, ino: number | null): void {
  try {
    if (ino === null || lstatSync(path).ino === ino) unlinkSync(path);
  } catch {
    // already gone
  }
}
