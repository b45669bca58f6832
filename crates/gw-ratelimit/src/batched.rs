//! Batched Redis mode: requests are counted locally and the counts are added to Redis every
//! `interval` in one pipeline per Redis Cluster hash slot (one for a single Redis), which also
//! brings back the totals of every node. The request path never waits on Redis; the price is
//! accuracy: between two synchronisations each node only knows its own new requests, so a
//! cluster may admit up to `nodes x rate x interval` more than the limit. Window algorithms only
//! (a GCRA timestamp cannot be merged).
//!
//! A synchronisation that fails keeps its counts for the next one (for as long as the window
//! they count is alive), reports each failed round to the failure hook (a metric) and logs a
//! warning at most every 10 s with the number of failures since the last one. Only outages back
//! off the Redis store (per master on a cluster), so a failing synchronisation never stops
//! another policy's requests on healthy masters.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::redis_store::SyncItem;
use crate::{Algorithm, Decision, Limit, LimitStatus, RedisStore};

/// Called once per synchronisation round in which some counts could not be sent.
pub type SyncFailureHook = Arc<dyn Fn() + Send + Sync>;

/// Least time between two warnings about failed synchronisations.
const WARN_EVERY: Duration = Duration::from_secs(10);

struct Cell {
    digest: u128,
    key: String,
    prev_key: String,
    ttl_ms: u64,
    /// Synchronisations of this cell that failed in a row.
    failures: AtomicU32,
    /// Counted here, not yet added to Redis.
    pending: AtomicU64,
    /// The total in Redis at the last synchronisation (what this node sent included).
    global: AtomicU64,
    /// The previous window's total in Redis (sliding window).
    prev_global: AtomicU64,
    dirty: AtomicBool,
}

struct Inner {
    redis: Arc<RedisStore>,
    cells: moka::sync::Cache<u128, Arc<Cell>, xxhash_rust::xxh3::Xxh3Builder>,
    dirty: Mutex<Vec<Arc<Cell>>>,
    interval: Duration,
    on_failure: Option<SyncFailureHook>,
    /// Where a span per synchronisation goes (the gateway's tracer), and the instance name it
    /// carries.
    spans: Option<(gw_core::BackgroundSpans, String)>,
    /// Failed rounds not yet reported in a warning, and when the last warning was logged.
    unreported: AtomicU64,
    last_warn: Mutex<Option<Instant>>,
}

/// Local counting synchronised with Redis every `interval`.
pub struct BatchedStore {
    inner: Arc<Inner>,
    interval: Duration,
    started: AtomicBool,
}

impl BatchedStore {
    /// A batched store over `redis`, synchronising every `interval`.
    pub fn new(redis: Arc<RedisStore>, interval: Duration, max_keys: u64, idle: Duration) -> BatchedStore {
        BatchedStore {
            inner: Arc::new(Inner {
                redis,
                cells: moka::sync::Cache::builder()
                    .max_capacity(max_keys)
                    .time_to_idle(idle)
                    .build_with_hasher(xxhash_rust::xxh3::Xxh3Builder::new()),
                dirty: Mutex::new(Vec::new()),
                interval,
                on_failure: None,
                spans: None,
                unreported: AtomicU64::new(0),
                last_warn: Mutex::new(None),
            }),
            interval,
            started: AtomicBool::new(false),
        }
    }

    /// Call `hook` once per synchronisation round in which some counts could not be sent (set
    /// before the first check).
    pub fn on_sync_failure(mut self, hook: SyncFailureHook) -> BatchedStore {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.on_failure = Some(hook);
        }
        self
    }

    /// Record a span per synchronisation round with keys to send (the root of a trace of its
    /// own: it belongs to no request) through `spans`, the gateway's tracer (nothing while
    /// tracing is off); `instance` is the plugin instance's name (set before the first check).
    pub fn with_spans(mut self, spans: gw_core::BackgroundSpans, instance: &str) -> BatchedStore {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.spans = Some((spans, instance.to_string()));
        }
        self
    }

    fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let interval = self.interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // The store was dropped (configuration replaced): stop.
                let Some(inner) = weak.upgrade() else { break };
                inner.sync().await;
            }
        });
    }

    /// Check and count one request (see the module docs for the accuracy trade-off).
    pub fn check(&self, alg: Algorithm, key: u128, limits: &[Limit], now_ms: u64) -> Decision {
        self.start();
        let mut statuses = Vec::with_capacity(limits.len());
        let mut taken: Vec<Arc<Cell>> = Vec::new();
        let mut refused = None;
        for l in limits {
            let w = l.window_ms.max(1);
            let idx = now_ms / w;
            let elapsed = now_ms % w;
            let cell = self.inner.cell(alg, key, w, idx);
            self.inner.mark(&cell);
            let weighted = if alg == Algorithm::SlidingWindow {
                cell.prev_global.load(Ordering::Acquire) as f64 * (w - elapsed) as f64 / w as f64
            } else {
                0.0
            };
            if refused.is_some() {
                let used =
                    weighted + (cell.global.load(Ordering::Acquire) + cell.pending.load(Ordering::Acquire)) as f64;
                statuses.push(LimitStatus { remaining: (l.max as f64 - used).max(0.0) as u64, reset_ms: w - elapsed });
                continue;
            }
            let mut p = cell.pending.load(Ordering::Acquire);
            loop {
                let used = weighted + (cell.global.load(Ordering::Acquire) + p) as f64;
                if used + 1.0 > l.max as f64 {
                    statuses.push(LimitStatus { remaining: 0, reset_ms: w - elapsed });
                    let (cc, pc) = (cell.global.load(Ordering::Acquire) + p, cell.prev_global.load(Ordering::Acquire));
                    refused = Some(crate::window_wait_ms(alg, l.max, cc, pc, w, elapsed).max(1));
                    break;
                }
                match cell.pending.compare_exchange_weak(p, p + 1, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        statuses.push(LimitStatus {
                            remaining: (l.max as f64 - used - 1.0).max(0.0) as u64,
                            reset_ms: w - elapsed,
                        });
                        taken.push(cell.clone());
                        break;
                    }
                    Err(v) => p = v,
                }
            }
        }
        if let Some(retry) = refused {
            for c in taken {
                let _ = c.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
            }
            return Decision { allowed: false, limits: statuses, retry_after_ms: retry.max(1) };
        }
        Decision { allowed: true, limits: statuses, retry_after_ms: 0 }
    }

    /// Synchronise now (tests; the background task does this every interval).
    pub async fn sync_now(&self) {
        self.inner.sync().await;
    }
}

impl Inner {
    fn cell(&self, alg: Algorithm, key: u128, w: u64, idx: u64) -> Arc<Cell> {
        let mut buf = [0u8; 33];
        buf[..16].copy_from_slice(&key.to_le_bytes());
        buf[16..24].copy_from_slice(&w.to_le_bytes());
        buf[24..32].copy_from_slice(&idx.to_le_bytes());
        buf[32] = alg.code().as_bytes()[0];
        let id = xxhash_rust::xxh3::xxh3_128(&buf);
        self.cells.get_with(id, || {
            let base = format!("gh:rb:{{{key:032x}}}:{}:{w}", alg.code());
            Arc::new(Cell {
                digest: key,
                failures: AtomicU32::new(0),
                key: format!("{base}:{idx}"),
                prev_key: format!("{base}:{}", idx.wrapping_sub(1)),
                ttl_ms: if alg == Algorithm::SlidingWindow { 2 * w } else { w },
                pending: AtomicU64::new(0),
                global: AtomicU64::new(0),
                prev_global: AtomicU64::new(0),
                dirty: AtomicBool::new(false),
            })
        })
    }

    fn mark(&self, c: &Arc<Cell>) {
        if !c.dirty.swap(true, Ordering::AcqRel)
            && let Ok(mut d) = self.dirty.lock()
        {
            d.push(c.clone());
        }
    }

    async fn sync(&self) {
        let cells: Vec<Arc<Cell>> = match self.dirty.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return,
        };
        if cells.is_empty() {
            return;
        }
        let mut items = Vec::with_capacity(cells.len());
        let mut sent = Vec::with_capacity(cells.len());
        for c in &cells {
            c.dirty.store(false, Ordering::Release);
            let n = c.pending.load(Ordering::Acquire);
            sent.push(n);
            items.push(SyncItem {
                digest: c.digest,
                key: c.key.clone(),
                delta: n,
                ttl_ms: c.ttl_ms,
                prev_key: c.prev_key.clone(),
            });
        }
        let span = self.spans.as_ref().and_then(|(s, instance)| {
            let mut span = s.root("rate-limiting sync", gw_core::SpanKind::Client)?;
            span.set("db.system.name", "redis");
            span.set("gatehouse.plugin", "rate-limiting");
            span.set("gatehouse.plugin.instance", instance.clone());
            span.set("gatehouse.ratelimit.sync.keys", i64::try_from(items.len()).unwrap_or(i64::MAX));
            Some(span)
        });
        let answers = self.redis.add_and_read(&items).await;
        let mut failed: Option<Arc<crate::StoreError>> = None;
        let mut failed_cells = 0usize;
        for ((c, n), answer) in cells.iter().zip(sent).zip(answers) {
            match answer {
                Ok((total, prev)) => {
                    c.failures.store(0, Ordering::Relaxed);
                    // Publish the new total before removing what it now includes: a reader in
                    // between counts those requests twice (stricter), never zero times.
                    c.global.store(total, Ordering::Release);
                    c.prev_global.store(prev, Ordering::Release);
                    let _ = c.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(n)));
                }
                Err(e) => {
                    failed_cells += 1;
                    failed.get_or_insert(e);
                    // Keep the counts for the next round while their window can still matter;
                    // a cell given up on is marked again by its next request.
                    let tries = c.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    let worth = c.ttl_ms / (self.interval.as_millis() as u64).max(1) + 1;
                    if u64::from(tries) <= worth {
                        self.mark(c);
                    }
                }
            }
        }
        if let Some(mut span) = span {
            let outcome = match failed_cells {
                0 => "ok",
                n if n == cells.len() => "failed",
                _ => "partial",
            };
            span.set("gatehouse.redis.outcome", outcome);
            span.set("gatehouse.ratelimit.sync.failed_keys", i64::try_from(failed_cells).unwrap_or(i64::MAX));
            if let Some(e) = &failed {
                span.set(
                    "error.type",
                    match **e {
                        crate::StoreError::Unavailable(_) => "redis_unavailable",
                        crate::StoreError::Config(_) => "redis_config",
                    },
                );
            }
            span.end(failed.as_ref().map(|e| e.to_string()));
        }
        if let Some(e) = failed {
            if let Some(h) = &self.on_failure {
                h();
            }
            self.warn(&e, failed_cells, cells.len());
        }
    }

    /// A warning at most every [`WARN_EVERY`], with the failed rounds since the last one.
    fn warn(&self, e: &crate::StoreError, failed: usize, total: usize) {
        self.unreported.fetch_add(1, Ordering::Relaxed);
        let Ok(mut last) = self.last_warn.lock() else { return };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            return;
        }
        *last = Some(now);
        let rounds = self.unreported.swap(0, Ordering::Relaxed);
        tracing::warn!(
            error = %e,
            counters_failed = failed,
            counters = total,
            failed_rounds = rounds,
            "rate-limit batch sync to Redis failed; counts kept for the next one"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisConfig;

    /// Two "nodes" sharing the real Redis: each sees the other's counts after a sync.
    #[tokio::test]
    async fn nodes_see_each_other_after_sync() {
        let redis = Arc::new(
            RedisStore::new(&RedisConfig {
                urls: vec!["redis://127.0.0.1:6379/".into()],
                cluster: false,
                timeout: Duration::from_millis(500),
                backoff: Duration::from_millis(100),
                ca_pem: None,
            })
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let a = BatchedStore::new(redis.clone(), Duration::from_secs(3600), 1000, Duration::from_secs(60));
        let b = BatchedStore::new(redis, Duration::from_secs(3600), 1000, Duration::from_secs(60));
        let key = crate::digest(&format!("batched-{:?}-{}", std::time::Instant::now(), std::process::id()));
        let limits = [Limit { name: "minute", window_ms: 60_000, max: 10 }];
        let now = 1_700_000_000_000;
        for alg in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
            let key = key.wrapping_add(alg as u128);
            for _ in 0..6 {
                assert!(a.check(alg, key, &limits, now).allowed);
            }
            a.sync_now().await;
            assert!(b.check(alg, key, &limits, now).allowed, "b knew nothing yet");
            b.sync_now().await;
            let admitted = (0..10).filter(|_| b.check(alg, key, &limits, now).allowed).count();
            assert_eq!(admitted, 3, "{alg:?}: b saw a's 6 (and its own 1)");
            b.sync_now().await;
            // a's view is one interval old: its next request still passes (the documented
            // overshoot of batched mode), marks the key for refresh, and after the next
            // synchronisation a sees the total.
            assert!(a.check(alg, key, &limits, now).allowed);
            a.sync_now().await;
            assert!(!a.check(alg, key, &limits, now).allowed, "{alg:?}: a sees the total");
        }
    }

    /// Redis down: each failed round calls the hook once, the counts stay (the node keeps
    /// limiting on what it counted itself), and a cell is retried only while its window can
    /// matter, then left until its next request.
    #[tokio::test]
    async fn failed_sync_is_reported_and_retried_while_useful() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let redis = Arc::new(
            RedisStore::new(&RedisConfig {
                urls: vec![format!("redis://127.0.0.1:{port}/")],
                cluster: false,
                timeout: Duration::from_millis(100),
                backoff: Duration::from_millis(1),
                ca_pem: None,
            })
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let failures = Arc::new(AtomicU64::new(0));
        let f = failures.clone();
        // Window 1 s, interval 1 h: a cell is worth retrying for ttl/interval + 1 = 1 round.
        let s = BatchedStore::new(redis, Duration::from_secs(3600), 100, Duration::from_secs(60)).on_sync_failure(
            Arc::new(move || {
                f.fetch_add(1, Ordering::Relaxed);
            }),
        );
        // The background task's first round (at once, with nothing to send), then none for 1 h.
        s.start();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let limits = [Limit { name: "second", window_ms: 1000, max: 3 }];
        for _ in 0..3 {
            assert!(s.check(Algorithm::FixedWindow, 7, &limits, 5_000).allowed);
        }
        assert!(!s.check(Algorithm::FixedWindow, 7, &limits, 5_000).allowed, "counted locally");
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.sync_now().await;
        assert_eq!(failures.load(Ordering::Relaxed), 1);
        assert_eq!(s.inner.dirty.lock().map(|d| d.len()).unwrap_or(9), 1, "kept for the next round");
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.sync_now().await;
        assert_eq!(failures.load(Ordering::Relaxed), 2);
        assert_eq!(s.inner.dirty.lock().map(|d| d.len()).unwrap_or(9), 0, "given up: its window is over");
        s.sync_now().await;
        assert_eq!(failures.load(Ordering::Relaxed), 2, "nothing to send, nothing failed");
        assert!(!s.check(Algorithm::FixedWindow, 7, &limits, 5_000).allowed, "the counts stay");
        assert_eq!(s.inner.dirty.lock().map(|d| d.len()).unwrap_or(9), 1, "marked again by a request");
    }
}
