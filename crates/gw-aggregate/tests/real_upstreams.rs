//! The executor over real sockets: real HTTP upstreams (gw-test-util) and a small test-only
//! caller on reqwest. (The gateway's own caller, on its upstream exchange, comes with the
//! wiring; these tests show the executor's IO behaviour: timing, cancellation, caps.)

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gw_aggregate::plan::{AggregateSpec, BodySpec, CallSpec, ShapeSpec, Target};
use gw_aggregate::{CallRequest, CallResponse, Caller, ClientRequest, Plan, execute};
use gw_error::{Error, ErrorKind};
use gw_test_util::{Behavior, Handler, Upstream, full};
use http::{HeaderName, HeaderValue, Response};
use serde_json::{Value, json};

/// Test-only caller: service name -> base URL, on a reqwest client, reading at most the cap.
struct HttpCaller {
    client: reqwest::Client,
    bases: HashMap<String, String>,
}

impl Caller for HttpCaller {
    fn call(&self, req: CallRequest) -> impl Future<Output = Result<CallResponse, Error>> + Send {
        let base = match &req.target {
            Target::Service { name, .. } => self.bases.get(name).cloned().unwrap_or_default(),
            Target::Url(u) => u.clone(),
        };
        let client = self.client.clone();
        async move {
            let mut rb =
                client.request(req.method.clone(), format!("{base}{}", req.path_and_query)).body(req.body.clone());
            for (k, v) in &req.headers {
                rb = rb.header(k, v);
            }
            let mut resp = rb.send().await.map_err(|e| {
                let kind = if e.is_connect() { ErrorKind::ConnectFailed } else { ErrorKind::UpstreamProtocol };
                Error::new(kind, "test caller").with_cause(e)
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) =
                resp.chunk().await.map_err(|e| Error::new(ErrorKind::UpstreamProtocol, "body").with_cause(e))?
            {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > req.max_body_bytes {
                    return Err(Error::new(ErrorKind::ResponseTooLarge, "over the cap"));
                }
            }
            Ok(CallResponse { status, headers, body: Bytes::from(body) })
        }
    }
}

#[allow(clippy::needless_pass_by_value)] // called with `json!` values
fn json_upstream(v: Value, delay: Duration) -> Handler {
    let body = v.to_string();
    Arc::new(move |_req: http::Request<hyper::body::Incoming>| {
        let body = body.clone();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let mut r = Response::new(full(body));
            r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            r
        })
    })
}

fn raw_upstream(ct: &'static str, body: Bytes) -> Handler {
    Arc::new(move |_req: http::Request<hyper::body::Incoming>| {
        let body = body.clone();
        Box::pin(async move {
            let mut r = Response::new(full(body));
            r.headers_mut().insert("content-type", HeaderValue::from_static(ct));
            r
        })
    })
}

fn call(name: &str, service: &str, path: &str) -> CallSpec {
    CallSpec {
        name: name.into(),
        target: Target::Service { name: service.into(), index: 0 },
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

fn caller(ups: &[(&str, &Upstream)]) -> HttpCaller {
    HttpCaller {
        client: reqwest::Client::new(),
        bases: ups.iter().map(|(n, u)| (n.to_string(), format!("http://{}", u.authority()))).collect(),
    }
}

fn plan(calls: Vec<CallSpec>) -> Plan {
    Plan::build(&AggregateSpec { calls, ..AggregateSpec::default() }).unwrap_or_else(|e| panic!("{e:?}"))
}

fn client() -> ClientRequest {
    ClientRequest {
        params: vec![("id".into(), "42".into())],
        request_id: Some("rid-7".into()),
        propagate: vec![(HeaderName::from_static("x-request-id"), HeaderValue::from_static("rid-7"))],
        ..ClientRequest::default()
    }
}

#[tokio::test]
async fn three_real_backends_merged_in_parallel_and_grouped() {
    let user =
        Upstream::start(Behavior::Custom(json_upstream(json!({"id": 42, "name": "Ann"}), Duration::from_millis(500))))
            .await;
    let orders =
        Upstream::start(Behavior::Custom(json_upstream(json!({"orders": [1, 2]}), Duration::from_millis(500)))).await;
    let echo = Upstream::start(Behavior::Echo("news")).await;
    let c = caller(&[("users", &user), ("orders", &orders), ("news", &echo)]);
    let mut news = call("news", "news", "/news/{id}");
    news.shape = ShapeSpec {
        group: Some("news".into()),
        allow: vec!["path".into(), "headers.x-request-id".into()],
        ..ShapeSpec::default()
    };
    let p = plan(vec![call("user", "users", "/users/{id}"), call("orders", "orders", "/orders"), news]);
    let t0 = Instant::now();
    let a = execute(&p, &c, &client()).await.unwrap_or_else(|e| panic!("{e:?}"));
    let took = t0.elapsed();
    // Two 500ms backends in parallel: under their sum (one after the other takes >= 1s).
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(1000), "{took:?}");
    let v: Value = serde_json::from_slice(&a.body).unwrap_or_default();
    assert_eq!(
        v,
        json!({"id": 42, "name": "Ann", "orders": [1, 2], "news": {"path": "/news/42", "headers": {"x-request-id": "rid-7"}}})
    );
    assert_eq!((user.hits(), orders.hits(), echo.hits()), (1, 1, 1));
}

#[tokio::test]
async fn a_sequential_step_sends_the_earlier_value_encoded_on_the_wire() {
    let user = Upstream::start(Behavior::Custom(json_upstream(json!({"account_id": "a/b 7?#"}), Duration::ZERO))).await;
    let echo = Upstream::start(Behavior::Echo("orders")).await;
    let c = caller(&[("users", &user), ("orders", &echo)]);
    let mut orders = call("orders", "orders", "/accounts/{resp0.account_id}/orders?user={resp.user.account_id}");
    orders.shape.group = Some("orders".into());
    orders.shape.allow = vec!["path".into(), "query".into()];
    let a = execute(&plan(vec![call("user", "users", "/users/{id}"), orders]), &c, &client())
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let v: Value = serde_json::from_slice(&a.body).unwrap_or_default();
    assert_eq!(v["orders"]["path"], "/accounts/a%2Fb%207%3F%23/orders");
    assert_eq!(v["orders"]["query"], "user=a%2Fb%207%3F%23");
}

#[tokio::test]
async fn a_slow_real_backend_times_out_into_a_partial_answer() {
    let fast = Upstream::start(Behavior::Custom(json_upstream(json!({"fast": true}), Duration::ZERO))).await;
    let slow = Upstream::start(Behavior::Delay(Duration::from_secs(5))).await;
    let c = caller(&[("fast", &fast), ("slow", &slow)]);
    let mut s = call("slow", "slow", "/slow");
    s.required = Some(false);
    s.timeout = Some(Duration::from_millis(200));
    let t0 = Instant::now();
    let a =
        execute(&plan(vec![call("fast", "fast", "/f"), s]), &c, &client()).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(a.incomplete, vec!["slow"]);
    assert!(a.headers.iter().any(|(k, v)| k == "x-aggregate-incomplete" && v == "slow"));
    assert_eq!(serde_json::from_slice::<Value>(&a.body).ok(), Some(json!({"fast": true})));
}

#[tokio::test]
async fn a_down_real_backend_fails_when_required_and_is_left_out_when_optional() {
    let up = Upstream::start(Behavior::Custom(json_upstream(json!({"up": 1}), Duration::ZERO))).await;
    let down = Upstream::start(Behavior::Echo("x")).await;
    down.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = caller(&[("up", &up), ("down", &down)]);
    let e = execute(&plan(vec![call("up", "up", "/"), call("down", "down", "/")]), &c, &client())
        .await
        .err()
        .unwrap_or_else(|| panic!("answered"));
    assert_eq!(e.status(), 502);
    let v: Value = serde_json::from_slice(&e.body()).unwrap_or_default();
    assert_eq!((v["error"].as_str(), v["call"].as_str()), (Some("upstream_connect_failed"), Some("down")));
    let mut opt = call("down", "down", "/");
    opt.required = Some(false);
    let a = execute(&plan(vec![call("up", "up", "/"), opt]), &c, &client()).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(a.incomplete, vec!["down"]);
}

#[tokio::test]
async fn non_json_and_oversize_real_responses_are_clear_502s() {
    let html =
        Upstream::start(Behavior::Custom(raw_upstream("text/html", Bytes::from_static(b"<html>hi</html>")))).await;
    let big_doc = format!("{{\"x\":\"{}\"}}", "a".repeat(4 << 20));
    let big = Upstream::start(Behavior::Custom(raw_upstream("application/json", Bytes::from(big_doc)))).await;
    let c = caller(&[("html", &html), ("big", &big)]);
    let e = execute(&plan(vec![call("html", "html", "/")]), &c, &client())
        .await
        .err()
        .unwrap_or_else(|| panic!("answered"));
    let v: Value = serde_json::from_slice(&e.body()).unwrap_or_default();
    assert_eq!(e.status(), 502);
    assert_eq!(v["error"], "response_not_editable");
    assert_eq!(v["detail"], "call \"html\" answered text/html, not JSON");
    let e =
        execute(&plan(vec![call("big", "big", "/")]), &c, &client()).await.err().unwrap_or_else(|| panic!("answered"));
    let v: Value = serde_json::from_slice(&e.body()).unwrap_or_default();
    assert_eq!(e.status(), 502);
    assert_eq!(v["error"], "response_too_large");
    assert_eq!(v["detail"], format!("call \"big\" answered more than {} bytes", 1 << 20));
}

#[tokio::test]
async fn dropping_the_executor_closes_the_backend_requests() {
    // Each upstream handler holds a guard; the server drops the handler when its connection
    // closes, which happens only if the executor really dropped the calls.
    let dropped = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (d, s) = (dropped.clone(), started.clone());
    let hang: Handler = Arc::new(move |_req: http::Request<hyper::body::Incoming>| {
        let g = Guard(d.clone());
        s.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let _g = g;
            std::future::pending::<()>().await;
            Response::new(full(Bytes::new()))
        })
    });
    let a = Upstream::start(Behavior::Custom(hang.clone())).await;
    let b = Upstream::start(Behavior::Custom(hang)).await;
    let c = Arc::new(caller(&[("a", &a), ("b", &b)]));
    let p = Arc::new(plan(vec![call("a", "a", "/"), call("b", "b", "/")]));
    let (c2, p2) = (c.clone(), p.clone());
    let task = tokio::spawn(async move { execute(&p2, &*c2, &client()).await.is_ok() });
    let t0 = Instant::now();
    while started.load(Ordering::SeqCst) < 2 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(started.load(Ordering::SeqCst), 2);
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
    task.abort();
    let _ = task.await;
    let t0 = Instant::now();
    while dropped.load(Ordering::SeqCst) < 2 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "the backends still hold the requests");
}
