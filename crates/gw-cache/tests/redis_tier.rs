//! The Redis tier against the real Redis on 127.0.0.1:6379 (each test has its own key prefix
//! and removes its keys), and with Redis unreachable or stopped mid-way (a TCP relay the test
//! stops): the cache then bypasses the shared tier without an error.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::hm;
use gw_cache::store::{RedisTier, RedisTierOptions, Stored, StoredParts};
use gw_cache::{Cache, CacheOptions, CacheRequest, Lookup, Purge};
use gw_core::SystemClock;
use http::{HeaderMap, Method, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const REDIS: &str = "redis://127.0.0.1:6379/";

fn prefix(test: &str) -> String {
    format!("gh:cachetest:{test}:{}:{}", std::process::id(), SystemClock_now())
}

#[allow(non_snake_case)]
fn SystemClock_now() -> u64 {
    use gw_core::Clock;
    SystemClock.now_ms()
}

fn node(url: &str, prefix: &str, max_redis_object: u64) -> Cache {
    let opts = CacheOptions {
        redis: Some(RedisTierOptions {
            url: url.into(),
            prefix: prefix.into(),
            timeout: Duration::from_millis(200),
            backoff: Duration::from_millis(300),
            max_object_size: max_redis_object,
            ca_pem: None,
        }),
        ..CacheOptions::default()
    };
    Cache::new(opts, Arc::new(SystemClock)).unwrap_or_else(|e| panic!("{e}"))
}

async fn raw() -> redis::aio::MultiplexedConnection {
    let c = redis::Client::open(REDIS).unwrap_or_else(|e| panic!("{e}"));
    c.get_multiplexed_async_connection().await.unwrap_or_else(|e| panic!("{e}"))
}

/// Keys under a prefix (to check clean-up and layout), except the purge log and its number
/// (which outlive purges: they expire 10 minutes after the last one).
async fn keys(prefix: &str) -> Vec<String> {
    let mut c = raw().await;
    let all: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut c).await.unwrap_or_default();
    all.into_iter().filter(|k| !k.ends_with(":purges") && !k.ends_with(":purgeseq")).collect()
}

/// Wait until `n` nodes listen on the purge channel.
async fn subscribed(prefix: &str, n: i64) {
    let mut c = raw().await;
    for _ in 0..100 {
        let v: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("{prefix}:purge"))
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        if v.first().is_some_and(|(_, k)| *k >= n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("purge listeners did not subscribe");
}

fn req<'a>(path: &'a str, h: &'a HeaderMap) -> CacheRequest<'a> {
    CacheRequest {
        method: &Method::GET,
        scheme: "https",
        host: "api.example.com",
        path_and_query: path,
        headers: h,
        consumer: None,
    }
}

/// Fill `path` on a node with a response and wait for the Redis write.
async fn fill(c: &Cache, path: &str, req_h: &HeaderMap, resp: &[(&str, &str)], body: &str) {
    let Lookup::Miss(mut f) = c.lookup(&req(path, req_h)).await else { panic!("miss expected for {path}") };
    f.head(StatusCode::OK, &hm(resp));
    f.data(&Bytes::from(body.to_string()));
    if let Some(j) = f.finish() {
        let _ = j.await;
    }
}

/// `HIT body`, `MISS`, or another verdict.
async fn look(c: &Cache, path: &str, h: &HeaderMap) -> String {
    match c.lookup(&req(path, h)).await {
        Lookup::Hit(hit) => {
            format!("HIT {}", hit.body.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<String>())
        }
        Lookup::Miss(_) => "MISS".into(),
        other => format!("{other:?}"),
    }
}

/// Poll until a lookup gives `want` (purge messages travel asynchronously).
async fn eventually(c: &Cache, path: &str, want: &str) {
    let mut last = String::new();
    for _ in 0..100 {
        last = look(c, path, &HeaderMap::new()).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path}: wanted {want}, got {last}");
}

const CC: (&str, &str) = ("cache-control", "max-age=300");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_redis_tier() {
    let p = prefix("share");
    let (a, b) = (node(REDIS, &p, 1 << 20), node(REDIS, &p, 1 << 20));
    let none = HeaderMap::new();
    fill(&a, "/items/1", &none, &[CC, ("content-type", "text/plain"), ("x-multi", "1"), ("x-multi", "2")], "shared")
        .await;
    // B has nothing in memory: it reads Redis, then serves from its memory.
    let Lookup::Hit(hit) = b.lookup(&req("/items/1", &none)).await else { panic!("hit from redis") };
    assert_eq!(hit.body.concat(), b"shared");
    assert_eq!(hit.headers.get_all("x-multi").iter().count(), 2);
    assert_eq!(hit.headers.get("content-length").and_then(|v| v.to_str().ok()), Some("6"));
    assert!(b.stats().entries >= 1);
    // Variants travel too.
    let en = hm(&[("accept-language", "en")]);
    let fr = hm(&[("accept-language", "fr")]);
    fill(&a, "/v", &en, &[CC, ("vary", "accept-language")], "hello").await;
    fill(&a, "/v", &fr, &[CC, ("vary", "accept-language")], "bonjour").await;
    assert_eq!(look(&b, "/v", &fr).await, "HIT bonjour");
    assert_eq!(look(&b, "/v", &en).await, "HIT hello");
    assert_eq!(look(&b, "/v", &hm(&[("accept-language", "de")])).await, "MISS");
    // The entry has a TTL of about the freshness plus the grace period.
    let mut c = raw().await;
    let key = a.key(&req("/items/1", &none)).hex();
    let ttl: i64 = redis::cmd("PTTL").arg(format!("{p}:e:{key}")).query_async(&mut c).await.unwrap_or(-3);
    assert!((300_000..=360_000).contains(&ttl), "{ttl}");
    a.purge(Purge::All).await;
    assert!(keys(&p).await.is_empty(), "cleaned up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_reach_every_node() {
    let p = prefix("purge");
    let (a, b) = (node(REDIS, &p, 1 << 20), node(REDIS, &p, 1 << 20));
    subscribed(&p, 2).await;
    let none = HeaderMap::new();
    let paths = ["/u/1", "/u/2?b=1&a=2", "/t/1", "/t/2", "/k/1", "/z/1"];
    for path in paths {
        let tags: &[(&str, &str)] =
            if path.starts_with("/t/") { &[CC, ("surrogate-key", "team-t other")] } else { &[CC] };
        fill(&a, path, &none, tags, path).await;
        // B holds each in its own memory tier.
        assert_eq!(look(&b, path, &none).await, format!("HIT {path}"));
    }
    // By URL (query normalised): gone from Redis and from B's memory.
    let r = a.purge_url("https://api.example.com/u/2?a=2&b=1").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.redis_removed, r.redis_error.as_deref()), (Some(1), None));
    assert!(r.delivered.is_some_and(|n| n >= 2), "{r:?}");
    eventually(&b, "/u/2?b=1&a=2", "MISS").await;
    assert_eq!(look(&b, "/u/1", &none).await, "HIT /u/1");
    // By tag.
    a.purge(Purge::Tag("team-t".into())).await;
    eventually(&b, "/t/1", "MISS").await;
    eventually(&b, "/t/2", "MISS").await;
    assert_eq!(look(&b, "/u/1", &none).await, "HIT /u/1");
    // By key, from B this time: A's memory loses it.
    let key = a.key(&req("/k/1", &none)).hex();
    b.purge_key(&key).await.unwrap_or_else(|e| panic!("{e}"));
    eventually(&a, "/k/1", "MISS").await;
    // By prefix.
    a.purge_prefix("https://api.example.com/u/").await.unwrap_or_else(|e| panic!("{e}"));
    eventually(&b, "/u/1", "MISS").await;
    assert_eq!(look(&b, "/z/1", &none).await, "HIT /z/1");
    // Everything.
    b.purge(Purge::All).await;
    eventually(&a, "/z/1", "MISS").await;
    eventually(&b, "/z/1", "MISS").await;
    assert!(keys(&p).await.is_empty(), "{:?}", keys(&p).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_after_a_post_reaches_every_node() {
    let p = prefix("inval");
    let (a, b) = (node(REDIS, &p, 1 << 20), node(REDIS, &p, 1 << 20));
    subscribed(&p, 2).await;
    let none = HeaderMap::new();
    fill(&a, "/orders/7", &none, &[CC], "order").await;
    assert_eq!(look(&b, "/orders/7", &none).await, "HIT order");
    let post = CacheRequest { method: &Method::POST, ..req("/orders/7", &none) };
    assert_eq!(a.invalidate_after(&post, StatusCode::OK, &HeaderMap::new()).await, 1);
    eventually(&b, "/orders/7", "MISS").await;
    a.purge(Purge::All).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stay_out_of_redis() {
    let p = prefix("large");
    let (a, b) = (node(REDIS, &p, 8), node(REDIS, &p, 8));
    let none = HeaderMap::new();
    fill(&a, "/big", &none, &[CC], "more than eight bytes").await;
    assert_eq!(look(&a, "/big", &none).await, "HIT more than eight bytes", "in A's memory");
    assert_eq!(look(&b, "/big", &none).await, "MISS", "not in Redis");
    a.purge(Purge::All).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_is_a_bypass_not_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let c = node(&format!("redis://127.0.0.1:{port}/"), "gh:cachetest:down", 1 << 20);
    let none = HeaderMap::new();
    let t = Instant::now();
    assert_eq!(look(&c, "/x", &none).await, "MISS");
    fill(&c, "/x", &none, &[CC], "memory only").await;
    assert_eq!(look(&c, "/x", &none).await, "HIT memory only");
    for i in 0..20 {
        assert_eq!(look(&c, &format!("/y{i}"), &none).await, "MISS");
    }
    let r = c.purge(Purge::All).await;
    assert!(r.redis_error.is_some() && r.redis_removed.is_none(), "{r:?}");
    assert_eq!(look(&c, "/x", &none).await, "MISS", "the local tier was purged anyway");
    assert!(t.elapsed() < Duration::from_secs(3), "bounded: {:?}", t.elapsed());
}

/// A TCP relay to Redis that the test can stop (closing every connection).
struct Relay {
    port: u16,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start() -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port = l.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let cs = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect("127.0.0.1:6379").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                cs.lock().unwrap_or_else(|p| p.into_inner()).push(h);
            }
        });
        Relay { port, accept, conns }
    }

    fn stop(&self) {
        self.accept.abort();
        for h in self.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            h.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_while_serving() {
    let p = prefix("stop");
    let relay = Relay::start().await;
    let url = format!("redis://127.0.0.1:{}/", relay.port);
    let (a, b) = (node(&url, &p, 1 << 20), node(&url, &p, 1 << 20));
    let none = HeaderMap::new();
    fill(&a, "/s/1", &none, &[CC], "one").await;
    assert_eq!(look(&b, "/s/1", &none).await, "HIT one", "shared through the relay");
    relay.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Redis is gone: hits from memory still work, misses are misses, fills still store in
    // memory, purges report the failure; nothing errors and nothing hangs.
    let t = Instant::now();
    assert_eq!(look(&a, "/s/1", &none).await, "HIT one");
    let c = node(&url, &p, 1 << 20);
    assert_eq!(look(&c, "/s/1", &none).await, "MISS");
    fill(&a, "/s/2", &none, &[CC], "two").await;
    assert_eq!(look(&a, "/s/2", &none).await, "HIT two");
    for i in 0..20 {
        assert_eq!(look(&b, &format!("/s/x{i}"), &none).await, "MISS");
    }
    let r = a.purge_url("https://api.example.com/s/2").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(r.redis_error.is_some(), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "bounded: {:?}", t.elapsed());
    // Clean up through the real Redis.
    let direct = node(REDIS, &p, 1 << 20);
    direct.purge(Purge::All).await;
    assert!(keys(&p).await.is_empty());
}

/// The Redis purge log: a write whose fill started (read the purge number) before a purge
/// that covers it is refused, for each kind of purge; a write that the purge does not cover,
/// or whose fill started after it, is written. No clocks: purges are numbered on Redis.
#[tokio::test]
async fn purge_log_refuses_writes_that_a_later_purge_covers() {
    let p = prefix("purgelog");
    let tier = RedisTier::new(RedisTierOptions {
        url: REDIS.into(),
        prefix: p.clone(),
        timeout: Duration::from_millis(500),
        backoff: Duration::from_millis(300),
        max_object_size: 1 << 20,
        ca_pem: None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let rules = CacheOptions::default().rules;
    let now = SystemClock_now();
    let stored = |url: &str, tag: &str| {
        Stored::new(
            &rules,
            StoredParts {
                status: StatusCode::OK,
                headers: hm(&[CC]),
                body: vec![Bytes::from_static(b"x")],
                request_ms: now,
                response_ms: now,
                secondary: Default::default(),
                url: url.into(),
                tags: vec![tag.into()],
            },
        )
    };
    let (a, b) = (stored("https://h.example/a/1", "ta"), stored("https://h.example/b/1", "tb"));
    let (ka, kb) = (1u128, 2u128);
    let cases: [(&str, bool, bool); 5] = [
        ("url https://h.example/a/1", false, true),
        ("prefix https://h.example/a/", false, true),
        ("tag ta", false, true),
        (&format!("key {ka:032x}"), false, true),
        ("all", false, false),
    ];
    for (msg, a_ok, b_ok) in cases {
        let since = tier.purge_seq().await.unwrap_or_else(|e| panic!("{e}"));
        let n = tier.log_purge(msg).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, since + 1, "numbered in order");
        let wa = tier.put(ka, &a, now, since).await.unwrap_or_else(|e| panic!("{e}"));
        let wb = tier.put(kb, &b, now, since).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((wa, wb), (a_ok, b_ok), "{msg}: a fill that started before it");
        // A fill that started after the purge is written.
        assert!(tier.put(ka, &a, now, n).await.unwrap_or_else(|e| panic!("{e}")), "{msg}: after");
        let (got, seq) = tier.get(&rules, ka, now).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((got.len(), seq), (1, n));
        tier.remove_all().await.unwrap_or_else(|e| panic!("{e}"));
    }
    // Purging everything keeps the log: the number goes on.
    assert_eq!(tier.purge_seq().await.unwrap_or_else(|e| panic!("{e}")), 5);
    // Once the log expired (10 minutes after the last purge) what a purge covered is no longer
    // known: a fill that started before the last purge is refused, one after it is written.
    let mut c = raw().await;
    let _: () = redis::cmd("DEL").arg(format!("{p}:purges")).query_async(&mut c).await.unwrap_or(());
    assert!(!tier.put(kb, &b, now, 4).await.unwrap_or_else(|e| panic!("{e}")), "log expired: before");
    assert!(tier.put(kb, &b, now, 5).await.unwrap_or_else(|e| panic!("{e}")), "log expired: after");
    tier.remove_all().await.unwrap_or_else(|e| panic!("{e}"));
    let mut c = raw().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{p}:purges"))
        .arg(format!("{p}:purgeseq"))
        .query_async(&mut c)
        .await
        .unwrap_or(());
}

/// A redis-server of this test's own (the test pauses its writes; never the shared one).
struct OwnRedis(std::process::Child, u16);

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e}"));
        let own = OwnRedis(child, port);
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return own;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on {port}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The node that runs a purge does not keep what a lookup copied from Redis into its memory
/// while the purge was removing it from Redis: Redis writes are paused, so the purge waits
/// (memory already purged, Redis not yet); a lookup on the same node then reads the entry
/// from Redis and keeps it in memory. Once the purge returns, that copy is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_is_not_undone_by_a_lookup_on_the_same_node() {
    let own = OwnRedis::start();
    let url = format!("redis://127.0.0.1:{}/", own.1);
    let p = prefix("window");
    let opts = CacheOptions {
        redis: Some(RedisTierOptions {
            url: url.clone(),
            prefix: p.clone(),
            timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(300),
            max_object_size: 1 << 20,
            ca_pem: None,
        }),
        ..CacheOptions::default()
    };
    let a = Cache::new(opts, Arc::new(SystemClock)).unwrap_or_else(|e| panic!("{e}"));
    let none = HeaderMap::new();
    let mut c = redis::Client::open(url.as_str())
        .unwrap_or_else(|e| panic!("{e}"))
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // On a loaded machine the lookup can miss the purge's window (the purge not yet waiting,
    // or already done): such a round proves nothing, so it is tried again, at most 5 times.
    // Every round checks that the purged response is not left in memory.
    let mut in_window = 0;
    for _ in 0..5 {
        fill(&a, "/w/1", &none, &[CC], "old").await;
        assert_eq!(look(&a, "/w/1", &none).await, "HIT old");
        let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(2000).arg("WRITE").query_async(&mut c).await.unwrap_or(());
        let purging = {
            let a = a.clone();
            tokio::spawn(async move { a.purge_url("https://api.example.com/w/1").await })
        };
        // The purge has cleared memory and waits on Redis; this lookup reads Redis (reads are
        // not paused, but they queue behind the purge's first command on the shared
        // connection, so they run before its removal).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = look(&a, "/w/1", &none).await;
        let r = purging.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.redis_error, r.redis_removed), (None, Some(1)), "the purge reached Redis");
        assert_eq!(look(&a, "/w/1", &none).await, "MISS", "purged, and not put back");
        if during == "HIT old" {
            in_window += 1;
            break;
        }
    }
    assert_eq!(in_window, 1, "no lookup ran inside the purge's window in 5 rounds");
}
