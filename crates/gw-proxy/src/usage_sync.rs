//! Writing usage counters and local quota counters to the durable store, off the request path.
//!
//! Every `gateway.usage.flush_interval` (default 2 s) a background task takes what the request
//! path counted ([`gw_observability::Usage::take`]) and the quota counters that changed
//! ([`gw_ratelimit::PeriodCounters::changed`]) and writes them in one batch. A batch the store
//! refuses is kept and merged into the next one (bounded by [`MAX_PENDING`] rows). Graceful
//! shutdown writes a last batch after the last request has been logged; a crash loses what was
//! counted since the last write (at most one flush interval). At start, the quota counters of
//! current periods are read back, so a quota does not start again from zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gw_observability::{
    Granularity, Metrics, QuotaCount, Span, Usage, UsageBackend, UsageFilter, UsageRecord, UsageRow,
};
use gw_ratelimit::PeriodCount;

/// Rows kept while the store refuses writes; past this the oldest are dropped (and counted in
/// `gatehouse_plugin_events_total{event="usage_rows_dropped"}`).
pub(crate) const MAX_PENDING: usize = 200_000;

/// How long one write or read of the usage store may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Quota counters of periods that started up to this long ago are restored (a month is at most
/// 31 days) and kept in the store.
const QUOTA_LOOKBACK_MS: u64 = 32 * 86_400_000;

/// How often old rows are deleted.
const PRUNE_EVERY_MS: u64 = 3_600_000;

pub(crate) struct UsageSync {
    pub(crate) backend: Arc<dyn UsageBackend>,
    /// Rows taken from the counters and not yet stored; the lock also serializes flushes.
    pending: tokio::sync::Mutex<Vec<UsageRow>>,
    last_prune_ms: AtomicU64,
    failures: AtomicU64,
}

impl UsageSync {
    pub(crate) fn new(backend: Arc<dyn UsageBackend>) -> UsageSync {
        UsageSync {
            backend,
            pending: tokio::sync::Mutex::new(Vec::new()),
            last_prune_ms: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Write what was counted since the last write, with the changed quota counters.
    pub(crate) async fn flush(&self, usage: &Usage, now_ms: u64, metrics: &Metrics) -> Result<(), String> {
        let mut pending = self.pending.lock().await;
        gw_observability::merge_usage(&mut pending, usage.take(now_ms));
        let counters = gw_plugins::quota_counters();
        let changed = counters.changed();
        if pending.is_empty() && changed.is_empty() {
            return Ok(());
        }
        let quotas: Vec<QuotaCount> = changed
            .iter()
            .map(|c| QuotaCount { name: c.name.clone(), period_start_ms: c.period_start_ms, count: c.count })
            .collect();
        let r = match tokio::time::timeout(STORE_TIMEOUT, self.backend.write(&pending, &quotas)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {STORE_TIMEOUT:?}")),
        };
        match r {
            Ok(()) => {
                pending.clear();
                counters.written(&changed);
                if self.failures.swap(0, Ordering::Relaxed) > 0 {
                    tracing::info!(store = self.backend.kind(), "usage store writable again");
                }
                Ok(())
            }
            Err(e) => {
                metrics.plugin_event("usage_store_write_failed");
                if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(store = self.backend.kind(), error = %e, rows = pending.len(), "cannot write usage; keeping it for the next attempt");
                }
                if pending.len() > MAX_PENDING {
                    let extra = pending.len() - MAX_PENDING;
                    pending.drain(..extra);
                    metrics.plugin_event("usage_rows_dropped");
                    tracing::warn!(dropped = extra, "usage rows dropped: the store has refused writes for too long");
                }
                Err(e)
            }
        }
    }

    /// Read back this node's quota counters of current periods.
    pub(crate) async fn restore_quotas(&self, now_ms: u64) {
        let since = now_ms.saturating_sub(QUOTA_LOOKBACK_MS);
        match tokio::time::timeout(STORE_TIMEOUT, self.backend.quotas(since)).await {
            Ok(Ok(rows)) => {
                let counts: Vec<PeriodCount> = rows
                    .into_iter()
                    .map(|c| PeriodCount { name: c.name, period_start_ms: c.period_start_ms, count: c.count })
                    .collect();
                if !counts.is_empty() {
                    tracing::info!(store = self.backend.kind(), counters = counts.len(), "quota counters restored");
                }
                gw_plugins::quota_counters().restore(&counts);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read quota counters; local quotas start from zero"),
            Err(_) => tracing::warn!("quota counters: no answer from the store; local quotas start from zero"),
        }
    }

    /// Delete rows past their retention (at most once an hour).
    pub(crate) async fn prune_if_due(&self, now_ms: u64, settings: &gw_config::model::UsageSettings) {
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < PRUNE_EVERY_MS && last != 0 {
            return;
        }
        self.last_prune_ms.store(now_ms, Ordering::Relaxed);
        let quotas_before = now_ms.saturating_sub(QUOTA_LOOKBACK_MS);
        for (span, keep) in [(Span::Minute, settings.minute_retention), (Span::Hour, settings.retention)] {
            let before = now_ms.saturating_sub(keep.as_millis() as u64);
            let r = tokio::time::timeout(STORE_TIMEOUT, self.backend.prune(span, before, quotas_before)).await;
            if !matches!(r, Ok(Ok(()))) {
                tracing::debug!("usage retention: delete failed; trying again in an hour");
            }
        }
    }

    /// Usage between `from_ms` (inclusive) and `to_ms` (exclusive) in buckets of `g`, after
    /// writing this node's pending counts.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn report(
        &self,
        usage: &Usage,
        now_ms: u64,
        metrics: &Metrics,
        g: Granularity,
        from_ms: u64,
        to_ms: u64,
        filter: &UsageFilter,
    ) -> Result<Vec<UsageRecord>, String> {
        // A store that refuses the write probably refuses the read too; the read says why.
        let _ = self.flush(usage, now_ms, metrics).await;
        let from = g.bucket(from_ms);
        let rows = match tokio::time::timeout(STORE_TIMEOUT, self.backend.read(g.span(), from, to_ms, filter)).await {
            Ok(r) => r?,
            Err(_) => return Err(format!("usage store: no answer within {STORE_TIMEOUT:?}")),
        };
        Ok(gw_observability::aggregate(rows, g))
    }
}

/// The store the gateway uses when it is given none: memory.
pub(crate) fn memory() -> Arc<dyn UsageBackend> {
    Arc::new(gw_observability::MemoryUsage::default())
}
