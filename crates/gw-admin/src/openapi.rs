//! The OpenAPI 3.1 document of the Admin API, generated from the same tables the router is
//! built from (`doc::Kind::ALL` for the entity endpoints, [`ENDPOINTS`] for the others; a test
//! checks that every documented operation is served), with request bodies described by JSON
//! Schemas derived (schemars) from the file format's serde types: it cannot drift from the code.

use serde_json::{Map, Value, json};

use crate::doc::Kind;

/// The non-entity endpoints: (path, method, summary, success status).
pub const ENDPOINTS: &[(&str, &str, &str, u16)] = &[
    ("/status", "get", "Node status: version, uptime, configuration version and hash, store, cluster nodes", 200),
    ("/config", "get", "Export the whole configuration (admin token; `format=yaml` for the file format)", 200),
    ("/config", "put", "Import a whole configuration (JSON, or YAML with a yaml content type)", 200),
    ("/config/history", "get", "Configuration versions, newest first", 200),
    ("/config/rollback/{version}", "post", "Make a previous version current (as a new version)", 200),
    (
        "/usage",
        "get",
        "Usage by period, consumer, route and outcome, from the usage store (every node's figures), paged",
        200,
    ),
    ("/usage/export", "get", "Every usage record of a range, as CSV (default) or JSON, for billing", 200),
    (
        "/cache",
        "get",
        "The proxy-cache instances of this node: memory bytes and keys, evictions, requests in flight",
        200,
    ),
    (
        "/cache/purge",
        "post",
        "Purge stored responses by URL, URL prefix, surrogate key (tag), cache key or all, in every proxy-cache of \
         this node (or the one named); with a Redis tier, on Redis and on every node sharing it",
        200,
    ),
];

/// The body of `POST /cache/purge`.
fn purge_body_schema() -> Value {
    // One value, or a list of them (purged together; without a Redis tier they reach the
    // other nodes in one notification).
    let one_or_many = |item: Value, d: &str| {
        json!({
            "description": d,
            "oneOf": [
                item.clone(),
                { "type": "array", "minItems": 1, "maxItems": crate::cache_api::MAX_PURGE_ITEMS, "items": item }
            ]
        })
    };
    let s = json!({ "type": "string", "minLength": 1 });
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "exactly one of url, prefix, tag, key, all; url, prefix, tag and key take one value or a list",
        "properties": {
            "url": one_or_many(s.clone(), "absolute http(s) URL: every stored response of it (all variants; the query normalised like keys)"),
            "prefix": one_or_many(s.clone(), "absolute http(s) URL prefix (`https://host/path`): every stored response whose URL starts with it"),
            "tag": one_or_many(s.clone(), "a surrogate key of the `Surrogate-Key` or `Cache-Tag` response fields (no control characters)"),
            "key": one_or_many(json!({ "type": "string", "pattern": "^[0-9a-fA-F]{32}$" }), "a primary cache key (32 hex digits), as `Cache-Status` shows it with `cache_status_key: true`"),
            "all": { "type": "boolean", "const": true, "description": "everything" },
            "cache": { "type": "string", "minLength": 1, "description": "only the proxy-cache instance of this name" }
        }
    })
}

/// The answer of `POST /cache/purge`.
fn purge_result_schema() -> Value {
    json!({
        "type": "object",
        "properties": { "caches": { "type": "array", "items": { "type": "object", "properties": {
            "cache": { "type": "string" },
            "redis_removed": { "type": ["integer", "null"], "description": "entries removed from Redis (null: no Redis tier, or Redis failed)" },
            "delivered": { "type": ["integer", "null"], "description": "with a Redis tier: what Redis PUBLISH answered for the purge message, the number of subscriber connections that received it: one per proxy-cache using this Redis tier (same prefix) on every running node, this one included; for a list, the least over its messages (null: no Redis tier, or not published)" },
            "redis_error": { "type": "string", "description": "why Redis could not be purged (this node's memory was purged anyway)" },
            "relayed": { "type": "boolean", "description": "without a Redis tier, in store mode on PostgreSQL: true once PostgreSQL accepted the notification (committed; every node listening then receives it; PostgreSQL does not say how many do); false when sending it failed (see relay_error; the other nodes keep their copies until they expire). Absent: no relay (a Redis tier, or a file / embedded store: this node only)" },
            "relay_error": { "type": "string", "description": "why the relay failed (with relayed: false)" }
        }, "required": ["cache", "redis_removed", "delivered"] } } },
        "required": ["caches"]
    })
}

/// The answer of `GET /cache`.
fn cache_list_schema() -> Value {
    json!({
        "type": "object",
        "properties": { "caches": { "type": "array", "items": { "type": "object", "properties": {
            "cache": { "type": "string" },
            "memory_bytes": { "type": "integer", "minimum": 0 },
            "memory_entries": { "type": "integer", "minimum": 0 },
            "evictions": { "type": "integer", "minimum": 0 },
            "in_flight": { "type": "integer", "minimum": 0 },
            "redis": { "type": "boolean" }
        }, "required": ["cache", "memory_bytes", "memory_entries", "evictions", "in_flight", "redis"] } } },
        "required": ["caches"]
    })
}

/// The query parameters of `/usage` and `/usage/export`.
fn usage_params(export: bool) -> Vec<Value> {
    let instant = json!({ "type": "string", "pattern": crate::usage_api::INSTANT_PATTERN });
    let mut v = vec![
        json!({ "name": "from", "in": "query", "description": "start, inclusive: `YYYY-MM-DD` (UTC) or `YYYY-MM-DDTHH:MM:SSZ`; default: the start of the current month", "schema": instant }),
        json!({ "name": "to", "in": "query", "description": "end: `YYYY-MM-DD` includes that day, `YYYY-MM-DDTHH:MM:SSZ` is exclusive; default: now. A range that ends before it starts is empty", "schema": instant }),
        json!({ "name": "granularity", "in": "query", "description": "bucket size (default `day`); `minute` reads the per-minute figures, kept for `gateway.usage.minute_retention`", "schema": { "type": "string", "enum": ["minute", "hour", "day", "month"] } }),
        json!({ "name": "consumer", "in": "query", "description": "one consumer (`-`: requests without one)", "schema": { "type": "string" } }),
        json!({ "name": "route", "in": "query", "schema": { "type": "string" } }),
        json!({ "name": "outcome", "in": "query", "schema": { "type": "string", "enum": ["served", "refused", "auth_failed", "upstream_error"] } }),
    ];
    if export {
        v.push(json!({ "name": "format", "in": "query", "description": "default `csv`", "schema": { "type": "string", "enum": ["csv", "json"] } }));
    } else {
        v.push(json!({ "name": "offset", "in": "query", "description": "past the end: an empty page", "schema": { "type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER } }));
        v.push(
            json!({ "name": "size", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }),
        );
    }
    v
}

/// A usage record.
fn usage_record_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "period": { "type": "string", "description": "`2026-11`, `2026-11-26`, `2026-11-26T13Z` or `2026-11-26T13:05Z`" },
            "start": { "type": "string", "description": "start of the period, RFC 3339" },
            "consumer": { "type": "string" },
            "route": { "type": "string" },
            "outcome": { "type": "string", "enum": ["served", "refused", "auth_failed", "upstream_error"] },
            "requests": { "type": "integer", "minimum": 0 },
            "bytes_in": { "type": "integer", "minimum": 0 },
            "bytes_out": { "type": "integer", "minimum": 0 }
        },
        "required": ["period", "start", "consumer", "route", "outcome", "requests", "bytes_in", "bytes_out"]
    })
}

/// What each error status means.
const ERRORS: &[(u16, &str)] = &[
    (
        400,
        "invalid: the request breaks a rule this document states, or the configuration it would make breaks a rule \
         of the configuration as a whole (an unknown service, upstream or consumer; a duplicate name; \
         two fields that exclude each other; an address that cannot be bound; a certificate that does not parse); \
         `errors[].field` names the failing key, entities by name (`routes[orders].paths[0]`)",
    ),
    (401, "no or unknown admin token"),
    (403, "a read-only token writing, or exporting the configuration"),
    (404, "no such entity, version or endpoint"),
    (405, "DB-less mode: the API is read-only"),
    (409, "an entity of that name exists (POST), or another writer stored a version first (retry)"),
    (412, "If-Match / If-None-Match does not hold for the latest stored version"),
    (503, "the configuration store did not answer (within 2 s) or refused; a write may or may not have been stored"),
];

fn error_responses(extra: &[u16]) -> Map<String, Value> {
    let mut m = Map::new();
    for (s, why) in ERRORS.iter().filter(|(s, _)| *s != 412 || extra.contains(s)) {
        let err = json!({ "description": why, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
        m.insert(s.to_string(), err);
    }
    m
}

/// The `ETag` response header.
fn etag_header(what: &str) -> Value {
    json!({ "ETag": { "description": what, "schema": { "type": "string" } } })
}

fn ok(status: u16, schema: &Value) -> (String, Value) {
    (status.to_string(), json!({ "description": "success", "content": { "application/json": { "schema": schema } } }))
}

fn ok_tagged(status: u16, schema: &Value, tag: &str) -> (String, Value) {
    let (k, mut v) = ok(status, schema);
    v["headers"] = etag_header(tag);
    (k, v)
}

/// `If-Match` and `If-None-Match` (optional) of a conditional write.
fn preconditions(what: &str) -> [Value; 2] {
    [
        json!({ "name": "If-Match", "in": "header", "required": false, "description": format!("write only if {what} still has one of these ETags (`*`: exists); 412 otherwise"), "schema": { "type": "string" } }),
        json!({ "name": "If-None-Match", "in": "header", "required": false, "description": format!("`*`: write only if {what} does not exist; 412 otherwise"), "schema": { "type": "string" } }),
    ]
}

/// The entity name rule of the validator: 1-128 letters, digits, `.`, `_`, `~`, `-`.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9._~-]{1,128}$";

/// Largest integer the document admits where the server reads a 64-bit count (the largest
/// integer a JSON number carries exactly).
const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

fn name_schema(description: &str) -> Value {
    json!({ "type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": 128, "description": description })
}

fn op(summary: &str, tag: &str, params: &[Value], body: Option<Value>, success: &[(String, Value)]) -> Value {
    let conditional = params.iter().any(|p| p["name"] == "If-Match");
    let mut responses = error_responses(if conditional { &[412] } else { &[] });
    for (k, v) in success {
        responses.insert(k.clone(), v.clone());
    }
    let mut o = json!({ "summary": summary, "tags": [tag], "parameters": params, "responses": responses });
    if let Some(b) = body {
        o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": b } } });
    }
    o
}

/// The JSON Schema of each entity kind (a `$ref` into `components/schemas`), derived from the
/// file format's serde types, so requests are described exactly as the loader reads them.
fn typed_schemas(schemas: &mut Map<String, Value>) -> Vec<(Kind, Value)> {
    use gw_config::file::*;
    let mut g = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let refs: Vec<(Kind, Value)> = Kind::ALL
        .into_iter()
        .map(|k| {
            let s = match k {
                Kind::Listeners => g.subschema_for::<FileListener>(),
                Kind::Certificates => g.subschema_for::<FileCertificate>(),
                Kind::Upstreams => g.subschema_for::<FileUpstream>(),
                Kind::Services => g.subschema_for::<FileService>(),
                Kind::Routes => g.subschema_for::<FileRoute>(),
                Kind::Plugins => g.subschema_for::<gw_config::plugins::FilePlugin>(),
                Kind::Consumers => g.subschema_for::<FileConsumer>(),
            };
            (k, s.to_value())
        })
        .collect();
    let config = g.subschema_for::<FileConfig>().to_value();
    schemas.extend(g.take_definitions(true));
    schemas.insert("FileConfigRef".into(), config);
    state_rules(schemas);
    refs
}

/// The schema of a `PUT /{kind}/{id}` body: the entity without its name (the path gives it; a
/// body that repeats it must repeat it exactly, which a schema cannot say, so the schema leaves
/// it out).
fn without_id(kind: Kind, schemas: &Map<String, Value>, entity_ref: &Value) -> Value {
    let name = entity_ref.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()).unwrap_or("");
    let mut s = schemas.get(name).cloned().unwrap_or_else(|| json!({ "type": "object" }));
    if let Some(req) = s.get_mut("required").and_then(Value::as_array_mut) {
        req.retain(|f| f != kind.id_field());
    }
    if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove(kind.id_field());
    }
    let desc = s.get("description").and_then(Value::as_str).unwrap_or("").to_string();
    s["description"] = Value::String(format!(
        "{desc} The path names the entity: `{}` is left out (a body that gives it must give the path's value).",
        kind.id_field()
    ));
    s
}

/// Merge `extra` into the schema of property `prop` of component `schema`.
fn constrain(schemas: &mut Map<String, Value>, schema: &str, prop: &str, extra: &Value) {
    let Some(p) = schemas.get_mut(schema).and_then(|s| s.pointer_mut(&format!("/properties/{prop}"))) else { return };
    if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            p.insert(k.clone(), v.clone());
        }
    }
}

/// Every integer within the range of the type the server reads it as (schemars gives a
/// minimum but no maximum for `u32`, `i32`, `u64`, `usize`), and within
/// +-[`MAX_SAFE_INTEGER`] (the API refuses larger ones).
fn bound_integers(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let is_int = match o.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            if is_int {
                let safe = MAX_SAFE_INTEGER as i64;
                let (lo, hi) = match o.get("format").and_then(Value::as_str) {
                    Some("uint8") => (0, 255),
                    Some("int8") => (-128, 127),
                    Some("uint16") => (0, 65_535),
                    Some("int16") => (-32_768, 32_767),
                    Some("uint32") => (0, 4_294_967_295),
                    Some("int32") => (-2_147_483_648, 2_147_483_647),
                    Some("uint" | "uint64") => (0, safe),
                    _ => (-safe, safe),
                };
                o.entry("maximum").or_insert_with(|| json!(hi));
                o.entry("minimum").or_insert_with(|| json!(lo));
            }
            for x in o.values_mut() {
                bound_integers(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// State in the schemas the rules the validator enforces on single fields, so that a request
/// this document calls valid is not refused for a rule of its own fields: entity names,
/// durations and sizes, integer ranges, required plugin configuration, and the field rules in
/// the table below. (Rules about the configuration as a whole, such as references between
/// entities, cannot be stated in a schema: see the 400 response.)
fn state_rules(schemas: &mut Map<String, Value>) {
    for (schema, field) in [
        ("FileListener", "name"),
        ("FileCertificate", "name"),
        ("FileUpstream", "name"),
        ("FileService", "name"),
        ("FileRoute", "name"),
        ("FileConsumer", "username"),
    ] {
        constrain(schemas, schema, field, &name_schema("Stable name: 1-128 letters, digits, `.`, `_`, `~`, `-`."));
    }
    constrain(schemas, "FilePlugin", "name", &json!({ "minLength": 1 }));
    if let Some(d) = schemas.get_mut("Duration").and_then(Value::as_object_mut) {
        d.insert("pattern".into(), json!("^([0-9]{1,9}(ns|us|ms|s|m|h|d))+$"));
    }
    if let Some(b) = schemas.get_mut("ByteSize") {
        b["anyOf"] = json!([
            { "type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER },
            { "type": "string", "pattern": "^[0-9]{1,9}(B|K|KiB|M|MiB|G|GiB|kB|KB|MB|GB)?$", "examples": ["1MiB"] }
        ]);
    }
    for v in schemas.values_mut() {
        bound_integers(v);
    }
    // A plugin whose configuration has required keys needs `config`.
    let required_config: Vec<String> = schemas
        .iter()
        .filter(|(_, s)| s.get("required").and_then(Value::as_array).is_some_and(|r| !r.is_empty()))
        .map(|(k, _)| format!("#/components/schemas/{k}"))
        .collect();
    if let Some(variants) = schemas.get_mut("FilePlugin").and_then(|p| p.get_mut("oneOf")).and_then(Value::as_array_mut)
    {
        for v in variants {
            let r = v.pointer("/properties/config/$ref").and_then(Value::as_str).unwrap_or("");
            if required_config.iter().any(|x| x == r) {
                v["required"] = json!(["config"]);
            }
        }
    }
    // (component, property, what the validator requires)
    let rules: &[(&str, &str, Value)] = &[
        ("FileUpstream", "targets", json!({ "minItems": 1 })),
        ("FileUpstream", "max_connections_per_target", json!({ "minimum": 1 })),
        ("FileTarget", "weight", json!({ "maximum": 10000 })),
        ("FileActiveHealth", "healthy_threshold", json!({ "minimum": 1 })),
        ("FileActiveHealth", "unhealthy_threshold", json!({ "minimum": 1 })),
        ("FilePassiveHealth", "consecutive_failures", json!({ "minimum": 1 })),
        ("FileCircuitBreaker", "min_requests", json!({ "minimum": 1 })),
        ("FileCircuitBreaker", "half_open_requests", json!({ "minimum": 1 })),
        ("FileRoute", "protocols", json!({ "minItems": 1 })),
        ("FileRoute", "auth_mode", json!({ "enum": ["any", "all", null] })),
        ("FileRoute", "methods", json!({ "items": { "type": "string", "pattern": "^[A-Z]{1,32}$" } })),
        ("FileService", "type", json!({ "enum": ["proxy", "echo", "static", null] })),
        ("FileAdminToken", "role", json!({ "enum": ["admin", "read_only", null] })),
    ];
    for (schema, prop, extra) in rules {
        constrain(schemas, schema, prop, extra);
    }
    if let Some(req) = schemas.get_mut("FileUpstream").and_then(|u| u.as_object_mut()) {
        let r = req.entry("required").or_insert_with(|| json!([]));
        if let Some(r) = r.as_array_mut()
            && !r.iter().any(|x| x == "targets")
        {
            r.push(json!("targets"));
        }
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let typed = typed_schemas(&mut schemas);
    for kind in Kind::ALL {
        // Plugin instance names are free text (a derived one reads `cors@route:orders`).
        let id_schema = match kind {
            Kind::Plugins => json!({ "type": "string", "minLength": 1 }),
            _ => json!({ "type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": 128 }),
        };
        let id = |name: &str| json!({ "name": name, "in": "path", "required": true, "schema": id_schema });
        let k = kind.key();
        // Responses: the entity as stored, secrets removed (so not the request schema).
        let entity = json!({ "$ref": format!("#/components/schemas/{k}") });
        let body =
            typed.iter().find(|(x, _)| *x == kind).map_or_else(|| json!({ "type": "object" }), |(_, v)| v.clone());
        let put_name = format!("{k}_put");
        let put_schema = without_id(kind, &schemas, &body);
        schemas.insert(put_name.clone(), put_schema);
        let put_body = json!({ "$ref": format!("#/components/schemas/{put_name}") });
        let page = json!({
            "type": "object",
            "properties": {
                "data": { "type": "array", "items": entity },
                "total": { "type": "integer" },
                "offset": { "type": "integer" },
                "next": { "type": ["integer", "null"] }
            },
            "required": ["data", "total", "offset", "next"]
        });
        let list_params = vec![
            json!({ "name": "offset", "in": "query", "description": "past the end: an empty page", "schema": { "type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER } }),
            json!({ "name": "size", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }),
            json!({ "name": "tags", "in": "query", "description": "comma-separated; entities with all of them", "schema": { "type": "string" } }),
        ];
        let tag = "the entity's ETag (its content as stored); give it in If-Match to write only if it has not changed";
        paths.insert(
            format!("/{k}"),
            json!({
                "get": op(&format!("List {k}"), k, &list_params, None, &[ok(200, &page)]),
                "post": op(&format!("Create one of {k}"), k, &[], Some(body.clone()), &[ok_tagged(201, &entity, tag)]),
            }),
        );
        let mut no_content = Map::new();
        no_content.insert("description".into(), Value::String("deleted".into()));
        let [if_match, if_none_match] = preconditions("the entity");
        let put_params = [id("id"), if_match.clone(), if_none_match];
        let delete_params = [id("id"), if_match];
        paths.insert(
            format!("/{k}/{{id}}"),
            json!({
                "get": op(&format!("Read one of {k}"), k, &[id("id")], None, &[ok_tagged(200, &entity, tag)]),
                "put": op(&format!("Create or replace one of {k} (upsert by {}); secrets left out (as a GET returns them) keep their stored values", kind.id_field()), k, &put_params, Some(put_body.clone()), &[ok_tagged(200, &entity, tag), ok_tagged(201, &entity, tag)]),
                "delete": op(&format!("Delete one of {k}"), k, &delete_params, None, &[("204".to_string(), Value::Object(no_content))]),
            }),
        );
    }
    for (path, method, summary, status) in ENDPOINTS {
        let [if_match, _] = preconditions("the configuration");
        let params = if path.contains("{version}") {
            vec![
                json!({ "name": "version", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 1, "maximum": MAX_SAFE_INTEGER } }),
                if_match,
            ]
        } else if *path == "/config" && *method == "put" {
            vec![if_match]
        } else if *path == "/config" && *method == "get" {
            vec![json!({ "name": "format", "in": "query", "schema": { "type": "string", "enum": ["json", "yaml"] } })]
        } else if path.starts_with("/usage") {
            usage_params(*path == "/usage/export")
        } else if *path == "/config/history" {
            vec![
                json!({ "name": "size", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }),
            ]
        } else {
            vec![]
        };
        // `PUT /config` takes the document, or what `GET /config` returns.
        let body = if *path == "/cache/purge" { Some(purge_body_schema()) } else { None };
        let body = body.or_else(|| {
            (*method == "put").then(|| {
                json!({ "oneOf": [
                { "$ref": "#/components/schemas/FileConfigRef" },
                { "type": "object", "additionalProperties": false, "required": ["document"], "properties": {
                    "document": { "$ref": "#/components/schemas/FileConfigRef" },
                    "version": { "type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER },
                    "hash": { "type": "string" } } }
            ] })
            })
        });
        let config_tag = "the configuration's ETag (its version's hash)";
        let record = json!({ "$ref": "#/components/schemas/UsageRecord" });
        let success = if *path == "/config" || path.contains("{version}") {
            ok_tagged(*status, &json!({}), config_tag)
        } else if *path == "/usage" {
            let page = json!({
                "type": "object",
                "properties": {
                    "data": { "type": "array", "items": record },
                    "total": { "type": "integer" },
                    "offset": { "type": "integer" },
                    "next": { "type": ["integer", "null"] },
                    "from": { "type": "string" },
                    "to": { "type": "string" },
                    "granularity": { "type": "string" },
                    "store": { "type": "string", "enum": ["memory", "embedded", "postgres", "redis"] }
                },
                "required": ["data", "total", "offset", "next", "from", "to", "granularity", "store"]
            });
            ok(*status, &page)
        } else if *path == "/cache/purge" {
            ok(*status, &purge_result_schema())
        } else if *path == "/cache" {
            ok(*status, &cache_list_schema())
        } else if *path == "/usage/export" {
            let body = json!({
                "type": "object",
                "properties": { "from": { "type": "string" }, "to": { "type": "string" }, "granularity": { "type": "string" }, "data": { "type": "array", "items": record } },
                "required": ["from", "to", "granularity", "data"]
            });
            let (k, mut v) = ok(*status, &body);
            v["content"]["text/csv"] = json!({ "schema": { "type": "string", "description": format!("header `{}`, then one line per record", crate::usage_api::CSV_HEADER) } });
            (k, v)
        } else {
            ok(*status, &json!({}))
        };
        let tag = if path.starts_with("/usage") {
            "usage"
        } else if path.starts_with("/cache") {
            "cache"
        } else {
            "config"
        };
        let mut o = op(summary, tag, &params, body, &[success]);
        if *path == "/config" && *method == "get" {
            // The file format: a YAML document (an object).
            o["responses"]["200"]["content"]["application/yaml"] = json!({ "schema": { "type": "object" } });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = o;
    }
    for kind in Kind::ALL {
        schemas.insert(
            kind.key().to_string(),
            json!({
                "type": "object",
                "description": format!("An entry of `{}` as stored (docs/configuration.md); secrets are never returned.", kind.key()),
            }),
        );
    }
    schemas.insert("UsageRecord".into(), usage_record_schema());
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "properties": {
                "error": { "type": "string" },
                "message": { "type": "string" },
                "errors": { "type": "array", "items": { "type": "object", "properties": { "field": { "type": "string" }, "message": { "type": "string" } } } }
            },
            "required": ["error", "message"]
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Gatehouse Admin API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } }
        },
        "security": [{ "token": [] }]
    })
}
