//! Streaming bodies: a body is a sequence of [`Frame`]s (data, then optional trailers) with an
//! end, and a [`BodyFilter`] sees the frames of one message as they pass, without the
//! gateway buffering the whole body.
//!
//! * [`Body`]: a gateway-owned streaming body (empty, whole, or a stream of frames), with
//!   [`Body::frame`] to read it frame by frame and [`Body::collect`] to buffer it (with a cap).
//! * [`BodyFilter`]: per-message state that observes, rewrites, holds back or replaces frames,
//!   and may emit more at the end (e.g. a gRPC-Web trailer frame, a cache fill that stores the
//!   copy it took). Plugins hand one out from [`crate::Plugin::response_filter`].
//! * [`Emit`]: where a filter puts the frames it hands on.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use crate::{Error, ErrorKind, Result};

/// One frame of a body.
#[derive(Debug, Clone)]
pub enum Frame {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields; the last frame of a body when present.
    Trailers(HeaderMap),
}

impl Frame {
    /// The bytes of a data frame.
    pub fn data(&self) -> Option<&Bytes> {
        match self {
            Frame::Data(b) => Some(b),
            Frame::Trailers(_) => None,
        }
    }
}

/// A source of frames (what an engine adapts its bodies to).
pub trait FrameSource: Send + 'static {
    /// The next frame; `Ready(None)` at the end.
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame>>>;

    /// Whether no frame will follow (known without polling). Default: not known.
    fn is_end(&self) -> bool {
        false
    }

    /// The reader is abandoning this source before its end (the client left): the rest of
    /// it, as a body to read to its end in the background, when something still needs it (a
    /// filter recording it, see [`BodyFilter::reads_rest`]). Default: `None` (dropped).
    fn detach(self: Pin<&mut Self>) -> Option<Body> {
        None
    }
}

enum Kind {
    Empty,
    /// Data, then trailers (boxed: rare, and a whole body stays small).
    Full(Option<Bytes>, Option<Box<HeaderMap>>),
    Stream(Pin<Box<dyn FrameSource>>),
}

/// A streaming body owned by the gateway (plugins never see the engine's body types).
pub struct Body {
    kind: Kind,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(..) => "full",
            Kind::Stream(_) => "stream",
        };
        f.debug_struct("Body").field("kind", &k).finish()
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

/// A body read to its end by [`Body::collect`].
#[derive(Debug, Default)]
pub struct Collected {
    /// Every data byte.
    pub data: Bytes,
    /// The trailers, when the body had some.
    pub trailers: Option<HeaderMap>,
}

impl Body {
    /// No body.
    pub fn empty() -> Body {
        Body { kind: Kind::Empty }
    }

    /// A whole body (no trailers).
    pub fn full(data: impl Into<Bytes>) -> Body {
        Body { kind: Kind::Full(Some(data.into()), None) }
    }

    /// A whole body followed by trailers (`None`: none).
    pub fn full_with_trailers(data: impl Into<Bytes>, trailers: Option<HeaderMap>) -> Body {
        Body { kind: Kind::Full(Some(data.into()), trailers.map(Box::new)) }
    }

    /// The bytes of a whole body without trailers ([`Body::full`]) not yet read; `None` for
    /// an empty, streaming or trailer-carrying body.
    pub fn whole(&self) -> Option<&Bytes> {
        match &self.kind {
            Kind::Full(Some(d), None) => Some(d),
            _ => None,
        }
    }

    /// A body streamed from `source`.
    pub fn from_source(source: impl FrameSource) -> Body {
        Body { kind: Kind::Stream(Box::pin(source)) }
    }

    /// `self` with `filters` applied in order (the first sees the frames first). Nothing is
    /// buffered beyond what a filter holds back itself.
    pub fn filtered(self, filters: Vec<Box<dyn BodyFilter>>) -> Body {
        if filters.is_empty() {
            return self;
        }
        Body::from_source(Filtered { inner: self, filters, queue: VecDeque::new(), ended: false, detached: false })
    }

    /// The reader is abandoning this body before its end: the rest of it, when a filter
    /// still needs it read ([`BodyFilter::reads_rest`]); read it with [`Body::drain`] (its
    /// frames are the filters' output, which nobody wants). `None`: drop it.
    pub fn detach(&mut self) -> Option<Body> {
        match &mut self.kind {
            Kind::Stream(s) if !s.is_end() => s.as_mut().detach(),
            _ => None,
        }
    }

    /// Read the body to its end (or its first error), dropping every frame.
    pub async fn drain(mut self) {
        while let Some(f) = self.frame().await {
            if f.is_err() {
                return;
            }
        }
    }

    /// Poll the next frame.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame>>> {
        match &mut self.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(data, trailers) => {
                if let Some(d) = data.take()
                    && !d.is_empty()
                {
                    return Poll::Ready(Some(Ok(Frame::Data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::Trailers(*t))))
            }
            Kind::Stream(s) => s.as_mut().poll_frame(cx),
        }
    }

    /// The next frame; `None` at the end.
    pub async fn frame(&mut self) -> Option<Result<Frame>> {
        poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// Whether no frame will follow (known without polling).
    pub fn is_end(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(d, t) => d.as_ref().is_none_or(Bytes::is_empty) && t.is_none(),
            Kind::Stream(s) => s.is_end(),
        }
    }

    /// The body's bytes, taken out, when it is whole already (empty, or made by
    /// [`Body::full`] and not read from) and has no trailers: the body is then empty.
    /// `None` for a stream or a whole body with trailers, which is left untouched.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        match &mut self.kind {
            Kind::Empty => Some(Bytes::new()),
            Kind::Full(d, None) => {
                let d = d.take().unwrap_or_default();
                self.kind = Kind::Empty;
                Some(d)
            }
            _ => None,
        }
    }

    /// Read the whole body, refusing more than `limit` data bytes (`ResponseTooLarge`).
    pub async fn collect(mut self, limit: usize) -> Result<Collected> {
        let mut buf = BytesMut::new();
        let mut first: Option<Bytes> = None;
        let mut trailers = None;
        let mut total = 0usize;
        while let Some(f) = self.frame().await {
            match f? {
                Frame::Data(d) => {
                    total += d.len();
                    if total > limit {
                        return Err(Error::new(ErrorKind::ResponseTooLarge, format!("body exceeds {limit} bytes")));
                    }
                    // One frame is kept as it is (no copy); more are gathered.
                    match first.take() {
                        None if buf.is_empty() => first = Some(d),
                        None => buf.extend_from_slice(&d),
                        Some(f) => {
                            buf.extend_from_slice(&f);
                            buf.extend_from_slice(&d);
                        }
                    }
                }
                Frame::Trailers(t) => trailers = Some(t),
            }
        }
        let data = first.unwrap_or_else(|| buf.freeze());
        Ok(Collected { data, trailers })
    }
}

/// Where a [`BodyFilter`] puts the frames it hands on (to the next filter, or the client).
#[derive(Debug, Default)]
pub struct Emit {
    frames: Vec<Frame>,
}

impl Emit {
    /// Hand on body bytes (empty ones are dropped).
    pub fn data(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.frames.push(Frame::Data(data));
        }
    }

    /// Hand on trailers (they must be the last frame handed on).
    pub fn trailers(&mut self, trailers: HeaderMap) {
        self.frames.push(Frame::Trailers(trailers));
    }
}

/// The frames of one message as they pass: observe (hand each frame on as it is), rewrite
/// (hand on something else), hold back (hand on nothing yet, more later), or replace the
/// stream (hand on frames of your own). Made per message by a plugin hook, so it may keep
/// state; dropped when the body ends or is abandoned (a client that left, a failed upstream),
/// so `Drop` is where an unfinished job (an incomplete cache fill) is given up.
///
/// The defaults hand every frame on unchanged.
pub trait BodyFilter: Send + 'static {
    /// A data frame.
    fn data(&mut self, data: Bytes, out: &mut Emit) -> Result<()> {
        out.data(data);
        Ok(())
    }

    /// The trailers (when the body has some: the last frame).
    fn trailers(&mut self, trailers: HeaderMap, out: &mut Emit) -> Result<()> {
        out.trailers(trailers);
        Ok(())
    }

    /// The end of the body, after its trailers if any: the last chance to hand on held-back
    /// data or trailers of its own.
    fn end(&mut self, _out: &mut Emit) -> Result<()> {
        Ok(())
    }

    /// Whether the body this filter hands on has the same length as the one it receives (an
    /// observer): the message then keeps its `Content-Length`. Default: `false` (the length
    /// field is removed and the body framed by the protocol, e.g. chunked).
    fn keeps_length(&self) -> bool {
        false
    }

    /// Whether the rest of the body must still be read through this filter when the reader
    /// abandons it before its end (the client left): a cache fill that other requests stream
    /// from, or that is still storing. Asked when the body is abandoned and after each frame
    /// read in the background; reading stops (and the filter is dropped) once no filter says
    /// so. Default: `false`.
    fn reads_rest(&self) -> bool {
        false
    }
}

/// A body with filters applied (see [`Body::filtered`]).
struct Filtered {
    inner: Body,
    filters: Vec<Box<dyn BodyFilter>>,
    /// Frames the last filter handed on, not yet read.
    queue: VecDeque<Frame>,
    ended: bool,
    /// Read in the background after its reader left: ends once no filter reads the rest.
    detached: bool,
}

impl Filtered {
    /// Run `frame` (or the end, `None`) through every filter, in order; what the last hands
    /// on is queued. Trailers end the body: every filter's `end` follows them at once (an
    /// engine stops reading a body at its trailers).
    fn run(&mut self, frame: Option<Frame>) -> Result<()> {
        let end = matches!(frame, None | Some(Frame::Trailers(_)));
        if end {
            self.ended = true;
        }
        let mut input: Vec<Frame> = frame.into_iter().collect();
        for f in &mut self.filters {
            let mut out = Emit::default();
            for fr in input.drain(..) {
                match fr {
                    Frame::Data(d) => f.data(d, &mut out)?,
                    Frame::Trailers(t) => f.trailers(t, &mut out)?,
                }
            }
            if end {
                f.end(&mut out)?;
            }
            input = out.frames;
        }
        self.queue.extend(input);
        Ok(())
    }
}

impl FrameSource for Filtered {
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame>>> {
        let this = &mut *self;
        loop {
            if let Some(f) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(f)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            if this.detached && !this.filters.iter().any(|f| f.reads_rest()) {
                this.ended = true;
                return Poll::Ready(None);
            }
            match this.inner.poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(f))) => {
                    if let Err(e) = this.run(Some(f)) {
                        this.ended = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(None) => {
                    if let Err(e) = this.run(None) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
        }
    }

    fn is_end(&self) -> bool {
        self.ended && self.queue.is_empty()
    }

    fn detach(mut self: Pin<&mut Self>) -> Option<Body> {
        let this = &mut *self;
        if this.ended {
            return None;
        }
        // Only the filters up to the last one that reads the rest: what comes after it is
        // output nobody reads.
        let last = this.filters.iter().rposition(|f| f.reads_rest())?;
        let filters: Vec<Box<dyn BodyFilter>> = this.filters.drain(..=last).collect();
        this.ended = true;
        let inner = std::mem::take(&mut this.inner);
        Some(Body::from_source(Filtered { inner, filters, queue: VecDeque::new(), ended: false, detached: true }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames from a list, one per poll.
    struct Frames(VecDeque<Frame>);

    impl FrameSource for Frames {
        fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn source(frames: Vec<Frame>) -> Body {
        Body::from_source(Frames(frames.into()))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    /// Counts bytes and upper-cases them, frame by frame; adds a trailer with the count.
    #[derive(Default)]
    struct Upper {
        n: usize,
    }

    impl BodyFilter for Upper {
        fn data(&mut self, data: Bytes, out: &mut Emit) -> Result<()> {
            self.n += data.len();
            out.data(Bytes::from(data.to_ascii_uppercase()));
            Ok(())
        }

        fn end(&mut self, out: &mut Emit) -> Result<()> {
            let mut t = HeaderMap::new();
            t.insert("x-bytes", self.n.into());
            out.trailers(t);
            Ok(())
        }
    }

    /// Holds everything back and hands on one frame at the end.
    #[derive(Default)]
    struct Join(BytesMut);

    impl BodyFilter for Join {
        fn data(&mut self, data: Bytes, _out: &mut Emit) -> Result<()> {
            self.0.extend_from_slice(&data);
            Ok(())
        }

        fn end(&mut self, out: &mut Emit) -> Result<()> {
            out.data(std::mem::take(&mut self.0).freeze());
            Ok(())
        }
    }

    /// Filters see frames in order, chained; a filter can rewrite, hold back and add frames.
    #[test]
    fn filters_chain_frame_by_frame() {
        let frames = vec![Frame::Data(Bytes::from_static(b"ab")), Frame::Data(Bytes::from_static(b"cd"))];
        let mut b = source(frames).filtered(vec![Box::new(Upper::default())]);
        let mut got = Vec::new();
        while let Some(f) = block_on(b.frame()) {
            got.push(f.unwrap());
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].data().unwrap(), "AB");
        assert_eq!(got[1].data().unwrap(), "CD");
        let Frame::Trailers(t) = &got[2] else { panic!("trailers last") };
        assert_eq!(t["x-bytes"], "4");
        assert!(b.is_end());

        let frames = vec![Frame::Data(Bytes::from_static(b"ab")), Frame::Data(Bytes::from_static(b"cd"))];
        let b = source(frames).filtered(vec![Box::new(Join::default()), Box::new(Upper::default())]);
        let c = block_on(b.collect(100)).unwrap();
        assert_eq!(c.data, "ABCD");
        assert_eq!(c.trailers.unwrap()["x-bytes"], "4");
    }

    /// `collect` keeps the trailers and enforces its cap.
    #[test]
    fn collect_with_trailers_and_cap() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let frames = vec![Frame::Data(Bytes::from_static(b"abc")), Frame::Trailers(t)];
        let c = block_on(source(frames.clone()).collect(3)).unwrap();
        assert_eq!(c.data, "abc");
        assert_eq!(c.trailers.unwrap()["grpc-status"], "0");
        let e = block_on(source(frames).collect(2)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResponseTooLarge);
        let c = block_on(Body::full_with_trailers("x", None).collect(9)).unwrap();
        assert_eq!(c.data, "x");
        assert!(Body::empty().is_end() && Body::full("").is_end() && !Body::full("a").is_end());
    }

    /// Counts the bytes it sees in a shared counter; reads the rest until `until` bytes.
    struct Tally(std::sync::Arc<std::sync::atomic::AtomicUsize>, usize);

    impl BodyFilter for Tally {
        fn data(&mut self, data: Bytes, out: &mut Emit) -> Result<()> {
            self.0.fetch_add(data.len(), std::sync::atomic::Ordering::Relaxed);
            out.data(data);
            Ok(())
        }

        fn reads_rest(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::Relaxed) < self.1
        }
    }

    /// An abandoned body whose filter reads the rest is handed over whole (the rest of its
    /// frames, through that filter, not the ones after it); reading stops once the filter no
    /// longer wants it; without such a filter nothing is handed over.
    #[test]
    fn detach_reads_the_rest_for_filters_that_want_it() {
        let frames = || (0..5).map(|_| Frame::Data(Bytes::from_static(b"ab"))).collect::<Vec<_>>();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut b = source(frames()).filtered(vec![Box::new(Tally(seen.clone(), 100)), Box::new(Upper::default())]);
        assert_eq!(block_on(b.frame()).unwrap().unwrap().data().unwrap(), "AB");
        let rest = b.detach().expect("the rest is wanted");
        drop(b);
        block_on(rest.drain());
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 10);
        // Stops once the filter has what it wants.
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut b = source(frames()).filtered(vec![Box::new(Tally(seen.clone(), 4))]);
        block_on(b.frame());
        block_on(b.detach().expect("wanted").drain());
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 4);
        // Nobody wants it, or it ended: nothing to read.
        let mut b = source(frames()).filtered(vec![Box::new(Upper::default())]);
        assert!(b.detach().is_none());
        let mut b = source(vec![]).filtered(vec![Box::new(Tally(seen.clone(), 100))]);
        assert!(block_on(b.frame()).is_none());
        assert!(b.detach().is_none());
    }
}
