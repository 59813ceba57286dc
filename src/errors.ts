/**
 * Typed errors for the cases callers handle. The CLI maps them to exit codes
 * (BadInput → 2, NotFound → 1, Conflict → 1) and the HTTP server to status codes.
 */

export class BadInput extends Error {
  readonly code = 'BAD_INPUT';
  /** One message per offending field, e.g. `line 3: customer_email: Invalid email`. */
  constructor(message: string, readonly issues: string[] = [message], options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BadInput';
  }
}

/**
 * An idempotency key already used by a bundle enqueued with another payload, active key or kind version: a key
 * names one request, so another body with it is refused (CLI exit 2, HTTP 422) rather than
 * answered with that other request's bundle. Never names that bundle. Nothing of the refused
 * batch was written (bundles/enqueue.ts).
 */
export class IdempotencyKeyReused extends BadInput {
  /** The bundles of earlier batches of the same call, committed before this batch was refused. */
  enqueuedBefore: Array<{ vip_bundle_id: string; booking_id: string; created: boolean }> = [];

  /**
   * `index`: the item's position in the call's input (0-based); `where` (e.g. `item 3`) prefixes
   * the message; `earlierItem`: the item of the same input that gave the key another body;
   * `difference`: what differs (`a different body`, `a different active_key`, `kind version 2 (this request: 1)`).
   */
  constructor(readonly idempotencyKey: string, readonly index: number, where?: string, earlierItem?: string, readonly difference = 'a different body') {
    const used = earlierItem ? `is also given to ${earlierItem} with ${difference}` : `was already used with ${difference}`;
    const message = `${where ? `${where}: ` : ''}idempotency_key ${JSON.stringify(idempotencyKey)} ${used}; use a new key for a new booking`;
    super(message, [message]);
    this.name = 'IdempotencyKeyReused';
  }
}

export class NotFound extends Error {
  readonly code = 'NOT_FOUND';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NotFound';
  }
}

export class Conflict extends Error {
  readonly code = 'CONFLICT';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'Conflict';
  }
}

/** The schema is missing or older than this build: the fix is `bundlefleet migrate`. */
export class SchemaMissing extends Error {
  readonly code = 'SCHEMA_MISSING';
  constructor(message = 'the bundlefleet schema is missing: run `bundlefleet migrate`', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SchemaMissing';
  }
}

/**
 * A connection that must be a server session of its own (a worker's liveness lock and LISTEN)
 * turned out to be pooled per transaction: its session advisory lock is not held by the backend
 * that answers it, or its statements reach different backends. A configuration error (exit 2).
 */
export class SessionRequired extends Error {
  readonly code = 'SESSION_REQUIRED';
  constructor(what: string, options?: { cause?: unknown }) {
    super(
      `${what} needs a PostgreSQL session of its own, but its connection is pooled per transaction (PgBouncer pool_mode=transaction): ` +
        'set BUNDLEFLEET_SESSION_DATABASE_URL (or --session-database-url) to PostgreSQL directly or to a session-mode pooler, ' +
        'and DATABASE_URL may stay on the transaction pooler (README: "Running behind a pooler").',
      options,
    );
    this.name = 'SessionRequired';
  }
}

export type ProviderErrorType = 'transient' | 'permanent';

/**
 * A provider call that did not book. `transient` (429, 5xx, reset, timeout): the outcome is
 * unknown or temporary, retry with the same idempotency key. `permanent` (409 and other 4xx):
 * a definitive no, never retried.
 */
export class ProviderError extends Error {
  readonly code = 'PROVIDER_ERROR';
  constructor(
    message: string,
    readonly type: ProviderErrorType,
    readonly status?: number,
    options?: { cause?: unknown; retryAfterMs?: number },
  ) {
    super(message, options);
    this.name = 'ProviderError';
    this.retryAfterMs = options?.retryAfterMs;
  }
  /**
   * Set when the provider said when to come back (429 or 503 with `Retry-After`), or when flow
   * control holds the call back: the step is not retried within the attempt; the bundle is parked.
   */
  readonly retryAfterMs?: number;
  get transient(): boolean {
    return this.type === 'transient';
  }
  static transient(message: string, status?: number, cause?: unknown): ProviderError {
    return new ProviderError(message, 'transient', status, { cause });
  }
  static permanent(message: string, status?: number, cause?: unknown): ProviderError {
    return new ProviderError(message, 'permanent', status, { cause });
  }
}

/** Turns anything thrown into an Error, keeping the original as cause. */
export function coerceError(err: unknown): Error {
  if (err instanceof Error) return err;
  return new Error(typeof err === 'string' ? err : JSON.stringify(err), { cause: err });
}

/**
 * The embedded PostgreSQL cannot be used: there is none for this directory (exit 1), or this
 * machine cannot run it as set up (exit 2, a configuration problem). The message says what to do.
 */
export class EmbeddedDatabaseError extends Error {
  readonly code = 'EMBEDDED_DATABASE';
  constructor(message: string, readonly exitCode: 1 | 2, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EmbeddedDatabaseError';
  }
}

/** A port we were asked to listen on is taken; `what` names our listener ("the status page"). */
export class AddressInUse extends Error {
  readonly code = 'ADDRESS_IN_USE';
  constructor(readonly what: string, readonly host: string, readonly port: number, message?: string, options?: { cause?: unknown }) {
    super(message ?? `cannot start ${what}: ${host}:${port} is already in use by another program`, options);
    this.name = 'AddressInUse';
  }
}
