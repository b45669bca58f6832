//! A minimal gRPC upstream for `bench/run.sh grpc`: h2c (prior knowledge) on the address in
//! its first argument; every request is read to its end and answered with one gRPC message
//! (`bookstore.v1.Shelf { id: 1, theme: "Fiction", book_count: 2 }`) and `grpc-status: 0` in
//! the trailers, whatever the method. One thread, so that the upstream is not what a benchmark
//! of the gateway measures (a grpcio server in Python would be).
//!
//!   grpc-bench-upstream 127.0.0.1:18183

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// `Shelf { id: 1, theme: "Fiction", book_count: 2 }`, framed.
const SHELF: &[u8] = b"\x00\x00\x00\x00\x0d\x08\x01\x12\x07Fiction\x18\x02";

/// The answer's body: the message, then the trailers.
struct Answer(u8);

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0 += 1;
        Poll::Ready(match self.0 {
            1 => Some(Ok(Frame::data(Bytes::from_static(SHELF)))),
            2 => {
                let mut t = HeaderMap::new();
                t.insert("grpc-status", HeaderValue::from_static("0"));
                Some(Ok(Frame::trailers(t)))
            }
            _ => None,
        })
    }
}

async fn serve(req: Request<Incoming>) -> Result<Response<Answer>, Infallible> {
    // Read the request to its end, as a real server does.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Answer(0));
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    Ok(resp)
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18183".into());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        println!("{}", l.local_addr().expect("addr").port());
        loop {
            let Ok((tcp, _)) = l.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1000)
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(serve))
                    .await;
            });
        }
    });
}
