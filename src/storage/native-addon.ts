/**
 * Loading the addons that `npm ci` builds with node-gyp from native/ (binding.gyp) into
 * build/Release. Where the build failed, or an addon built from older sources lacks a
 * function, the caller gets null and runs without it (`npm run install` builds them again).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** build/Release/<name>.node when it loads and has every one of `functions`; null otherwise. */
export function loadNativeAddon<T>(name: string, functions: string[]): T | null {
  const require = createRequire(import.meta.url);
  const here = path.dirname(fileURLToPath(import.meta.url));
  // build/ is at the package's root: two levels up from src/storage, three from dist/src/storage.
  for (const up of ['../..', '../../..']) {
    let addon: Record<string, unknown>;
    try {
      addon = require(path.resolve(here, up, 'build', 'Release', `${name}.node`)) as Record<string, unknown>;
    } catch {
      continue; // not there: try the next
    }
    return functions.every((f) => typeof addon[f] === 'function') ? (addon as T) : null;
  }
  return null;
}
