import { expect } from 'chai';
import { RegistryError } from '../../src/registry/errors.js';
import { assertName, fallbackTag, isValidTag, parseDigest, parseReference } from '../../src/registry/names.js';

const HEX = 'a'.repeat(64);

describe('names, tags and digests', () => {
  it('accepts repository names of the OCI grammar', () => {
    for (const name of ['a', 'library/alpine', 'my-org/my.app_1/x__y', 'a0/b-c--d']) expect(assertName(name)).to.equal(name);
  });

  it('rejects names outside the grammar with NAME_INVALID', () => {
    for (const name of ['', 'UPPER', '../etc', 'a//b', '/a', 'a/', 'a/../b', '-a', 'a..b', 'a'.repeat(201), 'a%2f..']) {
      expect(() => assertName(name), name).to.throw(RegistryError).with.property('code', 'NAME_INVALID');
    }
  });

  it('accepts tags up to 128 characters and rejects others', () => {
    expect(isValidTag('latest')).to.equal(true);
    expect(isValidTag('_x.Y-1')).to.equal(true);
    expect(isValidTag('a'.repeat(128))).to.equal(true);
    expect(isValidTag('a'.repeat(129))).to.equal(false);
    expect(isValidTag('.hidden')).to.equal(false);
    expect(isValidTag('-x')).to.equal(false);
    expect(isValidTag('a:b')).to.equal(false);
  });

  it('parses sha256 and sha512 digests', () => {
    expect(parseDigest(`sha256:${HEX}`)).to.deep.equal({ algorithm: 'sha256', hex: HEX, value: `sha256:${HEX}` });
    expect(parseDigest(`sha512:${'b'.repeat(128)}`).algorithm).to.equal('sha512');
  });

  it('rejects malformed or unsupported digests with DIGEST_INVALID, never a crash', () => {
    for (const bad of ['sha256:xyz', `sha256:${'A'.repeat(64)}`, `sha256:${HEX}0`, `md5:${HEX}`, 'sha256', ':abc', `sha256:../${HEX}`]) {
      expect(() => parseDigest(bad), bad).to.throw(RegistryError).with.property('code', 'DIGEST_INVALID');
    }
  });

  it('tells tags from digests in references', () => {
    expect(parseReference('v1')).to.deep.equal({ kind: 'tag', tag: 'v1' });
    expect(parseReference(`sha256:${HEX}`).kind).to.equal('digest');
    expect(() => parseReference('bad tag')).to.throw(RegistryError);
  });

  it('names the referrers fallback tag <alg>-<hex>', () => {
    expect(fallbackTag(parseDigest(`sha256:${HEX}`))).to.equal(`sha256-${HEX}`);
    expect(fallbackTag(parseDigest(`sha512:${'c'.repeat(128)}`))).to.equal(`sha512-${'c'.repeat(64)}`);
  });
});
