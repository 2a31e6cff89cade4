/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * virtio-test: the toy "print" device of the virtio-test tutorial, as
 * implemented by virtio-ts.  Shared by the Linux driver
 * (guest/linux/driver/virtio_test.c), the guest user programs and, as a
 * specification, the TypeScript device.
 *
 * All multi-byte fields are little-endian: the device only offers the
 * virtio 1.x interface (VIRTIO_F_VERSION_1), see virtio v1.2 section 1.4
 * ("Structure Specifications") and 6.1 ("Driver Requirements: Reserved
 * Feature Bits").
 */
#ifndef _UAPI_LINUX_VIRTIO_TEST_H
#define _UAPI_LINUX_VIRTIO_TEST_H

#include <linux/types.h>

/*
 * Device ID.  Linux 6.1's <linux/virtio_ids.h> has no entry for it, so it is
 * defined here.
 */
#ifndef VIRTIO_ID_TEST
#define VIRTIO_ID_TEST			45
#endif

/* Feature bits. The driver refuses a device that does not offer this. */
#define VIRTIO_TEST_F_CAN_PRINT		0

/* Name of the single virtqueue (queue index 0). */
#define VIRTIO_TEST_VQ_NAME		"virtio_test"

/* Device configuration space (12 bytes, read-only for the driver). */
struct virtio_test_config {
	__le32 num_pages;
	__le32 actual;
	__le32 event;
};

/*
 * One request is one descriptor chain: this driver-readable part first ...
 */
#define VIRTIO_TEST_ARG4_LEN		32
struct virtio_test_request {
	__le32 type;
	__le32 arg1;
	__le32 arg2;
	__le32 arg3;
	char arg4[VIRTIO_TEST_ARG4_LEN];	/* NUL-padded text */
};

/*
 * ... then this device-writable part.  The device answers
 * ret = arg1 + 100, arg1 = arg2 + 100, arg2 = arg3 + 100 and reports a used
 * length of sizeof(struct virtio_test_response) (12).
 */
struct virtio_test_response {
	__le32 ret;
	__le32 arg1;
	__le32 arg2;
};

/* The text the driver puts in arg4. */
#define VIRTIO_TEST_GREETING		"hello back end!"

#endif /* _UAPI_LINUX_VIRTIO_TEST_H */
