//! Body types of the data plane.
//!
//! * [`ResponseBody`]: what the client receives. It runs the request's log phase exactly once,
//!   when the body ends or is dropped (client gone), so latency and byte counts cover the whole
//!   response.
//! * [`UpstreamBody`]: a streaming upstream response. It enforces the read timeout between
//!   chunks and reports the outcome to the balancer (an HTTP/1.1 body returns its connection to
//!   the pool itself, see `h1`).
//! * [`RequestBody`]: the client's body on its way upstream, counted and limited to the route's
//!   `max_body_bytes`.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use crate::h1::RawFields;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

/// Boxed error of body streams.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

// === RequestBody ===

/// The request body exceeded the route's limit.
#[derive(Debug)]
pub(crate) struct BodyTooLarge;

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body exceeds the route's max_body_bytes")
    }
}

impl StdError for BodyTooLarge {}

/// The client's request body stalled or failed while streaming upstream.
#[derive(Debug)]
pub(crate) struct DownstreamBodyError(pub(crate) BoxError);

impl fmt::Display for DownstreamBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reading the client's request body: {}", self.0)
    }
}

impl StdError for DownstreamBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
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

/// Set when the request body has been handed over completely (the read timeout starts then).
#[derive(Debug, Default)]
pub(crate) struct SentSignal {
    done: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl SentSignal {
    pub(crate) fn set(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
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
    },
}

impl RequestBody {
    pub(crate) fn stream(inner: ClientBody, limit: u64, received: Arc<AtomicU64>, sent: Arc<SentSignal>) -> Self {
        RequestBody::Stream { inner, remaining: if limit == 0 { u64::MAX } else { limit }, received, sent }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Stream { inner, remaining, received, sent } => {
                match ready!(Pin::new(&mut *inner).poll_frame(cx)) {
                    None => {
                        sent.set();
                        Poll::Ready(None)
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(Box::new(DownstreamBodyError(e))))),
                    Some(Ok(frame)) => {
                        if let Some(d) = frame.data_ref() {
                            let n = d.len() as u64;
                            received.fetch_add(n, Ordering::Relaxed);
                            if n > *remaining {
                                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                            }
                            *remaining -= n;
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
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RequestBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

// === UpstreamBody ===

/// The upstream stopped sending the response body for longer than the read timeout.
#[derive(Debug)]
pub(crate) struct UpstreamReadTimeout;

impl fmt::Display for UpstreamReadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream response body stalled past the read timeout")
    }
}

impl StdError for UpstreamReadTimeout {}

/// Called once when an upstream body ends, read to the end or not.
pub(crate) type OnUpstreamDone = Box<dyn FnOnce() + Send>;

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
            b.done();
        }
        b
    }

    fn done(&mut self) {
        if let Some(f) = self.on_done.take() {
            f();
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Dropped before the end (client gone): the outcome is still reported.
        self.done();
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
                    this.done();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = this.read_timeout;
                let sleep = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.done();
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

/// Runs the log phase of a request when its response body finishes.
pub(crate) trait Finish: Send {
    /// `bytes_sent`: body bytes given to the client; `complete`: the body ended normally.
    fn finish(self: Box<Self>, bytes_sent: u64, complete: bool, at: Instant);
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

/// The body sent to the client.
pub(crate) struct ResponseBody {
    kind: Kind,
    sent: u64,
    finish: Option<Box<dyn Finish>>,
}

impl ResponseBody {
    pub(crate) fn empty() -> Self {
        ResponseBody { kind: Kind::Empty, sent: 0, finish: None }
    }

    pub(crate) fn full(b: Bytes) -> Self {
        if b.is_empty() {
            return Self::empty();
        }
        ResponseBody { kind: Kind::Full(Some(b)), sent: 0, finish: None }
    }

    pub(crate) fn upstream(b: UpstreamBody) -> Self {
        ResponseBody { kind: Kind::Upstream(b), sent: 0, finish: None }
    }

    /// The upstream response's header fields, when still kept as bytes ([`RawFields`]).
    pub(crate) fn raw_fields(&self) -> Option<&RawFields> {
        match &self.kind {
            Kind::Upstream(UpstreamBody { inner: UpstreamInner::H1(b), .. }) => b.raw.as_ref(),
            _ => None,
        }
    }

    /// Take the fields kept as bytes (the caller puts them into the map or writes them out).
    pub(crate) fn take_raw_fields(&mut self) -> Option<RawFields> {
        match &mut self.kind {
            Kind::Upstream(UpstreamBody { inner: UpstreamInner::H1(b), .. }) => b.raw.take(),
            _ => None,
        }
    }

    pub(crate) fn set_finish(&mut self, f: Box<dyn Finish>) {
        self.finish = Some(f);
    }

    fn run_finish(&mut self, complete: bool) {
        if let Some(f) = self.finish.take() {
            f.finish(self.sent, complete, gw_core::tick::now());
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.run_finish(false);
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
        };
        match &res {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.sent += d.len() as u64;
                }
                if this.is_end_stream() {
                    this.run_finish(true);
                }
            }
            Poll::Ready(None) => this.run_finish(true),
            Poll::Ready(Some(Err(_))) => this.run_finish(false),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(b) => b.size_hint(),
        }
    }
}
