/** The gateway's own API under /gateway/v1: robot accounts (administrators only). */
import express, { type Request, type Response, type Router } from 'express';
import { Ajv } from 'ajv';
import type { Logger } from 'pino';
import { RobotError, type Robot, type RobotActor, type RobotStore } from '../auth/robots.js';
import { RegistryError } from '../registry/errors.js';
import type { Guard } from './auth.js';
import { usernameOf } from '../auth/authenticator.js';

const ajv = new Ajv({ allErrors: true });
const validateNewRobot = ajv.compile<{
  name: string;
  repositories: string[];
  actions: Array<'pull' | 'push' | 'delete'>;
  description?: string;
  expiresInDays?: number;
}>({
  type: 'object',
  additionalProperties: false,
  required: ['name', 'repositories', 'actions'],
  properties: {
    name: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' },
    // No U+0000: PostgreSQL text cannot hold it.
    repositories: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1, maxLength: 256, pattern: '^[^\\u0000]+$' } },
    actions: { type: 'array', minItems: 1, items: { enum: ['pull', 'push', 'delete'] } },
    description: { type: 'string', maxLength: 1024, pattern: '^[^\\u0000]*$' },
    expiresInDays: { type: 'integer', minimum: 1, maximum: 3650 },
  },
});
const validateRotate = ajv.compile<{ expiresInDays?: number }>({
  type: 'object',
  additionalProperties: false,
  properties: { expiresInDays: { type: 'integer', minimum: 1, maximum: 3650 } },
});

export function robotJson(robot: Robot) {
  return {
    name: robot.name,
    username: robot.username,
    repositories: robot.repositories,
    actions: robot.actions,
    description: robot.description,
    createdAt: robot.createdAt.toISOString(),
    rotatedAt: robot.rotatedAt.toISOString(),
    expiresAt: robot.expiresAt?.toISOString() ?? null,
  };
}

export function expiryFromDays(days: number | undefined): Date | null {
  return days ? new Date(Date.now() + days * 86_400_000) : null;
}

function invalid(errors: typeof validateNewRobot.errors): RegistryError {
  const message = (errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`).join('; ');
  return new RegistryError('MANIFEST_INVALID', `invalid request body: ${message}`, { status: 400 });
}

function robotFailure(err: unknown): never {
  if (err instanceof RobotError) {
    const status = err.code === 'exists' ? 409 : err.code === 'unknown' ? 404 : 400;
    throw new RegistryError(err.code === 'unknown' ? 'NAME_UNKNOWN' : 'DENIED', err.message, { status });
  }
  throw err;
}

export function adminRouter(guard: Guard, robots: RobotStore): Router {
  const router = express.Router();
  router.use('/robots', express.json({ limit: '64kb' }));
  router.use('/robots', async (req: Request, res: Response, next) => {
    res.locals.route = 'admin';
    res.locals.admin = await guard.requireAdmin(req, res);
    next();
  });
  /** The administrator making a change, recorded with it; the change is logged once done. */
  const actor = (res: Response): RobotActor => ({ principal: usernameOf(res.locals.admin.principal) || 'anonymous', requestId: res.locals.requestId as string });
  const logged = (res: Response, event: string, robot: string) => (res.locals.log as Logger).info({ event, robot, by: actor(res).principal }, event);

  router.get('/robots', async (_req, res) => {
    res.json({ robots: (await robots.list()).map(robotJson) });
  });
  router.post('/robots', async (req, res) => {
    if (!validateNewRobot(req.body)) throw invalid(validateNewRobot.errors);
    const body = req.body;
    const created = await robots
      .create({ ...body, expiresAt: expiryFromDays(body.expiresInDays) }, actor(res))
      .catch(robotFailure);
    logged(res, 'robot.create', created.robot.name);
    res.status(201).json({ ...robotJson(created.robot), secret: created.secret });
  });
  router.post('/robots/:name/rotate', async (req, res) => {
    const body = req.body ?? {};
    if (!validateRotate(body)) throw invalid(validateRotate.errors);
    const rotated = await robots
      .rotate(String(req.params.name), actor(res), body.expiresInDays ? expiryFromDays(body.expiresInDays) : undefined)
      .catch(robotFailure);
    logged(res, 'robot.rotate', rotated.robot.name);
    res.json({ ...robotJson(rotated.robot), secret: rotated.secret });
  });
  router.delete('/robots/:name', async (req, res) => {
    await robots.remove(String(req.params.name), actor(res)).catch(robotFailure);
    logged(res, 'robot.delete', String(req.params.name));
    res.status(204).end();
  });
  return router;
}
