// SPDX-License-Identifier: MIT
/*
 * virtio-stress [-d DEVICE] [-w WINDOW] [-t SECONDS] [-q] P K
 *
 * Forks P processes; each opens DEVICE (default /dev/virtio_misc) and sends K
 * requests with varying bytes, keeping up to WINDOW (default 32) requests
 * outstanding, and reads every response back.  A response is "ok" if it is
 * the device's answer to a request this process has outstanding, else "bad";
 * requests still unanswered after SECONDS (default 30) without progress, or
 * after a read error, are "lost".  The parent prints
 *
 *   stress: P=<P> K=<K> ok=<total> bad=<n> lost=<n>
 *
 * and exits 0 only if all P*K requests were answered correctly.
 * -q lowers the console log level to 1 while running (so the driver's four
 * printk lines per request do not flood the console) and restores it.
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
};

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
	fprintf(stderr, "usage: virtio-stress [-d DEVICE] [-w WINDOW] [-t SECONDS] [-q] P K\n");
	exit(2);
}

/* One worker: returns its counts through *c (shared memory). */
static void worker(int idx, const char *dev, long k, long window, int timeout_s,
		   struct counts *c)
{
	unsigned int outstanding[256] = { 0 };
	long sent = 0, answered = 0, inflight = 0;
	struct virtio_test_response resp;
	int fd;

	fd = open(dev, O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "virtio-stress[%d]: open %s: %s\n", idx, dev, strerror(errno));
		c->lost = k;
		return;
	}

	while (answered < k) {
		/* Fill the window. */
		while (sent < k && inflight < window) {
			unsigned char b = (unsigned char)((idx * 37 + sent * 11) & 0xff);
			ssize_t r = write(fd, &b, 1);

			if (r != 1) {
				fprintf(stderr, "virtio-stress[%d]: write #%ld returned %zd: %s\n",
					idx, sent, r, r < 0 ? strerror(errno) : "?");
				c->lost += k - answered;
				close(fd);
				return;
			}
			outstanding[b]++;
			sent++;
			inflight++;
		}

		struct pollfd p = { .fd = fd, .events = POLLIN };
		int pr = poll(&p, 1, timeout_s * 1000);

		if (pr == 0) {
			fprintf(stderr, "virtio-stress[%d]: no response for %d s, %ld outstanding\n",
				idx, timeout_s, inflight);
			break;
		}
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "virtio-stress[%d]: poll: %s\n", idx, strerror(errno));
			break;
		}

		ssize_t r = read(fd, &resp, sizeof(resp));

		if (r != (ssize_t)sizeof(resp)) {
			fprintf(stderr, "virtio-stress[%d]: read returned %zd: %s\n",
				idx, r, r < 0 ? strerror(errno) : "short");
			break;
		}
		answered++;
		inflight--;

		uint32_t ret = le32toh(resp.ret), a1 = le32toh(resp.arg1),
			 a2 = le32toh(resp.arg2);
		/* ret = N + 101, arg1 = N + 102, arg2 = N + 103 */
		uint32_t n = ret - 101;

		if (ret >= 101 && n <= 255 && a1 == n + 102 && a2 == n + 103 &&
		    outstanding[n] > 0) {
			outstanding[n]--;
			c->ok++;
		} else {
			fprintf(stderr, "virtio-stress[%d]: unexpected response ret=%u arg1=%u arg2=%u\n",
				idx, ret, a1, a2);
			c->bad++;
		}
	}
	c->lost += k - answered;
	close(fd);
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/virtio_misc";
	long window = 32;
	int timeout_s = 30, quiet = 0, opt;
	char saved_printk[64] = "";

	while ((opt = getopt(argc, argv, "d:w:t:qh")) != -1) {
		switch (opt) {
		case 'd': dev = optarg; break;
		case 'w': window = parse_num(optarg, "WINDOW", 1, 1000000); break;
		case 't': timeout_s = (int)parse_num(optarg, "SECONDS", 1, 3600); break;
		case 'q': quiet = 1; break;
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
			worker((int)i, dev, k, window, timeout_s, &c[i]);
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
	return (ok == p * k && bad == 0 && lost == 0) ? 0 : 1;
}
