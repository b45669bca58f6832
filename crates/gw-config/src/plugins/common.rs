//! Pieces shared by several plugin schemas.

use super::SchemaError;

pub(crate) fn t() -> bool {
    true
}

/// Check that header names are valid (lower-cased by the plugin).
pub(crate) fn check_header_names(field: &str, names: &[String]) -> Result<(), SchemaError> {
    for (i, n) in names.iter().enumerate() {
        if http::HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).is_err() {
            return Err(SchemaError::new(format!("{field}[{i}]"), format!("{n:?} is not a header name")));
        }
    }
    Ok(())
}

/// Check that regexes compile.
pub(crate) fn check_regexes(field: &str, res: &[String]) -> Result<(), SchemaError> {
    for (i, r) in res.iter().enumerate() {
        if let Err(e) = regex::RegexBuilder::new(r).size_limit(1 << 20).build() {
            return Err(SchemaError::new(format!("{field}[{i}]"), format!("invalid regex: {e}")));
        }
    }
    Ok(())
}
