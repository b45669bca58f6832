//! Coalescing: concurrent misses for one key send one request upstream; the others wait
//! (bounded) and receive the response as it streams.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::hm;
use gw_cache::{Aborted, Cache, CacheOptions, CacheRequest, Fill, Lookup, Upstream, WaitOutcome};
use gw_core::SystemClock;
use http::{HeaderMap, Method, StatusCode};

fn cache(opts: CacheOptions) -> Cache {
    Cache::new(opts, Arc::new(SystemClock)).unwrap_or_else(|e| panic!("{e}"))
}

async fn lookup(c: &Cache, path: &str, h: &HeaderMap) -> Lookup {
    let req = CacheRequest {
        method: &Method::GET,
        scheme: "http",
        host: "h",
        path_and_query: path,
        headers: h,
        consumer: None,
    };
    c.lookup(&req).await
}

async fn read_all(outcome: WaitOutcome) -> Result<String, String> {
    match outcome {
        WaitOutcome::Stream { body: Some(mut b), status, .. } => {
            assert_eq!(status, StatusCode::OK);
            let mut s = String::new();
            while let Some(c) = b.next().await {
                s.push_str(&String::from_utf8_lossy(&c.map_err(|e: Aborted| e.to_string())?));
            }
            Ok(s)
        }
        WaitOutcome::Stream { body: None, .. } => Ok(String::new()),
        WaitOutcome::GoUpstream { .. } => Err("go upstream".into()),
    }
}

fn storing(u: &Upstream) -> bool {
    matches!(u, Upstream::Forward { storing: true, .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_misses_make_one_upstream_request() {
    let c = cache(CacheOptions::default());
    let upstream = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let (misses, waits, hits) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (c, upstream, barrier) = (c.clone(), upstream.clone(), barrier.clone());
        let (misses, waits, hits) = (misses.clone(), waits.clone(), hits.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            match lookup(&c, "/hot", &HeaderMap::new()).await {
                Lookup::Miss(mut f) => {
                    misses.fetch_add(1, Ordering::SeqCst);
                    upstream.fetch_add(1, Ordering::SeqCst);
                    // The upstream takes a while: everyone else arrives meanwhile.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    assert!(storing(&f.head(StatusCode::OK, &hm(&[("cache-control", "max-age=60")]))));
                    for part in ["one,", "two,", "three"] {
                        f.data(&Bytes::from_static(part.as_bytes()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let _ = f.finish();
                    "one,two,three".to_string()
                }
                Lookup::Wait(w) => {
                    waits.fetch_add(1, Ordering::SeqCst);
                    match read_all(w.wait().await).await {
                        Ok(s) => s,
                        Err(e) => {
                            upstream.fetch_add(1, Ordering::SeqCst);
                            e
                        }
                    }
                }
                Lookup::Hit(h) => {
                    hits.fetch_add(1, Ordering::SeqCst);
                    h.body.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
                }
                other => panic!("unexpected {other:?}"),
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap_or_else(|e| panic!("{e}")), "one,two,three");
    }
    assert_eq!(upstream.load(Ordering::SeqCst), 1, "exactly one upstream request");
    assert_eq!(misses.load(Ordering::SeqCst), 1);
    assert_eq!(waits.load(Ordering::SeqCst) + hits.load(Ordering::SeqCst), 99);
    assert!(waits.load(Ordering::SeqCst) > 90, "they waited: {}", waits.load(Ordering::SeqCst));
    assert!(matches!(lookup(&c, "/hot", &HeaderMap::new()).await, Lookup::Hit(_)));
    assert_eq!(c.stats().in_flight, 0);
}

async fn lead(c: &Cache, path: &str, h: &HeaderMap) -> Fill {
    match lookup(c, path, h).await {
        Lookup::Miss(f) => f,
        other => panic!("expected a miss, got {other:?}"),
    }
}

async fn wait(c: &Cache, path: &str, h: &HeaderMap) -> gw_cache::Waiter {
    match lookup(c, path, h).await {
        Lookup::Wait(w) => w,
        other => panic!("expected to wait, got {other:?}"),
    }
}

#[tokio::test]
async fn waiters_receive_chunks_before_the_body_is_complete() {
    let c = cache(CacheOptions::default());
    let mut f = lead(&c, "/s", &HeaderMap::new()).await;
    assert!(!f.has_waiters());
    let w = wait(&c, "/s", &HeaderMap::new()).await;
    assert!(f.has_waiters());
    f.head(StatusCode::OK, &hm(&[("cache-control", "max-age=60")]));
    f.data(&Bytes::from_static(b"first"));
    let WaitOutcome::Stream { body: Some(mut body), headers, .. } = w.wait().await else { panic!("stream expected") };
    assert_eq!(headers.get("x-cache-status").and_then(|v| v.to_str().ok()), Some("HIT"));
    // The first chunk is there while the upstream body is still open.
    let first = tokio::time::timeout(Duration::from_secs(2), body.next()).await;
    assert_eq!(first.ok().flatten(), Some(Ok(Bytes::from_static(b"first"))));
    let pending = tokio::time::timeout(Duration::from_millis(50), body.next()).await;
    assert!(pending.is_err(), "nothing more until the upstream sends it");
    f.data(&Bytes::from_static(b"second"));
    assert_eq!(body.next().await, Some(Ok(Bytes::from_static(b"second"))));
    let _ = f.finish();
    assert_eq!(body.next().await, None);
}

#[tokio::test]
async fn the_wait_is_bounded() {
    let c = cache(CacheOptions { coalesce_wait: Duration::from_millis(100), ..CacheOptions::default() });
    let _f = lead(&c, "/slow", &HeaderMap::new()).await;
    let w = wait(&c, "/slow", &HeaderMap::new()).await;
    let t = Instant::now();
    assert!(matches!(w.wait().await, WaitOutcome::GoUpstream { .. }));
    let e = t.elapsed();
    assert!(e >= Duration::from_millis(90) && e < Duration::from_secs(2), "{e:?}");
}

#[tokio::test]
async fn an_aborted_leader_reaches_waiters() {
    let c = cache(CacheOptions::default());
    // Before the head: waiters go upstream.
    let f = lead(&c, "/a", &HeaderMap::new()).await;
    let w = wait(&c, "/a", &HeaderMap::new()).await;
    drop(f);
    assert!(matches!(w.wait().await, WaitOutcome::GoUpstream { .. }));
    // During the body: waiters see the abort, nothing is stored.
    let mut f = lead(&c, "/a", &HeaderMap::new()).await;
    let w = wait(&c, "/a", &HeaderMap::new()).await;
    f.head(StatusCode::OK, &hm(&[("cache-control", "max-age=60")]));
    f.data(&Bytes::from_static(b"partial"));
    let WaitOutcome::Stream { body: Some(mut body), .. } = w.wait().await else { panic!("stream") };
    assert_eq!(body.next().await, Some(Ok(Bytes::from_static(b"partial"))));
    f.abort();
    assert_eq!(body.next().await, Some(Err(Aborted)));
    // A waiter that had not started yet goes upstream itself.
    let f = lead(&c, "/a", &HeaderMap::new()).await;
    let w = wait(&c, "/a", &HeaderMap::new()).await;
    drop(f);
    assert_eq!(read_all(w.wait().await).await, Err("go upstream".into()));
    assert!(matches!(lookup(&c, "/a", &HeaderMap::new()).await, Lookup::Miss(_)));
}

#[tokio::test]
async fn responses_that_cannot_be_shared_send_waiters_upstream() {
    let c = cache(CacheOptions::default());
    for resp in [
        hm(&[("cache-control", "private, max-age=60")]),
        hm(&[("cache-control", "no-store")]),
        hm(&[("cache-control", "max-age=60"), ("set-cookie", "s=1")]),
    ] {
        let mut f = lead(&c, "/p", &HeaderMap::new()).await;
        let w = wait(&c, "/p", &HeaderMap::new()).await;
        assert!(!storing(&f.head(StatusCode::OK, &resp)));
        assert!(matches!(w.wait().await, WaitOutcome::GoUpstream { .. }), "{resp:?}");
        let _ = f.finish();
    }
    // A Vary mismatch: the waiter asked for another variant.
    let en = hm(&[("accept-language", "en")]);
    let fr = hm(&[("accept-language", "fr")]);
    let mut f = lead(&c, "/v", &en).await;
    let w_fr = wait(&c, "/v", &fr).await;
    let w_en = wait(&c, "/v", &en).await;
    f.head(StatusCode::OK, &hm(&[("cache-control", "max-age=60"), ("vary", "accept-language")]));
    f.data(&Bytes::from_static(b"hello"));
    let _ = f.finish();
    assert!(matches!(w_fr.wait().await, WaitOutcome::GoUpstream { .. }));
    assert_eq!(read_all(w_en.wait().await).await, Ok("hello".into()));
}

#[tokio::test]
async fn responses_above_max_object_size_stream_through_uncached() {
    let c = cache(CacheOptions { max_object_size: 10, ..CacheOptions::default() });
    // Announced too large: not recorded, waiters go upstream at once.
    let mut f = lead(&c, "/big", &HeaderMap::new()).await;
    let w = wait(&c, "/big", &HeaderMap::new()).await;
    assert!(!storing(&f.head(StatusCode::OK, &hm(&[("cache-control", "max-age=60"), ("content-length", "100")]))));
    assert!(matches!(w.wait().await, WaitOutcome::GoUpstream { .. }));
    f.data(&Bytes::from(vec![b'x'; 100]));
    let _ = f.finish();
    assert!(matches!(lookup(&c, "/big", &HeaderMap::new()).await, Lookup::Miss(_)));
    assert_eq!(c.stats().bytes, 0);
    // Unknown length that turns out too large: recording stops; a waiter already streaming
    // gets the whole body; nothing is stored; new requests do not join.
    let mut f = lead(&c, "/big2", &HeaderMap::new()).await;
    let w = wait(&c, "/big2", &HeaderMap::new()).await;
    assert!(storing(&f.head(StatusCode::OK, &hm(&[("cache-control", "max-age=60")]))));
    let WaitOutcome::Stream { body: Some(mut body), .. } = w.wait().await else { panic!("stream") };
    f.data(&Bytes::from_static(b"123456"));
    f.data(&Bytes::from_static(b"789012"));
    assert!(matches!(lookup(&c, "/big2", &HeaderMap::new()).await, Lookup::Miss(_)), "no longer in flight");
    f.data(&Bytes::from_static(b"345"));
    let _ = f.finish();
    let mut got = Vec::new();
    while let Some(c) = body.next().await {
        got.extend_from_slice(&c.unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(got, b"123456789012345");
    assert!(matches!(lookup(&c, "/big2", &HeaderMap::new()).await, Lookup::Miss(_)));
    assert_eq!(c.stats().bytes, 0);
}

#[tokio::test]
async fn coalescing_off_lets_every_miss_go_upstream() {
    let c = cache(CacheOptions { coalesce: false, ..CacheOptions::default() });
    let _a = lead(&c, "/x", &HeaderMap::new()).await;
    let _b = lead(&c, "/x", &HeaderMap::new()).await;
}

#[tokio::test]
async fn stale_while_revalidate_refreshes_once() {
    let clock = Arc::new(gw_core::OffsetClock::starting_at(common::T0));
    let c = Cache::new(CacheOptions::default(), clock.clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut f = lead(&c, "/swr", &HeaderMap::new()).await;
    f.head(StatusCode::OK, &hm(&[("cache-control", "max-age=1, stale-while-revalidate=60"), ("etag", "\"a\"")]));
    f.data(&Bytes::from_static(b"v1"));
    let _ = f.finish();
    clock.advance(5_000);
    let Lookup::Stale { refresh: Some(refresh), hit } = lookup(&c, "/swr", &HeaderMap::new()).await else {
        panic!("refresh")
    };
    assert_eq!(hit.cache_status, gw_cache::CacheStatus::Stale);
    for _ in 0..5 {
        let Lookup::Stale { refresh: None, .. } = lookup(&c, "/swr", &HeaderMap::new()).await else {
            panic!("only one refresh")
        };
    }
    // A HEAD in the window is served stale and never starts a refresh (no body to store).
    let none = HeaderMap::new();
    let head = CacheRequest {
        method: &Method::HEAD,
        scheme: "http",
        host: "h",
        path_and_query: "/swr",
        headers: &none,
        consumer: None,
    };
    let Lookup::Stale { refresh: None, hit } = c.lookup(&head).await else { panic!("stale without refresh") };
    assert!(hit.body.is_empty());
    let mut req = HeaderMap::new();
    refresh.prepare_request(&mut req);
    assert_eq!(req.get("if-none-match").and_then(|v| v.to_str().ok()), Some("\"a\""));
    let mut refresh = refresh;
    assert!(matches!(
        refresh.head(StatusCode::NOT_MODIFIED, &hm(&[("cache-control", "max-age=100")])),
        Upstream::Replace(_)
    ));
    assert!(matches!(lookup(&c, "/swr", &HeaderMap::new()).await, Lookup::Hit(_)));
}
