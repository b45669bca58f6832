//! The dashboard's usage panel: usage by consumer and route over a chosen period (the last hour
//! by minute, today by hour, this month by day), split by outcome, with bytes in and out. The
//! figures are the usage store's, read through the same report as `GET /usage` (so in a cluster
//! they are every node's), and the panel links to the matching `GET /usage/export`.
//!
//! [`Period`] and [`panel`] are pure: the records in, the panel's JSON out.

use std::collections::BTreeMap;

use gw_observability::{Granularity, Outcome, UsageRecord};
use serde_json::{Value, json};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 86_400_000;

/// Rows (consumer and route pairs) sent at most; the totals count them all.
pub(crate) const MAX_ROWS: usize = 200;

/// A period the panel shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    /// The last 60 minutes (the current one included), by minute.
    Hour,
    /// Today (UTC), by hour.
    Day,
    /// This calendar month (UTC), by day.
    Month,
}

impl Period {
    pub(crate) fn parse(s: &str) -> Option<Period> {
        match s {
            "hour" => Some(Period::Hour),
            "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The buckets' size.
    pub(crate) fn granularity(self) -> Granularity {
        match self {
            Period::Hour => Granularity::Minute,
            Period::Day => Granularity::Hour,
            Period::Month => Granularity::Day,
        }
    }

    fn granularity_name(self) -> &'static str {
        match self {
            Period::Hour => "minute",
            Period::Day => "hour",
            Period::Month => "day",
        }
    }

    fn step(self) -> u64 {
        match self {
            Period::Hour => MINUTE,
            Period::Day => HOUR,
            Period::Month => DAY,
        }
    }

    /// `[from, to)` in ms since the Unix epoch at `now_ms`: whole buckets, the current one
    /// included to its end.
    pub(crate) fn range(self, now_ms: u64) -> (u64, u64) {
        match self {
            Period::Hour => {
                let m = Granularity::Minute.bucket(now_ms);
                (m.saturating_sub(59 * MINUTE), m + MINUTE)
            }
            Period::Day => {
                let d = Granularity::Day.bucket(now_ms);
                (d, d + DAY)
            }
            Period::Month => (Granularity::Month.bucket(now_ms), Granularity::Day.bucket(now_ms) + DAY),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form `from` and `to` of `GET /usage/export` take.
fn instant(ms: u64) -> String {
    let (y, m, d) = gw_core::calendar::civil_from_days((ms / DAY) as i64);
    let t = ms % DAY / 1000;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t % 3600 / 60, t % 60)
}

/// Requests per outcome, in [`Outcome::ALL`] order, and bytes in and out.
#[derive(Default, Clone, Copy)]
struct Counts {
    by_outcome: [u64; 4],
    bytes_in: u64,
    bytes_out: u64,
}

impl Counts {
    fn add(&mut self, r: &UsageRecord) {
        let i = Outcome::ALL.iter().position(|o| *o == r.outcome).unwrap_or(0);
        self.by_outcome[i] += r.requests;
        self.bytes_in += r.bytes_in;
        self.bytes_out += r.bytes_out;
    }

    fn json(&self, mut v: serde_json::Map<String, Value>) -> Value {
        v.insert("requests".into(), json!(self.by_outcome.iter().sum::<u64>()));
        for (o, n) in Outcome::ALL.iter().zip(self.by_outcome) {
            v.insert(o.name().into(), json!(n));
        }
        v.insert("bytes_in".into(), json!(self.bytes_in));
        v.insert("bytes_out".into(), json!(self.bytes_out));
        Value::Object(v)
    }
}

fn obj(pairs: &[(&str, Value)]) -> serde_json::Map<String, Value> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect()
}

/// `s` as a URL query value (RFC 3986 unreserved characters kept, every other byte `%XX`).
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The panel for `period` from the records of its range (see [`Period::range`]), reported by
/// the usage store at `granularity()`; `consumer`: the records are that consumer's only (the
/// export links say so too).
pub(crate) fn panel(
    period: Period,
    now_ms: u64,
    records: &[UsageRecord],
    store: &str,
    consumer: Option<&str>,
) -> Value {
    let (from, to) = period.range(now_ms);
    let mut rows: BTreeMap<(&str, &str), Counts> = BTreeMap::new();
    let mut totals = Counts::default();
    // One bucket per step of the range, empty ones included (a month's days are whole days).
    let mut series: BTreeMap<u64, Counts> =
        (0..).map(|i| from + i * period.step()).take_while(|t| *t < to).map(|t| (t, Counts::default())).collect();
    for r in records {
        if r.start_ms < from || r.start_ms >= to {
            continue;
        }
        rows.entry((r.consumer.as_str(), r.route.as_str())).or_default().add(r);
        totals.add(r);
        series.entry(period.granularity().bucket(r.start_ms)).or_default().add(r);
    }
    let total_rows = rows.len();
    let mut rows: Vec<((&str, &str), Counts)> = rows.into_iter().collect();
    rows.sort_by(|a, b| {
        let (na, nb) = (a.1.by_outcome.iter().sum::<u64>(), b.1.by_outcome.iter().sum::<u64>());
        nb.cmp(&na).then_with(|| a.0.cmp(&b.0))
    });
    let rows: Vec<Value> = rows
        .into_iter()
        .take(MAX_ROWS)
        .map(|((c, r), n)| n.json(obj(&[("consumer", json!(c)), ("route", json!(r))])))
        .collect();
    let series: Vec<Value> = series
        .into_iter()
        .map(|(t, n)| n.json(obj(&[("start", json!(instant(t))), ("label", json!(period.granularity().label(t)))])))
        .collect();
    let mut query = format!("granularity={}&from={}&to={}", period.granularity_name(), instant(from), instant(to));
    if let Some(c) = consumer {
        query.push_str("&consumer=");
        query.push_str(&query_value(c));
    }
    json!({
        "period": period.name(),
        "consumer": consumer,
        "granularity": period.granularity_name(),
        "from": instant(from),
        "to": instant(to),
        "store": store,
        "outcomes": Outcome::ALL.iter().map(|o| o.name()).collect::<Vec<_>>(),
        "totals": totals.json(serde_json::Map::new()),
        "rows": rows,
        "rows_total": total_rows,
        "series": series,
        // Relative to the page (`/dashboard/`): the Admin API's export of the same range.
        "export": {
            "csv": format!("../usage/export?{query}"),
            "json": format!("../usage/export?{query}&format=json"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(start_ms: u64, consumer: &str, route: &str, outcome: Outcome, requests: u64) -> UsageRecord {
        UsageRecord {
            period: String::new(),
            start_ms,
            consumer: consumer.into(),
            route: route.into(),
            outcome,
            requests,
            bytes_in: requests * 10,
            bytes_out: requests * 100,
        }
    }

    /// 2026-12-05T13:05:30Z.
    const NOW: u64 = 1_796_475_930_000;

    #[test]
    fn ranges_are_whole_buckets() {
        assert_eq!(instant(NOW), "2026-12-05T13:05:30Z");
        let (f, t) = Period::Hour.range(NOW);
        assert_eq!((instant(f).as_str(), instant(t).as_str()), ("2026-12-05T12:06:00Z", "2026-12-05T13:06:00Z"));
        let (f, t) = Period::Day.range(NOW);
        assert_eq!((instant(f).as_str(), instant(t).as_str()), ("2026-12-05T00:00:00Z", "2026-12-06T00:00:00Z"));
        let (f, t) = Period::Month.range(NOW);
        assert_eq!((instant(f).as_str(), instant(t).as_str()), ("2026-12-01T00:00:00Z", "2026-12-06T00:00:00Z"));
        assert_eq!(Period::parse("week"), None);
    }

    #[test]
    fn rows_split_by_outcome_and_series_cover_the_range() {
        let (from, _) = Period::Hour.range(NOW);
        let m = Granularity::Minute.bucket(NOW);
        let records = vec![
            rec(from - MINUTE, "alice", "orders", Outcome::Served, 1000), // before the range
            rec(m, "alice", "orders", Outcome::Served, 5),
            rec(m - MINUTE, "alice", "orders", Outcome::Served, 2),
            rec(m, "alice", "orders", Outcome::Refused, 3),
            rec(m, "bob", "orders", Outcome::UpstreamError, 1),
            rec(m, "-", "orders", Outcome::AuthFailed, 4),
        ];
        let p = panel(Period::Hour, NOW, &records, "embedded", None);
        assert_eq!(p["rows_total"], 3);
        let alice = &p["rows"][0];
        assert_eq!((alice["consumer"].as_str(), alice["route"].as_str()), (Some("alice"), Some("orders")));
        assert_eq!((alice["served"].as_u64(), alice["refused"].as_u64()), (Some(7), Some(3)));
        assert_eq!((alice["requests"].as_u64(), alice["bytes_in"].as_u64()), (Some(10), Some(100)));
        assert_eq!(p["rows"][1]["consumer"], "-");
        assert_eq!(p["rows"][1]["auth_failed"], 4);
        assert_eq!(p["rows"][2]["upstream_error"], 1);
        assert_eq!(p["totals"]["requests"], 15);
        assert_eq!(p["totals"]["bytes_out"], 1500);
        let series = p["series"].as_array().unwrap();
        assert_eq!(series.len(), 60);
        assert_eq!(series[59]["label"], "2026-12-05T13:05Z");
        assert_eq!(series[59]["requests"], 13);
        assert_eq!(series[58]["served"], 2);
        assert_eq!(
            p["export"]["csv"],
            "../usage/export?granularity=minute&from=2026-12-05T12:06:00Z&to=2026-12-05T13:06:00Z"
        );
        assert!(p["consumer"].is_null());
        let month = panel(Period::Month, NOW, &[], "memory", None);
        assert_eq!(month["series"].as_array().unwrap().len(), 5, "December 1st to 5th");
        assert_eq!(month["totals"]["requests"], 0);
    }

    /// One consumer's panel names it, and its export links ask for that consumer only, the
    /// name written as a query value.
    #[test]
    fn consumer_panel_links_its_export() {
        let p = panel(Period::Hour, NOW, &[], "memory", Some("ann & co/é"));
        assert_eq!(p["consumer"], "ann & co/é");
        assert_eq!(
            p["export"]["csv"],
            "../usage/export?granularity=minute&from=2026-12-05T12:06:00Z&to=2026-12-05T13:06:00Z&consumer=ann%20%26%20co%2F%C3%A9"
        );
        assert!(p["export"]["json"].as_str().unwrap().ends_with("&consumer=ann%20%26%20co%2F%C3%A9&format=json"));
    }
}
