/**
 * What every command shares: connecting (DATABASE_URL or the embedded server), checking the
 * schema, printing JSON or text, and turning errors into exit codes
 * (0 ok, 1 not found or runtime failure, 2 bad usage or bad input).
 */
import type pg from 'pg';
import type { Command } from 'commander';
import { z } from 'zod';
import { AddressInUse, BadInput, NotFound, Conflict, SchemaMissing, EmbeddedDatabaseError, SessionRequired } from '../errors.js';
import { checkConnection, createPool, DatabaseUnavailable, resolveDatabaseUrl, resolveSessionDatabaseUrl } from '../db/pool.js';
import { assertSchema } from '../db/migrate.js';
import { integerText } from '../number-text.js';
import { rootLogger } from '../logger.js';

export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

export interface Db {
  pool: pg.Pool;
  url: string;
  /** For connections that need a session of their own (worker liveness): BUNDLEFLEET_SESSION_DATABASE_URL, else `url`. */
  sessionUrl: string;
  close(): Promise<void>;
}

/**
 * Connects, checks the database answers (fails within seconds naming it) and, unless told not to,
 * that the schema is there. `create`: make the embedded server when there is none (only `migrate` and `dev`).
 */
export async function openDb(opts: { checkSchema?: boolean; max?: number; create?: boolean; waitSeconds?: number } = {}): Promise<Db> {
  const url = await resolveDatabaseUrl(process.env, { create: opts.create ?? false });
  const sessionUrl = resolveSessionDatabaseUrl(url, process.env);
  const pool = createPool(url, { max: opts.max ?? 4, onError: (err) => rootLogger().warn({ err: err.message }, 'idle database connection lost') });
  try {
    await waitForDatabase(pool, url, opts.waitSeconds ?? 0);
    if (opts.checkSchema !== false) await assertSchema(pool);
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
  return { pool, url, sessionUrl, close: () => pool.end() };
}

/**
 * A long-running process (`worker`, `supervise --loop`) started while PostgreSQL restarts waits for
 * it, as a running one does, instead of exiting (measured in the chaos run: a replacement worker
 * spawned during an immediate restart died with "cannot reach PostgreSQL"). One-shot commands
 * (waitSeconds 0) fail at once with a message naming the database.
 */
async function waitForDatabase(pool: pg.Pool, url: string, waitSeconds: number): Promise<void> {
  const deadline = performance.now() + waitSeconds * 1000;
  for (let delay = 200; ; delay = Math.min(delay * 2, 2_000)) {
    try {
      return await checkConnection(pool, url);
    } catch (err) {
      if (!(err instanceof DatabaseUnavailable) || performance.now() + delay > deadline) throw err;
      rootLogger().warn({ err: err.message }, `database not reachable yet; trying again for up to ${Math.round((deadline - performance.now()) / 1000)} s`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

export async function withDb<T>(fn: (db: Db) => Promise<T>, opts?: { checkSchema?: boolean; create?: boolean }): Promise<T> {
  const db = await openDb(opts);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

/**
 * A one-shot command given --json prints exactly one document on stdout: its result, or, when it
 * fails, its error (errorDocument). Set from the command line before the command runs.
 */
let jsonRequested = false;
let jsonPrinted = false;

export function requestJsonOutput(on: boolean): void {
  jsonRequested = on;
}

export function printJson(value: unknown): void {
  jsonPrinted = true;
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/**
 * Maps an error to its message (stderr) and exit code; never prints a stack trace for expected
 * failures. Under --json, a command that printed nothing yet also prints the error as its one
 * document on stdout, shaped like the HTTP API's error bodies.
 */
export function reportError(err: unknown): number {
  const { exitCode, text } = describeError(err);
  process.stderr.write(`bundlefleet: ${text}\n`);
  if (!isTypedError(err) && process.env.BUNDLEFLEET_DEBUG) process.stderr.write(`${(err as Error)?.stack}\n`);
  if (jsonRequested && !jsonPrinted) printJson(errorDocument(err, exitCode));
  return exitCode;
}

/** A usage error found by commander (which printed it): under --json, its document too. */
export function reportUsageError(message: string): void {
  if (jsonRequested && !jsonPrinted) printJson({ error: message.replace(/^error: /, ''), code: 'USAGE', exit_code: EXIT.usage });
}

/** The errors callers handle: their message is the report, their `code` the document's (pg's errors carry a `code` too). */
const TYPED_ERRORS = [BadInput, SessionRequired, EmbeddedDatabaseError, NotFound, Conflict, SchemaMissing, DatabaseUnavailable, AddressInUse];
const isTypedError = (err: unknown): boolean => TYPED_ERRORS.some((E) => err instanceof E);

function describeError(err: unknown): { exitCode: number; text: string } {
  if (err instanceof BadInput) return { exitCode: EXIT.usage, text: `bad input:\n  ${err.issues.join('\n  ')}` };
  // A configuration error: the URL points a session-bound connection at a transaction pooler.
  if (err instanceof SessionRequired) return { exitCode: EXIT.usage, text: err.message };
  if (err instanceof EmbeddedDatabaseError) return { exitCode: err.exitCode, text: err.message };
  // Not found, a conflict, a missing schema, an unreachable database, or anything else.
  return { exitCode: EXIT.failure, text: (err as Error)?.message ?? String(err) };
}

/** Fields a command adds to an error's --json document (addErrorDetails). */
const errorDetails = new WeakMap<object, Record<string, unknown>>();

/**
 * Adds fields to the --json error document `err` will be reported with: what a command knows that
 * the error does not (a refused enqueue's earlier batches, committed: `enqueued`).
 */
export function addErrorDetails(err: object, details: Record<string, unknown>): void {
  errorDetails.set(err, { ...errorDetails.get(err), ...details });
}

/**
 * `{ error, code, exit_code }`, plus `issues` for bad input (one per offending field, as HTTP's 400
 * body has them) and what the command added (addErrorDetails). `code` is the typed error's
 * (BAD_INPUT, NOT_FOUND, CONFLICT, …), FAILURE for anything else.
 */
function errorDocument(err: unknown, exitCode: number): Record<string, unknown> {
  const e = err as Error & { code?: unknown };
  const code = isTypedError(err) && typeof e.code === 'string' ? e.code : 'FAILURE';
  const doc: Record<string, unknown> = err instanceof BadInput ? { error: 'bad input', code, issues: err.issues } : { error: e?.message ?? String(err), code };
  if (typeof err === 'object' && err !== null) Object.assign(doc, errorDetails.get(err));
  doc.exit_code = exitCode;
  return doc;
}

/**
 * Validates parsed options with zod; a bad value becomes BadInput naming the flag (and its env
 * variable, since commander's .env() may have supplied it).
 */
export function parseOptions<T extends z.ZodType>(schema: T, raw: Record<string, unknown>, names: Record<string, string>): z.infer<T> {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issues = result.error.issues.map((i) => {
    const key = String(i.path[0] ?? '');
    return `${names[key] ?? key}: ${i.message}`;
  });
  throw new BadInput(issues.join('; '), issues);
}

/** Integer option from flag or env text, bounded: decimal digits only (number-text.ts says why). */
export const intOption = (min: number, max: number) => integerText(min, max);

const SWITCH_ON = ['true', '1', 'yes', 'on'];
const SWITCH_OFF = ['false', '0', 'no', 'off', ''];

/**
 * The value of a switch's env variable, read strictly (case and surrounding blanks ignored):
 * true/1/yes/on is on; false/0/no/off is off, and so is empty, as blank settings count as unset
 * everywhere (settings.ts) and `VAR=` must never turn an override on; anything else is BadInput
 * naming `name` and the accepted values.
 */
export function switchValue(name: string, raw: string): boolean {
  const value = raw.trim().toLowerCase();
  if (SWITCH_ON.includes(value)) return true;
  if (SWITCH_OFF.includes(value)) return false;
  throw new BadInput(`${name}: must be true, 1, yes or on, or false, 0, no, off or empty (got ${JSON.stringify(raw)})`);
}

/**
 * Commander turns a switch (a boolean option) on when its .env() variable merely exists, so
 * `X=false` would mean on. Reads every such variable of `cmd` again with switchValue; a flag
 * given on the command line wins, as for every other setting. Runs before each action (main.ts).
 */
export function parseEnvSwitches(cmd: Command, env: NodeJS.ProcessEnv = process.env): void {
  const issues: string[] = [];
  for (const option of cmd.options) {
    const key = option.attributeName();
    if (!option.envVar || !option.isBoolean() || cmd.getOptionValueSource(key) !== 'env') continue;
    const raw = env[option.envVar];
    if (raw === undefined) continue;
    try {
      cmd.setOptionValueWithSource(key, switchValue(`${option.long} (${option.envVar})`, raw), 'env');
    } catch (err) {
      if (!(err instanceof BadInput)) throw err;
      issues.push(...err.issues);
    }
  }
  if (issues.length) throw new BadInput(issues.join('; '), issues);
}
