//! Gatehouse observability: Prometheus metrics with bounded label cardinality, and the
//! structured JSON access log.
//!
//! How to use: create one [`Metrics`] per process, fetch [`RouteMetrics`] handles for each route
//! when a configuration is compiled (labels are route and service *names*, never raw paths), and
//! record on the request path through those handles without any label lookup. Send one
//! [`AccessLogLine`] per request to an [`AccessLog`], which writes on its own thread.

mod access_log;
mod metrics;
mod usage;

pub use access_log::{AccessLog, AccessLogLine, AccessLogTarget, Rfc3339, rfc3339};
mod sampler;

pub use metrics::{
    CIRCUIT_STATES, CacheCounter, Format, Metrics, RetryCounter, RouteMetrics, Sample, TargetHealthLabels,
    parse_sample, sample_label, to_prometheus_text,
};
pub use sampler::{LogSampler, Sampled};
pub use usage::{
    Granularity, MemoryUsage, Outcome, QuotaCount, Span, Usage, UsageBackend, UsageFilter, UsageRecord, UsageRow,
    aggregate, merge as merge_usage,
};

/// Install the process-wide `tracing` subscriber: JSON lines or human-readable text on stderr,
/// filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(json: bool) {
    init_tracing_with(json, None);
}

/// [`init_tracing`] with one more layer that sees every event the filter lets through (the
/// dashboard's ring buffer of recent errors).
pub fn init_tracing_with(
    json: bool,
    extra: Option<Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>>,
) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let out = fmt::layer().with_writer(std::io::stderr).with_target(false);
    let out = if json { out.json().flatten_event(true).boxed() } else { out.boxed() };
    let _ = tracing_subscriber::registry().with(extra).with(filter).with(out).try_init();
}
