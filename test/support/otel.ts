/** Helpers of the tracing tests: the CLI with a clean OTEL_* environment, a local OTLP receiver. */
import { execFile } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { onCleanup } from './db.js';

export const BIN = fileURLToPath(new URL('../../bin/bundlefleet', import.meta.url));

/** The environment of a CLI process: DATABASE_URL, JSON logs, no OTEL_* but those in `extra`. */
export function cliEnv(url: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: url, LOG_LEVEL: 'warn', LOG_FORMAT: 'json', ...extra };
  for (const k of Object.keys(env)) if (k.startsWith('OTEL_') && !(k in extra)) delete env[k];
  for (const k of ['TICKETS_URL', 'FLIGHTS_URL', 'TAXIS_URL', 'BUNDLEFLEET_SUPERVISE_CRON', 'ALERT_WEBHOOK_URL']) delete env[k];
  return env;
}

export function cli(url: string, args: string[], extra: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...nodeArgs, BIN, ...args], { env: cliEnv(url, extra), timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** A local OTLP/HTTP receiver that keeps what it is sent. */
export async function otlpCollector(): Promise<{ endpoint: string; received: Array<{ path: string; type: string; body: Buffer }> }> {
  const received: Array<{ path: string; type: string; body: Buffer }> = [];
  const collector = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ path: req.url ?? '', type: String(req.headers['content-type']), body: Buffer.concat(chunks) });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', () => r()));
  onCleanup(() => new Promise((r) => { collector.closeAllConnections(); collector.close(() => r(undefined)); }));
  return { endpoint: `http://127.0.0.1:${(collector.address() as { port: number }).port}`, received };
}

export type OtlpJson = { resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<{ name: string; traceId: string; spanId: string; parentSpanId?: string; attributes: Array<{ key: string; value: Record<string, unknown> }> }> }> }> };
export const otlpSpans = (bodies: Buffer[]) => bodies.flatMap((b) => (JSON.parse(b.toString()) as OtlpJson).resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans)));
