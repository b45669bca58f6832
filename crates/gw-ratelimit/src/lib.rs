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
//! - [`period`]: calendar periods (hour, day, week, month, UTC) for quotas;
//!   [`PeriodCounters`]: local quota counters that are written out and restored at start.
//!
//! Every check takes the time as an argument (milliseconds since the Unix epoch) so that callers
//! can use an injectable clock.

mod batched;
mod local;
pub mod period;
mod period_counters;
mod redis_store;

pub use batched::{BatchedStore, SyncFailureHook};
pub use local::LocalStore;
pub use period_counters::{PeriodCount, PeriodCounters};
/// The Redis client the stores use (for pipelines sent through [`RedisStore::query_pipeline`]).
pub use redis;
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

/// Whether a window limit of `max` admits one more request `e` ms into a window of `w` ms
/// holding `cc` requests, after a previous window of `pc` (weighted by its overlap for the
/// sliding window; ignored for fixed windows). Every store decides with this arithmetic.
pub(crate) fn window_admits(alg: Algorithm, max: u64, cc: u64, pc: u64, w: u64, e: u64) -> bool {
    let weighted =
        if alg == Algorithm::SlidingWindow && pc > 0 { pc as f64 * w.saturating_sub(e) as f64 / w as f64 } else { 0.0 };
    weighted + cc as f64 + 1.0 <= max as f64
}

/// Milliseconds from `elapsed` ms into the current window until a window limit admits a request,
/// if no other request comes: the exact first millisecond [`window_admits`] holds, in this window
/// or the next (where this window's `cc` becomes the weighted previous count). 0 when it admits
/// now. A client that waits this long (rounded up to whole seconds for `Retry-After`) is
/// admitted; one that waits less is not.
pub fn window_wait_ms(alg: Algorithm, max: u64, cc: u64, pc: u64, w: u64, elapsed: u64) -> u64 {
    let w = w.max(1);
    if max == 0 {
        return w - elapsed.min(w);
    }
    let elapsed = elapsed.min(w - 1);
    if window_admits(alg, max, cc, pc, w, elapsed) {
        return 0;
    }
    // In this window: only the previous window's weight decays.
    if alg == Algorithm::SlidingWindow && cc < max && pc > 0 {
        let room = (max - cc - 1) as f64;
        let guess = (w as f64 - room * w as f64 / pc as f64).ceil().clamp(elapsed as f64, (w - 1) as f64) as u64;
        if let Some(e) = first_admitted(|e| window_admits(alg, max, cc, pc, w, e), guess, elapsed, w - 1) {
            return e - elapsed;
        }
    }
    // In the next window, this window's count is the previous one.
    let to_next = w - elapsed;
    if alg == Algorithm::FixedWindow || window_admits(alg, max, 0, cc, w, 0) {
        return to_next;
    }
    let guess = (w as f64 - (max - 1) as f64 * w as f64 / cc.max(1) as f64).ceil().clamp(0.0, (w - 1) as f64) as u64;
    match first_admitted(|e| window_admits(alg, max, 0, cc, w, e), guess, 0, w - 1) {
        Some(e) => to_next + e,
        // Two windows on, nothing counts any more.
        None => to_next + w,
    }
}

/// The first `e` in `lo..=hi` where `admits` holds (it holds from some point on), searched from
/// `guess` (a closed-form estimate, off by floating-point rounding at most): a few steps either
/// way, then a bounded binary search if the estimate was far off.
fn first_admitted(admits: impl Fn(u64) -> bool, guess: u64, lo: u64, hi: u64) -> Option<u64> {
    if !admits(hi) {
        return None;
    }
    let (mut lo, mut hi) = (lo, hi);
    let g = guess.clamp(lo, hi);
    if admits(g) {
        hi = g;
    } else {
        lo = g + 1;
    }
    // Invariant: admits(hi); every e < lo refuses (or lo is the start). At most 64 steps.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if admits(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(hi)
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

    /// The wait is exact: admitted at that millisecond, refused one earlier, for every state of a
    /// small window (a class test over counts, previous counts and positions).
    #[test]
    fn window_wait_is_exact() {
        for alg in [Algorithm::SlidingWindow, Algorithm::FixedWindow] {
            for (w, max) in [(1000, 1), (1000, 3), (1000, 7), (60_000, 2), (997, 5)] {
                for cc in 0..=max {
                    for pc in 0..=max + 2 {
                        for elapsed in [0, 1, w / 7, w / 2, w - 1] {
                            let wait = window_wait_ms(alg, max, cc, pc, w, elapsed);
                            // Simulate: the state `t` ms later, no other request.
                            let at = |t: u64| {
                                let e = elapsed + t;
                                match e / w {
                                    0 => window_admits(alg, max, cc, pc, w, e),
                                    1 => window_admits(alg, max, 0, cc, w, e - w),
                                    _ => window_admits(alg, max, 0, 0, w, e % w),
                                }
                            };
                            assert!(at(wait), "{alg:?} w={w} max={max} cc={cc} pc={pc} e={elapsed}: wait {wait}");
                            if wait > 0 {
                                assert!(!at(wait - 1), "{alg:?} w={w} max={max} cc={cc} pc={pc} e={elapsed}: {wait}");
                            }
                        }
                    }
                }
            }
        }
        // The case of the report: a full minute window of 2 waits into the next window until
        // half of it has passed (60 s + 30 s), not just to the window end.
        assert_eq!(window_wait_ms(Algorithm::SlidingWindow, 2, 2, 0, 60_000, 0), 90_000);
    }
}
