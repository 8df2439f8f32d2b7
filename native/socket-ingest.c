/*
 * Reading a request body from its socket straight into an upload's file, hashing it on the
 * way, on a thread of its own (see src/storage/socket-ingest.ts for when and why).
 *
 * ingest(socketFd, path, offset, length, prefix, algorithm, idleMs, onEvent) -> handle
 *   Duplicates socketFd (the caller's descriptor stays Node's), then on a new thread: opens
 *   path for writing (created; truncated when offset is 0), writes and hashes `prefix` (body
 *   bytes Node had read already), then reads exactly `length - prefix.length` more bytes from
 *   the socket in 1 MiB reads, hashing each and writing it at its place, and closes both.
 *   Never reads past the body. onEvent is called on the JavaScript thread:
 *     onEvent('progress', end)                 every byte below `end` (file offset) is written
 *     onEvent('done', bytesRead, hexDigest)    the whole body is written and hashed
 *     onEvent('error', bytesRead, message, code, syscall)
 *   with code an errno name (ECONNRESET...), 'ETIMEDOUT' when the client sent nothing for
 *   idleMs, 'ECONNABORTED' when it closed the connection before the end of the body, or
 *   'ECANCELED' after cancel().
 *
 * cancel(handle): stops an ingest that is running (its socket is shut down for reading, which
 *   wakes the thread); after it has ended, does nothing.
 *
 * The digest is OpenSSL's (sha256 or sha512), from the node binary's own copy.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>
#include <openssl/evp.h>

#define BUFFER_BYTES (1024 * 1024)
/* A progress event after at least this many bytes more are written. */
#define PROGRESS_BYTES (1024 * 1024)

typedef struct {
  int socket_fd; /* our duplicate; -1 once closed (under lock) */
  char *path;
  int64_t offset;
  int64_t length; /* bytes of the body still on the socket, prefix excluded */
  char *prefix;
  size_t prefix_length;
  const EVP_MD *md;
  int idle_ms;
  napi_threadsafe_function events;
  void *outcome; /* the last event (an ingest_event), allocated up front so that it is always sent */
  pthread_mutex_t lock;
  int cancelled;
  int references; /* the thread and the JavaScript handle */
} ingest_job;

typedef enum { EVENT_PROGRESS, EVENT_DONE, EVENT_ERROR } event_kind;

typedef struct {
  event_kind kind;
  int64_t value; /* progress: file offset written below; done and error: body bytes read */
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  char message[160];
  const char *code;
  const char *syscall;
} ingest_event;

static void release_job(ingest_job *job) {
  if (__atomic_sub_fetch(&job->references, 1, __ATOMIC_ACQ_REL) != 0) return;
  pthread_mutex_destroy(&job->lock);
  free(job->outcome);
  free(job->path);
  free(job->prefix);
  free(job);
}

static const char *errno_code(int error) {
  switch (error) {
    case ECONNRESET: return "ECONNRESET";
    case EPIPE: return "EPIPE";
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    case EIO: return "EIO";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EROFS: return "EROFS";
    case EBADF: return "EBADF";
    case ENOMEM: return "ENOMEM";
    case ETIMEDOUT: return "ETIMEDOUT";
    default: return "EIO";
  }
}

static void emit(ingest_job *job, ingest_event *event) {
  if (napi_call_threadsafe_function(job->events, event, napi_tsfn_blocking) != napi_ok) free(event);
}

static void emit_progress(ingest_job *job, int64_t end) {
  ingest_event *event = calloc(1, sizeof(*event));
  if (!event) return; /* a missed progress event only delays a background flush */
  event->kind = EVENT_PROGRESS;
  event->value = end;
  emit(job, event);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int is_cancelled(ingest_job *job) {
  pthread_mutex_lock(&job->lock);
  int cancelled = job->cancelled;
  pthread_mutex_unlock(&job->lock);
  return cancelled;
}

static int write_fully(int fd, const char *data, size_t length, int64_t position) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = pwrite(fd, data + done, length - done, (off_t)(position + (int64_t)done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) {
      errno = EIO;
      return -1;
    }
    done += (size_t)n;
  }
  return 0;
}

/* Fills buffer[0, want) from the socket, counting into *read_bytes. 0 on success; -1 with the event filled in. */
static int read_fully(ingest_job *job, char *buffer, size_t want, int64_t *read_bytes, ingest_event *event) {
  size_t filled = 0;
  int64_t idle_since = now_ms();
  while (filled < want) {
    /* Checked before each read, not only at the end of the data: whether reads after a
       shutdown(SHUT_RD) still return bytes already queued is the kernel's affair. */
    int cancelled = is_cancelled(job);
    ssize_t n = cancelled ? 0 : read(job->socket_fd, buffer + filled, want - filled);
    if (n > 0) {
      filled += (size_t)n;
      *read_bytes += n;
      idle_since = now_ms();
      continue;
    }
    if (n == 0) {
      cancelled = cancelled || is_cancelled(job);
      event->code = cancelled ? "ECANCELED" : "ECONNABORTED";
      event->syscall = "read";
      snprintf(event->message, sizeof(event->message), cancelled ? "the upload was cancelled after %lld bytes of the body" : "the client closed the connection after %lld bytes of the body",
               (long long)*read_bytes);
      return -1;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      event->code = errno_code(errno);
      event->syscall = "read";
      snprintf(event->message, sizeof(event->message), "reading the body: %s", strerror(errno));
      return -1;
    }
    int64_t waited = now_ms() - idle_since;
    if (waited >= job->idle_ms) {
      event->code = "ETIMEDOUT";
      event->syscall = "read";
      snprintf(event->message, sizeof(event->message), "the client sent nothing for %d ms", job->idle_ms);
      return -1;
    }
    struct pollfd p = {.fd = job->socket_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, (int)(job->idle_ms - waited)) < 0 && errno != EINTR) {
      event->code = errno_code(errno);
      event->syscall = "poll";
      snprintf(event->message, sizeof(event->message), "waiting for the body: %s", strerror(errno));
      return -1;
    }
  }
  return 0;
}

static void file_error(ingest_event *event, const char *syscall, const char *path) {
  event->code = errno_code(errno);
  event->syscall = syscall;
  snprintf(event->message, sizeof(event->message), "%s %.100s: %s", syscall, path, strerror(errno));
}

static void run(ingest_job *job, ingest_event *event) {
  event->kind = EVENT_ERROR;
  char *buffer = NULL;
  EVP_MD_CTX *hash = EVP_MD_CTX_new();
  int file = -1;
  int64_t read_bytes = 0;
  if (!hash || !EVP_DigestInit_ex(hash, job->md, NULL) || posix_memalign((void **)&buffer, 4096, BUFFER_BYTES) != 0) {
    buffer = NULL;
    errno = ENOMEM;
    file_error(event, "malloc", job->path);
    goto out;
  }
  do {
    file = open(job->path, O_WRONLY | O_CREAT | O_CLOEXEC | (job->offset == 0 ? O_TRUNC : 0), 0666);
  } while (file < 0 && errno == EINTR);
  if (file < 0) {
    file_error(event, "open", job->path);
    goto out;
  }
  int64_t position = job->offset;
  int64_t reported = position;
  if (job->prefix_length > 0) {
    EVP_DigestUpdate(hash, job->prefix, job->prefix_length);
    if (write_fully(file, job->prefix, job->prefix_length, position) < 0) {
      file_error(event, "write", job->path);
      goto out;
    }
    position += (int64_t)job->prefix_length;
    read_bytes += (int64_t)job->prefix_length;
  }
  int64_t remaining = job->length;
  while (remaining > 0) {
    size_t want = remaining < BUFFER_BYTES ? (size_t)remaining : BUFFER_BYTES;
    if (read_fully(job, buffer, want, &read_bytes, event) < 0) goto out;
    remaining -= (int64_t)want;
    EVP_DigestUpdate(hash, buffer, want);
    if (write_fully(file, buffer, want, position) < 0) {
      file_error(event, "write", job->path);
      goto out;
    }
    position += (int64_t)want;
    if (position - reported >= PROGRESS_BYTES) {
      emit_progress(job, position);
      reported = position;
    }
  }
  if (close(file) < 0 && errno != EINTR) {
    file = -1;
    file_error(event, "close", job->path);
    goto out;
  }
  file = -1;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  EVP_DigestFinal_ex(hash, digest, &digest_length);
  for (unsigned int i = 0; i < digest_length; i++) snprintf(event->hex + 2 * i, 3, "%02x", digest[i]);
  event->kind = EVENT_DONE;
out:
  event->value = read_bytes;
  if (file >= 0) close(file);
  free(buffer);
  if (hash) EVP_MD_CTX_free(hash);
}

static void *thread_main(void *arg) {
  ingest_job *job = arg;
  ingest_event *event = job->outcome;
  job->outcome = NULL;
  run(job, event);
  pthread_mutex_lock(&job->lock);
  close(job->socket_fd);
  job->socket_fd = -1;
  pthread_mutex_unlock(&job->lock);
  emit(job, event);
  napi_release_threadsafe_function(job->events, napi_tsfn_release);
  release_job(job);
  return NULL;
}

static void call_js(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  ingest_event *event = data;
  if (env && callback) {
    napi_value argv[5];
    size_t argc = 2;
    const char *kind = event->kind == EVENT_PROGRESS ? "progress" : event->kind == EVENT_DONE ? "done" : "error";
    napi_create_string_utf8(env, kind, NAPI_AUTO_LENGTH, &argv[0]);
    napi_create_int64(env, event->value, &argv[1]);
    if (event->kind == EVENT_DONE) {
      napi_create_string_utf8(env, event->hex, NAPI_AUTO_LENGTH, &argv[2]);
      argc = 3;
    } else if (event->kind == EVENT_ERROR) {
      napi_create_string_utf8(env, event->message, NAPI_AUTO_LENGTH, &argv[2]);
      napi_create_string_utf8(env, event->code ? event->code : "EIO", NAPI_AUTO_LENGTH, &argv[3]);
      napi_create_string_utf8(env, event->syscall ? event->syscall : "read", NAPI_AUTO_LENGTH, &argv[4]);
      argc = 5;
    }
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, callback, argc, argv, NULL);
  }
  free(event);
}

static void finalize_handle(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  release_job((ingest_job *)data);
}

static napi_value throw_error(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

static char *copy_string(napi_env env, napi_value value) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return NULL;
  char *s = malloc(length + 1);
  if (s && napi_get_value_string_utf8(env, value, s, length + 1, &length) != napi_ok) {
    free(s);
    return NULL;
  }
  return s;
}

static napi_value ingest(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 8) return throw_error(env, "ingest(socketFd, path, offset, length, prefix, algorithm, idleMs, onEvent)");
  int32_t socket_fd, idle_ms;
  int64_t offset, length;
  void *prefix_data;
  size_t prefix_length;
  char algorithm[16];
  size_t algorithm_length;
  if (napi_get_value_int32(env, argv[0], &socket_fd) != napi_ok || napi_get_value_int64(env, argv[2], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[3], &length) != napi_ok || napi_get_buffer_info(env, argv[4], &prefix_data, &prefix_length) != napi_ok ||
      napi_get_value_string_utf8(env, argv[5], algorithm, sizeof(algorithm), &algorithm_length) != napi_ok ||
      napi_get_value_int32(env, argv[6], &idle_ms) != napi_ok) {
    return throw_error(env, "ingest: bad arguments");
  }
  const EVP_MD *md = strcmp(algorithm, "sha256") == 0 ? EVP_sha256() : strcmp(algorithm, "sha512") == 0 ? EVP_sha512() : NULL;
  if (!md) return throw_error(env, "ingest: algorithm must be sha256 or sha512");
  if (offset < 0 || length < (int64_t)prefix_length || idle_ms <= 0) return throw_error(env, "ingest: bad offset, length or idle time");

  ingest_job *job = calloc(1, sizeof(*job));
  if (!job) return throw_error(env, "ingest: out of memory");
  job->path = copy_string(env, argv[1]);
  job->prefix = malloc(prefix_length > 0 ? prefix_length : 1);
  job->outcome = calloc(1, sizeof(ingest_event));
  if (!job->path || !job->prefix || !job->outcome) {
    free(job->path);
    free(job->prefix);
    free(job->outcome);
    free(job);
    return throw_error(env, "ingest: out of memory");
  }
  memcpy(job->prefix, prefix_data, prefix_length);
  job->prefix_length = prefix_length;
  job->offset = offset;
  job->length = length - (int64_t)prefix_length;
  job->md = md;
  job->idle_ms = idle_ms;
  job->references = 2;
  pthread_mutex_init(&job->lock, NULL);
  job->socket_fd = fcntl(socket_fd, F_DUPFD_CLOEXEC, 0);
  if (job->socket_fd < 0) {
    char message[96];
    snprintf(message, sizeof(message), "ingest: cannot duplicate the socket: %s", strerror(errno));
    job->references = 1;
    release_job(job);
    return throw_error(env, message);
  }

  napi_value name, handle;
  napi_create_string_utf8(env, "socketIngest", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[7], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &job->events) != napi_ok) {
    close(job->socket_fd);
    job->references = 1;
    release_job(job);
    return throw_error(env, "ingest: cannot set up the callback");
  }
  if (napi_create_external(env, job, finalize_handle, NULL, &handle) != napi_ok) {
    close(job->socket_fd);
    napi_release_threadsafe_function(job->events, napi_tsfn_abort);
    job->references = 1;
    release_job(job);
    return throw_error(env, "ingest: cannot set up the handle");
  }
  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int error = pthread_create(&thread, &attributes, thread_main, job);
  pthread_attr_destroy(&attributes);
  if (error != 0) {
    close(job->socket_fd);
    job->socket_fd = -1;
    napi_release_threadsafe_function(job->events, napi_tsfn_release);
    release_job(job); /* the thread's reference; the handle's goes with the handle */
    return throw_error(env, "ingest: cannot start a thread");
  }
  return handle;
}

static napi_value cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data = NULL;
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok || !data) return throw_error(env, "cancel(handle)");
  ingest_job *job = data;
  pthread_mutex_lock(&job->lock);
  job->cancelled = 1;
  if (job->socket_fd >= 0) shutdown(job->socket_fd, SHUT_RD);
  pthread_mutex_unlock(&job->lock);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"ingest", NULL, ingest, NULL, NULL, NULL, napi_default, NULL},
      {"cancel", NULL, cancel, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(properties) / sizeof(properties[0]), properties);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
