//! Body framing of HTTP/1.1 messages, both directions, as pure functions on a buffer (no IO):
//! how a body is delimited ([`Framing`]), the strict chunked decoder ([`next_frame`]: CRLF line
//! ends, at most 16 hex digits, extensions per RFC 9112 §7.1.1, bounded trailers) and number
//! encoding for heads and chunk sizes. The HTTP/1.1 client reads response bodies and the server
//! request bodies with the same decoder; the fuzz targets drive it directly.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;
/// Most trailer fields accepted.
const MAX_TRAILER_FIELDS: usize = 32;

/// How a body is delimited (a response's here, a request's in `h1server`).
pub(crate) enum Framing {
    /// Nothing more to read.
    Done,
    /// Bytes still to read.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
}

#[derive(Clone, Copy)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data: bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

pub(crate) enum Step {
    Frame(Frame<Bytes>),
    /// The body ended (no more frames).
    End,
    More,
}

/// Take the next frame from what is buffered.
pub(crate) fn next_frame(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, &'static str> {
    loop {
        match framing {
            Framing::Done => return Ok(Step::End),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = (*left).min(buf.len() as u64) as usize;
                *left -= n as u64;
                let data = buf.split_to(n).freeze();
                if *left == 0 {
                    *framing = Framing::Done;
                }
                return Ok(Step::Frame(Frame::data(data)));
            }
            Framing::Close => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                return Ok(Step::Frame(Frame::data(buf.split().freeze())));
            }
            Framing::Chunked(c) => match *c {
                Chunk::Size => {
                    let Some(nl) = memchr::memchr(b'\n', buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err("chunk-size line too long");
                        }
                        return Ok(Step::More);
                    };
                    if nl > MAX_CHUNK_LINE {
                        return Err("chunk-size line too long");
                    }
                    let size = parse_chunk_line(&buf[..nl])?;
                    buf.advance(nl + 1);
                    *c = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    *c = if left == n as u64 { Chunk::DataEnd } else { Chunk::Data(left - n as u64) };
                    return Ok(Step::Frame(Frame::data(data)));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    buf.advance(2);
                    *c = Chunk::Size;
                }
                Chunk::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *framing = Framing::Done;
                        return Ok(Step::End);
                    }
                    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                    let (len, trailers) = match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, _))) if len > MAX_TRAILERS => {
                            return Err("trailer section too large");
                        }
                        // httparse also takes a bare LF as a line end; a body's framing is
                        // CRLF only (RFC 9112 §7.1), here as everywhere else in the decoder.
                        Ok(httparse::Status::Complete((len, _)))
                            if memchr::memchr_iter(b'\n', &buf[..len]).any(|i| i == 0 || buf[i - 1] != b'\r') =>
                        {
                            return Err("trailer section line not ended by CRLF");
                        }
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut map = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                let name =
                                    HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| "invalid trailer field")?;
                                let value = HeaderValue::from_bytes(f.value).map_err(|_| "invalid trailer field")?;
                                map.append(name, value);
                            }
                            (len, map)
                        }
                        Ok(httparse::Status::Partial) => {
                            if buf.len() > MAX_TRAILERS {
                                return Err("trailer section too large");
                            }
                            return Ok(Step::More);
                        }
                        Err(_) => return Err("malformed trailer section"),
                    };
                    buf.advance(len);
                    *framing = Framing::Done;
                    return Ok(Step::Frame(Frame::trailers(trailers)));
                }
            },
        }
    }
}

/// Parse a chunk-size line (without its LF): hex digits, optional extensions, CR.
fn parse_chunk_line(line: &[u8]) -> Result<u64, &'static str> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err("chunk-size line not ended by CRLF");
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err("invalid chunk size");
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = (size << 4) | u64::from(d);
    }
    check_chunk_ext(&line[digits..])?;
    Ok(size)
}

/// Check what follows the chunk size against the chunk-extension grammar of RFC 9112 §7.1.1:
/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`, where BWS is spaces and
/// tabs. Nothing else may follow the size (not even whitespace alone).
pub(crate) fn check_chunk_ext(mut s: &[u8]) -> Result<(), &'static str> {
    fn bws(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &s[n..]
    }
    fn token(s: &[u8]) -> Result<&[u8], &'static str> {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        if n == 0 {
            return Err("invalid chunk extension");
        }
        Ok(&s[n..])
    }
    fn quoted(s: &[u8]) -> Result<&[u8], &'static str> {
        // After the opening quote: qdtext or quoted-pair, up to the closing quote.
        let mut i = 0;
        while let Some(&b) = s.get(i) {
            match b {
                b'"' => return Ok(&s[i + 1..]),
                b'\\' => match s.get(i + 1) {
                    Some(&q) if q == b'\t' || (q >= 0x20 && q != 0x7f) => i += 2,
                    _ => return Err("invalid chunk extension"),
                },
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
                _ => return Err("invalid chunk extension"),
            }
        }
        Err("invalid chunk extension")
    }
    if s.is_empty() {
        return Ok(());
    }
    if !bws(s).starts_with(b";") {
        return Err("invalid chunk size");
    }
    while !s.is_empty() {
        s = bws(s);
        let Some(rest) = s.strip_prefix(b";") else { return Err("invalid chunk extension") };
        s = token(bws(rest))?;
        let after = bws(s);
        if let Some(v) = after.strip_prefix(b"=") {
            let v = bws(v);
            s = match v.strip_prefix(b"\"") {
                Some(q) => quoted(q)?,
                None => token(v)?,
            };
        }
    }
    Ok(())
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

/// Append `n` in decimal (`radix` 10) or hexadecimal (16), without an allocation.
pub(crate) fn put_num(out: &mut Vec<u8>, mut n: u64, radix: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&b[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::response::{MAX_FIELDS, parse_head};
    use http::Method;

    #[test]
    fn chunked_decoding() {
        let wire = b"4;ext=\"v\"\r\nRust\r\n0\r\ngrpc-status: 0\r\n\r\n";
        let (data, trailers) = decode_in_pieces(wire, &mut || usize::MAX).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(data, b"Rust");
        assert_eq!(trailers.and_then(|t| t.get("grpc-status").cloned()), Some(HeaderValue::from_static("0")));

        for bad in [
            &b"4\nRust\r\n"[..],
            b"4\r\nRustX\r\n",
            b"x\r\n",
            b"11111111111111111\r\n",
            b"4 x\r\n",
            b"4;a\0\r\n",
            // Bare LF in the trailer section or as its end.
            b"0\r\nx: y\n\r\n",
            b"0\r\n\n",
            b"0\r\nx: y\r\n\n",
        ] {
            let mut framing = Framing::Chunked(Chunk::Size);
            let mut buf = BytesMut::from(bad);
            let mut failed = false;
            for _ in 0..4 {
                match next_frame(&mut framing, &mut buf) {
                    Err(_) => {
                        failed = true;
                        break;
                    }
                    Ok(Step::More | Step::End) => break,
                    Ok(Step::Frame(_)) => {}
                }
            }
            assert!(failed, "{:?} accepted", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_chunk_line(b"fF \t; a=b\r"), Ok(255));
    }

    /// Chunk extensions follow the RFC 9112 grammar; anything else after the size is refused.
    #[test]
    fn chunk_extension_grammar() {
        for ok in [
            &b""[..],
            b";a",
            b";a=b",
            b" ;a",
            b"\t; a = b",
            b";a=\"\"",
            b";a=\"x y\\\"z\"",
            b";a=\"\x80\xff\"",
            b";a;b=c;d=\"e\"",
            b";!#$%&'*+-.^_`|~09azAZ=!#$%&'*+-.^_`|~",
        ] {
            assert_eq!(check_chunk_ext(ok), Ok(()), "{:?} refused", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b" "[..],
            b"\t",
            b"x",
            b";",
            b"; ",
            b";a ",
            b";a=",
            b";a=\"",
            b";a=\"b",
            b";a=\"b\\",
            b";a=\"\x01\"",
            b";a=\"\x7f\"",
            b";a=b c",
            b";a=b;",
            b";a==b",
            b";a=b\"",
            b";a\x00",
            b";\"a\"",
            b";a=(b)",
            b";a=b,c",
            b";a=\"b\" ",
            b";a;;b",
        ] {
            assert!(check_chunk_ext(bad).is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
        for (line, want) in [(&b"5 \r"[..], None), (b"5\t\r", None), (b"5;a=\"\r", None), (b"1;a=\"b\"\r", Some(1))] {
            assert_eq!(parse_chunk_line(line).ok(), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    /// Decode `wire` fed in pieces of the given sizes: the data, the trailers, and whether the
    /// body ended exactly at the end of the input.
    fn decode_in_pieces(wire: &[u8], sizes: &mut dyn FnMut() -> usize) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match next_frame(&mut framing, &mut buf) {
                Ok(Step::Frame(f)) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Ok(Step::End) => break,
                Ok(Step::More) => {
                    if fed == wire.len() {
                        return Err("wants more at the end of the input".into());
                    }
                    let n = sizes().clamp(1, wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
                Err(e) => return Err(e.into()),
            }
            if matches!(framing, Framing::Done) {
                break;
            }
        }
        if fed != wire.len() || !buf.is_empty() {
            return Err("bytes left over".into());
        }
        Ok((data, trailers))
    }

    /// Random chunked bodies (sizes, extensions, trailers) decode to the same bytes however the
    /// wire is split into reads, down to one byte at a time.
    #[test]
    fn chunked_decoding_is_independent_of_read_boundaries() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..300 {
            let mut wire = Vec::new();
            let mut expect = Vec::new();
            for _ in 0..rng.usize(0..6) {
                let len = rng.usize(1..3000);
                let chunk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                let hex = if rng.bool() { format!("{len:x}") } else { format!("{len:X}") };
                wire.extend(hex.bytes());
                if rng.bool() {
                    wire.extend(b";ext=\"a b\"; other");
                }
                wire.extend(b"\r\n");
                wire.extend(&chunk);
                wire.extend(b"\r\n");
                expect.extend(chunk);
            }
            wire.extend(b"0\r\n");
            let with_trailer = rng.bool();
            if with_trailer {
                wire.extend(b"x-sum: 42\r\n");
            }
            wire.extend(b"\r\n");
            let mut one = || 1usize;
            let mut random = || rng.usize(1..64);
            for sizes in [&mut one as &mut dyn FnMut() -> usize, &mut random] {
                let (data, trailers) = decode_in_pieces(&wire, sizes).unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert_eq!(data, expect, "round {round}");
                assert_eq!(trailers.is_some(), with_trailer, "round {round}");
            }
        }
    }

    /// Arbitrary bytes as a response head or a chunked body: an answer or an error, never a
    /// panic, and never more fields than the limit.
    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet = b"HTP/1.0 2345\r\n:;chunkedtransfer-encodingcontent-length\t \x00\x7f\xff";
        for _ in 0..20_000 {
            let len = rng.usize(0..200);
            let mut bytes: Vec<u8> = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            if rng.bool() {
                let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
                h.append(&mut bytes);
                bytes = h;
            }
            if let Ok(Some(h)) = parse_head(&mut BytesMut::from(&bytes[..]), &mut Vec::new(), &Method::GET) {
                let mut parts = h.parts;
                if let Some(raw) = h.raw {
                    raw.merge_into(&mut parts.headers);
                }
                assert!(parts.headers.len() <= MAX_FIELDS);
            }
            let mut framing = Framing::Chunked(Chunk::Size);
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..400 {
                match next_frame(&mut framing, &mut buf) {
                    Ok(Step::Frame(_)) => {}
                    _ => break,
                }
            }
        }
    }
}
