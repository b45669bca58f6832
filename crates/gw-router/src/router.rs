//! The routing table.

/// Maps keyed by configured hosts, paths and templates. Lookups hash request input, but only
/// configuration inserts keys, so a fast non-keyed hash is safe here (no flooding by clients).
type HashMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;
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
#[derive(Clone)]
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

/// What the table keeps of a route: its patterns (to take it out again) and conditions.
struct Slot {
    hosts: Vec<HostPattern>,
    paths: Vec<PathPattern>,
    priority: i32,
    conds: Conditions,
}

impl Slot {
    fn specificity(&self) -> u32 {
        u32::from(!self.conds.methods.is_empty()) + self.conds.headers.len() as u32 + self.conds.query.len() as u32
    }
}

/// A route in a bucket, with its ordering key.
#[derive(Clone)]
struct Cand {
    /// The route's slot (stable across edits; slot order is declaration order).
    route: usize,
    /// Which of the route's paths this is (orders a route's own conflicting templates).
    path_idx: usize,
    priority: i32,
    specificity: u32,
    /// The route's own parameter names for a template pattern (routes sharing a normalised
    /// template may name parameters differently).
    names: Arc<[Arc<str>]>,
}

/// Evaluation order: higher priority, then more conditions, then declaration order.
fn cand_order(a: &Cand, b: &Cand) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then(b.specificity.cmp(&a.specificity)).then(a.route.cmp(&b.route))
}

/// Routes sharing one path pattern, in evaluation order.
#[derive(Default, Clone)]
struct Bucket {
    cands: Vec<Cand>,
}

impl Bucket {
    fn push(&mut self, c: Cand) {
        self.cands.push(c);
    }

    fn sort(&mut self) {
        self.cands.sort_by(cand_order);
    }

    fn insert(&mut self, c: Cand) {
        let at = self.cands.partition_point(|x| cand_order(x, &c).is_le());
        self.cands.insert(at, c);
    }

    fn remove(&mut self, slot: usize) {
        self.cands.retain(|c| c.route != slot);
    }

    fn first(&self, slots: &[Option<Arc<Slot>>], req: &RequestParts<'_>) -> Option<&Cand> {
        self.cands.iter().find(|c| slots[c.route].as_ref().is_some_and(|s| s.conds.hold(req)))
    }
}

/// Where a route's path matched, so parameters can be extracted afterwards.
enum PathHit<'p> {
    Plain,
    Template(&'p [Arc<str>], Vec<String>),
    Regex(usize),
}

/// All routes of one host tier. Buckets are shared (`Arc`) so that an edited copy of a tier
/// costs pointer copies, not a rebuild.
#[derive(Default, Clone)]
struct Tier {
    exact: HashMap<Arc<str>, Arc<Bucket>>,
    templates: matchit::Router<usize>,
    /// Indexed by the radix tree's values; `None` once a template has no route left.
    template_buckets: Vec<Option<Arc<(Template, Bucket)>>>,
    template_index: HashMap<Arc<str>, usize>,
    /// Templates the radix tree refused (conflicts), matched one by one.
    fallback: Vec<Arc<(Template, Bucket)>>,
    regexes: Vec<(crate::pattern::RegexPath, Cand)>,
    regex_set: Option<RegexSet>,
    prefixes: HashMap<Arc<str>, Arc<Bucket>>,
    /// An upper bound of the longest prefix (only used to skip shorter boundaries).
    longest_prefix: usize,
    /// Candidates in this tier (a tier with none is dropped).
    cands: usize,
    /// The regex list changed since the set was built.
    regex_dirty: bool,
    /// An edit met conflicting templates: which of them sits in the radix tree depends on
    /// declaration order, so the tree is rebuilt in that order.
    template_conflict: bool,
}

/// How a candidate is put in a bucket: appended while building (sorted once at the end), or
/// inserted at its place when editing a built table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Build,
    Edit,
}

fn put(b: &mut Bucket, c: Cand, mode: Mode) {
    match mode {
        Mode::Build => b.push(c),
        Mode::Edit => b.insert(c),
    }
}

impl Tier {
    fn add(&mut self, pattern: &PathPattern, mut cand: Cand, mode: Mode) {
        self.cands += 1;
        match pattern {
            PathPattern::Exact(p) => match self.exact.get_mut(p.as_str()) {
                Some(b) => put(Arc::make_mut(b), cand, mode),
                None => {
                    self.exact.insert(Arc::from(p.as_str()), Arc::new(Bucket { cands: vec![cand] }));
                }
            },
            PathPattern::Prefix(p) => {
                self.longest_prefix = self.longest_prefix.max(p.len());
                match self.prefixes.get_mut(p.as_str()) {
                    Some(b) => put(Arc::make_mut(b), cand, mode),
                    None => {
                        self.prefixes.insert(Arc::from(p.as_str()), Arc::new(Bucket { cands: vec![cand] }));
                    }
                }
            }
            PathPattern::Regex(r) => {
                self.regexes.push((r.clone(), cand));
                self.regex_dirty = true;
            }
            PathPattern::Template(t) => {
                cand.names = t.names.clone();
                if let Some(&i) = self.template_index.get(t.normalized.as_str())
                    && let Some(Some(entry)) = self.template_buckets.get_mut(i)
                {
                    put(&mut Arc::make_mut(entry).1, cand, mode);
                    return;
                }
                if let Some(f) = self.fallback.iter_mut().find(|f| f.0.normalized == t.normalized) {
                    put(&mut Arc::make_mut(f).1, cand, mode);
                    return;
                }
                let entry = Arc::new((t.clone(), Bucket { cands: vec![cand] }));
                self.insert_template(entry);
            }
        }
    }

    fn insert_template(&mut self, entry: Arc<(Template, Bucket)>) {
        let i = self.template_buckets.len();
        if self.templates.insert(entry.0.normalized.clone(), i).is_ok() {
            self.template_index.insert(Arc::from(entry.0.normalized.as_str()), i);
            self.template_buckets.push(Some(entry));
        } else {
            self.template_conflict = true;
            self.fallback.push(entry);
        }
    }

    /// Rebuild the radix tree inserting templates in declaration order of their first route,
    /// as a fresh build does, so conflicts resolve the same way after any sequence of edits.
    fn reorder_templates(&mut self) {
        let mut entries: Vec<Arc<(Template, Bucket)>> =
            self.template_buckets.drain(..).flatten().chain(self.fallback.drain(..)).collect();
        entries.sort_by_key(|e| e.1.cands.iter().map(|c| (c.route, c.path_idx)).min().unwrap_or((usize::MAX, 0)));
        self.templates = matchit::Router::new();
        self.template_index.clear();
        for e in entries {
            self.insert_template(e);
        }
    }

    /// Take every candidate of `slot` out of the bucket of `pattern`.
    fn remove(&mut self, pattern: &PathPattern, slot: usize) {
        let before = self.count_in(pattern, slot);
        self.cands -= before;
        match pattern {
            PathPattern::Exact(p) => remove_from(&mut self.exact, p, slot),
            PathPattern::Prefix(p) => remove_from(&mut self.prefixes, p, slot),
            PathPattern::Regex(_) => {
                self.regexes.retain(|(_, c)| c.route != slot);
                self.regex_dirty = true;
            }
            PathPattern::Template(t) => {
                if let Some(&i) = self.template_index.get(t.normalized.as_str()) {
                    let empty = match self.template_buckets.get_mut(i) {
                        Some(Some(entry)) => {
                            let e = Arc::make_mut(entry);
                            e.1.remove(slot);
                            e.1.cands.is_empty()
                        }
                        _ => false,
                    };
                    if empty {
                        self.templates.remove(t.normalized.as_str());
                        self.template_index.remove(t.normalized.as_str());
                        self.template_buckets[i] = None;
                    }
                } else if let Some(at) = self.fallback.iter().position(|f| f.0.normalized == t.normalized) {
                    let e = Arc::make_mut(&mut self.fallback[at]);
                    e.1.remove(slot);
                    if e.1.cands.is_empty() {
                        self.fallback.remove(at);
                    }
                }
            }
        }
    }

    /// Candidates of `slot` in the bucket of `pattern`.
    fn count_in(&self, pattern: &PathPattern, slot: usize) -> usize {
        let n = |b: Option<&Bucket>| b.map_or(0, |b| b.cands.iter().filter(|c| c.route == slot).count());
        match pattern {
            PathPattern::Exact(p) => n(self.exact.get(p.as_str()).map(|b| &**b)),
            PathPattern::Prefix(p) => n(self.prefixes.get(p.as_str()).map(|b| &**b)),
            PathPattern::Regex(_) => self.regexes.iter().filter(|(_, c)| c.route == slot).count(),
            PathPattern::Template(t) => match self.template_index.get(t.normalized.as_str()) {
                Some(&i) => n(self.template_buckets.get(i).and_then(|e| e.as_ref()).map(|e| &e.1)),
                None => n(self.fallback.iter().find(|f| f.0.normalized == t.normalized).map(|f| &f.1)),
            },
        }
    }

    fn finish(&mut self, mode: Mode) -> Result<(), RouterError> {
        if mode == Mode::Edit && (self.template_conflict || !self.fallback.is_empty()) {
            self.reorder_templates();
        }
        self.template_conflict = false;
        if mode == Mode::Build {
            for b in self.exact.values_mut().chain(self.prefixes.values_mut()) {
                Arc::make_mut(b).sort();
            }
            for e in self.template_buckets.iter_mut().flatten().chain(self.fallback.iter_mut()) {
                Arc::make_mut(e).1.sort();
            }
        }
        if !self.regex_dirty {
            return Ok(());
        }
        self.regex_dirty = false;
        self.regexes.sort_by(|a, b| b.1.priority.cmp(&a.1.priority).then(a.1.route.cmp(&b.1.route)));
        self.regex_set = None;
        if !self.regexes.is_empty() {
            let set = RegexSet::new(self.regexes.iter().map(|(r, _)| r.re.as_str()))
                .map_err(|e| RouterError(format!("regex paths: {e}")))?;
            self.regex_set = Some(set);
        }
        Ok(())
    }

    fn fallback_count(&self) -> usize {
        self.fallback.iter().map(|f| f.1.cands.len()).sum()
    }

    fn find<'t>(&'t self, slots: &[Option<Arc<Slot>>], req: &RequestParts<'_>) -> Option<(usize, PathHit<'t>, usize)> {
        let path = req.path;
        if let Some(c) = self.exact.get(path).and_then(|b| b.first(slots, req)) {
            return Some((c.route, PathHit::Plain, path.len()));
        }
        if let Ok(m) = self.templates.at(path)
            && let Some(Some(entry)) = self.template_buckets.get(*m.value)
            && let Some(c) = entry.1.first(slots, req)
        {
            let values = m.params.iter().map(|(_, v)| v.to_string()).collect();
            return Some((c.route, PathHit::Template(&c.names, values), path.len()));
        }
        for f in &self.fallback {
            if let Some(values) = f.0.match_path(path)
                && let Some(c) = f.1.first(slots, req)
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
                    if slots[c.route].as_ref().is_some_and(|s| s.conds.hold(req)) {
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
                if let Some(c) = self.prefixes.get(&full[..end]).and_then(|b| b.first(slots, req)) {
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

fn remove_from(map: &mut HashMap<Arc<str>, Arc<Bucket>>, key: &str, slot: usize) {
    let empty = match map.get_mut(key) {
        Some(b) => {
            let b = Arc::make_mut(b);
            b.remove(slot);
            b.cands.is_empty()
        }
        None => false,
    };
    if empty {
        map.remove(key);
    }
}

/// One change to a built table (see [`Router::edit`]). Positions are the routes' places in
/// declaration order (the order given to [`Router::new`], then edited).
pub enum Edit<T> {
    /// Replace the route at this position.
    Replace(usize, RouteSpec<T>),
    /// Add a route after the last one.
    Push(RouteSpec<T>),
    /// Remove the route at this position (later routes move up one place).
    Remove(usize),
}

/// The routing table: see the crate documentation for the priority rules.
///
/// Routes live in slots that never move, so an edit touches only the buckets of the routes it
/// changes; slot order is declaration order (edits replace in place, add at the end, and leave
/// a removed route's slot empty until the table is next rebuilt).
pub struct Router<T> {
    /// Per slot: what a match returns (stale for empty slots, never returned).
    values: Vec<T>,
    slots: Vec<Option<Arc<Slot>>>,
    /// Slot of each position.
    order: Vec<usize>,
    exact_hosts: HashMap<String, Arc<Tier>>,
    wildcard_hosts: HashMap<String, Arc<Tier>>,
    any_host: Arc<Tier>,
    fallbacks: usize,
}

const ANY_PATH: &[PathPattern] = &[PathPattern::Prefix(String::new())];

fn paths_of(slot: &Slot) -> &[PathPattern] {
    if slot.paths.is_empty() { ANY_PATH } else { &slot.paths }
}

impl<T> Router<T> {
    /// Build a routing table.
    pub fn new(routes: Vec<RouteSpec<T>>) -> Result<Self, RouterError> {
        let mut r = Router {
            values: Vec::with_capacity(routes.len()),
            slots: Vec::with_capacity(routes.len()),
            order: (0..routes.len()).collect(),
            exact_hosts: HashMap::default(),
            wildcard_hosts: HashMap::default(),
            any_host: Arc::new(Tier::default()),
            fallbacks: 0,
        };
        let mut touched = Touched::default();
        for (i, spec) in routes.into_iter().enumerate() {
            let (slot, value) = Slot::of(spec);
            let slot = Arc::new(slot);
            r.place(i, &slot, Mode::Build, &mut touched);
            r.values.push(value);
            r.slots.push(Some(slot));
        }
        r.finish(touched, Mode::Build)?;
        Ok(r)
    }

    /// Put every candidate of `slot` (numbered `id`) in its tiers.
    fn place(&mut self, id: usize, slot: &Slot, mode: Mode, touched: &mut Touched) {
        let specificity = slot.specificity();
        let no_names: Arc<[Arc<str>]> = Arc::from(Vec::new());
        let cand = Cand { route: id, path_idx: 0, priority: slot.priority, specificity, names: no_names };
        let paths = paths_of(slot);
        let at = |path_idx: usize| Cand { path_idx, ..cand.clone() };
        if slot.hosts.is_empty() {
            let tier = Arc::make_mut(&mut self.any_host);
            for (j, p) in paths.iter().enumerate() {
                tier.add(p, at(j), mode);
            }
            touched.any = true;
        }
        for h in &slot.hosts {
            let (map, key, wild) = match h {
                HostPattern::Exact(n) => (&mut self.exact_hosts, n, false),
                HostPattern::Wildcard(s) => (&mut self.wildcard_hosts, s, true),
            };
            let tier = Arc::make_mut(map.entry(key.clone()).or_default());
            for (j, p) in paths.iter().enumerate() {
                tier.add(p, at(j), mode);
            }
            if mode == Mode::Edit {
                touched.hosts.push((wild, key.clone()));
            }
        }
    }

    /// Take every candidate of `slot` (numbered `id`) out of its tiers.
    fn unplace(&mut self, id: usize, slot: &Slot, touched: &mut Touched) {
        let paths = paths_of(slot);
        if slot.hosts.is_empty() {
            let tier = Arc::make_mut(&mut self.any_host);
            for p in paths {
                tier.remove(p, id);
            }
            touched.any = true;
        }
        for h in &slot.hosts {
            let (map, key, wild) = match h {
                HostPattern::Exact(n) => (&mut self.exact_hosts, n, false),
                HostPattern::Wildcard(s) => (&mut self.wildcard_hosts, s, true),
            };
            if let Some(t) = map.get_mut(key) {
                let tier = Arc::make_mut(t);
                for p in paths {
                    tier.remove(p, id);
                }
            }
            touched.hosts.push((wild, key.clone()));
        }
    }

    /// Finish the tiers that changed (every tier after a build); drop host tiers left empty.
    fn finish(&mut self, mut touched: Touched, mode: Mode) -> Result<(), RouterError> {
        if mode == Mode::Build {
            Arc::make_mut(&mut self.any_host).finish(mode)?;
            for t in self.exact_hosts.values_mut().chain(self.wildcard_hosts.values_mut()) {
                Arc::make_mut(t).finish(mode)?;
            }
        } else {
            if touched.any {
                Arc::make_mut(&mut self.any_host).finish(mode)?;
            }
            touched.hosts.sort();
            touched.hosts.dedup();
            for (wild, key) in touched.hosts {
                let map = if wild { &mut self.wildcard_hosts } else { &mut self.exact_hosts };
                let Some(t) = map.get_mut(&key) else { continue };
                if t.cands == 0 {
                    map.remove(&key);
                } else {
                    Arc::make_mut(t).finish(mode)?;
                }
            }
        }
        self.fallbacks = self
            .exact_hosts
            .values()
            .chain(self.wildcard_hosts.values())
            .chain(std::iter::once(&self.any_host))
            .map(|t| t.fallback_count())
            .sum();
        Ok(())
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Routes whose template could not go in the radix tree and are matched linearly.
    pub fn fallback_count(&self) -> usize {
        self.fallbacks
    }

    /// Rewrite the value of every route (e.g. to renumber them after a removal).
    pub fn map_values(&mut self, f: impl FnMut(&mut T)) {
        self.values.iter_mut().for_each(f);
    }
}

/// Tiers an edit changed, to finish afterwards.
#[derive(Default)]
struct Touched {
    any: bool,
    hosts: Vec<(bool, String)>,
}

impl Slot {
    fn of<T>(spec: RouteSpec<T>) -> (Slot, T) {
        (
            Slot {
                hosts: spec.hosts,
                paths: spec.paths,
                priority: spec.priority,
                conds: Conditions { methods: spec.methods, headers: spec.headers, query: spec.query },
            },
            spec.value,
        )
    }
}

impl<T: Clone> Router<T> {
    /// A copy of this table with one route replaced, added or removed. Only the buckets of the
    /// routes involved are copied; everything else is shared with `self`, so an edit costs
    /// about the same with 10 or 10,000 routes. After many removals the table is rebuilt to
    /// drop the empty slots.
    pub fn edit(&self, edit: Edit<T>) -> Result<Router<T>, RouterError> {
        let mut r = Router {
            values: self.values.clone(),
            slots: self.slots.clone(),
            order: self.order.clone(),
            exact_hosts: self.exact_hosts.clone(),
            wildcard_hosts: self.wildcard_hosts.clone(),
            any_host: self.any_host.clone(),
            fallbacks: self.fallbacks,
        };
        let mut touched = Touched::default();
        let out_of_range = |p: usize| RouterError(format!("no route at position {p}"));
        match edit {
            Edit::Replace(pos, spec) => {
                let id = *r.order.get(pos).ok_or_else(|| out_of_range(pos))?;
                if let Some(old) = r.slots[id].take() {
                    r.unplace(id, &old, &mut touched);
                }
                let (slot, value) = Slot::of(spec);
                let slot = Arc::new(slot);
                r.place(id, &slot, Mode::Edit, &mut touched);
                r.values[id] = value;
                r.slots[id] = Some(slot);
            }
            Edit::Push(spec) => {
                let id = r.slots.len();
                let (slot, value) = Slot::of(spec);
                let slot = Arc::new(slot);
                r.place(id, &slot, Mode::Edit, &mut touched);
                r.values.push(value);
                r.slots.push(Some(slot));
                r.order.push(id);
            }
            Edit::Remove(pos) => {
                if pos >= r.order.len() {
                    return Err(out_of_range(pos));
                }
                let id = r.order.remove(pos);
                if let Some(old) = r.slots[id].take() {
                    r.unplace(id, &old, &mut touched);
                }
            }
        }
        r.finish(touched, Mode::Edit)?;
        if r.slots.len() > 1024 && r.slots.len() > 2 * r.order.len() {
            return r.rebuilt();
        }
        Ok(r)
    }

    /// The same routes in a fresh table (slots renumbered, empty ones dropped).
    fn rebuilt(&self) -> Result<Router<T>, RouterError> {
        let specs = self
            .order
            .iter()
            .filter_map(|&id| {
                let s = self.slots[id].as_ref()?;
                Some(RouteSpec {
                    hosts: s.hosts.clone(),
                    paths: s.paths.clone(),
                    methods: s.conds.methods.clone(),
                    headers: s.conds.headers.clone(),
                    query: s.conds.query.clone(),
                    priority: s.priority,
                    value: self.values[id].clone(),
                })
            })
            .collect();
        Router::new(specs)
    }
}

impl<T> Router<T> {
    /// Find the best route for a request.
    pub fn find<'r>(&'r self, req: &RequestParts<'_>) -> Option<Match<'r, T>> {
        let host = normalize_host(req.host);
        // Without host-specific routes there is nothing to hash the host for.
        if !self.exact_hosts.is_empty()
            && let Some(m) = self.exact_hosts.get(host.as_ref()).and_then(|t| self.find_in(t, req))
        {
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
        let (route, hit, matched_len) = tier.find(&self.slots, req)?;
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
        // A byte search: `rsplit_once(':')` costs several times more on short hosts.
        match h.bytes().rposition(|b| b == b':') {
            Some(i) if !h[..i].contains(':') && h[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &h[..i],
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

#[cfg(test)]
mod host_tests {
    use super::normalize_host;

    /// Ports, brackets, case and a trailing dot are taken off; anything else is left alone.
    #[test]
    fn hosts_are_normalized() {
        for (raw, want) in [
            ("example.com", "example.com"),
            ("Example.COM:8443", "example.com"),
            ("example.com.", "example.com"),
            ("example.com.:80", "example.com"),
            ("[::1]:80", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("host:port", "host:port"),
            ("127.0.0.1:18181", "127.0.0.1"),
            (":80", ""),
        ] {
            assert_eq!(normalize_host(raw), want, "{raw}");
        }
    }
}
