//! Value templates of the transformers: literal text with `$(...)` references, parsed once.

use gw_core::Ctx;
use http::HeaderMap;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Header(String),
    Query(String),
    Param(String),
    ConsumerUsername,
    ConsumerCustomId,
    RouteName,
    ServiceName,
    RequestId,
    ClientIp,
}

/// A parsed template (validated by `gw_config::plugins::check_template` at load).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template(Vec<Piece>);

impl Template {
    pub(crate) fn parse(t: &str) -> Result<Template, String> {
        gw_config::plugins::check_template(t)?;
        let mut pieces = Vec::new();
        let mut rest = t;
        while let Some(i) = rest.find("$(") {
            if i > 0 {
                pieces.push(Piece::Lit(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let end = after.find(')').ok_or("unclosed $(")?;
            let expr = &after[..end];
            pieces.push(match expr {
                "consumer.username" => Piece::ConsumerUsername,
                "consumer.custom_id" => Piece::ConsumerCustomId,
                "route.name" => Piece::RouteName,
                "service.name" => Piece::ServiceName,
                "request_id" => Piece::RequestId,
                "client_ip" => Piece::ClientIp,
                e => {
                    if let Some(n) = e.strip_prefix("headers.") {
                        Piece::Header(n.to_ascii_lowercase())
                    } else if let Some(n) = e.strip_prefix("query.") {
                        Piece::Query(n.to_string())
                    } else if let Some(n) = e.strip_prefix("params.") {
                        Piece::Param(n.to_string())
                    } else {
                        return Err(format!("unknown reference $({e})"));
                    }
                }
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Lit(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    /// Render with `headers` (of the message being transformed), `query` and the context.
    pub(crate) fn render(&self, headers: &HeaderMap, query: Option<&str>, cx: &Ctx) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Header(n) => {
                    if let Some(v) = headers.get(n.as_str()).and_then(|v| v.to_str().ok()) {
                        out.push_str(v);
                    }
                }
                Piece::Query(n) => {
                    if let Some((_, v)) = crate::util::query_pairs(query).into_iter().find(|(k, _)| k == n) {
                        out.push_str(&v);
                    }
                }
                Piece::Param(n) => {
                    if let Some(v) = cx.param(n) {
                        out.push_str(v);
                    }
                }
                Piece::ConsumerUsername => {
                    if let Some(c) = &cx.consumer {
                        out.push_str(&c.username);
                    }
                }
                Piece::ConsumerCustomId => {
                    if let Some(id) = cx.consumer.as_ref().and_then(|c| c.custom_id.as_deref()) {
                        out.push_str(id);
                    }
                }
                Piece::RouteName => {
                    if let Some(r) = &cx.route {
                        out.push_str(&r.name);
                    }
                }
                Piece::ServiceName => {
                    if let Some(r) = &cx.route {
                        out.push_str(&r.service);
                    }
                }
                Piece::RequestId => out.push_str(cx.request_id.to_str().unwrap_or("")),
                Piece::ClientIp => out.push_str(&cx.client_ip.to_string()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// References are replaced from headers, query, params and the context.
    #[test]
    fn renders() {
        let t = Template::parse("u=$(params.id);h=$(headers.X-A);q=$(query.page);r=$(request_id)").unwrap();
        let mut cx = Ctx::new("127.0.0.1:1".parse().unwrap(), "l".into(), false, http::HeaderValue::from_static("rid"));
        cx.params.push(("id".into(), "42".into()));
        let mut h = HeaderMap::new();
        h.insert("x-a", http::HeaderValue::from_static("va"));
        assert_eq!(t.render(&h, Some("page=3&x=1"), &cx), "u=42;h=va;q=3;r=rid");
        assert!(Template::parse("$(nope)").is_err());
    }
}
