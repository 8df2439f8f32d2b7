/**
 * A gateway with the gate off (gate.enabled=false) admits every push at once: a manifest new in
 * the repository is stored committed, with its blobs moved into the committed area first, in
 * one transaction with its push record; one already there takes the staged store and the
 * switch, as before. On PGlite and PostgreSQL.
 */
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { AuditLog } from '../../src/audit/log.js';
import { DATABASE_KINDS, startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { fileBlob, OCI_INDEX, OciClient, sha256 } from '../helpers/oci.js';

function committedFile(root: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  return path.join(root, 'committed', alg, hex.slice(0, 2), hex);
}

for (const kind of DATABASE_KINDS) {
  describe(`a gateway with the gate off (${kind})`, function () {
    this.timeout(60_000);
    let gw: TestGateway;
    let client: OciClient;

    before(async () => {
      gw = await startTestGateway(kind, { config: (c) => void (c.gate.enabled = false) });
      client = new OciClient(gw.url);
    });
    after(() => gw.stop());

    /** How many transactions (xmin) last wrote the manifest's row, its tag's row and its push records. */
    async function writers(digest: string, repository: string, tag: string): Promise<number> {
      const [row] = await gw.db.query<{ manifest: string; tag: string; push: string }>(
        `SELECT (SELECT m.xmin::text FROM manifests m JOIN repositories r ON r.id = m.repository_id WHERE r.name = $2 AND m.digest = $1) AS manifest,
                (SELECT t.xmin::text FROM tags t JOIN repositories r ON r.id = t.repository_id WHERE r.name = $2 AND t.name = $3) AS tag,
                (SELECT string_agg(DISTINCT a.xmin::text, ',') FROM audit_log a WHERE a.digest = $1 AND a.action = 'push') AS push`,
        [digest, repository, tag],
      );
      return new Set([row.manifest, row.tag, ...row.push.split(',')]).size;
    }

    it('stores a new image committed at once, its file layer moved first, with its push record only', async () => {
      const layer = fileBlob('gate off');
      const image = await client.pushImage('off/app', 'v1', { layers: [layer] });
      expect(gw.gate).to.equal(undefined);
      expect(existsSync(committedFile(gw.root, sha256(layer))), 'the layer is in the committed area').to.equal(true);
      const [manifest] = await gw.db.query<{ state: string }>('SELECT m.state FROM manifests m JOIN repositories r ON r.id = m.repository_id WHERE r.name = $1 AND m.digest = $2', ['off/app', image.digest]);
      expect(manifest.state).to.equal('committed');
      // One transaction wrote the manifest's row, its tag and its push record, and none changed since.
      expect(await writers(image.digest, 'off/app', 'v1')).to.equal(1);
      const pulled = await client.request('GET', '/v2/off/app/manifests/v1');
      expect(pulled.status).to.equal(200);
      expect(Buffer.from(await pulled.arrayBuffer()).equals(image.body)).to.equal(true);
      expect((await client.request('GET', `/v2/off/app/blobs/${sha256(layer)}`)).status).to.equal(200);
      const actions = await gw.db.query<{ action: string }>('SELECT action FROM audit_log WHERE digest = $1 ORDER BY seq', [image.digest]);
      expect(actions.map((a) => a.action)).to.deep.equal(['push']);
    });

    it('tags a manifest already there, and commits an index of committed images', async () => {
      const image = await client.pushImage('off/multi', 'amd64');
      expect((await client.putManifest('off/multi', 'again', image.body)).status).to.equal(201);
      const index = Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [{ mediaType: image.manifest.mediaType, digest: image.digest, size: image.body.length, platform: { os: 'linux', architecture: 'amd64' } }],
      }));
      expect((await client.putManifest('off/multi', 'latest', index, OCI_INDEX)).status).to.equal(201);
      const tags = (await (await client.request('GET', '/v2/off/multi/tags/list')).json()) as { tags: string[] };
      expect(tags.tags).to.deep.equal(['again', 'amd64', 'latest']);
      const pulled = await client.request('GET', '/v2/off/multi/manifests/latest');
      expect(pulled.headers.get('docker-content-digest')).to.equal(sha256(index));
      expect((await new AuditLog(gw.db).verify()).problems).to.deep.equal([]);
    });
  });
}
