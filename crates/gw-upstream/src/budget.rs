//! Retry budget: retries may add at most `ratio` of the requests seen over `ttl`, plus a floor
//! of `min_per_second`, so a failing upstream is not hammered by retries (Finagle's RetryBudget).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Retry budget settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request seen.
    pub ratio: f64,
    /// Retries always allowed per second.
    pub min_per_second: u32,
    /// Window over which requests and retries count.
    pub ttl: Duration,
}

const SLOTS: usize = 10;

#[derive(Debug)]
struct Slots {
    /// (window number + 1, deposits, withdrawals); 0 marks an unused slot. Window `n` covers
    /// `[origin + n * width, origin + (n + 1) * width)`.
    ring: [(u64, u64, u64); SLOTS],
}

/// The budget of one service.
#[derive(Debug)]
pub struct RetryBudget {
    cfg: RetryBudgetConfig,
    origin: Instant,
    /// Width of one slot in nanoseconds (`ttl / SLOTS`, at least 1 ms).
    width_ns: u64,
    slots: Mutex<Slots>,
}

impl RetryBudget {
    /// A new, empty budget.
    pub fn new(cfg: RetryBudgetConfig) -> Self {
        let width = (cfg.ttl / SLOTS as u32).max(Duration::from_millis(1));
        let width_ns = u64::try_from(width.as_nanos()).unwrap_or(u64::MAX);
        RetryBudget { cfg, origin: Instant::now(), width_ns, slots: Mutex::new(Slots { ring: [(0, 0, 0); SLOTS] }) }
    }

    /// The window `now` falls in, plus one.
    fn window(&self, now: Instant) -> u64 {
        let ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        ns / self.width_ns + 1
    }

    fn slot(s: &mut Slots, window: u64) -> &mut (u64, u64, u64) {
        let e = &mut s.ring[(window % SLOTS as u64) as usize];
        if e.0 != window {
            *e = (window, 0, 0);
        }
        e
    }

    /// Count a request.
    pub fn deposit(&self, now: Instant) {
        let w = self.window(now);
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Self::slot(&mut s, w).1 += 1;
    }

    /// Take one retry from the budget; `false` when it is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let w = self.window(now);
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let (mut dep, mut wd) = (0u64, 0u64);
        for &(win, d, r) in &s.ring {
            // The last SLOTS windows make up the ttl.
            if win != 0 && win <= w && w - win < SLOTS as u64 {
                dep += d;
                wd += r;
            }
        }
        let allowed = f64::from(self.cfg.min_per_second) * self.cfg.ttl.as_secs_f64() + self.cfg.ratio * dep as f64;
        if (wd as f64) < allowed.floor() {
            Self::slot(&mut s, w).2 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor allows min_per_second * ttl retries; then each request adds `ratio`.
    #[test]
    fn floor_then_ratio() {
        let b = RetryBudget::new(RetryBudgetConfig { ratio: 0.2, min_per_second: 1, ttl: Duration::from_secs(10) });
        let t = Instant::now();
        for _ in 0..10 {
            assert!(b.try_withdraw(t));
        }
        assert!(!b.try_withdraw(t));
        for _ in 0..10 {
            b.deposit(t);
        }
        assert!(b.try_withdraw(t));
        assert!(b.try_withdraw(t));
        assert!(!b.try_withdraw(t), "10 requests x 0.2 = 2 more retries");
        let later = t + Duration::from_secs(11);
        assert!(b.try_withdraw(later), "the window moved on");
    }

    /// Zero floor and zero ratio means no retries.
    #[test]
    fn empty_budget() {
        let b = RetryBudget::new(RetryBudgetConfig { ratio: 0.0, min_per_second: 0, ttl: Duration::from_secs(10) });
        b.deposit(Instant::now());
        assert!(!b.try_withdraw(Instant::now()));
    }
}
