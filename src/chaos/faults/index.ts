/**
 * The faults of a run: the classic ones (SIGKILLs, one PostgreSQL restart; the provider rates
 * are simulator settings) and the fault modes it selected.
 */
import type { ChaosOptions, FaultMode } from '../options.js';
import type { Fault } from './fault.js';
import { HalfOpen } from './half-open.js';
import { KillWorkers } from './kill-workers.js';
import { OperatorCancels } from './operator-cancels.js';
import { PauseWorkers } from './pause-workers.js';
import { PgRestart } from './pg-restart.js';
import { ConcurrentConflict, ForgetCancels } from './provider-modes.js';
import { RowLocks } from './row-locks.js';
import { SilentWebhook } from './silent-webhook.js';

const MODES: Record<FaultMode, (opts: ChaosOptions) => Fault> = {
  'pause-workers': (opts) => new PauseWorkers(opts),
  'half-open': (opts) => new HalfOpen(opts),
  'forget-cancels': () => new ForgetCancels(),
  'concurrent-409': (opts) => new ConcurrentConflict(opts),
  'silent-webhook': () => new SilentWebhook(),
  'row-locks': (opts) => new RowLocks(opts),
  'operator-cancels': (opts) => new OperatorCancels(opts),
};

export interface RunFaults {
  kills: KillWorkers;
  restart: PgRestart | undefined;
  pauses: PauseWorkers | undefined;
  all: Fault[];
}

export function faultsFor(opts: ChaosOptions): RunFaults {
  const kills = new KillWorkers(opts);
  const restart = opts.restart ? new PgRestart(opts) : undefined;
  const modes = opts.modes.map((m) => MODES[m](opts));
  const pauses = modes.find((f): f is PauseWorkers => f instanceof PauseWorkers);
  return { kills, restart, pauses, all: [kills, ...(restart ? [restart] : []), ...modes] };
}
