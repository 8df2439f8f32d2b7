/**
 * The OCI distribution API under /v2/. Routes are matched from the right of the path, since
 * repository names contain slashes. Handlers translate HTTP to Registry calls and back;
 * OCI semantics live in registry/, error rendering in errors.ts.
 */
import type { NextFunction, Request, Response } from 'express';
import { pipeline } from 'node:stream/promises';
import { RegistryError } from '../registry/errors.js';
import { etagListMatches, rangeHeader, type Actor, type ContentRange, type Registry, type RepositoryView } from '../registry/registry.js';
import { usernameOf, type Caller } from '../auth/authenticator.js';
import type { Action } from '../auth/access.js';
import { mountSourceScope, type Guard } from './auth.js';
import { assertName, isValidName, parseAlgorithm, parseDigest } from '../registry/names.js';
import { bareMediaType, MEDIA_TYPES } from '../registry/mediatypes.js';
import type { ByteRange } from '../storage/blobstore.js';
import { drain } from './expect-continue.js';
import { offerSocketBody } from './socket-body.js';

type Handler = (req: Request, res: Response, name: string, param: string) => Promise<void>;

interface Route {
  route: string;
  pattern: RegExp;
  methods: Record<string, Handler>;
  /** What the caller needs on the repository, per method (HEAD follows GET). */
  needs: Record<string, Action[]>;
  /** A scope beyond the repository's that the request also needs, for the challenge of a refusal. */
  alsoScope?: (req: Request) => string | undefined;
}

const PULL: Action[] = ['pull'];
const PUSH: Action[] = ['push'];
const DELETE: Action[] = ['delete'];

export function distributionRouter(registry: Registry, guard: Guard) {
  const h = new DistributionHandlers(registry, guard);
  const routes: Route[] = [
    { route: 'catalog', pattern: /^\/_catalog$/, methods: { GET: (q, s) => h.catalog(q, s) }, needs: {} },
    {
      route: 'blob_upload',
      pattern: /^\/(.+)\/blobs\/uploads\/?$/,
      methods: { POST: (q, s, n) => h.startUpload(q, s, n) },
      needs: { POST: PUSH },
      // As Distribution does: a mount's first challenge names its source, so one token does.
      alsoScope: (q) => {
        const { mount, from } = q.query as Record<string, unknown>;
        return mount !== undefined && typeof from === 'string' && isValidName(from) ? mountSourceScope(from) : undefined;
      },
    },
    {
      route: 'blob_upload',
      pattern: /^\/(.+)\/blobs\/uploads\/([^/]+)$/,
      methods: {
        GET: (q, s, n, p) => h.uploadStatus(q, s, n, p),
        PATCH: (q, s, n, p) => h.patchUpload(q, s, n, p),
        PUT: (q, s, n, p) => h.finishUpload(q, s, n, p),
        DELETE: (q, s, n, p) => h.cancelUpload(q, s, n, p),
      },
      needs: { GET: PUSH, PATCH: PUSH, PUT: PUSH, DELETE: PUSH },
    },
    {
      route: 'blob',
      pattern: /^\/(.+)\/blobs\/([^/]+)$/,
      methods: {
        GET: (q, s, n, p) => h.getBlob(q, s, n, p),
        HEAD: (q, s, n, p) => h.getBlob(q, s, n, p),
        DELETE: (q, s, n, p) => h.deleteBlob(q, s, n, p),
      },
      needs: { GET: PULL, DELETE: DELETE },
    },
    {
      route: 'manifest',
      pattern: /^\/(.+)\/manifests\/([^/]+)$/,
      methods: {
        GET: (q, s, n, p) => h.getManifest(q, s, n, p),
        HEAD: (q, s, n, p) => h.getManifest(q, s, n, p),
        PUT: (q, s, n, p) => h.putManifest(q, s, n, p),
        DELETE: (q, s, n, p) => h.deleteManifest(q, s, n, p),
      },
      needs: { GET: PULL, PUT: PUSH, DELETE: DELETE },
    },
    { route: 'tags', pattern: /^\/(.+)\/tags\/list$/, methods: { GET: (q, s, n) => h.listTags(q, s, n) }, needs: { GET: PULL } },
    {
      route: 'referrers',
      pattern: /^\/(.+)\/referrers\/([^/]+)$/,
      methods: { GET: (q, s, n, p) => h.referrers(q, s, n, p) },
      needs: { GET: PULL },
    },
  ];

  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    const path = decodedPath(req.path);
    if (path === '/' || path === '') {
      res.locals.route = 'base';
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD');
        return next(unsupported(req.method));
      }
      await guard.requireLogin(req, res);
      return sendJson(res, 200, {});
    }
    for (const route of routes) {
      const match = route.pattern.exec(path);
      if (!match) continue;
      res.locals.route = route.route;
      // HEAD is GET without a body wherever GET exists (sendJson omits the body).
      const method = route.methods[req.method] ? req.method : req.method === 'HEAD' && route.methods.GET ? 'GET' : undefined;
      if (!method) {
        const allowed = Object.keys(route.methods);
        if (route.methods.GET && !route.methods.HEAD) allowed.splice(1, 0, 'HEAD');
        res.setHeader('Allow', allowed.join(', '));
        return next(unsupported(req.method));
      }
      const name = route.route === 'catalog' ? '' : assertName(match[1]);
      const needs = route.needs[method === 'HEAD' ? 'GET' : method];
      if (needs) res.locals.view = await guard.require(req, res, name, needs, route.alsoScope?.(req));
      await route.methods[method](req, res, name, match[2] ?? '');
      return;
    }
    res.locals.route = 'unknown';
    next(new RegistryError('NAME_UNKNOWN', `no such endpoint: ${path.slice(0, 200)}`, { status: 404 }));
  };
}

/** What the authorised caller may see of the repository the route names. */
function viewOf(res: Response): RepositoryView {
  return res.locals.view as RepositoryView;
}

class DistributionHandlers {
  constructor(
    private readonly registry: Registry,
    private readonly guard: Guard,
  ) {}

  // ---- uploads ------------------------------------------------------------------------

  async startUpload(req: Request, res: Response, name: string): Promise<void> {
    const mount = queryString(req, 'mount');
    const from = queryString(req, 'from');
    if (mount !== undefined) {
      const digest = parseDigest(mount);
      // Mounting needs pull on the source (and push there to take quarantined content).
      const sourceRights = from !== undefined && isValidName(from) ? await this.guard.mountSourceRights(req, res, name, from) : new Set<Action>();
      if (
        from !== undefined &&
        sourceRights.has('pull') &&
        (await this.registry.mountBlob(name, digest, from, { seesStaged: sourceRights.has('push') }))
      ) {
        drain(req);
        return blobCreated(res, name, digest.value);
      }
      // Not mountable: the spec says to fall back to an ordinary upload session.
    }
    const digestParam = queryString(req, 'digest');
    if (digestParam !== undefined && mount === undefined) {
      const digest = parseDigest(digestParam);
      if (hasBody(req) || digest.value === emptyDigest(digest.algorithm)) {
        offerSocketBody(req, res, contentLength(req));
        await this.registry.uploadMonolithic(name, digest, req, contentLength(req));
        res.locals.bytesIn = contentLength(req) ?? 0;
        res.locals.flushLater = this.registry.flushesBlobsLater;
        return blobCreated(res, name, digest.value);
      }
    }
    const algorithmParam = queryString(req, 'digest-algorithm');
    const algorithm = algorithmParam !== undefined ? parseAlgorithm(algorithmParam) : digestParam ? parseDigest(digestParam).algorithm : 'sha256';
    drain(req);
    const id = await this.registry.startUpload(name, algorithm);
    uploadAccepted(res, name, id, 0);
  }

  async uploadStatus(_req: Request, res: Response, name: string, id: string): Promise<void> {
    const size = await this.registry.uploadStatus(name, id);
    setUploadHeaders(res, name, id, size);
    res.status(204).end();
  }

  async patchUpload(req: Request, res: Response, name: string, id: string): Promise<void> {
    const range = parseContentRange(req.headers['content-range']);
    const size = await this.registry.appendUpload(name, id, req, range, contentLength(req));
    res.locals.bytesIn = size;
    uploadAccepted(res, name, id, size);
  }

  async finishUpload(req: Request, res: Response, name: string, id: string): Promise<void> {
    const digestParam = queryString(req, 'digest');
    if (digestParam === undefined) {
      drain(req);
      throw new RegistryError('DIGEST_INVALID', 'closing an upload needs ?digest=');
    }
    const digest = parseDigest(digestParam);
    const range = parseContentRange(req.headers['content-range']);
    const body = hasBody(req) ? req : null;
    if (body) offerSocketBody(req, res, contentLength(req));
    else drain(req);
    await this.registry.finishUpload(name, id, digest, body, range, contentLength(req));
    res.locals.bytesIn = contentLength(req) ?? 0;
    res.locals.flushLater = this.registry.flushesBlobsLater;
    blobCreated(res, name, digest.value);
  }

  async cancelUpload(req: Request, res: Response, name: string, id: string): Promise<void> {
    drain(req);
    await this.registry.cancelUpload(name, id);
    res.status(204).end();
  }

  // ---- blobs --------------------------------------------------------------------------

  async getBlob(req: Request, res: Response, name: string, param: string): Promise<void> {
    const digest = parseDigest(param);
    const { size } = await this.registry.statBlob(name, digest, viewOf(res));
    res.setHeader('Docker-Content-Digest', digest.value);
    res.setHeader('ETag', `"${digest.value}"`);
    res.setHeader('Accept-Ranges', 'bytes');
    res.setHeader('Content-Type', 'application/octet-stream');
    res.setHeader('Cache-Control', 'max-age=31536000');
    // Range requests are defined for GET only (RFC 9110 §14.2): HEAD describes the whole blob.
    const range = req.method === 'GET' ? parseRange(req.headers.range, size) : null;
    if (range === 'unsatisfiable') {
      throw new RegistryError('RANGE_INVALID', `range ${String(req.headers.range).slice(0, 100)} cannot be satisfied for ${size} bytes`, {
        status: 416,
        headers: { 'Content-Range': `bytes */${size}` },
      });
    }
    const length = range ? range.end - range.start + 1 : size;
    if (range) res.setHeader('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
    res.setHeader('Content-Length', length);
    res.status(range ? 206 : 200);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const opened = await this.registry.openBlob(name, digest, range ?? undefined, viewOf(res));
    await pipeline(opened.stream, res).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ERR_STREAM_PREMATURE_CLOSE') res.locals.log?.warn({ err }, 'blob stream failed');
    });
  }

  async deleteBlob(_req: Request, res: Response, name: string, param: string): Promise<void> {
    await this.registry.deleteBlob(name, parseDigest(param), actorOf(res));
    res.status(202).setHeader('Content-Length', 0);
    res.end();
  }

  // ---- manifests ----------------------------------------------------------------------

  async getManifest(req: Request, res: Response, name: string, reference: string): Promise<void> {
    const ifNoneMatch = req.headers['if-none-match'];
    if (req.method === 'HEAD' || ifNoneMatch) {
      const record = await this.registry.findManifest(name, reference, viewOf(res));
      setManifestHeaders(res, record.digest, record.mediaType, record.size);
      // If-None-Match compares weakly, and `*` matches any manifest (RFC 9110 §13.1.2).
      if (ifNoneMatch && etagListMatches(ifNoneMatch, `"${record.digest}"`, 'weak')) {
        res.status(304).end();
        return;
      }
      if (req.method === 'HEAD') {
        res.status(200).end();
        return;
      }
    }
    const { record, body } = await this.registry.getManifest(name, reference, viewOf(res));
    setManifestHeaders(res, record.digest, record.mediaType, body.length);
    res.status(200).end(body);
  }

  async putManifest(req: Request, res: Response, name: string, reference: string): Promise<void> {
    const body = await readBody(req, this.registry.limits.maxManifestBytes);
    res.locals.bytesIn = body.length;
    const result = await this.registry.putManifest(name, reference, body, bareMediaType(req.headers['content-type']), {
      extraTags: queryList(req, 'tag'),
      ifMatch: req.headers['if-match'],
      ifNoneMatch: req.headers['if-none-match'],
      ...actorOf(res),
    });
    const { decision } = result;
    if (decision.outcome === 'denied' && !decision.quarantined) {
      throw new RegistryError('DENIED', `denied by policy: ${decision.reasons.join('; ')}`, {
        detail: { digest: result.digest, reasons: decision.reasons },
      });
    }
    if (decision.outcome === 'denied') {
      res.setHeader(
        'Warning',
        warning(`${result.digest} is denied on its own (${decision.reasons.join('; ')}); it stays in quarantine unless an admitted index includes it`),
      );
    }
    if (decision.outcome === 'pending') {
      res.setHeader('Warning', warning(`image ${result.digest} is in quarantine, waiting for: ${decision.waitingFor.join(', ')}`));
    }
    if (decision.outcome === 'admitted' && decision.warnings && decision.warnings.length > 0) {
      res.setHeader('Warning', warning(`admitted with warnings: ${decision.warnings.join('; ')}`));
    }
    res.setHeader('Location', `/v2/${name}/manifests/${result.digest}`);
    res.setHeader('Docker-Content-Digest', result.digest);
    if (result.subject) res.setHeader('OCI-Subject', result.subject);
    const queryTags = new Set(queryList(req, 'tag'));
    if (queryTags.size > 0) res.setHeader('OCI-Tag', [...queryTags].join(', '));
    res.setHeader('Content-Length', 0);
    res.status(201).end();
  }

  async deleteManifest(_req: Request, res: Response, name: string, reference: string): Promise<void> {
    await this.registry.deleteManifest(name, reference, actorOf(res));
    res.status(202).setHeader('Content-Length', 0);
    res.end();
  }

  // ---- listing ------------------------------------------------------------------------

  async listTags(req: Request, res: Response, name: string): Promise<void> {
    const n = pageSize(req);
    const last = queryString(req, 'last');
    const { items, more } = await this.registry.listTags(name, last, n, viewOf(res));
    if (more && items.length > 0) {
      res.setHeader('Link', `</v2/${name}/tags/list?n=${items.length}&last=${encodeURIComponent(items[items.length - 1])}>; rel="next"`);
    }
    sendJson(res, 200, { name, tags: items });
  }

  async catalog(req: Request, res: Response): Promise<void> {
    const n = pageSize(req);
    const last = queryString(req, 'last');
    const { items, more } = await this.registry.catalog(last, n, await this.guard.catalogFilter(req, res));
    if (more && items.length > 0) {
      res.setHeader('Link', `</v2/_catalog?n=${items.length}&last=${encodeURIComponent(items[items.length - 1])}>; rel="next"`);
    }
    sendJson(res, 200, { repositories: items });
  }

  async referrers(req: Request, res: Response, name: string, param: string): Promise<void> {
    const digest = parseDigest(param);
    // An empty filter filters nothing, so it is not reported as applied.
    const artifactType = queryString(req, 'artifactType') || undefined;
    const { index, filtered } = await this.registry.listReferrers(name, digest, artifactType, viewOf(res));
    if (filtered) res.setHeader('OCI-Filters-Applied', 'artifactType');
    sendJson(res, 200, index, MEDIA_TYPES.ociIndex);
  }
}

// ---- helpers ----------------------------------------------------------------------------

function unsupported(method: string): RegistryError {
  return new RegistryError('UNSUPPORTED', `method ${method} is not supported here`);
}

function sendJson(res: Response, status: number, body: unknown, contentType = 'application/json'): void {
  const text = JSON.stringify(body);
  res.status(status);
  res.setHeader('Content-Type', contentType);
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.end(res.req.method === 'HEAD' ? undefined : text);
}

function setUploadHeaders(res: Response, name: string, id: string, size: number): void {
  res.setHeader('Location', `/v2/${name}/blobs/uploads/${id}`);
  res.setHeader('Range', rangeHeader(size));
  res.setHeader('Docker-Upload-UUID', id);
}

function uploadAccepted(res: Response, name: string, id: string, size: number): void {
  res.locals.flushLater = true; // answered without waiting for the database's flush (app.ts)
  setUploadHeaders(res, name, id, size);
  res.setHeader('Content-Length', 0);
  res.status(202).end();
}

function blobCreated(res: Response, name: string, digest: string): void {
  res.setHeader('Location', `/v2/${name}/blobs/${digest}`);
  res.setHeader('Docker-Content-Digest', digest);
  res.setHeader('Content-Length', 0);
  res.status(201).end();
}

function setManifestHeaders(res: Response, digest: string, mediaType: string, size: number): void {
  res.setHeader('Content-Type', mediaType);
  res.setHeader('Docker-Content-Digest', digest);
  res.setHeader('ETag', `"${digest}"`);
  res.setHeader('Content-Length', size);
}

/** Who is asking, for the audit trail (anonymous when authentication is off). */
function actorOf(res: Response): Actor {
  const caller = res.locals.caller as Caller | undefined;
  return { principal: caller ? usernameOf(caller.principal) || 'anonymous' : null, requestId: (res.locals.requestId as string) ?? null };
}

function warning(text: string): string {
  return `299 - ${JSON.stringify(text.replace(/[^\x20-\x7e]/g, '?').slice(0, 1000))}`;
}

function queryString(req: Request, key: string): string | undefined {
  const value = (req.query as Record<string, unknown>)[key];
  if (value === undefined) return undefined;
  if (typeof value === 'string') return value;
  if (Array.isArray(value) && typeof value[0] === 'string') return value[0];
  throw new RegistryError('UNSUPPORTED', `query parameter ${key} is malformed`, { status: 400 });
}

function queryList(req: Request, key: string): string[] {
  const value = (req.query as Record<string, unknown>)[key];
  if (value === undefined) return [];
  const list = Array.isArray(value) ? value : [value];
  return list.filter((v): v is string => typeof v === 'string');
}

function pageSize(req: Request): number | undefined {
  const raw = queryString(req, 'n');
  if (raw === undefined) return undefined;
  if (!/^\d{1,9}$/.test(raw)) {
    throw new RegistryError('PAGINATION_NUMBER_INVALID', `n must be an integer from 0 to 999999999, got ${JSON.stringify(raw.slice(0, 20))}`);
  }
  return Number(raw);
}

function contentLength(req: Request): number | null {
  const raw = req.headers['content-length'];
  if (raw === undefined) return null;
  const value = Number(raw);
  return Number.isSafeInteger(value) && value >= 0 ? value : null;
}

function hasBody(req: Request): boolean {
  const length = contentLength(req);
  if (length !== null) return length > 0;
  return req.headers['transfer-encoding'] !== undefined;
}

/** `Content-Range: <start>-<end>` as OCI clients send it (also tolerating a `bytes ` prefix and `/total`). */
function parseContentRange(header: string | undefined): ContentRange | null {
  if (!header) return null;
  const match = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!match) throw new RegistryError('RANGE_INVALID', `malformed Content-Range: ${header.slice(0, 100)}`, { status: 416 });
  const start = Number(match[1]);
  const end = Number(match[2]);
  if (end < start) throw new RegistryError('RANGE_INVALID', `Content-Range ends before it starts: ${header.slice(0, 100)}`, { status: 416 });
  return { start, end };
}

/**
 * A `Range` header per RFC 9110 §14.2; null means serve the whole blob. A unit other than
 * bytes is ignored, as is a set of several ranges of which one can be served (a server may
 * ignore Range; multipart responses are not offered). A malformed bytes range, or a set none
 * of which can be served, is unsatisfiable (416).
 */
function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | null {
  if (!header) return null;
  const value = header.trim();
  const unit = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)=/.exec(value);
  if (unit && unit[1].toLowerCase() !== 'bytes') return null;
  if (!unit) return 'unsatisfiable';
  const ranges = value.slice(unit[0].length).split(',').map((spec) => parseByteRange(spec.trim(), size));
  if (ranges.includes('malformed')) return 'unsatisfiable';
  const satisfiable = ranges.filter((r): r is ByteRange => r !== 'unsatisfiable');
  if (satisfiable.length === 0) return 'unsatisfiable';
  return ranges.length === 1 ? satisfiable[0] : null;
}

function parseByteRange(spec: string, size: number): ByteRange | 'unsatisfiable' | 'malformed' {
  const match = /^(\d*)-(\d*)$/.exec(spec);
  if (!match || (match[1] === '' && match[2] === '')) return 'malformed';
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(size - suffix, 0), end: size - 1 };
  }
  const start = Number(match[1]);
  if (match[2] !== '' && Number(match[2]) < start) return 'malformed';
  if (start >= size) return 'unsatisfiable';
  return { start, end: match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1) };
}

/**
 * The path with its percent-escapes decoded, as Distribution routes (`%3A` in a digest from
 * encodeURIComponent, `%76` for `v`). What it decodes to is validated like any other path:
 * names, tags and digests by their grammars.
 */
function decodedPath(raw: string): string {
  if (!raw.includes('%')) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new RegistryError('NAME_INVALID', `the path has a malformed percent-escape: ${raw.slice(0, 200)}`, { status: 400 });
  }
}

async function readBody(req: Request, limit: number): Promise<Buffer> {
  const declared = contentLength(req);
  if (declared !== null && declared > limit) {
    drain(req);
    throw new RegistryError('SIZE_INVALID', `manifest of ${declared} bytes exceeds the limit of ${limit} bytes`, { status: 413 });
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > limit) {
      drain(req);
      throw new RegistryError('SIZE_INVALID', `manifest exceeds the limit of ${limit} bytes`, { status: 413 });
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

const EMPTY_DIGESTS: Record<string, string> = {
  sha256: 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  sha512:
    'sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e',
};

function emptyDigest(algorithm: string): string {
  return EMPTY_DIGESTS[algorithm];
}
