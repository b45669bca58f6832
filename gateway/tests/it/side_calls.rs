//! A plugin's side call to another service of the configuration goes through the gateway's
//! own client (`Ctx::upstreams`): balancing, pools, timeouts and errors as for proxied traffic.

use std::sync::Arc;

use gw_core::{Body, Ctx, Error, ErrorKind, Flow, Plugin, RequestHead, Result};
use http::{HeaderValue, Method, Version};

use crate::support::*;

/// The example of `docs/writing-a-plugin.md`: asks the `profiles` service about the request's
/// path and forwards what it learned upstream in `x-profile`.
struct Enrich;

#[gw_core::plugin]
impl Plugin for Enrich {
    fn name(&self) -> &'static str {
        "enrich"
    }

    fn priority(&self) -> i32 {
        0
    }

    async fn access(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let upstreams = cx.upstreams.clone().ok_or_else(|| Error::new(ErrorKind::Internal, "no side calls"))?;
        let side = RequestHead {
            method: Method::GET,
            uri: format!("/lookup{}", req.path()).parse().map_err(|_| Error::new(ErrorKind::BadRequest, "path"))?,
            version: Version::HTTP_11,
            headers: http::HeaderMap::new(),
        };
        let resp = upstreams.send("profiles", side, Body::empty()).await?;
        let body = resp.body.collect(64 << 10).await?;
        let v: serde_json::Value = serde_json::from_slice(&body.data).unwrap_or_default();
        let seen = format!("{} {}", resp.head.status.as_u16(), v["path"].as_str().unwrap_or("?"));
        req.headers.insert(
            "x-profile",
            HeaderValue::from_str(&seen).map_err(|e| Error::new(ErrorKind::Internal, "value").with_cause(e))?,
        );
        Ok(Flow::Continue)
    }
}

/// The side call reaches the other service (its path prefix applied) and its answer is used;
/// a side call that fails is the request's failure (here 502 `upstream_connect_failed`).
#[tokio::test]
async fn plugin_side_call_uses_the_gateway_client() {
    let main = Upstream::start(Behavior::Echo("main")).await;
    let profiles = Upstream::start(Behavior::Echo("profiles")).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let yaml = |profiles: String| {
        base(&format!(
            "services:\n  - name: s\n    url: http://{}\n  - name: profiles\n    url: http://{profiles}/v1\nroutes:\n  - name: r\n    service: s\n",
            main.authority()
        ))
    };
    let gw = TestGateway::start_with_plugins(&yaml(profiles.authority()), vec![Arc::new(Enrich)]).await;
    let (s, _, v) = get_json(&format!("{}/users/7", gw.url("main"))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["headers"]["x-profile"], "200 /v1/lookup/users/7");
    assert_eq!(profiles.hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    let gw = TestGateway::start_with_plugins(&yaml(dead_addr.to_string()), vec![Arc::new(Enrich)]).await;
    let (s, _, v) = get_json(&format!("{}/users/7", gw.url("main"))).await;
    assert_eq!((s.as_u16(), v["error"].as_str()), (502, Some("upstream_connect_failed")), "{v}");
    assert_eq!(main.hits.load(std::sync::atomic::Ordering::SeqCst), 1, "the failed request never went upstream");
}

/// A body produced bit by bit (a channel of chunks), for a side call that streams.
struct Chunks(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl gw_core::body::FrameSource for Chunks {
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<gw_core::Frame>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(gw_core::Frame::Data(b))))
    }
}

/// Sends its side call's body in two parts: the second only once the upstream has received
/// the first (`seen`), so a side call that buffered its body would never be answered.
struct Upload {
    seen: Arc<tokio::sync::Notify>,
}

#[gw_core::plugin]
impl Plugin for Upload {
    fn name(&self) -> &'static str {
        "upload"
    }

    fn priority(&self) -> i32 {
        0
    }

    async fn access(&self, _req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let upstreams = cx.upstreams.clone().ok_or_else(|| Error::new(ErrorKind::Internal, "no side calls"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            let _ = tx.send(bytes::Bytes::from_static(b"first")).await;
            seen.notified().await;
            let _ = tx.send(bytes::Bytes::from_static(b"-second")).await;
        });
        let side = RequestHead {
            method: Method::POST,
            uri: "/upload".parse().unwrap(),
            version: Version::HTTP_11,
            headers: http::HeaderMap::new(),
        };
        let resp = upstreams.send("sink", side, Body::from_source(Chunks(rx))).await?;
        let body = resp.body.collect(64 << 10).await?;
        Ok(Flow::Respond(gw_core::Reply::json(
            http::StatusCode::OK,
            &serde_json::json!({ "sink": String::from_utf8_lossy(&body.data) }),
        )))
    }
}

/// A side call's streaming body goes upstream as it is produced (chunked, no length known),
/// not buffered first: the upstream sees its first part before the second exists.
#[tokio::test]
async fn side_call_streams_its_request_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen = Arc::new(tokio::sync::Notify::new());
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let notify = seen.clone();
    let server = tokio::spawn(async move {
        let (mut s, _) = sink.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut notified = false;
        // Read the head and the chunked body up to its last chunk; signal once `first` is in.
        while !got.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the gateway closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            if !notified && got.windows(5).any(|w| w == b"first") {
                notified = true;
                notify.notify_one();
            }
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngood").await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    let main = Upstream::start(Behavior::Echo("main")).await;
    let yaml = base(&format!(
        "services:\n  - name: s\n    url: http://{}\n  - name: sink\n    url: http://{sink_addr}\nroutes:\n  - name: r\n    service: s\n",
        main.authority()
    ));
    let gw = TestGateway::start_with_plugins(&yaml, vec![Arc::new(Upload { seen })]).await;
    let r =
        tokio::time::timeout(std::time::Duration::from_secs(10), client().get(format!("{}/x", gw.url("main"))).send())
            .await
            .expect("answered (a buffered side-call body would wait for ever)")
            .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["sink"], "good");
    let wire = server.await.unwrap().to_ascii_lowercase();
    assert!(wire.starts_with("post /upload http/1.1\r\n"), "{wire}");
    assert!(wire.contains("transfer-encoding: chunked\r\n"), "{wire}");
    assert!(!wire.contains("content-length"), "{wire}");
    assert!(wire.ends_with("5\r\nfirst\r\n7\r\n-second\r\n0\r\n\r\n"), "{wire}");
}
