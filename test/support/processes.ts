/** Real bundlefleet processes for tests: the CLI run once, or a worker process killed after the test. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { onCleanup } from './db.js';

export const BIN = fileURLToPath(new URL('../../bin/bundlefleet', import.meta.url));

export function cliEnv(url: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: url, LOG_LEVEL: 'warn', LOG_FORMAT: 'json', ...extra };
  for (const k of ['TICKETS_URL', 'FLIGHTS_URL', 'TAXIS_URL', 'BUNDLEFLEET_SUPERVISE_CRON', 'ALERT_WEBHOOK_URL']) delete env[k];
  return env;
}

export function cli(url: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: cliEnv(url), timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (err as { code?: unknown }).code : 0;
      resolve({ code: typeof code === 'number' ? code : -1, stdout, stderr });
    });
  });
}

/** A `bundlefleet worker` process, SIGKILLed after the test if still alive. */
export function spawnWorker(url: string, providersUrl: string, name: string, extra: NodeJS.ProcessEnv = {}): { child: ChildProcess; output: () => string; exited: Promise<void> } {
  const child = spawn(process.execPath, [BIN, 'worker'], {
    env: cliEnv(url, {
      PROVIDERS_URL: providersUrl,
      BUNDLEFLEET_WORKER_NAME: name,
      BUNDLEFLEET_CONCURRENCY: '10',
      BUNDLEFLEET_LEASE_SECONDS: '60',
      BUNDLEFLEET_POLL_INTERVAL_MS: '100',
      BUNDLEFLEET_PROVIDER_TIMEOUT_MS: '5000',
      ...extra,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return { child, output: () => out, exited };
}

