/**
 * Real clients logging in: `oras login` / `logout` and `cosign login`, then cosign signs an
 * image it pushed with its credentials and a pull-only reader verifies the signature
 * against the gateway (the signature is evidence, committed with its admitted subject).
 */
import { expect } from 'chai';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startAuthGateway, PASSWORDS } from '../helpers/auth.js';
import type { TestGateway } from '../helpers/gateway.js';
import { cosign, oras, orasExpectingFailure, requireClients, runClientExpectingFailure, skopeo } from '../helpers/clients.js';
import { buildImageLayout, removeTempDirs } from '../helpers/images.js';

describe('real clients log in to the gateway', function () {
  this.timeout(180_000);
  let gw: TestGateway;
  let work: string;

  before(async function () {
    requireClients('oras', 'cosign', 'skopeo');
    work = mkdtempSync(path.join(tmpdir(), 'auth-e2e-'));
    gw = await startAuthGateway('pglite');
  });
  after(async () => {
    await gw?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
    removeTempDirs();
  });

  /** A private credential store per identity, so logins never leak between steps. */
  const configFor = (who: string) => {
    const dir = path.join(work, `docker-${who}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'config.json'), '{"auths":{}}\n');
    return { DOCKER_CONFIG: dir };
  };

  it('oras login stores credentials that push and discover use; after logout the push is refused', async () => {
    const env = configFor('oras-alice');
    const file = path.join(work, 'artifact.txt');
    writeFileSync(file, 'an artifact\n');
    const repo = `${gw.host}/team/oras/art`;
    const unauthenticated = await orasExpectingFailure(['push', '--plain-http', `${repo}:v1`, 'artifact.txt:text/plain'], { cwd: work, env });
    expect(unauthenticated.message, unauthenticated.message).to.match(/401|unauthorized|basic credential|credential required/i);
    await oras(['login', '--plain-http', '-u', 'alice', '-p', PASSWORDS.alice, gw.host], { env });
    await oras(['push', '--plain-http', `${repo}:v1`, 'artifact.txt:text/plain'], { cwd: work, env });
    const tags = await oras(['repo', 'tags', '--plain-http', repo], { env });
    expect(tags.stdout.trim().split('\n')).to.include('v1');
    await oras(['logout', gw.host], { env });
    const after = await orasExpectingFailure(['push', '--plain-http', `${repo}:v2`, 'artifact.txt:text/plain'], { cwd: work, env });
    expect(after.message).to.match(/401|unauthorized|basic credential/i);
    const wrong = await orasExpectingFailure(['login', '--plain-http', '-u', 'alice', '-p', 'not-the-password', gw.host], { env });
    expect(wrong.message).to.match(/401|unauthorized|invalid/i);
  });

  it('cosign login, sign with a key over the token flow, and a reader verifies against the gateway', async () => {
    const pusherEnv = { ...configFor('cosign-alice'), COSIGN_PASSWORD: 'key-password' };
    const readerEnv = { ...configFor('cosign-reader'), COSIGN_PASSWORD: 'key-password' };
    const image = buildImageLayout({ tag: 'v1' });
    await skopeo(['copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', `alice:${PASSWORDS.alice}`, image.reference, `docker://${gw.host}/team/signed-by-cosign/app:v1`]);
    const ref = `${gw.host}/team/signed-by-cosign/app@${image.manifestDigest}`;
    await cosign(['generate-key-pair', '--output-key-prefix', path.join(work, 'ci')], { cwd: work, env: pusherEnv });
    const http = ['--allow-http-registry', '--allow-insecure-registry'];

    await cosign(['login', '-u', 'alice', '-p', PASSWORDS.alice, gw.host], { env: pusherEnv });
    await cosign(['sign', '--key', path.join(work, 'ci.key'), '--tlog-upload=false', '--yes', ...http, ref], { cwd: work, env: pusherEnv });

    await cosign(['login', '-u', 'reader', '-p', PASSWORDS.reader, gw.host], { env: readerEnv });
    const verified = await cosign(['verify', '--key', path.join(work, 'ci.pub'), '--insecure-ignore-tlog=true', ...http, ref], { cwd: work, env: readerEnv });
    expect(verified.stdout).to.include(image.manifestDigest);
    // The reader may not sign (no push right): a signature of its own must be pushed, and is refused.
    await cosign(['generate-key-pair', '--output-key-prefix', path.join(work, 'reader')], { cwd: work, env: readerEnv });
    const refused = await runClientExpectingFailure('cosign', ['sign', '--key', path.join(work, 'reader.key'), '--tlog-upload=false', '--yes', ...http, ref], { cwd: work, env: readerEnv });
    expect(refused.message).to.match(/denied|unauthorized|401|403/i);
  });
});
