//! Schemas of the traffic-control plugins: rate-limiting, concurrency-limit, quota.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::t;
use super::{PluginSchema, SchemaError};
use crate::value::Dur;

/// Counting algorithm of `rate-limiting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RateAlgorithm {
    /// Sliding window counter (default): the previous window weighted by its overlap.
    #[default]
    SlidingWindow,
    /// Fixed calendar windows, exact counts.
    FixedWindow,
    /// GCRA (smooth token bucket): requests spread evenly, bursts up to the limit.
    Gcra,
}

/// Where counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CounterPolicy {
    /// In this gateway process (default).
    #[default]
    Local,
    /// In Redis (`gateway.redis`), shared by every gateway node.
    Redis,
}

/// What happens when Redis cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Let traffic pass (counted in `gatehouse_plugin_events_total` and logged). Default.
    #[default]
    Open,
    /// Refuse with 503.
    Closed,
}

/// Delay requests over the limit instead of refusing them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// Longest a request waits for room; a request that would wait longer gets 429.
    pub max_wait: Dur,
    /// Most requests waiting at once (per plugin instance and worker); more get 429.
    /// Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
}

fn default_limit_by() -> Vec<String> {
    vec!["consumer".into()]
}

/// Check `limit_by` entries.
fn check_limit_by(field: &str, v: &[String]) -> Result<(), SchemaError> {
    if v.is_empty() {
        return Err(SchemaError::new(
            field,
            "list at least one of consumer, credential, ip, route, service, header:<name>",
        ));
    }
    for (i, k) in v.iter().enumerate() {
        let ok = match k.as_str() {
            "consumer" | "credential" | "ip" | "route" | "service" => true,
            other => other
                .strip_prefix("header:")
                .is_some_and(|h| http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).is_ok()),
        };
        if !ok {
            return Err(SchemaError::new(
                format!("{field}[{i}]"),
                format!("{k:?}: use consumer, credential, ip, route, service or header:<name>"),
            ));
        }
    }
    Ok(())
}

/// `rate-limiting`: limits per second, minute, hour, day and month at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimiting {
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second: Option<u64>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minute: Option<u64>,
    /// Requests per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<u64>,
    /// Requests per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u64>,
    /// Requests per 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<u64>,
    /// What identifies a client, combined: `consumer` and `credential` (the client IP when the
    /// request has none), `ip`, `route`, `service`, `header:<name>`. Default `[consumer]`.
    #[serde(default = "default_limit_by")]
    pub limit_by: Vec<String>,
    /// Counting algorithm. Default `sliding-window`.
    #[serde(default)]
    pub algorithm: RateAlgorithm,
    /// `local` (default) or `redis`.
    #[serde(default)]
    pub policy: CounterPolicy,
    /// When Redis fails: `open` (default) or `closed`.
    #[serde(default)]
    pub failure_mode: StoreFailure,
    /// Redis batched mode: count locally and synchronise with Redis this often (e.g. `100ms`)
    /// instead of one round trip per request. Window algorithms only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_interval: Option<Dur>,
    /// Send `RateLimit-Policy` and `RateLimit` (IETF draft) on every response. Default `true`.
    #[serde(default = "t")]
    pub headers: bool,
    /// Also send `X-RateLimit-Limit/Remaining/Reset` (and per-window variants). Default `false`.
    #[serde(default)]
    pub legacy_headers: bool,
    /// Delay instead of refusing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    /// Most keys held in memory (local policy; also the local cache of batched mode). About
    /// 400 bytes each. Default 100,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u64>,
    /// Refusal message. Default "rate limit exceeded".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RateLimiting {
    /// `(name, window in ms, max)` of every configured limit, shortest window first.
    pub fn limits(&self) -> Vec<(&'static str, u64, u64)> {
        [
            ("second", 1_000, self.second),
            ("minute", 60_000, self.minute),
            ("hour", 3_600_000, self.hour),
            ("day", 86_400_000, self.day),
            ("month", 30 * 86_400_000, self.month),
        ]
        .into_iter()
        .filter_map(|(n, w, m)| m.map(|m| (n, w, m)))
        .collect()
    }
}

impl PluginSchema for RateLimiting {
    fn validate(&self) -> Result<(), SchemaError> {
        if self.limits().is_empty() {
            return Err(SchemaError::new("second", "set at least one of second, minute, hour, day, month"));
        }
        check_limit_by("limit_by", &self.limit_by)?;
        if let Some(t) = &self.throttle
            && t.max_wait.get() > std::time::Duration::from_secs(60)
        {
            return Err(SchemaError::new("throttle.max_wait", "at most 60s"));
        }
        if let Some(d) = &self.sync_interval {
            if self.policy != CounterPolicy::Redis {
                return Err(SchemaError::new("sync_interval", "only applies with `policy: redis`"));
            }
            if self.algorithm == RateAlgorithm::Gcra {
                return Err(SchemaError::new("sync_interval", "batched mode needs a window algorithm, not gcra"));
            }
            if d.get() < std::time::Duration::from_millis(10) || d.get() > std::time::Duration::from_secs(60) {
                return Err(SchemaError::new("sync_interval", "between 10ms and 60s"));
            }
        }
        if self.max_keys == Some(0) {
            return Err(SchemaError::new("max_keys", "must be at least 1"));
        }
        Ok(())
    }
}

fn default_concurrency_by() -> Vec<String> {
    vec!["route".into()]
}

/// `concurrency-limit`: at most `max` requests in flight per key; more get 503.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimit {
    /// Requests in flight allowed per key (per gateway node).
    pub max: u32,
    /// Key, as for `rate-limiting`. Default `[route]`.
    #[serde(default = "default_concurrency_by")]
    pub limit_by: Vec<String>,
    /// Refusal message. Default "too many requests in flight".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PluginSchema for ConcurrencyLimit {
    fn validate(&self) -> Result<(), SchemaError> {
        if self.max == 0 {
            return Err(SchemaError::new("max", "must be at least 1"));
        }
        check_limit_by("limit_by", &self.limit_by)
    }
}

/// A quota period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    /// Clock hours (UTC).
    Hour,
    /// UTC days.
    Day,
    /// Weeks from Monday 00:00 UTC.
    Week,
    /// Calendar months (UTC). Default.
    #[default]
    Month,
}

/// `quota`: requests per calendar period per consumer, with plans by consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Requests per period for consumers without a plan (and for requests without a consumer,
    /// counted per client IP). `0` refuses them.
    pub limit: u64,
    /// Period. Default `month`.
    #[serde(default)]
    pub period: QuotaPeriod,
    /// Plans: consumer group -> requests per period (the largest of a consumer's groups wins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plans: BTreeMap<String, u64>,
    /// `local` (default) or `redis`.
    #[serde(default)]
    pub policy: CounterPolicy,
    /// When Redis fails: `open` (default) or `closed`.
    #[serde(default)]
    pub failure_mode: StoreFailure,
    /// Send `X-Quota-Limit`, `X-Quota-Remaining`, `X-Quota-Reset`. Default `true`.
    #[serde(default = "t")]
    pub headers: bool,
}

impl PluginSchema for Quota {}
