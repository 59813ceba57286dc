/**
 * Variants for the before/after tools (bench/ab.ts, bench/experiments/where-enqueue.ts): each
 * `--variant name=ROOT[:SQL]` is a source tree (this one, or another commit unpacked beside
 * node_modules) and optionally SQL run after its migrations: a file's path, or the SQL itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

export interface Variant {
  name: string;
  root: string;
  sql: string | undefined;
}

export function parseVariants(specs: string[] | undefined, fallback: string): Variant[] {
  return (specs?.length ? specs : [fallback]).map((v) => {
    const [name, rest] = v.split(/=(.*)/s) as [string, string];
    const [root, sql] = rest.split(/:(.*)/s) as [string, string | undefined];
    return { name, root: resolve(root), sql: sql && existsSync(sql) ? readFileSync(sql, 'utf8') : sql || undefined };
  });
}

type Bf = typeof import('../systems/bundlefleet.js');
const systems = new Map<string, Bf>();

/** bench/systems/bundlefleet.ts of the source tree at `root`, loaded once. */
export async function bundlefleetAt(root: string): Promise<Bf> {
  if (!systems.has(root)) systems.set(root, (await import(pathToFileURL(`${root}/bench/systems/bundlefleet.ts`).href)) as Bf);
  return systems.get(root)!;
}
