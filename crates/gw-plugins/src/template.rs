//! Value templates of the transformers: literal text with `$(...)` references, parsed once.
//!
//! Values are taken as bytes (a header value that is not ASCII or not UTF-8 is kept as it is in
//! a header, and converted lossily to text elsewhere). In a path, every value is percent-encoded
//! (see [`Template::render_path`]).

use gw_core::Ctx;
use http::HeaderMap;
use percent_encoding::{AsciiSet, CONTROLS, percent_encode};

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    /// `$(headers.x)`: the message being transformed (request, or response).
    Header(String),
    /// `$(request_headers.x)`: the request.
    RequestHeader(String),
    /// `$(query.x)`: the request's query.
    Query(String),
    Param(String),
    ConsumerUsername,
    ConsumerCustomId,
    RouteName,
    ServiceName,
    RequestId,
    ClientIp,
}

/// What `$(headers.*)`, `$(request_headers.*)` and `$(query.*)` read.
pub(crate) struct Sources<'a> {
    /// The headers of the message being transformed (the request in request-transformer, the
    /// response in response-transformer).
    pub(crate) headers: &'a HeaderMap,
    /// The request's headers.
    pub(crate) request_headers: &'a HeaderMap,
    /// The request's query string.
    pub(crate) query: Option<&'a str>,
}

/// A parsed template (validated by `gw_config::plugins::check_template` at load).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template(Vec<Piece>);

/// Bytes kept in one path segment: RFC 3986 `pchar` minus `%` (so `/`, `?`, `#`, `%`, space,
/// controls and non-ASCII bytes are encoded).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Bytes kept in a route parameter, which is path text as the client sent it (already
/// checked): `/` and `%` escapes stay; anything that cannot be in a path is encoded.
const PARAM: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

impl Template {
    pub(crate) fn parse(t: &str) -> Result<Template, String> {
        gw_config::plugins::check_template(t)?;
        let mut pieces = Vec::new();
        let mut rest = t;
        while let Some(i) = rest.find("$(") {
            if i > 0 {
                pieces.push(Piece::Lit(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let end = after.find(')').ok_or("unclosed $(")?;
            let expr = &after[..end];
            pieces.push(match expr {
                "consumer.username" => Piece::ConsumerUsername,
                "consumer.custom_id" => Piece::ConsumerCustomId,
                "route.name" => Piece::RouteName,
                "service.name" => Piece::ServiceName,
                "request_id" => Piece::RequestId,
                "client_ip" => Piece::ClientIp,
                e => {
                    if let Some(n) = e.strip_prefix("headers.") {
                        Piece::Header(n.to_ascii_lowercase())
                    } else if let Some(n) = e.strip_prefix("request_headers.") {
                        Piece::RequestHeader(n.to_ascii_lowercase())
                    } else if let Some(n) = e.strip_prefix("query.") {
                        Piece::Query(n.to_string())
                    } else if let Some(n) = e.strip_prefix("params.") {
                        Piece::Param(n.to_string())
                    } else {
                        return Err(format!("unknown reference $({e})"));
                    }
                }
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Lit(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    /// Whether the value describes the consumer (the header it is set in is an identity field).
    pub(crate) fn uses_consumer(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Piece::ConsumerUsername | Piece::ConsumerCustomId))
    }

    /// The request headers (`$(request_headers.x)`) the template reads, and whether it reads
    /// the query.
    pub(crate) fn request_refs(&self, headers: &mut Vec<String>) -> bool {
        let mut query = false;
        for p in &self.0 {
            match p {
                Piece::RequestHeader(n) if !headers.contains(n) => headers.push(n.clone()),
                Piece::Query(_) => query = true,
                _ => {}
            }
        }
        query
    }

    /// Whether the template reads `$(request_headers.x)` or `$(query.x)`.
    pub(crate) fn reads_request(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Piece::RequestHeader(_) | Piece::Query(_)))
    }

    /// The value as bytes (header values go out as they came in).
    pub(crate) fn render_bytes(&self, src: &Sources<'_>, cx: &Ctx) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.extend_from_slice(s.as_bytes()),
                other => value(other, src, cx, |b| out.extend_from_slice(b)),
            }
        }
        out
    }

    /// The value as text (bytes that are not UTF-8 become U+FFFD).
    pub(crate) fn render(&self, src: &Sources<'_>, cx: &Ctx) -> String {
        String::from_utf8_lossy(&self.render_bytes(src, cx)).into_owned()
    }

    /// A path: the literal text as written; each value percent-encoded as one segment (`/`,
    /// `?`, `#`, `%` included), except route parameters, which are path text as the client sent
    /// it and keep their `/` and escapes (a `{*rest}` catch-all spans segments). The caller
    /// checks the result like a client path (dot segments are refused).
    pub(crate) fn render_path(&self, src: &Sources<'_>, cx: &Ctx) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Param(_) => value(p, src, cx, |b| out.extend(percent_encode(b, PARAM))),
                other => value(other, src, cx, |b| out.extend(percent_encode(b, SEGMENT))),
            }
        }
        out
    }
}

/// The bytes of one reference, given to `put`.
fn value(p: &Piece, src: &Sources<'_>, cx: &Ctx, mut put: impl FnMut(&[u8])) {
    match p {
        Piece::Lit(s) => put(s.as_bytes()),
        Piece::Header(n) => {
            if let Some(v) = src.headers.get(n.as_str()) {
                put(v.as_bytes());
            }
        }
        Piece::RequestHeader(n) => {
            if let Some(v) = src.request_headers.get(n.as_str()) {
                put(v.as_bytes());
            }
        }
        Piece::Query(n) => {
            if let Some((_, v)) = crate::util::query_pairs(src.query).into_iter().find(|(k, _)| k == n) {
                put(v.as_bytes());
            }
        }
        Piece::Param(n) => {
            if let Some(v) = cx.param(n) {
                put(v.as_bytes());
            }
        }
        Piece::ConsumerUsername => {
            if let Some(c) = &cx.consumer {
                put(c.username.as_bytes());
            }
        }
        Piece::ConsumerCustomId => {
            if let Some(id) = cx.consumer.as_ref().and_then(|c| c.custom_id.as_deref()) {
                put(id.as_bytes());
            }
        }
        Piece::RouteName => {
            if let Some(r) = &cx.route {
                put(r.name.as_bytes());
            }
        }
        Piece::ServiceName => {
            if let Some(r) = &cx.route {
                put(r.service.as_bytes());
            }
        }
        Piece::RequestId => put(cx.request_id.as_bytes()),
        Piece::ClientIp => put(cx.client_ip.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cx() -> Ctx {
        let mut cx = Ctx::new("127.0.0.1:1".parse().unwrap(), "l".into(), false, HeaderValue::from_static("rid"));
        cx.params.push(("id".into(), "42".into()));
        cx.params.push(("rest".into(), "a/b%20c".into()));
        cx
    }

    /// References are replaced from headers, query, params and the context.
    #[test]
    fn renders() {
        let t = Template::parse("u=$(params.id);h=$(headers.X-A);q=$(query.page);r=$(request_id)").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("va"));
        let src = Sources { headers: &h, request_headers: &h, query: Some("page=3&x=1") };
        assert_eq!(t.render(&src, &cx()), "u=42;h=va;q=3;r=rid");
        assert!(Template::parse("$(nope)").is_err());
    }

    /// Header values that are not ASCII are rendered as they are, not dropped.
    #[test]
    fn non_ascii_values() {
        let t = Template::parse("<$(headers.x-a)>").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_bytes("café".as_bytes()).unwrap());
        let src = Sources { headers: &h, request_headers: &h, query: None };
        assert_eq!(t.render_bytes(&src, &cx()), "<café>".as_bytes());
        assert_eq!(t.render(&src, &cx()), "<café>");
        h.insert("x-a", HeaderValue::from_bytes(b"\xff").unwrap());
        let src = Sources { headers: &h, request_headers: &h, query: None };
        assert_eq!(t.render_bytes(&src, &cx()), b"<\xff>");
    }

    /// In a path, values are one encoded segment; route parameters keep their slashes.
    #[test]
    fn path_values_are_encoded() {
        let t = Template::parse("/base/$(params.rest)/x/$(headers.x-p)").unwrap();
        let mut h = HeaderMap::new();
        for (v, want) in [
            ("z?evil=1", "/base/a/b%20c/x/z%3Fevil=1"),
            ("../../admin", "/base/a/b%20c/x/..%2F..%2Fadmin"),
            ("a#frag", "/base/a/b%20c/x/a%23frag"),
            ("%2e%2e", "/base/a/b%20c/x/%252e%252e"),
            ("é \\", "/base/a/b%20c/x/%C3%A9%20%5C"),
        ] {
            h.insert("x-p", HeaderValue::from_bytes(v.as_bytes()).unwrap());
            let src = Sources { headers: &h, request_headers: &h, query: None };
            assert_eq!(t.render_path(&src, &cx()), want, "{v}");
        }
    }
}
