//! Gatehouse configuration: the file format, its validation, and the validated model.
//!
//! Configuration exists in three shapes (see `docs/configuration.md`):
//! 1. [`file`]: what operators write (YAML files, Admin API JSON). Serde types, unknown keys
//!    rejected, no defaults applied, so export writes back exactly what was written.
//! 2. [`model`]: the validated form built by [`validate()`]: defaults filled in, references
//!    resolved, patterns parsed, secrets hashed.
//! 3. The runtime snapshot compiled from the model by `gw-proxy` and swapped atomically.
//!
//! How to use:
//! ```no_run
//! let cfg = gw_config::load_file(std::path::Path::new("gatehouse.yaml"))
//!     .unwrap_or_else(|e| { eprintln!("{e}"); std::process::exit(1) });
//! println!("{} routes", cfg.routes.len());
//! ```
//! Errors print as `file:line:column: key.path: message`, one per line.

pub mod file;
mod load;
pub mod model;
pub mod overrides;
pub mod plugins;
mod subst;
pub mod template;
mod validate;
pub mod value;

pub use load::{
    LoadError, LoadedFile, LocatedError, load_file, load_file_full, load_file_with_env, parse_json, parse_route_value,
    parse_value, parse_yaml, parse_yaml_document, process_env, to_document, validate_located,
};
pub use model::Config;
pub use overrides::AddressOverrides;
pub use subst::{escape, unescape};
pub use validate::{
    KeyPath, RouteChange, RouteEdit, Seg, ValidateOptions, ValidationError, config_hash, edit_route, hash_api_key,
    hash_password, validate,
};

/// Serialize a document back to YAML (for `gatehouse config export`). A value holding `${` is
/// written as `$${`, so loading the YAML gives the same values and substitutes nothing.
pub fn to_yaml(file: &file::FileConfig) -> Result<String, String> {
    let plain = serde_json::to_value(file).map_err(|e| e.to_string())?;
    let mut escaped = plain.clone();
    subst::escape_json(&mut escaped);
    if escaped == plain {
        return serde_saphyr::to_string(file).map_err(|e| e.to_string());
    }
    let file: file::FileConfig = serde_json::from_value(escaped).map_err(|e| e.to_string())?;
    serde_saphyr::to_string(&file).map_err(|e| e.to_string())
}
