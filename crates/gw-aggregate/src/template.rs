//! Templates of a call's path, query, header fields and JSON body.
//!
//! Text with `{reference}` insertions (`{{` and `}}` are literal braces). References:
//!
//! | reference | value |
//! | --- | --- |
//! | `{id}`, `{params.id}` | route path parameter `id` |
//! | `{query.page}` | first client query parameter `page`, decoded |
//! | `{headers.x-tenant}` | client request header field |
//! | `{request_id}`, `{consumer.username}` | the request id, the authenticated consumer |
//! | `{resp0.account.id}` | dotted path into the JSON response of call 0 (declaration order) |
//! | `{resp.user.account.id}` | the same, naming the call `user` |
//!
//! A reference to a response makes the call depend on that earlier call: it starts only when
//! that call has answered.

use serde_json::Value;

use crate::dotted::DottedPath;
use crate::request::ClientRequest;

/// Which call a response reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRef {
    /// By declaration index (`resp0`).
    Index(usize),
    /// By name (`resp.user`); resolved to an index when the plan is built.
    Name(String),
}

/// What a reference reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Route parameter.
    Param(String),
    /// Client query parameter.
    Query(String),
    /// Client header field (lowercase).
    Header(String),
    /// Request id.
    RequestId,
    /// Consumer user name.
    Consumer,
    /// A value of an earlier call's JSON response; `None` path = the whole response.
    Resp {
        /// The call.
        call: CallRef,
        /// Where in its response.
        path: Option<DottedPath>,
    },
}

impl Source {
    /// Whether the value comes from the client request.
    pub fn is_client(&self) -> bool {
        !matches!(self, Source::Resp { .. })
    }

    fn describe(&self) -> String {
        match self {
            Source::Param(n) => format!("path parameter {n:?}"),
            Source::Query(n) => format!("query parameter {n:?}"),
            Source::Header(n) => format!("header field {n:?}"),
            Source::RequestId => "the request id".into(),
            Source::Consumer => "the consumer".into(),
            Source::Resp { call, path } => {
                let c = match call {
                    CallRef::Index(i) => format!("resp{i}"),
                    CallRef::Name(n) => format!("resp.{n}"),
                };
                match path {
                    Some(p) => format!("{c}.{p}"),
                    None => c,
                }
            }
        }
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Lit(String),
    /// A reference.
    Ref(Source),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// How inserted values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One path segment: everything but unreserved characters percent-encoded (so `/`, `?`,
    /// `#`, `%` cannot change the path's structure).
    PathSegment,
    /// A query component: everything but unreserved characters percent-encoded.
    Query,
    /// As is (header field values; checked by the caller of `render`).
    Raw,
}

/// A value that could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// The value comes from the client request (the client's fault: 400) rather than from a
    /// backend response (that call fails).
    pub client: bool,
    /// What is wrong.
    pub message: String,
}

/// What templates read from: the client request and the JSON responses received so far.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The client request.
    pub client: &'a ClientRequest,
    /// Parsed JSON responses by call index (`None`: not (successfully) answered).
    pub responses: &'a [Option<Value>],
}

impl Scope<'_> {
    /// The value of a reference: `Ok(None)` when it is absent.
    fn lookup(&self, s: &Source) -> Result<Option<Value>, RenderError> {
        Ok(match s {
            Source::Param(n) => self.client.param(n).map(|v| Value::String(v.to_string())),
            Source::Query(n) => self.client.query_param(n).map(Value::String),
            Source::Header(n) => self.client.header(n).map(Value::String),
            Source::RequestId => self.client.request_id.clone().map(Value::String),
            Source::Consumer => self.client.consumer.clone().map(Value::String),
            Source::Resp { call, path } => {
                let CallRef::Index(i) = call else {
                    return Err(RenderError { client: false, message: format!("unresolved {}", s.describe()) });
                };
                let Some(Some(resp)) = self.responses.get(*i) else {
                    return Err(RenderError { client: false, message: format!("{} has no response", s.describe()) });
                };
                match path {
                    None => Some(resp.clone()),
                    Some(p) => p.get(resp).filter(|v| !v.is_null()).cloned(),
                }
            }
        })
    }
}

const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn is_ident(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_ref(t: &str, raw: &str) -> Result<Source, String> {
    let bad = || {
        format!(
            "{t:?}: unknown reference {{{raw}}}; use {{name}} or {{params.<name>}}, {{query.<name>}}, {{headers.<name>}}, {{request_id}}, {{consumer.username}}, {{resp<N>.<path>}} or {{resp.<call>.<path>}}"
        )
    };
    if raw == "request_id" {
        return Ok(Source::RequestId);
    }
    if raw == "consumer.username" {
        return Ok(Source::Consumer);
    }
    if let Some(n) = raw.strip_prefix("params.") {
        return if is_ident(n) { Ok(Source::Param(n.to_string())) } else { Err(bad()) };
    }
    if let Some(n) = raw.strip_prefix("query.") {
        return if n.is_empty() { Err(bad()) } else { Ok(Source::Query(n.to_string())) };
    }
    if let Some(n) = raw.strip_prefix("headers.") {
        return match http::HeaderName::from_bytes(n.as_bytes()) {
            Ok(h) => Ok(Source::Header(h.as_str().to_string())),
            Err(_) => Err(format!("{t:?}: {n:?} is not a header field name")),
        };
    }
    if let Some(rest) = raw.strip_prefix("resp.") {
        let (name, path) = rest.split_once('.').map_or((rest, None), |(n, p)| (n, Some(p)));
        if name.is_empty() {
            return Err(bad());
        }
        let path = path.map(|p| DottedPath::parse(p, false)).transpose().map_err(|e| format!("{t:?}: {e}"))?;
        return Ok(Source::Resp { call: CallRef::Name(name.to_string()), path });
    }
    if let Some(rest) = raw.strip_prefix("resp") {
        let (num, path) = rest.split_once('.').map_or((rest, None), |(n, p)| (n, Some(p)));
        if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
            let i = num.parse().map_err(|_| bad())?;
            let path = path.map(|p| DottedPath::parse(p, false)).transpose().map_err(|e| format!("{t:?}: {e}"))?;
            return Ok(Source::Resp { call: CallRef::Index(i), path });
        }
    }
    // `{respx}` is more likely a mistyped response reference than a parameter: spell it
    // `{params.respx}`.
    if is_ident(raw) && !raw.contains('-') && !raw.starts_with("resp") {
        return Ok(Source::Param(raw.to_string()));
    }
    Err(bad())
}

impl Template {
    /// Parse a template.
    pub fn parse(t: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = t;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let c = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if after.as_bytes().first() == Some(&c) {
                lit.push(c as char);
                rest = &after[1..];
                continue;
            }
            if c == b'}' {
                return Err(format!("{t:?}: unmatched '}}' (write '}}}}' for a literal brace)"));
            }
            let end = after.find('}').ok_or_else(|| format!("{t:?}: unclosed '{{'"))?;
            let raw = after[..end].trim();
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Ref(parse_ref(t, raw)?));
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template { pieces })
    }

    /// The pieces.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The references.
    pub fn refs(&self) -> impl Iterator<Item = &Source> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Ref(s) => Some(s),
            Piece::Lit(_) => None,
        })
    }

    /// Resolve `resp.<name>` references to indexes with `index_of`; the unknown name on failure.
    pub fn resolve(&mut self, index_of: &impl Fn(&str) -> Option<usize>) -> Result<(), String> {
        for p in &mut self.pieces {
            if let Piece::Ref(Source::Resp { call, .. }) = p
                && let CallRef::Name(n) = call
            {
                *call = CallRef::Index(index_of(n).ok_or_else(|| n.clone())?);
            }
        }
        Ok(())
    }

    /// The template is one reference and nothing else.
    pub fn single_ref(&self) -> Option<&Source> {
        match self.pieces.as_slice() {
            [Piece::Ref(s)] => Some(s),
            _ => None,
        }
    }

    /// Render. `Ok(None)` when a client value is absent and `missing_client_ok` (the caller
    /// then omits the query parameter or header field); an absent value is otherwise an error.
    pub fn render(
        &self,
        scope: &Scope<'_>,
        enc: Encoding,
        missing_client_ok: bool,
    ) -> Result<Option<String>, RenderError> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => out.push_str(l),
                Piece::Ref(s) => {
                    let text = match scope.lookup(s)? {
                        Some(Value::String(v)) => v,
                        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                        Some(_) => {
                            return Err(RenderError {
                                client: s.is_client(),
                                message: format!("{} is an object or array, not a value", s.describe()),
                            });
                        }
                        None if missing_client_ok && s.is_client() => return Ok(None),
                        None => {
                            return Err(RenderError {
                                client: s.is_client(),
                                message: format!("{} is missing", s.describe()),
                            });
                        }
                    };
                    match enc {
                        Encoding::PathSegment | Encoding::Query => {
                            out.extend(percent_encoding::utf8_percent_encode(&text, UNRESERVED));
                        }
                        Encoding::Raw => out.push_str(&text),
                    }
                }
            }
        }
        Ok(Some(out))
    }
}

/// A JSON body template: strings are templates; a string that is exactly one reference takes
/// the referenced value with its JSON type (`"{resp0.items}"` is an array).
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    /// A template string.
    Str(Template),
    /// Another value, as is.
    Lit(Value),
    /// An array.
    Array(Vec<JsonTemplate>),
    /// An object.
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    /// Parse every string of `v` as a template.
    pub fn parse(v: &Value) -> Result<JsonTemplate, String> {
        Ok(match v {
            Value::String(s) => JsonTemplate::Str(Template::parse(s)?),
            Value::Array(a) => JsonTemplate::Array(a.iter().map(JsonTemplate::parse).collect::<Result<_, _>>()?),
            Value::Object(o) => {
                JsonTemplate::Object(o.iter().map(|(k, v)| Ok((k.clone(), JsonTemplate::parse(v)?))).collect::<Result<
                    _,
                    String,
                >>(
                )?)
            }
            other => JsonTemplate::Lit(other.clone()),
        })
    }

    /// Every template inside.
    pub fn templates_mut(&mut self) -> Vec<&mut Template> {
        match self {
            JsonTemplate::Str(t) => vec![t],
            JsonTemplate::Lit(_) => vec![],
            JsonTemplate::Array(a) => a.iter_mut().flat_map(JsonTemplate::templates_mut).collect(),
            JsonTemplate::Object(o) => o.iter_mut().flat_map(|(_, v)| v.templates_mut()).collect(),
        }
    }

    /// Every template inside.
    pub fn templates(&self) -> Vec<&Template> {
        match self {
            JsonTemplate::Str(t) => vec![t],
            JsonTemplate::Lit(_) => vec![],
            JsonTemplate::Array(a) => a.iter().flat_map(JsonTemplate::templates).collect(),
            JsonTemplate::Object(o) => o.iter().flat_map(|(_, v)| v.templates()).collect(),
        }
    }

    /// Render; an absent client value becomes `null`, an absent response value is an error.
    pub fn render(&self, scope: &Scope<'_>) -> Result<Value, RenderError> {
        Ok(match self {
            JsonTemplate::Str(t) => match t.single_ref() {
                Some(s) => match scope.lookup(s)? {
                    Some(v) => v,
                    None if s.is_client() => Value::Null,
                    None => {
                        return Err(RenderError { client: false, message: format!("{} is missing", s.describe()) });
                    }
                },
                None => Value::String(t.render(scope, Encoding::Raw, false)?.unwrap_or_default()),
            },
            JsonTemplate::Lit(v) => v.clone(),
            JsonTemplate::Array(a) => Value::Array(a.iter().map(|t| t.render(scope)).collect::<Result<_, _>>()?),
            JsonTemplate::Object(o) => Value::Object(
                o.iter().map(|(k, t)| Ok((k.clone(), t.render(scope)?))).collect::<Result<_, RenderError>>()?,
            ),
        })
    }
}

/// Check a rendered path (before `?`) the way the gateway checks client paths: it starts with
/// `/` and has no dot segments (raw or percent-encoded), no backslash, no encoded NUL. Percent
/// escapes are normalised to upper case.
pub fn check_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    if path.contains('\\') {
        return Err(format!("path {path:?} contains a backslash"));
    }
    let mut out = String::with_capacity(path.len());
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = path.get(i + 1..i + 3).filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
            let Some(hex) = hex else {
                return Err(format!("path {path:?} has an invalid percent escape"));
            };
            out.push('%');
            out.push_str(&hex.to_ascii_uppercase());
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    let decoded_dots = out.replace("%2E", ".").replace("%5C", "\\");
    if out.contains("%00") {
        return Err(format!("path {path:?} contains an encoded NUL"));
    }
    if decoded_dots.contains('\\') {
        return Err(format!("path {path:?} contains an encoded backslash"));
    }
    if decoded_dots.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("path {path:?} contains a dot segment"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client() -> ClientRequest {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-tenant", http::HeaderValue::from_static("acme"));
        ClientRequest {
            params: vec![("id".into(), "42".into()), ("name".into(), "a/b c".into()), ("dots".into(), "..".into())],
            query: Some("page=2&q=caf%C3%A9+au+lait&empty=".into()),
            headers,
            request_id: Some("rid-1".into()),
            consumer: Some("ann".into()),
            ..ClientRequest::default()
        }
    }

    fn render(t: &str, responses: &[Option<Value>], enc: Encoding) -> Result<Option<String>, RenderError> {
        let c = client();
        Template::parse(t).unwrap_or_else(|e| panic!("{e}")).render(&Scope { client: &c, responses }, enc, true)
    }

    #[test]
    fn parses_every_reference_kind() {
        let t = Template::parse(
            "/u/{id}/{params.name}?p={query.page}&t={headers.X-Tenant}&r={request_id}&c={consumer.username}&a={resp0.account.id}&b={resp.user.items[1].id}&w={resp2}{{lit}}",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let refs: Vec<&Source> = t.refs().collect();
        assert_eq!(refs[0], &Source::Param("id".into()));
        assert_eq!(refs[1], &Source::Param("name".into()));
        assert_eq!(refs[2], &Source::Query("page".into()));
        assert_eq!(refs[3], &Source::Header("x-tenant".into()));
        assert_eq!(refs[4], &Source::RequestId);
        assert_eq!(refs[5], &Source::Consumer);
        assert!(matches!(refs[6], Source::Resp { call: CallRef::Index(0), path: Some(_) }));
        assert!(
            matches!(refs[7], Source::Resp { call: CallRef::Name(n), path: Some(p) } if n == "user" && p.to_string() == "items.1.id")
        );
        assert!(matches!(refs[8], Source::Resp { call: CallRef::Index(2), path: None }));
        assert!(matches!(t.pieces().last(), Some(Piece::Lit(l)) if l == "{lit}"));
    }

    #[test]
    fn refuses_bad_templates() {
        for (t, want) in [
            ("/a/{", "unclosed"),
            ("/a/}", "unmatched"),
            ("/{nope.x}", "unknown reference"),
            ("/{headers.bad header}", "not a header field name"),
            ("/{resp0..x}", "empty segment"),
            ("/{resp.}", "unknown reference"),
            ("/{respx}", "unknown reference"),
            ("/{resp0.items.*}", "only allowed"),
            ("/{}", "unknown reference"),
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn values_are_encoded_as_one_path_segment() {
        assert_eq!(
            render("/u/{name}/{id}", &[], Encoding::PathSegment).ok().flatten().as_deref(),
            Some("/u/a%2Fb%20c/42")
        );
        assert_eq!(render("{query.q}", &[], Encoding::Query).ok().flatten().as_deref(), Some("caf%C3%A9%20au%20lait"));
        assert_eq!(render("{headers.x-tenant}", &[], Encoding::Raw).ok().flatten().as_deref(), Some("acme"));
        // `..` stays `..` (unreserved) and is refused by the path check.
        let p = render("/u/{dots}", &[], Encoding::PathSegment).ok().flatten().unwrap_or_default();
        assert!(check_path(&p).unwrap_err().contains("dot segment"));
    }

    #[test]
    fn response_values_render_typed_and_missing_ones_fail() {
        let resps = vec![Some(json!({"account": {"id": 7, "ok": true, "tags": ["a"], "nil": null}}))];
        assert_eq!(
            render("{resp0.account.id}-{resp0.account.ok}", &resps, Encoding::Raw).ok().flatten().as_deref(),
            Some("7-true")
        );
        let e = render("{resp0.account.tags}", &resps, Encoding::Raw).unwrap_err();
        assert!(!e.client && e.message.contains("object or array"), "{e:?}");
        let e = render("{resp0.account.nil}", &resps, Encoding::Raw).unwrap_err();
        assert!(!e.client && e.message.contains("resp0.account.nil is missing"), "{e:?}");
        let e = render("{resp1.x}", &resps, Encoding::Raw).unwrap_err();
        assert!(e.message.contains("no response"), "{e:?}");
    }

    #[test]
    fn missing_client_values_are_omitted_or_refused() {
        assert_eq!(render("{query.nope}", &[], Encoding::Query), Ok(None));
        assert_eq!(render("{query.empty}", &[], Encoding::Query), Ok(Some(String::new())));
        let c = client();
        let t = Template::parse("/u/{missing}").unwrap_or_else(|e| panic!("{e}"));
        let e = t.render(&Scope { client: &c, responses: &[] }, Encoding::PathSegment, false).unwrap_err();
        assert!(e.client && e.message.contains("path parameter \"missing\" is missing"), "{e:?}");
    }

    #[test]
    fn json_body_templates_keep_types() {
        let c = client();
        let resps = vec![Some(json!({"items": [1, 2], "n": 3}))];
        let t = JsonTemplate::parse(&json!({
            "ids": "{resp0.items}", "n": "{resp0.n}", "text": "user {id} has {resp0.n}",
            "absent": "{query.none}", "fixed": [1, true, null]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let v = t.render(&Scope { client: &c, responses: &resps }).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            v,
            json!({"ids": [1, 2], "n": 3, "text": "user 42 has 3", "absent": null, "fixed": [1, true, null]})
        );
    }

    #[test]
    fn path_check_matches_the_gateways_client_path_rules() {
        assert_eq!(check_path("/a/%2fb").as_deref(), Ok("/a/%2Fb"));
        for bad in ["a", "/a/../b", "/a/./b", "/a/%2e%2E/b", "/a/.%2e", "/a\\b", "/a/%5c", "/a/%00", "/a/%zz", "/a/%2"]
        {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_path("/a/..b/.c/").is_ok());
    }
}
