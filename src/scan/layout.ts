/**
 * Writes one image from the registry as an OCI image layout in a private temporary
 * directory, streaming every blob from storage (never a whole layer in memory).
 */
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseManifest } from '../registry/manifest.js';
import { parseDigest } from '../registry/names.js';
import type { Registry } from '../registry/registry.js';

export async function writeImageLayout(registry: Registry, repository: string, manifestDigest: string, workDir: string): Promise<string> {
  await mkdir(workDir, { recursive: true, mode: 0o700 });
  const dir = await mkdtemp(path.join(workDir, 'layout-'));
  try {
    const { record, body } = await registry.getManifest(repository, manifestDigest);
    const manifest = parseManifest(body, record.mediaType);
    if (manifest.kind !== 'image') throw new Error(`${manifestDigest} is not an image manifest`);
    await writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }), { mode: 0o600 });
    await writeFile(
      path.join(dir, 'index.json'),
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ mediaType: record.mediaType, digest: manifestDigest, size: body.length }] }),
      { mode: 0o600 },
    );
    const written = new Set<string>();
    for (const descriptor of [{ digest: manifestDigest }, manifest.config, ...manifest.layers]) {
      if (!descriptor || written.has(descriptor.digest) || ('urls' in descriptor && descriptor.urls && descriptor.urls.length > 0)) continue;
      written.add(descriptor.digest);
      await writeBlob(registry, repository, dir, descriptor.digest);
    }
    return dir;
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

async function writeBlob(registry: Registry, repository: string, dir: string, digestValue: string): Promise<void> {
  const digest = parseDigest(digestValue);
  const target = path.join(dir, 'blobs', digest.algorithm, digest.hex);
  await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
  const opened = await registry.openBlob(repository, digest);
  await pipeline(opened.stream, createWriteStream(target, { mode: 0o600, flags: 'wx' }));
}
