import { expect } from 'chai';
import { AccessControl, ANONYMOUS, expandActions } from '../../src/auth/access.js';
import { parseHtpasswd, describeHash } from '../../src/auth/htpasswd.js';
import { Lockout } from '../../src/auth/lockout.js';
import { grantedActions, parseScopes } from '../../src/auth/tokens.js';

const acl = new AccessControl({
  admins: ['user:root', 'group:ops'],
  anonymousPull: ['public/**'],
  groups: { devs: ['alice', 'bob'], ops: ['carol'] },
  rules: [
    { subjects: ['group:devs'], repositories: ['team/*'], actions: ['push'] },
    { subjects: ['user:bob'], repositories: ['team/**'], actions: ['delete'] },
    { subjects: ['authenticated'], repositories: ['library/*'], actions: ['pull'] },
    { subjects: ['anonymous'], repositories: ['mirror/**'], actions: ['push'] },
  ],
});
const user = (name: string) => ({ kind: 'user' as const, name });
const list = (s: Set<string>) => [...s].sort();

describe('access rules', () => {
  it('expands admin to everything and push to pull', () => {
    expect(list(expandActions(['push']))).to.deep.equal(['pull', 'push']);
    expect(list(expandActions(['admin']))).to.deep.equal(['admin', 'delete', 'pull', 'push']);
  });

  it('grants through groups, with * for one level and ** for any depth', () => {
    expect(list(acl.actions(user('alice'), 'team/app'))).to.deep.equal(['pull', 'push']);
    expect(list(acl.actions(user('alice'), 'team/app/sub'))).to.deep.equal([]);
    expect(list(acl.actions(user('bob'), 'team/app/sub'))).to.deep.equal(['delete']);
    expect(list(acl.actions(user('mallory'), 'team/app'))).to.deep.equal([]);
  });

  it('gives authenticated users the authenticated rules and admins everything', () => {
    expect(list(acl.actions(user('mallory'), 'library/alpine'))).to.deep.equal(['pull']);
    expect(acl.isAdmin(user('carol'))).to.equal(true);
    expect(list(acl.actions(user('carol'), 'anything/at/all'))).to.deep.equal(['admin', 'delete', 'pull', 'push']);
    expect(acl.isAdmin(user('alice'))).to.equal(false);
  });

  it('never gives anonymous callers more than pull', () => {
    expect(list(acl.actions(ANONYMOUS, 'public/x/y'))).to.deep.equal(['pull']);
    expect(list(acl.actions(ANONYMOUS, 'mirror/x'))).to.deep.equal(['pull']);
    expect(list(acl.actions(ANONYMOUS, 'team/app'))).to.deep.equal([]);
    expect(acl.isAdmin(ANONYMOUS)).to.equal(false);
  });

  it('applies a robot\'s own scope', () => {
    const robot = { kind: 'robot' as const, name: 'ci', robotScope: { repositories: ['ci/**'], actions: ['push' as const] } };
    expect(list(acl.actions(robot, 'ci/a/b'))).to.deep.equal(['pull', 'push']);
    expect(list(acl.actions(robot, 'team/app'))).to.deep.equal([]);
  });
});

describe('token scopes', () => {
  it('parses scopes with host:port names and several per value', () => {
    expect(parseScopes(['repository:reg.example:5000/team/app:pull,push registry:catalog:*'])).to.deep.equal([
      { type: 'repository', name: 'reg.example:5000/team/app', actions: ['pull', 'push'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    expect(parseScopes(['repository(plugin):x:pull'])[0].type).to.equal('repository');
    expect(parseScopes(['garbage', 'a:b'])).to.deep.equal([]);
  });

  it('reads grants for exactly the named repository', () => {
    const access = [{ type: 'repository', name: 'a/b', actions: ['pull', 'bogus'] }, { type: 'repository', name: 'a/c', actions: ['*'] }];
    expect(list(grantedActions(access, 'a/b'))).to.deep.equal(['pull']);
    expect(list(grantedActions(access, 'a/c'))).to.deep.equal(['delete', 'pull', 'push']);
    expect(list(grantedActions(access, 'a/b/c'))).to.deep.equal([]);
  });
});

describe('htpasswd parsing', () => {
  it('accepts bcrypt entries and refuses weaker schemes, naming them', () => {
    const bcrypt = '$2y$05$' + 'a'.repeat(53);
    const users = parseHtpasswd(`ok:${bcrypt}\nmd5:$apr1$abc$def\nsha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n# comment\nbroken\n`);
    expect([...users.keys()]).to.deep.equal(['ok']);
    expect(describeHash('$apr1$x$y')).to.equal('APR1-MD5');
    expect(describeHash('{SHA}x')).to.equal('SHA-1');
    expect(describeHash('plaintext')).to.equal('an unknown or plain-text scheme');
  });
});

describe('lockout', () => {
  it('slows down after some failures and locks at the maximum until the lock expires', () => {
    let now = 0;
    const lockout = new Lockout({ slowdownAfter: 2, maxFailures: 4, windowSeconds: 60, lockSeconds: 10 }, () => now);
    const keys = ['principal:a', 'ip:1'];
    expect(lockout.state(keys)).to.deep.equal({ locked: false, delayMs: 0 });
    lockout.fail(keys);
    lockout.fail(keys);
    lockout.fail(keys);
    expect(lockout.state(keys)).to.deep.equal({ locked: false, delayMs: 250 });
    expect(lockout.fail(keys)).to.deep.equal(keys);
    expect(lockout.state(['principal:a'])).to.deep.equal({ locked: true, retryAfterSeconds: 10 });
    expect(lockout.state(['ip:1', 'principal:other'])).to.include({ locked: true });
    lockout.succeed('principal:a');
    expect(lockout.state(['principal:a']).locked).to.equal(true);
    now = 10_001;
    expect(lockout.state(keys)).to.deep.equal({ locked: false, delayMs: 0 });
  });

  it('forgets failures older than the window', () => {
    let now = 0;
    const lockout = new Lockout({ slowdownAfter: 1, maxFailures: 3, windowSeconds: 5, lockSeconds: 10 }, () => now);
    lockout.fail(['k']);
    lockout.fail(['k']);
    now = 6000;
    expect(lockout.fail(['k'])).to.deep.equal([]);
    expect(lockout.state(['k'])).to.deep.equal({ locked: false, delayMs: 0 });
  });
});
