//! Quota counters of the current calendar period that can be written to a durable store and
//! restored at start, so that a local quota (a monthly one, say) does not start again from zero
//! when the gateway is restarted or redeployed.
//!
//! One cell per (name, period start): an atomic count, the count last written out, and the name
//! (kept for writing out). Counting is a compare-and-swap loop (no lock); the cache is bounded
//! and cells idle for longer than a period are dropped, so a flood of distinct client IPs cannot
//! grow memory without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One counter as written to (and read back from) a durable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodCount {
    /// The counter's name (`q:<plugin instance>|c:<consumer>` or `...|ip:<address>`).
    pub name: String,
    /// Start of its period (ms since the Unix epoch).
    pub period_start_ms: u64,
    /// Requests counted in the period.
    pub count: u64,
}

struct Cell {
    name: Box<str>,
    start_ms: u64,
    count: AtomicU64,
    /// The count last written to the durable store.
    written: AtomicU64,
}

/// Calendar-period counters (quotas), restorable.
pub struct PeriodCounters {
    cells: moka::sync::Cache<u128, Arc<Cell>, xxhash_rust::xxh3::Xxh3Builder>,
}

impl Default for PeriodCounters {
    fn default() -> Self {
        // A period is at most 31 days; a cell idle for 32 days belongs to a period that ended.
        Self::new(1_000_000, Duration::from_secs(32 * 86_400))
    }
}

fn cell_key(name: &str, start_ms: u64) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(name.as_bytes());
    h.update(&[0xff]);
    h.update(&start_ms.to_le_bytes());
    h.digest128()
}

impl PeriodCounters {
    /// At most `max_keys` counters; one idle for `idle` is dropped.
    pub fn new(max_keys: u64, idle: Duration) -> PeriodCounters {
        PeriodCounters {
            cells: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(idle)
                .build_with_hasher(xxhash_rust::xxh3::Xxh3Builder::new()),
        }
    }

    fn cell(&self, name: &str, start_ms: u64) -> Arc<Cell> {
        self.cells.get_with(cell_key(name, start_ms), || {
            Arc::new(Cell { name: name.into(), start_ms, count: AtomicU64::new(0), written: AtomicU64::new(0) })
        })
    }

    /// Count one request of `name` in the period starting at `start_ms`, allowing `max`.
    /// Returns the count after this request, or `Err(count)` when the quota is used up (the
    /// refused request is not counted).
    pub fn count(&self, name: &str, start_ms: u64, max: u64) -> Result<u64, u64> {
        let cell = self.cell(name, start_ms);
        let mut cur = cell.count.load(Ordering::Acquire);
        loop {
            if cur >= max {
                return Err(cur);
            }
            match cell.count.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(cur + 1),
                Err(v) => cur = v,
            }
        }
    }

    /// The current count of `name` in the period starting at `start_ms` (0 if unknown).
    pub fn get(&self, name: &str, start_ms: u64) -> u64 {
        self.cells.get(&cell_key(name, start_ms)).map_or(0, |c| c.count.load(Ordering::Acquire))
    }

    /// Put back counts read from the durable store (at start): each counter becomes at least
    /// the stored count. Counters of periods that ended before `now_start_ms` are skipped by
    /// the caller.
    pub fn restore(&self, counts: &[PeriodCount]) {
        for c in counts {
            let cell = self.cell(&c.name, c.period_start_ms);
            cell.count.fetch_max(c.count, Ordering::AcqRel);
            cell.written.fetch_max(c.count, Ordering::AcqRel);
        }
    }

    /// Counters changed since they were last written out, with their current counts. Call
    /// [`PeriodCounters::written`] with them once they are durable.
    pub fn changed(&self) -> Vec<PeriodCount> {
        let mut out = Vec::new();
        for (_, c) in self.cells.iter() {
            let n = c.count.load(Ordering::Acquire);
            if n != c.written.load(Ordering::Acquire) {
                out.push(PeriodCount { name: c.name.to_string(), period_start_ms: c.start_ms, count: n });
            }
        }
        out
    }

    /// Record that `counts` (from [`PeriodCounters::changed`]) are durable.
    pub fn written(&self, counts: &[PeriodCount]) {
        for c in counts {
            if let Some(cell) = self.cells.get(&cell_key(&c.name, c.period_start_ms)) {
                cell.written.fetch_max(c.count, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_restores_and_reports_changes() {
        let p = PeriodCounters::default();
        assert_eq!(p.count("q:a|c:alice", 1000, 3), Ok(1));
        assert_eq!(p.count("q:a|c:alice", 1000, 3), Ok(2));
        let ch = p.changed();
        assert_eq!(ch, vec![PeriodCount { name: "q:a|c:alice".into(), period_start_ms: 1000, count: 2 }]);
        p.written(&ch);
        assert!(p.changed().is_empty());
        // A restart: a fresh set restored from what was written.
        let q = PeriodCounters::default();
        q.restore(&ch);
        assert!(q.changed().is_empty(), "restored counts are already durable");
        assert_eq!(q.count("q:a|c:alice", 1000, 3), Ok(3));
        assert_eq!(q.count("q:a|c:alice", 1000, 3), Err(3), "the refused request is not counted");
        assert_eq!(q.get("q:a|c:alice", 1000), 3);
        assert_eq!(q.count("q:a|c:alice", 2000, 3), Ok(1), "a new period");
    }
}
