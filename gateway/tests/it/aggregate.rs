//! Services of `type: aggregate` through the gateway, over real sockets: three backends (two
//! named services and a URL) merged at the root and grouped, with deny/rename/allow/target and
//! a sequential dependency; authentication once on the client request with the consumer and
//! request id sent to every backend; metrics and the access log per call; partial answers,
//! required backends down, non-JSON backends; a client that leaves cancels the calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

type Seen = Arc<Mutex<Vec<(String, http::HeaderMap)>>>;

/// A backend answering `body` with `ctype` after `delay`, recording each request's target and
/// header fields.
async fn backend(delay: Duration, ctype: &'static str, body: Value) -> (Upstream, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let body = body.to_string();
    let up = Upstream::start(Behavior::Custom(Arc::new(move |req| {
        let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
        s.lock().unwrap().push((target, req.headers().clone()));
        let body = body.clone();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let mut r = http::Response::new(gw_test_util::full(body));
            r.headers_mut().insert("content-type", http::HeaderValue::from_static(ctype));
            r
        })
    })))
    .await;
    (up, seen)
}

const CONSUMERS: &str =
    "consumers:\n  - username: alice\n    credentials:\n      - { type: key-auth, id: alice-key, key: alice-secret }\n";

/// Three backends merged: the user (deny, rename), the user's orders (needs the user's account,
/// so it runs second; a JSON array wrapped, allowed fields, grouped) and the news from a URL
/// (a nested object extracted). Authentication runs once on the client request; every backend
/// gets the consumer and the request id; each call is counted in the metrics and listed in
/// the access log line.
#[tokio::test]
async fn backends_merged_with_a_dependency_auth_once_and_per_call_records() {
    let (users, users_seen) = backend(
        Duration::ZERO,
        "application/json",
        json!({ "id": 42, "name": "Ann", "account_id": "a-17", "password_hash": "x" }),
    )
    .await;
    let (orders, orders_seen) = backend(
        Duration::ZERO,
        "application/json; charset=utf-8",
        json!([{ "id": 1, "total": 5, "secret": "s" }, { "id": 2, "total": 7, "secret": "t" }]),
    )
    .await;
    let (news, news_seen) =
        backend(Duration::from_millis(150), "application/vnd.news+json", json!({ "data": { "news": ["n1"] } })).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ target: {} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: users\n    url: http://{}\n  - name: orders\n    url: http://{}\n  - name: mobile-home\n    type: aggregate\n    aggregate:\n      timeout: 2s\n      calls:\n        - name: user\n          service: users\n          path: /users/{{id}}\n          deny: [password_hash]\n          mapping: {{ name: display_name }}\n        - name: orders\n          service: orders\n          path: /orders?account={{resp0.account_id}}\n          wrap: items\n          allow: [items.id, items.total]\n          group: orders\n        - name: news\n          url: http://{}/v2\n          path: /news\n          query: {{ lang: \"{{query.lang}}\" }}\n          target: data\nroutes:\n  - name: home\n    service: mobile-home\n    paths: [\"/home/{{id}}\"]\nplugins:\n  - plugin: key-auth\n    route: home\n{CONSUMERS}",
        log.display(),
        users.authority(),
        orders.authority(),
        news.authority()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let url = format!("{}/home/42?lang=nb", gw.url("main"));

    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401, "no key: refused before any backend");
    assert_eq!(users.hits() + orders.hits() + news.hits(), 0);

    let t = Instant::now();
    let r = client().get(&url).header("x-api-key", "alice-secret").send().await.unwrap();
    let took = t.elapsed();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-aggregate-incomplete").is_none());
    assert_eq!(r.headers()["content-type"], "application/json");
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "id": 42, "display_name": "Ann", "account_id": "a-17",
            "orders": { "items": [{ "id": 1, "total": 5 }, { "id": 2, "total": 7 }] },
            "news": ["n1"]
        })
    );
    // The news call ran beside the two sequential ones: about its 150 ms, not a sum.
    assert!(took < Duration::from_millis(1500), "{took:?}");

    assert_eq!(users_seen.lock().unwrap()[0].0, "/users/42");
    assert_eq!(orders_seen.lock().unwrap()[0].0, "/orders?account=a-17");
    assert_eq!(news_seen.lock().unwrap()[0].0, "/v2/news?lang=nb");
    for (name, seen) in [("users", &users_seen), ("orders", &orders_seen), ("news", &news_seen)] {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{name}: one call");
        let h = &seen[0].1;
        assert_eq!(h["x-consumer-username"], "alice", "{name}: {h:?}");
        assert_eq!(h["x-request-id"], request_id.as_str(), "{name}: {h:?}");
        assert!(h.get("x-api-key").is_none(), "{name}: the client's credential is not passed on: {h:?}");
    }

    let metrics = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
    for call in ["user", "orders", "news"] {
        let line =
            format!("gatehouse_aggregate_calls_total{{service=\"mobile-home\",call=\"{call}\",outcome=\"2xx\"}} 1");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
        let count =
            format!("gatehouse_aggregate_call_duration_seconds_count{{service=\"mobile-home\",call=\"{call}\"}} 1");
        assert!(metrics.contains(&count), "missing {count}");
    }

    let mut line = None;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(&request_id)) {
            line = Some(serde_json::from_str::<Value>(l).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = line.expect("the access log line of the aggregate");
    let calls = line["calls"].as_str().unwrap_or_default().to_string();
    let names: Vec<&str> = calls.split(',').map(|c| c.split(':').next().unwrap_or("")).collect();
    assert_eq!(names, ["user", "orders", "news"], "{line}");
    assert!(calls.split(',').all(|c| c.split(':').nth(1) == Some("200")), "{line}");
}

/// Failures: an optional call that times out, or whose backend is down, leaves a partial answer
/// with the incomplete header (the timeout in about the call's time limit); a required backend
/// that is down fails the aggregate with a JSON error naming the call; a backend answering HTML,
/// or more than the call's `max_body_bytes`, fails it with 502 even when optional.
#[tokio::test]
async fn partial_answers_and_failures() {
    let (users, _) = backend(Duration::ZERO, "application/json", json!({ "id": 7 })).await;
    let (slow, _) = backend(Duration::from_secs(3), "application/json", json!({ "late": true })).await;
    let (html, _) = backend(Duration::ZERO, "text/html", json!("<p>hi</p>")).await;
    let big_list: Vec<Value> = (0..500).map(|i| json!({ "id": i, "pad": "x".repeat(20) })).collect();
    let (big, _) = backend(Duration::ZERO, "application/json", json!({ "items": big_list })).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let agg = |name: &str, second: &str| {
        format!(
            "  - name: {name}\n    type: aggregate\n    aggregate:\n      timeout: 2s\n      calls:\n        - name: user\n          service: users\n          path: /u\n{second}"
        )
    };
    let yaml = format!(
        "services:\n  - name: users\n    url: http://{}\n  - name: slow\n    url: http://{}\n  - name: html\n    url: http://{}\n  - name: big\n    url: http://{}\n  - name: dead\n    url: http://{dead}\n    retries: {{ attempts: 0 }}\n{}{}{}{}{}routes:\n  - name: partial\n    service: partial\n    paths: [/partial]\n  - name: down\n    service: down\n    paths: [/down]\n  - name: html\n    service: page\n    paths: [/html]\n  - name: optional-down\n    service: optional-down\n    paths: [/optional-down]\n  - name: big\n    service: huge\n    paths: [/big]\n",
        users.authority(),
        slow.authority(),
        html.authority(),
        big.authority(),
        agg(
            "partial",
            "        - name: feed\n          service: slow\n          path: /feed\n          required: false\n          timeout: 300ms\n"
        ),
        agg("down", "        - name: orders\n          service: dead\n          path: /o\n"),
        agg("page", "        - name: banner\n          service: html\n          path: /b\n          required: false\n"),
        agg(
            "optional-down",
            "        - name: orders\n          service: dead\n          path: /o\n          required: false\n"
        ),
        agg(
            "huge",
            "        - name: list\n          service: big\n          path: /l\n          required: false\n          max_body_bytes: 4KiB\n"
        ),
    );
    let gw = gateway(&yaml).await;
    let base = gw.url("main");

    let t = Instant::now();
    let r = client().get(format!("{base}/partial")).send().await.unwrap();
    let took = t.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aggregate-incomplete"], "feed");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "id": 7 }));
    assert!(took >= Duration::from_millis(250) && took < Duration::from_millis(1500), "{took:?}");

    let r = client().get(format!("{base}/down")).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert!(status == 502 || status == 503, "{status} {body}");
    assert_eq!(body["call"], "orders", "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("orders")), "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    assert!(!body.to_string().contains(&dead.port().to_string()), "no address in the answer: {body}");

    // An optional backend that is down: left out, named in the header.
    let r = client().get(format!("{base}/optional-down")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aggregate-incomplete"], "orders");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "id": 7 }));

    // A backend answering more than its cap (4 KiB; this one sends ~16 KiB) fails the aggregate,
    // optional or not, with a clear error.
    let r = client().get(format!("{base}/big")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "response_too_large", "{body}");
    assert_eq!(body["call"], "list", "{body}");

    let r = client().get(format!("{base}/html")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "response_not_editable", "{body}");
    assert_eq!(body["call"], "banner", "{body}");
}

/// A client that goes away cancels the aggregate: the backend's connection is closed soon
/// after, rather than kept until it answers.
#[tokio::test]
async fn a_client_that_leaves_cancels_the_calls() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = tx.send("request");
                // Never answer; report when the gateway closes the connection.
                loop {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                let _ = tx.send("closed");
            });
        }
    });
    let yaml = format!(
        "services:\n  - name: hang\n    url: http://{addr}\n  - name: agg\n    type: aggregate\n    aggregate:\n      timeout: 30s\n      calls:\n        - name: a\n          service: hang\n          path: /a\n        - name: b\n          service: hang\n          path: /b\nroutes:\n  - name: r\n    service: agg\n"
    );
    let gw = gateway(&yaml).await;
    let mut c = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    for _ in 0..2 {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
        assert_eq!(got, Some("request"));
    }
    drop(c);
    let t = Instant::now();
    for _ in 0..2 {
        let got =
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("the backend calls were cancelled");
        assert_eq!(got, Some("closed"));
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// `body: client` sends the client's request body (and its content type) to the calls that ask
/// for it, with their own method; the others get none. `json_body` builds one from templates.
#[tokio::test]
async fn the_client_body_goes_to_the_calls_that_ask_for_it() {
    let echo = Upstream::start(Behavior::Echo("e")).await;
    let yaml = format!(
        "services:\n  - name: echo\n    url: http://{}\n  - name: post\n    type: aggregate\n    aggregate:\n      calls:\n        - {{ name: create, service: echo, method: PUT, path: /items, body: client, group: create }}\n        - {{ name: audit, service: echo, method: POST, path: /audit, json_body: {{ item: \"{{query.item}}\", n: 1 }}, group: audit }}\n        - {{ name: plain, service: echo, path: /plain, group: plain }}\nroutes:\n  - name: post\n    service: post\n    paths: [/post]\n",
        echo.authority()
    );
    let gw = gateway(&yaml).await;
    let r = client()
        .post(format!("{}/post?item=i-9", gw.url("main")))
        .header("content-type", "text/plain")
        .body("hello world")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["create"]["method"], "PUT", "{v}");
    assert_eq!(v["create"]["body"], "hello world", "{v}");
    assert_eq!(v["create"]["headers"]["content-type"], "text/plain", "{v}");
    assert_eq!(v["audit"]["method"], "POST", "{v}");
    assert_eq!(
        serde_json::from_str::<Value>(v["audit"]["body"].as_str().unwrap()).unwrap(),
        json!({ "item": "i-9", "n": 1 })
    );
    assert_eq!(v["audit"]["headers"]["content-type"], "application/json", "{v}");
    assert_eq!(v["plain"]["method"], "GET", "{v}");
    assert_eq!(v["plain"]["body_bytes"], 0, "{v}");
}
