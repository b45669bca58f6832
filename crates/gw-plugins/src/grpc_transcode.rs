//! `grpc-transcode`: REST/JSON requests to gRPC calls by HTTP rules (`google.api.http`
//! annotations, or `rules` in the configuration), and the answers back as proto3 JSON.
//!
//! * access: the request is matched to a binding (most specific template first); no match is
//!   a 404 (405 with `Allow` when the path matches another method), in the JSON form of
//!   `google.rpc.Status`. A native gRPC request (`content-type: application/grpc...`)
//!   passes untouched, so one route can serve both.
//! * request body: the JSON body, query parameters and path variables become the protobuf
//!   request, framed as one gRPC message; errors are 400 naming the field.
//! * upstream request: `POST /package.Service/Method`, `application/grpc`, `te: trailers`.
//! * unary answers are read whole (one message, with the trailers) and rendered as JSON;
//!   a non-OK `grpc-status` becomes the HTTP status of Google's mapping with the
//!   `google.rpc.Status` JSON body. Server streams are written message by message (a JSON
//!   array or NDJSON), never buffered.

use std::sync::Arc;

use bytes::Bytes;
use gw_config::plugins::SchemaContext;
use gw_core::{
    BodyFilter, Ctx, Emit, Error, ErrorKind, Flow, Plugin, Reply, RequestHead, ResponseHead, Result, priority,
};
use gw_grpc::frame::{Frame, FrameDecoder, encode_message};
use gw_grpc::rules::Binding;
use gw_grpc::status::{Code, Status};
use gw_grpc::transcode::{Match, StreamEncoder, Transcoder};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

pub(crate) struct GrpcTranscode {
    t: Arc<Transcoder>,
    max_message: usize,
}

/// The matched binding of a request (index into the transcoder's bindings) and its path
/// variables.
#[derive(Clone)]
struct Call {
    binding: usize,
    vars: Vec<String>,
    /// The response is streamed by a filter (set when the filter is made).
    streamed: bool,
}

impl GrpcTranscode {
    pub(crate) fn new(c: &gw_config::plugins::GrpcTranscode) -> Result<Self, String> {
        // Paths were made absolute when the configuration was validated.
        let t = c.transcoder(&SchemaContext::default()).map_err(|e| format!("{}: {}", e.path, e.message))?;
        Ok(GrpcTranscode {
            t: Arc::new(t),
            max_message: c.max_message_bytes.as_ref().map_or(gw_grpc::frame::DEFAULT_MAX_MESSAGE, |b| b.get() as usize),
        })
    }

    fn binding(&self, call: &Call) -> &Binding {
        &self.t.bindings()[call.binding]
    }

    /// A JSON `google.rpc.Status` reply.
    fn status_reply(&self, status: StatusCode, code: Code, message: &str) -> Reply {
        let (_, body) = self.t.error_response(&Status::new(code, message));
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Reply::full(status, headers, body)
    }
}

fn is_grpc(req: &RequestHead) -> bool {
    req.header("content-type").is_some_and(|c| c.to_ascii_lowercase().starts_with("application/grpc"))
}

/// The fields of a gRPC answer that mean nothing to a JSON client.
const GRPC_FIELDS: &[&str] =
    &["grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-encoding", "grpc-accept-encoding"];

/// Make a gRPC response head a JSON one.
fn json_head(resp: &mut ResponseHead, content_type: &'static str) {
    for f in GRPC_FIELDS {
        resp.headers.remove(*f);
    }
    resp.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers.remove(header::CONTENT_LENGTH);
}

fn not_editable(message: String) -> Error {
    Error::new(ErrorKind::ResponseNotEditable, "grpc-transcode response").with_public_field("detail", message)
}

#[gw_core::plugin]
impl Plugin for GrpcTranscode {
    fn name(&self) -> &'static str {
        "grpc-transcode"
    }

    fn priority(&self) -> i32 {
        priority::GRPC_TRANSCODE
    }

    async fn access(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        if is_grpc(req) {
            return Ok(Flow::Continue);
        }
        let path = req.path().to_string();
        let Some(m) = self.t.route(&req.method, &path) else {
            let allowed = self.t.allowed_methods(&path);
            if allowed.is_empty() {
                let msg = format!("no HTTP rule matches {} {path}", req.method);
                return Ok(Flow::Respond(self.status_reply(StatusCode::NOT_FOUND, Code::NotFound, &msg)));
            }
            let list = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            let msg = format!("method {} not allowed for {path}", req.method);
            let mut r = self.status_reply(StatusCode::METHOD_NOT_ALLOWED, Code::Unimplemented, &msg);
            if let Ok(v) = HeaderValue::from_str(&list) {
                r.headers.insert(header::ALLOW, v);
            }
            return Ok(Flow::Respond(r));
        };
        let binding = self.t.bindings().iter().position(|b| std::ptr::eq(b, m.binding)).unwrap_or(0);
        cx.vars.insert(Call { binding, vars: m.vars, streamed: false });
        Ok(Flow::Continue)
    }

    fn wants_request_body(&self, _req: &RequestHead, cx: &Ctx) -> bool {
        cx.vars.get::<Call>().is_some()
    }

    async fn request_body(&self, req: &mut RequestHead, body: &mut Bytes, cx: &mut Ctx) -> Result<Flow> {
        let Some(call) = cx.vars.get::<Call>() else { return Ok(Flow::Continue) };
        let b = self.binding(call);
        let m = Match { binding: b, vars: call.vars.clone() };
        let msg = match self.t.request(&m, req.query(), body) {
            Ok(msg) => msg,
            Err(e) => {
                return Ok(Flow::Respond(self.status_reply(StatusCode::BAD_REQUEST, Code::InvalidArgument, &e.0)));
            }
        };
        if msg.len() > self.max_message {
            let why =
                format!("request message of {} bytes exceeds max_message_bytes ({})", msg.len(), self.max_message);
            return Ok(Flow::Respond(self.status_reply(StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted, &why)));
        }
        *body = encode_message(&msg, false)
            .map_err(|e| Error::new(ErrorKind::BadRequest, "grpc-transcode request").with_cause(e))?;
        req.method = Method::POST;
        let h = &mut req.headers;
        for f in [header::CONTENT_ENCODING, header::ACCEPT, header::ACCEPT_ENCODING, header::TRANSFER_ENCODING] {
            h.remove(f);
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        Ok(Flow::Continue)
    }

    /// The gRPC path replaces the REST path (after the route's path rewrites, which apply to
    /// REST paths only).
    async fn upstream_request(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let Some(call) = cx.vars.get::<Call>() else { return Ok(Flow::Continue) };
        let path = self.binding(call).grpc_path();
        req.uri = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|e| Error::new(ErrorKind::Internal, "grpc path").with_cause(e))?;
        Ok(Flow::Continue)
    }

    /// A server stream with a gRPC answer (not trailers-only) is written message by message.
    fn response_filter(&self, resp: &mut ResponseHead, cx: &mut Ctx) -> Option<Box<dyn BodyFilter>> {
        let call = cx.vars.get_mut::<Call>()?;
        let b = &self.t.bindings()[call.binding];
        let grpc_ct = resp
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/grpc"));
        if !b.method.is_server_streaming()
            || resp.status != StatusCode::OK
            || !grpc_ct
            || resp.headers.contains_key("grpc-status")
        {
            return None;
        }
        call.streamed = true;
        json_head(resp, self.t.content_type(b));
        Some(Box::new(StreamFilter {
            t: self.t.clone(),
            binding: call.binding,
            dec: FrameDecoder::new(self.max_message),
            enc: self.t.stream_encoder(),
            done: false,
        }))
    }

    fn wants_response_body(&self, _resp: &ResponseHead, cx: &Ctx) -> bool {
        cx.vars.get::<Call>().is_some_and(|c| !c.streamed)
    }

    async fn response_body(&self, resp: &mut ResponseHead, body: &mut Bytes, cx: &mut Ctx) -> Result<()> {
        let Some(call) = cx.vars.get::<Call>() else { return Ok(()) };
        let b = self.binding(call);
        let trailers = resp.trailers.take().unwrap_or_default();
        let status = Status::from_headers(&trailers).or_else(|| Status::from_headers(&resp.headers));
        let status = match status {
            Some(s) => s,
            None if resp.status != StatusCode::OK => gw_grpc::web::synthesized_status(resp.status.as_u16()),
            None => return Err(not_editable("the upstream's answer has no grpc-status".into())),
        };
        // Trailing metadata (other than the status) becomes header fields.
        let mut meta = HeaderMap::new();
        for (k, v) in &trailers {
            if !GRPC_FIELDS.contains(&k.as_str()) {
                meta.append(k.clone(), v.clone());
            }
        }
        json_head(resp, self.t.content_type(b));
        for (k, v) in meta {
            if let Some(k) = k {
                resp.headers.append::<HeaderName>(k, v);
            }
        }
        if status.code() != Code::Ok {
            let (code, json) = self.t.error_response(&status);
            resp.status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            *body = Bytes::from(json);
            return Ok(());
        }
        resp.status = StatusCode::OK;
        let mut dec = FrameDecoder::new(self.max_message);
        dec.push(body);
        let mut messages = Vec::new();
        loop {
            match dec.next_frame() {
                Ok(Some(Frame::Message { compressed: true, .. })) => {
                    return Err(not_editable("the upstream sent a compressed message".into()));
                }
                Ok(Some(Frame::Message { data, .. })) => messages.push(data),
                Ok(Some(Frame::Trailers(_))) => return Err(not_editable("trailer frame in a gRPC body".into())),
                Ok(None) => break,
                Err(e) => return Err(not_editable(e.to_string())),
            }
        }
        dec.finish().map_err(|e| not_editable(e.to_string()))?;
        let render = |m: &[u8]| self.t.response_json(b, m).map_err(|e| not_editable(e.0));
        *body = if b.method.is_server_streaming() {
            // A stream that was answered whole (trailers-only): an empty array or nothing.
            let mut enc = self.t.stream_encoder();
            let mut out = Vec::new();
            for m in &messages {
                out.extend_from_slice(&enc.message(&render(m)?));
            }
            out.extend_from_slice(&enc.end(None));
            Bytes::from(out)
        } else {
            match messages.as_slice() {
                [one] => Bytes::from(render(one)?),
                other => return Err(not_editable(format!("a unary call answered {} messages", other.len()))),
            }
        };
        Ok(())
    }
}

/// A server stream: each gRPC message rendered as it arrives; the status at the end.
struct StreamFilter {
    t: Arc<Transcoder>,
    binding: usize,
    dec: FrameDecoder,
    enc: StreamEncoder,
    done: bool,
}

impl StreamFilter {
    fn end_with(&mut self, status: &Status, out: &mut Emit) {
        self.done = true;
        let err = (status.code() != Code::Ok).then(|| status.to_json(|a| self.t.any_to_json(a)));
        out.data(self.enc.end(err.as_ref()));
    }
}

impl BodyFilter for StreamFilter {
    fn data(&mut self, data: Bytes, out: &mut Emit) -> Result<()> {
        self.dec.push(&data);
        let b = &self.t.bindings()[self.binding];
        loop {
            match self.dec.next_frame() {
                Ok(Some(Frame::Message { compressed: false, data })) => {
                    let json = self
                        .t
                        .response_json(b, &data)
                        .map_err(|e| Error::new(ErrorKind::UpstreamProtocol, "grpc-transcode stream").with_cause(e))?;
                    out.data(self.enc.message(&json));
                }
                Ok(Some(_)) => {
                    return Err(Error::new(
                        ErrorKind::UpstreamProtocol,
                        "compressed message or trailer frame in a stream",
                    ));
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(Error::new(ErrorKind::UpstreamProtocol, "grpc-transcode stream").with_cause(e)),
            }
        }
    }

    fn trailers(&mut self, trailers: HeaderMap, out: &mut Emit) -> Result<()> {
        let status = Status::from_headers(&trailers)
            .unwrap_or_else(|| Status::new(Code::Unknown, "upstream stream ended without grpc-status"));
        self.end_with(&status, out);
        Ok(())
    }

    fn end(&mut self, out: &mut Emit) -> Result<()> {
        if !self.done {
            self.end_with(&Status::new(Code::Unknown, "upstream stream ended without grpc-status"), out);
        }
        Ok(())
    }
}
