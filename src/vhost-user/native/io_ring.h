/* io_ring.h - io_uring for virtio-blk's file store (io_ring.c). */
#ifndef VIRTIO_TS_IO_RING_H
#define VIRTIO_TS_IO_RING_H
#include <node_api.h>

/* Adds ioRingCreate, ioRingQueue, ioRingSubmit, ioRingReap, ... to `exports`. */
napi_status io_ring_register(napi_env env, napi_value exports);

#endif
