/**
 * `bundlefleet serve`: the HTTP API, health endpoints, Prometheus metrics and the status page, on
 * node:http. Small on purpose: one route table (routes.ts), one error mapping, no framework.
 *
 * Writes need `Authorization: Bearer <token>` when a token is configured. Without one the server
 * is for this machine only: it answers only requests whose Host names loopback (so a DNS
 * rebinding page cannot reach it) and refuses writes from another Origin. Input is validated with
 * the CLI's zod schemas (src/bundles/input.ts), so a field is refused the same way in both, and
 * nothing is written unless every check passed. Request bodies and payloads are never logged.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type pg from 'pg';
import { isConnectionError } from '../db/pool.js';
import { BadInput, Conflict, NotFound } from '../errors.js';
import { rootLogger, scrubText, type Logger } from '../logger.js';
import { isLoopbackHostHeader, makeAuthCheck, sameOrigin } from './guards.js';
import { HttpError, issueFields, MAX_BODY_BYTES, sendJson } from './io.js';
import { createMetrics, type Metrics } from './metrics.js';
import { routes } from './routes.js';

export { MAX_BODY_BYTES };

/** How long /readyz waits for `SELECT 1` before answering 503. */
const READY_TIMEOUT_MS = 2_000;

export interface HttpServerOptions {
  pool: pg.Pool;
  logger?: Logger;
  /**
   * When set, writes need `Authorization: Bearer <apiToken>` (401 otherwise). When unset, every
   * request must name a loopback Host (403 otherwise) and writes from another Origin are refused.
   */
  apiToken?: string;
  /** /readyz answers 503 while this returns true (first stage of shutdown). */
  isDraining?: () => boolean;
  /** Registry served at /metrics; default: a new one whose fleet gauges read `pool`. */
  metrics?: Metrics;
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

const LOOPBACK_ONLY = 'host not allowed: without BUNDLEFLEET_API_TOKEN this server answers only requests for localhost, 127.0.0.1 or [::1] (any port)';

export function createHttpServer(opts: HttpServerOptions): http.Server {
  const { pool } = opts;
  const base = opts.logger ?? rootLogger();
  const log = base.child({ component: 'http' });
  const authorized = makeAuthCheck(opts.apiToken);
  const tokenless = opts.apiToken === undefined;
  // The metrics logger binds component "metrics" itself: given `log`, its lines carried "component" twice.
  const metrics = opts.metrics ?? createMetrics({ logger: base });
  if (!opts.metrics) metrics.collectFromDb(pool);
  const table = routes({
    pool,
    metrics,
    isDraining: opts.isDraining ?? (() => false),
    ping: () => withTimeout(pool.query('SELECT 1'), READY_TIMEOUT_MS, 'SELECT 1'),
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, reqLog: Logger): Promise<void> {
    if (tokenless && !isLoopbackHostHeader(req.headers.host)) throw new HttpError(403, LOOPBACK_ONLY);
    const url = new URL(req.url ?? '/', 'http://bundlefleet.invalid');
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const matching = table.filter((r) => r.path.test(url.pathname));
    if (!matching.length) throw new NotFound(`no route ${url.pathname}`);
    const route = matching.find((r) => r.method === method);
    if (!route) throw new HttpError(405, `method ${req.method} not allowed on ${url.pathname}`, { allow: [...new Set(matching.map((r) => r.method))].join(', ') });
    if (route.write) {
      if (!authorized(req)) throw new HttpError(401, 'missing or wrong bearer token (Authorization: Bearer <BUNDLEFLEET_API_TOKEN>)', { 'www-authenticate': 'Bearer realm="bundlefleet"' });
      if (tokenless && !sameOrigin(req)) throw new HttpError(403, 'cross-origin write refused');
    }
    const params = route.path.exec(url.pathname)!.slice(1);
    await route.handler({ req, res, url, params, log: reqLog });
  }

  // Bounded slow clients: headers within 10 s, the whole (small) request within 30 s.
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    const requestId = randomUUID();
    const started = performance.now();
    const reqLog = log.child({ requestId });
    // What a refusal was about, added to the request's log line: never values, only names and reasons.
    let refusal: Record<string, unknown> = {};
    res.setHeader('x-request-id', requestId);
    res.once('finish', () => {
      const line = { method: req.method, path: (req.url ?? '/').split('?')[0], status: res.statusCode, ms: Math.round(performance.now() - started), ...refusal };
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
      if (err instanceof HttpError) {
        if (err.status < 500) refusal = { reason: scrubText(err.message) };
        return sendJson(res, err.status, { error: err.message, ...err.body }, err.headers);
      }
      if (err instanceof BadInput) {
        refusal = { fields: issueFields(err.issues), issues: err.issues.map((i) => scrubText(i).slice(0, 200)) };
        return sendJson(res, 400, { error: 'bad input', issues: err.issues });
      }
      if (err instanceof NotFound) return sendJson(res, 404, { error: err.message });
      if (err instanceof Conflict) {
        refusal = { reason: scrubText(err.message) };
        return sendJson(res, 409, { error: err.message });
      }
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
