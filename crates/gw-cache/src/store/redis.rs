//! The Redis tier: stored responses shared by every gateway node, a tag index for surrogate
//! keys, a URL index per host for purges by URL and prefix, and a pub/sub channel that carries
//! purges to every node's memory tier.
//!
//! Layout (`P` = the configured prefix):
//! - `P:e:<key hex>`: a hash, one field per variant (`<secondary id hex>` -> encoded response);
//!   its TTL is the longest storage time of its variants;
//! - `P:h:<host>`: a sorted set of `<url> <key hex>`, scored by storage expiry (expired
//!   members are pruned on every write);
//! - `P:t:<tag>`: a sorted set of `<key hex>`, scored the same way;
//! - `P:purgeseq`: the number of the last purge; `P:purges`: the last purges, scored by their
//!   number: the write script refuses a response whose fill started (read the number) before a
//!   purge that covers it;
//! - channel `P:purge`: purge messages.
//!
//! Failure handling: every command has a timeout; after a failure Redis is skipped for a
//! back-off period (a lookup is then a memory-only lookup, a write is dropped), so Redis down
//! means "bypass the shared tier", never an error for the request. Only a standalone Redis
//! (`redis://`, `rediss://`) is supported for this tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::Script;
use redis::aio::ConnectionManager;

use super::Stored;
use crate::policy::Rules;

/// Redis could not be used (down, timed out, in back-off, or answered nonsense).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct Unavailable(pub String);

/// Redis tier settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTierOptions {
    /// `redis://[user:password@]host:port/db` or `rediss://` (TLS).
    pub url: String,
    /// Key prefix (default `gh:cache`); give each cache its own.
    pub prefix: String,
    /// Timeout of one command and of connecting.
    pub timeout: Duration,
    /// How long Redis is skipped after a failure.
    pub backoff: Duration,
    /// Largest response body written to Redis (larger ones stay in memory only).
    pub max_object_size: u64,
    /// CA certificates (PEM) for `rediss://`, instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// How long the purge log is kept after the last purge (ms).
const PURGE_LOG_KEEP_MS: u64 = 10 * 60 * 1000;
/// How many purges the log keeps; a fill older than the oldest is not written.
const PURGE_LOG_MAX: u64 = 10_000;

const WRITE_LUA: &str = r#"
-- KEYS[1] entry hash, KEYS[2] host index, KEYS[3] purge log, KEYS[4] purge number,
-- KEYS[5..] tag indexes.
-- ARGV: field, blob, ttl_ms, now_ms, expires_ms, url member, key hex, the purge number when
-- the fill started, url, max log length, tags...
-- A purge numbered after the fill started that covers this response refuses the write.
local since = tonumber(ARGV[8])
local url = ARGV[9]
-- The log expired (no purge for a while) but a purge came after the fill started: what it
-- covered is no longer known, so the write is refused.
if redis.call('EXISTS', KEYS[3]) == 0 and since < tonumber(redis.call('GET', KEYS[4]) or '0') then
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if oldest[2] and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[10]) and tonumber(oldest[2]) > since + 1 then
  return 0
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. since, '+inf')) do
  local p = string.match(m, '^%S+ (.*)$') or ''
  local kind, arg = string.match(p, '^(%S+) ?(.*)$')
  if kind == 'all' then return 0 end
  if kind == 'url' and arg == url then return 0 end
  if kind == 'prefix' and string.sub(url, 1, #arg) == arg then return 0 end
  if kind == 'key' and arg == ARGV[7] then return 0 end
  if kind == 'tag' then
    for i = 11, #ARGV do if ARGV[i] == arg then return 0 end end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = tonumber(ARGV[3])
local function extend(k)
  local c = redis.call('PTTL', k)
  if c < ttl then redis.call('PEXPIRE', k, ttl) end
end
extend(KEYS[1])
local function idx(k, member)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', ARGV[4])
  local old = redis.call('ZSCORE', k, member)
  if (not old) or tonumber(old) < tonumber(ARGV[5]) then redis.call('ZADD', k, ARGV[5], member) end
  extend(k)
end
idx(KEYS[2], ARGV[6])
for i = 5, #KEYS do idx(KEYS[i], ARGV[7]) end
return 1
"#;

const LOG_PURGE_LUA: &str = r#"
-- KEYS[1] purge log, KEYS[2] purge number; ARGV: purge message, keep ms, max log length.
local n = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], n, n .. ' ' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -1 - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return n
"#;

/// The shared tier.
pub struct RedisTier {
    client: redis::Client,
    opts: RedisTierOptions,
    conn: ArcSwapOption<ConnectionManager>,
    connecting: tokio::sync::Mutex<()>,
    epoch: Instant,
    down_until: AtomicU64,
    write: Script,
    log_purge: Script,
}

/// Escape glob characters for `MATCH`.
fn glob_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// The host part of a normalised URL (`scheme://host/...`).
pub(crate) fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?']).next().unwrap_or(rest))
}

impl RedisTier {
    /// A tier for `opts`; connects lazily, so a gateway starts while Redis is down.
    pub fn new(opts: RedisTierOptions) -> Result<RedisTier, Unavailable> {
        let client = match &opts.ca_pem {
            Some(ca) => redis::Client::build_with_tls(
                opts.url.as_str(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) },
            ),
            None => redis::Client::open(opts.url.as_str()),
        }
        .map_err(|e| Unavailable(format!("invalid redis URL: {e}")))?;
        Ok(RedisTier {
            client,
            opts,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            epoch: Instant::now(),
            down_until: AtomicU64::new(0),
            write: Script::new(WRITE_LUA),
            log_purge: Script::new(LOG_PURGE_LUA),
        })
    }

    /// The settings.
    pub fn options(&self) -> &RedisTierOptions {
        &self.opts
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether Redis is being skipped after a recent failure.
    pub fn in_backoff(&self) -> bool {
        self.now_ns() < self.down_until.load(Ordering::Acquire)
    }

    fn mark_down(&self) {
        self.down_until.store(self.now_ns() + self.opts.backoff.as_nanos() as u64, Ordering::Release);
    }

    async fn connection(&self) -> Result<ConnectionManager, Unavailable> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let _g = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.opts.timeout))
            .set_response_timeout(Some(self.opts.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let m =
            tokio::time::timeout(self.opts.timeout * 2, ConnectionManager::new_with_config(self.client.clone(), cfg))
                .await
                .map_err(|_| Unavailable("connect timed out".into()))?
                .map_err(|e| Unavailable(e.to_string()))?;
        self.conn.store(Some(Arc::new(m.clone())));
        Ok(m)
    }

    /// Run `op` with the timeout; a failure starts the back-off, during which nothing is sent.
    async fn guarded<T>(
        &self,
        op: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, Unavailable> {
        if self.in_backoff() {
            return Err(Unavailable("recent failure; backing off".into()));
        }
        let res = async {
            let mut conn = self.connection().await?;
            match tokio::time::timeout(self.opts.timeout, op(&mut conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(Unavailable(e.to_string())),
                Err(_) => Err(Unavailable(format!("no answer within {:?}", self.opts.timeout))),
            }
        }
        .await;
        if res.is_err() {
            self.mark_down();
        }
        res
    }

    fn entry_key(&self, key_hex: &str) -> String {
        format!("{}:e:{key_hex}", self.opts.prefix)
    }

    fn host_key(&self, host: &str) -> String {
        format!("{}:h:{host}", self.opts.prefix)
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}:t:{tag}", self.opts.prefix)
    }

    fn purge_log_key(&self) -> String {
        format!("{}:purges", self.opts.prefix)
    }

    fn purge_seq_key(&self) -> String {
        format!("{}:purgeseq", self.opts.prefix)
    }

    /// Record a purge ([`crate::Purge::encode`]'s form) in the purge log, before it removes
    /// anything: from then on, writes of fills that started before it (that read a lower
    /// number) and that it covers are refused. Returns its number.
    pub async fn log_purge(&self, msg: &str) -> Result<u64, Unavailable> {
        let mut inv = self.log_purge.prepare_invoke();
        inv.key(self.purge_log_key()).key(self.purge_seq_key()).arg(msg).arg(PURGE_LOG_KEEP_MS).arg(PURGE_LOG_MAX);
        self.guarded(async |c| inv.invoke_async(c).await).await
    }

    /// The number of the last purge (what a fill that did not read Redis starts from).
    pub async fn purge_seq(&self) -> Result<u64, Unavailable> {
        let k = self.purge_seq_key();
        let n: Option<u64> = self.guarded(async |c| redis::cmd("GET").arg(&k).query_async(c).await).await?;
        Ok(n.unwrap_or(0))
    }

    /// The pub/sub channel of purges.
    pub fn channel(&self) -> String {
        format!("{}:purge", self.opts.prefix)
    }

    /// The variants stored under a key that are still within their storage time, and the
    /// number of the last purge (read after them, in the same round trip).
    pub async fn get(&self, rules: &Rules, key: u128, now_ms: u64) -> Result<(Vec<Stored>, u64), Unavailable> {
        let k = self.entry_key(&format!("{key:032x}"));
        let seq = self.purge_seq_key();
        let (fields, n): (Vec<(String, Vec<u8>)>, Option<u64>) = self
            .guarded(async |c| redis::pipe().cmd("HGETALL").arg(&k).cmd("GET").arg(&seq).query_async(c).await)
            .await?;
        let list = fields
            .iter()
            .filter_map(|(_, blob)| Stored::decode(rules, blob))
            .filter(|s| s.expires_ms > now_ms)
            .collect();
        Ok((list, n.unwrap_or(0)))
    }

    /// Write a variant (skipped when its body is above the tier's size cap). `since`: the
    /// purge number when its fill started ([`RedisTier::get`], [`RedisTier::purge_seq`]): a
    /// later purge that covers it refuses the write (`Ok(false)`).
    pub async fn put(&self, key: u128, s: &Stored, now_ms: u64, since: u64) -> Result<bool, Unavailable> {
        if s.body_len() > self.opts.max_object_size || s.expires_ms <= now_ms {
            return Ok(false);
        }
        let hex = format!("{key:032x}");
        let host = url_host(&s.url).unwrap_or("");
        let mut inv = self.write.prepare_invoke();
        inv.key(self.entry_key(&hex)).key(self.host_key(host)).key(self.purge_log_key()).key(self.purge_seq_key());
        for t in &s.tags {
            inv.key(self.tag_key(t));
        }
        inv.arg(format!("{:016x}", s.secondary.id()))
            .arg(s.encode())
            .arg(s.expires_ms - now_ms)
            .arg(now_ms)
            .arg(s.expires_ms)
            .arg(format!("{} {hex}", s.url))
            .arg(&hex)
            .arg(since)
            .arg(&s.url)
            .arg(PURGE_LOG_MAX);
        for t in &s.tags {
            inv.arg(t);
        }
        let written: i64 = self.guarded(async |c| inv.invoke_async(c).await).await?;
        Ok(written == 1)
    }

    /// Delete one key's entry.
    pub async fn remove_key(&self, key: u128) -> Result<u64, Unavailable> {
        let k = self.entry_key(&format!("{key:032x}"));
        self.guarded(async |c| redis::cmd("UNLINK").arg(&k).query_async(c).await).await
    }

    /// Delete every entry whose URL equals `url` (`exact`) or starts with it.
    pub async fn remove_url(&self, url: &str, exact: bool) -> Result<u64, Unavailable> {
        let Some(host) = url_host(url) else { return Ok(0) };
        let idx = self.host_key(host);
        let pattern = if exact { format!("{} *", glob_escape(url)) } else { format!("{}*", glob_escape(url)) };
        let mut cursor: u64 = 0;
        let mut removed = 0;
        // Bounded: at most 10,000 pages of 500 members.
        for _ in 0..10_000 {
            let (next, members): (u64, Vec<String>) = self
                .guarded(async |c| {
                    redis::cmd("ZSCAN")
                        .arg(&idx)
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(c)
                        .await
                })
                .await?;
            // ZSCAN returns member, score pairs.
            let members: Vec<&String> = members.iter().step_by(2).collect();
            if !members.is_empty() {
                let mut p = redis::pipe();
                for m in &members {
                    if let Some((_, hex)) = m.rsplit_once(' ') {
                        p.cmd("UNLINK").arg(self.entry_key(hex));
                    }
                    p.cmd("ZREM").arg(&idx).arg(m.as_str()).ignore();
                }
                let n: Vec<u64> = self.guarded(async |c| p.query_async(c).await).await?;
                removed += n.iter().sum::<u64>();
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(removed)
    }

    /// Delete every entry tagged `tag`.
    pub async fn remove_tag(&self, tag: &str) -> Result<u64, Unavailable> {
        let k = self.tag_key(tag);
        let hexes: Vec<String> =
            self.guarded(async |c| redis::cmd("ZRANGE").arg(&k).arg(0).arg(-1).query_async(c).await).await?;
        let mut removed = 0;
        for chunk in hexes.chunks(500) {
            let mut p = redis::pipe();
            for h in chunk {
                p.cmd("UNLINK").arg(self.entry_key(h));
            }
            let n: Vec<u64> = self.guarded(async |c| p.query_async(c).await).await?;
            removed += n.iter().sum::<u64>();
        }
        let _: u64 = self.guarded(async |c| redis::cmd("UNLINK").arg(&k).query_async(c).await).await?;
        Ok(removed)
    }

    /// Delete every key of this tier's prefix.
    pub async fn remove_all(&self) -> Result<u64, Unavailable> {
        let pattern = format!("{}:*", glob_escape(&self.opts.prefix));
        let mut cursor: u64 = 0;
        let mut removed = 0;
        for _ in 0..100_000 {
            let (next, keys): (u64, Vec<String>) = self
                .guarded(async |c| {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(c)
                        .await
                })
                .await?;
            // The purge log and number stay: they protect this purge from the writes in flight.
            let (log, seq) = (self.purge_log_key(), self.purge_seq_key());
            let keys: Vec<String> = keys.into_iter().filter(|k| *k != log && *k != seq).collect();
            if !keys.is_empty() {
                let n: u64 = self.guarded(async |c| redis::cmd("UNLINK").arg(&keys).query_async(c).await).await?;
                removed += n;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(removed)
    }

    /// Publish a purge message to every node.
    pub async fn publish(&self, msg: &str) -> Result<u64, Unavailable> {
        let ch = self.channel();
        self.guarded(async |c| redis::cmd("PUBLISH").arg(&ch).arg(msg).query_async(c).await).await
    }

    /// Listen for purge messages until the task is aborted: `on_msg(Some(text))` for each
    /// message; `on_msg(None)` after a reconnection (messages may have been missed while
    /// disconnected, so the caller drops what it holds).
    pub fn subscribe(
        self: &Arc<Self>,
        on_msg: impl Fn(Option<String>) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let ps = tokio::time::timeout(me.opts.timeout * 2, me.client.get_async_pubsub()).await;
                if let Ok(Ok(mut ps)) = ps
                    && let Ok(Ok(())) = tokio::time::timeout(me.opts.timeout * 2, ps.subscribe(me.channel())).await
                {
                    if !first {
                        on_msg(None);
                    }
                    first = false;
                    let mut stream = ps.on_message();
                    while let Some(m) = stream.next().await {
                        if let Ok(text) = m.get_payload::<String>() {
                            on_msg(Some(text));
                        }
                    }
                    tracing::warn!("proxy-cache: purge subscription to redis lost; reconnecting");
                }
                tokio::time::sleep(me.opts.backoff.max(Duration::from_millis(50))).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::sample;

    #[test]
    fn helpers() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(url_host("https://h.example:8443/x?y"), Some("h.example:8443"));
        assert_eq!(url_host("http://h"), Some("h"));
        assert_eq!(url_host("nope"), None);
        let _ = sample;
    }
}
