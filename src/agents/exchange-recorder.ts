/**
 * Writes the provider exchanges a worker's agents make into `provider_exchanges`, batched with
 * GroupCommit (exchanges reported while a statement is in flight go together in the next one).
 * An append-only log beside the agents' work, never in their transactions: an exchange of a
 * stale agent is recorded too (it happened). A failure to record is a warning, never the agent's
 * failure, and `record` never waits for the database.
 */
import type { Queryable } from '../db/pool.js';
import { scrubText, type Logger } from '../logger.js';
import type { ProviderExchange } from '../providers/exchange.js';
import { GroupCommit } from './group-commit.js';
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

export class ExchangeRecorder {
  private readonly group: GroupCommit<ProviderExchange, void>;
  private readonly pending = new Set<Promise<void>>();
  private warnedAt = 0;

  constructor(
    db: Queryable,
    private readonly log: Logger,
  ) {
    this.group = new GroupCommit<ProviderExchange, void>({
      maxBatch: 500,
      write: async (batch) => {
        // Named only on a session and for small batches (db/statements.ts).
        await db.query(statement(db, 'bundlefleet_exchanges', INSERT_SQL, columns(batch), batch.length));
        return batch.map(() => undefined);
      },
    });
  }

  /** Queues one exchange; exchanges outside a bundle (no bundle id) are not kept. */
  record = (exchange: ProviderExchange): void => {
    if (!exchange.context.bundleId) return;
    const done: Promise<void> = this.group.submit(exchange).catch((err: unknown) => this.warn(err));
    this.pending.add(done);
    void done.finally(() => this.pending.delete(done));
  };

  /** Waits for what was queued so far (a stopping worker calls it before closing its pool). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }

  /** At most one warning a second: a database outage must not flood the log with one line per exchange. */
  private warn(err: unknown): void {
    const now = Date.now();
    if (now - this.warnedAt < 1000) return;
    this.warnedAt = now;
    this.log.warn({ err: scrubText(String((err as Error)?.message)) }, 'could not record provider exchanges (they are for inspection only; the bundles are not affected)');
  }
}
