/**
 * `/gateway/v1/admissions`: verdicts for CI and people. Readers (pull) see admitted
 * subjects; pushers also see pending and denied ones, with every rule result; only
 * administrators re-evaluate.
 */
import express, { type Request, type Response, type Router } from 'express';
import type { AdmissionRecord, AdmissionState, AdmissionStore } from '../db/admissions.js';
import type { Gate } from '../admission/gate.js';
import { RegistryError } from '../registry/errors.js';
import { isValidDigest, isValidName } from '../registry/names.js';
import { usernameOf } from '../auth/authenticator.js';
import type { Guard } from './auth.js';

/** Longest single long-poll; clients that want longer ask again (the CLI does). */
export const MAX_WAIT_SECONDS = 60;
const STATES: AdmissionState[] = ['pending', 'admitted', 'denied', 'expired'];

export function admissionJson(record: AdmissionRecord) {
  return {
    repository: record.repository,
    digest: record.digest,
    mediaType: record.mediaType,
    state: record.state,
    tags: record.tags,
    policy: record.policy,
    results: record.results,
    reasons: record.reasons,
    waitingFor: record.waitingFor,
    warnings: record.warnings,
    evidence: record.evidence,
    pushedBy: record.pushedBy,
    admittedWith: record.admittedWith,
    evaluations: record.evaluations,
    createdAt: record.createdAt.toISOString(),
    updatedAt: record.updatedAt.toISOString(),
    decidedAt: record.decidedAt?.toISOString() ?? null,
  };
}

function badRequest(message: string): RegistryError {
  return new RegistryError('UNSUPPORTED', message, { status: 400 });
}

function stringParam(req: Request, name: string): string | undefined {
  const value = req.query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw badRequest(`${name} must be given once`);
  return value;
}

function repositoryParam(req: Request): string | undefined {
  const repository = stringParam(req, 'repository');
  if (repository !== undefined && !isValidName(repository)) throw badRequest(`repository ${JSON.stringify(repository.slice(0, 256))} is not a valid name`);
  return repository;
}

function digestParam(value: string): string {
  if (!isValidDigest(value)) throw new RegistryError('DIGEST_INVALID', `${JSON.stringify(value.slice(0, 200))} is not a digest`);
  return value;
}

/** `60`, `60s`, `2m` → seconds, at most MAX_WAIT_SECONDS. */
export function parseWait(value: string | undefined): number {
  if (value === undefined || value === '') return 0;
  const match = /^(\d{1,6})(s|m)?$/.exec(value.trim());
  if (!match) throw badRequest(`wait must be seconds like 30, 30s or 2m, got ${JSON.stringify(value.slice(0, 32))}`);
  const seconds = Number(match[1]) * (match[2] === 'm' ? 60 : 1);
  return Math.min(seconds, MAX_WAIT_SECONDS);
}

function intParam(req: Request, name: string, fallback: number, max: number): number {
  const value = stringParam(req, name);
  if (value === undefined) return fallback;
  if (!/^\d{1,12}$/.test(value)) throw badRequest(`${name} must be a whole number`);
  return Math.min(Number(value), max);
}

export function admissionsRouter(guard: Guard, admissions: AdmissionStore, gate: Gate): Router {
  const router = express.Router();

  /** Whether the caller may see this admission: pull for admitted ones, push for the rest. */
  const visibleTo = async (req: Request, res: Response) => {
    const cache = new Map<string, Set<string>>();
    return async (record: AdmissionRecord) => {
      let rights = cache.get(record.repository);
      if (!rights) {
        rights = await guard.rightsOn(req, res, record.repository);
        cache.set(record.repository, rights);
      }
      return record.state === 'admitted' ? rights.has('pull') : rights.has('push');
    };
  };

  router.get('/admissions', async (req, res) => {
    res.locals.route = 'admissions';
    await guard.requireLogin(req, res);
    const state = stringParam(req, 'state');
    if (state !== undefined && !STATES.includes(state as AdmissionState)) throw badRequest(`state must be one of ${STATES.join(', ')}`);
    const digest = stringParam(req, 'digest');
    const limit = Math.max(1, intParam(req, 'limit', 100, 1000));
    const before = stringParam(req, 'before') === undefined ? undefined : intParam(req, 'before', 0, Number.MAX_SAFE_INTEGER);
    const visible = await visibleTo(req, res);
    const records = await admissions.list({
      repository: repositoryParam(req),
      digest: digest === undefined ? undefined : digestParam(digest),
      state: state as AdmissionState | undefined,
      before,
      limit,
    });
    const shown: AdmissionRecord[] = [];
    for (const record of records) if (await visible(record)) shown.push(record);
    res.json({
      admissions: shown.map(admissionJson),
      next: records.length === limit ? records[records.length - 1].id : null,
    });
  });

  router.get('/admissions/:digest', async (req, res) => {
    res.locals.route = 'admissions';
    await guard.requireLogin(req, res);
    const digest = digestParam(String(req.params.digest));
    const repository = repositoryParam(req);
    const waitSeconds = parseWait(stringParam(req, 'wait'));
    const visible = await visibleTo(req, res);
    const found: AdmissionRecord[] = [];
    for (const record of await admissions.list({ repository, digest, limit: 100 })) if (await visible(record)) found.push(record);
    if (found.length === 0) {
      throw new RegistryError('MANIFEST_UNKNOWN', `no admission for ${digest}${repository ? ` in ${repository}` : ''} that you may see`, {
        status: 404,
        detail: { digest, repository: repository ?? null },
      });
    }
    if (!repository) {
      res.json({ admissions: found.map(admissionJson) });
      return;
    }
    let record = found[0];
    if (record.state === 'pending' && waitSeconds > 0) {
      record = (await gate.waitFor(repository, digest, waitSeconds * 1000)) ?? record;
    }
    res.json(admissionJson(record));
  });

  router.post('/admissions/:digest/re-evaluate', async (req, res) => {
    res.locals.route = 'admissions';
    const admin = await guard.requireAdmin(req, res);
    const digest = digestParam(String(req.params.digest));
    const repository = repositoryParam(req);
    if (!repository) throw badRequest('repository is required');
    if (!(await admissions.get(repository, digest))) {
      throw new RegistryError('MANIFEST_UNKNOWN', `no admission for ${digest} in ${repository}`, { status: 404 });
    }
    const outcome = await gate.reevaluate(repository, digest, {
      principal: usernameOf(admin.principal) || 'anonymous',
      requestId: (res.locals.requestId as string) ?? null,
    });
    res.json({ ...admissionJson(outcome.record), decision: outcome.decision });
  });

  router.post('/rescans', async (req, res) => {
    res.locals.route = 'rescans';
    const admin = await guard.requireAdmin(req, res);
    const digest = stringParam(req, 'digest');
    const reports = await gate.rescan(
      { repository: repositoryParam(req), digest: digest === undefined ? undefined : digestParam(digest) },
      { principal: usernameOf(admin.principal) || 'anonymous', requestId: (res.locals.requestId as string) ?? null },
    );
    res.json({ rescanned: reports });
  });

  return router;
}
