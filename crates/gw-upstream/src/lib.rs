//! Gatehouse's load-balancing and resilience logic, with no network IO: the proxy does the IO
//! and reports outcomes here.
//!
//! * [`Balancer`]: one per upstream; picks a [`Target`] with smooth weighted round robin,
//!   least connections, consistent hashing or power-of-two-choices by EWMA latency, skipping
//!   targets that are unhealthy (active checks), ejected (passive checks) or at their
//!   connection cap.
//! * [`CircuitBreaker`]: closed → open on a failure ratio, half-open trials, closed again.
//! * [`RetryBudget`]: bounds retries to a fraction of traffic (Finagle style).
//! * [`spawn_active_checks`]: probes targets periodically through a [`Prober`].
//!
//! Every time-dependent call takes `now: Instant`, so tests drive time explicitly.
//!
//! How to use: `let sel = balancer.select(key, &tried, Instant::now())?;` then
//! `let guard = sel.target.begin();` before sending, and `guard.finish(outcome, latency, now)`
//! when the response is complete.

mod active;
mod balancer;
mod breaker;
mod budget;
mod target;

pub use active::{Prober, spawn_active_checks};
pub use balancer::{Algorithm, Balancer, BalancerConfig, SelectError, Selection, TargetConfig};
pub use breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitObserver, CircuitOpen, CircuitPermit, CircuitState};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use target::{
    ActiveHealthConfig, HealthConfig, HealthState, InFlight, Outcome, PassiveHealthConfig, Target, TargetHealth,
};
