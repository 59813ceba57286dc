/**
 * The HTTP client agents use to talk to the ticket, flight and taxi providers (DESIGN.md,
 * "Providers"). Every failure is classified here, at the boundary, as a `ProviderError`:
 * `permanent` is a definitive no (409, other 4xx) and `transient` means "outcome unknown or
 * temporary" (408, 429, 5xx, resets, timeouts, aborts), to be resolved by replaying the call
 * with the same idempotency key. A 429 or 503 with `Retry-After` carries `retryAfterMs`: the
 * agent parks the bundle until then and pauses the kind (agents/park.ts) instead of retrying.
 * The client never retries by itself: retry policy belongs to the agent (p-retry) and the
 * supervisor, which record every attempt.
 *
 * Every exchange, a failed or timed-out one too, is reported to the optional `onExchange` hook
 * with the caller's context (bundle, step, attempt, worker: StepContext.exchange) and redacted, bounded bodies.
 */
import http from 'node:http';
import https from 'node:https';
import { BadInput, ProviderError } from '../errors.js';
import { injectHeaders, inSpan, SpanKind } from '../tracing.js';
import { keptRequestBody, keptResponseBody, personalValues, redactValue, type ExchangeContext, type ExchangeOperation, type ProviderExchange } from './exchange.js';

export type ProviderKind = 'tickets' | 'flights' | 'taxis';
export const providerKinds: readonly ProviderKind[] = ['tickets', 'flights', 'taxis'];

/** Base URL per kind; requests go to `${base}/${kind}/bookings...`, so one server may serve all three. */
export interface ProviderUrls {
  tickets: string;
  flights: string;
  taxis: string;
}

const overrideVar: Record<ProviderKind, string> = { tickets: 'TICKETS_URL', flights: 'FLIGHTS_URL', taxis: 'TAXIS_URL' };

/**
 * PROVIDERS_URL base, overridden per kind by TICKETS_URL, FLIGHTS_URL, TAXIS_URL. Throws BadInput
 * naming the flag and variable if a kind has neither (every such kind in one message, so one
 * fix is enough), or a variable that is not a URL.
 */
export function providerUrlsFromEnv(env: NodeJS.ProcessEnv): ProviderUrls {
  const base = env.PROVIDERS_URL?.trim() || undefined;
  const own = (kind: ProviderKind) => env[overrideVar[kind]]?.trim() || undefined;
  const missing = providerKinds.filter((kind) => !own(kind) && !base);
  if (missing.length) {
    const kinds = missing.map((kind) => `${kind} (${overrideVar[kind]})`);
    const list = kinds.length > 1 ? `${kinds.slice(0, -1).join(', ')} and ${kinds.at(-1)}` : kinds[0];
    throw new BadInput(`--providers-url (PROVIDERS_URL): is not set, and ${list} ${missing.length > 1 ? 'have no URL of their own' : 'has no URL of its own'}: set it to the providers' base URL, e.g. http://127.0.0.1:4010`);
  }
  const urls = {} as ProviderUrls;
  for (const kind of providerKinds) urls[kind] = own(kind) ? checkedBaseUrl(overrideVar[kind], own(kind)!) : checkedBaseUrl('PROVIDERS_URL', base!);
  return urls;
}

function checkedBaseUrl(name: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch (err) {
    throw new BadInput(`${name}: not a URL: ${JSON.stringify(value)}`, undefined, { cause: err });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new BadInput(`${name}: must be an http(s) URL, got ${JSON.stringify(value)}`);
  // Keep any path prefix (http://gw/api → http://gw/api/tickets/bookings); drop the trailing slash.
  return url.href.replace(/\/+$/, '');
}

/** What a provider holds for one idempotency key. */
export type ProviderHolding = { status: 'booked'; reference: string } | { status: 'cancelled' | 'refused' | 'none' };

export interface BookResult {
  reference: string;
  status: number;
}

interface Reply {
  status: number;
  body: unknown;
}

/** Longest Retry-After honoured; a provider asking for more gets asked again after an hour. */
export const MAX_RETRY_AFTER_MS = 3_600_000;

/**
 * `Retry-After` in milliseconds from now: delta-seconds (`3`) or an HTTP-date
 * (`Wed, 21 Oct 2026 07:28:00 GMT`, a date in the past is 0). Undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  const text = value?.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Math.min(Number(text) * 1000, MAX_RETRY_AFTER_MS);
  const at = Date.parse(text);
  if (Number.isNaN(at) || !/[a-z]/i.test(text)) return undefined;
  return Math.min(Math.max(0, at - now), MAX_RETRY_AFTER_MS);
}

/** Which call a request is, for the exchange it is reported as. */
interface Call {
  provider: ProviderKind;
  operation: ExchangeOperation;
  context?: ExchangeContext;
}

export interface ProviderClientOptions {
  /** Per request, default 5000 ms. */
  timeoutMs?: number;
  /** Told about every exchange (after it ended); must not throw, and is not awaited. */
  onExchange?: (exchange: ProviderExchange) => void;
}

export class ProviderClient {
  /** Longest one request may take (the agent checks its lease deadline against it before each call). */
  readonly timeoutMs: number;
  private readonly onExchange?: (exchange: ProviderExchange) => void;

  constructor(
    private readonly urls: ProviderUrls,
    opts: ProviderClientOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.onExchange = opts.onExchange;
  }

  /** Books with `idempotencyKey`; replaying the same key and body gives the same reference. */
  async book(kind: ProviderKind, idempotencyKey: string, body: Record<string, unknown>, signal?: AbortSignal, context?: ExchangeContext): Promise<BookResult> {
    const what = `${kind} booking ${idempotencyKey}`;
    const call: Call = { provider: kind, operation: 'book', context };
    const reply = await this.request(call, what, 'POST', this.url(kind, '/bookings'), signal, body, { 'idempotency-key': idempotencyKey });
    const reference = (reply.body as { reference?: unknown } | null)?.reference;
    if ((reply.status === 200 || reply.status === 201) && typeof reference === 'string' && reference) {
      return { reference, status: reply.status };
    }
    // A success without a reference leaves the outcome unknown; a replay with the same key settles it.
    throw ProviderError.transient(`${what}: unexpected ${reply.status} reply without a reference`, reply.status);
  }

  /** Cancels what `idempotencyKey` booked; `not_found` also tells the provider to refuse that key later. */
  async cancel(kind: ProviderKind, idempotencyKey: string, signal?: AbortSignal, context?: ExchangeContext): Promise<'cancelled' | 'not_found'> {
    const what = `${kind} cancel ${idempotencyKey}`;
    const reply = await this.request({ provider: kind, operation: 'cancel', context }, what, 'POST', this.url(kind, '/bookings/cancel'), signal, { idempotency_key: idempotencyKey });
    const status = (reply.body as { status?: unknown } | null)?.status;
    if (status === 'cancelled' || status === 'not_found') return status;
    throw ProviderError.transient(`${what}: unexpected ${reply.status} reply ${JSON.stringify(reply.body)}`, reply.status);
  }

  /**
   * What the provider holds for `idempotencyKey` (`GET /{kind}/bookings?idempotency_key=`): a live
   * booking with its reference, a cancelled one (or a remembered cancel), a refusal, or nothing
   * (404). This is how an agent resolves a step whose outcome is unknown before it replays or
   * cancels it, and how a reconciliation pass finds what is still live for an undone bundle.
   */
  async lookup(kind: ProviderKind, idempotencyKey: string, signal?: AbortSignal, context?: ExchangeContext): Promise<ProviderHolding> {
    const what = `${kind} lookup ${idempotencyKey}`;
    const url = `${this.url(kind, '/bookings')}?idempotency_key=${encodeURIComponent(idempotencyKey)}`;
    const reply = await this.request({ provider: kind, operation: 'lookup', context }, what, 'GET', url, signal, undefined, {}, [404]);
    if (reply.status === 404) return { status: 'none' };
    const body = reply.body as { status?: unknown; reference?: unknown } | null;
    if (body?.status === 'booked' && typeof body.reference === 'string' && body.reference) return { status: 'booked', reference: body.reference };
    if (body?.status === 'cancelled' || body?.status === 'refused') return { status: body.status };
    throw ProviderError.transient(`${what}: unexpected ${reply.status} reply ${JSON.stringify(reply.body).slice(0, 200)}`, reply.status);
  }

  private url(kind: ProviderKind, path: string): string {
    const base = this.urls[kind];
    if (!base) throw new BadInput(`unknown provider kind ${JSON.stringify(kind)}`);
    return `${base}/${kind}${path}`;
  }

  /**
   * One HTTP exchange, as a client span in the active trace (named `<METHOD> <path>`, e.g.
   * `POST /tickets/bookings`) whose W3C `traceparent` goes to the provider with the request.
   */
  private request(call: Call, what: string, method: string, url: string, signal: AbortSignal | undefined, body?: unknown, headers: Record<string, string> = {}, accept: number[] = []): Promise<Reply> {
    // The path without origin and query: low-cardinality span name (`POST /tickets/bookings`).
    const path = url.slice(url.indexOf('/', url.indexOf('//') + 2)).split('?')[0];
    return inSpan(`${method} ${path}`, { kind: SpanKind.CLIENT }, async (span) => {
      if (span.isRecording()) {
        const target = new URL(url);
        span.setAttributes({ 'http.request.method': method, 'url.full': target.href, 'server.address': target.hostname, 'server.port': Number(target.port) || (target.protocol === 'https:' ? 443 : 80) });
      }
      const reply = await this.send(call, what, method, url, signal, body, injectHeaders({ ...headers }), accept).catch((err: unknown) => {
        if (err instanceof ProviderError && err.status !== undefined) span.setAttribute('http.response.status_code', err.status);
        throw err;
      });
      span.setAttribute('http.response.status_code', reply.status);
      return reply;
    });
  }

  /** One HTTP exchange; returns 2xx replies (and `accept`ed statuses), throws a classified ProviderError otherwise. */
  private async send(call: Call, what: string, method: string, url: string, signal: AbortSignal | undefined, body?: unknown, headers: Record<string, string> = {}, accept: number[] = []): Promise<Reply> {
    // The timeout and the caller's signal end the request themselves (exchange()): no
    // AbortSignal.timeout(), whose timer and signal lived the whole timeout after the reply, no
    // AbortSignal.any(), whose signals V8 keeps through young-generation GCs (they are held by
    // WeakRefs, which a scavenge treats as strong), and no AbortController per request for
    // node:http's `signal` option (a signal, its listener and an end-of-stream watcher per call).
    // Each of them moved request objects to the old generation, whose size sets the worker's peak
    // RSS (bench scenario 7).
    const at = new Date();
    const started = performance.now();
    let status: number;
    let text: string;
    let retryAfter: string | undefined;
    try {
      ({ status, text, retryAfter } = await exchange(url, method, { accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers }, body === undefined ? undefined : JSON.stringify(body), this.timeoutMs, signal));
    } catch (err) {
      const failure = ProviderError.transient(`${what}: ${describeFailure(err, signal)}`, undefined, err);
      this.report(call, { method, url, at, started, body, error: failure });
      throw failure;
    }
    const parsed = parseJson(text);
    const refusal = (status >= 200 && status < 300) || accept.includes(status) ? undefined : classify(what, status, parsed, text, retryAfter);
    this.report(call, { method, url, at, started, body, status, text, parsed, error: refusal });
    if (refusal) throw refusal;
    return { status, body: parsed };
  }

  /** Tells the hook about one exchange; a hook that throws never fails the call. */
  private report(call: Call, x: { method: string; url: string; at: Date; started: number; body?: unknown; status?: number; text?: string; parsed?: unknown; error?: ProviderError }): void {
    if (!this.onExchange) return;
    try {
      const known = personalValues(x.body);
      const target = new URL(x.url);
      this.onExchange({
        context: { ...call.context },
        provider: call.provider,
        operation: call.operation,
        method: x.method,
        path: `${target.pathname}${target.search}`,
        status: x.status ?? null,
        outcome: x.error ? x.error.type : 'ok',
        error: x.error ? (redactValue(x.error.message, known) as string) : null,
        durationMs: Math.round(performance.now() - x.started),
        at: x.at,
        requestBody: keptRequestBody(x.body, known),
        responseBody: keptResponseBody(x.text, x.parsed, known),
      });
    } catch {
      // Recording is for inspection only; the booking goes on without it.
    }
  }
}

function classify(what: string, status: number, body: unknown, text: string, retryAfter?: string): ProviderError {
  const said = (body as { error?: unknown } | null)?.error;
  const detail = typeof said === 'string' ? said : text.slice(0, 200) || '(empty body)';
  const message = `${what}: provider answered ${status}: ${detail}`;
  const cause = { status, body: body ?? text };
  // The provider said when to come back: the agent parks the bundle instead of retrying now.
  const retryAfterMs = status === 429 || status === 503 ? parseRetryAfter(retryAfter) : undefined;
  if (retryAfterMs !== undefined) return new ProviderError(message, 'transient', status, { cause, retryAfterMs });
  if (status === 408 || status === 429 || status >= 500) return ProviderError.transient(message, status, cause);
  if (status >= 400) return ProviderError.permanent(message, status, cause);
  // 1xx/3xx are not part of the contract; treat the outcome as unknown rather than as a "no".
  return ProviderError.transient(message, status, cause);
}

function describeFailure(err: unknown, signal: AbortSignal | undefined): string {
  if (signal?.aborted) return 'aborted by caller';
  if (err instanceof ExchangeTimeout) return err.message;
  const code = (err as { code?: unknown } | null)?.code;
  const reason = err instanceof Error ? err.message : String(err);
  return typeof code === 'string' && !reason.includes(code) ? `${code}: ${reason}` : reason;
}

/**
 * Keep-alive agents shared by every client in the process. node:http rather than fetch: measured
 * in the benchmarks, fetch managed about 1,700 provider requests/s on one core against 8,400/s for
 * node:http with keep-alive, and left the worker's RSS 75 MiB higher at concurrency 50.
 */
const agents = {
  'http:': new http.Agent({ keepAlive: true, maxSockets: 256 }),
  'https:': new https.Agent({ keepAlive: true, maxSockets: 256 }),
};

/** The client's own timeout ended an exchange. */
class ExchangeTimeout extends Error {
  override name = 'TimeoutError';
}

/**
 * One request and its whole body; rejects on socket errors, when `signal` aborts, and when the
 * whole exchange (body included) takes longer than `timeoutMs`; the request is destroyed then.
 */
function exchange(url: string, method: string, headers: Record<string, string>, body: string | undefined, timeoutMs: number, signal: AbortSignal | undefined): Promise<{ status: number; text: string; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal));
      return;
    }
    const target = new URL(url);
    const transport = target.protocol === 'https:' ? https : http;
    const req = transport.request(target, {
      method,
      agent: agents[target.protocol as 'http:' | 'https:'],
      headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) },
    });
    let ended = false;
    const end = (err: unknown, reply?: { status: number; text: string; retryAfter?: string }) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (reply) resolve(reply);
      else {
        req.destroy();
        reject(err);
      }
    };
    const onAbort = () => end(abortError(signal!));
    // The timeout covers the body too: a provider that stalls mid-body is still a timeout.
    const timer = setTimeout(() => end(new ExchangeTimeout(`timed out after ${timeoutMs} ms`)), timeoutMs).unref();
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', end);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', end);
      res.on('aborted', () => end(Object.assign(new Error('response aborted'), { code: 'ECONNRESET' })));
      res.on('end', () => end(undefined, { status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), retryAfter: res.headers['retry-after'] }));
    });
    req.end(body);
  });
}

/** What a request aborted through its signal rejects with (describeFailure reads the signal, not this). */
function abortError(signal: AbortSignal): Error {
  return new Error('aborted', { cause: signal.reason });
}

function parseJson(text: string): unknown {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
