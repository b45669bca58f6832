//! Protocol upgrades (WebSocket): the handshake is proxied on a dedicated upstream connection
//! by the gateway's own HTTP/1.1 client (`h1::upgrade`);
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
    let conn = endpoint.connect_upgradable(service.timeouts.connect).await?;
    let mut head = head;
    // RFC 8441: an HTTP/2 extended CONNECT is sent upstream as an HTTP/1.1 upgrade (a GET with
    // `Upgrade`; a WebSocket gets the `Sec-WebSocket-Key` HTTP/2 does not carry), and the
    // upstream's `101` is answered `200`.
    let extended = head.method == http::Method::CONNECT;
    if extended {
        head.method = http::Method::GET;
        if protocol.as_bytes().eq_ignore_ascii_case(b"websocket") {
            head.headers.insert(http::HeaderName::from_static("sec-websocket-key"), websocket_key());
        }
    }
    head.version = Version::HTTP_11;
    head.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    head.headers.insert(header::UPGRADE, protocol);
    let host = if route.route.preserve_host { cx.host.as_str() } else { &*endpoint.authority };
    if host.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Error::new(ErrorKind::BadRequest, "invalid Host"));
    }
    let start = Instant::now();
    let answer = crate::h1::upgrade(conn, &endpoint, &head, host.as_bytes(), service.timeouts.read)
        .await
        .map_err(|e| e.with_retry(Retry::Never))?;
    cx.upstream_latency = Some(start.elapsed());
    let (mut parts, up) = match answer {
        UpgradeAnswer::Switched(parts, up) => (parts, up),
        UpgradeAnswer::Refused(parts, body) => {
            // The upstream refused the upgrade: relay its answer as a normal response.
            inflight.finish(Outcome::Success, start.elapsed(), Instant::now());
            let body = crate::body::UpstreamBody::new(
                crate::body::UpstreamInner::H1(body),
                service.timeouts.read,
                Box::new(|_| {}),
            );
            return Ok(Response::from_parts(parts, ResponseBody::upstream(body)));
        }
    };
    if extended {
        forwarding::strip_hop_by_hop(&mut parts.headers, false);
        parts.headers.remove(http::HeaderName::from_static("sec-websocket-accept"));
        parts.status = http::StatusCode::OK;
        parts.version = Version::HTTP_2;
    } else {
        forwarding::strip_hop_by_hop(&mut parts.headers, true);
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let latency = start.elapsed();
    let log = TunnelLog::default();
    parts.extensions.insert(log.clone());
    tasks.spawn(async move {
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

/// A `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1; a nonce, not a secret).
fn websocket_key() -> HeaderValue {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(fastrand::u128(..).to_be_bytes());
    HeaderValue::from_str(&key).unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
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
}
