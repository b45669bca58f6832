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
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use gw_core::RequestHead;
use gw_error::{Error, ErrorKind, Retry};

use crate::body::{BoxError, RequestBody};
use crate::io::{ReadTimer, StallIo, WriteTimeout};
use crate::wire::put_field;

/// Largest response head (status line and fields) accepted from an upstream.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head.
pub(crate) const MAX_FIELDS: usize = 100;
/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;
/// Most trailer fields accepted.
const MAX_TRAILER_FIELDS: usize = 32;
/// First read size of an exchange; doubles while reads fill it, up to [`MAX_READ`].
pub(crate) const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

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

/// Read more bytes from `io` into `buf` (`Ok(0)` at end of stream). The read size starts at
/// [`MIN_READ`] and doubles while reads fill it, up to [`MAX_READ`] (client and server side).
pub(crate) fn poll_fill<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    read_size: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < *read_size / 2 {
        buf.reserve(*read_size);
    }
    let spare = buf.capacity() - buf.len();
    let r = tokio_util::io::poll_read_buf(Pin::new(io), cx, buf);
    if let Poll::Ready(Ok(n)) = r
        && n == spare
        && *read_size < MAX_READ
    {
        *read_size *= 2;
    }
    r
}

/// Append `n` in decimal (`radix` 10) or hexadecimal (16), without an allocation.
pub(crate) fn put_num(out: &mut Vec<u8>, mut n: u64, radix: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&b[i..]);
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
struct Writer {
    /// Position in `conn.out` written so far.
    head_pos: usize,
    body: Option<RequestBody>,
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

impl Writer {
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
/// `traceparent`, when given, replaces the request's `traceparent` field.
fn encode_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    forwarding_block: Option<&[u8]>,
    traceparent: Option<&[u8]>,
    host: &[u8],
    body: &RequestBody,
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
            || (traceparent.is_some() && name.as_str() == "traceparent")
        {
            continue;
        }
        put_field(out, name, value);
    }
    if let Some(block) = forwarding_block {
        out.extend_from_slice(block);
    }
    if let Some(tp) = traceparent {
        out.extend_from_slice(b"traceparent: ");
        out.extend_from_slice(tp);
        out.extend_from_slice(b"\r\n");
    }
    let length = match body {
        RequestBody::Empty => Some(0),
        RequestBody::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
        RequestBody::Stream { .. } | RequestBody::Core(..) => body.size_hint().exact(),
    };
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

// === Response head ===

/// A malformed or unacceptable response from the upstream.
#[derive(Debug)]
pub(crate) struct Malformed(pub(crate) &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid response from upstream: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// How a body is delimited (a response's here, a request's in `h1server`).
pub(crate) enum Framing {
    /// Nothing more to read.
    Done,
    /// Bytes still to read.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
}

#[derive(Clone, Copy)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data: bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

pub(crate) struct ParsedHead {
    pub(crate) parts: http::response::Parts,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    /// The fields passed on, when not in `parts.headers`.
    pub(crate) raw: Option<RawFields>,
}

/// What a response field is to the proxy, from its name (any case).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    ContentLength,
    TransferEncoding,
    Connection,
    /// Hop-by-hop, dropped: `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`,
    /// `Proxy-Authorization`, `TE`, `Upgrade`.
    HopByHop,
    Date,
    Other,
}

fn field_kind(name: &[u8]) -> FieldKind {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        2 if is("te") => FieldKind::HopByHop,
        4 if is("date") => FieldKind::Date,
        7 if is("upgrade") => FieldKind::HopByHop,
        10 if is("connection") => FieldKind::Connection,
        10 if is("keep-alive") => FieldKind::HopByHop,
        14 if is("content-length") => FieldKind::ContentLength,
        16 if is("proxy-connection") => FieldKind::HopByHop,
        17 if is("transfer-encoding") => FieldKind::TransferEncoding,
        18 if is("proxy-authenticate") => FieldKind::HopByHop,
        19 if is("proxy-authorization") => FieldKind::HopByHop,
        _ => FieldKind::Other,
    }
}

/// An upstream response's header fields as bytes, one `name: value` line each as received,
/// CRLF-terminated (hop-by-hop fields and `Content-Length` left out), until something needs them
/// in a map.
///
/// On the plain proxy path nothing does: the HTTP/1.1 server writes these lines out as they
/// are, which spares a header map per response (names parsed and looked up, values validated a
/// second time, hashing, dropping), about 2,000 instructions for a response of five fields.
/// Plugins, HTTP/2 clients and header edits see the fields in the map
/// (`pipeline::full_headers`). The bytes were validated by the parser with the rules the map
/// applies (token names; values without control bytes other than tab).
pub(crate) struct RawFields {
    lines: Vec<u8>,
    /// `Content-Length`, folded (the server writes the framing itself).
    pub(crate) content_length: Option<u64>,
    /// The upstream sent a `Date` (among the lines).
    pub(crate) date: bool,
}

impl RawFields {
    #[cfg(test)]
    pub(crate) fn from_lines(lines: &[u8], content_length: Option<u64>, date: bool) -> RawFields {
        RawFields { lines: lines.to_vec(), content_length, date }
    }

    /// The lines, each ending in CRLF.
    pub(crate) fn lines(&self) -> &[u8] {
        &self.lines
    }

    /// `(name, value)` of each line (lines are found with `memchr`: this also runs on the plain
    /// path, for the request-id check).
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = &self.lines[..];
        std::iter::from_fn(move || {
            loop {
                let end = memchr::memchr(b'\n', rest)?;
                let line = &rest[..end];
                rest = &rest[end + 1..];
                // Every line is `name:value\r\n` (written by the parser); others are skipped.
                let Some(line) = line.strip_suffix(b"\r") else { continue };
                let Some(colon) = memchr::memchr(b':', line) else { continue };
                return Some((&line[..colon], line[colon + 1..].trim_ascii_start()));
            }
        })
    }

    /// Whether a field of this name is among the lines.
    pub(crate) fn contains(&self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        self.fields().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Put the fields into `map`, before the ones it already holds.
    pub(crate) fn merge_into(self, map: &mut HeaderMap) {
        let added = std::mem::replace(map, HeaderMap::with_capacity(map.len() + 8));
        for (n, v) in self.fields() {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                map.append(n, v);
            }
        }
        if let Some(l) = self.content_length {
            map.append(header::CONTENT_LENGTH, HeaderValue::from(l));
        }
        let mut last: Option<HeaderName> = None;
        for (k, v) in added {
            if k.is_some() {
                last = k;
            }
            if let Some(k) = &last {
                map.append(k.clone(), v);
            }
        }
    }
}

/// Record where each parsed field's name and value lie in `buf` (offsets, so that the values
/// can later be sliced from `buf` once it is frozen). Request and response parsers share it.
pub(crate) fn field_ranges(buf: &[u8], fields: &[httparse::Header<'_>], ranges: &mut Vec<[u32; 4]>) {
    let base = buf.as_ptr() as usize;
    ranges.clear();
    ranges.extend(fields.iter().map(|h| {
        [
            (h.name.as_ptr() as usize - base) as u32,
            h.name.len() as u32,
            (h.value.as_ptr() as usize - base) as u32,
            h.value.len() as u32,
        ]
    }));
}

/// Fold one `Content-Length` field value (a comma list) into `length`: every element must be
/// digits (at most 19) and agree with what was seen before.
pub(crate) fn fold_content_length(v: &[u8], length: &mut Option<u64>) -> Result<(), &'static str> {
    for v in v.split(|&b| b == b',') {
        let v = v.trim_ascii();
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err("invalid Content-Length");
        }
        let v: u64 = v.iter().fold(0, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != v) {
            return Err("conflicting Content-Length values");
        }
        *length = Some(v);
    }
    Ok(())
}

/// Parse a final response head from `buf` (interim `1xx` heads are consumed and skipped).
/// `Ok(None)`: more bytes needed. `ranges` is scratch space kept with the connection.
///
/// Hop-by-hop fields (RFC 9110 §7.6.1: `Connection` and the fields it names, `Keep-Alive`,
/// `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Transfer-Encoding`,
/// `Upgrade`) are read for framing and left out of the returned head.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    ranges: &mut Vec<[u32; 4]>,
    method: &Method,
) -> Result<Option<ParsedHead>, Malformed> {
    loop {
        let mut uninit = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut []);
        let status =
            httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, &buf[..], &mut uninit);
        let len = match status {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buf.len() >= MAX_HEAD {
                    return Err(Malformed("response head too large"));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Malformed("too many header fields")),
            Err(_) => return Err(Malformed("malformed response head")),
        };
        if len > MAX_HEAD {
            return Err(Malformed("response head too large"));
        }
        let code = resp.code.unwrap_or(0);
        let version = if resp.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(Malformed("unexpected 101 Switching Protocols"));
            }
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| Malformed("invalid status code"))?;
        // Where each field's name and value lie (the parsed slices borrow `buf`, which is split
        // off and frozen next so that values can share it).
        field_ranges(buf, resp.headers, ranges);

        let head = buf.split_to(len).freeze();
        // One pass: framing and connection management, read off the raw names, and the fields
        // passed on copied out as lines. If `Connection` names fields to drop (rare), the lines
        // are discarded and the map path below takes over.
        let (mut length, mut chunked) = (None::<u64>, false);
        let (mut close, mut keep_alive_token, mut date) = (false, false, false);
        let mut named: Vec<HeaderName> = Vec::new();
        let mut lines = Vec::with_capacity(len);
        for &[ns, nl, vs, vl] in ranges.iter() {
            let (ns, nl, vs, vl) = (ns as usize, nl as usize, vs as usize, vl as usize);
            let v = &head[vs..vs + vl];
            match field_kind(&head[ns..ns + nl]) {
                FieldKind::ContentLength => {
                    fold_content_length(v, &mut length).map_err(Malformed)?;
                    continue;
                }
                FieldKind::TransferEncoding => {
                    if chunked || !v.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                        return Err(Malformed("unsupported Transfer-Encoding"));
                    }
                    chunked = true;
                    continue;
                }
                FieldKind::Connection => {
                    for t in v.split(|&b| b == b',') {
                        let t = t.trim_ascii();
                        if t.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if t.eq_ignore_ascii_case(b"keep-alive") {
                            keep_alive_token = true;
                        } else if let Ok(n) = HeaderName::from_bytes(t) {
                            named.push(n);
                        }
                    }
                    continue;
                }
                FieldKind::HopByHop => continue,
                FieldKind::Date => date = true,
                FieldKind::Other => {}
            }
            // The field as received (`name:`, optional whitespace, the value) and its CRLF in
            // one copy when it ends in CRLF right after the value; else rebuilt.
            let end = vs + vl;
            if vs > ns + nl && head.get(end..end + 2) == Some(b"\r\n") {
                lines.extend_from_slice(&head[ns..end + 2]);
            } else {
                lines.extend_from_slice(&head[ns..ns + nl]);
                lines.extend_from_slice(b": ");
                lines.extend_from_slice(v);
                lines.extend_from_slice(b"\r\n");
            }
        }
        let mut headers = HeaderMap::new();
        let raw = if named.is_empty() {
            Some(RawFields { lines, content_length: length, date })
        } else {
            // Room for the fields the gateway adds (request id, plugin headers) without growing.
            headers.reserve(ranges.len() + 2);
            for &[ns, nl, vs, vl] in ranges.iter() {
                let name = &head[ns as usize..(ns + nl) as usize];
                if !matches!(field_kind(name), FieldKind::Other | FieldKind::Date | FieldKind::ContentLength) {
                    continue;
                }
                let name = HeaderName::from_bytes(name).map_err(|_| Malformed("invalid field name"))?;
                // Content-Length frames the body the client gets: never dropped.
                if name != header::CONTENT_LENGTH && named.contains(&name) {
                    continue;
                }
                let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..(vs + vl) as usize))
                    .map_err(|_| Malformed("invalid field value"))?;
                headers.append(name, value);
            }
            None
        };
        if chunked && (length.is_some() || version == Version::HTTP_10) {
            return Err(Malformed("Transfer-Encoding with Content-Length or on HTTP/1.0"));
        }
        let no_body = *method == Method::HEAD || code == 204 || code == 304;
        // A response without a body that announces one may be followed by that body anyway;
        // where it would end is unknown, so the connection is not used again.
        let stray = no_body && (chunked || length.is_some_and(|l| l > 0));
        let framing = if no_body {
            Framing::Done
        } else if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            match length {
                Some(0) => Framing::Done,
                Some(l) => Framing::Length(l),
                None => Framing::Close,
            }
        };
        let keep_alive = !close && !stray && (version == Version::HTTP_11 || keep_alive_token);
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some(ParsedHead { parts, framing, keep_alive, raw }));
    }
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

// === Upgraded connections ===

/// Any bidirectional byte stream.
pub(crate) trait UpgradeIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> UpgradeIo for T {}

/// A connection handed over after `101 Switching Protocols` (the client's, by the server; the
/// upstream's, by [`upgrade`]): the bytes read past the head first, then the socket.
pub(crate) struct Upgraded {
    pub(crate) pre: Bytes,
    pub(crate) io: Box<dyn UpgradeIo>,
}

impl AsyncRead for Upgraded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

// === Exchange ===

/// What a failed exchange returns: the error, and the request body when none of it was used
/// (a retry can send it again).
pub(crate) type Failed = (Error, Option<RequestBody>);

/// Send one request on `conn` and read the response head. The read timeout for the head starts
/// once the request is written completely (a slow upload is bounded by the write timeout).
///
/// Retry safety of failures: nothing written yet (the connection failed at the first write) is
/// [`Retry::Safe`] and hands the body back; anything after that is [`Retry::IfIdempotent`]: an
/// upstream may have acted on a request whose response never came.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn exchange<E: ConnHome>(
    mut conn: Box<H1Conn>,
    endpoint: &Arc<E>,
    head: &RequestHead,
    forwarding_block: Option<&[u8]>,
    traceparent: Option<&[u8]>,
    host: &[u8],
    body: RequestBody,
    read: Duration,
) -> Result<(http::response::Parts, H1Body), Failed> {
    let framing = encode_head(&mut conn.out, head, forwarding_block, traceparent, host, &body);
    let body = match framing {
        ReqFraming::None => {
            drop(body);
            None
        }
        _ => Some(body),
    };
    let mut w =
        Writer { head_pos: 0, body, framing, queue: VecDeque::new(), polled_body: false, written: 0, body_done: false };
    // A buffered body goes out with the head in one write; a copy (shared bytes) is kept to
    // hand back if nothing could be sent.
    let mut full: Option<Bytes> = None;
    if let Some(RequestBody::Full(b)) = &mut w.body
        && let Some(b) = b.take()
    {
        full = Some(b.clone());
        if w.push_data(b).is_ok() {
            w.body = None;
            w.body_done = true;
        }
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
            let writer = if write_done { None } else { Some(Box::new(w)) };
            let mut body = H1Body {
                raw: h.raw,
                conn: Some(conn),
                framing: h.framing,
                writer,
                reusable: h.keep_alive && write_err.is_none(),
                endpoint: endpoint.clone(),
            };
            if matches!(body.framing, Framing::Done) {
                body.end();
            }
            Ok((h.parts, body))
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
            let returned = if unsent { w.body.take().or(full.map(|b| RequestBody::Full(Some(b)))) } else { None };
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
    Refused(http::response::Parts, H1Body),
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
    encode_head(&mut conn.out, head, None, None, host, &RequestBody::Empty);
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
                            raw: h.raw,
                            conn: Some(conn),
                            framing: h.framing,
                            writer: None,
                            reusable: false,
                            endpoint: endpoint.clone(),
                        };
                        if matches!(body.framing, Framing::Done) {
                            body.end();
                        }
                        return Ok(UpgradeAnswer::Refused(h.parts, body));
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

/// The error for a client's request body that failed while it was sent (malformed, stalled,
/// over the route's limit, or the client gone): the client's failure, never the upstream's.
pub(crate) fn client_body_failure(e: BoxError) -> Error {
    let kind = crate::body::body_error_kind(&*e);
    Error::new(kind, "the client's request body failed").with_cause(e)
}

enum ReadError {
    Malformed(Malformed),
    ClosedBeforeResponse,
    Io(io::Error),
    Timeout,
}

// === Response body ===

/// The body of an upstream HTTP/1.1 response, read from the connection it arrived on. It keeps
/// writing the request body if the upstream answered before reading all of it (full-duplex
/// upstreams), and returns the connection to its pool when the exchange ended cleanly.
pub(crate) struct H1Body {
    /// The response's header fields when kept as bytes (see [`RawFields`]).
    pub(crate) raw: Option<RawFields>,
    conn: Option<Box<H1Conn>>,
    framing: Framing,
    writer: Option<Box<Writer>>,
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

pub(crate) enum Step {
    Frame(Frame<Bytes>),
    /// The body ended (no more frames).
    End,
    More,
}

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

    /// Take the next frame from what is buffered.
    pub(crate) fn step(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, &'static str> {
        loop {
            match framing {
                Framing::Done => return Ok(Step::End),
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    let data = buf.split_to(n).freeze();
                    if *left == 0 {
                        *framing = Framing::Done;
                    }
                    return Ok(Step::Frame(Frame::data(data)));
                }
                Framing::Close => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    return Ok(Step::Frame(Frame::data(buf.split().freeze())));
                }
                Framing::Chunked(c) => match *c {
                    Chunk::Size => {
                        let Some(nl) = memchr::memchr(b'\n', buf) else {
                            if buf.len() > MAX_CHUNK_LINE {
                                return Err("chunk-size line too long");
                            }
                            return Ok(Step::More);
                        };
                        if nl > MAX_CHUNK_LINE {
                            return Err("chunk-size line too long");
                        }
                        let size = parse_chunk_line(&buf[..nl])?;
                        buf.advance(nl + 1);
                        *c = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                    }
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(Step::More);
                        }
                        let n = left.min(buf.len() as u64) as usize;
                        let data = buf.split_to(n).freeze();
                        *c = if left == n as u64 { Chunk::DataEnd } else { Chunk::Data(left - n as u64) };
                        return Ok(Step::Frame(Frame::data(data)));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(Step::More);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err("chunk data not followed by CRLF");
                        }
                        buf.advance(2);
                        *c = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        if buf.starts_with(b"\r\n") {
                            buf.advance(2);
                            *framing = Framing::Done;
                            return Ok(Step::End);
                        }
                        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                        let (len, trailers) = match httparse::parse_headers(buf, &mut fields) {
                            Ok(httparse::Status::Complete((len, _))) if len > MAX_TRAILERS => {
                                return Err("trailer section too large");
                            }
                            // httparse also takes a bare LF as a line end; a body's framing is
                            // CRLF only (RFC 9112 §7.1), here as everywhere else in the decoder.
                            Ok(httparse::Status::Complete((len, _)))
                                if memchr::memchr_iter(b'\n', &buf[..len]).any(|i| i == 0 || buf[i - 1] != b'\r') =>
                            {
                                return Err("trailer section line not ended by CRLF");
                            }
                            Ok(httparse::Status::Complete((len, fields))) => {
                                let mut map = HeaderMap::with_capacity(fields.len());
                                for f in fields {
                                    let name = HeaderName::from_bytes(f.name.as_bytes())
                                        .map_err(|_| "invalid trailer field")?;
                                    let value =
                                        HeaderValue::from_bytes(f.value).map_err(|_| "invalid trailer field")?;
                                    map.append(name, value);
                                }
                                (len, map)
                            }
                            Ok(httparse::Status::Partial) => {
                                if buf.len() > MAX_TRAILERS {
                                    return Err("trailer section too large");
                                }
                                return Ok(Step::More);
                            }
                            Err(_) => return Err("malformed trailer section"),
                        };
                        buf.advance(len);
                        *framing = Framing::Done;
                        return Ok(Step::Frame(Frame::trailers(trailers)));
                    }
                },
            }
        }
    }
}

/// Parse a chunk-size line (without its LF): hex digits, optional extensions, CR.
fn parse_chunk_line(line: &[u8]) -> Result<u64, &'static str> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err("chunk-size line not ended by CRLF");
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err("invalid chunk size");
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = (size << 4) | u64::from(d);
    }
    check_chunk_ext(&line[digits..])?;
    Ok(size)
}

/// Check what follows the chunk size against the chunk-extension grammar of RFC 9112 §7.1.1:
/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`, where BWS is spaces and
/// tabs. Nothing else may follow the size (not even whitespace alone).
pub(crate) fn check_chunk_ext(mut s: &[u8]) -> Result<(), &'static str> {
    fn bws(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &s[n..]
    }
    fn token(s: &[u8]) -> Result<&[u8], &'static str> {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        if n == 0 {
            return Err("invalid chunk extension");
        }
        Ok(&s[n..])
    }
    fn quoted(s: &[u8]) -> Result<&[u8], &'static str> {
        // After the opening quote: qdtext or quoted-pair, up to the closing quote.
        let mut i = 0;
        while let Some(&b) = s.get(i) {
            match b {
                b'"' => return Ok(&s[i + 1..]),
                b'\\' => match s.get(i + 1) {
                    Some(&q) if q == b'\t' || (q >= 0x20 && q != 0x7f) => i += 2,
                    _ => return Err("invalid chunk extension"),
                },
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
                _ => return Err("invalid chunk extension"),
            }
        }
        Err("invalid chunk extension")
    }
    if s.is_empty() {
        return Ok(());
    }
    if !bws(s).starts_with(b";") {
        return Err("invalid chunk size");
    }
    while !s.is_empty() {
        s = bws(s);
        let Some(rest) = s.strip_prefix(b";") else { return Err("invalid chunk extension") };
        s = token(bws(rest))?;
        let after = bws(s);
        if let Some(v) = after.strip_prefix(b"=") {
            let v = bws(v);
            s = match v.strip_prefix(b"\"") {
                Some(q) => quoted(q)?,
                None => token(v)?,
            };
        }
    }
    Ok(())
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
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
            match w.poll(conn, cx) {
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
            match Self::step(&mut this.framing, &mut conn.buf) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The head's parts with the fields kept as bytes moved into the map.
    fn full(h: ParsedHead) -> http::response::Parts {
        let mut parts = h.parts;
        if let Some(raw) = h.raw {
            raw.merge_into(&mut parts.headers);
        }
        parts
    }

    fn head(buf: &[u8], method: &Method) -> Result<Option<ParsedHead>, Malformed> {
        parse_head(&mut BytesMut::from(buf), &mut Vec::new(), method)
    }

    #[test]
    fn framing_rules() {
        let ok = |b: &[u8]| head(b, &Method::GET).map(|h| h.map(|h| (h.framing, h.keep_alive)));
        assert!(matches!(ok(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"), Ok(Some((Framing::Length(5), true)))));
        assert!(matches!(ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"), Ok(Some((Framing::Length(5), true)))));
        assert!(ok(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n").is_err());
        assert!(ok(b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n").is_err());
        assert!(ok(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(ok(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n").is_err());
        assert!(ok(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(matches!(
            ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(Some((Framing::Chunked(_), true)))
        ));
        assert!(matches!(ok(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(Some((Framing::Close, true)))));
        assert!(matches!(ok(b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"), Ok(Some((Framing::Done, _)))));
        assert!(matches!(
            ok(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n"),
            Ok(Some((_, false)))
        ));
        assert!(matches!(ok(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"), Ok(Some((_, false)))));
        assert!(matches!(
            ok(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n"),
            Ok(Some((_, true)))
        ));
        assert!(ok(b"HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n").is_err());
        assert!(ok(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
        assert!(matches!(ok(b"HTTP/1.1 200 OK\r\ncontent-le"), Ok(None)));
        // HEAD: no body whatever the length says.
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", &Method::HEAD).map(|h| h.map(|h| h.framing)),
            Ok(Some(Framing::Done))
        ));
    }

    /// Hop-by-hop fields are left out whether the fields stay bytes or go to the map (when
    /// `Connection` names more fields to drop); Content-Length is folded and kept.
    #[test]
    fn hop_by_hop_fields_are_dropped_on_both_paths() {
        let raw = head(
            b"HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 3, 3\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nX-Empty:\r\nX-Sp: \t v \t\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\n\r\n",
            &Method::GET,
        );
        let Ok(Some(h)) = raw else { panic!("head expected") };
        let r = h.raw.as_ref().map(|r| (r.lines().to_vec(), r.content_length, r.date));
        assert_eq!(
            r,
            Some((
                b"Server: up\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nX-Empty:\r\nX-Sp: v\r\n".to_vec(),
                Some(3),
                true
            ))
        );
        assert!(h.raw.as_ref().is_some_and(|r| r.contains(&header::SERVER) && !r.contains(&header::CONNECTION)));
        let mut parts = full(h);
        let names: Vec<_> = parts.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, ["server", "date", "x-empty", "x-sp", "content-length"]);
        assert_eq!(parts.headers["x-sp"], "v");
        assert_eq!(parts.headers[header::CONTENT_LENGTH], "3");
        assert_eq!(parts.headers["x-empty"], "");
        // Fields already in the map stay, after the upstream's.
        let mut raw = head(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n", &Method::GET).ok().flatten().and_then(|h| h.raw);
        parts.headers = HeaderMap::new();
        parts.headers.append("x-b", HeaderValue::from_static("2"));
        parts.headers.append("x-b", HeaderValue::from_static("3"));
        if let Some(r) = raw.take() {
            r.merge_into(&mut parts.headers);
        }
        let all: Vec<_> = parts.headers.iter().map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?"))).collect();
        assert_eq!(all, ["x-a=1", "x-b=2", "x-b=3"]);

        let named = head(
            b"HTTP/1.1 200 OK\r\nConnection: x-secret, close\r\nX-Secret: s\r\nX-Kept: k\r\nContent-Length: 0\r\nKeep-Alive: 1\r\n\r\n",
            &Method::GET,
        );
        let Ok(Some(h)) = named else { panic!("head expected") };
        assert!(h.raw.is_none(), "Connection naming a field takes the map path");
        assert!(!h.keep_alive);
        let names: Vec<_> = h.parts.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, ["x-kept", "content-length"]);
    }

    #[test]
    fn interim_responses_are_skipped_and_values_are_kept() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\ncontent-length: 2\r\n\r\nhi"[..],
        );
        let h = parse_head(&mut buf, &mut Vec::new(), &Method::POST).ok().flatten().map(full);
        let Some(parts) = h else { panic!("no head") };
        assert_eq!(parts.status, 201);
        let a: Vec<_> = parts.headers.get_all("x-a").iter().map(|v| v.as_bytes().to_vec()).collect();
        assert_eq!(a, vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(&buf[..], b"hi");
    }

    #[test]
    fn head_limits() {
        let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert!(head(&big, &Method::GET).is_err(), "an unfinished head past the limit");
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            many.extend(format!("x-{i}: v\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert!(head(&many, &Method::GET).is_err());
    }

    #[test]
    fn chunked_decoding() {
        let wire = b"4;ext=\"v\"\r\nRust\r\n0\r\ngrpc-status: 0\r\n\r\n";
        let (data, trailers) = decode_in_pieces(wire, &mut || usize::MAX).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(data, b"Rust");
        assert_eq!(trailers.and_then(|t| t.get("grpc-status").cloned()), Some(HeaderValue::from_static("0")));

        for bad in [
            &b"4\nRust\r\n"[..],
            b"4\r\nRustX\r\n",
            b"x\r\n",
            b"11111111111111111\r\n",
            b"4 x\r\n",
            b"4;a\0\r\n",
            // Bare LF in the trailer section or as its end.
            b"0\r\nx: y\n\r\n",
            b"0\r\n\n",
            b"0\r\nx: y\r\n\n",
        ] {
            let mut framing = Framing::Chunked(Chunk::Size);
            let mut buf = BytesMut::from(bad);
            let mut failed = false;
            for _ in 0..4 {
                match H1Body::step(&mut framing, &mut buf) {
                    Err(_) => {
                        failed = true;
                        break;
                    }
                    Ok(Step::More | Step::End) => break,
                    Ok(Step::Frame(_)) => {}
                }
            }
            assert!(failed, "{:?} accepted", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_chunk_line(b"fF \t; a=b\r"), Ok(255));
    }

    /// Chunk extensions follow the RFC 9112 grammar; anything else after the size is refused.
    #[test]
    fn chunk_extension_grammar() {
        for ok in [
            &b""[..],
            b";a",
            b";a=b",
            b" ;a",
            b"\t; a = b",
            b";a=\"\"",
            b";a=\"x y\\\"z\"",
            b";a=\"\x80\xff\"",
            b";a;b=c;d=\"e\"",
            b";!#$%&'*+-.^_`|~09azAZ=!#$%&'*+-.^_`|~",
        ] {
            assert_eq!(check_chunk_ext(ok), Ok(()), "{:?} refused", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b" "[..],
            b"\t",
            b"x",
            b";",
            b"; ",
            b";a ",
            b";a=",
            b";a=\"",
            b";a=\"b",
            b";a=\"b\\",
            b";a=\"\x01\"",
            b";a=\"\x7f\"",
            b";a=b c",
            b";a=b;",
            b";a==b",
            b";a=b\"",
            b";a\x00",
            b";\"a\"",
            b";a=(b)",
            b";a=b,c",
            b";a=\"b\" ",
            b";a;;b",
        ] {
            assert!(check_chunk_ext(bad).is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
        for (line, want) in [(&b"5 \r"[..], None), (b"5\t\r", None), (b"5;a=\"\r", None), (b"1;a=\"b\"\r", Some(1))] {
            assert_eq!(parse_chunk_line(line).ok(), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    /// Decode `wire` fed in pieces of the given sizes: the data, the trailers, and whether the
    /// body ended exactly at the end of the input.
    fn decode_in_pieces(wire: &[u8], sizes: &mut dyn FnMut() -> usize) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match H1Body::step(&mut framing, &mut buf) {
                Ok(Step::Frame(f)) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Ok(Step::End) => break,
                Ok(Step::More) => {
                    if fed == wire.len() {
                        return Err("wants more at the end of the input".into());
                    }
                    let n = sizes().clamp(1, wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
                Err(e) => return Err(e.into()),
            }
            if matches!(framing, Framing::Done) {
                break;
            }
        }
        if fed != wire.len() || !buf.is_empty() {
            return Err("bytes left over".into());
        }
        Ok((data, trailers))
    }

    /// Random chunked bodies (sizes, extensions, trailers) decode to the same bytes however the
    /// wire is split into reads, down to one byte at a time.
    #[test]
    fn chunked_decoding_is_independent_of_read_boundaries() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..300 {
            let mut wire = Vec::new();
            let mut expect = Vec::new();
            for _ in 0..rng.usize(0..6) {
                let len = rng.usize(1..3000);
                let chunk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                let hex = if rng.bool() { format!("{len:x}") } else { format!("{len:X}") };
                wire.extend(hex.bytes());
                if rng.bool() {
                    wire.extend(b";ext=\"a b\"; other");
                }
                wire.extend(b"\r\n");
                wire.extend(&chunk);
                wire.extend(b"\r\n");
                expect.extend(chunk);
            }
            wire.extend(b"0\r\n");
            let with_trailer = rng.bool();
            if with_trailer {
                wire.extend(b"x-sum: 42\r\n");
            }
            wire.extend(b"\r\n");
            let mut one = || 1usize;
            let mut random = || rng.usize(1..64);
            for sizes in [&mut one as &mut dyn FnMut() -> usize, &mut random] {
                let (data, trailers) = decode_in_pieces(&wire, sizes).unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert_eq!(data, expect, "round {round}");
                assert_eq!(trailers.is_some(), with_trailer, "round {round}");
            }
        }
    }

    /// Arbitrary bytes as a response head or a chunked body: an answer or an error, never a
    /// panic, and never more fields than the limit.
    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet = b"HTP/1.0 2345\r\n:;chunkedtransfer-encodingcontent-length\t \x00\x7f\xff";
        for _ in 0..20_000 {
            let len = rng.usize(0..200);
            let mut bytes: Vec<u8> = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            if rng.bool() {
                let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
                h.append(&mut bytes);
                bytes = h;
            }
            if let Ok(Some(h)) = parse_head(&mut BytesMut::from(&bytes[..]), &mut Vec::new(), &Method::GET) {
                assert!(full(h).headers.len() <= MAX_FIELDS);
            }
            let mut framing = Framing::Chunked(Chunk::Size);
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..400 {
                match H1Body::step(&mut framing, &mut buf) {
                    Ok(Step::Frame(_)) => {}
                    _ => break,
                }
            }
        }
    }
}
