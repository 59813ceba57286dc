// The core issue's acceptance measurement: 50 VIP bundles, one worker (concurrency 10), simulator providers,
// fresh embedded PostgreSQL. Prints bundles/s from worker start to the last completion.
import { mkdtemp, chmod, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
const dist = new URL('../dist', import.meta.url).pathname; // built by npm ci / npm run build
const { ensureEmbeddedPostgres, stopEmbeddedPostgres } = await import(`${dist}/db/embedded.js`);
const { createPool } = await import(`${dist}/db/pool.js`);
const { migrate } = await import(`${dist}/db/migrate.js`);
const { enqueueBundles } = await import(`${dist}/bundles/enqueue.js`);
const { Worker } = await import(`${dist}/scheduler/worker.js`);
const { startProviderSimulator } = await import(`${dist}/providers/simulator.js`);
const { createLogger } = await import(`${dist}/logger.js`);

const N = 50;
const home = await mkdtemp(join(tmpdir(), 'bf-measure-'));
await chmod(home, 0o755);
const url = await ensureEmbeddedPostgres({ home });
const pool = createPool(url, { max: 4 });
await migrate(pool, url);
const sim = await startProviderSimulator({ port: 0 });
const { exampleId } = await import(`${dist}/providers/simulator.js`);
const payload = (i) => ({ customer_email: `c${i}@example.com`, show_id: exampleId(1, i % 7), number_of_tickets: 1 + (i % 4), passengers: [`P ${i} A`, `P ${i} B`], inbound_flight_id: exampleId(2, i), return_flight_id: exampleId(3, i) });
const bundles = await enqueueBundles(pool, Array.from({ length: N }, (_, i) => ({ payload: payload(i) })));
const worker = new Worker({ databaseUrl: url, providerUrls: { tickets: sim.url, flights: sim.url, taxis: sim.url }, concurrency: 10, pollIntervalMs: 100, logger: createLogger({ level: 'silent', pretty: false }) });
const t0 = performance.now();
worker.start();
for (;;) {
  const { rows } = await pool.query(`SELECT count(*)::int AS n FROM bundles WHERE state = 'completed'`);
  if (rows[0].n === N) break;
  await new Promise((r) => setTimeout(r, 5));
}
const seconds = (performance.now() - t0) / 1000;
await worker.stop(0);
const ledger = sim.ledger();
let ok = 0;
for (const b of bundles) {
  const live = ledger.filter((e) => e.idempotency_key.startsWith(`${b.vip_bundle_id}:`) && e.status === 'booked').map((e) => e.kind).sort().join(',');
  if (live === 'flights,flights,taxis,tickets') ok++;
}
console.log(JSON.stringify({ bundles: N, completed_with_four_live_bookings: ok, ledger_entries: ledger.length, seconds: +seconds.toFixed(3), bundles_per_second: +(N / seconds).toFixed(1) }));
await pool.end();
await sim.close();
await stopEmbeddedPostgres(home, 'fast');
await rm(home, { recursive: true, force: true });
