//! The configuration document as the Admin API edits it: the file format as JSON, with entity
//! collections keyed by name. Secrets are hashed on the way in where the protocol allows and
//! never returned by entity endpoints.

use std::sync::Arc;

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

/// The configuration document as the Admin API holds it: the file format as JSON, with each
/// entity collection a shared list of shared entities. A copy costs a few pointer copies and an
/// edit copies one collection's list of pointers, so a write to a document with 10,000 routes
/// does not copy 10,000 routes (nor free them afterwards).
#[derive(Clone, Default, Debug, PartialEq)]
pub struct Doc {
    /// Every top-level key except the entity collections.
    top: serde_json::Map<String, Value>,
    /// The collections, by [`Kind`] (`Kind::ALL` order); `None` when the key is absent.
    colls: [Option<Arc<Vec<Arc<Entity>>>>; 7],
}

/// One entity of a collection, with its compact JSON text kept beside it so that printing a
/// document copies text instead of serializing every entity again.
#[derive(Clone, Debug, PartialEq)]
pub struct Entity {
    value: Value,
    json: Box<str>,
}

impl Entity {
    /// An entity (prints it once).
    pub fn new(value: Value) -> Arc<Entity> {
        let json = serde_json::to_string(&value).unwrap_or_default().into_boxed_str();
        Arc::new(Entity { value, json })
    }

    /// Change the entity (copied first if another document shares it); its text is refreshed.
    pub fn edit<T>(this: &mut Arc<Entity>, f: impl FnOnce(&mut Value) -> T) -> T {
        let e = Arc::make_mut(this);
        let out = f(&mut e.value);
        e.json = serde_json::to_string(&e.value).unwrap_or_default().into_boxed_str();
        out
    }
}

impl std::ops::Deref for Entity {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.value
    }
}

impl Doc {
    /// Split a document. A collection that is not an array stays as it is (the loader refuses it).
    pub fn from_value(v: Value) -> Doc {
        let mut d = Doc::default();
        let Value::Object(map) = v else { return d };
        for (k, v) in map {
            match (Kind::parse(&k), v) {
                (Some(kind), Value::Array(items)) => {
                    d.colls[kind as usize] = Some(Arc::new(items.into_iter().map(Entity::new).collect()));
                }
                (_, v) => {
                    d.top.insert(k, v);
                }
            }
        }
        d
    }

    /// The whole document as one JSON value (a deep copy).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The document as compact JSON text: exactly `serde_json::to_string(self)`, but entities
    /// are copied from their kept text instead of serialized again.
    pub fn to_json(&self) -> String {
        let keys = self.parts();
        let size: usize = keys
            .iter()
            .map(|(_, p)| match p {
                Part::List(l) => l.iter().map(|e| e.json.len() + 1).sum(),
                Part::Value(_) => 0,
            })
            .sum();
        let mut out = String::with_capacity(size + 4096);
        out.push('{');
        for (i, (k, part)) in keys.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            match part {
                Part::Value(v) => out.push_str(&serde_json::to_string(v).unwrap_or_default()),
                Part::List(list) => {
                    out.push('[');
                    for (j, e) in list.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        out.push_str(&e.json);
                    }
                    out.push(']');
                }
            }
        }
        out.push('}');
        out
    }

    /// A top-level value other than a collection (`gateway`, ...).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.top.get(key)
    }

    /// The entities of `kind` (none when the collection is absent).
    pub fn entities(&self, kind: Kind) -> impl DoubleEndedIterator<Item = &Value> {
        self.colls[kind as usize].iter().flat_map(|c| c.iter()).map(|e| &e.value)
    }

    /// The collection `kind`, created empty when missing, for editing (copies the list of
    /// pointers if another document shares it); `None` if the document has that key but not
    /// as an array (the loader would refuse it anyway).
    pub fn collection_mut(&mut self, kind: Kind) -> Option<&mut Vec<Arc<Entity>>> {
        if self.top.contains_key(kind.key()) {
            return None;
        }
        Some(Arc::make_mut(self.colls[kind as usize].get_or_insert_with(Default::default)))
    }

    /// Whether the collection `kind` holds the same entities in both documents.
    fn same_collection(&self, other: &Doc, kind: Kind) -> bool {
        match (&self.colls[kind as usize], &other.colls[kind as usize]) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                Arc::ptr_eq(a, b) || (a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| same_entity(x, y)))
            }
            _ => false,
        }
    }
}

/// Equal entities; the same allocation is equal without looking.
fn same_entity(a: &Arc<Entity>, b: &Arc<Entity>) -> bool {
    Arc::ptr_eq(a, b) || a.json == b.json
}

/// A top-level entry of a document: a plain value or an entity collection.
enum Part<'a> {
    Value(&'a Value),
    List(&'a [Arc<Entity>]),
}

impl Doc {
    /// Top-level entries in key order (the order of a JSON object map).
    fn parts(&self) -> Vec<(&str, Part<'_>)> {
        let mut keys: Vec<(&str, Part<'_>)> = self.top.iter().map(|(k, v)| (k.as_str(), Part::Value(v))).collect();
        for kind in Kind::ALL {
            if let Some(c) = &self.colls[kind as usize] {
                keys.push((kind.key(), Part::List(&c[..])));
            }
        }
        keys.sort_by(|a, b| a.0.cmp(b.0));
        keys
    }
}

/// Serializes like the [`Value`] it stands for (keys in order, compact).
impl serde::Serialize for Doc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct List<'a>(&'a [Arc<Entity>]);
        impl serde::Serialize for List<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for e in self.0 {
                    seq.serialize_element(&e.value)?;
                }
                seq.end()
            }
        }
        let keys = self.parts();
        let mut m = s.serialize_map(Some(keys.len()))?;
        for (k, part) in &keys {
            match part {
                Part::Value(v) => m.serialize_entry(k, v)?,
                Part::List(l) => m.serialize_entry(k, &List(l))?,
            }
        }
        m.end()
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

/// Whether `e` is the entity `id` of `kind` (compares without allocating when the entity has
/// its name field, as all but unnamed plugins do).
pub fn is_entity(kind: Kind, e: &Value, id: &str) -> bool {
    match e.get(kind.id_field()).and_then(Value::as_str) {
        Some(s) => s == id,
        None => entity_id(kind, e).as_deref() == Some(id),
    }
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
pub fn single_route_change<'a>(cur: &'a Doc, next: &'a Doc) -> Option<RouteDiff<'a>> {
    if cur.top != next.top || !Kind::ALL.iter().all(|&k| k == Kind::Routes || cur.same_collection(next, k)) {
        return None;
    }
    static NONE: Vec<Arc<Entity>> = Vec::new();
    let a: &[Arc<Entity>] = cur.colls[Kind::Routes as usize].as_deref().unwrap_or(&NONE);
    let b: &[Arc<Entity>] = next.colls[Kind::Routes as usize].as_deref()?;
    let first_diff = a.iter().zip(b).position(|(x, y)| !same_entity(x, y)).unwrap_or(a.len().min(b.len()));
    let same_tail =
        |x: &[Arc<Entity>], y: &[Arc<Entity>]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_entity(p, q));
    let name = |e: &'a Value| e.get("name").and_then(Value::as_str);
    if b.len() == a.len() {
        let (x, y) = (a.get(first_diff)?, b.get(first_diff)?);
        (same_tail(&a[first_diff + 1..], &b[first_diff + 1..]) && name(x).is_some() && name(x) == name(y))
            .then_some(RouteDiff::Upsert(first_diff, y))
    } else if b.len() == a.len() + 1 {
        let added: &'a Value = b.last()?;
        let new_name = name(added)?;
        (first_diff == a.len() && !a.iter().any(|x| name(x) == Some(new_name)))
            .then_some(RouteDiff::Upsert(first_diff, added))
    } else if b.len() + 1 == a.len() {
        let removed = name(a.get(first_diff)?)?;
        let named_by_plugin =
            next.entities(Kind::Plugins).any(|p| p.get("route").and_then(Value::as_str) == Some(removed));
        (same_tail(&a[first_diff + 1..], &b[first_diff..]) && !named_by_plugin).then_some(RouteDiff::Remove(removed))
    } else {
        None
    }
}

/// Hash secrets that have a one-way form: key-auth `key` -> `key_hash`, basic-auth `password`
/// -> `password_hash` (argon2id). Returns an error message for a secret that cannot be hashed.
pub fn hash_secrets(doc: &mut Doc) -> Result<(), String> {
    let plain = |c: &Value| {
        c.get("credentials").and_then(Value::as_array).is_some_and(|creds| {
            creds.iter().any(|cr| {
                (cr.get("key").is_some() && cr.get("key_hash").is_none())
                    || (cr.get("password").is_some() && cr.get("password_hash").is_none())
            })
        })
    };
    // Only consumers that carry a plain secret are copied and rewritten.
    if !doc.entities(Kind::Consumers).any(plain) {
        return Ok(());
    }
    let Some(consumers) = doc.collection_mut(Kind::Consumers) else { return Ok(()) };
    for c in consumers.iter_mut().filter(|c| plain(c)) {
        Entity::edit(c, hash_consumer_secrets)?;
    }
    Ok(())
}

fn hash_consumer_secrets(c: &mut Value) -> Result<(), String> {
    {
        let Some(creds) = c.get_mut("credentials").and_then(Value::as_array_mut) else { return Ok(()) };
        for cr in creds {
            let Some(o) = cr.as_object_mut() else { continue };
            match o.get("type").and_then(Value::as_str) {
                // A value is hashed as the loader reads it (`$${` is a literal `${`); one with a
                // `${VAR}` reference stays as it is, for validation to refuse with its key.
                Some("key-auth") => {
                    if let Some(Value::String(k)) = o.get("key").cloned()
                        && let Ok(k) = gw_config::unescape(&k)
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
                        && let Ok(p) = gw_config::unescape(&p)
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

/// The secret fields of a credential of type `ty`, which the entity endpoints never return: the
/// clear-text key of key-auth and password of basic-auth (normally already replaced by their
/// hashes), the `secret` of jwt and hmac-auth. The jwt `key` is not one of them: it is the
/// issuer id that selects the credential.
fn credential_secrets(ty: Option<&str>) -> &'static [&'static str] {
    match ty {
        Some("key-auth") => &["key"],
        Some("basic-auth") => &["password"],
        Some("jwt") | Some("hmac-auth") => &["secret"],
        Some("mtls") => &[],
        _ => &["secret", "password"],
    }
}

/// An entity as the API returns it: secrets removed (see `credential_secrets`; private keys
/// of certificates). Hashes stay (`key_hash`, `password_hash`): they are not secrets, and they
/// make the entity writable back as it is.
pub fn redact(kind: Kind, mut e: Value) -> Value {
    match kind {
        Kind::Consumers => {
            if let Some(creds) = e.get_mut("credentials").and_then(Value::as_array_mut) {
                for cr in creds {
                    if let Some(o) = cr.as_object_mut() {
                        let secrets = credential_secrets(o.get("type").and_then(Value::as_str));
                        for k in secrets {
                            o.remove(*k);
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

/// A replacement (`PUT`) of entity `old` by `new`: the secrets `new` leaves out are kept from
/// `old`, so that what a `GET` returned (secrets removed) writes back unchanged. A credential
/// keeps its secret when `new` has the same credential (same type and identifier: `id` of
/// key-auth, `username` of basic-auth and hmac-auth, `key` of jwt) without any key material of
/// its own; a certificate keeps its private key when `new` gives neither `key` nor `key_file`.
/// A secret that `new` does give replaces the stored one.
pub fn keep_secrets(kind: Kind, new: &mut Value, old: &Value) {
    match kind {
        Kind::Consumers => {
            let Some(old_creds) = old.get("credentials").and_then(Value::as_array) else { return };
            let Some(creds) = new.get_mut("credentials").and_then(Value::as_array_mut) else { return };
            for cr in creds {
                let Some(o) = cr.as_object_mut() else { continue };
                let ty = o.get("type").and_then(Value::as_str).unwrap_or("").to_string();
                // (identifier field, key material that stands in for the secret, secret fields)
                let (id_field, material): (&str, &[&str]) = match ty.as_str() {
                    "key-auth" => ("id", &["key", "key_hash"]),
                    "basic-auth" => ("username", &["password", "password_hash"]),
                    "jwt" => ("key", &["secret", "public_key"]),
                    "hmac-auth" => ("username", &["secret"]),
                    _ => continue,
                };
                if material.iter().any(|k| o.contains_key(*k)) {
                    continue;
                }
                let Some(id) = o.get(id_field).cloned() else { continue };
                let same = old_creds.iter().find(|c| {
                    c.get("type").and_then(Value::as_str) == Some(ty.as_str()) && c.get(id_field) == Some(&id)
                });
                if let Some(c) = same {
                    for k in material {
                        if let Some(v) = c.get(*k) {
                            o.insert((*k).to_string(), v.clone());
                        }
                    }
                }
            }
        }
        Kind::Certificates => {
            let Some(o) = new.as_object_mut() else { return };
            if o.contains_key("key") || o.contains_key("key_file") {
                return;
            }
            if let Some(k) = old.get("key") {
                o.insert("key".into(), k.clone());
            }
        }
        _ => {}
    }
}

/// The entity in the form the file loader writes it back (the form `GET /config` and an import
/// give): parsed as its file-format type and printed again, so equal entities are equal text
/// however the client spelled them (`"tags": []` or absent). `None` when it does not parse
/// (validation then reports why).
pub fn canonical(kind: Kind, e: &Value) -> Option<Value> {
    use gw_config::file::*;
    fn via<T: serde::de::DeserializeOwned + serde::Serialize>(e: &Value) -> Option<Value> {
        serde_json::to_value(T::deserialize(e).ok()?).ok()
    }
    match kind {
        Kind::Listeners => via::<FileListener>(e),
        Kind::Certificates => via::<FileCertificate>(e),
        Kind::Upstreams => via::<FileUpstream>(e),
        Kind::Services => via::<FileService>(e),
        Kind::Routes => via::<FileRoute>(e),
        Kind::Plugins => via::<gw_config::plugins::FilePlugin>(e),
        Kind::Consumers => via::<FileConsumer>(e),
    }
}

/// The `ETag` of an entity: a strong tag from its content as stored (SHA-256 of its JSON text,
/// the first 128 bits): it changes when the entity changes, and only then.
pub fn etag(e: &Value) -> String {
    let json = serde_json::to_string(e).unwrap_or_default();
    format!("\"{}\"", &crate::store::sha256_hex(&json)[..32])
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
        let mut doc = Doc::from_value(json!({"consumers": [{"username": "a", "credentials": [
            {"type": "key-auth", "key": "0123456789"},
            {"type": "hmac-auth", "username": "h", "secret": "s3cret"}
        ]}]}));
        hash_secrets(&mut doc).unwrap_or_else(|e| panic!("{e}"));
        let doc = doc.to_value();
        let c = &doc["consumers"][0];
        assert!(c["credentials"][0].get("key").is_none());
        assert!(c["credentials"][0]["key_hash"].as_str().unwrap_or("").starts_with("sha256:"));
        let out = redact(Kind::Consumers, c.clone());
        assert!(out["credentials"][1].get("secret").is_none());
        assert_eq!(out["credentials"][1]["username"], "h");
    }

    /// A document split into shared collections prints exactly like the JSON value it came
    /// from (same keys, same order), so hashes do not depend on the representation.
    #[test]
    fn doc_serializes_like_the_value() {
        let v = json!({
            "gateway": {"admin": {"tokens": []}}, "routes": [{"name": "r", "paths": ["/"]}],
            "consumers": [], "listeners": [{"name": "l", "address": "127.0.0.1:0"}], "zzz": 1,
            "services": "not a list"
        });
        let d = Doc::from_value(v.clone());
        assert_eq!(serde_json::to_string(&d).unwrap(), v.to_string());
        assert_eq!(d.to_json(), v.to_string());
        assert_eq!(d.to_value(), v);
        let mut e = d.clone();
        assert!(e.collection_mut(Kind::Services).is_none(), "a collection that is not a list is not edited");
        e.collection_mut(Kind::Plugins).unwrap().push(Entity::new(json!({"plugin": "cors"})));
        assert_eq!(e.to_value()["plugins"][0]["plugin"], "cors");
        assert!(d.entities(Kind::Plugins).next().is_none(), "the copy is independent");
    }
}
