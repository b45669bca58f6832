//! Durable usage stores: where the gateway writes usage rows (per minute and per hour) and local
//! quota counters in batches, off the request path.
//!
//! - [`EmbeddedUsage`]: `usage.redb` beside the configuration store (`--store embedded:DIR`), or
//!   under `gateway.usage.path` in file mode. One node: each batch is one redb transaction,
//!   durable (fsync) when it returns.
//! - [`PgUsage`]: the PostgreSQL of `--store postgres://...`, for a cluster. Each batch is one
//!   transaction whose upserts *add* the node's deltas to the stored rows
//!   (`requests = requests + EXCLUDED.requests`), so every node's traffic sums into one figure.
//!   Quota counters are stored per node (`node_id`): a `policy: local` quota counts per node.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gw_observability::{Outcome, QuotaCount, Span, UsageBackend, UsageFilter, UsageRow};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::store::{Conn, StoreError, chain, describe, migrate};

/// (span, bucket ms, consumer, route, outcome)
type UsageKey<'a> = (&'a str, u64, &'a str, &'a str, &'a str);
/// (requests, bytes in, bytes out)
type Counts = (u64, u64, u64);
const USAGE: TableDefinition<'_, UsageKey<'static>, Counts> = TableDefinition::new("usage");
/// (counter name, period start ms) -> count
const QUOTAS: TableDefinition<'_, (&str, u64), u64> = TableDefinition::new("quota_counters");

fn io(e: impl std::fmt::Display) -> String {
    format!("usage store: {e}")
}

/// Usage in one redb file.
pub struct EmbeddedUsage {
    db: Arc<redb::Database>,
}

impl EmbeddedUsage {
    /// Open (or create) `<dir>/usage.redb`.
    pub fn open(dir: &Path) -> Result<EmbeddedUsage, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
        let path = dir.join("usage.redb");
        let db = redb::Database::create(&path).map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(|e| StoreError::Io(e.to_string()))?;
        tx.open_table(USAGE).map_err(|e| StoreError::Io(e.to_string()))?;
        tx.open_table(QUOTAS).map_err(|e| StoreError::Io(e.to_string()))?;
        tx.commit().map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(EmbeddedUsage { db: Arc::new(db) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(io)?
    }
}

#[async_trait]
impl UsageBackend for EmbeddedUsage {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn write(&self, rows: &[UsageRow], quotas: &[QuotaCount]) -> Result<(), String> {
        let (rows, quotas) = (rows.to_vec(), quotas.to_vec());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut t = tx.open_table(USAGE).map_err(io)?;
                for r in &rows {
                    let k = (r.span.code(), r.bucket_ms, r.consumer.as_str(), r.route.as_str(), r.outcome.name());
                    let old = t.get(k).map_err(io)?.map(|v| v.value()).unwrap_or_default();
                    let new = (old.0 + r.requests, old.1 + r.bytes_in, old.2 + r.bytes_out);
                    t.insert(k, new).map_err(io)?;
                }
                let mut q = tx.open_table(QUOTAS).map_err(io)?;
                for c in &quotas {
                    let k = (c.name.as_str(), c.period_start_ms);
                    let old = q.get(k).map_err(io)?.map(|v| v.value()).unwrap_or(0);
                    q.insert(k, old.max(c.count)).map_err(io)?;
                }
            }
            tx.commit().map_err(io)
        })
        .await
    }

    async fn read(&self, span: Span, from_ms: u64, to_ms: u64, filter: &UsageFilter) -> Result<Vec<UsageRow>, String> {
        let filter = filter.clone();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(USAGE).map_err(io)?;
            let mut out = Vec::new();
            if from_ms >= to_ms {
                return Ok(out);
            }
            let code = span.code();
            for item in t.range((code, from_ms, "", "", "")..(code, to_ms, "", "", "")).map_err(io)? {
                let (k, v) = item.map_err(io)?;
                let (_, bucket_ms, consumer, route, outcome) = k.value();
                let Some(outcome) = Outcome::parse(outcome) else { continue };
                let (requests, bytes_in, bytes_out) = v.value();
                let row = UsageRow {
                    span,
                    bucket_ms,
                    consumer: consumer.to_string(),
                    route: route.to_string(),
                    outcome,
                    requests,
                    bytes_in,
                    bytes_out,
                };
                if filter.matches(&row) {
                    out.push(row);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn quotas(&self, since_ms: u64) -> Result<Vec<QuotaCount>, String> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(QUOTAS).map_err(io)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(io)? {
                let (k, v) = item.map_err(io)?;
                let (name, start) = k.value();
                if start >= since_ms {
                    out.push(QuotaCount { name: name.to_string(), period_start_ms: start, count: v.value() });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn prune(&self, span: Span, before_ms: u64, quotas_before_ms: u64) -> Result<(), String> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut t = tx.open_table(USAGE).map_err(io)?;
                let code = span.code();
                t.retain_in((code, 0, "", "", "")..(code, before_ms, "", "", ""), |_, _| false).map_err(io)?;
                let mut q = tx.open_table(QUOTAS).map_err(io)?;
                q.retain(|(_, start), _| start >= quotas_before_ms).map_err(io)?;
            }
            tx.commit().map_err(io)
        })
        .await
    }
}

/// How long one round trip to PostgreSQL may take.
const PG_TIMEOUT: Duration = Duration::from_secs(5);

/// Usage in PostgreSQL, shared by every node of a cluster.
pub struct PgUsage {
    cfg: tokio_postgres::Config,
    target: String,
    node_id: String,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl PgUsage {
    /// Connect (a connection of its own) and apply the schema migrations. `node_id` keys this
    /// node's quota counters.
    pub async fn connect(url: &str, node_id: &str) -> Result<Arc<PgUsage>, StoreError> {
        let cfg: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Invalid(format!("store URL: {}", chain(&e))))?;
        let s = PgUsage { target: describe(&cfg), cfg, node_id: node_id.to_string(), conn: Default::default() };
        {
            let mut g = s.conn.lock().await;
            let c = s.open().await.map_err(StoreError::Io)?;
            tokio::time::timeout(PG_TIMEOUT * 2, migrate(&c.client))
                .await
                .map_err(|_| StoreError::Io(format!("PostgreSQL at {}: migrations timed out", s.target)))?
                .map_err(|e| StoreError::Io(s.err(&e)))?;
            *g = Some(c);
        }
        Ok(Arc::new(s))
    }

    fn err(&self, e: &tokio_postgres::Error) -> String {
        format!("usage store: PostgreSQL at {}: {}", self.target, chain(e))
    }

    async fn open(&self) -> Result<Conn, String> {
        let (client, conn) = tokio::time::timeout(PG_TIMEOUT, self.cfg.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| format!("usage store: PostgreSQL at {}: connect timed out", self.target))?
            .map_err(|e| self.err(&e))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { client, driver })
    }

    /// The connection (opened again when it was closed) under `guard`.
    async fn client<'a>(&self, guard: &'a mut Option<Conn>) -> Result<&'a mut tokio_postgres::Client, String> {
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = Some(self.open().await?);
        }
        guard.as_mut().map(|c| &mut c.client).ok_or_else(|| "usage store: no connection".to_string())
    }

    /// Run `f` on the connection within [`PG_TIMEOUT`]; on a timeout or error the connection is
    /// dropped (the server rolls back an open transaction).
    async fn run<T>(
        &self,
        f: impl for<'c> FnOnce(
            &'c mut tokio_postgres::Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>,
        >,
    ) -> Result<T, String> {
        let mut guard = self.conn.lock().await;
        let r = tokio::time::timeout(PG_TIMEOUT, async {
            let c = self.client(&mut guard).await?;
            f(c).await.map_err(|e| self.err(&e))
        })
        .await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                *guard = None;
                Err(e)
            }
            Err(_) => {
                *guard = None;
                Err(format!("usage store: PostgreSQL at {}: no answer within {PG_TIMEOUT:?}", self.target))
            }
        }
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl UsageBackend for PgUsage {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn write(&self, rows: &[UsageRow], quotas: &[QuotaCount]) -> Result<(), String> {
        let spans: Vec<&'static str> = rows.iter().map(|r| r.span.code()).collect();
        let buckets: Vec<i64> = rows.iter().map(|r| i64_of(r.bucket_ms)).collect();
        let consumers: Vec<String> = rows.iter().map(|r| r.consumer.clone()).collect();
        let routes: Vec<String> = rows.iter().map(|r| r.route.clone()).collect();
        let outcomes: Vec<&'static str> = rows.iter().map(|r| r.outcome.name()).collect();
        let requests: Vec<i64> = rows.iter().map(|r| i64_of(r.requests)).collect();
        let bytes_in: Vec<i64> = rows.iter().map(|r| i64_of(r.bytes_in)).collect();
        let bytes_out: Vec<i64> = rows.iter().map(|r| i64_of(r.bytes_out)).collect();
        let names: Vec<String> = quotas.iter().map(|q| q.name.clone()).collect();
        let starts: Vec<i64> = quotas.iter().map(|q| i64_of(q.period_start_ms)).collect();
        let counts: Vec<i64> = quotas.iter().map(|q| i64_of(q.count)).collect();
        let node = self.node_id.clone();
        self.run(|c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                if !spans.is_empty() {
                    // Deltas are added: every node's counts sum into one row.
                    tx.execute(
                        "INSERT INTO gatehouse_usage (span, bucket, consumer, route, outcome, requests, bytes_in, bytes_out) \
                         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[]) \
                         ON CONFLICT (span, bucket, consumer, route, outcome) DO UPDATE SET \
                         requests = gatehouse_usage.requests + EXCLUDED.requests, \
                         bytes_in = gatehouse_usage.bytes_in + EXCLUDED.bytes_in, \
                         bytes_out = gatehouse_usage.bytes_out + EXCLUDED.bytes_out",
                        &[&spans, &buckets, &consumers, &routes, &outcomes, &requests, &bytes_in, &bytes_out],
                    )
                    .await?;
                }
                if !names.is_empty() {
                    tx.execute(
                        "INSERT INTO gatehouse_quota_counters (node_id, name, period_start, count) \
                         SELECT $1, * FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) \
                         ON CONFLICT (node_id, name, period_start) DO UPDATE SET \
                         count = GREATEST(gatehouse_quota_counters.count, EXCLUDED.count)",
                        &[&node, &names, &starts, &counts],
                    )
                    .await?;
                }
                tx.commit().await
            })
        })
        .await
    }

    async fn read(&self, span: Span, from_ms: u64, to_ms: u64, filter: &UsageFilter) -> Result<Vec<UsageRow>, String> {
        let (from, to) = (i64_of(from_ms), i64_of(to_ms));
        let code = span.code();
        let consumer = filter.consumer.clone();
        let route = filter.route.clone();
        let outcome = filter.outcome.map(Outcome::name);
        let rows = self
            .run(|c| {
                Box::pin(async move {
                    c.query(
                        "SELECT bucket, consumer, route, outcome, requests, bytes_in, bytes_out FROM gatehouse_usage \
                         WHERE span = $1 AND bucket >= $2 AND bucket < $3 \
                         AND ($4::text IS NULL OR consumer = $4) AND ($5::text IS NULL OR route = $5) \
                         AND ($6::text IS NULL OR outcome = $6)",
                        &[&code, &from, &to, &consumer, &route, &outcome],
                    )
                    .await
                })
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(UsageRow {
                    span,
                    bucket_ms: r.get::<_, i64>(0).max(0) as u64,
                    consumer: r.get(1),
                    route: r.get(2),
                    outcome: Outcome::parse(r.get(3))?,
                    requests: r.get::<_, i64>(4).max(0) as u64,
                    bytes_in: r.get::<_, i64>(5).max(0) as u64,
                    bytes_out: r.get::<_, i64>(6).max(0) as u64,
                })
            })
            .collect())
    }

    async fn quotas(&self, since_ms: u64) -> Result<Vec<QuotaCount>, String> {
        let since = i64_of(since_ms);
        let node = self.node_id.clone();
        let rows = self
            .run(|c| {
                Box::pin(async move {
                    c.query(
                        "SELECT name, period_start, count FROM gatehouse_quota_counters WHERE node_id = $1 AND period_start >= $2",
                        &[&node, &since],
                    )
                    .await
                })
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| QuotaCount {
                name: r.get(0),
                period_start_ms: r.get::<_, i64>(1).max(0) as u64,
                count: r.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }

    async fn prune(&self, span: Span, before_ms: u64, quotas_before_ms: u64) -> Result<(), String> {
        let (before, qbefore, code) = (i64_of(before_ms), i64_of(quotas_before_ms), span.code());
        self.run(|c| {
            Box::pin(async move {
                c.execute("DELETE FROM gatehouse_usage WHERE span = $1 AND bucket < $2", &[&code, &before]).await?;
                c.execute("DELETE FROM gatehouse_quota_counters WHERE period_start < $1", &[&qbefore]).await?;
                Ok(())
            })
        })
        .await
    }
}

/// The Redis usage store of `config` (`gateway.usage.store: redis`, on the Redis of
/// `gateway.redis`, which the rate limiters share), or `None` when it names none.
pub fn redis_usage(config: &gw_config::model::Config, node_id: &str) -> Result<Option<Arc<dyn UsageBackend>>, String> {
    let u = &config.gateway.usage;
    if u.store != gw_config::model::UsageStore::Redis {
        return Ok(None);
    }
    let store = gw_plugins::redis_store(config).map_err(|e| format!("gateway.usage.store: {e}"))?;
    Ok(Some(Arc::new(RedisUsage::new(store, &u.key_prefix, node_id))))
}

/// Usage in the gateway's Redis (`gateway.usage.store: redis`), shared by every node.
///
/// Keys (all under the hash tag `{<prefix>}`, so one Redis Cluster slot and one `MULTI`):
/// - `{P}:u:<span>:<bucket ms>`: a hash per bucket; fields `r`, `i`, `o` (requests, bytes in,
///   bytes out) followed by the JSON array `[consumer, route, outcome]`, added to with
///   `HINCRBY` (every node's deltas sum into one figure);
/// - `{P}:b:<span>`: a sorted set of the buckets written (score: the bucket), for reads and
///   retention;
/// - `{P}:q:<node id>`: this node's quota counters, fields `<period start ms>|<name>`, a stored
///   count only ever raised.
///
/// A batch is one `MULTI`/`EXEC` transaction: applied whole or not at all.
pub struct RedisUsage {
    store: Arc<gw_ratelimit::RedisStore>,
    /// The hash tag (the configured prefix).
    tag: String,
    node_id: String,
}

/// Raise stored quota counters: `KEYS[1]` the node's hash, `ARGV` field and count pairs.
const RAISE_LUA: &str = r#"
for i = 1, #ARGV, 2 do
  local old = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > old then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"#;

/// Delete quota counters of periods before `ARGV[1]`: `KEYS[1]` the node's hash.
const PRUNE_QUOTAS_LUA: &str = r#"
local all = redis.call('HKEYS', KEYS[1])
for _, f in ipairs(all) do
  local start = tonumber(string.match(f, '^(%d+)|'))
  if start == nil or start < tonumber(ARGV[1]) then redis.call('HDEL', KEYS[1], f) end
end
return 1
"#;

impl RedisUsage {
    /// Usage under `prefix` in the Redis of `store`; `node_id` keys this node's quota counters.
    /// Connects on the first use (a gateway starts while Redis is down; writes are kept until
    /// it answers).
    pub fn new(store: Arc<gw_ratelimit::RedisStore>, prefix: &str, node_id: &str) -> RedisUsage {
        RedisUsage { store, tag: prefix.to_string(), node_id: node_id.to_string() }
    }

    fn bucket_key(&self, span: Span, bucket_ms: u64) -> String {
        format!("{{{}}}:u:{}:{bucket_ms}", self.tag, span.code())
    }

    fn index_key(&self, span: Span) -> String {
        format!("{{{}}}:b:{}", self.tag, span.code())
    }

    fn quota_key(&self) -> String {
        format!("{{{}}}:q:{}", self.tag, self.node_id)
    }

    async fn query<T: gw_ratelimit::redis::FromRedisValue>(
        &self,
        p: &gw_ratelimit::redis::Pipeline,
    ) -> Result<T, String> {
        self.store.query_pipeline(&self.tag, p).await.map_err(|e| format!("usage store: {e}"))
    }

    /// The buckets of `span` with `from_ms <= bucket < to_ms` that were written.
    async fn buckets(&self, span: Span, from_ms: u64, to_ms: u64) -> Result<Vec<u64>, String> {
        if from_ms >= to_ms {
            return Ok(Vec::new());
        }
        let mut p = gw_ratelimit::redis::pipe();
        p.cmd("ZRANGEBYSCORE").arg(self.index_key(span)).arg(from_ms).arg(format!("({to_ms}"));
        let (members,): (Vec<u64>,) = self.query(&p).await?;
        Ok(members)
    }
}

/// The hash field of a row's counter `kind` (`r`, `i` or `o`).
fn usage_field(kind: char, consumer: &str, route: &str, outcome: Outcome) -> String {
    let mut f = String::with_capacity(consumer.len() + route.len() + 24);
    f.push(kind);
    f.push_str(&serde_json::Value::from(vec![consumer, route, outcome.name()]).to_string());
    f
}

#[async_trait]
impl UsageBackend for RedisUsage {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn write(&self, rows: &[UsageRow], quotas: &[QuotaCount]) -> Result<(), String> {
        let mut p = gw_ratelimit::redis::pipe();
        p.atomic();
        let mut indexed = std::collections::BTreeSet::new();
        for r in rows {
            let key = self.bucket_key(r.span, r.bucket_ms);
            for (kind, n) in [('r', r.requests), ('i', r.bytes_in), ('o', r.bytes_out)] {
                if n > 0 || kind == 'r' {
                    p.cmd("HINCRBY").arg(&key).arg(usage_field(kind, &r.consumer, &r.route, r.outcome)).arg(n).ignore();
                }
            }
            if indexed.insert((r.span.code(), r.bucket_ms)) {
                p.cmd("ZADD").arg(self.index_key(r.span)).arg(r.bucket_ms).arg(r.bucket_ms).ignore();
            }
        }
        if !quotas.is_empty() {
            // EVAL (not EVALSHA): inside MULTI a missing script cannot be loaded on the way.
            p.cmd("EVAL").arg(RAISE_LUA).arg(1).arg(self.quota_key());
            for q in quotas {
                p.arg(format!("{}|{}", q.period_start_ms, q.name)).arg(q.count);
            }
            p.ignore();
        }
        if rows.is_empty() && quotas.is_empty() {
            return Ok(());
        }
        let () = self.query(&p).await?;
        Ok(())
    }

    async fn read(&self, span: Span, from_ms: u64, to_ms: u64, filter: &UsageFilter) -> Result<Vec<UsageRow>, String> {
        let buckets = self.buckets(span, from_ms, to_ms).await?;
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = gw_ratelimit::redis::pipe();
        for b in &buckets {
            p.cmd("HGETALL").arg(self.bucket_key(span, *b));
        }
        let hashes: Vec<std::collections::HashMap<String, u64>> = self.query(&p).await?;
        let mut out = Vec::new();
        for (bucket_ms, fields) in buckets.into_iter().zip(hashes) {
            let mut rows: BTreeMap<(String, String, Outcome), UsageRow> = BTreeMap::new();
            for (field, n) in fields {
                let Some((kind, rest)) = field.split_at_checked(1) else { continue };
                let Ok(serde_json::Value::Array(parts)) = serde_json::from_str::<serde_json::Value>(rest) else {
                    continue;
                };
                let [Some(consumer), Some(route), Some(outcome)] =
                    [0, 1, 2].map(|i| parts.get(i).and_then(|v| v.as_str()))
                else {
                    continue;
                };
                let Some(outcome) = Outcome::parse(outcome) else { continue };
                let row = rows.entry((consumer.to_string(), route.to_string(), outcome)).or_insert_with(|| UsageRow {
                    span,
                    bucket_ms,
                    consumer: consumer.to_string(),
                    route: route.to_string(),
                    outcome,
                    requests: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                });
                match kind {
                    "r" => row.requests += n,
                    "i" => row.bytes_in += n,
                    "o" => row.bytes_out += n,
                    _ => {}
                }
            }
            out.extend(rows.into_values().filter(|r| filter.matches(r)));
        }
        Ok(out)
    }

    async fn quotas(&self, since_ms: u64) -> Result<Vec<QuotaCount>, String> {
        let mut p = gw_ratelimit::redis::pipe();
        p.cmd("HGETALL").arg(self.quota_key());
        let (fields,): (std::collections::HashMap<String, u64>,) = self.query(&p).await?;
        Ok(fields
            .into_iter()
            .filter_map(|(field, count)| {
                let (start, name) = field.split_once('|')?;
                let start: u64 = start.parse().ok()?;
                (start >= since_ms).then(|| QuotaCount { name: name.to_string(), period_start_ms: start, count })
            })
            .collect())
    }

    async fn prune(&self, span: Span, before_ms: u64, quotas_before_ms: u64) -> Result<(), String> {
        let old = self.buckets(span, 0, before_ms).await?;
        let mut p = gw_ratelimit::redis::pipe();
        p.atomic();
        for b in &old {
            p.cmd("DEL").arg(self.bucket_key(span, *b)).ignore();
        }
        p.cmd("ZREMRANGEBYSCORE").arg(self.index_key(span)).arg("-inf").arg(format!("({before_ms}")).ignore();
        p.cmd("EVAL").arg(PRUNE_QUOTAS_LUA).arg(1).arg(self.quota_key()).arg(quotas_before_ms).ignore();
        let () = self.query(&p).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_adds_deltas_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("gh-usage-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let row = |span, bucket_ms, outcome, requests| UsageRow {
            span,
            bucket_ms,
            consumer: "alice".into(),
            route: "orders".into(),
            outcome,
            requests,
            bytes_in: requests * 10,
            bytes_out: requests * 100,
        };
        {
            let s = EmbeddedUsage::open(&dir).unwrap();
            let q = QuotaCount { name: "q:x|c:alice".into(), period_start_ms: 5_000, count: 3 };
            s.write(&[row(Span::Minute, 60_000, Outcome::Served, 2), row(Span::Hour, 0, Outcome::Served, 2)], &[q])
                .await
                .unwrap();
            s.write(
                &[row(Span::Minute, 60_000, Outcome::Served, 1), row(Span::Minute, 120_000, Outcome::Refused, 1)],
                &[],
            )
            .await
            .unwrap();
        }
        let s = EmbeddedUsage::open(&dir).unwrap();
        let all = s.read(Span::Minute, 0, u64::MAX, &UsageFilter::default()).await.unwrap();
        assert_eq!(
            all,
            vec![row(Span::Minute, 60_000, Outcome::Served, 3), row(Span::Minute, 120_000, Outcome::Refused, 1)]
        );
        let f = UsageFilter { outcome: Some(Outcome::Refused), ..Default::default() };
        assert_eq!(s.read(Span::Minute, 0, u64::MAX, &f).await.unwrap().len(), 1);
        assert_eq!(
            s.read(Span::Minute, 0, 120_000, &UsageFilter::default()).await.unwrap().len(),
            1,
            "to is exclusive"
        );
        assert_eq!(s.read(Span::Hour, 0, u64::MAX, &UsageFilter::default()).await.unwrap().len(), 1);
        assert_eq!(s.quotas(0).await.unwrap()[0].count, 3);
        assert!(s.quotas(6_000).await.unwrap().is_empty());
        s.prune(Span::Minute, 100_000, 6_000).await.unwrap();
        assert_eq!(s.read(Span::Minute, 0, u64::MAX, &UsageFilter::default()).await.unwrap().len(), 1);
        assert_eq!(s.read(Span::Hour, 0, u64::MAX, &UsageFilter::default()).await.unwrap().len(), 1, "hours kept");
        assert!(s.quotas(0).await.unwrap().is_empty());
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
