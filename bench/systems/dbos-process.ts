/**
 * One DBOS Transact process for scenario 4 (bench/systems/dbos.ts's workflow, launched as its
 * docs show): `node --import tsx bench/systems/dbos-process.ts` with DBOS_BENCH_URL (system
 * database), DBOS_BENCH_PROVIDERS (simulator URL), DBOS_BENCH_CONCURRENCY and, to tell processes
 * apart, DBOS__VMID (DBOS's executor id; `local` when unset). It runs until it is killed.
 */
import { DBOS } from '@dbos-inc/dbos-sdk';
import { configure, queueOptions, QUEUE } from './dbos.js';

const env = (name: string) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};

const url = env('DBOS_BENCH_URL');
const sim = env('DBOS_BENCH_PROVIDERS');
configure(url, { tickets: sim, flights: sim, taxis: sim }, { providerTimeoutMs: 600_000 });
await DBOS.launch();
await DBOS.registerQueue(QUEUE, { ...queueOptions({ concurrency: Number(env('DBOS_BENCH_CONCURRENCY')), minPollingIntervalMs: 10 }), onConflict: 'always_update' });
process.stderr.write(`dbos process ${process.env.DBOS__VMID ?? 'local'} launched\n`);
