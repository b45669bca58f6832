//! `/metrics` content negotiation (checked with the Python `prometheus_client` parsers), retry
//! and circuit-breaker metrics driven by a real failing upstream, and sampled warning lines for
//! expected refusals (the `gatehouse` binary's stderr).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::support::*;

/// What Prometheus sends by default.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Parse `body` with `prometheus_client`'s parser for `format` (`openmetrics` or `text`);
/// returns the family names and types it saw, one `name type` per line.
async fn parse_with_prometheus_client(format: &str, body: &str) -> String {
    let code = r#"
import sys
fmt = sys.argv[1]
text = sys.stdin.read()
if fmt == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(text):
    print(f.name, f.type, len(f.samples))
"#;
    let mut child = Command::new("python3")
        .args(["-c", code, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(body.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client ({format}) refused the exposition: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// OpenMetrics only to clients that ask for it (Prometheus by default does); the Prometheus
/// text format 0.0.4 to `text/plain`, `*/*` and clients without `Accept`; each parses with the
/// reference parser for its format.
#[tokio::test]
async fn metrics_negotiate_openmetrics_or_prometheus_text() {
    let up = Upstream::start(Behavior::Status(200)).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    client().get(gw.url("main")).send().await.unwrap();
    let url = format!("{}/metrics", gw.status_url());
    let cases: [(Option<&str>, bool); 5] = [
        (Some("text/plain;version=0.0.4"), false),
        (Some(PROMETHEUS_ACCEPT), true),
        (Some("application/openmetrics-text; version=1.0.0"), true),
        (Some("*/*"), false),
        (None, false),
    ];
    for (accept, openmetrics) in cases {
        let mut req = client().get(&url);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.unwrap();
        let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
        let body = r.text().await.unwrap();
        if openmetrics {
            assert_eq!(ctype, "application/openmetrics-text; version=1.0.0; charset=utf-8", "{accept:?}");
            assert!(body.ends_with("# EOF\n"), "{accept:?}");
            let families = parse_with_prometheus_client("openmetrics", &body).await;
            assert!(families.contains("gatehouse_http_requests counter"), "{families}");
        } else {
            assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
            assert!(!body.contains("# EOF") && !body.contains("# UNIT"), "{accept:?}:\n{body}");
            assert!(body.contains("# TYPE gatehouse_http_requests_total counter\n"), "{body}");
            let families = parse_with_prometheus_client("text", &body).await;
            // The 0.0.4 parser names counters without `_total` when their TYPE line names the
            // samples: typed as counters, not `unknown`.
            assert!(families.contains("gatehouse_http_requests counter"), "{families}");
            assert!(!families.contains(" unknown "), "every family typed: {families}");
        }
    }
}

/// One `name{labels} value` sample of `/metrics` (Prometheus text), 0 when absent.
async fn sample(gw: &TestGateway, prefix: &str) -> f64 {
    let m = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
    m.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// A real retry (a 503 retried on the other target) is counted per service and upstream; a
/// breaker that opens, goes half-open and closes again is shown as a state gauge per upstream
/// and counted per transition.
#[tokio::test]
async fn retries_and_circuit_breaker_states_are_measured() {
    let failing = Arc::new(AtomicBool::new(true));
    let flaky = |f: Arc<AtomicBool>| {
        Behavior::Custom(Arc::new(move |_req| {
            let status = if f.load(Ordering::SeqCst) { 503 } else { 200 };
            Box::pin(async move {
                let mut r = http::Response::new(gw_test_util::full(""));
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                r
            })
        }))
    };
    let (one, two) = (Upstream::start(flaky(failing.clone())).await, Upstream::start(flaky(failing.clone())).await);
    let yaml = format!(
        "upstreams:\n  - name: pool\n    targets: [{{ address: \"{}\" }}, {{ address: \"{}\" }}]\n    circuit_breaker: {{ failure_ratio: 0.5, min_requests: 4, window: 10s, open_duration: 1s, half_open_requests: 1 }}\nservices:\n  - name: api\n    upstream: pool\n    retries: {{ attempts: 1, budget_min_per_second: 1000 }}\nroutes:\n  - name: r\n    service: api\n",
        one.authority(),
        two.authority()
    );
    let gw = gateway(&yaml).await;
    let retries = "gatehouse_upstream_retries_total{service=\"api\",upstream=\"pool\"}";
    let state = |s: &str| format!("gatehouse_upstream_circuit_state{{upstream=\"pool\",state=\"{s}\"}}");
    let entered = |s: &str| format!("gatehouse_upstream_circuit_transitions_total{{upstream=\"pool\",state=\"{s}\"}}");
    assert_eq!(sample(&gw, &state("closed")).await, 1.0, "a new breaker is closed");
    assert_eq!(sample(&gw, retries).await, 0.0);

    // Two GETs: each a 503, retried once (4 attempts): the circuit opens on the 4th failure.
    for _ in 0..2 {
        assert_eq!(client().get(gw.url("main")).send().await.unwrap().status(), 503);
    }
    assert_eq!(sample(&gw, retries).await, 2.0, "each GET retried once");
    assert_eq!(sample(&gw, &state("open")).await, 1.0);
    assert_eq!(sample(&gw, &state("closed")).await, 0.0);
    assert_eq!(sample(&gw, &entered("open")).await, 1.0);
    let r = client().get(gw.url("main")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("circuit_open"));

    // After open_duration the state is half-open by time alone; a successful trial closes it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(sample(&gw, &state("half_open")).await, 1.0, "shown half-open once open_duration passed");
    failing.store(false, Ordering::SeqCst);
    assert_eq!(client().get(gw.url("main")).send().await.unwrap().status(), 200);
    assert_eq!(sample(&gw, &state("closed")).await, 1.0);
    assert_eq!(sample(&gw, &entered("half_open")).await, 1.0);
    assert_eq!(sample(&gw, &entered("closed")).await, 1.0);
    assert_eq!(sample(&gw, retries).await, 2.0, "a success is not retried");
}

/// Expected refusals (circuit open, rate-limit store failing closed, no healthy upstream),
/// 1,000 of each through the `gatehouse` binary: every one is counted in the metrics, and
/// stderr gets a handful of warning lines (one per kind per second, with the number left out).
#[tokio::test]
async fn expected_refusals_are_counted_and_sampled_in_the_log() {
    let up = Upstream::start(Behavior::Status(503)).await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let status_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(
        &cfg,
        format!(
            "gateway:\n  status_listener: 127.0.0.1:{status_port}\n  access_log: {{ enabled: false }}\n  redis: {{ url: \"redis://127.0.0.1:{dead_port}/\", timeout: 100ms }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nupstreams:\n  - name: breaks\n    targets: [{{ address: \"{up}\" }}]\n    circuit_breaker: {{ failure_ratio: 0.5, min_requests: 2, window: 10s, open_duration: 60s }}\n  - name: drained\n    targets: [{{ address: \"{up}\", weight: 0 }}]\nservices:\n  - name: breaks\n    upstream: breaks\n    retries: {{ attempts: 0 }}\n  - name: drained\n    upstream: drained\n  - name: ok\n    type: static\nroutes:\n  - name: breaks\n    service: breaks\n    paths: [\"/breaks\"]\n  - name: drained\n    service: drained\n    paths: [\"/drained\"]\n  - name: limited\n    service: ok\n    paths: [\"/limited\"]\nplugins:\n  - plugin: rate-limiting\n    route: limited\n    config: {{ second: 100, policy: redis, failure_mode: closed }}\n",
            up = up.authority()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gatehouse");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = tx.send(l);
        }
    });
    let addr = loop {
        let l = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("started").expect("stderr");
        if l.contains("\"listening\"") && l.contains("\"main\"") {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            break v["addr"].as_str().unwrap().to_string();
        }
    };
    // Open the circuit: two failed requests.
    for _ in 0..2 {
        client().get(format!("http://{addr}/breaks")).send().await.unwrap();
    }
    let started = Instant::now();
    let c = client();
    for path in ["breaks", "limited", "drained"] {
        let per_client = join_all((0..8).map(|_| {
            let (c, url) = (c.clone(), format!("http://{addr}/{path}"));
            async move {
                let mut codes = Vec::new();
                for _ in 0..125 {
                    let r = c.get(&url).send().await.unwrap();
                    codes.push((r.status().as_u16(), r.text().await.unwrap()));
                }
                codes
            }
        }))
        .await;
        let all: Vec<_> = per_client.into_iter().flatten().collect();
        assert_eq!(all.len(), 1000);
        assert!(all.iter().all(|(s, _)| *s == 503), "{path}: {:?}", &all[..3]);
    }
    let secs = started.elapsed().as_secs_f64();
    // Counted one by one.
    let m = client().get(format!("http://127.0.0.1:{status_port}/metrics")).send().await.unwrap().text().await.unwrap();
    for code in ["circuit_open", "dependency_unavailable", "no_healthy_upstream"] {
        let line = format!("gatehouse_http_errors_total{{code=\"{code}\"}} 1000");
        assert!(m.contains(&line), "{line} in\n{m}");
    }
    // Logged a handful of times: at most one line per kind and second (plus the first).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill().await;
    let mut warned = Vec::new();
    while let Ok(l) = rx.try_recv() {
        if l.contains("\"WARN\"") {
            warned.push(l);
        }
    }
    // Per second: a line per kind (3) and the rate-limiting plugin's own store-failure line;
    // and "circuit opened" once.
    let bound = 4.0 * (secs.ceil() + 1.0) + 1.0;
    println!("3,000 refusals in {secs:.2}s: {} warning lines (bound {bound})", warned.len());
    assert!(warned.len() as f64 <= bound, "{} lines:\n{}", warned.len(), warned.join("\n"));
    for code in ["circuit_open", "dependency_unavailable", "no_healthy_upstream"] {
        let n = warned.iter().filter(|l| l.contains("request refused") && l.contains(code)).count();
        assert!(n >= 1, "{code}: a sampled line is written:\n{}", warned.join("\n"));
    }
}
