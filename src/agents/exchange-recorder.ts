/**
 * Writes the provider exchanges a worker's agents make into `provider_exchanges`, in batches: an
 * exchange waits at most EXCHANGE_BATCH_DELAY_MS (or until MAX_BATCH are waiting) and goes with
 * the others reported meanwhile, in one statement, and one statement at a time: while one is in
 * flight (a slow database) the rest wait for it, so the recorder never holds more than one of the
 * connections the agents' fenced writes need. An append-only log beside the agents' work,
 * never in their transactions: an exchange of a stale agent is recorded too (it happened). A
 * failure to record is a warning, never the agent's failure, and `record` never waits for the
 * database; a stopping worker writes what is waiting (`flush`).
 *
 * Why a delay, when the agents' own writes have none (group-commit.ts): nobody waits for these
 * rows, and written as soon as possible they were 0.76 statements per bundle in scenario 5b, more
 * than the step writes, each a commit on cores the agents share. Batched over 100 ms they are
 * 0.02 per bundle: 5b 1.06×, 5a 1.05× (bench/README.md, "Exchanges batched over 100 ms"). The price:
 * `inspect` shows an exchange up to 100 ms later, and a SIGKILLed worker loses the exchanges of
 * its last 100 ms from the log (the bookings themselves are in `steps`, written before and after
 * each call; an exchange of a call still in flight at the kill was never recorded either).
 */
import type { Queryable } from '../db/pool.js';
import { scrubText, type Logger } from '../logger.js';
import type { ProviderExchange } from '../providers/exchange.js';
import { statement } from '../db/statements.js';

const INSERT_SQL = `INSERT INTO provider_exchanges
  (bundle_id, attempt, worker_id, step, provider, operation, method, path, status, outcome, error, duration_ms, request_body, response_body, at)
  SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int[], $10::text[],
                       $11::text[], $12::int[], $13::text[], $14::text[], $15::timestamptz[])`;

/** One column array per field, in INSERT_SQL's order. */
function columns(batch: ProviderExchange[]): unknown[][] {
  return [
    batch.map((e) => e.context.bundleId),
    batch.map((e) => e.context.attempt ?? null),
    batch.map((e) => e.context.workerId ?? null),
    batch.map((e) => e.context.step ?? null),
    batch.map((e) => e.provider),
    batch.map((e) => e.operation),
    batch.map((e) => e.method),
    batch.map((e) => e.path),
    batch.map((e) => e.status),
    batch.map((e) => e.outcome),
    batch.map((e) => e.error),
    batch.map((e) => e.durationMs),
    batch.map((e) => e.requestBody),
    batch.map((e) => e.responseBody),
    batch.map((e) => e.at),
  ];
}

/** How long an exchange may wait for others to share its statement. */
export const EXCHANGE_BATCH_DELAY_MS = 100;
const MAX_BATCH = 500;

export class ExchangeRecorder {
  private waiting: ProviderExchange[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** The one write in flight: while the database is slow, exchanges wait for it rather than take more of the agents' pool. */
  private inFlight: Promise<void> | undefined;
  /** A write was asked for (its delay ran out, or a full batch waits) while one was in flight: it goes when that one ends. */
  private due = false;
  /** The last write failed: the next waits for its delay rather than follow at once, and a stop gives up. */
  private failed = false;
  private warnedAt = 0;

  constructor(
    private readonly db: Queryable,
    private readonly log: Logger,
  ) {}

  /** Queues one exchange; exchanges outside a bundle (no bundle id) are not kept. */
  record = (exchange: ProviderExchange): void => {
    if (!exchange.context.bundleId) return;
    this.waiting.push(exchange);
    if (this.waiting.length >= MAX_BATCH) this.write();
    else this.waitForBatch();
  };

  /**
   * Writes what is waiting and waits for it (a stopping worker calls it before closing its pool).
   * Once a write fails, what still waits is dropped with a warning: with the database down, a stop
   * must not wait out one connection timeout per batch.
   */
  async flush(): Promise<void> {
    for (;;) {
      if (this.inFlight) {
        await this.inFlight;
        if (this.failed) break;
      } else if (this.waiting.length) this.write();
      else return;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    const dropped = this.waiting.length;
    this.waiting = [];
    if (dropped) this.log.warn({ dropped }, `stopping: ${dropped} provider exchange(s) not recorded, the database did not take the last write`);
  }

  private waitForBatch(): void {
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.write();
    }, EXCHANGE_BATCH_DELAY_MS).unref();
  }

  /** Starts a write of what waits, unless one is in flight: then it goes when that one ends. */
  private write(): void {
    if (this.inFlight) {
      this.due = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.due = false;
    if (!this.waiting.length) return;
    const batch = this.waiting.splice(0, MAX_BATCH);
    if (this.waiting.length) this.due = true; // more than a batch waited: the rest has waited too
    // Named only on a session and for small batches (db/statements.ts).
    this.inFlight = this.db.query(statement(this.db, 'bundlefleet_exchanges', INSERT_SQL, columns(batch), batch.length)).then(
      () => {
        this.failed = false;
      },
      (err: unknown) => {
        this.failed = true;
        this.warn(err);
      },
    ).finally(() => {
      this.inFlight = undefined;
      // Exchanges that came during the write wait for their own delay (their timer runs), so a
      // slow database still gets one statement per delay, not one right after another.
      if (this.due && !this.failed) this.write();
      else if (this.waiting.length) this.waitForBatch();
    });
  }

  /** At most one warning a second: a database outage must not flood the log with one line per exchange. */
  private warn(err: unknown): void {
    const now = Date.now();
    if (now - this.warnedAt < 1000) return;
    this.warnedAt = now;
    this.log.warn({ err: scrubText(String((err as Error)?.message)) }, 'could not record provider exchanges (they are for inspection only; the bundles are not affected)');
  }
}
