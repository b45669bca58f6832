//! Admin API and configuration stores, over real sockets: every endpoint with its errors, the
//! embedded store (including kill -9 during writes), PostgreSQL with two gateway processes, and
//! the OpenAPI document.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

pub(crate) const ADMIN_TOKEN: &str = "admin-token-0123456789";
const READ_TOKEN: &str = "reader-token-0123456789";

pub(crate) fn sha(s: &str) -> String {
    use sha2::Digest;
    format!("sha256:{}", sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The seed document: a proxy listener, an echo service, admin tokens.
fn seed_yaml(admin_listen: &str) -> String {
    format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\n  admin:\n    listen: {admin_listen}\n    tokens:\n      - {{ name: ops, token_hash: \"{}\" }}\n      - {{ name: dashboards, token_hash: \"{}\", role: read_only }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: echo\n    type: echo\n    tags: [core]\nroutes:\n  - name: home\n    service: echo\n    paths: [\"/home\"]\n",
        sha(ADMIN_TOKEN),
        sha(READ_TOKEN)
    )
}

struct Admin {
    gw: TestGateway,
    url: String,
    _task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// A gateway with an embedded store and the Admin API on an ephemeral port (in-process).
async fn admin_gateway(with_store: bool) -> Admin {
    let yaml = seed_yaml("127.0.0.1:0");
    let gw = TestGateway::start(&yaml, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = gw_config::parse_yaml(&yaml, "seed", Default::default()).unwrap();
    let doc = serde_json::to_value(&file).unwrap();
    let (store, version): (Option<Arc<dyn gw_admin::store::ConfigStore>>, u64) = if with_store {
        let s = gw_admin::store::EmbeddedStore::open(dir.path()).unwrap();
        let v = gw_admin::store::ConfigStore::commit(&s, doc.to_string(), "seed".into()).await.unwrap();
        (Some(Arc::new(s)), v.version)
    } else {
        (None, 0)
    };
    let state = gw_admin::AdminState::new(gw.gw.clone(), store, doc, version, "test-node".into());
    let (addr, task) = gw_admin::serve("127.0.0.1:0".parse().unwrap(), state).await.unwrap();
    Admin { gw, url: format!("http://{addr}"), _task: task, _dir: dir }
}

async fn call(method: reqwest::Method, url: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut b = client().request(method, url);
    if let Some(t) = token {
        b = b.bearer_auth(t);
    }
    if let Some(body) = body {
        b = b.json(&body);
    }
    let r = b.send().await.expect("request");
    let s = r.status();
    let text = r.text().await.unwrap_or_default();
    (s, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

use reqwest::Method as M;

/// Authentication: no token, a wrong token, a read-only token writing.
#[tokio::test]
async fn admin_authentication() {
    let a = admin_gateway(true).await;
    let (s, b) = call(M::GET, &format!("{}/services", a.url), None, None).await;
    assert_eq!(s, 401);
    assert_eq!(b["error"], "unauthorized");
    assert_eq!(call(M::GET, &format!("{}/services", a.url), Some("wrong-token"), None).await.0, 401);
    assert_eq!(call(M::GET, &format!("{}/services", a.url), Some(READ_TOKEN), None).await.0, 200);
    let (s, b) = call(M::PUT, &format!("{}/services/x", a.url), Some(READ_TOKEN), Some(json!({"type": "echo"}))).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    assert_eq!(call(M::GET, &format!("{}/config", a.url), Some(READ_TOKEN), None).await.0, 403, "export needs admin");
    // The OpenAPI document is public.
    assert_eq!(call(M::GET, &format!("{}/openapi.json", a.url), None, None).await.0, 200);
}

/// CRUD of every kind of entity, pagination, tags, conflicts, validation errors with the
/// failing field, and writes applied to the data plane at once.
#[tokio::test]
async fn admin_crud_applies_to_the_data_plane() {
    let a = admin_gateway(true).await;
    let t = Some(ADMIN_TOKEN);
    let proxy = a.gw.url("main");
    let u = |p: &str| format!("{}{p}", a.url);

    assert_eq!(client().get(format!("{proxy}/orders")).send().await.unwrap().status(), 404);
    let (s, b) =
        call(M::POST, &u("/services"), t, Some(json!({"name": "orders-svc", "type": "echo", "tags": ["shop"]}))).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["name"], "orders-svc");
    let (s, b) = call(M::POST, &u("/services"), t, Some(json!({"name": "orders-svc", "type": "echo"}))).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (s, _) =
        call(M::PUT, &u("/routes/orders"), t, Some(json!({"service": "orders-svc", "paths": ["/orders"]}))).await;
    assert_eq!(s, 201);
    // Applied without a restart.
    let r = client().get(format!("{proxy}/orders")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (s, b) =
        call(M::PUT, &u("/routes/orders"), t, Some(json!({"service": "orders-svc", "paths": ["/orders", "/o"]}))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(client().get(format!("{proxy}/o")).send().await.unwrap().status(), 200);

    // Reads, pagination, tags.
    let (s, b) = call(M::GET, &u("/routes/orders"), t, None).await;
    assert_eq!((s, b["paths"][1].as_str()), (StatusCode::OK, Some("/o")));
    assert_eq!(call(M::GET, &u("/routes/nope"), t, None).await.0, 404);
    let (_, b) = call(M::GET, &u("/services?size=1"), t, None).await;
    assert_eq!((b["total"].as_u64(), b["data"].as_array().unwrap().len(), b["next"].as_u64()), (Some(2), 1, Some(1)));
    let (_, b) = call(M::GET, &u("/services?offset=1&size=1"), t, None).await;
    assert_eq!(b["next"], Value::Null);
    let (_, b) = call(M::GET, &u("/services?tags=shop"), t, None).await;
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    assert_eq!(b["data"][0]["name"], "orders-svc");
    assert_eq!(call(M::GET, &u("/services?size=0"), t, None).await.0, 400);
    assert_eq!(call(M::GET, &u("/widgets"), t, None).await.0, 404);

    // Validation: the same rules and messages as the file loader, with the failing field.
    let (s, b) = call(M::PUT, &u("/routes/bad"), t, Some(json!({"service": "ghost"}))).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "invalid");
    assert!(b["errors"][0]["field"].as_str().unwrap().ends_with(".service"), "{b}");
    assert!(b["message"].as_str().unwrap().contains("ghost"), "{b}");
    let (s, b) = call(M::PUT, &u("/services/x"), t, Some(json!({"type": "echo", "colour": "red"}))).await;
    assert_eq!(s, 400);
    assert!(b["message"].as_str().unwrap().contains("colour"), "{b}");
    let (s, _) = call(M::POST, &u("/services"), t, Some(json!({"type": "echo"}))).await;
    assert_eq!(s, 400, "a name is required");
    let (s, _) = call(M::POST, &u("/services"), t, Some(json!([1, 2]))).await;
    assert_eq!(s, 400);
    // Deleting a service a route uses is refused by validation; the route first.
    let (s, b) = call(M::DELETE, &u("/services/orders-svc"), t, None).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(call(M::DELETE, &u("/routes/orders"), t, None).await.0, 204);
    assert_eq!(call(M::DELETE, &u("/routes/orders"), t, None).await.0, 404);
    assert_eq!(client().get(format!("{proxy}/orders")).send().await.unwrap().status(), 404);
    assert_eq!(call(M::DELETE, &u("/services/orders-svc"), t, None).await.0, 204);

    // Consumers, credentials (write-only secrets) and plugins.
    let (s, b) = call(
        M::PUT,
        &u("/consumers/alice"),
        t,
        Some(json!({"groups": ["staff"], "credentials": [
            {"type": "key-auth", "id": "alice-key", "key": "alice-secret-key"},
            {"type": "hmac-auth", "username": "alice-h", "secret": "hmac-secret-0123456789"}
        ]})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let creds = b["credentials"].as_array().unwrap();
    assert!(creds[0].get("key").is_none() && creds[0]["key_hash"].as_str().unwrap().starts_with("sha256:"));
    assert!(creds[1].get("secret").is_none(), "secrets are never returned: {b}");
    let (s, b) = call(M::PUT, &u("/plugins/home-auth"), t, Some(json!({"plugin": "key-auth", "route": "home"}))).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(client().get(format!("{proxy}/home")).send().await.unwrap().status(), 401);
    let r = client().get(format!("{proxy}/home")).header("x-api-key", "alice-secret-key").send().await.unwrap();
    assert_eq!(r.status(), 200, "the key (stored hashed) works");
    let (_, b) = call(M::GET, &u("/plugins"), t, None).await;
    assert_eq!(b["data"][0]["name"], "home-auth");
    let (s, _) = call(M::PUT, &u("/certificates/c1"), t, Some(json!({"cert": "not a pem", "key": "nope"}))).await;
    assert_eq!(s, 400);
    let (s, _) = call(M::PUT, &u("/upstreams/pool"), t, Some(json!({"targets": [{"address": "127.0.0.1:9"}]}))).await;
    assert_eq!(s, 201);
    let (s, b) = call(M::GET, &u("/listeners/main"), t, None).await;
    assert_eq!((s, b["address"].as_str()), (StatusCode::OK, Some("127.0.0.1:0")));
}

/// Route changes (applied incrementally: only the changed route is validated and compiled)
/// route exactly like a full reload would: removing an earlier route renumbers the later ones
/// and their route-scoped plugins follow them; a route a plugin names cannot be removed.
#[tokio::test]
async fn admin_route_changes_keep_every_other_route() {
    let a = admin_gateway(true).await;
    let t = Some(ADMIN_TOKEN);
    let proxy = a.gw.url("main");
    let u = |p: &str| format!("{}{p}", a.url);
    let status = |path: &'static str| {
        let url = format!("{proxy}{path}");
        async move { client().get(url).send().await.unwrap().status().as_u16() }
    };
    for (name, path) in [("ra", "/a"), ("rb", "/b/{id}"), ("rc", "/c/*")] {
        let (s, b) =
            call(M::PUT, &u(&format!("/routes/{name}")), t, Some(json!({"service": "echo", "paths": [path]}))).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = call(M::PUT, &u("/plugins/rc-auth"), t, Some(json!({"plugin": "key-auth", "route": "rc"}))).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!((status("/a").await, status("/b/1").await, status("/c/x").await), (200, 200, 401));

    // Remove the first of them: the others move up one place, rc keeps its plugin.
    assert_eq!(call(M::DELETE, &u("/routes/ra"), t, None).await.0, 204);
    assert_eq!(
        (status("/a").await, status("/b/1").await, status("/c/x").await, status("/home").await),
        (404, 200, 401, 200)
    );
    // Replace one in place; add one at the end.
    let (s, _) =
        call(M::PUT, &u("/routes/rb"), t, Some(json!({"service": "echo", "paths": ["/b2"], "methods": ["GET"]}))).await;
    assert_eq!(s, 200);
    let (s, _) = call(M::PUT, &u("/routes/rd"), t, Some(json!({"service": "echo", "paths": ["/c/d"]}))).await;
    assert_eq!(s, 201);
    assert_eq!(
        (status("/b/1").await, status("/b2").await, status("/c/d").await, status("/c/x").await),
        (404, 200, 200, 401)
    );
    // A bad route is refused with the failing field, and changes nothing.
    let (s, b) = call(M::PUT, &u("/routes/rd"), t, Some(json!({"service": "echo", "paths": ["no-slash"]}))).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["errors"][0]["field"].as_str(), Some("routes[rd].paths[0]"), "{b}");
    let (s, b) = call(M::PUT, &u("/routes/rd"), t, Some(json!({"service": "echo", "pathz": ["/x"]}))).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("pathz"), "{b}");
    assert_eq!(status("/c/d").await, 200);
    // A route a plugin is scoped to cannot go (the whole document is validated).
    let (s, b) = call(M::DELETE, &u("/routes/rc"), t, None).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("rc"), "{b}");
    assert_eq!(status("/c/x").await, 401);
    // What runs is what is stored: the export lists the routes in order.
    let (_, b) = call(M::GET, &u("/config"), t, None).await;
    let names: Vec<&str> =
        b["document"]["routes"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["home", "rb", "rc", "rd"]);
}

/// History, rollback, export (JSON and YAML, round-tripping through import), status.
#[tokio::test]
async fn admin_history_rollback_export_import_status() {
    let a = admin_gateway(true).await;
    let t = Some(ADMIN_TOKEN);
    let u = |p: &str| format!("{}{p}", a.url);
    let proxy = a.gw.url("main");
    assert_eq!(call(M::PUT, &u("/routes/v2"), t, Some(json!({"service": "echo", "paths": ["/v2"]}))).await.0, 201);
    assert_eq!(call(M::PUT, &u("/routes/v3"), t, Some(json!({"service": "echo", "paths": ["/v3"]}))).await.0, 201);
    let (s, b) = call(M::GET, &u("/config/history"), t, None).await;
    assert_eq!(s, 200);
    let h = b["data"].as_array().unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!((h[0]["version"].as_u64(), h[0]["comment"].as_str()), (Some(3), Some("PUT /routes/v3")));
    assert_eq!(h[2]["comment"], "seed");

    // Rollback to version 2: /v3 disappears, as a new version 4.
    let (s, b) = call(M::POST, &u("/config/rollback/2"), t, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["version"], 4);
    assert_eq!(client().get(format!("{proxy}/v3")).send().await.unwrap().status(), 404);
    assert_eq!(client().get(format!("{proxy}/v2")).send().await.unwrap().status(), 200);
    assert_eq!(call(M::POST, &u("/config/rollback/99"), t, None).await.0, 404);

    // Export YAML, change nothing, import it back: same document.
    let yaml =
        client().get(u("/config?format=yaml")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(yaml.contains("name: v2"), "{yaml}");
    let (_, before) = call(M::GET, &u("/config"), t, None).await;
    let r = client()
        .put(u("/config"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/yaml")
        .body(yaml.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, after) = call(M::GET, &u("/config"), t, None).await;
    assert_eq!(before["document"], after["document"], "export/import round-trips");
    assert_eq!(after["version"], 4, "an import that changes nothing makes no new version");
    // An invalid import changes nothing.
    let r = client()
        .put(u("/config"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/yaml")
        .body("routes:\n  - name: x\n    service: nope\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(client().get(format!("{proxy}/v2")).send().await.unwrap().status(), 200);

    let (s, b) = call(M::GET, &u("/status"), Some(READ_TOKEN), None).await;
    assert_eq!(s, 200);
    assert_eq!(b["node_id"], "test-node");
    assert_eq!(b["config"]["version"], 4);
    assert_eq!(b["store"]["kind"], "embedded");
    assert!(b["config"]["hash"].as_str().unwrap().len() == 64);
}

/// DB-less mode: the API reads but refuses writes.
#[tokio::test]
async fn admin_db_less_is_read_only() {
    let a = admin_gateway(false).await;
    let (s, b) = call(M::GET, &format!("{}/routes/home", a.url), Some(ADMIN_TOKEN), None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) =
        call(M::PUT, &format!("{}/routes/x", a.url), Some(ADMIN_TOKEN), Some(json!({"service": "echo"}))).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("read_only")));
}

/// The OpenAPI document is 3.1 and every operation it lists is served (no drift).
#[tokio::test]
async fn openapi_matches_the_router() {
    let a = admin_gateway(true).await;
    let (s, doc) = call(M::GET, &format!("{}/openapi.json", a.url), None, None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 18);
    for (path, ops) in paths {
        for (method, _) in ops.as_object().unwrap() {
            let concrete = path.replace("{id}", "zz-none").replace("{version}", "999");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (m == reqwest::Method::POST || m == reqwest::Method::PUT).then(|| json!({}));
            let (s, b) = call(m.clone(), &format!("{}{concrete}", a.url), Some(READ_TOKEN), body).await;
            assert!(b["message"] != "endpoint not found", "{method} {path} is documented but not served ({s})");
        }
    }
}

/// kill -9 while writing: every acknowledged write is there after a restart and the store
/// opens cleanly.
#[tokio::test]
async fn embedded_store_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    crate::binary::write(&seed, &seed_yaml("127.0.0.1:0"));
    let data = dir.path().join("data");
    let store = format!("embedded:{}", data.display());
    let mut acked: Vec<String> = Vec::new();
    for round in 0..2 {
        let (mut p, _) =
            crate::binary::Proc::start_args(&["--store", &store, "--config", seed.to_str().unwrap()], &[]).await;
        let admin = p.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
        // Everything acknowledged before is there.
        let (s, b) = call(M::GET, &format!("http://{admin}/services?size=1000"), Some(ADMIN_TOKEN), None).await;
        assert_eq!(s, 200);
        let names: Vec<&str> = b["data"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
        for n in &acked {
            assert!(names.contains(&n.as_str()), "round {round}: acknowledged {n} lost");
        }
        // Writes in flight when the process is killed.
        let url = format!("http://{admin}");
        let writer = tokio::spawn(async move {
            let mut ok = Vec::new();
            for i in 0..1000 {
                let name = format!("svc-{round}-{i}");
                let r = client()
                    .put(format!("{url}/services/{name}"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({"type": "echo"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => ok.push(name),
                    _ => break,
                }
            }
            ok
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        p.child.start_kill().unwrap(); // SIGKILL
        let _ = p.child.wait().await;
        let done = writer.await.unwrap();
        assert!(done.len() > 3, "some writes were acknowledged before the kill: {}", done.len());
        acked.extend(done);
    }
    println!("kill -9 test: {} acknowledged writes survived two kills", acked.len());
}

/// Two gateway processes on the real PostgreSQL: a route created through node A is served by
/// node B within one second; both appear in the cluster status.
#[tokio::test]
async fn postgres_two_nodes() {
    let db = format!("gatehouse_it_{}_{}", std::process::id(), Instant::now().elapsed().as_nanos() % 1_000_000);
    let (c, conn) =
        tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", tokio_postgres::NoTls)
            .await
            .or(tokio_postgres::connect("host=127.0.0.1 port=5432 dbname=test", tokio_postgres::NoTls).await)
            .expect("PostgreSQL on 127.0.0.1:5432 (database test)");
    tokio::spawn(conn);
    c.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let (_dir, [(a, _, admin_a), (mut b, proxy_b, admin_b)]) = two_store_nodes(&url, &seed_yaml("127.0.0.1:0")).await;
    assert_eq!(client().get(format!("http://{proxy_b}/fresh")).send().await.unwrap().status(), 404);

    let t0 = Instant::now();
    let (s, body) = call(
        M::PUT,
        &format!("http://{admin_a}/routes/fresh"),
        Some(ADMIN_TOKEN),
        Some(json!({"service": "echo", "paths": ["/fresh"]})),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let mut took = None;
    while t0.elapsed() < Duration::from_secs(3) {
        if client().get(format!("http://{proxy_b}/fresh")).send().await.unwrap().status() == 200 {
            took = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = took.expect("node B never served the route");
    println!("postgres: route written on node A served by node B after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Node B applied the one-route change incrementally too.
    let applied = b.json_line("configuration changed by another node").await;
    assert_eq!(applied["incremental"], true, "{applied}");

    // Cluster status: both nodes, both on the new version.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, st) = call(M::GET, &format!("http://{admin_b}/status"), Some(READ_TOKEN), None).await;
    assert_eq!(s, 200);
    assert_eq!(st["store"]["kind"], "postgres");
    let nodes = st["cluster"]["nodes"].as_array().unwrap();
    let ids: Vec<&str> = nodes.iter().filter_map(|n| n["node_id"].as_str()).collect();
    assert!(ids.contains(&"node-a") && ids.contains(&"node-b"), "{st}");
    assert!(nodes.iter().all(|n| n["config_version"] == st["config"]["version"]), "{st}");
    drop(a);
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}

/// schemathesis (property-based testing from the OpenAPI document) runs clean against a real
/// gateway process with an embedded store, with every check: no 5xx, responses (statuses,
/// headers, bodies) match the document, requests the document calls invalid are refused, and
/// requests it calls valid are not refused (`positive_data_acceptance`; for writes carrying a
/// configuration, which may break rules of the configuration as a whole that no schema can
/// state, the `stated_rules_hold` check of gateway/tests/python/admin_schemathesis_hooks.py
/// still fails a refusal for a rule of the request's own fields). Bounded: 10 examples per
/// operation, the coverage phase skipped for the three largest bodies
/// (gateway/tests/python/admin_schemathesis.toml); about 25 s.
#[tokio::test]
async fn schemathesis_runs_clean() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    crate::binary::write(&seed, &seed_yaml("127.0.0.1:0"));
    let store = format!("embedded:{}", dir.path().join("data").display());
    let (mut p, _) =
        crate::binary::Proc::start_args(&["--store", &store, "--config", seed.to_str().unwrap()], &[]).await;
    let admin = p.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    let python = format!("{}/tests/python", env!("CARGO_MANIFEST_DIR"));
    let t0 = Instant::now();
    let out = tokio::process::Command::new("st")
        .args(["--config-file", &format!("{python}/admin_schemathesis.toml")])
        .args(["run", &format!("http://{admin}/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--checks", "all", "--max-examples", "10", "--request-timeout", "10"])
        .args(["--phases", "examples,coverage,fuzzing", "--no-shrink"])
        // Reproducible: the same requests on every run (a failure names them, and a rerun
        // shows it again). SCHEMATHESIS_SEED=<n> explores other ones.
        .args(["--seed", &std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261204".into())])
        .env("SCHEMATHESIS_HOOKS", "admin_schemathesis_hooks")
        .env("PYTHONPATH", &python)
        .env("NO_COLOR", "1")
        // schemathesis keeps a cache in its working directory: not in the repository.
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis (`st`) must be installed: pip install -r gateway/tests/python/requirements.txt");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary: String =
        text.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    println!("{summary}\nschemathesis took {:?}", t0.elapsed());
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("generated") && !text.contains("ST901"), "{text}");
}

/// A TCP relay to PostgreSQL that the test can cut (close everything), black-hole (keep every
/// connection open and accept new ones, but forward nothing either way: a database that stopped
/// answering) and restore.
struct Relay {
    addr: std::net::SocketAddr,
    forwarding: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// A relay on `addr` (an ephemeral port when `None`) that forwards.
    async fn start(addr: Option<std::net::SocketAddr>) -> Relay {
        Self::start_with(addr, true).await
    }

    async fn start_with(addr: Option<std::net::SocketAddr>, forwarding: bool) -> Relay {
        let l = tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap())).await.unwrap();
        let addr = l.local_addr().unwrap();
        let fwd = Arc::new(std::sync::atomic::AtomicBool::new(forwarding));
        let f = fwd.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((down, _)) = l.accept().await else { break };
                conns.spawn(Self::pump(down, f.clone()));
            }
        });
        Relay { addr, forwarding: fwd, task }
    }

    /// One relayed connection. Bytes that arrive while black-holed are dropped (and the
    /// connection is closed once forwarding resumes: its byte stream has a hole).
    async fn pump(mut down: tokio::net::TcpStream, fwd: Arc<std::sync::atomic::AtomicBool>) {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut up = if fwd.load(SeqCst) { tokio::net::TcpStream::connect("127.0.0.1:5432").await.ok() } else { None };
        let mut tainted = up.is_none();
        let (mut b1, mut b2) = (vec![0u8; 16384], vec![0u8; 16384]);
        loop {
            if tainted && fwd.load(SeqCst) {
                return;
            }
            tokio::select! {
                r = down.read(&mut b1) => {
                    let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                    match (&mut up, fwd.load(SeqCst) && !tainted) {
                        (Some(u), true) => if u.write_all(&b1[..n]).await.is_err() { return },
                        _ => tainted = true,
                    }
                }
                r = async { match &mut up { Some(u) => u.read(&mut b2).await, None => std::future::pending().await } } => {
                    let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                    if fwd.load(SeqCst) && !tainted {
                        if down.write_all(&b2[..n]).await.is_err() { return }
                    } else {
                        tainted = true;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// Stop forwarding: connections stay open, nothing gets through.
    fn black_hole(&self) {
        self.forwarding.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forward again (connections that lost bytes are closed; new ones go through).
    fn forward(&self) {
        self.forwarding.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Close the listener and every relayed connection.
    fn cut(self) -> std::net::SocketAddr {
        self.task.abort();
        self.addr
    }
}

/// A node that loses the database keeps serving its last good configuration, says so in
/// /status, and catches up by itself when the database is back.
#[tokio::test]
async fn postgres_outage_keeps_serving() {
    let db = format!("gatehouse_out_{}", std::process::id());
    let (c, conn) =
        tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (database test)");
    tokio::spawn(conn);
    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    c.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    crate::binary::write(&seed, &seed_yaml("127.0.0.1:0"));
    let direct = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let relay = Relay::start(None).await;
    let via_relay = format!("postgres://postgres@{}/{db}", relay.addr);
    let (mut a, _) = crate::binary::Proc::start_args(
        &["--store", &direct, "--config", seed.to_str().unwrap()],
        &[("GATEHOUSE_NODE_ID", "a")],
    )
    .await;
    let (mut b, proxy_b) =
        crate::binary::Proc::start_args(&["--store", &via_relay], &[("GATEHOUSE_NODE_ID", "b")]).await;
    let admin_a = a.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    let admin_b = b.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();

    // Cut B from the database; change the configuration through A.
    let relay_addr = relay.cut();
    let (s, _) = call(
        M::PUT,
        &format!("http://{admin_a}/routes/later"),
        Some(ADMIN_TOKEN),
        Some(json!({"service": "echo", "paths": ["/later"]})),
    )
    .await;
    assert_eq!(s, 201);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(client().get(format!("http://{proxy_b}/home")).send().await.unwrap().status(), 200, "B keeps serving");
    assert_eq!(client().get(format!("http://{proxy_b}/later")).send().await.unwrap().status(), 404);
    let (_, st) = call(M::GET, &format!("http://{admin_b}/status"), Some(READ_TOKEN), None).await;
    assert_eq!(st["store"]["reachable"], false, "{st}");

    // The database is back: B catches up by itself.
    let _relay = Relay::start(Some(relay_addr)).await;
    let t = Instant::now();
    loop {
        if client().get(format!("http://{proxy_b}/later")).send().await.unwrap().status() == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "B did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, st) = call(M::GET, &format!("http://{admin_b}/status"), Some(READ_TOKEN), None).await;
    assert_eq!(st["store"]["reachable"], true, "{st}");
    println!("postgres outage: B caught up {:?} after the database came back", t.elapsed());
    drop(a);
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}

/// The Admin API over mutual TLS: no client certificate (or one from another CA) fails the
/// handshake; a trusted certificate plus a token gets through.
#[tokio::test]
async fn admin_over_mutual_tls() {
    let ca = gw_test_util::TestCa::new("admin-ca");
    let other = gw_test_util::TestCa::new("other-ca");
    let dir = tempfile::tempdir().unwrap();
    let srv = ca.server(&["admin.test"]);
    let (cert, key, ca_file) = (dir.path().join("a.crt"), dir.path().join("a.key"), dir.path().join("ca.pem"));
    std::fs::write(&cert, &srv.cert_pem).unwrap();
    std::fs::write(&key, &srv.key_pem).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let tls = gw_config::model::AdminTls { cert_file: cert, key_file: key, client_ca_file: Some(ca_file) };
    let yaml = seed_yaml("127.0.0.1:0");
    let gw = TestGateway::start(&yaml, &[]).await;
    let doc = serde_json::to_value(gw_config::parse_yaml(&yaml, "seed", Default::default()).unwrap()).unwrap();
    let state = gw_admin::AdminState::new(gw.gw.clone(), None, doc, 0, "n".into());
    let (addr, _task) = gw_admin::serve_tls("127.0.0.1:0".parse().unwrap(), state, &tls).await.unwrap();
    let client_with = |id: Option<&gw_test_util::TestCert>| {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .resolve("admin.test", addr);
        if let Some(c) = id {
            b = b.identity(reqwest::Identity::from_pem(format!("{}{}", c.cert_pem, c.key_pem).as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let url = format!("https://admin.test:{}/status", addr.port());
    assert!(client_with(None).get(&url).bearer_auth(ADMIN_TOKEN).send().await.is_err(), "no client certificate");
    assert!(
        client_with(Some(&other.client("ops"))).get(&url).bearer_auth(ADMIN_TOKEN).send().await.is_err(),
        "a certificate from another CA"
    );
    let good = client_with(Some(&ca.client("ops")));
    assert_eq!(good.get(&url).send().await.unwrap().status(), 401, "the token is still required");
    let r = good.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The embedded store keeps the last `KEEP_VERSIONS` versions (and the whole-document version
/// the oldest of them is rebuilt from): the file stops growing. A version that changes one
/// route is stored as a patch of the one before; every kept version reads back exactly.
#[tokio::test]
async fn embedded_store_patches_and_keeps_the_last_versions() {
    use gw_admin::store::{ConfigStore, EmbeddedStore, KEEP_VERSIONS, MAX_PATCH_DEPTH};
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let mut routes: Vec<Value> =
        (0..2000).map(|i| json!({"name": format!("r{i}"), "service": "up", "paths": [format!("/r{i}")]})).collect();
    let total = KEEP_VERSIONS + 2 * u64::from(MAX_PATCH_DEPTH) + 7;
    let mut docs = Vec::new();
    for i in 0..total {
        let k = (i as usize * 37) % routes.len();
        routes[k]["paths"] = json!([format!("/changed/{i}")]);
        let doc = json!({"routes": routes}).to_string();
        let v = s.commit(doc.clone(), format!("c{i}")).await.unwrap();
        assert_eq!(v.version, i + 1);
        docs.push(doc);
    }
    let doc_len = docs[0].len() as u64;
    let latest = s.latest().await.unwrap().unwrap();
    assert_eq!((latest.version, &latest.document), (total, &docs[total as usize - 1]));
    let h = s.history(1000).await.unwrap();
    let kept = h.len() as u64;
    assert!((KEEP_VERSIONS..=KEEP_VERSIONS + u64::from(MAX_PATCH_DEPTH)).contains(&kept), "kept {kept}");
    assert_eq!(h[0].version, total);
    for m in &h {
        let v = s.get(m.version).await.unwrap().expect("a listed version reads back");
        assert_eq!(v.document, docs[m.version as usize - 1], "version {}", m.version);
        assert_eq!(v.hash, m.hash);
    }
    assert!(s.get(1).await.unwrap().is_none(), "the oldest versions are gone");
    // Whole documents only every MAX_PATCH_DEPTH versions: the file holds a few copies, not
    // one per kept version.
    drop(s);
    let size = std::fs::metadata(dir.path().join("gatehouse.redb")).unwrap().len();
    assert!(size < 20 * doc_len, "store file {size} bytes for a {doc_len}-byte document");
    // Reopened (nothing cached), the latest version still reads back and a new one patches it.
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(s.latest().await.unwrap().unwrap().document, docs[total as usize - 1]);
    routes[1]["paths"] = json!(["/after-reopen"]);
    let doc = json!({"routes": routes}).to_string();
    s.commit(doc.clone(), "after reopen".into()).await.unwrap();
    assert_eq!(s.get(total + 1).await.unwrap().unwrap().document, doc);
}

/// Two gateway processes (`node-a`, seeded with `seed`, and `node-b`) sharing the store at
/// `url`, each with its Admin API: the process, its proxy address and its Admin API address
/// (and the folder of the seed file, to keep while they run).
pub(crate) async fn two_store_nodes(
    url: &str,
    seed: &str,
) -> (tempfile::TempDir, [(crate::binary::Proc, std::net::SocketAddr, String); 2]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seed.yaml");
    crate::binary::write(&file, seed);
    let (mut a, proxy_a) = crate::binary::Proc::start_args(
        &["--store", url, "--config", file.to_str().unwrap()],
        &[("GATEHOUSE_NODE_ID", "node-a")],
    )
    .await;
    let (mut b, proxy_b) = crate::binary::Proc::start_args(&["--store", url], &[("GATEHOUSE_NODE_ID", "node-b")]).await;
    let admin_a = a.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    let admin_b = b.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    (dir, [(a, proxy_a, admin_a), (b, proxy_b, admin_b)])
}

/// A database of its own on the real PostgreSQL (127.0.0.1:5432), dropped by [`PgDb::drop_db`].
pub(crate) struct PgDb {
    pub(crate) c: tokio_postgres::Client,
    pub(crate) name: String,
}

impl PgDb {
    pub(crate) async fn create(prefix: &str) -> PgDb {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("gatehouse_{prefix}_{}_{n}", std::process::id());
        let (c, conn) =
            tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", tokio_postgres::NoTls)
                .await
                .expect("PostgreSQL on 127.0.0.1:5432 (database test)");
        tokio::spawn(conn);
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        c.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        PgDb { c, name }
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    fn url_via(&self, relay: std::net::SocketAddr) -> String {
        format!("postgres://postgres@{relay}/{}", self.name)
    }

    pub(crate) async fn drop_db(self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await;
    }
}

/// A free loopback port (bound, then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `ETag` of a response.
fn etag_of(r: &reqwest::Response) -> String {
    r.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// A request with optional precondition headers; status, ETag and JSON body.
async fn call_if(
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, String, Value) {
    let mut b = client().request(method, url).bearer_auth(ADMIN_TOKEN);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if let Some(body) = body {
        b = b.json(&body);
    }
    let r = b.send().await.expect("request");
    let (s, tag) = (r.status(), etag_of(&r));
    let text = r.text().await.unwrap_or_default();
    (s, tag, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Append `tag` to service `svc`'s tags by read-modify-write with `If-Match`, retrying on 412
/// (bounded). Returns whether the append was acknowledged and how many 412s it met.
async fn append_tag(admin: &str, svc: &str, tag: &str) -> (bool, u32) {
    let mut conflicts = 0;
    for _ in 0..200 {
        let (s, etag, mut e) = call_if(M::GET, &format!("http://{admin}/services/{svc}"), None, &[]).await;
        assert_eq!(s, 200, "{e}");
        assert!(!etag.is_empty(), "an entity read has an ETag");
        if e.get("tags").is_none() {
            e["tags"] = json!([]);
        }
        e["tags"].as_array_mut().unwrap().push(json!(tag));
        let (s, _, b) =
            call_if(M::PUT, &format!("http://{admin}/services/{svc}"), Some(e), &[("if-match", &etag)]).await;
        match s.as_u16() {
            200 => return (true, conflicts),
            412 => conflicts += 1,
            _ => panic!("append {tag}: {s} {b}"),
        }
    }
    (false, conflicts)
}

/// Two gateway processes on one PostgreSQL database, several concurrent writers on each:
/// creating distinct routes, replacing one shared route, and appending to one shared entity
/// by read-modify-write with `If-Match`. Every acknowledged write is in the final configuration
/// of both nodes, no write gets a 5xx, versions are gap-free (one per acknowledged change), and
/// `If-Match` with a stale `ETag` is refused with 412 across nodes. The nodes share one document
/// that names fixed listener, admin and status addresses; each node moves them with its own
/// overrides (flags on one, environment variables on the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_writers_on_two_nodes_lose_nothing() {
    let db = PgDb::create("cw").await;
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    // Fixed addresses in the shared document: two nodes on one host cannot both bind them.
    let (p_main, p_admin, p_status) = (free_port(), free_port(), free_port());
    let yaml = seed_yaml(&format!("127.0.0.1:{p_admin}"))
        .replace("address: 127.0.0.1:0", &format!("address: 127.0.0.1:{p_main}"))
        .replace("status_listener: \"off\"", &format!("status_listener: 127.0.0.1:{p_status}"))
        + "  - name: shared\n    service: echo\n    paths: [\"/shared/seed\"]\n";
    crate::binary::write(&seed, &yaml);
    let (mut a, proxy_a) = crate::binary::Proc::start_args(
        &[
            "--store",
            &url,
            "--config",
            seed.to_str().unwrap(),
            "--listen",
            "main=127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
        ],
        &[("GATEHOUSE_NODE_ID", "node-a")],
    )
    .await;
    let (mut b, proxy_b) = crate::binary::Proc::start_args(
        &["--store", &url],
        &[
            ("GATEHOUSE_NODE_ID", "node-b"),
            ("GATEHOUSE_LISTEN_MAIN", "127.0.0.1:0"),
            ("GATEHOUSE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("GATEHOUSE_STATUS_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    let admin_a = a.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    let admin_b = b.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    for (what, addr) in [("proxy a", proxy_a.port()), ("proxy b", proxy_b.port())] {
        assert!(addr != p_main && addr != 0, "{what} moved off the document's port");
    }
    assert!(admin_a != admin_b && !admin_a.ends_with(&format!(":{p_admin}")), "{admin_a} {admin_b}");
    for p in [&mut a, &mut b] {
        let status = p.json_line("status endpoint listening").await["addr"].as_str().unwrap().to_string();
        assert!(!status.ends_with(&format!(":{p_status}")), "status listener moved: {status}");
        assert_eq!(client().get(format!("http://{status}/health")).send().await.unwrap().status(), 200);
    }
    assert_eq!(client().get(format!("http://{proxy_b}/home")).send().await.unwrap().status(), 200);
    let (s, _) = call(
        M::PUT,
        &format!("http://{admin_a}/services/counter"),
        Some(ADMIN_TOKEN),
        Some(json!({"type": "echo", "tags": []})),
    )
    .await;
    assert_eq!(s, 201);
    let t0 = Instant::now();
    while call(M::GET, &format!("http://{admin_b}/services/counter"), Some(ADMIN_TOKEN), None).await.0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(5), "node B never saw the new service");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 2 nodes x 4 writers x 5 rounds: create a route, replace the shared route.
    let (writers, rounds) = (4, 5);
    let mut tasks = Vec::new();
    for (node, admin) in [("a", admin_a.clone()), ("b", admin_b.clone())] {
        for w in 0..writers {
            let admin = admin.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..rounds {
                    let name = format!("c-{node}-{w}-{i}");
                    let (s, body) = call(
                        M::POST,
                        &format!("http://{admin}/routes"),
                        Some(ADMIN_TOKEN),
                        Some(json!({"name": name, "service": "echo", "paths": [format!("/c/{node}/{w}/{i}")]})),
                    )
                    .await;
                    out.push((format!("create {name}"), s, body));
                    let path = format!("/shared/{node}-{w}-{i}");
                    let (s, body) = call(
                        M::PUT,
                        &format!("http://{admin}/routes/shared"),
                        Some(ADMIN_TOKEN),
                        Some(json!({"service": "echo", "paths": [path]})),
                    )
                    .await;
                    out.push((format!("shared {path}"), s, body));
                }
                out
            }));
        }
    }
    // At the same time, 2 x 2 writers append to one entity with If-Match (read-modify-write).
    let mut appenders = Vec::new();
    for (node, admin) in [("a", admin_a.clone()), ("b", admin_b.clone())] {
        for w in 0..2 {
            let admin = admin.clone();
            appenders.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..3 {
                    let tag = format!("t-{node}-{w}-{i}");
                    out.push((tag.clone(), append_tag(&admin, "counter", &tag).await));
                }
                out
            }));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    let failed: Vec<String> =
        results.iter().filter(|(_, s, _)| !s.is_success()).map(|(w, s, b)| format!("{w}: {s} {b}")).collect();
    let acked: Vec<&String> = results.iter().filter(|(_, s, _)| s.is_success()).map(|(w, _, _)| w).collect();
    let mut tags = Vec::new();
    let mut conflicts = 0;
    for t in appenders {
        for (tag, (ok, c)) in t.await.unwrap() {
            assert!(ok, "append {tag} never succeeded");
            tags.push(tag);
            conflicts += c;
        }
    }
    println!(
        "postgres: {} of {} writes acknowledged, {} If-Match appends with {conflicts} retries after 412",
        acked.len(),
        results.len(),
        tags.len()
    );
    assert!(failed.is_empty(), "{} writes refused:\n{}", failed.len(), failed.join("\n"));

    // Both nodes converge on the same version, which holds every acknowledged write.
    let store_latest = {
        let (_, h) = call(M::GET, &format!("http://{admin_a}/config/history?size=1"), Some(ADMIN_TOKEN), None).await;
        h["data"][0]["version"].as_u64().unwrap()
    };
    let t0 = Instant::now();
    let mut docs = Vec::new();
    for admin in [&admin_a, &admin_b] {
        loop {
            let (_, st) = call(M::GET, &format!("http://{admin}/status"), Some(READ_TOKEN), None).await;
            if st["config"]["version"].as_u64() == Some(store_latest) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{admin} did not reach version {store_latest}: {st}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, c) = call(M::GET, &format!("http://{admin}/config"), Some(ADMIN_TOKEN), None).await;
        docs.push(c["document"].clone());
    }
    assert_eq!(docs[0], docs[1], "both nodes run the same document");
    let routes: Vec<&str> = docs[0]["routes"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    for w in &acked {
        if let Some(name) = w.strip_prefix("create ") {
            assert!(routes.contains(&name), "acknowledged {name} lost; routes: {routes:?}");
        }
    }
    let shared_path = docs[0]["routes"].as_array().unwrap().iter().find(|r| r["name"] == "shared").unwrap()["paths"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(acked.contains(&&format!("shared {shared_path}")), "final shared route {shared_path} was acknowledged");
    let counter = docs[0]["services"].as_array().unwrap().iter().find(|s| s["name"] == "counter").unwrap();
    let have: Vec<&str> = counter["tags"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(!have.is_empty(), "{counter}");
    for t in &tags {
        assert!(have.contains(&t.as_str()), "acknowledged If-Match append {t} lost: {have:?}");
    }
    assert_eq!(have.len(), tags.len(), "each append applied once: {have:?}");
    // One version per acknowledged change (seed, counter, the writes, the appends): none lost,
    // none duplicated.
    let (_, h) = call(M::GET, &format!("http://{admin_b}/config/history?size=1000"), Some(ADMIN_TOKEN), None).await;
    let versions: Vec<u64> = h["data"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(versions.len(), 2 + acked.len() + tags.len(), "{versions:?}");
    assert!(versions.windows(2).all(|w| w[0] == w[1] + 1), "gap-free: {versions:?}");

    // If-Match across nodes: a tag read on A is stale once B changed the route.
    let (s, tag_a, e) = call_if(M::GET, &format!("http://{admin_a}/routes/shared"), None, &[]).await;
    assert_eq!(s, 200);
    let (s, tag_b, _) = call_if(
        M::PUT,
        &format!("http://{admin_b}/routes/shared"),
        Some(json!({"service": "echo", "paths": ["/shared/by-b"]})),
        &[("if-match", &tag_a)],
    )
    .await;
    assert_eq!(s, 200);
    assert!(!tag_b.is_empty() && tag_b != tag_a, "a write answers the new ETag");
    let (s, _, body) =
        call_if(M::PUT, &format!("http://{admin_a}/routes/shared"), Some(e.clone()), &[("if-match", &tag_a)]).await;
    assert_eq!(s, 412, "stale If-Match on the other node: {body}");
    assert_eq!(body["error"], "precondition_failed", "{body}");
    let (s, _, _) = call_if(M::DELETE, &format!("http://{admin_a}/routes/shared"), None, &[("if-match", &tag_a)]).await;
    assert_eq!(s, 412);
    let (s, _, _) = call_if(M::PUT, &format!("http://{admin_a}/routes/shared"), Some(e), &[("if-match", &tag_b)]).await;
    assert_eq!(s, 200, "the current ETag (from B) is accepted on A");
    drop(a);
    drop(b);
    db.drop_db().await;
}

/// One node (embedded store): entity and configuration reads carry an `ETag`; writes honour
/// `If-Match` and `If-None-Match` (412 on mismatch); concurrent read-modify-write appends with
/// `If-Match` lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etag_and_if_match_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    crate::binary::write(&seed, &seed_yaml("127.0.0.1:0"));
    let store = format!("embedded:{}", dir.path().join("data").display());
    let (mut p, _) =
        crate::binary::Proc::start_args(&["--store", &store, "--config", seed.to_str().unwrap()], &[]).await;
    let admin = p.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    let u = |x: &str| format!("http://{admin}{x}");

    let (s, tag, e) = call_if(M::GET, &u("/routes/home"), None, &[]).await;
    assert_eq!(s, 200);
    assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() > 10, "strong ETag: {tag:?}");
    // The ETag is the entity's content: a change elsewhere does not change it.
    assert_eq!(call(M::PUT, &u("/services/other"), Some(ADMIN_TOKEN), Some(json!({"type": "echo"}))).await.0, 201);
    let (_, tag2, _) = call_if(M::GET, &u("/routes/home"), None, &[]).await;
    assert_eq!(tag, tag2);
    for bad in ["\"nope\"", "W/\"nope\"", "nope"] {
        let (s, _, b) = call_if(M::PUT, &u("/routes/home"), Some(e.clone()), &[("if-match", bad)]).await;
        assert_eq!((s.as_u16(), b["error"].as_str()), (412, Some("precondition_failed")), "{bad}: {b}");
    }
    let (s, _, b) = call_if(M::PUT, &u("/routes/home"), Some(e.clone()), &[("if-none-match", "*")]).await;
    assert_eq!(s, 412, "If-None-Match: * means create only: {b}");
    let (s, _, _) =
        call_if(M::PUT, &u("/routes/nothing-yet"), Some(json!({"service": "echo"})), &[("if-match", "*")]).await;
    assert_eq!(s, 412, "If-Match: * needs an existing entity");
    let (s, _, _) = call_if(
        M::PUT,
        &u("/routes/new-one"),
        Some(json!({"service": "echo", "paths": ["/n"]})),
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(s, 201);
    // POST answers the new entity's ETag (the one a GET gives) and its Location.
    let r = client()
        .post(u("/routes"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "posted", "service": "echo", "paths": ["/p"], "tags": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/routes/posted");
    let posted = etag_of(&r);
    assert_eq!(call_if(M::GET, &u("/routes/posted"), None, &[]).await.1, posted);
    let mut changed = e.clone();
    changed["paths"] = json!(["/home", "/home2"]);
    let list = format!("\"x\", {tag}");
    let (s, new_tag, _) = call_if(M::PUT, &u("/routes/home"), Some(changed), &[("if-match", &list)]).await;
    assert_eq!(s, 200, "one of the listed tags matches");
    assert!(!new_tag.is_empty() && new_tag != tag);
    let (s, _, _) = call_if(M::DELETE, &u("/routes/home"), None, &[("if-match", &tag)]).await;
    assert_eq!(s, 412, "DELETE with a stale tag");
    assert_eq!(call_if(M::GET, &u("/routes/home"), None, &[]).await.0, 200);

    // The whole configuration: its ETag is the version's hash.
    let (s, ctag, c) = call_if(M::GET, &u("/config"), None, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(ctag, format!("\"{}\"", c["hash"].as_str().unwrap()));
    let mut doc = c["document"].clone();
    doc["services"].as_array_mut().unwrap().push(json!({"name": "via-import", "type": "echo"}));
    let (s, _, _) = call_if(M::PUT, &u("/config"), Some(doc.clone()), &[("if-match", "\"0000\"")]).await;
    assert_eq!(s, 412);
    let (s, ctag2, _) = call_if(M::PUT, &u("/config"), Some(doc), &[("if-match", &ctag)]).await;
    assert_eq!(s, 200);
    assert!(ctag2 != ctag && !ctag2.is_empty());
    let (s, _, _) = call_if(M::POST, &u("/config/rollback/1"), None, &[("if-match", &ctag)]).await;
    assert_eq!(s, 412, "rollback with a stale configuration tag");

    // Concurrent read-modify-write appends with If-Match on one node, and concurrent creates.
    assert_eq!(
        call(M::PUT, &u("/services/counter"), Some(ADMIN_TOKEN), Some(json!({"type": "echo", "tags": []}))).await.0,
        201
    );
    let (_, h) = call(M::GET, &u("/config/history?size=1"), Some(ADMIN_TOKEN), None).await;
    let first = h["data"][0]["version"].as_u64().unwrap();
    let mut creators = Vec::new();
    for w in 0..4 {
        let admin = admin.clone();
        creators.push(tokio::spawn(async move {
            for i in 0..5 {
                let name = format!("c{w}-{i}");
                let (s, b) = call(
                    M::POST,
                    &format!("http://{admin}/services"),
                    Some(ADMIN_TOKEN),
                    Some(json!({"name": name, "type": "echo"})),
                )
                .await;
                assert_eq!(s, 201, "{name}: {b}");
            }
        }));
    }
    let mut tasks = Vec::new();
    for w in 0..6 {
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut tags = Vec::new();
            for i in 0..4 {
                let t = format!("t{w}-{i}");
                let (ok, _) = append_tag(&admin, "counter", &t).await;
                assert!(ok, "{t}");
                tags.push(t);
            }
            tags
        }));
    }
    let mut want = Vec::new();
    for t in tasks {
        want.extend(t.await.unwrap());
    }
    let (_, _, e) = call_if(M::GET, &u("/services/counter"), None, &[]).await;
    let mut have: Vec<String> = e["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    have.sort();
    want.sort();
    assert_eq!(have, want, "every acknowledged append, once");
    for c in creators {
        c.await.unwrap();
    }
    let (_, b) = call(M::GET, &u("/services?size=1000"), Some(ADMIN_TOKEN), None).await;
    let names: Vec<&str> = b["data"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    for w in 0..4 {
        for i in 0..5 {
            assert!(names.contains(&format!("c{w}-{i}").as_str()), "c{w}-{i} lost");
        }
    }
    let (_, h) = call(M::GET, &u("/config/history?size=1"), Some(ADMIN_TOKEN), None).await;
    assert_eq!(h["data"][0]["version"].as_u64().unwrap() - first, (want.len() + 20) as u64, "one version per write");
}

/// A single-entity write that fails validation names the entity the client sent (by name),
/// not its position in the whole document: POST, PUT, and a DELETE that breaks a reference.
#[tokio::test]
async fn entity_errors_name_the_entity() {
    let a = admin_gateway(true).await;
    let t = Some(ADMIN_TOKEN);
    let u = |p: &str| format!("{}{p}", a.url);
    for i in 0..5 {
        let (s, _) = call(
            M::PUT,
            &u(&format!("/routes/r{i}")),
            t,
            Some(json!({"service": "echo", "paths": [format!("/r{i}")]})),
        )
        .await;
        assert_eq!(s, 201);
    }
    let (s, b) =
        call(M::POST, &u("/routes"), t, Some(json!({"name": "orders", "service": "echo", "paths": ["no-slash"]})))
            .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["errors"][0]["field"], "routes[orders].paths[0]", "{b}");
    assert!(b["message"].as_str().unwrap().starts_with("routes[orders].paths[0]: "), "{b}");
    let (s, b) = call(M::PUT, &u("/routes/r2"), t, Some(json!({"service": "ghost", "paths": ["/r2"]}))).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["errors"][0]["field"], "routes[r2].service", "{b}");
    let (s, b) = call(M::POST, &u("/services"), t, Some(json!({"name": "s2", "url": "not a url"}))).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["errors"][0]["field"].as_str().unwrap().starts_with("services[s2]."), "{b}");
    let (s, b) = call(
        M::POST,
        &u("/consumers"),
        t,
        Some(json!({"username": "c1", "credentials": [{"type": "key-auth", "key": "short"}]})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["errors"][0]["field"].as_str().unwrap().starts_with("consumers[c1].credentials[0]"), "{b}");
    // Deleting a service a route uses: the error names the route that breaks.
    assert_eq!(call(M::PUT, &u("/services/s3"), t, Some(json!({"type": "echo"}))).await.0, 201);
    assert_eq!(call(M::PUT, &u("/routes/uses-s3"), t, Some(json!({"service": "s3", "paths": ["/s3"]}))).await.0, 201);
    let (s, b) = call(M::DELETE, &u("/services/s3"), t, None).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["errors"][0]["field"], "routes[uses-s3].service", "{b}");
}

/// Every kind of entity reads back (GET) in a form that writes back (PUT) unchanged: nothing
/// that is not a secret is hidden (the JWT credential's `key` is an issuer id), secrets stay
/// hidden, and a PUT without them keeps the stored ones (the credentials still work).
#[tokio::test]
async fn every_entity_round_trips_get_to_put() {
    use base64::Engine;
    let a = admin_gateway(true).await;
    let t = Some(ADMIN_TOKEN);
    let u = |p: &str| format!("{}{p}", a.url);
    let proxy = a.gw.url("main");
    let ca = gw_test_util::TestCa::new("rt-ca");
    let cert = ca.server(&["rt.test"]);
    let hs_secret = "jwt-hs256-secret-0123456789abcdef";
    let hmac_secret = "hmac-secret-0123456789";
    for (path, body) in [
        ("/certificates/rt", json!({"cert": cert.cert_pem, "key": cert.key_pem})),
        ("/listeners/second", json!({"address": "127.0.0.1:0"})),
        ("/upstreams/pool", json!({"targets": [{"address": "127.0.0.1:9"}]})),
        ("/services/pooled", json!({"upstream": "pool"})),
        ("/routes/jwt-only", json!({"service": "echo", "paths": ["/jwt"]})),
        ("/routes/hmac-only", json!({"service": "echo", "paths": ["/hmac"]})),
        ("/plugins/jwt-on", json!({"plugin": "jwt", "route": "jwt-only"})),
        ("/plugins/hmac-on", json!({"plugin": "hmac-auth", "route": "hmac-only"})),
        (
            "/consumers/alice",
            json!({"groups": ["staff"], "credentials": [
                {"type": "key-auth", "id": "alice-key", "key": "alice-secret-key"},
                {"type": "basic-auth", "username": "alice", "password": "alice-password"},
                {"type": "jwt", "key": "issuer-alice", "algorithm": "HS256", "secret": hs_secret},
                {"type": "hmac-auth", "username": "alice-h", "secret": hmac_secret},
                {"type": "mtls", "subject_name": "alice.test"}
            ]}),
        ),
    ] {
        let (s, b) = call(M::PUT, &u(path), t, Some(body)).await;
        assert_eq!(s, 201, "{path}: {b}");
    }
    let (_, before) = call(M::GET, &u("/config"), t, None).await;
    let (s, alice) = call(M::GET, &u("/consumers/alice"), t, None).await;
    assert_eq!(s, 200);
    let creds = alice["credentials"].as_array().unwrap();
    assert_eq!(creds[2]["key"], "issuer-alice", "the JWT key is an issuer id, not a secret: {alice}");
    assert!(creds[2].get("secret").is_none() && creds[3].get("secret").is_none(), "secrets stay hidden: {alice}");
    assert!(creds[0].get("key").is_none() && creds[1].get("password").is_none(), "{alice}");
    let (_, c) = call(M::GET, &u("/certificates/rt"), t, None).await;
    assert!(c.get("key").is_none(), "private keys stay hidden: {c}");

    // GET -> PUT of every entity of every kind: accepted, and the document is unchanged.
    let mut n = 0;
    for kind in ["listeners", "certificates", "upstreams", "services", "routes", "plugins", "consumers"] {
        let (s, list) = call(M::GET, &u(&format!("/{kind}?size=1000")), t, None).await;
        assert_eq!(s, 200);
        for e in list["data"].as_array().unwrap() {
            let id = e[if kind == "consumers" { "username" } else { "name" }].as_str().unwrap().to_string();
            let (s, got) = call(M::GET, &u(&format!("/{kind}/{id}")), t, None).await;
            assert_eq!(s, 200);
            assert_eq!(&got, e, "list and read agree");
            let (s, b) = call(M::PUT, &u(&format!("/{kind}/{id}")), t, Some(got)).await;
            assert_eq!(s, 200, "PUT back {kind}/{id}: {b}");
            n += 1;
        }
    }
    assert!(n >= 10, "{n} entities");
    let (_, after) = call(M::GET, &u("/config"), t, None).await;
    assert_eq!(before["document"], after["document"], "GET -> PUT changes nothing");
    assert_eq!(before["version"], after["version"], "a write that changes nothing makes no new version");

    // The stored secrets survived: a JWT signed with the HS256 secret and a signed HMAC request.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": "issuer-alice", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(hs_secret.as_bytes()),
    )
    .unwrap();
    let r = client().get(format!("{proxy}/jwt")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200, "the JWT secret was kept");
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let sig = {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(hmac_secret.as_bytes()).unwrap();
        m.update(format!("date: {date}").as_bytes());
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    };
    let auth = format!("hmac username=\"alice-h\", algorithm=\"hmac-sha256\", headers=\"date\", signature=\"{sig}\"");
    let r =
        client().get(format!("{proxy}/hmac")).header("date", &date).header("authorization", auth).send().await.unwrap();
    assert_eq!(r.status(), 200, "the HMAC secret was kept");
    let r = client().get(format!("{proxy}/jwt")).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Sending a secret replaces it.
    let mut changed = alice.clone();
    changed["credentials"][2]["secret"] = json!("another-jwt-secret-0123456789abcdef");
    assert_eq!(call(M::PUT, &u("/consumers/alice"), t, Some(changed)).await.0, 200);
    let r = client().get(format!("{proxy}/jwt")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401, "the old JWT secret no longer works");
}

/// `GET /config` (JSON and YAML) puts back with `PUT /config` as it is, changing nothing.
#[tokio::test]
async fn config_export_puts_back_unchanged() {
    let a = admin_gateway(true).await;
    let t = Some(ADMIN_TOKEN);
    let u = |p: &str| format!("{}{p}", a.url);
    let (s, b) = call(
        M::PUT,
        &u("/consumers/bob"),
        t,
        Some(json!({"credentials": [{"type": "jwt", "key": "iss-bob", "algorithm": "HS256", "secret": "bob-jwt-secret-0123456789abcdefghij"}, {"type": "key-auth", "key": "bob-secret-key"}]})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        call(M::PUT, &u("/routes/extra"), t, Some(json!({"service": "echo", "paths": ["/extra"], "methods": ["GET"]})))
            .await
            .0,
        201
    );
    let (s, exported) = call(M::GET, &u("/config"), t, None).await;
    assert_eq!(s, 200);
    let (s, b) = call(M::PUT, &u("/config"), t, Some(exported.clone())).await;
    assert_eq!(s, 200, "GET /config JSON puts back as it is: {b}");
    let (_, again) = call(M::GET, &u("/config"), t, None).await;
    assert_eq!(again, exported, "same document, same version and hash");
    let yaml =
        client().get(u("/config?format=yaml")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().text().await.unwrap();
    let r = client()
        .put(u("/config"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, again) = call(M::GET, &u("/config"), t, None).await;
    assert_eq!(again, exported, "YAML round trip");
}

/// A database that stops answering (a relay that forwards nothing): `/status` answers at once
/// and reports the store unreachable; a write is refused with 503 within about 2 s; when the
/// database answers again, the node recovers by itself.
#[tokio::test]
async fn postgres_black_hole_bounds_status_and_writes() {
    let db = PgDb::create("bh").await;
    let relay = Relay::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    crate::binary::write(&seed, &seed_yaml("127.0.0.1:0"));
    let (mut p, _) = crate::binary::Proc::start_args(
        &["--store", &db.url_via(relay.addr), "--config", seed.to_str().unwrap()],
        &[("GATEHOUSE_NODE_ID", "bh")],
    )
    .await;
    let admin = p.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    let u = |x: &str| format!("http://{admin}{x}");
    assert_eq!(
        call(M::PUT, &u("/routes/before"), Some(ADMIN_TOKEN), Some(json!({"service": "echo", "paths": ["/b"]})))
            .await
            .0,
        201
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;

    relay.black_hole();
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    let unreachable = loop {
        let t = Instant::now();
        let (s, st) = call(M::GET, &u("/status"), Some(READ_TOKEN), None).await;
        assert_eq!(s, 200);
        worst = worst.max(t.elapsed());
        if st["store"]["reachable"] == false {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(8), "never reported unreachable: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let t = Instant::now();
    let (s, b) =
        call(M::PUT, &u("/routes/during"), Some(ADMIN_TOKEN), Some(json!({"service": "echo", "paths": ["/d"]}))).await;
    let write = t.elapsed();
    println!("black hole: /status at most {worst:?}, unreachable after {unreachable:?}, write refused after {write:?}");
    assert!(worst < Duration::from_millis(1000), "/status took {worst:?}");
    assert_eq!((s, b["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")), "{b}");
    assert!(write < Duration::from_millis(2500), "a write took {write:?}");
    let t = Instant::now();
    let (s, _) = call(M::GET, &u("/status"), Some(READ_TOKEN), None).await;
    assert!(s == 200 && t.elapsed() < Duration::from_millis(1000), "/status right after a refused write");

    relay.forward();
    let t0 = Instant::now();
    loop {
        let (s, b) =
            call(M::PUT, &u("/routes/after"), Some(ADMIN_TOKEN), Some(json!({"service": "echo", "paths": ["/a"]})))
                .await;
        if s.is_success() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "no recovery: {s} {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, st) = call(M::GET, &u("/status"), Some(READ_TOKEN), None).await;
    assert_eq!(st["store"]["reachable"], true, "{st}");
    drop(p);
    db.drop_db().await;
}

/// A node whose database is unreachable at start says where (host, port) and why, retries
/// with back-off (a line per retry), and comes up as soon as the database answers.
#[tokio::test]
async fn postgres_unreachable_at_start_retries_until_it_answers() {
    let db = PgDb::create("st").await;
    // Nothing listens on this port yet: connection refused.
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    crate::binary::write(&seed, &seed_yaml("127.0.0.1:0"));
    let mut p = crate::binary::Proc::spawn(&["--store", &db.url_via(addr), "--config", seed.to_str().unwrap()], &[]);
    let line = p.wait_for("config store unreachable", Duration::from_secs(10)).await;
    let v: Value = serde_json::from_str(&line).unwrap();
    let text = v.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "host and port: {line}");
    assert!(text.to_lowercase().contains("refused"), "the cause: {line}");
    assert_eq!(v["level"], "WARN", "{line}");
    assert!(v["retry_in_ms"].as_u64().is_some() && v["attempt"].as_u64().is_some(), "{line}");
    // A database that accepts connections but does not answer: the connect times out.
    let relay = Relay::start_with(Some(addr), false).await;
    let line = p.wait_for("timed out", Duration::from_secs(20)).await;
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(p.child.try_wait().unwrap().is_none(), "still running, retrying");
    relay.forward();
    p.wait_for("gatehouse started", Duration::from_secs(30)).await;
    let admin = p.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    assert_eq!(call(M::GET, &format!("http://{admin}/routes/home"), Some(ADMIN_TOKEN), None).await.0, 200);
    let retries = p.lines_so_far().iter().filter(|l| l.contains("config store unreachable")).count();
    println!("unreachable at start: {retries} retries logged before the database answered");
    assert!(retries >= 2, "{retries}");
    drop(p);
    db.drop_db().await;
}

/// The Admin API on a non-loopback address without TLS logs a warning (tokens would travel in
/// clear); on loopback it does not.
#[tokio::test]
async fn admin_on_non_loopback_without_tls_warns() {
    for (listen, warns) in [("0.0.0.0:0", true), ("127.0.0.1:0", false)] {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed.yaml");
        crate::binary::write(&seed, &seed_yaml(listen));
        let store = format!("embedded:{}", dir.path().join("data").display());
        let (mut p, _) =
            crate::binary::Proc::start_args(&["--store", &store, "--config", seed.to_str().unwrap()], &[]).await;
        p.json_line("admin API listening").await;
        let found = p.lines_so_far().iter().find(|l| l.contains("without TLS")).cloned();
        match (found, warns) {
            (Some(l), true) => {
                let v: Value = serde_json::from_str(&l).unwrap();
                assert_eq!(v["level"], "WARN", "{l}");
            }
            (None, false) => {}
            (f, _) => panic!("{listen}: warning {f:?}, expected {warns}"),
        }
        // DB-less mode too (the file is the configuration).
        let file = dir.path().join("gw.yaml");
        crate::binary::write(&file, &seed_yaml(listen));
        let (mut p, _) = crate::binary::Proc::start(&file).await;
        let found = p.lines_so_far().iter().any(|l| l.contains("without TLS"));
        assert_eq!(found, warns, "DB-less {listen}");
    }
}

/// DB-less mode: two processes run one file that names fixed addresses, each moving them with
/// its own overrides; a reload of the file keeps them moved. A listener override that names no
/// listener, or an address that is not one, stops the start with a clear error.
#[tokio::test]
async fn address_overrides_in_db_less_mode() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    let (p_main, p_admin, p_status) = (free_port(), free_port(), free_port());
    let yaml = |extra: &str| {
        seed_yaml(&format!("127.0.0.1:{p_admin}"))
            .replace("address: 127.0.0.1:0", &format!("address: 127.0.0.1:{p_main}"))
            .replace("status_listener: \"off\"", &format!("status_listener: 127.0.0.1:{p_status}"))
            + extra
    };
    crate::binary::write(&file, &yaml(""));
    let f = file.to_str().unwrap();
    let (mut one, proxy_one) = crate::binary::Proc::start_args(
        &["--config", f, "--listen", "main=127.0.0.1:0", "--admin-listen", "off", "--status-listen", "off"],
        &[],
    )
    .await;
    let (mut two, proxy_two) = crate::binary::Proc::start_args(
        &["--config", f],
        &[
            ("GATEHOUSE_LISTEN_MAIN", "127.0.0.1:0"),
            ("GATEHOUSE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("GATEHOUSE_STATUS_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    assert!(proxy_one.port() != p_main && proxy_two.port() != p_main && proxy_one != proxy_two);
    let admin_two = two.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    assert!(!admin_two.ends_with(&format!(":{p_admin}")), "{admin_two}");
    assert!(!one.lines_so_far().iter().any(|l| l.contains("admin API listening")), "--admin-listen off");
    for proxy in [proxy_one, proxy_two] {
        assert_eq!(client().get(format!("http://{proxy}/home")).send().await.unwrap().status(), 200);
    }
    // A reload keeps this node's addresses.
    crate::binary::write(&file, &yaml("  - name: later\n    service: echo\n    paths: [\"/later\"]\n"));
    for proxy in [proxy_one, proxy_two] {
        let t0 = Instant::now();
        while client().get(format!("http://{proxy}/later")).send().await.unwrap().status() != 200 {
            assert!(t0.elapsed() < Duration::from_secs(10), "{proxy} did not reload");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for p in [&mut one, &mut two] {
        assert!(!p.lines_so_far().iter().any(|l| l.contains("configuration rejected")), "{:?}", p.lines_so_far());
    }

    for (args, env, want) in [
        (vec!["--listen", "mian=127.0.0.1:0"], vec![], "no listener named \"mian\""),
        (vec!["--listen", "main"], vec![], "NAME=ADDR"),
        (vec!["--admin-listen", "localhost"], vec![], "--admin-listen"),
        (vec![], vec![("GATEHOUSE_LISTEN_NOPE", "127.0.0.1:0")], "GATEHOUSE_LISTEN_NOPE"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["run", "--config", f])
            .args(&args)
            .envs(env)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
    }
}

/// The PostgreSQL store's write transaction is a lock across connections (nodes): a second
/// writer waits until the first commits and then builds on its version; waiting is bounded
/// (an error after about `STORE_TIMEOUT`, never a hang); a writer that goes away mid-write
/// (dropped) releases the lock at once; and the version insert is a compare-and-swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_writes_are_serialized_across_connections() {
    use gw_admin::store::{ConfigStore, PgStore, STORE_TIMEOUT, StoreError};
    let db = PgDb::create("lock").await;
    let s1 = PgStore::connect(&db.url(), Duration::from_secs(5)).await.unwrap();
    let s2 = PgStore::connect(&db.url(), Duration::from_secs(5)).await.unwrap();
    let t1 = s1.begin().await.unwrap();
    assert_eq!(t1.base().0, 0);
    let waiter = {
        let s2 = s2.clone();
        tokio::spawn(async move {
            let t2 = s2.begin().await.unwrap();
            let base = t2.base().0;
            let v = t2.commit("{\"n\":2}".into(), "h2".into(), "second".into()).await.unwrap();
            (base, v.version)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the second writer waits for the first");
    let v1 = t1.commit("{\"n\":1}".into(), "h1".into(), "first".into()).await.unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(waiter.await.unwrap(), (1, 2), "the second writer built on the first one's version");

    // Waiting for a writer that holds the lock is bounded.
    let t3 = s1.begin().await.unwrap();
    let t = Instant::now();
    let e = s2.begin().await.err().expect("the lock is held");
    assert!(t.elapsed() < STORE_TIMEOUT + Duration::from_millis(500), "{:?}", t.elapsed());
    assert!(matches!(e, StoreError::Io(_)), "{e}");
    // A writer that goes away releases it.
    drop(t3);
    let t = Instant::now();
    let t4 = s2.begin().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(t4.base().0, 2);
    t4.abort().await;

    // Compare-and-swap: an insert of an existing version is a conflict, not a second version 3.
    let t5 = s1.begin().await.unwrap();
    let direct = {
        let (c, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port=5432 user=postgres dbname={}", db.name),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        c
    };
    // A writer that ignores the lock takes version 3 first.
    direct.batch_execute("INSERT INTO gatehouse_config VALUES (3, '{}', 'x', 0, 'rogue')").await.unwrap();
    let e = t5.commit("{\"n\":3}".into(), "h3".into(), "third".into()).await.expect_err("version 3 exists");
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    assert_eq!(s2.latest().await.unwrap().unwrap().comment, "rogue");
    drop((s1, s2));
    db.drop_db().await;
}
