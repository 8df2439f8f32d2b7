{
  "targets": [
    {
      "target_name": "page_cache",
      "sources": ["native/page-cache.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    },
    {
      "target_name": "socket_ingest",
      "sources": ["native/socket-ingest.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
