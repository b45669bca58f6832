//! Conformance-style table tests: each case is a sequence of requests with the origin's
//! answers and what a correct RFC 9111 shared cache does (served from the cache or not,
//! validated or not, the status and fields the client sees). The behaviours follow those of
//! the public HTTP caching test suite (cache-tests); the cases and code are our own.

mod common;

use common::{Resp, World, hm, httpdate};
use gw_cache::policy::Heuristic;
use gw_cache::{CacheOptions, StatusHeader};
use http::Method;

/// Whether a step reached the origin and, if so, how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Up {
    /// Not contacted: served from the cache.
    Cached,
    /// Contacted without validators (a full fetch).
    Fetched,
    /// Contacted with `If-None-Match` or `If-Modified-Since` from the cache.
    Validated,
}

struct Step {
    advance: i64,
    method: Method,
    path: &'static str,
    req: Vec<(&'static str, String)>,
    origin: Option<Resp>,
    origin_down: bool,
    up: Up,
    status: u16,
    cache_status: Option<&'static str>,
    fields: Vec<(&'static str, Option<String>)>,
    body: Option<&'static str>,
}

fn step(up: Up) -> Step {
    Step {
        advance: 0,
        method: Method::GET,
        path: "/r",
        req: Vec::new(),
        origin: None,
        origin_down: false,
        up,
        status: 200,
        cache_status: None,
        fields: Vec::new(),
        body: None,
    }
}

impl Step {
    fn after(mut self, secs: i64) -> Self {
        self.advance = secs;
        self
    }
    fn req(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.req.push((k, v.into()));
        self
    }
    fn origin(mut self, r: Resp) -> Self {
        self.origin = Some(r);
        self
    }
    fn down(mut self) -> Self {
        self.origin_down = true;
        self
    }
    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }
    fn path(mut self, p: &'static str) -> Self {
        self.path = p;
        self
    }
    fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
    fn cs(mut self, s: &'static str) -> Self {
        self.cache_status = Some(s);
        self
    }
    fn field(mut self, k: &'static str, v: Option<&str>) -> Self {
        self.fields.push((k, v.map(str::to_string)));
        self
    }
    fn body(mut self, b: &'static str) -> Self {
        self.body = Some(b);
        self
    }
}

fn ok(headers: &[(&str, &str)], body: &str) -> Resp {
    Resp::new(200, headers, body)
}

async fn run_case(name: &str, opts: CacheOptions, steps: Vec<Step>) {
    let w = World::new(opts);
    for (i, s) in steps.into_iter().enumerate() {
        w.advance(s.advance);
        if let Some(r) = s.origin {
            w.origin.set(r);
        }
        *w.origin.down.lock().unwrap_or_else(|p| p.into_inner()) = s.origin_down;
        let before = w.origin.count();
        let req: Vec<(&str, &str)> = s.req.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = w.request(s.method.clone(), s.path, &req).await;
        let after = w.origin.count();
        let up = if after == before {
            Up::Cached
        } else {
            let h = w.origin.last_request().unwrap_or_default();
            let validated = w.origin.seen.lock().unwrap_or_else(|p| p.into_inner())[before..]
                .iter()
                .any(|(_, _, h)| h.contains_key("if-none-match") || h.contains_key("if-modified-since"));
            let _ = h;
            if validated { Up::Validated } else { Up::Fetched }
        };
        let ctx = format!("{name}, step {i}: {got:?}");
        assert_eq!(up, s.up, "{ctx}");
        assert_eq!(got.status, s.status, "{ctx}");
        if let Some(cs) = s.cache_status {
            assert_eq!(got.cache_status(), cs, "{ctx}");
        }
        for (k, v) in &s.fields {
            assert_eq!(got.header(k), v.as_deref(), "{ctx}: field {k}");
        }
        if let Some(b) = s.body {
            assert_eq!(got.body, b, "{ctx}");
        }
    }
}

fn d() -> CacheOptions {
    CacheOptions::default()
}

#[tokio::test]
async fn freshness() {
    use Up::*;
    let cases: Vec<(&str, Vec<Step>)> = vec![
        // freshness-max-age
        (
            "max-age fresh is reused",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100")], "a")).cs("MISS"),
                step(Cached).after(50).cs("HIT").body("a").field("age", Some("50")),
            ],
        ),
        (
            "max-age stale is not reused",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=2")], "a")),
                step(Fetched).after(3).cs("EXPIRED"),
            ],
        ),
        (
            "max-age=0 is not reused",
            vec![step(Fetched).origin(ok(&[("cache-control", "max-age=0")], "a")), step(Fetched)],
        ),
        // freshness-s-maxage-shared
        (
            "s-maxage beats max-age in a shared cache",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1, s-maxage=100")], "a")),
                step(Cached).after(10),
            ],
        ),
        (
            "s-maxage=0 beats a long max-age",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=3600, s-maxage=0")], "a")),
                step(Fetched).after(1),
            ],
        ),
        // freshness-expires-future / past / invalid
        (
            "Expires in the future",
            vec![
                step(Fetched).origin(ok(&[("expires", &httpdate(common::T0 + 100_000))], "a")),
                step(Cached).after(10),
            ],
        ),
        (
            "Expires in the past",
            vec![step(Fetched).origin(ok(&[("expires", &httpdate(common::T0 - 100_000))], "a")), step(Fetched)],
        ),
        ("Expires invalid (0) means expired", vec![step(Fetched).origin(ok(&[("expires", "0")], "a")), step(Fetched)]),
        (
            "max-age beats Expires",
            vec![
                step(Fetched)
                    .origin(ok(&[("cache-control", "max-age=1"), ("expires", &httpdate(common::T0 + 100_000))], "a")),
                step(Fetched).after(2),
            ],
        ),
        (
            "Expires relative to Date, not to the local clock",
            vec![
                step(Fetched).origin(ok(
                    &[("date", &httpdate(common::T0 - 50_000)), ("expires", &httpdate(common::T0 + 10_000))],
                    "a",
                )),
                // Lifetime 60 s; apparent age 50 s: fresh for 10 s more.
                step(Cached).after(5),
                step(Fetched).after(10),
            ],
        ),
        // freshness-max-age-age
        (
            "Age above max-age makes it stale at once",
            vec![step(Fetched).origin(ok(&[("cache-control", "max-age=3600"), ("age", "7200")], "a")), step(Fetched)],
        ),
        (
            "Age counts toward the lifetime",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100"), ("age", "90")], "a")),
                step(Cached).after(5).field("age", Some("95")),
                step(Fetched).after(10),
            ],
        ),
        (
            "Date in the past counts (apparent age)",
            vec![
                step(Fetched)
                    .origin(ok(&[("cache-control", "max-age=100"), ("date", &httpdate(common::T0 - 95_000))], "a")),
                step(Cached).after(1),
                step(Fetched).after(5),
            ],
        ),
        // cc-parse
        (
            "first of duplicated max-age wins",
            vec![step(Fetched).origin(ok(&[("cache-control", "max-age=1800, max-age=1")], "a")), step(Cached).after(5)],
        ),
        (
            "max-age in a quoted extension is ignored",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "extension=\"max-age=3600\", max-age=1")], "a")),
                step(Fetched).after(2),
            ],
        ),
        (
            "invalid max-age: stale",
            vec![step(Fetched).origin(ok(&[("cache-control", "max-age=3600a")], "a")), step(Fetched)],
        ),
        (
            "two Expires fields: the first counts",
            vec![
                step(Fetched).origin(ok(
                    &[("expires", &httpdate(common::T0 + 100_000)), ("expires", &httpdate(common::T0 - 100_000))],
                    "a",
                )),
                step(Cached).after(10),
            ],
        ),
        (
            "an invalid Date: the time received stands in",
            vec![
                step(Fetched).origin(ok(&[("date", "yesterday"), ("expires", &httpdate(common::T0 + 30_000))], "a")),
                step(Cached).after(20),
                step(Fetched).after(20),
            ],
        ),
        (
            "max-age with leading zeros",
            vec![step(Fetched).origin(ok(&[("cache-control", "max-age=003600")], "a")), step(Cached).after(60)],
        ),
    ];
    for (name, steps) in cases {
        run_case(name, d(), steps).await;
    }
}

#[tokio::test]
async fn response_directives() {
    use Up::*;
    let etag = || ok(&[("cache-control", "no-cache"), ("etag", "\"v1\"")], "a");
    let cases: Vec<(&str, CacheOptions, Vec<Step>)> = vec![
        (
            "no-store is not stored",
            d(),
            vec![step(Fetched).origin(ok(&[("cache-control", "no-store, max-age=100")], "a")), step(Fetched)],
        ),
        (
            "private is not stored by a shared cache",
            d(),
            vec![step(Fetched).origin(ok(&[("cache-control", "private, max-age=100")], "a")), step(Fetched)],
        ),
        (
            "qualified private stores without the field",
            d(),
            vec![
                step(Fetched)
                    .origin(ok(&[("cache-control", "private=\"x-user\", max-age=100"), ("x-user", "alice")], "a")),
                step(Cached).field("x-user", None),
            ],
        ),
        (
            "no-cache is validated every time",
            d(),
            vec![
                step(Fetched).origin(etag()),
                step(Validated).origin(Resp::new(304, &[("etag", "\"v1\"")], "")).cs("REVALIDATED").body("a"),
                step(Validated).cs("REVALIDATED"),
            ],
        ),
        (
            "no-cache=\"field\" is treated as no-cache",
            d(),
            vec![
                step(Fetched)
                    .origin(ok(&[("cache-control", "no-cache=\"set-cookie\", max-age=100"), ("etag", "\"v\"")], "a")),
                step(Validated).origin(Resp::new(304, &[], "")),
            ],
        ),
        (
            "must-revalidate: never served stale, even with max-stale",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1, must-revalidate"), ("etag", "\"v\"")], "a")),
                step(Validated).after(5).req("cache-control", "max-stale").origin(Resp::new(304, &[], "")),
            ],
        ),
        (
            "proxy-revalidate: same in a shared cache",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1, proxy-revalidate")], "a")),
                step(Fetched).after(5).req("cache-control", "max-stale"),
            ],
        ),
        (
            "Vary: * is never reused",
            d(),
            vec![step(Fetched).origin(ok(&[("cache-control", "max-age=100"), ("vary", "*")], "a")), step(Fetched)],
        ),
        (
            "Set-Cookie responses are not stored by default",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100"), ("set-cookie", "s=1")], "a")),
                step(Fetched),
            ],
        ),
        (
            "Set-Cookie responses are stored when enabled",
            CacheOptions { rules: gw_cache::policy::Rules { store_set_cookie: true, ..Default::default() }, ..d() },
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100"), ("set-cookie", "s=1")], "a")),
                step(Cached),
            ],
        ),
        (
            "hop-by-hop fields are not stored",
            d(),
            vec![
                step(Fetched).origin(ok(
                    &[("cache-control", "max-age=100"), ("connection", "x-hop"), ("x-hop", "1"), ("keep-alive", "5")],
                    "a",
                )),
                step(Cached).field("x-hop", None).field("keep-alive", None),
            ],
        ),
    ];
    for (name, o, steps) in cases {
        run_case(name, o, steps).await;
    }
}

#[tokio::test]
async fn request_directives() {
    use Up::*;
    let fresh = || ok(&[("cache-control", "max-age=100"), ("etag", "\"v\"")], "a");
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "request no-cache validates",
            vec![
                step(Fetched).origin(fresh()),
                step(Validated).req("cache-control", "no-cache").origin(Resp::new(304, &[], "")).cs("REVALIDATED"),
            ],
        ),
        (
            "Pragma: no-cache without Cache-Control validates",
            vec![
                step(Fetched).origin(fresh()),
                step(Validated).req("pragma", "no-cache").origin(Resp::new(304, &[], "")),
            ],
        ),
        (
            "request max-age=0 validates",
            vec![
                step(Fetched).origin(fresh()),
                step(Validated).after(1).req("cache-control", "max-age=0").origin(Resp::new(304, &[], "")),
            ],
        ),
        (
            "request max-age larger than the age is served",
            vec![step(Fetched).origin(fresh()), step(Cached).after(5).req("cache-control", "max-age=10")],
        ),
        (
            "request min-fresh",
            vec![
                step(Fetched).origin(fresh()),
                step(Cached).after(10).req("cache-control", "min-fresh=50"),
                step(Validated).req("cache-control", "min-fresh=95").origin(Resp::new(304, &[], "")),
            ],
        ),
        (
            "request max-stale without a value serves stale",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1")], "a")),
                step(Cached).after(50).req("cache-control", "max-stale").cs("STALE"),
            ],
        ),
        (
            "request max-stale with a value",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1")], "a")),
                step(Cached).after(5).req("cache-control", "max-stale=10").cs("STALE"),
                step(Fetched).after(20).req("cache-control", "max-stale=10"),
            ],
        ),
        (
            "only-if-cached with nothing stored: 504",
            vec![step(Cached).req("cache-control", "only-if-cached").status(504)],
        ),
        (
            "only-if-cached with a fresh response",
            vec![step(Fetched).origin(fresh()), step(Cached).req("cache-control", "only-if-cached")],
        ),
        (
            "only-if-cached with a stale response: 504",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1")], "a")),
                step(Cached).after(5).req("cache-control", "only-if-cached").status(504),
            ],
        ),
        (
            "request no-store: served from the cache, response not stored",
            vec![
                step(Fetched).req("cache-control", "no-store").origin(fresh()),
                step(Fetched),
                step(Cached).req("cache-control", "no-store"),
            ],
        ),
    ];
    for (name, steps) in cases {
        run_case(name, d(), steps).await;
    }
}

#[tokio::test]
async fn vary() {
    use Up::*;
    let v = |vary: &'static str| ok(&[("cache-control", "max-age=100"), ("vary", vary)], "a");
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "same value is reused",
            vec![
                step(Fetched).req("accept-language", "en").origin(v("Accept-Language")),
                step(Cached).req("accept-language", "en"),
            ],
        ),
        (
            "different value is not",
            vec![
                step(Fetched).req("accept-language", "en").origin(v("Accept-Language")),
                step(Fetched).req("accept-language", "fr"),
                // Both variants are kept.
                step(Cached).req("accept-language", "en"),
                step(Cached).req("accept-language", "fr"),
            ],
        ),
        (
            "absent is not present",
            vec![step(Fetched).origin(v("Accept-Language")), step(Fetched).req("accept-language", "en"), step(Cached)],
        ),
        (
            "field names are case-insensitive, whitespace is normalised",
            vec![
                step(Fetched).req("accept-language", "en,  fr").origin(v("ACCEPT-language")),
                step(Cached).req("Accept-Language", "en, fr"),
            ],
        ),
        (
            "two fields: both must match",
            vec![
                step(Fetched)
                    .req("accept-language", "en")
                    .req("accept-encoding", "gzip")
                    .origin(v("Accept-Language, Accept-Encoding")),
                step(Cached).req("accept-language", "en").req("accept-encoding", "gzip"),
                step(Fetched).req("accept-language", "en").req("accept-encoding", "br"),
            ],
        ),
        ("Vary on a field the request lacks, then the same", vec![step(Fetched).origin(v("X-Unknown")), step(Cached)]),
    ];
    for (name, steps) in cases {
        run_case(name, d(), steps).await;
    }
    let three = || ok(&[("cache-control", "max-age=100"), ("vary", "Foo, Bar, Baz")], "a");
    let extra: Vec<(&str, Vec<Step>)> = vec![
        (
            "three fields, both requests omit the same one",
            vec![
                step(Fetched).req("foo", "1").req("baz", "789").origin(three()),
                step(Cached).req("foo", "1").req("baz", "789"),
            ],
        ),
        (
            "three fields, one differs",
            vec![
                step(Fetched).req("foo", "1").req("bar", "abc4").req("baz", "789").origin(three()),
                step(Fetched).req("foo", "1").req("bar", "abc").req("baz", "789"),
            ],
        ),
        (
            "fields not named in Vary do not matter",
            vec![
                step(Fetched)
                    .req("foo", "1")
                    .req("other", "2")
                    .origin(ok(&[("cache-control", "max-age=100"), ("vary", "Foo")], "a")),
                step(Cached).req("foo", "1").req("other", "3"),
            ],
        ),
    ];
    for (name, steps) in extra {
        run_case(name, d(), steps).await;
    }
}

#[tokio::test]
async fn conditionals_and_304_updates() {
    use Up::*;
    let lm = httpdate(common::T0 - 3_600_000);
    let fresh = ok(&[("cache-control", "max-age=100"), ("etag", "\"v1\""), ("last-modified", &lm)], "body");
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "client If-None-Match answered 304 from the cache",
            vec![
                step(Fetched).origin(fresh.clone()),
                step(Cached)
                    .req("if-none-match", "\"v1\"")
                    .status(304)
                    .body("")
                    .field("etag", Some("\"v1\""))
                    .field("age", Some("0")),
                step(Cached).req("if-none-match", "W/\"v1\"").status(304),
                step(Cached).req("if-none-match", "\"other\"").status(200).body("body"),
            ],
        ),
        (
            "client If-Modified-Since answered from the cache",
            vec![
                step(Fetched).origin(fresh.clone()),
                step(Cached).req("if-modified-since", lm.clone()).status(304),
                step(Cached).req("if-modified-since", httpdate(common::T0 - 7_200_000)).status(200),
            ],
        ),
        (
            "the client's condition is not sent upstream on a miss",
            vec![step(Fetched).req("if-none-match", "\"v1\"").origin(fresh.clone()).status(200), step(Cached)],
        ),
        (
            "stale with ETag: validated with If-None-Match, 304 updates the stored fields",
            vec![
                step(Fetched)
                    .origin(ok(&[("cache-control", "max-age=1"), ("etag", "\"v1\""), ("x-version", "1")], "body")),
                step(Validated)
                    .after(5)
                    .origin(Resp::new(
                        304,
                        &[("etag", "\"v1\""), ("cache-control", "max-age=100"), ("x-version", "2")],
                        "",
                    ))
                    .cs("REVALIDATED")
                    .body("body")
                    .field("x-version", Some("2")),
                step(Cached).after(50).field("x-version", Some("2")).body("body"),
            ],
        ),
        (
            "stale with Last-Modified: validated with If-Modified-Since",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1"), ("last-modified", &lm)], "body")),
                step(Validated).after(5).origin(Resp::new(304, &[("cache-control", "max-age=100")], "")).body("body"),
                step(Cached).after(5),
            ],
        ),
        (
            "a 304 does not change Content-Length",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "body")),
                step(Validated)
                    .after(5)
                    .origin(Resp::new(304, &[("etag", "\"v1\""), ("content-length", "0")], ""))
                    .field("content-length", Some("4")),
            ],
        ),
        (
            "a 304 for another representation: fetched again without validators",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "old")),
                step(Validated).after(5).origin(Resp::new(304, &[("etag", "\"v9\"")], "")).body("").status(304),
            ],
        ),
        (
            "a full response to a validation replaces the stored one",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "old")),
                step(Validated)
                    .after(5)
                    .origin(ok(&[("cache-control", "max-age=100"), ("etag", "\"v2\"")], "new"))
                    .cs("EXPIRED")
                    .body("new"),
                step(Cached).body("new").cs("HIT"),
            ],
        ),
        (
            "a 304 updates Content-Type and other fields, for this and later responses",
            vec![
                step(Fetched).origin(ok(
                    &[
                        ("cache-control", "max-age=1"),
                        ("etag", "\"v1\""),
                        ("content-type", "text/plain"),
                        ("x-frame-options", "deny"),
                    ],
                    "body",
                )),
                step(Validated)
                    .after(5)
                    .origin(Resp::new(
                        304,
                        &[
                            ("etag", "\"v1\""),
                            ("cache-control", "max-age=100"),
                            ("content-type", "text/plain;charset=utf-8"),
                            ("x-frame-options", "sameorigin"),
                        ],
                        "",
                    ))
                    .field("content-type", Some("text/plain;charset=utf-8"))
                    .field("x-frame-options", Some("sameorigin")),
                step(Cached)
                    .field("content-type", Some("text/plain;charset=utf-8"))
                    .field("x-frame-options", Some("sameorigin")),
            ],
        ),
        (
            "a 304 keeps stored fields it omits",
            vec![
                step(Fetched).origin(ok(
                    &[("cache-control", "max-age=1"), ("last-modified", &lm), ("test-header", "A")],
                    "body",
                )),
                step(Validated)
                    .after(5)
                    .origin(Resp::new(304, &[("cache-control", "max-age=100"), ("last-modified", &lm)], ""))
                    .field("test-header", Some("A")),
            ],
        ),
        (
            "Set-Cookie of a 304 reaches that client only",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "body")),
                step(Validated)
                    .after(5)
                    .origin(Resp::new(304, &[("cache-control", "max-age=100"), ("set-cookie", "a=c")], ""))
                    .field("set-cookie", Some("a=c")),
                step(Cached).field("set-cookie", None),
            ],
        ),
        (
            "a 304 that says no-store drops the stored response",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "body")),
                step(Validated).after(5).origin(Resp::new(304, &[("cache-control", "no-store")], "")).body("body"),
                step(Fetched).origin(ok(&[("cache-control", "max-age=100")], "new")).body("new"),
            ],
        ),
        (
            "client condition on a revalidated response",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "body")),
                step(Validated)
                    .after(5)
                    .req("if-none-match", "\"v1\"")
                    .origin(Resp::new(304, &[("cache-control", "max-age=100")], ""))
                    .status(304),
            ],
        ),
    ];
    for (name, steps) in cases {
        run_case(name, d(), steps).await;
    }
}

#[tokio::test]
async fn a_304_for_another_representation_refetches() {
    // The driver retries after `Refetch`: the second request has no validators and stores.
    let w = World::new(d());
    w.origin.set(ok(&[("cache-control", "max-age=1"), ("etag", "\"v1\"")], "old"));
    assert_eq!(w.get("/r", &[]).await.body, "old");
    w.advance(5);
    *w.origin.responses.lock().unwrap_or_else(|p| p.into_inner()) = vec![
        Resp::new(304, &[("etag", "\"v9\"")], ""),
        ok(&[("cache-control", "max-age=100"), ("etag", "\"v9\"")], "new"),
    ];
    let got = w.get("/r", &[]).await;
    assert_eq!((got.status, got.body.as_str()), (200, "new"));
    let seen = w.origin.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(seen.len(), 3);
    assert!(seen[1].2.contains_key("if-none-match") && !seen[2].2.contains_key("if-none-match"));
    drop(seen);
    assert_eq!(w.get("/r", &[]).await.cache_status(), "HIT");
}

#[tokio::test]
async fn stale_content_rfc5861() {
    use Up::*;
    let with_defaults = CacheOptions {
        rules: gw_cache::policy::Rules {
            default_stale_while_revalidate: 30,
            default_stale_if_error: 60,
            ..Default::default()
        },
        ..d()
    };
    let cases: Vec<(&str, CacheOptions, Vec<Step>)> = vec![
        (
            "stale-while-revalidate serves stale and refreshes once",
            d(),
            vec![
                step(Fetched).origin(ok(
                    &[("cache-control", "max-age=1, stale-while-revalidate=60"), ("etag", "\"v1\"")],
                    "old",
                )),
                // Served stale; the driver runs the refresh at once (a validation).
                step(Validated).after(5).cs("STALE").body("old").origin(Resp::new(
                    304,
                    &[("etag", "\"v1\""), ("cache-control", "max-age=100, stale-while-revalidate=60")],
                    "",
                )),
                step(Cached).cs("HIT"),
            ],
        ),
        (
            "beyond stale-while-revalidate: validated first",
            d(),
            vec![
                step(Fetched)
                    .origin(ok(&[("cache-control", "max-age=1, stale-while-revalidate=5"), ("etag", "\"v1\"")], "old")),
                step(Validated).after(20).origin(Resp::new(304, &[], "")).cs("REVALIDATED"),
            ],
        ),
        (
            "stale-if-error: an upstream 503 serves stale",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1, stale-if-error=60")], "old")),
                step(Fetched).after(5).origin(Resp::new(503, &[], "down")).cs("STALE").body("old").status(200),
            ],
        ),
        (
            "stale-if-error: upstream unreachable serves stale",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1, stale-if-error=60")], "old")),
                step(Fetched).after(5).down().cs("STALE").body("old"),
            ],
        ),
        (
            "stale-if-error window over: the error goes through",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1, stale-if-error=10")], "old")),
                step(Fetched).after(60).origin(Resp::new(503, &[], "down")).status(503).body("down"),
            ],
        ),
        (
            "stale-if-error in the request",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1")], "old")),
                step(Fetched)
                    .after(5)
                    .req("cache-control", "stale-if-error=60")
                    .origin(Resp::new(500, &[], "x"))
                    .status(200)
                    .body("old"),
            ],
        ),
        (
            "must-revalidate beats stale-if-error",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1, stale-if-error=60, must-revalidate")], "old")),
                step(Fetched).after(5).origin(Resp::new(503, &[], "down")).status(503),
            ],
        ),
        (
            "404 is not an error for stale-if-error",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1, stale-if-error=60")], "old")),
                step(Fetched).after(5).origin(Resp::new(404, &[], "gone")).status(404),
            ],
        ),
        (
            "configured defaults: stale-while-revalidate",
            with_defaults.clone(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1")], "old")),
                step(Fetched).after(10).cs("STALE").body("old").origin(ok(&[("cache-control", "max-age=1")], "new")),
                step(Cached).body("new"),
            ],
        ),
        (
            "configured defaults: stale-if-error",
            with_defaults,
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=1")], "old")),
                step(Fetched).after(45).origin(Resp::new(502, &[], "x")).body("old").cs("STALE"),
            ],
        ),
    ];
    for (name, o, steps) in cases {
        run_case(name, o, steps).await;
    }
}

#[tokio::test]
async fn statuses_methods_heuristics_authorization() {
    use Up::*;
    let heuristic = CacheOptions {
        rules: gw_cache::policy::Rules {
            heuristic: Some(Heuristic { percent: 10, max: std::time::Duration::from_secs(86_400) }),
            ..Default::default()
        },
        ..d()
    };
    let lm = httpdate(common::T0 - 1_000_000);
    let cases: Vec<(&str, CacheOptions, Vec<Step>)> = vec![
        (
            "301 with max-age is stored",
            d(),
            vec![
                step(Fetched)
                    .origin(Resp::new(301, &[("cache-control", "max-age=100"), ("location", "/x")], ""))
                    .status(301),
                step(Cached).status(301).field("location", Some("/x")),
            ],
        ),
        (
            "404 with max-age is stored",
            d(),
            vec![
                step(Fetched).origin(Resp::new(404, &[("cache-control", "max-age=100")], "nf")).status(404),
                step(Cached).status(404).body("nf"),
            ],
        ),
        (
            "500 is not stored",
            d(),
            vec![
                step(Fetched).origin(Resp::new(500, &[("cache-control", "max-age=100")], "")).status(500),
                step(Fetched).status(500),
            ],
        ),
        (
            "206 is not stored",
            d(),
            vec![
                step(Fetched).origin(Resp::new(206, &[("cache-control", "max-age=100")], "")).status(206),
                step(Fetched).status(206),
            ],
        ),
        (
            "heuristic off: Last-Modified only means validate",
            d(),
            vec![
                step(Fetched).origin(ok(&[("last-modified", &lm)], "a")),
                step(Validated).origin(Resp::new(304, &[], "")),
            ],
        ),
        (
            "heuristic on: 10% of the Last-Modified age",
            heuristic.clone(),
            vec![
                step(Fetched).origin(ok(&[("last-modified", &lm)], "a")),
                step(Cached).after(90),
                step(Validated).after(20).origin(Resp::new(304, &[], "")),
            ],
        ),
        (
            "heuristic for 501",
            heuristic.clone(),
            vec![
                step(Fetched).origin(Resp::new(501, &[("last-modified", &lm)], "")).status(501),
                step(Cached).after(50).status(501),
            ],
        ),
        (
            "heuristic not for 302",
            heuristic,
            vec![
                step(Fetched).origin(Resp::new(302, &[("last-modified", &lm), ("location", "/y")], "")).status(302),
                step(Fetched).status(302),
            ],
        ),
        (
            "HEAD is answered from a stored GET",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100")], "hello")),
                step(Cached).method(Method::HEAD).body("").field("content-length", Some("5")),
            ],
        ),
        (
            "HEAD miss goes upstream and stores nothing",
            d(),
            vec![
                step(Fetched).method(Method::HEAD).origin(ok(&[("cache-control", "max-age=100")], "hello")).body(""),
                step(Fetched),
            ],
        ),
        (
            "POST is not cached",
            d(),
            vec![
                step(Fetched).method(Method::POST).origin(ok(&[("cache-control", "max-age=100")], "a")).cs("BYPASS"),
                step(Fetched).method(Method::POST),
            ],
        ),
        (
            "Authorization: not stored without public/s-maxage/must-revalidate",
            d(),
            vec![
                step(Fetched).req("authorization", "Bearer x").origin(ok(&[("cache-control", "max-age=100")], "a")),
                step(Fetched).req("authorization", "Bearer x"),
            ],
        ),
        (
            "Authorization with public is shared",
            d(),
            vec![
                step(Fetched)
                    .req("authorization", "Bearer x")
                    .origin(ok(&[("cache-control", "public, max-age=100")], "a")),
                step(Cached).req("authorization", "Bearer y"),
                step(Cached),
            ],
        ),
        (
            "a stored response without public is not given to a request with Authorization",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100")], "a")),
                step(Fetched).req("authorization", "Bearer x").cs("BYPASS"),
                step(Cached),
            ],
        ),
        (
            "Range on a hit gets the whole response",
            d(),
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100")], "hello")),
                step(Cached).req("range", "bytes=0-1").status(200).body("hello"),
            ],
        ),
        (
            "query parameters are sorted in the default key",
            d(),
            vec![
                step(Fetched).path("/q?b=2&a=1").origin(ok(&[("cache-control", "max-age=100")], "a")),
                step(Cached).path("/q?a=1&b=2"),
                step(Fetched).path("/q?a=1&b=3"),
            ],
        ),
        (
            "bypass rule",
            CacheOptions {
                bypass: vec![gw_cache::BypassRule { header: http::HeaderName::from_static("x-no-cache"), value: None }],
                ..d()
            },
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100")], "a")),
                step(Fetched).req("x-no-cache", "1").cs("BYPASS"),
                step(Cached),
            ],
        ),
    ];
    for (name, o, steps) in cases {
        run_case(name, o, steps).await;
    }
}

#[tokio::test]
async fn invalidation_after_unsafe_methods() {
    use Up::*;
    let fresh = || ok(&[("cache-control", "max-age=100")], "a");
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "POST 200 invalidates the URI",
            vec![
                step(Fetched).origin(fresh()),
                step(Fetched).method(Method::POST).origin(ok(&[], "posted")),
                step(Fetched).origin(fresh()),
            ],
        ),
        (
            "PUT 204 and DELETE 200 invalidate",
            vec![
                step(Fetched).origin(fresh()),
                step(Fetched).method(Method::PUT).origin(Resp::new(204, &[], "")).status(204),
                step(Fetched).origin(fresh()),
                step(Fetched).method(Method::DELETE).origin(ok(&[], "")),
                step(Fetched).origin(fresh()),
            ],
        ),
        (
            "POST 500 invalidates nothing",
            vec![
                step(Fetched).origin(fresh()),
                step(Fetched).method(Method::POST).origin(Resp::new(500, &[], "")).status(500),
                step(Cached),
            ],
        ),
        (
            "Location and Content-Location of the same origin are invalidated",
            vec![
                step(Fetched).path("/other").origin(fresh()),
                step(Fetched).path("/third").origin(fresh()),
                step(Fetched)
                    .method(Method::POST)
                    .path("/r")
                    .origin(Resp::new(
                        201,
                        &[("location", "/other"), ("content-location", "http://example.com/third")],
                        "",
                    ))
                    .status(201),
                step(Fetched).path("/other").origin(fresh()),
                step(Fetched).path("/third").origin(fresh()),
            ],
        ),
        (
            "a Location of another origin is not",
            vec![
                step(Fetched).path("/other").origin(fresh()),
                step(Fetched)
                    .method(Method::POST)
                    .path("/r")
                    .origin(Resp::new(201, &[("location", "http://elsewhere.example/other")], ""))
                    .status(201),
                step(Cached).path("/other"),
            ],
        ),
    ];
    for (name, steps) in cases {
        run_case(name, d(), steps).await;
    }
}

#[tokio::test]
async fn age_header_and_cache_status_rfc9211() {
    let o = CacheOptions { status_header: Some(StatusHeader { rfc9211: true, ..StatusHeader::default() }), ..d() };
    let w = World::new(o);
    w.origin.set(ok(&[("cache-control", "max-age=100")], "a"));
    let first = w.get("/r", &[]).await;
    assert_eq!(first.header("cache-status"), Some("gatehouse; fwd=uri-miss; fwd-status=200; stored"));
    w.advance(30);
    let hit = w.get("/r", &[]).await;
    assert_eq!(hit.header("cache-status"), Some("gatehouse; hit; ttl=70"));
    assert_eq!(hit.header("age"), Some("30"));
    let miss = w.get("/r", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(miss.status, 200, "fresh: served");
    let _ = hm(&[]);
}

#[tokio::test]
async fn purges_in_memory() {
    let w = World::new(d());
    w.origin
        .set(ok(&[("cache-control", "max-age=100"), ("surrogate-key", "user-1 all-users"), ("cache-tag", "t-a")], "a"));
    for p in ["/u/1", "/u/2?x=1", "/v/1"] {
        assert_eq!(w.get(p, &[]).await.cache_status(), "MISS");
        assert_eq!(w.get(p, &[]).await.cache_status(), "HIT");
    }
    w.cache.purge_url("http://example.com/u/2?x=1").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.get("/u/2?x=1", &[]).await.cache_status(), "MISS");
    assert_eq!(w.get("/u/1", &[]).await.cache_status(), "HIT");
    w.cache.purge_prefix("http://EXAMPLE.com:80/u/").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.get("/u/1", &[]).await.cache_status(), "MISS");
    assert_eq!(w.get("/v/1", &[]).await.cache_status(), "HIT");
    w.cache.purge(gw_cache::Purge::Tag("t-a".into())).await;
    assert_eq!(w.get("/v/1", &[]).await.cache_status(), "MISS");
    let key = w.cache.key(&gw_cache::CacheRequest {
        method: &Method::GET,
        scheme: "http",
        host: "example.com",
        path_and_query: "/v/1",
        headers: &hm(&[]),
        consumer: None,
    });
    w.cache.purge_key(&key.hex()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.get("/v/1", &[]).await.cache_status(), "MISS");
    w.cache.purge(gw_cache::Purge::All).await;
    assert_eq!(w.get("/u/1", &[]).await.cache_status(), "MISS");
    assert!(w.cache.purge_url("ftp://x/y").await.is_err());
    assert!(w.cache.purge_url("/relative").await.is_err());
    assert!(w.cache.purge_key("xyz").await.is_err());
}
