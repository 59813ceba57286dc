'use strict';
/** Shared by both pages: DOM building without innerHTML, the API client (with the bearer token for writes), formatting, operator actions. */
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
  /** A time as the CLI prints it (ISO 8601, UTC); the local time is on hover. */
  function time(iso) {
    if (!iso) return '';
    return h('time', { datetime: iso, title: new Date(iso).toLocaleString() + ' (local time)', text: iso });
  }
  /** "updated <now>" in the header, in ISO UTC as every other time on the pages (not the browser's locale). */
  function updated() { connection(true, 'updated ' + new Date().toISOString()); }
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
    // After fn stopped the polling (a finished bundle), an operator's retry starts it again.
    tick.restart = function () { stopped = false; tick(); };
    return tick;
  }

  /**
   * The operator's retry, cancel and ack, the same functions as the CLI's (POST /bundles/:id/retry|cancel|ack).
   * Cancel undoes everything the bundle booked, so it asks first. Resolves to the server's answer,
   * or null when the person changed their mind; rejects with the server's reason.
   */
  var ACTIONS = {
    retry: { label: 'Retry', states: ['dead', 'failed'] },
    cancel: { label: 'Cancel', states: ['pending', 'running', 'failed'] },
    // Acknowledging a failure frees the bundle's active key (POST /bundles/:id/ack).
    ack: { label: 'Acknowledge failure', states: ['compensated', 'dead'] },
  };
  function canAct(action, bundle) {
    if (ACTIONS[action].states.indexOf(bundle.state) < 0) return false;
    if (action === 'ack') return !bundle.failure_acked_at;
    // A bundle already being undone cannot be cancelled again.
    return !(action === 'cancel' && bundle.state === 'running' && bundle.phase === 'undo');
  }
  async function act(action, id) {
    if (action === 'cancel' && !window.confirm('Cancel bundle ' + id + '? Everything it booked will be cancelled at the providers.')) return null;
    if (action === 'ack' && !window.confirm('Acknowledge the failure of bundle ' + id + '? Its active key is released, so a new bundle may take it.')) return null;
    return api('/bundles/' + encodeURIComponent(id) + '/' + action, { method: 'POST' });
  }
  function actionButton(action, bundle, onDone, onError) {
    return h('button', {
      type: 'button', class: 'act' + (action === 'cancel' ? ' danger' : ''), 'data-action': action, 'data-bundle': bundle.vip_bundle_id, text: ACTIONS[action].label,
      onclick: async function (e) {
        var button = e.currentTarget;
        button.disabled = true;
        try {
          var result = await act(action, bundle.vip_bundle_id);
          if (result) await onDone(result);
        } catch (err) {
          onError(ACTIONS[action].label + ' failed: ' + err.message);
        } finally {
          button.disabled = false;
        }
      },
    });
  }

  return { h: h, api: api, renderInto: renderInto, badge: badge, shortId: shortId, bundleLink: bundleLink, time: time, connection: connection, updated: updated, poll: poll, TERMINAL: TERMINAL, canAct: canAct, act: act, actionButton: actionButton };
})();
