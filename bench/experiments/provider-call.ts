/**
 * One provider call's overhead over the simulator's latency: the first VIP step's booking through
 * the product's ProviderClient (fetch, p-retry-free single call), sequential, against
 * `bundlefleet providers --latency-ms 20` in its own process, beside plain fetch of the same request.
 *
 *   node --import tsx bench/experiments/provider-call.ts
 */
import { randomUUID } from 'node:crypto';
import { startSimulator } from '../lib/procs.js';
import { median } from '../lib/util.js';
import { ProviderClient } from '../../src/providers/client.js';
import { bundleKind } from '../../src/bundles/kinds.js';
import * as bf from '../systems/bundlefleet.js';

const sim = await startSimulator(20);
const client = new ProviderClient({ tickets: sim.url, flights: sim.url, taxis: sim.url }, { timeoutMs: 5000 });
const step = bundleKind('vip', 1).steps[0]!;
const [item] = bf.vipItems(1);
const ours: number[] = [];
for (let i = 0; i < 300; i++) {
  const id = randomUUID();
  const t0 = performance.now();
  await step.book({ bundleId: id, bookingId: id, payload: item!.payload, idempotencyKey: `${id}:show_tickets`, providers: client });
  ours.push(performance.now() - t0);
}
process.stdout.write(`ProviderClient book at 20 ms simulator latency, sequential: median ${median(ours).toFixed(2)} ms, p90 ${ours.sort((a, b) => a - b)[270]!.toFixed(2)} ms\n`);
await sim.child.kill();
process.exit(0);
