//! Client request heads, as a pure function (no IO): the strict HTTP/1.1 request-head parser
//! ([`parse_request`]) with the refusals the server answers before the pipeline sees a request
//! (limits, malformed lines, ambiguous framing), and what the server needs to know of a head.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use super::HeadFacts;
use super::framing::{Chunk, Framing};
use super::response::{field_ranges, fold_content_length};

/// Limits of the server, from the gateway's `limits`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// Largest request head (request line and fields).
    pub(crate) max_head: usize,
    /// Most fields in a head.
    pub(crate) max_fields: usize,
}

/// Fields parsed without a heap allocation (more when `max_fields` asks for more).
const FIELDS_ON_STACK: usize = 100;

/// A request refused before the pipeline saw it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) why: &'static str,
}

fn refuse<T>(status: StatusCode, why: &'static str) -> Result<T, Refused> {
    Err(Refused { status, why })
}

fn bad<T>(why: &'static str) -> Result<T, Refused> {
    refuse(StatusCode::BAD_REQUEST, why)
}

/// A parsed request head and what the server needs to know about it.
pub(crate) struct Head {
    pub(crate) parts: http::request::Parts,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
    pub(crate) upgrade: bool,
    /// The client accepts trailers (`TE: trailers`).
    pub(crate) trailers: bool,
    pub(crate) facts: HeadFacts,
}

/// Parse a request head from the start of `buf` and remove it from `buf`. `Ok(None)`: more
/// bytes are needed. `ranges` is scratch space kept with the connection.
pub(crate) fn parse_request(
    buf: &mut BytesMut,
    ranges: &mut Vec<[u32; 4]>,
    s: Settings,
) -> Result<Option<Head>, Refused> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; FIELDS_ON_STACK];
    let mut heap = Vec::new();
    let fields: &mut [MaybeUninit<httparse::Header<'_>>] = if s.max_fields > FIELDS_ON_STACK {
        heap.resize_with(s.max_fields, MaybeUninit::uninit);
        &mut heap
    } else {
        &mut stack[..s.max_fields]
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, &buf[..], fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > s.max_head {
                if memchr::memchr(b'\n', &buf[..]).is_none_or(|i| i > s.max_head) {
                    return refuse(StatusCode::URI_TOO_LONG, "request line too long");
                }
                return refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large");
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields");
        }
        Err(httparse::Error::Version) => {
            return refuse(StatusCode::HTTP_VERSION_NOT_SUPPORTED, "unsupported HTTP version");
        }
        Err(_) => return bad("malformed request head"),
    };
    if len > s.max_head {
        if memchr::memchr(b'\n', &buf[..]).is_none_or(|i| i > s.max_head) {
            return refuse(StatusCode::URI_TOO_LONG, "request line too long");
        }
        return refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large");
    }
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return refuse(StatusCode::HTTP_VERSION_NOT_SUPPORTED, "unsupported HTTP version"),
    };
    let Some(method) = req.method else { return bad("malformed request line") };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| Refused { status: StatusCode::BAD_REQUEST, why: "invalid method" })?;
    let Some(path) = req.path else { return bad("malformed request line") };
    // Where the target and each field lie (the parsed slices borrow `buf`, which is split off
    // and frozen next so that the target and values can share it).
    let target = (path.as_ptr() as usize - buf.as_ptr() as usize, path.len());
    field_ranges(buf, req.headers, ranges);
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1))
        .map_err(|_| Refused { status: StatusCode::BAD_REQUEST, why: "invalid request target" })?;

    // Room for the request id the pipeline adds (a map sized exactly would grow for it).
    let mut headers = HeaderMap::with_capacity(ranges.len() + 2);
    let (mut length, mut te, mut chunked) = (None::<u64>, false, false);
    let (mut hosts, mut content_lengths) = (0, 0);
    let (mut close, mut keep_alive_token, mut upgrade_token, mut has_upgrade) = (false, false, false, false);
    let (mut expect_continue, mut trailers) = (false, false);
    for &[ns, nl, vs, vl] in ranges.iter() {
        let (ns, nl, vs, vl) = (ns as usize, nl as usize, vs as usize, vl as usize);
        let name = HeaderName::from_bytes(&head[ns..ns + nl])
            .map_err(|_| Refused { status: StatusCode::BAD_REQUEST, why: "invalid field name" })?;
        let v = &head[vs..vs + vl];
        if name == header::HOST {
            hosts += 1;
        } else if name == header::CONTENT_LENGTH {
            content_lengths += 1;
            if let Err(why) = fold_content_length(v, &mut length) {
                return bad(why);
            }
        } else if name == header::TRANSFER_ENCODING {
            te = true;
            for coding in v.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|c| !c.is_empty()) {
                if chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                    return bad("unsupported Transfer-Encoding");
                }
                chunked = true;
            }
        } else if name == header::CONNECTION {
            for t in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_token = true;
                }
            }
        } else if name == header::EXPECT {
            expect_continue |= v.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::TE {
            trailers |= v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        } else if name == header::UPGRADE {
            // `h2c` alone is never an upgrade here: a tunnel to an upstream's HTTP/2 server would
            // carry requests the gateway never sees (routing and plugins bypassed).
            has_upgrade |= v.split(|&b| b == b',').map(<[u8]>::trim_ascii).any(|p| !p.eq_ignore_ascii_case(b"h2c"));
        }
        let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl))
            .map_err(|_| Refused { status: StatusCode::BAD_REQUEST, why: "invalid field value" })?;
        headers.append(name, value);
    }
    if te {
        if length.is_some() {
            return bad("both Content-Length and Transfer-Encoding");
        }
        if version == Version::HTTP_10 {
            return bad("Transfer-Encoding on HTTP/1.0");
        }
        if !chunked {
            return bad("unsupported Transfer-Encoding");
        }
    }
    let framing = if chunked {
        Framing::Chunked(Chunk::Size)
    } else {
        match length {
            None | Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
        }
    };
    let v11 = version == Version::HTTP_11;
    let has_body = !matches!(framing, Framing::Done);
    // An upgrade request with a body is served as an ordinary request, its `Upgrade` ignored
    // (RFC 9110 §7.8 lets a server ignore it): the body goes upstream framed as received, and
    // nothing of it can end up in a tunnel (`curl --http2 -d` over clear text sends such
    // requests).
    let upgrade = has_upgrade && upgrade_token && v11 && !has_body;
    let facts = HeadFacts { hosts, content_lengths, content_length: length, transfer_encoding: te, upgrade };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        framing,
        keep_alive: !close && (v11 || keep_alive_token),
        expect_continue: expect_continue && v11 && has_body,
        upgrade,
        trailers,
        facts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings { max_head: 8192, max_fields: 100 };

    fn parse(wire: &[u8]) -> Result<Option<Head>, Refused> {
        let mut buf = BytesMut::from(wire);
        parse_request(&mut buf, &mut Vec::new(), S)
    }

    fn status(wire: &[u8]) -> u16 {
        match parse(wire) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(r) => r.status.as_u16(),
        }
    }

    /// Ambiguous or malformed framing is refused; what is accepted is framed one way only.
    #[test]
    fn framing_rules() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", 0),
        ];
        for (wire, want) in cases {
            assert_eq!(status(wire), *want, "{}", String::from_utf8_lossy(wire));
        }
        let h = parse(b"POST /x?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\n\r\nbody...").unwrap().unwrap();
        assert!(matches!(h.framing, Framing::Length(7)));
        assert_eq!(h.parts.uri, "/x?q=1");
        assert!(h.keep_alive);
        let h = parse(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap().unwrap();
        assert!(matches!(h.framing, Framing::Chunked(_)));
    }

    /// Keep-alive, upgrade, 100-continue and trailer acceptance are read from the head.
    #[test]
    fn connection_semantics() {
        let h = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().unwrap();
        assert!(h.keep_alive);
        let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h =
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap().unwrap();
        assert!(h.upgrade);
        let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap().unwrap();
        assert!(!h.upgrade, "Upgrade without Connection: upgrade");
        let h =
            parse(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n").unwrap().unwrap();
        assert!(h.expect_continue);
        let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").unwrap().unwrap();
        assert!(!h.expect_continue, "nothing to continue without a body");
        let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nTE: gzip, trailers\r\n\r\n").unwrap().unwrap();
        assert!(h.trailers);
        // An upgrade request with a body, or for h2c alone, is an ordinary request.
        for wire in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\nContent-Length: 5\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n",
        ] {
            let h = parse(wire).unwrap().unwrap();
            assert!(!h.upgrade && !h.facts.upgrade, "{}", String::from_utf8_lossy(wire));
        }
        let h = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c, websocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.upgrade);
    }

    /// Limits: head size (431, or 414 when the request line alone is too long) and field count.
    #[test]
    fn head_limits() {
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(status(long_line.as_bytes()), 414);
        // Also when the whole head has arrived.
        let whole = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(whole.as_bytes()), 414);
        let whole = format!("GET / HTTP/1.1\r\nHost: a\r\nx: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(whole.as_bytes()), 431);
        let big_field = format!("GET / HTTP/1.1\r\nx: {}\r\n", "a".repeat(9000));
        assert_eq!(status(big_field.as_bytes()), 431);
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "x: y\r\n".repeat(101));
        assert_eq!(status(many.as_bytes()), 431);
        // A limit below the on-stack array's size is exact too.
        let few = Settings { max_head: 8192, max_fields: 8 };
        let nine = format!("GET / HTTP/1.1\r\n{}\r\n", "x: y\r\n".repeat(9));
        let r = parse_request(&mut BytesMut::from(nine.as_bytes()), &mut Vec::new(), few);
        assert_eq!(r.err().map(|r| r.status.as_u16()), Some(431));
        let eight = format!("GET / HTTP/1.1\r\n{}\r\n", "x: y\r\n".repeat(8));
        assert!(parse_request(&mut BytesMut::from(eight.as_bytes()), &mut Vec::new(), few).is_ok_and(|h| h.is_some()));
        let s = Settings { max_head: 8192, max_fields: 150 };
        let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{}\r\n", "x: y\r\n".repeat(150)).as_bytes());
        assert!(parse_request(&mut buf, &mut Vec::new(), s).unwrap().is_some());
    }

    /// Field values and the target share the read buffer; the rest stays for the next request.
    #[test]
    fn pipelined_bytes_stay_buffered() {
        let mut buf = BytesMut::from(&b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
        let mut ranges = Vec::new();
        let a = parse_request(&mut buf, &mut ranges, S).unwrap().unwrap();
        assert_eq!(a.parts.uri, "/a");
        let b = parse_request(&mut buf, &mut ranges, S).unwrap().unwrap();
        assert_eq!(b.parts.uri, "/b");
        assert!(buf.is_empty());
    }

    /// Arbitrary bytes and mutations of valid heads never panic the parser, and whatever it
    /// accepts is framed one way.
    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let base: &[u8] =
            b"POST /p?q HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n";
        let alphabet = b"\r\n :,;0123456789abcdefHTP/.\t\x00\x7f\xff-chunkedContent-LengthTransfer-Encoding";
        for i in 0..20_000 {
            let mut wire = if i % 2 == 0 { base.to_vec() } else { Vec::new() };
            let edits = 1 + next() % 8;
            for _ in 0..edits {
                let b = alphabet[(next() % alphabet.len() as u64) as usize];
                if wire.is_empty() || next() % 3 == 0 {
                    let at = (next() % (wire.len() as u64 + 1)) as usize;
                    wire.insert(at, b);
                } else {
                    let at = (next() % wire.len() as u64) as usize;
                    wire[at] = b;
                }
            }
            if let Ok(Some(h)) = parse(&wire) {
                let cl = h.parts.headers.contains_key(header::CONTENT_LENGTH);
                let te = h.parts.headers.contains_key(header::TRANSFER_ENCODING);
                assert!(!(cl && te), "accepted both framings: {:?}", String::from_utf8_lossy(&wire));
            }
        }
    }

    /// A stream of pipelined heads gives the same requests however the bytes arrive.
    #[test]
    fn heads_are_independent_of_read_boundaries() {
        let wire = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /c HTTP/1.0\r\n\r\n";
        let mut x: u64 = 7;
        for _ in 0..200 {
            let (mut buf, mut got, mut at) = (BytesMut::new(), Vec::new(), 0);
            let mut ranges = Vec::new();
            while at < wire.len() || !buf.is_empty() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let n = (1 + (x >> 33) % 20) as usize;
                let n = n.min(wire.len() - at);
                buf.extend_from_slice(&wire[at..at + n]);
                at += n;
                while let Some(h) = parse_request(&mut buf, &mut ranges, S).unwrap() {
                    got.push(h.parts.uri.to_string());
                }
                if at == wire.len() && !buf.is_empty() {
                    panic!("left over: {buf:?}");
                }
            }
            assert_eq!(got, ["/a", "/b", "/c"]);
        }
    }
}
