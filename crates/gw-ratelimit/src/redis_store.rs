//! Redis store: every gateway node checks and counts through one Lua script, so a limit is
//! enforced across the cluster exactly as on one node, in one round trip per request.
//!
//! Keys are `gh:rl:{<digest>}:<window>` (the hash tag keeps every limit of one identity in
//! one Redis Cluster slot, so the script runs on one node). Values never contain the clear key
//! (an IP, a consumer name): only its 128-bit digest.
//!
//! Failure handling: every command has a short timeout; after an outage (no connection, a
//! timeout, a node down or loading) the store reports [`StoreError::Unavailable`] at once for a
//! back-off period (no request waits on a Redis that is known to be down), then tries again;
//! the connection manager reconnects by itself. The back-off is per failure domain: the server
//! for a single Redis, each master for a Redis Cluster (the store keeps the cluster's slot map,
//! refreshed after a failure and every 30 s), so a dead master only affects the keys it holds.
//! An error that says nothing about availability (a command refused, e.g. a script error) fails
//! that command only.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{RetryMethod, Script};

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

/// Number of Redis Cluster hash slots.
const SLOTS: usize = 16384;
/// How often the slot map of a cluster is read again without a failure.
const TOPOLOGY_EVERY: Duration = Duration::from_secs(30);

/// The hash slot of the keys of digest `key` (their hash tag is its 32 hex digits).
pub(crate) fn slot_of(key: u128) -> u16 {
    let mut hex = [0u8; 32];
    for (i, b) in hex.iter_mut().enumerate() {
        let nibble = ((key >> (4 * (31 - i))) & 0xf) as u8;
        *b = if nibble < 10 { b'0' + nibble } else { b'a' + nibble - 10 };
    }
    key_slot(&hex)
}

/// The hash slot of a key or hash tag (CRC16-XMODEM modulo 16384, as Redis Cluster does).
fn key_slot(tag: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag) % SLOTS as u16
}

/// One master of a cluster: its address and its back-off.
struct Node {
    addr: String,
    /// Nanoseconds since the store's epoch until which this node is not tried.
    down_until: AtomicU64,
}

/// Which master serves which slot, as last read with `CLUSTER SLOTS`.
struct Topology {
    /// Index into `nodes` per slot; `u16::MAX` for a slot no master serves.
    slot_node: Box<[u16]>,
    nodes: Vec<Node>,
}

impl Topology {
    /// Build from `(first slot, last slot, master address)` ranges, keeping the back-off of
    /// nodes that `old` knew.
    fn new(ranges: &[(u16, u16, String)], old: Option<&Topology>) -> Topology {
        let mut slot_node = vec![u16::MAX; SLOTS].into_boxed_slice();
        let mut nodes: Vec<Node> = Vec::new();
        for (first, last, addr) in ranges {
            let idx = match nodes.iter().position(|n| &n.addr == addr) {
                Some(i) => i,
                None => {
                    let down = old
                        .and_then(|o| o.nodes.iter().find(|n| &n.addr == addr))
                        .map_or(0, |n| n.down_until.load(Ordering::Acquire));
                    nodes.push(Node { addr: addr.clone(), down_until: AtomicU64::new(down) });
                    nodes.len() - 1
                }
            };
            for s in usize::from(*first)..=usize::from(*last).min(SLOTS - 1) {
                slot_node[s] = idx as u16;
            }
        }
        Topology { slot_node, nodes }
    }

    fn node(&self, slot: u16) -> Option<&Node> {
        self.nodes.get(usize::from(*self.slot_node.get(usize::from(slot))?))
    }
}

/// Parse a `CLUSTER SLOTS` answer: `[[first, last, [ip, port, ...], replicas...], ...]`.
fn parse_slots(v: &redis::Value) -> Option<Vec<(u16, u16, String)>> {
    let redis::Value::Array(ranges) = v else { return None };
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let redis::Value::Array(r) = r else { return None };
        let (Some(redis::Value::Int(first)), Some(redis::Value::Int(last)), Some(redis::Value::Array(master))) =
            (r.first(), r.get(1), r.get(2))
        else {
            return None;
        };
        let host = match master.first()? {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let redis::Value::Int(port) = master.get(1)? else { return None };
        out.push((u16::try_from(*first).ok()?, u16::try_from(*last).ok()?, format!("{host}:{port}")));
    }
    Some(out)
}

/// Whether an error means the server (or cluster node) is unavailable, as opposed to one
/// command being refused (a script error, a cross-slot request): only the former starts a
/// back-off.
fn is_outage(e: &redis::RedisError) -> bool {
    !matches!(e.retry_method(), RetryMethod::NoRetry)
}

/// A shared Redis connection with its scripts.
pub struct RedisStore {
    target: Target,
    conn: ArcSwapOption<Conn>,
    connecting: tokio::sync::Mutex<()>,
    timeout: Duration,
    backoff: Duration,
    epoch: Instant,
    /// Nanoseconds since `epoch` until which Redis is not tried: the one server, or a cluster
    /// whose slot map is not known (yet).
    down_until: AtomicU64,
    /// The slot map of a cluster, with a back-off per master.
    topology: Arc<ArcSwapOption<Topology>>,
    /// Nanoseconds since `epoch` when the slot map was last read.
    topology_read_at: AtomicU64,
    check_script: Script,
    quota_script: Script,
}

/// Where a command goes, for the back-off: a cluster slot, or the one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Dest {
    /// A single Redis (or any node of a cluster, for commands without keys).
    Any,
    /// The master serving this slot.
    Slot(u16),
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
            topology: Arc::new(ArcSwapOption::empty()),
            topology_read_at: AtomicU64::new(0),
            check_script: Script::new(CHECK_LUA),
            quota_script: Script::new(QUOTA_LUA),
        })
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Where the keys of digest `key` live.
    pub(crate) fn dest(&self, key: u128) -> Dest {
        match self.target {
            Target::Single(_) => Dest::Any,
            Target::Cluster(_) => Dest::Slot(slot_of(key)),
        }
    }

    /// The back-off deadline that applies to `dest`: its master's when the slot map knows it,
    /// otherwise the store's.
    fn with_down_until<T>(&self, dest: Dest, f: impl FnOnce(&AtomicU64) -> T) -> T {
        if let Dest::Slot(slot) = dest {
            let topo = self.topology.load();
            if let Some(node) = topo.as_ref().and_then(|t| t.node(slot)) {
                return f(&node.down_until);
            }
        }
        f(&self.down_until)
    }

    fn mark_down(&self, dest: Dest) {
        let until = self.now_ns() + self.backoff.as_nanos() as u64;
        self.with_down_until(dest, |d| d.store(until, Ordering::Release));
    }

    /// Whether Redis is being skipped after a recent failure (the server, or a cluster whose
    /// slot map is unknown).
    pub fn in_backoff(&self) -> bool {
        self.now_ns() < self.down_until.load(Ordering::Acquire)
    }

    /// Whether the keys of digest `key` are being skipped after a recent failure of the server
    /// or cluster master that holds them.
    pub fn key_in_backoff(&self, key: u128) -> bool {
        self.dest_in_backoff(self.dest(key))
    }

    fn dest_in_backoff(&self, dest: Dest) -> bool {
        let now = self.now_ns();
        self.with_down_until(dest, |d| now < d.load(Ordering::Acquire))
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
                // Read the slot map before the first command, so that a failure of one master
                // never backs off the others.
                let mut conn = c.clone();
                match read_topology(&mut conn, self.timeout).await {
                    Ok(ranges) => self.topology.store(Some(Arc::new(Topology::new(&ranges, None)))),
                    Err(e) => tracing::warn!(error = %e, "redis cluster: cannot read the slot map yet"),
                }
                self.topology_read_at.store(self.now_ns(), Ordering::Release);
                Conn::Cluster(Box::new(c))
            }
        };
        let conn = Arc::new(conn);
        self.conn.store(Some(conn.clone()));
        Ok(conn)
    }

    /// Read the cluster's slot map again in the background: every 30 s, or after an outage
    /// when the last reading is older than the back-off period.
    fn refresh_topology(&self, conn: &Conn, failed: bool) {
        let Conn::Cluster(c) = conn else { return };
        let now = self.now_ns();
        let last = self.topology_read_at.load(Ordering::Acquire);
        let every = if failed { self.backoff } else { TOPOLOGY_EVERY };
        if now.saturating_sub(last) < every.as_nanos() as u64
            || self.topology_read_at.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            return;
        }
        let (mut c, cell, timeout) = ((**c).clone(), self.topology.clone(), self.timeout);
        tokio::spawn(async move {
            match read_topology(&mut c, timeout).await {
                Ok(ranges) => {
                    let old = cell.load_full();
                    cell.store(Some(Arc::new(Topology::new(&ranges, old.as_deref()))));
                }
                Err(e) => tracing::debug!(error = %e, "redis cluster: slot map refresh failed"),
            }
        });
    }

    /// Run `op` on the connection with the timeout; an outage starts the back-off of `dest`,
    /// and during the back-off nothing is sent there.
    async fn guarded<T>(
        &self,
        dest: Dest,
        op: impl AsyncFnOnce(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        if self.dest_in_backoff(dest) {
            return Err(StoreError::Unavailable("recent failure; backing off".into()));
        }
        let conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                self.mark_down(Dest::Any);
                return Err(e);
            }
        };
        let mut c = (*conn).clone();
        let (res, outage) = match tokio::time::timeout(self.timeout, op(&mut c)).await {
            Ok(Ok(v)) => (Ok(v), false),
            Ok(Err(e)) => {
                let outage = is_outage(&e);
                (Err(StoreError::Unavailable(e.to_string())), outage)
            }
            Err(_) => (Err(StoreError::Unavailable(format!("no answer within {:?}", self.timeout))), true),
        };
        if outage {
            self.mark_down(dest);
        }
        self.refresh_topology(&conn, outage);
        res
    }

    /// Add locally counted requests to window counters and read the totals back (batched mode):
    /// for each item, the counter's new total and the previous window's total, or the error of
    /// its group. Items are sent in one pipeline per Redis Cluster slot (a pipeline may not span
    /// slots), the pipelines concurrently; a single Redis gets one pipeline.
    pub(crate) async fn add_and_read(&self, items: &[SyncItem]) -> Vec<Result<(u64, u64), Arc<StoreError>>> {
        let mut groups: Vec<(Dest, Vec<usize>)> = Vec::new();
        let mut by_dest: std::collections::HashMap<Dest, usize> = std::collections::HashMap::new();
        for (i, it) in items.iter().enumerate() {
            let d = self.dest(it.digest);
            let g = *by_dest.entry(d).or_insert_with(|| {
                groups.push((d, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let runs = groups.iter().map(|(dest, idx)| async move {
            let mut p = redis::pipe();
            for &i in idx {
                let it = &items[i];
                p.cmd("INCRBY").arg(&it.key).arg(it.delta);
                p.cmd("PEXPIRE").arg(&it.key).arg(it.ttl_ms).ignore();
                p.cmd("GET").arg(&it.prev_key);
            }
            let v: Result<Vec<Option<u64>>, StoreError> = self.guarded(*dest, async |c| p.query_async(c).await).await;
            match v {
                Ok(v) if v.len() == 2 * idx.len() => {
                    Ok(v.chunks(2).map(|c| (c[0].unwrap_or(0), c[1].unwrap_or(0))).collect::<Vec<_>>())
                }
                Ok(v) => Err(StoreError::Unavailable(format!("unexpected pipeline answer of {} values", v.len()))),
                Err(e) => Err(e),
            }
        });
        let answers = futures_util::future::join_all(runs).await;
        let mut out: Vec<Result<(u64, u64), Arc<StoreError>>> =
            (0..items.len()).map(|_| Err(Arc::new(StoreError::Unavailable("not sent".into())))).collect();
        for ((_, idx), ans) in groups.iter().zip(answers) {
            match ans {
                Ok(totals) => {
                    for (&i, t) in idx.iter().zip(totals) {
                        out[i] = Ok(t);
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for &i in idx {
                        out[i] = Err(e.clone());
                    }
                }
            }
        }
        out
    }

    /// Send `p` (whose keys all carry the hash tag `tag`, so that they live in one Redis Cluster
    /// slot) with the store's timeout and back-off: for other users of the gateway's Redis
    /// (the usage store).
    pub async fn query_pipeline<T: redis::FromRedisValue>(
        &self,
        tag: &str,
        p: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let dest = match self.target {
            Target::Single(_) => Dest::Any,
            Target::Cluster(_) => Dest::Slot(key_slot(tag.as_bytes())),
        };
        self.guarded(dest, async |c| p.query_async(c).await).await
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
        let v: Vec<i64> = self.guarded(self.dest(key), async |c| inv.invoke_async(c).await).await?;
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
        let v: (i64, i64) = self.guarded(self.dest(key), async |c| inv.invoke_async(c).await).await?;
        let count = v.1.max(0) as u64;
        Ok(if v.0 == 1 { Ok(count) } else { Err(count) })
    }
}

/// One counter of a batched synchronisation.
pub(crate) struct SyncItem {
    /// The digest whose hash tag the keys carry (their slot).
    pub(crate) digest: u128,
    pub(crate) key: String,
    pub(crate) delta: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) prev_key: String,
}

/// `CLUSTER SLOTS` from any node that answers (a few tries: a random node may be the one down).
async fn read_topology(
    c: &mut redis::cluster_async::ClusterConnection,
    timeout: Duration,
) -> Result<Vec<(u16, u16, String)>, String> {
    let mut last = String::new();
    for _ in 0..4 {
        let cmd = redis::cmd("CLUSTER").arg("SLOTS").clone();
        match tokio::time::timeout(
            timeout,
            c.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)),
        )
        .await
        {
            Ok(Ok(v)) => return parse_slots(&v).ok_or_else(|| "unexpected CLUSTER SLOTS answer".to_string()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {timeout:?}"),
        }
    }
    Err(last)
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

    /// The slot of a digest is the slot Redis Cluster gives its hash tag (CRC16-XMODEM mod
    /// 16384; reference values from the Redis Cluster specification and `CLUSTER KEYSLOT`).
    #[test]
    fn slots_match_redis_cluster() {
        assert_eq!(key_slot(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"somekey"), 11058);
        for key in [0u128, 1, u128::MAX, crate::digest("alice"), 0x0123_4567_89ab_cdef_0011_2233_4455_6677] {
            assert_eq!(slot_of(key), key_slot(format!("{key:032x}").as_bytes()), "{key:x}");
        }
    }

    /// `CLUSTER SLOTS` is read into a per-slot node table; a node known before keeps its
    /// back-off; malformed answers are refused.
    #[test]
    fn topology_from_cluster_slots() {
        use redis::Value::{Array, BulkString, Int};
        let node = |p: i64| Array(vec![BulkString(b"127.0.0.1".to_vec()), Int(p), BulkString(b"id".to_vec())]);
        let v = Array(vec![
            Array(vec![Int(0), Int(5460), node(7000), node(7100)]),
            Array(vec![Int(5461), Int(10922), node(7001)]),
            Array(vec![Int(10923), Int(16383), node(7002)]),
        ]);
        let ranges = parse_slots(&v).unwrap_or_default();
        assert_eq!(ranges.len(), 3);
        let t = Topology::new(&ranges, None);
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.node(0).map(|n| n.addr.as_str()), Some("127.0.0.1:7000"));
        assert_eq!(t.node(5461).map(|n| n.addr.as_str()), Some("127.0.0.1:7001"));
        assert_eq!(t.node(16383).map(|n| n.addr.as_str()), Some("127.0.0.1:7002"));
        t.nodes[1].down_until.store(42, Ordering::Release);
        // Slots 5461.. moved to a new node, 7001 kept a range: its back-off is kept.
        let moved = vec![
            (0, 5460, "127.0.0.1:7000".to_string()),
            (5461, 8000, "127.0.0.1:7001".to_string()),
            (8001, 16383, "127.0.0.1:7003".to_string()),
        ];
        let t2 = Topology::new(&moved, Some(&t));
        assert_eq!(t2.node(6000).map(|n| n.down_until.load(Ordering::Acquire)), Some(42));
        assert_eq!(
            t2.node(9000).map(|n| (n.addr.as_str(), n.down_until.load(Ordering::Acquire))),
            Some(("127.0.0.1:7003", 0))
        );
        assert!(parse_slots(&Array(vec![Array(vec![Int(0)])])).is_none());
        assert!(parse_slots(&Int(1)).is_none());
    }

    /// Outages back off; a refused command (cross-slot, script or type error) does not.
    #[test]
    fn outage_classification() {
        use redis::{ErrorKind, RedisError, ServerErrorKind};
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_outage(&io));
        for k in [
            ServerErrorKind::ClusterDown,
            ServerErrorKind::MasterDown,
            ServerErrorKind::BusyLoading,
            ServerErrorKind::TryAgain,
        ] {
            assert!(is_outage(&RedisError::from((ErrorKind::Server(k), "x"))), "{k:?}");
        }
        for k in [
            ServerErrorKind::CrossSlot,
            ServerErrorKind::ResponseError,
            ServerErrorKind::NoScript,
            ServerErrorKind::NoPerm,
        ] {
            assert!(!is_outage(&RedisError::from((ErrorKind::Server(k), "x"))), "{k:?}");
        }
    }

    /// Against the real Redis: a batched pipeline that Redis refuses (a counter holding text)
    /// fails those counters only, and starts no back-off: the next checks go through.
    #[tokio::test]
    async fn refused_command_does_not_back_off() {
        let s = store("redis://127.0.0.1:6379/");
        let key = unique();
        let bad = format!("gh:rb:{{{key:032x}}}:f:60000:1");
        let set: Result<(), StoreError> = s
            .guarded(Dest::Any, async |c| {
                redis::cmd("SET").arg(&bad).arg("text").arg("PX").arg(60_000).query_async(c).await
            })
            .await;
        assert!(set.is_ok(), "{set:?}");
        let item = |key: String| SyncItem {
            digest: crate::digest(&key),
            key,
            delta: 1,
            ttl_ms: 60_000,
            prev_key: "gh:rb:none".into(),
        };
        let res = s.add_and_read(&[item(bad.clone())]).await;
        assert!(res[0].is_err(), "INCRBY on text is refused");
        assert!(!s.in_backoff(), "a refused command is not an outage");
        let limits = [Limit { name: "m", window_ms: 60_000, max: 5 }];
        assert!(s.check(Algorithm::FixedWindow, unique(), &limits, 1_700_000_000_000).await.is_ok_and(|d| d.allowed));
        let ok = s.add_and_read(&[item(format!("gh:rb:{{{:032x}}}:f:60000:1", unique()))]).await;
        assert_eq!(ok[0].as_ref().ok(), Some(&(1, 0)));
    }
}
