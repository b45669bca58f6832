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
