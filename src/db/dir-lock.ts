/**
 * One process at a time in an embedded database directory. PGlite has no lock of its own:
 * a second process that opens the directory (`gateway robots add` or `gateway audit export`
 * while the gateway serves) runs a second PostgreSQL over the same files, each with its own
 * buffers and write-ahead log, and the directory is corrupted. The lock is a file beside the
 * directory, created exclusively, naming its process; a lock whose process is gone is stale
 * and taken over (a crash leaves one behind, and a container restarts with the same pid).
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';

/** Directories this process holds: a second open here is refused too. */
const held = new Set<string>();

export class DirectoryInUseError extends Error {
  /** Printed without a stack, as the system's own errors are. */
  readonly code = 'ELOCKED';
  constructor(message: string) {
    super(message);
    this.name = 'DirectoryInUseError';
  }
}

interface Holder {
  pid: number;
  since: string;
  command: string;
}

/** Locks `dir` for this process; returns the release. */
export function lockDirectory(dir: string): () => void {
  const file = `${dir}.lock`;
  if (held.has(dir)) throw new DirectoryInUseError(`the embedded database in ${dir} is already open in this process`);
  for (let attempt = 0; attempt < 2; attempt++) {
    if (createLock(file)) {
      held.add(dir);
      return () => {
        held.delete(dir);
        rmSync(file, { force: true });
      };
    }
    const holder = readHolder(file);
    if (holder && holder.pid !== process.pid && isRunning(holder.pid)) {
      throw new DirectoryInUseError(
        `the embedded database in ${dir} is in use by process ${holder.pid} (${holder.command}, since ${holder.since}): ` +
          'stop it first, or make the change through the running gateway (its /gateway/v1 API); ' +
          `if no such process uses it, remove ${file}`,
      );
    }
    rmSync(file, { force: true });
  }
  throw new DirectoryInUseError(`cannot lock the embedded database in ${dir}: ${file} keeps coming back`);
}

function createLock(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    const holder: Holder = { pid: process.pid, since: new Date().toISOString(), command: process.argv.slice(1).join(' ').slice(0, 200) };
    writeSync(fd, `${JSON.stringify(holder)}\n`);
  } finally {
    closeSync(fd);
  }
  return true;
}

/** The lock's holder; null when the file is unreadable or half written (its writer may be starting). */
function readHolder(file: string): Holder | null {
  try {
    const holder = JSON.parse(readFileSync(file, 'utf8')) as Partial<Holder>;
    return typeof holder.pid === 'number' ? { pid: holder.pid, since: String(holder.since), command: String(holder.command) } : null;
  } catch {
    return null;
  }
}

/** Whether `pid` is a running Node.js process (another program may have its pid since). */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('node');
  } catch {
    return true; // alive, and nothing says it is not ours
  }
}
