//! Path templates of `google.api.http` rules: parser and matcher.
//!
//! Grammar (from `google/api/http.proto`):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `*` matches one path segment, `**` zero or more (only as the last segment). `{name}` is
//! `{name=*}`. A variable's value is the path text it matched: one segment is percent-decoded
//! completely; several segments (`{name=shelves/*/books/*}`) are decoded except `%2F`, which
//! stays encoded so the value's `/` are exactly the path's separators. A literal cannot contain
//! `:` (it starts the verb) nor `{`, `}`, `*`.

use std::fmt;

use percent_encoding::percent_decode_str;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Literal text (matched after percent-decoding the path segment).
    Literal(String),
    /// `*`: one segment.
    Any,
    /// `**`: the rest of the path (zero or more segments).
    Rest,
}

/// A variable: the field it fills and the segments it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The field path, e.g. `["book", "name"]`.
    pub field_path: Vec<String>,
    /// Index of its first segment.
    pub start: usize,
    /// Index after its last segment.
    pub end: usize,
}

impl Variable {
    /// The dotted field path, e.g. `book.name`.
    pub fn dotted(&self) -> String {
        self.field_path.join(".")
    }
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
    verb: Option<String>,
    variables: Vec<Variable>,
}

/// An invalid template: what and where (byte offset in the template).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?} at byte {at}: {message}")]
pub struct TemplateError {
    /// The template.
    pub template: String,
    /// Byte offset.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, TemplateError> {
        Err(TemplateError { template: self.text.to_string(), at: self.pos, message: message.into() })
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self) -> Result<String, TemplateError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, b'/' | b':' | b'{' | b'}' | b'*' | b'=' | b'?' | b'#') {
                break;
            }
            if !c.is_ascii_graphic() {
                return self.err("a literal may only hold visible ASCII (percent-encode the rest)");
            }
            self.pos += 1;
        }
        if self.pos == start {
            return self.err("empty segment");
        }
        let raw = &self.text[start..self.pos];
        Ok(percent_decode_str(raw).decode_utf8_lossy().into_owned())
    }

    fn segments(
        &mut self,
        out: &mut Vec<Segment>,
        vars: &mut Vec<Variable>,
        in_var: bool,
    ) -> Result<(), TemplateError> {
        loop {
            match self.peek() {
                Some(b'*') => {
                    self.pos += 1;
                    if self.eat(b'*') {
                        out.push(Segment::Rest);
                    } else {
                        out.push(Segment::Any);
                    }
                }
                Some(b'{') => {
                    if in_var {
                        return self.err("variables cannot nest");
                    }
                    self.pos += 1;
                    let field_path = self.field_path()?;
                    let start = out.len();
                    if self.eat(b'=') {
                        self.segments(out, vars, true)?;
                    } else {
                        out.push(Segment::Any);
                    }
                    if !self.eat(b'}') {
                        return self.err("expected '}'");
                    }
                    vars.push(Variable { field_path, start, end: out.len() });
                }
                _ => {
                    let l = self.literal()?;
                    out.push(Segment::Literal(l));
                }
            }
            if !self.eat(b'/') {
                return Ok(());
            }
        }
    }

    fn field_path(&mut self) -> Result<Vec<String>, TemplateError> {
        let mut path = Vec::new();
        loop {
            let start = self.pos;
            while let Some(c) = self.peek() {
                if c.is_ascii_alphanumeric() || c == b'_' {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            if self.pos == start || self.s[start].is_ascii_digit() {
                return self.err("expected a field name");
            }
            path.push(self.text[start..self.pos].to_string());
            if !self.eat(b'.') {
                return Ok(path);
            }
        }
    }
}

impl PathTemplate {
    /// Parse a template.
    pub fn parse(text: &str) -> Result<PathTemplate, TemplateError> {
        let mut p = Parser { s: text.as_bytes(), pos: 0, text };
        if !p.eat(b'/') {
            return p.err("a template starts with '/'");
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        p.segments(&mut segments, &mut variables, false)?;
        let verb = if p.eat(b':') { Some(p.literal()?) } else { None };
        if p.pos != p.s.len() {
            return p.err("unexpected character");
        }
        if let Some(i) = segments.iter().position(|s| *s == Segment::Rest)
            && i + 1 != segments.len()
        {
            return Err(TemplateError {
                template: text.into(),
                at: 0,
                message: "'**' must be the last segment".into(),
            });
        }
        for (i, v) in variables.iter().enumerate() {
            if variables[..i].iter().any(|w| w.field_path == v.field_path) {
                return Err(TemplateError {
                    template: text.into(),
                    at: 0,
                    message: format!("variable {} appears twice", v.dotted()),
                });
            }
        }
        Ok(PathTemplate { text: text.to_string(), segments, verb, variables })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The verb (after `:`), if any.
    pub fn verb(&self) -> Option<&str> {
        self.verb.as_deref()
    }

    /// The variables.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The shape of the template: what it matches, ignoring variable names. Two rules with the
    /// same method and shape are a conflict.
    pub fn shape(&self) -> (Vec<Segment>, Option<String>) {
        (self.segments.clone(), self.verb.clone())
    }

    /// How specific the template is, to choose between templates that match one path: compared
    /// segment by segment, a literal beats `*`, which beats `**`; then a verb beats none.
    /// Lower is more specific.
    pub fn specificity(&self) -> (Vec<u8>, u8) {
        let ranks = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 0,
                Segment::Any => 1,
                Segment::Rest => 2,
            })
            .collect();
        (ranks, u8::from(self.verb.is_none()))
    }

    /// Match a request path (as sent, percent-encoded, without the query). Returns the value of
    /// every variable, in the order of [`PathTemplate::variables`].
    pub fn matches(&self, path: &str) -> Option<Vec<String>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(v) => {
                let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
                let (head, last) = rest.split_at(last_slash);
                let colon = last.rfind(':')?;
                if percent_decode_str(&last[colon + 1..]).decode_utf8_lossy() != v.as_str() {
                    return None;
                }
                &rest[..head.len() + colon]
            }
            None => rest,
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut ends = Vec::with_capacity(self.segments.len());
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => {
                    let p = parts.get(i)?;
                    if percent_decode_str(p).decode_utf8_lossy() != l.as_str() {
                        return None;
                    }
                    i += 1;
                }
                Segment::Any => {
                    if parts.get(i).is_none_or(|p| p.is_empty()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Rest => {
                    // Everything left (zero segments included: `/v1/books` and `/v1/books/`).
                    i = parts.len();
                }
            }
            ends.push(i);
        }
        if i != parts.len() {
            return None;
        }
        let seg_start = |k: usize| if k == 0 { 0 } else { ends[k - 1] };
        let mut values = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let (a, b) = (seg_start(v.start), if v.end == 0 { 0 } else { ends[v.end - 1] });
            let joined = parts.get(a..b).map(|s| s.join("/")).unwrap_or_default();
            values.push(if b - a <= 1 && !matches!(self.segments.get(v.start), Some(Segment::Rest)) {
                percent_decode_str(&joined).decode_utf8_lossy().into_owned()
            } else {
                decode_keeping_slashes(&joined)
            });
        }
        Some(values)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Percent-decode, except `%2F` / `%2f` (kept encoded: the value's `/` are the path's).
fn decode_keeping_slashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.to_ascii_lowercase().find("%2f") {
        out.push_str(&percent_decode_str(&rest[..i]).decode_utf8_lossy());
        out.push_str(&rest[i..i + 3]);
        rest = &rest[i + 3..];
    }
    out.push_str(&percent_decode_str(rest).decode_utf8_lossy());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> PathTemplate {
        PathTemplate::parse(s).unwrap()
    }

    /// The grammar: literals, `*`, `**`, variables with and without segments, nested field
    /// paths, verbs.
    #[test]
    fn parses_the_grammar() {
        let p = t("/v1/{name=shelves/*/books/*}:move");
        assert_eq!(
            p.segments(),
            &[
                Segment::Literal("v1".into()),
                Segment::Literal("shelves".into()),
                Segment::Any,
                Segment::Literal("books".into()),
                Segment::Any
            ]
        );
        assert_eq!(p.verb(), Some("move"));
        assert_eq!(p.variables(), &[Variable { field_path: vec!["name".into()], start: 1, end: 5 }]);
        let p = t("/v1/{book.name}/x/**");
        assert_eq!(p.variables()[0].dotted(), "book.name");
        assert_eq!(p.segments().last(), Some(&Segment::Rest));
        assert_eq!(t("/v1/a%20b").segments()[1], Segment::Literal("a b".into()));
    }

    /// Invalid templates are errors naming the problem.
    #[test]
    fn rejects_invalid_templates() {
        for (bad, what) in [
            ("v1/x", "starts with '/'"),
            ("/v1//x", "empty segment"),
            ("/v1/**/x", "'**' must be the last"),
            ("/v1/{a=b/{c}}", "cannot nest"),
            ("/v1/{a", "expected '}'"),
            ("/v1/{}", "field name"),
            ("/v1/{1a}", "field name"),
            ("/v1/{a}/{a}", "appears twice"),
            ("/v1/x:", "empty segment"),
            ("/v1/x:a/b", "unexpected"),
            ("/v1/x y", "visible ASCII"),
            ("/v1/x?y", "unexpected"),
            ("/", "empty segment"),
        ] {
            let e = PathTemplate::parse(bad).unwrap_err();
            assert!(e.message.contains(what), "{bad}: {e}");
        }
    }

    /// Matching binds variables; one segment is decoded, several keep `%2F`.
    #[test]
    fn matches_and_binds() {
        let p = t("/v1/{name=shelves/*/books/*}");
        assert_eq!(p.matches("/v1/shelves/1/books/2"), Some(vec!["shelves/1/books/2".into()]));
        assert_eq!(p.matches("/v1/shelves/a%2Fb/books/c%20d"), Some(vec!["shelves/a%2Fb/books/c d".into()]));
        assert_eq!(p.matches("/v1/shelves/1/books"), None);
        assert_eq!(p.matches("/v1/shelves/1/books/2/x"), None);
        assert_eq!(p.matches("/v1/shelves//books/2"), None);
        assert_eq!(p.matches("/v1/shelves/1/books/2:move"), Some(vec!["shelves/1/books/2:move".into()]));
        let p = t("/v1/shelves/{shelf}");
        assert_eq!(p.matches("/v1/shelves/a%2Fb"), Some(vec!["a/b".into()]));
        assert_eq!(p.matches("/v1/shelves/"), None);
        let p = t("/v1/books/{name=**}");
        assert_eq!(p.matches("/v1/books/a/b/c"), Some(vec!["a/b/c".into()]));
        assert_eq!(p.matches("/v1/books/x"), Some(vec!["x".into()]));
        assert_eq!(p.matches("/v1/books/"), Some(vec!["".into()]));
        assert_eq!(p.matches("/v1/books"), Some(vec!["".into()]));
        let p = t("/v1/{book.name=shelves/*/books/*}/{b}/x");
        assert_eq!(p.matches("/v1/shelves/1/books/2/3/x"), Some(vec!["shelves/1/books/2".into(), "3".into()]));
    }

    /// A verb must be present and equal; the path before it matches as usual.
    #[test]
    fn verbs() {
        let p = t("/v1/{name=shelves/*/books/*}:move");
        assert_eq!(p.matches("/v1/shelves/1/books/2:move"), Some(vec!["shelves/1/books/2".into()]));
        assert_eq!(p.matches("/v1/shelves/1/books/2"), None);
        assert_eq!(p.matches("/v1/shelves/1/books/2:copy"), None);
        let p = t("/v1/shelves/{shelf}/books:stream");
        assert_eq!(p.matches("/v1/shelves/7/books:stream"), Some(vec!["7".into()]));
        assert_eq!(p.matches("/v1/shelves/7/books"), None);
        assert_eq!(t("/v1:batch").matches("/v1:batch"), Some(vec![]));
    }

    /// Literals beat `*`, which beats `**`; shapes ignore variable names.
    #[test]
    fn specificity_and_shapes() {
        let lit = t("/v1/shelves/default");
        let any = t("/v1/shelves/{shelf}");
        let rest = t("/v1/shelves/{x=**}");
        assert!(lit.specificity() < any.specificity());
        assert!(any.specificity() < rest.specificity());
        assert_eq!(t("/v1/{a}").shape(), t("/v1/{b}").shape());
        assert_ne!(t("/v1/{a}").shape(), t("/v1/{a}:x").shape());
    }
}
