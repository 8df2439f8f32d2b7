/** TLS serving, development certificates, forwarded headers from trusted proxies, and the users CLI. */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import bcrypt from 'bcryptjs';
import { makeCertificates, writeCertificates } from '../../src/auth/certs.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { startAuthGateway } from '../helpers/auth.js';
import { SOCKET_INGEST_MIN_BYTES } from '../../src/storage/socket-ingest.js';

const run = promisify(execFile);

function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    https.get(url, { ca }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

describe('TLS', () => {
  let gw: TestGateway;
  let dir: string;
  let ca: string;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'certs-'));
    const [caFile, , certFile, keyFile] = writeCertificates(dir, makeCertificates(['localhost', '127.0.0.1'], 30));
    ca = readFileSync(caFile, 'utf8');
    gw = await startTestGateway('pglite', {
      config: (c) => {
        c.http.tlsCert = certFile;
        c.http.tlsKey = keyFile;
      },
    });
  });
  after(async () => {
    await gw.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('makes a CA and a server certificate for the names asked for', () => {
    const server = new X509Certificate(readFileSync(path.join(dir, 'server.crt')));
    const authority = new X509Certificate(ca);
    expect(server.subjectAltName).to.equal('DNS:localhost, IP Address:127.0.0.1');
    expect(server.verify(authority.publicKey)).to.equal(true);
    expect(authority.ca).to.equal(true);
    expect(server.ca).to.equal(false);
    expect((readFileSync(path.join(dir, 'server.key')).toString())).to.match(/BEGIN (RSA )?PRIVATE KEY/);
  });

  it('serves HTTPS that a client trusting the CA accepts', async () => {
    expect(gw.url).to.match(/^https:\/\//);
    const res = await httpsGet(`${gw.url}/v2/`, ca);
    expect(res.status).to.equal(200);
  });

  it('takes a large push over HTTPS through Node, not from the socket (which carries TLS records), and keeps the connection', async () => {
    const data = randomBytes(SOCKET_INGEST_MIN_BYTES + 1);
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    const agent = new https.Agent({ ca, keepAlive: true, maxSockets: 1 });
    try {
      const answer = await new Promise<{ status: number; connection?: string }>((resolve, reject) => {
        const req = https.request(`${gw.url}/v2/tls/push/blobs/uploads/?digest=${digest}`, {
          method: 'POST',
          agent,
          headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(data.length) },
        });
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
        });
        req.on('error', reject);
        req.end(data);
      });
      expect(answer).to.deep.equal({ status: 201, connection: 'keep-alive' });
    } finally {
      agent.destroy();
    }
    const pulled = await new Promise<Buffer>((resolve, reject) => {
      https.get(`${gw.url}/v2/tls/push/blobs/${digest}`, { ca }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => resolve(Buffer.concat(chunks)));
      }).on('error', reject);
    });
    expect(pulled.equals(data)).to.equal(true);
  });

  it('refuses TLS older than 1.2', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port: gw.port, ca, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', servername: 'localhost' });
      socket.on('secureConnect', () => {
        resolve(`connected with ${socket.getProtocol()}`);
        socket.destroy();
      });
      socket.on('error', (err) => resolve(`refused: ${err.message}`));
    });
    expect(outcome).to.match(/^refused/);
  });

  it('negotiates TLS 1.2 with a forward-secret AEAD suite', async () => {
    const cipher = await new Promise<tls.CipherNameAndProtocol>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port: gw.port, ca, maxVersion: 'TLSv1.2', servername: 'localhost' }, () => {
        resolve(socket.getCipher());
        socket.destroy();
      });
      socket.on('error', reject);
    });
    expect(cipher.version).to.equal('TLSv1.2');
    expect(cipher.name).to.match(/^ECDHE-.*(GCM|CHACHA20)/);
  });
});

describe('forwarded headers', () => {
  it('believe X-Forwarded-Proto and -Host only from configured proxies', async () => {
    const trusted = await startAuthGateway('pglite', (c) => void (c.http.trustedProxies = ['127.0.0.1']));
    const untrusted = await startAuthGateway('pglite');
    try {
      const headers = { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': 'registry.example.test' };
      const a = await fetch(`${trusted.url}/v2/`, { headers });
      expect(a.headers.get('www-authenticate')).to.include('realm="https://registry.example.test/auth/token"');
      const b = await fetch(`${untrusted.url}/v2/`, { headers });
      expect(b.headers.get('www-authenticate')).to.include(`realm="${untrusted.url}/auth/token"`);
    } finally {
      await trusted.stop();
      await untrusted.stop();
    }
  });
});

describe('gateway users add', () => {
  it('reads the password from stdin, stores bcrypt, and refuses short passwords', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'users-'));
    const config = path.join(dir, 'gateway.yaml');
    writeFileSync(config, `storage:\n  root: ${dir}\n`);
    const cli = ['--import', 'tsx', path.resolve('src/main.ts'), 'users', 'add', 'carol', '-c', config];
    const child = run(process.execPath, cli, { env: { ...process.env, GATEWAY_STORAGE_ROOT: dir } });
    child.child.stdin!.end('carol-secret-1\n');
    const { stdout } = await child;
    expect(stdout).to.match(/created user carol/);
    const line = readFileSync(path.join(dir, 'auth', 'htpasswd'), 'utf8').trim();
    const [name, hash] = line.split(':');
    expect(name).to.equal('carol');
    expect(hash).to.match(/^\$2[aby]\$10\$/);
    expect(await bcrypt.compare('carol-secret-1', hash)).to.equal(true);

    const short = run(process.execPath, cli, { env: { ...process.env, GATEWAY_STORAGE_ROOT: dir } });
    short.child.stdin!.end('short\n');
    let failed = '';
    await short.catch((err: { stderr: string }) => (failed = err.stderr));
    expect(failed).to.match(/at least 8 characters/);
    rmSync(dir, { recursive: true, force: true });
  }).timeout(30_000);
});

describe('administration commands with bad arguments', () => {
  it('stop with one line naming the option and what it takes, and change nothing', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'cli-args-'));
    const cli = (...args: string[]) => run(process.execPath, ['--import', 'tsx', path.resolve('src/main.ts'), ...args], { env: { ...process.env, GATEWAY_STORAGE_ROOT: dir } });
    const failure = async (...args: string[]) => {
      const child = cli(...args);
      child.child.stdin!.end('a-long-enough-password\n');
      const err = await child.then(
        () => null,
        (e: { code: number; stderr: string }) => e,
      );
      expect(err, args.join(' ')).to.not.equal(null);
      expect(err!.code, args.join(' ')).to.equal(1);
      expect(err!.stderr.trim().split('\n'), args.join(' ')).to.have.length(1);
      return err!.stderr;
    };
    try {
      // A typo in a robot's lifetime used to create a robot that never expires.
      expect(await failure('robots', 'add', 'ci', '-r', 'team/**', '--expires-in-days', 'thirty')).to.match(/--expires-in-days <n>' argument 'thirty' is invalid/);
      expect(await failure('robots', 'add', 'ci', '-r', 'team/**', '--expires-in-days', '0')).to.match(/from 1 to 3650/);
      expect(await failure('robots', 'add', 'ci', '-r', 'team/**', '--actions', 'pull,fly')).to.match(/Unknown action fly/);
      expect(await failure('audit', 'verify', '--from', 'first')).to.match(/--from <seq>' argument 'first' is invalid/);
      expect(await failure('audit', 'export', '--since', 'yesterday')).to.match(/ISO 8601/);
      expect(await failure('users', 'add', 'bad name')).to.match(/invalid user name "bad name"/);
      const { stdout } = await cli('robots', 'list');
      expect(JSON.parse(stdout)).to.deep.equal([]);
      const created = cli('robots', 'add', 'ci', '-r', 'team/**', '--expires-in-days', '30', '--actions', 'pull');
      const robot = JSON.parse((await created).stdout) as { actions: string[]; expiresAt: string };
      expect(robot.actions).to.deep.equal(['pull']);
      expect(new Date(robot.expiresAt).getTime() - Date.now()).to.be.closeTo(30 * 86_400_000, 60_000);
      // Only the command that changed something left a record, naming the local account.
      const exported = (await cli('audit', 'export')).stdout.trim().split('\n').map((line) => JSON.parse(line) as { action: string; principal: string; detail: { robot?: string } });
      expect(exported.map((r) => [r.action, r.principal, r.detail.robot])).to.deep.equal([['robot.create', `cli:${userInfo().username}`, 'ci']]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }).timeout(60_000);
});

describe('commands that open the embedded database', () => {
  it('refuse, in one line, a directory a running gateway holds, and change nothing', async () => {
    const gw = await startTestGateway('pglite');
    try {
      const cli = (...args: string[]) => run(process.execPath, ['--import', 'tsx', path.resolve('src/main.ts'), ...args], { env: { ...process.env, GATEWAY_STORAGE_ROOT: gw.root } });
      for (const args of [['robots', 'add', 'ci', '-r', 'team/**'], ['audit', 'verify']]) {
        const err = await cli(...args).then(
          () => null,
          (e: { code: number; stderr: string }) => e,
        );
        expect(err, args.join(' ')).to.not.equal(null);
        expect(err!.code).to.equal(1);
        expect(err!.stderr.trim().split('\n')).to.have.length(1);
        expect(err!.stderr).to.contain(`is in use by process ${process.pid}`);
      }
      // The gateway still serves from it.
      expect((await fetch(`${gw.url}/v2/`)).status).to.equal(200);
      expect((await gw.db.query('SELECT count(*)::int AS n FROM robots'))[0]).to.deep.equal({ n: 0 });
    } finally {
      await gw.stop();
    }
  }).timeout(60_000);
});
