//! Host, path and value patterns, parsed from configuration strings.

use std::fmt;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};

/// A pattern that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

fn err<T>(msg: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError(msg.into()))
}

/// Largest compiled regex, so a configuration cannot exhaust memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn compile_anchored(src: &str) -> Result<Regex, PatternError> {
    RegexBuilder::new(&format!("^(?:{src})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| PatternError(format!("invalid regex {src:?}: {e}")))
}

// === HostPattern ===

/// A host to match: exact, or `*.suffix` (one or more labels before `suffix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exact host, lowercase.
    Exact(String),
    /// Wildcard: the suffix after `*.`, lowercase.
    Wildcard(String),
}

impl HostPattern {
    /// Parse `api.example.com` or `*.example.com`.
    pub fn parse(s: &str) -> Result<HostPattern, PatternError> {
        let h = s.trim_end_matches('.').to_ascii_lowercase();
        if h.is_empty() {
            return err("empty host pattern");
        }
        if h.starts_with('[') || (h.contains(':') && h.parse::<std::net::Ipv6Addr>().is_err()) {
            return err(format!("host pattern {s:?}: host patterns do not include a port"));
        }
        let (wild, rest) = match h.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, h.as_str()),
        };
        if rest.contains('*') {
            return err(format!("host pattern {s:?}: only a single leading \"*.\" wildcard is allowed"));
        }
        if rest.parse::<std::net::IpAddr>().is_err() {
            let ok = rest.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
            if !ok || rest.len() > 253 {
                return err(format!("host pattern {s:?} is not a valid host name"));
            }
        } else if wild {
            return err(format!("host pattern {s:?}: an IP address cannot have a wildcard"));
        }
        Ok(if wild { HostPattern::Wildcard(rest.to_string()) } else { HostPattern::Exact(rest.to_string()) })
    }
}

// === PathPattern ===

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Lit(String),
    Param,
    CatchAll,
}

/// A path to match.
#[derive(Debug, Clone)]
pub enum PathPattern {
    /// Exactly this path.
    Exact(String),
    /// This path and everything below it, on a segment boundary. Stored without the `/*`
    /// (`""` for `/*`).
    Prefix(String),
    /// Segments with `{name}` parameters and an optional final `{*name}`.
    Template(Template),
    /// An anchored regex; named groups become parameters.
    Regex(RegexPath),
}

/// A parsed template path.
#[derive(Debug, Clone)]
pub struct Template {
    pub(crate) raw: String,
    /// The same template with positional parameter names, as inserted in the radix tree, so
    /// `/users/{id}` and `/users/{name}` share one entry.
    pub(crate) normalized: String,
    pub(crate) names: Arc<[Arc<str>]>,
    pub(crate) segs: Vec<Seg>,
}

/// A parsed regex path.
#[derive(Debug, Clone)]
pub struct RegexPath {
    pub(crate) raw: String,
    pub(crate) re: Regex,
    pub(crate) names: Vec<Arc<str>>,
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

fn valid_param(name: &str) -> bool {
    let mut b = name.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl PathPattern {
    /// Parse a path pattern: `/exact`, `/prefix/*`, `/users/{id}`, `/files/{*rest}`, `~regex`.
    pub fn parse(s: &str) -> Result<PathPattern, PatternError> {
        if let Some(src) = s.strip_prefix('~') {
            if src.is_empty() {
                return err("empty regex path");
            }
            let src = src.strip_prefix('^').unwrap_or(src);
            let src = src.strip_suffix('$').unwrap_or(src);
            let re = compile_anchored(src)?;
            let names = re.capture_names().flatten().map(Arc::from).collect();
            return Ok(PathPattern::Regex(RegexPath { raw: s.to_string(), re, names }));
        }
        if !s.starts_with('/') {
            return err(format!("path pattern {s:?} must start with '/' (or '~' for a regex)"));
        }
        if s.bytes().any(|b| b.is_ascii_whitespace() || b == b'?' || b == b'#') {
            return err(format!("path pattern {s:?} must not contain spaces, '?' or '#'"));
        }
        if let Some(prefix) = s.strip_suffix("/*") {
            if prefix.contains('*') || prefix.contains('{') || prefix.contains('}') {
                return err(format!("path pattern {s:?}: a prefix pattern cannot also have parameters or '*'"));
            }
            return Ok(PathPattern::Prefix(prefix.to_string()));
        }
        if s.contains('*') && !s.contains("{*") {
            return err(format!("path pattern {s:?}: '*' is only allowed as a final \"/*\" or in \"{{*name}}\""));
        }
        if !s.contains('{') && !s.contains('}') {
            return Ok(PathPattern::Exact(s.to_string()));
        }
        let parts: Vec<&str> = s[1..].split('/').collect();
        let mut segs = Vec::new();
        let mut names: Vec<Arc<str>> = Vec::new();
        let mut normalized = String::new();
        for (i, part) in parts.iter().enumerate() {
            normalized.push('/');
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (catch, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if !valid_param(name) {
                    return err(format!("path pattern {s:?}: invalid parameter name {name:?}"));
                }
                if names.iter().any(|n| &**n == name) {
                    return err(format!("path pattern {s:?}: parameter {name:?} appears twice"));
                }
                if catch && i + 1 != parts.len() {
                    return err(format!("path pattern {s:?}: {{*{name}}} must be the last segment"));
                }
                let pos = names.len();
                names.push(Arc::from(name));
                if catch {
                    normalized.push_str(&format!("{{*p{pos}}}"));
                    segs.push(Seg::CatchAll);
                } else {
                    normalized.push_str(&format!("{{p{pos}}}"));
                    segs.push(Seg::Param);
                }
            } else if part.contains('{') || part.contains('}') {
                return err(format!("path pattern {s:?}: a parameter must be a whole segment, like /users/{{id}}"));
            } else {
                normalized.push_str(part);
                segs.push(Seg::Lit((*part).to_string()));
            }
        }
        Ok(PathPattern::Template(Template { raw: s.to_string(), normalized, names: names.into(), segs }))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        match self {
            PathPattern::Exact(s) => s,
            PathPattern::Prefix(p) => p,
            PathPattern::Template(t) => &t.raw,
            PathPattern::Regex(r) => &r.raw,
        }
    }

    /// Names of the parameters this pattern captures.
    pub fn param_names(&self) -> Vec<&str> {
        match self {
            PathPattern::Template(t) => t.names.iter().map(|n| &**n).collect(),
            PathPattern::Regex(r) => r.names.iter().map(|n| &**n).collect(),
            _ => Vec::new(),
        }
    }
}

impl Template {
    /// Match a path segment by segment (used when the radix tree cannot hold a template).
    pub(crate) fn match_path<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        let rest = path.strip_prefix('/')?;
        let mut values = Vec::new();
        let mut remaining = rest;
        for (i, seg) in self.segs.iter().enumerate() {
            let last = i + 1 == self.segs.len();
            match seg {
                Seg::CatchAll => {
                    if remaining.is_empty() {
                        return None;
                    }
                    values.push(remaining);
                    return Some(values);
                }
                _ => {
                    let (part, after) = match remaining.find('/') {
                        Some(j) => (&remaining[..j], Some(&remaining[j + 1..])),
                        None => (remaining, None),
                    };
                    match seg {
                        Seg::Lit(l) if l == part => {}
                        Seg::Param if !part.is_empty() => values.push(part),
                        _ => return None,
                    }
                    match (after, last) {
                        (None, true) => return Some(values),
                        (Some(a), false) => remaining = a,
                        _ => return None,
                    }
                }
            }
        }
        None
    }
}

// === StrMatch ===

/// A header or query value condition: exact text, or `~regex` (anchored).
#[derive(Debug, Clone)]
pub enum StrMatch {
    /// Equal to this text.
    Exact(String),
    /// Matches this anchored regex.
    Regex(Regex),
}

impl PartialEq for StrMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StrMatch::Exact(a), StrMatch::Exact(b)) => a == b,
            (StrMatch::Regex(a), StrMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl StrMatch {
    /// Parse `value` or `~regex`.
    pub fn parse(s: &str) -> Result<StrMatch, PatternError> {
        match s.strip_prefix('~') {
            Some(src) if !src.is_empty() => Ok(StrMatch::Regex(compile_anchored(src)?)),
            Some(_) => err("empty regex"),
            None => Ok(StrMatch::Exact(s.to_string())),
        }
    }

    /// Whether `v` satisfies the condition.
    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => e == v,
            StrMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// A header condition: `value: None` means the header only has to be present.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatch {
    /// Header name.
    pub name: http::HeaderName,
    /// Value condition.
    pub value: Option<StrMatch>,
}

/// A query parameter condition: `value: None` means present.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryMatch {
    /// Parameter name (raw, not decoded).
    pub name: String,
    /// Value condition (raw, not decoded).
    pub value: Option<StrMatch>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host patterns: exact, wildcard, normalisation and errors.
    #[test]
    fn host_patterns() {
        assert_eq!(HostPattern::parse("API.Example.com.").unwrap(), HostPattern::Exact("api.example.com".into()));
        assert_eq!(HostPattern::parse("*.example.com").unwrap(), HostPattern::Wildcard("example.com".into()));
        assert!(HostPattern::parse("example.com:80").unwrap_err().0.contains("port"));
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("*").is_err());
        assert!(HostPattern::parse("bad host").is_err());
        assert!(HostPattern::parse("").is_err());
        assert_eq!(HostPattern::parse("10.0.0.1").unwrap(), HostPattern::Exact("10.0.0.1".into()));
    }

    /// Path patterns of every kind parse; malformed ones are rejected with a message.
    #[test]
    fn path_patterns() {
        assert!(matches!(PathPattern::parse("/users").unwrap(), PathPattern::Exact(_)));
        assert!(matches!(PathPattern::parse("/api/*").unwrap(), PathPattern::Prefix(p) if p == "/api"));
        assert!(matches!(PathPattern::parse("/*").unwrap(), PathPattern::Prefix(p) if p.is_empty()));
        let t = PathPattern::parse("/users/{id}/posts/{post}").unwrap();
        assert_eq!(t.param_names(), ["id", "post"]);
        let PathPattern::Template(t) = t else { panic!() };
        assert_eq!(t.normalized, "/users/{p0}/posts/{p1}");
        let r = PathPattern::parse("~/v(?P<ver>[0-9]+)/items").unwrap();
        assert_eq!(r.param_names(), ["ver"]);
        for bad in [
            "users",
            "/a/*/b",
            "/a/{",
            "/a/{1}",
            "/a/{x}/{x}",
            "/a/{*r}/b",
            "/a/x{y}",
            "/a b",
            "/a/*x",
            "~",
            "~(",
            "/a?b",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// The fallback template matcher agrees with the template semantics.
    #[test]
    fn template_fallback_matching() {
        let PathPattern::Template(t) = PathPattern::parse("/a/{x}/c/{*rest}").unwrap() else { panic!() };
        assert_eq!(t.match_path("/a/1/c/d/e"), Some(vec!["1", "d/e"]));
        assert_eq!(t.match_path("/a/1/c/"), None);
        assert_eq!(t.match_path("/a//c/d"), None);
        let PathPattern::Template(t) = PathPattern::parse("/u/{id}").unwrap() else { panic!() };
        assert_eq!(t.match_path("/u/7"), Some(vec!["7"]));
        assert_eq!(t.match_path("/u/7/x"), None);
        assert_eq!(t.match_path("/u/"), None);
    }

    /// Value matches: exact and anchored regex.
    #[test]
    fn str_match() {
        let m = StrMatch::parse("~v[12]").unwrap();
        assert!(m.matches("v1") && !m.matches("v12") && !m.matches("xv1"));
        assert!(StrMatch::parse("abc").unwrap().matches("abc"));
        assert!(StrMatch::parse("~").is_err());
    }
}
