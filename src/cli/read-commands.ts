import type { Command } from 'commander';
import { z } from 'zod';
import { BUNDLE_STATES, fleetStats, inspectBundle, listBundles, type BundleView, type FleetStats } from '../bundles/read.js';
import { intOption, parseOptions, printJson, withDb } from './context.js';

function printBundle(b: BundleView): void {
  const out = process.stdout;
  out.write(`bundle ${b.vip_bundle_id}  (booking ${b.booking_id}, kind ${b.kind})\n`);
  out.write(`state ${b.state}${b.state === 'running' ? ` (${b.phase})` : ''}  attempt ${b.attempt}  failures ${b.failure_count}  undo failures ${b.undo_failure_count}  resets ${b.reset_count}\n`);
  if (b.locked_by) out.write(`lease held by ${b.locked_by} until ${b.locked_until}\n`);
  if (b.parked) out.write(`parked until ${b.parked.until} (waiting since ${b.parked.since ?? '?'}, no worker held, no failure counted): ${b.parked.reason}\n`);
  if (b.last_error) out.write(`last error (${b.last_error_class}, step ${b.last_error_step}): ${b.last_error}\n`);
  out.write('steps:\n');
  for (const s of b.steps) out.write(`  ${s.name.padEnd(16)} ${s.status.padEnd(10)} ${s.reference ?? ''}\n`);
  out.write('timeline:\n');
  for (const h of b.history) {
    out.write(`  ${h.at}  #${h.attempt}  ${(h.from_state ?? '-').padEnd(12)} → ${h.to_state.padEnd(12)} ${h.step ? `[${h.step}] ` : ''}${h.reason}  (${h.actor})${h.error ? `  error: ${h.error}` : ''}\n`);
  }
}

/** One line per provider kind: its fleet-wide limits, slots in use, pause and parked bundles. */
function describeProvider(p: FleetStats['providers'][number]): string {
  const limits = [p.max_in_flight ? `in flight ${p.in_flight}/${p.max_in_flight}` : 'in flight unlimited', p.rate_per_second ? `rate ${p.rate_per_second}/s` : 'rate unlimited'];
  const pause = p.paused_until ? `, paused until ${p.paused_until} (${p.pause_reason})` : '';
  return `provider ${p.kind.padEnd(8)} ${limits.join(', ')}, parked bundles ${p.parked_bundles}${pause}`;
}

export function registerReadCommands(program: Command): void {
  program
    .command('inspect')
    .description('show one bundle: state, lease, steps and timeline')
    .argument('<id>', 'vip_bundle_id or booking_id')
    .option('--json', 'print JSON')
    .action(async (id: string, flags: { json?: boolean }) => {
      const bundle = await withDb(({ pool }) => inspectBundle(pool, id));
      if (flags.json) printJson(bundle);
      else printBundle(bundle);
    });

  program
    .command('list')
    .description('list bundles, newest first')
    .option('--state <state>', `only this state (${BUNDLE_STATES.join(', ')})`)
    .option('--limit <n>', 'how many', '20')
    .option('--json', 'print a JSON array')
    .action(async (flags: { state?: string; limit: string; json?: boolean }) => {
      const opts = parseOptions(
        z.object({ state: z.enum(BUNDLE_STATES, `must be one of ${BUNDLE_STATES.join(', ')}`).optional(), limit: intOption(1, 10_000) }),
        flags,
        { state: '--state', limit: '--limit' },
      );
      const rows = await withDb(({ pool }) => listBundles(pool, opts));
      if (flags.json) return printJson(rows);
      for (const r of rows) process.stdout.write(`${r.vip_bundle_id}  ${r.state.padEnd(12)} attempt ${r.attempt}  ${r.updated_at}${r.last_error ? `  ${r.last_error}` : ''}\n`);
      if (!rows.length) process.stdout.write('no bundles\n');
    });

  program
    .command('stats')
    .description('counts by state and the age of the oldest due pending bundle')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }) => {
      const stats = await withDb(({ pool }) => fleetStats(pool));
      if (flags.json) return printJson(stats);
      for (const [state, n] of Object.entries(stats.by_state)) process.stdout.write(`${state.padEnd(13)} ${n}\n`);
      process.stdout.write(`total         ${stats.total}\n`);
      process.stdout.write(`oldest due pending: ${stats.oldest_due_pending_age_seconds === null ? 'none' : `${stats.oldest_due_pending_age_seconds.toFixed(1)} s`}\n`);
      process.stdout.write(`open alerts: ${stats.open_alerts}\n`);
      for (const p of stats.providers) process.stdout.write(`${describeProvider(p)}\n`);
    });
}
