//! Streaming body hooks: a filter sees the response's frames (data, then trailers) as they
//! pass, without the body being buffered; the whole-body hook sees the trailers in the head.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use gw_core::{BodyFilter, Ctx, Emit, Hooks, Plugin, ResponseHead, Result};
use http::{HeaderMap, HeaderValue};

use crate::downstream_h1::raw_upstream;
use crate::support::*;

/// The example of `docs/writing-a-plugin.md`: upper-cases the body frame by frame, counts the
/// bytes, and reports the count in a trailer.
struct Shout {
    /// Bytes seen, over every response (the test reads it).
    total: Arc<AtomicUsize>,
}

#[gw_core::plugin]
impl Plugin for Shout {
    fn name(&self) -> &'static str {
        "shout"
    }

    fn priority(&self) -> i32 {
        0
    }

    fn response_filter(&self, _resp: &mut ResponseHead, _cx: &mut Ctx) -> Option<Box<dyn BodyFilter>> {
        Some(Box::new(ShoutFilter { seen: 0, total: self.total.clone(), sent_trailers: false }))
    }
}

/// One response's state.
struct ShoutFilter {
    seen: usize,
    total: Arc<AtomicUsize>,
    sent_trailers: bool,
}

impl ShoutFilter {
    fn count(&self) -> HeaderValue {
        HeaderValue::from(self.seen)
    }
}

impl BodyFilter for ShoutFilter {
    fn data(&mut self, data: Bytes, out: &mut Emit) -> Result<()> {
        self.seen += data.len();
        out.data(Bytes::from(data.to_ascii_uppercase()));
        Ok(())
    }

    fn trailers(&mut self, mut trailers: HeaderMap, out: &mut Emit) -> Result<()> {
        trailers.insert("x-bytes", self.count());
        self.sent_trailers = true;
        out.trailers(trailers);
        Ok(())
    }

    fn end(&mut self, out: &mut Emit) -> Result<()> {
        self.total.fetch_add(self.seen, Ordering::SeqCst);
        if !self.sent_trailers {
            let mut t = HeaderMap::new();
            t.insert("x-bytes", self.count());
            out.trailers(t);
        }
        Ok(())
    }
}

fn config(upstream: std::net::SocketAddr) -> String {
    base(&format!("services:\n  - name: s\n    url: http://{upstream}\nroutes:\n  - name: r\n    service: s\n"))
}

/// A streaming body plugin rewrites each frame and adds to the trailers; the upstream's
/// trailers reach it (and the client that accepts them); a body of known length loses its
/// `Content-Length` (the filter may change the length) and goes chunked.
#[tokio::test]
async fn response_filter_sees_frames_and_trailers() {
    let total = Arc::new(AtomicUsize::new(0));
    let plugin = Arc::new(Shout { total: total.clone() });
    assert_eq!(plugin.hooks(), Hooks::RESPONSE_FILTER);

    let chunked = raw_upstream(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 7\r\n\r\n",
        false,
    )
    .await;
    let gw = TestGateway::start_with_plugins(&config(chunked), vec![plugin.clone()]).await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n").await;
    let r = c.next(false).await;
    assert_eq!(r.status(), 200, "{}", r.head);
    assert_eq!(&r.body[..], b"HELLO WORLD");
    assert_eq!(r.trailers, "x-sum: 7\nx-bytes: 11\n");

    let sized = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nsome text", false).await;
    let gw = TestGateway::start_with_plugins(&config(sized), vec![plugin.clone()]).await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n").await;
    let r = c.next(false).await;
    assert!(r.head.contains("transfer-encoding: chunked") && !r.head.contains("content-length"), "{}", r.head);
    assert_eq!((&r.body[..], r.trailers.as_str()), (&b"SOME TEXT"[..], "x-bytes: 9\n"));
    // Without `TE: trailers` the body is the same and the trailers stay behind.
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.next(false).await;
    assert_eq!((&r.body[..], r.trailers.as_str()), (&b"SOME TEXT"[..], ""));
    // A HEAD response has no body to filter.
    c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.next(true).await;
    assert!(r.head.contains("content-length: 9"), "{}", r.head);
    assert_eq!(total.load(Ordering::SeqCst), 11 + 9 + 9);
}

/// Maps a gRPC status found in the trailers of the whole body to a header.
struct MapStatus;

#[gw_core::plugin]
impl Plugin for MapStatus {
    fn name(&self) -> &'static str {
        "map-status"
    }

    fn priority(&self) -> i32 {
        0
    }

    async fn response_body(&self, resp: &mut ResponseHead, body: &mut Bytes, _cx: &mut Ctx) -> Result<()> {
        let status = resp.trailers.as_ref().and_then(|t| t.get("grpc-status")).cloned();
        if let Some(s) = status {
            resp.headers.insert("x-grpc-status", s);
        }
        *body = Bytes::from(format!("{} bytes", body.len()));
        Ok(())
    }
}

/// The whole-body hook sees the upstream's trailers in the response head.
#[tokio::test]
async fn whole_body_hook_sees_trailers() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\ngrpc-status: 5\r\n\r\n",
        false,
    )
    .await;
    let gw = TestGateway::start_with_plugins(&config(up), vec![Arc::new(MapStatus)]).await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.next(false).await;
    assert!(r.head.contains("x-grpc-status: 5"), "{}", r.head);
    assert_eq!(&r.body[..], b"3 bytes");
}

/// Upper-cases the request body frame by frame on its way upstream.
struct ShoutUp;

struct Upper;

impl BodyFilter for Upper {
    fn data(&mut self, data: Bytes, out: &mut Emit) -> Result<()> {
        out.data(Bytes::from(data.to_ascii_uppercase()));
        Ok(())
    }
}

#[gw_core::plugin]
impl Plugin for ShoutUp {
    fn name(&self) -> &'static str {
        "shout-up"
    }

    fn priority(&self) -> i32 {
        0
    }

    fn request_filter(&self, _req: &mut gw_core::RequestHead, _cx: &mut Ctx) -> Option<Box<dyn BodyFilter>> {
        Some(Box::new(Upper))
    }
}

/// A request body filter rewrites the body on its way upstream; the request loses its
/// `Content-Length` (the filter may change the length) and goes chunked.
#[tokio::test]
async fn request_filter_rewrites_the_body_upstream() {
    use http_body_util::BodyExt;
    let up = Upstream::start(Behavior::Custom(Arc::new(|req| {
        Box::pin(async move {
            let framing =
                format!("te={:?} cl={:?}", req.headers().get("transfer-encoding"), req.headers().get("content-length"));
            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let mut r = http::Response::new(gw_test_util::full(String::from_utf8_lossy(&body).into_owned()));
            r.headers_mut().insert("x-framing", HeaderValue::from_str(&framing).unwrap());
            r
        })
    })))
    .await;
    let plugin = Arc::new(ShoutUp);
    assert_eq!(plugin.hooks(), Hooks::REQUEST_FILTER);
    let gw = TestGateway::start_with_plugins(&config(up.addr), vec![plugin]).await;
    let r = client().post(gw.url("main")).body("hello world").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let framing = r.headers()["x-framing"].to_str().unwrap().to_string();
    assert_eq!(r.text().await.unwrap(), "HELLO WORLD");
    assert_eq!(framing, "te=Some(\"chunked\") cl=None");
}

/// Frames handed over a channel (the test decides when each one exists).
struct Channel(tokio::sync::mpsc::UnboundedReceiver<gw_core::Frame>);

impl gw_core::body::FrameSource for Channel {
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<gw_core::Frame>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// Answers in the access phase with a streaming reply whose frames the test sends.
struct StreamReply {
    frames: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<gw_core::Frame>>>,
}

#[gw_core::plugin]
impl Plugin for StreamReply {
    fn name(&self) -> &'static str {
        "stream-reply"
    }

    fn priority(&self) -> i32 {
        0
    }

    async fn access(&self, _req: &mut gw_core::RequestHead, _cx: &mut Ctx) -> Result<gw_core::Flow> {
        let rx = self.frames.lock().unwrap().take().expect("one request");
        let mut h = HeaderMap::new();
        h.insert("x-streamed", HeaderValue::from_static("1"));
        let body = gw_core::Body::from_source(Channel(rx));
        Ok(gw_core::Flow::Respond(gw_core::Reply::stream(http::StatusCode::CREATED, h, body)))
    }
}

/// A plugin's streaming reply reaches the client frame by frame: the head and the first chunk
/// arrive while the stream is still open (the second does not exist yet), then the rest and
/// the trailers (HTTP/1.1 chunked, the client accepting trailers). Whole replies keep their
/// `Content-Length` and request id.
#[tokio::test]
async fn plugin_reply_streams_frame_by_frame() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let plugin = Arc::new(StreamReply { frames: std::sync::Mutex::new(Some(rx)) });
    let gw = TestGateway::start_with_plugins(&config("127.0.0.1:9".parse().unwrap()), vec![plugin]).await;
    let mut c = Responses::connect(gw.addr("main")).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n").await;
    tx.send(gw_core::Frame::Data(Bytes::from_static(b"first"))).unwrap();
    let mut head = String::new();
    loop {
        let line = c.line().await;
        if line.is_empty() {
            break;
        }
        head.push_str(&String::from_utf8_lossy(&line).to_ascii_lowercase());
        head.push('\n');
    }
    assert!(head.starts_with("http/1.1 201"), "{head}");
    assert!(head.contains("x-streamed: 1") && head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(c.line().await, b"5");
    assert_eq!(c.take(5).await, b"first");
    assert_eq!(c.line().await, b"");
    // Nothing more until the next frame exists.
    let mut t = HeaderMap::new();
    t.insert("x-done", HeaderValue::from_static("yes"));
    tx.send(gw_core::Frame::Data(Bytes::from_static(b"second"))).unwrap();
    tx.send(gw_core::Frame::Trailers(t)).unwrap();
    drop(tx);
    assert_eq!(c.line().await, b"6");
    assert_eq!(c.take(6).await, b"second");
    assert_eq!(c.line().await, b"");
    assert_eq!(c.line().await, b"0");
    assert_eq!(c.line().await, b"x-done: yes");
    assert_eq!(c.line().await, b"");
}
