/** Runs `bin/bundlefleet` as a user does, in its own process against a test database. */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { onCleanup } from './db.js';

export const BIN = fileURLToPath(new URL('../../bin/bundlefleet', import.meta.url));

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface CliOptions {
  input?: string;
  cwd?: string;
  timeoutMs?: number;
  /** Extra environment (undefined removes a variable). */
  env?: Record<string, string | undefined>;
  /** Close our end of the child's stdout at once, as `| head` does after its first lines. */
  closeStdout?: boolean;
  /** Close our end of the child's stderr at once (`2>&1 | head`). */
  closeStderr?: boolean;
  /** Called with each chunk of stdout as it arrives. */
  onStdout?: (chunk: string) => void;
}

export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'bundlefleet-cli-'));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs the CLI with DATABASE_URL = `databaseUrl` (unless `env` overrides it) in a temporary working directory. */
export async function cli(databaseUrl: string, args: string[], opts: CliOptions = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(DATABASE_URL|PROVIDERS_URL|TICKETS_URL|FLIGHTS_URL|TAXIS_URL|BUNDLEFLEET_.*|NO_COLOR|FORCE_COLOR|LOG_FORMAT)$/.test(k)) continue;
    env[k] = v;
  }
  env.DATABASE_URL = databaseUrl;
  env.LOG_LEVEL = 'silent';
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const cwd = opts.cwd ?? (await tempDir());
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    if (opts.closeStdout) child.stdout.destroy();
    else child.stdout.on('data', (d) => {
      stdout += d;
      opts.onStdout?.(String(d));
    });
    if (opts.closeStderr) child.stderr.destroy();
    else child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`bundlefleet ${args.join(' ')} did not exit within ${opts.timeoutMs ?? 30_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
    child.stdin.end(opts.input ?? '');
  });
}

export function jsonLines(stdout: string): Array<Record<string, unknown>> {
  return stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

export function expectNoStack(run: Run): void {
  expect(run.stderr).not.toMatch(/^\s+at /m);
  expect(run.stdout + run.stderr).not.toMatch(/node:internal|\.js:\d+:\d+/);
}

/**
 * A refused command given --json: exactly one document on stdout, its error (`{ error, code,
 * exit_code, issues? }`), and the exit code it names. Returns the document. Without --json in
 * `args`, stdout must be empty.
 */
export function expectRefusal(run: Run, args: string[], expected: { exit: number; code: string }): Record<string, unknown> | undefined {
  expect(run.code, run.stderr).toBe(expected.exit);
  if (!args.includes('--json')) {
    expect(run.stdout).toBe('');
    return undefined;
  }
  const docs = jsonLines(run.stdout);
  expect(docs, run.stdout).toHaveLength(1);
  expect(docs[0]).toMatchObject({ code: expected.code, exit_code: expected.exit });
  expect(typeof docs[0]!.error).toBe('string');
  return docs[0];
}
