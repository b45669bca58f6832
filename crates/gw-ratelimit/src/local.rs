//! In-process store: one cell of two atomics per (key, limit), in a bounded cache whose
//! entries expire when idle.
//!
//! Updates are compare-and-swap loops on the cell, so concurrent requests for one key never
//! wait on a lock and a limit of N admits exactly N from a burst. With several limits, a request
//! takes one unit from each in turn and gives them back if a later limit refuses it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Algorithm, Decision, Limit, LimitStatus};

/// Window index bits in a packed window cell (the index only needs to tell the current window
/// from the previous one; cells idle for long are evicted first).
const IDX_BITS: u32 = 20;
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;
const COUNT_MASK: u64 = (1 << (64 - IDX_BITS)) - 1;

fn pack(idx: u64, count: u64) -> u64 {
    ((idx & IDX_MASK) << (64 - IDX_BITS)) | (count & COUNT_MASK)
}

fn unpack(v: u64) -> (u64, u64) {
    (v >> (64 - IDX_BITS), v & COUNT_MASK)
}

/// State of one (key, limit). GCRA: `a` is the theoretical arrival time in microseconds.
/// Windows: `a` is the packed current window, `b` the packed previous window.
#[derive(Default)]
struct Cell {
    a: AtomicU64,
    b: AtomicU64,
}

/// In-process rate-limit state.
pub struct LocalStore {
    cells: moka::sync::Cache<u128, Arc<Cell>, xxhash_rust::xxh3::Xxh3Builder>,
}

impl LocalStore {
    /// A store holding at most `max_keys` cells; a cell idle for `idle` is dropped (choose at
    /// least twice the longest window).
    pub fn new(max_keys: u64, idle: Duration) -> LocalStore {
        LocalStore {
            cells: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(idle)
                .build_with_hasher(xxhash_rust::xxh3::Xxh3Builder::new()),
        }
    }

    /// Number of cells currently held (after pending evictions are applied).
    pub fn len(&self) -> u64 {
        self.cells.run_pending_tasks();
        self.cells.entry_count()
    }

    /// Whether the store holds no cell.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn cell(&self, key: u128) -> Arc<Cell> {
        self.cells.get_with(key, || Arc::new(Cell::default()))
    }

    fn cell_key(key: u128, alg: Algorithm, l: &Limit) -> u128 {
        let mut buf = [0u8; 25];
        buf[..16].copy_from_slice(&key.to_le_bytes());
        buf[16..24].copy_from_slice(&l.window_ms.to_le_bytes());
        buf[24] = alg.code().as_bytes()[0];
        xxhash_rust::xxh3::xxh3_128(&buf)
    }

    /// Check and count one request for `key` (a digest, see [`crate::digest`]) against every
    /// limit, at `now_ms`.
    pub fn check(&self, alg: Algorithm, key: u128, limits: &[Limit], now_ms: u64) -> Decision {
        let mut statuses = Vec::with_capacity(limits.len());
        let mut taken: Vec<Arc<Cell>> = Vec::with_capacity(limits.len());
        for (i, l) in limits.iter().enumerate() {
            let cell = self.cell(Self::cell_key(key, alg, l));
            match take(alg, &cell, l, now_ms) {
                Ok(s) => {
                    statuses.push(s);
                    taken.push(cell);
                }
                Err((mut retry, reset)) => {
                    for (c, l) in taken.iter().zip(limits) {
                        give_back(alg, c, l, now_ms);
                    }
                    statuses.push(LimitStatus { remaining: 0, reset_ms: reset });
                    // The limits not evaluated are reported as they are; the request is
                    // admitted only when every one of them admits it.
                    for l in &limits[i + 1..] {
                        let c = self.cell(Self::cell_key(key, alg, l));
                        statuses.push(peek(alg, &c, l, now_ms));
                        retry = retry.max(wait(alg, &c, l, now_ms));
                    }
                    return Decision { allowed: false, limits: statuses, retry_after_ms: retry.max(1) };
                }
            }
        }
        Decision { allowed: true, limits: statuses, retry_after_ms: 0 }
    }

    /// Give back one request counted by [`LocalStore::check`] (e.g. a throttled request that
    /// gave up).
    pub fn refund(&self, alg: Algorithm, key: u128, limits: &[Limit], now_ms: u64) {
        for l in limits {
            let c = self.cell(Self::cell_key(key, alg, l));
            give_back(alg, &c, l, now_ms);
        }
    }

    /// Count one request against a calendar period `[start_ms, end_ms)` allowing `max`
    /// (quotas). Returns the count after this request, or `Err(count)` when the quota is used up.
    pub fn count_period(&self, key: u128, start_ms: u64, max: u64) -> Result<u64, u64> {
        let mut buf = [0u8; 25];
        buf[..16].copy_from_slice(&key.to_le_bytes());
        buf[16..24].copy_from_slice(&start_ms.to_le_bytes());
        buf[24] = b'q';
        let cell = self.cell(xxhash_rust::xxh3::xxh3_128(&buf));
        let mut cur = cell.a.load(Ordering::Acquire);
        loop {
            if cur >= max {
                return Err(cur);
            }
            match cell.a.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(cur + 1),
                Err(v) => cur = v,
            }
        }
    }
}

/// GCRA parameters in microseconds: emission interval and burst tolerance.
fn gcra_params(l: &Limit) -> (u64, u64) {
    let window_us = l.window_ms.saturating_mul(1000);
    let t = (window_us / l.max.max(1)).max(1);
    (t, window_us.saturating_sub(t))
}

/// Take one unit. `Err((retry_after_ms, reset_ms))` when refused.
fn take(alg: Algorithm, c: &Cell, l: &Limit, now_ms: u64) -> Result<LimitStatus, (u64, u64)> {
    if l.max == 0 {
        return Err((l.window_ms, l.window_ms));
    }
    match alg {
        Algorithm::Gcra => {
            let now = now_ms.saturating_mul(1000);
            let (t, tau) = gcra_params(l);
            let mut tat = c.a.load(Ordering::Acquire);
            loop {
                let base = tat.max(now);
                if base - now > tau {
                    return Err((div_ceil_ms(base - now - tau), div_ceil_ms(base - now)));
                }
                let new = base + t;
                match c.a.compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        let used = new - now;
                        let remaining = (tau + t).saturating_sub(used) / t;
                        return Ok(LimitStatus { remaining, reset_ms: div_ceil_ms(used) });
                    }
                    Err(v) => tat = v,
                }
            }
        }
        Algorithm::SlidingWindow | Algorithm::FixedWindow => {
            let w = l.window_ms.max(1);
            let idx = now_ms / w;
            let elapsed = now_ms % w;
            let reset = w - elapsed;
            loop {
                let cur = c.a.load(Ordering::Acquire);
                let (ci, cc) = unpack(cur);
                if ci != idx & IDX_MASK {
                    roll(c, cur, idx);
                    continue;
                }
                let pc = if alg == Algorithm::SlidingWindow { prev_count(c, idx) } else { 0 };
                if !crate::window_admits(alg, l.max, cc, pc, w, elapsed) {
                    return Err((crate::window_wait_ms(alg, l.max, cc, pc, w, elapsed), reset));
                }
                let weighted = if alg == Algorithm::SlidingWindow { prev_weight(c, idx, w, elapsed) } else { 0.0 };
                let used = weighted + cc as f64;
                if c.a.compare_exchange_weak(cur, pack(idx, cc + 1), Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let remaining = (l.max as f64 - used - 1.0).floor().max(0.0) as u64;
                    return Ok(LimitStatus { remaining, reset_ms: reset });
                }
            }
        }
    }
}

/// The current state without counting.
fn peek(alg: Algorithm, c: &Cell, l: &Limit, now_ms: u64) -> LimitStatus {
    match alg {
        Algorithm::Gcra => {
            let now = now_ms.saturating_mul(1000);
            let (t, tau) = gcra_params(l);
            let used = c.a.load(Ordering::Acquire).max(now) - now;
            LimitStatus { remaining: (tau + t).saturating_sub(used) / t, reset_ms: div_ceil_ms(used) }
        }
        Algorithm::SlidingWindow | Algorithm::FixedWindow => {
            let w = l.window_ms.max(1);
            let idx = now_ms / w;
            let elapsed = now_ms % w;
            let (ci, cc) = unpack(c.a.load(Ordering::Acquire));
            let cc = if ci == idx & IDX_MASK { cc } else { 0 };
            let weighted = if alg == Algorithm::SlidingWindow { prev_weight(c, idx, w, elapsed) } else { 0.0 };
            LimitStatus {
                remaining: (l.max as f64 - weighted - cc as f64).floor().max(0.0) as u64,
                reset_ms: w - elapsed,
            }
        }
    }
}

/// Start window `idx`: the current count becomes the previous window (if adjacent).
fn roll(c: &Cell, cur: u64, idx: u64) {
    let (ci, _) = unpack(cur);
    if c.a.compare_exchange(cur, pack(idx, 0), Ordering::AcqRel, Ordering::Acquire).is_ok() {
        let prev = if ci == idx.wrapping_sub(1) & IDX_MASK { cur } else { pack(idx.wrapping_sub(1), 0) };
        c.b.store(prev, Ordering::Release);
    }
}

/// The previous window's count weighted by its overlap with the sliding window.
fn prev_weight(c: &Cell, idx: u64, w: u64, elapsed: u64) -> f64 {
    let (pi, pc) = unpack(c.b.load(Ordering::Acquire));
    if pi != idx.wrapping_sub(1) & IDX_MASK || pc == 0 {
        return 0.0;
    }
    pc as f64 * (w - elapsed) as f64 / w as f64
}

/// The previous window's count (0 unless it is the window just before `idx`).
fn prev_count(c: &Cell, idx: u64) -> u64 {
    let (pi, pc) = unpack(c.b.load(Ordering::Acquire));
    if pi == idx.wrapping_sub(1) & IDX_MASK { pc } else { 0 }
}

/// Milliseconds until this limit admits a request (0 when it does now), without counting.
fn wait(alg: Algorithm, c: &Cell, l: &Limit, now_ms: u64) -> u64 {
    match alg {
        Algorithm::Gcra => {
            let now = now_ms.saturating_mul(1000);
            let (_, tau) = gcra_params(l);
            let base = c.a.load(Ordering::Acquire).max(now);
            div_ceil_ms((base - now).saturating_sub(tau))
        }
        Algorithm::SlidingWindow | Algorithm::FixedWindow => {
            let w = l.window_ms.max(1);
            let idx = now_ms / w;
            let (ci, cc) = unpack(c.a.load(Ordering::Acquire));
            let (cc, pc) = if ci == idx & IDX_MASK {
                (cc, prev_count(c, idx))
            } else if ci == idx.wrapping_sub(1) & IDX_MASK {
                // Not rolled yet: the current cell is the previous window.
                (0, cc)
            } else {
                (0, 0)
            };
            crate::window_wait_ms(alg, l.max, cc, if alg == Algorithm::SlidingWindow { pc } else { 0 }, w, now_ms % w)
        }
    }
}

/// Give back one unit taken at `now_ms`.
fn give_back(alg: Algorithm, c: &Cell, l: &Limit, now_ms: u64) {
    match alg {
        Algorithm::Gcra => {
            let (t, _) = gcra_params(l);
            let now = now_ms.saturating_mul(1000);
            let _ = c.a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| Some(tat.saturating_sub(t).max(now)));
        }
        Algorithm::SlidingWindow | Algorithm::FixedWindow => {
            let idx = now_ms / l.window_ms.max(1);
            let _ = c.a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let (ci, cc) = unpack(v);
                (ci == idx & IDX_MASK && cc > 0).then(|| pack(ci, cc - 1))
            });
        }
    }
}

fn div_ceil_ms(us: u64) -> u64 {
    us.div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(window_ms: u64, max: u64) -> Limit {
        Limit { name: "t", window_ms, max }
    }

    fn store() -> LocalStore {
        LocalStore::new(10_000, Duration::from_secs(60))
    }

    /// Every algorithm admits exactly N of a burst, and reports remaining counts down to 0.
    #[test]
    fn burst_admits_exactly_n() {
        for alg in [Algorithm::Gcra, Algorithm::SlidingWindow, Algorithm::FixedWindow] {
            let s = store();
            let now = 1_700_000_000_000;
            let mut admitted = 0;
            let mut last_remaining = u64::MAX;
            for _ in 0..25 {
                let d = s.check(alg, 1, &[lim(60_000, 10)], now);
                if d.allowed {
                    admitted += 1;
                    assert!(d.limits[0].remaining < last_remaining);
                    last_remaining = d.limits[0].remaining;
                } else {
                    assert!(d.retry_after_ms > 0);
                }
            }
            assert_eq!(admitted, 10, "{alg:?}");
            assert_eq!(last_remaining, 0, "{alg:?}");
        }
    }

    /// Concurrent threads never admit more than N.
    #[test]
    fn concurrent_burst_is_exact() {
        for alg in [Algorithm::Gcra, Algorithm::SlidingWindow, Algorithm::FixedWindow] {
            let s = Arc::new(store());
            let now = 1_700_000_000_000;
            let admitted = Arc::new(AtomicU64::new(0));
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let (s, a) = (s.clone(), admitted.clone());
                    std::thread::spawn(move || {
                        for _ in 0..1000 {
                            if s.check(alg, 7, &[lim(60_000, 1000)], now).allowed {
                                a.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap_or_else(|_| panic!("thread"));
            }
            assert_eq!(admitted.load(Ordering::Relaxed), 1000, "{alg:?}");
        }
    }

    /// Fixed windows reset at the boundary; sliding windows weigh the previous window.
    #[test]
    fn windows_roll() {
        let s = store();
        let l = [lim(1000, 10)];
        let t0 = 1_700_000_000_000; // a multiple of 1000
        for _ in 0..10 {
            assert!(s.check(Algorithm::FixedWindow, 1, &l, t0 + 500).allowed);
            assert!(s.check(Algorithm::SlidingWindow, 2, &l, t0 + 500).allowed);
        }
        assert!(!s.check(Algorithm::FixedWindow, 1, &l, t0 + 999).allowed);
        assert!(s.check(Algorithm::FixedWindow, 1, &l, t0 + 1000).allowed, "new fixed window");
        // 250 ms into the next window, 75% of the previous 10 still count: 7.5 -> 2 more pass.
        let d = s.check(Algorithm::SlidingWindow, 2, &l, t0 + 1250);
        assert!(d.allowed);
        assert!(s.check(Algorithm::SlidingWindow, 2, &l, t0 + 1250).allowed);
        let d = s.check(Algorithm::SlidingWindow, 2, &l, t0 + 1250);
        assert!(!d.allowed, "{d:?}");
        assert!(d.retry_after_ms > 0 && d.retry_after_ms <= 750, "{d:?}");
        // The retry is exact: refused a millisecond before it, admitted at it.
        let at = t0 + 1250 + d.retry_after_ms;
        assert!(!s.check(Algorithm::SlidingWindow, 2, &l, at - 1).allowed);
        assert!(s.check(Algorithm::SlidingWindow, 2, &l, at).allowed);
    }

    /// A full window (no previous one) is not free again at its end: the sliding window still
    /// weighs it; the retry reaches into the next window, exactly.
    #[test]
    fn full_window_retry_reaches_into_the_next() {
        let s = store();
        let l = [lim(60_000, 2)];
        let t0 = 1_700_000_040_000; // a multiple of 60,000
        assert_eq!(t0 % 60_000, 0);
        assert!(s.check(Algorithm::SlidingWindow, 3, &l, t0).allowed);
        assert!(s.check(Algorithm::SlidingWindow, 3, &l, t0).allowed);
        let d = s.check(Algorithm::SlidingWindow, 3, &l, t0 + 10);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 89_990);
        assert!(!s.check(Algorithm::SlidingWindow, 3, &l, t0 + 60_000).allowed, "the window end is too early");
        assert!(!s.check(Algorithm::SlidingWindow, 3, &l, t0 + 89_999).allowed);
        assert!(s.check(Algorithm::SlidingWindow, 3, &l, t0 + 90_000).allowed);
    }

    /// With several limits, the retry is when all of them admit.
    #[test]
    fn retry_waits_for_every_limit() {
        let s = store();
        let limits = [lim(1000, 1), lim(60_000, 1)];
        let t0 = 1_700_000_040_000;
        assert!(s.check(Algorithm::FixedWindow, 4, &limits, t0).allowed);
        let d = s.check(Algorithm::FixedWindow, 4, &limits, t0 + 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 59_999, "the minute limit decides, though the second one refused first");
    }

    /// GCRA spreads requests: after a burst, one more per emission interval.
    #[test]
    fn gcra_refills_smoothly() {
        let s = store();
        let l = [lim(1000, 10)]; // one per 100 ms
        let t0 = 1_700_000_000_000;
        for _ in 0..10 {
            assert!(s.check(Algorithm::Gcra, 1, &l, t0).allowed);
        }
        let d = s.check(Algorithm::Gcra, 1, &l, t0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 100);
        assert!(!s.check(Algorithm::Gcra, 1, &l, t0 + 99).allowed);
        assert!(s.check(Algorithm::Gcra, 1, &l, t0 + 100).allowed);
    }

    /// A refusal by one limit gives back what the others took.
    #[test]
    fn several_limits_are_all_or_nothing() {
        let s = store();
        let limits = [lim(1000, 100), lim(60_000, 3)];
        let t0 = 1_700_000_000_000;
        for _ in 0..3 {
            assert!(s.check(Algorithm::FixedWindow, 1, &limits, t0).allowed);
        }
        for _ in 0..5 {
            let d = s.check(Algorithm::FixedWindow, 1, &limits, t0);
            assert!(!d.allowed);
            assert_eq!(d.tightest(), Some(1));
        }
        let d = s.check(Algorithm::FixedWindow, 1, &[lim(1000, 100)], t0);
        assert_eq!(d.limits[0].remaining, 96, "refused requests were given back to the per-second limit");
    }

    /// Quota periods count exactly and start over with a new period.
    #[test]
    fn periods() {
        let s = store();
        assert_eq!(s.count_period(9, 1000, 2), Ok(1));
        assert_eq!(s.count_period(9, 1000, 2), Ok(2));
        assert_eq!(s.count_period(9, 1000, 2), Err(2));
        assert_eq!(s.count_period(9, 2000, 2), Ok(1));
    }

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// A flood of 1,000,000 distinct keys stays within the configured capacity, and memory
    /// with it.
    #[test]
    fn bounded_under_a_key_flood() {
        let before = rss_kib();
        let cap = 100_000;
        let s = LocalStore::new(cap, Duration::from_secs(60));
        let l = [lim(1000, 5)];
        let t0 = 1_700_000_000_000;
        for i in 0..1_000_000u64 {
            let key = crate::digest(&format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255));
            assert!(s.check(Algorithm::SlidingWindow, key, &l, t0).allowed);
        }
        let n = s.len();
        let grown = rss_kib().saturating_sub(before);
        println!("1,000,000 distinct keys, capacity {cap}: {n} cells held, RSS grew {} MiB", grown / 1024);
        assert!(n <= cap, "{n} cells held for a capacity of {cap}");
        assert!(n > cap / 2, "the cache is used: {n}");
        assert!(grown < 256 * 1024, "RSS grew {} MiB", grown / 1024);
    }
}
