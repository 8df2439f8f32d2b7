/** The policy directory: what is loaded, selection, the default, all-or-nothing reloads, watching. */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { DENY, PolicyLoadError, PolicySet, denyPolicy } from '../../src/policy/loader.js';
import { evaluate } from '../../src/policy/evaluate.js';
import type { Evidence, LoadedPolicy } from '../../src/policy/types.js';
import { eventually } from '../helpers/wait.js';

const policy = (name: string, repositories: string[], priority?: number) => ({
  name, repositories, mode: 'enforce', ...(priority !== undefined ? { priority } : {}), rules: [{ id: 'size', type: 'manifest', maxSizeBytes: 10 }],
});

function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

const names = (set: PolicySet) => set.policies().map((p) => p.policy.name).sort();

describe('policy directory loading', () => {
  let dir: string;
  const write = (file: string, doc: unknown) => writeFileSync(path.join(dir, file), typeof doc === 'string' ? doc : JSON.stringify(doc, null, 2));
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'policies-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('loads every top-level *.json but the schema, and nothing below, hidden or of another extension', async () => {
    write('prod.json', policy('prod', ['prod/**']));
    write('policy.schema.json', '{"$schema": "not a policy"}');
    write('notes.txt', 'not JSON');
    write('prod.json.bak', '{');
    symlinkSync('nobody@host.1234', path.join(dir, '.#prod.json')); // an Emacs lock file: a dangling link
    for (const sub of ['examples', 'keys']) {
      mkdirSync(path.join(dir, sub));
      writeFileSync(path.join(dir, sub, 'broken.json'), '{');
    }
    const set = new PolicySet(dir, DENY);
    await set.load();
    expect(names(set)).to.deep.equal(['prod']);
  });

  it('hashes each file\'s exact bytes, so that a decision names the version it was made under', async () => {
    write('prod.json', policy('prod', ['prod/**']));
    const set = new PolicySet(dir, DENY);
    const [loaded] = await set.load();
    const bytes = readFileSync(path.join(dir, 'prod.json'));
    expect(loaded).to.deep.include({ file: path.join(dir, 'prod.json'), hash: `sha256:${createHash('sha256').update(bytes).digest('hex')}` });
    write('prod.json', JSON.stringify(policy('prod', ['prod/**'])));
    await set.load();
    expect(set.select('prod/app')!.hash).to.not.equal(loaded.hash);
  });

  it('follows symbolic links, as a Kubernetes ConfigMap mounts its files', async () => {
    mkdirSync(path.join(dir, '..2026_01_01'));
    writeFileSync(path.join(dir, '..2026_01_01', 'prod.json'), JSON.stringify(policy('prod', ['prod/**'])));
    symlinkSync('..2026_01_01', path.join(dir, '..data'));
    symlinkSync(path.join('..data', 'prod.json'), path.join(dir, 'prod.json'));
    const set = new PolicySet(dir, DENY);
    await set.load();
    expect(names(set)).to.deep.equal(['prod']);
  });

  it('refuses two files with the same policy name, naming both', async () => {
    write('a.json', policy('prod', ['prod/**']));
    write('b.json', policy('prod', ['other/**']));
    const error = await new PolicySet(dir, DENY).load().catch((e: unknown) => e);
    expect((error as PolicyLoadError).problems).to.deep.equal([
      { file: path.join(dir, 'b.json'), pointer: '/name', message: `policy name "prod" is also used by ${path.join(dir, 'a.json')}` },
    ]);
  });

  it('fails start-up with every problem of every file listed', async () => {
    write('a.json', { ...policy('a', ['**']), mode: 'block' });
    write('b.json', '{ "name": ');
    write('c.json', { ...policy('c', ['**']), rules: [{ id: 'x', type: 'manifest' }] });
    const error = (await new PolicySet(dir, DENY).load().catch((e: unknown) => e)) as PolicyLoadError;
    expect(error).to.be.instanceOf(PolicyLoadError);
    expect(error.problems.map((p) => `${path.basename(p.file)} ${p.pointer}`)).to.deep.equal(['a.json /mode', 'b.json /', 'c.json /rules/0']);
    for (const p of error.problems) expect(error.message).to.include(`${p.file}: ${p.pointer}: ${p.message}`);
  });

  describe('selection', () => {
    let set: PolicySet;
    beforeEach(async () => {
      write('team-one.json', policy('team-one', ['team/*']));
      write('team-all.json', policy('team-all', ['team/**']));
      write('b-hot.json', policy('b-hot', ['team/hot/**'], 10));
      write('a-hot.json', policy('a-hot', ['team/hot/**'], 10));
      write('low.json', policy('low', ['**'], -1000));
      set = new PolicySet(dir, DENY);
      await set.load();
    });

    it('takes the highest priority, then the first name in byte order', () => {
      expect(set.select('team/hot/app')!.policy.name).to.equal('a-hot');
      expect(set.select('elsewhere/app')!.policy.name).to.equal('low');
    });

    it('matches * within one path segment and ** across segments, as access rules do', () => {
      expect(set.select('team/app')!.policy.name).to.equal('team-all'); // both match at priority 0: team-all < team-one
      rmSync(path.join(dir, 'team-all.json'));
      return set.load().then(() => {
        expect(set.select('team/app')!.policy.name).to.equal('team-one');
        expect(set.select('team/app/sub')!.policy.name).to.equal('low');
        expect(set.select('team')!.policy.name).to.equal('low');
      });
    });
  });

  describe('the default for repositories no policy names', () => {
    const evidence = (repository: string): Evidence => ({
      repository,
      subject: { digest: `sha256:${'a'.repeat(64)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: null, totalSize: 1, annotations: {}, labels: {}, platforms: [], children: [] },
      items: [],
      extra: {},
    });

    it('denies with the built-in deny policy, whose hash never changes', async () => {
      write('prod.json', policy('prod', ['prod/**']));
      const set = new PolicySet(dir, DENY);
      await set.load();
      const applied = set.resolve('other/app');
      expect(applied.policy.name).to.equal('deny');
      expect(applied.hash).to.equal(denyPolicy().hash).and.match(/^sha256:[a-f0-9]{64}$/);
      const decision = evaluate(applied, evidence('other/app'), new Date());
      expect(decision).to.deep.include({ outcome: 'denied', reasons: ['no-policy: no policy applies to repository other/app and the default is deny'] });
    });

    it('applies a named loaded policy, or the default given by the caller', async () => {
      write('prod.json', policy('prod', ['prod/**']));
      write('fallback.json', { ...policy('fallback', ['nothing/*']), mode: 'warn' });
      const set = new PolicySet(dir, 'fallback');
      await set.load();
      expect(set.resolve('other/app').policy.name).to.equal('fallback');
      expect(set.resolve('prod/app').policy.name).to.equal('prod');
      expect(set.resolve('other/app', DENY).policy.name).to.equal('deny');
      expect(set.resolve('other/app', 'prod').policy.name).to.equal('prod');
      expect(set.resolve('other/app', 'no-such-policy').policy.name).to.equal('deny');
    });

    it('refuses to load when the named default is not defined', async () => {
      write('prod.json', policy('prod', ['prod/**']));
      const error = (await new PolicySet(dir, 'default').load().catch((e: unknown) => e)) as PolicyLoadError;
      expect(error.problems).to.deep.equal([
        { file: dir, pointer: '/', message: 'policy.defaultPolicy names "default", which no file here defines (use "deny" or add it)' },
      ]);
    });
  });

  describe('reloads', () => {
    it('keep the previous set when any file is invalid, and log every problem at error level', async () => {
      const { logger, lines } = capturingLogger();
      write('a.json', policy('a', ['a/**']));
      const set = new PolicySet(dir, DENY, logger);
      await set.load();
      write('b.json', policy('b', ['b/**']));
      write('c.json', '{');
      expect(await set.reload()).to.equal(false);
      expect(names(set)).to.deep.equal(['a']);
      expect(set.select('b/app')).to.equal(null);
      const failure = lines.find((l) => l.level === 50)!;
      expect(failure.msg).to.equal('policy reload failed; the previous policies stay in force');
      expect((failure.problems as Array<{ file: string }>).map((p) => path.basename(p.file))).to.deep.equal(['c.json']);
      rmSync(path.join(dir, 'c.json'));
      expect(await set.reload()).to.equal(true);
      expect(names(set)).to.deep.equal(['a', 'b']);
    });

    it('tell the caller each loaded set (to audit it), and a failed audit keeps the previous set', async () => {
      const audited: Array<Array<{ name: string; file?: string; hash: string }>> = [];
      let auditWorks = true;
      write('a.json', policy('a', ['a/**']));
      const set = new PolicySet(dir, DENY, undefined, (loaded: LoadedPolicy[]) => {
        if (!auditWorks) throw new Error('audit database unreachable');
        audited.push(loaded.map((p) => ({ name: p.policy.name, file: p.file, hash: p.hash })));
      });
      await set.load();
      expect(audited).to.have.length(1);
      expect(audited[0][0]).to.include({ name: 'a', file: path.join(dir, 'a.json') });
      write('b.json', policy('b', ['b/**']));
      auditWorks = false;
      expect(await set.reload()).to.equal(false);
      expect(names(set)).to.deep.equal(['a']);
      auditWorks = true;
      expect(await set.reload()).to.equal(true);
      expect(audited.map((set) => set.map((p) => p.name))).to.deep.equal([['a'], ['a', 'b']]);
    });

    it('run one at a time, so that a slow load never replaces a newer set', async () => {
      let calls = 0;
      write('a.json', policy('a', ['a/**']));
      const set = new PolicySet(dir, DENY, undefined, async () => {
        if (++calls === 1) await new Promise((r) => setTimeout(r, 100));
      });
      const first = set.load();
      write('b.json', policy('b', ['b/**']));
      const second = set.load();
      await Promise.all([first, second]);
      expect(names(set)).to.deep.equal(['a', 'b']);
    });
  });

  describe('watching', () => {
    it('picks up a changed file, ignores a broken save, and applies the fix', async () => {
      write('a.json', policy('a', ['team/**']));
      const set = new PolicySet(dir, DENY, pino({ level: 'silent' }));
      await set.load();
      set.watch();
      try {
        write('a.json', policy('a', ['other/**']));
        await eventually(() => set.select('other/x') !== null, 'the changed file');
        write('a.json', '{ "name": "a", ');
        await new Promise((r) => setTimeout(r, 400));
        expect(set.select('other/x')?.policy.name).to.equal('a');
        write('a.json', policy('a', ['third/**']));
        await eventually(() => set.select('third/x') !== null, 'the fixed file');
      } finally {
        set.close();
      }
    });

    it('follows a ConfigMap update, which swaps the ..data link', async () => {
      const version = (name: string, repositories: string[]) => {
        mkdirSync(path.join(dir, name));
        writeFileSync(path.join(dir, name, 'prod.json'), JSON.stringify(policy('prod', repositories)));
      };
      version('..v1', ['v1/**']);
      symlinkSync('..v1', path.join(dir, '..data'));
      symlinkSync(path.join('..data', 'prod.json'), path.join(dir, 'prod.json'));
      const set = new PolicySet(dir, DENY);
      await set.load();
      set.watch();
      try {
        version('..v2', ['v2/**']);
        symlinkSync('..v2', path.join(dir, '..data_tmp'));
        renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
        await eventually(() => set.select('v2/app') !== null, 'the new ConfigMap version');
        expect(set.select('v1/app')).to.equal(null);
      } finally {
        set.close();
      }
    });
  });
});
