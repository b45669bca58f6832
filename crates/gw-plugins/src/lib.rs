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

mod request_termination;

/// What plugin constructors may use: the whole validated configuration (consumers,
/// credentials) and process-wide services.
pub struct BuildEnv<'a> {
    /// The configuration being compiled.
    pub config: &'a Config,
    /// Process metrics.
    pub metrics: &'a Arc<Metrics>,
}

/// Build the plugin instance described by `config`.
pub fn build(config: &PluginConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, String> {
    let _ = env;
    Ok(match config {
        PluginConfig::RequestTermination(c) => Arc::new(request_termination::RequestTermination::new(c)?),
    })
}
