/**
 * Checks of an enqueue's whole input, made before anything is written (bundles/enqueue.ts), and
 * how a refusal names an item.
 */
import { BadInput, IdempotencyKeyReused } from '../errors.js';
import type { EnqueueItem } from './enqueue.js';
import { canonicalJson } from '../canonical-json.js';

/** How a refusal names an item: where the caller says it came from (`line 3`), else `item N` in an input of several. */
export const itemName = (index: number, total: number, names?: Array<string | undefined>): string | undefined =>
  names ? names[index] : total > 1 ? `item ${index + 1}` : undefined;

/**
 * What a key's first request had that this one lacks, for the refusal to say: the active key when
 * it is all that differs, not the body (which, to a CLI user, is the flags); `more`: other
 * differences (the kind version, enqueue.ts).
 */
export function replayDifference(samePayload: boolean, sameActiveKey: boolean, more: string[] = []): string {
  return [...(samePayload ? [] : ['a different body']), ...(sameActiveKey ? [] : ['a different active_key']), ...more].join(' and ');
}

/**
 * An input that can never be enqueued whole is bad input, refused before anything is written: an
 * active key given to two bundles that are both new (neither has an idempotency key, so neither
 * can be a replay), or an idempotency key given to two different bodies (payload, in any key
 * order, and active key). Left to the database, the second would be refused only when its batch
 * is written, after the batches before it were committed. The same body twice under one key is a
 * replay, as across calls. An active key shared with an item that has an idempotency key is left
 * to the database: that item may replay a bundle that has since freed the key.
 */
export function refuseInconsistentInput(items: EnqueueItem[], names?: Array<string | undefined>): void {
  const name = (i: number) => itemName(i, items.length, names);
  const holders = new Map<string, number>();
  const bodies = new Map<string, { at: number; body: { payload: string; activeKey: string | null } }>();
  items.forEach((item, i) => {
    if (item.idempotencyKey != null) {
      const body = { payload: canonicalJson(item.payload), activeKey: item.activeKey ?? null };
      const earlier = bodies.get(item.idempotencyKey);
      const [samePayload, sameActiveKey] = [earlier?.body.payload === body.payload, earlier?.body.activeKey === body.activeKey];
      if (earlier && !(samePayload && sameActiveKey)) throw new IdempotencyKeyReused(item.idempotencyKey, i, name(i), name(earlier.at), replayDifference(samePayload, sameActiveKey));
      if (!earlier) bodies.set(item.idempotencyKey, { at: i, body });
    }
    if (item.activeKey != null && item.idempotencyKey == null) {
      const earlier = holders.get(item.activeKey);
      if (earlier !== undefined) {
        throw new BadInput(`${name(i)}: active_key ${JSON.stringify(item.activeKey)} is also given to ${name(earlier)}; an active key allows one bundle at a time`);
      }
      holders.set(item.activeKey, i);
    }
  });
}
