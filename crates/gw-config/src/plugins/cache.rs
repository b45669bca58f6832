//! Schema of the `proxy-cache` plugin (the response cache; see `docs/caching.md`). The engine
//! is `gw-cache`, which converts this schema into its options; the plugin is in `gw-plugins`.

use serde::{Deserialize, Serialize};

use super::common::check_header_names;
use super::{PluginSchema, SchemaError};
use crate::value::{ByteSize, Dur, Secret};

/// How the query string enters the cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CacheKeyQuery {
    /// Parameters sorted by name (default).
    #[default]
    Sorted,
    /// Exactly as received.
    AsIs,
    /// Dropped.
    Ignore,
}

/// `key`: what identifies a stored response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CacheKeyConfig {
    /// Include the scheme. Default `true`.
    #[serde(default = "super::common::t")]
    pub scheme: bool,
    /// Include the host. Default `true`.
    #[serde(default = "super::common::t")]
    pub host: bool,
    /// `sorted` (default), `as_is` or `ignore`.
    #[serde(default)]
    pub query: CacheKeyQuery,
    /// Only these query parameters enter the key (sorted); the others are ignored. Requires
    /// `query: sorted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_allow: Option<Vec<String>>,
    /// Request header fields whose values enter the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Include the authenticated consumer. Default `false`.
    #[serde(default)]
    pub consumer: bool,
}

impl Default for CacheKeyConfig {
    fn default() -> Self {
        CacheKeyConfig {
            scheme: true,
            host: true,
            query: CacheKeyQuery::Sorted,
            query_allow: None,
            headers: Vec::new(),
            consumer: false,
        }
    }
}

/// `heuristic`: freshness for responses without explicit freshness (RFC 9111 section 4.2.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CacheHeuristic {
    /// Percentage of the time since `Last-Modified` (1-100). Default `10`.
    #[serde(default = "ten")]
    pub percent: u8,
    /// Upper bound. Default `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Dur>,
}

fn ten() -> u8 {
    10
}

/// How the cache status is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CacheStatusFormat {
    /// `<cache_status_header>: HIT` (default).
    #[default]
    Simple,
    /// RFC 9211 `Cache-Status: gatehouse; hit; ttl=42`.
    Rfc9211,
    /// No header.
    Off,
}

/// A bypass rule: requests with this header field (and value) neither use nor fill the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CacheBypass {
    /// Header field name.
    pub header: String,
    /// Only when the value equals this (case-sensitive). Default: any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `redis`: the shared tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CacheRedis {
    /// `redis://` or `rediss://` URL. Default: `gateway.redis.url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// Key prefix. Default `gh:cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Largest body written to Redis. Default `1MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<ByteSize>,
    /// Timeout of one Redis command. Default `50ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// How long Redis is skipped after a failure. Default `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Dur>,
}

/// `proxy-cache`: an RFC 9111 shared cache in memory and, optionally, on Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProxyCache {
    /// Memory tier size. Default `256MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_size: Option<ByteSize>,
    /// Largest response body stored; larger responses stream through uncached. Default `8MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<ByteSize>,
    /// Methods answered from the cache: `GET` and `HEAD` (default both; `HEAD` is answered
    /// from a stored `GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Status codes stored. Default 200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410,
    /// 414, 501.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<u16>>,
    /// The cache key.
    #[serde(default)]
    pub key: CacheKeyConfig,
    /// Heuristic freshness. Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heuristic: Option<CacheHeuristic>,
    /// `stale-while-revalidate` for responses without one. Default `0s` (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_while_revalidate: Option<Dur>,
    /// `stale-if-error` for responses without one. Default `0s` (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_if_error: Option<Dur>,
    /// Store responses with `Set-Cookie`. Default `false`.
    #[serde(default)]
    pub store_set_cookie: bool,
    /// `simple` (default), `rfc9211` or `off`.
    #[serde(default)]
    pub cache_status: CacheStatusFormat,
    /// Header of the simple form. Default `x-cache-status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_status_header: Option<String>,
    /// Add RFC 9211's `key` parameter to `Cache-Status`: the primary cache key as 32 hex
    /// digits, the form `POST /cache/purge {"key": ...}` accepts. Default `false` (it shows how
    /// responses are keyed); only with `cache_status: rfc9211`.
    #[serde(default)]
    pub cache_status_key: bool,
    /// Accept the `PURGE` method on cached URLs. Default `false`.
    #[serde(default)]
    pub purge_method: bool,
    /// One upstream request per key at a time. Default `true`.
    #[serde(default = "super::common::t")]
    pub coalesce: bool,
    /// How long a coalesced request waits for the response head before going upstream itself.
    /// Default `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_wait: Option<Dur>,
    /// Requests that bypass the cache.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypass: Vec<CacheBypass>,
    /// The shared Redis tier. Default: none (memory only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<CacheRedis>,
}

impl PluginSchema for ProxyCache {
    fn validate(&self) -> Result<(), SchemaError> {
        if let Some(m) = &self.memory_size
            && m.get() < 1 << 20
        {
            return Err(SchemaError::new("memory_size", "must be at least 1MiB"));
        }
        if let Some(m) = &self.max_object_size {
            if m.get() == 0 || m.get() > u64::from(u32::MAX) {
                return Err(SchemaError::new("max_object_size", "must be between 1 byte and 4GiB"));
            }
            let mem = self.memory_size.as_ref().map_or(256 << 20, |m| m.get());
            if m.get() > mem {
                return Err(SchemaError::new("max_object_size", "must not exceed memory_size"));
            }
        }
        if let Some(ms) = &self.methods {
            if ms.is_empty() {
                return Err(SchemaError::new("methods", "must not be empty"));
            }
            for (i, m) in ms.iter().enumerate() {
                if !(m == "GET" || m == "HEAD") {
                    return Err(SchemaError::new(
                        format!("methods[{i}]"),
                        format!("{m:?}: only GET and HEAD are cached"),
                    ));
                }
            }
        }
        if let Some(st) = &self.statuses {
            if st.is_empty() {
                return Err(SchemaError::new("statuses", "must not be empty"));
            }
            for (i, s) in st.iter().enumerate() {
                if !(200..=599).contains(s) || *s == 206 || *s == 304 {
                    return Err(SchemaError::new(
                        format!("statuses[{i}]"),
                        format!("{s} cannot be stored (use final statuses 200-599 other than 206 and 304)"),
                    ));
                }
            }
        }
        if let Some(allow) = &self.key.query_allow {
            if self.key.query != CacheKeyQuery::Sorted {
                return Err(SchemaError::new("key.query_allow", "requires `query: sorted`"));
            }
            for (i, p) in allow.iter().enumerate() {
                if p.is_empty() || p.contains(['&', '=', '#']) {
                    return Err(SchemaError::new(
                        format!("key.query_allow[{i}]"),
                        format!("{p:?} is not a parameter name"),
                    ));
                }
            }
        }
        check_header_names("key.headers", &self.key.headers)?;
        if let Some(h) = &self.heuristic {
            if h.percent == 0 || h.percent > 100 {
                return Err(SchemaError::new("heuristic.percent", "must be between 1 and 100"));
            }
            if h.max.as_ref().is_some_and(|d| d.get().is_zero()) {
                return Err(SchemaError::new("heuristic.max", "must be greater than zero"));
            }
        }
        if let Some(h) = &self.cache_status_header {
            check_header_names("cache_status_header", std::slice::from_ref(h))?;
            if self.cache_status != CacheStatusFormat::Simple {
                return Err(SchemaError::new("cache_status_header", "only applies with `cache_status: simple`"));
            }
        }
        if self.cache_status_key && self.cache_status != CacheStatusFormat::Rfc9211 {
            return Err(SchemaError::new("cache_status_key", "only applies with `cache_status: rfc9211`"));
        }
        if let Some(w) = &self.coalesce_wait {
            if !self.coalesce {
                return Err(SchemaError::new("coalesce_wait", "only applies with `coalesce: true`"));
            }
            if w.get().is_zero() || w.get() > std::time::Duration::from_secs(300) {
                return Err(SchemaError::new("coalesce_wait", "must be between 1ms and 5m"));
            }
        }
        for (i, b) in self.bypass.iter().enumerate() {
            check_header_names(&format!("bypass[{i}].header"), std::slice::from_ref(&b.header))?;
            if let Some(v) = &b.value
                && http::HeaderValue::from_str(v).is_err()
            {
                return Err(SchemaError::new(format!("bypass[{i}].value"), "not a valid header value"));
            }
        }
        if let Some(r) = &self.redis {
            if let Some(u) = &r.url
                && !(u.expose().starts_with("redis://") || u.expose().starts_with("rediss://"))
            {
                return Err(SchemaError::new("redis.url", "must be a redis:// or rediss:// URL"));
            }
            if let Some(p) = &r.prefix
                && (p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_graphic() && !b"*?[]\\".contains(&b)))
            {
                return Err(SchemaError::new(
                    "redis.prefix",
                    "must be 1-64 visible ASCII characters without glob characters (* ? [ ] \\)",
                ));
            }
            if let Some(m) = &r.max_object_size
                && (m.get() == 0 || m.get() > 512 << 20)
            {
                return Err(SchemaError::new("redis.max_object_size", "must be between 1 byte and 512MiB"));
            }
            for (k, d) in [("redis.timeout", &r.timeout), ("redis.backoff", &r.backoff)] {
                if let Some(d) = d
                    && (d.get() < std::time::Duration::from_millis(1) || d.get() > std::time::Duration::from_secs(60))
                {
                    return Err(SchemaError::new(k, "must be between 1ms and 60s"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ProxyCache, String> {
        let de = serde_saphyr::from_str::<serde_json::Value>(yaml).map_err(|e| e.to_string())?;
        let c: ProxyCache = serde_path_to_error::deserialize(de).map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
        c.validate().map_err(|e| format!("{}: {}", e.path, e.message))?;
        Ok(c)
    }

    #[test]
    fn every_option_parses() {
        let c = parse(
            r#"
memory_size: 64MiB
max_object_size: 2MiB
methods: [GET, HEAD]
statuses: [200, 404]
key: { scheme: false, host: true, query: sorted, query_allow: [id, page], headers: [X-Tenant], consumer: true }
heuristic: { percent: 20, max: 1h }
stale_while_revalidate: 30s
stale_if_error: 5m
store_set_cookie: false
cache_status: simple
cache_status_header: x-cache
purge_method: true
coalesce: true
coalesce_wait: 2s
bypass: [{ header: x-no-cache }, { header: x-debug, value: "1" }]
redis: { url: "redis://127.0.0.1:6379/0", prefix: "gh:cache:api", max_object_size: 512KiB, timeout: 50ms, backoff: 1s }
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.key.query_allow.as_deref(), Some(&["id".to_string(), "page".to_string()][..]));
        assert_eq!(c.redis.as_ref().and_then(|r| r.prefix.as_deref()), Some("gh:cache:api"));
        let d = parse("{}").unwrap_or_else(|e| panic!("{e}"));
        assert!(d.coalesce && d.key.scheme && d.key.host && d.redis.is_none() && d.heuristic.is_none());
        assert!(parse("cache_status: rfc9211").is_ok());
        assert!(parse("cache_status: rfc9211\ncache_status_key: true").is_ok_and(|c| c.cache_status_key));
    }

    /// Registered: a configuration may name it.
    #[test]
    fn registered() {
        assert!(super::super::PluginConfig::NAMES.contains(&"proxy-cache"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("memory_size: 1KiB", "memory_size"),
            ("max_object_size: 0", "max_object_size"),
            ("memory_size: 2MiB\nmax_object_size: 4MiB", "max_object_size"),
            ("methods: [GET, POST]", "methods[1]"),
            ("statuses: [200, 206]", "statuses[1]"),
            ("statuses: [100]", "statuses[0]"),
            ("key: { query: as_is, query_allow: [a] }", "key.query_allow"),
            ("key: { query_allow: [a, 'b&c'] }", "key.query_allow[1]"),
            ("key: { headers: ['bad header'] }", "key.headers[0]"),
            ("heuristic: { percent: 0 }", "heuristic.percent"),
            ("heuristic: { max: 0s }", "heuristic.max"),
            ("cache_status: rfc9211\ncache_status_header: x-c", "cache_status_header"),
            ("coalesce: false\ncoalesce_wait: 1s", "coalesce_wait"),
            ("cache_status_key: true", "cache_status_key"),
            ("bypass: [{ header: 'a b' }]", "bypass[0].header"),
            ("redis: { url: 'http://x' }", "redis.url"),
            ("redis: { prefix: 'a*' }", "redis.prefix"),
            ("redis: { timeout: 0s }", "redis.timeout"),
            ("redis: { max_object_size: 1GiB }", "redis.max_object_size"),
            ("unknown_key: 1", "unknown field"),
            ("key: { nope: 1 }", "key"),
            ("cache_status: loud", "cache_status"),
        ];
        for (yaml, want) in cases {
            match parse(yaml) {
                Ok(_) => panic!("{yaml:?} accepted"),
                Err(e) => assert!(e.contains(want), "{yaml:?}: {e} (want {want})"),
            }
        }
    }
}
