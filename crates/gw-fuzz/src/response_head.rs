//! `response_head`: arbitrary bytes into the HTTP/1.1 client's response-head parser
//! (`h1::parse_head`), for requests made with `GET`, `POST` and `HEAD`.
//!
//! Oracle, for an accepted head:
//! * the status is final (interim `1xx` are skipped, `101` is refused), the head is within the
//!   field limit, and "more bytes needed" only below the head-size limit;
//! * framing follows RFC 9112 §6.3: no body after `HEAD`, `204` and `304`; chunked only on
//!   HTTP/1.1 and never with a length; a length is what every `Content-Length` passed on says;
//!   without either, the body runs to the close;
//! * hop-by-hop fields (`Connection` and what it names, `Keep-Alive`, `Proxy-Connection`, `TE`,
//!   `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`) are not passed on;
//! * the raw lines written out on the plain proxy path are well-formed field lines that say
//!   exactly what the field map says;
//! * re-encoded (status, version, fields passed on, the framing and connection fields the
//!   parser consumed) and parsed again, it means the same;
//! * `GET` and `POST` read it identically; `HEAD` reads the same status and fields, and keeps
//!   the connection only if `GET` would.

use bytes::BytesMut;
use gw_proxy::fuzzing::{BodyFraming, MAX_RESPONSE_FIELDS, MAX_RESPONSE_HEAD, ResponseHead, parse_response_head};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};

use crate::rfc::{field_line, show};

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Incomplete,
    Refused,
    Accepted(Meaning),
}

#[derive(Debug, PartialEq, Eq)]
struct Meaning {
    status: StatusCode,
    version: Version,
    /// Fields passed on, without `Content-Length` (its spelling may change; its value is in
    /// `framing` or checked separately).
    fields: Vec<(String, Vec<u8>)>,
    framing: BodyFraming,
    keep_alive: bool,
    /// Bytes consumed.
    used: usize,
}

fn meaning(h: &ResponseHead, used: usize) -> Meaning {
    Meaning {
        status: h.status,
        version: h.version,
        fields: h
            .headers
            .iter()
            .filter(|(n, _)| **n != header::CONTENT_LENGTH)
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        framing: h.framing,
        keep_alive: h.keep_alive,
        used,
    }
}

/// The agreed value of the `Content-Length` fields passed on (every element the same digits).
fn content_length(h: &HeaderMap, w: &dyn Fn() -> String) -> Option<u64> {
    let mut length = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for e in v.as_bytes().split(|&b| b == b',') {
            let e = e.trim_ascii();
            let n = std::str::from_utf8(e)
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok());
            let Some(n) = n else { panic!("Content-Length {:?} passed on: {}", show(v.as_bytes()), w()) };
            assert!(length.is_none_or(|l| l == n), "disagreeing Content-Length passed on: {}", w());
            length = Some(n);
        }
    }
    length
}

/// The head as an upstream would send it again: the fields passed on, plus the framing and
/// connection fields the parser consumed.
fn encode(h: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(if h.version == Version::HTTP_10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(h.status.as_str().as_bytes());
    out.extend_from_slice(b" R\r\n");
    for (n, v) in &h.headers {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if h.framing == BodyFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !h.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if h.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The raw lines are field lines ending in CRLF, and say what the map says (less
/// `Content-Length`, which the server writes itself).
fn check_raw_lines(lines: &[u8], h: &ResponseHead, w: &dyn Fn() -> String) {
    let mut from_lines = HeaderMap::new();
    let mut rest = lines;
    while !rest.is_empty() {
        let Some(end) = rest.windows(2).position(|p| p == b"\r\n") else {
            panic!("raw lines {:?} do not end in CRLF: {}", show(lines), w())
        };
        let line = &rest[..end];
        rest = &rest[end + 2..];
        let Some((n, v)) = field_line(line) else { panic!("raw line {:?} is not a field line: {}", show(line), w()) };
        let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) else {
            panic!("raw line {:?} does not fit a field map: {}", show(line), w())
        };
        assert!(
            n != header::CONTENT_LENGTH && !HOP_BY_HOP.contains(&n.as_str()),
            "raw line {:?} passed on: {}",
            show(line),
            w()
        );
        from_lines.append(n, v);
    }
    let mut map = h.headers.clone();
    map.remove(header::CONTENT_LENGTH);
    assert_eq!(from_lines, map, "raw lines {:?} and the field map differ: {}", show(lines), w());
}

fn check(data: &[u8], method: &Method) -> Outcome {
    let w = || format!("{method} {}", show(data));
    let mut buf = BytesMut::from(data);
    let h = match parse_response_head(&mut buf, method) {
        Ok(None) => {
            assert!(buf.len() < MAX_RESPONSE_HEAD, "more bytes wanted past the head limit: {}", w());
            return Outcome::Incomplete;
        }
        Err(_) => return Outcome::Refused,
        Ok(Some(h)) => h,
    };
    let used = data.len() - buf.len();
    assert_eq!(&buf[..], &data[data.len() - buf.len()..], "the bytes after the head changed: {}", w());
    let code = h.status.as_u16();
    assert!(code >= 200, "interim status {code} returned as final: {}", w());
    assert!(h.headers.len() <= MAX_RESPONSE_FIELDS, "{} fields passed on: {}", h.headers.len(), w());
    for n in HOP_BY_HOP {
        assert!(!h.headers.contains_key(n), "hop-by-hop field {n} passed on: {}", w());
    }
    let length = content_length(&h.headers, &w);
    let no_body = *method == Method::HEAD || code == 204 || code == 304;
    match h.framing {
        BodyFraming::None => assert!(no_body || length == Some(0), "no body without a reason: {}", w()),
        BodyFraming::Length(n) => assert!(!no_body && length == Some(n) && n > 0, "length {n}: {}", w()),
        BodyFraming::Chunked => {
            assert!(!no_body && length.is_none() && h.version == Version::HTTP_11, "chunked: {}", w());
        }
        BodyFraming::UntilClose => assert!(!no_body && length.is_none(), "read until close: {}", w()),
    }
    if let Some(lines) = &h.raw_lines {
        check_raw_lines(lines, &h, &w);
    }

    let m = meaning(&h, used);
    let again = encode(&h);
    let mut buf2 = BytesMut::from(&again[..]);
    match parse_response_head(&mut buf2, method) {
        Ok(Some(h2)) => {
            assert!(buf2.is_empty(), "re-encoded head not consumed exactly: {}", show(&again));
            assert_eq!(
                Meaning { used, ..meaning(&h2, again.len()) },
                m,
                "re-encoded head means something else: {} -> {}",
                w(),
                show(&again)
            );
            assert_eq!(content_length(&h2.headers, &w), length, "re-encoded Content-Length: {}", show(&again));
        }
        Err(e) => {
            // Re-encoding can only exceed the size limit (`name:value` gains a space), or the
            // field limit when it adds the framing fields the parser consumed (`connection`,
            // `transfer-encoding`) to a head that passed on the most fields allowed.
            let added = usize::from(h.framing == BodyFraming::Chunked)
                + usize::from(!h.keep_alive || h.version == Version::HTTP_10);
            assert!(
                again.len() > MAX_RESPONSE_HEAD || h.headers.len() + added > MAX_RESPONSE_FIELDS,
                "re-encoded head {} refused ({e}); original {}",
                show(&again),
                w()
            );
        }
        Ok(None) => panic!("re-encoded head {} incomplete; original {}", show(&again), w()),
    }
    Outcome::Accepted(m)
}

/// The fuzz target.
pub fn response_head(data: &[u8]) {
    let get = check(data, &Method::GET);
    let post = check(data, &Method::POST);
    assert_eq!(get, post, "GET and POST read the response differently: {}", show(data));
    let head = check(data, &Method::HEAD);
    match (&get, &head) {
        (Outcome::Accepted(g), Outcome::Accepted(h)) => {
            assert_eq!(
                (g.status, g.version, &g.fields, g.used),
                (h.status, h.version, &h.fields, h.used),
                "HEAD reads the head differently: {}",
                show(data)
            );
            // A HEAD response that announces a body may close its connection (stray body bytes
            // would be read as the next response); it never keeps one a GET would close.
            assert!(!h.keep_alive || g.keep_alive, "HEAD keeps a connection GET closes: {}", show(data));
        }
        (g, h) => assert_eq!(g, h, "HEAD reads the response differently: {}", show(data)),
    }
}
