//! Numbers for the dashboard, read from the gateway's own Prometheus registry once per second
//! (the request path records into it anyway: the dashboard adds nothing there). Rates are the
//! difference of two readings; latency percentiles come from the difference of two readings of
//! the latency histograms, interpolated inside a bucket as Prometheus' `histogram_quantile` does.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use gw_observability::{parse_sample as parse_line, sample_label as label};

/// Readings kept: one per second, so a minute of history.
pub(crate) const KEEP: usize = 61;
/// Window of request rates and error rates, in seconds.
pub(crate) const RATE_WINDOW: f64 = 5.0;
/// Window of latency percentiles, in seconds.
pub(crate) const LATENCY_WINDOW: f64 = 10.0;

/// Counters of one route (and its service) at one reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RouteReading {
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub(crate) by_class: [u64; 6],
    /// Cumulative latency buckets: (upper bound in seconds, count), ascending, `+Inf` last.
    pub(crate) buckets: Vec<(f64, u64)>,
}

impl RouteReading {
    pub(crate) fn total(&self) -> u64 {
        self.by_class.iter().sum()
    }
}

/// One reading of the registry.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    pub(crate) at: Instant,
    /// Wall clock, milliseconds since the epoch.
    pub(crate) unix_ms: u64,
    /// By (route, service).
    pub(crate) routes: BTreeMap<(String, String), RouteReading>,
    /// Gateway error responses by code.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Plugin events by name (`rate_limiting_rejected`, `quota_exceeded`, ...).
    pub(crate) plugin_events: BTreeMap<String, u64>,
    /// Requests per consumer (every route).
    pub(crate) consumers: HashMap<String, u64>,
    pub(crate) no_route: u64,
    pub(crate) auth_refusals: u64,
    pub(crate) authz_refusals: u64,
    pub(crate) connections: i64,
    /// Every route together.
    pub(crate) all: RouteReading,
}

fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 { v as u64 } else { 0 }
}

/// Read the registry's text (OpenMetrics, as `Metrics::encode` gives it).
pub(crate) fn read(text: &str, at: Instant, unix_ms: u64) -> Reading {
    let mut r = Reading {
        at,
        unix_ms,
        routes: BTreeMap::new(),
        errors: BTreeMap::new(),
        plugin_events: BTreeMap::new(),
        consumers: HashMap::new(),
        no_route: 0,
        auth_refusals: 0,
        authz_refusals: 0,
        connections: 0,
        all: RouteReading::default(),
    };
    for line in text.lines() {
        let Some((name, labels, v)) = parse_line(line) else { continue };
        let route_key = || Some((label(&labels, "route")?.to_string(), label(&labels, "service")?.to_string()));
        match name {
            "gatehouse_http_requests_total" => {
                let Some(k) = route_key() else { continue };
                let i = match label(&labels, "status_class") {
                    Some("1xx") => 0,
                    Some("2xx") => 1,
                    Some("3xx") => 2,
                    Some("4xx") => 3,
                    Some("5xx") => 4,
                    _ => 5,
                };
                r.routes.entry(k).or_default().by_class[i] += count(v);
            }
            "gatehouse_http_request_duration_seconds_bucket" => {
                let Some(k) = route_key() else { continue };
                let le = match label(&labels, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(x) => match x.parse() {
                        Ok(x) => x,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                r.routes.entry(k).or_default().buckets.push((le, count(v)));
            }
            "gatehouse_http_errors_total" => {
                if let Some(c) = label(&labels, "code") {
                    *r.errors.entry(c.to_string()).or_default() += count(v);
                }
            }
            "gatehouse_plugin_events_total" => {
                if let Some(n) = label(&labels, "name") {
                    *r.plugin_events.entry(n.to_string()).or_default() += count(v);
                }
            }
            "gatehouse_consumer_requests_total" => {
                if let Some(c) = label(&labels, "consumer") {
                    *r.consumers.entry(c.to_string()).or_default() += count(v);
                }
            }
            "gatehouse_http_no_route_total" => r.no_route = count(v),
            "gatehouse_http_auth_refusals_total" => r.auth_refusals = count(v),
            "gatehouse_http_authz_refusals_total" => r.authz_refusals = count(v),
            "gatehouse_downstream_connections_active" => r.connections = v as i64,
            _ => {}
        }
    }
    for rr in r.routes.values_mut() {
        rr.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    r.all = sum(r.routes.values());
    r
}

/// The reading to compare `readings`' newest one with for a window of `secs` seconds: the
/// newest one at least that old, else the oldest.
pub(crate) fn base(readings: &[&Reading], secs: f64) -> Option<usize> {
    let newest = readings.last()?;
    if readings.len() < 2 {
        return None;
    }
    let mut pick = 0;
    for (i, r) in readings.iter().enumerate().take(readings.len() - 1) {
        if newest.at.duration_since(r.at).as_secs_f64() >= secs - 0.05 {
            pick = i;
        }
    }
    Some(pick)
}

/// Rates of one route, service or the whole gateway between two readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rates {
    /// Requests per second.
    pub(crate) rps: f64,
    /// Share of 5xx responses (None without requests).
    pub(crate) error_rate: Option<f64>,
    /// Requests counted in the window.
    pub(crate) requests: u64,
    /// Requests since start.
    pub(crate) total: u64,
}

/// Sum of route readings (a service's routes, or every route).
pub(crate) fn sum<'a>(it: impl Iterator<Item = &'a RouteReading>) -> RouteReading {
    let mut out = RouteReading::default();
    for r in it {
        for i in 0..6 {
            out.by_class[i] += r.by_class[i];
        }
        // Every route has the same bucket bounds: add them up in place.
        let same = out.buckets.len() == r.buckets.len() && out.buckets.iter().zip(&r.buckets).all(|(a, b)| a.0 == b.0);
        if same {
            for (a, b) in out.buckets.iter_mut().zip(&r.buckets) {
                a.1 += b.1;
            }
            continue;
        }
        for &(le, c) in &r.buckets {
            match out.buckets.iter_mut().find(|(l, _)| *l == le) {
                Some(b) => b.1 += c,
                None => out.buckets.push((le, c)),
            }
        }
    }
    out.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

pub(crate) fn rates(old: Option<&RouteReading>, new: &RouteReading, secs: f64) -> Rates {
    let zero = RouteReading::default();
    let old = old.unwrap_or(&zero);
    let d = |i: usize| new.by_class[i].saturating_sub(old.by_class[i]);
    let requests: u64 = (0..6).map(d).sum();
    let errors = d(4);
    // Without a window (a single reading), there is no rate to tell.
    let windowed = secs > 0.0;
    Rates {
        rps: if windowed { requests as f64 / secs } else { 0.0 },
        error_rate: (windowed && requests > 0).then(|| errors as f64 / requests as f64),
        requests,
        total: new.total(),
    }
}

/// The `q` quantile (0..1) of the latencies observed between two readings, in milliseconds;
/// `None` without observations.
pub(crate) fn quantile_ms(old: Option<&RouteReading>, new: &RouteReading, q: f64) -> Option<f64> {
    let before = |le: f64| old.and_then(|o| o.buckets.iter().find(|(l, _)| *l == le)).map_or(0, |b| b.1);
    let deltas: Vec<(f64, u64)> = new.buckets.iter().map(|&(le, c)| (le, c.saturating_sub(before(le)))).collect();
    let total = deltas.last().map_or(0, |b| b.1);
    if total == 0 {
        return None;
    }
    let target = q * total as f64;
    let (mut prev_le, mut prev_c) = (0.0, 0u64);
    for &(le, c) in &deltas {
        if c as f64 >= target {
            if le.is_infinite() {
                return Some(prev_le * 1000.0);
            }
            let in_bucket = (c - prev_c) as f64;
            let frac = if in_bucket > 0.0 { (target - prev_c as f64) / in_bucket } else { 1.0 };
            return Some((prev_le + (le - prev_le) * frac.clamp(0.0, 1.0)) * 1000.0);
        }
        prev_le = le;
        prev_c = c;
    }
    Some(prev_le * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gateways_own_registry() {
        let m = gw_observability::Metrics::new();
        let h = m.route("orders", "orders-svc");
        for ms in [1, 2, 3, 40] {
            h.record(200, std::time::Duration::from_millis(ms), None, None);
        }
        h.record(502, std::time::Duration::from_millis(7), None, None);
        h.auth_refused();
        h.authz_refused();
        m.error("upstream_connect_failed");
        m.plugin_event("rate_limiting_rejected");
        m.no_route();
        let r = read(&m.encode(), Instant::now(), 0);
        let o = &r.routes[&("orders".to_string(), "orders-svc".to_string())];
        assert_eq!(o.by_class, [0, 4, 0, 0, 1, 0]);
        assert_eq!(o.buckets.last(), Some(&(f64::INFINITY, 5)));
        assert_eq!(r.errors["upstream_connect_failed"], 1);
        assert_eq!(r.plugin_events["rate_limiting_rejected"], 1);
        assert_eq!((r.no_route, r.auth_refusals, r.authz_refusals), (1, 1, 1));
        // Percentiles from the whole histogram (no older reading).
        let p50 = quantile_ms(None, o, 0.5).unwrap();
        assert!((2.5..=5.0).contains(&p50), "{p50}");
        let p99 = quantile_ms(None, o, 0.99).unwrap();
        assert!((25.0..=50.0).contains(&p99), "{p99}");
    }

    #[test]
    fn rates_and_percentiles_are_differences_of_two_readings() {
        let old = RouteReading {
            by_class: [0, 10, 0, 0, 0, 0],
            buckets: vec![(0.001, 10), (0.01, 10), (0.1, 10), (f64::INFINITY, 10)],
        };
        let new = RouteReading {
            by_class: [0, 18, 0, 0, 2, 0],
            buckets: vec![(0.001, 10), (0.01, 10), (0.1, 20), (f64::INFINITY, 20)],
        };
        let r = rates(Some(&old), &new, 5.0);
        assert_eq!((r.requests, r.total), (10, 20));
        assert!((r.rps - 2.0).abs() < 1e-9);
        assert_eq!(r.error_rate, Some(0.2));
        // All 10 new observations are in (0.01, 0.1]: the median is in the middle.
        let p50 = quantile_ms(Some(&old), &new, 0.5).unwrap();
        assert!((p50 - 55.0).abs() < 1e-6, "{p50}");
        assert_eq!(quantile_ms(Some(&new), &new, 0.5), None);
        // No window: no rate.
        assert_eq!(rates(None, &new, 0.0), Rates { rps: 0.0, error_rate: None, requests: 20, total: 20 });
        // Sums keep the buckets.
        let s = sum([&old, &new].into_iter());
        assert_eq!(s.by_class, [0, 28, 0, 0, 2, 0]);
        assert_eq!(s.buckets, vec![(0.001, 20), (0.01, 20), (0.1, 30), (f64::INFINITY, 30)]);
    }

    #[test]
    fn label_values_with_escapes() {
        let (n, l, v) = parse_line(r#"x_total{a="q\"u\\o",b="z"} 3"#).unwrap();
        assert_eq!((n, v), ("x_total", 3.0));
        assert_eq!(l, vec![("a", "q\"u\\o".to_string()), ("b", "z".to_string())]);
        assert!(parse_line("# HELP x").is_none());
        assert_eq!(parse_line("y_total 7").unwrap().2, 7.0);
    }
}
