/**
 * A half-open connection: the peer is gone, but no FIN or RST ever arrives, so the socket looks
 * alive to the side that is left (a NAT or firewall that dropped its state, a cable pulled).
 *
 * Workers reach PostgreSQL through a TCP proxy (tcp-proxy.ts). Every --half-open-every-ms
 * (±25 %) one running worker (preferably one holding claimed bundles) loses one connection,
 * alternately its liveness connection (application_name `bundlefleet worker <name>.<gen>.<rand>`)
 * and one of its pool connections (`bundlefleet worker <name>`): the proxy stops forwarding both
 * ways and closes nothing. After --half-open-server-drop-ms the server side goes too
 * (PostgreSQL's own keep-alive giving up): the backend is terminated, its locks released and its
 * transaction rolled back, while the worker's socket still looks open. The worker must notice
 * by itself.
 */
import { setTimeout as delay } from 'node:timers/promises';
import type { ChaosOptions } from '../options.js';
import { startTcpProxy, type ProxiedConnection, type TcpProxy } from '../tcp-proxy.js';
import { nextAt, pick, pickBusyWorker, until, type Fault, type FaultContext, type PrepareContext, type Preparation } from './fault.js';

type Target = 'liveness' | 'pool';

export class HalfOpen implements Fault {
  readonly name = 'half-open';
  private proxy: TcpProxy | undefined;
  private readonly cut: Record<Target, number> = { liveness: 0, pool: 0 };
  private serverDropped = 0;
  private missed = 0;

  constructor(private readonly opts: ChaosOptions) {}

  async prepare(ctx: PrepareContext): Promise<Preparation> {
    const target = new URL(ctx.databaseUrl);
    this.proxy = await startTcpProxy(target.hostname, Number(target.port || 5432));
    ctx.say(`workers reach PostgreSQL through a TCP proxy on 127.0.0.1:${this.proxy.port}`);
    return { workerDatabaseUrl: this.proxy.url(ctx.databaseUrl) };
  }

  async run(ctx: FaultContext): Promise<void> {
    const drops: Promise<void>[] = [];
    let next = nextAt(ctx.chaosStart, this.opts.halfOpenEveryMs / 2, ctx.random);
    let turn = 0;
    while (await until(next, ctx)) {
      if (Date.now() < next) continue;
      const open = this.proxy!.connections().filter((c) => !c.blackholed && c.serverPort !== undefined);
      const hasOpen = (name: string, target: Target) => open.some((c) => belongsTo(c, name, target));
      // Liveness and pool take turns. A worker with a liveness connection has finished starting up
      // (it takes its id at its first claim), so only such a worker is a victim.
      const order: Target[] = turn % 2 === 0 ? ['liveness', 'pool'] : ['pool', 'liveness'];
      const victim = await pickBusyWorker(ctx, (w) => hasOpen(w.name, 'liveness'));
      if (!victim) {
        // No worker up with a connection to cut (all starting, paused or just killed): try again shortly.
        this.missed++;
        next = Date.now() + 250;
        continue;
      }
      next = nextAt(next, this.opts.halfOpenEveryMs, ctx.random);
      const target = order.find((t) => hasOpen(victim.name, t))!;
      const conn = pick(open.filter((c) => belongsTo(c, victim.name, target)), ctx.random)!;
      if (target === order[0]) turn++; // the other kind gets its turn once this one was cut
      this.proxy!.blackhole((c) => c.id === conn.id);
      this.cut[target]++;
      ctx.say(`half-opened ${victim.name}'s ${target} connection`);
      drops.push(this.dropServerSide(conn, ctx));
    }
    await Promise.allSettled(drops);
  }

  /** The server side gives up on the peer: terminate exactly the backend behind that proxied socket. */
  private async dropServerSide(conn: ProxiedConnection, ctx: FaultContext): Promise<void> {
    await delay(this.opts.halfOpenServerDropMs, undefined, { signal: ctx.signal }).catch(() => {});
    try {
      const { rowCount } = await ctx.pool.query(
        // The proxy's end of a live socket has a port no other connection uses.
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = $1 AND pid <> pg_backend_pid()`,
        [conn.serverPort],
      );
      this.serverDropped += rowCount ?? 0;
    } catch {
      // PostgreSQL restarting: the backend is gone anyway
    }
  }

  report() {
    return { liveness_connections_cut: this.cut.liveness, pool_connections_cut: this.cut.pool, server_sides_dropped: this.serverDropped, retries_without_victim: this.missed };
  }

  async close(): Promise<void> {
    await this.proxy?.close();
  }
}

function belongsTo(c: ProxiedConnection, worker: string, target: Target): boolean {
  const name = c.applicationName ?? '';
  return target === 'pool' ? name === `bundlefleet worker ${worker}` : name.startsWith(`bundlefleet worker ${worker}.`);
}
