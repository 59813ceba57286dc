/**
 * What the provider client reports about each HTTP exchange it makes (its `onExchange` hook), and
 * the redaction every reported body goes through first: the logger's rules (`redactPersonal` for
 * personal fields, `scrubText` for email addresses in free text), plus every personal value the
 * request carried, wherever the reply repeats it. Bodies are then bounded.
 */
import { redactPersonal, scrubText } from '../logger.js';

/** Which unit of work an exchange belongs to. */
export interface ExchangeContext {
  bundleId?: string;
  step?: string;
  attempt?: number;
  workerId?: string;
}

export type ExchangeOperation = 'book' | 'cancel' | 'lookup';

export interface ProviderExchange {
  context: ExchangeContext;
  provider: string;
  operation: ExchangeOperation;
  method: string;
  /** Path and query, without the base URL. */
  path: string;
  /** null when no reply came (timeout, reset, abort). */
  status: number | null;
  /** `ok`, or how the client classified the failure. */
  outcome: 'ok' | 'transient' | 'permanent';
  error: string | null;
  durationMs: number;
  at: Date;
  /** Redacted and bounded (MAX_BODY_CHARS); null without a body. */
  requestBody: string | null;
  responseBody: string | null;
}

/** Longest body kept per exchange; a longer one is cut and says how much was left out. */
export const MAX_BODY_CHARS = 2048;
export const REDACTED = '[redacted]';

function strings(value: unknown, out: string[]): void {
  if (typeof value === 'string') {
    if (value.trim().length >= 2) out.push(value);
  } else if (Array.isArray(value)) {
    for (const v of value) strings(v, out);
  } else if (value && typeof value === 'object') {
    for (const v of Object.values(value)) strings(v, out);
  }
}

/** What the logger's redaction took out of `original` to make `redacted` (it copies only what it changes). */
function removed(original: unknown, redacted: unknown, out: string[]): void {
  if (original === redacted) return;
  if (redacted === REDACTED) return strings(original, out);
  if (original && redacted && typeof original === 'object' && typeof redacted === 'object') {
    for (const [k, v] of Object.entries(original)) removed(v, (redacted as Record<string, unknown>)[k], out);
  }
}

/** Every string under a personal field of `value` (the email and the passenger names of a booking), by the logger's rules. */
export function personalValues(value: unknown): string[] {
  const out: string[] = [];
  removed(value, redactPersonal(value), out);
  return out;
}

function scrubString(text: string, known: string[]): string {
  let out = text;
  for (const v of known) if (out.includes(v)) out = out.split(v).join(REDACTED);
  return scrubText(out);
}

function scrubStrings(value: unknown, known: string[]): unknown {
  if (typeof value === 'string') return scrubString(value, known);
  if (Array.isArray(value)) return value.map((v) => scrubStrings(v, known));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrubStrings(v, known)]));
  return value;
}

/** A copy of `value` with personal fields replaced (the logger's rules), known personal values cut out of other strings, and emails scrubbed. */
export function redactValue(value: unknown, known: string[]): unknown {
  return scrubStrings(redactPersonal(value), known);
}

export function bound(text: string): string {
  return text.length <= MAX_BODY_CHARS ? text : `${text.slice(0, MAX_BODY_CHARS)}…[${text.length - MAX_BODY_CHARS} more characters]`;
}

/** A request body (an object) as it is kept: redacted JSON, bounded. */
export function keptRequestBody(body: unknown, known: string[]): string | null {
  return body === undefined ? null : bound(JSON.stringify(redactValue(body, known)));
}

/** A reply as it is kept: its parsed JSON redacted, or (not JSON) its text scrubbed; bounded. */
export function keptResponseBody(text: string | undefined, parsed: unknown, known: string[]): string | null {
  if (!text) return null;
  if (parsed !== null && parsed !== undefined) return bound(JSON.stringify(redactValue(parsed, known)));
  // Cut before scrubbing: a huge non-JSON body costs no more than a small one.
  return bound(scrubString(text.slice(0, MAX_BODY_CHARS * 2), known));
}
