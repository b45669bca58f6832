//! Reading configuration text: YAML (files) and JSON (Admin API), with `${VAR}` substitution and
//! errors that say `file:line:column: key.path: message`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::file::{FileConfig, FileRoute};
use crate::model::Config;
use crate::subst::{Mode, Subst};
use crate::validate::{KeyPath, Seg, ValidateOptions, ValidationError, validate};

/// A configuration error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedError {
    /// File name (or `<admin>`, `<stdin>`).
    pub source: String,
    /// 1-based line, if known.
    pub line: Option<u64>,
    /// 1-based column, if known.
    pub column: Option<u64>,
    /// Key path, if known.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LocatedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(p) = self.path.as_ref().filter(|p| !p.is_empty()) {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be loaded. `Display` prints one error per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The errors, in document order where known.
    pub errors: Vec<LocatedError>,
}

impl LoadError {
    fn one(e: LocatedError) -> Self {
        LoadError { errors: vec![e] }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// Environment used for `${VAR}` substitution.
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

fn yaml_options() -> serde_saphyr::Options {
    // No property map: substitution is done by `subst` for every scalar style, not only the
    // plain scalars the YAML reader would expand.
    serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    }
}

/// Parse YAML text into the file format. `${VAR}` in any value (plain, quoted or block scalar)
/// is replaced from `env`; an unset variable is an error naming the key. See [`crate::subst`]
/// and `docs/configuration.md` for the forms and the `$${` escape.
// The owned map is the established signature (callers build one per load).
#[allow(clippy::needless_pass_by_value)]
pub fn parse_yaml(text: &str, source: &str, env: HashMap<String, String>) -> Result<FileConfig, LoadError> {
    parse_yaml_in(text, source, Mode::Env(&env))
}

/// Parse YAML text that an Admin API client sent: like [`parse_yaml`], but nothing is taken
/// from the gateway's environment (a `${VAR}` reference is an error; `$${` is a literal `${`).
pub fn parse_yaml_document(text: &str, source: &str) -> Result<FileConfig, LoadError> {
    parse_yaml_in(text, source, Mode::Document)
}

fn parse_yaml_in(text: &str, source: &str, mode: Mode<'_>) -> Result<FileConfig, LoadError> {
    if is_blank(text) {
        return Err(LoadError::one(LocatedError {
            source: source.to_string(),
            line: Some(1),
            column: Some(1),
            path: None,
            message: "empty configuration (no keys; write at least `routes: []` for a gateway with no routes)".into(),
        }));
    }
    // The error goes back to serde-saphyr (which adds its location); the key path where it
    // happened is kept aside.
    let mut path = None;
    let res = serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |de| {
        serde_path_to_error::deserialize::<_, Option<FileConfig>>(Subst::new(de, mode)).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    match res {
        Ok(Some(file)) => Ok(file),
        // A document that is only `~` or `null`.
        Ok(None) => Err(LoadError::one(LocatedError {
            source: source.to_string(),
            line: Some(1),
            column: Some(1),
            path: None,
            message: "empty configuration (the document is null)".into(),
        })),
        Err(e) => Err(LoadError::one(saphyr_error(source, text, path, &e))),
    }
}

/// Whether `text` holds no YAML content: only blank lines, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

fn saphyr_error(source: &str, text: &str, path: Option<String>, e: &serde_saphyr::Error) -> LocatedError {
    let mut inner = e;
    while let serde_saphyr::Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let mut path = path.filter(|p| p != "." && !p.is_empty());
    let mut message = match inner {
        // serde-saphyr's own text names an option of the library; say what is wrong instead.
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => {
            let key = key.clone().unwrap_or_default();
            // The path of the map holding it ends in `?` (no key yet): the duplicate is the key.
            let parent = path.as_deref().map(|p| p.trim_end_matches('?').trim_end_matches('.')).unwrap_or("");
            path = Some(if parent.is_empty() { key.clone() } else { format!("{parent}.{key}") });
            format!("duplicate key `{key}`")
        }
        _ => e.to_string(),
    };
    // serde-saphyr renders a code snippet after the first line; keep the message only.
    if let Some(first) = message.lines().next() {
        message = first.to_string();
    }
    // The rendered message may already start with "line X column Y:"-style text; strip a
    // leading location so it is not printed twice.
    if let Some(rest) = message.strip_prefix("error: ") {
        message = rest.to_string();
    }
    // Drop a leading "line X column Y: " (the location is printed in front already).
    if let Some(rest) = message.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
        && rest.split(": ").next().is_some_and(|p| p.contains(" column "))
    {
        message = after.to_string();
    }
    let before = path.clone();
    let (path, message) = plugin_config_path(path, message);
    let mut loc = e.location().map(|l| (l.line(), l.column())).filter(|&(l, _)| l > 0);
    // Errors without a position, and those of a plugin's config read before its name (whose
    // position is the plugin's), point at the key instead.
    if (loc.is_none() || path != before)
        && let Some(p) = &path
        && let Ok(tree) = span_tree(text)
    {
        loc = locate(&tree, &KeyPath(Vec::new()).extend_dotted(p));
    }
    LocatedError {
        source: source.to_string(),
        line: loc.map(|l| l.0),
        column: loc.map(|l| l.1).filter(|&c| c > 0),
        path,
        message,
    }
}

/// A plugin's `config` met before its `plugin` key is read later from a buffer, and its error
/// says where inside `config` it is (`config.minute: ...`, see `plugins::FilePlugin`): move that
/// into the key path so both the file loader and the Admin API name the leaf key.
fn plugin_config_path(path: Option<String>, message: String) -> (Option<String>, String) {
    let Some(p) = path else { return (None, message) };
    let is_plugin = p
        .strip_prefix("plugins[")
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if is_plugin
        && message.starts_with("config")
        && matches!(message.as_bytes().get(6), Some(b'.' | b'[' | b':'))
        && let Some((inner, rest)) = message.split_once(": ")
    {
        return (Some(format!("{p}.{inner}")), rest.to_string());
    }
    (Some(p), message)
}

/// Parse JSON (Admin API bodies) into the file format. Nothing is substituted: a `${VAR}`
/// reference is an error and `$${` is a literal `${` (see [`to_document`]).
pub fn parse_json(text: &str, source: &str) -> Result<FileConfig, LoadError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, FileConfig>(Subst::new(de, Mode::Document)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (path, message) =
            plugin_config_path(Some(path).filter(|p| p != "."), strip_json_location(&inner.to_string()));
        LoadError::one(LocatedError {
            source: source.to_string(),
            line: Some(inner.line() as u64),
            column: Some(inner.column() as u64),
            path,
            message,
        })
    })
}

/// Deserialize an in-memory JSON document (the Admin API's working copy) into the file format,
/// without printing and re-parsing it. Errors carry the key path. Read like [`parse_json`].
pub fn parse_value(doc: &serde_json::Value, source: &str) -> Result<FileConfig, LoadError> {
    serde_path_to_error::deserialize::<_, FileConfig>(Subst::new(doc, Mode::Document)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (path, message) =
            plugin_config_path(Some(path).filter(|p| p != "."), strip_json_location(&inner.to_string()));
        LoadError::one(LocatedError { source: source.to_string(), line: None, column: None, path, message })
    })
}

/// Deserialize one route entity of an in-memory document, at `routes[index]`: the error, if
/// any, is the one [`parse_value`] gives for the whole document.
pub fn parse_route_value(entity: &serde_json::Value, index: usize, source: &str) -> Result<FileRoute, LoadError> {
    serde_path_to_error::deserialize::<_, FileRoute>(Subst::new(entity, Mode::Document)).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." { format!("routes[{index}]") } else { format!("routes[{index}].{inner}") };
        LoadError::one(LocatedError {
            source: source.to_string(),
            line: None,
            column: None,
            path: Some(path),
            message: strip_json_location(&e.into_inner().to_string()),
        })
    })
}

/// The document form of a parsed configuration (the Admin API's and the store's JSON): values
/// are written so that reading the document back gives the same values (`${` as `$${`).
pub fn to_document(file: &FileConfig) -> Result<serde_json::Value, String> {
    let mut v = serde_json::to_value(file).map_err(|e| e.to_string())?;
    crate::subst::escape_json(&mut v);
    Ok(v)
}

fn strip_json_location(m: &str) -> String {
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

/// Validate an already-parsed document. Errors carry the key path; when `yaml` (the source
/// text) is given, they also carry its line and column.
pub fn validate_located(
    file: &FileConfig,
    source: &str,
    yaml: Option<&str>,
    opts: &ValidateOptions,
) -> Result<Config, LoadError> {
    validate(file, opts).map_err(|errs| locate_all(errs, source, yaml))
}

fn locate_all(errs: Vec<ValidationError>, source: &str, yaml: Option<&str>) -> LoadError {
    let tree = yaml.and_then(|y| {
        // No property map: `${VAR}` stays literal text, which is all locating needs. Any
        // scalar is fine here (a float out of range such as `1e400` too: found by fuzzing, it
        // left every error of the document without a line).
        span_tree(y).ok()
    });
    let errors = errs
        .into_iter()
        .map(|e| {
            let loc = tree.as_ref().and_then(|t| locate(t, &e.path));
            LocatedError {
                source: source.to_string(),
                line: loc.map(|l| l.0),
                column: loc.map(|l| l.1),
                path: Some(e.path.to_string()),
                message: e.message,
            }
        })
        .collect();
    LoadError { errors }
}

/// Read, parse and validate a YAML file with `${VAR}` taken from the process environment.
pub fn load_file(path: &Path) -> Result<Config, LoadError> {
    load_file_with_env(path, process_env())
}

/// [`load_file`] with an explicit environment.
pub fn load_file_with_env(path: &Path, env: HashMap<String, String>) -> Result<Config, LoadError> {
    load_file_full(path, env).map(|l| l.config)
}

/// A configuration file read and validated, with its text and document kept to locate errors
/// found later (when the gateway compiles it: certificates, plugin set-up).
#[derive(Debug)]
pub struct LoadedFile {
    /// The validated configuration.
    pub config: Config,
    /// The document as written (after substitution).
    pub file: FileConfig,
    /// The file's text.
    pub text: String,
    /// The file name, as errors print it.
    pub source: String,
}

impl LoadedFile {
    /// Locate an error of the gateway's compile step. Such errors start with the entity they
    /// are about (`listener "tls": certificate "srv": key does not match ...`); the innermost
    /// one that names an entity of this file becomes the key path, with its line and column.
    pub fn locate(&self, message: &str) -> LocatedError {
        let mut rest = message;
        let mut found: Option<(String, &str)> = None;
        while let Some((kind, name, after)) = entity_prefix(rest) {
            let f = &self.file;
            let index = match kind {
                "listener" => f.listeners.iter().position(|x| x.name == name).map(|i| ("listeners", i)),
                "certificate" => f.certificates.iter().position(|x| x.name == name).map(|i| ("certificates", i)),
                "upstream" => f.upstreams.iter().position(|x| x.name == name).map(|i| ("upstreams", i)),
                "service" => f.services.iter().position(|x| x.name == name).map(|i| ("services", i)),
                "route" => f.routes.iter().position(|x| x.name == name).map(|i| ("routes", i)),
                "plugin" => f.plugins.iter().position(|x| x.instance_name() == name).map(|i| ("plugins", i)),
                _ => None,
            };
            if let Some((coll, i)) = index {
                found = Some((format!("{coll}[{i}]"), after));
            }
            rest = after;
        }
        let (path, message) = match found {
            Some((p, m)) => (Some(p), m.to_string()),
            None => (None, message.to_string()),
        };
        let loc = path.as_ref().and_then(|p| {
            let tree = span_tree(&self.text).ok()?;
            locate(&tree, &KeyPath(Vec::new()).extend_dotted(p))
        });
        LocatedError {
            source: self.source.clone(),
            line: loc.map(|l| l.0),
            column: loc.map(|l| l.1).filter(|&c| c > 0),
            path,
            message,
        }
    }
}

/// `kind "name": rest` at the start of `text`.
fn entity_prefix(text: &str) -> Option<(&str, &str, &str)> {
    let (kind, after) = text.split_once(" \"")?;
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let (name, rest) = after.split_once("\": ")?;
    Some((kind, name, rest))
}

/// [`load_file`] keeping the text and the document (see [`LoadedFile::locate`]).
pub fn load_file_full(path: &Path, env: HashMap<String, String>) -> Result<LoadedFile, LoadError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        LoadError::one(LocatedError {
            source: source.clone(),
            line: None,
            column: None,
            path: None,
            message: format!("cannot read: {e}"),
        })
    })?;
    let file = parse_yaml(&text, &source, env)?;
    let opts = ValidateOptions { base_dir: path.parent().map(PathBuf::from), hash: None };
    let config = validate_located(&file, &source, Some(&text), &opts)?;
    Ok(LoadedFile { config, file, text, source })
}

// === locating key paths in YAML ===

/// A YAML document as a tree of located nodes, used only to point errors at lines.
#[derive(Debug)]
enum Node {
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

/// A mapping key of any scalar type, as text.
#[derive(Debug)]
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KV;
        impl Visitor<'_> for KV {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(String::new()))
            }
        }
        d.deserialize_any(KV)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NV;
        impl<'de> Visitor<'de> for NV {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key::<Spanned<Key>>()? {
                    v.push((k, m.next_value::<Spanned<Node>>()?));
                }
                Ok(Node::Map(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(n) = s.next_element::<Spanned<Node>>()? {
                    v.push(n);
                }
                Ok(Node::Seq(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
        }
        d.deserialize_any(NV)
    }
}

/// The document as a tree of located nodes, for error locations. Any scalar is fine here (a
/// float out of range such as `1e400` too: found by fuzzing, it left every error of the
/// document without a line).
fn span_tree(text: &str) -> Result<Spanned<Node>, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options::<Spanned<Node>>(
        text,
        serde_saphyr::options! { non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough },
    )
}

fn line_col(s: &serde_saphyr::Location) -> (u64, u64) {
    (s.line(), s.column())
}

/// The location of `path` in `root`: the key itself for a mapping entry, the item for a
/// sequence element; the deepest existing ancestor when the path goes further than the document.
fn locate(root: &Spanned<Node>, path: &KeyPath) -> Option<(u64, u64)> {
    let mut node = root;
    let mut best = Some(line_col(&root.referenced));
    for seg in &path.0 {
        match (seg, &node.value) {
            (Seg::Key(k), Node::Map(entries)) => {
                let Some((key, val)) = entries.iter().find(|(key, _)| key.value.0 == *k) else {
                    return best;
                };
                best = Some(line_col(&key.referenced));
                node = val;
            }
            (Seg::Index(i), Node::Seq(items)) => {
                let Some(item) = items.get(*i) else {
                    return best;
                };
                best = Some(line_col(&item.referenced));
                node = item;
            }
            _ => return best,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([("UP_PORT".to_string(), "9001".to_string())])
    }

    /// An unknown key is reported with file, line, column and the key path.
    #[test]
    fn unknown_key_has_location_and_path() {
        let yaml = "services:\n  - name: a\n    url: http://127.0.0.1:1\n    colour: blue\n";
        let err = parse_yaml(yaml, "gw.yaml", env()).unwrap_err();
        let e = &err.errors[0];
        assert_eq!(e.line, Some(4), "{err}");
        assert!(e.message.contains("colour"), "{err}");
        assert!(err.to_string().starts_with("gw.yaml:4:"), "{err}");
    }

    /// A value YAML reads as an out-of-range float (`1e400`) does not stop errors elsewhere in
    /// the document from being located (found by the config fuzz target).
    #[test]
    fn errors_are_located_beside_non_finite_floats() {
        let yaml = "services:\n  - name: 1e400\n    url: htt$p://127.0.0.1:1\n";
        let file = parse_yaml(yaml, "gw.yaml", env()).unwrap();
        let err = validate_located(&file, "gw.yaml", Some(yaml), &ValidateOptions::default()).unwrap_err();
        assert!(err.to_string().starts_with("gw.yaml:3:5: services[0].url: unknown scheme"), "{err}");
    }

    /// A semantic error (unknown service) points at the offending key's line.
    #[test]
    fn semantic_error_is_located() {
        let yaml = "services:\n  - name: a\n    url: http://127.0.0.1:${UP_PORT}\nroutes:\n  - name: r\n    service: nope\n    paths: [/x]\n";
        let file = parse_yaml(yaml, "gw.yaml", env()).unwrap();
        assert_eq!(file.services[0].url.as_deref(), Some("http://127.0.0.1:9001"));
        let err = validate_located(&file, "gw.yaml", Some(yaml), &ValidateOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "gw.yaml:6:5: routes[0].service: unknown service \"nope\"");
    }

    /// `gateway.tracing` keys are checked with file, line and key; a valid block gives the
    /// settings (an HTTP endpoint without a path gets `/v1/traces`), a disabled one none.
    #[test]
    fn tracing_settings_are_validated_and_located() {
        let yaml = "gateway:\n  tracing:\n    enabled: true\n    protocol: carrier-pigeon\n    sample_ratio: 1.5\n    propagation: jaeger\n    endpoint: \"not a url\"\n";
        let file = parse_yaml(yaml, "gw.yaml", env()).unwrap();
        let err = validate_located(&file, "gw.yaml", Some(yaml), &ValidateOptions::default()).unwrap_err();
        let text = err.to_string();
        for want in [
            "gw.yaml:4:5: gateway.tracing.protocol: \"carrier-pigeon\": use grpc or http",
            "gw.yaml:5:5: gateway.tracing.sample_ratio: must be between 0.0 and 1.0",
            "gw.yaml:6:5: gateway.tracing.propagation: \"jaeger\": use w3c, b3 or b3multi",
            "gw.yaml:7:5: gateway.tracing.endpoint: \"not a url\" is not an http:// or https:// URL",
        ] {
            assert!(text.contains(want), "{want} not in {text}");
        }
        let yaml = "gateway:\n  tracing: { enabled: true, protocol: http, endpoint: \"http://127.0.0.1:4318\", sample_ratio: 0.25 }\n";
        let cfg = validate(&parse_yaml(yaml, "gw.yaml", env()).unwrap(), &ValidateOptions::default()).unwrap();
        let t = cfg.gateway.tracing.unwrap();
        assert_eq!(t.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!((t.protocol, t.sample_ratio), (crate::model::OtlpProtocol::Http, 0.25));
        let yaml = "gateway:\n  tracing: { endpoint: \"http://127.0.0.1:4317\" }\n";
        let cfg = validate(&parse_yaml(yaml, "gw.yaml", env()).unwrap(), &ValidateOptions::default()).unwrap();
        assert!(cfg.gateway.tracing.is_none(), "off unless enabled");
    }

    /// An unset environment variable is an error naming the variable, not an empty value.
    #[test]
    fn unset_env_var_is_an_error() {
        let yaml = "services:\n  - name: a\n    url: http://127.0.0.1:${NOT_SET_ANYWHERE}\n";
        let err = parse_yaml(yaml, "gw.yaml", env()).unwrap_err();
        assert!(err.to_string().contains("NOT_SET_ANYWHERE"), "{err}");
        assert_eq!(err.errors[0].line, Some(3), "{err}");
    }

    /// A bad key inside a plugin's config is located exactly.
    #[test]
    fn plugin_config_errors_are_located() {
        let yaml = "plugins:\n  - plugin: request-termination\n    config:\n      status: 418\n      mesage: hi\n";
        let err = parse_yaml(yaml, "gw.yaml", env()).unwrap_err();
        assert_eq!(err.errors[0].line, Some(5), "{err}");
        assert!(err.to_string().contains("mesage"), "{err}");
    }

    fn sub_env() -> HashMap<String, String> {
        HashMap::from([
            ("ALICE_KEY".to_string(), "alice-real-secret".to_string()),
            ("REDIS_PASSWORD".to_string(), "p@ss".to_string()),
            ("PORT".to_string(), "9001".to_string()),
            ("ON".to_string(), "true".to_string()),
        ])
    }

    fn alice_key(file: &FileConfig) -> String {
        match &file.consumers[0].credentials[0] {
            crate::file::FileCredential::KeyAuth { key: Some(k), .. } => k.expose().to_string(),
            other => panic!("{other:?}"),
        }
    }

    /// `${VAR}` is substituted in every scalar style: plain, single- and double-quoted, literal
    /// and folded block scalars, flow collections and JSON syntax.
    #[test]
    fn substitution_in_every_scalar_style() {
        for value in [
            "${ALICE_KEY}",
            "\"${ALICE_KEY}\"",
            "'${ALICE_KEY}'",
            "|-\n          ${ALICE_KEY}",
            ">-\n          ${ALICE_KEY}",
            "!!str ${ALICE_KEY}",
        ] {
            let yaml = format!(
                "consumers:\n  - username: alice\n    credentials:\n      - type: key-auth\n        key: {value}\n"
            );
            let file = parse_yaml(&yaml, "gw.yaml", sub_env()).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(alice_key(&file), "alice-real-secret", "{value}");
        }
        let json = r#"{"consumers": [{"username": "alice", "credentials": [{"type": "key-auth", "key": "${ALICE_KEY}"}]}],
            "gateway": {"redis": {"url": "redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0"}}}"#;
        let file = parse_yaml(json, "gw.json", sub_env()).unwrap();
        assert_eq!(alice_key(&file), "alice-real-secret");
        let url = file.gateway.as_ref().and_then(|g| g.redis.as_ref()).and_then(|r| r.url.as_ref()).unwrap();
        assert_eq!(url.expose(), "redis://:p@ss@127.0.0.1:6379/0");
        // Flow style, and numbers and booleans from variables.
        let yaml = "gateway: { worker_threads: \"${PORT}\", access_log: { enabled: \"${ON}\" } }\nservices: [{ name: a, url: \"http://127.0.0.1:${PORT}\" }]\n";
        let file = parse_yaml(yaml, "gw.yaml", sub_env()).unwrap();
        let g = file.gateway.as_ref().unwrap();
        assert_eq!(g.worker_threads, Some(9001));
        assert_eq!(g.access_log.as_ref().unwrap().enabled, Some(true));
        assert_eq!(file.services[0].url.as_deref(), Some("http://127.0.0.1:9001"));
    }

    /// `$${` is a literal `${` in every style; other dollars are literal.
    #[test]
    fn escaped_references_are_literal() {
        let yaml = "services:\n  - name: a\n    type: static\n    response:\n      body: \"$${ALICE_KEY} costs $5\"\n      headers:\n        x-a: '$${X}'\n        x-b: $${Y}\n        x-c: a$$b\n";
        let file = parse_yaml(yaml, "gw.yaml", HashMap::new()).unwrap();
        let r = file.services[0].response.as_ref().unwrap();
        assert_eq!(r.body.as_deref(), Some("${ALICE_KEY} costs $5"));
        assert_eq!(r.headers["x-a"], "${X}");
        assert_eq!(r.headers["x-b"], "${Y}");
        assert_eq!(r.headers["x-c"], "a$$b");
        // Exported YAML and the document form read back to the same values.
        let again = parse_yaml(&crate::to_yaml(&file).unwrap(), "export.yaml", sub_env()).unwrap();
        assert_eq!(again, file);
        let doc = to_document(&file).unwrap();
        assert_eq!(doc.pointer("/services/0/response/body").and_then(|v| v.as_str()), Some("$${ALICE_KEY} costs $5"));
        assert_eq!(parse_value(&doc, "admin").unwrap(), file);
    }

    /// An unset variable is an error with the file, line, column and key, in every style.
    #[test]
    fn unset_variable_names_file_line_and_key() {
        for value in ["${NOPE}", "\"${NOPE}\"", "'x-${NOPE}'", "|\n          ${NOPE}"] {
            let yaml = format!(
                "consumers:\n  - username: alice\n    credentials:\n      - type: key-auth\n        key: {value}\n"
            );
            let err = parse_yaml(&yaml, "gw.yaml", sub_env()).unwrap_err().to_string();
            // The value's position (a block scalar's content starts on the next line).
            let at = if value.starts_with('|') { "6:11" } else { "5:14" };
            assert_eq!(
                err,
                format!("gw.yaml:{at}: consumers[0].credentials[0].key: environment variable NOPE is not set"),
                "{value}"
            );
        }
        let yaml = "services:\n  - name: a\n    url: \"http://127.0.0.1:${NOPE}\"\n";
        let err = parse_yaml(yaml, "gw.yaml", sub_env()).unwrap_err().to_string();
        assert_eq!(err, "gw.yaml:3:10: services[0].url: environment variable NOPE is not set");
        let yaml = "gateway:\n  worker_threads: ${NOPE}\n";
        let err = parse_yaml(yaml, "gw.yaml", sub_env()).unwrap_err().to_string();
        assert_eq!(err, "gw.yaml:2:19: gateway.worker_threads: environment variable NOPE is not set");
        // A malformed reference is an error too: nothing keeps an unresolved `${`.
        let yaml = "services:\n  - name: a\n    url: 'http://${PORT'\n";
        let err = parse_yaml(yaml, "gw.yaml", sub_env()).unwrap_err().to_string();
        assert!(err.starts_with("gw.yaml:3:10: services[0].url: unclosed `${`"), "{err}");
        // A variable whose value does not fit the type: the value is not echoed.
        let yaml = "gateway:\n  worker_threads: \"${ALICE_KEY}\"\n";
        let err = parse_yaml(yaml, "gw.yaml", sub_env()).unwrap_err().to_string();
        assert!(
            err.starts_with("gw.yaml:2:19: gateway.worker_threads: \"${ALICE_KEY}\" (after substitution) is not"),
            "{err}"
        );
        assert!(!err.contains("alice-real-secret"), "{err}");
        // Keys are not substituted.
        let yaml = "services:\n  - name: a\n    type: static\n    response:\n      headers: { \"${PORT}\": x }\n";
        let err = parse_yaml(yaml, "gw.yaml", sub_env()).unwrap_err().to_string();
        assert!(err.contains("services[0].response.headers") && err.contains("in a key"), "{err}");
    }

    /// Admin API documents take no value from the gateway's environment.
    #[test]
    fn documents_refuse_references() {
        let doc = serde_json::json!({"consumers": [{"username": "alice", "credentials": [{"type": "key-auth", "key": "${ALICE_KEY}"}]}]});
        let err = parse_value(&doc, "admin").unwrap_err();
        assert_eq!(err.errors[0].path.as_deref(), Some("consumers[0].credentials[0].key"), "{err}");
        assert!(err.errors[0].message.contains("not in Admin API"), "{err}");
        let err = parse_json(&doc.to_string(), "import").unwrap_err();
        assert_eq!(err.errors[0].path.as_deref(), Some("consumers[0].credentials[0].key"), "{err}");
        let yaml = "services:\n  - name: a\n    url: http://127.0.0.1:${PORT}\n";
        let err = parse_yaml_document(yaml, "import").unwrap_err().to_string();
        assert!(err.starts_with("import:3:10: services[0].url: `${PORT}`"), "{err}");
    }

    /// A duplicate key says so, with its location and path.
    #[test]
    fn duplicate_keys_are_named() {
        let err = parse_yaml("routes: []\nroutes: []\n", "gw.yaml", env()).unwrap_err().to_string();
        assert_eq!(err, "gw.yaml:2:1: routes: duplicate key `routes`");
        let yaml = "services:\n  - name: a\n    type: echo\n    name: b\n";
        let err = parse_yaml(yaml, "gw.yaml", env()).unwrap_err().to_string();
        assert_eq!(err, "gw.yaml:4:5: services[0].name: duplicate key `name`");
    }

    /// A file without any configuration is an error, not an empty gateway.
    #[test]
    fn empty_configuration_is_an_error() {
        for text in ["", "\n\n", "# nothing here\n  # at all\n", "---\n# x\n", "~\n", "null\n"] {
            let err = parse_yaml(text, "gw.yaml", env()).unwrap_err().to_string();
            assert!(err.starts_with("gw.yaml:1:1: empty configuration"), "{text:?}: {err}");
        }
        assert!(parse_yaml("{}\n", "gw.yaml", env()).is_ok());
    }

    /// A type error inside a plugin's config names the leaf key whatever the key order (JSON
    /// documents have sorted keys, so `config` comes before `plugin`).
    #[test]
    fn plugin_config_type_errors_name_the_leaf() {
        let yaml = "plugins:\n  - plugin: acl\n    config: { allow: [a] }\n  - plugin: rate-limiting\n    config:\n      minute: lots\n";
        let err = parse_yaml(yaml, "gw.yaml", env()).unwrap_err().to_string();
        assert!(err.starts_with("gw.yaml:6:7: plugins[1].config.minute: invalid type"), "{err}");
        let yaml = "plugins:\n  - plugin: acl\n    config: { allow: [a] }\n  - config:\n      minute: lots\n    plugin: rate-limiting\n";
        let err = parse_yaml(yaml, "gw.yaml", env()).unwrap_err().to_string();
        assert!(err.starts_with("gw.yaml:5:7: plugins[1].config.minute: invalid type"), "{err}");
        let doc = serde_json::json!({"plugins": [{"plugin": "acl", "config": {"allow": ["a"]}}, {"plugin": "rate-limiting", "config": {"minute": "lots"}}]});
        let err = parse_value(&doc, "admin").unwrap_err();
        assert_eq!(err.errors[0].path.as_deref(), Some("plugins[1].config.minute"), "{err}");
        assert!(err.errors[0].message.starts_with("invalid type: string \"lots\""), "{err}");
        let err = parse_json(&doc.to_string(), "admin").unwrap_err();
        assert_eq!(err.errors[0].path.as_deref(), Some("plugins[1].config.minute"), "{err}");
        let doc = serde_json::json!({"plugins": [{"plugin": "cors", "config": {"origins": ["a", 5]}}]});
        let err = parse_value(&doc, "admin").unwrap_err();
        assert_eq!(err.errors[0].path.as_deref(), Some("plugins[0].config.origins[1]"), "{err}");
    }

    /// Errors of the compile step are located at the entity they name.
    #[test]
    fn compile_errors_are_located() {
        let text = "certificates:\n  - { name: srv, cert: x, key: y }\nlisteners:\n  - name: tls\n    address: 127.0.0.1:1\nservices:\n  - name: s\n    type: echo\nplugins:\n  - plugin: acl\n    config: { allow: [a] }\n";
        let file = parse_yaml(text, "gw.yaml", env()).unwrap();
        let config = validate(&FileConfig::default(), &ValidateOptions::default()).unwrap();
        let loaded = LoadedFile { config, file, text: text.into(), source: "gw.yaml".into() };
        let e = loaded.locate("listener \"tls\": certificate \"srv\": key does not match certificate");
        assert_eq!(e.to_string(), "gw.yaml:2:5: certificates[0]: key does not match certificate");
        let e = loaded.locate("plugin \"acl\": needs a store");
        assert_eq!(e.to_string(), "gw.yaml:10:5: plugins[0]: needs a store");
        let e = loaded.locate("service \"s\": upstream \"nope\": bad");
        assert_eq!(e.to_string(), "gw.yaml:7:5: services[0]: upstream \"nope\": bad");
        assert_eq!(loaded.locate("something else").to_string(), "gw.yaml: something else");
    }

    /// JSON errors name the failing field.
    #[test]
    fn json_errors_name_the_field() {
        let err = parse_json(r#"{"routes":[{"name":"r","service":"s","priority":"high"}]}"#, "<admin>").unwrap_err();
        let e = &err.errors[0];
        assert_eq!(e.path.as_deref(), Some("routes[0].priority"), "{err}");
    }
}
