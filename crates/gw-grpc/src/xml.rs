//! XML and SOAP adaptation: XML to JSON with a fixed, documented mapping; SOAP 1.1 / 1.2
//! envelopes and faults; JSON to XML through templates ([`Template`]).
//!
//! ## XML to JSON
//!
//! The document `<root>...</root>` becomes `{"root": <value of root>}`. The value of an element:
//!
//! * no attributes and no child elements: its text, as a string (`""` when empty); numbers
//!   and booleans stay strings (XML has no types), so the mapping never depends on content;
//! * otherwise an object: each attribute as `"@name": "value"`, each child element under its
//!   name, and the text (if any besides whitespace) as `"#text"`;
//! * children with the same name become an array, in document order; names listed in
//!   `always_array` are arrays even when they occur once (so a client sees one shape);
//! * `xsi:nil="true"` makes the element `null`;
//! * namespaces: with [`Namespaces::Strip`] (default) names lose their prefix (`soap:Body` is
//!   `Body`) and `xmlns` declarations are left out; with [`Namespaces::Keep`] names are written
//!   as in the document (`soap:Body`) and declarations are kept as `@xmlns:soap` attributes.
//!
//! Text is trimmed of surrounding whitespace; entity and character references are resolved;
//! CDATA is text. Comments and processing instructions are ignored. A `DOCTYPE` is refused (no
//! entity expansion, no external entities), as are documents larger than `max_bytes` or nested
//! deeper than `max_depth`. Malformed XML is an error naming the byte offset.
//!
//! ## JSON to XML
//!
//! See [`Template`].

use std::collections::HashMap;

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use serde_json::{Map, Value};

/// SOAP 1.1 envelope namespace.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// How element and attribute names appear in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Namespaces {
    /// Local names only; `xmlns` declarations left out.
    #[default]
    Strip,
    /// Names as written (`prefix:name`); declarations kept as `@xmlns...` attributes.
    Keep,
}

/// Options of the XML to JSON mapping.
#[derive(Debug, Clone)]
pub struct XmlOptions {
    /// Namespace handling.
    pub namespaces: Namespaces,
    /// Largest document accepted.
    pub max_bytes: usize,
    /// Deepest element nesting accepted.
    pub max_depth: usize,
    /// Element names (as they appear in JSON) that are always arrays.
    pub always_array: Vec<String>,
}

impl Default for XmlOptions {
    fn default() -> Self {
        XmlOptions { namespaces: Namespaces::Strip, max_bytes: 8 << 20, max_depth: 64, always_array: Vec::new() }
    }
}

/// XML that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed.
    #[error("malformed XML at byte {at}: {message}")]
    Malformed {
        /// Byte offset.
        at: u64,
        /// What is wrong.
        message: String,
    },
    /// Larger than the limit.
    #[error("XML document of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nested too deep.
    #[error("XML nested deeper than {0} elements")]
    TooDeep(usize),
    /// Well-formed, but not what was expected (no root, not a SOAP envelope, ...).
    #[error("{0}")]
    Unexpected(String),
}

/// A parsed element (the tree is bounded by `max_bytes` and `max_depth`).
#[derive(Debug, Clone, Default)]
struct Element {
    /// Name as written.
    qname: String,
    /// Local name.
    local: String,
    /// Namespace URI, if bound.
    ns: Option<String>,
    /// Attributes: (name as written, local name, is a namespace declaration, value).
    attrs: Vec<(String, String, bool, String)>,
    nil: bool,
    children: Vec<Element>,
    text: String,
}

fn malformed(r: &NsReader<&[u8]>, e: impl std::fmt::Display) -> XmlError {
    XmlError::Malformed { at: r.error_position(), message: e.to_string() }
}

fn element_of(
    r: &NsReader<&[u8]>,
    ns: Result<Option<String>, String>,
    s: &BytesStart<'_>,
) -> Result<Element, XmlError> {
    let qname = s.name().into_inner().to_string();
    let local = s.local_name().into_inner().to_string();
    let ns = ns.map_err(|p| malformed(r, format!("undeclared namespace prefix {p:?}")))?;
    let mut el = Element { qname, local, ns, ..Element::default() };
    for a in s.attributes() {
        let a = a.map_err(|e| malformed(r, e))?;
        let key = a.key.into_inner().to_string();
        let decl = key == "xmlns" || key.starts_with("xmlns:");
        let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|e| malformed(r, e))?.into_owned();
        let (res, local) = r.resolver().resolve_attribute(a.key);
        if !decl
            && matches!(res, ResolveResult::Bound(n) if n.into_inner() == XSI_NS)
            && local.into_inner() == "nil"
            && value.trim() == "true"
        {
            el.nil = true;
            continue;
        }
        el.attrs.push((key, local.into_inner().to_string(), decl, value));
    }
    Ok(el)
}

/// Parse a document into its root element.
fn parse(xml: &[u8], opts: &XmlOptions) -> Result<Element, XmlError> {
    if xml.len() > opts.max_bytes {
        return Err(XmlError::TooLarge { len: xml.len(), max: opts.max_bytes });
    }
    let text = std::str::from_utf8(xml).map_err(|e| XmlError::Malformed {
        at: e.valid_up_to() as u64,
        message: "not UTF-8 (only UTF-8 documents are read)".into(),
    })?;
    let mut r = NsReader::from_str(text);
    r.config_mut().check_end_names = true;
    r.config_mut().expand_empty_elements = false;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let (ns, ev) = match r.read_resolved_event() {
            Ok((ns, ev)) => {
                // The resolver borrows the reader: keep an owned copy of the namespace.
                let ns = match ns {
                    ResolveResult::Bound(n) => Ok(Some(n.into_inner().to_string())),
                    ResolveResult::Unbound => Ok(None),
                    ResolveResult::Unknown(p) => Err(p),
                };
                (ns, ev)
            }
            Err(e) => return Err(XmlError::Malformed { at: r.error_position(), message: e.to_string() }),
        };
        match ev {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(malformed(&r, "content after the root element"));
            }
            Event::Start(s) => {
                if stack.len() >= opts.max_depth {
                    return Err(XmlError::TooDeep(opts.max_depth));
                }
                stack.push(element_of(&r, ns, &s)?);
            }
            Event::Empty(s) => {
                if stack.len() >= opts.max_depth {
                    return Err(XmlError::TooDeep(opts.max_depth));
                }
                let el = element_of(&r, ns, &s)?;
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let mut el = stack.pop().ok_or_else(|| malformed(&r, "end tag without start"))?;
                let t = el.text.trim();
                if t.len() != el.text.len() {
                    el.text = t.to_string();
                }
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let s = t.xml10_content();
                match stack.last_mut() {
                    Some(p) => p.text.push_str(&s),
                    None if s.trim().is_empty() => {}
                    None => return Err(malformed(&r, "text outside the root element")),
                }
            }
            Event::CData(c) => {
                let s = c.xml10_content();
                match stack.last_mut() {
                    Some(p) => p.text.push_str(&s),
                    None => return Err(malformed(&r, "CDATA outside the root element")),
                }
            }
            Event::GeneralRef(g) => {
                let resolved: String = if g.is_char_ref() {
                    match g.resolve_char_ref().map_err(|e| malformed(&r, e))? {
                        Some(c) => c.to_string(),
                        None => return Err(malformed(&r, "invalid character reference")),
                    }
                } else {
                    let name = g.xml10_content();
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => s.to_string(),
                        None => return Err(malformed(&r, format!("unknown entity &{name};"))),
                    }
                };
                match stack.last_mut() {
                    Some(p) => p.text.push_str(&resolved),
                    None => return Err(malformed(&r, "reference outside the root element")),
                }
            }
            Event::DocType(_) => return Err(malformed(&r, "a DOCTYPE is not allowed")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed {
            at: text.len() as u64,
            message: "the document ends inside an element".into(),
        });
    }
    root.ok_or_else(|| XmlError::Unexpected("no root element".into()))
}

fn json_of(el: &Element, opts: &XmlOptions) -> Value {
    if el.nil {
        return Value::Null;
    }
    let keep = opts.namespaces == Namespaces::Keep;
    let attrs: Vec<_> = el.attrs.iter().filter(|a| keep || !a.2).collect();
    if attrs.is_empty() && el.children.is_empty() {
        return Value::String(el.text.clone());
    }
    let mut m = Map::new();
    for (q, local, _, v) in attrs {
        let name = if keep { q } else { local };
        m.insert(format!("@{name}"), Value::String(v.clone()));
    }
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<Value>> = HashMap::new();
    for c in &el.children {
        let name = if keep { c.qname.clone() } else { c.local.clone() };
        let g = groups.entry(name.clone()).or_default();
        if g.is_empty() {
            order.push(name);
        }
        g.push(json_of(c, opts));
    }
    for name in order {
        let mut vals = groups.remove(&name).unwrap_or_default();
        let v = if vals.len() == 1 && !opts.always_array.contains(&name) { vals.remove(0) } else { Value::Array(vals) };
        m.insert(name, v);
    }
    if !el.text.is_empty() {
        m.insert("#text".into(), Value::String(el.text.clone()));
    }
    Value::Object(m)
}

fn display_name(el: &Element, opts: &XmlOptions) -> String {
    if opts.namespaces == Namespaces::Keep { el.qname.clone() } else { el.local.clone() }
}

/// XML to JSON by the mapping of this module: `{"<root name>": <root value>}`.
pub fn xml_to_json(xml: &[u8], opts: &XmlOptions) -> Result<Value, XmlError> {
    let root = parse(xml, opts)?;
    let mut m = Map::new();
    m.insert(display_name(&root, opts), json_of(&root, opts));
    Ok(Value::Object(m))
}

/// The SOAP version of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    /// SOAP 1.1 (`text/xml`).
    V11,
    /// SOAP 1.2 (`application/soap+xml`).
    V12,
}

/// A SOAP fault.
#[derive(Debug, Clone, PartialEq)]
pub struct SoapFault {
    /// The version.
    pub version: SoapVersion,
    /// `faultcode` (1.1) or `Code/Value` (1.2), as written (e.g. `soap:Client`).
    pub code: String,
    /// `Code/Subcode/Value` (1.2 only).
    pub subcode: Option<String>,
    /// `faultstring` (1.1) or the first `Reason/Text` (1.2).
    pub reason: String,
    /// `faultactor` (1.1) or `Node` (1.2).
    pub actor: Option<String>,
    /// `detail` (1.1) or `Detail` (1.2), mapped to JSON, if present.
    pub detail: Option<Value>,
}

impl SoapFault {
    /// Whether the fault blames the request (`Client` in 1.1, `Sender` in 1.2).
    pub fn is_client_fault(&self) -> bool {
        let local = self.code.rsplit(':').next().unwrap_or("");
        matches!(local, "Client" | "Sender") || local.starts_with("Client.")
    }

    /// The HTTP status: `client` for a client (sender) fault, `server` for the others
    /// (`Server`, `Receiver`, `VersionMismatch`, `MustUnderstand`, ...).
    pub fn http_status(&self, client: u16, server: u16) -> u16 {
        if self.is_client_fault() { client } else { server }
    }

    /// The JSON error body: `{"error": "soap_fault", "message": <reason>, "fault": {...}}`.
    pub fn to_json(&self) -> Value {
        let mut f = Map::new();
        f.insert("code".into(), self.code.clone().into());
        if let Some(s) = &self.subcode {
            f.insert("subcode".into(), s.clone().into());
        }
        f.insert("reason".into(), self.reason.clone().into());
        if let Some(a) = &self.actor {
            f.insert("actor".into(), a.clone().into());
        }
        if let Some(d) = &self.detail {
            f.insert("detail".into(), d.clone());
        }
        serde_json::json!({"error": "soap_fault", "message": self.reason, "fault": f})
    }
}

/// What a SOAP response holds.
#[derive(Debug, Clone, PartialEq)]
pub enum SoapResponse {
    /// The body's content: an object of its child elements (usually one, the operation's
    /// response element), mapped like [`xml_to_json`].
    Body(Value),
    /// A fault.
    Fault(SoapFault),
}

fn child<'a>(el: &'a Element, local: &str, ns: Option<&str>) -> Option<&'a Element> {
    el.children.iter().find(|c| c.local == local && (ns.is_none() || c.ns.as_deref() == ns))
}

fn text_of(el: Option<&Element>) -> Option<String> {
    el.map(|e| e.text.clone())
}

/// Read a SOAP 1.1 or 1.2 response envelope: its body content, or its fault.
pub fn soap_response(xml: &[u8], opts: &XmlOptions) -> Result<SoapResponse, XmlError> {
    let root = parse(xml, opts)?;
    let (version, ns) = match (root.local.as_str(), root.ns.as_deref()) {
        ("Envelope", Some(SOAP11_NS)) => (SoapVersion::V11, SOAP11_NS),
        ("Envelope", Some(SOAP12_NS)) => (SoapVersion::V12, SOAP12_NS),
        _ => {
            return Err(XmlError::Unexpected(format!(
                "not a SOAP envelope: root element {} in namespace {}",
                root.qname,
                root.ns.as_deref().unwrap_or("(none)")
            )));
        }
    };
    let body =
        child(&root, "Body", Some(ns)).ok_or_else(|| XmlError::Unexpected("SOAP envelope without Body".into()))?;
    if let Some(f) = child(body, "Fault", Some(ns)) {
        let detail_of = |d: Option<&Element>| {
            d.map(|d| match json_of(d, opts) {
                Value::String(s) if s.is_empty() => Value::Object(Map::new()),
                v => v,
            })
        };
        let fault = match version {
            SoapVersion::V11 => SoapFault {
                version,
                code: text_of(child(f, "faultcode", None)).unwrap_or_default(),
                subcode: None,
                reason: text_of(child(f, "faultstring", None)).unwrap_or_default(),
                actor: text_of(child(f, "faultactor", None)),
                detail: detail_of(child(f, "detail", None)),
            },
            SoapVersion::V12 => {
                let code = child(f, "Code", Some(ns));
                SoapFault {
                    version,
                    code: text_of(code.and_then(|c| child(c, "Value", Some(ns)))).unwrap_or_default(),
                    subcode: text_of(
                        code.and_then(|c| child(c, "Subcode", Some(ns))).and_then(|s| child(s, "Value", Some(ns))),
                    ),
                    reason: text_of(child(f, "Reason", Some(ns)).and_then(|r| child(r, "Text", Some(ns))))
                        .unwrap_or_default(),
                    actor: text_of(child(f, "Node", Some(ns))),
                    detail: detail_of(child(f, "Detail", Some(ns))),
                }
            }
        };
        return Ok(SoapResponse::Fault(fault));
    }
    let mut m = Map::new();
    let wrapper = Element { children: body.children.clone(), ..Element::default() };
    if let Value::Object(o) = json_of(&wrapper, opts) {
        m = o;
    }
    Ok(SoapResponse::Body(Value::Object(m)))
}

// === templates ===

/// A JSON to XML template, parsed once at config load.
///
/// Text is copied as it is; tags are:
///
/// | tag | output |
/// | --- | --- |
/// | `{{a.b}}` | the value at the dotted path, XML-escaped (strings as they are, numbers and booleans as JSON writes them, `null` as nothing). An object or array is an error: use a section or `{{@xml}}` |
/// | `{{#a.b}}...{{/a.b}}` | section: once per element of an array (the element is `.`), once with the object pushed as the context, once for `true` or any other scalar; nothing for a missing value, `null`, `false` or `[]` |
/// | `{{^a.b}}...{{/a.b}}` | inverted section: once when the value is missing, `null`, `false` or `[]` |
/// | `{{.}}` | the current value (inside a section) |
/// | `{{@xml a.b}}` | the value as XML elements, by the inverse of the XML to JSON mapping: each key an element, `@name` keys attributes, `#text` text, arrays repeated elements, scalars text. JSON objects are unordered: sibling elements come in the alphabetical order of their keys, so where a schema fixes the order, write the elements in the template |
/// | `{{! comment }}` | nothing |
///
/// A name is looked up in the current context, then in the enclosing ones (as in Mustache).
/// A `{{a.b}}` that names nothing is an error naming the path (the request gets a 400), so a
/// required field is never silently empty; wrap optional parts in a section. Every value is
/// escaped (`&`, `<`, `>`, `"`, `'`), so values are safe in text and in attribute values.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Var(Vec<String>),
    Xml(Vec<String>),
    Section { path: Vec<String>, inverted: bool, body: Vec<Node> },
}

/// A template that does not parse (at config load) or does not render (for a request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

fn line_col(src: &str, at: usize) -> String {
    let before = &src[..at.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |i| before[i + 1..].chars().count()) + 1;
    format!("line {line}, column {col}")
}

fn parse_path(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    if s == "." {
        return Some(Vec::new());
    }
    let parts: Vec<String> = s.split('.').map(str::to_string).collect();
    let ok = parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || "_-@#$".contains(c)));
    ok.then_some(parts)
}

impl Template {
    /// Parse a template; errors give the line and column.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut stack: Vec<(Vec<String>, bool, Vec<Node>, usize)> = Vec::new();
        let mut cur: Vec<Node> = Vec::new();
        let mut rest = src;
        let mut offset = 0usize;
        while let Some(i) = rest.find("{{") {
            if i > 0 {
                cur.push(Node::Text(rest[..i].to_string()));
            }
            let at = offset + i;
            let after = &rest[i + 2..];
            let end =
                after.find("}}").ok_or_else(|| TemplateError(format!("unclosed \"{{{{\" at {}", line_col(src, at))))?;
            let tag = after[..end].trim();
            let bad = |what: &str| TemplateError(format!("{what} {{{{{tag}}}}} at {}", line_col(src, at)));
            match tag.chars().next() {
                Some('!') => {}
                Some(c @ ('#' | '^')) => {
                    let p = parse_path(&tag[1..]).filter(|p| !p.is_empty()).ok_or_else(|| bad("invalid section"))?;
                    stack.push((p, c == '^', std::mem::take(&mut cur), at));
                }
                Some('/') => {
                    let p = parse_path(&tag[1..]).ok_or_else(|| bad("invalid closing tag"))?;
                    let (open, inverted, outer, _) =
                        stack.pop().ok_or_else(|| bad("closing tag without a section:"))?;
                    if open != p {
                        return Err(bad(&format!("closing tag does not match {{{{#{}}}}}:", open.join("."))));
                    }
                    let body = std::mem::replace(&mut cur, outer);
                    cur.push(Node::Section { path: open, inverted, body });
                }
                Some('@') => {
                    let arg = tag.strip_prefix("@xml").filter(|a| a.starts_with(char::is_whitespace));
                    let p = arg.and_then(parse_path).ok_or_else(|| bad("unknown tag (use {{@xml path}}):"))?;
                    cur.push(Node::Xml(p));
                }
                Some('{') | Some('&') => return Err(bad("unescaped output is not supported:")),
                _ => {
                    let p = parse_path(tag).ok_or_else(|| bad("invalid variable"))?;
                    cur.push(Node::Var(p));
                }
            }
            let consumed = i + 2 + end + 2;
            rest = &rest[consumed..];
            offset += consumed;
        }
        if !rest.is_empty() {
            cur.push(Node::Text(rest.to_string()));
        }
        if let Some((p, _, _, at)) = stack.pop() {
            return Err(TemplateError(format!(
                "section {{{{#{}}}}} at {} is not closed",
                p.join("."),
                line_col(src, at)
            )));
        }
        Ok(Template { nodes: cur })
    }

    /// Render with `ctx` as the root context.
    pub fn render(&self, ctx: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut stack = vec![ctx];
        render_nodes(&self.nodes, &mut stack, &mut out)?;
        Ok(out)
    }
}

fn lookup<'a>(stack: &[&'a Value], path: &[String]) -> Option<&'a Value> {
    if path.is_empty() {
        return stack.last().copied();
    }
    for ctx in stack.iter().rev() {
        if let Some(first) = ctx.get(&path[0]) {
            let mut v = first;
            for p in &path[1..] {
                v = match v {
                    Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
                    other => other.get(p)?,
                };
            }
            return Some(v);
        }
    }
    None
}

fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

fn render_nodes<'a>(nodes: &'a [Node], stack: &mut Vec<&'a Value>, out: &mut String) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Var(p) => match lookup(stack, p) {
                None => return Err(TemplateError(format!("missing field {}", shown(p)))),
                Some(Value::Null) => {}
                Some(Value::String(s)) => out.push_str(&escape(s)),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
                Some(_) => {
                    return Err(TemplateError(format!(
                        "field {} is an object or array (use a section or {{{{@xml {}}}}})",
                        shown(p),
                        shown(p)
                    )));
                }
            },
            Node::Xml(p) => {
                let v = lookup(stack, p).ok_or_else(|| TemplateError(format!("missing field {}", shown(p))))?;
                write_xml_content(v, out).map_err(|e| TemplateError(format!("field {}: {e}", shown(p))))?;
            }
            Node::Section { path, inverted, body } => {
                let v = lookup(stack, path);
                let falsy = matches!(v, None | Some(Value::Null) | Some(Value::Bool(false)))
                    || matches!(v, Some(Value::Array(a)) if a.is_empty());
                if *inverted {
                    if falsy {
                        render_nodes(body, stack, out)?;
                    }
                    continue;
                }
                match v {
                    _ if falsy => {}
                    Some(Value::Array(items)) => {
                        for item in items {
                            stack.push(item);
                            let r = render_nodes(body, stack, out);
                            stack.pop();
                            r?;
                        }
                    }
                    Some(v) => {
                        stack.push(v);
                        let r = render_nodes(body, stack, out);
                        stack.pop();
                        r?;
                    }
                    None => {}
                }
            }
        }
    }
    Ok(())
}

fn shown(p: &[String]) -> String {
    if p.is_empty() { ".".into() } else { p.join(".") }
}

fn valid_xml_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        && !n.to_ascii_lowercase().starts_with("xml")
}

/// The content of an element for a JSON value (the inverse mapping).
fn write_xml_content(v: &Value, out: &mut String) -> Result<(), String> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) => {
            out.push_str(&escape(s));
            Ok(())
        }
        Value::Number(_) | Value::Bool(_) => {
            out.push_str(&v.to_string());
            Ok(())
        }
        Value::Array(_) => Err("an array needs an element name (put it under a key)".into()),
        Value::Object(m) => {
            for (k, val) in m {
                if k.starts_with('@') {
                    continue;
                }
                if k == "#text" {
                    write_xml_content(val, out)?;
                    continue;
                }
                if !valid_xml_name(k) {
                    return Err(format!("{k:?} is not an XML element name"));
                }
                let items: &[Value] = match val {
                    Value::Array(a) => a,
                    other => std::slice::from_ref(other),
                };
                for item in items {
                    out.push('<');
                    out.push_str(k);
                    if let Value::Object(attrs) = item {
                        for (ak, av) in attrs.iter().filter(|(ak, _)| ak.starts_with('@')) {
                            let name = &ak[1..];
                            if !valid_xml_name(name) && !name.starts_with("xmlns") {
                                return Err(format!("{name:?} is not an XML attribute name"));
                            }
                            let text = match av {
                                Value::String(s) => s.clone(),
                                Value::Null => String::new(),
                                Value::Number(_) | Value::Bool(_) => av.to_string(),
                                _ => return Err(format!("attribute {name:?} must be a scalar")),
                            };
                            out.push(' ');
                            out.push_str(name);
                            out.push_str("=\"");
                            out.push_str(&escape(&text));
                            out.push('"');
                        }
                    }
                    if matches!(item, Value::Array(_)) {
                        return Err(format!("{k:?}: nested arrays have no XML form"));
                    }
                    out.push('>');
                    write_xml_content(item, out)?;
                    out.push_str("</");
                    out.push_str(k);
                    out.push('>');
                }
            }
            Ok(())
        }
    }
}

/// A SOAP envelope around `body` (already XML), with the version's namespace and the
/// content type to send it with.
pub fn soap_envelope(version: SoapVersion, body: &str) -> (String, &'static str) {
    let (ns, ct) = match version {
        SoapVersion::V11 => (SOAP11_NS, "text/xml; charset=utf-8"),
        SoapVersion::V12 => (SOAP12_NS, "application/soap+xml; charset=utf-8"),
    };
    (
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<soap:Envelope xmlns:soap=\"{ns}\"><soap:Body>{body}</soap:Body></soap:Envelope>"
        ),
        ct,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn j(xml: &str) -> Value {
        xml_to_json(xml.as_bytes(), &XmlOptions::default()).unwrap()
    }

    /// The mapping: text elements as strings, attributes as `@`, mixed text as `#text`,
    /// repeated elements as arrays, empty as "", nil as null, references resolved.
    #[test]
    fn xml_to_json_mapping() {
        assert_eq!(j("<a>1</a>"), json!({"a": "1"}));
        assert_eq!(j("<a/>"), json!({"a": ""}));
        assert_eq!(
            j(
                r#"<?xml version="1.0"?><!-- c --><order id="7" state="new"><item sku="x">2</item><item sku="y">3</item><note>fast &amp; &#x263A; <![CDATA[<raw>]]></note></order>"#
            ),
            json!({"order": {"@id": "7", "@state": "new",
                "item": [{"@sku": "x", "#text": "2"}, {"@sku": "y", "#text": "3"}],
                "note": "fast & \u{263A} <raw>"}})
        );
        assert_eq!(j("<a>\n  <b>x</b>\n  tail\n</a>"), json!({"a": {"b": "x", "#text": "tail"}}));
        assert_eq!(
            j(r#"<a xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><b xsi:nil="true"/><c/></a>"#),
            json!({"a": {"b": null, "c": ""}})
        );
        let opts = XmlOptions { always_array: vec!["item".into()], ..XmlOptions::default() };
        assert_eq!(xml_to_json(b"<o><item>1</item></o>", &opts).unwrap(), json!({"o": {"item": ["1"]}}));
    }

    /// Namespaces: stripped (default) or kept with their declarations.
    #[test]
    fn namespaces() {
        let x = r#"<p:a xmlns:p="urn:p" xmlns="urn:d" p:k="v"><p:b>1</p:b><c>2</c></p:a>"#;
        assert_eq!(j(x), json!({"a": {"@k": "v", "b": "1", "c": "2"}}));
        let keep = XmlOptions { namespaces: Namespaces::Keep, ..XmlOptions::default() };
        assert_eq!(
            xml_to_json(x.as_bytes(), &keep).unwrap(),
            json!({"p:a": {"@xmlns:p": "urn:p", "@xmlns": "urn:d", "@p:k": "v", "p:b": "1", "c": "2"}})
        );
    }

    /// Malformed XML, DOCTYPEs, unknown entities, size and depth limits are errors.
    #[test]
    fn refuses_bad_xml() {
        let e = |x: &str, o: &XmlOptions| xml_to_json(x.as_bytes(), o).unwrap_err().to_string();
        let d = XmlOptions::default();
        assert!(e("<a><b></a>", &d).contains("malformed XML"), "{}", e("<a><b></a>", &d));
        assert!(e("<a>", &d).contains("ends inside an element"));
        assert!(e("<a/><b/>", &d).contains("after the root"));
        assert!(e("", &d).contains("no root element"));
        assert!(e("text", &d).contains("outside the root"));
        assert!(e("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>", &d).contains("DOCTYPE is not allowed"));
        assert!(e("<a>&bogus;</a>", &d).contains("unknown entity &bogus;"));
        assert!(e("<p:a/>", &d).contains("undeclared namespace prefix"));
        assert!(e("<a x='1' x='2'/>", &d).contains("malformed"));
        let small = XmlOptions { max_bytes: 8, ..XmlOptions::default() };
        assert!(e("<a>123456</a>", &small).contains("larger than the limit of 8"));
        let shallow = XmlOptions { max_depth: 2, ..XmlOptions::default() };
        assert!(xml_to_json(b"<a><b/></a>", &shallow).is_ok());
        assert!(e("<a><b><c/></b></a>", &shallow).contains("deeper than 2"));
        assert!(xml_to_json(b"<a>\xff</a>", &d).unwrap_err().to_string().contains("not UTF-8"));
    }

    /// SOAP bodies and faults of both versions.
    #[test]
    fn soap_envelopes() {
        let ok = format!(
            r#"<s:Envelope xmlns:s="{SOAP11_NS}"><s:Header/><s:Body><m:GetPriceResponse xmlns:m="urn:shop"><m:Price>1.90</m:Price></m:GetPriceResponse></s:Body></s:Envelope>"#
        );
        assert_eq!(
            soap_response(ok.as_bytes(), &XmlOptions::default()).unwrap(),
            SoapResponse::Body(json!({"GetPriceResponse": {"Price": "1.90"}}))
        );
        let f11 = format!(
            r#"<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>Unknown item</faultstring><detail><code>E42</code></detail></soap:Fault></soap:Body></soap:Envelope>"#
        );
        let SoapResponse::Fault(f) = soap_response(f11.as_bytes(), &XmlOptions::default()).unwrap() else { panic!() };
        assert_eq!(f.code, "soap:Client");
        assert_eq!(f.reason, "Unknown item");
        assert!(f.is_client_fault());
        assert_eq!(f.http_status(400, 502), 400);
        assert_eq!(
            f.to_json(),
            json!({"error": "soap_fault", "message": "Unknown item", "fault": {"code": "soap:Client", "reason": "Unknown item", "detail": {"code": "E42"}}})
        );
        let f12 = format!(
            r#"<env:Envelope xmlns:env="{SOAP12_NS}"><env:Body><env:Fault><env:Code><env:Value>env:Receiver</env:Value><env:Subcode><env:Value>m:Timeout</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">Backend down</env:Text></env:Reason><env:Node>urn:n</env:Node></env:Fault></env:Body></env:Envelope>"#
        );
        let SoapResponse::Fault(f) = soap_response(f12.as_bytes(), &XmlOptions::default()).unwrap() else { panic!() };
        assert_eq!(
            (f.version, f.code.as_str(), f.subcode.as_deref()),
            (SoapVersion::V12, "env:Receiver", Some("m:Timeout"))
        );
        assert_eq!((f.reason.as_str(), f.actor.as_deref()), ("Backend down", Some("urn:n")));
        assert_eq!(f.http_status(400, 502), 502);
        let e = soap_response(b"<a/>", &XmlOptions::default()).unwrap_err();
        assert!(e.to_string().contains("not a SOAP envelope"), "{e}");
        let e = soap_response(format!(r#"<s:Envelope xmlns:s="{SOAP11_NS}"/>"#).as_bytes(), &XmlOptions::default())
            .unwrap_err();
        assert!(e.to_string().contains("without Body"), "{e}");
    }

    /// Templates: variables escaped, sections over arrays and objects, inverted sections,
    /// `{{@xml}}`, lookups in enclosing contexts, and errors.
    #[test]
    fn templates_render() {
        let t = Template::parse(
            "<m:Order><m:Id>{{body.id}}</m:Id>{{! items }}{{#body.items}}<m:Item sku=\"{{sku}}\" n=\"{{qty}}\" for=\"{{body.id}}\"/>{{/body.items}}{{^body.items}}<m:Empty/>{{/body.items}}{{#body.note}}<m:Note>{{.}}</m:Note>{{/body.note}}{{@xml body.extra}}</m:Order>",
        )
        .unwrap();
        let ctx = json!({"body": {"id": "a<b&\"c'", "items": [{"sku": "x", "qty": 2}, {"sku": "y", "qty": 1.5}], "note": null,
            "extra": {"Tag": ["t1", "t2"], "Ref": {"@kind": "ext", "#text": "r&1"}, "Flag": true}}});
        assert_eq!(
            t.render(&ctx).unwrap(),
            "<m:Order><m:Id>a&lt;b&amp;&quot;c&apos;</m:Id><m:Item sku=\"x\" n=\"2\" for=\"a&lt;b&amp;&quot;c&apos;\"/><m:Item sku=\"y\" n=\"1.5\" for=\"a&lt;b&amp;&quot;c&apos;\"/><Flag>true</Flag><Ref kind=\"ext\">r&amp;1</Ref><Tag>t1</Tag><Tag>t2</Tag></m:Order>"
        );
        let empty = json!({"body": {"id": 1, "items": [], "note": "n", "extra": null}});
        assert_eq!(t.render(&empty).unwrap(), "<m:Order><m:Id>1</m:Id><m:Empty/><m:Note>n</m:Note></m:Order>");
        let e = t.render(&json!({"body": {}})).unwrap_err();
        assert_eq!(e.0, "missing field body.id");
        let e = t.render(&json!({"body": {"id": {"x": 1}}})).unwrap_err();
        assert!(e.0.contains("is an object or array"), "{e}");
        let bad = Template::parse("{{@xml x}}").unwrap().render(&json!({"x": {"bad name": 1}})).unwrap_err();
        assert!(bad.0.contains("not an XML element name"), "{bad}");
        let bad = Template::parse("{{@xml x}}").unwrap().render(&json!({"x": {"xmlEvil": 1}})).unwrap_err();
        assert!(bad.0.contains("not an XML element name"), "{bad}");
    }

    /// Template syntax errors name the line and column.
    #[test]
    fn template_errors() {
        for (src, want) in [
            ("a\n {{x", "unclosed \"{{\" at line 2, column 2"),
            ("{{#a}}", "section {{#a}} at line 1, column 1 is not closed"),
            ("{{#a}}{{/b}}", "does not match {{#a}}"),
            ("{{/a}}", "closing tag without a section"),
            ("{{{a}}}", "unescaped output is not supported"),
            ("{{a b}}", "invalid variable"),
            ("{{@json a}}", "unknown tag"),
            ("{{#}}{{/}}", "invalid section"),
        ] {
            let e = Template::parse(src).unwrap_err();
            assert!(e.0.contains(want), "{src:?}: {e}");
        }
    }

    /// An envelope built from a template reads back through the SOAP reader.
    #[test]
    fn envelope_round_trip() {
        let body = Template::parse("<m:Echo xmlns:m=\"urn:e\"><m:Text>{{t}}</m:Text></m:Echo>")
            .unwrap()
            .render(&json!({"t": "x < y"}))
            .unwrap();
        for v in [SoapVersion::V11, SoapVersion::V12] {
            let (env, ct) = soap_envelope(v, &body);
            assert!(ct.contains("xml"));
            assert_eq!(
                soap_response(env.as_bytes(), &XmlOptions::default()).unwrap(),
                SoapResponse::Body(json!({"Echo": {"Text": "x < y"}}))
            );
        }
    }
}
