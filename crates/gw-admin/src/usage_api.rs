//! `GET /usage` (paged JSON) and `GET /usage/export` (CSV or JSON, for billing): usage by
//! consumer, route, outcome and period, read from the usage store (every node's figures).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gw_observability::{Granularity, Outcome, UsageFilter, UsageRecord};
use serde::Deserialize;
use serde_json::json;

use crate::api::{AdminState, ApiError};

const DAY: u64 = 86_400_000;

/// The query of both endpoints (`offset` and `size` page `GET /usage` only).
#[derive(Deserialize)]
pub(crate) struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    granularity: Option<String>,
    consumer: Option<String>,
    route: Option<String>,
    outcome: Option<String>,
    offset: Option<u64>,
    size: Option<usize>,
    format: Option<String>,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", msg)
}

/// `YYYY-MM-DD` (the day's start, or with `end` the next day's start) or
/// `YYYY-MM-DDTHH:MM:SSZ`, as ms since the Unix epoch (clamped at 0).
pub(crate) fn parse_instant(s: &str, end: bool) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().ok() } else { None }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = gw_core::calendar::days_from_civil(i64::from(y), m, d);
    let day_ms = |days: i64| u64::try_from(days).unwrap_or(0).saturating_mul(DAY);
    match b.len() {
        10 => Some(if end { day_ms(days + 1) } else { day_ms(days) }),
        20 if b[10] == b'T' && b[13] == b':' && b[16] == b':' && b[19] == b'Z' => {
            let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
            if h > 23 || mi > 59 || sec > 59 {
                return None;
            }
            let base = day_ms(days);
            if days < 0 {
                return Some(0);
            }
            Some(base + u64::from(h) * 3_600_000 + u64::from(mi) * 60_000 + u64::from(sec) * 1000)
        }
        _ => None,
    }
}

/// The pattern of `from` and `to` in the OpenAPI document.
pub(crate) const INSTANT_PATTERN: &str =
    "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z)?$";

struct Parsed {
    from_ms: u64,
    to_ms: u64,
    granularity: Granularity,
    granularity_name: &'static str,
    filter: UsageFilter,
}

fn parse(q: &UsageQuery, now_ms: u64) -> Result<Parsed, ApiError> {
    let from_ms = match &q.from {
        Some(f) => {
            parse_instant(f, false).ok_or_else(|| invalid("from: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"))?
        }
        // Default: the current calendar month.
        None => Granularity::Month.bucket(now_ms),
    };
    let to_ms = match &q.to {
        Some(t) => parse_instant(t, true).ok_or_else(|| invalid("to: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"))?,
        None => now_ms + 1,
    };
    let (granularity, granularity_name) = match q.granularity.as_deref().unwrap_or("day") {
        "minute" => (Granularity::Minute, "minute"),
        "hour" => (Granularity::Hour, "hour"),
        "day" => (Granularity::Day, "day"),
        "month" => (Granularity::Month, "month"),
        _ => return Err(invalid("granularity: minute, hour, day or month")),
    };
    let outcome = match q.outcome.as_deref() {
        None => None,
        Some(o) => {
            Some(Outcome::parse(o).ok_or_else(|| invalid("outcome: served, refused, auth_failed or upstream_error"))?)
        }
    };
    let filter = UsageFilter { consumer: q.consumer.clone(), route: q.route.clone(), outcome };
    Ok(Parsed { from_ms, to_ms, granularity, granularity_name, filter })
}

fn rfc3339(ms: u64) -> String {
    gw_observability::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

async fn records(s: &AdminState, p: &Parsed) -> Result<Vec<UsageRecord>, ApiError> {
    if p.from_ms >= p.to_ms {
        return Ok(Vec::new());
    }
    s.gw.usage_report(p.granularity, p.from_ms, p.to_ms, &p.filter)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e))
}

fn record_json(r: &UsageRecord) -> serde_json::Value {
    json!({
        "period": r.period,
        "start": rfc3339(r.start_ms),
        "consumer": r.consumer,
        "route": r.route,
        "outcome": r.outcome.name(),
        "requests": r.requests,
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
    })
}

/// `GET /usage`: one page of usage records.
pub(crate) async fn list(
    State(s): State<Arc<AdminState>>,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| invalid(e.to_string()))?;
    let size = match q.size.unwrap_or(100) {
        n @ 1..=1000 => n,
        _ => return Err(invalid("size: between 1 and 1000")),
    };
    let offset = q.offset.unwrap_or(0);
    if offset > 9_007_199_254_740_991 {
        return Err(invalid("offset: at most 9007199254740991"));
    }
    let p = parse(&q, s.gw.now_ms())?;
    let all = records(&s, &p).await?;
    let total = all.len();
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let data: Vec<_> = all.iter().skip(offset).take(size).map(record_json).collect();
    let next = (offset.saturating_add(data.len()) < total).then_some(offset + data.len());
    Ok(axum::Json(json!({
        "data": data,
        "total": total,
        "offset": offset,
        "next": next,
        "from": rfc3339(p.from_ms),
        "to": rfc3339(p.to_ms),
        "granularity": p.granularity_name,
        "store": s.gw.usage_store_kind(),
    }))
    .into_response())
}

/// A CSV field (names are restricted, but quote anything a spreadsheet would misread).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// The CSV export's columns.
pub(crate) const CSV_HEADER: &str = "period,start,consumer,route,outcome,requests,bytes_in,bytes_out";

/// `GET /usage/export`: every record of the range, as CSV (default) or JSON.
pub(crate) async fn export(
    State(s): State<Arc<AdminState>>,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| invalid(e.to_string()))?;
    let csv = match q.format.as_deref().unwrap_or("csv") {
        "csv" => true,
        "json" => false,
        _ => return Err(invalid("format: csv or json")),
    };
    let p = parse(&q, s.gw.now_ms())?;
    let all = records(&s, &p).await?;
    let name = format!("usage-{}-{}", &rfc3339(p.from_ms)[..10], &rfc3339(p.to_ms)[..10]);
    let mut r = if csv {
        let mut out = String::with_capacity(64 * (all.len() + 1));
        out.push_str(CSV_HEADER);
        out.push('\n');
        for r in &all {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                r.period,
                rfc3339(r.start_ms),
                csv_field(&r.consumer),
                csv_field(&r.route),
                r.outcome.name(),
                r.requests,
                r.bytes_in,
                r.bytes_out
            ));
        }
        let mut r = out.into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
        r
    } else {
        axum::Json(json!({
            "from": rfc3339(p.from_ms),
            "to": rfc3339(p.to_ms),
            "granularity": p.granularity_name,
            "data": all.iter().map(record_json).collect::<Vec<_>>(),
        }))
        .into_response()
    };
    let ext = if csv { "csv" } else { "json" };
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.{ext}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants() {
        let d = gw_core::calendar::days_from_civil(2026, 11, 26) as u64 * DAY;
        assert_eq!(parse_instant("2026-11-26", false), Some(d));
        assert_eq!(parse_instant("2026-11-26", true), Some(d + DAY));
        assert_eq!(parse_instant("2026-11-26T13:05:07Z", false), Some(d + 13 * 3_600_000 + 5 * 60_000 + 7000));
        for bad in ["2026-13-01", "2026-11-26T24:00:00Z", "26-11-26", "2026-11-26T13:05Z", "yesterday", "2026-1-26x"] {
            assert_eq!(parse_instant(bad, false), None, "{bad}");
        }
        assert_eq!(parse_instant("0000-01-01", false), Some(0), "before the epoch: clamped");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
