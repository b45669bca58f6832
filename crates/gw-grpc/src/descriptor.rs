//! Protobuf descriptors: a descriptor set (`.pb`, from `protoc --descriptor_set_out`) or `.proto`
//! files compiled in pure Rust (protox), into a [`DescriptorPool`] (prost-reflect). No `protoc`
//! is needed at run time.
//!
//! Imports not found are served from copies built into the gateway: the protobuf well-known
//! types (`google/protobuf/*.proto`), `google/api/annotations.proto` and `http.proto` (the HTTP
//! rules), `google/rpc/status.proto` and `error_details.proto` (error details). A descriptor
//! set written without `--include_imports` therefore loads as long as its imports are among
//! those. Files of the user's own (an include path, the descriptor set) take precedence over
//! the built-in copies. The pool always holds `google.rpc.Status`, the standard error details
//! and the `google.api.http` extension.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message as _;
use prost_reflect::DescriptorPool;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver};

/// Built-in `.proto` files: name and source (Apache-2.0, Google LLC; headers kept).
const BUILT_IN: &[(&str, &str)] = &[
    ("google/api/annotations.proto", include_str!("../proto/google/api/annotations.proto")),
    ("google/api/http.proto", include_str!("../proto/google/api/http.proto")),
    ("google/rpc/status.proto", include_str!("../proto/google/rpc/status.proto")),
    ("google/rpc/error_details.proto", include_str!("../proto/google/rpc/error_details.proto")),
];

/// Files always added to a pool (so error details and HTTP rules can be read).
const ALWAYS: &[&str] = &["google/api/annotations.proto", "google/rpc/status.proto", "google/rpc/error_details.proto"];

/// Descriptors failed to load. The message names the file (and, from the compiler, the line
/// and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct DescriptorError {
    /// The file at fault, as configured (or the imported file's name).
    pub file: String,
    /// What is wrong.
    pub message: String,
}

struct BuiltIn;

impl FileResolver for BuiltIn {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match BUILT_IN.iter().find(|(n, _)| *n == name) {
            Some((n, src)) => File::from_source(n, src),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

fn compiler_error(file: &str, e: &protox::Error) -> DescriptorError {
    let file = e.file().map(str::to_string).unwrap_or_else(|| file.to_string());
    DescriptorError { file, message: e.to_string() }
}

fn finish(mut compiler: protox::Compiler, origin: &str) -> Result<DescriptorPool, DescriptorError> {
    for name in ALWAYS {
        compiler.open_file(name).map_err(|e| compiler_error(origin, &e))?;
    }
    Ok(compiler.descriptor_pool())
}

/// Load a descriptor set (the bytes of a `.pb` file). `origin` names it in errors.
///
/// The set is decoded by prost-reflect itself (not re-compiled), so method options keep their
/// extensions (`google.api.http`). Imports the set lacks are compiled from the built-in copies.
pub fn from_descriptor_set(bytes: &[u8], origin: &str) -> Result<DescriptorPool, DescriptorError> {
    let set = prost_types::FileDescriptorSet::decode(bytes).map_err(|e| DescriptorError {
        file: origin.into(),
        message: format!(
            "not a protobuf descriptor set (write one with protoc --descriptor_set_out --include_imports): {e}"
        ),
    })?;
    if set.file.is_empty() {
        return Err(DescriptorError { file: origin.into(), message: "the descriptor set holds no file".into() });
    }
    let names: HashMap<&str, ()> = set.file.iter().map(|f| (f.name(), ())).collect();
    let mut needed: Vec<String> = Vec::new();
    for f in &set.file {
        for d in &f.dependency {
            if !names.contains_key(d.as_str()) && !needed.contains(d) {
                needed.push(d.clone());
            }
        }
    }
    for a in ALWAYS {
        if !names.contains_key(a) && !needed.iter().any(|n| n == a) {
            needed.push((*a).to_string());
        }
    }
    let mut chain = ChainFileResolver::new();
    chain.add(BuiltIn);
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    for n in &needed {
        compiler.open_file(n).map_err(|e| DescriptorError {
            file: origin.into(),
            message: if e.is_file_not_found() {
                format!(
                    "import {n:?} is neither in the descriptor set nor built in (write the set with --include_imports)"
                )
            } else {
                format!("built-in {n}: {e}")
            },
        })?;
    }
    let mut pool = compiler.descriptor_pool();
    pool.decode_file_descriptor_set(bytes)
        .map_err(|e| DescriptorError { file: origin.into(), message: e.to_string() })?;
    Ok(pool)
}

/// Load a descriptor set file.
pub fn from_descriptor_set_file(path: &Path) -> Result<DescriptorPool, DescriptorError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| DescriptorError { file: origin.clone(), message: format!("cannot read: {e}") })?;
    from_descriptor_set(&bytes, &origin)
}

/// Compile `.proto` files. `files` are paths (absolute, or relative to the working directory)
/// under one of `includes`, or names relative to an include directory (as in `import`).
/// With no include directory, the directory of each file is one.
pub fn compile(files: &[PathBuf], includes: &[PathBuf]) -> Result<DescriptorPool, DescriptorError> {
    if files.is_empty() {
        return Err(DescriptorError { file: String::new(), message: "no .proto file given".into() });
    }
    let mut dirs: Vec<PathBuf> = includes.to_vec();
    if dirs.is_empty() {
        for f in files {
            let d = f.parent().map(Path::to_path_buf).unwrap_or_default();
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    let mut chain = ChainFileResolver::new();
    for d in &dirs {
        chain.add(IncludeFileResolver::new(d.clone()));
    }
    chain.add(BuiltIn);
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    for f in files {
        let shown = f.display().to_string();
        compiler.open_file(f).map_err(|e| {
            let mut err = compiler_error(&shown, &e);
            if e.is_file_not_found() && e.file().is_none() {
                err.message = format!(
                    "{} (include directories: {})",
                    err.message,
                    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                );
            }
            err
        })?;
    }
    finish(compiler, files.first().map(|f| f.display().to_string()).as_deref().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway/tests/proto")
    }

    /// The bookstore test service compiles; the pool holds the extension and error types.
    #[test]
    fn compiles_the_test_service() {
        let pool = compile(&[PathBuf::from("bookstore/v1/bookstore.proto")], &[proto_dir()]).unwrap();
        assert!(pool.get_service_by_name("bookstore.v1.Bookstore").is_some());
        assert!(pool.get_extension_by_name("google.api.http").is_some());
        assert!(pool.get_message_by_name("google.rpc.Status").is_some());
        assert!(pool.get_message_by_name("google.rpc.BadRequest").is_some());
    }

    /// Built-in copies stand in for imports that are not on the include path.
    #[test]
    fn built_in_imports_fill_in() {
        let dir = tempdir();
        std::fs::write(
            dir.join("a.proto"),
            "syntax = \"proto3\";\npackage a;\nimport \"google/api/annotations.proto\";\nimport \"google/protobuf/timestamp.proto\";\n\
             service S { rpc M(R) returns (R) { option (google.api.http) = { get: \"/m\" }; } }\nmessage R { google.protobuf.Timestamp t = 1; }\n",
        )
        .unwrap();
        let pool = compile(&[dir.join("a.proto")], &[]).unwrap();
        assert!(pool.get_service_by_name("a.S").is_some());
        // And the same through a descriptor set without imports.
        let mut chain = ChainFileResolver::new();
        chain.add(IncludeFileResolver::new(dir.clone()));
        chain.add(BuiltIn);
        chain.add(GoogleFileResolver::new());
        let set =
            protox::Compiler::with_file_resolver(chain).open_file("a.proto").unwrap().encode_file_descriptor_set();
        assert_eq!(
            prost_types::FileDescriptorSet::decode(set.as_slice()).unwrap().file.len(),
            1,
            "no imports in the set"
        );
        let pool = from_descriptor_set(&set, "a.pb").unwrap();
        assert!(pool.get_service_by_name("a.S").is_some());
        // The method's google.api.http option survives the set (it is an extension).
        let rules = crate::rules::compile_rules(&pool, &Default::default()).unwrap();
        assert_eq!(rules.len(), 1);
    }

    /// Errors name the file, and for syntax errors the line.
    #[test]
    fn errors_name_the_file() {
        let dir = tempdir();
        std::fs::write(dir.join("bad.proto"), "syntax = \"proto3\";\nmessage M {\n  int32 x = ;\n}\n").unwrap();
        let e = compile(&[dir.join("bad.proto")], &[]).unwrap_err();
        assert!(e.file.ends_with("bad.proto"), "{e}");
        assert!(e.to_string().contains("bad.proto"), "{e}");
        std::fs::write(dir.join("imp.proto"), "syntax = \"proto3\";\nimport \"missing/x.proto\";\n").unwrap();
        let e = compile(&[dir.join("imp.proto")], &[]).unwrap_err();
        assert!(e.to_string().contains("missing/x.proto"), "{e}");
        let e = compile(&[dir.join("nope.proto")], &[]).unwrap_err();
        assert!(e.to_string().contains("nope.proto"), "{e}");
        let e = from_descriptor_set(b"\xff\xff\xff", "x.pb").unwrap_err();
        assert_eq!(e.file, "x.pb");
        assert!(e.message.contains("not a protobuf descriptor set"), "{e}");
        let e = from_descriptor_set(b"", "empty.pb").unwrap_err();
        assert!(e.message.contains("no file"), "{e}");
        let e = from_descriptor_set_file(&dir.join("absent.pb")).unwrap_err();
        assert!(e.message.contains("cannot read"), "{e}");
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "gw-grpc-desc-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
