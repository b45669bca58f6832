//! Usage tracking for API monetization: requests per consumer, route and UTC day, kept for a
//! bounded number of days, readable from the status listener (`/status/usage`) and exported to
//! Prometheus as `gatehouse_consumer_requests_total{consumer, route}`.
//!
//! Cardinality is bounded by configuration: consumers and routes are configured entities, never
//! raw request data.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::Metrics;

const SHARDS: usize = 16;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    consumer: String,
    route: String,
}

struct Entry {
    day: u32,
    consumer: Box<str>,
    route: Box<str>,
    count: u64,
    counter: Counter,
}

/// One row of the usage report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageRow {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Consumer username.
    pub consumer: String,
    /// Route name.
    pub route: String,
    /// Requests.
    pub requests: u64,
}

/// Per-consumer usage counters.
pub struct Usage {
    shards: Vec<Mutex<HashMap<u64, Entry>>>,
    family: Family<UsageLabels, Counter>,
    retain_days: u32,
    pruned_day: AtomicU32,
}

impl Usage {
    /// Counters kept for `retain_days` days, registered in `metrics`.
    pub fn new(metrics: &Metrics, retain_days: u32) -> Usage {
        let family = Family::<UsageLabels, Counter>::default();
        let f = family.clone();
        metrics.register_with(|r| r.register("consumer_requests", "Requests by consumer and route", f));
        Usage {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            family,
            retain_days: retain_days.max(1),
            pruned_day: AtomicU32::new(0),
        }
    }

    fn hash(day: u32, consumer: &str, route: &str) -> u64 {
        // FNV-1a: deterministic and cheap for short names.
        let mut x: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(day);
        for b in consumer.bytes().chain([0xff]).chain(route.bytes()) {
            x ^= u64::from(b);
            x = x.wrapping_mul(0x0100_0000_01b3);
        }
        x
    }

    /// Count one request of `consumer` on `route` at `now_ms`.
    pub fn record(&self, now_ms: u64, consumer: &str, route: &str) {
        let day = (now_ms / 86_400_000) as u32;
        let h = Self::hash(day, consumer, route);
        let Some(shard) = self.shards.get((h % SHARDS as u64) as usize) else { return };
        let mut new = false;
        if let Ok(mut m) = shard.lock() {
            match m.get_mut(&h) {
                Some(e) if e.day == day && &*e.consumer == consumer && &*e.route == route => {
                    e.count += 1;
                    e.counter.inc();
                }
                Some(_) => {} // a hash collision: dropped rather than miscounted
                None => {
                    let counter = self
                        .family
                        .get_or_create(&UsageLabels { consumer: consumer.into(), route: route.into() })
                        .clone();
                    counter.inc();
                    m.insert(h, Entry { day, consumer: consumer.into(), route: route.into(), count: 1, counter });
                    new = true;
                }
            }
        }
        if new {
            self.prune(day);
        }
    }

    fn prune(&self, today: u32) {
        let min = today.saturating_sub(self.retain_days - 1);
        if self.pruned_day.swap(today, Ordering::Relaxed) == today {
            return;
        }
        for s in &self.shards {
            if let Ok(mut m) = s.lock() {
                m.retain(|_, e| e.day >= min);
            }
        }
    }

    /// Rows for `consumer` (all when `None`) between the days `from..=to` (days since epoch),
    /// sorted by day, consumer, route.
    pub fn rows(&self, consumer: Option<&str>, from: u32, to: u32) -> Vec<UsageRow> {
        let mut v = Vec::new();
        for s in &self.shards {
            if let Ok(m) = s.lock() {
                for e in m.values() {
                    if e.day >= from && e.day <= to && consumer.is_none_or(|c| c == &*e.consumer) {
                        v.push((e.day, e.consumer.to_string(), e.route.to_string(), e.count));
                    }
                }
            }
        }
        v.sort();
        v.into_iter()
            .map(|(day, consumer, route, requests)| UsageRow {
                day: crate::rfc3339(UNIX_EPOCH + Duration::from_secs(u64::from(day) * 86_400))[..10].to_string(),
                consumer,
                route,
                requests,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_day_and_prunes() {
        let m = Metrics::new();
        let u = Usage::new(&m, 2);
        let day = 20_000u64 * 86_400_000;
        u.record(day + 5, "alice", "orders");
        u.record(day + 6, "alice", "orders");
        u.record(day + 7, "bob", "orders");
        u.record(day + 86_400_000, "alice", "orders");
        let rows = u.rows(Some("alice"), 0, u32::MAX);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].day.as_str(), rows[0].requests), ("2024-10-04", 2));
        assert_eq!(rows[1].requests, 1);
        // Two days later the first day is gone (2 days retained).
        u.record(day + 2 * 86_400_000, "alice", "orders");
        assert!(u.rows(None, 0, 20_000).is_empty());
        assert!(m.encode().contains("gatehouse_consumer_requests_total{consumer=\"alice\",route=\"orders\"} 4"));
    }
}
