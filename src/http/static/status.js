'use strict';
(function () {
  var h = BF.h;
  var STATES = ['pending', 'running', 'waiting', 'failed', 'compensating', 'completed', 'compensated', 'dead'];
  var filter = document.getElementById('state-filter');
  // The filter offers the states the cards count, from the same list, so neither can miss one.
  filter.append.apply(filter, STATES.map(function (state) { return h('option', { value: state, text: state }); }));

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
        // Not the `waiting` state: a due bundle (pending, or compensating to be undone) not yet claimed.
        card('oldest due bundle waiting for a worker', age === null ? '–' : age < 90 ? age.toFixed(1) + ' s' : Math.round(age / 60) + ' min', age !== null && age > 60 ? 's-dead' : '',
          { 'data-card': 'oldest-due', title: 'how long the bundle due the longest (pending, or compensating to be undone) has waited for a worker to claim it' }),
        card('open alerts', s.open_alerts, s.open_alerts ? 's-dead' : ''),
      ]).concat((s.unrunnable_kind_versions || []).map(function (k) {
        // Unfinished bundles of a kind version this build does not carry: no worker of it will run them.
        return card(k.kind + ' v' + k.version + ': no worker of this build runs it', k.bundles, 's-dead', { 'data-unrunnable': k.kind + '@' + k.version });
      }));
    });
  }

  function renderThroughput(points) {
    var busiest = Math.max.apply(null, [0].concat(points.map(function (p) { return p.completed + p.failed; })));
    var max = Math.max(1, busiest);
    BF.renderInto(document.getElementById('throughput-axis'), points.length ? [points[0].minute, busiest] : [], function () {
      if (!points.length) return [];
      return [BF.time(points[0].minute), h('span', { text: 'busiest minute: ' + busiest }), h('span', { text: 'now' })];
    });
    BF.renderInto(document.getElementById('throughput'), points, function (pts) {
      return pts.map(function (p) {
        var col = h('div', { class: 'col', title: p.minute + ': ' + p.completed + ' completed, ' + p.failed + ' compensated or dead' });
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
          errorCell(b));
      });
    });
  }

  /** A completed bundle's last error is one it got past: shown as history (muted), not as its state. */
  function errorCell(b) {
    if (!b.last_error) return h('td', { class: 'err' });
    if (b.state === 'completed') return h('td', { class: 'err past', title: 'recovered: the bundle completed after this error', text: 'recovered: ' + b.last_error });
    return h('td', { class: 'err', text: b.last_error });
  }

  // Needs attention: stuck, dead and retrying bundles, filtered by the buttons above the table.
  var REASONS = ['stuck', 'dead', 'retrying'];
  var attentionFilter = document.getElementById('attention-filter');
  var reason = '';
  var actionError = document.getElementById('action-error');

  function showActionError(message) {
    actionError.textContent = message;
    actionError.hidden = false;
  }

  function renderAttention(view) {
    var total = REASONS.reduce(function (n, r) { return n + view.counts[r]; }, 0);
    var count = document.getElementById('attention-count');
    count.textContent = String(total);
    count.className = total ? 'count' : 'count zero';
    attentionFilter.querySelectorAll('button').forEach(function (button) {
      var r = button.dataset.reason;
      button.setAttribute('aria-pressed', String(r === reason));
      BF.renderInto(button, [r, r ? view.counts[r] : total], function () { return [r || 'all', h('span', { class: 'n', text: r ? view.counts[r] : total })]; });
    });
    BF.renderInto(document.querySelector('#attention tbody'), [reason, view.bundles], function () {
      var list = view.bundles;
      if (!list.length) return h('tr', null, h('td', { class: 'empty', colspan: 8, text: reason ? 'No ' + reason + ' bundles.' : 'Nothing needs attention.' }));
      return list.map(function (b) {
        return h('tr', { 'data-bundle-id': b.vip_bundle_id, 'data-reason': b.reason, 'data-state': b.state },
          h('td', null, BF.bundleLink(b.vip_bundle_id)),
          h('td', null, BF.badge(b.reason)),
          h('td', null, BF.badge(b.state)),
          h('td', { title: 'book failures / undo failures / lease resets', text: b.failure_count + ' / ' + b.undo_failure_count + ' / ' + b.reset_count }),
          h('td', null, BF.TERMINAL.indexOf(b.state) >= 0 ? '–' : BF.time(b.next_run_at)),
          // Why it is listed (an alert's message, an expired lease) is not an error: plain text, apart from the red last error.
          h('td', { text: b.why }),
          h('td', { class: 'err', text: b.last_error || '' }),
          h('td', { class: 'nowrap' }, ['retry', 'cancel'].filter(function (a) { return BF.canAct(a, b); }).map(function (a) {
            return BF.actionButton(a, b, async function () { actionError.hidden = true; await refresh(); }, showActionError);
          })));
      });
    });
  }

  attentionFilter.addEventListener('click', function (e) {
    var button = e.target.closest('button');
    if (!button) return;
    reason = button.dataset.reason;
    attentionFilter.querySelectorAll('button').forEach(function (b) { b.setAttribute('aria-pressed', String(b === button)); });
    tick();
  });

  async function refresh() {
    try {
      var query = '/api/bundles?limit=25' + (filter.value ? '&state=' + encodeURIComponent(filter.value) : '');
      var attention = '/api/attention?limit=25' + (reason ? '&reason=' + reason : '');
      var all = await Promise.all([BF.api('/api/stats'), BF.api('/api/throughput?minutes=15'), BF.api('/api/alerts'), BF.api(query), BF.api(attention)]);
      renderStats(all[0]);
      renderThroughput(all[1]);
      renderAlerts(all[2]);
      renderBundles(all[3]);
      renderAttention(all[4]);
      BF.updated();
    } catch (err) {
      BF.connection(false, 'cannot refresh: ' + err.message);
    }
  }

  var tick = BF.poll(refresh, 2000);
  filter.addEventListener('change', tick);
})();
