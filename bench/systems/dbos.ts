/**
 * DBOS Transact (@dbos-inc/dbos-sdk 5.x), the durable-workflow peer on PostgreSQL (issue 12),
 * written as its documentation shows: a registered workflow of four `DBOS.runStep` calls, run from
 * a `DBOS.registerQueue` queue whose `workerConcurrency` is the concurrency bundlefleet gets.
 * Each step makes the very request bundlefleet's agent makes: the same step definition
 * (src/bundles/kinds.ts), the same ProviderClient, the same idempotency key (bundle id + step name,
 * the workflow id being the bundle id), the same simulator, the same PostgreSQL. Steps retry
 * transient errors as the agent does (3 tries, 100 ms first backoff), with DBOS's step retries.
 *
 * What DBOS does not do here that bundlefleet does: no local `tickets` row and no pg-boss events
 * (VipBundleFinalized_v1), no per-step history rows, no lease/fencing (DBOS recovers a workflow
 * on the restart of the executor that ran it, not while that executor might still be alive).
 */
import { DBOS, DBOSClient } from '@dbos-inc/dbos-sdk';
import pg from 'pg';
import { stepIdempotencyKey, vipKind } from '../../src/bundles/kinds.js';
import { ProviderClient, type ProviderUrls } from '../../src/providers/client.js';
import { now, waitFor } from '../lib/util.js';

export const QUEUE = 'vip_bundles';
export const WORKFLOW = 'vipBundle';

let providers: ProviderClient | undefined;

export interface VipArgs {
  bundleId: string;
  bookingId: string;
  payload: Record<string, unknown>;
}

/** The workflow: four steps in order, each one provider call checkpointed by DBOS. */
async function vipBundle(args: VipArgs): Promise<string[]> {
  const references: string[] = [];
  for (const step of vipKind.steps) {
    const ctx = { bundleId: args.bundleId, bookingId: args.bookingId, payload: args.payload, idempotencyKey: stepIdempotencyKey(args.bundleId, step.name), providers: providers! };
    const reference = await DBOS.runStep(async () => (await step.book(ctx)).reference, { name: step.name, retriesAllowed: true, maxAttempts: 3, intervalSeconds: 0.1, backoffRate: 2 });
    references.push(reference);
  }
  return references;
}



/** Configures and registers (once per launch; DBOS wants registration before launch). */
function configure(url: string, providerUrls: ProviderUrls, opts: { providerTimeoutMs?: number } = {}): void {
  providers = new ProviderClient(providerUrls, { timeoutMs: opts.providerTimeoutMs ?? 5000 });
  DBOS.setConfig({ name: 'bench-vip', systemDatabaseUrl: url, logLevel: 'error' });
  DBOS.registerWorkflow(vipBundle, { name: WORKFLOW });
}

/** A fresh system database: DBOS's own schema, migrated as its docs show (`DBOS.migrate`). */
export async function setup(url: string): Promise<void> {
  await DBOS.migrate(url);
}

/**
 * Enqueues `items` through DBOSClient (one `enqueue` per workflow: DBOS has no bulk enqueue), 32
 * in flight. Returns the seconds it took and the bundle ids (= workflow ids).
 */
export async function enqueue(url: string, items: Array<Omit<VipArgs, 'bundleId' | 'bookingId'>>, queue: QueueSettings): Promise<{ seconds: number; ids: string[] }> {
  const client = await DBOSClient.create({ systemDatabaseUrl: url });
  try {
    await client.registerQueue(QUEUE, queueOptions(queue));
    const ids = items.map(() => crypto.randomUUID());
    const t0 = now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < items.length) {
          const i = next++;
          const args: VipArgs = { bundleId: ids[i]!, bookingId: crypto.randomUUID(), payload: items[i]!.payload };
          await client.enqueue({ queueName: QUEUE, workflowName: WORKFLOW, workflowID: ids[i] }, args);
        }
      }),
    );
    return { seconds: (now() - t0) / 1000, ids };
  } finally {
    await client.destroy();
  }
}

export interface QueueSettings {
  concurrency: number;
  /** The queue's minimum polling interval; DBOS's default (1000 ms) when absent. */
  minPollingIntervalMs?: number;
}

export const queueOptions = (q: QueueSettings) => ({ workerConcurrency: q.concurrency, ...(q.minPollingIntervalMs ? { minPollingIntervalMs: q.minPollingIntervalMs } : {}) });

export async function countStatus(pool: pg.Pool, status: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM dbos.workflow_status WHERE status = $1', [status]);
  return rows[0]!.n;
}

/**
 * Launches DBOS in this process and times it from just before launch until the system database
 * shows all `n` workflows SUCCESS (polled every 2 ms, as for bundlefleet).
 */
export async function processAll(url: string, n: number, opts: QueueSettings & { providerUrls: ProviderUrls }): Promise<{ seconds: number; errors: number }> {
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  configure(url, opts.providerUrls);
  const t0 = now();
  try {
    await DBOS.launch();
    // Registered again after launch (DBOS keeps queue settings in the database): same settings.
    await DBOS.registerQueue(QUEUE, { ...queueOptions(opts), onConflict: 'always_update' });
    await waitFor('DBOS workflows SUCCESS', async () => (await countStatus(pool, 'SUCCESS')) + (await countStatus(pool, 'ERROR')) >= n, { intervalMs: 2, timeoutMs: 600_000 });
    const seconds = (now() - t0) / 1000;
    return { seconds, errors: await countStatus(pool, 'ERROR') };
  } finally {
    await DBOS.shutdown({ deregister: true });
    await pool.end();
  }
}

export { configure };
