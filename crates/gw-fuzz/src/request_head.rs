//! `request_head`: arbitrary bytes into the HTTP/1.1 server's request-head parser
//! (`h1server::parse_request`).
//!
//! Oracle, for each of three limit settings (small, the gateway's defaults, above the stack
//! array of fields):
//! * a refusal is one of 400, 414, 431, 505; "more bytes needed" only below the head limit;
//! * an accepted head is within the limits (bytes; fields, where the parser enforces them: from
//!   100 up, the pipeline counts below that), is consumed exactly (the rest of the
//!   input stays buffered), and no prefix of it ending at a line end is accepted;
//! * its framing is one way only: never both `Content-Length` and `Transfer-Encoding`;
//!   `Transfer-Encoding` means exactly one `chunked` on HTTP/1.1; a length is the agreed
//!   value of every `Content-Length` element; keep-alive, upgrade, `100-continue` and `TE:
//!   trailers` follow from the fields as RFC 9112 says (computed here independently); an
//!   upgrade request with a body is never an upgrade (issue 17);
//! * re-encoded (method, target, version, fields) and parsed again it means the same: same
//!   method, target, version, fields, framing, keep-alive, upgrade and other facts;
//! * what a smaller limit accepts, a larger one accepts with the same meaning.

use bytes::BytesMut;
use gw_proxy::fuzzing::{BodyFraming, RequestHead, parse_request};
use http::{Version, header};

use crate::rfc::{list, show};

/// (max head bytes, max fields): small limits, the gateway's defaults, and more fields than
/// the parser keeps on the stack.
pub const LIMITS: [(usize, usize); 3] = [(1024, 8), (32 * 1024, 100), (64 * 1024, 150)];

/// What a parsed head means to the gateway.
#[derive(Debug, PartialEq, Eq)]
struct Meaning {
    method: String,
    target: String,
    version: Version,
    fields: Vec<(String, Vec<u8>)>,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    trailers: bool,
    hosts: usize,
    content_lengths: usize,
    content_length: Option<u64>,
    transfer_encoding: bool,
}

fn meaning(h: &RequestHead) -> Meaning {
    Meaning {
        method: h.method.as_str().to_owned(),
        target: h.uri.to_string(),
        version: h.version,
        fields: h.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
        framing: h.framing,
        keep_alive: h.keep_alive,
        expect_continue: h.expect_continue,
        upgrade: h.upgrade,
        trailers: h.trailers,
        hosts: h.hosts,
        content_lengths: h.content_lengths,
        content_length: h.content_length,
        transfer_encoding: h.transfer_encoding,
    }
}

/// The head as a client would send it again.
fn encode(h: &RequestHead) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(h.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(h.uri.to_string().as_bytes());
    out.extend_from_slice(if h.version == Version::HTTP_10 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
    for (n, v) in &h.headers {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether any element of any `name` field is `token` (any case).
fn has_token(h: &RequestHead, name: &header::HeaderName, token: &[u8]) -> bool {
    h.headers.get_all(name).iter().any(|v| list(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(token)))
}

/// Check what the parser says about the fields against RFC 9112, computed here from the map.
fn check_semantics(h: &RequestHead, wire: &[u8]) {
    let w = || show(wire);
    let v11 = h.version == Version::HTTP_11;
    let cls: Vec<&[u8]> = h.headers.get_all(header::CONTENT_LENGTH).iter().map(|v| v.as_bytes()).collect();
    let tes: Vec<&[u8]> = h.headers.get_all(header::TRANSFER_ENCODING).iter().map(|v| v.as_bytes()).collect();
    assert!(cls.is_empty() || tes.is_empty(), "both Content-Length and Transfer-Encoding accepted: {}", w());
    assert_eq!(h.content_lengths, cls.len(), "Content-Length count: {}", w());
    assert_eq!(h.transfer_encoding, !tes.is_empty(), "Transfer-Encoding fact: {}", w());
    assert_eq!(h.hosts, h.headers.get_all(header::HOST).iter().count(), "Host count: {}", w());
    // Every Content-Length element is the same run of digits.
    let mut length = None;
    for v in &cls {
        for e in v.split(|&b| b == b',') {
            let e = e.trim_ascii();
            assert!(!e.is_empty() && e.iter().all(u8::is_ascii_digit), "Content-Length element {:?}: {}", show(e), w());
            let n: u64 = std::str::from_utf8(e).ok().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
            assert!(length.is_none_or(|l| l == n), "disagreeing Content-Length accepted: {}", w());
            length = Some(n);
        }
    }
    assert_eq!(h.content_length, length, "Content-Length value: {}", w());
    let codings: Vec<&[u8]> = tes.iter().flat_map(|v| list(v)).collect();
    let framing = if !tes.is_empty() {
        assert!(v11, "Transfer-Encoding accepted on HTTP/1.0: {}", w());
        assert!(
            codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked"),
            "Transfer-Encoding other than one chunked accepted: {}",
            w()
        );
        BodyFraming::Chunked
    } else {
        match length {
            None | Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };
    assert_eq!(h.framing, framing, "framing: {}", w());
    let close = has_token(h, &header::CONNECTION, b"close");
    let keep_alive = !close && (v11 || has_token(h, &header::CONNECTION, b"keep-alive"));
    assert_eq!(h.keep_alive, keep_alive, "keep-alive: {}", w());
    // An upgrade needs HTTP/1.1, `Upgrade` and `Connection: upgrade` (RFC 9110 §7.8), and no
    // body (issue 17: the body of an upgrade request is either served as an ordinary request's
    // or refused, never lost or pushed into the tunnel). A server may decline an upgrade; one to
    // a protocol other than `h2c` without a body must be taken (WebSocket).
    let asked = v11 && h.headers.contains_key(header::UPGRADE) && has_token(h, &header::CONNECTION, b"upgrade");
    let no_body = framing == BodyFraming::None;
    if h.upgrade {
        assert!(asked, "upgrade without HTTP/1.1, Upgrade and Connection: upgrade: {}", w());
        assert!(no_body, "an upgrade request with a body treated as an upgrade: {}", w());
    }
    let offers =
        h.headers.get_all(header::UPGRADE).iter().any(|v| list(v.as_bytes()).any(|p| !p.eq_ignore_ascii_case(b"h2c")));
    if asked && no_body && offers {
        assert!(h.upgrade, "an upgrade request not treated as one: {}", w());
    }
    let expect = h
        .headers
        .get_all(header::EXPECT)
        .iter()
        .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"100-continue"));
    assert_eq!(h.expect_continue, expect && v11 && framing != BodyFraming::None, "100-continue: {}", w());
    assert_eq!(h.trailers, has_token(h, &header::TE, b"trailers"), "TE: trailers: {}", w());
}

/// Parse `data` with one limit setting and check it; the meaning when accepted.
fn check_one(data: &[u8], max_head: usize, max_fields: usize) -> Option<Meaning> {
    let w = || show(data);
    let mut buf = BytesMut::from(data);
    let h = match parse_request(&mut buf, max_head, max_fields) {
        Ok(None) => {
            assert!(data.len() <= max_head, "more bytes wanted past the head limit {max_head}: {}", w());
            assert_eq!(buf.len(), data.len(), "an incomplete head consumed bytes: {}", w());
            return None;
        }
        Err(r) => {
            assert!(matches!(r.status.as_u16(), 400 | 414 | 431 | 505), "refused with {}: {}", r.status, w());
            return None;
        }
        Ok(Some(h)) => h,
    };
    let used = data.len() - buf.len();
    assert!(used <= max_head, "accepted a {used}-byte head, limit {max_head}: {}", w());
    assert_eq!(&buf[..], &data[used..], "the bytes after the head changed: {}", w());
    assert!(h.headers.len() <= max_fields, "accepted {} fields, limit {max_fields}: {}", h.headers.len(), w());
    check_semantics(&h, data);

    // No shorter prefix ending at a line end is a complete head.
    for (i, _) in data[..used - 1].iter().enumerate().filter(|&(_, &b)| b == b'\n') {
        let mut p = BytesMut::from(&data[..=i]);
        let r = parse_request(&mut p, max_head, max_fields);
        assert!(
            matches!(r, Ok(None)),
            "the prefix of {} bytes gave {:?}: {}",
            i + 1,
            r.map(|h| h.map(|h| meaning(&h))),
            w()
        );
    }

    // Re-encoded, the same meaning (the re-encoding may be longer: `name:value` gains a space).
    let m = meaning(&h);
    let again = encode(&h);
    let mut buf2 = BytesMut::from(&again[..]);
    match parse_request(&mut buf2, max_head.max(again.len()), max_fields) {
        Ok(Some(h2)) => {
            assert!(buf2.is_empty(), "re-encoded head not consumed exactly: {}", show(&again));
            assert_eq!(meaning(&h2), m, "re-encoded head means something else: {} -> {}", w(), show(&again));
        }
        other => panic!(
            "re-encoded head {} gave {:?} (original {})",
            show(&again),
            other.map(|o| o.map(|h| meaning(&h))),
            w()
        ),
    }
    Some(m)
}

/// The fuzz target.
pub fn request_head(data: &[u8]) {
    let mut smaller: Option<Meaning> = None;
    for (max_head, max_fields) in LIMITS {
        let m = check_one(data, max_head, max_fields);
        if let Some(s) = &smaller {
            assert_eq!(
                m.as_ref(),
                Some(s),
                "a larger limit ({max_head}, {max_fields}) reads the head differently: {}",
                show(data)
            );
        }
        smaller = m;
    }
}
