/** @sigstore/oci (what GitHub's attest action uses) attaching a Sigstore bundle with credentials. */
import { expect } from 'chai';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync, sign } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
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

describe('@sigstore/oci bundles as evidence for the gate', () => {
  let gw: TestGateway;
  let dir: string;
  const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'sigstore-oci-policy-'));
    mkdirSync(path.join(dir, 'keys'));
    writeFileSync(path.join(dir, 'keys', 'build.pub'), key.publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(path.join(dir, 'provenance.json'), JSON.stringify({
      name: 'provenance', repositories: ['team/**'], mode: 'enforce',
      rules: [{ id: 'built', type: 'attestation', predicateTypes: ['https://slsa.dev/provenance/v1'], keys: ['keys/build.pub'] }],
    }));
    gw = await startAuthGateway('pglite', (c) => {
      c.policy.dir = dir;
      c.policy.defaultPolicy = 'deny';
      c.gate.putWaitSeconds = 1;
    });
  });
  after(async () => {
    await gw.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('admits an image when a signed provenance bundle is attached through the referrers API', async () => {
    const alice = new OciClient(gw.url, { Authorization: userAuth('alice') });
    const image = await alice.pushImage('team/built', 'v1');
    const admission = async () => ((await (await alice.request('GET', `/gateway/v1/admissions/${image.digest}?repository=team/built`)).json()) as { state: string }).state;
    expect(await admission()).to.equal('pending');
    // A keyed DSSE bundle (v0.3) of an SLSA v1 statement about the image, as @sigstore/sign makes one.
    const statement = Buffer.from(JSON.stringify({
      _type: 'https://in-toto.io/Statement/v1', subject: [{ name: 'team/built', digest: { sha256: image.digest.slice(7) } }],
      predicateType: 'https://slsa.dev/provenance/v1', predicate: { buildDefinition: { buildType: 'test' }, runDetails: { builder: { id: 'test' } } },
    }));
    const type = 'application/vnd.in-toto+json';
    const pae = Buffer.concat([Buffer.from(`DSSEv1 ${type.length} ${type} ${statement.length} `), statement]);
    const bundle = Buffer.from(JSON.stringify({
      mediaType: BUNDLE_TYPE,
      verificationMaterial: { publicKey: { hint: 'build' }, tlogEntries: [] },
      dsseEnvelope: { payload: statement.toString('base64'), payloadType: type, signatures: [{ keyid: '', sig: sign('sha256', pae, key.privateKey).toString('base64') }] },
    }));
    await attachArtifactToImage({
      imageName: `${gw.host}/team/built`,
      imageDigest: image.digest,
      artifact: bundle,
      mediaType: BUNDLE_TYPE,
      annotations: { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': 'https://slsa.dev/provenance/v1' },
      credentials: { username: 'alice', password: PASSWORDS.alice },
    });
    expect(await admission()).to.equal('admitted');
    const reader = new OciClient(gw.url, { Authorization: userAuth('reader') });
    expect((await reader.request('GET', '/v2/team/built/manifests/v1')).status).to.equal(200);
    const referrers = (await (await reader.request('GET', `/v2/team/built/referrers/${image.digest}`)).json()) as { manifests: unknown[] };
    expect(referrers.manifests).to.have.length(1);
  });
});
