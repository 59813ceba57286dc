/** What a Worker (scheduler/worker.ts) is configured with; the CLI's `worker` and `dev` fill it from flags. */
import type { AgentOutcome } from '../agents/agent.js';
import type { KindVersionCount } from '../bundles/read.js';
import type { ProviderUrls } from '../providers/client.js';
import type { Logger } from '../logger.js';
import type { ProviderLimits } from '../providers/limits.js';
import type { CircuitOptions } from '../agents/flow-control.js';

export interface WorkerOptions {
  databaseUrl: string;
  /** For the liveness connection (session advisory lock + LISTEN): needs a session of its own. Default databaseUrl. */
  sessionDatabaseUrl?: string;
  providerUrls: ProviderUrls;
  /** Agents running at once in this process. Default 10. */
  concurrency?: number;
  /** Lease written at claim and extended at every step. Default 60 s. */
  leaseSeconds?: number;
  /** Timeout of one provider request. Default 5000 ms. */
  providerTimeoutMs?: number;
  /** Poll even without NOTIFY, for bundles whose backoff ends. Default 1000 ms. */
  pollIntervalMs?: number;
  /** Prefix of the worker id written to locked_by. Default `<hostname>-<pid>`. */
  name?: string;
  /** First stop: how long in-flight agents may finish before they are released. Default 20 s. */
  drainTimeoutMs?: number;
  /**
   * Most bundles claimed in one statement. Each claimed bundle takes a transaction-scoped advisory
   * lock, and those live in PostgreSQL's shared lock table (max_locks_per_transaction ×
   * max_connections, 6,400 by default), so one claim must stay well below that. Default 500.
   */
  claimBatchSize?: number;
  /** Retries of a transient provider error within an attempt. Default 2. */
  providerRetries?: number;
  /** Kind versions this worker runs; default every version this build carries. */
  kinds?: Array<{ kind: string; version: number }>;
  /** Deadline of wait steps per kind, overriding each kind's default (--wait-timeout). */
  waitTimeoutSeconds?: Record<string, number>;
  /** Fleet-wide limits per provider kind (--provider-concurrency, --provider-rate); none by default. */
  providerLimits?: ProviderLimits;
  /** Pause a kind after a run of transient failures (--provider-circuit); off by default. */
  providerCircuit?: CircuitOptions;
  /** Called with the non-terminal bundles of kind versions this worker does not carry (checked every 30 s). */
  onUnrunnable?: (counts: KindVersionCount[]) => void;
  logger?: Logger;
  /** Hooks for metrics. */
  onClaim?: (count: number) => void;
  /** Called as each claimed bundle's agent starts (the benchmark times enqueue → agent start with it). */
  onAgentStart?: (bundleId: string) => void;
  onStep?: (step: string, outcome: string, seconds: number) => void;
  onOutcome?: (outcome: AgentOutcome) => void;
}
