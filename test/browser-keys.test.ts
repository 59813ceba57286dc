/**
 * The bundle page in headless Chromium (issue 11, parts 3 and 4): a completed bundle's provider
 * exchanges with their redacted bodies, and the "Acknowledge failure" button of a compensated
 * bundle holding an active key (asks to confirm and for the token, then frees the key).
 * The browser is found as test/browser.test.ts finds it (test/support/chromium.ts). Never skipped.
 */
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { quietLogger, startSimulator, startWorker, vipPayload, waitFor } from './support/fleet.js';
import { startHttpServer } from '../src/http/server.js';
import { findChromium, launchChromium } from './support/chromium.js';

const DOCS = process.env.UPDATE_SCREENSHOTS ? fileURLToPath(new URL('../docs/', import.meta.url)) : `${tmpdir()}/bundlefleet-screenshots/`;
const TOKEN = 'browser-keys-token';

async function launch(): Promise<Browser> {
  const browser = await launchChromium(await findChromium());
  onCleanup(() => browser.close());
  return browser;
}

describe('bundle page: provider exchanges and acknowledging a failure', () => {
  it('lists the exchanges with redacted bodies, and acknowledges a compensated bundle holding an active key', async () => {
    const browser = await launch();
    const db = await createTestDb();
    const api = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger(), apiToken: TOKEN });
    onCleanup(() => api.close(0));
    // vip v2 (what the API enqueues) books the taxi once the airlines' ticketing confirmations came back.
    const sim = await startSimulator({ latencyMs: 5, ticketing: { callbackUrl: api.url, token: TOKEN, maxDelayMs: 50 } });
    const book = async (body: unknown) => {
      const res = await fetch(`${api.url}/book-vip-bundle`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as { vip_bundle_id: string } };
    };
    const done = (await book({ ...vipPayload(), customer_email: 'ada@example.org', passengers: ['Ada Lovelace'] })).body;
    startWorker(db.url, sim);
    await waitFor('four exchanges', async () => (await db.pool.query('SELECT count(*)::int AS n FROM provider_exchanges')).rows[0].n === 4);
    await waitFor('completed', async () => (await db.pool.query('SELECT state FROM bundles WHERE id = $1', [done.vip_bundle_id])).rows[0].state === 'completed');

    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => msg.type() === 'error' && errors.push(`console: ${msg.text()}`));
    const dialogs: string[] = [];
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.type());
      void dialog.accept(dialog.type() === 'prompt' ? TOKEN : undefined);
    });

    await page.goto(`${api.url}/ui/bundles/${done.vip_bundle_id}`);
    await page.waitForSelector('#exchanges tbody tr[data-outcome="ok"]');
    expect(await page.$$eval('#exchanges tbody tr', (trs) => trs.map((tr) => tr.getAttribute('data-step')))).toEqual(['show_tickets', 'inbound_flight', 'return_flight', 'taxi']);
    expect(await page.textContent('#exchanges tbody tr:first-child')).toMatch(/POST \/tickets\/bookings.*201.*\d+ ms/);
    await page.click('#exchanges tbody tr:nth-child(2) details summary');
    const body = await page.textContent('#exchanges tbody tr:nth-child(2) pre.body');
    expect(body).toContain('"passengers":"[redacted]"');
    expect(await page.textContent('#exchanges')).not.toMatch(/Lovelace|ada@/);
    expect(await page.isVisible('#ack')).toBe(false);
    await mkdir(DOCS, { recursive: true });
    await page.screenshot({ path: `${DOCS}bundle-exchanges.png`, fullPage: true });

    // A compensated bundle holding its active key: a new one with the key is refused until the page acknowledges the failure.
    const keyed = (await book({ ...vipPayload(), active_key: 'order-9' })).body;
    await waitFor('keyed completed', async () => (await db.pool.query('SELECT state FROM bundles WHERE id = $1', [keyed.vip_bundle_id])).rows[0].state === 'completed');
    await db.pool.query(`UPDATE bundles SET state = 'compensated', finished_at = now() WHERE id = $1`, [keyed.vip_bundle_id]);
    expect((await book({ ...vipPayload(), active_key: 'order-9' })).status).toBe(409);
    await page.goto(`${api.url}/ui/bundles/${keyed.vip_bundle_id}`);
    await page.waitForSelector('#ack:not([hidden])');
    expect(await page.textContent('#summary')).toContain('order-9');
    await page.click('#ack');
    await page.waitForSelector('#ack', { state: 'hidden', timeout: 10_000 });
    expect(dialogs).toEqual(['confirm', 'prompt']);
    expect(await page.textContent('#summary')).toMatch(/failure acknowledged.*\(key released\)/);
    expect((await book({ ...vipPayload(), active_key: 'order-9' })).status).toBe(201);
    // The one 401 is the ack sent before the page had the token (it then asked for it).
    expect(errors.filter((e) => !/status of 401/.test(e))).toEqual([]);
  });
});
