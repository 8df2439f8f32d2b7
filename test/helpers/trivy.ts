/** The Trivy stand-in for tests and a seeded (empty) vulnerability database for it. */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const TRIVY_FIXTURES = fileURLToPath(new URL('../fixtures/trivy/', import.meta.url));
export const STANDIN = path.join(TRIVY_FIXTURES, 'trivy-standin.mjs');

/** What `trivy image --download-db-only` leaves in a cache directory (an empty database file). */
export function seedTrivyDb(cacheDir: string, updatedAt = '2026-11-20T00:00:00Z'): void {
  mkdirSync(path.join(cacheDir, 'db'), { recursive: true });
  writeFileSync(path.join(cacheDir, 'db', 'trivy.db'), '');
  writeFileSync(path.join(cacheDir, 'db', 'metadata.json'), JSON.stringify({ Version: 2, NextUpdate: '2026-11-21T00:00:00Z', UpdatedAt: updatedAt, DownloadedAt: updatedAt }));
}
