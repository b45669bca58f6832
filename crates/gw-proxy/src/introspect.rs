//! Read-only views of a running gateway for operators' tools (the dashboard): upstream targets
//! with their health and circuit state, and usage per consumer. Computed on demand from the
//! state the data plane keeps anyway; nothing here runs on the request path.

use std::time::Instant;

use crate::server::Gateway;

/// One upstream: its targets and its circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamStatus {
    /// Upstream name.
    pub name: String,
    /// Every target, in configuration order.
    pub targets: Vec<TargetStatus>,
    /// `closed`, `open` or `half_open` (one of `gw_observability::CIRCUIT_STATES`); `None`
    /// without a circuit breaker.
    pub circuit: Option<&'static str>,
}

/// One upstream target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    /// `host:port`.
    pub address: String,
    /// Healthy per active checks and not ejected by passive checks.
    pub healthy: bool,
    /// Remaining ejection time in milliseconds, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Requests in flight.
    pub in_flight: u32,
}

impl Gateway {
    /// Every upstream of the running configuration with the state of its targets and circuit
    /// at this moment (an open circuit turns half-open by time alone).
    pub fn upstream_status(&self) -> Vec<UpstreamStatus> {
        let rt = self.shared.runtime.load();
        let now = Instant::now();
        rt.upstreams
            .iter()
            .map(|u| UpstreamStatus {
                name: u.name.to_string(),
                targets: u
                    .balancer
                    .health_snapshot(now)
                    .into_iter()
                    .map(|t| TargetStatus {
                        address: t.address,
                        healthy: t.healthy,
                        ejected_for_ms: t.ejected_for.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        in_flight: t.in_flight,
                    })
                    .collect(),
                circuit: u.breaker.as_ref().map(|b| crate::runtime::circuit_label(b.state(now))),
            })
            .collect()
    }
}
