//! Message framing at both edges, over real sockets: malformed request bodies (400, the
//! connection closes, nothing after them is read as a request: plain and TLS), bodies whose
//! `100 Continue` never went out, the body read timeout (408, never the upstream's fault),
//! upgrade requests with a body or for `h2c`, trailer fields that must not travel (both ways,
//! HTTP/1.1 and HTTP/2), `Host` values, the request-line limit (414), and pooled upstream
//! connections after responses that stray bytes may follow.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use futures_util::StreamExt as _;

use crate::support::*;

/// The request every malformed body is followed by; the upstream must never see it.
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

/// Malformed chunked request bodies (what follows the head), one framing error each.
fn malformed_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("bytes after the chunk data", b"5\r\nhelloXX\r\n0\r\n\r\n".to_vec()),
        ("no CRLF after the chunk data", b"5\r\nhello0\r\n\r\n".to_vec()),
        ("LF alone after the chunk data", b"5\r\nhello\n0\r\n\r\n".to_vec()),
        ("size not hex", b"zz\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("space after the size", b"5 \r\nhello\r\n0\r\n\r\n".to_vec()),
        ("tab after the size", b"5\t\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("size line ended by LF alone", b"5\nhello\r\n0\r\n\r\n".to_vec()),
        ("bare CR in the size line", b"5\rhello\r\n0\r\n\r\n".to_vec()),
        ("negative size", b"-5\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("17 hex digits", b"00000000000000005\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("unterminated quoted extension", b"5;a=\"\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("extension without a name", b"5;=v\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("extension with a bad value", b"5;a=b c\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("space after an extension", b"5;a \r\nhello\r\n0\r\n\r\n".to_vec()),
        ("control byte in an extension", b"5;a\x01\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("trailer without a colon", b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n".to_vec()),
        ("space before a trailer's colon", b"5\r\nhello\r\n0\r\nx-a : 1\r\n\r\n".to_vec()),
        ("folded trailer", b"5\r\nhello\r\n0\r\nx-a: 1\r\n folded\r\n\r\n".to_vec()),
        ("control byte in a trailer", b"5\r\nhello\r\n0\r\nx-a: \x01\r\n\r\n".to_vec()),
    ];
    let mut long = b"5;a=".to_vec();
    long.extend(std::iter::repeat_n(b'b', 5000));
    long.extend(b"\r\nhello\r\n0\r\n\r\n");
    v.push(("size line over 4 KiB", long));
    let mut big = b"5\r\nhello\r\n0\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'b', 17 * 1024));
    big.extend(b"\r\n\r\n");
    v.push(("trailer section over 16 KiB", big));
    let mut many = b"5\r\nhello\r\n0\r\n".to_vec();
    for i in 0..40 {
        many.extend(format!("x-t{i}: 1\r\n").bytes());
    }
    many.extend(b"\r\n");
    v.push(("more than 32 trailer fields", many));
    v
}

/// An upstream (HTTP/1.1 and h2c) that echoes and records the path of every request it gets.
async fn recording_upstream() -> (Upstream, Arc<Mutex<Vec<String>>>) {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let p = paths.clone();
    let up = Upstream::start(Behavior::Custom(Arc::new(move |req| {
        p.lock().unwrap().push(req.uri().path().to_string());
        Box::pin(gw_test_util::echo("a", req))
    })))
    .await;
    (up, paths)
}

/// Routes: `/proxy/*` (HTTP/1.1 upstream), `/h2/*` (h2c upstream), `/echo`, `/buffered` (a body
/// plugin buffers the body), `/fixed` (static: the body is never read); `extra` goes into
/// `gateway:`, `listeners` replaces the listener list.
fn framing_yaml(upstream: &str, gateway: &str, listeners: &str) -> String {
    format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n{gateway}{listeners}services:\n  - name: h1\n    url: http://{upstream}\n    retries: {{ attempts: 0 }}\n  - name: h2\n    url: h2c://{upstream}\n    retries: {{ attempts: 0 }}\n  - name: echo\n    type: echo\n  - name: fixed\n    type: static\n    response: {{ status: 201, body: done }}\nroutes:\n  - name: proxy\n    service: h1\n    paths: [\"/proxy/*\"]\n  - name: h2\n    service: h2\n    paths: [\"/h2/*\"]\n  - name: echo\n    service: echo\n    paths: [\"/echo\"]\n  - name: buffered\n    service: h1\n    paths: [\"/buffered\"]\n  - name: fixed\n    service: fixed\n    paths: [\"/fixed\"]\n  - name: smuggled\n    service: h1\n    paths: [\"/smuggled\"]\nplugins:\n  - plugin: request-transformer\n    route: buffered\n    config: {{ remove: {{ json: [password] }} }}\n"
    )
}

const ONE_LISTENER: &str = "listeners:\n  - name: main\n    address: 127.0.0.1:0\n";

/// Lines of a JSON-lines access log, once it holds at least `n` (waits up to 5 s).
pub(crate) async fn log_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for _ in 0..250 {
        lines = std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect();
        if lines.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Send `head` + `body` + [`SMUGGLED`] in one write on `c`; the answer must be `want` (400 with
/// a JSON error when the body is read, the static 201 when it is not), say `Connection:
/// close`, and the connection must close.
async fn assert_refused_and_closed(mut c: Responses, head: &str, body: &[u8], want: u16, what: &str) {
    eprintln!("case: {what}");
    let mut wire = head.as_bytes().to_vec();
    wire.extend_from_slice(body);
    wire.extend_from_slice(SMUGGLED);
    c.send(&wire).await;
    let r = c.next(false).await;
    assert_eq!(r.status(), want, "{what}: {}", r.head);
    if want == 400 {
        assert_eq!(r.json()["error"], "bad_request", "{what}");
    }
    assert!(r.head.contains("connection: close"), "{what}: {}", r.head);
    assert!(c.closed().await, "{what}: the connection stays open after a malformed body");
}

/// Issue 16 item 1, issue 17 item 3: a malformed chunked request body is answered with 400 (JSON,
/// `Connection: close`), the connection closes, and the request written behind it never
/// reaches the upstream, whichever way the pipeline reads the body (streamed to an HTTP/1.1 or
/// HTTP/2 upstream, echoed, buffered by a plugin) or skips it (a static response). Logged as
/// 400 `bad_request`, never 499.
#[tokio::test]
async fn malformed_chunked_bodies_get_400_and_close_the_connection() {
    let (up, paths) = recording_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gateway = format!("  access_log: {{ target: {} }}\n", log.display());
    let gw = TestGateway::start(&framing_yaml(&up.authority(), &gateway, ONE_LISTENER), &[]).await;
    let cases = malformed_bodies();
    let routes = [("/proxy/x", 400), ("/h2/x", 400), ("/echo", 400), ("/buffered", 400), ("/fixed", 201)];
    for (path, want) in routes {
        for (what, body) in &cases {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let c = Responses::connect(gw.addr("main")).await;
            assert_refused_and_closed(c, &head, body, want, &format!("{path}: {what}")).await;
        }
    }
    // The same behind a valid pipelined request, and with `Expect: 100-continue`.
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"POST /proxy/first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n").await;
    assert_eq!(c.next(false).await.json()["body"], "ok");
    let head = "POST /proxy/second HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_refused_and_closed(c, head, b"5\r\nhelloXX\r\n0\r\n\r\n", 400, "pipelined").await;
    let head = "POST /proxy/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(head.as_bytes()).await;
    assert_eq!(c.next(false).await.status(), 100);
    assert_refused_and_closed(c, "", b"5 \r\nhello\r\n0\r\n\r\n", 400, "after 100 Continue").await;

    let seen = paths.lock().unwrap().clone();
    assert!(!seen.iter().any(|p| p == "/smuggled"), "a smuggled request reached the upstream: {seen:?}");
    let reading = cases.len() * 4 + 2;
    let lines = log_lines(&log, reading + cases.len() + 1).await;
    let refused = lines.iter().filter(|l| l["status"] == 400 && l["error"] == "bad_request").count();
    assert_eq!(refused, reading, "{lines:?}");
    assert!(!lines.iter().any(|l| l["status"] == 499 || l["path"] == "/smuggled"), "{lines:?}");
}

/// The same over TLS: a malformed body ends the TLS connection too, and what follows it is not
/// read.
#[tokio::test]
async fn malformed_chunked_bodies_close_tls_connections() {
    let (up, paths) = recording_upstream().await;
    let ca = gw_test_util::TestCa::new("framing-ca");
    let cert = ca.server(&["a.test"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("a.crt"), dir.path().join("a.key"));
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    std::fs::write(&key_file, &cert.key_pem).unwrap();
    let listeners = format!(
        "certificates:\n  - name: a\n    cert_file: {}\n    key_file: {}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n    tls: {{ default_certificate: a }}\n",
        cert_file.display(),
        key_file.display()
    );
    let gw = TestGateway::start(&framing_yaml(&up.authority(), "", &listeners), &[]).await;
    let mut roots = rustls::RootCertStore::empty();
    let ca_der: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem().as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    for (path, want) in [("/proxy/x", 400), ("/echo", 400), ("/fixed", 201)] {
        for (what, body) in malformed_bodies() {
            let tcp = TcpStream::connect(gw.addr("main")).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            let head = format!("POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
            assert_refused_and_closed(Responses::over(tls), &head, &body, want, &format!("TLS {path}: {what}")).await;
        }
    }
    let seen = paths.lock().unwrap().clone();
    assert!(!seen.iter().any(|p| p == "/smuggled"), "a smuggled request reached the upstream: {seen:?}");
}

/// A request body nobody read and whose `100 Continue` never went out is never skipped: the
/// client may or may not send it, so whether the bytes that follow are that body or a new
/// request is unknown. The connection closes after the response.
#[tokio::test]
async fn an_unanswered_expect_continue_closes_the_connection() {
    let (up, paths) = recording_upstream().await;
    let gw = TestGateway::start(&framing_yaml(&up.authority(), "", ONE_LISTENER), &[]).await;
    let mut c = Responses::connect(gw.addr("main")).await;
    let mut wire =
        b"POST /fixed HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    wire.extend_from_slice(SMUGGLED);
    c.send(&wire).await;
    let r = c.next(false).await;
    assert_eq!(r.status(), 201, "{}", r.head);
    assert!(r.head.contains("connection: close"), "{}", r.head);
    assert!(c.closed().await);
    assert!(paths.lock().unwrap().is_empty(), "{:?}", paths.lock().unwrap());
}

/// A raw HTTP/1.1 upstream: `script(head, conn)` decides what to write after each request head
/// (`conn` counts that connection's requests from 0); request bodies are read and thrown away
/// (Content-Length or chunked, trailers included). Counts connections.
struct RawUpstream {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

type RawScript = Arc<dyn Fn(&str, usize) -> RawReply + Send + Sync>;

enum RawReply {
    /// Write these bytes and go on reading requests.
    Keep(Vec<u8>),
    /// Write these bytes and close.
    Close(Vec<u8>),
    /// Write these bytes, then wait this long without reading, then close.
    Stall(Vec<u8>, Duration),
}

impl RawUpstream {
    async fn start(script: impl Fn(&str, usize) -> RawReply + Send + Sync + 'static) -> RawUpstream {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        let script: RawScript = Arc::new(script);
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_raw(s, script.clone()));
            }
        });
        RawUpstream { addr, conns }
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

/// Read a request head and its body from `s` (`buf` keeps what was read ahead): the head and
/// the body's trailer lines (lowercase). `None` at the end of the connection.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<String>)> {
    async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
        let mut b = [0u8; 8192];
        match s.read(&mut b).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.extend_from_slice(&b[..n]);
                Some(())
            }
        }
    }
    async fn line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&buf[..p]).into_owned();
                buf.drain(..p + 2);
                return Some(l);
            }
            fill(s, buf).await?;
        }
    }
    let mut head = String::new();
    loop {
        let l = line(s, buf).await?;
        if l.is_empty() {
            break;
        }
        head.push_str(&l);
        head.push_str("\r\n");
    }
    let lower = head.to_ascii_lowercase();
    let mut trailers = Vec::new();
    if let Some(cl) = lower.lines().find_map(|l| l.strip_prefix("content-length:")) {
        let n: usize = cl.trim().parse().ok()?;
        while buf.len() < n {
            fill(s, buf).await?;
        }
        buf.drain(..n);
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let size = line(s, buf).await?;
            let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if n == 0 {
                loop {
                    let t = line(s, buf).await?;
                    if t.is_empty() {
                        break;
                    }
                    trailers.push(t.to_ascii_lowercase());
                }
                break;
            }
            while buf.len() < n + 2 {
                fill(s, buf).await?;
            }
            buf.drain(..n + 2);
        }
    }
    Some((head, trailers))
}

async fn serve_raw(mut s: TcpStream, script: RawScript) {
    let mut buf = Vec::new();
    let mut n = 0;
    while let Some((head, _)) = read_request(&mut s, &mut buf).await {
        match script(&head, n) {
            RawReply::Keep(b) => {
                if s.write_all(&b).await.is_err() {
                    return;
                }
            }
            RawReply::Close(b) => {
                let _ = s.write_all(&b).await;
                return;
            }
            RawReply::Stall(b, d) => {
                let _ = s.write_all(&b).await;
                tokio::time::sleep(d).await;
                return;
            }
        }
        n += 1;
    }
}

/// Issue 16 item 10: a response that announces a body it must not have (`304`/`204` with a
/// length, `HEAD` answered with a length or chunked) may be followed by that body anyway; the
/// connection it came on is never pooled. The upstream here writes the stray body only when the
/// next request arrives on the same connection, so a reused connection fails every time (502
/// with retries off, as in the report); a clean `304` keeps its connection.
#[tokio::test]
async fn connections_that_stray_bytes_may_follow_are_not_reused() {
    let cases: Vec<(&str, &str, &[u8], &[u8])> = vec![
        ("GET", "/304", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", b"hello"),
        ("GET", "/204", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", b"hello"),
        ("HEAD", "/head", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"hello"),
        ("HEAD", "/head-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    ];
    let table: Vec<(String, Vec<u8>, Vec<u8>)> =
        cases.iter().map(|(_, p, h, b)| (p.to_string(), h.to_vec(), b.to_vec())).collect();
    let pending = Arc::new(Mutex::new(std::collections::HashMap::<usize, Vec<u8>>::new()));
    let conn_ids = Arc::new(AtomicUsize::new(0));
    let up = {
        let pending = pending.clone();
        let ids = conn_ids.clone();
        RawUpstream::start(move |head, n| {
            // One id per connection: its first request takes a new one.
            let id = if n == 0 { ids.fetch_add(1, Ordering::SeqCst) + 1 } else { ids.load(Ordering::SeqCst) };
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            let mut out = pending.lock().unwrap().remove(&id).unwrap_or_default();
            if let Some((_, h, b)) = table.iter().find(|(p, _, _)| *p == path) {
                out.extend_from_slice(h);
                pending.lock().unwrap().insert(id, b.clone());
            } else if path == "/clean" {
                out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n");
            } else {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
            RawReply::Keep(out)
        })
        .await
    };
    let gw = gateway(&format!(
        "services:\n  - name: s\n    url: http://{}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n",
        up.addr
    ))
    .await;
    // One client connection, so that the gateway's requests come one after the other.
    let c = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(1).build().unwrap();
    let url = gw.url("main");
    for (method, path, _, _) in &cases {
        for i in 0..20 {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = c.request(m, format!("{url}{path}")).send().await.unwrap();
            assert!(r.status() == 200 || r.status() == 204 || r.status() == 304, "{path} #{i}: {}", r.status());
            let r = c.get(format!("{url}/after")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{method} {path} #{i}: the next request on the pooled connection failed");
            assert_eq!(r.text().await.unwrap(), "ok");
        }
    }
    // Clean bodiless responses keep their connection.
    let before = up.conns();
    for _ in 0..20 {
        let r = c.get(format!("{url}/clean")).send().await.unwrap();
        assert_eq!(r.status(), 304);
        assert_eq!(c.get(format!("{url}/after")).send().await.unwrap().status(), 200);
    }
    assert!(up.conns() - before <= 1, "a clean 304 must not cost a connection: {} new", up.conns() - before);
}

/// The request line alone longer than the head limit is 414 (the docs' promise), also when the
/// whole head has arrived; a long field is 431.
#[tokio::test]
async fn a_request_line_over_the_limit_is_414() {
    let yaml = "gateway:\n  status_listener: \"off\"\n  access_log: { enabled: false }\n  limits: { max_header_bytes: 8KiB }\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    type: echo\nroutes:\n  - name: r\n    service: s\n";
    let gw = TestGateway::start(yaml, &[]).await;
    let line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(10_000));
    let field = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Long: {}\r\n\r\n", "a".repeat(10_000));
    for (wire, want) in [(line, 414), (field, 431)] {
        let mut c = Responses::connect(gw.addr("main")).await;
        c.send(wire.as_bytes()).await;
        let r = c.next(false).await;
        assert_eq!(r.status(), want, "{}", r.head);
        assert!(c.closed().await);
    }
}

/// Issue 17 item 3: a `Host` value that is not `host[:port]` is refused with 400, also when an
/// absolute-form target names the host (RFC 9112 §3.2); valid values pass.
#[tokio::test]
async fn invalid_host_values_are_refused() {
    let (up, paths) = recording_upstream().await;
    let gw = TestGateway::start(&framing_yaml(&up.authority(), "", ONE_LISTENER), &[]).await;
    for target in ["/proxy/x", "http://a.example/proxy/x"] {
        for host in ["a b", "a/b", "a@b", "a.example:80x", "[::1", "a\"b", "a<b>", "a{b}", "%zz", "a:b:c"] {
            let wire = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let mut c = Responses::connect(gw.addr("main")).await;
            c.send(wire.as_bytes()).await;
            let r = c.next(false).await;
            assert_eq!(r.status(), 400, "{target} with Host {host:?}: {}", r.head);
            assert!(c.closed().await);
        }
        for host in ["a.example", "a.example:8080", "127.0.0.1:1", "[::1]:80", "a_b.example"] {
            let wire = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut c = Responses::connect(gw.addr("main")).await;
            c.send(wire.as_bytes()).await;
            assert_eq!(c.next(false).await.status(), 200, "{target} with Host {host:?}");
        }
    }
    // An absolute-form target's own authority is checked too.
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET http://user@a.example/proxy/x HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(c.next(false).await.status(), 400);
    assert_eq!(paths.lock().unwrap().len(), 10, "only the valid requests reached the upstream");
}

/// Issue 17 item 1: an upgrade request with a body is served as an ordinary request: the body
/// reaches the upstream with a length it follows (Content-Length or chunked), no `Upgrade`
/// goes upstream, and the client gets the upstream's answer at once (not a 504, not a lost
/// body). An `h2c` upgrade is never forwarded (it would open a tunnel past the gateway).
#[tokio::test]
async fn upgrade_requests_with_a_body_keep_their_body() {
    let (up, _) = recording_upstream().await;
    let gw = TestGateway::start(&framing_yaml(&up.authority(), "", ONE_LISTENER), &[]).await;
    let started = Instant::now();
    for (framing, body) in
        [("Content-Length: 5", &b"hello"[..]), ("Transfer-Encoding: chunked", b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n")]
    {
        for route in ["/proxy/up", "/h2/up"] {
            let mut c = Responses::connect(gw.addr("main")).await;
            let mut wire =
                format!("POST {route} HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n{framing}\r\n\r\n")
                    .into_bytes();
            wire.extend_from_slice(body);
            c.send(&wire).await;
            let r = c.next(false).await;
            assert_eq!(r.status(), 200, "{route} {framing}: {}", r.head);
            let j = r.json();
            assert_eq!((j["body"].as_str(), j["body_bytes"].as_u64()), (Some("hello"), Some(5)), "{j}");
            assert!(j["headers"].get("upgrade").is_none(), "Upgrade forwarded: {j}");
            // The connection goes on as HTTP/1.1.
            c.send(b"GET /proxy/next HTTP/1.1\r\nHost: a\r\n\r\n").await;
            assert_eq!(c.next(false).await.json()["path"], "/proxy/next");
        }
    }
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET /proxy/h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n").await;
    let r = c.next(false).await;
    assert_eq!(r.status(), 200, "{}", r.head);
    let j = r.json();
    assert!(j["headers"].get("upgrade").is_none() && j["headers"].get("http2-settings").is_none(), "{j}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered at once");
}

/// The trailer fields the test sends in each direction: every field of the module's list, one
/// per prefix, and the list (the module's list must cover it), with `Content-Length`
/// twice (disagreeing), a field named by a `Connection` trailer, and the request id. `h2`: the
/// fields HTTP/2 itself forbids (which its libraries refuse to send) are left out. In batches of
/// at most 24 fields (a trailer section may have 32).
fn forbidden_trailers(h2: bool) -> Vec<Vec<(String, String)>> {
    let mut names: Vec<String> = gw_proxy::wire::FORBIDDEN_TRAILER_FIELDS.iter().map(|s| s.to_string()).collect();
    names.extend(gw_proxy::wire::FORBIDDEN_TRAILER_PREFIXES.iter().map(|p| format!("{p}test")));
    // The identity fields (one list, shared with the request scrub).
    for n in gw_core::identity::RESERVED {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    for n in [
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "trailer",
        "te",
        "upgrade",
        "authorization",
        "cookie",
        "set-cookie",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "x-consumer-id",
        "x-consumer-username",
        "x-consumer-custom-id",
        "x-consumer-groups",
        "x-credential-identifier",
        "x-anonymous-consumer",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "x-request-id",
    ] {
        assert!(
            gw_proxy::wire::is_forbidden_trailer(
                &http::HeaderName::from_static(n),
                &http::HeaderName::from_static("x-request-id"),
                &[]
            ),
            "{n} is not refused as a trailer"
        );
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    let h2_forbidden = ["connection", "transfer-encoding", "upgrade", "keep-alive", "proxy-connection", "te"];
    // Pairs that belong together come first (one batch).
    let mut all: Vec<(String, String)> =
        vec![("content-length".into(), "50".into()), ("content-length".into(), "51".into())];
    if !h2 {
        all.push(("connection".into(), "x-named".into()));
        all.push(("x-named".into(), "evil".into()));
    }
    for n in names {
        if (h2 && h2_forbidden.contains(&n.as_str())) || n == "content-length" || n == "connection" {
            continue;
        }
        let v = match n.as_str() {
            "host" => "evil.example",
            "transfer-encoding" => "gzip",
            _ => "evil",
        };
        all.push((n, v.to_string()));
    }
    all.chunks(24).map(<[_]>::to_vec).collect()
}

/// The batch number in a request target (`...?batch=N`).
fn batch_of(target: &str) -> usize {
    target.split("batch=").nth(1).and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).unwrap_or(0)
}

/// The trailer section of an HTTP/1.1 message: a batch of forbidden fields, then `x-sum: 7`.
fn h1_trailer_section(h2: bool, batch: usize) -> Vec<u8> {
    let mut t = Vec::new();
    for (n, v) in &forbidden_trailers(h2)[batch] {
        t.extend(format!("{n}: {v}\r\n").bytes());
    }
    t.extend(b"x-sum: 7\r\n\r\n");
    t
}

fn trailer_map(h2: bool, batch: usize) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (n, v) in &forbidden_trailers(h2)[batch] {
        m.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
    }
    m.append("x-sum", http::HeaderValue::from_static("7"));
    m
}

/// Names of trailer lines (`name: value`, any case).
fn names_of(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| l.split(':').next().unwrap_or("").trim().to_ascii_lowercase()).collect()
}

/// An h2c upstream (hyper) that records the request trailers it gets and answers `hello` with
/// the batch of forbidden trailers the request names, and `x-sum`.
async fn h2_trailer_upstream() -> (Upstream, Arc<Mutex<Vec<Vec<String>>>>) {
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let s = seen.clone();
    let up = Upstream::start(Behavior::Custom(Arc::new(move |req| {
        let s = s.clone();
        Box::pin(async move {
            // (The HTTP/2 list has fewer batches.)
            let batch = batch_of(&req.uri().to_string()) % forbidden_trailers(true).len();
            let collected = req.into_body().collect().await.ok();
            let names = collected
                .and_then(|c| c.trailers().cloned())
                .map(|t| t.keys().map(|k| k.to_string()).collect())
                .unwrap_or_default();
            s.lock().unwrap().push(names);
            // Streamed (no Content-Length), so that an HTTP/1.1 client gets it chunked, with
            // trailers.
            let frames = [
                Ok(hyper::body::Frame::data(Bytes::from_static(b"hello"))),
                Ok(hyper::body::Frame::trailers(trailer_map(true, batch))),
            ];
            let body = BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
            http::Response::new(body)
        })
    })))
    .await;
    (up, seen)
}

/// A raw HTTP/1.1 upstream that records request trailer names and answers `hello` chunked with
/// the batch of forbidden trailers the request names, and `x-sum`.
async fn h1_trailer_upstream() -> (SocketAddr, Arc<Mutex<Vec<Vec<String>>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some((head, trailers)) = read_request(&mut sock, &mut buf).await {
                    s.lock().unwrap().push(names_of(&trailers));
                    let batch = batch_of(head.split(' ').nth(1).unwrap_or(""));
                    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n".to_vec();
                    out.extend(h1_trailer_section(false, batch));
                    if sock.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
async fn h2_client(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

fn assert_only_x_sum(names: &[String], what: &str) {
    assert_eq!(names, ["x-sum"], "{what}: trailers that must not travel got through");
}

/// Issue 17 item 2: fields that frame, route, authenticate or control a message, and the
/// gateway's identity and forwarding fields, never leave the gateway as trailers, in either
/// direction: HTTP/1.1 client to HTTP/1.1 and HTTP/2 upstreams, HTTP/2 client to both, and the
/// responses' trailers back. Other trailers (`x-sum`) pass.
#[tokio::test]
async fn forbidden_trailers_never_travel() {
    let (h1_up, h1_seen) = h1_trailer_upstream().await;
    let (h2_up, h2_seen) = h2_trailer_upstream().await;
    let yaml = format!(
        "services:\n  - name: h1\n    url: http://{h1_up}\n  - name: h2\n    url: h2c://{}\nroutes:\n  - name: h1\n    service: h1\n    paths: [\"/h1\"]\n  - name: h2\n    service: h2\n    paths: [\"/h2\"]\n",
        h2_up.authority()
    );
    let gw = gateway(&yaml).await;
    let mut sent = 0;
    for batch in 0..forbidden_trailers(false).len() {
        // HTTP/1.1 client.
        for path in ["/h1", "/h2"] {
            let mut c = Responses::connect(gw.addr("main")).await;
            let mut wire = format!(
                "POST {path}?batch={batch} HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
            )
            .into_bytes();
            wire.extend(h1_trailer_section(false, batch));
            c.send(&wire).await;
            let r = c.next(false).await;
            assert_eq!(r.status(), 200, "{path} batch {batch}: {}", r.head);
            assert_eq!(r.body, b"hello");
            let lines: Vec<String> = r.trailers.lines().map(str::to_string).collect();
            assert_only_x_sum(
                &names_of(&lines),
                &format!("HTTP/1.1 client, response trailers from {path}, batch {batch}"),
            );
        }
        sent += 1;
    }
    for batch in 0..forbidden_trailers(true).len() {
        // HTTP/2 client.
        for path in ["/h1", "/h2"] {
            let mut sender = h2_client(gw.addr("main")).await;
            // Streamed (no Content-Length), so that an HTTP/1.1 upstream gets it chunked, with
            // trailers.
            let frames = [
                Ok(hyper::body::Frame::data(Bytes::from_static(b"hello"))),
                Ok(hyper::body::Frame::trailers(trailer_map(true, batch))),
            ];
            let body = BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
            let req = http::Request::post(format!("http://a{path}?batch={batch}"))
                .header("te", "trailers")
                .body(body)
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200, "{path} batch {batch}");
            let collected = resp.into_body().collect().await.unwrap();
            let names: Vec<String> =
                collected.trailers().map(|t| t.keys().map(|k| k.to_string()).collect()).unwrap_or_default();
            assert_only_x_sum(&names, &format!("HTTP/2 client, response trailers from {path}, batch {batch}"));
            assert_eq!(collected.to_bytes(), "hello");
        }
    }
    let (h1_seen, h2_seen) = (h1_seen.lock().unwrap().clone(), h2_seen.lock().unwrap().clone());
    assert_eq!(h1_seen.len(), sent + forbidden_trailers(true).len());
    assert_eq!(h2_seen.len(), h1_seen.len());
    for (i, names) in h1_seen.iter().enumerate() {
        assert_only_x_sum(names, &format!("request {i} to the HTTP/1.1 upstream"));
    }
    for (i, names) in h2_seen.iter().enumerate() {
        assert_only_x_sum(names, &format!("request {i} to the HTTP/2 upstream"));
    }
}

/// Issue 16 item 6: a client that sends part of its body and stops gets 408 after
/// `limits.body_read_timeout` (Content-Length and chunked, HTTP/1.1 and HTTP/2), and its
/// connection closes; the upstream is not blamed (no 5xx, the target stays healthy with one
/// failure enough to eject it, not logged as an upstream error).
#[tokio::test]
async fn a_stalled_request_body_gets_408() {
    let (up, _) = recording_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ target: {} }}\n  limits: {{ body_read_timeout: 300ms }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nupstreams:\n  - name: u\n    targets: [{{ address: \"{}\" }}]\n    health_checks: {{ passive: {{ consecutive_failures: 1, ejection_time: 60s }} }}\nservices:\n  - name: s\n    upstream: u\n    retries: {{ attempts: 0 }}\n  - name: h2\n    url: h2c://{}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: h2\n    service: h2\n    paths: [\"/h2/*\"]\n  - name: r\n    service: s\n",
        log.display(),
        up.authority(),
        up.authority()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    for (path, framing, part) in [
        ("/slow", "Content-Length: 10", &b"hel"[..]),
        ("/slow-chunked", "Transfer-Encoding: chunked", b"a\r\nhel"),
        ("/h2/slow", "Content-Length: 10", b"hel"),
    ] {
        let mut c = Responses::connect(gw.addr("main")).await;
        let t0 = Instant::now();
        let mut wire = format!("POST {path} HTTP/1.1\r\nHost: a\r\n{framing}\r\n\r\n").into_bytes();
        wire.extend_from_slice(part);
        c.send(&wire).await;
        let r = c.next(false).await;
        assert_eq!(r.status(), 408, "{path}: {}", r.head);
        assert_eq!(r.json()["error"], "request_timeout");
        assert!(r.head.contains("connection: close"), "{}", r.head);
        assert!(t0.elapsed() >= Duration::from_millis(250), "{path}: answered before the timeout");
        assert!(c.closed().await);
    }
    // An HTTP/2 client's stalled stream.
    let mut sender = h2_client(gw.addr("main")).await;
    let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
        Bytes::from_static(b"hel"),
    ))])
    .chain(futures_util::stream::pending());
    let body = BodyExt::boxed(http_body_util::StreamBody::new(stream));
    let req = http::Request::post("http://a/h2-client").body(body).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await.expect("answered").unwrap();
    assert_eq!(resp.status(), 408);

    let (_, _, v) = get_json(&format!("{}/status/upstreams", gw.status_url())).await;
    let healthy: Vec<_> =
        v["upstreams"][0]["targets"].as_array().unwrap().iter().map(|t| t["healthy"].clone()).collect();
    assert_eq!(healthy, [true], "a client's stall counted against the upstream: {v}");
    let r = client().get(format!("{}/after", gw.url("main"))).send().await.unwrap();
    assert_eq!(r.status(), 200, "the target still serves");
    let lines = log_lines(&log, 5).await;
    let timeouts: Vec<_> = lines.iter().filter(|l| l["status"] == 408).collect();
    assert_eq!(timeouts.len(), 4, "{lines:?}");
    assert!(timeouts.iter().all(|l| l["error"] == "request_timeout"), "{lines:?}");
    let m = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("gatehouse_http_errors_total{code=\"request_timeout\"} 4"), "{m}");
    assert!(!m.contains("upstream_protocol_error"), "{m}");
}

/// Issue 16 item 6, the other order: an upstream that gives up on a client whose body has
/// stalled (it closes the connection) is not failing; the client gets 408, and the target stays
/// healthy.
#[tokio::test]
async fn an_upstream_giving_up_on_a_stalled_body_is_not_blamed() {
    // The upstream reads the head, then closes 1.5 s later without an answer.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                let _ = s.read(&mut b).await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
            });
        }
    });
    let gw = gateway(&format!(
        "upstreams:\n  - name: u\n    targets: [{{ address: \"{addr}\" }}]\n    health_checks: {{ passive: {{ consecutive_failures: 1, ejection_time: 60s }} }}\nservices:\n  - name: s\n    upstream: u\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n"
    ))
    .await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhel").await;
    let r = c.next(false).await;
    assert_eq!(r.status(), 408, "{}", r.head);
    let (_, _, v) = get_json(&format!("{}/status/upstreams", gw.status_url())).await;
    assert_eq!(v["upstreams"][0]["targets"][0]["healthy"], true, "{v}");
}

/// Issue 16 item 9 (HTTP/2 part): responses without a body to an HTTP/2 client (a `HEAD`, a
/// `204`, a gRPC trailers-only error) are delivered and logged complete, not as a client that
/// went away.
#[tokio::test]
async fn bodiless_http2_responses_are_logged_complete() {
    let up = Upstream::start(Behavior::Custom(Arc::new(|req| {
        Box::pin(async move {
            match req.uri().path().trim_start_matches("/h2") {
                "/204" => {
                    let mut r = http::Response::new(gw_test_util::full(""));
                    *r.status_mut() = http::StatusCode::NO_CONTENT;
                    r
                }
                "/test.Echo/Fail" => {
                    let mut r = http::Response::new(gw_test_util::full(""));
                    r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/grpc"));
                    r.headers_mut().insert("grpc-status", http::HeaderValue::from_static("5"));
                    r
                }
                _ => gw_test_util::echo("a", req).await,
            }
        })
    })))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ target: {} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: h1\n    url: http://{a}\n  - name: grpc\n    url: grpc://{a}\nroutes:\n  - name: grpc\n    service: grpc\n    paths: [\"/test.Echo/*\", \"/h2/*\"]\n  - name: h1\n    service: h1\n",
        log.display(),
        a = up.authority()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let mut sender = h2_client(gw.addr("main")).await;
    let empty = || http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed();
    for (method, path, want) in
        [("HEAD", "/head", 200), ("GET", "/204", 204), ("GET", "/h2/204", 204), ("POST", "/test.Echo/Fail", 200)]
    {
        let req = http::Request::builder().method(method).uri(format!("http://a{path}"));
        let req = if path.starts_with("/test.") {
            req.header("content-type", "application/grpc").header("te", "trailers")
        } else {
            req
        };
        let resp = sender.send_request(req.body(empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), want, "{method} {path}");
        if path.starts_with("/test.") {
            assert_eq!(resp.headers()["grpc-status"], "5");
        }
        resp.into_body().collect().await.unwrap();
    }
    let lines = log_lines(&log, 4).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    for l in &lines {
        assert!(l["error"].is_null(), "a delivered response logged as failed: {l}");
    }
}

/// Issue 16 item 9 (upstream failures): an upstream that breaks before the first body byte
/// gives the client a 502 (JSON, logged 502 `upstream_protocol_error`) instead of a head and an
/// empty reply; one that stalls mid-body is logged `upstream_timeout` and counted in
/// `gatehouse_http_errors_total`, not as a client that went away.
#[tokio::test]
async fn upstream_body_failures_are_logged_as_the_upstream_s() {
    let up = RawUpstream::start(|head, _| {
        let path = head.split(' ').nth(1).unwrap_or("");
        match path {
            "/bad-chunk" => RawReply::Close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec()),
            "/closed" => RawReply::Close(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec()),
            "/stall" => {
                RawReply::Stall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello".to_vec(), Duration::from_secs(5))
            }
            _ => RawReply::Keep(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ target: {} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\n    retries: {{ attempts: 0 }}\n    timeouts: {{ read: 300ms }}\nroutes:\n  - name: r\n    service: s\n",
        log.display(),
        up.addr
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    // The bad chunk-size line arrives with the head: the failure is known before the head goes
    // out.
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET /bad-chunk HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.next(false).await;
    assert_eq!(r.status(), 502, "{}", r.head);
    assert_eq!(r.json()["error"], "upstream_protocol_error");
    // An upstream that closes right after its head: a 502 when the close is seen before the
    // head went out, else the head and a closed connection (a race between two packets); the
    // log blames the upstream either way.
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET /closed HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let line = c.line().await;
    let closed_status = if line.starts_with(b"HTTP/1.1 502") {
        while !c.line().await.is_empty() {}
        502
    } else {
        assert!(line.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&line));
        while c.fill().await {}
        200
    };
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let head = String::from_utf8_lossy(&c.take(5).await).into_owned();
    assert_eq!(head, "HTTP/");
    // The head and the 5 bytes sent, then the connection closes (the body cannot be finished).
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async { while c.fill().await {} }).await;
    rest.extend_from_slice(&c.buf);
    let rest = String::from_utf8_lossy(&rest).into_owned();
    assert!(rest.ends_with("\r\n\r\nhello"), "{rest}");
    let lines = log_lines(&log, 3).await;
    let by_path = |p: &str| lines.iter().find(|l| l["path"] == p).cloned().unwrap_or_default();
    for (p, status) in [("/bad-chunk", 502), ("/closed", closed_status)] {
        let l = by_path(p);
        assert_eq!((l["status"].as_u64(), l["error"].as_str()), (Some(status), Some("upstream_protocol_error")), "{l}");
    }
    let l = by_path("/stall");
    assert_eq!((l["status"].as_u64(), l["error"].as_str()), (Some(200), Some("upstream_timeout")), "{l}");
    assert_eq!(l["bytes_sent"], 5, "{l}");
    let m = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("gatehouse_http_errors_total{code=\"upstream_timeout\"} 1"), "{m}");
    assert!(m.contains("gatehouse_http_errors_total{code=\"upstream_protocol_error\"} 2"), "{m}");
}

/// Issue 16 item 9 (shutdown): requests still running when `shutdown_timeout` runs out are cut
/// and logged (`error: shutdown_timeout`: 503 when no response had started, the status sent
/// otherwise), and the log is written out before `shutdown` returns.
#[tokio::test]
async fn requests_cut_by_the_shutdown_timeout_are_logged() {
    let up = RawUpstream::start(|head, _| {
        if head.starts_with("GET /partial") {
            RawReply::Stall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello".to_vec(), Duration::from_secs(30))
        } else {
            RawReply::Stall(Vec::new(), Duration::from_secs(30))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ target: {} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n",
        log.display(),
        up.addr
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let mut hang = Responses::connect(gw.addr("main")).await;
    hang.send(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut partial = Responses::connect(gw.addr("main")).await;
    partial.send(b"GET /partial HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(partial.take(5).await, b"HTTP/");
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.gw.shutdown(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "written before shutdown returned: {text}");
    let by_path = |p: &str| lines.iter().find(|l| l["path"] == p).cloned().unwrap_or_default();
    let h = by_path("/hang");
    assert_eq!((h["status"].as_u64(), h["error"].as_str()), (Some(503), Some("shutdown_timeout")), "{h}");
    let p = by_path("/partial");
    assert_eq!((p["status"].as_u64(), p["error"].as_str()), (Some(200), Some("shutdown_timeout")), "{p}");
    assert!(hang.closed().await, "cut connections are closed");
}

/// Issue 16 item 9 (WebSocket): a tunnel is logged when it closes, with its duration and the
/// bytes carried each way, not at its `101`.
#[tokio::test]
async fn a_tunnel_is_logged_when_it_closes() {
    // 101, then echo whatever arrives.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if read_request(&mut s, &mut buf).await.is_none() {
                    return;
                }
                if s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let mut b = [0u8; 4096];
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
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ target: {} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: ws\n    url: http://{addr}\nroutes:\n  - name: ws\n    service: ws\n",
        log.display()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n").await;
    assert_eq!(c.next(false).await.status(), 101);
    c.send(b"hello").await;
    assert_eq!(c.take(5).await, b"hello");
    c.send(b"tunnel!").await;
    assert_eq!(c.take(7).await, b"tunnel!");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(std::fs::read_to_string(&log).unwrap_or_default().is_empty(), "logged before the tunnel closed");
    drop(c);
    let lines = log_lines(&log, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["status"], 101, "{l}");
    assert!(l["error"].is_null(), "{l}");
    assert_eq!((l["bytes_sent"].as_u64(), l["bytes_received"].as_u64()), (Some(12), Some(12)), "{l}");
    assert!(l["latency_ms"].as_f64().unwrap() >= 300.0, "the session's duration: {l}");
}
