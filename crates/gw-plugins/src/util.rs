//! Helpers shared by plugins: standard refusals, constant-time comparison, header helpers, the
//! outbound HTTP client.

use std::sync::Arc;

use gw_core::{Ctx, Reply};
use http::StatusCode;
use http::header::{HeaderName, HeaderValue, WWW_AUTHENTICATE};

/// 401 for a request without credentials, with the scheme's challenge.
pub(crate) fn missing_credentials(challenge: &str) -> Reply {
    with_challenge(Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "missing credentials"), challenge)
}

/// 401 for credentials that are not valid. The message never says which part was wrong.
pub(crate) fn invalid_credentials(challenge: &str) -> Reply {
    with_challenge(Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "invalid credentials"), challenge)
}

fn with_challenge(r: Reply, challenge: &str) -> Reply {
    match HeaderValue::from_str(challenge) {
        Ok(v) if !challenge.is_empty() => r.with_header(WWW_AUTHENTICATE, v),
        _ => r,
    }
}

/// 403 for an authenticated request that is not allowed.
pub(crate) fn forbidden(message: &str) -> Reply {
    Reply::error(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Constant-time equality of byte strings (lengths may leak, contents do not).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Mark the request authenticated as `consumer` with credential `id`.
pub(crate) fn set_consumer(cx: &mut Ctx, consumer: Arc<gw_core::ConsumerInfo>, id: Option<&str>) {
    cx.consumer = Some(consumer);
    cx.credential_id = id.map(str::to_string);
}

/// Parse a header name from configuration (validated already); lower-cased.
pub(crate) fn header_name(n: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).map_err(|e| format!("{n:?}: {e}"))
}

/// Remove the query parameters whose (decoded) name is in `names`, keeping the others as they
/// were written. Returns the new query (None when empty).
pub(crate) fn remove_query_params(query: &str, names: &[&str]) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let raw = pair.split('=').next().unwrap_or("");
            let name: String =
                form_urlencoded::parse(raw.as_bytes()).map(|(k, _)| k.into_owned()).next().unwrap_or_default();
            !names.contains(&name.as_str())
        })
        .collect();
    let q = kept.join("&");
    if q.is_empty() { None } else { Some(q) }
}

/// Decoded query parameters.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// A span for a plugin's own call to Redis (`redis <op>`), child of the request's server span,
/// with the plugin, route and consumer as attributes: `None` unless the request is recorded.
pub(crate) fn redis_span(cx: &Ctx, plugin: &'static str, op: &'static str) -> Option<gw_core::ChildSpan> {
    let mut s = cx.trace.as_ref()?.child(format!("redis {op}"), gw_core::SpanKind::Client)?;
    s.set("db.system.name", "redis");
    s.set("db.operation.name", op);
    s.set("gatehouse.plugin", plugin);
    if let Some(r) = &cx.route {
        s.set("gatehouse.route", r.name.to_string());
    }
    if let Some(c) = &cx.consumer {
        s.set("gatehouse.consumer", c.username.clone());
    }
    Some(s)
}

/// End a plugin's IO span with the call's outcome.
pub(crate) fn end_span<T, E: std::fmt::Display>(span: Option<gw_core::ChildSpan>, r: &std::result::Result<T, E>) {
    if let Some(s) = span {
        s.end(r.as_ref().err().map(ToString::to_string));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query parameters are removed by decoded name; the others keep their encoding.
    #[test]
    fn removes_query_params() {
        assert_eq!(remove_query_params("apikey=abc&x=%20y&b", &["apikey"]).as_deref(), Some("x=%20y&b"));
        assert_eq!(remove_query_params("api%6Bey=abc", &["apikey"]), None);
        assert_eq!(remove_query_params("a=1", &["b"]).as_deref(), Some("a=1"));
    }

    /// Constant-time comparison agrees with ==.
    #[test]
    fn ct() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
