//! One upstream target and its health, load and latency state (all atomics).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Active (probe) health check settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveHealthConfig {
    /// Time between probes.
    pub interval: Duration,
    /// A probe slower than this fails.
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures to become unhealthy.
    pub unhealthy_threshold: u32,
}

/// Passive (real traffic) health settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealthConfig {
    /// Consecutive failures that eject a target.
    pub consecutive_failures: u32,
    /// First ejection; doubles with each re-ejection.
    pub ejection_time: Duration,
    /// Cap of the doubling.
    pub max_ejection_time: Duration,
}

/// Health settings of an upstream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthConfig {
    /// Active probes.
    pub active: Option<ActiveHealthConfig>,
    /// Passive ejection.
    pub passive: Option<PassiveHealthConfig>,
}

/// Active health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Probes pass.
    Healthy,
    /// Probes fail.
    Unhealthy,
}

/// Result of one request to a target, as far as its health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered properly.
    Success,
    /// Connect error, timeout, or a status the upstream counts as failure.
    Failure,
}

/// Health of one target, for `/metrics` and status pages.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetHealth {
    /// `host:port`.
    pub address: String,
    /// Healthy per active checks and not ejected.
    pub healthy: bool,
    /// Remaining ejection time, if ejected.
    pub ejected_for: Option<Duration>,
    /// Requests in flight.
    pub in_flight: u32,
    /// Latency estimate in milliseconds (0 before the first response).
    pub ewma_ms: f64,
}

/// The process-wide time origin for the millisecond timestamps kept in atomics.
fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(|| Instant::now() - Duration::from_secs(1))
}

fn ms(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_millis() as u64
}

/// EWMA decay time constant: a latency observation weighs half after ~7 s.
const EWMA_TAU: Duration = Duration::from_secs(10);

/// A target of an upstream. Shared (`Arc`) between the balancer, requests in flight and the
/// health checker.
#[derive(Debug)]
pub struct Target {
    address: String,
    weight: u32,
    max_connections: Option<u32>,
    active: Option<ActiveHealthConfig>,
    passive: Option<PassiveHealthConfig>,
    in_flight: AtomicU32,
    /// Active verdict.
    healthy: AtomicBool,
    probe_successes: AtomicU32,
    probe_failures: AtomicU32,
    /// Passive: consecutive failures of real traffic.
    failures: AtomicU32,
    /// Passive: ejected until this many ms after the epoch (0 = not ejected).
    ejected_until: AtomicU64,
    /// Passive: ejections in a row (for the back-off).
    ejections: AtomicU32,
    /// EWMA latency in nanoseconds, as f64 bits.
    ewma_ns: AtomicU64,
    /// When the EWMA was last updated, ms after the epoch.
    ewma_at: AtomicU64,
}

impl Target {
    pub(crate) fn new(address: String, weight: u32, max_connections: Option<u32>, health: &HealthConfig) -> Self {
        Target {
            address,
            weight,
            max_connections,
            active: health.active.clone(),
            passive: health.passive.clone(),
            in_flight: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            probe_successes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            ewma_ns: AtomicU64::new(0f64.to_bits()),
            ewma_at: AtomicU64::new(0),
        }
    }

    /// Copy the dynamic state of `old` (same address) into a freshly configured target.
    pub(crate) fn inherit(self, old: &Target) -> Self {
        let r = Ordering::Relaxed;
        self.healthy.store(old.healthy.load(r), r);
        self.probe_successes.store(old.probe_successes.load(r), r);
        self.probe_failures.store(old.probe_failures.load(r), r);
        self.failures.store(old.failures.load(r), r);
        self.ejected_until.store(old.ejected_until.load(r), r);
        self.ejections.store(old.ejections.load(r), r);
        self.ewma_ns.store(old.ewma_ns.load(r), r);
        self.ewma_at.store(old.ewma_at.load(r), r);
        self
    }

    /// `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Relative weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Healthy per active checks and not passively ejected at `now` (ignores the connection cap).
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.weight > 0 && self.healthy.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= ms(now)
    }

    /// Whether new requests may go to this target now.
    pub fn is_available(&self, now: Instant) -> bool {
        self.is_healthy(now) && !self.at_capacity()
    }

    pub(crate) fn at_capacity(&self) -> bool {
        self.max_connections.is_some_and(|m| self.in_flight() >= m)
    }

    /// Latency estimate in nanoseconds (0 before any response).
    pub(crate) fn ewma_ns(&self) -> f64 {
        f64::from_bits(self.ewma_ns.load(Ordering::Relaxed))
    }

    /// A request starts using this target; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { target: Some(self.clone()) }
    }

    /// Record an active probe result. Returns the new state when it flipped.
    pub fn record_probe(&self, ok: bool, _now: Instant) -> Option<HealthState> {
        let cfg = self.active.as_ref()?;
        let r = Ordering::Relaxed;
        if ok {
            self.probe_failures.store(0, r);
            let n = self.probe_successes.fetch_add(1, r) + 1;
            if !self.healthy.load(r) && n >= cfg.healthy_threshold {
                self.healthy.store(true, r);
                return Some(HealthState::Healthy);
            }
        } else {
            self.probe_successes.store(0, r);
            let n = self.probe_failures.fetch_add(1, r) + 1;
            if self.healthy.load(r) && n >= cfg.unhealthy_threshold {
                self.healthy.store(false, r);
                return Some(HealthState::Unhealthy);
            }
        }
        None
    }

    fn record(&self, outcome: Outcome, latency: Duration, now: Instant) {
        let r = Ordering::Relaxed;
        // EWMA (peak-sensitive: a slower observation is taken at once).
        let obs = latency.as_nanos() as f64;
        let prev = self.ewma_ns();
        let at = ms(now);
        let last = self.ewma_at.swap(at, r);
        let next = if prev == 0.0 || obs > prev {
            obs
        } else {
            let dt = at.saturating_sub(last) as f64 / 1000.0;
            let w = (-dt / EWMA_TAU.as_secs_f64()).exp();
            prev * w + obs * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), r);

        let Some(p) = &self.passive else { return };
        match outcome {
            Outcome::Success => {
                self.failures.store(0, r);
                // Back from an ejection and answering well: the next ejection starts short.
                let until = self.ejected_until.load(r);
                if until != 0 && until <= at {
                    self.ejected_until.store(0, r);
                    self.ejections.store(0, r);
                }
            }
            Outcome::Failure => {
                if self.ejected_until.load(r) > at {
                    return;
                }
                let n = self.failures.fetch_add(1, r) + 1;
                if n >= p.consecutive_failures {
                    self.failures.store(0, r);
                    let k = self.ejections.fetch_add(1, r).min(20);
                    let d = p.ejection_time.saturating_mul(1u32 << k).min(p.max_ejection_time);
                    self.ejected_until.store(at + d.as_millis() as u64, r);
                    tracing::warn!(target = %self.address, ejected_for = ?d, "target ejected after consecutive failures");
                }
            }
        }
    }

    pub(crate) fn snapshot(&self, now: Instant) -> TargetHealth {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let at = ms(now);
        TargetHealth {
            address: self.address.clone(),
            healthy: self.is_healthy(now),
            ejected_for: (until > at).then(|| Duration::from_millis(until - at)),
            in_flight: self.in_flight(),
            ewma_ms: self.ewma_ns() / 1e6,
        }
    }
}

/// A request in flight on a target. Dropping it ends the request without recording a result.
#[derive(Debug)]
#[must_use = "dropping the guard at once ends the request"]
pub struct InFlight {
    target: Option<Arc<Target>>,
}

impl InFlight {
    /// End the request and record its outcome and latency (time to the response head).
    pub fn finish(mut self, outcome: Outcome, latency: Duration, now: Instant) {
        if let Some(t) = self.target.take() {
            t.in_flight.fetch_sub(1, Ordering::Relaxed);
            t.record(outcome, latency, now);
        }
    }

    /// The target.
    pub fn target(&self) -> Option<&Arc<Target>> {
        self.target.as_ref()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(t) = self.target.take() {
            t.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive(n: u32, base_ms: u64, max_ms: u64) -> HealthConfig {
        HealthConfig {
            active: None,
            passive: Some(PassiveHealthConfig {
                consecutive_failures: n,
                ejection_time: Duration::from_millis(base_ms),
                max_ejection_time: Duration::from_millis(max_ms),
            }),
        }
    }

    fn fail(t: &Arc<Target>, now: Instant) {
        t.begin().finish(Outcome::Failure, Duration::from_millis(1), now);
    }

    /// N consecutive failures eject; the target returns after the ejection time; re-ejection
    /// doubles it up to the cap; a success after return resets the back-off.
    #[test]
    fn passive_ejection_with_backoff() {
        let t = Arc::new(Target::new("a:1".into(), 100, None, &passive(3, 1000, 3000)));
        let t0 = Instant::now();
        fail(&t, t0);
        fail(&t, t0);
        assert!(t.is_available(t0));
        fail(&t, t0);
        assert!(!t.is_available(t0));
        assert!(!t.is_available(t0 + Duration::from_millis(900)));
        let t1 = t0 + Duration::from_millis(1001);
        assert!(t.is_available(t1));
        for _ in 0..3 {
            fail(&t, t1);
        }
        assert!(!t.is_available(t1 + Duration::from_millis(1999)), "second ejection lasts 2s");
        let t2 = t1 + Duration::from_millis(2001);
        assert!(t.is_available(t2));
        for _ in 0..3 {
            fail(&t, t2);
        }
        assert!(!t.is_available(t2 + Duration::from_millis(2999)), "third would be 4s, capped at 3s");
        let t3 = t2 + Duration::from_millis(3001);
        assert!(t.is_available(t3));
        t.begin().finish(Outcome::Success, Duration::from_millis(1), t3);
        for _ in 0..3 {
            fail(&t, t3);
        }
        assert!(t.is_available(t3 + Duration::from_millis(1001)), "back-off reset to 1s after a success");
    }

    /// Failures interleaved with successes never eject.
    #[test]
    fn non_consecutive_failures_do_not_eject() {
        let t = Arc::new(Target::new("a:1".into(), 100, None, &passive(2, 1000, 1000)));
        let now = Instant::now();
        for _ in 0..10 {
            fail(&t, now);
            t.begin().finish(Outcome::Success, Duration::from_millis(1), now);
        }
        assert!(t.is_available(now));
    }

    /// Active thresholds flip the state only after N consecutive results.
    #[test]
    fn active_thresholds() {
        let cfg = HealthConfig {
            active: Some(ActiveHealthConfig {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                healthy_threshold: 2,
                unhealthy_threshold: 3,
            }),
            passive: None,
        };
        let t = Target::new("a:1".into(), 100, None, &cfg);
        let now = Instant::now();
        assert_eq!(t.record_probe(false, now), None);
        assert_eq!(t.record_probe(false, now), None);
        assert_eq!(t.record_probe(true, now), None);
        assert_eq!(t.record_probe(false, now), None);
        assert_eq!(t.record_probe(false, now), None);
        assert_eq!(t.record_probe(false, now), Some(HealthState::Unhealthy));
        assert!(!t.is_available(now));
        assert_eq!(t.record_probe(true, now), None);
        assert_eq!(t.record_probe(true, now), Some(HealthState::Healthy));
        assert!(t.is_available(now));
    }

    /// The in-flight count follows begin/finish/drop, and the cap makes a target unavailable.
    #[test]
    fn in_flight_and_cap() {
        let t = Arc::new(Target::new("a:1".into(), 100, Some(2), &HealthConfig::default()));
        let now = Instant::now();
        let a = t.begin();
        let b = t.begin();
        assert_eq!(t.in_flight(), 2);
        assert!(!t.is_available(now) && t.is_healthy(now));
        drop(a);
        assert!(t.is_available(now));
        b.finish(Outcome::Success, Duration::from_millis(5), now);
        assert_eq!(t.in_flight(), 0);
        assert!((t.ewma_ns() - 5e6).abs() < 1.0);
    }
}
