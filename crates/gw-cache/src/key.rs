//! Primary cache keys.
//!
//! The default key is the normalised method (`HEAD` is looked up as `GET`, so a `HEAD` is
//! answered from a stored `GET`), the scheme, the host (lower case, without a trailing dot or
//! the scheme's default port), the path as received, and the query with its parameters sorted
//! by name (stable: repeated names keep their order). Options add request header values or the
//! consumer, keep the query as received, keep only allowed parameters, or drop it.

use http::{HeaderMap, HeaderName, Method};

/// How the query string enters the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum QueryMode {
    /// Parameters sorted by name (default).
    #[default]
    Sorted,
    /// Exactly as received.
    AsIs,
    /// Only these parameters, sorted.
    Allow(Vec<String>),
    /// No query at all.
    Ignore,
}

/// Key options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOptions {
    /// Include the scheme (default `true`).
    pub scheme: bool,
    /// Include the host (default `true`).
    pub host: bool,
    /// The query.
    pub query: QueryMode,
    /// Request headers whose values are part of the key (lower case).
    pub headers: Vec<HeaderName>,
    /// Include the authenticated consumer (default `false`).
    pub consumer: bool,
}

impl Default for KeyOptions {
    fn default() -> Self {
        KeyOptions { scheme: true, host: true, query: QueryMode::Sorted, headers: Vec::new(), consumer: false }
    }
}

/// A request as the cache sees it (gateway-owned, engine-neutral).
#[derive(Debug, Clone, Copy)]
pub struct CacheRequest<'a> {
    /// Method.
    pub method: &'a Method,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host (from `Host` or the URI authority), possibly with a port.
    pub host: &'a str,
    /// Path and query (origin form).
    pub path_and_query: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The authenticated consumer, if any.
    pub consumer: Option<&'a str>,
}

/// A computed primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// 128-bit digest of the key text (what the stores are indexed by).
    pub hash: u128,
    /// The normalised URL `scheme://host/path?query` (used by purges by URL and prefix).
    pub url: String,
    /// The normalised host.
    pub host: String,
}

impl CacheKey {
    /// The digest as 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.hash)
    }
}

/// Normalise a host: lower case, no trailing dot, no default port for the scheme.
pub fn normalise_host(scheme: &str, host: &str) -> String {
    let mut h = host.trim().to_ascii_lowercase();
    let default = if scheme.eq_ignore_ascii_case("https") { ":443" } else { ":80" };
    if let Some(s) = h.strip_suffix(default) {
        h = s.to_string();
    }
    if let Some(s) = h.strip_suffix('.') {
        h = s.to_string();
    }
    h
}

/// Normalise a query string per `mode` (no leading `?`; empty when nothing is left).
pub fn normalise_query(query: &str, mode: &QueryMode) -> String {
    let name = |p: &str| p.split('=').next().unwrap_or("").to_string();
    let mut parts: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    match mode {
        QueryMode::AsIs => return query.to_string(),
        QueryMode::Ignore => return String::new(),
        QueryMode::Sorted => {}
        QueryMode::Allow(allow) => parts.retain(|p| allow.iter().any(|a| *a == name(p))),
    }
    parts.sort_by_key(|p| name(p));
    parts.join("&")
}

/// Split an origin-form target into path and query.
pub fn split_target(pq: &str) -> (&str, Option<&str>) {
    match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    }
}

/// The normalised URL of a request target (what purges by URL and prefix compare).
pub fn normalised_url(scheme: &str, host: &str, path_and_query: &str, mode: &QueryMode) -> String {
    let (path, query) = split_target(path_and_query);
    let path = if path.is_empty() { "/" } else { path };
    let q = query.map(|q| normalise_query(q, mode)).unwrap_or_default();
    let scheme = scheme.to_ascii_lowercase();
    let host = normalise_host(&scheme, host);
    if q.is_empty() { format!("{scheme}://{host}{path}") } else { format!("{scheme}://{host}{path}?{q}") }
}

/// Build the primary key of a request.
pub fn primary_key(opts: &KeyOptions, req: &CacheRequest<'_>) -> CacheKey {
    let url = normalised_url(req.scheme, req.host, req.path_and_query, &opts.query);
    let host = normalise_host(req.scheme, req.host);
    // HEAD is looked up as GET: its answer is a stored GET without the body.
    let method = if req.method == Method::HEAD { "GET" } else { req.method.as_str() };
    let mut text = String::with_capacity(url.len() + 16);
    text.push_str(method);
    text.push(' ');
    if opts.scheme {
        text.push_str(&req.scheme.to_ascii_lowercase());
        text.push_str("://");
    }
    if opts.host {
        text.push_str(&host);
    }
    let (path, _) = split_target(req.path_and_query);
    text.push_str(path);
    let (_, query) = split_target(req.path_and_query);
    let q = query.map(|q| normalise_query(q, &opts.query)).unwrap_or_default();
    if !q.is_empty() {
        text.push('?');
        text.push_str(&q);
    }
    for h in &opts.headers {
        text.push('\n');
        text.push_str(h.as_str());
        text.push_str(": ");
        text.push_str(&crate::vary::normalised_value(req.headers, h.as_str()).unwrap_or_default());
    }
    if opts.consumer {
        text.push_str("\nconsumer: ");
        text.push_str(req.consumer.unwrap_or(""));
    }
    CacheKey { hash: xxhash_rust::xxh3::xxh3_128(text.as_bytes()), url, host }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::hm;

    fn key(
        opts: &KeyOptions,
        method: &Method,
        scheme: &str,
        host: &str,
        pq: &str,
        h: &HeaderMap,
        consumer: Option<&str>,
    ) -> CacheKey {
        primary_key(opts, &CacheRequest { method, scheme, host, path_and_query: pq, headers: h, consumer })
    }

    #[test]
    fn default_key() {
        let o = KeyOptions::default();
        let h = hm(&[]);
        let a = key(&o, &Method::GET, "http", "Example.COM:80", "/a?b=2&a=1", &h, None);
        let b = key(&o, &Method::HEAD, "http", "example.com", "/a?a=1&b=2", &h, None);
        assert_eq!(a, b, "HEAD as GET, host case and default port, sorted query");
        assert_eq!(a.url, "http://example.com/a?a=1&b=2");
        assert_ne!(a.hash, key(&o, &Method::GET, "https", "example.com", "/a?a=1&b=2", &h, None).hash);
        assert_ne!(a.hash, key(&o, &Method::GET, "http", "example.com", "/A?a=1&b=2", &h, None).hash);
        assert_ne!(a.hash, key(&o, &Method::GET, "http", "example.org", "/a?a=1&b=2", &h, None).hash);
        assert_ne!(a.hash, key(&o, &Method::GET, "http", "example.com:8080", "/a?a=1&b=2", &h, None).hash);
        // Repeated names keep their order.
        assert_ne!(
            key(&o, &Method::GET, "http", "h", "/?a=1&a=2", &h, None).hash,
            key(&o, &Method::GET, "http", "h", "/?a=2&a=1", &h, None).hash
        );
    }

    #[test]
    fn query_modes() {
        assert_eq!(normalise_query("b=2&a=1&&c", &QueryMode::Sorted), "a=1&b=2&c");
        assert_eq!(normalise_query("b=2&a=1", &QueryMode::AsIs), "b=2&a=1");
        assert_eq!(normalise_query("b=2&a=1", &QueryMode::Ignore), "");
        assert_eq!(
            normalise_query("utm=x&id=3&page=2", &QueryMode::Allow(vec!["page".into(), "id".into()])),
            "id=3&page=2"
        );
        let o = KeyOptions { query: QueryMode::Allow(vec!["id".into()]), ..KeyOptions::default() };
        let h = hm(&[]);
        assert_eq!(
            key(&o, &Method::GET, "http", "h", "/p?id=1&utm=a", &h, None).hash,
            key(&o, &Method::GET, "http", "h", "/p?utm=b&id=1", &h, None).hash
        );
    }

    #[test]
    fn headers_and_consumer_and_scope() {
        let o =
            KeyOptions { headers: vec![HeaderName::from_static("x-tenant")], consumer: true, ..KeyOptions::default() };
        let a = key(&o, &Method::GET, "http", "h", "/", &hm(&[("x-tenant", "a")]), Some("alice"));
        assert_eq!(a, key(&o, &Method::GET, "http", "h", "/", &hm(&[("X-Tenant", "a")]), Some("alice")));
        assert_ne!(a.hash, key(&o, &Method::GET, "http", "h", "/", &hm(&[("x-tenant", "b")]), Some("alice")).hash);
        assert_ne!(a.hash, key(&o, &Method::GET, "http", "h", "/", &hm(&[("x-tenant", "a")]), Some("bob")).hash);
        let o = KeyOptions { scheme: false, host: false, ..KeyOptions::default() };
        assert_eq!(
            key(&o, &Method::GET, "http", "a", "/x", &hm(&[]), None).hash,
            key(&o, &Method::GET, "https", "b", "/x", &hm(&[]), None).hash
        );
    }
}
