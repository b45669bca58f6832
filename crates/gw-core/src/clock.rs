//! Wall-clock time for plugins that count per calendar period (rate limits, quotas).
//!
//! Plugins read the time through [`Clock`] so that tests can move it (a quota period boundary,
//! a window rolling over) without waiting. The gateway uses [`SystemClock`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// The system clock shifted by an adjustable offset (tests move time forward or back).
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    /// A clock that reads `at_ms` now and then advances with real time.
    pub fn starting_at(at_ms: u64) -> OffsetClock {
        let c = OffsetClock::default();
        c.set(at_ms);
        c
    }

    /// Make the clock read `at_ms` now.
    pub fn set(&self, at_ms: u64) {
        self.offset_ms.store(at_ms as i64 - SystemClock.now_ms() as i64, Ordering::SeqCst);
    }

    /// Move the clock by `ms`.
    pub fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> u64 {
        (SystemClock.now_ms() as i64 + self.offset_ms.load(Ordering::SeqCst)).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_moves() {
        let c = OffsetClock::starting_at(1_000_000);
        let a = c.now_ms();
        assert!((1_000_000..1_000_500).contains(&a));
        c.advance(60_000);
        assert!(c.now_ms() >= a + 60_000);
    }
}
