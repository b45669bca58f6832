//! The configuration document as the Admin API edits it: the file format as JSON, with entity
//! collections keyed by name. Secrets are hashed on the way in where the protocol allows and
//! never returned by entity endpoints.

use serde_json::Value;

/// An entity collection of the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `listeners`
    Listeners,
    /// `certificates`
    Certificates,
    /// `upstreams`
    Upstreams,
    /// `services`
    Services,
    /// `routes`
    Routes,
    /// `plugins`
    Plugins,
    /// `consumers`
    Consumers,
}

impl Kind {
    /// Every kind, in document order.
    pub const ALL: [Kind; 7] = [
        Kind::Listeners,
        Kind::Certificates,
        Kind::Upstreams,
        Kind::Services,
        Kind::Routes,
        Kind::Plugins,
        Kind::Consumers,
    ];

    /// The collection's key in the document and its URL segment.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Listeners => "listeners",
            Kind::Certificates => "certificates",
            Kind::Upstreams => "upstreams",
            Kind::Services => "services",
            Kind::Routes => "routes",
            Kind::Plugins => "plugins",
            Kind::Consumers => "consumers",
        }
    }

    /// From a URL segment.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.key() == s)
    }

    /// The field naming an entity.
    pub fn id_field(self) -> &'static str {
        match self {
            Kind::Consumers => "username",
            _ => "name",
        }
    }
}

/// The id of an entity: its name field; for plugins without a name, the instance name the
/// loader derives (`<plugin>@route:<r>@service:<s>@consumer:<c>`).
pub fn entity_id(kind: Kind, e: &Value) -> Option<String> {
    if let Some(s) = e.get(kind.id_field()).and_then(Value::as_str) {
        return Some(s.to_string());
    }
    if kind == Kind::Plugins {
        let mut s = e.get("plugin")?.as_str()?.to_string();
        for k in ["route", "service", "consumer"] {
            if let Some(v) = e.get(k).and_then(Value::as_str) {
                s.push('@');
                s.push_str(k);
                s.push(':');
                s.push_str(v);
            }
        }
        return Some(s);
    }
    None
}

/// The collection `kind` of `doc` (created empty when missing); `None` if the document is
/// not an object or the collection not an array (the loader would refuse it anyway).
pub fn collection(doc: &mut Value, kind: Kind) -> Option<&mut Vec<Value>> {
    doc.as_object_mut()?.entry(kind.key()).or_insert_with(|| Value::Array(Vec::new())).as_array_mut()
}

/// The entities of `kind` in `doc` (none when the collection is absent).
pub fn entities(doc: &Value, kind: Kind) -> impl Iterator<Item = &Value> {
    doc.get(kind.key()).and_then(Value::as_array).into_iter().flatten()
}

/// How a new document differs from the running one when the only difference is one route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RouteDiff<'a> {
    /// The route at this position of the new document was replaced in place or appended.
    Upsert(usize, &'a Value),
    /// The route of this name was removed.
    Remove(&'a str),
}

/// `Some` when `next` is `cur` with one route replaced in place, appended, or removed, and
/// nothing else changed: such a change can be applied to the data plane without compiling the
/// rest of the configuration. Anything else (or a removed route that a plugin entry names)
/// gives `None`: validate and compile the whole document. Comparing is linear in the document
/// but allocates nothing.
pub fn single_route_change<'a>(cur: &'a Value, next: &'a Value) -> Option<RouteDiff<'a>> {
    let (c, n) = (cur.as_object()?, next.as_object()?);
    let others_equal = c.iter().all(|(k, v)| k == "routes" || n.get(k) == Some(v))
        && n.iter().all(|(k, v)| k == "routes" || c.get(k) == Some(v));
    if !others_equal {
        return None;
    }
    static NONE: Vec<Value> = Vec::new();
    let a = c.get("routes").map_or(Some(&NONE), Value::as_array)?;
    let b = n.get("routes")?.as_array()?;
    let first_diff = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let name = |e: &'a Value| e.get("name").and_then(Value::as_str);
    if b.len() == a.len() {
        let (x, y) = (a.get(first_diff)?, b.get(first_diff)?);
        (a[first_diff + 1..] == b[first_diff + 1..] && name(x).is_some() && name(x) == name(y))
            .then_some(RouteDiff::Upsert(first_diff, y))
    } else if b.len() == a.len() + 1 {
        let added = b.last()?;
        let new_name = name(added)?;
        (first_diff == a.len() && !a.iter().any(|x| name(x) == Some(new_name)))
            .then_some(RouteDiff::Upsert(first_diff, added))
    } else if b.len() + 1 == a.len() {
        let removed = name(a.get(first_diff)?)?;
        let named_by_plugin =
            entities(next, Kind::Plugins).any(|p| p.get("route").and_then(Value::as_str) == Some(removed));
        (a[first_diff + 1..] == b[first_diff..] && !named_by_plugin).then_some(RouteDiff::Remove(removed))
    } else {
        None
    }
}

/// Hash secrets that have a one-way form: key-auth `key` -> `key_hash`, basic-auth `password`
/// -> `password_hash` (argon2id). Returns an error message for a secret that cannot be hashed.
pub fn hash_secrets(doc: &mut Value) -> Result<(), String> {
    let Some(consumers) = doc.get_mut("consumers").and_then(Value::as_array_mut) else { return Ok(()) };
    for c in consumers {
        let Some(creds) = c.get_mut("credentials").and_then(Value::as_array_mut) else { continue };
        for cr in creds {
            let Some(o) = cr.as_object_mut() else { continue };
            match o.get("type").and_then(Value::as_str) {
                Some("key-auth") => {
                    if let Some(Value::String(k)) = o.get("key").cloned()
                        && k.len() >= 8
                        && !o.contains_key("key_hash")
                    {
                        let h = gw_config::hash_api_key(&k);
                        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
                        o.remove("key");
                        o.insert("key_hash".into(), Value::String(format!("sha256:{hex}")));
                    }
                }
                Some("basic-auth") => {
                    if let Some(Value::String(p)) = o.get("password").cloned()
                        && !o.contains_key("password_hash")
                    {
                        let h = gw_config::hash_password(&p)?;
                        o.remove("password");
                        o.insert("password_hash".into(), Value::String(h));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// An entity as the API returns it: secrets removed (`secret` of jwt and hmac-auth credentials,
/// private keys of certificates; hashes stay, they are not secrets).
pub fn redact(kind: Kind, mut e: Value) -> Value {
    match kind {
        Kind::Consumers => {
            if let Some(creds) = e.get_mut("credentials").and_then(Value::as_array_mut) {
                for cr in creds {
                    if let Some(o) = cr.as_object_mut() {
                        for k in ["secret", "key", "password"] {
                            o.remove(k);
                        }
                    }
                }
            }
        }
        Kind::Certificates => {
            if let Some(o) = e.as_object_mut() {
                o.remove("key");
            }
        }
        _ => {}
    }
    e
}

/// Whether `e` carries every tag in `tags`.
pub fn has_tags(e: &Value, tags: &[&str]) -> bool {
    let have: Vec<&str> =
        e.get("tags").and_then(Value::as_array).map_or(Vec::new(), |a| a.iter().filter_map(Value::as_str).collect());
    tags.iter().all(|t| have.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_and_secrets() {
        let p = json!({"plugin": "acl", "route": "r"});
        assert_eq!(entity_id(Kind::Plugins, &p).as_deref(), Some("acl@route:r"));
        let mut doc = json!({"consumers": [{"username": "a", "credentials": [
            {"type": "key-auth", "key": "0123456789"},
            {"type": "hmac-auth", "username": "h", "secret": "s3cret"}
        ]}]});
        hash_secrets(&mut doc).unwrap_or_else(|e| panic!("{e}"));
        let c = &doc["consumers"][0];
        assert!(c["credentials"][0].get("key").is_none());
        assert!(c["credentials"][0]["key_hash"].as_str().unwrap_or("").starts_with("sha256:"));
        let out = redact(Kind::Consumers, c.clone());
        assert!(out["credentials"][1].get("secret").is_none());
        assert_eq!(out["credentials"][1]["username"], "h");
    }
}
