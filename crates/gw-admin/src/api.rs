//! The Admin API: REST CRUD over the entities of the configuration document, whole-document
//! import/export, history and rollback, status, and its own OpenAPI document.
//!
//! Every write builds a new document, parses and validates it with the file loader's rules
//! (400 with the failing field), applies it to the data plane (compiled off the request path,
//! swapped atomically), then appends it to the store. If the store refuses, the previous
//! configuration is put back and the client gets 503: what runs is always what is stored.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::doc::{self, Doc, Kind};
use crate::store::{ConfigStore, sha256_hex};

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

/// Shared state of the Admin API.
pub struct AdminState {
    pub(crate) gw: gw_proxy::Gateway,
    pub(crate) store: Option<Arc<dyn ConfigStore>>,
    /// The running document: readers take a snapshot and never wait for a write in progress.
    pub(crate) current: std::sync::RwLock<Arc<Current>>,
    /// Serializes writes (validate, apply, store).
    pub(crate) writer: Mutex<()>,
    pub(crate) node_id: String,
    pub(crate) started: Instant,
    pub(crate) store_ok: std::sync::atomic::AtomicBool,
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
        })
    }

    /// Apply a document written elsewhere (another node, via the store). Invalid documents are
    /// logged and skipped; the current configuration keeps serving.
    pub async fn apply_from_store(&self, v: &crate::store::Version) -> Result<(), String> {
        let _w = self.writer.lock().await;
        let cur = self.snapshot();
        if v.version <= cur.version {
            return Ok(());
        }
        let value: Value = serde_json::from_str(&v.document).map_err(|e| e.to_string())?;
        let doc = Doc::from_value(value);
        // A one-route change made on another node is applied incrementally here too.
        let running = self.gw.config();
        let applied = self.apply(&cur, &running, &doc, v.hash.clone(), false).await.map_err(|e| e.message)?;
        tracing::info!(
            version = v.version,
            apply_ms = applied.apply.as_secs_f64() * 1000.0,
            incremental = applied.incremental,
            "configuration changed by another node"
        );
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

    /// The running document (a cheap pointer copy).
    pub(crate) fn snapshot(&self) -> Arc<Current> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn publish(&self, c: Current) {
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(c);
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
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), errors: Vec::new() }
    }
    fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
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
        .route("/{kind}", get(list).post(create))
        .route("/{kind}/{id}", get(read).put(upsert).delete(remove))
        .fallback(|| async { ApiError::not_found("endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

async fn auth(State(s): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    // The OpenAPI document is public (it describes the API, not the configuration).
    if req.uri().path() == "/openapi.json" {
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

#[derive(Deserialize)]
struct ListQuery {
    offset: Option<usize>,
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
    let offset = q.offset.unwrap_or(0);
    let tags: Vec<&str> =
        q.tags.as_deref().map(|t| t.split(',').filter(|x| !x.is_empty()).collect()).unwrap_or_default();
    let cur = s.snapshot();
    let all: Vec<Value> = cur.doc.entities(kind).filter(|e| doc::has_tags(e, &tags)).cloned().collect();
    let total = all.len();
    let data: Vec<Value> = all.into_iter().skip(offset).take(size).map(|e| doc::redact(kind, e)).collect();
    let next = (offset + data.len() < total).then_some(offset + data.len());
    Ok(axum::Json(json!({ "data": data, "total": total, "offset": offset, "next": next })).into_response())
}

async fn read(State(s): State<Arc<AdminState>>, Path((kind, id)): Path<(String, String)>) -> ApiResult<Response> {
    let kind = kind_of(&kind)?;
    let cur = s.snapshot();
    let e = cur
        .doc
        .entities(kind)
        .find(|e| doc::is_entity(kind, e, &id))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&format!("{} {id:?}", kind.key())))?;
    Ok(axum::Json(doc::redact(kind, e)).into_response())
}

fn body_entity(body: &[u8]) -> ApiResult<Value> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "body: expected a JSON object"));
    }
    Ok(v)
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
    let out = s
        .write(&format!("POST /{}", kind.key()), Some((kind, &id)), |d| {
            let c = d.collection_mut(kind).ok_or_else(bad_doc)?;
            if c.iter().any(|x| doc::is_entity(kind, x, &id)) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("{} {id:?} already exists", kind.key()),
                ));
            }
            c.push(doc::Entity::new(e.clone()));
            Ok(())
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

async fn upsert(
    State(s): State<Arc<AdminState>>,
    Path((kind, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let kind = kind_of(&kind)?;
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
    let mut created = false;
    let out = s
        .write(&format!("PUT /{}/{id}", kind.key()), Some((kind, &id)), |d| {
            let c = d.collection_mut(kind).ok_or_else(bad_doc)?;
            match c.iter_mut().find(|x| doc::is_entity(kind, x, &id)) {
                Some(x) => *x = doc::Entity::new(e.clone()),
                None => {
                    created = true;
                    c.push(doc::Entity::new(e.clone()));
                }
            }
            Ok(())
        })
        .await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(out)).into_response())
}

async fn remove(State(s): State<Arc<AdminState>>, Path((kind, id)): Path<(String, String)>) -> ApiResult<Response> {
    let kind = kind_of(&kind)?;
    s.write(&format!("DELETE /{}/{id}", kind.key()), None, |d| {
        let c = d.collection_mut(kind).ok_or_else(bad_doc)?;
        let before = c.len();
        c.retain(|x| !doc::is_entity(kind, x, &id));
        if c.len() == before {
            return Err(ApiError::not_found(&format!("{} {id:?}", kind.key())));
        }
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

fn entity_after(kind: Kind, d: &Doc, id: &str) -> Value {
    // From the end: a created entity is the last one.
    d.entities(kind).rev().find(|x| doc::is_entity(kind, x, id)).cloned().map_or(Value::Null, |e| doc::redact(kind, e))
}

impl AdminState {
    /// Apply `edit` to a copy of the document; validate, apply, store. Returns the new document.
    /// Apply `edit` to a copy of the document; validate, apply, store. Returns the entity
    /// `(kind, id)` as stored (redacted), or null.
    async fn write(
        &self,
        comment: &str,
        entity: Option<(Kind, &str)>,
        edit: impl FnOnce(&mut Doc) -> ApiResult<()>,
    ) -> ApiResult<Value> {
        let Some(store) = &self.store else {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "read_only",
                "DB-less mode: the configuration file is the source of truth; edit it instead",
            ));
        };
        let _w = self.writer.lock().await;
        let cur = self.snapshot();
        let mut next = cur.doc.clone();
        edit(&mut next)?;
        doc::hash_secrets(&mut next).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))?;
        let out = entity.map_or(Value::Null, |(k, id)| entity_after(k, &next, id));
        self.commit(&cur, store, next, comment).await?;
        Ok(out)
    }

    async fn commit(&self, cur: &Current, store: &Arc<dyn ConfigStore>, next: Doc, comment: &str) -> ApiResult<()> {
        let t0 = Instant::now();
        let document = next.to_json();
        let hash = sha256_hex(&document);
        let previous = self.gw.config();
        let applied = self.apply(cur, &previous, &next, hash.clone(), true).await?;
        let validated = applied.done - applied.apply;
        match store.commit_hashed(document, hash, comment.to_string()).await {
            Ok(v) => {
                tracing::info!(
                    version = v.version,
                    change = comment,
                    validate_ms = validated.as_secs_f64() * 1000.0,
                    apply_ms = applied.apply.as_secs_f64() * 1000.0,
                    store_ms = (t0.elapsed() - applied.done).as_secs_f64() * 1000.0,
                    incremental = applied.incremental,
                    "configuration changed"
                );
                self.store_ok.store(true, std::sync::atomic::Ordering::Relaxed);
                self.publish(Current { tokens: tokens_of(&next), doc: next, version: v.version, hash: v.hash });
                Ok(())
            }
            Err(e) => {
                self.store_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                let _ = self.gw.reload((*previous).clone()).await;
                Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()))
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
                    return Ok(Applied { done: t0.elapsed(), apply: t1.elapsed(), incremental: true });
                }
                Ok(None) => {}
            }
        }
        let config = compile_doc(&next.to_value(), Some(hash))?;
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
        Ok(Applied { done: t0.elapsed(), apply: t1.elapsed(), incremental: false })
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
    match q.format.as_deref() {
        Some("yaml") => {
            let file = gw_config::parse_value(&cur.doc.to_value(), "admin")?;
            let text = gw_config::to_yaml(&file)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
            Ok(([(header::CONTENT_TYPE, "application/yaml")], text).into_response())
        }
        None | Some("json") => {
            Ok(axum::Json(json!({ "version": cur.version, "hash": cur.hash, "document": cur.doc })).into_response())
        }
        Some(other) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("format: {other:?}: use json or yaml")))
        }
    }
}

async fn import_config(
    State(s): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid", "body: not UTF-8"))?;
    let yaml = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.contains("yaml"));
    // Nothing is taken from the gateway's environment: `${VAR}` is refused (docs/configuration.md).
    let file =
        if yaml { gw_config::parse_yaml_document(text, "import")? } else { gw_config::parse_json(text, "import")? };
    let doc = Doc::from_value(
        gw_config::to_document(&file).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))?,
    );
    s.write("import", None, |d| {
        *d = doc;
        Ok(())
    })
    .await?;
    let cur = s.snapshot();
    Ok(axum::Json(json!({ "version": cur.version, "hash": cur.hash })).into_response())
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
    let h = store
        .history(size)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()))?;
    Ok(axum::Json(json!({ "data": h })).into_response())
}

async fn rollback(State(s): State<Arc<AdminState>>, version: Result<Path<u64>, PathRejection>) -> ApiResult<Response> {
    let Path(version) = version.map_err(bad_request)?;
    let Some(store) = &s.store else {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "read_only", "DB-less mode has no history"));
    };
    let v = store
        .get(version)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string()))?
        .ok_or_else(|| ApiError::not_found(&format!("version {version}")))?;
    let doc = Doc::from_value(
        serde_json::from_str(&v.document)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?,
    );
    s.write(&format!("rollback to {version}"), None, |d| {
        *d = doc;
        Ok(())
    })
    .await?;
    let cur = s.snapshot();
    Ok(axum::Json(json!({ "version": cur.version, "hash": cur.hash, "restored": version })).into_response())
}

async fn status(State(s): State<Arc<AdminState>>) -> ApiResult<Response> {
    let (version, hash) = {
        let cur = s.snapshot();
        (cur.version, cur.hash.clone())
    };
    let nodes = match &s.store {
        Some(st) => st.nodes().await.unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": s.node_id,
        "uptime_seconds": s.started.elapsed().as_secs(),
        "config": { "version": version, "hash": hash },
        "store": {
            "kind": s.store.as_ref().map_or("file", |st| st.kind()),
            "reachable": s.store_ok.load(std::sync::atomic::Ordering::Relaxed),
            "read_only": s.store.is_none(),
        },
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
