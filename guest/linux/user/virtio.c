// SPDX-License-Identifier: MIT
/*
 * virtio N: send one request (byte N, 0..255) to the virtio-test device
 * through /dev/virtio_misc and check the device's answer.
 *
 * The tutorial's user program with its messages, plus: strict parsing of N,
 * and the response is read back and verified.  On success it prints nothing:
 * the driver's printk lines on the console are the visible result.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <endian.h>
#include <linux/virtio_test.h>

int main(int argc, char *argv[])
{
	struct virtio_test_response resp;
	unsigned char databuf[1];	/* 0 - 255 */
	char *end;
	long n;
	ssize_t r;
	int fd;

	if (argc != 2) {
		printf("ERROR:please enter two parameters!\n");
		printf("eg: ./virtio number\n");
		printf("but the number between 0 and 255!\n");
		return 1;
	}

	errno = 0;
	n = strtol(argv[1], &end, 10);
	if (end == argv[1] || *end != '\0' || errno != 0 || n < 0 || n > 255) {
		printf("ERROR:the number must be an integer between 0 and 255!\n");
		return 1;
	}
	databuf[0] = (unsigned char)n;

	fd = open("/dev/virtio_misc", O_RDWR);
	if (fd < 0) {
		printf("ERROR:virtio_misc open failed!\n");
		fprintf(stderr, "virtio: open /dev/virtio_misc: %s\n", strerror(errno));
		return 1;
	}

	r = write(fd, databuf, sizeof(databuf));
	if (r != (ssize_t)sizeof(databuf)) {
		printf("ERROR:write failed!\n");
		fprintf(stderr, "virtio: write returned %zd: %s\n", r,
			r < 0 ? strerror(errno) : "short write");
		close(fd);
		return 1;
	}

	r = read(fd, &resp, sizeof(resp));
	if (r != (ssize_t)sizeof(resp)) {
		printf("ERROR:read failed!\n");
		fprintf(stderr, "virtio: read returned %zd: %s\n", r,
			r < 0 ? strerror(errno) : "short read");
		close(fd);
		return 1;
	}
	close(fd);

	/* Device: ret = arg1 + 100, arg1 = arg2 + 100, arg2 = arg3 + 100. */
	if (le32toh(resp.ret) != (uint32_t)n + 101 ||
	    le32toh(resp.arg1) != (uint32_t)n + 102 ||
	    le32toh(resp.arg2) != (uint32_t)n + 103) {
		printf("ERROR:wrong response for %ld: ret=%u arg1=%u arg2=%u (expected %ld %ld %ld)!\n",
		       n, le32toh(resp.ret), le32toh(resp.arg1), le32toh(resp.arg2),
		       n + 101, n + 102, n + 103);
		return 1;
	}
	return 0;
}
