//! Path rewrite templates: `/v2/users/{id}` or `/static/{*rest}`, filled from route parameters.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Lit(String),
    /// A route parameter (`{id}` or `{*rest}`).
    Param(String),
}

/// A parsed rewrite template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pieces: Vec<Piece>,
}

impl PathTemplate {
    /// Parse a template. It must start with `/`; `{name}` and `{*name}` insert parameters.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("rewrite {text:?} must start with '/'"));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| format!("rewrite {text:?}: unclosed '{{'"))?;
            let raw = &after[..close];
            let name = raw.strip_prefix('*').unwrap_or(raw);
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("rewrite {text:?}: invalid parameter name {raw:?}"));
            }
            pieces.push(Piece::Param(name.to_string()));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("rewrite {text:?}: unmatched '}}'"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Lit(rest.to_string()));
        }
        Ok(PathTemplate { pieces })
    }

    /// Names of the parameters used.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Param(n) => Some(n.as_str()),
            Piece::Lit(_) => None,
        })
    }

    /// Fill the template; a missing parameter renders as empty.
    pub fn render<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Param(n) => out.push_str(lookup(n).unwrap_or("")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters are substituted and literals kept.
    #[test]
    fn renders_params() {
        let t = PathTemplate::parse("/v2/users/{id}/x/{*rest}").unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["id", "rest"]);
        let out = t.render(|n| match n {
            "id" => Some("42"),
            "rest" => Some("a/b"),
            _ => None,
        });
        assert_eq!(out, "/v2/users/42/x/a/b");
    }

    /// Malformed templates are rejected with a message.
    #[test]
    fn rejects_bad_templates() {
        assert!(PathTemplate::parse("v2").is_err());
        assert!(PathTemplate::parse("/a/{id").is_err());
        assert!(PathTemplate::parse("/a/{1x}").is_err());
        assert!(PathTemplate::parse("/a/}").is_err());
    }
}
