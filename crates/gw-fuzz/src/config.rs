//! `config`: arbitrary bytes (and line-wise YAML mutations of the seeds, see [`crate::mutate`])
//! into the configuration loader, as `gatehouse validate` runs it: parse (`gw_config::parse_yaml`,
//! with `${VAR}` substitution from a fixed environment), validate (`validate_located`), compile
//! (`gw_proxy::check`).
//!
//! Oracle: nothing panics; every error from parsing or validation names a line and a column
//! that lie within the input (1-based, lines as YAML counts them: CRLF, CR or LF end a line;
//! the column at most one past the end of its line), and its text starts with
//! `file:line:column: `.
//!
//! Input that is not UTF-8 is skipped: `gatehouse validate` refuses it when reading the file
//! ("cannot read: stream did not contain valid UTF-8"), before the loader runs.

use std::collections::HashMap;

use gw_config::{LoadError, ValidateOptions};

use crate::rfc::show;

const SOURCE: &str = "fuzz.yaml";

/// The environment for `${VAR}` substitution.
fn env() -> HashMap<String, String> {
    [("PORT", "8080"), ("HOST", "127.0.0.1"), ("SECRET", "s3cret"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The lines of `text` as YAML 1.2 counts them (§5.4: a line break is CRLF, CR or LF), without
/// their breaks.
fn yaml_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let (b, mut start, mut i) = (text.as_bytes(), 0, 0);
    while i < b.len() {
        match b[i] {
            b'\r' | b'\n' => {
                lines.push(&text[start..i]);
                i += if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                start = i;
            }
            _ => i += 1,
        }
    }
    lines.push(&text[start..]);
    lines
}

fn check_located(e: &LoadError, text: &str) {
    assert!(!e.errors.is_empty(), "an error without errors: {}", show(text.as_bytes()));
    let lines = yaml_lines(text);
    for err in &e.errors {
        let w = || format!("error {err:?} for {}", show(text.as_bytes()));
        let (Some(line), Some(column)) = (err.line, err.column) else { panic!("no line and column: {}", w()) };
        assert!(line >= 1 && line as usize <= lines.len(), "line outside the input ({} lines): {}", lines.len(), w());
        let len = lines[line as usize - 1].chars().count() as u64;
        assert!(column >= 1 && column <= len + 1, "column outside its line ({len} characters): {}", w());
        assert!(!err.message.is_empty(), "empty message: {}", w());
        let shown = err.to_string();
        assert!(shown.starts_with(&format!("{SOURCE}:{line}:{column}: ")), "shown as {shown:?}: {}", w());
    }
}

/// The fuzz target.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = match gw_config::parse_yaml(text, SOURCE, env()) {
        Ok(f) => f,
        Err(e) => return check_located(&e, text),
    };
    match gw_config::validate_located(&file, SOURCE, Some(text), &ValidateOptions::default()) {
        Err(e) => check_located(&e, text),
        // Compiling may refuse (its errors name the listener or service); it must not panic.
        Ok(cfg) => {
            let _ = gw_proxy::check(cfg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_line_breaks() {
        assert_eq!(yaml_lines("a\nb\r\nc\rd"), ["a", "b", "c", "d"]);
        assert_eq!(yaml_lines("a\n"), ["a", ""]);
        assert_eq!(yaml_lines(""), [""]);
    }

    /// An error in the input is located within it.
    #[test]
    fn errors_are_located() {
        config(b"services:\n  - name: a\n    url: http://127.0.0.1:1\n    colour: blue\n");
        config(b"routes:\n  - name: r\n    service: nope\n    paths: [/x]\n");
        let e = gw_config::parse_yaml("a: [", SOURCE, env()).unwrap_err();
        check_located(&e, "a: [");
    }
}
