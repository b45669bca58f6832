//! Executor tests over an in-process fake caller, on tokio's paused clock (so timings are exact).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;
use crate::plan::{AggregateSpec, BodySpec, CallSpec, ShapeSpec, Target};

#[derive(Clone)]
enum B {
    /// Status, content type, body, delay.
    Raw(u16, &'static str, Bytes, Duration),
    /// Fail with this kind after a delay.
    Err(ErrorKind, Duration),
}

#[allow(clippy::needless_pass_by_value)] // called with `json!` values
fn ok(v: Value, ms: u64) -> B {
    B::Raw(200, "application/json", Bytes::from(v.to_string()), Duration::from_millis(ms))
}

#[derive(Default)]
struct Fake {
    by_name: HashMap<String, B>,
    /// Requests in the order they started, with the (paused) time they started at.
    seen: Mutex<Vec<(CallRequest, Instant)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Calls dropped before they finished (cancelled).
    cancelled: Arc<AtomicUsize>,
}

struct Guard {
    done: bool,
    cancelled: Arc<AtomicUsize>,
}

impl Guard {
    fn disarm(&mut self) {
        self.done = true;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Fake {
    fn new(list: &[(&str, B)]) -> Fake {
        Fake { by_name: list.iter().map(|(n, b)| (n.to_string(), b.clone())).collect(), ..Fake::default() }
    }

    fn seen(&self, name: &str) -> CallRequest {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().find(|(r, _)| r.name == name).map(|(r, _)| r.clone()).unwrap_or_else(|| panic!("{name} not called"))
    }

    fn started_at(&self, name: &str) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().find(|(r, _)| r.name == name).map(|(_, t)| *t)
    }
}

impl Caller for Fake {
    fn call(&self, req: CallRequest) -> impl Future<Output = Result<CallResponse, Error>> + Send {
        let b = self.by_name.get(&req.name).cloned().unwrap_or(B::Err(ErrorKind::ConnectFailed, Duration::ZERO));
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).push((req, Instant::now()));
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut guard = Guard { done: false, cancelled: self.cancelled.clone() };
        async move {
            let r = match b {
                B::Raw(status, ct, body, d) => {
                    tokio::time::sleep(d).await;
                    let mut headers = http::HeaderMap::new();
                    if !ct.is_empty() {
                        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
                    }
                    Ok(CallResponse { status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK), headers, body })
                }
                B::Err(k, d) => {
                    tokio::time::sleep(d).await;
                    Err(Error::new(k, "fake failure at 127.0.0.1:1"))
                }
            };
            guard.disarm();
            r
        }
    }
}

// The in-flight counter goes down when a call's future ends or is dropped.
struct Counting<'a>(&'a Fake);

impl Caller for Counting<'_> {
    fn call(&self, req: CallRequest) -> impl Future<Output = Result<CallResponse, Error>> + Send {
        let f = self.0.call(req);
        let fake = self.0;
        async move {
            struct Dec<'a>(&'a AtomicUsize);
            impl Drop for Dec<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _d = Dec(&fake.in_flight);
            f.await
        }
    }
}

fn call(name: &str, path: &str) -> CallSpec {
    CallSpec {
        name: name.into(),
        target: Target::Service { name: format!("{name}-svc"), index: 0 },
        method: None,
        path: path.into(),
        query: vec![],
        headers: vec![],
        body: BodySpec::None,
        timeout: None,
        required: None,
        max_body_bytes: None,
        after: vec![],
        shape: ShapeSpec::default(),
    }
}

fn optional(mut c: CallSpec) -> CallSpec {
    c.required = Some(false);
    c
}

fn grouped(mut c: CallSpec, g: &str) -> CallSpec {
    c.shape.group = Some(g.into());
    c
}

fn plan(calls: Vec<CallSpec>) -> Plan {
    Plan::build(&AggregateSpec { calls, ..AggregateSpec::default() }).unwrap_or_else(|e| panic!("{e:?}"))
}

fn client() -> ClientRequest {
    ClientRequest {
        params: vec![("id".into(), "42".into())],
        query: Some("lang=nb".into()),
        request_id: Some("req-1".into()),
        consumer: Some("ann".into()),
        propagate: vec![(HeaderName::from_static("x-request-id"), HeaderValue::from_static("req-1"))],
        ..ClientRequest::default()
    }
}

async fn run(plan: &Plan, fake: &Fake) -> Result<Aggregated, AggregateError> {
    execute(plan, &Counting(fake), &client()).await
}

fn body(a: &Aggregated) -> Value {
    serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("{e}"))
}

fn header<'a>(a: &'a Aggregated, name: &str) -> Option<&'a str> {
    a.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.to_str().ok())
}

fn three() -> Fake {
    Fake::new(&[
        ("user", ok(json!({"id": 42, "name": "Ann", "shared": {"a": 1, "x": "user"}}), 100)),
        ("orders", ok(json!({"orders": [{"id": 1}, {"id": 2}], "shared": {"b": 2, "x": "orders"}}), 300)),
        ("news", ok(json!({"headline": "hi", "shared": {"x": "news"}}), 200)),
    ])
}

#[tokio::test(start_paused = true)]
async fn three_backends_merged_at_root_in_parallel() {
    let fake = three();
    let p = plan(vec![call("user", "/users/{id}"), call("orders", "/orders"), call("news", "/news")]);
    let t0 = Instant::now();
    let a = run(&p, &fake).await.unwrap_or_else(|e| panic!("{e:?}"));
    // Parallel: the slowest backend's time, not the sum.
    assert_eq!(t0.elapsed(), Duration::from_millis(300));
    // Deep merge in declaration order; on a conflict the later call wins (news over orders
    // over user), whatever the arrival order was.
    assert_eq!(
        body(&a),
        json!({"id": 42, "name": "Ann", "orders": [{"id": 1}, {"id": 2}], "headline": "hi", "shared": {"a": 1, "b": 2, "x": "news"}})
    );
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(header(&a, "content-type"), Some("application/json"));
    assert_eq!(header(&a, "x-aggregate-incomplete"), None);
    assert!(a.incomplete.is_empty());
    assert_eq!(fake.seen("user").path_and_query, "/users/42");
    assert_eq!(
        a.calls.iter().map(|c| (c.name.as_str(), c.outcome.clone(), c.duration)).collect::<Vec<_>>(),
        vec![
            ("user", Outcome::Ok { status: 200 }, Some(Duration::from_millis(100))),
            ("orders", Outcome::Ok { status: 200 }, Some(Duration::from_millis(300))),
            ("news", Outcome::Ok { status: 200 }, Some(Duration::from_millis(200))),
        ]
    );
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn three_backends_grouped() {
    let fake = three();
    let p = plan(vec![
        grouped(call("user", "/users/{id}"), "user"),
        grouped(call("orders", "/orders"), "orders"),
        grouped(call("news", "/news"), "news"),
    ]);
    let a = run(&p, &fake).await.unwrap_or_else(|e| panic!("{e:?}"));
    let b = body(&a);
    assert_eq!(b["user"]["name"], "Ann");
    assert_eq!(b["orders"]["orders"][1]["id"], 2);
    assert_eq!(b["news"]["shared"], json!({"x": "news"}));
    assert_eq!(b.as_object().map(|o| o.len()), Some(3));
}

#[tokio::test(start_paused = true)]
async fn allow_deny_rename_target_wrap() {
    let fake = Fake::new(&[
        (
            "user",
            ok(
                json!({"data": {"user": {"id": 42, "name": "Ann", "password_hash": "x", "address": {"city": "Oslo", "zip": "0150"}}}}),
                10,
            ),
        ),
        (
            "orders",
            ok(json!([{"id": 1, "total": 10, "internal": true}, {"id": 2, "total": 20, "internal": false}]), 10),
        ),
    ]);
    let mut user = call("user", "/users/{id}");
    user.shape = ShapeSpec {
        target: Some("data.user".into()),
        deny: vec!["password_hash".into(), "address.zip".into()],
        mapping: vec![("name".into(), "display_name".into()), ("address.city".into(), "city".into())],
        ..ShapeSpec::default()
    };
    let mut orders = call("orders", "/orders");
    orders.shape = ShapeSpec {
        wrap: Some("orders".into()),
        allow: vec!["orders.id".into(), "orders.total".into()],
        ..ShapeSpec::default()
    };
    let a = run(&plan(vec![user, orders]), &fake).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        body(&a),
        json!({"id": 42, "display_name": "Ann", "city": "Oslo", "address": {}, "orders": [{"id": 1, "total": 10}, {"id": 2, "total": 20}]})
    );
}

#[tokio::test(start_paused = true)]
async fn sequential_dependency_waits_and_encodes_values() {
    let fake = Fake::new(&[
        ("user", ok(json!({"account_id": "a/b 7", "tier": 3}), 100)),
        ("orders", ok(json!({"orders": [1]}), 50)),
        ("news", ok(json!({"news": true}), 20)),
    ]);
    let mut orders = call("orders", "/accounts/{resp0.account_id}/orders?limit=5&tier={resp.user.tier}");
    orders.query = vec![("lang".into(), "{query.lang}".into()), ("absent".into(), "{query.nope}".into())];
    orders.headers = vec![("x-tier".into(), "{resp0.tier}".into())];
    let p = plan(vec![call("user", "/users/{id}"), orders, call("news", "/news")]);
    let t0 = Instant::now();
    let a = run(&p, &fake).await.unwrap_or_else(|e| panic!("{e:?}"));
    // user (100ms) then orders (50ms); news ran beside them.
    assert_eq!(t0.elapsed(), Duration::from_millis(150));
    assert_eq!(fake.started_at("orders").map(|t| t - t0), Some(Duration::from_millis(100)));
    assert_eq!(fake.started_at("news").map(|t| t - t0), Some(Duration::ZERO));
    let o = fake.seen("orders");
    // The value is one path segment: '/' and ' ' are encoded; the absent client query
    // parameter is left out.
    assert_eq!(o.path_and_query, "/accounts/a%2Fb%207/orders?limit=5&tier=3&lang=nb");
    assert!(o.headers.iter().any(|(k, v)| k == "x-tier" && v == "3"));
    assert_eq!(body(&a), json!({"account_id": "a/b 7", "tier": 3, "orders": [1], "news": true}));
}

#[tokio::test(start_paused = true)]
async fn a_response_value_that_would_escape_its_segment_fails_the_call() {
    let fake = Fake::new(&[("user", ok(json!({"account_id": ".."}), 10)), ("orders", ok(json!({}), 10))]);
    let p = plan(vec![call("user", "/users/{id}"), optional(call("orders", "/accounts/{resp0.account_id}/orders"))]);
    let a = run(&p, &fake).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(a.incomplete, vec!["orders"]);
    assert!(
        matches!(&a.calls[1].outcome, Outcome::Failed { code: "aggregate_call_failed", reason } if reason.contains("dot segment"))
    );
    assert_eq!(fake.seen.lock().map(|s| s.len()).unwrap_or(0), 1, "orders must not be called");
}

#[tokio::test(start_paused = true)]
async fn a_bad_client_value_is_a_400_and_nothing_is_called() {
    let fake = three();
    let p = plan(vec![call("user", "/users/{id}"), call("orders", "/orders")]);
    let mut c = client();
    c.params = vec![("id".into(), "..".into())];
    let e = execute(&p, &Counting(&fake), &c).await.err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    assert_eq!(e.call.as_deref(), Some("user"));
    assert!(fake.seen.lock().map(|s| s.is_empty()).unwrap_or(false));
    let v: Value = serde_json::from_slice(&e.body()).unwrap_or_default();
    assert_eq!(v["error"], "bad_request");
}

#[tokio::test(start_paused = true)]
async fn slow_optional_backend_times_out_and_the_answer_is_partial() {
    let fake = Fake::new(&[
        ("user", ok(json!({"id": 42}), 100)),
        ("reco", ok(json!({"reco": [1]}), 5_000)),
        ("news", ok(json!({"news": 1}), 50)),
    ]);
    let mut reco = optional(call("reco", "/reco"));
    reco.timeout = Some(Duration::from_millis(250));
    let p = plan(vec![call("user", "/users/{id}"), reco, optional(call("news", "/news"))]);
    let t0 = Instant::now();
    let a = run(&p, &fake).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(t0.elapsed(), Duration::from_millis(250));
    assert_eq!(body(&a), json!({"id": 42, "news": 1}));
    assert_eq!(header(&a, "x-aggregate-incomplete"), Some("reco"));
    assert_eq!(
        a.calls[1].outcome,
        Outcome::Failed { code: "upstream_timeout", reason: "call \"reco\" failed: upstream_timeout".into() }
    );
    // The timed-out call was cancelled, not left running.
    assert_eq!(fake.cancelled.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_gives_a_partial_answer_or_a_504() {
    let fake = Fake::new(&[("user", ok(json!({"id": 42}), 100)), ("slow", ok(json!({"s": 1}), 60_000))]);
    let spec = |slow_required: bool| AggregateSpec {
        calls: vec![call("user", "/u"), {
            let mut c = call("slow", "/s");
            c.required = Some(slow_required);
            c
        }],
        timeout: Some(Duration::from_secs(2)),
        ..AggregateSpec::default()
    };
    let p = Plan::build(&spec(false)).unwrap_or_else(|e| panic!("{e:?}"));
    let t0 = Instant::now();
    let a = run(&p, &fake).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    assert_eq!(header(&a, "x-aggregate-incomplete"), Some("slow"));
    assert!(matches!(a.calls[1].outcome, Outcome::Failed { code: "request_timeout_total", .. }));
    let p = Plan::build(&spec(true)).unwrap_or_else(|e| panic!("{e:?}"));
    let e = run(&p, &fake).await.err().unwrap_or_else(|| panic!("answered"));
    assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(e.call.as_deref(), Some("slow"));
    assert_eq!(fake.cancelled.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_down_required_backend_fails_the_call_and_cancels_the_others() {
    let fake = Fake::new(&[
        ("user", B::Err(ErrorKind::ConnectFailed, Duration::from_millis(10))),
        ("orders", ok(json!({}), 1_000)),
        ("news", ok(json!({}), 1_000)),
    ]);
    let p = plan(vec![call("user", "/u"), call("orders", "/o"), optional(call("news", "/n"))]);
    let t0 = Instant::now();
    let e = run(&p, &fake).await.err().unwrap_or_else(|| panic!("answered"));
    assert_eq!(t0.elapsed(), Duration::from_millis(10), "fails fast");
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    let v: Value = serde_json::from_slice(&e.body()).unwrap_or_default();
    assert_eq!(v["error"], "upstream_connect_failed");
    assert_eq!(v["call"], "user");
    // The cause's address stays in the log.
    assert!(!v.to_string().contains("127.0.0.1"), "{v}");
    assert_eq!(fake.cancelled.load(Ordering::SeqCst), 2);
    assert_eq!(e.calls[1].outcome, Outcome::NotStarted);
}

#[tokio::test(start_paused = true)]
async fn a_down_optional_backend_is_left_out_with_its_dependents() {
    let fake = Fake::new(&[
        ("user", ok(json!({"id": 1}), 10)),
        ("loyalty", B::Raw(503, "text/html", Bytes::from_static(b"<h1>down</h1>"), Duration::from_millis(5))),
        ("rewards", ok(json!({"r": 1}), 10)),
    ]);
    let p = plan(vec![
        call("user", "/u"),
        optional(call("loyalty", "/l")),
        optional(call("rewards", "/r?level={resp.loyalty.level}")),
    ]);
    let a = run(&p, &fake).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(body(&a), json!({"id": 1}));
    assert_eq!(header(&a, "x-aggregate-incomplete"), Some("loyalty,rewards"));
    assert_eq!(
        a.calls[1].outcome,
        Outcome::Failed { code: "aggregate_call_failed", reason: "call \"loyalty\" answered 503".into() }
    );
    assert!(matches!(&a.calls[2].outcome, Outcome::Failed { reason, .. } if reason.contains("needs call \"loyalty\"")));
    // A required call that needs a failed optional one fails the aggregate.
    let p = plan(vec![call("user", "/u"), optional(call("loyalty", "/l")), call("rewards", "/r?level={resp1.level}")]);
    let e = run(&p, &fake).await.err().unwrap_or_else(|| panic!("answered"));
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(e.call.as_deref(), Some("rewards"));
}

#[tokio::test(start_paused = true)]
async fn non_json_is_refused_with_a_502_even_from_an_optional_backend() {
    for (ct, b, want) in [
        ("text/html", &b"<html></html>"[..], "answered text/html, not JSON"),
        ("application/json", &b"{not json"[..], "not valid JSON"),
        ("", &b"plain"[..], "not valid JSON"),
    ] {
        let fake = Fake::new(&[
            ("user", ok(json!({"id": 1}), 10)),
            ("html", B::Raw(200, ct, Bytes::from_static(b), Duration::from_millis(10))),
        ]);
        let p = plan(vec![call("user", "/u"), optional(call("html", "/h"))]);
        let e = run(&p, &fake).await.err().unwrap_or_else(|| panic!("answered"));
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(e.error.kind(), ErrorKind::ResponseNotEditable);
        assert!(e.detail.contains(want), "{}", e.detail);
        let v: Value = serde_json::from_slice(&e.body()).unwrap_or_default();
        assert_eq!(v["call"], "html");
    }
    // `+json` types and 204 are fine.
    let fake = Fake::new(&[
        ("a", B::Raw(200, "application/problem+json; charset=utf-8", Bytes::from_static(b"{\"a\":1}"), Duration::ZERO)),
        ("b", B::Raw(204, "", Bytes::new(), Duration::ZERO)),
    ]);
    let a = run(&plan(vec![call("a", "/a"), call("b", "/b")]), &fake).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(body(&a), json!({"a": 1}));
}

#[tokio::test(start_paused = true)]
async fn an_array_at_the_root_is_refused_with_a_502() {
    let fake = Fake::new(&[("list", ok(json!([1, 2]), 1))]);
    let e = run(&plan(vec![call("list", "/l")]), &fake).await.err().unwrap_or_else(|| panic!("answered"));
    assert_eq!(e.error.kind(), ErrorKind::ResponseNotEditable);
    assert!(e.detail.contains("set `wrap` or `group`"), "{}", e.detail);
}

#[tokio::test(start_paused = true)]
async fn an_oversize_response_is_a_clear_502() {
    let big = Bytes::from(format!("{{\"x\":\"{}\"}}", "a".repeat(2000)));
    let fake = Fake::new(&[
        ("big", B::Raw(200, "application/json", big, Duration::from_millis(1))),
        ("capped", B::Err(ErrorKind::ResponseTooLarge, Duration::from_millis(1))),
    ]);
    let mut c = optional(call("big", "/b"));
    c.max_body_bytes = Some(1000);
    let e = run(&plan(vec![c]), &fake).await.err().unwrap_or_else(|| panic!("answered"));
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    let v: Value = serde_json::from_slice(&e.body()).unwrap_or_default();
    assert_eq!(v["error"], "response_too_large");
    assert_eq!(v["detail"], "call \"big\" answered more than 1000 bytes");
    // The caller saw the cap, and stopping early is reported the same way.
    assert_eq!(fake.seen("big").max_body_bytes, 1000);
    let e = run(&plan(vec![optional(call("capped", "/c"))]), &fake).await.err().unwrap_or_else(|| panic!("answered"));
    assert_eq!(e.error.kind(), ErrorKind::ResponseTooLarge);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_executor_cancels_every_call_in_flight() {
    let fake = Arc::new(Fake::new(&[
        ("a", ok(json!({}), 60_000)),
        ("b", ok(json!({}), 60_000)),
        ("c", ok(json!({}), 60_000)),
    ]));
    let p = Arc::new(plan(vec![call("a", "/a"), call("b", "/b"), call("c", "/c?x={resp0.x}")]));
    let (f2, p2) = (fake.clone(), p.clone());
    let task = tokio::spawn(async move { execute(&p2, &Counting(&f2), &client()).await.is_ok() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(fake.cancelled.load(Ordering::SeqCst), 0);
    task.abort();
    let _ = task.await;
    assert_eq!(fake.cancelled.load(Ordering::SeqCst), 2);
    assert_eq!(fake.in_flight.load(Ordering::SeqCst), 0);
    // `c` waited for `a` and never started.
    assert!(fake.started_at("c").is_none());
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded_per_request() {
    let fake = Fake::new(&[
        ("a", ok(json!({"a": 1}), 100)),
        ("b", ok(json!({"b": 1}), 100)),
        ("c", ok(json!({"c": 1}), 100)),
        ("d", ok(json!({"d": 1}), 100)),
        ("e", ok(json!({"e": 1}), 100)),
    ]);
    let calls = ["a", "b", "c", "d", "e"].iter().map(|n| call(n, "/x")).collect();
    let p = Plan::build(&AggregateSpec { calls, max_concurrency: Some(2), ..AggregateSpec::default() })
        .unwrap_or_else(|e| panic!("{e:?}"));
    let t0 = Instant::now();
    let a = run(&p, &fake).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(t0.elapsed(), Duration::from_millis(300));
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(body(&a), json!({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}));
}

#[tokio::test(start_paused = true)]
async fn identity_body_and_method_reach_each_call() {
    let fake =
        Fake::new(&[("create", ok(json!({"id": 9}), 1)), ("notify", ok(json!({}), 1)), ("get", ok(json!({}), 1))]);
    let mut create = call("create", "/items");
    create.method = Some("post".into());
    create.body = BodySpec::Client;
    let mut notify = call("notify", "/notify");
    notify.method = Some("PUT".into());
    notify.body = BodySpec::Json(json!({"item": "{resp0.id}", "by": "{consumer.username}", "rid": "{request_id}"}));
    notify.headers = vec![("x-request-id".into(), "override-{request_id}".into())];
    let p = plan(vec![create, notify, call("get", "/g")]);
    let mut c = client();
    c.body = Bytes::from_static(b"{\"name\":\"x\"}");
    c.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    execute(&p, &Counting(&fake), &c).await.unwrap_or_else(|e| panic!("{e:?}"));
    let cr = fake.seen("create");
    assert_eq!(cr.method, http::Method::POST);
    assert_eq!(&cr.body[..], b"{\"name\":\"x\"}");
    assert!(cr.headers.iter().any(|(k, v)| k == "content-type" && v == "application/json; charset=utf-8"));
    assert!(cr.headers.iter().any(|(k, v)| k == "x-request-id" && v == "req-1"));
    let n = fake.seen("notify");
    assert_eq!(n.method, http::Method::PUT);
    assert_eq!(serde_json::from_slice::<Value>(&n.body).ok(), Some(json!({"item": 9, "by": "ann", "rid": "req-1"})));
    assert_eq!(n.headers.iter().filter(|(k, _)| k == "x-request-id").count(), 1);
    assert!(n.headers.iter().any(|(k, v)| k == "x-request-id" && v == "override-req-1"));
    let g = fake.seen("get");
    assert!(g.body.is_empty());
    assert!(g.headers.iter().any(|(k, v)| k == "x-request-id" && v == "req-1"));
    assert_eq!(g.target, Target::Service { name: "get-svc".into(), index: 0 });
}
