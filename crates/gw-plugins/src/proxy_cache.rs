//! `proxy-cache`: the RFC 9111 shared cache of `gw-cache` in the request pipeline (see
//! `docs/caching.md`).
//!
//! How a request goes through it (the plugin runs last in each phase, after authentication,
//! access control and rate limits):
//! - access: `PURGE` (when enabled) purges the URL; an unsafe method is remembered for the
//!   invalidation after its response; `GET`/`HEAD` are looked up: a hit (or a stale response
//!   served) is answered at once as a streaming reply; a coalesced request waits (bounded) for
//!   the response another request is fetching and streams it as it arrives; a miss or a
//!   revalidation goes on upstream with a fill;
//! - upstream request: the fill sets the validators (or removes the client's preconditions);
//!   a `stale-while-revalidate` request is answered here with the stale response, and the
//!   request as it would have been sent goes upstream in the background (once per key);
//! - upstream response: the fill decides (store, forward, or answer from the cache: a 304 that
//!   validated the stored response, `stale-if-error`); an unsafe method invalidates;
//! - response filter: the body is recorded chunk by chunk as it passes (never buffered beyond
//!   `max_object_size`) and shared with waiting requests;
//! - upstream failed: `stale-if-error`;
//! - log: metrics by route and cache status.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use gw_cache::{Cache, CacheOptions, CacheRequest, CacheStatus, Field, Fill, Hit, Lookup, SharedBody, Upstream};
use gw_config::plugins::ProxyCache as Conf;
use gw_core::body::FrameSource;
use gw_core::{
    Body, BodyFilter, Ctx, Emit, Error, ErrorKind, Flow, Frame, LogEntry, Plugin, Reply, RequestHead, ResponseHead,
    Result,
};
use gw_observability::{CacheCounter, Metrics};
use http::{HeaderMap, Method, StatusCode};

/// Priority of `proxy-cache`: after every access plugin (authentication, ACL, rate limits,
/// termination) and the transformers, so that what they refuse or change is never served
/// from the cache, and last in the upstream-request phase (it sees the request as sent).
pub(crate) const PRIORITY: i32 = 100;

/// One cache, shared by the instances of the same name and options across reloads.
pub struct CacheSlot {
    /// The instance name.
    pub instance: String,
    /// The cache.
    pub cache: Cache,
}

type Registry = Mutex<HashMap<String, Weak<CacheSlot>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Every live cache of this process (what the Admin API purges and reports).
pub fn caches() -> Vec<Arc<CacheSlot>> {
    let Ok(mut m) = registry().lock() else { return Vec::new() };
    m.retain(|_, w| w.strong_count() > 0);
    let mut v: Vec<Arc<CacheSlot>> = m.values().filter_map(Weak::upgrade).collect();
    v.sort_by(|a, b| a.instance.cmp(&b.instance));
    v
}

/// Carries a purge of a cache without a Redis tier to the other nodes: called with the cache's
/// instance name and the purge message (`gw_cache::Purge::encode`, a line per purge); returns
/// the sending, which goes on whether or not it is awaited (see [`gw_cache::RelaySend`]).
pub type PurgePeers = Arc<dyn Fn(&str, &str) -> gw_cache::RelaySend + Send + Sync>;

fn peers() -> &'static std::sync::RwLock<Option<PurgePeers>> {
    static P: OnceLock<std::sync::RwLock<Option<PurgePeers>>> = OnceLock::new();
    P.get_or_init(|| std::sync::RwLock::new(None))
}

/// Where purges of caches without a Redis tier go to reach the other nodes (the config
/// store's notification channel, set by the Admin API in store mode); `None`: this node only.
pub fn set_purge_peers(p: Option<PurgePeers>) {
    if let Ok(mut g) = peers().write() {
        *g = p;
    }
}

/// A purge message from another node for the cache `instance` (`*`: every cache of this
/// node without a Redis tier), applied to the memory tier here. Caches with a Redis tier get
/// their purges through Redis. Returns how many caches applied it.
pub fn apply_peer_purge(instance: &str, msg: &str) -> usize {
    caches()
        .iter()
        .filter(|c| (instance == "*" || c.instance == instance) && c.cache.options().redis.is_none())
        .filter(|c| c.cache.apply_remote(msg))
        .count()
}

/// The cache of `instance` with `opts`: the live one when a previous configuration built it
/// with the same options (a reload keeps the stored responses), else a new one.
fn slot(instance: &str, opts: CacheOptions, clock: Arc<dyn gw_core::Clock>) -> Result<Arc<CacheSlot>, String> {
    let id = format!("{instance}|{opts:?}");
    let mut m = registry().lock().map_err(|_| "cache registry poisoned".to_string())?;
    m.retain(|_, w| w.strong_count() > 0);
    if let Some(s) = m.get(&id).and_then(Weak::upgrade) {
        return Ok(s);
    }
    let cache = Cache::new(opts, clock).map_err(|e| e.to_string())?;
    let name = instance.to_string();
    cache.set_relay(Arc::new(move |msg: &str| {
        let p = peers().read().ok().and_then(|g| g.clone());
        p.map(|p| p(&name, msg))
    }));
    let s = Arc::new(CacheSlot { instance: instance.to_string(), cache });
    m.insert(id, Arc::downgrade(&s));
    Ok(s)
}

/// The built plugin.
pub(crate) struct ProxyCache {
    slot: Arc<CacheSlot>,
    metrics: Arc<Metrics>,
    purge_method: bool,
    /// Counter handles per route and status (looked up once each).
    counters: std::sync::RwLock<HashMap<(Arc<str>, &'static str), CacheCounter>>,
    /// When the memory tier's figures were last copied to the metrics (ms).
    stats_at: AtomicU64,
}

impl ProxyCache {
    pub(crate) fn new(c: &Conf, env: &crate::BuildEnv<'_>, instance: &str) -> Result<Self, String> {
        let gateway_redis = env.config.gateway.redis.as_ref().and_then(|r| r.urls.first()).map(|u| u.expose());
        let ca_pem = match env.config.gateway.redis.as_ref().and_then(|r| r.ca_file.as_ref()) {
            Some(p) if c.redis.as_ref().is_some_and(|r| r.url.is_none()) => {
                Some(std::fs::read(p).map_err(|e| format!("gateway.redis.ca_file {}: {e}", p.display()))?)
            }
            _ => None,
        };
        let opts = CacheOptions::from_schema(c, gateway_redis, ca_pem).map_err(|e| e.to_string())?;
        let purge_method = opts.purge_method;
        let slot = slot(instance, opts, env.clock.clone())?;
        Ok(ProxyCache {
            slot,
            metrics: env.metrics.clone(),
            purge_method,
            counters: std::sync::RwLock::new(HashMap::new()),
            stats_at: AtomicU64::new(0),
        })
    }

    fn cache(&self) -> &Cache {
        &self.slot.cache
    }
}

/// What the cache did for a request, and what it still has to do (kept in `Ctx::vars`).
#[derive(Clone, Default)]
struct Var(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    /// The status field to add to the upstream's response.
    header: Option<Field>,
    /// The fill of a miss or revalidation.
    fill: Option<Fill>,
    /// The fill is a revalidation (the request as sent is kept for a refetch).
    revalidating: bool,
    /// `stale-while-revalidate`: the stale answer and the background refresh.
    stale: Option<(Hit, Fill)>,
    /// The upstream request as sent (a revalidation's, for a refetch).
    sent: Option<RequestHead>,
    /// An unsafe request to invalidate after: method, scheme, host, target.
    unsafe_req: Option<(Method, &'static str, String, String)>,
}

impl Var {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// New per-request state, kept in the context (only requests that go on need it).
fn keep(cx: &mut Ctx) -> Var {
    let v = Var::default();
    cx.vars.insert(v.clone());
    v
}

fn var(cx: &Ctx) -> Option<Var> {
    cx.vars.get::<Var>().cloned()
}

/// Milliseconds on a monotonic clock (from 1000 at the first call).
fn mono_ms() -> u64 {
    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    let base = *BASE.get_or_init(gw_core::tick::now);
    1000 + u64::try_from(gw_core::tick::now().saturating_duration_since(base).as_millis()).unwrap_or(u64::MAX - 1000)
}

fn scheme(cx: &Ctx) -> &'static str {
    if cx.tls { "https" } else { "http" }
}

fn target(req: &RequestHead) -> String {
    req.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string()
}

/// A stored (or shared) response as a reply: one chunk is sent whole, more stream.
fn hit_reply(hit: Hit) -> Reply {
    let Hit { status, headers, body, .. } = hit;
    Reply::stream(status, headers, chunks_body(body))
}

fn chunks_body(mut chunks: Vec<Bytes>) -> Body {
    match chunks.len() {
        0 => Body::empty(),
        1 => Body::full(chunks.pop().unwrap_or_default()),
        _ => Body::from_source(Chunks(chunks.into_iter())),
    }
}

/// Stored chunks, one frame each.
struct Chunks(std::vec::IntoIter<Bytes>);

impl FrameSource for Chunks {
    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame>>> {
        Poll::Ready(self.0.next().map(|b| Ok(Frame::Data(b))))
    }

    fn is_end(&self) -> bool {
        self.0.len() == 0
    }
}

type Next = Pin<Box<dyn Future<Output = (Option<std::result::Result<Bytes, gw_cache::Aborted>>, SharedBody)> + Send>>;

/// A response another request is fetching, frame by frame as it arrives.
struct Shared {
    body: Option<SharedBody>,
    next: Option<Next>,
    done: bool,
}

impl FrameSource for Shared {
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.next.is_none() {
            let Some(mut b) = this.body.take() else { return Poll::Ready(None) };
            this.next = Some(Box::pin(async move {
                let r = b.next().await;
                (r, b)
            }));
        }
        let Some(fut) = this.next.as_mut() else { return Poll::Ready(None) };
        let (r, b) = std::task::ready!(fut.as_mut().poll(cx));
        this.next = None;
        this.body = Some(b);
        Poll::Ready(match r {
            Some(Ok(c)) => Some(Ok(Frame::Data(c))),
            Some(Err(e)) => {
                this.done = true;
                Some(Err(
                    Error::new(ErrorKind::UpstreamProtocol, "the shared response was aborted upstream").with_cause(e)
                ))
            }
            None => {
                this.done = true;
                None
            }
        })
    }
}

/// Records the body into the fill as it passes (the body is handed on unchanged).
struct Record {
    fill: Option<Fill>,
}

impl BodyFilter for Record {
    fn data(&mut self, data: Bytes, out: &mut Emit) -> Result<()> {
        if let Some(f) = &mut self.fill {
            f.data(&data);
        }
        out.data(data);
        Ok(())
    }

    fn end(&mut self, _out: &mut Emit) -> Result<()> {
        if let Some(f) = self.fill.take() {
            // The Redis write (if any) runs on its own.
            drop(f.finish());
        }
        Ok(())
    }

    fn keeps_length(&self) -> bool {
        true
    }

    fn reads_rest(&self) -> bool {
        // The client left: the fill goes on without it while it stores or others stream it.
        self.fill.as_ref().is_some_and(Fill::wants_rest)
    }
}

/// Read an upstream body into a fill (a background refresh: nobody is waiting for it but
/// the coalesced requests).
async fn drain_into(mut fill: Fill, mut body: Body) {
    while let Some(f) = body.frame().await {
        match f {
            Ok(Frame::Data(d)) => fill.data(&d),
            Ok(Frame::Trailers(_)) => break,
            Err(_) => {
                fill.abort();
                return;
            }
        }
    }
    drop(fill.finish());
}

/// The background revalidation of `stale-while-revalidate`: the request as it would have
/// been sent, through the gateway's client.
async fn refresh(up: gw_core::Upstreams, route: Arc<str>, mut head: RequestHead, mut fill: Fill) {
    for _ in 0..2 {
        fill.prepare_request(&mut head.headers);
        let ex = match up.resend(&route, head.clone(), Body::empty()).await {
            Ok(ex) => ex,
            Err(e) => {
                tracing::debug!(route = %route, error = %e, "proxy-cache: background revalidation failed");
                drop(fill.upstream_failed());
                return;
            }
        };
        match fill.head(ex.head.status, &ex.head.headers) {
            Upstream::Forward { storing: true, .. } => return drain_into(fill, ex.body).await,
            Upstream::Forward { .. } | Upstream::Replace(_) => return,
            Upstream::Refetch => {}
        }
    }
}

impl ProxyCache {
    /// The status label (access log, metrics).
    fn set_status(cx: &mut Ctx, s: CacheStatus) {
        cx.vars.insert(gw_core::CacheResult(s.as_str()));
    }

    async fn purge_request(&self, req: &RequestHead, cx: &Ctx) -> Reply {
        let url = format!("{}://{}{}", scheme(cx), cx.host, target(req));
        match self.cache().purge_url(&url).await {
            Ok(r) => {
                let mut body = serde_json::json!({ "purged": url });
                if let Some(e) = r.redis_error {
                    body["redis_error"] = e.into();
                }
                Reply::json(StatusCode::OK, &body)
            }
            Err(e) => Reply::error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
        }
    }

    /// Answer from `Lookup::Wait`: the shared response, or go upstream.
    async fn wait(&self, w: gw_cache::Waiter, cx: &mut Ctx) -> Option<Reply> {
        match w.wait().await {
            gw_cache::WaitOutcome::Stream { status, headers, body } => {
                Self::set_status(cx, CacheStatus::Hit);
                let body = match body {
                    None => Body::empty(),
                    Some(b) => Body::from_source(Shared { body: Some(b), next: None, done: false }),
                };
                Some(Reply::stream(status, headers, body))
            }
            gw_cache::WaitOutcome::GoUpstream { header } => {
                Self::set_status(cx, CacheStatus::Miss);
                keep(cx).lock().header = header;
                None
            }
        }
    }

    /// A refetch after a 304 that did not match the stored response: the request as sent,
    /// again, without validators.
    async fn refetch(&self, v: &Var, cx: &mut Ctx) -> Result<Flow> {
        let (sent, fill) = {
            let mut s = v.lock();
            (s.sent.take(), s.fill.take())
        };
        let (Some(mut head), Some(mut fill), Some(up), Some(route)) =
            (sent, fill, cx.upstreams.clone(), cx.route.as_ref().map(|r| r.name.clone()))
        else {
            return Err(Error::new(ErrorKind::Internal, "proxy-cache: refetch without the request"));
        };
        fill.prepare_request(&mut head.headers);
        let ex = match up.resend(&route, head, Body::empty()).await {
            Ok(ex) => ex,
            Err(e) => {
                drop(fill.upstream_failed());
                return Err(e);
            }
        };
        let mut headers = ex.head.headers;
        match fill.head(ex.head.status, &headers) {
            Upstream::Forward { header, storing, .. } => {
                if let Some((n, val)) = header {
                    headers.insert(n, val);
                }
                let body =
                    if storing { ex.body.filtered(vec![Box::new(Record { fill: Some(fill) })]) } else { ex.body };
                Ok(Flow::Respond(Reply::stream(ex.head.status, headers, body)))
            }
            Upstream::Replace(hit) => Ok(Flow::Respond(hit_reply(hit))),
            Upstream::Refetch => Err(Error::new(ErrorKind::UpstreamProtocol, "proxy-cache: 304 twice on a refetch")),
        }
    }
}

#[gw_core::plugin]
impl Plugin for ProxyCache {
    fn name(&self) -> &'static str {
        "proxy-cache"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    async fn access(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        if self.purge_method && req.method.as_str() == "PURGE" {
            return Ok(Flow::Respond(self.purge_request(req, cx).await));
        }
        if gw_cache::invalidate::is_unsafe(&req.method) {
            keep(cx).lock().unsafe_req = Some((req.method.clone(), scheme(cx), cx.host.clone(), target(req)));
            return Ok(Flow::Continue);
        }
        let pq = target(req);
        let lookup = {
            let creq = CacheRequest {
                method: &req.method,
                scheme: scheme(cx),
                host: &cx.host,
                path_and_query: &pq,
                headers: &req.headers,
                consumer: cx.consumer.as_ref().map(|c| c.username.as_str()),
            };
            self.cache().lookup(&creq).await
        };
        match lookup {
            Lookup::Hit(hit) => {
                Self::set_status(cx, hit.cache_status);
                Ok(Flow::Respond(hit_reply(hit)))
            }
            Lookup::Stale { hit, refresh: None } => {
                Self::set_status(cx, CacheStatus::Stale);
                Ok(Flow::Respond(hit_reply(hit)))
            }
            Lookup::Stale { hit, refresh: Some(f) } => {
                // Answered in the upstream-request phase, where the request as it would be
                // sent is known (the background refresh sends it).
                Self::set_status(cx, CacheStatus::Stale);
                keep(cx).lock().stale = Some((hit, f));
                Ok(Flow::Continue)
            }
            Lookup::GatewayTimeout { header } => {
                Self::set_status(cx, CacheStatus::Miss);
                let mut r = Reply::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "not_cached",
                    "only-if-cached: no stored response can be used",
                );
                if let Some((n, val)) = header {
                    r.headers.insert(n, val);
                }
                Ok(Flow::Respond(r))
            }
            Lookup::Miss(f) => {
                Self::set_status(cx, CacheStatus::Miss);
                keep(cx).lock().fill = Some(f);
                Ok(Flow::Continue)
            }
            Lookup::Revalidate(f) => {
                Self::set_status(cx, CacheStatus::Expired);
                let v = keep(cx);
                let mut s = v.lock();
                s.fill = Some(f);
                s.revalidating = true;
                Ok(Flow::Continue)
            }
            Lookup::Wait(w) => match self.wait(w, cx).await {
                Some(r) => Ok(Flow::Respond(r)),
                None => Ok(Flow::Continue),
            },
            Lookup::Forward { cache_status, header } => {
                Self::set_status(cx, cache_status);
                keep(cx).lock().header = header;
                Ok(Flow::Continue)
            }
        }
    }

    async fn upstream_request(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let Some(v) = var(cx) else { return Ok(Flow::Continue) };
        let stale = v.lock().stale.take();
        if let Some((hit, fill)) = stale {
            match (cx.upstreams.clone(), cx.route.as_ref().map(|r| r.name.clone())) {
                (Some(up), Some(route)) => {
                    tokio::spawn(refresh(up, route, req.clone(), fill));
                }
                _ => drop(fill),
            }
            return Ok(Flow::Respond(hit_reply(hit)));
        }
        let mut s = v.lock();
        if let Some(f) = &s.fill {
            f.prepare_request(&mut req.headers);
            if s.revalidating {
                s.sent = Some(req.clone());
            }
        }
        Ok(Flow::Continue)
    }

    async fn upstream_response(&self, resp: &mut ResponseHead, cx: &mut Ctx) -> Result<Flow> {
        let Some(v) = var(cx) else { return Ok(Flow::Continue) };
        let unsafe_req = v.lock().unsafe_req.take();
        if let Some((method, scheme, host, pq)) = unsafe_req {
            let creq = CacheRequest {
                method: &method,
                scheme,
                host: &host,
                path_and_query: &pq,
                headers: &HeaderMap::new(),
                consumer: None,
            };
            self.cache().invalidate_after(&creq, resp.status, &resp.headers).await;
            return Ok(Flow::Continue);
        }
        let fill = v.lock().fill.take();
        let Some(mut fill) = fill else {
            if let Some((n, val)) = v.lock().header.take() {
                resp.headers.insert(n, val);
            }
            return Ok(Flow::Continue);
        };
        match fill.head(resp.status, &resp.headers) {
            Upstream::Forward { cache_status, header, storing } => {
                Self::set_status(cx, cache_status);
                if let Some((n, val)) = header {
                    resp.headers.insert(n, val);
                }
                if storing {
                    let bodiless = resp.status == StatusCode::NO_CONTENT
                        || resp.status == StatusCode::NOT_MODIFIED
                        || resp.headers.get(http::header::CONTENT_LENGTH).is_some_and(|l| l == "0");
                    if bodiless {
                        drop(fill.finish());
                    } else {
                        v.lock().fill = Some(fill);
                    }
                }
                Ok(Flow::Continue)
            }
            Upstream::Replace(hit) => {
                Self::set_status(cx, hit.cache_status);
                Ok(Flow::Respond(hit_reply(hit)))
            }
            Upstream::Refetch => {
                v.lock().fill = Some(fill);
                self.refetch(&v, cx).await
            }
        }
    }

    fn response_filter(&self, _resp: &mut ResponseHead, cx: &mut Ctx) -> Option<Box<dyn BodyFilter>> {
        let fill = var(cx)?.lock().fill.take()?;
        Some(Box::new(Record { fill: Some(fill) }))
    }

    fn upstream_failed(&self, _err: &Error, cx: &mut Ctx) -> Option<Reply> {
        let v = var(cx)?;
        let fill = v.lock().fill.take()?;
        let hit = fill.upstream_failed()?;
        Self::set_status(cx, CacheStatus::Stale);
        Some(hit_reply(hit))
    }

    fn log(&self, cx: &Ctx, _entry: &LogEntry<'_>) {
        let Some(status) = cx.vars.get::<gw_core::CacheResult>().map(|s| s.0) else { return };
        let Some(route) = cx.route.as_ref().map(|r| r.name.clone()) else { return };
        let key = (route, status);
        let found = self.counters.read().ok().and_then(|m| m.get(&key).cloned());
        let counter = match found {
            Some(c) => c,
            None => {
                let c = self.metrics.cache_counter(&key.0, status);
                if let Ok(mut m) = self.counters.write() {
                    m.insert(key, c.clone());
                }
                c
            }
        };
        counter.inc();
        // The memory tier's figures, at most once a second.
        let now = mono_ms();
        let last = self.stats_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self.stats_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let st = self.cache().stats();
            self.metrics.cache_stats(&self.slot.instance, st.bytes, st.entries, st.evictions);
        }
    }
}
