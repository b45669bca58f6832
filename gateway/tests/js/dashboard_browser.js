// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core.
// Called by gateway/tests/it/dashboard.rs, which runs a real gateway and drives traffic
// through it while this script watches.
//
//   node dashboard_browser.js
//
// Environment: DASHBOARD_URL (http://127.0.0.1:PORT/dashboard/), DASHBOARD_TOKEN (valid),
// DASHBOARD_SECRETS (comma-separated strings that must never appear in the page),
// ARTIFACTS (directory for screenshots), CHROMIUM (default /usr/bin/chromium).
//
// Checks: the login form refuses a wrong token; a valid token signs in; the numbers move while
// traffic flows, without a page load; upstream health, refusals, consumers and recent errors
// show; the configuration is searchable and shows no secret; signing out forgets the token.
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
if (!URL || !TOKEN) {
  console.error('DASHBOARD_URL and DASHBOARD_TOKEN are required');
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
    await page.evaluate(() => window.scrollTo(0, 0));
    result.screenshots.push(await shot('03-dashboard'));

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
