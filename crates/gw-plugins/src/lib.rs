//! Gatehouse built-in plugins.
//!
//! One module per plugin. Each turns its configuration schema (from `gw_config::plugins`) into an
//! implementation of [`gw_core::Plugin`]. [`build`] is the single entry point the proxy calls when
//! it compiles a configuration; it runs off the request path and may fail with a message that is
//! reported like any other configuration error.
//!
//! How to add a plugin: see `docs/writing-a-plugin.md`.

use std::sync::Arc;

use gw_config::model::Config;
use gw_config::plugins::PluginConfig;
use gw_core::Plugin;
use gw_observability::Metrics;

mod acl;
mod basic_auth;
mod bot_detection;
mod concurrency_limit;
mod cors;
mod directory;
mod forward_auth;
mod grpc_transcode;
mod grpc_web;
mod hmac_auth;
mod ip_restriction;
mod jwt;
mod key_auth;
mod limits;
mod mtls_auth;
mod proxy_cache;
mod quota;
mod rate_limiting;
mod request_size_limiting;
mod request_termination;
mod soap;
mod template;
mod transformer;
mod util;

pub use directory::Directory;
pub use limits::redis_store;
pub use proxy_cache::{CacheSlot, PurgePeers, apply_peer_purge, caches, set_purge_peers};
pub use quota::quota_counters;

/// What plugin constructors may use: the whole validated configuration (consumers,
/// credentials) and process-wide services.
pub struct BuildEnv<'a> {
    /// The configuration being compiled.
    pub config: &'a Config,
    /// Process metrics.
    pub metrics: &'a Arc<Metrics>,
    /// Consumers and their credentials, indexed once per configuration.
    pub directory: Arc<Directory>,
    /// Wall clock for counters per period (injectable in tests).
    pub clock: Arc<dyn gw_core::Clock>,
    /// The gateway's tracer for work outside requests (background tasks' spans).
    pub spans: gw_core::BackgroundSpans,
}

/// Build the plugin instance described by `config`. `instance` is its stable name: plugins
/// that count (rate limits, quotas) key their state by it so that counters survive reloads.
pub fn build(config: &PluginConfig, env: &BuildEnv<'_>, instance: &str) -> Result<Arc<dyn Plugin>, String> {
    let dir = || env.directory.clone();
    Ok(match config {
        PluginConfig::KeyAuth(c) => Arc::new(key_auth::KeyAuth::new(c, dir())?),
        PluginConfig::BasicAuth(c) => Arc::new(basic_auth::BasicAuth::new(c, dir())?),
        PluginConfig::Jwt(c) => Arc::new(jwt::JwtPlugin::new(c, dir())?),
        PluginConfig::HmacAuth(c) => Arc::new(hmac_auth::HmacAuth::new(c, dir())),
        PluginConfig::MtlsAuth(c) => Arc::new(mtls_auth::MtlsAuth::new(c, dir())),
        PluginConfig::ForwardAuth(c) => Arc::new(forward_auth::ForwardAuth::new(c, env.metrics.clone())?),
        PluginConfig::Acl(c) => Arc::new(acl::Acl::new(c)),
        PluginConfig::IpRestriction(c) => Arc::new(ip_restriction::IpRestriction::new(c)?),
        PluginConfig::RateLimiting(c) => Arc::new(rate_limiting::RateLimiting::new(c, env, instance)?),
        PluginConfig::ConcurrencyLimit(c) => {
            Arc::new(concurrency_limit::ConcurrencyLimit::new(c, env.metrics.clone(), instance)?)
        }
        PluginConfig::Quota(c) => Arc::new(quota::Quota::new(c, env, instance)?),
        PluginConfig::RequestSizeLimiting(c) => Arc::new(request_size_limiting::RequestSizeLimiting::new(c)),
        PluginConfig::BotDetection(c) => Arc::new(bot_detection::BotDetection::new(c)?),
        PluginConfig::Cors(c) => Arc::new(cors::Cors::new(c)?),
        PluginConfig::RequestTransformer(c) => Arc::new(transformer::RequestTransformer::new(c)?),
        PluginConfig::ResponseTransformer(c) => Arc::new(transformer::ResponseTransformer::new(c)?),
        PluginConfig::RequestTermination(c) => Arc::new(request_termination::RequestTermination::new(c)?),
        PluginConfig::GrpcWeb(c) => Arc::new(grpc_web::GrpcWeb::new(c)),
        PluginConfig::GrpcTranscode(c) => Arc::new(grpc_transcode::GrpcTranscode::new(c)?),
        PluginConfig::Soap(c) => Arc::new(soap::Soap::new(c)?),
        PluginConfig::ProxyCache(c) => Arc::new(proxy_cache::ProxyCache::new(c, env, instance)?),
    })
}
