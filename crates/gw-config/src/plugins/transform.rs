//! Schemas of request-transformer and response-transformer.
//!
//! Values are templates: literal text with `$(...)` references to `headers.<name>` (the message
//! being transformed: the request in request-transformer, the response in response-transformer),
//! `request_headers.<name>` and `query.<name>` (the request), `params.<name>` (route
//! parameters), `consumer.username`, `consumer.custom_id`, `route.name`, `service.name`,
//! `request_id`, `client_ip`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::check_header_names;
use super::{PluginSchema, SchemaError};

/// Names to remove.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RemoveSpec {
    /// Header names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Query parameter names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub querystring: Vec<String>,
    /// Top-level JSON body fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json: Vec<String>,
}

/// Names to rename: old -> new.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RenameSpec {
    /// Header names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameter names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub querystring: BTreeMap<String, String>,
    /// Top-level JSON body fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub json: BTreeMap<String, String>,
}

/// Values to set: name -> template (JSON fields take any JSON value; strings are templates).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ValueSpec {
    /// Headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub querystring: BTreeMap<String, String>,
    /// Top-level JSON body fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub json: BTreeMap<String, serde_json::Value>,
}

impl RemoveSpec {
    fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.querystring.is_empty() && self.json.is_empty()
    }
}

impl RenameSpec {
    fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.querystring.is_empty() && self.json.is_empty()
    }
}

impl ValueSpec {
    fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.querystring.is_empty() && self.json.is_empty()
    }
}

/// What a transformer does with a body it is configured to edit (`json` edits, JSON content type)
/// but cannot: not valid JSON (or nested deeper than 127, a number out of range, a lone
/// surrogate), or not an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvalidJson {
    /// Refuse it: a request gets 400 `invalid_json_body`, a response becomes 502
    /// `response_not_editable` (default).
    #[default]
    Reject,
    /// Pass it on unedited.
    Pass,
}

impl InvalidJson {
    fn is_default(&self) -> bool {
        *self == InvalidJson::Reject
    }
}

/// `request-transformer`: edit the request before it goes upstream. Order: remove, rename,
/// replace (only if present), add (only if absent), append; then method and path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestTransformer {
    /// Remove.
    #[serde(default, skip_serializing_if = "RemoveSpec::is_empty")]
    pub remove: RemoveSpec,
    /// Rename.
    #[serde(default, skip_serializing_if = "RenameSpec::is_empty")]
    pub rename: RenameSpec,
    /// Replace existing values.
    #[serde(default, skip_serializing_if = "ValueSpec::is_empty")]
    pub replace: ValueSpec,
    /// Add values that are absent.
    #[serde(default, skip_serializing_if = "ValueSpec::is_empty")]
    pub add: ValueSpec,
    /// Append values (headers and query parameters may repeat).
    #[serde(default, skip_serializing_if = "ValueSpec::is_empty")]
    pub append: ValueSpec,
    /// New method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_method: Option<String>,
    /// New path (a template), e.g. `/v2/users/$(params.id)`. Values are percent-encoded as
    /// one segment each (route parameters keep their `/`); the result is checked like a client
    /// path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A JSON body that cannot be edited: `reject` (400, default) or `pass` (unedited).
    #[serde(default, skip_serializing_if = "InvalidJson::is_default")]
    pub invalid_json: InvalidJson,
}

/// `response-transformer`: edit the upstream response. Same order as the request transformer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ResponseTransformer {
    /// Remove.
    #[serde(default, skip_serializing_if = "RemoveSpec::is_empty")]
    pub remove: RemoveSpec,
    /// Rename.
    #[serde(default, skip_serializing_if = "RenameSpec::is_empty")]
    pub rename: RenameSpec,
    /// Replace existing values.
    #[serde(default, skip_serializing_if = "ValueSpec::is_empty")]
    pub replace: ValueSpec,
    /// Add values that are absent.
    #[serde(default, skip_serializing_if = "ValueSpec::is_empty")]
    pub add: ValueSpec,
    /// Append values.
    #[serde(default, skip_serializing_if = "ValueSpec::is_empty")]
    pub append: ValueSpec,
    /// A JSON body that cannot be edited: `reject` (502 `response_not_editable`, default) or
    /// `pass` (unedited).
    #[serde(default, skip_serializing_if = "InvalidJson::is_default")]
    pub invalid_json: InvalidJson,
}

/// Check a template: `$(` must close and name a known source.
pub fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(i) = rest.find("$(") {
        let after = &rest[i + 2..];
        let end = after.find(')').ok_or_else(|| format!("{t:?}: unclosed \"$(\""))?;
        let expr = &after[..end];
        let ok = matches!(
            expr,
            "consumer.username" | "consumer.custom_id" | "route.name" | "service.name" | "request_id" | "client_ip"
        ) || ["headers.", "request_headers.", "query.", "params."]
            .iter()
            .any(|p| expr.strip_prefix(p).is_some_and(|n| !n.is_empty()));
        if !ok {
            return Err(format!(
                "{t:?}: unknown reference $({expr}); use headers.<name>, request_headers.<name>, query.<name>, params.<name>, consumer.username, consumer.custom_id, route.name, service.name, request_id or client_ip"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// A template without its `$(...)` references.
fn literal_text(t: &str) -> String {
    let mut out = String::new();
    let mut rest = t;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        match rest[i..].find(')') {
            Some(end) => rest = &rest[i + end + 1..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

fn check_values(section: &str, v: &ValueSpec, query_ok: bool) -> Result<(), SchemaError> {
    check_header_names(&format!("{section}.headers"), &v.headers.keys().cloned().collect::<Vec<_>>())?;
    for (k, t) in &v.headers {
        check_template(t).map_err(|e| SchemaError::new(format!("{section}.headers.{k}"), e))?;
    }
    if !query_ok && !v.querystring.is_empty() {
        return Err(SchemaError::new(format!("{section}.querystring"), "responses have no query string"));
    }
    for (k, t) in &v.querystring {
        check_template(t).map_err(|e| SchemaError::new(format!("{section}.querystring.{k}"), e))?;
    }
    for (k, val) in &v.json {
        if let serde_json::Value::String(t) = val {
            check_template(t).map_err(|e| SchemaError::new(format!("{section}.json.{k}"), e))?;
        }
    }
    Ok(())
}

fn check_all(
    remove: &RemoveSpec,
    rename: &RenameSpec,
    values: [(&str, &ValueSpec); 3],
    query_ok: bool,
) -> Result<(), SchemaError> {
    check_header_names("remove.headers", &remove.headers)?;
    check_header_names("rename.headers", &rename.headers.values().cloned().collect::<Vec<_>>())?;
    if !query_ok && (!remove.querystring.is_empty() || !rename.querystring.is_empty()) {
        return Err(SchemaError::new("remove.querystring", "responses have no query string"));
    }
    for (name, v) in values {
        check_values(name, v, query_ok)?;
    }
    Ok(())
}

impl PluginSchema for RequestTransformer {
    fn validate(&self) -> Result<(), SchemaError> {
        check_all(
            &self.remove,
            &self.rename,
            [("replace", &self.replace), ("add", &self.add), ("append", &self.append)],
            true,
        )?;
        if let Some(m) = &self.http_method
            && (http::Method::from_bytes(m.as_bytes()).is_err() || m.to_ascii_uppercase() != *m)
        {
            return Err(SchemaError::new("http_method", format!("{m:?} is not an upper-case method")));
        }
        if let Some(p) = &self.path {
            if !p.starts_with('/') {
                return Err(SchemaError::new("path", "must start with '/'"));
            }
            check_template(p).map_err(|e| SchemaError::new("path", e))?;
            // The literal text is the path as written: nothing that would end the path or is
            // not allowed in one (values are encoded, the text is not).
            if let Some(c) = literal_text(p).chars().find(|c| matches!(c, '?' | '#' | '\\') || !c.is_ascii_graphic()) {
                return Err(SchemaError::new(
                    "path",
                    format!("{c:?} is not allowed in a path (write it percent-encoded)"),
                ));
            }
        }
        Ok(())
    }
}

impl PluginSchema for ResponseTransformer {
    fn validate(&self) -> Result<(), SchemaError> {
        check_all(
            &self.remove,
            &self.rename,
            [("replace", &self.replace), ("add", &self.add), ("append", &self.append)],
            false,
        )
    }
}
