//! Upstream response heads, as pure functions (no IO): the strict HTTP/1.1 response-head
//! parser ([`parse_head`]: limits, hop-by-hop fields, framing and connection reuse read off the
//! fields), and [`RawFields`], the response's fields kept as the bytes received for the plain
//! path. Field helpers shared with the request parser (`field_ranges`, `fold_content_length`).

use std::fmt;
use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::framing::{Chunk, Framing};

/// Largest response head (status line and fields) accepted from an upstream.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head.
pub(crate) const MAX_FIELDS: usize = 100;

/// A malformed or unacceptable response from the upstream.
#[derive(Debug)]
pub(crate) struct Malformed(pub(crate) &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid response from upstream: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

pub(crate) struct ParsedHead {
    pub(crate) parts: http::response::Parts,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    /// The fields passed on, when not in `parts.headers`.
    pub(crate) raw: Option<RawFields>,
}

/// What a response field is to the proxy, from its name (any case).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    ContentLength,
    TransferEncoding,
    Connection,
    /// Hop-by-hop, dropped: `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`,
    /// `Proxy-Authorization`, `TE`, `Upgrade`.
    HopByHop,
    Date,
    Other,
}

fn field_kind(name: &[u8]) -> FieldKind {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        2 if is("te") => FieldKind::HopByHop,
        4 if is("date") => FieldKind::Date,
        7 if is("upgrade") => FieldKind::HopByHop,
        10 if is("connection") => FieldKind::Connection,
        10 if is("keep-alive") => FieldKind::HopByHop,
        14 if is("content-length") => FieldKind::ContentLength,
        16 if is("proxy-connection") => FieldKind::HopByHop,
        17 if is("transfer-encoding") => FieldKind::TransferEncoding,
        18 if is("proxy-authenticate") => FieldKind::HopByHop,
        19 if is("proxy-authorization") => FieldKind::HopByHop,
        _ => FieldKind::Other,
    }
}

/// An upstream response's header fields as bytes, one `name: value` line each as received,
/// CRLF-terminated (hop-by-hop fields and `Content-Length` left out), until something needs them
/// in a map.
///
/// On the plain proxy path nothing does: the HTTP/1.1 server writes these lines out as they
/// are, which spares a header map per response (names parsed and looked up, values validated a
/// second time, hashing, dropping), about 2,000 instructions for a response of five fields.
/// Plugins, HTTP/2 clients and header edits see the fields in the map (the response head's
/// `head::Fields` moves them there). The bytes were validated by the parser with the rules the
/// map applies (token names; values without control bytes other than tab). Fields the gateway
/// sets on the plain path (its request id) may follow as lines of their own ([`RawFields::push`]).
pub(crate) struct RawFields {
    lines: Vec<u8>,
    /// Where the lines the gateway added begin (`lines.len()` when there are none).
    added: usize,
    /// `Content-Length`, folded (the server writes the framing itself).
    pub(crate) content_length: Option<u64>,
    /// The upstream sent a `Date` (among the lines).
    pub(crate) date: bool,
}

impl RawFields {
    #[cfg(test)]
    pub(crate) fn from_lines(lines: &[u8], content_length: Option<u64>, date: bool) -> RawFields {
        RawFields { lines: lines.to_vec(), added: lines.len(), content_length, date }
    }

    /// The lines, each ending in CRLF: the upstream's, then those the gateway added.
    pub(crate) fn lines(&self) -> (&[u8], &[u8]) {
        self.lines.split_at(self.added)
    }

    /// Add a field as a line after the others. Not for the fields the encoder reads
    /// (`Content-Length`, `Transfer-Encoding`, `Connection`, `Date`): those go in the map.
    pub(crate) fn push(&mut self, name: &HeaderName, value: &HeaderValue) {
        super::put_field(&mut self.lines, name, value);
    }

    /// `(name, value)` of each line (lines are found with `memchr`: this also runs on the plain
    /// path, for the request-id check).
    fn fields(lines: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = lines;
        std::iter::from_fn(move || {
            loop {
                let end = memchr::memchr(b'\n', rest)?;
                let line = &rest[..end];
                rest = &rest[end + 1..];
                // Every line is `name:value\r\n` (written by the parser); others are skipped.
                let Some(line) = line.strip_suffix(b"\r") else { continue };
                let Some(colon) = memchr::memchr(b':', line) else { continue };
                return Some((&line[..colon], line[colon + 1..].trim_ascii_start()));
            }
        })
    }

    /// Whether a field of this name is among the lines.
    pub(crate) fn contains(&self, name: &HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        Self::fields(&self.lines).any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Put the fields into `map`, before the ones it already holds: the upstream's, its
    /// `Content-Length`, then the lines the gateway added (the order the encoder writes).
    pub(crate) fn merge_into(self, map: &mut HeaderMap) {
        let added = std::mem::replace(map, HeaderMap::with_capacity(map.len() + 8));
        let put = |map: &mut HeaderMap, lines: &[u8]| {
            for (n, v) in Self::fields(lines) {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                    map.append(n, v);
                }
            }
        };
        let (upstream, pushed) = self.lines();
        put(map, upstream);
        if let Some(l) = self.content_length {
            map.append(header::CONTENT_LENGTH, HeaderValue::from(l));
        }
        put(map, pushed);
        let mut last: Option<HeaderName> = None;
        for (k, v) in added {
            if k.is_some() {
                last = k;
            }
            if let Some(k) = &last {
                map.append(k.clone(), v);
            }
        }
    }
}

/// Record where each parsed field's name and value lie in `buf` (offsets, so that the values
/// can later be sliced from `buf` once it is frozen). Request and response parsers share it.
pub(crate) fn field_ranges(buf: &[u8], fields: &[httparse::Header<'_>], ranges: &mut Vec<[u32; 4]>) {
    let base = buf.as_ptr() as usize;
    ranges.clear();
    ranges.extend(fields.iter().map(|h| {
        [
            (h.name.as_ptr() as usize - base) as u32,
            h.name.len() as u32,
            (h.value.as_ptr() as usize - base) as u32,
            h.value.len() as u32,
        ]
    }));
}

/// Fold one `Content-Length` field value (a comma list) into `length`: every element must be
/// digits (at most 19) and agree with what was seen before.
pub(crate) fn fold_content_length(v: &[u8], length: &mut Option<u64>) -> Result<(), &'static str> {
    for v in v.split(|&b| b == b',') {
        let v = v.trim_ascii();
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err("invalid Content-Length");
        }
        let v: u64 = v.iter().fold(0, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != v) {
            return Err("conflicting Content-Length values");
        }
        *length = Some(v);
    }
    Ok(())
}

/// Parse a final response head from `buf` (interim `1xx` heads are consumed and skipped).
/// `Ok(None)`: more bytes needed. `ranges` is scratch space kept with the connection.
///
/// Hop-by-hop fields (RFC 9110 §7.6.1: `Connection` and the fields it names, `Keep-Alive`,
/// `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Transfer-Encoding`,
/// `Upgrade`) are read for framing and left out of the returned head.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    ranges: &mut Vec<[u32; 4]>,
    method: &Method,
) -> Result<Option<ParsedHead>, Malformed> {
    loop {
        let mut uninit = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut []);
        let status =
            httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, &buf[..], &mut uninit);
        let len = match status {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buf.len() >= MAX_HEAD {
                    return Err(Malformed("response head too large"));
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(Malformed("too many header fields")),
            Err(_) => return Err(Malformed("malformed response head")),
        };
        if len > MAX_HEAD {
            return Err(Malformed("response head too large"));
        }
        let code = resp.code.unwrap_or(0);
        let version = if resp.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(Malformed("unexpected 101 Switching Protocols"));
            }
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| Malformed("invalid status code"))?;
        // Where each field's name and value lie (the parsed slices borrow `buf`, which is split
        // off and frozen next so that values can share it).
        field_ranges(buf, resp.headers, ranges);

        let head = buf.split_to(len).freeze();
        // One pass: framing and connection management, read off the raw names, and the fields
        // passed on copied out as lines. If `Connection` names fields to drop (rare), the lines
        // are discarded and the map path below takes over.
        let (mut length, mut chunked) = (None::<u64>, false);
        let (mut close, mut keep_alive_token, mut date) = (false, false, false);
        let mut named: Vec<HeaderName> = Vec::new();
        // (Room for a line the gateway adds, its request id, without growing.)
        let mut lines = Vec::with_capacity(len + 64);
        for &[ns, nl, vs, vl] in ranges.iter() {
            let (ns, nl, vs, vl) = (ns as usize, nl as usize, vs as usize, vl as usize);
            let v = &head[vs..vs + vl];
            match field_kind(&head[ns..ns + nl]) {
                FieldKind::ContentLength => {
                    fold_content_length(v, &mut length).map_err(Malformed)?;
                    continue;
                }
                FieldKind::TransferEncoding => {
                    if chunked || !v.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                        return Err(Malformed("unsupported Transfer-Encoding"));
                    }
                    chunked = true;
                    continue;
                }
                FieldKind::Connection => {
                    for t in v.split(|&b| b == b',') {
                        let t = t.trim_ascii();
                        if t.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if t.eq_ignore_ascii_case(b"keep-alive") {
                            keep_alive_token = true;
                        } else if let Ok(n) = HeaderName::from_bytes(t) {
                            named.push(n);
                        }
                    }
                    continue;
                }
                FieldKind::HopByHop => continue,
                FieldKind::Date => date = true,
                FieldKind::Other => {}
            }
            // The field as received (`name:`, optional whitespace, the value) and its CRLF in
            // one copy when it ends in CRLF right after the value; else rebuilt.
            let end = vs + vl;
            if vs > ns + nl && head.get(end..end + 2) == Some(b"\r\n") {
                lines.extend_from_slice(&head[ns..end + 2]);
            } else {
                lines.extend_from_slice(&head[ns..ns + nl]);
                lines.extend_from_slice(b": ");
                lines.extend_from_slice(v);
                lines.extend_from_slice(b"\r\n");
            }
        }
        let mut headers = HeaderMap::new();
        let raw = if named.is_empty() {
            Some(RawFields { added: lines.len(), lines, content_length: length, date })
        } else {
            // Room for the fields the gateway adds (request id, plugin headers) without growing.
            headers.reserve(ranges.len() + 2);
            for &[ns, nl, vs, vl] in ranges.iter() {
                let name = &head[ns as usize..(ns + nl) as usize];
                if !matches!(field_kind(name), FieldKind::Other | FieldKind::Date | FieldKind::ContentLength) {
                    continue;
                }
                let name = HeaderName::from_bytes(name).map_err(|_| Malformed("invalid field name"))?;
                // Content-Length frames the body the client gets: never dropped.
                if name != header::CONTENT_LENGTH && named.contains(&name) {
                    continue;
                }
                let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..(vs + vl) as usize))
                    .map_err(|_| Malformed("invalid field value"))?;
                headers.append(name, value);
            }
            None
        };
        if chunked && (length.is_some() || version == Version::HTTP_10) {
            return Err(Malformed("Transfer-Encoding with Content-Length or on HTTP/1.0"));
        }
        let no_body = *method == Method::HEAD || code == 204 || code == 304;
        // A response without a body that announces one may be followed by that body anyway;
        // where it would end is unknown, so the connection is not used again.
        let stray = no_body && (chunked || length.is_some_and(|l| l > 0));
        let framing = if no_body {
            Framing::Done
        } else if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            match length {
                Some(0) => Framing::Done,
                Some(l) => Framing::Length(l),
                None => Framing::Close,
            }
        };
        let keep_alive = !close && !stray && (version == Version::HTTP_11 || keep_alive_token);
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some(ParsedHead { parts, framing, keep_alive, raw }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head's parts with the fields kept as bytes moved into the map.
    fn full(h: ParsedHead) -> http::response::Parts {
        let mut parts = h.parts;
        if let Some(raw) = h.raw {
            raw.merge_into(&mut parts.headers);
        }
        parts
    }

    fn head(buf: &[u8], method: &Method) -> Result<Option<ParsedHead>, Malformed> {
        parse_head(&mut BytesMut::from(buf), &mut Vec::new(), method)
    }

    #[test]
    fn framing_rules() {
        let ok = |b: &[u8]| head(b, &Method::GET).map(|h| h.map(|h| (h.framing, h.keep_alive)));
        assert!(matches!(ok(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"), Ok(Some((Framing::Length(5), true)))));
        assert!(matches!(ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"), Ok(Some((Framing::Length(5), true)))));
        assert!(ok(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n").is_err());
        assert!(ok(b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n").is_err());
        assert!(ok(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(ok(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n").is_err());
        assert!(ok(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(matches!(
            ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(Some((Framing::Chunked(_), true)))
        ));
        assert!(matches!(ok(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(Some((Framing::Close, true)))));
        assert!(matches!(ok(b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"), Ok(Some((Framing::Done, _)))));
        assert!(matches!(
            ok(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n"),
            Ok(Some((_, false)))
        ));
        assert!(matches!(ok(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"), Ok(Some((_, false)))));
        assert!(matches!(
            ok(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n"),
            Ok(Some((_, true)))
        ));
        assert!(ok(b"HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n").is_err());
        assert!(ok(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
        assert!(matches!(ok(b"HTTP/1.1 200 OK\r\ncontent-le"), Ok(None)));
        // HEAD: no body whatever the length says.
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", &Method::HEAD).map(|h| h.map(|h| h.framing)),
            Ok(Some(Framing::Done))
        ));
    }

    /// Hop-by-hop fields are left out whether the fields stay bytes or go to the map (when
    /// `Connection` names more fields to drop); Content-Length is folded and kept.
    #[test]
    fn hop_by_hop_fields_are_dropped_on_both_paths() {
        let raw = head(
            b"HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 3, 3\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nX-Empty:\r\nX-Sp: \t v \t\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\n\r\n",
            &Method::GET,
        );
        let Ok(Some(h)) = raw else { panic!("head expected") };
        let r = h.raw.as_ref().map(|r| (r.lines().0.to_vec(), r.content_length, r.date));
        assert_eq!(
            r,
            Some((
                b"Server: up\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nX-Empty:\r\nX-Sp: v\r\n".to_vec(),
                Some(3),
                true
            ))
        );
        assert!(h.raw.as_ref().is_some_and(|r| r.contains(&header::SERVER) && !r.contains(&header::CONNECTION)));
        let mut parts = full(h);
        let names: Vec<_> = parts.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, ["server", "date", "x-empty", "x-sp", "content-length"]);
        assert_eq!(parts.headers["x-sp"], "v");
        assert_eq!(parts.headers[header::CONTENT_LENGTH], "3");
        assert_eq!(parts.headers["x-empty"], "");
        // Fields already in the map stay, after the upstream's.
        let mut raw = head(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n", &Method::GET).ok().flatten().and_then(|h| h.raw);
        parts.headers = HeaderMap::new();
        parts.headers.append("x-b", HeaderValue::from_static("2"));
        parts.headers.append("x-b", HeaderValue::from_static("3"));
        if let Some(r) = raw.take() {
            r.merge_into(&mut parts.headers);
        }
        let all: Vec<_> = parts.headers.iter().map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?"))).collect();
        assert_eq!(all, ["x-a=1", "x-b=2", "x-b=3"]);

        let named = head(
            b"HTTP/1.1 200 OK\r\nConnection: x-secret, close\r\nX-Secret: s\r\nX-Kept: k\r\nContent-Length: 0\r\nKeep-Alive: 1\r\n\r\n",
            &Method::GET,
        );
        let Ok(Some(h)) = named else { panic!("head expected") };
        assert!(h.raw.is_none(), "Connection naming a field takes the map path");
        assert!(!h.keep_alive);
        let names: Vec<_> = h.parts.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, ["x-kept", "content-length"]);
    }

    #[test]
    fn interim_responses_are_skipped_and_values_are_kept() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\ncontent-length: 2\r\n\r\nhi"[..],
        );
        let h = parse_head(&mut buf, &mut Vec::new(), &Method::POST).ok().flatten().map(full);
        let Some(parts) = h else { panic!("no head") };
        assert_eq!(parts.status, 201);
        let a: Vec<_> = parts.headers.get_all("x-a").iter().map(|v| v.as_bytes().to_vec()).collect();
        assert_eq!(a, vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(&buf[..], b"hi");
    }

    #[test]
    fn head_limits() {
        let mut big = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert!(head(&big, &Method::GET).is_err(), "an unfinished head past the limit");
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            many.extend(format!("x-{i}: v\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert!(head(&many, &Method::GET).is_err());
    }
}
