/**
 * Verification of what real cosign put in a registry (fixtures), of signatures made here
 * with generated keys, and the signature, attestation, packages and licenses rules on the
 * results: what counts, and what does not and why.
 */
import { expect } from 'chai';
import { createHash, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { keyIdOf, type TrustedKey } from '../../src/verify/keys.js';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { initializeCA, initializeTLog } from '@sigstore/mock';
import { verifyEvidenceManifest, type VerifiedEvidence } from '../../src/verify/evidence.js';
import { parseManifest } from '../../src/registry/manifest.js';
import { sbomPackages } from '../../src/sbom/packages.js';
import { compareVersions, licenseIds, repositoryOf, versionInRange } from '../../src/policy/rules/evidence.js';
import { evaluate } from '../../src/policy/evaluate.js';
import { contentHash } from '../../src/policy/loader.js';
import type { Evidence, LoadedPolicy, Policy } from '../../src/policy/types.js';

const COSIGN = fileURLToPath(new URL('../fixtures/cosign/', import.meta.url));
const SHARED_SBOM = fileURLToPath(new URL('../fixtures/sbom/', import.meta.url));
const read = (name: string) => readFileSync(path.join(COSIGN, name));
const IMAGE = 'sha256:a74969ca8131d0ca2353aeb7f12d108638235a77b7d72cce15a8aeb9425b04a4';
const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function trusted(ref: string, key: KeyObject): TrustedKey {
  return { ref, id: keyIdOf(key), key };
}
/** An evidence source over fixture or in-memory blobs. */
function source(manifestJson: Buffer, blobs: Record<string, Buffer>) {
  const manifest = parseManifest(manifestJson, 'application/vnd.oci.image.manifest.v1+json');
  return { digest: sha(manifestJson), manifest, read: async (d: string) => blobs[d] ?? Promise.reject(new Error(`no blob ${d}`)) };
}

function evidenceOf(verified: VerifiedEvidence, repository = 'demo/hello', digest = IMAGE): Evidence {
  return {
    repository,
    subject: { digest, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: null, totalSize: 1, annotations: {}, labels: {}, platforms: [], children: [] },
    items: [],
    extra: { verified },
  };
}

function policy(rules: Array<Record<string, unknown>>): LoadedPolicy {
  const p = { name: 'p', repositories: ['**'], mode: 'enforce', rules } as Policy;
  return { policy: p, hash: contentHash(JSON.stringify(p)) };
}

describe('verifying what cosign wrote (real fixtures)', () => {
  it('verifies a cosign sign signature and reads the digest and reference it binds', async () => {
    const key = trusted('keys/cosign.pub', createPublicKey(read('cosign.pub').toString()));
    const manifest = read('cosign-sig-manifest.json');
    const payload = read('cosign-sig-payload.json');
    const found = await verifyEvidenceManifest(source(manifest, { [sha(payload)]: payload }), { keys: [key], roots: [] }, Buffer.alloc(0));
    expect(found.signatures).to.deep.equal([
      { source: sha(manifest), signer: { keyRef: 'keys/cosign.pub', keyId: key.id, tlog: false, timestamp: false }, digest: IMAGE, dockerReference: '127.0.0.1:5102/demo/hello', problem: null },
    ]);
  });

  it('verifies cosign attest DSSE envelopes and normalizes their SBOMs', async () => {
    const key = trusted('keys/cosign.pub', createPublicKey(read('cosign.pub').toString()));
    const manifest = read('cosign-att-manifest.json');
    const envelopes = [read('cosign-att-dsse-envelope-0.json'), read('cosign-att-dsse-envelope-1.json')];
    const found = await verifyEvidenceManifest(source(manifest, Object.fromEntries(envelopes.map((e) => [sha(e), e]))), { keys: [key], roots: [] }, Buffer.alloc(0));
    expect(found.attestations.map((a) => [a.predicateType, a.problem, a.subjects])).to.deep.equal([
      ['https://spdx.dev/Document', null, [IMAGE]],
      ['https://cyclonedx.org/bom', null, [IMAGE]],
    ]);
    expect(found.attestations[1].packages).to.deep.equal([{ name: 'hello', version: '1.0.0', purl: null, licenses: [] }]);
  });

  it('verifies a Sigstore bundle referrer (cosign attest --new-bundle-format)', async () => {
    const key = trusted('keys/cosign.pub', createPublicKey(read('cosign.pub').toString()));
    const manifest = read('cosign-bundle-manifest.json');
    const bundle = read('cosign-bundle.sigstore.json');
    const found = await verifyEvidenceManifest(source(manifest, { [sha(bundle)]: bundle }), { keys: [key], roots: [] }, Buffer.alloc(0));
    expect(found.attestations).to.have.length(1);
    expect(found.attestations[0]).to.deep.include({ predicateType: 'https://spdx.dev/Document', problem: null, subjects: ['sha256:3cd95dbcdc432525933509994e06311f1aaeede095a6b231ba2ca57b8fdb8e7b'] });
  });

  it('verifies a bundle made with @sigstore/sign and attached by @sigstore/oci, with its local key', async () => {
    const key = trusted('keys/npm.pub', createPublicKey(read('npm-local-p256.pub').toString()));
    const manifest = read('sigstore-oci-artifact-manifest.json');
    const bundle = read('npm-keyed-dsse.sigstore.json');
    // The fixture file is the bundle pretty-printed; the registry held it compact (the layer digest).
    const layer = (JSON.parse(manifest.toString()) as { layers: Array<{ digest: string }> }).layers[0].digest;
    const found = await verifyEvidenceManifest(source(manifest, { [layer]: bundle }), { keys: [key], roots: [] }, Buffer.alloc(0));
    expect(found.attestations).to.have.length(1);
    expect(found.attestations[0]).to.deep.include({ signer: { keyRef: 'keys/npm.pub', keyId: key.id, tlog: false, timestamp: false }, problem: null, predicateType: 'https://spdx.dev/Document' });
    expect(found.attestations[0].packages).to.deep.equal([{ name: 'hello', version: '1.0.0', purl: null, licenses: ['MIT'] }]);
  });

  it('verifies a keyless bundle (Fulcio certificate, Rekor entry, timestamp) against a trusted root, and the rule checks identity and issuer', async () => {
    const root = TrustedRoot.fromJSON(JSON.parse(read('mock-trusted-root.json').toString()));
    const bundle = read('mock-keyless-dsse.sigstore.json');
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha('{}'), size: 2 },
      layers: [{ mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json', digest: sha(bundle), size: bundle.length }],
    }));
    const found = await verifyEvidenceManifest(source(manifest, { [sha(bundle)]: bundle }), { keys: [], roots: [{ ref: 'trust/root.json', root }] }, Buffer.alloc(0));
    const [att] = found.attestations;
    expect(att.problem).to.equal(null);
    expect(att.signer).to.deep.equal({ identity: { subject: 'ci@example.test', issuer: 'https://issuer.mock.test', claims: {} }, root: 'trust/root.json', tlog: true, timestamp: true });
    const subject = att.subjects[0];
    const rule = (identities: Array<Record<string, string>>, extra: Record<string, unknown> = {}) =>
      policy([{ id: 'signed', type: 'signature', keyless: { trustedRoot: 'trust/root.json', identities }, ...extra }, { id: 'att', type: 'attestation', predicateTypes: [att.predicateType!], signedBy: 'signed' }]);
    const evidence = evidenceOf(found, 'demo/hello', subject);
    const decide = (p: LoadedPolicy) => evaluate(p, evidence, new Date()).results[1];
    expect(decide(rule([{ issuer: 'https://issuer.mock.test', subject: 'ci@example.test' }]))).to.deep.include({ status: 'passed' });
    expect(decide(rule([{ issuer: 'https://issuer.mock.test', subjectRegExp: '^ci@example\\.test$' }]))).to.deep.include({ status: 'passed' });
    expect(decide(rule([{ issuer: 'https://other.issuer', subject: 'ci@example.test' }])).message).to.include('signed by ci@example.test (issuer https://issuer.mock.test), whom this rule does not trust');
    expect(decide(rule([{ issuer: 'https://issuer.mock.test', subjectRegExp: '^example$' }])).status).to.equal('missing');
    const withoutRoot = await verifyEvidenceManifest(source(manifest, { [sha(bundle)]: bundle }), { keys: [], roots: [] }, Buffer.alloc(0));
    expect(withoutRoot.attestations[0].problem).to.equal('a keyless (certificate) signature, and the policy names no trusted root');
  });

  it('names the trusted keys when a signature is by another key, and counts nothing', async () => {
    const other = trusted('keys/other.pub', generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey);
    const manifest = read('cosign-sig-manifest.json');
    const payload = read('cosign-sig-payload.json');
    const found = await verifyEvidenceManifest(source(manifest, { [sha(payload)]: payload }), { keys: [other], roots: [] }, Buffer.alloc(0));
    expect(found.signatures[0].signer).to.equal(null);
    expect(found.signatures[0].problem).to.match(/^not signed by any trusted key \(keys\/other\.pub SHA256:[0-9a-f]{16}\)/);
  });
});

/** Signs like cosign: simple signing over the payload bytes; DSSE over PAE. */
function cosignSignature(privateKey: KeyObject, digest: string, reference = 'gw.example/demo/hello') {
  const payload = Buffer.from(JSON.stringify({ critical: { identity: { 'docker-reference': reference }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' }, optional: null }));
  const signature = sign(privateKey.asymmetricKeyType === 'ed25519' ? null : 'sha256', payload, privateKey).toString('base64');
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha('{}'), size: 2 },
    layers: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', digest: sha(payload), size: payload.length, annotations: { 'dev.cosignproject.cosign/signature': signature } }],
  }));
  return { manifest, blobs: { [sha(payload)]: payload } };
}

function dsseAttestation(privateKey: KeyObject, subject: string, predicateType: string, predicate: unknown) {
  const statement = Buffer.from(JSON.stringify({ _type: 'https://in-toto.io/Statement/v1', subject: [{ name: 'x', digest: { sha256: subject.split(':')[1] } }], predicateType, predicate }));
  const type = 'application/vnd.in-toto+json';
  const pae = Buffer.concat([Buffer.from(`DSSEv1 ${type.length} ${type} ${statement.length} `), statement]);
  const sig = sign(privateKey.asymmetricKeyType === 'ed25519' ? null : 'sha256', pae, privateKey).toString('base64');
  const envelope = Buffer.from(JSON.stringify({ payloadType: type, payload: statement.toString('base64'), signatures: [{ keyid: '', sig }] }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha('{}'), size: 2 },
    layers: [{ mediaType: 'application/vnd.dsse.envelope.v1+json', digest: sha(envelope), size: envelope.length, annotations: { predicateType } }],
  }));
  return { manifest, blobs: { [sha(envelope)]: envelope } };
}

describe('signature and attestation rules on keys made in the test', () => {
  const ci = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const release = generateKeyPairSync('ed25519');
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const keys = [trusted('keys/ci.pub', ci.publicKey), trusted('keys/release.pub', release.publicKey), trusted('keys/rsa.pub', rsa.publicKey), trusted('keys/p384.pub', p384.publicKey)];
  const subject = `sha256:${'b'.repeat(64)}`;
  const verify = async (...sources: Array<{ manifest: Buffer; blobs: Record<string, Buffer> }>) => {
    const all: VerifiedEvidence = { signatures: [], attestations: [] };
    for (const s of sources) {
      const found = await verifyEvidenceManifest(source(s.manifest, s.blobs), { keys, roots: [] }, Buffer.alloc(0));
      all.signatures.push(...found.signatures);
      all.attestations.push(...found.attestations);
    }
    return all;
  };
  const signatureRule = { id: 'signed', type: 'signature', keys: ['keys/ci.pub', 'keys/release.pub', 'keys/rsa.pub', 'keys/p384.pub'] };

  it('counts k of n distinct trusted signers over ECDSA P-256 and P-384, Ed25519 and RSA', async () => {
    const v = await verify(cosignSignature(ci.privateKey, subject, 'gw.example/demo/hello'), cosignSignature(ci.privateKey, subject, 'gw.example/demo/hello:v1'));
    const one = evaluate(policy([{ ...signatureRule, minSignatures: 2 }]), evidenceOf(v, 'demo/hello', subject), new Date());
    expect(one.outcome).to.equal('pending');
    expect(one.waitingFor[0]).to.match(/^signed: 1 of 2 required signatures by distinct trusted signers/);
    const ed = cosignSignature(release.privateKey, subject, 'gw.example/demo/hello');
    const rs = cosignSignature(rsa.privateKey, subject, 'gw.example/demo/hello');
    const ps = cosignSignature(p384.privateKey, subject, 'gw.example/demo/hello');
    const two = evaluate(policy([{ ...signatureRule, minSignatures: 4 }]), evidenceOf(await verify(cosignSignature(ci.privateKey, subject), ed, rs, ps), 'demo/hello', subject), new Date());
    expect(two.outcome).to.equal('admitted');
    expect(two.results[0].message).to.match(/^signed by keys\/ci\.pub \(SHA256:[0-9a-f]{16}\), keys\/release\.pub \(SHA256:[0-9a-f]{16}\), keys\/rsa\.pub/);
    const needsLog = evaluate(policy([{ ...signatureRule, requireTlog: true }]), evidenceOf(await verify(cosignSignature(ci.privateKey, subject)), 'demo/hello', subject), new Date());
    expect(needsLog.waitingFor[0]).to.include('without a verified transparency-log entry, which this rule requires');
  });

  it('counts a cosign 3 signature (a DSSE statement of predicate cosign/sign/v1 in a bundle) as a signature', async () => {
    const statement = Buffer.from(JSON.stringify({ _type: 'https://in-toto.io/Statement/v1', subject: [{ name: 'x', digest: { sha256: subject.slice(7) } }], predicateType: 'https://sigstore.dev/cosign/sign/v1', predicate: {} }));
    const type = 'application/vnd.in-toto+json';
    const pae = Buffer.concat([Buffer.from(`DSSEv1 ${type.length} ${type} ${statement.length} `), statement]);
    const bundle = Buffer.from(JSON.stringify({
      mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
      verificationMaterial: { publicKey: { hint: 'ci' }, tlogEntries: [] },
      dsseEnvelope: { payload: statement.toString('base64'), payloadType: type, signatures: [{ keyid: '', sig: sign('sha256', pae, ci.privateKey).toString('base64') }] },
    }));
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha('{}'), size: 2 },
      layers: [{ mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json', digest: sha(bundle), size: bundle.length }],
    }));
    const v = await verify({ manifest, blobs: { [sha(bundle)]: bundle } });
    expect(v.attestations).to.deep.equal([]);
    expect(v.signatures[0]).to.deep.include({ digest: subject, problem: null });
    expect(evaluate(policy([signatureRule]), evidenceOf(v, 'demo/hello', subject), new Date()).outcome).to.equal('admitted');
  });

  it('lets an index signature cover its children, or asks each child for its own', async () => {
    const child = `sha256:${'e'.repeat(64)}`;
    const evidence = evidenceOf(await verify(cosignSignature(ci.privateKey, subject)), 'demo/hello', subject);
    evidence.subject.children = [{ ...evidence.subject, digest: child, children: [] }];
    evidence.subject.mediaType = 'application/vnd.oci.image.index.v1+json';
    evidence.extra.children = { [child]: { signatures: [], attestations: [] } };
    expect(evaluate(policy([signatureRule]), evidence, new Date()).outcome).to.equal('admitted');
    const each = evaluate(policy([{ ...signatureRule, children: 'each' }]), evidence, new Date());
    expect(each.outcome).to.equal('pending');
    expect(each.waitingFor[0]).to.equal('signed: the index is signed, but not its image(s) sha256:eeeeeeeeeeee (this rule wants each signed)');
    evidence.extra.children = { [child]: await verify(cosignSignature(ci.privateKey, child)) };
    expect(evaluate(policy([{ ...signatureRule, children: 'each' }]), evidence, new Date()).outcome).to.equal('admitted');
  });

  it('does not count a signature for another digest, another repository, or a tampered payload', async () => {
    const moved = evaluate(policy([signatureRule]), evidenceOf(await verify(cosignSignature(ci.privateKey, `sha256:${'c'.repeat(64)}`)), 'demo/hello', subject), new Date());
    expect(moved.outcome).to.equal('pending');
    expect(moved.waitingFor[0]).to.include(`signs sha256:${'c'.repeat(64)}, not ${subject}`);
    const elsewhere = evaluate(policy([signatureRule]), evidenceOf(await verify(cosignSignature(ci.privateKey, subject, 'gw.example/other/app')), 'demo/hello', subject), new Date());
    expect(elsewhere.waitingFor[0]).to.include('names repository other/app, not demo/hello');
    expect(evaluate(policy([{ ...signatureRule, allowReferenceMismatch: true }]), evidenceOf(await verify(cosignSignature(ci.privateKey, subject, 'gw.example/other/app')), 'demo/hello', subject), new Date()).outcome).to.equal('admitted');
    const tampered = cosignSignature(ci.privateKey, subject);
    const [payloadDigest] = Object.keys(tampered.blobs);
    tampered.blobs[payloadDigest] = Buffer.from(tampered.blobs[payloadDigest].toString().replace('bbbb', 'cccc'));
    const broken = evaluate(policy([signatureRule]), evidenceOf(await verify(tampered), 'demo/hello', subject), new Date());
    expect(broken.waitingFor[0]).to.include('not signed by any trusted key');
  });

  it('requires attestations signed by the named signature rule\'s keys, about this exact image', async () => {
    const rules = [signatureRule, { id: 'sbom', type: 'attestation', predicateTypes: ['https://spdx.dev/Document', 'https://cyclonedx.org/bom'], signedBy: 'signed' }];
    const cdx = JSON.parse(readFileSync(path.join(SHARED_SBOM, 'npm-cyclonedx.json'), 'utf8')) as unknown;
    const good = evaluate(policy(rules), evidenceOf(await verify(cosignSignature(ci.privateKey, subject), dsseAttestation(ci.privateKey, subject, 'https://cyclonedx.org/bom', cdx)), 'demo/hello', subject), new Date());
    expect(good.outcome).to.equal('admitted');
    expect(good.results[1].message).to.match(/^https:\/\/cyclonedx\.org\/bom signed by keys\/ci\.pub \(SHA256:[0-9a-f]{16}\)$/);
    const otherImage = evaluate(policy(rules), evidenceOf(await verify(cosignSignature(ci.privateKey, subject), dsseAttestation(ci.privateKey, `sha256:${'d'.repeat(64)}`, 'https://cyclonedx.org/bom', cdx)), 'demo/hello', subject), new Date());
    expect(otherImage.outcome).to.equal('pending');
    expect(otherImage.waitingFor.join(' ')).to.include(`statement subject is sha256:dddddddddddd, expected ${subject}`);
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const unsigned = evaluate(policy(rules), evidenceOf(await verify(cosignSignature(ci.privateKey, subject), dsseAttestation(stranger.privateKey, subject, 'https://cyclonedx.org/bom', cdx)), 'demo/hello', subject), new Date());
    expect(unsigned.outcome).to.equal('pending');
    expect(unsigned.waitingFor.join(' ')).to.include('not signed by any trusted key');
  });

  it('checks SLSA provenance (v0.2 and v1): builder, source repository, build type', async () => {
    const v1 = {
      buildDefinition: { buildType: 'https://actions.github.io/buildtypes/workflow/v1', externalParameters: { workflow: { repository: 'https://github.com/acme/app', ref: 'refs/heads/main' } } },
      runDetails: { builder: { id: 'https://github.com/actions/runner/github-hosted' }, metadata: { startedOn: '2026-11-20T10:00:00Z' } },
    };
    const v02 = { builder: { id: 'https://github.com/slsa-framework/slsa-github-generator' }, buildType: 'https://github.com/slsa-framework/slsa-github-generator/generic@v1', invocation: { configSource: { uri: 'git+https://github.com/acme/app@refs/heads/main' } } };
    const rules = (extra: Record<string, unknown>) => policy([{ id: 'signed', type: 'signature', keys: ['keys/ci.pub'] }, { id: 'prov', type: 'provenance', signedBy: 'signed', ...extra }]);
    const withV1 = evidenceOf(await verify(cosignSignature(ci.privateKey, subject), dsseAttestation(ci.privateKey, subject, 'https://slsa.dev/provenance/v1', v1)), 'demo/hello', subject);
    expect(evaluate(rules({ sourceRepositories: ['https://github.com/acme/app'], builderIds: ['https://github.com/actions/runner/github-hosted'] }), withV1, new Date()).outcome).to.equal('admitted');
    const wrong = evaluate(rules({ sourceRepositories: ['https://github.com/acme/other'] }), withV1, new Date());
    expect(wrong.reasons[0]).to.match(/built from https:\/\/github\.com\/acme\/app, not https:\/\/github\.com\/acme\/other/);
    const withV02 = evidenceOf(await verify(cosignSignature(ci.privateKey, subject), dsseAttestation(ci.privateKey, subject, 'https://slsa.dev/provenance/v0.2', v02)), 'demo/hello', subject);
    expect(evaluate(rules({ sourceRepositories: ['https://github.com/acme/app'], buildTypes: ['https://github.com/slsa-framework/slsa-github-generator/generic@v1'] }), withV02, new Date()).outcome).to.equal('admitted');
    expect(evaluate(rules({ builderIds: ['x'] }), evidenceOf(await verify(cosignSignature(ci.privateKey, subject)), 'demo/hello', subject), new Date()).waitingFor[0]).to.include('no signed SLSA provenance');
  });

  it('refuses attestations older than the rule\'s maximum age, by the time their predicate records', async () => {
    const spdx = { spdxVersion: 'SPDX-2.3', SPDXID: 'SPDXRef-DOCUMENT', creationInfo: { created: '2026-10-01T00:00:00Z' }, packages: [] };
    const rules = [signatureRule, { id: 'sbom', type: 'attestation', predicateTypes: ['https://spdx.dev/Document'], signedBy: 'signed', maxAgeDays: 30 }];
    const v = evidenceOf(await verify(cosignSignature(ci.privateKey, subject), dsseAttestation(ci.privateKey, subject, 'https://spdx.dev/Document', spdx)), 'demo/hello', subject);
    expect(evaluate(policy(rules), v, new Date('2026-10-15T00:00:00Z')).outcome).to.equal('admitted');
    const late = evaluate(policy(rules), v, new Date('2026-11-22T00:00:00Z'));
    expect(late.outcome).to.equal('pending');
    expect(late.waitingFor[0]).to.include('was made 2026-10-01, more than 30 days ago');
  });

  it('denies packages and licenses from a signed SBOM, naming them', async () => {
    const spdx = {
      spdxVersion: 'SPDX-2.3', SPDXID: 'SPDXRef-DOCUMENT',
      packages: [
        { name: 'log4j-core', versionInfo: '2.14.1', licenseConcluded: 'Apache-2.0', externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: 'pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1' }] },
        { name: 'left-pad', versionInfo: '1.3.0', licenseConcluded: '(MIT OR GPL-3.0-only)' },
      ],
    };
    const rules = [
      { id: 'signed', type: 'signature', keys: ['keys/ci.pub'] },
      { id: 'no-log4shell', type: 'packages', deny: [{ purl: 'pkg:maven/org.apache.logging.log4j/log4j-core', versions: '>=2.0.0 <2.17.1', reason: 'CVE-2021-44228' }] },
      { id: 'no-gpl', type: 'licenses', deny: ['GPL-3.0-only'] },
    ];
    const v = await verify(cosignSignature(ci.privateKey, subject), dsseAttestation(ci.privateKey, subject, 'https://spdx.dev/Document', spdx));
    const decision = evaluate(policy(rules), evidenceOf(v, 'demo/hello', subject), new Date());
    expect(decision.outcome).to.equal('denied');
    expect(decision.reasons).to.deep.equal([
      'no-log4shell: SBOM lists log4j-core 2.14.1, denied by no-log4shell (CVE-2021-44228)',
      'no-gpl: left-pad 1.3.0 is licensed GPL-3.0-only, which is denied',
    ]);
    const withoutSbom = evaluate(policy(rules), evidenceOf(await verify(cosignSignature(ci.privateKey, subject)), 'demo/hello', subject), new Date());
    expect(withoutSbom.waitingFor).to.include('no-log4shell: no signed SBOM attestation lists the packages of this image');
  });
});

describe('legacy cosign keyless signatures (certificate + Rekor SET annotations), made with @sigstore/mock', () => {
  it('converts them to a bundle and verifies them against the trusted root, identity and issuer included', async () => {
    const caKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const logKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const ca = await initializeCA(caKeys);
    const tlog = await initializeTLog('https://rekor.mock.test', logKeys);
    const signer = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const leaf = Buffer.from((await ca.issueCertificate({
      publicKey: signer.publicKey.export({ type: 'spki', format: 'der' }),
      subjectAltName: 'ci@example.test',
      extensions: [
        { oid: '1.3.6.1.4.1.57264.1.8', value: 'https://issuer.mock.test' },
        { oid: '1.3.6.1.4.1.57264.1.12', value: 'https://github.com/acme/app' },
        { oid: '1.3.6.1.4.1.57264.1.6', value: 'refs/heads/main', legacy: true },
      ],
    })).buffer);
    const certPem = `-----BEGIN CERTIFICATE-----\n${leaf.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`;
    const subject = `sha256:${'f'.repeat(64)}`;
    const payload = Buffer.from(JSON.stringify({ critical: { identity: { 'docker-reference': 'gw/demo/hello' }, image: { 'docker-manifest-digest': subject }, type: 'cosign container image signature' }, optional: null }));
    const signature = sign('sha256', payload, signer.privateKey).toString('base64');
    const entry = await tlog.log({
      apiVersion: '0.0.1', kind: 'hashedrekord',
      spec: { data: { hash: { algorithm: 'sha256', value: createHash('sha256').update(payload).digest('hex') } }, signature: { content: signature, publicKey: { content: Buffer.from(certPem).toString('base64') } } },
    });
    const [logged] = Object.values(entry) as Array<{ body: string; integratedTime: number; logID: string; logIndex: number; verification: { signedEntryTimestamp: string } }>;
    const rekorBundle = JSON.stringify({ SignedEntryTimestamp: logged.verification.signedEntryTimestamp, Payload: { body: logged.body, integratedTime: logged.integratedTime, logIndex: logged.logIndex, logID: logged.logID } });
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha('{}'), size: 2 },
      layers: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', digest: sha(payload), size: payload.length, annotations: {
        'dev.cosignproject.cosign/signature': signature, 'dev.sigstore.cosign/certificate': certPem, 'dev.sigstore.cosign/bundle': rekorBundle,
      } }],
    }));
    const b64 = (b: Buffer) => b.toString('base64');
    const root = TrustedRoot.fromJSON({
      mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
      certificateAuthorities: [{ subject: { organization: 'mock', commonName: 'mock' }, uri: 'https://fulcio.mock.test', certChain: { certificates: [{ rawBytes: b64(Buffer.from(ca.rootCertificate.buffer)) }] }, validFor: { start: '2020-01-01T00:00:00Z' } }],
      tlogs: [{ baseUrl: 'https://rekor.mock.test', hashAlgorithm: 'SHA2_256', publicKey: { rawBytes: b64(tlog.publicKey), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start: '2020-01-01T00:00:00Z' } }, logId: { keyId: b64(createHash('sha256').update(tlog.publicKey).digest()) } }],
      ctlogs: [],
      timestampAuthorities: [],
    });
    const found = await verifyEvidenceManifest(source(manifest, { [sha(payload)]: payload }), { keys: [], roots: [{ ref: 'trust/root.json', root }] }, Buffer.alloc(0));
    expect(found.signatures[0]).to.deep.include({ digest: subject, problem: null });
    expect(found.signatures[0].signer).to.deep.equal({
      identity: { subject: 'ci@example.test', issuer: 'https://issuer.mock.test', claims: { sourceRepositoryURI: 'https://github.com/acme/app', sourceRepositoryRef: 'refs/heads/main' } },
      root: 'trust/root.json', tlog: true, timestamp: true,
    });
    const byClaims = (claims: Record<string, string>) => evaluate(policy([{ id: 'signed', type: 'signature', keyless: { trustedRoot: 'trust/root.json', identities: [{ issuer: 'https://issuer.mock.test', subject: 'ci@example.test', claims }] } }]), evidenceOf(found, 'gw/demo/hello', subject), new Date()).outcome;
    expect(byClaims({ sourceRepositoryURI: 'https://github.com/acme/app', sourceRepositoryRef: 'refs/heads/main' })).to.equal('admitted');
    expect(byClaims({ sourceRepositoryRef: 'refs/heads/dev' })).to.equal('pending');
    // The same signature, its payload altered: the SET no longer matches.
    const forged = Buffer.from(payload.toString().replace('gw/demo/hello', 'gw/demo/other'));
    const bad = await verifyEvidenceManifest(source(manifest, { [sha(payload)]: forged }), { keys: [], roots: [{ ref: 'trust/root.json', root }] }, Buffer.alloc(0));
    expect(bad.signatures[0].signer).to.equal(null);
    expect(bad.signatures[0].problem).to.match(/^the certificate does not verify against trust\/root\.json/);
  }).timeout(20_000);
});

describe('SBOM normalization and helpers', () => {
  it('reads SPDX and CycloneDX documents as Trivy writes them into one package list', () => {
    const spdx = sbomPackages(JSON.parse(readFileSync(path.join(SHARED_SBOM, 'julia-spdx.json'), 'utf8')));
    expect(spdx.length).to.be.greaterThan(0);
    expect(spdx.some((p) => p.purl?.startsWith('pkg:julia/'))).to.equal(true);
    const cdx = sbomPackages(JSON.parse(readFileSync(path.join(SHARED_SBOM, 'npm-cyclonedx.json'), 'utf8')));
    expect(cdx.some((p) => p.purl?.startsWith('pkg:npm/'))).to.equal(true);
    const licensed = sbomPackages({ bomFormat: 'CycloneDX', specVersion: '1.6', components: [
      { name: 'a', version: '1', licenses: [{ license: { id: 'MIT' } }], components: [{ name: 'b', version: '2', licenses: [{ expression: 'Apache-2.0 OR MIT' }] }] },
    ] });
    expect(licensed).to.deep.equal([
      { name: 'a', version: '1', purl: null, licenses: ['MIT'] },
      { name: 'b', version: '2', purl: null, licenses: ['Apache-2.0 OR MIT'] },
    ]);
    expect(() => sbomPackages({ hello: 'world' })).to.throw(/not an SPDX or CycloneDX/);
  });

  it('compares versions, ranges, license expressions and references', () => {
    expect(compareVersions('2.14.1', '2.17.1')).to.be.below(0);
    expect(compareVersions('2.17.10', '2.17.9')).to.be.above(0);
    expect(versionInRange('2.14.1', '>=2.0.0 <2.17.1')).to.equal(true);
    expect(versionInRange('2.17.1', '>=2.0.0 <2.17.1')).to.equal(false);
    expect(licenseIds('(MIT OR Apache-2.0) AND BSD-3-Clause')).to.deep.equal(['MIT', 'Apache-2.0', 'BSD-3-Clause']);
    expect(repositoryOf('127.0.0.1:5102/demo/hello')).to.equal('demo/hello');
    expect(repositoryOf('registry.example.com/team/app:v1')).to.equal('team/app');
    expect(repositoryOf('team/app@sha256:abc')).to.equal('team/app');
  });
});
