//! `Vary` and secondary cache keys (RFC 9111 section 4.1).
//!
//! A stored response with `Vary` answers only requests whose nominated fields match those of
//! the request that fetched it. Field names are case-insensitive; the values of several field
//! lines are combined with commas, and whitespace around list elements and runs of whitespace
//! inside them are normalised, so `en,fr` matches `en, fr` and two lines `en` + `fr`. A field
//! absent from one request and present (even empty) in the other does not match.
//! `Vary: *` never matches (such responses are not stored).

use http::HeaderMap;
use http::header::VARY;

/// Whether the response has `Vary: *`.
pub fn is_star(headers: &HeaderMap) -> bool {
    names_raw(headers).any(|n| n == "*")
}

fn names_raw(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(VARY)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes()).split(',').map(|s| s.trim().to_ascii_lowercase()).collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
}

/// The field names a response varies on: lower case, sorted, without duplicates.
pub fn names(headers: &HeaderMap) -> Vec<String> {
    let mut v: Vec<String> = names_raw(headers).collect();
    v.sort();
    v.dedup();
    v
}

/// A request field's value, normalised: lines combined, list elements trimmed, inner whitespace
/// collapsed. `None` when the request has no such field.
pub fn normalised_value(req: &HeaderMap, name: &str) -> Option<String> {
    let mut out = String::new();
    let mut any = false;
    for v in req.get_all(name) {
        any = true;
        for el in String::from_utf8_lossy(v.as_bytes()).split(',') {
            let el = el.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
            if el.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&el);
        }
    }
    any.then_some(out)
}

/// The secondary key of a stored response: each varied field with the normalised value the
/// original request had.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Secondary(pub Vec<(String, Option<String>)>);

impl Secondary {
    /// The secondary key for a response's `Vary` and the request that fetched it.
    pub fn of(resp_headers: &HeaderMap, req: &HeaderMap) -> Secondary {
        Secondary(
            names(resp_headers)
                .into_iter()
                .map(|n| {
                    let v = normalised_value(req, &n);
                    (n, v)
                })
                .collect(),
        )
    }

    /// Whether `req` selects this variant.
    pub fn matches(&self, req: &HeaderMap) -> bool {
        self.0.iter().all(|(n, v)| normalised_value(req, n) == *v)
    }

    /// A stable 64-bit id of this variant (the field name of the variant in Redis).
    pub fn id(&self) -> u64 {
        let mut s = String::new();
        for (n, v) in &self.0 {
            s.push_str(n);
            match v {
                Some(v) => {
                    s.push('=');
                    s.push_str(v);
                }
                None => s.push('!'),
            }
            s.push('\n');
        }
        xxhash_rust::xxh3::xxh3_64(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::hm;

    #[test]
    fn star_and_names() {
        assert!(is_star(&hm(&[("vary", "Accept, *")])));
        assert!(is_star(&hm(&[("vary", "accept"), ("vary", "*")])));
        assert_eq!(
            names(&hm(&[("vary", "Accept-Language, accept"), ("vary", "ACCEPT")])),
            vec!["accept", "accept-language"]
        );
    }

    #[test]
    fn normalised_matching() {
        let resp = hm(&[("vary", "Accept-Language")]);
        let s = Secondary::of(&resp, &hm(&[("accept-language", "en,  fr")]));
        assert!(s.matches(&hm(&[("Accept-Language", "en, fr")])));
        assert!(s.matches(&hm(&[("accept-language", "en"), ("accept-language", " fr ")])));
        assert!(!s.matches(&hm(&[("accept-language", "fr, en")])), "order is significant");
        assert!(!s.matches(&hm(&[])), "absent does not match present");
        let absent = Secondary::of(&resp, &hm(&[]));
        assert!(absent.matches(&hm(&[])));
        assert!(!absent.matches(&hm(&[("accept-language", "")])), "empty is not absent");
        assert_ne!(s.id(), absent.id());
    }

    #[test]
    fn several_fields_all_must_match() {
        let resp = hm(&[("vary", "Accept-Encoding, Accept-Language")]);
        let s = Secondary::of(&resp, &hm(&[("accept-encoding", "gzip"), ("accept-language", "en")]));
        assert!(s.matches(&hm(&[("accept-encoding", "gzip"), ("accept-language", "en"), ("x-other", "1")])));
        assert!(!s.matches(&hm(&[("accept-encoding", "br"), ("accept-language", "en")])));
        assert_eq!(Secondary::of(&hm(&[]), &hm(&[("a", "b")])), Secondary::default());
    }
}
