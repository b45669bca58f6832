//! The routing table.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use regex::RegexSet;

use crate::pattern::{HeaderMatch, HostPattern, PathPattern, QueryMatch, Template};

/// A route to add to a [`Router`].
#[derive(Debug, Clone)]
pub struct RouteSpec<T> {
    /// Hosts; empty = any host.
    pub hosts: Vec<HostPattern>,
    /// Paths; empty = any path.
    pub paths: Vec<PathPattern>,
    /// Methods; empty = any method.
    pub methods: Vec<http::Method>,
    /// Header conditions (all must hold).
    pub headers: Vec<HeaderMatch>,
    /// Query conditions (all must hold).
    pub query: Vec<QueryMatch>,
    /// Higher first among routes sharing a path pattern.
    pub priority: i32,
    /// What a match returns.
    pub value: T,
}

/// The request facts a route is matched on.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// Raw Host or `:authority` (may have a port, any case).
    pub host: &'a str,
    /// Path without query, as received.
    pub path: &'a str,
    /// Method.
    pub method: &'a http::Method,
    /// Headers.
    pub headers: &'a http::HeaderMap,
    /// Raw query string without `?`.
    pub query: Option<&'a str>,
}

/// Path parameters of a match, in pattern order; values as they appear in the path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(Arc<str>, String)>);

impl Params {
    /// Value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| &**k == name).map(|(_, v)| v.as_str())
    }

    /// `(name, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, v.as_str()))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A successful lookup.
#[derive(Debug)]
pub struct Match<'r, T> {
    /// The route's value.
    pub value: &'r T,
    /// Path parameters.
    pub params: Params,
    /// Bytes of the request path consumed by the pattern's literal part (for `strip_path`):
    /// the whole path for exact, template and regex patterns; the prefix length for prefix
    /// patterns (`/api/*` on `/api/x` gives 4).
    pub matched_len: usize,
}

/// The routing table could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterError(pub String);

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RouterError {}

/// One route's conditions besides host and path.
struct Conditions {
    methods: Vec<http::Method>,
    headers: Vec<HeaderMatch>,
    query: Vec<QueryMatch>,
}

impl Conditions {
    fn hold(&self, req: &RequestParts<'_>) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        for h in &self.headers {
            let mut values = req.headers.get_all(&h.name).iter();
            let ok = match &h.value {
                None => values.next().is_some(),
                Some(m) => values.any(|v| v.to_str().is_ok_and(|s| m.matches(s))),
            };
            if !ok {
                return false;
            }
        }
        for q in &self.query {
            let ok = req.query.is_some_and(|qs| {
                qs.split('&').any(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    k == q.name && q.value.as_ref().is_none_or(|m| m.matches(v))
                })
            });
            if !ok {
                return false;
            }
        }
        true
    }
}

/// A route in a bucket, with its ordering key.
#[derive(Clone)]
struct Cand {
    route: usize,
    priority: i32,
    specificity: u32,
    /// The route's own parameter names for a template pattern (routes sharing a normalised
    /// template may name parameters differently).
    names: Arc<[Arc<str>]>,
}

/// Routes sharing one path pattern, in evaluation order.
#[derive(Default)]
struct Bucket {
    cands: Vec<Cand>,
}

impl Bucket {
    fn push(&mut self, c: Cand) {
        self.cands.push(c);
    }

    fn sort(&mut self) {
        // Stable: declaration order breaks the remaining ties.
        self.cands.sort_by(|a, b| b.priority.cmp(&a.priority).then(b.specificity.cmp(&a.specificity)));
    }

    fn first(&self, conds: &[Conditions], req: &RequestParts<'_>) -> Option<&Cand> {
        self.cands.iter().find(|c| conds[c.route].hold(req))
    }
}

/// Where a route's path matched, so parameters can be extracted afterwards.
enum PathHit<'p> {
    Plain,
    Template(&'p [Arc<str>], Vec<String>),
    Regex(usize),
}

/// All routes of one host tier.
#[derive(Default)]
struct Tier {
    exact: HashMap<String, Bucket>,
    templates: matchit::Router<usize>,
    template_buckets: Vec<(Template, Bucket)>,
    template_index: HashMap<String, usize>,
    /// Templates the radix tree refused (conflicts), matched one by one.
    fallback: Vec<(Template, Bucket)>,
    regexes: Vec<(crate::pattern::RegexPath, Cand)>,
    regex_set: Option<RegexSet>,
    prefixes: HashMap<String, Bucket>,
    longest_prefix: usize,
}

impl Tier {
    fn add(&mut self, pattern: &PathPattern, mut cand: Cand) {
        match pattern {
            PathPattern::Exact(p) => self.exact.entry(p.clone()).or_default().push(cand),
            PathPattern::Prefix(p) => {
                self.longest_prefix = self.longest_prefix.max(p.len());
                self.prefixes.entry(p.clone()).or_default().push(cand);
            }
            PathPattern::Regex(r) => self.regexes.push((r.clone(), cand)),
            PathPattern::Template(t) => {
                cand.names = t.names.clone();
                if let Some(&i) = self.template_index.get(&t.normalized) {
                    self.template_buckets[i].1.push(cand);
                    return;
                }
                if let Some(f) = self.fallback.iter_mut().find(|(ft, _)| ft.normalized == t.normalized) {
                    f.1.push(cand);
                    return;
                }
                let i = self.template_buckets.len();
                if self.templates.insert(t.normalized.clone(), i).is_ok() {
                    let mut b = Bucket::default();
                    b.push(cand);
                    self.template_buckets.push((t.clone(), b));
                    self.template_index.insert(t.normalized.clone(), i);
                } else {
                    let mut b = Bucket::default();
                    b.push(cand);
                    self.fallback.push((t.clone(), b));
                }
            }
        }
    }

    fn finish(&mut self) -> Result<(), RouterError> {
        for b in self.exact.values_mut().chain(self.prefixes.values_mut()) {
            b.sort();
        }
        for (_, b) in self.template_buckets.iter_mut().chain(self.fallback.iter_mut()) {
            b.sort();
        }
        self.regexes.sort_by(|a, b| b.1.priority.cmp(&a.1.priority).then(a.1.route.cmp(&b.1.route)));
        if !self.regexes.is_empty() {
            let set = RegexSet::new(self.regexes.iter().map(|(r, _)| r.re.as_str()))
                .map_err(|e| RouterError(format!("regex paths: {e}")))?;
            self.regex_set = Some(set);
        }
        Ok(())
    }

    fn find<'t>(&'t self, conds: &[Conditions], req: &RequestParts<'_>) -> Option<(usize, PathHit<'t>, usize)> {
        let path = req.path;
        if let Some(c) = self.exact.get(path).and_then(|b| b.first(conds, req)) {
            return Some((c.route, PathHit::Plain, path.len()));
        }
        if let Ok(m) = self.templates.at(path) {
            let (_, b) = &self.template_buckets[*m.value];
            if let Some(c) = b.first(conds, req) {
                let values = m.params.iter().map(|(_, v)| v.to_string()).collect();
                return Some((c.route, PathHit::Template(&c.names, values), path.len()));
            }
        }
        for (t, b) in &self.fallback {
            if let Some(values) = t.match_path(path)
                && let Some(c) = b.first(conds, req)
            {
                let values = values.into_iter().map(str::to_string).collect();
                return Some((c.route, PathHit::Template(&c.names, values), path.len()));
            }
        }
        if let Some(set) = &self.regex_set {
            let hits = set.matches(path);
            if hits.matched_any() {
                for i in hits.iter() {
                    let (_, c) = &self.regexes[i];
                    if conds[c.route].hold(req) {
                        return Some((c.route, PathHit::Regex(i), path.len()));
                    }
                }
            }
        }
        if !self.prefixes.is_empty() {
            // Segment boundaries of the path, longest first: "/a/b/c", "/a/b", "/a", "" (the
            // root prefix "/*"). Boundaries longer than the longest prefix are skipped.
            let full = path.trim_end_matches('/');
            let mut end = full.len();
            while end > self.longest_prefix {
                end = full[..end].rfind('/').unwrap_or(0);
            }
            loop {
                if let Some(c) = self.prefixes.get(&full[..end]).and_then(|b| b.first(conds, req)) {
                    return Some((c.route, PathHit::Plain, end));
                }
                if end == 0 {
                    break;
                }
                end = full[..end].rfind('/').unwrap_or(0);
            }
        }
        None
    }
}

/// The routing table: see the crate documentation for the priority rules.
pub struct Router<T> {
    values: Vec<T>,
    conds: Vec<Conditions>,
    exact_hosts: HashMap<String, Tier>,
    wildcard_hosts: HashMap<String, Tier>,
    any_host: Tier,
    fallbacks: usize,
}

impl<T> Router<T> {
    /// Build a routing table.
    pub fn new(routes: Vec<RouteSpec<T>>) -> Result<Self, RouterError> {
        let mut r = Router {
            values: Vec::with_capacity(routes.len()),
            conds: Vec::with_capacity(routes.len()),
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            any_host: Tier::default(),
            fallbacks: 0,
        };
        let any_path = [PathPattern::Prefix(String::new())];
        let no_names: Arc<[Arc<str>]> = Arc::from(Vec::new());
        for (i, spec) in routes.into_iter().enumerate() {
            let specificity = u32::from(!spec.methods.is_empty()) + spec.headers.len() as u32 + spec.query.len() as u32;
            let cand = Cand { route: i, priority: spec.priority, specificity, names: no_names.clone() };
            let paths: &[PathPattern] = if spec.paths.is_empty() { &any_path } else { &spec.paths };
            if spec.hosts.is_empty() {
                for p in paths {
                    r.any_host.add(p, cand.clone());
                }
            }
            for h in &spec.hosts {
                let tier = match h {
                    HostPattern::Exact(n) => r.exact_hosts.entry(n.clone()).or_default(),
                    HostPattern::Wildcard(s) => r.wildcard_hosts.entry(s.clone()).or_default(),
                };
                for p in paths {
                    tier.add(p, cand.clone());
                }
            }
            r.values.push(spec.value);
            r.conds.push(Conditions { methods: spec.methods, headers: spec.headers, query: spec.query });
        }
        for t in r.exact_hosts.values_mut().chain(r.wildcard_hosts.values_mut()).chain(std::iter::once(&mut r.any_host))
        {
            t.finish()?;
            r.fallbacks += t.fallback.iter().map(|(_, b)| b.cands.len()).sum::<usize>();
        }
        Ok(r)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Routes whose template could not go in the radix tree and are matched linearly.
    pub fn fallback_count(&self) -> usize {
        self.fallbacks
    }

    /// Find the best route for a request.
    pub fn find<'r>(&'r self, req: &RequestParts<'_>) -> Option<Match<'r, T>> {
        let host = normalize_host(req.host);
        if let Some(m) = self.exact_hosts.get(host.as_ref()).and_then(|t| self.find_in(t, req)) {
            return Some(m);
        }
        if !self.wildcard_hosts.is_empty() {
            // Longest suffix first: "a.b.example.com" tries "b.example.com", "example.com", "com".
            let mut rest: &str = host.as_ref();
            while let Some((_, parent)) = rest.split_once('.') {
                if let Some(m) = self.wildcard_hosts.get(parent).and_then(|t| self.find_in(t, req)) {
                    return Some(m);
                }
                rest = parent;
            }
        }
        self.find_in(&self.any_host, req)
    }

    fn find_in<'r>(&'r self, tier: &'r Tier, req: &RequestParts<'_>) -> Option<Match<'r, T>> {
        let (route, hit, matched_len) = tier.find(&self.conds, req)?;
        let params = match hit {
            PathHit::Plain => Params::default(),
            PathHit::Template(names, values) => Params(names.iter().cloned().zip(values).collect()),
            PathHit::Regex(i) => {
                let r = &tier.regexes[i].0;
                match r.re.captures(req.path) {
                    Some(caps) if !r.names.is_empty() => Params(
                        r.names
                            .iter()
                            .filter_map(|n| caps.name(n).map(|m| (n.clone(), m.as_str().to_string())))
                            .collect(),
                    ),
                    _ => Params::default(),
                }
            }
        };
        Some(Match { value: &self.values[route], params, matched_len })
    }
}

/// Lowercase, without port or trailing dot; borrowed when already normal.
fn normalize_host(h: &str) -> std::borrow::Cow<'_, str> {
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => h,
        }
    };
    let h = h.trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}
