//! Gatehouse rate-limiting engine.
//!
//! - [`Algorithm`]: GCRA (a token bucket without a refill task: smooth, one timestamp per key),
//!   sliding window (the current and previous window counts, the previous one weighted by how
//!   much of it still overlaps the sliding window) and fixed window (exact counts per calendar
//!   window).
//! - [`LocalStore`]: in-process state, one cell per key and limit, updated with atomic
//!   compare-and-swap (no lock on the hot path); cells expire when idle and the number of keys is
//!   capped, so a flood of distinct client IPs cannot grow memory without bound.
//! - [`RedisStore`]: state shared by every gateway node, checked and updated atomically by one
//!   Lua script in one round trip per request; a short timeout, and a back-off after an outage
//!   (per master on a Redis Cluster) so that a down or slow Redis costs requests nothing while
//!   the caller applies its fail-open or fail-closed policy.
//! - [`BatchedStore`]: local counting synchronised with Redis every N ms (one pipeline per
//!   cluster slot), for very high traffic where a Redis round trip per request is too much.
//! - [`period`]: calendar periods (hour, day, week, month, UTC) for quotas.
//!
//! Every check takes the time as an argument (milliseconds since the Unix epoch) so that callers
//! can use an injectable clock.

mod batched;
mod local;
pub mod period;
mod redis_store;

pub use batched::{BatchedStore, SyncFailureHook};
pub use local::LocalStore;
pub use redis_store::{RedisConfig, RedisStore, StoreError};

/// How requests are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Generic cell rate algorithm: `max` requests per `window`, spread evenly, with a burst of
    /// up to `max`.
    Gcra,
    /// Sliding window counter (previous window weighted by its overlap).
    SlidingWindow,
    /// Fixed calendar windows with exact counts.
    FixedWindow,
}

impl Algorithm {
    fn code(self) -> &'static str {
        match self {
            Algorithm::Gcra => "g",
            Algorithm::SlidingWindow => "s",
            Algorithm::FixedWindow => "f",
        }
    }
}

/// One limit: at most `max` requests per `window_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Name used in headers (`second`, `minute`, ...).
    pub name: &'static str,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Requests allowed per window.
    pub max: u64,
}

/// The state of one limit after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// Requests still allowed now.
    pub remaining: u64,
    /// Milliseconds until the limit is fully available again (window end, or bucket refilled).
    pub reset_ms: u64,
}

/// The outcome of a check against several limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted (by every limit).
    pub allowed: bool,
    /// Per limit, in the order given.
    pub limits: Vec<LimitStatus>,
    /// When refused: milliseconds until a retry can succeed.
    pub retry_after_ms: u64,
}

impl Decision {
    /// Index of the most restrictive limit (least remaining; on a tie the longest reset).
    pub fn tightest(&self) -> Option<usize> {
        (0..self.limits.len()).min_by(|&a, &b| {
            let (x, y) = (self.limits[a], self.limits[b]);
            x.remaining.cmp(&y.remaining).then(y.reset_ms.cmp(&x.reset_ms))
        })
    }
}

/// A stable 128-bit digest of a key (keys are never stored in clear in Redis, and have a fixed
/// size in memory).
pub fn digest(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tightest_prefers_least_remaining() {
        let d = Decision {
            allowed: true,
            limits: vec![
                LimitStatus { remaining: 5, reset_ms: 1000 },
                LimitStatus { remaining: 2, reset_ms: 60_000 },
                LimitStatus { remaining: 2, reset_ms: 3_600_000 },
            ],
            retry_after_ms: 0,
        };
        assert_eq!(d.tightest(), Some(2));
    }
}
