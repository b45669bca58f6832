//! Shaping one call's JSON response and merging the results.
//!
//! Per call, in this order: `target` (extract a nested value), `flatten` (an array of arrays
//! becomes one array), `wrap` (an array becomes `{"<wrap>": [...]}`), `deny`, `allow`,
//! `mapping` (renames: every source path is taken out first, then each value is put at its new
//! path), `group` (the result goes under one key).
//!
//! Merge rule: the results are merged into one object in declaration order of the calls
//! (never in arrival order, so the answer does not depend on timing). Objects are merged
//! recursively; on any other conflict (two scalars, an array and an object, ...) the call
//! declared **later** wins.

use serde_json::{Map, Value};

use crate::plan::Shape;

/// Why a response cannot be merged (always a 502: the backend broke the aggregate's contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Shape one response into the object it contributes to the merged response.
pub fn shape(s: &Shape, mut v: Value) -> Result<Map<String, Value>, ShapeError> {
    if let Some(t) = &s.target {
        v = t.get(&v).cloned().ok_or_else(|| ShapeError(format!("the response has no `{t}` (target)")))?;
    }
    if s.flatten
        && let Value::Array(a) = v
    {
        let mut out = Vec::with_capacity(a.len());
        for e in a {
            match e {
                Value::Array(inner) => out.extend(inner),
                other => out.push(other),
            }
        }
        v = Value::Array(out);
    }
    if let (Some(w), Value::Array(_)) = (&s.wrap, &v) {
        let mut m = Map::new();
        m.insert(w.clone(), v);
        v = Value::Object(m);
    }
    if let Some(d) = &s.deny {
        v = d.remove(v).unwrap_or(Value::Null);
    }
    if let Some(a) = &s.allow {
        let empty = match &v {
            Value::Array(_) => Value::Array(Vec::new()),
            _ => Value::Object(Map::new()),
        };
        v = a.keep(v).unwrap_or(empty);
    }
    if !s.mapping.is_empty() {
        let taken: Vec<(usize, Value)> =
            s.mapping.iter().enumerate().filter_map(|(i, (from, _))| from.take(&mut v).map(|x| (i, x))).collect();
        for (i, x) in taken {
            let to = &s.mapping[i].1;
            if !to.insert(&mut v, x) {
                return Err(ShapeError(format!("cannot rename to `{to}` in this response")));
            }
        }
    }
    if let Some(g) = &s.group {
        let mut m = Map::new();
        m.insert(g.clone(), v);
        return Ok(m);
    }
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ShapeError(format!(
            "the response is {}, which cannot be merged at the root (set `wrap` or `group`)",
            kind(&other)
        ))),
    }
}

/// Merge `from` into `into`: objects recursively, otherwise `from` wins.
pub fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dotted::{DottedPath, PathSet};
    use serde_json::json;

    fn p(s: &str) -> DottedPath {
        DottedPath::parse(s, true).unwrap_or_else(|e| panic!("{e}"))
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn plain_object_passes_through() {
        let v = json!({"a": 1});
        assert_eq!(shape(&Shape::default(), v.clone()), Ok(obj(v)));
    }

    #[test]
    fn target_allow_deny_mapping_group_in_order() {
        let v = json!({"data": {"user": {"id": 1, "name": "Ann", "pw": "x", "addr": {"city": "Oslo", "zip": "1"}}}});
        let s = Shape {
            target: Some(p("data.user")),
            deny: Some(PathSet::new(&[p("pw")])),
            allow: Some(PathSet::new(&[p("id"), p("name"), p("addr.city"), p("pw")])),
            mapping: vec![(p("name"), p("full_name")), (p("addr.city"), p("city")), (p("id"), p("name"))],
            group: Some("user".into()),
            ..Shape::default()
        };
        assert_eq!(shape(&s, v), Ok(obj(json!({"user": {"full_name": "Ann", "name": 1, "city": "Oslo", "addr": {}}}))));
    }

    #[test]
    fn missing_target_and_non_objects_at_root_are_refused() {
        let s = Shape { target: Some(p("data")), ..Shape::default() };
        assert_eq!(shape(&s, json!({"x": 1})).unwrap_err().0, "the response has no `data` (target)");
        let e = shape(&Shape::default(), json!([1, 2])).unwrap_err();
        assert!(e.0.contains("is an array, which cannot be merged at the root (set `wrap` or `group`)"), "{e:?}");
        assert!(shape(&Shape::default(), json!("s")).is_err());
    }

    #[test]
    fn arrays_wrap_flatten_and_filter() {
        let v = json!([[{"id": 1, "x": 0}], [{"id": 2, "x": 0}, {"id": 3, "x": 0}], {"id": 4}]);
        let s = Shape {
            flatten: true,
            wrap: Some("items".into()),
            deny: Some(PathSet::new(&[p("items.x")])),
            ..Shape::default()
        };
        assert_eq!(shape(&s, v), Ok(obj(json!({"items": [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]}))));
        // An array grouped is kept as an array.
        let s = Shape { group: Some("list".into()), allow: Some(PathSet::new(&[p("id")])), ..Shape::default() };
        assert_eq!(shape(&s, json!([{"id": 1, "y": 2}])), Ok(obj(json!({"list": [{"id": 1}]}))));
        // `wrap` leaves objects alone.
        let s = Shape { wrap: Some("items".into()), ..Shape::default() };
        assert_eq!(shape(&s, json!({"a": 1})), Ok(obj(json!({"a": 1}))));
    }

    #[test]
    fn merge_is_deep_and_later_wins_on_conflicts() {
        let mut out = obj(json!({"user": {"id": 1, "name": "a"}, "n": 1, "list": [1]}));
        merge(&mut out, obj(json!({"user": {"name": "b", "age": 3}, "n": {"x": 1}, "list": [2]})));
        assert_eq!(Value::Object(out), json!({"user": {"id": 1, "name": "b", "age": 3}, "n": {"x": 1}, "list": [2]}));
    }
}
