// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core.
// Called by gateway/tests/it/dashboard.rs, which runs a real gateway and drives traffic
// through it while this script watches.
//
//   node dashboard_browser.js
//
// Environment: DASHBOARD_URL (http://127.0.0.1:PORT/dashboard/), DASHBOARD_TOKEN (valid),
// DASHBOARD_SECRETS (comma-separated strings that must never appear in the page),
// ARTIFACTS (directory for screenshots), CHROMIUM (default /usr/bin/chromium), PROXY_URL
// (http://127.0.0.1:PORT, the gateway's proxy listener) and CAROL_KEY (the key of consumer
// carol, whose traffic this script drives itself for the usage panel).
//
// Checks: the login form refuses a wrong token; a valid token signs in; the numbers move while
// traffic flows, without a page load; upstream health, refusals, consumers and recent errors
// show, and the circuit of the upstream answering 500 shows open; the usage panel shows exactly
// the requests this script sent for carol (served, refused by the rate limit, upstream errors),
// live without a reload, for each period, and its CSV export has the same figures; the page has
// no horizontal overflow at 1366x768; the configuration is searchable and shows no secret;
// signing out forgets the token.
// Any JavaScript error or console error fails the run (the one 401 the wrong token causes
// is the only console message allowed, and only during that step). Prints one JSON line.
'use strict';

const fs = require('fs');
const path = require('path');
const os = require('os');
const { chromium } = require('playwright-core');

const URL = process.env.DASHBOARD_URL;
const TOKEN = process.env.DASHBOARD_TOKEN;
const SECRETS = (process.env.DASHBOARD_SECRETS || '').split(',').filter(Boolean);
const ARTIFACTS = process.env.ARTIFACTS || path.join(os.tmpdir(), 'dashboard-artifacts');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PROXY = process.env.PROXY_URL;
const CAROL_KEY = process.env.CAROL_KEY;
if (!URL || !TOKEN || !PROXY || !CAROL_KEY) {
  console.error('DASHBOARD_URL, DASHBOARD_TOKEN, PROXY_URL and CAROL_KEY are required');
  process.exit(2);
}
fs.mkdirSync(ARTIFACTS, { recursive: true });

const problems = [];
let phase = 'load';
const steps = [];
const step = (s) => { steps.push(s); process.stderr.write(`[dashboard] ${s}\n`); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(cond, message) {
  if (!cond) throw new Error(message);
}

async function waitFor(what, fn, ms) {
  const until = Date.now() + ms;
  let last;
  while (Date.now() < until) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await sleep(200);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

const num = (text) => {
  const n = Number(String(text).replace(/[^0-9.]/g, ''));
  return Number.isFinite(n) ? n : NaN;
};

(async () => {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-chromium-'));
  // A fresh profile per run (Playwright passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1366, height: 768 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => problems.push(`[${phase}] uncaught: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    const text = m.text();
    if (phase === 'wrong-token' && m.type() === 'error' && /status of 401/.test(text)) return;
    problems.push(`[${phase}] console.${m.type()}: ${text}`);
  });
  page.on('requestfailed', (r) => {
    // Aborting the live stream on sign-out is expected.
    if (phase === 'sign-out' && r.url().includes('/api/stream')) return;
    problems.push(`[${phase}] request failed: ${r.url()} ${r.failure() && r.failure().errorText}`);
  });
  const shot = async (name) => {
    const file = path.join(ARTIFACTS, name + '.png');
    await page.screenshot({ path: file, fullPage: true });
    return file;
  };
  const result = { screenshots: [], samples: [] };
  // The page is no wider than the window (a laptop's 1366x768).
  const noOverflow = async (where) => {
    const w = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
    check(w.scroll <= w.inner, `${where}: the page is ${w.scroll} px wide in a ${w.inner} px window`);
  };
  try {
    step('open the page');
    const resp = await page.goto(URL, { waitUntil: 'load' });
    check(resp.status() === 200, `page status ${resp.status()}`);
    const csp = resp.headers()['content-security-policy'] || '';
    check(csp.includes("script-src 'self'") && !csp.includes('unsafe'), `CSP: ${csp}`);
    await page.waitForSelector('#login-form', { state: 'visible' });
    check(await page.isHidden('#app'), 'the dashboard shows before sign-in');
    result.screenshots.push(await shot('01-login'));

    step('a wrong token is refused');
    phase = 'wrong-token';
    await page.fill('#token', 'not-the-token-' + Date.now());
    await page.click('#login-submit');
    await page.waitForSelector('#login-error', { state: 'visible', timeout: 10000 });
    const err = await page.textContent('#login-error');
    check(/not valid/.test(err), `login error: ${err}`);
    check(await page.isHidden('#app'), 'the dashboard shows after a wrong token');
    check(await page.evaluate(() => sessionStorage.length) === 0, 'a wrong token was stored');
    result.screenshots.push(await shot('02-login-refused'));

    step('sign in');
    phase = 'signed-in';
    await page.fill('#token', TOKEN);
    await page.click('#login-submit');
    await page.waitForSelector('#app', { state: 'visible', timeout: 10000 });
    await page.waitForSelector('#live-status[data-state="on"]', { timeout: 10000 });
    check(await page.evaluate(() => sessionStorage.getItem('gatehouse.dashboard.token')) === TOKEN, 'token not in sessionStorage');
    check(!page.url().includes(TOKEN), 'the token is in the URL');
    // Marks this document: a reload would lose it.
    await page.evaluate(() => { window.__sameDocument = 'yes'; });

    step('numbers move while traffic flows');
    const read = () => page.evaluate(() => {
      const row = document.querySelector('#routes-table tr[data-route="busy"]');
      return {
        updated: document.getElementById('last-update').dataset.time || '',
        rps: document.getElementById('kpi-rps').textContent,
        busyTotal: row ? row.querySelector('.total').textContent : null,
        busyRps: row ? row.querySelector('.rps').textContent : null,
      };
    });
    const first = await waitFor('the busy route in the routes table', async () => {
      const r = await read();
      return r.busyTotal !== null ? r : null;
    }, 15000);
    result.samples.push(first);
    const later = await waitFor('the busy route total to grow and requests/s to be above zero', async () => {
      const r = await read();
      return num(r.busyTotal) >= num(first.busyTotal) + 20 && num(r.rps) > 0 && num(r.busyRps) > 0
        && r.updated !== first.updated ? r : null;
    }, 20000);
    result.samples.push(later);
    check(await page.evaluate(() => window.__sameDocument) === 'yes', 'the page was reloaded');
    check(await page.evaluate(() => performance.getEntriesByType('navigation').length) === 1, 'more than one navigation');

    step('upstream health, refusals, consumers, recent errors');
    await page.waitForSelector('[data-upstream="dead"] [data-healthy="false"]', { timeout: 20000 });
    await page.waitForSelector('[data-upstream="backend"] [data-healthy="true"]', { timeout: 5000 });
    await waitFor('auth refusals', async () => num(await page.textContent('tr[data-refusal="auth"] .total')) > 0, 15000);
    await waitFor('rate-limit refusals', async () => num(await page.textContent('tr[data-refusal="rate_limited"] .total')) > 0, 15000);
    await waitFor('authorization refusals', async () => num(await page.textContent('tr[data-refusal="forbidden"] .total')) > 0, 15000);
    await page.waitForSelector('#consumers-table tr[data-consumer="alice"]', { timeout: 15000 });
    const quota = await page.textContent('#consumers-table tr[data-consumer="alice"]');
    check(/per day/.test(quota), `alice's quota: ${quota}`);
    await waitFor('a failed request in recent errors', async () => (await page.textContent('#errors')).includes('request failed'), 15000);
    await page.waitForSelector('[data-upstream="failing"] .badge.circuit.open', { timeout: 20000 });
    const circuit = await page.textContent('[data-upstream="failing"] .badge.circuit');
    check(circuit === 'circuit open', `the failing upstream's circuit: ${circuit}`);
    check(await page.isVisible('[data-upstream="backend"] .badge.circuit.closed'), 'the backend circuit is not shown closed');
    await page.evaluate(() => window.scrollTo(0, 0));
    await noOverflow('dashboard');
    result.screenshots.push(await shot('03-dashboard'));

    step('usage panel: the requests driven for carol, exactly, live');
    await page.waitForSelector('#usage-card[data-period="hour"]', { timeout: 10000 });
    check(await page.$$eval('#usage-table tr[data-consumer="carol"]', (r) => r.length) === 0, 'carol has usage before any request');
    // Drive carol's traffic from here: POSTs to `metered` (2 an hour allowed, then 429) and
    // GETs to `metered-broken` (a dead upstream: 5xx).
    const want = { metered: { served: 0, refused: 0, auth_failed: 0, upstream_error: 0 }, 'metered-broken': { served: 0, refused: 0, auth_failed: 0, upstream_error: 0 } };
    let bodyBytes = 0;
    for (let i = 0; i < 5; i++) {
      const body = 'carol-browser-' + i;
      const r = await fetch(PROXY + '/metered', { method: 'POST', headers: { 'x-api-key': CAROL_KEY }, body });
      await r.arrayBuffer();
      check(r.status === 200 || r.status === 429, `metered: ${r.status}`);
      // Bytes in: the bodies of the requests served (a refused request's body is not read).
      if (r.status === 200) bodyBytes += body.length;
      want.metered[r.status === 200 ? 'served' : 'refused'] += 1;
    }
    for (let i = 0; i < 3; i++) {
      const r = await fetch(PROXY + '/metered-broken', { headers: { 'x-api-key': CAROL_KEY } });
      await r.arrayBuffer();
      check(r.status >= 500, `metered-broken: ${r.status}`);
      want['metered-broken'].upstream_error += 1;
    }
    check(want.metered.refused >= 1, `the rate limit refused nothing: ${JSON.stringify(want)}`);
    const readUsage = () => page.evaluate(() => {
      const out = {};
      for (const tr of document.querySelectorAll('#usage-table tr[data-consumer="carol"]')) {
        const v = {};
        for (const td of tr.querySelectorAll('td[data-value]')) v[td.classList[1]] = Number(td.dataset.value);
        out[tr.dataset.route] = v;
      }
      return out;
    });
    const same = (seen) => ['metered', 'metered-broken'].every((route) => seen[route]
      && ['served', 'refused', 'auth_failed', 'upstream_error'].every((o) => seen[route][o] === want[route][o])
      && seen[route].total === Object.values(want[route]).reduce((a, b) => a + b, 0));
    const seen = await waitFor('the usage panel to show carol\'s requests', async () => {
      const u = await readUsage();
      return same(u) ? u : null;
    }, 20000);
    check(seen.metered.bytes_in === bodyBytes, `bytes in: ${seen.metered.bytes_in}, sent ${bodyBytes}`);
    check(seen.metered.bytes_out > 0, 'no bytes out');
    check(await page.evaluate(() => window.__sameDocument) === 'yes', 'the page was reloaded');
    result.usage = { want, seen, bodyBytes };
    await noOverflow('usage panel');
    {
      const file = path.join(ARTIFACTS, '05-usage.png');
      await page.locator('#usage-card').screenshot({ path: file });
      result.screenshots.push(file);
    }

    step('usage panel: today by hour, this month by day, and the CSV export');
    for (const period of ['day', 'month']) {
      await page.click(`#usage-periods button[data-period="${period}"]`);
      await page.waitForSelector(`#usage-card[data-period="${period}"]`, { timeout: 10000 });
      await waitFor(`carol's requests in the ${period} view`, async () => same(await readUsage()), 10000);
      const bars = await page.$$eval('#usage-chart rect', (r) => r.length);
      check(bars > 0, `no bar in the ${period} chart`);
    }
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 10000 }), page.click('#usage-export')]);
    const csvFile = path.join(ARTIFACTS, 'usage-export.csv');
    await download.saveAs(csvFile);
    const lines = fs.readFileSync(csvFile, 'utf8').trim().split('\n');
    check(lines[0] === 'period,start,consumer,route,outcome,requests,bytes_in,bytes_out', `CSV header: ${lines[0]}`);
    const fromCsv = { metered: { served: 0, refused: 0, auth_failed: 0, upstream_error: 0, bytes_in: 0 }, 'metered-broken': { served: 0, refused: 0, auth_failed: 0, upstream_error: 0, bytes_in: 0 } };
    for (const l of lines.slice(1)) {
      const f = l.split(',');
      if (f[2] !== 'carol') continue;
      fromCsv[f[3]][f[4]] += Number(f[5]);
      fromCsv[f[3]].bytes_in += Number(f[6]);
    }
    for (const route of ['metered', 'metered-broken']) {
      for (const o of ['served', 'refused', 'auth_failed', 'upstream_error']) {
        check(fromCsv[route][o] === want[route][o], `CSV ${route} ${o}: ${fromCsv[route][o]}, want ${want[route][o]}`);
      }
    }
    check(fromCsv.metered.bytes_in === bodyBytes, `CSV bytes in: ${fromCsv.metered.bytes_in}`);
    result.usage.csv = fromCsv;
    await page.click('#usage-periods button[data-period="hour"]');
    await page.waitForSelector('#usage-card[data-period="hour"]', { timeout: 10000 });

    step('usage panel: one consumer (click the name), then every consumer again');
    const consumersShown = () => page.$$eval('#usage-table tr[data-consumer]', (r) => [...new Set(r.map((x) => x.dataset.consumer))].sort());
    await waitFor('other consumers beside carol in the usage panel', async () => {
      const c = await consumersShown();
      return c.includes('carol') && c.length > 1 ? c : null;
    }, 10000);
    await page.click('#usage-table button[data-filter-consumer="carol"]');
    await page.waitForSelector('#usage-card[data-consumer="carol"]', { timeout: 10000 });
    check(JSON.stringify(await consumersShown()) === '["carol"]', `filtered rows: ${await consumersShown()}`);
    check(same(await readUsage()), 'carol\'s figures changed under the filter');
    check(await page.isVisible('#usage-consumer'), 'no sign of the consumer filter');
    const carolTotal = await page.$$eval('#usage-totals > div', (boxes) => boxes
      .filter((d) => ['served', 'refused', 'auth_failed', 'upstream_error'].includes(d.dataset.outcome))
      .reduce((a, d) => a + Number(d.querySelector('b').dataset.value), 0));
    const wantTotal = Object.values(want).reduce((a, r) => a + Object.values(r).reduce((x, y) => x + y, 0), 0);
    check(carolTotal === wantTotal, `carol's total under the filter: ${carolTotal}, want ${wantTotal}`);
    result.usage.filtered = { total: carolTotal };
    await page.click('#usage-consumer');
    await page.waitForSelector('#usage-card[data-consumer=""]', { timeout: 10000 });
    check(!(await page.isVisible('#usage-consumer')), 'the consumer filter is still shown');
    check((await consumersShown()).length > 1, 'every consumer is not shown again');

    step('search the configuration');
    await page.waitForSelector('#config-results details.entity', { timeout: 10000 });
    const all = await page.$$eval('#config-results details.entity', (d) => d.length);
    await page.fill('#config-search', '/findme-');
    await waitFor('one search result', async () => {
      const names = await page.$$eval('#config-results details.entity', (d) => d.map((x) => x.dataset.name));
      return names.length === 1 && names[0] === 'needle' ? names : null;
    }, 5000);
    check(all > 1, `only ${all} entities before the search`);
    await page.click('#config-kinds button[data-kind="consumers"]');
    await page.fill('#config-search', 'alice');
    await page.waitForSelector('#config-results details.entity[data-kind="consumers"][data-name="alice"]', { timeout: 5000 });
    await page.click('#config-results details.entity[data-name="alice"] summary').catch(() => {});
    const text = await page.evaluate(() => document.body.innerText + JSON.stringify(sessionStorage));
    for (const s of SECRETS) check(!text.includes(s), 'a secret is shown in the page');
    await page.click('#config-kinds button[data-kind="all"]');
    await page.fill('#config-search', 'findme');
    await sleep(300);
    // The configuration panel alone (a full-page shot of a scrolled page repeats the sticky header).
    const file = path.join(ARTIFACTS, '04-config-search.png');
    await page.locator('#config-card').screenshot({ path: file });
    result.screenshots.push(file);

    step('sign out');
    phase = 'sign-out';
    await page.click('#logout');
    await page.waitForSelector('#login-form', { state: 'visible' });
    check(await page.evaluate(() => sessionStorage.length) === 0, 'the token survived sign-out');
    check(await page.isHidden('#app'), 'the dashboard shows after sign-out');
    await sleep(500);
    phase = 'done';
  } catch (e) {
    problems.push(`[${phase}] ${e.message}`);
    try { result.screenshots.push(await shot('failure')); } catch (_) { /* best effort */ }
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  result.ok = problems.length === 0;
  result.problems = problems;
  result.steps = steps;
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
})().catch((e) => {
  console.log(JSON.stringify({ ok: false, problems: [String(e && e.stack || e)] }));
  process.exit(1);
});
