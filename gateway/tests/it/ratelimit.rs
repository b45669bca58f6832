//! Rate limiting, throttling, concurrency limits, quotas and usage, over real sockets: local
//! counters, and Redis (the real server on 127.0.0.1:6379, or a redis-server this test starts
//! and stops itself to test failure modes). Two gateway processes sharing Redis are driven
//! concurrently for cluster accuracy.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde_json::Value;

use crate::support::*;

const REDIS: &str = "redis://127.0.0.1:6379/";

/// A token unique to this run, so Redis counters of earlier runs never interfere.
fn run_id() -> String {
    let n = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{:x}", n, std::process::id())
}

fn gateway_yaml(up: &Upstream, redis: Option<&str>, plugins: &str) -> String {
    let redis = redis.map(|u| format!("  redis: {{ url: \"{u}\", timeout: 200ms }}\n")).unwrap_or_default();
    format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\n{redis}listeners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/*\"]\nplugins:\n{plugins}",
        up.authority()
    )
}

/// Fire `n` concurrent GETs; statuses in completion order, and the responses' headers.
async fn burst(url: &str, n: usize, header: (&str, &str)) -> Vec<(u16, reqwest::header::HeaderMap, String)> {
    let c = client();
    join_all((0..n).map(|_| {
        let c = c.clone();
        let url = url.to_string();
        async move {
            let r = c.get(url).header(header.0, header.1).send().await.expect("request");
            let s = r.status().as_u16();
            let h = r.headers().clone();
            (s, h, r.text().await.unwrap_or_default())
        }
    }))
    .await
}

fn count(v: &[(u16, reqwest::header::HeaderMap, String)], status: u16) -> usize {
    v.iter().filter(|r| r.0 == status).count()
}

/// Every algorithm admits exactly N of a concurrent burst, locally and through Redis.
#[tokio::test]
async fn burst_admits_exactly_n_local_and_redis() {
    let up = Upstream::start(Behavior::Status(200)).await;
    for policy in ["local", "redis"] {
        for alg in ["sliding-window", "fixed-window", "gcra"] {
            let id = run_id();
            let gw = TestGateway::start(
                &gateway_yaml(
                    &up,
                    Some(REDIS),
                    &format!(
                        "  - plugin: rate-limiting\n    config: {{ minute: 10, algorithm: {alg}, policy: {policy}, limit_by: [\"header:x-run\"] }}\n"
                    ),
                ),
                &[],
            )
            .await;
            let res = burst(&gw.url("main"), 30, ("x-run", &id)).await;
            assert_eq!(count(&res, 200), 10, "{policy} {alg}");
            assert_eq!(count(&res, 429), 20, "{policy} {alg}");
        }
    }
}

/// IETF headers on every response, legacy headers on request, and the 429 body and Retry-After.
#[tokio::test]
async fn headers_and_refusal() {
    let up = Upstream::start(Behavior::Status(200)).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: rate-limiting\n    config: {{ second: 100, minute: 3, legacy_headers: true, algorithm: fixed-window, message: slow down }}\n",
        up.authority()
    ))
    .await;
    let c = client();
    let url = gw.url("main");
    for expect_remaining in [2, 1, 0] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h["ratelimit-policy"], "\"second\";q=100;w=1, \"minute\";q=3;w=60");
        let rl = h["ratelimit"].to_str().unwrap();
        assert!(rl.starts_with(&format!("\"minute\";r={expect_remaining};t=")), "{rl}");
        let t: u64 = rl.rsplit("t=").next().unwrap().parse().unwrap();
        assert!((1..=60).contains(&t), "{rl}");
        assert_eq!(h["x-ratelimit-limit-minute"], "3");
        assert_eq!(h["x-ratelimit-remaining-minute"], expect_remaining.to_string().as_str());
        assert_eq!(h["x-ratelimit-limit-second"], "100");
        assert_eq!(h["x-ratelimit-remaining"], expect_remaining.to_string().as_str());
    }
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert!(r.headers()["ratelimit"].to_str().unwrap().contains("r=0"));
    assert!(r.headers().contains_key("x-request-id"));
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"], "rate_limited");
    assert_eq!(b["message"], "slow down");
    assert_eq!(b["retry_after"], retry);
    assert_eq!(up.hits(), 3);
}

/// Keys: per consumer (falling back to the IP), per header; separate routes count separately
/// when the plugin is per route.
#[tokio::test]
async fn limit_by_consumer() {
    let up = Upstream::start(Behavior::Status(200)).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: key-auth\n    config: {{ anonymous: anon }}\n  - plugin: rate-limiting\n    config: {{ minute: 2, limit_by: [consumer] }}\nconsumers:\n  - username: alice\n    credentials: [{{ type: key-auth, key: alice-key-123 }}]\n  - username: bob\n    credentials: [{{ type: key-auth, key: bob-key-1234 }}]\n  - username: anon\n",
        up.authority()
    ))
    .await;
    let c = client();
    let url = gw.url("main");
    let st = |k: Option<&'static str>| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let mut b = c.get(&url);
            if let Some(k) = k {
                b = b.header("x-api-key", k);
            }
            b.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(
        [st(Some("alice-key-123")).await, st(Some("alice-key-123")).await, st(Some("alice-key-123")).await],
        [200, 200, 429]
    );
    assert_eq!(
        [st(Some("bob-key-1234")).await, st(Some("bob-key-1234")).await, st(Some("bob-key-1234")).await],
        [200, 200, 429]
    );
    assert_eq!(st(None).await, 200, "the anonymous consumer has its own counter");
}

/// Throttling: requests over the limit wait for room (up to max_wait) instead of failing.
#[tokio::test]
async fn throttling_delays_instead_of_refusing() {
    let up = Upstream::start(Behavior::Status(200)).await;
    let yaml = |wait: &str| {
        format!(
            "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: rate-limiting\n    config: {{ second: 4, algorithm: gcra, throttle: {{ max_wait: {wait} }} }}\n",
            up.authority()
        )
    };
    let gw = gateway(&yaml("2s")).await;
    // GCRA 4/s: a burst of 4 at once, then one every 250 ms.
    let t = Instant::now();
    let res = burst(&gw.url("main"), 8, ("x", "y")).await;
    let took = t.elapsed();
    assert_eq!(count(&res, 200), 8, "all wait for their turn");
    assert!(took >= Duration::from_millis(900), "the last waited about 1 s: {took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");

    // A short max_wait: those that would wait longer are refused.
    gw.reload(&base(&yaml("300ms")), &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = burst(&gw.url("main"), 8, ("x", "y")).await;
    let ok = count(&res, 200);
    assert!((5..=6).contains(&ok), "4 at once plus those within 300 ms: {ok}");
    assert_eq!(count(&res, 429), 8 - ok);
}

/// concurrency-limit: at most N in flight; more get 503; slots come back when requests end.
#[tokio::test]
async fn concurrency_limit_sheds_load() {
    let up = Upstream::start(Behavior::Delay(Duration::from_millis(400))).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: concurrency-limit\n    config: {{ max: 3 }}\n",
        up.authority()
    ))
    .await;
    let res = burst(&gw.url("main"), 8, ("x", "y")).await;
    assert_eq!(count(&res, 200), 3);
    assert_eq!(count(&res, 503), 5);
    let shed = res.iter().find(|r| r.0 == 503).unwrap();
    assert_eq!(shed.1["retry-after"], "1");
    let res = burst(&gw.url("main"), 3, ("x", "y")).await;
    assert_eq!(count(&res, 200), 3, "slots were given back");
}

/// Quotas per consumer with plans, across a month boundary moved by an injectable clock; usage
/// per consumer/route/day on the status listener and in Prometheus.
#[tokio::test]
async fn quota_across_a_period_boundary_and_usage() {
    // 2026-01-31T23:59:58Z
    let clock = Arc::new(gw_core::OffsetClock::starting_at(1_769_903_998_000));
    let up = Upstream::start(Behavior::Status(200)).await;
    for policy in ["local", "redis"] {
        clock.set(1_769_903_998_000);
        let id = run_id();
        let yaml = format!(
            "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\n  redis: {{ url: \"{REDIS}\" }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: orders\n    service: s\nplugins:\n  - plugin: key-auth\n  - plugin: quota\n    name: quota-{id}\n    config: {{ limit: 2, period: month, plans: {{ gold: 4 }}, policy: {policy} }}\nconsumers:\n  - username: alice\n    credentials: [{{ type: key-auth, key: alice-key-123 }}]\n  - username: goldie\n    groups: [gold]\n    credentials: [{{ type: key-auth, key: goldie-key-12 }}]\n",
            up.authority()
        );
        let gw = TestGateway::start_with_clock(&yaml, clock.clone()).await;
        let c = client();
        let url = gw.url("main");
        let get = |key: &'static str| {
            let c = c.clone();
            let url = url.clone();
            async move { c.get(&url).header("x-api-key", key).send().await.unwrap() }
        };
        let r = get("alice-key-123").await;
        assert_eq!(r.status(), 200, "{policy}");
        assert_eq!(r.headers()["x-quota-limit"], "2");
        assert_eq!(r.headers()["x-quota-remaining"], "1");
        let reset: u64 = r.headers()["x-quota-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=3).contains(&reset), "the period ends in ~2 s: {reset}");
        assert_eq!(get("alice-key-123").await.status(), 200);
        let r = get("alice-key-123").await;
        assert_eq!(r.status(), 429, "{policy}");
        assert!(r.headers().contains_key("retry-after"));
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"], "quota_exceeded");
        assert_eq!(b["reset"], "2026-02-01T00:00:00.000Z");
        // The gold plan allows 4.
        for _ in 0..4 {
            assert_eq!(get("goldie-key-12").await.status(), 200);
        }
        assert_eq!(get("goldie-key-12").await.status(), 429);
        // February: a new period.
        clock.advance(5_000);
        let r = get("alice-key-123").await;
        assert_eq!(r.status(), 200, "{policy}: a new month");
        assert_eq!(r.headers()["x-quota-remaining"], "1");

        if policy == "local" {
            // Usage: alice was served 3 times (2 on Jan 31, 1 on Feb 1) and refused once (not
            // usage); goldie was served 4 times and refused once on Jan 31.
            let (s, _, v) = get_json(&format!("{}/status/usage?consumer=alice", gw.status_url())).await;
            assert_eq!(s, 200);
            let rows = v["usage"].as_array().unwrap();
            assert_eq!(rows.len(), 2, "{v}");
            assert_eq!(
                (rows[0]["day"].as_str(), rows[0]["route"].as_str(), rows[0]["requests"].as_u64()),
                (Some("2026-01-31"), Some("orders"), Some(2))
            );
            assert_eq!(rows[0]["refused"].as_u64(), Some(1), "{v}");
            assert_eq!((rows[1]["day"].as_str(), rows[1]["requests"].as_u64()), (Some("2026-02-01"), Some(1)));
            let (_, _, v) = get_json(&format!("{}/status/usage?from=2026-01-31&to=2026-01-31", gw.status_url())).await;
            assert_eq!(v["usage"].as_array().unwrap().len(), 2, "{v}");
            let (s, _, _) = get_json(&format!("{}/status/usage?from=yesterday", gw.status_url())).await;
            assert_eq!(s, 400);
            let m = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
            assert!(
                m.contains(
                    "gatehouse_consumer_requests_total{consumer=\"goldie\",route=\"orders\",outcome=\"served\"} 4"
                ),
                "{m}"
            );
            assert!(
                m.contains(
                    "gatehouse_consumer_requests_total{consumer=\"goldie\",route=\"orders\",outcome=\"refused\"} 1"
                ),
                "{m}"
            );
        }
    }
}

/// `policy: redis` without `gateway.redis` is a configuration error; bad keys are located.
#[tokio::test]
async fn config_errors() {
    let up = Upstream::start(Behavior::Status(200)).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    for (cfg, needle) in [
        ("  - plugin: rate-limiting\n    config: { minute: 5, policy: redis }\n", "gateway.redis"),
        ("  - plugin: rate-limiting\n    config: { limit_by: [ip] }\n", "at least one"),
        ("  - plugin: rate-limiting\n    config: { minute: 5, limit_by: [cookie] }\n", "limit_by[0]"),
        ("  - plugin: rate-limiting\n    config: { minute: 5, algoritm: gcra }\n", "algoritm"),
        ("  - plugin: concurrency-limit\n    config: { max: 0 }\n", "max"),
    ] {
        let yaml = format!(
            "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n{cfg}",
            up.authority()
        );
        let err = gw.reload(&base(&yaml), &[]).await.unwrap_err();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

/// A redis-server of our own on an ephemeral port, to stop and restart.
struct OwnRedis {
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let r = OwnRedis { child: Some(child) };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {port}");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Redis stopped and restarted under load: fail-open passes traffic, fail-closed answers 503;
/// no request stalls; limiting resumes by itself when Redis is back.
#[tokio::test]
async fn redis_outage_under_load_both_modes() {
    let up = Upstream::start(Behavior::Status(200)).await;
    for mode in ["open", "closed"] {
        let port = free_port();
        let mut redis = OwnRedis::start(port);
        let gw = TestGateway::start(
            &gateway_yaml(
                &up,
                Some(&format!("redis://127.0.0.1:{port}/")),
                &format!(
                    "  - plugin: rate-limiting\n    config: {{ second: 1000, minute: 100000, policy: redis, failure_mode: {mode} }}\n"
                ),
            ),
            &[],
        )
        .await;
        let url = gw.url("main");
        let c = client();
        // Bounded load: 4 clients, each request timed.
        let phase = |n: usize| {
            let c = c.clone();
            let url = url.clone();
            async move {
                let mut statuses = Vec::new();
                let mut slowest = Duration::ZERO;
                for _ in 0..n {
                    let t = Instant::now();
                    let r = c.get(&url).send().await.expect("request");
                    slowest = slowest.max(t.elapsed());
                    statuses.push((r.status().as_u16(), r.headers().contains_key("ratelimit")));
                }
                (statuses, slowest)
            }
        };
        let (before, _) = phase(20).await;
        assert!(before.iter().all(|&(s, h)| s == 200 && h), "{mode}: Redis up: limited and counted");

        redis.stop();
        let outs = join_all((0..4).map(|_| phase(50))).await;
        let mut during = Vec::new();
        for (s, slowest) in outs {
            assert!(slowest < Duration::from_secs(1), "{mode}: a request stalled for {slowest:?}");
            during.extend(s);
        }
        if mode == "open" {
            assert!(during.iter().all(|&(s, _)| s == 200), "fail open: traffic passes");
            assert!(during.iter().filter(|&&(_, h)| !h).count() >= 190, "unlimited while Redis is down");
        } else {
            assert!(during.iter().filter(|&&(s, _)| s == 503).count() >= 190, "fail closed: 503");
        }
        let m = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
        assert!(m.contains(&format!("rate_limiting_store_fail_{mode}")), "counted in metrics");

        // Back: limiting resumes by itself.
        let _redis = OwnRedis::start(port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (s, _) = phase(1).await;
            if s[0] == (200, true) {
                break;
            }
            assert!(Instant::now() < deadline, "{mode}: did not recover: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Two gateway processes sharing Redis, driven concurrently (8 clients x 100 requests each per
/// node) against one limit of `limit` per minute: (admitted on a, on b, seconds taken).
async fn drive_two_processes(limit: usize, extra: &str) -> (usize, usize, f64) {
    let up = Upstream::start(Behavior::Status(200)).await;
    let id = run_id();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    crate::binary::write(
        &cfg,
        &format!(
            "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\n  redis: {{ url: \"{REDIS}\" }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: rate-limiting\n    name: shared-{id}\n    config: {{ minute: {limit}, policy: redis, algorithm: sliding-window, limit_by: [route]{extra} }}\n",
            up.authority()
        ),
    );
    let (_a, addr_a) = crate::binary::Proc::start(&cfg).await;
    let (_b, addr_b) = crate::binary::Proc::start(&cfg).await;
    let c = client();
    let drive = |addr: std::net::SocketAddr| {
        let c = c.clone();
        async move {
            let per_client = join_all((0..8).map(|_| {
                let c = c.clone();
                async move {
                    let mut ok = 0;
                    for _ in 0..100 {
                        if c.get(format!("http://{addr}/")).send().await.unwrap().status() == 200 {
                            ok += 1;
                        }
                    }
                    ok
                }
            }))
            .await;
            per_client.into_iter().sum::<usize>()
        }
    };
    let t = Instant::now();
    let (a, b) = tokio::join!(drive(addr_a), drive(addr_b));
    (a, b, t.elapsed().as_secs_f64())
}

/// Cluster accuracy: two gateway processes sharing Redis admit the configured total within 1%.
#[tokio::test]
async fn two_processes_share_one_limit() {
    let limit = 600;
    let (a, b, secs) = drive_two_processes(limit, "").await;
    let total = a + b;
    println!("atomic mode: two nodes, limit {limit}/minute, 1600 requests in {secs:.2}s: admitted {a} + {b} = {total}");
    let err = (total as f64 - limit as f64).abs() / limit as f64;
    assert!(err <= 0.01, "admitted {total} for a limit of {limit} ({:.2}% off)", err * 100.0);
    assert!(a > 100 && b > 100, "both nodes admitted traffic: {a} {b}");
}

/// Batched mode: never under the limit, and over it by at most what two nodes can admit in
/// about one synchronisation interval each.
#[tokio::test]
async fn batched_mode_two_processes() {
    let limit = 600;
    let interval = 0.05;
    let (a, b, secs) = drive_two_processes(limit, ", sync_interval: 50ms").await;
    let total = a + b;
    let rate = 1600.0 / secs;
    let bound = limit as f64 + 2.0 * rate * interval * 2.0;
    println!(
        "batched mode (50ms): two nodes, limit {limit}/minute, 1600 requests in {secs:.2}s ({rate:.0} req/s): admitted {a} + {b} = {total} ({:+.1}%)",
        (total as f64 - limit as f64) * 100.0 / limit as f64
    );
    assert!(total >= limit, "admitted {total} < {limit}");
    assert!((total as f64) <= bound, "admitted {total}, more than the bound {bound:.0}");
}

/// Redis over TLS (`rediss://`), the server certificate verified against a CA file: a
/// redis-server of our own with a certificate generated here.
#[tokio::test]
async fn redis_over_tls() {
    let (_dir, cert, key, ca_file) = localhost_tls_files("redis-ca");
    let port = free_port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-cert-file", cert.to_str().unwrap(), "--tls-key-file", key.to_str().unwrap()])
        .args(["--tls-ca-cert-file", ca_file.to_str().unwrap(), "--tls-auth-clients", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let mut redis = OwnRedis { child: Some(child) };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let up = Upstream::start(Behavior::Status(200)).await;
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\n  redis: {{ url: \"rediss://localhost:{port}/\", ca_file: {}, timeout: 1s }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: rate-limiting\n    config: {{ minute: 3, policy: redis, failure_mode: closed }}\n",
        ca_file.display(),
        up.authority()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let res = burst(&gw.url("main"), 5, ("x", "y")).await;
    redis.stop();
    assert_eq!(count(&res, 200), 3, "{:?}", res.iter().map(|r| (r.0, r.2.clone())).collect::<Vec<_>>());
    assert_eq!(count(&res, 429), 2);
}

/// A Redis that requires a password: the URL's password is used; a wrong one is a store
/// failure (here fail-closed: 503), never a crash.
#[tokio::test]
async fn redis_with_password() {
    let port = free_port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--requirepass", "s3cret-pass"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    let _redis = OwnRedis { child: Some(child) };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let up = Upstream::start(Behavior::Status(200)).await;
    for (pw, expect_ok) in [("s3cret-pass", 2), ("wrong", 0)] {
        let gw = TestGateway::start(
            &gateway_yaml(
                &up,
                Some(&format!("redis://:{pw}@127.0.0.1:{port}/")),
                "  - plugin: rate-limiting\n    config: { minute: 2, policy: redis, failure_mode: closed }\n",
            ),
            &[],
        )
        .await;
        let res = burst(&gw.url("main"), 4, ("x", "y")).await;
        assert_eq!(count(&res, 200), expect_ok, "password {pw}");
        if expect_ok == 0 {
            assert_eq!(count(&res, 503), 4);
        } else {
            assert_eq!(count(&res, 429), 2);
        }
    }
}
