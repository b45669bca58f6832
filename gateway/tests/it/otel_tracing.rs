//! OpenTelemetry tracing end to end: a real OTLP receiver (Python, grpcio and the official
//! `opentelemetry-proto` definitions, `tests/python/otlp_receiver.py`) takes the gateway's
//! spans over OTLP/gRPC or OTLP/HTTP and dumps them as JSON; the tests check span trees,
//! attributes, propagation to upstreams and through two gateways, sampling, per-route off and
//! a dead collector.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Child;

use crate::support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The OTLP receiver, running until dropped.
struct Receiver {
    _child: Child,
    grpc: u16,
    http: u16,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::start_with(&[]).await
    }

    /// With more command-line arguments (`--tls CERT KEY`).
    async fn start_with(args: &[&str]) -> Receiver {
        let script = format!("{}/tests/python/otlp_receiver.py", env!("CARGO_MANIFEST_DIR"));
        let mut all = vec![script.as_str()];
        all.extend_from_slice(args);
        let (child, mut lines) = piped(&all);
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("receiver started")
            .unwrap()
            .expect("receiver printed its ports");
        let mut ports = line.split_whitespace().map(|p| p.parse::<u16>().unwrap());
        Receiver { grpc: ports.next().unwrap(), http: ports.next().unwrap(), _child: child }
    }

    async fn spans(&self) -> Vec<Value> {
        let (_, _, v) = get_json(&format!("http://127.0.0.1:{}/spans", self.http)).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// The spans of `trace`, once `n` have arrived (panics after 10 s).
    async fn trace(&self, trace: &str, n: usize) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Value> = self.spans().await.into_iter().filter(|s| s["trace_id"] == trace).collect();
            if spans.len() >= n {
                return spans;
            }
            assert!(Instant::now() < until, "{} of {n} spans of trace {trace} arrived: {spans:#?}", spans.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Inject faults into the next exports (`POST /faults`, see the receiver).
    async fn faults(&self, json: &'static str) {
        let r = client().post(format!("http://127.0.0.1:{}/faults", self.http)).body(json).send().await.unwrap();
        assert_eq!(r.status(), 204);
    }

    /// `GET /exports`: export requests per transport, injected failures, headers, attempt times.
    async fn exports(&self) -> Value {
        get_json(&format!("http://127.0.0.1:{}/exports", self.http)).await.2
    }

    /// `gateway.tracing` for this receiver.
    fn tracing(&self, protocol: &str, extra: &str) -> String {
        let port = if protocol == "grpc" { self.grpc } else { self.http };
        format!(
            "{{ enabled: true, protocol: {protocol}, endpoint: \"http://127.0.0.1:{port}\", export_interval: 50ms{extra} }}"
        )
    }
}

/// A config with `gateway.tracing: <tracing>` and `body`.
fn traced(tracing: &str, body: &str) -> String {
    format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\n  tracing: {tracing}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{body}"
    )
}

fn one_service(upstream: &str) -> String {
    format!(
        "services:\n  - name: s\n    url: http://{upstream}\nroutes:\n  - name: users\n    service: s\n    paths: [\"/users/{{id}}\"]\n"
    )
}

fn traceparent(sampled: bool) -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-{}", if sampled { "01" } else { "00" })
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut b = client().get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = b.send().await.expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A request to `gw`'s `/users/1` in trace `trace` (sampled, the client span its parent),
/// answered 200.
async fn send_traced(gw: &TestGateway, trace: &str) {
    let tp = format!("00-{trace}-{CLIENT_SPAN}-01");
    let (s, _) = get_with(&format!("{}/users/1", gw.url("main")), &[("traceparent", &tp)]).await;
    assert_eq!(s, 200);
}

/// `traceparent` → (trace id, parent span id, flags).
fn parse_tp(v: &Value) -> (String, String, String) {
    let s = v.as_str().unwrap_or_else(|| panic!("no traceparent: {v}"));
    let p: Vec<&str> = s.split('-').collect();
    assert_eq!(p.len(), 4, "{s}");
    assert_eq!(p[0], "00");
    (p[1].to_string(), p[2].to_string(), p[3].to_string())
}

fn kind<'a>(spans: &'a [Value], kind: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["kind"] == kind).collect()
}

async fn metric(gw: &TestGateway, name: &str) -> f64 {
    let m = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Over OTLP/gRPC: a request with a client trace context gives one SERVER span (child of the
/// client's span) with the HTTP semantic-convention attributes, and one CLIENT span per
/// upstream attempt (numbered, the retry marked) under it; the upstream that answered saw the
/// same trace with its attempt's span as parent.
#[tokio::test]
async fn server_span_and_attempt_spans_over_grpc() {
    let recv = Receiver::start().await;
    // The first request anywhere gets a 503, the retry (on the other target) an echo.
    let first = Arc::new(AtomicUsize::new(0));
    let handler = |first: Arc<AtomicUsize>| -> Behavior {
        Behavior::Custom(Arc::new(move |req| {
            let first = first.clone();
            Box::pin(async move {
                if first.fetch_add(1, Ordering::SeqCst) == 0 {
                    let mut r = http::Response::new(gw_test_util::full(bytes::Bytes::new()));
                    *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    r
                } else {
                    gw_test_util::echo("ok", req).await
                }
            })
        }))
    };
    let a = Upstream::start(handler(first.clone())).await;
    let b = Upstream::start(handler(first.clone())).await;
    let body = format!(
        "upstreams:\n  - name: u\n    targets:\n      - address: \"{}\"\n      - address: \"{}\"\nservices:\n  - name: s\n    upstream: u\n    retries: {{ attempts: 1, on_statuses: [503] }}\nroutes:\n  - name: users\n    service: s\n    paths: [\"/users/{{id}}\"]\n",
        a.authority(),
        b.authority()
    );
    // One data-plane worker: idle connections are pooled per worker.
    let yaml = traced(&recv.tracing("grpc", ", service_name: edge"), &body)
        .replace("gateway:\n", "gateway:\n  worker_threads: 1\n");
    let gw = TestGateway::start(&yaml, &[]).await;
    let tp = traceparent(true);
    let (s, v) =
        get_with(&format!("{}/users/7?x=1", gw.url("main")), &[("traceparent", &tp), ("tracestate", "vendor=abc")])
            .await;
    assert_eq!(s, 200, "{v}");
    let spans = recv.trace(CLIENT_TRACE, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = kind(&spans, "SPAN_KIND_SERVER");
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(server["parent_span_id"], CLIENT_SPAN, "the server span is a child of the client's");
    assert_eq!(server["name"], "GET /users/{id}");
    assert_eq!(server["service"], "edge");
    assert_eq!(server["via"], "grpc");
    let at = &server["attributes"];
    assert_eq!(at["http.request.method"], "GET");
    assert_eq!(at["url.path"], "/users/7");
    assert_eq!(at["http.route"], "/users/{id}");
    assert_eq!(at["http.response.status_code"], 200);
    assert_eq!(at["server.address"], "127.0.0.1");
    assert_eq!(at["client.address"], "127.0.0.1");
    assert_eq!(at["gatehouse.route"], "users");
    assert_eq!(at["gatehouse.service"], "s");
    assert!(at.get("error.type").is_none(), "{at}");

    let mut attempts = kind(&spans, "SPAN_KIND_CLIENT");
    attempts.sort_by_key(|s| s["attributes"]["gatehouse.attempt"].as_i64());
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for (i, c) in attempts.iter().enumerate() {
        assert_eq!(c["parent_span_id"], server["span_id"], "attempts are children of the server span");
        assert_eq!(c["name"], "GET");
        assert_eq!(c["attributes"]["gatehouse.attempt"], i as i64);
        assert_eq!(c["attributes"]["gatehouse.connection"], "new");
        assert_eq!(c["attributes"]["server.address"], "127.0.0.1");
    }
    assert_eq!(attempts[0]["attributes"]["http.response.status_code"], 503);
    assert_eq!(attempts[0]["attributes"]["error.type"], "503");
    assert!(attempts[0]["attributes"].get("http.request.resend_count").is_none());
    assert_eq!(attempts[1]["attributes"]["http.response.status_code"], 200);
    assert_eq!(attempts[1]["attributes"]["http.request.resend_count"], 1);
    let targets: Vec<String> =
        attempts.iter().map(|c| format!("127.0.0.1:{}", c["attributes"]["server.port"].as_i64().unwrap())).collect();
    assert_ne!(targets[0], targets[1], "the retry went to the other target");
    assert!(targets.contains(&a.authority()) && targets.contains(&b.authority()));

    // The upstream that answered saw the trace, its parent being the second attempt's span,
    // and the client's tracestate.
    let (trace, parent, flags) = parse_tp(&v["headers"]["traceparent"]);
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "01"));
    assert_eq!(parent, attempts[1]["span_id"].as_str().unwrap());
    assert_eq!(v["headers"]["tracestate"], "vendor=abc");

    // The next two requests go to one target each (round robin): the one that answered 200
    // kept its connection in the pool, so one of them reuses it.
    for i in 8..10 {
        let (s, _) = get_with(&format!("{}/users/{i}", gw.url("main")), &[("traceparent", &tp)]).await;
        assert_eq!(s, 200);
    }
    let spans = recv.trace(CLIENT_TRACE, 7).await;
    let reused = spans
        .iter()
        .filter(|s| s["kind"] == "SPAN_KIND_CLIENT" && s["attributes"]["gatehouse.connection"] == "reused")
        .count();
    assert!(reused >= 1, "{spans:#?}");
}

/// Over OTLP/HTTP (protobuf): a request that matches no route is traced (404, `no_route`), and
/// so is one refused by a plugin (401); a new trace is started for a client without one, and the
/// access log line carries its trace and span ids.
#[tokio::test]
async fn refused_requests_are_traced_over_http_protobuf() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ target: \"{}\" }}\n  tracing: {}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: open\n    service: s\n    paths: [\"/open/*\"]\n  - name: locked\n    service: s\n    paths: [\"/locked\"]\nplugins:\n  - plugin: key-auth\n    route: locked\n",
        log.display(),
        recv.tracing("http", ""),
        up.authority()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let tp = traceparent(true);
    let (s, _) = get_with(&format!("{}/nowhere", gw.url("main")), &[("traceparent", &tp)]).await;
    assert_eq!(s, 404);
    let spans = recv.trace(CLIENT_TRACE, 1).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let sp = &spans[0];
    assert_eq!(sp["via"], "http");
    assert_eq!(sp["kind"], "SPAN_KIND_SERVER");
    assert_eq!(sp["name"], "GET");
    assert_eq!(sp["parent_span_id"], CLIENT_SPAN);
    assert_eq!(sp["attributes"]["http.response.status_code"], 404);
    assert_eq!(sp["attributes"]["error.type"], "no_route");
    assert_eq!(sp["attributes"]["url.path"], "/nowhere");
    assert!(sp["attributes"].get("http.route").is_none());

    // Refused by key-auth, without a client trace context: a new trace.
    let before: Vec<Value> = recv.spans().await;
    let (s, _) = get_with(&format!("{}/locked", gw.url("main")), &[]).await;
    assert_eq!(s, 401);
    let until = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let all = recv.spans().await;
        if let Some(s) = all.iter().skip(before.len()).find(|s| s["attributes"]["http.route"] == "/locked") {
            break s.clone();
        }
        assert!(Instant::now() < until, "no span for the 401: {all:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused["attributes"]["http.response.status_code"], 401);
    assert_eq!(refused["parent_span_id"], "", "a new trace has no parent");
    assert_ne!(refused["trace_id"], CLIENT_TRACE);

    // The access log lines carry the ids.
    let until = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(Instant::now() < until, "access log: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines[0]["trace_id"], CLIENT_TRACE);
    assert_eq!(lines[0]["span_id"], sp["span_id"]);
    assert_eq!(lines[1]["trace_id"], refused["trace_id"]);
    assert_eq!(lines[1]["span_id"], refused["span_id"]);
}

/// Head sampling: at ratio 0 a new trace is not recorded (the upstream still gets a context,
/// marked not sampled); a sampled parent is followed (parent-based) and so is an unsampled one
/// at ratio 1.
#[tokio::test]
async fn sampling_ratio_and_parent_based() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let gw0 =
        TestGateway::start(&traced(&recv.tracing("grpc", ", sample_ratio: 0.0"), &one_service(&up.authority())), &[])
            .await;
    let gw1 =
        TestGateway::start(&traced(&recv.tracing("grpc", ", sample_ratio: 1.0"), &one_service(&up.authority())), &[])
            .await;

    // Ratio 0, no parent: nothing recorded, but the context goes upstream (flags 00).
    let mut unsampled = Vec::new();
    for i in 0..20 {
        let (s, v) = get_with(&format!("{}/users/{i}", gw0.url("main")), &[]).await;
        assert_eq!(s, 200);
        let (trace, _, flags) = parse_tp(&v["headers"]["traceparent"]);
        assert_eq!(flags, "00");
        unsampled.push(trace);
    }
    // Ratio 0, sampled parent: recorded (server + client span).
    let (s, v) = get_with(&format!("{}/users/1", gw0.url("main")), &[("traceparent", &traceparent(true))]).await;
    assert_eq!(s, 200);
    assert_eq!(parse_tp(&v["headers"]["traceparent"]).2, "01");
    let spans = recv.trace(CLIENT_TRACE, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");

    // Ratio 1, unsampled parent: not recorded; the upstream's parent is the gateway's server
    // span (no attempt spans for an unsampled request), on the client's trace.
    let other = "11111111111111111111111111111111";
    let tp = format!("00-{other}-{CLIENT_SPAN}-00");
    let (s, v) = get_with(&format!("{}/users/2", gw1.url("main")), &[("traceparent", &tp)]).await;
    assert_eq!(s, 200);
    let (trace, parent, flags) = parse_tp(&v["headers"]["traceparent"]);
    assert_eq!((trace.as_str(), flags.as_str()), (other, "00"));
    assert_ne!(parent, CLIENT_SPAN, "the gateway's span is the upstream's parent");
    // Ratio 1, no parent: recorded.
    let (_, v) = get_with(&format!("{}/users/3", gw1.url("main")), &[]).await;
    let (sampled_trace, _, flags) = parse_tp(&v["headers"]["traceparent"]);
    assert_eq!(flags, "01");
    recv.trace(&sampled_trace, 2).await;

    // By now every span sent has arrived (the sampled trace above was exported after them):
    // none of the unsampled traces.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = recv.spans().await;
    let leaked: Vec<&Value> = all
        .iter()
        .filter(|s| unsampled.contains(&s["trace_id"].as_str().unwrap().to_string()) || s["trace_id"] == other)
        .collect();
    assert!(leaked.is_empty(), "unsampled traces were exported: {leaked:#?}");
}

/// A route with `tracing: false` sends no spans, and the client's trace context reaches the
/// upstream unchanged; another route of the same gateway is traced.
#[tokio::test]
async fn per_route_off() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let body = format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: quiet\n    service: s\n    paths: [\"/quiet\"]\n    tracing: false\n  - name: loud\n    service: s\n    paths: [\"/loud\"]\n",
        up.authority()
    );
    let gw = TestGateway::start(&traced(&recv.tracing("grpc", ""), &body), &[]).await;
    let quiet = format!("00-{}-{CLIENT_SPAN}-01", "22222222222222222222222222222222");
    let (s, v) = get_with(&format!("{}/quiet", gw.url("main")), &[("traceparent", &quiet)]).await;
    assert_eq!(s, 200);
    assert_eq!(v["headers"]["traceparent"], quiet.as_str(), "passed through unchanged");
    let (s, _) = get_with(&format!("{}/loud", gw.url("main")), &[("traceparent", &traceparent(true))]).await;
    assert_eq!(s, 200);
    recv.trace(CLIENT_TRACE, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = recv.spans().await;
    assert!(all.iter().all(|s| s["trace_id"] != "22222222222222222222222222222222"), "{all:#?}");
}

/// Client → gateway A → gateway B → upstream: one trace. B's server span is a child of A's
/// attempt span, and the upstream's parent is B's attempt span.
#[tokio::test]
async fn propagation_through_two_gateways() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let b =
        TestGateway::start(&traced(&recv.tracing("grpc", ", service_name: inner"), &one_service(&up.authority())), &[])
            .await;
    let a = TestGateway::start(
        &traced(&recv.tracing("http", ", service_name: outer"), &one_service(&b.addr("main").to_string())),
        &[],
    )
    .await;
    let (s, v) = get_with(&format!("{}/users/5", a.url("main")), &[("traceparent", &traceparent(true))]).await;
    assert_eq!(s, 200, "{v}");
    let spans = recv.trace(CLIENT_TRACE, 4).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let find = |service: &str, k: &str| {
        spans
            .iter()
            .find(|s| s["service"] == service && s["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} span of {service}: {spans:#?}"))
            .clone()
    };
    let (a_server, a_client) = (find("outer", "SPAN_KIND_SERVER"), find("outer", "SPAN_KIND_CLIENT"));
    let (b_server, b_client) = (find("inner", "SPAN_KIND_SERVER"), find("inner", "SPAN_KIND_CLIENT"));
    assert_eq!(a_server["parent_span_id"], CLIENT_SPAN);
    assert_eq!(a_client["parent_span_id"], a_server["span_id"]);
    assert_eq!(b_server["parent_span_id"], a_client["span_id"]);
    assert_eq!(b_client["parent_span_id"], b_server["span_id"]);
    let (trace, parent, _) = parse_tp(&v["headers"]["traceparent"]);
    assert_eq!(trace, CLIENT_TRACE);
    assert_eq!(parent, b_client["span_id"].as_str().unwrap());
}

/// B3, single and multi header: the client's B3 context is read and the upstream gets the
/// gateway's attempt span in the same format.
#[tokio::test]
async fn b3_propagation() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let gw =
        TestGateway::start(&traced(&recv.tracing("grpc", ", propagation: b3"), &one_service(&up.authority())), &[])
            .await;
    let (s, v) =
        get_with(&format!("{}/users/1", gw.url("main")), &[("b3", &format!("{CLIENT_TRACE}-{CLIENT_SPAN}-1"))]).await;
    assert_eq!(s, 200);
    let spans = recv.trace(CLIENT_TRACE, 2).await;
    let attempt = kind(&spans, "SPAN_KIND_CLIENT")[0];
    assert_eq!(kind(&spans, "SPAN_KIND_SERVER")[0]["parent_span_id"], CLIENT_SPAN);
    assert_eq!(v["headers"]["b3"], format!("{CLIENT_TRACE}-{}-1", attempt["span_id"].as_str().unwrap()).as_str());
    assert!(v["headers"].get("traceparent").is_none());

    let gw = TestGateway::start(
        &traced(&recv.tracing("grpc", ", propagation: b3multi"), &one_service(&up.authority())),
        &[],
    )
    .await;
    let t = "33333333333333333333333333333333";
    let (s, v) = get_with(
        &format!("{}/users/1", gw.url("main")),
        &[("x-b3-traceid", t), ("x-b3-spanid", CLIENT_SPAN), ("x-b3-sampled", "1")],
    )
    .await;
    assert_eq!(s, 200);
    let spans = recv.trace(t, 2).await;
    let attempt = kind(&spans, "SPAN_KIND_CLIENT")[0];
    assert_eq!(v["headers"]["x-b3-traceid"], t);
    assert_eq!(v["headers"]["x-b3-spanid"], attempt["span_id"]);
    assert_eq!(v["headers"]["x-b3-sampled"], "1");
}

/// With the collector down, requests succeed as fast as without tracing, and the spans that
/// could not be exported are counted in `gatehouse_tracing_spans_dropped_total`.
#[tokio::test]
async fn collector_down_costs_only_a_counter() {
    let up = Upstream::start(Behavior::Echo("up")).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let tracing = format!(
        "{{ enabled: true, endpoint: \"http://127.0.0.1:{dead_port}\", export_interval: 20ms, export_timeout: 200ms, queue_size: 64, batch_size: 32 }}"
    );
    let on = TestGateway::start(&traced(&tracing, &one_service(&up.authority())), &[]).await;
    let off = TestGateway::start(&base(&one_service(&up.authority())), &[]).await;
    let c = client();
    let run = |url: String| {
        let c = c.clone();
        async move {
            let t = Instant::now();
            for i in 0..300 {
                let r = c.get(format!("{url}/users/{i}")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
            t.elapsed()
        }
    };
    // Warm both up, then measure.
    run(off.url("main")).await;
    run(on.url("main")).await;
    let t_off = run(off.url("main")).await;
    let t_on = run(on.url("main")).await;
    assert!(t_on < t_off * 3 + Duration::from_millis(300), "tracing to a dead collector: {t_on:?} vs {t_off:?} off");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let dropped = metric(&on, "gatehouse_tracing_spans_dropped_total").await;
        if dropped >= 100.0 {
            break;
        }
        assert!(Instant::now() < until, "dropped spans counted: {dropped}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&on, "gatehouse_tracing_spans_exported_total").await, 0.0);
}

/// A plugin's side call through `Ctx::upstreams`: asks the `profiles` service before the
/// request goes upstream.
struct SideCall;

#[gw_core::plugin]
impl gw_core::Plugin for SideCall {
    fn name(&self) -> &'static str {
        "side-call"
    }

    fn priority(&self) -> i32 {
        0
    }

    async fn access(&self, _req: &mut gw_core::RequestHead, cx: &mut gw_core::Ctx) -> gw_core::Result<gw_core::Flow> {
        get_profiles(cx, "/lookup").await
    }
}

/// The calls a traced request makes besides its proxied one carry its trace: forward-auth and a
/// plugin's side call each get an attempt span under the request's server span, and the
/// services called see that span as their parent.
#[tokio::test]
async fn forward_auth_and_side_calls_are_traced() {
    let recv = Receiver::start().await;
    let seen: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let recorder = |name: &'static str| {
        let seen = seen.clone();
        Behavior::Custom(Arc::new(move |req| {
            let tp = req.headers().get("traceparent").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            seen.lock().unwrap().push((name.to_string(), tp));
            Box::pin(async move { gw_test_util::echo(name, req).await })
        }))
    };
    let auth = Upstream::start(recorder("auth")).await;
    let profiles = Upstream::start(recorder("profiles")).await;
    let up = Upstream::start(recorder("main")).await;
    let body = format!(
        "services:\n  - name: s\n    url: http://{}\n  - name: profiles\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/r\"]\nplugins:\n  - plugin: forward-auth\n    route: r\n    config: {{ url: \"http://{}/check\" }}\n",
        up.authority(),
        profiles.authority(),
        auth.authority()
    );
    let gw = TestGateway::start_with_plugins(&traced(&recv.tracing("grpc", ""), &body), vec![Arc::new(SideCall)]).await;
    let (s, v) = get_with(&format!("{}/r", gw.url("main")), &[("traceparent", &traceparent(true))]).await;
    assert_eq!(s, 200, "{v}");
    let spans = recv.trace(CLIENT_TRACE, 4).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let server = kind(&spans, "SPAN_KIND_SERVER")[0];
    let clients = kind(&spans, "SPAN_KIND_CLIENT");
    assert_eq!(clients.len(), 3, "{spans:#?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (name, tp) in &seen {
        let (trace, parent, flags) = parse_tp(&Value::String(tp.clone()));
        assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "01"), "{name}");
        let span = clients
            .iter()
            .find(|c| c["span_id"] == parent.as_str())
            .unwrap_or_else(|| panic!("{name}'s parent {parent} is not an attempt span: {spans:#?}"));
        assert_eq!(span["parent_span_id"], server["span_id"], "{name}");
    }
}

/// A graceful shutdown exports the spans still queued, however long the export interval.
#[tokio::test]
async fn shutdown_exports_queued_spans() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let tracing = format!("{{ enabled: true, endpoint: \"http://127.0.0.1:{}\", export_interval: 60s }}", recv.grpc);
    let gw = TestGateway::start(&traced(&tracing, &one_service(&up.authority())), &[]).await;
    let (s, _) = get_with(&format!("{}/users/1", gw.url("main")), &[("traceparent", &traceparent(true))]).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(recv.spans().await.is_empty(), "nothing exported before the interval");
    gw.gw.shutdown(Duration::from_secs(5)).await;
    let spans = recv.trace(CLIENT_TRACE, 2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
}

/// Batching: a full batch (`batch_size` spans) is exported at once, in one export request,
/// without waiting for the interval; a batch that does not fill goes `export_interval` after
/// its first span, again in one request. Sampled requests only; the unsampled ones in
/// between put nothing in the queue.
#[tokio::test]
async fn spans_are_exported_in_batches_by_size_and_interval() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let tracing = format!(
        "{{ enabled: true, endpoint: \"http://127.0.0.1:{}\", export_interval: 4s, batch_size: 10, sample_ratio: 0.0 }}",
        recv.grpc
    );
    let gw = TestGateway::start(&traced(&tracing, &one_service(&up.authority())), &[]).await;
    let sampled = traceparent(true);
    // Five sampled requests (a server and a client span each) fill the batch of ten; the
    // unsampled ones between them add nothing.
    let t0 = Instant::now();
    for i in 0..5 {
        let (s, _) = get_with(&format!("{}/users/{i}", gw.url("main")), &[("traceparent", &sampled)]).await;
        assert_eq!(s, 200);
        let (s, _) = get_with(&format!("{}/users/u{i}", gw.url("main")), &[]).await;
        assert_eq!(s, 200);
    }
    let spans = recv.trace(CLIENT_TRACE, 10).await;
    let full_after = t0.elapsed();
    assert_eq!(spans.len(), 10, "{spans:#?}");
    assert!(full_after < Duration::from_secs(3), "a full batch waited for the interval: {full_after:?}");
    assert_eq!(recv.exports().await["grpc"], 1, "ten spans, one export request");

    // One more sampled request: its two spans wait for the interval (4 s after the first).
    let t1 = Instant::now();
    let (s, _) = get_with(&format!("{}/users/9", gw.url("main")), &[("traceparent", &sampled)]).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(recv.spans().await.len(), 10, "a batch of two went before the interval");
    let until = t1 + Duration::from_secs(4) + Duration::from_secs(6);
    loop {
        if recv.spans().await.len() == 12 {
            break;
        }
        assert!(Instant::now() < until, "the last two spans did not arrive within the interval");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t1.elapsed() >= Duration::from_millis(3500), "exported after {:?}, before the interval", t1.elapsed());
    assert_eq!(recv.exports().await["grpc"], 2, "the last two spans in one export request");
    assert_eq!(metric(&gw, "gatehouse_tracing_spans_exported_total").await, 12.0);
    assert_eq!(metric(&gw, "gatehouse_tracing_spans_dropped_total").await, 0.0);
}

/// A global plugin whose `pre_route` phase makes a side call (to `profiles`), before the
/// request is routed.
struct PreRouteCall;

#[gw_core::plugin]
impl gw_core::Plugin for PreRouteCall {
    fn name(&self) -> &'static str {
        "pre-route-call"
    }

    fn priority(&self) -> i32 {
        0
    }

    async fn pre_route(
        &self,
        _req: &mut gw_core::RequestHead,
        cx: &mut gw_core::Ctx,
    ) -> gw_core::Result<gw_core::Flow> {
        get_profiles(cx, "/pre").await
    }
}

/// (service called, traceparent, tracestate) of each call an upstream received.
type Seen = Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

fn recorder(seen: &Seen, name: &'static str) -> Behavior {
    let seen = seen.clone();
    Behavior::Custom(Arc::new(move |req| {
        let get = |h: &str| req.headers().get(h).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        seen.lock().unwrap().push((name.to_string(), get("traceparent"), get("tracestate")));
        Box::pin(async move { gw_test_util::echo(name, req).await })
    }))
}

/// Every call a traced request makes carries the client's `tracestate` as the proxied call
/// does (forward-auth's, a global `pre_route` plugin's side call, the proxied call), and the
/// side call of a `pre_route` plugin, made before routing, is traced under the request's server
/// span like the others. Unsampled, the calls carry the server span's id (not sampled) and the
/// `tracestate` too.
#[tokio::test]
async fn tracestate_and_pre_route_side_calls() {
    let recv = Receiver::start().await;
    let seen: Seen = Arc::default();
    let auth = Upstream::start(recorder(&seen, "auth")).await;
    let profiles = Upstream::start(recorder(&seen, "profiles")).await;
    let up = Upstream::start(recorder(&seen, "main")).await;
    let body = format!(
        "services:\n  - name: s\n    url: http://{}\n  - name: profiles\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/r\"]\nplugins:\n  - plugin: forward-auth\n    route: r\n    config: {{ url: \"http://{}/check\" }}\n",
        up.authority(),
        profiles.authority(),
        auth.authority()
    );
    let gw =
        TestGateway::start_with_plugins(&traced(&recv.tracing("grpc", ""), &body), vec![Arc::new(PreRouteCall)]).await;
    let headers = [("traceparent", traceparent(true)), ("tracestate", "vendor=abc,other=1".to_string())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, v) = get_with(&format!("{}/r", gw.url("main")), &headers).await;
    assert_eq!(s, 200, "{v}");
    let spans = recv.trace(CLIENT_TRACE, 4).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let server = kind(&spans, "SPAN_KIND_SERVER")[0];
    let clients = kind(&spans, "SPAN_KIND_CLIENT");
    let calls = std::mem::take(&mut *seen.lock().unwrap());
    let names: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["profiles", "auth", "main"], "pre-route call, forward-auth, proxied call");
    for (name, tp, state) in &calls {
        assert_eq!(state, "vendor=abc,other=1", "{name} got the client's tracestate");
        let (trace, parent, flags) = parse_tp(&Value::String(tp.clone()));
        assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "01"), "{name}");
        let span = clients
            .iter()
            .find(|c| c["span_id"] == parent.as_str())
            .unwrap_or_else(|| panic!("{name}'s parent {parent} is not an attempt span: {spans:#?}"));
        assert_eq!(span["parent_span_id"], server["span_id"], "{name}'s attempt is under the server span");
    }
    assert_eq!(server["trace_state"], "vendor=abc,other=1", "{server:#}");

    // Not sampled: every call carries the server span's id, not sampled, and the tracestate.
    let other = "44444444444444444444444444444444";
    let tp = format!("00-{other}-{CLIENT_SPAN}-00");
    let (s, _) = get_with(&format!("{}/r", gw.url("main")), &[("traceparent", &tp), ("tracestate", "k=v")]).await;
    assert_eq!(s, 200);
    let calls = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(calls.len(), 3, "{calls:?}");
    let parents: Vec<String> = calls
        .iter()
        .map(|(name, tp, state)| {
            assert_eq!(state, "k=v", "{name}");
            let (trace, parent, flags) = parse_tp(&Value::String(tp.clone()));
            assert_eq!((trace.as_str(), flags.as_str()), (other, "00"), "{name}");
            parent
        })
        .collect();
    assert_ne!(parents[0], CLIENT_SPAN);
    assert!(parents.iter().all(|p| *p == parents[0]), "all under the server span: {parents:?}");
}

/// On a route with `tracing: false`, the side call a global `pre_route` plugin made before the
/// route was known is not exported either (its parent, the server span, is not): no span of
/// that trace reaches the collector, while the same call on a traced route is exported under
/// its server span.
#[tokio::test]
async fn pre_route_spans_follow_a_route_without_tracing() {
    let recv = Receiver::start().await;
    let seen: Seen = Arc::default();
    let profiles = Upstream::start(recorder(&seen, "profiles")).await;
    let up = Upstream::start(recorder(&seen, "main")).await;
    let body = format!(
        "services:\n  - name: s\n    url: http://{}\n  - name: profiles\n    url: http://{}\nroutes:\n  - name: quiet\n    service: s\n    paths: [\"/quiet\"]\n    tracing: false\n  - name: r\n    service: s\n    paths: [\"/r\"]\n",
        up.authority(),
        profiles.authority()
    );
    let gw =
        TestGateway::start_with_plugins(&traced(&recv.tracing("grpc", ""), &body), vec![Arc::new(PreRouteCall)]).await;
    let quiet = "77777777777777777777777777777777";
    let tp = format!("00-{quiet}-{CLIENT_SPAN}-01");
    let (s, _) = get_with(&format!("{}/quiet", gw.url("main")), &[("traceparent", &tp)]).await;
    assert_eq!(s, 200);
    let calls = std::mem::take(&mut *seen.lock().unwrap());
    let names: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["profiles", "main"], "the pre-route call was made");
    assert_eq!(calls[1].1, tp, "the untraced route's upstream gets the client's context as sent");

    // A traced request after it: once its spans (server, pre-route call, proxied call) are in,
    // the collector would have the earlier ones too.
    let (s, _) = get_with(&format!("{}/r", gw.url("main")), &[("traceparent", &traceparent(true))]).await;
    assert_eq!(s, 200);
    let spans = recv.trace(CLIENT_TRACE, 3).await;
    let server = kind(&spans, "SPAN_KIND_SERVER")[0];
    assert!(kind(&spans, "SPAN_KIND_CLIENT").iter().all(|c| c["parent_span_id"] == server["span_id"]), "{spans:#?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stray: Vec<Value> = recv.spans().await.into_iter().filter(|s| s["trace_id"] == quiet).collect();
    assert!(stray.is_empty(), "spans exported for a route without tracing: {stray:#?}");
}

/// The tracing settings follow a configuration reload: ratio, endpoint, on and off, and a
/// route's `tracing` flag, without a restart.
#[tokio::test]
async fn tracing_settings_follow_reloads() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let routes = |quiet: bool| {
        format!(
            "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: users\n    service: s\n    paths: [\"/users/{{id}}\"]\n    tracing: {}\n",
            up.authority(),
            !quiet
        )
    };
    let off = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{}",
        routes(false)
    );
    // Ratio 0 to the first receiver: a new trace is not recorded.
    let gw = TestGateway::start(&traced(&first.tracing("grpc", ", sample_ratio: 0.0"), &routes(false)), &[]).await;
    let url = format!("{}/users/1", gw.url("main"));
    let new_trace = |v: &Value| parse_tp(&v["headers"]["traceparent"]);
    let (_, v) = get_with(&url, &[]).await;
    assert_eq!(new_trace(&v).2, "00");

    // Ratio 1: recorded, still at the first receiver.
    gw.reload(&traced(&first.tracing("grpc", ", sample_ratio: 1.0"), &routes(false)), &[]).await.unwrap();
    let (_, v) = get_with(&url, &[]).await;
    let (t1, _, flags) = new_trace(&v);
    assert_eq!(flags, "01");
    first.trace(&t1, 2).await;

    // Another endpoint (and protocol): the spans go to the second receiver.
    gw.reload(&traced(&second.tracing("http", ", sample_ratio: 1.0"), &routes(false)), &[]).await.unwrap();
    let (_, v) = get_with(&url, &[]).await;
    let (t2, _, _) = new_trace(&v);
    let spans = second.trace(&t2, 2).await;
    assert!(spans.iter().all(|s| s["via"] == "http"), "{spans:#?}");

    // The route turns tracing off: the client's context passes through unchanged.
    gw.reload(&traced(&second.tracing("http", ", sample_ratio: 1.0"), &routes(true)), &[]).await.unwrap();
    let tp = format!("00-{}-{CLIENT_SPAN}-01", "55555555555555555555555555555555");
    let (_, v) = get_with(&url, &[("traceparent", &tp)]).await;
    assert_eq!(v["headers"]["traceparent"], tp.as_str());

    // Tracing off: no context is started or sent.
    gw.reload(&off, &[]).await.unwrap();
    let (_, v) = get_with(&url, &[]).await;
    assert!(v["headers"].get("traceparent").is_none(), "{v}");

    // And on again (the first receiver): recorded.
    gw.reload(&traced(&first.tracing("grpc", ", sample_ratio: 1.0"), &routes(false)), &[]).await.unwrap();
    let (_, v) = get_with(&url, &[]).await;
    let (t3, _, flags) = new_trace(&v);
    assert_eq!(flags, "01");
    first.trace(&t3, 2).await;
    // Neither receiver got the other's traces.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(first.spans().await.iter().all(|s| s["trace_id"] != t2.as_str()));
    assert!(second.spans().await.iter().all(|s| s["trace_id"] != t1.as_str() && s["trace_id"] != t3.as_str()));
}

/// The request latency histogram carries the trace id of a sampled request as its exemplar
/// (OpenMetrics exposition), the same trace the collector received; the Prometheus text
/// format has no exemplars.
#[tokio::test]
async fn latency_exemplars_name_sampled_traces() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let gw =
        TestGateway::start(&traced(&recv.tracing("grpc", ", sample_ratio: 1.0"), &one_service(&up.authority())), &[])
            .await;
    let (s, v) = get_with(&format!("{}/users/1", gw.url("main")), &[]).await;
    assert_eq!(s, 200);
    let (trace, _, flags) = parse_tp(&v["headers"]["traceparent"]);
    assert_eq!(flags, "01");
    let spans = recv.trace(&trace, 2).await;
    assert_eq!(kind(&spans, "SPAN_KIND_SERVER").len(), 1);

    let metrics = |accept: &'static str| {
        let url = format!("{}/metrics", gw.status_url());
        async move {
            let r = client().get(url).header("accept", accept).send().await.unwrap();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (ct, r.text().await.unwrap())
        }
    };
    let (ct, om) = metrics("application/openmetrics-text; version=1.0.0").await;
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let wanted = format!("# {{trace_id=\"{trace}\"}}");
    let line = om
        .lines()
        .find(|l| l.starts_with("gatehouse_http_request_duration_seconds_bucket") && l.contains(&wanted))
        .unwrap_or_else(|| panic!("no exemplar with trace {trace}:\n{om}"));
    assert!(line.contains("route=\"users\""), "{line}");
    let (ct, text) = metrics("text/plain").await;
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert!(text.contains("gatehouse_http_request_duration_seconds_bucket"));
    assert!(!text.contains("trace_id="), "no exemplars in the Prometheus format");
}

/// A route whose latency series existed before a reload turned tracing on gets exemplars
/// from the next sampled request, on the request latency and the upstream latency histograms,
/// and keeps the counts of the requests before it.
#[tokio::test]
async fn exemplars_after_a_reload_turns_tracing_on() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let off = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{}",
        one_service(&up.authority())
    );
    let gw = TestGateway::start(&off, &[]).await;
    let url = format!("{}/users/1", gw.url("main"));
    assert_eq!(get_with(&url, &[]).await.0, 200);
    gw.reload(&traced(&recv.tracing("grpc", ", sample_ratio: 1.0"), &one_service(&up.authority())), &[]).await.unwrap();
    let (s, v) = get_with(&url, &[]).await;
    assert_eq!(s, 200);
    let (trace, _, flags) = parse_tp(&v["headers"]["traceparent"]);
    assert_eq!(flags, "01");
    recv.trace(&trace, 2).await;
    let om = client()
        .get(format!("{}/metrics", gw.status_url()))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let wanted = format!("# {{trace_id=\"{trace}\"}}");
    for family in ["gatehouse_http_request_duration_seconds_bucket", "gatehouse_upstream_duration_seconds_bucket"] {
        let line = om
            .lines()
            .find(|l| l.starts_with(family) && l.contains(&wanted))
            .unwrap_or_else(|| panic!("no exemplar with trace {trace} in {family}:\n{om}"));
        assert!(line.contains("route=\"users\""), "{line}");
    }
    assert!(
        om.lines().any(|l| l.starts_with("gatehouse_http_request_duration_seconds_count{") && l.ends_with(" 2")),
        "both requests counted in one series: {om}"
    );
}

/// Plugins' own IO is traced: the rate limiter's and the quota's Redis calls (`policy:
/// redis`, the real Redis) are CLIENT spans under the request's server span, with the route
/// and the consumer; with Redis down (failing open) the span records the error.
#[tokio::test]
async fn redis_calls_of_plugins_are_spans() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let id = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let yaml = |redis: &str| {
        format!(
            "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\n  redis: {{ url: \"{redis}\" }}\n  tracing: {}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/r\"]\nplugins:\n  - plugin: key-auth\n  - plugin: rate-limiting\n    name: rl-{id}\n    config: {{ minute: 1000, policy: redis, failure_mode: open }}\n  - plugin: quota\n    name: q-{id}\n    config: {{ limit: 1000, period: day, policy: redis, failure_mode: open }}\nconsumers:\n  - username: alice\n    credentials: [{{ type: key-auth, key: alice-key-123 }}]\n",
            recv.tracing("grpc", ""),
            up.authority()
        )
    };
    let gw = TestGateway::start(&yaml("redis://127.0.0.1:6379/"), &[]).await;
    let tp = traceparent(true);
    let (s, v) = get_with(&format!("{}/r", gw.url("main")), &[("traceparent", &tp), ("apikey", "alice-key-123")]).await;
    assert_eq!(s, 200, "{v}");
    let spans = recv.trace(CLIENT_TRACE, 4).await;
    let server = kind(&spans, "SPAN_KIND_SERVER")[0];
    let redis: Vec<&Value> = spans.iter().filter(|s| s["attributes"]["db.system.name"] == "redis").collect();
    assert_eq!(redis.len(), 2, "{spans:#?}");
    let mut plugins: Vec<&str> = redis.iter().map(|s| s["attributes"]["gatehouse.plugin"].as_str().unwrap()).collect();
    plugins.sort_unstable();
    assert_eq!(plugins, ["quota", "rate-limiting"]);
    for s in &redis {
        assert_eq!(s["kind"], "SPAN_KIND_CLIENT");
        assert_eq!(s["name"], "redis EVALSHA");
        assert_eq!(s["parent_span_id"], server["span_id"], "{s:#}");
        assert_eq!(s["attributes"]["gatehouse.route"], "r");
        assert_eq!(s["attributes"]["gatehouse.consumer"], "alice");
        assert_eq!(s["status"], "STATUS_CODE_UNSET", "{s:#}");
        assert!(s["end_ns"].as_u64() >= s["start_ns"].as_u64());
    }

    // Redis down (a closed port), failing open: the request passes, the spans say why.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let gw = TestGateway::start(&yaml(&format!("redis://127.0.0.1:{dead_port}/")), &[]).await;
    let t = "66666666666666666666666666666666";
    let tp = format!("00-{t}-{CLIENT_SPAN}-01");
    let (s, _) = get_with(&format!("{}/r", gw.url("main")), &[("traceparent", &tp), ("apikey", "alice-key-123")]).await;
    assert_eq!(s, 200);
    let spans = recv.trace(t, 4).await;
    let redis: Vec<&Value> = spans.iter().filter(|s| s["attributes"]["db.system.name"] == "redis").collect();
    assert_eq!(redis.len(), 2, "{spans:#?}");
    for s in redis {
        assert_eq!(s["status"], "STATUS_CODE_ERROR", "{s:#}");
        assert!(!s["status_message"].as_str().unwrap().is_empty(), "{s:#}");
    }
}

/// A side call of the test plugins: `GET path` on the `profiles` service, its body read.
async fn get_profiles(cx: &gw_core::Ctx, path: &'static str) -> gw_core::Result<gw_core::Flow> {
    let u = cx.upstreams.clone().expect("side calls");
    let head = gw_core::RequestHead {
        method: http::Method::GET,
        uri: http::Uri::from_static(path),
        version: http::Version::HTTP_11,
        headers: http::HeaderMap::new(),
    };
    let r = u.send("profiles", head, gw_core::Body::empty()).await?;
    r.body.collect(1 << 16).await?;
    Ok(gw_core::Flow::Continue)
}

/// The calls of an aggregate service carry the request's trace: each call (one to a named
/// service, one to a URL) gets an attempt span under the request's server span, and each
/// backend sees a `traceparent` of the client's trace whose parent is its own call's span.
#[tokio::test]
async fn aggregation_calls_are_traced() {
    let recv = Receiver::start().await;
    let seen: Seen = Arc::default();
    let users = Upstream::start(recorder(&seen, "users")).await;
    let news = Upstream::start(recorder(&seen, "news")).await;
    let body = format!(
        "services:\n  - name: users\n    url: http://{}\n  - name: home\n    type: aggregate\n    aggregate:\n      timeout: 2s\n      calls:\n        - name: user\n          service: users\n          path: /users/1\n          group: user\n        - name: news\n          url: http://{}\n          path: /news\n          group: news\nroutes:\n  - name: home\n    service: home\n    paths: [\"/home\"]\n",
        users.authority(),
        news.authority()
    );
    let gw = TestGateway::start(&traced(&recv.tracing("grpc", ""), &body), &[]).await;
    let (s, v) = get_with(&format!("{}/home", gw.url("main")), &[("traceparent", &traceparent(true))]).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["user"].is_object() && v["news"].is_object(), "both calls merged: {v}");
    let spans = recv.trace(CLIENT_TRACE, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = kind(&spans, "SPAN_KIND_SERVER");
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(server["parent_span_id"], CLIENT_SPAN);
    assert_eq!(server["attributes"]["gatehouse.route"], "home");
    let clients = kind(&spans, "SPAN_KIND_CLIENT");
    assert_eq!(clients.len(), 2, "one attempt span per call: {spans:#?}");
    for c in &clients {
        assert_eq!(c["parent_span_id"], server["span_id"], "{c:#}");
    }
    let calls = std::mem::take(&mut *seen.lock().unwrap());
    let mut names: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["news", "users"]);
    let mut parents = Vec::new();
    for (name, tp, _) in &calls {
        let (trace, parent, flags) = parse_tp(&Value::String(tp.clone()));
        assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "01"), "{name}");
        let span = clients
            .iter()
            .find(|c| c["span_id"] == parent.as_str())
            .unwrap_or_else(|| panic!("{name}'s parent {parent} is not an attempt span: {spans:#?}"));
        let port = span["attributes"]["server.port"].as_i64().unwrap();
        let backend = if name == "users" { &users } else { &news };
        assert_eq!(format!("127.0.0.1:{port}"), backend.authority(), "{name}'s span names its target");
        parents.push(parent);
    }
    assert_ne!(parents[0], parents[1], "each call has its own span");
}

/// The server span names the consumer a request was authenticated as; a request a plugin
/// refused for want of credentials (401, an answer rather than a failure) is traced with its
/// status, no consumer, no `error.type` and the span status unset (the HTTP semantic
/// conventions leave 4xx server spans so), while a 404 of the gateway's own (`no_route`) has
/// its error code.
#[tokio::test]
async fn server_span_consumer_and_refusal_error_type() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let body = format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: locked\n    service: s\n    paths: [\"/locked\"]\nplugins:\n  - plugin: key-auth\n    route: locked\nconsumers:\n  - username: alice\n    credentials: [{{ type: key-auth, key: alice-trace-key }}]\n",
        up.authority()
    );
    let gw = TestGateway::start(&traced(&recv.tracing("grpc", ""), &body), &[]).await;
    let (s, _) = get_with(
        &format!("{}/locked", gw.url("main")),
        &[("traceparent", &traceparent(true)), ("x-api-key", "alice-trace-key")],
    )
    .await;
    assert_eq!(s, 200);
    let refused_trace = "55555555555555555555555555555555";
    let tp = format!("00-{refused_trace}-{CLIENT_SPAN}-01");
    let (s, _) = get_with(&format!("{}/locked", gw.url("main")), &[("traceparent", &tp)]).await;
    assert_eq!(s, 401);

    let spans = recv.trace(CLIENT_TRACE, 2).await;
    let server = kind(&spans, "SPAN_KIND_SERVER")[0];
    assert_eq!(server["attributes"]["gatehouse.consumer"], "alice", "{server:#}");
    assert!(server["attributes"].get("error.type").is_none(), "{server:#}");
    let refused = recv.trace(refused_trace, 1).await;
    assert_eq!(refused.len(), 1, "refused before any upstream call: {refused:#?}");
    let at = &refused[0]["attributes"];
    assert_eq!(at["http.response.status_code"], 401, "{at}");
    assert_eq!(at["gatehouse.route"], "locked", "{at}");
    assert!(at.get("error.type").is_none(), "a refusal is not an error: {at}");
    assert_eq!(refused[0]["status"], "STATUS_CODE_UNSET", "{:#}", refused[0]);
    assert!(at.get("gatehouse.consumer").is_none(), "no consumer: {at}");
    let nowhere = "66666666666666666666666666666666";
    let tp = format!("00-{nowhere}-{CLIENT_SPAN}-01");
    let (s, _) = get_with(&format!("{}/nowhere", gw.url("main")), &[("traceparent", &tp)]).await;
    assert_eq!(s, 404);
    let spans = recv.trace(nowhere, 1).await;
    assert_eq!(spans[0]["attributes"]["error.type"], "no_route", "{:#}", spans[0]);
}

/// (path, traceparent) of each request an upstream received.
type Calls = Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// Active health checks carry no trace context, while the proxied requests to the same targets,
/// made at the same time, do.
#[tokio::test]
async fn health_checks_carry_no_trace_context() {
    let recv = Receiver::start().await;
    let calls: Calls = Arc::default();
    let record = calls.clone();
    let up = Upstream::start(Behavior::Custom(Arc::new(move |req| {
        let tp = req.headers().get("traceparent").map(|v| v.to_str().unwrap().to_string());
        record.lock().unwrap().push((req.uri().path().to_string(), tp));
        Box::pin(async move { gw_test_util::echo("up", req).await })
    })))
    .await;
    let body = format!(
        "upstreams:\n  - name: u\n    targets: [{{ address: \"{}\" }}]\n    health_checks:\n      active: {{ path: /health, interval: 50ms, timeout: 500ms }}\nservices:\n  - name: s\n    upstream: u\nroutes:\n  - name: users\n    service: s\n    paths: [\"/users/{{id}}\"]\n",
        up.authority()
    );
    // Ratio 1: every request is traced, a client's context or not.
    let gw = TestGateway::start(&traced(&recv.tracing("grpc", ", sample_ratio: 1.0"), &body), &[]).await;
    let t0 = Instant::now();
    let mut sent = 0;
    while t0.elapsed() < Duration::from_millis(600) {
        let (s, _) =
            get_with(&format!("{}/users/{sent}", gw.url("main")), &[("traceparent", &traceparent(true))]).await;
        assert_eq!(s, 200);
        sent += 1;
        let (s, _) = get_with(&format!("{}/users/{sent}", gw.url("main")), &[]).await;
        assert_eq!(s, 200);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = calls.lock().unwrap().clone();
    let (probes, proxied): (Vec<_>, Vec<_>) = calls.iter().partition(|(path, _)| path == "/health");
    assert!(probes.len() >= 5, "{} health checks in 600 ms: {calls:?}", probes.len());
    assert_eq!(proxied.len(), sent);
    assert!(proxied.iter().all(|(_, tp)| tp.is_some()), "every proxied request is traced: {proxied:?}");
    let traced: Vec<_> = probes.iter().filter(|(_, tp)| tp.is_some()).collect();
    assert!(traced.is_empty(), "health checks with a trace context: {traced:?}");
}

/// The rate limiter's batched Redis sync (`sync_interval`) runs outside any request: each round
/// that has counts to send is the root span of a trace of its own (no parent, no request span
/// in it), a CLIENT span with the number of keys, Redis's outcome and, when Redis fails,
/// `error.type` and an error status; exported through the gateway's tracer. With tracing off
/// (`enabled: false`, same receiver) there is none.
#[tokio::test]
async fn batched_rate_limit_sync_is_traced() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let id = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let yaml = |redis: &str, tracing: &str, instance: &str| {
        format!(
            "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\n  redis: {{ url: \"{redis}\", timeout: 200ms }}\n  tracing: {tracing}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/r\"]\nplugins:\n  - plugin: rate-limiting\n    name: {instance}\n    config: {{ second: 1000, minute: 1000, policy: redis, sync_interval: 100ms, failure_mode: open }}\n",
            up.authority()
        )
    };
    // The sync spans of one plugin instance, once `n` have arrived (panics after 10 s).
    let syncs = |instance: String, n: usize| {
        let recv = &recv;
        async move {
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                let all = recv.spans().await;
                let mine: Vec<Value> = all
                    .iter()
                    .filter(|s| s["attributes"]["gatehouse.plugin.instance"] == instance.as_str())
                    .cloned()
                    .collect();
                if mine.len() >= n {
                    return (mine, all);
                }
                assert!(Instant::now() < until, "{} of {n} sync spans of {instance}", mine.len());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // The real Redis.
    let ok = format!("rl-sync-ok-{id}");
    let gw = TestGateway::start(&yaml("redis://127.0.0.1:6379/", &recv.tracing("grpc", ""), &ok), &[]).await;
    for _ in 0..5 {
        let (s, _) = get_with(&format!("{}/r", gw.url("main")), &[]).await;
        assert_eq!(s, 200);
    }
    let (mine, all) = syncs(ok.clone(), 1).await;
    for s in &mine {
        assert_eq!(s["name"], "rate-limiting sync", "{s:#}");
        assert_eq!(s["kind"], "SPAN_KIND_CLIENT");
        assert_eq!(s["parent_span_id"], "", "a root span: {s:#}");
        assert_eq!(s["attributes"]["db.system.name"], "redis");
        assert_eq!(s["attributes"]["gatehouse.plugin"], "rate-limiting");
        assert_eq!(s["attributes"]["gatehouse.ratelimit.sync.keys"], 2, "a second and a minute counter: {s:#}");
        assert_eq!(s["attributes"]["gatehouse.ratelimit.sync.failed_keys"], 0);
        assert_eq!(s["attributes"]["gatehouse.redis.outcome"], "ok");
        assert!(s["attributes"].get("error.type").is_none(), "{s:#}");
        assert_eq!(s["status"], "STATUS_CODE_UNSET", "{s:#}");
        assert!(s["end_ns"].as_u64() >= s["start_ns"].as_u64());
        let same_trace = all.iter().filter(|o| o["trace_id"] == s["trace_id"]).count();
        assert_eq!(same_trace, 1, "a trace of its own (no request span in it): {s:#}");
    }
    // The requests' own server spans are there too, in other traces.
    assert!(all.iter().any(|s| s["kind"] == "SPAN_KIND_SERVER"));
    drop(gw);

    // Redis down (a closed port), failing open: the sync fails, and its span says so.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let down = format!("rl-sync-down-{id}");
    let redis = format!("redis://127.0.0.1:{dead_port}/");
    let gw = TestGateway::start(&yaml(&redis, &recv.tracing("grpc", ""), &down), &[]).await;
    let (s, _) = get_with(&format!("{}/r", gw.url("main")), &[]).await;
    assert_eq!(s, 200, "failing open");
    let (mine, _) = syncs(down, 1).await;
    let s = &mine[0];
    assert_eq!(s["attributes"]["gatehouse.redis.outcome"], "failed", "{s:#}");
    assert_eq!(s["attributes"]["gatehouse.ratelimit.sync.failed_keys"], 2);
    assert_eq!(s["attributes"]["error.type"], "redis_unavailable", "{s:#}");
    assert_eq!(s["status"], "STATUS_CODE_ERROR", "{s:#}");
    assert!(!s["status_message"].as_str().unwrap().is_empty(), "{s:#}");
    drop(gw);

    // Tracing off: no sync span.
    let off = format!("rl-sync-off-{id}");
    let tracing_off = recv.tracing("grpc", ", sample_ratio: 1.0").replace("enabled: true", "enabled: false");
    let gw = TestGateway::start(&yaml("redis://127.0.0.1:6379/", &tracing_off, &off), &[]).await;
    for _ in 0..5 {
        let (s, _) = get_with(&format!("{}/r", gw.url("main")), &[]).await;
        assert_eq!(s, 200);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = recv.spans().await.iter().filter(|s| s["attributes"]["gatehouse.plugin.instance"] == off.as_str()).count();
    assert_eq!(n, 0);
}

/// Export failures, over both transports, against the real receiver: a transient failure
/// (gRPC `UNAVAILABLE`, HTTP 503) is tried again and the spans arrive, counted once as
/// exported; a permanent one (`INVALID_ARGUMENT`, HTTP 400) is not tried again and its spans
/// are counted as dropped; spans the collector rejects in a partial success are counted as
/// dropped, the rest as exported.
#[tokio::test]
async fn export_failures_are_retried_or_counted() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    for (n, via) in ["grpc", "http"].into_iter().enumerate() {
        // A request's two spans (server and attempt) are one batch: it is exported when full,
        // so each request is exactly one export request.
        let port = if via == "grpc" { recv.grpc } else { recv.http };
        let tracing = format!(
            "{{ enabled: true, protocol: {via}, endpoint: \"http://127.0.0.1:{port}\", batch_size: 2, export_interval: 5s }}"
        );
        let gw = TestGateway::start(&traced(&tracing, &one_service(&up.authority())), &[]).await;
        let wait_for = |name: &'static str, want: f64| {
            let gw = &gw;
            async move {
                let until = Instant::now() + Duration::from_secs(10);
                loop {
                    let v = metric(gw, name).await;
                    if v == want {
                        return;
                    }
                    assert!(Instant::now() < until, "{via}: {name} is {v}, not {want}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };

        // Transient: two failures, then the spans (server and attempt) arrive.
        recv.faults(r#"{"fail": 2, "retryable": true}"#).await;
        let trace = format!("{:032x}", 0xa000 + n);
        send_traced(&gw, &trace).await;
        let spans = recv.trace(&trace, 2).await;
        assert_eq!(spans.len(), 2, "{via}: {spans:#?}");
        assert!(spans.iter().all(|s| s["via"] == via));
        wait_for("gatehouse_tracing_spans_exported_total", 2.0).await;
        assert_eq!(metric(&gw, "gatehouse_tracing_spans_dropped_total").await, 0.0, "{via}");
        let e = recv.exports().await;
        assert_eq!(e[format!("failed_{via}")], 2, "{via}: {e}");
        assert_eq!(e[via], 1, "{via}: {e}");

        // Permanent: one attempt, the batch dropped and counted.
        recv.faults(r#"{"fail": 1, "retryable": false}"#).await;
        let trace = format!("{:032x}", 0xb000 + n);
        send_traced(&gw, &trace).await;
        wait_for("gatehouse_tracing_spans_dropped_total", 2.0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let e = recv.exports().await;
        assert_eq!(e[format!("failed_{via}")], 3, "{via}: not tried again: {e}");
        assert_eq!(e[via], 1, "{via}: {e}");
        assert!(recv.spans().await.iter().all(|s| s["trace_id"] != trace.as_str()), "{via}");
        assert_eq!(metric(&gw, "gatehouse_tracing_spans_exported_total").await, 2.0, "{via}");

        // Partial success: one of the two spans rejected.
        recv.faults(r#"{"reject": 1}"#).await;
        let trace = format!("{:032x}", 0xc000 + n);
        send_traced(&gw, &trace).await;
        wait_for("gatehouse_tracing_spans_dropped_total", 3.0).await;
        wait_for("gatehouse_tracing_spans_exported_total", 3.0).await;
        assert_eq!(recv.trace(&trace, 1).await.len(), 1, "{via}");
    }
}

/// An `https://` collector, over both transports: the gateway verifies its certificate against
/// `tls.ca_file` under the name `tls.sni` (the receiver's certificate names `otel.test`, the
/// endpoint is an IP address; the gRPC one is written `HTTPS://`, which is https too), and
/// every export carries `headers` (gRPC metadata or HTTP headers) and the gateway's
/// `user-agent`. The same collector with the system's roots (no `ca_file`) is not trusted: the
/// spans are dropped and counted at once (a certificate error is not tried again), none
/// arrives; with `verify: false` they arrive.
#[tokio::test]
async fn export_over_tls_with_headers() {
    let (_dir, cert, key, ca_file) = tls_files("otel-ca", "otel.test");
    let ca_pem = std::fs::read(&ca_file).unwrap();
    let recv = Receiver::start_with(&["--tls", cert.to_str().unwrap(), key.to_str().unwrap()]).await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    // The receiver's own pages are HTTPS too.
    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
        .resolve("otel.test", ([127, 0, 0, 1], recv.http).into())
        .build()
        .unwrap();
    let page = |path: &'static str| {
        let https = https.clone();
        let url = format!("https://otel.test:{}{path}", recv.http);
        async move { https.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    for (n, via) in ["grpc", "http"].into_iter().enumerate() {
        let (port, scheme) = if via == "grpc" { (recv.grpc, "HTTPS") } else { (recv.http, "https") };
        let tracing = format!(
            "{{ enabled: true, protocol: {via}, endpoint: \"{scheme}://127.0.0.1:{port}\", export_interval: 50ms, tls: {{ ca_file: \"{}\", sni: otel.test }}, headers: {{ x-api-key: secret-{via} }} }}",
            ca_file.display()
        );
        let gw = TestGateway::start(&traced(&tracing, &one_service(&up.authority())), &[]).await;
        let trace = format!("{:032x}", 0xd000 + n);
        send_traced(&gw, &trace).await;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = page("/spans").await;
            let got = spans.as_array().unwrap().iter().filter(|s| s["trace_id"] == trace.as_str()).count();
            if got == 2 {
                break;
            }
            assert!(
                Instant::now() < until,
                "{via}: {got} of 2 spans over TLS; dropped {}",
                metric(&gw, "gatehouse_tracing_spans_dropped_total").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let e = page("/exports").await;
        assert_eq!(e[format!("headers_{via}")]["x-api-key"], format!("secret-{via}"), "{via}: {e}");
        let agent = e[format!("headers_{via}")]["user-agent"].as_str().unwrap_or_default().to_string();
        assert!(agent.starts_with("gatehouse/"), "{via}: user-agent {agent:?}");
        assert_eq!(metric(&gw, "gatehouse_tracing_spans_exported_total").await, 2.0, "{via}");

        // Without the CA: the certificate is not trusted, nothing is exported.
        let untrusted = format!(
            "{{ enabled: true, protocol: {via}, endpoint: \"https://127.0.0.1:{port}\", export_interval: 50ms, export_timeout: 10s, tls: {{ sni: otel.test }} }}"
        );
        let gw = TestGateway::start(&traced(&untrusted, &one_service(&up.authority())), &[]).await;
        let trace = format!("{:032x}", 0xe000 + n);
        send_traced(&gw, &trace).await;
        // Retried, the batch would be dropped only after about 6 s of backoff.
        let until = Instant::now() + Duration::from_secs(3);
        while metric(&gw, "gatehouse_tracing_spans_dropped_total").await < 2.0 {
            assert!(Instant::now() < until, "{via}: the untrusted collector's spans are not dropped at once");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(metric(&gw, "gatehouse_tracing_spans_exported_total").await, 0.0, "{via}");
        let spans = page("/spans").await;
        assert!(spans.as_array().unwrap().iter().all(|s| s["trace_id"] != trace.as_str()), "{via}");

        // `verify: false`: the same untrusted certificate is taken.
        let unverified = format!(
            "{{ enabled: true, protocol: {via}, endpoint: \"https://127.0.0.1:{port}\", export_interval: 50ms, tls: {{ verify: false }} }}"
        );
        let gw = TestGateway::start(&traced(&unverified, &one_service(&up.authority())), &[]).await;
        let trace = format!("{:032x}", 0xe100 + n);
        send_traced(&gw, &trace).await;
        let until = Instant::now() + Duration::from_secs(10);
        while page("/spans").await.as_array().unwrap().iter().filter(|s| s["trace_id"] == trace.as_str()).count() < 2 {
            assert!(Instant::now() < until, "{via}: nothing exported with verify: false");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The collector's own delay, over both transports: a failure that asks for a wait (gRPC
/// `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` of 1.5 s; HTTP 429 with `Retry-After: 1`)
/// is tried again after that wait, not after the usual 100 ms backoff; a wait longer than
/// `export_timeout` allows drops the batch at once, without a second try; and (gRPC)
/// `RESOURCE_EXHAUSTED` without `RetryInfo` is not tried again.
#[tokio::test]
async fn export_retries_honour_the_collectors_delay() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    for (n, via) in ["grpc", "http"].into_iter().enumerate() {
        let port = if via == "grpc" { recv.grpc } else { recv.http };
        let tracing = format!(
            "{{ enabled: true, protocol: {via}, endpoint: \"http://127.0.0.1:{port}\", batch_size: 2, export_interval: 5s, export_timeout: 5s }}"
        );
        let gw = TestGateway::start(&traced(&tracing, &one_service(&up.authority())), &[]).await;
        let attempts = |e: &Value| -> Vec<f64> {
            e[format!("times_{via}")]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };

        // Asked to wait: the second try comes after the wait.
        recv.faults(if via == "grpc" {
            r#"{"fail": 1, "exhausted": true, "retry_after": 1.5}"#
        } else {
            r#"{"fail": 1, "exhausted": true, "retry_after": 1}"#
        })
        .await;
        let trace = format!("{:032x}", 0xf000 + n);
        send_traced(&gw, &trace).await;
        assert_eq!(recv.trace(&trace, 2).await.len(), 2, "{via}");
        let times = attempts(&recv.exports().await);
        assert_eq!(times.len(), 2, "{via}: {times:?}");
        let gap = times[1] - times[0];
        let want = if via == "grpc" { 1.5 } else { 1.0 };
        assert!(gap >= want - 0.1, "{via}: tried again after {gap:.3} s, before the {want} s asked for");

        // A wait beyond export_timeout (5 s): dropped at once, one try.
        recv.faults(r#"{"fail": 1, "exhausted": true, "retry_after": 30}"#).await;
        let trace = format!("{:032x}", 0xf100 + n);
        let started = Instant::now();
        send_traced(&gw, &trace).await;
        while metric(&gw, "gatehouse_tracing_spans_dropped_total").await < 2.0 {
            assert!(started.elapsed() < Duration::from_secs(3), "{via}: not dropped at once");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(attempts(&recv.exports().await).len(), 3, "{via}: tried again");

        if via == "grpc" {
            // RESOURCE_EXHAUSTED without RetryInfo: not tried again.
            recv.faults(r#"{"fail": 1, "exhausted": true, "retry_after": null}"#).await;
            let trace = format!("{:032x}", 0xf200 + n);
            send_traced(&gw, &trace).await;
            let started = Instant::now();
            while metric(&gw, "gatehouse_tracing_spans_dropped_total").await < 4.0 {
                assert!(started.elapsed() < Duration::from_secs(3), "grpc: not dropped at once");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                attempts(&recv.exports().await).len(),
                4,
                "grpc: RESOURCE_EXHAUSTED without RetryInfo tried again"
            );
        }
        assert!(
            recv.spans()
                .await
                .iter()
                .all(|s| !s["trace_id"].as_str().unwrap_or("").starts_with("0000000000000000000000000000f1"))
        );
        recv.faults(r#"{"exhausted": false, "retry_after": null}"#).await;
    }
}

/// A TCP relay to `to` that counts the bytes clients send through it (what goes on the wire).
async fn counting_relay(to: u16) -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = l.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else { return };
                let (mut ri, mut wi) = inbound.split();
                let (mut ro, mut wo) = outbound.split();
                let up = async {
                    let mut buf = vec![0u8; 16384];
                    loop {
                        let n = match tokio::io::AsyncReadExt::read(&mut ri, &mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        counter.fetch_add(n, Ordering::SeqCst);
                        if tokio::io::AsyncWriteExt::write_all(&mut wo, &buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut wo).await;
                };
                let down = tokio::io::copy(&mut ro, &mut wi);
                let _ = tokio::join!(up, down);
            });
        }
    });
    (port, sent)
}

/// `compression: gzip`, over both transports: the export requests are gzip-compressed (gRPC
/// message compression; HTTP `content-encoding: gzip`) and the receiver, decompressing them,
/// gets every span whole. Through a relay that counts the bytes on the wire, a span with a
/// 4,000-byte repetitive path takes a fraction of the bytes it takes uncompressed.
#[tokio::test]
async fn gzip_compressed_exports() {
    let recv = Receiver::start().await;
    let up = Upstream::start(Behavior::Echo("up")).await;
    let path = format!("/users/{}", "a".repeat(4000));
    for (n, via) in ["grpc", "http"].into_iter().enumerate() {
        let port = if via == "grpc" { recv.grpc } else { recv.http };
        let mut wire = Vec::new();
        for (m, compression) in ["none", "gzip"].into_iter().enumerate() {
            let (relay, sent) = counting_relay(port).await;
            let tracing = format!(
                "{{ enabled: true, protocol: {via}, endpoint: \"http://127.0.0.1:{relay}\", export_interval: 50ms, compression: {compression} }}"
            );
            let gw = TestGateway::start(&traced(&tracing, &one_service(&up.authority())), &[]).await;
            let trace = format!("{:032x}", 0xa100 + 2 * n + m);
            let (s, _) = get_with(
                &format!("{}{path}", gw.url("main")),
                &[("traceparent", &format!("00-{trace}-{CLIENT_SPAN}-01"))],
            )
            .await;
            assert_eq!(s, 200);
            let spans = recv.trace(&trace, 2).await;
            let server = kind(&spans, "SPAN_KIND_SERVER");
            assert_eq!(server.len(), 1, "{via} {compression}: {spans:#?}");
            assert_eq!(server[0]["attributes"]["url.path"], path.as_str(), "{via} {compression}");
            if via == "http" {
                let (_, _, e) = get_json(&format!("http://127.0.0.1:{}/exports", recv.http)).await;
                let want = if compression == "gzip" { Value::from("gzip") } else { Value::Null };
                assert_eq!(e["headers_http"]["content-encoding"], want, "{e}");
            }
            wire.push(sent.load(Ordering::SeqCst));
        }
        assert!(
            wire[0] > 4000 && wire[1] * 3 < wire[0],
            "{via}: {} bytes on the wire uncompressed, {} with gzip",
            wire[0],
            wire[1]
        );
    }
}
