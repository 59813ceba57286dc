/**
 * An agent's own view of its lease, on its own monotonic clock (performance.now(), which keeps
 * counting while the process is stopped by SIGSTOP). The deadline starts when the claim statement
 * was sent and moves forward from the moment each lease-extending write was sent, so it is never
 * later than the lease PostgreSQL holds. Before every provider call and every retry the agent asks
 * whether a whole request (its timeout) still fits: if not, the supervisor may already have given
 * the bundle to a newer attempt, and a call now could book or cancel behind that attempt's back
 * (invariant 9). Wall-clock time is never used: it can jump.
 */
export class LeaseExpired extends Error {
  readonly code = 'LEASE_EXPIRED';
  constructor(remainingMs: number, neededMs: number) {
    super(`lease deadline too close (${Math.max(0, Math.round(remainingMs))} ms left, a provider request may take ${neededMs} ms): stopped before calling the provider`);
    this.name = 'LeaseExpired';
  }
}

export class LeaseDeadline {
  private deadline: number;

  constructor(private readonly leaseSeconds: number, claimSentAt = performance.now()) {
    this.deadline = claimSentAt + leaseSeconds * 1000;
  }

  /** A fenced write sent at `sentAt` extended the lease in the database. */
  extendFrom(sentAt: number): void {
    this.deadline = Math.max(this.deadline, sentAt + this.leaseSeconds * 1000);
  }

  remainingMs(now = performance.now()): number {
    return this.deadline - now;
  }

  /** Throws LeaseExpired unless a call that may take `callMs` ends before the deadline. */
  assertRoomFor(callMs: number): void {
    const remaining = this.remainingMs();
    if (remaining < callMs) throw new LeaseExpired(remaining, callMs);
  }
}
