//! WebSocket and gRPC pass-through with third-party clients (Python `websockets`, `grpcio`).

use std::process::Stdio;
use std::time::Duration;

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
    let mut client = Command::new("python3")
        .arg(script("ws_client.py"))
        .arg(format!("ws://{}/ws", gw.addr("main")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), out.next_line()).await.expect("ready").unwrap();
    assert_eq!(line.as_deref(), Some("ready"));
    gw.reload(&yaml("  - name: other\n    service: ws\n    paths: [\"/other\"]\n"), &[]).await.unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(20), out.next_line()).await.expect("ok").unwrap();
    assert_eq!(line.as_deref(), Some("ok"));
    assert!(client.wait().await.unwrap().success());
}

/// gRPC over h2c passes through with messages, trailers, status codes and server streaming.
#[tokio::test]
async fn grpc_passes_through_with_trailers() {
    let (_server, port) = python_server(&[&script("grpc_echo.py"), "server"]).await;
    let gw = gateway(&format!(
        "services:\n  - name: grpc\n    url: grpc://127.0.0.1:{port}\nroutes:\n  - name: grpc\n    service: grpc\n    paths: [\"/test.Echo/*\"]\n"
    ))
    .await;
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
