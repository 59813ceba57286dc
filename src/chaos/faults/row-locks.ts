/**
 * A row lock held from outside: the harness's own session takes `SELECT ... FOR UPDATE` on a
 * random running bundle's row and holds it --row-lock-ms, again every --row-lock-every-ms
 * (±25 %), as an operator's open psql transaction or a slow migration would. Agents writing
 * that bundle must wait or give up without stalling the others.
 */
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import type { ChaosOptions } from '../options.js';
import { nextAt, until, type Fault, type FaultContext } from './fault.js';

export class RowLocks implements Fault {
  readonly name = 'row-locks';
  private held = 0;
  private heldMs = 0;
  private failed = 0;

  constructor(private readonly opts: ChaosOptions) {}

  async run(ctx: FaultContext): Promise<void> {
    let client: pg.Client | undefined;
    let next = nextAt(ctx.chaosStart, this.opts.rowLockEveryMs, ctx.random);
    try {
      while (await until(next, ctx)) {
        if (Date.now() < next) continue;
        try {
          client ??= await connect(ctx.databaseUrl);
          await this.holdOne(client, ctx);
        } catch {
          // PostgreSQL restarting (or the row's owner holding it longer than our lock_timeout): next time
          this.failed++;
          await client?.end().catch(() => {});
          client = undefined;
        }
        next = nextAt(Date.now(), this.opts.rowLockEveryMs, ctx.random);
      }
    } finally {
      await client?.end().catch(() => {});
    }
  }

  private async holdOne(client: pg.Client, ctx: FaultContext): Promise<void> {
    await client.query('BEGIN');
    try {
      const { rows } = await client.query<{ id: string }>(
        `SELECT id FROM bundles WHERE id = ANY($1::uuid[]) AND state = 'running' ORDER BY random() LIMIT 1`,
        [[...ctx.ids]],
      );
      if (!rows[0]) return;
      const locked = await client.query(`SELECT id FROM bundles WHERE id = $1 AND state = 'running' FOR UPDATE`, [rows[0].id]);
      if (!locked.rowCount) return;
      const started = Date.now();
      this.held++;
      await delay(this.opts.rowLockMs, undefined, { signal: ctx.signal }).catch(() => {});
      this.heldMs += Date.now() - started;
    } finally {
      await client.query('COMMIT');
    }
  }

  report() {
    return { locks_held: this.held, held_ms_total: this.heldMs, lock_ms: this.opts.rowLockMs, attempts_failed: this.failed };
  }
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, application_name: 'bundlefleet chaos row-lock', connectionTimeoutMillis: 5_000 });
  client.on('error', () => {}); // a restart ends it; the next query fails and we reconnect
  await client.connect();
  // Our own wait for the row is bounded: the fault is holding a lock, not queueing behind one.
  await client.query(`SET lock_timeout = '2s'`);
  return client;
}
