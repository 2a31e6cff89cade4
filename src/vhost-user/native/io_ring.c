/*
 * io_ring.c - an io_uring submission/completion ring for virtio-blk's file store
 * (QEMU's `aio=io_uring`; the default store runs preadv/pwritev on libuv's thread pool).
 *
 * Why: on the thread pool every request is a hand-off (mutex, condition variable, a pool
 * thread's wake-up, an async wake-up of the loop) and a promise through Node's fs layer. With
 * io_uring, buffered reads and writes that hit the page cache complete inside io_uring_enter
 * on the loop's own thread, a batch of requests costs one system call, and completions are
 * reaped in one call per batch: no thread hop at all for the common case (the kernel punts to
 * its own workers what would block).
 *
 * Raw system calls on <linux/io_uring.h> (no liburing): setup, the three mappings (SQ ring,
 * CQ ring, SQE array), an eventfd registered for completions (the loop watches it with
 * watchEventfd). The ring is single-threaded: one JavaScript thread owns it.
 *
 *   ioRingCreate(entries)            -> ring (an object; closed by ioRingClose or when collected)
 *   ioRingEventfd(ring)              -> the completion eventfd (the ring owns it)
 *   ioRingQueue(ring, op, fd, position, buffers, tag) -> false when the SQ is full
 *        op 0 read, 1 write (buffers: Uint8Array[]; one buffer uses READ/WRITE, more READV/WRITEV),
 *        op 2 fdatasync (buffers ignored). tag: a uint32 returned with the completion.
 *   ioRingQueueSpans(ring, op, fd, position, bases, table, count, tag) -> as ioRingQueue, the
 *        buffers given as `count` spans (base index, offset, length) of `bases` (Uint8Arrays)
 *        in a Float64Array: no object per buffer, each span checked to lie inside its base.
 *   ioRingSubmit(ring)               -> SQEs the kernel took (0 when it is busy: reap, retry)
 *   ioRingReap(ring, out Int32Array[, clearEventfd]) -> completions written to out as (tag,
 *        result) pairs; result is bytes transferred or a negated errno. clearEventfd: reset the
 *        completion eventfd first (to reap right after a submit whose completions came inline,
 *        without the loop waking for them again).
 *   ioRingClose(ring)
 *   fileReadsInline(fd)              -> false when the file refuses RWF_NOWAIT (io_uring then
 *        punts every read of it to io-wq workers): the file store's aio=auto uses it.
 *
 * Buffers: the kernel reads iovec arrays at submission (IORING_FEAT_SUBMIT_STABLE, required
 * at creation), so they live in an arena reset once everything queued has been submitted; the
 * data buffers themselves must stay valid until their completion is reaped (the caller keeps
 * them referenced; the vhost-user session keeps guest memory mapped until the device settles).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif

#include <errno.h>
#include <linux/io_uring.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <node_api.h>

#include "io_ring.h"

#define MAX_ENTRIES 4096
#define MAX_IOV 1024 /* Linux's IOV_MAX */

typedef struct {
  int fd;
  int efd;
  /* submission queue */
  unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
  unsigned sq_entries;
  struct io_uring_sqe *sqes;
  unsigned sq_queued; /* SQEs filled in since the last submit */
  /* completion queue */
  unsigned *cq_head, *cq_tail, *cq_mask;
  struct io_uring_cqe *cqes;
  /* mappings */
  void *sq_map, *cq_map;
  size_t sq_map_len, cq_map_len, sqes_len;
  bool single_mmap;
  /* iovec arena for the SQEs not yet submitted */
  struct iovec *iov;
  size_t iov_cap, iov_used;
} io_ring;

static int sys_setup(unsigned entries, struct io_uring_params *p) {
  return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags) {
  return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static int sys_register(int fd, unsigned opcode, const void *arg, unsigned nr) {
  return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr);
}

static void ring_free(io_ring *r) {
  if (r == NULL) return;
  if (r->sqes != NULL && r->sqes != MAP_FAILED) munmap(r->sqes, r->sqes_len);
  if (r->cq_map != NULL && r->cq_map != MAP_FAILED && !r->single_mmap) munmap(r->cq_map, r->cq_map_len);
  if (r->sq_map != NULL && r->sq_map != MAP_FAILED) munmap(r->sq_map, r->sq_map_len);
  if (r->fd >= 0) close(r->fd);
  if (r->efd >= 0) close(r->efd);
  free(r->iov);
  free(r);
}

/* Creates the ring; returns NULL with errno set (and *what naming the failed step). */
static io_ring *ring_create(unsigned entries, const char **what) {
  io_ring *r = calloc(1, sizeof *r);
  if (r == NULL) {
    *what = "calloc";
    return NULL;
  }
  r->fd = r->efd = -1;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  r->fd = sys_setup(entries, &p);
  if (r->fd < 0) {
    *what = "io_uring_setup";
    goto fail;
  }
  if (!(p.features & IORING_FEAT_SUBMIT_STABLE)) {
    errno = ENOTSUP;
    *what = "io_uring_setup (no IORING_FEAT_SUBMIT_STABLE: kernel older than 5.5)";
    goto fail;
  }
  r->single_mmap = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (r->single_mmap && r->cq_map_len > r->sq_map_len) r->sq_map_len = r->cq_map_len;
  r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
  if (r->sq_map == MAP_FAILED) {
    *what = "mmap(IORING_OFF_SQ_RING)";
    goto fail;
  }
  if (r->single_mmap) {
    r->cq_map = r->sq_map;
  } else {
    r->cq_map = mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
    if (r->cq_map == MAP_FAILED) {
      *what = "mmap(IORING_OFF_CQ_RING)";
      goto fail;
    }
  }
  r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
  r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
  if (r->sqes == MAP_FAILED) {
    *what = "mmap(IORING_OFF_SQES)";
    goto fail;
  }
  char *sq = r->sq_map, *cq = r->cq_map;
  r->sq_head = (unsigned *)(sq + p.sq_off.head);
  r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->sq_entries = p.sq_entries;
  r->cq_head = (unsigned *)(cq + p.cq_off.head);
  r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

  /* Room for 16 segments per entry before the arena has to grow (a grow waits for a submit). */
  r->iov_cap = (size_t)p.sq_entries * 16;
  r->iov = malloc(r->iov_cap * sizeof *r->iov);
  if (r->iov == NULL) {
    *what = "malloc";
    goto fail;
  }

  r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (r->efd < 0) {
    *what = "eventfd";
    goto fail;
  }
  if (sys_register(r->fd, IORING_REGISTER_EVENTFD, &r->efd, 1) < 0) {
    *what = "io_uring_register(IORING_REGISTER_EVENTFD)";
    goto fail;
  }
  return r;
fail: {
  int saved = errno;
  ring_free(r);
  errno = saved;
  return NULL;
}
}

/* ------------------------------------------------------------------------ */
/* Node-API                                                                 */
/* ------------------------------------------------------------------------ */

static void throw_ring_error(napi_env env, int err, const char *call) {
  char text[128], msg[256];
  const char *reason = strerror_r(err, text, sizeof text);
  snprintf(msg, sizeof msg, "%s: %s", call, reason);
  const char *name = strerrorname_np(err);
  napi_value code, message, error, errnum;
  if (napi_create_string_utf8(env, name != NULL ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok) {
    napi_throw_error(env, "ERR_NATIVE", call);
    return;
  }
  if (napi_create_int32(env, err, &errnum) == napi_ok) napi_set_named_property(env, error, "errno", errnum);
  napi_throw(env, error);
}

static void ring_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  io_ring **slot = data;
  ring_free(*slot);
  free(slot);
}

/* The ring behind argument 0, or NULL (thrown) when it is not one or is closed. */
static io_ring *ring_arg(napi_env env, napi_value v, io_ring ***slot_out) {
  napi_valuetype t;
  io_ring **slot = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object || napi_unwrap(env, v, (void **)&slot) != napi_ok || slot == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "not an io ring");
    return NULL;
  }
  if (*slot == NULL) {
    napi_throw_error(env, "ERR_CLOSED", "the io ring is closed");
    return NULL;
  }
  if (slot_out != NULL) *slot_out = slot;
  return *slot;
}

static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return false;
  if (argc < want) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "missing arguments");
    return false;
  }
  return true;
}

static napi_value IoRingCreate(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  uint32_t entries;
  if (napi_get_value_uint32(env, argv[0], &entries) != napi_ok || entries < 1 || entries > MAX_ENTRIES) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "io ring entries must be 1..4096");
    return NULL;
  }
  const char *what = "";
  io_ring *r = ring_create(entries, &what);
  if (r == NULL) {
    throw_ring_error(env, errno, what);
    return NULL;
  }
  io_ring **slot = malloc(sizeof *slot);
  napi_value obj;
  if (slot == NULL || napi_create_object(env, &obj) != napi_ok) {
    free(slot);
    ring_free(r);
    napi_throw_error(env, "ERR_NATIVE", "io ring: out of memory");
    return NULL;
  }
  *slot = r;
  if (napi_wrap(env, obj, slot, ring_finalize, NULL, NULL) != napi_ok) {
    free(slot);
    ring_free(r);
    napi_throw_error(env, "ERR_NATIVE", "io ring: napi_wrap failed");
    return NULL;
  }
  return obj;
}

static napi_value IoRingEventfd(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  if (!get_args(env, info, 1, argv)) return NULL;
  io_ring *r = ring_arg(env, argv[0], NULL);
  if (r == NULL) return NULL;
  napi_create_int32(env, r->efd, &out);
  return out;
}

static napi_value IoRingEntries(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  if (!get_args(env, info, 1, argv)) return NULL;
  io_ring *r = ring_arg(env, argv[0], NULL);
  if (r == NULL) return NULL;
  napi_create_uint32(env, r->sq_entries, &out);
  return out;
}

/* Room for n more iovecs in the arena (grown as needed). */
static struct iovec *iov_take(io_ring *r, size_t n) {
  if (r->iov_used + n > r->iov_cap) {
    size_t cap = r->iov_cap;
    while (cap < r->iov_used + n) cap *= 2;
    /* Growing moves the arena: SQEs already filled point into it. Only grow when none are
     * pending; otherwise the caller submits first (ioRingQueue returns false). */
    if (r->sq_queued != 0) return NULL;
    struct iovec *grown = realloc(r->iov, cap * sizeof *grown);
    if (grown == NULL) return NULL;
    r->iov = grown;
    r->iov_cap = cap;
  }
  struct iovec *v = r->iov + r->iov_used;
  r->iov_used += n;
  return v;
}

/* Room for the n iovecs of one request: `one` for a single buffer, else the arena (NULL: no
 * room until a submit). iovecs_return gives back what iovecs_for took from the arena. */
static struct iovec *iovecs_for(io_ring *r, uint32_t n, struct iovec *one) {
  return n > 1 ? iov_take(r, n) : one;
}

static void iovecs_return(io_ring *r, uint32_t n, const struct iovec *v, const struct iovec *one) {
  if (v != one) r->iov_used -= n;
}

/* The arguments every queue call shares: ring, op, fd, position (argv[0..3]) and the tag. */
typedef struct {
  io_ring *r;
  uint32_t op, tag;
  int32_t fd;
  double position;
} queue_args;

static bool parse_queue_args(napi_env env, napi_value *argv, napi_value tag, queue_args *a) {
  a->r = ring_arg(env, argv[0], NULL);
  if (a->r == NULL) return false;
  if (napi_get_value_uint32(env, argv[1], &a->op) != napi_ok || a->op > 2) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "io ring op must be 0 (read), 1 (write) or 2 (fdatasync)");
    return false;
  }
  if (napi_get_value_int32(env, argv[2], &a->fd) != napi_ok || a->fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fd must be a non-negative integer");
    return false;
  }
  if (napi_get_value_double(env, argv[3], &a->position) != napi_ok || !(a->position >= 0) || a->position > 9007199254740991.0 ||
      a->position != (double)(uint64_t)a->position) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "position must be an integer in [0, 2^53)");
    return false;
  }
  if (napi_get_value_uint32(env, tag, &a->tag) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "tag must be a uint32");
    return false;
  }
  return true;
}

/* The next free SQE, zeroed, or NULL when the SQ is full. */
static struct io_uring_sqe *sqe_next(io_ring *r) {
  unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
  unsigned tail = *r->sq_tail;
  if (tail - head >= r->sq_entries) return NULL;
  struct io_uring_sqe *sqe = &r->sqes[tail & *r->sq_mask];
  memset(sqe, 0, sizeof *sqe);
  return sqe;
}

/* Fills `sqe` for a read or write of n iovecs (one: READ/WRITE; more: READV/WRITEV) and queues it. */
static void sqe_queue_rw(io_ring *r, struct io_uring_sqe *sqe, const queue_args *a, struct iovec *v, uint32_t n) {
  sqe->fd = a->fd;
  sqe->user_data = a->tag;
  if (n == 1) {
    sqe->opcode = a->op == 0 ? IORING_OP_READ : IORING_OP_WRITE;
    sqe->addr = (uint64_t)(uintptr_t)v[0].iov_base;
    sqe->len = (uint32_t)(v[0].iov_len > 0x7ffff000 ? 0x7ffff000 : v[0].iov_len);
  } else {
    sqe->opcode = a->op == 0 ? IORING_OP_READV : IORING_OP_WRITEV;
    sqe->addr = (uint64_t)(uintptr_t)v;
    sqe->len = n;
  }
  sqe->off = (uint64_t)a->position;
}

static void sq_push(io_ring *r) {
  unsigned tail = *r->sq_tail;
  r->sq_array[tail & *r->sq_mask] = tail & *r->sq_mask;
  __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
  r->sq_queued++;
}

static napi_value IoRingQueue(napi_env env, napi_callback_info info) {
  napi_value argv[6], result;
  if (!get_args(env, info, 6, argv)) return NULL;
  queue_args a;
  if (!parse_queue_args(env, argv, argv[5], &a)) return NULL;
  io_ring *r = a.r;
  struct io_uring_sqe *sqe = sqe_next(r);
  if (sqe == NULL) {
    napi_get_boolean(env, false, &result);
    return result;
  }
  if (a.op == 2) {
    sqe->fd = a.fd;
    sqe->user_data = a.tag;
    sqe->opcode = IORING_OP_FSYNC;
    sqe->fsync_flags = IORING_FSYNC_DATASYNC;
  } else {
    bool is_array;
    uint32_t n;
    if (napi_is_array(env, argv[4], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[4], &n) != napi_ok || n < 1 ||
        n > MAX_IOV) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "buffers must be an array of 1..1024 Uint8Arrays");
      return NULL;
    }
    struct iovec one, *v = iovecs_for(r, n, &one);
    if (v == NULL) {
      napi_get_boolean(env, false, &result); /* submit first, then the arena can grow */
      return result;
    }
    for (uint32_t i = 0; i < n; i++) {
      napi_value b;
      napi_typedarray_type type;
      size_t len;
      void *data;
      if (napi_get_element(env, argv[4], i, &b) != napi_ok ||
          napi_get_typedarray_info(env, b, &type, &len, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
        iovecs_return(r, n, v, &one);
        napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "buffers must be Uint8Arrays");
        return NULL;
      }
      v[i].iov_base = data;
      v[i].iov_len = len;
    }
    sqe_queue_rw(r, sqe, &a, v, n);
  }
  sq_push(r);
  napi_get_boolean(env, true, &result);
  return result;
}

/* Regions one spans call may name (vhost-user allows at most a few hundred memory regions). */
#define MAX_SPAN_BASES 512

/*
 * ioRingQueueSpans(ring, op, fd, position, bases, table, count, tag): a read or write whose
 * buffers are given as spans of a few large Uint8Arrays (the guest's memory regions) instead
 * of one view per buffer: table is a Float64Array of (base index, byte offset, length) per
 * span. Every span is checked to lie inside its base; a bad one throws a RangeError and
 * queues nothing. One napi lookup per base, none per span: a chain of 64 pages costs one.
 */
static napi_value IoRingQueueSpans(napi_env env, napi_callback_info info) {
  napi_value argv[8], result;
  if (!get_args(env, info, 8, argv)) return NULL;
  queue_args a;
  if (!parse_queue_args(env, argv, argv[7], &a)) return NULL;
  io_ring *r = a.r;
  if (a.op > 1) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "spans are for reads (op 0) and writes (op 1)");
    return NULL;
  }
  bool is_array;
  uint32_t nbases, n;
  if (napi_is_array(env, argv[4], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[4], &nbases) != napi_ok || nbases < 1 ||
      nbases > MAX_SPAN_BASES) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "bases must be an array of 1..512 Uint8Arrays");
    return NULL;
  }
  napi_typedarray_type ttype;
  size_t tlen;
  void *tdata;
  if (napi_get_typedarray_info(env, argv[5], &ttype, &tlen, &tdata, NULL, NULL) != napi_ok || ttype != napi_float64_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "table must be a Float64Array");
    return NULL;
  }
  if (napi_get_value_uint32(env, argv[6], &n) != napi_ok || n < 1 || n > MAX_IOV || (size_t)n * 3 > tlen) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "count must be 1..1024 and within the table");
    return NULL;
  }
  uint8_t *base_data[MAX_SPAN_BASES];
  size_t base_len[MAX_SPAN_BASES];
  for (uint32_t i = 0; i < nbases; i++) {
    napi_value b;
    napi_typedarray_type type;
    void *data;
    if (napi_get_element(env, argv[4], i, &b) != napi_ok ||
        napi_get_typedarray_info(env, b, &type, &base_len[i], &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "bases must be Uint8Arrays");
      return NULL;
    }
    base_data[i] = data;
  }
  struct io_uring_sqe *sqe = sqe_next(r);
  if (sqe == NULL) {
    napi_get_boolean(env, false, &result);
    return result;
  }
  struct iovec one, *v = iovecs_for(r, n, &one);
  if (v == NULL) {
    napi_get_boolean(env, false, &result); /* submit first, then the arena can grow */
    return result;
  }
  const double *t = tdata;
  for (uint32_t i = 0; i < n; i++) {
    double bi = t[3 * i], off = t[3 * i + 1], len = t[3 * i + 2];
    /* Integers, base in range, 0 <= off, 0 <= len, off + len <= the base's length (no overflow:
     * both are checked against the length first). */
    if (!(bi >= 0 && bi < nbases && bi == (double)(uint32_t)bi) || !(off >= 0 && off <= (double)base_len[(uint32_t)bi]) ||
        off != (double)(uint64_t)off || !(len >= 0 && len <= (double)base_len[(uint32_t)bi] - off) || len != (double)(uint64_t)len) {
      iovecs_return(r, n, v, &one);
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "a span is not inside its base");
      return NULL;
    }
    v[i].iov_base = base_data[(uint32_t)bi] + (size_t)off;
    v[i].iov_len = (size_t)len;
  }
  sqe_queue_rw(r, sqe, &a, v, n);
  sq_push(r);
  napi_get_boolean(env, true, &result);
  return result;
}

static napi_value IoRingSubmit(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  if (!get_args(env, info, 1, argv)) return NULL;
  io_ring *r = ring_arg(env, argv[0], NULL);
  if (r == NULL) return NULL;
  unsigned submitted = 0;
  while (r->sq_queued > 0) {
    int n = sys_enter(r->fd, r->sq_queued, 0, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EBUSY) break; /* the CQ is full: reap, then submit again */
      throw_ring_error(env, errno, "io_uring_enter");
      return NULL;
    }
    if (n == 0) break;
    submitted += (unsigned)n;
    r->sq_queued -= (unsigned)n;
  }
  if (r->sq_queued == 0) r->iov_used = 0; /* the kernel has read every iovec (SUBMIT_STABLE) */
  napi_create_uint32(env, submitted, &out);
  return out;
}

static napi_value IoRingReap(napi_env env, napi_callback_info info) {
  napi_value argv[3], out;
  size_t argc = 3;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 2) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "missing arguments");
    return NULL;
  }
  io_ring *r = ring_arg(env, argv[0], NULL);
  if (r == NULL) return NULL;
  bool clear = false;
  napi_valuetype t3;
  if (argc >= 3 && napi_typeof(env, argv[2], &t3) == napi_ok && t3 == napi_boolean) napi_get_value_bool(env, argv[2], &clear);
  if (clear) {
    /* Reset the completion eventfd before reading the CQ: every CQE posted before this read is
     * reaped below, and any posted after it signals the eventfd again (no completion is left
     * without a wake-up). The caller reaps right after a submit whose completions came inline. */
    uint64_t count;
    ssize_t n;
    do n = read(r->efd, &count, sizeof count);
    while (n < 0 && errno == EINTR);
  }
  napi_typedarray_type type;
  size_t len;
  void *data;
  if (napi_get_typedarray_info(env, argv[1], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_int32_array || len < 2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "out must be an Int32Array of at least 2 elements");
    return NULL;
  }
  int32_t *pairs = data;
  size_t max = len / 2, got = 0;
  unsigned head = *r->cq_head;
  unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
  while (head != tail && got < max) {
    struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
    pairs[2 * got] = (int32_t)(uint32_t)c->user_data;
    pairs[2 * got + 1] = c->res;
    got++;
    head++;
  }
  __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
  napi_create_uint32(env, (uint32_t)got, &out);
  return out;
}

static napi_value IoRingClose(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  io_ring **slot;
  io_ring *r = ring_arg(env, argv[0], &slot);
  if (r == NULL) return NULL;
  *slot = NULL;
  ring_free(r);
  return NULL;
}

/*
 * fileReadsInline(fd) -> whether the file takes RWF_NOWAIT reads: a one-byte preadv2 at offset 0
 * with RWF_NOWAIT. EOPNOTSUPP (tmpfs on Linux 6.18, for one) means io_uring can never complete
 * a read of it inline in io_uring_enter and hands every one to its io-wq worker threads; any
 * other outcome (data, EAGAIN for an uncached page, an empty file) means it can.
 */
static napi_value FileReadsInline(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t fd;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fd must be a non-negative integer");
    return NULL;
  }
  char byte;
  struct iovec v = {&byte, 1};
  ssize_t n;
  do n = preadv2(fd, &v, 1, 0, RWF_NOWAIT);
  while (n < 0 && errno == EINTR);
  napi_get_boolean(env, !(n < 0 && errno == EOPNOTSUPP), &out);
  return out;
}

#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}

napi_status io_ring_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      FN("ioRingCreate", IoRingCreate), FN("ioRingEventfd", IoRingEventfd), FN("ioRingEntries", IoRingEntries),
      FN("ioRingQueue", IoRingQueue),   FN("ioRingQueueSpans", IoRingQueueSpans),   FN("ioRingSubmit", IoRingSubmit),   FN("ioRingReap", IoRingReap),
      FN("ioRingClose", IoRingClose),   FN("fileReadsInline", FileReadsInline),
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
