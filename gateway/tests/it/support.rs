//! Shared helpers.

use std::time::Duration;

pub(crate) use gw_test_util::{Behavior, TestGateway, Upstream};

/// A reqwest client that never uses a proxy and never pools across tests.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A minimal config: one listener `main` on an ephemeral port, status listener on another.
pub(crate) fn base(body: &str) -> String {
    format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{body}"
    )
}

/// Start a gateway from `base(body)`.
pub(crate) async fn gateway(body: &str) -> TestGateway {
    TestGateway::start(&base(body), &[]).await
}

/// GET and parse the JSON body.
pub(crate) async fn get_json(url: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, serde_json::Value) {
    let r = client().get(url).send().await.expect("request");
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

/// Send raw bytes over TCP and read the whole response (until close or `wait`).
pub(crate) async fn raw(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
