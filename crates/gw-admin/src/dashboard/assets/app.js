// Gatehouse dashboard. Plain JavaScript, no dependencies, no inline code (the page's
// Content-Security-Policy forbids it). Data is written with textContent only.
'use strict';

(function () {
  const TOKEN_KEY = 'gatehouse.dashboard.token';
  const $ = (id) => document.getElementById(id);
  const state = { token: null, ctrl: null, config: null, configVersion: null, kind: 'all', retry: 1000, last: null,
    usage: { period: 'hour', consumer: null, stamp: null, loading: false, again: false, data: null } };

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else e.setAttribute(k, v);
      }
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // === formatting ===
  const fmtRate = (x) => (x === null || x === undefined) ? '–' : (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const fmtPct = (x) => (x === null || x === undefined) ? '–' : (x * 100).toFixed(x < 0.1 ? 2 : 1) + '%';
  const fmtMs = (x) => (x === null || x === undefined) ? '–' : (x >= 1000 ? (x / 1000).toFixed(2) + ' s' : x >= 10 ? x.toFixed(0) + ' ms' : x.toFixed(1) + ' ms');
  const fmtInt = (x) => (x === null || x === undefined) ? '–' : Number(x).toLocaleString('en-US');
  function fmtBytes(x) {
    if (x === null || x === undefined) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0, v = Number(x);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(v >= 100 ? 0 : 1)) + ' ' + units[i];
  }
  function fmtUptime(s) {
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
  }
  function errCell(rate) {
    const cls = rate === null || rate === undefined ? null : rate >= 0.05 ? 'bad' : rate > 0 ? 'warn' : null;
    return el('td', { class: 'num' }, el('span', { class: cls, text: fmtPct(rate) }));
  }

  // === login ===
  function showLogin(message) {
    $('app').hidden = true;
    $('meta').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    const e = $('login-error');
    e.hidden = !message;
    e.textContent = message || '';
    setLive('off', 'offline');
    $('token').focus();
  }

  function showApp() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('meta').hidden = false;
    $('logout').hidden = false;
  }

  async function api(path, signal) {
    return fetch(path, { headers: { Authorization: 'Bearer ' + state.token }, cache: 'no-store', signal });
  }

  async function signIn(token) {
    state.token = token;
    let res;
    try {
      res = await api('api/snapshot');
    } catch (e) {
      showLogin('Cannot reach the gateway: ' + e.message);
      return;
    }
    if (res.status === 401 || res.status === 403) {
      state.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(res.status === 401 ? 'This token is not valid.' : 'This token may not read the dashboard.');
      return;
    }
    if (!res.ok) {
      showLogin('The gateway answered ' + res.status + '.');
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    showApp();
    render(await res.json());
    loadConfig();
    stream();
  }

  function signOut() {
    if (state.ctrl) state.ctrl.abort();
    state.ctrl = null;
    state.token = null;
    state.config = null;
    state.configVersion = null;
    state.usage.stamp = null;
    state.usage.data = null;
    state.usage.consumer = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    showLogin(null);
  }

  // === live stream: text/event-stream read with fetch (EventSource cannot send headers) ===
  function setLive(cls, text) {
    const s = $('live-status');
    s.className = 'live ' + cls;
    s.dataset.state = cls;
    s.textContent = text;
  }

  async function stream() {
    if (state.ctrl) state.ctrl.abort();
    const ctrl = new AbortController();
    state.ctrl = ctrl;
    try {
      const res = await api('api/stream', ctrl.signal);
      if (res.status === 401) {
        signOut();
        showLogin('The token is no longer valid.');
        return;
      }
      if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
      setLive('on', 'live');
      state.retry = 1000;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          onEvent(chunk);
        }
      }
      throw new Error('stream ended');
    } catch (e) {
      if (ctrl.signal.aborted || state.ctrl !== ctrl) return;
      setLive('retry', 'reconnecting');
      const wait = state.retry;
      state.retry = Math.min(state.retry * 2, 10000);
      setTimeout(() => { if (state.ctrl === ctrl && state.token) stream(); }, wait);
    }
  }

  function onEvent(chunk) {
    let type = 'message';
    const data = [];
    for (const line of chunk.split('\n')) {
      if (line.startsWith(':')) continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? '' : line.slice(c + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
    }
    if (type === 'update' && data.length) {
      try {
        render(JSON.parse(data.join('\n')));
      } catch (e) {
        setLive('retry', 'bad update');
      }
    }
  }

  // === rendering ===
  function render(s) {
    if (!s || typeof s !== 'object') return;
    state.last = s;
    $('meta-node').textContent = s.node_id;
    $('meta-version').textContent = s.gateway_version;
    $('meta-config').textContent = '#' + s.config.version + ' ' + String(s.config.hash).slice(0, 8);
    $('meta-uptime').textContent = fmtUptime(s.uptime_seconds);
    $('last-update').textContent = 'updated ' + new Date(s.time).toLocaleTimeString();
    $('last-update').dataset.time = s.time;

    const t = s.totals;
    $('kpi-rps').textContent = fmtRate(t.rps);
    $('kpi-total').textContent = fmtInt(t.requests) + ' since start';
    $('kpi-error-rate').textContent = fmtPct(t.error_rate);
    $('kpi-error-rate').parentElement.classList.toggle('bad', (t.error_rate || 0) >= 0.05);
    $('kpi-window').textContent = 'last ' + s.windows.rate_seconds + ' s';
    $('kpi-p50').textContent = fmtMs(t.p50_ms);
    $('kpi-p99').textContent = fmtMs(t.p99_ms);
    $('kpi-latency-window').textContent = 'last ' + s.windows.latency_seconds + ' s';
    $('kpi-connections').textContent = fmtInt(t.connections);
    const r = s.refusals;
    const refusing = r.rate_limited.rate + r.quota_exceeded.rate + r.auth.rate + r.forbidden.rate;
    $('kpi-refusals').textContent = fmtRate(refusing);
    $('kpi-refusals').parentElement.classList.toggle('warn', refusing > 0);

    renderChart(s.history);
    renderRoutes(s.routes);
    renderServices(s.services);
    renderUpstreams(s.upstreams);
    renderConsumers(s.consumers);
    renderRefusals(s.refusals);
    renderErrors(s.errors);
    // The usage store has new figures (or the panel was never read): read the panel again.
    if (s.usage_stamp !== undefined && s.usage_stamp !== state.usage.stamp) {
      state.usage.stamp = s.usage_stamp;
      loadUsage();
    }
    if (state.configVersion !== null && (s.config.version !== state.configVersion.version || s.config.hash !== state.configVersion.hash)) {
      loadConfig();
    }
  }

  function renderChart(history) {
    const w = 600, h = 120, n = 60;
    const max = Math.max(1, ...history.map((p) => p.rps));
    const pts = (key) => history.map((p, i) => {
      const x = (w * (n - history.length + i)) / (n - 1);
      const y = h - 4 - ((h - 8) * p[key]) / max;
      return x.toFixed(1) + ',' + y.toFixed(1);
    }).join(' ');
    $('chart-rps').setAttribute('points', pts('rps'));
    $('chart-err').setAttribute('points', pts('errors_per_s'));
    $('chart-max').textContent = 'max ' + fmtRate(max) + ' req/s';
  }

  function fill(tbody, rows, cols) {
    tbody.replaceChildren();
    if (!rows.length) {
      tbody.append(el('tr', null, el('td', { class: 'empty', colspan: String(cols), text: 'nothing yet' })));
    }
    for (const r of rows) tbody.append(r);
  }

  const byTraffic = (a, b) => (b.rps - a.rps) || (b.requests - a.requests);

  function renderRoutes(routes) {
    const rows = routes.slice().sort(byTraffic).map((r) => el('tr', { 'data-route': r.route, class: (r.error_rate || 0) >= 0.05 ? 'hot' : null },
      el('td', { text: r.route }), el('td', { class: 'muted', text: r.service }),
      el('td', { class: 'num rps', text: fmtRate(r.rps) }), errCell(r.error_rate),
      el('td', { class: 'num', text: fmtMs(r.p50_ms) }), el('td', { class: 'num', text: fmtMs(r.p99_ms) }),
      el('td', { class: 'num total', text: fmtInt(r.requests) })));
    fill(document.querySelector('#routes-table tbody'), rows, 7);
  }

  function renderServices(services) {
    const rows = services.slice().sort(byTraffic).map((r) => el('tr', { 'data-service': r.service, class: (r.error_rate || 0) >= 0.05 ? 'hot' : null },
      el('td', { text: r.service }),
      el('td', { class: 'num rps', text: fmtRate(r.rps) }), errCell(r.error_rate),
      el('td', { class: 'num', text: fmtMs(r.p50_ms) }), el('td', { class: 'num', text: fmtMs(r.p99_ms) }),
      el('td', { class: 'num total', text: fmtInt(r.requests) })));
    fill(document.querySelector('#services-table tbody'), rows, 6);
  }

  function renderUpstreams(ups) {
    const box = $('upstreams');
    box.replaceChildren();
    if (!ups.length) box.append(el('p', { class: 'empty', text: 'no upstreams configured' }));
    for (const u of ups) {
      const healthy = u.targets.filter((t) => t.healthy).length;
      const circuit = u.circuit || 'none';
      const list = el('ul', { class: 'targets' }, ...u.targets.map((t) => el('li', { 'data-target': t.address, 'data-healthy': String(t.healthy) },
        el('span', null, el('i', { class: 'dot' + (t.healthy ? '' : ' down') }), t.address),
        el('span', { class: 'muted', text: (t.healthy ? 'healthy' : (t.ejected_for_ms ? 'ejected ' + Math.ceil(t.ejected_for_ms / 1000) + ' s' : 'unhealthy')) + ' · ' + t.in_flight + ' in flight' }))));
      box.append(el('div', { class: 'upstream', 'data-upstream': u.name },
        el('div', { class: 'upstream-head' }, el('span', { text: u.name }),
          el('span', null,
            el('span', { class: 'badge ' + (healthy === u.targets.length ? 'healthy' : 'unhealthy'), text: healthy + '/' + u.targets.length + ' healthy' }), ' ',
            el('span', { class: 'badge circuit ' + circuit, title: 'circuit breaker', text: u.circuit ? 'circuit ' + circuit.replace('_', '-') : 'no breaker' }))),
        list));
    }
  }

  function renderConsumers(cs) {
    const rows = cs.map((c) => {
      let quota = el('span', { class: 'muted', text: '–' });
      if (c.quota && c.quota.limit) {
        const share = c.quota.share;
        const bar = el('span', { class: 'bar' + (share >= 1 ? ' full' : share >= 0.8 ? ' high' : '') }, el('i'));
        bar.firstChild.style.width = Math.min(100, (share || 0) * 100).toFixed(1) + '%';
        quota = el('span', null, bar, (c.quota.used === null ? '?' : fmtInt(c.quota.used)) + ' / ' + fmtInt(c.quota.limit) + ' per ' + c.quota.period);
      }
      return el('tr', { 'data-consumer': c.consumer }, el('td', { text: c.consumer }), el('td', { class: 'num', text: fmtRate(c.rps) }),
        el('td', { class: 'num', text: fmtInt(c.requests_today) }), el('td', { class: 'quota' }, quota));
    });
    fill(document.querySelector('#consumers-table tbody'), rows, 4);
  }

  function renderRefusals(r) {
    const line = (name, key, v) => el('tr', { 'data-refusal': key }, el('td', { text: name }), el('td', { class: 'num', text: fmtRate(v.rate) }), el('td', { class: 'num total', text: fmtInt(v.total) }));
    const rows = [
      line('rate limited (429)', 'rate_limited', r.rate_limited),
      line('quota exceeded (429)', 'quota_exceeded', r.quota_exceeded),
      line('authentication (401)', 'auth', r.auth),
      line('authorization (403)', 'forbidden', r.forbidden),
      line('no route (404)', 'no_route', r.no_route),
    ];
    for (const e of r.errors_by_code) rows.push(line('error: ' + e.code, 'code:' + e.code, e));
    fill(document.querySelector('#refusals-table tbody'), rows, 3);
  }

  function renderErrors(errors) {
    const list = $('errors');
    $('errors-total').textContent = fmtInt(errors.total) + ' since start';
    list.replaceChildren();
    if (!errors.recent.length) list.append(el('li', { class: 'empty', text: 'no errors logged' }));
    for (const e of errors.recent) {
      const fields = Object.entries(e.fields).map(([k, v]) => k + '=' + (typeof v === 'string' ? v : JSON.stringify(v))).join(' ');
      list.append(el('li', { 'data-seq': String(e.seq) }, el('span', { class: 'muted', text: new Date(e.time).toLocaleString() }),
        el('span', { class: 'lvl ' + e.level, text: e.level }),
        el('span', null, el('span', { text: e.message }), ' ', el('span', { class: 'fields', text: fields }))));
    }
  }

  // === usage: by consumer and route over a period, from the usage store ===
  const OUTCOMES = ['served', 'refused', 'auth_failed', 'upstream_error'];

  async function loadUsage() {
    const u = state.usage;
    if (!state.token) return;
    if (u.loading) { u.again = true; return; }
    u.loading = true;
    const period = u.period;
    const consumer = u.consumer;
    try {
      const res = await api('api/usage?period=' + encodeURIComponent(period) + (consumer === null ? '' : '&consumer=' + encodeURIComponent(consumer)));
      if (res.status === 401) { signOut(); showLogin('The token is no longer valid.'); return; }
      if (!res.ok) {
        $('usage-note').textContent = 'usage store: HTTP ' + res.status;
        return;
      }
      const data = await res.json();
      if (data.period === u.period && data.consumer === u.consumer && state.token) renderUsage(data);
    } catch (e) {
      $('usage-note').textContent = 'usage: ' + e.message;
    } finally {
      u.loading = false;
      if (u.again || u.period !== period || u.consumer !== consumer) { u.again = false; loadUsage(); }
    }
  }

  function renderUsage(d) {
    state.usage.data = d;
    const card = $('usage-card');
    card.dataset.period = d.period;
    card.dataset.consumer = d.consumer === null ? '' : d.consumer;
    const chip = $('usage-consumer');
    chip.hidden = d.consumer === null;
    chip.querySelector('b').textContent = d.consumer === '-' ? '(none)' : (d.consumer || '');
    card.dataset.loaded = String(Date.now());
    const when = { hour: 'last hour, by minute', day: 'today (UTC), by hour', month: 'this month (UTC), by day' }[d.period];
    $('usage-range').textContent = when + ' · ' + d.from.replace('T', ' ').replace(':00Z', ' UTC') + ' – '
      + d.to.replace('T', ' ').replace(':00Z', ' UTC') + ' · store: ' + d.store;
    for (const box of document.querySelectorAll('#usage-totals > div')) {
      const k = box.dataset.outcome;
      const v = d.totals[k];
      const b = box.querySelector('b');
      b.textContent = k.startsWith('bytes') ? fmtBytes(v) : fmtInt(v);
      b.dataset.value = String(v);
    }
    renderUsageChart(d.series);
    const num = (cls, v, text) => el('td', { class: 'num ' + cls + (v > 0 && cls === 'upstream_error' ? ' bad-cell' : v > 0 && cls === 'refused' ? ' warn-cell' : ''), 'data-value': String(v), title: String(v), text: text });
    const rows = d.rows.map((r) => el('tr', { 'data-consumer': r.consumer, 'data-route': r.route },
      el('td', null, el('button', { type: 'button', class: 'link' + (r.consumer === '-' ? ' muted' : ''), 'data-filter-consumer': r.consumer, title: 'Show this consumer only', text: r.consumer === '-' ? '(none)' : r.consumer })), el('td', { text: r.route }),
      ...OUTCOMES.map((o) => num(o, r[o], fmtInt(r[o]))),
      num('total', r.requests, fmtInt(r.requests)),
      num('bytes_in', r.bytes_in, fmtBytes(r.bytes_in)), num('bytes_out', r.bytes_out, fmtBytes(r.bytes_out))));
    fill(document.querySelector('#usage-table tbody'), rows, 9);
    $('usage-note').textContent = d.rows_total > d.rows.length ? 'the ' + d.rows.length + ' busiest of ' + d.rows_total + ' consumer and route pairs shown; the export has them all' : '';
  }

  function renderUsageChart(series) {
    const svg = $('usage-chart');
    const NS = 'http://www.w3.org/2000/svg';
    const w = 600, h = 80;
    const max = Math.max(1, ...series.map((b) => b.requests));
    const bw = w / Math.max(1, series.length);
    svg.replaceChildren();
    series.forEach((b, i) => {
      let y = h;
      for (const o of OUTCOMES) {
        if (!b[o]) continue;
        const bh = ((h - 4) * b[o]) / max;
        y -= bh;
        const r = document.createElementNS(NS, 'rect');
        r.setAttribute('class', o);
        r.setAttribute('x', (i * bw + bw * 0.1).toFixed(2));
        r.setAttribute('width', (bw * 0.8).toFixed(2));
        r.setAttribute('y', y.toFixed(2));
        r.setAttribute('height', bh.toFixed(2));
        const t = document.createElementNS(NS, 'title');
        t.textContent = b.label + ': ' + b[o] + ' ' + o.replace('_', ' ');
        r.append(t);
        svg.append(r);
      }
    });
    $('usage-axis-from').textContent = series.length ? series[0].label : '';
    $('usage-axis-to').textContent = series.length ? series[series.length - 1].label : '';
    $('usage-axis-max').textContent = 'max ' + fmtInt(max) + ' per bucket';
  }

  // One consumer's usage (null: every consumer's), for the period shown.
  function chooseConsumer(c) {
    state.usage.consumer = c;
    loadUsage();
  }

  function choosePeriod(p) {
    state.usage.period = p;
    for (const b of document.querySelectorAll('#usage-periods button')) b.setAttribute('aria-selected', String(b.dataset.period === p));
    loadUsage();
  }

  // The export needs the token as a header: fetched, then saved from a blob.
  async function exportUsage() {
    const d = state.usage.data;
    if (!d) return;
    try {
      const res = await api(d.export.csv);
      if (res.status === 401) { signOut(); showLogin('The token is no longer valid.'); return; }
      if (!res.ok) { $('usage-note').textContent = 'export: HTTP ' + res.status; return; }
      const blob = await res.blob();
      const m = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') || '');
      const a = el('a', { href: URL.createObjectURL(blob), download: m ? m[1] : 'usage.csv' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) {
      $('usage-note').textContent = 'export: ' + e.message;
    }
  }

  // === configuration: browse and search ===
  const KINDS = ['routes', 'services', 'upstreams', 'plugins', 'consumers', 'listeners', 'certificates'];

  async function loadConfig() {
    try {
      const res = await api('api/config');
      if (res.status === 401) { signOut(); showLogin('The token is no longer valid.'); return; }
      if (!res.ok) return;
      const c = await res.json();
      state.config = c;
      state.configVersion = { version: c.version, hash: c.hash };
      $('config-version').textContent = 'version ' + c.version + ' · ' + String(c.hash).slice(0, 12);
      renderKinds();
      renderConfig();
    } catch (e) {
      // Retried with the next configuration change or sign-in.
    }
  }

  function entityName(kind, e) {
    if (kind === 'consumers') return e.username;
    if (kind === 'plugins') return e.name || (e.plugin + (e.route ? '@route:' + e.route : '') + (e.service ? '@service:' + e.service : '') + (e.consumer ? '@consumer:' + e.consumer : ''));
    return e.name;
  }

  function entityHint(kind, e) {
    if (kind === 'routes') return [(e.methods || []).join(','), (e.hosts || []).join(','), (e.paths || []).join(' '), '→ ' + e.service].filter(Boolean).join(' ');
    if (kind === 'services') return e.url || e.upstream || e.type || '';
    if (kind === 'upstreams') return (e.targets || []).map((t) => (typeof t === 'string' ? t : t.address || t.target || JSON.stringify(t))).join(' ');
    if (kind === 'plugins') return e.plugin + (e.enabled === false ? ' (disabled)' : '');
    if (kind === 'listeners') return e.address || '';
    return '';
  }

  function renderKinds() {
    const box = $('config-kinds');
    box.replaceChildren();
    const counts = {};
    let all = 0;
    for (const k of KINDS) { counts[k] = (state.config.entities[k] || []).length; all += counts[k]; }
    const tab = (k, label) => {
      const b = el('button', { type: 'button', role: 'tab', 'data-kind': k, 'aria-selected': String(state.kind === k), text: label });
      b.addEventListener('click', () => { state.kind = k; renderKinds(); renderConfig(); });
      return b;
    };
    box.append(tab('all', 'all ' + all));
    for (const k of KINDS) if (counts[k]) box.append(tab(k, k + ' ' + counts[k]));
  }

  function highlight(text, q) {
    const frag = document.createDocumentFragment();
    if (!q) { frag.append(text); return frag; }
    const lower = text.toLowerCase();
    let at = 0;
    for (;;) {
      const i = lower.indexOf(q, at);
      if (i < 0) break;
      frag.append(text.slice(at, i), el('mark', { text: text.slice(i, i + q.length) }));
      at = i + q.length;
    }
    frag.append(text.slice(at));
    return frag;
  }

  function renderConfig() {
    if (!state.config) return;
    const q = $('config-search').value.trim().toLowerCase();
    const box = $('config-results');
    box.replaceChildren();
    let shown = 0, total = 0;
    const limit = 200;
    for (const k of KINDS) {
      if (state.kind !== 'all' && state.kind !== k) continue;
      for (const e of state.config.entities[k] || []) {
        total++;
        const json = JSON.stringify(e, null, 2);
        if (q && !json.toLowerCase().includes(q)) continue;
        shown++;
        if (shown > limit) continue;
        const name = String(entityName(k, e));
        const d = el('details', { class: 'entity', 'data-kind': k, 'data-name': name },
          el('summary', null, el('span', { class: 'kind', text: k.replace(/s$/, '') }), el('span', { class: 'name' }, highlight(name, q)),
            el('span', { class: 'hint', text: entityHint(k, e) })),
          el('pre', null, highlight(json, q)));
        if (q && shown <= 3) d.open = true;
        box.append(d);
      }
    }
    $('config-count').textContent = (q ? shown + ' of ' + total + ' match “' + q + '”' : total + ' entities') + (shown > limit ? ' (first ' + limit + ' shown)' : '');
    if (!shown) box.append(el('p', { class: 'empty', text: 'no match' }));
  }

  // === start ===
  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token').value.trim();
      if (!t) { showLogin('Enter a token.'); return; }
      signIn(t);
    });
    $('logout').addEventListener('click', signOut);
    for (const b of document.querySelectorAll('#usage-periods button')) b.addEventListener('click', () => choosePeriod(b.dataset.period));
    $('usage-export').addEventListener('click', exportUsage);
    $('usage-consumer').addEventListener('click', () => chooseConsumer(null));
    document.querySelector('#usage-table tbody').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-filter-consumer]');
      if (b) chooseConsumer(b.dataset.filterConsumer);
    });
    let pending = null;
    $('config-search').addEventListener('input', () => {
      clearTimeout(pending);
      pending = setTimeout(renderConfig, 80);
    });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved); else showLogin(null);
  });
})();
