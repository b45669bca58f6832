//! HTTP/2 rapid reset (CVE-2023-44487), paced so that every stream is accepted before its reset:
//! the per-connection limit on client resets answers with GOAWAY ENHANCE_YOUR_CALM and closes;
//! a normal client with a few cancels is not affected. Clients: python `h2`.

use std::time::Duration;

use tokio::process::Command;

use crate::support::*;

/// Run `h2_resets.py` against `addr`; its JSON summary.
async fn h2_client(addr: std::net::SocketAddr, mode: &str, count: usize, path: &str) -> serde_json::Value {
    let script = format!("{}/tests/python/h2_resets.py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new("python3")
            .arg(script)
            .args([addr.ip().to_string(), addr.port().to_string(), mode.into(), count.to_string(), path.into()])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("client finished")
    .expect("python3 with the h2 package (gateway/tests/python/requirements.txt)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A static route `/` and one with a 200 KB body `/big` (its DATA frames are being written
/// when the limit trips, so the GOAWAY has to wait for a frame boundary).
fn config(limits: &str) -> String {
    let big = "x".repeat(200_000);
    format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\n{limits}listeners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: st\n    type: static\n    response: {{ status: 200, body: ok }}\n  - name: big\n    type: static\n    response: {{ status: 200, body: {big} }}\nroutes:\n  - name: r\n    service: st\n    paths: [\"/\"]\n  - name: big\n    service: big\n    paths: [\"/big\"]\n"
    )
}

async fn metric(gw: &TestGateway, name: &str) -> f64 {
    let m = client().get(format!("{}/metrics", gw.status_url())).send().await.unwrap().text().await.unwrap();
    m.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// HEADERS + RST_STREAM, one pair per write, 2-5 ms apart: GOAWAY with ENHANCE_YOUR_CALM (0xb)
/// long before 2,000 streams; the connection is closed. With a higher configured limit the
/// GOAWAY comes later, after that many resets.
#[tokio::test]
async fn paced_rapid_reset_gets_goaway_enhance_your_calm() {
    let gw = TestGateway::start(&config(""), &[]).await;
    for path in ["/", "/big"] {
        let r = h2_client(gw.addr("main"), "paced", 2000, path).await;
        println!("default limit, {path}: {r}");
        assert_eq!(r["goaway"], 0xb, "GOAWAY ENHANCE_YOUR_CALM: {r}");
        let after = r["goaway_after"].as_u64().unwrap_or(u64::MAX);
        assert!((100..=400).contains(&after), "GOAWAY after {after} streams (default limit 200): {r}");
        assert_eq!(r["closed"], true, "the connection is closed after the GOAWAY: {r}");
    }
    assert_eq!(metric(&gw, "gatehouse_http2_reset_limited_connections_total").await, 2.0);

    let gw = TestGateway::start(&config("  limits: { http2_max_resets: 500 }\n"), &[]).await;
    let r = h2_client(gw.addr("main"), "paced", 2000, "/").await;
    println!("limit 500: {r}");
    assert_eq!(r["goaway"], 0xb, "{r}");
    let after = r["goaway_after"].as_u64().unwrap_or(u64::MAX);
    assert!((500..=800).contains(&after), "GOAWAY after {after} streams (limit 500): {r}");
}

/// A client doing many streams with a few cancels (1 in 25) is never told to calm down.
#[tokio::test]
async fn normal_client_with_some_cancels_is_not_affected() {
    let gw = TestGateway::start(&config(""), &[]).await;
    let r = h2_client(gw.addr("main"), "normal", 2000, "/").await;
    println!("{r}");
    assert!(r["goaway"].is_null(), "{r}");
    assert_eq!(r["opened"], 2000, "{r}");
    assert_eq!(r["statuses"]["200"], 2000 - 2000 / 25, "every request not cancelled answered: {r}");
    let r = h2_client(gw.addr("main"), "normal", 500, "/big").await;
    assert!(r["goaway"].is_null(), "{r}");
    assert_eq!(r["statuses"]["200"], 500 - 500 / 25, "{r}");
    assert_eq!(metric(&gw, "gatehouse_http2_reset_limited_connections_total").await, 0.0);
}
