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

fn yaml_options(env: HashMap<String, String>) -> serde_saphyr::Options {
    serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    }
    .with_properties(env)
}

/// Parse YAML text into the file format. `${VAR}` in unquoted values is replaced from `env`
/// (an unset variable is an error; `${VAR:-default}` gives a default).
pub fn parse_yaml(text: &str, source: &str, env: HashMap<String, String>) -> Result<FileConfig, LoadError> {
    let opts = yaml_options(env);
    // The error goes back to serde-saphyr (which adds its location); the key path where it
    // happened is kept aside.
    let mut path = None;
    let res = serde_saphyr::with_deserializer_from_str_with_options(text, opts, |de| {
        serde_path_to_error::deserialize::<_, FileConfig>(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    res.map_err(|e| LoadError::one(saphyr_error(source, path, &e)))
}

fn saphyr_error(source: &str, path: Option<String>, e: &serde_saphyr::Error) -> LocatedError {
    let loc = e.location();
    let mut message = e.to_string();
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
    LocatedError {
        source: source.to_string(),
        line: loc.map(|l| l.line()).filter(|&l| l > 0),
        column: loc.map(|l| l.column()).filter(|&c| c > 0),
        path: path.filter(|p| p != "."),
        message,
    }
}

/// Parse JSON (Admin API bodies) into the file format.
pub fn parse_json(text: &str, source: &str) -> Result<FileConfig, LoadError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, FileConfig>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        LoadError::one(LocatedError {
            source: source.to_string(),
            line: Some(inner.line() as u64),
            column: Some(inner.column() as u64),
            path: Some(path).filter(|p| p != "."),
            message: strip_json_location(&inner.to_string()),
        })
    })
}

/// Deserialize an in-memory JSON document (the Admin API's working copy) into the file format,
/// without printing and re-parsing it. Errors carry the key path.
pub fn parse_value(doc: &serde_json::Value, source: &str) -> Result<FileConfig, LoadError> {
    serde_path_to_error::deserialize::<_, FileConfig>(doc).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        LoadError::one(LocatedError {
            source: source.to_string(),
            line: None,
            column: None,
            path: Some(path).filter(|p| p != "."),
            message: strip_json_location(&inner.to_string()),
        })
    })
}

/// Deserialize one route entity of an in-memory document, at `routes[index]`: the error, if
/// any, is the one [`parse_value`] gives for the whole document.
pub fn parse_route_value(entity: &serde_json::Value, index: usize, source: &str) -> Result<FileRoute, LoadError> {
    serde_path_to_error::deserialize::<_, FileRoute>(entity).map_err(|e| {
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
        // No property map: `${VAR}` stays literal text, which is all locating needs.
        serde_saphyr::from_str_with_options::<Spanned<Node>>(y, serde_saphyr::options! {}).ok()
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
    validate_located(&file, &source, Some(&text), &opts)
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

    /// A semantic error (unknown service) points at the offending key's line.
    #[test]
    fn semantic_error_is_located() {
        let yaml = "services:\n  - name: a\n    url: http://127.0.0.1:${UP_PORT}\nroutes:\n  - name: r\n    service: nope\n    paths: [/x]\n";
        let file = parse_yaml(yaml, "gw.yaml", env()).unwrap();
        assert_eq!(file.services[0].url.as_deref(), Some("http://127.0.0.1:9001"));
        let err = validate_located(&file, "gw.yaml", Some(yaml), &ValidateOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "gw.yaml:6:5: routes[0].service: unknown service \"nope\"");
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

    /// JSON errors name the failing field.
    #[test]
    fn json_errors_name_the_field() {
        let err = parse_json(r#"{"routes":[{"name":"r","service":"s","priority":"high"}]}"#, "<admin>").unwrap_err();
        let e = &err.errors[0];
        assert_eq!(e.path.as_deref(), Some("routes[0].priority"), "{err}");
    }
}
