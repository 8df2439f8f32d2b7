/** `GET /gateway/v1/audit`: the audit trail for administrators, filtered and paged. */
import express, { type Request, type Router } from 'express';
import type { AuditFilter, AuditLog } from '../audit/log.js';
import { RegistryError } from '../registry/errors.js';
import type { Guard } from './auth.js';

const TEXT_FILTERS = ['repository', 'digest', 'principal', 'action'] as const;
const KNOWN = new Set<string>([...TEXT_FILTERS, 'since', 'until', 'after', 'limit']);

function badRequest(message: string): RegistryError {
  return new RegistryError('UNSUPPORTED', message, { status: 400 });
}

function single(req: Request, name: string): string | undefined {
  const value = req.query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length > 512) throw badRequest(`${name} must be given once, at most 512 characters`);
  return value;
}

function time(req: Request, name: string): Date | undefined {
  const value = single(req, name);
  if (value === undefined) return undefined;
  const date = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(date.getTime())) throw badRequest(`${name} must be an ISO 8601 time, got ${JSON.stringify(value)}`);
  return date;
}

function whole(req: Request, name: string): number | undefined {
  const value = single(req, name);
  if (value === undefined) return undefined;
  if (!/^\d{1,15}$/.test(value)) throw badRequest(`${name} must be a whole number`);
  return Number(value);
}

export function parseAuditFilter(req: Request): AuditFilter {
  for (const key of Object.keys(req.query)) if (!KNOWN.has(key)) throw badRequest(`unknown parameter ${JSON.stringify(key)}`);
  const filter: AuditFilter = { limit: Math.min(Math.max(whole(req, 'limit') ?? 100, 1), 1000) };
  for (const key of TEXT_FILTERS) {
    const value = single(req, key);
    if (value !== undefined) filter[key] = value;
  }
  filter.since = time(req, 'since');
  filter.until = time(req, 'until');
  filter.after = whole(req, 'after');
  return filter;
}

export function auditRouter(guard: Guard, audit: AuditLog): Router {
  const router = express.Router();
  router.get('/audit', async (req, res) => {
    res.locals.route = 'audit';
    await guard.requireAdmin(req, res);
    const filter = parseAuditFilter(req);
    const records = await audit.query(filter);
    res.json({ records, next: records.length === filter.limit ? records[records.length - 1].seq : null });
  });
  return router;
}
