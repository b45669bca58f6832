//! `Cache-Control` parsing (RFC 9111 section 5.2) for requests and responses.
//!
//! Rules applied (RFC 9111 sections 4.2.1 and 5.2):
//! - directive names are case-insensitive; unknown directives are ignored;
//! - arguments are tokens or quoted strings; a quoted string is one value (a `max-age` inside
//!   an extension's quoted argument is not a `max-age`);
//! - when a directive appears more than once, across one or several field lines, the first
//!   occurrence is used;
//! - an invalid `delta-seconds` (not digits, a fraction, a sign, a space around `=`) makes the
//!   directive invalid: an invalid `max-age`/`s-maxage` on a response means "stale" (freshness
//!   0), an invalid request directive is ignored; values too large saturate at 2^31;
//! - a response with `no-cache` carrying a field list (`no-cache="set-cookie"`) is treated as
//!   an unqualified `no-cache` (always revalidated); a qualified `private="f"` strips field `f`
//!   before storing and is otherwise not `private`.

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// The largest delta-seconds value kept (RFC 9111 section 1.2.2).
pub const DELTA_MAX: u64 = 1 << 31;

/// A delta-seconds argument as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// A valid number of seconds (saturated at [`DELTA_MAX`]).
    Secs(u64),
    /// Present but not a valid delta-seconds.
    Invalid,
}

impl Delta {
    /// The seconds when valid.
    pub fn secs(self) -> Option<u64> {
        match self {
            Delta::Secs(s) => Some(s),
            Delta::Invalid => None,
        }
    }
}

/// Response directives a shared cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseCc {
    /// `max-age`.
    pub max_age: Option<Delta>,
    /// `s-maxage` (shared caches only).
    pub s_maxage: Option<Delta>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache`, with or without a field list.
    pub no_cache: bool,
    /// Unqualified `private`.
    pub private: bool,
    /// Fields named by a qualified `private="..."` (lower case): stripped before storing.
    pub private_fields: Vec<String>,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `must-understand`.
    pub must_understand: bool,
    /// `stale-while-revalidate` (RFC 5861), seconds.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861), seconds.
    pub stale_if_error: Option<u64>,
    /// `immutable` (RFC 8246); kept for completeness.
    pub immutable: bool,
}

impl ResponseCc {
    /// Whether a stale copy may never be served without revalidation: `must-revalidate`,
    /// `proxy-revalidate` and `s-maxage` (which implies it for shared caches), or `no-cache`
    /// (RFC 9111 sections 4.2.4 and 5.2.2).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// Request directives a shared cache honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCc {
    /// `max-age` (seconds).
    pub max_age: Option<u64>,
    /// `max-stale`: `Some(None)` without a value (any staleness), `Some(Some(n))` with one.
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh` (seconds).
    pub min_fresh: Option<u64>,
    /// `no-cache` (or `Pragma: no-cache` without a `Cache-Control` field).
    pub no_cache: bool,
    /// `no-store`.
    pub no_store: bool,
    /// `only-if-cached`.
    pub only_if_cached: bool,
    /// `stale-if-error` (RFC 5861), seconds.
    pub stale_if_error: Option<u64>,
}

/// One parsed directive: lower-cased name and its argument (unquoted), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Name, lower case.
    pub name: String,
    /// Argument: `None` without `=`; quoted strings are unescaped.
    pub value: Option<String>,
    /// Whether the argument was a quoted string.
    pub quoted: bool,
    /// Whether the directive is syntactically broken (e.g. a space before `=`).
    pub broken: bool,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parse the directives of every `Cache-Control` line in order. Never fails: broken parts are
/// reported as `broken` directives or skipped.
pub fn parse_directives(headers: &HeaderMap) -> Vec<Directive> {
    let mut out = Vec::new();
    for v in headers.get_all(CACHE_CONTROL) {
        parse_line(v.as_bytes(), &mut out);
    }
    out
}

fn parse_line(s: &[u8], out: &mut Vec<Directive>) {
    let mut i = 0;
    let n = s.len();
    while i < n {
        // Skip separators and whitespace.
        while i < n && (s[i] == b',' || s[i] == b' ' || s[i] == b'\t') {
            i += 1;
        }
        if i >= n {
            break;
        }
        let start = i;
        while i < n && is_tchar(s[i]) {
            i += 1;
        }
        if i == start {
            // Not a token: skip to the next comma outside quotes.
            i = skip_element(s, i);
            continue;
        }
        let name = String::from_utf8_lossy(&s[start..i]).to_ascii_lowercase();
        let mut d = Directive { name, value: None, quoted: false, broken: false };
        // Optional whitespace before `=` makes the directive broken.
        let mut j = i;
        while j < n && (s[j] == b' ' || s[j] == b'\t') {
            j += 1;
        }
        if j < n && s[j] == b'=' {
            if j != i {
                d.broken = true;
            }
            i = j + 1;
            if i < n && (s[i] == b' ' || s[i] == b'\t') {
                d.broken = true;
                while i < n && (s[i] == b' ' || s[i] == b'\t') {
                    i += 1;
                }
            }
            if i < n && s[i] == b'"' {
                i += 1;
                let mut v = Vec::new();
                let mut closed = false;
                while i < n {
                    match s[i] {
                        b'\\' if i + 1 < n => {
                            v.push(s[i + 1]);
                            i += 2;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        c => {
                            v.push(c);
                            i += 1;
                        }
                    }
                }
                d.broken |= !closed;
                d.value = Some(String::from_utf8_lossy(&v).into_owned());
                d.quoted = true;
            } else {
                let vs = i;
                while i < n && is_tchar(s[i]) {
                    i += 1;
                }
                d.value = Some(String::from_utf8_lossy(&s[vs..i]).into_owned());
            }
        } else {
            i = j;
        }
        // Anything but whitespace before the next comma makes the element broken.
        while i < n && (s[i] == b' ' || s[i] == b'\t') {
            i += 1;
        }
        if i < n && s[i] != b',' {
            d.broken = true;
            i = skip_element(s, i);
        }
        out.push(d);
    }
}

/// Index after the next comma that is not inside a quoted string.
fn skip_element(s: &[u8], mut i: usize) -> usize {
    let mut quoted = false;
    while i < s.len() {
        match s[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b',' if !quoted => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Parse delta-seconds: ASCII digits only (leading zeros allowed), saturating at 2^31.
pub fn parse_delta(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: u64 = 0;
    for b in v.bytes() {
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        if n > DELTA_MAX {
            return Some(DELTA_MAX);
        }
    }
    Some(n)
}

fn delta_of(d: &Directive) -> Delta {
    match (&d.value, d.broken) {
        (Some(v), false) => parse_delta(v).map_or(Delta::Invalid, Delta::Secs),
        _ => Delta::Invalid,
    }
}

fn field_list(v: &str) -> Vec<String> {
    v.split(',').map(|f| f.trim().to_ascii_lowercase()).filter(|f| !f.is_empty()).collect()
}

impl ResponseCc {
    /// Parse a response's `Cache-Control` fields.
    pub fn parse(headers: &HeaderMap) -> ResponseCc {
        let mut cc = ResponseCc::default();
        let mut seen_private = false;
        for d in parse_directives(headers) {
            match d.name.as_str() {
                "max-age" if cc.max_age.is_none() => cc.max_age = Some(delta_of(&d)),
                "s-maxage" if cc.s_maxage.is_none() => cc.s_maxage = Some(delta_of(&d)),
                "no-store" => cc.no_store = true,
                "no-cache" => cc.no_cache = true,
                "private" => {
                    if seen_private {
                        continue;
                    }
                    seen_private = true;
                    match (&d.value, d.quoted) {
                        (Some(v), true) if !field_list(v).is_empty() => cc.private_fields = field_list(v),
                        _ => cc.private = true,
                    }
                }
                "public" => cc.public = true,
                "must-revalidate" => cc.must_revalidate = true,
                "proxy-revalidate" => cc.proxy_revalidate = true,
                "must-understand" => cc.must_understand = true,
                "immutable" => cc.immutable = true,
                "stale-while-revalidate" if cc.stale_while_revalidate.is_none() => {
                    cc.stale_while_revalidate = delta_of(&d).secs();
                }
                "stale-if-error" if cc.stale_if_error.is_none() => cc.stale_if_error = delta_of(&d).secs(),
                _ => {}
            }
        }
        cc
    }
}

impl RequestCc {
    /// Parse a request's `Cache-Control` fields (and `Pragma: no-cache` when there is no
    /// `Cache-Control`, RFC 9111 section 5.4).
    pub fn parse(headers: &HeaderMap) -> RequestCc {
        let mut cc = RequestCc::default();
        if !headers.contains_key(CACHE_CONTROL) {
            cc.no_cache = headers
                .get_all(http::header::PRAGMA)
                .iter()
                .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case("no-cache"))));
            return cc;
        }
        for d in parse_directives(headers) {
            match d.name.as_str() {
                "max-age" if cc.max_age.is_none() => cc.max_age = delta_of(&d).secs(),
                "min-fresh" if cc.min_fresh.is_none() => cc.min_fresh = delta_of(&d).secs(),
                "max-stale" if cc.max_stale.is_none() => {
                    cc.max_stale = match &d.value {
                        None => Some(None),
                        Some(_) => delta_of(&d).secs().map(Some),
                    };
                }
                "no-cache" => cc.no_cache = true,
                "no-store" => cc.no_store = true,
                "only-if-cached" => cc.only_if_cached = true,
                "stale-if-error" if cc.stale_if_error.is_none() => cc.stale_if_error = delta_of(&d).secs(),
                _ => {}
            }
        }
        cc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(lines: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for l in lines {
            m.append(CACHE_CONTROL, HeaderValue::from_str(l).unwrap_or_else(|e| panic!("{e}")));
        }
        m
    }

    #[test]
    fn names_are_case_insensitive_and_unknown_ignored() {
        let cc = ResponseCc::parse(&h(&["Max-Age=60, FOO=bar, Public, x-ext"]));
        assert_eq!(cc.max_age, Some(Delta::Secs(60)));
        assert!(cc.public);
    }

    #[test]
    fn first_occurrence_wins_on_one_or_several_lines() {
        assert_eq!(ResponseCc::parse(&h(&["max-age=1800, max-age=1"])).max_age, Some(Delta::Secs(1800)));
        assert_eq!(ResponseCc::parse(&h(&["max-age=1", "max-age=1800"])).max_age, Some(Delta::Secs(1)));
    }

    #[test]
    fn quoted_extension_does_not_hide_or_fake_directives() {
        let cc = ResponseCc::parse(&h(&[r#"extension="max-age=3600", max-age=1"#]));
        assert_eq!(cc.max_age, Some(Delta::Secs(1)));
        let cc = ResponseCc::parse(&h(&[r#"max-age=1, extension="max-age=3600, no-store""#]));
        assert_eq!(cc.max_age, Some(Delta::Secs(1)));
        assert!(!cc.no_store);
    }

    #[test]
    fn delta_seconds_validity() {
        let ma = |s: &str| ResponseCc::parse(&h(&[s])).max_age;
        assert_eq!(ma("max-age=003600"), Some(Delta::Secs(3600)));
        assert_eq!(ma("max-age=\"3600\""), Some(Delta::Secs(3600)));
        for bad in [
            "max-age =3600",
            "max-age= 3600",
            "max-age='3600'",
            "max-age=3600.0",
            "max-age=a3600",
            "max-age=3600a",
            "max-age=-1",
            "max-age=",
            "max-age",
        ] {
            assert_eq!(ma(bad), Some(Delta::Invalid), "{bad}");
        }
        assert_eq!(ma("max-age=99999999999999999999999"), Some(Delta::Secs(DELTA_MAX)));
    }

    #[test]
    fn qualified_no_cache_and_private() {
        let cc = ResponseCc::parse(&h(&[r#"no-cache="set-cookie", max-age=60"#]));
        assert!(cc.no_cache);
        let cc = ResponseCc::parse(&h(&[r#"private="Set-Cookie, X-Foo", max-age=60"#]));
        assert!(!cc.private);
        assert_eq!(cc.private_fields, vec!["set-cookie", "x-foo"]);
        assert!(ResponseCc::parse(&h(&["private"])).private);
    }

    #[test]
    fn forbids_stale() {
        assert!(ResponseCc::parse(&h(&["max-age=1, must-revalidate"])).forbids_stale());
        assert!(ResponseCc::parse(&h(&["proxy-revalidate"])).forbids_stale());
        assert!(ResponseCc::parse(&h(&["s-maxage=5"])).forbids_stale());
        assert!(!ResponseCc::parse(&h(&["max-age=5, stale-while-revalidate=10"])).forbids_stale());
    }

    /// Arbitrary field values never panic the parser (bounded pseudo-random inputs built from
    /// the characters that matter: quotes, backslashes, commas, `=`, spaces, digits).
    #[test]
    fn arbitrary_values_do_not_panic() {
        let alphabet = b"\"\\,= \tmax-age0123456789s-maxageprivateno-cache\x7f\x80";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let mut v = Vec::with_capacity(len);
            let mut y = x;
            for _ in 0..len {
                y = y.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                v.push(alphabet[(y >> 33) as usize % alphabet.len()]);
            }
            if let Ok(hv) = HeaderValue::from_bytes(&v) {
                let mut m = HeaderMap::new();
                m.append(CACHE_CONTROL, hv);
                let _ = ResponseCc::parse(&m);
                let _ = RequestCc::parse(&m);
            }
        }
    }

    #[test]
    fn request_directives() {
        let cc = RequestCc::parse(&h(&["max-age=5, min-fresh=10, max-stale, only-if-cached"]));
        assert_eq!((cc.max_age, cc.min_fresh, cc.max_stale, cc.only_if_cached), (Some(5), Some(10), Some(None), true));
        assert_eq!(RequestCc::parse(&h(&["max-stale=30"])).max_stale, Some(Some(30)));
        assert_eq!(RequestCc::parse(&h(&["max-stale=x"])).max_stale, None);
        assert!(RequestCc::parse(&h(&["no-cache"])).no_cache);
        let mut p = HeaderMap::new();
        p.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(RequestCc::parse(&p).no_cache);
        p.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=10"));
        assert!(!RequestCc::parse(&p).no_cache, "Cache-Control takes precedence over Pragma");
    }
}
