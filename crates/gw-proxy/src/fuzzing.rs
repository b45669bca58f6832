//! Entry points for the fuzz targets (`fuzz/`, `crates/gw-fuzz`); built only with the
//! `fuzzing` feature and not part of the crate's API.
//!
//! Thin wrappers around the pure wire module (`crate::wire`: the request and response head
//! parsers, the chunked decoder) and the HTTP/1.1 server connection (`crate::h1server`, with
//! bodies of its own: nothing of the data plane's body types), with the crate's private types
//! turned into plain public ones. No logic of their own: what a target checks lives in
//! `gw-fuzz`.

use std::future::Future;
use std::io;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::conn::ConnState;
use crate::fault::BoxError;
use crate::h1server;
use crate::wire::framing::{self, Chunk, Framing};
use crate::wire::{request, response};

/// Largest response head accepted from an upstream (`wire::response::MAX_HEAD`).
pub const MAX_RESPONSE_HEAD: usize = response::MAX_HEAD;
/// Most fields accepted in a response head (`wire::response::MAX_FIELDS`).
pub const MAX_RESPONSE_FIELDS: usize = response::MAX_FIELDS;

/// How a parsed head frames its body (`wire::framing::Framing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

fn framing(f: &Framing) -> BodyFraming {
    match f {
        Framing::Done => BodyFraming::None,
        Framing::Length(n) => BodyFraming::Length(*n),
        Framing::Chunked(_) => BodyFraming::Chunked,
        Framing::Close => BodyFraming::UntilClose,
    }
}

// === Request head (`wire::request::parse_request`) ===

/// A request head accepted by `wire::request::parse_request`.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub upgrade: bool,
    pub trailers: bool,
    /// `HeadFacts`: `Host` fields, `Content-Length` fields, the agreed length, whether
    /// `Transfer-Encoding` was present.
    pub hosts: usize,
    pub content_lengths: usize,
    pub content_length: Option<u64>,
    pub transfer_encoding: bool,
}

/// A request head refused by `wire::request::parse_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub why: &'static str,
}

/// `wire::request::parse_request` with the given limits: the head is removed from `buf`.
pub fn parse_request(buf: &mut BytesMut, max_head: usize, max_fields: usize) -> Result<Option<RequestHead>, Refused> {
    let s = request::Settings { max_head, max_fields };
    match request::parse_request(buf, &mut Vec::new(), s) {
        Ok(None) => Ok(None),
        Ok(Some(h)) => Ok(Some(RequestHead {
            method: h.parts.method,
            uri: h.parts.uri,
            version: h.parts.version,
            headers: h.parts.headers,
            framing: framing(&h.framing),
            keep_alive: h.keep_alive,
            expect_continue: h.expect_continue,
            upgrade: h.upgrade,
            trailers: h.trailers,
            hosts: h.facts.hosts,
            content_lengths: h.facts.content_lengths,
            content_length: h.facts.content_length,
            transfer_encoding: h.facts.transfer_encoding,
        })),
        Err(r) => Err(Refused { status: r.status, why: r.why }),
    }
}

// === Response head (`wire::response::parse_head`) ===

/// A response head accepted by `wire::response::parse_head`.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    /// The fields passed on, as every reader sees them (the raw lines merged into the map).
    pub headers: HeaderMap,
    /// The raw lines written out on the plain proxy path, when the head kept them.
    pub raw_lines: Option<Vec<u8>>,
    pub framing: BodyFraming,
    pub keep_alive: bool,
}

/// `wire::response::parse_head` for a request made with `method`: interim heads are skipped, the final
/// head is removed from `buf`.
pub fn parse_response_head(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, &'static str> {
    match response::parse_head(buf, &mut Vec::new(), method) {
        Ok(None) => Ok(None),
        Ok(Some(h)) => {
            let mut headers = h.parts.headers;
            let raw_lines = h.raw.map(|r| {
                let lines = r.lines().0.to_vec();
                r.merge_into(&mut headers);
                lines
            });
            Ok(Some(ResponseHead {
                status: h.parts.status,
                version: h.parts.version,
                headers,
                raw_lines,
                framing: framing(&h.framing),
                keep_alive: h.keep_alive,
            }))
        }
        Err(m) => Err(m.0),
    }
}

// === Chunked decoder (`wire::framing::next_frame`) ===

/// One result of [`ChunkedDecoder::step`].
#[derive(Debug)]
pub enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended (no trailers frame).
    End,
    /// More bytes are needed.
    More,
}

/// The chunked body decoder shared by requests and responses (`wire::framing::next_frame` on
/// a `Framing::Chunked`).
pub struct ChunkedDecoder(Framing);

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder(Framing::Chunked(Chunk::Size))
    }
}

impl ChunkedDecoder {
    /// Take the next frame from `buf` (what is consumed is removed from it).
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, &'static str> {
        Ok(match framing::next_frame(&mut self.0, buf)? {
            framing::Step::Frame(f) => match f.into_data() {
                Ok(d) => Step::Data(d),
                Err(f) => match f.into_trailers() {
                    Ok(t) => Step::Trailers(t),
                    Err(_) => Step::More,
                },
            },
            framing::Step::End => Step::End,
            framing::Step::More => Step::More,
        })
    }

    /// Whether the body has ended (nothing more belongs to it).
    pub fn is_done(&self) -> bool {
        matches!(self.0, Framing::Done)
    }
}

// === HTTP/1.1 server connection (`h1server::Connection`) ===

/// A request body as the HTTP/1.1 server delivers it (`h1server::ReqBody`; none for a
/// request without a body).
pub struct RequestBody(Option<h1server::ReqBody>);

impl From<Option<h1server::ReqBody>> for RequestBody {
    fn from(b: Option<h1server::ReqBody>) -> Self {
        RequestBody(b)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0.as_ref().map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// A whole response body (what [`serve_h1`]'s service answers with).
struct Whole(Option<Bytes>);

impl Body for Whole {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        std::task::Poll::Ready(self.0.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

impl h1server::Outgoing for Whole {
    fn error_response(&mut self) -> Option<crate::head::Response<Self>> {
        None
    }
}

/// The upgrade of a request whose head asked for one (`h1server::OnUpgrade`): answering it
/// with `101 Switching Protocols` hands over the connection.
pub struct Upgrade(h1server::OnUpgrade);

/// Any bidirectional byte stream (an upgraded connection).
pub trait Tunnel: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Tunnel for T {}

/// Take the upgrade out of a request served by [`serve_h1`], if its head asked for one.
pub fn take_upgrade<B>(req: &mut Request<B>) -> Option<Upgrade> {
    req.extensions_mut().remove::<h1server::OnUpgrade>().map(Upgrade)
}

impl Upgrade {
    /// The client's connection once the `101` went out: the bytes read past the head first.
    pub async fn wait(self) -> Result<Box<dyn Tunnel>, BoxError> {
        Ok(Box::new(self.0.wait().await?))
    }
}

/// Serve one client connection on `io` with the gateway's HTTP/1.1 server, calling `svc` for
/// each request (its response body is sent as one buffer). Ends when the connection does.
pub fn serve_h1<I, S, F>(
    io: I,
    max_head: usize,
    max_fields: usize,
    mut svc: S,
) -> impl Future<Output = io::Result<()>> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: FnMut(Request<RequestBody>) -> F + Send + 'static,
    F: Future<Output = Response<Bytes>> + Send + 'static,
{
    let svc = move |req: Request<RequestBody>, _facts| {
        let fut = svc(req);
        async move { crate::head::Response::from(fut.await.map(|b| Whole(Some(b)))) }
    };
    h1server::Connection::new(io, ConnState::new(), request::Settings { max_head, max_fields }, svc)
}
