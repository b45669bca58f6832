//! Batched Redis mode: requests are counted locally and the counts are added to Redis every
//! `interval` in one pipeline, which also brings back the totals of every node. The request path
//! never waits on Redis; the price is accuracy: between two synchronisations each node only
//! knows its own new requests, so a cluster may admit up to `nodes x rate x interval` more than
//! the limit. Window algorithms only (a GCRA timestamp cannot be merged).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::{Algorithm, Decision, Limit, LimitStatus, RedisStore};

struct Cell {
    key: String,
    prev_key: String,
    ttl_ms: u64,
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
            }),
            interval,
            started: AtomicBool::new(false),
        }
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
            items.push((c.key.clone(), n, c.ttl_ms, c.prev_key.clone()));
        }
        match self.redis.add_and_read(&items).await {
            Ok(totals) => {
                for ((c, n), (total, prev)) in cells.iter().zip(sent).zip(totals) {
                    // Publish the new total before removing what it now includes: a reader in
                    // between counts those requests twice (stricter), never zero times.
                    c.global.store(total, Ordering::Release);
                    c.prev_global.store(prev, Ordering::Release);
                    let _ = c.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(n)));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "rate-limit batch sync failed; counts kept for the next one");
                for c in &cells {
                    self.mark(c);
                }
            }
        }
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
}
