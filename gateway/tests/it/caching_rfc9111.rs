//! RFC 9111 rules of `proxy-cache` over real sockets, table-driven: each case is a sequence of
//! requests (reqwest) to an in-test gateway, with what the origin (a real server on loopback)
//! answers and what a correct shared cache does: served from the cache, fetched in full, or
//! validated, and the status, cache status and body the client sees. The cases follow those of
//! `crates/gw-cache/tests/conformance.rs` (which drives the cache in process with a fake clock);
//! here time is made to pass with the origin's `Age` and `Date` fields instead of sleeps.
//!
//! Also: `stale-if-error` when the upstream times out, the `methods` and `statuses` options,
//! the configured `stale_if_error` / `stale_while_revalidate` defaults, memory eviction seen on
//! the Prometheus endpoint, and the Redis tier's `max_object_size`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, Response};

use crate::caching::{Got, in_redis, redis_entries, req};
use crate::support::*;

/// What the origin answers on one path: status, fields, body, after a delay.
#[derive(Clone)]
struct Ans {
    status: u16,
    fields: Vec<(String, String)>,
    body: String,
    delay: Duration,
}

fn ans(status: u16, fields: &[(&str, &str)], body: &str) -> Ans {
    Ans {
        status,
        fields: fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: body.into(),
        delay: Duration::ZERO,
    }
}

fn ok(fields: &[(&str, &str)], body: &str) -> Ans {
    ans(200, fields, body)
}

fn not_modified(fields: &[(&str, &str)]) -> Ans {
    ans(304, fields, "")
}

/// An origin whose answer is set per path by the test; it records each path's requests.
#[derive(Clone, Default)]
struct Origin {
    answers: Arc<Mutex<HashMap<String, Ans>>>,
    seen: Arc<Mutex<HashMap<String, Vec<HeaderMap>>>>,
}

impl Origin {
    async fn start(&self) -> Upstream {
        let me = self.clone();
        Upstream::start(Behavior::Custom(Arc::new(move |req| {
            let path = req.uri().path().to_string();
            me.seen.lock().unwrap().entry(path.clone()).or_default().push(req.headers().clone());
            let a = me.answers.lock().unwrap().get(&path).cloned().unwrap_or_else(|| ans(418, &[], "no answer set"));
            Box::pin(async move {
                if !a.delay.is_zero() {
                    tokio::time::sleep(a.delay).await;
                }
                let mut r = Response::new(gw_test_util::full(a.body));
                *r.status_mut() = http::StatusCode::from_u16(a.status).unwrap();
                for (k, v) in &a.fields {
                    r.headers_mut().append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
                }
                r
            })
        })))
        .await
    }

    fn set(&self, path: &str, a: Ans) {
        self.answers.lock().unwrap().insert(path.to_string(), a);
    }

    fn seen(&self, path: &str) -> Vec<HeaderMap> {
        self.seen.lock().unwrap().get(path).cloned().unwrap_or_default()
    }
}

/// A gateway with one route `r` to `upstream` (read timeout 1 s, no retries: one upstream
/// request per client request) and `proxy-cache` configured with `cache` (YAML flow mapping).
async fn gateway(upstream: std::net::SocketAddr, cache: &str) -> TestGateway {
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{upstream}\n    timeouts: {{ read: 1s }}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: proxy-cache\n    route: r\n    config: {cache}\n"
    );
    TestGateway::start(&yaml, &[]).await
}

/// Whether a step reached the origin and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Up {
    /// Not contacted: answered from the cache.
    Cached,
    /// Contacted without validators.
    Fetched,
    /// Contacted with `If-None-Match` / `If-Modified-Since` from the cache.
    Validated,
}

struct Step {
    up: Up,
    method: &'static str,
    req: Vec<(&'static str, String)>,
    origin: Option<Ans>,
    status: u16,
    cs: Option<&'static str>,
    body: Option<&'static str>,
    field: Vec<(&'static str, Option<&'static str>)>,
    min_age: Option<u64>,
}

fn step(up: Up) -> Step {
    Step {
        up,
        method: "GET",
        req: vec![],
        origin: None,
        status: 200,
        cs: None,
        body: None,
        field: vec![],
        min_age: None,
    }
}

impl Step {
    fn req(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.req.push((k, v.into()));
        self
    }
    fn auth(self) -> Self {
        self.req("authorization", "Bearer one")
    }
    fn origin(mut self, a: Ans) -> Self {
        self.origin = Some(a);
        self
    }
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
    fn cs(mut self, s: &'static str) -> Self {
        self.cs = Some(s);
        self
    }
    fn body(mut self, b: &'static str) -> Self {
        self.body = Some(b);
        self
    }
    fn field(mut self, k: &'static str, v: Option<&'static str>) -> Self {
        self.field.push((k, v));
        self
    }
    /// The `Age` sent is at least `n` seconds (and at most `n + 3`).
    fn age(mut self, n: u64) -> Self {
        self.min_age = Some(n);
        self
    }
}

type Case = (&'static str, Vec<Step>);

/// Run every case at once, each on a path of its own (`/<prefix><n>`); fail with the names of
/// the cases that failed (each one's message is printed as it fails).
async fn run(gw: &TestGateway, origin: &Origin, prefix: &str, cases: Vec<Case>) {
    use futures_util::FutureExt;
    let base = gw.url("main");
    let runs = cases.into_iter().enumerate().map(|(n, (name, steps))| {
        let path = format!("/{prefix}{n}");
        let url = format!("{base}{path}");
        std::panic::AssertUnwindSafe(async move {
            for (i, s) in steps.into_iter().enumerate() {
                if let Some(a) = s.origin {
                    origin.set(&path, a);
                }
                let before = origin.seen(&path).len();
                let fields: Vec<(&str, &str)> = s.req.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let t0 = Instant::now();
                let g: Got = req(s.method, &url, &fields).await;
                let took = t0.elapsed();
                let seen = origin.seen(&path);
                let at = format!("{name}, step {i}: {} {:?} {}, took {took:?}", g.status, g.cs(), g.body);
                let validators = |h: &HeaderMap| h.contains_key("if-none-match") || h.contains_key("if-modified-since");
                match s.up {
                    Up::Cached => assert_eq!(seen.len(), before, "{at}: the origin was contacted"),
                    Up::Fetched => {
                        assert_eq!(seen.len(), before + 1, "{at}: the origin was not contacted once");
                        assert!(!validators(&seen[before]), "{at}: validated, not fetched: {:?}", seen[before]);
                    }
                    Up::Validated => {
                        assert_eq!(seen.len(), before + 1, "{at}: the origin was not contacted once");
                        assert!(validators(&seen[before]), "{at}: fetched, not validated: {:?}", seen[before]);
                    }
                }
                assert_eq!(g.status, s.status, "{at}");
                if let Some(cs) = s.cs {
                    assert_eq!(g.cs(), cs, "{at}");
                }
                if let Some(b) = s.body {
                    assert_eq!(g.body, b, "{at}");
                }
                for (k, v) in &s.field {
                    assert_eq!(g.headers.get(*k).map(|v| v.to_str().unwrap()), *v, "{at}: field {k}");
                }
                if let Some(n) = s.min_age {
                    let age: u64 = g.h("age").parse().unwrap_or_else(|_| panic!("{at}: age {:?}", g.h("age")));
                    assert!((n..=n + 3).contains(&age), "{at}: age {age}, expected {n}");
                }
            }
        })
        .catch_unwind()
        .map(move |r| r.err().map(|_| name))
    });
    let failed: Vec<&str> = futures_util::future::join_all(runs).await.into_iter().flatten().collect();
    assert!(failed.is_empty(), "{} failed: {failed:#?}", failed.len());
}

/// An HTTP date `secs` from now (negative: in the past).
fn date(secs: i64) -> String {
    let now = SystemTime::now();
    let t =
        if secs >= 0 { now + Duration::from_secs(secs as u64) } else { now - Duration::from_secs(secs.unsigned_abs()) };
    httpdate::fmt_http_date(t)
}

/// Freshness from `s-maxage`, `Expires`/`Date` and `Age`; response `no-cache`,
/// `must-revalidate`, `proxy-revalidate`; `Authorization`; request `max-age`, `min-fresh`,
/// `max-stale`; stored and not stored statuses; `Vary` normalisation; `stale-if-error` on a
/// 5xx and on an upstream timeout. Stale responses are made with the origin's `Age` (a
/// response with `max-age=10` and `Age: 50` is 40 s stale when it arrives).
#[tokio::test]
async fn rfc9111_behaviours_over_sockets() {
    use Up::*;
    let o = Origin::default();
    let up = o.start().await;
    let gw = gateway(up.addr, "{}").await;
    let etag = ("etag", "\"v1\"");
    let stale = |extra: &str| ok(&[("cache-control", &format!("max-age=10{extra}")), ("age", "50")], "a");
    let (past50, past200, past5, ahead) = (date(-50), date(-200), date(-5), date(3600));
    let soon = date(10);
    let vary = |v: &str| ok(&[("cache-control", "max-age=100"), ("vary", v)], "a");
    let cases: Vec<Case> = vec![
        // Freshness.
        (
            "s-maxage over max-age (stale by max-age, fresh by s-maxage)",
            vec![
                step(Fetched)
                    .origin(ok(&[("cache-control", "max-age=10, s-maxage=100"), ("age", "50")], "a"))
                    .cs("MISS"),
                step(Cached).cs("HIT").body("a").age(50),
            ],
        ),
        (
            "s-maxage=0 over a long max-age",
            vec![step(Fetched).origin(ok(&[("cache-control", "max-age=3600, s-maxage=0")], "a")), step(Fetched)],
        ),
        (
            "Expires in the future of Date: lifetime Expires - Date, apparent age from Date",
            vec![
                step(Fetched).origin(ok(&[("date", &past50), ("expires", &soon)], "a")),
                step(Cached).cs("HIT").age(50),
            ],
        ),
        (
            "Expires - Date shorter than the apparent age: stale",
            vec![step(Fetched).origin(ok(&[("date", &past50), ("expires", &past5)], "a")), step(Fetched)],
        ),
        (
            "Expires relative to Date, not to the local clock (origin clock an hour ahead)",
            vec![step(Fetched).origin(ok(&[("date", &ahead), ("expires", &ahead)], "a")), step(Fetched)],
        ),
        ("an invalid Expires means expired", vec![step(Fetched).origin(ok(&[("expires", "0")], "a")), step(Fetched)]),
        (
            "max-age over Expires",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=0"), ("expires", &date(3600))], "a")),
                step(Fetched),
            ],
        ),
        (
            "upstream Age counts toward the lifetime",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100"), ("age", "90")], "a")),
                step(Cached).cs("HIT").age(90),
            ],
        ),
        (
            "upstream Age equal to max-age: stale at once",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100"), ("age", "100")], "a")),
                step(Fetched).cs("EXPIRED"),
            ],
        ),
        (
            "a Date in the past (apparent age) beyond max-age: stale",
            vec![step(Fetched).origin(ok(&[("cache-control", "max-age=100"), ("date", &past200)], "a")), step(Fetched)],
        ),
        // Response directives.
        (
            "response no-cache: validated on every request",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "no-cache, max-age=100"), etag], "a")),
                step(Validated).origin(not_modified(&[etag])).cs("REVALIDATED").body("a"),
                step(Validated).cs("REVALIDATED").body("a"),
            ],
        ),
        (
            "must-revalidate: validated even with max-stale",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=10, must-revalidate"), ("age", "50"), etag], "a")),
                step(Validated).req("cache-control", "max-stale").origin(not_modified(&[etag])).cs("REVALIDATED"),
            ],
        ),
        (
            "proxy-revalidate: not served stale with max-stale",
            vec![
                step(Fetched).origin(stale(", proxy-revalidate")),
                step(Fetched).req("cache-control", "max-stale=3600"),
            ],
        ),
        (
            "without them, max-stale serves it stale",
            vec![
                step(Fetched).origin(stale("")),
                step(Cached).req("cache-control", "max-stale=3600").cs("STALE").body("a"),
            ],
        ),
        (
            "must-revalidate over stale-if-error: the 503 goes through",
            vec![
                step(Fetched).origin(stale(", must-revalidate, stale-if-error=3600")),
                step(Fetched).origin(ans(503, &[], "down")).status(503).body("down"),
            ],
        ),
        (
            "proxy-revalidate over the request's stale-if-error",
            vec![
                step(Fetched).origin(stale(", proxy-revalidate")),
                step(Fetched).req("cache-control", "stale-if-error=3600").origin(ans(503, &[], "down")).status(503),
            ],
        ),
        (
            "stale-if-error serves stale on a 503",
            vec![
                step(Fetched).origin(stale(", stale-if-error=3600")),
                step(Fetched).origin(ans(503, &[], "down")).cs("STALE").body("a"),
            ],
        ),
        (
            "the request's stale-if-error serves stale on a 500",
            vec![
                step(Fetched).origin(stale("")),
                step(Fetched)
                    .req("cache-control", "stale-if-error=3600")
                    .origin(ans(500, &[], "x"))
                    .cs("STALE")
                    .body("a"),
            ],
        ),
        (
            "stale-if-error window over: the 503 goes through",
            vec![
                step(Fetched).origin(stale(", stale-if-error=5")),
                step(Fetched).origin(ans(503, &[], "down")).status(503),
            ],
        ),
        (
            "stale-if-error on an upstream timeout (origin slower than the read timeout)",
            vec![
                step(Fetched).origin(stale(", stale-if-error=3600")),
                step(Fetched).origin(Ans { delay: Duration::from_secs(3), ..ok(&[], "late") }).cs("STALE").body("a"),
            ],
        ),
        (
            "an upstream timeout without stale-if-error: 504",
            vec![
                step(Fetched).origin(stale("")),
                step(Fetched).origin(Ans { delay: Duration::from_secs(3), ..ok(&[], "late") }).status(504),
            ],
        ),
        (
            "no stale-while-revalidate by default: a stale response is fetched before answering",
            vec![
                step(Fetched).origin(stale("")),
                step(Fetched).origin(ok(&[("cache-control", "max-age=100")], "b")).cs("EXPIRED").body("b"),
                step(Cached).cs("HIT").body("b"),
            ],
        ),
        // Authorization (RFC 9111 section 3.5).
        (
            "Authorization: not stored without public / s-maxage / must-revalidate",
            vec![
                step(Fetched).auth().origin(ok(&[("cache-control", "max-age=100")], "a")),
                step(Fetched).auth(),
                step(Fetched),
            ],
        ),
        (
            "Authorization with public: stored and served",
            vec![
                step(Fetched).auth().origin(ok(&[("cache-control", "public, max-age=100")], "a")),
                step(Cached).req("authorization", "Bearer two").cs("HIT").body("a"),
                step(Cached).cs("HIT"),
            ],
        ),
        (
            "Authorization with s-maxage: stored and served",
            vec![
                step(Fetched).auth().origin(ok(&[("cache-control", "s-maxage=100")], "a")),
                step(Cached).auth().cs("HIT"),
                step(Cached),
            ],
        ),
        (
            "Authorization with must-revalidate: stored and served while fresh",
            vec![
                step(Fetched).auth().origin(ok(&[("cache-control", "must-revalidate, max-age=100")], "a")),
                step(Cached).auth().cs("HIT"),
                step(Cached),
            ],
        ),
        (
            "a response stored without public is not given to a request with Authorization",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100")], "a")),
                step(Fetched).auth().origin(ok(&[("cache-control", "max-age=100")], "b")).cs("BYPASS").body("b"),
                step(Cached).body("a"),
            ],
        ),
        // Request directives.
        (
            "request max-age",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100"), ("age", "30")], "a")),
                step(Cached).req("cache-control", "max-age=60").cs("HIT"),
                step(Fetched).req("cache-control", "max-age=10").cs("EXPIRED"),
            ],
        ),
        (
            "request min-fresh",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100"), ("age", "30")], "a")),
                step(Cached).req("cache-control", "min-fresh=50").cs("HIT"),
                step(Fetched).req("cache-control", "min-fresh=90").cs("EXPIRED"),
            ],
        ),
        (
            "request max-stale, with and without a value",
            vec![
                step(Fetched).origin(stale("")),
                step(Cached).req("cache-control", "max-stale=60").cs("STALE").body("a"),
                step(Fetched).req("cache-control", "max-stale=5").cs("EXPIRED"),
                step(Cached).req("cache-control", "max-stale").cs("STALE"),
                step(Fetched).cs("EXPIRED"),
            ],
        ),
        // Statuses.
        (
            "301 with max-age is stored",
            vec![
                step(Fetched).origin(ans(301, &[("cache-control", "max-age=100"), ("location", "/x")], "")).status(301),
                step(Cached).status(301).cs("HIT").field("location", Some("/x")),
            ],
        ),
        (
            "404 with max-age is stored",
            vec![
                step(Fetched).origin(ans(404, &[("cache-control", "max-age=100")], "nf")).status(404),
                step(Cached).status(404).cs("HIT").body("nf"),
            ],
        ),
        (
            "404 without freshness but with a validator is stored to be validated",
            vec![
                step(Fetched).origin(ans(404, &[etag], "nf")).status(404),
                step(Validated).origin(not_modified(&[etag])).status(404).cs("REVALIDATED").body("nf"),
            ],
        ),
        (
            "500 with max-age is not stored",
            vec![
                step(Fetched).origin(ans(500, &[("cache-control", "max-age=100")], "e")).status(500),
                step(Fetched).status(500),
            ],
        ),
        (
            "206 with max-age is not stored",
            vec![
                step(Fetched)
                    .origin(ans(206, &[("cache-control", "max-age=100"), ("content-range", "bytes 0-0/10")], "a"))
                    .status(206),
                step(Fetched).status(206),
            ],
        ),
        (
            "302 without explicit freshness is not stored (not heuristically cacheable)",
            vec![
                step(Fetched).origin(ans(302, &[("location", "/y"), etag], "")).status(302),
                step(Fetched).status(302),
            ],
        ),
        (
            "HEAD is answered from a stored GET",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100")], "hello")),
                step(Cached).method("HEAD").cs("HIT").body("").field("content-length", Some("5")),
            ],
        ),
        // Vary: secondary keys with normalised values.
        (
            "Vary: whitespace around and inside list elements is normalised; names are case-insensitive",
            vec![
                step(Fetched).req("accept-language", "en,  fr").origin(vary("ACCEPT-Language")),
                step(Cached).req("accept-language", "en, fr").cs("HIT"),
                step(Cached).req("Accept-Language", " en ,fr ").cs("HIT"),
                step(Fetched).req("accept-language", "en, de"),
            ],
        ),
        (
            "Vary: several field lines are one comma-separated list",
            vec![
                step(Fetched).req("accept-language", "en, fr").origin(vary("Accept-Language")),
                step(Cached).req("accept-language", "en").req("accept-language", "fr").cs("HIT"),
            ],
        ),
        (
            "Vary: the order of list elements is significant",
            vec![
                step(Fetched).req("accept-language", "en, fr").origin(vary("Accept-Language")),
                step(Fetched).req("accept-language", "fr, en"),
                step(Cached).req("accept-language", "en,fr"),
                step(Cached).req("accept-language", "fr,en"),
            ],
        ),
        (
            "Vary: an absent field is not an empty one",
            vec![
                step(Fetched).origin(vary("X-Tenant")),
                step(Fetched).req("x-tenant", ""),
                step(Cached).body("a"),
                step(Cached).req("x-tenant", ""),
            ],
        ),
        (
            "Vary: two fields (two Vary lines), both must match",
            vec![
                step(Fetched).req("accept-language", "en").req("x-tenant", "t1").origin(ok(
                    &[("cache-control", "max-age=100"), ("vary", "accept-language"), ("vary", "X-TENANT")],
                    "a",
                )),
                step(Cached).req("x-tenant", "t1").req("accept-language", "en").cs("HIT"),
                step(Fetched).req("accept-language", "en").req("x-tenant", "t2"),
            ],
        ),
    ];
    let t0 = Instant::now();
    run(&gw, &o, "c", cases).await;
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

/// `methods: [GET]` (a HEAD goes upstream, not answered from a stored GET) and `statuses`
/// (only those are stored).
#[tokio::test]
async fn methods_and_statuses_options() {
    use Up::*;
    let o = Origin::default();
    let up = o.start().await;
    let gw = gateway(up.addr, "{ methods: [GET], statuses: [200, 410] }").await;
    let cases: Vec<Case> = vec![
        (
            "HEAD not cached: upstream, although a GET is stored",
            vec![
                step(Fetched).origin(ok(&[("cache-control", "max-age=100")], "hello")),
                step(Cached).cs("HIT"),
                step(Fetched).method("HEAD").cs("BYPASS").body(""),
            ],
        ),
        (
            "404 not in statuses: not stored",
            vec![
                step(Fetched).origin(ans(404, &[("cache-control", "max-age=100")], "nf")).status(404),
                step(Fetched).status(404),
            ],
        ),
        (
            "301 not in statuses: not stored",
            vec![
                step(Fetched).origin(ans(301, &[("cache-control", "max-age=100"), ("location", "/x")], "")).status(301),
                step(Fetched).status(301),
            ],
        ),
        (
            "410 in statuses: stored",
            vec![
                step(Fetched).origin(ans(410, &[("cache-control", "max-age=100")], "gone")).status(410),
                step(Cached).status(410).body("gone"),
            ],
        ),
    ];
    run(&gw, &o, "m", cases).await;
}

/// The configured defaults: `stale_if_error` serves a stale response without the directive
/// when the upstream fails (a 5xx, a timeout), and a response's own value wins over it;
/// `stale_while_revalidate` answers stale at once and refreshes in the background.
#[tokio::test]
async fn stale_defaults_from_the_configuration() {
    use Up::*;
    let o = Origin::default();
    let up = o.start().await;
    let stale = |cc: &str| ok(&[("cache-control", cc), ("age", "50")], "a");
    let sie = gateway(up.addr, "{ stale_if_error: 1h }").await;
    let cases: Vec<Case> = vec![
        (
            "default stale-if-error on a 502",
            vec![
                step(Fetched).origin(stale("max-age=10")),
                step(Fetched).origin(ans(502, &[], "x")).cs("STALE").body("a"),
            ],
        ),
        (
            "default stale-if-error on a timeout",
            vec![
                step(Fetched).origin(stale("max-age=10")),
                step(Fetched).origin(Ans { delay: Duration::from_secs(3), ..ok(&[], "late") }).cs("STALE").body("a"),
            ],
        ),
        (
            "the response's stale-if-error wins over the default",
            vec![
                step(Fetched).origin(stale("max-age=10, stale-if-error=5")),
                step(Fetched).origin(ans(502, &[], "x")).status(502),
            ],
        ),
        (
            "must-revalidate wins over the default",
            vec![
                step(Fetched).origin(stale("max-age=10, must-revalidate")),
                step(Fetched).origin(ans(503, &[], "x")).status(503),
            ],
        ),
    ];
    run(&sie, &o, "sie", cases).await;

    let swr = gateway(up.addr, "{ stale_while_revalidate: 1h }").await;
    let u = format!("{}/swr", swr.url("main"));
    o.set("/swr", stale("max-age=10"));
    assert_eq!(req("GET", &u, &[]).await.cs(), "MISS");
    o.set("/swr", Ans { delay: Duration::from_millis(500), ..ok(&[("cache-control", "max-age=100")], "b") });
    let t0 = Instant::now();
    let s = req("GET", &u, &[]).await;
    assert_eq!((s.status, s.cs(), s.body.as_str()), (200, "STALE", "a"));
    assert!(t0.elapsed() < Duration::from_millis(500), "did not wait for the refresh: {:?}", t0.elapsed());
    // The refresh, in the background, once.
    let t0 = Instant::now();
    loop {
        let g = req("GET", &u, &[]).await;
        if g.body == "b" {
            assert_eq!(g.cs(), "HIT");
            break;
        }
        assert_eq!(g.cs(), "STALE");
        assert!(t0.elapsed() < Duration::from_secs(5), "not refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(o.seen("/swr").len(), 2);
}

/// A figure of the Prometheus text for cache `proxy-cache@route:r`.
fn metric(text: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name}{{cache=\"proxy-cache@route:r\"}} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok())
}

/// The memory tier keeps to `memory_size`: 40 responses of 64 KiB into 1 MiB; the Prometheus
/// endpoint shows evictions, at most 1 MiB stored and the entries that fit.
#[tokio::test]
async fn memory_eviction_within_the_limit() {
    let o = Origin::default();
    let up = o.start().await;
    let gw = gateway(up.addr, "{ memory_size: 1MiB }").await;
    let body = "x".repeat(64 * 1024);
    let n = 40u64;
    for i in 0..n {
        let p = format!("/e{i}");
        o.set(&p, ok(&[("cache-control", "max-age=300")], &body));
        let g = req("GET", &format!("{}{p}", gw.url("main")), &[]).await;
        assert_eq!((g.status, g.cs(), g.body.len()), (200, "MISS", body.len()));
    }
    // The figures are refreshed at most once a second, when a request is logged.
    let t0 = Instant::now();
    let (bytes, entries, evictions) = loop {
        req("GET", &format!("{}/e{}", gw.url("main"), n - 1), &[]).await;
        let m = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
        let bytes = metric(&m, "gatehouse_cache_memory_bytes");
        let entries = metric(&m, "gatehouse_cache_memory_entries");
        let evictions = metric(&m, "gatehouse_cache_evictions_total");
        if let (Some(b), Some(n), Some(e)) = (bytes, entries, evictions)
            && e > 0
        {
            break (b, n, e);
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no eviction counted: {bytes:?} {evictions:?}\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(bytes <= 1 << 20, "{bytes} bytes stored, over the 1 MiB limit");
    assert!(bytes >= 4 * 64 * 1024, "{bytes}: the tier holds something");
    // At most 15 bodies of 64 KiB (and their fields) fit: each of the others was evicted or
    // refused admission, and counted.
    assert!((1..=15).contains(&entries), "{entries} entries");
    assert!(entries + evictions >= n, "{entries} entries, {evictions} evictions");
}

/// The Redis tier's `max_object_size`: a body over it is kept in memory only (not written to
/// Redis: another gateway sharing the Redis misses it), a small one is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tier_body_size_cap() {
    let o = Origin::default();
    let up = o.start().await;
    o.set("/big", ok(&[("cache-control", "max-age=60")], &"b".repeat(4096)));
    o.set("/small", ok(&[("cache-control", "max-age=60")], "small"));
    let prefix = format!("gh:cache:test:{}:{}", std::process::id(), fastrand::u64(..));
    // The two differ in `coalesce_wait` only: in one process, gateways whose caches have the
    // same name and options share one memory tier (as a reload does); these must not.
    let cache = |wait: &str| {
        format!(
            "{{ coalesce_wait: {wait}, redis: {{ url: \"redis://127.0.0.1:6379\", prefix: \"{prefix}\", max_object_size: 1KiB, timeout: 100ms, backoff: 200ms }} }}"
        )
    };
    let one = gateway(up.addr, &cache("5s")).await;
    let two = gateway(up.addr, &cache("4s")).await;
    let at = |g: &TestGateway, p: &str| format!("{}{p}", g.url("main"));
    for p in ["/big", "/small"] {
        assert_eq!(req("GET", &at(&one, p), &[]).await.cs(), "MISS", "{p}");
        assert_eq!(req("GET", &at(&one, p), &[]).await.cs(), "HIT", "{p}: in memory");
    }
    // The small one's write (sent after the big one would have been) is there; only it.
    in_redis(&prefix, 1).await;
    assert_eq!(redis_entries(&prefix).await.len(), 1, "{:?}", redis_entries(&prefix).await);
    let small = req("GET", &at(&two, "/small"), &[]).await;
    assert_eq!((small.cs(), small.body.as_str()), ("HIT", "small"), "shared through Redis");
    let big = req("GET", &at(&two, "/big"), &[]).await;
    assert_eq!((big.cs(), big.body.len()), ("MISS", 4096), "not on Redis");
    assert_eq!((o.seen("/big").len(), o.seen("/small").len()), (2, 1));
}
