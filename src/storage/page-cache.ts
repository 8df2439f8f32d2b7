/**
 * Flushing files through the small addon in native/page-cache.c, which `npm ci` builds with
 * node-gyp (python3, make and a C compiler; where the build fails, the install goes on without
 * it and `canDropCache` is false). It opens, flushes, drops the flushed bytes from the page
 * cache (posix_fadvise(POSIX_FADV_DONTNEED), which Node has no binding for) and closes, in
 * one job on libuv's thread pool; and renames a file into place unless its target exists,
 * flushing the directory after, again as one job. sync-file.ts and fs.ts are its users. It also
 * flushes a list of files on several threads at once, blocking, for the embedded database's
 * checkpoints (db/pglite-durable.ts).
 *
 * Why drop: uploads are written through the page cache and flushed before they are
 * acknowledged (see fs.ts). Left there, every pushed byte stays cached and the cache grows by
 * the size of every blob pushed. On the virtual machine measured, a growing cache is what
 * slowed writes: 256 MiB written and flushed with `dd` took about 0.25 s until some 1 GB of
 * new pages had been cached and about 1 s per 256 MiB after that (taking memory the guest had
 * not used lately is costly there); dropping each file's pages once flushed kept it at
 * 0.30-0.35 s over 16 files, as the same freed pages are used again. A pushed blob's pages
 * were never cached for its pulls before either: the store wrote uploads with O_DIRECT.
 *
 * Dropped at once, though, a blob's first read after its push (the gate's scan, the first pull)
 * came from the disk, and on that machine the first read of bytes just written and flushed
 * runs at a third to a half of later reads of the same bytes from the disk. So the last bytes
 * written stay cached within a budget, and the oldest are dropped past it (recent-pages.ts).
 */
import { loadNativeAddon } from './native-addon.js';

interface PageCacheAddon {
  syncPath(path: string, directory: boolean, dropOffset: number, dropLength: number): Promise<boolean>;
  renameInto(source: string, target: string, syncDirectory: boolean): Promise<'renamed' | 'exists' | 'missing'>;
  syncPathsNow(paths: string[], threads: number): number;
  dropPages(fd: number, offset: number, length: number): Promise<boolean>;
}

const addon = loadNativeAddon<PageCacheAddon>('page_cache', ['syncPath', 'renameInto', 'syncPathsNow', 'dropPages']);

/** Whether flushed pages can be dropped here (the addon was built and loads). */
export const canDropCache = addon !== null;

/**
 * Opens `file` (a directory: with `directory`), flushes it (fdatasync; a directory: fsync),
 * drops `dropLength` bytes from `dropOffset` from the page cache unless `dropLength` is -1 (0:
 * to the end), and closes it, on the thread pool; false when there is no such file. Null
 * without the addon. Only flushed pages are dropped, and a failed drop is ignored: a page
 * left cached costs memory, not data.
 */
export const syncPath: PageCacheAddon['syncPath'] | null = addon ? (p, directory, offset, length) => addon.syncPath(p, directory, offset, length) : null;

/**
 * Renames `source` to `target` unless `target` exists (renameat2 with RENAME_NOREPLACE), and
 * with `syncDirectory` then flushes `target`'s directory, on the thread pool: 'exists' and
 * 'missing' (no `source`) change nothing. Rejects with EINVAL where the filesystem cannot
 * refuse to replace. Null without the addon.
 */
export const renameInto: PageCacheAddon['renameInto'] | null = addon ? (source, target, sync) => addon.renameInto(source, target, sync) : null;

/**
 * Flushes every file of `paths` (fdatasync) on up to `threads` threads at once and returns,
 * blocking, once all are done: the number flushed (missing files are skipped). Throws the
 * first failure, as syncPath rejects. Null without the addon.
 */
export const syncPathsNow: PageCacheAddon['syncPathsNow'] | null = addon ? (paths, threads) => addon.syncPathsNow(paths, threads) : null;

/**
 * Drops `length` bytes from `offset` (0: to the end) of the open file `fd` from the page cache,
 * on the thread pool (only clean pages go; data never changes). `fd` must stay open until it
 * resolves. Null without the addon.
 */
export const dropPages: PageCacheAddon['dropPages'] | null = addon ? (fd, offset, length) => addon.dropPages(fd, offset, length) : null;
