//! The metrics registry.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    service: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    service: String,
}

/// Upper bounds of the latency buckets, in seconds (`+Inf` follows).
const LATENCY_BOUNDS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Latency buckets, `+Inf` included.
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// A latency histogram (requests, upstream responses) that can carry exemplars: per bucket, the
/// trace id of the last sampled request that fell in it. Lock-free when counting; the exemplar
/// slots are allocated and locked only when a sampled request is recorded, so every series can
/// have exemplars (those that existed before tracing was turned on included) and the requests
/// that are not sampled cost the same as without tracing. `prometheus_client` cannot encode an
/// exemplar it did not record itself: [`Metrics::encode`] adds them to the bucket lines.
#[derive(Clone, Debug, Default)]
struct Latency(Arc<LatencyInner>);

#[derive(Debug, Default)]
struct LatencyInner {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    /// The sum of the observations, as `f64` bits.
    sum: AtomicU64,
    exemplars: std::sync::OnceLock<Mutex<[Option<Exemplar>; LATENCY_BUCKETS]>>,
}

/// An exemplar: the trace of a sampled request, its value and when it was recorded.
#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: [u8; 16],
    value: f64,
    at: SystemTime,
}

impl Latency {
    fn observe(&self, v: f64, trace_id: Option<&[u8; 16]>) {
        let i = LATENCY_BOUNDS.iter().position(|b| v <= *b).unwrap_or(LATENCY_BOUNDS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let mut cur = self.0.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + v).to_bits();
            match self.0.sum.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if let Some(t) = trace_id {
            self.exemplar(i, v, t);
        }
    }

    #[cold]
    fn exemplar(&self, bucket: usize, value: f64, trace_id: &[u8; 16]) {
        EXEMPLARS_SEEN.store(true, Ordering::Relaxed);
        let slots = self.0.exemplars.get_or_init(|| Mutex::new([None; LATENCY_BUCKETS]));
        if let Ok(mut s) = slots.lock() {
            s[bucket] = Some(Exemplar { trace_id: *trace_id, value, at: SystemTime::now() });
        }
    }

    /// The exemplars, by bucket (none when no sampled request was recorded).
    fn exemplars(&self) -> Option<[Option<Exemplar>; LATENCY_BUCKETS]> {
        self.0.exemplars.get().and_then(|m| m.lock().ok().map(|s| *s))
    }

    /// (sum, count, buckets as `prometheus_client` encodes them: bound and count per bucket,
    /// `+Inf` as `f64::MAX`). The count is the buckets' total, so a reading is consistent.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let counts = self.0.buckets.each_ref().map(|b| b.load(Ordering::Relaxed));
        let bounds = LATENCY_BOUNDS.iter().copied().chain([f64::MAX]);
        (f64::from_bits(self.0.sum.load(Ordering::Relaxed)), counts.iter().sum(), bounds.zip(counts).collect())
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Set once any latency series has recorded an exemplar.
static EXEMPLARS_SEEN: AtomicBool = AtomicBool::new(false);

/// The latency families whose exemplars [`Metrics::encode`] adds to the exposition.
const EXEMPLAR_FAMILIES: [&str; 2] =
    ["gatehouse_http_request_duration_seconds_bucket", "gatehouse_upstream_duration_seconds_bucket"];

/// Add the exemplars of `families` (in [`EXEMPLAR_FAMILIES`] order) to their bucket lines of
/// the OpenMetrics text `om`: ` # {trace_id="<hex>"} <value> <timestamp>`, as OpenMetrics
/// writes them.
fn add_exemplars(om: &str, families: [&Family<RouteLabels, Latency>; 2]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(om.len() + 4096);
    for line in om.lines() {
        out.push_str(line);
        if let Some(f) = EXEMPLAR_FAMILIES.iter().position(|n| line.strip_prefix(n).is_some_and(|r| r.starts_with('{')))
            && let Some((_, labels, _)) = parse_sample(line)
            && let (Some(route), Some(service), Some(le)) =
                (sample_label(&labels, "route"), sample_label(&labels, "service"), sample_label(&labels, "le"))
        {
            let bucket = match le {
                "+Inf" => Some(LATENCY_BOUNDS.len()),
                le => le.parse::<f64>().ok().and_then(|le| LATENCY_BOUNDS.iter().position(|b| *b == le)),
            };
            let key = RouteLabels { route: route.to_string(), service: service.to_string() };
            let ex = families[f].get(&key).and_then(|h| h.exemplars());
            if let (Some(b), Some(ex)) = (bucket, ex)
                && let Some(e) = ex[b]
            {
                let at = e.at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                let _ = write!(
                    out,
                    " # {{trace_id=\"{}\"}} {} {}.{:03}",
                    hex(&e.trace_id),
                    e.value,
                    at.as_secs(),
                    at.subsec_millis()
                );
            }
        }
        out.push('\n');
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A sample: metric name, labels, value.
pub type Sample<'a> = (&'a str, Vec<(&'a str, String)>, f64);

/// One sample line of a text exposition: `name{a="x",b="y"} value` (labels optional; an
/// exemplar or a timestamp after the value is ignored).
pub fn parse_sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (name, rest, labels) = match line.find('{') {
        Some(i) => {
            let name = &line[..i];
            let body = &line[i + 1..];
            let mut labels = Vec::new();
            let mut s = body;
            loop {
                s = s.trim_start_matches(',');
                if let Some(r) = s.strip_prefix('}') {
                    s = r;
                    break;
                }
                let eq = s.find('=')?;
                let key = &s[..eq];
                let after = s[eq + 1..].strip_prefix('"')?;
                // The value ends at the first quote not escaped.
                let bytes = after.as_bytes();
                let mut j = 0;
                while j < bytes.len() {
                    match bytes[j] {
                        b'\\' => j += 2,
                        b'"' => break,
                        _ => j += 1,
                    }
                }
                let raw = after.get(..j)?;
                labels.push((key, unescape_label(raw)));
                s = after.get(j + 1..)?;
            }
            (name, s, labels)
        }
        None => {
            let sp = line.find(' ')?;
            (&line[..sp], &line[sp..], Vec::new())
        }
    };
    let value = rest.split_whitespace().next()?;
    let v = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, v))
}

/// The value of label `key` of a parsed sample.
pub fn sample_label<'a>(labels: &'a [(&str, String)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
}

/// A label value as written in the text formats, unescaped (`\\`, `\"`, `\n`).
fn unescape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Labels of per-target upstream health.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetHealthLabels {
    /// Upstream name.
    pub upstream: String,
    /// Target `host:port`.
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    route: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheInstanceLabels {
    cache: String,
}

/// The counter of one route and cache status (a handle: no label lookup when counting).
#[derive(Clone, Debug)]
pub struct CacheCounter(Counter);

impl CacheCounter {
    /// Count one request.
    pub fn inc(&self) {
        self.0.inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    service: String,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AggregateCallLabels {
    service: String,
    call: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AggregateCallRoute {
    service: String,
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CircuitLabels {
    upstream: String,
    state: &'static str,
}

/// Circuit breaker states, as metric label values.
pub const CIRCUIT_STATES: [&str; 3] = ["closed", "open", "half_open"];

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn latency_buckets() -> impl Iterator<Item = f64> {
    LATENCY_BOUNDS.into_iter()
}

/// Every metric of the gateway. One per process; cheap to share in an `Arc`.
pub struct Metrics {
    /// The registry is only locked to encode `/metrics` and to register new families.
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Latency>,
    upstream_latency: Family<RouteLabels, Latency>,
    no_route: Counter,
    errors: Family<CodeLabels, Counter>,
    active_connections: Gauge,
    connections_total: Counter,
    connections_rejected: Counter,
    upstream_health: Family<TargetHealthLabels, Gauge>,
    upstream_ejections: Family<TargetHealthLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    config_timestamp: Gauge<f64, AtomicU64>,
    access_log_dropped: Counter,
    spans_dropped: Counter,
    spans_exported: Counter,
    plugin_counters: Family<NameLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    circuit_state: Family<CircuitLabels, Gauge>,
    circuit_transitions: Family<CircuitLabels, Counter>,
    http2_reset_limited: Counter,
    auth_refusals: Counter,
    authz_refusals: Counter,
    aggregate_calls: Family<AggregateCallLabels, Counter>,
    aggregate_call_latency: Family<AggregateCallRoute, Histogram>,
    cache_requests: Family<CacheLabels, Counter>,
    cache_bytes: Family<CacheInstanceLabels, Gauge>,
    cache_entries: Family<CacheInstanceLabels, Gauge>,
    cache_evictions: Family<CacheInstanceLabels, Counter>,
}

/// The retry counter of one service (a handle: no label lookup when counting).
#[derive(Clone, Debug)]
pub struct RetryCounter(Counter);

impl RetryCounter {
    /// Count one retry.
    pub fn inc(&self) {
        self.0.inc();
    }
}

/// Per-route handles, fetched once per configuration version so the request path records
/// without label hashing.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 6],
    latency: Latency,
    upstream_latency: Latency,
    auth_refusals: Counter,
    authz_refusals: Counter,
}

impl RouteMetrics {
    /// Record a finished request; `trace_id`: the trace of a sampled request, kept as the
    /// exemplar of both latencies (shown in the OpenMetrics exposition).
    pub fn record(&self, status: u16, total: Duration, upstream: Option<Duration>, trace_id: Option<&[u8; 16]>) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.by_class[class].inc();
        self.latency.observe(total.as_secs_f64(), trace_id);
        if let Some(u) = upstream {
            self.upstream_latency.observe(u.as_secs_f64(), trace_id);
        }
    }

    /// A request refused by authentication (an auth plugin answered: missing or invalid
    /// credentials). Counted on the refusal only, one atomic add.
    pub fn auth_refused(&self) {
        self.auth_refusals.inc();
    }

    /// A request an authenticated (or anonymous) consumer was not allowed to make: a plugin of
    /// the access phase after authentication (acl, ...) answered 403.
    pub fn authz_refused(&self) {
        self.authz_refusals.inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every gateway metric registered under the `gatehouse_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        r.register("http_requests", "Requests by route, service and status class", requests.clone());
        let latency = Family::<RouteLabels, Latency>::default();
        r.register("http_request_duration_seconds", "Total request latency seen by the gateway", latency.clone());
        let upstream_latency = Family::<RouteLabels, Latency>::default();
        r.register(
            "upstream_duration_seconds",
            "Time from sending the upstream request to its response head",
            upstream_latency.clone(),
        );
        let no_route = Counter::default();
        r.register("http_no_route", "Requests that matched no route", no_route.clone());
        let errors = Family::<CodeLabels, Counter>::default();
        r.register("http_errors", "Requests answered with a gateway error, by error code", errors.clone());
        let active_connections = Gauge::default();
        r.register("downstream_connections_active", "Open client connections", active_connections.clone());
        let connections_total = Counter::default();
        r.register("downstream_connections", "Accepted client connections", connections_total.clone());
        let connections_rejected = Counter::default();
        r.register(
            "downstream_connections_rejected",
            "Connections refused because max_connections was reached",
            connections_rejected.clone(),
        );
        let upstream_health = Family::<TargetHealthLabels, Gauge>::default();
        r.register(
            "upstream_target_healthy",
            "1 when an upstream target is available, 0 when unhealthy or ejected",
            upstream_health.clone(),
        );
        let upstream_ejections = Family::<TargetHealthLabels, Counter>::default();
        r.register(
            "upstream_target_state_changes",
            "Health state changes of upstream targets (active or passive)",
            upstream_ejections.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        r.register("config_reloads", "Configuration reloads by result", reloads.clone());
        let config_timestamp = Gauge::<f64, AtomicU64>::default();
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            config_timestamp.clone(),
        );
        let access_log_dropped = Counter::default();
        r.register(
            "access_log_dropped",
            "Access log lines dropped because the writer could not keep up",
            access_log_dropped.clone(),
        );
        let spans_dropped = Counter::default();
        r.register(
            "tracing_spans_dropped",
            "Trace spans dropped: the export queue was full or the collector did not take them",
            spans_dropped.clone(),
        );
        let spans_exported = Counter::default();
        r.register("tracing_spans_exported", "Trace spans the OTLP collector accepted", spans_exported.clone());
        let plugin_counters = Family::<NameLabels, Counter>::default();
        r.register("plugin_events", "Plugin events by name (e.g. redis fail-open)", plugin_counters.clone());
        let retries = Family::<RetryLabels, Counter>::default();
        r.register("upstream_retries", "Upstream attempts retried, by service and upstream", retries.clone());
        let circuit_state = Family::<CircuitLabels, Gauge>::default();
        r.register(
            "upstream_circuit_state",
            "Circuit breaker state per upstream: 1 for the current state (closed, open, half_open), 0 for the others",
            circuit_state.clone(),
        );
        let circuit_transitions = Family::<CircuitLabels, Counter>::default();
        r.register(
            "upstream_circuit_transitions",
            "Circuit breaker state changes per upstream, by the state entered",
            circuit_transitions.clone(),
        );
        let http2_reset_limited = Counter::default();
        r.register(
            "http2_reset_limited_connections",
            "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM for too many client stream resets",
            http2_reset_limited.clone(),
        );
        let auth_refusals = Counter::default();
        r.register(
            "http_auth_refusals",
            "Requests refused by authentication (missing or invalid credentials)",
            auth_refusals.clone(),
        );
        let authz_refusals = Counter::default();
        r.register(
            "http_authz_refusals",
            "Requests refused by authorization (403 from acl or another plugin after authentication)",
            authz_refusals.clone(),
        );
        let aggregate_calls = Family::<AggregateCallLabels, Counter>::default();
        r.register(
            "aggregate_calls",
            "Backend calls of aggregate services, by service, call name and outcome (the status class, or the error code)",
            aggregate_calls.clone(),
        );
        let aggregate_call_latency =
            Family::<AggregateCallRoute, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        r.register(
            "aggregate_call_duration_seconds",
            "Time of each backend call of an aggregate service, from its start to its answer",
            aggregate_call_latency.clone(),
        );
        let cache_requests = Family::<CacheLabels, Counter>::default();
        r.register(
            "cache_requests",
            "Requests through proxy-cache, by route and cache status (HIT, MISS, EXPIRED, STALE, REVALIDATED, BYPASS)",
            cache_requests.clone(),
        );
        let cache_bytes = Family::<CacheInstanceLabels, Gauge>::default();
        r.register("cache_memory_bytes", "Bytes stored in the memory tier of each proxy-cache", cache_bytes.clone());
        let cache_entries = Family::<CacheInstanceLabels, Gauge>::default();
        r.register("cache_memory_entries", "Keys stored in the memory tier of each proxy-cache", cache_entries.clone());
        let cache_evictions = Family::<CacheInstanceLabels, Counter>::default();
        r.register(
            "cache_evictions",
            "Entries evicted for space from the memory tier of each proxy-cache",
            cache_evictions.clone(),
        );
        Metrics {
            cache_requests,
            cache_bytes,
            cache_entries,
            cache_evictions,
            aggregate_calls,
            aggregate_call_latency,
            registry: Mutex::new(r),
            requests,
            latency,
            upstream_latency,
            no_route,
            errors,
            active_connections,
            connections_total,
            connections_rejected,
            upstream_health,
            upstream_ejections,
            reloads,
            config_timestamp,
            access_log_dropped,
            spans_dropped,
            spans_exported,
            plugin_counters,
            retries,
            circuit_state,
            circuit_transitions,
            http2_reset_limited,
            auth_refusals,
            authz_refusals,
        }
    }

    /// Handles for one route.
    pub fn route(&self, route: &str, service: &str) -> RouteMetrics {
        let by_class = CLASSES.map(|c| {
            self.requests
                .get_or_create(&RequestLabels { route: route.into(), service: service.into(), status_class: c })
                .clone()
        });
        let rl = RouteLabels { route: route.into(), service: service.into() };
        RouteMetrics {
            by_class,
            latency: self.latency.get_or_create(&rl).clone(),
            upstream_latency: self.upstream_latency.get_or_create(&rl).clone(),
            auth_refusals: self.auth_refusals.clone(),
            authz_refusals: self.authz_refusals.clone(),
        }
    }

    /// Drop the series of a route that no longer exists (keeps cardinality bounded across
    /// reloads).
    pub fn forget_route(&self, route: &str, service: &str) {
        for c in CLASSES {
            self.requests.remove(&RequestLabels { route: route.into(), service: service.into(), status_class: c });
        }
        let rl = RouteLabels { route: route.into(), service: service.into() };
        self.latency.remove(&rl);
        self.upstream_latency.remove(&rl);
    }

    /// A request that matched no route.
    pub fn no_route(&self) {
        self.no_route.inc();
    }

    /// A gateway error response, by stable code.
    pub fn error(&self, code: &'static str) {
        self.errors.get_or_create(&CodeLabels { code }).inc();
    }

    /// A connection was accepted (`+1`) or closed (`-1`).
    pub fn connection_opened(&self) {
        self.active_connections.inc();
        self.connections_total.inc();
    }

    /// A connection closed.
    pub fn connection_closed(&self) {
        self.active_connections.dec();
    }

    /// Open connections now.
    pub fn active_connections(&self) -> i64 {
        self.active_connections.get()
    }

    /// A connection was refused at the cap.
    pub fn connection_rejected(&self) {
        self.connections_rejected.inc();
    }

    /// Set a target's health gauge.
    pub fn set_target_health(&self, labels: &TargetHealthLabels, healthy: bool) {
        self.upstream_health.get_or_create(labels).set(i64::from(healthy));
    }

    /// Count a target health change.
    pub fn target_state_changed(&self, labels: &TargetHealthLabels) {
        self.upstream_ejections.get_or_create(labels).inc();
    }

    /// Drop a target's series (removed by a reload).
    pub fn forget_target(&self, labels: &TargetHealthLabels) {
        self.upstream_health.remove(labels);
        self.upstream_ejections.remove(labels);
    }

    /// Count a reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabels { result: if ok { "success" } else { "failure" } }).inc();
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.config_timestamp.set(now);
        }
    }

    /// Count a dropped access log line.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// Count trace spans dropped (queue full, export failed).
    pub fn spans_dropped(&self, n: u64) {
        self.spans_dropped.inc_by(n);
    }

    /// Count trace spans exported.
    pub fn spans_exported(&self, n: u64) {
        self.spans_exported.inc_by(n);
    }

    /// Count a named plugin event.
    pub fn plugin_event(&self, name: &str) {
        self.plugin_counters.get_or_create(&NameLabels { name: name.to_string() }).inc();
    }

    /// The counter of requests through a cache on `route` with cache status `status`.
    pub fn cache_counter(&self, route: &str, status: &'static str) -> CacheCounter {
        CacheCounter(self.cache_requests.get_or_create(&CacheLabels { route: route.into(), status }).clone())
    }

    /// The memory tier of cache `cache` holds `bytes` in `entries` keys, and has evicted
    /// `evictions` entries since it was made.
    pub fn cache_stats(&self, cache: &str, bytes: u64, entries: u64, evictions: u64) {
        let l = CacheInstanceLabels { cache: cache.into() };
        self.cache_bytes.get_or_create(&l).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.cache_entries.get_or_create(&l).set(i64::try_from(entries).unwrap_or(i64::MAX));
        let c = self.cache_evictions.get_or_create(&l);
        let seen = c.get();
        if evictions > seen {
            c.inc_by(evictions - seen);
        }
    }

    /// A backend call of aggregate `service` ended: `outcome` is its status class (`2xx`) or
    /// error code; `duration` when it started.
    pub fn aggregate_call(&self, service: &str, call: &str, outcome: &str, duration: Option<std::time::Duration>) {
        let labels = AggregateCallLabels { service: service.into(), call: call.into(), outcome: outcome.into() };
        self.aggregate_calls.get_or_create(&labels).inc();
        if let Some(d) = duration {
            let route = AggregateCallRoute { service: service.into(), call: call.into() };
            self.aggregate_call_latency.get_or_create(&route).observe(d.as_secs_f64());
        }
    }

    /// The retry counter of a service and its upstream (fetched once per configuration).
    pub fn retries(&self, service: &str, upstream: &str) -> RetryCounter {
        RetryCounter(
            self.retries.get_or_create(&RetryLabels { service: service.into(), upstream: upstream.into() }).clone(),
        )
    }

    /// Drop a service's retry series (removed by a reload).
    pub fn forget_retries(&self, service: &str, upstream: &str) {
        self.retries.remove(&RetryLabels { service: service.into(), upstream: upstream.into() });
    }

    /// Set an upstream's circuit state gauge (`state` one of [`CIRCUIT_STATES`]).
    pub fn set_circuit_state(&self, upstream: &str, state: &'static str) {
        for s in CIRCUIT_STATES {
            self.circuit_state
                .get_or_create(&CircuitLabels { upstream: upstream.into(), state: s })
                .set(i64::from(s == state));
        }
    }

    /// Count a circuit state change of `upstream` into `state`, and set the gauge.
    pub fn circuit_transition(&self, upstream: &str, state: &'static str) {
        self.circuit_transitions.get_or_create(&CircuitLabels { upstream: upstream.into(), state }).inc();
        self.set_circuit_state(upstream, state);
    }

    /// Drop an upstream's circuit series (removed by a reload, or its breaker turned off).
    pub fn forget_circuit(&self, upstream: &str) {
        for state in CIRCUIT_STATES {
            let l = CircuitLabels { upstream: upstream.into(), state };
            self.circuit_state.remove(&l);
            self.circuit_transitions.remove(&l);
        }
    }

    /// An HTTP/2 connection was closed for too many client stream resets.
    pub fn http2_reset_limit_hit(&self) {
        self.http2_reset_limited.inc();
    }

    /// Register extra metrics (plugins) under `gatehouse_<prefix>_...`.
    pub fn register_with(&self, f: impl FnOnce(&mut Registry)) {
        if let Ok(mut r) = self.registry.lock() {
            f(&mut r);
        }
    }

    /// The OpenMetrics text of every metric, with the latency histograms' exemplars.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        // Until a latency series of the process has held an exemplar (tracing sampled a
        // request), the exposition is left as `prometheus_client` wrote it.
        if EXEMPLARS_SEEN.load(Ordering::Relaxed) {
            add_exemplars(&out, [&self.latency, &self.upstream_latency])
        } else {
            out
        }
    }

    /// Every metric in `format`, with the Content-Type to send it with.
    pub fn encode_as(&self, format: Format) -> (String, &'static str) {
        let om = self.encode();
        match format {
            Format::OpenMetrics => (om, Format::OpenMetrics.content_type()),
            Format::Prometheus => (to_prometheus_text(&om), Format::Prometheus.content_type()),
        }
    }
}

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// Prometheus text format 0.0.4.
    Prometheus,
}

impl Format {
    /// The Content-Type of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// The format to answer an `Accept` header with: OpenMetrics when the client asks for
    /// `application/openmetrics-text` at least as much as for the Prometheus text format (what
    /// Prometheus sends by default), the Prometheus text format otherwise (no `Accept`,
    /// `text/plain`, `*/*`).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::Prometheus };
        let (mut om, mut text) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            let mut version = None;
            for p in parts {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.parse().unwrap_or(0.0),
                    "version" => version = Some(v.to_string()),
                    _ => {}
                }
            }
            match media.as_str() {
                "application/openmetrics-text" if matches!(version.as_deref(), None | Some("1.0.0" | "0.0.1")) => {
                    om = om.max(q);
                }
                "text/plain" if matches!(version.as_deref(), None | Some("0.0.4")) => text = text.max(q),
                "*/*" | "text/*" => text = text.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om >= text { Format::OpenMetrics } else { Format::Prometheus }
    }
}

/// Rewrite OpenMetrics text (as `prometheus_client` writes it) as Prometheus text 0.0.4: no
/// `# EOF` or `# UNIT`; counter families named by their `_total` samples; `info` families as
/// gauges of their `_info` samples; `unknown` as `untyped`; exemplars dropped.
pub fn to_prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str("# HELP ");
                out.push_str(&name);
                if !text.is_empty() {
                    out.push(' ');
                    out.push_str(text);
                }
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        if let Some(h) = help.take() {
            // A HELP without a TYPE: keep it as it was.
            out.push_str("# HELP ");
            out.push_str(h);
            out.push('\n');
        }
        if line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(without_exemplar(line));
        out.push('\n');
    }
    out
}

/// A sample line without its exemplar (` # {...} value`), if it has one.
fn without_exemplar(line: &str) -> &str {
    // Skip the label set, whose quoted values may contain anything.
    let bytes = line.as_bytes();
    let mut i = 0;
    // The name ends at the label set or at the first space.
    if let Some(open) = line.find(['{', ' ']).filter(|&k| bytes[k] == b'{') {
        i = open + 1;
        let mut quoted = false;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b'}' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
    }
    match line[i.min(line.len())..].find(" # ") {
        Some(k) => &line[..i + k],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus sends gets OpenMetrics; text/plain, `*/*` or nothing get text 0.0.4.
    /// Every latency series can carry exemplars (the request's and the upstream's): a series
    /// that counted requests without a trace gets one from the first sampled request, on the
    /// bucket it fell in, in the OpenMetrics text only; the counts are unchanged by it.
    #[test]
    fn latency_exemplars_on_existing_series() {
        let m = Metrics::new();
        let r = m.route("users", "s");
        // The bucket line of `family` at `le`, for route `users`.
        let line = |om: &str, family: &str, le: &str| -> String {
            om.lines()
                .find(|l| {
                    parse_sample(l).is_some_and(|(n, labels, _)| {
                        n == format!("gatehouse_{family}_bucket")
                            && sample_label(&labels, "route") == Some("users")
                            && sample_label(&labels, "le") == Some(le)
                    })
                })
                .unwrap_or_else(|| panic!("{family} {le}: {om}"))
                .to_string()
        };
        r.record(200, Duration::from_millis(3), Some(Duration::from_millis(2)), None);
        let plain = m.encode();
        assert!(line(&plain, "http_request_duration_seconds", "0.005").ends_with("} 1"), "{plain}");
        assert!(!plain.contains("trace_id"), "{plain}");
        let t = [0xab; 16];
        r.record(200, Duration::from_millis(30), Some(Duration::from_millis(20)), Some(&t));
        let om = m.encode();
        let ex = |v: &str| format!("# {{trace_id=\"{}\"}} {v} ", "ab".repeat(16));
        let at_50ms = line(&om, "http_request_duration_seconds", "0.05");
        assert!(at_50ms.contains(&format!("}} 2 {}", ex("0.03"))), "{om}");
        assert!(!line(&om, "http_request_duration_seconds", "0.005").contains("trace_id"), "{om}");
        assert!(line(&om, "upstream_duration_seconds", "0.025").contains(&ex("0.02")), "{om}");
        assert!(
            om.lines().any(|l| l.starts_with("gatehouse_http_request_duration_seconds_count{") && l.ends_with("} 2")),
            "{om}"
        );
        assert!(!to_prometheus_text(&om).contains("trace_id"));
    }

    #[test]
    fn negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain; version=0.0.4; q=1, application/openmetrics-text; q=0.5")),
            Format::Prometheus
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("application/json")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=0")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;version=2.0.0")), Format::Prometheus);
    }

    /// Counters are named by their samples, info becomes a gauge, UNIT/EOF/exemplars go.
    #[test]
    fn prometheus_text_from_openmetrics() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{r=\"x}\\\" # {\"} 3\n# HELP b Open.\n# TYPE b gauge\n# UNIT b seconds\nb 2\n# HELP v Version.\n# TYPE v info\nv_info{version=\"1\"} 1\n# TYPE c counter\nc_total 1 # {trace=\"t\"} 1.0\n# HELP h Lat.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n# EOF\n";
        let want = "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{r=\"x}\\\" # {\"} 3\n# HELP b Open.\n# TYPE b gauge\nb 2\n# HELP v_info Version.\n# TYPE v_info gauge\nv_info{version=\"1\"} 1\n# TYPE c_total counter\nc_total 1\n# HELP h Lat.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
        assert_eq!(to_prometheus_text(om), want);
        // The gateway's own registry converts with every family typed by its samples.
        let m = Metrics::new();
        m.error("circuit_open");
        m.circuit_transition("u", "open");
        let (text, ctype) = m.encode_as(Format::Prometheus);
        assert!(ctype.starts_with("text/plain; version=0.0.4"));
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains(
                "# TYPE gatehouse_http_errors_total counter\ngatehouse_http_errors_total{code=\"circuit_open\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("gatehouse_upstream_circuit_state{upstream=\"u\",state=\"open\"} 1"), "{text}");
        let (om, ctype) = m.encode_as(Format::OpenMetrics);
        assert!(ctype.starts_with("application/openmetrics-text; version=1.0.0"));
        assert!(om.ends_with("# EOF\n"));
    }
}
