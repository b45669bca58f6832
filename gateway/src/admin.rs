//! Store mode (`--store`), the Admin API listener, and `gatehouse config export|import`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use gw_admin::store::{ConfigStore, EmbeddedStore, PgStore};
use serde_json::Value;

use crate::ConfigAction;

/// Open the store named by `spec`: `embedded:<dir>` or `postgres://...`, once.
pub(crate) async fn open_store(spec: &str) -> Result<Arc<dyn ConfigStore>, String> {
    if let Some(dir) = spec.strip_prefix("embedded:") {
        let s = EmbeddedStore::open(Path::new(dir)).map_err(|e| e.to_string())?;
        return Ok(Arc::new(s));
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let s = PgStore::connect(spec, Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
        return Ok(s);
    }
    Err(format!("--store {spec:?}: use embedded:<data dir> or a postgres:// URL"))
}

/// First delay between attempts to reach the PostgreSQL store at start, doubled after each
/// failure up to [`STORE_RETRY_MAX`].
const STORE_RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest delay between attempts.
const STORE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Open the store for `run`: a PostgreSQL store that cannot be reached (or refuses: a database
/// that is starting, missing, or refuses the login) is tried again with back-off, without end,
/// each failure logged with the server and the cause, until it answers or the process is told
/// to stop (`None`). A malformed specification, or an embedded store that cannot be opened,
/// fails at once.
async fn open_store_retrying(spec: &str) -> Result<Option<Arc<dyn ConfigStore>>, String> {
    if spec.starts_with("embedded:") {
        return open_store(spec).await.map(Some);
    }
    if !(spec.starts_with("postgres://") || spec.starts_with("postgresql://")) {
        return Err(format!("--store {spec:?}: use embedded:<data dir> or a postgres:// URL"));
    }
    let mut delay = STORE_RETRY_FIRST;
    let mut terminated = std::pin::pin!(crate::termination());
    for attempt in 1u64.. {
        match PgStore::connect(spec, Duration::from_secs(5)).await {
            Ok(s) => {
                if attempt > 1 {
                    tracing::info!(store = %s.target(), attempt, "config store reachable");
                }
                return Ok(Some(s));
            }
            Err(gw_admin::store::StoreError::Invalid(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "config store unreachable at start; retrying"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut terminated => return Ok(None),
        }
        delay = (delay * 2).min(STORE_RETRY_MAX);
    }
    Ok(None)
}

/// The version to start from: the store's latest, or (an empty store) `seed`, written under the
/// store's write lock so that nodes starting together seed it once.
async fn first_version(store: &Arc<dyn ConfigStore>, seed: Option<&Path>) -> Result<gw_admin::store::Version, String> {
    let txn = store.begin().await.map_err(|e| format!("error: {e}"))?;
    if txn.base().0 > 0 {
        txn.abort().await;
        let v = store.latest().await.map_err(|e| format!("error: {e}"))?;
        let v = v.ok_or("error: the store's latest version disappeared")?;
        if seed.is_some() {
            tracing::info!(version = v.version, "the store has a configuration; --config is ignored");
        }
        return Ok(v);
    }
    let Some(seed) = seed else {
        txn.abort().await;
        return Err("error: the store is empty: give --config FILE to seed it".into());
    };
    let doc = match document_of_file(seed) {
        Ok(d) => d.to_string(),
        Err(e) => {
            txn.abort().await;
            return Err(e);
        }
    };
    let hash = gw_admin::store::sha256_hex(&doc);
    txn.commit(doc, hash, format!("seed from {}", seed.display())).await.map_err(|e| format!("error: {e}"))
}

/// Warn when the Admin API listens beyond loopback in clear text: tokens (and, for `GET
/// /config`, secrets) would cross the network unencrypted.
fn warn_if_exposed(addr: std::net::SocketAddr, tls: bool) {
    if !tls && !addr.ip().is_loopback() {
        tracing::warn!(
            addr = %addr,
            "admin API on a non-loopback address without TLS: tokens and configuration travel in clear; \
             set gateway.admin.tls or listen on 127.0.0.1"
        );
    }
}

/// Read a YAML file into the document form (file format as JSON), validated. `${VAR}` is
/// substituted from this process's environment; relative file paths are made absolute against
/// the file's directory (the document must not depend on a node's working directory).
fn document_of_file(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let src = path.display().to_string();
    let mut file = gw_config::parse_yaml(&text, &src, gw_config::process_env()).map_err(|e| e.to_string())?;
    let base_dir = path.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
    let opts = gw_config::ValidateOptions { base_dir: base_dir.map(Path::to_path_buf), hash: None };
    gw_config::validate_located(&file, &src, Some(&text), &opts).map_err(|e| e.to_string())?;
    if let Some(dir) = base_dir.and_then(|d| std::path::absolute(d).ok()) {
        file.resolve_paths(&dir);
    }
    let mut doc = gw_admin::doc::Doc::from_value(gw_config::to_document(&file)?);
    gw_admin::doc::hash_secrets(&mut doc)?;
    Ok(doc.to_value())
}

/// Run with a configuration store: the store is the source of truth; an empty store is seeded
/// from `seed`.
pub(crate) fn run_with_store(spec: &str, seed: Option<&Path>) -> ExitCode {
    // A SIGHUP at any time (start-up included) must not end the process; there is nothing to
    // reload: the store is the source of truth.
    let _hup = crate::reload::hold_sighup();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("gatehouse-main").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let store = match open_store_retrying(spec).await {
            Ok(Some(s)) => s,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let version = match first_version(&store, seed).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let doc: Value = match serde_json::from_str(&version.document) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: stored configuration version {}: {e}", version.version);
                return ExitCode::FAILURE;
            }
        };
        let mut config = match gw_admin::api::compile_doc(&doc, None) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("stored configuration version {}:\n{e}", version.version);
                return ExitCode::FAILURE;
            }
        };
        let overrides = crate::overrides();
        if let Err(e) = overrides.check(&config) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        overrides.apply(&mut config);
        let shutdown_timeout = config.gateway.shutdown_timeout;
        let admin_addr = config.gateway.admin_listener;
        let admin_tls = config.gateway.admin_tls.clone();
        // Nodes of a cluster share the stored document: the node id comes from the environment.
        let node_id = std::env::var("GATEHOUSE_NODE_ID").unwrap_or_else(|_| config.gateway.node_id.clone());
        let usage_store = match open_usage_store(spec, &config, &node_id).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let gw = match gw_proxy::Gateway::start_with_usage(config, Some(usage_store)).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(a) = gw.status_addr() {
            tracing::info!(addr = %a, "status endpoint listening");
        }
        let state = gw_admin::AdminState::with_overrides(
            gw.clone(),
            Some(store),
            doc,
            version.version,
            node_id,
            overrides.clone(),
        );
        let admin = match admin_addr {
            Some(addr) => match serve(addr, state.clone(), admin_tls.as_ref()).await {
                Ok((bound, task)) => {
                    tracing::info!(addr = %bound, "admin API listening");
                    warn_if_exposed(bound, admin_tls.is_some());
                    Some(task)
                }
                Err(e) => {
                    eprintln!("cannot start the admin API on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let sync = gw_admin::sync::spawn(state, Duration::from_secs(1));
        let terminated = crate::termination();
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            store = spec_kind(spec),
            config_version = version.version,
            "gatehouse started"
        );
        terminated.await;
        tracing::info!(timeout = ?shutdown_timeout, "draining");
        sync.abort();
        if let Some(t) = admin {
            t.abort();
        }
        gw.shutdown(shutdown_timeout).await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// The usage store: the Redis of `gateway.redis` with `gateway.usage.store: redis`, else beside
/// the configuration store: `usage.redb` in the embedded store's directory, or the same
/// PostgreSQL database (tables `gatehouse_usage`, `gatehouse_quota_counters`).
async fn open_usage_store(
    spec: &str,
    config: &gw_config::model::Config,
    node_id: &str,
) -> Result<Arc<dyn gw_observability::UsageBackend>, String> {
    use gw_admin::usage_store::{EmbeddedUsage, PgUsage};
    if let Some(r) = gw_admin::usage_store::redis_usage(config, node_id)? {
        return Ok(r);
    }
    if let Some(dir) = spec.strip_prefix("embedded:") {
        return Ok(Arc::new(EmbeddedUsage::open(Path::new(dir)).map_err(|e| e.to_string())?));
    }
    Ok(PgUsage::connect(spec, node_id).await.map_err(|e| e.to_string())?)
}

fn spec_kind(spec: &str) -> &'static str {
    if spec.starts_with("embedded:") { "embedded" } else { "postgres" }
}

/// The Admin API listener, over TLS when configured.
async fn serve(
    addr: std::net::SocketAddr,
    state: Arc<gw_admin::AdminState>,
    tls: Option<&gw_config::model::AdminTls>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), String> {
    match tls {
        Some(t) => gw_admin::serve_tls(addr, state, t).await,
        None => gw_admin::serve(addr, state).await.map_err(|e| e.to_string()),
    }
}

/// DB-less mode: a read-only Admin API when tokens are configured.
pub(crate) async fn start_read_only(
    gw: &gw_proxy::Gateway,
    path: &Path,
) -> Option<(Arc<gw_admin::AdminState>, tokio::task::JoinHandle<()>)> {
    let cfg = gw.config();
    let addr = cfg.gateway.admin_listener?;
    let doc = document_of_file(path).ok()?;
    let has_tokens = doc.pointer("/gateway/admin/tokens").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    if !has_tokens {
        return None;
    }
    let state = gw_admin::AdminState::new(gw.clone(), None, doc, 0, cfg.gateway.node_id.clone());
    match serve(addr, state.clone(), cfg.gateway.admin_tls.as_ref()).await {
        Ok((bound, task)) => {
            tracing::info!(addr = %bound, "admin API listening (read-only: the file is the source of truth)");
            warn_if_exposed(bound, cfg.gateway.admin_tls.is_some());
            Some((state, task))
        }
        Err(e) => {
            tracing::error!(addr = %addr, error = %e, "cannot start the admin API");
            None
        }
    }
}

/// After a file reload in DB-less mode, show the new document.
pub(crate) async fn refresh_read_only(state: &gw_admin::AdminState, path: &Path) {
    if let Ok(doc) = document_of_file(path) {
        state.set_document(doc).await;
    }
}

/// `gatehouse config export|import`.
pub(crate) fn config_command(action: ConfigAction) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match action {
            ConfigAction::Export { store } => {
                let store = match open_store(&store).await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let v = match store.latest().await {
                    Ok(Some(v)) => v,
                    Ok(None) => {
                        eprintln!("error: the store is empty");
                        return ExitCode::FAILURE;
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let yaml = gw_config::parse_json(&v.document, "store")
                    .map_err(|e| e.to_string())
                    .and_then(|f| gw_config::to_yaml(&f));
                match yaml {
                    Ok(y) => {
                        print!("{y}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            ConfigAction::Import { file, store } => {
                let doc = match document_of_file(&file) {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                };
                let store = match open_store(&store).await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                match store.commit(doc.to_string(), format!("import {}", file.display())).await {
                    Ok(v) => {
                        println!("imported {} as version {}", file.display(), v.version);
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    })
}
