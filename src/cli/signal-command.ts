/**
 * `bundlefleet signal <id> <name> [--data JSON] [--signal-id ID]`: delivers an external
 * confirmation (e.g. `inbound_ticketed`) to a bundle, the same as `POST /bundles/:id/signals/:name`
 * and the pg-boss queue `bundlefleet.signals`. Stored once per sender id; completes a wait when it
 * is the last signal missing.
 */
import type { Command } from 'commander';
import { BadInput } from '../errors.js';
import { parseSignal, receiveSignal } from '../bundles/signals.js';
import { parseBundleId } from '../bundles/input.js';
import { printJson, withDb } from './context.js';

function parseData(raw: string | undefined): Record<string, unknown> | undefined {
  if (raw === undefined) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(raw);
  } catch {
    throw new BadInput(`--data: not JSON: ${raw.slice(0, 80)}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new BadInput('--data: must be a JSON object');
  return data as Record<string, unknown>;
}

export function registerSignalCommand(program: Command): void {
  program
    .command('signal')
    .description('deliver an external confirmation to a bundle (what a waiting bundle waits for)')
    .argument('<id>', 'vip_bundle_id or booking_id')
    .argument('<name>', 'the signal, e.g. inbound_ticketed or return_ticketed')
    .option('--data <json>', 'a JSON object kept with the signal')
    .option('--signal-id <id>', "the sender's id for this signal: a second delivery with it is ignored (default: the name)")
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `
Examples:
  $ bundlefleet signal 5f0c…-… inbound_ticketed --signal-id BA117-TKT-0042 --data '{"ticket":"0042"}'
  $ bundlefleet signal 5f0c…-… return_ticketed --json`)
    .action(async (rawId: string, name: string, flags: { data?: string; signalId?: string; json?: boolean }) => {
      // Validate everything before connecting: bad input writes nothing.
      const bundleId = parseBundleId(rawId);
      const data = parseData(flags.data);
      parseSignal({ name, id: flags.signalId, data }, { id: '--signal-id', data: '--data' });
      const result = await withDb(({ pool }) => receiveSignal(pool, { bundleId, name, id: flags.signalId, data, actor: 'cli' }));
      if (flags.json) return printJson(result);
      const what = result.stored ? `signal ${name} stored` : `signal ${name} (id ${result.signal_id}) was already received`;
      process.stdout.write(`${what}; bundle ${result.vip_bundle_id} is ${result.state}${result.woke ? ' (all signals in: it goes on)' : ''}\n`);
    });
}
