import type { Command } from 'commander';
import { z } from 'zod';
import { BUNDLE_STATES, fleetStats, inspectBundle, listBundles, type BundleView, type FleetStats, type ListedBundle } from '../bundles/read.js';
import { intOption, parseOptions, printJson, withDb } from './context.js';
import { sinceOption } from './time-options.js';
import { stdoutStillRead } from './pipes.js';
import { followBundle } from './follow.js';

function describePayload(p: BundleView['payload']): string {
  const parts = [
    p.show_id && `show ${p.show_id}${p.number_of_tickets ? ` × ${p.number_of_tickets}` : ''}`,
    p.inbound_flight_id && `inbound ${p.inbound_flight_id}`,
    p.return_flight_id && `return ${p.return_flight_id}`,
    p.passenger_count !== undefined && `${p.passenger_count} passenger(s)`,
  ];
  return parts.filter(Boolean).join('  ');
}

export function formatHistoryLine(h: BundleView['history'][number]): string {
  return `  ${h.at}  #${h.attempt}  ${(h.from_state ?? '-').padEnd(12)} → ${h.to_state.padEnd(12)} ${h.step ? `[${h.step}] ` : ''}${h.reason}  (${h.actor})${h.error ? `  error: ${h.error}` : ''}\n`;
}

export function printBundleHead(b: BundleView): void {
  const out = process.stdout;
  out.write(`bundle ${b.vip_bundle_id}  (booking ${b.booking_id}, kind ${b.kind} v${b.kind_version})\n`);
  const booked = describePayload(b.payload);
  if (booked) out.write(`booking ${booked}\n`);
  out.write(`state ${b.state}${b.state === 'running' ? ` (${b.phase})` : ''}  attempt ${b.attempt}  failures ${b.failure_count}  undo failures ${b.undo_failure_count}  resets ${b.reset_count}\n`);
  if (b.finished_at) out.write(`finished at ${b.finished_at}\n`);
  if (b.trace_id) out.write(`trace ${b.trace_id}\n`);
  if (b.active_key) out.write(`active key ${JSON.stringify(b.active_key)}${b.failure_acked_at ? ` (failure acknowledged at ${b.failure_acked_at}; key released)` : ''}\n`);
  if (b.locked_by) out.write(`lease held by ${b.locked_by} until ${b.locked_until}\n`);
  if (b.parked) out.write(`parked until ${b.parked.until} (waiting since ${b.parked.since ?? '?'}, no worker held, no failure counted): ${b.parked.reason}\n`);
  if (b.last_error) out.write(`last error (${b.last_error_class}, step ${b.last_error_step}): ${b.last_error}\n`);
  out.write('steps:\n');
  for (const s of b.steps) out.write(`  ${s.name.padEnd(16)} ${s.status.padEnd(10)} ${s.reference ?? ''}\n`);
}

/** Bodies in the text view are cut to one line; `--json` has them as kept (at most 2 KiB each). */
const cut = (text: string, max = 160) => (text.length > max ? `${text.slice(0, max)}…` : text);

export function formatExchangeLines(e: BundleView['exchanges'][number]): string {
  const head = `  ${e.at}  #${e.attempt ?? '-'}  ${(e.step ?? '-').padEnd(15)} ${e.method.padEnd(4)} ${e.path}  ${e.status ?? 'no reply'}  ${e.duration_ms} ms  (${e.worker_id ?? '?'})`;
  return [
    `${head}${e.outcome === 'ok' ? '' : `  ${e.outcome}: ${cut(e.error ?? '', 200)}`}\n`,
    e.request_body ? `      → ${cut(e.request_body)}\n` : '',
    e.response_body ? `      ← ${cut(e.response_body)}\n` : '',
  ].join('');
}

function printBundle(b: BundleView): void {
  printBundleHead(b);
  process.stdout.write('timeline:\n');
  for (const h of b.history) process.stdout.write(formatHistoryLine(h));
  process.stdout.write(`provider exchanges:${b.exchanges.length ? '' : ' none'}${b.exchanges_omitted ? ` (the newest ${b.exchanges.length}; ${b.exchanges_omitted} older not shown)` : ''}\n`);
  for (const e of b.exchanges) process.stdout.write(formatExchangeLines(e));
}

const LIST_COLUMNS = [
  ['VIP_BUNDLE_ID', 36],
  ['STATE', 12],
  ['ATTEMPT', 7],
  ['UPDATED_AT', 24],
  ['SHOW_ID', 36],
  ['INBOUND_FLIGHT_ID', 36],
  ['RETURN_FLIGHT_ID', 36],
  ['LAST_ERROR', 0],
] as const;

function listLine(values: string[]): string {
  return `${values.map((v, i) => (LIST_COLUMNS[i]![1] ? v.padEnd(LIST_COLUMNS[i]![1]) : v)).join('  ').trimEnd()}\n`;
}

function listRow(r: ListedBundle): string {
  return listLine([r.vip_bundle_id, r.state, String(r.attempt), r.updated_at, r.payload.show_id ?? '-', r.payload.inbound_flight_id ?? '-', r.payload.return_flight_id ?? '-', r.last_error ?? '']);
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
    .description('show one bundle: what it books, state, lease, steps, timeline and provider exchanges')
    .argument('<id>', 'vip_bundle_id or booking_id')
    .option('-f, --follow', 'keep printing the timeline until the bundle is completed, compensated or dead')
    .option('--json', 'print JSON (with --follow: once, when the bundle is terminal)')
    .addHelpText('after', `
Customer email and passenger names are never shown; the show, the flights and the number of
passengers are. Provider exchanges (request, reply, status, duration, attempt, worker) are kept
redacted, each body at most 2 KiB; the text view cuts them to one line, --json has them whole.
Examples:
  $ bundlefleet inspect 3f2b6c1e-8d4a-4c2e-9b1f-0a7d5e6c4b3a
  $ bundlefleet inspect <booking_id> --json | jq .steps
  $ bundlefleet inspect <vip_bundle_id> --follow       # exits 0 when the bundle is terminal`)
    .action(async (id: string, flags: { json?: boolean; follow?: boolean }) => {
      if (flags.follow) {
        return withDb(({ pool }) =>
          followBundle(pool, id, {
            onStart: (b) => flags.json || (printBundleHead(b), process.stdout.write('timeline:\n')),
            onHistory: (h) => flags.json || process.stdout.write(formatHistoryLine(h)),
            onEnd: (b) => (flags.json ? printJson(b) : process.stdout.write(`final state: ${b.state}\n`)),
          }),
        );
      }
      const bundle = await withDb(({ pool }) => inspectBundle(pool, id));
      if (flags.json) printJson(bundle);
      else printBundle(bundle);
    });

  program
    .command('list')
    .description('list bundles by last change, newest first')
    .option('--state <state>', `only this state (${BUNDLE_STATES.join(', ')})`)
    .option('--since <time>', 'only bundles changed since then (ISO 8601 time, or 30m, 2h, 7d ago)')
    .option('--after <vip_bundle_id>', 'the next page: bundles listed after this one')
    .option('--limit <n>', 'how many (1..10000)', '20')
    .option('--json', 'print a JSON array')
    .addHelpText('after', `
A full page ends with the command for the next one (on stderr). Customer email and passenger
names are never shown.
Examples:
  $ bundlefleet list --state dead --since 2h
  $ bundlefleet list --limit 100 --after 3f2b6c1e-8d4a-4c2e-9b1f-0a7d5e6c4b3a
  $ bundlefleet list --state failed --json | jq -r '.[].vip_bundle_id'`)
    .action(async (flags: { state?: string; since?: string; after?: string; limit: string; json?: boolean }) => {
      const opts = parseOptions(
        z.object({
          state: z.enum(BUNDLE_STATES, `must be one of ${BUNDLE_STATES.join(', ')}`).optional(),
          since: sinceOption().optional(),
          after: z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'must be a vip_bundle_id (a UUID)').optional(),
          limit: intOption(1, 10_000),
        }),
        flags,
        { state: '--state', since: '--since', after: '--after', limit: '--limit' },
      );
      const rows = await withDb(({ pool }) => listBundles(pool, opts));
      if (flags.json) return printJson(rows);
      if (!rows.length) return void process.stdout.write(opts.after ? 'no more bundles\n' : 'no bundles\n');
      process.stdout.write(listLine(LIST_COLUMNS.map(([name]) => name)));
      for (const r of rows) process.stdout.write(listRow(r));
      if (rows.length === opts.limit && (await stdoutStillRead())) {
        const rest = [flags.state && `--state ${flags.state}`, flags.since && `--since ${flags.since}`, `--limit ${opts.limit}`].filter(Boolean).join(' ');
        process.stderr.write(`next page: bundlefleet list ${rest} --after ${rows[rows.length - 1]!.vip_bundle_id}\n`);
      }
    });

  program
    .command('stats')
    .description('counts by state, age of the oldest due bundle, alerts, providers, unrunnable kind versions')
    .option('--json', 'print JSON')
    .addHelpText('after', `
Examples:
  $ bundlefleet stats
  $ watch -n 2 bundlefleet stats
  $ bundlefleet stats --json | jq .by_state

"oldest due" is how long the bundle due the longest has waited for a claim: a pending one or a
compensating one (to be undone) alike; --json has the same figure as oldest_due_pending_age_seconds.
Unfinished bundles of a kind version this build does not carry are listed when there are some
(--json: unrunnable_kind_versions): no worker of this build runs them.`)
    .action(async (flags: { json?: boolean }) => {
      const stats = await withDb(({ pool }) => fleetStats(pool));
      if (flags.json) return printJson(stats);
      for (const [state, n] of Object.entries(stats.by_state)) process.stdout.write(`${state.padEnd(13)} ${n}\n`);
      process.stdout.write(`total         ${stats.total}\n`);
      // The claim's condition: due pending bundles and due compensating ones (their undo) alike.
      process.stdout.write(`oldest due (pending or compensating): ${stats.oldest_due_pending_age_seconds === null ? 'none' : `${stats.oldest_due_pending_age_seconds.toFixed(1)} s`}\n`);
      process.stdout.write(`open alerts: ${stats.open_alerts}\n`);
      for (const k of stats.unrunnable_kind_versions) {
        process.stdout.write(`${k.bundles} unfinished ${k.kind} v${k.version} bundle(s): this build does not carry that version; they wait for a worker that does\n`);
      }
      for (const p of stats.providers) process.stdout.write(`${describeProvider(p)}\n`);
    });
}
