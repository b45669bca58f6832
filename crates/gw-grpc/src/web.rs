//! gRPC-Web (the browser protocol) to and from gRPC over HTTP/2.
//!
//! A gRPC-Web request is a gRPC request with another content type, over HTTP/1.1 or HTTP/2:
//!
//! * `application/grpc-web` and `application/grpc-web+proto`: the body is the gRPC framing
//!   itself ([`crate::frame`]), passed through unchanged.
//! * `application/grpc-web-text` (`+proto`): the same bytes in base64, in both directions.
//!   Browsers send each chunk base64-encoded with its own padding, so a request body may be
//!   `AAAAAAN...==AAAA...` ([`Base64Decoder`] takes any chunking and padding in the middle).
//!
//! The response's trailers (`grpc-status`, `grpc-message`, ...) cannot reach a browser as
//! HTTP trailers, so the gateway appends them to the body as a last frame with flag `0x80`
//! whose payload is `name: value\r\n` lines ([`encode_trailers`]). A trailers-only response
//! (status in the headers, no body) stays as it is: the gRPC-Web spec allows it and clients
//! read the status from the headers.
//!
//! [`RequestTranslator`] and [`ResponseTranslator`] are the two streaming halves: each takes
//! the body chunk by chunk (as a body filter sees it) and never buffers a message.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::frame::{FLAG_TRAILERS, HEADER_LEN, header as frame_header};
use crate::status::{Code, Status};

/// The two encodings of gRPC-Web.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/grpc-web[+proto]`: gRPC framing as it is.
    Binary,
    /// `application/grpc-web-text[+proto]`: gRPC framing in base64.
    Text,
}

/// A parsed gRPC-Web content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebContentType {
    /// Binary or base64 text.
    pub encoding: Encoding,
    /// The message format after `+` (`proto` when absent; other formats pass through as
    /// `application/grpc+<format>`).
    pub format: String,
}

impl WebContentType {
    /// Parse a `content-type` value: `None` when it is not gRPC-Web. Parameters
    /// (`; charset=...`) are ignored; the media type is case-insensitive.
    pub fn parse(value: &str) -> Option<WebContentType> {
        let media = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let (base, format) = match media.split_once('+') {
            Some((b, f)) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.') => {
                (b.to_string(), f.to_string())
            }
            Some(_) => return None,
            None => (media, "proto".to_string()),
        };
        let encoding = match base.as_str() {
            "application/grpc-web" => Encoding::Binary,
            "application/grpc-web-text" => Encoding::Text,
            _ => return None,
        };
        Some(WebContentType { encoding, format })
    }

    /// The content type of the request sent to the gRPC upstream.
    pub fn upstream(&self) -> String {
        if self.format == "proto" { "application/grpc".into() } else { format!("application/grpc+{}", self.format) }
    }

    /// The content type of the response to the gRPC-Web client (same encoding and format).
    pub fn response(&self) -> String {
        let base = match self.encoding {
            Encoding::Binary => "application/grpc-web",
            Encoding::Text => "application/grpc-web-text",
        };
        format!("{base}+{}", self.format)
    }
}

/// Header fields of a gRPC-Web request that have no meaning upstream.
const WEB_ONLY_REQUEST_FIELDS: &[&str] = &["x-grpc-web", "x-user-agent"];

/// Turn a gRPC-Web request's header fields into a gRPC request's: content type, `te: trailers`,
/// no `content-length` (the text encoding changes the length; HTTP/2 needs none), the
/// browser-only fields removed. `grpc-timeout` and other metadata pass unchanged.
pub fn request_headers(headers: &mut HeaderMap, ct: &WebContentType) {
    if let Ok(v) = HeaderValue::from_str(&ct.upstream()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if ct.encoding == Encoding::Text {
        headers.remove(header::CONTENT_LENGTH);
    }
    for f in WEB_ONLY_REQUEST_FIELDS {
        headers.remove(*f);
    }
}

/// Turn a gRPC response's header fields into a gRPC-Web response's: the content type of the
/// request's encoding, and no `content-length` (a trailer frame is added to the body).
///
/// A response from an upstream that is not gRPC (no `grpc-status` anywhere and not
/// `application/grpc`) should instead be answered with [`synthesized_status`].
pub fn response_headers(headers: &mut HeaderMap, ct: &WebContentType) {
    if let Ok(v) = HeaderValue::from_str(&ct.response()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.remove(header::CONTENT_LENGTH);
}

/// Whether a response is trailers-only (its status is in the headers): then there is no body
/// and no trailer frame to add.
pub fn is_trailers_only(headers: &HeaderMap) -> bool {
    headers.contains_key("grpc-status")
}

/// The status to give a client when the upstream answered with an HTTP status other than 200
/// and no `grpc-status` (gRPC's HTTP to gRPC status mapping).
pub fn synthesized_status(http_status: u16) -> Status {
    Status::new(Code::from_http_status(http_status), format!("upstream answered HTTP {http_status}"))
}

/// The gRPC-Web trailer frame of a trailer map: flag `0x80`, length, then one
/// `name: value\r\n` line per field (names lower-case, as `http` keeps them). Fields whose
/// value is not visible ASCII are dropped (a browser could not read them).
pub fn encode_trailers(trailers: &HeaderMap) -> Bytes {
    let mut block = BytesMut::new();
    for (name, value) in trailers {
        if value.as_bytes().iter().any(|b| !(0x20..0x7f).contains(b) && *b != b'\t') {
            continue;
        }
        block.put_slice(name.as_str().as_bytes());
        block.put_slice(b": ");
        block.put_slice(value.as_bytes());
        block.put_slice(b"\r\n");
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + block.len());
    // A trailer block is far below 4 GiB: a header map is bounded by the HTTP layers.
    if let Ok(h) = frame_header(FLAG_TRAILERS, block.len()) {
        out.put_slice(&h);
        out.put_slice(&block);
    }
    out.freeze()
}

/// A malformed gRPC-Web trailer block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed gRPC-Web trailer line {line}: {reason}")]
pub struct TrailerError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// Parse the payload of a trailer frame (`name: value` lines ended by `\r\n`; a bare `\n` and
/// a last line without an end are accepted). Names are lower-cased.
pub fn decode_trailer_block(block: &[u8]) -> Result<HeaderMap, TrailerError> {
    let mut out = HeaderMap::new();
    for (i, line) in block.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let err = |reason| TrailerError { line: i + 1, reason };
        let colon = line.iter().position(|b| *b == b':').ok_or_else(|| err("no ':'"))?;
        let name = HeaderName::from_bytes(line[..colon].to_ascii_lowercase().trim_ascii())
            .map_err(|_| err("invalid field name"))?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).map_err(|_| err("invalid field value"))?;
        out.append(name, value);
    }
    Ok(out)
}

/// A malformed base64 body of `application/grpc-web-text`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    /// A byte that is not in the base64 alphabet, or padding in the wrong place.
    #[error("invalid base64 in a grpc-web-text body at byte {0}")]
    Invalid(u64),
    /// The body ended inside a 4-character group.
    #[error("grpc-web-text body ends inside a base64 group ({0} characters left)")]
    Truncated(usize),
}

/// Incremental base64 decoder for `application/grpc-web-text` bodies: chunks may end anywhere,
/// and each group of four characters may end with padding (browsers encode every chunk on its
/// own, so padding appears in the middle of a body).
#[derive(Debug, Default)]
pub struct Base64Decoder {
    pending: [u8; 4],
    n: usize,
    offset: u64,
}

impl Base64Decoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Base64Decoder::default()
    }

    /// Decode a chunk; returns the bytes of every complete group (possibly none).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, Base64Error> {
        let mut out = Vec::with_capacity((self.n + chunk.len()) / 4 * 3);
        let mut quad = [0u8; 4];
        let mut run_start = 0usize;
        let mut i = 0usize;
        // Complete the group left from the previous chunk.
        while self.n > 0 && self.n < 4 && i < chunk.len() {
            self.pending[self.n] = chunk[i];
            self.n += 1;
            i += 1;
        }
        if self.n == 4 {
            quad.copy_from_slice(&self.pending);
            self.n = 0;
            self.decode_quads(&quad, &mut out)?;
            run_start = i;
        } else if self.n > 0 {
            return Ok(Bytes::new());
        }
        // Whole groups of this chunk: decoded in runs that end at a padded group.
        let whole_end = run_start + (chunk.len() - run_start) / 4 * 4;
        let mut g = run_start;
        while g < whole_end {
            if chunk[g + 3] == b'=' {
                self.decode_quads(&chunk[run_start..g + 4], &mut out)?;
                run_start = g + 4;
            }
            g += 4;
        }
        if run_start < whole_end {
            self.decode_quads(&chunk[run_start..whole_end], &mut out)?;
        }
        let rest = &chunk[whole_end..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.n = rest.len();
        Ok(Bytes::from(out))
    }

    fn decode_quads(&mut self, quads: &[u8], out: &mut Vec<u8>) -> Result<(), Base64Error> {
        let start = self.offset;
        self.offset += quads.len() as u64;
        base64::engine::general_purpose::STANDARD.decode_vec(quads, out).map_err(|e| {
            let at = match e {
                base64::DecodeError::InvalidByte(i, _) | base64::DecodeError::InvalidLastSymbol(i, _) => i as u64,
                _ => 0,
            };
            Base64Error::Invalid(start + at)
        })
    }

    /// The end of the body: an error when it ends inside a group.
    pub fn finish(&self) -> Result<(), Base64Error> {
        match self.n {
            0 => Ok(()),
            n => Err(Base64Error::Truncated(n)),
        }
    }
}

/// Base64 of one chunk of a `grpc-web-text` response, padded on its own (as browsers decode
/// it, four characters at a time). No byte is held back, so a streamed message reaches the
/// client as soon as it arrives.
pub fn encode_text_chunk(chunk: &[u8]) -> Bytes {
    Bytes::from(base64::engine::general_purpose::STANDARD.encode(chunk))
}

/// A gRPC-Web request body failed to translate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebError {
    /// Bad base64 in a text body.
    #[error(transparent)]
    Base64(#[from] Base64Error),
}

/// The request half: a gRPC-Web body to a gRPC body, chunk by chunk.
#[derive(Debug)]
pub struct RequestTranslator {
    encoding: Encoding,
    b64: Base64Decoder,
}

impl RequestTranslator {
    /// A translator for a request of this content type.
    pub fn new(ct: &WebContentType) -> Self {
        RequestTranslator { encoding: ct.encoding, b64: Base64Decoder::new() }
    }

    /// One chunk of the client's body; returns the bytes to send upstream.
    pub fn data(&mut self, chunk: Bytes) -> Result<Bytes, WebError> {
        match self.encoding {
            Encoding::Binary => Ok(chunk),
            Encoding::Text => Ok(self.b64.push(&chunk)?),
        }
    }

    /// The end of the client's body.
    pub fn end(&self) -> Result<(), WebError> {
        Ok(self.b64.finish()?)
    }
}

/// The response half: a gRPC response body and its trailers to a gRPC-Web body.
#[derive(Debug)]
pub struct ResponseTranslator {
    encoding: Encoding,
}

impl ResponseTranslator {
    /// A translator for the response to a request of this content type.
    pub fn new(ct: &WebContentType) -> Self {
        ResponseTranslator { encoding: ct.encoding }
    }

    /// One chunk of the upstream's body; returns the bytes for the client.
    pub fn data(&mut self, chunk: Bytes) -> Bytes {
        match self.encoding {
            Encoding::Binary => chunk,
            Encoding::Text if chunk.is_empty() => chunk,
            Encoding::Text => encode_text_chunk(&chunk),
        }
    }

    /// The end of the upstream's body: the trailer frame to append (encoded like the body).
    /// `trailers` are the upstream's; without them (the stream ended with no status) the
    /// frame carries `grpc-status: 2` (UNKNOWN) with a message saying so, so a client never
    /// mistakes a cut stream for a success.
    pub fn end(&mut self, trailers: Option<&HeaderMap>) -> Bytes {
        let frame = match trailers {
            Some(t) if t.contains_key("grpc-status") => encode_trailers(t),
            other => {
                let mut t = other.cloned().unwrap_or_default();
                Status::new(Code::Unknown, "upstream response ended without grpc-status").write_headers(&mut t);
                encode_trailers(&t)
            }
        };
        self.data(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, FrameDecoder, encode_message};

    /// Content types: binary and text, `+proto` optional, parameters and case ignored.
    #[test]
    fn content_types() {
        let b = WebContentType::parse("application/grpc-web").unwrap();
        assert_eq!(b, WebContentType { encoding: Encoding::Binary, format: "proto".into() });
        assert_eq!(b.upstream(), "application/grpc");
        assert_eq!(b.response(), "application/grpc-web+proto");
        let t = WebContentType::parse("Application/GRPC-Web-Text+proto; charset=utf-8").unwrap();
        assert_eq!(t.encoding, Encoding::Text);
        assert_eq!(t.response(), "application/grpc-web-text+proto");
        let j = WebContentType::parse("application/grpc-web+json").unwrap();
        assert_eq!(j.upstream(), "application/grpc+json");
        for no in ["application/grpc", "application/json", "application/grpc-web+", "application/grpc-webx", ""] {
            assert_eq!(WebContentType::parse(no), None, "{no:?}");
        }
    }

    /// Request and response header fields are mapped both ways.
    #[test]
    fn header_mapping() {
        let ct = WebContentType::parse("application/grpc-web-text").unwrap();
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/grpc-web-text".parse().unwrap());
        h.insert("content-length", "20".parse().unwrap());
        h.insert("x-grpc-web", "1".parse().unwrap());
        h.insert("x-user-agent", "grpc-web-javascript/0.1".parse().unwrap());
        h.insert("grpc-timeout", "1S".parse().unwrap());
        h.insert("x-custom", "kept".parse().unwrap());
        request_headers(&mut h, &ct);
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["grpc-timeout"], "1S");
        assert_eq!(h["x-custom"], "kept");
        assert!(!h.contains_key("content-length") && !h.contains_key("x-grpc-web") && !h.contains_key("x-user-agent"));
        let mut r = HeaderMap::new();
        r.insert("content-type", "application/grpc".parse().unwrap());
        r.insert("content-length", "7".parse().unwrap());
        response_headers(&mut r, &ct);
        assert_eq!(r["content-type"], "application/grpc-web-text+proto");
        assert!(!r.contains_key("content-length"));
        assert!(!is_trailers_only(&r));
        r.insert("grpc-status", "5".parse().unwrap());
        assert!(is_trailers_only(&r));
        assert_eq!(synthesized_status(503).code(), Code::Unavailable);
    }

    /// The trailer frame round-trips, names lower-case, and decodes through the frame decoder.
    #[test]
    fn trailer_frame_round_trip() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "5".parse().unwrap());
        t.insert("grpc-message", "no%20shelf".parse().unwrap());
        t.append("x-multi", "a".parse().unwrap());
        t.append("x-multi", "b".parse().unwrap());
        let f = encode_trailers(&t);
        assert_eq!(f[0], 0x80);
        assert_eq!(&f[5..], b"grpc-status: 5\r\ngrpc-message: no%20shelf\r\nx-multi: a\r\nx-multi: b\r\n");
        let mut d = FrameDecoder::grpc_web(1024);
        d.push(&f);
        let Some(Frame::Trailers(block)) = d.next_frame().unwrap() else { panic!("no trailer frame") };
        assert_eq!(decode_trailer_block(&block).unwrap(), t);
        // What other implementations send: no space, mixed case, bare \n, no final newline.
        let h = decode_trailer_block(b"Grpc-Status:0\nGrpc-Message: ok").unwrap();
        assert_eq!(h["grpc-status"], "0");
        assert_eq!(h["grpc-message"], "ok");
        assert_eq!(decode_trailer_block(b"grpc-status 0\r\n").unwrap_err().line, 1);
        assert_eq!(decode_trailer_block(b"ok: 1\r\nbad name: 2\r\n").unwrap_err().line, 2);
    }

    /// A text body of several chunks, each padded on its own, decodes whatever the cut points.
    #[test]
    fn base64_with_padding_per_chunk_any_boundaries() {
        let parts: [&[u8]; 4] = [b"\x00\x00\x00\x00\x05hello", b"x", b"yz", b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n"];
        let text: Vec<u8> = parts.iter().flat_map(|p| encode_text_chunk(p).to_vec()).collect();
        assert!(text.windows(2).any(|w| w[0] == b'=' && w[1] != b'='), "padding in the middle");
        let want: Vec<u8> = parts.concat();
        for size in 1..=text.len() {
            let mut d = Base64Decoder::new();
            let mut got = Vec::new();
            for c in text.chunks(size) {
                got.extend_from_slice(&d.push(c).unwrap());
            }
            d.finish().unwrap();
            assert_eq!(got, want, "chunk size {size}");
        }
    }

    /// Invalid characters, misplaced padding and a cut group are errors with their position.
    #[test]
    fn base64_errors() {
        let mut d = Base64Decoder::new();
        assert_eq!(d.push(b"AAAA*AAA"), Err(Base64Error::Invalid(4)));
        let mut d = Base64Decoder::new();
        assert!(d.push(b"A=AA").is_err());
        let mut d = Base64Decoder::new();
        d.push(b"AAAAAA").unwrap();
        assert_eq!(d.finish(), Err(Base64Error::Truncated(2)));
        let mut d = Base64Decoder::new();
        assert_eq!(d.push(b"QQ=").unwrap(), Bytes::new());
        assert_eq!(d.push(b"=").unwrap(), Bytes::from_static(b"A"));
    }

    /// The two translators: binary passes through, text is base64 both ways, the trailer frame
    /// ends the response, and a response without status ends with UNKNOWN.
    #[test]
    fn translators() {
        let text = WebContentType::parse("application/grpc-web-text").unwrap();
        let msg = encode_message(b"req", false).unwrap();
        let mut rq = RequestTranslator::new(&text);
        let enc = encode_text_chunk(&msg);
        let (a, b) = enc.split_at(3);
        let mut up = rq.data(Bytes::copy_from_slice(a)).unwrap().to_vec();
        up.extend_from_slice(&rq.data(Bytes::copy_from_slice(b)).unwrap());
        rq.end().unwrap();
        assert_eq!(up, msg.to_vec());

        let mut rs = ResponseTranslator::new(&text);
        let body = rs.data(msg.clone());
        assert_eq!(body, encode_text_chunk(&msg));
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let end = rs.end(Some(&t));
        let mut d = Base64Decoder::new();
        let raw = d.push(&end).unwrap();
        assert_eq!(raw, encode_trailers(&t));

        let bin = WebContentType::parse("application/grpc-web+proto").unwrap();
        let mut rs = ResponseTranslator::new(&bin);
        assert_eq!(rs.data(msg.clone()), msg);
        let end = rs.end(None);
        let block = decode_trailer_block(&end[5..]).unwrap();
        assert_eq!(block["grpc-status"], "2");
        let mut rq = RequestTranslator::new(&bin);
        assert_eq!(rq.data(msg.clone()).unwrap(), msg);
    }
}
