/**
 * The bench's turn-taking: the rounds of the two registries alternate, one target runs at a
 * time, and a target that ends (or fails) early leaves the other to finish alone.
 */
import { expect } from 'chai';
import { Baton } from '../../bench/lib/suite.js';
import type { TargetKind } from '../../bench/lib/servers.js';

const ORDER: TargetKind[] = ['reference', 'gateway'];

/** Runs `body` for each target the way Suite.run does, logging what each does. */
async function runBoth(baton: Baton, body: (kind: TargetKind, turn: () => Promise<void>, log: (s: string) => void) => Promise<void>) {
  const log: string[] = [];
  await Promise.all(
    ORDER.map(async (kind) => {
      await baton.wait(kind);
      try {
        await body(kind, () => baton.pass(kind), (s) => log.push(`${kind[0]}:${s}`));
      } catch {
        log.push(`${kind[0]}:failed`);
      } finally {
        baton.leave(kind);
      }
    }),
  );
  return log;
}

describe('bench turn-taking (Baton)', () => {
  it('alternates the rounds of the two targets, the reference first, with a hand-over before each', async () => {
    let handOvers = 0;
    const baton = new Baton(ORDER, () => handOvers++);
    const log = await runBoth(baton, async (_kind, turn, note) => {
      note('setup');
      for (let r = 0; r < 3; r++) {
        await turn();
        note(`round${r}`);
        await new Promise((resolve) => setTimeout(resolve, 1)); // a round that awaits I/O keeps the turn
        note(`end${r}`);
      }
    });
    expect(log).to.deep.equal([
      'r:setup', 'g:setup',
      'r:round0', 'r:end0', 'g:round0', 'g:end0',
      'r:round1', 'r:end1', 'g:round1', 'g:end1',
      'r:round2', 'r:end2', 'g:round2', 'g:end2',
    ]);
    // setup → g, g → r before each round, and the reference's leaving hands the last round over.
    expect(handOvers).to.equal(7);
  });

  it('lets the other target finish alone when one returns early or fails', async () => {
    const baton = new Baton(ORDER, () => undefined);
    const log = await runBoth(baton, async (kind, turn, note) => {
      if (kind === 'reference') {
        await turn();
        note('round0');
        throw new Error('registry died');
      }
      for (let r = 0; r < 3; r++) {
        await turn();
        note(`round${r}`);
      }
    });
    expect(log).to.deep.equal(['r:round0', 'r:failed', 'g:round0', 'g:round1', 'g:round2']);
  });

  it('does not wait when a case runs against one target only', async () => {
    const baton = new Baton(ORDER, () => undefined);
    const log = await runBoth(baton, async (kind, turn, note) => {
      if (kind !== 'gateway') return;
      await turn();
      note('a');
      await turn();
      note('b');
    });
    expect(log).to.deep.equal(['g:a', 'g:b']);
  });
});
