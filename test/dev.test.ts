/**
 * `bundlefleet dev` (what `npm start` runs) through the real binary: it serves the status page and
 * /metrics and prints their URL; a second one for the same project exits 1 naming the first (pid,
 * URLs) instead of a raw EADDRINUSE; a port taken by another program is a sentence naming the
 * port and the flag; Ctrl-C stops it and removes its record.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { cli, expectNoStack } from './support/cli.js';
import { commandToRun, devBanner } from '../src/cli/dev-command.js';

const BIN = fileURLToPath(new URL('../bin/bundlefleet', import.meta.url));

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'bundlefleet-dev-'));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function devEnv(databaseUrl: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(DATABASE_URL|PROVIDERS_URL|TICKETS_URL|PORT|BUNDLEFLEET_.*)$/.test(k)) continue;
    env[k] = v;
  }
  return { ...env, DATABASE_URL: databaseUrl, LOG_LEVEL: 'warn', LOG_FORMAT: 'json' };
}

function startDev(cwd: string, env: NodeJS.ProcessEnv, args: string[]): { child: ChildProcessWithoutNullStreams; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [BIN, 'dev', ...args], { cwd, env });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.resume();
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  onCleanup(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
  });
  return { child, stderr: () => stderr, exited };
}

async function waitForText(read: () => string, pattern: RegExp, exited: Promise<unknown>, timeoutMs = 30_000): Promise<RegExpMatchArray> {
  let done = false;
  void exited.then(() => (done = true));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = read().match(pattern);
    if (m) return m;
    if (done || Date.now() > deadline) throw new Error(`no ${pattern} in:\n${read()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('bundlefleet dev', () => {
  it('serves the status page and /metrics, refuses a second dev naming the first, and cleans up on Ctrl-C', async () => {
    const db = await createTestDb();
    const cwd = await tempDir();
    const env = devEnv(db.url);
    const first = startDev(cwd, env, ['--port', '0', '--providers-port', '0']);
    const [, statusPage] = await waitForText(first.stderr, /status page: (http:\/\/127\.0\.0\.1:\d+)\/ /, first.exited);
    const [, providers] = await waitForText(first.stderr, /simulator at (http:\/\/127\.0\.0\.1:\d+)/, first.exited);
    expect(first.stderr()).toContain(`(metrics: ${statusPage}/metrics)`);
    // DATABASE_URL: no embedded database to keep running, and other commands need the same DATABASE_URL
    // (not "this directory", nor a ./bin/bundlefleet that is not there).
    expect(first.stderr()).toContain('In another terminal, with the same DATABASE_URL:');
    expect(first.stderr()).not.toMatch(/embedded database|from this directory|\.\/bin\/bundlefleet/);
    expect(first.stderr()).toContain(`  ${BIN} stats`);

    const page = await fetch(`${statusPage}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    const metrics = await fetch(`${statusPage}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^bundlefleet_/m);

    // The same project again (from a subdirectory too): exit 1 at once, naming the running one.
    await mkdir(join(cwd, 'sub'));
    const second = startDev(join(cwd, 'sub'), env, []);
    expect(await second.exited).toBe(1);
    expect(second.stderr()).toContain(`bundlefleet dev is already running for this project (pid ${first.child.pid}`);
    expect(second.stderr()).toContain(`status page ${statusPage}/, providers ${providers}`);
    expect(second.stderr()).not.toMatch(/EADDRINUSE|\n\s+at /);
    expect(first.child.exitCode).toBeNull();
    // `serve` on the dev's port says the dev serves it, not "another program".
    const serve = await cli(db.url, ['serve', '--port', new URL(statusPage!).port], { cwd: join(cwd, 'sub') });
    expect(serve.code).toBe(1);
    expect(serve.stderr).toContain(`cannot start the HTTP server: port ${new URL(statusPage!).port} is served by this project's dev, which already runs the HTTP API and status page. bundlefleet dev is already running for this project (pid ${first.child.pid}`);

    // Ctrl-C: exits 0 and removes its record, so the next start is not refused; with DATABASE_URL
    // the .bundlefleet/ it made for the record goes too (an empty one there once hid a parent
    // project's embedded database from every command run below it).
    first.child.kill('SIGINT');
    expect(await first.exited).toBe(0);
    expect(await readdir(cwd)).toEqual(['sub']);
  });

  it('with DATABASE_URL under a project with an embedded database, keeps its record in that project and creates nothing', async () => {
    const db = await createTestDb();
    const project = await tempDir();
    await mkdir(join(project, '.bundlefleet'));
    await writeFile(join(project, '.bundlefleet', 'server.json'), '{}'); // a project's server, as far as the lookup is concerned
    await mkdir(join(project, 'docs'));
    const dev = startDev(join(project, 'docs'), devEnv(db.url), ['--port', '0', '--providers-port', '0']);
    await waitForText(dev.stderr, /status page: /, dev.exited);
    expect(await readdir(join(project, 'docs'))).toEqual([]);
    expect((await readdir(join(project, '.bundlefleet'))).sort()).toEqual(['dev.json', 'server.json']);
    dev.child.kill('SIGINT');
    expect(await dev.exited).toBe(0);
    expect(await readdir(join(project, '.bundlefleet'))).toEqual(['server.json']);
  });

  it("the banner says where other commands find the database: the embedded one's project, or the same DATABASE_URL", () => {
    const common = { statusPage: 'http://127.0.0.1:8080', database: '127.0.0.1:5432/bundlefleet', providers: 'simulator at http://127.0.0.1:4010', cwd: '/w' };
    const embedded = devBanner({ ...common, command: './bin/bundlefleet', embeddedHome: '/p/.bundlefleet' });
    expect(embedded).toContain('database:    127.0.0.1:5432/bundlefleet (embedded, /p/.bundlefleet)');
    expect(embedded).toContain('In another terminal, in /p:');
    expect(embedded).toContain('  ./bin/bundlefleet stats');
    expect(embedded).toContain('the embedded database keeps running: ./bin/bundlefleet db stop');
    const external = devBanner({ ...common, command: './bin/bundlefleet', embeddedHome: undefined });
    expect(external).toContain('database:    127.0.0.1:5432/bundlefleet (DATABASE_URL)');
    expect(external).toContain('In another terminal, with the same DATABASE_URL (in /w):');
    expect(external).not.toMatch(/embedded|from this directory|db stop/);
    expect(devBanner({ ...common, command: 'bundlefleet', embeddedHome: undefined })).toContain('In another terminal, with the same DATABASE_URL:\n  bundlefleet enqueue');
  });

  it('names the command as it can be run: on PATH, relative to the directory the banner names, else its full path', () => {
    expect(commandToRun('/p/bin/bundlefleet', '/p', '/usr/bin')).toBe('./bin/bundlefleet');
    expect(commandToRun('/p/bin/bundlefleet', '/elsewhere', '/usr/bin')).toBe('/p/bin/bundlefleet');
    expect(commandToRun('/opt/bf/bin/bundlefleet', '/p', '/usr/bin:/opt/bf/bin')).toBe('bundlefleet');
  });

  it('says which port is taken by another program and how to choose another, leaving nothing running', async () => {
    const db = await createTestDb();
    const cwd = await tempDir();
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise((resolve) => blocker.close(resolve)));
    const taken = (blocker.address() as AddressInfo).port;

    const http = startDev(cwd, devEnv(db.url), ['--port', String(taken), '--providers-port', '0']);
    expect(await http.exited).toBe(1);
    expect(http.stderr()).toContain(`cannot start the HTTP server: 127.0.0.1:${taken} is already in use by another program`);
    expect(http.stderr()).toContain('--port');
    expect(http.stderr()).not.toMatch(/EADDRINUSE|\n\s+at /);

    const sim = startDev(cwd, devEnv(db.url), ['--port', '0', '--providers-port', String(taken)]);
    expect(await sim.exited).toBe(1);
    expect(sim.stderr()).toContain(`cannot start the provider simulator: 127.0.0.1:${taken} is already in use by another program`);
    expect(sim.stderr()).toContain('--providers-port');

    // Both taken: both named in one message, so the next try does not stop on the other one.
    const second = createServer();
    await new Promise<void>((resolve) => second.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise((resolve) => second.close(resolve)));
    const alsoTaken = (second.address() as AddressInfo).port;
    const both = startDev(cwd, devEnv(db.url), ['--port', String(taken), '--providers-port', String(alsoTaken)]);
    expect(await both.exited).toBe(1);
    expect(both.stderr()).toContain(
      `cannot start the provider simulator and the HTTP server: 127.0.0.1:${alsoTaken} and 127.0.0.1:${taken} are already in use by other programs. ` +
        'Stop them, or choose other ports with --providers-port (BUNDLEFLEET_PROVIDERS_PORT) and --port (PORT) (0 takes any free port), e.g. `npm start -- --providers-port 0 --port 0`',
    );
    expect(await readdir(cwd)).toEqual([]); // refused before creating anything
  });

  it('serve and providers say a taken port the same way as dev: the address, the flag and its variable (exit 1)', async () => {
    const db = await createTestDb();
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise((resolve) => blocker.close(resolve)));
    const taken = (blocker.address() as AddressInfo).port;

    const serve = await cli(db.url, ['serve', '--port', String(taken)]);
    expect(serve.code).toBe(1);
    expect(serve.stderr).toContain(`cannot start the HTTP server: 127.0.0.1:${taken} is already in use by another program. Stop it, or choose another port with --port or PORT (0 takes any free port)`);
    const fromEnv = await cli(db.url, ['serve'], { env: { PORT: String(taken) } });
    expect(fromEnv.code).toBe(1);
    expect(fromEnv.stderr).toContain('with --port or PORT');

    const providers = await cli(db.url, ['providers', '--port', String(taken)]);
    expect(providers.code).toBe(1);
    expect(providers.stderr).toContain(`cannot start the provider simulator: 127.0.0.1:${taken} is already in use by another program. Stop it, or choose another port with --port or PROVIDERS_PORT (0 takes any free port)`);
    for (const run of [serve, fromEnv, providers]) {
      expect(run.stdout).toBe('');
      expect(run.stderr).not.toMatch(/EADDRINUSE/);
      expectNoStack(run);
    }
  });
});
