//! Conditional requests: a client's `If-None-Match` / `If-Modified-Since` answered from a
//! stored response (RFC 9111 section 4.3.2, RFC 9110 section 13), and the validators a cache
//! sends to revalidate a stored response (RFC 9111 section 4.3.1).

use http::header::{
    CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::policy::{http_date_ms, parse_http_date_ms};

/// The opaque part of an entity tag (`W/"x"` and `"x"` both give `"x"`); `None` if malformed.
fn opaque(tag: &str) -> Option<&str> {
    let t = tag.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    (t.len() >= 2 && t.starts_with('"') && t.ends_with('"')).then_some(t)
}

/// Weak comparison (RFC 9110 section 8.8.3.2): opaque tags equal, `W/` ignored.
pub fn weak_match(a: &str, b: &str) -> bool {
    matches!((opaque(a), opaque(b)), (Some(x), Some(y)) if x == y)
}

/// Strong comparison: both strong and equal.
pub fn strong_match(a: &str, b: &str) -> bool {
    !a.trim().starts_with("W/") && !b.trim().starts_with("W/") && weak_match(a, b)
}

/// Split an `If-None-Match` list into entity tags, honouring commas inside quotes.
fn tags(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in v.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim());
    out.retain(|t| !t.is_empty());
    out
}

/// Whether the client's conditional request is satisfied by the stored response, i.e. the
/// answer is `304 Not Modified`. `If-None-Match` (weak comparison, `*` matches any) takes
/// precedence; `If-Modified-Since` is used only without it and compares with the stored
/// `Last-Modified`, else its `Date`, else the time it was received (`response_ms`).
pub fn not_modified(req: &HeaderMap, stored: &HeaderMap, response_ms: u64) -> bool {
    if req.contains_key(IF_NONE_MATCH) {
        let etag = stored.get(ETAG).and_then(|v| v.to_str().ok());
        return req
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(tags)
            .any(|t| t == "*" || etag.is_some_and(|e| weak_match(t, e)));
    }
    let Some(ims) = req.get(IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()).and_then(parse_http_date_ms) else {
        return false;
    };
    let lm = http_date_ms(stored, LAST_MODIFIED).or_else(|| http_date_ms(stored, DATE)).unwrap_or(response_ms);
    lm <= ims
}

/// Header fields a 304 carries from the stored 200 (RFC 9110 section 15.4.5), plus
/// `Last-Modified` to let caches downstream update.
pub const NOT_MODIFIED_FIELDS: [HeaderName; 7] =
    [CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, VARY, LAST_MODIFIED];

/// The header fields of a 304 generated from a stored response.
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in NOT_MODIFIED_FIELDS.iter() {
        for v in stored.get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    h
}

/// Set the cache's own validators on a request that revalidates `stored` (replacing any the
/// client sent): `If-None-Match` with the stored `ETag`, `If-Modified-Since` with the stored
/// `Last-Modified`.
pub fn set_validators(req: &mut HeaderMap, stored: &HeaderMap) {
    req.remove(IF_NONE_MATCH);
    req.remove(IF_MODIFIED_SINCE);
    req.remove(http::header::IF_MATCH);
    req.remove(http::header::IF_UNMODIFIED_SINCE);
    req.remove(http::header::IF_RANGE);
    if let Some(e) = stored.get(ETAG) {
        req.insert(IF_NONE_MATCH, e.clone());
    }
    if let Some(lm) = stored.get(LAST_MODIFIED) {
        req.insert(IF_MODIFIED_SINCE, lm.clone());
    }
}

/// Remove the client's own preconditions from a request the cache fills from (the cache wants
/// a complete response to store, and answers the client's condition itself).
pub fn clear_preconditions(req: &mut HeaderMap) {
    for n in [IF_NONE_MATCH, IF_MODIFIED_SINCE, http::header::IF_RANGE] {
        req.remove(n);
    }
}

/// A header value helper for tests and callers.
pub fn value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fmt_http_date;
    use crate::policy::tests::hm;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn etag_comparison() {
        assert!(weak_match("W/\"a\"", "\"a\""));
        assert!(weak_match("\"a\"", "\"a\""));
        assert!(!weak_match("\"a\"", "\"b\""));
        assert!(!weak_match("a", "a"), "unquoted is malformed");
        assert!(strong_match("\"a\"", "\"a\""));
        assert!(!strong_match("W/\"a\"", "\"a\""));
    }

    #[test]
    fn if_none_match() {
        let stored = hm(&[("etag", "W/\"v1\""), ("last-modified", &fmt_http_date(T0))]);
        assert!(not_modified(&hm(&[("if-none-match", "\"v1\"")]), &stored, T0));
        assert!(not_modified(&hm(&[("if-none-match", "\"x\", W/\"v1\"")]), &stored, T0));
        assert!(not_modified(&hm(&[("if-none-match", "\"x\""), ("if-none-match", "\"v1\"")]), &stored, T0));
        assert!(not_modified(&hm(&[("if-none-match", "*")]), &stored, T0));
        assert!(!not_modified(&hm(&[("if-none-match", "\"v2\"")]), &stored, T0));
        // If-None-Match wins over If-Modified-Since.
        let req = hm(&[("if-none-match", "\"v2\""), ("if-modified-since", &fmt_http_date(T0 + 1000))]);
        assert!(!not_modified(&req, &stored, T0));
        assert!(!not_modified(&hm(&[("if-none-match", "\"a,b\"")]), &hm(&[("etag", "\"a\"")]), T0));
    }

    #[test]
    fn if_modified_since() {
        let stored = hm(&[("last-modified", &fmt_http_date(T0))]);
        assert!(not_modified(&hm(&[("if-modified-since", &fmt_http_date(T0))]), &stored, T0));
        assert!(not_modified(&hm(&[("if-modified-since", &fmt_http_date(T0 + 60_000))]), &stored, T0));
        assert!(!not_modified(&hm(&[("if-modified-since", &fmt_http_date(T0 - 60_000))]), &stored, T0));
        assert!(!not_modified(&hm(&[("if-modified-since", "garbage")]), &stored, T0));
        // Without Last-Modified: the Date, then the time received.
        let stored = hm(&[("date", &fmt_http_date(T0))]);
        assert!(not_modified(&hm(&[("if-modified-since", &fmt_http_date(T0))]), &stored, T0 + 99_000));
        assert!(!not_modified(&hm(&[("if-modified-since", &fmt_http_date(T0))]), &hm(&[]), T0 + 99_000));
    }

    #[test]
    fn headers_of_a_304_and_validators() {
        let stored = hm(&[
            ("etag", "\"v\""),
            ("content-type", "text/plain"),
            ("cache-control", "max-age=5"),
            ("vary", "accept"),
        ]);
        let h = not_modified_headers(&stored);
        assert!(h.contains_key(ETAG) && h.contains_key(CACHE_CONTROL) && h.contains_key(VARY));
        assert!(!h.contains_key("content-type"));
        let mut req = hm(&[("if-none-match", "\"client\""), ("if-range", "\"x\"")]);
        set_validators(&mut req, &hm(&[("etag", "\"v\""), ("last-modified", &fmt_http_date(T0))]));
        assert_eq!(req.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()), Some("\"v\""));
        assert!(req.contains_key(IF_MODIFIED_SINCE) && !req.contains_key("if-range"));
        let _ = value("x");
    }
}
