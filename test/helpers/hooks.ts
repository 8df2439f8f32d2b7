/** Mocha root hooks: shared resources that live for the whole run. */
import { stopCluster } from './postgres.js';

export const mochaHooks = {
  async afterAll(this: Mocha.Context) {
    this.timeout(30_000);
    await stopCluster();
  },
};
