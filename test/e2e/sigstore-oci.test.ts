/** @sigstore/oci (what GitHub's attest action uses) attaching a Sigstore bundle with credentials. */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { attachArtifactToImage } from '@sigstore/oci';
import { type TestGateway } from '../helpers/gateway.js';
import { PASSWORDS, startAuthGateway, userAuth } from '../helpers/auth.js';
import { OCI_INDEX, OciClient } from '../helpers/oci.js';

const BUNDLE_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';

describe('@sigstore/oci attach flow with credentials', () => {
  let gw: TestGateway;
  let alice: OciClient;

  before(async () => {
    gw = await startAuthGateway('pglite');
    alice = new OciClient(gw.url, { Authorization: userAuth('alice') });
  });
  after(async () => gw.stop());

  it('attaches a bundle as a referrer through the token flow, without a fallback tag', async () => {
    const image = await alice.pushImage('team/attested', 'v1');
    const bundle = readFileSync(new URL('../fixtures/cosign/npm-keyed-dsse.sigstore.json', import.meta.url));
    const descriptor = await attachArtifactToImage({
      imageName: `${gw.host}/team/attested`,
      imageDigest: image.digest,
      artifact: bundle,
      mediaType: BUNDLE_TYPE,
      annotations: { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': 'https://slsa.dev/provenance/v1' },
      credentials: { username: 'alice', password: PASSWORDS.alice },
    });
    expect(descriptor.digest).to.match(/^sha256:[a-f0-9]{64}$/);

    const res = await alice.request('GET', `/v2/team/attested/referrers/${image.digest}`);
    expect(res.headers.get('content-type')).to.equal(OCI_INDEX);
    const index = (await res.json()) as { manifests: Array<{ digest: string; artifactType: string; annotations: Record<string, string> }> };
    expect(index.manifests).to.have.length(1);
    expect(index.manifests[0]).to.deep.include({ digest: descriptor.digest, artifactType: BUNDLE_TYPE });
    expect(index.manifests[0].annotations['dev.sigstore.bundle.predicateType']).to.equal('https://slsa.dev/provenance/v1');
    const fallback = await alice.request('GET', `/v2/team/attested/manifests/sha256-${image.digest.slice(7)}`);
    expect(fallback.status, 'no fallback index is needed when the referrers API works').to.equal(404);

    const manifest = (await (await alice.request('GET', `/v2/team/attested/manifests/${descriptor.digest}`)).json()) as { layers: Array<{ digest: string }> };
    const layer = await alice.request('GET', `/v2/team/attested/blobs/${manifest.layers[0].digest}`);
    expect(Buffer.from(await layer.arrayBuffer()).equals(bundle)).to.equal(true);
  });

  it('is refused for a pull-only user and for wrong credentials', async () => {
    const image = await alice.pushImage('team/attested', 'v2');
    const attempt = (username: string, password: string) =>
      attachArtifactToImage({
        imageName: `${gw.host}/team/attested`,
        imageDigest: image.digest,
        artifact: Buffer.from('{}'),
        mediaType: BUNDLE_TYPE,
        credentials: { username, password },
      }).then(
        () => 'attached',
        (err: Error) => err.message,
      );
    expect(await attempt('reader', PASSWORDS.reader)).to.not.equal('attached');
    expect(await attempt('alice', 'wrong-password')).to.not.equal('attached');
    const index = (await (await alice.request('GET', `/v2/team/attested/referrers/${image.digest}`)).json()) as { manifests: unknown[] };
    expect(index.manifests).to.deep.equal([]);
  });
});
