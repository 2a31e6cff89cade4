/**
 * Message framing over a non-blocking AF_UNIX stream socket: reads header then payload
 * ([vhost-user "Message Specification"]), collecting the SCM_RIGHTS fds that arrive with
 * them, and writes whole messages with their fds attached to the first byte.
 *
 * The channel owns its socket fd, and every received fd until it is handed out with a
 * complete message: on close, the fds of a half-read message are closed too.
 *
 * Reads are driven by a native watch on the event loop. Writes are attempted at once;
 * if the peer's receive buffer is full the rest is queued and retried on a short timer
 * (vhost-user replies are small, so this is rare). A peer that stops reading while we
 * owe it more than OUTGOING_LIMIT bytes is disconnected rather than buffered forever.
 */
import { native, type Watch } from './native/index.js';
import { HEADER_SIZE } from './protocol.js';
import { ProtocolError, checkHeader, decodeHeader, type Header, type RawMessage } from './codec.js';

/** Most fds one message may carry (SET_MEM_TABLE with 8 regions); more are closed and flagged. */
export const MAX_FDS_PER_MESSAGE = 8;
const OUTGOING_LIMIT = 1 << 20;
const RETRY_MS = 2;

export interface ChannelHandler {
  /** A complete message; the handler owns `m.fds` from now on. */
  onMessage(m: RawMessage): void;
  /** The channel closed: `reason` is null for an orderly end of stream by the peer. */
  onClose(reason: string | null): void;
}

export interface ChannelOptions {
  /** This side receives replies (front-end): the REPLY flag is expected, not refused. */
  receivesReplies?: boolean;
}

interface Outgoing {
  bytes: Uint8Array;
  offset: number;
  fds: readonly number[];
  /** Close `fds` once they are sent (or the channel closes): ownership passes to the peer. */
  closeFds: boolean;
}

export class MessageChannel {
  private watch: Watch | null = null;
  private closed = false;
  private paused = false;
  private unrefd = false;
  private readonly header = new Uint8Array(HEADER_SIZE);
  private got = 0;
  private current: Header | null = null;
  private payload = new Uint8Array(0);
  private fds: number[] = [];
  private truncatedFds = false;
  private readonly outgoing: Outgoing[] = [];
  private outgoingBytes = 0;
  private retry: NodeJS.Timeout | null = null;

  constructor(
    readonly fd: number,
    private readonly handler: ChannelHandler,
    private readonly options: ChannelOptions = {},
  ) {}

  get isClosed(): boolean {
    return this.closed;
  }

  /** Starts reading on the event loop (at resume(), if paused before). */
  start(): this {
    native.setNonblocking(this.fd, true);
    if (!this.paused) this.startWatch();
    return this;
  }

  private startWatch(): void {
    this.watch = native.watch(this.fd, (err) => {
      if (err) this.close(`socket error: ${err.message}`);
      else this.readAvailable();
    });
    if (this.unrefd) this.watch.unref();
  }

  /** Lets the channel not keep the process alive by itself. */
  unref(): this {
    this.unrefd = true;
    this.watch?.unref();
    return this;
  }

  /**
   * Stops delivering messages (the ones after stay in the socket) until resume(): a request
   * whose reply must wait (GET_VRING_BASE draining a ring) is answered before the next one is
   * handled, as the protocol's one-request-at-a-time exchange expects. Sending goes on.
   */
  pause(): void {
    if (this.closed || this.paused) return;
    this.paused = true;
    this.watch?.stop();
    this.watch = null;
  }

  resume(): void {
    if (this.closed || !this.paused) return;
    this.paused = false;
    this.startWatch();
    setImmediate(() => this.readAvailable()); // what arrived meanwhile raised no new event
  }

  /**
   * Sends one message (header and payload already encoded) with `fds` attached. With
   * `closeFds`, our copies of the fds are closed once sent (or when the channel closes).
   */
  send(bytes: Uint8Array, fds: readonly number[] = [], closeFds = false): void {
    if (this.closed) {
      if (closeFds) fds.forEach(closeQuietly);
      return;
    }
    this.outgoing.push({ bytes, offset: 0, fds, closeFds });
    this.outgoingBytes += bytes.length;
    this.flush();
  }

  /** Closes the socket and any half-received fds; calls onClose once. */
  close(reason: string | null = 'closed locally'): void {
    if (this.closed) return;
    this.closed = true;
    this.watch?.stop();
    this.watch = null;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    for (const fd of this.fds) closeQuietly(fd);
    this.fds = [];
    for (const o of this.outgoing.splice(0)) if (o.closeFds && o.offset === 0) o.fds.forEach(closeQuietly);
    closeQuietly(this.fd);
    this.handler.onClose(reason);
  }

  private readAvailable(): void {
    while (!this.closed && !this.paused) {
      const target = this.current === null ? this.header : this.payload;
      let r;
      try {
        r = native.recvMsg(this.fd, target.subarray(this.got), MAX_FDS_PER_MESSAGE);
      } catch (e) {
        this.close(`recvmsg failed: ${(e as Error).message}`);
        return;
      }
      if (r === null) return; // EAGAIN: wait for the next readable event
      for (const fd of r.fds) this.fds.push(fd);
      if (r.truncatedFds) this.truncatedFds = true;
      if (r.bytes === 0) {
        const partial = this.current !== null || this.got > 0;
        this.close(partial ? 'peer closed the connection in the middle of a message' : null);
        return;
      }
      this.got += r.bytes;
      if (this.got < target.length) continue;
      if (this.current === null) {
        const h = decodeHeader(this.header);
        try {
          checkHeader(h, this.options.receivesReplies);
        } catch (e) {
          if (e instanceof ProtocolError && !e.fatal) {
            // framing is intact; the receiver decides (it will see the flags)
          } else {
            this.close((e as Error).message);
            return;
          }
        }
        this.current = h;
        this.payload = new Uint8Array(h.size);
        this.got = 0;
        if (h.size > 0) continue;
      }
      this.deliver();
    }
  }

  private deliver(): void {
    const h = this.current!;
    const m: RawMessage = { ...h, payload: this.payload, fds: this.fds, truncatedFds: this.truncatedFds };
    this.current = null;
    this.got = 0;
    this.payload = new Uint8Array(0);
    this.fds = [];
    this.truncatedFds = false;
    try {
      this.handler.onMessage(m);
    } catch (e) {
      // A bug in a handler must not escape into the watch callback (an uncaught exception
      // would end the process): this connection ends instead.
      this.close(`internal error handling a message: ${(e as Error)?.stack ?? e}`);
    }
  }

  private flush(): void {
    while (!this.closed && this.outgoing.length > 0) {
      const o = this.outgoing[0]!;
      let n: number;
      try {
        n = native.sendMsg(this.fd, o.bytes.subarray(o.offset), o.offset === 0 ? o.fds : []);
      } catch (e) {
        if ((e as { code?: string }).code === 'EAGAIN') {
          if (this.outgoingBytes > OUTGOING_LIMIT) {
            this.close(`peer is not reading (${this.outgoingBytes} bytes queued)`);
            return;
          }
          this.retry ??= setTimeout(() => {
            this.retry = null;
            this.flush();
          }, RETRY_MS);
          return;
        }
        this.close(`sendmsg failed: ${(e as Error).message}`);
        return;
      }
      if (o.offset === 0 && o.closeFds) o.fds.forEach(closeQuietly);
      o.offset += n;
      this.outgoingBytes -= n;
      if (o.offset === o.bytes.length) this.outgoing.shift();
    }
  }
}

/** Closes an fd, ignoring errors (it may already be gone). */
export function closeQuietly(fd: number | null | undefined): void {
  if (fd === null || fd === undefined || fd < 0) return;
  try {
    native.close(fd);
  } catch {
    // already closed
  }
}
