/**
 * The gate with real skopeo and the real `gateway admit` CLI: under an enforce policy that
 * cannot be met the push is refused and the image stays in quarantine (visible to the
 * pusher, invisible to a reader); under warn it is admitted with the would-be failures
 * recorded; a compliant image is admitted and pulled back by a reader.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAuthGateway, PASSWORDS } from '../helpers/auth.js';
import type { TestGateway } from '../helpers/gateway.js';
import { parseJsonOutput, requireClients, skopeo, skopeoExpectingFailure } from '../helpers/clients.js';
import { buildImageLayout, removeTempDirs } from '../helpers/images.js';

const SOURCE = 'org.opencontainers.image.source';
const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

function admitCli(args: string[], password: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'admit', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(password + '\n');
  });
}

describe('gate end to end with skopeo and gateway admit', function () {
  this.timeout(120_000);
  let gw: TestGateway;
  let dir: string;
  const alice = `alice:${PASSWORDS.alice}`;
  const reader = `reader:${PASSWORDS.reader}`;

  before(async function () {
    requireClients('skopeo');
    dir = mkdtempSync(path.join(tmpdir(), 'gate-e2e-policies-'));
    const rules = [{ id: 'source', type: 'manifest', requireAnnotations: [SOURCE] }];
    writeFileSync(path.join(dir, 'prod.json'), JSON.stringify({ name: 'prod', repositories: ['team/prod/**'], mode: 'enforce', rules }));
    writeFileSync(path.join(dir, 'dev.json'), JSON.stringify({ name: 'dev', repositories: ['team/dev/**'], mode: 'warn', rules }));
    gw = await startAuthGateway('pglite', (c) => {
      c.policy.dir = dir;
      c.policy.defaultPolicy = 'deny';
    });
  });
  after(async () => {
    await gw?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    removeTempDirs();
  });

  const push = (reference: string, dest: string, creds: string) =>
    skopeo(['copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', creds, reference, dest]);
  const inspectDigest = async (ref: string, creds: string) =>
    parseJsonOutput<{ Digest: string }>(await skopeo(['inspect', '--tls-verify=false', '--creds', creds, ref]), `inspect ${ref}`).Digest;

  it('refuses an enforce push it cannot admit: quarantined for the pusher, invisible to a reader', async () => {
    const image = buildImageLayout({ tag: 'v1' });
    const failure = await skopeoExpectingFailure(['copy', '--quiet', '--dest-tls-verify=false', '--dest-creds', alice, image.reference, `docker://${gw.host}/team/prod/app:v1`]);
    expect(failure.message).to.match(/denied/i);
    expect(failure.message).to.include(SOURCE);
    const byDigest = `docker://${gw.host}/team/prod/app@${image.manifestDigest}`;
    expect(await inspectDigest(byDigest, alice)).to.equal(image.manifestDigest);
    const hidden = await skopeoExpectingFailure(['inspect', '--tls-verify=false', '--creds', reader, byDigest]);
    expect(hidden.message).to.match(/manifest unknown|not found/i);
    const verdict = await admitCli([`${gw.host}/team/prod/app@${image.manifestDigest}`, '--plain-http', '-u', 'alice', '--password-stdin', '--wait', '2s'], PASSWORDS.alice);
    expect(verdict.code, verdict.stderr).to.equal(2);
    expect(verdict.stdout).to.match(/source\s+manifest\s+enforce\s+failed\s+annotation org\.opencontainers\.image\.source is missing/);
    expect(verdict.stdout).to.include('verdict: DENIED');
  });

  it('admits under warn, records the would-be failure, and a reader pulls it', async () => {
    const image = buildImageLayout({ tag: 'v1' });
    await push(image.reference, `docker://${gw.host}/team/dev/app:v1`, alice);
    expect(await inspectDigest(`docker://${gw.host}/team/dev/app:v1`, reader)).to.equal(image.manifestDigest);
    const verdict = await admitCli([`${gw.host}/team/dev/app:v1`, '--plain-http', '-u', 'reader', '--password-stdin', '--output', 'json'], PASSWORDS.reader);
    expect(verdict.code, verdict.stderr).to.equal(0);
    const view = JSON.parse(verdict.stdout) as { state: string; warnings: string[]; results: Array<{ status: string; mode: string }> };
    expect(view.state).to.equal('admitted');
    expect(view.warnings[0]).to.include(SOURCE);
    expect(view.results[0]).to.deep.include({ status: 'failed', mode: 'warn' });
  });

  it('admits a compliant image under enforce and a reader copies it back with the same digest', async () => {
    const image = buildImageLayout({ tag: 'v2', annotations: { [SOURCE]: 'https://example.com/app' } });
    await push(image.reference, `docker://${gw.host}/team/prod/app:v2`, alice);
    const out = mkdtempSync(path.join(tmpdir(), 'gate-e2e-pull-'));
    try {
      await skopeo(['copy', '--quiet', '--src-tls-verify=false', '--src-creds', reader, `docker://${gw.host}/team/prod/app:v2`, `oci:${out}:v2`]);
      expect(await inspectDigest(`docker://${gw.host}/team/prod/app:v2`, reader)).to.equal(image.manifestDigest);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
    const verdict = await admitCli([`${gw.host}/team/prod/app:v2`, '--plain-http', '-u', 'alice', '--password-stdin'], PASSWORDS.alice);
    expect(verdict.code, verdict.stderr).to.equal(0);
    expect(verdict.stdout).to.include('verdict: ADMITTED');
  });
});
