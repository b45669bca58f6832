//! `request-termination`: answer with a fixed response without calling the upstream.

use serde::{Deserialize, Serialize};

use super::{PluginSchema, SchemaError};

/// Config of `request-termination`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestTermination {
    /// Response status. Default 503.
    #[serde(default = "default_status")]
    pub status: u16,
    /// A message, sent as `{"message": ...}` JSON when `body` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A raw body (with `content_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Content type of `body`. Default `text/plain; charset=utf-8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

fn default_status() -> u16 {
    503
}

impl PluginSchema for RequestTermination {
    fn validate(&self) -> Result<(), SchemaError> {
        if !(100..=599).contains(&self.status) {
            return Err(SchemaError::new("status", format!("status {} is not in 100..=599", self.status)));
        }
        if self.body.is_some() && self.message.is_some() {
            return Err(SchemaError::new("body", "give either `message` or `body`, not both"));
        }
        Ok(())
    }
}
