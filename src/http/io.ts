/** Request and response plumbing for the HTTP server: bodies, JSON, pages, query strings, path segments. */
import type http from 'node:http';
import type { z } from 'zod';
import { BadInput } from '../errors.js';

/** Largest request body accepted; one bundle is well under 2 KiB. */
export const MAX_BODY_BYTES = 64 * 1024;

/** An error with its HTTP status, for refusals decided by the server itself. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
    /** Extra fields of the JSON error body, beside `error`. */
    readonly body: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export const SECURITY_HEADERS = { 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' };

export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...SECURITY_HEADERS, ...headers });
  res.end(`${JSON.stringify(body)}\n`);
}

/** Pages run only their own scripts and styles, talk only to this origin and cannot be framed. */
export const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export function sendPage(res: http.ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': PAGE_CSP, 'x-frame-options': 'DENY', ...SECURITY_HEADERS });
  res.end(html);
}

/** The body as text, refusing (413) more than `limit` bytes whether or not Content-Length says so. */
export function readBody(req: http.IncomingMessage, limit = MAX_BODY_BYTES): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new HttpError(413, `body too large: at most ${limit} bytes`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        reject(new HttpError(413, `body too large: at most ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => size <= limit && resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

function requireJson(req: http.IncomingMessage): void {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new HttpError(415, `content-type must be application/json${type ? `, got ${type}` : ''}`, { accept: 'application/json' });
  }
}

export async function readJson(req: http.IncomingMessage): Promise<unknown> {
  requireJson(req);
  const text = await readBody(req);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BadInput(`body: not valid JSON (${(err as Error).message})`);
  }
}

/** For actions that need no body: none, or a small JSON one (ignored). */
export async function readOptionalJson(req: http.IncomingMessage): Promise<void> {
  if (req.headers['content-length'] && req.headers['content-length'] !== '0') await readJson(req);
}

/** A path segment, percent-decoded; a malformed escape is bad input, not a crash. */
export function segment(value: string, field: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new BadInput(`${field}: malformed percent-encoding in the path`);
  }
}

/**
 * Query parameters through zod; empty values count as absent. BadInput names each parameter, and
 * also one the endpoint does not take or one given twice: ignored, a typo (`?limt=5`) or a
 * parameter of another endpoint (`?after=`) would answer as if the caller had asked for nothing.
 */
export function parseQuery<T extends z.ZodObject>(schema: T, url: URL): z.infer<T> {
  const accepted = Object.keys(schema.shape);
  const names = [...url.searchParams.keys()];
  const issues = [...new Set(names)].flatMap((name) => {
    if (!accepted.includes(name)) return [`${name || '(empty name)'}: unknown query parameter (this endpoint takes ${accepted.join(', ')})`];
    return names.filter((n) => n === name).length > 1 ? [`${name}: given more than once`] : [];
  });
  const raw = Object.fromEntries([...url.searchParams].filter(([, v]) => v !== ''));
  const result = schema.safeParse(raw);
  if (!result.success) issues.push(...result.error.issues.map((i) => `${String(i.path[0] ?? '(query)')}: ${i.message}`));
  if (issues.length) throw new BadInput(issues.join('; '), issues);
  return result.data!;
}

/** The field names of BadInput issues (`customer_email: must be…` → `customer_email`), for log lines. */
export function issueFields(issues: string[]): string[] {
  return [...new Set(issues.map((i) => i.split(': ')[0]!.replace(/^line \d+: /, '')))];
}
