//! The web dashboard, served by the Admin API listener under `/dashboard/`: live request rates,
//! error rates and latency percentiles per route and service, upstream targets with their
//! health and circuit state, top consumers and their quota use, refusals, recent errors, and
//! the running configuration (secrets redacted as the entity endpoints redact them).
//!
//! - The page and its script and style sheet (embedded in the binary; no CDN, no inline
//!   script, a strict Content-Security-Policy) are public: they hold no data.
//! - The data needs an admin token (`Authorization: Bearer`, read-only tokens are enough), the
//!   same check as every Admin API endpoint. The page keeps the token in `sessionStorage` and
//!   sends it as a header, also for the live stream: `/dashboard/api/stream` is
//!   `text/event-stream` read with `fetch` (an `EventSource` cannot send headers), so the token
//!   never appears in a URL or a log line.
//! - The usage panel (`/dashboard/api/usage?period=hour|day|month`) reads the usage store
//!   through the same report as the Admin API's `GET /usage` ([`usage`]): in a cluster, every
//!   node's figures. Each update carries a stamp of the store's figures; the page reads the
//!   panel again when the stamp changes.
//! - Numbers come from the gateway's Prometheus registry, read once per second while someone
//!   watches ([`sample`]); nothing is added on the request path.

pub mod recent;
mod sample;
mod usage;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};

use crate::api::AdminState;
use crate::doc::{self, Kind};
use sample::{Reading, RouteReading};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// Live streams served at once by one listener; more are refused with 503.
const MAX_STREAMS: usize = 32;
/// Readings stop this long after the last dashboard request.
const IDLE_AFTER: Duration = Duration::from_secs(30);
/// Recent errors sent with each update.
const ERRORS_SHOWN: usize = 50;
/// Consumers shown.
const TOP_CONSUMERS: usize = 10;

/// Content-Security-Policy of every dashboard answer: scripts, styles and connections to this
/// origin only; no inline code, no frames, no form submission.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Paths served without a token (the page and its assets: no data).
pub(crate) fn is_public(path: &str) -> bool {
    matches!(path, "/dashboard" | "/dashboard/" | "/dashboard/app.js" | "/dashboard/app.css" | "/dashboard/favicon.svg")
}

/// The dashboard's routes (authentication is the Admin API's middleware).
pub(crate) fn router(state: &Arc<AdminState>) -> Router<Arc<AdminState>> {
    let dash = Arc::new(Dash::new(state));
    Router::new()
        .route("/dashboard", get(|| async { Redirect::permanent("/dashboard/") }))
        .route("/dashboard/", get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/dashboard/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/dashboard/app.css", get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }))
        .route("/dashboard/favicon.svg", get(|| async { asset(FAVICON_SVG, "image/svg+xml") }))
        .route("/dashboard/api/snapshot", get(snapshot))
        .route("/dashboard/api/stream", get(stream))
        .route("/dashboard/api/config", get(config))
        .route("/dashboard/api/usage", get(usage_panel))
        .layer(Extension(dash))
        .layer(middleware::from_fn(security_headers))
}

fn asset(body: &'static str, ctype: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/dashboard/api/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// The dashboard's state on one listener.
struct Dash {
    gw: gw_proxy::Gateway,
    state: Weak<AdminState>,
    readings: Mutex<VecDeque<Arc<Reading>>>,
    /// The latest update, as sent on the stream.
    latest: tokio::sync::watch::Sender<Arc<str>>,
    /// When a dashboard request last came, in milliseconds since `epoch`.
    last_view: AtomicU64,
    epoch: Instant,
    sampler: AtomicBool,
    streams: AtomicUsize,
    /// Requests per consumer and UTC day (days since the epoch) over the last 35 days, from the
    /// usage store (all outcomes but refused ones), refreshed by the sampler.
    usage_days: Mutex<Vec<(String, u32, u64)>>,
    /// Requests of every outcome in the usage store over the same 35 days: changes when the
    /// usage panel has new figures.
    usage_stamp: AtomicU64,
}

impl Dash {
    fn new(state: &Arc<AdminState>) -> Dash {
        Dash {
            gw: state.gw.clone(),
            state: Arc::downgrade(state),
            readings: Mutex::new(VecDeque::with_capacity(sample::KEEP)),
            latest: tokio::sync::watch::channel(Arc::from("")).0,
            last_view: AtomicU64::new(0),
            epoch: Instant::now(),
            sampler: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
            usage_days: Mutex::new(Vec::new()),
            usage_stamp: AtomicU64::new(0),
        }
    }

    /// Someone is watching: (re)start the readings.
    fn viewed(self: &Arc<Self>) {
        self.last_view.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        if !self.sampler.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(self);
            tokio::spawn(sampler(weak));
        }
    }

    fn idle(&self) -> bool {
        let last = Duration::from_millis(self.last_view.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last) > IDLE_AFTER && self.streams.load(Ordering::Relaxed) == 0
    }

    /// Take a reading of the registry and compute the update.
    fn tick(&self, state: &AdminState) -> Arc<str> {
        let text = self.gw.metrics().encode();
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let reading = Arc::new(sample::read(&text, Instant::now(), unix_ms));
        let readings: Vec<Arc<Reading>> = {
            let mut q = self.readings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if q.len() == sample::KEEP {
                q.pop_front();
            }
            q.push_back(reading);
            q.iter().cloned().collect()
        };
        let usage_days = self.usage_days.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut view = view(&self.gw, state, &readings, &usage_days);
        if let Some(v) = view.as_object_mut() {
            v.insert("usage_stamp".into(), json!(self.usage_stamp.load(Ordering::Relaxed)));
        }
        let view: Arc<str> = Arc::from(view.to_string());
        self.latest.send_replace(view.clone());
        view
    }
}

impl Dash {
    /// The latest update if it is recent (the sampler runs), else one taken now.
    fn current(&self, state: &AdminState) -> Arc<str> {
        let fresh = self
            .readings
            .lock()
            .ok()
            .and_then(|q| q.back().map(|r| r.at.elapsed() < Duration::from_millis(1500)))
            .unwrap_or(false);
        let latest = self.latest.borrow().clone();
        if fresh && !latest.is_empty() { latest } else { self.tick(state) }
    }
}

/// Once per second while someone watches; stops when the listener is gone.
async fn sampler(dash: Weak<Dash>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(d) = dash.upgrade() else { return };
        let Some(state) = d.state.upgrade() else { return };
        if d.idle() {
            // Rates across a gap would be averages over the gap: start afresh.
            d.readings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
            d.sampler.store(false, Ordering::Release);
            return;
        }
        d.refresh_usage().await;
        d.tick(&state);
    }
}

impl Dash {
    /// Reads the usage of the last 35 days per consumer and day from the usage store (the
    /// report writes this node's pending counts first, so the figures are the cluster's).
    async fn refresh_usage(&self) {
        let now = self.gw.now_ms();
        let from = (now / 86_400_000).saturating_sub(35) * 86_400_000;
        let filter = gw_observability::UsageFilter::default();
        let Ok(records) = self.gw.usage_report(gw_observability::Granularity::Day, from, now + 1, &filter).await else {
            return;
        };
        self.usage_stamp.store(records.iter().map(|r| r.requests).sum(), Ordering::Relaxed);
        let rows: Vec<(String, u32, u64)> = records
            .into_iter()
            .filter(|r| r.outcome != gw_observability::Outcome::Refused)
            .map(|r| (r.consumer, days_since_epoch(r.start_ms), r.requests))
            .collect();
        *self.usage_days.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = rows;
    }
}

fn json_response(body: &str) -> Response {
    let mut r = body.to_owned().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `GET /dashboard/api/snapshot`: the latest update (taken now if none is recent).
async fn snapshot(State(s): State<Arc<AdminState>>, Extension(d): Extension<Arc<Dash>>) -> Response {
    d.viewed();
    json_response(&d.current(&s))
}

/// Decrements the stream count when a stream ends.
struct StreamSlot(Arc<Dash>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /dashboard/api/stream`: `text/event-stream`, one `update` event per second. The stream
/// ends when the token that opened it is no longer configured.
async fn stream(State(s): State<Arc<AdminState>>, Extension(d): Extension<Arc<Dash>>, req: Request) -> Response {
    if d.streams.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
        d.streams.fetch_sub(1, Ordering::AcqRel);
        let body = json!({"error": "overloaded", "message": "too many dashboard streams"});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let slot = StreamSlot(d.clone());
    d.viewed();
    let digest = token_digest(&req);
    let mut rx = d.latest.subscribe();
    let first = d.current(&s);
    rx.mark_unchanged();
    let state = Arc::downgrade(&s);
    let st = (slot, rx, state, digest, Some(first));
    let events = futures_util::stream::unfold(st, |(slot, mut rx, state, digest, first)| async move {
        let data = match first {
            Some(f) => f,
            None => {
                rx.changed().await.ok()?;
                rx.borrow_and_update().clone()
            }
        };
        let state_now = state.upgrade()?;
        if !token_still_valid(&state_now, digest.as_ref()) {
            return None;
        }
        drop(state_now);
        slot.0.viewed();
        let ev = Event::default().event("update").data(&*data);
        Some((Ok::<_, std::convert::Infallible>(ev), (slot, rx, state, digest, None)))
    });
    let mut r = Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response();
    // Proxies must not buffer the stream.
    r.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

fn token_digest(req: &Request) -> Option<[u8; 32]> {
    use sha2::Digest;
    let t = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))?
        .trim();
    Some(sha2::Sha256::digest(t.as_bytes()).into())
}

fn token_still_valid(s: &AdminState, digest: Option<&[u8; 32]>) -> bool {
    let Some(d) = digest else { return false };
    let cur = s.snapshot();
    cur.tokens.iter().any(|(h, _)| bool::from(subtle::ConstantTimeEq::ct_eq(&h[..], &d[..])))
}

/// `GET /dashboard/api/config`: every entity of the running configuration, secrets removed as
/// the entity endpoints remove them.
async fn config(State(s): State<Arc<AdminState>>, Extension(d): Extension<Arc<Dash>>) -> Response {
    d.viewed();
    let cur = s.snapshot();
    let mut kinds = serde_json::Map::new();
    for kind in Kind::ALL {
        let list: Vec<Value> = cur.doc.entities(kind).map(|e| doc::redact(kind, e.clone())).collect();
        kinds.insert(kind.key().to_string(), Value::Array(list));
    }
    json_response(&json!({ "version": cur.version, "hash": cur.hash, "entities": kinds }).to_string())
}

#[derive(serde::Deserialize)]
struct UsageQuery {
    period: Option<String>,
    consumer: Option<String>,
}

/// `GET /dashboard/api/usage?period=hour|day|month` (default `hour`), optionally
/// `&consumer=<name>` (one consumer's usage; `-` for requests without one): the usage panel,
/// from the usage store (see [`usage`]).
async fn usage_panel(
    State(s): State<Arc<AdminState>>,
    Extension(d): Extension<Arc<Dash>>,
    q: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, crate::api::ApiError> {
    d.viewed();
    let invalid = |m: String| crate::api::ApiError::new(StatusCode::BAD_REQUEST, "invalid", m);
    let axum::extract::Query(q) = q.map_err(|e| invalid(e.to_string()))?;
    let period = usage::Period::parse(q.period.as_deref().unwrap_or("hour"))
        .ok_or_else(|| invalid("period: hour, day or month".into()))?;
    let now = s.gw.now_ms();
    let (from, to) = period.range(now);
    let consumer = q.consumer.filter(|c| !c.is_empty());
    let filter = gw_observability::UsageFilter { consumer: consumer.clone(), ..Default::default() };
    let records =
        s.gw.usage_report(period.granularity(), from, to, &filter)
            .await
            .map_err(|e| crate::api::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e))?;
    let panel = usage::panel(period, now, &records, s.gw.usage_store_kind(), consumer.as_deref());
    Ok(json_response(&panel.to_string()))
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

fn rates_json(
    old: Option<&RouteReading>,
    new: &RouteReading,
    secs: f64,
    lat_old: Option<&RouteReading>,
    lat_secs: f64,
) -> Value {
    let r = sample::rates(old, new, secs);
    let p = |q| {
        if lat_secs > 0.0 { sample::quantile_ms(lat_old, new, q).map(|v| round(v, 2)) } else { None }
    };
    json!({
        "rps": round(r.rps, 2),
        "error_rate": r.error_rate.map(|e| round(e, 4)),
        "requests": r.total,
        "p50_ms": p(0.5),
        "p99_ms": p(0.99),
    })
}

fn days_since_epoch(unix_ms: u64) -> u32 {
    (unix_ms / 86_400_000) as u32
}

/// The first day (days since the epoch) of the quota period containing `today`, or `None` for
/// hourly quotas (usage is counted per day).
fn period_start(period: &str, today: u32) -> Option<u32> {
    match period {
        "day" => Some(today),
        "week" => {
            // 1970-01-01 was a Thursday: Monday is day 4 of the week cycle.
            Some(today - (today + 3) % 7)
        }
        "hour" => None,
        _ => {
            let (y, m, _) = gw_core::calendar::civil_from_days(i64::from(today));
            u32::try_from(gw_core::calendar::days_from_civil(y, m, 1)).ok()
        }
    }
}

/// Consumers with the most requests today, with their request rate and quota use.
fn consumers_json(
    gw: &gw_proxy::Gateway,
    usage_days: &[(String, u32, u64)],
    cur: &crate::api::Current,
    readings: &[&Reading],
    secs: f64,
) -> Value {
    let today = days_since_epoch(gw.now_ms());
    // Quota plugins that apply to every route (global or scoped to a consumer).
    let quotas: Vec<&Value> = cur
        .doc
        .entities(Kind::Plugins)
        .filter(|p| p.get("plugin").and_then(Value::as_str) == Some("quota"))
        .filter(|p| p.get("enabled").and_then(Value::as_bool) != Some(false))
        .filter(|p| p.get("route").is_none() && p.get("service").is_none())
        .collect();
    let earliest = quotas
        .iter()
        .filter_map(|q| period_start(q.pointer("/config/period").and_then(Value::as_str).unwrap_or("month"), today))
        .min()
        .unwrap_or(today)
        .min(today);
    let mut by_day: HashMap<String, Vec<(u32, u64)>> = HashMap::new();
    for (consumer, day, requests) in usage_days {
        if (earliest..=today).contains(day) {
            by_day.entry(consumer.clone()).or_default().push((*day, *requests));
        }
    }
    let groups: HashMap<&str, Vec<&str>> = cur
        .doc
        .entities(Kind::Consumers)
        .filter_map(|c| {
            let name = c.get("username")?.as_str()?;
            let g = c
                .get("groups")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            Some((name, g))
        })
        .collect();
    let (newest, base) = match (readings.last(), sample::base(readings, secs)) {
        (Some(n), Some(b)) => (Some(*n), readings.get(b).copied()),
        (n, _) => (n.copied(), None),
    };
    let dt = match (newest, base) {
        (Some(n), Some(b)) => n.at.duration_since(b.at).as_secs_f64(),
        _ => 0.0,
    };
    let mut rows: Vec<(String, u64, Value)> = by_day
        .iter()
        .map(|(consumer, days)| {
            let today_n: u64 = days.iter().filter(|(d, _)| *d == today).map(|(_, n)| n).sum();
            let rps = match (newest, base) {
                (Some(n), Some(b)) if dt > 0.0 => {
                    let now = n.consumers.get(consumer).copied().unwrap_or(0);
                    let then = b.consumers.get(consumer).copied().unwrap_or(0);
                    round(now.saturating_sub(then) as f64 / dt, 2)
                }
                _ => 0.0,
            };
            let quota =
                quota_of(&quotas, consumer, groups.get(consumer.as_str()).map_or(&[][..], Vec::as_slice), today, days);
            (
                consumer.clone(),
                today_n,
                json!({ "consumer": consumer, "requests_today": today_n, "rps": rps, "quota": quota }),
            )
        })
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Value::Array(rows.into_iter().take(TOP_CONSUMERS).map(|r| r.2).collect())
}

/// The quota that applies to `consumer` (a plugin scoped to it, else a global one) and its use
/// in the current period (from the usage counts, which are per day: none for hourly quotas).
fn quota_of(quotas: &[&Value], consumer: &str, groups: &[&str], today: u32, days: &[(u32, u64)]) -> Value {
    let own = quotas.iter().find(|q| q.get("consumer").and_then(Value::as_str) == Some(consumer));
    let Some(q) = own.or_else(|| quotas.iter().find(|q| q.get("consumer").is_none())) else { return Value::Null };
    let c = q.get("config").cloned().unwrap_or(Value::Null);
    let period = c.get("period").and_then(Value::as_str).unwrap_or("month").to_string();
    let plan = groups.iter().filter_map(|g| c.pointer(&format!("/plans/{g}")).and_then(Value::as_u64)).max();
    let limit = plan.or_else(|| c.get("limit").and_then(Value::as_u64));
    let used: Option<u64> =
        period_start(&period, today).map(|from| days.iter().filter(|(d, _)| *d >= from).map(|(_, n)| n).sum());
    json!({
        "plugin": q.get("name").cloned().unwrap_or(Value::Null),
        "period": period,
        "limit": limit,
        "used": used,
        "share": match (used, limit) { (Some(u), Some(l)) if l > 0 => Some(round(u as f64 / l as f64, 4)), _ => None },
    })
}

#[cfg(test)]
fn parse_day(v: &str) -> Option<u32> {
    let mut it = v.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    u32::try_from(gw_core::calendar::days_from_civil(y, m, d)).ok()
}

/// The update sent to the page.
fn view(
    gw: &gw_proxy::Gateway,
    state: &AdminState,
    readings: &[Arc<Reading>],
    usage_days: &[(String, u32, u64)],
) -> Value {
    let readings: Vec<&Reading> = readings.iter().map(AsRef::as_ref).collect();
    let Some(newest) = readings.last().copied() else { return Value::Null };
    let rb = sample::base(&readings, sample::RATE_WINDOW).and_then(|i| readings.get(i).copied());
    let lb = sample::base(&readings, sample::LATENCY_WINDOW).and_then(|i| readings.get(i).copied());
    let secs = |b: Option<&Reading>| b.map_or(0.0, |b| newest.at.duration_since(b.at).as_secs_f64());
    let (rs, ls) = (secs(rb), secs(lb));

    // Routes.
    let routes: Vec<Value> = newest
        .routes
        .iter()
        .map(|((route, service), n)| {
            let mut v = rates_json(
                rb.and_then(|b| b.routes.get(&(route.clone(), service.clone()))),
                n,
                rs,
                lb.and_then(|b| b.routes.get(&(route.clone(), service.clone()))),
                ls,
            );
            v["route"] = json!(route);
            v["service"] = json!(service);
            v
        })
        .collect();

    // Services and the whole gateway: sums of routes.
    let by_service = |r: &Reading| -> BTreeMap<String, RouteReading> {
        let mut m: BTreeMap<String, Vec<&RouteReading>> = BTreeMap::new();
        for ((_, svc), rr) in &r.routes {
            m.entry(svc.clone()).or_default().push(rr);
        }
        m.into_iter().map(|(k, v)| (k, sample::sum(v.into_iter()))).collect()
    };
    let (sn, sr, sl) = (by_service(newest), rb.map(by_service), lb.map(by_service));
    let services: Vec<Value> = sn
        .iter()
        .map(|(svc, n)| {
            let mut v =
                rates_json(sr.as_ref().and_then(|m| m.get(svc)), n, rs, sl.as_ref().and_then(|m| m.get(svc)), ls);
            v["service"] = json!(svc);
            v
        })
        .collect();
    let mut totals = rates_json(rb.map(|r| &r.all), &newest.all, rs, lb.map(|r| &r.all), ls);
    totals["connections"] = json!(newest.connections);

    // A minute of history, one point per reading.
    let history: Vec<Value> = readings
        .windows(2)
        .map(|w| {
            let (a, b) = (&w[0].all, &w[1].all);
            let dt = w[1].at.duration_since(w[0].at).as_secs_f64().max(0.001);
            let r = sample::rates(Some(a), b, dt);
            let errors = b.by_class[4].saturating_sub(a.by_class[4]);
            json!({ "t": w[1].unix_ms, "rps": round(r.rps, 2), "errors_per_s": round(errors as f64 / dt, 2) })
        })
        .collect();

    // Refusals and gateway errors.
    let counter = |now: u64, then: Option<u64>| json!({ "total": now, "rate": if rs > 0.0 { round(now.saturating_sub(then.unwrap_or(0)) as f64 / rs, 2) } else { 0.0 } });
    let event = |name: &str| {
        counter(
            newest.plugin_events.get(name).copied().unwrap_or(0),
            rb.map(|b| b.plugin_events.get(name).copied().unwrap_or(0)),
        )
    };
    let by_code: Vec<Value> = newest
        .errors
        .iter()
        .map(|(code, n)| {
            let mut v = counter(*n, rb.map(|b| b.errors.get(code).copied().unwrap_or(0)));
            v["code"] = json!(code);
            v
        })
        .collect();
    let refusals = json!({
        "rate_limited": event("rate_limiting_rejected"),
        "quota_exceeded": event("quota_exceeded"),
        "auth": counter(newest.auth_refusals, rb.map(|b| b.auth_refusals)),
        // Authenticated but not allowed (acl, and other plugins answering 403).
        "forbidden": counter(newest.authz_refusals, rb.map(|b| b.authz_refusals)),
        "no_route": counter(newest.no_route, rb.map(|b| b.no_route)),
        "errors_by_code": by_code,
    });

    // Upstreams.
    let upstreams: Vec<Value> = gw
        .upstream_status()
        .into_iter()
        .map(|u| {
            let targets: Vec<Value> = u
                .targets
                .iter()
                .map(|t| json!({ "address": t.address, "healthy": t.healthy, "ejected_for_ms": t.ejected_for_ms, "in_flight": t.in_flight }))
                .collect();
            json!({ "name": u.name, "circuit": u.circuit, "targets": targets })
        })
        .collect();

    let cur = state.snapshot();
    let consumers = consumers_json(gw, usage_days, &cur, &readings, sample::RATE_WINDOW);
    let errors = recent::recent_errors().latest(ERRORS_SHOWN);
    json!({
        "time": gw_observability::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(newest.unix_ms)),
        "node_id": state.node_id,
        "gateway_version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": gw.uptime().as_secs(),
        "config": { "version": cur.version, "hash": cur.hash },
        "windows": { "rate_seconds": round(rs, 1), "latency_seconds": round(ls, 1) },
        "totals": totals,
        "history": history,
        "routes": routes,
        "services": services,
        "upstreams": upstreams,
        "consumers": consumers,
        "refusals": refusals,
        "errors": { "total": recent::recent_errors().total(), "recent": errors },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_periods_start_on_calendar_boundaries() {
        // 2026-12-05 is a Saturday.
        let day = parse_day("2026-12-05").unwrap();
        assert_eq!(period_start("day", day), Some(day));
        assert_eq!(period_start("week", day), parse_day("2026-11-30"));
        assert_eq!(period_start("month", day), parse_day("2026-12-01"));
        assert_eq!(period_start("hour", day), None);
        let monday = parse_day("2026-11-30").unwrap();
        assert_eq!(period_start("week", monday), Some(monday));
    }

    #[test]
    fn public_paths_are_the_assets_only() {
        assert!(is_public("/dashboard/"));
        assert!(is_public("/dashboard/app.js"));
        assert!(!is_public("/dashboard/api/snapshot"));
        assert!(!is_public("/dashboard/api/stream"));
        assert!(!is_public("/dashboard/api/config"));
        assert!(!is_public("/dashboard/api/usage"));
    }
}
