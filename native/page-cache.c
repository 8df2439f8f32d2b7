/*
 * Flushing a file to disk and dropping the flushed bytes from the page cache, for the blob
 * store and the embedded database's log (see src/storage/page-cache.ts and sync-file.ts).
 * Node has no binding for posix_fadvise(POSIX_FADV_DONTNEED).
 *
 * syncPath(path, directory, dropOffset, dropLength) -> Promise<boolean>: open, fdatasync (a
 * directory: fsync), drop [dropOffset, dropOffset + dropLength) from the page cache unless
 * dropLength is -1 (0: to the end of the file), close. One job on libuv's thread pool: a
 * flush takes milliseconds, which must not hold the event loop, and through fs.promises the
 * same steps are four jobs, each a round trip through the event loop. Resolves false when
 * there is no such file; rejects with an Error carrying `code`, `syscall` and `path`, as
 * fs.promises does.
 *
 * renameInto(source, target, syncDirectory) -> Promise<'renamed' | 'exists' | 'missing'>:
 * renames source to target unless target exists (renameat2 with RENAME_NOREPLACE), then, with
 * syncDirectory, flushes target's directory (fsync), again as one job. 'exists' and 'missing'
 * (no source) change nothing; a filesystem without RENAME_NOREPLACE rejects with EINVAL.
 *
 * dropPages(fd, offset, length) -> Promise<boolean>: drops [offset, offset + length) (length 0:
 * to the end) of the open file `fd` from the page cache (posix_fadvise(POSIX_FADV_DONTNEED)),
 * on the thread pool. Only clean pages go, and no data changes: it resolves true whatever the
 * kernel answers. The caller keeps `fd` open until it resolves (src/storage/recent-pages.ts
 * drops the pages of files that may have been renamed since they were written, hence a
 * descriptor, not a path).
 *
 * syncPathsNow(paths, threads) -> number: flushes every file of `paths` (fdatasync), on up to
 * `threads` threads at once, and returns once all are done: the number flushed (a missing
 * file is skipped). Blocking, on purpose: its caller is a file system hook that PostgreSQL
 * calls synchronously in the embedded database's checkpoint (src/db/pglite-durable.ts),
 * which holds the one thread anyway; flushed one after the other, the checkpoint's hundred
 * or so data files took most of its time. Throws the first failure, as syncPath rejects.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <node_api.h>
#include <uv.h>

typedef struct {
  char *path;
  int fd; /* dropPages */
  char *source; /* renameInto: what is renamed to path */
  int sync_directory;
  const char *outcome;
  int directory;
  int64_t drop_offset;
  int64_t drop_length;
  int error;
  const char *failed; /* the call that failed */
  int missing;
  napi_deferred deferred;
  napi_async_work work;
} sync_request;

/*
 * Opens `path` (a directory: with O_DIRECTORY), flushes it (fdatasync; a directory: fsync), drops
 * [drop_offset, drop_offset + drop_length) from the page cache unless drop_length is -1, and
 * closes it. Returns 1 when there is no such file (nothing recorded); any other failure is left
 * in the request.
 */
static int flush_path(sync_request *request, const char *path, int directory, int64_t drop_offset, int64_t drop_length) {
  int fd;
  do {
    fd = open(path, O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == ENOENT) return 1;
    request->error = errno;
    request->failed = "open";
    return 0;
  }
  if ((directory ? fsync(fd) : fdatasync(fd)) != 0) {
    request->error = errno;
    request->failed = directory ? "fsync" : "fdatasync";
  } else if (drop_length >= 0) {
    /* Only pages already flushed are dropped; a failure costs memory, not data: ignored. */
    (void)posix_fadvise(fd, (off_t)drop_offset, (off_t)drop_length, POSIX_FADV_DONTNEED);
  }
  if (close(fd) != 0 && request->error == 0 && errno != EINTR) {
    request->error = errno;
    request->failed = "close";
  }
  return 0;
}

static void sync_execute(napi_env env, void *data) {
  sync_request *request = data;
  (void)env;
  request->missing = flush_path(request, request->path, request->directory, request->drop_offset, request->drop_length);
}

/* Flushes the directory that holds `path`; the error, if any, is left in the request (a missing directory too). */
static void sync_parent(sync_request *request) {
  char *slash = strrchr(request->path, '/');
  char *dir = slash == NULL ? strdup(".") : slash == request->path ? strdup("/") : strndup(request->path, (size_t)(slash - request->path));
  if (dir == NULL) {
    request->error = ENOMEM;
    request->failed = "open";
    return;
  }
  if (flush_path(request, dir, 1, 0, -1)) {
    request->error = ENOENT;
    request->failed = "open";
  }
  free(dir);
}

static void rename_execute(napi_env env, void *data) {
  sync_request *request = data;
  (void)env;
  if (renameat2(AT_FDCWD, request->source, AT_FDCWD, request->path, RENAME_NOREPLACE) != 0) {
    if (errno == EEXIST) request->outcome = "exists";
    else if (errno == ENOENT) request->outcome = "missing";
    else {
      request->error = errno;
      request->failed = "rename";
    }
    return;
  }
  request->outcome = "renamed";
  if (request->sync_directory) sync_parent(request);
}

static void drop_pages_execute(napi_env env, void *data) {
  sync_request *request = data;
  (void)env;
  (void)posix_fadvise(request->fd, (off_t)request->drop_offset, (off_t)request->drop_length, POSIX_FADV_DONTNEED);
}

/* An Error like fs.promises' own: `code` (EIO, ...), `syscall`, `path`. */
static napi_value sync_error(napi_env env, sync_request *request) {
  napi_value error, message, code, syscall, path;
  const char *name = uv_err_name(uv_translate_sys_error(request->error));
  char text[512];
  snprintf(text, sizeof text, "%s: %s, %s '%s'", name, strerror(request->error), request->failed, request->path);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, message, &error);
  napi_create_string_utf8(env, request->failed, NAPI_AUTO_LENGTH, &syscall);
  napi_create_string_utf8(env, request->path, NAPI_AUTO_LENGTH, &path);
  napi_set_named_property(env, error, "syscall", syscall);
  napi_set_named_property(env, error, "path", path);
  return error;
}

static void sync_complete(napi_env env, napi_status status, void *data) {
  sync_request *request = data;
  napi_value value;
  if (status != napi_ok) {
    napi_value message;
    napi_create_string_utf8(env, "the flush or rename was cancelled", NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &value);
    napi_reject_deferred(env, request->deferred, value);
  } else if (request->error != 0) {
    napi_reject_deferred(env, request->deferred, sync_error(env, request));
  } else {
    if (request->outcome != NULL) napi_create_string_utf8(env, request->outcome, NAPI_AUTO_LENGTH, &value);
    else napi_get_boolean(env, !request->missing, &value);
    napi_resolve_deferred(env, request->deferred, value);
  }
  napi_delete_async_work(env, request->work);
  free(request->path);
  free(request->source);
  free(request);
}

/* A path argument as a new C string; NULL (with a TypeError thrown) when it is not a non-empty string without NUL. */
static char *path_argument(napi_env env, napi_value value, const char *usage) {
  size_t length;
  char *path;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok || length == 0) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  path = malloc(length + 1);
  if (path == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, value, path, length + 1, &length);
  if (strlen(path) != length) {
    free(path);
    napi_throw_type_error(env, NULL, "a path holds a NUL byte");
    return NULL;
  }
  return path;
}

/* A zeroed request; NULL (with an Error thrown) when out of memory. */
static sync_request *new_request(napi_env env) {
  sync_request *request = calloc(1, sizeof *request);
  if (request == NULL) napi_throw_error(env, NULL, "out of memory");
  return request;
}

static napi_value queue(napi_env env, sync_request *request, const char *what, napi_async_execute_callback execute) {
  napi_value promise, name;
  napi_create_promise(env, &request->deferred, &promise);
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, sync_complete, request, &request->work);
  napi_queue_async_work(env, request->work);
  return promise;
}

static napi_value rename_into(napi_env env, napi_callback_info info) {
  static const char usage[] = "renameInto(source, target, syncDirectory) takes two paths and a boolean";
  size_t argc = 3;
  napi_value argv[3];
  bool sync_directory;
  sync_request *request;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 3 || napi_get_value_bool(env, argv[2], &sync_directory) != napi_ok) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  request = new_request(env);
  if (request == NULL) return NULL;
  request->source = path_argument(env, argv[0], usage);
  request->path = request->source ? path_argument(env, argv[1], usage) : NULL;
  if (request->path == NULL) {
    free(request->source);
    free(request);
    return NULL;
  }
  request->sync_directory = sync_directory;
  return queue(env, request, "renameInto", rename_execute);
}

static napi_value sync_path(napi_env env, napi_callback_info info) {
  static const char usage[] = "syncPath(path, directory, dropOffset, dropLength) takes a path, a boolean and two numbers";
  size_t argc = 4;
  napi_value argv[4];
  bool directory;
  int64_t drop_offset, drop_length;
  sync_request *request;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 4 || napi_get_value_bool(env, argv[1], &directory) != napi_ok || napi_get_value_int64(env, argv[2], &drop_offset) != napi_ok ||
      napi_get_value_int64(env, argv[3], &drop_length) != napi_ok || drop_offset < 0 || drop_length < -1) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  request = new_request(env);
  if (request == NULL) return NULL;
  request->path = path_argument(env, argv[0], usage);
  if (request->path == NULL) {
    free(request);
    return NULL;
  }
  request->directory = directory;
  request->drop_offset = drop_offset;
  request->drop_length = drop_length;
  return queue(env, request, "syncPath", sync_execute);
}

static napi_value drop_pages(napi_env env, napi_callback_info info) {
  static const char usage[] = "dropPages(fd, offset, length) takes three numbers, none negative";
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  int64_t offset, length;
  sync_request *request;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok || fd < 0 || offset < 0 || length < 0) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  request = new_request(env);
  if (request == NULL) return NULL;
  request->fd = fd;
  request->drop_offset = offset;
  request->drop_length = length;
  return queue(env, request, "dropPages", drop_pages_execute);
}

/* The files of one syncPathsNow call, taken one at a time by each thread; the first failure is kept. */
typedef struct {
  char **paths;
  size_t count;
  size_t next;
  size_t flushed;
  pthread_mutex_t lock;
  sync_request failure;
} sync_batch;

static void *batch_flush(void *data) {
  sync_batch *batch = data;
  for (;;) {
    size_t i = __atomic_fetch_add(&batch->next, 1, __ATOMIC_RELAXED);
    sync_request request = {0};
    if (i >= batch->count) return NULL;
    if (flush_path(&request, batch->paths[i], 0, 0, -1)) continue; /* missing */
    if (request.error == 0) {
      __atomic_fetch_add(&batch->flushed, 1, __ATOMIC_RELAXED);
      continue;
    }
    pthread_mutex_lock(&batch->lock);
    if (batch->failure.error == 0) {
      batch->failure.error = request.error;
      batch->failure.failed = request.failed;
      batch->failure.path = batch->paths[i];
    }
    pthread_mutex_unlock(&batch->lock);
  }
}

/* Frees the first `count` strings of `paths`, and `paths`. */
static void free_paths(char **paths, size_t count) {
  for (size_t i = 0; i < count; i++) free(paths[i]);
  free(paths);
}

static napi_value sync_paths_now(napi_env env, napi_callback_info info) {
  static const char usage[] = "syncPathsNow(paths, threads) takes an array of paths and a number from 1 to 64";
  size_t argc = 2;
  napi_value argv[2], result;
  uint32_t count, threads;
  bool is_array;
  sync_batch batch = {0};
  pthread_t helpers[63];
  size_t started = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 2 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[0], &count) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &threads) != napi_ok || threads < 1 || threads > 64) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  batch.paths = calloc(count > 0 ? count : 1, sizeof *batch.paths);
  if (batch.paths == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < count; i++) {
    napi_value element;
    napi_get_element(env, argv[0], i, &element);
    batch.paths[i] = path_argument(env, element, usage);
    if (batch.paths[i] == NULL) {
      free_paths(batch.paths, i);
      return NULL;
    }
  }
  batch.count = count;
  pthread_mutex_init(&batch.lock, NULL);
  /* This thread is one of them; a helper that cannot start leaves its share to the others. */
  while (started + 1 < threads && started + 1 < count && pthread_create(&helpers[started], NULL, batch_flush, &batch) == 0) started++;
  batch_flush(&batch);
  for (size_t i = 0; i < started; i++) pthread_join(helpers[i], NULL);
  pthread_mutex_destroy(&batch.lock);
  if (batch.failure.error != 0) {
    napi_throw(env, sync_error(env, &batch.failure));
    free_paths(batch.paths, count);
    return NULL;
  }
  free_paths(batch.paths, count);
  napi_create_uint32(env, (uint32_t)batch.flushed, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "syncPath", NAPI_AUTO_LENGTH, sync_path, NULL, &fn);
  napi_set_named_property(env, exports, "syncPath", fn);
  napi_create_function(env, "renameInto", NAPI_AUTO_LENGTH, rename_into, NULL, &fn);
  napi_set_named_property(env, exports, "renameInto", fn);
  napi_create_function(env, "dropPages", NAPI_AUTO_LENGTH, drop_pages, NULL, &fn);
  napi_set_named_property(env, exports, "dropPages", fn);
  napi_create_function(env, "syncPathsNow", NAPI_AUTO_LENGTH, sync_paths_now, NULL, &fn);
  napi_set_named_property(env, exports, "syncPathsNow", fn);
  return exports;
}
