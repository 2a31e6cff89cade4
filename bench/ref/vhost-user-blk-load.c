// SPDX-License-Identifier: MIT
/*
 * vhost-user-blk-load: a minimal C vhost-user front-end and virtio-blk driver, the load
 * generator of bench/blk.ts. Written for the benchmark from the vhost-user document and
 * virtio 1.2 §2.7 and §5.2, on the frontend parts of bench/ref/vhost-user-ref-load.c (no
 * QEMU or libvhost-user code). It drives any vhost-user-blk back-end: our `virtio-backend
 * --device blk` and qemu-storage-daemon's vhost-user-blk export.
 *
 *   vhost-user-blk-load --socket S --backend-pid P --size BYTES
 *                       --configs OP:QUEUES:DEPTH:BS[:SEGS][,...] [--ms 500] [--warm 150] [--seed N]
 *
 * OP: r (random reads), w (random writes), m (random, each request a read or a write with
 * probability 1/2), s (sequential reads, one cursor shared by the queues, wrapping at the end).
 * QUEUES: 1..8 request queues, DEPTH: 1..128 requests in flight on EACH queue, BS: bytes per
 * request (a multiple of 4096; random offsets are BS-aligned inside the first BYTES bytes),
 * SEGS: data descriptors per request (default 1; BS / SEGS a multiple of 512), e.g. 64 for a
 * buffer that arrives as 4 KiB pages, as a guest's O_DIRECT buffer does (the back-end's
 * seg_max must allow it).
 *
 * For each configuration: connects, negotiates (REPLY_ACK, MQ when QUEUES > 1; VERSION_1,
 * EVENT_IDX, INDIRECT_DESC, FLUSH — so both back-ends run a writeback cache — and SEG_MAX,
 * BLK_SIZE, MQ when offered), one memfd of guest RAM, QUEUES rings of 256 entries with their
 * kick and call eventfds. Every request is one indirect descriptor whose table is the 16-byte
 * header, the BS data bytes in SEGS descriptors and the status byte (Linux's virtio_blk layout). Closed loop: each completion (status byte checked: 0 = OK; it is set
 * to 0xff before every submission) is resubmitted at once with a new offset, avail.idx
 * published once per pass over a queue's used ring, kicks as the ring's avail_event asks.
 * When nothing is used it sleeps in poll() on the call eventfds (then read()s those that fired). After the measured window it stops resubmitting and waits until every request is
 * answered before it disconnects (no request is left to a back-end across a disconnect).
 *
 * Prints one JSON line per configuration: requests and bytes of the measured window, its
 * seconds, the back-end's CPU seconds (its process CPU-time clock, clock_getcpuclockid: ns,
 * all threads, exited ones included), its voluntary context switches (sleeps: per thread,
 * /proc/P/task/T/status, summed over the threads alive at the end of the window, each minus its
 * count at the start or 0 for a thread born meanwhile; threads that exit within the window
 * take their sleeps with them: "threadsGone" counts them), its thread counts at the start and
 * the end, this process's CPU seconds, the requests of the whole connection ("total": warm-up
 * and drain included, for a system-call count taken over the connection) and the features
 * negotiated.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define QSIZE 256
#define MAXQ 8
#define MAXDEPTH 128
/* Per queue, 64 KiB of ring metadata: descriptors, avail, used, indirect tables, headers. */
#define QAREA 65536
#define DESC_OFF 0
#define AVAIL_OFF 4096
#define USED_OFF 8192
#define HDR_OFF 32768 /* MAXDEPTH slots of 32 bytes: 16-byte header, status byte at 16 */
#define MAXSEGS 256
#define DATA_OFF (1 << 20)

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };

static int sock = -1;
static int reply_ack;

static void die(const char *what)
{
	fprintf(stderr, "vhost-user-blk-load: %s: %s\n", what, errno ? strerror(errno) : "failed");
	exit(1);
}

static void send_msg(uint32_t req, const void *payload, uint32_t size, const int *fds, int nfds, int need_reply)
{
	uint8_t buf[12 + 256];
	uint32_t hdr[3] = { req, 0x1 | (need_reply ? 0x8 : 0), size };
	memcpy(buf, hdr, 12);
	if (size)
		memcpy(buf + 12, payload, size);
	struct iovec iov = { buf, 12 + size };
	char cbuf[CMSG_SPACE(sizeof(int) * 8)];
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds) {
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) != (ssize_t)(12 + size))
		die("sendmsg");
}

static uint64_t recv_u64(uint32_t req)
{
	uint32_t hdr[3];
	uint64_t v = 0;
	if (recv(sock, hdr, 12, MSG_WAITALL) != 12 || hdr[0] != req || !(hdr[1] & 0x4) || hdr[2] != 8 ||
	    recv(sock, &v, 8, MSG_WAITALL) != 8) {
		errno = 0;
		die("bad reply");
	}
	return v;
}

/* A request without a reply: with REPLY_ACK, ask for and check the ack. */
static void request(uint32_t req, const void *payload, uint32_t size, const int *fds, int nfds)
{
	send_msg(req, payload, size, fds, nfds, reply_ack);
	if (reply_ack && recv_u64(req) != 0) {
		errno = 0;
		fprintf(stderr, "request %u: ", req);
		die("refused");
	}
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static double self_cpu(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* CPU seconds of process pid, all threads, exited ones included (ns resolution). */
static double proc_cpu(int pid)
{
	clockid_t clk;
	struct timespec t;
	if (clock_getcpuclockid(pid, &clk) == 0 && clock_gettime(clk, &t) == 0)
		return t.tv_sec + t.tv_nsec / 1e9;
	return -1;
}

/* voluntary_ctxt_switches of each live thread of pid. */
#define MAXT 512
struct tcount { int tid; long n; };

static int proc_threads(int pid, struct tcount *out)
{
	char path[96], line[256];
	snprintf(path, sizeof path, "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int k = 0;
	struct dirent *e;
	while ((e = readdir(d)) && k < MAXT) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/%d/task/%.20s/status", pid, e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue; /* the thread exited meanwhile */
		while (fgets(line, sizeof line, f))
			if (!strncmp(line, "voluntary_ctxt_switches:", 24)) {
				out[k].tid = atoi(e->d_name);
				out[k].n = atol(line + 24);
				k++;
				break;
			}
		fclose(f);
	}
	closedir(d);
	return k;
}

struct queue {
	uint8_t *base;
	struct desc *desc;
	volatile uint16_t *avail, *used, *used_event, *avail_event;
	uint16_t avail_idx, last_used;
	int kick, call;
	int inflight;
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static inline uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static void run(const char *path, int pid, uint64_t size, char op, int nq, int depth, uint32_t bs, int segs, int ms, int warm)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("connect");
	reply_ack = 0;

	/* Indirect tables after the data: one per slot, SEGS + 2 descriptors, 64-byte aligned. */
	size_t tbl_stride = ((size_t)(segs + 2) * 16 + 63) & ~(size_t)63;
	size_t tbl_off = DATA_OFF + (size_t)nq * (size_t)depth * bs;
	size_t ram_bytes = (tbl_off + (size_t)nq * (size_t)depth * tbl_stride + 4095) & ~(size_t)4095;
	int memfd = memfd_create("vt-blk-ram", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, (off_t)ram_bytes) < 0)
		die("memfd");
	uint8_t *ram = mmap(NULL, ram_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (ram == MAP_FAILED)
		die("mmap");
	memset(ram, 0, ram_bytes); /* our page faults now, not in the window */
	for (size_t i = DATA_OFF; i < tbl_off; i++)
		ram[i] = (uint8_t)(i * 131 + 7);

	send_msg(3, NULL, 0, NULL, 0, 0); /* SET_OWNER */
	send_msg(1, NULL, 0, NULL, 0, 0); /* GET_FEATURES */
	uint64_t offered = recv_u64(1);
	send_msg(15, NULL, 0, NULL, 0, 0); /* GET_PROTOCOL_FEATURES */
	uint64_t pfo = recv_u64(15);
	uint64_t pf = pfo & ((1ull << 3) | (nq > 1 ? 1ull << 0 : 0)); /* REPLY_ACK, MQ */
	if (nq > 1 && !(pf & 1)) {
		errno = 0;
		die("back-end lacks VHOST_USER_PROTOCOL_F_MQ");
	}
	send_msg(16, &pf, 8, NULL, 0, 0); /* SET_PROTOCOL_FEATURES */
	reply_ack = (pf & (1ull << 3)) != 0;
	if (nq > 1) {
		send_msg(17, NULL, 0, NULL, 0, 0); /* GET_QUEUE_NUM */
		uint64_t n = recv_u64(17);
		if (n < (uint64_t)nq) {
			errno = 0;
			fprintf(stderr, "back-end has %llu queues: ", (unsigned long long)n);
			die("too few queues");
		}
	}
	/* VERSION_1, PROTOCOL_FEATURES, EVENT_IDX, INDIRECT_DESC, FLUSH required; SEG_MAX, BLK_SIZE, MQ if offered */
	uint64_t need = (1ull << 32) | (1ull << 30) | (1ull << 29) | (1ull << 28) | (1ull << 9) | (nq > 1 ? 1ull << 12 : 0);
	uint64_t want = need | (offered & ((1ull << 2) | (1ull << 6) | (1ull << 12)));
	if ((need & offered) != need) {
		errno = 0;
		fprintf(stderr, "offered 0x%llx, needed 0x%llx: ", (unsigned long long)offered, (unsigned long long)need);
		die("back-end lacks features");
	}
	request(2, &want, 8, NULL, 0); /* SET_FEATURES */
	struct { uint32_t n, pad; uint64_t gpa, size, uva, off; } mt = { 1, 0, 0, ram_bytes, (uint64_t)(uintptr_t)ram, 0 };
	request(5, &mt, sizeof mt, &memfd, 1); /* SET_MEM_TABLE */

	struct queue qs[MAXQ];
	memset(qs, 0, sizeof qs);
	uint64_t blocks = size / bs, seq = 0;
	for (int q = 0; q < nq; q++) {
		struct queue *Q = &qs[q];
		Q->base = ram + (size_t)q * QAREA;
		Q->desc = (struct desc *)(Q->base + DESC_OFF);
		Q->avail = (volatile uint16_t *)(Q->base + AVAIL_OFF);
		Q->used = (volatile uint16_t *)(Q->base + USED_OFF);
		Q->used_event = Q->avail + 2 + QSIZE;
		Q->avail_event = (volatile uint16_t *)(Q->base + USED_OFF + 4 + 8 * QSIZE);
		Q->kick = eventfd(0, EFD_CLOEXEC);
		Q->call = eventfd(0, EFD_CLOEXEC);
		if (Q->kick < 0 || Q->call < 0)
			die("eventfd");
		uint32_t st[2] = { (uint32_t)q, QSIZE };
		request(8, st, 8, NULL, 0); /* SET_VRING_NUM */
		st[1] = 0;
		request(10, st, 8, NULL, 0); /* SET_VRING_BASE */
		uint64_t gbase = (uint64_t)((uint8_t *)Q->base - ram);
		struct { uint32_t idx, flags; uint64_t desc, used, avail, log; } va = {
			(uint32_t)q, 0, (uint64_t)(uintptr_t)Q->desc, (uint64_t)(uintptr_t)(Q->base + USED_OFF),
			(uint64_t)(uintptr_t)(Q->base + AVAIL_OFF), 0 };
		request(9, &va, sizeof va, NULL, 0); /* SET_VRING_ADDR */
		uint64_t idx = (uint64_t)q;
		request(13, &idx, 8, &Q->call, 1); /* SET_VRING_CALL */
		request(12, &idx, 8, &Q->kick, 1); /* SET_VRING_KICK */
		st[1] = 1;
		request(18, st, 8, NULL, 0); /* SET_VRING_ENABLE */
		/* Slot s: ring descriptor s -> indirect table (header, SEGS data descriptors, status). */
		for (int s = 0; s < depth; s++) {
			uint64_t tbl = tbl_off + ((uint64_t)q * (uint64_t)depth + (uint64_t)s) * tbl_stride;
			struct desc *t = (struct desc *)(ram + tbl);
			uint64_t hdr = gbase + HDR_OFF + 32 * (uint64_t)s;
			uint64_t data = DATA_OFF + ((uint64_t)q * (uint64_t)depth + (uint64_t)s) * bs;
			uint32_t seg = bs / (uint32_t)segs;
			t[0] = (struct desc){ hdr, 16, 1, 1 };
			for (int i = 1; i <= segs; i++)
				t[i] = (struct desc){ data + (uint64_t)(i - 1) * seg, seg, 1, (uint16_t)(i + 1) };
			t[segs + 1] = (struct desc){ hdr + 16, 1, 2, 0 };
			Q->desc[s] = (struct desc){ tbl, (uint32_t)(segs + 2) * 16, 4, 0 };
		}
	}
	if (!reply_ack) {
		send_msg(1, NULL, 0, NULL, 0, 0); /* barrier */
		recv_u64(1);
	}

	long count = 0, bad = 0, c0 = 0, reads = 0;
	/* (Re)arms slot s of queue Q with a new request and puts it on the avail ring. */
#define SUBMIT(Q, s) do { \
		uint8_t *h = (Q)->base + HDR_OFF + 32 * (s); \
		struct desc *t = (struct desc *)(ram + tbl_off + ((size_t)((Q) - qs) * (size_t)depth + (size_t)(s)) * tbl_stride); \
		int rd = op == 'r' || op == 's' || (op == 'm' && (rnd() >> 40) & 1); \
		uint64_t blk = op == 's' ? (seq++ % blocks) : (rnd() >> 11) % blocks; \
		uint32_t type = rd ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT; \
		uint64_t sector = blk * (bs / 512); \
		memcpy(h, &type, 4); \
		memset(h + 4, 0, 4); \
		memcpy(h + 8, &sector, 8); \
		h[16] = 0xff; \
		for (int i_ = 1; i_ <= segs; i_++) \
			t[i_].flags = (uint16_t)(rd ? 3 : 1); \
		reads += rd; \
		(Q)->avail[2 + ((Q)->avail_idx++ % QSIZE)] = (uint16_t)(s); \
		(Q)->inflight++; \
	} while (0)

	uint64_t one = 1, cnt;
	for (int q = 0; q < nq; q++) {
		struct queue *Q = &qs[q];
		for (int s = 0; s < depth; s++)
			SUBMIT(Q, s);
		*Q->used_event = Q->last_used;
		__atomic_store_n(&Q->avail[1], Q->avail_idx, __ATOMIC_RELEASE);
		if (write(Q->kick, &one, 8) != 8)
			die("kick");
	}

	struct pollfd pfd[MAXQ];
	for (int q = 0; q < nq; q++)
		pfd[q] = (struct pollfd){ qs[q].call, POLLIN, 0 };
	double t_end_warm = now() + warm / 1e3, t_end = 0, t0 = 0, b0 = 0, f0 = 0, t1 = 0, b1 = 0, f1 = 0;
	long r0 = 0, r1 = 0, c1 = 0;
	static struct tcount th0[MAXT], th1[MAXT];
	int n0 = 0, n1 = 0;
	int measuring = 0, draining = 0;
	for (;;) {
		int total = 0;
		for (int q = 0; q < nq; q++)
			total += qs[q].inflight;
		if (draining && !total)
			break;
		/* Wait for a call (the queues' used_event is armed), unless something is used already. */
		int any = 0;
		for (int q = 0; q < nq; q++)
			any |= __atomic_load_n(&qs[q].used[1], __ATOMIC_ACQUIRE) != qs[q].last_used;
		if (!any) {
			/* poll(), then read() the eventfds that fired: a back-end may have made the
			 * shared file description non-blocking (QEMU does), so a bare read() can EAGAIN. */
			int r = poll(pfd, (nfds_t)nq, 10000);
			if (r <= 0) {
				if (r < 0 && errno == EINTR)
					continue;
				if (r == 0)
					errno = 0;
				die(r == 0 ? "no call for 10 s" : "poll");
			}
			for (int q = 0; q < nq; q++)
				if (pfd[q].revents & POLLIN && read(qs[q].call, &cnt, 8) != 8 && errno != EAGAIN)
					die("read call");
		}
		for (int q = 0; q < nq; q++) {
			struct queue *Q = &qs[q];
			for (;;) {
				uint16_t old_avail = Q->avail_idx, uidx;
				while ((uidx = __atomic_load_n(&Q->used[1], __ATOMIC_ACQUIRE)) != Q->last_used) {
					while (Q->last_used != uidx) {
						volatile uint32_t *e = (volatile uint32_t *)((volatile uint8_t *)Q->used + 4 + 8 * (Q->last_used % QSIZE));
						uint32_t id = e[0];
						if (id >= (uint32_t)depth) {
							errno = 0;
							die("used id out of range");
						}
						if (Q->base[HDR_OFF + 32 * id + 16] != 0)
							bad++;
						Q->inflight--;
						Q->last_used++;
						count++;
						if (!draining)
							SUBMIT(Q, id);
					}
				}
				__atomic_store_n(&Q->avail[1], Q->avail_idx, __ATOMIC_RELEASE);
				*Q->used_event = Q->last_used;
				__atomic_thread_fence(__ATOMIC_SEQ_CST);
				int need_kick = (uint16_t)(Q->avail_idx - *Q->avail_event - 1) < (uint16_t)(Q->avail_idx - old_avail);
				if (Q->avail_idx != old_avail && need_kick && write(Q->kick, &one, 8) != 8)
					die("kick");
				if (__atomic_load_n(&Q->used[1], __ATOMIC_ACQUIRE) == Q->last_used)
					break;
			}
		}
		double t = now();
		if (!measuring && !draining && t >= t_end_warm) {
			measuring = 1;
			t0 = t;
			c0 = count;
			r0 = reads;
			n0 = proc_threads(pid, th0);
			b0 = proc_cpu(pid);
			f0 = self_cpu();
			t_end = t0 + ms / 1e3;
		} else if (measuring && t >= t_end) {
			b1 = proc_cpu(pid);
			f1 = self_cpu();
			n1 = proc_threads(pid, th1);
			t1 = t;
			c1 = count;
			r1 = reads;
			measuring = 0;
			draining = 1;
		}
	}
	long vcsw = 0;
	int gone = 0;
	if (n0 < 0 || n1 < 0)
		vcsw = -1;
	else {
		for (int i = 0; i < n1; i++) {
			long before = 0;
			for (int j = 0; j < n0; j++)
				if (th0[j].tid == th1[i].tid)
					before = th0[j].n;
			vcsw += th1[i].n - before;
		}
		for (int j = 0; j < n0; j++) {
			int found = 0;
			for (int i = 0; i < n1; i++)
				found |= th0[j].tid == th1[i].tid;
			gone += !found;
		}
	}
	/* Requests submitted in the window: completions counted; reads among the submissions. */
	printf("{\"op\":\"%c\",\"queues\":%d,\"depth\":%d,\"bs\":%u,\"segs\":%d,\"requests\":%ld,\"bytes\":%.0f,\"seconds\":%.6f,"
	       "\"backendCpu\":%.6f,\"backendVcsw\":%ld,\"threadsStart\":%d,\"threadsEnd\":%d,\"threadsGone\":%d,"
	       "\"frontendCpu\":%.6f,\"readShare\":%.3f,\"total\":%ld,\"features\":\"0x%llx\",\"protocolFeatures\":\"0x%llx\",\"bad\":%ld}\n",
	       op, nq, depth, bs, segs, c1 - c0, (double)(c1 - c0) * bs, t1 - t0, b1 - b0, vcsw, n0, n1, gone, f1 - f0,
	       c1 > c0 ? (double)(r1 - r0) / (double)(c1 - c0) : 0.0, count, (unsigned long long)want, (unsigned long long)pfo, bad);
	fflush(stdout);
	close(sock);
	for (int q = 0; q < nq; q++) {
		close(qs[q].kick);
		close(qs[q].call);
	}
	close(memfd);
	munmap(ram, ram_bytes);
	if (bad) {
		errno = 0;
		die("requests answered with a status other than OK");
	}
}

int main(int argc, char **argv)
{
	const char *path = NULL, *configs = NULL;
	int pid = 0, ms = 500, warm = 150;
	unsigned long long size = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--socket")) path = argv[i + 1];
		else if (!strcmp(argv[i], "--backend-pid")) pid = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--size")) size = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--configs")) configs = argv[i + 1];
		else if (!strcmp(argv[i], "--ms")) ms = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--warm")) warm = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seed")) rng_state = strtoull(argv[i + 1], NULL, 0) | 1;
	}
	if (!path || !configs || !pid || !size) {
		fprintf(stderr, "usage: vhost-user-blk-load --socket S --backend-pid P --size BYTES --configs OP:QUEUES:DEPTH:BS[:SEGS][,...] [--ms N] [--warm N] [--seed N]\n");
		return 2;
	}
	for (const char *c = configs; c && *c;) {
		char op;
		int nq, d, segs = 1;
		unsigned bs;
		int n = sscanf(c, "%c:%d:%d:%u:%d", &op, &nq, &d, &bs, &segs);
		if (n < 4 || !strchr("rwms", op) || nq < 1 || nq > MAXQ || d < 1 || d > MAXDEPTH || !bs || bs % 4096 || size / bs < 1 ||
		    segs < 1 || segs > MAXSEGS || bs % (unsigned)segs || (bs / (unsigned)segs) % 512) {
			fprintf(stderr, "bad config '%s' (OP r|w|m|s : QUEUES 1..%d : DEPTH 1..%d : BS a multiple of 4096 [: SEGS 1..%d, BS/SEGS a multiple of 512])\n",
				c, MAXQ, MAXDEPTH, MAXSEGS);
			return 2;
		}
		run(path, pid, size, op, nq, d, bs, segs, ms, warm);
		c = strchr(c, ',');
		if (c)
			c++;
	}
	return 0;
}
