/**
 * `ack <id>`: an operator acknowledges a compensated or dead bundle's failure. Its active key (if
 * it has one) is freed, so a new bundle with that key may be enqueued; its open alerts are
 * acknowledged with it. A completed or unfinished bundle has no failure to acknowledge (exit 1).
 * `--end-reconciliation` also ends its reconciliation passes (bundles/reconciliation.ts), for an
 * operator who checked the providers by hand after an `unreconciled` alert.
 */
import type { Command } from 'commander';
import { ackBundle } from '../bundles/active-keys.js';
import { endReconciliation } from '../bundles/reconciliation.js';
import { printJson, withDb } from './context.js';

export function registerAckCommand(program: Command): void {
  program
    .command('ack')
    .description("acknowledge a compensated or dead bundle's failure, freeing its active key")
    .argument('<id>', 'vip_bundle_id or booking_id')
    .option('--json', 'print JSON')
    .option('--end-reconciliation', 'also end its reconciliation passes, after checking by hand that no provider holds a booking of it (for an unreconciled alert that cannot clear)')
    .addHelpText('after', `
Acknowledging again changes nothing. Completed bundles free their active key by themselves;
unfinished ones cannot be acknowledged (cancel one first if it must stop).
Examples:
  $ bundlefleet ack 3f2b6c1e-8d4a-4c2e-9b1f-0a7d5e6c4b3a
  $ bundlefleet ack <booking_id> --json
  $ bundlefleet ack 3f2b6c1e-8d4a-4c2e-9b1f-0a7d5e6c4b3a --end-reconciliation`)
    .action(async (id: string, flags: { json?: boolean; endReconciliation?: boolean }) => {
      const { r, ended } = await withDb(async ({ pool }) => {
        const r = await ackBundle(pool, id);
        return { r, ended: flags.endReconciliation ? await endReconciliation(pool, r.vip_bundle_id, 'operator') : undefined };
      });
      if (flags.json) return printJson(ended === undefined ? r : { ...r, reconciliation_ended: ended });
      const note = ended === undefined ? '' : ended ? '; reconciliation passes ended' : '; no reconciliation pass was due';
      process.stdout.write(`${r.vip_bundle_id}: ${r.state}, failure acknowledged at ${r.failure_acked_at}${r.active_key ? `; active key ${JSON.stringify(r.active_key)} released` : ''}${note}\n`);
    });
}
