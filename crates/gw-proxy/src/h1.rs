//! The gateway's own HTTP/1.1 upstream client.
//!
//! hyper's client runs each connection as a task of its own (a dispatcher) that the request's
//! task talks to through channels: per request, three polls of that task, two hand-offs and a
//! copy of the request headers into a new map. An HTTP/1.1 connection carries one exchange at a
//! time, so here the request's own task owns the connection: it encodes the request head
//! straight from the gateway's [`RequestHead`] into one buffer, writes it, parses the response
//! head with `httparse`, and the returned [`H1Body`] reads the body from the same socket. Header
//! values of the response share the read buffer (no copies). Upgrades (WebSocket) and HTTP/2
//! still go through hyper.
//!
//! Framing is strict, as a proxy's must be: a reused connection that an upstream framed
//! ambiguously would mix one response into the next.
//! * Response head: at most [`MAX_HEAD`] bytes and [`MAX_FIELDS`] fields; obsolete line folding
//!   and malformed lines are errors.
//! * `1xx` interim responses are skipped; `101` is an error (no upgrade was asked for).
//! * No body after `HEAD`, `1xx`, `204` and `304` (RFC 9112 §6.3).
//! * `Transfer-Encoding` must be exactly `chunked` on an HTTP/1.1 response and comes without
//!   `Content-Length`; anything else with it is an error (nginx does the same).
//! * `Content-Length` values must be digits and agree with each other.
//! * Without either, the body runs to connection close.
//! * Chunk-size lines end in CRLF, sizes have at most 16 hex digits, extensions follow the
//!   RFC 9112 grammar and are skipped (bounded), chunk data is followed by CRLF, trailers are
//!   header fields (bounded) and are passed on as a trailers frame.
//!
//! A connection goes back to the pool only when the request was written completely, the
//! response ended exactly at the end of what was read (nothing left over), neither side asked
//! to close (`Connection: close`, or HTTP/1.0 without `keep-alive`), and the response could not
//! be followed by bytes its sender meant as a body: a `HEAD`, `204` or `304` response that
//! announces one (a non-zero `Content-Length`, or chunked) is not reused, since a sender that
//! writes that body anyway would have it read as the next response. Every error drops it. Errors from the upstream side map to 502 (protocol), 504 (no response head within the
//! read timeout) or the write timeout; their retry safety follows what was sent (see
//! [`exchange`]).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use gw_core::RequestHead;
use gw_error::{Error, ErrorKind, Retry};

use crate::fault::{BoxError, client_body_failure};
use crate::head::Head;
use crate::io::{MIN_READ, ReadTimer, StallIo, Upgraded, WriteTimeout, poll_fill};
use crate::wire::framing::{Framing, Step, next_frame, put_num};
use crate::wire::put_field;
use crate::wire::response::{MAX_FIELDS, MAX_HEAD, Malformed, parse_head};

/// The field the proxy's `traceparent` line replaces.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A request body the client can send: any HTTP body of bytes, plus what the client needs to
/// know of it to write it in one go and hand it back for a retry (the data plane's
/// `body::RequestBody`; the client does not depend on it).
pub(crate) trait Outgoing: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static {
    /// The whole body, taken out, when it is buffered (it then goes out with the head in one
    /// write).
    fn take_whole(&mut self) -> Option<Bytes>;
    /// A buffered body of `bytes` (handed back for a retry when nothing was sent).
    fn whole(bytes: Bytes) -> Self;
    /// How long the body has been waiting for the client (`now` minus the start of the wait),
    /// if it is waiting.
    fn stalled_for(&self, now: std::time::Instant) -> Option<Duration>;
}

// === Connection ===

/// An HTTP/1.1 upstream connection, owned by one request at a time.
pub(crate) struct H1Conn {
    io: StallIo,
    /// Its write-stall limit (shared with `io`).
    pub(crate) write_timeout: WriteTimeout,
    /// The response-head timer, re-armed per request (see [`ReadTimer`]).
    read_timer: ReadTimer,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request head being written (capacity kept between requests).
    out: Vec<u8>,
    /// Scratch space of the head parser.
    ranges: Vec<[u32; 4]>,
    read_size: usize,
    /// Whether it may go back to its endpoint's pool after a clean exchange (not a probe's).
    pub(crate) poolable: bool,
}

impl H1Conn {
    pub(crate) fn new(io: StallIo, write_timeout: WriteTimeout, read_timer: ReadTimer) -> Self {
        H1Conn {
            io,
            write_timeout,
            read_timer,
            buf: BytesMut::new(),
            out: Vec::new(),
            ranges: Vec::new(),
            read_size: MIN_READ,
            poolable: true,
        }
    }

    /// Whether an idle connection can carry another request: the upstream has neither closed
    /// it nor sent anything unasked. Costs no system call while the socket has nothing to read
    /// (tokio knows it drained the socket last time).
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.buf.reserve(1);
        matches!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.buf), Poll::Pending)
    }

    /// Let go of buffers grown by a large exchange before the connection sits idle.
    pub(crate) fn trim(&mut self) {
        const KEEP: usize = 64 * 1024;
        if self.buf.capacity() > KEEP {
            self.buf = BytesMut::new();
        }
        if self.out.capacity() > KEEP {
            self.out = Vec::new();
        }
    }

    /// Read more bytes into `buf`: `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.io, &mut self.buf, &mut self.read_size, cx)
    }
}

// === Request side ===

/// How the request body is framed on the wire.
#[derive(Clone, Copy)]
enum ReqFraming {
    /// No body bytes.
    None,
    /// `Content-Length`: bytes still to send.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Writes one request: the head in `conn.out`, then the body.
struct Writer<B> {
    /// Position in `conn.out` written so far.
    head_pos: usize,
    body: Option<B>,
    framing: ReqFraming,
    /// Body pieces waiting to be written, in order.
    queue: VecDeque<Bytes>,
    /// Whether a body frame was taken (the body can no longer be handed back).
    polled_body: bool,
    /// Bytes written to the socket.
    written: u64,
    /// Everything is in the queue (the body ended).
    body_done: bool,
}

/// Why writing the request stopped.
enum WriteError {
    Io(io::Error),
    /// The client's body failed (or exceeded the route limit).
    Body(BoxError),
    /// The body did not match its `Content-Length`.
    Length,
}

impl<B: Outgoing> Writer<B> {
    fn poll(&mut self, conn: &mut H1Conn, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        loop {
            // Write what is queued, several pieces per call.
            if self.head_pos < conn.out.len() || !self.queue.is_empty() {
                let mut slices = [IoSlice::new(&[]); 4];
                let mut n = 0;
                if self.head_pos < conn.out.len() {
                    slices[0] = IoSlice::new(&conn.out[self.head_pos..]);
                    n = 1;
                }
                for b in self.queue.iter().take(4 - n) {
                    slices[n] = IoSlice::new(b);
                    n += 1;
                }
                let r = if n == 1 {
                    Pin::new(&mut conn.io).poll_write(cx, &slices[0])
                } else {
                    Pin::new(&mut conn.io).poll_write_vectored(cx, &slices[..n])
                };
                let mut wrote = match r {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into())));
                    }
                    Poll::Ready(Ok(w)) => w,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(WriteError::Io(e))),
                    Poll::Pending => return Poll::Pending,
                };
                self.written += wrote as u64;
                let head_left = conn.out.len() - self.head_pos;
                let from_head = wrote.min(head_left);
                self.head_pos += from_head;
                wrote -= from_head;
                while wrote > 0 {
                    let Some(front) = self.queue.front_mut() else { break };
                    if wrote >= front.len() {
                        wrote -= front.len();
                        self.queue.pop_front();
                    } else {
                        front.advance(wrote);
                        wrote = 0;
                    }
                }
                continue;
            }
            if self.body_done {
                return Pin::new(&mut conn.io).poll_flush(cx).map_err(WriteError::Io);
            }
            let Some(body) = self.body.as_mut() else {
                self.body_done = true;
                continue;
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    // Let what is written so far reach the upstream while the client is slow.
                    return match Pin::new(&mut conn.io).poll_flush(cx) {
                        Poll::Ready(Err(e)) => Poll::Ready(Err(WriteError::Io(e))),
                        _ => Poll::Pending,
                    };
                }
                Poll::Ready(f) => f,
            };
            self.polled_body = true;
            match frame {
                None => {
                    self.finish_body()?;
                }
                Some(Err(e)) => return Poll::Ready(Err(WriteError::Body(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        self.push_data(data)?;
                        if self.body.as_ref().is_some_and(|b| b.is_end_stream()) {
                            self.finish_body()?;
                        }
                    }
                    Err(frame) => {
                        if let (Ok(trailers), ReqFraming::Chunked) = (frame.into_trailers(), self.framing) {
                            let mut t = Vec::with_capacity(64);
                            t.extend_from_slice(b"0\r\n");
                            encode_fields(&mut t, &trailers);
                            t.extend_from_slice(b"\r\n");
                            self.queue.push_back(Bytes::from(t));
                            self.body = None;
                            self.body_done = true;
                        }
                    }
                },
            }
        }
    }

    fn push_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            ReqFraming::None => return Err(WriteError::Length),
            ReqFraming::Length(left) => {
                let n = data.len() as u64;
                if n > *left {
                    return Err(WriteError::Length);
                }
                *left -= n;
                self.queue.push_back(data);
            }
            ReqFraming::Chunked => {
                self.queue.push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                self.queue.push_back(data);
                self.queue.push_back(Bytes::from_static(b"\r\n"));
            }
        }
        Ok(())
    }

    fn finish_body(&mut self) -> Result<(), WriteError> {
        self.body = None;
        self.body_done = true;
        match self.framing {
            ReqFraming::Length(0) | ReqFraming::None => Ok(()),
            ReqFraming::Length(_) => Err(WriteError::Length),
            ReqFraming::Chunked => {
                self.queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                Ok(())
            }
        }
    }
}

fn encode_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        put_field(out, name, value);
    }
}

/// Encode the request head into `out`. The request's own framing fields are replaced by the
/// body's: the gateway decides how the body is framed upstream. `forwarding_block`, when
/// given, replaces the request's forwarding fields (see `ConnForwarding::untrusted_block`);
/// `traceparent`, when given, replaces the request's `traceparent` field (its line is written
/// straight from the ids).
fn encode_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    forwarding_block: Option<&[u8]>,
    traceparent: Option<&gw_core::trace::Traceparent>,
    host: &[u8],
    length: Option<u64>,
) -> ReqFraming {
    out.clear();
    let pq = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(pq.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    for (name, value) in &head.headers {
        if name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || (forwarding_block.is_some() && crate::forwarding::is_forwarding_field(name))
            || (traceparent.is_some() && *name == TRACEPARENT)
        {
            continue;
        }
        put_field(out, name, value);
    }
    if let Some(block) = forwarding_block {
        out.extend_from_slice(block);
    }
    if let Some(tp) = traceparent {
        tp.write_line(out);
    }
    let framing = match length {
        Some(0) => {
            // Methods whose requests usually carry a body announce an empty one.
            if head.headers.contains_key(header::CONTENT_LENGTH)
                || matches!(head.method, Method::POST | Method::PUT | Method::PATCH)
            {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            ReqFraming::None
        }
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            put_num(out, n, 10);
            out.extend_from_slice(b"\r\n");
            ReqFraming::Length(n)
        }
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            ReqFraming::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    framing
}

// === Where connections go back ===

/// Where an HTTP/1.1 connection goes back after a clean exchange (the pool's endpoint), and the
/// name of its upstream target in errors.
pub(crate) trait ConnHome: Send + Sync + 'static {
    /// `host:port` of the target.
    fn authority(&self) -> &str;
    /// Take the connection back (it may be dropped instead: a full pool, a probe's connection).
    fn release(&self, conn: Box<H1Conn>);
}

// === Exchange ===

/// What a failed exchange returns: the error, and the request body when none of it was used
/// (a retry can send it again).
pub(crate) type Failed<B> = (Error, Option<B>);

/// Send one request on `conn` and read the response head. The read timeout for the head starts
/// once the request is written completely (a slow upload is bounded by the write timeout).
///
/// Retry safety of failures: nothing written yet (the connection failed at the first write) is
/// [`Retry::Safe`] and hands the body back; anything after that is [`Retry::IfIdempotent`]: an
/// upstream may have acted on a request whose response never came.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn exchange<E: ConnHome, B: Outgoing>(
    mut conn: Box<H1Conn>,
    endpoint: &Arc<E>,
    head: &RequestHead,
    forwarding_block: Option<&[u8]>,
    traceparent: Option<&gw_core::trace::Traceparent>,
    host: &[u8],
    mut body: B,
    read: Duration,
) -> Result<(Head, H1Body), Failed<B>> {
    // A buffered body goes out with the head in one write; a copy (shared bytes) is kept to
    // hand back if nothing could be sent.
    let full = body.take_whole();
    let length = match &full {
        Some(b) => Some(b.len() as u64),
        None => body.size_hint().exact(),
    };
    let framing = encode_head(&mut conn.out, head, forwarding_block, traceparent, host, length);
    let (body, full) = match framing {
        ReqFraming::None => {
            drop(body);
            (None, None)
        }
        _ => (Some(body), full),
    };
    let mut w =
        Writer { head_pos: 0, body, framing, queue: VecDeque::new(), polled_body: false, written: 0, body_done: false };
    if let Some(b) = &full
        && w.push_data(b.clone()).is_ok()
    {
        w.body = None;
        w.body_done = true;
    }
    conn.read_size = MIN_READ;
    let mut write_done = false;
    let mut write_err: Option<WriteError> = None;
    let result = std::future::poll_fn(|cx| {
        if !write_done {
            match w.poll(&mut conn, cx) {
                Poll::Ready(r) => {
                    write_done = true;
                    if let Err(e) = r {
                        write_err = Some(e);
                    }
                    let deadline = tokio::time::Instant::from_std(gw_core::tick::now()) + read;
                    conn.read_timer.as_mut().reset(deadline);
                }
                Poll::Pending => {}
            }
        }
        if let Some(WriteError::Body(_) | WriteError::Length) = write_err {
            // The client's side failed: no point waiting for an answer.
            return Poll::Ready(Err(None));
        }
        loop {
            match parse_head(&mut conn.buf, &mut conn.ranges, &head.method) {
                Ok(Some(h)) => return Poll::Ready(Ok(h)),
                Ok(None) => {}
                Err(m) => return Poll::Ready(Err(Some(ReadError::Malformed(m)))),
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    let e = if conn.buf.is_empty() {
                        ReadError::ClosedBeforeResponse
                    } else {
                        ReadError::Malformed(Malformed("connection closed inside the response head"))
                    };
                    return Poll::Ready(Err(Some(e)));
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Some(ReadError::Io(e)))),
                Poll::Pending => break,
            }
        }
        if write_err.is_some() {
            // Writing failed and no answer is readable yet: do not wait for one.
            return Poll::Ready(Err(None));
        }
        if write_done && conn.read_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Some(ReadError::Timeout)));
        }
        Poll::Pending
    })
    .await;
    let authority = endpoint.authority();
    match result {
        Ok(h) => {
            // A write error after the upstream answered: it stopped reading (a 413 before the
            // whole upload, say). The answer stands; the connection is not reused.
            let writer: Option<Box<dyn Unsent>> = if write_done { None } else { Some(Box::new(w)) };
            let mut body = H1Body {
                conn: Some(conn),
                framing: h.framing,
                writer,
                reusable: h.keep_alive && write_err.is_none(),
                endpoint: endpoint.clone(),
            };
            if matches!(body.framing, Framing::Done) {
                body.end();
            }
            Ok((Head::parsed(h.parts, h.raw), body))
        }
        Err(read_err) => {
            // The upstream gave up on a client that has sent nothing for a while: the stall is
            // the client's, not a failure of the upstream.
            let stalled = match read_err {
                Some(ReadError::ClosedBeforeResponse | ReadError::Io(_)) if write_err.is_none() => {
                    w.body.as_ref().and_then(|b| b.stalled_for(gw_core::tick::now())).filter(|d| *d >= CLIENT_STALL)
                }
                _ => None,
            };
            let unsent = w.written == 0 && !w.polled_body;
            let returned = if unsent { w.body.take().or(full.map(B::whole)) } else { None };
            let retry = if unsent { Retry::Safe } else { Retry::IfIdempotent };
            if let Some(d) = stalled {
                let err = Error::new(
                    ErrorKind::RequestTimeout,
                    format!("{authority} closed the connection while the client's body had stalled for {d:?}"),
                );
                return Err((err, None));
            }
            let err = match (write_err, read_err) {
                (Some(WriteError::Body(e)), _) => client_body_failure(e),
                (Some(WriteError::Length), _) => {
                    Error::new(ErrorKind::DownstreamClosed, "the request body did not match its Content-Length")
                }
                (_, Some(ReadError::Timeout)) => {
                    Error::new(ErrorKind::UpstreamTimeout, format!("{authority} sent no response head within {read:?}"))
                }
                (Some(WriteError::Io(e)), _) => {
                    let kind = if e.kind() == io::ErrorKind::TimedOut {
                        ErrorKind::UpstreamWriteTimeout
                    } else {
                        ErrorKind::UpstreamProtocol
                    };
                    Error::new(kind, format!("writing the request to {authority}")).with_cause(e)
                }
                (None, Some(ReadError::Malformed(m))) => {
                    Error::new(ErrorKind::UpstreamProtocol, format!("request to {authority}")).with_cause(m)
                }
                (None, Some(ReadError::ClosedBeforeResponse)) => Error::new(
                    ErrorKind::UpstreamProtocol,
                    format!("{authority} closed the connection before responding"),
                ),
                (None, Some(ReadError::Io(e))) => {
                    Error::new(ErrorKind::UpstreamProtocol, format!("reading the response from {authority}"))
                        .with_cause(e)
                }
                (None, None) => Error::new(ErrorKind::UpstreamProtocol, format!("request to {authority}")),
            };
            Err((err.with_retry(retry), returned))
        }
    }
}

// === Upgrade ===

/// What the start of a buffer holds, for an upgrade request's answer.
enum Peek {
    /// More bytes are needed.
    More,
    /// A `101` head (removed from the buffer), every field kept.
    Switched(http::response::Parts),
    /// A final head of another status, left in the buffer for [`parse_head`].
    Final,
}

/// Read the answer to an upgrade request at the start of `buf`: interim `1xx` heads other
/// than `101` are skipped.
fn peek_switch(buf: &mut BytesMut) -> Result<Peek, Malformed> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut fields);
        let len = match resp.parse(&buf[..]) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Complete(_)) => return Err(Malformed("response head too large")),
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(Malformed("response head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(Peek::More),
            Err(httparse::Error::TooManyHeaders) => return Err(Malformed("too many header fields")),
            Err(_) => return Err(Malformed("malformed response head")),
        };
        match resp.code.unwrap_or(0) {
            101 => {
                if resp.version != Some(1) {
                    return Err(Malformed("101 Switching Protocols on HTTP/1.0"));
                }
                let mut headers = HeaderMap::with_capacity(resp.headers.len());
                for f in resp.headers.iter() {
                    let name =
                        HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| Malformed("invalid field name"))?;
                    let value = HeaderValue::from_bytes(f.value).map_err(|_| Malformed("invalid field value"))?;
                    headers.append(name, value);
                }
                if !headers.contains_key(header::UPGRADE) {
                    return Err(Malformed("101 Switching Protocols without Upgrade"));
                }
                let mut parts = http::Response::new(()).into_parts().0;
                parts.status = StatusCode::SWITCHING_PROTOCOLS;
                parts.version = Version::HTTP_11;
                parts.headers = headers;
                buf.advance(len);
                return Ok(Peek::Switched(parts));
            }
            100..=199 => buf.advance(len),
            _ => return Ok(Peek::Final),
        }
    }
}

/// The answer to an upgrade request (see [`upgrade`]).
pub(crate) enum UpgradeAnswer {
    /// `101 Switching Protocols`: its head (every field, `Upgrade` and `Connection` included)
    /// and the connection, now a tunnel; bytes the upstream sent after the head come first.
    Switched(http::response::Parts, Upgraded),
    /// Any other final status: an ordinary response, whose connection is not reused.
    Refused(Head, H1Body),
}

/// Send an upgrade request (no body; its `Connection` and `Upgrade` fields in `head`) on a
/// connection of its own, and read the answer within `read`.
pub(crate) async fn upgrade<E: ConnHome>(
    mut conn: Box<H1Conn>,
    endpoint: &Arc<E>,
    head: &RequestHead,
    host: &[u8],
    read: Duration,
) -> Result<UpgradeAnswer, Error> {
    use tokio::io::AsyncWriteExt;
    let authority = endpoint.authority();
    conn.poolable = false;
    encode_head(&mut conn.out, head, None, None, host, Some(0));
    let out = std::mem::take(&mut conn.out);
    let written = async {
        conn.io.write_all(&out).await?;
        conn.io.flush().await
    };
    written.await.map_err(|e| {
        let kind = if e.kind() == io::ErrorKind::TimedOut {
            ErrorKind::UpstreamWriteTimeout
        } else {
            ErrorKind::UpstreamProtocol
        };
        Error::new(kind, format!("writing the upgrade request to {authority}")).with_cause(e)
    })?;
    let malformed =
        |m: Malformed| Error::new(ErrorKind::UpstreamProtocol, format!("upgrade to {authority}")).with_cause(m);
    let answer = async {
        loop {
            match peek_switch(&mut conn.buf).map_err(malformed)? {
                Peek::Switched(parts) => {
                    let H1Conn { io, buf, .. } = *conn;
                    let pre = buf.freeze();
                    return Ok(UpgradeAnswer::Switched(parts, Upgraded { pre, io: Box::new(io) }));
                }
                Peek::Final => {
                    if let Some(h) = parse_head(&mut conn.buf, &mut conn.ranges, &head.method).map_err(malformed)? {
                        let mut body = H1Body {
                            conn: Some(conn),
                            framing: h.framing,
                            writer: None,
                            reusable: false,
                            endpoint: endpoint.clone(),
                        };
                        if matches!(body.framing, Framing::Done) {
                            body.end();
                        }
                        return Ok(UpgradeAnswer::Refused(Head::parsed(h.parts, h.raw), body));
                    }
                }
                Peek::More => {}
            }
            match std::future::poll_fn(|cx| conn.poll_fill(cx)).await {
                Ok(0) => {
                    return Err(Error::new(
                        ErrorKind::UpstreamProtocol,
                        format!("{authority} closed the connection before answering the upgrade"),
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::UpstreamProtocol,
                        format!("reading the upgrade answer of {authority}"),
                    )
                    .with_cause(e));
                }
            }
        }
    };
    match tokio::time::timeout(read, answer).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            ErrorKind::UpstreamTimeout,
            format!("{authority} did not answer the upgrade within {read:?}"),
        )),
    }
}

/// How long the client's body must have stalled for an upstream that closes the connection
/// meanwhile to be taken as giving up on the client (rather than failing).
const CLIENT_STALL: Duration = Duration::from_secs(1);

enum ReadError {
    Malformed(Malformed),
    ClosedBeforeResponse,
    Io(io::Error),
    Timeout,
}

// === Response body ===

/// The rest of a request still being written while its response is read (an upstream that
/// answers before the whole upload: full duplex). Type-erased so that the response body does
/// not depend on the request body's type.
trait Unsent: Send {
    fn poll_rest(&mut self, conn: &mut H1Conn, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>>;
}

impl<B: Outgoing> Unsent for Writer<B> {
    fn poll_rest(&mut self, conn: &mut H1Conn, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        self.poll(conn, cx)
    }
}

/// The body of an upstream HTTP/1.1 response, read from the connection it arrived on. It keeps
/// writing the request body if the upstream answered before reading all of it (full-duplex
/// upstreams), and returns the connection to its pool when the exchange ended cleanly.
pub(crate) struct H1Body {
    conn: Option<Box<H1Conn>>,
    framing: Framing,
    writer: Option<Box<dyn Unsent>>,
    reusable: bool,
    endpoint: Arc<dyn ConnHome>,
}

/// The response body broke off: the upstream closed early or framed it wrongly.
#[derive(Debug)]
pub(crate) struct BodyError(&'static str);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream response body: {}", self.0)
    }
}

impl std::error::Error for BodyError {}

impl H1Body {
    /// The body ended: hand the connection back if the exchange ended cleanly.
    fn end(&mut self) {
        self.framing = Framing::Done;
        let Some(conn) = self.conn.take() else { return };
        if self.reusable && self.writer.is_none() && conn.buf.is_empty() {
            self.endpoint.release(conn);
        }
    }

    fn fail(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        Poll::Ready(Some(Err(Box::new(BodyError(why)))))
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // Dropped before its end (client gone): the connection is closed with it.
        self.conn = None;
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
        if let Some(w) = this.writer.as_mut() {
            match w.poll_rest(conn, cx) {
                Poll::Ready(Ok(())) => this.writer = None,
                Poll::Ready(Err(WriteError::Body(e))) => {
                    // The client's body failed (malformed, stalled, too large, client gone):
                    // the upstream got part of a request, so the exchange ends here.
                    this.writer = None;
                    this.framing = Framing::Done;
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Err(_)) => {
                    // The upstream stopped reading the request: finish reading the response;
                    // the connection is not reused.
                    this.writer = None;
                    this.reusable = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match next_frame(&mut this.framing, &mut conn.buf) {
                Err(why) => return this.fail(why),
                Ok(Step::End) => {
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(Step::Frame(f)) => {
                    if matches!(this.framing, Framing::Done) {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(f)));
                }
                Ok(Step::More) => {}
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    if matches!(this.framing, Framing::Close) {
                        this.reusable = false;
                        this.end();
                        return Poll::Ready(None);
                    }
                    return this.fail("connection closed before the end of the body");
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => return this.fail("reading from the connection failed"),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
