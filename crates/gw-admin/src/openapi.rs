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
];

fn error_responses(extra: &[u16]) -> Map<String, Value> {
    let mut m = Map::new();
    let err = json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    for s in [400u16, 401, 403, 404, 405, 409, 503].iter().chain(extra) {
        m.insert(s.to_string(), err.clone());
    }
    m
}

fn ok(status: u16, schema: &Value) -> (String, Value) {
    (status.to_string(), json!({ "description": "success", "content": { "application/json": { "schema": schema } } }))
}

fn op(summary: &str, tag: &str, params: &[Value], body: Option<Value>, success: &[(String, Value)]) -> Value {
    let mut responses = error_responses(&[]);
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
    refs
}

/// The schema of a `PUT /{kind}/{id}` body: the entity without its name (the path gives it).
fn without_id(kind: Kind, schemas: &Map<String, Value>, entity_ref: &Value) -> Value {
    let name = entity_ref.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()).unwrap_or("");
    let mut s = schemas.get(name).cloned().unwrap_or_else(|| json!({ "type": "object" }));
    if let Some(req) = s.get_mut("required").and_then(Value::as_array_mut) {
        req.retain(|f| f != kind.id_field());
    }
    s
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let typed = typed_schemas(&mut schemas);
    let id = |name: &str| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "minLength": 1 } });
    for kind in Kind::ALL {
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
            json!({ "name": "offset", "in": "query", "schema": { "type": "integer", "minimum": 0 } }),
            json!({ "name": "size", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }),
            json!({ "name": "tags", "in": "query", "description": "comma-separated; entities with all of them", "schema": { "type": "string" } }),
        ];
        paths.insert(
            format!("/{k}"),
            json!({
                "get": op(&format!("List {k}"), k, &list_params, None, &[ok(200, &page)]),
                "post": op(&format!("Create one of {k}"), k, &[], Some(body.clone()), &[ok(201, &entity)]),
            }),
        );
        let mut no_content = Map::new();
        no_content.insert("description".into(), Value::String("deleted".into()));
        paths.insert(
            format!("/{k}/{{id}}"),
            json!({
                "get": op(&format!("Read one of {k}"), k, &[id("id")], None, &[ok(200, &entity.clone())]),
                "put": op(&format!("Create or replace one of {k} (upsert by {})", kind.id_field()), k, &[id("id")], Some(put_body.clone()), &[ok(200, &entity), ok(201, &entity)]),
                "delete": op(&format!("Delete one of {k}"), k, &[id("id")], None, &[("204".to_string(), Value::Object(no_content))]),
            }),
        );
    }
    for (path, method, summary, status) in ENDPOINTS {
        let params = if path.contains("{version}") {
            vec![
                json!({ "name": "version", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 1 } }),
            ]
        } else if *path == "/config" && *method == "get" {
            vec![json!({ "name": "format", "in": "query", "schema": { "type": "string", "enum": ["json", "yaml"] } })]
        } else if *path == "/config/history" {
            vec![
                json!({ "name": "size", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }),
            ]
        } else {
            vec![]
        };
        let body = (*method == "put").then(|| json!({ "$ref": "#/components/schemas/FileConfigRef" }));
        let mut o = op(summary, "config", &params, body, &[ok(*status, &json!({}))]);
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
