//! Usage analytics and local quotas across restarts and nodes, with real `gatehouse` processes:
//! usage and quota counters survive a graceful restart (file mode with `gateway.usage.path`,
//! the embedded store, and `policy: redis` on the real Redis); two nodes on the real PostgreSQL
//! report one total equal to the requests sent; the CSV and JSON exports match the traffic;
//! refused requests (quota and rate-limit 429s) are counted as refused, not as usage, and a dead
//! upstream's 502s as upstream errors; the dashboard's usage panel on either node shows the
//! cluster's figures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::admin::{ADMIN_TOKEN, PgDb, free_port, sha};
use crate::binary::Proc;
use crate::support::*;

const ALICE: &str = "alice-key-0123456";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// An echo route `orders` behind key-auth and a monthly quota of `quota` per consumer.
fn config(gateway_extra: &str, policy: &str, quota: u64, quota_name: &str) -> String {
    format!(
        "gateway:\n  access_log: {{ enabled: false }}\n  shutdown_timeout: 5s\n  redis: {{ url: \"redis://127.0.0.1:6379/0\" }}\n{gateway_extra}  admin:\n    listen: 127.0.0.1:0\n    tokens:\n      - {{ name: ops, token_hash: \"{}\" }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: echo\n    type: echo\nroutes:\n  - name: orders\n    service: echo\n    paths: [\"/orders\"]\nplugins:\n  - plugin: key-auth\n  - plugin: quota\n    name: {quota_name}\n    config: {{ limit: {quota}, period: month, policy: {policy} }}\nconsumers:\n  - username: alice\n    credentials: [{{ type: key-auth, key: {ALICE} }}]\n",
        sha(ADMIN_TOKEN)
    )
}

/// A started process with its proxy, admin and status addresses.
struct Node {
    p: Proc,
    proxy: std::net::SocketAddr,
    admin: String,
    status: String,
}

async fn start(args: &[&str], env: &[(&str, &str)]) -> Node {
    let status = format!("127.0.0.1:{}", free_port());
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--status-listen", &status]);
    let (mut p, proxy) = Proc::start_args(&all, env).await;
    let admin = p.json_line("admin API listening").await["addr"].as_str().unwrap().to_string();
    Node { p, proxy, admin, status }
}

/// SIGTERM, and the process exits 0 (a graceful shutdown writes the last usage batch).
async fn stop(mut n: Node) {
    n.p.signal("-TERM");
    let exit = tokio::time::timeout(Duration::from_secs(15), n.p.child.wait()).await.expect("exits").unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// GET /orders with `key`; the statuses.
async fn send(proxy: std::net::SocketAddr, key: &str, n: usize) -> Vec<u16> {
    let c = client();
    let mut out = Vec::new();
    for i in 0..n {
        let r = c
            .post(format!("http://{proxy}/orders"))
            .header("x-api-key", key)
            .body(format!("payload-{i}"))
            .send()
            .await
            .unwrap();
        out.push(r.status().as_u16());
        let _ = r.bytes().await;
    }
    out
}

async fn admin_get(admin: &str, path: &str) -> (u16, String) {
    let r = client().get(format!("http://{admin}{path}")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Requests per (consumer, outcome) of a `/usage` page (or a JSON export).
fn totals(v: &Value) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for r in v["data"].as_array().unwrap_or_else(|| panic!("{v}")) {
        let k = (r["consumer"].as_str().unwrap().to_string(), r["outcome"].as_str().unwrap().to_string());
        *m.entry(k).or_default() += r["requests"].as_u64().unwrap();
    }
    m
}

fn expect(pairs: &[(&str, &str, u64)]) -> BTreeMap<(String, String), u64> {
    pairs.iter().map(|(c, o, n)| ((c.to_string(), o.to_string()), *n)).collect()
}

/// Node `admin`'s monthly usage, polled until it equals `want` (5 s at most): what it last
/// reported, and the store it named.
async fn wait_for_total(
    admin: &str,
    want: &BTreeMap<(String, String), u64>,
) -> (BTreeMap<(String, String), u64>, Value) {
    let t0 = Instant::now();
    loop {
        let (s, body) = admin_get(admin, "/usage?granularity=month").await;
        assert_eq!(s, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let seen = totals(&v);
        if seen == *want || t0.elapsed() > Duration::from_secs(5) {
            println!("usage: the cluster's traffic reported after {:?}", t0.elapsed());
            return (seen, v["store"].clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The daily CSV export of node `admin`: requests per (consumer, outcome), and the bytes in and
/// out of the served records.
async fn csv_totals(admin: &str) -> (BTreeMap<(String, String), u64>, (u64, u64)) {
    let r = client()
        .get(format!("http://{admin}/usage/export?granularity=day"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(r.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
    let csv = r.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("period,start,consumer,route,outcome,requests,bytes_in,bytes_out"));
    let mut from_csv = BTreeMap::new();
    let mut served = (0, 0);
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 8, "{l}");
        assert_eq!(f[3], "orders");
        *from_csv.entry((f[2].to_string(), f[4].to_string())).or_insert(0u64) += f[5].parse::<u64>().unwrap();
        if f[4] == "served" {
            served.0 += f[6].parse::<u64>().unwrap();
            served.1 += f[7].parse::<u64>().unwrap();
        }
    }
    (from_csv, served)
}

/// Restarted gracefully, a gateway keeps its usage figures and its local quota counters: a
/// monthly quota of 5 used 3 times before the restart allows 2 more after it, and the usage
/// report still shows the requests made before it, the refused one as refused. In file mode
/// with `gateway.usage.path` and with the embedded store; with `policy: redis` the counters
/// live in Redis and survive as well.
#[tokio::test]
async fn restart_keeps_usage_and_quota_state() {
    for variant in ["file", "embedded", "redis"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("gatehouse.yaml");
        let usage_dir = dir.path().join("usage");
        let (extra, policy) = match variant {
            "file" => (format!("  usage: {{ path: {} }}\n", usage_dir.display()), "local"),
            "embedded" => (String::new(), "local"),
            _ => (String::new(), "redis"),
        };
        crate::binary::write(&cfg, &config(&extra, policy, 5, &unique("quota")));
        let store = format!("embedded:{}", dir.path().join("data").display());
        let cfg_s = cfg.to_str().unwrap().to_string();
        let args: Vec<&str> =
            if variant == "embedded" { vec!["--store", &store, "--config", &cfg_s] } else { vec!["--config", &cfg_s] };

        let n = start(&args, &[]).await;
        assert_eq!(send(n.proxy, ALICE, 3).await, [200, 200, 200], "{variant}");
        assert_eq!(send(n.proxy, "wrong-key-000", 1).await, [401], "{variant}");
        stop(n).await;

        let n = start(&args, &[]).await;
        assert_eq!(
            send(n.proxy, ALICE, 3).await,
            [200, 200, 429],
            "{variant}: the quota kept its count across the restart"
        );
        if variant == "redis" {
            stop(n).await;
            continue;
        }
        // Usage: 5 served and 1 refused for alice (the 429 is not usage), 1 failed
        // authentication without a consumer; on the status listener and the Admin API.
        let (s, _, v) = get_json(&format!("http://{}/status/usage?consumer=alice", n.status)).await;
        assert_eq!(s, 200, "{variant}");
        let rows = v["usage"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{variant}: {v}");
        assert_eq!((rows[0]["requests"].as_u64(), rows[0]["refused"].as_u64()), (Some(5), Some(1)), "{variant}: {v}");
        assert!(rows[0]["bytes_in"].as_u64().unwrap() >= 5 * 9, "{variant}: request bodies counted: {v}");
        let (s, body) = admin_get(&n.admin, "/usage?granularity=month").await;
        assert_eq!(s, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            totals(&v),
            expect(&[("-", "auth_failed", 1), ("alice", "refused", 1), ("alice", "served", 5)]),
            "{variant}: {v}"
        );
        assert_eq!(v["store"], "embedded", "{variant}");
        stop(n).await;
    }
}

/// Two nodes on the real PostgreSQL report one figure: the sum of what each served, refused
/// and failed, equal to the requests sent, on either node, paged, and in the CSV and JSON
/// exports. Local quotas count per node and are restored from PostgreSQL after a restart.
#[tokio::test]
async fn two_nodes_on_postgres_report_one_total() {
    let db = PgDb::create("usage").await;
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    crate::binary::write(&seed, &config("  usage: { flush_interval: 200ms }\n", "local", 6, "per-node"));
    let a_args = ["--store", &url, "--config", seed.to_str().unwrap()];
    let a = start(&a_args, &[("GATEHOUSE_NODE_ID", "node-a")]).await;
    let b = start(&["--store", &url], &[("GATEHOUSE_NODE_ID", "node-b")]).await;

    // Node A: 8 requests, the quota of 6 refuses 2; node B: 5 served, 2 wrong keys.
    let sa = send(a.proxy, ALICE, 8).await;
    assert_eq!(sa, [200, 200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(send(b.proxy, ALICE, 5).await, [200; 5]);
    assert_eq!(send(b.proxy, "wrong-key-000", 2).await, [401, 401]);
    let want = expect(&[("-", "auth_failed", 2), ("alice", "refused", 2), ("alice", "served", 11)]);

    // Node B writes every 200 ms: within a few seconds node A reports both nodes' traffic.
    let (seen, store) = wait_for_total(&a.admin, &want).await;
    assert_eq!(seen, want, "one total for the cluster");
    assert_eq!(store, "postgres");
    // And it stays exact (nothing written twice).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, body) = admin_get(&b.admin, "/usage?granularity=day").await;
    assert_eq!(totals(&serde_json::from_str(&body).unwrap()), want, "node B reports the same figure");
    // The dashboard's usage panel on either node: the cluster's figures too.
    for node in [&a, &b] {
        let (s, body) = admin_get(&node.admin, "/dashboard/api/usage?period=month").await;
        assert_eq!(s, 200, "{body}");
        let p: Value = serde_json::from_str(&body).unwrap();
        let t = &p["totals"];
        assert_eq!(
            [&t["served"], &t["refused"], &t["auth_failed"], &t["upstream_error"], &t["requests"]],
            [11, 2, 2, 0, 15],
            "{p}"
        );
        assert_eq!(p["store"], "postgres");
        let alice = p["rows"].as_array().unwrap().iter().find(|r| r["consumer"] == "alice").cloned().unwrap();
        assert_eq!((alice["route"].as_str(), alice["served"].as_u64()), (Some("orders"), Some(11)), "{p}");
    }

    // Paging: one record per page, all of them.
    let mut offset = Some(0u64);
    let mut paged = Vec::new();
    while let Some(o) = offset {
        let (_, body) = admin_get(&a.admin, &format!("/usage?granularity=hour&size=1&offset={o}")).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["total"], 3, "{v}");
        paged.extend(v["data"].as_array().unwrap().clone());
        offset = v["next"].as_u64();
    }
    assert_eq!(totals(&serde_json::json!({ "data": paged })), want);
    // Filters.
    let (_, body) = admin_get(&a.admin, "/usage?consumer=alice&outcome=refused&route=orders").await;
    assert_eq!(totals(&serde_json::from_str(&body).unwrap()), expect(&[("alice", "refused", 2)]));
    let (s, body) = admin_get(&a.admin, "/usage?granularity=week").await;
    assert_eq!(s, 400, "{body}");
    let (s, _) = admin_get(&a.admin, "/usage?from=yesterday").await;
    assert_eq!(s, 400);

    // CSV export: the header, one line per record, the same totals.
    let (from_csv, (_, served_bytes_out)) = csv_totals(&b.admin).await;
    assert_eq!(from_csv, want);
    assert!(served_bytes_out > 0);
    let (s, body) = admin_get(&b.admin, "/usage/export?format=json&granularity=month").await;
    assert_eq!(s, 200);
    assert_eq!(totals(&serde_json::from_str(&body).unwrap()), want, "{body}");

    // Quota counters are kept per node in PostgreSQL; node A restarted still refuses.
    stop(a).await;
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port=5432 user=postgres dbname={}", db.name),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let rows = c.query("SELECT node_id, count FROM gatehouse_quota_counters ORDER BY node_id", &[]).await.unwrap();
    let counts: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(counts, [("node-a".to_string(), 6), ("node-b".to_string(), 5)]);
    drop(c);
    let a = start(&a_args, &[("GATEHOUSE_NODE_ID", "node-a")]).await;
    assert_eq!(send(a.proxy, ALICE, 1).await, [429], "node A's quota count was restored from PostgreSQL");
    assert_eq!(send(b.proxy, ALICE, 2).await, [200, 429], "node B counts its own");
    stop(a).await;
    stop(b).await;
    db.drop_db().await;
}

/// `kill -9` loses at most what was counted since the last batch: counts older than one flush
/// interval are in the embedded store after the crash, and the quota continues from them.
#[tokio::test]
async fn crash_loses_at_most_one_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gatehouse.yaml");
    crate::binary::write(&cfg, &config("  usage: { flush_interval: 200ms }\n", "local", 5, "crash"));
    let store = format!("embedded:{}", dir.path().join("data").display());
    let args = ["--store", &store, "--config", cfg.to_str().unwrap()];
    let mut n = start(&args, &[]).await;
    assert_eq!(send(n.proxy, ALICE, 3).await, [200, 200, 200]);
    // Three flush intervals later, the counts are durable.
    tokio::time::sleep(Duration::from_millis(600)).await;
    n.p.child.start_kill().unwrap(); // SIGKILL: no last batch
    let _ = n.p.child.wait().await;
    let n = start(&args, &[]).await;
    let (s, _, v) = get_json(&format!("http://{}/status/usage?consumer=alice", n.status)).await;
    assert_eq!(s, 200);
    assert_eq!(v["usage"][0]["requests"].as_u64(), Some(3), "{v}");
    assert_eq!(send(n.proxy, ALICE, 3).await, [200, 200, 429], "the quota continues from the stored count");
    stop(n).await;
}

/// Usage on the real Redis (`gateway.usage.store: redis`, a key prefix of its own): two nodes
/// in file mode report one total equal to the requests sent, on either node and in the CSV and
/// JSON exports; local quotas count per node (`GATEHOUSE_NODE_ID`) and a node restarted keeps
/// its quota count and the cluster's usage.
#[tokio::test]
async fn two_nodes_on_redis_report_one_total() {
    let prefix = unique("gh-usage-test");
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("  usage: {{ store: redis, key_prefix: \"{prefix}\", flush_interval: 200ms }}\n");
    let cfg = dir.path().join("gatehouse.yaml");
    crate::binary::write(&cfg, &config(&extra, "local", 6, &unique("per-node")));
    let args = ["--config", cfg.to_str().unwrap()];
    let a = start(&args, &[("GATEHOUSE_NODE_ID", "node-a")]).await;
    let b = start(&args, &[("GATEHOUSE_NODE_ID", "node-b")]).await;

    // Node A: 8 requests, the quota of 6 refuses 2; node B: 5 served, 2 wrong keys.
    assert_eq!(send(a.proxy, ALICE, 8).await, [200, 200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(send(b.proxy, ALICE, 5).await, [200; 5]);
    assert_eq!(send(b.proxy, "wrong-key-000", 2).await, [401, 401]);
    let want = expect(&[("-", "auth_failed", 2), ("alice", "refused", 2), ("alice", "served", 11)]);

    let (seen, store) = wait_for_total(&a.admin, &want).await;
    assert_eq!(seen, want, "one total for the cluster");
    assert_eq!(store, "redis");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, body) = admin_get(&b.admin, "/usage?granularity=minute").await;
    assert_eq!(totals(&serde_json::from_str(&body).unwrap()), want, "node B reports the same figure, per minute too");

    // The exports match the traffic: 11 bodies `payload-0` ... (9 bytes each) were served.
    let (from_csv, served) = csv_totals(&b.admin).await;
    assert_eq!(from_csv, want);
    assert_eq!(served.0, 11 * 9);
    assert!(served.1 > 0);
    let (s, body) = admin_get(&a.admin, "/usage/export?format=json&granularity=month").await;
    assert_eq!(s, 200);
    assert_eq!(totals(&serde_json::from_str(&body).unwrap()), want, "{body}");

    // Node A restarted gracefully: its quota count and the cluster's usage are kept in Redis.
    stop(a).await;
    let a = start(&args, &[("GATEHOUSE_NODE_ID", "node-a")]).await;
    assert_eq!(send(a.proxy, ALICE, 1).await, [429], "node A's quota count was restored from Redis");
    assert_eq!(send(b.proxy, ALICE, 2).await, [200, 429], "node B counts its own");
    stop(a).await;
    stop(b).await;
    let want = expect(&[("-", "auth_failed", 2), ("alice", "refused", 4), ("alice", "served", 12)]);
    // Both stopped: a third node (reading only) reports everything both wrote on the way out.
    let c = start(&args, &[("GATEHOUSE_NODE_ID", "node-c")]).await;
    let (_, body) = admin_get(&c.admin, "/usage?granularity=month").await;
    assert_eq!(totals(&serde_json::from_str(&body).unwrap()), want, "{body}");
    stop(c).await;

    // The figures are in Redis under the prefix (and are removed here).
    let scan = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "--scan", "--pattern", &format!("{{{prefix}}}:*")])
        .output()
        .expect("redis-cli");
    let keys: Vec<String> = String::from_utf8(scan.stdout).unwrap().lines().map(str::to_string).collect();
    for k in ["q:node-a", "q:node-b", "b:m", "b:h"] {
        assert!(keys.contains(&format!("{{{prefix}}}:{k}")), "{k} in {keys:?}");
    }
    let del =
        std::process::Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", "6379", "DEL"]).args(&keys).output();
    assert!(del.is_ok_and(|o| o.status.success()));
}

/// Outcomes through real sockets: a route whose upstream is down gives `upstream_error` rows
/// (the client got a 502 with the JSON error body), and the 429s of a `rate-limiting` plugin
/// give `refused` rows, apart from the served ones; per route, on `GET /usage` and in the CSV
/// export.
#[tokio::test]
async fn dead_upstream_and_rate_limit_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gatehouse.yaml");
    let yaml = format!(
        "gateway:\n  access_log: {{ enabled: false }}\n  admin:\n    listen: 127.0.0.1:0\n    tokens:\n      - {{ name: ops, token_hash: \"{}\" }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: echo\n    type: echo\n  - name: down\n    url: http://127.0.0.1:1\nroutes:\n  - name: dead\n    service: down\n    paths: [\"/dead\"]\n  - name: limited\n    service: echo\n    paths: [\"/limited\"]\nplugins:\n  - plugin: key-auth\n  - plugin: rate-limiting\n    route: limited\n    config: {{ hour: 2 }}\nconsumers:\n  - username: alice\n    credentials: [{{ type: key-auth, key: {ALICE} }}]\n",
        sha(ADMIN_TOKEN)
    );
    crate::binary::write(&cfg, &yaml);
    let n = start(&["--config", cfg.to_str().unwrap()], &[]).await;
    let c = client();
    for _ in 0..3 {
        let r = c.get(format!("http://{}/dead", n.proxy)).header("x-api-key", ALICE).send().await.unwrap();
        assert_eq!(r.status(), 502);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "upstream_connect_failed", "{v}");
    }
    let (mut served, mut refused) = (0u64, 0u64);
    for i in 0..5 {
        let r = c
            .post(format!("http://{}/limited", n.proxy))
            .header("x-api-key", ALICE)
            .body(format!("payload-{i}"))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => served += 1,
            429 => refused += 1,
            s => panic!("{s}"),
        }
    }
    assert!(refused >= 1, "2 an hour, at most 4 across an hour's boundary");
    let want: BTreeMap<(String, String), u64> = [
        (("dead".to_string(), "upstream_error".to_string()), 3),
        (("limited".to_string(), "served".to_string()), served),
        (("limited".to_string(), "refused".to_string()), refused),
    ]
    .into_iter()
    .collect();
    let by_route = |v: &Value| -> BTreeMap<(String, String), u64> {
        let mut m = BTreeMap::new();
        for r in v["data"].as_array().unwrap_or_else(|| panic!("{v}")) {
            assert_eq!(r["consumer"], "alice", "{r}");
            let k = (r["route"].as_str().unwrap().to_string(), r["outcome"].as_str().unwrap().to_string());
            *m.entry(k).or_default() += r["requests"].as_u64().unwrap();
        }
        m
    };
    let (s, body) = admin_get(&n.admin, "/usage?granularity=month").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(by_route(&serde_json::from_str(&body).unwrap()), want, "{body}");
    let (s, body) = admin_get(&n.admin, "/usage?outcome=upstream_error").await;
    assert_eq!(s, 200);
    assert_eq!(by_route(&serde_json::from_str(&body).unwrap()).values().sum::<u64>(), 3, "{body}");
    let (s, csv) = admin_get(&n.admin, "/usage/export?granularity=hour").await;
    assert_eq!(s, 200);
    let mut from_csv: BTreeMap<(String, String), u64> = BTreeMap::new();
    for l in csv.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        *from_csv.entry((f[3].to_string(), f[4].to_string())).or_default() += f[5].parse::<u64>().unwrap();
    }
    assert_eq!(from_csv, want, "{csv}");
    stop(n).await;
}
