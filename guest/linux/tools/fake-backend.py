#!/usr/bin/env python3
"""A minimal vhost-user backend for the virtio-test device, for testing the
guest driver before (and independently of) the TypeScript backend.

    fake-backend.py SOCKET [options]

Serves ONE connection from UML's virtio_uml and answers requests exactly as
the virtio-test device does (ret = arg1 + 100, ...).  Fault injection options
let the driver's error paths be exercised:

    --no-can-print        do not offer VIRTIO_TEST_F_CAN_PRINT (probe must fail)
    --short-len           report a used length of 8 instead of 12
    --die-after N         close the connection after answering N requests
    --protocol-features X offered protocol features (default 0x4208 =
                          REPLY_ACK | SLAVE_REQ | CONFIG | INBAND_NOTIFICATIONS)
    --log                 print every vhost-user message to stderr

Plain Python 3 stdlib; Linux only.  Not a product: the real backend is the
TypeScript one.
"""
import argparse
import mmap
import os
import select
import socket
import struct
import sys

# vhost-user requests (front end -> back end)
GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = 1, 2, 3, 4, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM = 15, 16, 17
SET_VRING_ENABLE, SET_SLAVE_REQ_FD, GET_CONFIG, SET_CONFIG, VRING_KICK = 18, 21, 24, 25, 35
# back end -> front end, on the slave channel
SLAVE_VRING_CALL = 4

F_REPLY, F_NEED_REPLY, VERSION = 0x4, 0x8, 0x1
PF_REPLY_ACK, PF_SLAVE_REQ, PF_CONFIG, PF_INBAND = 3, 5, 9, 14
VIRTIO_F_VERSION_1, VHOST_USER_F_PROTOCOL_FEATURES = 32, 30
VIRTIO_TEST_F_CAN_PRINT = 0
DESC_F_NEXT, DESC_F_WRITE = 1, 2

HDR = struct.Struct('<III')


class Backend:
    def __init__(self, conn, args):
        self.conn, self.args = conn, args
        self.features = (1 << VIRTIO_F_VERSION_1) | (1 << VHOST_USER_F_PROTOCOL_FEATURES)
        if not args.no_can_print:
            self.features |= 1 << VIRTIO_TEST_F_CAN_PRINT
        self.pfeatures_offer = args.protocol_features
        self.pfeatures = 0
        self.regions = []  # (user_addr, guest_addr, size, mmap, offset)
        self.num = 0
        self.addrs = None
        self.kick_fd = None
        self.call_fd = None
        self.slave = None
        self.last_avail = 0
        self.used_idx = 0
        self.answered = 0
        self.config = struct.pack('<III', 0, 0, 0)

    def log(self, *a):
        if self.args.log:
            print('fake-backend:', *a, file=sys.stderr, flush=True)

    # --- memory ---
    def mem(self, addr, length):
        for ua, _ga, size, m, off in self.regions:
            if ua <= addr and addr + length <= ua + size:
                return m, off + addr - ua
        raise RuntimeError('address 0x%x+%d not in any region' % (addr, length))

    def rd(self, addr, length):
        m, o = self.mem(addr, length)
        return m[o:o + length]

    def wr(self, addr, data):
        m, o = self.mem(addr, len(data))
        m[o:o + len(data)] = data

    def guest_to_user(self, gpa):
        for ua, ga, size, _m, _o in self.regions:
            if ga <= gpa < ga + size:
                return ua + gpa - ga
        raise RuntimeError('guest address 0x%x not in any region' % gpa)

    # --- messages ---
    def reply(self, req, payload):
        self.conn.sendall(HDR.pack(req, F_REPLY | VERSION, len(payload)) + payload)

    def handle(self):
        hdr, fds, _flags, _addr = socket.recv_fds(self.conn, HDR.size, 8)
        if not hdr:
            return False
        req, flags, size = HDR.unpack(hdr)
        payload = b''
        while len(payload) < size:
            chunk = self.conn.recv(size - len(payload))
            if not chunk:
                return False
            payload += chunk
        self.log('req', req, 'flags', hex(flags), 'size', size, 'fds', fds)
        u64 = lambda: struct.unpack_from('<Q', payload)[0]
        status = 0
        if req == GET_FEATURES:
            self.reply(req, struct.pack('<Q', self.features))
            return True
        elif req == GET_PROTOCOL_FEATURES:
            self.reply(req, struct.pack('<Q', self.pfeatures_offer))
            return True
        elif req == SET_PROTOCOL_FEATURES:
            self.pfeatures = u64()
        elif req == SET_FEATURES:
            self.log('driver features', hex(u64()))
        elif req == SET_OWNER:
            pass
        elif req == SET_SLAVE_REQ_FD:
            self.slave = socket.socket(fileno=fds[0])
        elif req == GET_CONFIG:
            off, sz, _fl = struct.unpack_from('<III', payload)
            data = (self.config + bytes(256))[off:off + sz]
            self.reply(req, struct.pack('<III', off, sz, 0) + data)
            return True
        elif req == SET_MEM_TABLE:
            n, = struct.unpack_from('<I', payload)
            self.regions = []
            for i in range(n):
                ga, size, ua, off = struct.unpack_from('<QQQQ', payload, 8 + 32 * i)
                m = mmap.mmap(fds[i], off + size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                os.close(fds[i])
                self.regions.append((ua, ga, size, m, off))
                self.log('region', hex(ga), hex(size), hex(ua), hex(off))
        elif req == SET_VRING_NUM:
            _i, self.num = struct.unpack_from('<II', payload)
            self.log('vring num', self.num)
        elif req == SET_VRING_BASE:
            _i, self.last_avail = struct.unpack_from('<II', payload)
        elif req == SET_VRING_ADDR:
            _i, _f, desc, used, avail, _log = struct.unpack_from('<IIQQQQ', payload)
            self.addrs = (desc, used, avail)
        elif req == SET_VRING_KICK:
            self.kick_fd = fds[0] if fds else None
        elif req == SET_VRING_CALL:
            self.call_fd = fds[0] if fds else None
        elif req == SET_VRING_ENABLE:
            pass
        elif req == VRING_KICK:
            # Ack first: the front end waits for it with interrupts off, so
            # it cannot take our SLAVE_VRING_CALL until it has the ack.
            if flags & F_NEED_REPLY:
                self.reply(req, struct.pack('<Q', 0))
            self.process()
            return True
        else:
            self.log('unhandled request', req)
            for fd in fds:
                os.close(fd)
            status = 1
        if flags & F_NEED_REPLY:
            self.reply(req, struct.pack('<Q', status))
        return True

    # --- the virtqueue ---
    def process(self):
        if not self.addrs or not self.num:
            return
        desc, used, avail = self.addrs
        did = False
        while True:
            avail_idx, = struct.unpack('<H', self.rd(avail + 2, 2))
            if self.last_avail == avail_idx:
                break
            head, = struct.unpack('<H', self.rd(avail + 4 + 2 * (self.last_avail % self.num), 2))
            self.last_avail = (self.last_avail + 1) & 0xffff
            readable, writable, i = b'', [], head
            while True:
                a, ln, fl, nxt = struct.unpack('<QIHH', self.rd(desc + 16 * i, 16))
                ua = self.guest_to_user(a)
                if fl & DESC_F_WRITE:
                    writable.append((ua, ln))
                else:
                    readable += self.rd(ua, ln)
                if not fl & DESC_F_NEXT:
                    break
                i = nxt
            typ, a1, a2, a3 = struct.unpack_from('<IIII', readable)
            text = readable[16:48].split(b'\0')[0].decode(errors='replace')
            self.log('request', typ, a1, a2, a3, repr(text))
            resp = struct.pack('<III', a1 + 100, a2 + 100, a3 + 100)
            self.wr(writable[0][0], resp)
            length = 8 if self.args.short_len else len(resp)
            slot = used + 4 + 8 * (self.used_idx % self.num)
            self.wr(slot, struct.pack('<II', head, length))
            self.used_idx = (self.used_idx + 1) & 0xffff
            self.wr(used + 2, struct.pack('<H', self.used_idx))
            did = True
            self.answered += 1
            if self.args.die_after is not None and self.answered >= self.args.die_after:
                self.notify()
                raise SystemExit('fake-backend: dying after %d requests (--die-after)' % self.answered)
        if did:
            self.notify()

    def notify(self):
        if self.call_fd is not None:
            os.write(self.call_fd, struct.pack('<Q', 1))
        elif self.slave is not None and self.pfeatures & (1 << PF_INBAND):
            flags = VERSION | (F_NEED_REPLY if self.pfeatures & (1 << PF_REPLY_ACK) else 0)
            # The reply (if requested) is drained by the main loop: never
            # block on it here.
            self.slave.sendall(HDR.pack(SLAVE_VRING_CALL, flags, 8) + struct.pack('<II', 0, 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('socket')
    ap.add_argument('--no-can-print', action='store_true')
    ap.add_argument('--short-len', action='store_true')
    ap.add_argument('--die-after', type=int)
    ap.add_argument('--protocol-features', type=lambda s: int(s, 0),
                    default=(1 << PF_REPLY_ACK) | (1 << PF_SLAVE_REQ) | (1 << PF_CONFIG) | (1 << PF_INBAND))
    ap.add_argument('--log', action='store_true')
    args = ap.parse_args()

    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(args.socket)
    srv.listen(1)
    print('fake-backend: listening on', args.socket, file=sys.stderr, flush=True)
    conn, _ = srv.accept()
    srv.close()
    os.unlink(args.socket)
    be = Backend(conn, args)
    while True:
        rl = [conn] + ([be.kick_fd] if be.kick_fd is not None else [])
        rl += [be.slave] if be.slave is not None else []
        ready, _, _ = select.select(rl, [], [])
        if be.slave is not None and be.slave in ready:
            if not be.slave.recv(4096):  # replies to SLAVE_VRING_CALL
                be.slave.close()
                be.slave = None
        if be.kick_fd is not None and be.kick_fd in ready:
            os.read(be.kick_fd, 8)
            be.process()
        if conn in ready and not be.handle():
            print('fake-backend: front end disconnected', file=sys.stderr, flush=True)
            return


if __name__ == '__main__':
    main()
