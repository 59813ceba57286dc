/**
 * The command line of `npm run chaos`: flags validated with zod, each bad one named, exit 2.
 */
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { decimalText, integerText } from '../number-text.js';
import { DEFAULTS, FAULT_MODES, defaultLeaseSeconds, type ChaosOptions, type ChaosSummary, type FaultMode } from './options.js';

/** Numbers as every bundlefleet flag takes them (number-text.ts); the loop below names the flag. */
const num = (min: number, max: number, int = false) => (int ? integerText(min, max) : decimalText(min, max));

const FLAGS = {
  bundles: num(1, 1_000_000, true),
  workers: num(1, 64, true),
  kills: num(0, 100_000, true),
  'kill-every-ms': num(100, 3_600_000, true),
  seconds: num(1, 86_400),
  'fail-rate': num(0, 1),
  'late-rate': num(0, 1),
  'hang-rate': num(0, 1),
  'no-rate': num(0, 1),
  'slow-rate': num(0, 1),
  'rate-limit': z.string().trim().regex(/^[1-9]\d{0,6}\/s$/, 'must be requests per second per kind, like 20/s').transform((v) => Number.parseInt(v, 10)),
  'latency-ms': num(0, 60_000, true),
  'hang-ms': num(0, 600_000, true),
  'provider-timeout-ms': num(1, 600_000, true),
  seed: num(-2_147_483_648, 2_147_483_647, true),
  concurrency: num(1, 1000, true),
  'lease-seconds': num(1, 86_400, true),
  'enqueue-seconds': num(0, 86_400),
  'settle-seconds': num(1, 86_400),
  'sold-out-share': num(0, 1),
  'waiting-share': num(0, 1),
  'wait-timeout-seconds': num(1, 86_400, true),
  'restart-at': num(0, 1),
  'pause-ms': num(100, 3_600_000, true),
  'pause-every-ms': num(100, 3_600_000, true),
  'half-open-every-ms': num(100, 3_600_000, true),
  'half-open-server-drop-ms': num(0, 3_600_000, true),
  'row-lock-ms': num(1, 3_600_000, true),
  'row-lock-every-ms': num(100, 3_600_000, true),
  'cancel-every-ms': num(100, 3_600_000, true),
} as const;

export const USAGE = `usage: npm run chaos -- --bundles N --workers K --seconds S [options]
Classic faults (in every run unless turned off):
  --kills N               SIGKILLs in total, spread over the window (default: one every --kill-every-ms)
  --kill-every-ms MS      interval between SIGKILLs (default 2000)
  --no-restart            no PostgreSQL restart (there is none with --database-url)
  --fail-rate R --late-rate R --hang-rate R --no-rate R   provider faults (0..1)
  --slow-rate R           bookings answered after --hang-ms (default 0; 0.02 with --concurrent-409, which makes a booking only as it is answered)
  --rate-limit N/s        a rate-limited provider: past N requests per second per kind, 429 with Retry-After
                          (bundles park; a 429 counted as a failed attempt is a violation)
Fault modes (each flag selects one; with none of them, a run mixes all seven):
  --pause-workers         SIGSTOP a worker (or one of two supervisors) past the lease, then SIGCONT
  --half-open             cut a worker's liveness or pool connection without closing it (TCP proxy)
  --forget-cancels        providers keep no tombstone for a cancel of an unseen key
  --concurrent-409        providers answer 409 "in progress" to a booking whose key is in flight
  --silent-webhook        the supervisors' alert webhook accepts connections and never answers
  --row-locks             hold SELECT ... FOR UPDATE on a random running bundle from outside
  --operator-cancels      cancel a random running bundle (bundlefleet cancel) while its agent runs
  --classic               none of the seven (only the classic faults)
Tuning:
  --lease-seconds S       the fleet's lease (default 5 with a fault mode, 60 with --classic)
  --pause-ms MS           how long a pause lasts (default lease + 3 s); --pause-every-ms MS (default ${DEFAULTS.pauseEveryMs})
  --half-open-every-ms MS (default ${DEFAULTS.halfOpenEveryMs}); --half-open-server-drop-ms MS (default ${DEFAULTS.halfOpenServerDropMs})
  --row-lock-ms MS (default ${DEFAULTS.rowLockMs}); --row-lock-every-ms MS (default ${DEFAULTS.rowLockEveryMs})
  --cancel-every-ms MS    interval between operator cancels (default ${DEFAULTS.cancelEveryMs})
  --latency-ms MS         provider latency (default ${DEFAULTS.latencyMs})
  --seed N                fault pattern and victims (default 1)
  --concurrency N         agents per worker (default ${DEFAULTS.concurrency})
  --enqueue-seconds S     spread enqueueing over S seconds (default 80 % of --seconds; 0 = all at once)
  --settle-seconds S      wait at most S seconds after the chaos for every bundle (default ${DEFAULTS.settleSeconds})
  --waiting-share X       share of bundles (vip v2) that wait for the airlines' ticketing confirmations,
                          sent by the simulator to an API the run serves: late, twice or never (default ${DEFAULTS.waitingShare})
  --wait-timeout-seconds S  how long those bundles wait before they are compensated (default ${DEFAULTS.waitTimeoutSeconds})
  --database-url URL      use this database instead of a dedicated embedded server (no restart)
  --json                  print only the JSON summary
  --keep-logs             keep the fleet's logs also when every invariant holds (always kept on failure)
Exit codes: 0 all invariants hold, 1 a violation or a timeout, 2 bad usage.`;

export class UsageError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
  }
}

export function parseChaosArgs(argv: string[]): ChaosOptions {
  const options = Object.fromEntries(Object.keys(FLAGS).map((k) => [k, { type: 'string' as const }]));
  const modeFlags = Object.fromEntries(FAULT_MODES.map((m) => [m, { type: 'boolean' as const }]));
  const { values } = parseArgs({
    args: argv,
    options: {
      ...options,
      ...modeFlags,
      classic: { type: 'boolean' },
      'no-restart': { type: 'boolean' },
      'database-url': { type: 'string' },
      json: { type: 'boolean' },
      'keep-logs': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) throw new UsageError(USAGE, 0);
  const issues: string[] = [];
  const parsed: Record<string, number> = {};
  for (const [flag, schema] of Object.entries(FLAGS)) {
    const raw = (values as Record<string, unknown>)[flag];
    if (raw === undefined) continue;
    const r = schema.safeParse(raw);
    if (r.success) parsed[flag] = r.data;
    else issues.push(`--${flag}: ${r.error.issues[0]?.message ?? 'invalid'} (got ${JSON.stringify(raw)})`);
  }
  for (const required of ['bundles', 'workers', 'seconds']) if (parsed[required] === undefined && !issues.some((i) => i.startsWith(`--${required}`))) issues.push(`--${required}: required`);
  const chosen = FAULT_MODES.filter((m) => (values as Record<string, unknown>)[m] === true);
  if (values.classic && chosen.length) issues.push(`--classic: cannot be combined with ${chosen.map((m) => `--${m}`).join(', ')}`);
  if (issues.length) throw new UsageError(`bad usage:\n  ${issues.join('\n  ')}\n${USAGE}`, 2);
  const modes: FaultMode[] = values.classic ? [] : chosen.length ? chosen : [...FAULT_MODES];
  const databaseUrl = (values['database-url'] as string | undefined) ?? (process.env.DATABASE_URL?.trim() || undefined);
  return {
    ...DEFAULTS,
    bundles: parsed.bundles!,
    workers: parsed.workers!,
    seconds: parsed.seconds!,
    kills: parsed.kills,
    killEveryMs: parsed['kill-every-ms'] ?? DEFAULTS.killEveryMs,
    failRate: parsed['fail-rate'] ?? 0,
    lateRate: parsed['late-rate'] ?? 0,
    hangRate: parsed['hang-rate'] ?? 0,
    noRate: parsed['no-rate'] ?? 0,
    slowRate: parsed['slow-rate'],
    rateLimit: parsed['rate-limit'],
    latencyMs: parsed['latency-ms'] ?? DEFAULTS.latencyMs,
    hangMs: parsed['hang-ms'] ?? DEFAULTS.hangMs,
    providerTimeoutMs: parsed['provider-timeout-ms'] ?? DEFAULTS.providerTimeoutMs,
    seed: parsed.seed ?? DEFAULTS.seed,
    concurrency: parsed.concurrency ?? DEFAULTS.concurrency,
    leaseSeconds: parsed['lease-seconds'] ?? defaultLeaseSeconds(modes),
    enqueueSeconds: parsed['enqueue-seconds'],
    settleSeconds: parsed['settle-seconds'] ?? DEFAULTS.settleSeconds,
    soldOutShare: parsed['sold-out-share'] ?? DEFAULTS.soldOutShare,
    waitingShare: parsed['waiting-share'] ?? DEFAULTS.waitingShare,
    waitTimeoutSeconds: parsed['wait-timeout-seconds'] ?? DEFAULTS.waitTimeoutSeconds,
    restartAt: parsed['restart-at'] ?? DEFAULTS.restartAt,
    restart: !values['no-restart'],
    modes,
    pauseMs: parsed['pause-ms'],
    pauseEveryMs: parsed['pause-every-ms'] ?? DEFAULTS.pauseEveryMs,
    halfOpenEveryMs: parsed['half-open-every-ms'] ?? DEFAULTS.halfOpenEveryMs,
    halfOpenServerDropMs: parsed['half-open-server-drop-ms'] ?? DEFAULTS.halfOpenServerDropMs,
    rowLockMs: parsed['row-lock-ms'] ?? DEFAULTS.rowLockMs,
    rowLockEveryMs: parsed['row-lock-every-ms'] ?? DEFAULTS.rowLockEveryMs,
    cancelEveryMs: parsed['cancel-every-ms'] ?? DEFAULTS.cancelEveryMs,
    databaseUrl,
    verbose: !values.json,
    keepLogs: values['keep-logs'] === true,
  };
}

/** The one line on stderr after a run that is not --json. */
export function outcomeLine(summary: ChaosSummary): string {
  const r = summary.recovery;
  return summary.ok
    ? `chaos: OK — ${summary.enqueued} bundles terminal (${Object.entries(summary.states).map(([s, n]) => `${s} ${n}`).join(', ')}), ${r.kills} kills, recovery p50 ${r.p50_ms} ms / max ${r.max_ms} ms\n`
    : `chaos: FAILED — ${summary.violations.map((v) => `${v.invariant}: ${v.message} (${v.count}${v.bundle_ids.length ? `: ${v.bundle_ids.slice(0, 5).join(', ')}${v.count > 5 ? ', …' : ''}` : ''})`).join('; ')}\n`;
}
