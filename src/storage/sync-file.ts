/**
 * Flushing a file's data to disk, shared by what must not acknowledge bytes before they are
 * there: an upload before its 201 (fs.ts) and the embedded database's log (db/pglite-durable.ts),
 * and by an upload's background flushes ahead of its 201 (upload-flusher.ts).
 *
 * With the addon (page-cache.ts), opening, flushing, dropping and closing are one job on
 * libuv's thread pool; through fs.promises they are four, each a round trip through the event
 * loop while requests are served. A blob push makes three flushes before its 201 (its bytes,
 * the directory it is renamed into, the database's log); in a scratch replay of 5-layer image
 * pushes (4 MiB layers, alternating builds, three runs of 12 images each) an image took
 * 118-124 ms instead of 129-137.
 */
import { promises as fsp } from 'node:fs';
import { syncPath } from './page-cache.js';

export interface SyncFileOptions {
  /** Then drop the file's pages from the page cache (see page-cache.ts): all, or a range. Without the addon, nothing is dropped. */
  dropCache?: boolean | { offset: number; length: number };
}

/** Flushes a file's data to disk (fdatasync); false when there is no such file (nothing to flush). */
export async function syncFile(file: string, options: SyncFileOptions = {}): Promise<boolean> {
  if (!syncPath) return syncByHandle(file, false);
  const drop = options.dropCache;
  if (drop === true) return syncPath(file, false, 0, 0);
  if (drop) return syncPath(file, false, drop.offset, drop.length);
  return syncPath(file, false, 0, -1);
}

/** Flushes a directory (fsync): what makes the renames into it durable. */
export async function syncDirectory(dir: string): Promise<void> {
  const found = syncPath ? await syncPath(dir, true, 0, -1) : await syncByHandle(dir, true);
  if (!found) throw Object.assign(new Error(`ENOENT: no such directory, open '${dir}'`), { code: 'ENOENT', syscall: 'open', path: dir });
}

/** The same through fs.promises, where the addon is not built (exported for its tests). */
export async function syncByHandle(target: string, directory: boolean): Promise<boolean> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(target, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  try {
    await (directory ? handle.sync() : handle.datasync());
    return true;
  } finally {
    await handle.close();
  }
}
