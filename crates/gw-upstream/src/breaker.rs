//! Circuit breaker: closed → open when the failure ratio in a rolling window crosses a
//! threshold; open for a while; then half-open, admitting a few trial requests.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Circuit breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakerConfig {
    /// Failures / requests in the window that open the circuit.
    pub failure_ratio: f64,
    /// Requests needed in the window before the ratio counts.
    pub min_requests: u32,
    /// Rolling window.
    pub window: Duration,
    /// Time the circuit stays open.
    pub open_duration: Duration,
    /// Trial requests admitted while half-open.
    pub half_open_requests: u32,
}

/// Where the circuit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests flow.
    Closed,
    /// Requests are refused.
    Open,
    /// A few trial requests flow.
    HalfOpen,
}

/// The circuit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen;

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit open")
    }
}

impl std::error::Error for CircuitOpen {}

const BUCKETS: usize = 10;

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// (bucket start, successes, failures), a ring over the window.
    buckets: [(Option<Instant>, u32, u32); BUCKETS],
}

/// Told of every state change (after the breaker's lock is released): metrics.
pub type CircuitObserver = Arc<dyn Fn(CircuitState) + Send + Sync>;

/// A circuit breaker for one upstream. Its lock is held for a few comparisons only.
pub struct CircuitBreaker {
    cfg: CircuitBreakerConfig,
    inner: Mutex<Inner>,
    observer: Option<CircuitObserver>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker").field("cfg", &self.cfg).field("inner", &self.inner).finish_non_exhaustive()
    }
}

/// Permission to send one request; report its result with [`CircuitPermit::record`].
#[derive(Debug)]
#[must_use = "record the result, or drop the permit to free a half-open slot"]
pub struct CircuitPermit {
    breaker: Arc<CircuitBreaker>,
    half_open: bool,
    recorded: bool,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(cfg: CircuitBreakerConfig) -> Self {
        CircuitBreaker {
            cfg,
            inner: Mutex::new(Inner { state: State::Closed, buckets: [(None, 0, 0); BUCKETS] }),
            observer: None,
        }
    }

    /// A closed breaker that tells `observer` of every state change.
    pub fn with_observer(cfg: CircuitBreakerConfig, observer: CircuitObserver) -> Self {
        CircuitBreaker { observer: Some(observer), ..Self::new(cfg) }
    }

    fn notify(&self, changed: Option<CircuitState>) {
        if let (Some(o), Some(s)) = (&self.observer, changed) {
            o(s);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way that
        // matters; keep serving with them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask to send a request.
    pub fn try_acquire(self: &Arc<Self>, now: Instant) -> Result<CircuitPermit, CircuitOpen> {
        let mut g = self.lock();
        if let State::Open { until } = g.state {
            if now < until {
                return Err(CircuitOpen);
            }
            g.state = State::HalfOpen { admitted: 0, succeeded: 0 };
            if self.observer.is_some() {
                drop(g);
                self.notify(Some(CircuitState::HalfOpen));
                g = self.lock();
            }
        }
        match &mut g.state {
            State::Closed => Ok(CircuitPermit { breaker: self.clone(), half_open: false, recorded: false }),
            State::HalfOpen { admitted, .. } => {
                if *admitted >= self.cfg.half_open_requests {
                    return Err(CircuitOpen);
                }
                *admitted += 1;
                Ok(CircuitPermit { breaker: self.clone(), half_open: true, recorded: false })
            }
            State::Open { .. } => Err(CircuitOpen),
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.lock().state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if now < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn record(&self, half_open: bool, success: bool, now: Instant) {
        let changed = self.record_locked(half_open, success, now);
        self.notify(changed);
    }

    /// [`CircuitBreaker::record`] under the lock; the state entered, if it changed.
    fn record_locked(&self, half_open: bool, success: bool, now: Instant) -> Option<CircuitState> {
        let mut g = self.lock();
        if half_open {
            if let State::HalfOpen { succeeded, .. } = &mut g.state {
                if !success {
                    g.state = State::Open { until: now + self.cfg.open_duration };
                    g.buckets = [(None, 0, 0); BUCKETS];
                    tracing::warn!("circuit re-opened by a failed trial request");
                    return Some(CircuitState::Open);
                }
                *succeeded += 1;
                if *succeeded >= self.cfg.half_open_requests {
                    g.state = State::Closed;
                    g.buckets = [(None, 0, 0); BUCKETS];
                    tracing::info!("circuit closed");
                    return Some(CircuitState::Closed);
                }
            }
            return None;
        }
        if !matches!(g.state, State::Closed) {
            return None;
        }
        let width = (self.cfg.window / BUCKETS as u32).max(Duration::from_millis(1));
        let slot = {
            // Bucket index from a fixed origin: the first bucket's start, or now.
            let origin = g.buckets.iter().filter_map(|b| b.0).min().unwrap_or(now);
            let k = (now.saturating_duration_since(origin).as_nanos() / width.as_nanos().max(1)) as usize;
            k % BUCKETS
        };
        let start = now;
        let b = &mut g.buckets[slot];
        if b.0.is_none_or(|s| now.saturating_duration_since(s) >= width) {
            *b = (Some(start), 0, 0);
        }
        if success {
            b.1 += 1;
        } else {
            b.2 += 1;
        }
        let (mut ok, mut bad) = (0u64, 0u64);
        for (s, o, f) in &g.buckets {
            if s.is_some_and(|s| now.saturating_duration_since(s) < self.cfg.window) {
                ok += u64::from(*o);
                bad += u64::from(*f);
            }
        }
        let total = ok + bad;
        if total >= u64::from(self.cfg.min_requests) && bad as f64 / total as f64 >= self.cfg.failure_ratio {
            g.state = State::Open { until: now + self.cfg.open_duration };
            tracing::warn!(failures = bad, requests = total, "circuit opened");
            return Some(CircuitState::Open);
        }
        None
    }
}

impl CircuitPermit {
    /// Report the request's result.
    pub fn record(mut self, success: bool, now: Instant) {
        self.recorded = true;
        self.breaker.record(self.half_open, success, now);
    }
}

impl Drop for CircuitPermit {
    fn drop(&mut self) {
        if !self.recorded && self.half_open {
            let mut g = self.breaker.lock();
            if let State::HalfOpen { admitted, .. } = &mut g.state {
                *admitted = admitted.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cb() -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
            failure_ratio: 0.5,
            min_requests: 4,
            window: Duration::from_secs(10),
            open_duration: Duration::from_secs(5),
            half_open_requests: 2,
        }))
    }

    /// closed → open → half-open → closed, and half-open → open on a failed trial.
    #[test]
    fn full_cycle() {
        let b = cb();
        let t0 = Instant::now();
        for ok in [true, false, true] {
            b.try_acquire(t0).unwrap().record(ok, t0);
        }
        assert_eq!(b.state(t0), CircuitState::Closed, "below min_requests");
        b.try_acquire(t0).unwrap().record(false, t0);
        assert_eq!(b.state(t0), CircuitState::Open);
        assert!(b.try_acquire(t0 + Duration::from_secs(4)).is_err());
        let t1 = t0 + Duration::from_secs(5);
        let p1 = b.try_acquire(t1).unwrap();
        let p2 = b.try_acquire(t1).unwrap();
        assert!(b.try_acquire(t1).is_err(), "only 2 trials");
        p1.record(true, t1);
        p2.record(true, t1);
        assert_eq!(b.state(t1), CircuitState::Closed);

        for _ in 0..4 {
            b.try_acquire(t1).unwrap().record(false, t1);
        }
        let t2 = t1 + Duration::from_secs(5);
        b.try_acquire(t2).unwrap().record(false, t2);
        assert_eq!(b.state(t2), CircuitState::Open, "a failed trial re-opens");
    }

    /// A dropped half-open permit frees its slot.
    #[test]
    fn dropped_permit_frees_slot() {
        let b = cb();
        let t0 = Instant::now();
        for _ in 0..4 {
            b.try_acquire(t0).unwrap().record(false, t0);
        }
        let t1 = t0 + Duration::from_secs(6);
        let p1 = b.try_acquire(t1).unwrap();
        let _p2 = b.try_acquire(t1).unwrap();
        drop(p1);
        assert!(b.try_acquire(t1).is_ok());
    }

    /// Old failures leave the window.
    #[test]
    fn window_expires() {
        let b = cb();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.try_acquire(t0).unwrap().record(false, t0);
        }
        let t1 = t0 + Duration::from_secs(11);
        b.try_acquire(t1).unwrap().record(false, t1);
        assert_eq!(b.state(t1), CircuitState::Closed);
    }

    /// The observer sees every change, in order: open, half-open, closed, open again.
    #[test]
    fn observer_sees_each_transition() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let b = Arc::new(CircuitBreaker::with_observer(
            cb().cfg.clone(),
            Arc::new(move |st| s2.lock().unwrap_or_else(|p| p.into_inner()).push(st)),
        ));
        let t0 = Instant::now();
        for _ in 0..4 {
            b.try_acquire(t0).unwrap().record(false, t0);
        }
        let t1 = t0 + Duration::from_secs(5);
        let (p1, p2) = (b.try_acquire(t1).unwrap(), b.try_acquire(t1).unwrap());
        p1.record(true, t1);
        p2.record(true, t1);
        for _ in 0..4 {
            b.try_acquire(t1).unwrap().record(false, t1);
        }
        use CircuitState::*;
        assert_eq!(*seen.lock().unwrap_or_else(|p| p.into_inner()), vec![Open, HalfOpen, Closed, Open]);
    }
}
