/*
 * vhost_user_native.c - the small native layer of the vhost-user backend.
 *
 * Plain Node-API (C, NAPI_VERSION 8), context aware (NAPI_MODULE_INIT), so it
 * can be loaded by the main thread and by worker_threads alike. It provides
 * what JavaScript cannot do by itself on Linux:
 *
 *   - AF_UNIX stream sockets with SCM_RIGHTS fd passing (sendmsg/recvmsg),
 *     AF_UNIX datagrams (service manager notifications), socket inspection
 *     of inherited fds, group name lookup,
 *   - eventfd and memfd creation, eventfd read/write,
 *   - MAP_SHARED mappings exposed as zero-copy external ArrayBuffers that can
 *     be unmapped (and detached) explicitly,
 *   - readiness watching of fds with uv_poll on the calling thread's loop,
 *   - open file description byte-range locks (image locking of virtio-blk),
 *   - a SIGBUS guard over those mappings: a page the front-end took away by
 *     shrinking its fd is replaced by a private zero page instead of killing
 *     the process, and the fault is reported on an eventfd,
 *   - memfd seals (F_GET_SEALS / F_ADD_SEALS).
 *
 * Conventions:
 *   - A failed syscall throws an Error whose message is "<call>: <strerror>"
 *     (optionally "<call>(<detail>): ..."), with `code` set to the errno name
 *     ("EBADF", ...), `errno` to the number and `syscall` to the call name.
 *   - A bad argument throws TypeError (code ERR_INVALID_ARG_TYPE) or
 *     RangeError (code ERR_OUT_OF_RANGE). Nothing here aborts the process.
 *   - All fds created here are close-on-exec.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#include "io_ring.h"

#define MAX_SAFE_INTEGER 9007199254740991.0 /* 2^53 - 1 */
#define MAX_SEND_FDS 8                      /* vhost-user's per-message limit */
#define MAX_RECV_FDS 253                    /* Linux SCM_MAX_FD */
#define MAX_PATH_ARG 4096

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

static void set_str(napi_env env, napi_value obj, const char *key, const char *val) {
  napi_value v;
  if (napi_create_string_utf8(env, val, NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_set_named_property(env, obj, key, v);
}

static void set_bool(napi_env env, napi_value obj, const char *key, bool val) {
  napi_value v;
  if (napi_get_boolean(env, val, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

/* Builds (does not throw) an Error for a failed call: message, code, errno,
 * syscall. `err` is a positive errno value. */
static napi_value make_errno_error(napi_env env, int err, const char *call, const char *detail) {
  char text[128], msg[MAX_PATH_ARG + 256];
  const char *reason = strerror_r(err, text, sizeof text); /* GNU variant */
  const char *name = strerrorname_np(err);
  if (detail != NULL)
    snprintf(msg, sizeof msg, "%s(%s): %s", call, detail, reason);
  else
    snprintf(msg, sizeof msg, "%s: %s", call, reason);

  napi_value code, message, error, errnum;
  if (napi_create_string_utf8(env, name != NULL ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok)
    return NULL;
  if (napi_create_int32(env, err, &errnum) == napi_ok) napi_set_named_property(env, error, "errno", errnum);
  set_str(env, error, "syscall", call);
  return error;
}

static void throw_errno(napi_env env, int err, const char *call, const char *detail) {
  napi_value error = make_errno_error(env, err, call, detail);
  if (error != NULL)
    napi_throw(env, error);
  else
    napi_throw_error(env, "ERR_NATIVE", call);
}

/* libuv reports negated errnos; uv_err_name gives the same "EBADF" names. */
static napi_value make_uv_error(napi_env env, int uverr, const char *call) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", call, uv_strerror(uverr));
  napi_value code, message, error, errnum;
  if (napi_create_string_utf8(env, uv_err_name(uverr), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok)
    return NULL;
  if (napi_create_int32(env, -uverr, &errnum) == napi_ok) napi_set_named_property(env, error, "errno", errnum);
  set_str(env, error, "syscall", call);
  return error;
}

/* A Node-API call itself failed (out of memory, pending exception, ...). */
static void throw_napi_failure(napi_env env, const char *what) {
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[256];
  snprintf(msg, sizeof msg, "%s: Node-API call failed: %s", what,
           info != NULL && info->error_message != NULL ? info->error_message : "unknown error");
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, "ERR_NATIVE", msg);
}

#define NAPI_CALL(env, call)                      \
  do {                                            \
    if ((call) != napi_ok) {                      \
      throw_napi_failure((env), __func__);        \
      return NULL;                                \
    }                                             \
  } while (0)

/* ------------------------------------------------------------------------ */
/* Argument helpers: each returns false with a JS exception pending.        */
/* ------------------------------------------------------------------------ */

static bool get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, napi_value *self) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, self, NULL) != napi_ok) {
    throw_napi_failure(env, "arguments");
    return false;
  }
  return true; /* missing arguments are filled with undefined */
}

static bool arg_integer(napi_env env, napi_value v, const char *name, double min, double max, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a number", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  double d = 0;
  napi_get_value_double(env, v, &d);
  /* The range test comes first (and fails for NaN), so the cast is defined. */
  if (!(d >= min && d <= max) || (double)(int64_t)d != d) {
    char msg[200];
    snprintf(msg, sizeof msg, "%s must be an integer in [%.0f, %.0f], got %g", name, min, max, d);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return false;
  }
  *out = d;
  return true;
}

static bool arg_fd(napi_env env, napi_value v, int *fd) {
  double d;
  if (!arg_integer(env, v, "fd", 0, INT_MAX, &d)) return false;
  *fd = (int)d;
  return true;
}

static bool arg_bool(napi_env env, napi_value v, const char *name, bool *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_boolean) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a boolean", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  return napi_get_value_bool(env, v, out) == napi_ok;
}

/* A Uint8Array (Buffer included); *data points at its first byte. */
static bool arg_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  bool is_ta = false;
  napi_typedarray_type type;
  void *ptr = NULL;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, len, &ptr, NULL, NULL) != napi_ok ||
      (type != napi_uint8_array && type != napi_uint8_clamped_array)) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a Uint8Array", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  *data = ptr;
  return true;
}

/* A string without NUL bytes, at most max_len UTF-8 bytes (longer strings
 * are reported with their full length in *len and a NULL result but no
 * exception, so the caller can raise its own error). Free with free(). */
static char *arg_string(napi_env env, napi_value v, const char *name, size_t max_len, size_t *len) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a string", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return NULL;
  }
  if (napi_get_value_string_utf8(env, v, NULL, 0, len) != napi_ok) {
    throw_napi_failure(env, name);
    return NULL;
  }
  if (*len > max_len) return NULL;
  char *s = malloc(*len + 1);
  if (s == NULL) {
    throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  size_t copied = 0;
  napi_get_value_string_utf8(env, v, s, *len + 1, &copied);
  if (copied != *len || strlen(s) != *len) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must not contain NUL characters", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
    free(s);
    return NULL;
  }
  return s;
}

/* Returns an fd to JS; if even that fails the fd is closed, not leaked. */
static napi_value return_fd(napi_env env, int fd) {
  napi_value r;
  if (napi_create_int32(env, fd, &r) != napi_ok) {
    close(fd);
    throw_napi_failure(env, "return fd");
    return NULL;
  }
  return r;
}

static napi_value return_double(napi_env env, double d) {
  napi_value r;
  NAPI_CALL(env, napi_create_double(env, d, &r));
  return r;
}

static napi_value undefined(napi_env env) {
  napi_value r = NULL;
  napi_get_undefined(env, &r);
  return r;
}

static napi_value null_value(napi_env env) {
  napi_value r = NULL;
  napi_get_null(env, &r);
  return r;
}

/* ------------------------------------------------------------------------ */
/* Unix sockets                                                             */
/* ------------------------------------------------------------------------ */

/* Fills a sockaddr_un from a JS path. sun_path must also hold the NUL. With
 * `abstract_ok`, a path starting with '@' names a Linux abstract socket: the
 * rest of the string, after a leading NUL, without a terminating NUL (the
 * NOTIFY_SOCKET convention). */
static bool arg_sockaddr(napi_env env, napi_value v, const char *fn, struct sockaddr_un *sa, socklen_t *salen,
                         char **path, bool abstract_ok) {
  size_t len = 0;
  *path = arg_string(env, v, "path", MAX_PATH_ARG, &len);
  if (*path == NULL) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) throw_errno(env, ENAMETOOLONG, fn, "path longer than 4096 bytes");
    return false;
  }
  if (len == 0) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "path must not be empty");
    free(*path);
    return false;
  }
  bool abstract = abstract_ok && (*path)[0] == '@';
  if (abstract && len == 1) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "abstract socket name must not be empty");
    free(*path);
    return false;
  }
  /* An abstract name needs no terminating NUL: its leading NUL takes the '@''s place. */
  if (abstract ? len > sizeof sa->sun_path : len >= sizeof sa->sun_path) {
    char msg[MAX_PATH_ARG + 160];
    snprintf(msg, sizeof msg, "%s: socket path is %zu bytes, longer than sun_path allows (%zu): %s", fn, len,
             sizeof sa->sun_path - 1, *path);
    napi_value code, message, error;
    if (napi_create_string_utf8(env, "ENAMETOOLONG", NAPI_AUTO_LENGTH, &code) == napi_ok &&
        napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) == napi_ok &&
        napi_create_error(env, code, message, &error) == napi_ok) {
      set_str(env, error, "syscall", fn);
      napi_throw(env, error);
    }
    free(*path);
    return false;
  }
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (abstract) {
    memcpy(sa->sun_path + 1, *path + 1, len - 1);
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  } else {
    memcpy(sa->sun_path, *path, len + 1);
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  }
  return true;
}

/* socketListen(path, backlog): listening, non-blocking, close-on-exec socket. */
static napi_value SocketListen(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct sockaddr_un sa;
  socklen_t salen;
  char *path;
  double backlog;
  if (!get_args(env, info, 2, argv, NULL) || !arg_integer(env, argv[1], "backlog", 0, INT_MAX, &backlog) ||
      !arg_sockaddr(env, argv[0], "socketListen", &sa, &salen, &path, false))
    return NULL;

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", NULL);
    free(path);
    return NULL;
  }
  if (bind(fd, (struct sockaddr *)&sa, salen) < 0 || listen(fd, (int)backlog) < 0) {
    int err = errno;
    /* Tell which of the two failed: listen only runs after a good bind. */
    struct sockaddr_un bound;
    socklen_t blen = sizeof bound;
    bool was_bound = getsockname(fd, (struct sockaddr *)&bound, &blen) == 0 && blen > sizeof(sa_family_t);
    close(fd);
    throw_errno(env, err, was_bound ? "listen" : "bind", path);
    free(path);
    return NULL;
  }
  free(path);
  return return_fd(env, fd);
}

/* socketAccept(fd): a non-blocking connection fd, or null if none pending. */
static napi_value SocketAccept(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], &fd)) return NULL;
  for (;;) {
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c >= 0) return return_fd(env, c);
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return null_value(env);
    throw_errno(env, errno, "accept4", NULL);
    return NULL;
  }
}

/* socketConnect(path): a connected, *blocking* socket. */
static napi_value SocketConnect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct sockaddr_un sa;
  socklen_t salen;
  char *path;
  if (!get_args(env, info, 1, argv, NULL) || !arg_sockaddr(env, argv[0], "socketConnect", &sa, &salen, &path, false))
    return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", NULL);
    free(path);
    return NULL;
  }
  /* An interrupted AF_UNIX connect leaves the socket unconnected (the kernel
   * connects atomically), so simply retry; EISCONN means a retry raced a
   * completed connect and is success. */
  int r;
  do r = connect(fd, (struct sockaddr *)&sa, salen);
  while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EISCONN) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "connect", path);
    free(path);
    return NULL;
  }
  free(path);
  return return_fd(env, fd);
}

/* socketPair(): [a, b], blocking, close-on-exec. */
static napi_value SocketPair(napi_env env, napi_callback_info info) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    throw_errno(env, errno, "socketpair", NULL);
    return NULL;
  }
  napi_value arr, a, b;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok || napi_create_int32(env, sv[0], &a) != napi_ok ||
      napi_create_int32(env, sv[1], &b) != napi_ok || napi_set_element(env, arr, 0, a) != napi_ok ||
      napi_set_element(env, arr, 1, b) != napi_ok) {
    close(sv[0]);
    close(sv[1]);
    throw_napi_failure(env, "socketPair");
    return NULL;
  }
  return arr;
}

/* datagramBind(path): an AF_UNIX datagram socket bound to path (a path
 * starting with '@' is an abstract name), non-blocking and close-on-exec;
 * read it with recvMsg(). EADDRINUSE if the name is taken. */
static napi_value DatagramBind(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct sockaddr_un sa;
  socklen_t salen;
  char *path;
  if (!get_args(env, info, 1, argv, NULL) || !arg_sockaddr(env, argv[0], "datagramBind", &sa, &salen, &path, true))
    return NULL;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", NULL);
    free(path);
    return NULL;
  }
  if (bind(fd, (struct sockaddr *)&sa, salen) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "bind", path);
    free(path);
    return NULL;
  }
  free(path);
  return return_fd(env, fd);
}

/* datagramSend(path, buf): sends buf as one datagram to the AF_UNIX socket
 * bound at path ('@' for an abstract name) from a fresh unbound socket, then
 * closes it: what a service manager's notification socket (NOTIFY_SOCKET)
 * expects. The socket is non-blocking, so a receiver whose queue is full gives
 * EAGAIN instead of stalling the caller's event loop. Returns bytes sent. */
static napi_value DatagramSend(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct sockaddr_un sa;
  socklen_t salen;
  char *path;
  uint8_t *data;
  size_t len;
  if (!get_args(env, info, 2, argv, NULL) || !arg_bytes(env, argv[1], "buf", &data, &len) ||
      !arg_sockaddr(env, argv[0], "datagramSend", &sa, &salen, &path, true))
    return NULL;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", NULL);
    free(path);
    return NULL;
  }
  ssize_t n;
  do n = sendto(fd, data, len, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) {
    throw_errno(env, err, "sendto", path);
    free(path);
    return NULL;
  }
  free(path);
  return return_double(env, (double)n);
}

/* socketInfo(fd): what kind of socket fd is, to check an inherited one:
 * { family: 'unix'|'inet'|'inet6'|'other', type: 'stream'|'dgram'|
 * 'seqpacket'|'other', listening (SO_ACCEPTCONN), path: the bound name of
 * an AF_UNIX socket ('@name' when abstract) or null }. Throws ENOTSOCK for
 * an fd that is not a socket. */
static napi_value SocketInfo(napi_env env, napi_callback_info info) {
  napi_value argv[1], result, v;
  int fd, domain = 0, type = 0, accepting = 0;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], &fd)) return NULL;
  socklen_t olen = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &olen) < 0) {
    throw_errno(env, errno, "getsockopt", "SO_DOMAIN");
    return NULL;
  }
  olen = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &olen) < 0) {
    throw_errno(env, errno, "getsockopt", "SO_TYPE");
    return NULL;
  }
  olen = sizeof accepting;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &olen) < 0) {
    throw_errno(env, errno, "getsockopt", "SO_ACCEPTCONN");
    return NULL;
  }
  const char *family = domain == AF_UNIX ? "unix" : domain == AF_INET ? "inet" : domain == AF_INET6 ? "inet6" : "other";
  const char *kind = type == SOCK_STREAM      ? "stream"
                     : type == SOCK_DGRAM     ? "dgram"
                     : type == SOCK_SEQPACKET ? "seqpacket"
                                              : "other";
  NAPI_CALL(env, napi_create_object(env, &result));
  set_str(env, result, "family", family);
  set_str(env, result, "type", kind);
  set_bool(env, result, "listening", accepting != 0);

  /* The bound name: unnamed sockets have nothing after sun_family. */
  char name[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  size_t name_len = 0;
  bool named = false;
  if (domain == AF_UNIX) {
    struct sockaddr_un sa;
    socklen_t salen = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &salen) < 0) {
      throw_errno(env, errno, "getsockname", NULL);
      return NULL;
    }
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t n = salen > off ? (size_t)salen - off : 0;
    if (n > sizeof sa.sun_path) n = sizeof sa.sun_path;
    if (n > 0 && sa.sun_path[0] == '\0') { /* abstract: '@' + the bytes after the NUL */
      name[0] = '@';
      memcpy(name + 1, sa.sun_path + 1, n - 1);
      name_len = n;
      named = n > 1;
    } else if (n > 0) {
      name_len = strnlen(sa.sun_path, n);
      memcpy(name, sa.sun_path, name_len);
      named = name_len > 0;
    }
  }
  if (named)
    NAPI_CALL(env, napi_create_string_utf8(env, name, name_len, &v));
  else
    v = null_value(env);
  NAPI_CALL(env, napi_set_named_property(env, result, "path", v));
  return result;
}

/* groupId(name): the gid of the group called name (getgrnam_r, so every NSS
 * source counts, not only /etc/group), or null if there is none. */
static napi_value GroupId(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t len = 0;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  char *name = arg_string(env, argv[0], "name", 256, &len);
  if (name == NULL) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "name must be at most 256 bytes");
    return NULL;
  }
  long hint = sysconf(_SC_GETGR_R_SIZE_MAX);
  size_t size = hint > 0 ? (size_t)hint : 16384;
  for (;;) {
    char *buf = malloc(size);
    if (buf == NULL) {
      free(name);
      throw_errno(env, ENOMEM, "malloc", NULL);
      return NULL;
    }
    struct group grp, *found = NULL;
    int r = getgrnam_r(name, &grp, buf, size, &found);
    if (r == ERANGE && size < (1u << 24)) {
      free(buf);
      size *= 2;
      continue;
    }
    gid_t gid = found != NULL ? found->gr_gid : 0;
    free(buf);
    /* "Not found" is a NULL result with 0, or one of these errnos (getgrnam_r(3)). */
    if (found == NULL && r != 0 && r != ENOENT && r != ESRCH && r != EBADF && r != EPERM) {
      throw_errno(env, r, "getgrnam_r", name);
      free(name);
      return NULL;
    }
    free(name);
    if (found == NULL) return null_value(env);
    return return_double(env, (double)gid);
  }
}

/* setNonblocking(fd, on): sets or clears O_NONBLOCK (on the open file
 * description, i.e. visible to every process sharing it). */
static napi_value SetNonblocking(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  bool on;
  if (!get_args(env, info, 2, argv, NULL) || !arg_fd(env, argv[0], &fd) || !arg_bool(env, argv[1], "on", &on))
    return NULL;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) {
    throw_errno(env, errno, "fcntl", "F_GETFL");
    return NULL;
  }
  int want = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (want != flags && fcntl(fd, F_SETFL, want) < 0) {
    throw_errno(env, errno, "fcntl", "F_SETFL");
    return NULL;
  }
  return undefined(env);
}

/* isNonblocking(fd): whether O_NONBLOCK is set. */
static napi_value IsNonblocking(napi_env env, napi_callback_info info) {
  napi_value argv[1], r;
  int fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], &fd)) return NULL;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) {
    throw_errno(env, errno, "fcntl", "F_GETFL");
    return NULL;
  }
  NAPI_CALL(env, napi_get_boolean(env, (flags & O_NONBLOCK) != 0, &r));
  return r;
}

/* recvMsg(fd, buf, maxFds): one recvmsg. Returns null on EAGAIN, otherwise
 * { bytes, fds, truncatedFds }. bytes === 0 means the peer closed. At most
 * maxFds received fds are returned; extra ones are closed at once, and
 * truncatedFds reports that (or that the kernel dropped fds: MSG_CTRUNC). */
static napi_value RecvMsg(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  uint8_t *data;
  size_t len;
  double max_fds;
  if (!get_args(env, info, 3, argv, NULL) || !arg_fd(env, argv[0], &fd) ||
      !arg_bytes(env, argv[1], "buf", &data, &len) ||
      !arg_integer(env, argv[2], "maxFds", 0, MAX_RECV_FDS, &max_fds))
    return NULL;
  if (len == 0) {
    /* A zero-length read would be indistinguishable from "peer closed". */
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "buf must not be empty");
    return NULL;
  }

  /* Room for the most fds a single message can carry, so the kernel never
   * has to drop any; we decide ourselves which ones to keep. */
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * MAX_RECV_FDS)];
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;

  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return null_value(env);
    throw_errno(env, errno, "recvmsg", NULL);
    return NULL;
  }

  int fds[MAX_RECV_FDS];
  size_t nfds = 0;
  bool truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int f;
      memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
      if (nfds < (size_t)max_fds) {
        fds[nfds++] = f;
      } else {
        close(f);
        truncated = true;
      }
    }
  }

  napi_value result, bytes, arr, v;
  bool ok = napi_create_object(env, &result) == napi_ok && napi_create_double(env, (double)n, &bytes) == napi_ok &&
            napi_set_named_property(env, result, "bytes", bytes) == napi_ok &&
            napi_create_array_with_length(env, nfds, &arr) == napi_ok;
  for (size_t i = 0; ok && i < nfds; i++)
    ok = napi_create_int32(env, fds[i], &v) == napi_ok && napi_set_element(env, arr, (uint32_t)i, v) == napi_ok;
  ok = ok && napi_set_named_property(env, result, "fds", arr) == napi_ok &&
       napi_get_boolean(env, truncated, &v) == napi_ok &&
       napi_set_named_property(env, result, "truncatedFds", v) == napi_ok;
  if (!ok) {
    for (size_t i = 0; i < nfds; i++) close(fds[i]);
    throw_napi_failure(env, "recvMsg");
    return NULL;
  }
  return result;
}

/* sendMsg(fd, buf, fds): one sendmsg (MSG_NOSIGNAL) with fds attached as
 * SCM_RIGHTS. Returns bytes sent (may be short on a non-blocking socket; the
 * fds travel with the first byte). EAGAIN is thrown with code 'EAGAIN'. */
static napi_value SendMsg(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  uint8_t *data;
  size_t len;
  bool is_array = false;
  uint32_t nfds = 0;
  if (!get_args(env, info, 3, argv, NULL) || !arg_fd(env, argv[0], &fd) ||
      !arg_bytes(env, argv[1], "buf", &data, &len))
    return NULL;
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fds must be an array of fd numbers");
    return NULL;
  }
  NAPI_CALL(env, napi_get_array_length(env, argv[2], &nfds));
  if (nfds > MAX_SEND_FDS) {
    char msg[96];
    snprintf(msg, sizeof msg, "at most %d fds can be sent in one message, got %u", MAX_SEND_FDS, nfds);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return NULL;
  }
  if (nfds > 0 && len == 0) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "sending fds needs at least one byte of data");
    return NULL;
  }
  int fds[MAX_SEND_FDS];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value v;
    NAPI_CALL(env, napi_get_element(env, argv[2], i, &v));
    if (!arg_fd(env, v, &fds[i])) return NULL;
  }

  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * MAX_SEND_FDS)];
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    throw_errno(env, errno, "sendmsg", NULL);
    return NULL;
  }
  return return_double(env, (double)n);
}

/* readFull(fd, buf): reads until buf is full or EOF; returns the byte count
 * (less than buf.length only at EOF). Meant for blocking fds: an error after
 * partial progress is thrown and the partial data is lost. */
static napi_value ReadFull(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint8_t *data;
  size_t len, done = 0;
  if (!get_args(env, info, 2, argv, NULL) || !arg_fd(env, argv[0], &fd) ||
      !arg_bytes(env, argv[1], "buf", &data, &len))
    return NULL;
  while (done < len) {
    ssize_t r = read(fd, data + done, len - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno(env, errno, "read", NULL);
      return NULL;
    }
    if (r == 0) break;
    done += (size_t)r;
  }
  return return_double(env, (double)done);
}

/* write(fd, buf): writes all of buf (for blocking fds); returns buf.length.
 * Sockets are written with send(MSG_NOSIGNAL), so a closed peer gives EPIPE
 * rather than SIGPIPE. */
static napi_value Write(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint8_t *data;
  size_t len, done = 0;
  bool is_socket = true;
  if (!get_args(env, info, 2, argv, NULL) || !arg_fd(env, argv[0], &fd) ||
      !arg_bytes(env, argv[1], "buf", &data, &len))
    return NULL;
  while (done < len) {
    ssize_t r = -1;
    if (is_socket) {
      r = send(fd, data + done, len - done, MSG_NOSIGNAL);
      if (r < 0 && errno == ENOTSOCK) is_socket = false;
    }
    if (!is_socket) r = write(fd, data + done, len - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno(env, errno, is_socket ? "send" : "write", NULL);
      return NULL;
    }
    done += (size_t)r;
  }
  return return_double(env, (double)done);
}

/* ------------------------------------------------------------------------ */
/* Shared memory: memfd, mmap/munmap as external ArrayBuffers                */
/* ------------------------------------------------------------------------ */

/* One mapping. It is referenced by the ArrayBuffer's backing store (whose
 * finalizer munmaps unless already unmapped) and by a napi_wrap on the
 * ArrayBuffer object (so munmap() can find it); freed when both are gone. */
typedef struct {
  void *addr;
  size_t len;
  bool unmapped;
  int refs;
  int guard; /* its slot in the SIGBUS guard table, or -1 */
} mapping_t;

/* ------------------------------------------------------------------------ */
/* The SIGBUS guard                                                         */
/* ------------------------------------------------------------------------ */

/* A MAP_SHARED mapping of a front-end's fd can lose its pages under us: the
 * front-end only has to ftruncate() the fd smaller (an unsealed memfd, a
 * file). Touching such a page raises SIGBUS, whose default action kills the
 * process, and the touch may come from anywhere: a TypedArray read in
 * JavaScript, a copy in this addon, a preadv on libuv's pool. Nothing on
 * the access path can check for it at a cost we would accept, so the guard
 * sits beside it: a SIGBUS handler that, for an address inside a mapping
 * made by mmap() here, maps a private anonymous zero page over the faulting
 * page (MAP_FIXED) and returns, so the access is retried and completes
 * (reads see zeros, writes go nowhere), counts the fault on the mapping and
 * writes the fault eventfd. The session watching that eventfd then treats the
 * front-end as broken (its memory is no longer what it shared). Any other
 * SIGBUS goes to the disposition that was there before (by default: the
 * process dies, as it would have).
 *
 * The table is written by the thread that maps and unmaps (the JS thread)
 * and read by the handler on any thread: slots are published with release
 * stores of `start` after `end`, and cleared before munmap. A mapping is
 * unmapped only once no asynchronous I/O uses it (mapped-memory.ts), so no
 * other thread can be faulting in a slot that is being cleared. mmap() is
 * not on POSIX's async-signal-safe list but is a single system call on
 * Linux, as the handler's write() is; errno is preserved. */
#define GUARD_SLOTS 1024

typedef struct {
  _Atomic uintptr_t start; /* 0: free */
  _Atomic uintptr_t end;
  _Atomic unsigned faults;
} guard_slot_t;

static guard_slot_t guard_slots[GUARD_SLOTS];
static struct sigaction guard_previous;
static int guard_efd = -1;
static uintptr_t guard_page_mask;
static _Atomic int guard_state; /* 0 not installed, 1 installed, -1 failed */

static void guard_handler(int sig, siginfo_t *si, void *uctx) {
  uintptr_t a = (uintptr_t)si->si_addr;
  if (si->si_code > 0) { /* raised by the kernel for an access, not sent by kill() */
    for (int i = 0; i < GUARD_SLOTS; i++) {
      uintptr_t s = atomic_load_explicit(&guard_slots[i].start, memory_order_acquire);
      if (s == 0 || a < s || a >= atomic_load_explicit(&guard_slots[i].end, memory_order_relaxed)) continue;
      int saved = errno;
      void *page = (void *)(a & guard_page_mask);
      void *r = mmap(page, ~guard_page_mask + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (r != MAP_FAILED) {
        atomic_fetch_add_explicit(&guard_slots[i].faults, 1, memory_order_relaxed);
        uint64_t one = 1;
        if (write(guard_efd, &one, sizeof one) < 0) { /* counter full: already signalled */ }
        errno = saved;
        return;
      }
      errno = saved;
      break; /* cannot repair: as if unguarded */
    }
  }
  if (guard_previous.sa_flags & SA_SIGINFO) {
    guard_previous.sa_sigaction(sig, si, uctx);
  } else if (guard_previous.sa_handler == SIG_IGN) {
    /* ignored before: a fault would loop forever, so fall through to the default */
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS);
  } else if (guard_previous.sa_handler == SIG_DFL) {
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS); /* delivered on return: the process dies of SIGBUS, as unguarded */
  } else {
    guard_previous.sa_handler(sig);
  }
}

/* Installs the handler and makes the eventfd, once per process (the addon may be
 * loaded by several threads: pthread_once, so the previous disposition saved is never our
 * own handler). Done when the addon loads, so the eventfd is there from the start and the
 * fd tables of leak checks taken after the first load never see it appear. */
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;

static void guard_install_once(void) {
  long p = sysconf(_SC_PAGESIZE);
  guard_page_mask = ~((uintptr_t)(p > 0 ? p : 4096) - 1);
  guard_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = guard_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (guard_efd < 0 || sigaction(SIGBUS, &sa, &guard_previous) < 0) {
    if (guard_efd >= 0) close(guard_efd);
    guard_efd = -1;
    atomic_store(&guard_state, -1);
    return;
  }
  atomic_store(&guard_state, 1);
}

static bool guard_install(void) {
  pthread_once(&guard_once, guard_install_once);
  return atomic_load(&guard_state) > 0;
}

static int guard_add(void *addr, size_t len) {
  if (!guard_install()) return -1;
  for (int i = 0; i < GUARD_SLOTS; i++) {
    if (atomic_load_explicit(&guard_slots[i].start, memory_order_relaxed) != 0) continue;
    atomic_store_explicit(&guard_slots[i].faults, 0, memory_order_relaxed);
    atomic_store_explicit(&guard_slots[i].end, (uintptr_t)addr + len, memory_order_relaxed);
    atomic_store_explicit(&guard_slots[i].start, (uintptr_t)addr, memory_order_release);
    return i;
  }
  return -1; /* table full: the mapping is served unguarded */
}

static void guard_remove(mapping_t *m) {
  if (m->guard < 0) return;
  atomic_store_explicit(&guard_slots[m->guard].start, 0, memory_order_release);
  m->guard = -1;
}

/* Marks ArrayBuffers created by mmap() so munmap() can reject others. */
static const napi_type_tag mapping_tag = {0x76686f73742d7573ULL, 0x65722d6d6d617021ULL};

static void mapping_release(mapping_t *m) {
  if (--m->refs == 0) free(m);
}

/* Backing store gone (GC, or env teardown where Node detaches it first). */
static void mapping_finalize_buffer(napi_env env, void *data, void *hint) {
  mapping_t *m = hint;
  if (!m->unmapped) {
    guard_remove(m);
    munmap(m->addr, m->len);
    m->unmapped = true;
  }
  mapping_release(m);
}

static void mapping_finalize_wrap(napi_env env, void *data, void *hint) {
  mapping_release(data);
}

static size_t page_size(void) {
  long p = sysconf(_SC_PAGESIZE);
  return p > 0 ? (size_t)p : 4096;
}

/* mmap(fd, size, offset): MAP_SHARED read/write mapping as an ArrayBuffer. */
static napi_value Mmap(napi_env env, napi_callback_info info) {
  napi_value argv[3], ab;
  int fd;
  double size, offset;
  if (!get_args(env, info, 3, argv, NULL) || !arg_fd(env, argv[0], &fd) ||
      !arg_integer(env, argv[1], "size", 1, MAX_SAFE_INTEGER, &size) ||
      !arg_integer(env, argv[2], "offset", 0, MAX_SAFE_INTEGER, &offset))
    return NULL;
  size_t page = page_size();
  if ((uint64_t)offset % page != 0) {
    char msg[128];
    snprintf(msg, sizeof msg, "offset must be a multiple of the page size (%zu), got %.0f", page, offset);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return NULL;
  }
  void *addr = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
  if (addr == MAP_FAILED) {
    throw_errno(env, errno, "mmap", NULL);
    return NULL;
  }
  mapping_t *m = calloc(1, sizeof *m);
  if (m == NULL) {
    munmap(addr, (size_t)size);
    throw_errno(env, ENOMEM, "calloc", NULL);
    return NULL;
  }
  m->addr = addr;
  m->len = (size_t)size;
  m->refs = 1; /* the backing store's */
  m->guard = guard_add(addr, m->len);

  napi_status st = napi_create_external_arraybuffer(env, addr, m->len, mapping_finalize_buffer, m, &ab);
  if (st != napi_ok) {
    guard_remove(m);
    munmap(addr, m->len);
    free(m);
    if (st == napi_no_external_buffers_allowed)
      napi_throw_error(env, "ERR_NATIVE_NO_EXTERNAL_BUFFERS",
                       "mmap: this Node build does not allow external ArrayBuffers (V8 sandbox), "
                       "so guest memory cannot be mapped zero-copy");
    else
      throw_napi_failure(env, "mmap");
    return NULL;
  }
  /* From here the ArrayBuffer owns the mapping; on failure the finalizer
   * cleans up when it is collected. */
  NAPI_CALL(env, napi_type_tag_object(env, ab, &mapping_tag));
  m->refs++;
  if (napi_wrap(env, ab, m, mapping_finalize_wrap, NULL, NULL) != napi_ok) {
    m->refs--;
    throw_napi_failure(env, "mmap");
    return NULL;
  }
  return ab;
}

/* munmap(ab): unmaps now and detaches ab, so no JS view can reach the
 * freed range. Throws for a detached or foreign ArrayBuffer. */
static napi_value Munmap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool is_ab = false, detached = false, ours = false;
  mapping_t *m = NULL;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  if (napi_is_arraybuffer(env, argv[0], &is_ab) != napi_ok || !is_ab) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "munmap: expected an ArrayBuffer returned by mmap()");
    return NULL;
  }
  /* Check detachment before touching the wrap: once detached the backing
   * store may be finalized at any time. */
  NAPI_CALL(env, napi_is_detached_arraybuffer(env, argv[0], &detached));
  if (detached) {
    napi_throw_error(env, "ERR_INVALID_ARG_VALUE", "munmap: ArrayBuffer is detached (already unmapped?)");
    return NULL;
  }
  NAPI_CALL(env, napi_check_object_type_tag(env, argv[0], &mapping_tag, &ours));
  if (!ours || napi_unwrap(env, argv[0], (void **)&m) != napi_ok || m == NULL) {
    napi_throw_error(env, "ERR_INVALID_ARG_VALUE", "munmap: ArrayBuffer was not created by mmap()");
    return NULL;
  }
  if (m->unmapped) {
    napi_throw_error(env, "ERR_INVALID_ARG_VALUE", "munmap: mapping is already unmapped");
    return NULL;
  }
  void *addr = m->addr;
  size_t len = m->len;
  /* Mark first, so a finalizer triggered by the detach does not unmap too;
   * detach before munmap, so JS never sees unmapped memory. */
  m->unmapped = true;
  if (napi_detach_arraybuffer(env, argv[0]) != napi_ok) {
    m->unmapped = false;
    throw_napi_failure(env, "munmap: detach");
    return NULL;
  }
  guard_remove(m);
  if (munmap(addr, len) < 0) {
    throw_errno(env, errno, "munmap", NULL);
    return NULL;
  }
  return undefined(env);
}

/* mappingFaults(ab): how many pages of this mapping the SIGBUS guard has
 * replaced (0 for an unguarded or unmapped one). */
static napi_value MappingFaults(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool is_ab = false, detached = false, ours = false;
  mapping_t *m = NULL;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  if (napi_is_arraybuffer(env, argv[0], &is_ab) != napi_ok || !is_ab) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "mappingFaults: expected an ArrayBuffer returned by mmap()");
    return NULL;
  }
  NAPI_CALL(env, napi_is_detached_arraybuffer(env, argv[0], &detached));
  if (detached) return return_double(env, 0);
  NAPI_CALL(env, napi_check_object_type_tag(env, argv[0], &mapping_tag, &ours));
  if (!ours || napi_unwrap(env, argv[0], (void **)&m) != napi_ok || m == NULL) {
    napi_throw_error(env, "ERR_INVALID_ARG_VALUE", "mappingFaults: ArrayBuffer was not created by mmap()");
    return NULL;
  }
  unsigned n = m->guard < 0 || m->unmapped ? 0 : atomic_load_explicit(&guard_slots[m->guard].faults, memory_order_relaxed);
  return return_double(env, (double)n);
}

/* memoryFaultFd(): the eventfd the SIGBUS guard writes on each repaired
 * fault (nonblocking, close-on-exec, shared by the process), or null if the
 * guard could not be installed. Do not close it. */
static napi_value MemoryFaultFd(napi_env env, napi_callback_info info) {
  napi_value r;
  if (!guard_install()) {
    NAPI_CALL(env, napi_get_null(env, &r));
    return r;
  }
  NAPI_CALL(env, napi_create_int32(env, guard_efd, &r));
  return r;
}

/* fdSeals(fd): the memfd seals (F_GET_SEALS), or -1 for an fd that cannot
 * carry seals (not a memfd, or one made without MFD_ALLOW_SEALING reports
 * F_SEAL_SEAL only). */
static napi_value FdSeals(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], &fd)) return NULL;
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    if (errno == EINVAL) return return_double(env, -1);
    throw_errno(env, errno, "fcntl(F_GET_SEALS)", NULL);
    return NULL;
  }
  return return_double(env, (double)seals);
}

/* addSeals(fd, seals): F_ADD_SEALS. */
static napi_value AddSeals(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  double seals;
  if (!get_args(env, info, 2, argv, NULL) || !arg_fd(env, argv[0], &fd) ||
      !arg_integer(env, argv[1], "seals", 0, INT_MAX, &seals))
    return NULL;
  if (fcntl(fd, F_ADD_SEALS, (int)seals) < 0) {
    throw_errno(env, errno, "fcntl(F_ADD_SEALS)", NULL);
    return NULL;
  }
  return undefined(env);
}

/* memfdCreate(name, size): close-on-exec memfd of the given size, sealable
 * (MFD_ALLOW_SEALING: no seal is set). */
static napi_value MemfdCreate(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  double size;
  size_t len = 0;
  if (!get_args(env, info, 2, argv, NULL) || !arg_integer(env, argv[1], "size", 0, MAX_SAFE_INTEGER, &size))
    return NULL;
  char *name = arg_string(env, argv[0], "name", 249, &len); /* memfd_create's limit */
  if (name == NULL) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "name must be at most 249 bytes");
    return NULL;
  }
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    throw_errno(env, errno, "memfd_create", name);
    free(name);
    return NULL;
  }
  free(name);
  int r;
  do r = ftruncate(fd, (off_t)size);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, err, "ftruncate", NULL);
    return NULL;
  }
  return return_fd(env, fd);
}

/* ------------------------------------------------------------------------ */
/* Small fd utilities                                                       */
/* ------------------------------------------------------------------------ */

static napi_value FdSize(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  struct stat st;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], &fd)) return NULL;
  if (fstat(fd, &st) < 0) {
    throw_errno(env, errno, "fstat", NULL);
    return NULL;
  }
  return return_double(env, (double)st.st_size);
}

/* fdKind(fd): 'eventfd' | 'socket' | 'memfd' | 'file' | 'other'. */
static napi_value FdKind(napi_env env, napi_callback_info info) {
  napi_value argv[1], r;
  int fd;
  struct stat st;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], &fd)) return NULL;
  if (fstat(fd, &st) < 0) { /* also turns a closed fd into EBADF */
    throw_errno(env, errno, "fstat", NULL);
    return NULL;
  }
  char proc[64], target[256];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(proc, target, sizeof target - 1);
  target[n > 0 ? n : 0] = '\0';
  const char *kind = "other";
  if (S_ISSOCK(st.st_mode))
    kind = "socket";
  else if (strcmp(target, "anon_inode:[eventfd]") == 0)
    kind = "eventfd";
  else if (S_ISREG(st.st_mode))
    kind = strncmp(target, "/memfd:", 7) == 0 ? "memfd" : "file";
  NAPI_CALL(env, napi_create_string_utf8(env, kind, NAPI_AUTO_LENGTH, &r));
  return r;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], &fd)) return NULL;
  /* On Linux the fd is released even when close reports EINTR: no retry. */
  if (close(fd) < 0 && errno != EINTR) {
    throw_errno(env, errno, "close", NULL);
    return NULL;
  }
  return undefined(env);
}

static napi_value Getpid(napi_env env, napi_callback_info info) {
  napi_value r;
  NAPI_CALL(env, napi_create_int32(env, (int32_t)getpid(), &r));
  return r;
}

/* ------------------------------------------------------------------------ */
/* Byte-range locks                                                         */
/* ------------------------------------------------------------------------ */

/* lockFile(fd, start, length, kind): an open file description lock (fcntl
 * F_OFD_SETLK: never waits) on bytes [start, start + length); length 0 means
 * to the end of the file, however far it grows. kind is 'read' (shared),
 * 'write' (exclusive; the fd must be open for writing) or 'unlock': returns
 * true when done, false when another open file description holds a
 * conflicting lock (EAGAIN, EACCES). kind 'test' takes nothing (F_OFD_GETLK,
 * any open mode): true when no other open file description holds any lock on
 * the range. Any other failure throws. OFD locks belong to the open file
 * description, not to the process: two opens of one file conflict even within
 * one process, and the locks go when its last fd is closed. */
static napi_value LockFile(napi_env env, napi_callback_info info) {
  napi_value argv[4], r;
  int fd;
  double start, length;
  size_t len = 0;
  if (!get_args(env, info, 4, argv, NULL) || !arg_fd(env, argv[0], &fd) ||
      !arg_integer(env, argv[1], "start", 0, MAX_SAFE_INTEGER, &start) ||
      !arg_integer(env, argv[2], "length", 0, MAX_SAFE_INTEGER, &length))
    return NULL;
  char *kind = arg_string(env, argv[3], "kind", 16, &len);
  if (kind == NULL) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "kind must be 'read', 'write', 'unlock' or 'test'");
    return NULL;
  }
  struct flock fl;
  memset(&fl, 0, sizeof fl); /* l_pid must be 0 for OFD locks */
  if (strcmp(kind, "read") == 0)
    fl.l_type = F_RDLCK;
  else if (strcmp(kind, "write") == 0)
    fl.l_type = F_WRLCK;
  else if (strcmp(kind, "unlock") == 0)
    fl.l_type = F_UNLCK;
  else if (strcmp(kind, "test") == 0)
    fl.l_type = F_WRLCK;
  else {
    free(kind);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "kind must be 'read', 'write', 'unlock' or 'test'");
    return NULL;
  }
  bool test = strcmp(kind, "test") == 0;
  free(kind);
  fl.l_whence = SEEK_SET;
  fl.l_start = (off_t)start;
  fl.l_len = (off_t)length;
  if (test) {
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
      throw_errno(env, errno, "fcntl", "F_OFD_GETLK");
      return NULL;
    }
    NAPI_CALL(env, napi_get_boolean(env, fl.l_type == F_UNLCK, &r));
    return r;
  }
  if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
    if (errno != EAGAIN && errno != EACCES) {
      throw_errno(env, errno, "fcntl", "F_OFD_SETLK");
      return NULL;
    }
    NAPI_CALL(env, napi_get_boolean(env, false, &r));
    return r;
  }
  NAPI_CALL(env, napi_get_boolean(env, true, &r));
  return r;
}

/* ------------------------------------------------------------------------ */
/* eventfd                                                                  */
/* ------------------------------------------------------------------------ */

static napi_value Eventfd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  double initval;
  bool nonblocking;
  if (!get_args(env, info, 2, argv, NULL) || !arg_integer(env, argv[0], "initval", 0, UINT32_MAX, &initval) ||
      !arg_bool(env, argv[1], "nonblocking", &nonblocking))
    return NULL;
  int fd = eventfd((unsigned int)initval, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0));
  if (fd < 0) {
    throw_errno(env, errno, "eventfd", NULL);
    return NULL;
  }
  return return_fd(env, fd);
}

/* One read() of an eventfd, shared by eventfdRead() and watchEventfd(): the
 * counter (reset to 0, clamped to 2^53-1); 0 when the counter is 0 on a
 * non-blocking fd (EAGAIN: a successful read never returns 0); a negative errno
 * when read() fails; EVENTFD_SHORT_READ when fewer than 8 bytes came back (not
 * an eventfd, e.g. a pipe or a socket at EOF). */
#define EVENTFD_SHORT_READ INT64_MIN
static int64_t read_eventfd(int fd) {
  uint64_t value;
  ssize_t n;
  do n = read(fd, &value, sizeof value);
  while (n < 0 && errno == EINTR);
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  if (n != (ssize_t)sizeof value) return EVENTFD_SHORT_READ;
  return value > (uint64_t)MAX_SAFE_INTEGER ? (int64_t)MAX_SAFE_INTEGER : (int64_t)value;
}

/* eventfdRead(fd): the counter (reset to 0), clamped to 2^53-1; null when the
 * counter is 0 on a non-blocking fd. */
static napi_value EventfdRead(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], &fd)) return NULL;
  int64_t count = read_eventfd(fd);
  if (count == 0) return null_value(env);
  if (count == EVENTFD_SHORT_READ) {
    throw_errno(env, EINVAL, "read", "eventfd: short read, not an eventfd?");
    return NULL;
  }
  if (count < 0) {
    throw_errno(env, (int)-count, "read", "eventfd");
    return NULL;
  }
  return return_double(env, (double)count);
}

/* eventfdWrite(fd, value = 1): adds value; EAGAIN (would overflow on a
 * non-blocking fd) is thrown with code 'EAGAIN'. */
static napi_value EventfdWrite(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  double value = 1;
  napi_valuetype t = napi_undefined;
  if (!get_args(env, info, 2, argv, NULL) || !arg_fd(env, argv[0], &fd)) return NULL;
  napi_typeof(env, argv[1], &t);
  if (t != napi_undefined && !arg_integer(env, argv[1], "value", 1, MAX_SAFE_INTEGER, &value)) return NULL;
  uint64_t v = (uint64_t)value;
  ssize_t n;
  do n = write(fd, &v, sizeof v);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    throw_errno(env, errno, "write", "eventfd");
    return NULL;
  }
  if (n != (ssize_t)sizeof v) {
    throw_errno(env, EINVAL, "write", "eventfd: short write, not an eventfd?");
    return NULL;
  }
  return undefined(env);
}

/* ------------------------------------------------------------------------ */
/* watch(fd, callback): readiness notifications with uv_poll                */
/* ------------------------------------------------------------------------ */
/*
 * Caveat: uv_poll_init() puts the fd into O_NONBLOCK mode. O_NONBLOCK lives
 * on the open file description, which is shared with every dup of the fd,
 * including the copy held by the vhost-user frontend (fds passed over
 * SCM_RIGHTS refer to the same description). Frontends only write() kick
 * eventfds and read() call eventfds whose counter is nonzero when they do,
 * so they tolerate this; do not watch an fd whose other users depend on
 * blocking mode.
 *
 * Also: stop() the watch before closing its fd. stop() removes the fd from
 * epoll synchronously; closing first would leave libuv watching a stale or
 * reused fd number. libuv allows only one watch per fd per loop (EEXIST).
 *
 * Lifetime: a watch_t is referenced by the open uv handle (released in the
 * close callback) and by the JS Watch object's wrap (released by its
 * finalizer). The JS callback is held strongly until the handle is closed,
 * so a watch keeps firing even if the Watch object is dropped (until the
 * env is torn down, when an async cleanup hook closes it).
 */

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context async_context;
  napi_async_cleanup_hook_handle cleanup;
  int fd;
  bool closing;
  /* watchEventfd(): the fd is read (its counter reset) here, before JS runs. */
  bool eventfd_mode;
  int refs;
} watch_t;

typedef struct {
  napi_ref watch_ctor;
} addon_state;

static void watch_release(watch_t *w) {
  if (--w->refs == 0) free(w);
}

static void watch_on_close(uv_handle_t *handle) {
  watch_t *w = handle->data;
  napi_env env = w->env;
  napi_handle_scope scope;
  bool scoped = napi_open_handle_scope(env, &scope) == napi_ok;
  if (w->callback != NULL) napi_delete_reference(env, w->callback);
  w->callback = NULL;
  if (w->async_context != NULL) napi_async_destroy(env, w->async_context);
  w->async_context = NULL;
  if (scoped) napi_close_handle_scope(env, scope);
  /* Either unregisters the hook, or (during teardown) reports it done. */
  if (w->cleanup != NULL) napi_remove_async_cleanup_hook(w->cleanup);
  w->cleanup = NULL;
  watch_release(w);
}

static void watch_close(watch_t *w) {
  if (w->closing) return;
  w->closing = true;
  uv_close((uv_handle_t *)&w->poll, watch_on_close); /* also stops polling */
}

static void watch_cleanup_hook(napi_async_cleanup_hook_handle handle, void *arg) {
  watch_close(arg); /* if already closing, its close callback removes the hook */
}

static void watch_finalize_wrap(napi_env env, void *data, void *hint) {
  watch_release(data);
}

/* watchEventfd(): the counter is read in C (read_eventfd), so the JS callback
 * gets (null, count) and costs no second call into the addon. A wakeup that
 * finds the counter at 0 calls nothing; a failed or short read (not an
 * eventfd, whose readiness would never clear) is reported and ends the watch. */
static void watch_on_poll(uv_poll_t *handle, int status, int events) {
  watch_t *w = handle->data;
  if (w->closing) return;
  int64_t count = 0;
  if (w->eventfd_mode && status >= 0) {
    count = read_eventfd(w->fd);
    if (count == 0) return; /* spurious: the counter was already 0 */
  }
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;

  napi_value argv[2], global, cb, result;
  bool ok;
  bool failed = status < 0 || count < 0;
  if (w->eventfd_mode) {
    ok = napi_create_double(env, count > 0 ? (double)count : 0, &argv[1]) == napi_ok;
  } else {
    ok = napi_create_object(env, &argv[1]) == napi_ok;
    if (ok) {
      set_bool(env, argv[1], "readable", status >= 0 && (events & UV_READABLE) != 0);
      set_bool(env, argv[1], "disconnect", status >= 0 && (events & UV_DISCONNECT) != 0);
    }
  }
  if (status < 0) {
    char call[48];
    snprintf(call, sizeof call, "uv_poll(fd %d)", w->fd);
    argv[0] = make_uv_error(env, status, call);
  } else if (count < 0) {
    char what[64];
    snprintf(what, sizeof what, "fd %d is not a usable eventfd", w->fd);
    argv[0] = make_errno_error(env, count == EVENTFD_SHORT_READ ? EINVAL : (int)-count, "read", what);
  } else {
    argv[0] = null_value(env);
  }
  /* libuv would keep reporting an error, and a non-eventfd stays readable: stop now. */
  if (failed) uv_poll_stop(&w->poll);
  ok = ok && argv[0] != NULL && napi_get_global(env, &global) == napi_ok &&
       napi_get_reference_value(env, w->callback, &cb) == napi_ok && cb != NULL;
  if (ok) {
    /* napi_make_callback runs the callback in its async context and drains
     * the nextTick/microtask queues afterwards, like any Node callback. */
    napi_make_callback(env, w->async_context, global, cb, 2, argv, &result);
  }
  /* The w->closing test below is safe even if the callback called stop():
   * the close callback (which may free w) only runs on a later loop turn. */
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exc;
    /* Report through process 'uncaughtException' (or a worker's 'error'). */
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
  if (failed) watch_close(w); /* an error ends the watch */
  napi_close_handle_scope(env, scope);
}

static watch_t *this_watch(napi_env env, napi_callback_info info, napi_value *self) {
  watch_t *w = NULL;
  if (!get_args(env, info, 0, NULL, self)) return NULL;
  if (napi_unwrap(env, *self, (void **)&w) != napi_ok || w == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_THIS", "not a Watch created by watch()");
    return NULL;
  }
  return w;
}

static napi_value WatchStop(napi_env env, napi_callback_info info) {
  napi_value self;
  watch_t *w = this_watch(env, info, &self);
  if (w == NULL) return NULL;
  watch_close(w);
  return undefined(env);
}

static napi_value WatchRef(napi_env env, napi_callback_info info) {
  napi_value self;
  watch_t *w = this_watch(env, info, &self);
  if (w == NULL) return NULL;
  if (!w->closing) uv_ref((uv_handle_t *)&w->poll);
  return self;
}

static napi_value WatchUnref(napi_env env, napi_callback_info info) {
  napi_value self;
  watch_t *w = this_watch(env, info, &self);
  if (w == NULL) return NULL;
  if (!w->closing) uv_unref((uv_handle_t *)&w->poll);
  return self;
}

static napi_value WatchActive(napi_env env, napi_callback_info info) {
  napi_value self, r;
  watch_t *w = this_watch(env, info, &self);
  if (w == NULL) return NULL;
  NAPI_CALL(env, napi_get_boolean(env, !w->closing, &r));
  return r;
}

/* Watch objects only come from watch(); `new Watch()` from JS yields an
 * unwrapped object whose methods throw ERR_INVALID_THIS. */
static napi_value WatchConstructor(napi_env env, napi_callback_info info) {
  napi_value self;
  if (!get_args(env, info, 0, NULL, &self)) return NULL;
  return self;
}

static napi_value start_watch(napi_env env, napi_callback_info info, bool eventfd_mode) {
  napi_value argv[2], obj, ctor, name, fdval;
  int fd;
  napi_valuetype t;
  addon_state *state = NULL;
  uv_loop_t *loop = NULL;
  if (!get_args(env, info, 2, argv, NULL) || !arg_fd(env, argv[0], &fd)) return NULL;
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "callback must be a function");
    return NULL;
  }
  NAPI_CALL(env, napi_get_instance_data(env, (void **)&state));
  NAPI_CALL(env, napi_get_reference_value(env, state->watch_ctor, &ctor));
  NAPI_CALL(env, napi_new_instance(env, ctor, 0, NULL, &obj));
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));

  watch_t *w = calloc(1, sizeof *w);
  if (w == NULL) {
    throw_errno(env, ENOMEM, "calloc", NULL);
    return NULL;
  }
  int r = uv_poll_init(loop, &w->poll, fd); /* sets O_NONBLOCK, see above */
  if (r < 0) {
    free(w); /* nothing registered with the loop yet */
    char call[48];
    snprintf(call, sizeof call, "uv_poll_init(fd %d)", fd);
    napi_value e = make_uv_error(env, r, call);
    if (e != NULL) napi_throw(env, e);
    return NULL;
  }
  w->poll.data = w;
  w->env = env;
  w->fd = fd;
  w->eventfd_mode = eventfd_mode;
  w->refs = 1; /* the open handle's; any failure below closes it, freeing w */

  const char *failed = NULL;
  if (napi_create_reference(env, argv[1], 1, &w->callback) != napi_ok)
    failed = "napi_create_reference";
  else if (napi_create_string_utf8(env, "VhostUserWatch", NAPI_AUTO_LENGTH, &name) != napi_ok ||
           napi_async_init(env, obj, name, &w->async_context) != napi_ok)
    failed = "napi_async_init";
  else if (napi_add_async_cleanup_hook(env, watch_cleanup_hook, w, &w->cleanup) != napi_ok)
    failed = "napi_add_async_cleanup_hook";
  else if (napi_wrap(env, obj, w, watch_finalize_wrap, NULL, NULL) != napi_ok)
    failed = "napi_wrap";
  if (failed != NULL) {
    throw_napi_failure(env, failed);
    watch_close(w);
    return NULL;
  }
  w->refs++; /* the wrap's */

  if (napi_create_int32(env, fd, &fdval) == napi_ok) {
    napi_property_descriptor fdprop = {"fd", NULL, NULL, NULL, NULL, fdval, napi_enumerable, NULL};
    napi_define_properties(env, obj, 1, &fdprop);
  }
  r = uv_poll_start(&w->poll, UV_READABLE | UV_DISCONNECT, watch_on_poll);
  if (r < 0) {
    watch_close(w);
    napi_value e = make_uv_error(env, r, "uv_poll_start");
    if (e != NULL) napi_throw(env, e);
    return NULL;
  }
  return obj;
}

static napi_value Watch(napi_env env, napi_callback_info info) {
  return start_watch(env, info, false);
}

/* watchEventfd(fd, callback): like watch(), for an eventfd: each readiness is
 * read (resetting the counter) before the callback runs with (null, count);
 * a spurious wakeup calls nothing. A read that fails (not an eventfd) is
 * reported as an error and ends the watch. */
static napi_value WatchEventfd(napi_env env, napi_callback_info info) {
  return start_watch(env, info, true);
}

/* ------------------------------------------------------------------------ */
/* Module                                                                   */
/* ------------------------------------------------------------------------ */

static void addon_state_finalize(napi_env env, void *data, void *hint) {
  addon_state *state = data;
  if (state->watch_ctor != NULL) napi_delete_reference(env, state->watch_ctor);
  free(state);
}

/* External ArrayBuffers are refused when V8's sandbox is enabled. */
static bool external_buffers_allowed(napi_env env) {
  static char probe;
  napi_value ab;
  return napi_create_external_arraybuffer(env, &probe, 1, NULL, NULL, &ab) == napi_ok;
}

#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}

NAPI_MODULE_INIT() {
  guard_install(); /* the SIGBUS guard: see its section; failure leaves mappings unguarded */
  addon_state *state = calloc(1, sizeof *state);
  if (state == NULL) {
    napi_throw_error(env, "ERR_NATIVE", "vhost_user_native: out of memory");
    return NULL;
  }
  if (napi_set_instance_data(env, state, addon_state_finalize, NULL) != napi_ok) {
    free(state);
    throw_napi_failure(env, "vhost_user_native init");
    return NULL;
  }

  napi_property_descriptor methods[] = {
      FN("stop", WatchStop),
      FN("ref", WatchRef),
      FN("unref", WatchUnref),
      {"active", NULL, NULL, WatchActive, NULL, NULL, napi_enumerable, NULL},
  };
  napi_value ctor, page, ext;
  NAPI_CALL(env, napi_define_class(env, "Watch", NAPI_AUTO_LENGTH, WatchConstructor, NULL,
                                   sizeof methods / sizeof methods[0], methods, &ctor));
  NAPI_CALL(env, napi_create_reference(env, ctor, 1, &state->watch_ctor));
  NAPI_CALL(env, napi_create_double(env, (double)page_size(), &page));
  NAPI_CALL(env, napi_get_boolean(env, external_buffers_allowed(env), &ext));

  napi_property_descriptor props[] = {
      FN("socketListen", SocketListen),
      FN("socketAccept", SocketAccept),
      FN("socketConnect", SocketConnect),
      FN("socketPair", SocketPair),
      FN("datagramBind", DatagramBind),
      FN("datagramSend", DatagramSend),
      FN("socketInfo", SocketInfo),
      FN("groupId", GroupId),
      FN("setNonblocking", SetNonblocking),
      FN("isNonblocking", IsNonblocking),
      FN("recvMsg", RecvMsg),
      FN("sendMsg", SendMsg),
      FN("readFull", ReadFull),
      FN("write", Write),
      FN("mmap", Mmap),
      FN("munmap", Munmap),
      FN("memfdCreate", MemfdCreate),
      FN("mappingFaults", MappingFaults),
      FN("memoryFaultFd", MemoryFaultFd),
      FN("fdSeals", FdSeals),
      FN("addSeals", AddSeals),
      FN("fdSize", FdSize),
      FN("fdKind", FdKind),
      FN("close", Close),
      FN("getpid", Getpid),
      FN("eventfd", Eventfd),
      FN("eventfdRead", EventfdRead),
      FN("eventfdWrite", EventfdWrite),
      FN("watch", Watch),
      FN("watchEventfd", WatchEventfd),
      FN("lockFile", LockFile),
      {"pageSize", NULL, NULL, NULL, NULL, page, napi_enumerable, NULL},
      {"externalArrayBuffers", NULL, NULL, NULL, NULL, ext, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  NAPI_CALL(env, io_ring_register(env, exports)); /* io_ring.c */
  return exports;
}
