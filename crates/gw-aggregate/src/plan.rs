//! The validated plan of an aggregate: its calls, their templates, the dependency graph derived
//! from the templates (plus `after`), limits. Built once at configuration load by
//! [`Plan::build`]; the executor only reads it.

use std::time::Duration;

use http::{HeaderName, Method};

use crate::dotted::{DottedPath, PathSet};
use crate::template::{CallRef, JsonTemplate, Source, Template, check_path};

/// Largest number of calls in one aggregate.
pub const MAX_CALLS: usize = 32;
/// Default of `max_concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Default of `timeout` (the overall deadline).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `max_body_bytes` (per backend response).
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// Largest `max_body_bytes`.
pub const MAX_BODY_LIMIT: u64 = 64 << 20;
/// Default name of the header listing the failed optional calls.
pub const DEFAULT_INCOMPLETE_HEADER: &str = "x-aggregate-incomplete";

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A service of the configuration (balancing, health checks, retries, circuit breaking and
    /// upstream TLS apply). `index` is the service's index in the configuration.
    Service {
        /// Its name.
        name: String,
        /// Its index.
        index: usize,
    },
    /// A base URL, `http://host:port/prefix` (`https`, `h2c`, `h2` too).
    Url(String),
}

/// The request body of a call (as configured).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum BodySpec {
    /// No body (default).
    #[default]
    None,
    /// The client's request body, as received.
    Client,
    /// A JSON document whose strings are templates.
    Json(serde_json::Value),
}

/// How a call's JSON response enters the merged response (as configured).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShapeSpec {
    /// Extract this nested value first.
    pub target: Option<String>,
    /// Keep only these dotted paths.
    pub allow: Vec<String>,
    /// Remove these dotted paths.
    pub deny: Vec<String>,
    /// Renames: dotted path in the response -> dotted path in the result.
    pub mapping: Vec<(String, String)>,
    /// Put a JSON array under this key.
    pub wrap: Option<String>,
    /// Flatten an array of arrays by one level.
    pub flatten: bool,
    /// Put the result under this key instead of merging it at the root.
    pub group: Option<String>,
}

/// One backend call (as configured).
#[derive(Debug, Clone, PartialEq)]
pub struct CallSpec {
    /// Name (unique in the aggregate; metrics label; `X-Aggregate-Incomplete`).
    pub name: String,
    /// Where it goes.
    pub target: Target,
    /// Method; default `GET`.
    pub method: Option<String>,
    /// Path template, optionally with a query: `/orders?user={resp0.account_id}`.
    pub path: String,
    /// More query parameters: name -> value template.
    pub query: Vec<(String, String)>,
    /// Header fields: name -> value template.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: BodySpec,
    /// Time limit of this call.
    pub timeout: Option<Duration>,
    /// Whether the whole aggregate fails when this call fails (default `true`).
    pub required: Option<bool>,
    /// Largest response body; default the aggregate's.
    pub max_body_bytes: Option<u64>,
    /// Calls that must answer before this one starts (besides those its templates read).
    pub after: Vec<String>,
    /// Shaping of the response.
    pub shape: ShapeSpec,
}

/// An aggregate (as configured).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AggregateSpec {
    /// The calls, in declaration order (`resp0` is the first).
    pub calls: Vec<CallSpec>,
    /// Most calls in flight at once for one request.
    pub max_concurrency: Option<usize>,
    /// Overall deadline.
    pub timeout: Option<Duration>,
    /// Default largest response body of a call.
    pub max_body_bytes: Option<u64>,
    /// Name of the header listing the failed optional calls.
    pub incomplete_header: Option<String>,
}

/// A problem in an aggregate's configuration: the key below the aggregate (`calls[1].path`) and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// Dotted key path relative to the aggregate, e.g. `calls[1].path`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A call's request body.
#[derive(Debug, Clone, PartialEq)]
pub enum CallBody {
    /// None.
    None,
    /// The client's.
    Client,
    /// A rendered JSON document.
    Json(JsonTemplate),
}

/// The validated shaping of a call's response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Shape {
    /// Extract first.
    pub target: Option<DottedPath>,
    /// Keep only.
    pub allow: Option<PathSet>,
    /// Remove.
    pub deny: Option<PathSet>,
    /// Renames.
    pub mapping: Vec<(DottedPath, DottedPath)>,
    /// Wrap arrays under this key.
    pub wrap: Option<String>,
    /// Flatten arrays of arrays.
    pub flatten: bool,
    /// Group under this key.
    pub group: Option<String>,
}

/// A validated call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Name.
    pub name: String,
    /// Where it goes.
    pub target: Target,
    /// Method.
    pub method: Method,
    /// Path template (before `?`).
    pub path: Template,
    /// Query parameters: those written inline in `path` after `?`, then those of `query`.
    pub query: Vec<(String, Template)>,
    /// Header fields.
    pub headers: Vec<(HeaderName, Template)>,
    /// Body.
    pub body: CallBody,
    /// Own time limit.
    pub timeout: Option<Duration>,
    /// Failure fails the aggregate.
    pub required: bool,
    /// Largest response body.
    pub max_body_bytes: u64,
    /// Calls that must have answered before this one starts (indexes, sorted).
    pub deps: Vec<usize>,
    /// Shaping.
    pub shape: Shape,
}

/// A validated aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Calls in declaration order.
    pub calls: Vec<Call>,
    /// Most calls in flight at once.
    pub max_concurrency: usize,
    /// Overall deadline.
    pub deadline: Duration,
    /// Header listing failed optional calls.
    pub incomplete_header: HeaderName,
    /// Whether at least one call depends on another (the plan has sequential steps).
    pub sequential: bool,
}

/// Header fields a call may not set: framing and hop-by-hop fields belong to the caller.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "trailer",
];

fn check_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("call name {n:?} must be 1-64 letters, digits, '_' or '-', starting with a letter or '_'"))
    }
}

fn paths(errs: &mut Vec<PlanError>, key: &str, list: &[String], wildcards: bool) -> Vec<DottedPath> {
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        match DottedPath::parse(p, wildcards) {
            Ok(d) => out.push(d),
            Err(e) => errs.push(PlanError { key: format!("{key}[{i}]"), message: e }),
        }
    }
    out
}

fn shape(errs: &mut Vec<PlanError>, key: &str, s: &ShapeSpec) -> Shape {
    let target = s.target.as_ref().and_then(|t| match DottedPath::parse(t, false) {
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(PlanError { key: format!("{key}.target"), message: e });
            None
        }
    });
    let allow = paths(errs, &format!("{key}.allow"), &s.allow, true);
    let deny = paths(errs, &format!("{key}.deny"), &s.deny, true);
    let mut mapping = Vec::new();
    for (from, to) in &s.mapping {
        match (DottedPath::parse(from, false), DottedPath::parse(to, false)) {
            (Ok(f), Ok(t)) => mapping.push((f, t)),
            (Err(e), _) | (_, Err(e)) => errs.push(PlanError { key: format!("{key}.mapping.{from}"), message: e }),
        }
    }
    for (k, v) in [("wrap", &s.wrap), ("group", &s.group)] {
        if v.as_ref().is_some_and(|x| x.is_empty()) {
            errs.push(PlanError { key: format!("{key}.{k}"), message: "an empty key cannot be used".into() });
        }
    }
    Shape {
        target,
        allow: (!allow.is_empty()).then(|| PathSet::new(&allow)),
        deny: (!deny.is_empty()).then(|| PathSet::new(&deny)),
        mapping,
        wrap: s.wrap.clone(),
        flatten: s.flatten,
        group: s.group.clone(),
    }
}

impl Plan {
    /// Validate a spec into a plan; every problem is reported.
    pub fn build(spec: &AggregateSpec) -> Result<Plan, Vec<PlanError>> {
        let mut errs = Vec::new();
        let e = |errs: &mut Vec<PlanError>, key: String, message: String| errs.push(PlanError { key, message });
        if spec.calls.is_empty() {
            e(&mut errs, "calls".into(), "at least one call is needed".into());
        }
        if spec.calls.len() > MAX_CALLS {
            e(&mut errs, "calls".into(), format!("at most {MAX_CALLS} calls"));
        }
        let max_concurrency = spec.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=64).contains(&max_concurrency) {
            e(&mut errs, "max_concurrency".into(), "must be between 1 and 64".into());
        }
        let deadline = spec.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if deadline.is_zero() || deadline > Duration::from_secs(300) {
            e(&mut errs, "timeout".into(), "must be between 1ms and 5m".into());
        }
        let default_body = spec.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if default_body == 0 || default_body > MAX_BODY_LIMIT {
            e(&mut errs, "max_body_bytes".into(), "must be between 1 byte and 64MiB".into());
        }
        let incomplete_header = match HeaderName::from_bytes(
            spec.incomplete_header.as_deref().unwrap_or(DEFAULT_INCOMPLETE_HEADER).to_ascii_lowercase().as_bytes(),
        ) {
            Ok(h) => h,
            Err(_) => {
                e(&mut errs, "incomplete_header".into(), "not a header field name".into());
                HeaderName::from_static(DEFAULT_INCOMPLETE_HEADER)
            }
        };

        let mut seen = std::collections::HashMap::new();
        for (i, c) in spec.calls.iter().enumerate() {
            if let Err(m) = check_name(&c.name) {
                e(&mut errs, format!("calls[{i}].name"), m);
            } else if seen.insert(c.name.clone(), i).is_some() {
                e(&mut errs, format!("calls[{i}].name"), format!("duplicate call name {:?}", c.name));
            }
        }
        let index_of = |n: &str| seen.get(n).copied();

        let mut calls = Vec::new();
        for (i, c) in spec.calls.iter().enumerate() {
            let k = format!("calls[{i}]");
            let method = match c.method.as_deref().unwrap_or("GET").to_ascii_uppercase().as_str() {
                m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE") => {
                    Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET)
                }
                other => {
                    e(&mut errs, format!("{k}.method"), format!("{other:?}: use GET, POST, PUT, PATCH or DELETE"));
                    Method::GET
                }
            };
            if let Target::Url(u) = &c.target {
                let ok = ["http://", "https://", "h2c://", "h2://"]
                    .iter()
                    .any(|s| u.strip_prefix(s).is_some_and(|r| !r.is_empty() && !r.starts_with('/')));
                if !ok || u.contains(['?', '#', '{']) {
                    e(&mut errs, format!("{k}.url"), format!("{u:?} is not a URL like http://host:port/prefix"));
                }
            }
            let parse = |errs: &mut Vec<PlanError>, key: String, text: &str| -> Option<Template> {
                match Template::parse(text).and_then(|mut t| {
                    t.resolve(&index_of).map_err(|n| format!("{text:?}: no call named {n:?}"))?;
                    Ok(t)
                }) {
                    Ok(t) => Some(t),
                    Err(m) => {
                        errs.push(PlanError { key, message: m });
                        None
                    }
                }
            };
            let (path_text, query_text) = c.path.split_once('?').map_or((c.path.as_str(), None), |(p, q)| (p, Some(q)));
            if !path_text.starts_with('/') {
                e(&mut errs, format!("{k}.path"), format!("{:?} must start with '/'", c.path));
            }
            let path = parse(&mut errs, format!("{k}.path"), path_text);
            if let Some(p) = &path {
                // The literal text alone must already be a clean path.
                let lits: String = p
                    .pieces()
                    .iter()
                    .map(|x| match x {
                        crate::template::Piece::Lit(l) => l.as_str(),
                        crate::template::Piece::Ref(_) => "x",
                    })
                    .collect();
                if path_text.starts_with('/')
                    && let Err(m) = check_path(&lits)
                {
                    e(&mut errs, format!("{k}.path"), m);
                }
            }
            if c.path.contains('#') {
                e(&mut errs, format!("{k}.path"), "a path has no fragment".into());
            }
            let mut query = Vec::new();
            for part in query_text.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                let (name, value) = part.split_once('=').unwrap_or((part, ""));
                if name.is_empty() || name.contains(['{', '}', '%']) {
                    e(&mut errs, format!("{k}.path"), format!("{part:?}: a query parameter name is plain text"));
                } else if let Some(t) = parse(&mut errs, format!("{k}.path"), value) {
                    query.push((name.to_string(), t));
                }
            }
            for (name, t) in &c.query {
                if name.is_empty() {
                    e(&mut errs, format!("{k}.query"), "empty parameter name".into());
                }
                if let Some(t) = parse(&mut errs, format!("{k}.query.{name}"), t) {
                    query.push((name.clone(), t));
                }
            }
            let mut headers = Vec::new();
            for (name, t) in &c.headers {
                let hk = format!("{k}.headers.{name}");
                match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                    Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) => {
                        e(&mut errs, hk.clone(), format!("{name} is set by the gateway"));
                    }
                    Ok(h) => {
                        if t.contains(['\r', '\n']) {
                            e(&mut errs, hk.clone(), "a header value has no line breaks".into());
                        }
                        if let Some(t) = parse(&mut errs, hk, t) {
                            headers.push((h, t));
                        }
                    }
                    Err(_) => e(&mut errs, hk, "not a header field name".into()),
                }
            }
            let body = match &c.body {
                BodySpec::None => CallBody::None,
                BodySpec::Client => CallBody::Client,
                BodySpec::Json(v) => match JsonTemplate::parse(v) {
                    Ok(mut j) => {
                        for t in j.templates_mut() {
                            if let Err(n) = t.resolve(&index_of) {
                                e(&mut errs, format!("{k}.json_body"), format!("no call named {n:?}"));
                            }
                        }
                        CallBody::Json(j)
                    }
                    Err(m) => {
                        e(&mut errs, format!("{k}.json_body"), m);
                        CallBody::None
                    }
                },
            };
            if let Some(t) = c.timeout
                && (t.is_zero() || t > deadline)
            {
                e(
                    &mut errs,
                    format!("{k}.timeout"),
                    "must be greater than zero and at most the aggregate's timeout".into(),
                );
            }
            let max_body_bytes = c.max_body_bytes.unwrap_or(default_body);
            if max_body_bytes == 0 || max_body_bytes > MAX_BODY_LIMIT {
                e(&mut errs, format!("{k}.max_body_bytes"), "must be between 1 byte and 64MiB".into());
            }
            // Dependencies: every response a template reads, and `after`.
            let mut deps = Vec::new();
            let mut templates: Vec<&Template> = path.iter().collect();
            templates.extend(query.iter().map(|(_, t)| t));
            templates.extend(headers.iter().map(|(_, t)| t));
            if let CallBody::Json(j) = &body {
                templates.extend(j.templates());
            }
            for t in templates {
                for s in t.refs() {
                    if let Source::Resp { call: CallRef::Index(d), .. } = s {
                        deps.push(*d);
                    }
                }
            }
            for (j, a) in c.after.iter().enumerate() {
                match index_of(a) {
                    Some(d) => deps.push(d),
                    None => e(&mut errs, format!("{k}.after[{j}]"), format!("no call named {a:?}")),
                }
            }
            deps.sort_unstable();
            deps.dedup();
            for &d in &deps {
                if d >= spec.calls.len() {
                    e(&mut errs, k.clone(), format!("refers to resp{d}, but there are {} calls", spec.calls.len()));
                } else if d == i {
                    e(&mut errs, k.clone(), format!("call {:?} refers to its own response", c.name));
                }
            }
            deps.retain(|&d| d < spec.calls.len() && d != i);
            let shape = shape(&mut errs, &k, &c.shape);
            calls.push(Call {
                name: c.name.clone(),
                target: c.target.clone(),
                method,
                path: path.unwrap_or_default(),
                query,
                headers,
                body,
                timeout: c.timeout,
                required: c.required.unwrap_or(true),
                max_body_bytes,
                deps,
                shape,
            });
        }
        if let Some(cycle) = find_cycle(&calls) {
            let names: Vec<&str> = cycle.iter().map(|&i| calls[i].name.as_str()).collect();
            e(
                &mut errs,
                format!("calls[{}]", cycle[0]),
                format!("the calls depend on each other in a cycle: {}", names.join(" -> ")),
            );
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let sequential = calls.iter().any(|c| !c.deps.is_empty());
        Ok(Plan { calls, max_concurrency, deadline, incomplete_header, sequential })
    }
}

/// A cycle of the dependency graph (a call index list ending where it started), if any.
fn find_cycle(calls: &[Call]) -> Option<Vec<usize>> {
    // 0 = unvisited, 1 = on the stack, 2 = done.
    fn visit(i: usize, calls: &[Call], state: &mut [u8], stack: &mut Vec<usize>) -> Option<Vec<usize>> {
        state[i] = 1;
        stack.push(i);
        for &d in &calls[i].deps {
            if state[d] == 1 {
                let start = stack.iter().position(|&x| x == d).unwrap_or(0);
                let mut c = stack[start..].to_vec();
                c.push(d);
                return Some(c);
            }
            if state[d] == 0
                && let Some(c) = visit(d, calls, state, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; calls.len()];
    for i in 0..calls.len() {
        if state[i] == 0
            && let Some(c) = visit(i, calls, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn call(name: &str, path: &str) -> CallSpec {
        CallSpec {
            name: name.into(),
            target: Target::Service { name: "svc".into(), index: 0 },
            method: None,
            path: path.into(),
            query: vec![],
            headers: vec![],
            body: BodySpec::None,
            timeout: None,
            required: None,
            max_body_bytes: None,
            after: vec![],
            shape: ShapeSpec::default(),
        }
    }

    fn errors(spec: &AggregateSpec) -> Vec<String> {
        Plan::build(spec).err().unwrap_or_default().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn dependencies_come_from_templates_and_after() {
        let mut orders = call("orders", "/orders?user={resp0.account_id}");
        orders.headers = vec![("x-user".into(), "{resp.user.name}".into())];
        let mut audit = call("audit", "/audit");
        audit.after = vec!["orders".into()];
        let mut reco = call("reco", "/reco");
        reco.body = BodySpec::Json(serde_json::json!({"ids": "{resp.orders.ids}"}));
        let spec = AggregateSpec {
            calls: vec![call("user", "/users/{id}"), orders, audit, reco, call("news", "/news")],
            ..Default::default()
        };
        let plan = Plan::build(&spec).unwrap_or_else(|e| panic!("{e:?}"));
        let deps: Vec<Vec<usize>> = plan.calls.iter().map(|c| c.deps.clone()).collect();
        assert_eq!(deps, vec![vec![], vec![0], vec![1], vec![1], vec![]]);
        assert!(plan.sequential);
        assert_eq!(plan.max_concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(plan.deadline, DEFAULT_TIMEOUT);
        assert_eq!(plan.incomplete_header, "x-aggregate-incomplete");
        assert!(plan.calls.iter().all(|c| c.required));
    }

    #[test]
    fn forward_references_are_fine_but_cycles_are_refused() {
        let spec = AggregateSpec { calls: vec![call("a", "/a/{resp1.x}"), call("b", "/b")], ..Default::default() };
        assert_eq!(Plan::build(&spec).map(|p| p.calls[0].deps.clone()).ok(), Some(vec![1]));
        let spec = AggregateSpec {
            calls: vec![call("a", "/a/{resp.c.x}"), call("b", "/b/{resp0.y}"), call("c", "/c/{resp1.z}")],
            ..Default::default()
        };
        assert_eq!(errors(&spec), vec!["calls[0]: the calls depend on each other in a cycle: a -> c -> b -> a"]);
        let spec = AggregateSpec { calls: vec![call("a", "/a/{resp0.x}")], ..Default::default() };
        assert_eq!(errors(&spec), vec!["calls[0]: call \"a\" refers to its own response"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let mut bad = call("bad name", "users/{id}");
        bad.method = Some("TRACE".into());
        bad.headers = vec![("Content-Length".into(), "1".into()), ("x-ok".into(), "{resp.nobody}".into())];
        bad.timeout = Some(Duration::from_secs(60));
        bad.max_body_bytes = Some(0);
        bad.after = vec!["ghost".into()];
        bad.shape.allow = vec!["a..b".into()];
        bad.shape.mapping = vec![("x".into(), "y.*".into())];
        bad.shape.group = Some(String::new());
        let mut dots = call("dots", "/a/../{id}");
        dots.target = Target::Url("ftp://x".into());
        let spec = AggregateSpec {
            calls: vec![bad, call("dup", "/x/{resp9}"), call("dup", "/{nope.x}"), dots],
            max_concurrency: Some(0),
            timeout: Some(Duration::from_secs(20)),
            max_body_bytes: Some(MAX_BODY_LIMIT + 1),
            incomplete_header: Some("bad header".into()),
        };
        let got = errors(&spec);
        for want in [
            "max_concurrency: must be between 1 and 64",
            "max_body_bytes: must be between 1 byte and 64MiB",
            "incomplete_header: not a header field name",
            "calls[0].name: call name \"bad name\" must be",
            "calls[2].name: duplicate call name \"dup\"",
            "calls[0].method: \"TRACE\": use GET",
            "calls[0].path: \"users/{id}\" must start with '/'",
            "calls[0].headers.Content-Length: Content-Length is set by the gateway",
            "calls[0].headers.x-ok: \"{resp.nobody}\": no call named \"nobody\"",
            "calls[0].timeout: must be greater than zero and at most the aggregate's timeout",
            "calls[0].max_body_bytes: must be between 1 byte and 64MiB",
            "calls[0].after[0]: no call named \"ghost\"",
            "calls[0].allow[0]: path \"a..b\": empty segment",
            "calls[0].mapping.x: path \"y.*\": `*` is only allowed",
            "calls[0].group: an empty key cannot be used",
            "calls[1]: refers to resp9, but there are 4 calls",
            "calls[2].path: \"/{nope.x}\": unknown reference",
            "calls[3].url: \"ftp://x\" is not a URL",
            "calls[3].path: path \"/a/../x\" contains a dot segment",
        ] {
            assert!(got.iter().any(|g| g.starts_with(want)), "missing {want:?} in {got:#?}");
        }
        assert_eq!(errors(&AggregateSpec::default()), vec!["calls: at least one call is needed"]);
    }
}
