//! The plugin contract's phases: derived from what a plugin implements, explicit placement in
//! the access phase, the pre-routing phase, and the final (log) phase with the full error.
//! The plugins here are the test's own, added through `gw_proxy::Embedding`.

use std::sync::{Arc, Mutex};

use gw_core::{Ctx, ErrorKind, Flow, Hooks, LogEntry, Plugin, Reply, RequestHead, Result, Stage};
use http::StatusCode;

use crate::support::*;

fn service_and_route(up: &Upstream, extra: &str) -> String {
    base(&format!(
        "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/new\", \"/new/*\"]\n{extra}",
        up.authority()
    ))
}

/// Rewrites `/old/...` to `/new/...` before routing, answers `x-stop: 1` itself, and records
/// every path it saw (matched or not).
#[derive(Default)]
struct Rewrite {
    seen: Mutex<Vec<String>>,
}

#[gw_core::plugin]
impl Plugin for Rewrite {
    fn name(&self) -> &'static str {
        "test-rewrite"
    }

    fn priority(&self) -> i32 {
        0
    }

    async fn pre_route(&self, req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
        self.seen.lock().unwrap().push(req.path().to_string());
        if req.headers.contains_key("x-stop") {
            return Ok(Flow::Respond(Reply::error(StatusCode::IM_A_TEAPOT, "stopped", "stopped before routing")));
        }
        if let Some(rest) = req.path().strip_prefix("/old") {
            let new = format!("/new{rest}");
            req.set_path(&new).map_err(|e| gw_core::Error::new(ErrorKind::BadRequest, "path").with_cause(e))?;
        }
        Ok(Flow::Continue)
    }
}

/// The pre-routing phase sees every request, a 404 included, may change what routing sees, and
/// may answer before routing; a path it produces is checked like a client's.
#[tokio::test]
async fn pre_route_phase_runs_before_routing() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let plugin = Arc::new(Rewrite::default());
    assert_eq!(plugin.hooks(), Hooks::PRE_ROUTE, "phases are derived from the hooks implemented");
    let gw = TestGateway::start_with_plugins(&service_and_route(&up, ""), vec![plugin.clone()]).await;
    let url = gw.url("main");
    let (s, _, v) = get_json(&format!("{url}/old/x")).await;
    assert_eq!(s, 200);
    assert_eq!(v["path"], "/new/x", "routing and the upstream see the rewritten path");
    let (s, _, v) = get_json(&format!("{url}/nowhere")).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"], "no_route");
    let r = client().get(format!("{url}/new")).header("x-stop", "1").send().await.unwrap();
    assert_eq!(r.status(), 418);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "stopped");
    assert!(v["request_id"].is_string(), "a pre-route reply is sent like any plugin reply: {v}");
    assert_eq!(*plugin.seen.lock().unwrap(), ["/old/x", "/nowhere", "/new"]);
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 1, "only the routed request went upstream");
}

/// Answers in the access phase when `x-deny` is present, from the stage it is given (its
/// priority is the lowest possible: placement does not come from priority).
struct Deny(Stage);

#[gw_core::plugin]
impl Plugin for Deny {
    fn name(&self) -> &'static str {
        "test-deny"
    }

    fn priority(&self) -> i32 {
        i32::MIN
    }

    fn stage(&self) -> Stage {
        self.0
    }

    async fn access(&self, req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
        if req.headers.contains_key("x-deny") {
            return Ok(Flow::Respond(Reply::error(StatusCode::FORBIDDEN, "denied", "denied")));
        }
        Ok(Flow::Continue)
    }
}

/// `Stage::PreAuth` runs before authentication whatever the priority; `Stage::PostAuth` after.
#[tokio::test]
async fn access_stage_is_explicit() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let auth = "plugins:\n  - plugin: key-auth\n    route: r\nconsumers:\n  - username: u\n    credentials:\n      - { type: key-auth, id: k, key: the-secret-key }\n";
    for (stage, status) in [(Stage::PreAuth, 403), (Stage::PostAuth, 401)] {
        let gw = TestGateway::start_with_plugins(&service_and_route(&up, auth), vec![Arc::new(Deny(stage))]).await;
        let r = client().get(format!("{}/new", gw.url("main"))).header("x-deny", "1").send().await.unwrap();
        assert_eq!(r.status(), status, "{stage:?} without credentials");
        let r = client()
            .get(format!("{}/new", gw.url("main")))
            .header("x-deny", "1")
            .header("apikey", "the-secret-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{stage:?} with credentials");
    }
}

/// What the final phase saw: status, error code, and the full error's kind and context.
type Seen = (u16, Option<&'static str>, Option<(ErrorKind, String)>);

/// Records what the final phase saw.
#[derive(Default)]
struct Record {
    seen: Mutex<Vec<Seen>>,
}

#[gw_core::plugin]
impl Plugin for Record {
    fn name(&self) -> &'static str {
        "test-record"
    }

    fn priority(&self) -> i32 {
        0
    }

    fn log(&self, _cx: &Ctx, entry: &LogEntry<'_>) {
        let failure = entry.failure.map(|e| (e.kind(), e.context().to_string()));
        self.seen.lock().unwrap().push((entry.status, entry.error, failure));
    }
}

/// The final phase runs for every request, with the full error when it failed: a success, a
/// 404, an upstream that refuses connections.
#[tokio::test]
async fn final_phase_sees_the_full_error() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let plugin = Arc::new(Record::default());
    assert_eq!(plugin.hooks(), Hooks::LOG);
    let yaml = format!(
        "  - name: d\n    url: http://{dead_addr}\nroutes:\n  - name: r\n    service: s\n    paths: [\"/new\", \"/new/*\"]\n  - name: rd\n    service: d\n    paths: [\"/dead\"]\n"
    );
    let cfg = base(&format!("services:\n  - name: s\n    url: http://{}\n{yaml}", up.authority()));
    let gw = TestGateway::start_with_plugins(&cfg, vec![plugin.clone()]).await;
    let url = gw.url("main");
    assert_eq!(client().get(format!("{url}/new")).send().await.unwrap().status(), 200);
    assert_eq!(client().get(format!("{url}/nowhere")).send().await.unwrap().status(), 404);
    assert_eq!(client().get(format!("{url}/dead")).send().await.unwrap().status(), 502);
    // The log phase runs when the body ends, just after the client has read it.
    for _ in 0..100 {
        if plugin.seen.lock().unwrap().len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let seen = plugin.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], (200, None, None));
    assert_eq!(seen[1], (404, Some("no_route"), Some((ErrorKind::NoRoute, "no route matched".to_string()))));
    let (status, code, failure) = &seen[2];
    assert_eq!((*status, *code), (502, Some("upstream_connect_failed")), "{seen:?}");
    let (kind, context) = failure.as_ref().expect("the full error");
    assert_eq!(*kind, ErrorKind::ConnectFailed);
    assert!(context.contains(&dead_addr.to_string()), "the context names the target: {context}");
}
