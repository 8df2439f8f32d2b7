/**
 * Evidence that counts, with real clients: an image pushed with skopeo is admitted once
 * `cosign sign` and `cosign attest` (keys from the policy directory) have both arrived;
 * unsigned, untrusted, moved, unsigned-SBOM and wrong-subject evidence keeps an image in
 * quarantine with the reason.
 */
import { expect } from 'chai';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAuthGateway, PASSWORDS, userAuth } from '../helpers/auth.js';
import type { TestGateway } from '../helpers/gateway.js';
import { cosign, oras, requireClients, skopeo } from '../helpers/clients.js';
import { buildImageLayout, removeTempDirs } from '../helpers/images.js';
import { OciClient } from '../helpers/oci.js';

const SBOM = fileURLToPath(new URL('../fixtures/cosign/sbom.spdx.json', import.meta.url));

describe('signature and SBOM gate with real cosign', function () {
  this.timeout(180_000);
  let gw: TestGateway;
  let work: string;
  let alice: OciClient;
  let env: NodeJS.ProcessEnv;
  const http = ['--allow-http-registry', '--allow-insecure-registry'];

  before(async function () {
    requireClients('cosign', 'skopeo', 'oras');
    work = mkdtempSync(path.join(tmpdir(), 'cosign-gate-'));
    const policies = path.join(work, 'policies');
    mkdirSync(path.join(policies, 'keys'), { recursive: true });
    env = { DOCKER_CONFIG: path.join(work, 'docker'), COSIGN_PASSWORD: 'pw' };
    mkdirSync(env.DOCKER_CONFIG as string);
    writeFileSync(path.join(env.DOCKER_CONFIG as string, 'config.json'), '{"auths":{}}');
    await cosign(['generate-key-pair', '--output-key-prefix', path.join(work, 'ci')], { cwd: work, env });
    await cosign(['generate-key-pair', '--output-key-prefix', path.join(work, 'rogue')], { cwd: work, env });
    copyFileSync(path.join(work, 'ci.pub'), path.join(policies, 'keys', 'ci.pub'));
    writeFileSync(path.join(policies, 'signed.json'), JSON.stringify({
      name: 'signed', repositories: ['team/**'], mode: 'enforce',
      rules: [
        { id: 'signed-by-ci', type: 'signature', keys: ['keys/ci.pub'] },
        { id: 'sbom', type: 'attestation', predicateTypes: ['https://spdx.dev/Document', 'https://cyclonedx.org/bom'], signedBy: 'signed-by-ci' },
      ],
    }));
    writeFileSync(path.join(policies, 'separate.json'), JSON.stringify({
      name: 'separate', repositories: ['team/separate/**'], mode: 'enforce', priority: 10,
      rules: [{ id: 'signed-by-ci', type: 'signature', keys: ['keys/ci.pub'], signatureRepository: 'team/signatures' }],
    }));
    gw = await startAuthGateway('pglite', (c) => {
      c.policy.dir = policies;
      c.policy.defaultPolicy = 'deny';
      c.gate.putWaitSeconds = 2;
    });
    alice = new OciClient(gw.url).as(userAuth('alice'));
    await cosign(['login', '-u', 'alice', '-p', PASSWORDS.alice, gw.host], { env });
  });
  after(async () => {
    await gw?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
    removeTempDirs();
  });

  async function push(repo: string, tag: string, content = tag) {
    const image = buildImageLayout({ tag: content });
    await skopeo(['copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', `alice:${PASSWORDS.alice}`, image.reference, `docker://${gw.host}/${repo}:${tag}`]);
    // Built layouts are deterministic per content seed.
    return image.manifestDigest;
  }
  const admission = async (repo: string, digest: string) =>
    (await (await alice.request('GET', `/gateway/v1/admissions/${digest}?repository=${repo}`)).json()) as { state: string; waitingFor: string[]; reasons: string[] };
  const readerStatus = async (repo: string, ref: string) =>
    (await new OciClient(gw.url).as(userAuth('reader')).request('GET', `/v2/${repo}/manifests/${ref}`)).status;
  const sign = (key: string, ref: string) => cosign(['sign', '--key', path.join(work, key), '--tlog-upload=false', '--yes', ...http, ref], { cwd: work, env });
  const attest = (key: string, ref: string) =>
    cosign(['attest', '--key', path.join(work, key), '--tlog-upload=false', '--yes', '--type', 'spdxjson', '--predicate', SBOM, ...http, ref], { cwd: work, env });

  it('admits an image once it is signed and its SBOM attested with the trusted key; a reader verifies both', async () => {
    const repo = 'team/app';
    const digest = await push(repo, 'v1');
    const ref = `${gw.host}/${repo}@${digest}`;
    expect((await admission(repo, digest)).waitingFor.join(' ')).to.include('signed-by-ci: no signature by keys/ci.pub');
    await sign('ci.key', ref);
    const afterSign = await admission(repo, digest);
    expect(afterSign.state).to.equal('pending');
    expect(afterSign.waitingFor.join(' ')).to.include('sbom: no signed https://spdx.dev/Document or https://cyclonedx.org/bom attestation');
    expect(await readerStatus(repo, 'v1')).to.equal(404);
    await attest('ci.key', ref);
    expect((await admission(repo, digest)).state).to.equal('admitted');
    expect(await readerStatus(repo, 'v1')).to.equal(200);
    // The normalized package list of the attested SBOM is kept with the admission.
    const kept = (await (await alice.request('GET', `/gateway/v1/admissions/${digest}?repository=${repo}`)).json()) as { evidence: { packages: Array<{ name: string }>; signatures: Array<{ signer: string }> } };
    expect(kept.evidence.packages.map((p) => p.name)).to.include('hello');
    expect(kept.evidence.signatures.map((s) => s.signer)).to.include('keys/ci.pub');
    const readerEnv = { DOCKER_CONFIG: path.join(work, 'docker-reader'), COSIGN_PASSWORD: 'pw' };
    mkdirSync(readerEnv.DOCKER_CONFIG);
    writeFileSync(path.join(readerEnv.DOCKER_CONFIG, 'config.json'), '{"auths":{}}');
    await cosign(['login', '-u', 'reader', '-p', PASSWORDS.reader, gw.host], { env: readerEnv });
    await cosign(['verify', '--key', path.join(work, 'ci.pub'), '--insecure-ignore-tlog=true', ...http, ref], { cwd: work, env: readerEnv });
    await cosign(['verify-attestation', '--key', path.join(work, 'ci.pub'), '--insecure-ignore-tlog=true', '--type', 'spdxjson', ...http, ref], { cwd: work, env: readerEnv });
  });

  it('admits with an attestation in the new Sigstore bundle format, found through the referrers API', async () => {
    const repo = 'team/bundle';
    const digest = await push(repo, 'v1');
    const ref = `${gw.host}/${repo}@${digest}`;
    await sign('ci.key', ref);
    await cosign(['attest', '--new-bundle-format', '--key', path.join(work, 'ci.key'), '--tlog-upload=false', '--yes', '--type', 'spdxjson', '--predicate', SBOM, ...http, ref], { cwd: work, env });
    const referrers = (await (await alice.request('GET', `/v2/${repo}/referrers/${digest}`)).json()) as { manifests: Array<{ artifactType?: string }> };
    expect(referrers.manifests.map((m) => m.artifactType)).to.include('application/vnd.dev.sigstore.bundle.v0.3+json');
    expect((await admission(repo, digest)).state).to.equal('admitted');
  });

  it('finds signatures kept in a separate repository (COSIGN_REPOSITORY)', async () => {
    const repo = 'team/separate/app';
    const digest = await push(repo, 'v1');
    expect((await admission(repo, digest)).state).to.equal('pending');
    await cosign(['sign', '--key', path.join(work, 'ci.key'), '--tlog-upload=false', '--yes', ...http, `${gw.host}/${repo}@${digest}`], {
      cwd: work,
      env: { ...env, COSIGN_REPOSITORY: `${gw.host}/team/signatures` },
    });
    expect((await alice.request('GET', `/v2/team/signatures/manifests/sha256-${digest.split(':')[1]}.sig`)).status).to.equal(200);
    expect((await alice.request('GET', `/v2/${repo}/manifests/sha256-${digest.split(':')[1]}.sig`)).status).to.equal(404);
    // Its arrival there re-evaluated the image here.
    expect((await admission(repo, digest)).state).to.equal('admitted');
    expect(await readerStatus(repo, 'v1')).to.equal(200);
  });

  it('keeps an image signed by an untrusted key in quarantine and says why', async () => {
    const repo = 'team/rogue';
    const digest = await push(repo, 'v1');
    await sign('rogue.key', `${gw.host}/${repo}@${digest}`);
    const view = await admission(repo, digest);
    expect(view.state).to.equal('pending');
    expect(view.waitingFor.join(' ')).to.match(/not signed by any trusted key \(keys\/ci\.pub SHA256:[0-9a-f]{16}\)/);
    expect(await readerStatus(repo, 'v1')).to.equal(404);
  });

  it('does not count a signature whose payload was tampered with and re-pushed with oras', async () => {
    const repo = 'team/tampered';
    const signed = await push(repo, 'signed');
    await sign('ci.key', `${gw.host}/${repo}@${signed}`);
    const target = await push(repo, 'target', 'target');
    // Take the valid signature, point its payload at the other image, push it with oras as that image's signature.
    const sigTag = `sha256-${signed.split(':')[1]}.sig`;
    const sigManifest = (await (await alice.request('GET', `/v2/${repo}/manifests/${sigTag}`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } })).json()) as { layers: Array<{ digest: string; annotations: Record<string, string> }> };
    const payload = Buffer.from(await (await alice.request('GET', `/v2/${repo}/blobs/${sigManifest.layers[0].digest}`)).arrayBuffer()).toString();
    const dir = mkdtempSync(path.join(work, 'tamper-'));
    writeFileSync(path.join(dir, 'payload.json'), payload.replace(signed, target));
    writeFileSync(path.join(dir, 'annotations.json'), JSON.stringify({ 'payload.json': sigManifest.layers[0].annotations }));
    await oras(['push', '--plain-http', '-u', 'alice', '-p', PASSWORDS.alice, '--annotation-file', 'annotations.json', `${gw.host}/${repo}:sha256-${target.split(':')[1]}.sig`, 'payload.json:application/vnd.dev.cosign.simplesigning.v1+json'], { cwd: dir, env });
    const view = await admission(repo, target);
    expect(view.state).to.equal('pending');
    expect(view.waitingFor.join(' ')).to.include('not signed by any trusted key');
  });

  it('does not let a signature follow a tag moved to other content', async () => {
    const repo = 'team/moved';
    const first = await push(repo, 'v1');
    await sign('ci.key', `${gw.host}/${repo}:v1`);
    const second = await push(repo, 'v1', 'v1-rebuilt');
    const view = await admission(repo, second);
    expect(view.state).to.equal('pending');
    expect(view.waitingFor.join(' ')).to.include('no signature by keys/ci.pub');
    expect(first).to.not.equal(second);
  });

  it('does not count an SBOM attached unsigned with oras, nor an attestation naming another image', async () => {
    const repo = 'team/sbom';
    const digest = await push(repo, 'v1');
    const ref = `${gw.host}/${repo}@${digest}`;
    await sign('ci.key', ref);
    await oras(['attach', '--plain-http', '-u', 'alice', '-p', PASSWORDS.alice, '--artifact-type', 'application/spdx+json', ref, `sbom.spdx.json:application/spdx+json`], { cwd: path.dirname(SBOM), env });
    expect((await admission(repo, digest)).state).to.equal('pending');

    // Another image's attestation, re-pushed under this image's cosign tag.
    const other = await push(repo, 'other');
    await attest('ci.key', `${gw.host}/${repo}@${other}`);
    const otherAtt = await alice.request('GET', `/v2/${repo}/manifests/sha256-${other.split(':')[1]}.att`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    expect(otherAtt.status).to.equal(200);
    const body = Buffer.from(await otherAtt.arrayBuffer());
    expect((await alice.putManifest(repo, `sha256-${digest.split(':')[1]}.att`, body)).status).to.equal(201);
    const view = await admission(repo, digest);
    expect(view.state).to.equal('pending');
    expect(view.waitingFor.join(' ')).to.include(`statement subject is ${other.slice(0, 19)}, expected ${digest}`);
  });
});
