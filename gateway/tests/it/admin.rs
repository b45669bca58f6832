//! Admin API and configuration stores, over real sockets: every endpoint with its errors, the
//! embedded store (including kill -9 during writes), PostgreSQL with two gateway processes, and
//! the OpenAPI document.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const ADMIN_TOKEN: &str = "admin-token-0123456789";
const READ_TOKEN: &str = "reader-token-0123456789";

fn sha(s: &str) -> String {
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
    assert_eq!(b["errors"][0]["field"].as_str(), Some("routes[3].paths[0]"), "{b}");
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
    assert_eq!(after["version"], 5);
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
    assert_eq!(b["config"]["version"], 5);
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
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    crate::binary::write(&seed, &seed_yaml("127.0.0.1:0"));
    let (mut a, _) = crate::binary::Proc::start_args(
        &["--store", &url, "--config", seed.to_str().unwrap()],
        &[("GATEHOUSE_NODE_ID", "node-a")],
    )
    .await;
    let (mut b, proxy_b) =
        crate::binary::Proc::start_args(&["--store", &url], &[("GATEHOUSE_NODE_ID", "node-b")]).await;
    let admin_a = a.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    let admin_b = b.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
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
/// gateway process with an embedded store: no 5xx, responses match the document.
#[tokio::test]
async fn schemathesis_runs_clean() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    crate::binary::write(&seed, &seed_yaml("127.0.0.1:0"));
    let store = format!("embedded:{}", dir.path().join("data").display());
    let (mut p, _) =
        crate::binary::Proc::start_args(&["--store", &store, "--config", seed.to_str().unwrap()], &[]).await;
    let admin = p.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    let out = tokio::process::Command::new("st")
        .args(["run", &format!("http://{admin}/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--checks", "all", "--max-examples", "30", "--request-timeout", "10"])
        // Entities reference each other (a route names a service): a body can match the schema
        // and still be refused with 400, which this check would call a failure.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .env("NO_COLOR", "1")
        // schemathesis keeps a cache in its working directory: not in the repository.
        .current_dir(dir.path())
        .output()
        .await
        .expect("schemathesis (`st`) must be installed: pip install -r gateway/tests/python/requirements.txt");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary: String =
        text.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    println!("{summary}");
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
}

/// A TCP relay to PostgreSQL that the test can cut and restore.
struct Relay {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(addr: Option<std::net::SocketAddr>) -> Relay {
        let l = tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap())).await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut down, _)) = l.accept().await else { break };
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        });
        Relay { addr, task }
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
