//! The Admin API: REST CRUD over the entities of the configuration document, whole-document
//! import/export, history and rollback, status, and its own OpenAPI document.
//!
//! Every write takes the store's write lock (held by one writer at a time across every node of
//! a cluster), catches up with the latest stored version if another node wrote it, applies the
//! change to that version, checks the client's preconditions (`If-Match`) against it, parses
//! and validates the result with the file loader's rules (400 with the failing field), applies
//! it to the data plane (compiled off the request path, swapped atomically), then appends it to
//! the store as the next version and releases the lock. If the store refuses, the previous
//! configuration is put back and the client gets 503: what runs is always what is stored, and
//! an acknowledged write is never lost or overwritten by a writer that had not seen it.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::doc::{self, Doc, Kind};
use crate::store::{ConfigStore, NodeInfo, StoreError, sha256_hex};

/// Who may do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// GET only.
    ReadOnly,
}

/// The running document and what it was built from.
pub(crate) struct Current {
    pub(crate) doc: Doc,
    pub(crate) version: u64,
    pub(crate) hash: String,
    /// SHA-256 of each admin token, with its role.
    pub(crate) tokens: Vec<([u8; 32], Role)>,
}

/// What the store looked like at the last check (the sync task's, or a write's): `/status`
/// answers from it and never waits for the store.
#[derive(Default)]
pub(crate) struct StoreHealth {
    /// Why the store is unreachable (`None`: it answered the last check).
    pub(crate) error: Option<String>,
    /// Cluster nodes as last read.
    pub(crate) nodes: Vec<NodeInfo>,
}

/// Shared state of the Admin API.
pub struct AdminState {
    pub(crate) gw: gw_proxy::Gateway,
    pub(crate) store: Option<Arc<dyn ConfigStore>>,
    /// The running document: readers take a snapshot and never wait for a write in progress.
    pub(crate) current: std::sync::RwLock<Arc<Current>>,
    /// Serializes this process's writes and its catching up with other nodes' versions.
    pub(crate) writer: Mutex<()>,
    pub(crate) node_id: String,
    pub(crate) started: Instant,
    pub(crate) store_ok: std::sync::atomic::AtomicBool,
    pub(crate) health: std::sync::Mutex<StoreHealth>,
    /// This node's listener, admin and status addresses (applied to every document).
    overrides: gw_config::AddressOverrides,
}

impl AdminState {
    /// State for a gateway running `doc` (the file format as JSON) at `version`. Without a
    /// store, the API is read-only (the file is the source of truth).
    pub fn new(
        gw: gw_proxy::Gateway,
        store: Option<Arc<dyn ConfigStore>>,
        doc: Value,
        version: u64,
        node_id: String,
    ) -> Arc<AdminState> {
        Self::with_overrides(gw, store, doc, version, node_id, gw_config::AddressOverrides::default())
    }

    /// [`AdminState::new`] for a node whose addresses differ from the document's: `overrides`
    /// are applied to every document this node validates (its own writes and other nodes').
    pub fn with_overrides(
        gw: gw_proxy::Gateway,
        store: Option<Arc<dyn ConfigStore>>,
        doc: Value,
        version: u64,
        node_id: String,
        overrides: gw_config::AddressOverrides,
    ) -> Arc<AdminState> {
        let doc = Doc::from_value(doc);
        let hash = sha256_hex(&doc.to_json());
        let tokens = tokens_of(&doc);
        Arc::new(AdminState {
            gw,
            store,
            current: std::sync::RwLock::new(Arc::new(Current { doc, version, hash, tokens })),
            writer: Mutex::new(()),
            node_id,
            started: Instant::now(),
            store_ok: std::sync::atomic::AtomicBool::new(true),
            health: std::sync::Mutex::new(StoreHealth::default()),
            overrides,
        })
    }

    /// Apply a document written elsewhere (another node, via the store). Invalid documents are
    /// logged and skipped; the current configuration keeps serving.
    pub async fn apply_from_store(&self, v: &crate::store::Version) -> Result<(), String> {
        let _w = self.writer.lock().await;
        self.catch_up(v).await
    }

    /// Put version `v` from the store in service (the caller holds `writer`). A one-route
    /// change made on another node is applied incrementally here too.
    async fn catch_up(&self, v: &crate::store::Version) -> Result<(), String> {
        let cur = self.snapshot();
        if v.version == cur.version && v.hash == cur.hash {
            return Ok(());
        }
        let value: Value = serde_json::from_str(&v.document).map_err(|e| e.to_string())?;
        let doc = Doc::from_value(value);
        if doc.to_json() != cur.doc.to_json() {
            let running = self.gw.config();
            let applied = self.apply(&cur, &running, &doc, v.hash.clone(), false).await.map_err(|e| e.message)?;
            tracing::info!(
                version = v.version,
                apply_ms = applied.apply.as_secs_f64() * 1000.0,
                incremental = applied.incremental,
                "configuration changed by another node"
            );
        }
        self.publish(Current { tokens: tokens_of(&doc), doc, version: v.version, hash: v.hash.clone() });
        Ok(())
    }

    /// DB-less mode: show `doc` (the file was reloaded).
    pub async fn set_document(&self, doc: Value) {
        let _w = self.writer.lock().await;
        let version = self.snapshot().version;
        let doc = Doc::from_value(doc);
        let hash = sha256_hex(&doc.to_json());
        self.publish(Current { hash, tokens: tokens_of(&doc), doc, version });
    }

    /// The running configuration version.
    pub async fn version(&self) -> u64 {
        self.snapshot().version
    }

    /// Record the outcome of a look at the store (`/status` shows it).
    pub(crate) fn store_checked(&self, result: Result<(), &StoreError>) {
        let ok = result.is_ok();
        let was = self.store_ok.swap(ok, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut h) = self.health.lock() {
            h.error = result.err().map(ToString::to_string);
        }
        if let Err(e) = result {
            self.gw.metrics().plugin_event("config_store_unreachable");
            if was {
                tracing::warn!(error = %e, "config store unreachable; serving the last good configuration");
            }
        } else if !was {
            tracing::info!("config store reachable again");
        }
    }

    /// The running document (a cheap pointer copy).
    pub(crate) fn snapshot(&self) -> Arc<Current> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn publish(&self, c: Current) {
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(c);
    }

    /// Parse and validate `doc` for this node: [`compile_doc`], then this node's addresses.
    pub fn compile(&self, doc: &Value, hash: Option<String>) -> Result<gw_config::Config, gw_config::LoadError> {
        let mut config = compile_doc(doc, hash)?;
        self.overrides.apply(&mut config);
        Ok(config)
    }
}

fn tokens_of(doc: &Doc) -> Vec<([u8; 32], Role)> {
    let mut out = Vec::new();
    let list = doc.get("gateway").and_then(|g| g.pointer("/admin/tokens")).and_then(Value::as_array);
    for t in list.into_iter().flatten() {
        let Some(h) = t.get("token_hash").and_then(Value::as_str).and_then(|h| h.strip_prefix("sha256:")) else {
            continue;
        };
        let Some(bytes) = hex32(h) else { continue };
        let role = match t.get("role").and_then(Value::as_str) {
            Some("read_only") => Role::ReadOnly,
            _ => Role::Admin,
        };
        out.push((bytes, role));
    }
    out
}

fn hex32(h: &str) -> Option<[u8; 32]> {
    if h.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// An API error: status, stable code, message, and field errors.
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    errors: Vec<Value>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), errors: Vec::new() }
    }
    fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
    fn store(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", format!("{m}; retry")),
            e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()),
        }
    }

    /// Name entities by their id instead of their position in the document (`routes[57].x` ->
    /// `routes[orders].x`), in the fields and the message: the client of an entity endpoint
    /// sent one entity, not a document.
    fn name_entities(mut self, d: &Doc) -> ApiError {
        for e in &mut self.errors {
            let Some(field) = e.get("field").and_then(Value::as_str) else { continue };
            if let Some(named) = by_name(field, d) {
                if let Some(rest) = self.message.strip_prefix(field) {
                    self.message = format!("{named}{rest}");
                }
                e["field"] = Value::String(named);
            }
        }
        self
    }
}

/// `<kind>[<index>]<rest>` as `<kind>[<id>]<rest>`, when the index names an entity of `d` whose
/// id can stand there (not empty, no brackets: an invalid name keeps its index).
fn by_name(field: &str, d: &Doc) -> Option<String> {
    let open = field.find('[')?;
    let kind = Kind::parse(&field[..open])?;
    let close = open + field[open..].find(']')?;
    let index: usize = field[open + 1..close].parse().ok()?;
    let id = doc::entity_id(kind, d.entities(kind).nth(index)?)?;
    if id.is_empty() || id.contains(['[', ']']) {
        return None;
    }
    Some(format!("{}[{id}]{}", kind.key(), &field[close + 1..]))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if !self.errors.is_empty() {
            body["errors"] = Value::Array(self.errors);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<gw_config::LoadError> for ApiError {
    fn from(e: gw_config::LoadError) -> Self {
        let errors: Vec<Value> = e
            .errors
            .iter()
            .map(|x| json!({ "field": x.path.clone().unwrap_or_default(), "message": x.message }))
            .collect();
        let message = e.errors.first().map_or_else(
            || "invalid configuration".to_string(),
            |x| format!("{}: {}", x.path.clone().unwrap_or_default(), x.message),
        );
        ApiError { status: StatusCode::BAD_REQUEST, code: "invalid", message, errors }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Parse and validate a document with the file loader's rules. `hash` is the version hash to
/// record (computed from the document when absent).
pub fn compile_doc(doc: &Value, hash: Option<String>) -> Result<gw_config::Config, gw_config::LoadError> {
    let file = gw_config::parse_value(doc, "admin")?;
    gw_config::validate(&file, &gw_config::ValidateOptions { base_dir: None, hash }).map_err(validation_errors)
}

/// Validation errors as the Admin API reports them (the failing field is the key path).
fn validation_errors(errs: Vec<gw_config::ValidationError>) -> gw_config::LoadError {
    gw_config::LoadError {
        errors: errs
            .into_iter()
            .map(|e| gw_config::LocatedError {
                source: "admin".into(),
                line: None,
                column: None,
                path: Some(e.path.to_string()),
                message: e.message,
            })
            .collect(),
    }
}

/// The router, with authentication.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/openapi.json", get(openapi))
        .route("/config", get(export_config).put(import_config))
        .route("/config/history", get(history))
        .route("/config/rollback/{version}", post(rollback))
        .route("/usage", get(crate::usage_api::list))
        .route("/usage/export", get(crate::usage_api::export))
        .route("/cache", get(crate::cache_api::list))
        .route("/cache/purge", post(crate::cache_api::purge))
        .route("/{kind}", get(list).post(create))
        .route("/{kind}/{id}", get(read).put(upsert).delete(remove))
        .merge(crate::dashboard::router(&state))
        .fallback(|| async { ApiError::not_found("endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

async fn auth(State(s): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    // The OpenAPI document is public (it describes the API, not the configuration), and so
    // are the dashboard's page and assets (they hold no data; its API needs a token).
    if req.uri().path() == "/openapi.json" || crate::dashboard::is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(token) = token else {
        return with_challenge(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "an admin token is required"));
    };
    let digest: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(token.as_bytes()).into()
    };
    let role = {
        let cur = s.snapshot();
        let mut found = None;
        for (h, r) in &cur.tokens {
            if bool::from(subtle::ConstantTimeEq::ct_eq(&h[..], &digest[..])) {
                found = Some(*r);
            }
        }
        found
    };
    let Some(role) = role else {
        return with_challenge(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid admin token"));
    };
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    if write && role == Role::ReadOnly {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token is read-only").into_response();
    }
    if req.uri().path() == "/config" && req.method() == Method::GET && role != Role::Admin {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "exporting the configuration needs an admin token")
            .into_response();
    }
    next.run(req).await
}

/// Errors produced by the framework itself (an unreadable path or query string, a method not
/// allowed) are plain text: make them JSON like every other error.
async fn json_errors(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json") || c.starts_with("application/yaml"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let code = if status == StatusCode::METHOD_NOT_ALLOWED { "method_not_allowed" } else { "invalid" };
    let mut out = ApiError::new(status, code, String::from_utf8_lossy(&text).into_owned()).into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

fn with_challenge(e: ApiError) -> Response {
    let mut r = e.into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""));
    r
}

fn kind_of(s: &str) -> ApiResult<Kind> {
    Kind::parse(s).ok_or_else(|| ApiError::not_found("endpoint"))
}

// === preconditions ===

/// `If-Match` / `If-None-Match` of a write (RFC 9110 section 13.1), evaluated against the
/// latest stored version while the write lock is held, so a tag read on any node is checked
/// against what every node sees.
#[derive(Debug, Default, Clone)]
struct Preconditions {
    if_match: Option<Vec<String>>,
    if_none_match: Option<Vec<String>>,
}

impl Preconditions {
    fn from(h: &HeaderMap) -> Preconditions {
        let list = |name: header::HeaderName| -> Option<Vec<String>> {
            let mut out = Vec::new();
            let mut any = false;
            for v in h.get_all(name) {
                any = true;
                // A value that is not visible ASCII matches nothing.
                let text = v.to_str().unwrap_or("\u{0}");
                out.extend(text.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()));
            }
            any.then_some(out)
        };
        Preconditions { if_match: list(header::IF_MATCH), if_none_match: list(header::IF_NONE_MATCH) }
    }

    /// Check against the current tag of the target (`None`: it does not exist). `what` names it.
    fn check(&self, current: Option<&str>, what: &str) -> ApiResult<()> {
        let failed = |why: String| Err(ApiError::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", why));
        if let Some(tags) = &self.if_match {
            // Strong comparison: a weak tag never matches.
            let ok = match current {
                None => false,
                Some(cur) => tags.iter().any(|t| t == "*" || t == cur),
            };
            if !ok {
                return match current {
                    None => failed(format!("If-Match: {what} does not exist")),
                    Some(cur) => failed(format!("If-Match: {what} has changed (its ETag is now {cur})")),
                };
            }
        }
        if let (Some(tags), Some(cur)) = (&self.if_none_match, current) {
            // Weak comparison.
            if tags.iter().any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == cur) {
                return failed(format!("If-None-Match: {what} exists (ETag {cur})"));
            }
        }
        Ok(())
    }
}

/// The `ETag` of the whole configuration: its version's hash.
fn config_etag(hash: &str) -> String {
    format!("\"{hash}\"")
}

fn with_etag(mut r: Response, tag: Option<&str>) -> Response {
    if let Some(v) = tag.and_then(|t| HeaderValue::from_str(t).ok()) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

// === entity endpoints ===

#[derive(Deserialize)]
struct ListQuery {
    offset: Option<u64>,
    size: Option<usize>,
    tags: Option<String>,
}

async fn list(
    State(s): State<Arc<AdminState>>,
    Path(kind): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let kind = kind_of(&kind)?;
    let q = q.map_err(bad_request)?;
    let size = page_size(q.size)?;
    // Any offset past the end is an empty page.
    let offset = q.offset.unwrap_or(0);
    if offset > MAX_SAFE_INTEGER {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("offset: at most {MAX_SAFE_INTEGER}")));
    }
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let tags: Vec<&str> =
        q.tags.as_deref().map(|t| t.split(',').filter(|x| !x.is_empty()).collect()).unwrap_or_default();
    let cur = s.snapshot();
    let all: Vec<Value> = cur.doc.entities(kind).filter(|e| doc::has_tags(e, &tags)).cloned().collect();
    let total = all.len();
    let data: Vec<Value> = all.into_iter().skip(offset).take(size).map(|e| doc::redact(kind, e)).collect();
    let next = (offset.saturating_add(data.len()) < total).then_some(offset + data.len());
    Ok(axum::Json(json!({ "data": data, "total": total, "offset": offset, "next": next })).into_response())
}

async fn read(State(s): State<Arc<AdminState>>, Path((kind, id)): Path<(String, String)>) -> ApiResult<Response> {
    let kind = kind_of(&kind)?;
    let cur = s.snapshot();
    let e = cur
        .doc
        .entities(kind)
        .find(|e| doc::is_entity(kind, e, &id))
        .ok_or_else(|| ApiError::not_found(&format!("{} {id:?}", kind.key())))?;
    let tag = doc::etag(e);
    Ok(with_etag(axum::Json(doc::redact(kind, e.clone())).into_response(), Some(&tag)))
}

fn body_entity(body: &[u8]) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "body: expected a JSON object"));
    }
    json_integers(&mut v)?;
    Ok(v)
}

/// Largest integer a request body may carry (the largest a JSON number holds exactly).
const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// Integers of a JSON body as JSON Schema (and the OpenAPI document) see them: a number
/// written with a fraction of zero (`8080.0`) is an integer; an integer beyond
/// +-[`MAX_SAFE_INTEGER`] is refused (most JSON parsers would not keep it exactly). Free-form
/// JSON values (the transformers' `add` / `append` / `replace` `json` fields, which the document
/// types as any value) are the user's data and are left exactly as sent.
fn json_integers(v: &mut Value) -> ApiResult<()> {
    json_integers_in(v, None)
}

fn json_integers_in(v: &mut Value, parent_key: Option<&str>) -> ApiResult<()> {
    match v {
        Value::Number(n) => {
            let too_large = |n: &serde_json::Number| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("body: the number {n} is out of range (integers up to {MAX_SAFE_INTEGER} in magnitude)"),
                )
            };
            if let Some(u) = n.as_u64() {
                if u > MAX_SAFE_INTEGER {
                    return Err(too_large(n));
                }
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE_INTEGER {
                    return Err(too_large(n));
                }
            } else if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= MAX_SAFE_INTEGER as f64
            {
                *v = if f < 0.0 { Value::from(f as i64) } else { Value::from(f as u64) };
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(json_integers),
        Value::Object(o) => o.iter_mut().try_for_each(|(k, x)| {
            let free_form = k == "json" && matches!(parent_key, Some("add" | "append" | "replace"));
            if free_form { Ok(()) } else { json_integers_in(x, Some(k)) }
        }),
        _ => Ok(()),
    }
}

/// An entity name given in a path or a body: the validator's name rule (plugin instance names
/// are free text, but not empty).
fn check_name(kind: Kind, id: &str) -> ApiResult<()> {
    if kind == Kind::Plugins && !id.is_empty() {
        return Ok(());
    }
    if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)) {
        return Ok(());
    }
    if kind == Kind::Plugins {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "name: must not be empty"));
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid",
        format!("{}: {id:?} must be 1-128 characters of letters, digits, '.', '_', '~', '-'", kind.id_field()),
    ))
}

/// An entity as it is stored: in its canonical form when it parses.
fn stored_form(kind: Kind, e: Value) -> Arc<doc::Entity> {
    doc::Entity::new(doc::canonical(kind, &e).unwrap_or(e))
}

async fn create(
    State(s): State<Arc<AdminState>>,
    Path(kind): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let kind = kind_of(&kind)?;
    let e = body_entity(&body)?;
    let id = doc::entity_id(kind, &e)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("{}: required", kind.id_field())))?;
    check_name(kind, &id)?;
    let (key, eid) = (kind.key(), id.clone());
    let ((), w) = s
        .write(format!("POST /{key}"), Some((kind, id.clone())), move |d, _| {
            let c = d.collection_mut(kind).ok_or_else(bad_doc)?;
            if c.iter().any(|x| doc::is_entity(kind, x, &eid)) {
                return Err(ApiError::new(StatusCode::CONFLICT, "conflict", format!("{key} {eid:?} already exists")));
            }
            c.push(stored_form(kind, e));
            Ok(())
        })
        .await?;
    let mut r = with_etag((StatusCode::CREATED, axum::Json(w.entity)).into_response(), w.etag.as_deref());
    // Names other than plugin instance names are unreserved URI characters already.
    let path: String = id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("/{key}/{path}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

async fn upsert(
    State(s): State<Arc<AdminState>>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let kind = kind_of(&kind)?;
    check_name(kind, &id)?;
    let mut e = body_entity(&body)?;
    if let Some(o) = e.as_object_mut() {
        // The path names the entity; a name in the body must agree with it.
        match o.get(kind.id_field()) {
            None => {
                o.insert(kind.id_field().into(), Value::String(id.clone()));
            }
            Some(Value::String(n)) if *n == id => {}
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("{}: must be the string {id:?} given in the path (or absent)", kind.id_field()),
                ));
            }
        }
    }
    let pre = Preconditions::from(&headers);
    let (key, eid) = (kind.key(), id.clone());
    let (created, w) = s
        .write(format!("PUT /{key}/{id}"), Some((kind, id.clone())), move |d, _| {
            let c = d.collection_mut(kind).ok_or_else(bad_doc)?;
            let what = format!("{key} {eid:?}");
            match c.iter_mut().find(|x| doc::is_entity(kind, x, &eid)) {
                Some(x) => {
                    pre.check(Some(&doc::etag(x)), &what)?;
                    // Secrets a GET left out mean "unchanged".
                    doc::keep_secrets(kind, &mut e, x);
                    *x = stored_form(kind, e);
                    Ok(false)
                }
                None => {
                    pre.check(None, &what)?;
                    c.push(stored_form(kind, e));
                    Ok(true)
                }
            }
        })
        .await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(with_etag((status, axum::Json(w.entity)).into_response(), w.etag.as_deref()))
}

async fn remove(
    State(s): State<Arc<AdminState>>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let kind = kind_of(&kind)?;
    let pre = Preconditions::from(&headers);
    let (key, eid) = (kind.key(), id.clone());
    s.write(format!("DELETE /{key}/{id}"), Some((kind, id.clone())), move |d, _| {
        let c = d.collection_mut(kind).ok_or_else(bad_doc)?;
        let what = format!("{key} {eid:?}");
        let Some(i) = c.iter().position(|x| doc::is_entity(kind, x, &eid)) else {
            return Err(ApiError::not_found(&what));
        };
        pre.check(Some(&doc::etag(&c[i])), &what)?;
        c.retain(|x| !doc::is_entity(kind, x, &eid));
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A page size: 1 to 1000, 100 when absent.
fn page_size(size: Option<usize>) -> ApiResult<usize> {
    match size.unwrap_or(100) {
        n @ 1..=1000 => Ok(n),
        _ => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "size: between 1 and 1000")),
    }
}

/// A query string or path the API cannot read: a JSON 400 like every other error.
fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string())
}

fn bad_doc() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the stored document is not an object")
}

/// What a write did.
struct Written {
    /// The entity written, as the API returns it (secrets removed), or null.
    entity: Value,
    /// Its `ETag` (entity writes), or the configuration's (whole-document writes).
    etag: Option<String>,
    /// The configuration version now current.
    version: u64,
    /// Its hash.
    hash: String,
}

impl AdminState {
    /// Apply `edit` to the latest stored document; validate, apply, store. `edit` gets the
    /// document and its hash (for preconditions on the whole configuration) and may refuse.
    /// `entity`: the entity the client sent (its errors are named by id; the answer carries it
    /// and its `ETag`). Runs in a task of its own, so a client that goes away cannot stop it
    /// between putting a configuration in service and storing it.
    async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        comment: String,
        entity: Option<(Kind, String)>,
        edit: impl FnOnce(&mut Doc, &str) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<(T, Written)> {
        let this = self.clone();
        tokio::spawn(async move { this.write_now(&comment, entity, edit).await })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("write task: {e}")))?
    }

    async fn write_now<T>(
        &self,
        comment: &str,
        entity: Option<(Kind, String)>,
        edit: impl FnOnce(&mut Doc, &str) -> ApiResult<T>,
    ) -> ApiResult<(T, Written)> {
        let Some(store) = &self.store else {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "read_only",
                "DB-less mode: the configuration file is the source of truth; edit it instead",
            ));
        };
        let _w = self.writer.lock().await;
        let mut txn = match store.begin().await {
            Ok(t) => t,
            Err(e) => {
                self.store_checked(Err(&e));
                return Err(ApiError::store(e));
            }
        };
        // Build on the latest stored version, whichever node wrote it.
        let (base, base_hash) = {
            let (v, h) = txn.base();
            (v, h.to_string())
        };
        let cur = self.snapshot();
        if base > 0 && (base != cur.version || base_hash != cur.hash) {
            let latest = match txn.latest().await {
                Ok(Some(v)) => v,
                Ok(None) => {
                    txn.abort().await;
                    return Err(ApiError::store(StoreError::Data(format!("version {base} disappeared"))));
                }
                Err(e) => {
                    self.store_checked(Err(&e));
                    return Err(ApiError::store(e));
                }
            };
            if let Err(e) = self.catch_up(&latest).await {
                txn.abort().await;
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!("stored configuration version {base} cannot be applied: {e}"),
                ));
            }
        }
        let cur = self.snapshot();
        let mut next = cur.doc.clone();
        let out = match edit(&mut next, &cur.hash) {
            Ok(o) => o,
            Err(e) => {
                txn.abort().await;
                return Err(e);
            }
        };
        if let Err(e) = doc::hash_secrets(&mut next) {
            txn.abort().await;
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", e));
        }
        let stored = entity.as_ref().and_then(|(k, id)| next.entities(*k).rev().find(|x| doc::is_entity(*k, x, id)));
        let (entity_out, entity_tag) = match (&entity, stored) {
            (Some((k, _)), Some(e)) => (doc::redact(*k, e.clone()), Some(doc::etag(e))),
            _ => (Value::Null, None),
        };
        let document = next.to_json();
        let hash = sha256_hex(&document);
        if hash == cur.hash {
            // Nothing changes: no new version.
            txn.abort().await;
            let etag = entity_tag.or_else(|| Some(config_etag(&cur.hash)));
            return Ok((out, Written { entity: entity_out, etag, version: cur.version, hash: cur.hash.clone() }));
        }
        let t0 = Instant::now();
        let previous = self.gw.config();
        let applied = match self.apply(&cur, &previous, &next, hash.clone(), true).await {
            Ok(a) => a,
            Err(e) => {
                txn.abort().await;
                return Err(if entity.is_some() { e.name_entities(&next) } else { e });
            }
        };
        let validated = applied.done.saturating_sub(applied.apply);
        match txn.commit(document, hash, comment.to_string()).await {
            Ok(v) => {
                tracing::info!(
                    version = v.version,
                    change = comment,
                    validate_ms = validated.as_secs_f64() * 1000.0,
                    apply_ms = applied.apply.as_secs_f64() * 1000.0,
                    store_ms = t0.elapsed().saturating_sub(applied.done).as_secs_f64() * 1000.0,
                    incremental = applied.incremental,
                    "configuration changed"
                );
                self.store_checked(Ok(()));
                let etag = entity_tag.or_else(|| Some(config_etag(&v.hash)));
                let written = Written { entity: entity_out, etag, version: v.version, hash: v.hash.clone() };
                self.publish(Current { tokens: tokens_of(&next), doc: next, version: v.version, hash: v.hash });
                Ok((out, written))
            }
            Err(e) => {
                if !matches!(e, StoreError::Conflict(_)) {
                    self.store_checked(Err(&e));
                }
                if let Err(r) = self.gw.reload((*previous).clone()).await {
                    tracing::error!(error = %r, "could not put the previous configuration back");
                }
                Err(ApiError::store(e))
            }
        }
    }

    /// Validate `next` and put it in service. A document that differs from the running one by
    /// one route is checked and compiled for that route only (same rules and messages); any
    /// other change validates and compiles the whole document; `keep_admin_token` refuses a
    /// document that would remove the last admin token (writes through this API). Returns when
    /// it finished, how long applying took and whether it was incremental.
    async fn apply(
        &self,
        cur: &Current,
        running: &gw_config::Config,
        next: &Doc,
        hash: String,
        keep_admin_token: bool,
    ) -> ApiResult<Applied> {
        let t0 = Instant::now();
        if let Some(diff) = doc::single_route_change(&cur.doc, next) {
            let parsed;
            let edit = match diff {
                doc::RouteDiff::Upsert(i, e) => {
                    parsed = gw_config::parse_route_value(e, i, "admin")?;
                    gw_config::RouteEdit::Upsert(&parsed)
                }
                doc::RouteDiff::Remove(name) => gw_config::RouteEdit::Remove(name),
            };
            match gw_config::edit_route(running, edit, hash.clone()) {
                Err(errs) => return Err(validation_errors(errs).into()),
                Ok(Some((config, change))) => {
                    let t1 = Instant::now();
                    self.gw
                        .apply_route_change(config, change)
                        .await
                        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))?;
                    return Ok(Applied::at(t0, t1, true));
                }
                Ok(None) => {}
            }
        }
        let config = self.compile(&next.to_value(), Some(hash))?;
        // A change that removes every admin token would lock the Admin API for good.
        if keep_admin_token && !cur.tokens.is_empty() && !tokens_of(next).iter().any(|(_, r)| *r == Role::Admin) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "gateway.admin.tokens: keep at least one admin token, or the Admin API would lock itself out",
            ));
        }
        let t1 = Instant::now();
        self.gw.reload(config).await.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))?;
        Ok(Applied::at(t0, t1, false))
    }
}

/// How a document was put in service.
struct Applied {
    /// Time from the start of validation to the end of applying.
    done: std::time::Duration,
    /// Time spent applying (compiling and swapping).
    apply: std::time::Duration,
    /// Only the changed route was validated and compiled.
    incremental: bool,
}

impl Applied {
    /// Both times from one reading of the clock, so that `apply <= done` always holds (two
    /// readings could be taken out of order by a preemption, and the subtraction overflowed).
    fn at(t0: Instant, t1: Instant, incremental: bool) -> Applied {
        let now = Instant::now();
        Applied { done: now.saturating_duration_since(t0), apply: now.saturating_duration_since(t1), incremental }
    }
}

// === the whole configuration ===

#[derive(Deserialize)]
struct ExportQuery {
    format: Option<String>,
}

async fn export_config(
    State(s): State<Arc<AdminState>>,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = q.map_err(bad_request)?;
    let cur = s.snapshot();
    let tag = config_etag(&cur.hash);
    match q.format.as_deref() {
        Some("yaml") => {
            let file = gw_config::parse_value(&cur.doc.to_value(), "admin")?;
            let text = gw_config::to_yaml(&file)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
            Ok(with_etag(([(header::CONTENT_TYPE, "application/yaml")], text).into_response(), Some(&tag)))
        }
        None | Some("json") => Ok(with_etag(
            axum::Json(json!({ "version": cur.version, "hash": cur.hash, "document": cur.doc })).into_response(),
            Some(&tag),
        )),
        Some(other) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("format: {other:?}: use json or yaml")))
        }
    }
}

/// The body of `PUT /config` as a document: YAML (the file format) with a YAML content type;
/// otherwise JSON, either the document itself or what `GET /config` returns (`{"version",
/// "hash", "document"}`: `version` and `hash` are informational, use `If-Match` to make the
/// import conditional).
fn imported_document(headers: &HeaderMap, body: &[u8]) -> ApiResult<Doc> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "body: not UTF-8"))?;
    let yaml = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("yaml"));
    // Nothing is taken from the gateway's environment: `${VAR}` is refused (docs/configuration.md).
    let file = if yaml {
        gw_config::parse_yaml_document(text, "import")?
    } else {
        let mut v: Value = serde_json::from_str(text)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("body: {e}")))?;
        json_integers(&mut v)?;
        let is_export = v.as_object().is_some_and(|o| {
            o.contains_key("document") && o.keys().all(|k| matches!(k.as_str(), "document" | "version" | "hash"))
        });
        if is_export {
            let bad = |k: &str| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!(
                        "{k}: {}",
                        match k {
                            "version" => "a version number, as GET /config gives it",
                            _ => "a hash, as GET /config gives it",
                        }
                    ),
                )
            };
            if v.get("version").is_some_and(|x| !x.is_u64()) {
                return Err(bad("version"));
            }
            if v.get("hash").is_some_and(|x| !x.is_string()) {
                return Err(bad("hash"));
            }
            gw_config::parse_value(&v["document"], "import").map_err(|mut e| {
                for x in &mut e.errors {
                    x.path = Some(x.path.take().map_or_else(|| "document".into(), |p| format!("document.{p}")));
                }
                e
            })?
        } else {
            gw_config::parse_value(&v, "import")?
        }
    };
    Ok(Doc::from_value(
        gw_config::to_document(&file).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))?,
    ))
}

fn config_written(w: &Written) -> Response {
    with_etag(axum::Json(json!({ "version": w.version, "hash": w.hash })).into_response(), w.etag.as_deref())
}

async fn import_config(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let doc = imported_document(&headers, &body)?;
    let pre = Preconditions::from(&headers);
    let ((), w) = s
        .write("import".into(), None, move |d, hash| {
            pre.check(Some(&config_etag(hash)), "the configuration")?;
            *d = doc;
            Ok(())
        })
        .await?;
    Ok(config_written(&w))
}

#[derive(Deserialize)]
struct HistoryQuery {
    size: Option<usize>,
}

async fn history(
    State(s): State<Arc<AdminState>>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = q.map_err(bad_request)?;
    let size = page_size(q.size)?;
    let Some(store) = &s.store else {
        return Ok(axum::Json(json!({ "data": [] })).into_response());
    };
    let h = store.history(size).await.map_err(ApiError::store)?;
    Ok(axum::Json(json!({ "data": h })).into_response())
}

async fn rollback(
    State(s): State<Arc<AdminState>>,
    version: Result<Path<u64>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Path(version) = version.map_err(bad_request)?;
    let Some(store) = &s.store else {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "read_only", "DB-less mode has no history"));
    };
    let v = store
        .get(version)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(&format!("version {version}")))?;
    let doc = Doc::from_value(
        serde_json::from_str(&v.document)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?,
    );
    let pre = Preconditions::from(&headers);
    let ((), w) = s
        .write(format!("rollback to {version}"), None, move |d, hash| {
            pre.check(Some(&config_etag(hash)), "the configuration")?;
            *d = doc;
            Ok(())
        })
        .await?;
    let body = json!({ "version": w.version, "hash": w.hash, "restored": version });
    Ok(with_etag(axum::Json(body).into_response(), w.etag.as_deref()))
}

async fn status(State(s): State<Arc<AdminState>>) -> ApiResult<Response> {
    let (version, hash) = {
        let cur = s.snapshot();
        (cur.version, cur.hash.clone())
    };
    // From the last check: never waits for the store.
    let (nodes, error) = match s.health.lock() {
        Ok(h) => (h.nodes.clone(), h.error.clone()),
        Err(_) => (Vec::new(), None),
    };
    let mut store = json!({
        "kind": s.store.as_ref().map_or("file", |st| st.kind()),
        "reachable": s.store_ok.load(std::sync::atomic::Ordering::Relaxed),
        "read_only": s.store.is_none(),
    });
    if let Some(e) = error {
        store["error"] = Value::String(e);
    }
    Ok(axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": s.node_id,
        "uptime_seconds": s.started.elapsed().as_secs(),
        "config": { "version": version, "hash": hash },
        "store": store,
        "connections": s.gw.connections(),
        "cluster": { "nodes": nodes },
    }))
    .into_response())
}

async fn openapi() -> Response {
    axum::Json(crate::openapi::document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Integers are read as the schema reads them, except inside free-form JSON values (the
    /// transformers' `json` fields), which are the user's data, kept exactly (found by the
    /// schemathesis run: a large integer to append to request bodies was refused).
    #[test]
    fn json_integers_leave_free_form_values_alone() {
        let mut v = serde_json::json!({
            "max_body_bytes": 8080.0,
            "config": {"append": {"json": {"big": 1_152_921_504_606_846_975_u64, "f": 1.0, "deep": [2.0]}},
                       "add": {"json": {"n": -1_152_921_504_606_846_975_i64}}, "minute": 5.0}
        });
        assert!(json_integers(&mut v).is_ok());
        assert_eq!(v["max_body_bytes"], serde_json::json!(8080));
        assert!(v["max_body_bytes"].is_u64());
        assert_eq!(v["config"]["minute"], serde_json::json!(5));
        assert_eq!(v["config"]["append"]["json"]["big"], serde_json::json!(1_152_921_504_606_846_975_u64));
        assert!(v["config"]["append"]["json"]["f"].is_f64(), "a float the user wrote stays a float");
        assert!(v["config"]["append"]["json"]["deep"][0].is_f64());
        assert!(json_integers(&mut serde_json::json!({"max_body_bytes": 1_152_921_504_606_846_975_u64})).is_err());
        assert!(json_integers(&mut serde_json::json!({"json": {"x": 1_152_921_504_606_846_975_u64}})).is_err());
    }

    /// What the incremental path gives for `next`: the configuration, or the errors; `None`
    /// when it declines (the whole document is validated instead).
    fn incremental(cur: &Doc, running: &gw_config::Config, next: &Doc) -> Option<Result<String, Vec<String>>> {
        let errs = |e: gw_config::LoadError| e.errors.iter().map(|x| format!("{:?}: {}", x.path, x.message)).collect();
        let diff = doc::single_route_change(cur, next)?;
        let parsed;
        let edit = match diff {
            doc::RouteDiff::Upsert(i, e) => match gw_config::parse_route_value(e, i, "admin") {
                Ok(r) => {
                    parsed = r;
                    gw_config::RouteEdit::Upsert(&parsed)
                }
                Err(e) => return Some(Err(errs(e))),
            },
            doc::RouteDiff::Remove(name) => gw_config::RouteEdit::Remove(name),
        };
        match gw_config::edit_route(running, edit, String::new()) {
            Ok(Some((c, _))) => Some(Ok(format!("{:?}\n{:?}", c.routes, c.plugins))),
            Ok(None) => None,
            Err(e) => Some(Err(errs(validation_errors(e)))),
        }
    }

    fn whole(next: &Value) -> Result<String, Vec<String>> {
        compile_doc(next, Some(String::new()))
            .map(|c| format!("{:?}\n{:?}", c.routes, c.plugins))
            .map_err(|e| e.errors.iter().map(|x| format!("{:?}: {}", x.path, x.message)).collect())
    }

    /// Error fields name entities by id where the id can stand in brackets.
    #[test]
    fn errors_name_entities() {
        let d = Doc::from_value(json!({
            "routes": [{ "name": "a" }, { "name": "" }, { "name": "x]y" }],
            "plugins": [{ "plugin": "cors", "route": "a" }]
        }));
        assert_eq!(by_name("routes[0].paths[1]", &d).as_deref(), Some("routes[a].paths[1]"));
        assert_eq!(by_name("routes[1].name", &d), None, "an empty name keeps the index");
        assert_eq!(by_name("routes[2].name", &d), None);
        assert_eq!(by_name("routes[9]", &d), None);
        assert_eq!(by_name("plugins[0].config", &d).as_deref(), Some("plugins[cors@route:a].config"));
        assert_eq!(by_name("gateway.admin", &d), None);
        let e = ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: "routes[0].paths[1]: bad".into(),
            errors: vec![json!({ "field": "routes[0].paths[1]", "message": "bad" })],
        }
        .name_entities(&d);
        assert_eq!(e.message, "routes[a].paths[1]: bad");
        assert_eq!(e.errors[0]["field"], "routes[a].paths[1]");
    }

    /// Every route edit the incremental path accepts gives exactly the configuration (or the
    /// errors) that validating the whole edited document gives.
    #[test]
    fn incremental_route_edits_match_whole_validation() {
        let mut cur = json!({
            "services": [{ "name": "a", "url": "http://127.0.0.1:1" }, { "name": "b", "url": "http://127.0.0.1:2" }],
            "routes": (0..12).map(|i| json!({ "name": format!("r{i}"), "service": "a", "paths": [format!("/r{i}/{{id}}")] })).collect::<Vec<_>>(),
            "plugins": [
                { "plugin": "cors", "route": "r3", "config": { "origins": ["*"] } },
                { "plugin": "cors", "route": "r9", "enabled": false, "config": { "origins": ["*"] } },
                { "plugin": "request-size-limiting", "route": "r7", "config": { "allowed_payload_size": 10 } },
            ],
        });
        let candidates = [
            json!({ "name": "X", "service": "b", "paths": ["/x/*"], "methods": ["GET"] }),
            json!({ "name": "X", "service": "nope", "paths": ["/x"] }),
            json!({ "name": "X", "service": "a", "paths": ["x-no-slash"] }),
            json!({ "name": "X", "service": "a", "paths": ["/x"], "pathz": [] }),
            json!({ "name": "X", "service": "a", "paths": "/x" }),
            json!({ "name": "X", "service": "a", "hosts": ["*.w.test"], "priority": 3, "strip_path": true }),
            json!({ "name": "X", "service": "a", "paths": ["/x/{id}"], "rewrite": "/y/{nope}" }),
            json!({ "name": "bad name!", "service": "a" }),
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut fast, mut declined) = (0, 0);
        for step in 0..200 {
            let running = compile_doc(&cur, Some(String::new())).unwrap();
            let mut next = cur.clone();
            let routes = next["routes"].as_array_mut().unwrap();
            let mut e = candidates[rnd(candidates.len())].clone();
            match rnd(3) {
                0 => {
                    let i = rnd(routes.len());
                    e["name"] = routes[i]["name"].clone();
                    routes[i] = e;
                }
                1 => {
                    e["name"] = json!(format!("n{step}"));
                    routes.push(e);
                }
                _ => {
                    routes.remove(rnd(routes.len()));
                }
            }
            let full = whole(&next);
            match incremental(&Doc::from_value(cur.clone()), &running, &Doc::from_value(next.clone())) {
                Some(got) => {
                    fast += 1;
                    assert_eq!(got, full, "step {step}");
                }
                None => declined += 1,
            }
            if full.is_ok() && next["routes"].as_array().unwrap().len() > 3 {
                cur = next;
            }
        }
        assert!(fast > 150, "the incremental path took {fast} of 200 edits ({declined} declined)");
        assert!(declined > 0, "removing a route a plugin names must be declined");
    }
}
