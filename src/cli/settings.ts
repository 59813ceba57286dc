/**
 * Settings every command shares, validated with zod before a command runs: `--database-url`
 * (DATABASE_URL), `--session-database-url` (BUNDLEFLEET_SESSION_DATABASE_URL), `--providers-url` (PROVIDERS_URL) and the environment read elsewhere
 * (TICKETS_URL, FLIGHTS_URL, TAXIS_URL, LOG_LEVEL, LOG_FORMAT). A malformed value is BadInput
 * (exit 2) naming the flag and its variable; a secret in a URL is never echoed.
 */
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { BadInput } from '../errors.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** A URL whose scheme is one of `protocols`; the message names the expected form, never the value (it may hold a password). */
function urlOf(protocols: string[], example: string) {
  return z.string().superRefine((value, ctx) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      ctx.addIssue({ code: 'custom', message: `is not a URL (expected e.g. ${example})` });
      return;
    }
    if (!protocols.includes(url.protocol)) ctx.addIssue({ code: 'custom', message: `must be a ${protocols.map((p) => `${p}//`).join(' or ')} URL (e.g. ${example}), not ${url.protocol}//` });
    else if (!url.hostname && protocols[0] !== 'postgres:') ctx.addIssue({ code: 'custom', message: `has no host (expected e.g. ${example})` });
  });
}

const databaseUrl = urlOf(['postgres:', 'postgresql:'], 'postgres://user:password@127.0.0.1:5432/bundlefleet');
const httpUrl = urlOf(['http:', 'https:'], 'http://127.0.0.1:4010');

export const envSchema = z.object({
  DATABASE_URL: databaseUrl.optional(),
  BUNDLEFLEET_SESSION_DATABASE_URL: databaseUrl.optional(),
  PROVIDERS_URL: httpUrl.optional(),
  TICKETS_URL: httpUrl.optional(),
  FLIGHTS_URL: httpUrl.optional(),
  TAXIS_URL: httpUrl.optional(),
  LOG_LEVEL: z.enum(LOG_LEVELS, `must be one of ${LOG_LEVELS.join(', ')}`).optional(),
  LOG_FORMAT: z.enum(['json', 'pretty'], 'must be json or pretty').optional(),
});

/** Which flag a variable also comes from, for messages. */
const FLAG_OF: Record<string, string> = { DATABASE_URL: '--database-url', BUNDLEFLEET_SESSION_DATABASE_URL: '--session-database-url', PROVIDERS_URL: '--providers-url' };
const DATABASE_SETTINGS = ['DATABASE_URL', 'BUNDLEFLEET_SESSION_DATABASE_URL'];

/** Validates the settings in `env` (blank values count as unset); throws BadInput naming each bad one. */
export function validateSettings(env: NodeJS.ProcessEnv, opts: { database?: boolean } = {}): void {
  const names = Object.keys(envSchema.shape).filter((k) => opts.database !== false || !DATABASE_SETTINGS.includes(k));
  const present = Object.fromEntries(names.map((k) => [k, env[k]?.trim() ? env[k]!.trim() : undefined]));
  const result = envSchema.safeParse(present);
  if (result.success) return;
  const issues = result.error.issues.map((i) => {
    const name = String(i.path[0]);
    return `${FLAG_OF[name] ? `${FLAG_OF[name]} (${name})` : name}: ${i.message}`;
  });
  throw new BadInput(issues.join('; '), issues);
}

/**
 * Commands that connect to PostgreSQL: everything but the provider simulator and command groups.
 * `session: false` leaves out --session-database-url, for commands that never open a connection of that kind.
 */
export function addDatabaseUrlOption(cmd: Command, opts: { session?: boolean } = {}): void {
  cmd.addOption(new Option('--database-url <url>', 'PostgreSQL to use (default: the embedded server under .bundlefleet/)').env('DATABASE_URL'));
  if (opts.session === false) return;
  // Used by the connections that need a session of their own (a worker's liveness lock and LISTEN).
  cmd.addOption(
    new Option('--session-database-url <url>', "PostgreSQL directly or a session-mode pooler, for workers' liveness connections when --database-url is a transaction-mode pooler (default: --database-url)").env(
      'BUNDLEFLEET_SESSION_DATABASE_URL',
    ),
  );
}

export function addProvidersUrlOption(cmd: Command): void {
  cmd.addOption(new Option('--providers-url <url>', 'base URL of the ticket, flight and taxi providers').env('PROVIDERS_URL'));
}

/**
 * Makes a flag's value the one every part of the process (and its children) sees: the flag wins
 * over the variable, and a blank value means unset. Then validates the whole environment.
 */
export function applySettings(opts: { databaseUrl?: string; sessionDatabaseUrl?: string; providersUrl?: string }, usesDatabase: boolean, env: NodeJS.ProcessEnv = process.env): void {
  for (const [value, name] of [[opts.databaseUrl, 'DATABASE_URL'], [opts.sessionDatabaseUrl, 'BUNDLEFLEET_SESSION_DATABASE_URL'], [opts.providersUrl, 'PROVIDERS_URL']] as const) {
    if (value === undefined) continue;
    if (value.trim()) env[name] = value.trim();
    else delete env[name];
  }
  validateSettings(env, { database: usesDatabase });
}
