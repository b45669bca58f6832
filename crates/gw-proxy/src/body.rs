//! Body types of the data plane.
//!
//! * [`ResponseBody`]: what the client receives. It runs the request's log phase exactly once,
//!   when the body ends or is dropped (client gone), so latency and byte counts cover the whole
//!   response, and it tells the log phase how the body ended ([`End`]: the side that failed). A
//!   body that fails before its first frame lets the server send an error response instead
//!   ([`ResponseBody::error_response`]). Its trailers are filtered (`wire::strip_trailers`).
//! * [`UpstreamBody`]: a streaming upstream response. It enforces the read timeout between
//!   chunks and reports the outcome to the balancer (an HTTP/1.1 body returns its connection to
//!   the pool itself, see `h1`).
//! * [`RequestBody`]: the client's body on its way upstream, counted, limited to the route's
//!   `max_body_bytes`, timed (`limits.body_read_timeout` between reads, a timer armed only
//!   while the body waits for the client) and with its trailers filtered.
//!
//! A client's body can fail in four ways ([`BodyFault`]), each the client's doing and never
//! counted against the upstream: malformed framing (400, the connection closes), a pause longer
//! than the body read timeout (408, the connection closes), more than the route allows (413),
//! or a client that went away (499).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::fault::{
    BodyFault, BodyTooLarge, BoxError, ClientBodyError, DownstreamBodyError, UpstreamReadTimeout, body_error_kind,
};
use crate::head::Response;

use bytes::Bytes;
use gw_error::ErrorKind;
use http::{HeaderMap, HeaderName};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

// === Drains ===

/// Bodies read to their end in the background after their client left (see
/// [`ResponseBody::core_detachable`]): at most `max` at once per gateway, each for at most
/// `deadline` in all, spawned into the gateway's task tracker (awaited on shutdown, within
/// its timeout). When `max` are running, an abandoned body is dropped, as a body nobody needs
/// is: a client cannot make the gateway download without bound by asking for many URLs and
/// leaving.
#[derive(Clone)]
pub(crate) struct Drains(Arc<DrainsInner>);

struct DrainsInner {
    /// Reads running now.
    running: std::sync::atomic::AtomicUsize,
    /// `gateway.limits.max_detached_reads` (a reload changes it for reads started after it).
    max: std::sync::atomic::AtomicUsize,
    /// `gateway.limits.detached_read_timeout`, in milliseconds.
    deadline_ms: std::sync::atomic::AtomicU64,
    tasks: tokio_util::task::TaskTracker,
}

/// A place among the running reads, given back when dropped.
struct DrainSlot(Arc<DrainsInner>);

impl Drop for DrainSlot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Drains {
    pub(crate) fn new(max: usize, deadline: Duration, tasks: tokio_util::task::TaskTracker) -> Drains {
        let d = Drains(Arc::new(DrainsInner {
            running: std::sync::atomic::AtomicUsize::new(0),
            max: std::sync::atomic::AtomicUsize::new(max),
            deadline_ms: std::sync::atomic::AtomicU64::new(0),
            tasks,
        }));
        d.set_limits(max, deadline);
        d
    }

    /// New bounds (a configuration reload): reads already running keep their deadline; with a
    /// lower `max`, no read starts until fewer than `max` run.
    pub(crate) fn set_limits(&self, max: usize, deadline: Duration) {
        use std::sync::atomic::Ordering;
        self.0.max.store(max, Ordering::Release);
        self.0.deadline_ms.store(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Read `rest` to its end in the background; `false` (and `rest` dropped) when `max`
    /// are running or there is no runtime.
    pub(crate) fn spawn(&self, rest: gw_core::Body) -> bool {
        use std::sync::atomic::Ordering;
        let max = self.0.max.load(Ordering::Acquire);
        let taken = self.0.running.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        if taken.is_err() {
            tracing::debug!(max, "detached body reads at their limit: dropping an abandoned body");
            return false;
        }
        let slot = DrainSlot(self.0.clone());
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return false };
        let deadline = Duration::from_millis(self.0.deadline_ms.load(Ordering::Acquire));
        self.0.tasks.spawn_on(
            async move {
                if tokio::time::timeout(deadline, rest.drain()).await.is_err() {
                    tracing::debug!(?deadline, "detached body read past its deadline: dropped");
                }
                drop(slot);
            },
            &rt,
        );
        true
    }
}

// === ClientBody ===

/// A request body as the downstream server delivers it.
pub(crate) enum ClientBody {
    /// No body (an HTTP/1.1 request without framing fields).
    Empty,
    /// From hyper's HTTP/2 server.
    Hyper(Incoming),
    /// From the gateway's HTTP/1.1 server.
    H1(crate::h1server::ReqBody),
}

impl From<Option<crate::h1server::ReqBody>> for ClientBody {
    fn from(b: Option<crate::h1server::ReqBody>) -> Self {
        b.map_or(ClientBody::Empty, ClientBody::H1)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(|e| Box::new(e) as BoxError),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H1(b) => b.size_hint(),
        }
    }
}

/// Set when the request body has been handed over completely (the read timeout starts then);
/// also records how the body failed, if it did, for whoever sent it (hyper's HTTP/2 client does
/// not hand back the body's own error).
#[derive(Debug, Default)]
pub(crate) struct SentSignal {
    done: std::sync::atomic::AtomicBool,
    fault: std::sync::atomic::AtomicU8,
    notify: tokio::sync::Notify,
}

impl SentSignal {
    pub(crate) fn set(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// The body failed (the first failure stands).
    pub(crate) fn fail(&self, fault: BodyFault) {
        let _ = self.fault.compare_exchange(0, fault.code(), Ordering::AcqRel, Ordering::Acquire);
    }

    /// How the body failed, if it did.
    pub(crate) fn fault(&self) -> Option<BodyFault> {
        BodyFault::from_code(self.fault.load(Ordering::Acquire))
    }

    /// Whether the whole body was handed over.
    pub(crate) fn is_set(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Resolves once the whole body was handed over.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The downstream request body, forwarded without buffering.
pub(crate) enum RequestBody {
    /// Nothing.
    Empty,
    /// Buffered by a body plugin (or an empty body kept for retries).
    Full(Option<Bytes>),
    /// Streaming from the client.
    Stream {
        /// The client's body.
        inner: ClientBody,
        /// Bytes still allowed (`u64::MAX` = unlimited).
        remaining: u64,
        /// Bytes received, for the access log.
        received: Arc<AtomicU64>,
        /// Set at the end of the body.
        sent: Arc<SentSignal>,
        /// The body read timeout and the gateway's request-id field (kept out of trailers).
        stall: Box<StallTimer>,
    },
    /// Through request body filters (`Plugin::request_filter`); the length when the filters
    /// keep it.
    Core(Box<gw_core::Body>, Option<u64>),
}

/// The body read timeout of a streamed request body: armed when the body has to wait for the
/// client, disarmed by every frame; its timer is allocated the first time it is armed.
pub(crate) struct StallTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the current wait began (armed).
    since: Option<Instant>,
    request_id: HeaderName,
    /// The identity fields the configuration's plugins set (forbidden as trailers too).
    identity: Arc<[HeaderName]>,
}

impl StallTimer {
    /// Whether the body has waited for the client for `timeout`; arms the timer if it is not.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.since.is_none() {
            let now = gw_core::tick::now();
            self.since = Some(now);
            let deadline = tokio::time::Instant::from_std(now) + self.timeout;
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.sleep.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

impl RequestBody {
    pub(crate) fn stream(
        inner: ClientBody,
        limit: u64,
        received: Arc<AtomicU64>,
        sent: Arc<SentSignal>,
        timeout: Duration,
        (request_id, identity): (HeaderName, Arc<[HeaderName]>),
    ) -> Self {
        let stall = Box::new(StallTimer { timeout, sleep: None, since: None, request_id, identity });
        RequestBody::Stream { inner, remaining: if limit == 0 { u64::MAX } else { limit }, received, sent, stall }
    }

    /// How long the body has been waiting for the client, if it is waiting.
    pub(crate) fn stalled_for(&self, now: Instant) -> Option<Duration> {
        match self {
            RequestBody::Stream { stall, .. } => stall.since.map(|s| now.saturating_duration_since(s)),
            _ => None,
        }
    }
}

fn client_body_failed(sent: &SentSignal, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    let e = DownstreamBodyError(e);
    sent.fail(e.fault());
    Poll::Ready(Some(Err(Box::new(e))))
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Core(b, _) => b.poll_frame(cx).map(|f| {
                f.map(|r| match r {
                    Ok(gw_core::Frame::Data(d)) => Ok(Frame::data(d)),
                    Ok(gw_core::Frame::Trailers(t)) => Ok(Frame::trailers(t)),
                    Err(e) => Err(Box::new(e) as BoxError),
                })
            }),
            RequestBody::Stream { inner, remaining, received, sent, stall } => {
                let frame = match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Ready(f) => {
                        stall.since = None;
                        f
                    }
                    Poll::Pending => {
                        if stall.poll_expired(cx) {
                            let e = ClientBodyError {
                                fault: BodyFault::Timeout,
                                why: "the client sent no body bytes within the body read timeout",
                            };
                            return client_body_failed(sent, Box::new(e));
                        }
                        return Poll::Pending;
                    }
                };
                match frame {
                    None => {
                        sent.set();
                        Poll::Ready(None)
                    }
                    Some(Err(e)) => client_body_failed(sent, e),
                    Some(Ok(mut frame)) => {
                        if let Some(d) = frame.data_ref() {
                            let n = d.len() as u64;
                            received.fetch_add(n, Ordering::Relaxed);
                            if n > *remaining {
                                sent.fail(BodyFault::TooLarge);
                                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                            }
                            *remaining -= n;
                        } else if let Some(t) = frame.trailers_mut() {
                            crate::wire::strip_trailers(t, &stall.request_id, &stall.identity);
                        }
                        if inner.is_end_stream() {
                            sent.set();
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Full(b) => b.is_none(),
            RequestBody::Stream { inner, .. } => inner.is_end_stream(),
            RequestBody::Core(b, _) => b.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RequestBody::Stream { inner, .. } => inner.size_hint(),
            RequestBody::Core(_, Some(n)) => SizeHint::with_exact(*n),
            RequestBody::Core(_, None) => SizeHint::default(),
        }
    }
}

impl crate::h1::Outgoing for RequestBody {
    fn take_whole(&mut self) -> Option<Bytes> {
        match self {
            RequestBody::Full(b) => b.take(),
            _ => None,
        }
    }

    fn whole(bytes: Bytes) -> Self {
        RequestBody::Full(Some(bytes))
    }

    fn stalled_for(&self, now: Instant) -> Option<Duration> {
        RequestBody::stalled_for(self, now)
    }
}

impl RequestBody {
    /// This body through `filters` (see `Plugin::request_filter`); `length` when the filters
    /// keep it.
    pub(crate) fn filtered(self, filters: Vec<Box<dyn gw_core::BodyFilter>>, length: Option<u64>) -> Self {
        RequestBody::Core(Box::new(gw_core::Body::from_source(EngineRequest(self)).filtered(filters)), length)
    }
}

/// An engine frame as a gateway frame (data or trailers; `None` for a frame of neither kind,
/// which ends the stream).
fn core_frame(frame: Frame<Bytes>) -> Option<gw_core::Frame> {
    match frame.into_data() {
        Ok(d) => Some(gw_core::Frame::Data(d)),
        Err(f) => f.into_trailers().ok().map(gw_core::Frame::Trailers),
    }
}

/// A request body as a gateway-owned frame source (failures classified once, the original kept
/// as the cause).
struct EngineRequest(RequestBody);

impl gw_core::body::FrameSource for EngineRequest {
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<gw_error::Result<gw_core::Frame>>> {
        let frame = match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                let kind = body_error_kind(&*e);
                let e = gw_error::Error::new(kind, "the client's request body failed").with_cause(e);
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Ready(Some(Ok(f))) => f,
        };
        Poll::Ready(core_frame(frame).map(Ok))
    }

    fn is_end(&self) -> bool {
        self.0.is_end_stream()
    }
}

// === UpstreamBody ===

/// Called once when an upstream body ends, read to the end or not: `true` when the upstream
/// failed it (stalled past the read timeout, broke its framing or its connection).
pub(crate) type OnUpstreamDone = Box<dyn FnOnce(bool) + Send>;

/// Where an upstream response body comes from.
pub(crate) enum UpstreamInner {
    /// hyper's client (HTTP/2, upgrades).
    Hyper(Incoming),
    /// The gateway's HTTP/1.1 client.
    H1(crate::h1::H1Body),
}

impl Body for UpstreamInner {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamInner::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(|e| Box::new(e) as BoxError),
            UpstreamInner::H1(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamInner::Hyper(b) => b.is_end_stream(),
            UpstreamInner::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamInner::Hyper(b) => b.size_hint(),
            UpstreamInner::H1(b) => b.size_hint(),
        }
    }
}

/// A streaming upstream response body.
pub(crate) struct UpstreamBody {
    inner: UpstreamInner,
    read_timeout: Duration,
    /// Armed only while the upstream has nothing to send; reset on every frame.
    stall: Option<Pin<Box<Sleep>>>,
    on_done: Option<OnUpstreamDone>,
}

impl UpstreamBody {
    pub(crate) fn new(inner: UpstreamInner, read_timeout: Duration, on_done: OnUpstreamDone) -> Self {
        let mut b = UpstreamBody { inner, read_timeout, stall: None, on_done: Some(on_done) };
        if b.inner.is_end_stream() {
            b.done(false);
        }
        b
    }

    fn done(&mut self, failed: bool) {
        if let Some(f) = self.on_done.take() {
            f(failed);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Dropped before the end (client gone): the outcome is still reported.
        self.done(false);
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall = None;
                if this.inner.is_end_stream() {
                    this.done(false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // A failure of the client's own body (the exchange writes it) is not the
                // upstream's.
                let upstream = body_error_kind(&*e).side() == gw_error::Side::Upstream;
                this.done(upstream);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done(false);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = this.read_timeout;
                let sleep = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.done(true);
                    return Poll::Ready(Some(Err(Box::new(UpstreamReadTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === ResponseBody ===

/// How a response ended, for the log phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The body ended normally (or there was none).
    Complete,
    /// The client went away (or the connection failed) before the end.
    ClientGone,
    /// The body failed on the way: the upstream (a stall, broken framing or connection) or the
    /// client's request body that the exchange was still sending.
    Failed(ErrorKind),
}

/// What the log phase is told when a response ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ended {
    /// Body bytes given to the client.
    pub(crate) bytes_sent: u64,
    /// Bytes received from the client when the request's own count does not say (a tunnel).
    pub(crate) bytes_received: Option<u64>,
    pub(crate) end: End,
    pub(crate) at: Instant,
}

/// The request's log phase, carried by its response body until the body finishes.
pub(crate) trait Finish: Send {
    /// Run the log phase.
    fn finish(self: Box<Self>, ended: Ended);

    /// The response failed before any of it reached the client: the error response of `kind`
    /// to send instead (the log records that status and error).
    fn error_response(&mut self, kind: ErrorKind) -> Response<ResponseBody>;

    /// Remove the fields that must not travel as trailers (see `wire::strip_trailers`).
    fn strip_trailers(&self, trailers: &mut HeaderMap);
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    /// A gateway-owned body: filtered, or whole with trailers (boxed: rare, and the plain
    /// path's body stays small), with where to read its rest if the client leaves.
    Core(Box<gw_core::Body>, Option<Drains>),
}

/// The body sent to the client.
pub(crate) struct ResponseBody {
    kind: Kind,
    sent: u64,
    /// A frame was yielded.
    started: bool,
    /// The body failed before its first frame (the server may still send an error response
    /// instead, see [`ResponseBody::error_response`]); the log phase waits until it knows.
    failed_early: Option<ErrorKind>,
    finish: Option<Box<dyn Finish>>,
}

impl ResponseBody {
    fn new(kind: Kind) -> Self {
        ResponseBody { kind, sent: 0, started: false, failed_early: None, finish: None }
    }

    pub(crate) fn empty() -> Self {
        Self::new(Kind::Empty)
    }

    pub(crate) fn full(b: Bytes) -> Self {
        if b.is_empty() {
            return Self::empty();
        }
        Self::new(Kind::Full(Some(b)))
    }

    pub(crate) fn upstream(b: UpstreamBody) -> Self {
        Self::new(Kind::Upstream(b))
    }

    /// A gateway-owned body (filtered, or whole with trailers).
    pub(crate) fn core(b: gw_core::Body) -> Self {
        Self::new(Kind::Core(Box::new(b), None))
    }

    /// A gateway-owned body whose rest, if the client leaves before its end and a filter
    /// still needs it ([`gw_core::BodyFilter::reads_rest`]), is read through `drains`.
    pub(crate) fn core_detachable(b: gw_core::Body, drains: &Drains) -> Self {
        Self::new(Kind::Core(Box::new(b), Some(drains.clone())))
    }

    /// This body as a gateway-owned one (its frames and failures adapted), for body filters
    /// and whole-body plugins. Its log phase, if any, stays with the returned body's owner:
    /// call before [`ResponseBody::set_finish`].
    pub(crate) fn into_core(self) -> gw_core::Body {
        debug_assert!(self.finish.is_none());
        gw_core::Body::from_source(EngineBody(self))
    }

    pub(crate) fn set_finish(&mut self, f: Box<dyn Finish>) {
        self.finish = Some(f);
    }

    /// When the body failed before its first frame: the error response to send instead (with
    /// the log phase moved to it). `None` when it did not, or has no log phase.
    pub(crate) fn error_response(&mut self) -> Option<Response<ResponseBody>> {
        let kind = self.failed_early?;
        let mut f = self.finish.take()?;
        self.failed_early = None;
        let mut r = f.error_response(kind);
        r.body_mut().finish = Some(f);
        Some(r)
    }

    fn run_finish(&mut self, end: End) {
        if let Some(f) = self.finish.take() {
            f.finish(Ended { bytes_sent: self.sent, bytes_received: None, end, at: gw_core::tick::now() });
        }
    }
}

impl crate::h1server::Outgoing for ResponseBody {
    fn error_response(&mut self) -> Option<Response<Self>> {
        ResponseBody::error_response(self)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Abandoned before its end (the client left): a filter that still needs the rest (a
        // cache fill others stream from) gets it read in the background, within the upstream
        // read timeout and the drains' bounds (else it is dropped here).
        if let Kind::Core(b, Some(drains)) = &mut self.kind
            && let Some(rest) = b.detach()
        {
            drains.spawn(rest);
        }
        if self.finish.is_none() {
            return;
        }
        // A body with nothing more to send counts as delivered: hyper's HTTP/2 server sends a
        // head with END_STREAM and drops a body that is already at its end (204, HEAD, gRPC
        // trailers-only) without polling it.
        let end = match self.failed_early {
            Some(k) => End::Failed(k),
            None if self.is_end_stream() => End::Complete,
            None => End::ClientGone,
        };
        self.run_finish(end);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let res = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(b) => Pin::new(b).poll_frame(cx),
            Kind::Core(b, _) => b.poll_frame(cx).map(|f| {
                f.map(|r| match r {
                    Ok(gw_core::Frame::Data(d)) => Ok(Frame::data(d)),
                    Ok(gw_core::Frame::Trailers(t)) => Ok(Frame::trailers(t)),
                    Err(e) => Err(Box::new(e) as BoxError),
                })
            }),
        };
        match res {
            Poll::Ready(Some(Ok(mut f))) => {
                this.started = true;
                if let Some(d) = f.data_ref() {
                    this.sent += d.len() as u64;
                } else if let (Some(t), Some(fin)) = (f.trailers_mut(), &this.finish) {
                    fin.strip_trailers(t);
                }
                if this.is_end_stream() {
                    this.run_finish(End::Complete);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(None) => {
                this.run_finish(End::Complete);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let kind = body_error_kind(&*e);
                if this.started {
                    this.run_finish(End::Failed(kind));
                } else {
                    this.failed_early = Some(kind);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Core(b, _) => b.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(b) => b.size_hint(),
            Kind::Core(..) => SizeHint::default(),
        }
    }
}

/// An engine body as a gateway-owned frame source: frames adapted, failures classified once
/// ([`body_error_kind`]) into a [`gw_error::Error`] that keeps the original as its cause.
struct EngineBody(ResponseBody);

impl gw_core::body::FrameSource for EngineBody {
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<gw_error::Result<gw_core::Frame>>> {
        let frame = match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                let kind = body_error_kind(&*e);
                return Poll::Ready(Some(Err(gw_error::Error::new(kind, "reading the body").with_cause(e))));
            }
            Poll::Ready(Some(Ok(f))) => f,
        };
        Poll::Ready(core_frame(frame).map(Ok))
    }

    fn is_end(&self) -> bool {
        self.0.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A body that never ends (an upstream that stalls); records when it is dropped.
    struct Stalled(Arc<AtomicBool>);

    impl gw_core::body::FrameSource for Stalled {
        fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<gw_error::Result<gw_core::Frame>>> {
            Poll::Pending
        }
    }

    impl Drop for Stalled {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn stalled() -> (gw_core::Body, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        (gw_core::Body::from_source(Stalled(dropped.clone())), dropped)
    }

    /// Detached reads are bounded in number (past it, the body is dropped at once) and in
    /// time (past the deadline, the body is dropped and its place freed), and run in the
    /// tracker the gateway awaits on shutdown.
    #[tokio::test]
    async fn detached_reads_are_bounded() {
        let tasks = tokio_util::task::TaskTracker::new();
        let drains = Drains::new(2, Duration::from_millis(200), tasks.clone());
        let (a, a_dropped) = stalled();
        let (b, _) = stalled();
        let (c, c_dropped) = stalled();
        assert!(drains.spawn(a));
        assert!(drains.spawn(b));
        assert_eq!(tasks.len(), 2, "in the gateway's tracker");
        assert!(!drains.spawn(c), "a third is refused");
        assert!(c_dropped.load(Ordering::SeqCst), "and dropped");
        assert!(!a_dropped.load(Ordering::SeqCst), "the first is still being read");
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.unwrap_or_else(|_| panic!("no deadline"));
        assert!(a_dropped.load(Ordering::SeqCst), "dropped at the deadline");
        let (d, _) = stalled();
        assert!(drains.spawn(d), "places freed");
        // New limits apply to the reads that start after them.
        drains.set_limits(0, Duration::from_millis(200));
        let (e, e_dropped) = stalled();
        assert!(!drains.spawn(e), "none allowed");
        assert!(e_dropped.load(Ordering::SeqCst));
    }
}
