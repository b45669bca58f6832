//! Side calls of plugins ([`gw_core::Upstreams`]): a request to one of the configuration's
//! proxy services, or to a URL outside the configuration (forward-auth, JWKS), through the
//! same path as proxied traffic (`pipeline::forward`: target selection, pools, TLS, health,
//! circuit breaker, retries, timeouts).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use http::header::{self, HeaderValue};

use gw_config::model::UpstreamProtocol;
use gw_core::exchange::{Exchange, Exchanged};
use gw_core::{Body, Ctx, RequestHead, ResponseHead};
use gw_error::{Error, ErrorKind, Result};
use gw_observability::Metrics;

use crate::body::RequestBody;
use crate::runtime::{Runtime, ServiceRt, ServiceRtKind, UpstreamRt};

/// Origins reached by URL whose pools are kept (URLs come from the configuration, so this is
/// only a guard): past it, the table starts again.
const MAX_ORIGINS: usize = 256;

/// Where the configuration being served is found (the server's shared state; a trait so this
/// module does not depend on the server's).
pub(crate) trait Serving: Send + Sync + 'static {
    /// The runtime compiled from the configuration being served.
    fn runtime(&self) -> Arc<Runtime>;
}

impl Serving for crate::state::DataPlane {
    fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }
}

/// An origin reached by URL: its one-target upstream and service, with their pool.
struct Origin {
    upstream: Arc<UpstreamRt>,
    service: ServiceRt,
}

/// (protocol, host, port, timeout).
type OriginKey = (UpstreamProtocol, String, u16, Duration);

/// The gateway's [`Exchange`]: looks the service up in the configuration being served.
pub(crate) struct GatewayExchange<S> {
    serving: Weak<S>,
    workers: usize,
    metrics: Arc<Metrics>,
    origins: Mutex<HashMap<OriginKey, Arc<Origin>>>,
}

impl<S> GatewayExchange<S> {
    pub(crate) fn new(serving: Weak<S>, workers: usize, metrics: Arc<Metrics>) -> Self {
        GatewayExchange { serving, workers, metrics, origins: Mutex::new(HashMap::new()) }
    }

    fn origin(&self, key: OriginKey) -> Result<Arc<Origin>> {
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = origins.get(&key) {
            return Ok(o.clone());
        }
        let (https, host, port, timeout) = &key;
        let (upstream, service) =
            crate::runtime::url_service(*https, host, *port, *timeout, self.workers, &self.metrics)
                .map_err(|e| Error::new(ErrorKind::Internal, format!("side call to {host}:{port}: {e}")))?;
        if origins.len() >= MAX_ORIGINS {
            origins.clear();
        }
        let o = Arc::new(Origin { upstream, service });
        origins.insert(key, o.clone());
        Ok(o)
    }
}

impl<S: Serving> GatewayExchange<S> {
    /// The configuration being served (an error once the gateway has stopped).
    fn runtime(&self) -> Result<Arc<Runtime>> {
        let serving =
            self.serving.upgrade().ok_or_else(|| Error::new(ErrorKind::ShutdownTimeout, "the gateway has stopped"))?;
        Ok(serving.runtime())
    }
}

#[async_trait]
impl<S: Serving> Exchange for GatewayExchange<S> {
    async fn send(
        &self,
        service: &str,
        mut req: RequestHead,
        body: Body,
        trace: Option<&gw_core::TraceParent>,
    ) -> Result<Exchanged> {
        let rt = self.runtime()?;
        let svc = rt
            .services
            .iter()
            .find(|s| &*s.name == service)
            .ok_or_else(|| Error::new(ErrorKind::Internal, format!("side call to unknown service {service:?}")))?;
        let ServiceRtKind::Proxy { upstream, path_prefix, .. } = &svc.kind else {
            return Err(Error::new(ErrorKind::Internal, format!("side call to service {service:?}, not a proxy")));
        };
        if !path_prefix.is_empty() {
            let path = if req.path() == "/" { path_prefix.clone() } else { format!("{path_prefix}{}", req.path()) };
            req.set_path(&path).map_err(|e| Error::new(ErrorKind::Internal, "side call path").with_cause(e))?;
        }
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
        call(req, body, host, upstream, svc, trace, rt.tracing.as_deref()).await
    }

    async fn resend(
        &self,
        route: &str,
        req: RequestHead,
        body: Body,
        trace: Option<&gw_core::TraceParent>,
    ) -> Result<Exchanged> {
        let rt = self.runtime()?;
        let r = rt
            .routes
            .iter()
            .find(|r| &*r.info.name == route)
            .ok_or_else(|| Error::new(ErrorKind::Internal, format!("side call for unknown route {route:?}")))?;
        let svc = &r.service;
        let ServiceRtKind::Proxy { upstream, .. } = &svc.kind else {
            return Err(Error::new(ErrorKind::Internal, format!("side call for route {route:?}, not a proxy")));
        };
        let host = if r.route.preserve_host {
            req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned)
        } else {
            None
        };
        call(req, body, host, upstream, svc, trace, rt.tracing.as_deref()).await
    }

    async fn send_url(
        &self,
        mut req: RequestHead,
        body: Body,
        timeout: Duration,
        trace: Option<&gw_core::TraceParent>,
    ) -> Result<Exchanged> {
        let bad = |why: &str| Error::new(ErrorKind::Internal, format!("side call to {}: {why}", req.uri));
        let protocol = match req.uri.scheme_str() {
            Some("http") => UpstreamProtocol::Http1,
            Some("https") => UpstreamProtocol::Https,
            Some("h2c") => UpstreamProtocol::H2c,
            Some("h2") => UpstreamProtocol::H2,
            _ => return Err(bad("not an http, https, h2c or h2 URL")),
        };
        let https = protocol.is_tls();
        let Some(auth) = req.uri.authority() else { return Err(bad("no host")) };
        let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
        // The Host field names the URL's authority as written (no default port added).
        let host_field = match req.headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(h) => h.to_owned(),
            None => auth.as_str().rsplit('@').next().unwrap_or(auth.as_str()).to_owned(),
        };
        let origin = self.origin((protocol, host, port, timeout))?;
        let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
        req.uri = pq.parse().map_err(|e| Error::new(ErrorKind::Internal, "side call path").with_cause(e))?;
        let tracing = self.serving.upgrade().and_then(|s| s.runtime().tracing.clone());
        call(req, body, Some(host_field), &origin.upstream, &origin.service, trace, tracing.as_deref()).await
    }
}

/// Send `req` through `pipeline::forward` to `upstream` as service `svc`: a whole body goes
/// with its length, a streaming one as it comes; `host` (when given) is the `Host` field sent.
async fn call(
    mut req: RequestHead,
    body: Body,
    host: Option<String>,
    upstream: &Arc<UpstreamRt>,
    svc: &ServiceRt,
    trace: Option<&gw_core::TraceParent>,
    tracing: Option<&gw_otel::Tracing>,
) -> Result<Exchanged> {
    let ServiceRtKind::Proxy { protocol, .. } = &svc.kind else {
        return Err(Error::new(ErrorKind::Internal, "side call to a service that is not a proxy"));
    };
    // The framing fields are the gateway's: a whole body is sent with its length (and can be
    // re-sent on a retry); a streaming one as it is produced, with the length the caller gave
    // in `Content-Length` (checked against what it sends) or else chunked on HTTP/1.1 (a
    // stream is retried only when none of it was sent).
    req.headers.remove(header::TRANSFER_ENCODING);
    let mut body = body;
    let body = match body.take_whole() {
        Some(bytes) if bytes.is_empty() => RequestBody::Empty,
        Some(bytes) => {
            req.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            RequestBody::Full(Some(bytes))
        }
        None => {
            let length = crate::pipeline::content_length(&req.headers);
            if length.is_none() {
                req.headers.remove(header::CONTENT_LENGTH);
            }
            RequestBody::Core(Box::new(body), length)
        }
    };
    // The side call's own context: what `forward` records about its attempts.
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut cx = Ctx::new(peer, "side-call".into(), false, HeaderValue::from_static(""));
    let preserve_host = host.is_some();
    if let Some(h) = host {
        cx.host = h;
    }
    // A call made for a traced request is traced under it (an attempt span each when sampled).
    if let Some(t) = trace {
        cx.record_attempts = t.sampled;
        cx.trace = Some(t.clone());
    }
    let resp =
        crate::pipeline::forward(&mut req, body, None, None, upstream, *protocol, svc, preserve_host, tracing, &mut cx)
            .await?;
    let (parts, body) = resp.into_parts();
    Ok(Exchanged {
        head: ResponseHead::new(parts.status, parts.version, parts.fields.into_map()),
        body: body.into_core(),
        target: cx.upstream_addr,
        latency: cx.upstream_latency,
        attempts: cx.attempts,
    })
}
