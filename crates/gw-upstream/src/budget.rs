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
    /// (slot start, deposits, withdrawals)
    ring: [(Option<Instant>, u64, u64); SLOTS],
}

/// The budget of one service.
#[derive(Debug)]
pub struct RetryBudget {
    cfg: RetryBudgetConfig,
    slots: Mutex<Slots>,
}

impl RetryBudget {
    /// A new, empty budget.
    pub fn new(cfg: RetryBudgetConfig) -> Self {
        RetryBudget { cfg, slots: Mutex::new(Slots { ring: [(None, 0, 0); SLOTS] }) }
    }

    fn width(&self) -> Duration {
        (self.cfg.ttl / SLOTS as u32).max(Duration::from_millis(1))
    }

    fn slot<'a>(&self, s: &'a mut Slots, now: Instant) -> &'a mut (Option<Instant>, u64, u64) {
        let width = self.width();
        let idx = {
            let origin = s.ring.iter().filter_map(|x| x.0).min().unwrap_or(now);
            (now.saturating_duration_since(origin).as_nanos() / width.as_nanos().max(1)) as usize % SLOTS
        };
        let e = &mut s.ring[idx];
        if e.0.is_none_or(|st| now.saturating_duration_since(st) >= width) {
            *e = (Some(now), 0, 0);
        }
        e
    }

    /// Count a request.
    pub fn deposit(&self, now: Instant) {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        self.slot(&mut s, now).1 += 1;
    }

    /// Take one retry from the budget; `false` when it is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let (mut dep, mut wd) = (0u64, 0u64);
        for (st, d, w) in &s.ring {
            if st.is_some_and(|st| now.saturating_duration_since(st) < self.cfg.ttl) {
                dep += d;
                wd += w;
            }
        }
        let allowed = f64::from(self.cfg.min_per_second) * self.cfg.ttl.as_secs_f64() + self.cfg.ratio * dep as f64;
        if (wd as f64) < allowed.floor() {
            self.slot(&mut s, now).2 += 1;
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
