/**
 * The gateway's node options (its V8 heap settings, see README "Performance") are given in
 * three places: `npm start`, the `gateway` bin's shebang and the Dockerfile's ENTRYPOINT.
 * They must not drift apart, or one way of starting it runs slower than the others.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gatewayNodeFlags } from '../../bench/lib/servers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('entry points', () => {
  it('start the gateway with the same node options: npm start, the bin, the container and the bench', () => {
    const fromStart = gatewayNodeFlags(ROOT);
    expect(fromStart).to.include('--initial-old-space-size=128');
    const shebang = readFileSync(path.join(ROOT, 'src', 'main.ts'), 'utf8').split('\n')[0] as string;
    expect(shebang.startsWith('#!/usr/bin/env -S node')).to.equal(true);
    expect(shebang.split(/\s+/).filter((w) => w.startsWith('--'))).to.deep.equal(fromStart);
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'))?.[1];
    const words = JSON.parse(entrypoint ?? '[]') as string[];
    expect(words.filter((w) => w.startsWith('--'))).to.deep.equal(fromStart);
  });
});
