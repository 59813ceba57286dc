/** In-process fleet pieces for tests: a provider simulator and workers, all closed after the test. */
import { exampleId, startProviderSimulator, type ProviderSimulator, type SimulatorOptions } from '../../src/providers/simulator.js';
import { Worker, type WorkerOptions } from '../../src/scheduler/worker.js';
import { enqueueBundles, type EnqueueResult } from '../../src/bundles/enqueue.js';
import { createLogger } from '../../src/logger.js';
import type { AgentDeps } from '../../src/agents/agent.js';
import { Finisher } from '../../src/agents/finisher.js';
import { StepWriter } from '../../src/agents/step-writer.js';
import { ProviderClient } from '../../src/providers/client.js';
import type pg from 'pg';
import pgModule from 'pg';
import { claimBundles, type ClaimOptions, type ClaimedBundle } from '../../src/scheduler/claim.js';
import { WORKER_LOCK_KEY_SQL } from '../../src/scheduler/liveness.js';
import { runOnce, type SupervisorOptions } from '../../src/supervisor/supervisor.js';
import { onCleanup } from './db.js';

export const quietLogger = () => createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent', pretty: false });

export async function startSimulator(opts: SimulatorOptions = {}): Promise<ProviderSimulator> {
  const sim = await startProviderSimulator({ port: 0, host: '127.0.0.1', ...opts });
  onCleanup(() => sim.close());
  return sim;
}

export function simulatorUrls(sim: ProviderSimulator) {
  return { tickets: sim.url, flights: sim.url, taxis: sim.url };
}

export function startWorker(url: string, sim: ProviderSimulator, opts: Partial<WorkerOptions> = {}): Worker {
  const worker = new Worker({
    databaseUrl: url,
    providerUrls: simulatorUrls(sim),
    pollIntervalMs: 100,
    providerTimeoutMs: 2000,
    logger: quietLogger(),
    ...opts,
  });
  worker.start();
  onCleanup(() => worker.stop(0));
  return worker;
}

/** What a worker hands its agents, for tests that run one agent directly. */
export function agentDeps(pool: pg.Pool, sim: ProviderSimulator, overrides: Partial<AgentDeps> & { timeoutMs?: number } = {}): AgentDeps {
  const { timeoutMs = 2000, ...rest } = overrides;
  return {
    pool,
    providers: new ProviderClient(simulatorUrls(sim), { timeoutMs }),
    finisher: new Finisher(pool),
    steps: new StepWriter(pool),
    workerId: 'w',
    leaseSeconds: 60,
    logger: quietLogger(),
    ...rest,
  };
}

let n = 0;
export function vipPayload(i = n++) {
  return {
    customer_email: `customer${i}@example.com`,
    show_id: exampleId(1, i % 7),
    number_of_tickets: 1 + (i % 4),
    passengers: [`Passenger ${i} A`, `Passenger ${i} B`],
    inbound_flight_id: exampleId(2, i % 13),
    return_flight_id: exampleId(3, i % 11),
  };
}

/** VIP bundles of the four-booking version (v1); tests of the ticketing wait enqueue v2 themselves. */
export function enqueueVip(pool: pg.Pool, count: number, kindVersion = 1): Promise<EnqueueResult[]> {
  return enqueueBundles(pool, Array.from({ length: count }, () => ({ payload: vipPayload() })), { kindVersion });
}

/** Polls until `check` returns true, failing with `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export async function countByState(pool: pg.Pool): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ state: string; n: string }>('SELECT state, count(*) AS n FROM bundles GROUP BY state');
  return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
}

export async function allInState(pool: pg.Pool, states: string[]): Promise<boolean> {
  const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM bundles WHERE NOT (state = ANY($1))', [states]);
  return Number(rows[0]!.n) === 0;
}

/**
 * A claim as a live worker makes it: the claim succeeds only while its claimer holds its liveness
 * lock, so this holds the lock for `workerId` on a connection of its own (as a worker process
 * does) until `workerGone` or the end of the test.
 */
const lockHolders = new Map<string, pg.Client>();

export async function holdWorkerLock(pool: pg.Pool, workerId: string): Promise<void> {
  if (lockHolders.has(workerId)) return;
  const client = new pgModule.Client({ connectionString: (pool as unknown as { options: { connectionString: string } }).options.connectionString });
  await client.connect();
  client.on('error', () => {});
  // Another session (a test's own live worker) may hold it already: then it is held, which is all a claim needs.
  await client.query(`SELECT pg_try_advisory_lock(${WORKER_LOCK_KEY_SQL})`, [workerId]);
  lockHolders.set(workerId, client);
  onCleanup(() => workerGone(workerId));
}

/** The worker's process is gone: its liveness lock goes with its connection. */
export async function workerGone(workerId: string): Promise<void> {
  const client = lockHolders.get(workerId);
  lockHolders.delete(workerId);
  await client?.end();
}

export async function claimAs(pool: pg.Pool, opts: ClaimOptions): Promise<ClaimedBundle[]> {
  await holdWorkerLock(pool, opts.workerId);
  return claimBundles(pool, opts);
}

/** Supervisor passes every 200 ms until the test ends, as `supervise --loop` runs them. */
export function superviseInBackground(pool: pg.Pool, opts: SupervisorOptions = {}): void {
  let running = true;
  const done = (async () => {
    while (running) {
      await runOnce(pool, { backoffBaseSeconds: 0.05, backoffMaxSeconds: 0.2, logger: quietLogger(), ...opts }).catch(() => {});
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  onCleanup(async () => {
    running = false;
    await done;
  });
}
