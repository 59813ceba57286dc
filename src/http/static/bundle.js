'use strict';
(function () {
  var h = BF.h;
  // The server answered this page only for a well-formed id in its path (/ui/bundles/:id).
  var id = decodeURIComponent(location.pathname.split('/').pop());
  var current = null;
  var actionError = document.getElementById('action-error');
  var ACTIONS = ['retry', 'cancel', 'ack'];
  var LABELS = { retry: 'Retry', cancel: 'Cancel', ack: 'Acknowledge' };
  document.getElementById('bundle-id').textContent = id;
  document.getElementById('json-link').setAttribute('href', '/bundles/' + encodeURIComponent(id));

  function field(label, value) {
    return h('div', null, h('dt', { text: label }), h('dd', null, value === null || value === undefined || value === '' ? '–' : value));
  }

  /**
   * Scheduling fields (phase, lease, next run) describe what happens next: a finished bundle has
   * no next, so it shows when it finished instead.
   */
  function summary(b) {
    var finished = BF.TERMINAL.indexOf(b.state) >= 0;
    // The kind with its version ("vip v2"), as `bundlefleet inspect` prints it.
    var fields = [field('booking id', h('code', { text: b.booking_id })), field('kind', b.kind + ' v' + b.kind_version)];
    if (!finished) fields.push(field('phase', b.phase === 'undo' ? 'undo (compensating)' : 'book'));
    fields.push(
      field('attempt', b.attempt),
      field('failures (book / undo)', b.failure_count + ' / ' + b.undo_failure_count),
      field('lease resets', b.reset_count));
    if (!finished) {
      fields.push(
        field('lease', b.locked_by ? [h('code', { text: b.locked_by }), ' until ', BF.time(b.locked_until)] : null),
        field('next run at', BF.time(b.next_run_at)));
    }
    fields.push(field('created', BF.time(b.created_at)));
    if (finished) fields.push(field('finished', BF.time(b.finished_at)));
    // An ack moves updated_at after the finish: shown only when it differs, as the last change,
    // so that it is never read as the finish.
    if (!finished || b.updated_at !== b.finished_at) fields.push(field(finished ? 'last change' : 'updated', BF.time(b.updated_at)));
    if (b.active_key) fields.push(field('active key', h('code', { text: b.active_key })));
    if (b.failure_acked_at) fields.push(field('failure acknowledged', [BF.time(b.failure_acked_at), b.active_key ? ' (key released)' : '']));
    return fields;
  }

  /** The last error is the bundle's state only while it matters; once completed it is history. */
  function lastError(b) {
    if (!b.last_error) return [];
    var where = ' (' + (b.last_error_class || '?') + ', step ' + (b.last_error_step || '?') + '): ';
    if (b.state === 'completed') {
      var errors = b.history.filter(function (e) { return e.error; }).length;
      return h('div', { class: 'lasterror recovered' }, h('strong', { text: 'Recovered' }),
        ' after ' + errors + (errors === 1 ? ' error' : ' errors') + ' (see the timeline); the last' + where, b.last_error);
    }
    return h('div', { class: 'lasterror' }, h('strong', { text: 'Last error' }), where, b.last_error);
  }

  /** A bundle parked on a provider window: why, until when, and that it holds no worker meanwhile. */
  function parked(b) {
    if (!b.parked) return [];
    return h('div', { class: 'parked' }, h('strong', { text: 'Parked' }),
      ' until ', BF.time(b.parked.until), ': ', h('span', { class: 'reason', text: b.parked.reason }),
      '. Waiting for this provider window since ', BF.time(b.parked.since || b.parked.until),
      '; no worker is held and no failure is counted.');
  }

  function renderActions(b) {
    ACTIONS.forEach(function (action) {
      document.getElementById(action).hidden = !BF.canAct(action, b);
    });
  }

  function render(b) {
    current = b;
    var past = b.state === 'completed';
    document.title = 'bundle ' + BF.shortId(b.vip_bundle_id) + ' (' + b.state + ') · bundlefleet';
    // The page may have been opened by booking id: show the bundle's own id.
    document.getElementById('bundle-id').textContent = b.vip_bundle_id;
    BF.renderInto(document.getElementById('state'), b.state, function (state) { return BF.badge(state); });
    renderActions(b);
    BF.renderInto(document.getElementById('summary'), b, summary);
    BF.renderInto(document.getElementById('parked'), [b.state, b.parked && b.parked.until, b.parked && b.parked.reason], function () { return parked(b); });
    BF.renderInto(document.getElementById('last-error'), [b.state, b.last_error, b.last_error_class, b.last_error_step, b.history.length], function () { return lastError(b); });
    BF.renderInto(document.querySelector('#steps tbody'), b.steps, function (steps) {
      return steps.map(function (s, i) {
        return h('tr', { 'data-step': s.name, 'data-status': s.status },
          h('td', { text: i + 1 }),
          h('td', { text: s.name }),
          h('td', null, BF.badge(s.status)),
          h('td', { class: 'mono', text: s.reference || '' }),
          h('td', { class: 'mono', text: s.idempotency_key || '' }),
          h('td', { class: past || s.status === 'booked' ? 'err past' : 'err', text: s.error || '' }));
      });
    });
    renderExchanges(b);
    BF.renderInto(document.querySelector('#timeline tbody'), [b.state, b.history], function () {
      var previous = null;
      return b.history.map(function (e) {
        var row = h('tr', { class: previous !== null && e.attempt !== previous ? 'new-attempt' : null },
          h('td', null, BF.time(e.at)),
          h('td', { text: '#' + e.attempt }),
          h('td', { class: 'nowrap' }, e.from_state ? [BF.badge(e.from_state), ' → '] : null, BF.badge(e.to_state)),
          h('td', { text: e.step || '' }),
          h('td', { text: e.reason }),
          h('td', { class: 'mono', text: e.actor }),
          h('td', { class: past ? 'err past' : 'err', text: e.error || '' }));
        previous = e.attempt;
        return row;
      });
    });
  }

  /** A body as kept (redacted, at most 2 KiB), folded away: most rows are read by their status. */
  function bodies(e) {
    if (!e.request_body && !e.response_body) return '';
    return h('details', null, h('summary', { text: 'show' }),
      e.request_body ? [h('div', { class: 'muted', text: 'request' }), h('pre', { class: 'body', text: e.request_body })] : null,
      e.response_body ? [h('div', { class: 'muted', text: 'reply' }), h('pre', { class: 'body', text: e.response_body })] : null);
  }

  function renderExchanges(b) {
    document.getElementById('exchanges-note').textContent = b.exchanges_omitted ? 'the newest ' + b.exchanges.length + '; ' + b.exchanges_omitted + ' older not shown' : '';
    BF.renderInto(document.querySelector('#exchanges tbody'), [b.exchanges.length, b.exchanges_omitted, b.exchanges.length ? b.exchanges[b.exchanges.length - 1].at : null], function () {
      if (!b.exchanges.length) return h('tr', null, h('td', { class: 'empty', colspan: 8, text: 'No provider exchange recorded.' }));
      return b.exchanges.map(function (e) {
        return h('tr', { 'data-step': e.step || '', 'data-outcome': e.outcome },
          h('td', null, BF.time(e.at)),
          h('td', { text: e.attempt === null ? '' : '#' + e.attempt }),
          h('td', { text: e.step || '' }),
          h('td', { class: 'mono long' }, e.method + ' ' + e.path),
          h('td', { class: e.outcome === 'ok' ? 'nowrap' : 'err', text: (e.status === null ? 'no reply' : e.status) + (e.outcome === 'ok' ? '' : ' · ' + e.outcome + (e.error ? ': ' + e.error : '')) }),
          h('td', { class: 'nowrap', text: e.duration_ms + ' ms' }),
          h('td', { class: 'mono long', text: e.worker_id || '' }),
          h('td', null, bodies(e)));
      });
    });
  }

  async function load() {
    var problem = document.getElementById('load-error');
    try {
      var b = await BF.api('/bundles/' + encodeURIComponent(id));
      problem.hidden = true;
      render(b);
      BF.updated();
      // A finished bundle no longer changes, unless an operator retries it (this page restarts polling then).
      if (BF.TERMINAL.indexOf(b.state) >= 0) { BF.connection(true, b.state + ': no longer polling'); return false; }
    } catch (err) {
      if (err.status === 404) return notFound(err.message);
      problem.textContent = 'Cannot load this bundle: ' + err.message;
      problem.hidden = false;
      BF.connection(false, 'cannot refresh');
      if (err.status === 400) return false;
    }
  }

  /**
   * An unknown id: the API's own message ("no bundle with vip_bundle_id or booking_id …") and
   * nothing else, since empty tables and "cannot refresh" would read as a fault to retry.
   */
  function notFound(message) {
    var problem = document.getElementById('load-error');
    problem.textContent = message;
    problem.hidden = false;
    document.querySelectorAll('#summary, #bundle section').forEach(function (el) { el.hidden = true; });
    BF.connection(true, '');
    return false;
  }

  var tick = BF.poll(load, 2000);

  ACTIONS.forEach(function (action) {
    document.getElementById(action).addEventListener('click', async function (e) {
      var button = e.currentTarget;
      if (!current) return;
      button.disabled = true;
      try {
        if (await BF.act(action, current.vip_bundle_id)) {
          actionError.hidden = true;
          tick.restart();
        }
      } catch (err) {
        actionError.textContent = LABELS[action] + ' failed: ' + err.message;
        actionError.hidden = false;
      } finally {
        button.disabled = false;
      }
    });
  });
})();
