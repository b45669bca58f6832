//! The web dashboard on the Admin API listener: its data endpoints refuse requests without a
//! valid token; its data follows the traffic; and in a real browser (Debian's Chromium,
//! headless, driven by playwright-core from `gateway/tests/js/dashboard_browser.js`) a user
//! signs in, watches the numbers move while traffic flows, searches the configuration, and
//! the page logs no JavaScript error; the usage panel shows exactly the traffic driven for a
//! consumer, split by outcome, live and for each period, and its CSV export agrees. Screenshots
//! are kept in `target/test-artifacts/dashboard/`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "dashboard-reader-token-0123456789";
const ALICE_KEY: &str = "alice-secret-key-5f1d2c";
const BOB_KEY: &str = "bob-secret-key-9a7e01";
const CAROL_KEY: &str = "carol-secret-key-44c0e3";

fn sha(s: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A gateway with every panel of the dashboard fed: a healthy upstream behind key-auth, a dead
/// upstream (connection refused on loopback), an upstream answering 500 whose circuit opens, a
/// rate-limited route, a daily quota, consumers; carol's routes (`metered`, limited to 2
/// requests an hour, and `metered-broken`, on the dead upstream) are driven by the usage tests
/// only.
fn config(backend: &str, failing: &str) -> String {
    format!(
        r#"gateway:
  status_listener: "off"
  access_log: {{ enabled: false }}
  admin:
    listen: 127.0.0.1:0
    tokens:
      - {{ name: dashboards, token_hash: "{token}", role: read_only }}
listeners:
  - name: main
    address: 127.0.0.1:0
upstreams:
  - name: backend
    targets: [{{ address: "{backend}" }}]
    circuit_breaker: {{ min_requests: 5 }}
  - name: dead
    targets: [{{ address: "127.0.0.1:1" }}]
    health_checks: {{ passive: {{ consecutive_failures: 3, ejection_time: 60s }} }}
    circuit_breaker: {{ min_requests: 5 }}
  - name: failing
    targets: [{{ address: "{failing}" }}]
    circuit_breaker: {{ min_requests: 5, open_duration: 120s }}
services:
  - {{ name: api, upstream: backend }}
  - {{ name: broken, upstream: dead }}
  - {{ name: flaky, upstream: failing }}
  - {{ name: echo, type: echo }}
routes:
  - {{ name: busy, service: api, paths: ["/busy/*"] }}
  - {{ name: broken, service: broken, paths: ["/broken"] }}
  - {{ name: private, service: echo, paths: ["/private"] }}
  - {{ name: limited, service: echo, paths: ["/limited"] }}
  - {{ name: needle, service: echo, paths: ["/findme-7f3a"] }}
  - {{ name: admins, service: echo, paths: ["/admins"] }}
  - {{ name: failing, service: flaky, paths: ["/failing"] }}
  - {{ name: metered, service: echo, paths: ["/metered"] }}
  - {{ name: metered-broken, service: broken, paths: ["/metered-broken"] }}
plugins:
  - {{ plugin: key-auth, route: busy }}
  - {{ plugin: key-auth, route: private }}
  - {{ plugin: key-auth, route: admins }}
  - {{ plugin: acl, route: admins, config: {{ allow: [admins] }} }}
  - {{ plugin: rate-limiting, route: limited, config: {{ second: 2 }} }}
  - {{ plugin: key-auth, route: metered }}
  - {{ plugin: key-auth, route: metered-broken }}
  - {{ plugin: rate-limiting, route: metered, config: {{ hour: 2 }} }}
  - {{ plugin: quota, name: daily, config: {{ limit: 100000, period: day }} }}
consumers:
  - username: alice
    credentials: [{{ type: key-auth, id: alice-key, key: "{alice}" }}]
  - username: bob
    credentials: [{{ type: key-auth, id: bob-key, key: "{bob}" }}]
  - username: carol
    credentials: [{{ type: key-auth, id: carol-key, key: "{carol}" }}]
"#,
        token = sha(TOKEN),
        alice = ALICE_KEY,
        bob = BOB_KEY,
        carol = CAROL_KEY,
    )
}

struct Running {
    proc: crate::binary::Proc,
    proxy: std::net::SocketAddr,
    admin: String,
    _upstream: Upstream,
    _failing: Upstream,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let upstream = Upstream::start(Behavior::Echo("backend")).await;
    let failing = Upstream::start(Behavior::Status(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    crate::binary::write(&file, &config(&upstream.addr.to_string(), &failing.addr.to_string()));
    let (mut proc, proxy) = crate::binary::Proc::start(&file).await;
    let admin = proc.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    Running { proc, proxy, admin, _upstream: upstream, _failing: failing, _dir: dir }
}

/// Traffic of every kind, bounded: at most `max` rounds, until `stop`. Returns the rounds sent.
fn drive(
    proxy: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    max: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let c = client();
        let u = |p: &str| format!("http://{proxy}{p}");
        let mut rounds = 0;
        while rounds < max && !stop.load(Ordering::Relaxed) {
            for _ in 0..4 {
                let r = c.get(u("/busy/x")).header("x-api-key", ALICE_KEY).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }
            assert_eq!(c.get(u("/private")).send().await.unwrap().status(), 401);
            let r = c.get(u("/admins")).header("x-api-key", BOB_KEY).send().await.unwrap();
            assert_eq!(r.status(), 403, "bob is not in the admins group");
            let s = c.get(u("/broken")).send().await.unwrap().status();
            assert!(s.is_server_error(), "{s}");
            let _ = c.get(u("/limited")).send().await.unwrap();
            // 500 until the circuit opens, then 503 `circuit_open`.
            let s = c.get(u("/failing")).send().await.unwrap().status();
            assert!(s == 500 || s == 503, "{s}");
            rounds += 1;
            tokio::time::sleep(pause).await;
        }
        rounds
    })
}

async fn snapshot(admin: &str) -> Value {
    let r = client().get(format!("http://{admin}/dashboard/api/snapshot")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

/// Without a token, or with a wrong one, every data endpoint answers 401 (the stream too);
/// the page and its assets are public and carry a strict Content-Security-Policy.
#[tokio::test]
async fn dashboard_endpoints_need_the_admin_token() {
    let g = start().await;
    let c = client();
    for path in ["/dashboard/api/snapshot", "/dashboard/api/stream", "/dashboard/api/config", "/dashboard/api/usage"] {
        let url = format!("http://{}{path}", g.admin);
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} without a token");
        assert!(r.headers().contains_key("www-authenticate"), "{path}");
        let r = c.get(&url).bearer_auth("wrong-token-0123456789").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} with a wrong token");
        // The token is not taken from the query string.
        let r = c.get(format!("{url}?token={TOKEN}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} with the token in the query");
    }
    for (path, ctype) in [
        ("/dashboard/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
        ("/dashboard/favicon.svg", "image/svg+xml"),
    ] {
        let r = c.get(format!("http://{}{path}", g.admin)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(ctype), "{path}: {:?}", h["content-type"]);
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    // The page loads nothing from elsewhere and has no inline script.
    let html = c.get(format!("http://{}/dashboard/", g.admin)).send().await.unwrap().text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    assert!(!html.contains("<script>") && html.contains(r#"<script src="app.js" defer></script>"#));
    // `/dashboard` leads to the page.
    let r = c.get(format!("http://{}/dashboard", g.admin)).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()["location"], "/dashboard/");
    drop(g.proc);
}

/// The data follows the traffic: rates, error rates, percentiles per route, upstream health
/// and circuit state, refusals, consumers with their quota, recent errors; the stream sends a
/// new update every second; the configuration is redacted as the Admin API redacts it.
#[tokio::test]
async fn dashboard_data_follows_the_traffic() {
    let g = start().await;
    // The first request starts the readings; rates need two.
    let s0 = snapshot(&g.admin).await;
    assert_eq!(s0["totals"]["requests"], 0, "{s0}");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = drive(g.proxy, stop.clone(), 400, Duration::from_millis(20));
    let t0 = Instant::now();
    let mut s = Value::Null;
    while t0.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s = snapshot(&g.admin).await;
        let busy = s["routes"].as_array().unwrap().iter().find(|r| r["route"] == "busy").cloned();
        let ready = busy.is_some_and(|b| b["rps"].as_f64().unwrap_or(0.0) > 0.0 && b["p99_ms"].is_number())
            && s["refusals"]["auth"]["total"].as_u64().unwrap_or(0) > 0
            && s["refusals"]["forbidden"]["total"].as_u64().unwrap_or(0) > 0
            && s["refusals"]["rate_limited"]["total"].as_u64().unwrap_or(0) > 0
            && s["consumers"].as_array().is_some_and(|c| !c.is_empty())
            && s["upstreams"]
                .as_array()
                .is_some_and(|u| u.iter().any(|u| u["name"] == "failing" && u["circuit"] == "open"));
        if ready {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = traffic.await.unwrap();
    assert!(rounds > 0);
    let route = |name: &str| s["routes"].as_array().unwrap().iter().find(|r| r["route"] == name).cloned().unwrap();
    let busy = route("busy");
    assert!(busy["rps"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(busy["error_rate"], 0.0, "{busy}");
    let (p50, p99) = (busy["p50_ms"].as_f64().unwrap(), busy["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{busy}");
    assert_eq!(route("broken")["error_rate"], 1.0, "{s}");
    assert!(s["totals"]["rps"].as_f64().unwrap() > 0.0);
    assert!(!s["history"].as_array().unwrap().is_empty());
    let svc = s["services"].as_array().unwrap().iter().find(|x| x["service"] == "api").cloned().unwrap();
    assert_eq!(svc["requests"], busy["requests"]);
    // Upstreams: the dead target ejected; the live one healthy; circuits shown.
    let up = |name: &str| s["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == name).cloned().unwrap();
    assert_eq!(up("backend")["targets"][0]["healthy"], true, "{s}");
    assert_eq!(up("dead")["targets"][0]["healthy"], false, "{s}");
    assert!(up("dead")["circuit"].is_string() && up("backend")["circuit"] == "closed", "{s}");
    // The upstream answering 500: its circuit opened after 5 failed requests.
    assert_eq!(up("failing")["circuit"], "open", "{s}");
    assert_eq!(up("failing")["targets"][0]["healthy"], true, "no health check: only the circuit is open");
    // Refusals.
    let r = &s["refusals"];
    assert!(r["auth"]["total"].as_u64().unwrap() > 0, "{r}");
    assert!(r["forbidden"]["total"].as_u64().unwrap() > 0, "authorization refusals counted apart: {r}");
    assert!(r["rate_limited"]["total"].as_u64().unwrap() > 0, "{r}");
    let codes: Vec<&str> = r["errors_by_code"].as_array().unwrap().iter().filter_map(|e| e["code"].as_str()).collect();
    assert!(codes.contains(&"upstream_connect_failed"), "{r}");
    // Consumers: alice, with the daily quota.
    let alice = &s["consumers"][0];
    assert_eq!(alice["consumer"], "alice", "{s}");
    assert!(alice["requests_today"].as_u64().unwrap() >= 4);
    assert_eq!((alice["quota"]["period"].as_str(), alice["quota"]["limit"].as_u64()), (Some("day"), Some(100_000)));
    assert_eq!(alice["quota"]["used"], alice["requests_today"]);
    // Recent errors: the failed upstream requests, from the gateway's own log records.
    let recent = s["errors"]["recent"].as_array().unwrap();
    assert!(recent.iter().any(|e| e["message"] == "request failed" && e["level"] == "WARN"), "{recent:?}");

    // The stream: `update` events, one per second.
    let mut resp =
        client().get(format!("http://{}/dashboard/api/stream", g.admin)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let (mut buf, mut times) = (String::new(), Vec::new());
    let t0 = Instant::now();
    while times.len() < 3 && t0.elapsed() < Duration::from_secs(10) {
        let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let ev: String = buf.drain(..i + 2).collect();
            if let Some(data) = ev.lines().find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:"))) {
                assert!(ev.contains("event: update") || ev.contains("event:update"), "{ev}");
                let v: Value = serde_json::from_str(data).unwrap();
                times.push(v["time"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(times.len(), 3, "{times:?}");
    // A new update each time (RFC 3339 times compare as strings), about a second apart: the
    // first is sent at once, the next two on the following readings.
    assert!(times[0] < times[1] && times[1] < times[2], "the stream repeats itself: {times:?}");
    assert!(t0.elapsed() >= Duration::from_millis(900), "{:?}", t0.elapsed());

    // The configuration, with secrets removed: alice's key is stored as its hash only.
    let r = client().get(format!("http://{}/dashboard/api/config", g.admin)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!text.contains(ALICE_KEY) && !text.contains(BOB_KEY), "{text}");
    let c: Value = serde_json::from_str(&text).unwrap();
    let e = &c["entities"];
    assert_eq!(e["routes"].as_array().unwrap().len(), 9);
    assert_eq!(e["consumers"][0]["credentials"][0]["key_hash"], sha(ALICE_KEY).as_str());
    assert!(e["plugins"].as_array().unwrap().iter().any(|p| p["plugin"] == "quota"));
    drop(g.proc);
}

/// What carol's traffic gave: requests per (route, outcome), and the body bytes of the
/// requests served (a refused request's body is not read).
struct Carol {
    counts: std::collections::BTreeMap<(String, String), u64>,
    body_bytes: u64,
}

/// Carol's traffic: `n` POSTs to `metered` (2 an hour are allowed, the rest refused with 429),
/// two GETs to `metered-broken` (the dead upstream: 5xx), and one request to `metered` without a
/// key (401, no consumer: counted under `-`). The outcomes counted from the statuses received.
async fn drive_carol(proxy: std::net::SocketAddr, n: usize) -> Carol {
    let c = client();
    let mut counts = std::collections::BTreeMap::new();
    let mut add = |consumer: &str, route: &str, outcome: &str| {
        *counts.entry((format!("{consumer}/{route}"), outcome.to_string())).or_insert(0) += 1;
    };
    let mut body_bytes = 0;
    for i in 0..n {
        let body = format!("carol-body-{i}");
        let len = body.len() as u64;
        let r =
            c.post(format!("http://{proxy}/metered")).header("x-api-key", CAROL_KEY).body(body).send().await.unwrap();
        match r.status().as_u16() {
            200 => {
                add("carol", "metered", "served");
                body_bytes += len;
            }
            429 => add("carol", "metered", "refused"),
            s => panic!("metered: {s}"),
        }
    }
    for _ in 0..2 {
        let r = c.get(format!("http://{proxy}/metered-broken")).header("x-api-key", CAROL_KEY).send().await.unwrap();
        assert!(r.status().is_server_error(), "{}", r.status());
        add("carol", "metered-broken", "upstream_error");
    }
    assert_eq!(c.get(format!("http://{proxy}/metered")).send().await.unwrap().status(), 401);
    add("-", "metered", "auth_failed");
    Carol { counts, body_bytes }
}

async fn usage_panel(admin: &str, period: &str) -> Value {
    let r = client()
        .get(format!("http://{admin}/dashboard/api/usage?period={period}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

/// The panel's rows as requests per ("consumer/route", outcome), zeros left out.
fn panel_counts(p: &Value) -> std::collections::BTreeMap<(String, String), u64> {
    let mut m = std::collections::BTreeMap::new();
    for r in p["rows"].as_array().unwrap_or_else(|| panic!("{p}")) {
        let mut sum = 0;
        for o in ["served", "refused", "auth_failed", "upstream_error"] {
            let n = r[o].as_u64().unwrap();
            sum += n;
            if n > 0 {
                m.insert(
                    (format!("{}/{}", r["consumer"].as_str().unwrap(), r["route"].as_str().unwrap()), o.to_string()),
                    n,
                );
            }
        }
        assert_eq!(r["requests"], sum, "{r}");
    }
    m
}

/// The usage panel's data (`/dashboard/api/usage`): the traffic driven for a consumer, split by
/// outcome (served, refused by the rate limit, upstream errors, and the failed authentication
/// under `-`), exactly, for the last hour by minute, today by hour and this month by day; the
/// bytes received; the per-bucket series adds up to the totals; the CSV export the panel links
/// to has the same figures; each update of the live stream carries the store's stamp, which
/// moves with the traffic.
#[tokio::test]
async fn dashboard_usage_panel_matches_the_traffic_and_the_export() {
    let g = start().await;
    let c = client();
    let url = |p: &str| format!("http://{}{p}", g.admin);
    let r = c.get(url("/dashboard/api/usage?period=week")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("hour, day or month"), "{e}");
    let empty = usage_panel(&g.admin, "hour").await;
    assert_eq!(empty["rows"], serde_json::json!([]), "{empty}");
    assert_eq!(empty["series"].as_array().unwrap().len(), 60);
    assert_eq!(empty["store"], "memory");

    let carol = drive_carol(g.proxy, 6).await;
    let refused = carol.counts.get(&("carol/metered".to_string(), "refused".to_string())).copied().unwrap_or(0);
    assert!(refused >= 2, "2 an hour allowed, at most 4 across an hour's boundary: {:?}", carol.counts);
    for (period, buckets) in [("hour", Some(60)), ("day", Some(24)), ("month", None)] {
        let p = usage_panel(&g.admin, period).await;
        assert_eq!(panel_counts(&p), carol.counts, "{period}: {p}");
        let t = &p["totals"];
        assert_eq!(t["requests"], 9, "{period}: {t}");
        assert_eq!((t["served"].as_u64(), t["upstream_error"].as_u64()), (Some(6 - refused), Some(2)), "{t}");
        // Bytes in: the bodies of carol's served requests (a refused request's body is not read).
        let row =
            p["rows"].as_array().unwrap().iter().find(|r| r["route"] == "metered" && r["consumer"] == "carol").unwrap();
        assert_eq!(row["bytes_in"], carol.body_bytes, "{period}: {row}");
        assert!(row["bytes_out"].as_u64().unwrap() > 0, "{row}");
        let series = p["series"].as_array().unwrap();
        if let Some(n) = buckets {
            assert_eq!(series.len(), n, "{period}");
        }
        let sum: u64 = series.iter().map(|b| b["requests"].as_u64().unwrap()).sum();
        assert_eq!(sum, 9, "{period}: {p}");

        // The export the panel links to (relative to /dashboard/): the same figures.
        let link = p["export"]["csv"].as_str().unwrap();
        let path = link.strip_prefix("..").unwrap_or_else(|| panic!("{link}"));
        let r = c.get(url(path)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200, "{link}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        let csv = r.text().await.unwrap();
        let mut from_csv = std::collections::BTreeMap::new();
        let mut bytes_in = 0;
        for l in csv.lines().skip(1) {
            let f: Vec<&str> = l.split(',').collect();
            *from_csv.entry((format!("{}/{}", f[2], f[3]), f[4].to_string())).or_insert(0u64) +=
                f[5].parse::<u64>().unwrap();
            if f[2] == "carol" && f[3] == "metered" {
                bytes_in += f[6].parse::<u64>().unwrap();
            }
        }
        assert_eq!(from_csv, carol.counts, "{period}: {csv}");
        assert_eq!(bytes_in, carol.body_bytes, "{csv}");
    }

    // The stamp each update carries moves with the store: 9 requests, then 10.
    let stamp = |want: u64| {
        let admin = g.admin.clone();
        async move {
            let t0 = Instant::now();
            loop {
                let s = snapshot(&admin).await;
                if s["usage_stamp"] == want || t0.elapsed() > Duration::from_secs(10) {
                    return s["usage_stamp"].clone();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(stamp(9).await, 9);
    let r = c.post(format!("http://{}/metered", g.proxy)).header("x-api-key", CAROL_KEY).send().await.unwrap();
    assert!(r.status() == 429 || r.status() == 200, "{}", r.status());
    assert_eq!(stamp(10).await, 10);
    let p = usage_panel(&g.admin, "hour").await;
    assert_eq!((p["rows"][0]["consumer"].as_str(), p["rows"][0]["requests"].as_u64()), (Some("carol"), Some(7)), "{p}");

    // One consumer's usage: alice's request is in the whole panel, not in carol's; a consumer
    // without usage has an empty panel, and its export link asks for it alone.
    let r = c.get(format!("http://{}/private", g.proxy)).header("x-api-key", ALICE_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(stamp(11).await, 11);
    let all = usage_panel(&g.admin, "hour").await;
    assert_eq!(all["totals"]["requests"], 11, "{all}");
    assert!(all["consumer"].is_null());
    let of = |p: &Value, who: &str| -> u64 {
        p["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["consumer"] == who)
            .map(|r| r["requests"].as_u64().unwrap())
            .sum()
    };
    let carols = of(&all, "carol");
    assert!(carols >= 9 && of(&all, "alice") == 1, "{all}");
    let carol = usage_panel(&g.admin, "hour&consumer=carol").await;
    assert_eq!(carol["consumer"], "carol");
    assert_eq!(carol["totals"]["requests"], carols, "{carol}");
    assert!(carol["rows"].as_array().unwrap().iter().all(|r| r["consumer"] == "carol"), "{carol}");
    assert_eq!(
        carol["series"].as_array().unwrap().iter().map(|b| b["requests"].as_u64().unwrap()).sum::<u64>(),
        carols
    );
    let alice = usage_panel(&g.admin, "hour&consumer=alice").await;
    assert_eq!((alice["totals"]["requests"].as_u64(), alice["rows"][0]["route"].as_str()), (Some(1), Some("private")));
    let nobody = usage_panel(&g.admin, "hour&consumer=no%20body").await;
    assert_eq!((nobody["consumer"].as_str(), nobody["totals"]["requests"].as_u64()), (Some("no body"), Some(0)));
    assert_eq!(nobody["rows"], serde_json::json!([]));
    let link = nobody["export"]["csv"].as_str().unwrap();
    assert!(link.ends_with("&consumer=no%20body"), "{link}");
    let csv =
        c.get(url(link.strip_prefix("..").unwrap())).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    assert_eq!(csv.trim().lines().count(), 1, "only the header: {csv}");
    let link = carol["export"]["csv"].as_str().unwrap();
    let csv =
        c.get(url(link.strip_prefix("..").unwrap())).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(!rows.is_empty() && rows.iter().all(|l| l.split(',').nth(2) == Some("carol")), "{csv}");
    drop(g.proc);
}

/// The dashboard in headless Chromium (see `gateway/tests/js/dashboard_browser.js`).
#[tokio::test]
async fn dashboard_in_a_real_browser() {
    let g = start().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let js = root.join("gateway/tests/js");
    assert!(
        js.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in gateway/tests/js (scripts/test.sh does)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing (scripts/test.sh installs it)"
    );
    let artifacts = root.join("target/test-artifacts/dashboard");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();

    // Traffic for as long as the browser watches (bounded: 60 s at most).
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = drive(g.proxy, stop.clone(), 1500, Duration::from_millis(40));
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg("dashboard_browser.js")
            .current_dir(&js)
            .env("DASHBOARD_URL", format!("http://{}/dashboard/", g.admin))
            .env("DASHBOARD_TOKEN", TOKEN)
            .env("DASHBOARD_SECRETS", format!("{ALICE_KEY},{CAROL_KEY}"))
            .env("PROXY_URL", format!("http://{}", g.proxy))
            .env("CAROL_KEY", CAROL_KEY)
            .env("ARTIFACTS", &artifacts)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser test took more than 120 s")
    .expect("run node");
    stop.store(true, Ordering::Relaxed);
    let rounds = traffic.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}\ntraffic rounds: {rounds}");
    let result: Value = stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    assert!(out.status.success() && result["ok"] == true, "browser test failed: {result}\n{stderr}");
    for name in ["01-login", "02-login-refused", "03-dashboard", "04-config-search", "05-usage"] {
        let f = artifacts.join(format!("{name}.png"));
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 5_000, "screenshot {} missing or empty", f.display());
    }
    // The numbers the browser saw moved.
    let samples = result["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    assert_ne!(samples[0]["busyTotal"], samples[1]["busyTotal"]);
    // The usage panel showed the 8 requests the browser script sent for carol, and so did the
    // export; the store agrees.
    let u = &result["usage"];
    assert_eq!(u["seen"]["metered"]["total"], 5, "{u}");
    assert_eq!(u["seen"]["metered-broken"]["upstream_error"], 3, "{u}");
    let p = usage_panel(&g.admin, "hour").await;
    let carol: u64 = p["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["consumer"] == "carol")
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(carol, 8, "{p}");
    drop(g.proc);
}
