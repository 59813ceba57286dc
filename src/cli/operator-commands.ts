/**
 * `retry` and `cancel`: one bundle by id, or in bulk by state (`retry --state dead --since 2h`,
 * `cancel --state pending --older-than 1d`). A bulk action counts the matching bundles, asks
 * (or takes --yes), then moves each through the same conditional UPDATE as the single-bundle
 * action; a bundle that changed state in between is skipped and counted.
 */
import type { Command } from 'commander';
import { z } from 'zod';
import { BadInput } from '../errors.js';
import {
  CANCELLABLE_STATES, RETRYABLE_STATES, cancelBundle, cancelBundles, findBundles, retryBundle, retryBundles,
  type BundleFilter, type OperatorResult,
} from '../supervisor/operator.js';
import type { Queryable } from '../db/pool.js';
import { parseOptions, printJson, withDb } from './context.js';
import { confirm } from './confirm.js';
import { durationOption, sinceOption } from './time-options.js';

interface OperatorFlags {
  state?: string;
  since?: string;
  olderThan?: string;
  yes?: boolean;
  json?: boolean;
}

interface Action {
  name: 'retry' | 'cancel';
  past: string;
  states: readonly string[];
  one(db: Queryable, id: string): Promise<OperatorResult>;
  many(db: Queryable, ids: string[]): Promise<OperatorResult[]>;
}

const ACTIONS: Record<'retry' | 'cancel', Action> = {
  retry: { name: 'retry', past: 'retried', states: RETRYABLE_STATES, one: retryBundle, many: retryBundles },
  cancel: { name: 'cancel', past: 'cancelled', states: CANCELLABLE_STATES, one: cancelBundle, many: cancelBundles },
};

function parseFilter(action: Action, flags: OperatorFlags): BundleFilter {
  const o = parseOptions(
    z.object({
      state: z.enum(action.states as [string, ...string[]], `must be one of ${action.states.join(', ')} (the states ${action.name} applies to)`),
      since: sinceOption().optional(),
      olderThan: durationOption.optional(),
    }),
    flags as Record<string, unknown>,
    { state: '--state', since: '--since', olderThan: '--older-than' },
  );
  return { state: o.state, since: o.since, createdBefore: o.olderThan === undefined ? undefined : new Date(Date.now() - o.olderThan * 1000) };
}

function describeFilter(f: BundleFilter): string {
  return [`${f.state}`, f.since && `changed since ${f.since.toISOString()}`, f.createdBefore && `created before ${f.createdBefore.toISOString()}`].filter(Boolean).join(', ');
}

async function runAction(action: Action, id: string | undefined, flags: OperatorFlags): Promise<void> {
  const bulk = flags.state !== undefined || flags.since !== undefined || flags.olderThan !== undefined;
  if (id !== undefined && bulk) throw new BadInput(`give either a bundle id or --state (with --since / --older-than), not both`);
  if (id === undefined && !bulk) throw new BadInput(`give a bundle id, or --state ${action.states.join('|')} to ${action.name} in bulk`);
  // --since and --older-than narrow a --state; without one, "--state: must be one of" would blame a flag not given.
  if (id === undefined && flags.state === undefined) {
    const given = [flags.since !== undefined && '--since', flags.olderThan !== undefined && '--older-than'].filter(Boolean).join(' and ');
    throw new BadInput(`${given}: only with --state (${action.states.join(', ')}): they narrow the bundles in that state`);
  }
  if (id !== undefined) {
    if (flags.yes) throw new BadInput('--yes: only for bulk actions (--state)');
    const r = await withDb(({ pool }) => action.one(pool, id));
    return flags.json ? printJson(r) : void process.stdout.write(`${r.vip_bundle_id}: ${r.from_state} → ${r.state}\n`);
  }
  const filter = parseFilter(action, flags);
  await withDb(async ({ pool }) => {
    const ids = await findBundles(pool, filter);
    const summary = { matched: ids.length, [action.past]: 0, skipped: 0 };
    if (!ids.length) {
      if (flags.json) return printJson({ ...summary, bundles: [] });
      return void process.stdout.write(`no bundles match (${describeFilter(filter)}); nothing done\n`);
    }
    process.stderr.write(`${ids.length} bundle(s) match (${describeFilter(filter)})\n`);
    if (!(await confirm(`${action.name} ${ids.length} bundle(s)?`, { yes: flags.yes, what: `${action.name} these ${ids.length} bundle(s)` }))) {
      process.stderr.write('nothing done\n');
      if (flags.json) printJson({ ...summary, declined: true, bundles: [] });
      return;
    }
    const moved = await action.many(pool, ids);
    summary[action.past] = moved.length;
    summary.skipped = ids.length - moved.length;
    if (flags.json) return printJson({ ...summary, bundles: moved });
    process.stdout.write(`${action.past} ${moved.length} of ${ids.length} bundle(s)${summary.skipped ? `; ${summary.skipped} skipped (their state changed meanwhile)` : ''}\n`);
  });
}

/** The options `retry` and `cancel` share: one bundle by id, or many by state. */
function bulkOptions(action: Action, cmd: Command): Command {
  return cmd
    .argument('[id]', 'vip_bundle_id or booking_id (or use --state for many)')
    .option('--state <state>', `${action.name} every bundle in this state (${action.states.join(', ')})`)
    .option('--since <time>', 'with --state: only bundles changed since then (ISO 8601 time, or 30m, 2h, 7d ago)')
    .option('--older-than <duration>', 'with --state: only bundles created longer ago than this (30m, 2h, 7d)')
    .option('-y, --yes', 'with --state: do not ask for confirmation (needed when stdin is not a terminal)')
    .option('--json', 'print JSON');
}

export function registerOperatorCommands(program: Command): void {
  bulkOptions(ACTIONS.retry, program
    .command('retry')
    .description('send dead or failed bundles back (counters reset): to pending, or to compensating if they were being undone'))
    .addHelpText('after', `
Examples:
  $ bundlefleet retry 3f2b6c1e-8d4a-4c2e-9b1f-0a7d5e6c4b3a
  $ bundlefleet retry --state dead --since 2h          # counts them, then asks
  $ bundlefleet retry --state dead --since 2026-11-24T06:00:00Z --yes --json`)
    .action((id: string | undefined, flags: OperatorFlags) => runAction(ACTIONS.retry, id, flags));

  bulkOptions(ACTIONS.cancel, program
    .command('cancel')
    .description('undo non-terminal bundles: everything they may have booked is cancelled'))
    .addHelpText('after', `
Examples:
  $ bundlefleet cancel 3f2b6c1e-8d4a-4c2e-9b1f-0a7d5e6c4b3a
  $ bundlefleet cancel --state pending --older-than 1d  # counts them, then asks
  $ bundlefleet cancel --state failed --yes --json`)
    .action((id: string | undefined, flags: OperatorFlags) => runAction(ACTIONS.cancel, id, flags));
}
