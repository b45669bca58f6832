//! Malformed, ambiguous and oversized requests are refused with 400/413/414/431 and never reach
//! the upstream; slow and idle clients are cut off.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn setup(limits: &str) -> (TestGateway, Upstream) {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\n  limits: {{ {limits} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: small\n    service: s\n    paths: [\"/small/*\"]\n    max_body_bytes: 10\n  - name: r\n    service: s\n    paths: [\"/*\"]\n",
        up.authority()
    );
    (TestGateway::start(&yaml, &[]).await, up)
}

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The header-count limit holds at its default (100 fields pass, 101 get 431) and above it
/// (hyper is told only about limits over its own default of 100; lower ones are enforced by the
/// gateway, as `malformed_requests_are_refused` shows for 20). The built-in echo service answers,
/// so no upstream's own header limit is involved.
#[tokio::test]
async fn header_count_limits_at_and_above_the_default() {
    let head = |n: usize| {
        format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", (1..n).map(|i| format!("x-h{i}: v\r\n")).collect::<String>())
    };
    for (limits, max) in [("max_uri_bytes: 1KiB", 100), ("max_headers: 150", 150)] {
        let yaml = format!(
            "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\n  limits: {{ {limits} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    type: echo\nroutes:\n  - name: r\n    service: s\n"
        );
        let gw = TestGateway::start(&yaml, &[]).await;
        let at = raw(gw.addr("main"), head(max).as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(status_of(&at), 200, "{max} fields: {at}");
        assert!(at.contains("x-h1"), "the echo saw the fields: {at}");
        let over = raw(gw.addr("main"), head(max + 1).as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(status_of(&over), 431, "{} fields: {over}", max + 1);
    }
}

/// Each malformed request gets its status and never reaches the upstream.
#[tokio::test]
async fn malformed_requests_are_refused() {
    let (gw, up) = setup("max_uri_bytes: 1KiB, max_headers: 20").await;
    let addr = gw.addr("main");
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(2000));
    let many_headers =
        format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", (0..40).map(|i| format!("x-h{i}: v\r\n")).collect::<String>());
    let huge_header = format!("GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n", "b".repeat(40_000));
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "CL then TE",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "TE then CL",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        ("duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400),
        ("no Host", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n".into(), 400),
        ("control byte in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n".into(), 400),
        ("space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n".into(), 400),
        (
            "conflicting lengths",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".into(),
            400,
        ),
        ("bad TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n".into(), 400),
        ("dot segments", "GET /a/../admin HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("encoded dot segments", "GET /a/%2e%2e/admin HTTP/1.1\r\nHost: a\r\n\r\n".into(), 400),
        ("long URI", long_uri, 414),
        ("too many headers", many_headers, 431),
        ("huge header", huge_header, 431),
        (
            "body over route limit",
            "POST /small/x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world".into(),
            413,
        ),
    ];
    for (name, req, want) in cases {
        let resp = raw(addr, req.as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(status_of(&resp), want, "{name}: {resp}");
    }
    assert_eq!(up.hits(), 0, "no malformed request may be forwarded");
}

/// A chunked body that grows past the route limit is cut with 413.
#[tokio::test]
async fn chunked_body_over_limit_is_413() {
    let (gw, _up) = setup("max_uri_bytes: 1KiB").await;
    let req = "POST /small/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n";
    let resp = raw(gw.addr("main"), req.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
}

/// Send `head` one byte every 100 ms (40 bytes at most, starting over at its end) and return
/// how long after connecting the server closed the connection, if it did.
async fn slow_head_closed_after(addr: std::net::SocketAddr, head: &[u8]) -> Option<Duration> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    for i in 0..40 {
        let at = i % head.len();
        if s.write_all(&head[at..at + 1]).await.is_err() {
            return Some(t.elapsed());
        }
        let mut b = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await {
            return Some(t.elapsed());
        }
    }
    None
}

/// A client that sends a head byte by byte is disconnected after the header timeout.
#[tokio::test]
async fn slowloris_is_cut() {
    let (gw, up) = setup("header_read_timeout: 300ms, idle_timeout: 30s").await;
    let at = slow_head_closed_after(gw.addr("main"), b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .expect("the gateway must close a slow head");
    assert!(at >= Duration::from_millis(250) && at < Duration::from_secs(2), "closed after {at:?}");
    assert_eq!(up.hits(), 0);
}

/// An idle keep-alive connection is closed after idle_timeout, not after the header timeout.
#[tokio::test]
async fn idle_connections_close_after_idle_timeout() {
    let (gw, _up) = setup("header_read_timeout: 200ms, idle_timeout: 800ms").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    // Still open well after the header timeout...
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "connection reused after 400ms idle");
    // ...then closed once idle for idle_timeout.
    let t2 = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    let idle = t2.elapsed();
    assert!(idle >= Duration::from_millis(700) && idle < Duration::from_secs(3), "closed after {idle:?} idle");
    let _ = t;
}

/// Connections beyond max_connections are refused at accept.
#[tokio::test]
async fn max_connections() {
    let (gw, _up) = setup("max_connections: 2").await;
    let addr = gw.addr("main");
    let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = raw(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Duration::from_secs(1)).await;
    assert_eq!(resp, "", "the third connection is closed without an answer");
    drop(_a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = raw(addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Duration::from_secs(2)).await;
    assert_eq!(status_of(&resp), 200);
}

/// The status listener is served by the gateway's own HTTP/1.1 server with the data plane's
/// limits and timeouts: a slow head is cut after `header_read_timeout` (hyper's server, which
/// served it before, waited its own fixed 10 s), an ambiguous framing is refused with 400 and
/// a close, an oversized head with 431; ordinary requests are answered on a kept-alive
/// connection.
#[tokio::test]
async fn status_listener_has_the_data_planes_limits() {
    let yaml = "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: { enabled: false }\n  limits: { header_read_timeout: 300ms, idle_timeout: 30s, max_header_bytes: 8KiB }\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    type: echo\nroutes:\n  - name: r\n    service: s\n";
    let gw = TestGateway::start(yaml, &[]).await;
    let addr: std::net::SocketAddr = gw.status_url().trim_start_matches("http://").parse().unwrap();

    // Two requests on one connection.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    for path in ["/health", "/ready"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.unwrap().unwrap();
        let resp = String::from_utf8_lossy(&buf[..n]).to_string();
        assert_eq!(status_of(&resp), 200, "{path}: {resp}");
    }

    let refused = [
        (
            "both framing fields",
            "GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
            400,
        ),
        ("oversized head", format!("GET /health HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(9000)), 431),
    ];
    for (name, req, want) in refused {
        let resp = raw(addr, req.as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(status_of(&resp), want, "{name}: {resp}");
    }

    let at = slow_head_closed_after(addr, b"GET /health HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .expect("the status listener must close a slow head");
    assert!(at >= Duration::from_millis(250) && at < Duration::from_secs(2), "closed after {at:?}");
}
