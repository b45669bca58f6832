//! Plugin instances and the typed configuration schema of every built-in plugin.
//!
//! A plugin has two halves, like Kong's `schema.lua` and `handler.lua`: its configuration schema
//! lives here (pure data, serde, unknown keys rejected, validated at load time), and its
//! implementation lives in `gw-plugins`. Keeping schemas here lets the file loader, the Admin API
//! and the OpenAPI document share one definition, and report a bad key with its line and column.
//!
//! To add a plugin: write its config struct in a module here, implement [`PluginSchema`], and add
//! one line to the `plugin_configs!` list below.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

mod access;
mod auth;
mod cache;
mod common;
mod protocols;
mod rate;
mod request_termination;
mod transform;

pub use access::{Acl, BotDetection, Cors, FailureMode, ForwardAuth, IpRestriction, RequestSizeLimiting, parse_net};
pub use auth::{BasicAuth, HmacAuth, JWT_ALGORITHMS, JwksConfig, Jwt, KeyAuth, MtlsAuth};
pub use cache::{
    CacheBypass, CacheHeuristic, CacheKeyConfig, CacheKeyQuery, CacheRedis, CacheStatusFormat, ProxyCache,
};
pub use protocols::{
    CustomPattern, GrpcTranscode, GrpcWeb, HttpRuleConfig, NamespaceMode, Soap, SoapVersionConfig, StreamingMode,
};
pub use rate::{
    ConcurrencyLimit, CounterPolicy, Quota, QuotaPeriod, RateAlgorithm, RateLimiting, StoreFailure, Throttle,
};
pub use request_termination::RequestTermination;
pub use transform::{
    InvalidJson, RemoveSpec, RenameSpec, RequestTransformer, ResponseTransformer, ValueSpec, check_template,
};

/// A validation failure inside a plugin config: the key path below `config` and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaError {
    /// Dotted key path relative to the plugin's `config`, e.g. `origins[2]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl SchemaError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SchemaError { path: path.into(), message: message.into() }
    }
}

/// What a plugin's validation may need besides its config.
#[derive(Debug, Clone, Default)]
pub struct SchemaContext {
    /// Directory that relative file paths are resolved against (the configuration file's).
    pub base_dir: Option<std::path::PathBuf>,
}

/// Checks a plugin config beyond what serde checks (value ranges, regex syntax, ...).
pub trait PluginSchema: DeserializeOwned + Serialize {
    /// Validate the config; the default accepts everything serde accepted.
    fn validate(&self) -> Result<(), SchemaError> {
        Ok(())
    }

    /// Validate with the context (files read at load, relative to the configuration); the
    /// default is [`PluginSchema::validate`].
    fn validate_with(&self, _cx: &SchemaContext) -> Result<(), SchemaError> {
        self.validate()
    }

    /// The config's file paths, as `(key below config, path)`, so a document imported into a
    /// store has them made absolute like the other files. Default: none.
    fn file_paths_mut(&mut self) -> Vec<(String, &mut String)> {
        Vec::new()
    }
}

macro_rules! plugin_configs {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal, )*) => {
        /// The typed configuration of one plugin instance; the variant is the plugin.
        #[derive(Debug, Clone, PartialEq)]
        pub enum PluginConfig {
            $( $(#[$doc])* $variant($ty), )*
        }

        impl PluginConfig {
            /// Names of every built-in plugin.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The plugin's name, e.g. `"key-auth"`.
            pub fn plugin_name(&self) -> &'static str {
                match self { $( Self::$variant(_) => $name, )* }
            }

            /// Run the plugin's own validation.
            pub fn validate(&self) -> Result<(), SchemaError> {
                self.validate_with(&SchemaContext::default())
            }

            /// Run the plugin's own validation, with files resolved by `cx`.
            pub fn validate_with(&self, cx: &SchemaContext) -> Result<(), SchemaError> {
                match self { $( Self::$variant(c) => c.validate_with(cx), )* }
            }

            /// The file paths of the config (`(key below config, path)`).
            pub fn file_paths_mut(&mut self) -> Vec<(String, &mut String)> {
                match self { $( Self::$variant(c) => c.file_paths_mut(), )* }
            }

            /// One schema per plugin: `{"plugin": <name>, "config": <its schema>}`.
            #[cfg(feature = "schema")]
            pub fn variant_schemas(g: &mut schemars::SchemaGenerator) -> Vec<serde_json::Value> {
                vec![$(
                    serde_json::json!({
                        "properties": {
                            "plugin": { "const": $name },
                            "config": g.subschema_for::<$ty>(),
                        }
                    }),
                )*]
            }

            /// Deserialize the config of plugin `name`.
            pub fn deserialize_named<'de, D: Deserializer<'de>>(name: &str, d: D) -> Result<Self, D::Error> {
                match name {
                    $( $name => <$ty>::deserialize(d).map(Self::$variant), )*
                    other => Err(de::Error::unknown_variant(other, Self::NAMES)),
                }
            }
        }

        impl Serialize for PluginConfig {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $( Self::$variant(c) => c.serialize(s), )* }
            }
        }
    };
}

plugin_configs! {
    /// API keys in a header or query parameter.
    KeyAuth(KeyAuth) = "key-auth",
    /// HTTP Basic authentication (RFC 7617).
    BasicAuth(BasicAuth) = "basic-auth",
    /// JSON Web Tokens, with consumer keys or a JWKS.
    Jwt(Jwt) = "jwt",
    /// HTTP message signatures with shared secrets.
    HmacAuth(HmacAuth) = "hmac-auth",
    /// Client certificates (mutual TLS).
    MtlsAuth(MtlsAuth) = "mtls-auth",
    /// External authorization by an auth service.
    ForwardAuth(ForwardAuth) = "forward-auth",
    /// Allow or deny consumer groups.
    Acl(Acl) = "acl",
    /// Allow or deny client IPs and networks.
    IpRestriction(IpRestriction) = "ip-restriction",
    /// Requests per second/minute/hour/day/month, local or on Redis.
    RateLimiting(RateLimiting) = "rate-limiting",
    /// Requests in flight per key.
    ConcurrencyLimit(ConcurrencyLimit) = "concurrency-limit",
    /// Requests per calendar period per consumer, with plans.
    Quota(Quota) = "quota",
    /// Refuse large request bodies.
    RequestSizeLimiting(RequestSizeLimiting) = "request-size-limiting",
    /// Refuse clients by User-Agent.
    BotDetection(BotDetection) = "bot-detection",
    /// Cross-origin resource sharing.
    Cors(Cors) = "cors",
    /// Edit the request before it goes upstream.
    RequestTransformer(RequestTransformer) = "request-transformer",
    /// Edit the upstream response.
    ResponseTransformer(ResponseTransformer) = "response-transformer",
    /// Answer every request with a fixed response (maintenance mode, blocking a route).
    RequestTermination(RequestTermination) = "request-termination",
    /// gRPC-Web clients to a gRPC upstream.
    GrpcWeb(GrpcWeb) = "grpc-web",
    /// REST/JSON to gRPC by HTTP rules.
    GrpcTranscode(GrpcTranscode) = "grpc-transcode",
    /// JSON to a SOAP/XML upstream through a template, and its XML answer back to JSON.
    Soap(Soap) = "soap",
}

impl PluginConfig {
    /// The anonymous consumer an authentication plugin falls back to, if any.
    pub fn anonymous_consumer(&self) -> Option<&str> {
        match self {
            Self::KeyAuth(c) => c.anonymous.as_deref(),
            Self::BasicAuth(c) => c.anonymous.as_deref(),
            Self::Jwt(c) => c.anonymous.as_deref(),
            Self::HmacAuth(c) => c.anonymous.as_deref(),
            Self::MtlsAuth(c) => c.anonymous.as_deref(),
            _ => None,
        }
    }

    /// Whether this is an authentication plugin (consumer-scoped instances make no sense).
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::KeyAuth(_) | Self::BasicAuth(_) | Self::Jwt(_) | Self::HmacAuth(_) | Self::MtlsAuth(_))
    }
}

/// A plugin instance (`plugins[]`): which plugin, where it applies, and its config.
///
/// Scope: no `route`/`service`/`consumer` = global. When one plugin is configured at several
/// scopes, the most specific applies (see `docs/plugins.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct FilePlugin {
    /// Instance name, unique among plugins. Default: `<plugin>` plus its scope.
    pub name: Option<String>,
    /// Route this instance applies to.
    pub route: Option<String>,
    /// Service this instance applies to.
    pub service: Option<String>,
    /// Consumer this instance applies to.
    pub consumer: Option<String>,
    /// Default `true`.
    pub enabled: Option<bool>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// The plugin and its typed config.
    pub config: PluginConfig,
}

impl FilePlugin {
    /// The instance name: the explicit `name`, or `<plugin>[@route:x][@service:y][@consumer:z]`.
    pub fn instance_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let mut s = self.config.plugin_name().to_string();
        for (k, v) in [("route", &self.route), ("service", &self.service), ("consumer", &self.consumer)] {
            if let Some(v) = v {
                s.push('@');
                s.push_str(k);
                s.push(':');
                s.push_str(v);
            }
        }
        s
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for FilePlugin {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FilePlugin".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let variants = PluginConfig::variant_schemas(g);
        schemars::json_schema!({
            "type": "object",
            "description": "A plugin instance: which plugin, an optional scope (route, service, consumer; none = global) and its typed config.",
            "properties": {
                "plugin": { "type": "string", "enum": PluginConfig::NAMES },
                "name": { "type": "string" },
                "route": { "type": "string" },
                "service": { "type": "string" },
                "consumer": { "type": "string" },
                "enabled": { "type": "boolean" },
                "tags": { "type": "array", "items": { "type": "string" } },
                "config": { "type": "object" }
            },
            "required": ["plugin"],
            "additionalProperties": false,
            "oneOf": variants
        })
    }
}

impl Serialize for FilePlugin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("plugin", self.config.plugin_name())?;
        if let Some(v) = &self.name {
            m.serialize_entry("name", v)?;
        }
        if let Some(v) = &self.route {
            m.serialize_entry("route", v)?;
        }
        if let Some(v) = &self.service {
            m.serialize_entry("service", v)?;
        }
        if let Some(v) = &self.consumer {
            m.serialize_entry("consumer", v)?;
        }
        if let Some(v) = &self.enabled {
            m.serialize_entry("enabled", v)?;
        }
        if !self.tags.is_empty() {
            m.serialize_entry("tags", &self.tags)?;
        }
        m.serialize_entry("config", &self.config)?;
        m.end()
    }
}

const PLUGIN_FIELDS: &[&str] = &["plugin", "name", "route", "service", "consumer", "enabled", "tags", "config"];

/// Deserializes `config` with the schema of the already-read plugin name.
struct ConfigSeed<'a>(&'a str);

impl<'de> de::DeserializeSeed<'de> for ConfigSeed<'_> {
    type Value = PluginConfig;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PluginConfig, D::Error> {
        PluginConfig::deserialize_named(self.0, d)
    }
}

impl<'de> Deserialize<'de> for FilePlugin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FilePlugin;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a plugin instance with `plugin` and `config`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FilePlugin, A::Error> {
                let mut plugin: Option<String> = None;
                let mut name = None;
                let mut route = None;
                let mut service = None;
                let mut consumer = None;
                let mut enabled = None;
                let mut tags = None;
                let mut config: Option<PluginConfig> = None;
                // `config` met before `plugin` (JSON documents have sorted keys): kept untyped
                // until the plugin is known; see `buffered_config` for how its errors are named.
                let mut early_config: Option<serde_json::Value> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "plugin" => {
                            if plugin.is_some() {
                                return Err(de::Error::duplicate_field("plugin"));
                            }
                            let p: String = map.next_value()?;
                            if !PluginConfig::NAMES.contains(&p.as_str()) {
                                return Err(de::Error::unknown_variant(&p, PluginConfig::NAMES));
                            }
                            plugin = Some(p);
                        }
                        "name" => name = Some(map.next_value()?),
                        "route" => route = Some(map.next_value()?),
                        "service" => service = Some(map.next_value()?),
                        "consumer" => consumer = Some(map.next_value()?),
                        "enabled" => enabled = Some(map.next_value()?),
                        "tags" => tags = Some(map.next_value()?),
                        "config" => {
                            if config.is_some() || early_config.is_some() {
                                return Err(de::Error::duplicate_field("config"));
                            }
                            match &plugin {
                                Some(p) => config = Some(map.next_value_seed(ConfigSeed(p))?),
                                None => early_config = Some(map.next_value()?),
                            }
                        }
                        other => return Err(de::Error::unknown_field(other, PLUGIN_FIELDS)),
                    }
                }
                let plugin = plugin.ok_or_else(|| de::Error::missing_field("plugin"))?;
                let config = match (config, early_config) {
                    (Some(c), _) => c,
                    (None, Some(v)) => buffered_config(&plugin, v)?,
                    (None, None) => {
                        let empty =
                            de::value::MapDeserializer::<_, de::value::Error>::new(
                                std::iter::empty::<(String, String)>(),
                            );
                        PluginConfig::deserialize_named(&plugin, empty)
                            .map_err(|e| de::Error::custom(format!("config: {e}")))?
                    }
                };
                Ok(FilePlugin { name, route, service, consumer, enabled, tags: tags.unwrap_or_default(), config })
            }
        }
        d.deserialize_map(V)
    }
}

/// The config of `plugin` from a buffered value. An error names the key inside `config` in its
/// message (`config.minute: invalid type: ...`): the loader moves that into the key path, so a
/// wrong type reads `plugins[1].config.minute: ...` whatever the order of the keys.
fn buffered_config<E: de::Error>(plugin: &str, v: serde_json::Value) -> Result<PluginConfig, E> {
    let mut track = serde_path_to_error::Track::new();
    PluginConfig::deserialize_named(plugin, serde_path_to_error::Deserializer::new(v, &mut track)).map_err(|e| {
        let inner = track.path().to_string();
        let e = e.to_string();
        let e = e.rfind(" at line ").map_or(e.as_str(), |i| &e[..i]);
        if inner == "." || inner.is_empty() {
            E::custom(format!("config: {e}"))
        } else if inner.starts_with('[') {
            E::custom(format!("config{inner}: {e}"))
        } else {
            E::custom(format!("config.{inner}: {e}"))
        }
    })
}
