//! Metrics, the access log and the status endpoints.

use std::time::Duration;

use crate::support::*;

/// /metrics counts requests by route, service and status class (never raw paths), and the
/// access log writes one JSON line per request with the documented fields.
#[tokio::test]
async fn metrics_and_access_log() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ target: {} }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: users-svc\n    url: http://{}\nroutes:\n  - name: users\n    service: users-svc\n    paths: [\"/users/{{id}}\"]\n",
        log.display(),
        up.authority()
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    for id in 0..5 {
        let r = client().get(format!("{}/users/{id}?token=secret", gw.url("main"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = client().get(format!("{}/nothing", gw.url("main"))).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let m = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
    assert!(
        m.contains("gatehouse_http_requests_total{route=\"users\",service=\"users-svc\",status_class=\"2xx\"} 5"),
        "{m}"
    );
    assert!(m.contains("gatehouse_http_no_route_total 1"), "{m}");
    assert!(m.contains("gatehouse_http_request_duration_seconds_count{route=\"users\",service=\"users-svc\"} 5"));
    assert!(m.contains("gatehouse_upstream_duration_seconds_count{route=\"users\",service=\"users-svc\"} 5"));
    assert!(m.contains("gatehouse_config_reloads_total{result=\"success\"} 1"));
    assert!(m.contains("gatehouse_downstream_connections_active"));
    assert!(!m.contains("/users/"), "raw paths must never become labels");

    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
        if lines.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 6, "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    for field in [
        "time",
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "route",
        "service",
        "upstream",
        "status",
        "bytes_sent",
        "latency_ms",
        "upstream_latency_ms",
    ] {
        assert!(v.get(field).is_some(), "access log lacks {field}: {v}");
    }
    assert_eq!(v["route"], "users");
    assert_eq!(v["service"], "users-svc");
    assert_eq!(v["status"], 200);
    assert_eq!(v["upstream"], up.authority().as_str());
    assert_eq!(v["path"], "/users/0");
    assert!(!lines.iter().any(|l| l.contains("secret")), "query strings (secrets) are not logged");
    let last: serde_json::Value = serde_json::from_str(&lines[5]).unwrap();
    assert_eq!(last["status"], 404);
    assert_eq!(last["error"], "no_route");
}

/// /health reports the configuration hash; /ready is 200 while serving.
#[tokio::test]
async fn health_and_ready() {
    let gw = gateway("services:\n  - name: s\n    type: echo\nroutes:\n  - name: r\n    service: s\n").await;
    let (s, _, v) = get_json(&format!("{}/health", gw.status_url())).await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["config_hash"].as_str().map(str::len), Some(64));
    let (s, _, _) = get_json(&format!("{}/ready", gw.status_url())).await;
    assert_eq!(s, 200);
}
