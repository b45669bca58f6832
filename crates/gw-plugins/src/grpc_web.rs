//! `grpc-web`: browser gRPC-Web requests (`application/grpc-web[+proto]`,
//! `application/grpc-web-text[+proto]`) to a gRPC upstream (the route's service speaks HTTP/2:
//! `grpc://` or `grpcs://`), and the answer back, frame by frame: nothing is buffered beyond
//! one base64 group or one 5-byte message header.
//!
//! * request: content type `application/grpc`, `te: trailers`, browser-only fields removed;
//!   a text body is base64-decoded as it streams; every message is checked against
//!   `max_message_bytes`.
//! * response: content type of the request's encoding; data passed through (base64-encoded
//!   per chunk for text); the upstream's trailers become the trailer frame at the end of the
//!   body. A trailers-only answer (status in the headers) is passed as it is; an upstream
//!   that is not gRPC (no `grpc-status`, not `application/grpc`) is answered trailers-only
//!   with the status of gRPC's HTTP mapping.
//!
//! Requests that are not gRPC-Web pass untouched (a route can serve gRPC and gRPC-Web).

use bytes::Bytes;
use gw_config::plugins::GrpcWeb as Conf;
use gw_core::{
    BodyFilter, Ctx, Emit, Error, ErrorKind, Flow, Hooks, Plugin, Reply, RequestHead, ResponseHead, Result, Stage,
    priority,
};
use gw_grpc::web::{self, Encoding, RequestTranslator, ResponseTranslator, WebContentType};
use http::header;
use http::{Method, StatusCode};

pub(crate) struct GrpcWeb {
    text: bool,
    max_message: usize,
}

/// The request's gRPC-Web content type, for the response half.
#[derive(Clone)]
struct WebCall {
    ct: WebContentType,
    /// The upstream's answer is not gRPC: its body is dropped (the status is in the headers).
    drop_body: bool,
}

impl GrpcWeb {
    pub(crate) fn new(c: &Conf) -> Self {
        GrpcWeb {
            text: c.text,
            max_message: c.max_message_bytes.as_ref().map_or(gw_grpc::frame::DEFAULT_MAX_MESSAGE, |b| b.get() as usize),
        }
    }
}

/// The gRPC-Web content type of a request this plugin translates (a POST).
fn web_request(req: &RequestHead) -> Option<WebContentType> {
    if req.method != Method::POST {
        return None;
    }
    WebContentType::parse(req.header("content-type")?)
}

#[gw_core::plugin]
impl Plugin for GrpcWeb {
    fn name(&self) -> &'static str {
        "grpc-web"
    }

    fn priority(&self) -> i32 {
        priority::GRPC_WEB
    }

    fn stage(&self) -> Stage {
        Stage::PreAuth
    }

    fn inactive(&self) -> Hooks {
        if self.text { Hooks::ACCESS } else { Hooks::NONE }
    }

    /// With `text: false`, the text encoding is refused (415).
    async fn access(&self, req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
        if let Some(ct) = web_request(req)
            && ct.encoding == Encoding::Text
        {
            return Ok(Flow::Respond(Reply::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "application/grpc-web-text is not accepted on this route",
            )));
        }
        Ok(Flow::Continue)
    }

    fn request_filter(&self, req: &mut RequestHead, cx: &mut Ctx) -> Option<Box<dyn BodyFilter>> {
        let ct = web_request(req)?;
        web::request_headers(&mut req.headers, &ct);
        let filter = RequestFilter {
            translator: RequestTranslator::new(&ct),
            sizes: MessageSizes::new(self.max_message),
            keeps_length: ct.encoding == Encoding::Binary,
        };
        cx.vars.insert(WebCall { ct, drop_body: false });
        Some(Box::new(filter))
    }

    async fn upstream_response(&self, resp: &mut ResponseHead, cx: &mut Ctx) -> Result<()> {
        let Some(call) = cx.vars.get_mut::<WebCall>() else { return Ok(()) };
        let grpc_ct = resp
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/grpc"));
        if !web::is_trailers_only(&resp.headers) && (resp.status != StatusCode::OK || !grpc_ct) {
            // Not a gRPC answer: trailers-only with gRPC's status for the HTTP status.
            let status = web::synthesized_status(resp.status.as_u16());
            resp.status = StatusCode::OK;
            resp.headers.clear();
            status.write_headers(&mut resp.headers);
            call.drop_body = true;
        }
        web::response_headers(&mut resp.headers, &call.ct);
        Ok(())
    }

    fn response_filter(&self, resp: &mut ResponseHead, cx: &mut Ctx) -> Option<Box<dyn BodyFilter>> {
        let call = cx.vars.get::<WebCall>()?;
        Some(Box::new(ResponseFilter {
            translator: ResponseTranslator::new(&call.ct),
            trailers_only: call.drop_body || web::is_trailers_only(&resp.headers),
            sizes: MessageSizes::new(self.max_message),
            done: false,
        }))
    }
}

/// The lengths in the 5-byte headers of a stream of gRPC messages, checked against a maximum
/// as the bytes pass (nothing is held back).
struct MessageSizes {
    max: usize,
    header: [u8; 5],
    have: usize,
    /// Payload bytes of the current message still to pass.
    left: u64,
}

impl MessageSizes {
    fn new(max: usize) -> Self {
        MessageSizes { max, header: [0; 5], have: 0, left: 0 }
    }

    /// Scan `data`; `Err(len)` when a message is announced larger than the maximum.
    fn scan(&mut self, mut data: &[u8]) -> std::result::Result<(), u64> {
        while !data.is_empty() {
            if self.left > 0 {
                let n = (self.left.min(data.len() as u64)) as usize;
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let len =
                    u64::from(u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]));
                if len > self.max as u64 {
                    return Err(len);
                }
                self.left = len;
            }
        }
        Ok(())
    }

    /// Whether the stream ended between messages.
    fn complete(&self) -> bool {
        self.have == 0 && self.left == 0
    }
}

/// The request body: base64-decoded for text, message sizes checked.
struct RequestFilter {
    translator: RequestTranslator,
    sizes: MessageSizes,
    keeps_length: bool,
}

impl BodyFilter for RequestFilter {
    fn data(&mut self, data: Bytes, out: &mut Emit) -> Result<()> {
        let bytes = self.translator.data(data).map_err(|e| {
            Error::new(ErrorKind::BadRequest, "grpc-web request body").with_public_field("detail", e.to_string())
        })?;
        self.sizes.scan(&bytes).map_err(|len| {
            Error::new(ErrorKind::PayloadTooLarge, "grpc-web request message").with_public_field(
                "detail",
                format!("a message of {len} bytes exceeds max_message_bytes ({})", self.sizes.max),
            )
        })?;
        out.data(bytes);
        Ok(())
    }

    fn end(&mut self, _out: &mut Emit) -> Result<()> {
        self.translator.end().map_err(|e| {
            Error::new(ErrorKind::BadRequest, "grpc-web request body").with_public_field("detail", e.to_string())
        })?;
        if !self.sizes.complete() {
            return Err(Error::new(ErrorKind::BadRequest, "grpc-web request body")
                .with_public_field("detail", "the body ends inside a gRPC message"));
        }
        Ok(())
    }

    fn keeps_length(&self) -> bool {
        self.keeps_length
    }
}

/// The response body: data as it comes (base64 per chunk for text), the upstream's trailers as
/// the trailer frame.
struct ResponseFilter {
    translator: ResponseTranslator,
    trailers_only: bool,
    sizes: MessageSizes,
    done: bool,
}

impl BodyFilter for ResponseFilter {
    fn data(&mut self, data: Bytes, out: &mut Emit) -> Result<()> {
        if self.trailers_only {
            return Ok(());
        }
        self.sizes.scan(&data).map_err(|len| {
            Error::new(
                ErrorKind::UpstreamProtocol,
                format!("upstream gRPC message of {len} bytes exceeds max_message_bytes"),
            )
        })?;
        out.data(self.translator.data(data));
        Ok(())
    }

    fn trailers(&mut self, trailers: http::HeaderMap, out: &mut Emit) -> Result<()> {
        if !self.trailers_only {
            self.done = true;
            out.data(self.translator.end(Some(&trailers)));
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Emit) -> Result<()> {
        if !self.trailers_only && !self.done {
            // The upstream's body ended without trailers: the frame says UNKNOWN.
            self.done = true;
            out.data(self.translator.end(None));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_sizes_across_chunks() {
        let mut s = MessageSizes::new(10);
        let msg = gw_grpc::frame::encode_message(b"0123456789", false).unwrap();
        for b in msg.chunks(3) {
            s.scan(b).unwrap();
        }
        assert!(s.complete());
        s.scan(&msg[..7]).unwrap();
        assert!(!s.complete());
        s.scan(&msg[7..]).unwrap();
        let big = gw_grpc::frame::encode_message(b"0123456789a", false).unwrap();
        assert_eq!(s.scan(&big[..2]), Ok(()));
        assert_eq!(s.scan(&big[2..]), Err(11));
    }
}
