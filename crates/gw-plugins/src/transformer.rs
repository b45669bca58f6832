//! `request-transformer` and `response-transformer`: remove, rename, replace, add and append
//! headers, query parameters and top-level JSON body fields (in that order); rewrite the method
//! and path of requests. Values are templates (see `template`).
//!
//! JSON edits apply to bodies declared JSON (`application/json`, `*+json`); only those are
//! buffered, others stream. A declared JSON body that cannot be edited (invalid JSON, nesting
//! deeper than 127, a number out of range, a lone surrogate, not an object) is refused (request:
//! 400 `invalid_json_body`; response: 502 `response_not_editable`) unless `invalid_json: pass`:
//! it never goes on silently unedited.

use std::collections::BTreeMap;

use bytes::Bytes;
use gw_config::plugins::{
    InvalidJson, RemoveSpec, RenameSpec, RequestTransformer as ReqConf, ResponseTransformer as RespConf, ValueSpec,
};
use gw_core::{Ctx, Error, ErrorKind, Flow, Hooks, Plugin, Reply, RequestHead, ResponseHead, Result, priority};
use http::header::{ACCEPT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::template::{Sources, Template};

/// Compiled edits of one kind of data (headers, query or JSON).
struct Edits<V> {
    remove: Vec<String>,
    rename: Vec<(String, String)>,
    replace: Vec<(String, V)>,
    add: Vec<(String, V)>,
    append: Vec<(String, V)>,
}

impl<V> Edits<V> {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }
}

/// A JSON value whose strings are templates.
enum JsonValue {
    Template(Template),
    Literal(Value),
}

struct Compiled {
    headers: Edits<Template>,
    query: Edits<Template>,
    json: Edits<JsonValue>,
}

fn templates(m: &BTreeMap<String, String>) -> Result<Vec<(String, Template)>, String> {
    m.iter().map(|(k, v)| Ok((k.clone(), Template::parse(v)?))).collect()
}

fn json_values(m: &BTreeMap<String, Value>) -> Result<Vec<(String, JsonValue)>, String> {
    m.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                match v {
                    Value::String(s) => JsonValue::Template(Template::parse(s)?),
                    other => JsonValue::Literal(other.clone()),
                },
            ))
        })
        .collect()
}

fn compile(
    remove: &RemoveSpec,
    rename: &RenameSpec,
    replace: &ValueSpec,
    add: &ValueSpec,
    append: &ValueSpec,
) -> Result<Compiled, String> {
    let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
    let lower_pairs = |m: &BTreeMap<String, String>| {
        m.iter().map(|(a, b)| (a.to_ascii_lowercase(), b.to_ascii_lowercase())).collect()
    };
    let lower_keys = |v: Vec<(String, Template)>| v.into_iter().map(|(k, t)| (k.to_ascii_lowercase(), t)).collect();
    Ok(Compiled {
        headers: Edits {
            remove: lower(&remove.headers),
            rename: lower_pairs(&rename.headers),
            replace: lower_keys(templates(&replace.headers)?),
            add: lower_keys(templates(&add.headers)?),
            append: lower_keys(templates(&append.headers)?),
        },
        query: Edits {
            remove: remove.querystring.clone(),
            rename: rename.querystring.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            replace: templates(&replace.querystring)?,
            add: templates(&add.querystring)?,
            append: templates(&append.querystring)?,
        },
        json: Edits {
            remove: remove.json.clone(),
            rename: rename.json.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            replace: json_values(&replace.json)?,
            add: json_values(&add.json)?,
            append: json_values(&append.json)?,
        },
    })
}

/// Apply header edits; templates see the headers as they were before the edits (`before`).
fn edit_headers(h: &mut HeaderMap, e: &Edits<Template>, src: &Sources<'_>, cx: &Ctx) {
    let value = |t: &Template| HeaderValue::from_bytes(&t.render_bytes(src, cx)).ok();
    for n in &e.remove {
        h.remove(n.as_str());
    }
    for (from, to) in &e.rename {
        let vals: Vec<HeaderValue> = h.get_all(from.as_str()).iter().cloned().collect();
        if vals.is_empty() {
            continue;
        }
        h.remove(from.as_str());
        if let Ok(to) = HeaderName::from_bytes(to.as_bytes()) {
            for v in vals {
                h.append(to.clone(), v);
            }
        }
    }
    for (n, t) in &e.replace {
        if h.contains_key(n.as_str())
            && let (Ok(n), Some(v)) = (HeaderName::from_bytes(n.as_bytes()), value(t))
        {
            h.insert(n, v);
        }
    }
    for (n, t) in &e.add {
        if !h.contains_key(n.as_str())
            && let (Ok(n), Some(v)) = (HeaderName::from_bytes(n.as_bytes()), value(t))
        {
            h.insert(n, v);
        }
    }
    for (n, t) in &e.append {
        if let (Ok(n), Some(v)) = (HeaderName::from_bytes(n.as_bytes()), value(t)) {
            h.append(n, v);
        }
    }
}

/// Apply query edits to a raw query string; returns the new one.
fn edit_query(query: Option<&str>, e: &Edits<Template>, src: &Sources<'_>, cx: &Ctx) -> Option<String> {
    if e.is_empty() {
        return query.map(str::to_string);
    }
    let mut pairs: Vec<(String, String)> = crate::util::query_pairs(query);
    pairs.retain(|(k, _)| !e.remove.contains(k));
    for (from, to) in &e.rename {
        for p in pairs.iter_mut().filter(|(k, _)| k == from) {
            p.0 = to.clone();
        }
    }
    for (n, t) in &e.replace {
        if pairs.iter().any(|(k, _)| k == n) {
            let v = t.render(src, cx);
            pairs.retain(|(k, _)| k != n);
            pairs.push((n.clone(), v));
        }
    }
    for (n, t) in &e.add {
        if !pairs.iter().any(|(k, _)| k == n) {
            pairs.push((n.clone(), t.render(src, cx)));
        }
    }
    for (n, t) in &e.append {
        pairs.push((n.clone(), t.render(src, cx)));
    }
    if pairs.is_empty() {
        return None;
    }
    Some(form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish())
}

/// Whether the message is declared JSON: any `Content-Type` field naming `application/json` or
/// a `+json` type (a second field cannot hide a JSON body from the edits).
fn is_json(h: &HeaderMap) -> bool {
    h.get_all(CONTENT_TYPE).iter().any(|v| {
        let ct = String::from_utf8_lossy(v.as_bytes());
        let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        ct == "application/json" || ct.ends_with("+json")
    })
}

/// Apply JSON edits to a body holding a JSON object. `Err` says why the body cannot be edited.
fn edit_json(body: &mut Bytes, e: &Edits<JsonValue>, src: &Sources<'_>, cx: &Ctx) -> std::result::Result<(), String> {
    let mut obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err("the JSON body is not an object".into()),
        Err(e) => return Err(format!("the body is not JSON the gateway can edit: {e}")),
    };
    let render = |v: &JsonValue| match v {
        JsonValue::Template(t) => Value::String(t.render(src, cx)),
        JsonValue::Literal(l) => l.clone(),
    };
    for n in &e.remove {
        obj.remove(n);
    }
    for (from, to) in &e.rename {
        if let Some(v) = obj.remove(from) {
            obj.insert(to.clone(), v);
        }
    }
    for (n, v) in &e.replace {
        if obj.contains_key(n) {
            obj.insert(n.clone(), render(v));
        }
    }
    for (n, v) in &e.add {
        if !obj.contains_key(n) {
            obj.insert(n.clone(), render(v));
        }
    }
    for (n, v) in &e.append {
        let new = render(v);
        match obj.remove(n) {
            None => {
                obj.insert(n.clone(), new);
            }
            Some(Value::Array(mut a)) => {
                a.push(new);
                obj.insert(n.clone(), Value::Array(a));
            }
            Some(old) => {
                obj.insert(n.clone(), Value::Array(vec![old, new]));
            }
        }
    }
    let v = serde_json::to_vec(&Value::Object(obj)).map_err(|e| format!("re-encoding the JSON body: {e}"))?;
    *body = Bytes::from(v);
    Ok(())
}

/// Header names whose value describes the consumer (`$(consumer.*)`) in `add` and `append`:
/// identity fields, which no client may send itself.
fn consumer_headers(e: &Edits<Template>) -> Vec<HeaderName> {
    e.add
        .iter()
        .chain(&e.append)
        .filter(|(_, t)| t.uses_consumer())
        .filter_map(|(n, _)| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}

// === request-transformer ===

pub(crate) struct RequestTransformer {
    edits: Compiled,
    method: Option<Method>,
    path: Option<Template>,
    pass_invalid: bool,
}

impl RequestTransformer {
    pub(crate) fn new(c: &ReqConf) -> Result<Self, String> {
        Ok(RequestTransformer {
            edits: compile(&c.remove, &c.rename, &c.replace, &c.add, &c.append)?,
            method: c
                .http_method
                .as_deref()
                .map(|m| Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string()))
                .transpose()?,
            path: c.path.as_deref().map(Template::parse).transpose()?,
            pass_invalid: c.invalid_json == InvalidJson::Pass,
        })
    }
}

#[gw_core::plugin]
impl Plugin for RequestTransformer {
    fn name(&self) -> &'static str {
        "request-transformer"
    }

    fn priority(&self) -> i32 {
        priority::TRANSFORMER
    }

    fn inactive(&self) -> Hooks {
        if self.edits.json.is_empty() { Hooks::REQUEST_BODY } else { Hooks::NONE }
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        consumer_headers(&self.edits.headers)
    }

    /// Only bodies declared JSON are buffered (and an empty body has nothing to edit).
    fn wants_request_body(&self, req: &RequestHead, cx: &Ctx) -> bool {
        !self.edits.json.is_empty() && cx.has_body && is_json(&req.headers)
    }

    async fn request_body(&self, req: &mut RequestHead, body: &mut Bytes, cx: &mut Ctx) -> Result<Flow> {
        if body.is_empty() {
            return Ok(Flow::Continue);
        }
        let src = Sources { headers: &req.headers, request_headers: &req.headers, query: req.query() };
        if let Err(why) = edit_json(body, &self.edits.json, &src, cx)
            && !self.pass_invalid
        {
            return Ok(Flow::Respond(Reply::error(StatusCode::BAD_REQUEST, "invalid_json_body", &why)));
        }
        Ok(Flow::Continue)
    }

    async fn upstream_request(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        // Templates see the request as it was before these edits.
        let before = req.headers.clone();
        let original_query = req.query().map(str::to_string);
        let src = Sources { headers: &before, request_headers: &before, query: original_query.as_deref() };
        let query = edit_query(original_query.as_deref(), &self.edits.query, &src, cx);
        if !self.edits.headers.is_empty() {
            edit_headers(&mut req.headers, &self.edits.headers, &src, cx);
        }
        if let Some(p) = &self.path {
            // Values are encoded; the pipeline checks the result like a client path.
            let path = p.render_path(&src, cx);
            req.set_path(&path)
                .map_err(|e| Error::new(ErrorKind::BadRequest, "rewritten path is invalid").with_cause(e))?;
        }
        if query.as_deref() != original_query.as_deref() {
            req.set_query(query.as_deref())
                .map_err(|e| Error::new(ErrorKind::BadRequest, "rewritten query is invalid").with_cause(e))?;
        }
        if let Some(m) = &self.method {
            req.method = m.clone();
        }
        Ok(Flow::Continue)
    }
}

// === response-transformer ===

pub(crate) struct ResponseTransformer {
    edits: Compiled,
    pass_invalid: bool,
    /// Request headers the templates read (`$(request_headers.x)`), and whether they read the
    /// query: captured in the access phase.
    request_headers: Vec<HeaderName>,
    reads_request: bool,
}

/// What the response templates read of the request, captured in the access phase.
#[derive(Clone)]
struct RequestData {
    headers: HeaderMap,
    query: Option<String>,
}

impl ResponseTransformer {
    pub(crate) fn new(c: &RespConf) -> Result<Self, String> {
        let edits = compile(&c.remove, &c.rename, &c.replace, &c.add, &c.append)?;
        let mut names = Vec::new();
        let mut reads_request = false;
        let mut visit = |t: &Template| {
            reads_request |= t.reads_request();
            t.request_refs(&mut names);
        };
        let e = &edits;
        for (_, t) in e.headers.replace.iter().chain(&e.headers.add).chain(&e.headers.append) {
            visit(t);
        }
        for (_, v) in e.json.replace.iter().chain(&e.json.add).chain(&e.json.append) {
            if let JsonValue::Template(t) = v {
                visit(t);
            }
        }
        let request_headers = names
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|e| format!("{n:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(ResponseTransformer {
            edits,
            pass_invalid: c.invalid_json == InvalidJson::Pass,
            request_headers,
            reads_request,
        })
    }
}

/// `$(headers.x)` is the response's; `$(request_headers.x)` and `$(query.x)` the request's, as
/// captured in the access phase.
fn response_sources<'a>(resp: &'a HeaderMap, req: Option<&'a RequestData>, empty: &'a HeaderMap) -> Sources<'a> {
    Sources {
        headers: resp,
        request_headers: req.map_or(empty, |r| &r.headers),
        query: req.and_then(|r| r.query.as_deref()),
    }
}

#[gw_core::plugin]
impl Plugin for ResponseTransformer {
    fn name(&self) -> &'static str {
        "response-transformer"
    }

    fn priority(&self) -> i32 {
        priority::TRANSFORMER
    }

    fn inactive(&self) -> Hooks {
        let mut off = Hooks::NONE;
        if self.edits.json.is_empty() {
            off = off | Hooks::UPSTREAM_REQUEST | Hooks::RESPONSE_BODY;
        }
        if !self.reads_request {
            off = off | Hooks::ACCESS;
        }
        off
    }

    /// Keep what the templates read of the request (the client's request after
    /// authentication, before the request-transformer's edits).
    async fn access(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let mut headers = HeaderMap::new();
        for n in &self.request_headers {
            for v in req.headers.get_all(n) {
                headers.append(n.clone(), v.clone());
            }
        }
        cx.vars.insert(RequestData { headers, query: req.query().map(str::to_string) });
        Ok(Flow::Continue)
    }

    /// JSON edits need the body as JSON text: ask the upstream not to compress it.
    async fn upstream_request(&self, req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
        req.headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        Ok(Flow::Continue)
    }

    async fn upstream_response(&self, resp: &mut ResponseHead, cx: &mut Ctx) -> Result<Flow> {
        if self.edits.headers.is_empty() {
            return Ok(Flow::Continue);
        }
        let before = resp.headers.clone();
        let empty = HeaderMap::new();
        let data = cx.vars.get::<RequestData>().cloned();
        let src = response_sources(&before, data.as_ref(), &empty);
        edit_headers(&mut resp.headers, &self.edits.headers, &src, cx);
        Ok(Flow::Continue)
    }

    /// Only bodies declared JSON are buffered.
    fn wants_response_body(&self, resp: &ResponseHead, _cx: &Ctx) -> bool {
        !self.edits.json.is_empty() && is_json(&resp.headers)
    }

    async fn response_body(&self, resp: &mut ResponseHead, body: &mut Bytes, cx: &mut Ctx) -> Result<()> {
        if body.is_empty() {
            return Ok(());
        }
        let empty = HeaderMap::new();
        let data = cx.vars.get::<RequestData>().cloned();
        let src = response_sources(&resp.headers, data.as_ref(), &empty);
        match edit_json(body, &self.edits.json, &src, cx) {
            Err(why) if !self.pass_invalid => Err(Error::new(ErrorKind::ResponseNotEditable, why)),
            _ => Ok(()),
        }
    }
}
