/**
 * The back-end's request channel to the front-end ([vhost-user "Back-end communication"]):
 * the socket handed over by SET_BACKEND_REQ_FD. This back-end sends only
 * BACKEND_CONFIG_CHANGE_MSG ([vhost-user "Back-end message types"]) and never sets
 * NEED_REPLY, so it never has to read from the channel (virtio_uml, for one, cannot answer
 * on it usefully). A message that cannot be sent at once is dropped with a warning: a
 * config change notification only tells the front-end to re-read the config space.
 */
import { native } from './native/index.js';
import { encodeMessage } from './codec.js';
import { closeQuietly } from './message-channel.js';
import { BackendRequest, HeaderFlag, backendRequestName } from './protocol.js';

export class BackendChannel {
  private closed = false;
  private readonly isSocket: boolean;

  constructor(
    private readonly fd: number,
    private readonly warn: (line: string) => void,
  ) {
    this.isSocket = native.fdKind(fd) === 'socket';
    try {
      native.setNonblocking(fd, true);
    } catch {
      // not fatal: sends may block briefly
    }
  }

  /** [vhost-user "VHOST_USER_BACKEND_CONFIG_CHANGE_MSG"]. Returns whether it was sent. */
  configChanged(): boolean {
    return this.send(BackendRequest.CONFIG_CHANGE_MSG);
  }

  private send(request: number, payload?: Uint8Array): boolean {
    if (this.closed) return false;
    const bytes = encodeMessage(request, HeaderFlag.VERSION, payload);
    try {
      const n = this.isSocket ? native.sendMsg(this.fd, bytes, []) : native.write(this.fd, bytes);
      if (n !== bytes.length) throw new Error(`short write (${n} of ${bytes.length} bytes)`);
      return true;
    } catch (e) {
      this.warn(`backend channel: ${backendRequestName(request)} not sent: ${(e as Error).message}`);
      if ((e as { code?: string }).code !== 'EAGAIN') this.close();
      return false;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeQuietly(this.fd);
  }
}
