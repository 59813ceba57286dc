/**
 * The status page for people: static HTML, CSS and plain scripts in src/http/static/ (no
 * framework, no build step), served as they are over the JSON API. The pages poll every 2 s:
 *
 * - `/`                counts by state, throughput over the last 15 minutes, the bundles that need
 *                      attention (stuck, dead, retrying) with retry and cancel, open alerts with an
 *                      acknowledge button, the latest bundles;
 * - `/ui/bundles/:id`  one bundle: its steps, its timeline grouped by attempt, retry and cancel.
 *
 * The folder is found from this module's own location: src/http/ under vitest and tsx, dist/http/
 * once compiled. Both sit two levels below the package root, so `../../src/http/static/` is the
 * same folder from either, and `tsc` needs no copy step (nor can a stale copy be served).
 *
 * Escaping: the scripts build the DOM with textContent and setAttribute only (never innerHTML),
 * so data from the API cannot become markup; the only values placed in HTML on the server (the
 * error page's title and message) go through escapeHtml. The server sends a
 * Content-Security-Policy that allows only these same-origin scripts and styles.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

export const STATIC_DIR = fileURLToPath(new URL('../../src/http/static/', import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  html: 'text/html; charset=utf-8',
};

/** Names a page may load from /ui/: lower-case words, one extension; no path can escape the folder. */
const ASSET_NAME = /^[a-z][a-z-]*\.(css|js)$/;

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

export interface StaticFile {
  contentType: string;
  body: string;
}

/**
 * Read at each request rather than once: the files are small, the page polls JSON (not these),
 * and a change to a file shows on reload without a restart.
 */
async function load(name: string): Promise<StaticFile> {
  const ext = name.slice(name.lastIndexOf('.') + 1);
  return { contentType: CONTENT_TYPES[ext]!, body: await readFile(`${STATIC_DIR}${name}`, 'utf8') };
}

/** A script or stylesheet of the pages (`/ui/<name>`), or undefined for any other name. */
export async function uiAsset(name: string): Promise<StaticFile | undefined> {
  if (!ASSET_NAME.test(name)) return undefined;
  try {
    return await load(name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function statusPageHtml(): Promise<string> {
  return (await load('index.html')).body;
}

/** One bundle's page; its script reads the id from the page's path. */
export async function bundlePageHtml(): Promise<string> {
  return (await load('bundle.html')).body;
}

export async function errorPageHtml(title: string, message: string): Promise<string> {
  const fill: Record<string, string> = { title: escapeHtml(title), message: escapeHtml(message) };
  return (await load('error.html')).body.replace(/\{\{(title|message)\}\}/g, (_, key: string) => fill[key]!);
}
