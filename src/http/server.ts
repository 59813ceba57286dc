/**
 * `bundlefleet serve`: the HTTP API, health endpoints, Prometheus metrics and the status page, on
 * node:http. Small on purpose: one route table, one error mapping, no framework.
 *
 *   POST /book-vip-bundle          enqueue (201 created, 200 same idempotency key)   [token]
 *   GET  /bundles/:id              inspect JSON (vip_bundle_id or booking_id)
 *   GET  /healthz, /readyz         alive; database reachable and not draining
 *   GET  /metrics                  Prometheus text
 *   GET  /api/stats | /api/bundles?state=&limit= | /api/alerts?all= | /api/throughput?minutes=
 *   POST /api/alerts/:id/ack       acknowledge an alert                                [token]
 *   GET  /, /ui/bundles/:id        the status page and a bundle's timeline (status-page.ts)
 *
 * Writes need `Authorization: Bearer <token>` when a token is configured. Input is validated
 * with the CLI's zod schemas (src/bundles/input.ts), so a field is refused the same way in both,
 * and nothing is written unless every check passed. Request bodies and payloads are never logged.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type pg from 'pg';
import { z } from 'zod';
import { enqueueBundles } from '../bundles/enqueue.js';
import { parseBundleId, parseVipBundle } from '../bundles/input.js';
import { BUNDLE_STATES, fleetStats, inspectBundle, listBundles, throughputByMinute } from '../bundles/read.js';
import { isConnectionError } from '../db/pool.js';
import { BadInput, Conflict, NotFound } from '../errors.js';
import { rootLogger, scrubText, type Logger } from '../logger.js';
import { ackAlert, listAlerts } from '../supervisor/alerts.js';
import { createMetrics, sendMetrics, type Metrics } from './metrics.js';
import { bundlePageHtml, errorPageHtml, statusPageHtml, uiAsset } from './status-page.js';

/** Largest request body accepted; one bundle is well under 2 KiB. */
export const MAX_BODY_BYTES = 64 * 1024;
/** How long /readyz waits for `SELECT 1` before answering 503. */
const READY_TIMEOUT_MS = 2_000;

export interface HttpServerOptions {
  pool: pg.Pool;
  logger?: Logger;
  /** When set, writes need `Authorization: Bearer <apiToken>` (401 otherwise). */
  apiToken?: string;
  /** /readyz answers 503 while this returns true (first stage of shutdown). */
  isDraining?: () => boolean;
  /** Registry served at /metrics; default: a new one whose fleet gauges read `pool`. */
  metrics?: Metrics;
}

/** An error with its HTTP status, for refusals decided by the server itself. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  url: URL;
  params: string[];
  log: Logger;
}

type Handler = (ctx: Ctx) => Promise<void> | void;
interface Route {
  method: 'GET' | 'POST';
  path: RegExp;
  write?: boolean;
  handler: Handler;
}

const SECURITY_HEADERS = { 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' };

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...SECURITY_HEADERS, ...headers });
  res.end(`${JSON.stringify(body)}\n`);
}

/** Pages run only their own scripts and styles, talk only to this origin and cannot be framed. */
const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

function sendPage(res: http.ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': PAGE_CSP, 'x-frame-options': 'DENY', ...SECURITY_HEADERS });
  res.end(html);
}

/** The body as text, refusing (413) more than `limit` bytes whether or not Content-Length says so. */
function readBody(req: http.IncomingMessage, limit = MAX_BODY_BYTES): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new HttpError(413, `body too large: at most ${limit} bytes`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        reject(new HttpError(413, `body too large: at most ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => size <= limit && resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

function requireJson(req: http.IncomingMessage): void {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new HttpError(415, `content-type must be application/json${type ? `, got ${type}` : ''}`, { accept: 'application/json' });
  }
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  requireJson(req);
  const text = await readBody(req);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BadInput(`body: not valid JSON (${(err as Error).message})`);
  }
}

/** A path segment, percent-decoded; a malformed escape is bad input, not a crash. */
function segment(value: string, field: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new BadInput(`${field}: malformed percent-encoding in the path`);
  }
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Constant-time bearer check: both sides hashed first, so their lengths always match. */
function makeAuthCheck(apiToken: string | undefined): (req: http.IncomingMessage) => boolean {
  if (apiToken === undefined) return () => true;
  const expected = sha256(apiToken);
  return (req) => {
    const match = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '');
    const given = sha256(match?.[1] ?? '');
    return timingSafeEqual(given, expected) && match !== null;
  };
}

/**
 * Without a token the server is meant for loopback only, and a web page on another site could
 * still make the browser POST to it: refuse writes whose Origin is not this server.
 */
function sameOrigin(req: http.IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (!origin) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const bundlesQuery = z.object({
  state: z.enum(BUNDLE_STATES, `must be one of ${BUNDLE_STATES.join(', ')}`).optional(),
  limit: z.coerce.number({ error: 'must be a number' }).int('must be a whole number').min(1, 'must be at least 1').max(500, 'must be at most 500').default(20),
});
const alertsQuery = z.object({ all: z.stringbool({ error: 'must be true or false' }).default(false) });
const throughputQuery = z.object({
  minutes: z.coerce.number({ error: 'must be a number' }).int('must be a whole number').min(1, 'must be at least 1').max(180, 'must be at most 180').default(15),
});

/** Query parameters through zod; empty values count as absent. BadInput names each parameter. */
function parseQuery<T extends z.ZodType>(schema: T, url: URL): z.infer<T> {
  const raw = Object.fromEntries([...url.searchParams].filter(([, v]) => v !== ''));
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => `${String(i.path[0] ?? '(query)')}: ${i.message}`);
  throw new BadInput(issues.join('; '), issues);
}

/** Validates an enqueue body and its Idempotency-Key header together, so every problem is listed at once. */
function parseEnqueueRequest(req: http.IncomingMessage, body: unknown): { payload: Record<string, unknown>; idempotencyKey?: string } {
  const issues: string[] = [];
  const rawHeader = req.headers['idempotency-key'];
  const headerKey = typeof rawHeader === 'string' ? rawHeader.trim() : undefined;
  if (headerKey !== undefined && !headerKey) issues.push('Idempotency-Key header: must not be empty');
  if (headerKey && headerKey.length > 200) issues.push('Idempotency-Key header: must be at most 200 characters');
  let input: ReturnType<typeof parseVipBundle> | undefined;
  try {
    input = parseVipBundle(body);
  } catch (err) {
    if (!(err instanceof BadInput)) throw err;
    issues.push(...err.issues);
  }
  if (input?.idempotency_key !== undefined && headerKey && input.idempotency_key !== headerKey) {
    issues.push('idempotency_key: differs from the Idempotency-Key header (give one of them, or the same value in both)');
  }
  if (issues.length || !input) throw new BadInput(issues.join('; '), issues);
  const { idempotency_key, ...payload } = input;
  return { payload, idempotencyKey: idempotency_key ?? (headerKey || undefined) };
}

export function createHttpServer(opts: HttpServerOptions): http.Server {
  const { pool } = opts;
  const log = (opts.logger ?? rootLogger()).child({ component: 'http' });
  const isDraining = opts.isDraining ?? (() => false);
  const authorized = makeAuthCheck(opts.apiToken);
  const metrics = opts.metrics ?? createMetrics({ logger: log });
  if (!opts.metrics) metrics.collectFromDb(pool);

  const routes: Route[] = [
    {
      method: 'POST',
      path: /^\/book-vip-bundle$/,
      write: true,
      async handler({ req, res, log }) {
        const body = await readJson(req);
        const item = parseEnqueueRequest(req, body);
        const [result] = await enqueueBundles(pool, [item], { actor: 'http' });
        const { vip_bundle_id, booking_id, created } = result!;
        log.info({ bundleId: vip_bundle_id, created }, created ? 'bundle enqueued' : 'bundle already enqueued (same idempotency key)');
        sendJson(res, created ? 201 : 200, { vip_bundle_id, booking_id }, { location: `/bundles/${vip_bundle_id}`, ...(created ? {} : { 'idempotent-replayed': 'true' }) });
      },
    },
    { method: 'GET', path: /^\/bundles\/([^/]+)$/, handler: async ({ res, params }) => sendJson(res, 200, await inspectBundle(pool, segment(params[0]!, 'id'))) },
    { method: 'GET', path: /^\/healthz$/, handler: ({ res }) => sendJson(res, 200, { status: 'ok' }) },
    {
      method: 'GET',
      path: /^\/readyz$/,
      async handler({ res, log }) {
        if (isDraining()) return sendJson(res, 503, { status: 'draining' });
        try {
          await withTimeout(pool.query('SELECT 1'), READY_TIMEOUT_MS, 'SELECT 1');
        } catch (err) {
          log.warn({ err: (err as Error).message }, 'readyz: database unreachable');
          return sendJson(res, 503, { status: 'database unreachable' });
        }
        sendJson(res, 200, { status: 'ready' });
      },
    },
    { method: 'GET', path: /^\/metrics$/, handler: ({ res, log }) => sendMetrics(metrics.registry, res, log) },
    { method: 'GET', path: /^\/api\/stats$/, handler: async ({ res }) => sendJson(res, 200, await fleetStats(pool)) },
    { method: 'GET', path: /^\/api\/bundles$/, handler: async ({ res, url }) => sendJson(res, 200, await listBundles(pool, parseQuery(bundlesQuery, url))) },
    { method: 'GET', path: /^\/api\/alerts$/, handler: async ({ res, url }) => sendJson(res, 200, await listAlerts(pool, { all: parseQuery(alertsQuery, url).all, limit: 200 })) },
    { method: 'GET', path: /^\/api\/throughput$/, handler: async ({ res, url }) => sendJson(res, 200, await throughputByMinute(pool, parseQuery(throughputQuery, url).minutes)) },
    {
      method: 'POST',
      path: /^\/api\/alerts\/([^/]+)\/ack$/,
      write: true,
      async handler({ req, res, params, log }) {
        // No body is needed; one that is sent must be JSON and small.
        if (req.headers['content-length'] && req.headers['content-length'] !== '0') await readJson(req);
        const alert = await ackAlert(pool, segment(params[0]!, 'alert_id'));
        log.info({ alertId: alert.id, bundleId: alert.bundle_id }, 'alert acknowledged');
        sendJson(res, 200, alert);
      },
    },
    { method: 'GET', path: /^\/$/, handler: ({ res }) => sendPage(res, 200, statusPageHtml()) },
    {
      method: 'GET',
      path: /^\/ui\/bundles\/([^/]+)$/,
      handler({ res, params }) {
        let id: string;
        try {
          id = parseBundleId(segment(params[0]!, 'id'));
        } catch (err) {
          return sendPage(res, 400, errorPageHtml('Bad bundle id', (err as Error).message));
        }
        sendPage(res, 200, bundlePageHtml(id));
      },
    },
    {
      method: 'GET',
      path: /^\/ui\/([a-z-]+\.(?:js|css))$/,
      handler({ res, params }) {
        const asset = uiAsset(params[0]!);
        if (!asset) throw new NotFound(`no such file: /ui/${params[0]}`);
        res.writeHead(200, { 'content-type': asset.contentType, 'cache-control': 'no-cache', ...SECURITY_HEADERS }).end(asset.body);
      },
    },
  ];

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, reqLog: Logger): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://bundlefleet.invalid');
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const matching = routes.filter((r) => r.path.test(url.pathname));
    if (!matching.length) throw new NotFound(`no route ${url.pathname}`);
    const route = matching.find((r) => r.method === method);
    if (!route) throw new HttpError(405, `method ${req.method} not allowed on ${url.pathname}`, { allow: [...new Set(matching.map((r) => r.method))].join(', ') });
    if (route.write) {
      if (!authorized(req)) throw new HttpError(401, 'missing or wrong bearer token (Authorization: Bearer <BUNDLEFLEET_API_TOKEN>)', { 'www-authenticate': 'Bearer realm="bundlefleet"' });
      if (opts.apiToken === undefined && !sameOrigin(req)) throw new HttpError(403, 'cross-origin write refused');
    }
    const params = route.path.exec(url.pathname)!.slice(1);
    await route.handler({ req, res, url, params, log: reqLog });
  }

  // Bounded slow clients: headers within 10 s, the whole (small) request within 30 s.
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    const requestId = randomUUID();
    const started = performance.now();
    const reqLog = log.child({ requestId });
    res.setHeader('x-request-id', requestId);
    res.once('finish', () => {
      const line = { method: req.method, path: (req.url ?? '/').split('?')[0], status: res.statusCode, ms: Math.round(performance.now() - started) };
      // Polling (status page, probes, scrapes) stays at debug; writes and failures are worth a line.
      if (res.statusCode >= 500) reqLog.error(line, 'request failed');
      else if (req.method === 'POST' || res.statusCode >= 400) reqLog.info(line, 'request');
      else reqLog.debug(line, 'request');
    });
    handle(req, res, reqLog).catch((err: unknown) => {
      const closeAfter = err instanceof HttpError && err.status === 413;
      if (closeAfter) {
        // The rest of an oversized body is not read: answer, then close the connection.
        res.setHeader('connection', 'close');
        res.once('finish', () => req.destroy());
      }
      if (err instanceof HttpError) return sendJson(res, err.status, { error: err.message }, err.headers);
      if (err instanceof BadInput) return sendJson(res, 400, { error: 'bad input', issues: err.issues });
      if (err instanceof NotFound) return sendJson(res, 404, { error: err.message });
      if (err instanceof Conflict) return sendJson(res, 409, { error: err.message });
      if (isConnectionError(err)) {
        reqLog.error({ err: scrubText((err as Error).message) }, 'database unavailable');
        return sendJson(res, 503, { error: 'database unavailable, try again shortly', request_id: requestId }, { 'retry-after': '5' });
      }
      const e = err as Error;
      reqLog.error({ err: { type: e?.name, message: scrubText(String(e?.message)), code: (e as { code?: string })?.code, stack: e?.stack ? scrubText(e.stack) : undefined } }, 'request handler failed');
      sendJson(res, 500, { error: 'internal error', request_id: requestId });
    });
  });
  return server;
}

export interface StartedHttpServer {
  server: http.Server;
  /** e.g. http://127.0.0.1:8080 */
  url: string;
  /**
   * Stops listening, lets in-flight requests finish for up to `timeoutMs` (default 10 s), then
   * drops every connection left. Does not close the pool.
   */
  close(timeoutMs?: number): Promise<void>;
}

export async function startHttpServer(opts: HttpServerOptions & { port: number; host?: string }): Promise<StartedHttpServer> {
  const { port, host = '127.0.0.1', ...rest } = opts;
  const server = createHttpServer(rest);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const urlHost = address.address.includes(':') ? `[${address.address}]` : address.address;
  let closing: Promise<void> | undefined;
  return {
    server,
    url: `http://${urlHost}:${address.port}`,
    close: (timeoutMs = 10_000) =>
      (closing ??= new Promise<void>((resolve) => {
        const deadline = Date.now() + timeoutMs;
        // Keep-alive connections (the status page polls) go idle between requests: close them as they do.
        const sweep = setInterval(() => {
          server.closeIdleConnections();
          if (Date.now() >= deadline) server.closeAllConnections();
        }, 100);
        server.close(() => {
          clearInterval(sweep);
          resolve();
        });
        server.closeIdleConnections();
      })),
  };
}
