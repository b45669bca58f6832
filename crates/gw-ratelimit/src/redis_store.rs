//! Redis store: every gateway node checks and counts through one Lua script, so a limit is
//! enforced across the cluster exactly as on one node, in one round trip per request.
//!
//! Keys are `gh:rl:{<digest>}:<window>` (the hash tag keeps every limit of one identity in
//! one Redis Cluster slot, so the script runs on one node). Values never contain the clear key
//! (an IP, a consumer name): only its 128-bit digest.
//!
//! Failure handling: every command has a short timeout; after a failure the store reports
//! [`StoreError::Unavailable`] at once for a back-off period (no request waits on a Redis that
//! is known to be down), then tries again; the connection manager reconnects by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::Script;

use crate::{Algorithm, Decision, Limit, LimitStatus};

/// A Redis store error. The caller decides: fail open or closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached, timed out, or failed recently (back-off).
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// The configuration is not usable (bad URL).
    #[error("redis configuration: {0}")]
    Config(String),
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// One URL (`redis://`, `rediss://` for TLS, with `user:password@` if needed), or the seed
    /// nodes of a Redis Cluster.
    pub urls: Vec<String>,
    /// Whether `urls` are cluster seeds.
    pub cluster: bool,
    /// Timeout of one command (and of connecting).
    pub timeout: Duration,
    /// How long to skip Redis after a failure.
    pub backoff: Duration,
    /// CA certificates (PEM) for `rediss://`, instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Clone)]
enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(Box<redis::cluster_async::ClusterConnection>),
}

/// One connection type for every command, whatever the deployment.
impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(m) => m.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(m) => m.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(m) => m.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

// One per Redis configuration in the process: the size does not matter.
#[allow(clippy::large_enum_variant)]
enum Target {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// A shared Redis connection with its scripts.
pub struct RedisStore {
    target: Target,
    conn: ArcSwapOption<Conn>,
    connecting: tokio::sync::Mutex<()>,
    timeout: Duration,
    backoff: Duration,
    epoch: Instant,
    /// Nanoseconds since `epoch` until which Redis is not tried.
    down_until: AtomicU64,
    check_script: Script,
    quota_script: Script,
}

const CHECK_LUA: &str = r#"
-- KEYS[i]: base key of limit i. ARGV: now_ms, algorithm (g|s|f), then window_ms, max per limit.
local now = tonumber(ARGV[1])
local alg = ARGV[2]
local n = #KEYS
-- The same arithmetic as window_admits / window_wait_ms in lib.rs.
local function admits(max, cc, pc, w, e)
  local weighted = 0
  if alg == 's' and pc > 0 then weighted = pc * (w - e) / w end
  return weighted + cc + 1 <= max
end
local function first_admitted(max, cc, pc, w, guess, lo, hi)
  if not admits(max, cc, pc, w, hi) then return nil end
  local g = math.min(math.max(guess, lo), hi)
  if admits(max, cc, pc, w, g) then hi = g else lo = g + 1 end
  while lo < hi do
    local mid = lo + math.floor((hi - lo) / 2)
    if admits(max, cc, pc, w, mid) then hi = mid else lo = mid + 1 end
  end
  return hi
end
local function wait_ms(max, cc, pc, w, elapsed)
  if max == 0 then return w - elapsed end
  if admits(max, cc, pc, w, elapsed) then return 0 end
  if alg == 's' and cc + 1 <= max and pc > 0 then
    local guess = math.ceil(w - (max - cc - 1) * w / pc)
    local e = first_admitted(max, cc, pc, w, guess, elapsed, w - 1)
    if e then return e - elapsed end
  end
  local to_next = w - elapsed
  if alg == 'f' or admits(max, 0, cc, w, 0) then return to_next end
  local guess = math.ceil(w - (max - 1) * w / math.max(cc, 1))
  local e = first_admitted(max, 0, cc, w, guess, 0, w - 1)
  if e then return to_next + e end
  return to_next + w
end
local out = {1, 0}
local plan = {}
for i = 1, n do
  local w = tonumber(ARGV[1 + 2 * i])
  local max = tonumber(ARGV[2 + 2 * i])
  local remaining, reset
  if alg == 'g' then
    local now_us = now * 1000
    local t = math.max(1, math.floor(w * 1000 / math.max(max, 1)))
    local tau = w * 1000 - t
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    local base = math.max(tat, now_us)
    if max == 0 or base - now_us > tau then
      out[1] = 0
      out[2] = math.max(out[2], math.ceil((base - now_us - tau) / 1000))
      remaining = 0
      reset = math.ceil((base - now_us) / 1000)
    else
      local new = base + t
      plan[i] = {'g', KEYS[i], new, math.ceil((new - now_us) / 1000) + 1}
      remaining = math.floor((tau + t - (new - now_us)) / t)
      reset = math.ceil((new - now_us) / 1000)
    end
  else
    local idx = math.floor(now / w)
    local elapsed = now - idx * w
    local ck = KEYS[i] .. ':' .. string.format('%d', idx)
    local cc = tonumber(redis.call('GET', ck) or '0')
    local weighted = 0
    local pc = 0
    if alg == 's' then
      pc = tonumber(redis.call('GET', KEYS[i] .. ':' .. string.format('%d', idx - 1)) or '0')
      weighted = pc * (w - elapsed) / w
    end
    reset = w - elapsed
    if weighted + cc + 1 > max then
      local retry = math.max(1, wait_ms(max, cc, pc, w, elapsed))
      out[1] = 0
      out[2] = math.max(out[2], retry)
      remaining = 0
    else
      local ttl = w
      if alg == 's' then ttl = 2 * w end
      plan[i] = {'w', ck, ttl}
      remaining = math.floor(max - weighted - cc - 1)
    end
  end
  out[1 + 2 * i] = remaining
  out[2 + 2 * i] = reset
end
if out[1] == 1 then
  out[2] = 0
  for i = 1, n do
    local p = plan[i]
    if p[1] == 'g' then
      redis.call('SET', p[2], string.format('%d', p[3]), 'PX', string.format('%d', p[4]))
    else
      redis.call('INCR', p[2])
      redis.call('PEXPIRE', p[2], p[3])
    end
  end
end
return out
"#;

const QUOTA_LUA: &str = r#"
-- KEYS[1]: period key. ARGV: max, ttl_ms.
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if c >= tonumber(ARGV[1]) then return {0, c} end
c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, c}
"#;

impl RedisStore {
    /// A store for `cfg`. Connects lazily (the first check), so a gateway starts even when Redis
    /// is down.
    pub fn new(cfg: &RedisConfig) -> Result<RedisStore, StoreError> {
        let target = if cfg.cluster {
            let mut b = redis::cluster::ClusterClientBuilder::new(cfg.urls.clone())
                .connection_timeout(cfg.timeout)
                .response_timeout(cfg.timeout)
                .retries(1);
            if let Some(ca) = &cfg.ca_pem {
                b = b.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) });
            }
            let c = b.build().map_err(|e| StoreError::Config(e.to_string()))?;
            Target::Cluster(c)
        } else {
            let url = cfg.urls.first().ok_or_else(|| StoreError::Config("no URL".into()))?;
            let client = match &cfg.ca_pem {
                Some(ca) => redis::Client::build_with_tls(
                    url.as_str(),
                    redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) },
                ),
                None => redis::Client::open(url.as_str()),
            };
            Target::Single(client.map_err(|e| StoreError::Config(e.to_string()))?)
        };
        Ok(RedisStore {
            target,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            timeout: cfg.timeout,
            backoff: cfg.backoff,
            epoch: Instant::now(),
            down_until: AtomicU64::new(0),
            check_script: Script::new(CHECK_LUA),
            quota_script: Script::new(QUOTA_LUA),
        })
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn mark_down(&self) {
        self.down_until.store(self.now_ns() + self.backoff.as_nanos() as u64, Ordering::Release);
    }

    /// Whether Redis is being skipped after a recent failure.
    pub fn in_backoff(&self) -> bool {
        self.now_ns() < self.down_until.load(Ordering::Acquire)
    }

    async fn connection(&self) -> Result<Arc<Conn>, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok(c);
        }
        let _g = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok(c);
        }
        let conn = match &self.target {
            Target::Single(client) => {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let m = tokio::time::timeout(
                    self.timeout * 2,
                    redis::aio::ConnectionManager::new_with_config(client.clone(), cfg),
                )
                .await
                .map_err(|_| StoreError::Unavailable("connect timed out".into()))?
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Conn::Single(m)
            }
            Target::Cluster(client) => {
                let c = tokio::time::timeout(self.timeout * 2, client.get_async_connection())
                    .await
                    .map_err(|_| StoreError::Unavailable("connect timed out".into()))?
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Conn::Cluster(Box::new(c))
            }
        };
        let conn = Arc::new(conn);
        self.conn.store(Some(conn.clone()));
        Ok(conn)
    }

    /// Run `op` on the connection with the timeout; a failure starts the back-off, and during
    /// the back-off nothing is sent.
    async fn guarded<T>(&self, op: impl AsyncFnOnce(&mut Conn) -> redis::RedisResult<T>) -> Result<T, StoreError> {
        if self.in_backoff() {
            return Err(StoreError::Unavailable("recent failure; backing off".into()));
        }
        let res = async {
            let mut conn = (*self.connection().await?).clone();
            match tokio::time::timeout(self.timeout, op(&mut conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(StoreError::Unavailable(e.to_string())),
                Err(_) => Err(StoreError::Unavailable(format!("no answer within {:?}", self.timeout))),
            }
        }
        .await;
        if res.is_err() {
            self.mark_down();
        }
        res
    }

    /// Add locally counted requests to window counters and read the totals back (batched mode):
    /// for each `(counter key, delta, ttl_ms, previous window key)`, the counter's new total and
    /// the previous window's total. One pipeline, one round trip.
    pub(crate) async fn add_and_read(
        &self,
        items: &[(String, u64, u64, String)],
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = redis::pipe();
        for (key, delta, ttl, prev) in items {
            p.cmd("INCRBY").arg(key).arg(*delta);
            p.cmd("PEXPIRE").arg(key).arg(*ttl).ignore();
            p.cmd("GET").arg(prev);
        }
        let v: Vec<Option<u64>> = self.guarded(async |c| p.query_async(c).await).await?;
        if v.len() != 2 * items.len() {
            return Err(StoreError::Unavailable(format!("unexpected pipeline answer of {} values", v.len())));
        }
        Ok(v.chunks(2).map(|c| (c[0].unwrap_or(0), c[1].unwrap_or(0))).collect())
    }

    /// Check and count one request for `key` against every limit, atomically across nodes.
    pub async fn check(
        &self,
        alg: Algorithm,
        key: u128,
        limits: &[Limit],
        now_ms: u64,
    ) -> Result<Decision, StoreError> {
        let mut inv = self.check_script.prepare_invoke();
        for l in limits {
            inv.key(format!("gh:rl:{{{key:032x}}}:{}:{}", alg.code(), l.window_ms));
        }
        inv.arg(now_ms).arg(alg.code());
        for l in limits {
            inv.arg(l.window_ms.max(1)).arg(l.max);
        }
        let v: Vec<i64> = self.guarded(async |c| inv.invoke_async(c).await).await?;
        if v.len() != 2 + 2 * limits.len() {
            return Err(StoreError::Unavailable(format!("unexpected script answer of {} values", v.len())));
        }
        let limits = (0..limits.len())
            .map(|i| LimitStatus { remaining: v[2 + 2 * i].max(0) as u64, reset_ms: v[3 + 2 * i].max(0) as u64 })
            .collect();
        Ok(Decision { allowed: v[0] == 1, limits, retry_after_ms: v[1].max(0) as u64 })
    }

    /// Count one request against a quota period (identified by `key` and `start_ms`), allowing
    /// `max`; the counter expires `ttl_ms` after its first request. `Ok(Ok(count))` when
    /// counted, `Ok(Err(count))` when the quota is used up.
    pub async fn count_period(
        &self,
        key: u128,
        start_ms: u64,
        max: u64,
        ttl_ms: u64,
    ) -> Result<Result<u64, u64>, StoreError> {
        let mut inv = self.quota_script.prepare_invoke();
        inv.key(format!("gh:q:{{{key:032x}}}:{start_ms}")).arg(max).arg(ttl_ms.max(1));
        let v: (i64, i64) = self.guarded(async |c| inv.invoke_async(c).await).await?;
        let count = v.1.max(0) as u64;
        Ok(if v.0 == 1 { Ok(count) } else { Err(count) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> RedisStore {
        RedisStore::new(&RedisConfig {
            urls: vec![url.into()],
            cluster: false,
            timeout: Duration::from_millis(200),
            backoff: Duration::from_millis(300),
            ca_pem: None,
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn unique() -> u128 {
        crate::digest(&format!("test-{:?}-{}", Instant::now(), std::process::id()))
    }

    /// Against the real Redis on 127.0.0.1:6379: each algorithm admits exactly N of a burst
    /// (concurrent), several limits are all-or-nothing, and quotas count exactly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exact_on_real_redis() {
        let s = Arc::new(store("redis://127.0.0.1:6379/"));
        let now = 1_700_000_000_000u64 + (std::process::id() as u64 % 1000) * 60_000;
        for alg in [Algorithm::Gcra, Algorithm::SlidingWindow, Algorithm::FixedWindow] {
            let key = unique();
            let limits = vec![Limit { name: "minute", window_ms: 60_000, max: 50 }];
            let tasks: Vec<_> = (0..120)
                .map(|_| {
                    let (s, limits) = (s.clone(), limits.clone());
                    tokio::spawn(async move { s.check(alg, key, &limits, now).await })
                })
                .collect();
            let mut admitted = 0;
            for t in tasks {
                let d = t.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
                if d.allowed {
                    admitted += 1;
                } else {
                    assert!(d.retry_after_ms > 0, "{alg:?} {d:?}");
                }
            }
            assert_eq!(admitted, 50, "{alg:?}");
        }
        // All or nothing.
        let key = unique();
        let limits = [Limit { name: "s", window_ms: 1000, max: 100 }, Limit { name: "m", window_ms: 60_000, max: 2 }];
        for _ in 0..2 {
            assert!(s.check(Algorithm::FixedWindow, key, &limits, now).await.unwrap_or_else(|e| panic!("{e}")).allowed);
        }
        let d = s.check(Algorithm::FixedWindow, key, &limits, now).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.allowed);
        assert_eq!(d.limits[0].remaining, 97, "{d:?}");
        // Quota.
        let key = unique();
        assert_eq!(s.count_period(key, 5, 2, 10_000).await.ok(), Some(Ok(1)));
        assert_eq!(s.count_period(key, 5, 2, 10_000).await.ok(), Some(Ok(2)));
        assert_eq!(s.count_period(key, 5, 2, 10_000).await.ok(), Some(Err(2)));
    }

    /// Nothing listening: errors come back fast, then the back-off answers at once.
    #[tokio::test]
    async fn down_is_fast() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let s = store(&format!("redis://127.0.0.1:{port}/"));
        let t = Instant::now();
        let limits = [Limit { name: "s", window_ms: 1000, max: 1 }];
        assert!(s.check(Algorithm::Gcra, 1, &limits, 0).await.is_err());
        assert!(t.elapsed() < Duration::from_secs(2));
        let t = Instant::now();
        assert!(s.check(Algorithm::Gcra, 1, &limits, 0).await.is_err());
        assert!(t.elapsed() < Duration::from_millis(50), "back-off answers at once: {:?}", t.elapsed());
        assert!(s.in_backoff());
    }
}
