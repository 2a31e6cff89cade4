// SPDX-License-Identifier: MIT
/*
 * vhost-user-ref-load: a minimal C vhost-user front-end and virtio-test driver, the load
 * generator of bench/vhost-user.ts when the TypeScript front-end would be the bottleneck.
 * Written for the benchmark from the protocol document and virtio 1.2 §2.7.
 *
 *   vhost-user-ref-load --socket S --backend-pid P --configs DEPTH:EVENT_IDX:INDIRECT[:POLL][,...]
 *                       [--ms 500] [--warm 150] [--idle MS]
 *
 * For each configuration: connects, negotiates (REPLY_ACK; VERSION_1, CAN_PRINT, EVENT_IDX
 * and INDIRECT_DESC as asked), one memfd of guest RAM, one 256-entry ring, kick and call
 * eventfds; keeps DEPTH requests in flight (closed loop: every completion is checked and
 * its slot resubmitted; avail.idx published once per pass over the used ring, kick
 * suppressed as the ring says). When nothing is used it sleeps in read() on the call
 * eventfd, or with POLL = 1 spins on used.idx (a polling driver: the call eventfd stays
 * registered but calls are suppressed for good: VRING_AVAIL_F_NO_INTERRUPT, or with event
 * idx used_event kept half the index space away from used.idx, so the back-end never
 * signals; kicks are as in the sleeping mode).
 * Prints one JSON line per configuration: requests and seconds of the measured window, the
 * back-end's CPU seconds (its process CPU-time clock, clock_getcpuclockid: ns, all threads;
 * /proc/P/stat utime+stime, in 10 ms ticks, where that fails), the back-end's voluntary
 * context switches (sleeps: voluntary_ctxt_switches of /proc/P/task/T/status summed over its
 * live threads) and this process's CPU seconds.
 *
 * --idle MS: after the warm-up (DEPTH requests in flight for --warm ms), stop resubmitting,
 * wait for every request to complete, then measure the connected, idle back-end for MS ms
 * (requests 0; its CPU seconds and voluntary context switches over the window).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
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
#define RAM_BYTES (1 << 20)
#define DESC_OFF 0
#define AVAIL_OFF 4096
#define USED_OFF 8192
#define INDIRECT_OFF 16384
#define SLOT_OFF 32768

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };

static int sock = -1;
static int reply_ack;

static void die(const char *what)
{
	fprintf(stderr, "vhost-user-ref-load: %s: %s\n", what, errno ? strerror(errno) : "failed");
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

/* utime + stime of process pid, all threads, in 10 ms ticks: the fallback. */
static double proc_cpu_ticks(int pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	unsigned long ut = 0, st = 0;
	/* fields 3..15: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * CPU seconds of process pid, all its threads, exited ones included: its process CPU-time
 * clock (clock_getcpuclockid), in ns. A 500 ms window of a half-busy back-end is only ~25
 * ticks of /proc/P/stat, a ±4 % step per reading; the clock is exact. The ticks are the
 * fallback where the clock cannot be read.
 */
static double proc_cpu(int pid)
{
	clockid_t clk;
	struct timespec t;
	if (clock_getcpuclockid(pid, &clk) == 0 && clock_gettime(clk, &t) == 0)
		return t.tv_sec + t.tv_nsec / 1e9;
	return proc_cpu_ticks(pid);
}

/*
 * Voluntary context switches of process pid (its sleeps): voluntary_ctxt_switches of each
 * live thread's /proc/P/task/T/status, summed (/proc/P/status alone counts only the main
 * thread). -1 when unreadable.
 */
static long proc_vcsw(int pid)
{
	char path[96], line[256];
	snprintf(path, sizeof path, "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	long sum = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/%d/task/%.20s/status", pid, e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue; /* the thread exited meanwhile */
		while (fgets(line, sizeof line, f))
			if (!strncmp(line, "voluntary_ctxt_switches:", 24)) {
				sum += atol(line + 24);
				break;
			}
		fclose(f);
	}
	closedir(d);
	return sum;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield" ::: "memory");
#else
	__asm__ volatile("" ::: "memory");
#endif
}

static void run(const char *path, int pid, int depth, int eidx, int indirect, int poll, int ms, int warm, int idle_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("connect");
	reply_ack = 0;

	int memfd = memfd_create("vt-ram", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, RAM_BYTES) < 0)
		die("memfd");
	uint8_t *ram = mmap(NULL, RAM_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (ram == MAP_FAILED)
		die("mmap");
	int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
	if (kick < 0 || call < 0)
		die("eventfd");

	send_msg(3, NULL, 0, NULL, 0, 0); /* SET_OWNER */
	send_msg(1, NULL, 0, NULL, 0, 0); /* GET_FEATURES */
	uint64_t offered = recv_u64(1);
	send_msg(15, NULL, 0, NULL, 0, 0); /* GET_PROTOCOL_FEATURES */
	uint64_t pf = recv_u64(15) & (1ull << 3);
	send_msg(16, &pf, 8, NULL, 0, 0); /* SET_PROTOCOL_FEATURES: REPLY_ACK if offered */
	reply_ack = pf != 0;
	uint64_t want = (1ull << 0) | (1ull << 32) | (1ull << 30) | (eidx ? 1ull << 29 : 0) | (indirect ? 1ull << 28 : 0);
	if ((want & offered) != want) {
		errno = 0;
		die("back-end lacks features");
	}
	request(2, &want, 8, NULL, 0); /* SET_FEATURES */
	struct { uint32_t n, pad; uint64_t gpa, size, uva, off; } mt = { 1, 0, 0, RAM_BYTES, (uint64_t)(uintptr_t)ram, 0 };
	request(5, &mt, sizeof mt, &memfd, 1); /* SET_MEM_TABLE */
	uint32_t st[2] = { 0, QSIZE };
	request(8, st, 8, NULL, 0); /* SET_VRING_NUM */
	st[1] = 0;
	request(10, st, 8, NULL, 0); /* SET_VRING_BASE */
	struct { uint32_t idx, flags; uint64_t desc, used, avail, log; } va = {
		0, 0, (uint64_t)(uintptr_t)(ram + DESC_OFF), (uint64_t)(uintptr_t)(ram + USED_OFF),
		(uint64_t)(uintptr_t)(ram + AVAIL_OFF), 0 };
	request(9, &va, sizeof va, NULL, 0); /* SET_VRING_ADDR */
	uint64_t idx0 = 0;
	request(13, &idx0, 8, &call, 1); /* SET_VRING_CALL */
	request(12, &idx0, 8, &kick, 1); /* SET_VRING_KICK */
	st[1] = 1;
	request(18, st, 8, NULL, 0); /* SET_VRING_ENABLE */
	if (!reply_ack) {
		send_msg(1, NULL, 0, NULL, 0, 0); /* barrier */
		recv_u64(1);
	}

	struct desc *desc = (struct desc *)(ram + DESC_OFF);
	volatile uint16_t *avail = (volatile uint16_t *)(ram + AVAIL_OFF);
	volatile uint16_t *used = (volatile uint16_t *)(ram + USED_OFF);
	volatile uint16_t *used_event = avail + 2 + QSIZE;
	volatile uint16_t *avail_event = (volatile uint16_t *)(ram + USED_OFF + 4 + 8 * QSIZE);
	uint16_t avail_idx = 0, last_used = 0;

	/* Slot s: request at SLOT_OFF + 64 s (48 bytes), response right after (12 bytes);
	 * descriptors 2s, 2s+1 (direct) or one indirect descriptor s with a 2-entry table. */
	for (int s = 0; s < depth; s++) {
		uint8_t *req = ram + SLOT_OFF + 64 * s;
		uint32_t a[4] = { (uint32_t)s & 255, (uint32_t)s + 1, (uint32_t)s + 2, (uint32_t)s + 3 };
		memset(req, 0, 48);
		memcpy(req, a, 16);
		memcpy(req + 16, "hello back end!", 15);
		struct desc out = { SLOT_OFF + 64 * s, 48, 0, 0 }, in = { SLOT_OFF + 64 * s + 48, 12, 2, 0 };
		if (indirect) {
			struct desc *t = (struct desc *)(ram + INDIRECT_OFF + 32 * s);
			out.flags = 1;
			out.next = 1;
			t[0] = out;
			t[1] = in;
			desc[s] = (struct desc){ INDIRECT_OFF + 32 * s, 32, 4, 0 };
		} else {
			out.flags = 1;
			out.next = (uint16_t)(2 * s + 1);
			desc[2 * s] = out;
			desc[2 * s + 1] = in;
		}
	}
#define HEAD(s) ((uint16_t)(indirect ? (s) : 2 * (s)))
	for (int s = 0; s < depth; s++)
		avail[2 + (avail_idx++ % QSIZE)] = HEAD(s);
	/* A polling driver never wants a call: used_event half the index space away from
	 * used.idx (it is never crossed by the <= 256 entries in flight), or NO_INTERRUPT. */
	if (eidx)
		*used_event = poll ? (uint16_t)(last_used + 0x8000) : last_used;
	else if (poll)
		avail[0] = 1;
	__atomic_store_n(&avail[1], avail_idx, __ATOMIC_RELEASE);
	uint64_t one = 1, cnt;
	if (write(kick, &one, 8) != 8)
		die("kick");

	long count = 0, bad = 0, c0 = 0, v0 = 0, inflight = depth;
	double t_end_warm = now() + warm / 1e3, t_end = 0, t0 = 0, b0 = 0, f0 = 0;
	int measuring = 0, draining = 0;
	for (;;) {
		if (draining && !inflight)
			break; /* --idle: every request answered */
		if (poll) {
			/* spin on used.idx; give up if the back-end makes no progress for 10 s */
			double since = 0;
			for (unsigned n = 1; __atomic_load_n(&used[1], __ATOMIC_ACQUIRE) == last_used; n++) {
				cpu_relax();
				if (!(n & 0xfffff)) {
					double t = now();
					if (!since)
						since = t;
					else if (t - since > 10) {
						errno = 0;
						die("no progress while polling");
					}
				}
			}
		} else if (read(call, &cnt, 8) != 8)
			die("read call");
		for (;;) {
			if (!eidx && !poll)
				avail[0] = 1; /* VRING_AVAIL_F_NO_INTERRUPT while draining */
			uint16_t old_avail = avail_idx, uidx;
			while ((uidx = __atomic_load_n(&used[1], __ATOMIC_ACQUIRE)) != last_used) {
				while (last_used != uidx) {
					volatile uint32_t *e = (volatile uint32_t *)((volatile uint8_t *)used + 4 + 8 * (last_used % QSIZE));
					uint32_t id = e[0], len = e[1];
					int s = indirect ? (int)id : (int)id / 2;
					uint32_t *req = (uint32_t *)(ram + SLOT_OFF + 64 * s);
					uint32_t *resp = req + 12;
					if (len != 12 || resp[0] != req[1] + 100 || resp[1] != req[2] + 100)
						bad++;
					req[0] = (req[0] + 1) & 255;
					req[1]++;
					req[2]++;
					req[3]++;
					if (draining)
						inflight--;
					else
						avail[2 + (avail_idx++ % QSIZE)] = (uint16_t)id;
					last_used++;
					count++;
				}
			}
			__atomic_store_n(&avail[1], avail_idx, __ATOMIC_RELEASE);
			if (eidx)
				*used_event = poll ? (uint16_t)(last_used + 0x8000) : last_used;
			else if (!poll)
				avail[0] = 0;
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
			int need_kick = eidx ? (uint16_t)(avail_idx - *avail_event - 1) < (uint16_t)(avail_idx - old_avail)
					     : !(used[0] & 1);
			if (avail_idx != old_avail && need_kick && write(kick, &one, 8) != 8)
				die("kick");
			if (__atomic_load_n(&used[1], __ATOMIC_ACQUIRE) == last_used)
				break;
		}
		double t = now();
		if (idle_ms) {
			if (!draining && t >= t_end_warm)
				draining = 1;
		} else if (!measuring && t >= t_end_warm) {
			measuring = 1;
			t0 = t;
			c0 = count;
			v0 = proc_vcsw(pid);
			b0 = proc_cpu(pid);
			f0 = self_cpu();
			t_end = t0 + ms / 1e3;
		} else if (measuring && t >= t_end) {
			double b1 = proc_cpu(pid), f1 = self_cpu();
			long v1 = proc_vcsw(pid);
			printf("{\"depth\":%d,\"eventIdx\":%s,\"indirect\":%s,\"poll\":%s,\"requests\":%ld,\"seconds\":%.6f,"
			       "\"backendCpu\":%.6f,\"backendVcsw\":%ld,\"frontendCpu\":%.6f,\"bad\":%ld}\n",
			       depth, eidx ? "true" : "false", indirect ? "true" : "false", poll ? "true" : "false",
			       count - c0, t - t0, b1 - b0, v0 < 0 || v1 < 0 ? -1 : v1 - v0, f1 - f0, bad);
			fflush(stdout);
			break;
		}
	}
	if (idle_ms) {
		/* the connection stays open, the ring empty: what does an idle back-end cost? */
		t0 = now();
		v0 = proc_vcsw(pid);
		b0 = proc_cpu(pid);
		f0 = self_cpu();
		struct timespec ts = { idle_ms / 1000, (long)(idle_ms % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
		double b1 = proc_cpu(pid), f1 = self_cpu(), t = now();
		long v1 = proc_vcsw(pid);
		printf("{\"depth\":%d,\"eventIdx\":%s,\"indirect\":%s,\"poll\":%s,\"idle\":true,\"requests\":0,"
		       "\"seconds\":%.6f,\"backendCpu\":%.6f,\"backendVcsw\":%ld,\"frontendCpu\":%.6f,\"bad\":%ld}\n",
		       depth, eidx ? "true" : "false", indirect ? "true" : "false", poll ? "true" : "false",
		       t - t0, b1 - b0, v0 < 0 || v1 < 0 ? -1 : v1 - v0, f1 - f0, bad);
		fflush(stdout);
	}
	/* Requests still in flight are abandoned with the connection; the back-end forgets the ring. */
	close(sock);
	close(kick);
	close(call);
	close(memfd);
	munmap(ram, RAM_BYTES);
	if (bad) {
		errno = 0;
		die("wrong responses");
	}
}

int main(int argc, char **argv)
{
	const char *path = NULL, *configs = NULL;
	int pid = 0, ms = 500, warm = 150, idle_ms = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--socket")) path = argv[i + 1];
		else if (!strcmp(argv[i], "--backend-pid")) pid = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--configs")) configs = argv[i + 1];
		else if (!strcmp(argv[i], "--ms")) ms = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--warm")) warm = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--idle")) idle_ms = atoi(argv[i + 1]);
	}
	if (!path || !configs || !pid) {
		fprintf(stderr, "usage: vhost-user-ref-load --socket S --backend-pid P --configs D:E:I[:POLL][,...] [--ms N] [--warm N] [--idle MS]\n");
		return 2;
	}
	for (const char *c = configs; c && *c;) {
		int d, e, ind, poll = 0;
		int n = sscanf(c, "%d:%d:%d:%d", &d, &e, &ind, &poll);
		if (n < 3 || d < 1 || d > 128) {
			fprintf(stderr, "bad config '%s' (DEPTH 1..128:EVENT_IDX:INDIRECT[:POLL])\n", c);
			return 2;
		}
		run(path, pid, d, e, ind, poll, ms, warm, idle_ms);
		c = strchr(c, ',');
		if (c)
			c++;
	}
	return 0;
}
