//! The per-request context shared by every phase and plugin.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Extensions, HeaderMap, HeaderValue};

/// The matched route, as plugins see it.
#[derive(Debug)]
pub struct RouteInfo {
    /// Route name.
    pub name: Arc<str>,
    /// Service name.
    pub service: Arc<str>,
}

/// The authenticated consumer.
#[derive(Debug)]
pub struct ConsumerInfo {
    /// Index of the consumer in the configuration (stable within one config version).
    pub index: usize,
    /// User name.
    pub username: String,
    /// External id.
    pub custom_id: Option<String>,
    /// ACL groups.
    pub groups: Vec<String>,
    /// Whether this is the anonymous consumer of a route that allows anonymous access.
    pub anonymous: bool,
    /// `X-Consumer-Id`, `X-Consumer-Username`, `X-Consumer-Custom-Id`, `X-Anonymous-Consumer`,
    /// built once per configuration (the request path only copies them).
    pub upstream_headers: http::HeaderMap,
    /// `X-Consumer-Groups` (for `acl`), built once.
    pub groups_header: Option<HeaderValue>,
}

impl ConsumerInfo {
    /// A consumer, with its upstream headers precomputed.
    pub fn new(
        index: usize,
        username: String,
        custom_id: Option<String>,
        groups: Vec<String>,
        anonymous: bool,
    ) -> Self {
        use crate::identity;
        let mut h = http::HeaderMap::new();
        let mut set = |name: &http::HeaderName, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(name.clone(), v);
            }
        };
        set(&identity::CONSUMER_ID, custom_id.as_deref().unwrap_or(&username));
        set(&identity::CONSUMER_USERNAME, &username);
        if let Some(id) = &custom_id {
            set(&identity::CONSUMER_CUSTOM_ID, id);
        }
        if anonymous {
            set(&identity::ANONYMOUS_CONSUMER, "true");
        }
        let groups_header = if groups.is_empty() { None } else { HeaderValue::from_str(&groups.join(", ")).ok() };
        ConsumerInfo { index, username, custom_id, groups, anonymous, upstream_headers: h, groups_header }
    }
}

/// Per-request state. Created by the proxy when the request head arrives; dropped after `log`.
#[derive(Debug)]
pub struct Ctx {
    /// Request id (received from a trusted client or generated), sent upstream and back.
    pub request_id: HeaderValue,
    /// The real client IP (after trusted-proxy processing).
    pub client_ip: IpAddr,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the downstream connection is TLS.
    pub tls: bool,
    /// SNI sent by the client.
    pub sni: Option<Arc<str>>,
    /// DER certificate chain the client presented (mTLS), leaf first.
    pub client_certs: Option<Arc<Vec<Vec<u8>>>>,
    /// Listener name.
    pub listener: Arc<str>,
    /// Request host (lowercase, no port).
    pub host: String,
    /// Matched route.
    pub route: Option<Arc<RouteInfo>>,
    /// Route path parameters (`{id}`, regex named groups).
    pub params: Vec<(String, String)>,
    /// Authenticated consumer.
    pub consumer: Option<Arc<ConsumerInfo>>,
    /// Identifier of the credential that authenticated the request.
    pub credential_id: Option<String>,
    /// When the request head was received.
    pub started: Instant,
    /// Upstream target address of the last attempt.
    pub upstream_addr: Option<Arc<str>>,
    /// Time from sending the upstream request to its response head.
    pub upstream_latency: Option<Duration>,
    /// Headers added to the final response, whatever produced it (e.g. rate-limit headers).
    pub response_headers: HeaderMap,
    /// A body limit set by a plugin in the access phase (the smaller of this and the route's
    /// limit applies).
    pub max_body_bytes: Option<u64>,
    /// Whether the request has a body (declared by `Content-Length` > 0 or chunked / HTTP/2
    /// framing); set before the access phase.
    pub has_body: bool,
    /// Plugin scratch space, keyed by type.
    pub vars: Extensions,
    /// The gateway's client for side calls to the configuration's services (set for requests
    /// whose chain has plugins; see [`crate::exchange`]).
    pub upstreams: Option<crate::Upstreams>,
    /// The trace context of the request's server span when the request is traced: upstream
    /// calls (a plugin's own included, see [`crate::TraceParent::inject`]) carry it.
    pub trace: Option<crate::TraceParent>,
    /// Whether upstream attempts are reported in [`Ctx::attempts`] (set by the gateway when
    /// something reads them, e.g. tracing; off, nothing is allocated per request).
    pub record_attempts: bool,
    /// One report per upstream attempt, in order (when [`Ctx::record_attempts`]).
    pub attempts: Vec<crate::AttemptReport>,
}

impl Ctx {
    /// A context for a request from `peer`.
    pub fn new(peer: SocketAddr, listener: Arc<str>, tls: bool, request_id: HeaderValue) -> Self {
        Ctx {
            request_id,
            client_ip: peer.ip(),
            peer,
            tls,
            sni: None,
            client_certs: None,
            listener,
            host: String::new(),
            route: None,
            params: Vec::new(),
            consumer: None,
            credential_id: None,
            started: crate::tick::now(),
            upstream_addr: None,
            upstream_latency: None,
            response_headers: HeaderMap::new(),
            max_body_bytes: None,
            has_body: false,
            vars: Extensions::new(),
            upstreams: None,
            trace: None,
            record_attempts: false,
            attempts: Vec::new(),
        }
    }

    /// A route parameter by name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What a response cache did for the request (`HIT`, `MISS`, `EXPIRED`, `STALE`,
/// `REVALIDATED`, `BYPASS`): put in [`Ctx::vars`] by the cache plugin, shown in the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheResult(pub &'static str);

/// What the log phase sees about a finished request.
#[derive(Debug, Clone)]
pub struct LogEntry<'a> {
    /// Final status sent to the client.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    /// Request body bytes received.
    pub bytes_received: u64,
    /// Total latency.
    pub latency: Duration,
    /// Error code when the request failed.
    pub error: Option<&'static str>,
    /// The full error when the request failed (also a client that left, a response body the
    /// upstream broke, a shutdown that cut the request): kind, context and cause.
    pub failure: Option<&'a crate::Error>,
}
