/**
 * Removing a kind version is refused while non-terminal bundles use it: `migrate` (a deploy's
 * release phase) and `worker` stop with one sentence naming the versions, unless told to go on
 * (then the workers leave those bundles for a worker that carries them, and say so).
 */
import { Option, type Command } from 'commander';
import type { Queryable } from '../db/pool.js';
import { BadInput } from '../errors.js';
import { unrunnableKindVersions } from '../bundles/read.js';

export function addKindCheckOption(cmd: Command): Command {
  return cmd.addOption(
    new Option('--allow-missing-kind-versions', 'start even while unfinished bundles use kind versions this build does not carry (they wait for a build that does)').env('BUNDLEFLEET_ALLOW_MISSING_KIND_VERSIONS'),
  );
}

export async function refuseMissingKindVersions(db: Queryable, allow: unknown): Promise<void> {
  if (allow) return;
  const missing = await unrunnableKindVersions(db);
  if (!missing.length) return;
  const what = missing.map((m) => `${m.bundles} ${m.kind} v${m.version}`).join(', ');
  throw new BadInput(
    `unfinished bundles (or undone ones still due a reconciliation pass) use kind versions this build does not carry (${what}): deploy a build that still carries them until \`bundlefleet stats\` shows none, or pass --allow-missing-kind-versions (BUNDLEFLEET_ALLOW_MISSING_KIND_VERSIONS) to leave them waiting`,
  );
}
