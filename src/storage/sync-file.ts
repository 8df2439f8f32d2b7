/**
 * Flushing a file's data to disk, shared by what must not acknowledge bytes before they are
 * there: an upload before its 201 (fs.ts) and the embedded database's log (db/pglite-durable.ts),
 * and by an upload's background flushes ahead of its 201 (upload-flusher.ts).
 */
import { promises as fsp } from 'node:fs';
import { dropCache } from './page-cache.js';

export interface SyncFileOptions {
  /** Then drop the file's pages from the page cache (see page-cache.ts): all, or a range. */
  dropCache?: boolean | { offset: number; length: number };
}

/** Flushes a file's data to disk (fdatasync); false when there is no such file (nothing to flush). */
export async function syncFile(file: string, options: SyncFileOptions = {}): Promise<boolean> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  try {
    await handle.datasync();
    const drop = options.dropCache;
    if (drop === true) await dropCache(handle.fd);
    else if (drop) await dropCache(handle.fd, drop.offset, drop.length);
    return true;
  } finally {
    await handle.close();
  }
}
