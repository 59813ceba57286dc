/**
 * `bundlefleet serve`: the HTTP API, /healthz, /readyz, /metrics and the status page
 * (src/http/server.ts) until SIGTERM. Shutdown in two stages: the first signal makes /readyz
 * answer 503, stops accepting connections and lets in-flight requests finish; a second one
 * exits at once.
 */
import { isIP } from 'node:net';
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { AddressInUse, BadInput } from '../errors.js';
import { startHttpServer, type HttpServerOptions, type StartedHttpServer } from '../http/server.js';
import { allowNamedStatementsOnSession } from '../db/session-probe.js';
import { rootLogger } from '../logger.js';
import { intOption, openDb, parseOptions } from './context.js';
import { onShutdown } from './signals.js';
import { portTaken, type PortSetting } from './ports.js';
import { embeddedHome } from '../db/embedded.js';
import { alreadyRunningMessage, runningDev } from './dev-record.js';

export const serveOptionsSchema = z.object({
  port: intOption(0, 65_535),
  host: z.string().trim().min(1, 'must not be empty').max(253, 'must be at most 253 characters'),
  drainTimeoutMs: intOption(0, 600_000),
});

const SERVE_PORT: PortSetting = { flag: '--port', env: 'PORT', example: 'bundlefleet serve --port 0' };

const SERVE_FLAG_NAMES = {
  port: '--port (PORT)',
  host: '--host (HOST)',
  drainTimeoutMs: '--drain-timeout-ms (BUNDLEFLEET_HTTP_DRAIN_TIMEOUT_MS)',
};

/** Whether only this machine can reach `host`: localhost, 127.0.0.0/8 or ::1. */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./.test(h);
  return false;
}

/** BUNDLEFLEET_API_TOKEN: unset means no auth (loopback only); set but blank is a mistake, not "no auth". */
export function apiTokenFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const raw = env.BUNDLEFLEET_API_TOKEN;
  if (raw === undefined) return undefined;
  const token = raw.trim();
  if (!token) throw new BadInput('BUNDLEFLEET_API_TOKEN: is set but empty; unset it or give a token');
  if (/\s/.test(token)) throw new BadInput('BUNDLEFLEET_API_TOKEN: must not contain whitespace');
  return token;
}

/**
 * Starts the HTTP server (what `serve` runs; `dev` starts it too), turning listen errors into
 * sentences: a taken port is AddressInUse, a host we cannot bind is bad input.
 */
export async function listenHttp(opts: HttpServerOptions & { port: number; host: string }): Promise<StartedHttpServer> {
  try {
    return await startHttpServer(opts);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE') throw new AddressInUse('the HTTP server', opts.host, opts.port, undefined, { cause: err });
    if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') throw new BadInput(`--host (HOST): cannot listen on ${opts.host} (${e.code})`);
    if (e.code === 'EACCES') throw new Error(`cannot listen on ${opts.host}:${opts.port}: permission denied`, { cause: err });
    throw err;
  }
}

/** A taken port: when this project's `dev` holds it, say so (it already serves the API) rather than "another program". */
async function servePortTaken(err: AddressInUse): Promise<Error> {
  const dev = await runningDev(await embeddedHome());
  if (dev && new URL(dev.statusPage).port === String(err.port)) {
    return new AddressInUse(err.what, err.host, err.port, `cannot start ${err.what}: port ${err.port} is served by this project's dev, which already runs the HTTP API and status page. ${alreadyRunningMessage(dev)}`, { cause: err });
  }
  return portTaken(err, SERVE_PORT);
}

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('serve the HTTP API, health endpoints, Prometheus metrics and the status page')
    .addOption(new Option('--port <port>', 'port to listen on (0 picks a free one)').env('PORT').default('8080'))
    .addOption(new Option('--host <host>', 'address to listen on; anything but loopback needs BUNDLEFLEET_API_TOKEN').env('HOST').default('127.0.0.1'))
    .addOption(new Option('--drain-timeout-ms <ms>', 'on the first SIGTERM, how long in-flight requests may finish').env('BUNDLEFLEET_HTTP_DRAIN_TIMEOUT_MS').default('10000'))
    .addHelpText(
      'after',
      `
Every POST needs "Authorization: Bearer <token>" when BUNDLEFLEET_API_TOKEN is set:
POST /book-vip-bundle, POST /bundles/:id/retry|cancel|ack, POST /bundles/:id/signals/:name
and POST /api/alerts/:id/ack. GETs (status page, reads, /healthz, /readyz, /metrics) never do.
Without a token, serve listens on loopback addresses only and refuses POSTs from another origin.
Examples:
  $ bundlefleet serve                       # http://127.0.0.1:8080/, the status page
  $ BUNDLEFLEET_API_TOKEN=$(openssl rand -hex 32) bundlefleet serve --host 0.0.0.0 --port 80
  $ curl -s -X POST localhost:8080/book-vip-bundle -H 'content-type: application/json' \\
      -H 'Idempotency-Key: order-42' -d @bundle.json`,
    )
    .action(async (flags: Record<string, unknown>) => {
      const opts = parseOptions(serveOptionsSchema, flags, SERVE_FLAG_NAMES);
      const apiToken = apiTokenFromEnv();
      if (!apiToken) {
        if (!isLoopbackHost(opts.host)) {
          throw new BadInput(
            `--host (HOST): refusing to listen on ${opts.host} without BUNDLEFLEET_API_TOKEN: anyone who can reach it could enqueue bundles. Set BUNDLEFLEET_API_TOKEN, or use a loopback address such as 127.0.0.1`,
          );
        }
        process.stderr.write('bundlefleet: warning: BUNDLEFLEET_API_TOKEN is not set: writes need no token (loopback only)\n');
      }
      const log = rootLogger();
      const db = await openDb({ max: 10 });
      const namedStatements = await allowNamedStatementsOnSession(db.pool, db.url);
      let draining = false;
      const http = await listenHttp({ port: opts.port, host: opts.host, pool: db.pool, logger: log, apiToken, isDraining: () => draining }).catch(async (err: unknown) => {
        await db.close();
        throw err instanceof AddressInUse ? await servePortTaken(err) : err;
      });
      log.info({ url: http.url, auth: apiToken ? 'bearer token' : 'none', namedStatements }, 'http server listening');
      process.stderr.write(`bundlefleet serve: listening on ${http.url} (status page at ${http.url}/)\n`);
      onShutdown(async () => {
        draining = true;
        await http.close(opts.drainTimeoutMs);
        await db.close();
        log.info('http server stopped');
      });
    });
}
