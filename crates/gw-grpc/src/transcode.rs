//! REST/JSON to gRPC transcoding: match an HTTP request to a [`Binding`], build the protobuf
//! request from path variables, query parameters and the JSON body, and render responses
//! (whole, `response_body`, streamed as a JSON array or NDJSON, errors as `google.rpc.Status`).
//!
//! The JSON mapping is proto3's canonical one (prost-reflect): lowerCamelCase names on output
//! (proto names with `preserving_proto_field_name`), both accepted on input; 64-bit integers as
//! strings; enums by name (numbers accepted); bytes as base64; well-known types in their
//! special forms (Timestamp as RFC 3339, Duration as `"1.5s"`, wrappers as their value,
//! `Struct`/`Value` as JSON). Unknown JSON fields are refused with an error naming the field.

use base64::Engine as _;
use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
    Value,
};

use crate::rules::{Binding, BodyTarget, RuleError, RuleOptions, compile_rules, is_text_wkt, resolve_path};
use crate::status::Status;

/// How a server-streaming response is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamMode {
    /// One JSON array, `[` then each message as it arrives, `,` between them, `]` at the end
    /// (`application/json`).
    #[default]
    Array,
    /// One JSON document per line (`application/x-ndjson`).
    Ndjson,
}

/// Transcoding options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Methods and rules.
    pub rules: RuleOptions,
    /// Output JSON field names as in the `.proto` (`page_count`) instead of lowerCamelCase.
    pub preserving_proto_field_name: bool,
    /// Output fields that hold their default value (`0`, `""`, `[]`) instead of leaving them out.
    pub emit_unpopulated: bool,
    /// Output enums as numbers instead of names.
    pub enums_as_numbers: bool,
    /// Query parameters that name no field are left out instead of refused.
    pub ignore_unknown_query_parameters: bool,
    /// How server streaming is written.
    pub stream: StreamMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rules: RuleOptions::default(),
            preserving_proto_field_name: false,
            emit_unpopulated: false,
            enums_as_numbers: false,
            ignore_unknown_query_parameters: false,
            stream: StreamMode::Array,
        }
    }
}

/// A request cannot be transcoded: the client's fault, answered with 400 and this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// A response cannot be rendered: the upstream's fault (502).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ResponseError(pub String);

/// A matched request: the binding and the values of its path variables.
#[derive(Debug, Clone)]
pub struct Match<'a> {
    /// The binding.
    pub binding: &'a Binding,
    /// Path variable values, in the binding's order.
    pub vars: Vec<String>,
}

/// The compiled transcoder of one configuration (built at config load, shared by requests).
#[derive(Debug, Clone)]
pub struct Transcoder {
    pool: DescriptorPool,
    bindings: Vec<Binding>,
    opts: Options,
}

impl Transcoder {
    /// Compile the rules of `pool`.
    pub fn new(pool: DescriptorPool, opts: Options) -> Result<Transcoder, RuleError> {
        let bindings = compile_rules(&pool, &opts.rules)?;
        Ok(Transcoder { pool, bindings, opts })
    }

    /// The bindings.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The descriptor pool.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The binding of a request: the most specific template that matches (literal segments
    /// before `*`, before `**`; a verb before none). `None`: no rule matches.
    pub fn route(&self, method: &http::Method, path: &str) -> Option<Match<'_>> {
        let mut best: Option<(Match<'_>, (Vec<u8>, u8))> = None;
        for b in self.bindings.iter().filter(|b| b.http_method == *method) {
            if let Some(vars) = b.template.matches(path) {
                let spec = b.template.specificity();
                if best.as_ref().is_none_or(|(_, s)| spec < *s) {
                    best = Some((Match { binding: b, vars }, spec));
                }
            }
        }
        best.map(|(m, _)| m)
    }

    /// The HTTP methods with a rule matching `path` (for `405` and its `Allow`).
    pub fn allowed_methods(&self, path: &str) -> Vec<http::Method> {
        let mut v: Vec<http::Method> = Vec::new();
        for b in &self.bindings {
            if !v.contains(&b.http_method) && b.template.matches(path).is_some() {
                v.push(b.http_method.clone());
            }
        }
        v
    }

    /// Build the protobuf request message (not framed): the JSON body per the rule's `body`,
    /// then query parameters (fields not bound by the path or the body), then the path
    /// variables. `query` is the raw query string (without `?`).
    pub fn request_message(
        &self,
        m: &Match<'_>,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<DynamicMessage, RequestError> {
        let b = m.binding;
        let input = b.method.input();
        let mut msg = DynamicMessage::new(input.clone());
        let de = DeserializeOptions::new().deny_unknown_fields(true);
        let body_present = !body.iter().all(u8::is_ascii_whitespace);
        match &b.body {
            BodyTarget::None => {}
            BodyTarget::All if body_present => {
                msg = parse_json(&input, body, &de)?;
            }
            BodyTarget::Field(f) if body_present => {
                let v = parse_field_json(f, body, &de)?;
                msg.set_field(f, v);
            }
            _ => {}
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            self.apply_query(b, &mut msg, q)?;
        }
        for (fields, value) in b.path_fields.iter().zip(&m.vars) {
            let name = fields.iter().map(|f| f.name()).collect::<Vec<_>>().join(".");
            set_path(&mut msg, fields, value, false).map_err(|e| RequestError(format!("path variable {name}: {e}")))?;
        }
        Ok(msg)
    }

    /// [`Transcoder::request_message`] encoded as protobuf.
    pub fn request(&self, m: &Match<'_>, query: Option<&str>, body: &[u8]) -> Result<Bytes, RequestError> {
        Ok(Bytes::from(self.request_message(m, query, body)?.encode_to_vec()))
    }

    fn apply_query(&self, b: &Binding, msg: &mut DynamicMessage, query: &str) -> Result<(), RequestError> {
        let input = b.method.input();
        for (k, v) in form_pairs(query) {
            let key: Vec<String> = k.split('.').map(str::to_string).collect();
            let fields = match resolve_path(&input, &key) {
                Ok(f) => f,
                Err(_) if self.opts.ignore_unknown_query_parameters => continue,
                Err(e) => return Err(RequestError(format!("query parameter {k:?}: {e}"))),
            };
            if matches!(b.body, BodyTarget::All) {
                return Err(RequestError(format!(
                    "query parameter {k:?}: this method takes every field from the body"
                )));
            }
            if let BodyTarget::Field(f) = &b.body
                && fields[0] == *f
            {
                return Err(RequestError(format!("query parameter {k:?}: field {} is in the body", f.name())));
            }
            if b.path_fields.iter().any(|p| p.len() <= fields.len() && fields[..p.len()] == p[..]) {
                return Err(RequestError(format!("query parameter {k:?}: field is bound by the path")));
            }
            let leaf = &fields[fields.len() - 1];
            if !settable_leaf(leaf) {
                return Err(RequestError(format!(
                    "query parameter {k:?}: field {} cannot be set from a query parameter",
                    leaf.full_name()
                )));
            }
            set_path(msg, &fields, &v, true).map_err(|e| RequestError(format!("query parameter {k:?}: {e}")))?;
        }
        Ok(())
    }

    fn ser_options(&self) -> SerializeOptions {
        SerializeOptions::new()
            .use_proto_field_name(self.opts.preserving_proto_field_name)
            .skip_default_fields(!self.opts.emit_unpopulated)
            .use_enum_numbers(self.opts.enums_as_numbers)
    }

    /// Render one response message (protobuf bytes, unframed) as JSON, honouring the
    /// binding's `response_body`.
    pub fn response_json(&self, b: &Binding, message: &[u8]) -> Result<Vec<u8>, ResponseError> {
        let msg = DynamicMessage::decode(b.method.output(), message)
            .map_err(|e| ResponseError(format!("response of {} does not decode: {e}", b.method.full_name())))?;
        let opts = self.ser_options();
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        match &b.response_body {
            None => msg.serialize_with_options(&mut ser, &opts),
            Some(f) => match (msg.get_field(f).as_ref(), f.is_list() || f.is_map()) {
                (Value::Message(inner), false) => inner.serialize_with_options(&mut ser, &opts),
                _ => {
                    // A scalar, repeated or map field: the message's JSON, that field taken out
                    // (its default when absent: `[]`, `{}`, or the scalar's default).
                    let render = |m: &DynamicMessage, o: &SerializeOptions| {
                        serde_json::to_value(SerializeWith(m, o))
                            .map_err(|e| ResponseError(format!("response does not render: {e}")))
                    };
                    let key = if self.opts.preserving_proto_field_name { f.name() } else { f.json_name() };
                    let field = match render(&msg, &opts)?.get(key) {
                        Some(v) => v.clone(),
                        None if f.is_list() => serde_json::Value::Array(Vec::new()),
                        None if f.is_map() => serde_json::Value::Object(serde_json::Map::new()),
                        None => {
                            let empty = DynamicMessage::new(b.method.output());
                            render(&empty, &opts.clone().skip_default_fields(false))?
                                .get(key)
                                .cloned()
                                .unwrap_or(serde_json::Value::Null)
                        }
                    };
                    serde::Serialize::serialize(&field, &mut ser)
                }
            },
        }
        .map_err(|e: serde_json::Error| ResponseError(format!("response does not render: {e}")))?;
        Ok(out)
    }

    /// The JSON of a `google.protobuf.Any` detail: its message with `@type` when the type is in
    /// the descriptors (as canonical JSON: `{"@type": ..., "value": ...}` for the well-known
    /// types whose JSON is not an object), else `{"@type": ..., "value": "<base64>"}`.
    pub fn any_to_json(&self, any: &prost_types::Any) -> serde_json::Value {
        let name = any.type_url.rsplit('/').next().unwrap_or("");
        let rendered = self
            .pool
            .get_message_by_name(name)
            .and_then(|d| DynamicMessage::decode(d, any.value.as_slice()).ok())
            .and_then(|m| serde_json::to_value(SerializeWith(&m, &self.ser_options())).ok());
        match rendered {
            Some(serde_json::Value::Object(fields)) => {
                let mut o = serde_json::Map::new();
                o.insert("@type".into(), any.type_url.clone().into());
                o.extend(fields);
                serde_json::Value::Object(o)
            }
            Some(v) => serde_json::json!({"@type": any.type_url, "value": v}),
            None => serde_json::json!({
                "@type": any.type_url,
                "value": base64::engine::general_purpose::STANDARD.encode(&any.value),
            }),
        }
    }

    /// The HTTP status and JSON body of a failed call (`google.rpc.Status`).
    pub fn error_response(&self, status: &Status) -> (u16, Vec<u8>) {
        let body = status.to_json(|a| self.any_to_json(a));
        (status.http_status(), serde_json::to_vec(&body).unwrap_or_default())
    }

    /// A streaming encoder for a server-streaming binding.
    pub fn stream_encoder(&self) -> StreamEncoder {
        StreamEncoder::new(self.opts.stream)
    }

    /// The content type of a response of `b`.
    pub fn content_type(&self, b: &Binding) -> &'static str {
        if b.method.is_server_streaming() && self.opts.stream == StreamMode::Ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        }
    }
}

/// Serialize a message with options as a `serde::Serialize` value.
struct SerializeWith<'a>(&'a DynamicMessage, &'a SerializeOptions);

impl serde::Serialize for SerializeWith<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_with_options(s, self.1)
    }
}

fn json_error(e: &serde_json::Error) -> RequestError {
    RequestError(format!("invalid JSON body: {e}"))
}

fn parse_json(desc: &MessageDescriptor, body: &[u8], de: &DeserializeOptions) -> Result<DynamicMessage, RequestError> {
    let mut d = serde_json::Deserializer::from_slice(body);
    let m = DynamicMessage::deserialize_with_options(desc.clone(), &mut d, de).map_err(|e| json_error(&e))?;
    d.end().map_err(|e| json_error(&e))?;
    Ok(m)
}

/// The value of `f` from a JSON body holding only that field's value.
fn parse_field_json(f: &FieldDescriptor, body: &[u8], de: &DeserializeOptions) -> Result<Value, RequestError> {
    if let (Kind::Message(m), false, false) = (f.kind(), f.is_list(), f.is_map()) {
        return parse_json(&m, body, de).map(Value::Message);
    }
    // Another kind: read it as the only field of its message.
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    let parent = f.parent_message();
    let msg = DynamicMessage::deserialize_with_options(parent.clone(), serde_json::json!({ f.name(): v }), de)
        .map_err(|e: serde_json::Error| json_error(&e))?;
    Ok(msg.get_field(f).into_owned())
}

/// `a=1&b=x%20y&b=z` as decoded pairs (`+` is a space).
fn form_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let dec = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        (dec(k), dec(v))
    })
}

fn settable_leaf(f: &FieldDescriptor) -> bool {
    !f.is_map()
        && match f.kind() {
            Kind::Message(m) => is_text_wkt(&m),
            _ => true,
        }
}

/// Set the field at `path` from text, creating the messages on the way. `append`: a repeated
/// leaf gets the value added (query parameters may repeat); otherwise a repeated leaf is an
/// error (path variables are checked at load).
fn set_path(msg: &mut DynamicMessage, path: &[FieldDescriptor], text: &str, append: bool) -> Result<(), String> {
    let Some((leaf, parents)) = path.split_last() else { return Ok(()) };
    let mut cur = msg;
    for f in parents {
        let v = cur.get_field_mut(f);
        cur = match v {
            Value::Message(m) => m,
            _ => return Err(format!("field {} is not a message", f.full_name())),
        };
    }
    let value = scalar_from_text(leaf, text)?;
    if leaf.is_list() {
        if !append {
            return Err(format!("field {} is repeated", leaf.full_name()));
        }
        match cur.get_field_mut(leaf) {
            Value::List(l) => l.push(value),
            _ => return Err(format!("field {} is not a list", leaf.full_name())),
        }
    } else {
        cur.set_field(leaf, value);
    }
    Ok(())
}

/// The value of one (non-repeated) element of `f` from text.
fn scalar_from_text(f: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("{text:?} is not {what} (field {})", f.full_name());
    let float = |t: &str| -> Option<f64> {
        match t {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => t.parse::<f64>().ok().filter(|x| x.is_finite()),
        }
    };
    Ok(match f.kind() {
        Kind::Double => Value::F64(float(text).ok_or_else(|| bad("a number"))?),
        Kind::Float => Value::F32(float(text).ok_or_else(|| bad("a number"))? as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(text.parse().map_err(|_| bad("a 32-bit integer"))?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(text.parse().map_err(|_| bad("a 64-bit integer"))?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| bad("an unsigned 32-bit integer"))?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| bad("an unsigned 64-bit integer"))?),
        Kind::Bool => Value::Bool(match text {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(bad("true or false")),
        }),
        Kind::String => Value::String(text.to_string()),
        Kind::Bytes => {
            let t = text.trim_end_matches('=');
            let v = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(t)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
                .map_err(|_| bad("base64"))?;
            Value::Bytes(Bytes::from(v))
        }
        Kind::Enum(e) => {
            let n = match e.get_value_by_name(text) {
                Some(v) => v.number(),
                None => text
                    .parse::<i32>()
                    .ok()
                    .filter(|n| e.get_value(*n).is_some())
                    .ok_or_else(|| bad(&format!("a value of enum {}", e.full_name())))?,
            };
            Value::EnumNumber(n)
        }
        Kind::Message(m) => {
            if let Some(inner) = m.get_field_by_name("value").filter(|_| m.full_name().ends_with("Value")) {
                // A wrapper: the wrapped scalar.
                let mut w = DynamicMessage::new(m.clone());
                w.set_field(&inner, scalar_from_text(&inner, text)?);
                Value::Message(w)
            } else {
                // Timestamp, Duration, FieldMask: their JSON string form.
                let v = DynamicMessage::deserialize(m.clone(), serde_json::Value::String(text.to_string()))
                    .map_err(|e| format!("{text:?}: {e} (field {})", f.full_name()))?;
                Value::Message(v)
            }
        }
    })
}

/// Writes a server stream of JSON messages as one JSON array or as NDJSON, message by
/// message (nothing is held back).
#[derive(Debug)]
pub struct StreamEncoder {
    mode: StreamMode,
    count: u64,
    done: bool,
}

impl StreamEncoder {
    /// A new stream.
    pub fn new(mode: StreamMode) -> Self {
        StreamEncoder { mode, count: 0, done: false }
    }

    /// Messages written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The bytes for one message (its JSON).
    pub fn message(&mut self, json: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(json.len() + 2);
        match self.mode {
            StreamMode::Array => {
                out.push(if self.count == 0 { b'[' } else { b',' });
                out.extend_from_slice(json);
            }
            StreamMode::Ndjson => {
                out.extend_from_slice(json);
                out.push(b'\n');
            }
        }
        self.count += 1;
        Bytes::from(out)
    }

    /// The bytes that end the stream. A failed stream (its status is not OK) gets a last
    /// element `{"error": <google.rpc.Status JSON>}` (the HTTP status was sent with the first
    /// message and cannot change).
    pub fn end(&mut self, error: Option<&serde_json::Value>) -> Bytes {
        if self.done {
            return Bytes::new();
        }
        self.done = true;
        let err = error.map(|e| serde_json::to_vec(&serde_json::json!({ "error": e })).unwrap_or_default());
        let mut out = Vec::new();
        match self.mode {
            StreamMode::Array => {
                out.push(if self.count == 0 { b'[' } else { b',' });
                match err {
                    Some(e) => out.extend_from_slice(&e),
                    None if self.count > 0 => {
                        out.pop();
                    }
                    None => {}
                }
                out.push(b']');
            }
            StreamMode::Ndjson => {
                if let Some(e) = err {
                    out.extend_from_slice(&e);
                    out.push(b'\n');
                }
            }
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor;
    use std::path::{Path, PathBuf};

    fn pool() -> DescriptorPool {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway/tests/proto");
        descriptor::compile(&[PathBuf::from("bookstore/v1/bookstore.proto")], &[dir]).unwrap()
    }

    fn tc(f: impl FnOnce(&mut Options)) -> Transcoder {
        let mut o = Options::default();
        f(&mut o);
        Transcoder::new(pool(), o).unwrap()
    }

    /// The request message as canonical JSON (proto names), for assertions.
    fn req(t: &Transcoder, method: &http::Method, path: &str, query: Option<&str>, body: &str) -> serde_json::Value {
        let m = t.route(method, path).unwrap_or_else(|| panic!("no route for {method} {path}"));
        let msg = t.request_message(&m, query, body.as_bytes()).unwrap();
        serde_json::to_value(SerializeWith(&msg, &SerializeOptions::new().use_proto_field_name(true))).unwrap()
    }

    fn req_err(t: &Transcoder, method: &http::Method, path: &str, query: Option<&str>, body: &str) -> String {
        let m = t.route(method, path).unwrap();
        t.request_message(&m, query, body.as_bytes()).unwrap_err().0
    }

    /// Routing picks the binding of the method and path; the most specific template wins.
    #[test]
    fn routes() {
        let t = tc(|_| {});
        let name = |m: http::Method, p: &str| t.route(&m, p).map(|m| m.binding.method.name().to_string());
        assert_eq!(name(http::Method::GET, "/v1/shelves").as_deref(), Some("ListShelves"));
        assert_eq!(name(http::Method::POST, "/v1/shelves").as_deref(), Some("CreateShelf"));
        assert_eq!(name(http::Method::GET, "/v1/shelves/3").as_deref(), Some("GetShelf"));
        assert_eq!(name(http::Method::DELETE, "/v1/shelves/3").as_deref(), Some("DeleteShelf"));
        assert_eq!(name(http::Method::GET, "/v1/shelves/3/books").as_deref(), Some("ListBooks"));
        assert_eq!(name(http::Method::GET, "/v1/shelves/3/books/9").as_deref(), Some("GetBook"));
        assert_eq!(name(http::Method::GET, "/v1/books/x/y").as_deref(), Some("GetBook"));
        assert_eq!(name(http::Method::GET, "/v1/shelves/3/books:stream").as_deref(), Some("StreamBooks"));
        assert_eq!(name(http::Method::POST, "/v1/shelves/3/books/9:move").as_deref(), Some("MoveBook"));
        assert_eq!(name(http::Method::PUT, "/v1/shelves/3"), None);
        assert_eq!(name(http::Method::GET, "/v2/shelves"), None);
        assert_eq!(t.allowed_methods("/v1/shelves/3"), vec![http::Method::GET, http::Method::DELETE]);
    }

    /// Path variables, nested ones included, fill the request; a number variable is parsed.
    #[test]
    fn path_variables() {
        let t = tc(|_| {});
        assert_eq!(req(&t, &http::Method::GET, "/v1/shelves/42", None, ""), serde_json::json!({"shelf": "42"}));
        assert_eq!(
            req(&t, &http::Method::GET, "/v1/shelves/1/books/2", None, ""),
            serde_json::json!({"name": "shelves/1/books/2"})
        );
        assert_eq!(
            req(&t, &http::Method::PATCH, "/v1/shelves/1/books/2", None, r#"{"title": "T", "name": "ignored"}"#),
            serde_json::json!({"book": {"name": "shelves/1/books/2", "title": "T"}})
        );
        assert!(
            req_err(&t, &http::Method::GET, "/v1/shelves/abc", None, "")
                .contains("path variable shelf: \"abc\" is not a 64-bit integer")
        );
    }

    /// `body: "field"` fills that field; `body: "*"` the message; empty bodies are empty
    /// messages; unknown JSON fields are refused naming the field; bad JSON says where.
    #[test]
    fn bodies() {
        let t = tc(|_| {});
        assert_eq!(
            req(&t, &http::Method::POST, "/v1/shelves", None, r#"{"theme": "Sci-Fi", "bookCount": 3}"#),
            serde_json::json!({"shelf": {"theme": "Sci-Fi", "book_count": 3}})
        );
        assert_eq!(
            req(&t, &http::Method::POST, "/v1/shelves/1/books/2:move", None, r#"{"other_shelf_id": "7"}"#),
            serde_json::json!({"name": "shelves/1/books/2", "other_shelf_id": "7"})
        );
        assert_eq!(req(&t, &http::Method::POST, "/v1/shelves", None, " "), serde_json::json!({}));
        let e = req_err(&t, &http::Method::POST, "/v1/shelves", None, r#"{"theme": "x", "colour": "red"}"#);
        assert!(e.contains("unrecognized field name 'colour'"), "{e}");
        let e = req_err(&t, &http::Method::POST, "/v1/shelves", None, r#"{"theme": "x""#);
        assert!(e.starts_with("invalid JSON body") && e.contains("line 1"), "{e}");
        let e = req_err(&t, &http::Method::POST, "/v1/shelves", None, r#"{"theme": 5}"#);
        assert!(e.starts_with("invalid JSON body"), "{e}");
        let e = req_err(&t, &http::Method::POST, "/v1/shelves", None, r#"{} {}"#);
        assert!(e.contains("trailing"), "{e}");
    }

    /// Query parameters fill nested and repeated fields, enums by name or number, and refuse
    /// unknown names (unless ignored), fields in the body and fields bound by the path.
    #[test]
    fn query_parameters() {
        let t = tc(|_| {});
        assert_eq!(
            req(
                &t,
                &http::Method::GET,
                "/v1/shelves/5/books",
                Some(
                    "page_size=10&filter.author=Le+Guin&filter.genres=FICTION&filter.genres=2&tags=a&tags=b%26c&pageSize=11"
                ),
                ""
            ),
            serde_json::json!({
                "shelf": "5", "page_size": 11,
                "filter": {"author": "Le Guin", "genres": ["FICTION", "HISTORY"]},
                "tags": ["a", "b&c"]
            })
        );
        let e = req_err(&t, &http::Method::GET, "/v1/shelves/5/books", Some("nope=1"), "");
        assert!(e.contains("query parameter \"nope\": no field \"nope\""), "{e}");
        let e = req_err(&t, &http::Method::GET, "/v1/shelves/5/books", Some("filter.genres=POETRY"), "");
        assert!(e.contains("not a value of enum bookstore.v1.Genre"), "{e}");
        let e = req_err(&t, &http::Method::GET, "/v1/shelves/5/books", Some("shelf=6"), "");
        assert!(e.contains("bound by the path"), "{e}");
        let e = req_err(&t, &http::Method::GET, "/v1/shelves/5/books", Some("filter=x"), "");
        assert!(e.contains("cannot be set from a query parameter"), "{e}");
        let e = req_err(&t, &http::Method::POST, "/v1/shelves", Some("shelf.theme=x"), "{}");
        assert!(e.contains("field shelf is in the body"), "{e}");
        let e = req_err(&t, &http::Method::POST, "/v1/echo", Some("i32=1"), "{}");
        assert!(e.contains("takes every field from the body"), "{e}");
        let t = tc(|o| o.ignore_unknown_query_parameters = true);
        assert_eq!(req(&t, &http::Method::GET, "/v1/shelves/5", Some("nope=1"), ""), serde_json::json!({"shelf": "5"}));
    }

    /// The canonical JSON mapping of every kind of field, both ways, and the naming options.
    #[test]
    fn json_mapping_of_every_kind() {
        let t = tc(|_| {});
        let body = r#"{"i32": 1, "i64": "-9007199254740993", "u64": "18446744073709551615", "dbl": "NaN",
            "flag": true, "raw": "AAEC", "genre": "SCIENCE", "many": ["1", 2], "counts": {"a": 1},
            "at": "2024-01-02T03:04:05.5Z", "maybe": "12", "nested": {"pageCount": "3", "genre": 1},
            "text": "t", "snakeCaseName": "s"}"#;
        let m = t.route(&http::Method::POST, "/v1/echo").unwrap();
        let bytes = t.request(&m, None, body.as_bytes()).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&t.response_json(m.binding, &bytes).unwrap()).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"i32": 1, "i64": "-9007199254740993", "u64": "18446744073709551615", "dbl": "NaN",
                "flag": true, "raw": "AAEC", "genre": "SCIENCE", "many": ["1", "2"], "counts": {"a": 1},
                "at": "2024-01-02T03:04:05.500Z", "maybe": "12", "nested": {"pageCount": "3", "genre": "FICTION"},
                "text": "t", "snakeCaseName": "s"})
        );
        let t = tc(|o| {
            o.preserving_proto_field_name = true;
            o.enums_as_numbers = true;
        });
        let out: serde_json::Value = serde_json::from_slice(&t.response_json(m.binding, &bytes).unwrap()).unwrap();
        assert_eq!(out["snake_case_name"], "s");
        assert_eq!(out["genre"], 3);
        let t = tc(|o| o.emit_unpopulated = true);
        let out: serde_json::Value = serde_json::from_slice(&t.response_json(m.binding, &[]).unwrap()).unwrap();
        assert_eq!(out["i32"], 0);
        assert_eq!(out["many"], serde_json::json!([]));
        let e = t.response_json(m.binding, b"\xff\xff").unwrap_err();
        assert!(e.0.contains("does not decode"), "{e}");
    }

    /// `response_body` renders only that field (a repeated one as an array, even when empty).
    #[test]
    fn response_body_field() {
        let t = tc(|_| {});
        let m = t.route(&http::Method::GET, "/v1/shelves/1/books").unwrap();
        let out_desc = m.binding.method.output();
        let mut resp = DynamicMessage::new(out_desc.clone());
        let mut book = DynamicMessage::new(pool().get_message_by_name("bookstore.v1.Book").unwrap());
        book.set_field_by_name("title", Value::String("Dune".into()));
        resp.set_field_by_name("books", Value::List(vec![Value::Message(book)]));
        resp.set_field_by_name("next_page_token", Value::String("n".into()));
        let out = t.response_json(m.binding, &resp.encode_to_vec()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"[{"title":"Dune"}]"#);
        let out = t.response_json(m.binding, &[]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "[]");
    }

    /// Errors: HTTP status by Google's mapping, google.rpc.Status JSON with details rendered
    /// from the descriptors (unknown types as base64).
    #[test]
    fn error_bodies() {
        let t = tc(|_| {});
        let p = pool();
        let mut br = DynamicMessage::new(p.get_message_by_name("google.rpc.BadRequest").unwrap());
        let fv_desc = p.get_message_by_name("google.rpc.BadRequest.FieldViolation").unwrap();
        let mut fv = DynamicMessage::new(fv_desc);
        fv.set_field_by_name("field", Value::String("shelf".into()));
        fv.set_field_by_name("description", Value::String("must be positive".into()));
        br.set_field_by_name("field_violations", Value::List(vec![Value::Message(fv)]));
        let mut s = Status::new(crate::status::Code::InvalidArgument, "bad shelf");
        s.details.push(prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
            value: br.encode_to_vec(),
        });
        s.details.push(prost_types::Any { type_url: "type.googleapis.com/x.Unknown".into(), value: vec![1, 2] });
        let (code, body) = t.error_response(&s);
        assert_eq!(code, 400);
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"code": 3, "message": "bad shelf", "details": [
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": "shelf", "description": "must be positive"}]},
                {"@type": "type.googleapis.com/x.Unknown", "value": "AQI="}
            ]})
        );
    }

    /// Streams: a JSON array written element by element, or NDJSON; an error ends either.
    #[test]
    fn stream_encoders() {
        let mut a = StreamEncoder::new(StreamMode::Array);
        let mut out = Vec::new();
        for m in [r#"{"a":1}"#, r#"{"a":2}"#] {
            out.extend_from_slice(&a.message(m.as_bytes()));
        }
        out.extend_from_slice(&a.end(None));
        assert_eq!(String::from_utf8(out.clone()).unwrap(), r#"[{"a":1},{"a":2}]"#);
        assert_eq!(a.end(None), Bytes::new());
        let mut e = StreamEncoder::new(StreamMode::Array);
        assert_eq!(e.end(None), Bytes::from_static(b"[]"));
        let err = serde_json::json!({"code": 13, "message": "x"});
        let mut e = StreamEncoder::new(StreamMode::Array);
        let mut out = e.message(b"1").to_vec();
        out.extend_from_slice(&e.end(Some(&err)));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!([1, {"error": {"code": 13, "message": "x"}}]));
        let mut n = StreamEncoder::new(StreamMode::Ndjson);
        let mut out = n.message(b"{}").to_vec();
        out.extend_from_slice(&n.message(b"[]"));
        out.extend_from_slice(&n.end(Some(&err)));
        assert_eq!(String::from_utf8(out).unwrap(), "{}\n[]\n{\"error\":{\"code\":13,\"message\":\"x\"}}\n");
        let t = tc(|o| o.stream = StreamMode::Ndjson);
        let m = t.route(&http::Method::GET, "/v1/shelves/1/books:stream").unwrap();
        assert_eq!(t.content_type(m.binding), "application/x-ndjson");
        let m = t.route(&http::Method::GET, "/v1/shelves/1").unwrap();
        assert_eq!(t.content_type(m.binding), "application/json");
    }

    /// Query values of the well-known types and scalars parse per their JSON forms.
    #[test]
    fn scalar_texts() {
        let p = pool();
        let kinds = p.get_message_by_name("bookstore.v1.Kinds").unwrap();
        let f = |n: &str| kinds.get_field_by_name(n).unwrap();
        assert_eq!(scalar_from_text(&f("flag"), "true").unwrap(), Value::Bool(true));
        assert!(scalar_from_text(&f("flag"), "yes").is_err());
        assert_eq!(scalar_from_text(&f("raw"), "AAE").unwrap(), Value::Bytes(Bytes::from_static(&[0, 1])));
        assert_eq!(scalar_from_text(&f("raw"), "_-8=").unwrap(), Value::Bytes(Bytes::from_static(&[0xff, 0xef])));
        assert_eq!(scalar_from_text(&f("dbl"), "-Infinity").unwrap(), Value::F64(f64::NEG_INFINITY));
        assert!(scalar_from_text(&f("dbl"), "inf").is_err());
        assert!(scalar_from_text(&f("u64"), "-1").is_err());
        assert!(matches!(scalar_from_text(&f("at"), "2024-01-01T00:00:00Z").unwrap(), Value::Message(_)));
        assert!(scalar_from_text(&f("at"), "yesterday").is_err());
        let Value::Message(w) = scalar_from_text(&f("maybe"), "5").unwrap() else { panic!() };
        assert_eq!(w.get_field_by_name("value").unwrap().as_i64(), Some(5));
    }
}
