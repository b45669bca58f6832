//! The cache: lookups that answer from the tiers or say how to go upstream, fills that record
//! a response as it streams, invalidation and purges.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use gw_core::Clock;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, RANGE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::task::JoinHandle;

use crate::cc::{RequestCc, ResponseCc};
use crate::coalesce::{Flight, Flights, Joined, SharedBody, SharedHead, Waited, wait_head};
use crate::conditional;
use crate::headers;
use crate::key::{CacheKey, CacheRequest, normalise_host, normalised_url, primary_key};
use crate::options::CacheOptions;
use crate::policy::{self, Reuse};
use crate::status::{CacheStatus, StatusDetail};
use crate::store::{MemoryTier, RedisTier, Stored, StoredParts, Unavailable, Variants};
use crate::vary::Secondary;

/// A header field to add to a response.
pub type Field = (HeaderName, HeaderValue);

/// A response answered by the cache.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Status (the stored one, or 304 for a satisfied conditional request).
    pub status: StatusCode,
    /// Header fields, with `Age` and the cache status field.
    pub headers: HeaderMap,
    /// Body chunks (empty for `HEAD` and 304).
    pub body: Vec<Bytes>,
    /// What the cache did.
    pub cache_status: CacheStatus,
}

/// What to do with a request.
pub enum Lookup {
    /// Answer with this response.
    Hit(Hit),
    /// Answer with this stale response (`stale-while-revalidate`); when `refresh` is given,
    /// send the revalidation upstream in the background through it (only one request per key
    /// gets a refresh).
    Stale {
        /// The response.
        hit: Hit,
        /// The background revalidation, if this request should start it.
        refresh: Option<Fill>,
    },
    /// A stored response must be validated: go upstream through the fill (it sets the
    /// validators on the request) and follow what [`Fill::head`] says.
    Revalidate(Fill),
    /// Not stored: go upstream and record the response through the fill.
    Miss(Fill),
    /// Another request for the key is upstream: wait for its response.
    Wait(Waiter),
    /// Go upstream without the cache; add `header` to the response.
    Forward {
        /// What the cache did.
        cache_status: CacheStatus,
        /// The cache status field.
        header: Option<Field>,
    },
    /// `only-if-cached` and nothing usable is stored: answer 504.
    GatewayTimeout {
        /// The cache status field.
        header: Option<Field>,
    },
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Lookup::Hit(h) => return write!(f, "Hit({} {:?})", h.status, h.cache_status),
            Lookup::Stale { refresh, .. } => return write!(f, "Stale(refresh: {})", refresh.is_some()),
            Lookup::Revalidate(_) => "Revalidate",
            Lookup::Miss(_) => "Miss",
            Lookup::Wait(_) => "Wait",
            Lookup::Forward { cache_status, .. } => return write!(f, "Forward({cache_status:?})"),
            Lookup::GatewayTimeout { .. } => "GatewayTimeout",
        };
        f.write_str(s)
    }
}

/// A purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Every response stored for this normalised URL (all variants and key variations).
    Url(String),
    /// Every response whose normalised URL starts with this (`scheme://host/path-prefix`).
    Prefix(String),
    /// Every response tagged with this surrogate key.
    Tag(String),
    /// One primary key.
    Key(u128),
    /// Everything.
    All,
}

impl Purge {
    /// The purge as a message (`url <url>`, `prefix <p>`, `tag <t>`, `key <hex>`, `all`): what
    /// nodes send each other, and what the Redis tier's purge log records.
    pub fn encode(&self) -> String {
        match self {
            Purge::Url(u) => format!("url {u}"),
            Purge::Prefix(p) => format!("prefix {p}"),
            Purge::Tag(t) => format!("tag {t}"),
            Purge::Key(k) => format!("key {k:032x}"),
            Purge::All => "all".into(),
        }
    }

    /// A purge from [`Purge::encode`]'s form.
    pub fn decode(s: &str) -> Option<Purge> {
        let (kind, arg) = s.split_once(' ').unwrap_or((s, ""));
        Some(match kind {
            "url" => Purge::Url(arg.into()),
            "prefix" => Purge::Prefix(arg.into()),
            "tag" => Purge::Tag(arg.into()),
            "key" => Purge::Key(u128::from_str_radix(arg, 16).ok()?),
            "all" => Purge::All,
            _ => return None,
        })
    }

    /// Whether this purge covers a stored response of `key`.
    fn covers(&self, key: u128, s: &Stored) -> bool {
        match self {
            Purge::Url(u) => s.url == *u,
            Purge::Prefix(p) => s.url.starts_with(p.as_str()),
            Purge::Tag(t) => s.tags.contains(t),
            Purge::Key(k) => *k == key,
            Purge::All => true,
        }
    }

    fn apply_local(&self, m: &MemoryTier) {
        match self.clone() {
            Purge::Url(u) => {
                m.remove_url(&u);
            }
            Purge::Prefix(p) => m.remove_if(move |s| s.url.starts_with(&p)),
            Purge::Tag(t) => m.remove_if(move |s| s.tags.contains(&t)),
            Purge::Key(k) => m.remove(k),
            Purge::All => m.clear(),
        }
    }
}

/// The outcome of a purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    /// Keys removed from Redis (`None` without a Redis tier or when it failed).
    pub redis_removed: Option<u64>,
    /// Why Redis could not be purged (the memory tier of this node was purged anyway; other
    /// nodes keep their copies until they expire).
    pub redis_error: Option<String>,
    /// With a Redis tier: what Redis `PUBLISH` answered for the purge message, the number of
    /// subscriber connections that received it: one per cache using this Redis tier (its
    /// `prefix`) on every running node, this one included (`None` when not published; for a
    /// purge of several items, the least of their messages).
    pub delivered: Option<u64>,
    /// Without a Redis tier, what the relay to the other nodes (the config store's
    /// notification channel) did with it.
    pub relay: RelayOutcome,
}

/// What the relay of a purge without a Redis tier did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RelayOutcome {
    /// No relay (a Redis tier, or no way to reach other nodes): this node only.
    #[default]
    None,
    /// The relay sent it: every node listening at that moment receives it.
    Sent,
    /// Handed to the relay, which goes on in the background (not waited for).
    Pending,
    /// The relay failed (why): other nodes keep their copies until they expire.
    Failed(String),
}

/// A purge request that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeError {
    /// Not an absolute `http://` or `https://` URL.
    #[error("not an absolute http(s) URL: {0}")]
    InvalidUrl(String),
    /// Not 32 hex digits.
    #[error("not a cache key (32 hex digits): {0}")]
    InvalidKey(String),
    /// Empty, or with a control character.
    #[error("not a surrogate key (empty, or a control character): {0:?}")]
    InvalidTag(String),
}

/// Counters of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in the memory tier.
    pub bytes: u64,
    /// Primary keys in the memory tier.
    pub entries: u64,
    /// Entries evicted from the memory tier for space.
    pub evictions: u64,
    /// Keys with a request upstream now.
    pub in_flight: u64,
}

/// How long purges are remembered for the fills that were in flight when they happened (ms).
const PURGE_LOG_KEEP_MS: u64 = 10 * 60 * 1000;
/// At most this many purges are remembered; fills older than the oldest one forgotten are
/// not stored.
const PURGE_LOG_MAX: usize = 10_000;

/// The purges of the last minutes on this node (its own and other nodes'), numbered in the
/// order they were applied: a fill remembers the number when it started, and does not store
/// its response if a later purge covers it (the response may predate the purge), so a purge
/// is never overtaken by a fill that was upstream when it happened.
#[derive(Default)]
struct PurgeLog {
    /// (number, time applied in ms, purge), oldest first.
    entries: std::collections::VecDeque<(u64, u64, Purge)>,
    /// Fills that started at or before this number are not stored (purges were forgotten).
    floor: u64,
}

impl PurgeLog {
    fn add(&mut self, seq: u64, now: u64, p: Purge) {
        while let Some((n, t, _)) = self.entries.front() {
            if *t + PURGE_LOG_KEEP_MS < now || self.entries.len() >= PURGE_LOG_MAX {
                self.floor = self.floor.max(*n);
                self.entries.pop_front();
            } else {
                break;
            }
        }
        self.entries.push_back((seq, now, p));
    }

    /// Whether a purge after number `since` covers `s` (stored under `key`).
    fn purged_since(&self, since: u64, key: u128, s: &Stored) -> bool {
        since < self.floor
            || self.entries.iter().rev().take_while(|(n, _, _)| *n > since).any(|(_, _, p)| p.covers(key, s))
    }
}

/// The purge log and the number of the last purge applied.
#[derive(Default)]
struct Purges {
    log: std::sync::Mutex<PurgeLog>,
    seq: AtomicU64,
}

impl Purges {
    fn lock(&self) -> std::sync::MutexGuard<'_, PurgeLog> {
        // Plain field updates: a poisoned lock holds a consistent log.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number a purge and remember it (under the log's lock), then apply it to the memory tier
    /// (without the lock: a scan of the whole tier must not hold up every fill). A fill that
    /// stores after the purge is logged and started before it is refused by the log check; one
    /// that stored before it is logged is removed by the scan.
    fn apply(&self, now: u64, p: &Purge, m: &MemoryTier) {
        {
            let mut log = self.lock();
            let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
            log.add(n, now, p.clone());
        }
        p.apply_local(m);
    }

    /// The number of the last purge (what a fill starts from).
    fn current(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Run `put` unless a purge after number `since` covers one of `stored` (under `key`),
    /// under the log's lock. Returns whether it ran.
    fn put_unless_purged(&self, since: u64, key: u128, stored: &[Arc<Stored>], put: impl FnOnce()) -> bool {
        let log = self.lock();
        if stored.iter().any(|s| log.purged_since(since, key, s)) {
            return false;
        }
        put();
        true
    }
}

struct Inner {
    opts: CacheOptions,
    clock: Arc<dyn Clock>,
    memory: MemoryTier,
    redis: Option<Arc<RedisTier>>,
    flights: Flights,
    node: String,
    listener: Option<JoinHandle<()>>,
    purges: Arc<Purges>,
    /// Carries purges to the other nodes when there is no Redis tier (the config store's
    /// notification channel): called with [`Purge::encode`]'s message.
    relay: std::sync::OnceLock<Relay>,
}

/// Sends a purge message to the other nodes (see [`Cache::set_relay`]): `None` when this node
/// has no way to reach the others, else the sending, which goes on whether or not the future
/// is awaited, and resolves to its outcome.
pub type Relay = Arc<dyn Fn(&str) -> Option<RelaySend> + Send + Sync>;

/// A relay's sending of a purge (see [`Relay`]).
pub type RelaySend = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = &self.listener {
            h.abort();
        }
    }
}

/// The response cache of one `proxy-cache` instance.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

static NODE_SEQ: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// A cache with `opts`. With a Redis tier, call from inside a tokio runtime: the purge
    /// listener is started here (Redis is reached lazily; a cache starts while Redis is down).
    pub fn new(opts: CacheOptions, clock: Arc<dyn Clock>) -> Result<Cache, Unavailable> {
        let memory = MemoryTier::new(opts.memory_size, opts.max_variants, clock.clone());
        let node = format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(
                format!("{}-{}-{}", std::process::id(), clock.now_ms(), NODE_SEQ.fetch_add(1, Ordering::Relaxed))
                    .as_bytes()
            )
        );
        let redis = match &opts.redis {
            Some(r) => Some(Arc::new(RedisTier::new(r.clone())?)),
            None => None,
        };
        let purges = Arc::new(Purges::default());
        let listener = match (&redis, tokio::runtime::Handle::try_current()) {
            (Some(r), Ok(_)) => {
                let (m, me, log, clk) = (memory.clone(), node.clone(), purges.clone(), clock.clone());
                Some(r.subscribe(move |msg| match msg {
                    // Reconnected: purges may have been missed.
                    None => log.apply(clk.now_ms(), &Purge::All, &m),
                    Some(text) => {
                        let Some((from, rest)) = text.split_once(' ') else { return };
                        if from != me
                            && let Some(p) = Purge::decode(rest)
                        {
                            log.apply(clk.now_ms(), &p, &m);
                        }
                    }
                }))
            }
            _ => None,
        };
        Ok(Cache {
            inner: Arc::new(Inner {
                opts,
                clock,
                memory,
                redis,
                flights: Flights::default(),
                node,
                listener,
                purges,
                relay: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Send purges to the other nodes through `relay` when there is no Redis tier (the
    /// gateway gives it the config store's notification channel). Set once; later calls are
    /// ignored.
    pub fn set_relay(&self, relay: Relay) {
        let _ = self.inner.relay.set(relay);
    }

    /// A purge message from another node ([`Purge::encode`]'s form): applied to this node's
    /// memory tier. Returns whether it was understood.
    /// A message of several purges has one per line.
    pub fn apply_remote(&self, msg: &str) -> bool {
        let mut any = false;
        for p in msg.split('\n').filter_map(Purge::decode) {
            self.purge_memory(&p);
            any = true;
        }
        any
    }

    /// Purge this node's memory tier, remembering the purge for the fills in flight.
    fn purge_memory(&self, p: &Purge) {
        let inner = &self.inner;
        inner.purges.apply(inner.clock.now_ms(), p, &inner.memory);
    }

    /// The options.
    pub fn options(&self) -> &CacheOptions {
        &self.inner.opts
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            bytes: self.inner.memory.bytes(),
            entries: self.inner.memory.entries(),
            evictions: self.inner.memory.evictions(),
            in_flight: self.inner.flights.len() as u64,
        }
    }

    /// The primary key of a request.
    pub fn key(&self, req: &CacheRequest<'_>) -> CacheKey {
        primary_key(&self.inner.opts.key, req)
    }

    /// The cache status field for `status`.
    pub fn status_field(&self, status: CacheStatus, detail: StatusDetail) -> Option<Field> {
        self.inner.opts.status_header.as_ref().map(|h| h.field(status, detail))
    }

    fn forward(&self, status: CacheStatus, detail: StatusDetail) -> Lookup {
        Lookup::Forward { cache_status: status, header: self.status_field(status, detail) }
    }

    /// Look a request up.
    pub async fn lookup(&self, req: &CacheRequest<'_>) -> Lookup {
        // Purges from now on may be overtaken by a fill this lookup starts: the fill checks.
        let since = self.inner.purges.current();
        let mut redis_since = None;
        let mut l = self.decide(req, &mut redis_since).await;
        let fill = match &mut l {
            Lookup::Miss(f) | Lookup::Revalidate(f) | Lookup::Stale { refresh: Some(f), .. } => Some(f),
            _ => None,
        };
        if let Some(f) = fill {
            f.since = since;
            if redis_since.is_none()
                && let Some(r) = &self.inner.redis
                && !r.in_backoff()
            {
                redis_since = r.purge_seq().await.ok();
            }
            f.redis_since = redis_since;
        }
        l
    }

    /// What to do with a request (see [`Cache::lookup`]); `redis_since` gets the Redis purge
    /// log's number when Redis was read.
    async fn decide(&self, req: &CacheRequest<'_>, redis_since: &mut Option<u64>) -> Lookup {
        let inner = &self.inner;
        let m = req.method;
        if !(*m == Method::GET || *m == Method::HEAD) || !inner.opts.rules.methods.contains(m) {
            return self.forward(CacheStatus::Bypass, StatusDetail { fwd_method: true, ..StatusDetail::default() });
        }
        if inner.opts.bypass.iter().any(|b| b.matches(req.headers)) {
            return self.forward(CacheStatus::Bypass, StatusDetail::default());
        }
        let now = inner.clock.now_ms();
        let key = self.key(req);
        let req_cc = RequestCc::parse(req.headers);
        let head_only = *m == Method::HEAD;
        let partial = req.headers.contains_key(RANGE);
        let (found, vary_miss) = self.find(&key, req.headers, now, redis_since).await;
        let Some(stored) = found else {
            if req_cc.only_if_cached {
                return Lookup::GatewayTimeout {
                    header: self.status_field(CacheStatus::Miss, StatusDetail::keyed(key.hash)),
                };
            }
            let detail = StatusDetail { vary_miss, ..StatusDetail::keyed(key.hash) };
            if head_only || partial {
                return match inner.flights.get(key.hash) {
                    Some(f) if head_only && inner.opts.coalesce => {
                        Lookup::Wait(self.waiter(f, key.hash, req, head_only))
                    }
                    _ => self.forward(CacheStatus::Miss, detail),
                };
            }
            return self.lead_or_wait(key, Mode::Miss { vary_miss }, req, req_cc, now);
        };
        if req.headers.contains_key(AUTHORIZATION) && !policy::shareable_with_authorization(&stored.cc) {
            return self.forward(CacheStatus::Bypass, StatusDetail::keyed(key.hash));
        }
        let age = stored.age(now);
        match policy::reuse(&inner.opts.rules, &req_cc, &stored.cc, age) {
            Reuse::Fresh => {
                Lookup::Hit(self.hit(&stored, key.hash, now, req.headers, head_only, CacheStatus::Hit, false))
            }
            Reuse::StaleAccepted => {
                Lookup::Hit(self.hit(&stored, key.hash, now, req.headers, head_only, CacheStatus::Stale, false))
            }
            Reuse::StaleWhileRevalidate => {
                let hit = self.hit(&stored, key.hash, now, req.headers, head_only, CacheStatus::Stale, false);
                // A HEAD or a range request cannot refresh a stored GET (its response has no
                // full body); the next GET will.
                let can_refresh = !head_only && !partial;
                let refresh = can_refresh.then(|| inner.flights.try_lead(key.hash)).flatten().map(|f| {
                    let mode = Mode::Revalidate { stored: stored.clone(), stale_if_error: false };
                    self.fill(key, f, true, mode, req, req_cc, now)
                });
                Lookup::Stale { hit, refresh }
            }
            Reuse::Revalidate { stale_if_error } => {
                if req_cc.only_if_cached {
                    return Lookup::GatewayTimeout {
                        header: self.status_field(CacheStatus::Expired, StatusDetail::keyed(key.hash)),
                    };
                }
                if head_only || partial {
                    return self.forward(CacheStatus::Expired, StatusDetail::keyed(key.hash));
                }
                self.lead_or_wait(key, Mode::Revalidate { stored, stale_if_error }, req, req_cc, now)
            }
        }
    }

    fn waiter(&self, flight: Arc<Flight>, key: u128, req: &CacheRequest<'_>, head_only: bool) -> Waiter {
        Waiter { cache: self.clone(), flight, key, req_headers: req.headers.clone(), head_only }
    }

    fn lead_or_wait(&self, key: CacheKey, mode: Mode, req: &CacheRequest<'_>, req_cc: RequestCc, now: u64) -> Lookup {
        let revalidate = matches!(mode, Mode::Revalidate { .. });
        let wrap = |f: Fill| if revalidate { Lookup::Revalidate(f) } else { Lookup::Miss(f) };
        if !self.inner.opts.coalesce {
            return wrap(self.fill(key, Flight::new(), false, mode, req, req_cc, now));
        }
        match self.inner.flights.join(key.hash) {
            Joined::Lead(f) => wrap(self.fill(key, f, true, mode, req, req_cc, now)),
            Joined::Wait(f) => Lookup::Wait(self.waiter(f, key.hash, req, false)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        key: CacheKey,
        flight: Arc<Flight>,
        registered: bool,
        mode: Mode,
        req: &CacheRequest<'_>,
        req_cc: RequestCc,
        now: u64,
    ) -> Fill {
        Fill {
            cache: self.clone(),
            key,
            flight,
            registered,
            mode,
            method: req.method.clone(),
            req_headers: req.headers.clone(),
            req_cc,
            request_ms: now,
            since: 0,
            redis_since: None,
            state: FillState::Head,
        }
    }

    /// Find the variant for a request: memory first, then Redis (promoted into memory).
    async fn find(
        &self,
        key: &CacheKey,
        req: &HeaderMap,
        now: u64,
        redis_since: &mut Option<u64>,
    ) -> (Option<Arc<Stored>>, bool) {
        let inner = &self.inner;
        let mut vary_miss = false;
        if let Some(v) = inner.memory.get(key.hash) {
            if let Some(s) = v.0.iter().find(|s| s.expires_ms > now && s.secondary.matches(req)) {
                return (Some(s.clone()), false);
            }
            vary_miss = v.0.iter().any(|s| s.expires_ms > now);
        }
        let since = inner.purges.current();
        if let Some(r) = &inner.redis
            && !r.in_backoff()
            && let Ok((list, seq)) = r.get(&inner.opts.rules, key.hash, now).await
        {
            *redis_since = Some(seq);
            let list: Vec<Arc<Stored>> = list.into_iter().map(Arc::new).collect();
            let found = list.iter().find(|s| s.secondary.matches(req)).cloned();
            // What Redis held while a purge was on its way here is neither kept nor served.
            let kept = !list.is_empty()
                && inner.purges.put_unless_purged(since, key.hash, &list.clone(), || {
                    inner.memory.put_all(key.hash, Variants(list));
                });
            if kept {
                if found.is_some() {
                    return (found, false);
                }
                vary_miss = true;
            }
        }
        (None, vary_miss)
    }

    /// The response for a stored entry: a 304 when the client's condition is met, else the
    /// stored response (without body for `HEAD`), with `Age` and the status field.
    #[allow(clippy::too_many_arguments)]
    fn hit(
        &self,
        s: &Stored,
        key: u128,
        now: u64,
        req: &HeaderMap,
        head_only: bool,
        status: CacheStatus,
        collapsed: bool,
    ) -> Hit {
        let age = s.age(now);
        let detail = StatusDetail { ttl: Some(age.ttl_secs()), collapsed, ..StatusDetail::keyed(key) };
        let not_modified = conditional::not_modified(req, &s.headers, s.response_ms);
        let (code, mut h, body) = if not_modified {
            (StatusCode::NOT_MODIFIED, conditional::not_modified_headers(&s.headers), Vec::new())
        } else {
            (s.status, s.headers.clone(), if head_only { Vec::new() } else { s.body.clone() })
        };
        headers::set_age(&mut h, age.age_ms);
        if let Some((n, v)) = self.status_field(status, detail) {
            h.insert(n, v);
        }
        Hit { status: code, headers: h, body, cache_status: status }
    }

    /// Invalidate what an unsafe request changed (RFC 9111 section 4.4): its target and the
    /// same-origin `Location`/`Content-Location` of its response, here, on Redis and on every
    /// node. Returns the number of URLs invalidated.
    pub async fn invalidate_after(&self, req: &CacheRequest<'_>, status: StatusCode, resp: &HeaderMap) -> usize {
        let urls = crate::invalidate::targets(
            req.method,
            status,
            req.scheme,
            req.host,
            req.path_and_query,
            resp,
            &self.inner.opts.key.query,
        );
        let n = urls.len();
        if n > 0 {
            // The relay is not waited for on the request path.
            self.purge_all_of(urls.into_iter().map(Purge::Url).collect(), false).await;
        }
        n
    }

    /// Purge every stored response of an absolute URL (its query normalised as in keys).
    pub async fn purge_url(&self, url: &str) -> Result<PurgeReport, PurgeError> {
        Ok(self.purge(self.url_purge(url)?).await)
    }

    /// Purge every stored response whose URL starts with `prefix` (`scheme://host/path...`).
    pub async fn purge_prefix(&self, prefix: &str) -> Result<PurgeReport, PurgeError> {
        Ok(self.purge(Self::prefix_purge(prefix)?).await)
    }

    /// Purge by cache key (32 hex digits, as [`CacheKey::hex`]).
    pub async fn purge_key(&self, hex: &str) -> Result<PurgeReport, PurgeError> {
        Ok(self.purge(Self::key_purge(hex)?).await)
    }

    /// The purge of an absolute URL (see [`Cache::purge_url`]).
    pub fn url_purge(&self, url: &str) -> Result<Purge, PurgeError> {
        let (scheme, host, pq) = split_url(url)?;
        Ok(Purge::Url(normalised_url(&scheme, &host, &pq, &self.inner.opts.key.query)))
    }

    /// The purge of a URL prefix (see [`Cache::purge_prefix`]).
    pub fn prefix_purge(prefix: &str) -> Result<Purge, PurgeError> {
        let (scheme, host, pq) = split_url(prefix)?;
        let host = normalise_host(&scheme, &host);
        Ok(Purge::Prefix(format!("{scheme}://{host}{pq}")))
    }

    /// The purge of a cache key (see [`Cache::purge_key`]).
    pub fn key_purge(hex: &str) -> Result<Purge, PurgeError> {
        let k = (hex.len() == 32).then(|| u128::from_str_radix(hex, 16).ok()).flatten();
        Ok(Purge::Key(k.ok_or_else(|| PurgeError::InvalidKey(hex.into()))?))
    }

    /// The purge of a surrogate key (tag); one with a control character (a line break) is
    /// refused: no stored tag has one, and purge messages are lines.
    pub fn tag_purge(tag: &str) -> Result<Purge, PurgeError> {
        if tag.is_empty() || tag.chars().any(char::is_control) {
            return Err(PurgeError::InvalidTag(tag.into()));
        }
        Ok(Purge::Tag(tag.into()))
    }

    /// Purge here, on Redis, and on every node (through Redis pub/sub). The memory tier of
    /// this node is always purged; Redis failures are reported, not raised.
    pub async fn purge(&self, p: Purge) -> PurgeReport {
        self.purge_all_of(vec![p], true).await
    }

    /// Several purges at once: here, on Redis and on every node. Without a Redis tier they
    /// reach the other nodes in one relay message (a line each); with one, each is published.
    /// `wait_relay`: wait for the relay's outcome (else it is [`RelayOutcome::Pending`]).
    pub async fn purge_all_of(&self, ps: Vec<Purge>, wait_relay: bool) -> PurgeReport {
        let inner = &self.inner;
        if inner.redis.is_none() {
            for p in &ps {
                self.purge_memory(p);
            }
            let msg: Vec<String> = ps.iter().map(Purge::encode).collect();
            let relay = match inner.relay.get().and_then(|relay| relay(&msg.join("\n"))) {
                None => RelayOutcome::None,
                Some(_) if !wait_relay => RelayOutcome::Pending,
                Some(f) => match f.await {
                    Ok(()) => RelayOutcome::Sent,
                    Err(e) => RelayOutcome::Failed(e),
                },
            };
            return PurgeReport { redis_removed: None, redis_error: None, delivered: None, relay };
        }
        let mut all =
            PurgeReport { redis_removed: Some(0), redis_error: None, delivered: None, relay: RelayOutcome::None };
        for p in ps {
            let r = self.purge_redis(p).await;
            all.redis_removed = all.redis_removed.zip(r.redis_removed).map(|(a, b)| a + b);
            all.delivered = match (all.delivered, r.delivered) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (None, b) => b,
                (a, None) => a,
            };
            if all.redis_error.is_none() {
                all.redis_error = r.redis_error;
            }
        }
        all
    }

    /// One purge with a Redis tier (see [`Cache::purge`]).
    async fn purge_redis(&self, p: Purge) -> PurgeReport {
        let inner = &self.inner;
        self.purge_memory(&p);
        let Some(r) = &inner.redis else {
            return PurgeReport { redis_removed: None, redis_error: None, delivered: None, relay: RelayOutcome::None };
        };
        // Recorded before anything is removed: a write of a fill that started before it is
        // refused from now on (the write script checks the log), so it cannot overtake it.
        let logged = r.log_purge(&p.encode()).await;
        let removed = match &p {
            Purge::Url(u) => r.remove_url(u, true).await,
            Purge::Prefix(u) => r.remove_url(u, false).await,
            Purge::Tag(t) => r.remove_tag(t).await,
            Purge::Key(k) => r.remove_key(*k).await,
            Purge::All => r.remove_all().await,
        };
        // Again, now that Redis no longer holds what it covers: a lookup on this node during
        // the removal may have copied a covered entry from Redis into memory (its fill number
        // was already past the first one). The other nodes get the purge after this.
        self.purge_memory(&p);
        let delivered = r.publish(&format!("{} {}", inner.node, p.encode())).await;
        let error = match (&logged, &removed, &delivered) {
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Some(e.to_string()),
            _ => None,
        };
        PurgeReport {
            redis_removed: removed.ok(),
            redis_error: error,
            delivered: delivered.ok(),
            relay: RelayOutcome::None,
        }
    }
}

/// Split an absolute URL into scheme, host and path-and-query.
fn split_url(url: &str) -> Result<(String, String, String), PurgeError> {
    let bad = || PurgeError::InvalidUrl(url.into());
    let u: http::Uri = url.trim().parse().map_err(|_| bad())?;
    let scheme = u.scheme_str().map(str::to_ascii_lowercase).ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let host = u.authority().map(|a| a.as_str().to_string()).ok_or_else(bad)?;
    let pq = u.path_and_query().map_or("/", |p| p.as_str());
    let pq = if pq.is_empty() { "/" } else { pq };
    Ok((scheme, host, pq.to_string()))
}

/// What a fill is for.
enum Mode {
    /// Nothing usable stored.
    Miss { vary_miss: bool },
    /// A stored response is being validated.
    Revalidate { stored: Arc<Stored>, stale_if_error: bool },
}

enum FillState {
    Head,
    Recording {
        status: StatusCode,
        headers: HeaderMap,
        secondary: Secondary,
        tags: Vec<String>,
        response_ms: u64,
        size: u64,
    },
    /// Not stored; `shared` when waiters are still streaming it.
    Passing,
    Done,
}

/// What to do with the upstream response.
#[derive(Debug)]
pub enum Upstream {
    /// Send it to the client with `header` added; pass its body to [`Fill::data`] and end with
    /// [`Fill::finish`] (or [`Fill::abort`]).
    Forward {
        /// What the cache did.
        cache_status: CacheStatus,
        /// The cache status field.
        header: Option<Field>,
        /// Whether the response is being recorded.
        storing: bool,
    },
    /// Answer with this instead (a 304 validated the stored response, or the upstream failed
    /// and `stale-if-error` allows the stale response). Drop the upstream body.
    Replace(Hit),
    /// The upstream's 304 does not match the stored response (which was dropped): send the
    /// request again without validators (as a miss, through [`Fill::prepare_request`]).
    Refetch,
}

/// Records one upstream response into the cache and shares it with waiting requests.
/// Dropping a fill before [`Fill::finish`] aborts it (waiters see the abort; nothing is stored).
pub struct Fill {
    cache: Cache,
    key: CacheKey,
    flight: Arc<Flight>,
    registered: bool,
    mode: Mode,
    method: Method,
    req_headers: HeaderMap,
    req_cc: RequestCc,
    request_ms: u64,
    /// The number of the last purge applied on this node when the lookup made this fill:
    /// later ones that cover the response keep it from being stored.
    since: u64,
    /// The same on the Redis purge log (`None`: unknown, the response is not written there).
    redis_since: Option<u64>,
    state: FillState,
}

impl Fill {
    /// The key being filled.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Edit the upstream request: a revalidation gets the stored validators (`If-None-Match`,
    /// `If-Modified-Since`); a miss loses the client's own preconditions (the cache wants a
    /// full response and answers the client's condition itself).
    pub fn prepare_request(&self, req: &mut HeaderMap) {
        match &self.mode {
            Mode::Revalidate { stored, .. } => conditional::set_validators(req, &stored.headers),
            Mode::Miss { .. } => conditional::clear_preconditions(req),
        }
    }

    /// Whether other requests wait for or stream this response.
    pub fn has_waiters(&self) -> bool {
        Arc::strong_count(&self.flight) > 1 + usize::from(self.registered)
    }

    /// Whether the upstream body is still needed when the leader's own client goes away: it
    /// is being recorded (within `max_object_size`) or other requests stream it. The proxy
    /// then keeps reading it (and passing it to [`Fill::data`]) without that client.
    pub fn wants_rest(&self) -> bool {
        matches!(self.state, FillState::Recording { .. }) || self.has_waiters()
    }

    /// Mark the time the request was sent upstream (default: the lookup time).
    pub fn set_request_time(&mut self, ms: u64) {
        self.request_ms = ms;
    }

    fn field(&self, status: CacheStatus, detail: StatusDetail) -> Option<Field> {
        self.cache.status_field(status, StatusDetail { key: Some(self.key.hash), ..detail })
    }

    /// The upstream response head arrived.
    pub fn head(&mut self, status: StatusCode, resp: &HeaderMap) -> Upstream {
        let inner = self.cache.inner.clone();
        let now = inner.clock.now_ms();
        let (label, vary_miss) = match &self.mode {
            Mode::Miss { vary_miss } => (CacheStatus::Miss, *vary_miss),
            Mode::Revalidate { .. } => (CacheStatus::Expired, false),
        };
        if let Mode::Revalidate { stored, stale_if_error } = &self.mode {
            let stored = stored.clone();
            if status == StatusCode::NOT_MODIFIED {
                if !headers::validates(&stored.headers, resp) {
                    inner.memory.remove(self.key.hash);
                    self.mode = Mode::Miss { vary_miss: false };
                    // Waiters go upstream themselves; the refetch records into a flight of
                    // its own.
                    self.flight.pass();
                    self.unregister();
                    self.flight = Flight::new();
                    self.state = FillState::Head;
                    return Upstream::Refetch;
                }
                let mut parts = stored.parts();
                headers::merge_304(&mut parts.headers, resp);
                let cc = ResponseCc::parse(&parts.headers);
                let mut strip = cc.private_fields.clone();
                if !inner.opts.rules.store_set_cookie {
                    strip.push("set-cookie".into());
                }
                parts.headers = headers::for_storage(&parts.headers, &strip);
                parts.request_ms = self.request_ms;
                parts.response_ms = now;
                let updated = Arc::new(Stored::new(&inner.opts.rules, parts));
                let head_only = self.method == Method::HEAD;
                let mut hit = self.cache.hit(
                    &updated,
                    self.key.hash,
                    now,
                    &self.req_headers,
                    head_only,
                    CacheStatus::Revalidated,
                    false,
                );
                // Fields kept out of storage still reach this client.
                for f in &strip {
                    for v in resp.get_all(f.as_str()) {
                        if let Ok(n) = HeaderName::from_bytes(f.as_bytes()) {
                            hit.headers.append(n, v.clone());
                        }
                    }
                }
                if cc.no_store || cc.private {
                    // The validated response may no longer be stored.
                    inner.memory.remove(self.key.hash);
                    self.flight.pass();
                } else {
                    self.store(updated.clone(), now);
                    self.flight.set_head(shared_head(&updated));
                    for c in &updated.body {
                        self.flight.push(c.clone());
                    }
                }
                self.close(true);
                return Upstream::Replace(hit);
            }
            let upstream_error = matches!(status.as_u16(), 500 | 502 | 503 | 504);
            if upstream_error
                && (*stale_if_error
                    || policy::stale_if_error_allows(&inner.opts.rules, &stored.cc, &self.req_cc, stored.age(now)))
            {
                self.flight.pass();
                self.close(true);
                let head_only = self.method == Method::HEAD;
                return Upstream::Replace(self.cache.hit(
                    &stored,
                    self.key.hash,
                    now,
                    &self.req_headers,
                    head_only,
                    CacheStatus::Stale,
                    false,
                ));
            }
        }
        let detail = StatusDetail { vary_miss, fwd_status: Some(status.as_u16()), ..StatusDetail::default() };
        let refuse = |me: &mut Fill| {
            me.flight.pass();
            me.state = FillState::Passing;
            me.unregister();
            Upstream::Forward { cache_status: label, header: me.field(label, detail), storing: false }
        };
        if policy::storable(&inner.opts.rules, &self.method, &self.req_headers, status, resp).is_err() {
            return refuse(self);
        }
        let too_large = resp
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > inner.opts.max_object_size);
        if too_large {
            return refuse(self);
        }
        let cc = ResponseCc::parse(resp);
        let stored_headers = headers::for_storage(resp, &cc.private_fields);
        let secondary = Secondary::of(resp, &self.req_headers);
        self.flight.set_head(SharedHead { status, headers: stored_headers.clone(), secondary: secondary.clone(), cc });
        self.state = FillState::Recording {
            status,
            headers: stored_headers,
            secondary,
            tags: headers::tags(resp),
            response_ms: now,
            size: 0,
        };
        let detail = StatusDetail { stored: true, ..detail };
        Upstream::Forward { cache_status: label, header: self.field(label, detail), storing: true }
    }

    /// A body chunk of the upstream response (as it passes to the client).
    pub fn data(&mut self, chunk: &Bytes) {
        match &mut self.state {
            FillState::Recording { size, .. } => {
                *size += chunk.len() as u64;
                if *size > self.cache.inner.opts.max_object_size {
                    // Too large: stop recording; waiters already streaming keep getting it.
                    self.state = FillState::Passing;
                    self.unregister();
                    self.flight.release_if_alone();
                }
                self.flight.push(chunk.clone());
            }
            FillState::Passing => {
                self.flight.release_if_alone();
                self.flight.push(chunk.clone());
            }
            FillState::Head | FillState::Done => {}
        }
    }

    /// The upstream response ended: store it. Returns the Redis write when there is one (the
    /// caller need not wait for it).
    pub fn finish(mut self) -> Option<JoinHandle<()>> {
        let state = std::mem::replace(&mut self.state, FillState::Done);
        let FillState::Recording { status, mut headers, secondary, tags, response_ms, size } = state else {
            self.close(true);
            return None;
        };
        let inner = self.cache.inner.clone();
        if !headers.contains_key(CONTENT_LENGTH) && status != StatusCode::NO_CONTENT {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        }
        let stored = Arc::new(Stored::new(
            &inner.opts.rules,
            StoredParts {
                status,
                headers,
                body: self.flight.chunks(),
                request_ms: self.request_ms,
                response_ms,
                secondary,
                url: self.key.url.clone(),
                tags,
            },
        ));
        let job = self.store(stored, inner.clock.now_ms());
        self.close(true);
        job
    }

    /// The upstream could not be reached or timed out: the stale response when
    /// `stale-if-error` allows it (the fill ends either way).
    pub fn upstream_failed(mut self) -> Option<Hit> {
        let now = self.cache.inner.clock.now_ms();
        let out = match &self.mode {
            Mode::Revalidate { stored, stale_if_error } => {
                let ok = *stale_if_error
                    || policy::stale_if_error_allows(
                        &self.cache.inner.opts.rules,
                        &stored.cc,
                        &self.req_cc,
                        stored.age(now),
                    );
                ok.then(|| {
                    self.cache.hit(
                        stored,
                        self.key.hash,
                        now,
                        &self.req_headers,
                        self.method == Method::HEAD,
                        CacheStatus::Stale,
                        false,
                    )
                })
            }
            Mode::Miss { .. } => None,
        };
        self.close(false);
        out
    }

    /// The upstream exchange failed mid-body: nothing is stored; waiters see the abort.
    pub fn abort(mut self) {
        self.close(false);
    }

    fn store(&self, s: Arc<Stored>, now: u64) -> Option<JoinHandle<()>> {
        let inner = &self.cache.inner;
        // A purge applied while this response was upstream wins: it is not stored.
        let stored = std::slice::from_ref(&s);
        if !inner
            .purges
            .put_unless_purged(self.since, self.key.hash, stored, || inner.memory.put(self.key.hash, s.clone(), now))
        {
            return None;
        }
        let r = inner.redis.clone()?;
        let since = self.redis_since?;
        if s.body_len() > r.options().max_object_size {
            return None;
        }
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let key = self.key.hash;
        Some(rt.spawn(async move {
            // A purge recorded on Redis (by any node) since the fill started that covers the
            // response refuses the write.
            if let Err(e) = r.put(key, &s, now, since).await {
                tracing::debug!("proxy-cache: redis write skipped: {e}");
            }
        }))
    }

    fn unregister(&mut self) {
        if self.registered {
            self.cache.inner.flights.remove(self.key.hash, &self.flight);
            self.registered = false;
        }
    }

    fn close(&mut self, ok: bool) {
        self.state = FillState::Done;
        self.flight.end(ok);
        self.unregister();
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if !matches!(self.state, FillState::Done) {
            self.close(false);
        }
    }
}

fn shared_head(s: &Stored) -> SharedHead {
    SharedHead { status: s.status, headers: s.headers.clone(), secondary: s.secondary.clone(), cc: s.cc.clone() }
}

/// A request waiting for another request's response for the same key.
pub struct Waiter {
    cache: Cache,
    flight: Arc<Flight>,
    /// The primary key (for `Cache-Status`'s `key`).
    key: u128,
    req_headers: HeaderMap,
    head_only: bool,
}

/// What a waiter does.
pub enum WaitOutcome {
    /// Answer with this head and stream `body` (`None` for `HEAD` and 304).
    Stream {
        /// Status.
        status: StatusCode,
        /// Header fields (with `Age` and the status field).
        headers: HeaderMap,
        /// The body as it arrives.
        body: Option<SharedBody>,
    },
    /// Go upstream without the cache (not shareable with this request, aborted, or the wait
    /// timed out); add `header` to the response.
    GoUpstream {
        /// The cache status field.
        header: Option<Field>,
    },
}

impl Waiter {
    /// Wait (at most `coalesce_wait`) for the head of the response being fetched.
    pub async fn wait(self) -> WaitOutcome {
        let inner = &self.cache.inner;
        let go = || WaitOutcome::GoUpstream {
            header: self.cache.status_field(CacheStatus::Miss, StatusDetail::keyed(self.key)),
        };
        let Waited::Head(b) = wait_head(self.flight.clone(), inner.opts.coalesce_wait).await else {
            return go();
        };
        let (head, body) = *b;
        if !head.secondary.matches(&self.req_headers)
            || (self.req_headers.contains_key(AUTHORIZATION) && !policy::shareable_with_authorization(&head.cc))
        {
            return go();
        }
        let mut h = head.headers.clone();
        let mut status = head.status;
        let mut body = Some(body);
        if conditional::not_modified(&self.req_headers, &head.headers, inner.clock.now_ms()) {
            h = conditional::not_modified_headers(&head.headers);
            status = StatusCode::NOT_MODIFIED;
            body = None;
        }
        if self.head_only {
            body = None;
        }
        headers::set_age(&mut h, policy::age_value(&head.headers) * 1000);
        if let Some((n, v)) =
            self.cache.status_field(CacheStatus::Hit, StatusDetail { collapsed: true, ..StatusDetail::keyed(self.key) })
        {
            h.insert(n, v);
        }
        WaitOutcome::Stream { status, headers: h, body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::sample;

    /// A purge numbered after a fill's start covers the responses it names (URL, prefix, tag,
    /// key, all), not others; forgotten purges (too old, too many) raise the floor below
    /// which fills are refused.
    #[test]
    fn purge_log_orders_purges_and_fills() {
        let s = sample("https://h.example/a/1", "x", "max-age=60", 1000);
        let mut log = PurgeLog::default();
        log.add(1, 1000, Purge::Url("https://h.example/b".into()));
        assert!(!log.purged_since(0, 7, &s), "another URL");
        log.add(2, 1000, Purge::Prefix("https://h.example/a/".into()));
        assert!(log.purged_since(1, 7, &s), "a later prefix purge");
        assert!(!log.purged_since(2, 7, &s), "the fill started after it");
        log.add(3, 1000, Purge::Key(7));
        assert!(log.purged_since(2, 7, &s) && !log.purged_since(2, 8, &s));
        log.add(4, 1000, Purge::Tag("t".into()));
        assert!(!log.purged_since(3, 7, &s), "untagged");
        log.add(5, 1000, Purge::All);
        assert!(log.purged_since(4, 9, &s));
        // Ten minutes later the old ones are forgotten: fills from before them are refused.
        log.add(6, 1000 + PURGE_LOG_KEEP_MS + 1, Purge::Url("https://h.example/z".into()));
        assert_eq!((log.entries.len(), log.floor), (1, 5));
        assert!(log.purged_since(4, 9, &s) && !log.purged_since(5, 9, &s));
        let mut full = PurgeLog::default();
        for n in 1..=(PURGE_LOG_MAX as u64 + 1) {
            full.add(n, 1000, Purge::Tag("t".into()));
        }
        assert_eq!((full.entries.len(), full.floor), (PURGE_LOG_MAX, 1));
        assert!(full.purged_since(0, 9, &s) && !full.purged_since(1, 9, &s));
    }
}
