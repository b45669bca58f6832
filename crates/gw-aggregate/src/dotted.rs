//! Dotted paths into JSON values: `user.address.city`, `items.0.id` (or `items[0].id`), and in
//! filters `items.*.id` (every element).
//!
//! Keys containing `.`, `[` or `]` cannot be addressed. A segment made of digits addresses an
//! array element when the value there is an array, and an object key otherwise.

use serde_json::{Map, Value};

/// One segment of a dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// An object key (or, when it is all digits, an array index too).
    Key(String),
    /// `*`: every element of an array, every value of an object (filters only).
    Any,
}

impl Seg {
    fn index(&self) -> Option<usize> {
        match self {
            Seg::Key(k) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => k.parse().ok(),
            _ => None,
        }
    }
}

/// A parsed dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DottedPath {
    segs: Vec<Seg>,
}

impl DottedPath {
    /// Parse `a.b.0.c`, `a.b[0].c`; `*` segments only when `wildcards`.
    pub fn parse(text: &str, wildcards: bool) -> Result<DottedPath, String> {
        if text.is_empty() {
            return Err("empty path".into());
        }
        let normalised = text.replace('[', ".[");
        let mut segs = Vec::new();
        for part in normalised.split('.') {
            let part = if let Some(inner) = part.strip_prefix('[') {
                let Some(idx) = inner.strip_suffix(']') else {
                    return Err(format!("path {text:?}: unclosed '['"));
                };
                if idx.is_empty() || !(idx.bytes().all(|b| b.is_ascii_digit()) || idx == "*") {
                    return Err(format!("path {text:?}: [{idx}] is not an array index"));
                }
                idx
            } else {
                part
            };
            if part.is_empty() {
                return Err(format!("path {text:?}: empty segment"));
            }
            if part.contains(']') || part.contains('[') {
                return Err(format!("path {text:?}: misplaced bracket"));
            }
            if part == "*" {
                if !wildcards {
                    return Err(format!("path {text:?}: `*` is only allowed in allow and deny lists"));
                }
                segs.push(Seg::Any);
            } else {
                segs.push(Seg::Key(part.to_string()));
            }
        }
        Ok(DottedPath { segs })
    }

    /// The segments.
    pub fn segs(&self) -> &[Seg] {
        &self.segs
    }

    /// The value at this path (no wildcards).
    pub fn get<'a>(&self, mut v: &'a Value) -> Option<&'a Value> {
        for s in &self.segs {
            v = match (v, s) {
                (Value::Array(a), s) => a.get(s.index()?)?,
                (Value::Object(o), Seg::Key(k)) => o.get(k)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// Remove and return the value at this path (no wildcards).
    pub fn take(&self, v: &mut Value) -> Option<Value> {
        let (last, parents) = self.segs.split_last()?;
        let mut cur = v;
        for s in parents {
            cur = match (cur, s) {
                (Value::Array(a), s) => a.get_mut(s.index()?)?,
                (Value::Object(o), Seg::Key(k)) => o.get_mut(k)?,
                _ => return None,
            };
        }
        match (cur, last) {
            (Value::Object(o), Seg::Key(k)) => o.remove(k),
            (Value::Array(a), s) => {
                let i = s.index()?;
                (i < a.len()).then(|| a.remove(i))
            }
            _ => None,
        }
    }

    /// Put `new` at this path, creating objects on the way and replacing whatever is not an
    /// object there. Array indexes on the way address existing elements only; `false` when the
    /// path cannot be created.
    pub fn insert(&self, v: &mut Value, new: Value) -> bool {
        let Some((last, parents)) = self.segs.split_last() else {
            *v = new;
            return true;
        };
        let mut cur = v;
        for s in parents {
            if let (Value::Array(_), Some(i)) = (&*cur, s.index()) {
                let Value::Array(a) = cur else { return false };
                let Some(e) = a.get_mut(i) else { return false };
                cur = e;
                continue;
            }
            let Seg::Key(k) = s else { return false };
            if !cur.is_object() {
                *cur = Value::Object(Map::new());
            }
            let Value::Object(o) = cur else { return false };
            cur = o.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
        }
        match (cur, last) {
            (Value::Array(a), s) if s.index().is_some_and(|i| i < a.len()) => {
                if let Some(i) = s.index() {
                    a[i] = new;
                }
                true
            }
            (cur, Seg::Key(k)) => {
                if !cur.is_object() {
                    *cur = Value::Object(Map::new());
                }
                if let Value::Object(o) = cur {
                    o.insert(k.clone(), new);
                }
                true
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for DottedPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.segs.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match s {
                Seg::Key(k) => f.write_str(k)?,
                Seg::Any => f.write_str("*")?,
            }
        }
        Ok(())
    }
}

/// A set of dotted paths as a tree, for `allow` and `deny`.
///
/// Arrays are transparent: a path segment that is not an index (`items.id`) applies to every
/// element of an array met on the way, like `items.*.id`; an index segment (`items.0`) addresses
/// one element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathSet {
    /// This node is the end of a listed path: the whole value here is selected.
    terminal: bool,
    children: Vec<(Seg, PathSet)>,
}

impl PathSet {
    /// A set of the given paths.
    pub fn new(paths: &[DottedPath]) -> PathSet {
        let mut root = PathSet::default();
        for p in paths {
            let mut node = &mut root;
            for s in p.segs() {
                let pos = match node.children.iter().position(|(k, _)| k == s) {
                    Some(i) => i,
                    None => {
                        node.children.push((s.clone(), PathSet::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[pos].1;
            }
            node.terminal = true;
        }
        root
    }

    fn child_for_key(&self, key: &str) -> impl Iterator<Item = &PathSet> {
        self.children
            .iter()
            .filter(move |(s, _)| matches!(s, Seg::Any) || matches!(s, Seg::Key(k) if k == key))
            .map(|(_, n)| n)
    }

    /// Keep only what the set selects. Returns `None` when nothing of `v` is selected.
    pub fn keep(&self, v: Value) -> Option<Value> {
        if self.terminal {
            return Some(v);
        }
        match v {
            Value::Object(o) => {
                let mut out = Map::new();
                for (k, val) in o {
                    let mut kept: Option<Value> = None;
                    for child in self.child_for_key(&k) {
                        // Several branches (a key and `*`) may select parts of one value.
                        let part = child.keep(val.clone());
                        kept = match (kept, part) {
                            (Some(a), Some(b)) => Some(union(a, b)),
                            (a, b) => a.or(b),
                        };
                    }
                    if let Some(kv) = kept {
                        out.insert(k, kv);
                    }
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            Value::Array(a) => {
                let indexed = self.children.iter().any(|(s, _)| s.index().is_some());
                let mut out = Vec::new();
                for (i, e) in a.into_iter().enumerate() {
                    let mut kept: Option<Value> = None;
                    for (s, child) in &self.children {
                        let part = match s {
                            Seg::Any => child.keep(e.clone()),
                            s if s.index() == Some(i) => child.keep(e.clone()),
                            s if s.index().is_some() => None,
                            // Transparent: the key applies inside each element.
                            Seg::Key(_) => {
                                let one = PathSet { terminal: false, children: vec![(s.clone(), child.clone())] };
                                one.keep(e.clone())
                            }
                        };
                        kept = match (kept, part) {
                            (Some(a), Some(b)) => Some(union(a, b)),
                            (a, b) => a.or(b),
                        };
                    }
                    match kept {
                        Some(k) => out.push(k),
                        None if indexed => {}
                        None => {}
                    }
                }
                (!out.is_empty()).then_some(Value::Array(out))
            }
            _ => None,
        }
    }

    /// Remove what the set selects. Returns `None` when the whole value is removed.
    pub fn remove(&self, v: Value) -> Option<Value> {
        if self.terminal {
            return None;
        }
        match v {
            Value::Object(o) => {
                let mut out = Map::new();
                'keys: for (k, val) in o {
                    let mut val = val;
                    for child in self.child_for_key(&k) {
                        match child.remove(val) {
                            Some(rest) => val = rest,
                            None => continue 'keys,
                        }
                    }
                    out.insert(k, val);
                }
                Some(Value::Object(out))
            }
            Value::Array(a) => {
                let mut out = Vec::new();
                'elems: for (i, e) in a.into_iter().enumerate() {
                    let mut e = e;
                    for (s, child) in &self.children {
                        let r = match s {
                            Seg::Any => child.remove(e),
                            s if s.index() == Some(i) => child.remove(e),
                            s if s.index().is_some() => Some(e),
                            Seg::Key(_) => {
                                let one = PathSet { terminal: false, children: vec![(s.clone(), child.clone())] };
                                one.remove(e)
                            }
                        };
                        match r {
                            Some(rest) => e = rest,
                            None => continue 'elems,
                        }
                    }
                    out.push(e);
                }
                Some(Value::Array(out))
            }
            other => Some(other),
        }
    }
}

/// Union of two selections of the same value (objects merged key by key).
fn union(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Object(mut x), Value::Object(y)) => {
            for (k, v) in y {
                let merged = match x.remove(&k) {
                    Some(old) => union(old, v),
                    None => v,
                };
                x.insert(k, merged);
            }
            Value::Object(x)
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            Value::Array(x.into_iter().zip(y).map(|(a, b)| union(a, b)).collect())
        }
        (_, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> DottedPath {
        DottedPath::parse(s, true).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parse_accepts_dots_and_brackets_and_refuses_junk() {
        assert_eq!(p("a.b[0].c"), p("a.b.0.c"));
        assert_eq!(p("items[*].id"), p("items.*.id"));
        assert!(DottedPath::parse("", false).is_err());
        assert!(DottedPath::parse("a..b", false).is_err());
        assert!(DottedPath::parse("a.", false).is_err());
        assert!(DottedPath::parse("a[x]", false).is_err());
        assert!(DottedPath::parse("a[0", false).is_err());
        assert!(DottedPath::parse("a.*", false).unwrap_err().contains("only allowed"));
        assert_eq!(p("a.b[2].c").to_string(), "a.b.2.c");
    }

    #[test]
    fn get_take_insert() {
        let mut v = json!({"a": {"b": [{"c": 1}, {"c": 2}]}, "0": "zero"});
        assert_eq!(p("a.b.1.c").get(&v), Some(&json!(2)));
        assert_eq!(p("0").get(&v), Some(&json!("zero")));
        assert_eq!(p("a.b.5").get(&v), None);
        assert_eq!(p("a.x.y").get(&v), None);
        assert_eq!(p("a.b.0.c").take(&mut v), Some(json!(1)));
        assert_eq!(v, json!({"a": {"b": [{}, {"c": 2}]}, "0": "zero"}));
        assert!(p("x.y.z").insert(&mut v, json!(true)));
        assert_eq!(p("x.y.z").get(&v), Some(&json!(true)));
        // An existing scalar on the way is replaced by an object.
        assert!(p("0.k").insert(&mut v, json!(3)));
        assert_eq!(v["0"], json!({"k": 3}));
        assert!(p("a.b.1.d").insert(&mut v, json!("D")));
        assert_eq!(v["a"]["b"][1], json!({"c": 2, "d": "D"}));
        assert!(!p("a.b.7.d").insert(&mut v, json!(0)));
    }

    #[test]
    fn keep_selects_nested_paths_and_array_elements() {
        let v = json!({
            "id": 7, "name": "Ann", "secret": "s",
            "address": {"city": "Oslo", "zip": "0150", "geo": {"lat": 1, "lon": 2}},
            "items": [{"id": 1, "price": 3, "x": 0}, {"id": 2, "price": 4, "x": 0}]
        });
        let set = PathSet::new(&[p("id"), p("address.city"), p("address.geo"), p("items.id"), p("items.*.price")]);
        assert_eq!(
            set.keep(v.clone()),
            Some(json!({
                "id": 7,
                "address": {"city": "Oslo", "geo": {"lat": 1, "lon": 2}},
                "items": [{"id": 1, "price": 3}, {"id": 2, "price": 4}]
            }))
        );
        let first = PathSet::new(&[p("items.0.id")]);
        assert_eq!(first.keep(v.clone()), Some(json!({"items": [{"id": 1}]})));
        assert_eq!(PathSet::new(&[p("nothing")]).keep(v), None);
    }

    #[test]
    fn remove_drops_nested_paths_and_array_elements() {
        let v = json!({
            "id": 7, "secret": "s",
            "address": {"city": "Oslo", "zip": "0150"},
            "items": [{"id": 1, "x": 0}, {"id": 2, "x": 0}]
        });
        let set = PathSet::new(&[p("secret"), p("address.zip"), p("items.x"), p("missing.deep")]);
        assert_eq!(
            set.remove(v.clone()),
            Some(json!({"id": 7, "address": {"city": "Oslo"}, "items": [{"id": 1}, {"id": 2}]}))
        );
        assert_eq!(
            PathSet::new(&[p("items.1")]).remove(v.clone()).map(|v| v["items"].clone()),
            Some(json!([{"id": 1, "x": 0}]))
        );
        assert_eq!(PathSet::new(&[p("items.*")]).remove(v).map(|v| v["items"].clone()), Some(json!([])));
    }
}
