//! Configuration stores. Every write appends a new version of the whole document (JSON), so
//! history and rollback come for free and a reader never sees half a change. Stores keep the
//! last [`KEEP_VERSIONS`] versions. A write is a [`WriteTxn`]: the store's write lock (across
//! every node of a cluster), the latest version read under it, and an append of exactly the
//! next version, so writers are linearisable and none builds on a version it has not seen.
//!
//! - [`EmbeddedStore`]: one redb file under a data directory. redb commits are atomic and
//!   durable (fsync before the commit returns), so a crash loses no acknowledged write and never
//!   leaves a torn store. A version close to the one before it is written as a patch of it
//!   (common prefix and suffix lengths, changed bytes), so a one-route change writes a few
//!   hundred bytes, not the whole document.
//! - [`PgStore`]: PostgreSQL for a cluster of gateway nodes. Schema migrations are applied by the
//!   binary; a write `NOTIFY`s every node, which applies it; a periodic resync is the safety net;
//!   each node records the version it runs in `gatehouse_nodes`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Versions a store keeps: older ones are deleted by the commit that makes them too old, so a
/// store stays bounded (a version is a whole document, about 700 KB with 10,000 routes, unless
/// the embedded store wrote it as a patch).
pub const KEEP_VERSIONS: u64 = 100;

/// How long one round trip to the PostgreSQL store (connecting included) may take before the
/// store is treated as unreachable: a database that stops answering costs a write or a check at
/// most this long, never a hang.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed.
    #[error("config store: {0}")]
    Io(String),
    /// The stored data is not what this version of Gatehouse expects.
    #[error("config store data: {0}")]
    Data(String),
    /// The version a write was based on is no longer the latest (another writer got there
    /// first); nothing was written.
    #[error("config store: {0}")]
    Conflict(String),
    /// The store specification itself is wrong (retrying will not help).
    #[error("config store: {0}")]
    Invalid(String),
}

/// One version of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// Monotonic version number (1, 2, ...).
    pub version: u64,
    /// The document (file format, as JSON).
    pub document: String,
    /// SHA-256 of `document`, hex.
    pub hash: String,
    /// When it was written (ms since the Unix epoch).
    pub created_ms: u64,
    /// Why (`PUT /routes/orders`, `rollback to 3`, `import`).
    pub comment: String,
}

/// A version without its document (history listings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// Version number.
    pub version: u64,
    /// SHA-256 of the document.
    pub hash: String,
    /// When (ms since the Unix epoch).
    pub created_ms: u64,
    /// Why.
    pub comment: String,
}

impl From<&Version> for VersionMeta {
    fn from(v: &Version) -> Self {
        VersionMeta { version: v.version, hash: v.hash.clone(), created_ms: v.created_ms, comment: v.comment.clone() }
    }
}

/// A node of the cluster as the store sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub node_id: String,
    /// Configuration version it runs.
    pub config_version: u64,
    /// Last heartbeat (ms since the Unix epoch).
    pub last_seen_ms: u64,
}

/// A write in progress. From [`ConfigStore::begin`] until [`WriteTxn::commit`],
/// [`WriteTxn::abort`] or drop, it holds the store's write lock: every other writer, in this
/// process or on any other node, waits. So a writer reads the latest version, builds the next
/// one from it and appends it with nothing in between: writes are linearisable and none is
/// lost. The append itself is a compare-and-swap on [`WriteTxn::base`] as well.
#[async_trait]
pub trait WriteTxn: Send {
    /// The latest version when the lock was taken: its number (0 for an empty store) and hash.
    fn base(&self) -> (u64, &str);
    /// The latest version in full (read under the lock); `None` for an empty store.
    async fn latest(&mut self) -> Result<Option<Version>, StoreError>;
    /// Append `document` as version `base + 1` and release the lock. Returns once the version
    /// is durable and visible to every reader. [`StoreError::Conflict`] if `base` is no longer
    /// the latest version (nothing written).
    async fn commit(self: Box<Self>, document: String, hash: String, comment: String) -> Result<Version, StoreError>;
    /// Release the lock without writing.
    async fn abort(self: Box<Self>);
}

/// Where the configuration lives.
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// Store kind, for `/status`.
    fn kind(&self) -> &'static str;
    /// The latest version, if any.
    async fn latest(&self) -> Result<Option<Version>, StoreError>;
    /// The latest version's number and hash, without its document.
    async fn latest_meta(&self) -> Result<Option<VersionMeta>, StoreError> {
        Ok(self.history(1).await?.into_iter().next())
    }
    /// One version.
    async fn get(&self, version: u64) -> Result<Option<Version>, StoreError>;
    /// Take the write lock: see [`WriteTxn`].
    async fn begin(&self) -> Result<Box<dyn WriteTxn>, StoreError>;
    /// Append a new version on top of whatever is latest; returns it.
    async fn commit(&self, document: String, comment: String) -> Result<Version, StoreError> {
        let hash = sha256_hex(&document);
        self.commit_hashed(document, hash, comment).await
    }
    /// [`ConfigStore::commit`] with the document's SHA-256 (hex) already computed.
    async fn commit_hashed(&self, document: String, hash: String, comment: String) -> Result<Version, StoreError> {
        self.begin().await?.commit(document, hash, comment).await
    }
    /// Newest first, at most `limit`.
    async fn history(&self, limit: usize) -> Result<Vec<VersionMeta>, StoreError>;
    /// Record that `node` runs `version` (cluster status). No-op for a single node.
    async fn heartbeat(&self, _node: &str, _version: u64) -> Result<(), StoreError> {
        Ok(())
    }
    /// Nodes seen recently (cluster status).
    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        Ok(Vec::new())
    }
    /// The latest version number as announced by other writers (cluster stores), if the store
    /// can tell; `None` when only this process writes.
    fn announcements(&self) -> Option<watch::Receiver<u64>> {
        None
    }
    /// Send a response-cache purge to every other node sharing the store (cluster stores):
    /// `cache` is the cache's instance name, `msg` the purge. `Ok(false)`: the store has no
    /// notification channel.
    async fn notify_purge(&self, _cache: &str, _msg: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Response-cache purges sent by other nodes ([`PurgeNotice`]); `None` when the store has
    /// no notification channel.
    fn purge_notices(&self) -> Option<tokio::sync::broadcast::Receiver<PurgeNotice>> {
        None
    }
}

/// A response-cache purge from another node, or notice that some may have been missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeNotice {
    /// Purge `msg` (`gw_cache::Purge::encode`'s form) in the cache named `cache`.
    Purge {
        /// The cache's instance name.
        cache: String,
        /// The purge.
        msg: String,
    },
    /// The notification connection was lost and opened again: purges sent meanwhile were
    /// missed, so every cache that relies on the channel is emptied.
    Missed,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// SHA-256 of `s`, lower-case hex (version hashes).
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

// === embedded (redb) ===

const VERSIONS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("config_versions");

/// One redb file: `<data_dir>/gatehouse.redb`.
///
/// A version that differs little from the one before it (one route changed, say) is stored as
/// a patch of it: the lengths of the common prefix and suffix and the bytes in between. Every
/// `MAX_PATCH_DEPTH` versions, or when a change is large, the whole document is stored again.
/// Reading a version follows at most that many patches.
pub struct EmbeddedStore {
    db: Arc<redb::Database>,
    /// The latest version's document and patch depth, to diff the next one against.
    last: Arc<std::sync::Mutex<Option<LastWritten>>>,
    /// The write lock of [`WriteTxn`] (redb locks the file, so only this process writes).
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// A version this process wrote: number, document, patch depth.
type LastWritten = (u64, Arc<str>, u32);

/// A patch record's parts: metadata, patch, changed bytes.
type PatchRecord<'a> = (VersionMeta, Patch, &'a [u8]);

/// Patches in a row before the whole document is stored again.
pub const MAX_PATCH_DEPTH: u32 = 32;

/// How a patch record rebuilds its document from the version before it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Patch {
    base: u64,
    prefix: usize,
    suffix: usize,
    depth: u32,
}

impl EmbeddedStore {
    /// Open (or create) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Io(format!("{}: {e}", data_dir.display())))?;
        let path = data_dir.join("gatehouse.redb");
        let db = redb::Database::create(&path).map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
        // Make sure the table exists so readers never fail on a fresh store.
        let tx = db.begin_write().map_err(io)?;
        tx.open_table(VERSIONS).map_err(io)?;
        tx.commit().map_err(io)?;
        Ok(EmbeddedStore { db: Arc::new(db), last: Arc::default(), writer: Arc::default() })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        blocking(self.db.clone(), f).await
    }
}

async fn blocking<T: Send + 'static>(
    db: Arc<redb::Database>,
    f: impl FnOnce(&redb::Database) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(move || f(&db)).await.map_err(|e| StoreError::Io(e.to_string()))?
}

/// A write to the embedded store: the process-wide write lock, and the version it is based on.
struct EmbeddedTxn {
    db: Arc<redb::Database>,
    last: Arc<std::sync::Mutex<Option<LastWritten>>>,
    base: u64,
    base_hash: String,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

#[async_trait]
impl WriteTxn for EmbeddedTxn {
    fn base(&self) -> (u64, &str) {
        (self.base, &self.base_hash)
    }

    async fn latest(&mut self) -> Result<Option<Version>, StoreError> {
        let base = self.base;
        blocking(self.db.clone(), move |db| {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(VERSIONS).map_err(io)?;
            Ok(read_version(&t, base)?.map(|x| x.0))
        })
        .await
    }

    async fn commit(self: Box<Self>, document: String, hash: String, comment: String) -> Result<Version, StoreError> {
        let (last, base) = (self.last.clone(), self.base);
        blocking(self.db.clone(), move |db| append(db, &last, base, document, hash, comment)).await
    }

    async fn abort(self: Box<Self>) {}
}

/// Append version `base + 1` if `base` is still the latest (0: the store is empty).
fn append(
    db: &redb::Database,
    last: &std::sync::Mutex<Option<LastWritten>>,
    base: u64,
    document: String,
    hash: String,
    comment: String,
) -> Result<Version, StoreError> {
    let tx = db.begin_write().map_err(io)?;
    let (v, depth) = {
        let mut t = tx.open_table(VERSIONS).map_err(io)?;
        let prev = t.last().map_err(io)?.map(|(k, _)| k.value());
        if prev.unwrap_or(0) != base {
            return Err(StoreError::Conflict(format!(
                "version {} was written after version {base}, which this write was based on",
                prev.unwrap_or(0)
            )));
        }
        let next = base + 1;
        let v = Version { version: next, hash, document, created_ms: now_ms(), comment };
        // The document before, from memory when this process wrote it.
        let cached = last.lock().ok().and_then(|l| l.clone()).filter(|(n, _, _)| Some(*n) == prev);
        let before = match (cached, prev) {
            (Some((_, doc, depth)), _) => Some((doc, depth)),
            (None, Some(p)) => read_version(&t, p)?.map(|(x, d)| (Arc::from(x.document), d)),
            (None, None) => None,
        };
        let (bytes, depth) = match before.and_then(|(b, d)| diff(&b, &v.document).map(|x| (x, d))) {
            Some(((prefix, suffix), d)) if d < MAX_PATCH_DEPTH => {
                let p = Patch { base: next - 1, prefix, suffix, depth: d + 1 };
                let middle = &v.document.as_bytes()[prefix..v.document.len() - suffix];
                (encode_patch(&v, &p, middle)?, d + 1)
            }
            _ => (encode(&v)?, 0),
        };
        t.insert(next, bytes.as_slice()).map_err(io)?;
        // Keep the last KEEP_VERSIONS, and whatever the oldest of them is rebuilt from.
        if let Some(cut) = next.checked_sub(KEEP_VERSIONS) {
            let keep_from = root_of(&t, cut + 1)?;
            t.retain_in(..keep_from, |_, _| false).map_err(io)?;
        }
        (v, depth)
    };
    // Durable when this returns (redb's default durability fsyncs the commit).
    tx.commit().map_err(io)?;
    if let Ok(mut l) = last.lock() {
        *l = Some((v.version, Arc::from(v.document.as_str()), depth));
    }
    Ok(v)
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn data(e: impl std::fmt::Display) -> StoreError {
    StoreError::Data(e.to_string())
}

/// A stored version: `GH1\n`, the metadata as one JSON line, then the document as is (not
/// escaped into a JSON string: a 10,000-route document is about a megabyte). Records written
/// before this format (one JSON object) are still read.
const RECORD_MAGIC: &[u8] = b"GH1\n";

fn encode(v: &Version) -> Result<Vec<u8>, StoreError> {
    record(v, None, v.document.as_bytes())
}

/// A patch record: `GH2\n`, the metadata line, the [`Patch`] line, then the changed bytes.
const PATCH_MAGIC: &[u8] = b"GH2\n";

fn encode_patch(v: &Version, p: &Patch, middle: &[u8]) -> Result<Vec<u8>, StoreError> {
    record(v, Some(p), middle)
}

/// Magic, metadata line, patch line (patch records only), then `body` as is.
fn record(v: &Version, patch: Option<&Patch>, body: &[u8]) -> Result<Vec<u8>, StoreError> {
    let meta = serde_json::to_vec(&VersionMeta::from(v)).map_err(data)?;
    let patch = patch.map(serde_json::to_vec).transpose().map_err(data)?;
    let magic = if patch.is_some() { PATCH_MAGIC } else { RECORD_MAGIC };
    let mut out =
        Vec::with_capacity(magic.len() + meta.len() + patch.as_ref().map_or(0, |p| p.len() + 1) + 1 + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&meta);
    out.push(b'\n');
    if let Some(p) = &patch {
        out.extend_from_slice(p);
        out.push(b'\n');
    }
    out.extend_from_slice(body);
    Ok(out)
}

/// The first line of `bytes` and the rest.
fn line(bytes: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| StoreError::Data("truncated record".into()))?;
    Ok((&bytes[..nl], &bytes[nl + 1..]))
}

/// The metadata and the document part of a whole-document record.
fn split(bytes: &[u8]) -> Result<Option<(VersionMeta, &[u8])>, StoreError> {
    let Some(rest) = bytes.strip_prefix(RECORD_MAGIC) else { return Ok(None) };
    let (meta, doc) = line(rest)?;
    let meta: VersionMeta = serde_json::from_slice(meta).map_err(data)?;
    Ok(Some((meta, doc)))
}

/// The metadata, the patch and the changed bytes of a patch record.
fn split_patch(bytes: &[u8]) -> Result<Option<PatchRecord<'_>>, StoreError> {
    let Some(rest) = bytes.strip_prefix(PATCH_MAGIC) else { return Ok(None) };
    let (meta, rest) = line(rest)?;
    let (patch, middle) = line(rest)?;
    Ok(Some((serde_json::from_slice(meta).map_err(data)?, serde_json::from_slice(patch).map_err(data)?, middle)))
}

/// Version `v` with its document rebuilt through patches, and its patch depth.
fn read_version(t: &impl ReadableTable<u64, &'static [u8]>, v: u64) -> Result<Option<(Version, u32)>, StoreError> {
    let Some(rec) = t.get(v).map_err(io)? else { return Ok(None) };
    let bytes = rec.value();
    let Some((m, p, middle)) = split_patch(bytes)? else { return decode(bytes).map(|v| Some((v, 0))) };
    if p.base >= v || p.depth > MAX_PATCH_DEPTH {
        return Err(StoreError::Data(format!("version {v}: bad patch base {}", p.base)));
    }
    let (base, _) =
        read_version(t, p.base)?.ok_or_else(|| StoreError::Data(format!("version {v}: base {} missing", p.base)))?;
    let b = base.document.as_bytes();
    if p.prefix + p.suffix > b.len() {
        return Err(StoreError::Data(format!("version {v}: patch longer than its base")));
    }
    let mut doc = Vec::with_capacity(p.prefix + middle.len() + p.suffix);
    doc.extend_from_slice(&b[..p.prefix]);
    doc.extend_from_slice(middle);
    doc.extend_from_slice(&b[b.len() - p.suffix..]);
    let document = String::from_utf8(doc).map_err(data)?;
    Ok(Some((
        Version { version: m.version, document, hash: m.hash, created_ms: m.created_ms, comment: m.comment },
        p.depth,
    )))
}

/// The base a version's document is rebuilt from (itself for a whole-document record).
fn root_of(t: &impl ReadableTable<u64, &'static [u8]>, mut v: u64) -> Result<u64, StoreError> {
    for _ in 0..=MAX_PATCH_DEPTH {
        let Some(rec) = t.get(v).map_err(io)? else { return Ok(v) };
        match split_patch(rec.value())? {
            Some((_, p, _)) => v = p.base,
            None => return Ok(v),
        }
    }
    Err(StoreError::Data(format!("patch chain longer than {MAX_PATCH_DEPTH}")))
}

fn decode(bytes: &[u8]) -> Result<Version, StoreError> {
    match split(bytes)? {
        Some((m, doc)) => Ok(Version {
            version: m.version,
            document: String::from_utf8(doc.to_vec()).map_err(data)?,
            hash: m.hash,
            created_ms: m.created_ms,
            comment: m.comment,
        }),
        None => serde_json::from_slice(bytes).map_err(data),
    }
}

fn decode_meta(bytes: &[u8]) -> Result<VersionMeta, StoreError> {
    if let Some((m, _, _)) = split_patch(bytes)? {
        return Ok(m);
    }
    match split(bytes)? {
        Some((m, _)) => Ok(m),
        None => decode(bytes).map(|v| VersionMeta::from(&v)),
    }
}

#[async_trait]
impl ConfigStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn latest(&self) -> Result<Option<Version>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(VERSIONS).map_err(io)?;
            let last = t.last().map_err(io)?.map(|(k, _)| k.value());
            match last {
                Some(v) => Ok(read_version(&t, v)?.map(|x| x.0)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn get(&self, version: u64) -> Result<Option<Version>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(VERSIONS).map_err(io)?;
            Ok(read_version(&t, version)?.map(|x| x.0))
        })
        .await
    }

    async fn begin(&self) -> Result<Box<dyn WriteTxn>, StoreError> {
        let lock = self.writer.clone().lock_owned().await;
        let (base, base_hash) = self
            .blocking(|db| {
                let tx = db.begin_read().map_err(io)?;
                let t = tx.open_table(VERSIONS).map_err(io)?;
                match t.last().map_err(io)? {
                    Some((k, v)) => Ok((k.value(), decode_meta(v.value())?.hash)),
                    None => Ok((0, String::new())),
                }
            })
            .await?;
        Ok(Box::new(EmbeddedTxn { db: self.db.clone(), last: self.last.clone(), base, base_hash, _lock: lock }))
    }

    async fn history(&self, limit: usize) -> Result<Vec<VersionMeta>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(VERSIONS).map_err(io)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(io)?.rev().take(limit) {
                let (_, v) = item.map_err(io)?;
                out.push(decode_meta(v.value())?);
            }
            Ok(out)
        })
        .await
    }
}

/// Common prefix and suffix lengths of `before` and `after`, when what differs is at most
/// half of `after` (worth a patch).
fn diff(before: &str, after: &str) -> Option<(usize, usize)> {
    let (a, b) = (before.as_bytes(), after.as_bytes());
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a.iter().rev().zip(b.iter().rev()).take(max_suffix).take_while(|(x, y)| x == y).count();
    (b.len() - prefix - suffix <= b.len() / 2).then_some((prefix, suffix))
}

// === PostgreSQL ===

/// Schema migrations, applied in order; the applied ones are recorded in
/// `gatehouse_schema_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS gatehouse_config (
            version BIGINT PRIMARY KEY,
            document TEXT NOT NULL,
            hash TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            comment TEXT NOT NULL
        )",
    ),
    (
        2,
        "CREATE TABLE IF NOT EXISTS gatehouse_nodes (
            node_id TEXT PRIMARY KEY,
            config_version BIGINT NOT NULL,
            last_seen_ms BIGINT NOT NULL
        )",
    ),
    (
        3,
        "CREATE TABLE IF NOT EXISTS gatehouse_usage (
            span TEXT NOT NULL,
            bucket BIGINT NOT NULL,
            consumer TEXT NOT NULL,
            route TEXT NOT NULL,
            outcome TEXT NOT NULL,
            requests BIGINT NOT NULL,
            bytes_in BIGINT NOT NULL,
            bytes_out BIGINT NOT NULL,
            PRIMARY KEY (span, bucket, consumer, route, outcome)
        )",
    ),
    (
        4,
        "CREATE TABLE IF NOT EXISTS gatehouse_quota_counters (
            node_id TEXT NOT NULL,
            name TEXT NOT NULL,
            period_start BIGINT NOT NULL,
            count BIGINT NOT NULL,
            PRIMARY KEY (node_id, name, period_start)
        )",
    ),
    (
        5,
        "CREATE TABLE IF NOT EXISTS gatehouse_cache_purges (
            id BIGSERIAL PRIMARY KEY,
            cache TEXT NOT NULL,
            msg TEXT NOT NULL,
            created_ms BIGINT NOT NULL
        )",
    ),
];

/// The notification channel.
const CHANNEL: &str = "gatehouse_config";

/// The notification channel of response-cache purges: `<sender>\n<cache>\n<purge>`, or
/// `<sender>\n<cache>\n@<id>` for a purge too long for a notification, stored in
/// `gatehouse_cache_purges` under that id.
const PURGE_CHANNEL: &str = "gatehouse_cache_purge";

/// The longest notification payload sent as such (PostgreSQL refuses one of 8000 bytes or
/// more); a longer purge is stored in `gatehouse_cache_purges` and its id notified.
const PURGE_INLINE_MAX: usize = 7900;

/// How long a stored purge is kept for the nodes to read (they read it when notified; a node
/// that was not listening then empties its caches anyway).
const PURGE_KEEP_MS: u64 = 10 * 60 * 1000;

/// The advisory lock that serializes writers (every node, every version of this code).
const WRITE_LOCK: i64 = 7246;

/// How long a write transaction may sit idle (validating) while it holds the write lock before
/// the server ends it: a node that stops answering in the middle of a write blocks the other
/// nodes' writes for at most this long.
const WRITE_IDLE_LIMIT: &str = "5s";

/// A connection and the task that drives it. Dropping it closes the socket (the task is
/// aborted), so the server rolls back whatever transaction it had open and frees its locks.
pub(crate) struct Conn {
    pub(crate) client: tokio_postgres::Client,
    pub(crate) driver: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Where a store URL points, for messages: `user@host:port/dbname` (never the password).
pub(crate) fn describe(cfg: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = cfg.get_ports().get(i).or(cfg.get_ports().first()).copied().unwrap_or(5432);
            match h {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_string() } else { hosts.join(",") };
    let user = cfg.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = cfg.get_dbname().map(|d| format!("/{d}")).unwrap_or_default();
    format!("{user}{hosts}{db}")
}

/// An error with its causes (`error connecting to server: Connection refused (os error 111)`).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// PostgreSQL store for a cluster of nodes.
///
/// Reads (the sync task's checks, history, heartbeats) share one connection; writes have a
/// connection of their own, which holds the write transaction (and the advisory lock
/// [`WRITE_LOCK`]) while the API validates and applies the change. Every round trip is bounded
/// by [`STORE_TIMEOUT`]; a connection that times out is dropped and opened again next time.
pub struct PgStore {
    cfg: tokio_postgres::Config,
    /// `user@host:port/db`, for messages.
    target: String,
    client: tokio::sync::Mutex<Option<Conn>>,
    writer: Arc<tokio::sync::Mutex<Option<Conn>>>,
    latest_tx: watch::Sender<u64>,
    /// This store's id in purge notifications (its own are not handed back).
    sender: String,
    purge_tx: tokio::sync::broadcast::Sender<PurgeNotice>,
}

impl PgStore {
    /// Connect, apply migrations and start listening for changes. `resync` is the period of
    /// the safety-net full check. An error names the server (`user@host:port/db`) and the
    /// cause; [`StoreError::Invalid`] when the URL itself is wrong.
    pub async fn connect(url: &str, resync: Duration) -> Result<Arc<PgStore>, StoreError> {
        let cfg: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Invalid(format!("store URL: {}", chain(&e))))?;
        let target = describe(&cfg);
        let (latest_tx, _) = watch::channel(0);
        let sender = format!(
            "{:016x}",
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
                ^ (u64::from(std::process::id()) << 32)
                ^ fastrand::u64(..)
        );
        let (purge_tx, _) = tokio::sync::broadcast::channel(1024);
        let store = Arc::new(PgStore {
            cfg,
            target,
            client: tokio::sync::Mutex::new(None),
            writer: Arc::default(),
            latest_tx,
            sender,
            purge_tx,
        });
        {
            let mut guard = store.client.lock().await;
            let conn = store.open().await?;
            tokio::time::timeout(STORE_TIMEOUT * 5, migrate(&conn.client))
                .await
                .map_err(|_| store.timeout("applying migrations"))?
                .map_err(|e| store.err(&e))?;
            *guard = Some(conn);
        }
        let latest = store.latest_version().await?;
        store.latest_tx.send_replace(latest);
        tokio::spawn(listen(Arc::downgrade(&store), resync));
        Ok(store)
    }

    /// Where the store is (`user@host:port/db`).
    pub fn target(&self) -> &str {
        &self.target
    }

    fn err(&self, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Io(format!("PostgreSQL at {}: {}", self.target, chain(e)))
    }

    fn timeout(&self, what: &str) -> StoreError {
        StoreError::Io(format!("PostgreSQL at {}: timed out after {STORE_TIMEOUT:?} {what}", self.target))
    }

    async fn open(&self) -> Result<Conn, StoreError> {
        let (client, conn) = tokio::time::timeout(STORE_TIMEOUT, self.cfg.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| self.timeout("connecting"))?
            .map_err(|e| self.err(&e))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "config store connection closed");
            }
        });
        Ok(Conn { client, driver })
    }

    /// Run `f` on the shared read connection (opened when missing or closed). Waiting for the
    /// connection and running `f` are each bounded by [`STORE_TIMEOUT`]; a connection that
    /// times out is dropped.
    async fn with<T>(
        &self,
        f: impl for<'a> Fn(
            &'a tokio_postgres::Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>,
        >,
    ) -> Result<T, StoreError> {
        let mut guard = tokio::time::timeout(STORE_TIMEOUT, self.client.lock())
            .await
            .map_err(|_| self.timeout("waiting for the connection"))?;
        let run = async {
            if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
                *guard = Some(self.open().await?);
            }
            let Some(c) = guard.as_ref() else { return Err(StoreError::Io("no connection".into())) };
            f(&c.client).await.map_err(|e| self.err(&e))
        };
        let r = tokio::time::timeout(STORE_TIMEOUT, run).await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if guard.as_ref().is_some_and(|c| c.client.is_closed()) {
                    *guard = None;
                }
                Err(e)
            }
            Err(_) => {
                *guard = None;
                Err(self.timeout("waiting for an answer"))
            }
        }
    }

    async fn latest_version(&self) -> Result<u64, StoreError> {
        let v: i64 = self
            .with(|c| {
                Box::pin(async move {
                    let row = c.query_one("SELECT COALESCE(MAX(version), 0) FROM gatehouse_config", &[]).await?;
                    Ok(row.get::<_, i64>(0))
                })
            })
            .await?;
        Ok(v.max(0) as u64)
    }
}

fn row_to_version(r: &tokio_postgres::Row) -> Version {
    Version {
        version: r.get::<_, i64>(0).max(0) as u64,
        document: r.get(1),
        hash: r.get(2),
        created_ms: r.get::<_, i64>(3).max(0) as u64,
        comment: r.get(4),
    }
}

pub(crate) async fn migrate(c: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    c.batch_execute("CREATE TABLE IF NOT EXISTS gatehouse_schema_migrations (version INT PRIMARY KEY)").await?;
    for (v, sql) in MIGRATIONS {
        // One transaction per migration, serialized across nodes by an advisory lock.
        let sql = format!(
            "BEGIN; SELECT pg_advisory_xact_lock(7245); \
             DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM gatehouse_schema_migrations WHERE version = {v}) THEN \
             EXECUTE $m${sql}$m$; INSERT INTO gatehouse_schema_migrations VALUES ({v}); END IF; END $$; COMMIT;"
        );
        c.batch_execute(&sql).await?;
    }
    Ok(())
}

/// A purge stored in `gatehouse_cache_purges` under `id` (notified by another node): read and
/// handed on; when it cannot be read, the caches are emptied (what it purged is gone anyway).
async fn stored_purge(
    store: std::sync::Weak<PgStore>,
    id: Option<i64>,
    purge_tx: tokio::sync::broadcast::Sender<PurgeNotice>,
) {
    let Some(s) = store.upgrade() else { return };
    let read = match id {
        None => Err(StoreError::Invalid("a purge notification with a malformed id".into())),
        Some(id) => {
            s.with(|c| {
                Box::pin(async move {
                    let row =
                        c.query_opt("SELECT cache, msg FROM gatehouse_cache_purges WHERE id = $1", &[&id]).await?;
                    Ok(row.map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))))
                })
            })
            .await
        }
    };
    match read {
        Ok(Some((cache, msg))) => {
            let _ = purge_tx.send(PurgeNotice::Purge { cache, msg });
        }
        Ok(None) => {
            tracing::warn!(id, "stored cache purge no longer stored: emptying the caches instead");
            let _ = purge_tx.send(PurgeNotice::Missed);
        }
        Err(e) => {
            tracing::warn!(id, error = %e, "stored cache purge not readable: emptying the caches instead");
            let _ = purge_tx.send(PurgeNotice::Missed);
        }
    }
}

/// Listen for change notifications; resync periodically; reconnect when the connection drops
/// or stops answering (every step bounded by [`STORE_TIMEOUT`]).
async fn listen(store: std::sync::Weak<PgStore>, resync: Duration) {
    let mut first = true;
    loop {
        let Some(s) = store.upgrade() else { return };
        let cfg = s.cfg.clone();
        let target = s.target.clone();
        let tx = s.latest_tx.clone();
        let (purge_tx, me) = (s.purge_tx.clone(), s.sender.clone());
        let purge_tx_missed = purge_tx.clone();
        let weak = store.clone();
        drop(s);
        let connected = tokio::time::timeout(STORE_TIMEOUT, cfg.connect(tokio_postgres::NoTls)).await;
        let (client, mut conn) = match connected {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::debug!(store = %target, error = %chain(&e), "config store notifications: cannot connect");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                tracing::debug!(store = %target, "config store notifications: connect timed out");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
        // Drive the connection, forwarding notifications (the version written).
        let driver = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                loop {
                    match conn.poll_message(cx) {
                        std::task::Poll::Ready(Some(Ok(tokio_postgres::AsyncMessage::Notification(n))))
                            if n.channel() == PURGE_CHANNEL =>
                        {
                            let mut parts = n.payload().splitn(3, '\n');
                            if let (Some(from), Some(cache), Some(msg)) = (parts.next(), parts.next(), parts.next())
                                && from != me
                            {
                                match msg.strip_prefix('@').map(str::parse::<i64>) {
                                    None => {
                                        let _ =
                                            purge_tx.send(PurgeNotice::Purge { cache: cache.into(), msg: msg.into() });
                                    }
                                    Some(id) => {
                                        tokio::spawn(stored_purge(weak.clone(), id.ok(), purge_tx.clone()));
                                    }
                                }
                            }
                        }
                        std::task::Poll::Ready(Some(Ok(tokio_postgres::AsyncMessage::Notification(n)))) => {
                            let _ = ntx.send(n.payload().parse::<u64>().ok());
                        }
                        std::task::Poll::Ready(Some(Ok(_))) => {}
                        std::task::Poll::Ready(Some(Err(_)) | None) => return std::task::Poll::Ready(()),
                        std::task::Poll::Pending => return std::task::Poll::Pending,
                    }
                }
            })
            .await;
        });
        let listening = tokio::time::timeout(
            STORE_TIMEOUT,
            client.batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {PURGE_CHANNEL}")),
        )
        .await;
        if !matches!(listening, Ok(Ok(()))) {
            driver.abort();
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        // Listening again after a loss: purges sent meanwhile were missed.
        if !first {
            let _ = purge_tx_missed.send(PurgeNotice::Missed);
        }
        first = false;
        let mut tick = tokio::time::interval(resync);
        loop {
            tokio::select! {
                m = nrx.recv() => match m {
                    Some(Some(v)) => { tx.send_if_modified(|cur| { let ch = v > *cur; if ch { *cur = v; } ch }); }
                    Some(None) => {}
                    None => break,
                },
                _ = tick.tick() => {
                    let q = client.query_one("SELECT COALESCE(MAX(version), 0) FROM gatehouse_config", &[]);
                    match tokio::time::timeout(STORE_TIMEOUT, q).await {
                        Ok(Ok(row)) => {
                            let v = row.get::<_, i64>(0).max(0) as u64;
                            tx.send_if_modified(|cur| { let ch = v > *cur; if ch { *cur = v; } ch });
                        }
                        _ => break,
                    }
                    if store.strong_count() == 0 { driver.abort(); return; }
                }
            }
        }
        driver.abort();
        tracing::debug!(store = %target, "config store notification connection lost; reconnecting");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A write transaction on the PostgreSQL store: `BEGIN`, the advisory lock [`WRITE_LOCK`], the
/// latest version read under it; `commit` inserts `base + 1` (the primary key refuses a
/// duplicate: a compare-and-swap even against a writer that took no lock), deletes versions
/// past [`KEEP_VERSIONS`], notifies every node, and commits.
struct PgTxn {
    conn: tokio::sync::OwnedMutexGuard<Option<Conn>>,
    target: String,
    base: u64,
    base_hash: String,
    latest_tx: watch::Sender<u64>,
    /// Committed or rolled back: the connection may be used again.
    finished: bool,
}

impl PgTxn {
    fn err(&self, e: &tokio_postgres::Error) -> StoreError {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return StoreError::Conflict(format!("version {} was written by another writer", self.base + 1));
        }
        StoreError::Io(format!("PostgreSQL at {}: {}", self.target, chain(e)))
    }

    fn timeout(&self, what: &str) -> StoreError {
        StoreError::Io(format!("PostgreSQL at {}: timed out after {STORE_TIMEOUT:?} {what}", self.target))
    }

    fn client(&self) -> Result<&tokio_postgres::Client, StoreError> {
        self.conn.as_ref().map(|c| &c.client).ok_or_else(|| StoreError::Io("no connection".into()))
    }
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        if !self.finished {
            // Still inside the transaction: close the connection, the server rolls back.
            *self.conn = None;
        }
    }
}

#[async_trait]
impl WriteTxn for PgTxn {
    fn base(&self) -> (u64, &str) {
        (self.base, &self.base_hash)
    }

    async fn latest(&mut self) -> Result<Option<Version>, StoreError> {
        let base = self.base as i64;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&base];
        let c = self.client()?;
        let q = c.query_opt(
            "SELECT version, document, hash, created_ms, comment FROM gatehouse_config WHERE version = $1",
            &params,
        );
        match tokio::time::timeout(STORE_TIMEOUT, q).await {
            Ok(Ok(row)) => Ok(row.as_ref().map(row_to_version)),
            Ok(Err(e)) => Err(self.err(&e)),
            Err(_) => Err(self.timeout("reading the latest version")),
        }
    }

    async fn commit(
        mut self: Box<Self>,
        document: String,
        hash: String,
        comment: String,
    ) -> Result<Version, StoreError> {
        let (next, created) = ((self.base + 1) as i64, now_ms() as i64);
        let cut = next - KEEP_VERSIONS as i64;
        let c = self.client()?;
        let run = async {
            let row = c
                .query_one(
                    "INSERT INTO gatehouse_config (version, document, hash, created_ms, comment) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING version, document, hash, created_ms, comment",
                    &[&next, &document, &hash, &created, &comment],
                )
                .await?;
            c.execute("DELETE FROM gatehouse_config WHERE version <= $1", &[&cut]).await?;
            c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &next.to_string()]).await?;
            // NOTIFY is delivered, and the lock released, on commit.
            c.batch_execute("COMMIT").await?;
            Ok::<_, tokio_postgres::Error>(row_to_version(&row))
        };
        let out = match tokio::time::timeout(STORE_TIMEOUT, run).await {
            Ok(Ok(v)) => {
                self.finished = true;
                Ok(v)
            }
            Ok(Err(e)) => Err(self.err(&e)),
            Err(_) => Err(StoreError::Io(format!(
                "PostgreSQL at {}: no answer within {STORE_TIMEOUT:?} while committing (the version may or may not have been stored)",
                self.target
            ))),
        };
        if let Ok(v) = &out {
            self.latest_tx.send_if_modified(|cur| {
                let ch = v.version > *cur;
                if ch {
                    *cur = v.version;
                }
                ch
            });
        }
        // On error `finished` stays false: drop closes the connection (the server rolls back).
        out
    }

    async fn abort(mut self: Box<Self>) {
        let Ok(c) = self.client() else { return };
        if let Ok(Ok(())) = tokio::time::timeout(STORE_TIMEOUT, c.batch_execute("ROLLBACK")).await {
            self.finished = true;
        }
    }
}

#[async_trait]
impl ConfigStore for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn latest(&self) -> Result<Option<Version>, StoreError> {
        self.with(|c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT version, document, hash, created_ms, comment FROM gatehouse_config ORDER BY version DESC LIMIT 1",
                        &[],
                    )
                    .await?;
                Ok(rows.first().map(row_to_version))
            })
        })
        .await
    }

    async fn get(&self, version: u64) -> Result<Option<Version>, StoreError> {
        let v = i64::try_from(version).unwrap_or(i64::MAX);
        self.with(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT version, document, hash, created_ms, comment FROM gatehouse_config WHERE version = $1",
                        &[&v],
                    )
                    .await?;
                Ok(rows.first().map(row_to_version))
            })
        })
        .await
    }

    async fn begin(&self) -> Result<Box<dyn WriteTxn>, StoreError> {
        let mut guard = tokio::time::timeout(STORE_TIMEOUT, self.writer.clone().lock_owned())
            .await
            .map_err(|_| self.timeout("waiting for the write connection"))?;
        let run = async {
            if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
                *guard = Some(self.open().await?);
            }
            let Some(c) = guard.as_ref() else { return Err(StoreError::Io("no connection".into())) };
            let c = &c.client;
            // Waiting for the lock is bounded too (another node in the middle of a write).
            c.batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = '{}ms'; SET LOCAL idle_in_transaction_session_timeout = '{WRITE_IDLE_LIMIT}'; \
                 SELECT pg_advisory_xact_lock({WRITE_LOCK})",
                STORE_TIMEOUT.as_millis()
            ))
            .await
            .map_err(|e| self.err(&e))?;
            let row = c
                .query_opt("SELECT version, hash FROM gatehouse_config ORDER BY version DESC LIMIT 1", &[])
                .await
                .map_err(|e| self.err(&e))?;
            Ok(row.map_or((0, String::new()), |r| (r.get::<_, i64>(0).max(0) as u64, r.get::<_, String>(1))))
        };
        let r = tokio::time::timeout(STORE_TIMEOUT, run).await;
        match r {
            Ok(Ok((base, base_hash))) => Ok(Box::new(PgTxn {
                conn: guard,
                target: self.target.clone(),
                base,
                base_hash,
                latest_tx: self.latest_tx.clone(),
                finished: false,
            })),
            Ok(Err(e)) => {
                *guard = None;
                Err(e)
            }
            Err(_) => {
                *guard = None;
                Err(self.timeout("starting a write"))
            }
        }
    }

    async fn history(&self, limit: usize) -> Result<Vec<VersionMeta>, StoreError> {
        let limit = limit as i64;
        self.with(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT version, '' AS document, hash, created_ms, comment FROM gatehouse_config ORDER BY version DESC LIMIT $1",
                        &[&limit],
                    )
                    .await?;
                Ok(rows.iter().map(|r| VersionMeta::from(&row_to_version(r))).collect())
            })
        })
        .await
    }

    async fn heartbeat(&self, node: &str, version: u64) -> Result<(), StoreError> {
        let (node, v, now) = (node.to_string(), version as i64, now_ms() as i64);
        self.with(move |c| {
            let node = node.clone();
            Box::pin(async move {
                c.execute(
                    "INSERT INTO gatehouse_nodes (node_id, config_version, last_seen_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (node_id) DO UPDATE SET config_version = $2, last_seen_ms = $3",
                    &[&node, &v, &now],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let since = now_ms() as i64 - 60_000;
        self.with(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT node_id, config_version, last_seen_ms FROM gatehouse_nodes WHERE last_seen_ms > $1 ORDER BY node_id",
                        &[&since],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| NodeInfo {
                        node_id: r.get(0),
                        config_version: r.get::<_, i64>(1).max(0) as u64,
                        last_seen_ms: r.get::<_, i64>(2).max(0) as u64,
                    })
                    .collect())
            })
        })
        .await
    }

    fn announcements(&self) -> Option<watch::Receiver<u64>> {
        Some(self.latest_tx.subscribe())
    }

    async fn notify_purge(&self, cache: &str, msg: &str) -> Result<bool, StoreError> {
        if cache.contains('\n') {
            return Err(StoreError::Invalid(format!("cache name {cache:?} has a line break")));
        }
        let payload = format!("{}\n{cache}\n{msg}", self.sender);
        if payload.len() <= PURGE_INLINE_MAX {
            self.with(|c| {
                let payload = payload.clone();
                Box::pin(async move {
                    c.execute("SELECT pg_notify($1, $2)", &[&PURGE_CHANNEL, &payload]).await?;
                    Ok(())
                })
            })
            .await?;
            return Ok(true);
        }
        // Too long for a notification: stored, and its id notified, in one statement (one
        // transaction: the notification goes out when the row is there). Old ones are pruned.
        let head = format!("{}\n{cache}\n@", self.sender);
        let now = now_ms() as i64;
        let old = now - PURGE_KEEP_MS as i64;
        let (cache, msg) = (cache.to_string(), msg.to_string());
        self.with(|c| {
            let (head, cache, msg) = (head.clone(), cache.clone(), msg.clone());
            Box::pin(async move {
                c.execute(
                    "WITH gone AS (DELETE FROM gatehouse_cache_purges WHERE created_ms < $5), \
                     ins AS (INSERT INTO gatehouse_cache_purges (cache, msg, created_ms) VALUES ($3, $4, $6) \
                     RETURNING id) \
                     SELECT pg_notify($1, $2 || ins.id::text) FROM ins",
                    &[&PURGE_CHANNEL, &head, &cache, &msg, &old, &now],
                )
                .await?;
                Ok(())
            })
        })
        .await?;
        Ok(true)
    }

    fn purge_notices(&self) -> Option<tokio::sync::broadcast::Receiver<PurgeNotice>> {
        Some(self.purge_tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_old_records_still_read() {
        let v = Version {
            version: 7,
            document: "{\"routes\":[{\"name\":\"a\\nb\"}]}\n".into(),
            hash: "ab".into(),
            created_ms: 1,
            comment: "PUT /routes/a\nb".into(),
        };
        let bytes = encode(&v).unwrap();
        assert!(bytes.starts_with(RECORD_MAGIC));
        assert_eq!(decode(&bytes).unwrap(), v);
        assert_eq!(decode_meta(&bytes).unwrap(), VersionMeta::from(&v));
        let old = serde_json::to_vec(&v).unwrap();
        assert_eq!(decode(&old).unwrap(), v);
        assert_eq!(decode_meta(&old).unwrap(), VersionMeta::from(&v));
        assert!(decode(b"GH1\n{\"version\":1").is_err(), "a truncated record is an error, not a panic");
    }

    /// The embedded store's append is a compare-and-swap on the version it was based on, and
    /// its write lock makes a second writer wait and then see the first one's version.
    #[tokio::test]
    async fn embedded_writes_are_linearisable() {
        let dir = std::env::temp_dir().join(format!("gh-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Arc::new(EmbeddedStore::open(&dir).unwrap());
        let last = Arc::new(std::sync::Mutex::new(None));
        append(&s.db, &last, 0, "{\"a\":1}".into(), "h1".into(), "one".into()).unwrap();
        let e = append(&s.db, &last, 0, "{\"a\":2}".into(), "h2".into(), "stale".into()).unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        let t1 = s.begin().await.unwrap();
        assert_eq!(t1.base(), (1, "h1"));
        let s2 = s.clone();
        let second = tokio::spawn(async move {
            let t2 = s2.begin().await.unwrap();
            let base = t2.base().0;
            (base, t2.commit("{\"a\":4}".into(), "h4".into(), "after".into()).await.unwrap().version)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished(), "the second writer waits");
        assert_eq!(t1.commit("{\"a\":3}".into(), "h3".into(), "first".into()).await.unwrap().version, 2);
        assert_eq!(second.await.unwrap(), (2, 3));
        let t3 = s.begin().await.unwrap();
        t3.abort().await;
        assert_eq!(s.latest().await.unwrap().unwrap().comment, "after");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
