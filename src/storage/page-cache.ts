/**
 * Dropping flushed bytes from the page cache: posix_fadvise(POSIX_FADV_DONTNEED), which Node
 * has no binding for, through the small addon in native/page-cache.c that `npm ci` builds
 * with node-gyp (python3, make and a C compiler; where the build fails, the install goes on
 * without it and `canDropCache` is false).
 *
 * Why: uploads are written through the page cache and flushed before they are acknowledged
 * (see fs.ts). Left there, every pushed byte stays cached and the cache grows by the size of
 * every blob pushed. On the virtual machine measured, a growing cache is what slowed writes:
 * 256 MiB written and flushed with `dd` took about 0.25 s until some 1 GB of new pages had been
 * cached and about 1 s per 256 MiB after that (taking memory the guest had not used lately is
 * costly there); dropping each file's pages once flushed kept it at 0.30-0.35 s over 16 files,
 * as the same freed pages are used again. A pushed blob's pages were never cached for its
 * pulls before either: the store wrote uploads with O_DIRECT.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface PageCacheAddon {
  dropCache(fd: number, offset: number, length: number): Promise<void>;
}

function loadAddon(): PageCacheAddon | null {
  const require = createRequire(import.meta.url);
  const here = path.dirname(fileURLToPath(import.meta.url));
  // build/ is at the package's root: two levels up from src/storage, three from dist/src/storage.
  for (const up of ['../..', '../../..']) {
    try {
      return require(path.resolve(here, up, 'build', 'Release', 'page_cache.node')) as PageCacheAddon;
    } catch {
      // not there: try the next
    }
  }
  return null;
}

const addon = loadAddon();

/** Whether flushed pages can be dropped here (the addon was built and loads). */
export const canDropCache = addon !== null;

/**
 * Drops the cached pages of `length` bytes from `offset` (a length of 0: to the end) of an open
 * file, on libuv's thread pool; the descriptor must stay open until the promise settles. Dirty
 * pages stay. Never fails: a page left cached costs memory, not data, so an error (a descriptor
 * that is not a file, say) is ignored, and without the addon nothing happens.
 */
export async function dropCache(fd: number, offset = 0, length = 0): Promise<void> {
  await addon?.dropCache(fd, offset, length).catch(() => undefined);
}
