//! Header fields a cache stores, updates and adds (RFC 9111 sections 3.1, 3.2, 4.3.4, 5.1).

use http::header::{AGE, CONNECTION, CONTENT_LENGTH, ETAG, LAST_MODIFIED};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::conditional::{strong_match, weak_match};

/// Fields never stored (RFC 9111 section 3.1): hop-by-hop and proxy fields.
const NOT_STORED: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
];

fn connection_listed(h: &HeaderMap) -> Vec<String> {
    h.get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether a field is kept when storing.
fn storable_field(name: &HeaderName, listed: &[String], private_fields: &[String]) -> bool {
    let n = name.as_str();
    !NOT_STORED.contains(&n) && !listed.iter().any(|l| l == n) && !private_fields.iter().any(|p| p == n)
}

/// The header fields to store from a response: without hop-by-hop fields, fields listed in
/// `Connection`, and fields named by a qualified `private="..."`.
pub fn for_storage(h: &HeaderMap, private_fields: &[String]) -> HeaderMap {
    let listed = connection_listed(h);
    let mut out = HeaderMap::with_capacity(h.len());
    for (n, v) in h {
        if storable_field(n, &listed, private_fields) {
            out.append(n.clone(), v.clone());
        }
    }
    out
}

/// Whether a 304 from the origin applies to a stored response (RFC 9111 section 4.3.4): its
/// strong `ETag` matches the stored one; else its weak `ETag` matches weakly; else its
/// `Last-Modified` equals the stored one; a 304 without validators applies.
pub fn validates(stored: &HeaderMap, resp304: &HeaderMap) -> bool {
    let s_etag = stored.get(ETAG).and_then(|v| v.to_str().ok());
    if let Some(e) = resp304.get(ETAG).and_then(|v| v.to_str().ok()) {
        return match s_etag {
            Some(s) if e.trim().starts_with("W/") => weak_match(e, s),
            Some(s) => strong_match(e, s),
            None => false,
        };
    }
    if let Some(lm) = resp304.get(LAST_MODIFIED) {
        return stored.get(LAST_MODIFIED) == Some(lm);
    }
    true
}

/// Update stored fields from a 304 (RFC 9111 section 3.2): every field of the 304 replaces the
/// stored one, except hop-by-hop fields, fields listed in `Connection`, and `Content-Length`.
pub fn merge_304(stored: &mut HeaderMap, resp304: &HeaderMap) {
    let listed = connection_listed(resp304);
    let mut replaced: Vec<HeaderName> = Vec::new();
    for (n, v) in resp304 {
        if !storable_field(n, &listed, &[]) || n == CONTENT_LENGTH {
            continue;
        }
        if !replaced.contains(n) {
            stored.remove(n);
            replaced.push(n.clone());
        }
        stored.append(n.clone(), v.clone());
    }
}

/// Set `Age` (seconds) on a response served from the cache (RFC 9111 section 5.1).
pub fn set_age(h: &mut HeaderMap, age_ms: u64) {
    h.insert(AGE, HeaderValue::from(age_ms / 1000));
}

/// Surrogate keys (tags) of a response: `Surrogate-Key` (space-separated) and `Cache-Tag`
/// (comma-separated), deduplicated, at most 64 of at most 256 bytes each.
pub fn tags(h: &HeaderMap) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |t: &str| {
        let t = t.trim();
        if !t.is_empty() && t.len() <= 256 && out.len() < 64 && !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    };
    for v in h.get_all("surrogate-key").iter().filter_map(|v| v.to_str().ok()) {
        v.split_ascii_whitespace().for_each(&mut add);
    }
    for v in h.get_all("cache-tag").iter().filter_map(|v| v.to_str().ok()) {
        v.split(',').for_each(&mut add);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::hm;

    #[test]
    fn storage_drops_hop_by_hop_and_listed_and_private() {
        let h = hm(&[
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "5"),
            ("transfer-encoding", "chunked"),
            ("x-user", "alice"),
            ("content-type", "text/plain"),
        ]);
        let s = for_storage(&h, &["x-user".to_string()]);
        assert_eq!(s.len(), 1);
        assert!(s.contains_key("content-type"));
    }

    #[test]
    fn merge_304_replaces_fields_but_not_content_length() {
        let mut stored = hm(&[
            ("etag", "\"a\""),
            ("cache-control", "max-age=1"),
            ("content-length", "10"),
            ("x-multi", "1"),
            ("x-multi", "2"),
            ("x-keep", "k"),
        ]);
        let r = hm(&[
            ("etag", "\"a\""),
            ("cache-control", "max-age=60"),
            ("content-length", "0"),
            ("x-multi", "3"),
            ("x-new", "n"),
            ("connection", "close"),
        ]);
        merge_304(&mut stored, &r);
        assert_eq!(stored.get("cache-control").and_then(|v| v.to_str().ok()), Some("max-age=60"));
        assert_eq!(stored.get("content-length").and_then(|v| v.to_str().ok()), Some("10"));
        assert_eq!(stored.get_all("x-multi").iter().count(), 1);
        assert!(stored.contains_key("x-new") && stored.contains_key("x-keep") && !stored.contains_key("connection"));
    }

    #[test]
    fn which_304_applies() {
        let stored = hm(&[("etag", "\"a\""), ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]);
        assert!(validates(&stored, &hm(&[("etag", "\"a\"")])));
        assert!(!validates(&stored, &hm(&[("etag", "\"b\"")])));
        assert!(validates(&stored, &hm(&[("etag", "W/\"a\"")])));
        assert!(validates(&stored, &hm(&[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")])));
        assert!(!validates(&stored, &hm(&[("last-modified", "Tue, 02 Jan 2024 00:00:00 GMT")])));
        assert!(validates(&stored, &hm(&[])));
        assert!(!validates(&hm(&[]), &hm(&[("etag", "\"a\"")])));
    }

    #[test]
    fn age_and_tags() {
        let mut h = hm(&[("age", "5")]);
        set_age(&mut h, 12_999);
        assert_eq!(h.get(AGE).and_then(|v| v.to_str().ok()), Some("12"));
        let h = hm(&[("surrogate-key", "a  b a"), ("cache-tag", "c, b,,d")]);
        assert_eq!(tags(&h), vec!["a", "b", "c", "d"]);
    }
}
