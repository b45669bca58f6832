//! Shared pieces of the traffic-control plugins: the client key (`limit_by`), process-wide
//! stores that survive reloads, and store-failure handling.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use gw_config::model::Config;
use gw_core::{Ctx, RequestHead};
use gw_ratelimit::{LocalStore, RedisConfig, RedisStore};
use http::HeaderName;

/// One part of a client key.
#[derive(Debug, Clone)]
enum Part {
    Consumer,
    Credential,
    Ip,
    Route,
    Service,
    Header(HeaderName),
}

/// What identifies a client for a limit (`limit_by`), combined in order.
#[derive(Debug, Clone)]
pub(crate) struct KeySpec(Vec<Part>);

impl KeySpec {
    pub(crate) fn parse(v: &[String]) -> Result<KeySpec, String> {
        v.iter()
            .map(|k| {
                Ok(match k.as_str() {
                    "consumer" => Part::Consumer,
                    "credential" => Part::Credential,
                    "ip" => Part::Ip,
                    "route" => Part::Route,
                    "service" => Part::Service,
                    other => match other.strip_prefix("header:") {
                        Some(h) => Part::Header(crate::util::header_name(h)?),
                        None => return Err(format!("limit_by: unknown {other:?}")),
                    },
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map(KeySpec)
    }

    /// The key of this request, prefixed by `scope` (the plugin instance). `consumer` and
    /// `credential` fall back to the client IP for requests without one.
    pub(crate) fn key(&self, scope: &str, req: &RequestHead, cx: &Ctx) -> String {
        let mut k = String::with_capacity(64);
        k.push_str(scope);
        for p in &self.0 {
            k.push('|');
            match p {
                Part::Consumer => match &cx.consumer {
                    Some(c) => {
                        let _ = write!(k, "c:{}", c.username);
                    }
                    None => {
                        let _ = write!(k, "ip:{}", cx.client_ip);
                    }
                },
                Part::Credential => match &cx.credential_id {
                    Some(c) => {
                        let _ = write!(k, "k:{c}");
                    }
                    None => {
                        let _ = write!(k, "ip:{}", cx.client_ip);
                    }
                },
                Part::Ip => {
                    let _ = write!(k, "ip:{}", cx.client_ip);
                }
                Part::Route => {
                    k.push_str("r:");
                    k.push_str(cx.route.as_ref().map_or("", |r| &r.name));
                }
                Part::Service => {
                    k.push_str("s:");
                    k.push_str(cx.route.as_ref().map_or("", |r| &r.service));
                }
                Part::Header(h) => {
                    k.push_str("h:");
                    for v in req.headers.get_all(h) {
                        k.push_str(&String::from_utf8_lossy(v.as_bytes()));
                        k.push(',');
                    }
                }
            }
        }
        k
    }
}

/// Process-wide state shared by plugin instances of the same identity, so that counters
/// survive configuration reloads (the new instance is built while the old one still holds
/// the state; state nobody holds any more is forgotten).
pub(crate) struct Shared<T>(OnceLock<Mutex<HashMap<String, Weak<T>>>>);

impl<T> Shared<T> {
    pub(crate) const fn new() -> Self {
        Shared(OnceLock::new())
    }

    /// The state of `id`, made by `make` if no live instance holds one.
    pub(crate) fn get(&self, id: String, make: impl FnOnce() -> T) -> Arc<T> {
        let Ok(mut m) = self.0.get_or_init(|| Mutex::new(HashMap::new())).lock() else {
            return Arc::new(make());
        };
        m.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = m.get(&id).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(make());
        m.insert(id, Arc::downgrade(&s));
        s
    }
}

/// The local rate-limit store of `identity` (shared across reloads).
pub(crate) fn local_store(identity: &str, max_keys: u64, idle: Duration) -> Arc<LocalStore> {
    static STORES: Shared<LocalStore> = Shared::new();
    STORES.get(format!("{identity}|{max_keys}|{}", idle.as_millis()), || LocalStore::new(max_keys, idle))
}

/// The process-wide Redis store for the gateway's `redis` settings (the rate limiters', the
/// quotas' and the usage store's).
pub fn redis_store(cfg: &Config) -> Result<Arc<RedisStore>, String> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<RedisStore>>>> = OnceLock::new();
    let r = cfg.gateway.redis.as_ref().ok_or("policy `redis` needs `gateway.redis` to be configured")?;
    let urls: Vec<String> = r.urls.iter().map(|u| u.expose().to_string()).collect();
    let ca_pem = match &r.ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("gateway.redis.ca_file {}: {e}", p.display()))?),
        None => None,
    };
    let id = format!("{}|{}|{}|{:?}", urls.join(","), r.cluster, r.timeout.as_millis(), r.ca_file);
    let m = STORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut m = m.lock().map_err(|_| "redis registry poisoned".to_string())?;
    if let Some(s) = m.get(&id) {
        return Ok(s.clone());
    }
    let s = Arc::new(
        RedisStore::new(&RedisConfig {
            urls,
            cluster: r.cluster,
            timeout: r.timeout,
            backoff: Duration::from_millis(500),
            ca_pem,
        })
        .map_err(|e| e.to_string())?,
    );
    m.insert(id, s.clone());
    Ok(s)
}

/// Logs a store failure at most once per second per plugin instance.
#[derive(Default)]
pub(crate) struct FailureLog {
    last_ms: AtomicU64,
}

impl FailureLog {
    pub(crate) fn report(&self, plugin: &str, open: bool, err: &gw_ratelimit::StoreError, now_ms: u64) {
        let last = self.last_ms.load(Ordering::Relaxed);
        if now_ms >= last + 1000
            && self.last_ms.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            if open {
                tracing::warn!(plugin, error = %err, "counter store unavailable; letting traffic through (fail open)");
            } else {
                tracing::warn!(plugin, error = %err, "counter store unavailable; refusing traffic (fail closed)");
            }
        }
    }
}
