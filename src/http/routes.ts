/**
 * The route table of `serve`. Each route is a method, a path pattern and a handler; `write` routes
 * need the bearer token when one is configured (checked by the server before the handler runs).
 *
 *   POST /book-vip-bundle              enqueue (201 created, 200 replayed, 422 key reused,  [token]
 *                                      409 active key held by another bundle)
 *   GET  /bundles/:id                  inspect JSON (vip_bundle_id or booking_id)
 *   POST /bundles/:id/retry|cancel     the operator's retry and cancel (as the CLI's)       [token]
 *   POST /bundles/:id/ack              acknowledge a compensated/dead bundle's failure       [token]
 *   POST /bundles/:id/signals/:name    an external confirmation, body {"id"?, "data"?}      [token]
 *   GET  /healthz, /readyz             alive; database reachable and not draining
 *   GET  /metrics                      Prometheus text
 *   GET  /api/stats | /api/bundles?state=&limit= | /api/alerts?all= | /api/throughput?minutes=
 *   GET  /api/attention?reason=&limit= bundles that need attention (stuck, dead, retrying)
 *   POST /api/alerts/:id/ack           acknowledge an alert                                 [token]
 *   GET  /, /ui/bundles/:id, /ui/*     the status page, a bundle's page, their files (src/http/static/)
 */
import type http from 'node:http';
import type pg from 'pg';
import { z } from 'zod';
import { enqueueBundles } from '../bundles/enqueue.js';
import { ackBundle, ActiveKeyTaken } from '../bundles/active-keys.js';
import { parseSignal, receiveSignal } from '../bundles/signals.js';
import { parseBundleId, parseVipBundle } from '../bundles/input.js';
import { BUNDLE_STATES, fleetStats, inspectBundle, listBundles, throughputByMinute } from '../bundles/read.js';
import { BadInput, IdempotencyKeyReused, NotFound } from '../errors.js';
import type { Logger } from '../logger.js';
import { ackAlert, listAlerts } from '../supervisor/alerts.js';
import { cancelBundle, retryBundle, type OperatorResult } from '../supervisor/operator.js';
import { ATTENTION_REASONS, needsAttention } from './attention.js';
import { HttpError, parseQuery, readJson, readOptionalJson, SECURITY_HEADERS, segment, sendJson, sendPage } from './io.js';
import { sendMetrics, type Metrics } from './metrics.js';
import { bundlePageHtml, errorPageHtml, statusPageHtml, uiAsset } from './pages.js';
import { extractHeaders, inSpan, SpanKind } from '../tracing.js';
import { integerText } from '../number-text.js';

export interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  url: URL;
  params: string[];
  log: Logger;
}

export interface Route {
  method: 'GET' | 'POST';
  path: RegExp;
  write?: boolean;
  handler: (ctx: Ctx) => Promise<void> | void;
}

export interface RouteDeps {
  pool: pg.Pool;
  metrics: Metrics;
  /** Answers /readyz: true while the server drains. */
  isDraining: () => boolean;
  /** `SELECT 1` within the readiness timeout; rejects otherwise. */
  ping: () => Promise<unknown>;
}

const bundlesQuery = z.object({
  state: z.enum(BUNDLE_STATES, `must be one of ${BUNDLE_STATES.join(', ')}`).optional(),
  limit: integerText(1, 500).default(20),
});
const attentionQuery = z.object({
  reason: z.enum(ATTENTION_REASONS, `must be one of ${ATTENTION_REASONS.join(', ')}`).optional(),
  limit: integerText(1, 500).default(25),
});
const alertsQuery = z.object({ all: z.stringbool({ error: 'must be true or false' }).default(false) });
const throughputQuery = z.object({
  minutes: integerText(1, 180).default(15),
});

/** Validates an enqueue body and its Idempotency-Key header together, so every problem is listed at once. */
function parseEnqueueRequest(req: http.IncomingMessage, body: unknown): { payload: Record<string, unknown>; idempotencyKey?: string; activeKey?: string } {
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
  const { idempotency_key, active_key, ...payload } = input;
  return { payload, idempotencyKey: idempotency_key ?? (headerKey || undefined), activeKey: active_key };
}

/** The operator result as the API shows it: ids and the transition, nothing internal. */
function operatorView(r: OperatorResult): OperatorResult {
  return { vip_bundle_id: r.vip_bundle_id, booking_id: r.booking_id, from_state: r.from_state, state: r.state };
}

/**
 * A route whose requests are server spans (tracing.ts): the root of a new bundle's trace, or a
 * child of the caller's span when the request carries a W3C traceparent.
 */
function traced(route: Route, template: string): Route {
  const attributes = { 'http.request.method': route.method, 'http.route': template };
  return {
    ...route,
    handler: (ctx) =>
      inSpan(`${route.method} ${template}`, { kind: SpanKind.SERVER, parent: extractHeaders(ctx.req.headers), attributes }, async (span) => {
        await route.handler(ctx);
        span.setAttribute('http.response.status_code', ctx.res.statusCode);
      }),
  };
}

export function routes({ pool, metrics, isDraining, ping }: RouteDeps): Route[] {
  const operatorRoute = (action: 'retry' | 'cancel', run: typeof retryBundle): Route => ({
    method: 'POST',
    path: new RegExp(`^/bundles/([^/]+)/${action}$`),
    write: true,
    async handler({ req, res, params, log }) {
      await readOptionalJson(req);
      const result = operatorView(await run(pool, segment(params[0]!, 'id'), 'http'));
      log.info({ bundleId: result.vip_bundle_id, from: result.from_state, to: result.state }, `operator ${action} over HTTP`);
      sendJson(res, 200, result);
    },
  });

  return [
    traced({
      method: 'POST',
      path: /^\/book-vip-bundle$/,
      write: true,
      async handler({ req, res, log }) {
        const item = parseEnqueueRequest(req, await readJson(req));
        const [result] = await enqueueBundles(pool, [item], { actor: 'http' }).catch((err: unknown) => {
          // A key names one request (IETF Idempotency-Key draft, Stripe): enqueueBundles refuses it with another body (or kind version).
          if (err instanceof IdempotencyKeyReused) {
            throw new HttpError(422, `Idempotency-Key ${JSON.stringify(err.idempotencyKey)} was already used with ${err.difference}; use a new key for a new booking`, {}, { idempotency_key: err.idempotencyKey });
          }
          if (!(err instanceof ActiveKeyTaken)) throw err;
          const { active_key, vip_bundle_id, state } = err.holders[0]!;
          throw new HttpError(409, err.message, {}, { active_key, vip_bundle_id, state });
        });
        const { vip_bundle_id, booking_id, created } = result!;
        log.info({ bundleId: vip_bundle_id, created }, created ? 'bundle enqueued' : 'bundle already enqueued (same idempotency key)');
        sendJson(res, created ? 201 : 200, { vip_bundle_id, booking_id }, { location: `/bundles/${vip_bundle_id}`, ...(created ? {} : { 'idempotent-replayed': 'true' }) });
      },
    }, '/book-vip-bundle'),
    { method: 'GET', path: /^\/bundles\/([^/]+)$/, handler: async ({ res, params }) => sendJson(res, 200, await inspectBundle(pool, segment(params[0]!, 'id'))) },
    operatorRoute('retry', retryBundle),
    operatorRoute('cancel', cancelBundle),
    {
      method: 'POST',
      path: /^\/bundles\/([^/]+)\/ack$/,
      write: true,
      async handler({ req, res, params, log }) {
        await readOptionalJson(req);
        const r = await ackBundle(pool, segment(params[0]!, 'id'), 'http');
        log.info({ bundleId: r.vip_bundle_id, state: r.state, activeKeyReleased: r.active_key !== null }, 'operator acknowledged a failure over HTTP');
        sendJson(res, 200, r);
      },
    },
    traced({
      method: 'POST',
      path: /^\/bundles\/([^/]+)\/signals\/([^/]+)$/,
      write: true,
      async handler({ req, res, params, log }) {
        const hasBody = (req.headers['content-length'] && req.headers['content-length'] !== '0') || req.headers['transfer-encoding'];
        const body = (hasBody ? await readJson(req) : {}) as Record<string, unknown>;
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new BadInput('(body): must be a JSON object with optional "id" and "data"');
        // The signal schema names unknown fields and bad values (bundles/signals.ts).
        const { id, data } = parseSignal({ ...body, name: segment(params[1]!, 'name') });
        const result = await receiveSignal(pool, { bundleId: segment(params[0]!, 'id'), name: segment(params[1]!, 'name'), id, data, actor: 'http' });
        log.info({ bundleId: result.vip_bundle_id, signal: result.name, stored: result.stored, woke: result.woke }, result.stored ? 'signal received' : 'signal already received');
        sendJson(res, result.stored ? 201 : 200, result);
      },
    }, '/bundles/:id/signals/:name'),
    { method: 'GET', path: /^\/healthz$/, handler: ({ res }) => sendJson(res, 200, { status: 'ok' }) },
    {
      method: 'GET',
      path: /^\/readyz$/,
      async handler({ res, log }) {
        if (isDraining()) return sendJson(res, 503, { status: 'draining' });
        try {
          await ping();
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
    { method: 'GET', path: /^\/api\/attention$/, handler: async ({ res, url }) => sendJson(res, 200, await needsAttention(pool, parseQuery(attentionQuery, url))) },
    { method: 'GET', path: /^\/api\/alerts$/, handler: async ({ res, url }) => sendJson(res, 200, await listAlerts(pool, { all: parseQuery(alertsQuery, url).all, limit: 200 })) },
    { method: 'GET', path: /^\/api\/throughput$/, handler: async ({ res, url }) => sendJson(res, 200, await throughputByMinute(pool, parseQuery(throughputQuery, url).minutes)) },
    {
      method: 'POST',
      path: /^\/api\/alerts\/([^/]+)\/ack$/,
      write: true,
      async handler({ req, res, params, log }) {
        await readOptionalJson(req);
        const alert = await ackAlert(pool, segment(params[0]!, 'alert_id'));
        log.info({ alertId: alert.id, bundleId: alert.bundle_id }, 'alert acknowledged');
        sendJson(res, 200, alert);
      },
    },
    { method: 'GET', path: /^\/$/, handler: async ({ res }) => sendPage(res, 200, await statusPageHtml()) },
    {
      method: 'GET',
      path: /^\/ui\/bundles\/([^/]+)$/,
      async handler({ res, params }) {
        try {
          parseBundleId(segment(params[0]!, 'id'));
        } catch (err) {
          return sendPage(res, 400, await errorPageHtml('Bad bundle id', (err as Error).message));
        }
        sendPage(res, 200, await bundlePageHtml());
      },
    },
    {
      method: 'GET',
      path: /^\/ui\/([^/]+)$/,
      async handler({ res, params }) {
        const asset = await uiAsset(params[0]!);
        if (!asset) throw new NotFound(`no such file: /ui/${params[0]}`);
        res.writeHead(200, { 'content-type': asset.contentType, 'cache-control': 'no-cache', ...SECURITY_HEADERS }).end(asset.body);
      },
    },
  ];
}
