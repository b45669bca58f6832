//! Schemas of the protocol translation plugins: `grpc-web`, `grpc-transcode` and `soap`
//! (see `docs/protocols.md`); their implementations are in `gw-plugins`. Validation compiles
//! the descriptors and rules and parses the templates, so errors name the file and the method
//! at load time, never at request time.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{PluginSchema, SchemaContext, SchemaError};
use crate::value::ByteSize;

fn t() -> bool {
    true
}

/// `grpc-web`: browser gRPC-Web (`application/grpc-web[+proto]`, `application/grpc-web-text`)
/// to a gRPC upstream over HTTP/2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GrpcWeb {
    /// Accept the base64 text encoding (`application/grpc-web-text`). Default `true`.
    #[serde(default = "t")]
    pub text: bool,
    /// Largest gRPC message in either direction. Default 4MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<ByteSize>,
}

/// How a server-streaming method's responses are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum StreamingMode {
    /// One JSON array written element by element (`application/json`). Default.
    #[default]
    Array,
    /// One JSON document per line (`application/x-ndjson`).
    Ndjson,
}

/// `custom` pattern of an HTTP rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// The HTTP method, upper case (e.g. `HEAD`).
    pub kind: String,
    /// The path template.
    pub path: String,
}

/// An HTTP rule (the fields of `google.api.HttpRule`): exactly one of `get`, `put`, `post`,
/// `delete`, `patch`, `custom`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpRuleConfig {
    /// The method, `package.Service.Method` (not in `additional_bindings`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// `GET` path template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get: Option<String>,
    /// `PUT` path template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub put: Option<String>,
    /// `POST` path template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<String>,
    /// `DELETE` path template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<String>,
    /// `PATCH` path template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Another method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomPattern>,
    /// `"*"` (the whole request message), a top-level request field, or absent (no body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A top-level response field to answer with instead of the whole response message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// More bindings of the same method (they cannot nest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_bindings: Vec<HttpRuleConfig>,
}

impl HttpRuleConfig {
    /// The rule for gw-grpc; `path` names it in errors.
    fn to_spec(&self, path: &str) -> Result<gw_grpc::rules::RuleSpec, SchemaError> {
        let mut patterns = Vec::new();
        for (m, p) in [
            ("GET", &self.get),
            ("PUT", &self.put),
            ("POST", &self.post),
            ("DELETE", &self.delete),
            ("PATCH", &self.patch),
        ] {
            if let Some(p) = p {
                patterns.push((m.to_string(), p.clone()));
            }
        }
        if let Some(c) = &self.custom {
            patterns.push((c.kind.clone(), c.path.clone()));
        }
        let (method, tpl) = match patterns.len() {
            1 => patterns.remove(0),
            0 => return Err(SchemaError::new(path, "give one of get, put, post, delete, patch, custom")),
            _ => return Err(SchemaError::new(path, "give only one of get, put, post, delete, patch, custom")),
        };
        let mut additional_bindings = Vec::new();
        for (i, b) in self.additional_bindings.iter().enumerate() {
            additional_bindings.push(b.to_spec(&format!("{path}.additional_bindings[{i}]"))?);
        }
        Ok(gw_grpc::rules::RuleSpec {
            selector: self.selector.clone(),
            method,
            path: tpl,
            body: self.body.clone().unwrap_or_default(),
            response_body: self.response_body.clone().unwrap_or_default(),
            additional_bindings,
        })
    }
}

/// `grpc-transcode`: REST/JSON requests to gRPC calls, by HTTP rules (`google.api.http`
/// annotations, or `rules`), with the proto3 JSON mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GrpcTranscode {
    /// A descriptor set (`protoc --include_imports --descriptor_set_out=FILE`). Give this or
    /// `proto_files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor_set: Option<String>,
    /// `.proto` files, compiled when the configuration loads (no `protoc` needed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proto_files: Vec<String>,
    /// Import directories for `proto_files`. Default: the directory of each file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_paths: Vec<String>,
    /// Services to transcode (full names). Default: every service of the files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// HTTP rules; one replaces the annotation of its method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRuleConfig>,
    /// JSON output uses the `.proto` field names instead of lowerCamelCase. Default `false`.
    #[serde(default)]
    pub preserving_proto_field_name: bool,
    /// JSON output includes fields with default values. Default `false`.
    #[serde(default)]
    pub emit_unpopulated: bool,
    /// JSON output writes enums as numbers. Default `false`.
    #[serde(default)]
    pub enums_as_numbers: bool,
    /// Query parameters naming no field are ignored instead of answered with 400. Default `false`.
    #[serde(default)]
    pub ignore_unknown_query_parameters: bool,
    /// Server streaming as a JSON `array` (default) or `ndjson`.
    #[serde(default)]
    pub streaming: StreamingMode,
    /// Largest gRPC message in either direction. Default 4MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<ByteSize>,
}

impl GrpcTranscode {
    /// Load the descriptors and compile the rules: what validation checks, and what the plugin
    /// builds from. Relative files are resolved by `cx`.
    pub fn transcoder(&self, cx: &SchemaContext) -> Result<gw_grpc::transcode::Transcoder, SchemaError> {
        let pool = match (&self.descriptor_set, self.proto_files.is_empty()) {
            (Some(_), false) => {
                return Err(SchemaError::new("descriptor_set", "give descriptor_set or proto_files, not both"));
            }
            (None, true) => return Err(SchemaError::new("proto_files", "give descriptor_set or proto_files")),
            (Some(d), true) => gw_grpc::descriptor::from_descriptor_set_file(&cx.resolve(d))
                .map_err(|e| SchemaError::new("descriptor_set", e.to_string()))?,
            (None, false) => {
                let files: Vec<PathBuf> = self.proto_files.iter().map(|f| cx.resolve(f)).collect();
                let includes: Vec<PathBuf> = self.include_paths.iter().map(|f| cx.resolve(f)).collect();
                gw_grpc::descriptor::compile(&files, &includes).map_err(|e| {
                    let i = self.proto_files.iter().zip(&files).position(|(_, p)| e.file == p.display().to_string());
                    let key = i.map_or("proto_files".to_string(), |i| format!("proto_files[{i}]"));
                    SchemaError::new(key, e.to_string())
                })?
            }
        };
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let key = format!("rules[{i}]");
            if r.selector.is_empty() {
                return Err(SchemaError::new(format!("{key}.selector"), "name the method: package.Service.Method"));
            }
            rules.push(r.to_spec(&key)?);
        }
        let opts = gw_grpc::transcode::Options {
            rules: gw_grpc::rules::RuleOptions { services: self.services.clone(), rules },
            preserving_proto_field_name: self.preserving_proto_field_name,
            emit_unpopulated: self.emit_unpopulated,
            enums_as_numbers: self.enums_as_numbers,
            ignore_unknown_query_parameters: self.ignore_unknown_query_parameters,
            stream: match self.streaming {
                StreamingMode::Array => gw_grpc::transcode::StreamMode::Array,
                StreamingMode::Ndjson => gw_grpc::transcode::StreamMode::Ndjson,
            },
        };
        gw_grpc::transcode::Transcoder::new(pool, opts).map_err(|e| {
            // Errors of a configured rule or service carry its key; others name the file.
            let key = if e.origin.starts_with("rules[") || e.origin.starts_with("services[") {
                e.origin.split(',').next().unwrap_or_default().to_string()
            } else if self.descriptor_set.is_some() {
                "descriptor_set".into()
            } else {
                "proto_files".into()
            };
            SchemaError::new(key, e.to_string())
        })
    }
}

impl PluginSchema for GrpcTranscode {
    fn validate_with(&self, cx: &SchemaContext) -> Result<(), SchemaError> {
        if let Some(m) = &self.max_message_bytes
            && m.get() == 0
        {
            return Err(SchemaError::new("max_message_bytes", "must be at least 1 byte"));
        }
        let t = self.transcoder(cx)?;
        if t.bindings().is_empty() {
            return Err(SchemaError::new(
                "rules",
                "no method has an HTTP rule (add google.api.http annotations or rules)",
            ));
        }
        Ok(())
    }

    fn file_paths_mut(&mut self) -> Vec<(String, &mut String)> {
        let mut v: Vec<(String, &mut String)> = Vec::new();
        if let Some(d) = &mut self.descriptor_set {
            v.push(("descriptor_set".into(), d));
        }
        for (i, f) in self.proto_files.iter_mut().enumerate() {
            v.push((format!("proto_files[{i}]"), f));
        }
        for (i, f) in self.include_paths.iter_mut().enumerate() {
            v.push((format!("include_paths[{i}]"), f));
        }
        v
    }
}

impl PluginSchema for GrpcWeb {
    fn validate(&self) -> Result<(), SchemaError> {
        if let Some(m) = &self.max_message_bytes
            && m.get() == 0
        {
            return Err(SchemaError::new("max_message_bytes", "must be at least 1 byte"));
        }
        Ok(())
    }
}

/// SOAP version of the `soap` plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SoapVersionConfig {
    /// SOAP 1.1: `text/xml`, `SOAPAction` header. Default.
    #[default]
    #[serde(rename = "1.1")]
    V11,
    /// SOAP 1.2: `application/soap+xml; action=...`.
    #[serde(rename = "1.2")]
    V12,
}

/// Namespace handling of the XML to JSON mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum NamespaceMode {
    /// Local names (`Body`), declarations left out. Default.
    #[default]
    Strip,
    /// Names as written (`soap:Body`), declarations as `@xmlns:...`.
    Keep,
}

fn fault_client() -> u16 {
    400
}

fn fault_server() -> u16 {
    502
}

/// `soap`: a JSON request to a SOAP (or plain XML) upstream through a template, and its XML
/// response back to JSON; SOAP faults become JSON errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Soap {
    /// SOAP version: `"1.1"` (default) or `"1.2"`.
    #[serde(default)]
    pub version: SoapVersionConfig,
    /// The operation's action (`SOAPAction` in 1.1, the `action` parameter in 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The request template (inline): the content of the SOAP Body, or the whole XML document
    /// when `envelope` is `false`. Give this or `request_template_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_template: Option<String>,
    /// The request template in a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_template_file: Option<String>,
    /// Wrap the rendered template in a SOAP envelope. Default `true`; `false` sends plain XML
    /// (and reads the response as plain XML).
    #[serde(default = "t")]
    pub envelope: bool,
    /// Names in the JSON of the response: `strip` (default) or `keep` prefixes.
    #[serde(default)]
    pub namespaces: NamespaceMode,
    /// Element names that are always JSON arrays, even when they occur once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub always_array: Vec<String>,
    /// HTTP status of a client fault (`Client`, `Sender`). Default 400.
    #[serde(default = "fault_client")]
    pub client_fault_status: u16,
    /// HTTP status of the other faults. Default 502.
    #[serde(default = "fault_server")]
    pub server_fault_status: u16,
    /// Largest response read. Default 8MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<ByteSize>,
    /// Deepest element nesting read. Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
}

impl Soap {
    /// The parsed request template (inline or from its file).
    pub fn template(&self, cx: &SchemaContext) -> Result<gw_grpc::xml::Template, SchemaError> {
        let (key, src) = match (&self.request_template, &self.request_template_file) {
            (Some(_), Some(_)) => {
                return Err(SchemaError::new(
                    "request_template",
                    "give request_template or request_template_file, not both",
                ));
            }
            (None, None) => {
                return Err(SchemaError::new("request_template", "give request_template or request_template_file"));
            }
            (Some(t), None) => ("request_template", t.clone()),
            (None, Some(f)) => {
                let p = cx.resolve(f);
                let s = std::fs::read_to_string(&p).map_err(|e| {
                    SchemaError::new("request_template_file", format!("cannot read {}: {e}", p.display()))
                })?;
                ("request_template_file", s)
            }
        };
        gw_grpc::xml::Template::parse(&src).map_err(|e| SchemaError::new(key, e.0))
    }
}

impl PluginSchema for Soap {
    fn validate_with(&self, cx: &SchemaContext) -> Result<(), SchemaError> {
        self.template(cx)?;
        for (k, s) in
            [("client_fault_status", self.client_fault_status), ("server_fault_status", self.server_fault_status)]
        {
            if !(400..=599).contains(&s) {
                return Err(SchemaError::new(k, "must be an error status, 400 to 599"));
            }
        }
        if let Some(a) = &self.action
            && a.chars().any(|c| c.is_control() || c == '"')
        {
            return Err(SchemaError::new("action", "must not contain control characters or '\"'"));
        }
        if self.max_depth == Some(0) {
            return Err(SchemaError::new("max_depth", "must be at least 1"));
        }
        if let Some(m) = &self.max_body_bytes
            && m.get() == 0
        {
            return Err(SchemaError::new("max_body_bytes", "must be at least 1 byte"));
        }
        Ok(())
    }

    fn file_paths_mut(&mut self) -> Vec<(String, &mut String)> {
        self.request_template_file.iter_mut().map(|f| ("request_template_file".to_string(), f)).collect()
    }
}

impl SchemaContext {
    /// A path from the configuration, relative ones against the configuration's directory.
    pub fn resolve(&self, file: &str) -> PathBuf {
        match &self.base_dir {
            Some(b) if Path::new(file).is_relative() => b.join(file),
            _ => PathBuf::from(file),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway/tests/proto")
    }

    fn cx() -> SchemaContext {
        SchemaContext { base_dir: Some(proto_dir()) }
    }

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_saphyr::from_str(s).unwrap()
    }

    /// A full grpc-transcode config loads the bookstore and compiles its rules; relative paths
    /// follow the configuration's directory.
    #[test]
    fn grpc_transcode_loads() {
        let c: GrpcTranscode = yaml(
            "proto_files: [bookstore/v1/bookstore.proto]\ninclude_paths: [.]\nservices: [bookstore.v1.Bookstore]\n\
             preserving_proto_field_name: true\nstreaming: ndjson\nrules:\n  - selector: bookstore.v1.Bookstore.GetShelf\n    get: /v2/shelves/{shelf}\n    additional_bindings:\n      - get: /v2/s/{shelf}\n",
        );
        c.validate_with(&cx()).unwrap();
        let t = c.transcoder(&cx()).unwrap();
        assert!(t.route(&http::Method::GET, "/v2/s/1").is_some());
        assert!(t.options().preserving_proto_field_name);
        assert_eq!(t.options().stream, gw_grpc::transcode::StreamMode::Ndjson);
    }

    /// Errors name the key, the file and the method.
    #[test]
    fn grpc_transcode_errors() {
        let err = |s: &str| {
            let c: GrpcTranscode = yaml(s);
            c.validate_with(&cx()).unwrap_err()
        };
        let e = err(
            "proto_files: [bookstore/v1/bookstore.proto]\nrules:\n  - selector: bookstore.v1.Bookstore.GetShelf\n    get: /v1/{nope}\n",
        );
        assert_eq!(e.path, "rules[0]");
        assert!(
            e.message.starts_with("bookstore.proto: bookstore.v1.Bookstore.GetShelf: path variable {nope}"),
            "{}",
            e.message
        );
        let e = err(
            "proto_files: [bookstore/v1/bookstore.proto]\nrules:\n  - selector: bookstore.v1.Bookstore.GetShelf\n    get: /a\n    post: /b\n",
        );
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("rules[0]", "give only one of get, put, post, delete, patch, custom")
        );
        let e = err("proto_files: [bookstore/v1/bookstore.proto]\nrules:\n  - get: /a\n");
        assert_eq!(e.path, "rules[0].selector");
        let e = err("proto_files: [missing.proto]\n");
        assert_eq!(e.path, "proto_files[0]");
        assert!(e.message.contains("missing.proto"), "{}", e.message);
        let e = err("descriptor_set: nope.pb\n");
        assert_eq!(e.path, "descriptor_set");
        assert!(e.message.contains("nope.pb") && e.message.contains("cannot read"), "{}", e.message);
        let e = err("{}");
        assert_eq!(e.path, "proto_files");
        let e = err("descriptor_set: x.pb\nproto_files: [a.proto]\n");
        assert!(e.message.contains("not both"));
        let e = err("proto_files: [bookstore/v1/bookstore.proto]\nservices: [google.rpc.Nope]\n");
        assert_eq!(e.path, "services[0]");
        let e = err("proto_files: [google/rpc/status.proto]\ninclude_paths: [.]\n");
        assert_eq!(e.path, "rules");
        assert!(e.message.contains("no method has an HTTP rule"), "{}", e.message);
    }

    /// Unknown keys are refused by serde.
    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_saphyr::from_str::<GrpcTranscode>("proto_file: [x]\n").is_err());
        assert!(serde_saphyr::from_str::<GrpcWeb>("txt: true\n").is_err());
        assert!(serde_saphyr::from_str::<Soap>("request_template: x\nversion: \"2.0\"\n").is_err());
        let w: GrpcWeb = yaml("{}");
        assert!(w.text);
        w.validate().unwrap();
    }

    /// soap: the template is parsed at load (inline or file) and its errors located.
    #[test]
    fn soap_config() {
        let s: Soap = yaml(
            "version: \"1.2\"\naction: urn:GetPrice\nrequest_template: \"<m:GetPrice>{{body.item}}</m:GetPrice>\"\n",
        );
        s.validate_with(&cx()).unwrap();
        assert_eq!(s.version, SoapVersionConfig::V12);
        let s: Soap = yaml("request_template: \"<a>{{#body.x}}</a>\"\n");
        let e = s.validate_with(&cx()).unwrap_err();
        assert_eq!(e.path, "request_template");
        assert!(e.message.contains("line 1, column 4"), "{}", e.message);
        let s: Soap = yaml("request_template_file: absent.xml\n");
        let e = s.validate_with(&cx()).unwrap_err();
        assert_eq!(e.path, "request_template_file");
        let s: Soap = yaml("request_template: x\nclient_fault_status: 200\n");
        assert_eq!(s.validate_with(&cx()).unwrap_err().path, "client_fault_status");
        let s: Soap = yaml("{}");
        assert!(s.validate_with(&cx()).unwrap_err().message.contains("give request_template"));
        let mut s: Soap = yaml("request_template_file: t.xml\n");
        assert_eq!(s.file_paths_mut().len(), 1);
    }
}
