//! The active health-check scheduler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::balancer::Balancer;
use crate::target::{ActiveHealthConfig, HealthState, Target};

/// Sends one probe to a target. Implemented by the proxy, which knows the protocol.
#[async_trait]
pub trait Prober: Send + Sync + 'static {
    /// Probe `target`; `true` when healthy. The scheduler bounds it by the check's timeout.
    async fn probe(&self, target: &Target) -> bool;

    /// Called when a target's active state flips (for logs and metrics). Default: nothing.
    fn on_state_change(&self, _target: &Target, _state: HealthState) {}
}

/// Probe every target of `balancer` each `interval` (targets in parallel, the first round after
/// a random fraction of the interval so many upstreams do not probe in lockstep), until the
/// returned task is aborted.
// The config is moved into the spawned task; clippy does not see that as a use.
#[allow(clippy::needless_pass_by_value)]
pub fn spawn_active_checks(
    balancer: Arc<Balancer>,
    cfg: ActiveHealthConfig,
    prober: Arc<dyn Prober>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let jitter = cfg.interval.mul_f64(fastrand::f64());
        tokio::time::sleep(jitter).await;
        let mut tick = tokio::time::interval(cfg.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let rounds = balancer.targets().iter().map(|t| {
                let t = t.clone();
                let prober = prober.clone();
                let timeout = cfg.timeout;
                async move {
                    let ok = tokio::time::timeout(timeout, prober.probe(&t)).await.unwrap_or(false);
                    if let Some(state) = t.record_probe(ok, Instant::now()) {
                        prober.on_state_change(&t, state);
                    }
                }
            });
            futures_join_all(rounds).await;
        }
    })
}

/// Await every future (a tiny join_all, to avoid a dependency for one call).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(futs: impl Iterator<Item = F>) {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::balancer::{Algorithm, BalancerConfig, TargetConfig};
    use crate::target::HealthConfig;

    struct Flaky {
        up: AtomicBool,
        probes: AtomicUsize,
        flips: std::sync::Mutex<Vec<HealthState>>,
    }

    #[async_trait]
    impl Prober for Flaky {
        async fn probe(&self, _t: &Target) -> bool {
            self.probes.fetch_add(1, Ordering::SeqCst);
            self.up.load(Ordering::SeqCst)
        }
        fn on_state_change(&self, _t: &Target, s: HealthState) {
            self.flips.lock().unwrap().push(s);
        }
    }

    /// Failing probes make the target unhealthy, passing ones bring it back.
    #[tokio::test]
    async fn probes_drive_health() {
        let cfg = ActiveHealthConfig {
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(50),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        };
        let b = Arc::new(Balancer::new(
            BalancerConfig {
                algorithm: Algorithm::RoundRobin,
                targets: vec![TargetConfig { address: "127.0.0.1:1".into(), weight: 1 }],
                health: HealthConfig { active: Some(cfg.clone()), passive: None },
                max_connections_per_target: None,
            },
            None,
        ));
        let p = Arc::new(Flaky { up: AtomicBool::new(false), probes: AtomicUsize::new(0), flips: Default::default() });
        let task = spawn_active_checks(b.clone(), cfg, p.clone());
        let wait = |want: bool| {
            let b = b.clone();
            async move {
                for _ in 0..200 {
                    if b.targets()[0].is_available(Instant::now()) == want {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                false
            }
        };
        assert!(wait(false).await, "target should turn unhealthy");
        p.up.store(true, Ordering::SeqCst);
        assert!(wait(true).await, "target should recover");
        task.abort();
        assert_eq!(*p.flips.lock().unwrap(), [HealthState::Unhealthy, HealthState::Healthy]);
        assert!(p.probes.load(Ordering::SeqCst) >= 4);
    }
}
