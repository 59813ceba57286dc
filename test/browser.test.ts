/**
 * The status page in headless Chromium (driven by playwright-core): it loads without script or
 * CSP errors, shows an enqueued bundle reaching `completed`, opens its timeline, and acknowledges
 * an alert (asking for the API token). Leaves a screenshot in docs/.
 * The browser is Debian's chromium when installed, else the build inside the @sparticuz/chromium
 * npm package (test/support/chromium.ts), so `npm ci && npm test` needs nothing else. Never skipped.
 */
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { createTestDb, onCleanup } from './support/db.js';
import { quietLogger, startSimulator, startWorker, vipPayload, waitFor } from './support/fleet.js';
import { startHttpServer } from '../src/http/server.js';
import { BUNDLE_STATES } from '../src/bundles/read.js';
import { findChromium, launchChromium, packagedChromium } from './support/chromium.js';

// The screenshots in docs/ are refreshed only on request (UPDATE_SCREENSHOTS=1), so a test run leaves the tree clean.
const DOCS = process.env.UPDATE_SCREENSHOTS ? fileURLToPath(new URL('../docs/', import.meta.url)) : `${tmpdir()}/bundlefleet-screenshots/`;
const TOKEN = 'browser-test-token';

async function launch(): Promise<Browser> {
  const browser = await launchChromium(await findChromium());
  onCleanup(() => browser.close());
  return browser;
}

/** Collects uncaught page errors and console errors (a CSP violation shows up as one). */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console: ${msg.text()}`);
  });
  return errors;
}

async function book(base: string, body: unknown): Promise<{ vip_bundle_id: string; booking_id: string }> {
  const res = await fetch(`${base}/book-vip-bundle`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(body) });
  expect(res.status).toBe(201);
  return (await res.json()) as { vip_bundle_id: string; booking_id: string };
}

const COMPENSATED_FINISHED = '2026-01-02T03:04:05.678Z';
const COMPENSATED_ACKED = '2026-01-02T05:00:00.000Z';

/**
 * A compensated bundle as a newcomer found it, opened at 1280 px: lookups by idempotency key
 * (unbroken paths), provider errors quoting a JSON reply in every table, and an ack two hours
 * after it finished (which moved updated_at).
 */
async function compensatedBundlePage(): Promise<{ page: Page; id: string; errors: string[] }> {
  const browser = await launch();
  const db = await createTestDb();
  const api = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger(), apiToken: TOKEN });
  onCleanup(() => api.close(0));
  const { vip_bundle_id: id } = await book(api.url, vipPayload());
  const worker = 'worker-7f3a2c.4b1d9e0a';
  const longError = `flights cancel ${id}:return_flight: unexpected 500 reply {"error":"upstream_unavailable","detail":"the reservation system did not answer within 30000 ms","request":"${id}:return_flight","retry_after_seconds":null}`;
  await db.pool.query(
    `UPDATE bundles SET state = 'compensated', phase = 'undo', attempt = 3, failure_count = 5, finished_at = $2, failure_acked_at = $3, updated_at = $3,
       last_error = $4, last_error_class = 'permanent', last_error_step = 'return_flight' WHERE id = $1`,
    [id, COMPENSATED_FINISHED, COMPENSATED_ACKED, longError],
  );
  const steps = ['show_tickets', 'inbound_flight', 'return_flight'];
  for (const [position, step] of steps.entries()) {
    await db.pool.query(
      `INSERT INTO steps (bundle_id, position, name, status, idempotency_key, reference, error, attempt) VALUES ($1, $2, $3, 'cancelled', $4, $5, $6, 3)`,
      [id, position, step, `${id}:${step}`, `REF-${step.toUpperCase()}-0123456789`, step === 'return_flight' ? longError : null],
    );
    const provider = step === 'show_tickets' ? 'tickets' : 'flights';
    await db.pool.query(
      `INSERT INTO provider_exchanges (bundle_id, attempt, worker_id, step, provider, operation, method, path, status, outcome, error, duration_ms, response_body, at)
       VALUES ($1, 3, $2, $3, $4, 'lookup', 'GET', $5, 500, 'transient', $6, 30012, $7, now()),
              ($1, 3, $2, $3, $4, 'cancel', 'DELETE', $5, 200, 'ok', NULL, 41, '{"status":"cancelled"}', now())`,
      [id, worker, step, provider, `/${provider}/bookings?idempotency_key=${encodeURIComponent(`${id}:${step}`)}`, longError,
        JSON.stringify({ error: 'upstream_unavailable', request: `${id}:${step}`, padding: 'x'.repeat(300) })],
    );
  }
  for (let attempt = 1; attempt <= 3; attempt++) {
    await db.pool.query(
      `INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason, error) VALUES ($1, $2, $3, 'running', 'failed', 'return_flight', 'step failed', $4)`,
      [id, worker, attempt, longError],
    );
  }
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const errors = watchErrors(page);
  await page.goto(`${api.url}/ui/bundles/${id}`);
  return { page, id, errors };
}

describe('status page in headless Chromium', () => {
  // Runs even where Debian's chromium is installed, so the fresh-machine path stays proven.
  it('launches the Chromium packaged in node_modules, with its own libraries', async () => {
    const build = await packagedChromium();
    expect(build.executablePath).not.toBe('/usr/bin/chromium');
    const browser = await launchChromium(build);
    onCleanup(() => browser.close());
    const page = await browser.newPage();
    await page.setContent('<p id="p">packaged</p><script>document.getElementById("p").dataset.ran = "yes"</script>');
    expect(await page.getAttribute('#p', 'data-ran')).toBe('yes');
    expect(browser.version()).toMatch(/^\d+\./);
  });

  it('shows a bundle reaching completed, its timeline, and acknowledges an alert', async () => {
    const browser = await launch();
    const db = await createTestDb();
    const api = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger(), apiToken: TOKEN });
    onCleanup(() => api.close(0));
    // The airlines confirm ticketing back to the API, so a vip bundle's wait ends as in `npm start`.
    const sim = await startSimulator({ latencyMs: 40, ticketing: { callbackUrl: api.url, token: TOKEN, maxDelayMs: 100 } });

    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = watchErrors(page);
    await page.goto(`${api.url}/`);
    await page.waitForSelector('#states .card[data-state="completed"]');
    await page.waitForSelector('#bundles td.empty');

    // Enqueued before any worker runs: the page shows it pending, then completed once a worker books it.
    const bundle = await book(api.url, vipPayload());
    const row = `#bundles tr[data-bundle-id="${bundle.vip_bundle_id}"]`;
    await page.waitForSelector(`${row}[data-state="pending"]`, { timeout: 10_000 });
    startWorker(db.url, sim, { concurrency: 4 });
    await page.waitForSelector(`${row}[data-state="completed"]`, { timeout: 30_000 });
    expect(await page.textContent(`${row} td.state`)).toBe('completed');

    // A few more bundles, one of them refused by a provider, so the page has something to show.
    const more = [];
    for (let i = 0; i < 5; i++) more.push(await book(api.url, vipPayload()));
    await waitFor('more bundles completed', async () => {
      const { rows } = await db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM bundles WHERE state = 'completed'`);
      return Number(rows[0]!.n) === 6;
    });
    sim.setFaults({ noRate: 1 });
    const refused = await book(api.url, vipPayload());
    await waitFor('the refused bundle failed', async () => (await db.pool.query('SELECT state FROM bundles WHERE id = $1', [refused.vip_bundle_id])).rows[0].state === 'failed');
    await page.waitForSelector(`#bundles tr[data-bundle-id="${refused.vip_bundle_id}"][data-state="failed"]`);
    expect(await page.textContent('#states .card[data-state="completed"] .n')).toBe('6');

    // Two alerts: one is acknowledged through its button, the other stays open.
    const { rows: alertRows } = await db.pool.query<{ id: string }>(
      `INSERT INTO alerts (bundle_id, kind, message) VALUES ($1, 'stuck', 'running for 12 min without progress (lease held by w1)'), ($2, 'resets', 'lease reset 5 times') RETURNING id`,
      [more[0]!.vip_bundle_id, refused.vip_bundle_id],
    );
    const [ackId, keptId] = alertRows.map((r) => String(r.id));
    await page.waitForSelector(`#alerts tr[data-alert-id="${ackId}"]`);
    await page.waitForSelector(`#alerts tr[data-alert-id="${keptId}"]`);
    expect(await page.textContent('#alert-count')).toBe('2');

    await mkdir(DOCS, { recursive: true });
    await page.screenshot({ path: `${DOCS}status-page.png`, fullPage: true });

    // The write needs the token: the page asks for it once and keeps it for the tab.
    let prompted = 0;
    page.on('dialog', (dialog) => {
      prompted++;
      void dialog.accept(TOKEN);
    });
    await page.click(`button[data-ack="${ackId}"]`);
    await page.waitForSelector(`#alerts tr[data-alert-id="${ackId}"]`, { state: 'detached', timeout: 10_000 });
    expect(prompted).toBe(1);
    const { rows: acked } = await db.pool.query('SELECT id, acked_at FROM alerts ORDER BY id');
    expect(acked.map((a) => [String(a.id), a.acked_at !== null])).toEqual([
      [ackId, true],
      [keptId, false],
    ]);
    expect(await page.isVisible(`#alerts tr[data-alert-id="${keptId}"]`)).toBe(true);
    expect(await page.textContent('#alert-count')).toBe('1');

    // The bundle's timeline: four booked steps and the passed wait for both ticketing confirmations,
    // and the transitions up to completed (through waiting, unless both signals came first).
    await page.click(`${row} td a`);
    await page.waitForURL(`**/ui/bundles/${bundle.vip_bundle_id}`);
    await page.waitForSelector('#steps tbody tr[data-status="booked"]');
    expect(await page.$$eval('#steps tbody tr', (trs) => trs.map((tr) => [tr.getAttribute('data-step'), tr.getAttribute('data-status')]))).toEqual([
      ['show_tickets', 'booked'],
      ['inbound_flight', 'booked'],
      ['return_flight', 'booked'],
      ['await_ticketing', 'booked'],
      ['taxi', 'booked'],
    ]);
    const timeline = await page.$$eval('#timeline tbody tr', (trs) => trs.map((tr) => tr.textContent ?? ''));
    expect(timeline[0]).toContain('enqueued');
    expect(timeline.some((t) => t.includes('signal inbound_ticketed received'))).toBe(true);
    expect(timeline.some((t) => t.includes('signal return_ticketed received'))).toBe(true);
    expect(timeline.at(-1)).toContain('completed');
    expect(await page.textContent('#state')).toBe('completed');

    // The refused bundle's page shows its error.
    await page.goto(`${api.url}/ui/bundles/${refused.booking_id}`);
    await page.waitForSelector('#last-error .lasterror');
    expect(await page.textContent('#last-error')).toMatch(/permanent/);
    await page.screenshot({ path: `${DOCS}bundle-timeline.png`, fullPage: true });

    // The one 401 is the ack sent before the page had the token (it then asked for it).
    expect(errors.filter((e) => !/status of 401/.test(e))).toEqual([]);
    expect(errors.filter((e) => /status of 401/.test(e))).toHaveLength(1);
  });

  it('a compensated bundle page fits a 1280 px viewport: long paths, errors and bodies wrap, columns keep a readable width', async () => {
    const { page, id, errors } = await compensatedBundlePage();
    await page.waitForSelector('#exchanges tbody tr[data-outcome="transient"]');
    await page.waitForSelector('#timeline tbody tr td.err:not(:empty)');
    const fits = async (what: string) => {
      const width = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, viewport: document.documentElement.clientWidth }));
      expect(width.scroll, `${what}: page ${width.scroll} px wide in a ${width.viewport} px viewport`).toBeLessThanOrEqual(width.viewport);
    };
    await fits('bodies folded');
    // Unfolded bodies (redacted replies of up to 2 KiB) must not widen it either.
    await page.$$eval('#exchanges details', (ds) => ds.forEach((d) => ((d as HTMLDetailsElement).open = true)));
    await fits('bodies shown');
    // Error columns wrap at words where they can, not one character per line.
    for (const table of ['timeline', 'exchanges', 'steps']) {
      const cellWidths = await page.$$eval(`#${table} td.err`, (tds) => tds.filter((td) => td.textContent).map((td) => td.getBoundingClientRect().width));
      expect(cellWidths.length, table).toBeGreaterThan(0);
      for (const w of cellWidths) expect(w, `${table} error column`).toBeGreaterThanOrEqual(160);
    }
    expect(await page.textContent('#exchanges tbody')).toContain(`GET /flights/bookings?idempotency_key=${encodeURIComponent(`${id}:return_flight`)}`);
    expect(errors).toEqual([]);
  });

  it("a finished bundle's page shows finished_at as 'finished', and a later last change (its ack) apart", async () => {
    const { page, errors } = await compensatedBundlePage();
    await page.waitForSelector('#summary dt');
    const summary = await page.$$eval('#summary div', (divs) => Object.fromEntries(divs.map((d) => [d.querySelector('dt')!.textContent, d.querySelector('dd')!.textContent])));
    expect(summary).toMatchObject({ finished: COMPENSATED_FINISHED, 'last change': COMPENSATED_ACKED, 'failure acknowledged': COMPENSATED_ACKED });
    expect(errors).toEqual([]);
  });

  it("the latest bundles' state filter offers every state, waiting included; the due-age card does not read as the waiting state", async () => {
    const browser = await launch();
    const db = await createTestDb();
    const api = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger(), apiToken: TOKEN });
    onCleanup(() => api.close(0));
    const [waiting, pending] = [await book(api.url, vipPayload()), await book(api.url, vipPayload())];
    await db.pool.query(`UPDATE bundles SET state = 'waiting', waiting_for = '{inbound_ticketed}', wait_deadline = now() + interval '1 hour' WHERE id = $1`, [waiting.vip_bundle_id]);
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = watchErrors(page);
    await page.goto(`${api.url}/`);
    await page.waitForSelector(`#bundles tr[data-bundle-id="${pending.vip_bundle_id}"]`);

    expect(await page.$$eval('#state-filter option', (os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(['', ...BUNDLE_STATES]);
    // Every state with a card can be filtered on, and the other way round.
    const cards = await page.$$eval('#states .card[data-state]', (cs) => cs.map((c) => c.getAttribute('data-state')));
    expect(cards).toEqual([...BUNDLE_STATES]);
    await page.selectOption('#state-filter', 'waiting');
    await page.waitForSelector(`#bundles tr[data-bundle-id="${pending.vip_bundle_id}"]`, { state: 'detached' });
    expect(await page.$$eval('#bundles tbody tr', (trs) => trs.map((tr) => [tr.getAttribute('data-bundle-id'), tr.getAttribute('data-state')]))).toEqual([[waiting.vip_bundle_id, 'waiting']]);

    // The age of the oldest due bundle (the pending one here) is about claims, not about `waiting` bundles.
    const labels = await page.$$eval('#states .card:not([data-state]) .label', (ls) => ls.map((l) => l.textContent));
    expect(labels).toContain('oldest due bundle waiting for a worker');
    expect(labels).not.toContain('oldest due, waiting');
    expect(await page.getAttribute('#states .card[data-card="oldest-due"]', 'title')).toMatch(/pending, or compensating/);
    expect(errors).toEqual([]);
  });

  // A newcomer's walkthrough: every time in ISO UTC even in a browser far from UTC, the kind with
  // its version as the CLI prints it, one message for an unknown bundle, and attention columns
  // whose headers say what they hold.
  it('reads as the CLI does: ISO UTC header and chart axis, kind with version, one message for an unknown bundle, labelled attention columns', async () => {
    const browser = await launch();
    const db = await createTestDb();
    const api = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger(), apiToken: TOKEN });
    onCleanup(() => api.close(0));
    const [stuck, retrying] = [await book(api.url, vipPayload()), await book(api.url, vipPayload())];
    await db.pool.query(`UPDATE bundles SET state = 'running', locked_by = 'w-frozen', locked_until = now() - interval '5 minutes' WHERE id = $1`, [stuck.vip_bundle_id]);
    await db.pool.query(`UPDATE bundles SET failure_count = 2, undo_failure_count = 1, reset_count = 3, last_error = 'tickets: timeout' WHERE id = $1`, [retrying.vip_bundle_id]);
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 }, timezoneId: 'America/New_York', locale: 'en-US' });
    const errors = watchErrors(page);
    const ISO = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/;

    await page.goto(`${api.url}/`);
    await page.waitForSelector(`#attention tr[data-bundle-id="${retrying.vip_bundle_id}"]`);
    await page.waitForFunction(() => /^updated /.test(document.getElementById('conn')!.textContent ?? ''));
    expect(await page.textContent('#conn')).toMatch(new RegExp(`^updated ${ISO.source}$`));
    const axisStart = await page.$eval('#throughput-axis > :first-child', (el) => [el.textContent, el.getAttribute('datetime')]);
    expect(axisStart[0]).toMatch(new RegExp(`^${ISO.source}$`));
    expect(axisStart[1]).toBe(axisStart[0]);
    expect(await page.getAttribute('#throughput .col:last-child', 'title')).toMatch(new RegExp(`^${ISO.source}: 0 completed`));

    // Needs attention: the reason, the why (plain) and the last error (red) each under its own header.
    const headers = await page.$$eval('#attention thead th', (ths) => ths.map((th) => [th.textContent, th.getAttribute('title')]));
    expect(headers.map(([text]) => text)).toEqual(['bundle', 'reason', 'state', 'failures', 'next run at', 'why', 'last error', '']);
    expect(headers[3]![1]).toBe('book failures / undo failures / lease resets');
    const cells = (id: string) => page.$$eval(`#attention tr[data-bundle-id="${id}"] td`, (tds) => tds.map((td) => [td.textContent, td.className]));
    const stuckCells = await cells(stuck.vip_bundle_id);
    expect(stuckCells[5]).toEqual(['running past its lease (held by w-frozen)', '']);
    expect(stuckCells[6]).toEqual(['', 'err']);
    const retryingCells = await cells(retrying.vip_bundle_id);
    expect(retryingCells[3]![0]).toBe('2 / 1 / 3');
    expect(retryingCells[5]![0]).toBe('failed 2 time(s) booking, 1 undoing; lease reset 3 time(s)');
    expect(retryingCells[6]).toEqual(['tickets: timeout', 'err']);

    // A bundle's page names its kind with the version, as `bundlefleet inspect` does.
    await page.goto(`${api.url}/ui/bundles/${retrying.vip_bundle_id}`);
    await page.waitForSelector('#summary dt');
    const summary = await page.$$eval('#summary div', (divs) => Object.fromEntries(divs.map((d) => [d.querySelector('dt')!.textContent, d.querySelector('dd')!.textContent])));
    const { rows } = await db.pool.query('SELECT kind, kind_version FROM bundles WHERE id = $1', [retrying.vip_bundle_id]);
    expect(summary.kind).toBe(`${rows[0].kind} v${rows[0].kind_version}`);
    expect(await page.textContent('#conn')).toMatch(new RegExp(`^updated ${ISO.source}$`));

    // An unknown id: the API's one message, no empty tables, no "cannot refresh".
    const unknown = '00000000-0000-4000-8000-000000000000';
    await page.goto(`${api.url}/ui/bundles/${unknown}`);
    await page.waitForSelector('#load-error:not([hidden])');
    expect(await page.textContent('#load-error')).toBe(`no bundle with vip_bundle_id or booking_id ${unknown}`);
    expect(await page.$$eval('table', (ts) => ts.filter((t) => (t as HTMLElement).offsetParent !== null).length)).toBe(0);
    expect(await page.textContent('#conn')).not.toMatch(/cannot refresh/);
    expect(await page.isVisible('#summary')).toBe(false);
    expect(errors.filter((e) => !/status of 404/.test(e))).toEqual([]);
  });

  // Console actions and how states read: the needs-attention view with its filter, retry and cancel
  // from the page (token asked once, cancel confirmed), errors as history, times in ISO UTC.
  it('acts on bundles from the page: needs-attention filter, retry, cancel; errors as history; ISO UTC times', async () => {
    const browser = await launch();
    const db = await createTestDb();
    const api = await startHttpServer({ port: 0, pool: db.pool, logger: quietLogger(), apiToken: TOKEN });
    onCleanup(() => api.close(0));
    const [recovered, dead, stuck, retrying, pending] = await Promise.all(Array.from({ length: 5 }, () => book(api.url, vipPayload())));
    const set = (id: string, sql: string) => db.pool.query(`UPDATE bundles SET ${sql} WHERE id = $1`, [id]);
    await set(recovered!.vip_bundle_id, `state = 'completed', failure_count = 1, finished_at = now(), last_error = 'flights: HTTP 503', last_error_class = 'transient', last_error_step = 'inbound_flight'`);
    await db.pool.query(
      `INSERT INTO bundle_history (bundle_id, actor, attempt, from_state, to_state, step, reason, error) VALUES ($1, 'w1', 1, 'running', 'failed', 'inbound_flight', 'step failed', 'flights: HTTP 503')`,
      [recovered!.vip_bundle_id],
    );
    await set(dead!.vip_bundle_id, `state = 'dead', phase = 'undo', undo_failure_count = 10, last_error = 'taxis cancel: HTTP 500'`);
    await set(stuck!.vip_bundle_id, `state = 'running', locked_by = 'w-frozen', locked_until = now() - interval '5 minutes'`);
    await set(retrying!.vip_bundle_id, `failure_count = 2, last_error = 'tickets: timeout', next_run_at = now() + interval '1 hour'`);

    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = watchErrors(page);
    let prompts = 0;
    let confirms = 0;
    page.on('dialog', (dialog) => {
      if (dialog.type() === 'prompt') prompts++;
      if (dialog.type() === 'confirm') confirms++;
      void dialog.accept(dialog.type() === 'prompt' ? TOKEN : undefined);
    });
    await page.goto(`${api.url}/`);

    // Needs attention: all three kinds, then one kind at a time through the filter.
    const attentionRow = (id: string) => `#attention tr[data-bundle-id="${id}"]`;
    await page.waitForSelector(attentionRow(dead!.vip_bundle_id));
    const reasons = async () => page.$$eval('#attention tbody tr[data-reason]', (trs) => trs.map((tr) => tr.getAttribute('data-reason')).sort());
    expect(await reasons()).toEqual(['dead', 'retrying', 'stuck']);
    expect(await page.textContent('#attention-count')).toBe('3');
    // Its columns (reason, why, last error, failures…) fit the window: no sideways scrolling.
    const width = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, viewport: document.documentElement.clientWidth }));
    expect(width.scroll, `status page ${width.scroll} px wide in a ${width.viewport} px viewport`).toBeLessThanOrEqual(width.viewport);
    expect(await page.isVisible(attentionRow(recovered!.vip_bundle_id))).toBe(false);
    await page.click('#attention-filter button[data-reason="stuck"]');
    await page.waitForSelector(`${attentionRow(dead!.vip_bundle_id)}`, { state: 'detached' });
    expect(await reasons()).toEqual(['stuck']);
    expect(await page.textContent(attentionRow(stuck!.vip_bundle_id))).toMatch(/past its lease \(held by w-frozen\)/);
    await page.click('#attention-filter button[data-reason="dead"]');
    await page.waitForSelector(`${attentionRow(stuck!.vip_bundle_id)}`, { state: 'detached' });
    expect(await reasons()).toEqual(['dead']);
    // A dead bundle can be retried, not cancelled; retrying asks for the token once.
    expect(await page.$$eval(`${attentionRow(dead!.vip_bundle_id)} button`, (bs) => bs.map((b) => b.getAttribute('data-action')))).toEqual(['retry']);
    await page.click(`${attentionRow(dead!.vip_bundle_id)} button[data-action="retry"]`);
    await page.waitForSelector(attentionRow(dead!.vip_bundle_id), { state: 'detached', timeout: 10_000 });
    expect((await db.pool.query('SELECT state FROM bundles WHERE id = $1', [dead!.vip_bundle_id])).rows[0].state).toBe('compensating');
    expect(prompts).toBe(1);

    // The completed bundle's error reads as history in the list, not in red as its state.
    await page.selectOption('#state-filter', 'completed');
    const recoveredCell = `#bundles tr[data-bundle-id="${recovered!.vip_bundle_id}"] td.err`;
    await page.waitForSelector(recoveredCell);
    expect(await page.getAttribute(recoveredCell, 'class')).toBe('err past');
    expect(await page.textContent(recoveredCell)).toBe('recovered: flights: HTTP 503');
    expect(await page.evaluate((sel) => getComputedStyle(document.querySelector(sel)!).color, recoveredCell)).not.toBe('rgb(192, 54, 44)');

    // Its page: no "phase" or "next run at" once finished, a muted "Recovered" note, times in ISO UTC (local on hover).
    await page.goto(`${api.url}/ui/bundles/${recovered!.vip_bundle_id}`);
    await page.waitForSelector('#last-error .lasterror');
    expect(await page.getAttribute('#last-error .lasterror', 'class')).toBe('lasterror recovered');
    expect(await page.textContent('#last-error')).toMatch(/^Recovered after 1 error/);
    const labels = await page.$$eval('#summary dt', (dts) => dts.map((dt) => dt.textContent));
    expect(labels).toEqual(expect.arrayContaining(['created', 'finished']));
    expect(labels).not.toContain('phase');
    expect(labels).not.toContain('next run at');
    expect(await page.isVisible('#retry')).toBe(false);
    expect(await page.isVisible('#cancel')).toBe(false);
    const times = await page.$$eval('time', (ts) => ts.map((t) => [t.textContent, t.getAttribute('datetime'), t.getAttribute('title')]));
    expect(times.length).toBeGreaterThan(2);
    for (const [text, datetime, title] of times) {
      expect(text).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(datetime).toBe(text);
      expect(title).toMatch(/\(local time\)$/);
    }
    expect(await page.$$eval('#timeline td.err', (tds) => tds.filter((td) => td.textContent).map((td) => td.className))).toEqual(['err past']);
    await mkdir(DOCS, { recursive: true });
    await page.screenshot({ path: `${DOCS}bundle-recovered.png`, fullPage: true });

    // A pending bundle's page: cancel asks to confirm, then the bundle is undone.
    await page.goto(`${api.url}/ui/bundles/${pending!.vip_bundle_id}`);
    await page.waitForSelector('#cancel:not([hidden])');
    expect(await page.isVisible('#retry')).toBe(false);
    const labelsPending = await page.$$eval('#summary dt', (dts) => dts.map((dt) => dt.textContent));
    expect(labelsPending).toEqual(expect.arrayContaining(['phase', 'next run at', 'updated']));
    await page.click('#cancel');
    await page.waitForSelector('#state .badge.s-compensating', { timeout: 10_000 });
    expect(confirms).toBe(1);
    expect((await db.pool.query('SELECT state FROM bundles WHERE id = $1', [pending!.vip_bundle_id])).rows[0].state).toBe('compensating');
    expect(await page.isVisible('#cancel')).toBe(false);

    // A refused action says why: this bundle is no longer cancellable when the click arrives.
    await page.goto(`${api.url}/ui/bundles/${retrying!.vip_bundle_id}`);
    await page.waitForSelector('#cancel:not([hidden])');
    await set(retrying!.vip_bundle_id, `state = 'completed', finished_at = now()`);
    await page.click('#cancel');
    await page.waitForSelector('#action-error:not([hidden])');
    expect(await page.textContent('#action-error')).toMatch(/^Cancel failed: cannot cancel bundle .*: it is completed/);

    // The 401 before the token was given, and the 409 just above.
    expect(errors.filter((e) => !/status of (401|409)/.test(e))).toEqual([]);
  });
});
