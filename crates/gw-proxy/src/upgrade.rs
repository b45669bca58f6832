//! Protocol upgrades (WebSocket): the handshake is proxied on a dedicated upstream connection;
//! after `101 Switching Protocols` both sides are spliced together in a tracked task, which a
//! configuration reload does not touch and a graceful shutdown waits for.

use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use gw_core::{Ctx, RequestHead};
use gw_error::{Error, ErrorKind, Retry};
use gw_upstream::{Outcome, SelectError};

use crate::body::{BoxError, RequestBody, ResponseBody};
use crate::forwarding;
use crate::runtime::{RouteRt, ServiceRt, UpstreamRt};

/// The client's side of an upgrade: resolves to its connection once `101` was sent.
pub(crate) enum ClientUpgrade {
    /// From hyper's server.
    Hyper(hyper::upgrade::OnUpgrade),
    /// From the gateway's HTTP/1.1 server.
    H1(crate::h1server::OnUpgrade),
}

impl ClientUpgrade {
    /// Take the upgrade handle out of a request that asks for one.
    pub(crate) fn of<B>(req: &mut Request<B>) -> ClientUpgrade {
        match req.extensions_mut().remove::<crate::h1server::OnUpgrade>() {
            Some(u) => ClientUpgrade::H1(u),
            None => ClientUpgrade::Hyper(hyper::upgrade::on(req)),
        }
    }

    async fn wait(self) -> Result<Box<dyn crate::h1server::UpgradeIo>, BoxError> {
        match self {
            ClientUpgrade::Hyper(u) => Ok(Box::new(TokioIo::new(u.await?))),
            ClientUpgrade::H1(u) => Ok(Box::new(u.wait().await?)),
        }
    }
}

/// Forward an upgrade request and, on 101, splice the two connections.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward(
    head: RequestHead,
    protocol: HeaderValue,
    downstream: ClientUpgrade,
    upstream: &UpstreamRt,
    service: &ServiceRt,
    route: &RouteRt,
    cx: &mut Ctx,
    tasks: &TaskTracker,
) -> Result<Response<ResponseBody>, Error> {
    let now = Instant::now();
    let sel = upstream.balancer.select(None, &[], now).map_err(|e| match e {
        SelectError::NoHealthyTarget => Error::new(ErrorKind::NoHealthyUpstream, "upgrade"),
        SelectError::AllAtCapacity => Error::new(ErrorKind::UpstreamOverloaded, "upgrade"),
    })?;
    let endpoint = upstream.endpoints[sel.index].clone();
    cx.upstream_addr = Some(endpoint.authority.clone());
    let inflight = sel.target.begin();
    let mut sender = endpoint.connect_upgradable(service.timeouts.connect).await?;
    let mut headers = head.headers.clone();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
    let host = if route.route.preserve_host { cx.host.clone() } else { endpoint.authority.to_string() };
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&host).map_err(|_| Error::new(ErrorKind::BadRequest, "invalid Host"))?,
    );
    let mut req = Request::builder()
        .method(head.method.clone())
        .uri(head.uri.clone())
        .version(Version::HTTP_11)
        .body(RequestBody::Empty)
        .map_err(|e| Error::new(ErrorKind::Internal, "building upgrade request").with_cause(e))?;
    *req.headers_mut() = headers;
    let start = Instant::now();
    let mut resp = tokio::time::timeout(service.timeouts.read, sender.send_request(req))
        .await
        .map_err(|_| Error::new(ErrorKind::UpstreamTimeout, "upgrade response").with_retry(Retry::Never))?
        .map_err(|e| Error::new(ErrorKind::UpstreamProtocol, "upgrade request").with_cause(e))?;
    cx.upstream_latency = Some(start.elapsed());
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream refused the upgrade: relay its answer as a normal response.
        inflight.finish(Outcome::Success, start.elapsed(), Instant::now());
        let (mut parts, body) = resp.into_parts();
        forwarding::strip_hop_by_hop(&mut parts.headers, false);
        let body = crate::body::UpstreamBody::new(
            crate::body::UpstreamInner::Hyper(body),
            service.timeouts.read,
            Box::new(|| {}),
        );
        return Ok(Response::from_parts(parts, ResponseBody::upstream(body)));
    }
    let up = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    forwarding::strip_hop_by_hop(&mut parts.headers, true);
    parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let latency = start.elapsed();
    tasks.spawn(async move {
        let up = async { up.await.map_err(|e| Box::new(e) as BoxError) };
        let (mut d, up) = match tokio::try_join!(downstream.wait(), up) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                inflight.finish(Outcome::Success, latency, Instant::now());
                return;
            }
        };
        let mut u = TokioIo::new(up);
        let r = tokio::io::copy_bidirectional(&mut d, &mut u).await;
        tracing::debug!(result = ?r, "upgraded connection closed");
        inflight.finish(Outcome::Success, latency, Instant::now());
    });
    Ok(Response::from_parts(parts, ResponseBody::empty()))
}
