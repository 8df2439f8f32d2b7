/**
 * Creates a PGlite data directory and exits. Run in a child process by openDatabase: initdb
 * grows the WASM heap to several hundred MiB, which a process never gives back, so the
 * serving process only ever opens an existing directory.
 */
import { PGlite } from '@electric-sql/pglite';

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: pglite-init <data directory>\n');
  process.exit(2);
}
const db = await PGlite.create(dir);
await db.close();
