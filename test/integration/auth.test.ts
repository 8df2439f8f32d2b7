/** Identity and access: every denial, tokens, robots, lockout, and reader vs pusher views. */
import { expect } from 'chai';
import { generateKeyPairSync } from 'node:crypto';
import { TokenService } from '../../src/auth/tokens.js';
import type { AdmissionDecision } from '../../src/registry/admission.js';
import { DATABASE_KINDS, type TestGateway } from '../helpers/gateway.js';
import { basic, decodeJwt, fetchToken, PASSWORDS, startAuthGateway, userAuth } from '../helpers/auth.js';
import { errorCode, OCI_MANIFEST, OciClient, sha256 } from '../helpers/oci.js';

const bearer = (token: string) => `Bearer ${token}`;

for (const kind of DATABASE_KINDS) {
  describe(`identity and access on ${kind}`, () => {
    let gw: TestGateway;
    let anon: OciClient;
    let alice: OciClient;
    let reader: OciClient;
    let admin: OciClient;

    before(async () => {
      gw = await startAuthGateway(kind);
      anon = new OciClient(gw.url);
      alice = anon.as(userAuth('alice'));
      reader = anon.as(userAuth('reader'));
      admin = anon.as(userAuth('admin'));
    });
    after(async () => gw.stop());

    describe('challenge and Basic', () => {
      it('answers a request without credentials with 401 and a Bearer challenge naming the scope', async () => {
        const res = await anon.request('GET', '/v2/team/app/manifests/v1');
        expect(res.status).to.equal(401);
        expect(await errorCode(res)).to.equal('UNAUTHORIZED');
        expect(res.headers.get('www-authenticate')).to.equal(
          `Bearer realm="${gw.url.replace('127.0.0.1', '127.0.0.1')}/auth/token",service="oci-gateway",scope="repository:team/app:pull"`,
        );
        const push = await anon.request('POST', '/v2/team/app/blobs/uploads/');
        expect(push.headers.get('www-authenticate')).to.include('scope="repository:team/app:pull,push"');
        const base = await anon.request('GET', '/v2/');
        expect(base.status).to.equal(401);
      });

      it('refuses a wrong password and an unknown user with 401', async () => {
        for (const auth of [basic('alice', 'wrong-password'), basic('mallory', 'whatever-pass')]) {
          const res = await anon.as(auth).request('GET', '/v2/');
          expect(res.status).to.equal(401);
          expect(await errorCode(res)).to.equal('UNAUTHORIZED');
        }
      });

      it('refuses a username no one can have (U+0000, robot names out of grammar) with 401 and audits it', async () => {
        for (const username of ['ali\u0000ce', 'robot$bad\u0000name', 'robot$UPPER']) {
          const res = await anon.as(basic(username, 'whatever-pass')).request('GET', '/v2/');
          expect(res.status, JSON.stringify(username)).to.equal(401);
          expect(await errorCode(res)).to.equal('UNAUTHORIZED');
        }
        const failures = await gw.audit.query({ action: 'auth.failure', limit: 1000 });
        const principals = failures.map((r) => r.principal);
        expect(principals).to.include.members(['ali\uFFFDce', 'robot$bad\uFFFDname', 'robot$UPPER']);
        expect((await gw.audit.verify()).ok).to.equal(true);
      });

      it('names what is wrong with a malformed Authorization header, whatever its shape', async () => {
        const messages: string[] = [];
        for (const authorization of ['Basic', 'Bearer', 'Basic !!!', 'Negotiate abc']) {
          const res = await anon.request('GET', '/v2/', { headers: { Authorization: authorization } });
          expect(res.status, authorization).to.equal(401);
          messages.push(((await res.json()) as { errors: Array<{ message: string }> }).errors[0].message);
        }
        expect(messages[0]).to.equal('malformed Basic credentials');
        expect(messages[1]).to.match(/^invalid token/);
        expect(messages[2]).to.equal('malformed Basic credentials');
        expect(messages[3]).to.equal('unsupported authorization scheme negotiate');
      });

      it('accepts Basic directly on /v2/ as Distribution does', async () => {
        expect((await alice.request('GET', '/v2/')).status).to.equal(200);
        await alice.pushImage('team/app', 'v1');
        expect((await alice.request('GET', '/v2/team/app/manifests/v1')).status).to.equal(200);
      });

      it('refuses push, delete and unknown repositories to a pull-only user with 403 DENIED', async () => {
        const push = await reader.request('POST', '/v2/team/app/blobs/uploads/');
        expect(push.status).to.equal(403);
        expect(await errorCode(push)).to.equal('DENIED');
        const del = await reader.request('DELETE', '/v2/team/app/manifests/v1');
        expect(del.status).to.equal(403);
        const other = await reader.request('GET', '/v2/bob/private/tags/list');
        expect(other.status).to.equal(403);
        expect((await reader.request('GET', '/v2/team/app/manifests/v1')).status).to.equal(200);
      });
    });

    describe('token service', () => {
      it('issues a short-lived ES256 JWT whose access is the intersection of asked and allowed', async () => {
        const { status, token, body } = await fetchToken(gw.url, userAuth('reader'), ['repository:team/app:pull,push', 'repository:bob/x:pull']);
        expect(status).to.equal(200);
        expect(body.access_token).to.equal(token);
        expect(body.expires_in).to.equal(300);
        const { header, payload } = decodeJwt(token!);
        expect(header.alg).to.equal('ES256');
        expect(payload).to.include({ iss: 'oci-gateway', aud: 'oci-gateway', sub: 'reader' });
        expect(payload.access).to.deep.equal([{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
        expect((payload.exp as number) - (payload.iat as number)).to.equal(300);
      });

      it('lets a token do what it grants and answers anything else with insufficient_scope', async () => {
        const { token } = await fetchToken(gw.url, userAuth('alice'), ['repository:team/app:pull']);
        const client = anon.as(bearer(token!));
        expect((await client.request('GET', '/v2/team/app/manifests/v1')).status).to.equal(200);
        const push = await client.request('POST', '/v2/team/app/blobs/uploads/');
        expect(push.status).to.equal(401);
        expect(push.headers.get('www-authenticate')).to.include('error="insufficient_scope"');
        const otherRepo = await client.request('GET', '/v2/team/other/tags/list');
        expect(otherRepo.status).to.equal(401);
        expect(otherRepo.headers.get('www-authenticate')).to.include('scope="repository:team/other:pull"');
      });

      it('refuses a token signed by another key and an expired token with invalid_token', async () => {
        const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const foreign = new TokenService(privateKey, { issuer: 'oci-gateway', service: 'oci-gateway', ttlSeconds: 300 });
        const forged = await foreign.issue('alice', [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]);
        const res = await anon.as(bearer(forged.token)).request('GET', '/v2/team/app/manifests/v1');
        expect(res.status).to.equal(401);
        expect(res.headers.get('www-authenticate')).to.include('error="invalid_token"');

        const own = new TokenService((await import('node:crypto')).createPrivateKey((await import('node:fs')).readFileSync(`${gw.root}/auth/token-key.pem`)), {
          issuer: 'oci-gateway', service: 'oci-gateway', ttlSeconds: 60,
        });
        const stale = await own.issue('alice', [{ type: 'repository', name: 'team/app', actions: ['pull'] }], new Date(Date.now() - 3600_000));
        const expired = await anon.as(bearer(stale.token)).request('GET', '/v2/team/app/manifests/v1');
        expect(expired.status).to.equal(401);
        expect(expired.headers.get('www-authenticate')).to.include('error="invalid_token"');
        const fresh = await own.issue('alice', [{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
        expect((await anon.as(bearer(fresh.token)).request('GET', '/v2/team/app/manifests/v1')).status).to.equal(200);
      });

      it('refuses bad credentials at the token endpoint with 401 and a token for another service with 400', async () => {
        expect((await fetchToken(gw.url, basic('alice', 'nope-nope'), [])).status).to.equal(401);
        const res = await fetch(`${gw.url}/auth/token?service=elsewhere`, { headers: { Authorization: userAuth('alice') } });
        expect(res.status).to.equal(400);
      });

      it('supports the OAuth2 password grant and refuses refresh tokens', async () => {
        const form = new URLSearchParams({ grant_type: 'password', username: 'alice', password: PASSWORDS.alice, service: 'oci-gateway', scope: 'repository:team/app:pull', client_id: 'test' });
        const res = await fetch(`${gw.url}/auth/token`, { method: 'POST', body: form });
        expect(res.status).to.equal(200);
        const { access_token } = (await res.json()) as { access_token: string };
        expect(decodeJwt(access_token).payload.access).to.deep.equal([{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
        const refresh = await fetch(`${gw.url}/auth/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'x' }) });
        expect(refresh.status).to.equal(400);
      });

      it('gives anonymous callers tokens for anonymous pulls only', async () => {
        await alice.pushImage('public/base', 'v1');
        const { token } = await fetchToken(gw.url, null, ['repository:public/base:pull,push', 'repository:team/app:pull']);
        expect(decodeJwt(token!).payload.access).to.deep.equal([{ type: 'repository', name: 'public/base', actions: ['pull'] }]);
        const client = anon.as(bearer(token!));
        expect((await client.request('GET', '/v2/public/base/manifests/v1')).status).to.equal(200);
        expect((await anon.request('GET', '/v2/public/base/manifests/v1')).status).to.equal(200);
        expect((await client.request('POST', '/v2/public/base/blobs/uploads/')).status).to.equal(401);
      });
    });

    describe('robot accounts', () => {
      it('are created by an admin, see their secret once, and work only within their scope', async () => {
        const created = await admin.request('POST', '/gateway/v1/robots', {
          body: JSON.stringify({ name: 'ci-builder', repositories: ['team/ci/*'], actions: ['pull', 'push'], description: 'CI' }),
          headers: { 'Content-Type': 'application/json' },
        });
        expect(created.status).to.equal(201);
        const robot = (await created.json()) as { username: string; secret: string };
        expect(robot.username).to.equal('robot$ci-builder');
        expect(robot.secret).to.have.length.greaterThan(40);
        const list = (await (await admin.request('GET', '/gateway/v1/robots')).json()) as { robots: Array<Record<string, unknown>> };
        expect(list.robots.map((r) => r.name)).to.include('ci-builder');
        expect(JSON.stringify(list)).not.to.include(robot.secret);

        const ci = anon.as(basic(robot.username, robot.secret));
        await ci.pushImage('team/ci/app', 'v1');
        expect((await ci.request('POST', '/v2/team/other/blobs/uploads/')).status).to.equal(403);
        const { token } = await fetchToken(gw.url, basic(robot.username, robot.secret), ['repository:team/ci/app:pull,push']);
        expect(decodeJwt(token!).payload.sub).to.equal('robot$ci-builder');
        expect((await anon.as(bearer(token!)).request('GET', '/v2/team/ci/app/manifests/v1')).status).to.equal(200);
      });

      it('refuses robot administration to non-admins', async () => {
        const res = await alice.request('POST', '/gateway/v1/robots', {
          body: JSON.stringify({ name: 'sneaky', repositories: ['**'], actions: ['push'] }),
          headers: { 'Content-Type': 'application/json' },
        });
        expect(res.status).to.equal(403);
        expect((await anon.request('GET', '/gateway/v1/robots')).status).to.equal(401);
      });

      it('validates robot requests and refuses duplicates', async () => {
        const post = (body: unknown) => admin.request('POST', '/gateway/v1/robots', { body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
        expect((await post({ name: 'Bad Name', repositories: ['x'], actions: ['pull'] })).status).to.equal(400);
        expect((await post({ name: 'ok', repositories: [], actions: ['pull'] })).status).to.equal(400);
        expect((await post({ name: 'ok', repositories: ['x'], actions: ['admin'] })).status).to.equal(400);
        // U+0000 cannot be stored (PostgreSQL text): a clear 400, not a 500.
        expect((await post({ name: 'ok', repositories: ['x\u0000'], actions: ['pull'] })).status).to.equal(400);
        expect((await post({ name: 'ok', repositories: ['x'], actions: ['pull'], description: 'a\u0000b' })).status).to.equal(400);
        expect((await post({ name: 'ci-builder', repositories: ['x'], actions: ['pull'] })).status).to.equal(409);
        // A body that is not JSON, or JSON that is not an object: 400 saying so, never 500.
        for (const raw of ['{', 'null']) {
          const res = await admin.request('POST', '/gateway/v1/robots', { body: raw, headers: { 'Content-Type': 'application/json' } });
          expect(res.status, raw).to.equal(400);
          expect(((await res.json()) as { errors: Array<{ message: string }> }).errors[0].message).to.match(/^invalid request body/);
        }
        const charset = await admin.request('POST', '/gateway/v1/robots', { body: '{}', headers: { 'Content-Type': 'application/json; charset=latin9' } });
        expect(charset.status).to.equal(415);
        // A name in the URL that no robot can have is unknown (404); U+0000 in a URL is refused first (400).
        for (const name of ['UPPER', '%C3%BC']) {
          const rotate = await admin.request('POST', `/gateway/v1/robots/${name}/rotate`);
          expect(rotate.status, name).to.equal(404);
          expect(await errorCode(rotate)).to.equal('NAME_UNKNOWN');
          expect((await admin.request('DELETE', `/gateway/v1/robots/${name}`)).status, name).to.equal(404);
        }
        expect((await admin.request('DELETE', '/gateway/v1/robots/bad%00name')).status).to.equal(400);
      });

      it('are created, rotated and removed together with their audit records, or not at all', async () => {
        const post = (name: string) =>
          admin.request('POST', '/gateway/v1/robots', { body: JSON.stringify({ name, repositories: ['team/**'], actions: ['pull'] }), headers: { 'Content-Type': 'application/json' } });
        expect((await post('audited')).status).to.equal(201);
        expect((await admin.request('POST', '/gateway/v1/robots/audited/rotate')).status).to.equal(200);
        expect((await admin.request('DELETE', '/gateway/v1/robots/audited')).status).to.equal(204);
        const records = (await gw.audit.query({ principal: 'admin', limit: 10_000 })).filter((r) => r.detail.robot === 'audited');
        expect(records.map((r) => r.action)).to.deep.equal(['robot.create', 'robot.rotate', 'robot.delete']);

        // An audit trail that refuses the record refuses the change.
        const db = gw.registry.metadata.db;
        await db.query(`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$`);
        await db.query('CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()');
        try {
          expect((await post('unaudited')).status).to.equal(500);
        } finally {
          await db.query('DROP TRIGGER refuse_audit ON audit_log');
          await db.query('DROP FUNCTION refuse_audit()');
        }
        const listed = (await (await admin.request('GET', '/gateway/v1/robots')).json()) as { robots: Array<{ name: string }> };
        expect(listed.robots.map((r) => r.name)).to.not.include('unaudited');
      });

      it('stop working when rotated, expired or removed', async () => {
        const robots = gw.registry.metadata.db;
        const { RobotStore } = await import('../../src/auth/robots.js');
        const store = new RobotStore(robots, gw.audit);
        const { secret } = await store.create({ name: 'short-lived', repositories: ['team/**'], actions: ['pull'] }, { principal: 'test' });
        const auth = basic('robot$short-lived', secret);
        expect((await anon.as(auth).request('GET', '/v2/team/app/manifests/v1')).status).to.equal(200);
        const { token } = await fetchToken(gw.url, auth, ['repository:team/app:pull']);

        const rotated = await admin.request('POST', '/gateway/v1/robots/short-lived/rotate');
        const next = ((await rotated.json()) as { secret: string }).secret;
        expect((await anon.as(auth).request('GET', '/v2/team/app/manifests/v1')).status).to.equal(401);
        const fresh = basic('robot$short-lived', next);
        expect((await anon.as(fresh).request('GET', '/v2/team/app/manifests/v1')).status).to.equal(200);

        await robots.query(`UPDATE robots SET expires_at = now() - interval '1 minute' WHERE name = 'short-lived'`);
        expect((await anon.as(fresh).request('GET', '/v2/team/app/manifests/v1')).status).to.equal(401);

        expect((await admin.request('DELETE', '/gateway/v1/robots/short-lived')).status).to.equal(204);
        // The robot cache keeps a removed robot's token alive for at most 10 s.
        await new Promise((r) => setTimeout(r, 10_500));
        expect((await anon.as(bearer(token!)).request('GET', '/v2/team/app/manifests/v1')).status).to.equal(401);
        expect((await admin.request('DELETE', '/gateway/v1/robots/short-lived')).status).to.equal(404);
      }).timeout(30_000);
    });

    describe('cross-repository mount', () => {
      it('mounts only with pull on the source and push on the target, else falls back to an upload', async () => {
        const digest = await alice.pushBlob('team/src', 'shared layer');
        const bob = anon.as(userAuth('bob'));
        const denied = await bob.request('POST', `/v2/bob/dst/blobs/uploads/?mount=${digest}&from=team/src`);
        expect(denied.status).to.equal(202);
        expect((await bob.request('HEAD', `/v2/bob/dst/blobs/${digest}`)).status).to.equal(404);
        const mounted = await alice.request('POST', `/v2/public/dst/blobs/uploads/?mount=${digest}&from=team/src`);
        expect(mounted.status).to.equal(201);
        const noPushOnTarget = await reader.request('POST', `/v2/team/dst/blobs/uploads/?mount=${digest}&from=team/src`);
        expect(noPushOnTarget.status).to.equal(403);
      });

      it('asks a token without pull on the source for one with both scopes, as Distribution does, and then mounts', async () => {
        const digest = await alice.pushBlob('team/src', 'layer mounted with a token');
        const mountPath = `/v2/public/tokendst/blobs/uploads/?mount=${digest}&from=team/src`;
        // The first challenge, to a caller without a token or with one for another repository, names both.
        const elsewhere = await fetchToken(gw.url, userAuth('alice'), ['repository:team/app:pull']);
        for (const client of [anon, anon.as(bearer(elsewhere.token!))]) {
          const first = await client.request('POST', mountPath);
          expect(first.status).to.equal(401);
          expect(first.headers.get('www-authenticate')).to.include('scope="repository:public/tokendst:pull,push repository:team/src:pull"');
        }
        const narrow = await fetchToken(gw.url, userAuth('alice'), ['repository:public/tokendst:pull,push']);
        const refused = await anon.as(bearer(narrow.token!)).request('POST', mountPath);
        expect(refused.status).to.equal(401);
        expect(await errorCode(refused)).to.equal('UNAUTHORIZED');
        const challenge = refused.headers.get('www-authenticate')!;
        expect(challenge).to.include('scope="repository:public/tokendst:pull,push repository:team/src:pull"');
        expect(challenge).to.include('error="insufficient_scope"');
        const scope = /scope="([^"]+)"/.exec(challenge)![1];
        const wide = await fetchToken(gw.url, userAuth('alice'), [scope]);
        const mounted = await anon.as(bearer(wide.token!)).request('POST', mountPath);
        expect(mounted.status).to.equal(201);
        expect(mounted.headers.get('docker-content-digest')).to.equal(digest);
        // A principal without pull on the source gets no such challenge: its mount becomes an upload.
        const bobToken = await fetchToken(gw.url, userAuth('bob'), ['repository:bob/tokendst:pull,push', 'repository:team/src:pull']);
        const fallback = await anon.as(bearer(bobToken.token!)).request('POST', `/v2/bob/tokendst/blobs/uploads/?mount=${digest}&from=team/src`);
        expect(fallback.status).to.equal(202);
      });
    });

    describe('catalog', () => {
      it('lists only repositories the caller may pull', async () => {
        await anon.as(userAuth('bob')).pushImage('bob/private', 'v1');
        const forBob = (await (await anon.as(userAuth('bob')).request('GET', '/v2/_catalog')).json()) as { repositories: string[] };
        expect(forBob.repositories).to.include('bob/private');
        expect(forBob.repositories).to.include('public/base');
        expect(forBob.repositories).not.to.include('team/app');
        const forReader = (await (await reader.request('GET', '/v2/_catalog')).json()) as { repositories: string[] };
        expect(forReader.repositories).to.include('team/app');
        expect(forReader.repositories).not.to.include('bob/private');
        expect((await admin.request('GET', '/v2/_catalog?n=100')).status).to.equal(200);
      });
    });
  });
}

describe('lockout', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startAuthGateway('pglite', (c) => {
      c.auth.lockoutSlowdownAfter = 2;
      c.auth.lockoutMaxFailures = 4;
      c.auth.lockoutSeconds = 2;
    });
  });
  after(async () => gw.stop());

  it('slows down, then locks out a principal even with the right password, then lets it in again', async () => {
    const c = new OciClient(gw.url);
    const wrong = c.as(basic('alice', 'not-her-password'));
    const started = Date.now();
    for (let i = 0; i < 3; i++) expect((await wrong.request('GET', '/v2/')).status).to.equal(401);
    const locked = await wrong.request('GET', '/v2/');
    expect(Date.now() - started).to.be.greaterThan(200);
    expect(locked.status).to.equal(401);
    const right = await c.as(userAuth('alice')).request('GET', '/v2/');
    expect(right.status).to.equal(429);
    expect(await errorCode(right)).to.equal('TOOMANYREQUESTS');
    expect(Number(right.headers.get('retry-after'))).to.be.within(1, 2);
    const tokenTry = await fetchToken(gw.url, userAuth('alice'), []);
    expect(tokenTry.status).to.equal(429);
    await new Promise((r) => setTimeout(r, 2200));
    expect((await c.as(userAuth('alice')).request('GET', '/v2/')).status).to.equal(200);
  }).timeout(20_000);
});

describe('reader and pusher views of quarantined content', () => {
  let gw: TestGateway;
  let decision: AdmissionDecision = { outcome: 'admitted' };
  before(async () => {
    gw = await startAuthGateway('pglite', undefined, { admit: async () => decision });
  });
  after(async () => gw.stop());

  it('shows staged content to pushers and hides it from readers on every read endpoint', async () => {
    const c = new OciClient(gw.url);
    const pusher = c.as(userAuth('alice'));
    const reader = c.as(userAuth('reader'));
    decision = { outcome: 'admitted' };
    const admitted = await pusher.pushImage('team/q', 'stable');
    decision = { outcome: 'pending', waitingFor: ['signature'] };
    const staged = await pusher.pushImage('team/q', 'candidate');
    const stagedLayer = (staged.manifest.layers as Array<{ digest: string }>)[0].digest;
    const referrer = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.example.sig',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256('{}'), size: 2 }, layers: [],
      subject: { mediaType: OCI_MANIFEST, digest: admitted.digest, size: admitted.body.length },
    }));
    expect((await pusher.putManifest('team/q', sha256(referrer), referrer)).status).to.equal(201);
    decision = { outcome: 'pending', waitingFor: ['scan'] };
    await pusher.pushImage('team/only-staged', 'v1');

    const views = async (client: OciClient) => ({
      manifestByDigest: (await client.request('GET', `/v2/team/q/manifests/${staged.digest}`)).status,
      manifestHead: (await client.request('HEAD', `/v2/team/q/manifests/${staged.digest}`)).status,
      blob: (await client.request('GET', `/v2/team/q/blobs/${stagedLayer}`)).status,
      blobHead: (await client.request('HEAD', `/v2/team/q/blobs/${stagedLayer}`)).status,
      referrers: ((await (await client.request('GET', `/v2/team/q/referrers/${admitted.digest}`)).json()) as { manifests: unknown[] }).manifests.length,
      tags: ((await (await client.request('GET', '/v2/team/q/tags/list')).json()) as { tags: string[] }).tags,
      catalog: ((await (await client.request('GET', '/v2/_catalog')).json()) as { repositories: string[] }).repositories.includes('team/only-staged'),
      admitted: (await client.request('GET', '/v2/team/q/manifests/stable')).status,
      pendingTag: (await client.request('GET', '/v2/team/q/manifests/candidate')).status,
    });
    expect(await views(pusher)).to.deep.equal({
      manifestByDigest: 200, manifestHead: 200, blob: 200, blobHead: 200, referrers: 1, tags: ['candidate', 'stable'], catalog: true, admitted: 200, pendingTag: 200,
    });
    expect(await views(reader)).to.deep.equal({
      manifestByDigest: 404, manifestHead: 404, blob: 404, blobHead: 404, referrers: 0, tags: ['stable'], catalog: false, admitted: 200, pendingTag: 404,
    });
    // Nor can a reader take quarantined bytes by mounting them elsewhere.
    const bob = c.as(userAuth('bob'));
    expect((await bob.request('POST', `/v2/bob/steal/blobs/uploads/?mount=${stagedLayer}&from=team/q`)).status).to.equal(202);
  });
});
