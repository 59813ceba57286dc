/**
 * An in-memory simulator of the provider contract (DESIGN.md, "Providers") on node:http, with
 * fault injection and a ledger. `dev`, the tests, the chaos suite and the benchmarks run agents
 * against it, then read the ledger to check that no key was booked twice and that everything
 * a failed bundle booked was cancelled.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import type { ProviderKind } from './client.js';
import { scheduleTicketing, type TicketingOptions } from './ticketing-callbacks.js';
import { SimulatorRateLimit, type ProviderCall } from './rate-limit.js';
import { canonicalJson } from '../canonical-json.js';

export type { ProviderCall } from './rate-limit.js';

export interface SimulatorOptions {
  failRate?: number;
  lateRate?: number;
  /**
   * Share of bookings answered only after hangMs (made at once unless bookOnAnswer), past any client timeout: the
   * request stays in flight at the provider while the client gives up and retries.
   */
  slowRate?: number;
  hangRate?: number;
  noRate?: number;
  latencyMs?: number;
  seed?: number;
  hangMs?: number /* how long a hang lasts before the socket is destroyed; default 30000 */;
  /**
   * A provider without tombstones: a cancel of a key it has not seen answers `not_found` and
   * forgets the key, so a booking with that key arriving later is made (and stays live).
   */
  forgetUnknownCancels?: boolean;
  /**
   * As Stripe does: while a booking with key K is in flight (received, not yet answered or
   * dropped), another booking with K gets `409 {"error":"a request with this idempotency key is
   * in progress"}`.
   */
  concurrentConflict?: boolean;
  /**
   * A provider that makes a booking only as it answers, not when the request arrives: while a slow
   * booking is in flight, a lookup of its key finds nothing (and, with concurrentConflict, a second
   * request with the key gets 409 "in progress"), so neither tells it from a definitive no.
   */
  bookOnAnswer?: boolean;
  /** Airline ticketing confirmations sent back to bundlefleet's API (ticketing-callbacks.ts). */
  ticketing?: TicketingOptions;
}

/** The simulator's rate limit (rate-limit.ts). */
export interface SimulatorRateLimitOptions {
  /** Requests per second per kind; past it, `429` with `Retry-After`. */
  rateLimit?: number;
  /** Retry-After of those 429s in seconds; default the time until the window has room. */
  rateLimitRetryAfter?: number;
}

export interface LedgerEntry {
  kind: ProviderKind;
  idempotency_key: string;
  reference: string | null;
  status: 'booked' | 'cancelled' | 'refused';
  body: unknown;
  booked_at: string | null;
  cancelled_at: string | null;
  book_calls: number;
}

export interface ProviderSimulator {
  url: string;
  port: number;
  ledger(): LedgerEntry[];
  /** How often the stricter and more forgetful modes acted. */
  counters(): { in_progress_conflicts: number; forgotten_cancels: number };
  setFaults(o: Partial<SimulatorOptions>): void;
  /** Every request to a kind's routes, in arrival order, and whether it was answered 429. */
  calls(): ProviderCall[];
  /** Requests per second per kind before 429s; undefined lifts the limit. */
  setRateLimit(perSecond: number | undefined, retryAfterSeconds?: number): void;
  close(): Promise<void>;
}

const rate = z.number().min(0).max(1);
const faultsSchema = z.strictObject({
  failRate: rate, lateRate: rate, hangRate: rate, noRate: rate, slowRate: rate,
  latencyMs: z.number().int().min(0), hangMs: z.number().int().min(0), seed: z.number().int(),
  forgetUnknownCancels: z.boolean(), concurrentConflict: z.boolean(), bookOnAnswer: z.boolean(),
}).partial();
export const IN_PROGRESS_ERROR = 'a request with this idempotency key is in progress';

const text = z.string().min(1);
const count = z.number().int().positive();
const bodySchemas: Record<ProviderKind, z.ZodType> = {
  tickets: z.looseObject({ show_id: text, booking_id: text, customer_email: text, number_of_tickets: count }),
  flights: z.looseObject({ flight_id: text, booking_id: text, customer_email: text, passengers: z.array(text).min(1) }),
  taxis: z.looseObject({ booking_id: text, customer_email: text, number_of_passengers: count }),
};
const referencePrefix: Record<ProviderKind, string> = { tickets: 'TKT', flights: 'FLT', taxis: 'TAX' };

/**
 * Show and flight ids are UUIDs. Those starting with SOLD_OUT_PREFIX (a reserved range: "501d" for
 * "sold") are always refused (409): a deterministic definitive no, so tests and people trying
 * `dev` can drive a compensation on purpose, e.g. `--return-flight-id 501d0000-0000-4000-8000-000000000001`.
 */
export const SOLD_OUT_PREFIX = '501d0000-0000-4000-8000-';

/** The n-th id of the sold-out range. */
export function soldOutId(n: number): string {
  return `${SOLD_OUT_PREFIX}${(n % 2 ** 48).toString(16).padStart(12, '0')}`;
}

/**
 * A well-formed show or flight id for examples, tests, benchmarks and chaos runs: `series`
 * (0..0xffff, e.g. 1 shows, 2 inbound, 3 return flights) and `n` give a stable UUID outside the
 * sold-out range.
 */
export function exampleId(series: number, n: number): string {
  return `00000000-${series.toString(16).padStart(4, '0')}-4000-8000-${(n % 2 ** 48).toString(16).padStart(12, '0')}`;
}

function soldOut(body: unknown): boolean {
  const b = body as { show_id?: unknown; flight_id?: unknown };
  return [b?.show_id, b?.flight_id].some((v) => typeof v === 'string' && v.toLowerCase().startsWith(SOLD_OUT_PREFIX));
}

/** mulberry32: tiny, seedable, good enough to make a fault pattern repeatable. */
export function mulberry32(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Send = (status: number, body: unknown, headers?: Record<string, string>) => void;
const ROUTE = /^\/(tickets|flights|taxis)\/bookings(\/cancel)?$/;

export async function startProviderSimulator(opts: SimulatorOptions & SimulatorRateLimitOptions & { port?: number; host?: string } = {}): Promise<ProviderSimulator> {
  const { port: wantPort = 0, host = '127.0.0.1', ticketing = {}, ...faultOpts } = opts;
  const faults: Required<Omit<SimulatorOptions, 'seed' | 'ticketing'>> = {
    failRate: 0, lateRate: 0, hangRate: 0, noRate: 0, slowRate: 0, latencyMs: 0, hangMs: 30000, forgetUnknownCancels: false, concurrentConflict: false, bookOnAnswer: false,
  };
  let random: () => number = Math.random;
  const entries = new Map<string, LedgerEntry>();
  const timers = new Set<NodeJS.Timeout>();
  /** `kind:key` of bookings received and not yet answered or dropped (for concurrentConflict). */
  const inFlight = new Set<string>();
  const counters = { in_progress_conflicts: 0, forgotten_cancels: 0 };
  let sequence = 0;

  function setFaults(o: Partial<SimulatorOptions>): void {
    const parsed = faultsSchema.safeParse(o);
    if (!parsed.success) throw new RangeError(`provider simulator faults: ${z.prettifyError(parsed.error)}`);
    const { seed, ...rest } = parsed.data;
    Object.assign(faults, Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)));
    if (seed !== undefined) random = mulberry32(seed);
  }
  const { rateLimit, rateLimitRetryAfter, ...faultsOnly } = faultOpts;
  setFaults(faultsOnly);

  /** Timers are tracked so close() can drop pending latencies and hangs instead of waiting them out. */
  function after(ms: number, fn: () => void): void {
    const timer = setTimeout(() => { timers.delete(timer); fn(); }, ms);
    timers.add(timer);
  }

  function book(kind: ProviderKind, key: string, body: unknown): [number, unknown] {
    const id = `${kind}:${key}`;
    const entry = entries.get(id);
    if (entry) entry.book_calls += 1;
    // A cancelled key is spent: a late or replayed booking must never take effect after the undo.
    if (entry?.status === 'cancelled') return [409, { error: 'cancelled' }];
    if (entry && canonicalJson(entry.body) !== canonicalJson(body)) return [422, { error: 'idempotency key reused with a different body' }];
    if (entry?.status === 'refused') return [409, { error: 'sold out' }];
    if (entry) return [200, { reference: entry.reference, status: 'booked', booked_at: entry.booked_at }];
    const now = new Date().toISOString();
    // Drawn only for new bookings: a replay of a booked key must not turn into a "no".
    if (soldOut(body) || random() < faults.noRate) {
      entries.set(id, { kind, idempotency_key: key, reference: null, status: 'refused', body, booked_at: null, cancelled_at: null, book_calls: 1 });
      return [409, { error: 'sold out' }];
    }
    const reference = `${referencePrefix[kind]}-${String(++sequence).padStart(6, '0')}`;
    entries.set(id, { kind, idempotency_key: key, reference, status: 'booked', body, booked_at: now, cancelled_at: null, book_calls: 1 });
    return [201, { reference, status: 'booked', booked_at: now }];
  }

  function cancel(kind: ProviderKind, key: string): [number, unknown] {
    const id = `${kind}:${key}`;
    const entry = entries.get(id);
    if (entry?.status === 'booked') {
      entry.status = 'cancelled';
      entry.cancelled_at = new Date().toISOString();
    } else if (!entry) {
      // A forgetful provider keeps nothing: a booking that arrives after the undo will be made.
      if (faults.forgetUnknownCancels) {
        counters.forgotten_cancels++;
        return [200, { status: 'not_found' }];
      }
      // Remember the key so a booking that arrives after its undo is refused.
      entries.set(id, { kind, idempotency_key: key, reference: null, status: 'cancelled', body: null, booked_at: null, cancelled_at: new Date().toISOString(), book_calls: 0 });
    }
    return [200, { status: entries.get(id)!.reference ? 'cancelled' : 'not_found' }];
  }

  function handleBooking(kind: ProviderKind, req: http.IncomingMessage, body: unknown, send: Send): void {
    // Draw every fault on every booking POST so a seeded run stays repeatable.
    const [fail, hang, late] = [random() < faults.failRate, random() < faults.hangRate, random() < faults.lateRate];
    // Drawn only when asked for, so seeded runs without it keep their fault pattern.
    const slow = faults.slowRate > 0 && random() < faults.slowRate;
    const key = req.headers['idempotency-key'];
    // In flight from receipt until the provider itself answers or drops the request: a client
    // giving up does not stop the provider's work, so it does not end the request either.
    const flightId = typeof key === 'string' && key ? `${kind}:${key}` : undefined;
    if (flightId && faults.concurrentConflict && inFlight.has(flightId)) {
      counters.in_progress_conflicts++;
      return after(faults.latencyMs, () => send(409, { error: IN_PROGRESS_ERROR }));
    }
    if (flightId) inFlight.add(flightId);
    const settle = (fn: () => void) => () => {
      if (flightId) inFlight.delete(flightId);
      fn();
    };
    if (hang) return after(faults.hangMs, settle(() => req.socket.destroy()));
    if (fail) return after(faults.latencyMs, settle(() => send(503, { error: 'service unavailable (injected)' })));
    if (!flightId) return send(400, { error: 'missing Idempotency-Key header' });
    const check = bodySchemas[kind].safeParse(body);
    if (!check.success) return settle(() => send(400, { error: `missing or invalid field: ${check.error.issues.map((i) => i.path.join('.') || '(body)').join(', ')}` }))();
    const booking = () => {
      const [status, reply] = book(kind, key as string, body);
      if (status === 201 && kind === 'flights') scheduleTicketing(ticketing, key as string, (reply as { reference: string }).reference, random, after);
      return [status, reply] as const;
    };
    const made = faults.bookOnAnswer ? undefined : booking();
    // Late: the booking happened but the reply is lost, the case idempotent replay exists for.
    after(slow ? faults.hangMs : faults.latencyMs, settle(() => {
      const [status, reply] = made ?? booking();
      if (late) req.socket.destroy();
      else send(status, reply);
    }));
  }

  function handleCancel(kind: ProviderKind, body: unknown, send: Send): void {
    const key = (body as { idempotency_key?: unknown } | null)?.idempotency_key;
    if (typeof key !== 'string' || !key) return send(400, { error: 'missing field: idempotency_key' });
    if (random() < faults.failRate) return after(faults.latencyMs, () => send(503, { error: 'service unavailable (injected)' }));
    const [status, reply] = cancel(kind, key);
    after(faults.latencyMs, () => send(status, reply));
  }

  const limiter = new SimulatorRateLimit(rateLimit, rateLimitRetryAfter);

  function route(req: http.IncomingMessage, url: URL, body: unknown, reply: Send): void {
    let send = reply;
    if (req.method === 'GET' && url.pathname === '/__ledger') return send(200, [...entries.values()]);
    if (req.method === 'POST' && url.pathname === '/__faults') {
      const parsed = faultsSchema.safeParse(body);
      if (!parsed.success) return send(400, { error: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') });
      setFaults(parsed.data);
      return send(200, { ...faults });
    }
    const match = ROUTE.exec(url.pathname);
    if (!match) return send(404, { error: 'no such route' });
    const kind = match[1] as ProviderKind;
    const { call, retryAfter } = limiter.admit(kind);
    send = (status, answer, headers) => {
      call.done = Date.now();
      reply(status, answer, headers);
    };
    if (retryAfter !== undefined) return send(429, { error: `rate limit of ${limiter.perSecond}/s exceeded` }, { 'retry-after': String(retryAfter) });
    if (req.method === 'POST' && match[2]) return handleCancel(kind, body, send);
    if (req.method === 'POST') return handleBooking(kind, req, body, send);
    if (req.method === 'GET' && !match[2]) {
      const key = url.searchParams.get('idempotency_key');
      if (!key) return send(400, { error: 'missing query parameter: idempotency_key' });
      const entry = entries.get(`${kind}:${key}`);
      return entry ? send(200, entry) : send(404, { error: 'not found' });
    }
    send(405, { error: 'method not allowed' });
  }

  const server = http.createServer((req, res) => {
    const send: Send = (status, body, headers) => {
      if (res.destroyed || res.headersSent) return;
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
    };
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown = null;
      try {
        body = raw ? JSON.parse(raw) : null;
      } catch {
        return send(400, { error: 'body is not JSON' });
      }
      route(req, new URL(req.url ?? '/', 'http://simulator'), body, send);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(wantPort, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  let closing: Promise<void> | undefined; // close() twice is harmless

  return {
    url: `http://${urlHost}:${port}`,
    port,
    ledger: () => [...entries.values()].map((e) => ({ ...e })),
    counters: () => ({ ...counters }),
    setFaults,
    calls: () => limiter.calls(),
    setRateLimit: (perSecond, retryAfterSeconds) => limiter.set(perSecond, retryAfterSeconds),
    close: () => (closing ??= new Promise<void>((resolve, reject) => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      server.close((err) => (err ? reject(err) : resolve()));
      // Idle keep-alive and hanging sockets would otherwise hold close() open.
      server.closeAllConnections();
    })),
  };
}
