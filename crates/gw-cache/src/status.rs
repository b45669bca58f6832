//! The cache status a response is served with, as a simple header value (`HIT`, `MISS`, ...)
//! or as an RFC 9211 `Cache-Status` field.

use http::{HeaderName, HeaderValue};

/// What the cache did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served fresh from the cache (or from a response another request was fetching).
    Hit,
    /// Not in the cache; fetched from the upstream.
    Miss,
    /// In the cache but stale; a full response was fetched.
    Expired,
    /// Served stale (`max-stale`, `stale-while-revalidate`, `stale-if-error`).
    Stale,
    /// Stale in the cache, validated with the upstream (304) and served.
    Revalidated,
    /// The cache was not used (method, bypass rule, `Authorization`, Redis down for a miss...).
    Bypass,
}

impl CacheStatus {
    /// `HIT`, `MISS`, `EXPIRED`, `STALE`, `REVALIDATED`, `BYPASS`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// Details for RFC 9211 `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusDetail {
    /// Remaining freshness in seconds (negative when stale); on responses served from the cache.
    pub ttl: Option<i64>,
    /// The response was stored.
    pub stored: bool,
    /// The request waited for another request's response (coalescing).
    pub collapsed: bool,
    /// A `Vary` mismatch caused the miss.
    pub vary_miss: bool,
    /// The bypass was requested by the client (e.g. `only-if-cached` failing, `no-store`) or by
    /// the method.
    pub fwd_method: bool,
    /// The status the upstream answered with, when forwarded.
    pub fwd_status: Option<u16>,
    /// The request's primary key (shown as `key` when [`StatusHeader::key`] is set).
    pub key: Option<u128>,
}

impl StatusDetail {
    /// No detail but the primary key.
    pub fn keyed(key: u128) -> StatusDetail {
        StatusDetail { key: Some(key), ..StatusDetail::default() }
    }
}

/// How the status is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusHeader {
    /// Field name for the simple form (default `x-cache-status`).
    pub name: HeaderName,
    /// Use RFC 9211 `Cache-Status` instead.
    pub rfc9211: bool,
    /// The cache's name in `Cache-Status` (default `gatehouse`).
    pub cache_name: String,
    /// Add the `key` parameter (the primary key as 32 hex digits, what a purge by key names)
    /// to `Cache-Status` (default `false`).
    pub key: bool,
}

impl Default for StatusHeader {
    fn default() -> Self {
        StatusHeader {
            name: HeaderName::from_static("x-cache-status"),
            rfc9211: false,
            cache_name: "gatehouse".into(),
            key: false,
        }
    }
}

/// The RFC 9211 field value for a status.
pub fn rfc9211_value(cache_name: &str, status: CacheStatus, d: StatusDetail) -> String {
    let mut s = String::from(cache_name);
    match status {
        CacheStatus::Hit | CacheStatus::Stale if !d.collapsed => {
            s.push_str("; hit");
        }
        CacheStatus::Hit | CacheStatus::Stale => s.push_str("; fwd=uri-miss; collapsed"),
        CacheStatus::Miss => s.push_str(if d.vary_miss { "; fwd=vary-miss" } else { "; fwd=uri-miss" }),
        CacheStatus::Expired | CacheStatus::Revalidated => s.push_str("; fwd=stale"),
        CacheStatus::Bypass => s.push_str(if d.fwd_method { "; fwd=method" } else { "; fwd=bypass" }),
    }
    let fwd_status = match status {
        CacheStatus::Revalidated => Some(304),
        _ => d.fwd_status,
    };
    if let Some(fs) = fwd_status
        && !matches!(status, CacheStatus::Hit | CacheStatus::Stale)
    {
        s.push_str(&format!("; fwd-status={fs}"));
    }
    if let Some(t) = d.ttl {
        s.push_str(&format!("; ttl={t}"));
    }
    if d.stored {
        s.push_str("; stored");
    }
    if let Some(k) = d.key {
        // An sf-string: hex digits need no escaping.
        s.push_str(&format!("; key=\"{k:032x}\""));
    }
    s
}

impl StatusHeader {
    /// The field to add to a response.
    pub fn field(&self, status: CacheStatus, d: StatusDetail) -> (HeaderName, HeaderValue) {
        if self.rfc9211 {
            let d = StatusDetail { key: if self.key { d.key } else { None }, ..d };
            let v = rfc9211_value(&self.cache_name, status, d);
            let v = HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("gatehouse"));
            (HeaderName::from_static("cache-status"), v)
        } else {
            (self.name.clone(), HeaderValue::from_static(status.as_str()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_values() {
        let h = StatusHeader::default();
        let all = [
            (CacheStatus::Hit, "HIT"),
            (CacheStatus::Miss, "MISS"),
            (CacheStatus::Expired, "EXPIRED"),
            (CacheStatus::Stale, "STALE"),
            (CacheStatus::Revalidated, "REVALIDATED"),
            (CacheStatus::Bypass, "BYPASS"),
        ];
        for (s, want) in all {
            let (n, v) = h.field(s, StatusDetail::default());
            assert_eq!((n.as_str(), v.to_str().ok()), ("x-cache-status", Some(want)));
        }
    }

    #[test]
    fn rfc9211_forms() {
        let v = |s, d| rfc9211_value("gatehouse", s, d);
        assert_eq!(v(CacheStatus::Hit, StatusDetail { ttl: Some(30), ..Default::default() }), "gatehouse; hit; ttl=30");
        assert_eq!(
            v(CacheStatus::Stale, StatusDetail { ttl: Some(-5), ..Default::default() }),
            "gatehouse; hit; ttl=-5"
        );
        assert_eq!(
            v(CacheStatus::Miss, StatusDetail { stored: true, fwd_status: Some(200), ..Default::default() }),
            "gatehouse; fwd=uri-miss; fwd-status=200; stored"
        );
        assert_eq!(
            v(CacheStatus::Miss, StatusDetail { vary_miss: true, ..Default::default() }),
            "gatehouse; fwd=vary-miss"
        );
        assert_eq!(
            v(CacheStatus::Revalidated, StatusDetail { ttl: Some(60), ..Default::default() }),
            "gatehouse; fwd=stale; fwd-status=304; ttl=60"
        );
        assert_eq!(
            v(CacheStatus::Expired, StatusDetail { fwd_status: Some(200), stored: true, ..Default::default() }),
            "gatehouse; fwd=stale; fwd-status=200; stored"
        );
        assert_eq!(v(CacheStatus::Bypass, StatusDetail::default()), "gatehouse; fwd=bypass");
        assert_eq!(
            v(CacheStatus::Bypass, StatusDetail { fwd_method: true, ..Default::default() }),
            "gatehouse; fwd=method"
        );
        assert_eq!(
            v(CacheStatus::Hit, StatusDetail { collapsed: true, ..Default::default() }),
            "gatehouse; fwd=uri-miss; collapsed"
        );
        let h = StatusHeader { rfc9211: true, ..StatusHeader::default() };
        assert_eq!(h.field(CacheStatus::Bypass, StatusDetail::default()).0.as_str(), "cache-status");
        // The key only when asked for.
        let d = StatusDetail { ttl: Some(30), ..StatusDetail::keyed(0xab) };
        assert_eq!(h.field(CacheStatus::Hit, d).1, "gatehouse; hit; ttl=30");
        let h = StatusHeader { key: true, ..h };
        assert_eq!(h.field(CacheStatus::Hit, d).1, "gatehouse; hit; ttl=30; key=\"000000000000000000000000000000ab\"");
        assert_eq!(h.field(CacheStatus::Bypass, StatusDetail::default()).1, "gatehouse; fwd=bypass");
    }
}
