// Run by `npm ci` when node-gyp could not build native/page-cache.c (no python3, make or C
// compiler, or no Node headers). The gateway works without it: uploads are then written with
// O_DIRECT instead of through the page cache (see src/storage/page-cache.ts).
console.warn(
  'oci-gateway: the page-cache addon (native/page-cache.c) was not built; the gateway runs without it ' +
    'and writes uploads with O_DIRECT, which was slower on the machine measured (README, Benchmarks). ' +
    'Install python3, make and a C compiler, then run `npm run install` to build it.',
);
