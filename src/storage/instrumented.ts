/**
 * Cross-cutting work for every driver in one wrapper (as distribution's driver/base does):
 * counts and times each storage operation by driver and outcome.
 */
import type { Metrics } from '../observability/metrics.js';
import type { BlobStore } from './blobstore.js';

const TIMED = [
  'openUploadWriter',
  'ingestUpload',
  'truncateUpload',
  'readUpload',
  'syncUpload',
  'promoteUpload',
  'flushContent',
  'deleteUpload',
  'listUploads',
  'putStaged',
  'stat',
  'open',
  'commit',
  'delete',
] as const;

export function instrumentBlobStore(store: BlobStore, metrics: Metrics): BlobStore {
  const wrapped = Object.create(store) as BlobStore;
  for (const op of TIMED) {
    if (typeof store[op] !== 'function') continue; // an optional operation this driver lacks
    const original = (store[op] as unknown as (...args: unknown[]) => Promise<unknown>).bind(store);
    (wrapped as unknown as Record<string, unknown>)[op] = async (...args: unknown[]) => {
      const stop = metrics.storageDuration.startTimer({ driver: store.driver, op });
      try {
        const result = await original(...args);
        metrics.storageOps.inc({ driver: store.driver, op, result: 'ok' });
        return result;
      } catch (err) {
        metrics.storageOps.inc({ driver: store.driver, op, result: 'error' });
        throw err;
      } finally {
        stop();
      }
    };
  }
  return wrapped;
}
