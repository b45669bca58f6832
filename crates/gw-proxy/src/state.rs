//! What the request path reads of the running gateway ([`DataPlane`]): the compiled
//! configuration (with its tracer), metrics, the clock, the side-call client, usage counters,
//! the access log, and the tasks it spawns. The server owns it beside its own state (listeners,
//! workers, shutdown) and hands it to the pipeline, so the pipeline does not depend on the
//! server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio_util::task::TaskTracker;

use gw_observability::{AccessLog, LogSampler, Metrics};

use crate::runtime::Runtime;

/// The request path's view of the gateway (one per gateway, shared by every connection).
pub(crate) struct DataPlane {
    pub(crate) runtime: ArcSwap<Runtime>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn gw_core::Clock>,
    /// The client plugins make side calls with (`gw_core::Ctx::upstreams`).
    pub(crate) upstreams: gw_core::Upstreams,
    /// Requests per consumer, route, minute and outcome, not yet written out.
    pub(crate) usage: gw_observability::Usage,
    pub(crate) access_log: Option<AccessLog>,
    /// Warning lines about expected refusals, sampled (one per kind per second).
    pub(crate) refusal_log: LogSampler,
    /// Connection tasks and upgraded tunnels, awaited on shutdown.
    pub(crate) tasks: TaskTracker,
    /// Response bodies read on after their client left (a cache fill needs the rest): bounded,
    /// in `tasks`.
    pub(crate) drains: crate::body::Drains,
    /// The shutdown timeout ran out: what is still running is being dropped.
    pub(crate) aborting: AtomicBool,
}

impl DataPlane {
    /// Whether the shutdown timeout ran out (requests still running are being cut).
    pub(crate) fn is_aborting(&self) -> bool {
        self.aborting.load(Ordering::Acquire)
    }
}
