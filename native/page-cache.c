/*
 * posix_fadvise(POSIX_FADV_DONTNEED) for Node, which has no binding for it: lets the blob
 * store drop the page cache of bytes it has flushed (see src/storage/page-cache.ts).
 *
 * dropCache(fd, offset, length) -> Promise<void>, run on libuv's thread pool: dropping the
 * pages of a large file takes milliseconds, which must not hold the event loop. The caller
 * keeps the descriptor open until the promise settles.
 */
#define _POSIX_C_SOURCE 200112L
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>

typedef struct {
  int fd;
  int64_t offset;
  int64_t length;
  int error;
  napi_deferred deferred;
  napi_async_work work;
} drop_request;

static void drop_execute(napi_env env, void *data) {
  drop_request *request = data;
  (void)env;
  request->error = posix_fadvise(request->fd, (off_t)request->offset, (off_t)request->length, POSIX_FADV_DONTNEED);
}

static void drop_complete(napi_env env, napi_status status, void *data) {
  drop_request *request = data;
  napi_value value;
  if (status == napi_ok && request->error == 0) {
    napi_get_undefined(env, &value);
    napi_resolve_deferred(env, request->deferred, value);
  } else {
    napi_value message;
    const char *text = status == napi_ok ? strerror(request->error) : "posix_fadvise was cancelled";
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &value);
    napi_reject_deferred(env, request->deferred, value);
  }
  napi_delete_async_work(env, request->work);
  free(request);
}

static napi_value drop_cache(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int64_t offset, length;
  int32_t fd;
  napi_value promise, name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok || fd < 0 || offset < 0 || length < 0) {
    napi_throw_type_error(env, NULL, "dropCache(fd, offset, length) takes three non-negative numbers");
    return NULL;
  }
  drop_request *request = calloc(1, sizeof *request);
  if (request == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  request->fd = fd;
  request->offset = offset;
  request->length = length;
  napi_create_promise(env, &request->deferred, &promise);
  napi_create_string_utf8(env, "dropCache", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, drop_execute, drop_complete, request, &request->work);
  napi_queue_async_work(env, request->work);
  return promise;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "dropCache", NAPI_AUTO_LENGTH, drop_cache, NULL, &fn);
  napi_set_named_property(env, exports, "dropCache", fn);
  return exports;
}
