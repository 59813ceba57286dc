/**
 * The status page's bundle page says why a bundle waits when it is parked on a provider window
 * (issue 13), in headless Chromium against the real server and database.
 */
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { enqueueVip, quietLogger } from './support/fleet.js';
import { startHttpServer } from '../src/http/server.js';
import { findChromium, launchChromium } from './support/chromium.js';

describe('bundle page of a parked bundle', () => {
  it('shows until when, why, and that no worker is held; nothing once it runs again', async () => {
    const db = await createTestDb();
    const [b] = await enqueueVip(db.pool, 1);
    await db.pool.query(
      `UPDATE bundles SET next_run_at = now() + interval '30 seconds', parked_until = now() + interval '30 seconds', parked_since = now(),
         parked_provider = 'flights', parked_reason = 'flights said 429, Retry-After 30 s' WHERE id = $1`,
      [b!.vip_bundle_id],
    );
    const api = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger() });
    onCleanup(() => api.close(0));
    const browser = await launchChromium(await findChromium());
    onCleanup(() => browser.close());
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${api.url}/ui/bundles/${b!.vip_bundle_id}`);
    await page.waitForSelector('#parked .parked');
    const text = await page.textContent('#parked');
    expect(text).toMatch(/^Parked until .+: flights said 429, Retry-After 30 s\. Waiting for this provider window since .+; no worker is held and no failure is counted\.$/);
    // Once it runs again (claimed: state running), the notice goes.
    await db.pool.query(`UPDATE bundles SET state = 'running', next_run_at = now() WHERE id = $1`, [b!.vip_bundle_id]);
    await page.waitForSelector('#parked .parked', { state: 'detached', timeout: 15_000 });
    expect(errors).toEqual([]);
  });
});
