// SPDX-License-Identifier: MIT
/*
 * vhost-user-ref-backend: a minimal C vhost-user back-end for the virtio-test device, written
 * for the benchmark (bench/vhost-user.ts, bench/uml-e2e.ts, bench/footprint.ts) as the
 * reference the TypeScript back-end is compared with. Plain C, epoll, eventfd, mmap; one
 * front-end at a time, one queue; written from the protocol document (QEMU
 * docs/interop/vhost-user.rst) and virtio 1.2 §2.7, not derived from any other back-end.
 *
 *   vhost-user-ref-backend --socket PATH [--ready-fd N] [--queue-size N] [--publish-batch N]
 *
 * Prints "vhost-user-ref-backend: listening on PATH" once listening. SIGINT/SIGTERM remove
 * the socket and exit.
 *
 * Device: for each chain, reads the 48-byte request {type, arg1, arg2, arg3, arg4[32]} from
 * the readable part and writes {arg1+100, arg2+100, arg3+100} to the writable part (used
 * length 12). Direct and indirect chains, EVENT_IDX or flags-based suppression; used.idx
 * published (and a call considered) after the first chain of a pass, then every
 * --publish-batch chains (default 32; 0: once per pass), and at the end of the pass: the rule
 * of the TypeScript runtime, so both do the same protocol work per request.
 *
 * Requests: GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES (MQ, REPLY_ACK, BACKEND_REQ, CONFIG,
 * RESET_DEVICE), SET_OWNER, RESET_OWNER, SET_BACKEND_REQ_FD, SET_MEM_TABLE,
 * SET_VRING_NUM/ADDR/BASE/KICK/CALL/ERR/ENABLE, GET_VRING_BASE, GET_CONFIG, SET_CONFIG,
 * GET_QUEUE_NUM, RESET_DEVICE. Everything else is refused (ack 1). No polling mode (a kick
 * fd is required), no inflight tracking, no memory hot-plug.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NAME "vhost-user-ref-backend"

/* ---- protocol constants ([vhost-user "Message Specification"]) ---- */
enum {
	GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, RESET_OWNER = 4, SET_MEM_TABLE = 5,
	SET_VRING_NUM = 8, SET_VRING_ADDR = 9, SET_VRING_BASE = 10, GET_VRING_BASE = 11,
	SET_VRING_KICK = 12, SET_VRING_CALL = 13, SET_VRING_ERR = 14, GET_PROTOCOL_FEATURES = 15,
	SET_PROTOCOL_FEATURES = 16, GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18,
	SET_BACKEND_REQ_FD = 21, GET_CONFIG = 24, SET_CONFIG = 25, RESET_DEVICE = 34,
};
#define FLAG_VERSION 0x1u
#define FLAG_REPLY 0x4u
#define FLAG_NEED_REPLY 0x8u
#define PF_MQ 0
#define PF_REPLY_ACK 3
#define PF_BACKEND_REQ 5
#define PF_CONFIG 9
#define PF_RESET_DEVICE 13
#define OFFERED_PROTOCOL ((1ull << PF_MQ) | (1ull << PF_REPLY_ACK) | (1ull << PF_BACKEND_REQ) | \
			  (1ull << PF_CONFIG) | (1ull << PF_RESET_DEVICE))
#define F_CAN_PRINT 0
#define F_INDIRECT 28
#define F_EVENT_IDX 29
#define F_PROTOCOL 30
#define F_VERSION_1 32
#define OFFERED_FEATURES ((1ull << F_CAN_PRINT) | (1ull << F_INDIRECT) | (1ull << F_EVENT_IDX) | \
			  (1ull << F_PROTOCOL) | (1ull << F_VERSION_1))
#define MAX_PAYLOAD 4096
#define MAX_FDS 8
#define MAX_REGIONS 8
#define CONFIG_SIZE 12

/* ---- split ring (virtio 1.2 §2.7) ---- */
struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
#define D_NEXT 1
#define D_WRITE 2
#define D_INDIRECT 4
#define AVAIL_F_NO_INTERRUPT 1
#define USED_F_NO_NOTIFY 1

struct region { uint64_t gpa, size, uva; uint8_t *host; void *map; size_t maplen; };

struct vring {
	unsigned num;
	uint64_t desc_uva, avail_uva, used_uva;
	struct desc *desc;
	volatile uint16_t *avail; /* flags, idx, ring[num], used_event */
	volatile uint16_t *used;  /* flags, idx, {u32 id, u32 len}[num], avail_event */
	uint16_t last_avail, used_idx;
	int kick, call, err;
	int started, enabled;
};

static struct {
	int listen_fd, conn, epfd, backend_fd;
	uint64_t features, protocol;
	int features_set;
	struct region reg[MAX_REGIONS];
	int nreg;
	struct vring vq;
	unsigned max_queue;
	unsigned publish_batch;
	uint8_t config[CONFIG_SIZE];
	const char *socket_path;
	unsigned long served;
} S = { .listen_fd = -1, .conn = -1, .backend_fd = -1 };

static void die(const char *what)
{
	fprintf(stderr, NAME ": %s: %s\n", what, strerror(errno));
	exit(1);
}

static void warnx(const char *fmt, const char *a)
{
	fprintf(stderr, NAME ": ");
	fprintf(stderr, fmt, a);
	fputc('\n', stderr);
}

static void closefd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static uint8_t *gpa_to_host(uint64_t gpa, uint64_t len)
{
	for (int i = 0; i < S.nreg; i++) {
		struct region *r = &S.reg[i];
		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

static uint8_t *uva_to_host(uint64_t uva, uint64_t len)
{
	for (int i = 0; i < S.nreg; i++) {
		struct region *r = &S.reg[i];
		if (uva >= r->uva && uva - r->uva <= r->size && len <= r->size - (uva - r->uva))
			return r->host + (uva - r->uva);
	}
	return NULL;
}

static void unmap_all(void)
{
	for (int i = 0; i < S.nreg; i++)
		munmap(S.reg[i].map, S.reg[i].maplen);
	S.nreg = 0;
}

static int has(uint64_t f) { return (S.features >> f) & 1; }

/* ---- the ring ---- */

static void kick_watch(int on)
{
	if (S.vq.kick < 0)
		return;
	if (on) {
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = S.vq.kick };
		if (epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.vq.kick, &ev) < 0 && errno != EEXIST)
			die("epoll_ctl kick");
	} else {
		epoll_ctl(S.epfd, EPOLL_CTL_DEL, S.vq.kick, NULL);
	}
}

static int ring_runnable(void)
{
	struct vring *v = &S.vq;
	return v->started && v->enabled && v->num && v->desc && S.nreg > 0 && S.features_set;
}

/* Translate the ring's user addresses; 0 on success. */
static int ring_map(void)
{
	struct vring *v = &S.vq;
	unsigned n = v->num;
	v->desc = (struct desc *)uva_to_host(v->desc_uva, 16ull * n);
	v->avail = (volatile uint16_t *)uva_to_host(v->avail_uva, 6 + 2ull * n);
	v->used = (volatile uint16_t *)uva_to_host(v->used_uva, 6 + 8ull * n);
	if (!v->desc || !v->avail || !v->used) {
		v->desc = NULL;
		return -1;
	}
	return 0;
}

/* Serve one chain; returns the used length, or -1 for a malformed chain. */
static int serve_chain(uint16_t head)
{
	struct vring *v = &S.vq;
	struct desc *table = v->desc;
	unsigned table_len = v->num, i = head, steps = 0, indirect = 0;
	uint8_t req[48];
	unsigned got = 0, wrote = 0;
	uint8_t resp[12];
	int have_resp = 0;

	if (i >= table_len)
		return -1;
	for (;;) {
		struct desc d = table[i];
		if (d.flags & D_INDIRECT) {
			if (indirect || !has(F_INDIRECT) || (d.flags & D_NEXT) || d.len % 16 || d.len == 0)
				return -1;
			table = (struct desc *)gpa_to_host(d.addr, d.len);
			if (!table)
				return -1;
			table_len = d.len / 16;
			indirect = 1;
			i = 0;
			steps = 0;
			continue;
		}
		uint8_t *p = gpa_to_host(d.addr, d.len);
		if (!p)
			return -1;
		if (!(d.flags & D_WRITE)) {
			if (wrote)
				return -1; /* readable after writable (§2.7.4.2) */
			unsigned take = d.len < sizeof req - got ? d.len : sizeof req - got;
			memcpy(req + got, p, take);
			got += take;
		} else {
			if (!have_resp) {
				if (got < sizeof req)
					return -1;
				uint32_t a[4];
				memcpy(a, req, 16);
				uint32_t r[3] = { a[1] + 100, a[2] + 100, a[3] + 100 };
				memcpy(resp, r, 12);
				have_resp = 1;
			}
			unsigned take = d.len < sizeof resp - wrote ? d.len : sizeof resp - wrote;
			memcpy(p, resp + wrote, take);
			wrote += take;
		}
		if (!(d.flags & D_NEXT))
			break;
		if (++steps >= table_len || d.next >= table_len)
			return -1;
		i = d.next;
	}
	if (wrote < sizeof resp)
		return -1;
	S.served++;
	return (int)wrote;
}

static void device_error(const char *why)
{
	warnx("device error: %s; ring stopped", why);
	kick_watch(0);
	S.vq.started = 0;
}

/* Serve until the ring is empty with notifications re-enabled (§2.7.10). */
/* Publish used.idx and send a used buffer notification if the driver wants one (§2.7.7.2). */
static void publish(uint16_t *signalled)
{
	struct vring *v = &S.vq;
	unsigned n = v->num;
	volatile uint16_t *used_event = v->avail + 2 + n;
	int notify;

	__atomic_store_n(&v->used[1], v->used_idx, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (has(F_EVENT_IDX)) {
		uint16_t ev = *used_event;
		notify = (uint16_t)(v->used_idx - ev - 1) < (uint16_t)(v->used_idx - *signalled);
	} else {
		notify = !(v->avail[0] & AVAIL_F_NO_INTERRUPT);
	}
	*signalled = v->used_idx;
	if (notify && v->call >= 0) {
		uint64_t one = 1;
		if (write(v->call, &one, 8) < 0 && errno != EAGAIN)
			warnx("writing the call fd: %s", strerror(errno));
	}
}

/*
 * Serve until the ring is empty with notifications re-enabled (§2.7.10). Within a pass,
 * used.idx is published after the first chain, then every S.publish_batch chains (0: once at
 * the end of the pass), the same rule as the TypeScript runtime (src/device/runtime.ts).
 */
static void process(void)
{
	struct vring *v = &S.vq;
	unsigned n = v->num;
	int eidx = has(F_EVENT_IDX);
	volatile uint16_t *avail_event = (volatile uint16_t *)((volatile uint8_t *)v->used + 4 + 8 * n);

	if (!ring_runnable())
		return;
	for (;;) {
		if (!eidx)
			__atomic_store_n(&v->used[0], v->used[0] | USED_F_NO_NOTIFY, __ATOMIC_RELAXED);
		uint16_t signalled = v->used_idx;
		unsigned done = 0, due = S.publish_batch ? 1 : 0; /* the first chain goes out at once */
		uint16_t avail_idx;
		while ((avail_idx = __atomic_load_n(&v->avail[1], __ATOMIC_ACQUIRE)) != v->last_avail) {
			if ((uint16_t)(avail_idx - v->last_avail) > n)
				return device_error("available index moved more than the ring size");
			while (v->last_avail != avail_idx) {
				uint16_t head = v->avail[2 + v->last_avail % n];
				int len = serve_chain(head);
				if (len < 0)
					return device_error("malformed chain");
				volatile uint32_t *e = (volatile uint32_t *)((volatile uint8_t *)v->used + 4 + 8 * (v->used_idx % n));
				e[0] = head;
				e[1] = (uint32_t)len;
				v->used_idx++;
				v->last_avail++;
				if (++done == due) {
					publish(&signalled);
					done = 0;
					due = S.publish_batch;
				}
			}
		}
		if (done)
			publish(&signalled);
		/* Re-enable notifications, then re-check (a buffer may have raced in). */
		if (eidx)
			*avail_event = v->last_avail;
		else
			__atomic_store_n(&v->used[0], v->used[0] & ~USED_F_NO_NOTIFY, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (__atomic_load_n(&v->avail[1], __ATOMIC_ACQUIRE) == v->last_avail)
			return;
	}
}

static void ring_stop(void)
{
	kick_watch(0);
	S.vq.desc = NULL;
}

/* Start or stop the ring to match the configuration. */
static void ring_sync(void)
{
	struct vring *v = &S.vq;
	if (v->started && v->enabled && v->num && v->desc_uva && S.nreg > 0 && S.features_set) {
		if (!v->desc) {
			if (ring_map() < 0) {
				warnx("%s", "ring addresses are not inside the memory table");
				return;
			}
			v->used_idx = v->used[1];
			kick_watch(1);
			process(); /* buffers made available while stopped */
		}
	} else {
		ring_stop();
	}
}

static void ring_reset(void)
{
	ring_stop();
	closefd(&S.vq.kick);
	closefd(&S.vq.call);
	closefd(&S.vq.err);
	memset(&S.vq, 0, sizeof S.vq);
	S.vq.kick = S.vq.call = S.vq.err = -1;
}

/* ---- messages ---- */

struct msg {
	uint32_t request, flags, size;
	uint8_t payload[MAX_PAYLOAD];
	int fds[MAX_FDS];
	int nfds;
};

static void end_connection(const char *why)
{
	if (why)
		warnx("front-end disconnected (%s)", why);
	ring_reset();
	unmap_all();
	closefd(&S.backend_fd);
	epoll_ctl(S.epfd, EPOLL_CTL_DEL, S.conn, NULL);
	closefd(&S.conn);
	S.features = S.protocol = 0;
	S.features_set = 0;
	memset(S.config, 0, sizeof S.config);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = S.listen_fd };
	epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.listen_fd, &ev);
}

static int read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t r = read(fd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* Reads one message (the socket is blocking; called when readable). 0 ok, -1 closed/broken. */
static int recv_msg(struct msg *m)
{
	uint32_t hdr[3];
	char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
	struct iovec iov = { hdr, sizeof hdr };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
	ssize_t r;

	do
		r = recvmsg(S.conn, &mh, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return -1;
	m->nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(m->fds + m->nfds, CMSG_DATA(c), sizeof(int) * (size_t)n);
			m->nfds += n;
		}
	}
	if (r < (ssize_t)sizeof hdr && read_full(S.conn, (uint8_t *)hdr + r, sizeof hdr - (size_t)r) < 0)
		return -1;
	m->request = hdr[0];
	m->flags = hdr[1];
	m->size = hdr[2];
	if ((m->flags & 3) != FLAG_VERSION || m->size > MAX_PAYLOAD)
		return -1;
	if (m->size && read_full(S.conn, m->payload, m->size) < 0)
		return -1;
	return 0;
}

static void send_reply(uint32_t request, const void *payload, uint32_t size)
{
	uint8_t buf[12 + MAX_PAYLOAD];
	uint32_t hdr[3] = { request, FLAG_VERSION | FLAG_REPLY, size };
	memcpy(buf, hdr, 12);
	memcpy(buf + 12, payload, size);
	size_t len = 12 + size, off = 0;
	while (off < len) {
		ssize_t w = send(S.conn, buf + off, len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return;
		off += (size_t)w;
	}
}

static void reply_u64(uint32_t request, uint64_t v) { send_reply(request, &v, 8); }

static uint64_t u64(const struct msg *m, int *bad)
{
	uint64_t v = 0;
	if (m->size < 8)
		*bad = 1;
	else
		memcpy(&v, m->payload, 8);
	return v;
}

/* Takes fd i of the message (the caller closes the others). */
static int take_fd(struct msg *m, int i)
{
	if (i >= m->nfds)
		return -1;
	int fd = m->fds[i];
	m->fds[i] = -1;
	return fd;
}

static int set_mem_table(struct msg *m)
{
	uint32_t n;
	if (m->size < 8)
		return -1;
	memcpy(&n, m->payload, 4);
	if (n == 0 || n > MAX_REGIONS || m->size < 8 + 32 * n || (int)n > m->nfds)
		return -1;
	ring_stop();
	unmap_all();
	for (uint32_t i = 0; i < n; i++) {
		uint64_t d[4]; /* gpa, size, uva, mmap_offset */
		memcpy(d, m->payload + 8 + 32 * i, 32);
		int fd = take_fd(m, (int)i);
		size_t len = d[1] + d[3];
		void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
		if (p == MAP_FAILED) {
			warnx("mmap: %s", strerror(errno));
			unmap_all();
			return -1;
		}
		S.reg[S.nreg++] = (struct region){ .gpa = d[0], .size = d[1], .uva = d[2],
						  .host = (uint8_t *)p + d[3], .map = p, .maplen = len };
	}
	ring_sync();
	return 0;
}

/* Handles one request. Returns 1 if a reply was sent, 0 for success without one, -1 refused. */
static int handle(struct msg *m)
{
	struct vring *v = &S.vq;
	int bad = 0;
	uint32_t st[2];

	switch (m->request) {
	case GET_FEATURES:
		reply_u64(m->request, OFFERED_FEATURES);
		return 1;
	case SET_FEATURES: {
		uint64_t f = u64(m, &bad);
		if (bad || (f & ~OFFERED_FEATURES))
			return -1;
		S.features = f;
		S.features_set = 1;
		if (!(f & (1ull << F_PROTOCOL)))
			v->enabled = 1;
		ring_stop();
		ring_sync();
		return 0;
	}
	case GET_PROTOCOL_FEATURES:
		reply_u64(m->request, OFFERED_PROTOCOL);
		return 1;
	case SET_PROTOCOL_FEATURES: {
		uint64_t f = u64(m, &bad);
		S.protocol = f & OFFERED_PROTOCOL;
		return bad || (f & ~OFFERED_PROTOCOL) ? -1 : 0;
	}
	case SET_OWNER:
		return 0;
	case RESET_OWNER:
		v->enabled = 0;
		ring_sync();
		return 0;
	case RESET_DEVICE:
		ring_reset();
		S.features = 0;
		S.features_set = 0;
		memset(S.config, 0, sizeof S.config);
		return 0;
	case SET_BACKEND_REQ_FD:
		closefd(&S.backend_fd);
		S.backend_fd = take_fd(m, 0);
		return S.backend_fd >= 0 ? 0 : -1;
	case SET_MEM_TABLE:
		return set_mem_table(m);
	case SET_VRING_NUM:
	case SET_VRING_BASE:
	case GET_VRING_BASE:
		if (m->size < 8)
			return -1;
		memcpy(st, m->payload, 8);
		if (st[0] != 0)
			return -1;
		if (m->request == SET_VRING_NUM) {
			if (!st[1] || (st[1] & (st[1] - 1)) || st[1] > S.max_queue)
				return -1;
			ring_stop();
			v->num = st[1];
			ring_sync();
		} else if (m->request == SET_VRING_BASE) {
			if (st[1] > 0xffff)
				return -1;
			ring_stop();
			v->last_avail = (uint16_t)st[1];
			ring_sync();
		} else {
			ring_stop();
			closefd(&v->kick);
			v->started = 0;
			st[1] = v->last_avail;
			send_reply(m->request, st, 8);
			return 1;
		}
		return 0;
	case SET_VRING_ADDR: {
		uint32_t idx, flags;
		uint64_t a[5]; /* desc, used, avail, log */
		if (m->size < 40)
			return -1;
		memcpy(&idx, m->payload, 4);
		memcpy(&flags, m->payload + 4, 4);
		memcpy(a, m->payload + 8, 32);
		if (idx != 0 || a[0] % 16 || a[1] % 4 || a[2] % 2)
			return -1;
		ring_stop();
		v->desc_uva = a[0];
		v->used_uva = a[1];
		v->avail_uva = a[2];
		ring_sync();
		return 0;
	}
	case SET_VRING_KICK:
	case SET_VRING_CALL:
	case SET_VRING_ERR: {
		uint64_t x = u64(m, &bad);
		if (bad || (x & 0xff) != 0 || (x & ~0x1ffull))
			return -1;
		int fd = (x & 0x100) ? -1 : take_fd(m, 0);
		if (!(x & 0x100) && fd < 0)
			return -1;
		if (m->request == SET_VRING_KICK) {
			if (fd < 0)
				return -1; /* polling mode: not supported here */
			ring_stop();
			closefd(&v->kick);
			v->kick = fd;
			v->started = 1;
			ring_sync();
		} else if (m->request == SET_VRING_CALL) {
			closefd(&v->call);
			v->call = fd;
		} else {
			closefd(&v->err);
			v->err = fd;
		}
		return 0;
	}
	case SET_VRING_ENABLE:
		if (m->size < 8)
			return -1;
		memcpy(st, m->payload, 8);
		if (st[0] != 0 || st[1] > 1)
			return -1;
		v->enabled = (int)st[1];
		ring_sync();
		return 0;
	case GET_QUEUE_NUM:
		reply_u64(m->request, 1);
		return 1;
	case GET_CONFIG:
	case SET_CONFIG: {
		uint32_t c[3]; /* offset, size, flags */
		uint8_t out[12 + 256];
		if (m->size < 12)
			return m->request == GET_CONFIG ? (send_reply(m->request, NULL, 0), 1) : -1;
		memcpy(c, m->payload, 12);
		int ok = c[0] <= CONFIG_SIZE && c[1] <= CONFIG_SIZE - c[0] && m->size >= 12 + c[1];
		if (m->request == SET_CONFIG) {
			if (!ok)
				return -1;
			for (uint32_t i = 0; i < c[1]; i++)
				if (c[0] + i >= 4) /* num_pages is the device's */
					S.config[c[0] + i] = m->payload[12 + i];
			return 0;
		}
		if (!ok) {
			send_reply(m->request, NULL, 0);
			return 1;
		}
		memcpy(out, c, 12);
		memcpy(out + 12, S.config + c[0], c[1]);
		send_reply(m->request, out, 12 + c[1]);
		return 1;
	}
	}
	return -1;
}

static int always_replies(uint32_t r)
{
	return r == GET_FEATURES || r == GET_PROTOCOL_FEATURES || r == GET_VRING_BASE ||
	       r == GET_QUEUE_NUM || r == GET_CONFIG;
}

static void on_message(void)
{
	static struct msg m;
	if (recv_msg(&m) < 0) {
		for (int i = 0; i < m.nfds; i++)
			if (m.fds[i] >= 0)
				close(m.fds[i]);
		end_connection(NULL);
		return;
	}
	int r = handle(&m);
	for (int i = 0; i < m.nfds; i++)
		if (m.fds[i] >= 0)
			close(m.fds[i]);
	if (r < 0) {
		char what[32];
		snprintf(what, sizeof what, "%u", m.request);
		warnx("request %s refused", what);
		if (always_replies(m.request)) {
			send_reply(m.request, NULL, 0);
			return;
		}
	}
	if (r <= 0 && (m.flags & FLAG_NEED_REPLY) && (S.protocol & (1ull << PF_REPLY_ACK)))
		reply_u64(m.request, r < 0 ? 1 : 0);
}

static void on_signal(int sig)
{
	(void)sig;
	if (S.socket_path)
		unlink(S.socket_path);
	_exit(0);
}

int main(int argc, char **argv)
{
	int ready_fd = -1;
	S.max_queue = 32768;
	S.publish_batch = 32;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--socket") && i + 1 < argc)
			S.socket_path = argv[++i];
		else if (!strcmp(argv[i], "--ready-fd") && i + 1 < argc)
			ready_fd = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--queue-size") && i + 1 < argc)
			S.max_queue = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--publish-batch") && i + 1 < argc)
			S.publish_batch = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--quiet"))
			; /* never prints requests */
		else {
			fprintf(stderr, "usage: " NAME " --socket PATH [--ready-fd N] [--queue-size N] [--publish-batch N]\n");
			return 2;
		}
	}
	if (!S.socket_path) {
		fprintf(stderr, "usage: " NAME " --socket PATH [--ready-fd N] [--queue-size N] [--publish-batch N]\n");
		return 2;
	}
	S.vq.kick = S.vq.call = S.vq.err = -1;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(S.socket_path) >= sizeof sa.sun_path) {
		fprintf(stderr, NAME ": socket path too long\n");
		return 2;
	}
	strcpy(sa.sun_path, S.socket_path);
	S.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (S.listen_fd < 0)
		die("socket");
	unlink(S.socket_path);
	if (bind(S.listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("bind");
	if (listen(S.listen_fd, 4) < 0)
		die("listen");
	S.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (S.epfd < 0)
		die("epoll_create1");
	struct epoll_event lev = { .events = EPOLLIN, .data.fd = S.listen_fd };
	epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.listen_fd, &lev);
	printf(NAME ": listening on %s\n", S.socket_path);
	fflush(stdout);
	if (ready_fd >= 0) {
		if (write(ready_fd, "ready\n", 6) < 0)
			warnx("--ready-fd: %s", strerror(errno));
		close(ready_fd);
	}

	for (;;) {
		struct epoll_event evs[8];
		int n = epoll_wait(S.epfd, evs, 8, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == S.listen_fd) {
				if (S.conn >= 0)
					continue;
				S.conn = accept4(S.listen_fd, NULL, NULL, SOCK_CLOEXEC);
				if (S.conn < 0)
					continue;
				epoll_ctl(S.epfd, EPOLL_CTL_DEL, S.listen_fd, NULL);
				struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.fd = S.conn };
				epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.conn, &ev);
			} else if (fd == S.conn) {
				on_message();
			} else if (fd == S.vq.kick) {
				uint64_t cnt;
				if (read(fd, &cnt, 8) < 0 && errno != EAGAIN)
					continue;
				process();
			}
		}
	}
}
