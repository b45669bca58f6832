//! The request pipeline: one function per phase, called in order by [`serve`].
//!
//! ```text
//! precheck ─► pre-route plugins (global) ─► route ─► access: pre-auth plugins ─► authenticate ─► post-auth plugins
//!          ─► [request body plugins] ─► upstream request (rewrite, headers, plugins)
//!          ─► service: proxy (select target ─► send ─► retry?) | echo | static
//!          ─► upstream response plugins ─► [response body plugins] ─► response plugins
//!          ─► (body streams to the client) ─► log
//! ```
//!
//! Every failure is a [`gw_error::Error`]; [`error_reply`] is the only place that turns one into
//! a response, and that response still goes through the response and log phases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use gw_config::model::{AuthMode, HashOn, UpstreamProtocol};
use gw_core::{AuthOutcome, Ctx, Flow, LogEntry, Reply, RequestHead, ResponseHead};
use gw_error::{Error, ErrorKind, Retry};
use gw_observability::{AccessLogLine, Rfc3339, Sampled};
use gw_upstream::{Outcome, SelectError};

use crate::body::{ClientBody, End, Ended, Finish, RequestBody, ResponseBody, SentSignal, UpstreamBody, UpstreamInner};
use crate::chain::Chain;
use crate::conn::ConnState;
use crate::fault::BodyTooLarge;
use crate::forwarding::{self, ConnForwarding};
use crate::h1;
use crate::head::{Fields, Head, Response};
use crate::pool::Conn;
use crate::runtime::{RouteRt, Runtime, ServiceRt, ServiceRtKind, UpstreamRt};
use crate::state::DataPlane;
use crate::upgrade::ClientUpgrade;
use crate::wire::HeadFacts;

/// Facts about the downstream connection a request arrived on.
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) listener: Arc<str>,
    pub(crate) tls: bool,
    pub(crate) sni: Option<Arc<str>>,
    pub(crate) client_certs: Option<Arc<Vec<Vec<u8>>>>,
    pub(crate) state: Arc<ConnState>,
    /// Forwarding header values computed once for the connection.
    pub(crate) forwarding: ConnForwarding,
}

/// [`HeadFacts`] looked up in a parsed request (HTTP/2; the HTTP/1.1 server collects them as
/// it parses).
fn head_facts<B>(req: &Request<B>) -> HeadFacts {
    let h = req.headers();
    HeadFacts {
        hosts: h.get_all(header::HOST).iter().count(),
        content_lengths: h.get_all(header::CONTENT_LENGTH).iter().count(),
        content_length: content_length(h),
        transfer_encoding: h.contains_key(header::TRANSFER_ENCODING),
        upgrade: is_upgrade(req) || is_extended_connect(req),
    }
}

/// Largest body a body plugin may buffer (beyond this, 413).
const MAX_BUFFERED_BODY: u64 = 8 << 20;

/// Entry point for one request.
pub(crate) async fn serve(
    req: Request<ClientBody>,
    facts: Option<HeadFacts>,
    conn: Arc<ConnInfo>,
    shared: Arc<DataPlane>,
) -> Response<ResponseBody> {
    conn.state.request_started();
    let rt = shared.runtime.load_full();
    let request_id = forwarding::request_id(req.headers(), &rt.gateway.request_id_header);
    let mut cx = Ctx::new(conn.peer, conn.listener.clone(), conn.tls, request_id);
    cx.client_ip = forwarding::client_ip(conn.peer.ip(), req.headers(), &rt.gateway.trusted_proxies);
    cx.sni = conn.sni.clone();
    cx.client_certs = conn.client_certs.clone();
    // Tracing: the client's trace context, the sampling decision and the server span's id,
    // before any plugin runs (nothing at all when tracing is off).
    let trace = rt.tracing.as_ref().map(|t| begin_trace(t, &req, &mut cx));
    // Spans of side calls made before the route is known wait for it (a route may turn
    // tracing off).
    let held = match &mut cx.trace {
        Some(tp) if tp.sampled && !rt.global_chain.pre_route.is_empty() => gw_otel::hold_spans(tp),
        _ => None,
    };
    let p = Pending {
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        route: None,
        chain: rt.global_chain.clone(),
        received: None,
        error: None,
        failure: None,
        trace,
        held,
    };
    // The log phase's state is allocated once, up front, and the request works on it in
    // place: the context is never moved into the response body at the end.
    let mut log =
        Box::new(LogPhase { cx, p, rt, conn, shared, status: 0, responded: false, tunnel_opened: None, logged: false });
    let l = &mut *log;
    let (cx, p) = (&mut l.cx, &mut l.p);
    let mut resp = match handle(req, facts, &l.conn, &l.shared, &l.rt, cx, p).await {
        Ok(r) => r,
        Err(e) => {
            p.error = Some(e.kind().code());
            if e.side() != gw_error::Side::Downstream || e.kind().status().is_server_error() {
                // Expected refusals (open circuit, store failing closed, no healthy upstream)
                // are sampled: one line per kind per second; every one is in the metrics.
                match l.shared.refusal_log.sample(e.kind().code()) {
                    Sampled::Always => tracing::warn!(request_id = ?cx.request_id, error = %e, "request failed"),
                    Sampled::Write { suppressed } => {
                        // `suppressed`: lines of this kind left out since the last one.
                        let msg = "request refused (sampled: one line per kind and second)";
                        tracing::warn!(request_id = ?cx.request_id, error = %e, suppressed, "{msg}");
                    }
                    Sampled::Skip => {}
                }
            } else {
                tracing::debug!(request_id = ?cx.request_id, error = %e, "request refused");
            }
            l.shared.metrics.error(e.kind().code());
            let r = response_phase(error_response(&e, cx), &p.chain, cx).await;
            p.failure = Some(e);
            r
        }
    };
    finish(&mut resp, log);
    resp
}

/// The response for an error ([`error_reply`]); a malformed request, an oversized head or a
/// client too slow to send its body also closes the connection (what follows on it cannot be
/// trusted to start a request).
fn error_response(e: &Error, cx: &Ctx) -> Response<ResponseBody> {
    let mut r = reply_response(error_reply(e, cx), cx);
    if matches!(e.kind(), ErrorKind::BadRequest | ErrorKind::HeadersTooLarge | ErrorKind::RequestTimeout) {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// What the log phase needs besides the context.
struct Pending {
    method: Method,
    /// The request target as received (the access log shows its path).
    uri: Uri,
    version: Version,
    route: Option<usize>,
    chain: Arc<Chain>,
    /// Request body bytes received; `None` for a request without a body.
    received: Option<Arc<AtomicU64>>,
    error: Option<&'static str>,
    /// The error the request failed with, for the log phase.
    failure: Option<Error>,
    /// The request's trace (tracing on, and the route does not turn it off); its context is
    /// `Ctx::trace`.
    trace: Option<gw_otel::ServerTrace>,
    /// The spans of a sampled request with global `pre_route` plugins, held until its route is
    /// known.
    held: Option<Arc<gw_otel::HeldSpans>>,
}

async fn handle(
    mut req: Request<ClientBody>,
    facts: Option<HeadFacts>,
    conn: &ConnInfo,
    shared: &Arc<DataPlane>,
    rt: &Arc<Runtime>,
    cx: &mut Ctx,
    p: &mut Pending,
) -> Result<Response<ResponseBody>, Error> {
    let facts = facts.unwrap_or_else(|| head_facts(&req));
    precheck(&req, &facts, rt)?;
    // === pre-route === (global plugins only; skipped without creating its future)
    if !p.chain.pre_route.is_empty() {
        cx.upstreams = Some(upstreams_for(shared, cx));
    }
    if !p.chain.pre_route.is_empty()
        && let Some(r) = Box::pin(pre_route_phase(&mut req, cx, &p.chain)).await?
    {
        return Ok(response_phase(reply_response(r, cx), &p.chain, cx).await);
    }
    cx.host = request_host(&req)?;

    let listener = rt.listeners.get(&*conn.listener);
    if let Some(port) = listener.and_then(|l| l.redirect_https_port) {
        return Ok(redirect_https(&req, &cx.host, port));
    }

    // === route ===
    let found = {
        let parts = gw_router::RequestParts {
            host: &cx.host,
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
            query: req.uri().query(),
        };
        rt.router.find(&parts).map(|m| {
            let params: Vec<(String, String)> = m.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            (*m.value, params, m.matched_len)
        })
    };
    let Some((route_idx, params, matched_len)) = found else {
        shared.metrics.no_route();
        return Err(Error::new(ErrorKind::NoRoute, "no route matched"));
    };
    let route = &rt.routes[route_idx];
    p.route = Some(route_idx);
    p.chain = route.chain.clone();
    if p.trace.is_some() && !route.route.tracing {
        untrace(cx, p);
    } else if let Some(h) = &p.held {
        h.release();
    }
    if !p.chain.is_empty() {
        cx.upstreams = Some(upstreams_for(shared, cx));
    }
    cx.route = Some(route.info.clone());
    cx.params = params;
    if (conn.tls && !route.route.https) || (!conn.tls && !route.route.http) {
        if !conn.tls {
            return Err(Error::new(ErrorKind::HttpsRequired, "route accepts HTTPS only"));
        }
        return Err(Error::new(ErrorKind::NoRoute, "route accepts clear-text HTTP only"));
    }

    // === request head ===
    let upgrade = facts.upgrade;
    let on_upgrade = if upgrade { Some(ClientUpgrade::of(&mut req)) } else { None };
    let (parts, body) = req.into_parts();
    let mut head = RequestHead {
        method: parts.method,
        uri: origin_form(&parts.uri)?,
        version: parts.version,
        headers: parts.headers,
    };
    let upgrade_proto = match parts.extensions.get::<hyper::ext::Protocol>() {
        _ if !upgrade => None,
        // RFC 8441: the protocol of an HTTP/2 extended CONNECT becomes the HTTP/1.1 `Upgrade`.
        Some(p) => HeaderValue::from_str(p.as_str()).ok(),
        None => head.headers.get(header::UPGRADE).cloned(),
    };
    forwarding::scrub_request(&mut head.headers, upgrade, rt.plugins.identity_headers());

    // === access ===
    cx.has_body = !body.is_end_stream();
    // Plugin replies go through the response phase too (CORS and rate-limit headers on a 401
    // or a 429).
    // Phases without plugins are skipped without creating their futures; those with plugins
    // run boxed, so the per-request future stays small for the plain proxy path (it is moved
    // into hyper's dispatcher for every request).
    if p.chain.has_access()
        && let Some(r) = Box::pin(access_phase(&mut head, cx, p, rt, route_idx)).await?
    {
        return Ok(response_phase(r, &p.chain, cx).await);
    }

    // === body limit ===
    let limit = match (route.route.max_body_bytes, cx.max_body_bytes) {
        (0, Some(p)) => p,
        (r, Some(p)) => r.min(p),
        (r, None) => r,
    };
    if limit > 0
        && let Some(len) = facts.content_length
        && len > limit
    {
        return Err(Error::new(ErrorKind::PayloadTooLarge, format!("content-length {len} exceeds {limit}")));
    }
    // `sent` is `None` when the body is already complete (no body, or buffered): the read
    // timeout then starts with the request. Requests without a body allocate neither.
    let (mut body, mut sent) = if body.is_end_stream() {
        (RequestBody::Empty, None)
    } else {
        let received = Arc::new(AtomicU64::new(0));
        p.received = Some(received.clone());
        let sent = Arc::new(SentSignal::default());
        let timeout = rt.gateway.limits.body_read_timeout;
        let trailer_rules = (rt.gateway.request_id_header.clone(), rt.plugins.identity_arc());
        (RequestBody::stream(body, limit, received, sent.clone(), timeout, trailer_rules), Some(sent))
    };
    // Body plugins say from the head whether they want this body (e.g. only JSON); a body no
    // plugin wants streams.
    if !p.chain.request_body.is_empty() && !upgrade {
        let wanted: Vec<&crate::runtime::PluginRef> =
            p.chain.request_body.iter().filter(|pl| pl.wants_request_body(&head, cx)).collect();
        if !wanted.is_empty() {
            let cap = if limit == 0 { MAX_BUFFERED_BODY } else { limit.min(MAX_BUFFERED_BODY) };
            if let Some(len) = facts.content_length
                && len > cap
            {
                return Err(Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!("request body a plugin must edit is larger than {cap} bytes"),
                ));
            }
            match Box::pin(request_body_phase(body, cap, &mut head, &wanted, cx)).await? {
                Ok(bytes) => {
                    sent = None;
                    body = RequestBody::Full(Some(bytes));
                }
                Err(r) => return Ok(response_phase(reply_response(r, cx), &p.chain, cx).await),
            }
        }
    }

    // Request body filters see the body's frames on their way upstream.
    let mut body_fault: Option<BodyFault> = None;
    if !p.chain.request_filter.is_empty() && !upgrade {
        let filters: Vec<Box<dyn gw_core::BodyFilter>> =
            p.chain.request_filter.iter().filter_map(|pl| pl.request_filter(&mut head, cx)).collect();
        if !filters.is_empty() {
            let length = if filters.iter().all(|f| f.keeps_length()) {
                http_body::Body::size_hint(&body).exact()
            } else {
                head.headers.remove(header::CONTENT_LENGTH);
                None
            };
            body = body.filtered(filters, length);
            // A filter's refusal (a malformed body) is the request's answer, whatever the
            // upstream's connection made of the aborted body.
            if let RequestBody::Core(b, len) = body {
                let fault = BodyFault::default();
                body = RequestBody::Core(Box::new(gw_core::Body::from_source(fault.watch(*b))), len);
                body_fault = Some(fault);
            }
        }
    }

    // === upstream request ===
    let service = &route.service;
    if let ServiceRtKind::Proxy { path_prefix, .. } = &service.kind {
        rewrite_path(&mut head, route, cx, matched_len, path_prefix)?;
    }
    set_consumer_headers(&mut head.headers, cx);
    let peer_trusted = forwarding::is_trusted(conn.peer.ip(), &rt.gateway.trusted_proxies);
    // On the plain HTTP/1.1 path (untrusted peer, no plugin that could look at the upstream
    // request, no hashing on a header) the forwarding fields are not put in the map: the
    // HTTP/1.1 client writes them as one block kept per connection and host, in place of the
    // client's copies. The upstream receives the same fields either way.
    let forwarding_block = match &service.kind {
        ServiceRtKind::Proxy { upstream, protocol, .. }
            if !peer_trusted
                && on_upgrade.is_none()
                && !protocol.is_http2()
                && p.chain.upstream_request.is_empty()
                && !matches!(upstream.hash_on, Some(HashOn::Header(_))) =>
        {
            Some(conn.forwarding.untrusted_block(&cx.host))
        }
        _ => None,
    };
    if forwarding_block.is_none() {
        // Room for the forwarding headers and the request id at once (hyper sizes the map for
        // the fields it parsed, so each insert would otherwise grow it).
        head.headers.reserve(8);
        forwarding::set_forwarding_headers(&mut head.headers, &conn.forwarding, peer_trusted, &cx.host);
    }
    head.headers.insert(rt.gateway.request_id_header.clone(), cx.request_id.clone());
    if !p.chain.upstream_request.is_empty() {
        let before = head.uri.clone();
        for pl in &p.chain.upstream_request {
            if let Flow::Respond(r) = pl.upstream_request(&mut head, cx).await? {
                return Ok(response_phase(reply_response(r, cx), &p.chain, cx).await);
            }
        }
        // A path a plugin produced is checked like a client's.
        if head.uri.path() != before.path() {
            check_path(&head.method, head.uri.path())?;
        }
    }

    // === service ===
    let resp = match &service.kind {
        ServiceRtKind::Echo => Box::pin(crate::services::echo(&head, body, cx, &conn.listener)).await?,
        ServiceRtKind::Static(s) => crate::services::static_response(s),
        ServiceRtKind::Aggregate(plan) => {
            Box::pin(crate::aggregate::serve(&head, body, plan, rt, &shared.upstreams, &shared.metrics, cx)).await?
        }
        ServiceRtKind::Proxy { upstream, protocol, .. } => {
            if let (Some(on_upgrade), Some(proto)) = (on_upgrade, upgrade_proto) {
                if let (Some(t), Some(parent)) = (rt.tracing.as_deref(), &cx.trace) {
                    t.inject_parent(parent, &mut head.headers);
                }
                Box::pin(crate::upgrade::forward(head, proto, on_upgrade, upstream, service, route, cx, &shared.tasks))
                    .await?
            } else {
                let fwd = forwarding_block.as_deref();
                let preserve_host = route.route.preserve_host;
                let tracing = rt.tracing.as_deref();
                let r = forward(
                    &mut head,
                    body,
                    sent.as_ref(),
                    fwd,
                    upstream,
                    *protocol,
                    service,
                    preserve_host,
                    tracing,
                    cx,
                )
                .await;
                match r {
                    Ok(r) => r,
                    Err(e) => {
                        // A body filter's refusal of the request body is the request's answer.
                        let e = body_fault.and_then(|f| f.take()).unwrap_or(e);
                        if !p.chain.upstream_failed.is_empty() && e.side() != gw_error::Side::Downstream {
                            return match p.chain.upstream_failed.iter().find_map(|pl| pl.upstream_failed(&e, cx)) {
                                Some(r) => Ok(response_phase(reply_response(r, cx), &p.chain, cx).await),
                                None => Err(e),
                            };
                        }
                        return Err(e);
                    }
                }
            }
        }
    };
    let mut resp = if p.chain.has_upstream_response() {
        Box::pin(upstream_response_phase(resp, &p.chain, cx, p.method == Method::HEAD, &shared.drains)).await?
    } else {
        resp
    };
    // `response_phase` inlined for the common case: no ready future for the response to be
    // moved through (each move is a copy of the response head).
    if p.chain.response.is_empty() {
        add_response_headers(&mut resp, cx);
        Ok(resp)
    } else {
        Ok(Box::pin(run_response_plugins(resp, &p.chain, cx)).await)
    }
}

/// Start the request's trace when its head arrives: its context goes on `cx` (every upstream
/// call of the request, the global `pre_route` plugins' included, descends from it).
fn begin_trace(t: &gw_otel::Tracing, req: &Request<ClientBody>, cx: &mut Ctx) -> gw_otel::ServerTrace {
    let (tr, parent) = t.begin(req.headers());
    cx.record_attempts = parent.sampled;
    cx.trace = Some(parent);
    tr
}

/// The route turns tracing off: no span, and the client's trace headers go upstream as sent.
#[cold]
fn untrace(cx: &mut Ctx, p: &mut Pending) {
    p.trace = None;
    if let Some(h) = p.held.take() {
        h.discard();
    }
    cx.trace = None;
    cx.record_attempts = false;
}

/// The side-call client for the request's plugins, carrying its trace context.
fn upstreams_for(shared: &DataPlane, cx: &Ctx) -> gw_core::Upstreams {
    match &cx.trace {
        Some(t) => shared.upstreams.with_trace(t.clone()),
        None => shared.upstreams.clone(),
    }
}

/// `http.route`: the route's path pattern when it has one (`/users/{id}`, `/api/*`), else its
/// name.
fn route_pattern(route: &RouteRt) -> String {
    match route.route.paths.as_slice() {
        [gw_config::model::PathPattern::Prefix(p)] => format!("{p}/*"),
        [one] => one.as_str().to_string(),
        _ => route.info.name.to_string(),
    }
}

/// Reject malformed, ambiguous or oversized requests before anything else looks at them.
fn precheck<B>(req: &Request<B>, facts: &HeadFacts, rt: &Runtime) -> Result<(), Error> {
    let limits = &rt.gateway.limits;
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err(Error::new(ErrorKind::UriTooLong, format!("URI of {uri_len} bytes")));
    }
    if req.headers().len() > limits.max_headers {
        return Err(Error::new(ErrorKind::HeadersTooLarge, format!("{} header fields", req.headers().len())));
    }
    if facts.hosts > 1 {
        return Err(Error::new(ErrorKind::BadRequest, "duplicate Host header"));
    }
    if req.version() == Version::HTTP_11 && facts.hosts == 0 && req.uri().authority().is_none() {
        return Err(Error::new(ErrorKind::BadRequest, "HTTP/1.1 request without Host"));
    }
    if facts.transfer_encoding && facts.content_lengths > 0 {
        return Err(Error::new(ErrorKind::BadRequest, "both Content-Length and Transfer-Encoding"));
    }
    if facts.content_lengths > 1 {
        return Err(Error::new(ErrorKind::BadRequest, "several Content-Length headers"));
    }
    check_path(req.method(), req.uri().path())
}

/// Paths are routed as received, so anything an upstream might normalise differently from the
/// router is refused: dot segments (raw or percent-encoded), backslashes, encoded NULs.
fn check_path(method: &Method, path: &str) -> Result<(), Error> {
    if path == "*" && method == Method::OPTIONS {
        return Ok(());
    }
    if !path.starts_with('/') {
        return Err(Error::new(ErrorKind::BadRequest, "path must start with '/'"));
    }
    let bad = |why: &'static str| Err(Error::new(ErrorKind::BadRequest, why));
    // One pass over the bytes for the three checks (the path of most requests has no `%`).
    let (mut backslash, mut percent, mut dot_segment) = (false, false, false);
    let mut segment = 0;
    let is_dots = |s: &[u8]| s == b"." || s == b"..";
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => backslash = true,
            b'%' => percent = true,
            b'/' => {
                dot_segment |= is_dots(&bytes[segment..i]);
                segment = i + 1;
            }
            _ => {}
        }
    }
    dot_segment |= is_dots(&bytes[segment..]);
    if backslash {
        return bad("backslash in path");
    }
    if percent {
        let lower = path.to_ascii_lowercase();
        if lower.contains("%00") {
            return bad("encoded NUL in path");
        }
        if lower.contains("%2e") || lower.contains("%5c") {
            // Decode just the dot and backslash escapes and re-check the segments.
            let decoded = lower.replace("%2e", ".").replace("%5c", "\\");
            if decoded.contains('\\') {
                return bad("encoded backslash in path");
            }
            if decoded.split('/').any(|s| s == "." || s == "..") {
                return bad("encoded dot segment in path");
            }
        }
    }
    if dot_segment {
        return bad("dot segment in path");
    }
    Ok(())
}

/// The request host: the URI authority (HTTP/2, absolute-form) or the Host header; lowercase,
/// no port. The two must agree when both are present.
fn request_host<B>(req: &Request<B>) -> Result<String, Error> {
    // The Host value must be valid even when an absolute-form target supersedes it (RFC 9112
    // §3.2); the target's authority is checked the same way.
    let header_host = match req.headers().get(header::HOST) {
        Some(h) if crate::wire::is_valid_host(h.as_bytes()) => h.to_str().ok(),
        Some(_) => return Err(Error::new(ErrorKind::BadRequest, "invalid Host")),
        None => None,
    };
    let uri_host = req.uri().authority().map(|a| a.as_str());
    let raw = match (uri_host, header_host) {
        (Some(u), Some(h)) => {
            if req.version() == Version::HTTP_2 && !u.eq_ignore_ascii_case(h) {
                return Err(Error::new(ErrorKind::BadRequest, ":authority and Host disagree"));
            }
            u
        }
        (Some(u), None) => u,
        (None, Some(h)) => h,
        (None, None) => "",
    };
    if uri_host.is_some() && !crate::wire::is_valid_host(raw.as_bytes()) {
        return Err(Error::new(ErrorKind::BadRequest, "invalid authority"));
    }
    Ok(strip_port(raw).trim_end_matches('.').to_ascii_lowercase())
}

fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.bytes().rposition(|b| b == b':') {
        Some(i) if h.as_bytes()[i + 1..].iter().all(u8::is_ascii_digit) => &h[..i],
        _ => h,
    }
}

fn origin_form(uri: &Uri) -> Result<Uri, Error> {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return Ok(uri.clone());
    }
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    pq.parse().map_err(|_| Error::new(ErrorKind::BadRequest, "invalid request target"))
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// An HTTP/2 extended CONNECT (RFC 8441: `:method CONNECT` with `:protocol`, e.g. a WebSocket
/// over HTTP/2): tunnelled like an HTTP/1.1 upgrade.
fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req.method() == Method::CONNECT
        && req.extensions().get::<hyper::ext::Protocol>().is_some()
}

pub(crate) fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn redirect_https<B>(req: &Request<B>, host: &str, port: u16) -> Response<ResponseBody> {
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    let location = if port == 443 { format!("https://{host}{pq}") } else { format!("https://{host}:{port}{pq}") };
    let mut r = Response::new(ResponseBody::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Pre-routing phase: the global chain's `pre_route` plugins see (and may edit) the head before
/// the host is read and the route looked up. `Some(reply)` ends the request.
async fn pre_route_phase(req: &mut Request<ClientBody>, cx: &mut Ctx, chain: &Chain) -> Result<Option<Reply>, Error> {
    let mut head = RequestHead {
        method: std::mem::take(req.method_mut()),
        uri: std::mem::take(req.uri_mut()),
        version: req.version(),
        headers: std::mem::take(req.headers_mut()),
    };
    let before = head.uri.clone();
    let mut outcome = Ok(None);
    for pl in &chain.pre_route {
        match pl.pre_route(&mut head, cx).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Respond(r)) => {
                outcome = Ok(Some(r));
                break;
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    // A path a plugin produced is checked like a client's.
    if outcome.as_ref().is_ok_and(Option::is_none) && head.uri != before {
        check_path(&head.method, head.uri.path())?;
    }
    *req.method_mut() = head.method;
    *req.uri_mut() = head.uri;
    *req.headers_mut() = head.headers;
    outcome
}

/// Access phase: pre-auth plugins, authentication, then post-auth plugins (with the consumer's
/// own plugin instances merged in). `Some(response)` ends the request.
async fn access_phase(
    head: &mut RequestHead,
    cx: &mut Ctx,
    p: &mut Pending,
    rt: &Runtime,
    route_idx: usize,
) -> Result<Option<Response<ResponseBody>>, Error> {
    let route = &rt.routes[route_idx];
    let chain = p.chain.clone();
    for pl in &chain.pre_auth {
        if let Flow::Respond(r) = pl.access(head, cx).await? {
            return Ok(Some(reply_response(r, cx)));
        }
    }
    if !chain.auth.is_empty() {
        if let Some(r) = authenticate(&chain, route.route.auth_mode, head, cx).await? {
            route.metrics.auth_refused();
            return Ok(Some(reply_response(r, cx)));
        }
        if let Some(c) = &cx.consumer
            && rt.plugins.has_consumer_plugins(c.index)
            && let Some(ch) = rt.plugins.consumer_chain(&rt.config, &chain, route_idx, route.route.service, c.index)
        {
            p.chain = ch;
        }
    }
    let chain = p.chain.clone();
    for pl in &chain.post_auth {
        if let Flow::Respond(r) = pl.access(head, cx).await? {
            if r.status == StatusCode::FORBIDDEN {
                route.metrics.authz_refused();
            }
            return Ok(Some(reply_response(r, cx)));
        }
    }
    Ok(None)
}

/// Run the auth plugins per `mode`. `Some(reply)` refuses the request.
async fn authenticate(
    chain: &Chain,
    mode: AuthMode,
    head: &mut RequestHead,
    cx: &mut Ctx,
) -> Result<Option<Reply>, Error> {
    let mut first_challenge: Option<Reply> = None;
    let mut first_rejection: Option<Reply> = None;
    for pl in &chain.auth {
        match pl.authenticate(head, cx).await? {
            AuthOutcome::Authenticated => {
                if mode == AuthMode::Any {
                    return Ok(None);
                }
            }
            AuthOutcome::NoCredentials { challenge } => {
                if mode == AuthMode::All {
                    return Ok(Some(challenge));
                }
                first_challenge.get_or_insert(challenge);
            }
            AuthOutcome::Rejected(r) => {
                if mode == AuthMode::All {
                    return Ok(Some(r));
                }
                first_rejection.get_or_insert(r);
            }
        }
    }
    if mode == AuthMode::All {
        return Ok(None);
    }
    // No plugin authenticated: the first anonymous consumer configured on one of them, if any.
    if let Some(anon) = chain.auth.iter().find_map(|pl| pl.anonymous()) {
        cx.consumer = Some(anon);
        cx.credential_id = None;
        return Ok(None);
    }
    // Otherwise prefer the answer about credentials that were present.
    Ok(Some(
        first_rejection
            .or(first_challenge)
            .unwrap_or_else(|| Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized")),
    ))
}

/// Buffer the request body (up to `cap`) and run the request-body plugins that want it over it:
/// the new body, or a plugin's reply.
async fn request_body_phase(
    body: RequestBody,
    cap: u64,
    head: &mut RequestHead,
    wanted: &[&crate::runtime::PluginRef],
    cx: &mut Ctx,
) -> Result<Result<Bytes, Reply>, Error> {
    let mut bytes = collect_body(body, cap).await?;
    for pl in wanted {
        if let Flow::Respond(r) = pl.request_body(head, &mut bytes, cx).await? {
            return Ok(Err(r));
        }
    }
    head.headers.remove(header::TRANSFER_ENCODING);
    head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok(Ok(bytes))
}

async fn collect_body(body: RequestBody, cap: u64) -> Result<Bytes, Error> {
    let limited = http_body_util::Limited::new(body, cap as usize);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() || e.is::<BodyTooLarge>() {
                Err(Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!("request body a plugin must edit is larger than {cap} bytes"),
                ))
            } else {
                Err(crate::fault::client_body_failure(e))
            }
        }
    }
}

/// strip_path / rewrite / service path prefix.
fn rewrite_path(
    head: &mut RequestHead,
    route: &RouteRt,
    cx: &Ctx,
    matched_len: usize,
    prefix: &str,
) -> Result<(), Error> {
    let r = &route.route;
    if !r.strip_path && r.rewrite.is_none() && prefix.is_empty() {
        return Ok(());
    }
    let path = head.uri.path();
    let mut new_path = if let Some(t) = &r.rewrite {
        t.render(|n| cx.param(n))
    } else if r.strip_path {
        let rest = path.get(matched_len..).unwrap_or("");
        if rest.starts_with('/') { rest.to_string() } else { format!("/{rest}") }
    } else {
        path.to_string()
    };
    if !prefix.is_empty() {
        new_path = if new_path == "/" { prefix.to_string() } else { format!("{prefix}{new_path}") };
    }
    head.set_path(&new_path).map_err(|e| Error::new(ErrorKind::BadRequest, "rewritten path is invalid").with_cause(e))
}

/// The consumer's identity fields and the credential that authenticated the request (also
/// without a consumer, e.g. a JWKS token's subject).
fn set_consumer_headers(h: &mut HeaderMap, cx: &Ctx) {
    if let Some(c) = &cx.consumer {
        for (k, v) in &c.upstream_headers {
            h.insert(k.clone(), v.clone());
        }
    }
    if let Some(id) = &cx.credential_id
        && let Ok(v) = HeaderValue::from_str(id)
    {
        h.insert(gw_core::identity::CREDENTIAL_IDENTIFIER.clone(), v);
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

fn hash_key(upstream: &UpstreamRt, head: &RequestHead, cx: &Ctx) -> Option<Vec<u8>> {
    match upstream.hash_on.as_ref()? {
        HashOn::ClientIp => Some(cx.client_ip.to_string().into_bytes()),
        HashOn::Header(h) => head.headers.get(h).map(|v| v.as_bytes().to_vec()),
        HashOn::Cookie(name) => head
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| v.as_bytes().to_vec())
            }),
    }
}

/// Proxy to the upstream: pick a target, send, retry where safe, and stream the response back.
/// The one way to an upstream over HTTP (proxied traffic and plugins' side calls, see
/// `exchange`); upgrades go through `upgrade`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward(
    head: &mut RequestHead,
    body: RequestBody,
    sent: Option<&Arc<SentSignal>>,
    forwarding_block: Option<&[u8]>,
    upstream: &Arc<UpstreamRt>,
    protocol: UpstreamProtocol,
    service: &ServiceRt,
    preserve_host: bool,
    tracing: Option<&gw_otel::Tracing>,
    cx: &mut Ctx,
) -> Result<Response<ResponseBody>, Error> {
    let t = &service.timeouts;
    // A traced request: each attempt of a sampled one gets a client span whose context goes
    // upstream; an unsampled one sends its server span's context (not sampled) as it is. A
    // W3C `traceparent` is written by the HTTP/1.1 encoder straight from the ids
    // (`traceparent` below), not put in the header map.
    let mut traceparent: Option<gw_core::trace::Traceparent> = None;
    let traced = match (tracing, &cx.trace) {
        (tr, Some(parent)) => trace_head(tr, parent, &mut head.headers, &mut traceparent),
        _ => None,
    };
    let deadline = t.total.map(|d| tokio::time::Instant::now() + d);
    let started = gw_core::tick::now();
    service.budget.deposit(started);
    let key = hash_key(upstream, head, cx);
    let idempotent = is_idempotent(&head.method);
    // A filtered body streams whatever the head says: it is never re-sent from scratch.
    let filtered = matches!(body, RequestBody::Core(..));
    let mut body = Some(body);
    // Targets already tried; filled only when retrying (no allocation otherwise).
    let mut tried: Vec<usize> = Vec::new();
    let mut attempt: u32 = 0;
    let host_header = if preserve_host { Some(cx.host.clone()) } else { None };
    let mut now = started;
    loop {
        let sel = upstream.balancer.select(key.as_deref(), &tried, now).map_err(|e| match e {
            SelectError::NoHealthyTarget => {
                Error::new(ErrorKind::NoHealthyUpstream, format!("upstream {}", upstream.name))
            }
            SelectError::AllAtCapacity => {
                Error::new(ErrorKind::UpstreamOverloaded, format!("upstream {}", upstream.name))
            }
        })?;
        let permit = match &upstream.breaker {
            Some(b) => Some(
                b.try_acquire(now)
                    .map_err(|_| Error::new(ErrorKind::CircuitOpen, format!("upstream {}", upstream.name)))?,
            ),
            None => None,
        };
        let endpoint = upstream.endpoints[sel.index].clone();
        cx.upstream_addr = Some(endpoint.authority.clone());
        let inflight = sel.target.begin();
        let req_body = body.take().unwrap_or(RequestBody::Empty);

        let attempt_start = now;
        let span = match (traced, &cx.trace) {
            (Some(tr), Some(parent)) => {
                let s = tr.client_span(parent, head.method.as_str(), &endpoint.authority, attempt);
                if parent.format == gw_core::TraceFormat::W3c {
                    let (trace_id, span_id) = s.ids();
                    traceparent =
                        Some(gw_core::trace::Traceparent { trace_id: *trace_id, span_id: *span_id, sampled: true });
                } else {
                    tr.inject_span(&s, &mut head.headers);
                }
                Some(s)
            }
            _ => None,
        };
        let mut facts = ConnFacts::default();
        // The total timeout wraps the attempt only when one is set. The attempt is awaited
        // here rather than in a helper: each level of async fn costs a copy of its future.
        let attempt_fut = self::attempt(
            &endpoint,
            head,
            req_body,
            forwarding_block,
            traceparent.as_ref(),
            host_header.as_deref(),
            protocol,
            t.connect,
            t.read,
            t.write,
            sent,
            &mut facts,
        );
        let result = match deadline {
            None => attempt_fut.await,
            Some(d) => match tokio::time::timeout_at(d, attempt_fut).await {
                Ok(r) => r,
                Err(_) => Err((Error::new(ErrorKind::TotalTimeout, "total timeout reached"), None)),
            },
        };
        now = gw_core::tick::now();
        let latency = now.duration_since(attempt_start);
        if span.is_some() || cx.record_attempts {
            let outcome = match &result {
                Ok(r) => gw_core::AttemptOutcome::Status(r.status().as_u16()),
                Err((e, _)) => gw_core::AttemptOutcome::Failed(e.kind()),
            };
            report_attempt(cx, span, &endpoint.authority, attempt, &facts, attempt_start, latency, outcome);
        }
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let failed = upstream.failure_statuses.contains(&status);
                if let Some(p) = permit {
                    p.record(!failed && status < 500, now);
                }
                let can_retry = attempt < service.retries.attempts
                    && service.retries.on_statuses.contains(&status)
                    && idempotent
                    && !filtered
                    && sent_nothing(head)
                    && deadline.is_none_or(|d| tokio::time::Instant::now() < d)
                    && service.budget.try_withdraw(now);
                let outcome = if failed { Outcome::Failure } else { Outcome::Success };
                if can_retry {
                    inflight.finish(outcome, latency, now);
                    if let Some(c) = &service.retried {
                        c.inc();
                    }
                    tracing::debug!(status, target = %endpoint.authority, attempt, "retrying after upstream status");
                    attempt += 1;
                    tried.push(sel.index);
                    body = Some(RequestBody::Empty);
                    continue;
                }
                cx.upstream_latency = Some(now.duration_since(started));
                let (parts, incoming) = resp.into_parts();
                let on_done = Box::new(move |failed: bool| {
                    let outcome = if failed { Outcome::Failure } else { outcome };
                    inflight.finish(outcome, latency, gw_core::tick::now());
                });
                let body = ResponseBody::upstream(UpstreamBody::new(incoming, t.read, on_done));
                return Ok(Response::from_parts(parts, body));
            }
            Err((err, returned)) => {
                // The client's side failed (its body malformed, stalled, too large, or the
                // client gone): neither the target's health nor the circuit hears of it (the
                // in-flight slot and the permit are dropped without an outcome), and it is
                // never retried. hyper's HTTP/2 client reports its own error, so the body's
                // record of its failure decides too.
                if let Some(fault) = sent.and_then(|s| s.fault()) {
                    let e = Error::new(fault.kind(), format!("request to {}", endpoint.authority)).with_cause(err);
                    return Err(e);
                }
                if err.side() == gw_error::Side::Downstream {
                    return Err(err);
                }
                inflight.finish(
                    if err.kind().is_upstream_failure() { Outcome::Failure } else { Outcome::Success },
                    latency,
                    now,
                );
                if let Some(p) = permit {
                    p.record(!err.kind().is_upstream_failure(), now);
                }
                let replayable = returned.is_some() || (!filtered && sent_nothing(head));
                let safe = match err.retry() {
                    Retry::Safe => true,
                    Retry::IfIdempotent => idempotent,
                    Retry::Never => false,
                };
                let can_retry = safe
                    && replayable
                    && attempt < service.retries.attempts
                    && deadline.is_none_or(|d| tokio::time::Instant::now() < d)
                    && service.budget.try_withdraw(now);
                if !can_retry {
                    return Err(err);
                }
                if let Some(c) = &service.retried {
                    c.inc();
                }
                tracing::debug!(error = %err, target = %endpoint.authority, attempt, "retrying on another target");
                attempt += 1;
                tried.push(sel.index);
                body = Some(returned.unwrap_or(RequestBody::Empty));
            }
        }
    }
}

/// Put a traced request's context on its upstream request: the `tracestate` to pass on in
/// the map; a W3C `traceparent` of an unsampled request into `traceparent` (the same for
/// every attempt), other formats into the map. The tracer when attempts get spans (sampled).
fn trace_head<'t>(
    tracing: Option<&'t gw_otel::Tracing>,
    parent: &gw_core::TraceParent,
    headers: &mut HeaderMap,
    traceparent: &mut Option<gw_core::trace::Traceparent>,
) -> Option<&'t gw_otel::Tracing> {
    if parent.format != gw_core::TraceFormat::W3c {
        if parent.sampled && tracing.is_some() {
            return tracing;
        }
        parent.inject(headers);
        return None;
    }
    if let Some(state) = &parent.tracestate {
        headers.insert(HeaderName::from_static("tracestate"), state.clone());
    }
    if parent.sampled && tracing.is_some() {
        return tracing;
    }
    *traceparent = Some(gw_core::trace::Traceparent {
        trace_id: parent.trace_id,
        span_id: parent.span_id,
        sampled: parent.sampled,
    });
    None
}

/// A request can be re-sent from scratch only when it had no body.
fn sent_nothing(head: &RequestHead) -> bool {
    content_length(&head.headers).is_none_or(|l| l == 0) && !head.headers.contains_key(header::TRANSFER_ENCODING)
}

/// The request for hyper's HTTP/2 client (HTTP/1.1 requests are encoded by `h1` directly from
/// the head).
fn build_h2_request(
    head: &RequestHead,
    body: RequestBody,
    endpoint: &crate::pool::Endpoint,
    host: Option<&str>,
    protocol: UpstreamProtocol,
) -> Result<Request<RequestBody>, Error> {
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.headers_mut() = head.headers.clone();
    let scheme = if protocol.is_tls() { "https" } else { "http" };
    let auth = host.unwrap_or(&endpoint.authority);
    let pq = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
    *req.uri_mut() = format!("{scheme}://{auth}{pq}")
        .parse()
        .map_err(|_| Error::new(ErrorKind::BadRequest, "cannot build upstream URI"))?;
    req.headers_mut().remove(header::HOST);
    *req.version_mut() = Version::HTTP_2;
    Ok(req)
}

type SendResult = Result<Response<UpstreamInner>, h1::Failed<RequestBody>>;

/// What an attempt learned about its connection.
#[derive(Default)]
struct ConnFacts {
    /// Connect time of a new connection (`None`: an idle or shared one).
    connected: Option<Duration>,
    /// A connection was had.
    had: bool,
}

/// Record an attempt's report on the context (when asked for) and end its span.
#[cold]
#[allow(clippy::too_many_arguments)]
fn report_attempt(
    cx: &mut Ctx,
    span: Option<gw_otel::ClientSpan>,
    target: &Arc<str>,
    attempt: u32,
    facts: &ConnFacts,
    started: Instant,
    duration: Duration,
    outcome: gw_core::AttemptOutcome,
) {
    let report = gw_core::AttemptReport {
        target: target.clone(),
        attempt,
        connection: facts.had.then_some(if facts.connected.is_some() {
            gw_core::ConnectionUse::New
        } else {
            gw_core::ConnectionUse::Reused
        }),
        connect_time: facts.connected,
        started,
        duration,
        outcome,
    };
    if let Some(s) = span {
        s.finish(&report);
    }
    if cx.record_attempts {
        cx.attempts.push(report);
    }
}

/// One attempt: check out a connection, send, and wait for the response head. On failure, the
/// request body is handed back when none of it was sent (so a retry can reuse it).
#[allow(clippy::too_many_arguments)]
async fn attempt(
    endpoint: &Arc<crate::pool::Endpoint>,
    head: &RequestHead,
    body: RequestBody,
    forwarding_block: Option<&[u8]>,
    traceparent: Option<&gw_core::trace::Traceparent>,
    host: Option<&str>,
    protocol: UpstreamProtocol,
    connect: Duration,
    read: Duration,
    write: Duration,
    sent: Option<&Arc<SentSignal>>,
    facts: &mut ConnFacts,
) -> SendResult {
    let conn = match endpoint.checkout(connect, write, &mut facts.connected).await {
        Ok(c) => c,
        Err(e) => return Err((e, Some(body))),
    };
    facts.had = true;
    match conn {
        Conn::H1(conn) => {
            let host = host.map_or(endpoint.authority.as_bytes(), str::as_bytes);
            if host.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err((Error::new(ErrorKind::BadRequest, "invalid Host"), None));
            }
            let (parts, body) =
                h1::exchange(conn, endpoint, head, forwarding_block, traceparent, host, body, read).await?;
            Ok(Response::from_parts(parts, UpstreamInner::H1(body)))
        }
        // Boxed: its timers and hyper's futures would otherwise make every request's future
        // larger (it is moved several times per request).
        Conn::H2(sender) => {
            Box::pin(attempt_h2(sender, endpoint, head, body, host, protocol, traceparent, read, sent)).await
        }
    }
}

/// The first failure of a filtered request body (a body filter refusing it), kept so that the
/// request is answered with it rather than with what the upstream's connection made of the
/// aborted body (hyper's HTTP/2 client reports a reset stream, not the body's error).
#[derive(Clone, Default)]
struct BodyFault(Arc<std::sync::Mutex<Option<Error>>>);

impl BodyFault {
    /// `body`, its first error recorded here.
    fn watch(&self, body: gw_core::Body) -> FaultWatch {
        FaultWatch { body, fault: self.clone() }
    }

    fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

struct FaultWatch {
    body: gw_core::Body,
    fault: BodyFault,
}

impl gw_core::body::FrameSource for FaultWatch {
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<gw_core::Result<gw_core::Frame>>> {
        let r = self.body.poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(e))) = &r
            && e.side() == gw_error::Side::Downstream
        {
            let mut copy = Error::new(e.kind(), e.context().to_string()).with_retry(Retry::Never);
            for (k, v) in e.public_fields() {
                copy = copy.with_public_field(k, v.clone());
            }
            self.fault.0.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(copy);
        }
        r
    }

    fn is_end(&self) -> bool {
        self.body.is_end()
    }
}

/// The HTTP/2 part of [`attempt`]: hyper's client on the shared connection.
// (`SendResult` hands the request body back on failure, as `attempt` does.)
#[allow(clippy::too_many_arguments)]
async fn attempt_h2(
    mut sender: hyper::client::conn::http2::SendRequest<RequestBody>,
    endpoint: &Arc<crate::pool::Endpoint>,
    head: &RequestHead,
    body: RequestBody,
    host: Option<&str>,
    protocol: UpstreamProtocol,
    traceparent: Option<&gw_core::trace::Traceparent>,
    read: Duration,
    sent: Option<&Arc<SentSignal>>,
) -> SendResult {
    let mut req = match build_h2_request(head, body, endpoint, host, protocol) {
        Ok(r) => r,
        Err(e) => return Err((e, None)),
    };
    if let Some(tp) = traceparent
        && let Ok(v) = HeaderValue::from_bytes(&tp.value())
    {
        req.headers_mut().insert(HeaderName::from_static("traceparent"), v);
    }
    if let Err(e) = sender.ready().await {
        let err =
            Error::new(ErrorKind::UpstreamProtocol, format!("HTTP/2 connection to {} closed", endpoint.authority))
                .with_cause(e)
                .with_retry(Retry::Safe);
        return Err((err, Some(req.into_body())));
    }
    let fut = sender.try_send_request(req);
    let timed_out = || {
        Err((
            Error::new(
                ErrorKind::UpstreamTimeout,
                format!("{} sent no response head within {read:?}", endpoint.authority),
            )
            .with_retry(Retry::IfIdempotent),
            None,
        ))
    };
    // The read timeout starts once the request body is fully sent (a slow upload is bounded by
    // the write timeout instead). Requests without a body skip the wait.
    let result = if sent.is_none_or(|s| s.is_set()) {
        match tokio::time::timeout(read, fut).await {
            Ok(r) => r,
            Err(_) => return timed_out(),
        }
    } else {
        let read_timer = async {
            if let Some(s) = sent {
                s.wait().await;
            }
            tokio::time::sleep(read).await;
        };
        tokio::select! {
            r = fut => r,
            () = read_timer => return timed_out(),
        }
    };
    match result {
        Ok(resp) => {
            // (The HTTP/1.1 client leaves hop-by-hop fields out as it parses.)
            let (mut parts, body) = resp.into_parts();
            forwarding::strip_hop_by_hop(&mut parts.headers, false);
            Ok(Response::from_parts(parts.into(), UpstreamInner::Hyper(body)))
        }
        Err(mut e) => {
            let unsent = e.take_message().map(|m| m.into_body());
            let herr = e.into_error();
            let stalled = herr.source().is_some_and(|s| s.to_string().contains("stalled"));
            let kind = if herr.is_timeout() || stalled {
                ErrorKind::UpstreamWriteTimeout
            } else {
                ErrorKind::UpstreamProtocol
            };
            // Only a request hyper hands back unsent is safe to retry whatever its method: an
            // incomplete response may follow a processed request.
            let retry = if unsent.is_some() { Retry::Safe } else { Retry::IfIdempotent };
            let err = Error::new(kind, format!("request to {}", endpoint.authority)).with_cause(herr).with_retry(retry);
            Err((err, unsent))
        }
    }
}

use std::error::Error as _;

async fn upstream_response_phase(
    resp: Response<ResponseBody>,
    chain: &Chain,
    cx: &mut Ctx,
    head_request: bool,
    drains: &crate::body::Drains,
) -> Result<Response<ResponseBody>, Error> {
    let (parts, body) = resp.into_parts();
    let mut rh = ResponseHead::new(parts.status, parts.version, parts.fields.into_map());
    for pl in &chain.upstream_response {
        if let Flow::Respond(r) = pl.upstream_response(&mut rh, cx).await? {
            // The upstream's body is dropped unread.
            drop(body);
            return Ok(reply_response(r, cx));
        }
    }
    // Responses without a body are never buffered (a HEAD keeps the upstream's Content-Length);
    // the others only when a body plugin wants them (e.g. only JSON), else they stream.
    let bodiless = head_request
        || rh.status.is_informational()
        || rh.status == StatusCode::NO_CONTENT
        || rh.status == StatusCode::NOT_MODIFIED;
    // Body filters see the upstream's frames as they pass (nothing is buffered for them).
    let filters: Vec<Box<dyn gw_core::BodyFilter>> = if chain.response_filter.is_empty() || bodiless {
        Vec::new()
    } else {
        chain.response_filter.iter().filter_map(|pl| pl.response_filter(&mut rh, cx)).collect()
    };
    let body = if filters.is_empty() {
        body
    } else {
        if !filters.iter().all(|f| f.keeps_length()) {
            rh.headers.remove(header::CONTENT_LENGTH);
        }
        ResponseBody::core_detachable(body.into_core().filtered(filters), drains)
    };
    let wanted: Vec<&crate::runtime::PluginRef> = if chain.response_body.is_empty() || bodiless {
        Vec::new()
    } else {
        chain.response_body.iter().filter(|pl| pl.wants_response_body(&rh, cx)).collect()
    };
    let body = if wanted.is_empty() {
        body
    } else {
        let too_large = || {
            Error::new(ErrorKind::ResponseTooLarge, format!("response body to edit exceeds {MAX_BUFFERED_BODY} bytes"))
        };
        if content_length(&rh.headers).is_some_and(|l| l > MAX_BUFFERED_BODY) {
            return Err(too_large());
        }
        let collected = match body.into_core().collect(MAX_BUFFERED_BODY as usize).await {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::ResponseTooLarge => return Err(too_large()),
            Err(e) => {
                return Err(Error::new(ErrorKind::UpstreamProtocol, "reading upstream body").with_cause(e));
            }
        };
        let mut bytes = collected.data;
        rh.trailers = collected.trailers;
        for pl in wanted {
            pl.response_body(&mut rh, &mut bytes, cx).await?;
        }
        rh.headers.remove(header::TRANSFER_ENCODING);
        rh.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        match rh.trailers.take() {
            None => ResponseBody::full(bytes),
            Some(t) => ResponseBody::core(gw_core::Body::full_with_trailers(bytes, Some(t))),
        }
    };
    let head = Head {
        status: rh.status,
        version: parts.version,
        fields: Fields::from_map(rh.headers),
        extensions: parts.extensions,
    };
    Ok(Response::from_parts(head, body))
}

/// The response phase runs for every response, including errors and plugin replies; its own
/// failures are logged and the response is sent as it is. Without response plugins it is a
/// ready future (no state of its own in the request's future).
fn response_phase<'a>(
    resp: Response<ResponseBody>,
    chain: &'a Chain,
    cx: &'a mut Ctx,
) -> impl Future<Output = Response<ResponseBody>> + 'a {
    use futures_util::future::Either;
    if chain.response.is_empty() {
        let mut resp = resp;
        add_response_headers(&mut resp, cx);
        Either::Left(std::future::ready(resp))
    } else {
        Either::Right(Box::pin(run_response_plugins(resp, chain, cx)))
    }
}

async fn run_response_plugins(resp: Response<ResponseBody>, chain: &Chain, cx: &mut Ctx) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    let mut rh = ResponseHead::new(parts.status, parts.version, std::mem::take(&mut parts.fields).into_map());
    for pl in &chain.response {
        if let Err(e) = pl.response(&mut rh, cx).await {
            tracing::warn!(plugin = pl.name(), error = %e, "response phase failed");
        }
    }
    parts.status = rh.status;
    parts.fields = Fields::from_map(rh.headers);
    let mut resp = Response::from_parts(parts, body);
    add_response_headers(&mut resp, cx);
    resp
}

/// Headers set for the final response by whatever ran before (e.g. rate-limit headers).
fn add_response_headers(resp: &mut Response<ResponseBody>, cx: &mut Ctx) {
    if !cx.response_headers.is_empty() {
        // Each replaces the upstream's fields of its name.
        let fields = resp.fields_mut();
        for (k, v) in cx.response_headers.drain() {
            if let Some(k) = k {
                fields.insert(k, v);
            }
        }
    }
}

/// The single mapping from an error to what the client sees: status, stable code and a safe
/// message ([`reply_response`] adds the request id). Context and causes go to the log only.
pub(crate) fn error_reply(e: &Error, _cx: &Ctx) -> Reply {
    let kind = e.kind();
    let mut r = if e.public_fields().is_empty() {
        Reply::error(kind.status(), kind.code(), kind.public_message())
    } else {
        let mut m = serde_json::Map::new();
        m.insert("error".into(), kind.code().into());
        m.insert("message".into(), kind.public_message().into());
        for (k, v) in e.public_fields() {
            m.insert((*k).into(), v.clone().into());
        }
        Reply::json(kind.status(), &serde_json::Value::Object(m))
    };
    if kind == ErrorKind::HttpsRequired {
        r.headers.insert(header::UPGRADE, HeaderValue::from_static("TLS/1.2, HTTP/1.1"));
    }
    r
}

/// A reply of the gateway (an error or a plugin's answer) as a response: the one place where
/// the request id is added to JSON bodies the gateway built (see [`Reply::add_request_id`]).
/// A whole body gets its `Content-Length`; a streaming one is sent frame by frame as it is
/// produced, with the length the reply's headers give (else framed by the protocol).
fn reply_response(mut r: Reply, cx: &Ctx) -> Response<ResponseBody> {
    let status = r.status;
    let headers = std::mem::take(&mut r.headers);
    let body = r.body_with_request_id(cx.request_id.to_str().unwrap_or(""));
    let (body, len) = match body.whole() {
        Some(b) => (ResponseBody::full(b.clone()), b.len()),
        None if body.is_end() => (ResponseBody::empty(), 0),
        None => (ResponseBody::core(body), 0),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if len > 0 {
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    for (k, v) in headers {
        if let Some(k) = k {
            if len > 0 && k == header::CONTENT_LENGTH {
                continue;
            }
            resp.fields_mut().append(k, v);
        }
    }
    resp
}

/// Attach the request id and the log phase to the response. A `101` (or the `200` of an
/// HTTP/2 extended CONNECT) that opened a tunnel
/// hands the log phase to the tunnel, which runs it when it closes.
fn finish(resp: &mut Response<ResponseBody>, mut log: Box<LogPhase>) {
    let name = &log.rt.gateway.request_id_header;
    // The gateway's request id replaces one the upstream sent.
    resp.fields_mut().insert(name.clone(), log.cx.request_id.clone());
    log.status = resp.status().as_u16();
    log.responded = true;
    // A tunnel answers `101` (HTTP/1.1) or `200` (an HTTP/2 extended CONNECT).
    if (resp.status() == StatusCode::SWITCHING_PROTOCOLS || resp.status() == StatusCode::OK)
        && let Some(tunnel) = resp.extensions_mut().remove::<crate::upgrade::TunnelLog>()
    {
        log.tunnel_opened = Some(gw_core::tick::now());
        tunnel.put(log);
        return;
    }
    resp.body_mut().set_finish(log);
}

/// The log phase, run when the response body ends or is dropped (or a tunnel closes).
struct LogPhase {
    cx: Ctx,
    p: Pending,
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    shared: Arc<DataPlane>,
    status: u16,
    /// A response left the pipeline.
    responded: bool,
    /// When the response opened a tunnel (whose session the log phase then waits for).
    tunnel_opened: Option<Instant>,
    /// The log phase ran (once per request).
    logged: bool,
}

impl Finish for LogPhase {
    fn finish(mut self: Box<Self>, ended: Ended) {
        self.record(ended);
    }

    fn error_response(&mut self, kind: ErrorKind) -> Response<ResponseBody> {
        let e = Error::new(kind, "the response body failed before its first byte was sent");
        tracing::warn!(request_id = ?self.cx.request_id, error = %e, "request failed");
        self.shared.metrics.error(kind.code());
        self.p.error = Some(kind.code());
        let mut r = error_response(&e, &self.cx);
        self.p.failure = Some(e);
        r.headers_mut().insert(self.rt.gateway.request_id_header.clone(), self.cx.request_id.clone());
        self.status = r.status().as_u16();
        r
    }

    fn strip_trailers(&self, trailers: &mut HeaderMap) {
        crate::wire::strip_trailers(trailers, &self.rt.gateway.request_id_header, self.rt.plugins.identity_headers());
    }
}

impl Drop for LogPhase {
    /// Dropped without having run: the client left (or reset its stream) while the request was
    /// being served and the request was cancelled, logged as nginx does (499); or the gateway's
    /// shutdown timeout cut it (503 when no response existed). A tunnel dropped with the
    /// gateway is logged with what it carried so far.
    fn drop(&mut self) {
        if !self.logged {
            if !self.responded {
                let kind =
                    if self.shared.is_aborting() { ErrorKind::ShutdownTimeout } else { ErrorKind::DownstreamClosed };
                self.status = kind.status().as_u16();
            }
            self.record(Ended { bytes_sent: 0, bytes_received: None, end: End::ClientGone, at: Instant::now() });
        }
    }
}

impl LogPhase {
    fn record(&mut self, ended: Ended) {
        self.logged = true;
        let trace = self.p.trace.take();
        if let Some(h) = self.p.held.take() {
            h.release();
        }
        let LogPhase { cx, p, rt, conn, shared, status, tunnel_opened, .. } = &*self;
        let (status, at) = (*status, ended.at);
        conn.state.request_finished_at(tokio::time::Instant::from_std(at));
        let latency = at.duration_since(cx.started);
        let ended_with = match ended.end {
            End::Complete => None,
            End::ClientGone if shared.is_aborting() => {
                Some((ErrorKind::ShutdownTimeout, "the shutdown timeout cut the request"))
            }
            End::ClientGone => Some((ErrorKind::DownstreamClosed, "the client left before the response was complete")),
            End::Failed(kind) => {
                shared.metrics.error(kind.code());
                Some((kind, "the response body failed after its head was sent"))
            }
        };
        let error = p.error.or(ended_with.map(|(k, _)| k.code()));
        // The full error for the log phase: the pipeline's, or one describing how the exchange
        // ended (built only on failure).
        let own;
        let failure = match (&p.failure, ended_with) {
            (Some(e), _) => Some(e),
            (None, Some((kind, why))) => {
                own = Error::new(kind, why);
                Some(&own)
            }
            (None, None) => None,
        };
        let bytes_received =
            ended.bytes_received.unwrap_or_else(|| p.received.as_ref().map_or(0, |r| r.load(Ordering::Relaxed)));
        let route = p.route.map(|i| &rt.routes[i]);
        if let Some(r) = route {
            // A tunnel's request lasted until its `101` (its session is in the access log).
            let request_latency = tunnel_opened.map_or(latency, |t| t.saturating_duration_since(cx.started));
            // A sampled request's trace is the latency's exemplar.
            let exemplar = match (&trace, &cx.trace) {
                (Some(_), Some(t)) if t.sampled => Some(&t.trace_id),
                _ => None,
            };
            r.metrics.record(status, request_latency, cx.upstream_latency, exemplar);
            // Usage: every request of a consumer; without one, only the gateway's refusals
            // (authentication failures, rate limits) under `-`.
            let from_upstream = cx.upstream_latency.is_some();
            let consumer = match &cx.consumer {
                Some(c) => Some(c.username.as_str()),
                None if !from_upstream && matches!(status, 401 | 403 | 429) => Some("-"),
                None => None,
            };
            if let Some(c) = consumer {
                let outcome = gw_observability::Outcome::classify(status, from_upstream);
                shared.usage.record(shared.clock.now_ms(), c, &r.info.name, outcome, bytes_received, ended.bytes_sent);
            }
        }
        if let (Some(tr), Some(t), Some(parent)) = (&trace, rt.tracing.as_deref(), &cx.trace)
            && parent.sampled
        {
            finish_trace(tr, parent, t, cx, p, route, status, failure.map(Error::kind), at);
        }
        let entry = LogEntry { status, bytes_sent: ended.bytes_sent, bytes_received, latency, error, failure };
        for pl in &p.chain.log {
            pl.log(cx, &entry);
        }
        if rt.gateway.access_log
            && let Some(al) = &shared.access_log
        {
            let started_wall = SystemTime::now() - latency;
            // The trace and span ids of a traced request (a route without tracing has none).
            let trace_hex = match (&trace, &cx.trace) {
                (Some(_), Some(parent)) => Some((parent.trace_id_hex(), parent.span_id_hex())),
                _ => None,
            };
            let line = AccessLogLine {
                time: Rfc3339(started_wall),
                request_id: cx.request_id.to_str().unwrap_or(""),
                client_ip: cx.client_ip,
                method: p.method.as_str(),
                host: &cx.host,
                path: p.uri.path(),
                protocol: version_str(p.version),
                route: route.map(|r| &*r.info.name),
                service: route.map(|r| &*r.info.service),
                consumer: cx.consumer.as_ref().map(|c| c.username.as_str()),
                upstream: cx.upstream_addr.as_deref(),
                status,
                bytes_sent: ended.bytes_sent,
                bytes_received: entry.bytes_received,
                latency_ms: latency.as_secs_f64() * 1000.0,
                upstream_latency_ms: cx.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
                error,
                calls: cx.vars.get::<crate::aggregate::Calls>().map(|c| c.0.as_str()),
                cache: cx.vars.get::<gw_core::CacheResult>().map(|c| c.0),
                trace_id: trace_hex.as_ref().map(|t| t.0.as_str()),
                span_id: trace_hex.as_ref().map(|t| t.1.as_str()),
            };
            if !al.log(&line) {
                shared.metrics.access_log_dropped();
            }
        }
    }
}

/// End the request's server span (a sampled request) with what the request did.
#[cold]
#[allow(clippy::too_many_arguments)]
fn finish_trace(
    tr: &gw_otel::ServerTrace,
    parent: &gw_core::TraceParent,
    t: &gw_otel::Tracing,
    cx: &Ctx,
    p: &Pending,
    route: Option<&Arc<RouteRt>>,
    status: u16,
    error: Option<ErrorKind>,
    ended: Instant,
) {
    let pattern = route.map(|r| route_pattern(r));
    let facts = gw_otel::ServerFacts {
        method: p.method.as_str(),
        path: p.uri.path(),
        route_pattern: pattern.as_deref(),
        route: route.map(|r| &r.info.name),
        service: route.map(|r| &r.info.service),
        consumer: cx.consumer.as_ref().map(|c| c.username.as_str()),
        host: &cx.host,
        client_ip: cx.client_ip,
        scheme: if cx.tls { "https" } else { "http" },
        protocol_version: version_str(p.version).trim_start_matches("HTTP/"),
        status,
        error,
        request_id: cx.request_id.to_str().unwrap_or(""),
        ended,
    };
    t.finish_server(tr, parent, &facts, cx.started);
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dot segments, encoded or not, and backslashes are refused; ordinary paths pass.
    #[test]
    fn path_checks() {
        let get = Method::GET;
        for ok in ["/", "/a/b", "/a.b/c..d", "/%41", "/a%2fb", "/...", "/.a/a.", "/a/b/", "//"] {
            assert!(check_path(&get, ok).is_ok(), "{ok}");
        }
        for bad in ["/a/../b", "/a/./b", "/..", "/a/%2e%2e/b", "/a/.%2E/b", "/a\\b", "/a%5c..", "/x%00", "a/b"]
            .into_iter()
            .chain(["/.", "/a/.", "/a/..", "/./a", "//..", "/a/b\\", "/%2E"])
        {
            assert!(check_path(&get, bad).is_err(), "{bad}");
        }
        assert!(check_path(&Method::OPTIONS, "*").is_ok());
    }

    /// Ports are stripped from hosts, IPv6 included.
    #[test]
    fn host_ports() {
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("a.example:"), "a.example");
        assert_eq!(strip_port("a:b"), "a:b");
    }
}
