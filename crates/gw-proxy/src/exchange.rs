//! Side calls of plugins ([`gw_core::Upstreams`]): a request to one of the configuration's
//! proxy services through the same path as proxied traffic (`pipeline::forward`: target
//! selection, pools, health, circuit breaker, retries, timeouts).

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderValue};

use gw_core::exchange::{Exchange, Exchanged};
use gw_core::{Body, Ctx, RequestHead, ResponseHead};
use gw_error::{Error, ErrorKind, Result};

use crate::body::RequestBody;
use crate::runtime::{Runtime, ServiceRtKind};

/// Largest request body of a side call (it is buffered, so it can be re-sent on a retry).
const MAX_SIDE_BODY: usize = 8 << 20;

/// Where the configuration being served is found (the server's shared state; a trait so this
/// module does not depend on the server's).
pub(crate) trait Serving: Send + Sync + 'static {
    /// The runtime compiled from the configuration being served.
    fn runtime(&self) -> Arc<Runtime>;
}

/// The gateway's [`Exchange`]: looks the service up in the configuration being served.
pub(crate) struct GatewayExchange<S> {
    pub(crate) serving: Weak<S>,
}

#[async_trait]
impl<S: Serving> Exchange for GatewayExchange<S> {
    async fn send(&self, service: &str, mut req: RequestHead, body: Body) -> Result<Exchanged> {
        let serving =
            self.serving.upgrade().ok_or_else(|| Error::new(ErrorKind::ShutdownTimeout, "the gateway has stopped"))?;
        let rt = serving.runtime();
        drop(serving);
        let svc = rt
            .services
            .iter()
            .find(|s| &*s.name == service)
            .ok_or_else(|| Error::new(ErrorKind::Internal, format!("side call to unknown service {service:?}")))?;
        let ServiceRtKind::Proxy { upstream, protocol, path_prefix } = &svc.kind else {
            return Err(Error::new(ErrorKind::Internal, format!("side call to service {service:?}, not a proxy")));
        };
        if !path_prefix.is_empty() {
            let path = if req.path() == "/" { path_prefix.clone() } else { format!("{path_prefix}{}", req.path()) };
            req.set_path(&path).map_err(|e| Error::new(ErrorKind::Internal, "side call path").with_cause(e))?;
        }
        let body = if body.is_end() {
            RequestBody::Empty
        } else {
            let bytes: Bytes = body.collect(MAX_SIDE_BODY).await?.data;
            req.headers.remove(header::TRANSFER_ENCODING);
            req.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            RequestBody::Full(Some(bytes))
        };
        // The side call's own context: what `forward` records about its attempts.
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut cx = Ctx::new(peer, "side-call".into(), false, HeaderValue::from_static(""));
        let resp = crate::pipeline::forward(&req, body, None, None, upstream, *protocol, svc, false, &mut cx).await?;
        let mut resp = resp;
        crate::pipeline::full_headers(&mut resp);
        let (parts, body) = resp.into_parts();
        Ok(Exchanged {
            head: ResponseHead::new(parts.status, parts.version, parts.headers),
            body: body.into_core(),
            target: cx.upstream_addr,
            latency: cx.upstream_latency,
        })
    }
}
