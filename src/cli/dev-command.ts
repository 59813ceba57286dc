import type { Command } from 'commander';
import { migrate } from '../db/migrate.js';
import { startProviderSimulator } from '../providers/simulator.js';
import { providerUrlsFromEnv } from '../providers/client.js';
import { Worker } from '../scheduler/worker.js';
import { rootLogger } from '../logger.js';
import { openDb, parseOptions } from './context.js';
import { onShutdown } from './signals.js';
import { addSupervisorOptions, parseSupervisorOptions, superviseLoop } from './supervise-command.js';
import { addWorkerOptions, workerOptionsSchema, WORKER_FLAG_NAMES } from './worker-command.js';

export function registerDevCommand(program: Command): void {
  addSupervisorOptions(addWorkerOptions(program.command('dev').description('everything in one process tree: embedded PostgreSQL, migrations, provider simulator, worker, supervisor loop')))
    .option('--providers-port <port>', 'port of the provider simulator (0 = any free port)', '4010')
    .action(async (flags: Record<string, unknown>) => {
      const opts = parseOptions(workerOptionsSchema, flags, WORKER_FLAG_NAMES);
      const supervisorOpts = parseSupervisorOptions(flags);
      const log = rootLogger();
      const db = await openDb({ checkSchema: false });
      await migrate(db.pool, db.url);
      await db.close();
      // Use the real providers when configured, else the simulator.
      const simulator = process.env.PROVIDERS_URL || process.env.TICKETS_URL
        ? undefined
        : await startProviderSimulator({ port: Number(flags.providersPort), host: '127.0.0.1' });
      const providerUrls = simulator ? { tickets: simulator.url, flights: simulator.url, taxis: simulator.url } : providerUrlsFromEnv(process.env);
      const worker = new Worker({ databaseUrl: db.url, providerUrls, ...opts, logger: log });
      worker.start();
      const supervisor = superviseLoop(worker.pool, { ...supervisorOpts, logger: log }, 5_000);
      process.stderr.write(`
bundlefleet dev is running
  database:  ${db.url.replace(/:[^:@/]+@/, ':***@')}
  providers: ${simulator ? `simulator at ${simulator.url} (ledger: ${simulator.url}/__ledger)` : 'from PROVIDERS_URL'}
In another terminal, from this directory:
  ./bin/bundlefleet enqueue --customer-email ada@example.com --show-id hamilton --tickets 2 \\
      --passenger "Ada Lovelace" --inbound-flight-id BA117 --return-flight-id BA118 --json
  ./bin/bundlefleet inspect <vip_bundle_id>
  ./bin/bundlefleet stats
  ./bin/bundlefleet alerts
Ctrl-C stops everything (the embedded database keeps running: ./bin/bundlefleet db stop).
`);
      onShutdown(async () => {
        await supervisor.stop();
        await worker.stop();
        await simulator?.close();
      });
    });
}
