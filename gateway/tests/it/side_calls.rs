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
