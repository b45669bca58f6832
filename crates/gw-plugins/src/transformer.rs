//! `request-transformer` and `response-transformer`: remove, rename, replace, add and append
//! headers, query parameters and top-level JSON body fields (in that order); rewrite the method
//! and path of requests. Values are templates (see `template`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use gw_config::plugins::{
    RemoveSpec, RenameSpec, RequestTransformer as ReqConf, ResponseTransformer as RespConf, ValueSpec,
};
use gw_core::{Ctx, Error, ErrorKind, Flow, Hooks, Plugin, RequestHead, ResponseHead, Result, priority};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use serde_json::Value;

use crate::template::Template;
use crate::util::header_name;

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

fn value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Apply header edits; templates see the headers as they were before the edits.
fn edit_headers(h: &mut HeaderMap, e: &Edits<Template>, query: Option<&str>, cx: &Ctx) {
    if e.is_empty() {
        return;
    }
    let before = h.clone();
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
            && let (Ok(n), Some(v)) = (HeaderName::from_bytes(n.as_bytes()), value(&t.render(&before, query, cx)))
        {
            h.insert(n, v);
        }
    }
    for (n, t) in &e.add {
        if !h.contains_key(n.as_str())
            && let (Ok(n), Some(v)) = (HeaderName::from_bytes(n.as_bytes()), value(&t.render(&before, query, cx)))
        {
            h.insert(n, v);
        }
    }
    for (n, t) in &e.append {
        if let (Ok(n), Some(v)) = (HeaderName::from_bytes(n.as_bytes()), value(&t.render(&before, query, cx))) {
            h.append(n, v);
        }
    }
}

/// Apply query edits to a raw query string; returns the new one.
fn edit_query(query: Option<&str>, headers: &HeaderMap, e: &Edits<Template>, cx: &Ctx) -> Option<String> {
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
            let v = t.render(headers, query, cx);
            pairs.retain(|(k, _)| k != n);
            pairs.push((n.clone(), v));
        }
    }
    for (n, t) in &e.add {
        if !pairs.iter().any(|(k, _)| k == n) {
            pairs.push((n.clone(), t.render(headers, query, cx)));
        }
    }
    for (n, t) in &e.append {
        pairs.push((n.clone(), t.render(headers, query, cx)));
    }
    if pairs.is_empty() {
        return None;
    }
    Some(form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish())
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        ct == "application/json" || ct.ends_with("+json")
    })
}

/// Apply JSON edits to a body holding a JSON object; other bodies are left alone.
fn edit_json(body: &mut Bytes, headers: &HeaderMap, query: Option<&str>, e: &Edits<JsonValue>, cx: &Ctx) {
    if e.is_empty() || !is_json(headers) {
        return;
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else { return };
    let render = |v: &JsonValue| match v {
        JsonValue::Template(t) => Value::String(t.render(headers, query, cx)),
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
    if let Ok(v) = serde_json::to_vec(&Value::Object(obj)) {
        *body = Bytes::from(v);
    }
}

// === request-transformer ===

pub(crate) struct RequestTransformer {
    edits: Compiled,
    method: Option<Method>,
    path: Option<Template>,
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
        })
    }
}

#[async_trait]
impl Plugin for RequestTransformer {
    fn name(&self) -> &'static str {
        "request-transformer"
    }

    fn priority(&self) -> i32 {
        priority::TRANSFORMER
    }

    fn hooks(&self) -> Hooks {
        if self.edits.json.is_empty() { Hooks::UPSTREAM_REQUEST } else { Hooks::UPSTREAM_REQUEST | Hooks::REQUEST_BODY }
    }

    async fn request_body(&self, req: &mut RequestHead, body: &mut Bytes, cx: &mut Ctx) -> Result<Flow> {
        edit_json(body, &req.headers, req.query(), &self.edits.json, cx);
        Ok(Flow::Continue)
    }

    async fn upstream_request(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let query = edit_query(req.query(), &req.headers, &self.edits.query, cx);
        let original_query = req.query().map(str::to_string);
        edit_headers(&mut req.headers, &self.edits.headers, original_query.as_deref(), cx);
        if let Some(p) = &self.path {
            let path = p.render(&req.headers, original_query.as_deref(), cx);
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
}

impl ResponseTransformer {
    pub(crate) fn new(c: &RespConf) -> Result<Self, String> {
        let empty = ValueSpec::default();
        let _ = &empty;
        Ok(ResponseTransformer { edits: compile(&c.remove, &c.rename, &c.replace, &c.add, &c.append)? })
    }
}

#[async_trait]
impl Plugin for ResponseTransformer {
    fn name(&self) -> &'static str {
        "response-transformer"
    }

    fn priority(&self) -> i32 {
        priority::TRANSFORMER
    }

    fn hooks(&self) -> Hooks {
        if self.edits.json.is_empty() {
            Hooks::UPSTREAM_RESPONSE
        } else {
            Hooks::UPSTREAM_RESPONSE | Hooks::RESPONSE_BODY
        }
    }

    async fn upstream_response(&self, resp: &mut ResponseHead, cx: &mut Ctx) -> Result<()> {
        edit_headers(&mut resp.headers, &self.edits.headers, None, cx);
        Ok(())
    }

    async fn response_body(&self, resp: &mut ResponseHead, body: &mut Bytes, cx: &mut Ctx) -> Result<()> {
        edit_json(body, &resp.headers, None, &self.edits.json, cx);
        Ok(())
    }
}

#[allow(dead_code)]
fn _assert_header_name(n: &str) -> Result<HeaderName, String> {
    header_name(n)
}
