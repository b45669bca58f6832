//! The gateway's own HTTP/1.1 upstream client, against upstreams that write their responses
//! byte by byte from a script: framing (chunked with extensions and trailers, close-delimited,
//! no-body responses), interim responses, ambiguous or oversized heads (502, never passed on),
//! connection reuse only after a clean exchange, stale pooled connections, and full-duplex
//! request bodies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// What the scripted upstream does after reading a request.
pub(crate) struct Reply {
    bytes: Vec<u8>,
    close: bool,
    /// Write one byte at a time.
    trickle: bool,
}

pub(crate) fn keep(bytes: &[u8]) -> Reply {
    Reply { bytes: bytes.to_vec(), close: false, trickle: false }
}

fn close(bytes: &[u8]) -> Reply {
    Reply { bytes: bytes.to_vec(), close: true, trickle: false }
}

type Script = Arc<dyn Fn(usize, &str) -> Reply + Send + Sync>;

/// A raw TCP upstream: reads each request (head, and a body framed by Content-Length or
/// chunked), records it, and writes what the script says for request number `n` (from 0).
pub(crate) struct Scripted {
    pub(crate) addr: std::net::SocketAddr,
    conns: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    pub(crate) async fn start(script: impl Fn(usize, &str) -> Reply + Send + Sync + 'static) -> Scripted {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let (c, r) = (conns.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_scripted(s, r.clone(), script.clone()));
            }
        });
        Scripted { addr, conns, requests }
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    pub(crate) fn request(&self, i: usize) -> String {
        self.requests.lock().unwrap()[i].clone()
    }
}

async fn serve_scripted(mut s: tokio::net::TcpStream, requests: Arc<Mutex<Vec<String>>>, script: Script) {
    let mut buf = Vec::new();
    loop {
        // The head.
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let lower = head.to_ascii_lowercase();
        let mut body_end = end;
        if let Some(cl) = lower.lines().find_map(|l| l.strip_prefix("content-length: ")) {
            body_end += cl.trim().parse::<usize>().unwrap();
            while buf.len() < body_end {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        } else if lower.contains("transfer-encoding: chunked") {
            loop {
                if let Some(p) = buf[end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    body_end = end + p + 5;
                    break;
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
        let request = String::from_utf8_lossy(&buf[..body_end]).into_owned();
        buf.drain(..body_end);
        let n = {
            let mut r = requests.lock().unwrap();
            r.push(request.clone());
            r.len() - 1
        };
        let reply = script(n, &request);
        if reply.trickle {
            for b in &reply.bytes {
                if s.write_all(std::slice::from_ref(b)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } else if s.write_all(&reply.bytes).await.is_err() {
            return;
        }
        if reply.close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

async fn gateway_to(addr: std::net::SocketAddr) -> TestGateway {
    gateway(&format!(
        "services:\n  - name: s\n    url: http://{addr}\n    timeouts: {{ read: 2s }}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n"
    ))
    .await
}

/// One request on a kept-alive client connection to the gateway (one connection, so one
/// gateway worker and its pool): the response head and body (chunked bodies decoded).
async fn roundtrip(s: &mut tokio::net::TcpStream, req: &str) -> (String, String) {
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let fill = |buf: &mut Vec<u8>, n: usize, b: &[u8]| buf.extend_from_slice(&b[..n]);
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "closed inside the head");
        fill(&mut buf, n, &b);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let mut body = buf[end..].to_vec();
    if req.starts_with("HEAD") || status == 204 || status == 304 {
        return (head, String::new());
    }
    if let Some(cl) = head.lines().find_map(|l| l.strip_prefix("content-length: ")) {
        let cl: usize = cl.trim().parse().unwrap();
        while body.len() < cl {
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0, "closed inside the body");
            fill(&mut body, n, &b);
        }
        return (head, String::from_utf8_lossy(&body).into_owned());
    }
    while !body.ends_with(b"\r\n0\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "closed inside the body");
        fill(&mut body, n, &b);
    }
    // Decode the chunks (the gateway's own encoding: no extensions).
    let mut out = Vec::new();
    let mut rest = &body[..];
    loop {
        let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
        rest = &rest[nl + 2 + size + 2..];
    }
    (head, String::from_utf8_lossy(&out).into_owned())
}

const GET: &str = "GET / HTTP/1.1\r\nhost: a\r\n\r\n";

/// Chunked responses with chunk extensions are decoded and passed on whole, their trailers
/// reach a client that accepts them, and the connection is reused afterwards.
#[tokio::test]
async fn chunked_responses_with_extensions_and_trailers() {
    let up = Scripted::start(|_, _| {
        keep(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5;name=\"v\"\r\nhello\r\n6 ; x\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n")
    })
    .await;
    let gw = gateway_to(up.addr).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    for _ in 0..3 {
        let (head, body) = roundtrip(&mut s, GET).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, "hello world");
    }
    assert_eq!(up.conns(), 1, "each exchange ended cleanly, so one connection served all");

    // An HTTP/1.1 client that says it accepts trailers gets them.
    let out = raw(
        gw.addr("main"),
        b"GET / HTTP/1.1\r\nhost: a\r\nte: trailers\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("hello") && out.contains(" world"), "{out}");
    assert!(out.to_ascii_lowercase().contains("x-checksum: abc"), "trailer lost: {out}");
}

/// A response written one byte per segment (head, chunk lines, CRLFs and trailers all split)
/// arrives whole, and the connection is reused after it.
#[tokio::test]
async fn responses_split_into_single_bytes() {
    let up = Scripted::start(|_, _| Reply {
        bytes: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 2\r\n\r\n"
            .to_vec(),
        close: false,
        trickle: true,
    })
    .await;
    let gw = gateway_to(up.addr).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    for _ in 0..2 {
        let (head, body) = roundtrip(&mut s, GET).await;
        assert!(head.starts_with("http/1.1 200") && head.contains("x-a: 1"), "{head}");
        assert_eq!(body, "abcde");
    }
    assert_eq!(up.conns(), 1);
}

/// A body without Content-Length or chunked runs to connection close; that connection is not
/// reused.
#[tokio::test]
async fn close_delimited_bodies() {
    let up = Scripted::start(|n, _| close(format!("HTTP/1.1 200 OK\r\n\r\nbody number {n}").as_bytes())).await;
    let gw = gateway_to(up.addr).await;
    for n in 0..2 {
        let r = client().get(gw.url("main")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), format!("body number {n}"));
    }
    assert_eq!(up.conns(), 2);
}

/// Interim 1xx responses are read past; the client sees the final response.
#[tokio::test]
async fn interim_responses_are_skipped() {
    let up = Scripted::start(|_, _| {
        keep(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
    })
    .await;
    let gw = gateway_to(up.addr).await;
    let r = client().post(gw.url("main")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().await.unwrap(), "ok");
}

/// HEAD, 204 and 304 responses have no body whatever their fields say. Those that announce
/// none leave the connection reusable; those that announce one (a length here) do not, since the
/// body their upstream may write anyway would be read as the next response (see
/// `framing::connections_that_stray_bytes_may_follow_are_not_reused`).
#[tokio::test]
async fn bodiless_responses_keep_the_connection() {
    let up = Scripted::start(|_, req| {
        if req.starts_with("HEAD") {
            keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        } else if req.contains("/nc") {
            keep(b"HTTP/1.1 204 No Content\r\n\r\n")
        } else if req.contains("/nm") {
            keep(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\netag: \"x\"\r\n\r\n")
        } else {
            keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        }
    })
    .await;
    let gw = gateway_to(up.addr).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    let (head, _) = roundtrip(&mut s, "HEAD / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 200") && head.contains("content-length: 5\r\n"), "{head}");
    let (head, _) = roundtrip(&mut s, "GET /nc HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 204"), "{head}");
    let (head, _) = roundtrip(&mut s, "GET /nm HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 304") && head.contains("etag: \"x\""), "{head}");
    let (head, body) = roundtrip(&mut s, GET).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "hello");
    // HEAD (a length): its own connection; 204 (none) and the 304 (a length) share the next;
    // the GET gets a third.
    assert_eq!(up.conns(), 3, "only the 204 without a length kept its connection");
}

/// Responses whose framing is ambiguous or whose head breaks the limits are 502 and nothing of
/// them reaches the client.
#[tokio::test]
async fn malformed_responses_are_502() {
    let mut big = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 70 * 1024));
    big.extend(b"\r\ncontent-length: 0\r\n\r\n");
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..150 {
        many.extend(format!("x-f{i}: v\r\n").bytes());
    }
    many.extend(b"content-length: 0\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("te-and-cl", b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("conflicting-cl", b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nsmug".to_vec()),
        ("signed-cl", b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n".to_vec()),
        ("gzip-te", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nzz".to_vec()),
        ("folded", b"HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 0\r\n\r\n".to_vec()),
        ("bare-cr", b"HTTP/1.1 200 OK\r\nx-a: 1\rx-b: 2\r\ncontent-length: 0\r\n\r\n".to_vec()),
        ("switching", b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n".to_vec()),
        ("not-http", b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()),
        ("big-head", big),
        ("many-fields", many),
    ];
    let cases = Arc::new(cases);
    let c2 = cases.clone();
    let up = Scripted::start(move |n, _| close(&c2[n].1)).await;
    let gw = gateway_to(up.addr).await;
    for (name, _) in cases.iter() {
        let r = client().get(gw.url("main")).send().await.unwrap();
        assert_eq!(r.status(), 502, "{name}");
        let v: serde_json::Value = r.json().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v["error"], "upstream_protocol_error", "{name}: {v}");
        assert!(!v.to_string().contains("smug"), "{name}");
    }
    assert_eq!(up.requests.lock().unwrap().len(), cases.len());
}

/// Bytes after the end of a response (an upstream that answers twice, or frames wrongly) mean
/// the connection is not reused: the next request gets its own answer, not the leftover.
#[tokio::test]
async fn leftover_bytes_are_never_read_as_the_next_response() {
    let up = Scripted::start(|n, _| {
        if n == 0 {
            keep(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled")
        } else {
            keep(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond")
        }
    })
    .await;
    let gw = gateway_to(up.addr).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    assert_eq!(roundtrip(&mut s, GET).await.1, "first");
    assert_eq!(roundtrip(&mut s, GET).await.1, "second");
    assert_eq!(up.conns(), 2);
}

/// `Connection: close` and HTTP/1.0 responses (without keep-alive) end their connection;
/// HTTP/1.0 with `Connection: keep-alive` keeps it.
#[tokio::test]
async fn reuse_follows_the_upstreams_connection_semantics() {
    let up = Scripted::start(|n, _| match n {
        0 => keep(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na"),
        1 => keep(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nb"),
        2 => keep(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\nc"),
        _ => keep(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nd"),
    })
    .await;
    let gw = gateway_to(up.addr).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    let mut got = String::new();
    for _ in 0..4 {
        got += &roundtrip(&mut s, GET).await.1;
    }
    assert_eq!(got, "abcd");
    // 1st closes, 2nd closes, 3rd and 4th share one.
    assert_eq!(up.conns(), 3);
}

/// A pooled connection that the upstream closed while idle (its keep-alive timeout) is not
/// used: a POST, which the gateway must not replay, still succeeds on a new connection.
#[tokio::test]
async fn connections_closed_while_idle_are_not_used() {
    let up = Scripted::start(|n, _| {
        // Every response says keep-alive, but the upstream closes after it.
        close(format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{n}").as_bytes())
    })
    .await;
    let gw = gateway_to(up.addr).await;
    let c = client();
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = c.post(gw.url("main")).body("data").send().await.unwrap();
        assert_eq!(r.status(), 200, "request {n}");
        assert_eq!(r.text().await.unwrap(), n.to_string());
    }
    assert_eq!(up.conns(), 3);
}

/// A body cut short by the upstream is cut short for the client too (never padded or
/// completed), and the connection is dropped.
#[tokio::test]
async fn truncated_bodies_fail_for_the_client() {
    let up = Scripted::start(|n, _| {
        if n == 0 {
            close(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
        } else {
            close(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        }
    })
    .await;
    let gw = gateway_to(up.addr).await;
    for n in 0..2 {
        // The gateway may not have flushed the head before the body broke off: then the client
        // sees the connection fail before the head.
        if let Ok(r) = client().get(gw.url("main")).send().await {
            assert_eq!(r.status(), 200);
            assert!(r.bytes().await.is_err(), "response {n}: a truncated body must not look complete");
        }
    }
    assert_eq!(up.requests.lock().unwrap().len(), 2);
}

/// Request bodies: a known length goes out with Content-Length, an unknown one chunked; the
/// client's own framing fields are replaced, and an empty POST says `content-length: 0`.
#[tokio::test]
async fn request_bodies_are_framed_by_the_gateway() {
    let up = Scripted::start(|_, _| keep(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    let gw = gateway_to(up.addr).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    roundtrip(&mut s, "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc").await;
    roundtrip(
        &mut s,
        "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n",
    )
    .await;
    roundtrip(&mut s, "POST / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    roundtrip(&mut s, GET).await;

    let fixed = up.request(0).to_ascii_lowercase();
    assert!(fixed.contains("content-length: 3\r\n") && fixed.ends_with("\r\n\r\nabc"), "{fixed}");
    assert!(!fixed.contains("transfer-encoding"), "{fixed}");
    let chunked = up.request(1).to_ascii_lowercase();
    assert!(chunked.contains("transfer-encoding: chunked\r\n"), "{chunked}");
    assert!(!chunked.contains("content-length"), "{chunked}");
    assert!(chunked.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"), "{chunked:?}");
    let empty_post = up.request(2).to_ascii_lowercase();
    assert!(empty_post.contains("content-length: 0\r\n"), "{empty_post}");
    let get = up.request(3).to_ascii_lowercase();
    assert!(!get.contains("content-length") && !get.contains("transfer-encoding"), "{get}");
    assert!(get.starts_with("get / http/1.1\r\nhost: "), "{get}");
    assert_eq!(up.conns(), 1);
}

/// A full-duplex upstream that echoes the request body as it arrives: the gateway keeps
/// sending the body after the response head came back, so each piece makes the round trip
/// while the request is still open.
#[tokio::test]
async fn full_duplex_bodies() {
    let up = Upstream::start(Behavior::Custom(Arc::new(|req| {
        Box::pin(async move { hyper::Response::new(req.into_body().boxed()) })
    })))
    .await;
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n",
        up.authority()
    ))
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    tx.send(Ok(Bytes::from("ping-0"))).await.unwrap();
    let r = client().post(gw.url("main")).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r;
    let mut got = String::new();
    for i in 1..=3 {
        // Wait for the echo of the previous piece before sending the next one.
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await.unwrap().unwrap().unwrap();
        got += &String::from_utf8_lossy(&chunk);
        tx.send(Ok(Bytes::from(format!("ping-{i}")))).await.unwrap();
    }
    drop(tx);
    while let Some(c) = stream.chunk().await.unwrap() {
        got += &String::from_utf8_lossy(&c);
    }
    assert_eq!(got, "ping-0ping-1ping-2ping-3");
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// An upstream that answers before reading the whole upload (here: rejects it at once and
/// closes): the client gets that answer, not a 502.
#[tokio::test]
async fn early_answers_to_uploads_are_passed_on() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big!",
                    )
                    .await;
                // Keep reading (and dropping) for a moment so the answer is not lost to a reset.
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            });
        }
    });
    let gw = gateway_to(addr).await;
    let r = client().post(gw.url("main")).body(vec![b'u'; 4 << 20]).send().await;
    let r = r.expect("the client gets an answer");
    assert_eq!(r.status(), 413);
    assert_eq!(r.text().await.unwrap(), "too big!");
}

/// Hop-by-hop fields of a response, and the fields its `Connection` names, stop at the gateway;
/// `Content-Length` is kept even when named (it frames what the client gets).
#[tokio::test]
async fn hop_by_hop_response_fields_stop_at_the_gateway() {
    let up = Scripted::start(|_, _| {
        keep(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop, content-length\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let gw = gateway_to(up.addr).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    let (head, body) = roundtrip(&mut s, GET).await;
    assert_eq!(body, "ok");
    for gone in ["x-hop", "keep-alive:", "proxy-authenticate", "upgrade", "secret"] {
        assert!(!head.contains(gone), "{gone} passed: {head}");
    }
    assert!(head.contains("x-end: kept\r\n") && head.contains("content-length: 2\r\n"), "{head}");
}

/// On the plain path the upstream's fields travel as bytes, not through a header map: the
/// hop-by-hop ones still stop at the gateway, the gateway's request id replaces the upstream's
/// (and without one from the upstream, is added to the bytes), a HEAD answer keeps the upstream's Content-Length, and an
/// HTTP/2 client (whose server writes from the map) gets the same fields.
#[tokio::test]
async fn response_fields_passed_on_as_bytes() {
    let up = Scripted::start(|_, req| {
        let head = req.starts_with("HEAD");
        let mut r = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTE: trailers\r\nUpgrade: h2c\r\nX-End: kept\r\nX-Request-Id: from-upstream\r\nContent-Length: 2\r\n\r\n".to_vec();
        if !head {
            r.extend_from_slice(b"ok");
        }
        keep(&r)
    })
    .await;
    let gw = gateway_to(up.addr).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    for _ in 0..2 {
        let (head, body) = roundtrip(&mut s, GET).await;
        assert_eq!(body, "ok");
        let lower = head.to_ascii_lowercase();
        for gone in ["keep-alive:", "proxy-authenticate", "upgrade", "\r\nte:", "from-upstream"] {
            assert!(!lower.contains(gone), "{gone} passed: {head}");
        }
        assert!(lower.contains("\r\nx-end: kept\r\n") && lower.contains("content-length: 2\r\n"), "{head}");
        assert_eq!(lower.matches("x-request-id: ").count(), 1, "{head}");
        assert_eq!(lower.matches("date: ").count(), 1, "the gateway adds a Date: {head}");
    }
    assert_eq!(up.conns(), 1, "the upstream connection is reused");

    // Without an upstream request id the fields stay bytes and the gateway's id follows them.
    let plain = Scripted::start(|_, _| keep(b"HTTP/1.1 200 OK\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok")).await;
    let gw2 = gateway_to(plain.addr).await;
    let r = client().get(gw2.url("main")).send().await.unwrap();
    assert_eq!(r.headers()["x-end"], "kept");
    assert_eq!(r.headers().get_all("x-request-id").iter().count(), 1);
    assert_eq!(r.text().await.unwrap(), "ok");
    // The id is a line after the upstream's there; an HTTP/2 client gets it from the map the
    // lines are moved into, once, with the upstream's fields and length.
    let r = h2_get_kept(gw2.url("main")).await;
    assert_eq!(r.headers()["x-request-id"].len(), 32);
    assert_eq!(r.text().await.unwrap(), "ok");

    let r = client().head(gw.url("main")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "2");
    assert_eq!(r.headers()["x-end"], "kept");

    let r = h2_get_kept(gw.url("main")).await;
    assert_ne!(r.headers()["x-request-id"], "from-upstream");
    assert!(!r.headers().contains_key("keep-alive") && !r.headers().contains_key("proxy-authenticate"));
    assert_eq!(r.text().await.unwrap(), "ok");
}

/// A GET over HTTP/2 (prior knowledge) whose answer carries the upstream's `X-End: kept`, its
/// `Content-Length: 2` and exactly one request id.
async fn h2_get_kept(url: String) -> reqwest::Response {
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = h2.get(url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["x-end"], "kept");
    assert_eq!(r.headers()["content-length"], "2");
    assert_eq!(r.headers().get_all("x-request-id").iter().count(), 1);
    r
}

/// From an untrusted client, the forwarding fields reach the upstream exactly once each, with
/// the gateway's values, whatever copies the client sent: on the plain path (where the
/// HTTP/1.1 client writes them as one block) and with a hash on a header (where they go through
/// the request's header map).
#[tokio::test]
async fn forged_forwarding_fields_are_replaced_exactly_once() {
    let up = Scripted::start(|_, _| keep(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
    for (i, extra) in ["", "\n    algorithm: consistent-hash\n    hash_on: { header: x-user }"].into_iter().enumerate()
    {
        let gw = gateway(&format!(
            "upstreams:\n  - name: u\n    targets: [{{ address: \"{}\" }}]{extra}\nservices:\n  - name: s\n    upstream: u\nroutes:\n  - name: r\n    service: s\n",
            up.addr
        ))
        .await;
        let mut s = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
        roundtrip(
            &mut s,
            "GET / HTTP/1.1\r\nhost: shop.example\r\nx-forwarded-for: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nx-forwarded-proto: https\r\nx-forwarded-host: evil\r\nx-forwarded-port: 1\r\nforwarded: for=6.6.6.6\r\nx-user: u1\r\n\r\n",
        )
        .await;
        let req = up.request(i).to_ascii_lowercase();
        let count = |name: &str| req.lines().filter(|l| l.starts_with(&format!("{name}:"))).count();
        for f in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "forwarded"] {
            assert_eq!(count(f), 1, "case {i}: {f} in {req}");
        }
        assert!(req.contains("x-forwarded-for: 127.0.0.1\r\n"), "case {i}: {req}");
        assert!(req.contains("x-forwarded-proto: http\r\n"), "case {i}: {req}");
        assert!(req.contains("x-forwarded-host: shop.example\r\n"), "case {i}: {req}");
        assert!(req.contains("forwarded: for=127.0.0.1;proto=http;host=\"shop.example\"\r\n"), "case {i}: {req}");
        assert!(!req.contains("6.6.6.6") && !req.contains("7.7.7.7") && !req.contains("evil"), "case {i}: {req}");
        assert!(req.contains("x-user: u1\r\n"), "case {i}: {req}");
    }
}

/// Upgrades (WebSocket) go through the gateway's own client: the upstream sees `Connection:
/// upgrade` and `Upgrade`; bytes it writes together with its `101` reach the client right
/// after the head; the tunnel then carries both ways. A refusal is relayed as an ordinary
/// response with its body; a `101` without `Upgrade`, or with a malformed head, is a 502.
#[tokio::test]
async fn upgrades_on_the_gateways_client() {
    let up = Scripted::start(|_, req| {
        let first = req.lines().next().unwrap_or("");
        if first.starts_with("GET /ws ") {
            keep(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nHELLO")
        } else if first.starts_with("GET /no ") {
            keep(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\nno way")
        } else if first.starts_with("GET /bare ") {
            keep(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n")
        } else if first.starts_with("GET /junk ") {
            keep(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade websocket\r\n\r\n")
        } else {
            // Bytes carried by the tunnel: echoed.
            keep(format!("pong:{req}").as_bytes())
        }
    })
    .await;
    let gw = gateway_to(up.addr).await;
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    let mut c = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    c.write_all(upgrade("/ws").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("HELLO") {
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(text.to_ascii_lowercase().contains("\r\nupgrade: websocket\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nHELLO"), "the upstream's first bytes follow the head: {text}");
    c.write_all(b"ping\r\n\r\n").await.unwrap();
    let mut echoed = Vec::new();
    while !String::from_utf8_lossy(&echoed).contains("pong:ping") {
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await.unwrap().unwrap();
        assert!(n > 0, "tunnel closed: {}", String::from_utf8_lossy(&echoed));
        echoed.extend_from_slice(&b[..n]);
    }
    let sent = up.request(0).to_ascii_lowercase();
    assert!(sent.starts_with("get /ws http/1.1\r\n"), "{sent}");
    assert!(sent.contains("\r\nconnection: upgrade\r\n") && sent.contains("\r\nupgrade: websocket\r\n"), "{sent}");
    assert!(sent.contains("\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n"), "{sent}");

    let mut c = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
    let (head, body) = roundtrip(&mut c, &upgrade("/no")).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert_eq!(body, "no way");
    for path in ["/bare", "/junk"] {
        let mut c = tokio::net::TcpStream::connect(gw.addr("main")).await.unwrap();
        let (head, body) = roundtrip(&mut c, &upgrade(path)).await;
        assert!(head.starts_with("http/1.1 502"), "{path}: {head}{body}");
    }
}
