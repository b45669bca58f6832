//! The gateway's own downstream HTTP/1.1 server (HTTP/2 downstream still runs on hyper).
//!
//! hyper's server spends about as many instructions per request as the rest of the gateway's
//! plain proxy path: a dispatcher state machine, a body channel even for requests without a
//! body, and a response encoder that re-derives what the gateway already knows. Here one async
//! function per connection reads a head, parses it with `httparse` (field values share the read
//! buffer), calls the pipeline, and encodes the response head and body into one write buffer:
//! a small proxied response leaves in one `write`. Body frames of [`QUEUE_MIN`] bytes or more
//! are not copied: they are queued beside the buffer, in order with it, and leave with it in
//! one vectored write (a large cached response: head and body in one `writev`).
//!
//! Request framing is strict; anything a front proxy and an upstream could read two ways is
//! refused before it reaches the pipeline, and the connection is closed after the refusal:
//! * The head is at most `max_head` bytes (431; 414 when even the request line does not fit)
//!   and has at most `max_fields` fields (431). Malformed lines, obsolete line folding, a space
//!   before the colon, control bytes in values: 400 (`httparse` and `http` validate).
//! * `Transfer-Encoding` must be exactly `chunked` (other codings: 400), never on HTTP/1.0 and
//!   never with `Content-Length` (400, whatever the order). `Content-Length` values must be
//!   digits and agree with each other (400). A request with neither has no body.
//! * A chunked body is decoded by the same strict decoder as upstream responses (`wire::framing::next_frame`):
//!   CRLF line ends, at most 16 hex digits, extensions per RFC 9112, bounded trailers. A body
//!   that breaks its framing fails the request (the pipeline answers 400 when no response has
//!   started) and ends the connection: nothing after it is read as a request.
//!
//! Requests without a body cost no channel: the body type is empty. A request body is read by
//! the connection when the pipeline's body asks for data (a `Mutex`-guarded hand-off slot that
//! works across tasks, as an HTTP/2 upstream polls the body from its own task), so memory stays
//! bounded by one read. `Expect: 100-continue` is answered when the body is first asked for.
//!
//! The response is framed by the server: `Content-Length` from the response's own field or the
//! body's exact size, otherwise chunked (HTTP/1.1) or until close (HTTP/1.0). Trailers are sent
//! only in chunked responses to clients that asked for them (`TE: trailers`). No body is sent
//! for `HEAD`, `1xx`, `204` and `304`. A `Date` field is added when missing.
//!
//! Keep-alive follows the request (`Connection: close`, HTTP/1.0 without `keep-alive`) and the
//! response (`Connection: close`). A request body the pipeline did not read is skipped when it
//! is already buffered (and its `100 Continue`, if asked for, went out); otherwise the
//! connection closes after the response (with a short lingering read so the client sees the
//! response rather than a reset). Pipelined requests are served in order. While a request
//! without a body is served, the connection keeps reading: a client that closes cancels its
//! request (as hyper and nginx do).
//!
//! A response whose body fails before any byte of it was written (an upstream that closed right
//! after its head) is replaced by the error response the body's log phase builds (502).
//!
//! `101 Switching Protocols` to an upgrade request hands the socket, with any bytes already
//! read, to the upgrade's [`OnUpgrade`]. An upgrade request with a body, or for `h2c` alone, is
//! served as an ordinary request (its `Upgrade` ignored).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::conn::ConnState;
use crate::fault::{BodyFault, BoxError, ClientBodyError};
use crate::head::{Fields, Response};
use crate::io::{MIN_READ, Upgraded, poll_fill};
use crate::wire::HeadFacts;
use crate::wire::framing::{Framing, Step, next_frame, put_num};
use crate::wire::request::{Head, Refused, Settings, parse_request};

/// A response body the server can send: any HTTP body of bytes, plus the error response to
/// send instead when the body fails before its first byte (the data plane's
/// `body::ResponseBody`; the server does not depend on it). The response's fields come with
/// its head ([`crate::head::Fields`]), never with the body.
pub(crate) trait Outgoing: Body<Data = Bytes, Error = BoxError> + Send + Unpin + Sized {
    /// When the body failed before its first frame: the response to send instead.
    fn error_response(&mut self) -> Option<Response<Self>>;
}

/// Response bytes buffered before they are written out.
const HIGH_WATER: usize = 64 * 1024;
/// Body frames at least this large are queued as they are instead of copied into the write
/// buffer (smaller ones are cheaper to copy than to write as one more slice).
const QUEUE_MIN: usize = 8 * 1024;
/// Slices given to one vectored write at most.
const MAX_IOV: usize = 16;
/// Buffers larger than this are released between requests.
const KEEP: usize = 64 * 1024;
/// A response body to `HEAD` is discarded up to this many bytes, then dropped.
const MAX_DISCARD: usize = 64 * 1024;
/// After closing with an unread request body, how long and how much to keep reading.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

// === Request body ===

/// The hand-off slot between the connection (which reads) and the request body (which asks).
#[derive(Default)]
struct Chan(Mutex<Slot>);

#[derive(Default)]
struct Slot {
    /// The body is waiting for a frame.
    want: bool,
    frame: Option<Frame<Bytes>>,
    /// No frame after `frame`.
    end: bool,
    failed: Option<ClientBodyError>,
    /// The body was dropped: nobody reads any more.
    body_gone: bool,
    body_waker: Option<Waker>,
    conn_waker: Option<Waker>,
}

impl Chan {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding the lock leaves the slot consistent (plain fields).
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn set_waker(slot: &mut Option<Waker>, w: &Waker) {
    match slot {
        Some(old) if old.will_wake(w) => {}
        _ => *slot = Some(w.clone()),
    }
}

/// The body of a request received by this server.
pub(crate) struct ReqBody {
    chan: Arc<Chan>,
    /// Bytes still to come of a `Content-Length` body.
    remaining: Option<u64>,
    done: bool,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut slot = this.chan.lock();
        if let Some(f) = slot.frame.take() {
            if let (Some(d), Some(r)) = (f.data_ref(), this.remaining.as_mut()) {
                *r = r.saturating_sub(d.len() as u64);
            }
            this.done = slot.end;
            return Poll::Ready(Some(Ok(f)));
        }
        if let Some(e) = slot.failed {
            this.done = true;
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        if slot.end {
            this.done = true;
            return Poll::Ready(None);
        }
        slot.want = true;
        set_waker(&mut slot.body_waker, cx.waker());
        if let Some(w) = &slot.conn_waker
            && !w.will_wake(cx.waker())
        {
            w.wake_by_ref();
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for ReqBody {
    fn drop(&mut self) {
        let mut slot = self.chan.lock();
        slot.body_gone = true;
        if let Some(w) = slot.conn_waker.take() {
            w.wake();
        }
    }
}

/// The connection's side of a request body.
struct BodyReader {
    chan: Arc<Chan>,
    framing: Framing,
    /// `100 Continue` is still to be sent when the body is first asked for.
    expect_continue: bool,
    /// The response went out without the `100 Continue` the client waited for: whether the
    /// client sends the body after all is unknown.
    continue_unsent: bool,
    /// The body was read to its end (or failed): nothing more of it to read.
    finished: bool,
    /// The body failed (malformed framing, the client closed or the socket failed): where the
    /// next request would start is unknown, so none is read from this connection.
    broken: bool,
    /// The client closed its side (or the socket failed): nothing to linger for.
    eof: bool,
}

impl BodyReader {
    fn fail(&mut self, slot: &mut Slot, fault: BodyFault, why: &'static str) {
        slot.failed = Some(ClientBodyError { fault, why });
        self.finished = true;
        self.broken = true;
        self.eof = fault == BodyFault::Closed;
    }
}

// === Upgrades ===

/// Resolves to the client's connection once the server has sent `101 Switching Protocols`.
/// (Request extensions must be `Clone`: the receiver sits in a shared slot; the first
/// [`OnUpgrade::wait`] takes it.)
#[derive(Clone)]
pub(crate) struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub(crate) async fn wait(self) -> Result<Upgraded, BoxError> {
        let rx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        match rx {
            Some(rx) => rx.await.map_err(|_| "the connection was not upgraded".into()),
            None => Err("the upgrade was already taken".into()),
        }
    }
}

// === Response head ===

/// How the response body is framed on the wire.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    /// No body (HEAD, 1xx, 204, 304, 101).
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 client, unknown length).
    Close,
}

thread_local! {
    /// The `Date` value of the current second.
    static DATE: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((0, [0; 29])) };
}

fn put_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                d.1.copy_from_slice(s.as_bytes());
                d.0 = secs;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&d.1);
        out.extend_from_slice(b"\r\n");
    });
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    put_num(out, n, 10);
}

fn has_token(v: &HeaderValue, token: &[u8]) -> bool {
    v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// What the response head needs to know about the request.
struct ReqInfo {
    head: bool,
    version: Version,
}

/// Encode a response head into `out` and choose the body's framing; may clear `keep_alive`.
fn encode_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    fields: &Fields,
    exact: Option<u64>,
    req: &ReqInfo,
    keep_alive: &mut bool,
) -> Out {
    let code = status.as_u16();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodiless_status = (100..200).contains(&code) || code == 204;
    let (mut declared, mut close, mut date) = (None::<u64>, false, false);
    let (raw, map) = fields.wire();
    if let Some(raw) = raw {
        // Upstream fields kept as bytes (hop-by-hop ones already left out) come first, as
        // they would from the map.
        let (upstream, added) = raw.lines();
        out.extend_from_slice(upstream);
        date = raw.date;
        // As from the map: the upstream's length is passed on (also for HEAD and 304).
        if !bodiless_status && let Some(n) = raw.content_length {
            declared = Some(n);
            out.extend_from_slice(b"content-length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        // Then the fields the gateway set (they would follow the upstream's in the map too).
        out.extend_from_slice(added);
    }
    for (name, value) in map {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            if bodiless_status || declared.is_some() {
                continue;
            }
            match value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
                Some(n) => declared = Some(n),
                None => continue,
            }
        } else if name == header::CONNECTION {
            close |= has_token(value, b"close");
        } else if name == header::DATE {
            date = true;
        }
        crate::wire::put_field(out, name, value);
    }
    if !date {
        put_date(out);
    }
    if close {
        *keep_alive = false;
    }
    let framing = if code == 101 {
        Out::None
    } else if bodiless_status || code == 304 || req.head {
        if req.head
            && !bodiless_status
            && code != 304
            && declared.is_none()
            && let Some(n) = exact.filter(|&n| n > 0)
        {
            out.extend_from_slice(b"content-length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Out::None
    } else if let Some(n) = declared {
        Out::Length(n)
    } else if let Some(n) = exact {
        out.extend_from_slice(b"content-length: ");
        put_u64(out, n);
        out.extend_from_slice(b"\r\n");
        Out::Length(n)
    } else if req.version == Version::HTTP_11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Out::Chunked
    } else {
        *keep_alive = false;
        Out::Close
    };
    if code != 101 {
        if !*keep_alive && !close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if *keep_alive && req.version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// The short JSON answer to a refused head.
fn encode_refusal(out: &mut Vec<u8>, r: &Refused) {
    let code = match r.status {
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::HTTP_VERSION_NOT_SUPPORTED => "http_version_not_supported",
        _ => "bad_request",
    };
    let body = serde_json::json!({ "error": code, "message": r.why }).to_string();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(r.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    put_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\nconnection: close\r\n");
    put_date(out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

// === Connection ===

/// One client connection, as a future that ends when the connection does.
pub(crate) struct Connection {
    fut: Pin<Box<dyn Future<Output = io::Result<()>> + Send>>,
    state: Arc<ConnState>,
}

impl Connection {
    /// Serve `io` with `svc`, which gets each request with its body as a `Q` (made from the
    /// server's [`ReqBody`], `None` for a request without a body) and answers with a `B`.
    pub(crate) fn new<I, S, F, Q, B>(io: I, state: Arc<ConnState>, settings: Settings, svc: S) -> Self
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: FnMut(Request<Q>, HeadFacts) -> F + Send + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        Q: From<Option<ReqBody>> + Send + 'static,
        B: Outgoing + 'static,
    {
        Connection { fut: Box::pin(run(io, state.clone(), settings, svc)), state }
    }

    /// Finish the request in progress, then close (at once when idle).
    pub(crate) fn graceful_shutdown(self: Pin<&mut Self>) {
        self.state.begin_close();
    }
}

impl Future for Connection {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.fut.as_mut().poll(cx)
    }
}

struct Conn<I> {
    io: I,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    wpos: usize,
    /// Large body frames written without copying, in order with `wbuf` (see [`Queued`]).
    queued: VecDeque<Queued>,
    /// Bytes of the first queued frame already written.
    qpos: usize,
    /// Bytes of the queued frames not written yet.
    qlen: usize,
    /// Bytes written to the connection so far.
    flushed: u64,
    ranges: Vec<[u32; 4]>,
    /// Bytes of `rbuf` known not to hold the end of a head.
    scanned: usize,
    read_size: usize,
    settings: Settings,
}

/// A body frame queued after `wbuf[..at]`: the bytes to write are `wbuf[wpos..q0.at]`,
/// `q0.data[qpos..]`, `wbuf[q0.at..q1.at]`, `q1.data`, ..., `wbuf[qn.at..]`.
struct Queued {
    at: usize,
    data: Bytes,
}

/// The slices of what is still to be written, in order, as many as fit in `iov` (empty
/// slices left out); returns how many were set.
fn out_slices<'a>(
    wbuf: &'a [u8],
    wpos: usize,
    queued: &'a VecDeque<Queued>,
    qpos: usize,
    iov: &mut [io::IoSlice<'a>],
) -> usize {
    let mut k = 0;
    let mut from = wpos;
    let mut skip = qpos;
    for q in queued {
        if k + 2 > iov.len() {
            return k;
        }
        if q.at > from {
            iov[k] = io::IoSlice::new(&wbuf[from..q.at]);
            k += 1;
        }
        iov[k] = io::IoSlice::new(&q.data[skip..]);
        k += 1;
        skip = 0;
        from = q.at;
    }
    if k < iov.len() && wbuf.len() > from {
        iov[k] = io::IoSlice::new(&wbuf[from..]);
        k += 1;
    }
    k
}

/// Why the connection stopped reading heads.
enum HeadError {
    Refused(Refused),
    Io(io::Error),
}

/// The client closed or failed while its request was being served.
struct ClientGone;

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<I> {
    /// Read more bytes into `rbuf`: `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.io, &mut self.rbuf, &mut self.read_size, cx)
    }

    /// Write out what `wbuf` and the queued frames hold.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_out() > 0 {
            let n = if self.queued.is_empty() {
                std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]))?
            } else {
                let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
                let k = out_slices(&self.wbuf, self.wpos, &self.queued, self.qpos, &mut iov);
                std::task::ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &iov[..k]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance_out(n);
            self.flushed += n as u64;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }

    /// Count `n` more bytes as written, in the order of [`out_slices`].
    fn advance_out(&mut self, mut n: usize) {
        while n > 0 {
            let end = self.queued.front().map_or(self.wbuf.len(), |q| q.at);
            let k = n.min(end - self.wpos);
            self.wpos += k;
            n -= k;
            let Some(q) = self.queued.front() else { break };
            if n == 0 {
                break;
            }
            let k = n.min(q.data.len() - self.qpos);
            self.qpos += k;
            self.qlen -= k;
            n -= k;
            if self.qpos == q.data.len() {
                self.queued.pop_front();
                self.qpos = 0;
            }
        }
    }

    fn pending_out(&self) -> usize {
        self.wbuf.len() - self.wpos + self.qlen
    }

    /// Append body bytes to what is to be written: copied when small, else queued.
    fn put_data(&mut self, data: Bytes) {
        if data.len() < QUEUE_MIN {
            self.wbuf.extend_from_slice(&data);
        } else {
            self.qlen += data.len();
            self.queued.push_back(Queued { at: self.wbuf.len(), data });
        }
    }

    /// Drop what was put after `wbuf[..at]` (nothing of it written yet).
    fn truncate_out(&mut self, at: usize) {
        while self.queued.back().is_some_and(|q| q.at > at) {
            if let Some(q) = self.queued.pop_back() {
                self.qlen -= q.data.len();
            }
        }
        self.wbuf.truncate(at);
    }

    /// Whether the unparsed bytes could hold a complete head: a line end followed by an empty
    /// line (`\n\r\n` or `\n\n`) in what arrived since the last look.
    fn may_hold_head(&self) -> bool {
        let from = self.scanned.saturating_sub(2);
        let b = &self.rbuf[from..];
        memchr::memchr_iter(b'\n', b).any(|i| match b.get(i + 1) {
            Some(b'\n') => true,
            Some(b'\r') => b.get(i + 2).is_none_or(|&c| c == b'\n'),
            Some(_) => false,
            None => true,
        })
    }

    fn poll_head(&mut self, cx: &mut Context<'_>, state: &ConnState) -> Poll<Result<Option<Head>, HeadError>> {
        loop {
            if !self.rbuf.is_empty() && (self.rbuf.len() > self.settings.max_head || self.may_hold_head()) {
                match parse_request(&mut self.rbuf, &mut self.ranges, self.settings) {
                    Ok(Some(h)) => {
                        self.scanned = 0;
                        return Poll::Ready(Ok(Some(h)));
                    }
                    Ok(None) => {}
                    Err(r) => return Poll::Ready(Err(HeadError::Refused(r))),
                }
            }
            self.scanned = self.rbuf.len();
            if self.rbuf.is_empty() && state.is_closing() {
                return Poll::Ready(Ok(None));
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(HeadError::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Feed the request body if it asked for data. Returns whether the body got something.
    fn pump(&mut self, cx: &mut Context<'_>, reader: &mut Option<BodyReader>) -> bool {
        let Some(r) = reader.as_mut() else { return false };
        if r.finished {
            return false;
        }
        let chan = r.chan.clone();
        let mut slot = chan.lock();
        set_waker(&mut slot.conn_waker, cx.waker());
        if slot.body_gone || !slot.want || slot.frame.is_some() {
            return false;
        }
        if r.expect_continue {
            r.expect_continue = false;
            if self.pending_out() == 0 {
                self.wbuf.clear();
                self.wpos = 0;
            }
            self.wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let delivered = loop {
            match next_frame(&mut r.framing, &mut self.rbuf) {
                Err(why) => {
                    r.fail(&mut slot, BodyFault::Malformed, why);
                    break true;
                }
                Ok(Step::Frame(f)) => {
                    slot.frame = Some(f);
                    if matches!(r.framing, Framing::Done) {
                        slot.end = true;
                        r.finished = true;
                    }
                    break true;
                }
                Ok(Step::End) => {
                    slot.end = true;
                    r.finished = true;
                    break true;
                }
                Ok(Step::More) => {}
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    r.fail(&mut slot, BodyFault::Closed, "the client closed the connection before the end of the body");
                    break true;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => {
                    r.fail(&mut slot, BodyFault::Closed, "reading the request body failed");
                    break true;
                }
                Poll::Pending => break false,
            }
        };
        if delivered {
            slot.want = false;
            if let Some(w) = slot.body_waker.take()
                && !w.will_wake(cx.waker())
            {
                w.wake();
            }
        }
        delivered
    }

    /// While a request is served and its body is fully read: read ahead (pipelined requests)
    /// and notice a client that closed. Bounded by the head limit. Not after a body that
    /// failed: nothing more is read from such a connection (and its client gets the `400`).
    fn poll_watch(&mut self, cx: &mut Context<'_>, reader: &Option<BodyReader>) -> Result<(), ClientGone> {
        if reader.as_ref().is_some_and(|r| !r.finished || r.broken) {
            return Ok(());
        }
        while self.rbuf.len() <= self.settings.max_head {
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(ClientGone),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Whether the request body is known to have ended exactly where its framing says, so that
    /// the next bytes start a new request: it was read to its end, or what is buffered of it
    /// (when nobody reads it) reaches its end. Never after a failed body (malformed, client
    /// gone), nor when the client waited for a `100 Continue` it never got (it may or may not
    /// send the body).
    fn body_done(&mut self, r: &mut BodyReader) -> bool {
        if r.broken {
            return false;
        }
        if r.finished {
            return true;
        }
        if r.continue_unsent {
            return false;
        }
        loop {
            match next_frame(&mut r.framing, &mut self.rbuf) {
                Ok(Step::Frame(_)) => {}
                Ok(Step::End) => {
                    r.finished = true;
                    return true;
                }
                Ok(Step::More) => return false,
                Err(_) => {
                    r.finished = true;
                    r.broken = true;
                    return false;
                }
            }
        }
    }

    fn trim(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP {
            self.rbuf = BytesMut::new();
            self.read_size = MIN_READ;
        }
        if self.wbuf.capacity() > KEEP {
            self.wbuf = Vec::new();
        }
    }
}

/// State of a response body being written.
struct Sending {
    framing: Out,
    trailers_ok: bool,
    done: bool,
    /// Bytes of a body to `HEAD` thrown away so far.
    discarded: usize,
}

/// The response body failed or did not match its declared length.
struct BodyFailed;

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<I> {
    fn encode_frame(&mut self, s: &mut Sending, frame: Frame<Bytes>) -> Result<(), BodyFailed> {
        match frame.into_data() {
            Ok(data) => match &mut s.framing {
                Out::None => {
                    s.discarded += data.len();
                    if s.discarded > MAX_DISCARD {
                        // Whatever this body is, the client gets none of it.
                        s.done = true;
                    }
                }
                Out::Length(left) => {
                    if data.len() as u64 > *left {
                        return Err(BodyFailed);
                    }
                    *left -= data.len() as u64;
                    self.put_data(data);
                }
                Out::Chunked => {
                    if !data.is_empty() {
                        put_num(&mut self.wbuf, data.len() as u64, 16);
                        self.wbuf.extend_from_slice(b"\r\n");
                        self.put_data(data);
                        self.wbuf.extend_from_slice(b"\r\n");
                    }
                }
                Out::Close => self.put_data(data),
            },
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers()
                    && s.framing == Out::Chunked
                    && s.trailers_ok
                {
                    self.wbuf.extend_from_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        crate::wire::put_field(&mut self.wbuf, name, value);
                    }
                    self.wbuf.extend_from_slice(b"\r\n");
                    s.framing = Out::None;
                    s.done = true;
                }
            }
        }
        Ok(())
    }

    fn end_body(&mut self, s: &mut Sending) -> Result<(), BodyFailed> {
        s.done = true;
        match s.framing {
            Out::Chunked => self.wbuf.extend_from_slice(b"0\r\n\r\n"),
            Out::Length(left) if left > 0 => return Err(BodyFailed),
            _ => {}
        }
        Ok(())
    }

    /// Write the response body, feeding the request body meanwhile (full duplex).
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut impl Outgoing,
        s: &mut Sending,
        reader: &mut Option<BodyReader>,
    ) -> Poll<Result<(), BodyFailed>> {
        loop {
            let mut progressed = false;
            if !s.done && self.pending_out() < HIGH_WATER {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        self.encode_frame(s, frame)?;
                        progressed = true;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(error = %e, "response body failed; closing the connection");
                        return Poll::Ready(Err(BodyFailed));
                    }
                    Poll::Ready(None) => {
                        self.end_body(s)?;
                        progressed = true;
                    }
                    Poll::Pending => {}
                }
            }
            if self.pending_out() > 0 && (s.done || !progressed || self.pending_out() >= HIGH_WATER) {
                match self.poll_write_out(cx) {
                    Poll::Ready(Ok(())) => progressed = true,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(BodyFailed)),
                    Poll::Pending => {}
                }
            }
            progressed |= self.pump(cx, reader);
            if s.done && self.pending_out() == 0 {
                return match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                    Poll::Ready(Err(_)) => Poll::Ready(Err(BodyFailed)),
                    Poll::Pending => Poll::Pending,
                };
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }
}

async fn close<I: AsyncRead + AsyncWrite + Unpin>(c: &mut Conn<I>, linger: bool) {
    let _ = poll_fn(|cx| Pin::new(&mut c.io).poll_shutdown(cx)).await;
    if linger {
        // The client may still be sending the body nobody read: read (and drop) a little of it
        // so that closing does not reset the connection before the client reads the response.
        let _ = tokio::time::timeout(LINGER_TIME, async {
            let mut total = 0;
            while total < LINGER_BYTES {
                c.rbuf.clear();
                match poll_fn(|cx| c.poll_fill(cx)).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
    }
}

async fn run<I, S, F, Q, B>(io: I, state: Arc<ConnState>, settings: Settings, mut svc: S) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: FnMut(Request<Q>, HeadFacts) -> F,
    F: Future<Output = Response<B>>,
    Q: From<Option<ReqBody>>,
    B: Outgoing,
{
    let mut c = Conn {
        io,
        rbuf: BytesMut::new(),
        wbuf: Vec::new(),
        wpos: 0,
        queued: VecDeque::new(),
        qpos: 0,
        qlen: 0,
        flushed: 0,
        ranges: Vec::new(),
        scanned: 0,
        read_size: MIN_READ,
        settings,
    };
    loop {
        // === request head ===
        let head = match poll_fn(|cx| c.poll_head(cx, &state)).await {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(HeadError::Io(e)) => return Err(e),
            Err(HeadError::Refused(r)) => {
                tracing::debug!(status = r.status.as_u16(), why = r.why, "request refused");
                c.wbuf.clear();
                c.wpos = 0;
                encode_refusal(&mut c.wbuf, &r);
                poll_fn(|cx| c.poll_write_out(cx)).await?;
                close(&mut c, true).await;
                return Ok(());
            }
        };
        let Head { parts, framing, mut keep_alive, expect_continue, upgrade, trailers, facts } = head;
        let info = ReqInfo { head: parts.method == Method::HEAD, version: parts.version };
        let mut reader = None;
        let body = if matches!(framing, Framing::Done) {
            Q::from(None)
        } else {
            let chan = Arc::new(Chan::default());
            let remaining = if let Framing::Length(n) = framing { Some(n) } else { None };
            reader = Some(BodyReader {
                chan: chan.clone(),
                framing,
                expect_continue,
                continue_unsent: false,
                finished: false,
                broken: false,
                eof: false,
            });
            Q::from(Some(ReqBody { chan, remaining, done: false }))
        };
        let mut req = Request::from_parts(parts, body);
        let mut upgrade_tx = None;
        if upgrade {
            let (tx, rx) = oneshot::channel();
            req.extensions_mut().insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
            upgrade_tx = Some(tx);
        }

        // === service ===
        let resp = {
            let mut fut = std::pin::pin!(svc(req, facts));
            poll_fn(|cx| {
                loop {
                    if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                        return Poll::Ready(Ok(r));
                    }
                    let fed = c.pump(cx, &mut reader);
                    // An interim `100 Continue` to write.
                    if c.pending_out() > 0 && matches!(c.poll_write_out(cx), Poll::Ready(Err(_))) {
                        return Poll::Ready(Err(ClientGone));
                    }
                    if let Err(e) = c.poll_watch(cx, &reader) {
                        return Poll::Ready(Err(e));
                    }
                    if !fed {
                        return Poll::Pending;
                    }
                }
            })
            .await
        };
        let Ok(resp) = resp else {
            // Dropping the pipeline's future cancels the request (and its upstream exchange).
            tracing::debug!("client closed the connection during the request");
            return Ok(());
        };

        // === response ===
        let (mut parts, mut body) = resp.into_parts();
        if c.pending_out() == 0 {
            c.wbuf.clear();
            c.wpos = 0;
        }
        let mut exact = body.size_hint().exact();
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(tx) = upgrade_tx.take() {
                encode_response_head(&mut c.wbuf, parts.status, &parts.fields, exact, &info, &mut keep_alive);
                drop(parts);
                // The (empty) body is read to its end: the log phase records a complete response.
                while let Some(Ok(_)) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {}
                drop(body);
                poll_fn(|cx| c.poll_write_out(cx)).await?;
                poll_fn(|cx| Pin::new(&mut c.io).poll_flush(cx)).await?;
                let pre = c.rbuf.split().freeze();
                let _ = tx.send(Upgraded { pre, io: Box::new(c.io) });
                return Ok(());
            }
            // A 101 nobody asked for cannot be framed: close after it.
            keep_alive = false;
        }
        drop(upgrade_tx);
        // A request body that failed, or that nobody will read (the pipeline dropped it) and
        // whose end is not buffered: this response is the connection's last, and says so.
        let mut linger = false;
        if let Some(r) = reader.as_mut() {
            // From here on the connection carries the response: no interim response any more.
            if r.expect_continue {
                r.expect_continue = false;
                r.continue_unsent = true;
            }
            if (r.broken || r.chan.lock().body_gone) && !c.body_done(r) {
                keep_alive = false;
                linger = !r.eof;
            }
        }
        if state.is_closing() {
            // Shutting down: this response is the connection's last, and says so.
            keep_alive = false;
        }
        // Where this response starts on the wire (bytes written before it, and its offset in
        // the write buffer): nothing of it is written yet while `c.flushed` has not passed it.
        let (head_at, head_offset) = (c.wbuf.len(), c.flushed + c.pending_out() as u64);
        let mut sent = Err(BodyFailed);
        for attempt in 0..2 {
            let framing = encode_response_head(&mut c.wbuf, parts.status, &parts.fields, exact, &info, &mut keep_alive);
            // The body is polled even when none of it is sent (HEAD, 204, 304): reading it to
            // its end is what tells the log phase the response was complete.
            let mut sending = Sending { framing, trailers_ok: trailers, done: false, discarded: 0 };
            sent = poll_fn(|cx| c.poll_send(cx, &mut body, &mut sending, &mut reader)).await;
            if sent.is_ok() || attempt == 1 || c.flushed > head_offset {
                break;
            }
            // The body failed before any of the response reached the client (an upstream that
            // closed right after its head): an error response instead (502, or the client's
            // own fault), as nginx does when its upstream fails before the head is sent.
            let Some(r) = body.error_response() else { break };
            c.truncate_out(head_at);
            (parts, body) = r.into_parts();
            exact = body.size_hint().exact();
            if reader.as_ref().is_some_and(|r| r.broken) {
                keep_alive = false;
            }
        }
        drop(parts);
        drop(body);
        if sent.is_err() {
            close(&mut c, false).await;
            return Ok(());
        }

        // === next request? ===
        if let Some(mut r) = reader.take()
            && !c.body_done(&mut r)
        {
            keep_alive = false;
            linger = !r.eof;
        }
        if !keep_alive || state.is_closing() {
            // Bytes the client sent that will not be read (pipelined requests, a body): linger
            // so that closing does not reset the connection under the response.
            linger |= !c.rbuf.is_empty();
            close(&mut c, linger).await;
            return Ok(());
        }
        c.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::response::RawFields;
    use http::HeaderName;

    /// Upstream fields kept as bytes are written as they are, before the map's; their
    /// Content-Length frames the body (and is passed on for HEAD, dropped for 204); their Date
    /// stands.
    #[test]
    fn response_head_with_raw_fields() {
        let enc = |status: u16, cl: Option<u64>, date: bool, head: bool| {
            let raw = RawFields::from_lines(
                if date { b"Server: up\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n" } else { b"Server: up\r\n" },
                cl,
                date,
            );
            let mut fields = Fields::parsed(Some(raw), http::HeaderMap::new());
            fields.insert(HeaderName::from_static("x-request-id"), HeaderValue::from_static("r1"));
            let mut out = Vec::new();
            let mut ka = true;
            let f = encode_response_head(
                &mut out,
                StatusCode::from_u16(status).unwrap(),
                &fields,
                cl,
                &ReqInfo { head, version: Version::HTTP_11 },
                &mut ka,
            );
            (f, String::from_utf8(out).unwrap(), ka)
        };
        let (f, s, ka) = enc(200, Some(5), true, false);
        assert_eq!(f, Out::Length(5));
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\nServer: up\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\ncontent-length: 5\r\nx-request-id: r1\r\n\r\n"
        );
        assert!(ka);
        let (f, s, _) = enc(200, Some(7), false, true);
        assert_eq!(f, Out::None);
        assert_eq!(s.matches("content-length: 7\r\n").count(), 1, "{s}");
        assert_eq!(s.matches("date: ").count(), 1, "a Date is added when the upstream sent none: {s}");
        let (f, s, _) = enc(204, Some(5), true, false);
        assert_eq!(f, Out::None);
        assert!(!s.contains("content-length"), "{s}");
        let (f, s, _) = enc(200, None, true, false);
        assert_eq!(f, Out::Chunked);
        assert!(s.contains("Server: up\r\n") && s.ends_with("transfer-encoding: chunked\r\n\r\n"), "{s}");
    }

    // === Writing: queued (uncopied) frames and partial writes ===

    /// A client connection in memory: it sends `input` then closes its side; it takes at most
    /// `max` bytes per write (vectored or not), and with `stall` every other write is
    /// `Pending` first (woken at once).
    struct Trickle {
        input: Vec<u8>,
        rpos: usize,
        out: Arc<Mutex<Vec<u8>>>,
        max: usize,
        stall: bool,
        flip: bool,
        vectored: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Trickle {
        fn take(&mut self, cx: &mut Context<'_>) -> Option<usize> {
            if self.stall {
                self.flip = !self.flip;
                if self.flip {
                    cx.waker().wake_by_ref();
                    return None;
                }
            }
            Some(self.max)
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = buf.remaining().min(self.input.len() - self.rpos);
            let from = self.rpos;
            buf.put_slice(&self.input[from..from + n]);
            self.rpos += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let Some(max) = self.take(cx) else { return Poll::Pending };
            let n = max.min(buf.len());
            self.out.lock().unwrap().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let Some(mut left) = self.take(cx) else { return Poll::Pending };
            self.vectored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut out = self.out.lock().unwrap();
            let mut n = 0;
            for b in bufs {
                let k = left.min(b.len());
                out.extend_from_slice(&b[..k]);
                n += k;
                left -= k;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A response body of given frames (an `Err` fails it), with its error response.
    struct Frames {
        frames: std::collections::VecDeque<Result<Frame<Bytes>, BoxError>>,
        exact: Option<u64>,
        error: Option<Box<Response<Frames>>>,
    }

    impl Frames {
        fn new(frames: Vec<Result<Frame<Bytes>, BoxError>>, exact: Option<u64>) -> Self {
            Frames { frames: frames.into(), exact, error: None }
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.frames.pop_front())
        }

        fn size_hint(&self) -> SizeHint {
            self.exact.map_or_else(SizeHint::default, SizeHint::with_exact)
        }
    }

    impl Outgoing for Frames {
        fn error_response(&mut self) -> Option<Response<Self>> {
            self.error.take().map(|r| *r)
        }
    }

    /// Bytes that differ from one position to the next (a reordering shows).
    fn data(len: usize, seed: u8) -> Bytes {
        (0..len).map(|i| seed.wrapping_add((i % 251) as u8)).collect::<Vec<u8>>().into()
    }

    /// Serve `request` with one response (`make` builds it) through a [`Trickle`]; returns
    /// what the client received, without the `date` line, and the vectored writes made.
    fn serve(
        request: &str,
        max: usize,
        stall: bool,
        make: impl Fn() -> Response<Frames> + Send + 'static,
    ) -> (Vec<u8>, usize) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let vectored = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let io = Trickle {
            input: request.as_bytes().to_vec(),
            rpos: 0,
            out: out.clone(),
            max,
            stall,
            flip: false,
            vectored: vectored.clone(),
        };
        let svc = move |_req: Request<Option<ReqBody>>, _facts| std::future::ready(make());
        let conn = Connection::new(io, ConnState::new(), Settings { max_head: 8192, max_fields: 64 }, svc);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(conn).unwrap();
        let got = out.lock().unwrap().clone();
        let at = got.windows(6).position(|w| w == b"date: ").expect("a date line");
        let end = at + got[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut without = got[..at].to_vec();
        without.extend_from_slice(&got[end..]);
        (without, vectored.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn response(status: u16, fields: &[(&'static str, &str)], body: Frames) -> Response<Frames> {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in fields {
            r.fields_mut().append(HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
        }
        r
    }

    const GET: &str = "GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";

    /// Large frames (queued, not copied) and small ones (copied) leave in order, whatever the
    /// writes take at a time: a byte, a few, across the head, the frames and the framing.
    #[test]
    fn large_frames_with_partial_writes_content_length() {
        let parts = [data(20_000, 1), data(100, 2), data(70_000, 3), data(QUEUE_MIN, 4), data(QUEUE_MIN - 1, 5)];
        let total: usize = parts.iter().map(Bytes::len).sum();
        let mut want = format!("HTTP/1.1 200 OK\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n").into_bytes();
        for p in &parts {
            want.extend_from_slice(p);
        }
        for (max, stall) in [(1, false), (7, true), (1000, false), (8192, true), (20_050, false), (usize::MAX, true)] {
            let frames = parts.clone();
            let (got, vectored) = serve(GET, max, stall, move || {
                let f = frames.iter().map(|b| Ok(Frame::data(b.clone()))).collect();
                response(200, &[("content-length", &total.to_string())], Frames::new(f, Some(total as u64)))
            });
            assert!(got == want, "max {max}: {} bytes received, {} expected", got.len(), want.len());
            assert!(vectored > 0, "max {max}: the queued frames went out in vectored writes");
        }
    }

    /// Chunked framing around queued frames (size line, data, CRLF), then trailers; and a body
    /// until close (HTTP/1.0).
    #[test]
    fn large_frames_with_partial_writes_chunked_and_close() {
        let parts = [data(9_000, 1), data(10, 2), data(30_000, 3), data(65_536, 4)];
        let mut want = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
        for p in &parts {
            want.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
            want.extend_from_slice(p);
            want.extend_from_slice(b"\r\n");
        }
        want.extend_from_slice(b"0\r\nx-t: 1\r\n\r\n");
        let req = "GET / HTTP/1.1\r\nhost: a\r\nte: trailers\r\nconnection: close\r\n\r\n";
        for (max, stall) in [(1, true), (5, false), (4096, true), (9_001, false), (usize::MAX, false)] {
            let frames = parts.clone();
            let (got, _) = serve(req, max, stall, move || {
                let mut f: Vec<_> = frames.iter().map(|b| Ok(Frame::data(b.clone()))).collect();
                let mut t = http::HeaderMap::new();
                t.insert("x-t", HeaderValue::from_static("1"));
                f.push(Ok(Frame::trailers(t)));
                response(200, &[], Frames::new(f, None))
            });
            assert!(got == want, "chunked, max {max}: got {:?}", String::from_utf8_lossy(&got[..got.len().min(200)]));
        }
        let mut want = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
        for p in &parts {
            want.extend_from_slice(p);
        }
        for max in [3, 10_000] {
            let frames = parts.clone();
            let (got, _) = serve("GET / HTTP/1.0\r\n\r\n", max, true, move || {
                let f = frames.iter().map(|b| Ok(Frame::data(b.clone()))).collect();
                response(200, &[], Frames::new(f, None))
            });
            assert!(got == want, "until close, max {max}: {} bytes received, {} expected", got.len(), want.len());
        }
    }

    /// A body that fails before any of the response was written, after a large frame was
    /// queued: the error response replaces the whole response (the queued frame too).
    #[test]
    fn error_response_drops_queued_frames() {
        let (got, _) = serve(GET, usize::MAX, false, || {
            let f = vec![Ok(Frame::data(data(20_000, 1))), Err("upstream closed".into())];
            let mut b = Frames::new(f, Some(40_000));
            b.error = Some(Box::new(response(
                502,
                &[("content-length", "3")],
                Frames::new(vec![Ok(Frame::data(Bytes::from_static(b"bad")))], Some(3)),
            )));
            response(200, &[("content-length", "40000")], b)
        });
        assert_eq!(
            String::from_utf8_lossy(&got),
            "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbad"
        );
    }

    /// The response head: framing chosen from the field, the exact size, or the version.
    #[test]
    fn response_framing() {
        let enc = |status: u16, fields: &[(&str, &'static str)], exact: Option<u64>, head: bool, v: Version| {
            let mut map = Fields::default();
            for (k, val) in fields {
                map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_static(val));
            }
            let mut out = Vec::new();
            let mut ka = true;
            let status = StatusCode::from_u16(status).unwrap();
            let f = encode_response_head(&mut out, status, &map, exact, &ReqInfo { head, version: v }, &mut ka);
            (f, String::from_utf8(out).unwrap(), ka)
        };
        let (f, s, ka) = enc(200, &[("content-length", "5")], Some(5), false, Version::HTTP_11);
        assert_eq!(f, Out::Length(5));
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n") && s.contains("date: ") && ka, "{s}");
        let (f, s, _) = enc(200, &[], Some(3), false, Version::HTTP_11);
        assert_eq!(f, Out::Length(3));
        assert!(s.contains("content-length: 3\r\n"), "{s}");
        let (f, s, _) = enc(200, &[("transfer-encoding", "chunked")], None, false, Version::HTTP_11);
        assert_eq!(f, Out::Chunked);
        assert_eq!(s.matches("transfer-encoding").count(), 1, "{s}");
        let (f, s, ka) = enc(200, &[], None, false, Version::HTTP_10);
        assert_eq!(f, Out::Close);
        assert!(!ka && s.contains("connection: close"), "{s}");
        let (f, s, _) = enc(204, &[("content-length", "5")], None, false, Version::HTTP_11);
        assert_eq!(f, Out::None);
        assert!(!s.contains("content-length"), "{s}");
        let (f, s, _) = enc(200, &[("content-length", "5")], Some(0), true, Version::HTTP_11);
        assert_eq!(f, Out::None);
        assert!(s.contains("content-length: 5"), "{s}");
        let (_, _, ka) = enc(400, &[("connection", "close")], Some(0), false, Version::HTTP_11);
        assert!(!ka);
    }
}
