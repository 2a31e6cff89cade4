// SPDX-License-Identifier: MIT
/*
 * virtio-stress [-d DEVICE] [-w WINDOW] [-t SECONDS] [-q] [-a] [-s SEED -z PERMILLE:MAXUS] P K
 *
 * Forks P processes; each opens DEVICE (default /dev/virtio_misc) and sends K
 * requests with varying bytes, keeping up to WINDOW (default 32) requests
 * outstanding, and reads every response back.  A response is "ok" if it is
 * the device's answer to a request this process has outstanding, else "bad";
 * requests still unanswered after SECONDS (default 30) without progress, or
 * after a read error, are "lost".  After a write or read error a worker still
 * reads the answers that arrived before it (until the read fails too).  The
 * parent prints
 *
 *   stress: P=<P> K=<K> ok=<total> bad=<n> lost=<n>
 *
 * and exits 0 only if all P*K requests were answered correctly.
 * -q lowers the console log level to 1 while running (so the driver's four
 * printk lines per request do not flood the console) and restores it.
 *
 * -a (accounting) also prints, per worker and in total, where every request
 * went, so that none is silently missing:
 *
 *   virtio-stress[i]: sent=N ok=N bad=N failed=N silent=N unsent=N errno=E unanswered=V:C,...
 *   stress: sent=N ok=N bad=N failed=N silent=N unsent=N
 *
 * sent = ok + bad + failed + silent, sent + unsent = K.  "failed": sent, and
 * its worker got an error (errno E, the first one) instead of the answer;
 * "silent": sent, and neither answered nor failed (no response for SECONDS);
 * "unsent": never written (the worker stopped on an error first).
 * "unanswered" lists the request bytes of the failed or silent requests
 * (byte:count), so a test can tell which requests the device answered.
 *
 * -z PERMILLE:MAXUS makes the workers slow: before each write and each read,
 * with probability PERMILLE/1000, a worker sleeps a random 0..MAXUS
 * microseconds (a PRNG seeded by -s SEED, default 1, and the worker's index).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <endian.h>
#include <linux/virtio_test.h>

struct counts {
	long ok, bad, lost;
	long sent, failed, silent, unsent;
	int err;			/* the first errno the worker got, 0 if none */
	unsigned int left[256];		/* unanswered requests at the end, by byte */
};

static long pause_permille, pause_max_us;

/* xorshift32 (state never 0) */
static unsigned int next_random(unsigned int *s)
{
	unsigned int x = *s;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

static void maybe_pause(unsigned int *rnd)
{
	if (pause_permille <= 0)
		return;
	if (next_random(rnd) % 1000 < (unsigned int)pause_permille)
		usleep(pause_max_us ? next_random(rnd) % (unsigned int)(pause_max_us + 1) : 0);
}

static long parse_num(const char *s, const char *what, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (end == s || *end || errno || v < min || v > max) {
		fprintf(stderr, "virtio-stress: %s must be an integer in %ld..%ld, got '%s'\n",
			what, min, max, s);
		exit(2);
	}
	return v;
}

static void usage(void)
{
	fprintf(stderr, "usage: virtio-stress [-d DEVICE] [-w WINDOW] [-t SECONDS] [-q] [-a] [-s SEED -z PERMILLE:MAXUS] P K\n");
	exit(2);
}

/* Checks one response against the outstanding requests; 1 if ok. */
static int check_response(int idx, const struct virtio_test_response *resp,
			  unsigned int *outstanding)
{
	uint32_t ret = le32toh(resp->ret), a1 = le32toh(resp->arg1),
		 a2 = le32toh(resp->arg2);
	/* ret = N + 101, arg1 = N + 102, arg2 = N + 103 */
	uint32_t n = ret - 101;

	if (ret >= 101 && n <= 255 && a1 == n + 102 && a2 == n + 103 &&
	    outstanding[n] > 0) {
		outstanding[n]--;
		return 1;
	}
	fprintf(stderr, "virtio-stress[%d]: unexpected response ret=%u arg1=%u arg2=%u\n",
		idx, ret, a1, a2);
	return 0;
}

/* One worker: returns its counts through *c (shared memory). */
static void worker(int idx, const char *dev, long k, long window, int timeout_s,
		   unsigned int seed, struct counts *c)
{
	unsigned int outstanding[256] = { 0 };
	long sent = 0, answered = 0, inflight = 0;
	struct virtio_test_response resp;
	unsigned int rnd = seed * 4099u + (unsigned int)idx * 7919u + 1u;
	int fd, timed_out = 0;

	if (!rnd)
		rnd = 1;
	fd = open(dev, O_RDWR);
	if (fd < 0) {
		c->err = errno;
		fprintf(stderr, "virtio-stress[%d]: open %s: %s\n", idx, dev, strerror(errno));
		c->lost = k;
		c->unsent = k;
		return;
	}

	while (answered < k) {
		/* Fill the window. */
		while (sent < k && inflight < window) {
			unsigned char b = (unsigned char)((idx * 37 + sent * 11) & 0xff);
			ssize_t r;

			maybe_pause(&rnd);
			r = write(fd, &b, 1);
			if (r != 1) {
				c->err = r < 0 ? errno : EIO;
				fprintf(stderr, "virtio-stress[%d]: write #%ld returned %zd: %s\n",
					idx, sent, r, r < 0 ? strerror(errno) : "?");
				goto drain;
			}
			outstanding[b]++;
			sent++;
			inflight++;
		}

		maybe_pause(&rnd);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int pr = poll(&p, 1, timeout_s * 1000);

		if (pr == 0) {
			fprintf(stderr, "virtio-stress[%d]: no response for %d s, %ld outstanding\n",
				idx, timeout_s, inflight);
			timed_out = 1;
			break;
		}
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			c->err = errno;
			fprintf(stderr, "virtio-stress[%d]: poll: %s\n", idx, strerror(errno));
			break;
		}

		ssize_t r = read(fd, &resp, sizeof(resp));

		if (r != (ssize_t)sizeof(resp)) {
			c->err = r < 0 ? errno : EIO;
			fprintf(stderr, "virtio-stress[%d]: read returned %zd: %s\n",
				idx, r, r < 0 ? strerror(errno) : "short");
			goto drain;
		}
		answered++;
		inflight--;
		if (check_response(idx, &resp, outstanding))
			c->ok++;
		else
			c->bad++;
	}
	goto done;

drain:
	/*
	 * After an error the driver still hands out the answers that arrived
	 * before it; the first failing read (ENODEV/EIO, or 0: nothing left in
	 * flight) ends the worker.
	 */
	while (inflight > 0) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int pr = poll(&p, 1, timeout_s * 1000);

		if (pr == 0) {
			fprintf(stderr, "virtio-stress[%d]: no response for %d s, %ld outstanding\n",
				idx, timeout_s, inflight);
			timed_out = 1;
			break;
		}
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (read(fd, &resp, sizeof(resp)) != (ssize_t)sizeof(resp))
			break;
		answered++;
		inflight--;
		if (check_response(idx, &resp, outstanding))
			c->ok++;
		else
			c->bad++;
	}
done:
	c->lost += k - answered;
	c->sent = sent;
	c->unsent = k - sent;
	if (timed_out || !c->err)
		c->silent = inflight;
	else
		c->failed = inflight;
	memcpy(c->left, outstanding, sizeof(outstanding));
	close(fd);
}

static const char *errno_name(int e)
{
	switch (e) {
	case 0: return "0";
	case EIO: return "EIO";
	case ENODEV: return "ENODEV";
	case ENOENT: return "ENOENT";
	case EINTR: return "EINTR";
	case EINVAL: return "EINVAL";
	default: return "OTHER";
	}
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/virtio_misc";
	long window = 32;
	int timeout_s = 30, quiet = 0, accounting = 0, opt;
	unsigned int seed = 1;
	char saved_printk[64] = "";
	char *colon;

	while ((opt = getopt(argc, argv, "d:w:t:qas:z:h")) != -1) {
		switch (opt) {
		case 'd': dev = optarg; break;
		case 'w': window = parse_num(optarg, "WINDOW", 1, 1000000); break;
		case 't': timeout_s = (int)parse_num(optarg, "SECONDS", 1, 3600); break;
		case 'q': quiet = 1; break;
		case 'a': accounting = 1; break;
		case 's': seed = (unsigned int)parse_num(optarg, "SEED", 0, 0x7fffffff); break;
		case 'z':
			colon = strchr(optarg, ':');
			if (!colon)
				usage();
			*colon = '\0';
			pause_permille = parse_num(optarg, "PERMILLE", 0, 1000);
			pause_max_us = parse_num(colon + 1, "MAXUS", 0, 10000000);
			break;
		default: usage();
		}
	}
	if (argc - optind != 2)
		usage();
	long p = parse_num(argv[optind], "P", 1, 4096);
	long k = parse_num(argv[optind + 1], "K", 0, 100000000);

	if (quiet) {
		FILE *f = fopen("/proc/sys/kernel/printk", "r");

		if (f) {
			if (!fgets(saved_printk, sizeof(saved_printk), f))
				saved_printk[0] = '\0';
			fclose(f);
		}
		f = fopen("/proc/sys/kernel/printk", "w");
		if (f) {
			fputs("1", f);
			fclose(f);
		}
	}

	struct counts *c = mmap(NULL, sizeof(*c) * p, PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (c == MAP_FAILED) {
		perror("virtio-stress: mmap");
		return 1;
	}
	memset(c, 0, sizeof(*c) * p);
	fflush(NULL);

	for (long i = 0; i < p; i++) {
		pid_t pid = fork();

		if (pid < 0) {
			perror("virtio-stress: fork");
			c[i].lost = k;
			continue;
		}
		if (pid == 0) {
			worker((int)i, dev, k, window, timeout_s, seed, &c[i]);
			_exit(0);
		}
	}
	while (wait(NULL) > 0 || errno == EINTR)
		;

	if (quiet && saved_printk[0]) {
		FILE *f = fopen("/proc/sys/kernel/printk", "w");

		if (f) {
			/* first field only: the console log level */
			fprintf(f, "%d", atoi(saved_printk));
			fclose(f);
		}
	}

	long ok = 0, bad = 0, lost = 0;

	for (long i = 0; i < p; i++) {
		ok += c[i].ok;
		bad += c[i].bad;
		lost += c[i].lost;
	}
	/* A worker that died unexpectedly leaves requests unaccounted. */
	if (ok + bad + lost < p * k)
		lost = p * k - ok - bad;
	printf("stress: P=%ld K=%ld ok=%ld bad=%ld lost=%ld\n", p, k, ok, bad, lost);
	if (accounting) {
		long sent = 0, failed = 0, silent = 0, unsent = 0;

		for (long i = 0; i < p; i++) {
			printf("virtio-stress[%ld]: sent=%ld ok=%ld bad=%ld failed=%ld silent=%ld unsent=%ld errno=%s unanswered=",
			       i, c[i].sent, c[i].ok, c[i].bad, c[i].failed, c[i].silent, c[i].unsent,
			       errno_name(c[i].err));
			const char *sep = "";

			for (int v = 0; v < 256; v++) {
				if (c[i].left[v]) {
					printf("%s%d:%u", sep, v, c[i].left[v]);
					sep = ",";
				}
			}
			printf("\n");
			sent += c[i].sent;
			failed += c[i].failed;
			silent += c[i].silent;
			unsent += c[i].unsent;
		}
		printf("stress: sent=%ld ok=%ld bad=%ld failed=%ld silent=%ld unsent=%ld\n",
		       sent, ok, bad, failed, silent, unsent);
	}
	return (ok == p * k && bad == 0 && lost == 0) ? 0 : 1;
}
