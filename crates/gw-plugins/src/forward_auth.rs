//! `forward-auth`: external authorization. The request's headers (plus the gateway's own
//! `X-Forwarded-Method`, `-Uri`, `-Host`, `-Proto`, `-For`, which replace any the client sent)
//! go to an auth service in a GET; a 2xx lets the request through (optionally copying headers
//! of the answer upstream, replacing the client's); any other status is returned to the client
//! as it is. Timeouts and unreachable services fail closed (503) or open.

use std::sync::Arc;
use std::time::Duration;

use gw_config::plugins::{FailureMode, ForwardAuth as Conf};
use gw_core::{Body, Ctx, Error, ErrorKind, Flow, Plugin, Reply, RequestHead, Result, priority};
use gw_observability::Metrics;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue};

use crate::util::header_name;

pub(crate) struct ForwardAuth {
    url: http::Uri,
    timeout: Duration,
    request_headers: Option<Vec<HeaderName>>,
    upstream_headers: Vec<HeaderName>,
    client_headers: Vec<HeaderName>,
    fail_open: bool,
    metrics: Arc<Metrics>,
}

/// Largest auth-service body relayed to the client.
const MAX_BODY: usize = 64 * 1024;

impl ForwardAuth {
    pub(crate) fn new(c: &Conf, metrics: Arc<Metrics>) -> Result<Self, String> {
        let names = |v: &[String]| v.iter().map(|n| header_name(n)).collect::<Result<Vec<_>, _>>();
        Ok(ForwardAuth {
            url: c.url.parse().map_err(|e| format!("url: {e}"))?,
            timeout: c.timeout.as_ref().map(|d| d.get()).unwrap_or(Duration::from_secs(2)),
            request_headers: c.request_headers.as_deref().map(names).transpose()?,
            upstream_headers: names(&c.upstream_headers)?,
            client_headers: match &c.client_headers {
                Some(h) => names(h)?,
                None => names(&["www-authenticate".into(), "content-type".into(), "location".into()])?,
            },
            fail_open: c.failure_mode == FailureMode::Open,
            metrics,
        })
    }
}

/// Fields the plugin sets itself on the auth request: the client's copies are not sent (an auth
/// service reading the first `X-Forwarded-Uri` must read the gateway's).
fn is_gateway_set(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-forwarded-method"
            | "x-forwarded-uri"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-forwarded-for"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-server"
            | "x-real-ip"
            | "forwarded"
            | "x-request-id"
    )
}

#[gw_core::plugin]
impl Plugin for ForwardAuth {
    fn name(&self) -> &'static str {
        "forward-auth"
    }

    fn priority(&self) -> i32 {
        priority::FORWARD_AUTH
    }

    /// The auth service's answer headers copied upstream describe the client: no client may
    /// send them itself.
    fn identity_headers(&self) -> Vec<HeaderName> {
        self.upstream_headers.clone()
    }

    async fn access(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let mut auth = RequestHead {
            method: http::Method::GET,
            uri: self.url.clone(),
            version: http::Version::HTTP_11,
            headers: http::HeaderMap::new(),
        };
        for (k, v) in &req.headers {
            if k == HOST || k == CONTENT_LENGTH || k == TRANSFER_ENCODING || k == CONNECTION || is_gateway_set(k) {
                continue;
            }
            if self.request_headers.as_ref().is_some_and(|only| !only.contains(k)) {
                continue;
            }
            auth.headers.append(k, v.clone());
        }
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let h = &mut auth.headers;
        let mut set = |name: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        set("x-forwarded-method", req.method.as_str());
        set("x-forwarded-uri", target);
        set("x-forwarded-host", &cx.host);
        set("x-forwarded-proto", if cx.tls { "https" } else { "http" });
        set("x-forwarded-for", &cx.client_ip.to_string());
        h.insert(HeaderName::from_static("x-request-id"), cx.request_id.clone());
        let sent = match &cx.upstreams {
            Some(client) => client.send_url(auth, Body::empty(), self.timeout).await,
            None => Err(Error::new(ErrorKind::Internal, "no client for side calls")),
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                if self.fail_open {
                    // Nothing vouched for these: the client's own copies never go upstream.
                    for h in &self.upstream_headers {
                        req.headers.remove(h);
                    }
                    self.metrics.plugin_event("forward_auth_fail_open");
                    tracing::warn!(error = %e, "forward-auth unreachable; letting the request through (fail open)");
                    return Ok(Flow::Continue);
                }
                self.metrics.plugin_event("forward_auth_fail_closed");
                return Err(
                    Error::new(ErrorKind::DependencyUnavailable, "forward-auth service unreachable").with_cause(e)
                );
            }
        };
        let status = resp.head.status;
        if status.is_success() {
            for h in &self.upstream_headers {
                req.headers.remove(h);
                for v in resp.head.headers.get_all(h) {
                    req.headers.append(h.clone(), v.clone());
                }
            }
            return Ok(Flow::Continue);
        }
        let mut reply = Reply::empty(status);
        for h in &self.client_headers {
            for v in resp.head.headers.get_all(h) {
                reply.headers.append(h.clone(), v.clone());
            }
        }
        // The answer's body, up to `MAX_BODY` (the rest is not relayed).
        let mut body = Vec::new();
        let mut rest = resp.body;
        while let Some(Ok(frame)) = rest.frame().await {
            let Some(chunk) = frame.data() else { break };
            if body.len() + chunk.len() > MAX_BODY {
                break;
            }
            body.extend_from_slice(chunk);
        }
        reply.body = gw_core::Body::full(body);
        Ok(Flow::Respond(reply))
    }
}
