/**
 * Flushing a file's data to disk, shared by what must not acknowledge bytes before they are
 * there: an upload before its 201 (fs.ts) and the embedded database's log (db/pglite-durable.ts).
 */
import { promises as fsp } from 'node:fs';

/** Flushes a file's data to disk (fdatasync); false when there is no such file (nothing to flush). */
export async function syncFile(file: string): Promise<boolean> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  try {
    await handle.datasync();
    return true;
  } finally {
    await handle.close();
  }
}
