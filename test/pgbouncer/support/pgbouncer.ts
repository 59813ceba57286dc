/**
 * Real PgBouncer daemons for `npm run test:pgbouncer`: each test starts its own on a free port,
 * in front of the test PostgreSQL, with a config written to a scratch directory. Clients log in
 * without a password (auth_type=trust, the user listed in auth_file); PgBouncer logs in to
 * PostgreSQL with the password from the auth_file (SCRAM).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onCleanup } from '../../support/db.js';
import { findPgbouncer } from './find.js';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface PgBouncer {
  port: number;
  /** `target` (a URL of the test PostgreSQL) through this PgBouncer, without the password. */
  url(target: string): string;
  /** The daemon's log so far (its stderr). */
  log(): Promise<string>;
  stop(): Promise<void>;
}

export interface PgBouncerOptions {
  poolMode: 'session' | 'transaction';
  defaultPoolSize?: number;
  /** Seconds after which a server connection is closed once released (PgBouncer's server_lifetime). */
  serverLifetime?: number;
}

export async function startPgBouncer(upstreamUrl: string, opts: PgBouncerOptions): Promise<PgBouncer> {
  const bin = findPgbouncer();
  if (!bin) throw new Error('pgbouncer is not installed');
  const upstream = new URL(upstreamUrl);
  const user = decodeURIComponent(upstream.username);
  const password = decodeURIComponent(upstream.password);
  const dir = await mkdtemp(join(tmpdir(), 'bundlefleet-pgbouncer-'));
  await chmod(dir, 0o755);
  const port = await freePort();
  const ini = `[databases]
* = host=${upstream.hostname} port=${upstream.port || 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = trust
auth_file = ${join(dir, 'userlist.txt')}
pool_mode = ${opts.poolMode}
default_pool_size = ${opts.defaultPoolSize ?? 40}
max_client_conn = 1000
server_lifetime = ${opts.serverLifetime ?? 3600}
server_idle_timeout = 600
`;
  await writeFile(join(dir, 'pgbouncer.ini'), ini, { mode: 0o644 });
  await writeFile(join(dir, 'userlist.txt'), `"${user}" "${password}"\n`, { mode: 0o644 });
  // PgBouncer refuses to run as root: as root, it switches to the user the embedded server runs as.
  const asRoot = process.getuid?.() === 0;
  const child: ChildProcess = spawn(bin, [...(asRoot ? ['-u', 'postgres'] : []), join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  // Without a logfile PgBouncer logs to stderr.
  const log = async () => stderr;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`pgbouncer did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const stop = async () => {
    // A test daemon: no safe shutdown (SIGINT would wait for every session to end).
    if (child.exitCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  onCleanup(stop);
  return {
    port,
    url(target) {
      const u = new URL(target);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      u.password = '';
      return u.toString();
    },
    log,
    stop,
  };
}
