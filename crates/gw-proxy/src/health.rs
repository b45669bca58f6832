//! Active health checks: one probing task per upstream with an `active` check, restarted on
//! every reload (the balancer keeps target health across reloads, so a restart loses nothing).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::task::JoinHandle;

use gw_observability::{Metrics, TargetHealthLabels};
use gw_upstream::{ActiveHealthConfig, HealthState, Prober, Target};

use crate::pool::Endpoint;
use crate::runtime::Runtime;

/// The running probe tasks.
#[derive(Default)]
pub(crate) struct HealthChecks {
    tasks: Vec<JoinHandle<()>>,
}

impl HealthChecks {
    /// Stop the current probes and start those of `rt`.
    pub(crate) fn restart(&mut self, rt: &Runtime, metrics: &Arc<Metrics>) {
        self.stop();
        for u in &rt.upstreams {
            let Some(a) = &u.config.active_health else {
                continue;
            };
            let prober = Arc::new(HttpProber {
                upstream: u.name.to_string(),
                endpoints: u.endpoints.clone(),
                path: a.path.clone(),
                host: a.host.clone(),
                healthy: a.healthy_statuses.clone(),
                timeout: a.timeout,
                metrics: metrics.clone(),
            });
            let cfg = ActiveHealthConfig {
                interval: a.interval,
                timeout: a.timeout,
                healthy_threshold: a.healthy_threshold,
                unhealthy_threshold: a.unhealthy_threshold,
            };
            self.tasks.push(gw_upstream::spawn_active_checks(u.balancer.clone(), cfg, prober));
        }
    }

    /// Stop every probe.
    pub(crate) fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.stop();
    }
}

struct HttpProber {
    upstream: String,
    endpoints: Vec<Arc<Endpoint>>,
    path: String,
    host: Option<String>,
    healthy: Vec<u16>,
    timeout: std::time::Duration,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl Prober for HttpProber {
    async fn probe(&self, target: &Target) -> bool {
        let Some(ep) = self.endpoints.iter().find(|e| *e.authority == *target.address()) else {
            return false;
        };
        ep.probe(&self.path, self.host.as_deref(), &self.healthy, self.timeout).await
    }

    fn on_state_change(&self, target: &Target, state: HealthState) {
        let labels = TargetHealthLabels { upstream: self.upstream.clone(), target: target.address().to_string() };
        self.metrics.set_target_health(&labels, state == HealthState::Healthy);
        self.metrics.target_state_changed(&labels);
        tracing::warn!(upstream = %self.upstream, target = %target.address(), ?state, "active health check changed target state");
    }
}
