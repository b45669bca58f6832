//! Schemas of the authorization and security plugins: forward-auth, acl, ip-restriction,
//! request-size-limiting, bot-detection, cors.

use serde::{Deserialize, Serialize};

use super::common::{check_header_names, check_regexes, t};
use super::{PluginSchema, SchemaError};
use crate::value::{ByteSize, Dur};

/// What `forward-auth` does when the auth service cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Refuse the request with 503 (default).
    #[default]
    Closed,
    /// Let the request through (and count it in metrics).
    Open,
}

/// `forward-auth`: ask an external service whether to allow the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ForwardAuth {
    /// The auth service (`http://` or `https://`); it receives a GET with the request's headers
    /// plus `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`, `X-Forwarded-For`.
    pub url: String,
    /// Timeout of the auth call. Default `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Request headers sent to the auth service. Default: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<Vec<String>>,
    /// Headers of a 2xx auth response copied onto the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_headers: Vec<String>,
    /// Headers of a refusing auth response copied to the client. Default `www-authenticate`,
    /// `content-type`, `location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_headers: Option<Vec<String>>,
    /// When the auth service is unreachable or times out. Default `closed`.
    #[serde(default)]
    pub failure_mode: FailureMode,
}

impl PluginSchema for ForwardAuth {
    fn validate(&self) -> Result<(), SchemaError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(SchemaError::new("url", "must be an http:// or https:// URL"));
        }
        if self.url.parse::<http::Uri>().is_err() {
            return Err(SchemaError::new("url", "invalid URL"));
        }
        check_header_names("upstream_headers", &self.upstream_headers)?;
        check_header_names("request_headers", self.request_headers.as_deref().unwrap_or_default())?;
        check_header_names("client_headers", self.client_headers.as_deref().unwrap_or_default())
    }
}

/// `acl`: allow or deny consumer groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Acl {
    /// Only consumers in one of these groups may pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Consumers in one of these groups are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Do not send `X-Consumer-Groups` upstream. Default `false`.
    #[serde(default)]
    pub hide_groups_header: bool,
}

impl PluginSchema for Acl {
    fn validate(&self) -> Result<(), SchemaError> {
        match (self.allow.is_empty(), self.deny.is_empty()) {
            (true, true) => Err(SchemaError::new("allow", "give `allow` or `deny`")),
            (false, false) => Err(SchemaError::new("deny", "give either `allow` or `deny`, not both")),
            _ => Ok(()),
        }
    }
}

fn default_403() -> u16 {
    403
}

/// `ip-restriction`: allow and deny lists of IPs and CIDRs (IPv4 and IPv6), on the real client
/// IP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct IpRestriction {
    /// Only these addresses pass (when non-empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// These addresses are refused (the most specific matching entry of both lists wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Refusal status. Default 403.
    #[serde(default = "default_403")]
    pub status: u16,
    /// Refusal message. Default "your IP address is not allowed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Parse an IP or CIDR.
pub fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
}

impl PluginSchema for IpRestriction {
    fn validate(&self) -> Result<(), SchemaError> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Err(SchemaError::new("allow", "give `allow`, `deny` or both"));
        }
        for (field, list) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, s) in list.iter().enumerate() {
                parse_net(s).map_err(|e| SchemaError::new(format!("{field}[{i}]"), e))?;
            }
        }
        if !(400..=599).contains(&self.status) {
            return Err(SchemaError::new("status", "must be a 4xx or 5xx status"));
        }
        Ok(())
    }
}

/// `request-size-limiting`: refuse bodies larger than a size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestSizeLimiting {
    /// Largest body (e.g. `1MiB`).
    pub allowed_payload_size: ByteSize,
    /// Refuse requests with a body but no `Content-Length` (411). Default `false`.
    #[serde(default)]
    pub require_content_length: bool,
}

impl PluginSchema for RequestSizeLimiting {
    fn validate(&self) -> Result<(), SchemaError> {
        if self.allowed_payload_size.get() == 0 {
            return Err(SchemaError::new("allowed_payload_size", "must be greater than zero"));
        }
        Ok(())
    }
}

/// `bot-detection`: refuse clients by `User-Agent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BotDetection {
    /// Regexes of user agents always let through (checked first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Regexes of user agents refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Also refuse a built-in list of well-known crawlers and scanners. Default `true`.
    #[serde(default = "t")]
    pub deny_known_bots: bool,
    /// Refuse requests without a `User-Agent`. Default `false`.
    #[serde(default)]
    pub deny_missing_user_agent: bool,
}

impl PluginSchema for BotDetection {
    fn validate(&self) -> Result<(), SchemaError> {
        check_regexes("allow", &self.allow)?;
        check_regexes("deny", &self.deny)
    }
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"].iter().map(|s| s.to_string()).collect()
}

/// `cors`: answer preflights and add CORS headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins: `*`, exact (`https://app.example.com`) or `~regex`.
    pub origins: Vec<String>,
    /// Allowed methods. Default GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS.
    #[serde(default = "default_cors_methods")]
    pub methods: Vec<String>,
    /// Allowed request headers. Default: those the preflight asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    /// Response headers exposed to the page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_headers: Vec<String>,
    /// Allow credentials (cookies). Default `false`; then `*` is sent as the origin.
    #[serde(default)]
    pub credentials: bool,
    /// How long browsers cache a preflight. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Dur>,
    /// Pass preflights to the upstream instead of answering them. Default `false`.
    #[serde(default)]
    pub preflight_continue: bool,
}

impl PluginSchema for Cors {
    fn validate(&self) -> Result<(), SchemaError> {
        if self.origins.is_empty() {
            return Err(SchemaError::new("origins", "list at least one origin (or \"*\")"));
        }
        for (i, o) in self.origins.iter().enumerate() {
            if let Some(re) = o.strip_prefix('~') {
                check_regexes(&format!("origins[{i}]"), &[re.to_string()])?;
            }
        }
        for (i, m) in self.methods.iter().enumerate() {
            if http::Method::from_bytes(m.as_bytes()).is_err() || m.to_ascii_uppercase() != *m {
                return Err(SchemaError::new(format!("methods[{i}]"), format!("{m:?} is not an upper-case method")));
            }
        }
        check_header_names("headers", self.headers.as_deref().unwrap_or_default())?;
        check_header_names("exposed_headers", &self.exposed_headers)
    }
}
