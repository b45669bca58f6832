//! The cache's runtime options, and their conversion from the `proxy-cache` schema of
//! `gw-config`.

use std::time::Duration;

use gw_config::plugins::{CacheKeyQuery, CacheStatusFormat, ProxyCache};
use http::{HeaderName, Method};

use crate::key::{KeyOptions, QueryMode};
use crate::policy::{DEFAULT_STATUSES, Heuristic, Rules};
use crate::status::StatusHeader;
use crate::store::RedisTierOptions;

/// A request header rule that bypasses the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BypassRule {
    /// Field name.
    pub header: HeaderName,
    /// Required value (any when `None`).
    pub value: Option<String>,
}

impl BypassRule {
    /// Whether a request matches.
    pub fn matches(&self, h: &http::HeaderMap) -> bool {
        match &self.value {
            None => h.contains_key(&self.header),
            Some(v) => h.get_all(&self.header).iter().any(|x| x.as_bytes() == v.as_bytes()),
        }
    }
}

/// Everything a [`crate::Cache`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// RFC 9111 rules that are configurable.
    pub rules: Rules,
    /// The primary key.
    pub key: KeyOptions,
    /// Memory tier size, bytes.
    pub memory_size: u64,
    /// Largest body stored, bytes.
    pub max_object_size: u64,
    /// At most this many variants (`Vary`) per primary key.
    pub max_variants: usize,
    /// Coalesce concurrent misses.
    pub coalesce: bool,
    /// How long a coalesced request waits for the head.
    pub coalesce_wait: Duration,
    /// The status header; `None` = no header.
    pub status_header: Option<StatusHeader>,
    /// Bypass rules.
    pub bypass: Vec<BypassRule>,
    /// Whether `PURGE` is accepted (the plugin's decision; kept here for it).
    pub purge_method: bool,
    /// The shared tier.
    pub redis: Option<RedisTierOptions>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            rules: Rules::default(),
            key: KeyOptions::default(),
            memory_size: 256 << 20,
            max_object_size: 8 << 20,
            max_variants: 16,
            coalesce: true,
            coalesce_wait: Duration::from_secs(5),
            status_header: Some(StatusHeader::default()),
            bypass: Vec::new(),
            purge_method: false,
            redis: None,
        }
    }
}

/// The configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("proxy-cache: {key}: {message}")]
pub struct OptionsError {
    /// The key below the plugin's `config`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl CacheOptions {
    /// Options from a validated `proxy-cache` config. `gateway_redis_url` is
    /// `gateway.redis.url`, used when `redis.url` is not given; `redis_ca_pem` the CA of a
    /// `rediss://` Redis.
    pub fn from_schema(
        c: &ProxyCache,
        gateway_redis_url: Option<&str>,
        redis_ca_pem: Option<Vec<u8>>,
    ) -> Result<CacheOptions, OptionsError> {
        let err = |key: &str, message: &str| OptionsError { key: key.into(), message: message.into() };
        let d = CacheOptions::default();
        let methods = match &c.methods {
            None => d.rules.methods.clone(),
            Some(ms) => {
                let mut v = Vec::new();
                for m in ms {
                    v.push(Method::from_bytes(m.as_bytes()).map_err(|_| err("methods", "invalid method"))?);
                }
                v
            }
        };
        let rules = Rules {
            methods,
            statuses: c.statuses.clone().unwrap_or_else(|| DEFAULT_STATUSES.to_vec()),
            heuristic: c.heuristic.as_ref().map(|h| Heuristic {
                percent: h.percent,
                max: h.max.as_ref().map_or(Duration::from_secs(86_400), |m| m.get()),
            }),
            default_stale_while_revalidate: c.stale_while_revalidate.as_ref().map_or(0, |d| d.get().as_secs()),
            default_stale_if_error: c.stale_if_error.as_ref().map_or(0, |d| d.get().as_secs()),
            store_set_cookie: c.store_set_cookie,
        };
        let mut headers = Vec::new();
        for h in &c.key.headers {
            headers.push(
                HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| err("key.headers", "invalid header name"))?,
            );
        }
        let key = KeyOptions {
            scheme: c.key.scheme,
            host: c.key.host,
            query: match (c.key.query, &c.key.query_allow) {
                (CacheKeyQuery::Sorted, Some(a)) => QueryMode::Allow(a.clone()),
                (CacheKeyQuery::Sorted, None) => QueryMode::Sorted,
                (CacheKeyQuery::AsIs, _) => QueryMode::AsIs,
                (CacheKeyQuery::Ignore, _) => QueryMode::Ignore,
            },
            headers,
            consumer: c.key.consumer,
        };
        let status_header = match c.cache_status {
            CacheStatusFormat::Off => None,
            CacheStatusFormat::Rfc9211 => {
                Some(StatusHeader { rfc9211: true, key: c.cache_status_key, ..StatusHeader::default() })
            }
            CacheStatusFormat::Simple => Some(StatusHeader {
                name: match &c.cache_status_header {
                    Some(h) => HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                        .map_err(|_| err("cache_status_header", "invalid header name"))?,
                    None => StatusHeader::default().name,
                },
                ..StatusHeader::default()
            }),
        };
        let mut bypass = Vec::new();
        for b in &c.bypass {
            bypass.push(BypassRule {
                header: HeaderName::from_bytes(b.header.to_ascii_lowercase().as_bytes())
                    .map_err(|_| err("bypass", "invalid header name"))?,
                value: b.value.clone(),
            });
        }
        let redis = match &c.redis {
            None => None,
            Some(r) => {
                let url = r
                    .url
                    .as_ref()
                    .map(|u| u.expose().to_string())
                    .or_else(|| gateway_redis_url.map(str::to_string))
                    .ok_or_else(|| err("redis.url", "no URL: set redis.url or gateway.redis.url"))?;
                Some(RedisTierOptions {
                    url,
                    prefix: r.prefix.clone().unwrap_or_else(|| "gh:cache".into()),
                    timeout: r.timeout.as_ref().map_or(Duration::from_millis(50), |d| d.get()),
                    backoff: r.backoff.as_ref().map_or(Duration::from_secs(1), |d| d.get()),
                    max_object_size: r.max_object_size.as_ref().map_or(1 << 20, |m| m.get()),
                    ca_pem: redis_ca_pem,
                })
            }
        };
        Ok(CacheOptions {
            rules,
            key,
            memory_size: c.memory_size.as_ref().map_or(d.memory_size, |m| m.get()),
            max_object_size: c.max_object_size.as_ref().map_or(d.max_object_size, |m| m.get()),
            max_variants: d.max_variants,
            coalesce: c.coalesce,
            coalesce_wait: c.coalesce_wait.as_ref().map_or(d.coalesce_wait, |w| w.get()),
            status_header,
            bypass,
            purge_method: c.purge_method,
            redis,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(yaml: &str) -> ProxyCache {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let o = CacheOptions::from_schema(&schema("{}"), None, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o, CacheOptions::default());
        assert_eq!(o.key.query, QueryMode::Sorted);
        assert!(o.rules.heuristic.is_none());
    }

    #[test]
    fn conversion() {
        let s = schema(
            "key: { query_allow: [id], headers: [X-Tenant] }\nheuristic: { percent: 5 }\nstale_if_error: 1m\n\
             cache_status: rfc9211\nbypass: [{ header: X-No-Cache, value: '1' }]\nredis: { prefix: p }",
        );
        let o = CacheOptions::from_schema(&s, Some("redis://127.0.0.1:6379"), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.key.query, QueryMode::Allow(vec!["id".into()]));
        assert_eq!(o.key.headers, vec![HeaderName::from_static("x-tenant")]);
        assert_eq!(o.rules.heuristic, Some(Heuristic { percent: 5, max: Duration::from_secs(86_400) }));
        assert_eq!(o.rules.default_stale_if_error, 60);
        assert!(o.status_header.as_ref().is_some_and(|h| h.rfc9211));
        let mut h = http::HeaderMap::new();
        h.insert("x-no-cache", http::HeaderValue::from_static("1"));
        assert!(o.bypass[0].matches(&h));
        h.insert("x-no-cache", http::HeaderValue::from_static("0"));
        assert!(!o.bypass[0].matches(&h));
        assert_eq!(
            o.redis.as_ref().map(|r| (r.url.as_str(), r.prefix.as_str())),
            Some(("redis://127.0.0.1:6379", "p"))
        );
        let e = CacheOptions::from_schema(&schema("redis: {}"), None, None);
        assert_eq!(e.map_err(|e| e.key), Err("redis.url".to_string()));
        assert!(
            CacheOptions::from_schema(&schema("cache_status: off"), None, None)
                .is_ok_and(|o| o.status_header.is_none())
        );
    }
}
