/**
 * The simulator's airline ticketing confirmations: after a flight is booked, the airline tickets
 * it asynchronously and says so by calling back — `POST {callback}/bundles/{bundle}/signals/
 * {inbound|return}_ticketed` with `{"id": "<key>:ticketed", "data": {"reference": ...}}` — after a
 * random delay; some never, some twice (the same id). vip v2 bundles wait for both before the taxi.
 * The bundle and flight are read from the idempotency key (`<bundle id>:<step>`), which is how
 * bundlefleet names its keys; other keys get no confirmation.
 */
export interface TicketingOptions {
  /** Base URL of bundlefleet's HTTP API (`serve`); no confirmations are sent without it. */
  callbackUrl?: string;
  /** Bearer token of that API, when it has one. */
  token?: string;
  /** Longest delay before a confirmation (uniform from 0). Default 200 ms. */
  maxDelayMs?: number;
  /** Share of flights never confirmed. Default 0. */
  missRate?: number;
  /** Share of confirmations sent twice. Default 0. */
  duplicateRate?: number;
}

const SIGNAL_BY_STEP: Record<string, string> = { inbound_flight: 'inbound_ticketed', return_flight: 'return_ticketed' };

export function ticketingSignalFor(idempotencyKey: string): { bundleId: string; signal: string } | undefined {
  const at = idempotencyKey.lastIndexOf(':');
  const signal = SIGNAL_BY_STEP[idempotencyKey.slice(at + 1)];
  return at > 0 && signal ? { bundleId: idempotencyKey.slice(0, at), signal } : undefined;
}

async function post(url: string, token: string | undefined, body: unknown): Promise<void> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(5_000),
      });
      await res.body?.cancel();
      if (res.status < 500) return; // delivered (or refused for good: a 4xx is not retried)
    } catch {
      // unreachable for now: try again
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Schedules the confirmation of a newly booked flight. `after` runs a callback later on the
 * simulator's clock (so closing the simulator drops pending ones); `random` is its seeded PRNG.
 */
export function scheduleTicketing(opts: TicketingOptions, key: string, reference: string, random: () => number, after: (ms: number, fn: () => void) => void): void {
  const target = opts.callbackUrl && ticketingSignalFor(key);
  if (!target) return;
  if (random() < (opts.missRate ?? 0)) return;
  const url = `${opts.callbackUrl!.replace(/\/+$/, '')}/bundles/${encodeURIComponent(target.bundleId)}/signals/${target.signal}`;
  const body = { id: `${key}:ticketed`, data: { reference } };
  const times = random() < (opts.duplicateRate ?? 0) ? 2 : 1;
  for (let i = 0; i < times; i++) after(Math.floor(random() * (opts.maxDelayMs ?? 200)), () => void post(url, opts.token, body));
}
