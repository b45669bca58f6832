//! HTTP rules (`google.api.http`): read from method annotations or given in configuration,
//! checked against the descriptors, and compiled into [`Binding`]s.
//!
//! Every problem is an error naming the `.proto` file and the method (and, for a rule from
//! configuration, its index), found when the configuration loads.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};

use crate::template::{PathTemplate, Segment};

/// `google.api.HttpRule` (protobuf), to read the annotation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRule {
    /// The method the rule applies to (service config rules only).
    #[prost(string, tag = "1")]
    pub selector: String,
    /// The HTTP method and path template.
    #[prost(oneof = "Pattern", tags = "2, 3, 4, 5, 6, 8")]
    pub pattern: Option<Pattern>,
    /// The request field mapped to the body, `*`, or empty.
    #[prost(string, tag = "7")]
    pub body: String,
    /// The response field mapped to the response body, or empty.
    #[prost(string, tag = "12")]
    pub response_body: String,
    /// More bindings of the same method.
    #[prost(message, repeated, tag = "11")]
    pub additional_bindings: Vec<HttpRule>,
}

/// The pattern of an [`HttpRule`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Pattern {
    /// `get`.
    #[prost(string, tag = "2")]
    Get(String),
    /// `put`.
    #[prost(string, tag = "3")]
    Put(String),
    /// `post`.
    #[prost(string, tag = "4")]
    Post(String),
    /// `delete`.
    #[prost(string, tag = "5")]
    Delete(String),
    /// `patch`.
    #[prost(string, tag = "6")]
    Patch(String),
    /// `custom`: another method.
    #[prost(message, tag = "8")]
    Custom(CustomHttpPattern),
}

/// `google.api.CustomHttpPattern`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CustomHttpPattern {
    /// The HTTP method.
    #[prost(string, tag = "1")]
    pub kind: String,
    /// The path template.
    #[prost(string, tag = "2")]
    pub path: String,
}

/// A rule as written in configuration (the same fields as `google.api.HttpRule`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleSpec {
    /// The method: `package.Service.Method`.
    pub selector: String,
    /// HTTP method (upper case).
    pub method: String,
    /// Path template.
    pub path: String,
    /// `""`, `"*"` or a request field.
    pub body: String,
    /// `""` or a response field.
    pub response_body: String,
    /// More bindings.
    pub additional_bindings: Vec<RuleSpec>,
}

impl RuleSpec {
    fn to_rule(&self) -> HttpRule {
        let pattern = match self.method.as_str() {
            "GET" => Pattern::Get(self.path.clone()),
            "PUT" => Pattern::Put(self.path.clone()),
            "POST" => Pattern::Post(self.path.clone()),
            "DELETE" => Pattern::Delete(self.path.clone()),
            "PATCH" => Pattern::Patch(self.path.clone()),
            other => Pattern::Custom(CustomHttpPattern { kind: other.to_string(), path: self.path.clone() }),
        };
        HttpRule {
            selector: self.selector.clone(),
            pattern: Some(pattern),
            body: self.body.clone(),
            response_body: self.response_body.clone(),
            additional_bindings: self.additional_bindings.iter().map(RuleSpec::to_rule).collect(),
        }
    }
}

/// What the HTTP request body fills.
#[derive(Debug, Clone)]
pub enum BodyTarget {
    /// No body (query parameters fill the fields not in the path).
    None,
    /// `*`: the whole request message (minus path variables).
    All,
    /// One top-level field.
    Field(FieldDescriptor),
}

/// One HTTP binding of a gRPC method.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The HTTP method.
    pub http_method: http::Method,
    /// The path template.
    pub template: PathTemplate,
    /// The gRPC method.
    pub method: MethodDescriptor,
    /// The fields of the path variables (resolved, in template order).
    pub path_fields: Vec<Vec<FieldDescriptor>>,
    /// What the body fills.
    pub body: BodyTarget,
    /// The response field that is the response body, if not the whole message.
    pub response_body: Option<FieldDescriptor>,
    /// Where the rule came from: `annotation` or `rules[i]`.
    pub source: String,
}

impl Binding {
    /// The gRPC path, `/package.Service/Method`.
    pub fn grpc_path(&self) -> String {
        format!("/{}/{}", self.method.parent_service().full_name(), self.method.name())
    }
}

/// A rule failed to compile: the file, the method, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {method}: {message}")]
pub struct RuleError {
    /// The `.proto` file of the method (or the configuration key of a rule with an unknown
    /// selector).
    pub file: String,
    /// The method's full name (or the selector).
    pub method: String,
    /// What is wrong, with the rule's source.
    pub message: String,
    /// Where the rule came from: `annotation`, `rules[i]` (with `additional_bindings[k]`), or
    /// the configuration key of a service or rule that names nothing.
    pub origin: String,
}

fn rule_err(m: &MethodDescriptor, source: &str, message: impl Into<String>) -> RuleError {
    RuleError {
        file: m.parent_file().name().to_string(),
        method: m.full_name().to_string(),
        message: format!("{} ({source})", message.into()),
        origin: source.to_string(),
    }
}

/// Find a field of `msg` by proto name or JSON name.
pub fn find_field(msg: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    msg.get_field_by_name(name).or_else(|| msg.get_field_by_json_name(name))
}

/// Resolve a dotted field path in `msg`; every field but the last must be a singular message.
pub fn resolve_path(msg: &MessageDescriptor, path: &[String]) -> Result<Vec<FieldDescriptor>, String> {
    let mut out = Vec::with_capacity(path.len());
    let mut cur = msg.clone();
    for (i, name) in path.iter().enumerate() {
        let f = find_field(&cur, name).ok_or_else(|| format!("no field {name:?} in {}", cur.full_name()))?;
        if i + 1 < path.len() {
            match f.kind() {
                Kind::Message(m) if !f.is_list() && !f.is_map() => cur = m,
                _ => return Err(format!("field {} is not a singular message", f.full_name())),
            }
        }
        out.push(f);
    }
    Ok(out)
}

/// Whether a field can be set from text (a path variable or a query parameter): scalars,
/// enums, and the well-known types with a string or scalar JSON form.
pub fn settable_from_text(f: &FieldDescriptor) -> bool {
    if f.is_map() {
        return false;
    }
    match f.kind() {
        Kind::Message(m) => is_text_wkt(&m),
        _ => true,
    }
}

/// Well-known types whose JSON form is a string or a scalar.
pub(crate) fn is_text_wkt(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

fn http_method(p: &Pattern) -> Result<(http::Method, &str), String> {
    Ok(match p {
        Pattern::Get(t) => (http::Method::GET, t),
        Pattern::Put(t) => (http::Method::PUT, t),
        Pattern::Post(t) => (http::Method::POST, t),
        Pattern::Delete(t) => (http::Method::DELETE, t),
        Pattern::Patch(t) => (http::Method::PATCH, t),
        Pattern::Custom(c) => {
            let m = http::Method::from_bytes(c.kind.as_bytes())
                .map_err(|_| format!("custom method {:?} is not an HTTP method", c.kind))?;
            if c.kind.to_ascii_uppercase() != c.kind {
                return Err(format!("custom method {:?} must be upper case", c.kind));
            }
            (m, &c.path)
        }
    })
}

fn compile_one(m: &MethodDescriptor, rule: &HttpRule, source: &str, nested: bool) -> Result<Binding, RuleError> {
    let e = |msg: String| rule_err(m, source, msg);
    if nested && !rule.additional_bindings.is_empty() {
        return Err(e("additional_bindings cannot be nested".into()));
    }
    let pattern = rule.pattern.as_ref().ok_or_else(|| e("the rule has no method and path (get, post, ...)".into()))?;
    let (http_method, text) = http_method(pattern).map_err(e)?;
    let template = PathTemplate::parse(text).map_err(|t| e(t.to_string()))?;
    let input = m.input();
    let mut path_fields = Vec::new();
    for v in template.variables() {
        let fields =
            resolve_path(&input, &v.field_path).map_err(|x| e(format!("path variable {{{}}}: {x}", v.dotted())))?;
        let leaf = fields.last().ok_or_else(|| e("empty variable".into()))?;
        if leaf.is_list() || !settable_from_text(leaf) {
            return Err(e(format!(
                "path variable {{{}}}: field {} cannot be set from a path segment (repeated, map or message)",
                v.dotted(),
                leaf.full_name()
            )));
        }
        let multi = v.end - v.start > 1 || template.segments()[v.start..v.end].contains(&Segment::Rest);
        if multi && leaf.kind() != Kind::String {
            return Err(e(format!(
                "path variable {{{}}} spans several segments but field {} is not a string",
                v.dotted(),
                leaf.full_name()
            )));
        }
        path_fields.push(fields);
    }
    let body = match rule.body.as_str() {
        "" => BodyTarget::None,
        "*" => BodyTarget::All,
        name => {
            let f = input.get_field_by_name(name).ok_or_else(|| {
                e(format!("body: no field {name:?} in {} (body names a top-level field)", input.full_name()))
            })?;
            BodyTarget::Field(f)
        }
    };
    if http_method == http::Method::GET && !matches!(body, BodyTarget::None) {
        return Err(e("a GET rule cannot have a body".into()));
    }
    let response_body = match rule.response_body.as_str() {
        "" => None,
        name => {
            let out = m.output();
            Some(out.get_field_by_name(name).ok_or_else(|| {
                e(format!("response_body: no field {name:?} in {} (a top-level field)", out.full_name()))
            })?)
        }
    };
    Ok(Binding {
        http_method,
        template,
        method: m.clone(),
        path_fields,
        body,
        response_body,
        source: source.to_string(),
    })
}

/// Which methods to transcode and their rules.
#[derive(Debug, Clone, Default)]
pub struct RuleOptions {
    /// Services to transcode (full names). Empty: every service of the pool that is not a
    /// built-in one.
    pub services: Vec<String>,
    /// Rules from configuration; a rule replaces the annotation of its method.
    pub rules: Vec<RuleSpec>,
}

fn annotation(pool: &DescriptorPool, m: &MethodDescriptor) -> Option<HttpRule> {
    let ext = pool.get_extension_by_name("google.api.http")?;
    let opts = m.options();
    if !opts.has_extension(&ext) {
        return None;
    }
    match opts.get_extension(&ext).as_ref() {
        prost_reflect::Value::Message(dm) => dm.transcode_to::<HttpRule>().ok(),
        _ => None,
    }
}

/// Compile the HTTP rules of the selected services into bindings, checking every rule and
/// conflicts between rules (same HTTP method and same path shape).
pub fn compile_rules(pool: &DescriptorPool, opts: &RuleOptions) -> Result<Vec<Binding>, RuleError> {
    let services: Vec<_> = if opts.services.is_empty() {
        pool.services().filter(|s| !s.parent_file().name().starts_with("google/")).collect()
    } else {
        let mut v = Vec::new();
        for (i, name) in opts.services.iter().enumerate() {
            let s = pool.get_service_by_name(name).ok_or_else(|| RuleError {
                file: format!("services[{i}]"),
                origin: format!("services[{i}]"),
                method: name.clone(),
                message: format!(
                    "no such service in the descriptors (services: {})",
                    pool.services().map(|s| s.full_name().to_string()).collect::<Vec<_>>().join(", ")
                ),
            })?;
            v.push(s);
        }
        v
    };
    let mut overrides: HashMap<&str, (usize, &RuleSpec)> = HashMap::new();
    for (i, r) in opts.rules.iter().enumerate() {
        let sel = r.selector.as_str();
        let known = services.iter().flat_map(|s| s.methods()).any(|m| m.full_name() == sel);
        if !known {
            return Err(RuleError {
                file: format!("rules[{i}]"),
                origin: format!("rules[{i}]"),
                method: sel.to_string(),
                message: "selector names no method of the transcoded services".into(),
            });
        }
        if let Some((j, _)) = overrides.insert(sel, (i, r)) {
            return Err(RuleError {
                file: format!("rules[{i}]"),
                origin: format!("rules[{i}]"),
                method: sel.to_string(),
                message: format!("a second rule for this method (rules[{j}])"),
            });
        }
    }
    let mut out: Vec<Binding> = Vec::new();
    for s in &services {
        for m in s.methods() {
            let (rule, source) = match overrides.get(m.full_name()) {
                Some((i, r)) => (r.to_rule(), format!("rules[{i}]")),
                None => match annotation(pool, &m) {
                    Some(r) => (r, "annotation".to_string()),
                    None => continue,
                },
            };
            if m.is_client_streaming() {
                return Err(rule_err(&m, &source, "client-streaming methods cannot be transcoded"));
            }
            let first = compile_one(&m, &rule, &source, false)?;
            let mut all = vec![first];
            for (k, extra) in rule.additional_bindings.iter().enumerate() {
                all.push(compile_one(&m, extra, &format!("{source}, additional_bindings[{k}]"), true)?);
            }
            for b in all {
                if let Some(other) =
                    out.iter().find(|o| o.http_method == b.http_method && o.template.shape() == b.template.shape())
                {
                    return Err(rule_err(
                        &b.method,
                        &b.source,
                        format!(
                            "{} {} conflicts with {} {} of {} ({})",
                            b.http_method,
                            b.template,
                            other.http_method,
                            other.template,
                            other.method.full_name(),
                            other.source
                        ),
                    ));
                }
                out.push(b);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor;
    use std::path::{Path, PathBuf};

    pub(crate) fn bookstore() -> DescriptorPool {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway/tests/proto");
        descriptor::compile(&[PathBuf::from("bookstore/v1/bookstore.proto")], &[dir]).unwrap()
    }

    fn spec(selector: &str, method: &str, path: &str, body: &str) -> RuleSpec {
        RuleSpec {
            selector: selector.into(),
            method: method.into(),
            path: path.into(),
            body: body.into(),
            ..Default::default()
        }
    }

    /// The annotations of the bookstore compile: one binding per rule and additional binding.
    #[test]
    fn annotations_compile() {
        let b = compile_rules(&bookstore(), &RuleOptions::default()).unwrap();
        let list: Vec<String> = b.iter().map(|b| format!("{} {}", b.http_method, b.template)).collect();
        assert!(list.contains(&"GET /v1/{name=shelves/*/books/*}".to_string()), "{list:?}");
        assert!(list.contains(&"GET /v1/books/{name=**}".to_string()), "{list:?}");
        assert_eq!(list.len(), 14, "{list:?}");
        let get_book = b.iter().find(|b| b.method.name() == "GetBook").unwrap();
        assert_eq!(get_book.grpc_path(), "/bookstore.v1.Bookstore/GetBook");
        let update = b.iter().find(|b| b.method.name() == "UpdateBook").unwrap();
        assert_eq!(update.path_fields[0].iter().map(|f| f.name()).collect::<Vec<_>>(), ["book", "name"]);
        assert!(matches!(&update.body, BodyTarget::Field(f) if f.name() == "book"));
        let list_books = b.iter().find(|b| b.method.name() == "ListBooks").unwrap();
        assert_eq!(list_books.response_body.as_ref().map(|f| f.name()), Some("books"));
    }

    /// A configured rule replaces the annotation; services can be selected.
    #[test]
    fn overrides_and_selection() {
        let opts = RuleOptions {
            services: vec!["bookstore.v1.Bookstore".into()],
            rules: vec![spec("bookstore.v1.Bookstore.GetShelf", "GET", "/v2/shelf/{shelf}", "")],
        };
        let b = compile_rules(&bookstore(), &opts).unwrap();
        let shelf: Vec<_> = b.iter().filter(|b| b.method.name() == "GetShelf").collect();
        assert_eq!(shelf.len(), 1);
        assert_eq!(shelf[0].template.as_str(), "/v2/shelf/{shelf}");
        assert_eq!(shelf[0].source, "rules[0]");
        let e =
            compile_rules(&bookstore(), &RuleOptions { services: vec!["x.Nope".into()], rules: vec![] }).unwrap_err();
        assert!(e.to_string().contains("services[0]: x.Nope: no such service"), "{e}");
    }

    /// Each kind of invalid rule is an error naming the file, the method and the rule.
    #[test]
    fn invalid_rules_name_file_and_method() {
        let sel = "bookstore.v1.Bookstore.GetShelf";
        for (rule, want) in [
            (spec(sel, "GET", "/v1/{nope}", ""), "path variable {nope}: no field \"nope\""),
            (spec(sel, "GET", "v1/x", ""), "starts with '/'"),
            (spec(sel, "POST", "/v1/x", "nope"), "body: no field \"nope\""),
            (spec(sel, "GET", "/v1/x", "*"), "a GET rule cannot have a body"),
            (spec(sel, "get", "/v1/x", ""), "must be upper case"),
            (
                spec(sel, "GET", "/v1/shelves", ""),
                "conflicts with GET /v1/shelves of bookstore.v1.Bookstore.ListShelves",
            ),
            (
                RuleSpec { response_body: "nope".into(), ..spec(sel, "GET", "/v1/x", "") },
                "response_body: no field \"nope\"",
            ),
            (
                spec(sel, "GET", "/v1/{shelf=a/*}", ""),
                "spans several segments but field bookstore.v1.GetShelfRequest.shelf is not a string",
            ),
            (spec("bookstore.v1.Bookstore.ListBooks", "GET", "/v1/{tags}", ""), "cannot be set from a path segment"),
            (spec("bookstore.v1.Bookstore.ListBooks", "GET", "/v1/{filter}", ""), "cannot be set from a path segment"),
            (spec("bookstore.v1.Bookstore.ListBooks", "GET", "/v1/{tags.x}", ""), "not a singular message"),
            (
                RuleSpec {
                    additional_bindings: vec![RuleSpec {
                        additional_bindings: vec![spec("", "GET", "/v1/z", "")],
                        ..spec("", "GET", "/v1/y", "")
                    }],
                    ..spec(sel, "GET", "/v1/x", "")
                },
                "cannot be nested",
            ),
        ] {
            let e =
                compile_rules(&bookstore(), &RuleOptions { services: vec![], rules: vec![rule.clone()] }).unwrap_err();
            assert_eq!(e.file, "bookstore/v1/bookstore.proto", "{rule:?}: {e}");
            assert_eq!(
                e.method,
                "bookstore.v1.Bookstore.GetShelf".replace("GetShelf", rule.selector.rsplit('.').next().unwrap())
            );
            assert!(e.message.contains(want), "{rule:?}: {e}");
            assert!(e.message.contains("rules[0]"), "{e}");
        }
        let e = compile_rules(
            &bookstore(),
            &RuleOptions { services: vec![], rules: vec![spec("bookstore.v1.Bookstore.Nope", "GET", "/x", "")] },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rules[0]: bookstore.v1.Bookstore.Nope: selector names no method of the transcoded services"
        );
        let twice = vec![spec(sel, "GET", "/a/{shelf}", ""), spec(sel, "GET", "/b/{shelf}", "")];
        let e = compile_rules(&bookstore(), &RuleOptions { services: vec![], rules: twice }).unwrap_err();
        assert!(e.to_string().contains("a second rule for this method (rules[0])"), "{e}");
    }
}
