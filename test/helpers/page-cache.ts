import { execFileSync } from 'node:child_process';

/** Bytes of `file` in the page cache, from util-linux's fincore (mincore(2) underneath). */
export function cachedBytes(file: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' }).trim());
}
