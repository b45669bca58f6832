//! The memory tier: a moka cache bounded in bytes (a weigher per entry), with TinyLFU
//! admission and eviction; entries expire when their last variant's storage time ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gw_core::Clock;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;

use super::Stored;

/// The variants stored under one primary key (newest first).
#[derive(Debug, Clone, Default)]
pub struct Variants(pub Vec<Arc<Stored>>);

impl Variants {
    fn weight(&self) -> u32 {
        let w: u64 = self.0.iter().map(|s| s.weight()).sum();
        w.min(u64::from(u32::MAX)) as u32
    }

    fn expires_ms(&self) -> u64 {
        self.0.iter().map(|s| s.expires_ms).max().unwrap_or(0)
    }
}

struct Expire {
    clock: Arc<dyn Clock>,
}

impl Expire {
    fn left(&self, v: &Arc<Variants>) -> Option<Duration> {
        Some(Duration::from_millis(v.expires_ms().saturating_sub(self.clock.now_ms())))
    }
}

impl moka::Expiry<u128, Arc<Variants>> for Expire {
    fn expire_after_create(&self, _k: &u128, v: &Arc<Variants>, _at: Instant) -> Option<Duration> {
        self.left(v)
    }

    fn expire_after_update(
        &self,
        _k: &u128,
        v: &Arc<Variants>,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.left(v)
    }
}

/// URL -> primary keys holding it (purges by URL and invalidations without scanning).
type UrlIndex = Arc<Mutex<HashMap<String, Vec<u128>>>>;

fn index_lock(i: &UrlIndex) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u128>>> {
    // Plain map edits: a poisoned lock still holds a usable map.
    i.lock().unwrap_or_else(|p| p.into_inner())
}

/// The per-node memory tier.
#[derive(Clone)]
pub struct MemoryTier {
    cache: moka::sync::Cache<u128, Arc<Variants>>,
    evictions: Arc<AtomicU64>,
    by_url: UrlIndex,
    max_variants: usize,
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` (approximate: bodies, fields, bookkeeping), at most
    /// `max_variants` variants per primary key.
    pub fn new(max_bytes: u64, max_variants: usize, clock: Arc<dyn Clock>) -> MemoryTier {
        let evictions = Arc::new(AtomicU64::new(0));
        let ev = evictions.clone();
        let by_url: UrlIndex = Arc::default();
        let idx = by_url.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &u128, v: &Arc<Variants>| v.weight())
            .eviction_policy(EvictionPolicy::tiny_lfu())
            .expire_after(Expire { clock })
            .support_invalidation_closures()
            .eviction_listener(move |k: Arc<u128>, v: Arc<Variants>, cause| {
                if cause == RemovalCause::Size {
                    ev.fetch_add(1, Ordering::Relaxed);
                }
                if cause != RemovalCause::Replaced {
                    let mut m = index_lock(&idx);
                    for s in v.0.iter() {
                        if let Some(keys) = m.get_mut(&s.url) {
                            keys.retain(|x| x != k.as_ref());
                            if keys.is_empty() {
                                m.remove(&s.url);
                            }
                        }
                    }
                }
            })
            .build();
        MemoryTier { cache, evictions, by_url, max_variants: max_variants.max(1) }
    }

    /// The variants under a primary key.
    pub fn get(&self, key: u128) -> Option<Arc<Variants>> {
        self.cache.get(&key)
    }

    /// Store a variant: it replaces the variant with the same secondary key and becomes the
    /// first; variants past their storage time or beyond the limit are dropped.
    pub fn put(&self, key: u128, s: Arc<Stored>, now_ms: u64) {
        let mut v = Vec::with_capacity(4);
        if let Some(old) = self.cache.get(&key) {
            for o in old.0.iter() {
                if o.secondary != s.secondary && o.expires_ms > now_ms && v.len() + 1 < self.max_variants {
                    v.push(o.clone());
                }
            }
        }
        self.index(key, &s.url);
        v.insert(0, s);
        self.cache.insert(key, Arc::new(Variants(v)));
    }

    /// Replace every variant of a key (from the Redis tier).
    pub fn put_all(&self, key: u128, v: Variants) {
        if !v.0.is_empty() {
            for s in v.0.iter() {
                self.index(key, &s.url);
            }
            self.cache.insert(key, Arc::new(v));
        }
    }

    fn index(&self, key: u128, url: &str) {
        let mut m = index_lock(&self.by_url);
        let keys = m.entry(url.to_string()).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }

    /// Remove every entry holding a response for `url` (through the URL index: no scan).
    /// Returns how many primary keys were removed.
    pub fn remove_url(&self, url: &str) -> usize {
        let keys = index_lock(&self.by_url).remove(url).unwrap_or_default();
        for k in &keys {
            self.cache.invalidate(k);
        }
        keys.len()
    }

    /// Remove a primary key.
    pub fn remove(&self, key: u128) {
        self.cache.invalidate(&key);
    }

    /// Remove every entry whose variants match `pred` (applied lazily by moka: a matching entry
    /// is never returned again).
    pub fn remove_if(&self, pred: impl Fn(&Stored) -> bool + Send + Sync + 'static) {
        if self.cache.invalidate_entries_if(move |_k, v: &Arc<Variants>| v.0.iter().any(|s| pred(s))).is_err() {
            // Closures are enabled at build time; if moka still refuses, drop everything rather
            // than serve purged content.
            self.cache.invalidate_all();
        }
    }

    /// Remove everything.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Bytes stored (weighted size), after pending maintenance.
    pub fn bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// Number of primary keys stored, after pending maintenance.
    pub fn entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Entries evicted for space so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Run moka's pending maintenance (evictions, expirations, invalidations).
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::sample;
    use gw_core::SystemClock;

    #[test]
    fn byte_limit_evicts_and_counts() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now = clock.now_ms();
        let m = MemoryTier::new(64 * 1024, 8, clock);
        let body = "x".repeat(4000);
        for i in 0..100u128 {
            m.put(i, Arc::new(sample(&format!("http://h/{i}"), &body, "max-age=600", now)), now);
            // Read some keys often so TinyLFU has frequencies to go by.
            let _ = m.get(0);
        }
        m.sync();
        assert!(m.bytes() <= 64 * 1024, "{}", m.bytes());
        // 100 bodies of 4000 bytes into 64 KiB: at most 16 fit; each of the others was evicted
        // or refused admission, and counted.
        let (entries, evictions) = (m.entries(), m.evictions());
        assert!((5..=16).contains(&entries), "{entries}");
        assert_eq!(entries + evictions, 100, "{entries} kept, {evictions} counted as evicted");
        assert!(m.get(0).is_some(), "the key read often is kept");
    }

    #[test]
    fn variants_replace_and_bound() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now = clock.now_ms();
        let m = MemoryTier::new(1 << 20, 2, clock);
        let mk = |lang: &str, body: &str| {
            let mut s = sample("http://h/", body, "max-age=60", now);
            s.secondary = crate::vary::Secondary(vec![("accept-language".into(), Some(lang.into()))]);
            Arc::new(s)
        };
        m.put(1, mk("en", "a"), now);
        m.put(1, mk("fr", "b"), now);
        m.put(1, mk("en", "c"), now);
        let v = m.get(1).unwrap_or_default();
        assert_eq!(v.0.len(), 2);
        assert_eq!(v.0[0].body[0], "c");
        m.put(1, mk("de", "d"), now);
        assert_eq!(m.get(1).map(|v| v.0.len()), Some(2), "bounded");
    }

    #[test]
    fn predicate_removal() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now = clock.now_ms();
        let m = MemoryTier::new(1 << 20, 4, clock);
        m.put(1, Arc::new(sample("http://h/a/1", "x", "max-age=60", now)), now);
        m.put(2, Arc::new(sample("http://h/b/1", "x", "max-age=60", now)), now);
        m.remove_if(|s| s.url.starts_with("http://h/a/"));
        assert!(m.get(1).is_none());
        assert!(m.get(2).is_some());
        assert_eq!(m.remove_url("http://h/b/1"), 1);
        assert!(m.get(2).is_none());
        assert_eq!(m.remove_url("http://h/b/1"), 0);
        // Evicted and removed entries leave the index.
        m.put(3, Arc::new(sample("http://h/c", "x", "max-age=60", now)), now);
        m.remove(3);
        m.sync();
        assert!(index_lock(&m.by_url).get("http://h/c").is_none());
        m.clear();
        assert!(m.get(2).is_none());
    }
}
