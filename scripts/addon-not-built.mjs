// Run by `npm ci` when node-gyp could not build native/page-cache.c and native/socket-ingest.c
// (no python3, make or C compiler, or no Node headers). The gateway works without them: uploads
// are then written with O_DIRECT instead of through the page cache (see
// src/storage/page-cache.ts), and large bodies read through Node (src/storage/socket-ingest.ts).
console.warn(
  'oci-gateway: the native addons (native/page-cache.c, native/socket-ingest.c) were not built; the gateway runs without them, ' +
    'writes uploads with O_DIRECT and reads large bodies through Node, which was slower on the machine measured (README, Benchmarks). ' +
    'Install python3, make and a C compiler, then run `npm run install` to build it.',
);
