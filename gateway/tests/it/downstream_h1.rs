//! The gateway's own HTTP/1.1 server, driven by raw TCP clients: pipelining, HTTP/1.0 and
//! `HEAD` semantics, chunked request bodies in arbitrary pieces, request bodies the pipeline
//! does not read, a client that leaves mid-request, refusals, upgrades with bytes sent before
//! the `101`, and response framing chosen per client (close-delimited for HTTP/1.0, trailers
//! only for `TE: trailers`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn gateway_to(upstream: &str, extra_routes: &str) -> TestGateway {
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{upstream}\n  - name: fixed\n    type: static\n    response: {{ status: 201, body: done }}\nroutes:\n  - name: fixed\n    service: fixed\n    paths: [\"/fixed\"]\n{extra_routes}  - name: r\n    service: s\n    paths: [\"/*\"]\n"
    );
    TestGateway::start(&yaml, &[]).await
}

/// Requests written back to back on one connection are answered in order, bodies included.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway_to(&up.authority(), "").await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyzGET /three?q=1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let paths: Vec<(String, u64)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let r = c.next(false).await;
            assert_eq!(r.status(), 200, "{}", r.head);
            let j = r.json();
            v.push((j["path"].as_str().unwrap().to_string(), j["body_bytes"].as_u64().unwrap()));
        }
        v
    };
    assert_eq!(paths, [("/one".into(), 0), ("/two".into(), 3), ("/three".into(), 0)]);
    // The connection is still open for more.
    c.send(b"GET /four HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.next(false).await.json()["path"], "/four");
    assert_eq!(up.hits(), 4);
}

/// HTTP/1.0: closed after the response unless the client asked for keep-alive, which the
/// response then confirms.
#[tokio::test]
async fn http10_keep_alive_rules() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway_to(&up.authority(), "").await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let r = c.next(false).await;
    assert_eq!(r.status(), 200);
    assert!(r.head.contains("connection: close"), "{}", r.head);
    assert!(c.closed().await, "an HTTP/1.0 connection without keep-alive is closed");

    let mut c = Responses::connect(gw.addr("main")).await;
    for path in ["/b", "/c"] {
        c.send(format!("GET {path} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n").as_bytes()).await;
        let r = c.next(false).await;
        assert!(r.head.contains("connection: keep-alive"), "{}", r.head);
        assert_eq!(r.json()["path"], path);
    }
}

/// A HEAD response carries the upstream's length but no body, and the connection goes on.
#[tokio::test]
async fn head_responses_have_no_body() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway_to(&up.authority(), "").await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let h = c.next(true).await;
    assert_eq!(h.status(), 200);
    assert!(h.head.contains("content-length: "), "{}", h.head);
    let g = c.next(false).await;
    assert_eq!(g.json()["path"], "/g", "the GET's response follows the HEAD's head directly");
}

/// A tiny deterministic generator (no dependency) for piece sizes.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Chunked request bodies (extensions, a trailer) arrive intact whatever pieces the client
/// writes them in.
#[tokio::test]
async fn chunked_request_bodies_in_random_pieces() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway_to(&up.authority(), "").await;
    let mut body = Vec::new();
    let mut wire = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for i in 0..20u8 {
        let chunk: Vec<u8> = (0..(i as usize * 37 + 1)).map(|j| b'a' + ((j + i as usize) % 26) as u8).collect();
        wire.extend_from_slice(format!("{:x};ext=\"{i}\"\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(&chunk);
        wire.extend_from_slice(b"\r\n");
        body.extend(chunk);
    }
    wire.extend_from_slice(b"0\r\nx-sum: 1\r\n\r\n");
    for seed in 1..=5u64 {
        let mut rng = Lcg(seed);
        let mut c = Responses::connect(gw.addr("main")).await;
        let mut at = 0;
        while at < wire.len() {
            let n = (1 + rng.below(64) as usize).min(wire.len() - at);
            c.send(&wire[at..at + n]).await;
            at += n;
            if rng.below(4) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let r = c.next(false).await;
        assert_eq!(r.status(), 200, "seed {seed}: {}", r.head);
        let j = r.json();
        assert_eq!(j["body_bytes"].as_u64(), Some(body.len() as u64), "seed {seed}");
        assert_eq!(j["body"].as_str().unwrap().as_bytes(), &body[..], "seed {seed}");
    }
}

/// A body the pipeline does not read (a static response): skipped when it is all there, so
/// the connection carries on; otherwise the response is still delivered, then the connection
/// closes.
#[tokio::test]
async fn unread_request_bodies() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway_to(&up.authority(), "").await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"POST /fixed HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let r = c.next(false).await;
    assert_eq!((r.status(), &r.body[..]), (201, &b"done"[..]));
    assert!(!r.head.contains("connection: close"), "{}", r.head);
    assert_eq!(c.next(false).await.json()["path"], "/after");

    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"POST /fixed HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n").await;
    c.send(&[b'x'; 10_000]).await;
    let r = c.next(false).await;
    assert_eq!((r.status(), &r.body[..]), (201, &b"done"[..]));
    assert!(r.head.contains("connection: close"), "{}", r.head);
    assert!(c.closed().await);
    assert_eq!(up.hits(), 1);
}

/// A client that closes its connection while the upstream works on its request cancels the
/// upstream exchange, and the request is logged with status 499.
#[tokio::test]
async fn a_client_that_leaves_cancels_its_request() {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (started, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, d) = (started.clone(), dropped.clone());
    let up = Upstream::start(Behavior::Custom(Arc::new(move |_req| {
        let (s, d) = (s.clone(), d.clone());
        Box::pin(async move {
            s.fetch_add(1, Ordering::SeqCst);
            let _g = Guard(d);
            std::future::pending::<()>().await;
            unreachable!()
        })
    })))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ target: {} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n",
        log.display(),
        up.authority()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let mut c = TcpStream::connect(gw.addr("main")).await.unwrap();
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    for _ in 0..100 {
        if started.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(started.load(Ordering::SeqCst), 1, "the request reached the upstream");
    drop(c);
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "the upstream request was cancelled");
    // The cancelled request is logged as nginx logs it: 499.
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if !line.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["error"].as_str(), v["path"].as_str()),
        (Some(499), Some("downstream_closed"), Some("/slow"))
    );
}

/// A refused head gets a JSON answer and a closed connection; what follows it is never read
/// as a request.
#[tokio::test]
async fn refusals_close_the_connection() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = gateway_to(&up.authority(), "").await;
    for (wire, status, code) in [
        (&b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], 400, "bad_request"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "bad_request",
        ),
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"),
    ] {
        let mut c = Responses::connect(gw.addr("main")).await;
        c.send(wire).await;
        let r = c.next(false).await;
        assert_eq!(r.status(), status, "{}", r.head);
        assert!(r.head.contains("connection: close"), "{}", r.head);
        assert_eq!(r.json()["error"], code);
        assert!(c.closed().await);
    }
    assert_eq!(up.hits(), 0);
}

/// A raw upstream: answers every request head with `reply`; with `echo_after`, then echoes
/// whatever arrives (an upgraded tunnel).
pub(crate) async fn raw_upstream(reply: &'static [u8], echo_after: bool) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    while let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..p + 4);
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                        if echo_after {
                            if !buf.is_empty() && s.write_all(&buf).await.is_err() {
                                return;
                            }
                            loop {
                                match s.read(&mut b).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => {
                                        if s.write_all(&b[..n]).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
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
    addr
}

/// Bytes a client sends right behind its upgrade request (before the `101`) reach the upstream
/// through the tunnel, and the tunnel carries on both ways.
#[tokio::test]
async fn upgrade_carries_bytes_sent_before_the_101() {
    let up =
        raw_upstream(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n", true).await;
    let gw = gateway_to(&up.to_string(), "").await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nearly bytes").await;
    let r = c.next(false).await;
    assert_eq!(r.status(), 101, "{}", r.head);
    assert_eq!(c.take(11).await, b"early bytes");
    c.send(b"later").await;
    assert_eq!(c.take(5).await, b"later");
}

/// A body of unknown length goes chunked to an HTTP/1.1 client (its trailers only when the
/// client accepts them) and close-delimited to an HTTP/1.0 client.
#[tokio::test]
async fn response_framing_follows_the_client() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 7\r\n\r\n",
        false,
    )
    .await;
    let gw = gateway_to(&up.to_string(), "").await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n").await;
    let r = c.next(false).await;
    assert!(r.head.contains("transfer-encoding: chunked"), "{}", r.head);
    assert_eq!((&r.body[..], r.trailers.as_str()), (&b"hello world"[..], "x-sum: 7\n"));
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.next(false).await;
    assert_eq!((&r.body[..], r.trailers.as_str()), (&b"hello world"[..], ""), "no trailers unasked");

    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let r = c.next(false).await;
    assert!(!r.head.contains("transfer-encoding") && !r.head.contains("content-length"), "{}", r.head);
    assert_eq!(&r.body[..], b"hello world");
}

/// A shutdown during a request lets it finish; its response announces the close, and the
/// connection then closes.
#[tokio::test]
async fn a_shutdown_ends_the_connection_after_the_request_in_flight() {
    let up = Upstream::start(Behavior::Delay(Duration::from_millis(300))).await;
    let gw = gateway_to(&up.authority(), "").await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let g = gw.gw.clone();
    let stop = tokio::spawn(async move { g.shutdown(Duration::from_secs(5)).await });
    let r = c.next(false).await;
    assert_eq!(r.status(), 200, "{}", r.head);
    assert!(r.head.contains("connection: close"), "{}", r.head);
    assert!(c.closed().await);
    stop.await.unwrap();
}

/// Responses without a body on the wire (HEAD, 204, an upgrade's 101, once its tunnel closed)
/// are logged as complete, not as a client that went away.
#[tokio::test]
async fn bodiless_responses_are_logged_complete() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let ws =
        raw_upstream(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n", true).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ target: {} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\n  - name: ws\n    url: http://{ws}\n  - name: empty\n    type: static\n    response: {{ status: 204 }}\nroutes:\n  - name: ws\n    service: ws\n    paths: [\"/ws\"]\n  - name: empty\n    service: empty\n    paths: [\"/empty\"]\n  - name: r\n    service: s\n    paths: [\"/*\"]\n",
        log.display(),
        up.authority()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.next(true).await.status(), 200);
    c.send(b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.next(false).await.status(), 204);
    c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n").await;
    assert_eq!(c.next(false).await.status(), 101);
    // The tunnel is logged when it closes.
    drop(c);
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v.get("error").is_none_or(|e| e.is_null()), "logged as an error: {l}");
    }
}

/// A request body streamed to an HTTP/2 upstream is read by hyper's client in a task of its
/// own: the hand-off between that task and the client connection wakes both sides (pieces with
/// pauses between them, and a 1 MiB body).
#[tokio::test]
async fn bodies_stream_to_an_http2_upstream() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: h2c://{}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    for piece in ["5\r\nhello\r\n", "1\r\n \r\n", "5\r\nworld\r\n", "0\r\n\r\n"] {
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.send(piece.as_bytes()).await;
    }
    let r = c.next(false).await;
    let j = r.json();
    assert_eq!((j["version"].as_str(), j["body"].as_str()), (Some("HTTP/2.0"), Some("hello world")), "{j}");

    let big = vec![b'z'; 1 << 20];
    c.send(format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", big.len()).as_bytes()).await;
    c.send(&big).await;
    let j = c.next(false).await.json();
    assert_eq!(j["body_bytes"].as_u64(), Some(1 << 20), "{j}");
}
