//! Usage analytics for API monetization: requests and bytes per consumer, route, minute and
//! outcome (served, refused by a rate limit or quota, authentication failed, upstream error).
//!
//! The request path only adds to in-memory counters ([`Usage::record`]: a short lock on one of
//! 16 shards, an allocation only for the first request of a (minute, consumer, route, outcome)).
//! A background task of the gateway takes what was counted ([`Usage::take`]) every few seconds
//! and adds it to a [`UsageBackend`] in one batch: rows per minute and per hour, each write
//! *adding* to the stored figures, so several nodes writing to one database sum into one figure.
//! Reports aggregate the stored rows to hour, day or month on read ([`aggregate`]).
//!
//! Served requests are also exported to Prometheus as
//! `gatehouse_consumer_requests_total{consumer, route, outcome}`. Cardinality is bounded by
//! configuration: consumers and routes are configured entities, never raw request data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::Metrics;

const SHARDS: usize = 16;
const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 86_400_000;

/// How a request ended, for billing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered (by the upstream, or by the gateway itself with a non-error status).
    Served,
    /// Refused by the gateway with 429 (rate limit, quota).
    Refused,
    /// Refused by the gateway with 401 or 403 (authentication, ACL).
    AuthFailed,
    /// A 5xx (the upstream failed, or the gateway could not reach it).
    UpstreamError,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 4] = [Outcome::Served, Outcome::Refused, Outcome::AuthFailed, Outcome::UpstreamError];

    /// The request's outcome from its final status and whether the response came from the
    /// upstream (an upstream's own 401 or 429 is served traffic; any 5xx is an error).
    pub fn classify(status: u16, from_upstream: bool) -> Outcome {
        if status >= 500 {
            Outcome::UpstreamError
        } else if from_upstream {
            Outcome::Served
        } else {
            match status {
                429 => Outcome::Refused,
                401 | 403 => Outcome::AuthFailed,
                _ => Outcome::Served,
            }
        }
    }

    /// The name in reports and labels.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Served => "served",
            Outcome::Refused => "refused",
            Outcome::AuthFailed => "auth_failed",
            Outcome::UpstreamError => "upstream_error",
        }
    }

    /// The outcome named `s`.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.name() == s)
    }
}

/// The resolution of stored rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Span {
    /// Per-minute rows (kept for `usage.minute_retention`).
    Minute,
    /// Per-hour rows (kept for `usage.retention`).
    Hour,
}

impl Span {
    /// One-letter code in stores.
    pub fn code(self) -> &'static str {
        match self {
            Span::Minute => "m",
            Span::Hour => "h",
        }
    }

    /// The span of code `s`.
    pub fn parse(s: &str) -> Option<Span> {
        match s {
            "m" => Some(Span::Minute),
            "h" => Some(Span::Hour),
            _ => None,
        }
    }
}

/// The resolution of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Minutes (from the per-minute rows).
    Minute,
    /// Hours.
    Hour,
    /// UTC days.
    Day,
    /// Calendar months (UTC).
    Month,
}

impl Granularity {
    /// The granularity named `s` (`minute`, `hour`, `day`, `month`).
    pub fn parse(s: &str) -> Option<Granularity> {
        match s {
            "minute" => Some(Granularity::Minute),
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            "month" => Some(Granularity::Month),
            _ => None,
        }
    }

    /// The stored rows a report of this granularity is built from.
    pub fn span(self) -> Span {
        if self == Granularity::Minute { Span::Minute } else { Span::Hour }
    }

    /// Start of the bucket containing `ms`.
    pub fn bucket(self, ms: u64) -> u64 {
        match self {
            Granularity::Minute => ms - ms % MINUTE,
            Granularity::Hour => ms - ms % HOUR,
            Granularity::Day => ms - ms % DAY,
            Granularity::Month => {
                let (y, m, _) = gw_core::calendar::civil_from_days((ms / DAY) as i64);
                gw_core::calendar::days_from_civil(y, m, 1).max(0) as u64 * DAY
            }
        }
    }

    /// The bucket's label: `2026-11-26T13:05Z`, `2026-11-26T13Z`, `2026-11-26`, `2026-11`.
    pub fn label(self, bucket_ms: u64) -> String {
        let days = (bucket_ms / DAY) as i64;
        let (y, m, d) = gw_core::calendar::civil_from_days(days);
        let in_day = bucket_ms % DAY;
        match self {
            Granularity::Minute => {
                format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}Z", in_day / HOUR, in_day % HOUR / MINUTE)
            }
            Granularity::Hour => format!("{y:04}-{m:02}-{d:02}T{:02}Z", in_day / HOUR),
            Granularity::Day => format!("{y:04}-{m:02}-{d:02}"),
            Granularity::Month => format!("{y:04}-{m:02}"),
        }
    }
}

/// One stored row, or a delta to add to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Resolution.
    pub span: Span,
    /// Start of the minute or hour (ms since the Unix epoch).
    pub bucket_ms: u64,
    /// Consumer username (`-` for requests without a consumer).
    pub consumer: String,
    /// Route name.
    pub route: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Requests.
    pub requests: u64,
    /// Request body bytes received from clients.
    pub bytes_in: u64,
    /// Response bytes sent to clients.
    pub bytes_out: u64,
}

/// A quota counter as stored (see `gw_ratelimit::PeriodCounters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCount {
    /// Counter name (quota instance and client).
    pub name: String,
    /// Start of its period (ms since the Unix epoch).
    pub period_start_ms: u64,
    /// Requests counted in the period.
    pub count: u64,
}

/// Which rows a report covers (`None`: any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// One consumer.
    pub consumer: Option<String>,
    /// One route.
    pub route: Option<String>,
    /// One outcome.
    pub outcome: Option<Outcome>,
}

impl UsageFilter {
    /// Whether `r` passes.
    pub fn matches(&self, r: &UsageRow) -> bool {
        self.consumer.as_deref().is_none_or(|c| c == r.consumer)
            && self.route.as_deref().is_none_or(|x| x == r.route)
            && self.outcome.is_none_or(|o| o == r.outcome)
    }
}

/// Where usage rows and quota counters are kept: in memory ([`MemoryUsage`]), an embedded file
/// or PostgreSQL (gw-admin).
#[async_trait]
pub trait UsageBackend: Send + Sync + 'static {
    /// `memory`, `embedded`, `postgres`.
    fn kind(&self) -> &'static str;
    /// Add `rows` (each one's counts are added to the stored row of the same span, bucket,
    /// consumer, route and outcome; no two rows share those) and store `quotas` (a stored
    /// counter keeps the larger count), in one transaction.
    async fn write(&self, rows: &[UsageRow], quotas: &[QuotaCount]) -> Result<(), String>;
    /// Stored rows of `span` with `from_ms <= bucket < to_ms` that pass `filter`.
    async fn read(&self, span: Span, from_ms: u64, to_ms: u64, filter: &UsageFilter) -> Result<Vec<UsageRow>, String>;
    /// This node's quota counters of periods that started at or after `since_ms`.
    async fn quotas(&self, since_ms: u64) -> Result<Vec<QuotaCount>, String>;
    /// Delete rows of `span` older than `before_ms`, and quota counters of periods that started
    /// before `quotas_before_ms`.
    async fn prune(&self, span: Span, before_ms: u64, quotas_before_ms: u64) -> Result<(), String>;
}

/// One report line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageRecord {
    /// The bucket (`2026-11`, `2026-11-26`, `2026-11-26T13Z`, `2026-11-26T13:05Z`).
    pub period: String,
    /// Start of the bucket, ms since the Unix epoch.
    pub start_ms: u64,
    /// Consumer username.
    pub consumer: String,
    /// Route name.
    pub route: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Requests.
    pub requests: u64,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response bytes sent.
    pub bytes_out: u64,
}

/// Sum `rows` into buckets of `g`, sorted by bucket, consumer, route, outcome.
pub fn aggregate(rows: Vec<UsageRow>, g: Granularity) -> Vec<UsageRecord> {
    let mut m: BTreeMap<(u64, String, String, Outcome), [u64; 3]> = BTreeMap::new();
    for r in rows {
        let e = m.entry((g.bucket(r.bucket_ms), r.consumer, r.route, r.outcome)).or_default();
        e[0] += r.requests;
        e[1] += r.bytes_in;
        e[2] += r.bytes_out;
    }
    m.into_iter()
        .map(|((start_ms, consumer, route, outcome), [requests, bytes_in, bytes_out])| UsageRecord {
            period: g.label(start_ms),
            start_ms,
            consumer,
            route,
            outcome,
            requests,
            bytes_in,
            bytes_out,
        })
        .collect()
}

/// What identifies a stored row: span, bucket, consumer, route, outcome.
type RowKey = (Span, u64, String, String, Outcome);

/// Merge `rows` into `into`, adding the counts of rows with the same key.
pub fn merge(into: &mut Vec<UsageRow>, rows: Vec<UsageRow>) {
    type Key = RowKey;
    let mut index: HashMap<Key, usize> = HashMap::with_capacity(into.len() + rows.len());
    for (i, r) in into.iter().enumerate() {
        index.insert((r.span, r.bucket_ms, r.consumer.clone(), r.route.clone(), r.outcome), i);
    }
    for r in rows {
        let k = (r.span, r.bucket_ms, r.consumer.clone(), r.route.clone(), r.outcome);
        match index.get(&k) {
            Some(&i) => {
                let e = &mut into[i];
                e.requests += r.requests;
                e.bytes_in += r.bytes_in;
                e.bytes_out += r.bytes_out;
            }
            None => {
                index.insert(k, into.len());
                into.push(r);
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    consumer: String,
    route: String,
    outcome: &'static str,
}

struct Entry {
    minute_ms: u64,
    consumer: Box<str>,
    route: Box<str>,
    outcome: Outcome,
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
    counter: Counter,
}

/// In-memory usage counters not yet written out.
pub struct Usage {
    shards: Vec<Mutex<HashMap<u64, Vec<Entry>>>>,
    family: Family<UsageLabels, Counter>,
}

impl Usage {
    /// Counters registered in `metrics`.
    pub fn new(metrics: &Metrics) -> Usage {
        let family = Family::<UsageLabels, Counter>::default();
        let f = family.clone();
        metrics.register_with(|r| r.register("consumer_requests", "Requests by consumer, route and outcome", f));
        Usage { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), family }
    }

    fn hash(minute: u64, consumer: &str, route: &str, outcome: Outcome) -> u64 {
        // FNV-1a: deterministic and cheap for short names.
        let mut x: u64 = 0xcbf2_9ce4_8422_2325 ^ minute ^ ((outcome as u64) << 56);
        for b in consumer.bytes().chain([0xff]).chain(route.bytes()) {
            x ^= u64::from(b);
            x = x.wrapping_mul(0x0100_0000_01b3);
        }
        x
    }

    /// Count one request of `consumer` on `route` that ended at `now_ms` with `outcome`,
    /// having received `bytes_in` body bytes and sent `bytes_out`.
    pub fn record(&self, now_ms: u64, consumer: &str, route: &str, outcome: Outcome, bytes_in: u64, bytes_out: u64) {
        let minute_ms = now_ms - now_ms % MINUTE;
        let h = Self::hash(minute_ms / MINUTE, consumer, route, outcome);
        let Some(shard) = self.shards.get((h % SHARDS as u64) as usize) else { return };
        let Ok(mut m) = shard.lock() else { return };
        let bucket = m.entry(h).or_default();
        let found = bucket.iter_mut().find(|e| {
            e.minute_ms == minute_ms && e.outcome == outcome && &*e.consumer == consumer && &*e.route == route
        });
        let e = match found {
            Some(e) => e,
            None => {
                let counter = self
                    .family
                    .get_or_create(&UsageLabels {
                        consumer: consumer.into(),
                        route: route.into(),
                        outcome: outcome.name(),
                    })
                    .clone();
                bucket.push(Entry {
                    minute_ms,
                    consumer: consumer.into(),
                    route: route.into(),
                    outcome,
                    requests: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    counter,
                });
                let Some(e) = bucket.last_mut() else { return };
                e
            }
        };
        e.requests += 1;
        e.bytes_in += bytes_in;
        e.bytes_out += bytes_out;
        e.counter.inc();
    }

    /// Take everything counted since the last call, as per-minute and per-hour rows (the
    /// counters go back to zero). Entries of minutes before `now_ms`'s are dropped.
    pub fn take(&self, now_ms: u64) -> Vec<UsageRow> {
        let current = now_ms - now_ms % MINUTE;
        let mut minutes = Vec::new();
        for s in &self.shards {
            let Ok(mut m) = s.lock() else { continue };
            m.retain(|_, bucket| {
                for e in bucket.iter_mut() {
                    if e.requests > 0 {
                        minutes.push(UsageRow {
                            span: Span::Minute,
                            bucket_ms: e.minute_ms,
                            consumer: e.consumer.to_string(),
                            route: e.route.to_string(),
                            outcome: e.outcome,
                            requests: std::mem::take(&mut e.requests),
                            bytes_in: std::mem::take(&mut e.bytes_in),
                            bytes_out: std::mem::take(&mut e.bytes_out),
                        });
                    }
                }
                bucket.retain(|e| e.minute_ms >= current);
                !bucket.is_empty()
            });
        }
        let hours: Vec<UsageRow> = minutes
            .iter()
            .map(|r| UsageRow { span: Span::Hour, bucket_ms: r.bucket_ms - r.bucket_ms % HOUR, ..r.clone() })
            .collect();
        let mut out = Vec::with_capacity(minutes.len() + hours.len());
        merge(&mut out, minutes);
        merge(&mut out, hours);
        out
    }
}

/// Rows [`MemoryUsage`] keeps at most (about 150 bytes each); past this the oldest are dropped,
/// per-minute rows first.
pub(crate) const MEMORY_MAX_ROWS: usize = 200_000;

/// Usage kept in this process only (no `--store` and no `gateway.usage.path`): lost on restart,
/// and bounded to [`MEMORY_MAX_ROWS`] rows.
#[derive(Default)]
pub struct MemoryUsage {
    rows: Mutex<BTreeMap<RowKey, [u64; 3]>>,
    quotas: Mutex<HashMap<(String, u64), u64>>,
}

#[async_trait]
impl UsageBackend for MemoryUsage {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn write(&self, rows: &[UsageRow], quotas: &[QuotaCount]) -> Result<(), String> {
        let mut m = self.rows.lock().map_err(|_| "usage table poisoned")?;
        for r in rows {
            let e = m.entry((r.span, r.bucket_ms, r.consumer.clone(), r.route.clone(), r.outcome)).or_default();
            e[0] += r.requests;
            e[1] += r.bytes_in;
            e[2] += r.bytes_out;
        }
        // Keys sort by span (minutes first), then bucket: the oldest minute rows go first.
        while m.len() > MEMORY_MAX_ROWS {
            m.pop_first();
        }
        drop(m);
        let mut q = self.quotas.lock().map_err(|_| "quota table poisoned")?;
        for c in quotas {
            let e = q.entry((c.name.clone(), c.period_start_ms)).or_default();
            *e = (*e).max(c.count);
        }
        Ok(())
    }

    async fn read(&self, span: Span, from_ms: u64, to_ms: u64, filter: &UsageFilter) -> Result<Vec<UsageRow>, String> {
        let m = self.rows.lock().map_err(|_| "usage table poisoned")?;
        let lo = (span, from_ms, String::new(), String::new(), Outcome::Served);
        let mut out = Vec::new();
        for ((s, b, c, r, o), [n, bi, bo]) in m.range(lo..) {
            if *s != span || *b >= to_ms {
                break;
            }
            let row = UsageRow {
                span,
                bucket_ms: *b,
                consumer: c.clone(),
                route: r.clone(),
                outcome: *o,
                requests: *n,
                bytes_in: *bi,
                bytes_out: *bo,
            };
            if filter.matches(&row) {
                out.push(row);
            }
        }
        Ok(out)
    }

    async fn quotas(&self, since_ms: u64) -> Result<Vec<QuotaCount>, String> {
        let q = self.quotas.lock().map_err(|_| "quota table poisoned")?;
        Ok(q.iter()
            .filter(|((_, s), _)| *s >= since_ms)
            .map(|((name, s), n)| QuotaCount { name: name.clone(), period_start_ms: *s, count: *n })
            .collect())
    }

    async fn prune(&self, span: Span, before_ms: u64, quotas_before_ms: u64) -> Result<(), String> {
        self.rows.lock().map_err(|_| "usage table poisoned")?.retain(|(s, b, ..), _| *s != span || *b >= before_ms);
        self.quotas.lock().map_err(|_| "quota table poisoned")?.retain(|(_, s), _| *s >= quotas_before_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_from_status() {
        assert_eq!(Outcome::classify(200, true), Outcome::Served);
        assert_eq!(Outcome::classify(429, false), Outcome::Refused);
        assert_eq!(Outcome::classify(429, true), Outcome::Served, "the upstream's own 429 is served traffic");
        assert_eq!(Outcome::classify(401, false), Outcome::AuthFailed);
        assert_eq!(Outcome::classify(403, false), Outcome::AuthFailed);
        assert_eq!(Outcome::classify(502, false), Outcome::UpstreamError);
        assert_eq!(Outcome::classify(500, true), Outcome::UpstreamError);
        assert_eq!(Outcome::classify(404, false), Outcome::Served);
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.name()), Some(o));
        }
    }

    #[tokio::test]
    async fn counts_take_and_aggregate() {
        let m = Metrics::new();
        let u = Usage::new(&m);
        // 2024-10-04T00:00Z + 5 ms
        let day = 20_000u64 * DAY;
        u.record(day + 5, "alice", "orders", Outcome::Served, 10, 100);
        u.record(day + 6, "alice", "orders", Outcome::Served, 1, 1);
        u.record(day + 7, "alice", "orders", Outcome::Refused, 0, 50);
        u.record(day + 61_000, "bob", "orders", Outcome::Served, 0, 0);
        let rows = u.take(day + 61_000);
        // Minute rows: alice served, alice refused, bob; hour rows: the same three keys.
        assert_eq!(rows.len(), 6, "{rows:?}");
        assert!(u.take(day + 61_001).is_empty(), "taken once");
        let b = MemoryUsage::default();
        b.write(&rows, &[]).await.unwrap();
        b.write(&rows, &[]).await.unwrap(); // a second node's identical traffic adds up
        let all = b.read(Span::Hour, 0, u64::MAX, &UsageFilter::default()).await.unwrap();
        let days = aggregate(all, Granularity::Day);
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].period, "2024-10-04");
        assert_eq!((days[0].consumer.as_str(), days[0].outcome, days[0].requests), ("alice", Outcome::Served, 4));
        assert_eq!((days[0].bytes_in, days[0].bytes_out), (22, 202));
        assert_eq!((days[1].outcome, days[1].requests), (Outcome::Refused, 2));
        let f = UsageFilter { consumer: Some("bob".into()), ..Default::default() };
        let mins = aggregate(b.read(Span::Minute, 0, u64::MAX, &f).await.unwrap(), Granularity::Minute);
        assert_eq!((mins.len(), mins[0].period.as_str(), mins[0].requests), (1, "2024-10-04T00:01Z", 2));
        let months =
            aggregate(b.read(Span::Hour, 0, u64::MAX, &UsageFilter::default()).await.unwrap(), Granularity::Month);
        assert_eq!(months[0].period, "2024-10");
        assert_eq!(months[0].start_ms, gw_core::calendar::days_from_civil(2024, 10, 1) as u64 * DAY);
        // Prometheus: per outcome.
        let text = m.encode();
        assert!(text.contains("consumer=\"alice\",route=\"orders\",outcome=\"served\"} 2"), "{text}");
        assert!(text.contains("consumer=\"alice\",route=\"orders\",outcome=\"refused\"} 1"), "{text}");
        b.prune(Span::Minute, u64::MAX, 0).await.unwrap();
        assert!(b.read(Span::Minute, 0, u64::MAX, &UsageFilter::default()).await.unwrap().is_empty());
    }

    /// Memory mode is bounded: the oldest minute rows go first, hour rows stay.
    #[tokio::test]
    async fn memory_is_bounded() {
        let b = MemoryUsage::default();
        let row = |span, bucket_ms| UsageRow {
            span,
            bucket_ms,
            consumer: "c".into(),
            route: "r".into(),
            outcome: Outcome::Served,
            requests: 1,
            bytes_in: 0,
            bytes_out: 0,
        };
        let mut rows: Vec<UsageRow> = (0..MEMORY_MAX_ROWS as u64).map(|i| row(Span::Minute, i * MINUTE)).collect();
        rows.push(row(Span::Hour, 0));
        b.write(&rows, &[]).await.unwrap();
        let all = UsageFilter::default();
        assert_eq!(b.read(Span::Hour, 0, u64::MAX, &all).await.unwrap().len(), 1);
        let minutes = b.read(Span::Minute, 0, u64::MAX, &all).await.unwrap();
        assert_eq!(minutes.len(), MEMORY_MAX_ROWS - 1);
        assert_eq!(minutes[0].bucket_ms, MINUTE, "the oldest minute row was dropped");
    }

    #[test]
    fn labels() {
        let t = gw_core::calendar::days_from_civil(2026, 11, 26) as u64 * DAY + 13 * HOUR + 5 * MINUTE + 7;
        assert_eq!(Granularity::Minute.label(Granularity::Minute.bucket(t)), "2026-11-26T13:05Z");
        assert_eq!(Granularity::Hour.label(Granularity::Hour.bucket(t)), "2026-11-26T13Z");
        assert_eq!(Granularity::Day.label(Granularity::Day.bucket(t)), "2026-11-26");
        assert_eq!(Granularity::Month.label(Granularity::Month.bucket(t)), "2026-11");
    }
}
