/** Small OCI distribution client over fetch, for API tests. */
import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { SMALL_BLOB_BYTES } from '../../src/registry/registry.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function sha512(data: Buffer | string): string {
  return `sha512:${createHash('sha512').update(data).digest('hex')}`;
}

/**
 * Distinct blob content one byte past what the gateway keeps in its database (SMALL_BLOB_BYTES),
 * so that it is stored as a file in the blob store's areas.
 */
export function fileBlob(label: string): string {
  return `${label} ${Math.random()}\n`.padEnd(SMALL_BLOB_BYTES + 1, '.');
}

export class OciClient {
  constructor(
    readonly base: string,
    readonly defaultHeaders: Record<string, string> = {},
  ) {}

  /** The same client acting with other credentials. */
  as(authorization: string | null): OciClient {
    return new OciClient(this.base, authorization ? { Authorization: authorization } : {});
  }

  async request(method: string, path: string, init: { body?: Buffer | string; headers?: Record<string, string> } = {}) {
    const body = typeof init.body === 'string' || init.body === undefined ? init.body : new Uint8Array(init.body);
    return fetch(this.base + path, { method, body, headers: { ...this.defaultHeaders, ...init.headers }, redirect: 'manual' });
  }

  absolute(location: string): string {
    return location.startsWith('http') ? location.slice(this.base.length) : location;
  }

  async pushBlob(repo: string, data: Buffer | string): Promise<string> {
    const digest = sha256(data);
    const start = await this.request('POST', `/v2/${repo}/blobs/uploads/`);
    expect(start.status, 'upload start').to.equal(202);
    const location = this.absolute(start.headers.get('location')!);
    const sep = location.includes('?') ? '&' : '?';
    const put = await this.request('PUT', `${location}${sep}digest=${digest}`, {
      body: Buffer.from(data),
      headers: { 'Content-Type': 'application/octet-stream' },
    });
    expect(put.status, `blob put: ${await put.clone().text()}`).to.equal(201);
    return digest;
  }

  /** Pushes a config and layers, then an image manifest referencing them; returns its bytes and digest. */
  async pushImage(repo: string, tag: string, options: { layers?: string[]; extra?: Record<string, unknown> } = {}) {
    const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, seed: Math.random() });
    const configDigest = await this.pushBlob(repo, config);
    const layers = [];
    for (const layer of options.layers ?? [`layer of ${tag} ${Math.random()}`]) {
      layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: await this.pushBlob(repo, layer), size: Buffer.byteLength(layer) });
    }
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: Buffer.byteLength(config) },
      layers,
      ...options.extra,
    };
    const body = Buffer.from(JSON.stringify(manifest));
    const res = await this.putManifest(repo, tag, body);
    expect(res.status, `manifest put: ${await res.clone().text()}`).to.equal(201);
    return { digest: sha256(body), body, manifest, res };
  }

  putManifest(repo: string, reference: string, body: Buffer, contentType = OCI_MANIFEST, headers: Record<string, string> = {}) {
    return this.request('PUT', `/v2/${repo}/manifests/${reference}`, { body, headers: { 'Content-Type': contentType, ...headers } });
  }
}

export async function errorCode(res: Response): Promise<string> {
  const body = (await res.json()) as { errors: Array<{ code: string }> };
  expect(body.errors).to.be.an('array').that.is.not.empty;
  return body.errors[0].code;
}
