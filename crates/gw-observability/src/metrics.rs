//! The metrics registry.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0].into_iter()
}

/// Every metric of the gateway. One per process; cheap to share in an `Arc`.
pub struct Metrics {
    /// The registry is only locked to encode `/metrics` and to register new families.
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    upstream_latency: Family<RouteLabels, Histogram>,
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
    plugin_counters: Family<NameLabels, Counter>,
}

/// Per-route handles, fetched once per configuration version so the request path records
/// without label hashing.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 6],
    latency: Histogram,
    upstream_latency: Histogram,
}

impl RouteMetrics {
    /// Record a finished request.
    pub fn record(&self, status: u16, total: Duration, upstream: Option<Duration>) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.by_class[class].inc();
        self.latency.observe(total.as_secs_f64());
        if let Some(u) = upstream {
            self.upstream_latency.observe(u.as_secs_f64());
        }
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
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        r.register("http_request_duration_seconds", "Total request latency seen by the gateway", latency.clone());
        let upstream_latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
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
        let plugin_counters = Family::<NameLabels, Counter>::default();
        r.register("plugin_events", "Plugin events by name (e.g. redis fail-open)", plugin_counters.clone());
        Metrics {
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
            plugin_counters,
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

    /// Count a named plugin event.
    pub fn plugin_event(&self, name: &str) {
        self.plugin_counters.get_or_create(&NameLabels { name: name.to_string() }).inc();
    }

    /// Register extra metrics (plugins) under `gatehouse_<prefix>_...`.
    pub fn register_with(&self, f: impl FnOnce(&mut Registry)) {
        if let Ok(mut r) = self.registry.lock() {
            f(&mut r);
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}
