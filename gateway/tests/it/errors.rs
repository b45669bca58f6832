//! Failures become small JSON responses with the request id, and never leak internals.

use std::time::{Duration, Instant};

use crate::support::*;

fn assert_error_body(v: &serde_json::Value, code: &str) {
    assert_eq!(v["error"], code, "{v}");
    assert_eq!(v["request_id"].as_str().map(str::len), Some(32), "{v}");
    let text = v.to_string();
    assert!(!text.contains("127.0.0.1") && !text.contains("refused"), "internals leaked: {text}");
}

/// No route: 404 JSON.
#[tokio::test]
async fn no_route_is_404_json() {
    let gw =
        gateway("services:\n  - name: s\n    type: echo\nroutes:\n  - name: r\n    service: s\n    paths: [/only]\n")
            .await;
    let (status, h, v) = get_json(&format!("{}/other", gw.url("main"))).await;
    assert_eq!(status, 404);
    assert_eq!(h["content-type"], "application/json");
    assert_error_body(&v, "no_route");
    assert_eq!(h["x-request-id"], v["request_id"].as_str().unwrap());
}

/// A refused connection is a 502 (after the one default retry, also refused).
#[tokio::test]
async fn connect_refused_is_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://127.0.0.1:{port}\nroutes:\n  - name: r\n    service: s\n"
    ))
    .await;
    let (status, _, v) = get_json(&gw.url("main")).await;
    assert_eq!(status, 502);
    assert_error_body(&v, "upstream_connect_failed");
}

/// A hung upstream hits the read timeout: 504 within the timeout, not forever.
#[tokio::test]
async fn hung_upstream_is_504() {
    let up = Upstream::start(Behavior::Hang).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\n    timeouts: {{ read: 300ms }}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    let t = Instant::now();
    let (status, _, v) = get_json(&gw.url("main")).await;
    assert_eq!(status, 504);
    assert_error_body(&v, "upstream_timeout");
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert!(t.elapsed() >= Duration::from_millis(290));
}

/// The response-head timer kept with a pooled upstream connection: re-armed for each request,
/// it neither fires early for a request on a connection that sat idle past the timeout (its
/// old deadline passed while idle) nor fails to fire for a hung request on a reused connection.
#[tokio::test]
async fn read_timeout_on_reused_connections() {
    let up = Upstream::start(Behavior::Custom(std::sync::Arc::new(move |req| {
        Box::pin(async move {
            if req.uri().path() == "/hang" {
                std::future::pending::<()>().await;
            }
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            gw_test_util::echo("a", req).await
        })
    })))
    .await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\n    timeouts: {{ read: 300ms }}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    let c = client();
    let get = |path: &'static str| {
        let c = c.clone();
        let url = format!("{}{path}", gw.url("main"));
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    for _ in 0..5 {
        assert_eq!(get("/fast").await, 200);
    }
    // Idle past the read timeout: the pooled connection's timer deadline passes meanwhile.
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..3 {
        // 150 ms of a 300 ms budget: an early or stale timer would turn these into 504s.
        assert_eq!(get("/slow").await, 200);
    }
    let t = Instant::now();
    assert_eq!(get("/hang").await, 504);
    assert!(t.elapsed() >= Duration::from_millis(290) && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    for _ in 0..3 {
        assert_eq!(get("/slow").await, 200);
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    let t = Instant::now();
    assert_eq!(get("/hang").await, 504);
    assert!(t.elapsed() >= Duration::from_millis(290) && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(get("/fast").await, 200);
}

/// The total timeout bounds a request across retries.
#[tokio::test]
async fn total_timeout() {
    let up = Upstream::start(Behavior::Hang).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\n    timeouts: {{ read: 10s, total: 400ms }}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    let t = Instant::now();
    let (status, _, v) = get_json(&gw.url("main")).await;
    assert_eq!(status, 504);
    assert_error_body(&v, "request_timeout_total");
    assert!(t.elapsed() < Duration::from_secs(3));
}

/// Upstream errors are passed through as responses (not rewritten) when not retried.
#[tokio::test]
async fn upstream_status_is_relayed() {
    let up = Upstream::start(Behavior::Status(500)).await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    let r = client().get(gw.url("main")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(up.hits(), 1, "500 is not in on_statuses: no retry");
}

/// A connect that hangs (loopback listener with a full accept queue) hits the connect timeout.
#[tokio::test]
async fn connect_timeout_is_504() {
    // listen(0) and never accept: once the queue is full, further SYNs are dropped and
    // connect() hangs.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(c);
        }
    }
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{addr}\n    timeouts: {{ connect: 300ms }}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n"
    ))
    .await;
    let t = Instant::now();
    let (status, _, v) = get_json(&gw.url("main")).await;
    assert_eq!(status, 504);
    assert_error_body(&v, "upstream_connect_timeout");
    assert!(t.elapsed() >= Duration::from_millis(290) && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(s);
}

/// An upstream that stops reading the request body hits the write timeout.
#[tokio::test]
async fn write_stall_is_504() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s); // accepted, never read
        }
    });
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{addr}\n    timeouts: {{ write: 300ms, read: 30s }}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n    max_body_bytes: 0\n"
    ))
    .await;
    let t = Instant::now();
    let r = client().post(gw.url("main")).body(vec![b'w'; 64 << 20]).send().await;
    let r = r.expect("the gateway answers even though the upload stalled");
    assert_eq!(r.status(), 504);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_error_body(&v, "upstream_write_timeout");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    holder.abort();
}
