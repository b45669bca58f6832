//! Upstream connections: one [`Endpoint`] per (upstream, target), keeping idle HTTP/1.1
//! connections (LIFO, capped, aged out) or one shared HTTP/2 connection.
//!
//! HTTP/1.1 connections are the gateway's own ([`H1Conn`], see `h1`): they return to the pool
//! only when an exchange ended cleanly, so a reused connection is always idle. Every connection is
//! wrapped in [`StallIo`], which fails a write that stays blocked longer than the service's write
//! timeout (the upstream stopped reading the request).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use gw_config::model::UpstreamProtocol;
use gw_error::{Error, ErrorKind, Retry};

use crate::body::RequestBody;
use crate::h1::{ConnHome, H1Conn};
use crate::io::{StallIo, UpstreamStream, WriteTimeout, new_read_timer};

thread_local! {
    /// Index of the data-plane worker running on this thread (0 elsewhere): idle connections
    /// are kept per worker.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The data-plane worker index of the current thread.
pub(crate) fn worker_index() -> usize {
    WORKER.with(std::cell::Cell::get)
}

/// Mark the current thread as data-plane worker `i` (the server's worker threads, at start).
pub(crate) fn set_worker_index(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// Flow-control window of each upstream HTTP/2 stream: the response bytes the upstream may
/// send ahead of a client that reads slowly, per request.
pub(crate) const H2_STREAM_WINDOW: u32 = 1024 * 1024;

/// Flow-control window of the shared upstream HTTP/2 connection. Fixed and large rather than
/// hyper's adaptive window, which starts at 64 KiB: h2 (0.4.16 on) closes a connection with
/// `GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames"` when the small (< 256 bytes) DATA frames
/// received but not yet read by the application cost more than its data-frame budget, and that
/// budget is half the connection window. Every request on the shared connection then fails. A
/// gRPC unary answer is one small DATA frame (about 240 bytes of budget until it is read), so
/// with the adaptive window about 140 answers waiting for their clients (a busy gateway, or
/// clients that read slowly) took the connection down. With 16 MiB the budget is 8 MiB, about
/// 34,000 unread small frames; a stream holds at most `H2_STREAM_WINDOW` of them.
pub(crate) const H2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// The upstream HTTP/2 client's settings, with this connection window.
fn h2_client(connection_window: u32) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(connection_window);
    b
}

// === Endpoint ===

impl ConnHome for Endpoint {
    fn authority(&self) -> &str {
        &self.authority
    }

    fn release(&self, conn: Box<H1Conn>) {
        Endpoint::release(self, conn);
    }
}

struct Idle {
    conn: Box<H1Conn>,
    since: Instant,
}

/// Connection settings of an endpoint that, when changed by a reload, require new connections.
#[derive(Clone)]
pub(crate) struct EndpointSpec {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
    /// Data-plane workers: idle connections are kept per worker, so a connection is reused on
    /// the thread whose runtime drives it.
    pub(crate) workers: usize,
}

/// The connections to one target of one upstream.
pub(crate) struct Endpoint {
    pub(crate) spec: EndpointSpec,
    /// `host:port`, for logs and the Host header.
    pub(crate) authority: Arc<str>,
    /// Idle HTTP/1.1 connections per worker, most recently used last. `std` mutexes: held for a
    /// push or pop only, never across an await, and uncontended (each worker uses its own).
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// The shared HTTP/2 connection; read lock-free on every request.
    h2: ArcSwapOption<(http2::SendRequest<RequestBody>, WriteTimeout)>,
    /// Serialises HTTP/2 (re)connects so a burst opens one connection, not one per request.
    h2_connect: tokio::sync::Mutex<()>,
}

/// A connection checked out for one request.
pub(crate) enum Conn {
    /// HTTP/1.1, exclusive to this request until its response body ends.
    H1(Box<H1Conn>),
    /// HTTP/2, shared.
    H2(http2::SendRequest<RequestBody>),
}

impl Endpoint {
    pub(crate) fn new(spec: EndpointSpec) -> Arc<Self> {
        let authority: Arc<str> = if spec.host.contains(':') {
            format!("[{}]:{}", spec.host, spec.port).into()
        } else {
            format!("{}:{}", spec.host, spec.port).into()
        };
        let idle = (0..spec.workers.max(1)).map(|_| Mutex::new(Vec::new())).collect();
        Arc::new(Endpoint {
            spec,
            authority,
            idle,
            h2: ArcSwapOption::empty(),
            h2_connect: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether a reload can keep this endpoint's connections for `spec`.
    pub(crate) fn same_spec(&self, spec: &EndpointSpec) -> bool {
        let s = &self.spec;
        let tls_same = match (&s.tls, &spec.tls) {
            (None, None) => true,
            (Some((a, an)), Some((b, bn))) => Arc::ptr_eq(a, b) && an == bn,
            _ => false,
        };
        s.host == spec.host
            && s.port == spec.port
            && s.protocol == spec.protocol
            && tls_same
            && s.workers == spec.workers
    }

    fn idle_list(&self) -> &Mutex<Vec<Idle>> {
        &self.idle[worker_index() % self.idle.len()]
    }

    /// Get a connection: an idle or shared one, or a new one within `connect_timeout`. The
    /// connecting path runs boxed: the future of a request that finds a connection stays small.
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        connect_timeout: Duration,
        write_timeout: Duration,
        connected: &mut Option<Duration>,
    ) -> Result<Conn, Error> {
        let wt = write_timeout.as_millis() as u64;
        if self.spec.protocol.is_http2() {
            if let Some(c) = self.shared_h2(wt) {
                return Ok(c);
            }
            return Box::pin(self.connect_h2(connect_timeout, wt, connected)).await;
        }
        if let Some(conn) = self.pop_idle() {
            conn.write_timeout.store(wt, Ordering::Relaxed);
            return Ok(Conn::H1(conn));
        }
        let start = Instant::now();
        let c = Box::pin(self.connect_h1(connect_timeout, wt)).await?;
        *connected = Some(start.elapsed());
        Ok(c)
    }

    /// The shared HTTP/2 connection, if open, with its write-stall limit set to `wt` ms.
    fn shared_h2(&self, wt: u64) -> Option<Conn> {
        let c = self.h2.load_full().filter(|c| !c.0.is_closed())?;
        c.1.store(wt, Ordering::Relaxed);
        Some(Conn::H2(c.0.clone()))
    }

    /// Open the shared HTTP/2 connection (one at a time) unless another request just did.
    async fn connect_h2(
        self: &Arc<Self>,
        connect_timeout: Duration,
        wt: u64,
        connected: &mut Option<Duration>,
    ) -> Result<Conn, Error> {
        let _guard = self.h2_connect.lock().await;
        if let Some(c) = self.shared_h2(wt) {
            return Ok(c);
        }
        let start = Instant::now();
        let (io, timeout) = self.connect(connect_timeout, wt).await?;
        let (sender, conn) = h2_client(H2_CONNECTION_WINDOW)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.connect_error(ErrorKind::UpstreamProtocol, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.h2.store(Some(Arc::new((sender.clone(), timeout))));
        *connected = Some(start.elapsed());
        Ok(Conn::H2(sender))
    }

    /// Open a new HTTP/1.1 connection.
    async fn connect_h1(self: &Arc<Self>, connect_timeout: Duration, wt: u64) -> Result<Conn, Error> {
        let (io, write_timeout) = self.connect(connect_timeout, wt).await?;
        Ok(Conn::H1(Box::new(H1Conn::new(io, write_timeout, new_read_timer()))))
    }

    /// A new HTTP/1.1 connection for a protocol upgrade (WebSocket, `h1::upgrade`); never
    /// pooled.
    pub(crate) async fn connect_upgradable(self: &Arc<Self>, connect_timeout: Duration) -> Result<Box<H1Conn>, Error> {
        let (io, write_timeout) = self.connect(connect_timeout, 60_000).await?;
        let mut conn = H1Conn::new(io, write_timeout, new_read_timer());
        conn.poolable = false;
        Ok(Box::new(conn))
    }

    /// A new HTTP/2 connection for one extended CONNECT tunnel (RFC 8441, `upgrade`); never
    /// shared, so a long-lived WebSocket neither shares flow control with requests nor keeps a
    /// pooled connection from being replaced. Resolves once the upstream's first frame (its
    /// SETTINGS, RFC 9113 §3.4) was read and applied, with whether it sent
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`: a client must not send an extended CONNECT before
    /// (RFC 8441 §3). The sender keeps the connection open; drop it when the tunnel ends.
    pub(crate) async fn connect_h2_tunnel(
        self: &Arc<Self>,
        connect_timeout: Duration,
    ) -> Result<(http2::SendRequest<RequestBody>, bool), Error> {
        let (mut io, _) = self.connect(connect_timeout, 60_000).await?;
        let applied = Arc::new(tokio::sync::Notify::new());
        io.tell_first_frame(applied.clone());
        let (sender, conn) = h2_client(H2_STREAM_WINDOW)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.connect_error(ErrorKind::UpstreamProtocol, e))?;
        let (tell, settings) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut conn = Box::pin(conn);
            tokio::select! {
                // Ended before its first frame: `tell` is dropped.
                _ = conn.as_mut() => return,
                () = applied.notified() => {
                    let _ = tell.send(conn.is_extended_connect_protocol_enabled());
                }
            }
            let _ = conn.await;
        });
        let enabled = tokio::time::timeout(connect_timeout, settings).await.map_err(|_| {
            Error::new(
                ErrorKind::ConnectTimeout,
                format!("{} sent no HTTP/2 SETTINGS within {connect_timeout:?}", self.authority),
            )
        })?;
        let enabled = enabled.map_err(|_| {
            Error::new(ErrorKind::UpstreamProtocol, format!("{} closed the HTTP/2 connection", self.authority))
        })?;
        Ok((sender, enabled))
    }

    /// Put an HTTP/1.1 connection back after an exchange ended cleanly.
    pub(crate) fn release(&self, mut conn: Box<H1Conn>) {
        if self.spec.max_idle == 0 || !conn.poolable {
            return;
        }
        conn.trim();
        let now = gw_core::tick::now();
        if let Ok(mut idle) = self.idle_list().lock() {
            // Age out the oldest (front) entries; keep at most max_idle.
            let ttl = self.spec.idle_timeout;
            let expired = idle.iter().take_while(|i| now.duration_since(i.since) > ttl).count();
            idle.drain(..expired);
            if idle.len() >= self.spec.max_idle {
                idle.remove(0);
            }
            idle.push(Idle { conn, since: now });
        }
    }

    /// The most recently used idle connection that is still open; closed ones are dropped.
    fn pop_idle(&self) -> Option<Box<H1Conn>> {
        let now = gw_core::tick::now();
        let mut idle = self.idle_list().lock().ok()?;
        while let Some(mut i) = idle.pop() {
            if now.duration_since(i.since) <= self.spec.idle_timeout && i.conn.is_reusable() {
                return Some(i.conn);
            }
        }
        None
    }

    /// An active health probe: `GET path` on a fresh connection (never a pooled one, so probes
    /// neither disturb nor depend on traffic), through the same HTTP/1.1 client as traffic
    /// (`h1::exchange`; HTTP/2 upstreams: hyper's client, as for traffic). Healthy when the
    /// status is in `healthy` (200-399 when empty). The caller bounds the time.
    pub(crate) async fn probe(
        self: &Arc<Self>,
        path: &str,
        host: Option<&str>,
        healthy: &[u16],
        connect_timeout: Duration,
    ) -> bool {
        let Ok((io, write_timeout)) = self.connect(connect_timeout, connect_timeout.as_millis() as u64).await else {
            return false;
        };
        let host = host.unwrap_or(&self.authority);
        let status = if self.spec.protocol.is_http2() {
            let Ok((mut sender, conn)) = http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(io)).await
            else {
                return false;
            };
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let scheme = if self.spec.protocol.is_tls() { "https" } else { "http" };
            let Ok(req) = http::Request::get(format!("{scheme}://{host}{path}")).body(RequestBody::Empty) else {
                return false;
            };
            match sender.send_request(req).await {
                Ok(r) => r.status().as_u16(),
                Err(_) => return false,
            }
        } else {
            let mut conn = Box::new(H1Conn::new(io, write_timeout, new_read_timer()));
            conn.poolable = false;
            let Ok(uri) = path.parse::<http::Uri>() else { return false };
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::USER_AGENT, http::HeaderValue::from_static("gatehouse-health-check"));
            headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            let head =
                gw_core::RequestHead { method: http::Method::GET, uri, version: http::Version::HTTP_11, headers };
            match crate::h1::exchange(
                conn,
                self,
                &head,
                None,
                None,
                host.as_bytes(),
                RequestBody::Empty,
                connect_timeout,
            )
            .await
            {
                Ok((parts, _body)) => parts.status.as_u16(),
                Err(_) => return false,
            }
        };
        if healthy.is_empty() { (200..400).contains(&status) } else { healthy.contains(&status) }
    }

    fn connect_error(&self, kind: ErrorKind, e: impl Into<gw_error::BoxError>) -> Error {
        Error::new(kind, format!("connecting to {}", self.authority)).with_cause(e).with_retry(Retry::Safe)
    }

    async fn resolve(&self) -> Result<SocketAddr, Error> {
        if let Ok(ip) = self.spec.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.spec.port));
        }
        let mut addrs = tokio::net::lookup_host((self.spec.host.as_str(), self.spec.port))
            .await
            .map_err(|e| self.connect_error(ErrorKind::ConnectFailed, e))?;
        addrs.next().ok_or_else(|| {
            Error::new(ErrorKind::ConnectFailed, format!("{} resolved to no address", self.spec.host))
                .with_retry(Retry::Safe)
        })
    }

    async fn connect(
        &self,
        connect_timeout: Duration,
        write_timeout_ms: u64,
    ) -> Result<(StallIo, WriteTimeout), Error> {
        let fut = async {
            let addr = self.resolve().await?;
            let tcp = TcpStream::connect(addr).await.map_err(|e| self.connect_error(ErrorKind::ConnectFailed, e))?;
            let _ = tcp.set_nodelay(true);
            let inner = match &self.spec.tls {
                None => UpstreamStream::Plain(tcp),
                Some((cfg, name)) => {
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| self.connect_error(ErrorKind::UpstreamTls, e))?;
                    UpstreamStream::Tls(Box::new(tls))
                }
            };
            Ok::<_, Error>(inner)
        };
        let inner = match tokio::time::timeout(connect_timeout, fut).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::ConnectTimeout,
                    format!("connecting to {} took longer than {connect_timeout:?}", self.authority),
                )
                .with_retry(Retry::Safe));
            }
        };
        let wt: WriteTimeout = Arc::new(AtomicU64::new(write_timeout_ms));
        Ok((StallIo::new(inner, wt.clone()), wt))
    }
}
