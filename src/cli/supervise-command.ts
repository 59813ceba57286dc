import { Option, type Command } from 'commander';
import { z } from 'zod';
import { rootLogger } from '../logger.js';
import { resetOrphans, runOnce, settleAlertDeliveries, supervisorDefaults, type SupervisorOptions } from '../supervisor/supervisor.js';
import { ackAlert, countOpenAlerts, listAlerts } from '../supervisor/alerts.js';
import { intOption, openDb, parseOptions, printJson, withDb } from './context.js';
import { onShutdown } from './signals.js';
import { decimalText } from '../number-text.js';

const positive = (max: number, maxText = `${max}`) => decimalText().refine((v) => v > 0, 'must be more than 0').refine((v) => v <= max, `must be at most ${maxText}`);
const seconds = positive(31_536_000, 'a year');

export const supervisorOptionsSchema = z.object({
  maxAttempts: intOption(1, 1000),
  maxUndoAttempts: intOption(1, 1000),
  stuckAfterSeconds: seconds,
  backoffBaseSeconds: seconds,
  retentionDays: positive(3650),
  supervisorLeaseSeconds: decimalText(1, 3600),
  alertWebhookUrl: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
});

export const SUPERVISOR_FLAG_NAMES = {
  maxAttempts: '--max-attempts (BUNDLEFLEET_MAX_ATTEMPTS)',
  maxUndoAttempts: '--max-undo-attempts (BUNDLEFLEET_MAX_UNDO_ATTEMPTS)',
  stuckAfterSeconds: '--stuck-after-seconds (BUNDLEFLEET_STUCK_AFTER_SECONDS)',
  backoffBaseSeconds: '--backoff-base-seconds (BUNDLEFLEET_BACKOFF_BASE_SECONDS)',
  retentionDays: '--retention-days (BUNDLEFLEET_RETENTION_DAYS)',
  supervisorLeaseSeconds: '--supervisor-lease-seconds (BUNDLEFLEET_SUPERVISOR_LEASE_SECONDS)',
  alertWebhookUrl: 'ALERT_WEBHOOK_URL',
};

/** The supervisor's options (each with its env variable); `worker` and `dev` share them. */
export function addSupervisorOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--max-attempts <n>', 'attempts at booking before a bundle is compensated').env('BUNDLEFLEET_MAX_ATTEMPTS').default('5'))
    .addOption(new Option('--max-undo-attempts <n>', 'attempts at undoing before a bundle is dead').env('BUNDLEFLEET_MAX_UNDO_ATTEMPTS').default('10'))
    .addOption(new Option('--stuck-after-seconds <s>', 'alert on a bundle not finished after this long').env('BUNDLEFLEET_STUCK_AFTER_SECONDS').default('900'))
    .addOption(new Option('--backoff-base-seconds <s>', 'first retry delay, doubled per failure, with jitter').env('BUNDLEFLEET_BACKOFF_BASE_SECONDS').default('2'))
    .addOption(new Option('--retention-days <d>', 'prune finished bundles and history older than this').env('BUNDLEFLEET_RETENTION_DAYS').default('30'))
    .addOption(new Option('--supervisor-lease-seconds <s>', 'how long a pass holds the fleet-wide supervisor lease between renewals; a frozen pass loses it after this').env('BUNDLEFLEET_SUPERVISOR_LEASE_SECONDS').default('15'));
}

export function parseSupervisorOptions(flags: Record<string, unknown>): SupervisorOptions {
  const o = parseOptions(supervisorOptionsSchema, { ...flags, alertWebhookUrl: process.env.ALERT_WEBHOOK_URL || undefined }, SUPERVISOR_FLAG_NAMES);
  return {
    maxAttempts: o.maxAttempts,
    maxUndoAttempts: o.maxUndoAttempts,
    stuckAfterSeconds: o.stuckAfterSeconds,
    backoffBaseSeconds: o.backoffBaseSeconds,
    retentionSeconds: o.retentionDays * 86_400,
    leaseSeconds: o.supervisorLeaseSeconds,
    alertWebhookUrl: o.alertWebhookUrl,
  };
}

/** Settings only `--loop` uses: their schemas, and their flags with their variables. */
const LOOP_OPTIONS = { intervalSeconds: seconds, orphanCheckMs: intOption(0, 3_600_000) };
const LOOP_FLAG_NAMES = {
  intervalSeconds: '--interval-seconds (BUNDLEFLEET_SUPERVISE_INTERVAL_SECONDS)',
  orphanCheckMs: '--orphan-check-ms (BUNDLEFLEET_ORPHAN_CHECK_MS)',
};

/** A loop that keeps failing logs at most one line per this long (ms). */
const FAILURE_LOG_MS = 30_000;

/** Between passes, `--loop` looks for orphans this often (ms); 0 turns the watch off. */
export const DEFAULT_ORPHAN_CHECK_MS = 250;

/**
 * Runs supervisor passes every `intervalMs` until stopped, and the orphan watch (resetOrphans)
 * every `orphanCheckMs` between them; one failing pass is logged, not fatal.
 */
export function superviseLoop(pool: import('pg').Pool, opts: SupervisorOptions, intervalMs: number, orphanCheckMs = DEFAULT_ORPHAN_CHECK_MS): { stop(): Promise<void> } {
  const log = (opts.logger ?? rootLogger()).child({ role: 'supervisor' });
  const o = supervisorDefaults(opts);
  // One line at start, as worker and serve log theirs, with the settings in effect. The webhook's
  // URL is left out (it may carry a secret): only whether alerts are posted.
  log.info(
    {
      intervalSeconds: intervalMs / 1000, orphanCheckMs, maxAttempts: o.maxAttempts, maxUndoAttempts: o.maxUndoAttempts, stuckAfterSeconds: o.stuckAfterSeconds,
      backoffBaseSeconds: o.backoffBaseSeconds, retentionDays: o.retentionSeconds / 86_400, leaseSeconds: o.leaseSeconds, alertWebhook: o.alertWebhookUrl !== undefined,
    },
    'supervisor loop started',
  );
  let stopped = false;
  const timers = new Set<NodeJS.Timeout>();
  const running = new Set<Promise<unknown>>();
  const repeat = (everyMs: number, run: () => Promise<unknown>, what: string) => {
    // While the database is away the orphan watch fails four times a second: the first failure is
    // logged, then one line per FAILURE_LOG_MS with the count, and one when it works again.
    let failures = 0;
    let loggedAt = 0;
    const tick = () => {
      const current = run()
        .then(() => {
          if (failures) log.info({ failures }, `${what} works again after ${failures} failure(s)`);
          failures = 0;
        })
        .catch((err) => {
          failures++;
          const now = performance.now();
          if (failures > 1 && now - loggedAt < FAILURE_LOG_MS) return;
          loggedAt = now;
          log.error({ err: (err as Error).message, failures }, failures === 1 ? `${what} failed; retrying next interval` : `${what} still failing (${failures} times in a row); retrying`);
        })
        .finally(() => {
          running.delete(current);
          if (!stopped) {
            const timer = setTimeout(() => (timers.delete(timer), tick()), everyMs);
            timers.add(timer);
          }
        });
      running.add(current);
    };
    tick();
  };
  // Alerts are posted beside the next passes, so a slow webhook never delays recovery.
  repeat(intervalMs, () => runOnce(pool, { ...opts, alertDelivery: 'background' }), 'supervisor pass');
  if (orphanCheckMs > 0) repeat(orphanCheckMs, () => resetOrphans(pool, opts), 'orphan check');
  return {
    async stop() {
      stopped = true;
      for (const timer of timers) clearTimeout(timer);
      await Promise.all(running);
      await settleAlertDeliveries(pool);
      log.info('supervisor loop stopped');
    },
  };
}

export function registerSuperviseCommands(program: Command): void {
  addSupervisorOptions(program.command('supervise').description('one supervisor pass (for cron): reset orphans and expired leases, retry or compensate failures, alert, prune'))
    .option('--loop', 'repeat passes until SIGTERM')
    .addOption(new Option('--interval-seconds <s>', 'seconds between passes with --loop').env('BUNDLEFLEET_SUPERVISE_INTERVAL_SECONDS').default('15'))
    .addOption(new Option('--orphan-check-ms <ms>', "with --loop, between passes: look this often for bundles whose worker is gone and reset them at once (0: only in passes)").env('BUNDLEFLEET_ORPHAN_CHECK_MS').default(String(DEFAULT_ORPHAN_CHECK_MS)))
    .option('--fail-on-alert', 'exit 3 while unacknowledged alerts exist (for cron and monitoring)')
    .option('--json', 'print the pass report as JSON')
    .addHelpText('after', `
Examples:
  $ bundlefleet supervise --json                                        # one pass, its report
  $ bundlefleet supervise --loop --interval-seconds 15                   # as a process
  * * * * * cd /srv/fleet && bundlefleet supervise --fail-on-alert      # from cron`)
    .action(async (flags: Record<string, unknown> & { loop?: boolean; failOnAlert?: boolean; json?: boolean }, cmd: Command) => {
      const opts = parseSupervisorOptions(flags);
      if (flags.loop) {
        const { intervalSeconds: interval, orphanCheckMs } = parseOptions(z.object(LOOP_OPTIONS), flags, LOOP_FLAG_NAMES);
        const db = await openDb({ max: 3, waitSeconds: 60 });
        // The handler goes in before the loop logs that it started: until a process has one, a
        // SIGTERM kills it outright, and whoever read that line may well send one at once.
        let loop: ReturnType<typeof superviseLoop> | undefined;
        onShutdown(async () => {
          await loop?.stop();
          await db.close();
        });
        loop = superviseLoop(db.pool, { ...opts, logger: rootLogger() }, interval * 1000, orphanCheckMs);
        return;
      }
      // One pass ignores the loop-only variables (set fleet-wide for the loop, they must not break a
      // cron pass). A loop-only flag typed without --loop is checked (a bad value is exit 2) and then
      // named in a warning, but the pass still runs: a cron line that stopped supervising over a
      // flag that never did anything would be worse than the mistake.
      const typed = (Object.keys(LOOP_FLAG_NAMES) as Array<keyof typeof LOOP_FLAG_NAMES>).filter((key) => cmd.getOptionValueSource(key) === 'cli');
      if (typed.length) {
        parseOptions(z.object(Object.fromEntries(typed.map((key) => [key, LOOP_OPTIONS[key]]))), flags, LOOP_FLAG_NAMES);
        const names = typed.map((key) => LOOP_FLAG_NAMES[key].split(' ')[0]).join(' and ');
        process.stderr.write(`bundlefleet supervise: ${names} ${typed.length > 1 ? 'apply' : 'applies'} only with --loop: running one pass (add --loop to repeat passes)\n`);
      }
      await withDb(async ({ pool }) => {
        const report = await runOnce(pool, { ...opts, logger: rootLogger() });
        if (flags.json) printJson(report);
        else if (!report.ran) process.stdout.write('another supervisor pass is running; nothing done\n');
        else process.stdout.write(`${Object.entries(report).filter(([k, v]) => k !== 'ran' && v).map(([k, v]) => `${k}=${v}`).join(' ') || 'nothing to do'}\n`);
        if (flags.failOnAlert) {
          const open = await countOpenAlerts(pool);
          if (open > 0) {
            process.stderr.write(`bundlefleet: ${open} open alert(s): see \`bundlefleet alerts\`\n`);
            process.exitCode = 3;
          }
        }
      });
    });

  const alerts = program
    .command('alerts')
    .description('list open stuck-process alerts (or all with --all); `alerts ack <id>` acknowledges one')
    .option('--all', 'include acknowledged and resolved alerts')
    .option('--json', 'print a JSON array')
    .addHelpText('after', `
Examples:
  $ bundlefleet alerts
  $ bundlefleet alerts --all --json
  $ bundlefleet alerts ack 12`)
    .action(async (flags: { all?: boolean; json?: boolean }) => {
      const rows = await withDb(({ pool }) => listAlerts(pool, { all: flags.all }));
      if (flags.json) return printJson(rows);
      for (const a of rows) {
        const status = a.resolved_at ? 'resolved' : a.acked_at ? 'acked' : 'open';
        process.stdout.write(`#${a.id}  ${status.padEnd(8)} ${a.kind.padEnd(7)} ${a.bundle_id}  ${a.created_at}  ${a.message}\n`);
      }
      if (!rows.length) process.stdout.write(flags.all ? 'no alerts\n' : 'no open alerts\n');
    });
  alerts
    .command('ack')
    .description('acknowledge an alert: it stays on record but stops counting for --fail-on-alert')
    .argument('<alert_id>', 'the alert id')
    .option('--json', 'print JSON')
    .addHelpText('after', `
Examples:
  $ bundlefleet alerts ack 12
  $ bundlefleet alerts ack 12 --json`)
    .action(async (id: string, flags: { json?: boolean }) => {
      const a = await withDb(({ pool }) => ackAlert(pool, id));
      flags.json ? printJson(a) : process.stdout.write(`alert #${a.id} acknowledged\n`);
    });
}


