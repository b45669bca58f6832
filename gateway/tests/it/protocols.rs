//! WebSocket and gRPC pass-through with third-party clients (Python `websockets`, `grpcio`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::support::*;

fn script(name: &str) -> String {
    format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Start a Python server that prints its port on the first line.
async fn python_server(args: &[&str]) -> (tokio::process::Child, u16) {
    let mut child = Command::new("python3")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("server started")
        .unwrap()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (child, port)
}

/// A WebSocket session passes through, large frames included, and survives a reload.
#[tokio::test]
async fn websocket_passes_through_and_survives_reload() {
    let (_server, port) = python_server(&[&script("ws_echo_server.py")]).await;
    let yaml = |extra: &str| {
        base(&format!(
            "services:\n  - name: ws\n    url: http://127.0.0.1:{port}\nroutes:\n  - name: ws\n    service: ws\n    paths: [\"/ws\"]\n{extra}"
        ))
    };
    let gw = TestGateway::start(&yaml(""), &[]).await;
    let (mut client, mut out) = piped(&[&script("ws_client.py"), &format!("ws://{}/ws", gw.addr("main"))]);
    let line = tokio::time::timeout(Duration::from_secs(20), out.next_line()).await.expect("ready").unwrap();
    assert_eq!(line.as_deref(), Some("ready"));
    gw.reload(&yaml("  - name: other\n    service: ws\n    paths: [\"/other\"]\n"), &[]).await.unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(20), out.next_line()).await.expect("ok").unwrap();
    assert_eq!(line.as_deref(), Some("ok"));
    assert!(client.wait().await.unwrap().success());
}

/// A gateway with a route for `/test.Echo/*` to the gRPC server on `port`.
async fn grpc_gateway(port: u16) -> TestGateway {
    gateway(&format!(
        "services:\n  - name: grpc\n    url: grpc://127.0.0.1:{port}\nroutes:\n  - name: grpc\n    service: grpc\n    paths: [\"/test.Echo/*\"]\n"
    ))
    .await
}

/// gRPC over h2c passes through with messages, trailers, status codes and server streaming.
#[tokio::test]
async fn grpc_passes_through_with_trailers() {
    let (_server, port) = python_server(&[&script("grpc_echo.py"), "server"]).await;
    let gw = grpc_gateway(port).await;
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("python3").arg(script("grpc_echo.py")).arg("client").arg(gw.addr("main").to_string()).output(),
    )
    .await
    .expect("client finished")
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// Many concurrent gRPC calls on the shared upstream HTTP/2 connection, while messages wait
/// unread: 80 server-streaming calls of 200 messages each from a client that reads slowly (`h2`,
/// 8 connections, initial window 0: the gateway holds 16,000 small DATA frames unread), and 500
/// concurrent unary grpcio calls over 5 connections, all to grpcio. Every call succeeds. (With
/// hyper's adaptive window, h2's budget for unread small DATA frames was half a window that
/// starts at 64 KiB: h2 closed the shared connection with GOAWAY `too_many_data_frames` after a
/// few hundred, failing every call on it.)
#[tokio::test]
async fn grpc_many_concurrent_calls_on_one_upstream_connection() {
    let dir = tempfile::tempdir().unwrap();
    let streamed = dir.path().join("streamed");
    let (_server, port) = python_server(&[&script("grpc_echo.py"), "server", streamed.to_str().unwrap()]).await;
    let gw = grpc_gateway(port).await;
    let addr = gw.addr("main");
    let (mut held, mut out) =
        piped(&[&script("grpc_load.py"), "held", "127.0.0.1", &addr.port().to_string(), "10", "8", "200"]);
    let line = tokio::time::timeout(Duration::from_secs(60), out.next_line()).await.expect("held").unwrap();
    assert_eq!(line.as_deref(), Some(r#"{"held": 80}"#));
    // The answers reach the gateway while their client reads nothing: wait until the server
    // has handed every message of the 80 calls to its transport (the gateway's upstream window
    // takes them all), then a moment for the last bytes to cross loopback.
    let waiting = Instant::now();
    while std::fs::read_to_string(&streamed).unwrap_or_default() != "80" {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the server finished {:?} of 80 streams",
            std::fs::read_to_string(&streamed).ok()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let r = crate::translation::python_json(&[&script("grpc_load.py"), "many", &addr.to_string(), "500", "5"]).await;
    assert_eq!(r["ok"], 500, "{r}");

    held.stdin.take().unwrap().write_all(b"go\n").await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(60), out.next_line()).await.expect("answers").unwrap();
    let r: serde_json::Value =
        serde_json::from_str(line.as_deref().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(r, serde_json::json!({"ok": 80, "failed": 0, "statuses": {"0": 80}}));
    assert!(held.wait().await.unwrap().success());
}
