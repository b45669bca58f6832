//! `proxy-cache` end to end over real sockets: freshness, `Vary`, revalidation, client
//! conditionals, stale content (RFC 5861), coalescing, large responses streaming through,
//! invalidation after unsafe methods, `PURGE`, status fields, metrics and the access log, the
//! Redis tier (shared by two gateway processes, purged across them, and stopped while serving).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;

use crate::support::*;

/// What the origin answers to one request: status, fields, body.
type Answer = (u16, Vec<(&'static str, String)>, Body);

/// An upstream body: whole, or chunks handed over a channel (the test decides when each
/// one exists; the body ends when the sender is dropped).
enum Body {
    Whole(Bytes),
    Chunks(tokio::sync::mpsc::UnboundedReceiver<Bytes>),
}

fn whole(s: impl Into<Bytes>) -> Body {
    Body::Whole(s.into())
}

/// The requests an origin received: method, path and query, header fields.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String, HeaderMap)>>>);

impl Seen {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn last(&self) -> HeaderMap {
        self.0.lock().unwrap().last().map(|s| s.2.clone()).unwrap_or_default()
    }
}

type Script = Arc<dyn Fn(&Request<hyper::body::Incoming>, usize) -> Answer + Send + Sync>;

/// An origin that answers with `script(request, n)` (`n`: requests before this one) after
/// `delay`, recording what it receives.
async fn origin(delay: Duration, script: Script) -> (Upstream, Seen) {
    let seen = Seen::default();
    let s2 = seen.clone();
    let up = Upstream::start(Behavior::Custom(Arc::new(move |req| {
        let n = {
            let mut s = s2.0.lock().unwrap();
            s.push((req.method().to_string(), req.uri().to_string(), req.headers().clone()));
            s.len() - 1
        };
        let (status, fields, body) = script(&req, n);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let body = match body {
                Body::Whole(b) => gw_test_util::full(b),
                Body::Chunks(rx) => {
                    let s = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|b| (Ok::<_, hyper::Error>(hyper::body::Frame::data(b)), rx))
                    });
                    http_body_util::StreamBody::new(s).boxed()
                }
            };
            let mut r = Response::new(body);
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            for (k, v) in fields {
                r.headers_mut().append(k, v.parse().unwrap());
            }
            r
        })
    })))
    .await;
    (up, seen)
}

/// A gateway with one route `r` to `upstream` and `proxy-cache` configured with `cache`
/// (YAML flow mapping), plus `extra` gateway settings.
async fn gateway_with(upstream: std::net::SocketAddr, cache: &str, extra: &str) -> TestGateway {
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\n{extra}listeners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{upstream}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: proxy-cache\n    route: r\n    config: {cache}\n"
    );
    TestGateway::start(&yaml, &[]).await
}

pub(crate) struct Got {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

impl Got {
    pub(crate) fn h(&self, n: &str) -> &str {
        self.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub(crate) fn cs(&self) -> &str {
        self.h("x-cache-status")
    }
}

pub(crate) async fn req(method: &str, url: &str, fields: &[(&str, &str)]) -> Got {
    let mut r = client().request(method.parse().unwrap(), url);
    for (k, v) in fields {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    Got { status, headers, body }
}

async fn get(url: &str) -> Got {
    req("GET", url, &[]).await
}

fn fields(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Freshness from `max-age`, `Age` on hits, HEAD from a stored GET, expiry, `no-store`,
/// `private`, `Authorization`, request `no-cache`, normalised query keys, status field.
#[tokio::test]
async fn freshness_and_what_is_stored() {
    let (up, seen) = origin(
        Duration::ZERO,
        Arc::new(|req, n| {
            let path = req.uri().path().to_string();
            let cc = match path.as_str() {
                "/short" => "max-age=1",
                "/nostore" => "no-store",
                "/private" => "private, max-age=60",
                _ => "max-age=60",
            };
            (200, fields(&[("cache-control", cc)]), whole(format!("{path} #{n}")))
        }),
    )
    .await;
    let gw = gateway_with(up.addr, "{}", "").await;
    let u = |p: &str| format!("{}{p}", gw.url("main"));

    let a = get(&u("/a?y=2&x=1")).await;
    assert_eq!((a.status, a.cs(), a.body.as_str()), (200, "MISS", "/a #0"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Same parameters in another order: the same key.
    let b = get(&u("/a?x=1&y=2")).await;
    assert_eq!((b.cs(), b.body.as_str()), ("HIT", "/a #0"));
    let age: u64 = b.h("age").parse().unwrap();
    assert!((1..=2).contains(&age), "age {age}");
    assert_eq!(seen.count(), 1);
    // HEAD is answered from the stored GET, without a body, with its length.
    let h = req("HEAD", &u("/a?x=1&y=2"), &[]).await;
    assert_eq!((h.status, h.cs(), h.body.as_str(), h.h("content-length")), (200, "HIT", "", "5"));
    assert_eq!(seen.count(), 1);
    // The client's `no-cache` makes the cache validate (no validator: a full fetch).
    let nc = req("GET", &u("/a?x=1&y=2"), &[("cache-control", "no-cache")]).await;
    assert_eq!((nc.cs(), nc.body.as_str()), ("EXPIRED", "/a #1"));
    // Authorization: not served from the shared cache.
    let au = req("GET", &u("/a?x=1&y=2"), &[("authorization", "Bearer x")]).await;
    assert_eq!(au.cs(), "BYPASS");
    assert_eq!(seen.count(), 3);

    // Expiry.
    assert_eq!(get(&u("/short")).await.cs(), "MISS");
    assert_eq!(get(&u("/short")).await.cs(), "HIT");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = get(&u("/short")).await;
    assert_eq!(e.cs(), "EXPIRED");

    // Not stored: no-store, private.
    for p in ["/nostore", "/private"] {
        assert_eq!(get(&u(p)).await.cs(), "MISS");
        let again = get(&u(p)).await;
        assert_eq!(again.cs(), "MISS", "{p}");
    }
    // Unsafe methods are not cached.
    assert_eq!(req("POST", &u("/a"), &[]).await.status, 200);
}

/// `Vary`: one stored response per variant (normalised request values); `Vary: *` is never
/// reused.
#[tokio::test]
async fn vary_variants() {
    let (up, seen) = origin(
        Duration::ZERO,
        Arc::new(|req, n| {
            let lang = req.headers().get("accept-language").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
            let vary = if req.uri().path() == "/star" { "*" } else { "Accept-Language" };
            (200, fields(&[("cache-control", "max-age=60"), ("vary", vary)]), whole(format!("{lang} #{n}")))
        }),
    )
    .await;
    let gw = gateway_with(up.addr, "{}", "").await;
    let u = format!("{}/v", gw.url("main"));
    let en = req("GET", &u, &[("accept-language", "en")]).await;
    let fr = req("GET", &u, &[("accept-language", "fr")]).await;
    assert_eq!((en.body.as_str(), fr.body.as_str()), ("en #0", "fr #1"));
    let en2 = req("GET", &u, &[("accept-language", "en")]).await;
    let fr2 = req("GET", &u, &[("accept-language", "fr")]).await;
    assert_eq!((en2.cs(), en2.body.as_str(), fr2.cs(), fr2.body.as_str()), ("HIT", "en #0", "HIT", "fr #1"));
    assert_eq!(seen.count(), 2);
    let star = format!("{}/star", gw.url("main"));
    get(&star).await;
    assert_eq!(get(&star).await.cs(), "MISS");
    assert_eq!(seen.count(), 4);
}

/// A stale response is validated with its `ETag`; the upstream's 304 updates the stored
/// fields; the client's own conditional request is answered 304 from the cache.
#[tokio::test]
async fn revalidation_and_client_conditionals() {
    let (up, seen) = origin(
        Duration::ZERO,
        Arc::new(|req, n| {
            let inm = req.headers().get("if-none-match").and_then(|v| v.to_str().ok()).unwrap_or("");
            if inm == "\"v1\"" {
                (304, fields(&[("etag", "\"v1\""), ("cache-control", "max-age=60"), ("x-version", "2")]), whole(""))
            } else {
                let f = fields(&[("etag", "\"v1\""), ("cache-control", "max-age=1"), ("x-version", "1")]);
                (200, f, whole(format!("body #{n}")))
            }
        }),
    )
    .await;
    let gw = gateway_with(up.addr, "{}", "").await;
    let u = format!("{}/doc", gw.url("main"));
    let first = get(&u).await;
    assert_eq!((first.cs(), first.h("x-version")), ("MISS", "1"));
    // The client's conditional request: 304 from the cache, nothing upstream.
    let c = req("GET", &u, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((c.status, c.cs(), c.h("etag")), (304, "HIT", "\"v1\""));
    assert_eq!(seen.count(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(&u).await;
    assert_eq!((r.status, r.cs(), r.body.as_str(), r.h("x-version")), (200, "REVALIDATED", "body #0", "2"));
    assert_eq!(seen.count(), 2);
    assert_eq!(seen.last().get("if-none-match").unwrap(), "\"v1\"");
    // The 304's fields and freshness were stored.
    let h = get(&u).await;
    assert_eq!((h.cs(), h.body.as_str(), h.h("x-version")), ("HIT", "body #0", "2"));
    assert_eq!(seen.count(), 2);
}

/// `stale-while-revalidate`: stale answers at once while one background request refreshes.
#[tokio::test]
async fn stale_while_revalidate_refreshes_once() {
    let (up, seen) = origin(
        Duration::from_millis(300),
        Arc::new(|_req, n| {
            (200, fields(&[("cache-control", "max-age=1, stale-while-revalidate=30")]), whole(format!("v{n}")))
        }),
    )
    .await;
    let gw = gateway_with(up.addr, "{}", "").await;
    let u = format!("{}/swr", gw.url("main"));
    assert_eq!(get(&u).await.body, "v0");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let t = Instant::now();
    let many = futures_util::future::join_all((0..5).map(|_| get(&u))).await;
    assert!(t.elapsed() < Duration::from_millis(290), "stale answers do not wait: {:?}", t.elapsed());
    for g in &many {
        assert_eq!((g.status, g.cs(), g.body.as_str()), (200, "STALE", "v0"));
    }
    // One background refresh.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let g = get(&u).await;
        if g.body == "v1" {
            assert_eq!(g.cs(), "HIT");
            break;
        }
        assert!(Instant::now() < deadline, "not refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.count(), 2);
}

/// `stale-if-error`: the stale response when the upstream answers 5xx or cannot be reached.
#[tokio::test]
async fn stale_if_error_on_5xx_and_unreachable() {
    let fail = Arc::new(AtomicUsize::new(0));
    let f2 = fail.clone();
    let (up, _seen) = origin(
        Duration::ZERO,
        Arc::new(move |_req, n| {
            if f2.load(Ordering::SeqCst) == 1 {
                return (503, vec![], whole("down"));
            }
            (200, fields(&[("cache-control", "max-age=1, stale-if-error=60")]), whole(format!("v{n}")))
        }),
    )
    .await;
    let addr = up.addr;
    let gw = gateway_with(addr, "{}", "").await;
    let u = format!("{}/sie", gw.url("main"));
    assert_eq!(get(&u).await.body, "v0");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    fail.store(1, Ordering::SeqCst);
    let g = get(&u).await;
    assert_eq!((g.status, g.cs(), g.body.as_str()), (200, "STALE", "v0"));
    up.stop();
    drop(up);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let g = get(&u).await;
    assert_eq!((g.status, g.cs(), g.body.as_str()), (200, "STALE", "v0"));
    // Without stale-if-error, an unreachable upstream is the gateway's error.
    let other = get(&format!("{}/other", gw.url("main"))).await;
    assert_eq!(other.status, 502, "{}", other.body);
}

/// 100 concurrent misses: one upstream request; the others stream the response as it
/// arrives (a waiter has its first chunk before the upstream has sent the rest); a wait is
/// bounded by `coalesce_wait`.
#[tokio::test]
async fn coalescing_one_upstream_request_for_100_misses() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let (up, seen) = origin(
        Duration::from_millis(200),
        Arc::new(move |req, _n| {
            if req.uri().path() == "/slow" {
                return (200, fields(&[("cache-control", "max-age=60")]), whole("slow"));
            }
            let rx = rx.lock().unwrap().take().expect("one request upstream");
            (200, fields(&[("cache-control", "max-age=60")]), Body::Chunks(rx))
        }),
    )
    .await;
    let gw = gateway_with(up.addr, "{}", "").await;
    let addr = gw.addr("main");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        tasks.push(tokio::spawn(async move {
            let mut c = Responses::connect(addr).await;
            c.send(b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n").await;
            c
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    tx.send(Bytes::from_static(b"first,")).unwrap();
    // A waiter (and every other) gets the head and the first chunk now.
    let mut c0 = conns.pop().unwrap();
    let mut head = String::new();
    loop {
        let l = c0.line().await;
        if l.is_empty() {
            break;
        }
        head.push_str(&String::from_utf8_lossy(&l).to_ascii_lowercase());
        head.push('\n');
    }
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(c0.line().await, b"6");
    assert_eq!(c0.take(6).await, b"first,");
    tx.send(Bytes::from_static(b"second")).unwrap();
    drop(tx);
    let mut hits = 0;
    for mut c in conns {
        let r = c.next(false).await;
        assert_eq!((r.status(), &r.body[..]), (200, &b"first,second"[..]), "{}", r.head);
        hits += usize::from(r.head.contains("x-cache-status: hit"));
    }
    assert!(hits >= 98, "coalesced: {hits}");
    assert_eq!(seen.count(), 1, "exactly one upstream request");
    let stored = req("GET", &format!("{}/c", gw.url("main")), &[("host", "a")]).await;
    assert_eq!((stored.cs(), stored.body.as_str()), ("HIT", "first,second"));

    // Bounded wait: a second request waits 100 ms for the first (whose upstream takes
    // 200 ms), then goes upstream itself.
    let bounded = gateway_with(up.addr, "{ coalesce_wait: 100ms }", "").await;
    let slow = format!("{}/slow", bounded.url("main"));
    let s2 = slow.clone();
    let first = tokio::spawn(async move { get(&s2).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = Instant::now();
    let second = get(&slow).await;
    assert!(t.elapsed() >= Duration::from_millis(250), "{:?}", t.elapsed());
    assert_eq!((second.status, second.cs()), (200, "MISS"));
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(seen.count(), 3);
}

/// A response larger than `max_object_size` streams through without being buffered (the
/// client reads its first chunk before the upstream sent the rest) and is not stored.
#[tokio::test]
async fn large_responses_stream_through_uncached() {
    let chans: Arc<Mutex<Vec<tokio::sync::mpsc::UnboundedReceiver<Bytes>>>> = Arc::default();
    let c2 = chans.clone();
    let (up, seen) = origin(
        Duration::ZERO,
        Arc::new(move |req, _n| {
            if req.uri().path() == "/sized" {
                return (200, fields(&[("cache-control", "max-age=60")]), whole(vec![b'x'; 4096]));
            }
            let rx = c2.lock().unwrap().remove(0);
            (200, fields(&[("cache-control", "max-age=60")]), Body::Chunks(rx))
        }),
    )
    .await;
    let gw = gateway_with(up.addr, "{ max_object_size: 1KiB }", "").await;
    // Known length over the limit: not stored.
    let a = get(&format!("{}/sized", gw.url("main"))).await;
    assert_eq!((a.cs(), a.body.len()), ("MISS", 4096));
    assert_eq!(get(&format!("{}/sized", gw.url("main"))).await.cs(), "MISS");
    // Unknown length, growing past the limit while it streams.
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        chans.lock().unwrap().push(rx);
        let mut c = Responses::connect(gw.addr("main")).await;
        c.send(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n").await;
        tx.send(Bytes::from(vec![b'a'; 800])).unwrap();
        loop {
            if c.line().await.is_empty() {
                break;
            }
        }
        assert_eq!(c.line().await, b"320");
        assert_eq!(c.take(800).await, vec![b'a'; 800]);
        assert_eq!(c.line().await, b"");
        tx.send(Bytes::from(vec![b'b'; 800])).unwrap();
        drop(tx);
        assert_eq!(c.line().await, b"320");
        assert_eq!(c.take(800).await, vec![b'b'; 800]);
    }
    assert_eq!(seen.count(), 4, "neither is stored");
}

/// A large response, arriving in chunks of several sizes: the miss streams it chunked, the
/// hits send it whole with its length (one stored chunk, written without a copy), byte for
/// byte, on a keep-alive connection and pipelined after a `HEAD`; an HTTP/1.0 client gets it
/// too.
#[tokio::test]
async fn large_response_stored_and_served_whole() {
    let sizes = [10_000usize, 1, 40_000, 150_000, 8_191];
    let mut body = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        body.extend((0..*n).map(|j| (j % 251) as u8 ^ (i as u8 * 37)));
    }
    let chunks: Vec<Bytes> = {
        let mut at = 0;
        sizes
            .iter()
            .map(|n| {
                at += n;
                Bytes::copy_from_slice(&body[at - n..at])
            })
            .collect()
    };
    let (up, seen) = instant(move |_req, _n| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        for c in &chunks {
            tx.send(c.clone()).unwrap();
        }
        (200, fields(&[("cache-control", "max-age=60")]), Body::Chunks(rx))
    })
    .await;
    let gw = gateway_with(up.addr, "{}", "").await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let miss = c.next(false).await;
    assert!(
        miss.head.contains("x-cache-status: miss") && miss.head.contains("transfer-encoding: chunked"),
        "{}",
        miss.head
    );
    assert!(miss.body == body, "the miss: {} bytes, {} sent upstream", miss.body.len(), body.len());
    c.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let hit = c.next(false).await;
    assert!(hit.head.contains("x-cache-status: hit"), "{}", hit.head);
    assert!(hit.head.contains(&format!("content-length: {}\n", body.len())), "{}", hit.head);
    assert!(hit.body == body, "the hit: {} bytes, {} stored", hit.body.len(), body.len());
    c.send(b"HEAD /big HTTP/1.1\r\nHost: a\r\n\r\nGET /big HTTP/1.1\r\nHost: a\r\n\r\nGET /big HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let head = c.next(true).await;
    assert!(head.head.contains("x-cache-status: hit"), "{}", head.head);
    for _ in 0..2 {
        let hit = c.next(false).await;
        assert!(hit.body == body, "a pipelined hit: {} bytes", hit.body.len());
    }
    let mut old = Responses::connect(gw.addr("main")).await;
    old.send(b"GET /big HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let r = old.next(false).await;
    assert!(r.head.contains("x-cache-status: hit") && r.body == body, "HTTP/1.0: {} bytes; {}", r.body.len(), r.head);
    assert_eq!(seen.count(), 1);
}

/// An unsafe method that succeeds invalidates its target and the same-origin `Location` and
/// `Content-Location` of its response.
#[tokio::test]
async fn unsafe_methods_invalidate() {
    let (up, seen) = origin(
        Duration::ZERO,
        Arc::new(|req, n| {
            let path = req.uri().path().to_string();
            if req.method() == http::Method::POST {
                let mut f = vec![];
                if path == "/make" {
                    f = fields(&[("location", "/b"), ("content-location", "http://a/c")]);
                }
                return (201, f, whole("made"));
            }
            (200, fields(&[("cache-control", "max-age=60")]), whole(format!("{path} #{n}")))
        }),
    )
    .await;
    let gw = gateway_with(up.addr, "{}", "").await;
    let u = |p: &str| format!("{}{p}", gw.url("main"));
    let host = [("host", "a")];
    for p in ["/a", "/b", "/c"] {
        req("GET", &u(p), &host).await;
        assert_eq!(req("GET", &u(p), &host).await.cs(), "HIT");
    }
    assert_eq!(req("POST", &u("/a"), &host).await.status, 201);
    assert_eq!(req("GET", &u("/a"), &host).await.cs(), "MISS");
    assert_eq!(req("POST", &u("/make"), &host).await.status, 201);
    assert_eq!(req("GET", &u("/b"), &host).await.cs(), "MISS");
    assert_eq!(req("GET", &u("/c"), &host).await.cs(), "MISS");
    assert_eq!(seen.count(), 3 + 1 + 1 + 1 + 2);
}

/// `PURGE` is refused as a method unless enabled; enabled, it purges the URL. RFC 9211
/// `Cache-Status` replaces the simple field when configured.
#[tokio::test]
async fn purge_method_and_cache_status_field() {
    let (up, seen) = origin(
        Duration::ZERO,
        Arc::new(|_req, n| (200, fields(&[("cache-control", "max-age=60")]), whole(format!("#{n}")))),
    )
    .await;
    let off = gateway_with(up.addr, "{}", "").await;
    let u = format!("{}/p", off.url("main"));
    get(&u).await;
    // Not enabled: PURGE is a method like any other, sent upstream; as an unsafe method that
    // succeeded it invalidates its target (RFC 9111 section 4.4).
    req("PURGE", &u, &[]).await;
    assert_eq!(seen.0.lock().unwrap()[1].0, "PURGE");
    assert_eq!(get(&u).await.cs(), "MISS");
    assert_eq!(seen.count(), 3);

    let on = gateway_with(up.addr, "{ purge_method: true, cache_status: rfc9211 }", "").await;
    let u = format!("{}/p", on.url("main"));
    let m = get(&u).await;
    assert!(m.h("cache-status").starts_with("gatehouse; fwd=uri-miss"), "{}", m.h("cache-status"));
    assert!(m.h("cache-status").contains("stored"), "{}", m.h("cache-status"));
    assert_eq!(m.cs(), "");
    let h = get(&u).await;
    assert!(h.h("cache-status").starts_with("gatehouse; hit; ttl="), "{}", h.h("cache-status"));
    let p = req("PURGE", &u, &[]).await;
    assert_eq!(p.status, 200, "{}", p.body);
    let after = get(&u).await;
    assert!(after.h("cache-status").contains("fwd=uri-miss"), "{}", after.h("cache-status"));
    assert_eq!(seen.count(), 5);
}

/// Prometheus counters by route and cache status, memory bytes; the access log's `cache`.
#[tokio::test]
async fn metrics_and_access_log() {
    let (up, _seen) =
        origin(Duration::ZERO, Arc::new(|_req, _n| (200, fields(&[("cache-control", "max-age=60")]), whole("hello"))))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ target: {} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: proxy-cache\n    route: r\n",
        log.display(),
        up.addr
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let u = format!("{}/m", gw.url("main"));
    for _ in 0..3 {
        get(&u).await;
    }
    let m = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("gatehouse_cache_requests_total{route=\"r\",status=\"MISS\"} 1"), "{m}");
    assert!(m.contains("gatehouse_cache_requests_total{route=\"r\",status=\"HIT\"} 2"), "{m}");
    let bytes: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_cache_memory_bytes{cache=\"proxy-cache@route:r\"} "))
        .unwrap_or_else(|| panic!("{m}"))
        .parse()
        .unwrap();
    assert!(bytes > 5, "{bytes}");
    assert!(m.contains("gatehouse_cache_evictions_total{cache=\"proxy-cache@route:r\"} 0"), "{m}");
    let caches: Vec<String> = crate::framing::log_lines(&log, 3)
        .await
        .iter()
        .map(|v| v["cache"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(caches, ["MISS", "HIT", "HIT"]);
}

fn redis_config(upstream: std::net::SocketAddr, redis_url: &str, prefix: &str, admin: bool) -> String {
    let admin = if admin {
        format!(
            "  admin:\n    listen: 127.0.0.1:0\n    tokens:\n      - {{ name: ops, token_hash: \"{}\" }}\n",
            crate::admin::sha(crate::admin::ADMIN_TOKEN)
        )
    } else {
        String::new()
    };
    format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\n{admin}listeners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{upstream}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: proxy-cache\n    route: r\n    config:\n      redis: {{ url: \"{redis_url}\", prefix: \"{prefix}\", timeout: 100ms, backoff: 200ms }}\n"
    )
}

/// How long a purge message takes to reach the other node, at most (a loaded machine).
/// How long a purge may take to reach the other node (Redis pub/sub; a loaded machine).
const PROPAGATION: Duration = Duration::from_secs(10);

/// The cache status of a GET of `url` once it is no longer a hit, or `HIT` after
/// [`PROPAGATION`]: a purge made on the other node reaches this one through Redis pub/sub, and
/// a hit while it travels changes nothing.
async fn once_purged(url: &str, fields: &[(&str, &str)]) -> String {
    let deadline = tokio::time::Instant::now() + PROPAGATION;
    loop {
        let cs = req("GET", url, fields).await.cs().to_string();
        if cs != "HIT" || tokio::time::Instant::now() >= deadline {
            return cs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The entries the shared Redis holds under `prefix`.
pub(crate) async fn redis_entries(prefix: &str) -> Vec<String> {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-p", "6379", "--scan", "--pattern", &format!("{prefix}:e:*")])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Wait (at most 15 s: the writes are made in the background, and a loaded machine has been seen to take over 5 s) until Redis holds at least `n` entries under `prefix`.
pub(crate) async fn in_redis(prefix: &str, n: usize) {
    let t0 = Instant::now();
    loop {
        if redis_entries(prefix).await.len() >= n {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "fewer than {n} entries written to redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn purge(admin: &str, body: serde_json::Value) -> serde_json::Value {
    let r = client()
        .post(format!("http://{admin}/cache/purge"))
        .bearer_auth(crate::admin::ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Two gateway processes with the Admin API sharing the real Redis under a prefix of their
/// own: the prefix, the folder of their configuration file (to keep while they run) and, for
/// each, the process, its proxy address and its Admin API address.
async fn two_redis_nodes(
    upstream: std::net::SocketAddr,
) -> (String, tempfile::TempDir, [(crate::binary::Proc, std::net::SocketAddr, String); 2]) {
    let prefix = format!("gh:cache:test:{}:{}", std::process::id(), fastrand::u64(..));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    crate::binary::write(&file, &redis_config(upstream, "redis://127.0.0.1:6379", &prefix, true));
    let f = file.to_str().unwrap();
    let (mut one, proxy_one) = crate::binary::Proc::start_args(&["--config", f], &[]).await;
    let (mut two, proxy_two) = crate::binary::Proc::start_args(&["--config", f], &[]).await;
    let admin_one = one.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    let admin_two = two.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    (prefix, dir, [(one, proxy_one, admin_one), (two, proxy_two, admin_two)])
}

/// Two gateway processes share the real Redis (a prefix of their own): a response stored by
/// one is a hit on the other; purges by URL, prefix, tag and all on one node's Admin API
/// reach the other node (its memory tier too, through Redis pub/sub).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_across_two_gateway_processes() {
    let (up, seen) = origin(
        Duration::ZERO,
        Arc::new(|req, n| {
            let f = fields(&[("cache-control", "max-age=300"), ("surrogate-key", "all-items item-1")]);
            (200, f, whole(format!("{} #{n}", req.uri().path())))
        }),
    )
    .await;
    let (prefix, _dir, [(one, proxy_one, admin_one), (two, proxy_two, admin_two)]) = two_redis_nodes(up.addr).await;
    let at = |p: std::net::SocketAddr, path: &str| format!("http://{p}{path}");
    let h = [("host", "shop.example")];

    // Stored by one, a hit on the other (from Redis).
    assert_eq!(req("GET", &at(proxy_one, "/x"), &h).await.cs(), "MISS");
    in_redis(&prefix, 1).await;
    let b = req("GET", &at(proxy_two, "/x"), &h).await;
    assert_eq!((b.cs(), b.body.as_str()), ("HIT", "/x #0"));
    assert_eq!(seen.count(), 1);

    // By URL, on node one: node two misses.
    let r = purge(&admin_one, serde_json::json!({ "url": "http://shop.example/x" })).await;
    assert_eq!(r["caches"][0]["delivered"], 2, "{r}");
    assert_eq!(once_purged(&at(proxy_two, "/x"), &h).await, "MISS");
    assert_eq!(seen.count(), 2);

    // By prefix, on node two: node one misses both.
    for p in ["/p/1", "/p/2"] {
        req("GET", &at(proxy_one, p), &h).await;
        assert_eq!(req("GET", &at(proxy_one, p), &h).await.cs(), "HIT");
    }
    // (Their Redis copies are written in the background: a purge must not overtake them, see
    // docs/caching.md, Limits.)
    in_redis(&prefix, 3).await;
    purge(&admin_two, serde_json::json!({ "prefix": "http://shop.example/p/" })).await;
    for p in ["/p/1", "/p/2"] {
        assert_eq!(once_purged(&at(proxy_one, p), &h).await, "MISS", "{p}");
    }
    // By tag (Surrogate-Key), on node one: node two misses.
    in_redis(&prefix, 3).await;
    assert_eq!(req("GET", &at(proxy_two, "/p/1"), &h).await.cs(), "HIT");
    purge(&admin_one, serde_json::json!({ "tag": "item-1" })).await;
    assert_eq!(once_purged(&at(proxy_two, "/p/1"), &h).await, "MISS");
    // All, on node two: node one misses (every response carried item-1: /x was purged too).
    assert_eq!(req("GET", &at(proxy_one, "/x"), &h).await.cs(), "MISS");
    assert_eq!(req("GET", &at(proxy_one, "/x"), &h).await.cs(), "HIT");
    in_redis(&prefix, 2).await;
    purge(&admin_two, serde_json::json!({ "all": true })).await;
    assert_eq!(once_purged(&at(proxy_one, "/x"), &h).await, "MISS");
    // Bad requests are refused with 400.
    let bad = client()
        .post(format!("http://{admin_one}/cache/purge"))
        .bearer_auth(crate::admin::ADMIN_TOKEN)
        .json(&serde_json::json!({ "url": "x", "all": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let list: serde_json::Value = client()
        .get(format!("http://{admin_one}/cache"))
        .bearer_auth(crate::admin::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["caches"][0]["cache"], "proxy-cache@route:r", "{list}");
    assert_eq!(list["caches"][0]["redis"], true, "{list}");
    drop((one, two));
}

/// Redis stopped while serving: the memory tier keeps answering, misses go upstream, nothing
/// fails (the Redis tier is bypassed, never an error). Our own redis-server, never the shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_while_serving() {
    let port = crate::admin::free_port();
    let mut redis = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server");
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(5), "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (up, seen) = origin(
        Duration::ZERO,
        Arc::new(|req, n| {
            (200, fields(&[("cache-control", "max-age=300")]), whole(format!("{} #{n}", req.uri().path())))
        }),
    )
    .await;
    let yaml = redis_config(up.addr, &format!("redis://127.0.0.1:{port}"), "gh:cache:down", false);
    let gw = TestGateway::start(&yaml, &[]).await;
    let u = |p: &str| format!("{}{p}", gw.url("main"));
    assert_eq!(get(&u("/a")).await.cs(), "MISS");
    // Written to Redis.
    let t0 = Instant::now();
    loop {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--scan", "--pattern", "gh:cache:down*"])
            .output()
            .await
            .unwrap();
        if !out.stdout.is_empty() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "nothing written to redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.kill().await.unwrap();
    let _ = redis.wait().await;
    for _ in 0..3 {
        let t = Instant::now();
        let a = get(&u("/a")).await;
        assert_eq!((a.status, a.cs(), a.body.as_str()), (200, "HIT", "/a #0"));
        let b = get(&u("/b")).await;
        assert_eq!(b.status, 200);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    // The first /b was a miss; the memory tier keeps it.
    assert_eq!(seen.count(), 2);
}

/// An origin that answers at once (see [`origin`]).
async fn instant(
    script: impl Fn(&Request<hyper::body::Incoming>, usize) -> Answer + Send + Sync + 'static,
) -> (Upstream, Seen) {
    origin(Duration::ZERO, Arc::new(script)).await
}

/// A gateway process (the binary) with the Admin API, one route `r` to `upstream` with
/// `proxy-cache` configured with `cache` (YAML flow mapping) and, before it, the plugins of
/// `plugins` (YAML list items); `top` adds top-level sections (consumers).
fn node_config(upstream: std::net::SocketAddr, cache: &str, plugins: &str, top: &str) -> String {
    format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\n  admin:\n    listen: 127.0.0.1:0\n    tokens:\n      - {{ name: ops, token_hash: \"{}\" }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{top}services:\n  - name: s\n    url: http://{upstream}\nroutes:\n  - name: r\n    service: s\nplugins:\n{plugins}  - plugin: proxy-cache\n    route: r\n    config: {cache}\n",
        crate::admin::sha(crate::admin::ADMIN_TOKEN)
    )
}

/// Start the binary on `yaml`: the process, its proxy address and its Admin API address.
async fn node(dir: &tempfile::TempDir, name: &str, yaml: &str) -> (crate::binary::Proc, std::net::SocketAddr, String) {
    let file = dir.path().join(name);
    crate::binary::write(&file, yaml);
    let (mut p, proxy) = crate::binary::Proc::start_args(&["--config", file.to_str().unwrap()], &[]).await;
    let admin = p.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    (p, proxy, admin)
}

/// The primary key (hex) of a GET of `http://<host><pq>` with the default key options: what
/// a purge by key names.
fn default_key(host: &str, pq: &str) -> String {
    let headers = HeaderMap::new();
    let r = gw_cache::CacheRequest {
        method: &http::Method::GET,
        scheme: "http",
        host,
        path_and_query: pq,
        headers: &headers,
        consumer: None,
    };
    gw_cache::key::primary_key(&gw_cache::KeyOptions::default(), &r).hex()
}

/// Purge by `key` through the Admin API removes exactly that key; `only-if-cached` is answered
/// from the cache when it can be, else with 504 and nothing sent upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_key_and_only_if_cached() {
    let (up, seen) =
        instant(|req, n| (200, fields(&[("cache-control", "max-age=300")]), whole(format!("{} #{n}", req.uri()))))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let (p, proxy, admin) = node(&dir, "gw.yaml", &node_config(up.addr, "{}", "", "")).await;
    let h = [("host", "shop.example")];
    let oic = [("host", "shop.example"), ("cache-control", "only-if-cached")];
    let u = |pq: &str| format!("http://{proxy}{pq}");

    // Nothing stored: 504, the upstream is not asked.
    let miss = req("GET", &u("/k?b=2&a=1"), &oic).await;
    assert_eq!((miss.status, miss.cs()), (504, "MISS"), "{}", miss.body);
    assert_eq!(seen.count(), 0);
    for pq in ["/k?b=2&a=1", "/other"] {
        assert_eq!(req("GET", &u(pq), &h).await.cs(), "MISS");
        assert_eq!(req("GET", &u(pq), &h).await.cs(), "HIT");
    }
    assert_eq!(seen.count(), 2);
    // Stored: only-if-cached is answered from the cache.
    let hit = req("GET", &u("/k?a=1&b=2"), &oic).await;
    assert_eq!((hit.status, hit.cs(), hit.body.as_str()), (200, "HIT", "/k?b=2&a=1 #0"));

    // A key that is not 32 hex digits: 400.
    let bad = client()
        .post(format!("http://{admin}/cache/purge"))
        .bearer_auth(crate::admin::ADMIN_TOKEN)
        .json(&serde_json::json!({ "key": "xyz" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // By key (the query sorted, as in the key): that response only.
    let key = default_key("shop.example", "/k?a=1&b=2");
    let r = purge(&admin, serde_json::json!({ "key": key })).await;
    assert_eq!(r["caches"][0]["cache"], "proxy-cache@route:r", "{r}");
    let gone = req("GET", &u("/k?b=2&a=1"), &oic).await;
    assert_eq!(gone.status, 504, "purged: {}", gone.body);
    assert_eq!(req("GET", &u("/other"), &h).await.cs(), "HIT", "another key stays");
    assert_eq!(req("GET", &u("/k?b=2&a=1"), &h).await.cs(), "MISS");
    assert_eq!(seen.count(), 3);
    drop(p);
}

/// `cache_status_key: true` adds RFC 9211's `key` parameter to `Cache-Status`: the primary key
/// in the form the Admin API's purge by key takes, so an operator can purge exactly what a
/// response came from. Off by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_status_key_names_what_a_purge_by_key_removes() {
    let (up, seen) =
        instant(|req, n| (200, fields(&[("cache-control", "max-age=300")]), whole(format!("{} #{n}", req.uri()))))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = "{ cache_status: rfc9211, cache_status_key: true }";
    let (p, proxy, admin) = node(&dir, "gw.yaml", &node_config(up.addr, cache, "", "")).await;
    let u = |pq: &str| format!("http://{proxy}{pq}");
    let h = [("host", "shop.example")];
    let key_of = |g: &Got| -> String {
        let cs = g.h("cache-status");
        let k = cs.split("; ").find_map(|p| p.strip_prefix("key=")).unwrap_or_else(|| panic!("no key: {cs}"));
        k.strip_prefix('"').and_then(|k| k.strip_suffix('"')).unwrap_or_else(|| panic!("not an sf-string: {cs}")).into()
    };
    let miss = req("GET", &u("/k?b=2&a=1"), &h).await;
    assert!(miss.h("cache-status").contains("fwd=uri-miss"), "{}", miss.h("cache-status"));
    let key = key_of(&miss);
    assert_eq!(key, default_key("shop.example", "/k?a=1&b=2"), "the primary key, as 32 hex digits");
    let hit = req("GET", &u("/k?a=1&b=2"), &h).await;
    assert!(hit.h("cache-status").starts_with("gatehouse; hit"), "{}", hit.h("cache-status"));
    assert_eq!(key_of(&hit), key, "the same key on a hit");
    req("GET", &u("/other"), &h).await;
    let other = req("GET", &u("/other"), &h).await;
    assert!(other.h("cache-status").contains("hit"), "{}", other.h("cache-status"));
    assert_ne!(key_of(&other), key);
    // The key taken from the response purges that response through the Admin API.
    let r = purge(&admin, serde_json::json!({ "key": key })).await;
    assert_eq!(r["caches"][0]["cache"], "proxy-cache@route:r", "{r}");
    let after = req("GET", &u("/k?b=2&a=1"), &h).await;
    assert!(after.h("cache-status").contains("fwd=uri-miss"), "purged: {}", after.h("cache-status"));
    assert!(req("GET", &u("/other"), &h).await.h("cache-status").contains("hit"), "another key stays");
    assert_eq!(seen.count(), 3);
    drop(p);

    // Off by default: no key.
    let (p, proxy, _admin) = node(&dir, "off.yaml", &node_config(up.addr, "{ cache_status: rfc9211 }", "", "")).await;
    let g = req("GET", &format!("http://{proxy}/k"), &h).await;
    assert!(!g.h("cache-status").contains("key="), "{}", g.h("cache-status"));
    drop(p);
}

/// Revalidation answered with a 304 for another representation (its `ETag` differs from the
/// stored one): the stored response is dropped and the request is sent again without
/// validators; the full response is served and stored.
#[tokio::test]
async fn refetch_after_a_304_for_another_representation() {
    let (up, seen) = instant(|req, n| {
        if req.headers().contains_key("if-none-match") {
            return (304, fields(&[("etag", "\"v2\""), ("cache-control", "max-age=60")]), whole(""));
        }
        if n == 0 {
            return (200, fields(&[("etag", "\"v1\""), ("cache-control", "max-age=1")]), whole("one"));
        }
        (200, fields(&[("etag", "\"v2\""), ("cache-control", "max-age=60")]), whole("two"))
    })
    .await;
    let gw = gateway_with(up.addr, "{}", "").await;
    let u = format!("{}/doc", gw.url("main"));
    assert_eq!(get(&u).await.body, "one");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(&u).await;
    assert_eq!((r.status, r.body.as_str(), r.h("etag")), (200, "two", "\"v2\""));
    assert_eq!(seen.count(), 3);
    let sent = seen.0.lock().unwrap().clone();
    assert_eq!(sent[1].2.get("if-none-match").unwrap(), "\"v1\"", "the revalidation");
    assert!(sent[2].2.get("if-none-match").is_none(), "the refetch has no validators");
    let again = get(&u).await;
    assert_eq!((again.cs(), again.body.as_str()), ("HIT", "two"));
    assert_eq!(seen.count(), 3);
}

const CONSUMERS: &str = "consumers:\n  - username: alice\n    credentials:\n      - { type: key-auth, id: alice-key, key: alice-secret-key }\n  - username: bob\n    credentials:\n      - { type: key-auth, id: bob-key, key: bob-secret-key-1 }\n";

/// The key options: `query_allow` (only these parameters count), `headers` (their values
/// count), `consumer` (each authenticated consumer has its own entries); `bypass` (neither
/// served from nor stored in the cache). Authentication runs first: an unauthenticated request
/// is refused, never served from the cache.
#[tokio::test]
async fn key_options_and_bypass() {
    let (up, seen) = instant(|req, n| {
        let h = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
        let body = format!("{} {} {} #{n}", req.uri(), h("x-tenant"), h("x-consumer-username"));
        (200, fields(&[("cache-control", "max-age=300")]), whole(body))
    })
    .await;
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{CONSUMERS}services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: key-auth\n    route: r\n  - plugin: proxy-cache\n    route: r\n    config: {{ key: {{ query_allow: [id], headers: [x-tenant], consumer: true }}, bypass: [{{ header: x-no-cache }}] }}\n",
        up.addr
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let u = |pq: &str| format!("{}{pq}", gw.url("main"));
    let alice = |t: &'static str| [("apikey", "alice-secret-key"), ("x-tenant", t)];
    let bob = [("apikey", "bob-secret-key-1"), ("x-tenant", "a")];

    let first = req("GET", &u("/k?id=1&utm=x"), &alice("a")).await;
    assert_eq!((first.cs(), first.body.as_str()), ("MISS", "/k?id=1&utm=x a alice #0"));
    // Other parameters than `id` do not count.
    let same = req("GET", &u("/k?utm=y&id=1"), &alice("a")).await;
    assert_eq!((same.cs(), same.body.as_str()), ("HIT", "/k?id=1&utm=x a alice #0"));
    // `id` counts; so does the tenant field; so does the consumer.
    assert_eq!(req("GET", &u("/k?id=2"), &alice("a")).await.cs(), "MISS");
    assert_eq!(req("GET", &u("/k?id=1"), &alice("b")).await.cs(), "MISS");
    let b = req("GET", &u("/k?id=1"), &bob).await;
    assert_eq!((b.cs(), b.body.as_str()), ("MISS", "/k?id=1 a bob #3"));
    assert_eq!(req("GET", &u("/k?id=1"), &bob).await.body, "/k?id=1 a bob #3");
    assert_eq!(seen.count(), 4);
    // Bypass: upstream, and the stored response is neither used nor replaced.
    let mut fb = alice("a").to_vec();
    fb.push(("x-no-cache", "1"));
    let by = req("GET", &u("/k?id=1"), &fb).await;
    assert_eq!((by.cs(), by.body.as_str()), ("BYPASS", "/k?id=1 a alice #4"));
    let after = req("GET", &u("/k?id=1"), &alice("a")).await;
    assert_eq!((after.cs(), after.body.as_str()), ("HIT", "/k?id=1&utm=x a alice #0"));
    // Unauthenticated: refused before the cache.
    assert_eq!(req("GET", &u("/k?id=1"), &[("x-tenant", "a")]).await.status, 401);
    assert_eq!(seen.count(), 5);
}

/// Heuristic freshness is off by default (a response with only `Last-Modified` is revalidated
/// on every request) and on when configured (fresh for a share of its age, up to `max`).
#[tokio::test]
async fn heuristic_freshness_off_by_default_on_when_configured() {
    let (up, seen) = instant(|_req, n| {
        let lm = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(36_000));
        (200, vec![("last-modified", lm)], whole(format!("#{n}")))
    })
    .await;
    let off = gateway_with(up.addr, "{}", "").await;
    let u = format!("{}/h", off.url("main"));
    assert_eq!(get(&u).await.cs(), "MISS");
    let again = get(&u).await;
    assert_eq!((again.cs(), again.body.as_str()), ("EXPIRED", "#1"));
    assert!(seen.last().contains_key("if-modified-since"), "revalidated with its Last-Modified");
    assert_eq!(seen.count(), 2);

    // 10 % of 10 hours: fresh for an hour.
    let on = gateway_with(up.addr, "{ heuristic: { percent: 10, max: 1d } }", "").await;
    let u = format!("{}/h", on.url("main"));
    assert_eq!(get(&u).await.cs(), "MISS");
    let hit = get(&u).await;
    assert_eq!((hit.cs(), hit.body.as_str()), ("HIT", "#2"));
    assert_eq!(seen.count(), 3);
    // Capped by `max`: one second, then stale.
    let capped = gateway_with(up.addr, "{ heuristic: { percent: 10, max: 1s } }", "").await;
    let u = format!("{}/h", capped.url("main"));
    assert_eq!(get(&u).await.cs(), "MISS");
    assert_eq!(get(&u).await.cs(), "HIT");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&u).await.cs(), "EXPIRED");
    assert_eq!(seen.count(), 5);
}

/// HTTP/2 clients (h2c, prior knowledge): a stored response, and a coalesced waiter that
/// streams the response another request is fetching, chunk by chunk as it arrives.
#[tokio::test]
async fn http2_clients_cached_and_streaming() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let (up, seen) = instant(move |req, n| {
        if req.uri().path() == "/stored" {
            return (200, fields(&[("cache-control", "max-age=60")]), whole(format!("stored #{n}")));
        }
        let rx = rx.lock().unwrap().take().expect("one request upstream");
        (200, fields(&[("cache-control", "max-age=60")]), Body::Chunks(rx))
    })
    .await;
    let gw = gateway_with(up.addr, "{}", "").await;
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let u = |p: &str| format!("{}{p}", gw.url("main"));
    for cs in ["MISS", "HIT"] {
        let r = h2.get(u("/stored")).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.headers()["x-cache-status"], cs);
        assert_eq!(r.text().await.unwrap(), "stored #0");
    }

    // The leader (HTTP/1.1) is upstream; the HTTP/2 client waits for it and streams.
    // (The same host as the HTTP/2 requests' authority: the same key.)
    let mut leader = Responses::connect(gw.addr("main")).await;
    leader.send(format!("GET /s HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr("main")).as_bytes()).await;
    let t0 = Instant::now();
    while seen.count() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5), "the leader never reached the upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(Bytes::from_static(b"first,")).unwrap();
    let mut w = h2.get(u("/s")).send().await.unwrap();
    assert_eq!(w.version(), reqwest::Version::HTTP_2);
    assert_eq!(w.headers()["x-cache-status"], "HIT", "a coalesced waiter");
    assert_eq!(&w.chunk().await.unwrap().unwrap()[..], b"first,", "before the upstream sent more");
    tx.send(Bytes::from_static(b"second")).unwrap();
    assert_eq!(&w.chunk().await.unwrap().unwrap()[..], b"second");
    drop(tx);
    // The end (an empty DATA frame with END_STREAM may carry it).
    let mut rest = Vec::new();
    while let Some(c) = w.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert!(rest.is_empty(), "{rest:?}");
    let l = leader.next(false).await;
    assert_eq!(&l.body[..], b"first,second");
    let r = h2.get(u("/s")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache-status"], "HIT");
    assert_eq!(r.text().await.unwrap(), "first,second");
    assert_eq!(seen.count(), 2);
}

/// `PURGE` runs after the route's access plugins: key-auth refuses an unauthenticated one and
/// nothing is purged; an authenticated one purges.
#[tokio::test]
async fn purge_method_restricted_by_key_auth() {
    let (up, seen) = instant(|_req, n| (200, fields(&[("cache-control", "max-age=60")]), whole(format!("#{n}")))).await;
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{CONSUMERS}services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: key-auth\n    route: r\n  - plugin: proxy-cache\n    route: r\n    config: {{ purge_method: true }}\n",
        up.addr
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let u = format!("{}/p", gw.url("main"));
    let key = [("apikey", "alice-secret-key")];
    assert_eq!(req("GET", &u, &key).await.cs(), "MISS");
    assert_eq!(req("GET", &u, &key).await.cs(), "HIT");
    for fields in [&[][..], &[("apikey", "wrong-key-wrong-key")][..]] {
        let p = req("PURGE", &u, fields).await;
        assert_eq!(p.status, 401, "{}", p.body);
    }
    let still = req("GET", &u, &key).await;
    assert_eq!((still.cs(), still.body.as_str()), ("HIT", "#0"), "nothing purged");
    let p = req("PURGE", &u, &key).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(req("GET", &u, &key).await.cs(), "MISS");
    assert_eq!(seen.count(), 2);
}

/// `PURGE` is restricted by ip-restriction like any request of the route: from an allowed
/// address it purges; from a denied one (the client bound to another loopback address) it gets
/// the plugin's 403 and nothing is purged.
#[tokio::test]
async fn purge_method_restricted_by_ip_restriction() {
    let (up, seen) = instant(|_req, n| (200, fields(&[("cache-control", "max-age=60")]), whole(format!("#{n}")))).await;
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: ip-restriction\n    route: r\n    config: {{ allow: [127.0.0.1/32], deny: [127.0.0.2/32] }}\n  - plugin: proxy-cache\n    route: r\n    config: {{ purge_method: true }}\n",
        up.addr
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let u = format!("{}/p", gw.url("main"));
    let from =
        |ip: [u8; 4]| reqwest::Client::builder().no_proxy().local_address(std::net::IpAddr::from(ip)).build().unwrap();
    let (allowed, denied) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    let send = |c: &reqwest::Client, m: &str| c.request(m.parse().unwrap(), &u).send();
    let cs = |r: &reqwest::Response| r.headers().get("x-cache-status").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(cs(&send(&allowed, "GET").await.unwrap()).as_deref(), Some("MISS"));
    assert_eq!(cs(&send(&allowed, "GET").await.unwrap()).as_deref(), Some("HIT"));
    let refused = send(&denied, "PURGE").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("your IP address is not allowed"));
    let still = send(&allowed, "GET").await.unwrap();
    assert_eq!(cs(&still).as_deref(), Some("HIT"), "nothing purged");
    assert_eq!(still.text().await.unwrap(), "#0");
    let p = send(&allowed, "PURGE").await.unwrap();
    assert_eq!(p.status(), 200);
    assert_eq!(cs(&send(&allowed, "GET").await.unwrap()).as_deref(), Some("MISS"));
    assert_eq!(seen.count(), 2, "PURGE never reaches the upstream");
}

/// The rest of a chunked body, from the next chunk-size line to the last chunk.
async fn chunked_rest(c: &mut Responses) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let size = c.line().await;
        let size = usize::from_str_radix(std::str::from_utf8(&size).unwrap(), 16).unwrap();
        if size == 0 {
            assert_eq!(c.line().await, b"", "no trailers");
            return body;
        }
        body.extend(c.take(size).await);
        assert_eq!(c.line().await, b"", "chunk data ends with CRLF");
    }
}

/// The leader's client leaves mid-body: the fill goes on without it; the requests that wait
/// for it get the whole response, and it is stored.
#[tokio::test]
async fn leader_client_leaving_does_not_stop_the_fill() {
    let chans: Chans = Arc::default();
    let c2 = chans.clone();
    let (up, seen) = instant(move |_req, _n| {
        let rx = c2.lock().unwrap().pop().expect("one request upstream per path");
        (200, fields(&[("cache-control", "max-age=60")]), Body::Chunks(rx))
    })
    .await;
    let gw = gateway_with(up.addr, "{}", "").await;
    let addr = gw.addr("main");
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    // The leader leaves by closing its HTTP/1.1 connection, then by resetting its HTTP/2
    // stream (dropping the response).
    for (n, over_h2) in [(1, false), (2, true)] {
        let path = format!("/d{n}");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        chans.lock().unwrap().push(rx);
        tx.send(Bytes::from_static(b"part0,")).unwrap();
        let leader: Box<dyn std::any::Any + Send> = if over_h2 {
            let mut r = h2.get(format!("http://{addr}{path}")).send().await.unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(&r.chunk().await.unwrap().unwrap()[..], b"part0,");
            Box::new(r)
        } else {
            let mut c = Responses::connect(addr).await;
            c.send(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
            while !c.line().await.is_empty() {}
            assert_eq!(c.line().await, b"6");
            assert_eq!(c.take(3).await, b"par", "the leader read a few bytes");
            Box::new(c)
        };
        // Waiters join while the body streams.
        let mut waiters = Vec::new();
        for _ in 0..3 {
            let mut c = Responses::connect(addr).await;
            c.send(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
            while !c.line().await.is_empty() {}
            assert_eq!(c.line().await, b"6");
            assert_eq!(c.take(8).await, b"part0,\r\n");
            waiters.push(c);
        }
        drop(leader);
        let mut expected = b"part0,".to_vec();
        for i in 1..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let chunk = format!("part{i},");
            expected.extend_from_slice(chunk.as_bytes());
            tx.send(Bytes::from(chunk)).unwrap();
        }
        drop(tx);
        for mut c in waiters {
            let mut body = b"part0,".to_vec();
            body.extend(chunked_rest(&mut c).await);
            assert_eq!(String::from_utf8_lossy(&body), String::from_utf8_lossy(&expected), "h2 leader: {over_h2}");
        }
        let later = get(&format!("http://{addr}{path}")).await;
        assert_eq!((later.cs(), later.body.as_bytes()), ("HIT", &expected[..]), "h2 leader: {over_h2}");
        assert_eq!(seen.count(), n);
    }
}

/// The bounds of background body reads come from `gateway.limits`: with the defaults, a body
/// whose client left is read to its end (1.2 s here) and stored; with
/// `detached_read_timeout: 300ms` it is dropped at that deadline, and with
/// `max_detached_reads: 0` at once: its fill is aborted, nothing is stored, the next request
/// misses.
#[tokio::test]
async fn detached_read_limits_are_configurable() {
    let chans: Chans = Arc::default();
    let c2 = chans.clone();
    let (up, seen) = instant(move |_req, _n| {
        let rx = c2.lock().unwrap().pop().expect("one request upstream per case");
        (200, fields(&[("cache-control", "max-age=60")]), Body::Chunks(rx))
    })
    .await;
    let cases = [
        ("", "HIT"),
        ("  limits: { detached_read_timeout: 300ms }\n", "MISS"),
        ("  limits: { max_detached_reads: 0 }\n", "MISS"),
    ];
    for (n, (limits, want)) in cases.into_iter().enumerate() {
        let gw = gateway_with(up.addr, "{}", limits).await;
        let addr = gw.addr("main");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        chans.lock().unwrap().push(rx);
        tx.send(Bytes::from_static(b"part0,")).unwrap();
        let mut c = Responses::connect(addr).await;
        // A path per case: gateways in one process share a cache of the same name and options.
        let path = format!("/d{n}");
        c.send(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await;
        while !c.line().await.is_empty() {}
        assert_eq!(c.line().await, b"6");
        drop(c);
        for i in 1..=12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(Bytes::from(format!("part{i},")));
        }
        drop(tx);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A request that misses gets an empty body (a closed channel).
        let before = seen.count();
        chans.lock().unwrap().push(tokio::sync::mpsc::unbounded_channel::<Bytes>().1);
        let later = get(&format!("http://{addr}{path}")).await;
        assert_eq!(later.cs(), want, "case {n}: limits {limits:?}");
        if want == "HIT" {
            assert!(later.body.ends_with("part12,"), "{}", later.body);
            assert_eq!(seen.count(), before);
        } else {
            assert_eq!(seen.count(), before + 1);
        }
    }
}

/// Without a Redis tier, two gateway processes sharing the real PostgreSQL store: a purge
/// sent to one node's Admin API reaches the other node's memory tier through the store's
/// notification channel (LISTEN/NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_reaches_other_nodes_through_the_postgres_store() {
    let (up, seen) = instant(|req, n| {
        let f = fields(&[("cache-control", "max-age=300"), ("surrogate-key", "items")]);
        (200, f, whole(format!("{} #{n}", req.uri().path())))
    })
    .await;
    let db = crate::admin::PgDb::create("cache").await;
    let (_dir, [(a, proxy_a, admin_a), (b, proxy_b, admin_b)]) =
        crate::admin::two_store_nodes(&db.url(), &node_config(up.addr, "{}", "", "")).await;
    let h = [("host", "shop.example")];
    let at = |p: std::net::SocketAddr, path: &str| format!("http://{p}{path}");
    // Each node fills its own memory tier.
    for p in [proxy_a, proxy_b] {
        for path in ["/x", "/y"] {
            assert_eq!(req("GET", &at(p, path), &h).await.cs(), "MISS");
            assert_eq!(req("GET", &at(p, path), &h).await.cs(), "HIT");
        }
    }
    assert_eq!(seen.count(), 4);
    // By URL on node A: node B misses.
    let r = purge(&admin_a, serde_json::json!({ "url": "http://shop.example/x" })).await;
    assert_eq!(r["caches"][0]["delivered"], serde_json::Value::Null, "{r}");
    assert_eq!(r["caches"][0]["relayed"], true, "{r}");
    assert_eq!(once_purged(&at(proxy_b, "/x"), &h).await, "MISS");
    assert_eq!(req("GET", &at(proxy_b, "/y"), &h).await.cs(), "HIT", "only that URL");
    // By tag on node B: node A misses both.
    purge(&admin_b, serde_json::json!({ "tag": "items" })).await;
    assert_eq!(once_purged(&at(proxy_a, "/y"), &h).await, "MISS");
    assert_eq!(req("GET", &at(proxy_a, "/x"), &h).await.cs(), "MISS");
    drop((a, b));
    db.drop_db().await;
}

/// A purge whose message is longer than PostgreSQL's 8,000-byte notification limit (400 URLs
/// in one Admin API request) still reaches the other node: it is stored in the database and
/// its id notified. The answer says what the relay did: `relayed: true` once PostgreSQL took
/// the notification; when it failed (the table of stored purges dropped), `relayed: false` and
/// the reason, and the other node keeps its copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_purges_reach_other_nodes_through_the_postgres_store() {
    let (up, seen) = instant(|req, n| {
        (200, fields(&[("cache-control", "max-age=300")]), whole(format!("{} #{n}", req.uri().path())))
    })
    .await;
    let db = crate::admin::PgDb::create("bigpurge").await;
    let (_dir, [(a, _proxy_a, admin_a), (b, proxy_b, _admin_b)]) =
        crate::admin::two_store_nodes(&db.url(), &node_config(up.addr, "{}", "", "")).await;
    let h = [("host", "shop.example")];
    let at = |path: &str| format!("http://{proxy_b}{path}");
    for path in ["/big/1", "/big/399", "/keep"] {
        assert_eq!(req("GET", &at(path), &h).await.cs(), "MISS");
        assert_eq!(req("GET", &at(path), &h).await.cs(), "HIT");
    }
    let urls: Vec<String> = (0..400).map(|i| format!("http://shop.example/big/{i}")).collect();
    let size: usize = urls.iter().map(|u| u.len() + 5).sum();
    assert!(size > 8000, "{size}");
    let r = purge(&admin_a, serde_json::json!({ "url": urls })).await;
    assert_eq!(r["caches"][0]["relayed"], true, "{r}");
    assert!(r["caches"][0].get("relay_error").is_none(), "{r}");
    assert_eq!(once_purged(&at("/big/1"), &h).await, "MISS");
    assert_eq!(req("GET", &at("/big/399"), &h).await.cs(), "MISS");
    assert_eq!(req("GET", &at("/keep"), &h).await.cs(), "HIT", "only those URLs");
    assert_eq!(seen.count(), 5);

    // The relay fails: the answer says so (and why); the other node keeps its copies.
    let (c, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute("DROP TABLE gatehouse_cache_purges").await.unwrap();
    let mut urls = urls;
    urls.push("http://shop.example/keep".into());
    let r = purge(&admin_a, serde_json::json!({ "url": urls })).await;
    assert_eq!(r["caches"][0]["relayed"], false, "{r}");
    assert!(r["caches"][0]["relay_error"].as_str().unwrap_or("").contains("gatehouse_cache_purges"), "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(req("GET", &at("/keep"), &h).await.cs(), "HIT", "not purged on the other node");
    // A short one still goes through.
    let r = purge(&admin_a, serde_json::json!({ "url": ["http://shop.example/keep"] })).await;
    assert_eq!(r["caches"][0]["relayed"], true, "{r}");
    assert_eq!(once_purged(&at("/keep"), &h).await, "MISS");
    drop((a, b));
    drop(c);
    db.drop_db().await;
}

/// A purge that lands while a response is still streaming from the upstream (after its fill
/// started, before it is stored) is not overtaken by the fill: the response is stored neither
/// in memory nor on Redis, so the next request misses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_during_a_fill_is_not_overtaken_by_it() {
    let chans: Chans = Arc::default();
    let c2 = chans.clone();
    let (up, seen) = instant(move |_req, _n| {
        let f = fields(&[("cache-control", "max-age=300"), ("surrogate-key", "t1")]);
        (200, f, Body::Chunks(c2.lock().unwrap().remove(0)))
    })
    .await;
    let prefix = format!("gh:cache:test:{}:{}", std::process::id(), fastrand::u64(..));
    let dir = tempfile::tempdir().unwrap();
    let cache = format!(
        "{{ redis: {{ url: \"redis://127.0.0.1:6379\", prefix: \"{prefix}\", timeout: 100ms, backoff: 200ms }} }}"
    );
    let (p, proxy, admin) = node(&dir, "gw.yaml", &node_config(up.addr, &cache, "", "")).await;
    let h = [("host", "shop.example")];
    let purges = [
        serde_json::json!({ "url": "http://shop.example/f" }),
        serde_json::json!({ "prefix": "http://shop.example/f" }),
        serde_json::json!({ "tag": "t1" }),
        serde_json::json!({ "key": default_key("shop.example", "/f") }),
        serde_json::json!({ "all": true }),
    ];
    for (i, body) in purges.iter().enumerate() {
        let left = purge_mid_fill(proxy, &chans, &admin, body.clone(), &prefix).await;
        assert!(left.is_empty(), "purge {body}: not written to redis: {left:?}");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        chans.lock().unwrap().push(rx);
        tx.send(Bytes::from_static(b"new")).unwrap();
        drop(tx);
        let after = req("GET", &format!("http://{proxy}/f"), &h).await;
        assert_eq!((after.cs(), after.body.as_str()), ("MISS", "new"), "purge {body}");
        assert_eq!(seen.count(), 3 * (i + 1), "the purged fill, the control fill, the miss");
        // Stored now: emptied for the next round.
        purge(&admin, serde_json::json!({ "all": true })).await;
    }
    drop(p);
}

/// Where an origin takes the body of each response from (one channel a request).
type Chans = Arc<Mutex<Vec<tokio::sync::mpsc::UnboundedReceiver<Bytes>>>>;

/// A GET of `/f` (host `shop.example`) to `proxy`, whose response (from the next channel of
/// `chans`) streams `old,` and, once `purge` was sent to the Admin API at `admin`, `rest`; when
/// the client has it all, a control GET of `/g` (the next channel: `ctl`), and once `/g` is on
/// Redis (its write went after `/f`'s, on the same connection): the entries Redis holds under
/// `prefix`, `/g`'s left out.
async fn purge_mid_fill(
    proxy: std::net::SocketAddr,
    chans: &Chans,
    admin: &str,
    purge_body: serde_json::Value,
    prefix: &str,
) -> Vec<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    chans.lock().unwrap().push(rx);
    let mut c = Responses::connect(proxy).await;
    c.send(b"GET /f HTTP/1.1\r\nHost: shop.example\r\n\r\n").await;
    tx.send(Bytes::from_static(b"old,")).unwrap();
    while !c.line().await.is_empty() {}
    assert_eq!(c.line().await, b"4");
    assert_eq!(c.take(6).await, b"old,\r\n");
    // The fill has started: the purge lands now, before the response ended.
    purge(admin, purge_body).await;
    tx.send(Bytes::from_static(b"rest")).unwrap();
    drop(tx);
    assert_eq!(chunked_rest(&mut c).await, b"rest");
    // The control fill starts after `/f`'s ended (and its Redis write was sent).
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    chans.lock().unwrap().push(rx);
    tx.send(Bytes::from_static(b"ctl")).unwrap();
    drop(tx);
    let g = req("GET", &format!("http://{proxy}/g"), &[("host", "shop.example")]).await;
    assert_eq!(g.body, "ctl");
    let control = format!("{prefix}:e:{}", default_key("shop.example", "/g"));
    let t0 = Instant::now();
    loop {
        let entries = redis_entries(prefix).await;
        if entries.contains(&control) {
            return entries.into_iter().filter(|e| *e != control).collect();
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the control fill was not written to Redis: {entries:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two gateway processes sharing the real Redis: a purge sent to node two while node one is
/// still receiving a response (its fill started before the purge) is not overtaken by node
/// one's store: neither Redis nor either node serves the purged response afterwards, whether
/// the purge message reached node one before its fill ended or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_on_one_node_during_a_fill_on_another() {
    let chans: Chans = Arc::default();
    let c2 = chans.clone();
    let (up, _seen) = instant(move |_req, _n| {
        let rx = c2.lock().unwrap().pop();
        match rx {
            Some(rx) => (200, fields(&[("cache-control", "max-age=300")]), Body::Chunks(rx)),
            None => (200, fields(&[("cache-control", "max-age=300")]), whole("new")),
        }
    })
    .await;
    let (prefix, _dir, [(one, proxy_one, _), (two, proxy_two, admin_two)]) = two_redis_nodes(up.addr).await;

    // Node one's fill starts; the purge goes to node two.
    let purge_url = serde_json::json!({ "url": "http://shop.example/f" });
    let left = purge_mid_fill(proxy_one, &chans, &admin_two, purge_url, &prefix).await;
    assert!(left.is_empty(), "not written to redis: {left:?}");
    let h = [("host", "shop.example")];
    for p in [proxy_two, proxy_one] {
        let g = req("GET", &format!("http://{p}/f"), &h).await;
        assert_eq!(g.body, "new", "{p}: {}", g.cs());
    }
    drop((one, two));
}
