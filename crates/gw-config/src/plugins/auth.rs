//! Schemas of the authentication plugins: key-auth, basic-auth, jwt, hmac-auth, mtls-auth.

use serde::{Deserialize, Serialize};

use super::common::{check_header_names, t};
use super::{PluginSchema, SchemaError};
use crate::value::{ByteSize, Dur};

fn default_key_names() -> Vec<String> {
    vec!["apikey".into(), "x-api-key".into()]
}

/// `key-auth`: an API key in a header or a query parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyAuth {
    /// Header and query parameter names that may carry the key. Default `apikey`, `x-api-key`.
    #[serde(default = "default_key_names")]
    pub key_names: Vec<String>,
    /// Look in headers. Default `true`.
    #[serde(default = "t")]
    pub key_in_header: bool,
    /// Look in the query string. Default `true`.
    #[serde(default = "t")]
    pub key_in_query: bool,
    /// Remove the key before proxying. Default `true`.
    #[serde(default = "t")]
    pub hide_credentials: bool,
    /// Consumer to use when authentication fails (the request is then let through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
}

impl PluginSchema for KeyAuth {
    fn validate(&self) -> Result<(), SchemaError> {
        if self.key_names.is_empty() {
            return Err(SchemaError::new("key_names", "list at least one name"));
        }
        if !self.key_in_header && !self.key_in_query {
            return Err(SchemaError::new("key_in_header", "enable key_in_header, key_in_query or both"));
        }
        check_header_names("key_names", &self.key_names)
    }
}

fn default_realm() -> String {
    "gatehouse".into()
}

/// `basic-auth`: RFC 7617 user name and password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// Realm in `WWW-Authenticate`. Default `gatehouse`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Remove `Authorization` before proxying. Default `true`.
    #[serde(default = "t")]
    pub hide_credentials: bool,
    /// Consumer to use when authentication fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
}

impl PluginSchema for BasicAuth {
    fn validate(&self) -> Result<(), SchemaError> {
        if self.realm.contains('"') {
            return Err(SchemaError::new("realm", "must not contain '\"'"));
        }
        Ok(())
    }
}

/// JWKS source of the `jwt` plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// Where the key set is fetched (`http://` or `https://`).
    pub url: String,
    /// How long fetched keys stay valid. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<Dur>,
    /// Timeout of one fetch. Default `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Algorithms accepted for keys of this set that do not name their own. Default `RS256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
}

fn default_jwt_headers() -> Vec<String> {
    vec!["authorization".into()]
}

fn default_key_claim() -> String {
    "iss".into()
}

/// `jwt`: signed JSON Web Tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// Headers carrying `Bearer <token>` (or the bare token). Default `authorization`.
    #[serde(default = "default_jwt_headers")]
    pub header_names: Vec<String>,
    /// Query parameters carrying the token. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_param_names: Vec<String>,
    /// Cookies carrying the token. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookie_names: Vec<String>,
    /// Claim whose value selects a consumer's `jwt` credential. Default `iss`.
    #[serde(default = "default_key_claim")]
    pub key_claim: String,
    /// Also accept tokens signed by keys of this JWKS (selected by `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksConfig>,
    /// For JWKS tokens: the claim naming the consumer (matched against user name, then
    /// custom_id). Without it, JWKS tokens authenticate without a consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_claim: Option<String>,
    /// Accepted `iss` values (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<String>,
    /// Accepted `aud` values (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Claims that must be present. Default `exp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_claims: Option<Vec<String>>,
    /// Clock leeway for `exp`, `nbf` and `iat`. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<Dur>,
    /// Longest accepted lifetime (`exp - iat`, or `exp - now` without `iat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_expiration: Option<Dur>,
    /// Largest accepted token. Default `8KiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_bytes: Option<ByteSize>,
    /// Claims forwarded upstream as headers: claim -> header name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub forward_claims: std::collections::BTreeMap<String, String>,
    /// Remove the token before proxying. Default `true`.
    #[serde(default = "t")]
    pub hide_credentials: bool,
    /// Consumer to use when authentication fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
}

/// JWT algorithms Gatehouse accepts (never `none`).
pub const JWT_ALGORITHMS: &[&str] =
    &["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

impl PluginSchema for Jwt {
    fn validate(&self) -> Result<(), SchemaError> {
        if self.header_names.is_empty() && self.query_param_names.is_empty() && self.cookie_names.is_empty() {
            return Err(SchemaError::new("header_names", "name at least one header, query parameter or cookie"));
        }
        check_header_names("header_names", &self.header_names)?;
        if let Some(j) = &self.jwks {
            if !(j.url.starts_with("http://") || j.url.starts_with("https://")) {
                return Err(SchemaError::new("jwks.url", "must be an http:// or https:// URL"));
            }
            for (i, a) in j.algorithms.iter().flatten().enumerate() {
                if !JWT_ALGORITHMS.contains(&a.as_str()) || a.starts_with("HS") {
                    return Err(SchemaError::new(
                        format!("jwks.algorithms[{i}]"),
                        format!("{a:?}: use an asymmetric algorithm (RS*, PS*, ES*, EdDSA)"),
                    ));
                }
            }
        }
        if self.consumer_claim.is_some() && self.jwks.is_none() {
            return Err(SchemaError::new("consumer_claim", "only applies with `jwks`"));
        }
        check_header_names("forward_claims", &self.forward_claims.values().cloned().collect::<Vec<_>>())
    }
}

fn default_clock_skew() -> Dur {
    Dur::secs(300)
}

fn default_hmac_algorithms() -> Vec<String> {
    vec!["hmac-sha256".into(), "hmac-sha384".into(), "hmac-sha512".into()]
}

/// `hmac-auth`: HTTP message signatures (`Authorization: hmac` / `Signature` header, the
/// draft-cavage format Kong uses) over chosen headers and the request target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HmacAuth {
    /// Largest accepted difference between `Date` and the gateway clock. Default `300s`.
    #[serde(default = "default_clock_skew")]
    pub clock_skew: Dur,
    /// Accepted algorithms. Default `hmac-sha256`, `hmac-sha384`, `hmac-sha512`.
    #[serde(default = "default_hmac_algorithms")]
    pub algorithms: Vec<String>,
    /// Headers (and `@request-target`) that must be part of the signature. Default `date`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enforce_headers: Vec<String>,
    /// Require and check a `Digest: SHA-256=...` of the body. Default `false`.
    #[serde(default)]
    pub validate_request_body: bool,
    /// Remove the signature headers before proxying. Default `true`.
    #[serde(default = "t")]
    pub hide_credentials: bool,
    /// Realm in `WWW-Authenticate`. Default `gatehouse`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Consumer to use when authentication fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
    /// Accept each signature once: a signed request seen again within its validity window
    /// (`2 x clock_skew`) on this node is refused (at most 100,000 signatures remembered).
    /// Default `false` (two identical requests signed in the same second would collide).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reject_replays: bool,
}

impl PluginSchema for HmacAuth {
    fn validate(&self) -> Result<(), SchemaError> {
        for (i, a) in self.algorithms.iter().enumerate() {
            if !default_hmac_algorithms().contains(a) {
                return Err(SchemaError::new(format!("algorithms[{i}]"), format!("{a:?}: use hmac-sha256/384/512")));
            }
        }
        if self.algorithms.is_empty() {
            return Err(SchemaError::new("algorithms", "list at least one algorithm"));
        }
        Ok(())
    }
}

/// `mtls-auth`: the client certificate, verified by the listener against its `client_ca_file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MtlsAuth {
    /// Accept a verified certificate that maps to no consumer (no consumer is set). Default
    /// `false`: the certificate must map to a consumer's `mtls` credential.
    #[serde(default)]
    pub skip_consumer_lookup: bool,
    /// Consumer to use when authentication fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
}

impl PluginSchema for MtlsAuth {}
