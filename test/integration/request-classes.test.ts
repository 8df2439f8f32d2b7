/**
 * The server makes its requests and responses from classes whose prototypes are the app's own
 * (http/app.ts, requestClasses), so Express never changes a prototype per request (which made
 * V8's minor garbage collections keep most of what each request allocated).
 */
import { expect } from 'chai';
import http from 'node:http';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';

/** Prototype changes of requests and responses made while `work` runs. */
async function prototypeChanges(work: () => Promise<void>): Promise<number> {
  const original = Object.setPrototypeOf;
  let changes = 0;
  Object.setPrototypeOf = function (target: unknown, proto: object | null) {
    const message = target instanceof http.IncomingMessage || target instanceof http.ServerResponse;
    if (message && Object.getPrototypeOf(target) !== proto) changes++;
    return original(target, proto);
  };
  try {
    await work();
  } finally {
    Object.setPrototypeOf = original;
  }
  return changes;
}

describe('request and response classes', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startTestGateway('pglite');
  });
  after(async () => {
    await gw?.stop();
  });

  it('serve every route without a prototype change, with what Express adds to requests and responses', async () => {
    const answers: Array<[number, unknown]> = [];
    const changes = await prototypeChanges(async () => {
      const base = await fetch(`${gw.url}/v2/`);
      answers.push([base.status, await base.json()]);
      const upload = await fetch(`${gw.url}/v2/classes/test/blobs/uploads/`, { method: 'POST' });
      answers.push([upload.status, upload.headers.get('location')?.startsWith('/v2/classes/test/blobs/uploads/')]);
      // Express's query parser and res.json (through the error handler).
      const tags = await fetch(`${gw.url}/v2/classes/none/tags/list?n=5`);
      answers.push([tags.status, ((await tags.json()) as { errors: Array<{ code: string }> }).errors[0].code]);
      const health = await fetch(`${gw.url}/healthz`);
      answers.push([health.status, await health.json()]);
    });
    expect(answers).to.deep.equal([
      [200, {}],
      [202, true],
      [404, 'NAME_UNKNOWN'],
      [200, { status: 'ok' }],
    ]);
    expect(changes).to.equal(0);
  });
});
