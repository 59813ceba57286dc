/**
 * The status page for people: two small static HTML pages and a few plain scripts over the JSON
 * API (no framework, no build step). The pages poll every 2 s:
 *
 * - `/`                counts by state, throughput over the last 15 minutes, open alerts with an
 *                      acknowledge button, the latest bundles;
 * - `/ui/bundles/:id`  one bundle: its steps, and its timeline grouped by attempt, with errors.
 *
 * Escaping: the scripts build the DOM with textContent and setAttribute only (never innerHTML),
 * so data from the API cannot become markup; the only value placed in HTML on the server (a
 * validated bundle id, or an error message) goes through escapeHtml. The server sends a
 * Content-Security-Policy that allows only these same-origin scripts and styles.
 */

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

function page(title: string, body: string, scripts: string[]): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/style.css">
${scripts.map((s) => `<script src="/ui/${escapeHtml(s)}" defer></script>`).join('\n')}
</head>
<body>
<header class="top">
  <a class="brand" href="/">bundlefleet</a>
  <span id="conn" class="conn" role="status" aria-live="polite">loading…</span>
</header>
${body}
</body>
</html>
`;
}

export function statusPageHtml(): string {
  return page(
    'bundlefleet status',
    `<main class="wrap">
  <section aria-labelledby="h-states">
    <h2 id="h-states">Bundles by state</h2>
    <div id="states" class="cards"></div>
  </section>
  <section aria-labelledby="h-throughput">
    <h2 id="h-throughput">Throughput <small>bundles finished per minute, last 15 minutes</small></h2>
    <div id="throughput" class="chart" aria-describedby="throughput-legend"></div>
    <div id="throughput-axis" class="axis"></div>
    <p id="throughput-legend" class="legend"><span class="swatch completed"></span>completed <span class="swatch failed"></span>compensated or dead</p>
  </section>
  <section aria-labelledby="h-alerts">
    <h2 id="h-alerts">Open alerts <span id="alert-count" class="count"></span></h2>
    <p id="alert-error" class="error" hidden></p>
    <table id="alerts" class="grid">
      <thead><tr><th>#</th><th>kind</th><th>bundle</th><th>message</th><th>raised</th><th></th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section aria-labelledby="h-bundles">
    <h2 id="h-bundles">Latest bundles
      <label class="filter">state
        <select id="state-filter">
          <option value="">all</option>
          ${['pending', 'running', 'failed', 'compensating', 'completed', 'compensated', 'dead'].map((s) => `<option value="${s}">${s}</option>`).join('')}
        </select>
      </label>
    </h2>
    <table id="bundles" class="grid">
      <thead><tr><th>bundle</th><th>booking</th><th>state</th><th>attempt</th><th>failures</th><th>updated</th><th>last error</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
</main>`,
    ['common.js', 'status.js'],
  );
}

export function bundlePageHtml(bundleId: string): string {
  return page(
    `bundle ${bundleId} · bundlefleet`,
    `<main class="wrap" id="bundle" data-id="${escapeHtml(bundleId)}">
  <p><a href="/">← all bundles</a> · <a href="/bundles/${escapeHtml(encodeURIComponent(bundleId))}">JSON</a></p>
  <h1>Bundle <code id="bundle-id">${escapeHtml(bundleId)}</code> <span id="state"></span></h1>
  <p id="load-error" class="error" hidden></p>
  <dl id="summary" class="summary"></dl>
  <div id="last-error"></div>
  <section aria-labelledby="h-steps">
    <h2 id="h-steps">Steps</h2>
    <table id="steps" class="grid">
      <thead><tr><th>#</th><th>step</th><th>status</th><th>reference</th><th>idempotency key</th><th>error</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section aria-labelledby="h-timeline">
    <h2 id="h-timeline">Timeline</h2>
    <table id="timeline" class="grid">
      <thead><tr><th>at</th><th>attempt</th><th>transition</th><th>step</th><th>reason</th><th>by</th><th>error</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
</main>`,
    ['common.js', 'bundle.js'],
  );
}

export function errorPageHtml(title: string, message: string): string {
  return page(title, `<main class="wrap"><h1>${escapeHtml(title)}</h1><p class="error">${escapeHtml(message)}</p><p><a href="/">← status</a></p></main>`, []);
}

const STYLE_CSS = `
:root {
  --bg: #f6f7f9; --panel: #fff; --ink: #1d2330; --muted: #667085; --line: #e3e6eb; --accent: #2f5bd3;
  --pending: #667085; --running: #2f5bd3; --failed: #c26a00; --compensating: #7a4cc2;
  --completed: #1e8a4c; --compensated: #0f7c86; --dead: #c0362c;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg);
}
* { box-sizing: border-box; }
body { margin: 0; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.top { display: flex; align-items: center; justify-content: space-between; padding: 10px 24px; background: var(--ink); color: #fff; }
.brand { color: #fff; font-weight: 700; letter-spacing: .02em; font-size: 16px; }
.conn { font-size: 12px; color: #c9d1e0; }
.conn.bad { color: #ffb4ab; }
.wrap { max-width: 1200px; margin: 0 auto; padding: 8px 24px 40px; }
h1 { font-size: 20px; margin: 12px 0; display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
h2 { font-size: 15px; margin: 24px 0 10px; display: flex; align-items: baseline; gap: 10px; }
h2 small { font-weight: 400; color: var(--muted); font-size: 12px; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 4px 16px 14px; margin-top: 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(130px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-left: 4px solid var(--c, var(--line)); border-radius: 6px; padding: 8px 12px; background: #fcfcfd; }
.card .n { display: block; font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); font-size: 12px; }
.card.zero .n { color: #b4bac5; }
.chart { display: flex; align-items: flex-end; gap: 4px; height: 110px; padding: 6px 0; border-bottom: 1px solid var(--line); }
.chart .col { flex: 1; display: flex; flex-direction: column-reverse; height: 100%; min-width: 8px; }
.chart .bar { width: 100%; }
.chart .bar.completed, .swatch.completed { background: var(--completed); }
.chart .bar.failed, .swatch.failed { background: var(--dead); }
.axis { display: flex; justify-content: space-between; color: var(--muted); font-size: 11px; }
.legend { color: var(--muted); font-size: 12px; margin: 6px 0 0; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; vertical-align: -1px; }
.swatch:first-child { margin-left: 0; }
table.grid { width: 100%; border-collapse: collapse; }
.grid th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; border-bottom: 1px solid var(--line); padding: 6px 8px; }
.grid td { border-bottom: 1px solid var(--line); padding: 6px 8px; vertical-align: top; }
.grid tbody tr:hover { background: #f3f5f9; }
.grid tr.new-attempt td { border-top: 2px solid #c9d1e0; }
.grid td time, .grid td .badge { white-space: nowrap; }
.grid td.empty { color: var(--muted); text-align: center; padding: 14px; }
.grid td.err { color: var(--dead); max-width: 380px; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600; color: #fff; background: var(--c, var(--pending)); }
.s-pending { --c: var(--pending); } .s-running { --c: var(--running); } .s-failed { --c: var(--failed); }
.s-compensating { --c: var(--compensating); } .s-completed { --c: var(--completed); } .s-compensated { --c: var(--compensated); }
.s-dead { --c: var(--dead); } .s-booking { --c: var(--running); } .s-booked { --c: var(--completed); } .s-cancelled { --c: var(--compensated); }
.s-stuck { --c: var(--failed); } .s-resets { --c: var(--compensating); }
.count { background: var(--dead); color: #fff; border-radius: 999px; padding: 0 8px; font-size: 12px; }
.count:empty { display: none; }
.count.zero { background: var(--line); color: var(--muted); }
button.ack { font: inherit; font-size: 12px; padding: 3px 10px; border: 1px solid var(--accent); color: var(--accent); background: #fff; border-radius: 4px; cursor: pointer; }
button.ack:hover { background: var(--accent); color: #fff; }
button.ack:disabled { opacity: .5; cursor: default; }
.filter { margin-left: auto; font-weight: 400; font-size: 12px; color: var(--muted); }
.filter select { font: inherit; margin-left: 4px; }
.summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 6px 18px; background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin: 0; }
.summary div { display: flex; flex-direction: column; }
.summary dt { color: var(--muted); font-size: 12px; }
.summary dd { margin: 0; overflow-wrap: anywhere; }
.error { color: var(--dead); }
.lasterror { border-left: 4px solid var(--dead); background: #fff5f4; padding: 8px 12px; margin-top: 12px; border-radius: 4px; overflow-wrap: anywhere; }
`;

/** Shared by both pages: DOM building without innerHTML, the API client (with the bearer token for writes), formatting. */
const COMMON_JS = String.raw`'use strict';
window.BF = (function () {
  var TOKEN_KEY = 'bundlefleet.apiToken';
  var TERMINAL = ['completed', 'compensated', 'dead'];

  /** h('td', {class: 'x', text: 'y'}, child...) builds an element; text always goes in as text. */
  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === 'text') el.textContent = String(v);
        else if (k === 'class') el.className = v;
        else if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) return child.forEach(function (c) { append(el, c); });
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  /** Replaces the children of el, but only when the data changed, so a button is not swapped under a click. */
  var rendered = new WeakMap();
  function renderInto(el, data, build) {
    var key = JSON.stringify(data);
    if (rendered.get(el) === key) return;
    rendered.set(el, key);
    el.replaceChildren.apply(el, [].concat(build(data)));
  }

  async function api(path, options) {
    options = options || {};
    var write = options.method && options.method !== 'GET';
    async function send() {
      var headers = { accept: 'application/json' };
      var token = sessionStorage.getItem(TOKEN_KEY);
      if (write && token) headers.authorization = 'Bearer ' + token;
      if (options.body !== undefined) headers['content-type'] = 'application/json';
      return fetch(path, { method: options.method || 'GET', headers: headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
    }
    var res = await send();
    if (res.status === 401 && write) {
      var given = window.prompt('This server needs its API token (BUNDLEFLEET_API_TOKEN) for changes. It is kept in this tab only.');
      if (given && given.trim()) {
        sessionStorage.setItem(TOKEN_KEY, given.trim());
        res = await send();
      }
    }
    var body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      var message = body && (body.issues ? body.issues.join('; ') : body.error);
      var err = new Error(message || 'HTTP ' + res.status);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  function badge(value) { return h('span', { class: 'badge s-' + value, text: value }); }
  function shortId(id) { return id ? id.slice(0, 8) : ''; }
  function bundleLink(id) { return h('a', { href: '/ui/bundles/' + encodeURIComponent(id), class: 'mono', title: id, text: shortId(id) }); }
  function time(iso) {
    if (!iso) return '';
    var d = new Date(iso);
    var sameDay = d.toDateString() === new Date().toDateString();
    return h('time', { datetime: iso, title: iso, text: sameDay ? d.toLocaleTimeString() : d.toLocaleString() });
  }
  function connection(ok, text) {
    var el = document.getElementById('conn');
    el.textContent = text;
    el.className = ok ? 'conn' : 'conn bad';
  }
  /** Calls fn every ms milliseconds, one call at a time, skipping while the tab is hidden; fn returning false stops it. */
  function poll(fn, ms) {
    var timer, running = false, stopped = false;
    async function tick() {
      clearTimeout(timer);
      if (running || stopped) return;
      running = true;
      try {
        if (!document.hidden && (await fn()) === false) stopped = true;
      } finally {
        running = false;
      }
      if (!stopped) timer = setTimeout(tick, ms);
    }
    document.addEventListener('visibilitychange', function () { if (!document.hidden) tick(); });
    tick();
    return tick;
  }

  return { h: h, api: api, renderInto: renderInto, badge: badge, shortId: shortId, bundleLink: bundleLink, time: time, connection: connection, poll: poll, TERMINAL: TERMINAL };
})();
`;

const STATUS_JS = String.raw`'use strict';
(function () {
  var h = BF.h;
  var STATES = ['pending', 'running', 'failed', 'compensating', 'completed', 'compensated', 'dead'];
  var filter = document.getElementById('state-filter');

  function card(label, n, cls, attrs) {
    return h('div', Object.assign({ class: 'card ' + (cls || '') + (n === 0 ? ' zero' : '') }, attrs || {}),
      h('span', { class: 'n', text: n }), h('span', { class: 'label', text: label }));
  }

  function renderStats(stats) {
    BF.renderInto(document.getElementById('states'), stats, function (s) {
      var age = s.oldest_due_pending_age_seconds;
      return STATES.map(function (state) { return card(state, s.by_state[state], 's-' + state, { 'data-state': state }); }).concat([
        card('total', s.total, ''),
        card('finished ok, last minute', s.completed_last_minute, 's-completed'),
        card('oldest due, waiting', age === null ? '–' : age < 90 ? age.toFixed(1) + ' s' : Math.round(age / 60) + ' min', age !== null && age > 60 ? 's-dead' : ''),
        card('open alerts', s.open_alerts, s.open_alerts ? 's-dead' : ''),
      ]);
    });
  }

  function minuteLabel(iso) { return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }); }

  function renderThroughput(points) {
    var busiest = Math.max.apply(null, [0].concat(points.map(function (p) { return p.completed + p.failed; })));
    var max = Math.max(1, busiest);
    BF.renderInto(document.getElementById('throughput-axis'), points.length ? [points[0].minute, busiest] : [], function () {
      if (!points.length) return [];
      return [h('span', { text: minuteLabel(points[0].minute) }), h('span', { text: 'busiest minute: ' + busiest }), h('span', { text: 'now' })];
    });
    BF.renderInto(document.getElementById('throughput'), points, function (pts) {
      return pts.map(function (p) {
        var at = minuteLabel(p.minute);
        var col = h('div', { class: 'col', title: at + ': ' + p.completed + ' completed, ' + p.failed + ' compensated or dead' });
        var ok = h('div', { class: 'bar completed' });
        var bad = h('div', { class: 'bar failed' });
        ok.style.height = (100 * p.completed / max) + '%';
        bad.style.height = (100 * p.failed / max) + '%';
        col.append(ok, bad);
        return col;
      });
    });
  }

  async function acknowledge(button, id) {
    var error = document.getElementById('alert-error');
    button.disabled = true;
    button.textContent = 'acknowledging…';
    try {
      await BF.api('/api/alerts/' + encodeURIComponent(id) + '/ack', { method: 'POST' });
      error.hidden = true;
      await refresh();
    } catch (err) {
      button.disabled = false;
      button.textContent = 'Acknowledge';
      error.textContent = 'Could not acknowledge alert #' + id + ': ' + err.message;
      error.hidden = false;
    }
  }

  function renderAlerts(alerts) {
    var count = document.getElementById('alert-count');
    count.textContent = String(alerts.length);
    count.className = alerts.length ? 'count' : 'count zero';
    BF.renderInto(document.querySelector('#alerts tbody'), alerts, function (list) {
      if (!list.length) return h('tr', null, h('td', { class: 'empty', colspan: 6, text: 'No open alerts.' }));
      return list.map(function (a) {
        return h('tr', { 'data-alert-id': a.id },
          h('td', { class: 'mono', text: a.id }),
          h('td', null, BF.badge(a.kind)),
          h('td', null, BF.bundleLink(a.bundle_id)),
          h('td', { text: a.message }),
          h('td', null, BF.time(a.created_at)),
          h('td', null, h('button', { type: 'button', class: 'ack', 'data-ack': a.id, text: 'Acknowledge', onclick: function (e) { acknowledge(e.currentTarget, a.id); } })));
      });
    });
  }

  function renderBundles(bundles) {
    BF.renderInto(document.querySelector('#bundles tbody'), bundles, function (list) {
      if (!list.length) return h('tr', null, h('td', { class: 'empty', colspan: 7, text: filter.value ? 'No ' + filter.value + ' bundles.' : 'No bundles yet.' }));
      return list.map(function (b) {
        return h('tr', { 'data-bundle-id': b.vip_bundle_id, 'data-state': b.state },
          h('td', null, BF.bundleLink(b.vip_bundle_id)),
          h('td', { class: 'mono', title: b.booking_id, text: BF.shortId(b.booking_id) }),
          h('td', { class: 'state' }, BF.badge(b.state)),
          h('td', { text: b.attempt }),
          h('td', { text: b.failure_count }),
          h('td', null, BF.time(b.updated_at)),
          h('td', { class: 'err', text: b.last_error || '' }));
      });
    });
  }

  async function refresh() {
    try {
      var query = '/api/bundles?limit=25' + (filter.value ? '&state=' + encodeURIComponent(filter.value) : '');
      var all = await Promise.all([BF.api('/api/stats'), BF.api('/api/throughput?minutes=15'), BF.api('/api/alerts'), BF.api(query)]);
      renderStats(all[0]);
      renderThroughput(all[1]);
      renderAlerts(all[2]);
      renderBundles(all[3]);
      BF.connection(true, 'updated ' + new Date().toLocaleTimeString());
    } catch (err) {
      BF.connection(false, 'cannot refresh: ' + err.message);
    }
  }

  var tick = BF.poll(refresh, 2000);
  filter.addEventListener('change', tick);
})();
`;

const BUNDLE_JS = String.raw`'use strict';
(function () {
  var h = BF.h;
  var root = document.getElementById('bundle');
  var id = root.dataset.id;

  function field(label, value) {
    return h('div', null, h('dt', { text: label }), h('dd', null, value === null || value === undefined || value === '' ? '–' : value));
  }

  function render(b) {
    document.title = 'bundle ' + BF.shortId(b.vip_bundle_id) + ' (' + b.state + ') · bundlefleet';
    // The page may have been opened by booking id: show the bundle's own id.
    document.getElementById('bundle-id').textContent = b.vip_bundle_id;
    BF.renderInto(document.getElementById('state'), b.state, function (state) { return BF.badge(state); });
    BF.renderInto(document.getElementById('summary'), b, function (b) {
      return [
        field('booking id', h('code', { text: b.booking_id })),
        field('kind', b.kind),
        field('phase', b.phase === 'undo' ? 'undo (compensating)' : 'book'),
        field('attempt', b.attempt),
        field('failures (book / undo)', b.failure_count + ' / ' + b.undo_failure_count),
        field('lease resets', b.reset_count),
        field('lease', b.locked_by ? [h('code', { text: b.locked_by }), ' until ', BF.time(b.locked_until)] : null),
        field('next run at', BF.time(b.next_run_at)),
        field('created', BF.time(b.created_at)),
        field('updated', BF.time(b.updated_at)),
      ];
    });
    BF.renderInto(document.getElementById('last-error'), [b.last_error, b.last_error_class, b.last_error_step], function () {
      if (!b.last_error) return [];
      return h('div', { class: 'lasterror' }, h('strong', { text: 'Last error' }), ' (' + (b.last_error_class || '?') + ', step ' + (b.last_error_step || '?') + '): ', b.last_error);
    });
    BF.renderInto(document.querySelector('#steps tbody'), b.steps, function (steps) {
      return steps.map(function (s, i) {
        return h('tr', { 'data-step': s.name, 'data-status': s.status },
          h('td', { text: i + 1 }),
          h('td', { text: s.name }),
          h('td', null, BF.badge(s.status)),
          h('td', { class: 'mono', text: s.reference || '' }),
          h('td', { class: 'mono', text: s.idempotency_key || '' }),
          h('td', { class: 'err', text: s.error || '' }));
      });
    });
    BF.renderInto(document.querySelector('#timeline tbody'), b.history, function (history) {
      var previous = null;
      return history.map(function (e) {
        var row = h('tr', { class: previous !== null && e.attempt !== previous ? 'new-attempt' : null },
          h('td', null, BF.time(e.at)),
          h('td', { text: '#' + e.attempt }),
          h('td', null, e.from_state ? [BF.badge(e.from_state), ' → '] : null, BF.badge(e.to_state)),
          h('td', { text: e.step || '' }),
          h('td', { text: e.reason }),
          h('td', { class: 'mono', text: e.actor }),
          h('td', { class: 'err', text: e.error || '' }));
        previous = e.attempt;
        return row;
      });
    });
  }

  BF.poll(async function () {
    var problem = document.getElementById('load-error');
    try {
      var b = await BF.api('/bundles/' + encodeURIComponent(id));
      problem.hidden = true;
      render(b);
      BF.connection(true, 'updated ' + new Date().toLocaleTimeString());
      // A finished bundle no longer changes (unless an operator retries it: reload to see that).
      if (BF.TERMINAL.indexOf(b.state) >= 0) { BF.connection(true, b.state + ': no longer polling'); return false; }
    } catch (err) {
      problem.textContent = err.status === 404 ? 'No bundle with this id.' : 'Cannot load this bundle: ' + err.message;
      problem.hidden = false;
      BF.connection(false, 'cannot refresh');
      if (err.status === 404 || err.status === 400) return false;
    }
  }, 2000);
})();
`;

const ASSETS: Record<string, { contentType: string; body: string }> = {
  'style.css': { contentType: 'text/css; charset=utf-8', body: STYLE_CSS },
  'common.js': { contentType: 'text/javascript; charset=utf-8', body: COMMON_JS },
  'status.js': { contentType: 'text/javascript; charset=utf-8', body: STATUS_JS },
  'bundle.js': { contentType: 'text/javascript; charset=utf-8', body: BUNDLE_JS },
};

/** A static file of the pages under /ui/, or undefined. */
export function uiAsset(name: string): { contentType: string; body: string } | undefined {
  return Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
}
