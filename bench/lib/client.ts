/**
 * Minimal OCI distribution client over node:http (keep-alive agent, streamed bodies), the
 * same for every target so that client overhead is equal. Every unexpected status raises an
 * {@link HttpError} carrying the request and the response body, for the report.
 */
import http from 'node:http';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { PatternBlob } from './data.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body (capped at {@link BODY_CAP} bytes). */
  body: Buffer;
  /** Body bytes received (including those beyond the cap). */
  bytes: number;
}

export interface RequestOptions {
  headers?: http.OutgoingHttpHeaders;
  body?: Buffer | string | Readable;
}

const BODY_CAP = 8 * 1024 * 1024;

export class HttpError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly responseBody: string,
    expected: string,
    readonly headers: http.IncomingHttpHeaders = {},
  ) {
    super(`${method} ${path} -> ${status} (expected ${expected})${responseBody ? `: ${responseBody.slice(0, 600)}` : ''}`);
    this.name = 'HttpError';
  }
}

export interface ClientOptions {
  /** Sockets kept per host; set to the concurrency of the load. */
  maxSockets: number;
  /** A request idle for this long is aborted. */
  timeoutMs?: number;
}

export class OciClient {
  readonly agent: http.Agent;
  private readonly host: string;
  private readonly port: number;
  private readonly timeoutMs: number;
  private lean: LeanConnection | undefined;

  constructor(
    readonly baseUrl: string,
    options: ClientOptions,
  ) {
    const url = new URL(baseUrl);
    this.host = url.hostname;
    this.port = Number(url.port || 80);
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: options.maxSockets, maxFreeSockets: options.maxSockets });
  }

  close(): void {
    this.agent.destroy();
    this.lean?.close();
  }

  /** The client's one lean keep-alive connection (see {@link LeanConnection}), opened on first use. */
  private leanConnection(): LeanConnection {
    this.lean ??= new LeanConnection(this.host, this.port, this.timeoutMs);
    return this.lean;
  }

  /** One request; resolves with the response whatever its status. */
  request(method: string, path: string, options: RequestOptions = {}): Promise<HttpResponse> {
    return new Promise<HttpResponse>((resolve, reject) => {
      let settled = false;
      const { body } = options;
      const finish = (err: Error | undefined, res?: HttpResponse) => {
        if (settled) return;
        settled = true;
        if (body instanceof Readable && !body.readableEnded) body.destroy();
        if (err) reject(err);
        else resolve(res as HttpResponse);
      };
      const req = http.request({
        agent: this.agent,
        host: this.host,
        port: this.port,
        method,
        path,
        headers: options.headers,
      });
      req.setTimeout(this.timeoutMs, () => req.destroy(new Error(`${method} ${path}: no progress for ${this.timeoutMs} ms`)));
      req.on('error', (err) => finish(new Error(`${method} ${path}: ${err.message}`)));
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        const keep: Buffer[] = [];
        let kept = 0;
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (kept < BODY_CAP) {
            keep.push(chunk);
            kept += chunk.length;
          }
        });
        res.on('end', () => finish(undefined, { status, headers: res.headers, body: Buffer.concat(keep), bytes }));
        res.on('error', (err) => finish(new Error(`${method} ${path}: response: ${err.message}`)));
        res.on('aborted', () => finish(new Error(`${method} ${path}: response aborted after ${bytes} bytes`)));
      });
      if (body instanceof Readable) {
        body.on('error', (err) => req.destroy(err));
        body.pipe(req);
      } else {
        req.end(body);
      }
    });
  }

  /** A request that must answer one of `statuses`. */
  async expect(method: string, path: string, statuses: number[], options: RequestOptions = {}): Promise<HttpResponse> {
    const res = await this.request(method, path, options);
    if (!statuses.includes(res.status)) {
      throw new HttpError(method, path, res.status, res.body.toString('utf8'), statuses.join('/'), res.headers);
    }
    return res;
  }

  /** Turns a Location header (absolute or relative) into a request path on this server. */
  resolveLocation(location: string | undefined, what: string): string {
    if (!location) throw new Error(`${what}: response has no Location header`);
    const url = new URL(location, this.baseUrl);
    return `${url.pathname}${url.search}`;
  }

  // --- blobs -------------------------------------------------------------------------------

  /** POST /v2/<name>/blobs/uploads/ → the upload's path. */
  async startUpload(name: string): Promise<string> {
    const path = `/v2/${name}/blobs/uploads/`;
    const res = await this.expect('POST', path, [202], { headers: { 'Content-Length': '0' } });
    return this.resolveLocation(header(res, 'location'), `POST ${path}`);
  }

  /**
   * Monolithic upload: POST, then PUT ?digest= with the whole body: a PatternBlob streamed as
   * it is generated, or sent from `bytes` (its content, made beforehand) when given.
   */
  async pushBlob(name: string, blob: PatternBlob | Buffer, bytes?: Buffer): Promise<string> {
    const digest = blob instanceof PatternBlob ? blob.digest : sha256(blob);
    const size = blob instanceof PatternBlob ? blob.size : blob.length;
    if (bytes && bytes.length !== size) throw new Error(`${bytes.length} bytes given for a ${size}-byte blob`);
    const location = await this.startUpload(name);
    const res = await this.expect('PUT', withDigest(location, digest), [201], {
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) },
      body: bytes ?? (blob instanceof PatternBlob ? blob.stream() : blob),
    });
    checkDigestHeader(res, digest, `PUT blob ${digest}`);
    return digest;
  }

  /** Chunked upload: POST, PATCH chunks with Content-Range following each Location, then PUT ?digest=. */
  async pushBlobChunked(name: string, blob: PatternBlob, chunkBytes: number): Promise<string> {
    const digest = blob.digest;
    let location = await this.startUpload(name);
    for (let start = 0; start < blob.size; start += chunkBytes) {
      const end = Math.min(blob.size, start + chunkBytes);
      const res = await this.expect('PATCH', location, [202], {
        headers: {
          'Content-Type': 'application/octet-stream',
          'Content-Length': String(end - start),
          'Content-Range': `${start}-${end - 1}`,
        },
        body: blob.stream(start, end),
      });
      location = this.resolveLocation(header(res, 'location'), `PATCH ${location}`);
    }
    const res = await this.expect('PUT', withDigest(location, digest), [201], { headers: { 'Content-Length': '0' } });
    checkDigestHeader(res, digest, `PUT (close) blob ${digest}`);
    return digest;
  }

  /** HEAD a blob: true on 200, false on 404. */
  async blobExists(name: string, digest: string): Promise<boolean> {
    const res = await this.expect('HEAD', `/v2/${name}/blobs/${digest}`, [200, 404]);
    return res.status === 200;
  }

  /**
   * GET a blob, hashing and discarding it; fails unless the bytes match `digest`. Over a
   * connection of its own, read into one reused 4 MiB buffer: through node:http (64 KiB
   * reads, a buffer and an event each) the client's CPU, not the registry, set the rate of a
   * 256 MiB pull (about 500-650 MiB/s for either registry, 1-1.3 GB/s this way).
   */
  async pullBlob(name: string, digest: string, expectedSize?: number): Promise<number> {
    const path = `/v2/${name}/blobs/${digest}`;
    const { status, head, bytes, hex } = await rawGet(this.host, this.port, path, this.timeoutMs);
    if (status !== 200) throw new HttpError('GET', path, status, head, '200');
    const got = `sha256:${hex}`;
    if (got !== digest) throw new Error(`GET ${path}: body hashes to ${got} (${bytes} bytes)`);
    if (expectedSize !== undefined && bytes !== expectedSize) throw new Error(`GET ${path}: ${bytes} bytes, expected ${expectedSize}`);
    return bytes;
  }

  // --- manifests and tags --------------------------------------------------------------------

  async putManifest(name: string, reference: string, body: Buffer, mediaType = OCI_MANIFEST): Promise<string> {
    const path = `/v2/${name}/manifests/${reference}`;
    const res = await this.expect('PUT', path, [201], {
      headers: { 'Content-Type': mediaType, 'Content-Length': String(body.length) },
      body,
    });
    const digest = sha256(body);
    checkDigestHeader(res, digest, `PUT ${path}`);
    return digest;
  }

  async getManifest(name: string, reference: string, accept = OCI_MANIFEST): Promise<HttpResponse> {
    return this.expect('GET', `/v2/${name}/manifests/${reference}`, [200], { headers: { Accept: accept } });
  }

  async headManifest(name: string, reference: string, accept = OCI_MANIFEST): Promise<HttpResponse> {
    return this.expect('HEAD', `/v2/${name}/manifests/${reference}`, [200], { headers: { Accept: accept } });
  }

  /**
   * All tags of `name`, following `Link: <…>; rel="next"` when `pageSize` is given. With
   * `lean`, the pages are read over the client's {@link LeanConnection} rather than node:http.
   */
  async listTags(name: string, pageSize?: number, options: { lean?: boolean } = {}): Promise<{ tags: string[]; pages: number; largestPage: number }> {
    let path: string | undefined = `/v2/${name}/tags/list${pageSize ? `?n=${pageSize}` : ''}`;
    const tags: string[] = [];
    let pages = 0;
    let largestPage = 0;
    while (path) {
      const res = options.lean ? await this.leanConnection().get(path) : await this.request('GET', path);
      if (res.status !== 200) throw new HttpError('GET', path, res.status, res.body.toString('utf8'), '200', res.headers);
      const doc = JSON.parse(res.body.toString('utf8')) as { tags?: string[] | null };
      const page = doc.tags ?? [];
      tags.push(...page);
      largestPage = Math.max(largestPage, page.length);
      pages++;
      if (pages > 100_000) throw new Error(`GET ${path}: pagination does not end`);
      const next = nextLink(header(res, 'link'));
      path = next ? this.resolveLocation(next, `GET ${path}`) : undefined;
    }
    return { tags, pages, largestPage };
  }
}

export function header(res: Pick<HttpResponse, 'headers'>, name: string): string | undefined {
  const value = res.headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/** Appends `digest=` to an upload location that may already carry a query. */
export function withDigest(location: string, digest: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;
}

/** The target of `rel="next"` in a Link header, if any. */
export function nextLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(',')) {
    const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (m && /rel="?next"?/i.test(m[2])) return m[1];
  }
  return undefined;
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function checkDigestHeader(res: HttpResponse, digest: string, what: string): void {
  const got = header(res, 'docker-content-digest');
  if (got !== undefined && got !== digest) throw new Error(`${what}: Docker-Content-Digest is ${got}, expected ${digest}`);
}

/** A small OCI image manifest; `annotations` make otherwise equal manifests distinct. */
export function imageManifest(
  config: { digest: string; size: number },
  layers: { digest: string; size: number }[],
  annotations?: Record<string, string>,
): Buffer {
  const doc: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: OCI_LAYER, digest: l.digest, size: l.size })),
  };
  if (annotations) doc.annotations = annotations;
  return Buffer.from(JSON.stringify(doc));
}

/** A small image config blob (JSON). */
export function imageConfig(label: string, layerDigests: string[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Labels: { 'bench.label': label } },
      rootfs: { type: 'layers', diff_ids: layerDigests },
    }),
  );
}

const RAW_READ_BYTES = 4 * 1024 * 1024;

/** The status (0 when it is not an HTTP/1.x status line) and headers (names in lower case) of a response head, its text up to the blank line. */
function parseHead(text: string): { status: number; headers: Record<string, string> } {
  const lines = text.split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status, headers };
}

/**
 * One HTTP/1.1 GET on a new connection (closed after it) whose body, of the length its
 * Content-Length gives, is hashed with sha256 as it arrives; the response head comes back as
 * text. Chunked bodies are not read: a registry answers a blob GET with its length.
 */
function rawGet(host: string, port: number, path: string, timeoutMs: number): Promise<{ status: number; head: string; bytes: number; hex: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let head = Buffer.alloc(0);
    let status = 0;
    let headText = '';
    let length = -1;
    let bytes = 0;
    let settled = false;
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (err) reject(err);
      else resolve({ status, head: headText, bytes, hex: hash.digest('hex') });
    };
    const onBody = (chunk: Buffer) => {
      const take = Math.min(chunk.length, length - bytes);
      hash.update(chunk.subarray(0, take));
      bytes += take;
      if (bytes === length) finish(null);
    };
    const onHead = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > 64 * 1024) finish(new Error(`GET ${path}: response head over 64 KiB`));
        return;
      }
      headText = head.subarray(0, end).toString('latin1');
      const parsed = parseHead(headText);
      status = parsed.status;
      const declared = parsed.headers['content-length'];
      if (declared === undefined || !/^\d+$/.test(declared)) return finish(new Error(`GET ${path}: response without Content-Length: ${headText.slice(0, 200)}`));
      length = Number(declared);
      if (status !== 200) return finish(null);
      const rest = head.subarray(end + 4);
      if (length === 0) return finish(null);
      if (rest.length > 0) onBody(rest); // its own memory: concat copied it out of the read buffer
    };
    const socket = net.connect({
      host,
      port,
      onread: {
        buffer: Buffer.allocUnsafe(RAW_READ_BYTES),
        callback: (nread: number, buffer: Uint8Array) => {
          const chunk = Buffer.from(buffer.buffer, buffer.byteOffset, nread);
          if (length < 0) onHead(chunk);
          else onBody(chunk);
          return !settled;
        },
      },
    });
    socket.setTimeout(timeoutMs, () => finish(new Error(`GET ${path}: no progress for ${timeoutMs} ms`)));
    socket.on('connect', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: close\r\n\r\n`));
    socket.on('error', (err) => finish(new Error(`GET ${path}: ${err.message}`)));
    socket.on('close', () => finish(new Error(`GET ${path}: connection closed after ${bytes} of ${length < 0 ? '?' : length} body bytes`)));
  });
}

/**
 * Sequential GETs over one keep-alive HTTP/1.1 connection, the response read by hand: a status
 * line, headers, and a body of the length Content-Length gives or in chunks. It costs the
 * bench about a tenth of a millisecond less CPU per request than node:http, so that a row of
 * many small requests measures the registry more than the bench's client (a compiled client
 * such as skopeo's was not measured): in a scratch replay of the tag listing (1,000 tags in
 * pages of 100, ten requests), node:http took 2.10 ms of the client's CPU per listing of the
 * gateway, more than the gateway's own 1.86 ms, and this connection 0.88 ms.
 * A connection the server closes is opened again for the next request.
 */
export class LeanConnection {
  private socket: net.Socket | null = null;
  private received: Buffer = Buffer.alloc(0);
  private wake: ((err?: Error) => void) | null = null;
  private closed = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly timeoutMs: number,
  ) {}

  async get(path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
    const socket = await this.connected(path);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\n\r\n`);
    try {
      for (;;) {
        const response = this.parse(path);
        if (response) {
          if (/^close$/i.test(String(response.headers.connection ?? ''))) this.drop();
          return response;
        }
        await this.more(path);
      }
    } catch (err) {
      this.drop(); // what is left of the response cannot be told from the next one
      throw err;
    }
  }

  close(): void {
    this.closed = true;
    this.drop();
  }

  private async connected(path: string): Promise<net.Socket> {
    if (this.closed) throw new Error(`GET ${path}: the connection was closed`);
    if (this.socket) return this.socket;
    const socket = net.connect({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    socket.setTimeout(this.timeoutMs, () => socket.destroy(new Error(`no progress for ${this.timeoutMs} ms`)));
    // A connection dropped earlier may still report its end: only the current one counts.
    socket.on('data', (chunk: Buffer) => {
      if (this.socket !== socket) return;
      this.received = this.received.length ? Buffer.concat([this.received, chunk]) : chunk;
      this.wake?.();
    });
    socket.on('error', (err) => {
      if (this.socket === socket) this.wake?.(err);
    });
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.wake?.(new Error('connection closed'));
    });
    this.socket = socket;
    this.received = Buffer.alloc(0);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (err) => reject(new Error(`GET ${path}: ${err.message}`)));
    });
    return socket;
  }

  /** Lets go of the connection; a request waiting on it fails. */
  private drop(): void {
    this.socket?.destroy();
    this.socket = null;
    this.received = Buffer.alloc(0);
    this.wake?.(new Error('connection closed'));
  }

  /** Waits for more bytes; fails when the connection ends or errs first. */
  private async more(path: string): Promise<void> {
    const err = await new Promise<Error | undefined>((resolve) => (this.wake = resolve));
    this.wake = null;
    if (err) throw new Error(`GET ${path}: ${err.message} before the whole response (${this.received.length} bytes of it read)`);
  }

  /** A whole response at the start of what was received (consumed), or null while it is not all there. */
  private parse(path: string): { status: number; headers: http.IncomingHttpHeaders; body: Buffer } | null {
    const data = this.received;
    const end = data.indexOf('\r\n\r\n');
    if (end < 0) {
      if (data.length > 64 * 1024) throw new Error(`GET ${path}: response head over 64 KiB`);
      return null;
    }
    const text = data.subarray(0, end).toString('latin1');
    const { status, headers } = parseHead(text);
    if (!status) throw new Error(`GET ${path}: not an HTTP response: ${JSON.stringify(text.split('\r\n')[0])}`);
    const body = /chunked/i.test(String(headers['transfer-encoding'] ?? ''))
      ? this.chunkedBody(path, end + 4)
      : this.sizedBody(path, end + 4, headers['content-length']);
    return body && { status, headers, body };
  }

  private sizedBody(path: string, start: number, declared: string | undefined): Buffer | null {
    if (declared === undefined || !/^\d+$/.test(declared)) throw new Error(`GET ${path}: response without Content-Length or chunks`);
    const end = start + Number(declared);
    if (this.received.length < end) return null;
    const body = this.received.subarray(start, end);
    this.received = this.received.subarray(end);
    return body;
  }

  private chunkedBody(path: string, start: number): Buffer | null {
    const data = this.received;
    const parts: Buffer[] = [];
    let at = start;
    for (;;) {
      const eol = data.indexOf('\r\n', at);
      if (eol < 0) return null;
      const sizeText = data.subarray(at, eol).toString('latin1').split(';')[0]?.trim() ?? '';
      if (!/^[0-9a-f]+$/i.test(sizeText)) throw new Error(`GET ${path}: bad chunk size ${JSON.stringify(sizeText)}`);
      const size = parseInt(sizeText, 16);
      if (size === 0) {
        // No trailers are expected: the last chunk is followed by an empty line.
        if (data.length < eol + 4) return null;
        this.received = data.subarray(eol + 4);
        return Buffer.concat(parts);
      }
      if (data.length < eol + 2 + size + 2) return null;
      parts.push(data.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
  }
}
