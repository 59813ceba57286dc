/**
 * `inspect --follow`: polls the bundle and hands on each new timeline entry until the bundle is
 * terminal (completed, compensated, dead). Polling rather than LISTEN: a bundle changes a
 * handful of times, so one small read every half second costs nothing and needs no extra
 * connection held for the channel.
 */
import type { Queryable } from '../db/pool.js';
import { inspectBundle, TERMINAL_STATES, type BundleView } from '../bundles/read.js';

export interface FollowHandlers {
  onStart(bundle: BundleView): void;
  onHistory(entry: BundleView['history'][number]): void;
  onEnd(bundle: BundleView): void;
}

export async function followBundle(db: Queryable, id: string, handlers: FollowHandlers, pollMs = 500): Promise<void> {
  let bundle = await inspectBundle(db, id);
  handlers.onStart(bundle);
  let shown = 0;
  for (;;) {
    for (const entry of bundle.history.slice(shown)) handlers.onHistory(entry);
    shown = bundle.history.length;
    if (TERMINAL_STATES.includes(bundle.state)) return handlers.onEnd(bundle);
    await new Promise((r) => setTimeout(r, pollMs));
    bundle = await inspectBundle(db, bundle.vip_bundle_id);
  }
}
