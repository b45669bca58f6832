//! Side calls: how a plugin reaches an upstream service of the configuration through the
//! gateway's own client (the same connection pools, balancing, health, circuit breakers,
//! retries and timeouts as the traffic it proxies), rather than a client of its own; and how it
//! reaches a URL outside the configuration (an auth service, a key set) through that same
//! client.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Body, RequestHead, ResponseHead, Result};

/// A response to a side call.
#[derive(Debug)]
pub struct Exchanged {
    /// The response head.
    pub head: ResponseHead,
    /// The response body, streaming (read it with [`Body::frame`] or [`Body::collect`]).
    pub body: Body,
    /// The target of the attempt that answered.
    pub target: Option<Arc<str>>,
    /// Time from the first attempt to the response head (retries included).
    pub latency: Option<Duration>,
    /// One report per attempt (when the calling request records them, e.g. it is traced).
    pub attempts: Vec<crate::AttemptReport>,
}

/// The engine's side of [`Upstreams`] (implemented by `gw-proxy`).
#[async_trait]
pub trait Exchange: Send + Sync + 'static {
    /// Send `req` to the configuration's service named `service` (a proxy service): its path
    /// prefix applies, and its upstream's balancing, health, breaker, retries and timeouts.
    /// `req.uri` is origin-form (`/path?query`); `Host` is the target's unless set. `trace`:
    /// the calling request's trace context, which the call carries (and is traced under).
    async fn send(
        &self,
        service: &str,
        req: RequestHead,
        body: Body,
        trace: Option<&crate::TraceParent>,
    ) -> Result<Exchanged>;

    /// Send `req` again as the request of route `route` was sent to its service: `req` is the
    /// upstream request as the pipeline built it (path rewritten, service prefix included,
    /// headers set), so nothing is added to its path; the route's `preserve_host` decides the
    /// `Host`. For a plugin that repeats a request in the background (a cache revalidation).
    async fn resend(
        &self,
        route: &str,
        req: RequestHead,
        body: Body,
        trace: Option<&crate::TraceParent>,
    ) -> Result<Exchanged>;

    /// Send `req` to the absolute `http://` or `https://` URL in `req.uri` (`h2c://` and `h2://`
    /// for HTTP/2 with prior knowledge, in clear text or over TLS; its path and query
    /// go on the request line; `Host` is the URL's unless set), through the gateway's own
    /// client: pooled connections per origin, TLS verified against the system roots, a stale
    /// pooled connection retried once. `timeout` bounds the connection, the wait for the
    /// response head and each stall of its body.
    async fn send_url(
        &self,
        req: RequestHead,
        body: Body,
        timeout: Duration,
        trace: Option<&crate::TraceParent>,
    ) -> Result<Exchanged>;
}

/// The gateway's client for side calls, handed to plugins in [`crate::Ctx::upstreams`].
#[derive(Clone)]
pub struct Upstreams(Arc<dyn Exchange>, Option<crate::TraceParent>);

impl Upstreams {
    /// Wrap an engine's exchange.
    pub fn new(e: Arc<dyn Exchange>) -> Self {
        Upstreams(e, None)
    }

    /// The same client, for calls made on behalf of a request traced as `trace`.
    pub fn with_trace(&self, trace: crate::TraceParent) -> Self {
        Upstreams(self.0.clone(), Some(trace))
    }

    /// See [`Exchange::send`] (the request's trace context goes with it).
    pub async fn send(&self, service: &str, req: RequestHead, body: Body) -> Result<Exchanged> {
        self.0.send(service, req, body, self.1.as_ref()).await
    }

    /// See [`Exchange::resend`].
    pub async fn resend(&self, route: &str, req: RequestHead, body: Body) -> Result<Exchanged> {
        self.0.resend(route, req, body, self.1.as_ref()).await
    }

    /// See [`Exchange::send_url`].
    pub async fn send_url(&self, req: RequestHead, body: Body, timeout: Duration) -> Result<Exchanged> {
        self.0.send_url(req, body, timeout, self.1.as_ref()).await
    }
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstreams")
    }
}
