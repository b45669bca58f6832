//! Protocol upgrades (WebSocket): the handshake is proxied on a dedicated upstream connection,
//! by the gateway's own HTTP/1.1 client (`h1::upgrade`) or, to an HTTP/2 upstream, as an
//! extended CONNECT (RFC 8441) through hyper's client;
//! after `101 Switching Protocols` both sides are spliced together in a tracked task, which a
//! configuration reload does not touch and a graceful shutdown waits for. The request's log
//! phase moves to the tunnel ([`TunnelLog`]): the access log line is written when the tunnel
//! closes, with its duration and the bytes carried each way.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use http::header::{self, HeaderValue};
use http::{Request, Version};

use crate::head::Response;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use gw_core::{Ctx, RequestHead};
use gw_error::{Error, ErrorKind, Retry};
use gw_upstream::{Outcome, SelectError};

use crate::body::{End, Ended, Finish, ResponseBody};
use crate::fault::BoxError;
use crate::forwarding;
use crate::h1::UpgradeAnswer;
use crate::pool::Endpoint;
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

    async fn wait(self) -> Result<Box<dyn crate::io::UpgradeIo>, BoxError> {
        match self {
            ClientUpgrade::Hyper(u) => Ok(Box::new(TokioIo::new(u.await?))),
            ClientUpgrade::H1(u) => Ok(Box::new(u.wait().await?)),
        }
    }
}

/// What the upstream answered an upgrade (HTTP/1.1) or extended CONNECT (HTTP/2).
enum Opened {
    /// Switched (`101`) or connected (`200`): the response head and the tunnel's upstream side,
    /// with what must live as long as the tunnel (the HTTP/2 connection's sender).
    Tunnel(http::response::Parts, Box<dyn crate::io::UpgradeIo>, Option<Box<dyn Send>>),
    /// Refused: relayed as an ordinary response.
    Refused(Response<ResponseBody>),
}

/// Forward an upgrade request and, on `101` (or `200` to an extended CONNECT), splice the two
/// connections.
///
/// Four ways, by the client's and the upstream's HTTP version:
/// - HTTP/1.1 client, HTTP/1.1 upstream: the handshake passes through (the client's
///   `Sec-WebSocket-Key`; the client checks the accept).
/// - HTTP/2 client (extended CONNECT, RFC 8441), HTTP/1.1 upstream: sent as an HTTP/1.1
///   upgrade with a key of the gateway's; the upstream's `Sec-WebSocket-Accept` must match it.
/// - Either client, HTTP/2 upstream (`h2c`, `grpc`, `h2`): sent as an extended CONNECT on a
///   connection of its own, once the upstream announced `SETTINGS_ENABLE_CONNECT_PROTOCOL`;
///   an HTTP/1.1 client gets `101` with the accept of its own key.
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
    let host = if route.route.preserve_host { cx.host.as_str() } else { &*endpoint.authority };
    if host.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Error::new(ErrorKind::BadRequest, "invalid Host"));
    }
    // The client's side: an HTTP/2 extended CONNECT, or an HTTP/1.1 upgrade.
    let extended = head.method == http::Method::CONNECT;
    let websocket = protocol.as_bytes().eq_ignore_ascii_case(b"websocket");
    let h2_upstream = endpoint.spec.protocol.is_http2();
    // An HTTP/1.1 client's WebSocket bridged to an extended CONNECT is answered by the gateway,
    // with the accept of the client's key: the gateway is the WebSocket server of that
    // handshake, so it checks it (RFC 6455 §4.2.1) before anything goes upstream.
    let client_accept =
        if h2_upstream && !extended { Some(check_client_handshake(&head.headers, &protocol)?) } else { None };
    let inflight = sel.target.begin();
    let start = Instant::now();
    let opened = if h2_upstream {
        Box::pin(extended_connect(head, &protocol, &endpoint, host, service)).await?
    } else {
        Box::pin(upgrade_h1(head, protocol.clone(), extended && websocket, &endpoint, host, service)).await?
    };
    cx.upstream_latency = Some(start.elapsed());
    let (mut parts, up, keep) = match opened {
        Opened::Tunnel(parts, up, keep) => (parts, up, keep),
        Opened::Refused(resp) => {
            inflight.finish(Outcome::Success, start.elapsed(), Instant::now());
            return Ok(resp);
        }
    };
    if extended {
        // RFC 8441 §5: the tunnel is the CONNECT stream; 200, no upgrade fields.
        forwarding::strip_hop_by_hop(&mut parts.headers, false);
        parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
        parts.status = http::StatusCode::OK;
        parts.version = Version::HTTP_2;
    } else if h2_upstream {
        forwarding::strip_hop_by_hop(&mut parts.headers, false);
        parts.status = http::StatusCode::SWITCHING_PROTOCOLS;
        parts.version = Version::HTTP_11;
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
        if let Some(accept) = client_accept {
            parts.headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
    } else {
        forwarding::strip_hop_by_hop(&mut parts.headers, true);
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let latency = start.elapsed();
    let log = TunnelLog::default();
    parts.extensions.insert(log.clone());
    tasks.spawn(async move {
        // The upstream HTTP/2 connection of an extended CONNECT lives as long as the tunnel.
        let _keep = keep;
        // Logs the session when the tunnel ends, also when the gateway's shutdown drops it.
        let mut session = Session { log, stats: Arc::default(), end: End::ClientGone };
        let d = match downstream.wait().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                inflight.finish(Outcome::Success, latency, Instant::now());
                return;
            }
        };
        let mut d = Metered { io: d, stats: session.stats.clone(), downstream: true };
        let mut u = Metered { io: up, stats: session.stats.clone(), downstream: false };
        let r = tokio::io::copy_bidirectional(&mut d, &mut u).await;
        tracing::debug!(result = ?r, "upgraded connection closed");
        session.end = session.stats.end();
        inflight.finish(Outcome::Success, latency, Instant::now());
    });
    Ok(Response::from_parts(parts.into(), ResponseBody::empty()))
}

const SEC_WEBSOCKET_KEY: http::HeaderName = http::HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: http::HeaderName = http::HeaderName::from_static("sec-websocket-accept");
const SEC_WEBSOCKET_VERSION: http::HeaderName = http::HeaderName::from_static("sec-websocket-version");

/// The upgrade on a dedicated HTTP/1.1 connection (`h1::upgrade`). `own_key`: the request
/// came as an extended CONNECT (HTTP/2 carries no key), so the gateway sends a key of its own
/// and the upstream's `101` must carry its accept (RFC 6455 §4.1), or the upgrade fails with 502
/// and nothing is bridged.
async fn upgrade_h1(
    mut head: RequestHead,
    protocol: HeaderValue,
    own_key: bool,
    endpoint: &Arc<Endpoint>,
    host: &str,
    service: &ServiceRt,
) -> Result<Opened, Error> {
    let conn = endpoint.connect_upgradable(service.timeouts.connect).await?;
    // RFC 8441: an HTTP/2 extended CONNECT is sent upstream as an HTTP/1.1 upgrade (a GET with
    // `Upgrade`), and the upstream's `101` is answered `200`.
    let key = own_key.then(websocket_key);
    if head.method == http::Method::CONNECT {
        head.method = http::Method::GET;
    }
    if let Some(k) = &key {
        head.headers.insert(SEC_WEBSOCKET_KEY, k.clone());
    }
    head.version = Version::HTTP_11;
    head.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    head.headers.insert(header::UPGRADE, protocol);
    let answer = crate::h1::upgrade(conn, endpoint, &head, host.as_bytes(), service.timeouts.read)
        .await
        .map_err(|e| e.with_retry(Retry::Never))?;
    match answer {
        UpgradeAnswer::Switched(parts, up) => {
            if let Some(k) = key {
                check_upstream_switch(&parts.headers, &k, &endpoint.authority)?;
            }
            Ok(Opened::Tunnel(parts, Box::new(up), None))
        }
        UpgradeAnswer::Refused(parts, body) => {
            let body = crate::body::UpstreamBody::new(
                crate::body::UpstreamInner::H1(body),
                service.timeouts.read,
                Box::new(|_| {}),
            );
            Ok(Opened::Refused(Response::from_parts(parts, ResponseBody::upstream(body))))
        }
    }
}

/// The upstream's `101` to an upgrade with the gateway's own key (RFC 6455 §4.1): exactly one
/// `Sec-WebSocket-Accept`, the accept of `key`; `Upgrade` exactly `websocket` (any case);
/// `Connection` with the `upgrade` token. Anything else is a 502 and nothing is bridged.
fn check_upstream_switch(headers: &http::HeaderMap, key: &HeaderValue, authority: &str) -> Result<(), Error> {
    let fail = |what: String, detail: &'static str| {
        Error::new(ErrorKind::UpstreamProtocol, format!("{authority} switched to WebSocket {what}"))
            .with_public_field("detail", detail)
    };
    let mut accepts = headers.get_all(SEC_WEBSOCKET_ACCEPT).iter();
    match (accepts.next(), accepts.next()) {
        (Some(a), None) if a.as_bytes() == websocket_accept(key.as_bytes()).as_bytes() => {}
        (None, _) => {
            return Err(fail(
                "without Sec-WebSocket-Accept".into(),
                "the upstream's Sec-WebSocket-Accept does not match the key sent (none)",
            ));
        }
        (Some(a), None) => {
            return Err(fail(
                format!("with a wrong Sec-WebSocket-Accept ({a:?}) for the gateway's key"),
                "the upstream's Sec-WebSocket-Accept does not match the key sent",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(fail(
                "with more than one Sec-WebSocket-Accept".into(),
                "the upstream sent more than one Sec-WebSocket-Accept",
            ));
        }
    }
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    match (upgrades.next(), upgrades.next()) {
        (Some(u), None) if u.as_bytes().eq_ignore_ascii_case(b"websocket") => {}
        _ => {
            return Err(fail(
                format!("with Upgrade {:?}", headers.get_all(header::UPGRADE).iter().collect::<Vec<_>>()),
                "the upstream's 101 does not carry Upgrade: websocket",
            ));
        }
    }
    let upgrade_token = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    if !upgrade_token {
        return Err(fail(
            "without the upgrade token in Connection".into(),
            "the upstream's 101 does not carry Connection: upgrade",
        ));
    }
    Ok(())
}

/// The upgrade as an extended CONNECT (RFC 8441) on an HTTP/2 connection of its own
/// (`Endpoint::connect_h2_tunnel`): `:protocol` is the upgrade's protocol, the fields that
/// belong to HTTP/1.1's handshake (`Sec-WebSocket-Key`, `Upgrade`, `Connection`, `Host`) are
/// not sent. An upstream without `SETTINGS_ENABLE_CONNECT_PROTOCOL` is a 502; a `2xx` opens the
/// tunnel; any other answer is relayed.
async fn extended_connect(
    head: RequestHead,
    protocol: &HeaderValue,
    endpoint: &Arc<Endpoint>,
    host: &str,
    service: &ServiceRt,
) -> Result<Opened, Error> {
    let authority = &endpoint.authority;
    let proto = protocol.to_str().map_err(|_| Error::new(ErrorKind::BadRequest, "upgrade protocol is not a token"))?;
    let scheme = if endpoint.spec.protocol.is_tls() { "https" } else { "http" };
    let uri: http::Uri = format!("{scheme}://{host}{}", head.uri.path_and_query().map_or("/", |pq| pq.as_str()))
        .parse()
        .map_err(|_| Error::new(ErrorKind::BadRequest, "invalid request target"))?;
    let mut headers = head.headers;
    for h in [SEC_WEBSOCKET_KEY, header::UPGRADE, header::CONNECTION, header::HOST, header::CONTENT_LENGTH] {
        headers.remove(h);
    }
    let (mut sender, enabled) =
        endpoint.connect_h2_tunnel(service.timeouts.connect).await.map_err(|e| e.with_retry(Retry::Never))?;
    if !enabled {
        return Err(Error::new(
            ErrorKind::UpstreamProtocol,
            format!(
                "{authority} does not accept extended CONNECT (no SETTINGS_ENABLE_CONNECT_PROTOCOL): cannot open a {proto} tunnel over HTTP/2"
            ),
        )
        .with_public_field(
            "detail",
            "the upstream speaks HTTP/2 without extended CONNECT (no SETTINGS_ENABLE_CONNECT_PROTOCOL)",
        ));
    }
    let mut req = Request::new(crate::body::RequestBody::Empty);
    *req.method_mut() = http::Method::CONNECT;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = headers;
    req.extensions_mut().insert(hyper::ext::Protocol::from(proto));
    let read = service.timeouts.read;
    let mut resp = match tokio::time::timeout(read, sender.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Err(
                Error::new(ErrorKind::UpstreamProtocol, format!("extended CONNECT to {authority}")).with_cause(e)
            );
        }
        Err(_) => {
            return Err(Error::new(
                ErrorKind::UpstreamTimeout,
                format!("{authority} did not answer the extended CONNECT within {read:?}"),
            ));
        }
    };
    if !resp.status().is_success() {
        let (parts, body) = resp.into_parts();
        // The body is read on the tunnel's connection: it stays open until the body ends.
        let body = crate::body::UpstreamBody::new(
            crate::body::UpstreamInner::Hyper(body),
            read,
            Box::new(move |_| drop(sender)),
        );
        return Ok(Opened::Refused(Response::from_parts(parts.into(), ResponseBody::upstream(body))));
    }
    let up = hyper::upgrade::on(&mut resp).await.map_err(|e| {
        Error::new(ErrorKind::UpstreamProtocol, format!("extended CONNECT to {authority}")).with_cause(e)
    })?;
    let (parts, _) = resp.into_parts();
    Ok(Opened::Tunnel(parts, Box::new(TokioIo::new(up)), Some(Box::new(sender))))
}

/// The handshake of an HTTP/1.1 client's WebSocket that the gateway answers itself (bridged to
/// an extended CONNECT, RFC 8441): `Upgrade` is exactly one `websocket` token (it becomes
/// `:protocol`), `Sec-WebSocket-Version` is `13` and `Sec-WebSocket-Key` is one field, base64 of
/// exactly 16 bytes (RFC 6455 §4.2.1). The accept of that key, or a 400.
fn check_client_handshake(headers: &http::HeaderMap, protocol: &HeaderValue) -> Result<HeaderValue, Error> {
    use base64::Engine as _;
    let bad = |detail: &str| {
        Error::new(ErrorKind::BadRequest, format!("WebSocket handshake: {detail}")).with_public_field("detail", detail)
    };
    if headers.get_all(header::UPGRADE).iter().count() != 1 || !protocol.as_bytes().eq_ignore_ascii_case(b"websocket") {
        return Err(bad("Upgrade must be exactly one \"websocket\" token to reach an HTTP/2 upstream"));
    }
    let mut versions = headers.get_all(SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => {}
        _ => return Err(bad("Sec-WebSocket-Version must be 13")),
    }
    let mut keys = headers.get_all(SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k,
        _ => return Err(bad("Sec-WebSocket-Key must be one field")),
    };
    match base64::engine::general_purpose::STANDARD.decode(key.as_bytes()) {
        Ok(nonce) if nonce.len() == 16 => Ok(websocket_accept(key.as_bytes())),
        _ => Err(bad("Sec-WebSocket-Key must be base64 of 16 bytes")),
    }
}

/// A `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1; a nonce, not a secret).
fn websocket_key() -> HeaderValue {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(fastrand::u128(..).to_be_bytes());
    HeaderValue::from_str(&key).unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// The `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2): base64 of the SHA-1 of the key and
/// the protocol's GUID.
fn websocket_accept(key: &[u8]) -> HeaderValue {
    use aws_lc_rs::digest;
    use base64::Engine as _;
    let mut sha1 = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finish().as_ref());
    HeaderValue::from_str(&accept).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Where a `101` response leaves its log phase for the tunnel it opened (a response extension
/// the pipeline fills as the response leaves it).
#[derive(Clone, Default)]
pub(crate) struct TunnelLog(Arc<Mutex<Option<Box<dyn Finish>>>>);

impl TunnelLog {
    pub(crate) fn put(&self, f: Box<dyn Finish>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    fn take(&self) -> Option<Box<dyn Finish>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Bytes carried by a tunnel each way, and which side failed.
#[derive(Default)]
struct Stats {
    /// Upstream to client.
    sent: AtomicU64,
    /// Client to upstream.
    received: AtomicU64,
    /// 1: the client's side failed, 2: the upstream's.
    failed: std::sync::atomic::AtomicU8,
}

impl Stats {
    fn end(&self) -> End {
        match self.failed.load(Ordering::Relaxed) {
            0 => End::Complete,
            1 => End::ClientGone,
            _ => End::Failed(ErrorKind::UpstreamProtocol),
        }
    }
}

/// A tunnel's session: its log phase runs when this is dropped.
struct Session {
    log: TunnelLog,
    stats: Arc<Stats>,
    end: End,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(f) = self.log.take() {
            f.finish(Ended {
                bytes_sent: self.stats.sent.load(Ordering::Relaxed),
                bytes_received: Some(self.stats.received.load(Ordering::Relaxed)),
                end: self.end,
                at: gw_core::tick::now(),
            });
        }
    }
}

/// One side of a tunnel, counting the client's bytes (on the client's side) and noting
/// failures.
struct Metered<T> {
    io: T,
    stats: Arc<Stats>,
    downstream: bool,
}

impl<T> Metered<T> {
    fn note<R>(&self, r: &Poll<io::Result<R>>) {
        if let Poll::Ready(Err(_)) = r {
            let side = if self.downstream { 1 } else { 2 };
            let _ = self.stats.failed.compare_exchange(0, side, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        self.note(&r);
        if self.downstream && matches!(r, Poll::Ready(Ok(()))) {
            self.stats.received.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(&r);
        if self.downstream
            && let Poll::Ready(Ok(n)) = r
        {
            self.stats.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.note(&r);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod key_tests {
    use base64::Engine as _;

    /// RFC 6455 §4.1: the key is 16 random bytes in base64 (24 characters), new each time.
    #[test]
    fn websocket_keys_are_16_random_bytes() {
        let a = super::websocket_key();
        let b = super::websocket_key();
        assert_ne!(a, b);
        for k in [a, b] {
            assert_eq!(k.len(), 24);
            assert_eq!(base64::engine::general_purpose::STANDARD.decode(k.as_bytes()).unwrap().len(), 16);
        }
    }

    /// RFC 6455 §1.3's example handshake.
    #[test]
    fn websocket_accept_of_the_rfc_example() {
        assert_eq!(super::websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
