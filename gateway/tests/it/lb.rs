//! Load balancing, health checks, circuit breaking, retries and connection caps, end to end.

use std::time::{Duration, Instant};

use crate::support::*;

async fn upstream_of(url: &str) -> String {
    let r = client().get(url).send().await.expect("request");
    r.headers()
        .get("x-upstream")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_else(|| r.status().to_string())
}

fn count(v: &[String], x: &str) -> usize {
    v.iter().filter(|s| *s == x).count()
}

/// Weighted round robin splits sequential traffic exactly by weight.
#[tokio::test]
async fn weighted_round_robin() {
    let a = Upstream::start(Behavior::Echo("a")).await;
    let b = Upstream::start(Behavior::Echo("b")).await;
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    targets:\n      - {{ address: \"{}\", weight: 300 }}\n      - {{ address: \"{}\", weight: 100 }}\nservices:\n  - name: s\n    upstream: u\nroutes:\n  - name: r\n    service: s\n",
        a.authority(),
        b.authority()
    ))
    .await;
    let mut seen = Vec::new();
    for _ in 0..400 {
        seen.push(upstream_of(&gw.url("main")).await);
    }
    assert_eq!((count(&seen, "a"), count(&seen, "b")), (300, 100));
}

/// Consistent hashing on a header sends one key to one target, and spreads keys.
#[tokio::test]
async fn consistent_hash_on_header() {
    let ups = [
        Upstream::start(Behavior::Echo("a")).await,
        Upstream::start(Behavior::Echo("b")).await,
        Upstream::start(Behavior::Echo("c")).await,
    ];
    let targets: String = ups.iter().map(|u| format!("      - address: \"{}\"\n", u.authority())).collect();
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    algorithm: consistent-hash\n    hash_on: {{ header: x-user }}\n    targets:\n{targets}services:\n  - name: s\n    upstream: u\nroutes:\n  - name: r\n    service: s\n"
    ))
    .await;
    let mut by_user = std::collections::HashMap::new();
    for round in 0..3 {
        for u in 0..30 {
            let r = client().get(gw.url("main")).header("x-user", format!("user-{u}")).send().await.unwrap();
            let up = r.headers()["x-upstream"].to_str().unwrap().to_string();
            let prev = by_user.insert(u, up.clone());
            if round > 0 {
                assert_eq!(prev.as_deref(), Some(up.as_str()), "user-{u} moved");
            }
        }
    }
    let distinct: std::collections::HashSet<_> = by_user.values().collect();
    assert_eq!(distinct.len(), 3, "30 keys should reach all 3 targets");
}

/// Least connections avoids a target that is busy with slow requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_connections_avoids_busy_target() {
    let slow = Upstream::start(Behavior::Delay(Duration::from_millis(400))).await;
    let fast = Upstream::start(Behavior::Echo("fast")).await;
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    algorithm: least-connections\n    targets:\n      - address: \"{}\"\n      - address: \"{}\"\nservices:\n  - name: s\n    upstream: u\nroutes:\n  - name: r\n    service: s\n",
        slow.authority(),
        fast.authority()
    ))
    .await;
    let url = gw.url("main");
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { upstream_of(&url).await }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    assert!(count(&seen, "fast") >= 30, "least-connections sent {} of 40 to the fast target", count(&seen, "fast"));
}

/// A killed target is ejected after consecutive failures; no request fails meanwhile (connect
/// failures are retried on the other target), and /status/upstreams shows it.
#[tokio::test]
async fn killed_upstream_is_ejected() {
    let a = Upstream::start(Behavior::Echo("a")).await;
    let b = Upstream::start(Behavior::Echo("b")).await;
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    targets:\n      - address: \"{}\"\n      - address: \"{}\"\n    health_checks:\n      passive: {{ consecutive_failures: 2, ejection_time: 30s }}\nservices:\n  - name: s\n    upstream: u\n    retries: {{ attempts: 1 }}\nroutes:\n  - name: r\n    service: s\n",
        a.authority(),
        b.authority()
    ))
    .await;
    for _ in 0..4 {
        upstream_of(&gw.url("main")).await;
    }
    b.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(upstream_of(&gw.url("main")).await);
    }
    assert_eq!(count(&seen, "a"), 20, "every request must succeed on the live target: {seen:?}");
    let (_, _, v) = get_json(&format!("{}/status/upstreams", gw.status_url())).await;
    let targets = v["upstreams"][0]["targets"].as_array().unwrap().clone();
    let dead = targets.iter().find(|t| t["target"] == b.authority().as_str()).unwrap();
    assert_eq!(dead["healthy"], false, "{v}");
    let metrics = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
    let line = format!("gatehouse_upstream_target_healthy{{upstream=\"u\",target=\"{}\"}} 0", b.authority());
    assert!(metrics.contains(&line), "{line} missing");
}

/// Active probes mark a failing target unhealthy and bring it back when it recovers.
#[tokio::test]
async fn active_health_checks() {
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = healthy.clone();
    let flaky = Upstream::start(Behavior::Custom(std::sync::Arc::new(move |req| {
        let h = h.clone();
        Box::pin(async move {
            if req.uri().path() == "/health" && !h.load(std::sync::atomic::Ordering::SeqCst) {
                let mut r = http::Response::new(gw_test_util::full(""));
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                return r;
            }
            gw_test_util::echo("flaky", req).await
        })
    })))
    .await;
    let other = Upstream::start(Behavior::Echo("other")).await;
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    targets:\n      - address: \"{}\"\n      - address: \"{}\"\n    health_checks:\n      active: {{ path: /health, interval: 50ms, timeout: 200ms, healthy_threshold: 2, unhealthy_threshold: 2 }}\nservices:\n  - name: s\n    upstream: u\nroutes:\n  - name: r\n    service: s\n",
        flaky.authority(),
        other.authority()
    ))
    .await;
    let url = gw.url("main");
    let share = |n: usize| {
        let url = url.clone();
        async move {
            let mut seen = Vec::new();
            for _ in 0..n {
                seen.push(upstream_of(&url).await);
            }
            count(&seen, "flaky")
        }
    };
    assert!(share(20).await > 0);
    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(share(20).await, 0, "unhealthy target still gets traffic");
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(share(20).await > 0, "recovered target gets no traffic");
}

/// The circuit opens after a failure ratio and answers 503 without calling the upstream.
#[tokio::test]
async fn circuit_breaker_opens() {
    let up = Upstream::start(Behavior::Status(503)).await;
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    targets:\n      - address: \"{}\"\n    circuit_breaker: {{ failure_ratio: 0.5, min_requests: 5, window: 10s, open_duration: 30s }}\nservices:\n  - name: s\n    upstream: u\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    for _ in 0..5 {
        let r = client().get(gw.url("main")).send().await.unwrap();
        assert_eq!(r.status(), 503);
    }
    let hits = up.hits();
    let (status, _, v) = get_json(&gw.url("main")).await;
    assert_eq!(status, 503);
    assert_eq!(v["error"], "circuit_open");
    assert_eq!(up.hits(), hits, "an open circuit does not call the upstream");
}

/// Idempotent requests are retried on another target after a 503; POST with a body is not.
#[tokio::test]
async fn retries_only_when_safe() {
    let bad = Upstream::start(Behavior::Status(503)).await;
    let good = Upstream::start(Behavior::Echo("good")).await;
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    targets:\n      - address: \"{}\"\n      - address: \"{}\"\nservices:\n  - name: s\n    upstream: u\n    retries: {{ attempts: 1, on_statuses: [503] }}\nroutes:\n  - name: r\n    service: s\n",
        bad.authority(),
        good.authority()
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(upstream_of(&gw.url("main")).await, "good");
    }
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = client().post(gw.url("main")).body("payload").send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.contains(&503), "a POST with a body must not be retried: {statuses:?}");
}

/// The retry budget caps retries: with no budget, failures are not retried.
#[tokio::test]
async fn retry_budget_caps_retries() {
    let bad = Upstream::start(Behavior::Status(503)).await;
    let good = Upstream::start(Behavior::Echo("good")).await;
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    targets:\n      - address: \"{}\"\n      - address: \"{}\"\nservices:\n  - name: s\n    upstream: u\n    retries: {{ attempts: 1, budget_ratio: 0.0, budget_min_per_second: 0 }}\nroutes:\n  - name: r\n    service: s\n",
        bad.authority(),
        good.authority()
    ))
    .await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(upstream_of(&gw.url("main")).await);
    }
    assert_eq!(
        count(&seen, "503 Service Unavailable"),
        5,
        "no budget: every request to the bad target fails: {seen:?}"
    );
}

/// max_connections_per_target turns excess concurrency into 503 upstream_overloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_cap() {
    let slow = Upstream::start(Behavior::Delay(Duration::from_millis(500))).await;
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    targets:\n      - address: \"{}\"\n    max_connections_per_target: 2\nservices:\n  - name: s\n    upstream: u\nroutes:\n  - name: r\n    service: s\n",
        slow.authority()
    ))
    .await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let url = gw.url("main");
        tasks.push(tokio::spawn(async move { get_json(&url).await }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        let (s, _, v) = task.await.unwrap();
        codes.push((s.as_u16(), v["error"].as_str().unwrap_or("").to_string()));
    }
    assert_eq!(codes.iter().filter(|c| c.0 == 200).count(), 2, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| c.0 == 503 && c.1 == "upstream_overloaded").count(), 3, "{codes:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
}

/// Active probes go through the gateway's own HTTP/1.1 client on connections of their own:
/// a probe's connection is never pooled (nor used by traffic), even when the upstream would
/// keep it open.
#[tokio::test]
async fn probe_connections_are_never_pooled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // (connection number, request line) of every request.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(usize, String)>::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut s, _)) = l.accept().await {
            n += 1;
            let (id, log) = (n, log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    while let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_string();
                        buf.drain(..p + 4);
                        let line = head.lines().next().unwrap_or("").to_string();
                        log.lock().unwrap().push((id, line));
                        // Keep-alive whatever the request said.
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
            });
        }
    });
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    targets:\n      - address: \"{addr}\"\n    health_checks:\n      active: {{ path: /health, interval: 50ms, timeout: 500ms }}\nservices:\n  - name: s\n    upstream: u\nroutes:\n  - name: r\n    service: s\n"
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let r = client().get(format!("{}/traffic", gw.url("main"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let seen = seen.lock().unwrap().clone();
    let probes: Vec<usize> = seen.iter().filter(|(_, l)| l.starts_with("GET /health ")).map(|(c, _)| *c).collect();
    let traffic: Vec<usize> = seen.iter().filter(|(_, l)| l.starts_with("GET /traffic ")).map(|(c, _)| *c).collect();
    assert!(probes.len() >= 2 && traffic.len() == 5, "{seen:?}");
    for c in &probes {
        assert_eq!(seen.iter().filter(|(id, _)| id == c).count(), 1, "a probe connection carried more: {seen:?}");
        assert!(!traffic.contains(c), "traffic used a probe's connection: {seen:?}");
    }
}
